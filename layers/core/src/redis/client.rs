//! The shared connection (made on first use), the deadline and the circuit breaker around every Redis call.

use super::{
    Admission, CircuitBreaker, Transition,
    connection::{CallError, Connection, Failure},
    deadline::{self, TimedOut},
};
use futures_util::{
    FutureExt,
    future::{BoxFuture, Shared},
};
use redis::{AsyncConnectionConfig, Client, RedisError, cluster::ClusterClient};
use std::{
    fmt,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

pub(super) type OnConnect =
    Arc<dyn Fn(Connection) -> BoxFuture<'static, Result<(), RedisError>> + Send + Sync>;
pub(super) type OnTransition = Arc<dyn Fn(Transition) + Send + Sync>;
pub(super) type Connecting = Shared<BoxFuture<'static, Result<(Connection, u64), ConnectFailed>>>;

#[derive(Clone)]
pub(super) enum ConnectFailed {
    Redis(RedisError),
    Panicked,
}

pub(super) enum Slot {
    Empty,
    /// A connection attempt runs in its own task (a slow connect outlives the requests that wait for it).
    Connecting(Connecting),
    Ready(Connection, u64),
}

/// The Redis plumbing of one store: the URL, one shared connection made on first use (in a task of its own, with
/// a connect timeout), one [`Deadline`](super::Deadline) per request around every call, and one
/// [`CircuitBreaker`]. Clones share all of it.
#[derive(Clone)]
pub struct RedisClient {
    pub(super) inner: Arc<Inner>,
}

/// What the client connects to.
#[derive(Clone)]
// Held once per client, behind its `Arc`: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub(super) enum Target {
    Single(Client),
    Cluster(ClusterClient),
}

pub(super) struct Inner {
    pub(super) target: Target,
    pub(super) config: AsyncConnectionConfig,
    pub(super) timeout: Duration,
    pub(super) breaker: CircuitBreaker,
    pub(super) on_connect: Option<OnConnect>,
    pub(super) on_transition: Option<OnTransition>,
    pub(super) slot: Mutex<Slot>,
    pub(super) generation: AtomicU64,
    /// The cluster's seed nodes as `host:port` (no credentials), for `Debug`.
    pub(super) seeds: Vec<String>,
    /// The cluster's seed URLs (credentials included), for pub/sub clients.
    pub(super) seed_urls: Vec<String>,
    /// Per-node circuit breakers of a cluster.
    pub(super) nodes: Option<super::cluster::Nodes>,
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

fn lock(slot: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RedisClient {
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
    use crate::redis::{RedisClientBuilder, Tls};

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
