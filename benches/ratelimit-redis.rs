//! Rate-limit decisions per second through the Redis store with 64 concurrent callers, next to
//! `redis-benchmark -c 64 -P 1` running the same script (`EVALSHA`, same arguments) against the same private
//! `redis-server`. Run with `cargo bench -p bench-ratelimit-redis` (needs `redis-server` and `redis-benchmark`).
//!
//! - `ratelimit_redis/store_64_callers`: 64 tokio tasks sharing one `RedisStore` (one multiplexed connection,
//!   pipelined), each deciding in turn; criterion reports decisions per second (one global key, a quota never
//!   reached, so every call writes).
//! - Afterwards the bench prints `redis-benchmark`'s figure for the same script and the ratio (goal: >= 0.8).
//! - `ratelimit_redis/single_64_keys` and `ratelimit_redis/cluster3_64_keys`: the same with each caller on its own
//!   client key, on the single server and on a local three-primary Redis Cluster (keys spread over the shards);
//!   then `redis-benchmark --cluster` runs the script on the cluster (`{tag}` keys) for comparison.
#![allow(missing_docs)]

use tower_kit_test_support::{self as redis_server, RedisCluster};

use criterion::{Criterion, Throughput};
use std::{
    num::NonZeroU32,
    process::Command,
    time::{Duration, Instant},
};
use tower_kit_ratelimit::{
    Key, Quota, RateLimitStore, RedisStore,
    store::{Check, CheckRequest, PolicyId},
};

const CALLERS: u64 = 64;

fn check() -> Check {
    let max = NonZeroU32::MAX;
    Check {
        policy: PolicyId::of("bench"),
        key: Key::GLOBAL,
        quota: Quota::per_second(max).with_burst(max),
    }
}

/// `iters` decisions by 64 concurrent callers, all on the global key; the wall time.
fn run(runtime: &tokio::runtime::Runtime, store: &RedisStore, iters: u64) -> Duration {
    run_keys(runtime, store, iters, false)
}

/// `iters` decisions by 64 concurrent callers, on the global key or (`own_keys`) each on its own client key.
fn run_keys(
    runtime: &tokio::runtime::Runtime,
    store: &RedisStore,
    iters: u64,
    own_keys: bool,
) -> Duration {
    runtime.block_on(async {
        let started = Instant::now();
        let tasks: Vec<_> = (0..CALLERS)
            .map(|i| {
                let store = store.clone();
                let n = iters / CALLERS + u64::from(i < iters % CALLERS);
                tokio::spawn(async move {
                    let mut checks = [check()];
                    if own_keys {
                        checks[0].key = Key::from_bytes(format!("caller-{i}").as_bytes());
                    }
                    for _ in 0..n {
                        let decision = store
                            .check(&CheckRequest {
                                checks: &checks,
                                cost: 1,
                            })
                            .await
                            .expect("redis decides");
                        assert!(decision.admitted());
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("caller");
        }
        started.elapsed()
    })
}

/// The same `EVALSHA` through `redis-benchmark -c 64 -P 1`: requests per second.
fn redis_benchmark(port: u16, sha: &str, key: &str, requests: u64) -> Option<(f64, String)> {
    redis_benchmark_with(&[], port, sha, key, requests)
}

/// As [`redis_benchmark`], with extra leading arguments (`--cluster`).
fn redis_benchmark_with(
    extra: &[&str],
    port: u16,
    sha: &str,
    key: &str,
    requests: u64,
) -> Option<(f64, String)> {
    let c = check();
    let split = |n: u64| (n / 1_000_000_000, n % 1_000_000_000);
    let (inc_s, inc_ns) = split(c.quota.emission_interval_nanos());
    let (cap_s, cap_ns) = split(c.quota.capacity_nanos());
    let args: Vec<String> = extra
        .iter()
        .map(|a| (*a).to_owned())
        .chain([
            "-p".to_owned(),
            port.to_string(),
            "-c".into(),
            CALLERS.to_string(),
            "-P".into(),
            "1".into(),
            "-n".into(),
            requests.to_string(),
            "-q".into(),
            "EVALSHA".into(),
            sha.into(),
            "1".into(),
            key.into(),
            String::new(),
            String::new(),
            inc_s.to_string(),
            inc_ns.to_string(),
            cap_s.to_string(),
            cap_ns.to_string(),
        ])
        .collect();
    let shown = args
        .iter()
        .map(|a| {
            if a.is_empty() {
                "''".to_owned()
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    let output = Command::new("redis-benchmark").args(&args).output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    // "EVALSHA ...: 81234.56 requests per second, p50=0.399 msec"
    let rps = text
        .split("requests per second")
        .next()?
        .rsplit(':')
        .next()?
        .trim()
        .parse()
        .ok()?;
    Some((rps, format!("redis-benchmark {shown}")))
}

fn main() {
    let server = redis_server::RedisServer::start();
    let store = RedisStore::builder(server.url())
        .timeout(Duration::from_secs(2))
        .build()
        .expect("store");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    run(&runtime, &store, CALLERS); // connect and load the script

    let cluster = RedisCluster::start(3);
    let cluster_store = RedisStore::cluster_builder(cluster.urls())
        .timeout(Duration::from_secs(2))
        .build()
        .expect("cluster store");
    run_keys(&runtime, &cluster_store, CALLERS, true); // connect, read the slot map, load the script per shard

    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("ratelimit_redis");
    group.throughput(Throughput::Elements(1));
    group.bench_function("store_64_callers", |b| {
        b.iter_custom(|iters| run(&runtime, &store, iters))
    });
    group.bench_function("single_64_keys", |b| {
        b.iter_custom(|iters| run_keys(&runtime, &store, iters, true))
    });
    group.bench_function("cluster3_64_keys", |b| {
        b.iter_custom(|iters| run_keys(&runtime, &cluster_store, iters, true))
    });
    group.finish();
    c.final_summary();

    // Side by side on the same server, same script, same number of decisions.
    let n = 200_000;
    let ours = n as f64 / run(&runtime, &store, n).as_secs_f64();
    let key = store.redis_key(check().policy, &check().key);
    match redis_benchmark(server.port(), store.script_sha(), &key, n) {
        Some((theirs, command)) => {
            println!("\n{n} decisions, 64 concurrent callers, same redis-server, same script:");
            println!("  RedisStore (one multiplexed connection): {ours:>10.0} decisions/s");
            println!("  redis-benchmark (64 connections, -P 1):  {theirs:>10.0} requests/s");
            println!("  ratio: {:.2}", ours / theirs);
            println!("  {command}");
        }
        None => {
            println!("\nRedisStore: {ours:.0} decisions/s (redis-benchmark not found or failed)")
        }
    }

    // The three-primary cluster: 64 callers on their own keys, next to `redis-benchmark --cluster` (64 clients
    // spread over the primaries, `{tag}` replaced by a tag of each node's slots).
    let single_keys = n as f64 / run_keys(&runtime, &store, n, true).as_secs_f64();
    let on_cluster = n as f64 / run_keys(&runtime, &cluster_store, n, true).as_secs_f64();
    for node in cluster.nodes() {
        let _ = tower_kit_test_support::redis_cli()
            .args(["-p", &node.port().to_string(), "SCRIPT", "LOAD"])
            .arg(tower_kit_ratelimit::store::GCRA_SCRIPT)
            .output();
    }
    let theirs = redis_benchmark_with(
        &["--cluster"],
        cluster.node(0).port(),
        store.script_sha(),
        "tower-kit:rl:{tag}:bench",
        n,
    );
    println!("\n{n} decisions, 64 concurrent callers on 64 client keys:");
    println!("  RedisStore, one redis-server:            {single_keys:>10.0} decisions/s");
    println!("  RedisStore, 3-primary cluster:           {on_cluster:>10.0} decisions/s");
    match theirs {
        Some((rps, command)) => {
            println!("  redis-benchmark --cluster (3 primaries): {rps:>10.0} requests/s");
            println!("  ratio: {:.2}", on_cluster / rps);
            println!("  {command}");
        }
        None => println!("  (redis-benchmark --cluster not found or failed)"),
    }
}
