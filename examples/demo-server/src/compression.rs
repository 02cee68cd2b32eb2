//! Compression: responses compressed with the coding each client prefers (zstd, Brotli, gzip or deflate), uploads in
//! any of those codings decoded, and `GET /api/events`, a server-sent event stream whose events are compressed and
//! still arrive on time (flushed one by one).
//!
//! `/health` and `/metrics` are outside request decoding: a probe or scraper that sends a `Content-Encoding` header
//! is never refused. `/api/events` has its own cap on open streams (`--events-max-in-flight`): each open compressed
//! stream holds a compressor (about 220 KiB), and event streams give their slot of the global limit back at the
//! head, so without this cap the number of open streams, and their memory, would have no bound. Over the cap:
//! `503` with `Retry-After`.

use axum::{
    Router,
    response::sse::{Event, Sse},
    routing::get,
};
use futures_util::Stream;
use std::{convert::Infallible, time::Duration};
use tower_kit::core::ConfigError;
use tower_kit_compression::{CompressionLayer, RequestDecompressionLayer};
use tower_kit_concurrency::ConcurrencyLayer;
use tower_layer::Stack;

/// Flags of the compression layers. The `--gzip-*` spellings of the first three are accepted as hidden aliases.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "compression_args")]
pub struct Args {
    /// Responses smaller than this many bytes are sent uncompressed.
    #[arg(
        long,
        alias = "gzip-min-size",
        env = "COMPRESSION_MIN_SIZE",
        default_value_t = tower_kit_compression::DEFAULT_MIN_SIZE
    )]
    pub compression_min_size: u64,

    /// libdeflate level of gzip bodies of known size, 1 (fastest) to 12 (smallest).
    #[arg(
        long,
        alias = "gzip-level",
        env = "COMPRESSION_GZIP_LEVEL",
        default_value_t = tower_kit_compression::DEFAULT_GZIP_LEVEL
    )]
    pub compression_gzip_level: u32,

    /// Largest decoded request body accepted (any coding), in bytes; larger uploads get 413.
    #[arg(
        long,
        alias = "gzip-max-decoded",
        env = "COMPRESSION_MAX_DECODED",
        default_value_t = tower_kit_compression::DEFAULT_MAX_DECODED
    )]
    pub compression_max_decoded: usize,

    /// The most `GET /api/events` streams open at once; more get 503 with `Retry-After`.
    #[arg(long, env = "EVENTS_MAX_IN_FLIGHT", default_value_t = DEFAULT_EVENTS_MAX_IN_FLIGHT)]
    pub events_max_in_flight: usize,
}

/// Default cap on open `GET /api/events` streams: 256 (about 56 MiB of compressors at most).
pub const DEFAULT_EVENTS_MAX_IN_FLIGHT: usize = 256;

impl Default for Args {
    fn default() -> Self {
        Self {
            compression_min_size: tower_kit_compression::DEFAULT_MIN_SIZE,
            compression_gzip_level: tower_kit_compression::DEFAULT_GZIP_LEVEL,
            compression_max_decoded: tower_kit_compression::DEFAULT_MAX_DECODED,
            events_max_in_flight: DEFAULT_EVENTS_MAX_IN_FLIGHT,
        }
    }
}

/// Response compression with the demo's settings (also used inside the cache, on the cached routes).
pub fn response_layer(args: &Args) -> Result<CompressionLayer, tower_kit::core::ConfigError> {
    CompressionLayer::builder()
        .min_size(args.compression_min_size)
        .gzip_level(args.compression_gzip_level)
        .build()
}

/// Whether a request bypasses request decoding: the operational routes, `/health` and `/metrics`.
pub fn is_exempt_from_decoding(path: &str) -> bool {
    path == "/health" || path == "/metrics"
}

/// Request decoding (inner; `/health` and `/metrics` exempt) and response compression (outer), as one layer.
pub fn layers(
    args: &Args,
) -> Result<Stack<RequestDecompressionLayer, CompressionLayer>, ConfigError> {
    let response = response_layer(args)?;
    let request = RequestDecompressionLayer::builder()
        .max_decoded(args.compression_max_decoded)
        .exempt(|parts| is_exempt_from_decoding(parts.uri.path()))
        .build()?;
    Ok(Stack::new(request, response))
}

/// The cap on open `/api/events` streams: a slot is held until the stream's body ends or the client goes away
/// (not given back at the head, as the global limit does for event streams); no queue.
pub fn events_limit(args: &Args) -> Result<ConcurrencyLayer, ConfigError> {
    ConcurrencyLayer::builder()
        .name("events")
        .max_in_flight(args.events_max_in_flight)
        .max_queue(0)
        .release_streams_at_head(false)
        .build()
}

/// How many events `GET /api/events` sends, and how far apart.
pub const EVENTS: u32 = 10;
/// The gap between two events.
pub const EVENT_INTERVAL: Duration = Duration::from_millis(500);

/// `GET /api/events`, behind its own cap ([`events_limit`]).
pub fn router(args: &Args) -> Result<Router, ConfigError> {
    Ok(Router::new().route("/api/events", get(events).layer(events_limit(args)?)))
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
