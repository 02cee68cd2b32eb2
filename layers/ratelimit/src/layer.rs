//! [`RateLimitLayer`], its [`Policy`]s and its builder.

use crate::{
    InMemoryStore, KeepBody, KeyExtractor, Quota, RateLimit, WrapBody,
    headers::PolicyState,
    metrics::PolicyMetrics,
    store::{MAX_POLICIES, PolicyId, RateLimitStore},
};
use bytes::Bytes;
use http::request::Parts;
use std::{
    fmt,
    marker::PhantomData,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};
use tower_kit_core::ConfigError;
use tower_layer::Layer;

type QuotaFn = dyn Fn(&Parts) -> Option<Quota> + Send + Sync;
pub(crate) type CostFn = dyn Fn(&Parts) -> u32 + Send + Sync;
pub(crate) type ExemptFn = dyn Fn(&Parts) -> bool + Send + Sync;
pub(crate) type RefusalFn = dyn Fn(&Parts, &Refusal<'_>) -> http::Response<Bytes> + Send + Sync;

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
    name: String,
    quota: QuotaSource,
    key: Option<KeyExtractor>,
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

/// What a refusal hook sees: why the request was refused.
#[derive(Debug)]
pub struct Refusal<'a> {
    pub(crate) retry_after: Option<Duration>,
    pub(crate) policies: &'a [PolicyState<'a>],
}

impl Refusal<'_> {
    /// When the same request could be admitted (`None`: never, its cost is above a burst).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Every policy that applied, with its outcome.
    pub fn policies(&self) -> &[PolicyState<'_>] {
        self.policies
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
    /// Refuse with `503 Service Unavailable` (gRPC: `UNAVAILABLE`) and this `Retry-After`.
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

pub(crate) struct Config<St> {
    pub(crate) store: St,
    pub(crate) policies: Box<[PolicyConfig]>,
    pub(crate) key: KeyExtractor,
    pub(crate) cost: Option<Arc<CostFn>>,
    pub(crate) exempt: Option<Arc<ExemptFn>>,
    pub(crate) headers_on_admitted: bool,
    pub(crate) legacy_headers: bool,
    pub(crate) dry_run: bool,
    pub(crate) on_refusal: Option<Arc<RefusalFn>>,
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
    _mode: PhantomData<fn() -> M>,
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
        // A fixed, valid name and one policy: building cannot fail.
        match Self::builder()
            .policy(Policy::new("default", quota))
            .build()
        {
            Ok(layer) => layer,
            Err(e) => unreachable!("the default configuration is valid: {e}"),
        }
    }

    /// A builder: policies, keys, cost, exemptions, headers, dry run, store.
    pub fn builder() -> RateLimitBuilder {
        RateLimitBuilder {
            store: InMemoryStore::new(),
            policies: Vec::new(),
            key: KeyExtractor::peer_ip(),
            cost: None,
            exempt: None,
            headers_on_admitted: false,
            legacy_headers: false,
            dry_run: false,
            on_refusal: None,
            store_failure: StoreFailure::FailOpen,
        }
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

/// Configures a [`RateLimitLayer`]; [`build`](Self::build) checks the settings.
#[must_use]
pub struct RateLimitBuilder<St = InMemoryStore> {
    store: St,
    policies: Vec<Policy>,
    key: KeyExtractor,
    cost: Option<Arc<CostFn>>,
    exempt: Option<Arc<ExemptFn>>,
    headers_on_admitted: bool,
    legacy_headers: bool,
    dry_run: bool,
    on_refusal: Option<Arc<RefusalFn>>,
    store_failure: StoreFailure,
}

impl<St> fmt::Debug for RateLimitBuilder<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitBuilder")
            .field("policies", &self.policies)
            .field("key", &self.key)
            .field("dry_run", &self.dry_run)
            .finish_non_exhaustive()
    }
}

impl<St> RateLimitBuilder<St> {
    /// Adds a policy (at least one, at most 4, names unique).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policies.push(policy);
        self
    }

    /// The key of policies that do not set their own (default: [`KeyExtractor::peer_ip`]).
    pub fn key(mut self, key: KeyExtractor) -> Self {
        self.key = key;
        self
    }

    /// What a request costs, in units of every policy (default 1). A cost of 0 is always admitted.
    pub fn cost<F>(mut self, cost: F) -> Self
    where
        F: Fn(&Parts) -> u32 + Send + Sync + 'static,
    {
        self.cost = Some(Arc::new(cost));
        self
    }

    /// Requests for which `exempt` returns `true` skip every policy (health checks, allowlisted networks).
    pub fn exempt<F>(mut self, exempt: F) -> Self
    where
        F: Fn(&Parts) -> bool + Send + Sync + 'static,
    {
        self.exempt = Some(Arc::new(exempt));
        self
    }

    /// Also send `RateLimit-Policy` and `RateLimit` on admitted responses (default: only on refusals, which keeps
    /// the admitted path cheapest).
    pub fn headers_on_admitted(mut self, on: bool) -> Self {
        self.headers_on_admitted = on;
        self
    }

    /// Also send `X-RateLimit-Limit`, `-Remaining` and `-Reset` (delta seconds), describing the most restrictive
    /// policy (default off).
    pub fn legacy_headers(mut self, on: bool) -> Self {
        self.legacy_headers = on;
        self
    }

    /// Decide, count and log, but never refuse (default off). Would-be refusals are counted as `dry_run_refused`
    /// and, as in enforcing mode, consume nothing.
    pub fn dry_run(mut self, on: bool) -> Self {
        self.dry_run = on;
        self
    }

    /// Builds refusals yourself. The layer then adds `Retry-After`, `RateLimit-Policy` and `RateLimit` when your
    /// response does not set them.
    pub fn on_refusal<F>(mut self, hook: F) -> Self
    where
        F: Fn(&Parts, &Refusal<'_>) -> http::Response<Bytes> + Send + Sync + 'static,
    {
        self.on_refusal = Some(Arc::new(hook));
        self
    }

    /// What to do when the store fails (default [`StoreFailure::FailOpen`]). The in-process store cannot fail.
    pub fn store_failure(mut self, policy: StoreFailure) -> Self {
        self.store_failure = policy;
        self
    }

    /// Uses another store (an [`InMemoryStore`] with a fake clock or another key cap, a shared one, a networked one).
    pub fn store<St2: RateLimitStore>(self, store: St2) -> RateLimitBuilder<St2> {
        RateLimitBuilder {
            store,
            policies: self.policies,
            key: self.key,
            cost: self.cost,
            exempt: self.exempt,
            headers_on_admitted: self.headers_on_admitted,
            legacy_headers: self.legacy_headers,
            dry_run: self.dry_run,
            on_refusal: self.on_refusal,
            store_failure: self.store_failure,
        }
    }

    /// Checks the settings and makes the layer.
    pub fn build(self) -> Result<RateLimitLayer<St>, ConfigError> {
        if self.policies.is_empty() {
            return Err(ConfigError::new("policy", "at least one policy is needed"));
        }
        if self.policies.len() > MAX_POLICIES {
            return Err(ConfigError::new(
                "policy",
                format!(
                    "at most {MAX_POLICIES} policies (got {})",
                    self.policies.len()
                ),
            ));
        }
        let mut policies = Vec::with_capacity(self.policies.len());
        for p in self.policies {
            let valid = !p.name.is_empty()
                && p.name.len() <= 64
                && p.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if !valid {
                return Err(ConfigError::new(
                    "policy",
                    format!("name must match [A-Za-z0-9_.-]{{1,64}} (got {:?})", p.name),
                ));
            }
            if policies.iter().any(|q: &PolicyConfig| *q.name == *p.name) {
                return Err(ConfigError::new(
                    "policy",
                    format!("duplicate name {:?}", p.name),
                ));
            }
            policies.push(PolicyConfig {
                id: PolicyId::of(&p.name),
                metrics: PolicyMetrics::new(&p.name),
                name: p.name.into(),
                quota: p.quota,
                key: p.key,
            });
        }
        if let StoreFailure::FailClosed { retry_after } = self.store_failure
            && retry_after.is_zero()
        {
            return Err(ConfigError::new(
                "store_failure",
                "FailClosed retry_after must be greater than zero (got 0ns)",
            ));
        }
        if let StoreFailure::FailOpenCapped { percent } = self.store_failure
            && !(1..=100).contains(&percent)
        {
            return Err(ConfigError::new(
                "store_failure",
                format!("FailOpenCapped percent must be within 1..=100 (got {percent})"),
            ));
        }
        let fallback = matches!(self.store_failure, StoreFailure::FailOpenCapped { .. })
            .then(InMemoryStore::new);
        let fixed: Option<Vec<PolicyState<'_>>> = policies
            .iter()
            .map(|p| match &p.quota {
                QuotaSource::Fixed(quota) => Some(PolicyState {
                    name: &p.name,
                    quota: *quota,
                    outcome: Default::default(),
                }),
                QuotaSource::PerRequest(_) => None,
            })
            .collect();
        let fixed_policy_header = fixed.map(|states| crate::headers::policy_header(&states));
        let needs_parts = self.cost.is_some()
            || self.exempt.is_some()
            || self.on_refusal.is_some()
            || self.key.needs_parts()
            || policies.iter().any(|p| {
                matches!(p.quota, QuotaSource::PerRequest(_))
                    || p.key.as_ref().is_some_and(|k| k.needs_parts())
            });
        let single = match &*policies {
            [p] if !needs_parts => match &p.quota {
                QuotaSource::Fixed(quota) => Some(Single {
                    id: p.id,
                    quota: *quota,
                    key: p.key.clone().unwrap_or_else(|| self.key.clone()),
                }),
                QuotaSource::PerRequest(_) => None,
            },
            _ => None,
        };
        Ok(RateLimitLayer {
            _mode: PhantomData,
            config: Arc::new(Config {
                store: self.store,
                policies: policies.into(),
                key: self.key,
                cost: self.cost,
                exempt: self.exempt,
                headers_on_admitted: self.headers_on_admitted,
                legacy_headers: self.legacy_headers,
                dry_run: self.dry_run,
                on_refusal: self.on_refusal,
                store_failure: self.store_failure,
                fallback,
                failure_log: crate::log_limit::LogLimiter::new(Duration::from_secs(1)),
                warned_unknown: AtomicBool::new(false),
                warned_missing_address: AtomicBool::new(false),
                fixed_policy_header,
                needs_parts,
                single,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn q() -> Quota {
        Quota::per_second(NonZeroU32::new(1).unwrap())
    }

    #[test]
    fn bad_configurations_name_the_field() {
        let e = RateLimitLayer::builder().build().unwrap_err();
        assert_eq!(e.field(), "policy");
        for bad in ["", "has space", "quote\"", "é", &"x".repeat(65)] {
            let e = RateLimitLayer::builder()
                .policy(Policy::new(bad, q()))
                .build()
                .unwrap_err();
            assert_eq!(e.field(), "policy", "{bad:?}");
        }
        let e = RateLimitLayer::builder()
            .policy(Policy::new("a", q()))
            .policy(Policy::new("a", q()))
            .build()
            .unwrap_err();
        assert!(e.reason().contains("duplicate"));
        let mut b = RateLimitLayer::builder();
        for i in 0..5 {
            b = b.policy(Policy::new(format!("p{i}"), q()));
        }
        assert!(b.build().unwrap_err().reason().contains("at most 4"));
        let e = RateLimitLayer::builder()
            .policy(Policy::new("a", q()))
            .store_failure(StoreFailure::FailClosed {
                retry_after: Duration::ZERO,
            })
            .build()
            .unwrap_err();
        assert_eq!(e.field(), "store_failure");
        for percent in [0, 101] {
            let e = RateLimitLayer::builder()
                .policy(Policy::new("a", q()))
                .store_failure(StoreFailure::FailOpenCapped { percent })
                .build()
                .unwrap_err();
            assert_eq!(e.field(), "store_failure");
            assert!(e.reason().contains("1..=100"), "{}", e.reason());
        }
    }

    #[test]
    fn layer_is_clone_and_debug() {
        let l = RateLimitLayer::new(q());
        let l2 = l.clone();
        assert!(Arc::ptr_eq(&l.config, &l2.config));
        assert!(format!("{l:?}").contains("default"));
    }
}
