//! [`Compression`]: the response compression service.

use crate::{
    body::CompressionBody,
    future::{CallContext, ResponseFuture},
    layer::{Config, RequestHead},
    negotiate::choose_coding,
};
use http::{Method, Request, Response};
use http_body::Body;
use std::{
    sync::Arc,
    task::{Context, Poll},
};
use tower_kit_core::ServerTiming;
use tower_service::Service;

/// Compresses the responses of `S`; made by [`CompressionLayer`](crate::CompressionLayer).
#[derive(Clone, Debug)]
pub struct Compression<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> Compression<S> {
    pub(crate) fn new(inner: S, config: Arc<Config>) -> Self {
        Self { inner, config }
    }

    tower_kit_core::inner_service_accessors!();
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Compression<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
    ResBody::Error: Into<crate::BoxError>,
{
    type Response = Response<CompressionBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let context = CallContext {
            coding: choose_coding(request.headers(), &self.config.preference),
            stream_coding: choose_coding(request.headers(), &self.config.stream_preference),
            head: request.method() == Method::HEAD,
            request: self.config.predicate.as_ref().map(|_| RequestHead {
                method: request.method().clone(),
                uri: request.uri().clone(),
                headers: request.headers().clone(),
            }),
            timing: ServerTiming::from_request(&request).cloned(),
            config: Arc::clone(&self.config),
        };
        ResponseFuture::new(self.inner.call(request), context)
    }
}
