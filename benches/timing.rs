//! Per-request cost of the timing layer next to axum-prometheus, on the same axum router, with a Prometheus recorder
//! installed (the one axum-prometheus installs; TimingLayer records into it too).
//!
//! `cargo bench -p bench-timing`; steadier on a busy machine:
//! `cargo run --release -p bench-timing --example interleaved`.
#![allow(missing_docs)]

#[path = "timing/setup.rs"]
mod setup;

use axum::{Router, body::Body};
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use http_body_util::BodyExt;
use std::hint::black_box;
use tower::{Service, ServiceExt};

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
    let (variants, handle) = {
        let _runtime = rt.enter();
        setup::variants()
    };
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
