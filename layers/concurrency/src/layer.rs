//! [`ConcurrencyLayer`], its builder and its handle.

use crate::{
    adaptive::{AdaptiveLimit, Controller},
    keyed::KeyedLimits,
    metrics::Metrics,
    queue::{Gate, GateRef},
    refusal::{MapRefusal, Refusal, RefusalHook, Refusals},
    service::Concurrency,
};
use bytes::Bytes;
use http::{Response, StatusCode, request, response};
use std::{num::NonZeroUsize, sync::Arc, time::Duration};
use tower_kit_core::{ConfigError, Exempt};
use tower_layer::Layer;

/// The largest limit, queue length or key count a layer accepts.
pub const MAX_LIMIT: usize = 1 << 24;

/// When an admitted request gives its slot back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ReleaseAt {
    /// When the response body ends, errors or is dropped (the default): a slot stands for work the server is
    /// really doing, including streaming a large body.
    #[default]
    BodyEnd,
    /// When the response head is returned: the limit then bounds handler work only.
    Head,
}

/// In which order queued callers get a freed slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum QueueOrder {
    /// First in, first out (the default): every caller waits its turn.
    #[default]
    Fifo,
    /// Last in, first out: under overload the freshest callers, whose clients are still waiting, are served first;
    /// when the queue is full a new caller evicts the oldest waiter (which is refused) instead of being refused.
    Lifo,
}

pub(crate) type ResponsePredicate = Arc<dyn Fn(&response::Parts) -> bool + Send + Sync>;
pub(crate) type KeyFn = Arc<dyn Fn(&request::Parts) -> Option<String> + Send + Sync>;

/// Everything a service needs, shared by every service one layer value makes.
pub(crate) struct Config {
    pub(crate) gate: Gate,
    pub(crate) max_queue_wait: Duration,
    pub(crate) release_at: ReleaseAt,
    pub(crate) streams_at_head: bool,
    pub(crate) stream_predicate: Option<ResponsePredicate>,
    pub(crate) exempt: Exempt,
    pub(crate) keyed: Option<(Arc<KeyedLimits>, KeyFn)>,
    pub(crate) adaptive: Option<Controller>,
    /// Whether the slot of an admitted request moves into the response body with no more than the event-stream
    /// check: it is released at the end of the body, and there is no adaptive limit and no stream predicate.
    /// (Computed once: the response path tests this one flag.)
    pub(crate) plain_response: bool,
    pub(crate) refusals: Refusals,
    pub(crate) metrics: Arc<Metrics>,
}

impl Config {
    /// Whether `call` must look at the request parts (exemption or key).
    #[inline]
    pub(crate) fn needs_parts(&self) -> bool {
        self.exempt.is_set() || self.keyed.is_some()
    }
}

/// An admitted request's permit holds the shared config, which holds the gate: one reference count for both.
impl GateRef for Arc<Config> {
    #[inline]
    fn gate(&self) -> &Gate {
        &self.gate
    }
}

/// A concurrency limit with load shedding, as a Tower layer.
///
/// One layer value is one limit: every service it makes (axum makes one per route) shares its slots. See the
/// [crate docs](crate) for an example and [`builder`](Self::builder) for the settings.
#[derive(Clone)]
#[must_use]
pub struct ConcurrencyLayer {
    config: Arc<Config>,
}

impl ConcurrencyLayer {
    /// At most `max_in_flight` requests at once; the rest are refused at once with `503` and `Retry-After: 1`
    /// (no queue). Permits are held until the response body ends.
    pub fn new(max_in_flight: NonZeroUsize) -> Self {
        // NonZeroUsize cannot fail any check but the upper bound, which is clamped.
        let limit = max_in_flight.get().min(MAX_LIMIT);
        ConcurrencyLayerBuilder::default().finish(limit)
    }

    /// A builder for every setting.
    pub fn builder() -> ConcurrencyLayerBuilder {
        ConcurrencyLayerBuilder::default()
    }

    /// A handle that reads the live state (current limit, in flight, queued) of this layer's limit.
    pub fn handle(&self) -> ConcurrencyHandle {
        ConcurrencyHandle::from_config(self.config.clone())
    }
}

impl<S> Layer<S> for ConcurrencyLayer {
    type Service = Concurrency<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Concurrency::new(inner, self.config.clone())
    }
}

impl std::fmt::Debug for ConcurrencyLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.config;
        f.debug_struct("ConcurrencyLayer")
            .field("limit", &c.gate.limit())
            .field("max_queue_wait", &c.max_queue_wait)
            .field("release_at", &c.release_at)
            .field("streams_at_head", &c.streams_at_head)
            .field("exempt", &c.exempt)
            .field("keyed", &c.keyed.as_ref().map(|k| &k.0))
            .field("adaptive", &c.adaptive.is_some())
            .field("refusals", &c.refusals)
            .finish()
    }
}

/// Reads a layer's live state. Cheap to clone; see [`ConcurrencyLayer::handle`].
#[derive(Clone)]
pub struct ConcurrencyHandle {
    config: Arc<Config>,
}

impl ConcurrencyHandle {
    pub(crate) fn from_config(config: Arc<Config>) -> Self {
        ConcurrencyHandle { config }
    }

    /// The current limit (the adaptive limit's latest value, or the fixed one).
    pub fn limit(&self) -> usize {
        self.config.gate.limit()
    }

    /// Requests holding a slot now (including any handed a slot that are about to start).
    pub fn in_flight(&self) -> usize {
        self.config.gate.in_flight()
    }

    /// Requests waiting in the queue now.
    pub fn queued(&self) -> usize {
        self.config.gate.queued()
    }

    /// Keys with requests in flight, when per-key caps are on (else 0).
    pub fn tracked_keys(&self) -> usize {
        self.config.keyed.as_ref().map_or(0, |(k, _)| k.keys())
    }

    /// Requests in flight for `key`, when per-key caps are on (else 0).
    pub fn key_in_flight(&self, key: &str) -> usize {
        self.config
            .keyed
            .as_ref()
            .map_or(0, |(k, _)| k.in_flight(key))
    }
}

impl std::fmt::Debug for ConcurrencyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConcurrencyHandle")
            .field("limit", &self.limit())
            .field("in_flight", &self.in_flight())
            .field("queued", &self.queued())
            .finish()
    }
}

/// Settings for a [`ConcurrencyLayer`]; [`build`](Self::build) checks them.
#[must_use]
pub struct ConcurrencyLayerBuilder {
    max_in_flight: Option<usize>,
    max_queue: usize,
    max_queue_wait: Duration,
    order: QueueOrder,
    release_at: ReleaseAt,
    streams_at_head: bool,
    stream_predicate: Option<ResponsePredicate>,
    exempt: Exempt,
    per_key: Option<(usize, KeyFn)>,
    max_keys: usize,
    adaptive: Option<AdaptiveLimit>,
    status: StatusCode,
    body: Bytes,
    retry_after: Duration,
    on_refusal: Option<RefusalHook>,
    map_refusal: Option<MapRefusal>,
    name: Option<String>,
}

impl Default for ConcurrencyLayerBuilder {
    fn default() -> Self {
        ConcurrencyLayerBuilder {
            max_in_flight: None,
            max_queue: 0,
            max_queue_wait: Duration::from_secs(1),
            order: QueueOrder::Fifo,
            release_at: ReleaseAt::BodyEnd,
            streams_at_head: true,
            stream_predicate: None,
            exempt: Exempt::none(),
            per_key: None,
            max_keys: 65_536,
            adaptive: None,
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: Bytes::from_static(b"server busy: concurrency limit reached, retry later\n"),
            retry_after: Duration::from_secs(1),
            on_refusal: None,
            map_refusal: None,
            name: None,
        }
    }
}

impl ConcurrencyLayerBuilder {
    /// The most requests inside at once, `1..=16_777_216`. Required unless [`adaptive`](Self::adaptive) is set
    /// (which then starts from its own initial limit and ignores this).
    pub fn max_in_flight(mut self, limit: usize) -> Self {
        self.max_in_flight = Some(limit);
        self
    }

    /// How many requests may wait for a slot (default 0: refuse at once when every slot is taken).
    pub fn max_queue(mut self, len: usize) -> Self {
        self.max_queue = len;
        self
    }

    /// How long a request may wait in the queue before it is refused (default 1 s). Queueing needs a Tokio
    /// runtime with the time driver (any axum, tonic or hyper server has one).
    pub fn max_queue_wait(mut self, wait: Duration) -> Self {
        self.max_queue_wait = wait;
        self
    }

    /// FIFO (default) or LIFO queue order.
    pub fn queue_order(mut self, order: QueueOrder) -> Self {
        self.order = order;
        self
    }

    /// When a slot is given back (default: at the end of the response body).
    pub fn release_at(mut self, at: ReleaseAt) -> Self {
        self.release_at = at;
        self
    }

    /// Whether streaming responses (`Content-Type: text/event-stream`, or any the
    /// [`stream_predicate`](Self::stream_predicate) picks) give their slot back at the head even when
    /// [`release_at`](Self::release_at) is `BodyEnd` (default `true`: a few SSE clients must not hold every slot).
    pub fn release_streams_at_head(mut self, yes: bool) -> Self {
        self.streams_at_head = yes;
        self
    }

    /// Picks more responses that count as long-lived streams (besides `text/event-stream`).
    pub fn stream_predicate<F>(mut self, predicate: F) -> Self
    where
        F: Fn(&response::Parts) -> bool + Send + Sync + 'static,
    {
        self.stream_predicate = Some(Arc::new(predicate));
        self
    }

    tower_kit_core::exempt_setter! {
        /// Requests for which the predicate is true bypass the limit: never queued, never refused, not counted
        /// (`/health`, `/metrics`).
    }

    /// At most `max_per_key` requests in flight per key, on top of the global limit. `key` maps a request to its
    /// key (a client IP, an API key, a route); `None` means no per-key cap for that request. A request over its
    /// key's cap is refused at once (it does not queue: one busy client must not fill the queue). See
    /// [`keys`](crate::keys) for ready-made key functions.
    pub fn per_key<F>(mut self, max_per_key: usize, key: F) -> Self
    where
        F: Fn(&request::Parts) -> Option<String> + Send + Sync + 'static,
    {
        self.per_key = Some((max_per_key, Arc::new(key)));
        self
    }

    /// How many distinct keys may have requests in flight at once (default 65 536); a request with a new key
    /// beyond that is refused. Keys are forgotten when their last request ends.
    pub fn max_keys(mut self, max: usize) -> Self {
        self.max_keys = max;
        self
    }

    /// Lets the limit follow latency ([`Aimd`](crate::Aimd) or [`Gradient2`](crate::Gradient2)).
    pub fn adaptive(mut self, algorithm: impl Into<AdaptiveLimit>) -> Self {
        self.adaptive = Some(algorithm.into());
        self
    }

    /// The HTTP status of a refusal, a 4xx or 5xx (default 503 Service Unavailable; 429 Too Many Requests is the
    /// other common choice, see the book). gRPC calls always get HTTP 200 with `grpc-status: 8`.
    pub fn refusal_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// The body of a refusal (default a short plain-text sentence; empty for none).
    pub fn refusal_body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// The `Retry-After` of a refusal, sent in whole seconds rounded up, at least 1 (default 1 s); gRPC refusals
    /// carry it as `grpc-retry-pushback-ms`.
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = after;
        self
    }

    /// Called for every refusal, with why it happened (log it, count it). Runs on the request's task; keep it
    /// cheap. Default: none.
    pub fn on_refusal<F>(mut self, hook: F) -> Self
    where
        F: Fn(&Refusal) + Send + Sync + 'static,
    {
        self.on_refusal = Some(Arc::new(hook));
        self
    }

    /// A hook that may change each refusal response (add headers, change the status or body) before it is sent.
    /// Default: none.
    pub fn map_refusal<F>(mut self, map: F) -> Self
    where
        F: Fn(&Refusal, &mut Response<Bytes>) + Send + Sync + 'static,
    {
        self.map_refusal = Some(Arc::new(map));
        self
    }

    /// A name for this limit, used as the `limiter` metric label (default: no label). Keep it to a fixed set.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Checks the settings and builds the layer (and its shared state).
    pub fn build(self) -> Result<ConcurrencyLayer, ConfigError> {
        let limit = match (&self.adaptive, self.max_in_flight) {
            (Some(algorithm), _) => {
                algorithm.validate()?;
                algorithm.initial()
            }
            (None, None) => {
                return Err(ConfigError::new(
                    "max_in_flight",
                    "must be set (or use `adaptive`)",
                ));
            }
            (None, Some(n)) if n == 0 || n > MAX_LIMIT => {
                return Err(ConfigError::new(
                    "max_in_flight",
                    format!("must be in 1..={MAX_LIMIT} (got {n})"),
                ));
            }
            (None, Some(n)) => n,
        };
        if self.max_queue > MAX_LIMIT {
            return Err(ConfigError::new(
                "max_queue",
                format!("must be at most {MAX_LIMIT} (got {})", self.max_queue),
            ));
        }
        if self.max_queue > 0 && self.max_queue_wait.is_zero() {
            return Err(ConfigError::new(
                "max_queue_wait",
                "must be greater than zero when max_queue > 0 (got 0ns)",
            ));
        }
        if !(self.status.is_client_error() || self.status.is_server_error()) {
            return Err(ConfigError::new(
                "refusal_status",
                format!("must be a 4xx or 5xx status (got {})", self.status.as_u16()),
            ));
        }
        if self.retry_after > Duration::from_secs(86_400) {
            return Err(ConfigError::new(
                "retry_after",
                format!("must be at most one day (got {:?})", self.retry_after),
            ));
        }
        if let Some((max_per_key, _)) = &self.per_key
            && (*max_per_key == 0 || *max_per_key > MAX_LIMIT)
        {
            return Err(ConfigError::new(
                "per_key",
                format!("max_per_key must be in 1..={MAX_LIMIT} (got {max_per_key})"),
            ));
        }
        if self.max_keys == 0 || self.max_keys > MAX_LIMIT {
            return Err(ConfigError::new(
                "max_keys",
                format!("must be in 1..={MAX_LIMIT} (got {})", self.max_keys),
            ));
        }
        if let Some(name) = &self.name
            && (name.is_empty() || name.len() > 64)
        {
            return Err(ConfigError::new(
                "name",
                format!("must be 1 to 64 characters (got {} bytes)", name.len()),
            ));
        }
        Ok(self.finish(limit))
    }

    /// Builds from settings known to be valid.
    fn finish(self, limit: usize) -> ConcurrencyLayer {
        let metrics = Arc::new(Metrics::new(self.name.as_deref()));
        let gate = Gate::new(limit, self.max_queue, self.order, metrics.clone());
        let max_keys = self.max_keys;
        let plain_response = self.release_at == ReleaseAt::BodyEnd
            && self.adaptive.is_none()
            && self.stream_predicate.is_none();
        ConcurrencyLayer {
            config: Arc::new(Config {
                gate,
                max_queue_wait: self.max_queue_wait,
                release_at: self.release_at,
                streams_at_head: self.streams_at_head,
                stream_predicate: self.stream_predicate,
                exempt: self.exempt,
                keyed: self
                    .per_key
                    .map(|(max, key)| (Arc::new(KeyedLimits::new(max, max_keys)), key)),
                adaptive: self.adaptive.as_ref().map(Controller::new),
                plain_response,
                refusals: Refusals::new(
                    self.status,
                    self.body,
                    self.retry_after,
                    self.on_refusal,
                    self.map_refusal,
                ),
                metrics,
            }),
        }
    }
}

impl std::fmt::Debug for ConcurrencyLayerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConcurrencyLayerBuilder")
            .field("max_in_flight", &self.max_in_flight)
            .field("max_queue", &self.max_queue)
            .field("max_queue_wait", &self.max_queue_wait)
            .field("order", &self.order)
            .field("release_at", &self.release_at)
            .field("adaptive", &self.adaptive)
            .field("status", &self.status)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Aimd;

    fn field(b: ConcurrencyLayerBuilder) -> &'static str {
        b.build().unwrap_err().field()
    }

    #[test]
    fn bad_settings_name_their_field() {
        let b = ConcurrencyLayer::builder;
        assert_eq!(field(b()), "max_in_flight");
        assert_eq!(field(b().max_in_flight(0)), "max_in_flight");
        assert_eq!(field(b().max_in_flight(MAX_LIMIT + 1)), "max_in_flight");
        assert_eq!(
            field(b().max_in_flight(1).max_queue(MAX_LIMIT + 1)),
            "max_queue"
        );
        assert_eq!(
            field(
                b().max_in_flight(1)
                    .max_queue(1)
                    .max_queue_wait(Duration::ZERO)
            ),
            "max_queue_wait"
        );
        assert_eq!(
            field(b().max_in_flight(1).refusal_status(StatusCode::OK)),
            "refusal_status"
        );
        assert_eq!(
            field(
                b().max_in_flight(1)
                    .retry_after(Duration::from_secs(90_000))
            ),
            "retry_after"
        );
        assert_eq!(field(b().max_in_flight(1).per_key(0, |_| None)), "per_key");
        assert_eq!(field(b().max_in_flight(1).max_keys(0)), "max_keys");
        assert_eq!(field(b().max_in_flight(1).name("")), "name");
        assert_eq!(
            field(b().adaptive(Aimd::new().min_limit(0))),
            "adaptive.min_limit"
        );
    }

    #[test]
    fn good_settings_build_and_are_observable() {
        let layer = ConcurrencyLayer::builder()
            .max_in_flight(7)
            .max_queue(3)
            .name("api")
            .build()
            .unwrap();
        let h = layer.handle();
        assert_eq!((h.limit(), h.in_flight(), h.queued()), (7, 0, 0));
        assert!(format!("{layer:?}").contains("limit: 7"));
        let adaptive = ConcurrencyLayer::builder()
            .adaptive(Aimd::new().initial_limit(12))
            .build()
            .unwrap();
        assert_eq!(adaptive.handle().limit(), 12);
        let zero_wait_without_queue = ConcurrencyLayer::builder()
            .max_in_flight(1)
            .max_queue_wait(Duration::ZERO)
            .build();
        assert!(zero_wait_without_queue.is_ok());
    }

    #[test]
    fn new_clamps_instead_of_failing() {
        let layer = ConcurrencyLayer::new(NonZeroUsize::MAX);
        assert_eq!(layer.handle().limit(), MAX_LIMIT);
    }
}
