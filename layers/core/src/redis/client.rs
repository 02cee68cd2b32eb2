//! Connection set-up, the shared connection, the deadline and the circuit breaker around every Redis call.

use super::{
    Admission, CircuitBreaker, Transition,
    deadline::{self, TimedOut},
};
use crate::ConfigError;
use futures_util::{
    FutureExt,
    future::{BoxFuture, Shared},
};
use redis::{
    AsyncConnectionConfig, Client, Cmd, Pipeline, RedisError, RedisFuture, Value,
    aio::{ConnectionLike, MultiplexedConnection},
    cluster::{ClusterClient, ClusterClientBuilder},
    cluster_async::ClusterConnection,
};
use std::{
    fmt,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// A connection to Redis, shared by every request of a store (clones are cheap handles on one connection).
///
/// A single server through one multiplexed connection, or a Redis Cluster through the `redis` crate's async
/// cluster connection (which routes each command by its keys' slot, follows `MOVED`/`ASK` redirects and refreshes
/// the topology). Stores are written against [`ConnectionLike`], not against one kind.
#[derive(Clone)]
#[non_exhaustive]
pub enum Connection {
    /// One server, one multiplexed connection: concurrent commands are pipelined on it.
    Single(MultiplexedConnection),
    /// A Redis Cluster (or Valkey cluster): one multiplexed connection per node, commands routed by slot.
    Cluster(ClusterConnection),
}

impl Connection {
    /// Whether this is a cluster connection.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Single(_) => f.write_str("Connection::Single"),
            Self::Cluster(_) => f.write_str("Connection::Cluster"),
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// Whether `rediss://` URLs are accepted ([`RedisClientBuilder::tls`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Tls {
    /// `rediss://` URLs connect over TLS.
    Enabled,
    /// `rediss://` URLs are refused with this reason (which cargo feature would enable them).
    Disabled(&'static str),
}

/// `rediss://` as this build can connect: over TLS with the `redis-tls` feature, refused naming it without.
const DEFAULT_TLS: Tls = if cfg!(feature = "redis-tls") {
    Tls::Enabled
} else {
    Tls::Disabled(
        "rediss:// (TLS) needs the `redis-tls` cargo feature (of tower-kit, tower-kit-ratelimit or tower-kit-cache)",
    )
};

/// How a store classifies the errors of its calls, for the connection and the breaker.
pub trait Failure {
    /// Whether the connection is unusable after this error (it is dropped; the next request connects again).
    fn breaks_connection(&self) -> bool;

    /// Whether the error counts as a failure of Redis for the circuit breaker.
    fn counts_for_breaker(&self) -> bool;
}

impl Failure for RedisError {
    fn breaks_connection(&self) -> bool {
        self.is_io_error()
            || self.is_timeout()
            || self.is_connection_dropped()
            || self.is_unrecoverable_error()
            || self.is_connection_refusal()
    }

    /// Only errors of the connection count: a server's error reply (`WRONGTYPE`) says Redis is there.
    fn counts_for_breaker(&self) -> bool {
        self.breaks_connection()
    }
}

/// Why a call through [`RedisClient::run`] failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum CallError<E> {
    /// The call itself failed.
    Call(E),
    /// Connecting failed.
    Connect(RedisError),
    /// No answer within the request's deadline (or none left: see [`TimedOut`]).
    TimedOut(TimedOut),
    /// The circuit breaker is open: Redis failed repeatedly, and this request did not wait for it.
    CircuitOpen,
    /// No tokio runtime to connect on.
    NoRuntime,
}

impl<E: fmt::Display> fmt::Display for CallError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Call(e) => e.fmt(f),
            Self::Connect(_) => f.write_str("could not connect to redis"),
            Self::TimedOut(t) => t.fmt(f),
            Self::CircuitOpen => {
                f.write_str("redis circuit breaker open: not waiting for a failing redis")
            }
            Self::NoRuntime => f.write_str("the redis store needs a tokio runtime"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for CallError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Call(e) => Some(e),
            Self::Connect(e) => Some(e),
            Self::TimedOut(t) => Some(t),
            _ => None,
        }
    }
}

type OnConnect =
    Arc<dyn Fn(Connection) -> BoxFuture<'static, Result<(), RedisError>> + Send + Sync>;
type OnTransition = Arc<dyn Fn(Transition) + Send + Sync>;
type Connecting = Shared<BoxFuture<'static, Result<(Connection, u64), ConnectFailed>>>;

#[derive(Clone)]
enum ConnectFailed {
    Redis(RedisError),
    Panicked,
}

enum Slot {
    Empty,
    /// A connection attempt runs in its own task (a slow connect outlives the requests that wait for it).
    Connecting(Connecting),
    Ready(Connection, u64),
}

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

/// The Redis plumbing of one store: the URL, one shared connection made on first use (in a task of its own, with
/// a connect timeout), one [`Deadline`](super::Deadline) per request around every call, and one
/// [`CircuitBreaker`]. Clones share all of it.
#[derive(Clone)]
pub struct RedisClient {
    inner: Arc<Inner>,
}

/// What the client connects to.
#[derive(Clone)]
// Held once per client, behind its `Arc`: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Target {
    Single(Client),
    Cluster(ClusterClient),
}

struct Inner {
    target: Target,
    config: AsyncConnectionConfig,
    timeout: Duration,
    breaker: CircuitBreaker,
    on_connect: Option<OnConnect>,
    on_transition: Option<OnTransition>,
    slot: Mutex<Slot>,
    generation: AtomicU64,
    /// The cluster's seed nodes as `host:port` (no credentials), for `Debug`.
    seeds: Vec<String>,
    /// The cluster's seed URLs (credentials included), for pub/sub clients.
    seed_urls: Vec<String>,
    /// Per-node circuit breakers of a cluster.
    nodes: Option<super::cluster::Nodes>,
}

impl fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("RedisClient");
        match &self.inner.target {
            Target::Single(client) => {
                d.field("addr", &client.get_connection_info().addr().to_string())
            }
            Target::Cluster(_) => d.field("cluster_seeds", &self.inner.seeds),
        };
        d.field("timeout", &self.inner.timeout)
            .field("circuit_open", &self.inner.breaker.is_open())
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

fn lock(slot: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
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

    /// Whether this client talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner.target, Target::Cluster(_))
    }

    /// The nodes of a cluster whose circuit breaker is open, as `host:port` (empty for a single server).
    pub fn open_nodes(&self) -> Vec<String> {
        self.inner
            .nodes
            .as_ref()
            .map(super::cluster::Nodes::open_nodes)
            .unwrap_or_default()
    }

    /// The primaries of a cluster as `host:port`, from the slot map read at connect and after failures (empty for
    /// a single server, or before the first connection). For commands that must visit every primary (`SCAN`).
    pub fn primaries(&self) -> Vec<String> {
        self.inner
            .nodes
            .as_ref()
            .map(super::cluster::Nodes::primaries)
            .unwrap_or_default()
    }

    /// The timeout of one request's Redis calls together.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// The circuit breaker.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.inner.breaker
    }

    /// The underlying `redis::Client` of a single server (for a pub/sub connection to the same server); `None`
    /// for a cluster ([`cluster_client`](Self::cluster_client)).
    pub fn client(&self) -> Option<&Client> {
        match &self.inner.target {
            Target::Single(client) => Some(client),
            Target::Cluster(_) => None,
        }
    }

    /// Plain clients for pub/sub: the server's, or one per seed node of a cluster (classic `PUBLISH` reaches the
    /// subscribers of every node of a cluster, so a subscriber may use any node; try the next when one fails).
    pub fn pubsub_clients(&self) -> Vec<Client> {
        match &self.inner.target {
            Target::Single(client) => vec![client.clone()],
            Target::Cluster(_) => self
                .inner
                .seed_urls
                .iter()
                .filter_map(|url| Client::open(url.as_str()).ok())
                .collect(),
        }
    }

    /// The underlying `redis::cluster::ClusterClient` of a cluster; `None` for a single server.
    pub fn cluster_client(&self) -> Option<&ClusterClient> {
        match &self.inner.target {
            Target::Single(_) => None,
            Target::Cluster(client) => Some(client),
        }
    }

    /// Runs one call on the shared connection (connecting first if needed), within the current request's
    /// [`Deadline`](super::Deadline) and through the breaker: a rejected request fails at once with
    /// [`CallError::CircuitOpen`]; a timeout, a connection failure or an error that
    /// [counts](Failure::counts_for_breaker) is a failure for the breaker, an answer a success.
    pub async fn run<T, E: Failure>(
        &self,
        call: impl AsyncFnOnce(&mut Connection) -> Result<T, E>,
    ) -> Result<T, CallError<E>> {
        self.run_with(&self.inner.breaker, None, call).await
    }

    /// As [`run`](Self::run), for a call whose keys all live in the slot of `key` (one hash tag): on a cluster it
    /// goes through the breaker of the node serving that slot, so a failing node fails only the keys in its slots
    /// (the store-wide breaker until the slot map is known). On a single server, the same as `run`.
    pub async fn run_keyed<T, E: Failure>(
        &self,
        key: &[u8],
        call: impl AsyncFnOnce(&mut Connection) -> Result<T, E>,
    ) -> Result<T, CallError<E>> {
        let node = self
            .inner
            .nodes
            .as_ref()
            .and_then(|nodes| nodes.breaker(super::cluster::slot(key)));
        match node {
            Some((_, breaker)) => self.run_with(&breaker, Some(()), call).await,
            None => self.run_with(&self.inner.breaker, Some(()), call).await,
        }
    }

    async fn run_with<T, E: Failure>(
        &self,
        breaker: &CircuitBreaker,
        keyed: Option<()>,
        call: impl AsyncFnOnce(&mut Connection) -> Result<T, E>,
    ) -> Result<T, CallError<E>> {
        let inner = &self.inner;
        let now = Instant::now();
        if inner.nodes.as_ref().is_some_and(|n| n.refresh_due(now)) {
            self.refresh_slots();
        }
        if breaker.admit(now) == Admission::Reject {
            return Err(CallError::CircuitOpen);
        }
        let mut generation = None;
        let attempt = async {
            let (mut connection, g) = self.connection().await?;
            generation = Some(g);
            call(&mut connection).await.map_err(CallError::Call)
        };
        let result = match deadline::run(inner.timeout, attempt).await {
            Ok(result) => result,
            Err(timed_out) => Err(CallError::TimedOut(timed_out)),
        };
        let (breaks, counts) = match &result {
            Ok(_) => (false, false),
            Err(CallError::Call(e)) => (e.breaks_connection(), e.counts_for_breaker()),
            Err(CallError::Connect(_)) => (false, true),
            // A call that did not wait says nothing new about Redis.
            Err(CallError::TimedOut(TimedOut::Spent)) => (false, false),
            // A connection that did not answer in time may never answer again (a half-open socket): make another.
            Err(CallError::TimedOut(_)) => (true, true),
            Err(CallError::CircuitOpen | CallError::NoRuntime) => (false, false),
        };
        // A cluster connection reconnects to each node by itself: dropping it would disturb the healthy nodes.
        if let (true, Some(g), false) = (breaks, generation, self.is_cluster()) {
            self.drop_connection(g);
        }
        let transition = match &result {
            Ok(_) => breaker.success(),
            Err(_) if counts => {
                if keyed.is_some() {
                    self.refresh_slots();
                }
                breaker.failure(Instant::now())
            }
            Err(_) => Transition::None,
        };
        if let (Transition::Opened | Transition::Closed, Some(f)) =
            (transition, &inner.on_transition)
        {
            f(transition);
        }
        result
    }

    /// Reads the cluster's slot map again in a task of its own (at most every 500 ms): after a failure (a node
    /// may have failed over), and every `topology_refresh` (slots may have moved to a new node).
    fn refresh_slots(&self) {
        let Some(nodes) = &self.inner.nodes else {
            return;
        };
        if !nodes.claim_refresh(Instant::now()) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let connection = match &*lock(&self.inner.slot) {
            Slot::Ready(Connection::Cluster(connection), _) => connection.clone(),
            _ => {
                nodes.release_refresh();
                return;
            }
        };
        let weak = Arc::downgrade(&self.inner);
        runtime.spawn(async move {
            let mut connection = connection;
            if let Some(inner) = weak.upgrade()
                && let Some(nodes) = &inner.nodes
            {
                let refresh = nodes.refresh(&mut connection);
                let _ =
                    tokio::time::timeout(inner.timeout.max(Duration::from_millis(500)), refresh)
                        .await;
                nodes.release_refresh();
            }
        });
    }

    /// The shared connection, connecting (in a task of its own) when there is none.
    async fn connection<E>(&self) -> Result<(Connection, u64), CallError<E>> {
        let connecting = {
            let mut slot = lock(&self.inner.slot);
            match &*slot {
                Slot::Ready(connection, generation) => {
                    return Ok((connection.clone(), *generation));
                }
                Slot::Connecting(connecting) => connecting.clone(),
                Slot::Empty => {
                    let connecting = self.connect().ok_or(CallError::NoRuntime)?;
                    *slot = Slot::Connecting(connecting.clone());
                    connecting
                }
            }
        };
        connecting.await.map_err(|e| match e {
            ConnectFailed::Redis(e) => CallError::Connect(e),
            ConnectFailed::Panicked => CallError::NoRuntime,
        })
    }

    fn connect(&self) -> Option<Connecting> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let generation = self.inner.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let target = self.inner.target.clone();
        let config = self.inner.config.clone();
        let on_connect = self.inner.on_connect.clone();
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let task = runtime.spawn(async move {
            let result = async {
                let connection = match target {
                    Target::Single(client) => Connection::Single(
                        client
                            .get_multiplexed_async_connection_with_config(&config)
                            .await?,
                    ),
                    Target::Cluster(client) => {
                        let mut connection = client.get_async_connection().await?;
                        if let Some(inner) = weak.upgrade()
                            && let Some(nodes) = &inner.nodes
                            && nodes.claim_refresh(Instant::now())
                        {
                            nodes.refresh(&mut connection).await;
                            nodes.release_refresh();
                        }
                        Connection::Cluster(connection)
                    }
                };
                if let Some(on_connect) = on_connect {
                    on_connect(connection.clone()).await?;
                }
                Ok::<_, RedisError>(connection)
            }
            .await;
            if let Some(inner) = weak.upgrade() {
                let mut slot = lock(&inner.slot);
                if matches!(&*slot, Slot::Connecting(_)) {
                    *slot = match &result {
                        Ok(connection) => Slot::Ready(connection.clone(), generation),
                        Err(_) => Slot::Empty,
                    };
                }
            }
            result
                .map(|connection| (connection, generation))
                .map_err(ConnectFailed::Redis)
        });
        Some(
            async move {
                match task.await {
                    Ok(result) => result,
                    Err(_) => Err(ConnectFailed::Panicked),
                }
            }
            .boxed()
            .shared(),
        )
    }

    /// Forgets a connection that failed, so the next request connects again (unless another already did).
    fn drop_connection(&self, generation: u64) {
        let mut slot = lock(&self.inner.slot);
        if matches!(&*slot, Slot::Ready(_, g) if *g == generation) {
            *slot = Slot::Empty;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_name_the_field() {
        let field = |b: RedisClientBuilder| b.build().unwrap_err().field();
        assert_eq!(field(RedisClient::builder("http://x")), "url");
        assert_eq!(field(RedisClient::builder("redis://h:notaport")), "url");
        assert_eq!(
            field(RedisClient::builder("redis://h").timeout(Duration::ZERO)),
            "timeout"
        );
        assert_eq!(
            field(RedisClient::builder("redis://h").connect_timeout(Duration::ZERO)),
            "connect_timeout"
        );
        assert_eq!(
            field(RedisClient::builder("redis://h").failure_threshold(0)),
            "failure_threshold"
        );
        assert_eq!(
            field(
                RedisClient::cluster_builder(["redis://h:7000"])
                    .topology_refresh(Duration::from_millis(100))
            ),
            "topology_refresh"
        );
        let e = RedisClient::builder("rediss://h")
            .tls(Tls::Disabled("needs the tls feature"))
            .build()
            .unwrap_err();
        assert_eq!(e.reason(), "needs the tls feature");
        // By default `rediss://` follows the `redis-tls` feature: accepted with it, refused naming it without.
        let default = RedisClient::builder("rediss://h").build();
        if cfg!(feature = "redis-tls") {
            assert!(default.is_ok());
        } else {
            let e = default.unwrap_err();
            assert_eq!(e.field(), "url");
            assert!(e.reason().contains("`redis-tls`"), "{}", e.reason());
        }
        // A password never appears in an error or in Debug.
        let e = RedisClient::builder("redis://user:hunter2@h:notaport")
            .build()
            .unwrap_err();
        assert!(!e.to_string().contains("hunter2"));
        let ok = RedisClient::builder("redis://user:secret@127.0.0.1:1/2")
            .build()
            .unwrap();
        assert!(!format!("{ok:?}").contains("secret"));
    }

    #[tokio::test]
    async fn an_unreachable_server_opens_the_breaker_then_fails_at_once() {
        // Port 1 on localhost: connections are refused at once.
        let client = RedisClient::builder("redis://127.0.0.1:1/")
            .timeout(Duration::from_secs(5))
            .failure_threshold(2)
            .retry_interval(Duration::from_secs(60))
            .build()
            .unwrap();
        let ping = async |c: &mut Connection| redis::cmd("PING").query_async::<String>(c).await;
        for _ in 0..2 {
            assert!(matches!(
                client.run(ping).await,
                Err(CallError::Connect(_) | CallError::TimedOut(_))
            ));
        }
        assert!(client.breaker().is_open());
        assert!(matches!(
            client.run(ping).await,
            Err(CallError::CircuitOpen)
        ));
    }
}
