//! Logs (`tracing-subscriber`, filtered by `RUST_LOG`, as text or JSON lines) and the Prometheus recorder behind
//! `GET /metrics`.

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use std::time::Duration;

/// OpenTelemetry's recommended buckets for HTTP durations, in seconds.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Powers of four from 64 B to 64 MiB, for body sizes in bytes.
pub const BYTES_BUCKETS: &[f64] = &[
    64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0,
    67108864.0,
];

/// Powers of two from 1 to 1024, for counts of items (the batch size).
pub const ITEMS_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// How log lines are written to stderr (`--log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, coloured only when stderr is a terminal and `NO_COLOR` is unset.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, message and fields), for log shippers.
    Json,
}

/// Whether text logs get ANSI colours: only on a terminal, and never with `NO_COLOR` set (<https://no-color.org>),
/// so files and log shippers get plain text.
pub fn use_colours(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Logs to stderr in `format`; `RUST_LOG` filters (default `info`).
pub fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(use_colours(
                std::io::stderr().is_terminal(),
                std::env::var_os("NO_COLOR").as_deref(),
            ))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

/// A Prometheus recorder with recommended naming (unit suffixes, `_total` on counters) and histogram buckets for
/// seconds, bytes and batch sizes, not yet installed.
pub fn prometheus_builder() -> Result<PrometheusBuilder, BuildError> {
    // ANCHOR: buckets
    PrometheusBuilder::new()
        .with_recommended_naming(true)
        .set_buckets_for_metric(Matcher::Suffix("duration".into()), SECONDS_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("queue_wait".into()), SECONDS_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("size".into()), BYTES_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full("tower_kit.batch.items".into()), ITEMS_BUCKETS)
    // ANCHOR_END: buckets
}

/// Installs the Prometheus recorder as the global `metrics` recorder and keeps its upkeep running.
pub fn install_prometheus() -> Result<PrometheusHandle, Box<dyn std::error::Error>> {
    let handle = prometheus_builder()?.install_recorder()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// `GET /metrics`: the Prometheus text format.
pub fn router(handle: PrometheusHandle) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .with_state(handle)
}

async fn render(State(handle): State<PrometheusHandle>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(use_colours(true, None));
        assert!(!use_colours(false, None), "files and pipes get plain text");
        assert!(!use_colours(true, Some(OsStr::new("1"))));
        assert!(
            use_colours(true, Some(OsStr::new(""))),
            "an empty NO_COLOR is unset"
        );
    }

    #[test]
    fn log_format_flag() {
        let c = crate::Config::load_from(["demo-server"]).unwrap();
        assert_eq!(c.log_format, LogFormat::Text);
        let c = crate::Config::load_from(["demo-server", "--log-format", "json"]).unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
        assert!(crate::Config::load_from(["demo-server", "--log-format", "xml"]).is_err());
    }
}
