//! tower-http's `CompressionLayer` (gzip only, default level) on the same JSON payloads as `benches/gzip.rs`.
//!
//! Two packages build this file: `bench-gzip-towerhttp` (flate2 as users get it: miniz_oxide) and
//! `bench-gzip-towerhttp-zlibrs` (flate2 with zlib-rs). Cargo unifies features within a build, so they must be
//! separate packages, each run with `cargo bench -p <package>`. Each run prints the compressed size per payload.
#![allow(missing_docs)]

#[path = "../gzip/payload.rs"]
mod payload;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::header;
use tower::Layer;
use tower_http::compression::CompressionLayer;

/// `tower-http (miniz_oxide)` or `tower-http (zlib-rs)`, from the package building this file.
fn peer_name() -> &'static str {
    if env!("CARGO_PKG_NAME").ends_with("zlibrs") {
        "tower-http (zlib-rs)"
    } else {
        "tower-http (miniz_oxide)"
    }
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let layer = CompressionLayer::new();
    for &(name, size) in payload::SIZES {
        let inner = payload::json_service(Bytes::from(payload::json(size)));
        let (headers, compressed) =
            runtime.block_on(payload::fetch(layer.layer(inner.clone()), "gzip"));
        assert_eq!(headers[header::CONTENT_ENCODING], "gzip");
        eprintln!("gzip/{name}: {} {size} B -> {compressed} B", peer_name());

        let mut group = c.benchmark_group("gzip");
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new(peer_name(), name), |b| {
            b.iter(|| runtime.block_on(payload::fetch(layer.layer(inner.clone()), "gzip")))
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
