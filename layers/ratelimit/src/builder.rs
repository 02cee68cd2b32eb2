//! [`RateLimitLayerBuilder`]: the settings of a [`RateLimitLayer`], checked by [`build`](RateLimitLayerBuilder::build).

use crate::{
    InMemoryStore, KeyExtractor, Policy, RateLimitLayer, StoreFailure,
    headers::PolicyState,
    layer::{Config, CostFn, PolicyConfig, QuotaSource, Single},
    refusal::{DEFAULT_BODY, MapRefusal, Refusal, RefusalHook, Refusals},
    store::{MAX_POLICIES, PolicyKeys, RateLimitStore},
};
use bytes::Bytes;
use http::{Response, StatusCode, request::Parts};
use std::{
    fmt,
    marker::PhantomData,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};
use tower_kit_core::{ConfigError, Exempt};

/// Configures a [`RateLimitLayer`]; [`build`](Self::build) checks the settings.
#[must_use]
pub struct RateLimitLayerBuilder<St = InMemoryStore> {
    store: St,
    policies: Vec<Policy>,
    key: KeyExtractor,
    cost: Option<Arc<CostFn>>,
    exempt: Exempt,
    headers_on_admitted: bool,
    legacy_headers: bool,
    dry_run: bool,
    refusal: RefusalSettings,
    store_failure: StoreFailure,
}

/// The refusal settings, kept together.
struct RefusalSettings {
    status: StatusCode,
    body: Bytes,
    on_refusal: Option<RefusalHook>,
    map_refusal: Option<MapRefusal>,
}

impl<St> fmt::Debug for RateLimitLayerBuilder<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayerBuilder")
            .field("policies", &self.policies)
            .field("key", &self.key)
            .field("dry_run", &self.dry_run)
            .field("refusal_status", &self.refusal.status)
            .finish_non_exhaustive()
    }
}

impl RateLimitLayerBuilder {
    pub(crate) fn new() -> Self {
        RateLimitLayerBuilder {
            store: InMemoryStore::new(),
            policies: Vec::new(),
            key: KeyExtractor::peer_ip(),
            cost: None,
            exempt: Exempt::none(),
            headers_on_admitted: false,
            legacy_headers: false,
            dry_run: false,
            refusal: RefusalSettings {
                status: StatusCode::TOO_MANY_REQUESTS,
                body: Bytes::from_static(DEFAULT_BODY),
                on_refusal: None,
                map_refusal: None,
            },
            store_failure: StoreFailure::FailOpen,
        }
    }
}

impl<St> RateLimitLayerBuilder<St> {
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

    tower_kit_core::exempt_setter! {
        /// Requests for which `exempt` returns `true` skip every policy (health checks, allowlisted networks).
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

    /// The HTTP status of a quota refusal, a 4xx or 5xx (default 429 Too Many Requests). gRPC calls always get
    /// HTTP 200 with `grpc-status: 8` (RESOURCE_EXHAUSTED).
    pub fn refusal_status(mut self, status: StatusCode) -> Self {
        self.refusal.status = status;
        self
    }

    /// The body of a quota refusal, sent as `text/plain; charset=utf-8` (default `rate limit exceeded`; empty for
    /// none).
    pub fn refusal_body(mut self, body: impl Into<Bytes>) -> Self {
        self.refusal.body = body.into();
        self
    }

    /// Called for every refusal, with why it happened, the policies and the request head (log it, count it). Runs
    /// on the request's task; keep it short. Setting it does not slow admitted requests.
    pub fn on_refusal<F>(mut self, hook: F) -> Self
    where
        F: Fn(&Refusal<'_>) + Send + Sync + 'static,
    {
        self.refusal.on_refusal = Some(Arc::new(hook));
        self
    }

    /// A hook that may change each refusal response before it is sent: add headers, change the status or body, or
    /// replace it (`*response = ...`, a JSON error say). The layer then adds `Retry-After` (HTTP refusals),
    /// `RateLimit-Policy` and `RateLimit` where your response does not set them, so a client still learns when to
    /// come back.
    pub fn map_refusal<F>(mut self, map: F) -> Self
    where
        F: Fn(&Refusal<'_>, &mut Response<Bytes>) + Send + Sync + 'static,
    {
        self.refusal.map_refusal = Some(Arc::new(map));
        self
    }

    /// What to do when the store fails (default [`StoreFailure::FailOpen`]). The in-process store cannot fail.
    pub fn store_failure(mut self, policy: StoreFailure) -> Self {
        self.store_failure = policy;
        self
    }

    /// Uses another store (an [`InMemoryStore`] with a fake clock or another key cap, a shared one, a networked one).
    pub fn store<St2: RateLimitStore>(self, store: St2) -> RateLimitLayerBuilder<St2> {
        RateLimitLayerBuilder {
            store,
            policies: self.policies,
            key: self.key,
            cost: self.cost,
            exempt: self.exempt,
            headers_on_admitted: self.headers_on_admitted,
            legacy_headers: self.legacy_headers,
            dry_run: self.dry_run,
            refusal: self.refusal,
            store_failure: self.store_failure,
        }
    }
}

impl<St: RateLimitStore> RateLimitLayerBuilder<St> {
    /// Checks the settings (the store's too: [`RateLimitStore::check_policies`]) and makes the layer.
    pub fn build(mut self) -> Result<RateLimitLayer<St>, ConfigError> {
        let policies = check_policies(std::mem::take(&mut self.policies))?;
        check_store_policies(&self.store, &policies, &self.key)?;
        check_store_failure(self.store_failure)?;
        check_refusal_status(self.refusal.status)?;
        Ok(self.assemble(policies))
    }

    /// The layer from settings already checked (or the defaults with one policy, which are valid).
    pub(crate) fn assemble(self, policies: Vec<PolicyConfig>) -> RateLimitLayer<St> {
        let needs_parts = self.cost.is_some()
            || self.exempt.is_set()
            || self.key.needs_parts()
            || policies.iter().any(PolicyConfig::needs_parts);
        let single = single_policy(&policies, needs_parts, &self.key);
        let fail_closed = match self.store_failure {
            StoreFailure::FailClosed { retry_after } => Some(retry_after),
            _ => None,
        };
        let refusals = Refusals::new(
            self.refusal.status,
            self.refusal.body,
            fail_closed,
            self.refusal.on_refusal,
            self.refusal.map_refusal,
        );
        RateLimitLayer {
            _mode: PhantomData,
            config: Arc::new(Config {
                store: self.store,
                fixed_policy_header: fixed_policy_header(&policies),
                policies: policies.into(),
                key: self.key,
                cost: self.cost,
                exempt: self.exempt,
                headers_on_admitted: self.headers_on_admitted,
                legacy_headers: self.legacy_headers,
                dry_run: self.dry_run,
                refusals,
                store_failure: self.store_failure,
                fallback: matches!(self.store_failure, StoreFailure::FailOpenCapped { .. })
                    .then(InMemoryStore::new),
                failure_log: crate::log_limit::LogLimiter::new(Duration::from_secs(1)),
                warned_unknown: AtomicBool::new(false),
                warned_missing_address: AtomicBool::new(false),
                needs_parts,
                single,
            }),
        }
    }
}

/// One to [`MAX_POLICIES`] policies with valid, distinct names, each with its id and metric keys.
fn check_policies(policies: Vec<Policy>) -> Result<Vec<PolicyConfig>, ConfigError> {
    if policies.is_empty() {
        return Err(ConfigError::new("policy", "at least one policy is needed"));
    }
    if policies.len() > MAX_POLICIES {
        return Err(ConfigError::new(
            "policy",
            format!("at most {MAX_POLICIES} policies (got {})", policies.len()),
        ));
    }
    let mut checked: Vec<PolicyConfig> = Vec::with_capacity(policies.len());
    for p in policies {
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
        if checked.iter().any(|q| *q.name == *p.name) {
            return Err(ConfigError::new(
                "policy",
                format!("duplicate name {:?}", p.name),
            ));
        }
        checked.push(PolicyConfig::new(p));
    }
    Ok(checked)
}

/// Lets the store refuse policies it cannot decide together (a Redis Cluster store: policies keyed differently).
fn check_store_policies<St: RateLimitStore>(
    store: &St,
    policies: &[PolicyConfig],
    layer_key: &KeyExtractor,
) -> Result<(), ConfigError> {
    let names: Vec<&str> = policies.iter().map(|p| &*p.name).collect();
    let keys: Vec<&KeyExtractor> = policies
        .iter()
        .map(|p| p.key.as_ref().unwrap_or(layer_key))
        .collect();
    store.check_policies(&PolicyKeys::new(&names, |i, j| {
        keys[i].same_key_as(keys[j])
    }))
}

fn check_store_failure(policy: StoreFailure) -> Result<(), ConfigError> {
    match policy {
        StoreFailure::FailClosed { retry_after } if retry_after.is_zero() => Err(ConfigError::new(
            "store_failure",
            "FailClosed retry_after must be greater than zero (got 0ns)",
        )),
        StoreFailure::FailOpenCapped { percent } if !(1..=100).contains(&percent) => {
            Err(ConfigError::new(
                "store_failure",
                format!("FailOpenCapped percent must be within 1..=100 (got {percent})"),
            ))
        }
        _ => Ok(()),
    }
}

fn check_refusal_status(status: StatusCode) -> Result<(), ConfigError> {
    if status.is_client_error() || status.is_server_error() {
        Ok(())
    } else {
        Err(ConfigError::new(
            "refusal_status",
            format!("must be a 4xx or 5xx status (got {})", status.as_u16()),
        ))
    }
}

/// `RateLimit-Policy` when every policy has a fixed quota: then it never changes, and is formatted once.
fn fixed_policy_header(policies: &[PolicyConfig]) -> Option<http::HeaderValue> {
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
    fixed.map(|states| crate::headers::policy_header(&states))
}

/// The short path's check, for a layer with one fixed-quota policy and no closure over `Parts`.
fn single_policy(
    policies: &[PolicyConfig],
    needs_parts: bool,
    layer_key: &KeyExtractor,
) -> Option<Single> {
    match policies {
        [p] if !needs_parts => match &p.quota {
            QuotaSource::Fixed(quota) => Some(Single {
                id: p.id,
                quota: *quota,
                key: p.key.clone().unwrap_or_else(|| layer_key.clone()),
            }),
            QuotaSource::PerRequest(_) => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Quota;
    use std::num::NonZeroU32;

    #[test]
    fn extractors_with_different_settings_key_differently() {
        let header = |h: &'static str| KeyExtractor::header(http::HeaderName::from_static(h));
        let peer = KeyExtractor::peer_ip;
        let behind = |header: crate::ForwardedHeader| {
            let trusted = crate::TrustedProxies::builder()
                .networks(["10.0.0.0/8"])
                .header(header)
                .build()
                .unwrap();
            KeyExtractor::client_ip(trusted)
        };
        let custom = KeyExtractor::custom(|_| None);
        let distinct = [
            behind(crate::ForwardedHeader::XForwardedFor),
            behind(crate::ForwardedHeader::XRealIp),
            custom.clone(),
            KeyExtractor::custom(|_| None),
            peer(),
            peer().per_route(),
            peer().ipv6_prefix(48).unwrap(),
            peer().or(KeyExtractor::global()),
            KeyExtractor::global(),
            KeyExtractor::bearer(),
            header("x-api-key"),
            header("x-tenant"),
        ];
        for (i, a) in distinct.iter().enumerate() {
            for (j, b) in distinct.iter().enumerate() {
                assert_eq!(a.same_key_as(b), i == j, "{a:?} vs {b:?}");
            }
        }
        assert!(peer().same_key_as(&peer().clone()));
        assert!(custom.same_key_as(&custom.clone()));
        assert!(
            behind(crate::ForwardedHeader::XRealIp)
                .same_key_as(&behind(crate::ForwardedHeader::XRealIp))
        );
    }

    fn q() -> Quota {
        Quota::per_second(NonZeroU32::new(1).unwrap())
    }

    #[test]
    fn new_assembles_what_build_accepts() {
        // `RateLimitLayer::new` skips `build`: its one policy on the defaults must pass every check.
        let built = RateLimitLayer::builder()
            .policy(Policy::new("default", q()))
            .build();
        assert!(built.is_ok());
        let layer = RateLimitLayer::new(q());
        assert_eq!(layer.config.policies.len(), 1);
        assert_eq!(&*layer.config.policies[0].name, "default");
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
        let e = RateLimitLayer::builder()
            .policy(Policy::new("a", q()))
            .refusal_status(StatusCode::OK)
            .build()
            .unwrap_err();
        assert_eq!(e.field(), "refusal_status");
    }
}
