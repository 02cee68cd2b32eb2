//! The layer in a plain hyper 1 server over a real TCP socket.

use crate::support::Metrics;
use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::StreamBody;
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use std::{convert::Infallible, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tower::service_fn;
use tower_kit_timing::{TimingLayer, names};

/// An endless streaming body: a chunk every few milliseconds until the client goes away.
fn endless() -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>>> {
    StreamBody::new(futures_util::stream::unfold((), |()| async {
        tokio::time::sleep(Duration::from_millis(2)).await;
        Some((Ok(Frame::data(Bytes::from_static(b"data: tick\n\n"))), ()))
    }))
}

#[tokio::test]
async fn a_client_that_disconnects_mid_body_is_recorded_as_aborted() {
    let m = Metrics::new();
    let _g = m.install();
    let layer = TimingLayer::builder().body_sizes(true).build().unwrap();
    let stats = layer.handle();
    let svc = tower::Layer::layer(
        &layer,
        service_fn(|_: Request<hyper::body::Incoming>| async {
            Ok::<_, Infallible>(Response::new(endless()))
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc))
            .await;
    });

    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET /events HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = 0;
    while got < 200 {
        got += tokio::time::timeout(Duration::from_secs(10), client.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(m.gauge("GET"), 1.0, "streaming: still active");
    drop(client);
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();

    let errors = m.label_values(names::REQUEST_DURATION, names::ERROR_TYPE);
    assert_eq!(errors, ["aborted"]);
    assert_eq!(m.gauge("GET"), 0.0);
    assert_eq!(stats.snapshot().active, 0);
    let sizes = m.series(names::RESPONSE_BODY_SIZE);
    assert!(
        sizes[0].1.samples()[0] >= 12.0,
        "bytes produced before the abort are counted"
    );
}
