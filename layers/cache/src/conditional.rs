//! Validators and conditional requests: `If-None-Match` / `If-Modified-Since` from clients answered from stored
//! responses (RFC 9110 §13, RFC 9111 §4.3.2), the validators of a revalidation request (§4.3.1), and how a `304`
//! updates a stored response's headers (§3.2, §4.3.4).

use http::{HeaderMap, HeaderName, StatusCode, header};
use std::time::SystemTime;

/// An entity tag: `"abc"` or `W/"abc"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntityTag<'a> {
    pub(crate) weak: bool,
    pub(crate) opaque: &'a str,
}

impl<'a> EntityTag<'a> {
    /// One entity tag, with its quotes (`"x"` or `W/"x"`); `None` when malformed.
    pub(crate) fn parse(text: &'a str) -> Option<Self> {
        let text = text.trim();
        let (weak, rest) = match text.strip_prefix("W/") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let opaque = rest.strip_prefix('"')?.strip_suffix('"')?;
        opaque
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80)
            .then_some(Self { weak, opaque })
    }

    /// Weak comparison (RFC 9110 §8.8.3.2): the opaque tags match, whatever their weakness.
    pub(crate) fn weak_eq(&self, other: &EntityTag<'_>) -> bool {
        self.opaque == other.opaque
    }

    /// Strong comparison: both strong and the opaque tags match.
    pub(crate) fn strong_eq(&self, other: &EntityTag<'_>) -> bool {
        !self.weak && !other.weak && self.opaque == other.opaque
    }
}

/// The members of an `If-None-Match` field: `*`, or entity tags (malformed members are skipped).
enum Members<'a> {
    Any,
    Tags(Vec<EntityTag<'a>>),
}

fn if_none_match(headers: &HeaderMap) -> Option<Members<'_>> {
    let mut tags = Vec::new();
    let mut seen = false;
    for value in headers.get_all(header::IF_NONE_MATCH) {
        seen = true;
        let Ok(text) = value.to_str() else { continue };
        if text.trim() == "*" {
            return Some(Members::Any);
        }
        let mut rest = text;
        loop {
            rest = rest.trim_start_matches(|c: char| c == ',' || c.is_ascii_whitespace());
            if rest.is_empty() {
                break;
            }
            let start = usize::from(rest.starts_with("W/")) * 2;
            // An entity tag ends at its closing quote; a malformed member ends at the next comma.
            let end = match rest[start..].strip_prefix('"') {
                Some(quoted) => quoted.find('"').map(|i| start + i + 2),
                None => None,
            };
            let end = end.unwrap_or_else(|| rest.find(',').unwrap_or(rest.len()));
            if let Some(tag) = EntityTag::parse(&rest[..end]) {
                tags.push(tag);
            }
            rest = &rest[end..];
        }
    }
    seen.then_some(Members::Tags(tags))
}

/// The stored response's entity tag.
pub(crate) fn etag(headers: &HeaderMap) -> Option<EntityTag<'_>> {
    EntityTag::parse(headers.get(header::ETAG)?.to_str().ok()?)
}

fn http_date(headers: &HeaderMap, name: HeaderName) -> Option<SystemTime> {
    httpdate::parse_http_date(headers.get(name)?.to_str().ok()?.trim()).ok()
}

/// Whether a stored response has a validator the origin can check (`ETag` or `Last-Modified`).
pub(crate) fn has_validator(headers: &HeaderMap) -> bool {
    etag(headers).is_some() || http_date(headers, header::LAST_MODIFIED).is_some()
}

/// Whether the request carries a precondition the cache evaluates (`If-None-Match`, `If-Modified-Since`).
pub(crate) fn is_conditional(request: &HeaderMap) -> bool {
    request.contains_key(header::IF_NONE_MATCH) || request.contains_key(header::IF_MODIFIED_SINCE)
}

/// Whether a client's `If-None-Match` / `If-Modified-Since` is satisfied by a stored response, so the answer is
/// `304 Not Modified` (RFC 9111 §4.3.2, RFC 9110 §13.2.2 order: `If-None-Match` first, and `If-Modified-Since` only
/// without it). `response_time` stands in for `Last-Modified` and `Date` when the stored response has neither.
pub(crate) fn not_modified(
    request: &HeaderMap,
    status: StatusCode,
    stored: &HeaderMap,
    response_time: SystemTime,
) -> bool {
    // Preconditions apply to what a 2xx would represent; other stored statuses are sent as they are.
    if !status.is_success() {
        return false;
    }
    if let Some(members) = if_none_match(request) {
        return match members {
            Members::Any => true,
            // Weak comparison for If-None-Match (RFC 9110 §13.1.2).
            Members::Tags(tags) => {
                etag(stored).is_some_and(|mine| tags.iter().any(|t| t.weak_eq(&mine)))
            }
        };
    }
    let Some(since) = http_date(request, header::IF_MODIFIED_SINCE) else {
        return false;
    };
    let modified = http_date(stored, header::LAST_MODIFIED)
        .or_else(|| http_date(stored, header::DATE))
        .unwrap_or(response_time);
    modified <= since
}

/// The headers of a stored response that a `304` must carry (RFC 9110 §15.4.5): `Cache-Control`,
/// `Content-Location`, `Date`, `ETag`, `Expires` and `Vary`; `Last-Modified` too when there is no `ETag`.
pub(crate) fn headers_for_304(stored: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    let mut names = vec![
        header::CACHE_CONTROL,
        header::CONTENT_LOCATION,
        header::DATE,
        header::ETAG,
        header::EXPIRES,
        header::VARY,
    ];
    if !stored.contains_key(header::ETAG) {
        names.push(header::LAST_MODIFIED);
    }
    for name in names {
        for value in stored.get_all(&name) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// Replaces a request's own `If-None-Match` / `If-Modified-Since` with the stored response's validators (RFC 9111
/// §4.3.1). Returns whether a validator was sent.
pub(crate) fn set_validators(request: &mut HeaderMap, stored: &HeaderMap) -> bool {
    request.remove(header::IF_NONE_MATCH);
    request.remove(header::IF_MODIFIED_SINCE);
    let mut sent = false;
    if let Some(value) = stored.get(header::ETAG)
        && etag(stored).is_some()
    {
        request.insert(header::IF_NONE_MATCH, value.clone());
        sent = true;
    }
    if let Some(value) = stored.get(header::LAST_MODIFIED)
        && http_date(stored, header::LAST_MODIFIED).is_some()
    {
        request.insert(header::IF_MODIFIED_SINCE, value.clone());
        sent = true;
    }
    sent
}

/// Whether a `304` (or a `HEAD` response) is about the stored response (RFC 9111 §4.3.4): its strong `ETag`
/// matches, or its weak one, or without an `ETag` its `Last-Modified` equals the stored one (or it has neither).
pub(crate) fn same_validators(stored: &HeaderMap, fresh: &HeaderMap) -> bool {
    match (etag(stored), etag(fresh)) {
        // A strong validator selects only a stored response with the same strong validator.
        (Some(mine), Some(theirs)) if !theirs.weak => mine.strong_eq(&theirs),
        (Some(mine), Some(theirs)) => mine.weak_eq(&theirs),
        (None, Some(_)) => false,
        (_, None) => match (
            http_date(stored, header::LAST_MODIFIED),
            http_date(fresh, header::LAST_MODIFIED),
        ) {
            (Some(a), Some(b)) => a == b,
            (None, Some(_)) => false,
            (_, None) => true,
        },
    }
}

/// Headers a `304` must not change in the stored response (RFC 9111 §3.2): framing and representation metadata.
fn keep_stored(name: &HeaderName) -> bool {
    [
        header::CONTENT_LENGTH,
        header::CONTENT_ENCODING,
        header::CONTENT_TYPE,
        header::CONTENT_RANGE,
        header::TRANSFER_ENCODING,
    ]
    .contains(name)
}

/// The stored headers updated with a `304`'s (RFC 9111 §3.2): every field the `304` carries replaces the stored
/// one, except framing and representation metadata; `fresh` is already stripped of hop-by-hop headers.
pub(crate) fn freshen(stored: &HeaderMap, fresh: &HeaderMap) -> HeaderMap {
    let mut out = stored.clone();
    for name in fresh.keys() {
        if keep_stored(name) {
            continue;
        }
        out.remove(name);
        for value in fresh.get_all(name) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use http::HeaderValue;
    use std::time::Duration;

    /// A header map from name/value pairs (repeated names append).
    pub(crate) fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (n, v) in pairs {
            m.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600 + secs)
    }

    #[test]
    fn entity_tags_and_comparison() {
        let strong = EntityTag::parse("\"a\"").unwrap();
        let weak = EntityTag::parse("W/\"a\"").unwrap();
        assert!(weak.weak && !strong.weak);
        assert!(strong.weak_eq(&weak) && weak.weak_eq(&weak));
        assert!(strong.strong_eq(&strong));
        assert!(!strong.strong_eq(&weak) && !weak.strong_eq(&weak));
        for bad in ["a", "\"a", "w/\"a\"", "\"a\"b\"", "", "\"a b\""] {
            assert_eq!(EntityTag::parse(bad), None, "{bad}");
        }
        assert_eq!(EntityTag::parse("\"\"").unwrap().opaque, "");
    }

    /// (request headers, stored headers, 304?)
    #[test]
    fn conditional_table() {
        let lm = httpdate::fmt_http_date(t(0));
        let before = httpdate::fmt_http_date(t(0) - Duration::from_secs(1));
        let after = httpdate::fmt_http_date(t(10));
        type Pairs<'a> = Vec<(&'a str, &'a str)>;
        let rows: Vec<(&str, Pairs<'_>, Pairs<'_>, bool)> = vec![
            (
                "strong match",
                vec![("if-none-match", "\"a\"")],
                vec![("etag", "\"a\"")],
                true,
            ),
            (
                "weak request, strong stored",
                vec![("if-none-match", "W/\"a\"")],
                vec![("etag", "\"a\"")],
                true,
            ),
            (
                "strong request, weak stored",
                vec![("if-none-match", "\"a\"")],
                vec![("etag", "W/\"a\"")],
                true,
            ),
            (
                "list",
                vec![("if-none-match", "\"x\", W/\"a\"")],
                vec![("etag", "\"a\"")],
                true,
            ),
            (
                "list across lines",
                vec![("if-none-match", "\"x\""), ("if-none-match", "\"a\"")],
                vec![("etag", "\"a\"")],
                true,
            ),
            (
                "comma inside a tag",
                vec![("if-none-match", "\"a,b\"")],
                vec![("etag", "\"a,b\"")],
                true,
            ),
            (
                "no match",
                vec![("if-none-match", "\"b\"")],
                vec![("etag", "\"a\"")],
                false,
            ),
            ("star", vec![("if-none-match", "*")], vec![], true),
            (
                "no stored etag",
                vec![("if-none-match", "\"a\"")],
                vec![],
                false,
            ),
            (
                "garbage",
                vec![("if-none-match", "a, b")],
                vec![("etag", "\"a\"")],
                false,
            ),
            (
                "ims equal",
                vec![("if-modified-since", &lm)],
                vec![("last-modified", &lm)],
                true,
            ),
            (
                "ims later",
                vec![("if-modified-since", &after)],
                vec![("last-modified", &lm)],
                true,
            ),
            (
                "ims earlier",
                vec![("if-modified-since", &before)],
                vec![("last-modified", &lm)],
                false,
            ),
            (
                "ims against Date",
                vec![("if-modified-since", &lm)],
                vec![("date", &lm)],
                true,
            ),
            (
                "ims bad date",
                vec![("if-modified-since", "yesterday")],
                vec![("last-modified", &lm)],
                false,
            ),
            (
                "INM wins over IMS",
                vec![("if-none-match", "\"b\""), ("if-modified-since", &after)],
                vec![("etag", "\"a\""), ("last-modified", &lm)],
                false,
            ),
        ];
        for (name, req, stored, want) in rows {
            assert_eq!(
                not_modified(&h(&req), StatusCode::OK, &h(&stored), t(5)),
                want,
                "{name}"
            );
        }
        // Without Last-Modified or Date, the time the response arrived.
        let ims = h(&[("if-modified-since", &lm)]);
        assert!(not_modified(&ims, StatusCode::OK, &HeaderMap::new(), t(0)));
        assert!(!not_modified(&ims, StatusCode::OK, &HeaderMap::new(), t(1)));
        assert!(!not_modified(
            &h(&[("if-none-match", "*")]),
            StatusCode::NOT_FOUND,
            &HeaderMap::new(),
            t(0)
        ));
    }

    #[test]
    fn a_304_carries_what_rfc_9110_lists() {
        let stored = h(&[
            ("cache-control", "max-age=5"),
            ("content-location", "/a.json"),
            ("date", "x"),
            ("etag", "\"a\""),
            ("expires", "y"),
            ("vary", "accept"),
            ("vary", "x-b"),
            ("last-modified", "z"),
            ("content-type", "text/plain"),
            ("content-length", "5"),
            ("x-other", "1"),
        ]);
        let out = headers_for_304(&stored);
        let names: Vec<_> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "cache-control",
                "content-location",
                "date",
                "etag",
                "expires",
                "vary"
            ]
        );
        assert_eq!(out.get_all("vary").iter().count(), 2);
        let out = headers_for_304(&h(&[("last-modified", "z")]));
        assert!(out.contains_key("last-modified"));
    }

    #[test]
    fn validators_replace_the_clients() {
        let lm = httpdate::fmt_http_date(t(0));
        let mut req = h(&[("if-none-match", "\"client\""), ("accept", "x")]);
        assert!(set_validators(
            &mut req,
            &h(&[("etag", "W/\"a\""), ("last-modified", &lm)])
        ));
        assert_eq!(req["if-none-match"], "W/\"a\"");
        assert_eq!(req["if-modified-since"], lm.as_str());
        assert_eq!(req["accept"], "x");
        let mut req = h(&[("if-none-match", "\"client\"")]);
        assert!(!set_validators(&mut req, &h(&[("etag", "bad")])));
        assert!(!req.contains_key("if-none-match"));
    }

    #[test]
    fn freshen_replaces_all_but_representation_metadata() {
        let stored = h(&[
            ("cache-control", "max-age=5"),
            ("content-type", "text/plain"),
            ("content-length", "5"),
            ("x-a", "1"),
            ("x-a", "2"),
            ("etag", "\"a\""),
        ]);
        let fresh = h(&[
            ("cache-control", "max-age=60"),
            ("content-type", "text/html"),
            ("content-length", "0"),
            ("x-a", "3"),
        ]);
        let out = freshen(&stored, &fresh);
        assert_eq!(out["cache-control"], "max-age=60");
        assert_eq!(out["content-type"], "text/plain");
        assert_eq!(out["content-length"], "5");
        assert_eq!(out.get_all("x-a").iter().collect::<Vec<_>>(), ["3"]);
        assert_eq!(out["etag"], "\"a\"");
    }

    #[test]
    fn same_validators_rules() {
        let lm = httpdate::fmt_http_date(t(0));
        let lm2 = httpdate::fmt_http_date(t(1));
        assert!(same_validators(
            &h(&[("etag", "\"a\"")]),
            &h(&[("etag", "W/\"a\"")])
        ));
        assert!(same_validators(
            &h(&[("etag", "\"a\"")]),
            &h(&[("etag", "\"a\"")])
        ));
        assert!(!same_validators(
            &h(&[("etag", "W/\"a\"")]),
            &h(&[("etag", "\"a\"")])
        ));
        assert!(!same_validators(
            &h(&[("etag", "\"a\"")]),
            &h(&[("etag", "\"b\"")])
        ));
        assert!(!same_validators(&h(&[]), &h(&[("etag", "\"b\"")])));
        assert!(same_validators(&h(&[("etag", "\"a\"")]), &h(&[])));
        assert!(same_validators(
            &h(&[("last-modified", &lm)]),
            &h(&[("last-modified", &lm)])
        ));
        assert!(!same_validators(
            &h(&[("last-modified", &lm)]),
            &h(&[("last-modified", &lm2)])
        ));
    }
}
