//! [`RateLimit`]: decides in `call` (see [`decide`](crate::decide)), answers refusals itself, forwards the rest.

use crate::{
    BodyMode, ResponseFuture, WrapBody,
    decide::{Plan, Resolution, Start},
    key::Head,
    layer::Config,
    store::{Check, RateLimitStore},
};
use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use std::{
    fmt,
    marker::PhantomData,
    sync::Arc,
    task::{Context, Poll},
};
use tower_service::Service;

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
    tower_kit_core::inner_service_accessors!();
}

impl<S, St, M, ReqB, ResB> Service<Request<ReqB>> for RateLimit<S, St, M>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    St: RateLimitStore,
    M: BodyMode<ResB>,
    M::Body: Send + 'static,
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

/// The rest of the request path, out of `call` so that the common case stays small. A private trait so that the
/// `Service` impl's bounds are written once more here, not once per method.
trait RequestPath<ReqB>: Service<Request<ReqB>> {
    /// The store's pending answer.
    type Pending;
    /// The response body of a refusal.
    type RefusalBody;

    /// A request to a layer with several policies or closures over `Parts`: plan, store, decision.
    fn call_planned(&mut self, request: Request<ReqB>) -> Self::Future;

    /// The rest of a single-policy request whose admission the store's shortcut did not settle (a refusal,
    /// headers to add, a store that answers later).
    fn call_single(&mut self, check: Check, request: Request<ReqB>) -> Self::Future;

    /// Acts on where a request stands: call the inner service (with headers to add, or none), answer the
    /// refusal, or wait for the store.
    fn proceed(
        &mut self,
        start: Start<Self::RefusalBody, Self::Pending>,
        request: Request<ReqB>,
    ) -> Self::Future;

    /// The slow path of a store that answers later: a boxed future that awaits the decision, then calls the inner
    /// service (the one that was polled ready; a fresh clone stays in its place).
    fn pending(
        &mut self,
        check: Self::Pending,
        plan: Box<Plan>,
        request: Request<ReqB>,
    ) -> Self::Future;
}

impl<S, St, M, ReqB, ResB> RequestPath<ReqB> for RateLimit<S, St, M>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    St: RateLimitStore,
    M: BodyMode<ResB>,
    M::Body: Send + 'static,
    ReqB: Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
{
    type Pending = St::Future;
    type RefusalBody = M::Body;

    #[inline(never)]
    fn call_planned(&mut self, request: Request<ReqB>) -> Self::Future {
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

    #[inline(never)]
    fn call_single(&mut self, check: Check, request: Request<ReqB>) -> Self::Future {
        let start = self.config.start_single(check, &Head::of_request(&request));
        self.proceed(start, request)
    }

    fn proceed(
        &mut self,
        start: Start<M::Body, St::Future>,
        request: Request<ReqB>,
    ) -> Self::Future {
        match start {
            Start::Pass => ResponseFuture::pass(self.inner.call(request)),
            Start::Admit(headers) => ResponseFuture::inner(self.inner.call(request), headers),
            Start::Refuse(response) => ResponseFuture::immediate(response),
            Start::Pending(check, plan) => self.pending(check, plan, request),
        }
    }

    fn pending(
        &mut self,
        check: St::Future,
        plan: Box<Plan>,
        request: Request<ReqB>,
    ) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let config = Arc::clone(&self.config);
        ResponseFuture::boxed(Box::pin(async move {
            let result = check.await;
            let (parts, body) = request.into_parts();
            match config.resolve(&Head::of_parts(&parts), &plan, result) {
                Resolution::Refuse(response) => Ok(response),
                Resolution::Admit(headers) => {
                    let response = inner.call(Request::from_parts(parts, body)).await?;
                    Ok(crate::future::finish::<ResB, M>(response, headers))
                }
            }
        }))
    }
}
