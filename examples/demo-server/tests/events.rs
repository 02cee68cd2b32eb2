//! `GET /api/events` has its own cap on open streams (`--events-max-in-flight`): over a real socket, the clients
//! over the cap get `503` with `Retry-After` while the others stream, and a closed stream frees its slot.

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use std::{net::SocketAddr, time::Duration};
use tokio::sync::oneshot;

async fn start(events_max_in_flight: usize) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // A recorder that is not installed: this test reads no metrics.
    let metrics = demo_server::observability::prometheus_builder()
        .unwrap()
        .build_recorder()
        .handle();
    let mut config = demo_server::Config::for_tests();
    config.compression.events_max_in_flight = events_max_in_flight;
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(demo_server::serve(listener, config, metrics, async move {
        let _ = stopped.await;
    }));
    (addr, stop)
}

fn events(addr: SocketAddr) -> http::Request<Empty<Bytes>> {
    http::Request::get(format!("http://{addr}/api/events"))
        .header("accept-encoding", "gzip")
        .body(Empty::new())
        .unwrap()
}

#[tokio::test]
async fn clients_over_the_events_cap_get_503_with_retry_after() {
    const CAP: usize = 3;
    let (addr, _stop) = start(CAP).await;
    // One connection per client: the streams stay open side by side.
    let client = || {
        Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build_http::<Empty<Bytes>>()
    };

    let mut open = Vec::new();
    for i in 0..CAP {
        let response =
            tokio::time::timeout(Duration::from_secs(10), client().request(events(addr)))
                .await
                .expect("a head in time")
                .unwrap();
        assert_eq!(response.status(), 200, "client {i}");
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        assert_eq!(response.headers()["content-encoding"], "gzip");
        let mut body = response.into_body();
        // The first event arrives: the stream is really open.
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("an event in time")
            .expect("stream open")
            .unwrap();
        assert!(frame.is_data());
        open.push(body);
    }

    // The streams are open (each lasts 4.5 s): two more clients are refused at once.
    for extra in 0..2 {
        let response =
            tokio::time::timeout(Duration::from_secs(10), client().request(events(addr)))
                .await
                .expect("a refusal in time")
                .unwrap();
        assert_eq!(response.status(), 503, "extra client {extra}");
        let retry_after: Vec<_> = response.headers().get_all("retry-after").iter().collect();
        assert_eq!(retry_after.len(), 1, "one Retry-After");
        let seconds: u64 = retry_after[0].to_str().unwrap().parse().unwrap();
        assert!(seconds >= 1);
    }

    // Other routes are not limited by the events cap.
    let health = client()
        .request(
            http::Request::get(format!("http://{addr}/health"))
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    // A client that goes away frees its slot (the server notices the closed connection when it next writes, within
    // one event interval).
    drop(open.pop());
    let mut admitted = false;
    for _ in 0..40 {
        let response = client().request(events(addr)).await.unwrap();
        if response.status() == 200 {
            admitted = true;
            break;
        }
        assert_eq!(response.status(), 503);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(admitted, "a slot was freed by the client that left");
}
