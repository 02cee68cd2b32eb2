//! The headers the cache adds: `Age`, RFC 9211 `Cache-Status`, `X-Cache`, and the `cache` Server-Timing entry.

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use std::fmt::Write as _;

/// `Cache-Status` (RFC 9211).
pub(crate) static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
/// `X-Cache`.
pub(crate) static X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// What happened to a request, as `Cache-Status` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    /// Served from the store; `ttl` is the freshness left, in seconds.
    Hit { ttl: i64 },
    /// Waited for another request's origin call and served from its response.
    Collapsed {
        fwd: &'static str,
        status: StatusCode,
    },
    /// Served a stale entry: within `max-stale` (not forwarded), `stale-while-revalidate` (a background
    /// revalidation was started or is running), or `stale-if-error` (the refresh failed with `fwd_status`, or with
    /// an error when `None`). `ttl` is negative.
    Stale {
        ttl: i64,
        why: StaleWhy,
        fwd_status: Option<StatusCode>,
    },
    /// Validated with the origin (a `304`) and served from the refreshed entry. `fwd` is `stale` or `request`.
    Revalidated { fwd: &'static str },
    /// `only-if-cached` and nothing stored fits: a 504 made by the cache.
    OnlyIfCached,
    /// The origin could not be reached and the stored response may not be served stale (`must-revalidate`,
    /// `proxy-revalidate`, `no-cache`, `s-maxage`): a 504 made by the cache (RFC 9111 §4.2.4, §5.2.2.2).
    Disconnected,
    /// Went to the origin. `fwd` is `uri-miss`, `vary-miss`, `stale`, `bypass`, `method`; `detail` says why the
    /// response was not stored or why the cache was bypassed.
    Forward {
        fwd: &'static str,
        status: StatusCode,
        detail: Option<&'static str>,
    },
}

/// Why a stale entry was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StaleWhy {
    MaxStale,
    WhileRevalidate,
    IfError,
    /// The origin could not be reached (RFC 9111 §4.2.4), beyond any `stale-if-error`.
    Disconnected,
}

impl Mark {
    /// The `X-Cache` value.
    fn x_cache(self) -> &'static str {
        match self {
            Mark::Hit { .. } | Mark::Collapsed { .. } => "HIT",
            Mark::Stale { .. } => "STALE",
            Mark::Revalidated { .. } => "REVALIDATED",
            Mark::OnlyIfCached | Mark::Disconnected | Mark::Forward { .. } => "MISS",
        }
    }

    /// The Server-Timing description.
    pub(crate) fn timing(self) -> &'static str {
        match self {
            Mark::Hit { .. } => "hit",
            Mark::Collapsed { .. } => "coalesced",
            Mark::Stale { .. } => "stale",
            Mark::Revalidated { .. } => "revalidated",
            Mark::OnlyIfCached | Mark::Disconnected => "miss",
            Mark::Forward {
                fwd: "bypass" | "method",
                ..
            } => "bypass",
            Mark::Forward { .. } => "miss",
        }
    }
}

/// Appends this cache's `Cache-Status` member (after any from caches nearer the origin) and sets `X-Cache`.
pub(crate) fn mark(headers: &mut HeaderMap, name: &str, mark: Mark, x_cache: bool) {
    let mut value = String::with_capacity(name.len() + 40);
    value.push_str(name);
    match mark {
        Mark::Hit { ttl } => {
            let _ = write!(value, "; hit; ttl={ttl}");
        }
        Mark::Collapsed { fwd, status } => {
            let _ = write!(
                value,
                "; fwd={fwd}; fwd-status={}; collapsed",
                status.as_u16()
            );
        }
        Mark::Stale {
            ttl,
            why: StaleWhy::MaxStale,
            ..
        } => {
            let _ = write!(value, "; hit; ttl={ttl}; detail=max-stale");
        }
        Mark::Stale {
            ttl,
            why,
            fwd_status,
        } => {
            value.push_str("; fwd=stale");
            if let Some(status) = fwd_status {
                let _ = write!(value, "; fwd-status={}", status.as_u16());
            }
            let detail = match why {
                StaleWhy::IfError => "stale-if-error",
                StaleWhy::Disconnected => "disconnected",
                StaleWhy::WhileRevalidate | StaleWhy::MaxStale => "stale-while-revalidate",
            };
            let _ = write!(value, "; ttl={ttl}; detail={detail}");
        }
        Mark::Revalidated { fwd } => {
            let _ = write!(value, "; fwd={fwd}; fwd-status=304");
        }
        Mark::OnlyIfCached => value.push_str("; fwd=miss; detail=only-if-cached"),
        Mark::Disconnected => value.push_str("; fwd=stale; detail=must-revalidate"),
        Mark::Forward {
            fwd,
            status,
            detail,
        } => {
            let _ = write!(value, "; fwd={fwd}; fwd-status={}", status.as_u16());
            if let Some(d) = detail {
                let _ = write!(value, "; detail={d}");
            }
        }
    }
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.append(CACHE_STATUS.clone(), v);
    }
    if x_cache {
        headers.insert(X_CACHE.clone(), HeaderValue::from_static(mark.x_cache()));
    }
}

/// Sets `Age` in whole seconds.
pub(crate) fn set_age(headers: &mut HeaderMap, secs: u64) {
    headers.insert(header::AGE, HeaderValue::from(secs));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let mut h = HeaderMap::new();
        h.insert(
            CACHE_STATUS.clone(),
            HeaderValue::from_static("origin-cdn; hit"),
        );
        mark(&mut h, "tower-kit", Mark::Hit { ttl: -3 }, true);
        let all: Vec<_> = h.get_all(&CACHE_STATUS).iter().collect();
        assert_eq!(all, ["origin-cdn; hit", "tower-kit; hit; ttl=-3"]);
        assert_eq!(h[&X_CACHE], "HIT");

        let mut h = HeaderMap::new();
        let m = Mark::Forward {
            fwd: "uri-miss",
            status: StatusCode::OK,
            detail: Some("no-store"),
        };
        mark(&mut h, "c", m, true);
        assert_eq!(
            h[&CACHE_STATUS],
            "c; fwd=uri-miss; fwd-status=200; detail=no-store"
        );
        assert_eq!(h[&X_CACHE], "MISS");
        assert_eq!(m.timing(), "miss");

        let mut h = HeaderMap::new();
        let m = Mark::Collapsed {
            fwd: "uri-miss",
            status: StatusCode::OK,
        };
        mark(&mut h, "c", m, false);
        assert_eq!(
            h[&CACHE_STATUS],
            "c; fwd=uri-miss; fwd-status=200; collapsed"
        );
        assert!(!h.contains_key(&X_CACHE));
        assert_eq!(m.timing(), "coalesced");

        let cases = [
            (
                Mark::Stale {
                    ttl: -4,
                    why: StaleWhy::WhileRevalidate,
                    fwd_status: None,
                },
                "c; fwd=stale; ttl=-4; detail=stale-while-revalidate",
                "STALE",
            ),
            (
                Mark::Stale {
                    ttl: -9,
                    why: StaleWhy::IfError,
                    fwd_status: Some(StatusCode::BAD_GATEWAY),
                },
                "c; fwd=stale; fwd-status=502; ttl=-9; detail=stale-if-error",
                "STALE",
            ),
            (
                Mark::Stale {
                    ttl: -1,
                    why: StaleWhy::MaxStale,
                    fwd_status: None,
                },
                "c; hit; ttl=-1; detail=max-stale",
                "STALE",
            ),
            (
                Mark::Revalidated { fwd: "request" },
                "c; fwd=request; fwd-status=304",
                "REVALIDATED",
            ),
            (
                Mark::OnlyIfCached,
                "c; fwd=miss; detail=only-if-cached",
                "MISS",
            ),
            (
                Mark::Stale {
                    ttl: -30,
                    why: StaleWhy::Disconnected,
                    fwd_status: None,
                },
                "c; fwd=stale; ttl=-30; detail=disconnected",
                "STALE",
            ),
            (
                Mark::Disconnected,
                "c; fwd=stale; detail=must-revalidate",
                "MISS",
            ),
        ];
        for (m, status, x) in cases {
            let mut h = HeaderMap::new();
            mark(&mut h, "c", m, true);
            assert_eq!(h[&CACHE_STATUS], status);
            assert_eq!(h[&X_CACHE], x);
        }
    }
}
