//! A stalled Redis (`CLIENT PAUSE ALL` on the test's own `redis-server`) costs a request one store timeout, not one
//! per Redis call: a miss makes several (lookup, the coalescing re-lookup, the fill lease, the write, the lease
//! release), and all of them share one deadline.
#![cfg(feature = "redis")]

mod common;

use common::*;
use std::time::{Duration, Instant};
use tower::Layer;
use tower_kit_cache::{CacheLayer, MokaStore, RedisStore, TieredStore};
use tower_kit_test_support::RedisServer;

const FRESH: &[(&str, &str)] = &[("cache-control", "public, max-age=60")];

/// The store timeout of these tests: long enough that scheduling noise on a loaded 2-core machine is small next to
/// it, short enough that several of them in a row are easy to tell from one.
const TIMEOUT: Duration = Duration::from_millis(300);

/// A store whose breaker never opens during the test, so that every Redis call of a request really waits (an open
/// breaker would hide per-call timeouts by failing the later calls at once).
fn stalling_store(url: &str, prefix: &str) -> RedisStore {
    RedisStore::builder(url)
        .prefix(prefix)
        .timeout(TIMEOUT)
        .connect_timeout(Duration::from_secs(2))
        .failure_threshold(1000)
        .build()
        .unwrap()
}

async fn connected(store: &RedisStore) {
    use tower_kit_cache::Store;
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.usage().await.is_err() {
        assert!(Instant::now() < deadline, "redis never answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_during_a_stall_costs_one_timeout_not_one_per_call() {
    let server = RedisServer::start();
    let store = stalling_store(&server.url(), "stall:");
    connected(&store).await;
    // The origin takes one timeout too, so the second client finds the leader still at work and waits for it.
    let origin = Origin::fixed(Answer::ok(FRESH, "from origin").delay(TIMEOUT));
    let layer = CacheLayer::builder().store(store.clone()).build().unwrap();
    let handle = layer.handle();
    let svc = layer.layer(origin.service());
    let (warm, _) = send(&svc, get("/warm")).await;
    assert_eq!(warm.headers["x-cache"], "MISS");

    server.pause(Duration::from_secs(20));
    // The leader: lookup, re-lookup after joining, lease, origin, then the write and the lease release.
    let leader = tokio::spawn({
        let svc = svc.clone();
        async move {
            let started = Instant::now();
            let (res, body) = send(&svc, get("/stalled")).await;
            (res, body, started.elapsed())
        }
    });
    // A second client for the same URL joins as a waiter: it is answered once the leader's fill (its write
    // included) is done, so its latency covers the leader's every Redis call.
    tokio::time::sleep(TIMEOUT / 3).await;
    let started = Instant::now();
    let (waiter, waiter_body) = send(&svc, get("/stalled")).await;
    let waiter_took = started.elapsed();
    let (res, body, leader_took) = leader.await.unwrap();

    assert_eq!(res.status, 200);
    assert_eq!(res.headers["x-cache"], "MISS");
    assert_eq!(body, "from origin");
    assert_eq!(waiter.status, 200);
    assert_eq!(waiter_body, "from origin");
    assert_eq!(origin.calls(), 2, "warm-up and one call for both clients");
    // Per-call timeouts would cost the leader 3 × TIMEOUT before its origin call (4 × TIMEOUT in all, with the
    // origin's) and the waiter, told after the leader's write, about 4.7 × TIMEOUT; one deadline costs the leader
    // about 2 × TIMEOUT (Redis, then the origin) and the waiter less.
    let bound = TIMEOUT * 3;
    assert!(
        leader_took < bound,
        "the leader took {leader_took:?} with a {TIMEOUT:?} timeout and origin (per call: {:?})",
        TIMEOUT * 4
    );
    assert!(
        waiter_took < bound,
        "the waiter took {waiter_took:?} with a {TIMEOUT:?} timeout and origin (per call: about {:?})",
        TIMEOUT * 14 / 3
    );
    assert!(
        leader_took >= TIMEOUT * 2 * 9 / 10,
        "the leader did wait for Redis ({leader_took:?}): the pause was in effect"
    );
    let stats = handle.stats().await;
    assert!(
        stats.store_errors >= 2,
        "the failed calls were counted: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiered_miss_and_an_invalidating_post_during_a_stall_cost_one_timeout_each() {
    let server = RedisServer::start();
    let l2 = stalling_store(&server.url(), "tstall:");
    connected(&l2).await;
    let store = TieredStore::new(MokaStore::new(1 << 20), l2);
    let origin = Origin::new(|req| {
        if req.method() == http::Method::POST {
            Answer::ok(
                &[("location", "/items/1"), ("content-location", "/items")],
                "posted",
            )
        } else {
            Answer::ok(FRESH, "listed")
        }
    });
    let svc = CacheLayer::builder()
        .store(store)
        .build()
        .unwrap()
        .layer(origin.service());
    send(&svc, get("/items")).await;

    server.pause(Duration::from_secs(20));
    let started = Instant::now();
    let (res, body) = send(&svc, get("/other")).await;
    let miss_took = started.elapsed();
    assert_eq!((res.status.as_u16(), &body[..]), (200, &b"listed"[..]));
    // A POST invalidates three URIs (its target, `Location`, `Content-Location`): a lookup and a removal each,
    // plus the broadcasts to the other servers' first levels.
    let post = http::Request::post("/items").body(()).unwrap();
    let started = Instant::now();
    let (res, body) = send(&svc, post).await;
    let post_took = started.elapsed();
    assert_eq!((res.status.as_u16(), &body[..]), (200, &b"posted"[..]));
    let bound = TIMEOUT * 5 / 2;
    assert!(miss_took < bound, "a tiered miss took {miss_took:?}");
    assert!(post_took < bound, "an invalidating POST took {post_took:?}");
}

/// A server waiting for another server's lease polls Redis; when Redis stalls mid-wait, the poll that finds it
/// stuck ends the wait (one timeout), this server calls the origin, and its own writes do not wait again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_while_waiting_for_another_servers_lease_costs_one_timeout() {
    use tower_kit_cache::{Lease, Store};
    let server = RedisServer::start();
    let url = server.url();
    let origin = Origin::fixed(Answer::ok(FRESH, "fetched"));
    // Learn the cache key of the URL from a store on another prefix.
    let learn = stalling_store(&url, "learn:");
    connected(&learn).await;
    let svc = CacheLayer::builder()
        .store(learn.clone())
        .build()
        .unwrap()
        .layer(origin.service());
    send(&svc, get("/leased")).await;
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let key = loop {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("learn:v:*")
            .query_async(&mut c)
            .await
            .unwrap();
        if let Some(k) = keys.first() {
            break k.strip_prefix("learn:v:").unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "never stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Another server holds the lease (and never releases it).
    let holder = stalling_store(&url, "lease:");
    match holder.lease(&key, Duration::from_secs(30)).await.unwrap() {
        Lease::Acquired(release) => std::mem::forget(release),
        other => panic!("lease not acquired: {other:?}"),
    }
    let store = stalling_store(&url, "lease:");
    connected(&store).await;
    let svc = CacheLayer::builder()
        .store(store)
        .build()
        .unwrap()
        .layer(origin.service());
    let started = Instant::now();
    let waiter = tokio::spawn(async move { send(&svc, get("/leased")).await });
    // The waiter polls for a while, then Redis stalls.
    let waited = Duration::from_millis(200);
    tokio::time::sleep(waited).await;
    server.pause(Duration::from_secs(20));
    let (res, body) = waiter.await.unwrap();
    let took = started.elapsed();
    assert_eq!(res.status, 200);
    assert_eq!(body, "fetched");
    assert_eq!(origin.calls(), 2, "the waiter called the origin itself");
    assert!(
        took < waited + TIMEOUT * 8 / 5,
        "the waiter took {took:?}: {waited:?} of polling, then a {TIMEOUT:?} timeout (per call: two more)"
    );
}
