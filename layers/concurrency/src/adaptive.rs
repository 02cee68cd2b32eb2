//! Adaptive limits: the limit follows the latency the service shows, as in Netflix's concurrency-limits.
//!
//! Each admitted request that completes its body gives one sample: its latency from admission to the end of the
//! body, and how many requests were in flight when it was admitted. Streams released at the head, failed
//! requests and aborted bodies give no sample (their latency says nothing about the service's capacity).
//!
//! - [`Aimd`]: additive increase (+1 when the limit is in use and latency is under the threshold), multiplicative
//!   decrease (× `backoff_ratio` when a sample exceeds `latency_threshold`).
//! - [`Gradient2`]: compares the short-term latency with a long-term exponential average; when latency rises
//!   above `tolerance` × the average the limit shrinks in proportion, otherwise it grows by `queue_size`, smoothed.

use std::{
    sync::{Mutex, PoisonError},
    time::Duration,
};
use tower_kit_core::ConfigError;

/// An adaptive limit algorithm; pass one to
/// [`ConcurrencyLayerBuilder::adaptive`](crate::ConcurrencyLayerBuilder::adaptive).
#[derive(Clone, Debug, PartialEq)]
pub enum AdaptiveLimit {
    /// Additive increase, multiplicative decrease.
    Aimd(Aimd),
    /// Netflix's Gradient2.
    Gradient2(Gradient2),
}

impl From<Aimd> for AdaptiveLimit {
    fn from(a: Aimd) -> Self {
        AdaptiveLimit::Aimd(a)
    }
}

impl From<Gradient2> for AdaptiveLimit {
    fn from(g: Gradient2) -> Self {
        AdaptiveLimit::Gradient2(g)
    }
}

/// AIMD settings. Defaults: initial limit 20, bounds 1..=1000, backoff ratio 0.9, latency threshold 1 s.
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub struct Aimd {
    initial: usize,
    min: usize,
    max: usize,
    backoff_ratio: f64,
    latency_threshold: Duration,
}

impl Default for Aimd {
    fn default() -> Self {
        Aimd {
            initial: 20,
            min: 1,
            max: 1000,
            backoff_ratio: 0.9,
            latency_threshold: Duration::from_secs(1),
        }
    }
}

impl Aimd {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// The limit to start from (default 20).
    pub fn initial_limit(mut self, limit: usize) -> Self {
        self.initial = limit;
        self
    }

    /// The lowest the limit goes (default 1).
    pub fn min_limit(mut self, limit: usize) -> Self {
        self.min = limit;
        self
    }

    /// The highest the limit goes (default 1000).
    pub fn max_limit(mut self, limit: usize) -> Self {
        self.max = limit;
        self
    }

    /// The factor the limit is multiplied by on a slow sample, in `0.5..1.0` (default 0.9).
    pub fn backoff_ratio(mut self, ratio: f64) -> Self {
        self.backoff_ratio = ratio;
        self
    }

    /// A sample slower than this counts as overload (default 1 s).
    pub fn latency_threshold(mut self, threshold: Duration) -> Self {
        self.latency_threshold = threshold;
        self
    }
}

/// Gradient2 settings. Defaults as in Netflix's library: initial limit 20, bounds 1..=1000, tolerance 1.5,
/// smoothing 0.2, long window 600 samples, queue size 4.
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub struct Gradient2 {
    initial: usize,
    min: usize,
    max: usize,
    tolerance: f64,
    smoothing: f64,
    long_window: u32,
    queue_size: usize,
}

impl Default for Gradient2 {
    fn default() -> Self {
        Gradient2 {
            initial: 20,
            min: 1,
            max: 1000,
            tolerance: 1.5,
            smoothing: 0.2,
            long_window: 600,
            queue_size: 4,
        }
    }
}

impl Gradient2 {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// The limit to start from (default 20).
    pub fn initial_limit(mut self, limit: usize) -> Self {
        self.initial = limit;
        self
    }

    /// The lowest the limit goes (default 1).
    pub fn min_limit(mut self, limit: usize) -> Self {
        self.min = limit;
        self
    }

    /// The highest the limit goes (default 1000).
    pub fn max_limit(mut self, limit: usize) -> Self {
        self.max = limit;
        self
    }

    /// How much the short-term latency may exceed the long-term average before the limit shrinks, `>= 1.0`
    /// (default 1.5).
    pub fn tolerance(mut self, tolerance: f64) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// How fast the limit moves toward its new estimate, in `(0, 1]` (default 0.2).
    pub fn smoothing(mut self, smoothing: f64) -> Self {
        self.smoothing = smoothing;
        self
    }

    /// The number of samples the long-term latency average spans (default 600).
    pub fn long_window(mut self, samples: u32) -> Self {
        self.long_window = samples;
        self
    }

    /// How many requests the limit grows by per sample when latency is steady (default 4).
    pub fn queue_size(mut self, size: usize) -> Self {
        self.queue_size = size;
        self
    }
}

impl AdaptiveLimit {
    pub(crate) fn initial(&self) -> usize {
        match self {
            AdaptiveLimit::Aimd(a) => a.initial,
            AdaptiveLimit::Gradient2(g) => g.initial,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let (initial, min, max) = match self {
            AdaptiveLimit::Aimd(a) => (a.initial, a.min, a.max),
            AdaptiveLimit::Gradient2(g) => (g.initial, g.min, g.max),
        };
        if min == 0 {
            return Err(ConfigError::new(
                "adaptive.min_limit",
                "must be at least 1 (got 0)",
            ));
        }
        if max < min {
            return Err(ConfigError::new(
                "adaptive.max_limit",
                format!("must be at least min_limit {min} (got {max})"),
            ));
        }
        if max > crate::layer::MAX_LIMIT {
            return Err(ConfigError::new(
                "adaptive.max_limit",
                format!("must be at most {} (got {max})", crate::layer::MAX_LIMIT),
            ));
        }
        if !(min..=max).contains(&initial) {
            return Err(ConfigError::new(
                "adaptive.initial_limit",
                format!("must be within min_limit..=max_limit ({min}..={max}) (got {initial})"),
            ));
        }
        match self {
            AdaptiveLimit::Aimd(a) => {
                if !(0.5..1.0).contains(&a.backoff_ratio) {
                    return Err(ConfigError::new(
                        "adaptive.backoff_ratio",
                        format!("must be in 0.5..1.0 (got {})", a.backoff_ratio),
                    ));
                }
                if a.latency_threshold.is_zero() {
                    return Err(ConfigError::new(
                        "adaptive.latency_threshold",
                        "must be greater than zero (got 0ns)",
                    ));
                }
            }
            AdaptiveLimit::Gradient2(g) => {
                if !(g.tolerance >= 1.0 && g.tolerance.is_finite()) {
                    return Err(ConfigError::new(
                        "adaptive.tolerance",
                        format!("must be a finite number >= 1.0 (got {})", g.tolerance),
                    ));
                }
                if !(g.smoothing > 0.0 && g.smoothing <= 1.0) {
                    return Err(ConfigError::new(
                        "adaptive.smoothing",
                        format!("must be in (0, 1] (got {})", g.smoothing),
                    ));
                }
                if g.long_window == 0 {
                    return Err(ConfigError::new(
                        "adaptive.long_window",
                        "must be at least 1 (got 0)",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The running state of an algorithm; [`sample`](Controller::sample) returns the new limit.
#[derive(Debug)]
pub(crate) struct Controller {
    state: Mutex<AlgoState>,
}

#[derive(Debug)]
enum AlgoState {
    Aimd {
        cfg: Aimd,
        limit: f64,
    },
    Gradient2 {
        cfg: Gradient2,
        limit: f64,
        long_rtt: ExpAvg,
    },
}

impl Controller {
    pub(crate) fn new(algorithm: &AdaptiveLimit) -> Self {
        let state = match algorithm {
            AdaptiveLimit::Aimd(cfg) => AlgoState::Aimd {
                cfg: cfg.clone(),
                limit: cfg.initial as f64,
            },
            AdaptiveLimit::Gradient2(cfg) => AlgoState::Gradient2 {
                cfg: cfg.clone(),
                limit: cfg.initial as f64,
                long_rtt: ExpAvg::new(cfg.long_window, 10),
            },
        };
        Controller {
            state: Mutex::new(state),
        }
    }

    /// Feeds one sample: the latency of a request, and the number in flight when it was admitted. Returns the
    /// new limit.
    pub(crate) fn sample(&self, latency: Duration, in_flight: usize) -> usize {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match &mut *state {
            AlgoState::Aimd { cfg, limit } => {
                if latency > cfg.latency_threshold {
                    *limit = (*limit * cfg.backoff_ratio).floor().max(cfg.min as f64);
                } else if (in_flight as f64) * 2.0 >= *limit {
                    *limit = (*limit + 1.0).min(cfg.max as f64);
                }
                *limit as usize
            }
            AlgoState::Gradient2 {
                cfg,
                limit,
                long_rtt,
            } => {
                // A zero latency (a paused clock, a cached answer) would make the ratio infinite.
                let short = latency.as_secs_f64().max(1e-9);
                let long = long_rtt.add(short);
                // If the long-term average is far above the short term, it is recovering from a burst: decay it.
                if long / short > 2.0 {
                    long_rtt.scale(0.95);
                }
                // Do not grow the limit while the service is not using half of it.
                if (in_flight as f64) < *limit / 2.0 {
                    return *limit as usize;
                }
                let gradient = (cfg.tolerance * long / short).clamp(0.5, 1.0);
                let estimate = *limit * gradient + cfg.queue_size as f64;
                let smoothed = *limit * (1.0 - cfg.smoothing) + estimate * cfg.smoothing;
                *limit = smoothed.clamp(cfg.min as f64, cfg.max as f64);
                *limit as usize
            }
        }
    }
}

/// An exponential moving average with a plain average over the first `warmup` samples.
#[derive(Debug)]
struct ExpAvg {
    value: f64,
    count: u32,
    warmup: u32,
    factor: f64,
}

impl ExpAvg {
    fn new(window: u32, warmup: u32) -> Self {
        ExpAvg {
            value: 0.0,
            count: 0,
            warmup,
            factor: 2.0 / (f64::from(window) + 1.0),
        }
    }

    fn add(&mut self, sample: f64) -> f64 {
        if self.count < self.warmup {
            self.count += 1;
            self.value += (sample - self.value) / f64::from(self.count);
        } else {
            self.value = self.value * (1.0 - self.factor) + sample * self.factor;
        }
        self.value
    }

    fn scale(&mut self, by: f64) {
        self.value *= by;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: Duration = Duration::from_millis(5);
    const SLOW: Duration = Duration::from_millis(2000);

    #[test]
    fn aimd_rises_when_used_and_fast_and_falls_when_slow() {
        let c = Controller::new(&Aimd::new().initial_limit(10).max_limit(50).into());
        let mut limit = 10;
        for _ in 0..20 {
            limit = c.sample(FAST, limit);
        }
        assert_eq!(limit, 30);
        for _ in 0..5 {
            limit = c.sample(SLOW, limit);
        }
        assert!(limit < 20, "fell to {limit}");
        for _ in 0..100 {
            limit = c.sample(SLOW, limit);
        }
        assert_eq!(limit, 1, "never below min_limit");
        for _ in 0..100 {
            limit = c.sample(FAST, 50);
        }
        assert_eq!(limit, 50, "never above max_limit");
    }

    #[test]
    fn aimd_does_not_grow_when_idle() {
        let c = Controller::new(&Aimd::new().initial_limit(10).into());
        for _ in 0..50 {
            assert_eq!(c.sample(FAST, 1), 10);
        }
    }

    #[test]
    fn gradient2_rises_under_steady_latency_and_falls_when_latency_jumps() {
        let c = Controller::new(&Gradient2::new().initial_limit(10).max_limit(200).into());
        let mut limit = 10;
        for _ in 0..100 {
            limit = c.sample(FAST, limit);
        }
        assert!(limit > 50, "rose to {limit}");
        let high = limit;
        for _ in 0..20 {
            limit = c.sample(FAST * 10, limit);
        }
        assert!(limit < high / 2, "fell from {high} to {limit}");
    }

    #[test]
    fn gradient2_survives_zero_latency() {
        let c = Controller::new(&Gradient2::new().into());
        for _ in 0..20 {
            let l = c.sample(Duration::ZERO, 20);
            assert!((1..=1000).contains(&l));
        }
    }

    #[test]
    fn validation_names_the_field() {
        let bad: [(AdaptiveLimit, &str); 7] = [
            (Aimd::new().min_limit(0).into(), "adaptive.min_limit"),
            (
                Aimd::new().min_limit(5).max_limit(4).into(),
                "adaptive.max_limit",
            ),
            (
                Aimd::new().initial_limit(5000).into(),
                "adaptive.initial_limit",
            ),
            (
                Aimd::new().backoff_ratio(1.0).into(),
                "adaptive.backoff_ratio",
            ),
            (
                Aimd::new().latency_threshold(Duration::ZERO).into(),
                "adaptive.latency_threshold",
            ),
            (
                Gradient2::new().tolerance(f64::NAN).into(),
                "adaptive.tolerance",
            ),
            (Gradient2::new().smoothing(0.0).into(), "adaptive.smoothing"),
        ];
        for (algo, field) in bad {
            assert_eq!(algo.validate().unwrap_err().field(), field);
        }
        assert!(Gradient2::new().validate_ok());
    }

    impl Gradient2 {
        fn validate_ok(self) -> bool {
            AdaptiveLimit::from(self).validate().is_ok()
        }
    }
}
