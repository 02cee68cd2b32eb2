//! A global limit on an axum app, a tighter one on a slow route, `/health` exempt.
//!
//! Run with `cargo run -p tower-kit-concurrency --example axum`, then
//! `curl -i 'localhost:3001/slow'` from a few shells at once.

use axum::{Router, routing::get};
use std::time::Duration;
use tower_kit_concurrency::{ConcurrencyLayer, QueueOrder};

// ANCHOR: app
fn app() -> Result<Router, tower_kit_core::ConfigError> {
    // One layer value = one limit, shared by every route it wraps.
    let global = ConcurrencyLayer::builder()
        .name("global")
        .max_in_flight(256)
        .max_queue(128)
        .queue_order(QueueOrder::Lifo)
        .max_queue_wait(Duration::from_millis(200))
        .exempt(|req| req.uri.path() == "/health")
        .build()?;
    // A separate value for one route: its own, tighter limit; refuse at once.
    let slow = ConcurrencyLayer::builder()
        .name("slow")
        .max_in_flight(4)
        .build()?;
    Ok(Router::new()
        .route("/slow", get(slow_handler).layer(slow))
        .route("/fast", get(|| async { "fast" }))
        .route("/health", get(|| async { "ok" }))
        .layer(global))
}
// ANCHOR_END: app

async fn slow_handler() -> &'static str {
    tokio::time::sleep(Duration::from_secs(2)).await;
    "slow"
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3001").await?;
    axum::serve(listener, app()?).await?;
    Ok(())
}
