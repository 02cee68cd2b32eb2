//! The `bench-ratelimit` variants measured interleaved (each variant in turn, 41 rounds of 50 000 requests,
//! medians and fastest rounds), which is steadier than criterion on a busy machine:
//! `cargo run --release -p bench-ratelimit --example ratelimit_interleaved`. With an argument `kit`, `gov` or `bare` it runs
//! that one variant alone (5 000 000 requests, or the count given as a second argument), for `perf record` or
//! `valgrind --tool=callgrind` (`id` runs the identity-layer router; `kit-served`, `gov-served` and `bare-served`
//! the layers around the whole router, as in the `ratelimit_served` group).
#![allow(missing_docs)]

#[path = "../routers.rs"]
mod routers;

use routers::*;

use std::time::Instant;

/// One variant: a name and a loop that sends `n` requests.
type Variant = (&'static str, Box<dyn FnMut(u64)>);

fn router(name: &'static str, mut r: axum::Router) -> Variant {
    (
        name,
        Box::new(move |n| {
            for _ in 0..n {
                send(&mut r);
            }
        }),
    )
}

fn served(name: &'static str, s: impl Served + 'static) -> Variant {
    (
        name,
        Box::new(move |n| {
            for _ in 0..n {
                send_served(&s);
            }
        }),
    )
}

fn main() {
    if let Some(mode) = std::env::args().nth(1) {
        let (_, mut run) = match mode.as_str() {
            "kit" => router("", with_kit(false)),
            "gov" => router("", with_governor()),
            "id" => router("", with_identity()),
            "kit-served" => served("", served_kit()),
            "gov-served" => served("", served_governor()),
            "bare-served" => served("", base()),
            _ => router("", base()),
        };
        let n: u64 = std::env::args()
            .nth(2)
            .and_then(|n| n.parse().ok())
            .unwrap_or(5_000_000);
        run(n);
        return;
    }
    let mut variants = [
        router("axum_bare", base()),
        router("axum_identity_layer", with_identity()),
        router("tower_governor", with_governor()),
        router("tower_kit", with_kit(false)),
        router("tower_kit_headers", with_kit(true)),
        router("tower_kit_policy_body", with_kit_policy_body()),
        served("served_axum_bare", base()),
        served("served_tower_governor", served_governor()),
        served("served_tower_kit", served_kit()),
    ];
    // More rounds (`ROUNDS=201`) steady the figures on a busy machine.
    let rounds = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(41);
    let n = 50_000;
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for _ in 0..rounds {
        for (i, (_, run)) in variants.iter_mut().enumerate() {
            let t = Instant::now();
            run(n);
            samples[i].push(t.elapsed().as_nanos() as f64 / n as f64);
        }
    }
    for v in &mut samples {
        v.sort_by(f64::total_cmp);
    }
    let med: Vec<f64> = samples.iter().map(|v| v[v.len() / 2]).collect();
    let min: Vec<f64> = samples.iter().map(|v| v[0]).collect();
    for (i, (name, _)) in variants.iter().enumerate() {
        let base = if i >= 6 { 6 } else { 0 };
        println!(
            "{name:24} median {:7.1} ns  added {:6.1} ns   fastest {:7.1} ns  added {:6.1} ns",
            med[i],
            med[i] - med[base],
            min[i],
            min[i] - min[base],
        );
    }
    let ratio =
        |m: &[f64], kit: usize, gov: usize, base: usize| (m[kit] - m[base]) / (m[gov] - m[base]);
    println!(
        "tower_kit / tower_governor added cost, Router::layer: {:.2} (medians), {:.2} (fastest)",
        ratio(&med, 3, 2, 0),
        ratio(&min, 3, 2, 0)
    );
    println!(
        "same, beyond the identity layer: {:.2} (medians), {:.2} (fastest)",
        ratio(&med, 3, 2, 1),
        ratio(&min, 3, 2, 1)
    );
    println!(
        "same, layers around the router (served): {:.2} (medians), {:.2} (fastest)",
        ratio(&med, 8, 7, 6),
        ratio(&min, 8, 7, 6)
    );
}
