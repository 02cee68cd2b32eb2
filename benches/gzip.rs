//! CompressionLayer next to the bare service, for each coding (gzip, deflate, br, zstd) at its default, on JSON of
//! 2 KiB, 16 KiB, 100 KiB and 1 MiB (`benches/gzip/payload.rs`).
//!
//! `cargo bench -p bench-gzip`. The same payloads through tower-http: `cargo bench -p bench-compression-towerhttp`
//! (every codec), `cargo bench -p bench-gzip-towerhttp` and `cargo bench -p bench-gzip-towerhttp-zlibrs` (gzip with
//! flate2's two backends). Each run prints the compressed size per coding and payload.
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
    for coding in ["gzip", "deflate", "br", "zstd"] {
        for &(name, size) in payload::SIZES {
            let inner = payload::json_service(Bytes::from(payload::json(size)));
            let (headers, compressed) =
                runtime.block_on(payload::fetch(layer.layer(inner.clone()), coding));
            assert_eq!(headers[header::CONTENT_ENCODING], coding);
            eprintln!("{coding}/{name}: tower-kit {size} B -> {compressed} B");

            let mut group = c.benchmark_group(coding);
            group.throughput(Throughput::Bytes(size as u64));
            if coding == "gzip" {
                group.bench_function(BenchmarkId::new("bare", name), |b| {
                    b.iter(|| runtime.block_on(payload::fetch(inner.clone(), coding)))
                });
            }
            group.bench_function(BenchmarkId::new("tower-kit", name), |b| {
                b.iter(|| runtime.block_on(payload::fetch(layer.layer(inner.clone()), coding)))
            });
            group.finish();
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
