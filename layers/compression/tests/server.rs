//! Over real sockets: SSE through hyper 1 (each event decodable before the stream ends) and an axum 0.8 router
//! with both layers.

mod common;

use axum::{
    Router,
    routing::{get, post},
};
use bytes::Bytes;
use common::{
    CODINGS, ChannelBody, StreamDecoder, decode, encode, gunzip, system_gunzip, system_unzstd, text,
};
use http::{Request, Response, header};
use http_body::Frame;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::{net::TcpListener, sync::mpsc};
use tower::{Layer, ServiceExt, service_fn};
use tower_kit_compression::{CompressionLayer, RequestDecompressionLayer};

#[tokio::test]
async fn sse_over_hyper_gzip_each_event_decodes_before_the_stream_ends() {
    sse_over_hyper("gzip").await;
}

#[tokio::test]
async fn sse_over_hyper_deflate_each_event_decodes_before_the_stream_ends() {
    sse_over_hyper("deflate").await;
}

#[tokio::test]
async fn sse_over_hyper_br_each_event_decodes_before_the_stream_ends() {
    sse_over_hyper("br").await;
}

#[tokio::test]
async fn sse_over_hyper_zstd_each_event_decodes_before_the_stream_ends() {
    sse_over_hyper("zstd").await;
}

/// The client asks for `coding` only and must decode each event before the server sends the next.
async fn sse_over_hyper(coding: &'static str) {
    // The server sends an event, then waits for the client to say it decoded it before sending the next.
    let (decoded_tx, decoded_rx) = mpsc::channel::<()>(1);
    let decoded_rx = Arc::new(tokio::sync::Mutex::new(decoded_rx));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let service = CompressionLayer::new().layer(service_fn(
            move |_req: Request<hyper::body::Incoming>| {
                let decoded_rx = Arc::clone(&decoded_rx);
                async move {
                    let (tx, body) = ChannelBody::new();
                    tokio::spawn(async move {
                        let mut decoded = decoded_rx.lock().await;
                        for i in 0..3 {
                            let event = format!(
                                "id: {i}\ndata: {{\"n\":{i},\"text\":\"event number {i}\"}}\n\n"
                            );
                            tx.send(Frame::data(Bytes::from(event))).await.unwrap();
                            if i < 2 {
                                decoded.recv().await.unwrap();
                            }
                        }
                    });
                    let response = Response::builder()
                        .header(header::CONTENT_TYPE, "text/event-stream")
                        .header(header::CACHE_CONTROL, "no-cache")
                        .body(body)
                        .unwrap();
                    Ok::<_, Infallible>(response)
                }
            },
        ));
        let hyper_service = hyper::service::service_fn(move |req| service.clone().oneshot(req));
        hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), hyper_service)
            .await
            .unwrap();
    });

    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::get("/events")
        .header(header::HOST, "localhost")
        .header(header::ACCEPT_ENCODING, coding)
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.headers()[header::CONTENT_ENCODING], coding);
    assert_eq!(response.headers()[header::VARY], "accept-encoding");
    let mut body = response.into_body();
    let mut decoder = StreamDecoder::new(coding);
    let mut raw = Vec::new();
    for i in 0..3 {
        let want = format!("id: {i}\ndata: {{\"n\":{i},\"text\":\"event number {i}\"}}\n\n");
        while !String::from_utf8_lossy(decoder.decoded()).contains(&want) {
            let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
                .await
                .unwrap_or_else(|_| panic!("event {i} did not arrive decodable"))
                .expect("stream ended early")
                .unwrap();
            if let Ok(data) = frame.into_data() {
                raw.extend_from_slice(&data);
                decoder.push(&data);
            }
        }
        if i < 2 {
            decoded_tx.send(()).await.unwrap();
        }
    }
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            raw.extend_from_slice(&data);
        }
    }
    let all = String::from_utf8(decode(coding, &raw)).unwrap();
    assert_eq!(all.matches("data: ").count(), 3);
    match coding {
        "gzip" => assert_eq!(system_gunzip(&raw), all.as_bytes()),
        "zstd" => assert_eq!(system_unzstd(&raw), all.as_bytes()),
        _ => {}
    }
    drop(sender);
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn axum_router_with_both_layers() {
    let page = Arc::new(Mutex::new(String::from_utf8(text(20_000)).unwrap()));
    let page2 = Arc::clone(&page);
    let app = Router::new()
        .route(
            "/page",
            get(move || {
                let page = page2.lock().unwrap().clone();
                async move { ([(header::CONTENT_TYPE, "text/plain")], page) }
            }),
        )
        .route("/health", get(|| async { "ok" }))
        .route(
            "/upload",
            post(|body: String| async move { format!("got {} bytes", body.len()) }),
        )
        .layer(CompressionLayer::new())
        .layer(RequestDecompressionLayer::new());

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();

    let request = Request::get(format!("http://{addr}/page"))
        .header(header::ACCEPT_ENCODING, "br;q=0.5, gzip;q=0.8")
        .body(Full::default())
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(
        response.headers()[header::CONTENT_ENCODING],
        "gzip",
        "the higher q-value wins"
    );
    let length: usize = response.headers()[header::CONTENT_LENGTH]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), length);
    assert_eq!(gunzip(&body), page.lock().unwrap().as_bytes());

    // Too small to compress: untouched.
    let request = Request::get(format!("http://{addr}/health"))
        .header(header::ACCEPT_ENCODING, "gzip")
        .body(Full::default())
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert!(response.headers().get(header::CONTENT_ENCODING).is_none());
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "ok"
    );

    // Every coding's upload is decoded before the handler.
    for coding in CODINGS {
        let request = Request::post(format!("http://{addr}/upload"))
            .header(header::CONTENT_ENCODING, coding)
            .body(Full::new(Bytes::from(encode(coding, &text(30_000)))))
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.status(), 200, "{coding}");
        assert_eq!(
            response.into_body().collect().await.unwrap().to_bytes(),
            "got 30000 bytes"
        );
    }
    // A corrupt one is 400 before the handler.
    let request = Request::post(format!("http://{addr}/upload"))
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Full::new(Bytes::from_static(b"\x1f\x8b\x08garbage")))
        .unwrap();
    assert_eq!(client.request(request).await.unwrap().status(), 400);
}
