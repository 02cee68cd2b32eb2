//! axum 0.8: one layer value on a router is one limit across all its routes (the case tower's
//! `ConcurrencyLimitLayer` gets wrong: axum clones services per request and makes one per route), no
//! `HandleErrorLayer` is needed, and over a real socket an overloaded server answers 503 + `Retry-After` at once
//! while `/health` stays exempt.

use axum::{Router, body::Body, routing::get};
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use std::{sync::Arc, time::Duration};
use tokio::sync::Notify;
use tower::ServiceExt;
use tower_kit_concurrency::ConcurrencyLayer;

fn waiting_router(gate: Arc<Notify>) -> Router {
    let handler = move || {
        let gate = gate.clone();
        async move {
            gate.notified().await;
            "done"
        }
    };
    Router::new()
        .route("/a", get(handler.clone()))
        .route("/b", get(handler.clone()))
        .route("/c", get(handler))
}

fn req(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn one_layer_on_several_routes_is_one_limit_across_them() {
    let layer = ConcurrencyLayer::new(2.try_into().unwrap());
    let handle = layer.handle();
    let gate = Arc::new(Notify::new());
    // `Router::layer` calls `Layer::layer` once per route; the slots are still shared.
    let app = waiting_router(gate.clone()).layer(layer);
    let a = tokio::spawn(app.clone().oneshot(req("/a")));
    let b = tokio::spawn(app.clone().oneshot(req("/b")));
    tokio::task::yield_now().await;
    assert_eq!(handle.in_flight(), 2);
    let c = app.clone().oneshot(req("/c")).await.unwrap();
    assert_eq!(
        c.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "/c is refused: /a and /b hold the shared limit"
    );
    assert_eq!(c.headers()[header::RETRY_AFTER], "1");
    gate.notify_waiters();
    for t in [a, b] {
        let r = t.await.unwrap().unwrap();
        assert_eq!(r.into_body().collect().await.unwrap().to_bytes(), "done");
    }
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn route_layer_shares_too_and_separate_values_are_separate_limits() {
    let gate = Arc::new(Notify::new());
    let shared = ConcurrencyLayer::new(1.try_into().unwrap());
    let app = waiting_router(gate.clone()).route_layer(shared);
    let a = tokio::spawn(app.clone().oneshot(req("/a")));
    tokio::task::yield_now().await;
    assert_eq!(
        app.clone().oneshot(req("/b")).await.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );

    // A layer value per route: each route its own limit.
    let gate2 = Arc::new(Notify::new());
    let g = gate2.clone();
    let wait = move || {
        let g = g.clone();
        async move {
            g.notified().await;
            "x"
        }
    };
    let per_route = Router::new()
        .route(
            "/x",
            get(wait.clone()).layer(ConcurrencyLayer::new(1.try_into().unwrap())),
        )
        .route(
            "/y",
            get(wait).layer(ConcurrencyLayer::new(1.try_into().unwrap())),
        );
    let x = tokio::spawn(per_route.clone().oneshot(req("/x")));
    let y = tokio::spawn(per_route.clone().oneshot(req("/y")));
    tokio::task::yield_now().await;
    assert_eq!(
        per_route.clone().oneshot(req("/x")).await.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    gate.notify_waiters();
    gate2.notify_waiters();
    assert_eq!(a.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(x.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(
        y.await.unwrap().unwrap().status(),
        StatusCode::OK,
        "/y had its own slot"
    );
}

#[tokio::test]
async fn over_a_real_socket_overload_is_answered_at_once_and_health_is_exempt() {
    let gate = Arc::new(Notify::new());
    let entered = Arc::new(Notify::new());
    let (g, e) = (gate.clone(), entered.clone());
    let layer = ConcurrencyLayer::builder()
        .max_in_flight(1)
        .exempt(|parts| parts.uri.path() == "/health")
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/slow",
            get(move || {
                let (g, e) = (g.clone(), e.clone());
                async move {
                    // `notify_one` keeps a permit when nobody waits yet, so neither signal can be lost.
                    e.notify_one();
                    g.notified().await;
                    "slow"
                }
            }),
        )
        .route("/health", get(|| async { "ok" }))
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let url = |p: &str| format!("http://{addr}{p}").parse::<http::Uri>().unwrap();

    let c = client.clone();
    let slow_url = url("/slow");
    let slow = tokio::spawn(async move { c.get(slow_url).await.unwrap() });
    // Wait until the slow request holds the slot (it is inside the handler).
    tokio::time::timeout(Duration::from_secs(10), entered.notified())
        .await
        .expect("the slow request reached its handler");
    let started = std::time::Instant::now();
    let refused = client.get(url("/slow")).await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()[header::RETRY_AFTER], "1");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered at once"
    );
    let health = client.get(url("/health")).await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    gate.notify_one();
    let slow = slow.await.unwrap();
    assert_eq!(slow.status(), StatusCode::OK);
    assert_eq!(slow.into_body().collect().await.unwrap().to_bytes(), "slow");
    server.abort();
}
