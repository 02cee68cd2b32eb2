//! The `bench-ratelimit` variants measured interleaved (each variant in turn, 41 rounds of 50 000 requests,
//! medians), which is steadier than criterion on a busy machine:
//! `cargo run --release -p bench-ratelimit --example interleaved`. With an argument `kit`, `gov` or `bare` it runs
//! that one variant alone (5 000 000 requests, or the count given as a second argument), for `perf record` or
//! `valgrind --tool=callgrind` (`id` runs the identity-layer router).
#![allow(missing_docs)]

#[path = "../routers.rs"]
mod routers;

use routers::*;

use std::time::Instant;

fn main() {
    if let Some(mode) = std::env::args().nth(1) {
        let mut r = match mode.as_str() {
            "kit" => with_kit(false),
            "gov" => with_governor(),
            "id" => with_identity(),
            _ => base(),
        };
        let n: u64 = std::env::args()
            .nth(2)
            .and_then(|n| n.parse().ok())
            .unwrap_or(5_000_000);
        for _ in 0..n {
            send(&mut r);
        }
        return;
    }
    let mut variants = [
        ("axum_bare", base()),
        ("axum_identity_layer", with_identity()),
        ("tower_governor", with_governor()),
        ("tower_kit", with_kit(false)),
        ("tower_kit_headers", with_kit(true)),
        ("tower_kit_policy_body", with_kit_policy_body()),
    ];
    // More rounds (`ROUNDS=201`) steady the medians on a busy machine.
    let rounds = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(41);
    let n = 50_000;
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for _ in 0..rounds {
        for (i, (_, r)) in variants.iter_mut().enumerate() {
            let t = Instant::now();
            for _ in 0..n {
                send(r);
            }
            samples[i].push(t.elapsed().as_nanos() as f64 / n as f64);
        }
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let meds: Vec<f64> = samples.iter_mut().map(med).collect();
    for (i, (name, _)) in variants.iter().enumerate() {
        println!(
            "{name:24} median {:7.1} ns  added {:6.1} ns",
            meds[i],
            meds[i] - meds[0]
        );
    }
    println!(
        "tower_kit / tower_governor added cost: {:.2}",
        (meds[3] - meds[0]) / (meds[2] - meds[0])
    );
    println!(
        "same, beyond the identity layer: {:.2}",
        (meds[3] - meds[1]) / (meds[2] - meds[1])
    );
}
