//! Stale serving under concurrency and faults: one background revalidation for many stale hits,
//! `stale-if-error` on a connection failure, coalesced revalidation.

mod common;

use bytes::Bytes;
use common::*;
use futures_util::future::join_all;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use tower::{Layer, ServiceExt};
use tower_kit_cache::{CacheLayer, ManualWallClock, Store};

/// 50 concurrent requests for a stale entry within `stale-while-revalidate` are all answered at once from the
/// cache, and exactly one background revalidation reaches the origin; after it, the entry is fresh.
async fn concurrent_stale_hits_make_one_revalidation<St: Store>(store: St) {
    let clock = ManualWallClock::default();
    let origin = Origin::new(|req: &Request<()>| {
        let revalidation = req.headers().contains_key("if-none-match");
        Answer {
            status: if revalidation { 304 } else { 200 },
            headers: vec![
                (
                    "cache-control".into(),
                    "max-age=10, stale-while-revalidate=60".into(),
                ),
                ("etag".into(), "\"v1\"".into()),
            ],
            body: if revalidation { "" } else { "payload" },
            // The revalidation is slow: every stale hit arrives while it is in flight.
            delay: if revalidation {
                Duration::from_millis(200)
            } else {
                Duration::ZERO
            },
        }
    });
    let svc = builder(&clock)
        .store(store)
        .build()
        .unwrap()
        .layer(origin.service());
    send(&svc, get("/r")).await;
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    clock.advance(Duration::from_secs(15));

    let start = tokio::time::Instant::now();
    let responses = join_all((0..50).map(|_| send(&svc, get("/r")))).await;
    assert_eq!(start.elapsed(), Duration::ZERO, "stale hits never wait");
    for (parts, body) in &responses {
        assert_eq!(all(parts, "x-cache"), "STALE");
        assert_eq!(
            all(parts, "cache-status"),
            "tower-kit; fwd=stale; ttl=-5; detail=stale-while-revalidate"
        );
        assert_eq!(body, "payload");
    }
    // The revalidation is in flight: more stale hits start none of their own.
    let (parts, _) = send(&svc, get("/r")).await;
    assert_eq!(all(&parts, "x-cache"), "STALE");
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(origin.calls(), 2, "one fill and exactly one revalidation");
    let revalidation = origin.seen.lock().unwrap()[1].clone();
    assert_eq!(revalidation["if-none-match"], "\"v1\"");
    let (parts, _) = send(&svc, get("/r")).await;
    assert_eq!(all(&parts, "x-cache"), "HIT");
    assert_eq!(all(&parts, "cache-status"), "tower-kit; hit; ttl=10");
    assert_eq!(origin.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn concurrent_stale_hits_make_one_background_revalidation() {
    concurrent_stale_hits_make_one_revalidation(tower_kit_cache::MokaStore::new(1 << 24)).await;
}

#[tokio::test(start_paused = true)]
async fn concurrent_stale_hits_make_one_background_revalidation_on_a_store_that_waits() {
    concurrent_stale_hits_make_one_revalidation(YieldingStore::new(1 << 24)).await;
}

/// Concurrent requests for a stale entry outside any stale window wait for one conditional request.
#[tokio::test(start_paused = true)]
async fn concurrent_revalidations_are_coalesced() {
    let clock = ManualWallClock::default();
    let origin = Origin::new(|req: &Request<()>| {
        let revalidation = req.headers().contains_key("if-none-match");
        Answer {
            status: if revalidation { 304 } else { 200 },
            headers: vec![
                ("cache-control".into(), "max-age=10".into()),
                ("etag".into(), "\"v1\"".into()),
            ],
            body: if revalidation { "" } else { "payload" },
            delay: Duration::from_millis(100),
        }
    });
    let svc = builder(&clock).build().unwrap().layer(origin.service());
    send(&svc, get("/r")).await;
    clock.advance(Duration::from_secs(20));
    let responses = join_all((0..20).map(|_| send(&svc, get("/r")))).await;
    assert_eq!(origin.calls(), 2);
    let mut revalidated = 0;
    for (parts, body) in &responses {
        assert_eq!(body, "payload");
        match all(parts, "x-cache").as_str() {
            "REVALIDATED" => revalidated += 1,
            "HIT" => assert!(all(parts, "cache-status").ends_with("collapsed")),
            other => panic!("unexpected X-Cache {other}"),
        }
    }
    assert_eq!(revalidated, 1);
}

#[derive(Debug)]
struct ConnectionRefused;
impl std::fmt::Display for ConnectionRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection refused")
    }
}
impl std::error::Error for ConnectionRefused {}

/// An origin that answers once, then fails like a dead upstream (the inner service returns an error).
fn failing_after_first(
    cache_control: &'static str,
) -> (
    impl tower::Service<
        Request<()>,
        Response = Response<Full<Bytes>>,
        Error = ConnectionRefused,
        Future: Send,
    > + Clone
    + Send
    + 'static,
    Arc<AtomicUsize>,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let svc = tower::service_fn(move |_req: Request<()>| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        async move {
            if n > 0 {
                return Err(ConnectionRefused);
            }
            Ok(Response::builder()
                .header("cache-control", cache_control)
                .body(Full::new(Bytes::from_static(b"payload")))
                .unwrap())
        }
    });
    (svc, calls)
}

#[tokio::test]
async fn stale_if_error_answers_a_connection_failure() {
    let clock = ManualWallClock::default();
    let (origin, calls) = failing_after_first("max-age=10, stale-if-error=60");
    // The disconnected window (RFC 9111 §4.2.4) off: only `stale-if-error` decides.
    let svc = builder(&clock)
        .stale_if_disconnected(Duration::ZERO)
        .build()
        .unwrap()
        .layer(origin);
    let first = svc.clone().oneshot(get("/r")).await.unwrap();
    first.into_body().collect().await.unwrap();
    clock.advance(Duration::from_secs(30));
    let res = svc.clone().oneshot(get("/r")).await.unwrap();
    assert_eq!(res.headers()["x-cache"], "STALE");
    assert_eq!(
        res.headers()["cache-status"],
        "tower-kit; fwd=stale; ttl=-20; detail=stale-if-error"
    );
    assert_eq!(res.headers()["age"], "30");
    assert_eq!(
        res.into_body().collect().await.unwrap().to_bytes(),
        "payload"
    );
    // Past the window the error reaches the caller unchanged.
    clock.advance(Duration::from_secs(60));
    let err = svc.clone().oneshot(get("/r")).await.unwrap_err();
    assert_eq!(err.to_string(), "connection refused");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn stale_if_error_from_config_and_the_handle_counts_stale_answers() {
    let clock = ManualWallClock::default();
    let (origin, _) = failing_after_first("max-age=10");
    let layer = CacheLayer::builder()
        .clock(clock.clone())
        .stale_if_error(Duration::from_secs(60))
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(origin);
    let first = svc.clone().oneshot(get("/r")).await.unwrap();
    first.into_body().collect().await.unwrap();
    clock.advance(Duration::from_secs(11));
    let res = svc.clone().oneshot(get("/r")).await.unwrap();
    assert_eq!(res.headers()["x-cache"], "STALE");
    let stats = handle.stats().await;
    assert_eq!((stats.misses, stats.stale), (1, 1));
    assert!((stats.hit_ratio() - 0.5).abs() < 1e-9);
}

/// Without `stale-if-error`, and with the disconnected window (RFC 9111 §4.2.4) off, a connection failure passes
/// through, and a stale entry never hides it.
#[tokio::test]
async fn connection_failure_without_stale_if_error_is_the_callers() {
    let clock = ManualWallClock::default();
    let (origin, _) = failing_after_first("max-age=10");
    let svc = builder(&clock)
        .stale_if_disconnected(Duration::ZERO)
        .build()
        .unwrap()
        .layer(origin);
    let first = svc.clone().oneshot(get("/r")).await.unwrap();
    first.into_body().collect().await.unwrap();
    clock.advance(Duration::from_secs(11));
    assert!(svc.clone().oneshot(get("/r")).await.is_err());
}

/// `stale-while-revalidate` on a background revalidation that fails: the entry keeps answering stale, and the
/// next stale hit starts a new revalidation.
#[tokio::test]
async fn failed_background_revalidation_keeps_serving_stale() {
    let clock = ManualWallClock::default();
    let (origin, calls) = failing_after_first("max-age=10, stale-while-revalidate=60");
    let svc = builder(&clock).build().unwrap().layer(origin);
    let first = svc.clone().oneshot(get("/r")).await.unwrap();
    first.into_body().collect().await.unwrap();
    clock.advance(Duration::from_secs(15));
    for expected_calls in [2, 3] {
        let res = svc.clone().oneshot(get("/r")).await.unwrap();
        assert_eq!(res.headers()["x-cache"], "STALE");
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        assert_eq!(calls.load(Ordering::SeqCst), expected_calls);
    }
}
