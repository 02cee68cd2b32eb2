//! `CacheLayer`: the configuration and the state every service of one layer shares. Its builder is in
//! `builder.rs`.

use crate::{
    builder::CacheLayerBuilder,
    coalesce::Flights,
    handle::CacheHandle,
    key::KeyConfig,
    service::Cache,
    stats::Counters,
    storability::StorePolicy,
    store::{MokaStore, Store},
};
use http::{HeaderMap, HeaderName, Uri, request::Parts, response};
use std::{
    fmt,
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};
use tower_kit_core::WallClock;
use tower_layer::Layer;

/// A closure that picks a default TTL for a request whose response has no freshness information.
pub(crate) type DefaultTtlFn = Arc<dyn Fn(&Parts) -> Option<Duration> + Send + Sync>;
/// A closure that tags a response (`Fn(request URI, response head) -> tags`).
pub(crate) type TagFn = Arc<dyn Fn(&Uri, &response::Parts) -> Vec<String> + Send + Sync>;

/// Default TTL tiers for responses that carry no freshness information of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TtlTier {
    /// 60 seconds.
    Minute,
    /// 300 seconds.
    FiveMinutes,
    /// 900 seconds.
    FifteenMinutes,
    /// 3600 seconds.
    Hour,
}

impl From<TtlTier> for Duration {
    fn from(tier: TtlTier) -> Duration {
        Duration::from_secs(match tier {
            TtlTier::Minute => 60,
            TtlTier::FiveMinutes => 300,
            TtlTier::FifteenMinutes => 900,
            TtlTier::Hour => 3600,
        })
    }
}

/// The settings of one cache, shared by its services through an `Arc`.
pub(crate) struct Config {
    pub(crate) key: KeyConfig,
    pub(crate) policy: StorePolicy,
    pub(crate) max_entry_size: usize,
    pub(crate) hit_for_pass: Duration,
    pub(crate) coalesce: bool,
    /// Path prefixes and their default TTL, longest prefix first.
    pub(crate) default_ttls: Vec<(String, Duration)>,
    pub(crate) default_ttl_fn: Option<DefaultTtlFn>,
    pub(crate) tag_headers: Vec<HeaderName>,
    pub(crate) tag_fn: Option<TagFn>,
    pub(crate) strip_tag_headers: bool,
    pub(crate) status_name: String,
    pub(crate) x_cache: bool,
    /// `stale-while-revalidate` for responses that do not say.
    pub(crate) stale_while_revalidate: Duration,
    /// `stale-if-error` for responses that do not say.
    pub(crate) stale_if_error: Duration,
    /// How long a stale response with a validator is kept for revalidation.
    pub(crate) keep_stale: Duration,
    /// How long a cross-server coalescing lease lasts (a crashed holder's lapses after it).
    pub(crate) lease_ttl: Duration,
    /// Answer `Range` requests from stored responses.
    pub(crate) ranges: bool,
    /// How long past freshness a response may answer when the origin cannot be reached (RFC 9111 §4.2.4).
    pub(crate) stale_if_disconnected: Duration,
    /// The targeted cache-control fields removed from responses to clients (empty: none; RFC 9213 lets a cache
    /// remove the fields aimed at it).
    pub(crate) strip_targeted: Vec<HeaderName>,
}

impl Config {
    /// The `stale-while-revalidate` window of an entry: its own, else the configured one; none when it must be
    /// validated.
    pub(crate) fn stale_while_revalidate(&self, entry: &crate::Entry) -> Duration {
        if entry.must_revalidate || entry.no_cache {
            return Duration::ZERO;
        }
        entry
            .stale_while_revalidate
            .unwrap_or(self.stale_while_revalidate)
    }

    /// The `stale-if-error` window of an entry: its own, else the configured one; none when it must be validated.
    pub(crate) fn stale_if_error(&self, entry: &crate::Entry) -> Duration {
        if entry.must_revalidate || entry.no_cache {
            return Duration::ZERO;
        }
        entry.stale_if_error.unwrap_or(self.stale_if_error)
    }

    /// How long past its freshness an entry is kept: while it may be served stale, and (with a validator) while
    /// it may be revalidated.
    pub(crate) fn retention(&self, entry: &crate::Entry) -> Duration {
        let keep = if entry.has_validator() {
            self.keep_stale
        } else {
            Duration::ZERO
        };
        keep.max(self.stale_while_revalidate(entry))
            .max(self.stale_if_error(entry))
            .max(self.stale_if_disconnected(entry))
    }

    /// How long past freshness an entry may answer when the origin cannot be reached (RFC 9111 §4.2.4); none when
    /// it must be validated.
    pub(crate) fn stale_if_disconnected(&self, entry: &crate::Entry) -> Duration {
        if entry.must_revalidate || entry.no_cache {
            return Duration::ZERO;
        }
        self.stale_if_disconnected
    }

    /// Removes this cache's own targeted cache-control fields from a response to a client, when configured
    /// (`strip_targeted_cache_control`). Nothing to do, and nothing looked at, by default.
    pub(crate) fn strip_targeted(&self, headers: &mut HeaderMap) {
        for name in &self.strip_targeted {
            headers.remove(name);
        }
    }

    pub(crate) fn default_ttl(&self, parts: &Parts) -> Option<Duration> {
        if let Some(f) = &self.default_ttl_fn
            && let Some(ttl) = f(parts)
        {
            return Some(ttl);
        }
        let path = parts.uri.path();
        self.default_ttls
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix.as_str()))
            .map(|(_, ttl)| *ttl)
    }
}

/// The state of one cache: created with the layer, shared by every service it makes and by its handles.
pub(crate) struct Shared<St> {
    pub(crate) config: Config,
    pub(crate) store: St,
    pub(crate) flights: Arc<Flights>,
    pub(crate) counters: Counters,
    pub(crate) clock: Arc<dyn WallClock>,
    /// Bumped by every invalidation: fills that started before it are not stored.
    pub(crate) generation: AtomicU64,
}

impl<St> fmt::Debug for Shared<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("key", &self.config.key)
            .field("max_entry_size", &self.config.max_entry_size)
            .field("in_flight", &self.flights.len())
            .finish_non_exhaustive()
    }
}

/// An RFC 9111 shared HTTP response cache as a Tower layer. See the [crate docs](crate).
///
/// All services made by one layer value (axum calls [`Layer::layer`] once per route) share one store, one
/// coalescing map and one set of counters, so one layer is one cache.
#[must_use]
pub struct CacheLayer<St = MokaStore> {
    pub(crate) shared: Arc<Shared<St>>,
}

impl<St> Clone for CacheLayer<St> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<St> fmt::Debug for CacheLayer<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheLayer")
            .field("shared", &self.shared)
            .finish()
    }
}

impl CacheLayer<MokaStore> {
    /// A cache with every default: a 64 MiB moka store, entries up to 1 MiB, freshness only from the responses'
    /// own headers.
    pub fn new() -> Self {
        CacheLayerBuilder::default_layer()
    }

    /// A builder for every setting.
    pub fn builder() -> CacheLayerBuilder<MokaStore> {
        CacheLayerBuilder::new()
    }
}

impl Default for CacheLayer<MokaStore> {
    fn default() -> Self {
        Self::new()
    }
}

impl<St: Store> CacheLayer<St> {
    /// A handle for invalidation, purge, stats and warm-up. Handles share the cache with the layer.
    pub fn handle(&self) -> CacheHandle<St> {
        CacheHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S, St> Layer<S> for CacheLayer<St> {
    type Service = Cache<S, St>;

    fn layer(&self, inner: S) -> Self::Service {
        Cache::new(inner, Arc::clone(&self.shared))
    }
}
