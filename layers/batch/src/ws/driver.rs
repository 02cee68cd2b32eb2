//! One connection: the [`BatchSender`] the application pushes into and the [`SinkDriver`] that writes frames.

use super::config::{Config, Overflow};
use super::queue::{Pushed, Queue};
use futures_util::{Sink, SinkExt};
use metrics::Counter;
use std::{
    future::Future,
    hash::Hash,
    pin::{Pin, pin},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    task::{Context, Poll},
};
use tokio::{sync::Notify, time::Instant};
use tower_kit_core::ws::WsMessage;

/// Metric names of the message batcher (label `batcher`).
pub mod names {
    /// Counter: frames written (each carries one batch, or one frame sent as it is).
    pub const FRAMES: &str = "tower_kit.batch.ws.frames";
    /// Counter: messages written inside batches.
    pub const MESSAGES: &str = "tower_kit.batch.ws.messages";
    /// Counter: messages replaced by a newer one with the same key before they were sent (latest wins).
    pub const REPLACED: &str = "tower_kit.batch.ws.replaced";
    /// Counter: messages dropped because a connection's queue was full; label `reason`: `drop_oldest`,
    /// `drop_newest` or `close`.
    pub const DROPPED: &str = "tower_kit.batch.ws.dropped";
    /// Counter: connections closed by the overflow policy.
    pub const OVERFLOW_CLOSES: &str = "tower_kit.batch.ws.overflow_closes";
}

/// Why [`BatchSender::send`] did not queue a message; the message is given back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError<T> {
    /// The queue was full and the policy dropped this message ([`Overflow::DropNewest`], or [`Overflow::Close`],
    /// which also closes the connection).
    #[error("the connection's queue is full")]
    Full(T),
    /// The connection is closing or closed (the driver ended, or the overflow policy closed it).
    #[error("the connection is closed")]
    Closed(T),
}

impl<T> SendError<T> {
    /// The message that was not queued.
    pub fn into_inner(self) -> T {
        match self {
            SendError::Full(t) | SendError::Closed(t) => t,
        }
    }
}

/// How a [`SinkDriver`] ended (other than by a sink error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ended {
    /// Every [`BatchSender`] was dropped; what was pending was sent first.
    SendersDropped,
    /// The queue overflowed under [`Overflow::Close`]: a close frame with this code was attempted. Drop the socket.
    Overflowed {
        /// The close code.
        code: u16,
    },
}

/// Counters of one connection, from [`BatchSender::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SinkStats {
    /// Messages and frames waiting now.
    pub queued: usize,
    /// Weight (bytes, as weighed) of the messages waiting now.
    pub queued_bytes: usize,
    /// Frames written.
    pub frames: u64,
    /// Messages written inside batches.
    pub messages: u64,
    /// Messages replaced by a newer one with the same key.
    pub replaced: u64,
    /// Messages dropped by the overflow policy.
    pub dropped: u64,
}

struct State<T, K, M> {
    queue: Queue<T, K, M>,
    closing: Option<u16>,
    ended: bool,
    senders: usize,
}

struct Conn<T, M, K> {
    config: Arc<Config<T, M, K>>,
    state: Mutex<State<T, K, M>>,
    notify: Notify,
    frames: AtomicU64,
    messages: AtomicU64,
    replaced: AtomicU64,
    dropped: AtomicU64,
    metric_frames: Counter,
    metric_messages: Counter,
    metric_replaced: Counter,
    metric_dropped: Counter,
}

impl<T, M, K> Conn<T, M, K> {
    fn lock(&self) -> MutexGuard<'_, State<T, K, M>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Pushes messages into one connection's batcher; cheap to clone. Sending never waits: the message is queued,
/// replaces its key's pending message, or meets the overflow policy.
pub struct BatchSender<T, M, K = ()> {
    conn: Arc<Conn<T, M, K>>,
}

impl<T, M, K> std::fmt::Debug for BatchSender<T, M, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchSender").finish_non_exhaustive()
    }
}

impl<T, M, K> Clone for BatchSender<T, M, K> {
    fn clone(&self) -> Self {
        self.conn.lock().senders += 1;
        Self {
            conn: Arc::clone(&self.conn),
        }
    }
}

impl<T, M, K> Drop for BatchSender<T, M, K> {
    fn drop(&mut self) {
        let last = {
            let mut st = self.conn.lock();
            st.senders -= 1;
            st.senders == 0
        };
        if last {
            self.conn.notify.notify_one();
        }
    }
}

impl<T, M, K: Hash + Eq + Clone> BatchSender<T, M, K> {
    /// Queues a message for the next batch.
    pub fn send(&self, item: T) -> Result<(), SendError<T>> {
        let config = &self.conn.config;
        let key = config.key.as_ref().map(|key| key(&item));
        let weight = config.weigh.as_ref().map_or(0, |weigh| weigh(&item));
        let pushed = {
            let mut st = self.conn.lock();
            if st.ended || st.closing.is_some() {
                return Err(SendError::Closed(item));
            }
            match st.queue.push(
                key,
                item,
                weight,
                config.max_queued,
                config.overflow,
                Instant::now(),
            ) {
                Ok(pushed) => pushed,
                Err((_, item)) => {
                    if let Overflow::Close { code } = config.overflow {
                        st.closing = Some(code);
                    }
                    drop(st);
                    self.dropped();
                    self.conn.notify.notify_one();
                    return Err(SendError::Full(item));
                }
            }
        };
        match pushed {
            Pushed::Replaced => {
                self.conn.replaced.fetch_add(1, Relaxed);
                self.conn.metric_replaced.increment(1);
            }
            Pushed::DroppedOldest => self.dropped(),
            _ => {}
        }
        self.conn.notify.notify_one();
        Ok(())
    }

    fn dropped(&self) {
        self.conn.dropped.fetch_add(1, Relaxed);
        self.conn.metric_dropped.increment(1);
    }

    /// Queues a frame to be written as it is, ahead of the next batch (an echo, an error message). It counts
    /// towards the queue bound; a full queue refuses it ([`SendError::Full`]) whatever the policy.
    pub fn send_frame(&self, frame: M) -> Result<(), SendError<M>> {
        {
            let mut st = self.conn.lock();
            if st.ended || st.closing.is_some() {
                return Err(SendError::Closed(frame));
            }
            st.queue
                .push_frame(frame, self.conn.config.max_queued)
                .map_err(SendError::Full)?;
        }
        self.conn.notify.notify_one();
        Ok(())
    }

    /// Whether the connection is closing or closed: further messages would be refused.
    pub fn is_closed(&self) -> bool {
        let st = self.conn.lock();
        st.ended || st.closing.is_some()
    }

    /// The connection's counters now.
    pub fn stats(&self) -> SinkStats {
        let (queued, queued_bytes) = {
            let st = self.conn.lock();
            (st.queue.len(), st.queue.bytes())
        };
        SinkStats {
            queued,
            queued_bytes,
            frames: self.conn.frames.load(Relaxed),
            messages: self.conn.messages.load(Relaxed),
            replaced: self.conn.replaced.load(Relaxed),
            dropped: self.conn.dropped.load(Relaxed),
        }
    }
}

type DriverFuture<E> = Pin<Box<dyn Future<Output = Result<Ended, E>> + Send>>;

/// Writes one connection's frames: spawn it (or await it beside your receive loop). It resolves when every
/// [`BatchSender`] is dropped and the queue is flushed ([`Ended::SendersDropped`]), when the overflow policy closed
/// the connection ([`Ended::Overflowed`]), or with the sink's error.
#[must_use = "the driver writes the frames only while it is polled"]
pub struct SinkDriver<Si, T, M, K>
where
    Si: Sink<M>,
{
    future: DriverFuture<Si::Error>,
    _types: std::marker::PhantomData<fn() -> (T, K)>,
}

impl<Si: Sink<M>, T, M, K> std::fmt::Debug for SinkDriver<Si, T, M, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkDriver").finish_non_exhaustive()
    }
}

impl<Si: Sink<M>, T, M, K> Future for SinkDriver<Si, T, M, K> {
    type Output = Result<Ended, Si::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.future.as_mut().poll(cx)
    }
}

#[allow(clippy::type_complexity)]
pub(crate) fn attach<Si, T, M, K>(
    config: Arc<Config<T, M, K>>,
    sink: Si,
) -> (BatchSender<T, M, K>, SinkDriver<Si, T, M, K>)
where
    Si: Sink<M> + Unpin + Send + 'static,
    Si::Error: Send,
    T: Send + 'static,
    M: WsMessage + Send + 'static,
    K: Hash + Eq + Clone + Send + 'static,
{
    let name = config.name.clone();
    let conn = Arc::new(Conn {
        state: Mutex::new(State {
            queue: Queue::new(),
            closing: None,
            ended: false,
            senders: 1,
        }),
        notify: Notify::new(),
        frames: AtomicU64::new(0),
        messages: AtomicU64::new(0),
        replaced: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        metric_frames: metrics::counter!(names::FRAMES, "batcher" => name.clone()),
        metric_messages: metrics::counter!(names::MESSAGES, "batcher" => name.clone()),
        metric_replaced: metrics::counter!(names::REPLACED, "batcher" => name.clone()),
        metric_dropped: metrics::counter!(
            names::DROPPED,
            "batcher" => name,
            "reason" => config.overflow.as_str()
        ),
        config,
    });
    let sender = BatchSender {
        conn: Arc::clone(&conn),
    };
    let driver = SinkDriver {
        future: Box::pin(drive(conn, sink)),
        _types: std::marker::PhantomData,
    };
    (sender, driver)
}

/// Marks the connection ended however the driver stops (also when it is dropped), so senders are refused.
struct EndGuard<T, M, K>(Arc<Conn<T, M, K>>);

impl<T, M, K> Drop for EndGuard<T, M, K> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.ended = true;
        // Nothing will send what is left: free it now.
        st.queue = Queue::new();
    }
}

enum Next<T, M> {
    Frame(M),
    Batch(Vec<T>),
    Wait(Option<Instant>),
    Close(u16),
    Finish,
}

async fn drive<Si, T, M, K>(conn: Arc<Conn<T, M, K>>, mut sink: Si) -> Result<Ended, Si::Error>
where
    Si: Sink<M> + Unpin,
    M: WsMessage,
    K: Hash + Eq + Clone,
{
    let _guard = EndGuard(Arc::clone(&conn));
    let config = Arc::clone(&conn.config);
    loop {
        let next = {
            let mut st = conn.lock();
            if let Some(code) = st.closing {
                Next::Close(code)
            } else if let Some(frame) = st.queue.frames.pop_front() {
                Next::Frame(frame)
            } else {
                let waiting = st.queue.items();
                let due = st.queue.oldest().map(|t| t + config.max_delay);
                let flush = waiting > 0
                    && (waiting >= config.max_messages
                        || st.queue.bytes() >= config.max_bytes
                        || due.is_some_and(|due| due <= Instant::now())
                        || st.senders == 0);
                if flush {
                    Next::Batch(st.queue.take_batch(config.max_messages, config.max_bytes))
                } else if st.senders == 0 {
                    Next::Finish
                } else {
                    Next::Wait(due)
                }
            }
        };
        match next {
            Next::Frame(frame) => {
                if let Some(code) = write(&conn, &mut sink, frame).await? {
                    return Ok(close(&conn, &mut sink, code).await);
                }
                conn.frames.fetch_add(1, Relaxed);
                conn.metric_frames.increment(1);
            }
            Next::Batch(batch) => {
                let n = batch.len() as u64;
                let frame = (config.encode)(batch);
                if let Some(code) = write(&conn, &mut sink, frame).await? {
                    return Ok(close(&conn, &mut sink, code).await);
                }
                conn.frames.fetch_add(1, Relaxed);
                conn.messages.fetch_add(n, Relaxed);
                conn.metric_frames.increment(1);
                conn.metric_messages.increment(n);
            }
            Next::Wait(Some(due)) => {
                tokio::select! {
                    () = conn.notify.notified() => {}
                    () = tokio::time::sleep_until(due) => {}
                }
            }
            Next::Wait(None) => conn.notify.notified().await,
            Next::Close(code) => return Ok(close(&conn, &mut sink, code).await),
            Next::Finish => {
                sink.flush().await?;
                return Ok(Ended::SendersDropped);
            }
        }
    }
}

/// Writes and flushes one frame; gives up on it (returning the close code) if the overflow policy closes the
/// connection meanwhile, as a stalled client would otherwise hold the driver forever.
async fn write<Si, T, M, K>(
    conn: &Conn<T, M, K>,
    sink: &mut Si,
    frame: M,
) -> Result<Option<u16>, Si::Error>
where
    Si: Sink<M> + Unpin,
{
    let mut send = pin!(sink.send(frame));
    loop {
        tokio::select! {
            biased;
            result = &mut send => {
                result?;
                return Ok(None);
            }
            () = conn.notify.notified() => {
                if let Some(code) = conn.lock().closing {
                    return Ok(Some(code));
                }
            }
        }
    }
}

/// Attempts a close frame for at most the close timeout.
async fn close<Si, T, M, K>(conn: &Conn<T, M, K>, sink: &mut Si, code: u16) -> Ended
where
    Si: Sink<M> + Unpin,
    M: WsMessage,
{
    metrics::counter!(names::OVERFLOW_CLOSES, "batcher" => conn.config.name.clone()).increment(1);
    let attempt = async {
        if sink.feed(M::close(code, "client too slow")).await.is_ok() {
            let _ = sink.close().await;
        }
    };
    let _ = tokio::time::timeout(conn.config.close_timeout, attempt).await;
    Ended::Overflowed { code }
}
