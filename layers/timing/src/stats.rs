//! In-process statistics per route and method: count, errors, min, max, mean, percentiles and active requests.
//!
//! Durations go into a log-linear histogram of atomic counters (16 buckets per power of two, so a percentile is
//! within about 3 % of the true value), so recording is a handful of relaxed atomic adds and the stats can stay on
//! in production.

use crate::registry::Registry;
use serde::Serialize;
use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicI64, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

const SUB_BITS: u32 = 4;
const SUB: u64 = 1 << SUB_BITS;
/// Values up to 2^40 µs (about 12.7 days); larger ones go in the last bucket.
const MAX_EXP: u32 = 40;
const BUCKETS: usize = (SUB + (MAX_EXP as u64 - SUB_BITS as u64 + 1) * SUB) as usize;

fn bucket_of(micros: u64) -> usize {
    if micros < SUB {
        return micros as usize;
    }
    let exp = (63 - micros.leading_zeros()).min(MAX_EXP);
    let sub = (micros >> (exp - SUB_BITS)) & (SUB - 1);
    let index = SUB + u64::from(exp - SUB_BITS) * SUB + sub;
    (index as usize).min(BUCKETS - 1)
}

/// The lower and upper bound (exclusive) of a bucket, in microseconds.
fn bucket_bounds(index: usize) -> (u64, u64) {
    let index = index as u64;
    if index < SUB {
        return (index, index + 1);
    }
    let exp = (index - SUB) / SUB + u64::from(SUB_BITS);
    let sub = (index - SUB) % SUB;
    let width = 1u64 << (exp - u64::from(SUB_BITS));
    let low = (SUB + sub) << (exp - u64::from(SUB_BITS));
    (low, low + width)
}

/// Counters for one (route, method).
pub(crate) struct StatsSeries {
    errors: AtomicU64,
    total_us: AtomicU64,
    min_us: AtomicU64,
    max_us: AtomicU64,
    pub(crate) active: AtomicI64,
    buckets: Box<[AtomicU64]>,
}

impl StatsSeries {
    pub(crate) fn new() -> Self {
        Self {
            errors: AtomicU64::new(0),
            total_us: AtomicU64::new(0),
            min_us: AtomicU64::new(u64::MAX),
            max_us: AtomicU64::new(0),
            active: AtomicI64::new(0),
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Two atomic adds in the common case: the total and a bucket (the count is the buckets' sum). Minimum and
    /// maximum are read first and written only when they change, which after the first requests is rare.
    #[inline]
    pub(crate) fn record(&self, duration: Duration, error: bool) {
        let us = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        if error {
            self.errors.fetch_add(1, Relaxed);
        }
        self.total_us.fetch_add(us, Relaxed);
        if us < self.min_us.load(Relaxed) {
            self.min_us.fetch_min(us, Relaxed);
        }
        if us > self.max_us.load(Relaxed) {
            self.max_us.fetch_max(us, Relaxed);
        }
        self.buckets[bucket_of(us)].fetch_add(1, Relaxed);
    }

    fn reset(&self) {
        self.errors.store(0, Relaxed);
        self.total_us.store(0, Relaxed);
        self.min_us.store(u64::MAX, Relaxed);
        self.max_us.store(0, Relaxed);
        for b in self.buckets.iter() {
            b.store(0, Relaxed);
        }
    }

    fn snapshot(&self, route: &str, method: &'static str) -> RouteStats {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let in_buckets: u64 = counts.iter().sum();
        let count = in_buckets;
        let (min, max) = (self.min_us.load(Relaxed), self.max_us.load(Relaxed));
        let total = self.total_us.load(Relaxed);
        let ms = |us: u64| us as f64 / 1000.0;
        let quantile = |q: f64| -> f64 {
            if in_buckets == 0 {
                return 0.0;
            }
            let rank = ((q * in_buckets as f64).ceil() as u64).clamp(1, in_buckets);
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    let (low, high) = bucket_bounds(i);
                    let mid = low + (high - low) / 2;
                    return ms(mid.clamp(min.min(max), max));
                }
            }
            ms(max)
        };
        RouteStats {
            route: route.to_owned(),
            method,
            count,
            errors: self.errors.load(Relaxed),
            active: self.active.load(Relaxed).max(0),
            total_ms: ms(total),
            min_ms: if count == 0 { 0.0 } else { ms(min) },
            max_ms: ms(max),
            mean_ms: if count == 0 {
                0.0
            } else {
                ms(total) / count as f64
            },
            p50_ms: quantile(0.50),
            p95_ms: quantile(0.95),
            p99_ms: quantile(0.99),
        }
    }
}

/// Statistics of one route and method since the start or the last [`TimingHandle::reset`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteStats {
    /// The route label (`/api/items/{id}`, `unmatched`, `__other__`).
    pub route: String,
    /// The method label (`GET`, ..., `_OTHER`).
    pub method: &'static str,
    /// Requests finished.
    pub count: u64,
    /// Requests finished with an error: a 5xx status, a server-side gRPC status, an abort, a body error, a service
    /// error or a panic.
    pub errors: u64,
    /// Requests in flight now (their body has not ended).
    pub active: i64,
    /// Sum of the durations to end of body, in milliseconds.
    pub total_ms: f64,
    /// Shortest duration, in milliseconds.
    pub min_ms: f64,
    /// Longest duration, in milliseconds.
    pub max_ms: f64,
    /// Mean duration, in milliseconds.
    pub mean_ms: f64,
    /// Median duration, in milliseconds (within about 3 %).
    pub p50_ms: f64,
    /// 95th percentile, in milliseconds (within about 3 %).
    pub p95_ms: f64,
    /// 99th percentile, in milliseconds (within about 3 %).
    pub p99_ms: f64,
}

/// A snapshot of every route and method the layer has seen.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsSnapshot {
    /// When the counting started (the layer was built or last reset), in milliseconds since the Unix epoch.
    pub since_unix_ms: u64,
    /// Seconds since then.
    pub elapsed_seconds: f64,
    /// Requests in flight on all routes.
    pub active: i64,
    /// One entry per (route, method) seen, sorted by route then method.
    pub routes: Vec<RouteStats>,
}

impl StatsSnapshot {
    /// The entry for a route and method, if any request was seen for it.
    pub fn get(&self, route: &str, method: &str) -> Option<&RouteStats> {
        self.routes
            .iter()
            .find(|r| r.route == route && r.method == method)
    }
}

/// A handle on the layer's in-process statistics; cheap to clone, shared with every service the layer makes.
///
/// Get it from [`TimingLayer::handle`](crate::TimingLayer::handle) (or [`Timing::handle`](crate::Timing::handle)).
#[derive(Clone)]
pub struct TimingHandle {
    registry: Arc<Registry>,
}

impl std::fmt::Debug for TimingHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimingHandle").finish_non_exhaustive()
    }
}

pub(crate) struct Since {
    wall: Mutex<(SystemTime, Instant)>,
}

impl Since {
    pub(crate) fn now() -> Self {
        Self {
            wall: Mutex::new((SystemTime::now(), Instant::now())),
        }
    }
}

impl TimingHandle {
    pub(crate) fn new(registry: Arc<Registry>) -> Self {
        Self { registry }
    }

    /// The statistics now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let (wall, instant) = *self
            .registry
            .since
            .wall
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut routes = Vec::new();
        self.registry.for_each_series(|route, method, series| {
            routes.push(series.snapshot(route, method));
        });
        routes.sort_by(|a, b| (&a.route, a.method).cmp(&(&b.route, b.method)));
        StatsSnapshot {
            since_unix_ms: wall
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            elapsed_seconds: instant.elapsed().as_secs_f64(),
            active: routes.iter().map(|r| r.active).sum(),
            routes,
        }
    }

    /// Starts counting again from zero (requests in flight stay counted as active). Requests finishing while the
    /// reset runs may be counted on either side of it.
    pub fn reset(&self) {
        *self
            .registry
            .since
            .wall
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = (SystemTime::now(), Instant::now());
        self.registry.for_each_series(|_, _, series| series.reset());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_monotonic() {
        let mut last_high = 0;
        for i in 0..BUCKETS {
            let (low, high) = bucket_bounds(i);
            assert_eq!(low, last_high, "bucket {i}");
            assert!(high > low);
            last_high = high;
        }
        for us in [0, 1, 15, 16, 17, 31, 32, 1000, 123_456, 9_999_999, 1 << 39] {
            let (low, high) = bucket_bounds(bucket_of(us));
            assert!(low <= us && us < high, "{us} in [{low}, {high})");
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn relative_error_is_small() {
        for us in [100u64, 1_000, 12_345, 1_000_000, 60_000_000] {
            let (low, high) = bucket_bounds(bucket_of(us));
            assert!((high - low) as f64 / us as f64 <= 1.0 / 16.0 + 1e-9, "{us}");
        }
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let s = StatsSeries::new();
        // 1..=1000 ms, one each.
        for ms in 1..=1000u64 {
            s.record(Duration::from_millis(ms), ms > 990);
        }
        let r = s.snapshot("/r", "GET");
        assert_eq!(r.count, 1000);
        assert_eq!(r.errors, 10);
        assert_eq!(r.min_ms, 1.0);
        assert_eq!(r.max_ms, 1000.0);
        assert!((r.mean_ms - 500.5).abs() < 1e-9);
        for (got, want) in [(r.p50_ms, 500.0), (r.p95_ms, 950.0), (r.p99_ms, 990.0)] {
            assert!((got - want).abs() / want < 0.04, "got {got}, want {want}");
        }
    }

    #[test]
    fn empty_and_single() {
        let s = StatsSeries::new();
        let r = s.snapshot("/r", "GET");
        assert_eq!((r.count, r.min_ms, r.p99_ms), (0, 0.0, 0.0));
        s.record(Duration::from_micros(2500), false);
        let r = s.snapshot("/r", "GET");
        // A single value: every percentile is that value (clamped to min/max).
        assert_eq!(
            (r.min_ms, r.p50_ms, r.p99_ms, r.max_ms),
            (2.5, 2.5, 2.5, 2.5)
        );
        s.reset();
        assert_eq!(s.snapshot("/r", "GET").count, 0);
    }
}
