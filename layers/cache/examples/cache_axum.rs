//! CacheLayer on an axum router, with invalidation from a handler: `cargo run -p tower-kit-cache --example
//! cache_axum`, then `curl -si localhost:3002/articles` twice, `curl -X POST localhost:3002/articles`, and again.

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use std::time::Duration;
use tower_kit_cache::{CacheHandle, CacheLayer, TtlTier};

// ANCHOR: handlers
async fn articles() -> impl IntoResponse {
    tokio::time::sleep(Duration::from_millis(200)).await; // pretend to query a database
    (
        [
            (header::CACHE_CONTROL, "public, max-age=60"),
            (header::HeaderName::from_static("cache-tag"), "articles"),
        ],
        "[\"first\", \"second\"]",
    )
}

async fn publish(State(cache): State<CacheHandle>) -> StatusCode {
    // ... write the article, then drop every cached response tagged `articles`.
    match cache.invalidate_tag("articles").await {
        Ok(_) => StatusCode::CREATED,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
// ANCHOR_END: handlers

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // ANCHOR: layer
    let cache = CacheLayer::builder()
        .max_bytes(256 * 1024 * 1024) // the moka store, weighed in bytes
        .max_entry_size(4 * 1024 * 1024) // larger bodies stream through uncached
        .namespace("blog")
        .version(3) // bump on deploy to start from an empty cache
        .default_ttl("/static/", TtlTier::Hour) // only for responses without freshness headers
        .build()?;
    let handle = cache.handle();

    let app = Router::new()
        .route("/articles", get(articles).post(publish))
        .with_state(handle.clone())
        // `Router::layer`: one cache for every route (axum calls `Layer::layer` per route; they share the store).
        .layer(cache);
    // ANCHOR_END: layer

    // ANCHOR: warm
    let report = handle
        .warm_up(
            app.clone(),
            [axum::http::Request::get("/articles").body(axum::body::Body::empty())?],
        )
        .await;
    println!("warmed: {} stored", report.stored);
    // ANCHOR_END: warm

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3002").await?;
    axum::serve(listener, app).await?;
    Ok(())
}
