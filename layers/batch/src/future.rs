//! The caller's future.

use crate::{BatchError, service::Shared, slot::Slot};
use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, atomic::Ordering},
    task::{Context, Poll},
};

/// The result of one batched call. Dropping it before the item is sent removes the item from its batch.
pub struct ResponseFuture<V, E> {
    state: State<V, E>,
}

enum State<V, E> {
    Failed(Option<BatchError<E>>),
    Waiting {
        slot: Arc<Slot<V, E>>,
        shared: Arc<Shared>,
    },
    Done,
}

impl<V, E> ResponseFuture<V, E> {
    pub(crate) fn failed(error: BatchError<E>) -> Self {
        ResponseFuture {
            state: State::Failed(Some(error)),
        }
    }

    pub(crate) fn waiting(slot: Arc<Slot<V, E>>, shared: Arc<Shared>) -> Self {
        ResponseFuture {
            state: State::Waiting { slot, shared },
        }
    }
}

impl<V, E> fmt::Debug for ResponseFuture<V, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Failed(_) => "failed",
            State::Waiting { .. } => "waiting",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<V, E> Future for ResponseFuture<V, E> {
    type Output = Result<V, BatchError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match &mut this.state {
            State::Failed(error) => {
                let error = error.take().unwrap_or(BatchError::Cancelled);
                this.state = State::Done;
                Poll::Ready(Err(error))
            }
            State::Waiting { slot, .. } => {
                let result = std::task::ready!(slot.poll(cx));
                this.state = State::Done;
                Poll::Ready(result)
            }
            State::Done => Poll::Ready(Err(BatchError::Cancelled)),
        }
    }
}

impl<V, E> Drop for ResponseFuture<V, E> {
    fn drop(&mut self) {
        if let State::Waiting { slot, shared } = &self.state
            && slot.cancel()
        {
            shared.queued.fetch_sub(1, Ordering::AcqRel);
            shared.cancellations.fetch_add(1, Ordering::AcqRel);
        }
    }
}
