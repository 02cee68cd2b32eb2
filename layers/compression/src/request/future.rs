//! [`RequestFuture`]: decodes the request body, then calls the inner service.

use super::{
    body::DecodedBody,
    decode::{DecodeError, Decoder},
    service::refusal,
};
use crate::metrics;
use bytes::Buf;
use http::{HeaderValue, Request, Response, StatusCode, header::CONTENT_ENCODING, request::Parts};
use http_body::Body;
use pin_project_lite::pin_project;
use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};
use tower_kit_core::PolicyBody;
use tower_service::Service;

pin_project! {
    /// The response future of [`RequestDecompression`](crate::RequestDecompression).
    pub struct RequestFuture<S, B>
    where
        S: Service<Request<DecodedBody<B>>>,
    {
        #[pin]
        fut: Option<S::Future>,
        decoding: Option<Decoding<S, B>>,
        immediate: Option<(StatusCode, &'static str)>,
        accept: HeaderValue,
    }
}

struct Decoding<S, B> {
    service: S,
    parts: Parts,
    body: Pin<Box<B>>,
    decoder: Decoder,
}

impl<S, B> RequestFuture<S, B>
where
    S: Service<Request<DecodedBody<B>>>,
{
    pub(crate) fn inner(fut: S::Future) -> Self {
        Self {
            fut: Some(fut),
            decoding: None,
            immediate: None,
            accept: HeaderValue::from_static(""),
        }
    }

    pub(crate) fn immediate(
        status: StatusCode,
        message: &'static str,
        accept: HeaderValue,
    ) -> Self {
        Self {
            fut: None,
            decoding: None,
            immediate: Some((status, message)),
            accept,
        }
    }

    pub(crate) fn decoding(
        service: S,
        parts: Parts,
        body: B,
        decoder: Decoder,
        accept: HeaderValue,
    ) -> Self {
        Self {
            fut: None,
            decoding: Some(Decoding {
                service,
                parts,
                body: Box::pin(body),
                decoder,
            }),
            immediate: None,
            accept,
        }
    }
}

impl<S, B> std::fmt::Debug for RequestFuture<S, B>
where
    S: Service<Request<DecodedBody<B>>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestFuture")
            .field("decoding", &self.decoding.is_some())
            .field("immediate", &self.immediate)
            .finish_non_exhaustive()
    }
}

fn refuse(error: DecodeError) -> (StatusCode, &'static str) {
    match error {
        DecodeError::TooLarge => {
            metrics::request("too_large");
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                "decoded request body is too large\n",
            )
        }
        DecodeError::Corrupt => {
            metrics::request("corrupt");
            (
                StatusCode::BAD_REQUEST,
                "request body is not valid in its Content-Encoding\n",
            )
        }
    }
}

impl<S, B, R> Future for RequestFuture<S, B>
where
    S: Service<Request<DecodedBody<B>>, Response = Response<R>>,
    B: Body,
{
    type Output = Result<Response<PolicyBody<R>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            if let Some(fut) = this.fut.as_mut().as_pin_mut() {
                return fut.poll(cx).map_ok(|r| r.map(PolicyBody::inner));
            }
            if let Some((status, message)) = this.immediate.take() {
                return Poll::Ready(Ok(refusal(status, message, this.accept)));
            }
            let Some(decoding) = this.decoding.as_mut() else {
                return Poll::Ready(Ok(refusal(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "request decoding future polled after completion\n",
                    this.accept,
                )));
            };
            let mut failure = None;
            while failure.is_none() {
                match ready!(decoding.body.as_mut().poll_frame(cx)) {
                    Some(Ok(frame)) => {
                        if let Ok(mut data) = frame.into_data() {
                            while data.has_remaining() && failure.is_none() {
                                let chunk = data.chunk();
                                let n = chunk.len();
                                if let Err(e) = decoding.decoder.feed(chunk) {
                                    failure = Some(refuse(e));
                                }
                                data.advance(n);
                            }
                        }
                    }
                    Some(Err(_)) => {
                        metrics::request("corrupt");
                        failure =
                            Some((StatusCode::BAD_REQUEST, "could not read the request body\n"));
                    }
                    None => break,
                }
            }
            let Some(Decoding {
                mut service,
                mut parts,
                decoder,
                ..
            }) = this.decoding.take()
            else {
                continue;
            };
            if let Some(failure) = failure {
                *this.immediate = Some(failure);
                continue;
            }
            match decoder.finish() {
                Ok(bytes) => {
                    metrics::request("decoded");
                    parts.headers.remove(CONTENT_ENCODING);
                    parts
                        .headers
                        .insert(http::header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                    let request = Request::from_parts(parts, DecodedBody::decoded(bytes));
                    this.fut.set(Some(service.call(request)));
                }
                Err(e) => *this.immediate = Some(refuse(e)),
            }
        }
    }
}
