//! tower-http's `CompressionLayer` with every codec at its default (gzip and deflate: flate2 level 6 on
//! miniz_oxide; br: quality 4; zstd: level 3) on the same JSON payloads as `benches/gzip.rs`, one coding per
//! request. `cargo bench -p bench-compression-towerhttp`; each run prints the compressed size per coding and payload.
#![allow(missing_docs)]

#[path = "../gzip/payload.rs"]
mod payload;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::header;
use tower::Layer;
use tower_http::compression::CompressionLayer;

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
            eprintln!("{coding}/{name}: tower-http {size} B -> {compressed} B");

            let mut group = c.benchmark_group(coding);
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_function(BenchmarkId::new("tower-http", name), |b| {
                b.iter(|| runtime.block_on(payload::fetch(layer.layer(inner.clone()), coding)))
            });
            group.finish();
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
