//! Table-driven RFC 9111 / RFC 9211 behaviour at the service level, on a manual clock.

mod common;
/// Cases for serving rules (ranges, a disconnected origin), kept in their own file.
#[path = "rfc/serving.rs"]
mod serving;

use common::*;
use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use tower::Layer;
use tower_kit_cache::{
    CacheLayerBuilder, Lease, LeaseRelease, ManualWallClock, MokaStore, Store, StoreError,
    StoreUsage, StoredValue,
};

type Headers = &'static [(&'static str, &'static str)];

struct Case {
    name: &'static str,
    configure: fn(CacheLayerBuilder<MokaStore>) -> CacheLayerBuilder<MokaStore>,
    /// The origin's response headers; `{date}` and `{date+60}` are replaced with the clock's time.
    response: &'static [(&'static str, &'static str)],
    /// The status of the origin's first answer.
    response_status: u16,
    first: &'static [(&'static str, &'static str)],
    advance: u64,
    second: &'static [(&'static str, &'static str)],
    second_method: &'static str,
    /// The second request's path (the first is always `GET /r`).
    second_path: &'static str,
    /// The origin's answer to its later calls (status, headers, body); `None`: the same as the first.
    later: Option<(u16, Headers, &'static str)>,
    /// The clock moves this many seconds while the origin answers the first call (response delay).
    origin_delay: u64,
    /// Headers the origin must have seen on its last call.
    origin_saw: &'static [(&'static str, &'static str)],
    /// Status of the second response.
    status: u16,
    /// Body of the second response (`None`: "payload", or empty for HEAD, 304 and 504).
    body: Option<&'static str>,
    /// More headers of the second response (every field line joined with ` | `; "" for absent).
    expect: &'static [(&'static str, &'static str)],
    /// A third request (always to `/r`), after background work had time to finish.
    then: Option<Then>,
    /// X-Cache of the second response.
    x_cache: &'static str,
    /// Cache-Status of the second response (every field line).
    cache_status: &'static str,
    /// Age of the second response ("" for none).
    age: &'static str,
    origin_calls: usize,
}

/// A third request and what it must get.
struct Then {
    method: &'static str,
    headers: &'static [(&'static str, &'static str)],
    x_cache: &'static str,
    cache_status: &'static str,
    /// Origin calls after it.
    origin_calls: usize,
}

const fn then_get(
    x_cache: &'static str,
    cache_status: &'static str,
    origin_calls: usize,
) -> Option<Then> {
    Some(Then {
        method: "GET",
        headers: &[],
        x_cache,
        cache_status,
        origin_calls,
    })
}

const fn case(name: &'static str) -> Case {
    Case {
        name,
        configure: |b| b,
        response: &[],
        response_status: 200,
        first: &[],
        advance: 0,
        second: &[],
        second_method: "GET",
        second_path: "/r",
        later: None,
        origin_delay: 0,
        origin_saw: &[],
        status: 200,
        body: None,
        expect: &[],
        then: None,
        x_cache: "HIT",
        cache_status: "",
        age: "",
        origin_calls: 1,
    }
}

fn cases() -> Vec<Case> {
    let mut cases = vec![
        Case {
            response: &[("cache-control", "max-age=30")],
            advance: 10,
            cache_status: "tower-kit; hit; ttl=20",
            age: "10",
            ..case("fresh by max-age: hit with Age")
        },
        Case {
            response: &[("cache-control", "max-age=30")],
            advance: 30,
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=stale; fwd-status=200",
            origin_calls: 2,
            ..case("stale by max-age: miss")
        },
        Case {
            response: &[("cache-control", "max-age=1, s-maxage=60")],
            advance: 30,
            cache_status: "tower-kit; hit; ttl=30",
            age: "30",
            ..case("s-maxage wins in a shared cache")
        },
        Case {
            response: &[("date", "{date}"), ("expires", "{date+60}")],
            advance: 59,
            cache_status: "tower-kit; hit; ttl=1",
            age: "59",
            ..case("Expires minus Date")
        },
        Case {
            response: &[("cache-control", "max-age=30"), ("age", "25")],
            advance: 2,
            cache_status: "tower-kit; hit; ttl=3",
            age: "27",
            ..case("origin Age counts")
        },
        Case {
            response: &[("cache-control", "public, max-age=30, no-store")],
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=bypass; fwd-status=200; detail=hit-for-pass",
            origin_calls: 2,
            ..case("no-store: not stored, key marked hit-for-pass")
        },
        Case {
            response: &[("cache-control", "private, max-age=30")],
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=bypass; fwd-status=200; detail=hit-for-pass",
            origin_calls: 2,
            ..case("private: not stored")
        },
        Case {
            response: &[("cache-control", "no-cache, max-age=30")],
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=bypass; fwd-status=200; detail=hit-for-pass",
            origin_calls: 2,
            ..case("no-cache: never served without revalidation")
        },
        Case {
            configure: |b| b.hit_for_pass(Duration::ZERO),
            response: &[("cache-control", "no-store")],
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=uri-miss; fwd-status=200; detail=no-store",
            origin_calls: 2,
            ..case("no-store without hit-for-pass says why")
        },
        Case {
            configure: |b| b.hit_for_pass(Duration::ZERO),
            response: &[],
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=uri-miss; fwd-status=200; detail=no-freshness",
            origin_calls: 2,
            ..case("no freshness information: not stored")
        },
        Case {
            configure: |b| b.default_ttl("/r", tower_kit_cache::TtlTier::FiveMinutes),
            response: &[],
            advance: 100,
            cache_status: "tower-kit; hit; ttl=200",
            age: "100",
            ..case("per-route default TTL")
        },
        Case {
            response: &[("cache-control", "max-age=30"), ("vary", "Accept-Encoding")],
            first: &[("accept-encoding", "gzip, br")],
            second: &[("accept-encoding", "br;q=1, GZIP;q=0.8")],
            cache_status: "tower-kit; hit; ttl=30",
            age: "0",
            ..case("Vary: equivalent Accept-Encoding hits")
        },
        Case {
            response: &[("cache-control", "max-age=30"), ("vary", "Accept-Encoding")],
            first: &[("accept-encoding", "gzip")],
            second: &[("accept-encoding", "identity")],
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=vary-miss; fwd-status=200",
            origin_calls: 2,
            ..case("Vary: other Accept-Encoding misses")
        },
        Case {
            response: &[("cache-control", "max-age=30"), ("vary", "X-Tenant")],
            first: &[("x-tenant", "a")],
            second: &[],
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=vary-miss; fwd-status=200",
            origin_calls: 2,
            ..case("Vary: absent header is a different variant")
        },
        Case {
            response: &[("cache-control", "max-age=30"), ("vary", "*")],
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=bypass; fwd-status=200; detail=hit-for-pass",
            origin_calls: 2,
            ..case("Vary: * is never reused")
        },
        Case {
            response: &[("cache-control", "max-age=30")],
            first: &[("authorization", "Bearer a")],
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=uri-miss; fwd-status=200",
            origin_calls: 2,
            ..case("Authorization: response without public is not stored")
        },
        Case {
            response: &[("cache-control", "public, max-age=30")],
            first: &[("authorization", "Bearer a")],
            second: &[("authorization", "Bearer b")],
            cache_status: "tower-kit; hit; ttl=30",
            age: "0",
            ..case("Authorization: public response is shared")
        },
        Case {
            response: &[("cache-control", "must-revalidate, max-age=30")],
            first: &[("authorization", "Bearer a")],
            cache_status: "tower-kit; hit; ttl=30",
            age: "0",
            ..case("Authorization: must-revalidate response is shared")
        },
        Case {
            response: &[("cache-control", "max-age=30")],
            second: &[("authorization", "Bearer b")],
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=bypass; fwd-status=200; detail=authorization",
            origin_calls: 2,
            ..case("Authorization: not served an entry without public")
        },
        Case {
            response: &[("cache-control", "max-age=30")],
            second: &[("cookie", "session=1")],
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=bypass; fwd-status=200; detail=cookie",
            origin_calls: 2,
            ..case("Cookie: bypass unless public")
        },
        Case {
            response: &[("cache-control", "public, max-age=30")],
            first: &[("cookie", "session=1")],
            second: &[("cookie", "session=2")],
            cache_status: "tower-kit; hit; ttl=30",
            age: "0",
            ..case("Cookie: public responses are shared")
        },
        Case {
            configure: |b| b.cookie_bypass(false),
            response: &[("cache-control", "max-age=30")],
            second: &[("cookie", "session=1")],
            cache_status: "tower-kit; hit; ttl=30",
            age: "0",
            ..case("Cookie: pure RFC setting")
        },
        Case {
            response: &[
                ("cache-control", "public, max-age=30"),
                ("set-cookie", "id=1"),
            ],
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=bypass; fwd-status=200; detail=hit-for-pass",
            origin_calls: 2,
            ..case("Set-Cookie is never stored")
        },
        Case {
            response: &[("cache-control", "max-age=30")],
            second_method: "HEAD",
            cache_status: "tower-kit; hit; ttl=30",
            age: "0",
            ..case("HEAD is served from a stored GET")
        },
        Case {
            response: &[("cache-control", "max-age=30")],
            second_method: "POST",
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=method; fwd-status=200",
            origin_calls: 2,
            ..case("POST bypasses")
        },
        // ---- Age (RFC 9111 §4.2.3) ----
        Case {
            response: &[("cache-control", "max-age=60"), ("date", "{date-20}")],
            cache_status: "tower-kit; hit; ttl=40",
            age: "20",
            ..case("Age: apparent age from a Date in the past")
        },
        Case {
            response: &[
                ("cache-control", "max-age=60"),
                ("date", "{date}"),
                ("age", "5"),
            ],
            origin_delay: 2,
            cache_status: "tower-kit; hit; ttl=53",
            age: "7",
            ..case("Age: origin Age plus the response delay beats the apparent age")
        },
        Case {
            response: &[("cache-control", "max-age=60"), ("date", "{date+60}")],
            cache_status: "tower-kit; hit; ttl=60",
            age: "0",
            ..case("Age: a Date in the future is no negative age")
        },
        // ---- Conditional requests answered from a fresh entry (RFC 9111 §4.3.2, RFC 9110 §13) ----
        Case {
            response: &[
                ("cache-control", "max-age=30"),
                ("content-location", "/r.json"),
                ("date", "{date}"),
                ("etag", "\"v1\""),
                ("expires", "{date+60}"),
                ("vary", "Accept-Encoding"),
                ("last-modified", "{date-100}"),
                ("content-type", "text/plain"),
                ("x-other", "1"),
            ],
            second: &[("if-none-match", "\"v1\"")],
            status: 304,
            cache_status: "tower-kit; hit; ttl=30",
            age: "0",
            expect: &[
                ("cache-control", "max-age=30"),
                ("content-location", "/r.json"),
                ("date", "{date}"),
                ("etag", "\"v1\""),
                ("expires", "{date+60}"),
                ("vary", "Accept-Encoding"),
                ("last-modified", ""),
                ("content-type", ""),
                ("content-length", ""),
                ("x-other", ""),
            ],
            ..case("If-None-Match: 304 with the headers RFC 9110 §15.4.5 lists")
        },
        Case {
            response: &[("cache-control", "max-age=30"), ("etag", "W/\"v1\"")],
            second: &[("if-none-match", "\"v1\"")],
            status: 304,
            cache_status: "tower-kit; hit; ttl=30",
            age: "0",
            expect: &[("etag", "W/\"v1\"")],
            ..case("If-None-Match: weak comparison (strong tag against a weak ETag)")
        },
        Case {
            response: &[("cache-control", "max-age=30"), ("etag", "\"v1\"")],
            second: &[("if-none-match", "\"x\", W/\"v1\"")],
            status: 304,
            cache_status: "tower-kit; hit; ttl=30",
            age: "0",
            ..case("If-None-Match: a list with a weak match")
        },
        Case {
            response: &[("cache-control", "max-age=30"), ("etag", "\"v1\"")],
            second: &[("if-none-match", "*")],
            status: 304,
            cache_status: "tower-kit; hit; ttl=30",
            age: "0",
            ..case("If-None-Match: *")
        },
        Case {
            response: &[("cache-control", "max-age=30"), ("etag", "\"v1\"")],
            second: &[("if-none-match", "\"v0\"")],
            cache_status: "tower-kit; hit; ttl=30",
            age: "0",
            ..case("If-None-Match: no match gets the full response")
        },
        Case {
            response: &[
                ("cache-control", "max-age=30"),
                ("last-modified", "{date-100}"),
            ],
            second: &[("if-modified-since", "{date}")],
            status: 304,
            cache_status: "tower-kit; hit; ttl=30",
            age: "0",
            expect: &[("last-modified", "{date-100}")],
            ..case("If-Modified-Since: not modified since")
        },
        Case {
            response: &[
                ("cache-control", "max-age=30"),
                ("last-modified", "{date-100}"),
            ],
            second: &[("if-modified-since", "{date-200}")],
            cache_status: "tower-kit; hit; ttl=30",
            age: "0",
            ..case("If-Modified-Since: modified since gets the full response")
        },
        Case {
            response: &[
                ("cache-control", "max-age=30"),
                ("etag", "\"v1\""),
                ("last-modified", "{date-100}"),
            ],
            second: &[("if-none-match", "\"v0\""), ("if-modified-since", "{date}")],
            cache_status: "tower-kit; hit; ttl=30",
            age: "0",
            ..case("If-Modified-Since is ignored when If-None-Match is present")
        },
        // ---- Revalidation with the origin (RFC 9111 §4.3) ----
        Case {
            response: &[
                ("cache-control", "max-age=10"),
                ("etag", "\"v1\""),
                ("x-v", "1"),
            ],
            advance: 20,
            later: Some((
                304,
                &[
                    ("cache-control", "max-age=60"),
                    ("etag", "\"v1\""),
                    ("x-v", "2"),
                ],
                "",
            )),
            origin_saw: &[("if-none-match", "\"v1\""), ("if-modified-since", "")],
            x_cache: "REVALIDATED",
            cache_status: "tower-kit; fwd=stale; fwd-status=304",
            age: "0",
            expect: &[
                ("x-v", "2"),
                ("cache-control", "max-age=60"),
                ("etag", "\"v1\""),
            ],
            origin_calls: 2,
            then: then_get("HIT", "tower-kit; hit; ttl=60", 2),
            ..case("stale entry with an ETag: origin 304 refreshes headers and freshness")
        },
        Case {
            response: &[
                ("cache-control", "max-age=10"),
                ("last-modified", "{date-100}"),
            ],
            advance: 20,
            later: Some((304, &[("cache-control", "max-age=60")], "")),
            origin_saw: &[("if-modified-since", "{date-100}"), ("if-none-match", "")],
            x_cache: "REVALIDATED",
            cache_status: "tower-kit; fwd=stale; fwd-status=304",
            age: "0",
            origin_calls: 2,
            then: then_get("HIT", "tower-kit; hit; ttl=60", 2),
            ..case("stale entry with Last-Modified: revalidated with If-Modified-Since")
        },
        Case {
            response: &[("cache-control", "max-age=10"), ("etag", "\"v1\"")],
            advance: 20,
            later: Some((
                200,
                &[("cache-control", "max-age=60"), ("etag", "\"v2\"")],
                "fresh",
            )),
            origin_saw: &[("if-none-match", "\"v1\"")],
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=stale; fwd-status=200",
            body: Some("fresh"),
            expect: &[("etag", "\"v2\"")],
            origin_calls: 2,
            then: then_get("HIT", "tower-kit; hit; ttl=60", 2),
            ..case("stale entry: origin 200 replaces it")
        },
        Case {
            response: &[("cache-control", "max-age=10"), ("etag", "\"v1\"")],
            advance: 20,
            second: &[("if-none-match", "\"mine\"")],
            later: Some((
                304,
                &[("cache-control", "max-age=60"), ("etag", "\"v1\"")],
                "",
            )),
            origin_saw: &[("if-none-match", "\"v1\"")],
            x_cache: "REVALIDATED",
            cache_status: "tower-kit; fwd=stale; fwd-status=304",
            age: "0",
            origin_calls: 2,
            ..case(
                "revalidation uses the cache's validator; the client's own does not match: full response",
            )
        },
        Case {
            response: &[("cache-control", "max-age=10"), ("etag", "\"v1\"")],
            advance: 20,
            second: &[("if-none-match", "\"v1\"")],
            later: Some((
                304,
                &[("cache-control", "max-age=60"), ("etag", "\"v1\"")],
                "",
            )),
            status: 304,
            x_cache: "REVALIDATED",
            cache_status: "tower-kit; fwd=stale; fwd-status=304",
            age: "0",
            origin_calls: 2,
            ..case("revalidation: the client gets its own 304")
        },
        Case {
            response: &[("cache-control", "no-cache"), ("etag", "\"v1\"")],
            later: Some((
                304,
                &[("cache-control", "no-cache"), ("etag", "\"v1\"")],
                "",
            )),
            origin_saw: &[("if-none-match", "\"v1\"")],
            x_cache: "REVALIDATED",
            cache_status: "tower-kit; fwd=stale; fwd-status=304",
            age: "0",
            origin_calls: 2,
            then: then_get("REVALIDATED", "tower-kit; fwd=stale; fwd-status=304", 3),
            ..case("no-cache with a validator: stored, revalidated before each use")
        },
        Case {
            response: &[("cache-control", "max-age=0"), ("etag", "\"v1\"")],
            later: Some((
                304,
                &[("cache-control", "max-age=0"), ("etag", "\"v1\"")],
                "",
            )),
            x_cache: "REVALIDATED",
            cache_status: "tower-kit; fwd=stale; fwd-status=304",
            age: "0",
            origin_calls: 2,
            ..case("max-age=0 with a validator: stored, revalidated")
        },
        Case {
            response: &[("cache-control", "max-age=10"), ("etag", "\"v1\"")],
            advance: 20,
            later: Some((
                304,
                &[("cache-control", "no-store"), ("etag", "\"v1\"")],
                "",
            )),
            x_cache: "REVALIDATED",
            cache_status: "tower-kit; fwd=stale; fwd-status=304",
            age: "0",
            origin_calls: 2,
            then: then_get(
                "MISS",
                "tower-kit; fwd=bypass; fwd-status=304; detail=hit-for-pass",
                3,
            ),
            ..case("a 304 that says no-store: served once, the entry is dropped")
        },
        // ---- stale-while-revalidate (RFC 5861 §3) ----
        Case {
            response: &[
                ("cache-control", "max-age=10, stale-while-revalidate=30"),
                ("etag", "\"v1\""),
            ],
            advance: 15,
            later: Some((
                304,
                &[
                    ("cache-control", "max-age=10, stale-while-revalidate=30"),
                    ("etag", "\"v1\""),
                ],
                "",
            )),
            x_cache: "STALE",
            cache_status: "tower-kit; fwd=stale; ttl=-5; detail=stale-while-revalidate",
            age: "15",
            origin_saw: &[("if-none-match", "\"v1\"")],
            origin_calls: 2,
            then: then_get("HIT", "tower-kit; hit; ttl=10", 2),
            ..case("stale-while-revalidate: stale at once, revalidated in the background")
        },
        Case {
            configure: |b| b.stale_while_revalidate(Duration::from_secs(30)),
            response: &[("cache-control", "max-age=10")],
            advance: 15,
            x_cache: "STALE",
            cache_status: "tower-kit; fwd=stale; ttl=-5; detail=stale-while-revalidate",
            age: "15",
            origin_calls: 2,
            then: then_get("HIT", "tower-kit; hit; ttl=10", 2),
            ..case("stale-while-revalidate from config: refetched in the background")
        },
        Case {
            response: &[
                ("cache-control", "max-age=10, stale-while-revalidate=30"),
                ("etag", "\"v1\""),
            ],
            advance: 41,
            later: Some((
                304,
                &[("cache-control", "max-age=10"), ("etag", "\"v1\"")],
                "",
            )),
            x_cache: "REVALIDATED",
            cache_status: "tower-kit; fwd=stale; fwd-status=304",
            age: "0",
            origin_calls: 2,
            ..case("stale-while-revalidate: past the window, revalidated in line")
        },
        Case {
            response: &[
                (
                    "cache-control",
                    "max-age=10, must-revalidate, stale-while-revalidate=30",
                ),
                ("etag", "\"v1\""),
            ],
            advance: 15,
            later: Some((
                304,
                &[("cache-control", "max-age=10"), ("etag", "\"v1\"")],
                "",
            )),
            x_cache: "REVALIDATED",
            cache_status: "tower-kit; fwd=stale; fwd-status=304",
            age: "0",
            origin_calls: 2,
            ..case("must-revalidate forbids stale-while-revalidate")
        },
        Case {
            response: &[("cache-control", "max-age=10, stale-while-revalidate=30")],
            second: &[("cache-control", "no-cache")],
            advance: 15,
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=request; fwd-status=200",
            origin_calls: 2,
            ..case("request no-cache is never answered stale")
        },
        // ---- stale-if-error (RFC 5861 §4) ----
        Case {
            response: &[("cache-control", "max-age=10, stale-if-error=60")],
            advance: 20,
            later: Some((503, &[("retry-after", "5")], "down")),
            x_cache: "STALE",
            cache_status: "tower-kit; fwd=stale; fwd-status=503; ttl=-10; detail=stale-if-error",
            age: "20",
            expect: &[("retry-after", "")],
            origin_calls: 2,
            ..case("stale-if-error: a 503 is answered with the stale entry")
        },
        Case {
            configure: |b| b.stale_if_error(Duration::from_secs(60)),
            response: &[("cache-control", "max-age=10"), ("etag", "\"v1\"")],
            advance: 20,
            later: Some((500, &[], "boom")),
            origin_saw: &[("if-none-match", "\"v1\"")],
            x_cache: "STALE",
            cache_status: "tower-kit; fwd=stale; fwd-status=500; ttl=-10; detail=stale-if-error",
            age: "20",
            origin_calls: 2,
            ..case("stale-if-error from config, on a failed revalidation")
        },
        Case {
            response: &[("cache-control", "max-age=10, stale-if-error=60")],
            advance: 71,
            later: Some((502, &[], "down")),
            status: 502,
            body: Some("down"),
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=stale; fwd-status=502; detail=no-freshness",
            origin_calls: 2,
            ..case("stale-if-error: past the window the error passes")
        },
        Case {
            response: &[("cache-control", "max-age=10, stale-if-error=60")],
            advance: 20,
            later: Some((404, &[], "gone")),
            status: 404,
            body: Some("gone"),
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=stale; fwd-status=404; detail=no-freshness",
            origin_calls: 2,
            ..case("stale-if-error: a 404 is an answer, not an error")
        },
        Case {
            response: &[(
                "cache-control",
                "max-age=10, must-revalidate, stale-if-error=60",
            )],
            advance: 20,
            later: Some((503, &[], "down")),
            status: 503,
            body: Some("down"),
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=stale; fwd-status=503; detail=no-freshness",
            origin_calls: 2,
            ..case("must-revalidate forbids stale-if-error")
        },
        // ---- Request directives (RFC 9111 §5.2.1, §5.4) ----
        Case {
            response: &[("cache-control", "max-age=30"), ("etag", "\"v1\"")],
            second: &[("cache-control", "no-cache")],
            later: Some((
                304,
                &[("cache-control", "max-age=30"), ("etag", "\"v1\"")],
                "",
            )),
            origin_saw: &[("if-none-match", "\"v1\"")],
            x_cache: "REVALIDATED",
            cache_status: "tower-kit; fwd=request; fwd-status=304",
            age: "0",
            origin_calls: 2,
            ..case("request no-cache: a fresh entry is validated")
        },
        Case {
            response: &[("cache-control", "max-age=30")],
            second: &[("pragma", "no-cache")],
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=request; fwd-status=200",
            origin_calls: 2,
            ..case("Pragma: no-cache without Cache-Control")
        },
        Case {
            response: &[("cache-control", "max-age=30")],
            second: &[("pragma", "no-cache"), ("cache-control", "max-age=100")],
            cache_status: "tower-kit; hit; ttl=30",
            age: "0",
            ..case("Pragma is ignored when Cache-Control is present")
        },
        Case {
            response: &[("cache-control", "max-age=60")],
            advance: 20,
            second: &[("cache-control", "max-age=10")],
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=request; fwd-status=200",
            origin_calls: 2,
            ..case("request max-age: the entry is too old")
        },
        Case {
            response: &[("cache-control", "max-age=60")],
            advance: 5,
            second: &[("cache-control", "max-age=10")],
            cache_status: "tower-kit; hit; ttl=55",
            age: "5",
            ..case("request max-age: young enough")
        },
        Case {
            response: &[("cache-control", "max-age=30")],
            advance: 10,
            second: &[("cache-control", "min-fresh=25")],
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=request; fwd-status=200",
            origin_calls: 2,
            ..case("request min-fresh: not fresh for long enough")
        },
        Case {
            response: &[("cache-control", "max-age=30")],
            advance: 10,
            second: &[("cache-control", "min-fresh=15")],
            cache_status: "tower-kit; hit; ttl=20",
            age: "10",
            ..case("request min-fresh: fresh for long enough")
        },
        Case {
            response: &[("cache-control", "max-age=10")],
            advance: 15,
            second: &[("cache-control", "max-stale=10")],
            x_cache: "STALE",
            cache_status: "tower-kit; hit; ttl=-5; detail=max-stale",
            age: "15",
            ..case("request max-stale: stale within the limit is served")
        },
        Case {
            response: &[("cache-control", "max-age=10")],
            advance: 15,
            second: &[("cache-control", "max-stale=2")],
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=stale; fwd-status=200",
            origin_calls: 2,
            ..case("request max-stale: too stale")
        },
        Case {
            response: &[("cache-control", "max-age=10"), ("etag", "\"v1\"")],
            advance: 1000,
            second: &[("cache-control", "max-stale")],
            x_cache: "STALE",
            cache_status: "tower-kit; hit; ttl=-990; detail=max-stale",
            age: "1000",
            ..case("request max-stale without a value: any staleness")
        },
        Case {
            response: &[("cache-control", "max-age=10, must-revalidate")],
            advance: 15,
            second: &[("cache-control", "max-stale")],
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=stale; fwd-status=200",
            origin_calls: 2,
            ..case("request max-stale against must-revalidate")
        },
        Case {
            response: &[("cache-control", "max-age=30")],
            second: &[("cache-control", "only-if-cached")],
            cache_status: "tower-kit; hit; ttl=30",
            age: "0",
            ..case("only-if-cached with a fresh entry")
        },
        Case {
            response: &[("cache-control", "max-age=10")],
            advance: 15,
            second: &[("cache-control", "only-if-cached")],
            status: 504,
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=miss; detail=only-if-cached",
            ..case("only-if-cached with a stale entry: 504")
        },
        Case {
            response: &[("cache-control", "max-age=30")],
            second_path: "/other",
            second: &[("cache-control", "only-if-cached")],
            status: 504,
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=miss; detail=only-if-cached",
            ..case("only-if-cached with nothing stored: 504")
        },
        Case {
            response: &[("cache-control", "max-age=10")],
            advance: 15,
            second: &[("cache-control", "only-if-cached, max-stale")],
            x_cache: "STALE",
            cache_status: "tower-kit; hit; ttl=-5; detail=max-stale",
            age: "15",
            ..case("only-if-cached with max-stale")
        },
        // ---- Invalidation by unsafe methods (RFC 9111 §4.4) ----
        Case {
            response: &[("cache-control", "max-age=30")],
            second_method: "POST",
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=method; fwd-status=200",
            origin_calls: 2,
            then: then_get("MISS", "tower-kit; fwd=uri-miss; fwd-status=200", 3),
            ..case("POST 200 invalidates the target URI")
        },
        Case {
            response: &[("cache-control", "max-age=30")],
            second_method: "DELETE",
            later: Some((204, &[], "")),
            status: 204,
            body: Some(""),
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=method; fwd-status=204",
            origin_calls: 2,
            then: then_get(
                "MISS",
                "tower-kit; fwd=uri-miss; fwd-status=204; detail=no-freshness",
                3,
            ),
            ..case("DELETE 204 invalidates the target URI")
        },
        Case {
            response: &[("cache-control", "max-age=30")],
            second_method: "PATCH",
            later: Some((303, &[("location", "/elsewhere")], "")),
            status: 303,
            body: Some(""),
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=method; fwd-status=303",
            origin_calls: 2,
            then: then_get(
                "MISS",
                "tower-kit; fwd=uri-miss; fwd-status=303; detail=no-freshness",
                3,
            ),
            ..case("PATCH 303 invalidates the target URI")
        },
        Case {
            response: &[("cache-control", "max-age=30")],
            second_method: "DELETE",
            later: Some((404, &[], "")),
            status: 404,
            body: Some(""),
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=method; fwd-status=404",
            origin_calls: 2,
            then: then_get("HIT", "tower-kit; hit; ttl=30", 2),
            ..case("DELETE 404 invalidates nothing")
        },
        Case {
            response: &[("cache-control", "max-age=30")],
            second_method: "PUT",
            second_path: "/other",
            later: Some((201, &[("location", "/r")], "")),
            status: 201,
            body: Some(""),
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=method; fwd-status=201",
            origin_calls: 2,
            then: then_get(
                "MISS",
                "tower-kit; fwd=uri-miss; fwd-status=201; detail=no-freshness",
                3,
            ),
            ..case("PUT invalidates the same-origin Location")
        },
        Case {
            response: &[("cache-control", "max-age=30")],
            second_method: "POST",
            second_path: "/other",
            later: Some((200, &[("content-location", "r")], "")),
            body: Some(""),
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=method; fwd-status=200",
            origin_calls: 2,
            then: then_get(
                "MISS",
                "tower-kit; fwd=uri-miss; fwd-status=200; detail=no-freshness",
                3,
            ),
            ..case("POST invalidates a relative Content-Location")
        },
        Case {
            response: &[("cache-control", "max-age=30")],
            second_method: "POST",
            second_path: "/other",
            later: Some((201, &[("location", "http://evil.example/r")], "")),
            status: 201,
            body: Some(""),
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=method; fwd-status=201",
            origin_calls: 2,
            then: then_get("HIT", "tower-kit; hit; ttl=30", 2),
            ..case("another origin's Location invalidates nothing")
        },
        // ---- HEAD (RFC 9111 §4.3.5) ----
        Case {
            response: &[("cache-control", "max-age=30"), ("etag", "\"v1\"")],
            second_method: "HEAD",
            second: &[("cache-control", "no-cache")],
            later: Some((
                200,
                &[("cache-control", "max-age=30"), ("etag", "\"v2\"")],
                "",
            )),
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=request; fwd-status=200",
            origin_calls: 2,
            then: then_get("MISS", "tower-kit; fwd=stale; fwd-status=200", 3),
            ..case("a HEAD response with a new ETag marks the stored GET stale")
        },
        Case {
            response: &[("cache-control", "max-age=30"), ("etag", "\"v1\"")],
            second_method: "HEAD",
            second: &[("cache-control", "no-cache")],
            later: Some((
                200,
                &[("cache-control", "max-age=30"), ("etag", "\"v1\"")],
                "",
            )),
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=request; fwd-status=200",
            origin_calls: 2,
            then: then_get("HIT", "tower-kit; hit; ttl=30", 2),
            ..case("a HEAD response with the same ETag keeps the stored GET")
        },
        Case {
            response: &[("cache-control", "max-age=30"), ("etag", "\"v1\"")],
            second_method: "HEAD",
            second: &[("if-none-match", "\"v1\"")],
            status: 304,
            cache_status: "tower-kit; hit; ttl=30",
            age: "0",
            ..case("a conditional HEAD gets a 304 from a stored GET")
        },
    ];
    cases.extend(response_rules());
    cases.extend(serving::cases());
    cases
}

/// Final statuses stored on explicit freshness (RFC 9111 §3): each is served from the cache on the second request.
const STORED_STATUSES: &[(u16, &str)] = &[
    (203, "RFC 9111 §3: a 203 with max-age is stored"),
    (204, "RFC 9111 §3: a 204 with max-age is stored"),
    (300, "RFC 9111 §3: a 300 with max-age is stored"),
    (302, "RFC 9111 §3: a 302 with max-age is stored"),
    (307, "RFC 9111 §3: a 307 with max-age is stored"),
    (400, "RFC 9111 §3: a 400 with max-age is stored"),
    (404, "RFC 9111 §3: a 404 with max-age is stored"),
    (410, "RFC 9111 §3: a 410 with max-age is stored"),
    (500, "RFC 9111 §3: a 500 with max-age is stored"),
    (501, "RFC 9111 §3: a 501 with max-age is stored"),
    (502, "RFC 9111 §3: a 502 with max-age is stored"),
    (503, "RFC 9111 §3: a 503 with max-age is stored"),
    (504, "RFC 9111 §3: a 504 with max-age is stored"),
    (
        299,
        "RFC 9111 §3: an unregistered 299 with max-age is stored",
    ),
    (
        499,
        "RFC 9111 §3: an unregistered 499 with max-age is stored",
    ),
    (
        599,
        "RFC 9111 §3: an unregistered 599 with max-age is stored",
    ),
];

/// The response rules: statuses (RFC 9111 §3, §4.2.2), `Age` (§5.1), informational responses, and targeted cache
/// control (RFC 9213).
fn response_rules() -> Vec<Case> {
    let mut cases: Vec<Case> = STORED_STATUSES
        .iter()
        .map(|&(status, name)| Case {
            response: &[("cache-control", "max-age=30")],
            response_status: status,
            status,
            body: Some("payload"),
            advance: 10,
            cache_status: "tower-kit; hit; ttl=20",
            age: "10",
            ..case(name)
        })
        .collect();
    cases.extend([
        // ---- Statuses (RFC 9111 §3, §4.2.2, §5.2.2.3, §5.2.2.9) ----
        Case {
            response: &[("cache-control", "s-maxage=30")],
            response_status: 503,
            status: 503,
            first: &[("authorization", "Bearer a")],
            cache_status: "tower-kit; hit; ttl=30",
            age: "0",
            ..case("RFC 9111 §3: a 503 with s-maxage is stored, shared with Authorization")
        },
        Case {
            response: &[("date", "{date}"), ("expires", "{date+60}")],
            response_status: 404,
            status: 404,
            advance: 59,
            cache_status: "tower-kit; hit; ttl=1",
            age: "59",
            ..case("RFC 9111 §3: a 404 with Expires is stored")
        },
        Case {
            configure: |b| b.store_any_status(false),
            response: &[("cache-control", "max-age=30")],
            response_status: 500,
            status: 500,
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=bypass; fwd-status=500; detail=hit-for-pass",
            origin_calls: 2,
            ..case("RFC 9111 §3: store_any_status(false) keeps a 500 out")
        },
        Case {
            configure: |b| b.default_ttl("/r", tower_kit_cache::TtlTier::Minute),
            response_status: 500,
            status: 500,
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=bypass; fwd-status=500; detail=hit-for-pass",
            origin_calls: 2,
            ..case("RFC 9111 §4.2.2: a 500 without explicit freshness gets no default TTL")
        },
        Case {
            configure: |b| b.default_ttl("/r", tower_kit_cache::TtlTier::Minute),
            response_status: 499,
            status: 499,
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=bypass; fwd-status=499; detail=hit-for-pass",
            origin_calls: 2,
            ..case("RFC 9111 §4.2.2: an unregistered 499 without explicit freshness gets no default TTL")
        },
        Case {
            configure: |b| b.default_ttl("/r", tower_kit_cache::TtlTier::Minute),
            response_status: 404,
            status: 404,
            advance: 10,
            cache_status: "tower-kit; hit; ttl=50",
            age: "10",
            ..case("RFC 9111 §4.2.2: a heuristically cacheable 404 gets the default TTL")
        },
        Case {
            configure: |b| b.default_ttl("/r", tower_kit_cache::TtlTier::Minute),
            response: &[("cache-control", "public")],
            response_status: 500,
            status: 500,
            advance: 10,
            cache_status: "tower-kit; hit; ttl=50",
            age: "10",
            ..case("RFC 9111 §5.2.2.9: a public 500 gets the default TTL")
        },
        Case {
            response: &[("cache-control", "must-understand, max-age=30")],
            response_status: 599,
            status: 599,
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=bypass; fwd-status=599; detail=hit-for-pass",
            origin_calls: 2,
            ..case("RFC 9111 §5.2.2.3: must-understand keeps an unregistered status out")
        },
        Case {
            response: &[("cache-control", "must-understand, no-store, max-age=30")],
            response_status: 404,
            status: 404,
            cache_status: "tower-kit; hit; ttl=30",
            age: "0",
            ..case("RFC 9111 §5.2.2.3: must-understand with a known status ignores no-store")
        },
        Case {
            configure: |b| {
                b.stale_while_revalidate(Duration::from_secs(60))
                    .stale_if_error(Duration::from_secs(60))
            },
            response: &[("cache-control", "max-age=10")],
            response_status: 500,
            advance: 15,
            later: Some((200, &[("cache-control", "max-age=10")], "fresh")),
            body: Some("fresh"),
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=stale; fwd-status=200",
            origin_calls: 2,
            ..case("RFC 9111 §4.2.4: a stale stored 500 is not served while revalidating")
        },
        Case {
            configure: |b| b.stale_if_error(Duration::from_secs(60)),
            response: &[("cache-control", "max-age=10")],
            response_status: 404,
            advance: 15,
            later: Some((503, &[], "down")),
            status: 404,
            x_cache: "STALE",
            cache_status: "tower-kit; fwd=stale; fwd-status=503; ttl=-5; detail=stale-if-error",
            age: "15",
            origin_calls: 2,
            ..case("RFC 9111 §4.2.4: a stale heuristically cacheable 404 may answer an error")
        },
        Case {
            response: &[("cache-control", "max-age=10, stale-if-error=60")],
            response_status: 502,
            advance: 15,
            later: Some((503, &[], "down")),
            status: 503,
            body: Some("down"),
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=stale; fwd-status=503; detail=no-freshness",
            origin_calls: 2,
            ..case("RFC 9111 §4.2.4: a stale stored 502 does not answer a failed refresh")
        },
        Case {
            response: &[("cache-control", "max-age=10")],
            response_status: 410,
            advance: 15,
            second: &[("cache-control", "max-stale")],
            status: 410,
            x_cache: "STALE",
            cache_status: "tower-kit; hit; ttl=-5; detail=max-stale",
            age: "15",
            ..case("RFC 9111 §4.2.4: a stale 410 may be served to max-stale")
        },
        Case {
            response: &[("cache-control", "max-age=10")],
            response_status: 503,
            advance: 15,
            second: &[("cache-control", "max-stale")],
            status: 200,
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=stale; fwd-status=200",
            later: Some((200, &[("cache-control", "max-age=10")], "payload")),
            origin_calls: 2,
            ..case("RFC 9111 §4.2.4: a stale stored 503 is not served to max-stale")
        },
        // ---- Informational responses (RFC 9110 §15.2) ----
        Case {
            response: &[("cache-control", "max-age=30")],
            response_status: 103,
            status: 103,
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=uri-miss; fwd-status=103; detail=informational",
            origin_calls: 2,
            ..case("RFC 9110 §15.2: a 1xx response is never stored")
        },
        // ---- Age (RFC 9111 §5.1) ----
        Case {
            response: &[("cache-control", "max-age=60"), ("age", "10, 40")],
            cache_status: "tower-kit; hit; ttl=50",
            age: "10",
            ..case("RFC 9111 §5.1: Age list uses the first member")
        },
        Case {
            response: &[
                ("cache-control", "max-age=60"),
                ("age", "10"),
                ("age", "40"),
            ],
            cache_status: "tower-kit; hit; ttl=50",
            age: "10",
            ..case("RFC 9111 §5.1: several Age field lines use the first")
        },
        Case {
            response: &[("cache-control", "max-age=60"), ("age", "-10")],
            cache_status: "tower-kit; hit; ttl=60",
            age: "0",
            ..case("RFC 9111 §5.1: a negative Age is ignored")
        },
        Case {
            response: &[("cache-control", "max-age=60"), ("age", "10.5")],
            cache_status: "tower-kit; hit; ttl=60",
            age: "0",
            ..case("RFC 9111 §5.1: a fractional Age is ignored")
        },
        Case {
            response: &[("cache-control", "max-age=60"), ("age", "ten, 40")],
            cache_status: "tower-kit; hit; ttl=60",
            age: "0",
            ..case("RFC 9111 §5.1: a non-numeric Age is ignored")
        },
        Case {
            response: &[
                ("cache-control", "max-age=60"),
                ("etag", "\"v1\""),
                ("age", "4294967296"),
            ],
            second: &[("cache-control", "max-stale")],
            x_cache: "STALE",
            cache_status: "tower-kit; hit; ttl=-2147483588; detail=max-stale",
            age: "2147483648",
            ..case("RFC 9111 §5.1: an Age of 2^31 or more counts as 2^31")
        },
        // ---- Targeted cache control (RFC 9213) ----
        Case {
            response: &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=60"),
            ],
            advance: 10,
            cache_status: "tower-kit; hit; ttl=50",
            age: "10",
            expect: &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=60"),
            ],
            ..case("RFC 9213 §2.1: CDN-Cache-Control replaces Cache-Control; both reach the client")
        },
        Case {
            response: &[
                ("date", "{date}"),
                ("expires", "{date+60}"),
                ("cdn-cache-control", "max-age=10"),
            ],
            advance: 20,
            later: Some((200, &[("cdn-cache-control", "max-age=10")], "payload")),
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=stale; fwd-status=200",
            origin_calls: 2,
            ..case("RFC 9213 §2.1: CDN-Cache-Control replaces Expires")
        },
        Case {
            response: &[
                ("cache-control", "public, max-age=60"),
                ("cdn-cache-control", "no-store"),
            ],
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=bypass; fwd-status=200; detail=hit-for-pass",
            expect: &[("cache-control", "public, max-age=60")],
            origin_calls: 2,
            ..case("RFC 9213 §2.1: CDN-Cache-Control no-store keeps a public response out")
        },
        Case {
            response: &[
                ("cache-control", "public, max-age=60"),
                ("cdn-cache-control", "private, max-age=60"),
            ],
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=bypass; fwd-status=200; detail=hit-for-pass",
            origin_calls: 2,
            ..case("RFC 9213 §2.1: CDN-Cache-Control private keeps a response out")
        },
        Case {
            response: &[
                ("cache-control", "max-age=30"),
                ("cdn-cache-control", "max-age=5, Private"),
            ],
            advance: 10,
            cache_status: "tower-kit; hit; ttl=20",
            age: "10",
            ..case("RFC 9213 §2.1: an invalid CDN-Cache-Control is ignored as a whole")
        },
        Case {
            response: &[
                ("cache-control", "max-age=30"),
                ("cdn-cache-control", "max-age=5"),
                ("cdn-cache-control", "no-store;"),
            ],
            advance: 10,
            cache_status: "tower-kit; hit; ttl=20",
            age: "10",
            ..case("RFC 9213 §2.1: an invalid field line spoils the whole CDN-Cache-Control")
        },
        Case {
            configure: |b| {
                b.targeted_cache_control([
                    http::HeaderName::from_static("acme-cache-control"),
                    http::HeaderName::from_static("cdn-cache-control"),
                ])
            },
            response: &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "no-store"),
                ("acme-cache-control", "max-age=60"),
            ],
            cache_status: "tower-kit; hit; ttl=60",
            age: "0",
            ..case("RFC 9213 §2.1: the first configured targeted field wins")
        },
        Case {
            configure: |b| {
                b.targeted_cache_control([
                    http::HeaderName::from_static("acme-cache-control"),
                    http::HeaderName::from_static("cdn-cache-control"),
                ])
            },
            response: &[
                ("cache-control", "no-store"),
                ("acme-cache-control", "max-age=60,"),
                ("cdn-cache-control", "max-age=30"),
            ],
            cache_status: "tower-kit; hit; ttl=30",
            age: "0",
            ..case("RFC 9213 §2.1: an invalid first field falls through to the next")
        },
        Case {
            configure: |b| {
                b.targeted_cache_control([http::HeaderName::from_static("acme-cache-control")])
            },
            response: &[
                ("cache-control", "max-age=30"),
                ("cdn-cache-control", "no-store"),
            ],
            cache_status: "tower-kit; hit; ttl=30",
            age: "0",
            ..case("RFC 9213 §2.1: a targeted field not configured is not obeyed")
        },
        Case {
            configure: |b| b.targeted_cache_control([]),
            response: &[
                ("cache-control", "max-age=30"),
                ("cdn-cache-control", "no-store"),
            ],
            cache_status: "tower-kit; hit; ttl=30",
            age: "0",
            ..case("RFC 9213 §2.1: an empty list turns targeted cache control off")
        },
        Case {
            response: &[
                ("cache-control", "max-age=10"),
                ("cdn-cache-control", "max-age=10, stale-while-revalidate=30"),
            ],
            advance: 15,
            x_cache: "STALE",
            cache_status: "tower-kit; fwd=stale; ttl=-5; detail=stale-while-revalidate",
            age: "15",
            origin_calls: 2,
            then: then_get("HIT", "tower-kit; hit; ttl=10", 2),
            ..case("RFC 9213 §2.1: CDN-Cache-Control stale-while-revalidate")
        },
        Case {
            response: &[
                ("cache-control", "max-age=10, stale-if-error=60"),
                ("cdn-cache-control", "max-age=10, must-revalidate"),
            ],
            advance: 20,
            later: Some((503, &[], "down")),
            status: 503,
            body: Some("down"),
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=stale; fwd-status=503; detail=no-freshness",
            origin_calls: 2,
            ..case("RFC 9213 §2.1: CDN-Cache-Control must-revalidate forbids stale-if-error")
        },
        Case {
            response: &[
                ("cache-control", "max-age=60"),
                ("cdn-cache-control", "no-cache"),
                ("etag", "\"v1\""),
            ],
            later: Some((
                304,
                &[("cdn-cache-control", "no-cache"), ("etag", "\"v1\"")],
                "",
            )),
            origin_saw: &[("if-none-match", "\"v1\"")],
            x_cache: "REVALIDATED",
            cache_status: "tower-kit; fwd=stale; fwd-status=304",
            age: "0",
            origin_calls: 2,
            ..case("RFC 9213 §2.1: CDN-Cache-Control no-cache: validated before each use")
        },
        Case {
            configure: |b| b.strip_targeted_cache_control(true),
            response: &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=60"),
            ],
            cache_status: "tower-kit; hit; ttl=60",
            age: "0",
            expect: &[("cdn-cache-control", ""), ("cache-control", "no-store")],
            ..case("RFC 9213 §2.1: strip_targeted_cache_control removes the field from hits")
        },
        Case {
            configure: |b| b.strip_targeted_cache_control(true),
            response: &[
                ("cache-control", "max-age=60"),
                ("cdn-cache-control", "no-store"),
            ],
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=bypass; fwd-status=200; detail=hit-for-pass",
            expect: &[("cdn-cache-control", ""), ("cache-control", "max-age=60")],
            origin_calls: 2,
            ..case("RFC 9213 §2.1: strip_targeted_cache_control removes the field from misses")
        },
        Case {
            configure: |b| b.strip_targeted_cache_control(true),
            response: &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=10"),
                ("etag", "\"v1\""),
            ],
            advance: 20,
            later: Some((304, &[("etag", "\"v1\"")], "")),
            x_cache: "REVALIDATED",
            cache_status: "tower-kit; fwd=stale; fwd-status=304",
            age: "0",
            expect: &[("cdn-cache-control", "")],
            origin_calls: 2,
            then: then_get("HIT", "tower-kit; hit; ttl=10", 2),
            ..case("RFC 9213 §2.1: a stripped field still decides after a 304")
        },
    ]);
    cases
}

#[tokio::test]
async fn rfc_table() {
    run_table(|b, _| b.build().unwrap()).await;
}

/// The same table on a store that always makes the cache wait (no answer without awaiting): the path a Redis or
/// tiered store takes.
#[tokio::test]
async fn rfc_table_on_a_store_that_waits() {
    run_table(|b, work| {
        b.store(work.count(YieldingStore::new(1 << 24)))
            .build()
            .unwrap()
    })
    .await;
}

#[tokio::test]
async fn conformance_suite_on_a_store_that_waits() {
    tower_kit_cache::store::conformance::run(YieldingStore::new).await;
}

/// Runs every case on a layer from `build` (called once per case: a fresh store each time, which it may wrap in
/// [`Work::count`] so that the table waits for the store's spawned writes to land).
async fn run_table<St: tower_kit_cache::Store>(
    build: impl Fn(CacheLayerBuilder<MokaStore>, &Work) -> tower_kit_cache::CacheLayer<St>,
) {
    for c in cases() {
        let work = Work::default();
        let clock = ManualWallClock::default();
        let now = clock_now(&clock);
        // `{date}`, `{date+N}`, `{date-N}`: the clock's time at the start, in seconds.
        let subst = move |v: &str| -> String {
            let Some(rest) = v.strip_prefix("{date") else {
                return v.to_owned();
            };
            let offset = rest.trim_end_matches('}');
            let t = if let Some(n) = offset.strip_prefix('+') {
                now + Duration::from_secs(n.parse().unwrap())
            } else if let Some(n) = offset.strip_prefix('-') {
                now - Duration::from_secs(n.parse().unwrap())
            } else {
                now
            };
            httpdate::fmt_http_date(t)
        };
        let pairs = move |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(n, v)| (n.to_string(), subst(v)))
                .collect()
        };
        let first_answer = Answer {
            status: c.response_status,
            headers: pairs(c.response),
            body: "payload",
            delay: Duration::ZERO,
        };
        let later_answer = c.later.map(|(status, headers, body)| Answer {
            status,
            headers: pairs(headers),
            body,
            delay: Duration::ZERO,
        });
        let calls = Arc::new(AtomicUsize::new(0));
        let (origin_clock, delay) = (clock.clone(), c.origin_delay);
        let origin = Origin::new(move |_| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            if n == 0 {
                origin_clock.advance(Duration::from_secs(delay));
                return first_answer.clone();
            }
            later_answer.clone().unwrap_or_else(|| first_answer.clone())
        });
        let layer = build((c.configure)(builder(&clock)), &work);
        let svc = layer.layer(work.origin(origin.service()));
        // Clones of the origin service that the layer keeps; a background revalidation holds one more.
        let at_rest = work.origins();

        let (first, body) = send(&svc, get_with("/r", c.first)).await;
        assert_eq!(all(&first, "x-cache"), "MISS", "{}: first", c.name);
        assert_eq!(body, "payload", "{}", c.name);

        // A store that waits finishes the write on a spawned task: let it land.
        settle(&work, at_rest).await;
        clock.advance(Duration::from_secs(c.advance));
        let second_headers: Vec<(String, String)> = pairs(c.second);
        let second_refs: Vec<(&str, &str)> = second_headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let mut req = get_with(c.second_path, &second_refs);
        *req.method_mut() = c.second_method.parse().unwrap();
        let (second, body) = send(&svc, req).await;
        assert_eq!(second.status.as_u16(), c.status, "{}: status", c.name);
        assert_eq!(all(&second, "x-cache"), c.x_cache, "{}: X-Cache", c.name);
        assert_eq!(
            all(&second, "cache-status"),
            c.cache_status,
            "{}: Cache-Status",
            c.name
        );
        assert_eq!(all(&second, "age"), c.age, "{}: Age", c.name);
        for (name, want) in c.expect {
            assert_eq!(all(&second, name), subst(want), "{}: {name}", c.name);
        }
        let want_body = c.body.unwrap_or(
            if c.second_method == "HEAD" || c.status == 304 || c.status == 504 {
                ""
            } else {
                "payload"
            },
        );
        assert_eq!(body, want_body, "{}: body", c.name);
        // Background revalidation runs on its own task: let it finish.
        settle(&work, at_rest).await;
        assert_eq!(origin.calls(), c.origin_calls, "{}: origin calls", c.name);
        if !c.origin_saw.is_empty() {
            let seen = origin.seen.lock().unwrap().last().cloned().unwrap();
            for (name, want) in c.origin_saw {
                let got: Vec<_> = seen
                    .get_all(*name)
                    .iter()
                    .map(|v| v.to_str().unwrap().to_owned())
                    .collect();
                assert_eq!(
                    got.join(" | "),
                    subst(want),
                    "{}: origin saw {name}",
                    c.name
                );
            }
        }
        if let Some(then) = &c.then {
            let mut req = get_with("/r", then.headers);
            *req.method_mut() = then.method.parse().unwrap();
            let (third, _) = send(&svc, req).await;
            assert_eq!(
                all(&third, "x-cache"),
                then.x_cache,
                "{}: then X-Cache",
                c.name
            );
            assert_eq!(
                all(&third, "cache-status"),
                then.cache_status,
                "{}: then Cache-Status",
                c.name
            );
            settle(&work, at_rest).await;
            assert_eq!(
                origin.calls(),
                then.origin_calls,
                "{}: then origin calls",
                c.name
            );
        }
    }
}

/// Counts the cache's work that outlives a request: store calls in flight (a write the cache spawned) and clones of
/// the origin service (a background revalidation holds one until it has stored what it got).
#[derive(Clone, Default)]
struct Work(Arc<WorkCounts>);

#[derive(Default)]
struct WorkCounts {
    /// Store calls started (so that two quiet looks with a call in between are not taken for one quiet spell).
    started: AtomicUsize,
    in_flight: AtomicUsize,
    origins: AtomicUsize,
}

impl Work {
    /// `store`, with its calls counted.
    fn count<St>(&self, store: St) -> CountedStore<St> {
        CountedStore {
            inner: store,
            work: self.clone(),
        }
    }

    /// `origin`, with its live clones counted.
    fn origin<S>(&self, origin: S) -> CountedOrigin<S> {
        CountedOrigin {
            inner: origin,
            _live: Live::new(self),
        }
    }

    fn origins(&self) -> usize {
        self.0.origins.load(Ordering::SeqCst)
    }

    /// One store call, until the guard drops.
    fn call(&self) -> InFlight {
        self.0.started.fetch_add(1, Ordering::SeqCst);
        self.0.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }
}

struct InFlight(Work);

impl Drop for InFlight {
    fn drop(&mut self) {
        (self.0).0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts itself among the live origin clones.
struct Live(Work);

impl Live {
    fn new(work: &Work) -> Self {
        work.0.origins.fetch_add(1, Ordering::SeqCst);
        Self(work.clone())
    }
}

impl Clone for Live {
    fn clone(&self) -> Self {
        Self::new(&self.0)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        (self.0).0.origins.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Clone)]
struct CountedOrigin<S> {
    inner: S,
    _live: Live,
}

impl<S: tower::Service<R>, R> tower::Service<R> for CountedOrigin<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> S::Future {
        self.inner.call(req)
    }
}

/// A store whose calls are counted in [`Work`]; it answers exactly as the store it wraps.
struct CountedStore<St> {
    inner: St,
    work: Work,
}

impl<St> CountedStore<St> {
    /// `fut`, counted as in flight from now until it completes or is dropped.
    fn counted<F: Future + Send>(&self, fut: F) -> impl Future<Output = F::Output> + Send {
        let call = self.work.call();
        async move {
            let _call = call;
            fut.await
        }
    }
}

impl<St: Store> Store for CountedStore<St> {
    fn get(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<StoredValue>, StoreError>> + Send {
        self.counted(self.inner.get(key))
    }

    fn get_now(&self, key: &str) -> Option<Result<Option<StoredValue>, StoreError>> {
        self.inner.get_now(key)
    }

    fn put(
        &self,
        key: &str,
        value: StoredValue,
        ttl: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.counted(self.inner.put(key, value, ttl))
    }

    fn remove(&self, key: &str) -> impl Future<Output = Result<bool, StoreError>> + Send {
        self.counted(self.inner.remove(key))
    }

    fn remove_prefix(&self, prefix: &str) -> impl Future<Output = Result<u64, StoreError>> + Send {
        self.counted(self.inner.remove_prefix(prefix))
    }

    fn remove_tag(&self, tag: &str) -> impl Future<Output = Result<u64, StoreError>> + Send {
        self.counted(self.inner.remove_tag(tag))
    }

    fn clear(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.counted(self.inner.clear())
    }

    fn usage(&self) -> impl Future<Output = Result<StoreUsage, StoreError>> + Send {
        self.counted(self.inner.usage())
    }

    fn lease(
        &self,
        key: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<Lease, StoreError>> + Send {
        let call = self.work.call();
        let fut = self.inner.lease(key, ttl);
        let work = self.work.clone();
        async move {
            let _call = call;
            match fut.await? {
                // Held lease: counted as in flight until the cache gives it back.
                Lease::Acquired(release) => {
                    let held = work.call();
                    Ok(Lease::Acquired(LeaseRelease::new(move || {
                        release.release();
                        drop(held);
                    })))
                }
                other => Ok(other),
            }
        }
    }
}

/// Waits until the work counted in `work` is done: no store call in flight and no origin clone beyond the
/// `at_rest` ones the layer keeps, seen twice in a row with no store call started in between (a task may end one
/// call and start the next in the same poll). Fails after 10 s.
async fn settle(work: &Work, at_rest: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut quiet_at: Option<usize> = None;
    loop {
        let started = work.0.started.load(Ordering::SeqCst);
        let quiet = work.0.in_flight.load(Ordering::SeqCst) == 0 && work.origins() == at_rest;
        match (quiet, quiet_at) {
            (true, Some(at)) if at == started => return,
            (true, _) => quiet_at = Some(started),
            (false, _) => quiet_at = None,
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cache's background work (store writes, revalidation) did not finish within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[cfg(feature = "redis")]
use tower_kit_test_support as redis_server;

/// Where the Redis-backed runs keep their entries: one server or a cluster started by the test, and a fresh key
/// prefix for every case, so cases never see one another's entries.
#[cfg(feature = "redis")]
struct PerCase {
    single: Option<String>,
    seeds: Vec<String>,
    cases: AtomicUsize,
}

#[cfg(feature = "redis")]
impl PerCase {
    fn server(server: &redis_server::RedisServer) -> Self {
        Self {
            single: Some(server.url()),
            seeds: Vec::new(),
            cases: AtomicUsize::new(0),
        }
    }

    fn cluster(cluster: &redis_server::RedisCluster) -> Self {
        Self {
            single: None,
            seeds: cluster.urls(),
            cases: AtomicUsize::new(0),
        }
    }

    /// A Redis store under a prefix no earlier case used.
    fn redis(&self, tag: &str) -> tower_kit_cache::RedisStore {
        let prefix = format!("{tag}{}:", self.cases.fetch_add(1, Ordering::Relaxed));
        let builder = match &self.single {
            Some(url) => tower_kit_cache::RedisStore::builder(url.as_str()),
            None => tower_kit_cache::RedisStore::cluster_builder(self.seeds.iter().cloned()),
        };
        builder
            .prefix(prefix)
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap()
    }

    /// A fresh moka L1 in front of [`redis`](Self::redis).
    fn tiered(&self, tag: &str) -> tower_kit_cache::TieredStore {
        tower_kit_cache::TieredStore::new(MokaStore::new(1 << 24), self.redis(tag))
    }
}

/// The table on the Redis store (one `redis-server` for the test, a fresh key prefix per case).
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc_table_on_redis() {
    let server = redis_server::RedisServer::start();
    let stores = PerCase::server(&server);
    run_table(|b, work| b.store(work.count(stores.redis("rfc"))).build().unwrap()).await;
}

/// The table on the tiered store (moka L1 in front of Redis L2), a fresh prefix and L1 per case.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc_table_on_tiered() {
    let server = redis_server::RedisServer::start();
    let stores = PerCase::server(&server);
    run_table(|b, work| {
        b.store(work.count(stores.tiered("tiered")))
            .build()
            .unwrap()
    })
    .await;
}

/// The table on the Redis store over a local Redis Cluster (three primaries), a fresh prefix per case.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc_table_on_redis_cluster() {
    let cluster = redis_server::RedisCluster::start(3);
    let stores = PerCase::cluster(&cluster);
    run_table(|b, work| b.store(work.count(stores.redis("rfcc"))).build().unwrap()).await;
}

/// The table on the tiered store with its L2 on a local Redis Cluster.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc_table_on_tiered_cluster() {
    let cluster = redis_server::RedisCluster::start(3);
    let stores = PerCase::cluster(&cluster);
    run_table(|b, work| {
        b.store(work.count(stores.tiered("tieredc")))
            .build()
            .unwrap()
    })
    .await;
}

fn clock_now(clock: &ManualWallClock) -> std::time::SystemTime {
    use tower_kit_cache::WallClock;
    clock.now()
}

#[tokio::test]
async fn strip_set_cookie_stores_without_it_and_first_client_keeps_it() {
    let clock = ManualWallClock::default();
    let origin = Origin::fixed(Answer::ok(
        &[("cache-control", "max-age=30"), ("set-cookie", "id=1")],
        "x",
    ));
    let svc = builder(&clock)
        .strip_set_cookie(true)
        .build()
        .unwrap()
        .layer(origin.service());
    let (first, _) = send(&svc, get("/")).await;
    assert_eq!(all(&first, "set-cookie"), "id=1");
    let (second, _) = send(&svc, get("/")).await;
    assert_eq!(all(&second, "x-cache"), "HIT");
    assert_eq!(all(&second, "set-cookie"), "");
    assert_eq!(origin.calls(), 1);
}

#[tokio::test]
async fn stored_headers_are_end_to_end_only_and_repeated_values_survive() {
    let clock = ManualWallClock::default();
    let origin = Origin::fixed(Answer::ok(
        &[
            ("cache-control", "max-age=30"),
            ("connection", "x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("x-multi", "a"),
            ("x-multi", "b"),
            ("cache-status", "origin-cache; fwd=uri-miss"),
        ],
        "x",
    ));
    let svc = builder(&clock).build().unwrap().layer(origin.service());
    send(&svc, get("/")).await;
    let (hit, _) = send(&svc, get("/")).await;
    assert_eq!(all(&hit, "x-hop"), "");
    assert_eq!(all(&hit, "keep-alive"), "");
    assert_eq!(all(&hit, "connection"), "");
    assert_eq!(all(&hit, "x-multi"), "a | b");
    assert_eq!(
        all(&hit, "cache-status"),
        "origin-cache; fwd=uri-miss | tower-kit; hit; ttl=30"
    );
}

#[tokio::test]
async fn heuristic_freshness_only_when_configured() {
    let clock = ManualWallClock::default();
    let now = clock_now(&clock);
    let lm = httpdate::fmt_http_date(now - Duration::from_secs(1000));
    let date = httpdate::fmt_http_date(now);
    let answer = Answer {
        status: 200,
        headers: vec![("last-modified".into(), lm), ("date".into(), date)],
        body: "x",
        delay: Duration::ZERO,
    };
    let origin = Origin::fixed(answer);
    let svc = builder(&clock)
        .heuristic_freshness(0.1)
        .build()
        .unwrap()
        .layer(origin.service());
    send(&svc, get("/")).await;
    clock.advance(Duration::from_secs(99));
    let (hit, _) = send(&svc, get("/")).await;
    assert_eq!(all(&hit, "cache-status"), "tower-kit; hit; ttl=1");
    clock.advance(Duration::from_secs(1));
    let (miss, _) = send(&svc, get("/")).await;
    assert_eq!(all(&miss, "x-cache"), "MISS");
}
