//! Byte ranges (RFC 9110 §14, RFC 9111 §3.3–3.4): the `Range` a request asks for, whether its `If-Range` holds,
//! what a stored response (a complete `200`, or a stored `206` part) can answer, and how a new `206` part is
//! combined with a stored one.
//!
//! Choices, where the RFC leaves one:
//! - Only `GET` has ranges (RFC 9110 §14.2); `Range` on any other method is ignored.
//! - A `Range` with more than one range (or more than one field line) is ignored and the whole `200` is sent:
//!   RFC 9110 §14.2 lets a server ignore `Range`, and this keeps `multipart/byteranges` (and the many-small-ranges
//!   denial of service of §17.15) out of the cache.
//! - A `Range` the grammar does not allow (another unit, `5-2`, spaces inside a range, signs, no digits) is ignored
//!   as a whole (§14.2: "a server MAY ignore"); numbers too large for 64 bits saturate, so `0-99999999999999999999`
//!   means "to the end" and a first position that large is unsatisfiable.
//! - `If-Range` holds only with a strong validator (RFC 9110 §13.1.5): an entity tag that matches the stored strong
//!   `ETag` strongly, or a date equal to a stored `Last-Modified` that is strong (§8.8.2.2: at least one second
//!   before the stored `Date`). Otherwise the whole representation is sent.

use crate::conditional::{EntityTag, etag};
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use std::time::{Duration, SystemTime};

/// One range of a `Range` header (RFC 9110 §14.1.1), positions as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spec {
    /// `first-last`.
    Bounded { first: u64, last: u64 },
    /// `first-`.
    From(u64),
    /// `-length`: the last `length` bytes.
    Suffix(u64),
}

impl Spec {
    /// The inclusive byte positions this range selects in a representation of `complete` bytes; `None` when it
    /// is unsatisfiable (RFC 9110 §14.1.1).
    pub(crate) fn resolve(self, complete: u64) -> Option<(u64, u64)> {
        if complete == 0 {
            return None;
        }
        match self {
            Spec::Bounded { first, last } => {
                (first < complete).then(|| (first, last.min(complete - 1)))
            }
            Spec::From(first) => (first < complete).then_some((first, complete - 1)),
            Spec::Suffix(0) => None,
            Spec::Suffix(length) => Some((complete.saturating_sub(length), complete - 1)),
        }
    }
}

/// A decimal number of one or more digits, saturating at `u64::MAX`; `None` for anything else.
fn number(text: &[u8]) -> Option<u64> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(text.iter().fold(0u64, |n, d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

/// One `range-spec`; `None` when malformed.
fn spec(text: &[u8]) -> Option<Spec> {
    let dash = text.iter().position(|&b| b == b'-')?;
    let (first, last) = (&text[..dash], &text[dash + 1..]);
    match (first.is_empty(), last.is_empty()) {
        (true, false) => Some(Spec::Suffix(number(last)?)),
        (false, true) => Some(Spec::From(number(first)?)),
        (false, false) => {
            let (first, last) = (number(first)?, number(last)?);
            (first <= last).then_some(Spec::Bounded { first, last })
        }
        (true, true) => None,
    }
}

/// The single byte range a `Range` value asks for: `None` when the value is to be ignored (not `bytes`,
/// malformed, or more than one range).
pub(crate) fn parse(value: &[u8]) -> Option<Spec> {
    let eq = value.iter().position(|&b| b == b'=')?;
    if !value[..eq].eq_ignore_ascii_case(b"bytes") {
        return None;
    }
    let mut found = None;
    // `1#range-spec`: empty list members are allowed (RFC 9110 §5.6.1), optional whitespace around members.
    for member in value[eq + 1..].split(|&b| b == b',') {
        let member = member.trim_ascii();
        if member.is_empty() {
            continue;
        }
        let spec = spec(member)?;
        if found.replace(spec).is_some() {
            return None;
        }
    }
    found
}

/// The range a request asks for, when the cache is to answer it: a `GET` with exactly one `Range` field line
/// naming one byte range.
pub(crate) fn requested(method: &Method, request: &HeaderMap) -> Option<Spec> {
    if method != Method::GET {
        return None;
    }
    let mut lines = request.get_all(header::RANGE).iter();
    let value = lines.next()?;
    if lines.next().is_some() {
        return None;
    }
    parse(value.as_bytes())
}

fn http_date(headers: &HeaderMap, name: header::HeaderName) -> Option<SystemTime> {
    httpdate::parse_http_date(headers.get(name)?.to_str().ok()?.trim()).ok()
}

/// Whether a request's `If-Range` holds for a stored response (RFC 9110 §13.1.5, strong validators only); `true`
/// without `If-Range`.
pub(crate) fn if_range_holds(request: &HeaderMap, stored: &HeaderMap) -> bool {
    let mut lines = request.get_all(header::IF_RANGE).iter();
    let Some(value) = lines.next() else {
        return true;
    };
    if lines.next().is_some() {
        return false;
    }
    let Ok(text) = value.to_str() else {
        return false;
    };
    let text = text.trim();
    if text.starts_with('"') || text.starts_with("W/") {
        return match (EntityTag::parse(text), etag(stored)) {
            (Some(theirs), Some(mine)) => theirs.strong_eq(&mine),
            _ => false,
        };
    }
    let (Ok(since), Some(modified)) = (
        httpdate::parse_http_date(text),
        http_date(stored, header::LAST_MODIFIED),
    ) else {
        return false;
    };
    // A Last-Modified is strong for a cache when the stored Date is at least one second later (§8.8.2.2).
    let strong = http_date(stored, header::DATE).is_some_and(|date| {
        date.duration_since(modified).unwrap_or_default() >= Duration::from_secs(1)
    });
    strong && since == modified
}

/// A stored `206`'s part: `Content-Range: bytes first-last/complete` with a known complete length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Part {
    pub(crate) first: u64,
    pub(crate) last: u64,
    pub(crate) complete: u64,
}

impl Part {
    fn len(self) -> u64 {
        self.last - self.first + 1
    }
}

/// The part a `206` holds, when it holds one the cache can store: exactly one `Content-Range` of the form
/// `bytes first-last/complete` with `first <= last < complete`, and no `multipart/byteranges` body.
pub(crate) fn part(headers: &HeaderMap) -> Option<Part> {
    let mut lines = headers.get_all(header::CONTENT_RANGE).iter();
    let value = lines.next()?.as_bytes();
    if lines.next().is_some() {
        return None;
    }
    let rest = value.strip_prefix(b"bytes ")?;
    let slash = rest.iter().position(|&b| b == b'/')?;
    let (range, complete) = (&rest[..slash], &rest[slash + 1..]);
    let dash = range.iter().position(|&b| b == b'-')?;
    let (first, last) = (number(&range[..dash])?, number(&range[dash + 1..])?);
    let complete = number(complete)?;
    if first > last || last >= complete || complete == u64::MAX {
        return None;
    }
    let multipart = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"multipart/"));
    (!multipart).then_some(Part {
        first,
        last,
        complete,
    })
}

/// What a stored response can do for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Serve {
    /// Send the stored response as it is (no range asked, or the `Range` is ignored).
    Whole,
    /// `206` with these inclusive positions of the complete representation.
    Range(Part),
    /// `416` with `Content-Range: bytes */complete`.
    Unsatisfiable { complete: u64 },
    /// The stored part cannot answer: the request goes to the origin.
    Elsewhere,
}

/// What a stored response (`status`, `headers`, a body of `body_len` bytes) can do for a request. A complete `200`
/// answers any range; a stored `206` only ranges wholly inside its part (RFC 9111 §3.3); other statuses are sent as
/// they are.
pub(crate) fn serve(
    method: &Method,
    request: &HeaderMap,
    status: StatusCode,
    stored: &HeaderMap,
    body_len: usize,
) -> Serve {
    let (held, partial) = match status {
        StatusCode::OK => {
            let complete = body_len as u64;
            let held = Part {
                first: 0,
                last: complete.saturating_sub(1),
                complete,
            };
            (held, false)
        }
        StatusCode::PARTIAL_CONTENT => match part(stored) {
            Some(p) if p.len() == body_len as u64 => (p, true),
            _ => return Serve::Elsewhere,
        },
        _ => return Serve::Whole,
    };
    let whole = if partial {
        Serve::Elsewhere
    } else {
        Serve::Whole
    };
    let Some(spec) = requested(method, request) else {
        return whole;
    };
    if !if_range_holds(request, stored) {
        return whole;
    }
    match spec.resolve(held.complete) {
        None => Serve::Unsatisfiable {
            complete: held.complete,
        },
        Some((first, last)) if first >= held.first && last <= held.last => Serve::Range(Part {
            first,
            last,
            complete: held.complete,
        }),
        Some(_) => Serve::Elsewhere,
    }
}

/// The bytes of `range` from a stored body that holds `held` (the whole representation for a `200`).
pub(crate) fn slice(body: &Bytes, held_first: u64, range: Part) -> Bytes {
    let start = (range.first - held_first) as usize;
    let end = (range.last - held_first) as usize + 1;
    body.slice(start.min(body.len())..end.min(body.len()))
}

/// `Content-Range` of a `206`.
pub(crate) fn content_range(range: Part) -> HeaderValue {
    own(format!(
        "bytes {}-{}/{}",
        range.first, range.last, range.complete
    ))
}

/// `Content-Range` of a `416` (RFC 9110 §15.5.17).
pub(crate) fn unsatisfied_range(complete: u64) -> HeaderValue {
    own(format!("bytes */{complete}"))
}

/// A header value from text the cache wrote itself (digits, spaces and punctuation: always valid).
fn own(text: String) -> HeaderValue {
    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A new `206` part combined with a stored response (RFC 9111 §3.4): a stored `206` part, or a stored complete
/// `200` (the whole representation as one part). Both must carry the same strong `ETag` and the same complete
/// length, and touch or overlap. The result is the combined part (the new part's bytes win where they overlap) and
/// its body; the caller takes every other header field from the new response.
pub(crate) fn combine(
    stored_status: StatusCode,
    stored: &HeaderMap,
    stored_body: &Bytes,
    new: &HeaderMap,
    new_body: &Bytes,
) -> Option<(Part, Bytes)> {
    let old = match stored_status {
        StatusCode::OK if !stored_body.is_empty() => Part {
            first: 0,
            last: stored_body.len() as u64 - 1,
            complete: stored_body.len() as u64,
        },
        StatusCode::PARTIAL_CONTENT => part(stored)?,
        _ => return None,
    };
    let fresh = part(new)?;
    let (a, b) = (etag(stored)?, etag(new)?);
    if !a.strong_eq(&b) || old.complete != fresh.complete {
        return None;
    }
    if old.len() != stored_body.len() as u64 || fresh.len() != new_body.len() as u64 {
        return None;
    }
    let touches =
        fresh.first <= old.last.saturating_add(1) && old.first <= fresh.last.saturating_add(1);
    if !touches {
        return None;
    }
    let merged = Part {
        first: old.first.min(fresh.first),
        last: old.last.max(fresh.last),
        complete: fresh.complete,
    };
    let mut body = BytesMut::with_capacity(merged.len() as usize);
    if old.first < fresh.first {
        body.extend_from_slice(&stored_body[..(fresh.first - old.first) as usize]);
    }
    body.extend_from_slice(new_body);
    if old.last > fresh.last {
        body.extend_from_slice(&stored_body[(fresh.last + 1 - old.first) as usize..]);
    }
    Some((merged, body.freeze()))
}

/// The headers of a combined part: the new response's, with the combined `Content-Range` and `Content-Length`;
/// when the part is the whole representation, a `200` without `Content-Range`.
pub(crate) fn combined_head(new: &HeaderMap, merged: Part) -> (StatusCode, HeaderMap) {
    let mut headers = new.clone();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(merged.len()));
    if merged.first == 0 && merged.last + 1 == merged.complete {
        headers.remove(header::CONTENT_RANGE);
        (StatusCode::OK, headers)
    } else {
        headers.insert(header::CONTENT_RANGE, content_range(merged));
        (StatusCode::PARTIAL_CONTENT, headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditional::tests::h;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(
            parse(b"bytes=0-499"),
            Some(Spec::Bounded {
                first: 0,
                last: 499
            })
        );
        assert_eq!(parse(b"bytes=-500"), Some(Spec::Suffix(500)));
        assert_eq!(parse(b"bytes=500-"), Some(Spec::From(500)));
        assert_eq!(
            parse(b"Bytes=7-7"),
            Some(Spec::Bounded { first: 7, last: 7 })
        );
        // Whitespace around list members and empty members are allowed.
        assert_eq!(
            parse(b"bytes= 0-1 ,"),
            Some(Spec::Bounded { first: 0, last: 1 })
        );
        assert_eq!(parse(b"bytes=,,-3,"), Some(Spec::Suffix(3)));
    }

    #[test]
    fn ignores_what_the_grammar_does_not_allow() {
        for bad in [
            &b""[..],
            b"bytes",
            b"bytes=",
            b"bytes=,",
            b"bytes=-",
            b"bytes=5-2",
            b"bytes=0 - 1",
            b"bytes = 0-1",
            b"bytes=+1-2",
            b"bytes=-+2",
            b"bytes=1-2-3",
            b"bytes=0x10-20",
            b"bytes=1.5-2",
            b"items=0-1",
            b"none",
            b"bytes=\xff-1",
        ] {
            assert_eq!(parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn several_ranges_are_ignored() {
        assert_eq!(parse(b"bytes=0-1,5-6"), None);
        assert_eq!(parse(b"bytes=0-1,0-1"), None);
        assert_eq!(parse(b"bytes=-1,-2"), None);
        // Hostile: thousands of tiny ranges.
        let many = format!("bytes={}", vec!["0-0"; 5000].join(","));
        assert_eq!(parse(many.as_bytes()), None);
    }

    #[test]
    fn huge_numbers_saturate() {
        let huge = b"bytes=0-99999999999999999999999999999999";
        assert_eq!(
            parse(huge),
            Some(Spec::Bounded {
                first: 0,
                last: u64::MAX
            })
        );
        assert_eq!(parse(huge).unwrap().resolve(10), Some((0, 9)));
        let far = parse(b"bytes=99999999999999999999999999-").unwrap();
        assert_eq!(far, Spec::From(u64::MAX));
        assert_eq!(far.resolve(10), None);
        let suffix = parse(b"bytes=-99999999999999999999999").unwrap();
        assert_eq!(suffix.resolve(10), Some((0, 9)));
        assert_eq!(
            parse(b"bytes=18446744073709551615-18446744073709551615")
                .unwrap()
                .resolve(u64::MAX),
            None
        );
    }

    #[test]
    fn resolves_against_the_length() {
        let b = |first, last| Spec::Bounded { first, last };
        assert_eq!(b(0, 4).resolve(10), Some((0, 4)));
        assert_eq!(b(5, 50).resolve(10), Some((5, 9)));
        assert_eq!(b(10, 20).resolve(10), None);
        assert_eq!(Spec::From(9).resolve(10), Some((9, 9)));
        assert_eq!(Spec::From(10).resolve(10), None);
        assert_eq!(Spec::Suffix(3).resolve(10), Some((7, 9)));
        assert_eq!(Spec::Suffix(0).resolve(10), None);
        assert_eq!(Spec::Suffix(3).resolve(0), None);
        assert_eq!(b(0, 0).resolve(0), None);
    }

    #[test]
    fn only_get_with_one_field_line_asks() {
        let one = h(&[("range", "bytes=0-1")]);
        assert!(requested(&Method::GET, &one).is_some());
        assert!(requested(&Method::HEAD, &one).is_none());
        assert!(requested(&Method::POST, &one).is_none());
        let two = h(&[("range", "bytes=0-1"), ("range", "bytes=2-3")]);
        assert!(requested(&Method::GET, &two).is_none());
        assert!(requested(&Method::GET, &HeaderMap::new()).is_none());
    }

    #[test]
    fn if_range_needs_a_strong_validator() {
        let lm = "Mon, 01 Jan 2024 00:00:00 GMT";
        let stored = h(&[
            ("etag", "\"v1\""),
            ("last-modified", lm),
            ("date", "Mon, 01 Jan 2024 00:00:05 GMT"),
        ]);
        assert!(if_range_holds(&HeaderMap::new(), &stored));
        assert!(if_range_holds(&h(&[("if-range", "\"v1\"")]), &stored));
        assert!(!if_range_holds(&h(&[("if-range", "W/\"v1\"")]), &stored));
        assert!(!if_range_holds(&h(&[("if-range", "\"v2\"")]), &stored));
        assert!(if_range_holds(&h(&[("if-range", lm)]), &stored));
        assert!(!if_range_holds(
            &h(&[("if-range", "Mon, 01 Jan 2024 00:00:01 GMT")]),
            &stored
        ));
        assert!(!if_range_holds(&h(&[("if-range", "garbage")]), &stored));
        // A weak stored ETag never matches; a Last-Modified within a second of Date is weak.
        let weak = h(&[
            ("etag", "W/\"v1\""),
            ("last-modified", lm),
            ("date", "Mon, 01 Jan 2024 00:00:00 GMT"),
        ]);
        assert!(!if_range_holds(&h(&[("if-range", "\"v1\"")]), &weak));
        assert!(!if_range_holds(&h(&[("if-range", lm)]), &weak));
        assert!(!if_range_holds(
            &h(&[("if-range", lm)]),
            &h(&[("last-modified", lm)])
        ));
    }

    #[test]
    fn stored_parts() {
        let p = |cr: &str| part(&h(&[("content-range", cr)]));
        assert_eq!(
            p("bytes 0-4/10"),
            Some(Part {
                first: 0,
                last: 4,
                complete: 10
            })
        );
        for bad in [
            "bytes 0-4/*",
            "bytes */10",
            "bytes 5-4/10",
            "bytes 0-10/10",
            "items 0-4/10",
            "bytes 0-4/10/2",
            "bytes 0-4 /10",
        ] {
            assert_eq!(p(bad), None, "{bad}");
        }
        let multipart = h(&[
            ("content-range", "bytes 0-4/10"),
            ("content-type", "multipart/byteranges; boundary=x"),
        ]);
        assert_eq!(part(&multipart), None);
    }

    #[test]
    fn what_a_stored_response_serves() {
        let get = |range: &str| h(&[("range", range)]);
        let ok = StatusCode::OK;
        let none = HeaderMap::new();
        assert_eq!(serve(&Method::GET, &none, ok, &none, 10), Serve::Whole);
        assert_eq!(
            serve(&Method::GET, &get("bytes=2-3"), ok, &none, 10),
            Serve::Range(Part {
                first: 2,
                last: 3,
                complete: 10
            })
        );
        assert_eq!(
            serve(&Method::GET, &get("bytes=20-"), ok, &none, 10),
            Serve::Unsatisfiable { complete: 10 }
        );
        assert_eq!(
            serve(&Method::GET, &get("bytes=x"), ok, &none, 10),
            Serve::Whole
        );
        assert_eq!(
            serve(&Method::HEAD, &get("bytes=2-3"), ok, &none, 10),
            Serve::Whole
        );
        let not_found = StatusCode::NOT_FOUND;
        assert_eq!(
            serve(&Method::GET, &get("bytes=2-3"), not_found, &none, 10),
            Serve::Whole
        );
        // A stored part answers only ranges inside it.
        let stored = h(&[("content-range", "bytes 10-19/100"), ("etag", "\"a\"")]);
        let partial = StatusCode::PARTIAL_CONTENT;
        assert_eq!(
            serve(&Method::GET, &get("bytes=12-15"), partial, &stored, 10),
            Serve::Range(Part {
                first: 12,
                last: 15,
                complete: 100
            })
        );
        assert_eq!(
            serve(&Method::GET, &get("bytes=12-25"), partial, &stored, 10),
            Serve::Elsewhere
        );
        assert_eq!(
            serve(&Method::GET, &none, partial, &stored, 10),
            Serve::Elsewhere
        );
        assert_eq!(
            serve(&Method::GET, &get("bytes=200-"), partial, &stored, 10),
            Serve::Unsatisfiable { complete: 100 }
        );
        // If-Range that fails wants the whole representation, which a part does not have.
        let mut failing = get("bytes=12-15");
        failing.insert(header::IF_RANGE, HeaderValue::from_static("\"b\""));
        assert_eq!(
            serve(&Method::GET, &failing, partial, &stored, 10),
            Serve::Elsewhere
        );
        assert_eq!(serve(&Method::GET, &failing, ok, &stored, 10), Serve::Whole);
        // A body that does not fill its Content-Range is never served from.
        assert_eq!(
            serve(&Method::GET, &get("bytes=12-15"), partial, &stored, 9),
            Serve::Elsewhere
        );
    }

    #[test]
    fn slices() {
        let body = Bytes::from_static(b"0123456789");
        let r = |first, last| Part {
            first,
            last,
            complete: 10,
        };
        assert_eq!(slice(&body, 0, r(2, 4)), "234");
        assert_eq!(slice(&body, 10, r(12, 14)), "234");
        assert_eq!(content_range(r(2, 4)), "bytes 2-4/10");
        assert_eq!(unsatisfied_range(10), "bytes */10");
    }

    #[test]
    fn combines_parts_with_the_same_strong_etag() {
        // (stored part, its ETag, its body, new part, its ETag, its body, the combined body or None)
        let rows = [
            // Adjacent.
            (
                "0-3/10",
                "\"a\"",
                "0123",
                "4-6/10",
                "\"a\"",
                "456",
                Some("0123456"),
            ),
            // Overlapping, the new part's bytes win, the new part before the old one.
            (
                "4-9/10",
                "\"a\"",
                "456789",
                "2-5/10",
                "\"a\"",
                "23XY",
                Some("23XY6789"),
            ),
            // The new part inside the old one.
            (
                "0-3/10",
                "\"a\"",
                "0123",
                "1-2/10",
                "\"a\"",
                "ab",
                Some("0ab3"),
            ),
            // A gap, another ETag, weak ETags, another length, a short body: not combined.
            ("0-3/10", "\"a\"", "0123", "5-6/10", "\"a\"", "56", None),
            ("0-3/10", "\"a\"", "0123", "4-6/10", "\"b\"", "456", None),
            (
                "0-3/10", "W/\"a\"", "0123", "4-6/10", "W/\"a\"", "456", None,
            ),
            ("0-3/10", "\"a\"", "0123", "4-6/11", "\"a\"", "456", None),
            ("0-3/10", "\"a\"", "012", "4-6/10", "\"a\"", "456", None),
        ];
        for (old, old_tag, old_body, new, new_tag, new_body, want) in rows {
            let old_head = h(&[
                ("content-range", &format!("bytes {old}")),
                ("etag", old_tag),
            ]);
            let new_head = h(&[
                ("content-range", &format!("bytes {new}")),
                ("etag", new_tag),
            ]);
            let got = combine(
                StatusCode::PARTIAL_CONTENT,
                &old_head,
                &Bytes::copy_from_slice(old_body.as_bytes()),
                &new_head,
                &Bytes::copy_from_slice(new_body.as_bytes()),
            );
            assert_eq!(
                got.as_ref().map(|(_, b)| &b[..]),
                want.map(str::as_bytes),
                "{old} + {new}"
            );
            if let Some((p, body)) = got {
                assert_eq!((p.last - p.first + 1) as usize, body.len(), "{old} + {new}");
            }
        }
    }

    #[test]
    fn a_part_of_a_stored_200_with_the_same_strong_etag_keeps_it_whole() {
        let stored = h(&[("etag", "\"a\"")]);
        let body = Bytes::from_static(b"0123456789");
        let new = h(&[("content-range", "bytes 2-3/10"), ("etag", "\"a\"")]);
        let (p, merged) = combine(
            StatusCode::OK,
            &stored,
            &body,
            &new,
            &Bytes::from_static(b"23"),
        )
        .unwrap();
        assert_eq!((p.first, p.last, p.complete), (0, 9, 10));
        assert_eq!(merged, body);
        let other = h(&[("content-range", "bytes 2-3/10"), ("etag", "\"b\"")]);
        assert!(
            combine(
                StatusCode::OK,
                &stored,
                &body,
                &other,
                &Bytes::from_static(b"23")
            )
            .is_none()
        );
        let longer = h(&[("content-range", "bytes 2-3/11"), ("etag", "\"a\"")]);
        assert!(
            combine(
                StatusCode::OK,
                &stored,
                &body,
                &longer,
                &Bytes::from_static(b"23")
            )
            .is_none()
        );
        assert!(
            combine(
                StatusCode::NOT_FOUND,
                &stored,
                &body,
                &new,
                &Bytes::from_static(b"23")
            )
            .is_none()
        );
    }

    #[test]
    fn a_combined_whole_is_a_200() {
        let new = h(&[
            ("content-range", "bytes 5-9/10"),
            ("etag", "\"a\""),
            ("x-new", "1"),
        ]);
        let whole = Part {
            first: 0,
            last: 9,
            complete: 10,
        };
        let (status, headers) = combined_head(&new, whole);
        assert_eq!(status, StatusCode::OK);
        assert!(!headers.contains_key(header::CONTENT_RANGE));
        assert_eq!(headers[header::CONTENT_LENGTH], "10");
        assert_eq!(headers["x-new"], "1");
        let part = Part {
            first: 2,
            last: 9,
            complete: 10,
        };
        let (status, headers) = combined_head(&new, part);
        assert_eq!(status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(headers[header::CONTENT_RANGE], "bytes 2-9/10");
        assert_eq!(headers[header::CONTENT_LENGTH], "8");
    }
}
