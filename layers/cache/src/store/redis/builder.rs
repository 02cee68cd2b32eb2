//! [`RedisStoreBuilder`]: the store's own settings (key prefix, size cap) and its connection, a
//! [`RedisClientBuilder`] whose setters are shared with every Redis store.

use super::{DEFAULT_MAX_ENTRY_BYTES, DEFAULT_PREFIX, Inner, RedisStore};
use std::sync::Arc;
use tower_kit_core::{ConfigError, redis::RedisClientBuilder};

/// Builds a [`RedisStore`]: see [`RedisStore::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RedisStoreBuilder {
    /// The connection: a single server or a cluster's seed nodes, timeouts, circuit breaker.
    redis: RedisClientBuilder,
    prefix: String,
    max_entry_bytes: usize,
}

impl RedisStoreBuilder {
    pub(super) fn from_redis(redis: RedisClientBuilder) -> Self {
        Self {
            redis,
            prefix: DEFAULT_PREFIX.to_owned(),
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
        }
    }

    /// The prefix of every Redis key the store writes (default `tower-kit-cache:`): stores with different prefixes
    /// share a Redis database without seeing each other.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The largest encoded value written (default 8 MiB); larger responses are not stored in Redis.
    pub fn max_entry_bytes(mut self, bytes: usize) -> Self {
        self.max_entry_bytes = bytes;
        self
    }

    tower_kit_core::redis_builder_setters!(
        redis,
        "The cache then carries on without Redis (a miss, or \"not stored\")."
    );

    /// Checks the settings and makes the store (no I/O: the first request connects).
    pub fn build(self) -> Result<RedisStore, ConfigError> {
        if self.max_entry_bytes == 0 {
            return Err(ConfigError::new(
                "max_entry_bytes",
                "must be more than zero",
            ));
        }
        Ok(RedisStore {
            inner: Arc::new(Inner {
                redis: self.redis.build()?,
                prefix: self.prefix,
                max_entry_bytes: self.max_entry_bytes,
            }),
        })
    }
}
