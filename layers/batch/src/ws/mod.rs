//! Message batching for WebSockets (and any `Sink`): many small outgoing messages become fewer frames.
//!
//! A [`MessageBatcher`] is attached to each connection's sink ([`MessageBatcher::attach`]); the application pushes
//! messages into the returned [`BatchSender`], which never waits, and the [`SinkDriver`] writes one frame per
//! batch, built by your `encode` function (a JSON array, say):
//!
//! - **Flush** when a batch reaches `max_messages` (default 10) or `max_bytes` (as your `weigh` function counts
//!   them, default 64 KiB), or when its oldest message has waited `max_delay` (default 100 ms).
//! - **Latest wins** ([`latest_wins`](MessageBatcherBuilder::latest_wins)): a message replaces the pending message
//!   with the same key, in its place, so a batch carries only the newest state per key (cursor positions, prices).
//! - **Slow clients**: at most `max_queued` messages wait per connection (default 1000); then the [`Overflow`]
//!   policy drops the oldest, drops the newest, or closes the connection with a close code. A stalled client costs
//!   bounded memory: the queue plus the one frame being written.
//! - Frames sent as they are ([`BatchSender::send_frame`], for echoes or errors) go ahead of the next batch.
//! - Metrics (label `batcher`): [`names`].
//!
//! The frame type `M` implements [`WsMessage`] (axum's `Message` with the `axum`
//! feature, tungstenite's with `tungstenite`), which is how the close frame of [`Overflow::Close`] is built.
//!
//! # Example
//!
//! ```no_run
//! # #[cfg(feature = "axum")] {
//! use axum::extract::ws::{Message, WebSocket};
//! use futures_util::StreamExt;
//! use tower_kit_batch::ws::{MessageBatcher, Overflow};
//!
//! # async fn handle(socket: WebSocket, mut updates: tokio::sync::broadcast::Receiver<(u64, u64)>) {
//! // (item id, price): one frame per batch, a JSON array, the newest price per item.
//! let batcher = MessageBatcher::builder(|batch: Vec<(u64, u64)>| {
//!     Message::Text(format!("{batch:?}").into())
//! })
//! .latest_wins(|(id, _): &(u64, u64)| *id)
//! .overflow(Overflow::Close { code: 1008 })
//! .build()
//! .unwrap();
//!
//! let (sink, mut stream) = socket.split();
//! let (sender, driver) = batcher.attach(sink);
//! let driver = tokio::spawn(driver);
//! loop {
//!     tokio::select! {
//!         Ok(update) = updates.recv() => { let _ = sender.send(update); }
//!         message = stream.next() => if message.is_none() { break },
//!     }
//! }
//! drop(sender); // the driver flushes what is pending, then ends
//! let _ = driver.await;
//! # }
//! # }
//! ```

mod config;
mod driver;
mod queue;

pub use config::{
    DEFAULT_CLOSE_TIMEOUT, DEFAULT_MAX_BYTES, DEFAULT_MAX_DELAY, DEFAULT_MAX_MESSAGES,
    DEFAULT_MAX_QUEUED, MessageBatcher, MessageBatcherBuilder, Overflow,
};
pub use driver::{BatchSender, Ended, SendError, SinkDriver, SinkStats, names};
pub use tower_kit_core::ws::WsMessage;
