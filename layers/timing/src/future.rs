//! The response future: finishes the head clock and hands the request record to the body.

use crate::{body::TimingBody, guard::RequestGuard};
use http::Response;
use pin_project_lite::pin_project;
use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};
use tower_kit_core::{ObservedBody, ServerTiming, content_length};

pin_project! {
    /// Response future of [`Timing`](crate::Timing).
    pub struct ResponseFuture<F> {
        #[pin]
        pub(crate) inner: F,
        pub(crate) guard: Option<RequestGuard>,
        pub(crate) server_timing: Option<ServerTiming>,
        pub(crate) trailers: bool,
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: http_body::Body,
{
    type Output = Result<Response<TimingBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(guard) = this.guard.as_mut() {
            guard.polling = true;
        }
        let poll = this.inner.poll(cx);
        if let Some(guard) = this.guard.as_mut() {
            guard.polling = false;
        }
        let result = ready!(poll);
        let Some(mut guard) = this.guard.take() else {
            // Polled after completion: a contract breach by the caller; there is nothing left to record.
            return Poll::Ready(result.map(|r| r.map(TimingBody::untracked)));
        };
        match result {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                let head =
                    guard.on_head(parts.status, &parts.headers, this.server_timing.is_some());
                let mut late = None;
                if let Some(timing) = this.server_timing.take() {
                    if let Some(value) = timing.seal_with("app", head.unwrap_or_default()) {
                        parts.headers.append(SERVER_TIMING, value);
                    }
                    if *this.trailers {
                        late = Some(timing);
                    }
                }
                let status = parts.status;
                let bodyless = guard.is_head_request()
                    || status.is_informational()
                    || status == http::StatusCode::NO_CONTENT
                    || status == http::StatusCode::NOT_MODIFIED;
                let expected = content_length(&parts.headers).or(body.size_hint().exact());
                let observed = ObservedBody::new(body, guard)
                    .bodyless(bodyless)
                    .expected_len(expected);
                Poll::Ready(Ok(Response::from_parts(
                    parts,
                    TimingBody::new(observed, late),
                )))
            }
            Err(error) => {
                guard.service_error();
                Poll::Ready(Err(error))
            }
        }
    }
}

const SERVER_TIMING: http::HeaderName = http::HeaderName::from_static("server-timing");
