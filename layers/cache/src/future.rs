//! The response future of [`Cache`](crate::Cache).

use crate::body::CacheBody;
use http::Response;
use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

type Inner<B, E> = Pin<Box<dyn Future<Output = Result<Response<CacheBody<B>>, E>> + Send>>;

/// The response future of [`Cache`](crate::Cache).
///
/// A hit found without waiting (the moka store) is ready at once, with no allocation. Anything else is one boxed
/// future: the lookup, the wait on another request's origin call, and the origin call are one `async` sequence over
/// the store's own futures (a Redis store's cannot be named).
pub struct ResponseFuture<B, E> {
    kind: Kind<B, E>,
}

// A ready response is kept inline: moving ~300 bytes costs less than the allocation the hit path avoids.
#[allow(clippy::large_enum_variant)]
enum Kind<B, E> {
    Ready(Option<Response<CacheBody<B>>>),
    Pending(Inner<B, E>),
}

impl<B, E> ResponseFuture<B, E> {
    pub(crate) fn new(inner: Inner<B, E>) -> Self {
        Self {
            kind: Kind::Pending(inner),
        }
    }

    pub(crate) fn ready(response: Response<CacheBody<B>>) -> Self {
        Self {
            kind: Kind::Ready(Some(response)),
        }
    }
}

// Neither variant is structurally pinned: the boxed future is pinned on the heap.
impl<B, E> Unpin for ResponseFuture<B, E> {}

impl<B, E> Future for ResponseFuture<B, E> {
    type Output = Result<Response<CacheBody<B>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.kind {
            Kind::Ready(response) => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => panic!("ResponseFuture polled after completion"),
            },
            Kind::Pending(inner) => inner.as_mut().poll(cx),
        }
    }
}

impl<B, E> fmt::Debug for ResponseFuture<B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
