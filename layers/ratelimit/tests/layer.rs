//! Layer behaviour on a fake clock: tiers, dry run, exemptions, keys (proxies, IPv6, unknown), refusal shapes,
//! metrics, Server-Timing, store failures, faults, and the key cap under a flood of 1 000 000 keys.

mod common;

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use tower::ServiceExt;
use tower_kit_core::ServerTiming;
use tower_kit_ratelimit::{
    CidrList, ForwardedHeader, InMemoryStore, Key, KeyExtractor, ManualMonotonicClock, Policy,
    Quota, RateLimitLayer, RateLimitStore, RefusalReason, StoreFailure, TrustedProxies,
    store::{Check, CheckRequest, Decision, PolicyId},
};

fn fake_store() -> (InMemoryStore<ManualMonotonicClock>, ManualMonotonicClock) {
    let clock = ManualMonotonicClock::new();
    (InMemoryStore::with_clock(clock.clone()), clock)
}

fn peer(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn tiers_get_their_own_quota() {
    let (store, _clock) = fake_store();
    let mut svc = service(
        RateLimitLayer::builder()
            .store(store)
            .key(
                KeyExtractor::header(http::HeaderName::from_static("x-api-key"))
                    .or(KeyExtractor::peer_ip()),
            )
            .policy(Policy::per_request("tier", |parts| {
                Some(if parts.headers.contains_key("x-api-key") {
                    Quota::per_minute(nz(5))
                } else {
                    Quota::per_minute(nz(2))
                })
            })),
    );
    let p = peer("192.0.2.1:1");
    let anon = || request(p);
    let paying = || {
        let mut r = request(p);
        r.headers_mut()
            .insert("x-api-key", "customer-1".parse().unwrap());
        r
    };
    assert_eq!(send(&mut svc, anon()).await.status(), StatusCode::OK);
    assert_eq!(send(&mut svc, anon()).await.status(), StatusCode::OK);
    let r = send(&mut svc, anon()).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        param(&header(&r, "ratelimit-policy").unwrap(), "tier", "q"),
        2
    );
    for _ in 0..5 {
        assert_eq!(send(&mut svc, paying()).await.status(), StatusCode::OK);
    }
    let r = send(&mut svc, paying()).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        param(&header(&r, "ratelimit-policy").unwrap(), "tier", "q"),
        5
    );
}

#[tokio::test]
async fn a_policy_that_does_not_apply_is_skipped() {
    let (store, _clock) = fake_store();
    let mut svc = service(
        RateLimitLayer::builder()
            .store(store)
            .policy(Policy::per_request("writes", |parts| {
                (parts.method == http::Method::POST).then(|| Quota::per_minute(nz(1)))
            })),
    );
    let p = peer("192.0.2.1:1");
    for _ in 0..10 {
        assert_eq!(send(&mut svc, request(p)).await.status(), StatusCode::OK);
    }
    let post = || {
        let mut r = request(p);
        *r.method_mut() = http::Method::POST;
        r
    };
    assert_eq!(send(&mut svc, post()).await.status(), StatusCode::OK);
    assert_eq!(
        send(&mut svc, post()).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

fn counter(
    snapshot: &[(
        metrics_util::CompositeKey,
        Option<metrics::Unit>,
        Option<metrics::SharedString>,
        DebugValue,
    )],
    name: &str,
    labels: &[(&str, &str)],
) -> u64 {
    snapshot
        .iter()
        .filter(|(k, ..)| {
            k.key().name() == name
                && labels
                    .iter()
                    .all(|(ln, lv)| k.key().labels().any(|l| l.key() == *ln && l.value() == *lv))
        })
        .map(|(.., v)| match v {
            DebugValue::Counter(c) => *c,
            _ => 0,
        })
        .sum()
}

#[test]
fn dry_run_never_refuses_but_counts_and_consumes_like_enforcing() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let (store, _clock) = fake_store();
            let mut svc = service(
                RateLimitLayer::builder()
                    .store(store.clone())
                    .policy(Policy::new("burst", Quota::per_minute(nz(3))))
                    .dry_run(true)
                    .headers_on_admitted(true),
            );
            let p = peer("192.0.2.1:1");
            for i in 0..10 {
                let r = send(&mut svc, request(p)).await;
                assert_eq!(r.status(), StatusCode::OK, "request {i}");
                let state = header(&r, "ratelimit").unwrap();
                assert_eq!(param(&state, "burst", "r"), if i < 3 { 2 - i } else { 0 });
            }
        });
    });
    let snapshot = snapshotter.snapshot().into_vec();
    let name = tower_kit_ratelimit::metrics::REQUESTS;
    assert_eq!(
        counter(
            &snapshot,
            name,
            &[("policy", "burst"), ("outcome", "admitted")]
        ),
        3
    );
    assert_eq!(
        counter(
            &snapshot,
            name,
            &[("policy", "burst"), ("outcome", "dry_run_refused")]
        ),
        7
    );
    assert_eq!(counter(&snapshot, name, &[("outcome", "refused")]), 0);
}

#[test]
fn metrics_count_admitted_refused_exempt_and_keys() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let (store, _clock) = fake_store();
            let mut svc = service(
                RateLimitLayer::builder()
                    .store(store)
                    .policy(Policy::new("a", Quota::per_minute(nz(2))))
                    .policy(Policy::new("b", Quota::per_minute(nz(10))))
                    .exempt(|parts| parts.uri.path() == "/health"),
            );
            for _ in 0..5 {
                send(&mut svc, request(peer("192.0.2.1:1"))).await;
            }
            let mut health = request(peer("192.0.2.1:1"));
            *health.uri_mut() = "/health".parse().unwrap();
            assert_eq!(send(&mut svc, health).await.status(), StatusCode::OK);
        });
    });
    let snapshot = snapshotter.snapshot().into_vec();
    let name = tower_kit_ratelimit::metrics::REQUESTS;
    assert_eq!(
        counter(&snapshot, name, &[("policy", "a"), ("outcome", "admitted")]),
        2
    );
    assert_eq!(
        counter(&snapshot, name, &[("policy", "b"), ("outcome", "admitted")]),
        2
    );
    assert_eq!(
        counter(&snapshot, name, &[("policy", "a"), ("outcome", "refused")]),
        3
    );
    assert_eq!(
        counter(&snapshot, name, &[("policy", "b"), ("outcome", "refused")]),
        0
    );
    assert_eq!(
        counter(&snapshot, tower_kit_ratelimit::metrics::EXEMPT, &[]),
        1
    );
    let keys = snapshot
        .iter()
        .find(|(k, ..)| k.key().name() == tower_kit_ratelimit::metrics::TRACKED_KEYS)
        .map(|(.., v)| v);
    assert_eq!(
        keys,
        Some(&DebugValue::Gauge(2.0.into())),
        "two (policy, key) states"
    );
}

#[tokio::test]
async fn exemptions_skip_every_policy() {
    let (store, _clock) = fake_store();
    let allow = CidrList::parse(["10.0.0.0/8"]).unwrap();
    let mut svc = service(
        RateLimitLayer::builder()
            .store(store.clone())
            .policy(Policy::new("p", Quota::per_minute(nz(1))))
            .exempt(move |parts| {
                parts.uri.path() == "/health"
                    || tower_kit_core::client_addr(&parts.extensions)
                        .is_some_and(|a| allow.contains(a.ip()))
            }),
    );
    for _ in 0..5 {
        assert_eq!(
            send(&mut svc, request(peer("10.1.2.3:1"))).await.status(),
            StatusCode::OK
        );
        let mut h = request(peer("192.0.2.1:1"));
        *h.uri_mut() = "/health".parse().unwrap();
        assert_eq!(send(&mut svc, h).await.status(), StatusCode::OK);
    }
    assert_eq!(
        store.stats().tracked_keys,
        0,
        "exempt requests leave no state"
    );
    assert_eq!(
        send(&mut svc, request(peer("192.0.2.1:1"))).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&mut svc, request(peer("192.0.2.1:1"))).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn spoofed_forwarding_headers_from_an_untrusted_peer_are_ignored() {
    let (store, _clock) = fake_store();
    let trusted = TrustedProxies::new(
        CidrList::parse(["10.0.0.0/8"]).unwrap(),
        ForwardedHeader::XForwardedFor,
    );
    let mut svc = service(
        RateLimitLayer::builder()
            .store(store)
            .key(KeyExtractor::client_ip(trusted))
            .policy(Policy::new("p", Quota::per_minute(nz(1)))),
    );
    let attacker = peer("203.0.113.66:1");
    let mut n = 0;
    let mut spoof = |name: &'static str| {
        n += 1;
        let mut r = request(attacker);
        let value = if name == "forwarded" {
            format!("for=198.51.100.{n}")
        } else {
            format!("198.51.100.{n}")
        };
        r.headers_mut().insert(name, value.parse().unwrap());
        r
    };
    assert_eq!(
        send(&mut svc, spoof("x-forwarded-for")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&mut svc, spoof("x-forwarded-for")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        send(&mut svc, spoof("forwarded")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Through the trusted proxy, the forwarded client is the key.
    let via_proxy = |client: &str| {
        let mut r = request(peer("10.0.0.1:1"));
        r.headers_mut().insert(
            "x-forwarded-for",
            format!("6.6.6.6, {client}").parse().unwrap(),
        );
        r
    };
    assert_eq!(
        send(&mut svc, via_proxy("198.51.100.200")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&mut svc, via_proxy("198.51.100.201")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&mut svc, via_proxy("198.51.100.200")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn garbage_and_huge_forwarding_headers_fall_back_to_the_proxy() {
    let (store, _clock) = fake_store();
    let trusted = TrustedProxies::new(
        CidrList::parse(["10.0.0.0/8"]).unwrap(),
        ForwardedHeader::XForwardedFor,
    );
    let mut svc = service(
        RateLimitLayer::builder()
            .store(store.clone())
            .key(KeyExtractor::client_ip(trusted))
            .policy(Policy::new("p", Quota::per_minute(nz(1000)))),
    );
    let huge = (0..1000)
        .map(|i| format!("198.51.{}.{}", i / 256, i % 256))
        .collect::<Vec<_>>()
        .join(", ");
    let huge_trusted = vec!["10.9.9.9"; 1000].join(",");
    for value in [
        "garbage",
        "unknown",
        "\"",
        ",,,,",
        huge_trusted.as_str(),
        "1.2.3.4:notaport",
    ] {
        let mut r = request(peer("10.0.0.1:1"));
        r.headers_mut()
            .insert("x-forwarded-for", value.parse().unwrap());
        assert_eq!(send(&mut svc, r).await.status(), StatusCode::OK);
    }
    // All of those were keyed by the proxy (or the deepest trusted hop read): two keys, not 1 000.
    let mut r = request(peer("10.0.0.1:1"));
    r.headers_mut()
        .insert("x-forwarded-for", huge.parse().unwrap());
    assert_eq!(send(&mut svc, r).await.status(), StatusCode::OK);
    assert_eq!(
        store.stats().tracked_keys,
        3,
        "proxy, deepest trusted hop, right-most untrusted hop"
    );
}

#[tokio::test]
async fn ipv4_mapped_and_ipv6_grouping() {
    let (store, _clock) = fake_store();
    let mut svc = service(
        RateLimitLayer::builder()
            .store(store)
            .policy(Policy::new("p", Quota::per_minute(nz(1)))),
    );
    assert_eq!(
        send(&mut svc, request(peer("[::ffff:192.0.2.9]:1")))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&mut svc, request(peer("192.0.2.9:2"))).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        send(&mut svc, request(peer("[2001:db8:0:1::1]:1")))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&mut svc, request(peer("[2001:db8:0:1:dead:beef:0:2]:1")))
            .await
            .status(),
        StatusCode::TOO_MANY_REQUESTS,
        "same /64"
    );
    assert_eq!(
        send(&mut svc, request(peer("[2001:db8:0:2::1]:1")))
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn requests_without_a_key_share_the_unknown_bucket() {
    let (store, _clock) = fake_store();
    let mut svc = service(
        RateLimitLayer::builder()
            .store(store.clone())
            .policy(Policy::new("p", Quota::per_minute(nz(2)))),
    );
    let no_peer = || Request::new(Full::new(Bytes::new()));
    assert_eq!(send(&mut svc, no_peer()).await.status(), StatusCode::OK);
    assert_eq!(send(&mut svc, no_peer()).await.status(), StatusCode::OK);
    assert_eq!(
        send(&mut svc, no_peer()).await.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "limits, not silently open"
    );
    assert_eq!(store.stats().tracked_keys, 1);
    // A keyed client is unaffected.
    assert_eq!(
        send(&mut svc, request(peer("192.0.2.1:1"))).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn retry_after_is_never_early() {
    let (store, clock) = fake_store();
    // 7 per 10 s: T = 1.428571428 s, not a whole number of seconds.
    let q = Quota::new(nz(7), Duration::from_secs(10))
        .unwrap()
        .with_burst(nz(1));
    let mut svc = service(
        RateLimitLayer::builder()
            .store(store)
            .policy(Policy::new("p", q)),
    );
    let p = peer("192.0.2.1:1");
    assert_eq!(send(&mut svc, request(p)).await.status(), StatusCode::OK);
    for step_ms in [0u64, 100, 300, 400] {
        clock.advance(Duration::from_millis(step_ms));
        let r = send(&mut svc, request(p)).await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
        // Waiting exactly Retry-After is enough; one nanosecond less than the true wait is not.
        clock.advance(Duration::from_secs(retry));
        let ok = send(&mut svc, request(p)).await;
        assert_eq!(ok.status(), StatusCode::OK, "after Retry-After {retry}");
        assert!(retry <= 2);
    }
    let r = send(&mut svc, request(p)).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    // T = 10 s / 7, rounded down to 1 428 571 428 ns.
    assert_eq!(q.emission_interval_nanos(), 1_428_571_428);
    clock.advance(Duration::from_nanos(1_428_571_427));
    assert_eq!(
        send(&mut svc, request(p)).await.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "1 ns early"
    );
    clock.advance(Duration::from_nanos(1));
    assert_eq!(send(&mut svc, request(p)).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn grpc_requests_get_resource_exhausted() {
    let (store, _clock) = fake_store();
    let mut svc = service(
        RateLimitLayer::builder()
            .store(store)
            .policy(Policy::new("p", Quota::per_minute(nz(1)))),
    );
    let grpc = || {
        let mut r = request(peer("192.0.2.1:1"));
        r.headers_mut()
            .insert("content-type", "application/grpc+proto".parse().unwrap());
        r
    };
    assert_eq!(send(&mut svc, grpc()).await.status(), StatusCode::OK);
    let r = send(&mut svc, grpc()).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "grpc-status").as_deref(), Some("8"));
    // gRPC clients read the wait from `grpc-retry-pushback-ms` (exact, rounded up), not `Retry-After`.
    assert_eq!(
        header(&r, "grpc-retry-pushback-ms").as_deref(),
        Some("60000")
    );
    assert!(header(&r, "retry-after").is_none());
    assert!(header(&r, "ratelimit").is_some());
    assert!(r.into_body().collect().await.unwrap().to_bytes().is_empty());
}

#[tokio::test]
async fn map_refusal_builds_the_refusal_and_the_layer_completes_headers() {
    let (store, _clock) = fake_store();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = Arc::clone(&seen);
    let mut svc = service(
        RateLimitLayer::builder()
            .store(store)
            .policy(Policy::new("p", Quota::per_minute(nz(1))))
            .on_refusal(move |refusal| {
                seen2.lock().unwrap().push((
                    refusal.reason(),
                    refusal.uri().path().to_owned(),
                    refusal.retry_after(),
                ));
            })
            .map_refusal(|refusal, response| {
                let body = format!(
                    "{{\"error\":\"slow down\",\"path\":\"{}\",\"retry_after\":{},\"policies\":{}}}",
                    refusal.uri().path(),
                    refusal.retry_after().unwrap().as_secs(),
                    refusal.policies().len()
                );
                *response = Response::builder()
                    .status(StatusCode::SERVICE_UNAVAILABLE)
                    .header("content-type", "application/json")
                    .header("ratelimit", "custom")
                    .body(Bytes::from(body))
                    .unwrap();
            }),
    );
    send(&mut svc, request(peer("192.0.2.1:1"))).await;
    let r = send(&mut svc, request(peer("192.0.2.1:1"))).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&r, "retry-after").as_deref(), Some("60"));
    assert_eq!(
        header(&r, "ratelimit").as_deref(),
        Some("custom"),
        "the hook's header is kept"
    );
    assert!(header(&r, "ratelimit-policy").is_some());
    let body = r.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        body,
        r#"{"error":"slow down","path":"/","retry_after":60,"policies":1}"#
    );
    assert_eq!(
        *seen.lock().unwrap(),
        [(
            RefusalReason::QuotaExceeded,
            "/".to_owned(),
            Some(Duration::from_secs(60))
        )]
    );
}

#[tokio::test]
async fn on_refusal_alone_keeps_the_default_response_and_the_short_path() {
    let (store, _clock) = fake_store();
    let count = Arc::new(AtomicUsize::new(0));
    let count2 = Arc::clone(&count);
    let mut svc = service(
        RateLimitLayer::builder()
            .store(store)
            .policy(Policy::new("p", Quota::per_minute(nz(1))))
            .on_refusal(move |refusal| {
                assert_eq!(refusal.reason(), RefusalReason::QuotaExceeded);
                count2.fetch_add(1, Ordering::SeqCst);
            }),
    );
    assert_eq!(
        send(&mut svc, request(peer("192.0.2.1:1"))).await.status(),
        StatusCode::OK
    );
    assert_eq!(count.load(Ordering::SeqCst), 0, "admitted: not told");
    let r = send(&mut svc, request(peer("192.0.2.1:1"))).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&r, "retry-after").as_deref(), Some("60"));
    assert_eq!(count.load(Ordering::SeqCst), 1);
    let body = r.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "rate limit exceeded\n");
}

#[tokio::test]
async fn a_cost_above_the_burst_is_refused_for_good() {
    let (store, _clock) = fake_store();
    let reasons = Arc::new(Mutex::new(Vec::new()));
    let reasons2 = Arc::clone(&reasons);
    let mut svc = service(
        RateLimitLayer::builder()
            .store(store)
            .policy(Policy::new("p", Quota::per_minute(nz(2))))
            .cost(|_| 3)
            .refusal_status(StatusCode::SERVICE_UNAVAILABLE)
            .refusal_body("")
            .on_refusal(move |refusal| {
                reasons2
                    .lock()
                    .unwrap()
                    .push((refusal.reason(), refusal.retry_after()));
            }),
    );
    let r = send(&mut svc, request(peer("192.0.2.1:1"))).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(header(&r, "retry-after").is_none(), "never admissible");
    assert!(header(&r, "content-type").is_none());
    assert!(r.into_body().collect().await.unwrap().to_bytes().is_empty());
    assert_eq!(
        *reasons.lock().unwrap(),
        [(RefusalReason::CostAboveBurst, None)]
    );
}

#[tokio::test]
async fn refusals_add_a_server_timing_entry() {
    let (store, _clock) = fake_store();
    let mut svc = service(
        RateLimitLayer::builder()
            .store(store)
            .policy(Policy::new("burst", Quota::per_minute(nz(1)))),
    );
    let timed = || {
        let mut r = request(peer("192.0.2.1:1"));
        r.extensions_mut().insert(ServerTiming::new());
        r
    };
    let first = timed();
    let t1 = first.extensions().get::<ServerTiming>().unwrap().clone();
    send(&mut svc, first).await;
    assert!(t1.seal().is_none(), "nothing on admitted requests");
    let second = timed();
    let t2 = second.extensions().get::<ServerTiming>().unwrap().clone();
    send(&mut svc, second).await;
    assert_eq!(t2.seal().unwrap(), r#"ratelimit;desc="refused burst""#);
}

#[tokio::test]
async fn legacy_headers_describe_the_most_restrictive_policy() {
    let (store, _clock) = fake_store();
    let mut svc = service(
        RateLimitLayer::builder()
            .store(store)
            .policy(Policy::new("minute", Quota::per_minute(nz(10))))
            .policy(Policy::new("second", Quota::per_second(nz(2))))
            .legacy_headers(true),
    );
    let p = peer("192.0.2.1:1");
    send(&mut svc, request(p)).await;
    send(&mut svc, request(p)).await;
    let r = send(&mut svc, request(p)).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&r, "x-ratelimit-limit").as_deref(), Some("2"));
    assert_eq!(header(&r, "x-ratelimit-remaining").as_deref(), Some("0"));
    assert_eq!(header(&r, "x-ratelimit-reset").as_deref(), Some("1"));
}

/// A store that always fails.
#[derive(Clone)]
struct Broken;

#[derive(Debug)]
struct Down;
impl std::fmt::Display for Down {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("store down")
    }
}
impl std::error::Error for Down {}

impl RateLimitStore for Broken {
    type Error = Down;
    type Future = std::future::Ready<Result<Decision, Down>>;
    fn check(&self, _: &CheckRequest<'_>) -> Self::Future {
        std::future::ready(Err(Down))
    }
}

#[tokio::test]
async fn store_failures_follow_the_failure_policy() {
    let mut open = service(
        RateLimitLayer::builder()
            .store(Broken)
            .policy(Policy::new("p", Quota::per_minute(nz(1)))),
    );
    for _ in 0..3 {
        assert_eq!(
            send(&mut open, request(peer("192.0.2.1:1"))).await.status(),
            StatusCode::OK
        );
    }
    let mut closed = service(
        RateLimitLayer::builder()
            .store(Broken)
            .policy(Policy::new("p", Quota::per_minute(nz(1))))
            .store_failure(StoreFailure::FailClosed {
                retry_after: Duration::from_millis(1500),
            }),
    );
    let r = send(&mut closed, request(peer("192.0.2.1:1"))).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&r, "retry-after").as_deref(), Some("2"));
}

/// `FailOpenCapped`: while the store is down, each client still gets `percent`% of its quota from an in-process
/// limiter, with the usual 429 and headers.
#[tokio::test]
async fn fail_open_capped_enforces_a_share_of_the_quota_locally() {
    let mut svc = service(
        RateLimitLayer::builder()
            .store(Broken)
            .policy(Policy::new("p", Quota::per_minute(nz(10))))
            .store_failure(StoreFailure::FailOpenCapped { percent: 30 }),
    );
    let p = peer("192.0.2.1:1");
    for _ in 0..3 {
        assert_eq!(send(&mut svc, request(p)).await.status(), StatusCode::OK);
    }
    let r = send(&mut svc, request(p)).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    // 3 per minute locally: one unit back every 20 s.
    assert_eq!(header(&r, "retry-after").as_deref(), Some("20"));
    assert_eq!(
        header(&r, "ratelimit-policy").as_deref(),
        Some(r#""p";q=10;w=60"#),
        "the configured quota is stated"
    );
    // `RateLimit` describes the local state with the local quota: the next unit in 20 s, as `Retry-After` says.
    assert_eq!(header(&r, "ratelimit").as_deref(), Some(r#""p";r=0;t=20"#));
    // Another client has its own local share.
    assert_eq!(
        send(&mut svc, request(peer("192.0.2.2:1"))).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn inner_errors_pass_through_and_panics_leave_the_limiter_working() {
    let (store, _clock) = fake_store();
    let layer = RateLimitLayer::builder()
        .store(store)
        .policy(Policy::new("p", Quota::per_minute(nz(3))))
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let svc = tower::ServiceBuilder::new()
        .layer(layer.clone())
        .service_fn(move |_req: Request<Full<Bytes>>| {
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move {
                match n {
                    0 => Err::<Response<Full<Bytes>>, _>("boom"),
                    1 => panic!("inner panic"),
                    _ => Ok(Response::new(Full::new(Bytes::from_static(b"ok")))),
                }
            }
        });
    let p = peer("192.0.2.1:1");
    assert_eq!(svc.clone().oneshot(request(p)).await.unwrap_err(), "boom");
    let panicked = tokio::spawn(svc.clone().oneshot(request(p))).await;
    assert!(panicked.unwrap_err().is_panic());
    // Both consumed a unit (they were admitted); the third unit is left, then refusal.
    assert_eq!(
        svc.clone().oneshot(request(p)).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        svc.clone().oneshot(request(p)).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn one_layer_is_one_limit_across_services_and_clones() {
    let (store, _clock) = fake_store();
    let layer = RateLimitLayer::builder()
        .store(store)
        .policy(Policy::new("p", Quota::per_minute(nz(2))))
        .build()
        .unwrap();
    let make = |layer: &RateLimitLayer<InMemoryStore<ManualMonotonicClock>>| {
        tower::ServiceBuilder::new()
            .layer(layer.clone())
            .service_fn(|_req: Request<Full<Bytes>>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
            })
    };
    let (a, b) = (make(&layer), make(&layer));
    let p = peer("192.0.2.1:1");
    assert_eq!(
        a.clone().oneshot(request(p)).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        b.clone().oneshot(request(p)).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        a.oneshot(request(p)).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn client_dropping_the_response_body_is_harmless() {
    let (store, _clock) = fake_store();
    let mut svc = service(
        RateLimitLayer::builder()
            .store(store)
            .policy(Policy::new("p", Quota::per_minute(nz(2)))),
    );
    let p = peer("192.0.2.1:1");
    drop(send(&mut svc, request(p)).await.into_body());
    let r = send(&mut svc, request(p)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let mut body = r.into_body();
    drop(body.frame().await);
    drop(body);
    assert_eq!(
        send(&mut svc, request(p)).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

/// xorshift64*: a small deterministic generator for the flood.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

#[test]
fn key_cap_holds_under_a_million_random_ipv6_keys_and_a_throttled_key_stays_throttled() {
    let clock = ManualMonotonicClock::new();
    let store = InMemoryStore::builder()
        .max_keys(10_000)
        .clock(clock.clone())
        .build()
        .unwrap();
    let quota = Quota::per_minute(nz(10));
    let policy = PolicyId::of("per-ip");
    let decide = |key: Key| {
        store.decide(&CheckRequest {
            checks: &[Check { policy, key, quota }],
            cost: 1,
        })
    };
    let throttled = Key::from_ip("2001:db8::1".parse().unwrap(), 64);
    for _ in 0..10 {
        assert!(decide(throttled).admitted());
    }
    assert!(!decide(throttled).admitted());
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..1_000_000u32 {
        let ip = std::net::Ipv6Addr::from(
            (u128::from(next(&mut rng)) << 64) | u128::from(next(&mut rng)),
        );
        decide(Key::from_ip(ip.into(), 64));
        if i % 1000 == 0 {
            clock.advance(Duration::from_millis(1)); // the flood lasts 1 s of fake time
            assert!(store.stats().tracked_keys <= store.capacity());
        }
    }
    let stats = store.stats();
    assert!(stats.tracked_keys <= 10_000, "{stats:?}");
    assert!(stats.evictions >= 1_000_000 - 10_000 - 10, "{stats:?}");
    assert!(
        !decide(throttled).admitted(),
        "the flood did not reset the throttled key: {stats:?}"
    );
}

/// Counts warning events.
struct CountWarnings(Arc<AtomicUsize>);

impl tracing::Subscriber for CountWarnings {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() == tracing::Level::WARN {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn the_unknown_bucket_is_logged_once() {
    let warnings = Arc::new(AtomicUsize::new(0));
    let subscriber = CountWarnings(Arc::clone(&warnings));
    tracing::subscriber::with_default(subscriber, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let (store, _clock) = fake_store();
            let mut svc = service(
                RateLimitLayer::builder()
                    .store(store)
                    .policy(Policy::new("p", Quota::per_minute(nz(100)))),
            );
            for _ in 0..5 {
                let r = send(&mut svc, Request::new(Full::new(Bytes::new()))).await;
                assert_eq!(r.status(), StatusCode::OK);
            }
            send(&mut svc, request(peer("192.0.2.1:1"))).await;
        });
    });
    assert_eq!(warnings.load(Ordering::SeqCst), 1);
}
