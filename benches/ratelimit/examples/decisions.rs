//! The in-process store's decision alone next to governor's keyed limiter (the limiter `tower_governor` calls,
//! built by the same configuration as the bench's `GovernorLayer`), on one thread and on two threads sharing one
//! key (one hot state): `cargo run --release -p bench-ratelimit --example decisions`. Fastest of 21 rounds.
#![allow(missing_docs)]

#[path = "../routers.rs"]
mod routers;

use std::{
    hint::black_box,
    sync::Barrier,
    time::{Duration, Instant},
};
use tower_kit_ratelimit::{InMemoryStore, RateLimitStore};

const DECISIONS: u64 = 500_000;

fn main() {
    let ip = routers::peer().ip();
    let store = InMemoryStore::new();
    let check = routers::check();
    let config = tower_governor::governor::GovernorConfigBuilder::default()
        .per_nanosecond(1)
        .burst_size(u32::MAX)
        .finish()
        .unwrap();
    let governor = config.limiter().clone();
    for threads in [1, 2] {
        let mut best = [Duration::MAX; 2];
        for _ in 0..21 {
            best[0] = best[0].min(run(threads, || {
                assert!(store.try_admit_one(black_box(&check)))
            }));
            best[1] = best[1].min(run(threads, || {
                assert!(governor.check_key(black_box(&ip)).is_ok())
            }));
        }
        let ns = |d: Duration| d.as_nanos() as f64 / DECISIONS as f64;
        println!(
            "{threads} thread(s), one key: tower-kit InMemoryStore {:.1} ns, governor {:.1} ns per decision \
             (wall time / decisions per thread; ratio {:.2})",
            ns(best[0]),
            ns(best[1]),
            ns(best[0]) / ns(best[1]),
        );
    }
}

/// Wall time for `threads` threads to make `DECISIONS` decisions each.
fn run(threads: usize, decide: impl Fn() + Sync) -> Duration {
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                barrier.wait();
                for _ in 0..DECISIONS {
                    decide();
                }
            });
        }
        barrier.wait();
        let start = Instant::now();
        // The scope joins the threads before it returns.
        start
    })
    .elapsed()
}
