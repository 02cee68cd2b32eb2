//! Request batching for Tower: many concurrent single calls become one call to a batched backend (the N+1 query
//! fix), with a result per item, immediate dispatch when idle, and a bounded queue.
//!
//! [`BatchLayer`] wraps a backend `Service<Vec<Req>>` that answers one result per item (a `Vec<V>` in order, or a
//! `HashMap<K, V>` in [keyed mode](BatchLayerBuilder::keyed)) and gives callers a [`Batch`]: a plain, cheap-to-clone
//! `Service<Req, Response = V, Error = BatchError<E>>`. A background tokio task owns the backend and the
//! accumulators.
//!
//! - **Leading edge**: when the backend is idle an item goes at once; items wait only while a batch is at the
//!   backend, so batches grow with load and an idle batcher adds no latency.
//! - **Flush** on `max_items`, on `max_weight` (a closure weighs each item), on `max_latency` since the oldest
//!   waiting item, or by [`BatchHandle::flush`]; `max_concurrent_batches` bounds backend load.
//! - **Per-item results**: each caller gets its own item's result; give the backend an item type of `Result` for
//!   per-item errors. A missing result is [`BatchError::MissingResult`] for that caller only.
//! - **Keyed mode** (DataLoader style): duplicate keys in a batch are sent once and share the answer.
//! - **Partitions**: a closure maps items to partitions (tenant, shard), each with its own accumulator.
//! - **Overload and cancellation**: beyond `max_queued` waiting items a call fails at once with
//!   [`BatchError::Overloaded`] (`poll_ready` never waits), reported to an
//!   [`on_refusal`](BatchLayerBuilder::on_refusal) hook; a caller dropped before dispatch is removed and its item
//!   never sent.
//! - **Panic isolation**: a backend that panics fails only the callers of that batch
//!   ([`BatchError::BackendPanicked`]); the batcher keeps serving.
//! - [`HttpBatch`]: for HTTP handlers, overload becomes 503 + `Retry-After` (gRPC: `RESOURCE_EXHAUSTED`) and each
//!   request gets a `batch;dur=` [`ServerTiming`](tower_kit_core::ServerTiming) entry.
//! - Metrics (`metrics` facade, label `batcher`): `tower_kit.batch.items` and `tower_kit.batch.wait.duration`
//!   histograms, `tower_kit.batch.queue.depth` gauge, `tower_kit.batch.overloaded` counter.
//!
//! # Example
//!
//! ```
//! use std::{collections::HashMap, num::NonZeroUsize, time::Duration};
//! use tower::{Layer, ServiceExt};
//! use tower_kit_batch::{BatchError, BatchLayer};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! // Ordered mode: one answer per item, in order.
//! let backend = tower::service_fn(|ids: Vec<u64>| async move {
//!     Ok::<_, std::io::Error>(ids.into_iter().map(|id| format!("user {id}")).collect::<Vec<_>>())
//! });
//! let users = BatchLayer::new(NonZeroUsize::new(100).unwrap(), Duration::from_millis(5)).layer(backend);
//! assert_eq!(users.clone().oneshot(7).await.unwrap(), "user 7");
//!
//! // Keyed mode: the backend answers a map; a missing key is an error for its callers only.
//! let backend = tower::service_fn(|ids: Vec<u64>| async move {
//!     Ok::<_, std::io::Error>(ids.into_iter().filter(|id| *id != 0).map(|id| (id, id * 2)).collect::<HashMap<_, _>>())
//! });
//! let doubles = BatchLayer::builder().keyed(|id: &u64| *id).build().unwrap().layer(backend);
//! let (a, b) = tokio::join!(doubles.clone().oneshot(21), doubles.clone().oneshot(0));
//! assert_eq!(a.unwrap(), 42);
//! assert!(matches!(b, Err(BatchError::MissingResult)));
//! # }
//! ```
//!
//! # Compared with tower-batch-control and tower-batch
//!
//! Those crates hand items one by one to a `Service<BatchControl<Req>>` that must demultiplex results itself, wait
//! in `poll_ready` when full, and always wait for `max_latency` or a full batch. Here the backend takes a plain
//! `Vec`, the results are matched to callers for you, overload is an immediate error, an idle batcher sends at
//! once, dropped callers leave their batch, and a panic fails one batch instead of the service.
//!
//! # Cargo features
//!
//! - `ws`: [`ws`], message batching for WebSockets (any `Sink`): flush on size or interval, latest-wins per key,
//!   a bounded queue per connection with a drop or close policy.
//! - `axum`: with `ws`, for axum's WebSocket `Message`. `tungstenite`: with `ws`, for tungstenite's.
//!
//! Without features the crate needs tokio (`rt`, `sync`, `time`) and builds the HTTP adapter on the `http` crate
//! only.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod accumulator;
mod adapter;
mod error;
mod future;
mod layer;
mod refusal;
mod service;
mod slot;
mod worker;
#[cfg(feature = "ws")]
pub mod ws;

pub use adapter::{DEFAULT_RETRY_AFTER, HttpBatch, HttpBatchError};
pub use error::BatchError;
pub use future::ResponseFuture;
pub use layer::{
    BatchLayer, BatchLayerBuilder, BatchMode, DEFAULT_MAX_CONCURRENT_BATCHES, DEFAULT_MAX_ITEMS,
    DEFAULT_MAX_LATENCY, DEFAULT_MAX_QUEUED, Keyed, Ordered,
};
pub use refusal::{Refusal, RefusalReason};
pub use service::{Batch, BatchHandle};
