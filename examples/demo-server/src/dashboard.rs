//! The live dashboard at `GET /`: one page (HTML, CSS and JavaScript embedded in the binary, nothing fetched from
//! elsewhere) that reads `GET /metrics` every second and draws what each layer is doing, plus a "try it" panel that
//! sends small, bounded bursts from the browser to make each layer act.
//!
//! ```text
//! $ cargo run --release -p demo-server
//! $ xdg-open http://127.0.0.1:3000/
//! ```
//!
//! The page, its assets, `GET /dashboard/config.json` (which layers are on, and their limits) and `GET /metrics`
//! are exempt from the rate limit and from the global concurrency limit, like `/health`: the bursts the page sends
//! never starve the page itself.

use crate::{Config, LayerName};
use axum::{
    Json, Router,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};

/// The page.
const INDEX_HTML: &str = include_str!("dashboard/index.html");
/// Its script: fetching, the Prometheus text parser, the charts and the bursts.
const APP_JS: &str = include_str!("dashboard/app.js");
/// Its style sheet.
const APP_CSS: &str = include_str!("dashboard/app.css");

/// Whether a path is the dashboard's page or one of its assets (exempt from the rate and concurrency limits).
pub fn is_dashboard(path: &str) -> bool {
    path == "/" || path.starts_with("/dashboard/")
}

/// `GET /`, `GET /dashboard/app.js`, `GET /dashboard/app.css` and `GET /dashboard/config.json`.
pub fn router(config: &Config) -> Router {
    let summary = summary(config);
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/dashboard/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/dashboard/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route(
            "/dashboard/config.json",
            get(move || {
                let summary = summary.clone();
                async move { Json(summary) }
            }),
        )
}

/// An embedded file, revalidated on every load (a new build serves new files), allowed to load only from this
/// origin.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// What the page needs to know about the configuration: which layers are on, and the limits it draws against.
pub fn summary(config: &Config) -> serde_json::Value {
    let on = |layer| config.enabled(layer);
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "mode": if config.ratelimit.redis_url.is_some() { "redis" } else { "embedded" },
        "layers": {
            "timing": on(LayerName::Timing),
            "cache": on(LayerName::Cache),
            "ratelimit": on(LayerName::Ratelimit),
            "concurrency": on(LayerName::Concurrency),
            "compression": on(LayerName::Compression),
            "batch": on(LayerName::Batch),
        },
        "ratelimit": {
            "limit": config.ratelimit.rate_limit.get(),
            "window_seconds": config.ratelimit.rate_limit_window.as_secs_f64(),
            "burst": config.ratelimit.rate_limit_burst.get(),
            "dry_run": config.ratelimit.rate_limit_dry_run,
        },
        "concurrency": {
            "max_in_flight": config.concurrency.concurrency_max_in_flight,
            "max_queue": config.concurrency.concurrency_max_queue,
            "slow_max_in_flight": config.concurrency.slow_max_in_flight,
            "slow_max_queue": config.concurrency.slow_max_queue,
        },
        "batch": {
            "max_items": config.batch.max_items,
            "max_latency_ms": config.batch.max_latency.as_secs_f64() * 1000.0,
            "max_queued": config.batch.max_queued,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(app: &Router, path: &str) -> (http::StatusCode, http::HeaderMap, String) {
        let r = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = r.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn serves_the_page_its_assets_and_the_configuration() {
        let mut config = Config::for_tests();
        config.disable = vec![LayerName::Batch];
        let app = router(&config);
        let (status, headers, body) = get(&app, "/").await;
        assert_eq!(status, 200);
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert!(body.contains("/dashboard/app.js") && body.contains("/dashboard/app.css"));
        // Nothing is loaded from another origin.
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{body}"
        );
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.starts_with("default-src 'self'"), "{csp}");
        let (status, headers, js) = get(&app, "/dashboard/app.js").await;
        assert_eq!(status, 200);
        assert_eq!(
            headers[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert!(js.contains("/metrics"));
        let (status, _, css) = get(&app, "/dashboard/app.css").await;
        assert_eq!(status, 200);
        assert!(!css.is_empty());
        let (status, _, json) = get(&app, "/dashboard/config.json").await;
        assert_eq!(status, 200);
        let json: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(json["layers"]["batch"], false);
        assert_eq!(json["layers"]["cache"], true);
        assert_eq!(json["ratelimit"]["burst"], 10);
        assert_eq!(json["concurrency"]["slow_max_in_flight"], 4);
    }

    #[test]
    fn dashboard_paths() {
        assert!(is_dashboard("/"));
        assert!(is_dashboard("/dashboard/config.json"));
        assert!(!is_dashboard("/api/items"));
        assert!(!is_dashboard("/dashboards"));
    }
}
