//! CacheLayer next to tower-http-cache (moka backend) on the same request: the cost a hit and a miss add to a bare
//! service. Run with `cargo bench -p bench-cache`.
#![allow(missing_docs)]

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use std::{
    convert::Infallible,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};
use tokio::runtime::Runtime;
use tower::{Layer, Service, ServiceExt};

/// A 1 KiB JSON body, as a small API response.
static BODY: [u8; 1024] = [b'x'; 1024];

fn origin()
-> impl Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>, Error = Infallible, Future: Send>
+ Clone
+ Send
+ 'static {
    tower::service_fn(|_req: Request<Full<Bytes>>| async {
        Ok(Response::builder()
            .header("cache-control", "public, max-age=3600")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(&BODY)))
            .unwrap())
    })
}

fn request(uri: &str) -> Request<Full<Bytes>> {
    Request::get(uri).body(Full::new(Bytes::new())).unwrap()
}

/// Runs `iters` requests through `svc` on one current-thread runtime (one `block_on` for all of them), reading
/// every body to its end, and returns the time taken.
fn run<S, B>(rt: &Runtime, svc: &S, iters: u64, uri: impl Fn(u64) -> String) -> Duration
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    rt.block_on(async {
        let start = Instant::now();
        for i in 0..iters {
            let res = svc.clone().oneshot(request(&uri(i))).await.unwrap();
            let body = res.into_body().collect().await.unwrap();
            std::hint::black_box(body);
        }
        start.elapsed()
    })
}

/// Both caches hold about a million of these responses, so the miss benchmark measures storing, not eviction
/// (tower-http-cache counts entries, tower-kit-cache bytes: about 1.3 KB per entry here).
const ENTRIES: u64 = 1_000_000;

fn tower_kit() -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<tower_kit_cache::CacheBody<Full<Bytes>>>,
    Error = Infallible,
> + Clone {
    tower_kit_cache::CacheLayer::builder()
        .max_bytes(ENTRIES * 1300)
        .build()
        .unwrap()
        .layer(origin())
}

fn peer() -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<tower_http_cache::layer::SyncBoxBody>,
    Error = tower_http_cache::layer::BoxError,
> + Clone {
    tower_http_cache::layer::CacheLayer::builder(
        tower_http_cache::backend::memory::InMemoryBackend::new(ENTRIES),
    )
    .ttl(Duration::from_secs(3600))
    .build()
    .layer(origin())
}

fn hit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("cache/hit");
    let bare = origin();
    group.bench_function("bare", |b| {
        b.iter_custom(|n| run(&rt, &bare, n, |_| "/api/items".into()))
    });
    let ours = tower_kit();
    run(&rt, &ours, 1, |_| "/api/items".into());
    group.bench_function("tower-kit-cache", |b| {
        b.iter_custom(|n| run(&rt, &ours, n, |_| "/api/items".into()))
    });
    let theirs = peer();
    run(&rt, &theirs, 1, |_| "/api/items".into());
    // Give any background store write of the peer time to land before measuring hits.
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(50)).await });
    group.bench_function("tower-http-cache", |b| {
        b.iter_custom(|n| run(&rt, &theirs, n, |_| "/api/items".into()))
    });
    group.finish();
}

fn miss(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("cache/miss");
    // Every request has a URL never seen before: lookup, origin call, and storing the response.
    let counter = AtomicU64::new(0);
    let unique = |_| format!("/api/items?n={}", counter.fetch_add(1, Ordering::Relaxed));
    let bare = origin();
    group.bench_function("bare", |b| b.iter_custom(|n| run(&rt, &bare, n, unique)));
    {
        let ours = tower_kit();
        group.bench_function("tower-kit-cache", |b| {
            b.iter_custom(|n| run(&rt, &ours, n, unique))
        });
    }
    {
        let theirs = peer();
        group.bench_function("tower-http-cache", |b| {
            b.iter_custom(|n| run(&rt, &theirs, n, unique))
        });
    }
    group.finish();
}

criterion_group!(benches, hit, miss);
criterion_main!(benches);
