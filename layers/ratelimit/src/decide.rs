//! Deciding: the checks of a request ([`Plan`]), the store's answer, the failure policy, and what becomes of the
//! request ([`Start`], [`Resolution`]). Refusal responses are built in [`refusal`](crate::refusal).

use crate::{
    Key, RefusalReason,
    headers::{self, PolicyState},
    key::Head,
    layer::{Config, QuotaSource, Single, StoreFailure},
    metrics,
    refusal::Refusal,
    store::{Check, CheckRequest, Decision, MAX_POLICIES, RateLimitStore},
};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response};
use std::{
    future::Future,
    pin::Pin,
    sync::atomic::Ordering,
    task::{Context, Poll, Waker},
};
use tower_kit_core::{ServerTiming, grpc};

/// The peer-address extensions this build reads (for the missing-address warning).
const READS: &str = if cfg!(all(feature = "axum", feature = "tonic")) {
    "axum's `ConnectInfo<SocketAddr>`, tonic's `TcpConnectInfo`, a `SocketAddr`"
} else if cfg!(feature = "axum") {
    "axum's `ConnectInfo<SocketAddr>`, a `SocketAddr`"
} else if cfg!(feature = "tonic") {
    "tonic's `TcpConnectInfo`, a `SocketAddr`"
} else {
    "a `SocketAddr` (axum's `ConnectInfo<SocketAddr>` and tonic's `TcpConnectInfo` are not read: the crate was \
     built without its `axum` and `tonic` features)"
};

/// What to fix, for this build.
const CAUSES: &str = if cfg!(feature = "axum") {
    "under axum, the server was started without `into_make_service_with_connect_info::<SocketAddr>()`; under \
     hyper, no `SocketAddr` extension is inserted per connection; under tonic, tonic's `TcpConnectInfo` is only \
     read with the `tonic` feature of tower-kit-ratelimit."
} else {
    "under axum, `ConnectInfo<SocketAddr>` is only read with the `axum` feature of tower-kit-ratelimit (enable it, \
     and serve with `into_make_service_with_connect_info::<SocketAddr>()`); under tonic, enable the `tonic` \
     feature; under hyper, insert the peer `SocketAddr` as a request extension per connection."
};

/// The checks one request needs, on the stack.
pub(crate) struct Plan {
    pub(crate) checks: [Check; MAX_POLICIES],
    policy_index: [u8; MAX_POLICIES],
    len: usize,
    cost: u32,
}

const PLACEHOLDER: Check = Check {
    policy: crate::store::PolicyId(0),
    key: Key::UNKNOWN,
    quota: match std::num::NonZeroU32::new(1) {
        Some(one) => crate::Quota::per_second(one),
        None => unreachable!(),
    },
};

impl Plan {
    /// The plan of a request checked against the layer's only policy, at cost 1.
    pub(crate) fn single(check: Check) -> Self {
        let mut checks = [PLACEHOLDER; MAX_POLICIES];
        checks[0] = check;
        Self {
            checks,
            policy_index: [0; MAX_POLICIES],
            len: 1,
            cost: 1,
        }
    }

    fn request(&self) -> CheckRequest<'_> {
        CheckRequest {
            checks: &self.checks[..self.len],
            cost: self.cost,
        }
    }
}

/// Where a request stands after `start`.
pub(crate) enum Start<B, F> {
    /// Admitted, nothing to add to the response.
    Pass,
    Refuse(Response<B>),
    Admit(Vec<(HeaderName, HeaderValue)>),
    /// The store answers later: its future and the plan.
    Pending(F, Box<Plan>),
}

/// What became of a decided request.
pub(crate) enum Resolution<B> {
    Refuse(Response<B>),
    /// Admitted, with these headers to add to the response.
    Admit(Vec<(HeaderName, HeaderValue)>),
}

impl<St: RateLimitStore> Config<St> {
    /// The checks of one request. Closures over `Parts` only run when the request was split (`needs_parts` makes
    /// sure it is whenever one is configured).
    #[inline]
    fn plan(&self, head: &Head<'_>) -> Plan {
        let mut plan = Plan {
            checks: [PLACEHOLDER; MAX_POLICIES],
            policy_index: [0; MAX_POLICIES],
            len: 0,
            cost: match (&self.cost, head.parts) {
                (Some(f), Some(parts)) => f(parts),
                _ => 1,
            },
        };
        let mut missing_address = false;
        for (i, p) in self.policies.iter().enumerate() {
            let quota = match &p.quota {
                QuotaSource::Fixed(q) => *q,
                QuotaSource::PerRequest(f) => match head.parts.and_then(|parts| f(parts)) {
                    Some(q) => q,
                    None => continue,
                },
            };
            let key = p
                .key
                .as_ref()
                .unwrap_or(&self.key)
                .extract_head(head, &mut missing_address)
                .unwrap_or_else(|| self.unknown_key(&p.name, missing_address));
            plan.checks[plan.len] = Check {
                policy: p.id,
                key,
                quota,
            };
            plan.policy_index[plan.len] = i as u8; // at most MAX_POLICIES policies
            plan.len += 1;
        }
        if missing_address {
            self.missing_address();
        }
        plan
    }

    /// The key of a request for which no key was found: the shared `unknown` bucket (with a warning, once; a
    /// missing peer address has its own warning, see [`missing_address`](Self::missing_address)).
    #[cold]
    fn unknown_key(&self, policy: &str, missing_address: bool) -> Key {
        if !missing_address && !self.warned_unknown.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                policy = %policy,
                "rate limit: the key extractor found no key for a request (a header it reads was absent and no \
                 `.or(..)` fallback found one); such requests share one `unknown` bucket. Logged once."
            );
        }
        Key::UNKNOWN
    }

    /// A peer-address key found no peer address: count it, and say once why that happens.
    #[cold]
    #[inline(never)]
    fn missing_address(&self) {
        metrics::with_counter(metrics::MISSING_CLIENT_ADDRESS);
        if !self.warned_missing_address.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                metric = metrics::MISSING_CLIENT_ADDRESS,
                "rate limit: a request carries no peer address, so the peer-IP key cannot tell clients apart and \
                 every such request shares one `unknown` bucket (one limit for everybody). The request had none of \
                 the extensions this build reads: {READS}. Causes: {CAUSES} Logged once; every such request is \
                 counted in `{metric}`.",
                metric = metrics::MISSING_CLIENT_ADDRESS,
            );
        }
    }

    /// The check of a request to a layer with a single fixed-quota policy and no closure over `Parts`.
    #[inline]
    pub(crate) fn single_check(&self, single: &Single, head: &Head<'_>) -> Check {
        let mut missing_address = false;
        let key = match single.key.extract_head(head, &mut missing_address) {
            Some(key) => key,
            None => self.no_key_single(missing_address),
        };
        if missing_address {
            self.missing_address();
        }
        Check {
            policy: single.id,
            key,
            quota: single.quota,
        }
    }

    #[cold]
    fn no_key_single(&self, missing_address: bool) -> Key {
        self.unknown_key(
            self.policies.first().map_or("", |p| &*p.name),
            missing_address,
        )
    }

    /// The admitted request of a single-policy layer that adds no headers: count it.
    #[inline]
    pub(crate) fn count_single_admitted(&self) {
        if let Some(policy) = self.policies.first() {
            metrics::increment(&policy.metrics.admitted);
        }
    }

    /// [`start`](Self::start) for a single-policy layer (see [`single_check`](Self::single_check)) once the store's
    /// shortcut declined: the full decision, a plan only when it is needed (refusal, headers, a store that answers
    /// later).
    pub(crate) fn start_single<B: From<Bytes>>(
        &self,
        check: Check,
        head: &Head<'_>,
    ) -> Start<B, St::Future> {
        let mut pending = self.store.check(&CheckRequest {
            checks: std::slice::from_ref(&check),
            cost: 1,
        });
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(&mut pending).poll(&mut cx) {
            Poll::Ready(Ok(decision)) if decision.admitted() && !self.headers_on_admitted => {
                self.count_single_admitted();
                Start::Pass
            }
            Poll::Ready(result) => match self.resolve(head, &Plan::single(check), result) {
                Resolution::Refuse(response) => Start::Refuse(response),
                Resolution::Admit(headers) => Start::Admit(headers),
            },
            Poll::Pending => Start::Pending(pending, Box::new(Plan::single(check))),
        }
    }

    /// The applied policies with their outcomes, on the stack.
    fn states<'a>(
        &'a self,
        plan: &Plan,
        decision: &Decision,
    ) -> ([PolicyState<'a>; MAX_POLICIES], usize) {
        let mut states = [PolicyState {
            name: "",
            quota: PLACEHOLDER.quota,
            outcome: Default::default(),
        }; MAX_POLICIES];
        let mut len = 0;
        for (i, outcome) in decision.outcomes().iter().enumerate().take(plan.len) {
            states[i] = PolicyState {
                name: &self.policies[usize::from(plan.policy_index[i])].name,
                quota: plan.checks[i].quota,
                outcome: *outcome,
            };
            len = i + 1;
        }
        (states, len)
    }

    /// `RateLimit-Policy` is the same for every request when every policy has a fixed quota: reuse it.
    fn headers(&self, states: &[PolicyState<'_>]) -> Vec<(HeaderName, HeaderValue)> {
        let fixed = self
            .fixed_policy_header
            .as_ref()
            .filter(|_| states.len() == self.policies.len());
        headers::headers(states, self.legacy_headers, fixed)
    }

    /// What becomes of a request once the store answered (or failed).
    pub(crate) fn resolve<B: From<Bytes>>(
        &self,
        head: &Head<'_>,
        plan: &Plan,
        result: Result<Decision, St::Error>,
    ) -> Resolution<B> {
        let local_plan;
        let (decision, plan) = match result {
            Ok(d) => (d, plan),
            Err(error) => match self.store_failed(head, plan, &error) {
                // The in-process fallback decided with scaled quotas: its `RateLimit` values are read with them.
                Ok((local, scaled)) => {
                    local_plan = scaled;
                    (local, &local_plan)
                }
                Err(resolution) => return resolution,
            },
        };
        if decision.admitted() {
            for i in &plan.policy_index[..plan.len] {
                metrics::increment(&self.policies[usize::from(*i)].metrics.admitted);
            }
            return Resolution::Admit(self.admitted_headers(plan, &decision));
        }
        let (states, len) = self.states(plan, &decision);
        let states = &states[..len];
        if self.dry_run {
            self.count_refused(plan, states, |m| &m.dry_run_refused);
            let names: Vec<&str> = refusing(states).collect();
            tracing::info!(policies = ?names, key = %plan.checks[0].key, "rate limit (dry run): would refuse");
            let headers = if self.headers_on_admitted {
                self.headers(states)
            } else {
                Vec::new()
            };
            return Resolution::Admit(headers);
        }
        self.count_refused(plan, states, |m| &m.refused);
        if let Some(timing) = head.extensions.get::<ServerTiming>() {
            let names: Vec<&str> = refusing(states).collect();
            timing.describe("ratelimit", format!("refused {}", names.join(" ")));
        }
        let retry_after = decision.retry_after();
        let refusal = Refusal {
            reason: match retry_after {
                Some(_) => RefusalReason::QuotaExceeded,
                None => RefusalReason::CostAboveBurst,
            },
            retry_after,
            policies: states,
            head: *head,
            grpc: grpc::is_grpc(head.headers),
        };
        Resolution::Refuse(self.refusals.respond(&refusal, self.headers(states)))
    }

    /// The headers of an admitted request: none unless `headers_on_admitted`.
    fn admitted_headers(&self, plan: &Plan, decision: &Decision) -> Vec<(HeaderName, HeaderValue)> {
        if !self.headers_on_admitted {
            return Vec::new();
        }
        let (states, len) = self.states(plan, decision);
        self.headers(&states[..len])
    }

    /// Counts a refusal (or a dry-run one) in every policy that refused.
    fn count_refused(
        &self,
        plan: &Plan,
        states: &[PolicyState<'_>],
        counter: impl Fn(&metrics::PolicyMetrics) -> &::metrics::Key,
    ) {
        for (s, i) in states.iter().zip(&plan.policy_index) {
            if !s.outcome.admitted {
                metrics::increment(counter(&self.policies[usize::from(*i)].metrics));
            }
        }
    }

    /// Exemptions, plan, store, decision: everything up to calling the inner service.
    #[inline]
    pub(crate) fn start<B: From<Bytes>>(&self, head: &Head<'_>) -> Start<B, St::Future> {
        if let Some(parts) = head.parts
            && self.exempt.matches(parts)
        {
            metrics::with_counter(metrics::EXEMPT);
            return Start::Admit(Vec::new());
        }
        let plan = self.plan(head);
        if plan.len == 0 {
            return Start::Admit(Vec::new());
        }
        let mut check = self.store.check(&plan.request());
        // A synchronous store answers on the first poll: no allocation, no task wake-up. `RateLimitStore::Future`
        // is `Unpin`, so it may be moved after this poll if it is still pending.
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(&mut check).poll(&mut cx) {
            Poll::Ready(result) => match self.resolve(head, &plan, result) {
                Resolution::Refuse(response) => Start::Refuse(response),
                Resolution::Admit(headers) => Start::Admit(headers),
            },
            Poll::Pending => Start::Pending(check, Box::new(plan)),
        }
    }

    /// Counts and logs (at most once a second) a store failure, then applies the failure policy: a decision of
    /// the in-process fallback with the plan it used (scaled quotas) (`Ok`), or the final answer (`Err`).
    fn store_failed<B: From<Bytes>>(
        &self,
        head: &Head<'_>,
        plan: &Plan,
        error: &St::Error,
    ) -> Result<(Decision, Plan), Resolution<B>> {
        metrics::with_counter(metrics::STORE_ERRORS);
        if let Some(suppressed) = self.failure_log.allow() {
            tracing::warn!(
                error = error as &dyn std::error::Error,
                policy = ?self.store_failure,
                suppressed,
                "rate limit store failed (logged at most once a second; `suppressed` failures since the last line)"
            );
        }
        match self.store_failure {
            StoreFailure::FailOpen => Err(Resolution::Admit(Vec::new())),
            StoreFailure::FailOpenCapped { percent } => {
                let Some(fallback) = &self.fallback else {
                    return Err(Resolution::Admit(Vec::new()));
                };
                let mut checks = plan.checks;
                for c in &mut checks[..plan.len] {
                    c.quota = c.quota.scaled(percent);
                }
                let decision = fallback.decide(&CheckRequest {
                    checks: &checks[..plan.len],
                    cost: plan.cost,
                });
                let scaled = Plan {
                    checks,
                    policy_index: plan.policy_index,
                    len: plan.len,
                    cost: plan.cost,
                };
                Ok((decision, scaled))
            }
            StoreFailure::FailClosed { retry_after } => {
                let refusal = Refusal {
                    reason: RefusalReason::StoreUnavailable,
                    retry_after: Some(retry_after),
                    policies: &[],
                    head: *head,
                    grpc: grpc::is_grpc(head.headers),
                };
                Err(Resolution::Refuse(
                    self.refusals.respond(&refusal, Vec::new()),
                ))
            }
        }
    }
}

/// The names of the policies that refused.
fn refusing<'a>(states: &'a [PolicyState<'a>]) -> impl Iterator<Item = &'a str> {
    states
        .iter()
        .filter(|s| !s.outcome.admitted)
        .map(|s| s.name)
}
