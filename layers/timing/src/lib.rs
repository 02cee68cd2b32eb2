//! Request timing for Tower services: OpenTelemetry-named metrics with bounded labels, `Server-Timing`, a
//! slow-request log and in-process statistics, at a fraction of the per-request cost of the usual crates.
//!
//! [`TimingLayer`] keeps two clocks per request: until the inner service returns the response head (time to first
//! byte), and until the response **body** ends, errors, or is dropped because the client went away. It records
//! through the [`metrics`] facade, so any exporter works:
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `http.server.request.duration` (s) | histogram, to end of body | method, route, status, `error.type`, gRPC status |
//! | `http.server.active_requests` | gauge, until end of body | method |
//! | `http.server.request.head_duration` (s) | histogram, to the head; opt-in: [`head_duration`](TimingLayerBuilder::head_duration) | same as duration |
//! | `http.server.request.body.size` (bytes) | histogram, from `Content-Length`; opt-in: [`body_sizes`](TimingLayerBuilder::body_sizes) | same as duration |
//! | `http.server.response.body.size` (bytes) | histogram, bytes produced; opt-in: [`body_sizes`](TimingLayerBuilder::body_sizes) | same as duration |
//! | `tower_kit.timing.label_overflow` | counter | `label` |
//!
//! Label names and values are in [`names`]. The route label is axum's `MatchedPath`, else your
//! [`route_fn`](TimingLayerBuilder::route_fn), else — for gRPC calls the service answered — the gRPC method path,
//! else `unmatched`; never the raw path. Distinct route values are capped (default 1000, then `__other__`) in state
//! shared by every service the layer makes. `error.type` is absent on success, `aborted` when the client went away,
//! `body_error`, `service_error`, `panic`, or the status code of a 5xx. gRPC calls also get `rpc.grpc.status_code`,
//! read from the response headers or the trailers.
//!
//! Metric handles are resolved once per label set and reused, so a request costs a few atomic operations and no
//! allocation; if the `metrics` recorder changes (a test installs its own), handles are registered again with it.
//! Histogram buckets are the exporter's business: see the `SECONDS_BUCKETS` and `BYTES_BUCKETS` of the demo server.
//!
//! # Example
//!
//! ```
//! use axum::{Router, routing::get};
//! use http::Request;
//! use tower::ServiceExt;
//! use tower_kit_timing::TimingLayer;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let timing = TimingLayer::new();
//! let stats = timing.handle();
//! let app = Router::new()
//!     .route("/items/{id}", get(|| async { "item" }))
//!     .layer(timing); // `Router::layer`, so the route template is known
//!
//! let response = app
//!     .oneshot(Request::get("/items/7").body(axum::body::Body::empty()).unwrap())
//!     .await
//!     .unwrap();
//! assert_eq!(response.status(), 200);
//! drop(response); // the request ends with its body
//!
//! let snapshot = stats.snapshot();
//! let route = snapshot.get("/items/{id}", "GET").unwrap();
//! assert_eq!((route.count, route.active), (1, 0));
//! # }
//! ```
//!
//! # Cargo features
//!
//! - `axum` (default): read the route from axum's `MatchedPath`.
//! - `ws`: [`ws`], WebSocket connection and message metrics, keep-alive pings and an idle timeout (with `axum`,
//!   for axum's `WebSocket`).
//! - `tungstenite`: [`ws`] for tokio-tungstenite's `WebSocketStream` too.
//!
//! # Compared with axum-prometheus and tower-http's `TraceLayer`
//!
//! axum-prometheus stops its clock when the head is returned, labels unmatched requests with the raw path (a client
//! can create any number of series), needs a global recorder, and only works in axum. `TraceLayer` is a logging
//! tool: it records no metrics unless you write them in its callbacks. `TimingLayer` times to the end of the body,
//! caps label values, reads gRPC status from trailers, works in axum, tonic and hyper stacks, and adds
//! `Server-Timing`, a slow-request log and a stats handle.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
mod future;
mod guard;
mod layer;
mod method;
pub mod names;
mod registry;
mod service;
mod stats;
#[cfg(feature = "ws")]
pub mod ws;

pub use body::TimingBody;
pub use future::ResponseFuture;
pub use layer::{
    DEFAULT_MAX_LABEL_VALUES, DEFAULT_SLOW_THRESHOLD, RequestInfo, TimingLayer, TimingLayerBuilder,
};
pub use service::Timing;
pub use stats::{RouteStats, StatsSnapshot, TimingHandle};
pub use tower_kit_core::{ConfigError, ServerTiming};
