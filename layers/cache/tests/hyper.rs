//! The cache in a plain hyper 1 server, over TCP: MISS then HIT with Age, and a client that disconnects mid-body.

mod common;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper_util::rt::TokioIo;
use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use tower::Layer;
use tower_kit_cache::{CacheHandle, CacheLayer};

async fn start(slow_tail: bool) -> (std::net::SocketAddr, Arc<AtomicUsize>, CacheHandle) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let origin = tower::service_fn(move |_req: Request<hyper::body::Incoming>| {
        c.fetch_add(1, Ordering::SeqCst);
        async move {
            let frames = futures_util::stream::unfold(0u8, move |i| async move {
                if i == 3 {
                    return None;
                }
                if slow_tail && i == 2 {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Some((
                    Ok::<_, Infallible>(http_body::Frame::data(Bytes::from(vec![b'a' + i; 1000]))),
                    i + 1,
                ))
            });
            Ok::<_, Infallible>(
                Response::builder()
                    .header("cache-control", "public, max-age=60")
                    .header("content-type", "text/plain")
                    .body(StreamBody::new(frames))
                    .unwrap(),
            )
        }
    });
    let layer = CacheLayer::new();
    let handle = layer.handle();
    let svc = layer.layer(origin);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let svc = hyper_util::service::TowerToHyperService::new(svc.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, calls, handle)
}

async fn fetch(addr: std::net::SocketAddr) -> (http::response::Parts, Bytes) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/data")
        .header("host", "cache.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    let (parts, body) = res.into_parts();
    (parts, body.collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn miss_then_hit_over_tcp() {
    let (addr, calls, handle) = start(false).await;
    let (first, body) = fetch(addr).await;
    assert_eq!(first.headers["x-cache"], "MISS");
    assert_eq!(body.len(), 3000);
    // The fill completes when the body has been written; poll the stats with a generous bound.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while handle.stats().await.stored == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never stored");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (second, body2) = fetch(addr).await;
    assert_eq!(second.headers["x-cache"], "HIT");
    assert!(
        second.headers["age"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            <= 2
    );
    assert_eq!(
        second.headers["content-length"], "3000",
        "a stored body has an exact length"
    );
    assert_eq!(body, body2);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn client_disconnect_mid_body_stores_nothing() {
    let (addr, calls, handle) = start(true).await;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /data HTTP/1.1\r\nhost: cache.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1500];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(n > 0);
    drop(stream);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(handle.stats().await.stored, 0);
    let (p, body) = fetch(addr).await;
    assert_eq!(p.headers["x-cache"], "MISS");
    assert_eq!(body.len(), 3000);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
