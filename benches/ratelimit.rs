//! RateLimitLayer next to tower_governor on an axum router, keyed by peer IP with a quota that is never reached,
//! so the figures are the cost of admitting a request. Run with `cargo bench -p bench-ratelimit`.
//!
//! - `ratelimit/axum_bare`: the router alone;
//! - `ratelimit/axum_identity_layer`: + a layer that does nothing (`Identity`): what axum's `Router::layer` itself
//!   costs per request, which every layer below pays too;
//! - `ratelimit/tower_governor`: + `GovernorLayer` (peer IP key);
//! - `ratelimit/tower_kit`: + `RateLimitLayer` (peer IP key, no headers on admitted responses: the default), with
//!   `keep_inner_body()` as recommended under axum;
//! - `ratelimit/tower_kit_headers`: the same with `RateLimit-Policy`/`RateLimit` on admitted responses;
//! - `ratelimit/tower_kit_policy_body`: the default body mode (`PolicyBody`), which axum boxes again per response;
//! - `ratelimit_served/*`: the layer around the whole router (not `Router::layer`), served as `axum::serve` serves
//!   a service (one clone per request): the router alone, + `GovernorLayer`, + `RateLimitLayer`. No route is
//!   wrapped again, so this is each layer's own cost;
//! - `ratelimit_contended/*`: two threads sending through one shared layer (same key: one hot state), measured
//!   as the wall time for both threads to send `iters` requests each.
#![allow(missing_docs)]

#[path = "ratelimit/routers.rs"]
mod routers;

use axum::Router;
use criterion::{Criterion, criterion_group, criterion_main};
use routers::{
    base, send, send_served, served_governor, served_kit, with_governor, with_identity, with_kit,
    with_kit_policy_body,
};
use std::{
    sync::{Arc, Barrier},
    time::{Duration, Instant},
};

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("ratelimit");
    for (name, mut router) in [
        ("axum_bare", base()),
        ("axum_identity_layer", with_identity()),
        ("tower_governor", with_governor()),
        ("tower_kit", with_kit(false)),
        ("tower_kit_headers", with_kit(true)),
        ("tower_kit_policy_body", with_kit_policy_body()),
    ] {
        group.bench_function(name, |b| b.iter(|| send(&mut router)));
    }
    group.finish();

    let mut group = c.benchmark_group("ratelimit_served");
    let bare = base();
    group.bench_function("axum_bare", |b| b.iter(|| send_served(&bare)));
    let governor = served_governor();
    group.bench_function("tower_governor", |b| b.iter(|| send_served(&governor)));
    let kit = served_kit();
    group.bench_function("tower_kit", |b| b.iter(|| send_served(&kit)));
    group.finish();

    let mut group = c.benchmark_group("ratelimit_contended");
    for (name, router) in [
        ("axum_bare_2_threads", base()),
        ("tower_governor_2_threads", with_governor()),
        ("tower_kit_2_threads", with_kit(false)),
    ] {
        group.bench_function(name, |b| b.iter_custom(|iters| two_threads(&router, iters)));
    }
    group.finish();
}

/// Wall time for two threads to send `iters` requests each through clones of one router (one shared limiter).
fn two_threads(router: &Router, iters: u64) -> Duration {
    let barrier = Arc::new(Barrier::new(3));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let mut router = router.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                for _ in 0..iters {
                    send(&mut router);
                }
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for h in handles {
        h.join().unwrap();
    }
    start.elapsed()
}

criterion_group!(benches, bench);
criterion_main!(benches);
