//! The demo's compression module over a real socket: `/api/items` compressed in each client's coding, `/health`
//! untouched, `/api/events` compressed and each event on time.

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use std::{
    io::{Read, Write},
    net::SocketAddr,
    time::{Duration, Instant},
};
use tokio::sync::oneshot;

async fn start() -> (SocketAddr, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // A recorder that is not installed: this test reads no metrics.
    let metrics = demo_server::observability::prometheus_builder()
        .unwrap()
        .build_recorder()
        .handle();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(demo_server::serve(
        listener,
        demo_server::Config::for_tests(),
        metrics,
        async move {
            let _ = stopped.await;
        },
    ));
    (addr, stop)
}

fn request(addr: SocketAddr, path: &str, gzip: bool) -> http::Request<Empty<Bytes>> {
    let mut builder = http::Request::get(format!("http://{addr}{path}"));
    if gzip {
        builder = builder.header("accept-encoding", "gzip");
    }
    builder.body(Empty::new()).unwrap()
}

/// `/api/items` is served in the coding each client gets: zstd for what browsers and `curl --compressed` send,
/// Brotli for browsers without zstd, gzip for gzip-only clients; each variant is cached (a second request hits).
#[tokio::test]
async fn items_served_in_each_clients_coding_and_cached_per_variant() {
    let (addr, _stop) = start().await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    for (accept, coding) in [
        ("deflate, gzip, br, zstd", "zstd"),
        ("gzip, deflate, br", "br"),
        ("gzip", "gzip"),
    ] {
        let mut statuses = Vec::new();
        let mut bodies = Vec::new();
        for _ in 0..2 {
            let request = http::Request::get(format!("http://{addr}/api/items"))
                .header("accept-encoding", accept)
                .body(Empty::new())
                .unwrap();
            let response = client.request(request).await.unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()["content-encoding"], coding, "{accept}");
            statuses.push(response.headers()["x-cache"].to_str().unwrap().to_owned());
            bodies.push(response.into_body().collect().await.unwrap().to_bytes());
        }
        assert_eq!(statuses[1], "HIT", "{accept}: {statuses:?}");
        assert_eq!(
            bodies[0], bodies[1],
            "{accept}: the hit is the stored variant"
        );
        if coding == "gzip" {
            let mut json = Vec::new();
            flate2::read::GzDecoder::new(&bodies[1][..])
                .read_to_end(&mut json)
                .unwrap();
            assert!(serde_json::from_slice::<Vec<serde_json::Value>>(&json).is_ok());
        }
    }
}

#[tokio::test]
async fn items_compressed_health_untouched() {
    let (addr, _stop) = start().await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();

    let response = client
        .request(request(addr, "/api/items", true))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-encoding"], "gzip");
    assert!(
        response.headers()["vary"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase()
            .contains("accept-encoding")
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_end(&mut json)
        .unwrap();
    let items: Vec<serde_json::Value> = serde_json::from_slice(&json).unwrap();
    assert!(!items.is_empty());
    assert!(
        body.len() * 3 < json.len(),
        "{} -> {}",
        json.len(),
        body.len()
    );

    let response = client
        .request(request(addr, "/health", true))
        .await
        .unwrap();
    assert!(response.headers().get("content-encoding").is_none());
    assert!(response.headers().get("vary").is_none());
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "ok"
    );

    let response = client
        .request(request(addr, "/api/items", false))
        .await
        .unwrap();
    assert!(response.headers().get("content-encoding").is_none());
}

#[tokio::test]
async fn events_compressed_and_on_time() {
    let (addr, _stop) = start().await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let started = Instant::now();
    let response = client
        .request(request(addr, "/api/events", true))
        .await
        .unwrap();
    // The stream's clock starts before its head is sent: lateness is measured from the head's arrival, so that
    // connecting and starting up (slow on a loaded machine) do not count against the compressor.
    let head = Instant::now();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let mut body = response.into_body();
    let mut decoder = flate2::write::GzDecoder::new(Vec::new());
    let interval = demo_server::compression::EVENT_INTERVAL;
    for n in 0..demo_server::compression::EVENTS {
        let marker = format!("\"n\":{n},");
        while !String::from_utf8_lossy(decoder.get_ref()).contains(&marker) {
            let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
                .await
                .expect("an event in time")
                .expect("stream ended early")
                .unwrap();
            if let Ok(data) = frame.into_data() {
                decoder.write_all(&data).unwrap();
                decoder.flush().unwrap();
            }
        }
        // Event n is due at n × 500 ms; it is decodable on arrival, not held back by the compressor (which would
        // make it late by a whole interval, or until the end of the stream).
        let due = interval * n;
        let late = head.elapsed().saturating_sub(due);
        assert!(
            late < Duration::from_millis(400),
            "event {n} decoded {late:?} after it was due"
        );
        // Sent at its time: not before it, counted from before the request.
        assert!(
            started.elapsed() + Duration::from_millis(50) >= due,
            "event {n} early"
        );
    }
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            decoder.write_all(&data).unwrap();
        }
    }
    let text = String::from_utf8(decoder.finish().unwrap()).unwrap();
    assert_eq!(text.matches("event: tick").count(), 10);
}

#[tokio::test]
async fn health_and_metrics_are_not_refused_for_a_content_encoding() {
    let (addr, _stop) = start().await;
    let client = Client::builder(TokioExecutor::new()).build_http::<http_body_util::Full<Bytes>>();
    let send = |path: &str, encoding: &str, body: &'static [u8]| {
        let request = http::Request::get(format!("http://{addr}{path}"))
            .header("content-encoding", encoding)
            .body(http_body_util::Full::new(Bytes::from_static(body)))
            .unwrap();
        client.request(request)
    };
    // Without a body (what a probe that labels every request sends), and with one that is not valid gzip.
    for (path, encoding, body) in [
        ("/health", "br", &b""[..]),
        ("/health", "gzip", b""),
        ("/metrics", "br", b""),
        ("/health", "gzip", b"not gzip"),
        ("/metrics", "zstd", b"anything"),
    ] {
        let response = send(path, encoding, body).await.unwrap();
        assert_eq!(response.status(), 200, "{path} {encoding} {body:?}");
    }
    // Elsewhere a body-less request passes too, while an undecodable body is still refused.
    let response = send("/api/items", "br", b"").await.unwrap();
    assert_eq!(response.status(), 200);
    let response = send("/api/items", "br", b"brotli?").await.unwrap();
    assert_eq!(response.status(), 400, "not valid Brotli");
    let response = send("/api/items", "compress", b"lzw?").await.unwrap();
    assert_eq!(
        response.status(),
        415,
        "a coding the server does not decode"
    );
    assert_eq!(
        response.headers()["accept-encoding"],
        "gzip, deflate, br, zstd"
    );
}

/// The cache keys `Accept-Encoding` on the coding the compression layer picks: clients that list different sets but
/// get the same coding share one entry.
#[tokio::test]
async fn clients_that_get_the_same_coding_share_one_cache_entry() {
    let (addr, _stop) = start().await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut seen = Vec::new();
    for accept in [
        "zstd",
        "br, zstd",
        "gzip, br, deflate, zstd",
        "zstd;q=1, gzip;q=0.5",
    ] {
        let request = http::Request::get(format!("http://{addr}/api/items"))
            .header("accept-encoding", accept)
            .body(Empty::new())
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.headers()["content-encoding"], "zstd", "{accept}");
        seen.push(response.headers()["x-cache"].to_str().unwrap().to_owned());
        let _ = response.into_body().collect().await.unwrap();
    }
    assert!(
        seen[1..].iter().all(|s| s == "HIT"),
        "one entry for every set that gets zstd: {seen:?}"
    );
}
