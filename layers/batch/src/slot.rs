//! The meeting point of one caller and the worker: a small state machine behind one lock.
//!
//! The transitions decide the two guarantees the batcher gives: a caller whose future is dropped while its item is
//! still queued wins the race (`Queued -> Cancelled`) and its item is never sent, and once the worker has moved the
//! item to `Dispatched` a late drop only discards the answer. Every slot is answered exactly once: the worker's
//! [`Ticket`] answers `Cancelled` when it is dropped without an answer.

use crate::BatchError;
use std::{
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll, Waker},
};

enum State<V, E> {
    Queued(Option<Waker>),
    Dispatched(Option<Waker>),
    Done(Result<V, BatchError<E>>),
    /// The caller left before dispatch.
    Cancelled,
    /// The caller took the answer, or left after dispatch.
    Closed,
}

pub(crate) struct Slot<V, E> {
    state: Mutex<State<V, E>>,
}

impl<V, E> Slot<V, E> {
    pub(crate) fn new() -> Self {
        Slot {
            state: Mutex::new(State::Queued(None)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<V, E>> {
        // Every state is valid whatever a panicking holder was doing.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Caller side: the answer, or `Pending` with the waker stored.
    pub(crate) fn poll(&self, cx: &mut Context<'_>) -> Poll<Result<V, BatchError<E>>> {
        let mut state = self.lock();
        match &mut *state {
            State::Queued(w) | State::Dispatched(w) => {
                match w {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *w = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            State::Done(_) => match std::mem::replace(&mut *state, State::Closed) {
                State::Done(result) => Poll::Ready(result),
                _ => unreachable!("matched Done above"),
            },
            // Polled after completion: a caller bug; answer rather than hang.
            State::Cancelled | State::Closed => Poll::Ready(Err(BatchError::Cancelled)),
        }
    }

    /// Caller side, on drop: `true` when the item was still queued (it will not be sent).
    pub(crate) fn cancel(&self) -> bool {
        let mut state = self.lock();
        match &*state {
            State::Queued(_) => {
                *state = State::Cancelled;
                true
            }
            State::Dispatched(_) | State::Done(_) => {
                *state = State::Closed;
                false
            }
            State::Cancelled | State::Closed => false,
        }
    }

    /// Worker side: claims a queued item for a batch; `false` when its caller already left.
    pub(crate) fn dispatch(&self) -> bool {
        let mut state = self.lock();
        match &mut *state {
            State::Queued(w) => {
                let w = w.take();
                *state = State::Dispatched(w);
                true
            }
            _ => false,
        }
    }

    /// Worker side: whether the caller is still waiting (used to compact accumulators).
    pub(crate) fn is_live(&self) -> bool {
        matches!(&*self.lock(), State::Queued(_) | State::Dispatched(_))
    }

    fn complete(&self, result: Result<V, BatchError<E>>) {
        let waker = {
            let mut state = self.lock();
            match &mut *state {
                State::Queued(w) | State::Dispatched(w) => {
                    let w = w.take();
                    *state = State::Done(result);
                    w
                }
                // Nobody listens: drop the answer (outside the lock).
                _ => None,
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The worker's half of a slot: answers exactly once, `Cancelled` if dropped unanswered.
pub(crate) struct Ticket<V, E> {
    slot: Option<Arc<Slot<V, E>>>,
}

impl<V, E> Ticket<V, E> {
    pub(crate) fn new(slot: Arc<Slot<V, E>>) -> Self {
        Ticket { slot: Some(slot) }
    }

    pub(crate) fn slot(&self) -> Option<&Slot<V, E>> {
        self.slot.as_deref()
    }

    pub(crate) fn answer(mut self, result: Result<V, BatchError<E>>) {
        if let Some(slot) = self.slot.take() {
            slot.complete(result);
        }
    }
}

impl<V, E> Drop for Ticket<V, E> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            slot.complete(Err(BatchError::Cancelled));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn poll<V, E>(slot: &Slot<V, E>) -> Poll<Result<V, BatchError<E>>> {
        slot.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn answer_reaches_the_caller_once() {
        let slot = Arc::new(Slot::<u32, ()>::new());
        let ticket = Ticket::new(slot.clone());
        assert!(poll(&slot).is_pending());
        assert!(slot.dispatch());
        assert!(slot.is_live());
        ticket.answer(Ok(7));
        assert!(matches!(poll(&slot), Poll::Ready(Ok(7))));
        assert!(!slot.is_live());
        assert!(!slot.cancel(), "already answered");
    }

    #[test]
    fn cancel_before_dispatch_wins() {
        let slot = Arc::new(Slot::<u32, ()>::new());
        let ticket = Ticket::new(slot.clone());
        assert!(slot.cancel());
        assert!(!slot.dispatch(), "a cancelled item is not sent");
        assert!(!slot.is_live());
        ticket.answer(Ok(1)); // dropped quietly
    }

    #[test]
    fn cancel_after_dispatch_only_drops_the_answer() {
        let slot = Arc::new(Slot::<u32, ()>::new());
        let _ticket = Ticket::new(slot.clone());
        assert!(slot.dispatch());
        assert!(!slot.cancel());
        assert!(!slot.dispatch());
    }

    #[test]
    fn dropped_ticket_answers_cancelled() {
        let slot = Arc::new(Slot::<u32, ()>::new());
        drop(Ticket::new(slot.clone()));
        assert!(matches!(
            poll(&slot),
            Poll::Ready(Err(BatchError::Cancelled))
        ));
    }
}
