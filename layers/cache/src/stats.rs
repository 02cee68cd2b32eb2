//! Counters shared by every service of one layer, and the figures the handle reports.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) bypasses: AtomicU64,
    pub(crate) coalesced: AtomicU64,
    pub(crate) stale: AtomicU64,
    pub(crate) revalidated: AtomicU64,
    pub(crate) stored: AtomicU64,
    pub(crate) store_errors: AtomicU64,
}

/// Which counter a request lands in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Hit,
    Coalesced,
    Stale,
    Revalidated,
    Miss,
    Bypass,
}

impl Outcome {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Coalesced => "coalesced",
            Outcome::Stale => "stale",
            Outcome::Revalidated => "revalidated",
            Outcome::Miss => "miss",
            Outcome::Bypass => "bypass",
        }
    }
}

impl Counters {
    pub(crate) fn count(&self, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Hit => &self.hits,
            Outcome::Coalesced => &self.coalesced,
            Outcome::Stale => &self.stale,
            Outcome::Revalidated => &self.revalidated,
            Outcome::Miss => &self.misses,
            Outcome::Bypass => &self.bypasses,
        };
        counter.fetch_add(1, Relaxed);
        metrics::counter!("tower_kit.cache.requests", "result" => outcome.label()).increment(1);
    }

    pub(crate) fn stored(&self, bytes: usize) {
        self.stored.fetch_add(1, Relaxed);
        metrics::counter!("tower_kit.cache.stored").increment(1);
        metrics::counter!("tower_kit.cache.stored_bytes").increment(bytes as u64);
    }

    pub(crate) fn store_error(&self, error: &crate::store::StoreError) {
        self.store_errors.fetch_add(1, Relaxed);
        metrics::counter!("tower_kit.cache.store_errors", "operation" => error.operation())
            .increment(1);
        tracing::warn!(error = %error, source = ?std::error::Error::source(error), "cache store error; treated as a miss");
    }
}

/// A snapshot of one cache's activity, from [`CacheHandle::stats`](crate::CacheHandle::stats).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Requests answered from the store.
    pub hits: u64,
    /// Requests that went to the origin with the cache looking (a miss, a stale entry, a hit-for-pass key).
    pub misses: u64,
    /// Requests the cache did not look up or store for (unsafe methods, `Authorization`/`Cookie` rules).
    pub bypasses: u64,
    /// Requests that waited for another request's origin call and were answered from its response.
    pub coalesced: u64,
    /// Requests answered with a stale entry (`max-stale`, `stale-while-revalidate`, `stale-if-error`).
    pub stale: u64,
    /// Requests answered from an entry after the origin confirmed it with a `304`.
    pub revalidated: u64,
    /// Responses written to the store.
    pub stored: u64,
    /// Store operations that failed (each counted as a miss or "not stored").
    pub store_errors: u64,
    /// Values in the store (responses, `Vary` records and hit-for-pass markers).
    pub entries: u64,
    /// Their weight in bytes.
    pub bytes: u64,
    /// Keys with an origin call in flight that others may wait on.
    pub in_flight: u64,
}

impl CacheStats {
    /// `(hits + coalesced + stale) / (hits + coalesced + stale + revalidated + misses)`: the share of looked-up
    /// requests answered without the origin; bypasses are not counted; 0 when nothing was looked up.
    pub fn hit_ratio(&self) -> f64 {
        let served = (self.hits + self.coalesced + self.stale) as f64;
        let total = served + (self.misses + self.revalidated) as f64;
        if total == 0.0 { 0.0 } else { served / total }
    }
}

impl Counters {
    pub(crate) fn snapshot(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            bypasses: self.bypasses.load(Relaxed),
            coalesced: self.coalesced.load(Relaxed),
            stale: self.stale.load(Relaxed),
            revalidated: self.revalidated.load(Relaxed),
            stored: self.stored.load(Relaxed),
            store_errors: self.store_errors.load(Relaxed),
            ..CacheStats::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_ratio() {
        let c = Counters::default();
        assert_eq!(c.snapshot().hit_ratio(), 0.0);
        c.count(Outcome::Hit);
        c.count(Outcome::Hit);
        c.count(Outcome::Coalesced);
        c.count(Outcome::Miss);
        c.count(Outcome::Bypass);
        let s = c.snapshot();
        assert_eq!((s.hits, s.coalesced, s.misses, s.bypasses), (2, 1, 1, 1));
        assert_eq!(s.hit_ratio(), 0.75);
    }
}
