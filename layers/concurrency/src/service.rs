//! [`Concurrency`]: the service. `poll_ready` delegates; `call` takes a slot, queues, or refuses.

use crate::{
    RefusalReason,
    body::{ConcurrencyBody, Held},
    future::{ResponseFuture, refusal},
    keyed::KeyPermit,
    layer::{ConcurrencyHandle, Config},
    queue::{Acquired, Gate, Waiter},
};
use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::Body;
use std::{
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};
use tower_kit_core::grpc;
use tower_service::Service;

/// The service made by [`ConcurrencyLayer`](crate::ConcurrencyLayer). Clones share the layer's limit.
#[derive(Clone)]
pub struct Concurrency<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> Concurrency<S> {
    pub(crate) fn new(inner: S, config: Arc<Config>) -> Self {
        Concurrency { inner, config }
    }

    tower_kit_core::inner_service_accessors!();

    /// A handle on the limit this service shares with its layer.
    pub fn handle(&self) -> ConcurrencyHandle {
        ConcurrencyHandle::from_config(self.config.clone())
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Concurrency<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    ResBody: Body<Data = Bytes>,
{
    type Response = Response<ConcurrencyBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Never reserve a slot here: axum clones services per request, so a reservation would be lost.
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The common case, written out here: no exemption or key to look at, and a slot free. The request is
        // moved once, into the inner service.
        let head = request.method() == Method::HEAD;
        if !self.config.needs_parts()
            && let Some((permit, in_flight)) = Gate::try_acquire(&self.config)
        {
            let held = Held::without_key(permit, in_flight);
            let future = self.inner.call(request);
            return ResponseFuture::running(future, Some(held), head);
        }
        self.call_slow(request)
    }
}

/// The request path, split so that the common case (no exemption, no key) stays small and inlined.
impl<S> Concurrency<S> {
    /// Everything but the common case: exemptions and per-key caps look at the request head first; no slot free.
    #[inline(never)]
    fn call_slow<ReqBody>(&mut self, request: Request<ReqBody>) -> ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>> + Clone,
    {
        if self.config.needs_parts() {
            return self.call_with_parts(request);
        }
        self.admit(request, None)
    }

    /// Exemptions and per-key caps look at the request head first.
    fn call_with_parts<ReqBody>(&mut self, request: Request<ReqBody>) -> ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>> + Clone,
    {
        let config = &self.config;
        let (parts, body) = request.into_parts();
        if config.exempt.matches(&parts) {
            let head = parts.method == Method::HEAD;
            let future = self.inner.call(Request::from_parts(parts, body));
            return ResponseFuture::running(future, None, head);
        }
        let mut key = None;
        if let Some((limits, key_fn)) = &config.keyed
            && let Some(k) = key_fn(&parts)
        {
            match limits.acquire(k) {
                Ok(permit) => key = Some(permit),
                Err(reason) => {
                    let grpc = grpc::is_grpc(&parts.headers);
                    let response = refusal(config, reason, Duration::ZERO, grpc);
                    return ResponseFuture::refused(response);
                }
            }
        }
        self.admit(Request::from_parts(parts, body), key)
    }

    /// Takes a slot and calls the inner service, or queues, or refuses (as `call` does, with a key's slot).
    fn admit<ReqBody>(
        &mut self,
        request: Request<ReqBody>,
        key: Option<KeyPermit>,
    ) -> ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>> + Clone,
    {
        match Gate::acquire(&self.config) {
            Acquired::Now(permit, in_flight) => {
                let head = request.method() == Method::HEAD;
                let held = Held::new(permit, in_flight, key);
                let future = self.inner.call(request);
                ResponseFuture::running(future, Some(held), head)
            }
            Acquired::Queued(waiter) => self.queue(waiter, request, key),
            Acquired::Refused => self.refuse(&request, key),
        }
    }

    #[cold]
    #[inline(never)]
    fn queue<ReqBody>(
        &mut self,
        waiter: Waiter<Arc<Config>>,
        request: Request<ReqBody>,
        key: Option<KeyPermit>,
    ) -> ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>> + Clone,
    {
        // Take the service that was driven to readiness; leave a clone for the next call.
        let clone = self.inner.clone();
        let service = std::mem::replace(&mut self.inner, clone);
        let grpc = grpc::is_grpc(request.headers());
        ResponseFuture::waiting(waiter, service, request, key, grpc)
    }

    #[cold]
    #[inline(never)]
    fn refuse<ReqBody>(
        &self,
        request: &Request<ReqBody>,
        key: Option<KeyPermit>,
    ) -> ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>> + Clone,
    {
        drop(key);
        let grpc = grpc::is_grpc(request.headers());
        let response = refusal(&self.config, RefusalReason::QueueFull, Duration::ZERO, grpc);
        ResponseFuture::refused(response)
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for Concurrency<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Concurrency")
            .field("inner", &self.inner)
            .field("limit", &self.config.gate.limit())
            .finish()
    }
}
