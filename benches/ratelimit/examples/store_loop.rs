//! The in-process store's decision alone (the path of an admitted single-policy request), for profiling:
//! `cargo run --release -p bench-ratelimit --example store_loop`.
#![allow(missing_docs)]

#[path = "../routers.rs"]
mod routers;

use std::{hint::black_box, time::Instant};
use tower_kit_ratelimit::{InMemoryStore, RateLimitStore, store::CheckRequest};

fn main() {
    let store = InMemoryStore::new();
    let check = routers::check();
    let n = 200_000;
    let rounds = 41;
    // The same store on a clock that costs an atomic load: what reading the time costs.
    let manual = InMemoryStore::builder()
        .clock(tower_kit_ratelimit::ManualMonotonicClock::new())
        .build()
        .unwrap();
    let (mut fast, mut full, mut no_clock) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..n {
            assert!(store.try_admit_one(black_box(&check)));
        }
        fast.push(t.elapsed().as_nanos() as f64 / n as f64);
        let t = Instant::now();
        for _ in 0..n {
            let request = CheckRequest {
                checks: std::slice::from_ref(black_box(&check)),
                cost: 1,
            };
            assert!(store.decide(&request).admitted());
        }
        full.push(t.elapsed().as_nanos() as f64 / n as f64);
        let t = Instant::now();
        for _ in 0..n {
            assert!(manual.try_admit_one(black_box(&check)));
        }
        no_clock.push(t.elapsed().as_nanos() as f64 / n as f64);
    }
    no_clock.sort_by(f64::total_cmp);
    fast.sort_by(f64::total_cmp);
    full.sort_by(f64::total_cmp);
    println!(
        "try_admit_one {:.1} ns, decide {:.1} ns, try_admit_one on a manual clock {:.1} ns (medians of {rounds} \
         rounds of {n})",
        fast[rounds / 2],
        full[rounds / 2],
        no_clock[rounds / 2]
    );
}
