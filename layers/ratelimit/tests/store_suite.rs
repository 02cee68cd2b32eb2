//! The backend behaviour suite (tests/common) against the in-process store on a fake clock, and against the same
//! store behind an asynchronous wrapper (a store that answers on a later poll, like a networked one).

mod common;

use common::{Harness, run_suite};
use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};
use tower_kit_ratelimit::{
    InMemoryStore, ManualMonotonicClock, RateLimitStore,
    store::{CheckRequest, Decision},
};

struct FakeClock {
    clock: ManualMonotonicClock,
    store: InMemoryStore<ManualMonotonicClock>,
}

impl FakeClock {
    fn new() -> Self {
        let clock = ManualMonotonicClock::new();
        let store = InMemoryStore::with_clock(clock.clone());
        Self { clock, store }
    }
}

impl Harness for FakeClock {
    type Store = InMemoryStore<ManualMonotonicClock>;
    fn store(&self) -> Self::Store {
        self.store.clone()
    }
    async fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }
}

#[tokio::test]
async fn in_memory_store_passes_the_suite() {
    run_suite(&FakeClock::new()).await;
}

/// Answers on the second poll (after waking the task), as a networked store would.
#[derive(Clone)]
struct Deferred(InMemoryStore<ManualMonotonicClock>);

struct DeferredFuture {
    decision: Option<Decision>,
    polled: bool,
}

impl Future for DeferredFuture {
    type Output = Result<Decision, Infallible>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if !self.polled {
            self.polled = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Ok(self.decision.take().expect("polled after completion")))
    }
}

impl RateLimitStore for Deferred {
    type Error = Infallible;
    type Future = DeferredFuture;
    fn check(&self, request: &CheckRequest<'_>) -> DeferredFuture {
        DeferredFuture {
            decision: Some(self.0.decide(request)),
            polled: false,
        }
    }
}

struct DeferredHarness(FakeClock);

impl Harness for DeferredHarness {
    type Store = Deferred;
    fn store(&self) -> Deferred {
        Deferred(self.0.store.clone())
    }
    async fn advance(&self, by: Duration) {
        self.0.clock.advance(by);
    }
}

#[tokio::test]
async fn an_asynchronous_store_passes_the_suite() {
    run_suite(&DeferredHarness(FakeClock::new())).await;
}
