use super::{Lease, LeaseRelease, Store, StoreError, StoreUsage, codec};
use crate::entry::StoredValue;
use redis::{Client, FromRedisValue};
use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};
use tower_kit_core::{
    ConfigError,
    redis::{CallError, CircuitBreaker, Connection, Deadline, Failure, RedisClient},
};

const DEFAULT_PREFIX: &str = "tower-kit-cache:";
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_MAX_ENTRY_BYTES: usize = 8 << 20;
const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(1);
const SCAN_COUNT: usize = 500;

/// Counter: failed Redis round trips of the cache's Redis store, by `kind` (`timeout`, `connection`, `server`,
/// `unavailable`).
pub const REDIS_ERRORS: &str = "tower_kit.cache.redis.errors";
/// Counter: values read back from Redis that did not decode (garbage, truncated, another format version): misses.
pub const REDIS_UNDECODABLE: &str = "tower_kit.cache.redis.undecodable";

/// A [`Store`] in Redis (feature `redis`), shared by every server that points at it.
///
/// - **Layout**: the value of cache key `k` is the string `{prefix}v:{k}` in a versioned binary format (status,
///   headers, body, trailers, validators, timestamps, tags; see [`Entry::FORMAT_VERSION`](crate::Entry)), written
///   with `SET .. PX ttl`. A tag `t` is the set `{prefix}t:{t}` of the keys carrying it, with its own expiry (the
///   longest TTL of its members, so tag sets never grow forever). Freshness is decided by the cache from the times
///   inside the entry, so servers whose clocks drift apart still agree on an entry's age.
/// - **Tag guarantee**: each tag has a generation `{prefix}g:{t}` that [`remove_tag`](Store::remove_tag)
///   increments first; a value with tags records its tags' generations when written, and a read serves it only if
///   they are unchanged (one more round trip per hit on a tagged entry). So once `remove_tag` returns, no entry
///   stored earlier with that tag is served, by any server, even one the tag's set does not list.
/// - **Redis Cluster** ([`cluster_builder`](RedisStore::cluster_builder)): each operation on one key goes to the
///   shard of its slot, through that node's circuit breaker; prefix invalidation, `clear` and `usage` walk every
///   primary.
/// - **Bad values are misses**: a value that does not decode (garbage, truncated, written by another format version)
///   is read as a miss and counted in [`REDIS_UNDECODABLE`], never an error to a client.
/// - **Size cap**: a value whose encoding is larger than [`max_entry_bytes`](RedisStoreBuilder::max_entry_bytes)
///   is not written (the key's old value is removed).
/// - **Prefix invalidation** walks the key space with `SCAN MATCH` (glob characters in the prefix escaped), never
///   `KEYS`; so does [`usage`](Store::usage), which is O(keys): use it for dashboards, not per request.
/// - **Connection**: one multiplexed connection shared by every request, made on first use (in a task of its own)
///   with a connect timeout ([`tower_kit_core::redis::RedisClient`], shared with the rate limiter's Redis store).
/// - **One deadline per request**: all the Redis calls of one request (lookup, coalescing lease, write, `Vary`
///   record, invalidation) together wait at most [`timeout`](RedisStoreBuilder::timeout) (default 100 ms),
///   connecting included: the first call starts the clock, later calls get what is left, and a call with nothing
///   left fails at once, so the cache serves from L1 or the origin. Only time spent waiting for Redis counts (not
///   the origin's). Prefix invalidation and the tag index walk in steps: the first on the request's deadline,
///   each later one with a full timeout once Redis has answered.
/// - **Circuit breaker**: after [`failure_threshold`](RedisStoreBuilder::failure_threshold) consecutive failures
///   requests fail at once (the cache treats them as misses and goes to the origin); one request per
///   [`retry_interval`](RedisStoreBuilder::retry_interval) probes Redis, and the first success closes it again:
///   recovery needs no restart.
///
/// Clones share the connection. The store needs a tokio runtime.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    redis: RedisClient,
    prefix: String,
    max_entry_bytes: usize,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("redis", &self.inner.redis)
            .field("prefix", &self.inner.prefix)
            .field("max_entry_bytes", &self.inner.max_entry_bytes)
            .finish_non_exhaustive()
    }
}

/// Builds a [`RedisStore`]: see [`RedisStore::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RedisStoreBuilder {
    url: String,
    /// Seed nodes of a Redis Cluster (empty: `url` names one server).
    cluster_nodes: Vec<String>,
    prefix: String,
    timeout: Duration,
    connect_timeout: Duration,
    max_entry_bytes: usize,
    failure_threshold: u32,
    retry_interval: Duration,
}

impl RedisStore {
    /// A store on `url` (`redis://host:port/db`) with the defaults. Nothing is connected yet: the first request
    /// connects.
    pub fn new(url: &str) -> Result<Self, ConfigError> {
        Self::builder(url).build()
    }

    /// A builder on `url`: key prefix, timeouts, size cap, circuit breaker.
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.into(),
            cluster_nodes: Vec::new(),
            prefix: DEFAULT_PREFIX.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            retry_interval: DEFAULT_RETRY_INTERVAL,
        }
    }

    /// A store on a Redis Cluster (or a Valkey cluster) given some of its nodes, with the defaults: see
    /// [`cluster_builder`](Self::cluster_builder).
    pub fn cluster<S: Into<String>>(
        nodes: impl IntoIterator<Item = S>,
    ) -> Result<Self, ConfigError> {
        Self::cluster_builder(nodes).build()
    }

    /// A builder on a Redis Cluster, given some of its nodes (`redis://host:port`; one must answer when the first
    /// request connects, the others are discovered). Each operation on one key is one command on the shard of its
    /// slot, through that node's circuit breaker (a failed primary only turns its keys into misses); prefix
    /// invalidation, `clear` and `usage` walk every primary; a put updates its tag sets after the value, shard by
    /// shard (not in one transaction).
    pub fn cluster_builder<S: Into<String>>(
        nodes: impl IntoIterator<Item = S>,
    ) -> RedisStoreBuilder {
        let mut builder = Self::builder(String::new());
        builder.cluster_nodes = nodes.into_iter().map(Into::into).collect();
        builder
    }

    /// Whether the store is on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.inner.redis.is_cluster()
    }

    /// The cluster nodes whose circuit breaker is open, as `host:port` (empty on a single server).
    pub fn open_nodes(&self) -> Vec<String> {
        self.inner.redis.open_nodes()
    }

    /// The Redis key that holds the value of cache key `key`.
    pub fn redis_key(&self, key: &str) -> String {
        format!("{}v:{key}", self.inner.prefix)
    }

    /// The Redis key of the set of keys tagged `tag`.
    pub fn tag_key(&self, tag: &str) -> String {
        format!("{}t:{tag}", self.inner.prefix)
    }

    /// The Redis key of tag `tag`'s generation: a counter that [`remove_tag`](Store::remove_tag) increments.
    pub fn generation_key(&self, tag: &str) -> String {
        format!("{}g:{tag}", self.inner.prefix)
    }

    /// The current generations of `tags` (0 for a tag never invalidated). One `MGET` on a single server; on a
    /// cluster one `GET` per tag on its own shard, concurrently, each through its node's breaker.
    async fn generations(
        &self,
        operation: &'static str,
        tags: &[String],
    ) -> Result<Vec<u64>, StoreError> {
        if tags.is_empty() {
            return Ok(Vec::new());
        }
        if !self.inner.redis.is_cluster() {
            let keys: Vec<String> = tags.iter().map(|t| self.generation_key(t)).collect();
            let gens: Vec<Option<u64>> = self
                .query(operation, async |c| {
                    redis::cmd("MGET").arg(&keys).query_async(c).await
                })
                .await?;
            return Ok(gens.into_iter().map(Option::unwrap_or_default).collect());
        }
        let reads = tags.iter().map(|tag| async move {
            let key = self.generation_key(tag);
            let generation: Option<u64> = self
                .query_keyed(operation, &key, async |c| {
                    redis::cmd("GET").arg(&key).query_async(c).await
                })
                .await?;
            Ok::<_, StoreError>(generation.unwrap_or_default())
        });
        futures_util::future::try_join_all(reads).await
    }

    /// The Redis key of the coalescing lease on cache key `key`.
    pub fn lease_key(&self, key: &str) -> String {
        format!("{}l:{key}", self.inner.prefix)
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The timeout of one request's Redis calls together.
    pub fn timeout(&self) -> Duration {
        self.inner.redis.timeout()
    }

    /// The circuit breaker ([`is_open`](CircuitBreaker::is_open): Redis failed repeatedly, and requests do not wait
    /// for it).
    pub fn breaker(&self) -> &CircuitBreaker {
        self.inner.redis.breaker()
    }

    /// Clients for pub/sub: the server's, or one per seed node of a cluster (a message published on any node
    /// reaches the subscribers of all nodes).
    pub(crate) fn pubsub_clients(&self) -> Vec<Client> {
        self.inner.redis.pubsub_clients()
    }

    /// Runs one command or pipeline on the shared connection (connecting first if needed), within the current
    /// request's deadline and through the circuit breaker.
    pub(crate) async fn query<T: FromRedisValue>(
        &self,
        operation: &'static str,
        run: impl AsyncFnOnce(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let result = self.inner.redis.run(run).await;
        self.check(operation, result)
    }

    /// As [`query`](Self::query), for a call whose keys all share the slot of `key`: on a cluster, through the
    /// circuit breaker of the node serving it.
    pub(crate) async fn query_keyed<T: FromRedisValue>(
        &self,
        operation: &'static str,
        key: &str,
        run: impl AsyncFnOnce(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let result = self.inner.redis.run_keyed(key.as_bytes(), run).await;
        self.check(operation, result)
    }

    /// Runs `cmd` on one node (`host:port`) of a cluster, or on the server.
    async fn query_node<T: FromRedisValue>(
        &self,
        operation: &'static str,
        node: Option<&str>,
        cmd: redis::Cmd,
    ) -> Result<T, StoreError> {
        let route = node.and_then(by_address);
        self.query(operation, async |c| match (c, route) {
            (Connection::Cluster(c), Some(route)) => {
                let value = c.route_command(cmd, route).await?;
                T::from_redis_value(value).map_err(Into::into)
            }
            (c, _) => cmd.query_async(c).await,
        })
        .await
    }

    /// Runs `pipe` on one node (`host:port`) of a cluster, or on the server.
    async fn pipeline_node<T: FromRedisValue>(
        &self,
        operation: &'static str,
        node: Option<&str>,
        pipe: redis::Pipeline,
    ) -> Result<Vec<T>, StoreError> {
        let route = node.and_then(by_address);
        self.query(operation, async |c| match (c, route) {
            (
                Connection::Cluster(c),
                Some(redis::cluster_routing::RoutingInfo::SingleNode(route)),
            ) => {
                let n = pipe.len();
                let values = c.route_pipeline(pipe, 0, n, route).await?;
                values
                    .into_iter()
                    .map(|v| T::from_redis_value(v).map_err(Into::into))
                    .collect()
            }
            (c, _) => pipe.query_async(c).await,
        })
        .await
    }

    /// `PUBLISH`es `message` on `channel`. A message published on any node of a cluster reaches the subscribers
    /// of every node: on a cluster, the primaries are tried in turn until one takes it (a failed node must not
    /// lose invalidations).
    pub(crate) async fn publish(&self, channel: &str, message: &str) -> Result<u64, StoreError> {
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(channel).arg(message);
        let nodes = self.walk_nodes("publish").await?;
        let mut last = None;
        for node in nodes {
            match self
                .query_node("publish", node.as_deref(), publish.clone())
                .await
            {
                Ok(n) => return Ok(n),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| StoreError::new("publish", "no node to publish on")))
    }

    /// The nodes a key-space walk must visit: every primary of a cluster (`Some("host:port")`), or the server.
    async fn walk_nodes(&self, operation: &'static str) -> Result<Vec<Option<String>>, StoreError> {
        if !self.inner.redis.is_cluster() {
            return Ok(vec![None]);
        }
        let mut primaries = self.inner.redis.primaries();
        if primaries.is_empty() {
            // Not connected yet: one call connects and reads the slot map.
            let _: String = self
                .query(operation, async |c| redis::cmd("PING").query_async(c).await)
                .await?;
            primaries = self.inner.redis.primaries();
        }
        Ok(primaries.into_iter().map(Some).collect())
    }

    fn check<T>(
        &self,
        operation: &'static str,
        result: Result<T, CallError<redis::RedisError>>,
    ) -> Result<T, StoreError> {
        result.map_err(|e| {
            let kind = match &e {
                CallError::Call(e) if !e.breaks_connection() => "server",
                CallError::TimedOut(_) => "timeout",
                CallError::CircuitOpen => "unavailable",
                _ => "connection",
            };
            metrics::counter!(REDIS_ERRORS, "kind" => kind).increment(1);
            StoreError::new(operation, e)
        })
    }

    /// One `SCAN` step (never `KEYS`): the next cursor (0 at the end) and a batch of keys matching `pattern`.
    async fn scan(
        &self,
        operation: &'static str,
        node: Option<&str>,
        cursor: u64,
        pattern: &str,
    ) -> Result<(u64, Vec<Vec<u8>>), StoreError> {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT);
        self.query_node(operation, node, cmd).await
    }

    /// Walks the key space with `SCAN`, removing what matches. The first step runs on the request's deadline (a
    /// stalled Redis costs the request no more than its timeout); once Redis has answered, each later step gets a
    /// timeout of its own, so a large key space is never cut short by a deadline meant for one request's lookups.
    async fn unlink_matching(
        &self,
        operation: &'static str,
        pattern: &str,
    ) -> Result<u64, StoreError> {
        let mut removed = 0;
        let mut first = true;
        for node in self.walk_nodes(operation).await? {
            removed += self
                .unlink_matching_on(operation, node.as_deref(), pattern, &mut first)
                .await?;
        }
        Ok(removed)
    }

    async fn unlink_matching_on(
        &self,
        operation: &'static str,
        node: Option<&str>,
        pattern: &str,
        first: &mut bool,
    ) -> Result<u64, StoreError> {
        let (mut cursor, mut removed) = (0, 0);
        let step = async |cursor: u64| -> Result<(u64, u64), StoreError> {
            let (next, keys) = self.scan(operation, node, cursor, pattern).await?;
            let mut n = 0;
            if !keys.is_empty() {
                // Routed by key: on a cluster, the client splits it into one `UNLINK` per slot and adds the counts.
                n = self
                    .query(operation, async |c| {
                        redis::cmd("UNLINK").arg(&keys).query_async(c).await
                    })
                    .await?;
            }
            Ok((next, n))
        };
        loop {
            let (next, n) = if *first {
                *first = false;
                step(cursor).await?
            } else {
                Deadline::new().scope(step(cursor)).await?
            };
            removed += n;
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }
}

impl RedisStoreBuilder {
    /// The prefix of every Redis key the store writes (default `tower-kit-cache:`): stores with different prefixes
    /// share a Redis database without seeing each other.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The longest one request waits for Redis, across all of its Redis calls and connecting included (default
    /// 100 ms). A call that finds it spent fails at once, and the cache carries on without Redis (a miss, or "not
    /// stored").
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The longest one connection attempt may take (default 1 s). It runs in a task of its own, so requests still
    /// give up after [`timeout`](Self::timeout).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The largest encoded value written (default 8 MiB); larger responses are not stored in Redis.
    pub fn max_entry_bytes(mut self, bytes: usize) -> Self {
        self.max_entry_bytes = bytes;
        self
    }

    /// Consecutive failures after which the store stops trying for a while (default 3).
    pub fn failure_threshold(mut self, failures: u32) -> Self {
        self.failure_threshold = failures;
        self
    }

    /// While the circuit breaker is open, how often one request probes Redis (default 1 s).
    pub fn retry_interval(mut self, interval: Duration) -> Self {
        self.retry_interval = interval;
        self
    }

    /// Checks the settings and makes the store (no I/O: the first request connects).
    pub fn build(self) -> Result<RedisStore, ConfigError> {
        if self.max_entry_bytes == 0 {
            return Err(ConfigError::new(
                "max_entry_bytes",
                "must be more than zero",
            ));
        }
        let redis = if self.cluster_nodes.is_empty() {
            RedisClient::builder(self.url)
        } else {
            RedisClient::cluster_builder(self.cluster_nodes)
        };
        let redis = redis
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .failure_threshold(self.failure_threshold)
            .retry_interval(self.retry_interval)
            .build()?;
        Ok(RedisStore {
            inner: Arc::new(Inner {
                redis,
                prefix: self.prefix,
                max_entry_bytes: self.max_entry_bytes,
            }),
        })
    }
}

/// `s` with the glob characters of `SCAN MATCH` escaped, so it matches literally.
pub(crate) fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for ch in s.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\' | '^') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisStore {
    /// A put on a cluster: the value (one command on its shard), then each tag set on its own shard. Not one
    /// transaction: a tag invalidation that runs in between may miss this entry.
    async fn put_cluster(
        &self,
        key: &str,
        rkey: &str,
        raw: Vec<u8>,
        value: &StoredValue,
        ms: u64,
    ) -> Result<(), StoreError> {
        self.query_keyed("put", rkey, async |c| {
            redis::cmd("SET")
                .arg(rkey)
                .arg(raw)
                .arg("PX")
                .arg(ms)
                .query_async::<()>(c)
                .await
        })
        .await?;
        for tag in value.tags() {
            let tkey = self.tag_key(tag);
            let mut pipe = redis::pipe();
            pipe.cmd("SADD").arg(&tkey).arg(key).ignore();
            pipe.cmd("PEXPIRE").arg(&tkey).arg(ms).arg("NX").ignore();
            pipe.cmd("PEXPIRE").arg(&tkey).arg(ms).arg("GT").ignore();
            self.query_keyed("put", &tkey, async |c| pipe.query_async::<()>(c).await)
                .await?;
        }
        Ok(())
    }
}

impl Store for RedisStore {
    async fn get(&self, key: &str) -> Result<Option<StoredValue>, StoreError> {
        let rkey = self.redis_key(key);
        let raw: Option<Vec<u8>> = self
            .query_keyed("get", &rkey, async |c| {
                redis::cmd("GET").arg(&rkey).query_async(c).await
            })
            .await?;
        let Some(raw) = raw else {
            return Ok(None);
        };
        let (stored_generations, encoded) = split_generations(&raw);
        let value = stored_generations.as_ref().and(codec::decode(encoded));
        let Some(value) = value else {
            metrics::counter!(REDIS_UNDECODABLE).increment(1);
            tracing::debug!(key = %rkey, len = raw.len(), "undecodable cache value in Redis: a miss");
            return Ok(None);
        };
        let stored_generations = stored_generations.unwrap_or_default();
        if !value.tags().is_empty() || !stored_generations.is_empty() {
            // Served only if none of its tags was invalidated since it was written.
            if stored_generations.len() != value.tags().len() {
                metrics::counter!(REDIS_UNDECODABLE).increment(1);
                return Ok(None);
            }
            let current = self.generations("get", value.tags()).await?;
            if current != stored_generations {
                return Ok(None);
            }
        }
        Ok(Some(value))
    }

    async fn put(&self, key: &str, value: StoredValue, ttl: Duration) -> Result<(), StoreError> {
        let rkey = self.redis_key(key);
        // The generations of its tags as of now: a tag invalidated after this read makes the entry stale.
        let generations = self.generations("put", value.tags()).await?;
        let raw = with_generations(&generations, codec::encode(&value));
        if raw.len() > self.inner.max_entry_bytes {
            // Not stored; the old value must not outlive the new response either.
            let _: u64 = self
                .query_keyed("put", &rkey, async |c| {
                    redis::cmd("DEL").arg(&rkey).query_async(c).await
                })
                .await?;
            return Ok(());
        }
        if self.inner.redis.is_cluster() {
            return self.put_cluster(key, &rkey, raw, &value, millis(ttl)).await;
        }
        let ms = millis(ttl);
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("SET")
            .arg(&rkey)
            .arg(raw)
            .arg("PX")
            .arg(ms)
            .ignore();
        for tag in value.tags() {
            let tkey = self.tag_key(tag);
            pipe.cmd("SADD").arg(&tkey).arg(key).ignore();
            // A new set gets the entry's TTL; an existing one is only ever extended.
            pipe.cmd("PEXPIRE").arg(&tkey).arg(ms).arg("NX").ignore();
            pipe.cmd("PEXPIRE").arg(&tkey).arg(ms).arg("GT").ignore();
        }
        self.query("put", async |c| pipe.query_async::<()>(c).await)
            .await
    }

    async fn remove(&self, key: &str) -> Result<bool, StoreError> {
        let rkey = self.redis_key(key);
        let n: u64 = self
            .query_keyed("remove", &rkey, async |c| {
                redis::cmd("DEL").arg(&rkey).query_async(c).await
            })
            .await?;
        Ok(n > 0)
    }

    async fn remove_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        let pattern = format!("{}*", escape_glob(&self.redis_key(prefix)));
        self.unlink_matching("remove_prefix", &pattern).await
    }

    async fn remove_tag(&self, tag: &str) -> Result<u64, StoreError> {
        // First the generation: from here on no server serves an entry stored earlier with this tag (reads
        // compare generations); deleting the entries below only reclaims their memory.
        let gkey = self.generation_key(tag);
        let _: u64 = self
            .query_keyed("remove_tag", &gkey, async |c| {
                redis::cmd("INCR").arg(&gkey).query_async(c).await
            })
            .await?;
        let tkey = self.tag_key(tag);
        let members: Vec<String> = self
            .query("remove_tag", async |c| {
                redis::cmd("SMEMBERS").arg(&tkey).query_async(c).await
            })
            .await?;
        let mut removed = 0;
        for chunk in members.chunks(SCAN_COUNT) {
            let rkeys: Vec<String> = chunk.iter().map(|k| self.redis_key(k)).collect();
            let raws: Vec<Option<Vec<u8>>> = self
                .query("remove_tag", async |c| {
                    redis::cmd("MGET").arg(&rkeys).query_async(c).await
                })
                .await?;
            // A key re-written without the tag since it joined the set is left alone.
            let tagged: Vec<&String> = rkeys
                .iter()
                .zip(raws)
                .filter(|(_, raw)| {
                    raw.as_deref()
                        .and_then(|raw| codec::decode(split_generations(raw).1))
                        .is_some_and(|v| v.tags().iter().any(|t| t == tag))
                })
                .map(|(k, _)| k)
                .collect();
            if !tagged.is_empty() {
                let n: u64 = self
                    .query("remove_tag", async |c| {
                        redis::cmd("DEL").arg(&tagged).query_async(c).await
                    })
                    .await?;
                removed += n;
            }
        }
        let _: u64 = self
            .query("remove_tag", async |c| {
                redis::cmd("DEL").arg(&tkey).query_async(c).await
            })
            .await?;
        Ok(removed)
    }

    /// `SET {prefix}l:{key} token NX PX ttl`: the first server to ask gets the lease.
    async fn lease(&self, key: &str, ttl: Duration) -> Result<Lease, StoreError> {
        let lkey = self.lease_key(key);
        let token = lease_token();
        let ms = millis(ttl);
        let taken: Option<String> = self
            .query_keyed("lease", &lkey, async |c| {
                redis::cmd("SET")
                    .arg(&lkey)
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms)
                    .query_async(c)
                    .await
            })
            .await?;
        if taken.is_none() {
            return Ok(Lease::Held);
        }
        let store = self.clone();
        // The release is the last call of the request that took the lease: on the same deadline.
        let deadline = Deadline::current().unwrap_or_default();
        Ok(Lease::Acquired(LeaseRelease::new(move || {
            let Ok(rt) = tokio::runtime::Handle::try_current() else {
                return; // It lapses by itself.
            };
            rt.spawn(deadline.scope(async move {
                // `EVAL` (the script is tiny): nothing to load, on whichever shard holds the lease.
                let _ = store
                    .query_keyed::<u64>("release", &lkey, async |c| {
                        redis::cmd("EVAL")
                            .arg(RELEASE_SCRIPT)
                            .arg(1)
                            .arg(&lkey)
                            .arg(&token)
                            .query_async(c)
                            .await
                    })
                    .await;
            }));
        })))
    }

    async fn clear(&self) -> Result<(), StoreError> {
        let pattern = format!("{}*", escape_glob(&self.inner.prefix));
        self.unlink_matching("clear", &pattern).await.map(drop)
    }

    async fn usage(&self) -> Result<StoreUsage, StoreError> {
        let pattern = format!("{}*", escape_glob(&self.redis_key("")));
        let mut usage = StoreUsage::default();
        for node in self.walk_nodes("usage").await? {
            let node = node.as_deref();
            let mut cursor = 0;
            loop {
                let (next, keys) = self.scan("usage", node, cursor, &pattern).await?;
                if !keys.is_empty() {
                    let mut pipe = redis::pipe();
                    for k in &keys {
                        pipe.cmd("STRLEN").arg(k);
                    }
                    let lens: Vec<u64> = self.pipeline_node("usage", node, pipe).await?;
                    for len in lens.into_iter().filter(|l| *l > 0) {
                        usage.entries += 1;
                        usage.bytes += len;
                    }
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(usage)
    }
}

/// The header of a value with tags: `b"TKG"`, the number of tags (u16, big endian), then the generation of each
/// tag when the value was written (u64, big endian), in the order of the entry's tags; the encoded entry follows.
const GENERATIONS_MAGIC: &[u8; 3] = b"TKG";

fn with_generations(generations: &[u64], encoded: Vec<u8>) -> Vec<u8> {
    if generations.is_empty() {
        return encoded;
    }
    let count = u16::try_from(generations.len()).unwrap_or(u16::MAX);
    let mut raw = Vec::with_capacity(5 + 8 * generations.len() + encoded.len());
    raw.extend_from_slice(GENERATIONS_MAGIC);
    raw.extend_from_slice(&count.to_be_bytes());
    for g in generations.iter().take(usize::from(count)) {
        raw.extend_from_slice(&g.to_be_bytes());
    }
    raw.extend_from_slice(&encoded);
    raw
}

/// The stored generations (empty without a header; `None` for a truncated header) and the encoded entry.
fn split_generations(raw: &[u8]) -> (Option<Vec<u64>>, &[u8]) {
    let Some(rest) = raw.strip_prefix(GENERATIONS_MAGIC) else {
        return (Some(Vec::new()), raw);
    };
    let Some((count, rest)) = rest.split_first_chunk::<2>() else {
        return (None, raw);
    };
    let count = usize::from(u16::from_be_bytes(*count));
    let Some((header, encoded)) = rest.split_at_checked(8 * count) else {
        return (None, raw);
    };
    let generations = header
        .chunks_exact(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            u64::from_be_bytes(b)
        })
        .collect();
    (Some(generations), encoded)
}

/// `host:port` as a route to that node of a cluster.
fn by_address(node: &str) -> Option<redis::cluster_routing::RoutingInfo> {
    let (host, port) = node.rsplit_once(':')?;
    Some(redis::cluster_routing::RoutingInfo::SingleNode(
        redis::cluster_routing::SingleNodeRoutingInfo::ByAddress {
            host: host.to_owned(),
            port: port.parse().ok()?,
        },
    ))
}

/// Deletes the lease only if it still holds the releaser's token (it may have lapsed and been taken by another).
const RELEASE_SCRIPT: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

static LEASES: AtomicU64 = AtomicU64::new(0);

fn lease_token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!(
        "{:x}-{:x}-{:x}",
        std::process::id(),
        nanos,
        LEASES.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_headers_round_trip() {
        let encoded = b"TKC\x02rest".to_vec();
        assert_eq!(with_generations(&[], encoded.clone()), encoded);
        let raw = with_generations(&[0, 7, u64::MAX], encoded.clone());
        assert_eq!(
            split_generations(&raw),
            (Some(vec![0, 7, u64::MAX]), &encoded[..])
        );
        assert_eq!(split_generations(&encoded), (Some(vec![]), &encoded[..]));
        assert_eq!(split_generations(&raw[..10]).0, None, "truncated");
    }

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(escape_glob("a*b?c[d]e\\f^g"), "a\\*b\\?c\\[d\\]e\\\\f\\^g");
        assert_eq!(escape_glob("t:1:/é"), "t:1:/é");
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(RedisStore::new("http://localhost").is_err());
        assert!(
            RedisStore::builder("redis://127.0.0.1/")
                .timeout(Duration::ZERO)
                .build()
                .is_err()
        );
        assert!(
            RedisStore::builder("redis://127.0.0.1/")
                .failure_threshold(0)
                .build()
                .is_err()
        );
        assert!(RedisStore::new("redis://127.0.0.1:6379/0").is_ok());
    }
}
