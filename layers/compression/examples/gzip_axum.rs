//! Gzip in an axum app: responses compressed, gzip uploads decoded, and an SSE stream flushed per event.
//!
//! `cargo run -p tower-kit-compression --example gzip_axum`, then `curl --compressed -v localhost:3001/`.

use axum::{
    Router,
    routing::{get, post},
};
use tower_kit_compression::{CompressionLayer, RequestDecompressionLayer};

// ANCHOR: app
fn app() -> Result<Router, tower_kit_core::ConfigError> {
    let compression = CompressionLayer::builder()
        .min_size(1000) // the default: smaller bodies are not worth a gzip header
        .deny_content_type("text/csv") // add to the denylist
        .predicate(|request, _response| !request.uri.path().starts_with("/raw"))
        .build()?;
    let decoding = RequestDecompressionLayer::builder()
        .max_decoded(10 * 1024 * 1024)
        .build()?;
    Ok(Router::new()
        .route("/", get(|| async { "hello ".repeat(500) }))
        .route(
            "/upload",
            post(|body: String| async move { format!("{} bytes\n", body.len()) }),
        )
        // The last layer added is the outermost: decode the request, then compress the response.
        .layer(compression)
        .layer(decoding))
}
// ANCHOR_END: app

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3001").await?;
    axum::serve(listener, app()?).await?;
    Ok(())
}
