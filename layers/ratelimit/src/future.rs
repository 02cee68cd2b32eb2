//! [`ResponseFuture`]: an immediate answer, the inner service's future, or (for stores that answer later) a boxed
//! future.

use crate::{BodyMode, WrapBody};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

pub(crate) type BoxedResponse<O, E> = Pin<Box<dyn Future<Output = Result<Response<O>, E>> + Send>>;

pin_project! {
    /// The response future of [`RateLimit`](crate::RateLimit).
    pub struct ResponseFuture<F, B, E, M = WrapBody>
    where
        M: BodyMode<B>,
    {
        #[pin]
        state: State<F, B, E, M>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B, E, M>
    where
        M: BodyMode<B>,
    {
        Immediate { response: Option<Response<M::Body>> },
        // Admitted with no headers to add: the common case, kept free of the header list.
        Pass { #[pin] fut: F },
        Inner { #[pin] fut: F, headers: Vec<(HeaderName, HeaderValue)> },
        Boxed { fut: BoxedResponse<M::Body, E> },
    }
}

impl<F, B, E, M: BodyMode<B>> ResponseFuture<F, B, E, M> {
    pub(crate) fn immediate(response: Response<M::Body>) -> Self {
        Self {
            state: State::Immediate {
                response: Some(response),
            },
        }
    }

    #[inline]
    pub(crate) fn pass(fut: F) -> Self {
        Self {
            state: State::Pass { fut },
        }
    }

    #[inline]
    pub(crate) fn inner(fut: F, headers: Vec<(HeaderName, HeaderValue)>) -> Self {
        if headers.is_empty() {
            return Self {
                state: State::Pass { fut },
            };
        }
        Self {
            state: State::Inner { fut, headers },
        }
    }

    pub(crate) fn boxed(fut: BoxedResponse<M::Body, E>) -> Self {
        Self {
            state: State::Boxed { fut },
        }
    }
}

impl<F, B, E, M: BodyMode<B>> fmt::Debug for ResponseFuture<F, B, E, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

/// The inner response with the layer's headers added (appended: an inner limiter's headers stay).
pub(crate) fn finish<B, M: BodyMode<B>>(
    response: Response<B>,
    headers: Vec<(HeaderName, HeaderValue)>,
) -> Response<M::Body> {
    let mut response = response.map(M::inner);
    if !headers.is_empty() {
        let h = response.headers_mut();
        for (name, value) in headers {
            h.append(name, value);
        }
    }
    response
}

impl<F, B, E, M> Future for ResponseFuture<F, B, E, M>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body<Data = Bytes>,
    M: BodyMode<B>,
{
    type Output = Result<Response<M::Body>, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Immediate { response } => match response.take() {
                Some(r) => Poll::Ready(Ok(r)),
                None => panic!("ResponseFuture polled after completion"),
            },
            StateProj::Pass { fut } => {
                let response = ready!(fut.poll(cx))?;
                Poll::Ready(Ok(response.map(M::inner)))
            }
            StateProj::Inner { fut, headers } => {
                let response = ready!(fut.poll(cx))?;
                Poll::Ready(Ok(finish::<B, M>(response, std::mem::take(headers))))
            }
            StateProj::Boxed { fut } => fut.as_mut().poll(cx),
        }
    }
}
