//! `max_bytes` is a memory bound: a cache filled with distinct responses holds about `max_bytes` of heap,
//! whatever the bodies' size, whether a gzip layer inside the cache compressed them, and whichever in-process store
//! (moka, or the tiered store's moka L1) keeps them.
//!
//! The origin hands the cache bodies and header values that are slices of a larger buffer, as hyper does with a
//! connection's read buffer: an entry that kept those slices would pin the whole buffer while weighing only the
//! slice. The heap is counted by `stats_alloc`, this test binary's global allocator (requested bytes, live).
#![cfg(feature = "redis")]

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Request, Response, header};
use http_body_util::{BodyExt, Full};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use std::{
    alloc::System,
    convert::Infallible,
    fmt::Write as _,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_kit_cache::{CacheLayer, Entry, MokaStore, RedisStore, Store, TieredStore};
use tower_kit_compression::CompressionLayer;
use tower_kit_test_support::RedisServer;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const MIB: u64 = 1 << 20;
/// Distinct URLs per fill: 100 000 by default (the workspace builds the cache, compression and core crates with
/// optimisation in test builds, so the whole file takes a few minutes); `MEMORY_TEST_ENTRIES` sets another count.
fn entries() -> usize {
    std::env::var("MEMORY_TEST_ENTRIES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000)
}
/// Requests in flight at once.
const CONCURRENCY: usize = 16;
/// The buffer each origin response is sliced from (hyper's first read buffer is 8 KiB and grows).
const ORIGIN_BUFFER: usize = 16 * 1024;

/// Live heap bytes of the whole process.
fn live() -> i64 {
    let s = GLOBAL.stats();
    // `stats_alloc` counts a reallocation's growth in `bytes_allocated` and its shrinking in `bytes_deallocated`.
    s.bytes_allocated as i64 - s.bytes_deallocated as i64
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Moka,
    Tiered,
}

#[derive(Debug, Clone, Copy)]
struct Case {
    body: usize,
    gzip: bool,
    store: Kind,
}

/// What one filled cache held.
#[derive(Debug, Clone, Copy)]
struct Held {
    /// Live heap growth from before the cache was built to after it was filled.
    heap: i64,
    /// Values in the in-process store (responses and, with gzip, `Vary` records).
    entries: u64,
    /// Their weight, as the store counts it.
    weight: u64,
}

/// A JSON-ish body of `len` bytes, distinct for `i` (so compressed bodies differ too), in a slice of a buffer of
/// `ORIGIN_BUFFER` bytes that also holds the header values.
fn origin_response(i: usize, len: usize) -> Response<Full<Bytes>> {
    let mut text = String::with_capacity(len + 64);
    let mut n = 0;
    while text.len() < len {
        let _ = write!(
            text,
            "{{\"id\":{i},\"n\":{n},\"name\":\"item {}\"}},",
            i ^ n
        );
        n += 1;
    }
    text.truncate(len);
    let etag = format!("\"{i:x}\"");
    let mut buf = BytesMut::with_capacity(ORIGIN_BUFFER.max(len + 256));
    buf.extend_from_slice(text.as_bytes());
    buf.extend_from_slice(etag.as_bytes());
    buf.extend_from_slice(b"public, max-age=600");
    let buf = buf.freeze();
    let body = buf.slice(..len);
    let etag = buf.slice(len..len + etag.len());
    let cache_control = buf.slice(len + etag.len()..);
    let mut response = Response::new(Full::new(body));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::ETAG, HeaderValue::from_maybe_shared(etag).unwrap());
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_maybe_shared(cache_control).unwrap(),
    );
    h.insert("x-origin", HeaderValue::from_static("memory-test"));
    response
}

/// Fills a cache of `cap` bytes with [`entries`] distinct responses and measures what it holds.
async fn fill(case: Case, cap: u64, redis: &RedisServer, prefix: &str) -> Held {
    // What the previous fill left in flight (Redis writes, connections) is gone before counting starts.
    settle().await;
    let before = live();
    let l1 = MokaStore::new(cap);
    match case.store {
        Kind::Moka => run(case, l1.clone(), &l1).await,
        Kind::Tiered => {
            let l2 = RedisStore::builder(redis.url())
                .prefix(prefix)
                .timeout(Duration::from_secs(5))
                .connect_timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            run(case, TieredStore::new(l1.clone(), l2), &l1).await
        }
    }
    let usage = l1.usage().await.unwrap();
    let heap = live() - before;
    let held = Held {
        heap,
        entries: usage.entries,
        weight: usage.bytes,
    };
    drop(l1);
    held
}

/// Sends the requests through a cache on `store` (with a gzip layer inside when the case says so) and returns once
/// every response was read to its end; `l1` is the in-process store, settled before returning.
async fn run<St: Store + Clone>(case: Case, store: St, l1: &MokaStore) {
    let layer = CacheLayer::builder()
        .store(store)
        .max_entry_size(64 * 1024)
        .build()
        .unwrap();
    let body = case.body;
    let origin = service_fn(move |req: Request<()>| {
        let i: usize = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("x="))
            .and_then(|x| x.parse().ok())
            .unwrap_or(0);
        async move { Ok::<_, Infallible>(origin_response(i, body)) }
    });
    if case.gzip {
        let gzip = CompressionLayer::builder().min_size(0).build().unwrap();
        send(case, layer.layer(gzip.layer(origin))).await;
    } else {
        send(case, layer.layer(origin)).await;
    }
    // Writes to Redis may still be in flight (the tiered store writes both levels): let them land.
    settle().await;
    l1.usage().await.unwrap();
}

/// [`entries`] requests for distinct URLs, `CONCURRENCY` at a time, each response read to its end.
async fn send<S, B>(case: Case, service: S)
where
    S: Service<Request<()>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: std::fmt::Debug,
{
    // Workers on the runtime's threads take URL numbers from one counter.
    let total = entries();
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (service, next) = (service.clone(), Arc::clone(&next));
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return;
                }
                let mut request = Request::get(format!("/api/items?x={i}"));
                if case.gzip {
                    request = request.header(header::ACCEPT_ENCODING, "gzip");
                }
                let response = service
                    .clone()
                    .oneshot(request.body(()).unwrap())
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                let body = response.into_body().collect().await.unwrap().to_bytes();
                assert!(!body.is_empty());
            }
        });
    }
    while let Some(worker) = workers.join_next().await {
        worker.unwrap();
    }
}

/// Waits until the live heap stops moving (writes to Redis landed, connections closed), at most 30 s.
async fn settle() {
    let mut last = live();
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = live();
        if (now - last).abs() < 64 * 1024 {
            break;
        }
        last = now;
    }
}

const SMALL_CAP: u64 = 16 * MIB;
const LARGE_CAP: u64 = 64 * MIB;

/// The heap is counted for the whole process: the tests of this file take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn moka_store_heap_is_bounded_by_max_bytes() {
    bounded(Kind::Moka);
}

#[test]
fn tiered_store_heap_is_bounded_by_max_bytes() {
    bounded(Kind::Tiered);
}

fn bounded(store: Kind) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let redis = RedisServer::start();
    // Redis holds every entry (L2); keep it modest.
    redis.command(&["CONFIG", "SET", "maxmemory", "256mb"]);
    redis.command(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);
    let mut failures = Vec::new();
    let mut n = 0;
    {
        for body in [10, 6 * 1024] {
            for gzip in [false, true] {
                let case = Case { body, gzip, store };
                let mut held = [None, None];
                for (slot, cap) in [SMALL_CAP, LARGE_CAP].into_iter().enumerate() {
                    n += 1;
                    let started = std::time::Instant::now();
                    let h = rt.block_on(fill(case, cap, &redis, &format!("mem{n}:")));
                    println!(
                        "{case:?} cap {} MiB: heap {:.1} MiB, {} values, weight {:.1} MiB, {:.0} heap bytes per value",
                        cap / MIB,
                        h.heap as f64 / MIB as f64,
                        h.entries,
                        h.weight as f64 / MIB as f64,
                        h.heap as f64 / h.entries as f64,
                    );
                    println!("  took {:?}", started.elapsed());
                    assert!(h.weight <= cap, "{case:?}: weight {} over {cap}", h.weight);
                    assert!(h.entries > 0, "{case:?}: nothing stored");
                    held[slot] = Some(h);
                }
                let (small, large) = (held[0].unwrap(), held[1].unwrap());
                let small_bound = (1.25 * SMALL_CAP as f64) as i64 + 8 * MIB as i64;
                let diff_bound = (1.25 * (LARGE_CAP - SMALL_CAP) as f64) as i64;
                if small.heap > small_bound {
                    failures.push(format!(
                        "{case:?}: {} bytes of heap at a 16 MiB cap (bound {small_bound})",
                        small.heap
                    ));
                }
                if large.heap - small.heap > diff_bound {
                    failures.push(format!(
                        "{case:?}: 64 MiB cap holds {} bytes more heap than 16 MiB (bound {diff_bound})",
                        large.heap - small.heap
                    ));
                }
                // A bigger cap must hold more: the bound above is not met by storing nothing.
                assert!(
                    large.entries > small.entries,
                    "{case:?}: {large:?} vs {small:?}"
                );
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The weight a stored entry is counted at is the heap it holds, within a few percent, and a compact copy no
/// longer pins the buffer its parts were sliced from.
#[test]
fn weight_is_the_heap_an_entry_holds() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for body in [0, 10, 300, 6 * 1024, 100_000] {
        let (parts, full) = origin_response(7, body).into_parts();
        let full = rt.block_on(full.collect()).unwrap().to_bytes();
        let t = std::time::SystemTime::now();
        let entry = Entry {
            status: parts.status,
            headers: parts.headers,
            body: full,
            trailers: None,
            request_time: t,
            response_time: t,
            initial_age: Duration::ZERO,
            freshness_lifetime: Duration::from_secs(60),
            vary: vec![(header::ACCEPT_ENCODING, Some("gzip".to_owned()))],
            tags: vec!["items".to_owned()],
            public: true,
            shared_with_authorization: true,
            no_cache: false,
            must_revalidate: false,
            stale_while_revalidate: None,
            stale_if_error: None,
        };
        // The count is process-wide, and the test harness allocates on its own threads when another test ends:
        // measure until two measurements in a row agree (what this thread allocates is the same each time).
        let mut last = None;
        let mut tries = 0;
        let (compact, heap) = loop {
            tries += 1;
            assert!(
                tries <= 20,
                "body {body}: no two measurements in a row agreed"
            );
            let before = live();
            let compact = entry.compacted();
            // A hit clones the body and the headers (which gives each `Bytes` its shared header).
            let served = (compact.body.clone(), compact.headers.clone());
            drop(served);
            let heap = live() - before + (std::mem::size_of::<Entry>() + 16) as i64;
            if last == Some(heap) {
                break (compact, heap);
            }
            last = Some(heap);
        };
        drop(entry);
        assert_eq!(compact.body.len(), body);
        let weight = compact.weight() as i64;
        println!("body {body}: heap {heap}, weight {weight}");
        // The weight counts what malloc takes (headers, rounding); requested bytes are a little less.
        assert!(weight >= heap, "body {body}: weight {weight} < heap {heap}");
        assert!(
            weight <= heap + heap / 4 + 64,
            "body {body}: weight {weight} far over heap {heap}"
        );
    }
}
