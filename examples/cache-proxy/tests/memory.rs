//! The proxy's cache over real sockets: 10-byte bodies under many distinct URLs, at 16 and 64 MiB caps, hold about
//! the cap in heap. hyper hands the cache bodies and header values that are slices of a connection's read buffer;
//! the cache must not keep those buffers alive. The heap is counted by `stats_alloc`, this test binary's global
//! allocator (live requested bytes, origin and client included).

use bytes::Bytes;
use cache_proxy::{Proxy, Upstream, serve};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioIo},
};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use std::{alloc::System, convert::Infallible, net::SocketAddr, time::Duration};
use tokio::net::TcpListener;
use tower_kit_cache::{CacheLayer, CacheStats};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const MIB: u64 = 1 << 20;
/// Distinct URLs per cap: enough to overflow 16 MiB of 10-byte entries about twice.
const URLS: usize = 25_000;
const CONCURRENCY: usize = 32;

fn live() -> i64 {
    let s = GLOBAL.stats();
    s.bytes_allocated as i64 - s.bytes_deallocated as i64
}

/// Runs `workers` tasks that take request numbers from a shared counter until `total`.
async fn drive<F, Fut>(total: usize, workers: usize, f: F)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (next, f) = (next.clone(), f.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return;
                }
                f(i).await;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
}

/// An origin answering every path with a 10-byte body, cacheable for 10 minutes.
async fn origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let n: usize = req
                        .uri()
                        .query()
                        .and_then(|q| q.strip_prefix("x="))
                        .and_then(|x| x.parse().ok())
                        .unwrap_or(0);
                    let res = Response::builder()
                        .header("content-type", "text/plain")
                        .header("cache-control", "public, max-age=600")
                        .header("etag", format!("\"{n:08}\""))
                        .body(Full::new(Bytes::from(format!(
                            "{:010}",
                            n % 10_000_000_000
                        ))))
                        .unwrap();
                    Ok::<_, Infallible>(res)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// Waits until the live heap stops moving, at most 10 s.
async fn settle() {
    let mut last = live();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = live();
        if (now - last).abs() < 64 * 1024 {
            break;
        }
        last = now;
    }
}

/// Heap held after `URLS` distinct GETs through a proxy with a cache of `cap` bytes, and the cache's figures.
async fn fill(origin: SocketAddr, cap: u64) -> (i64, CacheStats) {
    settle().await;
    let before = live();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream: Upstream = format!("http://{origin}").parse().unwrap();
    let cache = CacheLayer::builder()
        .max_bytes(cap)
        .cookie_bypass(false)
        .build()
        .unwrap();
    let handle = cache.handle();
    let server = tokio::spawn(serve(listener, Proxy::new(upstream, &cache)));
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    drive(URLS, CONCURRENCY, move |i| {
        let client = client.clone();
        async move {
            let uri = format!("http://{addr}/items?x={i}");
            let response = client.get(uri.parse().unwrap()).await.unwrap();
            assert_eq!(response.status(), 200);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body.len(), 10);
        }
    })
    .await;
    settle().await;
    let stats = handle.stats().await;
    let held = live() - before;
    server.abort();
    drop((cache, handle));
    (held, stats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_byte_bodies_over_sockets_stay_within_the_cap() {
    let origin = origin().await;
    let (small, small_stats) = fill(origin, 16 * MIB).await;
    let (large, large_stats) = fill(origin, 64 * MIB).await;
    for (cap, held, stats) in [(16, small, &small_stats), (64, large, &large_stats)] {
        println!(
            "cap {cap} MiB: heap {:.1} MiB, {:?}, {:.0} heap bytes per stored value",
            held as f64 / MIB as f64,
            stats,
            held as f64 / stats.entries.max(1) as f64
        );
    }
    assert!(small_stats.entries > 0 && large_stats.entries > small_stats.entries);
    let small_bound = (1.25 * (16 * MIB) as f64) as i64 + 8 * MIB as i64;
    assert!(
        small <= small_bound,
        "{small} bytes at a 16 MiB cap (bound {small_bound})"
    );
    let diff_bound = (1.25 * (48 * MIB) as f64) as i64;
    assert!(
        large - small <= diff_bound,
        "64 MiB cap holds {} bytes more than 16 MiB (bound {diff_bound})",
        large - small
    );
}
