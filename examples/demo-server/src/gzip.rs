//! Gzip: responses compressed for clients that accept it, gzip uploads decoded, and `GET /api/events`, a
//! server-sent event stream whose events are compressed and still arrive on time (flushed one by one).

use axum::{
    Router,
    response::sse::{Event, Sse},
    routing::get,
};
use futures_util::Stream;
use std::{convert::Infallible, time::Duration};
use tower_kit_gzip::{GzipLayer, GzipRequestLayer};
use tower_layer::Stack;

/// Flags of the gzip layers.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "gzip_args")]
pub struct Args {
    /// Responses smaller than this many bytes are sent uncompressed.
    #[arg(long, env = "GZIP_MIN_SIZE", default_value_t = tower_kit_gzip::DEFAULT_MIN_SIZE)]
    pub gzip_min_size: u64,

    /// libdeflate level for bodies of known size, 1 (fastest) to 12 (smallest).
    #[arg(long, env = "GZIP_LEVEL", default_value_t = tower_kit_gzip::DEFAULT_LEVEL)]
    pub gzip_level: u32,

    /// Largest decoded gzip request body accepted, in bytes; larger uploads get 413.
    #[arg(long, env = "GZIP_MAX_DECODED", default_value_t = tower_kit_gzip::DEFAULT_MAX_DECODED)]
    pub gzip_max_decoded: usize,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            gzip_min_size: tower_kit_gzip::DEFAULT_MIN_SIZE,
            gzip_level: tower_kit_gzip::DEFAULT_LEVEL,
            gzip_max_decoded: tower_kit_gzip::DEFAULT_MAX_DECODED,
        }
    }
}

/// Response compression with the demo's settings (also used inside the cache, on the cached routes).
pub fn response_layer(args: &Args) -> Result<GzipLayer, tower_kit::core::ConfigError> {
    GzipLayer::builder()
        .min_size(args.gzip_min_size)
        .level(args.gzip_level)
        .build()
}

/// Request decoding (inner) and response compression (outer), as one layer.
pub fn layers(
    args: &Args,
) -> Result<Stack<GzipRequestLayer, GzipLayer>, tower_kit::core::ConfigError> {
    let response = response_layer(args)?;
    let request = GzipRequestLayer::builder()
        .max_decoded(args.gzip_max_decoded)
        .build()?;
    Ok(Stack::new(request, response))
}

/// How many events `GET /api/events` sends, and how far apart.
pub const EVENTS: u32 = 10;
/// The gap between two events.
pub const EVENT_INTERVAL: Duration = Duration::from_millis(500);

/// `GET /api/events`.
pub fn router() -> Router {
    Router::new().route("/api/events", get(events))
}

/// Ten events, 500 ms apart, on a fixed schedule (event `n` at `n × 500 ms`), then the stream ends.
async fn events() -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let start = tokio::time::Instant::now();
    let stream = futures_util::stream::unfold(0u32, move |n| async move {
        if n >= EVENTS {
            return None;
        }
        tokio::time::sleep_until(start + EVENT_INTERVAL * n).await;
        let event = Event::default()
            .id(n.to_string())
            .event("tick")
            .data(format!(
                r#"{{"n":{n},"of":{EVENTS},"scheduled_ms":{},"message":"event {n} of a compressed server-sent event stream"}}"#,
                (EVENT_INTERVAL * n).as_millis()
            ));
        Some((Ok(event), n + 1))
    });
    Sse::new(stream)
}
