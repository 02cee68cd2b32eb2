//! The router and the variants that `benches/timing.rs` and `examples/interleaved.rs` both measure (included with
//! `#[path]`), so the two report on exactly the same set-ups.
#![allow(dead_code)]

use axum::{Router, routing::get};
use metrics_exporter_prometheus::PrometheusHandle;
use tower_kit_timing::TimingLayer;

pub(crate) fn router() -> Router {
    Router::new()
        .route("/api/items/{id}", get(|| async { "item" }))
        .route("/health", get(|| async { "ok" }))
}

/// Every variant, bare first and axum-prometheus last, and the handle of the Prometheus recorder they all record
/// into (axum-prometheus installs it globally; `TimingLayer` records into it too). Call it inside a Tokio runtime:
/// axum-prometheus spawns its upkeep task.
pub(crate) fn variants() -> (Vec<(&'static str, Router)>, PrometheusHandle) {
    let (prometheus_layer, handle) = axum_prometheus::PrometheusMetricLayer::pair();
    let timing = |b: tower_kit_timing::TimingLayerBuilder| router().layer(b.build().unwrap());
    let variants = vec![
        ("bare", router()),
        (
            "identity layer",
            router().layer(tower::layer::util::Identity::new()),
        ),
        ("tower-kit TimingLayer", router().layer(TimingLayer::new())),
        (
            "tower-kit TimingLayer, all histograms",
            timing(TimingLayer::builder().head_duration(true).body_sizes(true)),
        ),
        (
            "tower-kit TimingLayer, stats off",
            timing(TimingLayer::builder().stats(false)),
        ),
        (
            "tower-kit TimingLayer, metrics off (stats only)",
            timing(TimingLayer::builder().metrics(false)),
        ),
        (
            "tower-kit TimingLayer + Server-Timing",
            timing(TimingLayer::builder().server_timing(true)),
        ),
        ("axum-prometheus", router().layer(prometheus_layer)),
    ];
    // `with_state(())` turns each handler into its route once, with the layers applied, as `axum::serve` does
    // (through `into_make_service`). Called without it, a `Router` re-applies every layer on every request.
    let variants = variants
        .into_iter()
        .map(|(name, router)| (name, router.with_state(())))
        .collect();
    (variants, handle)
}
