//! [`CompressionBody`]: the response body, passed through, compressed in one shot, or compressed as a stream.

use crate::{codec::Coding, engine::StreamEncoder, layer::Config, metrics};
use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};
use tokio::{task::JoinHandle, time::Sleep};

/// The error type of [`CompressionBody`]: the inner body's error, or (practically never) the compressor's.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project! {
    /// The body of a response that went through [`Compression`](crate::Compression).
    ///
    /// - Sent as it was (not compressed): frames, `size_hint` and `is_end_stream` pass through.
    /// - Compressed in one shot, or buffered and sent as it was: one data frame (exact `size_hint`), then trailers.
    /// - Compressed as a stream: each input frame is compressed as it arrives (sync-flushed under the flush
    ///   policy, or when the source goes idle), then the coding's end of stream, then the inner trailers.
    pub struct CompressionBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Identity { #[pin] inner: B },
        Full { data: Option<Bytes>, trailers: Option<HeaderMap> },
        Stream { stream: Box<Stream<B>> },
        Failed { error: Option<BoxError> },
    }
}

impl<B> CompressionBody<B> {
    pub(crate) fn identity(inner: B) -> Self {
        Self {
            kind: Kind::Identity { inner },
        }
    }

    pub(crate) fn full(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        Self {
            kind: Kind::Full {
                data: (!data.is_empty()).then_some(data),
                trailers,
            },
        }
    }

    pub(crate) fn stream(
        inner: Pin<Box<B>>,
        prefix: Bytes,
        coding: Coding,
        flush_each: bool,
        config: &Config,
    ) -> Self {
        Self {
            kind: Kind::Stream {
                stream: Box::new(Stream {
                    inner,
                    encoder: Some(StreamEncoder::new(coding, config.stream_level)),
                    coding,
                    pending: None,
                    prefix: (!prefix.is_empty()).then_some(prefix),
                    flush_each,
                    idle_flush: config.idle_flush,
                    timer: None,
                    dirty: false,
                    offload_threshold: crate::layer::offload_threshold(config, coding),
                    trailers: None,
                }),
            },
        }
    }

    pub(crate) fn failed(error: BoxError) -> Self {
        Self {
            kind: Kind::Failed { error: Some(error) },
        }
    }

    /// Whether the body is compressed as a stream (not in one shot, not passed through).
    pub fn is_stream(&self) -> bool {
        matches!(self.kind, Kind::Stream { .. })
    }
}

impl<B> fmt::Debug for CompressionBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Identity { .. } => "identity",
            Kind::Full { .. } => "full",
            Kind::Stream { .. } => "stream",
            Kind::Failed { .. } => "failed",
        };
        f.debug_struct("CompressionBody")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

impl<B> Body for CompressionBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Identity { inner } => match ready!(inner.poll_frame(cx)) {
                Some(Ok(frame)) => Poll::Ready(Some(Ok(
                    frame.map_data(|mut d| d.copy_to_bytes(d.remaining()))
                ))),
                Some(Err(e)) => Poll::Ready(Some(Err(e.into()))),
                None => Poll::Ready(None),
            },
            KindProj::Full { data, trailers } => Poll::Ready(match data.take() {
                Some(data) => Some(Ok(Frame::data(data))),
                None => trailers.take().map(|t| Ok(Frame::trailers(t))),
            }),
            KindProj::Stream { stream } => stream.poll_frame(cx),
            KindProj::Failed { error } => Poll::Ready(error.take().map(Err)),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Identity { inner } => inner.is_end_stream(),
            Kind::Full { data, trailers } => data.is_none() && trailers.is_none(),
            Kind::Stream { stream } => {
                stream.encoder.is_none() && stream.pending.is_none() && stream.trailers.is_none()
            }
            Kind::Failed { error } => error.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Identity { inner } => inner.size_hint(),
            Kind::Full { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Stream { .. } | Kind::Failed { .. } => SizeHint::default(),
        }
    }
}

type Offloaded = (StreamEncoder, std::io::Result<Bytes>, usize);

/// A body compressed frame by frame.
struct Stream<B> {
    inner: Pin<Box<B>>,
    /// `None` once the compressed stream is finished (or while a frame is compressed on the blocking pool).
    encoder: Option<StreamEncoder>,
    coding: Coding,
    pending: Option<JoinHandle<Offloaded>>,
    /// Bytes read before the decision to compress (buffered up to `min_size`).
    prefix: Option<Bytes>,
    flush_each: bool,
    idle_flush: Option<Duration>,
    timer: Option<Pin<Box<Sleep>>>,
    /// Input was fed since the last flush.
    dirty: bool,
    offload_threshold: u64,
    trailers: Option<HeaderMap>,
}

/// A data frame for non-empty output, counting the bytes.
fn emit(coding: Coding, bytes_in: usize, out: Bytes) -> Option<Frame<Bytes>> {
    metrics::bytes(coding, true, bytes_in, out.len());
    (!out.is_empty()).then(|| Frame::data(out))
}

impl<B> Stream<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if let Some(handle) = self.pending.as_mut() {
                let joined = ready!(Pin::new(handle).poll(cx));
                self.pending = None;
                let (encoder, result, bytes_in) = joined.map_err(|e| Box::new(e) as BoxError)?;
                self.encoder = Some(encoder);
                if let Some(frame) = emit(self.coding, bytes_in, result?) {
                    return Poll::Ready(Some(Ok(frame)));
                }
                continue;
            }
            let Some(encoder) = self.encoder.as_mut() else {
                return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))));
            };
            if let Some(prefix) = self.prefix.take() {
                let out = encoder.write(&prefix, self.flush_each)?;
                self.dirty = !self.flush_each;
                if let Some(frame) = emit(self.coding, prefix.len(), out) {
                    return Poll::Ready(Some(Ok(frame)));
                }
                continue;
            }
            match self.inner.as_mut().poll_frame(cx) {
                Poll::Pending => {
                    if self.dirty
                        && let Some(idle) = self.idle_flush
                    {
                        let timer = self
                            .timer
                            .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                        if timer.as_mut().poll(cx).is_ready() {
                            self.timer = None;
                            self.dirty = false;
                            if let Some(frame) = emit(self.coding, 0, encoder.flush()?) {
                                return Poll::Ready(Some(Ok(frame)));
                            }
                        }
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(mut data) => {
                        let data = data.copy_to_bytes(data.remaining());
                        if data.is_empty() {
                            continue;
                        }
                        self.timer = None;
                        let flush = self.flush_each;
                        self.dirty = !flush;
                        if data.len() as u64 >= self.offload_threshold
                            && let Ok(runtime) = tokio::runtime::Handle::try_current()
                            && let Some(mut encoder) = self.encoder.take()
                        {
                            self.pending = Some(runtime.spawn_blocking(move || {
                                let result = encoder.write(&data, flush);
                                (encoder, result, data.len())
                            }));
                            continue;
                        }
                        let Some(encoder) = self.encoder.as_mut() else {
                            continue;
                        };
                        let out = encoder.write(&data, flush)?;
                        if let Some(frame) = emit(self.coding, data.len(), out) {
                            return Poll::Ready(Some(Ok(frame)));
                        }
                    }
                    Err(frame) => {
                        // Trailers are the last frame: end the compressed stream, then send them.
                        if let Ok(trailers) = frame.into_trailers() {
                            self.trailers = Some(trailers);
                        }
                        return self.finish();
                    }
                },
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => return self.finish(),
            }
        }
    }

    fn finish(&mut self) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.timer = None;
        let Some(mut encoder) = self.encoder.take() else {
            return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))));
        };
        match emit(self.coding, 0, encoder.finish()?) {
            Some(frame) => Poll::Ready(Some(Ok(frame))),
            None => Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t)))),
        }
    }
}
