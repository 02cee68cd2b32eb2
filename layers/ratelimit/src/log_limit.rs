//! Rate-limited logging: a backend that is down fails every request, and one log line per request would drown the
//! logs (and cost more than the request). At most one line per interval, carrying how many were suppressed.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

/// Lets one event through per interval and counts the others.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    origin: Instant,
    interval_ns: u64,
    /// Nanoseconds since `origin` before which nothing is logged (0: log the first event at once).
    next_ns: AtomicU64,
    suppressed: AtomicU64,
}

impl LogLimiter {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            origin: Instant::now(),
            interval_ns: u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX),
            next_ns: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(events suppressed since the last one let through)` when this event should be logged.
    pub(crate) fn allow(&self) -> Option<u64> {
        self.allow_at(u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    fn allow_at(&self, now_ns: u64) -> Option<u64> {
        let next = self.next_ns.load(Ordering::Relaxed);
        if now_ns >= next
            && self
                .next_ns
                .compare_exchange(
                    next,
                    now_ns.saturating_add(self.interval_ns),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_interval_with_the_suppressed_count() {
        let l = LogLimiter::new(Duration::from_secs(1));
        assert_eq!(l.allow_at(0), Some(0));
        for _ in 0..5 {
            assert_eq!(l.allow_at(500_000_000), None);
        }
        assert_eq!(l.allow_at(1_000_000_000), Some(5));
        assert_eq!(l.allow_at(1_000_000_001), None);
        assert_eq!(l.allow_at(2_100_000_000), Some(1));
    }
}
