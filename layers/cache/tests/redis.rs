//! The Redis and tiered stores against a real `redis-server` (one per test, started by the shared harness).
#![cfg(all(feature = "redis", feature = "conformance"))]

mod common;

use common::*;
use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};
use tower::Layer;
use tower_kit_cache::{
    CacheLayer, ManualWallClock as ManualClock, MokaStore, RedisStore, Store, StoredValue,
    TieredStore, store::conformance,
};
use tower_kit_test_support::RedisServer;

static PREFIXES: AtomicUsize = AtomicUsize::new(0);

fn redis(url: &str) -> RedisStore {
    let prefix = format!("test{}:", PREFIXES.fetch_add(1, Ordering::Relaxed));
    RedisStore::builder(url)
        .prefix(prefix)
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

/// A store with a generous timeout (it covers the first connection too), for tests where Redis stays up: a slow
/// round trip on a loaded machine must not be taken for an outage.
fn sturdy(url: &str, prefix: &str) -> RedisStore {
    RedisStore::builder(url)
        .prefix(prefix)
        .timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

/// A store with a short timeout and quick retries, for failure tests (Redis killed or paused).
fn fragile(url: &str, prefix: &str) -> RedisStore {
    RedisStore::builder(url)
        .prefix(prefix)
        .timeout(Duration::from_millis(100))
        .connect_timeout(Duration::from_millis(200))
        .failure_threshold(2)
        .retry_interval(Duration::from_millis(200))
        .build()
        .unwrap()
}

const FRESH: &[(&str, &str)] = &[("cache-control", "public, max-age=60")];

/// [`tower_kit_test_support::wait_until`] with this file's bound.
async fn wait_until(what: &str, check: impl AsyncFnMut() -> bool) {
    tower_kit_test_support::wait_until(what, Duration::from_secs(10), check).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_passes_the_conformance_suite() {
    let server = RedisServer::start();
    let url = server.url();
    conformance::run(|_| redis(&url)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiered_store_passes_the_conformance_suite() {
    let server = RedisServer::start();
    let url = server.url();
    conformance::run(|cap| TieredStore::new(MokaStore::new(cap), redis(&url))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_truncated_and_old_format_values_are_misses() {
    let server = RedisServer::start();
    let store = redis(&server.url());
    let value = StoredValue::Response(std::sync::Arc::new(conformance::sample_entry(
        b"hello",
        &["t"],
    )));
    store
        .put("k", value.clone(), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(store.get("k").await.unwrap(), Some(value));
    let rkey = store.redis_key("k");
    for raw in ["garbage", "TKC", "TKC\u{1}\u{0}\u{0}\u{c8}", ""] {
        assert_eq!(server.command(&["SET", &rkey, raw]), "+OK");
        assert_eq!(store.get("k").await.unwrap(), None, "{raw:?} is a miss");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_redis_is_a_miss_through_the_layer_never_an_error() {
    let server = RedisServer::start();
    let store = redis(&server.url());
    let origin = Origin::fixed(Answer::ok(FRESH, "fresh"));
    let layer = CacheLayer::builder().store(store.clone()).build().unwrap();
    let svc = layer.layer(origin.service());
    let (first, _) = send(&svc, get("/g")).await;
    assert_eq!(first.headers["x-cache"], "MISS");
    wait_until("stored", async || store.usage().await.unwrap().entries > 0).await;
    // Overwrite every stored value with garbage.
    let keys = value_keys(&server.url(), store.prefix()).await;
    assert!(!keys.is_empty());
    for k in &keys {
        assert_eq!(server.command(&["SET", k, "\u{0}\u{1}garbage"]), "+OK");
    }
    let (second, body) = send(&svc, get("/g")).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.headers["x-cache"], "MISS");
    assert_eq!(body, "fresh");
    assert_eq!(origin.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_sets_expire_and_large_entries_are_not_stored() {
    let server = RedisServer::start();
    let store = RedisStore::builder(server.url())
        .prefix("cap:")
        .max_entry_bytes(1000)
        .build()
        .unwrap();
    let small = StoredValue::Response(std::sync::Arc::new(conformance::sample_entry(
        b"small",
        &["tag"],
    )));
    store
        .put("small", small, Duration::from_secs(30))
        .await
        .unwrap();
    let pttl = server.command(&["PTTL", &store.tag_key("tag")]);
    let ms: i64 = pttl.trim_start_matches(':').parse().unwrap();
    assert!((1..=30_000).contains(&ms), "tag set TTL {pttl}");
    static BIG: [u8; 2000] = [b'b'; 2000];
    let big = StoredValue::Response(std::sync::Arc::new(conformance::sample_entry(&BIG, &[])));
    store
        .put("small", big, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        store.get("small").await.unwrap(),
        None,
        "over the cap: not stored, old value gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_cached_through_one_instance_is_a_hit_through_another() {
    let server = RedisServer::start();
    let url = server.url();
    let clock = ManualClock::default();
    let origin = Origin::fixed(Answer::ok(FRESH, "shared"));
    let a = builder(&clock)
        .store(TieredStore::new(
            MokaStore::new(1 << 20),
            sturdy(&url, "x:"),
        ))
        .build()
        .unwrap()
        .layer(origin.service());
    let b = builder(&clock)
        .store(TieredStore::new(
            MokaStore::new(1 << 20),
            sturdy(&url, "x:"),
        ))
        .build()
        .unwrap()
        .layer(origin.service());
    let (first, _) = send(&a, get("/shared")).await;
    assert_eq!(first.headers["x-cache"], "MISS");
    let probe = sturdy(&url, "x:");
    wait_until("stored in Redis", async || {
        probe.usage().await.unwrap().entries > 0
    })
    .await;
    clock.advance(Duration::from_secs(5));
    let (second, body) = send(&b, get("/shared")).await;
    assert_eq!(second.headers["x-cache"], "HIT");
    assert_eq!(second.headers["age"], "5", "age from the entry's own times");
    assert_eq!(body, "shared");
    assert_eq!(origin.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_on_one_instance_purges_the_others_l1() {
    let server = RedisServer::start();
    let url = server.url();
    let origin = Origin::fixed(Answer::ok(FRESH, "v"));
    let store_a = TieredStore::new(MokaStore::new(1 << 20), sturdy(&url, "inv:"));
    let store_b = TieredStore::new(MokaStore::new(1 << 20), sturdy(&url, "inv:"));
    wait_until("both subscribed", async || {
        store_a.subscriptions() > 0 && store_b.subscriptions() > 0
    })
    .await;
    let layer_a = CacheLayer::builder().store(store_a).build().unwrap();
    let handle_a = layer_a.handle();
    let a = layer_a.layer(origin.service());
    let b = CacheLayer::builder()
        .store(store_b.clone())
        .build()
        .unwrap()
        .layer(origin.service());
    send(&a, get("/items")).await;
    wait_until("stored", async || {
        store_b.l2().usage().await.unwrap().entries > 0
    })
    .await;
    let (hit, _) = send(&b, get("/items")).await;
    assert_eq!(hit.headers["x-cache"], "HIT");
    assert!(
        store_b.l1().usage().await.unwrap().entries > 0,
        "promoted to B's L1"
    );
    assert_eq!(handle_a.invalidate_url("/items").await.unwrap(), 1);
    wait_until("B's L1 purged", async || {
        store_b.l1().usage().await.unwrap().entries == 0
    })
    .await;
    let (after, _) = send(&b, get("/items")).await;
    assert_eq!(after.headers["x-cache"], "MISS");
    assert_eq!(origin.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_subscription_reconnects_the_l1_is_flushed() {
    let mut server = RedisServer::start();
    let url = server.url();
    let store = TieredStore::new(MokaStore::new(1 << 20), fragile(&url, "re:"));
    wait_until("subscribed", async || store.subscriptions() == 1).await;
    store
        .l1()
        .put(
            "k",
            StoredValue::Pass {
                until: std::time::SystemTime::now(),
            },
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    server.restart();
    wait_until("resubscribed", async || store.subscriptions() >= 2).await;
    assert_eq!(store.l1().get("k").await.unwrap(), None, "L1 flushed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_responses_still_served_no_5xx_and_recovery_without_restart() {
    let mut server = RedisServer::start();
    let url = server.url();
    let origin = Origin::fixed(Answer::ok(FRESH, "ok"));
    let store = TieredStore::new(MokaStore::new(1 << 20), fragile(&url, "kill:"));
    let svc = CacheLayer::builder()
        .store(store.clone())
        .build()
        .unwrap()
        .layer(origin.service());
    // Connected before the first write, so its short timeout only has to cover the write itself.
    wait_until("connected", async || store.l2().usage().await.is_ok()).await;
    send(&svc, get("/cached")).await;
    wait_until("stored", async || {
        store.l2().usage().await.is_ok_and(|u| u.entries > 0)
    })
    .await;
    server.kill();
    for i in 0..20 {
        let started = Instant::now();
        let (cached, _) = send(&svc, get("/cached")).await;
        assert_eq!(cached.status, 200);
        assert_eq!(cached.headers["x-cache"], "HIT", "L1 still serves");
        let (other, body) = send(&svc, get(&format!("/other{i}"))).await;
        assert_eq!(other.status, 200, "no 5xx caused by the cache");
        assert_eq!(body, "ok");
        assert!(
            started.elapsed() < Duration::from_millis(800),
            "bounded by the timeout: {:?}",
            started.elapsed()
        );
    }
    server.restart();
    let mut n = 0;
    wait_until("writes reach Redis again", async || {
        n += 1;
        let (res, _) = send(&svc, get(&format!("/after{n}"))).await;
        assert_eq!(res.status, 200);
        store.l2().usage().await.is_ok_and(|u| u.entries > 0)
    })
    .await;
}

/// The Redis keys of the values under `prefix` (`SCAN`).
async fn value_keys(url: &str, prefix: &str) -> Vec<String> {
    let client = redis::Client::open(url).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let (mut cursor, mut keys) = (0u64, Vec::new());
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}v:*"))
            .query_async(&mut c)
            .await
            .unwrap();
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_latency_is_bounded_by_the_timeout() {
    let server = RedisServer::start();
    let url = server.url();
    let origin = Origin::fixed(Answer::ok(FRESH, "ok"));
    // Once down, the store stays down for the rest of the test (a short retry interval would let the breaker probe and close
    // before the check below on a slow machine).
    let l2 = RedisStore::builder(&url)
        .prefix("pause:")
        .timeout(Duration::from_millis(100))
        .connect_timeout(Duration::from_millis(200))
        .failure_threshold(2)
        .retry_interval(Duration::from_secs(60))
        .build()
        .unwrap();
    let store = TieredStore::new(MokaStore::new(1 << 20), l2);
    let svc = CacheLayer::builder()
        .store(store.clone())
        .build()
        .unwrap()
        .layer(origin.service());
    send(&svc, get("/warm")).await; // connected
    // Paused for far longer than the bounds below: a request that waited for Redis would blow them.
    server.pause(Duration::from_secs(10));
    let started = Instant::now();
    for i in 0..5 {
        let t = Instant::now();
        let (res, _) = send(&svc, get(&format!("/p{i}"))).await;
        assert_eq!(res.status, 200);
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "request {i} took {:?} with a 100 ms timeout and Redis paused for 10 s",
            t.elapsed()
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "5 requests took {:?} with Redis paused for 10 s",
        started.elapsed()
    );
    assert!(
        store.l2().breaker().is_open(),
        "the store noticed Redis is not answering"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_misses_over_two_instances_make_one_origin_call() {
    let server = RedisServer::start();
    let url = server.url();
    let origin = Origin::fixed(Answer::ok(FRESH, "slow").delay(Duration::from_millis(300)));
    let instance = || {
        CacheLayer::builder()
            .store(TieredStore::new(
                MokaStore::new(1 << 20),
                sturdy(&url, "co:"),
            ))
            .build()
            .unwrap()
            .layer(origin.service())
    };
    let (a, b) = (instance(), instance());
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let svc = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { send(&svc, get("/report")).await })
        })
        .collect();
    for t in tasks {
        let (parts, body) = t.await.unwrap();
        assert_eq!(parts.status, 200);
        assert_eq!(body, "slow");
    }
    assert_eq!(origin.calls(), 1, "one origin call for both servers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_holders_lease_lapses_and_another_server_takes_over() {
    let server = RedisServer::start();
    let url = server.url();
    let origin = Origin::fixed(Answer::ok(FRESH, "late"));
    // Learn the cache key of `/crash` from a store on another prefix.
    let learn = sturdy(&url, "learn:");
    let svc = CacheLayer::builder()
        .store(learn.clone())
        .build()
        .unwrap()
        .layer(origin.service());
    send(&svc, get("/crash")).await;
    wait_until("stored", async || learn.usage().await.unwrap().entries > 0).await;
    let keys = value_keys(&url, "learn:").await;
    let key = keys[0].strip_prefix("learn:v:").unwrap();
    // A server took the lease and crashed: it never releases it. The lease lapses 500 ms after Redis took it,
    // which is after `started`.
    let crashed = sturdy(&url, "crash:");
    let started = Instant::now();
    match crashed
        .lease(key, Duration::from_millis(500))
        .await
        .unwrap()
    {
        tower_kit_cache::Lease::Acquired(release) => std::mem::forget(release),
        other => panic!("lease not acquired: {other:?}"),
    }
    let svc = CacheLayer::builder()
        .store(sturdy(&url, "crash:"))
        .build()
        .unwrap()
        .layer(origin.service());
    let (res, body) = send(&svc, get("/crash")).await;
    let waited = started.elapsed();
    assert_eq!(res.status, 200);
    assert_eq!(body, "late");
    assert_eq!(origin.calls(), 2, "the survivor called the origin");
    // At least the lease's 500 ms; well under the 10 s (twice the layer's lease TTL) after which a waiter gives up
    // and calls the origin anyway.
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_secs(5),
        "waited for the lease to lapse: {waited:?}"
    );
}

#[test]
fn undecodable_values_and_failures_are_counted() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let mut server = RedisServer::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // A patient store: a slow first connect must not fail the read of the garbage; after the kill the
        // connection is refused at once either way.
        let store = sturdy(&server.url(), "m:");
        server.command(&["SET", &store.redis_key("k"), "garbage"]);
        assert_eq!(store.get("k").await.unwrap(), None);
        server.kill();
        assert!(
            store.get("k").await.is_err(),
            "an error for the cache to count"
        );
    });
    let counters: Vec<(String, Vec<String>, u64)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| match value {
            DebugValue::Counter(n) => Some((
                key.key().name().to_owned(),
                key.key().labels().map(|l| l.value().to_owned()).collect(),
                n,
            )),
            _ => None,
        })
        .collect();
    assert!(
        counters
            .iter()
            .any(|(name, _, n)| name == tower_kit_cache::store::REDIS_UNDECODABLE && *n == 1),
        "{counters:?}"
    );
    assert!(
        counters.iter().any(
            |(name, labels, n)| name == tower_kit_cache::store::REDIS_ERRORS
                && labels.iter().any(|l| l == "connection")
                && *n >= 1
        ),
        "{counters:?}"
    );
}

/// `rediss://` (feature `redis-tls`): the store passes the conformance suite over TLS, against a `redis-server`
/// listening with a self-signed certificate.
#[cfg(feature = "redis-tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_urls_work_over_tls() {
    let server = RedisServer::start_tls();
    let tls_port = server.tls_port().unwrap();
    // `#insecure`: the test certificate is self-signed, so the client does not verify it.
    let url = format!("rediss://127.0.0.1:{tls_port}/#insecure");
    // The suite stores and reads back through the store: it cannot pass unless TLS connects.
    conformance::run(|_| redis(&url)).await;
}
