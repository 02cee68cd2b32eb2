//! The cache as an axum 0.8 layer: one cache across routes, no `HandleErrorLayer`, handle in a handler.

use axum::{
    Router,
    body::Body,
    extract::State,
    http::{Request, StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use http_body_util::BodyExt;
use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};
use tower::ServiceExt;
use tower_kit_cache::{CacheHandle, CacheLayer};

#[derive(Clone)]
struct AppState {
    calls: Arc<AtomicUsize>,
    cache: CacheHandle,
}

async fn items(State(s): State<AppState>) -> impl IntoResponse {
    let n = s.calls.fetch_add(1, Ordering::SeqCst);
    (
        [(header::CACHE_CONTROL, "public, max-age=30")],
        format!("items v{n}"),
    )
}

async fn report(State(s): State<AppState>) -> impl IntoResponse {
    s.calls.fetch_add(1, Ordering::SeqCst);
    ([(header::CACHE_CONTROL, "public, max-age=10")], "report")
}

async fn add(State(s): State<AppState>) -> impl IntoResponse {
    s.cache
        .invalidate_url("/items")
        .await
        .map(|_| StatusCode::CREATED)
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

async fn call(app: &Router, method: &str, uri: &str) -> (StatusCode, String, String) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "demo")
        .body(Body::empty())
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let x = res
        .headers()
        .get("x-cache")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let status = res.status();
    let body =
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    (status, x, body)
}

#[tokio::test]
async fn one_cache_for_every_route_and_invalidation_from_a_handler() {
    let layer = CacheLayer::new();
    let handle = layer.handle();
    let state = AppState {
        calls: Arc::default(),
        cache: handle.clone(),
    };
    let app = Router::new()
        .route("/items", get(items).post(add))
        .route("/report", get(report))
        .layer(layer)
        .with_state(state.clone());

    assert_eq!(call(&app, "GET", "/items").await.1, "MISS");
    assert_eq!(
        call(&app, "GET", "/items").await,
        (StatusCode::OK, "HIT".into(), "items v0".into())
    );
    assert_eq!(call(&app, "GET", "/report").await.1, "MISS");
    assert_eq!(call(&app, "GET", "/report").await.1, "HIT");
    // axum made one service per route; they share one store and one set of counters.
    let stats = handle.stats().await;
    assert_eq!((stats.hits, stats.misses, stats.entries), (2, 2, 2));

    assert_eq!(call(&app, "POST", "/items").await.0, StatusCode::CREATED);
    assert_eq!(
        call(&app, "GET", "/items").await,
        (StatusCode::OK, "MISS".into(), "items v2".into())
    );
    assert_eq!(
        call(&app, "GET", "/report").await.1,
        "HIT",
        "other URLs stay"
    );
    assert_eq!(state.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn works_with_route_layer_and_unmatched_paths() {
    let app = Router::new()
        .route(
            "/items",
            get(|| async { ([(header::CACHE_CONTROL, "max-age=5")], "x") }),
        )
        .route_layer(CacheLayer::new());
    assert_eq!(call(&app, "GET", "/items").await.1, "MISS");
    assert_eq!(call(&app, "GET", "/items").await.1, "HIT");
    assert_eq!(call(&app, "GET", "/nope").await.0, StatusCode::NOT_FOUND);
}
