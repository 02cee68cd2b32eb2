//! [`RedisClientBuilder`]: URL checks, timeouts, breaker settings, the cluster's seed nodes.

use super::{
    CircuitBreaker, Transition,
    client::{Inner, OnConnect, OnTransition, Slot, Target},
    connection::{Connection, DEFAULT_TLS, Tls},
};
use crate::ConfigError;
use futures_util::future::BoxFuture;
use redis::{AsyncConnectionConfig, Client, RedisError, cluster::ClusterClientBuilder};
use std::{
    fmt,
    sync::{Arc, Mutex, atomic::AtomicU64},
    time::Duration,
};

use super::RedisClient;

/// Builds a [`RedisClient`]: see [`RedisClient::builder`].
#[derive(Clone)]
#[must_use]
pub struct RedisClientBuilder {
    url: String,
    /// Seed nodes of a cluster (empty: `url` names a single server).
    cluster_nodes: Vec<String>,
    timeout: Duration,
    connect_timeout: Duration,
    failure_threshold: u32,
    retry_interval: Duration,
    topology_refresh: Duration,
    tls: Tls,
    on_connect: Option<OnConnect>,
    on_transition: Option<OnTransition>,
}

impl fmt::Debug for RedisClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisClientBuilder")
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("failure_threshold", &self.failure_threshold)
            .field("retry_interval", &self.retry_interval)
            .field("cluster", &self.is_cluster())
            .finish_non_exhaustive()
    }
}

impl RedisClientBuilder {
    /// The longest one request waits for Redis, across all of its calls, connecting included.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The longest one connection attempt may take. It runs in its own task, so it may outlast the requests that
    /// wait for it (which give up at their deadline).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Consecutive failures that open the circuit breaker (at least 1).
    pub fn failure_threshold(mut self, failures: u32) -> Self {
        self.failure_threshold = failures;
        self
    }

    /// While the breaker is open, how often one request probes Redis.
    pub fn retry_interval(mut self, interval: Duration) -> Self {
        self.retry_interval = interval;
        self
    }

    /// On a Redis Cluster, how often the slot map is read again while calls succeed (default 10 s; at least
    /// 500 ms, the least time between two reads). The `redis` crate follows `MOVED`/`ASK` by itself, but the
    /// client's own map (the per-node circuit breakers, the primaries a key-space walk visits) would otherwise
    /// change only after a failure: a primary added by a resharding would be left out of `SCAN` walks until then.
    /// The read runs in a task of its own, started by the first call after the interval.
    pub fn topology_refresh(mut self, interval: Duration) -> Self {
        self.topology_refresh = interval;
        self
    }

    /// Whether this builder is on a Redis Cluster ([`RedisClient::cluster_builder`]).
    pub fn is_cluster(&self) -> bool {
        !self.cluster_nodes.is_empty()
    }

    /// Whether `rediss://` URLs are accepted (default: [`Tls::Enabled`] with the `redis-tls` feature, otherwise
    /// [`Tls::Disabled`] naming it).
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = tls;
        self
    }

    /// Runs on every new connection before any request uses it (loading a script, say); a failure fails the
    /// connection attempt.
    pub fn on_connect(
        mut self,
        f: impl Fn(Connection) -> BoxFuture<'static, Result<(), RedisError>> + Send + Sync + 'static,
    ) -> Self {
        self.on_connect = Some(Arc::new(f));
        self
    }

    /// Called when the circuit breaker opens or closes (for a log line and a gauge).
    pub fn on_transition(mut self, f: impl Fn(Transition) + Send + Sync + 'static) -> Self {
        self.on_transition = Some(Arc::new(f));
        self
    }

    /// Checks the settings (the error names the field, and never repeats the URL, which may hold a password) and
    /// makes the client. No I/O: the first request connects.
    pub fn build(self) -> Result<RedisClient, ConfigError> {
        for (field, value) in [
            ("timeout", self.timeout),
            ("connect_timeout", self.connect_timeout),
            ("retry_interval", self.retry_interval),
        ] {
            if value.is_zero() {
                return Err(ConfigError::new(
                    field,
                    "must be greater than zero (got 0ns)",
                ));
            }
        }
        if self.topology_refresh < super::cluster::REFRESH_EVERY {
            return Err(ConfigError::new(
                "topology_refresh",
                format!(
                    "must be at least {:?} (got {:?})",
                    super::cluster::REFRESH_EVERY,
                    self.topology_refresh
                ),
            ));
        }
        if self.failure_threshold == 0 {
            return Err(ConfigError::new(
                "failure_threshold",
                "must be at least 1 (got 0)",
            ));
        }
        let cluster = !self.cluster_nodes.is_empty();
        let field = if cluster { "cluster_nodes" } else { "url" };
        let urls = if cluster {
            self.cluster_nodes.clone()
        } else {
            vec![self.url.clone()]
        };
        for url in &urls {
            check_scheme(field, url, self.tls)?;
        }
        let target = if cluster {
            let client = ClusterClientBuilder::new(urls.iter().map(String::as_str))
                .connection_timeout(self.connect_timeout)
                .response_timeout(self.timeout)
                .build()
                .map_err(|e| {
                    ConfigError::new(
                        field,
                        format!("not valid Redis Cluster seed URLs: {}", e.category()),
                    )
                })?;
            Target::Cluster(client)
        } else {
            Target::Single(Client::open(self.url.as_str()).map_err(|e| {
                ConfigError::new("url", format!("not a valid Redis URL: {}", e.category()))
            })?)
        };
        let seeds = if cluster {
            urls.iter().map(|u| host_port(u)).collect()
        } else {
            Vec::new()
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.timeout));
        Ok(RedisClient {
            inner: Arc::new(Inner {
                target,
                seeds,
                seed_urls: if cluster { urls } else { Vec::new() },
                nodes: cluster.then(|| {
                    super::cluster::Nodes::new(
                        self.failure_threshold,
                        self.retry_interval,
                        self.topology_refresh,
                    )
                }),
                config,
                timeout: self.timeout,
                breaker: CircuitBreaker::new(self.failure_threshold, self.retry_interval),
                on_connect: self.on_connect,
                on_transition: self.on_transition,
                slot: Mutex::new(Slot::Empty),
                generation: AtomicU64::new(0),
            }),
        })
    }
}

fn check_scheme(field: &'static str, url: &str, tls: Tls) -> Result<(), ConfigError> {
    match (url.split_once("://").map(|(s, _)| s), tls) {
        (Some("redis"), _) | (Some("rediss"), Tls::Enabled) => Ok(()),
        (Some("rediss"), Tls::Disabled(why)) => Err(ConfigError::new(field, why)),
        _ => Err(ConfigError::new(
            field,
            match tls {
                Tls::Enabled => "must start with redis:// or rediss://",
                Tls::Disabled(_) => "must start with redis://",
            },
        )),
    }
}

/// `host:port` of a URL, without credentials or path (for `Debug`).
fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split(['/', '?', '#'])
        .next()
        .unwrap_or_default()
        .to_owned()
}

impl RedisClient {
    /// A builder on `url` (`redis://[user:password@]host[:port][/db]`, `rediss://` for TLS), with the defaults
    /// of the stores: 100 ms timeout, 1 s connect timeout, breaker after 3 failures, probing every second.
    pub fn builder(url: impl Into<String>) -> RedisClientBuilder {
        RedisClientBuilder {
            url: url.into(),
            cluster_nodes: Vec::new(),
            timeout: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(1),
            failure_threshold: 3,
            retry_interval: Duration::from_secs(1),
            topology_refresh: Duration::from_secs(10),
            tls: DEFAULT_TLS,
            on_connect: None,
            on_transition: None,
        }
    }

    /// A builder on a Redis Cluster (or a Valkey cluster), given some of its nodes (`redis://host:port`; at least
    /// one must answer when the first request connects): the client discovers the others, routes each command to
    /// the node serving its keys' slot, follows `MOVED`/`ASK` redirects and topology changes, and keeps one
    /// circuit breaker per node ([`run_keyed`](Self::run_keyed)). Same defaults as [`builder`](Self::builder).
    pub fn cluster_builder<S: Into<String>>(
        nodes: impl IntoIterator<Item = S>,
    ) -> RedisClientBuilder {
        let mut builder = Self::builder(String::new());
        builder.cluster_nodes = nodes.into_iter().map(Into::into).collect();
        if builder.cluster_nodes.is_empty() {
            // An empty list is refused by `build`: keep it non-empty but invalid.
            builder.cluster_nodes.push(String::new());
        }
        builder
    }
}
