//! `Cache-Control` parsing (RFC 9111 §5.2), for responses and requests.

use http::{HeaderMap, header};
use std::time::Duration;

/// The response directives the cache acts on. Unknown directives are ignored, as RFC 9111 §5.2.3 says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ResponseDirectives {
    pub(crate) no_store: bool,
    pub(crate) no_cache: bool,
    pub(crate) private: bool,
    pub(crate) public: bool,
    pub(crate) must_revalidate: bool,
    pub(crate) proxy_revalidate: bool,
    /// RFC 9111 §5.2.2.3: store only when the cache understands the status code; `no-store` is then ignored.
    pub(crate) must_understand: bool,
    pub(crate) max_age: Option<Duration>,
    pub(crate) s_maxage: Option<Duration>,
    /// RFC 5861; parsed now, acted on by stale serving.
    pub(crate) stale_while_revalidate: Option<Duration>,
    /// RFC 5861; parsed now, acted on by stale serving.
    pub(crate) stale_if_error: Option<Duration>,
    /// A directive had an invalid value (`max-age=abc`): RFC 9111 §4.2.1 says treat the response as stale.
    pub(crate) invalid_freshness: bool,
}

impl ResponseDirectives {
    pub(crate) fn parse(headers: &HeaderMap) -> Self {
        let mut out = Self::default();
        for (name, value) in directives(headers) {
            out.set(&name, true, value.and_then(delta_seconds));
        }
        out
    }

    /// Sets one directive from `Cache-Control` or a targeted field (RFC 9213). `on` false turns a flag off (a
    /// Structured Field `?0`); `seconds` is the value of a delta-seconds directive, `None` when it has none that
    /// reads. Unknown directives are ignored.
    pub(crate) fn set(&mut self, name: &str, on: bool, seconds: Option<Duration>) {
        let mut ignored = false;
        match name {
            "no-store" => self.no_store = on,
            // `no-cache="field"` is treated like `no-cache`: conservative, never wrong.
            "no-cache" => self.no_cache = on,
            "private" => self.private = on,
            "public" => self.public = on,
            "must-revalidate" => self.must_revalidate = on,
            "proxy-revalidate" => self.proxy_revalidate = on,
            "must-understand" => self.must_understand = on,
            "max-age" => read_seconds(seconds, &mut self.max_age, &mut self.invalid_freshness),
            "s-maxage" => read_seconds(seconds, &mut self.s_maxage, &mut self.invalid_freshness),
            "stale-while-revalidate" => {
                read_seconds(seconds, &mut self.stale_while_revalidate, &mut ignored)
            }
            "stale-if-error" => read_seconds(seconds, &mut self.stale_if_error, &mut ignored),
            _ => {}
        }
    }
}

/// The request directives the cache acts on (RFC 9111 §5.2.1), with `Pragma: no-cache` read as `no-cache` when the
/// request has no `Cache-Control` (§5.4).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RequestDirectives {
    /// Do not answer from a stored response without validating it with the origin.
    pub(crate) no_cache: bool,
    /// Do not store the response to this request.
    pub(crate) no_store: bool,
    /// Do not answer with a response older than this.
    pub(crate) max_age: Option<Duration>,
    /// A stale response is acceptable: `Some(None)` of any staleness, `Some(Some(d))` up to `d` past its freshness.
    pub(crate) max_stale: Option<Option<Duration>>,
    /// The response must stay fresh for at least this long.
    pub(crate) min_fresh: Option<Duration>,
    /// Answer only from the cache (504 when nothing stored fits).
    pub(crate) only_if_cached: bool,
}

impl RequestDirectives {
    pub(crate) fn parse(headers: &HeaderMap) -> Self {
        let mut out = Self::default();
        if !headers.contains_key(header::CACHE_CONTROL) {
            out.no_cache = headers
                .get_all(header::PRAGMA)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(split_list)
                .any(|d| d.eq_ignore_ascii_case("no-cache"));
            return out;
        }
        // An invalid value is treated as the safest reading of the directive.
        for (name, value) in directives(headers) {
            let mut invalid = false;
            match name.as_str() {
                "no-cache" => out.no_cache = true,
                "no-store" => out.no_store = true,
                "only-if-cached" => out.only_if_cached = true,
                "max-age" => {
                    seconds(value, &mut out.max_age, &mut invalid);
                    if invalid {
                        out.max_age = Some(Duration::ZERO);
                    }
                }
                "min-fresh" => {
                    seconds(value, &mut out.min_fresh, &mut invalid);
                    if invalid {
                        out.min_fresh = None;
                    }
                }
                "max-stale" => match value {
                    None => out.max_stale = Some(None),
                    Some(_) => {
                        let mut d = None;
                        seconds(value, &mut d, &mut invalid);
                        // An unreadable `max-stale=` accepts no staleness.
                        if invalid || out.max_stale == Some(None) {
                            if invalid {
                                out.max_stale = None;
                            }
                        } else {
                            out.max_stale = Some(d);
                        }
                    }
                },
                _ => {}
            }
        }
        out
    }
}

/// Splits every `Cache-Control` field line into lowercase `(name, value)` pairs; quoted values lose their quotes.
/// Values that are not visible ASCII make the whole field line ignored.
pub(crate) fn directives(headers: &HeaderMap) -> impl Iterator<Item = (String, Option<&str>)> {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(split_list)
        .filter_map(|member| {
            let (name, value) = match member.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (member, None),
            };
            (!name.is_empty()).then(|| (name.to_ascii_lowercase(), value))
        })
}

/// Splits a comma-separated list, honouring quoted strings, and trims each member; empty members are dropped.
pub(crate) fn split_list(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        loop {
            let s = rest?;
            let mut quoted = false;
            let mut end = s.len();
            for (i, c) in s.char_indices() {
                match c {
                    '"' => quoted = !quoted,
                    ',' if !quoted => {
                        end = i;
                        break;
                    }
                    _ => {}
                }
            }
            let (member, next) = if end < s.len() {
                (&s[..end], Some(&s[end + 1..]))
            } else {
                (s, None)
            };
            rest = next;
            let member = member.trim();
            if !member.is_empty() {
                return Some(member);
            }
        }
    })
}

/// Delta-seconds (RFC 9111 §1.2.2): digits only (no sign, no fraction); values of 2^31 or more count as 2^31
/// seconds. `None` for anything else.
pub(crate) fn delta_seconds(text: &str) -> Option<Duration> {
    (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| Duration::from_secs(text.parse::<u64>().unwrap_or(u64::MAX).min(1 << 31)))
}

/// A directive's delta-seconds value into `out`, or `invalid` set when it has none that reads.
fn seconds(value: Option<&str>, out: &mut Option<Duration>, invalid: &mut bool) {
    read_seconds(value.and_then(delta_seconds), out, invalid);
}

/// A repeated directive keeps its smallest value: RFC 9111 §4.2.1 lets a cache treat conflicting duplicates as
/// stale, and the smallest is never less safe.
fn read_seconds(value: Option<Duration>, out: &mut Option<Duration>, invalid: &mut bool) {
    match value {
        Some(d) => *out = Some(out.map_or(d, |prev| prev.min(d))),
        None => *invalid = true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn cc(values: &[&str]) -> ResponseDirectives {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::CACHE_CONTROL, HeaderValue::from_str(v).unwrap());
        }
        ResponseDirectives::parse(&h)
    }

    #[test]
    fn parses_common_directives() {
        let d = cc(&["Public, MAX-AGE=30", "s-maxage=\"60\""]);
        assert!(d.public);
        assert_eq!(d.max_age, Some(Duration::from_secs(30)));
        assert_eq!(d.s_maxage, Some(Duration::from_secs(60)));
        assert!(!d.invalid_freshness);
        let d = cc(&["no-store,private , no-cache=\"set-cookie, x\""]);
        assert!(d.no_store && d.private && d.no_cache);
        let d = cc(&["stale-while-revalidate=5, stale-if-error=60, must-revalidate"]);
        assert_eq!(d.stale_while_revalidate, Some(Duration::from_secs(5)));
        assert_eq!(d.stale_if_error, Some(Duration::from_secs(60)));
        assert!(d.must_revalidate && !d.must_understand);
        assert!(cc(&["must-understand, no-store"]).must_understand);
    }

    #[test]
    fn bad_values_are_stale_not_errors() {
        for v in [
            "max-age=abc",
            "max-age=-1",
            "max-age",
            "max-age=1.5",
            "s-maxage=",
        ] {
            assert!(cc(&[v]).invalid_freshness, "{v}");
        }
        let d = cc(&["max-age=99999999999999999999999"]);
        assert_eq!(d.max_age, Some(Duration::from_secs(1 << 31)));
        assert_eq!(
            cc(&["max-age=60, max-age=10"]).max_age,
            Some(Duration::from_secs(10))
        );
    }

    fn req(pairs: &[(&str, &str)]) -> RequestDirectives {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        RequestDirectives::parse(&h)
    }

    #[test]
    fn request_directives() {
        let d = req(&[(
            "cache-control",
            "max-age=5, min-fresh=3, max-stale=10, only-if-cached, no-store",
        )]);
        assert_eq!(d.max_age, Some(Duration::from_secs(5)));
        assert_eq!(d.min_fresh, Some(Duration::from_secs(3)));
        assert_eq!(d.max_stale, Some(Some(Duration::from_secs(10))));
        assert!(d.only_if_cached && d.no_store && !d.no_cache);
        assert_eq!(req(&[("cache-control", "max-stale")]).max_stale, Some(None));
        assert_eq!(req(&[("cache-control", "max-stale=x")]).max_stale, None);
        assert_eq!(
            req(&[("cache-control", "max-age=soon")]).max_age,
            Some(Duration::ZERO),
            "an unreadable max-age asks for a validated response"
        );
        assert!(req(&[("pragma", "no-cache")]).no_cache);
        assert!(
            !req(&[("pragma", "no-cache"), ("cache-control", "max-age=9")]).no_cache,
            "Pragma is ignored when Cache-Control is present"
        );
        assert_eq!(req(&[]), RequestDirectives::default());
    }

    #[test]
    fn split_list_honours_quotes() {
        let parts: Vec<_> = split_list(r#"a, b="x,y" ,, c"#).collect();
        assert_eq!(parts, vec!["a", r#"b="x,y""#, "c"]);
    }
}
