//! The Redis store: one quota shared by every server, decided in one round trip by a Lua script.

use super::{
    CheckRequest, Decision, MAX_POLICIES, PolicyId, PolicyKeys, PolicyOutcome, RateLimitStore, gcra,
};
use crate::{Key, Quota};
use futures_util::FutureExt;
use redis::{Cmd, ErrorKind, ServerErrorKind, aio::ConnectionLike};
use std::{fmt, future::Future, pin::Pin, sync::Arc, time::Duration};
use tower_kit_core::{
    ConfigError,
    redis::{CallError, Deadline, Failure, RedisClient, RedisClientBuilder, TimedOut, Transition},
};

/// The Lua script the store runs (`EVALSHA`), with its argument layout in its header comment. It mirrors
/// [`gcra`](super::gcra) exactly, on (seconds, nanoseconds) pairs because Lua numbers are doubles.
pub const GCRA_SCRIPT: &str = include_str!("gcra.lua");

const DEFAULT_PREFIX: &str = "tower-kit:rl:";
const NANOS: u64 = 1_000_000_000;

/// Counter: failed Redis round trips of the Redis store, by `kind` (`timeout`, `connection`, `server`, `reply`,
/// `circuit_open`: refused at once by the open circuit breaker).
pub const REDIS_ERRORS: &str = "tower_kit.ratelimit.redis.errors";
/// Gauge: 1 while the Redis store's circuit breaker is open, 0 when closed.
pub const REDIS_CIRCUIT_OPEN: &str = "tower_kit.ratelimit.redis.circuit_open";
/// Counter: times the script was loaded again after Redis answered `NOSCRIPT` (restart, `SCRIPT FLUSH`, failover).
pub const REDIS_SCRIPT_RELOADS: &str = "tower_kit.ratelimit.redis.script_reloads";

/// A [`RateLimitStore`] in Redis, so every server behind a load balancer enforces one shared quota.
///
/// - **One round trip, atomic**: each request runs one Lua script ([`GCRA_SCRIPT`], loaded once per connection,
///   run with `EVALSHA`, loaded again on `NOSCRIPT`) that decides every policy of the request all-or-nothing, with
///   the arithmetic of [`gcra`](super::gcra) and the time of the Redis server (`TIME`), so the servers' clocks do
///   not matter.
/// - **Bounded memory**: each `(policy, key)` state is a short string written with a TTL of `tat − now`; a state
///   back to a full quota expires by itself.
/// - **Redis Cluster** ([`cluster_builder`](RedisStore::cluster_builder)): a state lives at
///   `<prefix>{<key>}:<policy id>`; the `{…}` hash tag puts every policy of one client in one slot, so a request
///   whose policies share the key is one script on one shard. Policies keyed differently in one layer would touch
///   two slots: the layer's `build()` refuses them on a cluster with a `ConfigError` naming `policy`
///   ([`check_policies`](RateLimitStore::check_policies)); give them separate layers. Two `custom` extractors
///   count as the same key only when one is a clone of the other (closures cannot be compared), so policies on two
///   different closures are refused at `build()` too: give them one extractor. Should a request's keys still
///   differ at run time, it fails with [`RedisStoreError::CrossSlot`] (decided by the failure policy) instead of
///   being decided half. Each node has its own circuit breaker.
/// - **One multiplexed connection**, shared by every request (concurrent checks are pipelined on it), with a
///   connect timeout and a per-decision timeout ([`timeout`](RedisStoreBuilder::timeout), default 100 ms: no
///   request waits longer for the limiter).
/// - **Failures** are errors ([`RedisStoreError`]) that the layer's [`StoreFailure`](crate::StoreFailure) policy
///   decides (fail open, fail open capped by an in-process share, fail closed). A circuit breaker opens after
///   [`failure_threshold`](RedisStoreBuilder::failure_threshold) consecutive failures: requests then fail at once
///   instead of waiting, and one probe per [`retry_interval`](RedisStoreBuilder::retry_interval) reconnects when
///   Redis is back, with no restart.
///
/// Clones share the connection and the breaker. The store needs a tokio runtime.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("redis", &self.inner.redis)
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

struct Inner {
    redis: RedisClient,
    sha: String,
    prefix: String,
}

/// Configures a [`RedisStore`].
#[derive(Debug)]
#[must_use]
pub struct RedisStoreBuilder {
    /// The connection: a single server or a cluster's seed nodes, timeouts, circuit breaker.
    redis: RedisClientBuilder,
    prefix: String,
}

/// Why the Redis store could not decide.
#[derive(Debug)]
#[non_exhaustive]
pub enum RedisStoreError {
    /// Redis answered with an error, or the connection failed.
    Redis(redis::RedisError),
    /// No answer within the store's timeout.
    Timeout(Duration),
    /// The circuit breaker is open: Redis failed repeatedly, and this request did not wait for it.
    CircuitOpen,
    /// The script's reply was not what this version expects (another script under the same SHA?).
    Reply(&'static str),
    /// No tokio runtime to run the connection on.
    NoRuntime,
    /// On a Redis Cluster, one request's policies keyed it differently: their states live in different slots,
    /// which one script cannot touch. Give policies that share a layer the same key extractor. (The layer's
    /// `build()` already refuses policies whose extractors differ; this remains for `custom` extractors, which it
    /// cannot compare.)
    CrossSlot,
}

impl fmt::Display for RedisStoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Redis(_) => f.write_str("redis request failed"),
            Self::Timeout(t) => write!(f, "redis did not answer within {t:?}"),
            Self::CircuitOpen => {
                f.write_str("redis circuit breaker open: not waiting for a failing redis")
            }
            Self::Reply(why) => write!(f, "unexpected reply from the rate-limit script: {why}"),
            Self::NoRuntime => f.write_str("the redis store needs a tokio runtime"),
            Self::CrossSlot => f.write_str(
                "on a redis cluster, the policies of one layer must key requests the same way \
                 (their states must share one slot)",
            ),
        }
    }
}

impl std::error::Error for RedisStoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Redis(e) => Some(e),
            _ => None,
        }
    }
}

impl From<redis::RedisError> for RedisStoreError {
    fn from(e: redis::RedisError) -> Self {
        Self::Redis(e)
    }
}

impl Clone for RedisStoreError {
    fn clone(&self) -> Self {
        match self {
            Self::Redis(e) => Self::Redis(e.clone()),
            Self::Timeout(t) => Self::Timeout(*t),
            Self::CircuitOpen => Self::CircuitOpen,
            Self::Reply(why) => Self::Reply(why),
            Self::NoRuntime => Self::NoRuntime,
            Self::CrossSlot => Self::CrossSlot,
        }
    }
}

impl Failure for RedisStoreError {
    fn breaks_connection(&self) -> bool {
        match self {
            Self::Redis(e) => e.is_unrecoverable_error() || e.is_io_error() || e.is_timeout(),
            Self::Timeout(_) => true,
            _ => false,
        }
    }

    /// Every failure of Redis counts: a decision Redis could not make is a failure of the shared quota.
    fn counts_for_breaker(&self) -> bool {
        !matches!(self, Self::CrossSlot)
    }
}

impl From<CallError<RedisStoreError>> for RedisStoreError {
    fn from(e: CallError<RedisStoreError>) -> Self {
        match e {
            CallError::Call(e) => e,
            CallError::Connect(e) => Self::Redis(e),
            CallError::CircuitOpen => Self::CircuitOpen,
            CallError::NoRuntime => Self::NoRuntime,
            CallError::TimedOut(TimedOut::After(t)) => Self::Timeout(t),
            CallError::TimedOut(_) => Self::Timeout(Duration::ZERO),
            _ => Self::Reply("unknown redis failure"),
        }
    }
}

impl RedisStoreError {
    /// The `kind` label of [`REDIS_ERRORS`].
    fn kind(&self) -> &'static str {
        match self {
            Self::Redis(e) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => {
                "connection"
            }
            Self::Redis(_) => "server",
            Self::Timeout(_) => "timeout",
            Self::CircuitOpen => "circuit_open",
            Self::Reply(_) | Self::NoRuntime => "reply",
            Self::CrossSlot => "cross_slot",
        }
    }
}

impl RedisStore {
    tower_kit_core::redis_store_constructors!(RedisStoreBuilder, inner.redis);

    /// The Redis key of one `(policy, key)` state: `<prefix>{<key>}:<policy id as 16 hex digits>`.
    pub fn redis_key(&self, policy: PolicyId, key: &Key) -> String {
        redis_key(&self.inner.prefix, policy, key)
    }

    /// The SHA-1 of [`GCRA_SCRIPT`] (what `EVALSHA` runs).
    pub fn script_sha(&self) -> &str {
        &self.inner.sha
    }

    /// Decides with `now` (nanoseconds since the Unix epoch) instead of the Redis server's clock. For tests that
    /// compare the script with [`gcra`](super::gcra); states written this way expire relative to this `now`.
    #[doc(hidden)]
    pub fn check_at(
        &self,
        now_nanos: u64,
        request: &CheckRequest<'_>,
    ) -> <Self as RateLimitStore>::Future {
        self.start(request, Some(now_nanos))
    }

    fn start(
        &self,
        request: &CheckRequest<'_>,
        now: Option<u64>,
    ) -> <Self as RateLimitStore>::Future {
        let call = Call::new(&self.inner, request, now);
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { inner.decide(call).await })
    }
}

impl RedisStoreBuilder {
    fn from_redis(redis: RedisClientBuilder) -> Self {
        Self {
            redis,
            prefix: DEFAULT_PREFIX.to_owned(),
        }
    }

    /// Prefix of every key (default `tower-kit:rl:`; no `{` or `}`). Servers sharing a quota need the same one.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    tower_kit_core::redis_builder_setters!(
        redis,
        "The request is then decided by the layer's [`StoreFailure`](crate::StoreFailure) policy."
    );

    /// Checks the settings and makes the store (no I/O: the first request connects).
    pub fn build(self) -> Result<RedisStore, ConfigError> {
        if self.prefix.contains(['{', '}']) {
            return Err(ConfigError::new(
                "key_prefix",
                format!(
                    "must not contain `{{` or `}}` (hash-tag braces) (got {:?})",
                    self.prefix
                ),
            ));
        }
        let redis = if self.redis.is_cluster() {
            self.redis
        } else {
            self.redis
                // Loaded once per connection; `NOSCRIPT` later (restart, SCRIPT FLUSH) loads it again. A cluster
                // loads it on demand, shard by shard (a down primary must not fail the connection).
                .on_connect(|mut connection| {
                    async move { load_script(&mut connection).await }.boxed()
                })
        };
        let redis = redis.on_transition(|transition| match transition {
                Transition::Opened => {
                    metrics::gauge!(REDIS_CIRCUIT_OPEN).set(1.0);
                    tracing::warn!(
                        "rate limit: redis keeps failing; circuit breaker open (requests no longer wait for it; \
                         probing for recovery)"
                    );
                }
                Transition::Closed => {
                    metrics::gauge!(REDIS_CIRCUIT_OPEN).set(0.0);
                    tracing::info!("rate limit: redis answers again; circuit breaker closed");
                }
                _ => {}
            })
            .build()?;
        Ok(RedisStore {
            inner: Arc::new(Inner {
                redis,
                sha: redis::Script::new(GCRA_SCRIPT).get_hash().to_owned(),
                prefix: self.prefix,
            }),
        })
    }
}

fn redis_key(prefix: &str, policy: PolicyId, key: &Key) -> String {
    format!("{prefix}{{{key}}}:{:016x}", policy.0)
}

/// A nanosecond count as the script's (seconds, nanoseconds) pair.
fn split(nanos: u64) -> (u64, u64) {
    (nanos / NANOS, nanos % NANOS)
}

/// The script's pair back to nanoseconds (`None` for the script's "missing" marker or an impossible pair).
fn join(seconds: i64, nanos: i64) -> Option<u64> {
    let seconds = u64::try_from(seconds).ok()?;
    let nanos = u64::try_from(nanos).ok().filter(|n| *n < NANOS)?;
    seconds.checked_mul(NANOS)?.checked_add(nanos)
}

/// One request, copied out of the borrowed [`CheckRequest`]: the `EVALSHA` command and what is needed to read
/// its reply.
struct Call {
    command: Cmd,
    /// The Redis key of the first check: its hash tag decides the slot (and the cluster node's breaker).
    slot_key: String,
    /// Whether the checks' keys have more than one hash tag (different client keys).
    cross_slot: bool,
    quotas: [Option<Quota>; MAX_POLICIES],
    len: usize,
    cost: u32,
}

impl Call {
    fn new(inner: &Inner, request: &CheckRequest<'_>, now: Option<u64>) -> Self {
        let checks = &request.checks[..request.checks.len().min(MAX_POLICIES)];
        let mut command = redis::cmd("EVALSHA");
        command.arg(&inner.sha).arg(checks.len());
        let mut slot_key = String::new();
        let mut cross_slot = false;
        for (i, c) in checks.iter().enumerate() {
            let key = redis_key(&inner.prefix, c.policy, &c.key);
            command.arg(&key);
            if i == 0 {
                slot_key = key;
            } else {
                cross_slot |= c.key != checks[0].key;
            }
        }
        match now.map(split) {
            Some((s, ns)) => command.arg(s).arg(ns),
            None => command.arg("").arg(""),
        };
        let mut quotas = [None; MAX_POLICIES];
        for (i, c) in checks.iter().enumerate() {
            let increment = c
                .quota
                .emission_interval_nanos()
                .saturating_mul(u64::from(request.cost));
            let (inc_s, inc_ns) = split(increment);
            let (cap_s, cap_ns) = split(c.quota.capacity_nanos());
            command.arg(inc_s).arg(inc_ns).arg(cap_s).arg(cap_ns);
            quotas[i] = Some(c.quota);
        }
        Self {
            command,
            slot_key,
            cross_slot,
            quotas,
            len: checks.len(),
            cost: request.cost,
        }
    }

    /// The decision from the script's reply: the script decided admission and wrote the states; the outcomes are
    /// computed here by the same [`gcra`] as the in-process store, from the states it read and its `now`.
    fn decision(&self, reply: &[i64]) -> Result<Decision, RedisStoreError> {
        if reply.len() != 3 + 2 * self.len {
            return Err(RedisStoreError::Reply("wrong number of values"));
        }
        let now = join(reply[1], reply[2]).ok_or(RedisStoreError::Reply("bad time"))?;
        let mut outcomes = [PolicyOutcome::default(); MAX_POLICIES];
        let mut tats = [None; MAX_POLICIES];
        let mut admitted = true;
        for i in 0..self.len {
            let Some(quota) = &self.quotas[i] else {
                return Err(RedisStoreError::Reply("missing quota"));
            };
            let (s, ns) = (reply[3 + 2 * i], reply[4 + 2 * i]);
            tats[i] = if (s, ns) == (-1, -1) {
                None
            } else {
                Some(join(s, ns).ok_or(RedisStoreError::Reply("bad state"))?)
            };
            outcomes[i] = gcra(tats[i], now, quota, self.cost).0;
            admitted &= outcomes[i].admitted;
        }
        if admitted != (reply[0] == 1) {
            return Err(RedisStoreError::Reply("the script and gcra() disagree"));
        }
        if !admitted {
            // Nothing was consumed: admitting checks report their state as it stays (as the in-process store).
            for i in 0..self.len {
                if let (true, Some(quota)) = (outcomes[i].admitted, &self.quotas[i]) {
                    outcomes[i] = gcra(tats[i], now, quota, 0).0;
                }
            }
        }
        Ok(Decision::from_outcomes(outcomes.into_iter().take(self.len)))
    }
}

impl Inner {
    /// One decision is one request to Redis: connecting, loading the script and running it share one deadline.
    async fn decide(self: Arc<Self>, call: Call) -> Result<Decision, RedisStoreError> {
        let result = if call.cross_slot && self.redis.is_cluster() {
            Err(RedisStoreError::CrossSlot)
        } else {
            Deadline::new()
                .scope(
                    self.redis
                        .run_keyed(call.slot_key.as_bytes(), async |connection| {
                            round_trip(connection, &call).await
                        }),
                )
                .await
                .map_err(RedisStoreError::from)
        };
        if let Err(error) = &result {
            metrics::counter!(REDIS_ERRORS, "kind" => error.kind()).increment(1);
        }
        result
    }
}

async fn round_trip(
    connection: &mut (impl ConnectionLike + Send),
    call: &Call,
) -> Result<Decision, RedisStoreError> {
    let reply: Vec<i64> = match call.command.query_async(connection).await {
        Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            // Redis restarted, failed over or ran SCRIPT FLUSH since this connection loaded the script: `EVAL`
            // with the same keys runs it and loads it, on the node (the cluster shard) that answered.
            metrics::counter!(REDIS_SCRIPT_RELOADS).increment(1);
            eval_command(&call.command).query_async(connection).await?
        }
        other => other?,
    };
    call.decision(&reply)
}

/// The `EVAL` twin of an `EVALSHA` command: the script's text instead of its SHA, the same keys and arguments.
fn eval_command(evalsha: &Cmd) -> Cmd {
    let mut eval = redis::cmd("EVAL");
    eval.arg(GCRA_SCRIPT);
    for arg in evalsha.args_iter().skip(2) {
        if let redis::Arg::Simple(bytes) = arg {
            eval.arg(bytes);
        }
    }
    eval
}

async fn load_script(
    connection: &mut (impl ConnectionLike + Send),
) -> Result<(), redis::RedisError> {
    let _sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(GCRA_SCRIPT)
        .query_async(connection)
        .await?;
    Ok(())
}

impl RateLimitStore for RedisStore {
    type Error = RedisStoreError;
    type Future = Pin<Box<dyn Future<Output = Result<Decision, RedisStoreError>> + Send>>;

    fn check(&self, request: &CheckRequest<'_>) -> Self::Future {
        self.start(request, None)
    }

    /// On a cluster, the policies of one layer must key requests the same way: one request's states then share
    /// the client key's hash tag, so one script on one shard decides them all-or-nothing.
    fn check_policies(&self, policies: &PolicyKeys<'_>) -> Result<(), ConfigError> {
        match policies.keyed_differently() {
            Some((a, b)) if self.is_cluster() => Err(ConfigError::new(
                "policy",
                format!(
                    "on a Redis Cluster, the policies of one layer must key requests the same way: {a:?} and \
                     {b:?} do not (their states would live in different slots, which one script cannot touch \
                     all-or-nothing); give them the same key extractor, or put them in separate layers"
                ),
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip() {
        for n in [0, 1, NANOS - 1, NANOS, 1_712_345_678_123_456_789, u64::MAX] {
            let (s, ns) = split(n);
            assert_eq!(join(s as i64, ns as i64), Some(n));
        }
        assert_eq!(join(-1, -1), None);
        assert_eq!(join(1, NANOS as i64), None);
        assert_eq!(join(i64::MAX, 0), None);
    }

    #[test]
    fn keys_share_a_hash_tag_per_client() {
        let key = Key::from_ip("192.0.2.1".parse().unwrap(), 64);
        let a = redis_key("p:", PolicyId::of("burst"), &key);
        let b = redis_key("p:", PolicyId::of("daily"), &key);
        assert!(a.starts_with("p:{ip4:c0000201}:"), "{a}");
        assert_ne!(a, b);
        let tag = |k: &str| k[k.find('{').unwrap()..=k.find('}').unwrap()].to_owned();
        assert_eq!(tag(&a), tag(&b));
    }

    #[test]
    fn bad_settings_name_the_field() {
        let field = |b: RedisStoreBuilder| b.build().unwrap_err().field();
        assert_eq!(field(RedisStore::builder("http://x")), "url");
        assert_eq!(field(RedisStore::builder("redis://h:notaport")), "url");
        assert_eq!(
            field(RedisStore::builder("redis://h").key_prefix("a{b")),
            "key_prefix"
        );
        // The connection settings (timeouts, breaker) are `RedisClientBuilder`'s, tested in tower-kit-core.
        if !cfg!(feature = "redis-tls") {
            let e = RedisStore::new("rediss://h").unwrap_err();
            assert!(e.reason().contains("redis-tls"), "{}", e.reason());
        }
        // A password never appears in an error.
        let e = RedisStore::new("redis://user:hunter2@h:notaport").unwrap_err();
        assert!(!e.to_string().contains("hunter2"));
        let ok = RedisStore::new("redis://user:secret@127.0.0.1:1/2").unwrap();
        assert_eq!(ok.script_sha().len(), 40);
        assert!(!format!("{ok:?}").contains("secret"));
    }
}
