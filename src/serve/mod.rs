//! A hardened HTTP/1 + HTTP/2 server loop for any tower `Service` or axum `Router`.
//!
//! `axum::serve` and a bare hyper accept loop have no deadline for a client's first byte or request head, no idle
//! timeout, no connection cap and a fixed listen backlog: a few hundred silent or slow sockets hold a server's file
//! descriptors for as long as their clients like. [`serve`] adds:
//!
//! | setting | default | why |
//! |---|---|---|
//! | [`header_read_timeout`](ServeConfigBuilder::header_read_timeout) | 10 s | a socket must send its first request head in time, counted from the accept (covers the HTTP/1-or-2 sniff) |
//! | [`idle_timeout`](ServeConfigBuilder::idle_timeout) | 60 s | keep-alive connections with no request in flight are closed |
//! | [`max_connections`](ServeConfigBuilder::max_connections) | open-file limit less ⅛ | at the cap, the longest-idle connection is closed for the new one; accepting pauses only when all are busy |
//! | [`listen_backlog`](ServeConfigBuilder::listen_backlog) | 1024 | bursts of new connections wait in the kernel, not in `connect()` retries |
//! | [`http2_keep_alive_interval`](ServeConfigBuilder::http2_keep_alive_interval) / [`timeout`](ServeConfigBuilder::http2_keep_alive_timeout) | 20 s / 20 s | HTTP/2 peers that vanished are found and closed |
//! | [`http2_max_concurrent_streams`](ServeConfigBuilder::http2_max_concurrent_streams) | 100 | one HTTP/2 connection cannot open unbounded requests |
//! | [`drain_timeout`](ServeConfigBuilder::drain_timeout) | 10 s | graceful shutdown lets requests in flight finish, for so long |
//!
//! # Example
//!
//! ```
//! use axum::{Router, routing::get};
//! use std::time::Duration;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use tower_kit::serve::{ServeConfig, bind, serve};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ServeConfig::builder()
//!     .header_read_timeout(Duration::from_secs(5))
//!     .idle_timeout(Duration::from_secs(30))
//!     .max_connections(10_000)
//!     .build()?;
//! let listener = bind("127.0.0.1:0".parse()?, config.listen_backlog())?;
//! let addr = listener.local_addr()?;
//! let app = Router::new().route("/health", get(|| async { "ok" }));
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(async move {
//!     serve(listener, app, &config, async { let _ = stopped.await; }).await
//! });
//!
//! let mut client = tokio::net::TcpStream::connect(addr).await?;
//! client.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await?;
//! let mut answer = String::new();
//! client.read_to_string(&mut answer).await?;
//! assert!(answer.starts_with("HTTP/1.1 200 OK"));
//! assert!(answer.ends_with("ok"));
//!
//! let _ = stop.send(());
//! server.await??;
//! # Ok(()) }
//! ```

mod config;
mod connection;
mod server;

pub use config::{
    DEFAULT_DRAIN_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_HTTP2_KEEP_ALIVE_INTERVAL,
    DEFAULT_HTTP2_KEEP_ALIVE_TIMEOUT, DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_LISTEN_BACKLOG, ServeConfig, ServeConfigBuilder, default_max_connections_for,
    open_files_limit,
};
pub use server::{
    ACCEPT_PAUSES, ACCEPTED_CONNECTIONS, CLOSED_CONNECTIONS, OPEN_CONNECTIONS, bind, serve,
};
