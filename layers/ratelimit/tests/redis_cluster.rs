//! The Redis store on a local Redis Cluster (three primaries, `cluster-require-full-coverage no`, started by the
//! test support for each test): the behaviour suite, shared quotas, scripts loaded on demand per shard, and the
//! faults: one primary killed (only its keys follow the failure policy) and restarted, and a failover to a
//! replica with no restart of the store. Real time with generous bounds.

mod common;
mod redis_fake_time;

use common::{fresh_peer, nz, request, run_suite, send, service};
use http::{HeaderName, StatusCode};
use redis_fake_time::FakeTime;
use std::time::{Duration, Instant};
use tower_kit_ratelimit::{
    Key, KeyExtractor, Policy, Quota, RateLimitLayer, RateLimitStore, RedisStore, RedisStoreError,
    StoreFailure,
    store::{Check, CheckRequest, PolicyId},
};
use tower_kit_test_support::RedisCluster;

/// The timeout of a store whose test is not about timeouts.
const PATIENT: Duration = Duration::from_secs(5);

fn store(cluster: &RedisCluster, prefix: &str) -> RedisStore {
    RedisStore::cluster_builder(cluster.urls())
        .key_prefix(prefix)
        .timeout(PATIENT)
        .connect_timeout(PATIENT)
        .build()
        .unwrap()
}

#[tokio::test]
async fn cluster_store_passes_the_suite() {
    let cluster = RedisCluster::start(3);
    let harness = FakeTime::new(store(&cluster, "suite:"), cluster);
    assert!(harness.redis_store().is_cluster());
    run_suite(&harness).await;
}

fn check(name: &str, client: &str, quota: Quota) -> Check {
    Check {
        policy: PolicyId::of(name),
        key: Key::from_bytes(client.as_bytes()),
        quota,
    }
}

/// A client name whose state (policy `p`) lives on the primary at `node`.
fn client_on(cluster: &RedisCluster, store: &RedisStore, node: usize, prefix: &str) -> String {
    (0..10_000)
        .map(|i| format!("{prefix}{i}"))
        .find(|c| {
            let key = store.redis_key(PolicyId::of("p"), &Key::from_bytes(c.as_bytes()));
            cluster.primary_of(&key) == node
        })
        .unwrap_or_else(|| panic!("no client lands on node {node}"))
}

async fn admitted(store: &RedisStore, checks: &[Check]) -> Result<bool, RedisStoreError> {
    let request = CheckRequest { checks, cost: 1 };
    store.check(&request).await.map(|d| d.admitted())
}

/// Two stores (two servers) on one cluster share one quota, for clients whose states live on every primary.
#[tokio::test]
async fn two_servers_share_one_quota_on_every_shard() {
    let cluster = RedisCluster::start(3);
    let (a, b) = (store(&cluster, "shared:"), store(&cluster, "shared:"));
    let quota = Quota::per_minute(nz(10));
    for node in 0..3 {
        let client = client_on(&cluster, &a, node, "client-");
        // The state of `client` lives in the slot of its hash tag: on `node`.
        let redis_key = a.redis_key(PolicyId::of("p"), &Key::from_bytes(client.as_bytes()));
        assert_eq!(cluster.primary_of(&redis_key), node, "{redis_key}");
        let mut admitted_count = 0;
        for i in 0..30 {
            let store = if i % 2 == 0 { &a } else { &b };
            if admitted(store, &[check("p", &client, quota)])
                .await
                .unwrap()
            {
                admitted_count += 1;
            }
        }
        assert_eq!(admitted_count, 10, "node {node}");
    }
}

/// A layer whose policies key requests differently cannot share a slot per request: on a cluster its `build()` is
/// a `ConfigError` naming `policy` (and both policies). The same policies with one key, or on a single server, build.
/// No server is needed: building connects to nothing.
#[test]
fn policies_keyed_differently_are_a_config_error_on_a_cluster() {
    let on_cluster = || RedisStore::cluster(["redis://127.0.0.1:7000"]).unwrap();
    let quota = Quota::per_minute(nz(10));
    let by_api_key = KeyExtractor::header(HeaderName::from_static("x-api-key"));
    let e = RateLimitLayer::builder()
        .store(on_cluster())
        .policy(Policy::new("per-ip", quota))
        .policy(Policy::new("per-key", quota).key(by_api_key.clone()))
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "policy");
    assert!(
        e.reason().contains("\"per-ip\" and \"per-key\""),
        "{}",
        e.reason()
    );
    // The layer's key set on one policy and left to the other is one key.
    let e = RateLimitLayer::builder()
        .store(on_cluster())
        .key(by_api_key.clone())
        .policy(Policy::new("burst", quota))
        .policy(Policy::new("daily", quota).key(KeyExtractor::peer_ip()))
        .build()
        .unwrap_err();
    assert!(
        e.reason().contains("\"burst\" and \"daily\""),
        "{}",
        e.reason()
    );
    let _one_key = RateLimitLayer::builder()
        .store(on_cluster())
        .key(by_api_key.clone())
        .policy(Policy::new("burst", quota))
        .policy(Policy::new("daily", quota).key(by_api_key.clone()))
        .build()
        .expect("one key: one slot per request");
    // Closures cannot be compared: two of them are two keys, one closure cloned is one key.
    let tenant = || {
        KeyExtractor::custom(|parts| {
            parts
                .headers
                .get("x-tenant")
                .map(|v| Key::from_bytes(v.as_bytes()))
        })
    };
    let e = RateLimitLayer::builder()
        .store(on_cluster())
        .policy(Policy::new("burst", quota).key(tenant()))
        .policy(Policy::new("daily", quota).key(tenant()))
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "policy");
    let by_tenant = tenant();
    let _one_closure = RateLimitLayer::builder()
        .store(on_cluster())
        .policy(Policy::new("burst", quota).key(by_tenant.clone()))
        .policy(Policy::new("daily", quota).key(by_tenant))
        .build()
        .expect("one closure, cloned: one key");
    let _single_server = RateLimitLayer::builder()
        .store(RedisStore::new("redis://127.0.0.1:1/").unwrap())
        .policy(Policy::new("per-ip", quota))
        .policy(Policy::new("per-key", quota).key(by_api_key))
        .build()
        .expect("a single server decides any keys in one script");
}

/// Policies of one request that key it the same way share a slot: one script, all-or-nothing, on one shard.
/// Checks keyed differently cannot share a slot (should a store be handed them, as a layer's `build()` would
/// refuse): the cluster store says so instead of deciding half.
#[tokio::test]
async fn policies_share_a_slot_through_the_client_tag() {
    let cluster = RedisCluster::start(3);
    let s = store(&cluster, "multi:");
    let burst = Quota::per_minute(nz(2));
    let daily = Quota::per_minute(nz(100));
    let both = [
        check("burst", "alice", burst),
        check("daily", "alice", daily),
    ];
    assert!(admitted(&s, &both).await.unwrap());
    assert!(admitted(&s, &both).await.unwrap());
    assert!(!admitted(&s, &both).await.unwrap(), "burst exhausted");
    // All-or-nothing: the refused request consumed nothing of the daily quota.
    let daily_only = [check("daily", "alice", Quota::per_minute(nz(100)))];
    let request = CheckRequest {
        checks: &daily_only,
        cost: 0,
    };
    let decision = s.check(&request).await.unwrap();
    assert_eq!(decision.outcomes()[0].remaining, 98);
    let mixed = [check("burst", "alice", burst), check("daily", "bob", daily)];
    assert!(matches!(
        admitted(&s, &mixed).await,
        Err(RedisStoreError::CrossSlot)
    ));
}

/// `SCRIPT FLUSH` on one primary: the next decision on that shard loads the script there, with its state intact.
#[tokio::test]
async fn a_flushed_shard_loads_the_script_on_demand() {
    let cluster = RedisCluster::start(3);
    let s = store(&cluster, "flush:");
    let quota = Quota::per_minute(nz(3));
    let client = client_on(&cluster, &s, 1, "c-");
    assert!(admitted(&s, &[check("p", &client, quota)]).await.unwrap());
    assert!(admitted(&s, &[check("p", &client, quota)]).await.unwrap());
    assert_eq!(cluster.node(1).command(&["SCRIPT", "FLUSH"]), "+OK");
    assert!(admitted(&s, &[check("p", &client, quota)]).await.unwrap());
    assert!(!admitted(&s, &[check("p", &client, quota)]).await.unwrap());
}

/// One primary killed, no replica: only requests whose keys live in its slots follow the failure policy (here
/// fail closed: 503); every other client is decided by the cluster as usual. Its breaker opens alone. When it
/// returns, it is used again within about a second (one probe per `retry_interval`), with no restart.
#[tokio::test]
async fn one_primary_killed_fails_only_its_keys_then_recovers() {
    let mut cluster = RedisCluster::start(3);
    let s = RedisStore::cluster_builder(cluster.urls())
        .key_prefix("kill:")
        .timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(500))
        .failure_threshold(2)
        .retry_interval(Duration::from_millis(500))
        .build()
        .unwrap();
    let mut svc = service(
        RateLimitLayer::builder()
            .store(s.clone())
            .store_failure(StoreFailure::FailClosed {
                retry_after: Duration::from_secs(1),
            })
            .policy(Policy::new("p", Quota::per_minute(nz(1000)))),
    );
    // Clients (by address) whose states live on node 0, and on the others.
    let mut on_dead = Vec::new();
    let mut on_live = Vec::new();
    while on_dead.len() < 3 || on_live.len() < 6 {
        let peer = fresh_peer();
        let key = Key::from_ip(peer.ip(), 64);
        let node = cluster.primary_of(&s.redis_key(PolicyId::of("p"), &key));
        if node == 0 && on_dead.len() < 3 {
            on_dead.push(peer);
        } else if node != 0 && on_live.len() < 6 {
            on_live.push(peer);
        }
    }
    for peer in on_dead.iter().chain(&on_live) {
        assert_eq!(
            send(&mut svc, request(*peer)).await.status(),
            StatusCode::OK
        );
    }
    cluster.kill(0);
    // Enough requests to open node 0's breaker.
    for _ in 0..3 {
        for peer in &on_dead {
            assert_eq!(
                send(&mut svc, request(*peer)).await.status(),
                StatusCode::SERVICE_UNAVAILABLE
            );
        }
    }
    assert_eq!(s.open_nodes(), vec![cluster.node(0).addr().to_string()]);
    assert!(
        !s.breaker().is_open(),
        "the store-wide breaker stays closed"
    );
    // Every other client is decided by the cluster, quickly (no waiting on the dead node).
    let started = Instant::now();
    for peer in &on_live {
        assert_eq!(
            send(&mut svc, request(*peer)).await.status(),
            StatusCode::OK
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "live shards waited: {:?}",
        started.elapsed()
    );
    // An open breaker answers at once (no wait for the timeout).
    let started = Instant::now();
    assert_eq!(
        send(&mut svc, request(on_dead[0])).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert!(started.elapsed() < Duration::from_millis(400));
    cluster.restart(0);
    // Back within about a second (the probe interval is 500 ms), generous bound for a loaded machine.
    let back = Instant::now();
    loop {
        if send(&mut svc, request(on_dead[0])).await.status() == StatusCode::OK {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "node 0 not used again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(s.open_nodes().is_empty(), "{:?}", s.open_nodes());
}

/// A primary with a replica is killed: the replica takes over (cluster-node-timeout 1 s) and the same store
/// decides that primary's keys again, with no restart; keys elsewhere never fail.
#[tokio::test]
async fn failover_to_a_replica_needs_no_restart() {
    let mut cluster = RedisCluster::start_with_replicas(3, 1);
    let s = RedisStore::cluster_builder(cluster.urls())
        .key_prefix("failover:")
        .timeout(Duration::from_secs(1))
        .connect_timeout(Duration::from_secs(1))
        .retry_interval(Duration::from_millis(500))
        .build()
        .unwrap();
    let quota = Quota::per_minute(nz(1000));
    let victim = client_on(&cluster, &s, 0, "v-");
    let other = client_on(&cluster, &s, 1, "o-");
    assert!(admitted(&s, &[check("p", &victim, quota)]).await.unwrap());
    assert!(admitted(&s, &[check("p", &other, quota)]).await.unwrap());
    let victim_key = s.redis_key(PolicyId::of("p"), &Key::from_bytes(victim.as_bytes()));
    cluster.kill(0);
    // Keys on other shards keep working during the failover.
    assert!(admitted(&s, &[check("p", &other, quota)]).await.unwrap());
    cluster.wait_failover(0, &victim_key, Duration::from_secs(30));
    let back = Instant::now();
    loop {
        if let Ok(true) = admitted(&s, &[check("p", &victim, quota)]).await {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(15),
            "the promoted replica was not used"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(admitted(&s, &[check("p", &other, quota)]).await.unwrap());
}
