//! The cache's Redis store, by concern: the store and its key layout (here), its [builder](builder), the calls
//! through the shared connection ([calls]), the store operations ([ops]), tags and their generations ([tags]),
//! cross-server fill leases ([lease]) and walks over every primary's key space ([walk]).

mod builder;
mod calls;
mod lease;
mod ops;
mod tags;
mod walk;

pub use builder::RedisStoreBuilder;

use std::{fmt, sync::Arc, time::Duration};
use tower_kit_core::redis::RedisClient;

const DEFAULT_PREFIX: &str = "tower-kit-cache:";
const DEFAULT_MAX_ENTRY_BYTES: usize = 8 << 20;
const SCAN_COUNT: usize = 500;

/// Counter: failed Redis round trips of the cache's Redis store, by `kind` (`timeout`, `connection`, `server`,
/// `unavailable`).
pub const REDIS_ERRORS: &str = "tower_kit.cache.redis.errors";
/// Counter: values read back from Redis that did not decode (garbage, truncated, another format version): misses.
pub const REDIS_UNDECODABLE: &str = "tower_kit.cache.redis.undecodable";

/// A [`Store`](super::Store) in Redis (feature `redis`), shared by every server that points at it.
///
/// - **Layout**: the value of cache key `k` is the string `{prefix}v:{k}` in a versioned binary format (status,
///   headers, body, trailers, validators, timestamps, tags; see [`Entry::FORMAT_VERSION`](crate::Entry)), written
///   with `SET .. PX ttl`. A tag `t` is the set `{prefix}t:{t}` of the keys carrying it, with its own expiry (the
///   longest TTL of its members, so tag sets never grow forever). Freshness is decided by the cache from the times
///   inside the entry, so servers whose clocks drift apart still agree on an entry's age.
/// - **Tag guarantee**: each tag has a generation `{prefix}g:{t}` that [`remove_tag`](super::Store::remove_tag)
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
///   `KEYS`; so does [`usage`](super::Store::usage), which is O(keys): use it for dashboards, not per request.
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

impl RedisStore {
    tower_kit_core::redis_store_constructors!(RedisStoreBuilder, inner.redis);

    /// The Redis key that holds the value of cache key `key`.
    pub fn redis_key(&self, key: &str) -> String {
        format!("{}v:{key}", self.inner.prefix)
    }

    /// The Redis key of the set of keys tagged `tag`.
    pub fn tag_key(&self, tag: &str) -> String {
        format!("{}t:{tag}", self.inner.prefix)
    }

    /// The Redis key of tag `tag`'s generation: a counter that [`remove_tag`](super::Store::remove_tag) increments.
    pub fn generation_key(&self, tag: &str) -> String {
        format!("{}g:{tag}", self.inner.prefix)
    }

    /// The Redis key of the coalescing lease on cache key `key`.
    pub fn lease_key(&self, key: &str) -> String {
        format!("{}l:{key}", self.inner.prefix)
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(escape_glob("a*b?c[d]e\\f^g"), "a\\*b\\?c\\[d\\]e\\\\f\\^g");
        assert_eq!(escape_glob("t:1:/é"), "t:1:/é");
    }

    #[test]
    fn bad_settings_name_the_field() {
        // The connection settings are checked by `RedisClientBuilder` (tested in tower-kit-core); these are the
        // store's own, and the connection's errors passed through.
        let field = |b: RedisStoreBuilder| b.build().unwrap_err().field();
        assert_eq!(field(RedisStore::builder("http://localhost")), "url");
        assert_eq!(
            field(RedisStore::builder("redis://127.0.0.1/").max_entry_bytes(0)),
            "max_entry_bytes"
        );
        assert_eq!(
            field(RedisStore::builder("redis://127.0.0.1/").timeout(Duration::ZERO)),
            "timeout"
        );
        let cluster = RedisStore::cluster(["redis://127.0.0.1:7000"]).unwrap();
        assert!(cluster.is_cluster() && cluster.open_nodes().is_empty());
        assert!(
            !RedisStore::new("redis://127.0.0.1:6379/0")
                .unwrap()
                .is_cluster()
        );
    }
}
