//! How the demo serves connections: [`tower_kit::serve`] with deadlines for silent, slow and idle clients, a cap on
//! open connections below the open-file limit, HTTP/2 keep-alive pings and a stream limit, and the listen backlog.

use crate::config::parse_duration;
use std::{net::SocketAddr, time::Duration};
use tokio::net::TcpListener;
use tower_kit::{
    core::ConfigError,
    serve::{self, ServeConfig},
};

/// Connection flags.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "server_args")]
#[command(next_help_heading = "Connections")]
pub struct Args {
    /// Deadline for a new connection's first byte and complete request head, and for each later request head from
    /// its first byte; connections that miss it are closed (silent sockets, slowloris). E.g. `10s`, `500ms`.
    #[arg(long, env = "HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// How long a keep-alive connection with no request in flight stays open, e.g. `60s`.
    #[arg(long, env = "IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// The most connections served at once. At the cap a new connection closes the longest-idle one; when all are
    /// busy, accepting pauses until one frees. Default: the open-file limit (`ulimit -n`) less an eighth.
    #[arg(long, env = "MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Listen backlog: connections the kernel queues before they are accepted (capped by
    /// `net.core.somaxconn`).
    #[arg(long, env = "LISTEN_BACKLOG", default_value_t = serve::DEFAULT_LISTEN_BACKLOG)]
    pub listen_backlog: u32,

    /// How often HTTP/2 connections are pinged to find peers that went away, e.g. `20s`; `0` turns pings off.
    #[arg(long, env = "HTTP2_KEEP_ALIVE_INTERVAL", default_value = "20s", value_parser = parse_duration)]
    pub http2_keep_alive_interval: Duration,

    /// How long an HTTP/2 ping may go unanswered before the connection is closed, e.g. `20s`.
    #[arg(long, env = "HTTP2_KEEP_ALIVE_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub http2_keep_alive_timeout: Duration,

    /// The most concurrent requests (streams) one HTTP/2 connection may have open.
    #[arg(long, env = "HTTP2_MAX_CONCURRENT_STREAMS", default_value_t = serve::DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS)]
    pub http2_max_concurrent_streams: u32,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            header_read_timeout: serve::DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: serve::DEFAULT_IDLE_TIMEOUT,
            max_connections: None,
            listen_backlog: serve::DEFAULT_LISTEN_BACKLOG,
            http2_keep_alive_interval: serve::DEFAULT_HTTP2_KEEP_ALIVE_INTERVAL,
            http2_keep_alive_timeout: serve::DEFAULT_HTTP2_KEEP_ALIVE_TIMEOUT,
            http2_max_concurrent_streams: serve::DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS,
        }
    }
}

// ANCHOR: serve_config
impl Args {
    /// The serving configuration these flags and `drain_timeout` describe.
    pub fn serve_config(&self, drain_timeout: Duration) -> Result<ServeConfig, ConfigError> {
        let mut builder = ServeConfig::builder()
            .header_read_timeout(self.header_read_timeout)
            .idle_timeout(self.idle_timeout)
            .listen_backlog(self.listen_backlog)
            .http2_keep_alive_interval(
                (!self.http2_keep_alive_interval.is_zero())
                    .then_some(self.http2_keep_alive_interval),
            )
            .http2_keep_alive_timeout(self.http2_keep_alive_timeout)
            .http2_max_concurrent_streams(self.http2_max_concurrent_streams)
            .drain_timeout(drain_timeout);
        if let Some(max) = self.max_connections {
            builder = builder.max_connections(max);
        }
        builder.build()
    }
}
// ANCHOR_END: serve_config

/// Binds `addr` with the `--listen-backlog` backlog.
pub fn bind(addr: SocketAddr, args: &Args) -> std::io::Result<TcpListener> {
    serve::bind(addr, args.listen_backlog)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    #[test]
    fn flags_reach_the_serving_configuration() {
        let c = Config::load_from([
            "demo-server",
            "--header-read-timeout",
            "500ms",
            "--idle-timeout",
            "2s",
            "--max-connections",
            "300",
            "--listen-backlog",
            "4096",
            "--http2-keep-alive-interval",
            "0",
            "--http2-max-concurrent-streams",
            "50",
        ])
        .unwrap();
        let s = c.server.serve_config(c.drain_timeout).unwrap();
        assert_eq!(s.header_read_timeout(), Duration::from_millis(500));
        assert_eq!(s.idle_timeout(), Duration::from_secs(2));
        assert_eq!(s.max_connections(), 300);
        assert_eq!(s.listen_backlog(), 4096);
        assert_eq!(s.http2_keep_alive_interval(), None);
        assert_eq!(s.http2_max_concurrent_streams(), 50);
        assert_eq!(s.drain_timeout(), c.drain_timeout);

        let defaults = Config::load_from(["demo-server"]).unwrap();
        let s = defaults
            .server
            .serve_config(defaults.drain_timeout)
            .unwrap();
        assert_eq!(s, ServeConfig::default());
        assert_eq!(
            Args::default()
                .serve_config(Duration::from_secs(10))
                .unwrap(),
            s
        );
    }

    #[test]
    fn bad_values_name_the_setting() {
        let c = Config::load_from(["demo-server", "--max-connections", "0"]).unwrap();
        let e = c.server.serve_config(c.drain_timeout).unwrap_err();
        assert_eq!(e.field(), "max_connections");
        let c = Config::load_from(["demo-server", "--idle-timeout", "0s"]).unwrap();
        let e = c.server.serve_config(c.drain_timeout).unwrap_err();
        assert_eq!(e.field(), "idle_timeout");
    }
}
