//! What a store holds: a response with the timestamps the cache needs to decide freshness and `Age` itself.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, StatusCode};
use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

/// A stored response.
///
/// The cache decides freshness from the timestamps in here and its own [`Clock`](crate::Clock); a store's expiry is
/// only garbage collection. Stores that serialise entries (Redis) must keep every field; `FORMAT_VERSION` changes
/// when a field is added, and values of another version are read back as a miss.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The response status.
    pub status: StatusCode,
    /// The response headers as stored: hop-by-hop headers, `Age`, and (when configured) `Set-Cookie` and tag
    /// headers removed.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// Trailers, if the body had any.
    pub trailers: Option<HeaderMap>,
    /// When the request that produced this response was sent to the origin (RFC 9111 §4.2.3 `request_time`).
    pub request_time: SystemTime,
    /// When the response head arrived (RFC 9111 §4.2.3 `response_time`).
    pub response_time: SystemTime,
    /// The age the response already had when it arrived (the origin's `Age`, corrected for transit).
    pub initial_age: Duration,
    /// How long the response is fresh, counted from its creation at the origin.
    pub freshness_lifetime: Duration,
    /// The request headers the response varies on (lower case, sorted) and the normalised values of the request
    /// that produced it (`None`: the header was absent). Empty when the response has no `Vary`.
    pub vary: Vec<(HeaderName, Option<String>)>,
    /// Invalidation tags.
    pub tags: Vec<String>,
    /// The response said `public`: requests with `Cookie` may be served it.
    pub public: bool,
    /// The response said `public`, `s-maxage` or `must-revalidate`: requests with `Authorization` may be served it
    /// (RFC 9111 §3.5).
    pub shared_with_authorization: bool,
    /// The response said `no-cache`: it is validated with the origin before every use.
    pub no_cache: bool,
    /// The response said `must-revalidate`, `proxy-revalidate` or `s-maxage`: once stale it is never served
    /// without validation (no `stale-while-revalidate`, `stale-if-error` or `max-stale`).
    pub must_revalidate: bool,
    /// The response's `stale-while-revalidate` (RFC 5861), if it had one.
    pub stale_while_revalidate: Option<Duration>,
    /// The response's `stale-if-error` (RFC 5861), if it had one.
    pub stale_if_error: Option<Duration>,
}

impl Entry {
    /// The version of the serialised layout; stores write it and treat other versions as misses.
    pub const FORMAT_VERSION: u8 = 2;

    /// The current age (RFC 9111 §4.2.3): the initial age plus the time resident in the cache.
    pub fn age(&self, now: SystemTime) -> Duration {
        self.initial_age + now.duration_since(self.response_time).unwrap_or_default()
    }

    /// Whether the entry is fresh at `now`.
    pub fn is_fresh(&self, now: SystemTime) -> bool {
        self.age(now) < self.freshness_lifetime
    }

    /// Freshness left at `now`, negative when stale, in whole seconds (the `ttl` of `Cache-Status`).
    pub fn ttl_secs(&self, now: SystemTime) -> i64 {
        let life = self.freshness_lifetime.as_secs() as i64;
        life - self.age(now).as_secs() as i64
    }

    /// How long past its freshness the entry is at `now`; `None` while fresh.
    pub fn staleness(&self, now: SystemTime) -> Option<Duration> {
        let age = self.age(now);
        (age >= self.freshness_lifetime).then(|| age - self.freshness_lifetime)
    }

    /// Whether the entry has a validator (`ETag` or `Last-Modified`) for a conditional request to the origin.
    pub fn has_validator(&self) -> bool {
        crate::conditional::has_validator(&self.headers)
    }

    /// When the entry stops being fresh, by the cache's clock.
    pub fn fresh_until(&self) -> SystemTime {
        self.response_time + self.freshness_lifetime.saturating_sub(self.initial_age)
    }

    /// An estimate of the memory the entry takes, in bytes: the store's weigher and `max_bytes` use it.
    pub fn weight(&self) -> usize {
        fn map(h: &HeaderMap) -> usize {
            h.iter().map(|(n, v)| n.as_str().len() + v.len() + 32).sum()
        }
        const FIXED: usize = 160;
        FIXED
            + self.body.len()
            + map(&self.headers)
            + self.trailers.as_ref().map_or(0, map)
            + self
                .vary
                .iter()
                .map(|(n, v)| n.as_str().len() + v.as_ref().map_or(0, String::len) + 32)
                .sum::<usize>()
            + self.tags.iter().map(|t| t.len() + 24).sum::<usize>()
    }
}

/// The header names a response varies on, stored under the primary key when the response has a `Vary`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variants {
    /// The request headers, lower case and sorted.
    pub headers: Vec<HeaderName>,
    /// Until when some variant may still be fresh: the record is kept at least that long.
    pub until: SystemTime,
}

/// A value in a [`Store`](crate::store::Store).
#[derive(Debug, Clone, PartialEq)]
pub enum StoredValue {
    /// A response.
    Response(Arc<Entry>),
    /// The primary key of a response with `Vary`: the entries live under secondary keys.
    Variants(Arc<Variants>),
    /// Hit-for-pass: the last response for this key could not be stored, so requests go straight to the origin,
    /// without waiting for each other, until `until`.
    Pass {
        /// When the marker lapses, by the cache's clock.
        until: SystemTime,
    },
}

impl StoredValue {
    /// The entry's tags (only responses have tags).
    pub fn tags(&self) -> &[String] {
        match self {
            StoredValue::Response(e) => &e.tags,
            _ => &[],
        }
    }

    /// The weight in bytes, as [`Entry::weight`] for responses and a small constant otherwise.
    pub fn weight(&self) -> usize {
        match self {
            StoredValue::Response(e) => e.weight(),
            StoredValue::Variants(v) => {
                64 + v
                    .headers
                    .iter()
                    .map(|h| h.as_str().len() + 8)
                    .sum::<usize>()
            }
            StoredValue::Pass { .. } => 48,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_and_freshness() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let e = Entry {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from_static(b"x"),
            trailers: None,
            request_time: t0,
            response_time: t0,
            initial_age: Duration::from_secs(5),
            freshness_lifetime: Duration::from_secs(30),
            vary: vec![],
            tags: vec![],
            public: true,
            shared_with_authorization: true,
            no_cache: false,
            must_revalidate: false,
            stale_while_revalidate: None,
            stale_if_error: None,
        };
        assert_eq!(e.age(t0), Duration::from_secs(5));
        assert_eq!(
            e.age(t0 - Duration::from_secs(10)),
            Duration::from_secs(5),
            "clock behind: no negative age"
        );
        assert!(e.is_fresh(t0 + Duration::from_secs(24)));
        assert!(!e.is_fresh(t0 + Duration::from_secs(25)));
        assert_eq!(e.ttl_secs(t0 + Duration::from_secs(27)), -2);
        assert_eq!(e.fresh_until(), t0 + Duration::from_secs(25));
        assert_eq!(e.staleness(t0 + Duration::from_secs(24)), None);
        assert_eq!(
            e.staleness(t0 + Duration::from_secs(27)),
            Some(Duration::from_secs(2))
        );
        assert!(!e.has_validator());
        assert!(e.weight() > 160);
    }
}
