//! [`ResponseFuture`]: waits for the inner response, decides, and compresses one-shot bodies before the head.

use crate::{
    body::{BoxError, CompressionBody},
    codec::Coding,
    engine::oneshot,
    layer::{Config, RequestHead},
    metrics,
    policy::{self, SkipReason, TypeVerdict},
};
use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Response, header::CONTENT_LENGTH, response::Parts};
use http_body::Body;
use pin_project_lite::pin_project;
use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::{Duration, Instant},
};
use tokio::task::JoinHandle;
use tower_kit_core::ServerTiming;

/// What the service learnt from the request.
pub(crate) struct CallContext {
    /// The coding negotiated for the request (`None`: identity).
    pub(crate) coding: Option<Coding>,
    /// The coding negotiated for a streamed response (Brotli last, see `BR_STREAM_QUALITY`).
    pub(crate) stream_coding: Option<Coding>,
    pub(crate) head: bool,
    pub(crate) request: Option<RequestHead>,
    pub(crate) timing: Option<ServerTiming>,
    pub(crate) config: Arc<Config>,
}

pin_project! {
    /// The response future of [`Compression`](crate::Compression).
    pub struct ResponseFuture<F, B> {
        #[pin]
        inner: F,
        context: CallContext,
        work: Option<Work<B>>,
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(crate) fn new(inner: F, context: CallContext) -> Self {
        Self {
            inner,
            context,
            work: None,
        }
    }
}

impl<F, B> std::fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("coding", &self.context.coding)
            .field("working", &self.work.is_some())
            .finish_non_exhaustive()
    }
}

/// What to do with a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Skip {
        reason: SkipReason,
        vary: bool,
    },
    /// Known length within `max_buffered`: read it all, compress in one shot.
    OneShot(Coding),
    /// Stream at once.
    Stream {
        coding: Coding,
        flush_each: bool,
    },
    /// Unknown length: buffer up to `min_size`, then decide.
    Threshold(Coding),
}

fn plan(context: &CallContext, parts: &Parts, known_len: Option<u64>) -> Plan {
    let config = &context.config;
    let skip = |reason, vary| Plan::Skip { reason, vary };
    if parts.headers.contains_key(http::header::CONTENT_ENCODING) {
        return skip(SkipReason::AlreadyEncoded, false);
    }
    let verdict = config.content_types.verdict(&parts.headers);
    if policy::status_skipped(parts.status) {
        // A 304 carries the `Vary` its 200 would have had.
        let vary = parts.status == http::StatusCode::NOT_MODIFIED
            && (verdict != TypeVerdict::Skip
                || !parts.headers.contains_key(http::header::CONTENT_TYPE));
        return skip(SkipReason::Status, vary);
    }
    if parts.headers.contains_key(http::header::CONTENT_RANGE) {
        return skip(SkipReason::ContentRange, false);
    }
    if config.respect_no_transform && policy::has_no_transform(&parts.headers) {
        return skip(SkipReason::NoTransform, false);
    }
    let TypeVerdict::Compress { flush_each_frame } = verdict else {
        return skip(SkipReason::ContentType, false);
    };
    if let (Some(predicate), Some(request)) = (&config.predicate, &context.request)
        && !predicate(request, parts)
    {
        return skip(SkipReason::Predicate, false);
    }
    let flushed = flush_each_frame || config.flush_every_frame;
    // Too small for anyone: the answer does not depend on the request, so no `Vary`.
    if !flushed && known_len.is_some_and(|len| len < config.min_size) {
        return skip(SkipReason::TooSmall, false);
    }
    // From here on the answer depends on the request's Accept-Encoding: `Vary` is set, compressed or not.
    if context.head {
        return skip(SkipReason::Head, true);
    }
    let Some(coding) = context.coding else {
        return skip(SkipReason::NotAccepted, true);
    };
    let stream_coding = context.stream_coding.unwrap_or(coding);
    if flushed {
        return Plan::Stream {
            coding: stream_coding,
            flush_each: true,
        };
    }
    match known_len {
        Some(len) if len <= config.max_buffered => Plan::OneShot(coding),
        Some(_) => Plan::Stream {
            coding: stream_coding,
            flush_each: false,
        },
        None => Plan::Threshold(coding),
    }
}

/// Reading a body before the response head is sent.
pub(crate) struct Work<B> {
    parts: Parts,
    step: Step<B>,
    coding: Coding,
}

enum Step<B> {
    Collect {
        body: Pin<Box<B>>,
        chunks: Vec<Bytes>,
        len: u64,
        /// Known length: compress in one shot unless it turns out longer than `max_buffered`.
        oneshot: bool,
    },
    Offloaded {
        handle: JoinHandle<(Vec<u8>, Duration, Bytes)>,
        trailers: Option<HeaderMap>,
    },
    Taken,
}

/// How a collection ended.
enum Collected<B> {
    /// The whole body is in memory.
    Whole {
        data: Bytes,
        trailers: Option<HeaderMap>,
    },
    /// Too long to wait for: stream the rest, after `prefix`.
    Stream {
        body: Pin<Box<B>>,
        prefix: Bytes,
    },
    Failed(BoxError),
}

fn concat(chunks: Vec<Bytes>, len: u64) -> Bytes {
    if chunks.len() == 1 {
        return chunks.into_iter().next().unwrap_or_default();
    }
    let mut out = BytesMut::with_capacity(len as usize);
    for chunk in chunks {
        out.extend_from_slice(&chunk);
    }
    out.freeze()
}

fn poll_collect<B>(step: &mut Step<B>, config: &Config, cx: &mut Context<'_>) -> Poll<Collected<B>>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let Step::Collect {
        body,
        chunks,
        len,
        oneshot,
    } = step
    else {
        return Poll::Ready(Collected::Failed(
            "gzip: response polled after completion".into(),
        ));
    };
    let mut trailers = None;
    loop {
        let ended = match ready!(body.as_mut().poll_frame(cx)) {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(mut data) => {
                    let data = data.copy_to_bytes(data.remaining());
                    *len += data.len() as u64;
                    if !data.is_empty() {
                        chunks.push(data);
                    }
                    body.is_end_stream()
                }
                Err(frame) => {
                    trailers = frame.into_trailers().ok();
                    true
                }
            },
            Some(Err(e)) => return Poll::Ready(Collected::Failed(e.into())),
            None => true,
        };
        let limit = if *oneshot {
            config.max_buffered
        } else {
            config.min_size.max(1) - 1
        };
        if ended || *len > limit {
            let Step::Collect {
                body, chunks, len, ..
            } = std::mem::replace(step, Step::Taken)
            else {
                unreachable!("matched above")
            };
            let data = concat(chunks, len);
            return Poll::Ready(if ended {
                Collected::Whole { data, trailers }
            } else {
                Collected::Stream { body, prefix: data }
            });
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<CompressionBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let context: &CallContext = this.context;
        let config = &*context.config;
        loop {
            let Some(work) = this.work.as_mut() else {
                let (mut parts, body) = ready!(this.inner.as_mut().poll(cx))?.into_parts();
                let known_len = body
                    .size_hint()
                    .exact()
                    .or_else(|| policy::content_length(&parts.headers));
                let step = match plan(context, &parts, known_len) {
                    Plan::Skip { reason, vary } => {
                        if vary {
                            policy::merge_vary(&mut parts.headers);
                        }
                        metrics::skipped(reason);
                        return Poll::Ready(Ok(Response::from_parts(
                            parts,
                            CompressionBody::identity(body),
                        )));
                    }
                    Plan::Stream { coding, flush_each } => {
                        policy::mark_compressed(&mut parts.headers, coding);
                        metrics::compressed(coding, true);
                        let body = CompressionBody::stream(
                            Box::pin(body),
                            Bytes::new(),
                            coding,
                            flush_each,
                            config,
                        );
                        return Poll::Ready(Ok(Response::from_parts(parts, body)));
                    }
                    Plan::OneShot(coding) | Plan::Threshold(coding) => (
                        coding,
                        Step::Collect {
                            body: Box::pin(body),
                            chunks: Vec::new(),
                            len: 0,
                            oneshot: true,
                        },
                    ),
                };
                let (coding, step) = step;
                let step = match (step, known_len) {
                    (
                        Step::Collect {
                            body, chunks, len, ..
                        },
                        None,
                    ) => Step::Collect {
                        body,
                        chunks,
                        len,
                        oneshot: false,
                    },
                    (step, _) => step,
                };
                *this.work = Some(Work {
                    parts,
                    step,
                    coding,
                });
                continue;
            };
            let coding = work.coding;
            let (data, original, trailers, compress_time) = match &mut work.step {
                Step::Offloaded { handle, trailers } => {
                    let joined = ready!(Pin::new(handle).poll(cx));
                    let trailers = trailers.take();
                    match joined {
                        Ok((out, took, original)) => {
                            metrics::bytes(coding, false, original.len(), out.len());
                            (Bytes::from(out), original, trailers, Some(took))
                        }
                        Err(e) => {
                            let parts = take_parts(this.work);
                            return Poll::Ready(Ok(failed(parts, Box::new(e))));
                        }
                    }
                }
                step => match ready!(poll_collect(step, config, cx)) {
                    Collected::Failed(error) => {
                        let parts = take_parts(this.work);
                        return Poll::Ready(Ok(failed(parts, error)));
                    }
                    Collected::Stream { body, prefix } => {
                        let coding = context.stream_coding.unwrap_or(coding);
                        let mut parts = take_parts(this.work);
                        policy::mark_compressed(&mut parts.headers, coding);
                        metrics::compressed(coding, true);
                        let body = CompressionBody::stream(
                            body,
                            prefix,
                            coding,
                            config.flush_every_frame,
                            config,
                        );
                        return Poll::Ready(Ok(Response::from_parts(parts, body)));
                    }
                    Collected::Whole { data, trailers } => {
                        if (data.len() as u64) < config.min_size {
                            let mut parts = take_parts(this.work);
                            parts
                                .headers
                                .insert(CONTENT_LENGTH, HeaderValue::from(data.len()));
                            metrics::skipped(SkipReason::TooSmall);
                            return Poll::Ready(Ok(Response::from_parts(
                                parts,
                                CompressionBody::full(data, trailers),
                            )));
                        }
                        if data.len() as u64 >= crate::layer::offload_threshold(config, coding)
                            && let Ok(runtime) = tokio::runtime::Handle::try_current()
                        {
                            let level = config.levels[coding.index()];
                            let handle = runtime.spawn_blocking(move || {
                                let started = Instant::now();
                                let out = oneshot(coding, &data, level);
                                (out, started.elapsed(), data)
                            });
                            work.step = Step::Offloaded { handle, trailers };
                            continue;
                        }
                        let started = Instant::now();
                        let out = oneshot(coding, &data, config.levels[coding.index()]);
                        let took = started.elapsed();
                        metrics::bytes(coding, false, data.len(), out.len());
                        (Bytes::from(out), data, trailers, Some(took))
                    }
                },
            };
            let mut parts = take_parts(this.work);
            if data.len() >= original.len() {
                // Compression would not make it smaller: sent as it is (the choice still depended on the request).
                policy::merge_vary(&mut parts.headers);
                parts
                    .headers
                    .insert(CONTENT_LENGTH, HeaderValue::from(original.len()));
                metrics::skipped(SkipReason::NotSmaller);
                return Poll::Ready(Ok(Response::from_parts(
                    parts,
                    CompressionBody::full(original, trailers),
                )));
            }
            policy::mark_compressed(&mut parts.headers, coding);
            parts
                .headers
                .insert(CONTENT_LENGTH, HeaderValue::from(data.len()));
            metrics::compressed(coding, false);
            if let (Some(timing), Some(took)) = (&context.timing, compress_time) {
                timing.duration(coding.as_str(), took);
            }
            return Poll::Ready(Ok(Response::from_parts(
                parts,
                CompressionBody::full(data, trailers),
            )));
        }
    }
}

fn take_parts<B>(work: &mut Option<Work<B>>) -> Parts {
    match work.take() {
        Some(work) => work.parts,
        // `work` is always set when this is called; an empty response is the total fallback.
        None => Response::new(()).into_parts().0,
    }
}

fn failed<B>(mut parts: Parts, error: BoxError) -> Response<CompressionBody<B>> {
    parts.headers.remove(CONTENT_LENGTH);
    Response::from_parts(parts, CompressionBody::failed(error))
}
