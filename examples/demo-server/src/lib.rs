//! The tower-kit demo server as a library, so tests can start it in-process.
//!
//! Each layer's wiring and routes live in their own module; [`app`] assembles them. The order of the layers is
//! explained in the book's "Composing layers" chapter.

pub mod batch;
pub mod cache;
pub mod compression;
pub mod concurrency;
pub mod config;
pub mod dashboard;
pub mod items;
pub mod observability;
pub mod ratelimit;
pub mod server;
pub mod timing;
pub mod ws;

use axum::{
    Json, Router,
    http::{StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::get,
};
pub use config::{Config, LayerName};
use metrics_exporter_prometheus::PrometheusHandle;
use std::{future::Future, sync::Arc};
use tokio::net::TcpListener;

/// Builds the whole application: routes and layers.
///
/// With `Router::layer` the last layer added is the outermost; the book's "Composing layers" chapter explains the
/// order.
pub fn app(
    config: &Config,
    metrics: PrometheusHandle,
) -> Result<Router, tower_kit::core::ConfigError> {
    let pool = batch::open(&config.batch);
    let mut items = items::Items::seeded();
    if let Some(pool) = &pool {
        items = items.persisted_in(Arc::new(batch::Writer(Arc::clone(pool))));
    }
    let (timing_layer, stats) = timing::layer(&config.timing)?;
    let mut router = Router::new()
        .route("/health", get(|| async { "ok" }))
        .merge(observability::router(metrics))
        .merge(dashboard::router(config))
        .merge(ws::router(&items)?)
        .merge(cache::router(
            items,
            &config.cache,
            config.ratelimit.redis_target(),
            // Compressed inside the cache too, so cache hits are served already compressed.
            config
                .enabled(LayerName::Compression)
                .then(|| compression::response_layer(&config.compression))
                .transpose()?,
        )?)
        .merge(batch::router(&config.batch, pool))
        .merge(concurrency::router(&config.concurrency)?)
        .merge(timing::router(stats, &config.timing))
        .merge(compression::router(&config.compression)?)
        .fallback(not_found);
    // Innermost of the global layers: compression runs inside the concurrency limit, which bounds its CPU.
    if config.enabled(LayerName::Compression) {
        router = router.layer(compression::layers(&config.compression)?);
    }
    // Global concurrency limit (/health, /metrics exempt); inside the rate limit, so refused calls take no slot.
    if config.enabled(LayerName::Concurrency) {
        router = router.layer(concurrency::layer(&config.concurrency)?);
    }
    // Per-client-IP quota on /api/*; inside timing so refusals are timed and get a Server-Timing entry.
    if config.enabled(LayerName::Ratelimit) {
        router = router.layer(ratelimit::layer(&config.ratelimit)?);
    }
    // Outermost: times everything below, including refusals, and writes Server-Timing.
    if config.enabled(LayerName::Timing) {
        router = router.layer(timing_layer);
    }
    Ok(router)
}

/// A JSON error body: `{"error": "..."}`.
pub fn json_error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

async fn not_found(uri: Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({ "error": "not found", "path": uri.path() })),
    )
        .into_response()
}

/// Serves the app on `listener` until `shutdown` completes, then lets in-flight requests finish for at most
/// `config.drain_timeout`.
///
/// Connections are served by [`tower_kit::serve`] with the `--header-read-timeout`, `--idle-timeout`,
/// `--max-connections` and HTTP/2 flags; bind the listener with [`server::bind`] for `--listen-backlog`.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    metrics: PrometheusHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let serve_config = config
        .server
        .serve_config(config.drain_timeout)
        .map_err(std::io::Error::other)?;
    let app = app(&config, metrics).map_err(std::io::Error::other)?;
    let addr = listener.local_addr()?;
    let mode = match config.ratelimit.redis_target() {
        Some(ratelimit::RedisTarget::Cluster(_)) => "shared (Redis Cluster)",
        Some(ratelimit::RedisTarget::Single(_)) => "shared (Redis)",
        None => "embedded (in-memory cache and limiter, SQLite)",
    };
    let off: Vec<String> = config
        .disable
        .iter()
        .map(|l| format!("{l:?}").to_lowercase())
        .collect();
    tracing::info!(
        %addr,
        mode,
        layers_off = %if off.is_empty() { "none".to_owned() } else { off.join(",") },
        max_connections = serve_config.max_connections(),
        header_read_timeout = ?serve_config.header_read_timeout(),
        idle_timeout = ?serve_config.idle_timeout(),
        "demo-server listening on http://{addr}"
    );
    tower_kit::serve::serve(listener, app, &serve_config, async move {
        shutdown.await;
        tracing::info!("shutting down: draining in-flight requests");
    })
    .await
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
