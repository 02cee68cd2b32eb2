//! [`RateLimitLayer`], its [`Policy`]s, and the configuration its services share.

use crate::{
    InMemoryStore, KeepBody, KeyExtractor, Quota, RateLimit, RateLimitLayerBuilder, WrapBody,
    metrics::PolicyMetrics, refusal::Refusals, store::PolicyId,
};
use http::request::Parts;
use std::{
    fmt,
    marker::PhantomData,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};
use tower_kit_core::Exempt;
use tower_layer::Layer;

type QuotaFn = dyn Fn(&Parts) -> Option<Quota> + Send + Sync;
pub(crate) type CostFn = dyn Fn(&Parts) -> u32 + Send + Sync;

#[derive(Clone)]
pub(crate) enum QuotaSource {
    Fixed(Quota),
    PerRequest(Arc<QuotaFn>),
}

/// A named quota and how it keys requests.
///
/// A request is admitted only when every policy that applies to it admits it (see the crate docs for the exact
/// semantics). The name shows in headers (`RateLimit-Policy: "burst";q=10;w=1`), metrics and logs, and identifies
/// the policy's states in the store: it must match `[A-Za-z0-9_.-]{1,64}`.
#[derive(Clone)]
pub struct Policy {
    pub(crate) name: String,
    pub(crate) quota: QuotaSource,
    pub(crate) key: Option<KeyExtractor>,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let quota = match &self.quota {
            QuotaSource::Fixed(q) => format!("{q:?}"),
            QuotaSource::PerRequest(_) => "per request".to_owned(),
        };
        f.debug_struct("Policy")
            .field("name", &self.name)
            .field("quota", &quota)
            .field("key", &self.key)
            .finish()
    }
}

impl Policy {
    /// A policy with one quota for every request, keyed by the layer's key (default: the peer IP).
    pub fn new(name: impl Into<String>, quota: Quota) -> Self {
        Self {
            name: name.into(),
            quota: QuotaSource::Fixed(quota),
            key: None,
        }
    }

    /// A policy whose quota depends on the request (tiers: anonymous vs paying customers). `None` means the
    /// policy does not apply to this request.
    pub fn per_request<F>(name: impl Into<String>, quota: F) -> Self
    where
        F: Fn(&Parts) -> Option<Quota> + Send + Sync + 'static,
    {
        Self {
            name: name.into(),
            quota: QuotaSource::PerRequest(Arc::new(quota)),
            key: None,
        }
    }

    /// Keys this policy's requests with `key` instead of the layer's key.
    #[must_use]
    pub fn key(mut self, key: KeyExtractor) -> Self {
        self.key = Some(key);
        self
    }
}

/// What to do when the store fails (a networked store that is down or slow).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreFailure {
    /// Admit the request (the default): a broken limiter should not take the service down.
    #[default]
    FailOpen,
    /// Admit, but through an in-process limiter at `percent`% of each quota (1..=100): each server still
    /// enforces its share while the shared store is away. With N servers, `100 / N` keeps the total near the quota.
    /// Decisions keep the usual headers (`RateLimit-Policy` states the configured quota, `RateLimit` the local
    /// state). The local states are separate from the store's and are forgotten like any idle in-process state.
    FailOpenCapped {
        /// The share of each quota (limit and burst, rounded down, at least 1) enforced per server, in percent.
        percent: u8,
    },
    /// Refuse with `503 Service Unavailable` (gRPC: `UNAVAILABLE`) and this `Retry-After`; the hooks see it as
    /// [`RefusalReason::StoreUnavailable`](crate::RefusalReason::StoreUnavailable).
    FailClosed {
        /// The `Retry-After` of the 503 (rounded up to whole seconds).
        retry_after: Duration,
    },
}

pub(crate) struct PolicyConfig {
    pub(crate) name: Arc<str>,
    pub(crate) id: PolicyId,
    pub(crate) quota: QuotaSource,
    pub(crate) key: Option<KeyExtractor>,
    pub(crate) metrics: PolicyMetrics,
}

impl PolicyConfig {
    /// A policy's configuration, its id and metric keys derived from its name (checked by the builder).
    pub(crate) fn new(p: Policy) -> Self {
        PolicyConfig {
            id: PolicyId::of(&p.name),
            metrics: PolicyMetrics::new(&p.name),
            name: p.name.into(),
            quota: p.quota,
            key: p.key,
        }
    }

    /// Whether this policy reads the whole `Parts` (a per-request quota or its own key closure).
    pub(crate) fn needs_parts(&self) -> bool {
        matches!(self.quota, QuotaSource::PerRequest(_))
            || self.key.as_ref().is_some_and(KeyExtractor::needs_parts)
    }
}

pub(crate) struct Config<St> {
    pub(crate) store: St,
    pub(crate) policies: Box<[PolicyConfig]>,
    pub(crate) key: KeyExtractor,
    pub(crate) cost: Option<Arc<CostFn>>,
    pub(crate) exempt: Exempt,
    pub(crate) headers_on_admitted: bool,
    pub(crate) legacy_headers: bool,
    pub(crate) dry_run: bool,
    pub(crate) refusals: Refusals,
    pub(crate) store_failure: StoreFailure,
    /// The in-process limiter of [`StoreFailure::FailOpenCapped`].
    pub(crate) fallback: Option<InMemoryStore>,
    /// Store failures are logged at most once a second.
    pub(crate) failure_log: crate::log_limit::LogLimiter,
    pub(crate) warned_unknown: AtomicBool,
    pub(crate) warned_missing_address: AtomicBool,
    /// `RateLimit-Policy` when every policy has a fixed quota (then it never changes).
    pub(crate) fixed_policy_header: Option<http::HeaderValue>,
    /// Whether a user closure reads the whole `Parts`, so the request must be split (otherwise it is read in place).
    pub(crate) needs_parts: bool,
    /// Set when the layer has one policy with a fixed quota and no closure over `Parts`: such a request needs no
    /// plan (the common configuration, decided on a shorter path).
    pub(crate) single: Option<Single>,
}

/// The one check of a layer with a single fixed-quota policy (see [`Config::single`]).
pub(crate) struct Single {
    pub(crate) id: PolicyId,
    pub(crate) quota: Quota,
    pub(crate) key: KeyExtractor,
}

/// Keyed GCRA rate limiting as a tower [`Layer`]: see the [crate docs](crate).
///
/// All services made by one layer value (and its clones) share one store, so one layer is one limit however many
/// routes axum applies it to.
///
/// `M` is the response [`BodyMode`](crate::BodyMode): [`WrapBody`] by default, [`KeepBody`] after
/// [`keep_inner_body`](Self::keep_inner_body).
#[must_use]
pub struct RateLimitLayer<St = InMemoryStore, M = WrapBody> {
    pub(crate) config: Arc<Config<St>>,
    pub(crate) _mode: PhantomData<fn() -> M>,
}

impl<St, M> Clone for RateLimitLayer<St, M> {
    fn clone(&self) -> Self {
        Self {
            config: Arc::clone(&self.config),
            _mode: PhantomData,
        }
    }
}

impl<St, M> fmt::Debug for RateLimitLayer<St, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        f.debug_struct("RateLimitLayer")
            .field(
                "policies",
                &c.policies.iter().map(|p| &*p.name).collect::<Vec<_>>(),
            )
            .field("key", &c.key)
            .field("dry_run", &c.dry_run)
            .field("headers_on_admitted", &c.headers_on_admitted)
            .field("legacy_headers", &c.legacy_headers)
            .finish_non_exhaustive()
    }
}

impl RateLimitLayer {
    /// One policy named `"default"` with `quota`, keyed by the peer IP (IPv6 by /64), on a fresh in-process store.
    pub fn new(quota: Quota) -> Self {
        // A fixed, valid name, one policy and the builder's defaults: what `build` accepts (a unit test keeps it
        // so), assembled without a fallible path.
        RateLimitLayerBuilder::new()
            .assemble(vec![PolicyConfig::new(Policy::new("default", quota))])
    }

    /// A builder: policies, keys, cost, exemptions, headers, dry run, store.
    pub fn builder() -> RateLimitLayerBuilder {
        RateLimitLayerBuilder::new()
    }
}

impl<St, M> RateLimitLayer<St, M> {
    /// The store the layer's services share.
    pub fn store(&self) -> &St {
        &self.config.store
    }

    /// Responses keep the inner service's body type (which must implement `From<Bytes>`, as axum's `Body` and
    /// `Full<Bytes>` do) instead of a `PolicyBody` wrapper: see [`KeepBody`]. Recommended under axum, where it
    /// saves a body allocation per response.
    pub fn keep_inner_body(self) -> RateLimitLayer<St, KeepBody> {
        RateLimitLayer {
            config: self.config,
            _mode: PhantomData,
        }
    }
}

impl<S, St, M> Layer<S> for RateLimitLayer<St, M> {
    type Service = RateLimit<S, St, M>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            config: Arc::clone(&self.config),
            _mode: PhantomData,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    #[test]
    fn layer_is_clone_and_debug() {
        let l = RateLimitLayer::new(Quota::per_second(NonZeroU32::new(1).unwrap()));
        let l2 = l.clone();
        assert!(Arc::ptr_eq(&l.config, &l2.config));
        assert!(format!("{l:?}").contains("default"));
    }
}
