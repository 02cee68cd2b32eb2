//! What a store holds: a response with the timestamps the cache needs to decide freshness and `Age` itself.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

/// A stored response.
///
/// The cache decides freshness from the timestamps in here and its own [`WallClock`](crate::WallClock); a store's expiry is
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
    /// The response said `must-revalidate`, `proxy-revalidate` or `s-maxage`, or its status is not heuristically
    /// cacheable (RFC 9110 §15.1: it was stored only on its explicit freshness): once stale it is never served
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

    /// The heap memory the entry takes, in bytes: the store's weigher and `max_bytes` use it.
    ///
    /// It counts every allocation the entry owns (the `Arc` that holds it, the body, the header map's tables and
    /// values, trailers, `Vary` values and tags), each rounded up as a typical `malloc` rounds a block (16-byte
    /// granularity, 8 bytes of header, 32 bytes at least). The count is exact for a [`compacted`](Self::compacted)
    /// entry, which is what the in-process store keeps; for any other entry it is a lower bound, since a `Bytes`
    /// may be a slice of a larger allocation that it keeps alive.
    pub fn weight(&self) -> usize {
        block(ARC_HEADER + std::mem::size_of::<Entry>())
            + bytes_weight(self.body.len())
            + map_weight(&self.headers)
            + self.trailers.as_ref().map_or(0, map_weight)
            + block(self.vary.capacity() * std::mem::size_of::<(HeaderName, Option<String>)>())
            + self
                .vary
                .iter()
                .map(|(n, v)| name_weight(n) + v.as_ref().map_or(0, |v| block(v.capacity())))
                .sum::<usize>()
            + block(self.tags.capacity() * std::mem::size_of::<String>())
            + self.tags.iter().map(|t| block(t.capacity())).sum::<usize>()
    }

    /// A copy that owns exactly the memory [`weight`](Self::weight) counts: the body, every header name and value,
    /// trailers, `Vary` values and tags are copied into allocations of their own size.
    ///
    /// A `Bytes` handed to the cache may be a slice of a much larger allocation that it keeps alive: a connection's
    /// read buffer (a body or header value parsed by hyper), a compressor's output buffer allocated at its bound. An
    /// entry holding such slices keeps far more memory than its weight says, and a store bounded by weight is then
    /// no memory bound at all. [`MokaStore`](crate::MokaStore) stores this copy of every entry it is given, so
    /// `max_bytes` bounds what it holds whatever the inner services handed the cache. The copy is made once per
    /// stored response (never on a hit).
    #[must_use]
    pub fn compacted(&self) -> Entry {
        Entry {
            status: self.status,
            headers: compact_map(&self.headers),
            body: Bytes::copy_from_slice(&self.body),
            trailers: self.trailers.as_ref().map(compact_map),
            request_time: self.request_time,
            response_time: self.response_time,
            initial_age: self.initial_age,
            freshness_lifetime: self.freshness_lifetime,
            vary: self
                .vary
                .iter()
                .map(|(n, v)| (compact_name(n), v.as_deref().map(str::to_owned)))
                .collect(),
            tags: self.tags.iter().map(|t| t.as_str().to_owned()).collect(),
            public: self.public,
            shared_with_authorization: self.shared_with_authorization,
            no_cache: self.no_cache,
            must_revalidate: self.must_revalidate,
            stale_while_revalidate: self.stale_while_revalidate,
            stale_if_error: self.stale_if_error,
        }
    }
}

/// The two reference counts in front of an `Arc`'s value.
const ARC_HEADER: usize = 16;
/// `bytes`' shared header (buffer, capacity, reference count), allocated the first time a `Bytes` made from a
/// vector is cloned: every hit clones the body and the header values, so a stored entry soon has one each.
const BYTES_SHARED: usize = 24;
/// One slot of a `HeaderMap`'s entry table (`Bucket<HeaderValue>`: hash, name, value, links).
const HEADER_BUCKET: usize = 104;
/// One slot of a `HeaderMap`'s table of extra values for repeated names (`ExtraValue<HeaderValue>`).
const HEADER_EXTRA: usize = 72;
/// One slot of a `HeaderMap`'s index table (`Pos`).
const HEADER_POS: usize = 4;

/// What `malloc` takes for a block of `n` bytes: 8 bytes of header, 16-byte granularity, 32 bytes at least.
pub(crate) const fn block(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        let chunk = (n + 8).next_multiple_of(16);
        if chunk < 32 { 32 } else { chunk }
    }
}

/// A `Bytes` of `len` bytes that owns its allocation, once shared.
fn bytes_weight(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        block(len) + block(BYTES_SHARED)
    }
}

/// A header name: standard names are static (nothing on the heap), custom names own their bytes.
fn name_weight(name: &HeaderName) -> usize {
    // Parsing a standard name's text again yields the very same static string; a custom name's, a new copy.
    let text = name.as_str();
    let standard = HeaderName::from_bytes(text.as_bytes())
        .is_ok_and(|again| std::ptr::eq(again.as_str().as_ptr(), text.as_ptr()));
    if standard {
        0
    } else {
        bytes_weight(text.len())
    }
}

/// A `HeaderMap`: its index and entry tables (sized by its capacity), its extra values, and every name and value.
fn map_weight(map: &HeaderMap) -> usize {
    let capacity = map.capacity();
    if capacity == 0 {
        return 0;
    }
    // The index table has a power-of-two length of which three quarters are usable.
    let mut indices = 1usize;
    while indices - indices / 4 < capacity {
        indices *= 2;
    }
    let extras = map.len() - map.keys_len();
    let extra_table = if extras == 0 {
        0
    } else {
        block(extras.next_power_of_two().max(4) * HEADER_EXTRA)
    };
    block(indices * HEADER_POS)
        + block(capacity * HEADER_BUCKET)
        + extra_table
        + map.keys().map(name_weight).sum::<usize>()
        + map.values().map(|v| bytes_weight(v.len())).sum::<usize>()
}

fn compact_name(name: &HeaderName) -> HeaderName {
    // Standard names come back static; custom names are copied at their size.
    HeaderName::from_bytes(name.as_str().as_bytes()).unwrap_or_else(|_| name.clone())
}

fn compact_value(value: &HeaderValue) -> HeaderValue {
    match HeaderValue::from_bytes(value.as_bytes()) {
        Ok(mut copy) => {
            copy.set_sensitive(value.is_sensitive());
            copy
        }
        Err(_) => value.clone(),
    }
}

/// A copy of `map` with tables sized for its headers and every name and value in an allocation of its own size.
fn compact_map(map: &HeaderMap) -> HeaderMap {
    let mut copy = HeaderMap::with_capacity(map.keys_len());
    for name in map.keys() {
        let name_copy = compact_name(name);
        for value in map.get_all(name) {
            copy.append(name_copy.clone(), compact_value(value));
        }
    }
    copy
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
#[non_exhaustive]
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

    /// The heap memory the value takes, in bytes: [`Entry::weight`] for responses, the record and its names for
    /// variant records, nothing for hit-for-pass markers (they live inline in the store's slot).
    pub fn weight(&self) -> usize {
        match self {
            StoredValue::Response(e) => e.weight(),
            StoredValue::Variants(v) => {
                block(ARC_HEADER + std::mem::size_of::<Variants>())
                    + block(v.headers.capacity() * std::mem::size_of::<HeaderName>())
                    + v.headers.iter().map(name_weight).sum::<usize>()
            }
            StoredValue::Pass { .. } => 0,
        }
    }

    /// A copy that owns exactly the memory [`weight`](Self::weight) counts (see [`Entry::compacted`]).
    #[must_use]
    pub fn compacted(&self) -> StoredValue {
        match self {
            StoredValue::Response(e) => StoredValue::Response(Arc::new(e.compacted())),
            StoredValue::Variants(v) => StoredValue::Variants(Arc::new(Variants {
                headers: v.headers.iter().map(compact_name).collect(),
                until: v.until,
            })),
            StoredValue::Pass { until } => StoredValue::Pass { until: *until },
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
        assert!(e.weight() > std::mem::size_of::<Entry>());
    }
}
