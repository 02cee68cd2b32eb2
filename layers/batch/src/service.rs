use crate::{
    BatchError,
    future::ResponseFuture,
    slot::{Slot, Ticket},
};
use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
};
use tokio::sync::mpsc;
use tower_service::Service;

/// One item for the worker.
pub(crate) type Message<Req, V, E> = (Req, Ticket<V, E>);

/// State shared by the callers and the worker.
pub(crate) struct Shared {
    /// Items accepted and not yet sent to the backend (nor cancelled).
    pub(crate) queued: AtomicUsize,
    /// How many callers left before dispatch, ever (the worker compacts when it changes).
    pub(crate) cancellations: AtomicU64,
    pub(crate) max_queued: usize,
    pub(crate) overloaded: metrics::Counter,
    /// The refusal a full queue reports to the hook, prepared once.
    pub(crate) refusal: crate::Refusal,
    pub(crate) on_refusal: Option<crate::refusal::RefusalHook>,
}

/// The batched service: a cheap-to-clone `Service<Req>` in front of a backend that takes `Vec<Req>`.
///
/// Made by [`BatchLayer`](crate::BatchLayer). `poll_ready` is always ready: a call beyond `max_queued` waiting
/// items fails at once with [`BatchError::Overloaded`] instead of stalling. Dropping the response future before its
/// item is sent removes the item: it is never sent. Cloning costs two atomic increments.
///
/// The backend lives in the batcher's worker task, so unlike other tower-kit services this one has no
/// `get_ref`/`get_mut`/`into_inner`.
pub struct Batch<Req, V, E> {
    tx: mpsc::UnboundedSender<Message<Req, V, E>>,
    flush: mpsc::UnboundedSender<()>,
    shared: Arc<Shared>,
}

impl<Req, V, E> Clone for Batch<Req, V, E> {
    fn clone(&self) -> Self {
        Batch {
            tx: self.tx.clone(),
            flush: self.flush.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<Req, V, E> fmt::Debug for Batch<Req, V, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("queued", &self.shared.queued.load(Ordering::Relaxed))
            .field("max_queued", &self.shared.max_queued)
            .finish_non_exhaustive()
    }
}

impl<Req, V, E> Batch<Req, V, E> {
    pub(crate) fn new(
        tx: mpsc::UnboundedSender<Message<Req, V, E>>,
        flush: mpsc::UnboundedSender<()>,
        shared: Arc<Shared>,
    ) -> Self {
        Batch { tx, flush, shared }
    }

    /// Queues `item` and returns the future of its result; the same as `Service::call`, without needing
    /// `&mut self` or `poll_ready`.
    pub fn load(&self, item: Req) -> ResponseFuture<V, E> {
        let shared = &self.shared;
        if shared.queued.fetch_add(1, Ordering::AcqRel) >= shared.max_queued {
            shared.queued.fetch_sub(1, Ordering::AcqRel);
            shared.overloaded.increment(1);
            if let Some(hook) = &shared.on_refusal {
                hook(&shared.refusal);
            }
            return ResponseFuture::failed(BatchError::Overloaded);
        }
        let slot = Arc::new(Slot::new());
        let message = (item, Ticket::new(Arc::clone(&slot)));
        if self.tx.send(message).is_err() {
            shared.queued.fetch_sub(1, Ordering::AcqRel);
            return ResponseFuture::failed(BatchError::Cancelled);
        }
        ResponseFuture::waiting(slot, Arc::clone(shared))
    }

    /// A handle to flush the batcher and read its queue depth.
    pub fn handle(&self) -> BatchHandle {
        BatchHandle {
            flush: self.flush.clone(),
            shared: Arc::clone(&self.shared),
        }
    }

    /// Items accepted and not yet sent to the backend.
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Acquire)
    }
}

impl<Req, V, E> Service<Req> for Batch<Req, V, E> {
    type Response = V;
    type Error = BatchError<E>;
    type Future = ResponseFuture<V, E>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Never wait here: admission is decided in `call`, so a full queue is an immediate `Overloaded`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, item: Req) -> Self::Future {
        self.load(item)
    }
}

/// Controls a running batcher without its item types: [`flush`](Self::flush) and the queue depth. `Clone`.
///
/// A handle does not keep the batcher running: once every [`Batch`] clone is dropped, the worker sends what is
/// left and stops.
#[derive(Clone)]
pub struct BatchHandle {
    flush: mpsc::UnboundedSender<()>,
    shared: Arc<Shared>,
}

impl fmt::Debug for BatchHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchHandle")
            .field("queued", &self.queued())
            .finish_non_exhaustive()
    }
}

impl BatchHandle {
    /// Sends everything waiting now, in every partition, without waiting for more items or `max_latency`
    /// (still within `max_items`, `max_weight` and `max_concurrent_batches`). Returns `false` when the batcher has
    /// stopped.
    pub fn flush(&self) -> bool {
        self.flush.send(()).is_ok()
    }

    /// Items accepted and not yet sent to the backend.
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Acquire)
    }
}
