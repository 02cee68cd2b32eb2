//! The Redis and tiered stores on a local Redis Cluster (three primaries, `cluster-require-full-coverage no`,
//! started by the shared test support for each test): the conformance suite, one cache shared by two servers
//! seeded with different nodes, L1 invalidation across them, and one primary killed (its keys become misses
//! served by the origin, never a 5xx; the others stay hits) then restarted.
#![cfg(all(feature = "redis", feature = "conformance"))]

mod common;

use common::*;
use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};
use tower::Layer;
use tower_kit_cache::{CacheLayer, MokaStore, RedisStore, Store, TieredStore, store::conformance};
use tower_kit_test_support::RedisCluster;

static PREFIXES: AtomicUsize = AtomicUsize::new(0);

fn sturdy(seeds: &[String], prefix: &str) -> RedisStore {
    RedisStore::cluster_builder(seeds.iter().cloned())
        .prefix(prefix)
        .timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

fn fresh(seeds: &[String]) -> RedisStore {
    let prefix = format!("c{}:", PREFIXES.fetch_add(1, Ordering::Relaxed));
    sturdy(seeds, &prefix)
}

const FRESH: &[(&str, &str)] = &[("cache-control", "public, max-age=60")];

/// [`tower_kit_test_support::wait_until`] with this file's bound.
async fn wait_until(what: &str, check: impl AsyncFnMut() -> bool) {
    tower_kit_test_support::wait_until(what, Duration::from_secs(15), check).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_on_a_cluster_passes_the_conformance_suite() {
    let cluster = RedisCluster::start(3);
    let seeds = cluster.urls();
    assert!(fresh(&seeds).is_cluster());
    conformance::run(|_| fresh(&seeds)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiered_store_on_a_cluster_passes_the_conformance_suite() {
    let cluster = RedisCluster::start(3);
    let seeds = cluster.urls();
    conformance::run(|cap| TieredStore::new(MokaStore::new(cap), fresh(&seeds))).await;
}

/// Two servers, each given a different single seed node: a response cached through one is a hit through the
/// other, and an invalidation through one purges the other's L1 (a cluster-wide `PUBLISH`), whatever node each
/// subscribed to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_different_nodes_share_one_cache_and_invalidations() {
    let cluster = RedisCluster::start(3);
    let urls = cluster.urls();
    let origin = Origin::fixed(Answer::ok(FRESH, "v"));
    let store_a = TieredStore::new(MokaStore::new(1 << 20), sturdy(&urls[0..1], "two:"));
    let store_b = TieredStore::new(MokaStore::new(1 << 20), sturdy(&urls[2..3], "two:"));
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
    // Paths until entries live on each of the three primaries.
    let mut paths = Vec::new();
    let mut on_nodes = [false; 3];
    let mut i = 0;
    while on_nodes.iter().any(|seen| !seen) {
        i += 1;
        let path = format!("/items/{i}");
        let (first, _) = send(&a, get(&path)).await;
        assert_eq!(first.headers["x-cache"], "MISS");
        let keys = value_keys(&cluster, "two:");
        let Some(new_key) = keys.iter().find(|k| k.contains(&format!("{path}#"))) else {
            panic!("{path} not stored in the cluster: {keys:?}");
        };
        on_nodes[cluster.primary_of(new_key)] = true;
        let (second, body) = send(&b, get(&path)).await;
        assert_eq!(second.headers["x-cache"], "HIT", "{path}");
        assert_eq!(body, "v");
        paths.push(path);
        assert!(i < 200, "entries never spread over the three primaries");
    }
    let calls = origin.calls();
    assert!(store_b.l1().usage().await.unwrap().entries > 0);
    for path in &paths {
        assert_eq!(handle_a.invalidate_url(path).await.unwrap(), 1, "{path}");
    }
    wait_until("B's L1 purged", async || {
        store_b.l1().usage().await.unwrap().entries == 0
    })
    .await;
    let (after, _) = send(&b, get(&paths[0])).await;
    assert_eq!(after.headers["x-cache"], "MISS");
    assert_eq!(origin.calls(), calls + 1);
}

/// The Redis keys of the values under `prefix`, on every node.
fn value_keys(cluster: &RedisCluster, prefix: &str) -> Vec<String> {
    cluster.keys(&format!("{prefix}v:*"))
}

/// One primary killed (no replica): responses whose entries live in its slots are served by the origin (no 5xx,
/// within the timeout), entries on the other primaries stay shared hits; its breaker opens alone; when it returns
/// it is used again without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_primary_killed_only_its_entries_miss_no_5xx_then_it_returns() {
    let mut cluster = RedisCluster::start(3);
    let urls = cluster.urls();
    let origin = Origin::fixed(Answer::ok(FRESH, "ok"));
    let l2 = RedisStore::cluster_builder(urls)
        .prefix("kill:")
        .timeout(Duration::from_millis(300))
        .connect_timeout(Duration::from_millis(500))
        .failure_threshold(2)
        .retry_interval(Duration::from_millis(300))
        .build()
        .unwrap();
    // No L1: every read goes to the cluster.
    let svc = CacheLayer::builder()
        .store(l2.clone())
        .build()
        .unwrap()
        .layer(origin.service());
    let mut by_node: [Vec<String>; 3] = Default::default();
    let mut i = 0;
    while by_node.iter().any(|paths| paths.len() < 2) {
        i += 1;
        let path = format!("/k/{i}");
        send(&svc, get(&path)).await;
        let keys = value_keys(&cluster, "kill:");
        let key = keys
            .iter()
            .find(|k| k.contains(&format!("{path}#")))
            .unwrap_or_else(|| panic!("{path} not stored"));
        by_node[cluster.primary_of(key)].push(path);
        assert!(i < 200);
    }
    for paths in &by_node {
        for path in paths {
            let (hit, _) = send(&svc, get(path)).await;
            assert_eq!(hit.headers["x-cache"], "HIT", "{path}");
        }
    }
    cluster.kill(0);
    for round in 0..4 {
        for path in &by_node[0] {
            let started = Instant::now();
            let (res, body) = send(&svc, get(path)).await;
            assert_eq!(
                res.status, 200,
                "no 5xx caused by the cache (round {round})"
            );
            assert_eq!(body, "ok");
            assert!(
                started.elapsed() < Duration::from_millis(2500),
                "bounded by the timeout: {:?}",
                started.elapsed()
            );
        }
    }
    assert_eq!(l2.open_nodes(), vec![cluster.node(0).addr().to_string()]);
    for paths in &by_node[1..] {
        for path in paths {
            let (hit, _) = send(&svc, get(path)).await;
            assert_eq!(
                hit.headers["x-cache"], "HIT",
                "other shards unaffected: {path}"
            );
        }
    }
    cluster.restart(0);
    let path = by_node[0][0].clone();
    wait_until("node 0 used again", async || {
        let (res, _) = send(&svc, get(&path)).await;
        assert_eq!(res.status, 200);
        res.headers["x-cache"] == "HIT"
    })
    .await;
    assert!(l2.open_nodes().is_empty());
}

/// The tag guarantee: after `remove_tag` returns, no entry stored earlier with that tag is served, even one the
/// tag's set does not list (a put whose tag-set update was lost or is still under way) and even through another
/// server's store. Entries stored afterwards with the tag are served. On one server and on the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidated_tag_is_never_served_again_even_if_its_set_missed_the_entry() {
    let server = tower_kit_test_support::RedisServer::start();
    let cluster = RedisCluster::start(3);
    let single = |prefix: &str| {
        RedisStore::builder(server.url())
            .prefix(prefix)
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap()
    };
    for (name, writer, other) in [
        ("single", single("g:"), single("g:")),
        (
            "cluster",
            sturdy(&cluster.urls(), "g:"),
            sturdy(&cluster.urls()[2..], "g:"),
        ),
    ] {
        let ttl = Duration::from_secs(60);
        let entry = |body| {
            tower_kit_cache::StoredValue::Response(std::sync::Arc::new(conformance::sample_entry(
                body,
                &["product:1", "list"],
            )))
        };
        writer.put("a", entry(b"a"), ttl).await.unwrap();
        writer.put("b", entry(b"b"), ttl).await.unwrap();
        assert!(other.get("a").await.unwrap().is_some(), "{name}");
        // The tag's set loses `b` (as if its put were still between the value and the set).
        let tkey = writer.tag_key("list");
        let out = tower_kit_test_support::redis_cli()
            .args(if name == "single" {
                vec!["-p".to_owned(), server.port().to_string()]
            } else {
                vec![
                    "-c".to_owned(),
                    "-p".to_owned(),
                    cluster.node(0).port().to_string(),
                ]
            })
            .args(["SREM", &tkey, "b"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}");
        other.remove_tag("list").await.unwrap();
        assert_eq!(other.get("a").await.unwrap(), None, "{name}: listed entry");
        assert_eq!(
            writer.get("b").await.unwrap(),
            None,
            "{name}: unlisted entry"
        );
        assert_eq!(
            other.get("b").await.unwrap(),
            None,
            "{name}: unlisted entry"
        );
        // Stored after the invalidation: served.
        writer.put("c", entry(b"c"), ttl).await.unwrap();
        assert!(other.get("c").await.unwrap().is_some(), "{name}");
        // Another tag of the same entries is unaffected by this one's generation.
        other.remove_tag("product:1").await.unwrap();
        assert_eq!(other.get("c").await.unwrap(), None, "{name}");
    }
}

/// The node a tiered store subscribed through dies: it subscribes again through another seed node, and clears its
/// L1 (messages sent meanwhile are lost); invalidations published afterwards reach it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_subscription_moves_to_another_node_and_clears_the_l1() {
    let mut cluster = RedisCluster::start(3);
    let urls = cluster.urls();
    // Seeds in this order: the subscription goes through node 0 first.
    let store = TieredStore::new(MokaStore::new(1 << 20), sturdy(&urls, "sub:"));
    wait_until("subscribed", async || store.subscriptions() == 1).await;
    let entry = || {
        tower_kit_cache::StoredValue::Response(std::sync::Arc::new(conformance::sample_entry(
            b"x",
            &[],
        )))
    };
    store
        .l1()
        .put("k", entry(), Duration::from_secs(60))
        .await
        .unwrap();
    cluster.kill(0);
    wait_until("resubscribed through another node", async || {
        store.subscriptions() >= 2
    })
    .await;
    assert_eq!(store.l1().get("k").await.unwrap(), None, "L1 cleared");
    // Messages reach it again: an invalidation through another server drops its L1 copy.
    let other = TieredStore::new(MokaStore::new(1 << 20), sturdy(&urls[1..], "sub:"));
    store
        .l1()
        .put("k2", entry(), Duration::from_secs(60))
        .await
        .unwrap();
    let _ = other.remove("k2").await;
    wait_until("invalidation received", async || {
        store.l1().get("k2").await.unwrap().is_none()
    })
    .await;
}

/// A primary with a replica is killed: after the failover its entries are read and written again through the
/// same store, with no restart, and responses never fail meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_a_replica_needs_no_restart() {
    let mut cluster = RedisCluster::start_with_replicas(3, 1);
    let origin = Origin::fixed(Answer::ok(FRESH, "ok"));
    let l2 = RedisStore::cluster_builder(cluster.urls())
        .prefix("fo:")
        .timeout(Duration::from_millis(500))
        .retry_interval(Duration::from_millis(300))
        .build()
        .unwrap();
    let svc = CacheLayer::builder()
        .store(l2.clone())
        .build()
        .unwrap()
        .layer(origin.service());
    let path = "/fo/1";
    send(&svc, get(path)).await;
    let keys = value_keys(&cluster, "fo:");
    let key = keys
        .iter()
        .find(|k| k.contains("/fo/1#"))
        .expect("stored")
        .clone();
    let victim = cluster.primary_of(&key);
    cluster.kill(victim);
    for _ in 0..5 {
        let (res, _) = send(&svc, get(path)).await;
        assert_eq!(res.status, 200);
    }
    cluster.wait_failover(victim, &key, Duration::from_secs(30));
    // The promoted replica holds the entry (it was replicated) or gets it on the next miss: a hit either way.
    wait_until("hit through the promoted replica", async || {
        let (res, _) = send(&svc, get(path)).await;
        assert_eq!(res.status, 200);
        res.headers["x-cache"] == "HIT"
    })
    .await;
}

/// A resharding moves slots to a new primary while every call succeeds (no failure to trigger a slot-map read, and
/// the `redis` crate follows the `MOVED` redirects by itself): within `topology_refresh` the store reads the slot
/// map again, so `usage` and prefix invalidation, which walk the primaries it knows, reach the new node's keys too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_added_by_resharding_is_walked_after_the_topology_refresh() {
    let mut cluster = RedisCluster::start(3);
    let store = RedisStore::cluster_builder(cluster.urls())
        .prefix("grow:")
        .timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_secs(2))
        .topology_refresh(Duration::from_millis(500))
        .build()
        .unwrap();
    let ttl = Duration::from_secs(60);
    let entry = |body| {
        tower_kit_cache::StoredValue::Response(std::sync::Arc::new(conformance::sample_entry(
            body,
            &[],
        )))
    };
    store.put("before", entry(b"1"), ttl).await.unwrap();
    assert_eq!(store.usage().await.unwrap().entries, 1);
    let added = cluster.add_primary(4096);
    let key = (0..10_000)
        .map(|i| format!("after-{i}"))
        .find(|k| cluster.primary_of(&store.redis_key(k)) == added)
        .expect("a key in the new primary's slots");
    store.put(&key, entry(b"2"), ttl).await.unwrap();
    assert!(store.get(&key).await.unwrap().is_some());
    assert!(store.open_nodes().is_empty(), "no failure on the way");
    wait_until("the walk reaches the new primary", async || {
        store.usage().await.unwrap().entries == 2
    })
    .await;
    assert_eq!(store.remove_prefix("").await.unwrap(), 2);
    assert!(store.get(&key).await.unwrap().is_none());
}
