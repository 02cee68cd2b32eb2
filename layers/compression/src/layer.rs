//! [`CompressionLayer`]: the response compression settings and their builder.

use crate::{
    codec::{Coding, CodingSet, DEFAULT_PREFERENCE},
    engine::{MAX_ONESHOT_LEVEL, MAX_ZSTD_LEVEL},
    negotiate::choose_coding,
    policy::{ContentTypes, MimePattern},
    service::Compression,
};
use http::{HeaderMap, Method, Uri, response::Parts};
use std::{fmt, sync::Arc, time::Duration};
use tower_kit_core::ConfigError;
use tower_layer::Layer;

/// Default libdeflate level of gzip bodies compressed in one shot: 7, the fastest whose output is no larger than
/// tower-http's default (flate2 level 6) on the benchmark JSON (see the book's compression chapter).
pub const DEFAULT_GZIP_LEVEL: u32 = 7;
/// Default libdeflate level of deflate (zlib format) bodies compressed in one shot: the gzip level (same engine).
pub const DEFAULT_DEFLATE_LEVEL: u32 = 7;
/// Default Brotli quality of bodies compressed in one shot: 4, tower-http's default, here with the window sized to
/// the body and a reused hash table (the same bytes as tower-http's).
pub const DEFAULT_BR_LEVEL: u32 = 4;
/// Default zstd level of bodies compressed in one shot: 3, tower-http's (and zstd's) default, here with a reused
/// context, the window at most the body, no content size in the frame, and over 8 KiB the search parameters and
/// tables of an unknown size (from 8 to 32 KiB the body is compressed as a stream libzstd is not told the size of,
/// which would otherwise shrink the tables), so the output is no larger than tower-http's on the benchmark JSON at
/// 2 KiB, 16 KiB, 100 KiB and 1 MiB (616, 3 493, 20 114 and 197 879 B against 618, 3 493, 20 114 and 197 882 B),
/// and from 8 to 32 KiB is tower-http's frame but for the window descriptor (see the book).
pub const DEFAULT_ZSTD_LEVEL: u32 = 3;
/// Default zlib level of gzip and deflate streams.
pub const DEFAULT_STREAM_LEVEL: u32 = 7;
/// Default smallest body compressed, in bytes.
pub const DEFAULT_MIN_SIZE: u64 = 1000;
/// Default largest body compressed in one shot, in bytes (1 MiB).
pub const DEFAULT_MAX_BUFFERED: u64 = 1024 * 1024;
/// Default size, in bytes, from which compression runs on tokio's blocking pool instead of the async worker.
pub const DEFAULT_OFFLOAD_THRESHOLD: u64 = 16 * 1024;
/// Default idle time after which a stream's pending compressed bytes are flushed.
pub const DEFAULT_IDLE_FLUSH: Duration = Duration::from_millis(100);

/// The offload threshold for `coding`: the configured one (set for libdeflate level 7, where 16 KiB of JSON takes
/// more than 100 µs), four times it for zstd, which compresses that JSON about four times as fast at its default
/// level (16 KiB in about 30 µs), so a zstd body is not handed to the blocking pool for less work than the hand-off
/// is worth. `u64::MAX` stays "never".
pub(crate) fn offload_threshold(config: &Config, coding: Coding) -> u64 {
    match coding {
        Coding::Zstd => config.offload_threshold.saturating_mul(4),
        _ => config.offload_threshold,
    }
}

/// `preference` with Brotli moved last: for streams, Brotli runs at [`BR_STREAM_QUALITY`](crate::BR_STREAM_QUALITY).
fn stream_order(preference: &[Coding]) -> Vec<Coding> {
    let mut order: Vec<Coding> = preference
        .iter()
        .copied()
        .filter(|c| *c != Coding::Br)
        .collect();
    if preference.contains(&Coding::Br) {
        order.push(Coding::Br);
    }
    order
}

/// What a [predicate](CompressionLayerBuilder::predicate) sees of the request.
#[derive(Debug, Clone)]
pub struct RequestHead {
    /// The request method.
    pub method: Method,
    /// The request target.
    pub uri: Uri,
    /// The request headers.
    pub headers: HeaderMap,
}

type Predicate = Arc<dyn Fn(&RequestHead, &Parts) -> bool + Send + Sync>;

/// The settings every [`Compression`] service of one layer shares.
#[derive(Clone)]
pub(crate) struct Config {
    /// One-shot level per coding, indexed by `Coding::index`.
    pub(crate) levels: [u32; 4],
    /// The codings offered, in server preference order.
    pub(crate) preference: Vec<Coding>,
    /// The same for streams: Brotli last (its streams must run at quality 1 to stay within the memory budget).
    pub(crate) stream_preference: Vec<Coding>,
    pub(crate) stream_level: u32,
    pub(crate) min_size: u64,
    pub(crate) max_buffered: u64,
    pub(crate) offload_threshold: u64,
    pub(crate) idle_flush: Option<Duration>,
    pub(crate) respect_no_transform: bool,
    pub(crate) flush_every_frame: bool,
    pub(crate) content_types: ContentTypes,
    pub(crate) predicate: Option<Predicate>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("levels", &self.levels)
            .field("preference", &self.preference)
            .field("stream_level", &self.stream_level)
            .field("min_size", &self.min_size)
            .field("max_buffered", &self.max_buffered)
            .field("offload_threshold", &self.offload_threshold)
            .field("idle_flush", &self.idle_flush)
            .field("respect_no_transform", &self.respect_no_transform)
            .field("flush_every_frame", &self.flush_every_frame)
            .field("content_types", &self.content_types)
            .field("predicate", &self.predicate.as_ref().map(|_| "Fn"))
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            levels: [
                DEFAULT_GZIP_LEVEL,
                DEFAULT_DEFLATE_LEVEL,
                DEFAULT_BR_LEVEL,
                DEFAULT_ZSTD_LEVEL,
            ],
            preference: DEFAULT_PREFERENCE
                .into_iter()
                .filter(|c| c.is_compiled())
                .collect(),
            stream_preference: stream_order(
                &DEFAULT_PREFERENCE
                    .into_iter()
                    .filter(|c| c.is_compiled())
                    .collect::<Vec<_>>(),
            ),
            stream_level: DEFAULT_STREAM_LEVEL,
            min_size: DEFAULT_MIN_SIZE,
            max_buffered: DEFAULT_MAX_BUFFERED,
            offload_threshold: DEFAULT_OFFLOAD_THRESHOLD,
            idle_flush: Some(DEFAULT_IDLE_FLUSH),
            respect_no_transform: true,
            flush_every_frame: false,
            content_types: ContentTypes::parse_defaults(),
            predicate: None,
        }
    }
}

/// Compresses responses with the coding the client prefers among gzip, deflate, Brotli and zstd. See the
/// [crate docs](crate) for the rules.
///
/// ```
/// use tower_kit_compression::CompressionLayer;
///
/// let layer = CompressionLayer::builder()
///     .min_size(512)
///     .deny_content_type("text/csv")
///     .build()
///     .unwrap();
/// # let _ = layer;
/// ```
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct CompressionLayer {
    config: Arc<Config>,
}

impl CompressionLayer {
    /// The defaults: every compiled codec, preferred in the order [`DEFAULT_PREFERENCE`](crate::DEFAULT_PREFERENCE),
    /// one-shot levels [`DEFAULT_GZIP_LEVEL`], [`DEFAULT_DEFLATE_LEVEL`], [`DEFAULT_BR_LEVEL`],
    /// [`DEFAULT_ZSTD_LEVEL`], streaming level [`DEFAULT_STREAM_LEVEL`], `min_size` 1000 B,
    /// `max_buffered` 1 MiB, offload from [`DEFAULT_OFFLOAD_THRESHOLD`], idle flush after 100 ms, `no-transform`
    /// respected, SSE and NDJSON flushed per frame, the default content-type lists.
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder starting from the defaults.
    pub fn builder() -> CompressionLayerBuilder {
        CompressionLayerBuilder {
            config: Config::default(),
            allow: Vec::new(),
            deny: Vec::new(),
            flush: Vec::new(),
            clear_defaults: false,
            enabled: CodingSet::compiled(),
            preference: Vec::new(),
        }
    }

    /// The coding a request with these headers gets from this layer (`None`: identity), by the request's
    /// `Accept-Encoding` and the layer's codings and preference. What a response finally gets also depends on the
    /// response (its type, size, status); this is the variant a compressible response is sent as, which is what a
    /// cache needs to key on.
    pub fn choose(&self, headers: &HeaderMap) -> Option<Coding> {
        choose_coding(headers, &self.config.preference)
    }

    /// The codings this layer offers, in its preference order.
    pub fn codings(&self) -> &[Coding] {
        &self.config.preference
    }
}

impl<S> Layer<S> for CompressionLayer {
    type Service = Compression<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Compression::new(inner, Arc::clone(&self.config))
    }
}

/// Builds a [`CompressionLayer`]; [`build`](Self::build) checks every value and names the bad one.
#[must_use]
pub struct CompressionLayerBuilder {
    config: Config,
    allow: Vec<String>,
    deny: Vec<String>,
    flush: Vec<String>,
    clear_defaults: bool,
    enabled: CodingSet,
    preference: Vec<Coding>,
}

impl fmt::Debug for CompressionLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompressionLayerBuilder")
            .field("config", &self.config)
            .field("allow", &self.allow)
            .field("deny", &self.deny)
            .field("flush", &self.flush)
            .field("clear_defaults", &self.clear_defaults)
            .field("enabled", &self.enabled)
            .field("preference", &self.preference)
            .finish()
    }
}

impl CompressionLayerBuilder {
    fn enable(mut self, coding: Coding, on: bool) -> Self {
        if on {
            self.enabled.insert(coding);
        } else {
            self.enabled.remove(coding);
        }
        self
    }

    /// Whether gzip is offered. Default: on when the `gzip` feature is (a codec not compiled in is never offered).
    pub fn gzip(self, on: bool) -> Self {
        self.enable(Coding::Gzip, on)
    }

    /// Whether deflate (the zlib format) is offered. Default: on with the `deflate` feature.
    pub fn deflate(self, on: bool) -> Self {
        self.enable(Coding::Deflate, on)
    }

    /// Whether Brotli is offered. Default: on with the `br` feature.
    pub fn br(self, on: bool) -> Self {
        self.enable(Coding::Br, on)
    }

    /// Whether zstd is offered. Default: on with the `zstd` feature.
    pub fn zstd(self, on: bool) -> Self {
        self.enable(Coding::Zstd, on)
    }

    /// libdeflate level of gzip bodies compressed in one shot, 1 (fastest) to 12 (smallest). Default
    /// [`DEFAULT_GZIP_LEVEL`].
    pub fn gzip_level(mut self, level: u32) -> Self {
        self.config.levels[Coding::Gzip.index()] = level;
        self
    }

    /// libdeflate level of deflate bodies compressed in one shot, 1 to 12. Default [`DEFAULT_DEFLATE_LEVEL`].
    pub fn deflate_level(mut self, level: u32) -> Self {
        self.config.levels[Coding::Deflate.index()] = level;
        self
    }

    /// Brotli quality of bodies compressed in one shot, 0 (fastest) to 11 (smallest). Default
    /// [`DEFAULT_BR_LEVEL`].
    pub fn br_level(mut self, level: u32) -> Self {
        self.config.levels[Coding::Br.index()] = level;
        self
    }

    /// zstd level of bodies compressed in one shot, 1 (fastest) to 19 (smallest; 19 is the highest whose window
    /// stays within HTTP's 8 MB). Default [`DEFAULT_ZSTD_LEVEL`].
    pub fn zstd_level(mut self, level: u32) -> Self {
        self.config.levels[Coding::Zstd.index()] = level;
        self
    }

    /// The server's preference, used when the client's q-values tie: codings listed first win. Codings left out
    /// keep their default order after the listed ones. Default [`DEFAULT_PREFERENCE`](crate::DEFAULT_PREFERENCE)
    /// (zstd, br, gzip, deflate).
    pub fn preference(mut self, order: impl IntoIterator<Item = Coding>) -> Self {
        self.preference = order.into_iter().collect();
        self
    }

    /// zlib level of gzip and deflate streams, 1 (fastest) to 9 (smallest). Default [`DEFAULT_STREAM_LEVEL`].
    /// zstd and Brotli streams use fixed settings chosen for the memory budget
    /// ([`ZSTD_STREAM_LEVEL`](crate::ZSTD_STREAM_LEVEL), [`BR_STREAM_QUALITY`](crate::BR_STREAM_QUALITY)).
    pub fn stream_level(mut self, level: u32) -> Self {
        self.config.stream_level = level;
        self
    }

    /// Bodies smaller than this many bytes are sent as they are. Default 1000. Bodies of unknown length are
    /// buffered up to this size to find out (streams flushed per frame are not).
    pub fn min_size(mut self, bytes: u64) -> Self {
        self.config.min_size = bytes;
        self
    }

    /// Bodies of known length up to this many bytes are compressed in one shot (libdeflate) and sent with an
    /// exact `Content-Length`; larger ones are streamed. Default 1 MiB; at most 64 MiB.
    pub fn max_buffered(mut self, bytes: u64) -> Self {
        self.config.max_buffered = bytes;
        self
    }

    /// Bodies (one-shot) and frames (streams) of at least this many bytes are compressed on tokio's blocking pool,
    /// so a large body does not stall the other requests of its worker thread. Default
    /// [`DEFAULT_OFFLOAD_THRESHOLD`]; zstd, about four times as fast, offloads from four times this size;
    /// `u64::MAX` never offloads.
    pub fn offload_threshold(mut self, bytes: u64) -> Self {
        self.config.offload_threshold = bytes;
        self
    }

    /// When a streamed body's source goes quiet for this long with compressed bytes held back, they are flushed
    /// to the client. Default 100 ms; `None` turns it off.
    pub fn idle_flush(mut self, after: Option<Duration>) -> Self {
        self.config.idle_flush = after;
        self
    }

    /// Whether `Cache-Control: no-transform` on a response prevents compression. Default `true`.
    pub fn no_transform(mut self, respect: bool) -> Self {
        self.config.respect_no_transform = respect;
        self
    }

    /// Flush after every frame of every compressed stream, not only SSE and NDJSON. Default `false`.
    pub fn flush_every_frame(mut self, flush: bool) -> Self {
        self.config.flush_every_frame = flush;
        self
    }

    /// Adds a media type pattern to the allowlist: `type/subtype`, `type/*` or `type/*+suffix`.
    pub fn allow_content_type(mut self, pattern: impl Into<String>) -> Self {
        self.allow.push(pattern.into());
        self
    }

    /// Adds a media type pattern to the denylist. A deny pattern wins over an allow pattern that is no more
    /// specific (exact beats `type/*+suffix` beats `type/*`).
    pub fn deny_content_type(mut self, pattern: impl Into<String>) -> Self {
        self.deny.push(pattern.into());
        self
    }

    /// Adds a media type pattern whose streams are flushed after every frame (besides SSE and NDJSON).
    pub fn flush_content_type(mut self, pattern: impl Into<String>) -> Self {
        self.flush.push(pattern.into());
        self
    }

    /// Starts the allow, deny and flush lists empty instead of from the defaults (gRPC is still never compressed).
    pub fn clear_content_types(mut self) -> Self {
        self.clear_defaults = true;
        self
    }

    /// A last say, given the request head and the response head; return `false` to send the response as it is.
    /// With a predicate set, each request's method, URI and headers are copied for it.
    pub fn predicate<F>(mut self, predicate: F) -> Self
    where
        F: Fn(&RequestHead, &Parts) -> bool + Send + Sync + 'static,
    {
        self.config.predicate = Some(Arc::new(predicate));
        self
    }

    /// Checks the settings.
    pub fn build(self) -> Result<CompressionLayer, ConfigError> {
        let mut config = self.config;
        let ranges = [
            ("gzip_level", 1, MAX_ONESHOT_LEVEL),
            ("deflate_level", 1, MAX_ONESHOT_LEVEL),
            ("br_level", 0, 11),
            ("zstd_level", 1, MAX_ZSTD_LEVEL),
        ];
        for (i, (field, low, high)) in ranges.into_iter().enumerate() {
            let level = config.levels[i];
            if !(low..=high).contains(&level) {
                return Err(ConfigError::new(
                    field,
                    format!("must be {low} to {high} (got {level})"),
                ));
            }
        }
        let mut preference: Vec<Coding> = Vec::new();
        for coding in self.preference.iter().copied().chain(DEFAULT_PREFERENCE) {
            if self.preference.iter().filter(|c| **c == coding).count() > 1 {
                return Err(ConfigError::new(
                    "preference",
                    format!("lists {coding} more than once"),
                ));
            }
            if !preference.contains(&coding)
                && self.enabled.contains(coding)
                && coding.is_compiled()
            {
                preference.push(coding);
            }
        }
        config.stream_preference = stream_order(&preference);
        config.preference = preference;
        if !(1..=9).contains(&config.stream_level) {
            return Err(ConfigError::new(
                "stream_level",
                format!("must be 1 to 9 (got {})", config.stream_level),
            ));
        }
        if config.max_buffered > 64 * 1024 * 1024 {
            return Err(ConfigError::new(
                "max_buffered",
                format!("must be at most 64 MiB (got {} bytes)", config.max_buffered),
            ));
        }
        if config.min_size > config.max_buffered {
            return Err(ConfigError::new(
                "min_size",
                format!(
                    "must not exceed max_buffered ({} bytes; got {})",
                    config.max_buffered, config.min_size
                ),
            ));
        }
        if config.idle_flush == Some(Duration::ZERO) {
            return Err(ConfigError::new(
                "idle_flush",
                "must be greater than zero, or None to turn it off (got 0)",
            ));
        }
        if self.clear_defaults {
            config.content_types.allow.clear();
            config.content_types.deny.clear();
            config.content_types.flush.clear();
        }
        for p in &self.allow {
            config
                .content_types
                .allow
                .push(MimePattern::parse("allow_content_type", p)?);
        }
        for p in &self.deny {
            config
                .content_types
                .deny
                .push(MimePattern::parse("deny_content_type", p)?);
        }
        for p in &self.flush {
            let pattern = MimePattern::parse("flush_content_type", p)?;
            // A stream flushed per frame must be compressible at all.
            if !config.content_types.allow.contains(&pattern) {
                config.content_types.allow.push(pattern.clone());
            }
            config.content_types.flush.push(pattern);
        }
        Ok(CompressionLayer {
            config: Arc::new(config),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_name_their_field() {
        let field = |b: CompressionLayerBuilder| b.build().unwrap_err().field();
        assert_eq!(
            field(CompressionLayer::builder().gzip_level(0)),
            "gzip_level"
        );
        assert_eq!(
            field(CompressionLayer::builder().gzip_level(13)),
            "gzip_level"
        );
        assert_eq!(
            field(CompressionLayer::builder().deflate_level(13)),
            "deflate_level"
        );
        assert_eq!(field(CompressionLayer::builder().br_level(12)), "br_level");
        assert_eq!(
            field(CompressionLayer::builder().zstd_level(0)),
            "zstd_level"
        );
        assert_eq!(
            field(CompressionLayer::builder().zstd_level(20)),
            "zstd_level"
        );
        assert_eq!(
            field(CompressionLayer::builder().preference([Coding::Br, Coding::Br])),
            "preference"
        );
        assert_eq!(
            field(CompressionLayer::builder().stream_level(0)),
            "stream_level"
        );
        assert_eq!(
            field(CompressionLayer::builder().stream_level(10)),
            "stream_level"
        );
        assert_eq!(
            field(CompressionLayer::builder().max_buffered(65 * 1024 * 1024)),
            "max_buffered"
        );
        assert_eq!(
            field(
                CompressionLayer::builder()
                    .min_size(5000)
                    .max_buffered(4000)
            ),
            "min_size"
        );
        assert_eq!(
            field(CompressionLayer::builder().idle_flush(Some(Duration::ZERO))),
            "idle_flush"
        );
        assert_eq!(
            field(CompressionLayer::builder().allow_content_type("json")),
            "allow_content_type"
        );
        assert_eq!(
            field(CompressionLayer::builder().deny_content_type("*/*")),
            "deny_content_type"
        );
        assert_eq!(
            field(CompressionLayer::builder().flush_content_type("text/")),
            "flush_content_type"
        );
        let message = CompressionLayer::builder()
            .gzip_level(13)
            .build()
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("gzip_level") && message.contains("13"),
            "{message}"
        );
    }

    #[test]
    fn good_values_build() {
        let layer = CompressionLayer::builder()
            .gzip_level(12)
            .br_level(0)
            .zstd_level(19)
            .stream_level(1)
            .min_size(0)
            .max_buffered(0)
            .offload_threshold(u64::MAX)
            .idle_flush(None)
            .no_transform(false)
            .flush_every_frame(true)
            .clear_content_types()
            .allow_content_type("application/x-protobuf")
            .flush_content_type("application/x-log")
            .predicate(|_, _| true)
            .build()
            .unwrap();
        let debug = format!("{layer:?}");
        assert!(debug.contains("levels: [12, 7, 0, 19]"), "{debug}");
        assert_eq!(layer.config.content_types.allow.len(), 2);
    }
}
