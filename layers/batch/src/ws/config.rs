//! [`MessageBatcher`]: the configuration of message batching, and its builder.

use super::driver::{BatchSender, SinkDriver};
use std::{hash::Hash, marker::PhantomData, num::NonZeroUsize, sync::Arc, time::Duration};
use tower_kit_core::ConfigError;

/// Default [`max_messages`](MessageBatcherBuilder::max_messages): 10 messages per frame.
pub const DEFAULT_MAX_MESSAGES: usize = 10;
/// Default [`max_bytes`](MessageBatcherBuilder::max_bytes): 64 KiB of messages per frame.
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024;
/// Default [`max_delay`](MessageBatcherBuilder::max_delay): 100 ms from the oldest pending message.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_millis(100);
/// Default [`max_queued`](MessageBatcherBuilder::max_queued): 1000 pending messages per connection.
pub const DEFAULT_MAX_QUEUED: usize = 1000;
/// Default [`close_timeout`](MessageBatcherBuilder::close_timeout): how long the close frame may take to go out.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// What happens when a connection's queue is full (the client reads slower than messages come).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Overflow {
    /// Drop the oldest pending message to make room (the default: live data, the newest matters).
    DropOldest,
    /// Drop the new message; [`BatchSender::send`] returns [`SendError::Full`](super::SendError::Full).
    DropNewest,
    /// Close the connection with this close code (e.g. 1008, policy violation, or 1013, try again later): the
    /// write in progress is abandoned, a close frame is attempted for at most the close timeout, and the driver
    /// ends with [`Ended::Overflowed`](super::Ended::Overflowed).
    Close {
        /// The close code sent.
        code: u16,
    },
}

impl Overflow {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Overflow::DropOldest => "drop_oldest",
            Overflow::DropNewest => "drop_newest",
            Overflow::Close { .. } => "close",
        }
    }
}

type Encode<T, M> = dyn Fn(Vec<T>) -> M + Send + Sync;
type Weigh<T> = dyn Fn(&T) -> usize + Send + Sync;
type KeyOf<T, K> = dyn Fn(&T) -> K + Send + Sync;

pub(crate) struct Config<T, M, K> {
    pub(crate) max_messages: usize,
    pub(crate) max_bytes: usize,
    pub(crate) max_delay: Duration,
    pub(crate) max_queued: usize,
    pub(crate) overflow: Overflow,
    pub(crate) close_timeout: Duration,
    pub(crate) name: metrics::SharedString,
    pub(crate) encode: Box<Encode<T, M>>,
    pub(crate) weigh: Option<Box<Weigh<T>>>,
    pub(crate) key: Option<Box<KeyOf<T, K>>>,
}

/// Coalesces a connection's outgoing messages of type `T` into frames of type `M` (one frame per batch, built by
/// your `encode` function, e.g. a JSON array), flushing when a batch reaches
/// [`max_messages`](MessageBatcherBuilder::max_messages) or [`max_bytes`](MessageBatcherBuilder::max_bytes), or when
/// its oldest message has waited [`max_delay`](MessageBatcherBuilder::max_delay). With
/// [`latest_wins`](MessageBatcherBuilder::latest_wins), a message replaces the pending one with the same key.
///
/// Build it once and [`attach`](Self::attach) it to each connection's sink; clones share the configuration.
#[must_use]
pub struct MessageBatcher<T, M, K = ()> {
    pub(crate) config: Arc<Config<T, M, K>>,
}

impl<T, M, K> Clone for MessageBatcher<T, M, K> {
    fn clone(&self) -> Self {
        Self {
            config: Arc::clone(&self.config),
        }
    }
}

impl<T, M, K> std::fmt::Debug for MessageBatcher<T, M, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.config;
        f.debug_struct("MessageBatcher")
            .field("max_messages", &c.max_messages)
            .field("max_bytes", &c.max_bytes)
            .field("max_delay", &c.max_delay)
            .field("max_queued", &c.max_queued)
            .field("overflow", &c.overflow)
            .field("latest_wins", &c.key.is_some())
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static, M: Send + 'static> MessageBatcher<T, M, ()> {
    /// The defaults (10 messages or 64 KiB per frame, 100 ms, 1000 queued, drop oldest), with `encode` turning a
    /// batch into one frame.
    pub fn new(encode: impl Fn(Vec<T>) -> M + Send + Sync + 'static) -> Self {
        Self {
            config: Arc::new(Config {
                max_messages: DEFAULT_MAX_MESSAGES,
                max_bytes: DEFAULT_MAX_BYTES,
                max_delay: DEFAULT_MAX_DELAY,
                max_queued: DEFAULT_MAX_QUEUED,
                overflow: Overflow::DropOldest,
                close_timeout: DEFAULT_CLOSE_TIMEOUT,
                name: "websocket".into(),
                encode: Box::new(encode),
                weigh: None,
                key: None,
            }),
        }
    }

    /// A builder, with `encode` turning a batch into one frame.
    pub fn builder(
        encode: impl Fn(Vec<T>) -> M + Send + Sync + 'static,
    ) -> MessageBatcherBuilder<T, M, ()> {
        MessageBatcherBuilder {
            max_messages: DEFAULT_MAX_MESSAGES,
            max_bytes: DEFAULT_MAX_BYTES,
            max_delay: DEFAULT_MAX_DELAY,
            max_queued: DEFAULT_MAX_QUEUED,
            overflow: Overflow::DropOldest,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            name: "websocket".into(),
            encode: Box::new(encode),
            weigh: None,
            key: None,
            _key: PhantomData,
        }
    }
}

impl<T, M, K> MessageBatcher<T, M, K>
where
    T: Send + 'static,
    M: tower_kit_core::ws::WsMessage + Send + 'static,
    K: Hash + Eq + Clone + Send + 'static,
{
    /// Attaches the batcher to one connection's `sink`: returns the sender the application pushes messages into,
    /// and the driver, a future that writes the frames and must be spawned or awaited (it ends when every sender
    /// is dropped and the queue is flushed, when the sink fails, or when the overflow policy closes the
    /// connection).
    #[allow(clippy::type_complexity)]
    pub fn attach<Si>(&self, sink: Si) -> (BatchSender<T, M, K>, SinkDriver<Si, T, M, K>)
    where
        Si: futures_util::Sink<M> + Unpin + Send + 'static,
        Si::Error: Send,
    {
        super::driver::attach(Arc::clone(&self.config), sink)
    }
}

/// Builds a [`MessageBatcher`]; [`build`](Self::build) checks the settings and names the bad one.
#[must_use]
pub struct MessageBatcherBuilder<T, M, K> {
    max_messages: usize,
    max_bytes: usize,
    max_delay: Duration,
    max_queued: usize,
    overflow: Overflow,
    close_timeout: Duration,
    name: metrics::SharedString,
    encode: Box<Encode<T, M>>,
    weigh: Option<Box<Weigh<T>>>,
    key: Option<Box<KeyOf<T, K>>>,
    _key: PhantomData<fn() -> K>,
}

impl<T, M, K> std::fmt::Debug for MessageBatcherBuilder<T, M, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageBatcherBuilder")
            .field("max_messages", &self.max_messages)
            .field("max_delay", &self.max_delay)
            .finish_non_exhaustive()
    }
}

impl<T, M, K> MessageBatcherBuilder<T, M, K> {
    /// Flush when a batch holds this many messages (default 10; 1 sends each message in its own frame).
    pub fn max_messages(mut self, max: NonZeroUsize) -> Self {
        self.max_messages = max.get();
        self
    }

    /// Flush when a batch weighs this many bytes (default 64 KiB), as measured by
    /// [`weigh`](Self::weigh); a message heavier than this goes alone.
    pub fn max_bytes(mut self, max: usize) -> Self {
        self.max_bytes = max;
        self
    }

    /// Flush when the oldest message of a batch has waited this long (default 100 ms). Zero: send as soon as the
    /// sink is ready, batching only what piled up while it was busy.
    pub fn max_delay(mut self, max: Duration) -> Self {
        self.max_delay = max;
        self
    }

    /// The most messages (and ready frames) a connection may have waiting (default 1000); beyond it the
    /// [`overflow`](Self::overflow) policy applies. This is what bounds the memory of a slow client.
    pub fn max_queued(mut self, max: usize) -> Self {
        self.max_queued = max;
        self
    }

    /// What to do when the queue is full (default [`Overflow::DropOldest`]).
    pub fn overflow(mut self, policy: Overflow) -> Self {
        self.overflow = policy;
        self
    }

    /// How long the close frame of [`Overflow::Close`] may take to be written (default 1 s).
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// The `batcher` label of the metrics (default `websocket`).
    pub fn name(mut self, name: impl Into<metrics::SharedString>) -> Self {
        self.name = name.into();
        self
    }

    /// The size of a message in bytes, for [`max_bytes`](Self::max_bytes) (default: every message weighs 0, so
    /// only the count flushes).
    pub fn weigh(mut self, weigh: impl Fn(&T) -> usize + Send + Sync + 'static) -> Self {
        self.weigh = Some(Box::new(weigh));
        self
    }

    /// Latest wins: a message whose key has a message pending replaces it (in its place in the queue), so a
    /// batch carries at most one message per key: the newest (cursor positions, prices).
    pub fn latest_wins<K2>(
        self,
        key: impl Fn(&T) -> K2 + Send + Sync + 'static,
    ) -> MessageBatcherBuilder<T, M, K2> {
        MessageBatcherBuilder {
            max_messages: self.max_messages,
            max_bytes: self.max_bytes,
            max_delay: self.max_delay,
            max_queued: self.max_queued,
            overflow: self.overflow,
            close_timeout: self.close_timeout,
            name: self.name,
            encode: self.encode,
            weigh: self.weigh,
            key: Some(Box::new(key)),
            _key: PhantomData,
        }
    }

    /// Checks the settings.
    pub fn build(self) -> Result<MessageBatcher<T, M, K>, ConfigError> {
        if self.max_bytes == 0 {
            return Err(ConfigError::new("max_bytes", "must be at least 1 (got 0)"));
        }
        if self.max_queued == 0 {
            return Err(ConfigError::new("max_queued", "must be at least 1 (got 0)"));
        }
        if let Overflow::Close { code } = self.overflow
            && !(1000..=4999).contains(&code)
        {
            return Err(ConfigError::new(
                "overflow",
                format!("close code must be within 1000..=4999 (got {code})"),
            ));
        }
        if self.close_timeout.is_zero() {
            return Err(ConfigError::new(
                "close_timeout",
                "must be greater than zero (got 0ns)",
            ));
        }
        Ok(MessageBatcher {
            config: Arc::new(Config {
                max_messages: self.max_messages,
                max_bytes: self.max_bytes,
                max_delay: self.max_delay,
                max_queued: self.max_queued,
                overflow: self.overflow,
                close_timeout: self.close_timeout,
                name: self.name,
                encode: self.encode,
                weigh: self.weigh,
                key: self.key,
            }),
        })
    }
}
