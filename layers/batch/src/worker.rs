//! The background task that owns the backend and the accumulators.

use crate::{
    Batch, BatchError,
    accumulator::{Accumulator, Limits, Taken, Waiters},
    layer::Config,
    service::{Message, Shared},
    slot::Ticket,
};
use futures_util::{StreamExt, stream::FuturesUnordered};
use std::{
    collections::HashMap,
    future::Future,
    hash::Hash,
    panic::{AssertUnwindSafe, catch_unwind},
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};
use tokio::{
    sync::mpsc,
    time::{Instant, Sleep},
};
use tower_service::Service;

/// Splits a backend answer among the batch's callers.
pub(crate) type Demux<R, K, V, E> = fn(R, Vec<K>, Vec<Waiters<V, E>>);

/// Metric names.
pub(crate) const ITEMS: &str = "tower_kit.batch.items";
pub(crate) const WAIT: &str = "tower_kit.batch.wait.duration";
pub(crate) const QUEUE_DEPTH: &str = "tower_kit.batch.queue.depth";
pub(crate) const OVERLOADED: &str = "tower_kit.batch.overloaded";

/// How many messages one poll takes before giving other tasks a turn.
const RECEIVE_BUDGET: usize = 1024;

struct Metrics {
    items: metrics::Histogram,
    wait: metrics::Histogram,
    depth: metrics::Gauge,
}

pub(crate) fn spawn<Req, K, P, S, V>(
    config: Config<Req, K, P>,
    backend: S,
    demux: Demux<S::Response, K, V, S::Error>,
) -> Batch<Req, V, S::Error>
where
    Req: Send + 'static,
    K: Hash + Eq + Clone + Send + 'static,
    P: Hash + Eq + Clone + Send + 'static,
    S: Service<Vec<Req>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + Sync + 'static,
    V: Send + 'static,
{
    let name = config.name.to_string();
    metrics::describe_histogram!(ITEMS, "Items per backend call of a batcher.");
    metrics::describe_histogram!(
        WAIT,
        metrics::Unit::Seconds,
        "How long the oldest item of a batch waited before the batch was sent."
    );
    metrics::describe_gauge!(
        QUEUE_DEPTH,
        "Items accepted and not yet sent to the backend."
    );
    metrics::describe_counter!(
        OVERLOADED,
        "Calls refused because the batch queue was full."
    );
    let shared = Arc::new(Shared {
        queued: AtomicUsize::new(0),
        cancellations: AtomicU64::new(0),
        max_queued: config.max_queued,
        overloaded: metrics::counter!(OVERLOADED, "batcher" => name.clone()),
        refusal: crate::Refusal {
            reason: crate::RefusalReason::QueueFull,
            batcher: config.name.clone(),
            max_queued: config.max_queued,
        },
        on_refusal: config.on_refusal.clone(),
    });
    let metrics = Metrics {
        items: metrics::histogram!(ITEMS, "batcher" => name.clone()),
        wait: metrics::histogram!(WAIT, "batcher" => name.clone()),
        depth: metrics::gauge!(QUEUE_DEPTH, "batcher" => name),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let (flush_tx, flush_rx) = mpsc::unbounded_channel();
    let mut worker = Worker {
        limits: Limits {
            max_items: config.max_items,
            max_weight: config.max_weight,
        },
        config,
        shared: Arc::clone(&shared),
        rx,
        flush_rx,
        backend,
        accs: HashMap::default(),
        in_flight: FuturesUnordered::new(),
        demux,
        timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
        timer_at: None,
        flush_pending: false,
        closed: false,
        metrics,
    };
    tokio::spawn(async move { std::future::poll_fn(|cx| worker.poll_work(cx)).await });
    Batch::new(tx, flush_tx, shared)
}

struct Dispatched<P, K, V, E> {
    partition: P,
    keys: Vec<K>,
    waiters: Vec<Waiters<V, E>>,
}

impl<P, K, V, E> Dispatched<P, K, V, E> {
    fn fail(self, error: BatchError<E>) -> P {
        for w in self.waiters {
            w.fail(&error);
        }
        self.partition
    }
}

/// The backend panicked while being polled.
struct Panicked;

pin_project_lite::pin_project! {
    /// One backend call in flight, with the callers it answers. A panic while polling it is caught.
    struct InFlight<F, P, K, V, E> {
        #[pin]
        fut: F,
        batch: Option<Dispatched<P, K, V, E>>,
    }
}

type Finished<R, P, K, V, E> = (Dispatched<P, K, V, E>, Result<Result<R, E>, Panicked>);

impl<F, R, P, K, V, E> Future for InFlight<F, P, K, V, E>
where
    F: Future<Output = Result<R, E>>,
{
    type Output = Option<Finished<R, P, K, V, E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let fut = this.fut;
        let result = match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(result)) => Ok(result),
            Err(_) => Err(Panicked),
        };
        Poll::Ready(this.batch.take().map(|batch| (batch, result)))
    }
}

struct Worker<Req, K, P, S: Service<Vec<Req>>, V> {
    config: Config<Req, K, P>,
    limits: Limits,
    shared: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<Message<Req, V, S::Error>>,
    flush_rx: mpsc::UnboundedReceiver<()>,
    backend: S,
    accs: HashMap<P, Accumulator<Req, K, V, S::Error>, foldhash::fast::RandomState>,
    #[allow(clippy::type_complexity)]
    in_flight: FuturesUnordered<InFlight<S::Future, P, K, V, S::Error>>,
    demux: Demux<S::Response, K, V, S::Error>,
    timer: Pin<Box<Sleep>>,
    timer_at: Option<Instant>,
    /// A flush was asked for and applies once the queue is drained.
    flush_pending: bool,
    /// Every `Batch` clone is gone: send what is left, then stop.
    closed: bool,
    metrics: Metrics,
}

impl<Req, K, P, S, V> Worker<Req, K, P, S, V>
where
    K: Hash + Eq + Clone,
    P: Hash + Eq + Clone,
    S: Service<Vec<Req>>,
{
    fn poll_work(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        for _ in 0..64 {
            let now = Instant::now();
            let mut progress = self.receive(cx, now);
            while let Poll::Ready(Some(done)) = self.in_flight.poll_next_unpin(cx) {
                if let Some((batch, result)) = done {
                    self.finish(batch, result);
                }
                progress = true;
            }
            progress |= self.dispatch(cx, now);
            if progress {
                continue;
            }
            self.metrics
                .depth
                .set(self.shared.queued.load(Ordering::Acquire) as f64);
            if self.closed && self.accs.is_empty() && self.in_flight.is_empty() {
                return Poll::Ready(());
            }
            match self.next_deadline(now) {
                Some(at) => {
                    if self.timer_at != Some(at) {
                        self.timer.as_mut().reset(at);
                        self.timer_at = Some(at);
                    }
                    if self.timer.as_mut().poll(cx).is_ready() {
                        self.timer_at = None;
                        continue;
                    }
                }
                None => self.timer_at = None,
            }
            return Poll::Pending;
        }
        // Plenty done in one go: let other tasks run, then carry on.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Takes the waiting messages; `true` when the budget ran out with more possibly waiting.
    fn receive(&mut self, cx: &mut Context<'_>, now: Instant) -> bool {
        // Look at flush requests first: the items sent before a request are then in the queue drained below.
        while let Poll::Ready(Some(())) = self.flush_rx.poll_recv(cx) {
            self.flush_pending = true;
        }
        let mut received = 0;
        while !self.closed {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some((req, ticket))) => {
                    self.enqueue(req, ticket, now);
                    received += 1;
                    if received >= RECEIVE_BUDGET {
                        return true;
                    }
                }
                Poll::Ready(None) => {
                    self.closed = true;
                    return true;
                }
                Poll::Pending => break,
            }
        }
        if std::mem::take(&mut self.flush_pending) {
            self.accs.values_mut().for_each(Accumulator::mark_flush);
        }
        false
    }

    fn enqueue(&mut self, req: Req, ticket: Ticket<V, S::Error>, now: Instant) {
        let partition = (self.config.partition)(&req);
        let key = (self.config.key)(&req);
        let weight = self.config.weight.as_ref().map_or(1, |w| w(&req));
        let keyed = self.config.keyed;
        self.accs
            .entry(partition)
            .or_insert_with(|| Accumulator::new(keyed))
            .push(req, key, ticket, weight, now);
    }

    /// Whether this accumulator's front batch should go now.
    fn is_ready(&self, acc: &mut Accumulator<Req, K, V, S::Error>, now: Instant) -> bool {
        if acc.is_empty() {
            return false;
        }
        if self.closed
            || acc.flush_requested()
            || (self.config.leading_edge && acc.in_flight == 0)
            || acc.oldest().is_some_and(|t| {
                t.checked_add(self.config.max_latency)
                    .is_some_and(|d| d <= now)
            })
        {
            return true;
        }
        acc.is_full(
            self.limits,
            self.shared.cancellations.load(Ordering::Acquire),
        )
    }

    /// The ready partition whose oldest item has waited longest.
    fn pick_ready(&mut self, now: Instant) -> Option<P> {
        let mut accs = std::mem::take(&mut self.accs);
        let mut best: Option<(&P, Instant)> = None;
        for (p, acc) in accs.iter_mut() {
            if self.is_ready(acc, now)
                && let Some(oldest) = acc.oldest()
                && best.is_none_or(|(_, b)| oldest < b)
            {
                best = Some((p, oldest));
            }
        }
        let picked = best.map(|(p, _)| p.clone());
        self.accs = accs;
        picked
    }

    /// Sends every batch that is ready, as far as `max_concurrent_batches` and the backend's readiness allow.
    fn dispatch(&mut self, cx: &mut Context<'_>, now: Instant) -> bool {
        let mut any = false;
        while self.in_flight.len() < self.config.max_concurrent_batches {
            let Some(partition) = self.pick_ready(now) else {
                break;
            };
            let readiness = catch_unwind(AssertUnwindSafe(|| self.backend.poll_ready(cx)));
            let failure = match readiness {
                Ok(Poll::Pending) => break,
                Ok(Poll::Ready(Ok(()))) => None,
                Ok(Poll::Ready(Err(e))) => Some(BatchError::Backend(Arc::new(e))),
                Err(_) => Some(BatchError::BackendPanicked),
            };
            any = true;
            let Some(acc) = self.accs.get_mut(&partition) else {
                continue;
            };
            let Some(taken) = acc.take(self.limits) else {
                self.forget_if_idle(&partition);
                continue;
            };
            let Taken {
                reqs,
                keys,
                waiters,
                oldest,
                callers,
            } = taken;
            self.shared.queued.fetch_sub(callers, Ordering::AcqRel);
            self.metrics.items.record(reqs.len() as f64);
            self.metrics
                .wait
                .record(now.saturating_duration_since(oldest).as_secs_f64());
            let batch = Dispatched {
                partition: partition.clone(),
                keys,
                waiters,
            };
            if let Some(error) = failure {
                batch.fail(error);
                self.forget_if_idle(&partition);
                continue;
            }
            match catch_unwind(AssertUnwindSafe(|| self.backend.call(reqs))) {
                Ok(fut) => {
                    acc.in_flight += 1;
                    self.in_flight.push(InFlight {
                        fut,
                        batch: Some(batch),
                    });
                }
                Err(_) => {
                    batch.fail(BatchError::BackendPanicked);
                    self.forget_if_idle(&partition);
                }
            }
        }
        any
    }

    fn finish(
        &mut self,
        batch: Dispatched<P, K, V, S::Error>,
        result: Result<Result<S::Response, S::Error>, Panicked>,
    ) {
        let partition = match result {
            Ok(Ok(response)) => {
                let Dispatched {
                    partition,
                    keys,
                    waiters,
                } = batch;
                (self.demux)(response, keys, waiters);
                partition
            }
            Ok(Err(e)) => batch.fail(BatchError::Backend(Arc::new(e))),
            Err(Panicked) => batch.fail(BatchError::BackendPanicked),
        };
        if let Some(acc) = self.accs.get_mut(&partition) {
            acc.in_flight = acc.in_flight.saturating_sub(1);
        }
        self.forget_if_idle(&partition);
    }

    /// Drops a partition's accumulator once it holds nothing, so the map stays as small as the live partitions.
    fn forget_if_idle(&mut self, partition: &P) {
        if self
            .accs
            .get(partition)
            .is_some_and(|a| a.is_empty() && a.in_flight == 0)
        {
            self.accs.remove(partition);
        }
    }

    /// The earliest future `max_latency` deadline (deadlines already passed wait on a batch slot or the backend,
    /// which wake the worker themselves).
    fn next_deadline(&self, now: Instant) -> Option<Instant> {
        self.accs
            .values()
            .filter_map(|a| a.oldest()?.checked_add(self.config.max_latency))
            .filter(|d| *d > now)
            .min()
    }
}
