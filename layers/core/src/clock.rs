//! Clocks, named by their contract, each with a real and a manual implementation.
//!
//! - [`MonotonicClock`]: nanoseconds since an arbitrary origin, never going backwards. For measuring intervals and
//!   for quotas (a rate limiter's GCRA state). Real: [`SystemMonotonicClock`]; tests: [`ManualMonotonicClock`].
//! - [`WallClock`]: the calendar time ([`SystemTime`]), which may jump. For what is stated in wall time: HTTP
//!   dates, a cache's freshness and `Age`. Real: [`SystemWallClock`]; tests: [`ManualWallClock`].
//!
//! The manual clocks move only when told, and their clones share one time, so a test keeps a clone and advances it
//! while the layer reads the other.

use std::{
    fmt,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

/// A monotonic clock: nanoseconds since an origin fixed when the clock was made.
pub trait MonotonicClock: Send + Sync + 'static {
    /// Nanoseconds since the clock's origin. It should not go backwards; users must tolerate a small step back
    /// (counter skew between cores).
    fn now_nanos(&self) -> u64;
}

/// The real monotonic clock, starting near zero when made.
///
/// It reads the CPU's invariant time-stamp counter through `quanta` (a few nanoseconds, where
/// `std::time::Instant::now()` can cost tens of nanoseconds on virtual machines), and falls back to the OS monotonic
/// clock where no usable counter exists.
#[derive(Clone, Debug)]
pub struct SystemMonotonicClock {
    clock: quanta::Clock,
    origin: u64,
}

impl SystemMonotonicClock {
    /// A clock whose origin is now (the first one made in a process calibrates the counter, about 10 ms).
    pub fn new() -> Self {
        let clock = quanta::Clock::new();
        let origin = clock.raw();
        Self { clock, origin }
    }
}

impl Default for SystemMonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl MonotonicClock for SystemMonotonicClock {
    #[inline]
    fn now_nanos(&self) -> u64 {
        // Never negative: a counter read on another core that lags reads as the origin.
        self.clock.delta_as_nanos(self.origin, self.clock.raw())
    }
}

/// A monotonic clock that moves only when told; clones share one time.
///
/// ```
/// use std::time::Duration;
/// use tower_kit_core::{ManualMonotonicClock, MonotonicClock};
///
/// let clock = ManualMonotonicClock::new();
/// let seen_by_layer = clock.clone();
/// clock.advance(Duration::from_millis(1500));
/// assert_eq!(seen_by_layer.now_nanos(), ManualMonotonicClock::START_NANOS + 1_500_000_000);
/// ```
#[derive(Clone)]
pub struct ManualMonotonicClock {
    nanos: Arc<AtomicU64>,
}

impl ManualMonotonicClock {
    /// Where a new manual clock starts: one day after its origin, so that "before the first request" exists.
    pub const START_NANOS: u64 = 86_400 * 1_000_000_000;

    /// A clock at [`START_NANOS`](Self::START_NANOS).
    pub fn new() -> Self {
        Self {
            nanos: Arc::new(AtomicU64::new(Self::START_NANOS)),
        }
    }

    /// Moves the time forward (saturating).
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .nanos
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_add(by))
            });
    }
}

impl Default for ManualMonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl MonotonicClock for ManualMonotonicClock {
    fn now_nanos(&self) -> u64 {
        self.nanos.load(Ordering::SeqCst)
    }
}

impl fmt::Debug for ManualMonotonicClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualMonotonicClock")
            .field("now_nanos", &self.now_nanos())
            .finish()
    }
}

/// A source of wall-clock (calendar) time. It may jump (NTP, an operator), so never measure intervals with it.
pub trait WallClock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemWallClock;

impl WallClock for SystemWallClock {
    #[inline]
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A wall clock that moves only when told (it may also be set backwards, to test skew); clones share one time.
///
/// ```
/// use std::time::Duration;
/// use tower_kit_core::{ManualWallClock, WallClock};
///
/// let clock = ManualWallClock::default();
/// let t0 = clock.now();
/// clock.clone().advance(Duration::from_secs(5));
/// assert_eq!(clock.now().duration_since(t0).unwrap(), Duration::from_secs(5));
/// ```
#[derive(Clone)]
pub struct ManualWallClock {
    now: Arc<Mutex<SystemTime>>,
}

impl ManualWallClock {
    /// A clock stopped at `start`.
    pub fn new(start: SystemTime) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// Moves the clock forward by `by` (saturating at the largest time the platform holds).
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(later) = now.checked_add(by) {
            *now = later;
        }
    }

    /// Sets the clock to `to` (it may go backwards).
    pub fn set(&self, to: SystemTime) {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) = to;
    }
}

impl Default for ManualWallClock {
    /// A clock stopped at 2026-01-01T00:00:00Z.
    fn default() -> Self {
        Self::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600))
    }
}

impl WallClock for ManualWallClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for ManualWallClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualWallClock")
            .field("now", &self.now())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_monotonic_moves_forward() {
        let c = SystemMonotonicClock::new();
        let a = c.now_nanos();
        std::thread::sleep(Duration::from_millis(2));
        assert!(c.now_nanos() >= a + 2_000_000);
    }

    #[test]
    fn manual_monotonic_clones_share_one_time_and_saturate() {
        let c = ManualMonotonicClock::new();
        let other = c.clone();
        assert_eq!(c.now_nanos(), ManualMonotonicClock::START_NANOS);
        other.advance(Duration::from_nanos(7));
        assert_eq!(c.now_nanos(), ManualMonotonicClock::START_NANOS + 7);
        other.advance(Duration::MAX);
        assert_eq!(c.now_nanos(), u64::MAX);
    }

    #[test]
    fn manual_wall_moves_only_when_told_and_can_go_back() {
        let clock = ManualWallClock::default();
        let t0 = clock.now();
        let other = clock.clone();
        other.advance(Duration::from_secs(5));
        assert_eq!(
            clock.now().duration_since(t0).unwrap(),
            Duration::from_secs(5)
        );
        clock.set(t0);
        assert_eq!(other.now(), t0);
        clock.advance(Duration::MAX);
        assert_eq!(other.now(), t0, "an overflowing advance leaves the clock");
    }

    #[test]
    fn system_wall_is_near_now() {
        let now = SystemWallClock.now();
        let diff = now
            .duration_since(SystemTime::now())
            .unwrap_or_else(|e| e.duration());
        assert!(diff < Duration::from_secs(60));
    }
}
