//! The demo's cache is a memory bound: 20 s of distinct `/api/items?x=N` URLs fetched with gzip (each one a new
//! cache entry and `Vary` record) at a 16 MiB cache cap keep the process under 80 MB resident. A debug build serves
//! fewer requests in 20 s than a release build, so the loop goes on until the responses add up to 2.5 times the
//! cap. The process uses the
//! binary's allocator (jemalloc); the resident size is read from `/proc/self/status`.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::sync::oneshot;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const RUN_FOR: Duration = Duration::from_secs(20);
const CONCURRENCY: usize = 16;
const MB: u64 = 1_000_000;
const CAP: u64 = 16 * 1024 * 1024;
/// Bytes of distinct responses to send: the cap filled two and a half times over.
const ENOUGH: usize = (CAP * 5 / 2) as usize;

/// The resident set size of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_gzip_urls_at_a_16_mib_cap_stay_under_80_mb_rss() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // A recorder that is not installed: this test reads no metrics.
    let metrics = demo_server::observability::prometheus_builder()
        .unwrap()
        .build_recorder()
        .handle();
    let mut config = demo_server::Config::for_tests();
    config.cache.max_bytes = CAP;
    // One client sends every request: the per-client rate limit would answer most of them 429.
    config.disable = vec![demo_server::config::LayerName::Ratelimit];
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(demo_server::serve(listener, config, metrics, async move {
        let _ = stopped.await;
    }));
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let start_rss = rss();
    let next = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + RUN_FOR;
    let give_up = Instant::now() + Duration::from_secs(90);
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (client, next, received) = (client.clone(), Arc::clone(&next), Arc::clone(&received));
        workers.spawn(async move {
            let mut peak = 0;
            // 20 s, and on until the responses add up to 2.5 times the cap (a debug build is slow), at most 90 s.
            while (Instant::now() < deadline || received.load(Ordering::Relaxed) < ENOUGH)
                && Instant::now() < give_up
            {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let request = http::Request::get(format!("http://{addr}/api/items?x={i}"))
                    .header("accept-encoding", "gzip")
                    .body(Empty::new())
                    .unwrap();
                let response = client.request(request).await.unwrap();
                assert_eq!(response.status(), 200, "/api/items?x={i}");
                assert_eq!(response.headers()["content-encoding"], "gzip");
                let body = response.into_body().collect().await.unwrap().to_bytes();
                received.fetch_add(body.len(), Ordering::Relaxed);
                if i % 1000 == 0 {
                    peak = peak.max(rss());
                }
            }
            peak
        });
    }
    let mut peak = 0;
    while let Some(worker) = workers.join_next().await {
        peak = peak.max(worker.unwrap());
    }
    let sent = next.load(Ordering::Relaxed);
    let received = received.load(Ordering::Relaxed);
    let end_rss = rss();
    peak = peak.max(end_rss);
    println!(
        "{sent} distinct URLs in {:?}, {:.1} MB of gzip bodies: RSS {:.1} MB at start, {:.1} MB at the end, {:.1} MB at most",
        started.elapsed(),
        received as f64 / MB as f64,
        start_rss as f64 / MB as f64,
        end_rss as f64 / MB as f64,
        peak as f64 / MB as f64
    );
    // Enough distinct responses to fill the cap twice over (each is stored, with its headers and `Vary` record).
    assert!(
        received >= ENOUGH,
        "only {received} bytes in {sent} responses"
    );
    assert!(peak < 80 * MB, "RSS reached {peak} bytes");
    let _ = stop.send(());
    let _ = server.await;
}
