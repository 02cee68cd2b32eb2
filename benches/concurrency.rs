//! ConcurrencyLayer next to tower's ConcurrencyLimit (and ConcurrencyLimit + LoadShed).
//!
//! - `concurrency/uncontended`: the added cost of one call through the limit when slots are free: bare service,
//!   tower-kit `ConcurrencyLayer`, tower `ConcurrencyLimitLayer`. The response has no header at all.
//! - `concurrency/uncontended_typed`: the same with a `content-type` on the response, as every real handler
//!   sends (tower-kit looks for `text/event-stream` in it).
//! - `concurrency/axum`: one axum route with the layer added by `Router::layer`: the router alone, + a layer that
//!   does nothing (what `Router::layer` itself costs), + tower's `ConcurrencyLimitLayer`, + `ConcurrencyLayer`.
//! - overload (printed after the criterion groups): 2× more callers than permits, inner service sleeping 1 ms,
//!   for a fixed time; goodput (admitted requests per second) and p50/p99 latency of admitted requests, for
//!   tower-kit (refuse at once, and with a short LIFO queue) and tower `LoadShed` + `ConcurrencyLimit`.
//!   Set `OVERLOAD_SECS` to change the run length (default 2).
#![allow(missing_docs)]

use bytes::Bytes;
use criterion::Criterion;
use http::{Request, Response};
use http_body_util::Full;
use std::hint::black_box;
use std::{
    convert::Infallible,
    time::{Duration, Instant},
};
use tower::{
    BoxError, Service, ServiceBuilder, ServiceExt, layer::util::Identity,
    limit::ConcurrencyLimitLayer, service_fn,
};
use tower_kit_concurrency::{ConcurrencyLayer, QueueOrder};

type Req = Request<Full<Bytes>>;

fn ready_inner()
-> impl Service<Req, Response = Response<Full<Bytes>>, Error = Infallible, Future: Send> + Clone + Send
{
    service_fn(|_req: Req| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
    })
}

/// [`ready_inner`] with a `content-type` on the response.
fn typed_inner()
-> impl Service<Req, Response = Response<Full<Bytes>>, Error = Infallible, Future: Send> + Clone + Send
{
    service_fn(|_req: Req| async {
        let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        Ok::<_, Infallible>(response)
    })
}

/// Runs `iters` sequential calls through `svc` and returns the elapsed time.
async fn run_calls<S>(svc: &mut S, iters: u64) -> Duration
where
    S: Service<Req>,
    S::Error: std::fmt::Debug,
{
    let start = Instant::now();
    for _ in 0..iters {
        let ready = svc.ready().await.unwrap();
        let response = ready.call(Request::new(Full::default())).await.unwrap();
        // Dropping the response ends the body: tower-kit releases its slot here.
        drop(black_box(response));
    }
    start.elapsed()
}

fn uncontended(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    uncontended_group(c, &rt, "concurrency/uncontended", ready_inner);
    uncontended_group(c, &rt, "concurrency/uncontended_typed", typed_inner);
}

fn uncontended_group<S, F>(c: &mut Criterion, rt: &tokio::runtime::Runtime, name: &str, inner: F)
where
    S: Service<Req, Response = Response<Full<Bytes>>, Error = Infallible> + Clone,
    F: Fn() -> S,
{
    let mut group = c.benchmark_group(name);
    group.bench_function("bare", |b| {
        let mut svc = inner();
        b.iter_custom(|iters| rt.block_on(run_calls(&mut svc, iters)));
    });
    group.bench_function("tower-kit ConcurrencyLayer", |b| {
        let mut svc = ServiceBuilder::new()
            .layer(ConcurrencyLayer::new(1024.try_into().unwrap()))
            .service(inner());
        b.iter_custom(|iters| rt.block_on(run_calls(&mut svc, iters)));
    });
    group.bench_function("tower ConcurrencyLimit", |b| {
        let mut svc = ServiceBuilder::new()
            .layer(ConcurrencyLimitLayer::new(1024))
            .service(inner());
        b.iter_custom(|iters| rt.block_on(run_calls(&mut svc, iters)));
    });
    group.finish();
}

#[path = "concurrency/axum_routes.rs"]
mod axum_routes;

fn in_axum(c: &mut Criterion) {
    use axum_routes::{router, send};
    let mut group = c.benchmark_group("concurrency/axum");
    for (name, mut router) in [
        ("bare router", router()),
        ("identity layer", router().layer(Identity::new())),
        (
            "tower ConcurrencyLimit",
            router().layer(ConcurrencyLimitLayer::new(1024)),
        ),
        (
            "tower-kit ConcurrencyLayer",
            router().layer(ConcurrencyLayer::new(1024.try_into().unwrap())),
        ),
    ] {
        group.bench_function(name, |b| b.iter(|| send(&mut router)));
    }
    group.finish();
}

const PERMITS: usize = 32;
const CALLERS: usize = 2 * PERMITS;

fn slow_inner()
-> impl Service<Req, Response = Response<Full<Bytes>>, Error = Infallible, Future: Send> + Clone + Send
{
    service_fn(|_req: Req| async {
        tokio::time::sleep(Duration::from_millis(1)).await;
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
    })
}

struct Outcome {
    admitted: usize,
    refused: usize,
    latencies: Vec<Duration>,
}

/// `CALLERS` tasks call in a loop for `run`; a refusal is an HTTP 503 (tower-kit) or an `Overloaded` error (tower).
async fn overload_run<S>(svc: S, run: Duration) -> Outcome
where
    S: Service<Req, Response = Response<Full<Bytes>>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError> + Send,
{
    overload_generic(svc, run, |r: &Response<Full<Bytes>>| {
        r.status().is_success()
    })
    .await
}

async fn overload_generic<S, B, F>(svc: S, run: Duration, admitted: F) -> Outcome
where
    S: Service<Req, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError> + Send,
    B: Send + 'static,
    F: Fn(&Response<B>) -> bool + Send + Sync + Copy + 'static,
{
    let stop = Instant::now() + run;
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let mut svc = svc.clone();
            tokio::spawn(async move {
                let mut out = Outcome {
                    admitted: 0,
                    refused: 0,
                    latencies: Vec::new(),
                };
                while Instant::now() < stop {
                    let start = Instant::now();
                    let result = match svc.ready().await {
                        Ok(ready) => ready.call(Request::new(Full::default())).await,
                        Err(e) => Err(e),
                    };
                    match result {
                        Ok(response) if admitted(&response) => {
                            drop(response);
                            out.latencies.push(start.elapsed());
                            out.admitted += 1;
                        }
                        _ => {
                            out.refused += 1;
                            // A refused client backs off briefly, as a real one would.
                            tokio::time::sleep(Duration::from_micros(200)).await;
                        }
                    }
                }
                out
            })
        })
        .collect();
    let mut all = Outcome {
        admitted: 0,
        refused: 0,
        latencies: Vec::new(),
    };
    for t in tasks {
        let o = t.await.unwrap();
        all.admitted += o.admitted;
        all.refused += o.refused;
        all.latencies.extend(o.latencies);
    }
    all
}

fn report(name: &str, run: Duration, mut o: Outcome) {
    o.latencies.sort_unstable();
    let pct = |p: f64| {
        o.latencies
            .get(((o.latencies.len() as f64 * p) as usize).min(o.latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "{name:<44} goodput {:>8.0}/s  refused {:>8.0}/s  p50 {:>7.2?}  p99 {:>7.2?}",
        o.admitted as f64 / run.as_secs_f64(),
        o.refused as f64 / run.as_secs_f64(),
        pct(0.50),
        pct(0.99),
    );
}

fn overload() {
    let secs: u64 = std::env::var("OVERLOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let run = Duration::from_secs(secs);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "\noverload: {CALLERS} callers, {PERMITS} permits, inner sleeps 1 ms, {secs} s per run"
    );
    let kit = ServiceBuilder::new()
        .layer(ConcurrencyLayer::new(PERMITS.try_into().unwrap()))
        .service(slow_inner());
    let o = rt.block_on(overload_generic(kit, run, |r| r.status().is_success()));
    report("tower-kit ConcurrencyLayer (refuse at once)", run, o);

    let kit_lifo = ServiceBuilder::new()
        .layer(
            ConcurrencyLayer::builder()
                .max_in_flight(PERMITS)
                .max_queue(PERMITS)
                .queue_order(QueueOrder::Lifo)
                .max_queue_wait(Duration::from_millis(5))
                .build()
                .unwrap(),
        )
        .service(slow_inner());
    let o = rt.block_on(overload_generic(kit_lifo, run, |r| r.status().is_success()));
    report("tower-kit ConcurrencyLayer (LIFO queue, 5 ms)", run, o);

    let tower_shed = ServiceBuilder::new()
        .load_shed()
        .concurrency_limit(PERMITS)
        .service(slow_inner());
    let o = rt.block_on(overload_run(tower_shed, run));
    report("tower LoadShed + ConcurrencyLimit", run, o);
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    uncontended(&mut c);
    in_axum(&mut c);
    c.final_summary();
    overload();
}
