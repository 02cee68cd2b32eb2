//! Shared helpers and the backend behaviour suite: every `RateLimitStore` must pass `run_suite`.
//!
//! The suite goes through the layer (so it checks decisions *and* headers) with a fresh client address per case,
//! so it can run against a store shared with other tests (a Redis). Time moves only through the harness's fake
//! clock (the Redis harness passes its `now` to the script), so every assertion is exact and none depends on how
//! fast the machine is. A backend that expires states in real time (Redis: TTL `tat - now`) must not lose one
//! during a case however slow the machine: every quota here has an emission interval of 12 s or more, so no state
//! is written with a TTL below 12 s.
#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    num::NonZeroU32,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};
use tower::{Service, ServiceExt};
use tower_kit_core::PolicyBody;
use tower_kit_ratelimit::{Policy, Quota, RateLimitLayer, RateLimitLayerBuilder, RateLimitStore};

pub fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

/// A time source for the suite.
pub trait Harness {
    /// The store under test.
    type Store: RateLimitStore + Clone;
    /// The store (each call may return a clone of the same one).
    fn store(&self) -> Self::Store;
    /// Moves the fake clock forward by `by`.
    fn advance(&self, by: Duration) -> impl Future<Output = ()>;
}

static NEXT_CLIENT: AtomicU32 = AtomicU32::new(1);

/// A client address no other case uses (in this process; the Redis harness also uses a fresh key prefix).
pub fn fresh_peer() -> SocketAddr {
    let n = NEXT_CLIENT.fetch_add(1, Ordering::Relaxed) + (std::process::id() << 12);
    SocketAddr::from(([100, (n >> 16) as u8, (n >> 8) as u8, n as u8], 4000))
}

pub type Svc = tower::util::BoxCloneService<
    Request<Full<Bytes>>,
    Response<PolicyBody<Full<Bytes>>>,
    Infallible,
>;

/// A layer over an echo service that answers 200 "ok".
pub fn service<St: RateLimitStore + Clone>(builder: RateLimitLayerBuilder<St>) -> Svc {
    let layer = builder.build().unwrap();
    tower::util::BoxCloneService::new(tower::ServiceBuilder::new().layer(layer).service_fn(
        |_req: Request<Full<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        },
    ))
}

pub fn request(peer: SocketAddr) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(Bytes::new()));
    req.extensions_mut().insert(peer);
    req
}

pub async fn send(svc: &mut Svc, req: Request<Full<Bytes>>) -> Response<PolicyBody<Full<Bytes>>> {
    svc.ready().await.unwrap().call(req).await.unwrap()
}

/// The single value of a header (panics on duplicates).
pub fn header<B>(r: &Response<B>, name: &str) -> Option<String> {
    let all: Vec<_> = r.headers().get_all(name).iter().collect();
    assert!(all.len() <= 1, "{name} appears {} times", all.len());
    all.first().map(|v| v.to_str().unwrap().to_owned())
}

/// One policy's parameters from a `RateLimit` or `RateLimit-Policy` field, parsed with `sfv`.
pub fn sf_params(value: &str, policy: &str) -> Vec<(String, i64)> {
    use sfv::{BareItem, ListEntry, Parser};
    let list = Parser::new(value)
        .parse::<sfv::List>()
        .expect("valid Structured Field list");
    for entry in list {
        let ListEntry::Item(item) = entry else {
            panic!("inner list in {value}")
        };
        let BareItem::String(name) = &item.bare_item else {
            panic!("policy name is not an sf-string in {value}")
        };
        if name.as_str() == policy {
            return item
                .params
                .iter()
                .map(|(k, v)| match v {
                    BareItem::Integer(i) => (k.as_str().to_owned(), i64::from(*i)),
                    other => panic!("{k} is not an integer: {other:?}"),
                })
                .collect();
        }
    }
    panic!("policy {policy} not in {value}")
}

pub fn param(value: &str, policy: &str, name: &str) -> i64 {
    sf_params(value, policy)
        .into_iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no {name} for {policy} in {value}"))
        .1
}

/// Runs every case of the suite.
pub async fn run_suite<H: Harness>(h: &H) {
    burst_then_refusal(h).await;
    refill_timing(h).await;
    several_policies_all_or_nothing(h).await;
    cost(h).await;
    headers_on_admitted(h).await;
}

/// 5 per minute: exactly 5 admitted with `r` counting down, then 429 with `Retry-After: 12` (one unit back).
pub async fn burst_then_refusal<H: Harness>(h: &H) {
    let mut svc = service(
        RateLimitLayer::builder()
            .store(h.store())
            .policy(Policy::new("burst", Quota::per_minute(nz(5)))),
    );
    let peer = fresh_peer();
    for _ in 0..5 {
        let r = send(&mut svc, request(peer)).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            header(&r, "ratelimit"),
            None,
            "no headers on admitted responses by default"
        );
    }
    let r = send(&mut svc, request(peer)).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&r, "retry-after").as_deref(), Some("12"));
    let policy = header(&r, "ratelimit-policy").unwrap();
    assert_eq!(
        sf_params(&policy, "burst"),
        vec![("q".into(), 5), ("w".into(), 60)]
    );
    let state = header(&r, "ratelimit").unwrap();
    assert_eq!(param(&state, "burst", "r"), 0);
    assert_eq!(
        param(&state, "burst", "t"),
        12,
        "the next unit, not the whole burst"
    );
    // Another client is not affected.
    assert_eq!(
        send(&mut svc, request(fresh_peer())).await.status(),
        StatusCode::OK
    );
}

/// 1 per minute, burst 2: after the burst, one unit comes back every 60 s, not 1 ms earlier; `Retry-After` rounds
/// a remaining 1 ms up to 1 s.
pub async fn refill_timing<H: Harness>(h: &H) {
    let q = Quota::per_minute(nz(1)).with_burst(nz(2));
    let mut svc = service(
        RateLimitLayer::builder()
            .store(h.store())
            .policy(Policy::new("refill", q)),
    );
    let peer = fresh_peer();
    assert_eq!(send(&mut svc, request(peer)).await.status(), StatusCode::OK);
    assert_eq!(send(&mut svc, request(peer)).await.status(), StatusCode::OK);
    let r = send(&mut svc, request(peer)).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&r, "retry-after").as_deref(), Some("60"));
    h.advance(Duration::from_millis(59_999)).await;
    let r = send(&mut svc, request(peer)).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "1 ms early");
    assert_eq!(header(&r, "retry-after").as_deref(), Some("1"));
    h.advance(Duration::from_millis(1)).await;
    assert_eq!(send(&mut svc, request(peer)).await.status(), StatusCode::OK);
    let r = send(&mut svc, request(peer)).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&r, "retry-after").as_deref(), Some("60"));
}

/// `burst` 2 per minute and `daily` 3 per day: a request refused by one policy consumes from none.
pub async fn several_policies_all_or_nothing<H: Harness>(h: &H) {
    let mut svc = service(
        RateLimitLayer::builder()
            .store(h.store())
            .policy(Policy::new("burst", Quota::per_minute(nz(2))))
            .policy(Policy::new("daily", Quota::per_day(nz(3))))
            .headers_on_admitted(true),
    );
    let peer = fresh_peer();
    for _ in 0..2 {
        assert_eq!(send(&mut svc, request(peer)).await.status(), StatusCode::OK);
    }
    // Refused by `burst` only; `daily` keeps its last unit.
    for _ in 0..5 {
        let r = send(&mut svc, request(peer)).await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        let state = header(&r, "ratelimit").unwrap();
        assert_eq!(param(&state, "burst", "r"), 0);
        assert_eq!(
            param(&state, "daily", "r"),
            1,
            "a refused request consumed nothing"
        );
        assert_eq!(header(&r, "retry-after").as_deref(), Some("30"));
        let policy = header(&r, "ratelimit-policy").unwrap();
        assert_eq!(param(&policy, "daily", "q"), 3);
        assert_eq!(param(&policy, "daily", "w"), 86_400);
    }
    h.advance(Duration::from_secs(30)).await;
    let r = send(&mut svc, request(peer)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(param(&header(&r, "ratelimit").unwrap(), "daily", "r"), 0);
    h.advance(Duration::from_secs(60)).await;
    // Now `daily` refuses: one unit comes back every 8 hours, 90 s of which have passed since the first request.
    let r = send(&mut svc, request(peer)).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        header(&r, "retry-after").as_deref(),
        Some("28710"),
        "8 h - 90 s"
    );
    assert_eq!(
        param(&header(&r, "ratelimit").unwrap(), "burst", "r"),
        2,
        "burst was not consumed"
    );
}

/// A cost above the remaining units is refused without consuming; a cost above the burst never passes and gets no
/// `Retry-After`; a cost of 0 always passes.
pub async fn cost<H: Harness>(h: &H) {
    let mut svc = service(
        RateLimitLayer::builder()
            .store(h.store())
            .policy(Policy::new("units", Quota::per_minute(nz(5))))
            .headers_on_admitted(true)
            .cost(|parts| {
                parts
                    .headers
                    .get("x-cost")
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .unwrap_or(1)
            }),
    );
    let peer = fresh_peer();
    let with_cost = |c: u32| {
        let mut r = request(peer);
        r.headers_mut().insert("x-cost", c.into());
        r
    };
    let r = send(&mut svc, with_cost(3)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(param(&header(&r, "ratelimit").unwrap(), "units", "r"), 2);
    let r = send(&mut svc, with_cost(3)).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        header(&r, "retry-after").as_deref(),
        Some("12"),
        "one more unit in 12 s"
    );
    let r = send(&mut svc, with_cost(6)).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        header(&r, "retry-after"),
        None,
        "never admissible: no Retry-After"
    );
    let r = send(&mut svc, with_cost(0)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = send(&mut svc, with_cost(2)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(param(&header(&r, "ratelimit").unwrap(), "units", "r"), 0);
}

/// Headers on admitted responses and the legacy trio, parsed back.
pub async fn headers_on_admitted<H: Harness>(h: &H) {
    let mut svc = service(
        RateLimitLayer::builder()
            .store(h.store())
            .policy(Policy::new(
                "hourly",
                Quota::per_hour(nz(100)).with_burst(nz(10)),
            ))
            .headers_on_admitted(true)
            .legacy_headers(true),
    );
    let peer = fresh_peer();
    let r = send(&mut svc, request(peer)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let policy = header(&r, "ratelimit-policy").unwrap();
    assert_eq!(
        sf_params(&policy, "hourly"),
        vec![("q".into(), 10), ("w".into(), 360)],
        "the burst, and the time to give it back"
    );
    let state = header(&r, "ratelimit").unwrap();
    assert_eq!(param(&state, "hourly", "r"), 9);
    assert_eq!(
        param(&state, "hourly", "t"),
        36,
        "one unit = 36 s until full again"
    );
    assert_eq!(header(&r, "x-ratelimit-limit").as_deref(), Some("10"));
    assert_eq!(header(&r, "x-ratelimit-remaining").as_deref(), Some("9"));
    assert_eq!(header(&r, "x-ratelimit-reset").as_deref(), Some("36"));
}
