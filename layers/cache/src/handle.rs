//! `CacheHandle`: invalidation, purge, stats and warm-up from outside the layer.

use crate::{
    layer::Shared,
    stats::CacheStats,
    status::X_CACHE,
    store::{MokaStore, Store, StoreError},
};
use http::{Request, Response, StatusCode};
use http_body::Body;
use std::{
    fmt,
    future::poll_fn,
    pin::pin,
    sync::{Arc, atomic::Ordering},
};
use tower_service::Service;

/// Controls one cache from outside the layer: invalidate by URL, path prefix or tag, purge, read stats, warm up.
///
/// Get one with [`CacheLayer::handle`](crate::CacheLayer::handle).
/// Clones share the cache. Every invalidation also stops responses that were in flight when it happened from being
/// stored (they may be older than the change that caused the invalidation).
pub struct CacheHandle<St = MokaStore> {
    pub(crate) shared: Arc<Shared<St>>,
}

impl<St> Clone for CacheHandle<St> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<St> fmt::Debug for CacheHandle<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheHandle")
            .field("shared", &self.shared)
            .finish()
    }
}

/// The result of [`CacheHandle::warm_up`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WarmUp {
    /// The status of each request, in order; `None` when the service returned an error or the body failed.
    pub statuses: Vec<Option<StatusCode>>,
    /// Responses that were already in the cache (`X-Cache: HIT`).
    pub already_cached: usize,
    /// Responses the cache stored during the warm-up (counted from the cache's own counter, so concurrent traffic
    /// may add to it).
    pub stored: u64,
}

impl<St: Store> CacheHandle<St> {
    fn invalidated(&self) {
        self.shared.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Removes every stored response for one URL: a path with an optional query (`/api/items?page=2`), every host;
    /// or an absolute URL (`https://example.com/api/items`), that host only. Every `Vary` variant goes with it.
    /// Returns how many values were removed; a string that is not a URL removes nothing.
    pub async fn invalidate_url(&self, url: &str) -> Result<u64, StoreError> {
        self.invalidated();
        let Some(prefix) = self.shared.config.key.url_prefix(url) else {
            return Ok(0);
        };
        let removed = self.shared.store.remove_prefix(&prefix).await?;
        metrics::counter!("tower_kit.cache.invalidations", "kind" => "url").increment(1);
        Ok(removed)
    }

    /// Removes every stored response whose path starts with `path_prefix` (`/api/items` also matches
    /// `/api/items/7` and `/api/items?page=2`).
    pub async fn invalidate_prefix(&self, path_prefix: &str) -> Result<u64, StoreError> {
        self.invalidated();
        let prefix = self.shared.config.key.path_prefix(path_prefix);
        let removed = self.shared.store.remove_prefix(&prefix).await?;
        metrics::counter!("tower_kit.cache.invalidations", "kind" => "prefix").increment(1);
        Ok(removed)
    }

    /// Removes every stored response tagged `tag` (from `Cache-Tag`/`Surrogate-Key` or the tag closure).
    pub async fn invalidate_tag(&self, tag: &str) -> Result<u64, StoreError> {
        self.invalidated();
        let removed = self.shared.store.remove_tag(tag).await?;
        metrics::counter!("tower_kit.cache.invalidations", "kind" => "tag").increment(1);
        Ok(removed)
    }

    /// Removes everything from the store.
    pub async fn purge(&self) -> Result<(), StoreError> {
        self.invalidated();
        self.shared.store.clear().await?;
        metrics::counter!("tower_kit.cache.invalidations", "kind" => "purge").increment(1);
        Ok(())
    }

    /// Counters since the layer was built, plus the store's size (0 entries when the store cannot say).
    pub async fn stats(&self) -> CacheStats {
        let mut stats = self.shared.counters.snapshot();
        match self.shared.store.usage().await {
            Ok(usage) => {
                stats.entries = usage.entries;
                stats.bytes = usage.bytes;
            }
            Err(e) => self.shared.counters.store_error(&e),
        }
        stats.in_flight = self.shared.flights.len() as u64;
        stats
    }

    /// Sends each request through `service` (a service wrapped in this cache, such as the app's router) one after
    /// the other and reads each body to its end, so that storable responses are stored. Use it at start-up.
    pub async fn warm_up<S, ReqB, ResB>(
        &self,
        mut service: S,
        requests: impl IntoIterator<Item = Request<ReqB>>,
    ) -> WarmUp
    where
        S: Service<Request<ReqB>, Response = Response<ResB>>,
        ResB: Body,
    {
        let before = self.shared.counters.snapshot().stored;
        let mut report = WarmUp::default();
        for request in requests {
            let status = async {
                poll_fn(|cx| service.poll_ready(cx)).await.ok()?;
                let response = service.call(request).await.ok()?;
                if response.headers().get(&X_CACHE).is_some_and(|v| v == "HIT") {
                    report.already_cached += 1;
                }
                let status = response.status();
                let mut body = pin!(response.into_body());
                while let Some(frame) = poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
                    frame.ok()?;
                }
                Some(status)
            }
            .await;
            report.statuses.push(status);
        }
        report.stored = self
            .shared
            .counters
            .snapshot()
            .stored
            .saturating_sub(before);
        report
    }
}
