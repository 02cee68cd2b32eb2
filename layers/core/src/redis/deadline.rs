//! One deadline per request across all of its Redis calls.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::time::Instant;

/// Not started: the first call sets the budget.
const UNSTARTED: u64 = u64::MAX;

tokio::task_local! {
    static CURRENT: Deadline;
}

/// The Redis time of one request: however many Redis calls the request makes (a cache miss makes a lookup, a fill
/// lease, a write, a tag update...), together they wait at most one store timeout.
///
/// The first call through [`run`](Deadline::run) starts the budget at that call's timeout; every later call gets
/// only what is left, and a call with nothing left fails at once with [`TimedOut::Spent`], which the store then
/// treats like any timeout (the cache falls back to its first level or the origin, the rate limiter to its failure
/// policy). Only the time spent waiting for Redis counts: time in the origin, streaming the body or sleeping
/// between polls does not, so a slow origin never makes its own response unstorable.
///
/// A store finds the deadline of the request it serves through [`Deadline::current`]: the layer runs the
/// request's store calls inside [`scope`](Deadline::scope). Calls made outside any scope (an invalidation from a
/// handle, a background task) are each a request of their own. Clones share the budget.
#[derive(Clone, Debug)]
pub struct Deadline {
    /// Nanoseconds left, or [`UNSTARTED`].
    left: Arc<AtomicU64>,
}

impl Default for Deadline {
    fn default() -> Self {
        Self::new()
    }
}

/// A Redis call did not finish within its request's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimedOut {
    /// The call waited this long (what was left of the request's budget) without an answer.
    #[error("no answer from Redis within {0:?}")]
    After(Duration),
    /// Earlier calls of the same request spent its whole budget: this one did not wait at all.
    #[error("this request already spent its Redis time; not waiting again")]
    Spent,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos())
        .unwrap_or(UNSTARTED - 1)
        .min(UNSTARTED - 1)
}

impl Deadline {
    /// A deadline whose clock has not started: the first call starts it.
    pub fn new() -> Self {
        Self {
            left: Arc::new(AtomicU64::new(UNSTARTED)),
        }
    }

    /// The deadline of the request whose [`scope`](Self::scope) this task is running in, if any.
    pub fn current() -> Option<Self> {
        CURRENT.try_with(Clone::clone).ok()
    }

    /// Runs `fut` with this deadline as [`current`](Self::current).
    pub fn scope<F: Future>(self, fut: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self, fut)
    }

    /// The Redis time left; `None` before the first call.
    pub fn left(&self) -> Option<Duration> {
        match self.left.load(Ordering::Acquire) {
            UNSTARTED => None,
            n => Some(Duration::from_nanos(n)),
        }
    }

    /// Whether the budget is spent (a call now would fail at once).
    pub fn is_spent(&self) -> bool {
        self.left() == Some(Duration::ZERO)
    }

    /// Spends what is left: later calls of the request fail at once. For a request that saw Redis stall in a step
    /// that ran on a deadline of its own.
    pub fn spend(&self) {
        self.left.store(0, Ordering::Release);
    }

    /// Runs one Redis call within what is left of the budget (starting it at `timeout` on the first call), then
    /// charges the time it took.
    pub async fn run<F: Future>(&self, timeout: Duration, call: F) -> Result<F::Output, TimedOut> {
        let budget = nanos(timeout);
        let left =
            match self
                .left
                .compare_exchange(UNSTARTED, budget, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => budget,
                Err(left) => left,
            };
        if left == 0 {
            return Err(TimedOut::Spent);
        }
        let limit = Duration::from_nanos(left);
        let started = Instant::now();
        let outcome = tokio::time::timeout(limit, call).await;
        let spent = nanos(started.elapsed());
        // Concurrent calls of one request each charge their own wait (never below zero).
        let _ = self
            .left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(if n == UNSTARTED {
                    n
                } else {
                    n.saturating_sub(spent)
                })
            });
        match outcome {
            Ok(v) => Ok(v),
            Err(_) => {
                self.spend();
                Err(TimedOut::After(limit))
            }
        }
    }
}

/// Runs one Redis call on the [`current`](Deadline::current) request's deadline, or, outside any scope, as a
/// request of its own (bounded by `timeout` alone).
pub async fn run<F: Future>(timeout: Duration, call: F) -> Result<F::Output, TimedOut> {
    match Deadline::current() {
        Some(deadline) => deadline.run(timeout, call).await,
        None => Deadline::new().run(timeout, call).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    async fn answer_after(d: Duration) -> u32 {
        tokio::time::sleep(d).await;
        7
    }

    #[tokio::test(start_paused = true)]
    async fn later_calls_get_only_what_is_left() {
        let deadline = Deadline::new();
        assert_eq!(deadline.left(), None, "not started");
        assert_eq!(deadline.run(100 * MS, answer_after(30 * MS)).await, Ok(7));
        assert_eq!(deadline.left(), Some(70 * MS));
        assert_eq!(deadline.run(100 * MS, answer_after(50 * MS)).await, Ok(7));
        assert_eq!(deadline.left(), Some(20 * MS));
        let started = Instant::now();
        assert_eq!(
            deadline.run(100 * MS, answer_after(50 * MS)).await,
            Err(TimedOut::After(20 * MS))
        );
        assert_eq!(started.elapsed(), 20 * MS, "waited only what was left");
        assert!(deadline.is_spent());
        let started = Instant::now();
        assert_eq!(
            deadline.run(100 * MS, answer_after(MS)).await,
            Err(TimedOut::Spent)
        );
        assert_eq!(started.elapsed(), Duration::ZERO, "failed at once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_costs_one_timeout_however_many_calls_follow() {
        let deadline = Deadline::new();
        let started = Instant::now();
        for _ in 0..6 {
            let _ = deadline
                .run(100 * MS, answer_after(Duration::from_secs(2)))
                .await;
        }
        assert_eq!(started.elapsed(), 100 * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn time_between_calls_is_not_charged() {
        let deadline = Deadline::new();
        assert_eq!(deadline.run(100 * MS, answer_after(10 * MS)).await, Ok(7));
        // The origin takes a second: the budget is Redis time, not wall-clock time.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(deadline.run(100 * MS, answer_after(10 * MS)).await, Ok(7));
        assert_eq!(deadline.left(), Some(80 * MS));
    }

    #[tokio::test(start_paused = true)]
    async fn the_scope_carries_the_deadline_to_the_calls() {
        assert!(Deadline::current().is_none());
        // Outside any scope each call is a request of its own.
        for _ in 0..3 {
            assert_eq!(
                run(100 * MS, answer_after(Duration::from_secs(1))).await,
                Err(TimedOut::After(100 * MS))
            );
        }
        let deadline = Deadline::new();
        let started = Instant::now();
        let outcomes = deadline
            .clone()
            .scope(async {
                let first = run(100 * MS, answer_after(40 * MS)).await;
                let second = run(100 * MS, answer_after(Duration::from_secs(1))).await;
                let third = run(100 * MS, answer_after(MS)).await;
                (first, second, third)
            })
            .await;
        assert_eq!(
            outcomes,
            (Ok(7), Err(TimedOut::After(60 * MS)), Err(TimedOut::Spent))
        );
        assert_eq!(started.elapsed(), 100 * MS);
        assert!(deadline.is_spent(), "clones share the budget");
    }
}
