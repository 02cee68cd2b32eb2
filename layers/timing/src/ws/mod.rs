//! WebSocket metrics and keep-alive (feature `ws`): wrap an upgraded socket with [`WebSocketMetrics::wrap`] and
//! its traffic shows up next to the HTTP metrics.
//!
//! A `101 Switching Protocols` response ends the [`TimingLayer`](crate::TimingLayer)'s view of a request; what
//! follows on the socket is counted by [`MeteredSocket`], a wrapper for any socket that is a `Stream` of
//! `Result<M, E>` and a `Sink<M>` (axum's `WebSocket`, tokio-tungstenite's `WebSocketStream`), where `M`
//! implements [`WsMessage`] (axum's `Message` with the `axum` feature,
//! tungstenite's with `tungstenite`).
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `websocket.server.connections.opened` | counter | route |
//! | `websocket.server.active_connections` | gauge | route |
//! | `websocket.server.connection.duration` (s) | histogram, at close | route, `websocket.close.code` |
//! | `websocket.server.messages` | counter, data messages | route, `network.io.direction` |
//! | `websocket.server.message.bytes` | counter, payload bytes | route, `network.io.direction` |
//! | `websocket.server.send.errors` | counter | route |
//!
//! Metric handles are resolved once per connection; a message costs a few atomic adds and no allocation. The
//! in-process [`WebSocketHandle::snapshot`] has the shape of the HTTP [`StatsSnapshot`](crate::StatsSnapshot):
//! active and total connections, messages, bytes and mean message size each way, send errors, close codes.
//!
//! # Example
//!
//! ```no_run
//! # #[cfg(feature = "axum")] {
//! use axum::{Router, extract::{MatchedPath, State, ws::WebSocketUpgrade}, response::Response, routing::get};
//! use futures_util::{SinkExt, StreamExt};
//! use std::time::Duration;
//! use tower_kit_timing::ws::WebSocketMetrics;
//!
//! async fn echo(ws: WebSocketUpgrade, path: MatchedPath, State(meter): State<WebSocketMetrics>) -> Response {
//!     ws.on_upgrade(move |socket| async move {
//!         let mut socket = meter.wrap(socket, path.as_str());
//!         while let Some(Ok(message)) = socket.next().await {
//!             if socket.send(message).await.is_err() {
//!                 break;
//!             }
//!         }
//!     })
//! }
//!
//! let meter = WebSocketMetrics::builder()
//!     .ping_interval(Some(Duration::from_secs(20)))
//!     .idle_timeout(Some(Duration::from_secs(60)))
//!     .build()
//!     .unwrap();
//! let stats = meter.handle(); // stats.snapshot() for /api/performance/websocket
//! let app: Router = Router::new().route("/ws", get(echo)).with_state(meter);
//! # }
//! ```

mod metrics;
pub mod names;
mod socket;

pub use metrics::{
    DEFAULT_MAX_ROUTES, WebSocketHandle, WebSocketMetrics, WebSocketMetricsBuilder,
    WebSocketRouteStats, WebSocketSnapshot,
};
pub use socket::MeteredSocket;
pub use tower_kit_core::ws::{MessageKind, WsMessage};
