use std::time::Duration;
use tower_kit_core::ConfigError;

/// How [`serve`](super::serve) treats connections: timeouts, the connection cap, HTTP/2 settings and the drain
/// deadline.
///
/// [`ServeConfig::default()`] holds the defaults; [`ServeConfig::builder()`] changes them and checks the values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    pub(crate) header_read_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_connections: usize,
    pub(crate) listen_backlog: u32,
    pub(crate) http2_keep_alive_interval: Option<Duration>,
    pub(crate) http2_keep_alive_timeout: Duration,
    pub(crate) http2_max_concurrent_streams: u32,
    pub(crate) drain_timeout: Duration,
}

/// The default [`header_read_timeout`](ServeConfigBuilder::header_read_timeout): 10 s.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The default [`idle_timeout`](ServeConfigBuilder::idle_timeout): 60 s.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The default [`listen_backlog`](ServeConfigBuilder::listen_backlog): 1024.
pub const DEFAULT_LISTEN_BACKLOG: u32 = 1024;
/// The default [`http2_keep_alive_interval`](ServeConfigBuilder::http2_keep_alive_interval): 20 s.
pub const DEFAULT_HTTP2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// The default [`http2_keep_alive_timeout`](ServeConfigBuilder::http2_keep_alive_timeout): 20 s.
pub const DEFAULT_HTTP2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// The default [`http2_max_concurrent_streams`](ServeConfigBuilder::http2_max_concurrent_streams): 100, the
/// smallest value RFC 9113 §6.5.2 recommends.
pub const DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// The default [`drain_timeout`](ServeConfigBuilder::drain_timeout): 10 s.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The process's soft limit on open file descriptors (`RLIMIT_NOFILE`), read with `getrlimit`; 1024 where it
/// cannot be read. `None` from `getrlimit` (unlimited) counts as `u32::MAX`.
pub fn open_files_limit() -> u64 {
    #[cfg(unix)]
    {
        rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::from(u32::MAX))
    }
    #[cfg(not(unix))]
    {
        1024
    }
}

/// The default connection cap for a given open-file limit: the limit less an eighth of it (at least 32), kept
/// for the listener, log files, database and Redis connections and outgoing client connections; at least 1.
///
/// 1024 gives 896; 65 536 gives 57 344. A proxy opens an upstream connection per busy client connection, so it
/// should set its cap at about half the limit.
pub fn default_max_connections_for(open_files_limit: u64) -> usize {
    let headroom = (open_files_limit / 8).max(32);
    let cap = open_files_limit.saturating_sub(headroom).max(1);
    usize::try_from(cap).unwrap_or(usize::MAX)
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: default_max_connections_for(open_files_limit()),
            listen_backlog: DEFAULT_LISTEN_BACKLOG,
            http2_keep_alive_interval: Some(DEFAULT_HTTP2_KEEP_ALIVE_INTERVAL),
            http2_keep_alive_timeout: DEFAULT_HTTP2_KEEP_ALIVE_TIMEOUT,
            http2_max_concurrent_streams: DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

impl ServeConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> ServeConfigBuilder {
        ServeConfigBuilder {
            config: Self::default(),
        }
    }

    /// The deadline for the first byte and the complete head of the first request of a connection, and for the
    /// head of each later HTTP/1 request counted from its first byte.
    pub fn header_read_timeout(&self) -> Duration {
        self.header_read_timeout
    }

    /// How long a connection with no request in flight is kept open.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// The most connections served at once.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// The listen backlog [`bind`](super::bind) asks for.
    pub fn listen_backlog(&self) -> u32 {
        self.listen_backlog
    }

    /// How often an HTTP/2 connection is pinged; `None` for never.
    pub fn http2_keep_alive_interval(&self) -> Option<Duration> {
        self.http2_keep_alive_interval
    }

    /// How long an HTTP/2 ping may go unanswered before the connection is closed.
    pub fn http2_keep_alive_timeout(&self) -> Duration {
        self.http2_keep_alive_timeout
    }

    /// The most concurrent streams an HTTP/2 client may open on one connection.
    pub fn http2_max_concurrent_streams(&self) -> u32 {
        self.http2_max_concurrent_streams
    }

    /// How long in-flight requests may run after shutdown begins.
    pub fn drain_timeout(&self) -> Duration {
        self.drain_timeout
    }
}

/// Builds a [`ServeConfig`]; [`build`](Self::build) checks every value and names the field it rejects.
#[derive(Debug, Clone)]
#[must_use]
pub struct ServeConfigBuilder {
    config: ServeConfig,
}

impl ServeConfigBuilder {
    /// The deadline for the first byte and the complete head of a connection's first request (counted from the
    /// accept), and for each later HTTP/1 request head (counted from its first byte). A connection that misses
    /// it is closed. Default 10 s; must be greater than zero.
    ///
    /// This also covers the protocol sniffing an HTTP/1 + HTTP/2 server does before hyper's own header timeout
    /// starts: a socket that never sends a byte is closed at this deadline.
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.config.header_read_timeout = timeout;
        self
    }

    /// How long a connection with no request in flight (after its first request) is kept open: an HTTP/1
    /// keep-alive connection waiting for its next request, or an HTTP/2 connection with no open stream. Default
    /// 60 s; must be greater than zero.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.idle_timeout = timeout;
        self
    }

    /// The most connections served at once. When a new connection arrives at the cap, the connection idle for
    /// longest (one with no request in flight, including one that has not sent its request yet) is closed to make
    /// room; when every connection has a request in flight, accepting pauses until one closes or goes idle.
    /// Default: the open-file limit less an eighth of it ([`default_max_connections_for`]); must be at least 1.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.config.max_connections = max;
        self
    }

    /// The listen backlog [`bind`](super::bind) asks for: how many connections the kernel queues before they are
    /// accepted. Linux caps it at `net.core.somaxconn` (4096 by default since 5.4). Default 1024; must be at
    /// least 1.
    pub fn listen_backlog(mut self, backlog: u32) -> Self {
        self.config.listen_backlog = backlog;
        self
    }

    /// How often an HTTP/2 connection is pinged, to find peers that went away without closing; `None` never
    /// pings. Default 20 s; must be greater than zero when set.
    pub fn http2_keep_alive_interval(mut self, interval: Option<Duration>) -> Self {
        self.config.http2_keep_alive_interval = interval;
        self
    }

    /// How long an HTTP/2 ping may go unanswered before the connection is closed. Default 20 s; must be greater
    /// than zero.
    pub fn http2_keep_alive_timeout(mut self, timeout: Duration) -> Self {
        self.config.http2_keep_alive_timeout = timeout;
        self
    }

    /// The most concurrent streams (requests) an HTTP/2 client may open on one connection
    /// (`SETTINGS_MAX_CONCURRENT_STREAMS`). Default 100; must be at least 1.
    pub fn http2_max_concurrent_streams(mut self, max: u32) -> Self {
        self.config.http2_max_concurrent_streams = max;
        self
    }

    /// How long in-flight requests may run once shutdown begins; connections still open then are closed.
    /// Default 10 s; zero closes them at once.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.config.drain_timeout = timeout;
        self
    }

    /// Checks every value.
    pub fn build(self) -> Result<ServeConfig, ConfigError> {
        let c = self.config;
        let positive = |field: &'static str, d: Duration| {
            if d.is_zero() {
                Err(ConfigError::new(
                    field,
                    format!("must be greater than zero (got {d:?})"),
                ))
            } else {
                Ok(())
            }
        };
        positive("header_read_timeout", c.header_read_timeout)?;
        positive("idle_timeout", c.idle_timeout)?;
        positive("http2_keep_alive_timeout", c.http2_keep_alive_timeout)?;
        if let Some(interval) = c.http2_keep_alive_interval {
            positive("http2_keep_alive_interval", interval)?;
        }
        if c.max_connections == 0 {
            return Err(ConfigError::new(
                "max_connections",
                "must be at least 1 (got 0)",
            ));
        }
        if c.listen_backlog == 0 {
            return Err(ConfigError::new(
                "listen_backlog",
                "must be at least 1 (got 0)",
            ));
        }
        if c.listen_backlog > i32::MAX as u32 {
            return Err(ConfigError::new(
                "listen_backlog",
                format!("must be at most {} (got {})", i32::MAX, c.listen_backlog),
            ));
        }
        if c.http2_max_concurrent_streams == 0 {
            return Err(ConfigError::new(
                "http2_max_concurrent_streams",
                "must be at least 1 (got 0)",
            ));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_sit_below_the_descriptor_limit() {
        let c = ServeConfig::builder().build().unwrap();
        assert_eq!(c, ServeConfig::default());
        assert!(c.header_read_timeout() <= Duration::from_secs(30));
        assert!((c.max_connections() as u64) < open_files_limit());
        assert_eq!(default_max_connections_for(1024), 896);
        assert_eq!(default_max_connections_for(65_536), 57_344);
        assert_eq!(default_max_connections_for(100), 68);
        assert_eq!(default_max_connections_for(10), 1);
    }

    #[test]
    fn bad_values_name_the_field() {
        let field = |b: ServeConfigBuilder| b.build().unwrap_err().field();
        let b = ServeConfig::builder;
        assert_eq!(
            field(b().header_read_timeout(Duration::ZERO)),
            "header_read_timeout"
        );
        assert_eq!(field(b().idle_timeout(Duration::ZERO)), "idle_timeout");
        assert_eq!(field(b().max_connections(0)), "max_connections");
        assert_eq!(field(b().listen_backlog(0)), "listen_backlog");
        assert_eq!(field(b().listen_backlog(u32::MAX)), "listen_backlog");
        assert_eq!(
            field(b().http2_max_concurrent_streams(0)),
            "http2_max_concurrent_streams"
        );
        assert_eq!(
            field(b().http2_keep_alive_interval(Some(Duration::ZERO))),
            "http2_keep_alive_interval"
        );
        assert_eq!(
            field(b().http2_keep_alive_timeout(Duration::ZERO)),
            "http2_keep_alive_timeout"
        );
        assert!(b().drain_timeout(Duration::ZERO).build().is_ok());
        assert!(b().http2_keep_alive_interval(None).build().is_ok());
    }
}
