//! What a hit costs by store: moka (in process), tiered (an L1 hit in front of Redis) and Redis alone (one `GET`
//! round trip to a local `redis-server`, started by the bench). Run with `cargo bench -p bench-cache --bench
//! cache-redis` (needs `redis-server` on the `PATH`).
#![allow(missing_docs)]

use tower_kit_test_support as redis_server;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use std::{
    convert::Infallible,
    time::{Duration, Instant},
};
use tokio::runtime::Runtime;
use tower::{Layer, Service, ServiceExt};
use tower_kit_cache::{CacheLayer, MokaStore, RedisStore, Store, TieredStore};

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

/// Runs `iters` GET requests for one URI through `svc`, reading every body, and returns the time taken.
fn run<S, B>(rt: &Runtime, svc: &S, iters: u64) -> Duration
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            let req = Request::get("/api/items")
                .body(Full::new(Bytes::new()))
                .unwrap();
            let res = svc.clone().oneshot(req).await.unwrap();
            assert_eq!(res.headers()["x-cache"], "HIT");
            std::hint::black_box(res.into_body().collect().await.unwrap());
        }
        start.elapsed()
    })
}

/// Stores the response through `svc` and waits until `store` holds it.
fn fill<S, B, St: Store>(rt: &Runtime, svc: &S, store: &St)
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    rt.block_on(async {
        let req = Request::get("/api/items")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let res = svc.clone().oneshot(req).await.unwrap();
        res.into_body().collect().await.unwrap();
        while store.usage().await.unwrap().entries == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
}

fn hit_by_store(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = redis_server::RedisServer::start();
    let redis = |prefix: &str| {
        RedisStore::builder(server.url())
            .prefix(prefix)
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap()
    };
    let mut group = c.benchmark_group("cache/hit-by-store");

    let moka = MokaStore::new(64 << 20);
    let svc = CacheLayer::builder()
        .store(moka.clone())
        .build()
        .unwrap()
        .layer(origin());
    fill(&rt, &svc, &moka);
    group.bench_function("moka", |b| b.iter_custom(|n| run(&rt, &svc, n)));

    // The tiered store spawns its invalidation listener: make it inside the runtime.
    let tiered = rt.block_on(async { TieredStore::new(MokaStore::new(64 << 20), redis("bt:")) });
    let svc = CacheLayer::builder()
        .store(tiered.clone())
        .build()
        .unwrap()
        .layer(origin());
    fill(&rt, &svc, &tiered);
    group.bench_function("tiered (L1 hit)", |b| b.iter_custom(|n| run(&rt, &svc, n)));

    let store = redis("br:");
    let svc = CacheLayer::builder()
        .store(store.clone())
        .build()
        .unwrap()
        .layer(origin());
    fill(&rt, &svc, &store);
    group.bench_function("redis", |b| b.iter_custom(|n| run(&rt, &svc, n)));
    group.finish();
}

criterion_group!(benches, hit_by_store);
criterion_main!(benches);
