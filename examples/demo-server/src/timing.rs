//! Timing: the outermost layer, and the `/api/performance` routes over its stats handle.

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode, header::AUTHORIZATION},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use std::{sync::Arc, time::Duration};
use tower_kit::timing::{TimingHandle, TimingLayer};

/// Flags of the timing layer.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "timing_args")]
pub struct Args {
    /// Bearer token that `POST /api/performance/reset` requires. Without one, the reset route answers 403.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Log a warning for requests slower than this (e.g. `1s`, `250ms`); `0` logs every request.
    #[arg(long, env = "SLOW_THRESHOLD", default_value = "1s", value_parser = crate::config::parse_duration)]
    pub slow_threshold: Duration,

    /// Add a `Server-Timing` header to responses of requests that carry `X-Debug-Timing: 1`.
    #[arg(long, env = "SERVER_TIMING", default_value_t = true, action = clap::ArgAction::Set)]
    pub server_timing: bool,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            admin_token: None,
            slow_threshold: Duration::from_secs(1),
            server_timing: true,
        }
    }
}

/// The timing layer for the whole app, and its stats handle.
pub fn layer(args: &Args) -> Result<(TimingLayer, TimingHandle), tower_kit::core::ConfigError> {
    // The demo's dashboard and alerts also use the time-to-head and body-size histograms, which are opt-in.
    let mut builder = TimingLayer::builder()
        .slow_threshold(Some(args.slow_threshold))
        .head_duration(true)
        .body_sizes(true);
    if args.server_timing {
        // Timing can leak information, so only requests that ask for it get it.
        builder = builder.server_timing_if(|req| {
            req.headers
                .get("x-debug-timing")
                .is_some_and(|v| v.as_bytes() == b"1")
        });
    }
    let layer = builder.build()?;
    let stats = layer.handle();
    Ok((layer, stats))
}

#[derive(Clone)]
struct Admin {
    stats: TimingHandle,
    token: Option<Arc<str>>,
}

/// `GET /api/performance/metrics` and `POST /api/performance/reset`.
pub fn router(stats: TimingHandle, args: &Args) -> Router {
    Router::new()
        .route("/api/performance/metrics", get(snapshot))
        .route("/api/performance/reset", post(reset))
        .with_state(Admin {
            stats,
            token: args.admin_token.as_deref().map(Arc::from),
        })
}

async fn snapshot(State(admin): State<Admin>) -> impl IntoResponse {
    Json(admin.stats.snapshot())
}

async fn reset(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    let Some(expected) = admin.token.as_deref() else {
        return crate::json_error(StatusCode::FORBIDDEN, "no admin token is configured");
    };
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // Auth schemes are case-insensitive (RFC 9110 §11.1): `bearer` and `BEARER` are `Bearer`.
        .and_then(|v| v.trim().split_once([' ', '\t']))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim_start());
    match presented {
        Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => {
            admin.stats.reset();
            (StatusCode::OK, Json(serde_json::json!({ "reset": true }))).into_response()
        }
        _ => {
            let mut res =
                crate::json_error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
            res.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
            res
        }
    }
}

/// Compares without stopping at the first difference, so the time taken does not tell how much of a guess was
/// right. (The length is not secret.)
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(constant_time_eq(b"", b""));
    }
}
