//! The limiter says what it does: the headers advertise what it really allows (whatever rate, window and burst), a
//! peer-IP key that finds no peer address is counted and explained instead of silently sharing one bucket, and
//! `Authorization` keys do not depend on how the client spells the scheme.
#![cfg(feature = "axum")]

mod common;

use common::{header, nz, param, request, send, service, sf_params};
use http::StatusCode;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};
use tower_kit_ratelimit::{
    InMemoryStore, KeyExtractor, ManualMonotonicClock, Policy, Quota, RateLimitLayer,
    metrics::MISSING_CLIENT_ADDRESS,
};

fn peer(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn quota(limit: u32, window_secs: u64, burst: u32) -> Quota {
    Quota::new(nz(limit), Duration::from_secs(window_secs))
        .unwrap()
        .with_burst(nz(burst))
}

/// `--rate-limit 1 --rate-limit-window 3600s` with a burst of 10: ten requests pass, and the headers say so
/// (`q=10;w=36000`); the refusal asks for one hour (when one unit is back), in `Retry-After` and in `t`, and one
/// hour is exactly right.
#[tokio::test]
async fn one_per_hour_burst_ten_headers_tell_the_truth() {
    let clock = ManualMonotonicClock::new();
    let mut svc = service(
        RateLimitLayer::builder()
            .store(InMemoryStore::with_clock(clock.clone()))
            .policy(Policy::new("per-ip", quota(1, 3600, 10)))
            .headers_on_admitted(true),
    );
    let p = peer("192.0.2.1:1");
    for i in 0..10 {
        let r = send(&mut svc, request(p)).await;
        assert_eq!(r.status(), StatusCode::OK, "request {i}");
        let policy = header(&r, "ratelimit-policy").unwrap();
        assert_eq!(
            sf_params(&policy, "per-ip"),
            vec![("q".into(), 10), ("w".into(), 36_000)]
        );
        let state = header(&r, "ratelimit").unwrap();
        assert_eq!(param(&state, "per-ip", "r"), 9 - i);
        assert_eq!(
            param(&state, "per-ip", "t"),
            3600,
            "the next unit, not the full burst"
        );
    }
    let r = send(&mut svc, request(p)).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&r, "retry-after").as_deref(), Some("3600"));
    assert_eq!(
        param(&header(&r, "ratelimit").unwrap(), "per-ip", "t"),
        3600
    );
    clock.advance(Duration::from_secs(3599));
    assert_eq!(
        send(&mut svc, request(p)).await.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "one second early"
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(send(&mut svc, request(p)).await.status(), StatusCode::OK);
}

/// Through the layer, for rate/window/burst combinations (bursts above and below the limit): exactly `q` requests
/// pass at once; a refusal's `Retry-After` and `t` are the same whole number of seconds, one second less is still
/// refused and that many is admitted; a client sending `q` every `w` seconds is never refused.
#[tokio::test]
async fn headers_match_the_limiter_for_rate_window_burst_combinations() {
    for (limit, window, burst) in [
        (100, 60, 10), // the demo's defaults: q=10;w=6
        (100, 60, 100),
        (1, 3600, 10),
        (5, 60, 20),
        (10, 1, 3),
        (7, 10, 1),
        (3, 1, 3),
    ] {
        let ctx = format!("{limit}/{window}s burst {burst}");
        let q = quota(limit, window, burst);
        let (units, w) = q.advertised();
        let clock = ManualMonotonicClock::new();
        let mut svc = service(
            RateLimitLayer::builder()
                .store(InMemoryStore::with_clock(clock.clone()))
                .policy(Policy::new("p", q)),
        );
        let p = peer("192.0.2.1:1");
        for i in 0..units {
            assert_eq!(
                send(&mut svc, request(p)).await.status(),
                StatusCode::OK,
                "{ctx}: {i}"
            );
        }
        let r = send(&mut svc, request(p)).await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "{ctx}: q+1");
        let policy = header(&r, "ratelimit-policy").unwrap();
        assert_eq!(param(&policy, "p", "q") as u64, units, "{ctx}");
        assert_eq!(param(&policy, "p", "w") as u64, w, "{ctx}");
        let retry: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
        let t = param(&header(&r, "ratelimit").unwrap(), "p", "t") as u64;
        assert_eq!(t, retry, "{ctx}");
        assert!(retry <= w, "{ctx}: never longer than the window advertised");
        clock.advance(Duration::from_secs(retry - 1));
        assert_eq!(
            send(&mut svc, request(p)).await.status(),
            StatusCode::TOO_MANY_REQUESTS,
            "{ctx}: a second early"
        );
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            send(&mut svc, request(p)).await.status(),
            StatusCode::OK,
            "{ctx}: on time"
        );
        // A fresh client that follows the policy: `q` at once, every `w` seconds.
        let follower = peer("192.0.2.2:1");
        for k in 0..10 {
            for i in 0..units {
                let r = send(&mut svc, request(follower)).await;
                assert_eq!(r.status(), StatusCode::OK, "{ctx}: window {k}, request {i}");
            }
            clock.advance(Duration::from_secs(w));
        }
    }
}

/// A tracing subscriber that keeps the messages of WARN events (this thread only).
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<String>>>);

struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl tracing::Subscriber for Warnings {
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
            let mut m = Message(String::new());
            event.record(&mut m);
            self.0.lock().unwrap().push(m.0);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

fn missing_count(snapshotter: &metrics_util::debugging::Snapshotter) -> u64 {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(k, ..)| k.key().name() == MISSING_CLIENT_ADDRESS)
        .map(|(.., v)| match v {
            DebugValue::Counter(c) => c,
            _ => 0,
        })
        .sum()
}

/// Runs `f` on a current-thread runtime with a per-test recorder and warning capture.
fn observed<F: std::future::Future<Output = ()>>(
    f: impl FnOnce() -> F,
) -> (metrics_util::debugging::Snapshotter, Vec<String>) {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let warnings = Warnings::default();
    metrics::with_local_recorder(&recorder, || {
        tracing::subscriber::with_default(warnings.clone(), || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(f());
        });
    });
    let messages = warnings.0.lock().unwrap().clone();
    (snapshotter, messages)
}

/// A request without any peer address: counted every time, explained once, and limited (one shared bucket), on the
/// single-policy path and on the planned path (several policies: counted once per request, not per policy).
#[test]
fn missing_peer_address_is_counted_and_warned_once() {
    let (snapshotter, warnings) = observed(|| async {
        let no_peer = || {
            let mut r = request(peer("192.0.2.1:1"));
            r.extensions_mut().clear();
            r
        };
        let mut single =
            service(RateLimitLayer::builder().policy(Policy::new("p", Quota::per_minute(nz(2)))));
        for i in 0..5 {
            let status = send(&mut single, no_peer()).await.status();
            let expected = if i < 2 {
                StatusCode::OK
            } else {
                StatusCode::TOO_MANY_REQUESTS
            };
            assert_eq!(
                status, expected,
                "request {i}: one shared bucket, still limited"
            );
        }
        let mut planned = service(
            RateLimitLayer::builder()
                .policy(Policy::new("a", Quota::per_minute(nz(100))))
                .policy(Policy::new("b", Quota::per_hour(nz(1000)))),
        );
        for _ in 0..3 {
            send(&mut planned, no_peer()).await;
        }
        // With an address: not counted.
        send(&mut single, request(peer("192.0.2.9:1"))).await;
    });
    assert_eq!(missing_count(&snapshotter), 8);
    let about: Vec<_> = warnings
        .iter()
        .filter(|w| w.contains("no peer address"))
        .collect();
    assert_eq!(about.len(), 2, "once per layer: {warnings:?}");
    let w = about[0];
    for cause in [
        "ConnectInfo<SocketAddr>",
        "into_make_service_with_connect_info",
        "TcpConnectInfo",
        "`tonic` feature",
        MISSING_CLIENT_ADDRESS,
    ] {
        assert!(w.contains(cause), "warning names {cause}: {w}");
    }
    assert!(
        !warnings.iter().any(|w| w.contains("found no key")),
        "no second, vaguer warning: {warnings:?}"
    );
}

/// Over a real socket: an axum app served **without** connect info has no peer address; the metric counts every
/// request and the warning fires once. Served with `into_make_service_with_connect_info`, nothing is counted.
#[test]
fn axum_served_without_connect_info_is_reported() {
    async fn run(with_connect_info: bool) -> Vec<u16> {
        use axum::{Router, routing::get};
        let layer = RateLimitLayer::new(Quota::per_minute(nz(3))).keep_inner_body();
        let app = Router::new()
            .route("/", get(|| async { "ok" }))
            .layer(layer);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        if with_connect_info {
            tokio::spawn(async move {
                axum::serve(
                    listener,
                    app.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .await
                .unwrap()
            });
        } else {
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        }
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
        let mut statuses = Vec::new();
        for _ in 0..5 {
            let uri = format!("http://{addr}/").parse().unwrap();
            statuses.push(client.get(uri).await.unwrap().status().as_u16());
        }
        statuses
    }
    let (snapshotter, warnings) = observed(|| async {
        assert_eq!(run(false).await, [200, 200, 200, 429, 429]);
    });
    assert_eq!(missing_count(&snapshotter), 5);
    assert_eq!(
        warnings
            .iter()
            .filter(|w| w.contains("no peer address"))
            .count(),
        1,
        "{warnings:?}"
    );
    let (snapshotter, warnings) = observed(|| async {
        assert_eq!(run(true).await, [200, 200, 200, 429, 429]);
    });
    assert_eq!(missing_count(&snapshotter), 0);
    assert!(warnings.is_empty(), "{warnings:?}");
}

/// `Authorization: Bearer` keys: the scheme's spelling never buys a client a fresh bucket.
#[tokio::test]
async fn bearer_scheme_case_does_not_buy_a_fresh_bucket() {
    let mut svc = service(
        RateLimitLayer::builder()
            .key(KeyExtractor::bearer().or(KeyExtractor::peer_ip()))
            .policy(Policy::new("token", Quota::per_minute(nz(3)))),
    );
    let with_auth = |value: &str| {
        let mut r = request(peer("192.0.2.1:1"));
        r.headers_mut()
            .insert(http::header::AUTHORIZATION, value.parse().unwrap());
        r
    };
    let mut statuses = Vec::new();
    for scheme in [
        "Bearer", "bearer", "BEARER", "BeArEr", "bearer ", "Bearer\t",
    ] {
        statuses.push(
            send(&mut svc, with_auth(&format!("{scheme} tok-1")))
                .await
                .status(),
        );
    }
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(ok, 3, "{statuses:?}");
    // Another token is another client.
    assert_eq!(
        send(&mut svc, with_auth("bearer tok-2")).await.status(),
        StatusCode::OK
    );
}
