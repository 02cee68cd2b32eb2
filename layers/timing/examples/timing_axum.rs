//! TimingLayer on an axum router with a Prometheus exporter: `cargo run -p tower-kit-timing --example timing_axum`,
//! then `curl localhost:3001/users/7` and `curl localhost:3001/metrics`.

use axum::{Json, Router, routing::get};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use std::time::Duration;
use tower_kit_timing::TimingLayer;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // ANCHOR: exporter
    // Buckets belong to the exporter. OpenTelemetry's recommended seconds buckets, and powers of four for bytes.
    let prometheus = PrometheusBuilder::new()
        .with_recommended_naming(true) // http_server_request_duration_seconds, ..._total
        .set_buckets_for_metric(
            Matcher::Suffix("duration".into()),
            &[
                0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
            ],
        )?
        .set_buckets_for_metric(
            Matcher::Suffix("size".into()),
            &[
                64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0,
            ],
        )?
        .install_recorder()?;
    // ANCHOR_END: exporter

    // ANCHOR: layer
    let timing = TimingLayer::builder()
        .max_label_values(500)
        .slow_threshold(Some(Duration::from_millis(500)))
        .server_timing_if(|req| req.headers.contains_key("x-debug-timing"))
        .build()?;
    let stats = timing.handle();

    let app = Router::new()
        .route("/users/{id}", get(|| async { "a user" }))
        .route("/stats", get(move || async move { Json(stats.snapshot()) }))
        .route("/metrics", get(move || async move { prometheus.render() }))
        // `Router::layer` (not an outer ServiceBuilder) so that axum's MatchedPath is the route label.
        .layer(timing);
    // ANCHOR_END: layer

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3001").await?;
    axum::serve(listener, app).await?;
    Ok(())
}
