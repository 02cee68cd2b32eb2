//! [`RateLimit`]: decides in `call`, answers refusals itself, forwards the rest.

use crate::{
    BodyMode, Key, ResponseFuture, WrapBody,
    headers::{self, PolicyState, ceil_secs},
    key::Head,
    layer::{Config, QuotaSource, Refusal, Single, StoreFailure},
    metrics,
    store::{Check, CheckRequest, Decision, MAX_POLICIES, RateLimitStore},
};
use bytes::Bytes;
use http::{
    HeaderName, HeaderValue, Request, Response, StatusCode,
    header::{CONTENT_TYPE, RETRY_AFTER},
};
use http_body::Body;
use std::{
    fmt,
    future::Future,
    marker::PhantomData,
    pin::Pin,
    sync::{Arc, atomic::Ordering},
    task::{Context, Poll, Waker},
};
use tower_kit_core::{ServerTiming, grpc};
use tower_service::Service;

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

/// The rate-limiting service made by [`RateLimitLayer`](crate::RateLimitLayer).
///
/// `M` is the [`BodyMode`]: [`WrapBody`] (responses carry a `PolicyBody`) or [`KeepBody`](crate::KeepBody).
pub struct RateLimit<S, St, M = WrapBody> {
    pub(crate) inner: S,
    pub(crate) config: Arc<Config<St>>,
    pub(crate) _mode: PhantomData<fn() -> M>,
}

impl<S: Clone, St, M> Clone for RateLimit<S, St, M> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
            _mode: PhantomData,
        }
    }
}

impl<S: fmt::Debug, St, M> fmt::Debug for RateLimit<S, St, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, St, M> RateLimit<S, St, M> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Gives the inner service back.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// The checks one request needs, on the stack.
pub(crate) struct Plan {
    checks: [Check; MAX_POLICIES],
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
    fn single(check: Check) -> Self {
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
    fn single_check(&self, single: &Single, head: &Head<'_>) -> Check {
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
    fn count_single_admitted(&self) {
        if let Some(policy) = self.policies.first() {
            metrics::increment(&policy.metrics.admitted);
        }
    }

    /// [`start`](Self::start) for a single-policy layer (see [`single_check`](Self::single_check)) once the store's
    /// shortcut declined: the full decision, a plan only when it is needed (refusal, headers, a store that answers
    /// later).
    fn start_single<B: From<Bytes>>(&self, check: Check, head: &Head<'_>) -> Start<B, St::Future> {
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
            let headers = if self.headers_on_admitted {
                let (states, len) = self.states(plan, &decision);
                self.headers(&states[..len])
            } else {
                Vec::new()
            };
            return Resolution::Admit(headers);
        }
        let (states, len) = self.states(plan, &decision);
        let states = &states[..len];
        let refusing = states.iter().filter(|s| !s.outcome.admitted);
        if self.dry_run {
            for (s, i) in states.iter().zip(&plan.policy_index) {
                if !s.outcome.admitted {
                    metrics::increment(&self.policies[usize::from(*i)].metrics.dry_run_refused);
                }
            }
            let names: Vec<&str> = refusing.map(|s| s.name).collect();
            tracing::info!(policies = ?names, key = %plan.checks[0].key, "rate limit (dry run): would refuse");
            let headers = if self.headers_on_admitted {
                self.headers(states)
            } else {
                Vec::new()
            };
            return Resolution::Admit(headers);
        }
        for (s, i) in states.iter().zip(&plan.policy_index) {
            if !s.outcome.admitted {
                metrics::increment(&self.policies[usize::from(*i)].metrics.refused);
            }
        }
        if let Some(timing) = head.extensions.get::<ServerTiming>() {
            let names: Vec<&str> = refusing.map(|s| s.name).collect();
            timing.describe("ratelimit", format!("refused {}", names.join(" ")));
        }
        let retry_after = decision.retry_after();
        let refusal = Refusal {
            retry_after,
            policies: states,
        };
        let mut response = match (&self.on_refusal, head.parts) {
            (Some(hook), Some(parts)) => hook(parts, &refusal).map(B::from),
            _ if grpc::is_grpc(head.headers) => {
                grpc::refusal(grpc::RESOURCE_EXHAUSTED, "rate limit exceeded")
            }
            _ => {
                let mut r = Response::new(B::from(Bytes::from_static(b"rate limit exceeded\n")));
                *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                r
            }
        };
        let h = response.headers_mut();
        if let Some(retry) = retry_after
            && !h.contains_key(RETRY_AFTER)
        {
            h.insert(RETRY_AFTER, HeaderValue::from(ceil_secs(retry).max(1)));
        }
        for (name, value) in self.headers(states) {
            if !h.contains_key(&name) {
                h.insert(name, value);
            }
        }
        Resolution::Refuse(response)
    }

    /// Exemptions, plan, store, decision: everything up to calling the inner service.
    #[inline]
    fn start<B: From<Bytes>>(&self, head: &Head<'_>) -> Start<B, St::Future> {
        if let (Some(exempt), Some(parts)) = (&self.exempt, head.parts)
            && exempt(parts)
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
                let mut r = if grpc::is_grpc(head.headers) {
                    grpc::refusal(grpc::UNAVAILABLE, "rate limiter unavailable")
                } else {
                    let mut r =
                        Response::new(B::from(Bytes::from_static(b"rate limiter unavailable\n")));
                    *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                    r
                };
                r.headers_mut().insert(
                    RETRY_AFTER,
                    HeaderValue::from(ceil_secs(retry_after).max(1)),
                );
                Err(Resolution::Refuse(r))
            }
        }
    }
}

impl<S, St, M, ReqB, ResB> Service<Request<ReqB>> for RateLimit<S, St, M>
where
    M: BodyMode<ResB>,
    M::Body: Send + 'static,
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    St: RateLimitStore,
    ReqB: Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
{
    type Response = Response<M::Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB, S::Error, M>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        let config = &*self.config;
        if let Some(single) = &config.single {
            // The common case first, kept small: one key, the store's shortcut, one counter.
            let check = config.single_check(single, &Head::of_request(&request));
            if !config.headers_on_admitted && config.store.try_admit_one(&check) {
                config.count_single_admitted();
                return ResponseFuture::pass(self.inner.call(request));
            }
            return self.call_single(check, request);
        }
        self.call_planned(request)
    }
}

impl<S, St, M> RateLimit<S, St, M> {
    /// A request to a layer with several policies or closures over `Parts`: plan, store, decision. Out of line,
    /// like [`call_single`](Self::call_single).
    #[inline(never)]
    fn call_planned<ReqB, ResB>(
        &mut self,
        request: Request<ReqB>,
    ) -> ResponseFuture<S::Future, ResB, S::Error, M>
    where
        M: BodyMode<ResB>,
        M::Body: Send + 'static,
        S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
        St: RateLimitStore,
        ReqB: Send + 'static,
        ResB: Body<Data = Bytes> + Send + 'static,
    {
        let config = &*self.config;
        if !config.needs_parts {
            // No user closure needs `Parts`: read the request in place, never take it apart.
            let start = config.start(&Head::of_request(&request));
            return self.proceed(start, request);
        }
        let (parts, body) = request.into_parts();
        let start = config.start(&Head::of_parts(&parts));
        self.proceed(start, Request::from_parts(parts, body))
    }

    /// The rest of a single-policy request whose admission the store's shortcut did not settle (a refusal, headers
    /// to add, a store that answers later). Out of line, so the common path stays small.
    #[inline(never)]
    fn call_single<ReqB, ResB>(
        &mut self,
        check: Check,
        request: Request<ReqB>,
    ) -> ResponseFuture<S::Future, ResB, S::Error, M>
    where
        M: BodyMode<ResB>,
        M::Body: Send + 'static,
        S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
        St: RateLimitStore,
        ReqB: Send + 'static,
        ResB: Body<Data = Bytes> + Send + 'static,
    {
        let start = self.config.start_single(check, &Head::of_request(&request));
        self.proceed(start, request)
    }

    /// Acts on where a request stands: call the inner service (with headers to add, or none), answer the refusal,
    /// or wait for the store.
    fn proceed<ReqB, ResB>(
        &mut self,
        start: Start<M::Body, St::Future>,
        request: Request<ReqB>,
    ) -> ResponseFuture<S::Future, ResB, S::Error, M>
    where
        M: BodyMode<ResB>,
        M::Body: Send + 'static,
        S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
        St: RateLimitStore,
        ReqB: Send + 'static,
        ResB: Body<Data = Bytes> + Send + 'static,
    {
        match start {
            Start::Pass => ResponseFuture::pass(self.inner.call(request)),
            Start::Admit(headers) => ResponseFuture::inner(self.inner.call(request), headers),
            Start::Refuse(response) => ResponseFuture::immediate(response),
            Start::Pending(check, plan) => self.pending(check, plan, request),
        }
    }

    /// The slow path of a store that answers later: a boxed future that awaits the decision, then calls the inner
    /// service (the one that was polled ready; a fresh clone stays in its place).
    fn pending<ReqB, ResB>(
        &mut self,
        check: St::Future,
        plan: Box<Plan>,
        request: Request<ReqB>,
    ) -> ResponseFuture<S::Future, ResB, S::Error, M>
    where
        M: BodyMode<ResB>,
        M::Body: Send + 'static,
        S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
        St: RateLimitStore,
        ReqB: Send + 'static,
        ResB: Body<Data = Bytes> + Send + 'static,
    {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let config = Arc::clone(&self.config);
        ResponseFuture::boxed(Box::pin(async move {
            let result = check.await;
            let (parts, body) = request.into_parts();
            let resolution = config.resolve(&Head::of_parts(&parts), &plan, result);
            match resolution {
                Resolution::Refuse(response) => Ok(response),
                Resolution::Admit(headers) => {
                    let response = inner.call(Request::from_parts(parts, body)).await?;
                    Ok(crate::future::finish::<ResB, M>(response, headers))
                }
            }
        }))
    }
}
