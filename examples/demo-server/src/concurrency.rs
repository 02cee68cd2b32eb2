//! Concurrency limits: one global limit on the whole app (`/health` and `/metrics` exempt) and a tighter one on
//! `GET /api/slow?ms=N`, which sleeps `N` ms (default 200, at most 5000) and is never cached.
//!
//! Under overload `/api/slow` answers `503` with `Retry-After` at once instead of queueing:
//!
//! ```text
//! $ for i in $(seq 6); do curl -s -o /dev/null -w '%{http_code} ' 'localhost:3000/api/slow?ms=2000' & done; wait
//! 200 200 200 200 503 503
//! $ curl -i 'localhost:3000/api/slow?ms=2000'     # while four are running
//! HTTP/1.1 503 Service Unavailable
//! retry-after: 1
//! ```

use axum::{
    Json, Router,
    extract::Query,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Deserialize;
use std::time::Duration;
use tower_kit::core::ConfigError;
use tower_kit_concurrency::{ConcurrencyLayer, QueueOrder};

/// Flags of the concurrency limits.
#[derive(Debug, Clone, clap::Args)]
// Every module's flags are a struct named `Args`: give the clap group a unique id.
#[group(id = "concurrency_args")]
pub struct Args {
    /// The most requests in flight across the whole app (`/health` and `/metrics` are exempt).
    #[arg(long, env = "CONCURRENCY_MAX_IN_FLIGHT", default_value_t = 512)]
    pub concurrency_max_in_flight: usize,

    /// How many requests may wait for a global slot (LIFO); 0 refuses at once.
    #[arg(long, env = "CONCURRENCY_MAX_QUEUE", default_value_t = 256)]
    pub concurrency_max_queue: usize,

    /// How long a request may wait for a global slot before it gets a 503 (e.g. `500ms`, `2s`).
    #[arg(long, env = "CONCURRENCY_QUEUE_WAIT", default_value = "500ms", value_parser = crate::config::parse_duration)]
    pub concurrency_queue_wait: Duration,

    /// The most `GET /api/slow` requests in flight at once.
    #[arg(long, env = "SLOW_MAX_IN_FLIGHT", default_value_t = 4)]
    pub slow_max_in_flight: usize,

    /// How many `GET /api/slow` requests may wait for a slot; 0 refuses at once.
    #[arg(long, env = "SLOW_MAX_QUEUE", default_value_t = 0)]
    pub slow_max_queue: usize,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            concurrency_max_in_flight: 512,
            concurrency_max_queue: 256,
            concurrency_queue_wait: Duration::from_millis(500),
            slow_max_in_flight: 4,
            slow_max_queue: 0,
        }
    }
}

/// Whether a request bypasses the global limit: `/health`, `/metrics` and the dashboard (`/`, `/dashboard/*`), so
/// that load, including the dashboard's own bursts, never starves the page that shows it.
pub fn is_exempt(path: &str) -> bool {
    path == "/health" || path == "/metrics" || crate::dashboard::is_dashboard(path)
}

/// The global limit, for the whole app.
pub fn layer(args: &Args) -> Result<ConcurrencyLayer, ConfigError> {
    ConcurrencyLayer::builder()
        .name("global")
        .max_in_flight(args.concurrency_max_in_flight)
        .max_queue(args.concurrency_max_queue)
        .queue_order(QueueOrder::Lifo)
        .max_queue_wait(args.concurrency_queue_wait)
        .exempt(|parts| is_exempt(parts.uri.path()))
        .build()
}

/// `GET /api/slow?ms=N` behind its own, tighter limit.
pub fn router(args: &Args) -> Result<Router, ConfigError> {
    let slow_limit = ConcurrencyLayer::builder()
        .name("slow")
        .max_in_flight(args.slow_max_in_flight)
        .max_queue(args.slow_max_queue)
        .build()?;
    Ok(Router::new().route("/api/slow", get(slow).layer(slow_limit)))
}

/// The longest `/api/slow` sleeps, in milliseconds.
pub const MAX_SLOW_MS: u64 = 5000;

#[derive(Debug, Deserialize)]
struct SlowParams {
    ms: Option<u64>,
}

async fn slow(Query(params): Query<SlowParams>) -> Response {
    let ms = params.ms.unwrap_or(200).min(MAX_SLOW_MS);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    let mut response = Json(serde_json::json!({ "slept_ms": ms })).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn req(uri: &str) -> Request<Body> {
        Request::get(uri).body(Body::empty()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn slow_sleeps_as_asked_capped_and_uncached() {
        let app = router(&Args::default()).unwrap();
        let start = tokio::time::Instant::now();
        let r = app
            .clone()
            .oneshot(req("/api/slow?ms=999999"))
            .await
            .unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(MAX_SLOW_MS));
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
        let body = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, r#"{"slept_ms":5000}"#);
        let start = tokio::time::Instant::now();
        app.clone().oneshot(req("/api/slow")).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(200));
        let bad = app.oneshot(req("/api/slow?ms=-1")).await.unwrap();
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    }

    #[tokio::test(start_paused = true)]
    async fn overload_of_slow_is_refused_at_once_and_health_is_exempt() {
        let args = Args {
            concurrency_max_in_flight: 2,
            slow_max_in_flight: 1,
            ..Args::default()
        };
        let app = router(&args)
            .unwrap()
            .route("/health", get(|| async { "ok" }))
            .layer(layer(&args).unwrap());
        let first = tokio::spawn(app.clone().oneshot(req("/api/slow?ms=1000")));
        tokio::task::yield_now().await;
        let start = tokio::time::Instant::now();
        let refused = app.clone().oneshot(req("/api/slow?ms=1000")).await.unwrap();
        assert_eq!(start.elapsed(), Duration::ZERO, "answered at once");
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.headers()[header::RETRY_AFTER], "1");
        drop(refused);
        // The global limit (2) is half used by the running request; /health is exempt anyway.
        let health = app.clone().oneshot(req("/health")).await.unwrap();
        assert_eq!(health.status(), StatusCode::OK);
        assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
    }

    #[test]
    fn dashboard_health_and_metrics_bypass_the_global_limit() {
        for path in [
            "/",
            "/dashboard/app.js",
            "/dashboard/config.json",
            "/metrics",
            "/health",
        ] {
            assert!(is_exempt(path), "{path}");
        }
        for path in ["/api/items", "/api/slow", "/dashboards", "/ws"] {
            assert!(!is_exempt(path), "{path}");
        }
    }

    #[test]
    fn bad_flags_are_config_errors() {
        let args = Args {
            slow_max_in_flight: 0,
            ..Args::default()
        };
        assert_eq!(router(&args).unwrap_err().field(), "max_in_flight");
        let args = Args {
            concurrency_max_queue: 10,
            concurrency_queue_wait: Duration::ZERO,
            ..Args::default()
        };
        assert_eq!(layer(&args).unwrap_err().field(), "max_queue_wait");
    }
}
