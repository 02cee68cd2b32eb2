//! The response body: the request record rides in it until the body ends, errors or is dropped.

use crate::guard::RequestGuard;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};
use tower_kit_core::{ObservedBody, ServerTiming};

pin_project! {
    /// Response body of [`Timing`](crate::Timing): the inner body, unchanged, with the request's record finished when
    /// it ends, errors or is dropped. When the client sent `TE: trailers` and Server-Timing is on, entries that inner
    /// layers added after the head left are sent in a `Server-Timing` trailer.
    pub struct TimingBody<B> {
        #[pin]
        inner: Inner<B>,
        late: Option<ServerTiming>,
    }
}

pin_project! {
    #[project = InnerProj]
    enum Inner<B> {
        Observed { #[pin] body: ObservedBody<B, RequestGuard> },
        Untracked { #[pin] body: B },
    }
}

impl<B: Body> TimingBody<B> {
    pub(crate) fn new(body: ObservedBody<B, RequestGuard>, late: Option<ServerTiming>) -> Self {
        Self {
            inner: Inner::Observed { body },
            late,
        }
    }

    pub(crate) fn untracked(body: B) -> Self {
        Self {
            inner: Inner::Untracked { body },
            late: None,
        }
    }
}

impl<B> std::fmt::Debug for TimingBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimingBody").finish_non_exhaustive()
    }
}

const SERVER_TIMING: http::HeaderName = http::HeaderName::from_static("server-timing");

impl<B: Body> Body for TimingBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(match this.inner.project() {
            InnerProj::Observed { body } => body.poll_frame(cx),
            InnerProj::Untracked { body } => body.poll_frame(cx),
        });
        let Some(timing) = this.late.as_ref() else {
            return Poll::Ready(frame);
        };
        match frame {
            Some(Ok(frame)) if frame.is_trailers() => {
                let late = timing.take_late();
                *this.late = None;
                match frame.into_trailers() {
                    Ok(mut trailers) => {
                        if let Some(value) = late {
                            trailers.append(SERVER_TIMING, value);
                        }
                        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                    }
                    Err(frame) => Poll::Ready(Some(Ok(frame))),
                }
            }
            None => {
                let late = timing.take_late();
                *this.late = None;
                Poll::Ready(late.map(|value| {
                    let mut trailers = HeaderMap::with_capacity(1);
                    trailers.insert(SERVER_TIMING, value);
                    Ok(Frame::trailers(trailers))
                }))
            }
            other => Poll::Ready(other),
        }
    }

    fn is_end_stream(&self) -> bool {
        // With a trailer still possible the body is not over until it has been polled to its end.
        self.late.is_none()
            && match &self.inner {
                Inner::Observed { body } => body.is_end_stream(),
                Inner::Untracked { body } => body.is_end_stream(),
            }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Observed { body } => body.size_hint(),
            Inner::Untracked { body } => body.size_hint(),
        }
    }
}
