//! Quotas: a rate (`limit` per `window`) plus a burst, and the GCRA numbers derived from them.

use std::{num::NonZeroU32, time::Duration};
use tower_kit_core::ConfigError;

/// The longest window a quota may have: 366 days.
pub const MAX_WINDOW: Duration = Duration::from_secs(366 * 24 * 3600);

/// A GCRA quota: `limit` units per `window`, of which at most `burst` may be spent at once.
///
/// The units refill continuously, one every *emission interval* (`window / limit`, in nanoseconds, rounded up so
/// the rate is never exceeded). A client that has been idle for long enough holds `burst` units (by default
/// `burst == limit`: the whole window's quota may be spent at once, then one unit comes back every emission
/// interval).
///
/// Windows are whole seconds (at least one, at most [`MAX_WINDOW`]) because the `RateLimit-Policy` header states
/// them in seconds; `10 per second` is `Quota::per_second(10)`, `5 per 100 ms` is the same rate as `50 per second`
/// with a burst of 5: `Quota::per_second(50).with_burst(5)`.
///
/// ```
/// use std::num::NonZeroU32;
/// use tower_kit_ratelimit::Quota;
///
/// let q = Quota::per_minute(NonZeroU32::new(60).unwrap()).with_burst(NonZeroU32::new(10).unwrap());
/// assert_eq!(q.limit(), 60);
/// assert_eq!(q.window().as_secs(), 60);
/// assert_eq!(q.burst(), 10);
/// assert_eq!(q.emission_interval().as_secs(), 1);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Quota {
    limit: NonZeroU32,
    window_secs: u32,
    burst: NonZeroU32,
    /// Nanoseconds per unit, rounded up.
    interval_ns: u64,
}

impl Quota {
    /// `limit` units per `window`, burst equal to `limit`.
    ///
    /// Fails when the window is not a whole number of seconds, is zero, or is longer than [`MAX_WINDOW`].
    pub fn new(limit: NonZeroU32, window: Duration) -> Result<Self, ConfigError> {
        if window.subsec_nanos() != 0 || window.is_zero() || window > MAX_WINDOW {
            return Err(ConfigError::new(
                "window",
                format!(
                    "must be a whole number of seconds between 1s and 366 days (got {window:?})"
                ),
            ));
        }
        // `window` fits in u32 seconds (checked above).
        let window_secs = u32::try_from(window.as_secs()).unwrap_or(u32::MAX);
        Ok(Self::from_parts(limit, window_secs))
    }

    const fn from_parts(limit: NonZeroU32, window_secs: u32) -> Self {
        let window_ns = window_secs as u64 * 1_000_000_000;
        Self {
            limit,
            window_secs,
            burst: limit,
            interval_ns: window_ns.div_ceil(limit.get() as u64),
        }
    }

    /// `limit` units per second.
    pub const fn per_second(limit: NonZeroU32) -> Self {
        Self::from_parts(limit, 1)
    }

    /// `limit` units per minute.
    pub fn per_minute(limit: NonZeroU32) -> Self {
        Self::from_parts(limit, 60)
    }

    /// `limit` units per hour.
    pub fn per_hour(limit: NonZeroU32) -> Self {
        Self::from_parts(limit, 3600)
    }

    /// `limit` units per day (86 400 s).
    pub fn per_day(limit: NonZeroU32) -> Self {
        Self::from_parts(limit, 86_400)
    }

    /// The most units a client may spend at once (default: `limit`). A larger burst lets a client that was idle
    /// spend more than one window's quota at once; a smaller one smooths traffic.
    #[must_use]
    pub fn with_burst(mut self, burst: NonZeroU32) -> Self {
        self.burst = burst;
        self
    }

    /// Units per window (the `q` of `RateLimit-Policy`).
    pub fn limit(&self) -> u32 {
        self.limit.get()
    }

    /// The window (the `w` of `RateLimit-Policy`).
    pub fn window(&self) -> Duration {
        Duration::from_secs(u64::from(self.window_secs))
    }

    /// The window in whole seconds.
    pub fn window_secs(&self) -> u32 {
        self.window_secs
    }

    /// The most units that can be spent at once.
    pub fn burst(&self) -> u32 {
        self.burst.get()
    }

    /// Time for one unit to come back: `window / limit`, rounded up to the nanosecond.
    pub fn emission_interval(&self) -> Duration {
        Duration::from_nanos(self.interval_ns)
    }

    /// [`emission_interval`](Self::emission_interval) in nanoseconds: the `T` of GCRA. Backends use this integer
    /// so they all compute the same decisions.
    pub fn emission_interval_nanos(&self) -> u64 {
        self.interval_ns
    }

    /// The same window with `percent`% of the limit and of the burst (each rounded down, at least 1): the
    /// in-process cap of [`StoreFailure::FailOpenCapped`](crate::StoreFailure::FailOpenCapped).
    pub(crate) fn scaled(&self, percent: u8) -> Self {
        let scale = |n: NonZeroU32| {
            let scaled = u64::from(n.get()) * u64::from(percent.min(100)) / 100;
            NonZeroU32::new(u32::try_from(scaled).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN)
        };
        Self::from_parts(scale(self.limit), self.window_secs).with_burst(scale(self.burst))
    }

    /// `burst × T` in nanoseconds: how far ahead of now the theoretical arrival time may run (GCRA's `τ + T`).
    pub fn capacity_nanos(&self) -> u64 {
        self.interval_ns.saturating_mul(u64::from(self.burst.get()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn constructors() {
        let q = Quota::per_second(nz(10));
        assert_eq!(q.emission_interval(), Duration::from_millis(100));
        assert_eq!(q.capacity_nanos(), 1_000_000_000);
        assert_eq!(Quota::per_day(nz(10_000)).window_secs(), 86_400);
        assert_eq!(Quota::per_hour(nz(1)).emission_interval().as_secs(), 3600);
    }

    #[test]
    fn interval_rounds_up_so_the_rate_is_never_exceeded() {
        let q = Quota::per_second(nz(3));
        assert_eq!(q.emission_interval_nanos(), 333_333_334);
        assert!(q.emission_interval_nanos() * 3 >= 1_000_000_000);
    }

    #[test]
    fn bad_windows_are_rejected() {
        for w in [
            Duration::ZERO,
            Duration::from_millis(1500),
            Duration::from_millis(10),
            MAX_WINDOW + Duration::from_secs(1),
        ] {
            let e = Quota::new(nz(1), w).unwrap_err();
            assert_eq!(e.field(), "window", "{w:?}");
        }
        assert_eq!(
            Quota::new(nz(7), Duration::from_secs(7))
                .unwrap()
                .emission_interval(),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn scaled_keeps_the_window_and_at_least_one_unit() {
        let q = Quota::per_minute(nz(100)).with_burst(nz(10));
        let half = q.scaled(50);
        assert_eq!(
            (half.limit(), half.burst(), half.window_secs()),
            (50, 5, 60)
        );
        let tiny = q.scaled(1);
        assert_eq!((tiny.limit(), tiny.burst()), (1, 1));
        assert_eq!(q.scaled(100), q);
        assert_eq!(q.scaled(200), q, "capped at 100 %");
    }

    #[test]
    fn huge_values_saturate() {
        let q = Quota::new(nz(1), MAX_WINDOW)
            .unwrap()
            .with_burst(nz(u32::MAX));
        assert_eq!(q.capacity_nanos(), u64::MAX);
    }
}
