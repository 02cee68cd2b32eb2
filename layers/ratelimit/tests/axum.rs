//! axum 0.8: the layer on a router (one limit for every route), keys from `ConnectInfo`, per-route keys from
//! `MatchedPath`, and a real server with `into_make_service_with_connect_info`.

mod common;

use axum::{Router, extract::ConnectInfo, routing::get};
use common::{header, nz, param};
use http::{Request, StatusCode};
use std::net::SocketAddr;
use tower::ServiceExt;
use tower_kit_ratelimit::{
    InMemoryStore, KeyExtractor, ManualMonotonicClock, Policy, Quota, RateLimitLayer,
};

fn get_req(path: &str) -> Request<axum::body::Body> {
    Request::get(path).body(axum::body::Body::empty()).unwrap()
}

#[tokio::test]
async fn router_layer_is_one_limit_across_routes() {
    let layer = RateLimitLayer::builder()
        .store(InMemoryStore::with_clock(ManualMonotonicClock::new()))
        .policy(Policy::new("api", Quota::per_minute(nz(3))))
        .build()
        .unwrap();
    let routes = Router::new()
        .route("/a", get(|| async { "a" }))
        .route("/b", get(|| async { "b" }))
        .layer(layer.clone());
    let app = routes
        .clone()
        .layer(axum::Extension(ConnectInfo(SocketAddr::from((
            [192, 0, 2, 1],
            1234,
        )))));
    let other_client = routes.layer(axum::Extension(ConnectInfo(SocketAddr::from((
        [192, 0, 2, 2],
        1234,
    )))));
    for path in ["/a", "/b", "/a"] {
        assert_eq!(
            app.clone().oneshot(get_req(path)).await.unwrap().status(),
            StatusCode::OK
        );
    }
    let r = app.clone().oneshot(get_req("/b")).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&r, "retry-after").as_deref(), Some("20"));
    assert_eq!(param(&header(&r, "ratelimit").unwrap(), "api", "r"), 0);
    assert_eq!(
        other_client.oneshot(get_req("/a")).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        layer.store().stats().tracked_keys,
        2,
        "keyed by ConnectInfo, not the unknown bucket"
    );
}

#[tokio::test]
async fn per_route_keys_use_the_matched_path() {
    let layer = RateLimitLayer::builder()
        .store(InMemoryStore::with_clock(ManualMonotonicClock::new()))
        .key(KeyExtractor::peer_ip().per_route())
        .policy(Policy::new("route", Quota::per_minute(nz(1))))
        .build()
        .unwrap()
        // Responses keep axum's own body type (no `PolicyBody` wrapper to box again).
        .keep_inner_body();
    let app = Router::new()
        .route("/items/{id}", get(|| async { "item" }))
        .route("/other", get(|| async { "other" }))
        .route_layer(layer)
        .layer(axum::Extension(ConnectInfo(SocketAddr::from((
            [192, 0, 2, 1],
            1234,
        )))));
    assert_eq!(
        app.clone()
            .oneshot(get_req("/items/1"))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    // Another id is the same route: same bucket.
    assert_eq!(
        app.clone()
            .oneshot(get_req("/items/2"))
            .await
            .unwrap()
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        app.clone()
            .oneshot(get_req("/other"))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let refused = app.clone().oneshot(get_req("/other")).await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let body = axum::body::to_bytes(refused.into_body(), 1024)
        .await
        .unwrap();
    assert_eq!(body, "rate limit exceeded\n");
}

#[tokio::test]
async fn real_server_with_connect_info() {
    let layer = RateLimitLayer::builder()
        .policy(Policy::new("api", Quota::per_hour(nz(2))))
        .headers_on_admitted(true)
        .build()
        .unwrap();
    let app = Router::new()
        .route("/", get(|| async { "hello" }))
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let url: http::Uri = format!("http://{addr}/").parse().unwrap();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let r = client.get(url.clone()).await.unwrap();
        statuses.push(r.status());
        if r.status() == StatusCode::OK {
            assert!(header(&r, "ratelimit").is_some());
        } else {
            assert_eq!(header(&r, "retry-after").as_deref(), Some("1800"));
        }
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    server.abort();
}
