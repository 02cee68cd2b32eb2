//! Quotas: a rate (`limit` per `window`) plus a burst, and the GCRA numbers derived from them.

use std::{num::NonZeroU32, time::Duration};
use tower_kit_core::ConfigError;

/// The longest window a quota may have: 366 days.
pub const MAX_WINDOW: Duration = Duration::from_secs(366 * 24 * 3600);

/// A GCRA quota: `limit` units per `window`, of which at most `burst` may be spent at once.
///
/// The units refill continuously, one every *emission interval* (`window / limit`, in whole nanoseconds, rounded
/// down and at least 1 ns; the rounding is below a nanosecond per unit). A client that has been idle for long
/// enough holds `burst` units (by default `burst == limit`: the whole window's quota may be spent at once, then one
/// unit comes back every emission interval).
///
/// What the limiter allows is therefore "`burst` units per `burst × window / limit`", which is what the
/// `RateLimit-Policy` header advertises ([`advertised`](Self::advertised)): with the default burst that is exactly
/// `limit` per `window`; `100` per minute with a burst of 10 is advertised as `q=10;w=6`, and `1` per hour with a
/// burst of 10 as `q=10;w=36000`.
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
    /// Nanoseconds per unit, rounded down, at least 1.
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
            interval_ns: match window_ns / limit.get() as u64 {
                0 => 1,
                t => t,
            },
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

    /// Time for one unit to come back: `window / limit`, rounded down to the nanosecond (at least 1 ns).
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

    /// What `RateLimit-Policy` advertises for this quota: `(q, w)`, "`q` units per `w` seconds", such that a client
    /// that never sends more than `q` units within any `w` seconds is never refused, and `q / w` is the limiter's
    /// true rate (exactly, when `burst × window / limit` is a whole number of seconds; otherwise `w` is rounded up,
    /// which advertises a slightly lower rate, never a higher one).
    ///
    /// `q` is the burst: the most units a client can spend at once. `w` is the time the limiter takes to give back
    /// `q` units: `burst × window / limit`. With the default burst this is `(limit, window)`. `w` is at most
    /// 999 999 999 999 999 (the largest Structured Fields integer); a quota that would need more advertises a
    /// proportionally smaller `q` (at least 1).
    ///
    /// ```
    /// use std::num::NonZeroU32;
    /// use tower_kit_ratelimit::Quota;
    ///
    /// let nz = |n| NonZeroU32::new(n).unwrap();
    /// assert_eq!(Quota::per_minute(nz(100)).advertised(), (100, 60));
    /// assert_eq!(Quota::per_minute(nz(100)).with_burst(nz(10)).advertised(), (10, 6));
    /// assert_eq!(Quota::per_hour(nz(1)).with_burst(nz(10)).advertised(), (10, 36_000));
    /// assert_eq!(Quota::per_second(nz(3)).advertised(), (3, 1));
    /// ```
    pub fn advertised(&self) -> (u64, u64) {
        const SF_MAX: u128 = 999_999_999_999_999;
        const NS: u128 = 1_000_000_000;
        let t = u128::from(self.interval_ns);
        let q = u128::from(self.burst.get());
        let w = (q * t).div_ceil(NS).max(1);
        if w <= SF_MAX {
            // Both fit: q ≤ u32::MAX, w ≤ SF_MAX.
            return (q as u64, w as u64);
        }
        let q = (SF_MAX * NS / t).clamp(1, q);
        (q as u64, (q * t).div_ceil(NS).clamp(1, SF_MAX) as u64)
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
    fn interval_rounds_down_so_the_advertised_rate_is_never_refused() {
        let q = Quota::per_second(nz(3));
        assert_eq!(q.emission_interval_nanos(), 333_333_333);
        // Three units come back within the second the header advertises.
        assert!(q.emission_interval_nanos() * 3 <= 1_000_000_000);
        assert_eq!(q.advertised(), (3, 1));
        assert_eq!(Quota::per_second(nz(u32::MAX)).emission_interval_nanos(), 1);
    }

    /// `(q, w)` for rate, window and burst combinations, including bursts above and below the limit.
    #[test]
    fn advertised_policy_is_what_the_limiter_allows() {
        let cases: &[(u32, u64, u32, (u64, u64))] = &[
            // (limit, window s, burst, (q, w))
            (100, 60, 100, (100, 60)),
            (100, 60, 10, (10, 6)),      // the demo's defaults
            (1, 3600, 10, (10, 36_000)), // burst above the limit
            (1, 3600, 1, (1, 3600)),
            (10, 1, 10, (10, 1)),
            (10, 1, 3, (3, 1)), // 3 units come back in 0.3 s: w rounds up, the rate shown is lower
            (60, 60, 1, (1, 1)),
            (7, 60, 7, (7, 60)),
            (3, 1, 2, (2, 1)),
            (5, 60, 20, (20, 240)),
        ];
        for &(limit, window, burst, expected) in cases {
            let q = Quota::new(nz(limit), Duration::from_secs(window))
                .unwrap()
                .with_burst(nz(burst));
            let (units, secs) = q.advertised();
            assert_eq!((units, secs), expected, "{limit}/{window}s burst {burst}");
            assert!(units <= u64::from(q.burst()));
            // q units come back within w: a client sending q per w never runs dry.
            assert!(units * q.emission_interval_nanos() <= secs * 1_000_000_000);
            // The rate shown is never above the configured one.
            assert!(u128::from(units) * u128::from(window) <= u128::from(limit) * u128::from(secs));
        }
        let huge = Quota::new(nz(1), MAX_WINDOW)
            .unwrap()
            .with_burst(nz(u32::MAX));
        let (units, secs) = huge.advertised();
        assert!(secs <= 999_999_999_999_999 && units >= 1, "{units} {secs}");
        assert!(
            u128::from(units) * u128::from(huge.emission_interval_nanos())
                <= u128::from(secs) * 1_000_000_000
        );
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
