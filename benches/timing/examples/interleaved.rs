//! The `bench-timing` variants measured interleaved (each variant in turn, 41 rounds of 20 000 requests, medians),
//! which is steadier than criterion on a busy machine: `cargo run --release -p bench-timing --example interleaved`.
//! With an argument (the first variant whose name contains it: `bare`, `identity`, `TimingLayer`, `all`,
//! `prometheus`) it runs that one variant alone (200 000 requests), for `valgrind --tool=callgrind`.
#![allow(missing_docs)]

#[path = "../setup.rs"]
mod setup;

use axum::{Router, body::Body};
use http::Request;
use http_body::Body as _;
use std::{
    future::Future,
    hint::black_box,
    pin::{Pin, pin},
    task::{Context, Poll, Waker},
    time::Instant,
};
use tower::Service;

/// Sends one request and reads its body to the end. The handlers complete on the first poll, so no runtime is
/// needed and the figures hold no scheduler cost.
fn send(app: &mut Router) {
    let mut cx = Context::from_waker(Waker::noop());
    let ready = <Router as Service<Request<Body>>>::poll_ready(app, &mut cx);
    assert!(matches!(ready, Poll::Ready(Ok(()))));
    let req = Request::get("/api/items/42").body(Body::empty()).unwrap();
    let mut fut = pin!(app.call(req));
    let Poll::Ready(Ok(response)) = fut.as_mut().poll(&mut cx) else {
        panic!("the router did not answer on the first poll");
    };
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    while let Poll::Ready(Some(frame)) = Pin::new(&mut body).poll_frame(&mut cx) {
        black_box(frame.unwrap());
    }
    assert!(body.is_end_stream());
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let (mut variants, handle) = {
        let _runtime = rt.enter();
        setup::variants()
    };
    if let Some(mode) = std::env::args().nth(1) {
        let (_, app) = variants
            .iter_mut()
            .find(|(name, _)| name.contains(mode.as_str()))
            .expect("a variant name, or part of one");
        for _ in 0..200_000 {
            send(app);
        }
        return;
    }
    let rounds = 41;
    let n = 20_000;
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for _ in 0..rounds {
        for (i, (_, app)) in variants.iter_mut().enumerate() {
            let t = Instant::now();
            for _ in 0..n {
                send(app);
            }
            samples[i].push(t.elapsed().as_nanos() as f64 / n as f64);
        }
    }
    let meds: Vec<f64> = samples
        .iter_mut()
        .map(|v| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        })
        .collect();
    for (i, (name, _)) in variants.iter().enumerate() {
        println!(
            "{name:48} median {:7.1} ns  added {:6.1} ns",
            meds[i],
            meds[i] - meds[0]
        );
    }
    let prom = meds[variants.len() - 1] - meds[0];
    println!(
        "kit (default) / axum-prometheus added cost: {:.2}",
        (meds[2] - meds[0]) / prom
    );
    println!(
        "kit (all metrics) / axum-prometheus added cost: {:.2}",
        (meds[3] - meds[0]) / prom
    );
    assert!(handle.render().contains("http_server_request_duration"));
}
