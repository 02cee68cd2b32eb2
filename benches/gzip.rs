//! CompressionLayer next to the bare service, on JSON of 2 KiB, 16 KiB, 100 KiB and 1 MiB (`benches/gzip/payload.rs`).
//!
//! `cargo bench -p bench-gzip`. The same payloads through tower-http: `cargo bench -p bench-gzip-towerhttp` and
//! `cargo bench -p bench-gzip-towerhttp-zlibrs`. Each run prints the compressed size per payload.
#![allow(missing_docs)]

#[path = "gzip/payload.rs"]
mod payload;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::header;
use tower::Layer;
use tower_kit_compression::CompressionLayer;

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let layer = CompressionLayer::new();
    for &(name, size) in payload::SIZES {
        let inner = payload::json_service(Bytes::from(payload::json(size)));
        let (headers, compressed) = runtime.block_on(payload::fetch(layer.layer(inner.clone())));
        assert_eq!(headers[header::CONTENT_ENCODING], "gzip");
        eprintln!("gzip/{name}: tower-kit {size} B -> {compressed} B");

        let mut group = c.benchmark_group("gzip");
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("bare", name), |b| {
            b.iter(|| runtime.block_on(payload::fetch(inner.clone())))
        });
        group.bench_function(BenchmarkId::new("tower-kit", name), |b| {
            b.iter(|| runtime.block_on(payload::fetch(layer.layer(inner.clone()))))
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
