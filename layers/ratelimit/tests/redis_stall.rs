//! A stalled Redis (`CLIENT PAUSE ALL` on the test's own `redis-server`) costs a rate-limit decision one store
//! timeout, whatever the decision needs from Redis: connecting, loading the script and running it share one
//! deadline; then the layer's failure policy decides.
#![cfg(feature = "redis")]

mod common;

use common::{fresh_peer, nz, request, send, service};
use http::StatusCode;
use std::time::{Duration, Instant};
use tower_kit_ratelimit::{Policy, Quota, RateLimitLayer, RedisStore, StoreFailure};
use tower_kit_test_support::RedisServer;

/// Long enough that scheduling noise on a loaded 2-core machine is small next to it.
const TIMEOUT: Duration = Duration::from_millis(300);

/// A store whose breaker stays closed through the test, so every decision really waits for Redis.
fn stalling_store(server: &RedisServer) -> RedisStore {
    RedisStore::builder(server.url())
        .timeout(TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .failure_threshold(1000)
        .build()
        .unwrap()
}

/// A decision on a store that has not connected yet: connect (the handshake waits on the paused server), load the
/// script, run it. Each step alone could take a timeout; together they take one, and the request fails open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_decision_during_a_stall_costs_one_timeout() {
    let server = RedisServer::start();
    server.pause(Duration::from_secs(20));
    let store = stalling_store(&server);
    let mut svc = service(
        RateLimitLayer::builder()
            .store(store.clone())
            .policy(Policy::new("p", Quota::per_minute(nz(100)))),
    );
    for i in 0..3 {
        let started = Instant::now();
        let res = send(&mut svc, request(fresh_peer())).await;
        let took = started.elapsed();
        assert_eq!(res.status(), StatusCode::OK, "fail open");
        if i == 0 {
            assert!(took >= TIMEOUT * 9 / 10, "it did wait for Redis: {took:?}");
        }
        assert!(
            took < TIMEOUT * 5 / 2,
            "a decision took {took:?} with a {TIMEOUT:?} timeout (connect, load, run: up to {:?} per call)",
            TIMEOUT * 3
        );
    }
}

/// A connected store: the script is flushed (so a decision needs `EVALSHA`, `SCRIPT LOAD` and `EVALSHA` again),
/// then Redis stalls. Fail-closed layers answer 503 within about one timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_decision_during_a_stall_costs_one_timeout_then_the_failure_policy_decides() {
    let server = RedisServer::start();
    let store = stalling_store(&server);
    let mut svc = service(
        RateLimitLayer::builder()
            .store(store.clone())
            .store_failure(StoreFailure::FailClosed {
                retry_after: Duration::from_secs(1),
            })
            .policy(Policy::new("p", Quota::per_minute(nz(100)))),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while send(&mut svc, request(fresh_peer())).await.status() != StatusCode::OK {
        assert!(Instant::now() < deadline, "redis never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server.command(&["SCRIPT", "FLUSH"]), "+OK");
    server.pause(Duration::from_secs(20));
    for _ in 0..3 {
        let started = Instant::now();
        let res = send(&mut svc, request(fresh_peer())).await;
        let took = started.elapsed();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "fail closed");
        assert!(
            took < TIMEOUT * 5 / 2,
            "a decision took {took:?} with a {TIMEOUT:?} timeout"
        );
    }
}
