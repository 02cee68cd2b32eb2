//! Whether a response may be stored (RFC 9111 §3), for how long (§4.2.1), and how old it already is (§4.2.3).

use crate::{
    control::{self, ResponseDirectives},
    targeted,
    vary::Vary,
};
use http::{HeaderMap, HeaderName, Method, StatusCode, header, response};
use std::time::{Duration, SystemTime};

/// The storage rules that come from configuration.
#[derive(Debug, Clone)]
pub(crate) struct StorePolicy {
    /// Requests with `Cookie` bypass unless the response says `public`.
    pub(crate) cookie_bypass: bool,
    /// Store responses with `Set-Cookie`, without that header.
    pub(crate) strip_set_cookie: bool,
    /// Heuristic freshness: this fraction of the time since `Last-Modified`, at most `heuristic_max`.
    pub(crate) heuristic: Option<f32>,
    pub(crate) heuristic_max: Duration,
    /// Any final status may be stored with explicit freshness or `public` (RFC 9111 §3); off: only the statuses
    /// of [`understood_by_default`].
    pub(crate) any_status: bool,
    /// Targeted cache-control fields (RFC 9213) in precedence order; empty: none.
    pub(crate) targeted: Vec<HeaderName>,
}

/// What the request contributes to the decision.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestFacts {
    pub(crate) is_get: bool,
    pub(crate) authorization: bool,
    pub(crate) cookie: bool,
    /// The configured default TTL for this route, for responses without freshness information.
    pub(crate) default_ttl: Option<Duration>,
    pub(crate) request_time: SystemTime,
}

impl RequestFacts {
    pub(crate) fn new(
        method: &Method,
        headers: &HeaderMap,
        default_ttl: Option<Duration>,
        request_time: SystemTime,
    ) -> Self {
        Self {
            is_get: method == Method::GET,
            authorization: headers.contains_key(header::AUTHORIZATION),
            cookie: headers.contains_key(header::COOKIE),
            default_ttl,
            request_time,
        }
    }
}

/// Why a response was not stored. `intrinsic` reasons belong to the response (any request for the key would get
/// the same answer), so they earn a hit-for-pass marker; the others belong to this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NotStored {
    pub(crate) reason: &'static str,
    pub(crate) intrinsic: bool,
}

const fn intrinsic(reason: &'static str) -> NotStored {
    NotStored {
        reason,
        intrinsic: true,
    }
}

const fn per_request(reason: &'static str) -> NotStored {
    NotStored {
        reason,
        intrinsic: false,
    }
}

/// A storable response's metadata.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Storable {
    pub(crate) freshness_lifetime: Duration,
    pub(crate) initial_age: Duration,
    pub(crate) public: bool,
    pub(crate) shared_with_authorization: bool,
    pub(crate) vary: Vec<HeaderName>,
    pub(crate) no_cache: bool,
    pub(crate) must_revalidate: bool,
    pub(crate) stale_while_revalidate: Option<Duration>,
    pub(crate) stale_if_error: Option<Duration>,
}

/// The statuses stored when storing any final status is turned off: those whose caching rules are plain and well
/// known.
fn understood_by_default(status: u16) -> bool {
    matches!(
        status,
        200 | 203 | 204 | 300 | 301 | 302 | 303 | 307 | 308 | 404 | 405 | 410 | 414 | 451 | 501
    )
}

/// The statuses whose caching requirements this cache implements (RFC 9111 §3, §5.2.2.3 `must-understand`): the
/// final statuses RFC 9110 §15 defines, with 429 (RFC 6585) and 451 (RFC 7725). Not 206 (a stored part is judged
/// as the 200 it is part of) nor 304 (it updates a stored response, RFC 9111 §4.3.4), nor unregistered codes.
fn understood(status: u16) -> bool {
    matches!(
        status,
        200..=205
            | 300..=303
            | 305
            | 307
            | 308
            | 400..=417
            | 421
            | 422
            | 426
            | 429
            | 451
            | 500..=505
    )
}

/// Statuses that are heuristically cacheable (RFC 9110 §15.1): only these get a default or heuristic TTL, unless
/// the response says `public` (RFC 9111 §5.2.2.9).
fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// The directives this cache acts on: those of the first valid targeted field (RFC 9213), which replaces both
/// `Cache-Control` and `Expires` (`true`), else `Cache-Control`'s (`false`).
fn directives(headers: &HeaderMap, policy: &StorePolicy) -> (ResponseDirectives, bool) {
    match targeted::directives(headers, &policy.targeted) {
        Some(d) => (d, true),
        None => (ResponseDirectives::parse(headers), false),
    }
}

/// The decision for a response head that arrived at `response_time`.
pub(crate) fn decide(
    request: &RequestFacts,
    response: &response::Parts,
    policy: &StorePolicy,
    response_time: SystemTime,
) -> Result<Storable, NotStored> {
    if !request.is_get {
        return Err(per_request("method"));
    }
    let status = response.status.as_u16();
    if response.status.is_informational() {
        // Not a final response: it answers nothing a later request could be given.
        return Err(per_request("informational"));
    }
    if status == 206 || status == 304 || !(policy.any_status || understood_by_default(status)) {
        return Err(intrinsic("status"));
    }
    let headers = &response.headers;
    let (cc, targeted) = directives(headers, policy);
    if cc.must_understand && !understood(status) {
        return Err(intrinsic("must-understand"));
    }
    // With `must-understand` and a status the cache understands, `no-store` is ignored (RFC 9111 §5.2.2.3).
    if cc.no_store && !cc.must_understand {
        return Err(intrinsic("no-store"));
    }
    if cc.private {
        return Err(intrinsic("private"));
    }
    let validator = crate::conditional::has_validator(headers);
    if cc.no_cache && !validator {
        // Never served without validation, and there is nothing to validate with.
        return Err(intrinsic("no-cache"));
    }
    let shared_with_authorization = cc.public || cc.s_maxage.is_some() || cc.must_revalidate;
    if request.authorization && !shared_with_authorization {
        return Err(per_request("authorization"));
    }
    if request.cookie && policy.cookie_bypass && !cc.public {
        return Err(per_request("cookie"));
    }
    if headers.contains_key(header::SET_COOKIE) && !policy.strip_set_cookie {
        return Err(intrinsic("set-cookie"));
    }
    let vary = match Vary::parse(headers) {
        Vary::Star => return Err(intrinsic("vary-star")),
        Vary::None => Vec::new(),
        Vary::Headers(names) => names,
    };
    let date = http_date(headers, header::DATE).unwrap_or(response_time);
    // A valid targeted field replaces `Expires` too.
    let expires = (!targeted && headers.contains_key(header::EXPIRES))
        .then(|| http_date(headers, header::EXPIRES));
    // Explicit freshness information, even if it says "stale at once" (`max-age=0`, `no-cache`).
    let explicit = cc.no_cache
        || cc.invalid_freshness
        || cc.s_maxage.is_some()
        || cc.max_age.is_some()
        || expires.is_some();
    let freshness_lifetime = freshness_lifetime(request, response, &cc, expires, policy, date)?;
    let initial_age = initial_age(headers, date, request.request_time, response_time);
    // A response stale on arrival is worth storing only to be validated: it needs a validator, and freshness
    // information of its own (a response without any is not stored, as above).
    if freshness_lifetime <= initial_age && !(validator && explicit) {
        return Err(intrinsic("stale"));
    }
    // A status stored only because the response said so (an error, an unregistered code) is never served stale:
    // once its freshness is over it is validated or replaced (RFC 9111 §4.2.4 lets nothing else serve it).
    let only_while_fresh = policy.any_status && !heuristically_cacheable(response.status);
    Ok(Storable {
        freshness_lifetime,
        initial_age,
        public: cc.public,
        shared_with_authorization,
        vary,
        no_cache: cc.no_cache,
        must_revalidate: cc.must_revalidate
            || cc.proxy_revalidate
            || cc.s_maxage.is_some()
            || only_while_fresh,
        stale_while_revalidate: cc.stale_while_revalidate,
        stale_if_error: cc.stale_if_error,
    })
}

/// The freshness lifetime (RFC 9111 §4.2.1): `s-maxage`, `max-age`, `Expires`; else, for heuristically cacheable
/// statuses, the route's default TTL or a fraction of the time since `Last-Modified`.
fn freshness_lifetime(
    request: &RequestFacts,
    response: &response::Parts,
    cc: &ResponseDirectives,
    expires: Option<Option<SystemTime>>,
    policy: &StorePolicy,
    date: SystemTime,
) -> Result<Duration, NotStored> {
    let headers = &response.headers;
    let lifetime = if cc.invalid_freshness {
        Duration::ZERO
    } else if let Some(s) = cc.s_maxage {
        s
    } else if let Some(m) = cc.max_age {
        m
    } else if let Some(expires) = expires {
        // An invalid `Expires` (`0`) means already expired (RFC 9111 §5.3).
        expires
            .and_then(|exp| exp.duration_since(date).ok())
            .unwrap_or(Duration::ZERO)
    } else if cc.no_cache {
        Duration::ZERO
    } else if !heuristically_cacheable(response.status) && !cc.public {
        return Err(intrinsic("no-freshness"));
    } else if let Some(ttl) = request.default_ttl {
        ttl
    } else if let (Some(fraction), Some(modified)) =
        (policy.heuristic, http_date(headers, header::LAST_MODIFIED))
    {
        let since = date.duration_since(modified).unwrap_or_default();
        since.mul_f32(fraction).min(policy.heuristic_max)
    } else {
        return Err(intrinsic("no-freshness"));
    };
    Ok(lifetime)
}

/// `corrected_initial_age` of RFC 9111 §4.2.3.
pub(crate) fn initial_age(
    headers: &HeaderMap,
    date: SystemTime,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Duration {
    let apparent_age = response_time.duration_since(date).unwrap_or_default();
    let response_delay = response_time
        .duration_since(request_time)
        .unwrap_or_default();
    let age_value = age_value(headers).unwrap_or_default();
    apparent_age.max(age_value + response_delay)
}

/// The origin's `Age` (RFC 9111 §5.1): the first member of the field (a list, or several field lines); `None`
/// when it is absent or that member is not delta-seconds (negative, fractional, not a number), so the response is
/// handled as if it had no `Age`. Values of 2^31 seconds or more count as 2^31.
fn age_value(headers: &HeaderMap) -> Option<Duration> {
    for line in headers.get_all(header::AGE) {
        let text = line.to_str().ok()?;
        // A line of empty members only (`Age: ,`) holds no first member; the next line may.
        if let Some(first) = control::split_list(text).next() {
            return control::delta_seconds(first);
        }
    }
    None
}

fn http_date(headers: &HeaderMap, name: HeaderName) -> Option<SystemTime> {
    let text = headers.get(name)?.to_str().ok()?;
    httpdate::parse_http_date(text.trim()).ok()
}

/// Tags from a response header: comma- or space-separated (`Cache-Tag: a,b`, `Surrogate-Key: a b`).
pub(crate) fn tags_from(headers: &HeaderMap, names: &[HeaderName], out: &mut Vec<String>) {
    for name in names {
        for value in headers.get_all(name) {
            let text = String::from_utf8_lossy(value.as_bytes());
            for tag in text.split(|c: char| c == ',' || c.is_ascii_whitespace()) {
                if !tag.is_empty() && !out.iter().any(|t| t == tag) {
                    out.push(tag.to_owned());
                }
            }
        }
    }
}

/// Headers that describe one connection, not the response (RFC 9110 §7.6.1), plus `Proxy-Authenticate` and `Age`
/// (recomputed on every hit).
pub(crate) fn strip_for_storage(headers: &mut HeaderMap) {
    tower_kit_core::strip_hop_by_hop(headers);
    headers.remove(header::PROXY_AUTHENTICATE);
    headers.remove(header::AGE);
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Response;

    fn policy() -> StorePolicy {
        StorePolicy {
            cookie_bypass: true,
            strip_set_cookie: false,
            heuristic: None,
            heuristic_max: Duration::from_secs(86_400),
            any_status: true,
            targeted: vec![HeaderName::from_static("cdn-cache-control")],
        }
    }

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600)
    }

    fn facts() -> RequestFacts {
        RequestFacts {
            is_get: true,
            authorization: false,
            cookie: false,
            default_ttl: None,
            request_time: t0(),
        }
    }

    fn head(status: u16, headers: &[(&str, &str)]) -> response::Parts {
        let mut b = Response::builder().status(status);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn date(offset_secs: i64) -> String {
        let t = if offset_secs >= 0 {
            t0() + Duration::from_secs(offset_secs as u64)
        } else {
            t0() - Duration::from_secs((-offset_secs) as u64)
        };
        httpdate::fmt_http_date(t)
    }

    /// (name, request, policy, status, headers, expected lifetime in seconds or the reason it is not stored)
    #[test]
    fn rfc9111_storage_table() {
        let auth = RequestFacts {
            authorization: true,
            ..facts()
        };
        let cookie = RequestFacts {
            cookie: true,
            ..facts()
        };
        let default_60 = RequestFacts {
            default_ttl: Some(Duration::from_secs(60)),
            ..facts()
        };
        let head_req = RequestFacts {
            is_get: false,
            ..facts()
        };
        let strip = StorePolicy {
            strip_set_cookie: true,
            ..policy()
        };
        let no_cookie_bypass = StorePolicy {
            cookie_bypass: false,
            ..policy()
        };
        let heuristic = StorePolicy {
            heuristic: Some(0.1),
            ..policy()
        };
        let legacy = StorePolicy {
            any_status: false,
            ..policy()
        };
        let untargeted = StorePolicy {
            targeted: Vec::new(),
            ..policy()
        };
        let (d0, exp_60, lm_1000) = (date(0), date(60), date(-1000));
        type Row<'a> = (
            &'a str,
            &'a RequestFacts,
            &'a StorePolicy,
            u16,
            Vec<(&'a str, &'a str)>,
            Result<u64, &'a str>,
        );
        let p = policy();
        let f = facts();
        let rows: Vec<Row<'_>> = vec![
            (
                "max-age",
                &f,
                &p,
                200,
                vec![("cache-control", "max-age=30")],
                Ok(30),
            ),
            (
                "s-maxage wins",
                &f,
                &p,
                200,
                vec![("cache-control", "max-age=30, s-maxage=90")],
                Ok(90),
            ),
            (
                "max-age beats Expires",
                &f,
                &p,
                200,
                vec![
                    ("cache-control", "max-age=5"),
                    ("date", &d0),
                    ("expires", &exp_60),
                ],
                Ok(5),
            ),
            (
                "Expires - Date",
                &f,
                &p,
                200,
                vec![("date", &d0), ("expires", &exp_60)],
                Ok(60),
            ),
            (
                "invalid Expires is stale",
                &f,
                &p,
                200,
                vec![("expires", "0")],
                Err("stale"),
            ),
            (
                "invalid max-age is stale",
                &f,
                &p,
                200,
                vec![("cache-control", "max-age=soon")],
                Err("stale"),
            ),
            (
                "max-age=0",
                &f,
                &p,
                200,
                vec![("cache-control", "max-age=0")],
                Err("stale"),
            ),
            (
                "Age eats freshness",
                &f,
                &p,
                200,
                vec![("cache-control", "max-age=30"), ("age", "30")],
                Err("stale"),
            ),
            ("no freshness", &f, &p, 200, vec![], Err("no-freshness")),
            (
                "no heuristic unless configured",
                &f,
                &p,
                200,
                vec![("last-modified", &lm_1000), ("date", &d0)],
                Err("no-freshness"),
            ),
            (
                "heuristic 10%",
                &f,
                &heuristic,
                200,
                vec![("last-modified", &lm_1000), ("date", &d0)],
                Ok(100),
            ),
            ("default TTL", &default_60, &p, 200, vec![], Ok(60)),
            (
                "default TTL not for 302",
                &default_60,
                &p,
                302,
                vec![],
                Err("no-freshness"),
            ),
            (
                "302 with max-age",
                &f,
                &p,
                302,
                vec![("cache-control", "max-age=10")],
                Ok(10),
            ),
            (
                "404 with max-age",
                &f,
                &p,
                404,
                vec![("cache-control", "max-age=10")],
                Ok(10),
            ),
            (
                "500 with max-age",
                &f,
                &p,
                500,
                vec![("cache-control", "max-age=10")],
                Ok(10),
            ),
            (
                "500 never, with any_status off",
                &f,
                &legacy,
                500,
                vec![("cache-control", "max-age=10")],
                Err("status"),
            ),
            (
                "unregistered 599 with s-maxage",
                &f,
                &p,
                599,
                vec![("cache-control", "s-maxage=10")],
                Ok(10),
            ),
            (
                "unregistered 299 with Expires",
                &f,
                &p,
                299,
                vec![("date", &d0), ("expires", &exp_60)],
                Ok(60),
            ),
            (
                "503 without freshness: no default TTL",
                &default_60,
                &p,
                503,
                vec![],
                Err("no-freshness"),
            ),
            (
                "404 without freshness: default TTL",
                &default_60,
                &p,
                404,
                vec![],
                Ok(60),
            ),
            (
                "public 499 without freshness: default TTL",
                &default_60,
                &p,
                499,
                vec![("cache-control", "public")],
                Ok(60),
            ),
            (
                "public 500: heuristic freshness",
                &f,
                &heuristic,
                500,
                vec![
                    ("cache-control", "public"),
                    ("last-modified", &lm_1000),
                    ("date", &d0),
                ],
                Ok(100),
            ),
            (
                "1xx never",
                &f,
                &p,
                103,
                vec![("cache-control", "max-age=10")],
                Err("informational"),
            ),
            (
                "304 never",
                &f,
                &p,
                304,
                vec![("cache-control", "max-age=10")],
                Err("status"),
            ),
            (
                "must-understand with an understood status ignores no-store",
                &f,
                &p,
                200,
                vec![("cache-control", "must-understand, no-store, max-age=10")],
                Ok(10),
            ),
            (
                "must-understand with a 502 ignores no-store",
                &f,
                &p,
                502,
                vec![("cache-control", "must-understand, no-store, max-age=10")],
                Ok(10),
            ),
            (
                "must-understand with an unregistered status",
                &f,
                &p,
                599,
                vec![("cache-control", "must-understand, max-age=10")],
                Err("must-understand"),
            ),
            (
                "CDN-Cache-Control replaces Cache-Control",
                &f,
                &p,
                200,
                vec![
                    ("cache-control", "max-age=5"),
                    ("cdn-cache-control", "max-age=60"),
                ],
                Ok(60),
            ),
            (
                "CDN-Cache-Control no-store beats Cache-Control",
                &f,
                &p,
                200,
                vec![
                    ("cache-control", "public, max-age=60"),
                    ("cdn-cache-control", "no-store"),
                ],
                Err("no-store"),
            ),
            (
                "CDN-Cache-Control replaces Expires",
                &f,
                &p,
                200,
                vec![
                    ("date", &d0),
                    ("expires", &exp_60),
                    ("cdn-cache-control", "public"),
                ],
                Err("no-freshness"),
            ),
            (
                "CDN-Cache-Control lets a private Cache-Control be stored",
                &f,
                &p,
                200,
                vec![
                    ("cache-control", "private, no-store"),
                    ("cdn-cache-control", "max-age=20"),
                ],
                Ok(20),
            ),
            (
                "an invalid CDN-Cache-Control is ignored",
                &f,
                &p,
                200,
                vec![
                    ("cache-control", "max-age=5"),
                    ("cdn-cache-control", "max-age=60,"),
                ],
                Ok(5),
            ),
            (
                "CDN-Cache-Control off",
                &f,
                &untargeted,
                200,
                vec![
                    ("cache-control", "max-age=5"),
                    ("cdn-cache-control", "max-age=60"),
                ],
                Ok(5),
            ),
            (
                "206 never",
                &f,
                &p,
                206,
                vec![("cache-control", "max-age=10")],
                Err("status"),
            ),
            (
                "no-store",
                &f,
                &p,
                200,
                vec![("cache-control", "public, max-age=30, no-store")],
                Err("no-store"),
            ),
            (
                "private",
                &f,
                &p,
                200,
                vec![("cache-control", "private, max-age=30")],
                Err("private"),
            ),
            (
                "no-cache",
                &f,
                &p,
                200,
                vec![("cache-control", "no-cache, max-age=30")],
                Err("no-cache"),
            ),
            (
                "no-cache with a validator: stored, validated before each use",
                &f,
                &p,
                200,
                vec![("cache-control", "no-cache"), ("etag", "\"v1\"")],
                Ok(0),
            ),
            (
                "max-age=0 with a validator: stored to be validated",
                &f,
                &p,
                200,
                vec![("cache-control", "max-age=0"), ("last-modified", &lm_1000)],
                Ok(0),
            ),
            (
                "validator without freshness information: not stored",
                &f,
                &p,
                200,
                vec![("etag", "\"v1\"")],
                Err("no-freshness"),
            ),
            (
                "Authorization without public",
                &auth,
                &p,
                200,
                vec![("cache-control", "max-age=30")],
                Err("authorization"),
            ),
            (
                "Authorization with public",
                &auth,
                &p,
                200,
                vec![("cache-control", "public, max-age=30")],
                Ok(30),
            ),
            (
                "Authorization with s-maxage",
                &auth,
                &p,
                200,
                vec![("cache-control", "s-maxage=20")],
                Ok(20),
            ),
            (
                "Authorization with must-revalidate",
                &auth,
                &p,
                200,
                vec![("cache-control", "must-revalidate, max-age=7")],
                Ok(7),
            ),
            (
                "Cookie without public",
                &cookie,
                &p,
                200,
                vec![("cache-control", "max-age=30")],
                Err("cookie"),
            ),
            (
                "Cookie with public",
                &cookie,
                &p,
                200,
                vec![("cache-control", "public, max-age=30")],
                Ok(30),
            ),
            (
                "Cookie, pure RFC",
                &cookie,
                &no_cookie_bypass,
                200,
                vec![("cache-control", "max-age=30")],
                Ok(30),
            ),
            (
                "Set-Cookie",
                &f,
                &p,
                200,
                vec![
                    ("cache-control", "public, max-age=30"),
                    ("set-cookie", "a=1"),
                ],
                Err("set-cookie"),
            ),
            (
                "Set-Cookie stripped",
                &f,
                &strip,
                200,
                vec![("cache-control", "max-age=30"), ("set-cookie", "a=1")],
                Ok(30),
            ),
            (
                "Vary: *",
                &f,
                &p,
                200,
                vec![("cache-control", "max-age=30"), ("vary", "accept, *")],
                Err("vary-star"),
            ),
            (
                "HEAD is not stored",
                &head_req,
                &p,
                200,
                vec![("cache-control", "max-age=30")],
                Err("method"),
            ),
        ];
        for (name, req, pol, status, headers, want) in rows {
            let got = decide(req, &head(status, &headers), pol, t0())
                .map(|s| s.freshness_lifetime.as_secs())
                .map_err(|e| e.reason);
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn intrinsic_reasons_are_marked() {
        let auth = RequestFacts {
            authorization: true,
            ..facts()
        };
        let e = decide(
            &auth,
            &head(200, &[("cache-control", "max-age=1")]),
            &policy(),
            t0(),
        )
        .unwrap_err();
        assert!(!e.intrinsic);
        let e = decide(
            &facts(),
            &head(200, &[("cache-control", "no-store")]),
            &policy(),
            t0(),
        )
        .unwrap_err();
        assert!(e.intrinsic);
    }

    #[test]
    fn initial_age_follows_rfc9111() {
        let h = head(200, &[("age", "10")]);
        // Age 10 plus 2 s of response delay; Date equals response time.
        let age = initial_age(&h.headers, t0(), t0() - Duration::from_secs(2), t0());
        assert_eq!(age, Duration::from_secs(12));
        // A Date 50 s in the past (apparent age) beats a small Age.
        let age = initial_age(&h.headers, t0() - Duration::from_secs(50), t0(), t0());
        assert_eq!(age, Duration::from_secs(50));
        // Garbage Age is ignored.
        let h = head(200, &[("age", "-5")]);
        assert_eq!(initial_age(&h.headers, t0(), t0(), t0()), Duration::ZERO);
    }

    #[test]
    fn age_value_follows_rfc9111_5_1() {
        let age = |lines: &[&str]| {
            let pairs: Vec<_> = lines.iter().map(|v| ("age", *v)).collect();
            age_value(&head(200, &pairs).headers).map(|d| d.as_secs())
        };
        assert_eq!(age(&[]), None);
        assert_eq!(age(&["10"]), Some(10));
        assert_eq!(age(&["10, 50"]), Some(10), "a list: the first member");
        assert_eq!(age(&["10", "50"]), Some(10), "several lines: the first");
        assert_eq!(age(&[" , 7, 9"]), Some(7), "empty members are not members");
        assert_eq!(age(&[",", "8"]), Some(8));
        for bad in ["-5", "1.5", "ten", "0x10", "+3", "5 s", "\"\"", "-0"] {
            assert_eq!(age(&[bad]), None, "{bad}");
        }
        assert_eq!(age(&["abc, 10"]), None, "a bad first member is not skipped");
        assert_eq!(age(&["2147483648"]), Some(1 << 31));
        assert_eq!(age(&["99999999999999999999999"]), Some(1 << 31));
        assert_eq!(age(&["2147483647"]), Some((1 << 31) - 1));
    }

    #[test]
    fn vary_names_and_flags() {
        let s = decide(
            &facts(),
            &head(
                200,
                &[
                    ("cache-control", "public, max-age=30"),
                    ("vary", "X-B, accept-encoding"),
                ],
            ),
            &policy(),
            t0(),
        )
        .unwrap();
        assert_eq!(
            s.vary,
            vec![
                HeaderName::from_static("accept-encoding"),
                HeaderName::from_static("x-b")
            ]
        );
        assert!(s.public && s.shared_with_authorization);
        let flags = |cc: &str| {
            let s = decide(
                &facts(),
                &head(200, &[("cache-control", cc), ("etag", "\"e\"")]),
                &policy(),
                t0(),
            )
            .unwrap();
            (s.no_cache, s.must_revalidate)
        };
        assert_eq!(flags("no-cache"), (true, false));
        assert_eq!(flags("max-age=5, must-revalidate"), (false, true));
        assert_eq!(flags("max-age=5, proxy-revalidate"), (false, true));
        assert_eq!(
            flags("s-maxage=5"),
            (false, true),
            "s-maxage implies proxy-revalidate"
        );
        assert_eq!(flags("max-age=5"), (false, false));
        // A status stored only on the response's word is never served stale.
        let status_flags = |status: u16, policy: &StorePolicy| {
            decide(
                &facts(),
                &head(status, &[("cache-control", "max-age=5")]),
                policy,
                t0(),
            )
            .unwrap()
            .must_revalidate
        };
        assert!(status_flags(500, &policy()));
        assert!(status_flags(599, &policy()));
        assert!(status_flags(302, &policy()));
        assert!(!status_flags(404, &policy()));
        assert!(!status_flags(200, &policy()));
        let legacy = StorePolicy {
            any_status: false,
            ..policy()
        };
        assert!(!status_flags(302, &legacy));
        // A targeted field's revalidation directives count, Cache-Control's do not.
        let d = decide(
            &facts(),
            &head(
                200,
                &[
                    ("cache-control", "max-age=5, must-revalidate"),
                    ("cdn-cache-control", "max-age=5, stale-if-error=60"),
                ],
            ),
            &policy(),
            t0(),
        )
        .unwrap();
        assert!(!d.must_revalidate && d.stale_if_error == Some(Duration::from_secs(60)));
    }

    #[test]
    fn strips_hop_by_hop() {
        let mut h = head(
            200,
            &[
                ("connection", "x-hop, close"),
                ("x-hop", "1"),
                ("keep-alive", "5"),
                ("age", "3"),
                ("x-end", "2"),
            ],
        )
        .headers;
        strip_for_storage(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-end"));
    }

    #[test]
    fn tags_split_on_commas_and_spaces() {
        let h = head(200, &[("cache-tag", "a, b"), ("surrogate-key", "b c  d")]).headers;
        let mut out = Vec::new();
        tags_from(
            &h,
            &[
                HeaderName::from_static("cache-tag"),
                HeaderName::from_static("surrogate-key"),
            ],
            &mut out,
        );
        assert_eq!(out, ["a", "b", "c", "d"]);
    }
}
