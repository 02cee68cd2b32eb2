//! A concurrency limit with load shedding for Tower, that works in axum, tonic and hyper.
//!
//! [`ConcurrencyLayer`] lets at most N requests in at once. The rest wait in a bounded queue (FIFO or LIFO, with a
//! deadline) or are refused at once with `503 Service Unavailable` and `Retry-After` (gRPC calls get HTTP 200 with
//! `grpc-status: 8`, RESOURCE_EXHAUSTED). Refusals are responses, not errors: the inner service's error type passes
//! through, so an `Infallible` service stays `Infallible` and axum needs no `HandleErrorLayer`.
//!
//! What it fixes in tower's `ConcurrencyLimitLayer` + `LoadShedLayer`:
//!
//! - **One layer value is one limit.** The slots are created with the layer and shared by every service it makes,
//!   and taken in `call`, never reserved in `poll_ready`. axum clones services per request and makes one per route,
//!   which makes tower's limit enforce nothing there (tokio-rs/axum#2582).
//! - **Slots are held until the response body ends** (or errors, or is dropped by a disconnecting client), not
//!   until the head is returned; [`ReleaseAt::Head`] is an option, and `text/event-stream` responses release at
//!   the head by default so a few SSE clients cannot hold every slot.
//! - **A bounded queue with a deadline**, FIFO or LIFO (LIFO serves the freshest callers under overload and evicts
//!   the oldest when full). A caller that goes away while queued leaves the queue at once.
//! - **Refusals you can see and shape**: [`on_refusal`](ConcurrencyLayerBuilder::on_refusal) hears of each
//!   [`Refusal`] and its [`RefusalReason`]; [`map_refusal`](ConcurrencyLayerBuilder::map_refusal) may edit the
//!   response; [`refusal_status`](ConcurrencyLayerBuilder::refusal_status) and
//!   [`refusal_body`](ConcurrencyLayerBuilder::refusal_body) set its status and body.
//! - **Per-key caps** ([`per_key`](ConcurrencyLayerBuilder::per_key)), **exemptions**
//!   ([`exempt`](ConcurrencyLayerBuilder::exempt)) and **adaptive limits** ([`Aimd`], [`Gradient2`]) fed by the
//!   latency to the end of the body, readable through a [`ConcurrencyHandle`].
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use std::{convert::Infallible, time::Duration};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_kit_concurrency::ConcurrencyLayer;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let limit = ConcurrencyLayer::builder()
//!     .max_in_flight(64)
//!     .max_queue(128)
//!     .max_queue_wait(Duration::from_millis(500))
//!     .exempt(|req| req.uri.path() == "/health")
//!     .build()
//!     .unwrap();
//! let handle = limit.handle();
//! let service = ServiceBuilder::new().layer(limit).service_fn(|_req: Request<Full<Bytes>>| async {
//!     Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello"))))
//! });
//!
//! let response = service.oneshot(Request::new(Full::default())).await.unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(handle.in_flight(), 1, "the slot is held until the body is done");
//! drop(response);
//! assert_eq!(handle.in_flight(), 0);
//! # }
//! ```
//!
//! # Metrics
//!
//! Through the [`metrics`](https://docs.rs/metrics) facade: `tower_kit.concurrency.in_flight`, `.queued` and
//! `.limit` (gauges), `.rejected` (counter, label `reason`), `.queue_wait` (histogram, seconds), all with a
//! `limiter` label when the layer has a [`name`](ConcurrencyLayerBuilder::name). A request that waited adds
//! `queue;dur=<ms>` to the [`ServerTiming`](tower_kit_core::ServerTiming) extension when one is present.
//!
//! # Cargo features
//!
//! None. The queue deadline uses Tokio's timer.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod adaptive;
mod body;
mod future;
mod keyed;
pub mod keys;
mod layer;
pub mod metrics;
mod queue;
mod refusal;
mod service;

pub use adaptive::{AdaptiveLimit, Aimd, Gradient2};
pub use body::ConcurrencyBody;
pub use future::ResponseFuture;
pub use layer::{
    ConcurrencyHandle, ConcurrencyLayer, ConcurrencyLayerBuilder, MAX_LIMIT, QueueOrder, ReleaseAt,
};
pub use refusal::{Refusal, RefusalReason};
pub use service::Concurrency;
