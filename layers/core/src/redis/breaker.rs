//! The circuit breaker of a Redis store.

use std::{
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

/// What the breaker lets a request do ([`CircuitBreaker::admit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Admission {
    /// Closed: go ahead.
    Pass,
    /// Open, and it is time to try again: this request is the probe.
    Probe,
    /// Open: fail at once.
    Reject,
}

/// What a success or a failure changed ([`CircuitBreaker::success`], [`CircuitBreaker::failure`]): for logs and
/// gauges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transition {
    /// Nothing changed.
    None,
    /// The breaker just opened.
    Opened,
    /// The breaker just closed.
    Closed,
}

/// After `threshold` consecutive failures the breaker *opens*: requests fail at once (the store's failure policy
/// decides them) instead of each waiting for a dead server; every `retry_interval` one request is let through as a
/// *probe*; the first success closes it again, with no restart.
#[derive(Debug)]
pub struct CircuitBreaker {
    threshold: u32,
    retry_interval: Duration,
    /// Fast path: nothing to lock while the backend is healthy.
    open: AtomicBool,
    /// Whether a failure was seen since the last success (so a success only locks when there is state to reset).
    dirty: AtomicBool,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    failures: u32,
    /// While open: when the next probe may go.
    next_probe: Option<Instant>,
}

impl CircuitBreaker {
    /// A closed breaker that opens after `threshold` consecutive failures (at least 1) and then lets one probe
    /// through every `retry_interval`.
    pub fn new(threshold: u32, retry_interval: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            retry_interval,
            open: AtomicBool::new(false),
            dirty: AtomicBool::new(false),
            state: Mutex::new(State {
                failures: 0,
                next_probe: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the breaker is open: the server failed repeatedly, and requests do not wait for it.
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Whether a request may go to the server at `now`.
    pub fn admit(&self, now: Instant) -> Admission {
        if !self.open.load(Ordering::Acquire) {
            return Admission::Pass;
        }
        let mut state = self.lock();
        match state.next_probe {
            None => Admission::Pass, // closed meanwhile
            Some(at) if now >= at => {
                // One probe per interval; a probe that is dropped half-way simply lets the next interval's through.
                state.next_probe = Some(now + self.retry_interval);
                Admission::Probe
            }
            Some(_) => Admission::Reject,
        }
    }

    /// Records an answer.
    pub fn success(&self) -> Transition {
        if !self.dirty.load(Ordering::Acquire) {
            return Transition::None;
        }
        let mut state = self.lock();
        self.dirty.store(false, Ordering::Release);
        state.failures = 0;
        if state.next_probe.take().is_some() {
            self.open.store(false, Ordering::Release);
            return Transition::Closed;
        }
        Transition::None
    }

    /// Records a failure at `now`.
    pub fn failure(&self, now: Instant) -> Transition {
        let mut state = self.lock();
        self.dirty.store(true, Ordering::Release);
        state.failures = state.failures.saturating_add(1);
        if state.next_probe.is_some() {
            // Already open (a failed probe, or a request that started before it opened): wait a full interval.
            state.next_probe = Some(now + self.retry_interval);
            return Transition::None;
        }
        if state.failures >= self.threshold {
            state.next_probe = Some(now + self.retry_interval);
            self.open.store(true, Ordering::Release);
            return Transition::Opened;
        }
        Transition::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_probes_then_closes() {
        let b = CircuitBreaker::new(3, Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(b.admit(t0), Admission::Pass);
        assert_eq!(b.failure(t0), Transition::None);
        assert_eq!(b.failure(t0), Transition::None);
        assert_eq!(b.success(), Transition::None, "a success resets the count");
        assert_eq!(b.failure(t0), Transition::None);
        assert_eq!(b.failure(t0), Transition::None);
        assert_eq!(b.failure(t0), Transition::Opened);
        assert!(b.is_open());
        assert_eq!(b.admit(t0 + Duration::from_millis(999)), Admission::Reject);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(b.admit(t1), Admission::Probe);
        assert_eq!(b.admit(t1), Admission::Reject, "one probe per interval");
        // The probe fails: another full interval.
        assert_eq!(b.failure(t1), Transition::None);
        assert_eq!(b.admit(t1 + Duration::from_millis(999)), Admission::Reject);
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!(b.admit(t2), Admission::Probe);
        assert_eq!(b.success(), Transition::Closed);
        assert!(!b.is_open());
        assert_eq!(b.admit(t2), Admission::Pass);
        assert_eq!(b.success(), Transition::None);
    }

    #[test]
    fn a_lost_probe_does_not_keep_it_open_forever() {
        let b = CircuitBreaker::new(1, Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(b.failure(t0), Transition::Opened);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(b.admit(t1), Admission::Probe);
        // The probe's future is dropped: neither success nor failure is reported.
        assert_eq!(b.admit(t1 + Duration::from_secs(1)), Admission::Probe);
    }
}
