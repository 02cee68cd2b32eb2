//! Where entries live: the [`Store`] trait, the in-process [`MokaStore`], and the conformance suite every store must
//! pass.
//!
//! A store is a map from string keys to [`StoredValue`]s with a time-to-live, a tag index, prefix removal and
//! usage figures. It never decides freshness: the cache does, from the entry's timestamps and its own clock, so the
//! TTL given to [`put`](Store::put) is garbage collection only. Keys are built by the cache
//! (`{namespace}:{version}:{path}...`); a store treats them as opaque bytes, and prefix removal matches them
//! literally (a Redis store must escape glob characters for `SCAN MATCH`).

#[cfg(feature = "redis")]
mod codec;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub(crate) mod deadline;
mod moka;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
mod tiered;

pub use self::moka::MokaStore;
#[cfg(feature = "redis")]
pub use self::redis::{REDIS_ERRORS, REDIS_UNDECODABLE, RedisStore, RedisStoreBuilder};
#[cfg(feature = "redis")]
pub use self::tiered::{L1_FLUSHES, TieredStore};
use crate::entry::StoredValue;
use std::{future::Future, time::Duration};

/// A backend for the cache. Every method may be called concurrently from many tasks.
///
/// Errors never reach clients: the cache treats a failed `get` as a miss and a failed `put` as "not stored", and
/// counts both in the `tower_kit.cache.store_errors` metric.
pub trait Store: Send + Sync + 'static {
    /// The value under `key`, if any.
    fn get(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<StoredValue>, StoreError>> + Send;

    /// The value under `key` if the store can answer without waiting (an in-process store, or a tiered store's
    /// first level); `None` when it would have to wait, and the cache then calls [`get`](Store::get).
    ///
    /// A store that answers here lets a hit be served inside `Service::call`, without an allocation for the
    /// response future. The default answers `None`.
    fn get_now(&self, key: &str) -> Option<Result<Option<StoredValue>, StoreError>> {
        let _ = key;
        None
    }

    /// Stores `value` under `key` for at most `ttl`, replacing any value (and its tags).
    fn put(
        &self,
        key: &str,
        value: StoredValue,
        ttl: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes `key`; `true` if it was there.
    fn remove(&self, key: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Removes every key that starts with `prefix` (compared byte for byte); returns how many were removed.
    fn remove_prefix(&self, prefix: &str) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Removes every response tagged `tag`; returns how many were removed.
    fn remove_tag(&self, tag: &str) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Removes everything.
    fn clear(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// How many values the store holds and their total weight in bytes (best effort).
    fn usage(&self) -> impl Future<Output = Result<StoreUsage, StoreError>> + Send;

    /// Cross-server coalescing: tries to take a lease of `ttl` on `key` before calling the origin for it.
    ///
    /// [`Lease::Acquired`]: this server calls the origin, and the cache runs the [`LeaseRelease`] once the entry is
    /// stored (or the call failed); [`Lease::Held`]: another server is at it, so this one waits for the entry (or
    /// for the lease to lapse, when the holder crashed). Stores used by one process only answer
    /// [`Lease::Unsupported`] (the default): coalescing inside the process is enough.
    fn lease(
        &self,
        key: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<Lease, StoreError>> + Send {
        let _ = (key, ttl);
        std::future::ready(Ok(Lease::Unsupported))
    }
}

/// The answer to [`Store::lease`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Lease {
    /// Taken: run the release once the entry is stored or the origin call failed.
    Acquired(LeaseRelease),
    /// Another server holds it.
    Held,
    /// The store does not coordinate servers.
    Unsupported,
}

/// Gives a lease back (it lapses by itself after its TTL if this never runs).
pub struct LeaseRelease(Box<dyn FnOnce() + Send + Sync>);

impl LeaseRelease {
    /// A release that runs `f`.
    pub fn new(f: impl FnOnce() + Send + Sync + 'static) -> Self {
        Self(Box::new(f))
    }

    /// Gives the lease back.
    pub fn release(self) {
        (self.0)();
    }
}

impl std::fmt::Debug for LeaseRelease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LeaseRelease")
    }
}

/// A store's size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreUsage {
    /// Values held (responses, variant records and hit-for-pass markers).
    pub entries: u64,
    /// Their weight in bytes: [`StoredValue::weight`] plus what the store spends per value (for [`MokaStore`], the
    /// key, the tag index and moka's bookkeeping: the heap the store holds).
    pub bytes: u64,
}

/// A store operation failed. The source error is kept.
#[derive(Debug, thiserror::Error)]
#[error("cache store {operation} failed")]
pub struct StoreError {
    operation: &'static str,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl StoreError {
    /// A failure of `operation` (`get`, `put`, ...) caused by `source`.
    pub fn new(
        operation: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            operation,
            source: source.into(),
        }
    }

    /// The operation that failed.
    pub fn operation(&self) -> &'static str {
        self.operation
    }
}
