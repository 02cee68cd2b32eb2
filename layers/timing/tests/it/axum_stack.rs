//! The layer on an axum 0.8 router.

use crate::support::Metrics;
use axum::{Router, body::Body, routing::get};
use http::Request;
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_kit_timing::{TimingLayer, names};

fn app(layer: TimingLayer) -> Router {
    Router::new()
        .route("/api/items", get(|| async { "[]" }))
        .route("/api/items/{id}", get(|| async { "{}" }))
        .layer(layer)
}

async fn get_path(app: &Router, path: &str) -> http::StatusCode {
    let res = app
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    res.into_body().collect().await.unwrap();
    status
}

#[tokio::test]
async fn the_route_label_is_the_matched_path() {
    let m = Metrics::new();
    let _g = m.install();
    let layer = TimingLayer::new();
    let stats = layer.handle();
    let app = app(layer);
    for id in 1..=3 {
        assert_eq!(get_path(&app, &format!("/api/items/{id}")).await, 200);
    }
    assert_eq!(get_path(&app, "/api/items").await, 200);
    let mut routes = m.label_values(names::REQUEST_DURATION, names::ROUTE);
    routes.sort();
    assert_eq!(routes, ["/api/items", "/api/items/{id}"]);
    assert_eq!(
        stats
            .snapshot()
            .get("/api/items/{id}", "GET")
            .unwrap()
            .count,
        3
    );
}

#[tokio::test]
async fn ten_thousand_unmatched_paths_leave_one_route_value() {
    let m = Metrics::new();
    let _g = m.install();
    let app = app(TimingLayer::new());
    for i in 0..10_000 {
        assert_eq!(
            get_path(&app, &format!("/scan/{i}/wp-login.php")).await,
            404
        );
    }
    let durations = m.series(names::REQUEST_DURATION);
    assert_eq!(
        durations.len(),
        1,
        "{:?}",
        durations.iter().map(|d| &d.0).collect::<Vec<_>>()
    );
    let (labels, value) = &durations[0];
    assert!(labels.contains(&(names::ROUTE.to_owned(), names::UNMATCHED_ROUTE.to_owned())));
    assert_eq!(value.count(), 10_000);
    assert!(
        m.series(names::LABEL_OVERFLOW)
            .iter()
            .all(|(_, v)| v.count() == 0)
    );
}

#[tokio::test]
async fn one_layer_value_is_one_registry_across_routes() {
    // axum calls `Layer::layer` once per route: the cap must still be one cap for the whole router.
    let m = Metrics::new();
    let _g = m.install();
    let layer = TimingLayer::builder().max_label_values(1).build().unwrap();
    let app = app(layer);
    get_path(&app, "/api/items").await;
    get_path(&app, "/api/items/1").await;
    let mut routes = m.label_values(names::REQUEST_DURATION, names::ROUTE);
    routes.sort();
    assert_eq!(routes, ["/api/items", names::OTHER_ROUTE]);
}
