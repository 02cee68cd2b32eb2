//! Per-request cost of the timing layer next to axum-prometheus, on the same axum router, with a Prometheus recorder
//! installed (the one axum-prometheus installs; TimingLayer records into it too).
//!
//! `cargo bench -p bench-timing`
#![allow(missing_docs)]

use axum::{Router, body::Body, routing::get};
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use http_body_util::BodyExt;
use std::hint::black_box;
use tower::{Service, ServiceExt};
use tower_kit_timing::TimingLayer;

fn router() -> Router {
    Router::new()
        .route("/api/items/{id}", get(|| async { "item" }))
        .route("/health", get(|| async { "ok" }))
}

async fn one(app: &mut Router) {
    let req = Request::get("/api/items/42").body(Body::empty()).unwrap();
    let res = ServiceExt::<Request<Body>>::ready(app)
        .await
        .unwrap()
        .call(req)
        .await
        .unwrap();
    let body = res.into_body().collect().await.unwrap();
    black_box(body);
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    // axum-prometheus installs the global Prometheus recorder (and spawns its upkeep task, hence the runtime);
    // everything below records into it.
    let (prometheus_layer, handle) = {
        let _runtime = rt.enter();
        axum_prometheus::PrometheusMetricLayer::pair()
    };

    let variants: Vec<(&str, Router)> = vec![
        ("bare", router()),
        ("tower-kit TimingLayer", router().layer(TimingLayer::new())),
        (
            "tower-kit TimingLayer, stats off",
            router().layer(TimingLayer::builder().stats(false).build().unwrap()),
        ),
        (
            "tower-kit TimingLayer, metrics off (stats only)",
            router().layer(TimingLayer::builder().metrics(false).build().unwrap()),
        ),
        (
            "tower-kit TimingLayer + Server-Timing",
            router().layer(TimingLayer::builder().server_timing(true).build().unwrap()),
        ),
        ("axum-prometheus", router().layer(prometheus_layer)),
    ];
    let mut group = c.benchmark_group("timing");
    for (name, app) in variants {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter_batched(
                || app.clone(),
                |mut app| async move { one(&mut app).await },
                criterion::BatchSize::SmallInput,
            );
        });
    }
    group.finish();
    // Keep the exporter honest: something was recorded.
    assert!(handle.render().contains("http_server_request_duration"));
}

criterion_group!(benches, bench);
criterion_main!(benches);
