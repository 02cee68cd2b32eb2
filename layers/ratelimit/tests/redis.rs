//! The Redis store against real `redis-server`s: each test starts its own on a free port (and may kill, restart,
//! pause or flush it without disturbing the others). A missing `redis-server` fails with a message saying what to
//! install. Nothing here depends on how fast the machine is, except the few latency bounds that are the point of a
//! test (no request waits much longer than the store's timeout while Redis is down or stuck), which allow `SLACK`:
//! the behaviour suite runs on a fake clock, the other stores get a timeout of seconds (a slow round trip on a
//! loaded machine must not be decided by the failure policy), and expiries are waited for, not slept on.

mod common;
mod redis_fake_time;

use common::{fresh_peer, header, nz, request, run_suite, send, service};
use http::StatusCode;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use redis_fake_time::FakeTime;
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use tower_kit_ratelimit::{
    Key, KeyExtractor, Policy, Quota, RateLimitLayer, RateLimitStore, RedisStore, StoreFailure,
    store::{Check, CheckRequest, Decision, PolicyId, PolicyOutcome, gcra},
};
use tower_kit_test_support::{RedisServer, Rng};

/// Generous scheduling slack for a busy 2-core machine, on top of a store's timeout in the latency bounds.
const SLACK: Duration = Duration::from_secs(1);

/// The timeout of a store whose test is not about timeouts: a round trip to a local Redis never takes this long,
/// however loaded the machine, so no decision is left to the failure policy.
const PATIENT: Duration = Duration::from_secs(5);

fn store_with_url(url: &str) -> RedisStore {
    RedisStore::builder(url)
        .timeout(PATIENT)
        .connect_timeout(PATIENT)
        .build()
        .unwrap()
}

fn store(server: &RedisServer) -> RedisStore {
    store_with_url(&server.url())
}

/// Waits until `store` has connected, loaded its script and decided one request (cost 0, on a key of its own), so
/// a test's measured phase does not pay for connecting.
async fn warm_up(store: &RedisStore) {
    let checks = [Check {
        policy: PolicyId::of("warm-up"),
        key: Key::GLOBAL,
        quota: Quota::per_minute(nz(1)),
    }];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let request = CheckRequest {
            checks: &checks,
            cost: 0,
        };
        match store.check(&request).await {
            Ok(decision) => {
                assert!(decision.admitted());
                return;
            }
            Err(e) => assert!(Instant::now() < deadline, "redis never answered: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn redis_store_passes_the_suite() {
    let server = RedisServer::start();
    let harness = FakeTime::new(store(&server), server);
    run_suite(&harness).await;
}

/// The semantics of the store module docs, written out: every check by `gcra`, all-or-nothing.
fn reference(
    tats: &[Option<u64>],
    now: u64,
    checks: &[Check],
    cost: u32,
) -> (Decision, Vec<Option<u64>>) {
    let results: Vec<(PolicyOutcome, Option<u64>)> = checks
        .iter()
        .zip(tats)
        .map(|(c, t)| gcra(*t, now, &c.quota, cost))
        .collect();
    let admitted = results.iter().all(|(o, _)| o.admitted);
    let outcomes = results
        .iter()
        .zip(checks.iter().zip(tats))
        .map(|((o, _), (c, t))| {
            if admitted || !o.admitted {
                *o
            } else {
                gcra(*t, now, &c.quota, 0).0
            }
        });
    let written = results
        .iter()
        .zip(tats)
        .map(|((_, new), old)| if admitted { new.or(*old) } else { *old })
        .collect();
    (
        Decision::from_outcomes(outcomes.collect::<Vec<_>>()),
        written,
    )
}

fn pair(nanos: u64) -> String {
    format!("{}:{}", nanos / 1_000_000_000, nanos % 1_000_000_000)
}

/// The Lua script (doubles only) against `gcra()` (u64) on many random cases with a fixed `now`: the same
/// decisions, outcomes, written states and TTLs, including values far beyond 2^53 and u64 saturation.
#[tokio::test]
async fn the_script_matches_gcra_exactly() {
    let server = RedisServer::start();
    let store = store(&server);
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
    let epoch_now = 1_750_000_000_123_456_789u64;
    let mut admitted_cases = 0;
    for case in 0..3000u32 {
        let now = match rng.below(4) {
            0 => epoch_now + rng.below(1 << 40),
            1 => rng.magnitude(),
            2 => u64::MAX - rng.magnitude(),
            _ => rng.next(),
        };
        let n_checks = 1 + rng.below(4) as usize;
        let mut checks = Vec::new();
        let mut tats = Vec::new();
        for i in 0..n_checks {
            let limit = nz(1 + (rng.magnitude() % u64::from(u32::MAX)) as u32);
            let window = match rng.below(3) {
                0 => 1,
                1 => 1 + rng.below(366 * 86_400),
                _ => 366 * 86_400,
            };
            let burst = match rng.below(3) {
                0 => limit,
                1 => nz(1 + rng.below(20) as u32),
                _ => nz(1 + (rng.magnitude() % u64::from(u32::MAX)) as u32),
            };
            let quota = Quota::new(limit, Duration::from_secs(window))
                .unwrap()
                .with_burst(burst);
            let key = Key::from_u128(u128::from(case) << 8 | i as u128);
            checks.push(Check {
                policy: PolicyId::of(&format!("p{i}")),
                key,
                quota,
            });
            let t = quota.emission_interval_nanos();
            tats.push(match rng.below(5) {
                0 => None,
                1 => Some(now.saturating_sub(rng.magnitude())),
                2 => Some(now.saturating_add(rng.below(quota.capacity_nanos().saturating_add(2)))),
                3 => Some(now.saturating_add(t.saturating_mul(rng.below(4)))),
                _ => Some(rng.next()),
            });
        }
        let cost = match rng.below(5) {
            0 => 0,
            1 => 1,
            2 => 1 + rng.below(10) as u32,
            3 => u32::MAX,
            _ => (rng.magnitude() % (u64::from(u32::MAX) + 1)) as u32,
        };
        let keys: Vec<String> = checks
            .iter()
            .map(|c| store.redis_key(c.policy, &c.key))
            .collect();
        for (k, t) in keys.iter().zip(&tats) {
            match t {
                Some(t) => redis::cmd("SET")
                    .arg(k)
                    .arg(pair(*t))
                    .exec_async(&mut conn)
                    .await
                    .unwrap(),
                None => redis::cmd("DEL")
                    .arg(k)
                    .exec_async(&mut conn)
                    .await
                    .unwrap(),
            }
        }
        let request = CheckRequest {
            checks: &checks,
            cost,
        };
        // Real time since the script ran (TTLs count down in Redis's real time) is at most `sent.elapsed()`.
        let sent = Instant::now();
        let got = store.check_at(now, &request).await.unwrap();
        let (want, written) = reference(&tats, now, &checks, cost);
        let context = format!("case {case}: now={now} tats={tats:?} cost={cost} checks={checks:?}");
        assert_eq!(got, want, "{context}");
        admitted_cases += usize::from(got.admitted());
        for (k, new) in keys.iter().zip(&written) {
            let stored: Option<String> = redis::cmd("GET")
                .arg(k)
                .query_async(&mut conn)
                .await
                .unwrap();
            let ttl: i64 = redis::cmd("PTTL")
                .arg(k)
                .query_async(&mut conn)
                .await
                .unwrap();
            // Redis counts TTLs in whole ms of its clock: +2 ms for the truncations.
            let waited_ms = i64::try_from(sent.elapsed().as_millis()).unwrap() + 2;
            // Written (with a fresh TTL) when admitted at a cost above 0, even if saturation left the value as it was.
            let rewritten = got.admitted() && cost > 0;
            if !rewritten {
                assert_eq!(stored, new.map(pair), "{context}: state of {k}");
                continue;
            }
            // Written with a TTL of tat - now, rounded up to the millisecond.
            let want_ms = (new.unwrap() - now).div_ceil(1_000_000).max(1);
            let want_ms = i64::try_from(want_ms).unwrap();
            // A state with a TTL shorter than the time since the script ran may be gone already (even between the
            // GET and the PTTL).
            if want_ms <= waited_ms && (stored.is_none() || ttl == -2) {
                continue;
            }
            assert_eq!(stored, new.map(pair), "{context}: state of {k}");
            assert!(
                ttl <= want_ms && ttl >= want_ms - waited_ms,
                "{context}: ttl {ttl} ms, want {want_ms} (minus at most the {waited_ms} ms since it was written)"
            );
        }
    }
    assert!(
        admitted_cases > 300 && admitted_cases < 2700,
        "cases cover both outcomes: {admitted_cases}"
    );
}

/// Every state is written with a TTL of `tat - now` (Redis server time), and a state back to a full quota is
/// gone; the keys of one client share one hash tag.
#[tokio::test]
async fn states_expire_when_back_to_a_full_quota() {
    let server = RedisServer::start();
    let store = store(&server);
    warm_up(&store).await;
    let mut svc = service(
        RateLimitLayer::builder()
            .store(store.clone())
            .policy(Policy::new("minute", Quota::per_minute(nz(1))))
            .policy(Policy::new(
                "short",
                Quota::new(nz(1), Duration::from_secs(3)).unwrap(),
            ))
            .store_failure(StoreFailure::FailClosed {
                retry_after: Duration::from_secs(1),
            }),
    );
    let peer: SocketAddr = "192.0.2.9:1".parse().unwrap();
    let sent = Instant::now();
    assert_eq!(send(&mut svc, request(peer)).await.status(), StatusCode::OK);
    let key = Key::from_ip(peer.ip(), 64);
    let minute = store.redis_key(PolicyId::of("minute"), &key);
    let short = store.redis_key(PolicyId::of("short"), &key);
    assert!(minute.contains("{ip4:c0000209}") && short.contains("{ip4:c0000209}"));
    let minute_ttl: i64 = server.command(&["PTTL", &minute])[1..].parse().unwrap();
    let short_ttl: i64 = server.command(&["PTTL", &short])[1..].parse().unwrap();
    // The TTLs have counted down for at most the time since the request was sent (+2 ms: whole ms in Redis).
    let waited_ms = i64::try_from(sent.elapsed().as_millis()).unwrap() + 2;
    for (name, ttl, want_ms) in [("minute", minute_ttl, 60_000), ("short", short_ttl, 3_000)] {
        let gone_already = ttl == -2 && want_ms <= waited_ms;
        assert!(
            gone_already || (want_ms - waited_ms..=want_ms).contains(&ttl),
            "{name} ttl {ttl} ms, want {want_ms} minus at most {waited_ms}"
        );
    }
    // The short state expires when its quota is full again (3 s after the request).
    let deadline = sent + Duration::from_secs(30);
    while server.command(&["EXISTS", &short]) != ":0" {
        assert!(Instant::now() < deadline, "a full quota is forgotten");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(sent.elapsed() >= Duration::from_millis(2_990), "not before");
    assert_eq!(server.command(&["EXISTS", &minute]), ":1");
}

/// Two servers (two layers, two stores, two connections) on one Redis, many concurrent callers: together they
/// admit no more than one quota (burst + rate x elapsed). Fail-closed with a patient timeout, so every admission
/// was decided by Redis (a store failure is a 503, which fails the test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_one_quota() {
    let server = RedisServer::start();
    let quota = Quota::per_second(nz(20)).with_burst(nz(5));
    let make = || {
        let store = store(&server);
        let svc = service(
            RateLimitLayer::builder()
                .store(store.clone())
                .key(KeyExtractor::global())
                .policy(Policy::new("shared", quota))
                .store_failure(StoreFailure::FailClosed {
                    retry_after: Duration::from_secs(1),
                }),
        );
        (store, svc)
    };
    let (store_a, a) = make();
    let (store_b, b) = make();
    warm_up(&store_a).await;
    warm_up(&store_b).await;
    let servers = [a, b];
    let admitted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let run_for = Duration::from_millis(1500);
    let mut tasks = Vec::new();
    for i in 0..32 {
        let mut svc = servers[i % 2].clone();
        let (admitted, refused) = (admitted.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            while started.elapsed() < run_for {
                match send(&mut svc, request(fresh_peer())).await.status() {
                    StatusCode::OK => admitted.fetch_add(1, Ordering::Relaxed),
                    StatusCode::TOO_MANY_REQUESTS => refused.fetch_add(1, Ordering::Relaxed),
                    other => {
                        panic!("unexpected {other} (503: redis did not decide within {PATIENT:?})")
                    }
                };
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    let (admitted, refused) = (
        admitted.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    );
    // At most the burst plus one unit per 50 ms of the run (+1 for a unit refilled at the very edge).
    let bound = 5 + (elapsed.as_millis() as u64).div_ceil(50) + 1;
    assert!(
        admitted <= bound,
        "admitted {admitted} > {bound} in {elapsed:?}"
    );
    assert!(admitted >= 5 + 10, "the shared quota was used: {admitted}");
    assert!(
        refused > admitted,
        "the callers went past the quota: {refused} refused"
    );
}

/// Latencies of concurrent callers while a test breaks Redis.
#[derive(Clone)]
struct Load {
    stop: Arc<AtomicBool>,
    slowest: Arc<AtomicU64>,
    statuses: Arc<std::sync::Mutex<Vec<StatusCode>>>,
}

impl Load {
    fn start(
        svc: &common::Svc,
        callers: usize,
        same_client: bool,
    ) -> (Self, Vec<tokio::task::JoinHandle<()>>) {
        let load = Load {
            stop: Arc::new(AtomicBool::new(false)),
            slowest: Arc::new(AtomicU64::new(0)),
            statuses: Arc::default(),
        };
        let peer = fresh_peer();
        let tasks = (0..callers)
            .map(|_| {
                let (mut svc, load) = (svc.clone(), load.clone());
                tokio::spawn(async move {
                    while !load.stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        let status = send(
                            &mut svc,
                            request(if same_client { peer } else { fresh_peer() }),
                        )
                        .await
                        .status();
                        load.slowest
                            .fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                        load.statuses.lock().unwrap().push(status);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            })
            .collect();
        (load, tasks)
    }

    fn take(&self) -> (Vec<StatusCode>, Duration) {
        let statuses = std::mem::take(&mut *self.statuses.lock().unwrap());
        let slowest = Duration::from_micros(self.slowest.swap(0, Ordering::Relaxed));
        (statuses, slowest)
    }
}

type Snapshot = Vec<(
    metrics_util::CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
)>;

/// Every metric since the last snapshot (taking one resets the counters).
fn snapshot(snapshotter: &Snapshotter) -> Snapshot {
    snapshotter.snapshot().into_vec()
}

fn counter(snapshot: &Snapshot, name: &str, label: Option<(&str, &str)>) -> u64 {
    snapshot
        .iter()
        .filter(|(k, ..)| {
            k.key().name() == name
                && label
                    .is_none_or(|(l, v)| k.key().labels().any(|x| x.key() == l && x.value() == v))
        })
        .map(|(.., v)| match v {
            DebugValue::Counter(c) => *c,
            _ => 0,
        })
        .sum()
}

/// Redis killed mid-run with fail-open: every request is admitted, none waits longer than the timeout (plus
/// slack), the breaker opens (requests stop waiting), errors are counted; Redis restarted: decisions come from
/// Redis again with no restart of the service.
#[tokio::test]
async fn redis_killed_fail_open_then_restarted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let mut server = RedisServer::start();
    // Long enough that no round trip times out before the kill on a loaded machine; after the kill nothing waits
    // for it (connections are refused, then the breaker answers at once), which the latency bound checks.
    let timeout = Duration::from_secs(1);
    let store = RedisStore::builder(server.url())
        .timeout(timeout)
        .failure_threshold(3)
        .retry_interval(Duration::from_millis(200))
        .build()
        .unwrap();
    let svc = service(
        RateLimitLayer::builder()
            .store(store.clone())
            .policy(Policy::new("p", Quota::per_minute(nz(1000)))),
    );
    warm_up(&store).await;
    snapshot(&snapshotter);
    let (load, tasks) = Load::start(&svc, 8, false);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (statuses, _) = load.take();
    assert!(statuses.len() > 10 && statuses.iter().all(|s| *s == StatusCode::OK));
    assert_eq!(
        counter(
            &snapshot(&snapshotter),
            "tower_kit.ratelimit.store_errors",
            None
        ),
        0
    );

    server.kill();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (statuses, slowest) = load.take();
    assert!(statuses.len() > 10, "{}", statuses.len());
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "fail-open admits"
    );
    assert!(slowest < timeout + SLACK, "a request waited {slowest:?}");
    assert!(store.breaker().is_open(), "the breaker opened");
    let metrics = snapshot(&snapshotter);
    assert!(counter(&metrics, "tower_kit.ratelimit.store_errors", None) > 0);
    assert!(
        counter(
            &metrics,
            "tower_kit.ratelimit.redis.errors",
            Some(("kind", "connection"))
        ) >= 3
    );
    assert!(
        counter(
            &metrics,
            "tower_kit.ratelimit.redis.errors",
            Some(("kind", "circuit_open"))
        ) > 0
    );

    server.restart();
    load.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    // A client with a quota of 2 per minute: once Redis decides again, its third request is refused (fail-open
    // alone would admit it).
    let mut strict = service(
        RateLimitLayer::builder()
            .store(store.clone())
            .policy(Policy::new("strict", Quota::per_minute(nz(2)))),
    );
    let peer = fresh_peer();
    let first = Instant::now();
    let deadline = first + Duration::from_secs(10);
    loop {
        let r = send(&mut strict, request(peer)).await;
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            // One unit back 30 s after the first of the two admitted requests, which was sent after `first`.
            let retry: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
            let waited = first.elapsed().as_secs() + 1;
            assert!(
                retry <= 30 && retry + waited >= 30,
                "retry-after {retry} after {waited} s"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "redis decisions did not resume after a restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!store.breaker().is_open(), "the breaker closed");
}

/// Fail-closed: with Redis killed, 503 + Retry-After, promptly.
#[tokio::test]
async fn redis_killed_fail_closed() {
    let mut server = RedisServer::start();
    // As in `redis_killed_fail_open_then_restarted`: no time-out before the kill, nothing waits for it after.
    let timeout = Duration::from_secs(1);
    let store = RedisStore::builder(server.url())
        .timeout(timeout)
        .build()
        .unwrap();
    let svc = service(
        RateLimitLayer::builder()
            .store(store.clone())
            .policy(Policy::new("p", Quota::per_minute(nz(1000))))
            .store_failure(StoreFailure::FailClosed {
                retry_after: Duration::from_secs(5),
            }),
    );
    warm_up(&store).await;
    let (load, tasks) = Load::start(&svc, 8, false);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (statuses, _) = load.take();
    assert!(
        !statuses.is_empty() && statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    server.kill();
    tokio::time::sleep(Duration::from_millis(200)).await;
    load.take();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (statuses, slowest) = load.take();
    assert!(statuses.len() > 10);
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::SERVICE_UNAVAILABLE),
        "{statuses:?}"
    );
    assert!(slowest < timeout + SLACK, "a request waited {slowest:?}");
    load.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let r = send(&mut svc.clone(), request(fresh_peer())).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&r, "retry-after").as_deref(), Some("5"));
}

/// Fail-open capped: with Redis killed, each client still gets its share (50 %) of the quota from an in-process
/// limiter.
#[tokio::test]
async fn redis_killed_fail_open_capped() {
    let mut server = RedisServer::start();
    let svc = service(
        RateLimitLayer::builder()
            .store(
                RedisStore::builder(server.url())
                    .timeout(Duration::from_millis(150))
                    .build()
                    .unwrap(),
            )
            .policy(Policy::new("p", Quota::per_minute(nz(10))))
            .store_failure(StoreFailure::FailOpenCapped { percent: 50 }),
    );
    let mut svc2 = svc.clone();
    assert_eq!(
        send(&mut svc2, request(fresh_peer())).await.status(),
        StatusCode::OK
    );
    server.kill();
    let peer = fresh_peer();
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let t = Instant::now();
        statuses.push(send(&mut svc2, request(peer)).await.status());
        assert!(t.elapsed() < Duration::from_millis(150) + SLACK);
    }
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(ok, 5, "{statuses:?}");
    assert_eq!(statuses[5..], [StatusCode::TOO_MANY_REQUESTS; 3]);
}

/// A stuck Redis (`CLIENT PAUSE`): no request waits longer than the timeout (plus slack, well below the pause);
/// decisions resume when it answers again.
#[tokio::test]
async fn a_stuck_redis_costs_at_most_the_timeout() {
    let server = RedisServer::start();
    let timeout = Duration::from_millis(150);
    let pause = Duration::from_secs(4);
    assert!(
        timeout + SLACK < pause / 2,
        "a request that waited out the pause would pass"
    );
    let store = RedisStore::builder(server.url())
        .timeout(timeout)
        .retry_interval(Duration::from_millis(200))
        .build()
        .unwrap();
    let svc = service(
        RateLimitLayer::builder()
            .store(store.clone())
            .policy(Policy::new("p", Quota::per_minute(nz(1000)))),
    );
    warm_up(&store).await;
    let (load, tasks) = Load::start(&svc, 8, false);
    tokio::time::sleep(Duration::from_millis(300)).await;
    load.take();
    let paused = Instant::now();
    server.pause(pause);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (statuses, slowest) = load.take();
    assert!(!statuses.is_empty());
    assert!(statuses.iter().all(|s| *s == StatusCode::OK), "fail-open");
    assert!(slowest < timeout + SLACK, "a request waited {slowest:?}");
    // Still within the pause (unless this machine stalled for seconds: then the check says nothing).
    let open = store.breaker().is_open();
    assert!(open || paused.elapsed() >= pause, "the breaker opened");
    let deadline = Instant::now() + pause + Duration::from_secs(20);
    while store.breaker().is_open() {
        assert!(Instant::now() < deadline, "not recovered after the pause");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    load.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
}

/// `SCRIPT FLUSH` (as after a failover): the next request gets `NOSCRIPT`, loads the script again and is decided
/// by Redis, with its state intact.
#[tokio::test]
async fn script_flush_is_recovered_transparently() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let server = RedisServer::start();
    let store = store(&server);
    let mut svc = service(
        RateLimitLayer::builder()
            .store(store.clone())
            .policy(Policy::new("p", Quota::per_minute(nz(3)))),
    );
    let peer = fresh_peer();
    for _ in 0..2 {
        assert_eq!(send(&mut svc, request(peer)).await.status(), StatusCode::OK);
    }
    assert_eq!(server.command(&["SCRIPT", "FLUSH"]), "+OK");
    assert_eq!(send(&mut svc, request(peer)).await.status(), StatusCode::OK);
    assert_eq!(
        send(&mut svc, request(peer)).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let metrics = snapshot(&snapshotter);
    assert_eq!(
        counter(&metrics, "tower_kit.ratelimit.redis.script_reloads", None),
        1
    );
    assert_eq!(
        counter(&metrics, "tower_kit.ratelimit.store_errors", None),
        0
    );
}

/// A store whose Redis never existed: requests do not wait for it beyond the timeout; the service starts fine.
#[tokio::test]
async fn an_unreachable_redis_at_startup_fails_open() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let store = RedisStore::builder(format!("redis://user:pw@127.0.0.1:{port}/"))
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let mut svc = service(
        RateLimitLayer::builder()
            .store(store.clone())
            .policy(Policy::new("p", Quota::per_minute(nz(1)))),
    );
    for _ in 0..5 {
        let t = Instant::now();
        assert_eq!(
            send(&mut svc, request(fresh_peer())).await.status(),
            StatusCode::OK
        );
        assert!(t.elapsed() < Duration::from_millis(100) + SLACK);
    }
    let err = store
        .check(&CheckRequest {
            checks: &[Check {
                policy: PolicyId::of("p"),
                key: Key::GLOBAL,
                quota: Quota::per_minute(nz(1)),
            }],
            cost: 1,
        })
        .await
        .unwrap_err();
    assert!(!err.to_string().contains("pw"));
}

/// Credentials in the URL: a Redis with a password (`requirepass`) and an ACL user.
#[tokio::test]
async fn urls_with_credentials() {
    let server = RedisServer::start();
    assert_eq!(
        server.command(&["ACL", "SETUSER", "limiter", "on", ">s3cret", "~*", "+@all"]),
        "+OK"
    );
    let url = format!("redis://limiter:s3cret@127.0.0.1:{}/", server.port());
    let mut svc = service(
        RateLimitLayer::builder()
            .store(store_with_url(&url))
            .policy(Policy::new("p", Quota::per_minute(nz(1))))
            .store_failure(StoreFailure::FailClosed {
                retry_after: Duration::from_secs(1),
            }),
    );
    let peer = fresh_peer();
    assert_eq!(send(&mut svc, request(peer)).await.status(), StatusCode::OK);
    assert_eq!(
        send(&mut svc, request(peer)).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // A wrong password is a store failure (fail-closed here), not a hang.
    let bad = format!("redis://limiter:wrong@127.0.0.1:{}/", server.port());
    let mut svc = service(
        RateLimitLayer::builder()
            .store(store_with_url(&bad))
            .policy(Policy::new("p", Quota::per_minute(nz(1))))
            .store_failure(StoreFailure::FailClosed {
                retry_after: Duration::from_secs(1),
            }),
    );
    assert_eq!(
        send(&mut svc, request(peer)).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
}

/// `rediss://`: the same decisions over TLS, against a `redis-server` listening with a self-signed certificate.
#[cfg(feature = "redis-tls")]
#[tokio::test]
async fn rediss_urls_work_over_tls() {
    let server = RedisServer::start_tls();
    let tls_port = server.tls_port().unwrap();
    // `#insecure`: the test certificate is self-signed, so the client does not verify it.
    let url = format!("rediss://127.0.0.1:{tls_port}/#insecure");
    let mut svc = service(
        RateLimitLayer::builder()
            .store(store_with_url(&url))
            .policy(Policy::new("p", Quota::per_minute(nz(1))))
            .store_failure(StoreFailure::FailClosed {
                retry_after: Duration::from_secs(1),
            }),
    );
    let peer = fresh_peer();
    assert_eq!(send(&mut svc, request(peer)).await.status(), StatusCode::OK);
    assert_eq!(
        send(&mut svc, request(peer)).await.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the state went through TLS to Redis and back"
    );
    // The plain port of the same server sees the state the TLS client wrote.
    assert_eq!(server.command(&["DBSIZE"]), ":1");
}
