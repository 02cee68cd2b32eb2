//! An axum API with two policies (a burst and a daily quota), API-key tiers, clients behind a trusted proxy, and
//! an exempt health check. Run with `cargo run -p tower-kit-ratelimit --example axum_api --features axum`, then
//! `curl -i localhost:3001/api/hello` a few times.

use axum::{Router, routing::get};
use http::HeaderName;
use std::{net::SocketAddr, num::NonZeroU32};
use tower_kit_ratelimit::{CidrList, KeyExtractor, Policy, Quota, RateLimitLayer, TrustedProxies};

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

// ANCHOR: layer
fn rate_limit() -> Result<RateLimitLayer, tower_kit_core::ConfigError> {
    // Clients are behind our load balancers (10.0.0.0/8), which append to X-Forwarded-For.
    // Name the header they write: only that one is believed.
    let proxies = TrustedProxies::new(
        CidrList::parse(["10.0.0.0/8"])?,
        tower_kit_ratelimit::ForwardedHeader::XForwardedFor,
    );
    // Customers are keyed by their API key (stored hashed), everyone else by client IP (IPv6 by /64).
    let key = KeyExtractor::header(HeaderName::from_static("x-api-key"))
        .or(KeyExtractor::client_ip(proxies));
    let is_customer = |parts: &http::request::Parts| parts.headers.contains_key("x-api-key");
    RateLimitLayer::builder()
        .key(key)
        // Short-term smoothing: anonymous 5/s (burst 10), customers 50/s (burst 100).
        .policy(Policy::per_request("burst", move |parts| {
            Some(if is_customer(parts) {
                Quota::per_second(nz(50)).with_burst(nz(100))
            } else {
                Quota::per_second(nz(5)).with_burst(nz(10))
            })
        }))
        // A daily quota for anonymous clients only.
        .policy(Policy::per_request("daily", move |parts| {
            (!is_customer(parts)).then(|| Quota::per_day(nz(10_000)))
        }))
        // Expensive endpoints cost more.
        .cost(|parts| {
            if parts.uri.path().starts_with("/api/search") {
                5
            } else {
                1
            }
        })
        .exempt(|parts| parts.uri.path() == "/health")
        .headers_on_admitted(true)
        .build()
}
// ANCHOR_END: layer

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // ANCHOR: serve
    let app = Router::new()
        .route("/api/hello", get(|| async { "hello" }))
        .route("/api/search", get(|| async { "results" }))
        .route("/health", get(|| async { "ok" }))
        // Responses keep axum's body type (no wrapper for axum to box again).
        .layer(rate_limit()?.keep_inner_body());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3001").await?;
    // Without connect info there is no peer address: every request would share the `unknown` bucket.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    // ANCHOR_END: serve
    Ok(())
}
