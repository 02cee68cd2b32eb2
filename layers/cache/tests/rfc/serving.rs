//! RFC table cases for the serving rules: ranges (RFC 9110 §14, RFC 9111 §3.3–3.4), a disconnected origin
//! (RFC 9111 §4.2.4) and HEAD (RFC 9111 §4.3.5). They run in the same table, against every store, as the cases in
//! `rfc.rs`.
//!
//! What one origin answer per case cannot express (an origin that answers `206`, several origin answers, an origin
//! that cannot be reached) is in [`scripts`]: a request sequence per rule, each request with the origin's answer
//! if it is asked, run against the same stores.

use super::{Case, Work, case, settle, then_get};
use crate::common::{all, builder, get_with};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};
use tower::{Layer, Service, ServiceExt};
use tower_kit_cache::{CacheLayer, CacheLayerBuilder, ManualWallClock, MokaStore, Store};

pub(super) fn cases() -> Vec<Case> {
    vec![
        // ---- Ranges from a stored complete 200 (RFC 9110 §14) ----
        Case {
            response: &[("cache-control", "max-age=30")],
            second: &[("range", "bytes=0-2")],
            status: 206,
            body: Some("pay"),
            expect: &[
                ("content-range", "bytes 0-2/7"),
                ("content-length", "3"),
                ("accept-ranges", "bytes"),
            ],
            cache_status: "tower-kit; hit; ttl=30",
            age: "0",
            ..case(
                "RFC 9110 §14.2: a stored 200 answers a Range request with 206 and Content-Range",
            )
        },
        Case {
            response: &[("cache-control", "max-age=30")],
            second: &[("range", "bytes=-4")],
            status: 206,
            body: Some("load"),
            expect: &[("content-range", "bytes 3-6/7")],
            cache_status: "tower-kit; hit; ttl=30",
            age: "0",
            ..case("RFC 9110 §14.1.1: a suffix range is the last bytes")
        },
        Case {
            response: &[("cache-control", "max-age=30")],
            second: &[("range", "bytes=5-")],
            status: 206,
            body: Some("ad"),
            expect: &[("content-range", "bytes 5-6/7")],
            cache_status: "tower-kit; hit; ttl=30",
            age: "0",
            ..case("RFC 9110 §14.1.1: an open range runs to the end")
        },
        Case {
            response: &[("cache-control", "max-age=30")],
            second: &[("range", "bytes=3-99999999999999999999999")],
            status: 206,
            body: Some("load"),
            expect: &[("content-range", "bytes 3-6/7")],
            cache_status: "tower-kit; hit; ttl=30",
            age: "0",
            ..case("RFC 9110 §14.1.1: a last position past the end (even past 2^64) is the end")
        },
        Case {
            response: &[("cache-control", "max-age=30")],
            second: &[("range", "bytes=0-1,3-4")],
            expect: &[("content-range", ""), ("accept-ranges", "bytes")],
            cache_status: "tower-kit; hit; ttl=30",
            age: "0",
            ..case("RFC 9110 §14.2: several ranges are answered with the whole 200")
        },
        Case {
            response: &[("cache-control", "max-age=30")],
            second: &[("range", "items=0-1")],
            expect: &[("content-range", "")],
            cache_status: "tower-kit; hit; ttl=30",
            age: "0",
            ..case("RFC 9110 §14.2: a range unit other than bytes is ignored")
        },
        Case {
            response: &[("cache-control", "max-age=30")],
            second: &[("range", "bytes=4-2")],
            expect: &[("content-range", "")],
            cache_status: "tower-kit; hit; ttl=30",
            age: "0",
            ..case("RFC 9110 §14.1.1: an invalid range (last before first) is ignored")
        },
        Case {
            response: &[("cache-control", "max-age=30")],
            second: &[("range", "bytes=7-")],
            status: 416,
            body: Some(""),
            expect: &[("content-range", "bytes */7"), ("content-length", "0")],
            cache_status: "tower-kit; hit; ttl=30",
            age: "0",
            ..case(
                "RFC 9110 §15.5.17: an unsatisfiable range gets 416 with Content-Range bytes */length",
            )
        },
        Case {
            response: &[("cache-control", "max-age=30")],
            second_method: "HEAD",
            second: &[("range", "bytes=0-2")],
            expect: &[("content-range", ""), ("accept-ranges", "bytes")],
            cache_status: "tower-kit; hit; ttl=30",
            age: "0",
            ..case("RFC 9110 §14.2: Range is ignored on HEAD")
        },
        Case {
            response: &[("cache-control", "max-age=30")],
            expect: &[("accept-ranges", "bytes")],
            cache_status: "tower-kit; hit; ttl=30",
            age: "0",
            ..case("RFC 9110 §14.3: a stored 200 says Accept-Ranges: bytes")
        },
        Case {
            configure: |b| b.ranges(false),
            response: &[("cache-control", "max-age=30")],
            second: &[("range", "bytes=0-2")],
            expect: &[("content-range", ""), ("accept-ranges", "")],
            cache_status: "tower-kit; hit; ttl=30",
            age: "0",
            ..case("ranges(false): Range is ignored and the stored 200 is sent whole")
        },
        Case {
            response: &[("cache-control", "max-age=30"), ("etag", "\"v1\"")],
            second: &[("range", "bytes=0-2"), ("if-range", "\"v1\"")],
            status: 206,
            body: Some("pay"),
            cache_status: "tower-kit; hit; ttl=30",
            age: "0",
            ..case("RFC 9110 §13.1.5: If-Range with the stored strong ETag gets the range")
        },
        Case {
            response: &[("cache-control", "max-age=30"), ("etag", "\"v1\"")],
            second: &[("range", "bytes=0-2"), ("if-range", "\"v0\"")],
            expect: &[("content-range", "")],
            cache_status: "tower-kit; hit; ttl=30",
            age: "0",
            ..case("RFC 9110 §13.1.5: If-Range with another ETag gets the whole 200")
        },
        Case {
            response: &[("cache-control", "max-age=30"), ("etag", "W/\"v1\"")],
            second: &[("range", "bytes=0-2"), ("if-range", "W/\"v1\"")],
            expect: &[("content-range", "")],
            cache_status: "tower-kit; hit; ttl=30",
            age: "0",
            ..case("RFC 9110 §13.1.5: If-Range with a weak ETag gets the whole 200")
        },
        Case {
            response: &[
                ("cache-control", "max-age=30"),
                ("date", "{date}"),
                ("last-modified", "{date-60}"),
            ],
            second: &[("range", "bytes=0-2"), ("if-range", "{date-60}")],
            status: 206,
            body: Some("pay"),
            cache_status: "tower-kit; hit; ttl=30",
            age: "0",
            ..case(
                "RFC 9110 §13.1.5: If-Range with a strong Last-Modified (before Date) gets the range",
            )
        },
        Case {
            response: &[
                ("cache-control", "max-age=30"),
                ("date", "{date}"),
                ("last-modified", "{date}"),
            ],
            second: &[("range", "bytes=0-2"), ("if-range", "{date}")],
            expect: &[("content-range", "")],
            cache_status: "tower-kit; hit; ttl=30",
            age: "0",
            ..case(
                "RFC 9110 §8.8.2.2: If-Range with a weak Last-Modified (equal to Date) gets the whole 200",
            )
        },
        Case {
            response: &[("cache-control", "max-age=30"), ("etag", "\"v1\"")],
            second: &[("range", "bytes=0-2"), ("if-none-match", "\"v1\"")],
            status: 304,
            expect: &[("content-range", "")],
            cache_status: "tower-kit; hit; ttl=30",
            age: "0",
            ..case("RFC 9110 §13.2.2: If-None-Match is evaluated before Range")
        },
        Case {
            response: &[("cache-control", "max-age=10"), ("etag", "\"v1\"")],
            advance: 20,
            second: &[("range", "bytes=1-3")],
            later: Some((
                304,
                &[("cache-control", "max-age=10"), ("etag", "\"v1\"")],
                "",
            )),
            origin_saw: &[("range", "bytes=1-3"), ("if-none-match", "\"v1\"")],
            status: 206,
            body: Some("ayl"),
            expect: &[("content-range", "bytes 1-3/7")],
            x_cache: "REVALIDATED",
            cache_status: "tower-kit; fwd=stale; fwd-status=304",
            age: "0",
            origin_calls: 2,
            ..case(
                "RFC 9111 §4.3.4: a stale stored 200 revalidated by a range request answers the range",
            )
        },
        Case {
            response: &[
                ("cache-control", "max-age=10, stale-while-revalidate=30"),
                ("etag", "\"v1\""),
            ],
            advance: 15,
            second: &[("range", "bytes=0-2"), ("if-range", "\"v1\"")],
            later: Some((
                304,
                &[
                    ("cache-control", "max-age=10, stale-while-revalidate=30"),
                    ("etag", "\"v1\""),
                ],
                "",
            )),
            origin_saw: &[("range", ""), ("if-range", ""), ("if-none-match", "\"v1\"")],
            status: 206,
            body: Some("pay"),
            x_cache: "STALE",
            cache_status: "tower-kit; fwd=stale; ttl=-5; detail=stale-while-revalidate",
            age: "15",
            origin_calls: 2,
            then: then_get("HIT", "tower-kit; hit; ttl=10", 2),
            ..case(
                "RFC 5861 §3: a range served stale; the whole stored response is revalidated in the background",
            )
        },
        // ---- HEAD (RFC 9111 §4.3.5) ----
        Case {
            response: &[("cache-control", "max-age=30"), ("etag", "\"v1\"")],
            second_method: "HEAD",
            second: &[("cache-control", "no-cache")],
            later: Some((
                200,
                &[("cache-control", "max-age=100"), ("etag", "\"v1\"")],
                "",
            )),
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=request; fwd-status=200",
            origin_calls: 2,
            then: then_get("HIT", "tower-kit; hit; ttl=100", 2),
            ..case(
                "RFC 9111 §4.3.5: a HEAD 200 with the same ETag updates the stored GET's freshness",
            )
        },
        Case {
            response: &[("cache-control", "max-age=30"), ("etag", "\"v1\"")],
            second_method: "HEAD",
            second: &[("cache-control", "no-cache")],
            later: Some((
                200,
                &[
                    ("cache-control", "max-age=100"),
                    ("etag", "\"v1\""),
                    ("content-length", "99"),
                ],
                "",
            )),
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=request; fwd-status=200",
            origin_calls: 2,
            then: then_get("MISS", "tower-kit; fwd=stale; fwd-status=200", 3),
            ..case(
                "RFC 9111 §4.3.5: a HEAD 200 with another Content-Length marks the stored GET stale",
            )
        },
        Case {
            response: &[("cache-control", "max-age=30"), ("etag", "\"v1\"")],
            second_method: "HEAD",
            second: &[("cache-control", "no-cache")],
            later: Some((404, &[("etag", "\"v2\"")], "")),
            status: 404,
            x_cache: "MISS",
            cache_status: "tower-kit; fwd=request; fwd-status=404",
            origin_calls: 2,
            then: then_get("HIT", "tower-kit; hit; ttl=30", 2),
            ..case("RFC 9111 §4.3.5: only a 200 to HEAD updates or invalidates the stored GET")
        },
    ]
}

type Headers = &'static [(&'static str, &'static str)];

/// What the origin does when a step asks it.
#[derive(Clone, Copy)]
enum Reply {
    /// The step is not expected to reach the origin.
    Unasked,
    Answer(u16, Headers, &'static str),
    /// The inner service fails: the origin could not be reached.
    Unreachable,
}

/// One request of a script and what it must get.
struct Step {
    /// Seconds the clock moves before the request.
    advance: u64,
    method: &'static str,
    headers: Headers,
    reply: Reply,
    /// Status of the response; 0 when the inner service's error must come through.
    status: u16,
    body: &'static str,
    /// Headers of the response (every field line joined with ` | `; "" for absent).
    expect: Headers,
    cache_status: &'static str,
    x_cache: &'static str,
    /// Origin calls so far.
    origin_calls: usize,
}

/// A range request the origin answers with a `206` of `headers` and `body`; `fwd` is `uri-miss` or `partial`.
fn origin_part(
    range: &'static str,
    headers: Headers,
    body: &'static str,
    fwd: &'static str,
    origin_calls: usize,
) -> Step {
    let cache_status = if fwd == "uri-miss" {
        "tower-kit; fwd=uri-miss; fwd-status=206"
    } else {
        "tower-kit; fwd=partial; fwd-status=206"
    };
    // Test data that lives as long as the test run.
    let range: Headers = Box::leak(Box::new([("range", range)]));
    Step {
        status: 206,
        body,
        x_cache: "MISS",
        cache_status,
        origin_calls,
        ..step(range, Reply::Answer(206, headers, body))
    }
}

/// A `GET /r` with `headers`; the origin gives `reply` if asked.
const fn step(headers: Headers, reply: Reply) -> Step {
    Step {
        advance: 0,
        method: "GET",
        headers,
        reply,
        status: 200,
        body: "",
        expect: &[],
        cache_status: "",
        x_cache: "",
        origin_calls: 0,
    }
}

struct Script {
    name: &'static str,
    configure: fn(CacheLayerBuilder<MokaStore>) -> CacheLayerBuilder<MokaStore>,
    steps: Vec<Step>,
}

const PART_0_4: Headers = &[
    ("cache-control", "max-age=60"),
    ("etag", "\"v1\""),
    ("content-range", "bytes 0-4/10"),
    ("content-length", "5"),
];
const PART_3_7: Headers = &[
    ("cache-control", "max-age=60"),
    ("etag", "\"v1\""),
    ("content-range", "bytes 3-7/10"),
    ("content-length", "5"),
];
const PART_5_9: Headers = &[
    ("cache-control", "max-age=60"),
    ("etag", "\"v1\""),
    ("content-range", "bytes 5-9/10"),
    ("content-length", "5"),
    ("x-from", "second part"),
];
const WHOLE: Headers = &[("cache-control", "max-age=60"), ("etag", "\"v1\"")];

/// A stored `GET /r` of `headers` (max-age 10 or as given), then a request 20 s later whose origin cannot be
/// reached.
fn disconnected(
    name: &'static str,
    configure: fn(CacheLayerBuilder<MokaStore>) -> CacheLayerBuilder<MokaStore>,
    headers: Headers,
    second: Headers,
    then: Step,
) -> Script {
    Script {
        name,
        configure,
        steps: vec![
            Step {
                body: "payload",
                x_cache: "MISS",
                origin_calls: 1,
                ..step(&[], Reply::Answer(200, headers, "payload"))
            },
            Step {
                advance: 20,
                ..Step {
                    headers: second,
                    ..then
                }
            },
        ],
    }
}

fn scripts() -> Vec<Script> {
    vec![
        Script {
            name: "RFC 9111 §3.3: a 206 from the origin is stored and answers ranges wholly inside it",
            configure: |b| b,
            steps: vec![
                Step {
                    status: 206,
                    body: "01234",
                    expect: &[("content-range", "bytes 0-4/10")],
                    x_cache: "MISS",
                    cache_status: "tower-kit; fwd=uri-miss; fwd-status=206",
                    origin_calls: 1,
                    ..step(
                        &[("range", "bytes=0-4")],
                        Reply::Answer(206, PART_0_4, "01234"),
                    )
                },
                Step {
                    status: 206,
                    body: "123",
                    expect: &[("content-range", "bytes 1-3/10"), ("content-length", "3")],
                    x_cache: "HIT",
                    cache_status: "tower-kit; hit; ttl=60",
                    origin_calls: 1,
                    ..step(&[("range", "bytes=1-3")], Reply::Unasked)
                },
                Step {
                    status: 416,
                    expect: &[("content-range", "bytes */10")],
                    x_cache: "HIT",
                    cache_status: "tower-kit; hit; ttl=60",
                    origin_calls: 1,
                    ..step(&[("range", "bytes=10-")], Reply::Unasked)
                },
                // Not wholly inside the stored part: to the origin (RFC 9211 `fwd=partial`).
                origin_part("bytes=3-7", PART_3_7, "34567", "partial", 2),
                // The two parts were combined (same strong ETag, overlapping): 0-7 is stored.
                Step {
                    status: 206,
                    body: "01234567",
                    expect: &[("content-range", "bytes 0-7/10")],
                    x_cache: "HIT",
                    cache_status: "tower-kit; hit; ttl=60",
                    origin_calls: 2,
                    ..step(&[("range", "bytes=0-7")], Reply::Unasked)
                },
                // A request for the whole representation is not answered from a part.
                Step {
                    body: "0123456789",
                    x_cache: "MISS",
                    cache_status: "tower-kit; fwd=partial; fwd-status=200",
                    origin_calls: 3,
                    ..step(&[], Reply::Answer(200, WHOLE, "0123456789"))
                },
                Step {
                    status: 206,
                    body: "89",
                    expect: &[
                        ("content-range", "bytes 8-9/10"),
                        ("accept-ranges", "bytes"),
                    ],
                    x_cache: "HIT",
                    cache_status: "tower-kit; hit; ttl=60",
                    origin_calls: 3,
                    ..step(&[("range", "bytes=8-")], Reply::Unasked)
                },
            ],
        },
        Script {
            name: "RFC 9111 §3.4: parts combined into the whole representation are stored as a 200 with the new part's headers",
            configure: |b| b,
            steps: vec![
                origin_part("bytes=0-4", PART_0_4, "01234", "uri-miss", 1),
                origin_part("bytes=5-9", PART_5_9, "56789", "partial", 2),
                Step {
                    body: "0123456789",
                    expect: &[
                        ("content-range", ""),
                        ("content-length", "10"),
                        ("x-from", "second part"),
                        ("accept-ranges", "bytes"),
                    ],
                    x_cache: "HIT",
                    cache_status: "tower-kit; hit; ttl=60",
                    origin_calls: 2,
                    ..step(&[], Reply::Unasked)
                },
            ],
        },
        Script {
            name: "RFC 9111 §3.4: a part with another strong ETag replaces the stored part",
            configure: |b| b,
            steps: vec![
                origin_part("bytes=0-4", PART_0_4, "01234", "uri-miss", 1),
                Step {
                    status: 206,
                    body: "abcde",
                    x_cache: "MISS",
                    cache_status: "tower-kit; fwd=partial; fwd-status=206",
                    origin_calls: 2,
                    ..step(
                        &[("range", "bytes=5-9")],
                        Reply::Answer(
                            206,
                            &[
                                ("cache-control", "max-age=60"),
                                ("etag", "\"v2\""),
                                ("content-range", "bytes 5-9/10"),
                            ],
                            "abcde",
                        ),
                    )
                },
                Step {
                    status: 206,
                    body: "cd",
                    expect: &[("etag", "\"v2\"")],
                    x_cache: "HIT",
                    cache_status: "tower-kit; hit; ttl=60",
                    origin_calls: 2,
                    ..step(&[("range", "bytes=7-8")], Reply::Unasked)
                },
                origin_part("bytes=0-4", PART_0_4, "01234", "partial", 3),
            ],
        },
        Script {
            name: "RFC 9111 §3.4: a 206 with a stale stored 200's strong ETag refreshes it and keeps it whole",
            configure: |b| b,
            steps: vec![
                Step {
                    body: "0123456789",
                    x_cache: "MISS",
                    origin_calls: 1,
                    ..step(
                        &[],
                        Reply::Answer(
                            200,
                            &[("cache-control", "max-age=10"), ("etag", "\"v1\"")],
                            "0123456789",
                        ),
                    )
                },
                // Stale: validated with the range; the origin sends the part instead of a 304.
                Step {
                    advance: 20,
                    status: 206,
                    body: "23",
                    x_cache: "MISS",
                    cache_status: "tower-kit; fwd=stale; fwd-status=206",
                    origin_calls: 2,
                    ..step(
                        &[("range", "bytes=2-3")],
                        Reply::Answer(
                            206,
                            &[
                                ("cache-control", "max-age=60"),
                                ("etag", "\"v1\""),
                                ("content-range", "bytes 2-3/10"),
                                ("x-from", "the part"),
                            ],
                            "23",
                        ),
                    )
                },
                Step {
                    body: "0123456789",
                    expect: &[("x-from", "the part"), ("content-length", "10")],
                    x_cache: "HIT",
                    cache_status: "tower-kit; hit; ttl=60",
                    origin_calls: 2,
                    ..step(&[], Reply::Unasked)
                },
            ],
        },
        Script {
            name: "RFC 9110 §14.2: a 206 is passed on but not stored when ranges are off",
            configure: |b| b.ranges(false),
            steps: vec![
                Step {
                    status: 206,
                    body: "01234",
                    x_cache: "MISS",
                    cache_status: "tower-kit; fwd=uri-miss; fwd-status=206; detail=status",
                    origin_calls: 1,
                    ..step(
                        &[("range", "bytes=0-4")],
                        Reply::Answer(206, PART_0_4, "01234"),
                    )
                },
                // No hit-for-pass from a range request's part: the next GET is stored.
                Step {
                    body: "0123456789",
                    x_cache: "MISS",
                    cache_status: "tower-kit; fwd=uri-miss; fwd-status=200",
                    origin_calls: 2,
                    ..step(&[], Reply::Answer(200, WHOLE, "0123456789"))
                },
                Step {
                    body: "0123456789",
                    x_cache: "HIT",
                    cache_status: "tower-kit; hit; ttl=60",
                    origin_calls: 2,
                    ..step(&[("range", "bytes=0-4")], Reply::Unasked)
                },
            ],
        },
        // ---- A disconnected origin (RFC 9111 §4.2.4) ----
        disconnected(
            "RFC 9111 §4.2.4: a stale response answers when the origin cannot be reached",
            |b| b,
            &[("cache-control", "max-age=10")],
            &[],
            Step {
                body: "payload",
                x_cache: "STALE",
                cache_status: "tower-kit; fwd=stale; ttl=-10; detail=disconnected",
                origin_calls: 2,
                ..step(&[], Reply::Unreachable)
            },
        ),
        disconnected(
            "RFC 9111 §4.2.4: stale-if-error still names itself when it covers a disconnection",
            |b| b,
            &[("cache-control", "max-age=10, stale-if-error=60")],
            &[],
            Step {
                body: "payload",
                x_cache: "STALE",
                cache_status: "tower-kit; fwd=stale; ttl=-10; detail=stale-if-error",
                origin_calls: 2,
                ..step(&[], Reply::Unreachable)
            },
        ),
        disconnected(
            "RFC 9111 §4.2.4: past stale_if_disconnected the origin's error comes through",
            |b| b.stale_if_disconnected(Duration::from_secs(5)),
            &[("cache-control", "max-age=10")],
            &[],
            Step {
                status: 0,
                origin_calls: 2,
                ..step(&[], Reply::Unreachable)
            },
        ),
        disconnected(
            "RFC 9111 §4.2.4: a 5xx answer is not a disconnection",
            |b| b,
            &[("cache-control", "max-age=10")],
            &[],
            Step {
                status: 503,
                body: "down",
                x_cache: "MISS",
                origin_calls: 2,
                ..step(&[], Reply::Answer(503, &[], "down"))
            },
        ),
        disconnected(
            "RFC 9111 §5.2.2.2: must-revalidate: 504 when the origin cannot be reached",
            |b| b,
            &[("cache-control", "max-age=10, must-revalidate")],
            &[],
            gateway_timeout(),
        ),
        disconnected(
            "RFC 9111 §5.2.2.8: proxy-revalidate: 504 when the origin cannot be reached",
            |b| b,
            &[("cache-control", "max-age=10, proxy-revalidate")],
            &[],
            gateway_timeout(),
        ),
        disconnected(
            "RFC 9111 §5.2.2.10: s-maxage: 504 when the origin cannot be reached",
            |b| b,
            &[("cache-control", "s-maxage=10")],
            &[],
            gateway_timeout(),
        ),
        disconnected(
            "RFC 9111 §5.2.2.4: no-cache: 504 when the origin cannot be reached",
            |b| b,
            &[("cache-control", "no-cache"), ("etag", "\"v1\"")],
            &[],
            gateway_timeout(),
        ),
        disconnected(
            "RFC 9111 §4.2.4: a request's own no-cache is never answered stale",
            |b| b,
            &[("cache-control", "max-age=60")],
            &[("cache-control", "no-cache")],
            Step {
                status: 0,
                origin_calls: 2,
                ..step(&[], Reply::Unreachable)
            },
        ),
    ]
}

fn gateway_timeout() -> Step {
    Step {
        status: 504,
        x_cache: "MISS",
        cache_status: "tower-kit; fwd=stale; detail=must-revalidate",
        origin_calls: 2,
        ..step(&[], Reply::Unreachable)
    }
}

/// An origin that answers each call with the next queued [`Reply`], and fails when it is `Unreachable`.
#[derive(Clone, Default)]
struct Scripted {
    replies: Arc<Mutex<VecDeque<Reply>>>,
    calls: Arc<Mutex<usize>>,
}

impl Service<Request<()>> for Scripted {
    type Response = Response<Full<Bytes>>;
    type Error = std::io::Error;
    type Future =
        std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<()>) -> Self::Future {
        *self.calls.lock().unwrap() += 1;
        let reply = self.replies.lock().unwrap().pop_front();
        Box::pin(async move {
            match reply {
                Some(Reply::Answer(status, headers, body)) => {
                    let mut b = Response::builder().status(status);
                    for (n, v) in headers {
                        b = b.header(*n, *v);
                    }
                    Ok(b.body(Full::new(Bytes::from_static(body.as_bytes())))
                        .unwrap())
                }
                Some(Reply::Unreachable) => Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "connection refused",
                )),
                Some(Reply::Unasked) | None => panic!("the origin was not expected to be asked"),
            }
        })
    }
}

/// Runs every script on a layer from `build`, as `run_table` runs the cases.
async fn run_scripts<St: Store>(
    build: impl Fn(CacheLayerBuilder<MokaStore>, &Work) -> CacheLayer<St>,
) {
    for script in scripts() {
        let work = Work::default();
        let clock = ManualWallClock::default();
        let origin = Scripted::default();
        let layer = build((script.configure)(builder(&clock)), &work);
        let svc = layer.layer(work.origin(origin.clone()));
        let at_rest = work.origins();
        for (i, s) in script.steps.iter().enumerate() {
            let name = format!("{}: step {}", script.name, i + 1);
            clock.advance(Duration::from_secs(s.advance));
            {
                let mut replies = origin.replies.lock().unwrap();
                replies.clear();
                if !matches!(s.reply, Reply::Unasked) {
                    replies.push_back(s.reply);
                }
            }
            let mut req = get_with("/r", s.headers);
            *req.method_mut() = s.method.parse().unwrap();
            let result = svc.clone().oneshot(req).await;
            if s.status == 0 {
                assert!(
                    result.is_err(),
                    "{name}: the origin's error must come through"
                );
            } else {
                let (parts, body) = result.unwrap().into_parts();
                let body = body.collect().await.unwrap().to_bytes();
                assert_eq!(
                    parts.status,
                    StatusCode::from_u16(s.status).unwrap(),
                    "{name}: status"
                );
                assert_eq!(body, s.body, "{name}: body");
                // "" leaves X-Cache or Cache-Status unchecked (a step that only sets the stage).
                if !s.x_cache.is_empty() {
                    assert_eq!(all(&parts, "x-cache"), s.x_cache, "{name}: X-Cache");
                }
                if !s.cache_status.is_empty() {
                    assert_eq!(
                        all(&parts, "cache-status"),
                        s.cache_status,
                        "{name}: Cache-Status"
                    );
                }
                for (header, want) in s.expect {
                    assert_eq!(all(&parts, header), *want, "{name}: {header}");
                }
            }
            settle(&work, at_rest).await;
            assert_eq!(
                *origin.calls.lock().unwrap(),
                s.origin_calls,
                "{name}: origin calls"
            );
        }
    }
}

#[tokio::test]
async fn serving_scripts() {
    run_scripts(|b, _| b.build().unwrap()).await;
}

#[tokio::test]
async fn serving_scripts_on_a_store_that_waits() {
    run_scripts(|b, work| {
        b.store(work.count(crate::common::YieldingStore::new(1 << 24)))
            .build()
            .unwrap()
    })
    .await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_scripts_on_redis() {
    let server = super::redis_server::RedisServer::start();
    let stores = super::PerCase::server(&server);
    run_scripts(|b, work| {
        b.store(work.count(stores.redis("serving")))
            .build()
            .unwrap()
    })
    .await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_scripts_on_tiered() {
    let server = super::redis_server::RedisServer::start();
    let stores = super::PerCase::server(&server);
    run_scripts(|b, work| {
        b.store(work.count(stores.tiered("servingt")))
            .build()
            .unwrap()
    })
    .await;
}
