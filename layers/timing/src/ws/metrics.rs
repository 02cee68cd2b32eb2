//! [`WebSocketMetrics`]: the configuration and shared state of WebSocket metering, its builder, and the in-process
//! statistics handle.

use super::names;
use super::socket::{Connection, MeteredSocket};
use serde::Serialize;
use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicI64, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};
use tower_kit_core::ConfigError;

/// Default cap on distinct route label values (then [`OTHER_ROUTE`](crate::names::OTHER_ROUTE)).
pub const DEFAULT_MAX_ROUTES: usize = 100;

pub(crate) struct Config {
    pub(crate) ping_interval: Option<Duration>,
    pub(crate) idle_timeout: Option<Duration>,
    max_routes: usize,
}

/// Meters WebSocket connections: wrap each socket with [`wrap`](Self::wrap).
///
/// Cheap to clone; every clone, every wrapped socket and every [`WebSocketHandle`] share one set of statistics.
/// Build it once (next to your router) and clone it into the upgrade handler.
#[derive(Clone)]
#[must_use]
pub struct WebSocketMetrics {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) config: Config,
    routes: Mutex<HashMap<Arc<str>, Arc<RouteCounters>>>,
    since: Mutex<(SystemTime, Instant)>,
}

impl std::fmt::Debug for WebSocketMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocketMetrics")
            .field("ping_interval", &self.shared.config.ping_interval)
            .field("idle_timeout", &self.shared.config.idle_timeout)
            .field("max_routes", &self.shared.config.max_routes)
            .finish_non_exhaustive()
    }
}

impl Default for WebSocketMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl WebSocketMetrics {
    /// Metrics only: no keep-alive pings, no idle timeout, at most [`DEFAULT_MAX_ROUTES`] route values.
    pub fn new() -> Self {
        Self::from_config(Config {
            ping_interval: None,
            idle_timeout: None,
            max_routes: DEFAULT_MAX_ROUTES,
        })
    }

    /// A builder for keep-alive pings, an idle timeout and the route cap.
    pub fn builder() -> WebSocketMetricsBuilder {
        WebSocketMetricsBuilder {
            ping_interval: None,
            idle_timeout: None,
            max_routes: DEFAULT_MAX_ROUTES,
        }
    }

    fn from_config(config: Config) -> Self {
        Self {
            shared: Arc::new(Shared {
                config,
                routes: Mutex::new(HashMap::new()),
                since: Mutex::new((SystemTime::now(), Instant::now())),
            }),
        }
    }

    /// The in-process statistics, shared with every socket this value wraps.
    pub fn handle(&self) -> WebSocketHandle {
        WebSocketHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Wraps an upgraded socket opened on `route` (a route template such as `/ws`, e.g. axum's `MatchedPath`,
    /// never the raw path). The connection counts as open from now until the wrapper is dropped.
    ///
    /// Registers the connection's metric handles once, so sending and receiving then cost a few atomic adds and no
    /// allocation.
    pub fn wrap<S>(&self, socket: S, route: &str) -> MeteredSocket<S> {
        let counters = self.route(route);
        MeteredSocket::new(socket, Connection::open(counters), &self.shared.config)
    }

    fn route(&self, route: &str) -> Arc<RouteCounters> {
        let mut routes = self
            .shared
            .routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = routes.get(route) {
            return Arc::clone(c);
        }
        let name: Arc<str> = if routes.len() < self.shared.config.max_routes {
            Arc::from(route)
        } else {
            metrics::counter!(crate::names::LABEL_OVERFLOW, crate::names::LABEL => names::ROUTE)
                .increment(1);
            if let Some(c) = routes.get(crate::names::OTHER_ROUTE) {
                return Arc::clone(c);
            }
            Arc::from(crate::names::OTHER_ROUTE)
        };
        let counters = Arc::new(RouteCounters::new(Arc::clone(&name)));
        routes.insert(name, Arc::clone(&counters));
        counters
    }
}

/// Builds a [`WebSocketMetrics`]; [`build`](Self::build) checks the settings.
#[derive(Debug, Clone)]
#[must_use]
pub struct WebSocketMetricsBuilder {
    ping_interval: Option<Duration>,
    idle_timeout: Option<Duration>,
    max_routes: usize,
}

impl WebSocketMetricsBuilder {
    /// Send a ping when this long has passed since the last one (default: none). Pings are sent while the socket is
    /// being read (its `Stream` side polled), as every handler with a receive loop does.
    pub fn ping_interval(mut self, every: Option<Duration>) -> Self {
        self.ping_interval = every;
        self
    }

    /// Close the connection (code 1001, "idle timeout") when nothing (no message, ping or pong) was received for
    /// this long (default: none). With pings on, it must exceed the ping interval, so a live client's pong arrives
    /// in time.
    pub fn idle_timeout(mut self, after: Option<Duration>) -> Self {
        self.idle_timeout = after;
        self
    }

    /// The most distinct route label values (default [`DEFAULT_MAX_ROUTES`]); later routes are counted as
    /// `__other__`.
    pub fn max_routes(mut self, max: usize) -> Self {
        self.max_routes = max;
        self
    }

    /// Checks the settings.
    pub fn build(self) -> Result<WebSocketMetrics, ConfigError> {
        if self.ping_interval.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::new(
                "ping_interval",
                "must be greater than zero (got 0ns); use None for no pings",
            ));
        }
        if self.idle_timeout.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::new(
                "idle_timeout",
                "must be greater than zero (got 0ns); use None for no timeout",
            ));
        }
        if let (Some(ping), Some(idle)) = (self.ping_interval, self.idle_timeout)
            && idle <= ping
        {
            return Err(ConfigError::new(
                "idle_timeout",
                format!("must exceed ping_interval ({ping:?}) (got {idle:?})"),
            ));
        }
        if self.max_routes == 0 {
            return Err(ConfigError::new("max_routes", "must be at least 1 (got 0)"));
        }
        Ok(WebSocketMetrics::from_config(Config {
            ping_interval: self.ping_interval,
            idle_timeout: self.idle_timeout,
            max_routes: self.max_routes,
        }))
    }
}

/// The atomic counters of one route.
pub(crate) struct RouteCounters {
    pub(crate) route: Arc<str>,
    pub(crate) opened: AtomicU64,
    pub(crate) active: AtomicI64,
    pub(crate) closed: AtomicU64,
    pub(crate) messages_sent: AtomicU64,
    pub(crate) messages_received: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) send_errors: AtomicU64,
    pub(crate) close_codes: Mutex<BTreeMap<u16, u64>>,
}

impl RouteCounters {
    fn new(route: Arc<str>) -> Self {
        Self {
            route,
            opened: AtomicU64::new(0),
            active: AtomicI64::new(0),
            closed: AtomicU64::new(0),
            messages_sent: AtomicU64::new(0),
            messages_received: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            send_errors: AtomicU64::new(0),
            close_codes: Mutex::new(BTreeMap::new()),
        }
    }

    fn reset(&self) {
        for c in [
            &self.opened,
            &self.closed,
            &self.messages_sent,
            &self.messages_received,
            &self.bytes_sent,
            &self.bytes_received,
            &self.send_errors,
        ] {
            c.store(0, Relaxed);
        }
        self.close_codes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    fn snapshot(&self) -> WebSocketRouteStats {
        let avg = |bytes: u64, n: u64| if n == 0 { 0.0 } else { bytes as f64 / n as f64 };
        let (ms, mr) = (
            self.messages_sent.load(Relaxed),
            self.messages_received.load(Relaxed),
        );
        let (bs, br) = (
            self.bytes_sent.load(Relaxed),
            self.bytes_received.load(Relaxed),
        );
        WebSocketRouteStats {
            route: self.route.to_string(),
            active: self.active.load(Relaxed).max(0),
            total: self.opened.load(Relaxed),
            closed: self.closed.load(Relaxed),
            messages_sent: ms,
            messages_received: mr,
            bytes_sent: bs,
            bytes_received: br,
            avg_message_size_sent: avg(bs, ms),
            avg_message_size_received: avg(br, mr),
            send_errors: self.send_errors.load(Relaxed),
            close_codes: self
                .close_codes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }
}

/// WebSocket statistics of one route since the start or the last [`WebSocketHandle::reset`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebSocketRouteStats {
    /// The route label (`/ws`, `__other__`).
    pub route: String,
    /// Connections open now.
    pub active: i64,
    /// Connections opened.
    pub total: u64,
    /// Connections closed.
    pub closed: u64,
    /// Data messages (text and binary) sent to clients.
    pub messages_sent: u64,
    /// Data messages received from clients.
    pub messages_received: u64,
    /// Payload bytes of the data messages sent.
    pub bytes_sent: u64,
    /// Payload bytes of the data messages received.
    pub bytes_received: u64,
    /// Mean payload size of the messages sent, in bytes.
    pub avg_message_size_sent: f64,
    /// Mean payload size of the messages received, in bytes.
    pub avg_message_size_received: f64,
    /// Sends that failed.
    pub send_errors: u64,
    /// Closed connections by close code (1006: ended without a close frame).
    pub close_codes: BTreeMap<u16, u64>,
}

/// A snapshot of every WebSocket route seen; the same shape as the HTTP [`StatsSnapshot`](crate::StatsSnapshot).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebSocketSnapshot {
    /// When the counting started (built or last reset), in milliseconds since the Unix epoch.
    pub since_unix_ms: u64,
    /// Seconds since then.
    pub elapsed_seconds: f64,
    /// Connections open now on all routes.
    pub active: i64,
    /// One entry per route, sorted by route.
    pub routes: Vec<WebSocketRouteStats>,
}

impl WebSocketSnapshot {
    /// The entry of a route, if a socket was opened on it.
    pub fn get(&self, route: &str) -> Option<&WebSocketRouteStats> {
        self.routes.iter().find(|r| r.route == route)
    }
}

/// A handle on the WebSocket statistics; cheap to clone. Get it from [`WebSocketMetrics::handle`].
#[derive(Clone)]
pub struct WebSocketHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for WebSocketHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocketHandle").finish_non_exhaustive()
    }
}

impl WebSocketHandle {
    /// The statistics now.
    pub fn snapshot(&self) -> WebSocketSnapshot {
        let (wall, instant) = *self
            .shared
            .since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut routes: Vec<WebSocketRouteStats> = self
            .shared
            .routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|c| c.snapshot())
            .collect();
        routes.sort_by(|a, b| a.route.cmp(&b.route));
        WebSocketSnapshot {
            since_unix_ms: wall
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            elapsed_seconds: instant.elapsed().as_secs_f64(),
            active: routes.iter().map(|r| r.active).sum(),
            routes,
        }
    }

    /// Starts counting again from zero; open connections stay counted as active.
    pub fn reset(&self) {
        *self
            .shared
            .since
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = (SystemTime::now(), Instant::now());
        for c in self
            .shared
            .routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            c.reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_names_the_bad_field() {
        let e = WebSocketMetrics::builder()
            .ping_interval(Some(Duration::ZERO))
            .build()
            .unwrap_err();
        assert_eq!(e.field(), "ping_interval");
        let e = WebSocketMetrics::builder()
            .ping_interval(Some(Duration::from_secs(30)))
            .idle_timeout(Some(Duration::from_secs(10)))
            .build()
            .unwrap_err();
        assert_eq!(e.field(), "idle_timeout");
        let e = WebSocketMetrics::builder()
            .max_routes(0)
            .build()
            .unwrap_err();
        assert_eq!(e.field(), "max_routes");
        assert!(
            WebSocketMetrics::builder()
                .ping_interval(Some(Duration::from_secs(20)))
                .idle_timeout(Some(Duration::from_secs(60)))
                .build()
                .is_ok()
        );
    }

    #[test]
    fn routes_are_capped() {
        let m = WebSocketMetrics::builder().max_routes(2).build().unwrap();
        let a = m.route("/a");
        let b = m.route("/b");
        let c = m.route("/c");
        let d = m.route("/d");
        assert_eq!((&*a.route, &*b.route), ("/a", "/b"));
        assert_eq!(&*c.route, crate::names::OTHER_ROUTE);
        assert!(Arc::ptr_eq(&c, &d));
        assert!(Arc::ptr_eq(&a, &m.route("/a")));
    }
}
