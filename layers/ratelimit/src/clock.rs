//! Clocks for the in-process store: the real monotonic one and a manual one for tests.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

/// A monotonic clock: nanoseconds since an arbitrary origin fixed when the clock was made.
///
/// The in-process store reads it once per request. Implement it to drive the store from your own clock (the tokio
/// clock, a simulation); use [`ManualClock`] in tests.
pub trait Clock: Send + Sync + 'static {
    /// Nanoseconds since the clock's origin. It should not go backwards; a small step back (counter skew between
    /// cores) is harmless, since GCRA never moves a state back in time.
    fn now_nanos(&self) -> u64;
}

/// The real clock, starting near zero when made.
///
/// It reads the CPU's invariant time-stamp counter through `quanta` (a few nanoseconds, where
/// `std::time::Instant::now()` can cost tens of nanoseconds on virtual machines), and falls back to the OS monotonic
/// clock where no usable counter exists.
#[derive(Clone, Debug)]
pub struct MonotonicClock {
    clock: quanta::Clock,
    origin: u64,
}

impl MonotonicClock {
    /// A clock whose origin is now (the first one made in a process calibrates the counter, about 10 ms).
    pub fn new() -> Self {
        let clock = quanta::Clock::new();
        let origin = clock.raw();
        Self { clock, origin }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    #[inline]
    fn now_nanos(&self) -> u64 {
        // Never negative: a counter read on another core that lags reads as the origin.
        self.clock.delta_as_nanos(self.origin, self.clock.raw())
    }
}

/// A clock that moves only when told: clones share one time, so a test keeps a clone and advances it while the
/// layer reads it.
///
/// ```
/// use std::time::Duration;
/// use tower_kit_ratelimit::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// let seen_by_store = clock.clone();
/// clock.advance(Duration::from_millis(1500));
/// assert_eq!(seen_by_store.now_nanos(), 1_500_000_000 + ManualClock::START_NANOS);
/// ```
#[derive(Clone, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// Where a new manual clock starts: one day after its origin, so that "before the first request" exists.
    pub const START_NANOS: u64 = 86_400 * 1_000_000_000;

    /// A clock at [`START_NANOS`](Self::START_NANOS).
    pub fn new() -> Self {
        Self {
            nanos: Arc::new(AtomicU64::new(Self::START_NANOS)),
        }
    }

    /// Moves the time forward.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .nanos
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_add(by))
            });
    }
}

impl Clock for ManualClock {
    fn now_nanos(&self) -> u64 {
        self.nanos.load(Ordering::SeqCst)
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("now_nanos", &self.now_nanos())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_moves_forward() {
        let c = MonotonicClock::new();
        let a = c.now_nanos();
        std::thread::sleep(Duration::from_millis(2));
        assert!(c.now_nanos() >= a + 2_000_000);
    }

    #[test]
    fn manual_saturates() {
        let c = ManualClock::new();
        c.advance(Duration::MAX);
        assert_eq!(c.now_nanos(), u64::MAX);
    }
}
