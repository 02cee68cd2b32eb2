//! Shared pieces of [tower-kit](https://docs.rs/tower-kit): the things two or more layers need.
//!
//! - [`ObservedBody`]: wraps a response body and calls a [`BodyObserver`] exactly once, when the body ends,
//!   errors, or is dropped, and tells which ([`BodyEnd`]). Layers move their RAII state (timers, permits,
//!   gauges) into the observer so it lives until the *body* is done, not until the response head is returned.
//! - [`ServerTiming`]: a request extension through which any layer adds a `Server-Timing` entry
//!   (`cache;desc=hit`, `queue;dur=1.2`); the timing layer writes the header.
//! - [`client_addr`]: the peer address from axum's `ConnectInfo<SocketAddr>` or a plain `SocketAddr` extension,
//!   with IPv4-mapped IPv6 addresses canonicalised to IPv4.
//! - [`grpc`]: gRPC detection and gRPC-shaped refusals (HTTP 200 with `grpc-status`).
//! - [`PolicyBody`]: the response body of a layer that either forwards the inner response or answers itself.
//! - [`ConfigError`]: the error every layer's `builder().build()` returns, naming the bad field.
//! - [`strip_hop_by_hop`]: removes the connection-specific header fields (for caches and proxies).
//! - [`RefusalResponse`] and [`retry_after_secs`]: the response of a policy refusal (status, `Retry-After` rounded
//!   up to whole seconds and at least 1, a plain-text body, or the gRPC shape), the same for every layer.
//! - [`content_length`]: the one strict reading of `Content-Length`.
//! - Clocks named by contract: [`MonotonicClock`] (nanoseconds, never backwards: [`SystemMonotonicClock`],
//!   [`ManualMonotonicClock`]) and [`WallClock`] (calendar time: [`SystemWallClock`], [`ManualWallClock`]).
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use std::sync::{Arc, Mutex};
//! use tower_kit_core::{BodyEnd, ObservedBody};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let seen = Arc::new(Mutex::new(None));
//! let seen2 = seen.clone();
//! let body = ObservedBody::new(Full::new(Bytes::from_static(b"hello")), move |end: BodyEnd| {
//!     *seen2.lock().unwrap() = Some(end);
//! });
//! let bytes = body.collect().await.unwrap().to_bytes();
//! assert_eq!(bytes, "hello");
//! assert_eq!(*seen.lock().unwrap(), Some(BodyEnd::Completed));
//! # }
//! ```
//!
//! # Cargo features
//!
//! - `axum` (off by default): [`client_addr`] also reads axum's `ConnectInfo<SocketAddr>`.
//! - `tonic` (off by default): [`client_addr`] also reads tonic's `TcpConnectInfo`.
//! - `redis` (off by default): the `redis` module, the Redis plumbing of the cache's and the rate limiter's Redis
//!   stores: connection set-up, one deadline per request across its Redis calls, one circuit breaker.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod accessors;
mod body;
mod client_addr;
mod clock;
mod content_length;
mod error;
mod exempt;
pub mod grpc;
mod hop_by_hop;
mod policy_body;
#[cfg(feature = "redis")]
pub mod redis;
mod refusal;
mod server_timing;
pub mod ws;

pub use body::{BodyEnd, BodyObserver, ObservedBody};
pub use client_addr::{canonical_ip, client_addr};
pub use clock::{
    ManualMonotonicClock, ManualWallClock, MonotonicClock, SystemMonotonicClock, SystemWallClock,
    WallClock,
};
pub use content_length::content_length;
pub use error::ConfigError;
pub use exempt::Exempt;
pub use hop_by_hop::strip_hop_by_hop;
pub use policy_body::PolicyBody;
pub use refusal::{RefusalResponse, retry_after_secs};
pub use server_timing::{ServerTiming, accepts_trailers};
