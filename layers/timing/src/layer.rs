//! [`TimingLayer`], its configuration and its builder.

use crate::{Timing, registry::Registry, stats::TimingHandle};
use http::{Extensions, HeaderMap, Method, Uri};
use std::{borrow::Cow, fmt, sync::Arc, time::Duration};
use tower_kit_core::ConfigError;

/// What a route mapping or a predicate sees of a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    /// The request method.
    pub method: &'a Method,
    /// The request URI.
    pub uri: &'a Uri,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The request extensions.
    pub extensions: &'a Extensions,
}

type RouteFn = dyn Fn(&RequestInfo<'_>) -> Option<Cow<'static, str>> + Send + Sync;
type Predicate = dyn Fn(&RequestInfo<'_>) -> bool + Send + Sync;
type SlowFn = dyn Fn(&str) -> Option<Duration> + Send + Sync;

/// The default cap on distinct values of a label.
pub const DEFAULT_MAX_LABEL_VALUES: usize = 1000;
/// The default slow-request threshold.
pub const DEFAULT_SLOW_THRESHOLD: Duration = Duration::from_secs(1);

pub(crate) struct Config {
    pub(crate) route_fn: Option<Arc<RouteFn>>,
    pub(crate) server_timing: ServerTimingMode,
    pub(crate) slow_threshold: Option<Duration>,
    pub(crate) slow_for: Option<Arc<SlowFn>>,
    pub(crate) metrics: bool,
    pub(crate) head_duration: bool,
    pub(crate) body_sizes: bool,
    pub(crate) stats: bool,
}

pub(crate) enum ServerTimingMode {
    Off,
    On,
    If(Arc<Predicate>),
}

impl Config {
    pub(crate) fn slow_threshold_for(&self, route: &str) -> Option<Duration> {
        match &self.slow_for {
            Some(f) => f(route),
            None => self.slow_threshold,
        }
    }
}

/// Times requests and records OpenTelemetry-named metrics, optional `Server-Timing`, a slow-request log and
/// in-process statistics. See the [crate docs](crate).
///
/// The label registry and the statistics are created with the layer value and shared by every service it makes, so
/// one `TimingLayer` on an axum router (which calls [`Layer::layer`](tower_layer::Layer::layer) once per route) is
/// one registry with one cap.
#[derive(Clone)]
#[must_use]
pub struct TimingLayer {
    pub(crate) registry: Arc<Registry>,
}

impl fmt::Debug for TimingLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.registry.common.config;
        f.debug_struct("TimingLayer")
            .field("route_fn", &c.route_fn.is_some())
            .field(
                "server_timing",
                &match c.server_timing {
                    ServerTimingMode::Off => "off",
                    ServerTimingMode::On => "on",
                    ServerTimingMode::If(_) => "predicate",
                },
            )
            .field("slow_threshold", &c.slow_threshold)
            .field("metrics", &c.metrics)
            .field("head_duration", &c.head_duration)
            .field("body_sizes", &c.body_sizes)
            .field("stats", &c.stats)
            .finish_non_exhaustive()
    }
}

impl Default for TimingLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl TimingLayer {
    /// The default configuration: metrics (`http.server.request.duration` and `http.server.active_requests`) and
    /// stats on, route from axum's `MatchedPath` (else `unmatched`), at most 1000 route values, no `Server-Timing`,
    /// slow-request warnings from 1 s. The time-to-head and body-size histograms are opt-in:
    /// [`head_duration`](TimingLayerBuilder::head_duration), [`body_sizes`](TimingLayerBuilder::body_sizes).
    pub fn new() -> Self {
        // The defaults pass every check `build` makes; they go straight to the layer.
        Self::builder().finish()
    }

    /// Configure everything.
    pub fn builder() -> TimingLayerBuilder {
        TimingLayerBuilder {
            route_fn: None,
            max_label_values: DEFAULT_MAX_LABEL_VALUES,
            server_timing: ServerTimingMode::Off,
            slow_threshold: Some(DEFAULT_SLOW_THRESHOLD),
            slow_for: None,
            metrics: true,
            head_duration: false,
            body_sizes: false,
            stats: true,
        }
    }

    /// A handle on this layer's live statistics, shared by every service the layer makes (and by the layer's
    /// clones). Cheap to clone into a handler.
    pub fn handle(&self) -> TimingHandle {
        TimingHandle::new(Arc::clone(&self.registry))
    }
}

impl<S> tower_layer::Layer<S> for TimingLayer {
    type Service = Timing<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Timing::new(inner, Arc::clone(&self.registry))
    }
}

/// Builder of a [`TimingLayer`]; [`build`](TimingLayerBuilder::build) checks the values.
#[must_use]
pub struct TimingLayerBuilder {
    route_fn: Option<Arc<RouteFn>>,
    max_label_values: usize,
    server_timing: ServerTimingMode,
    slow_threshold: Option<Duration>,
    slow_for: Option<Arc<SlowFn>>,
    metrics: bool,
    head_duration: bool,
    body_sizes: bool,
    stats: bool,
}

impl fmt::Debug for TimingLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimingLayerBuilder")
            .field("max_label_values", &self.max_label_values)
            .field("slow_threshold", &self.slow_threshold)
            .finish_non_exhaustive()
    }
}

impl TimingLayerBuilder {
    /// The route label for requests without axum's `MatchedPath` (tonic, plain hyper, a fallback): return a route
    /// *template* (`/users/{id}`) from your own route table, or `None` for `unmatched`. Never return the raw path: a
    /// client can make up any number of them. Whatever it returns is still subject to
    /// [`max_label_values`](Self::max_label_values).
    ///
    /// Default: none (axum's `MatchedPath`, the gRPC method of answered gRPC calls, else `unmatched`).
    pub fn route_fn<F>(mut self, f: F) -> Self
    where
        F: Fn(&RequestInfo<'_>) -> Option<Cow<'static, str>> + Send + Sync + 'static,
    {
        self.route_fn = Some(Arc::new(f));
        self
    }

    /// The cap on distinct route values, shared by every service this layer makes. Beyond it the value is
    /// `__other__` and `tower_kit.timing.label_overflow` increments. Default 1000; must be 1 to 1 000 000.
    pub fn max_label_values(mut self, max: usize) -> Self {
        self.max_label_values = max;
        self
    }

    /// Adds a `Server-Timing` header (`app;dur=<ms to head>` plus the entries inner layers add to the
    /// [`ServerTiming`](tower_kit_core::ServerTiming) extension) to every response. Timing can leak information
    /// (was this a cache hit? did that user exist?): prefer [`server_timing_if`](Self::server_timing_if) on public
    /// services. Default: off.
    pub fn server_timing(mut self, on: bool) -> Self {
        self.server_timing = if on {
            ServerTimingMode::On
        } else {
            ServerTimingMode::Off
        };
        self
    }

    /// Adds `Server-Timing` only to requests the predicate accepts (an internal network, a debug header).
    pub fn server_timing_if<F>(mut self, predicate: F) -> Self
    where
        F: Fn(&RequestInfo<'_>) -> bool + Send + Sync + 'static,
    {
        self.server_timing = ServerTimingMode::If(Arc::new(predicate));
        self
    }

    /// Log a `tracing` warning (method, route, status, duration) for requests whose full duration reaches this;
    /// `None` turns the log off. Default: 1 s.
    pub fn slow_threshold(mut self, threshold: Option<Duration>) -> Self {
        self.slow_threshold = threshold;
        self
    }

    /// A per-route slow threshold: called once per route value with the route label; `None` turns the log off for
    /// that route. Overrides [`slow_threshold`](Self::slow_threshold).
    pub fn slow_threshold_for<F>(mut self, f: F) -> Self
    where
        F: Fn(&str) -> Option<Duration> + Send + Sync + 'static,
    {
        self.slow_for = Some(Arc::new(f));
        self
    }

    /// Record metrics through the `metrics` facade. Default: on.
    pub fn metrics(mut self, on: bool) -> Self {
        self.metrics = on;
        self
    }

    /// Also record `http.server.request.head_duration`: the time until the inner service returned the response head
    /// (time to first byte), as a second histogram with the same labels. Default: off (it costs one more histogram
    /// sample per request; see the benchmarks chapter of the book).
    pub fn head_duration(mut self, on: bool) -> Self {
        self.head_duration = on;
        self
    }

    /// Also record `http.server.request.body.size` (from the request's `Content-Length`) and
    /// `http.server.response.body.size` (bytes produced), histograms with the same labels. OpenTelemetry lists both
    /// as opt-in. Default: off (two more histogram samples per request).
    pub fn body_sizes(mut self, on: bool) -> Self {
        self.body_sizes = on;
        self
    }

    /// Keep in-process statistics for the [`TimingHandle`]. Default: on.
    pub fn stats(mut self, on: bool) -> Self {
        self.stats = on;
        self
    }

    /// Checks the values and builds the layer.
    pub fn build(self) -> Result<TimingLayer, ConfigError> {
        if !(1..=1_000_000).contains(&self.max_label_values) {
            return Err(ConfigError::new(
                "max_label_values",
                format!(
                    "must be between 1 and 1000000 (got {})",
                    self.max_label_values
                ),
            ));
        }
        Ok(self.finish())
    }

    /// Builds from values known to be valid.
    fn finish(self) -> TimingLayer {
        let max_label_values = self.max_label_values;
        TimingLayer {
            registry: Arc::new(Registry::new(max_label_values, self.into_config())),
        }
    }

    fn into_config(self) -> Config {
        Config {
            route_fn: self.route_fn,
            server_timing: self.server_timing,
            slow_threshold: self.slow_threshold,
            slow_for: self.slow_for,
            metrics: self.metrics,
            head_duration: self.head_duration,
            body_sizes: self.body_sizes,
            stats: self.stats,
        }
    }

    #[cfg(test)]
    pub(crate) fn config_for_tests(self) -> Config {
        self.into_config()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_label_cap_names_the_field() {
        for bad in [0, 1_000_001] {
            let err = TimingLayer::builder()
                .max_label_values(bad)
                .build()
                .unwrap_err();
            assert_eq!(err.field(), "max_label_values");
            assert!(err.to_string().contains(&bad.to_string()));
        }
        assert!(TimingLayer::builder().max_label_values(1).build().is_ok());
    }

    #[test]
    fn new_is_the_default_build() {
        let new = format!("{:?}", TimingLayer::new());
        let built = format!("{:?}", TimingLayer::builder().build().unwrap());
        assert_eq!(new, built);
        assert!(TimingLayer::new().handle().snapshot().routes.is_empty());
    }
}
