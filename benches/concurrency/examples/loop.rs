//! Runs N sequential calls of one `concurrency/uncontended` variant (the same inner service and loop as the
//! benchmark), for instruction counts: `loop <bare|tower-kit|tower> <calls> [headers]`. Compare two call counts
//! under `valgrind --tool=callgrind` (or `perf stat -e instructions`) to get the instructions per call. With
//! `headers`, the inner response also carries a `content-type` header (the layer then looks it up).
//!
//! `loop axum <bare|id|tower-kit|tower> <calls>` sends the calls through the `concurrency/axum` routers instead;
//! `loop axum time [rounds]` times those four interleaved, fastest round of each.
//!
//! `loop time [rounds] [headers]` times the three variants instead, interleaved, round after round, and prints the fastest
//! round of each (nanoseconds per call): the fastest round is the one least disturbed by other work on a busy
//! machine.
#![allow(missing_docs)]

#[path = "../axum_routes.rs"]
mod axum_routes;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use std::{convert::Infallible, hint::black_box};
use tower::{Service, ServiceBuilder, ServiceExt, limit::ConcurrencyLimitLayer, service_fn};
use tower_kit_concurrency::ConcurrencyLayer;

type Req = Request<Full<Bytes>>;

fn ready_inner()
-> impl Service<Req, Response = Response<Full<Bytes>>, Error = Infallible, Future: Send> + Clone + Send
{
    service_fn(|_req: Req| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
    })
}

/// [`ready_inner`] with a `content-type` header on the response.
fn headers_inner()
-> impl Service<Req, Response = Response<Full<Bytes>>, Error = Infallible, Future: Send> + Clone + Send
{
    service_fn(|_req: Req| async {
        let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain"),
        );
        Ok::<_, Infallible>(response)
    })
}

#[inline(never)]
async fn run_calls<S>(svc: &mut S, iters: u64)
where
    S: Service<Req>,
    S::Error: std::fmt::Debug,
{
    for _ in 0..iters {
        let ready = svc.ready().await.unwrap();
        let response = ready.call(Request::new(Full::default())).await.unwrap();
        drop(black_box(response));
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let variant = args.next().unwrap_or_else(|| "tower-kit".to_owned());
    if variant == "axum" {
        return in_axum(args.next().as_deref(), args.next());
    }
    if variant == "time" {
        let rounds: u32 = args.next().and_then(|n| n.parse().ok()).unwrap_or(50);
        if args.next().is_some_and(|a| a == "headers") {
            return time(rounds, headers_inner);
        }
        return time(rounds, ready_inner);
    }
    let calls: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let headers = args.next().is_some_and(|a| a == "headers");
    if headers {
        run(&variant, calls, headers_inner);
    } else {
        run(&variant, calls, ready_inner);
    }
}

fn run<S, F>(variant: &str, calls: u64, inner: F)
where
    S: Service<Req, Response = Response<Full<Bytes>>, Error = Infallible> + Clone,
    F: Fn() -> S,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match variant {
        "bare" => {
            let mut svc = inner();
            rt.block_on(run_calls(&mut svc, calls));
        }
        "tower-kit" => {
            let mut svc = ServiceBuilder::new()
                .layer(ConcurrencyLayer::new(1024.try_into().unwrap()))
                .service(inner());
            rt.block_on(run_calls(&mut svc, calls));
        }
        "tower" => {
            let mut svc = ServiceBuilder::new()
                .layer(ConcurrencyLimitLayer::new(1024))
                .service(inner());
            rt.block_on(run_calls(&mut svc, calls));
        }
        other => panic!("unknown variant {other}"),
    }
}

/// Times the three variants in interleaved rounds of 200 000 calls; prints the fastest round of each.
fn time<S, F>(rounds: u32, inner: F)
where
    S: Service<Req, Response = Response<Full<Bytes>>, Error = Infallible> + Clone,
    F: Fn() -> S,
{
    const CALLS: u64 = 200_000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut bare = inner();
    let mut kit = ServiceBuilder::new()
        .layer(ConcurrencyLayer::new(1024.try_into().unwrap()))
        .service(inner());
    let mut tower = ServiceBuilder::new()
        .layer(ConcurrencyLimitLayer::new(1024))
        .service(inner());
    let mut best = [f64::MAX; 3];
    for _ in 0..rounds {
        let per_call = |start: std::time::Instant| start.elapsed().as_nanos() as f64 / CALLS as f64;
        let start = std::time::Instant::now();
        rt.block_on(run_calls(&mut bare, CALLS));
        best[0] = best[0].min(per_call(start));
        let start = std::time::Instant::now();
        rt.block_on(run_calls(&mut kit, CALLS));
        best[1] = best[1].min(per_call(start));
        let start = std::time::Instant::now();
        rt.block_on(run_calls(&mut tower, CALLS));
        best[2] = best[2].min(per_call(start));
    }
    println!(
        "fastest of {rounds} rounds, ns/call: bare {:.1}  tower-kit {:.1}  tower {:.1}  (tower-kit/tower {:.3}, added {:.3})",
        best[0],
        best[1],
        best[2],
        best[1] / best[2],
        (best[1] - best[0]) / (best[2] - best[0]),
    );
}

/// The `concurrency/axum` routers: `which` is `bare`, `id`, `tower-kit` or `tower`, or `time` to time all four.
fn in_axum(which: Option<&str>, arg: Option<String>) {
    use axum_routes::{router, send};
    let make = |which: &str| match which {
        "bare" => router(),
        "id" => router().layer(tower::layer::util::Identity::new()),
        "tower" => router().layer(ConcurrencyLimitLayer::new(1024)),
        "tower-kit" => router().layer(ConcurrencyLayer::new(1024.try_into().unwrap())),
        other => panic!("unknown variant {other}"),
    };
    match which {
        Some("time") => {
            const CALLS: u32 = 50_000;
            let rounds: u32 = arg.and_then(|n| n.parse().ok()).unwrap_or(40);
            let names = ["bare", "id", "tower-kit", "tower"];
            let mut routers = names.map(make);
            let mut best = [f64::MAX; 4];
            for _ in 0..rounds {
                for (i, r) in routers.iter_mut().enumerate() {
                    let start = std::time::Instant::now();
                    for _ in 0..CALLS {
                        send(r);
                    }
                    best[i] = best[i].min(start.elapsed().as_nanos() as f64 / f64::from(CALLS));
                }
            }
            println!(
                "axum, fastest of {rounds} rounds, ns/request: bare {:.1}  identity +{:.1}  tower-kit +{:.1}  tower +{:.1}  \
                 (added: tower-kit/tower {:.3}; beyond the identity layer {:.3})",
                best[0],
                best[1] - best[0],
                best[2] - best[0],
                best[3] - best[0],
                (best[2] - best[0]) / (best[3] - best[0]),
                (best[2] - best[1]) / (best[3] - best[1]),
            );
        }
        which => {
            let mut r = make(which.unwrap_or("tower-kit"));
            let calls: u64 = arg.and_then(|n| n.parse().ok()).unwrap_or(100_000);
            for _ in 0..calls {
                send(&mut r);
            }
        }
    }
}
