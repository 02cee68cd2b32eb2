//! [`Timing`], the service.

use crate::{
    future::ResponseFuture,
    guard::{GrpcPending, RequestGuard, Route},
    layer::{RequestInfo, ServerTimingMode},
    method,
    registry::Registry,
};
use http::{Request, Response};
use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};
use tower_kit_core::{ServerTiming, accepts_trailers, content_length, grpc};

/// Times requests: see [`TimingLayer`](crate::TimingLayer).
#[derive(Clone)]
pub struct Timing<S> {
    inner: S,
    registry: Arc<Registry>,
}

impl<S: fmt::Debug> fmt::Debug for Timing<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timing")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> Timing<S> {
    pub(crate) fn new(inner: S, registry: Arc<Registry>) -> Self {
        Self { inner, registry }
    }

    tower_kit_core::inner_service_accessors!();

    /// A handle on the statistics this service shares with its layer.
    pub fn handle(&self) -> crate::TimingHandle {
        crate::TimingHandle::new(Arc::clone(&self.registry))
    }
}

impl<S, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for Timing<S>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: http_body::Body,
{
    type Response = Response<crate::TimingBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let start = quanta::Instant::now();
        let registry = &self.registry;
        let common = &*registry.common;
        let config = &common.config;
        // No recorder lookup and no gauge when the layer records no metrics.
        let recorder = config.metrics.then(|| common.recorders.current());
        let method_index = method::index(req.method());
        let is_grpc = grpc::is_grpc(req.headers());

        let info = || RequestInfo {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
            extensions: req.extensions(),
        };
        let route = match matched_path(&req) {
            Some(path) => Route::Known(registry.route(path, recorder.as_ref())),
            None => match config.route_fn.as_ref().and_then(|f| f(&info())) {
                Some(name) => Route::Known(registry.route(&name, recorder.as_ref())),
                None if is_grpc => Route::GrpcPending(Box::new(GrpcPending {
                    uri: req.uri().clone(),
                    registry: Arc::clone(registry),
                })),
                None => Route::Known(Arc::clone(&registry.unmatched)),
            },
        };
        let (server_timing, trailers) = match &config.server_timing {
            ServerTimingMode::Off => (None, false),
            ServerTimingMode::On => (Some(()), accepts_trailers(req.headers())),
            ServerTimingMode::If(predicate) => {
                if predicate(&info()) {
                    (Some(()), accepts_trailers(req.headers()))
                } else {
                    (None, false)
                }
            }
        };
        let server_timing = server_timing.map(|()| {
            let timing = ServerTiming::new().with_trailers(trailers);
            req.extensions_mut().insert(timing.clone());
            timing
        });
        let request_size = if config.metrics && config.body_sizes {
            content_length(req.headers())
        } else {
            None
        };
        let guard =
            RequestGuard::start(recorder, route, method_index, is_grpc, request_size, start);
        ResponseFuture {
            inner: self.inner.call(req),
            guard: Some(guard),
            server_timing,
            trailers,
        }
    }
}

#[cfg(feature = "axum")]
#[inline]
fn matched_path<B>(req: &Request<B>) -> Option<&str> {
    req.extensions()
        .get::<axum::extract::MatchedPath>()
        .map(axum::extract::MatchedPath::as_str)
}

#[cfg(not(feature = "axum"))]
#[inline]
fn matched_path<B>(_: &Request<B>) -> Option<&str> {
    None
}
