//! What every Redis store's public surface shares, written once: the connection setters of its builder and the
//! constructors and accessors of the store. A store builder holds a [`RedisClientBuilder`](super::RedisClientBuilder)
//! and a store holds a [`RedisClient`](super::RedisClient); these macros generate the methods that delegate to them,
//! with their documentation, so the cache's and the rate limiter's stores speak one vocabulary.

/// Generates, inside an `impl` block of a Redis store's builder, the connection setters `timeout`,
/// `connect_timeout`, `failure_threshold` and `retry_interval`, each delegating to the builder's
/// [`RedisClientBuilder`](crate::redis::RedisClientBuilder) field (`$redis`).
///
/// `$on_timeout` ends the documentation of `timeout`: what the store's user sees when Redis does not answer in
/// time.
///
/// ```
/// use tower_kit_core::redis::{RedisClient, RedisClientBuilder};
///
/// /// A store builder.
/// pub struct MyStoreBuilder {
///     redis: RedisClientBuilder,
/// }
///
/// impl MyStoreBuilder {
///     tower_kit_core::redis_builder_setters!(redis, "The request then goes on without Redis.");
/// }
///
/// let builder = MyStoreBuilder { redis: RedisClient::builder("redis://127.0.0.1/") }
///     .timeout(std::time::Duration::ZERO);
/// assert_eq!(builder.redis.build().unwrap_err().field(), "timeout");
/// ```
#[macro_export]
macro_rules! redis_builder_setters {
    ($redis:ident, $on_timeout:literal) => {
        #[doc = concat!(
            "The longest one request waits for Redis, across all of its Redis calls and connecting included ",
            "(default 100 ms). A call that finds the time spent fails at once. ",
            $on_timeout
        )]
        pub fn timeout(mut self, timeout: ::std::time::Duration) -> Self {
            self.$redis = self.$redis.timeout(timeout);
            self
        }

        /// The longest one connection attempt may take (default 1 s). It runs in a task of its own, so it may
        /// outlast the requests that wait for it (which give up after [`timeout`](Self::timeout)).
        pub fn connect_timeout(mut self, timeout: ::std::time::Duration) -> Self {
            self.$redis = self.$redis.connect_timeout(timeout);
            self
        }

        /// Consecutive failures that open the circuit breaker (default 3; at least 1). While it is open, requests
        /// fail at once instead of waiting for Redis. On a cluster each node has its own breaker.
        pub fn failure_threshold(mut self, failures: u32) -> Self {
            self.$redis = self.$redis.failure_threshold(failures);
            self
        }

        /// While the circuit breaker is open, how often one request probes Redis (default 1 s); the first success
        /// closes it again, with no restart.
        pub fn retry_interval(mut self, interval: ::std::time::Duration) -> Self {
            self.$redis = self.$redis.retry_interval(interval);
            self
        }

        /// On a Redis Cluster, how often the slot map is read again while every call succeeds (default 10 s), so
        /// that nodes added or slots moved are found without waiting for a failure. A failure reads it at once.
        pub fn topology_refresh(mut self, interval: ::std::time::Duration) -> Self {
            self.$redis = self.$redis.topology_refresh(interval);
            self
        }
    };
}

/// Generates, inside the `impl` block of a Redis store, its constructors (`new`, `builder`, `cluster`,
/// `cluster_builder`) and its connection accessors (`is_cluster`, `open_nodes`, `breaker`, `timeout`).
///
/// `$builder` is the store's builder type, which must have a function `from_redis(RedisClientBuilder) -> Self`
/// (the store's own defaults) and a `build(self) -> Result<Self, ConfigError>`; `self.$($redis).+` is the store's
/// [`RedisClient`](crate::redis::RedisClient).
///
/// ```
/// use tower_kit_core::{ConfigError, redis::{RedisClient, RedisClientBuilder}};
///
/// /// A store.
/// pub struct MyStore {
///     redis: RedisClient,
/// }
///
/// /// Its builder.
/// pub struct MyStoreBuilder {
///     redis: RedisClientBuilder,
/// }
///
/// impl MyStoreBuilder {
///     fn from_redis(redis: RedisClientBuilder) -> Self {
///         Self { redis }
///     }
///
///     /// Makes the store.
///     pub fn build(self) -> Result<MyStore, ConfigError> {
///         Ok(MyStore { redis: self.redis.build()? })
///     }
/// }
///
/// impl MyStore {
///     tower_kit_core::redis_store_constructors!(MyStoreBuilder, redis);
/// }
///
/// let store = MyStore::cluster(["redis://127.0.0.1:7000"]).unwrap();
/// assert!(store.is_cluster());
/// assert!(store.open_nodes().is_empty());
/// assert!(MyStore::new("http://x").is_err());
/// ```
#[macro_export]
macro_rules! redis_store_constructors {
    ($builder:ty, $($redis:ident).+) => {
        /// A store on `url` (`redis://[user:password@]host[:port][/db]`; `rediss://` for TLS where the crate's
        /// TLS feature is on) with the defaults. Nothing is connected yet: the first request connects.
        pub fn new(url: &str) -> ::std::result::Result<Self, $crate::ConfigError> {
            Self::builder(url).build()
        }

        /// A builder on `url`: the store's settings, timeouts and circuit breaker.
        pub fn builder(url: impl ::std::convert::Into<::std::string::String>) -> $builder {
            <$builder>::from_redis($crate::redis::RedisClient::builder(url))
        }

        /// A store on a Redis Cluster (or a Valkey cluster) given some of its nodes, with the defaults: see
        /// [`cluster_builder`](Self::cluster_builder).
        pub fn cluster<S: ::std::convert::Into<::std::string::String>>(
            nodes: impl ::std::iter::IntoIterator<Item = S>,
        ) -> ::std::result::Result<Self, $crate::ConfigError> {
            Self::cluster_builder(nodes).build()
        }

        /// A builder on a Redis Cluster (or a Valkey cluster), given some of its nodes (`redis://host:port`; one
        /// must answer when the first request connects, the others are discovered). Every call touches the keys
        /// of one slot (one hash tag), so it is one command on one shard, through the circuit breaker of the node
        /// serving that slot: a failed primary only fails the keys in its slots. `MOVED`/`ASK` redirects are
        /// followed, and the slot map is read again after a failure and every
        /// [`topology_refresh`](tower_kit_core::redis::RedisClientBuilder::topology_refresh).
        pub fn cluster_builder<S: ::std::convert::Into<::std::string::String>>(
            nodes: impl ::std::iter::IntoIterator<Item = S>,
        ) -> $builder {
            <$builder>::from_redis($crate::redis::RedisClient::cluster_builder(nodes))
        }

        /// Whether the store is on a Redis Cluster.
        pub fn is_cluster(&self) -> bool {
            self.$($redis).+.is_cluster()
        }

        /// The cluster nodes whose circuit breaker is open, as `host:port` (empty on a single server).
        pub fn open_nodes(&self) -> ::std::vec::Vec<::std::string::String> {
            self.$($redis).+.open_nodes()
        }

        /// The store-wide circuit breaker ([`is_open`](tower_kit_core::redis::CircuitBreaker::is_open): Redis
        /// failed repeatedly, and requests do not wait for it). On a cluster, see also
        /// [`open_nodes`](Self::open_nodes).
        pub fn breaker(&self) -> &$crate::redis::CircuitBreaker {
            self.$($redis).+.breaker()
        }

        /// The timeout of one request's Redis calls together.
        pub fn timeout(&self) -> ::std::time::Duration {
            self.$($redis).+.timeout()
        }
    };
}
