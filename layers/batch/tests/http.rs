//! The HTTP adapter in axum and plain hyper: batched lookups from handlers, 503 + Retry-After on overload,
//! `batch;dur=` in Server-Timing, and a panicking backend answered as 500.

use axum::{
    Router,
    body::Body,
    extract::{Path, State},
    http::{Request, StatusCode, request::Parts},
    response::{IntoResponse, Response},
    routing::get,
};
use http_body_util::BodyExt;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};
use tower::{Layer, ServiceExt};
use tower_kit_batch::{BatchError, BatchLayer, HttpBatch};
use tower_kit_core::ServerTiming;

type Loader = HttpBatch<u32, String, &'static str>;

fn loader(log: Arc<Mutex<Vec<Vec<u32>>>>, max_queued: usize, leading_edge: bool) -> Loader {
    let backend = tower::service_fn(move |ids: Vec<u32>| {
        log.lock().unwrap().push(ids.clone());
        async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            assert!(!ids.contains(&13), "backend panics on 13");
            Ok::<_, &'static str>(
                ids.into_iter()
                    .filter(|id| *id != 404)
                    .map(|id| (id, format!("item {id}")))
                    .collect::<HashMap<_, _>>(),
            )
        }
    });
    let batch = BatchLayer::builder()
        .keyed(|id: &u32| *id)
        .max_queued(max_queued)
        .max_latency(Duration::from_millis(2))
        .leading_edge(leading_edge)
        .build()
        .unwrap()
        .layer(backend);
    HttpBatch::new(batch).retry_after(Duration::from_millis(1500))
}

async fn item(State(loader): State<Loader>, Path(id): Path<u32>, parts: Parts) -> Response {
    match loader.load(&parts, id).await {
        Ok(item) => item.into_response(),
        Err(refusal) if refusal.error().is_missing() => StatusCode::NOT_FOUND.into_response(),
        Err(refusal) => refusal.into_response::<Body>(),
    }
}

/// Stands in for the timing layer: puts a `ServerTiming` in and writes its header.
async fn with_timing(mut req: Request<Body>, next: axum::middleware::Next) -> Response {
    let timing = ServerTiming::new();
    req.extensions_mut().insert(timing.clone());
    let mut res = next.run(req).await;
    if let Some(v) = timing.seal() {
        res.headers_mut().insert("server-timing", v);
    }
    res
}

fn app(loader: Loader) -> Router {
    Router::new()
        .route("/items/{id}", get(item))
        .with_state(loader)
        .layer(axum::middleware::from_fn(with_timing))
}

async fn get_path(app: &Router, path: &str) -> Response {
    app.clone()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn axum_handlers_share_one_backend_call() {
    let log = Arc::default();
    let app = app(loader(Arc::clone(&log), 100, false));
    let mut calls = Vec::new();
    for id in [1, 2, 1, 404] {
        let app = app.clone();
        calls.push(tokio::spawn(async move {
            get_path(&app, &format!("/items/{id}")).await
        }));
    }
    let mut statuses = Vec::new();
    for c in calls {
        let res = c.await.unwrap();
        statuses.push(res.status());
        let timing: Vec<_> = res.headers().get_all("server-timing").iter().collect();
        assert_eq!(timing.len(), 1);
        assert_eq!(timing[0], "batch;dur=7", "2 ms window + 5 ms backend");
        if res.status() == StatusCode::OK {
            let body = res.into_body().collect().await.unwrap().to_bytes();
            assert!(body.starts_with(b"item "));
        }
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::NOT_FOUND
        ]
    );
    assert_eq!(
        *log.lock().unwrap(),
        vec![vec![1, 2, 404]],
        "one backend call, key 1 once"
    );
}

#[tokio::test(start_paused = true)]
async fn axum_overload_is_503_with_retry_after() {
    let app = app(loader(Arc::default(), 1, false));
    let first = {
        let app = app.clone();
        tokio::spawn(async move { get_path(&app, "/items/1").await })
    };
    tokio::task::yield_now().await;
    let refused = get_path(&app, "/items/2").await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let retry: Vec<_> = refused.headers().get_all("retry-after").iter().collect();
    assert_eq!(retry, ["2"], "1.5 s rounds up");
    assert_eq!(first.await.unwrap().status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn axum_backend_panic_is_500_and_the_next_request_works() {
    let app = app(loader(Arc::default(), 100, true));
    let res = get_path(&app, "/items/13").await;
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(res.headers().get("retry-after").is_none());
    assert_eq!(get_path(&app, "/items/7").await.status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn grpc_requests_get_grpc_refusals() {
    let loader = loader(Arc::default(), 1, false);
    let busy = {
        let loader = loader.clone();
        tokio::spawn(async move { loader.get_ref().load(1).await })
    };
    tokio::task::yield_now().await;
    let req = Request::post("/pkg.Svc/Get")
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
    let refusal = loader.load_for(&req, 2).await.unwrap_err();
    assert!(matches!(refusal.error(), BatchError::Overloaded));
    let res = refusal.into_response::<Body>();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["grpc-status"], "8");
    assert!(busy.await.unwrap().is_ok());
}

/// Plain hyper 1 over a real socket (real time).
#[tokio::test]
async fn hyper_server_batches_concurrent_requests() {
    use hyper::{server::conn::http1, service::service_fn};
    use hyper_util::rt::TokioIo;

    let log: Arc<Mutex<Vec<Vec<u32>>>> = Arc::default();
    let loader = loader(Arc::clone(&log), 100, false);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let loader = loader.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let loader = loader.clone();
                    async move {
                        let id = req
                            .uri()
                            .path()
                            .trim_start_matches('/')
                            .parse()
                            .unwrap_or(0);
                        let res: hyper::Response<http_body_util::Full<bytes::Bytes>> =
                            match loader.load_for(&req, id).await {
                                Ok(item) => hyper::Response::new(item.into()),
                                Err(refusal) => refusal.into_response(),
                            };
                        Ok::<_, std::convert::Infallible>(res)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let mut clients = Vec::new();
    for id in 1..=4u32 {
        clients.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let req = hyper::Request::get(format!("/{id}"))
                .header("host", "localhost")
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            let res = send.send_request(req).await.unwrap();
            let status = res.status();
            let body = res.into_body().collect().await.unwrap().to_bytes();
            (status, body)
        }));
    }
    for (id, c) in (1..=4).zip(clients) {
        let (status, body) = c.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, format!("item {id}"));
    }
    let mut sent: Vec<u32> = log.lock().unwrap().concat();
    sent.sort_unstable();
    assert_eq!(
        sent,
        [1, 2, 3, 4],
        "each item sent once, whatever the batching"
    );
}
