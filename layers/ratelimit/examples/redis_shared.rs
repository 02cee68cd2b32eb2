//! One quota shared by every server: the Redis store. Start two copies on two ports with the same Redis and
//! their combined answers stay within one quota:
//!
//! ```text
//! $ redis-server --port 6379 &
//! $ REDIS_URL=redis://127.0.0.1:6379/ PORT=3001 cargo run -p tower-kit-ratelimit --example redis_shared --features axum,redis &
//! $ REDIS_URL=redis://127.0.0.1:6379/ PORT=3002 cargo run -p tower-kit-ratelimit --example redis_shared --features axum,redis &
//! $ for p in 3001 3002 3001 3002 3001 3002 3001 3002; do curl -s -o /dev/null -w '%{http_code} ' localhost:$p/; done
//! 200 200 200 200 200 429 429 429
//! ```

use axum::{Router, routing::get};
use std::{net::SocketAddr, num::NonZeroU32, time::Duration};
use tower_kit_ratelimit::{Policy, Quota, RateLimitLayer, RedisStore, StoreFailure};

// ANCHOR: layer
fn rate_limit(redis_url: &str) -> Result<RateLimitLayer<RedisStore>, tower_kit_core::ConfigError> {
    // Nothing is connected here: the first request connects, and a Redis that is down at startup is no error.
    let store = RedisStore::builder(redis_url)
        .timeout(Duration::from_millis(50)) // the most a request waits for Redis
        .failure_threshold(3) // consecutive failures that open the circuit breaker
        .retry_interval(Duration::from_secs(1)) // then one probe per second
        .build()?;
    let five = NonZeroU32::new(5).unwrap_or(NonZeroU32::MIN);
    RateLimitLayer::builder()
        .store(store)
        .policy(Policy::new("per-ip", Quota::per_minute(five)))
        // While Redis is away, each server still enforces half of the quota on its own (two servers: one quota).
        .store_failure(StoreFailure::FailOpenCapped { percent: 50 })
        .headers_on_admitted(true)
        .build()
}
// ANCHOR_END: layer

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3001);
    let app = Router::new()
        .route("/", get(|| async { "hello\n" }))
        .layer(rate_limit(&redis_url)?.keep_inner_body());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
