//! The response body: a stored copy, the origin's body unchanged, or the origin's body teed into the cache.

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll, ready},
};

/// Receives the body of a response being stored, once.
pub(crate) trait FillSink: Send + Sync {
    /// The whole body arrived intact.
    fn complete(self: Box<Self>, body: Bytes, trailers: Option<HeaderMap>);
    /// The body grew past `max_entry_size`: it streams on, uncached.
    fn too_big(self: Box<Self>);
    /// The body errored, was cut short, or was dropped before its end.
    fn abandon(self: Box<Self>);
}

/// Collects a body on its way to the client. A body of one chunk is kept as that chunk (no copy); more chunks are
/// copied into one buffer.
pub(crate) struct Fill {
    first: Option<Bytes>,
    buf: BytesMut,
    len: usize,
    max: usize,
    expected: Option<u64>,
    trailers: Option<HeaderMap>,
    sink: Option<Box<dyn FillSink>>,
}

impl Fill {
    pub(crate) fn new(sink: Box<dyn FillSink>, max: usize, expected: Option<u64>) -> Self {
        Self {
            first: None,
            buf: BytesMut::new(),
            len: 0,
            max,
            expected,
            trailers: None,
            sink: Some(sink),
        }
    }

    fn data(&mut self, data: &Bytes) {
        if self.sink.is_none() {
            return;
        }
        if self.len + data.len() > self.max {
            if let Some(sink) = self.sink.take() {
                sink.too_big();
            }
            self.first = None;
            self.buf = BytesMut::new();
            return;
        }
        self.len += data.len();
        if self.len == data.len() {
            self.first = Some(data.clone());
            return;
        }
        if let Some(first) = self.first.take() {
            let capacity = self
                .expected
                .map_or(self.len * 2, |n| n as usize)
                .min(self.max);
            self.buf.reserve(capacity.max(self.len));
            self.buf.extend_from_slice(&first);
        }
        self.buf.extend_from_slice(data);
    }

    fn take_body(&mut self) -> Bytes {
        match self.first.take() {
            Some(first) => first,
            None => std::mem::take(&mut self.buf).freeze(),
        }
    }

    /// The body ended: store it if it is whole (as long as `Content-Length` said, when it said).
    fn end(&mut self) {
        let Some(sink) = self.sink.take() else { return };
        if self.expected.is_some_and(|n| n != self.len as u64) {
            sink.abandon();
        } else {
            let body = self.take_body();
            sink.complete(body, self.trailers.take());
        }
    }

    fn abandon(&mut self) {
        if let Some(sink) = self.sink.take() {
            sink.abandon();
        }
    }
}

impl Drop for Fill {
    fn drop(&mut self) {
        // Dropped before its end: hyper stops polling once `Content-Length` bytes were written, which is whole;
        // anything else is a client that went away mid-body.
        if self.expected.is_some_and(|n| n == self.len as u64) {
            self.end();
        } else {
            self.abandon();
        }
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Cached { data: Option<Bytes>, trailers: Option<HeaderMap> },
        Inner { #[pin] body: B },
        Tee { #[pin] body: B, fill: Option<Fill> },
    }
}

pin_project! {
    /// The body of a response that passed through the cache: a stored copy, or the origin's body (copied into the
    /// cache as it streams when the response is being stored).
    pub struct CacheBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

impl<B> CacheBody<B> {
    pub(crate) fn cached(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        Self {
            kind: Kind::Cached {
                data: (!data.is_empty()).then_some(data),
                trailers,
            },
        }
    }

    pub(crate) fn empty() -> Self {
        Self {
            kind: Kind::Cached {
                data: None,
                trailers: None,
            },
        }
    }

    pub(crate) fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    pub(crate) fn tee(body: B, fill: Fill) -> Self {
        Self {
            kind: Kind::Tee {
                body,
                fill: Some(fill),
            },
        }
    }

    /// Whether this body is a copy from the cache.
    pub fn is_cached(&self) -> bool {
        matches!(self.kind, Kind::Cached { .. })
    }
}

impl<B> Body for CacheBody<B>
where
    B: Body,
    B::Data: Buf,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Cached { data, trailers } => {
                if let Some(d) = data.take() {
                    return Poll::Ready(Some(Ok(Frame::data(d))));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
            KindProj::Inner { body } => {
                let frame = ready!(body.poll_frame(cx));
                Poll::Ready(
                    frame.map(|r| r.map(|f| f.map_data(|mut d| d.copy_to_bytes(d.remaining())))),
                )
            }
            KindProj::Tee { mut body, fill } => {
                let frame = ready!(body.as_mut().poll_frame(cx));
                match frame {
                    Some(Ok(frame)) => {
                        let frame = frame.map_data(|mut d| d.copy_to_bytes(d.remaining()));
                        if let Some(f) = fill.as_mut() {
                            if let Some(d) = frame.data_ref() {
                                f.data(d);
                            } else if let Some(t) = frame.trailers_ref() {
                                f.trailers = Some(t.clone());
                            }
                            if body.is_end_stream() {
                                f.end();
                            }
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Some(Err(e)) => {
                        if let Some(f) = fill.as_mut() {
                            f.abandon();
                        }
                        Poll::Ready(Some(Err(e)))
                    }
                    None => {
                        if let Some(f) = fill.as_mut() {
                            f.end();
                        }
                        Poll::Ready(None)
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Cached { data, trailers } => data.is_none() && trailers.is_none(),
            Kind::Inner { body } | Kind::Tee { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Cached { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Inner { body } | Kind::Tee { body, .. } => body.size_hint(),
        }
    }
}

impl<B> fmt::Debug for CacheBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Cached { .. } => "cached",
            Kind::Inner { .. } => "inner",
            Kind::Tee { .. } => "tee",
        };
        f.debug_struct("CacheBody").field("kind", &kind).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};
    use std::sync::{Arc, Mutex};

    #[derive(Debug, PartialEq)]
    enum Seen {
        Complete(Bytes, bool),
        TooBig,
        Abandon,
    }

    struct Sink(Arc<Mutex<Vec<Seen>>>);
    impl FillSink for Sink {
        fn complete(self: Box<Self>, body: Bytes, trailers: Option<HeaderMap>) {
            self.0
                .lock()
                .unwrap()
                .push(Seen::Complete(body, trailers.is_some()));
        }
        fn too_big(self: Box<Self>) {
            self.0.lock().unwrap().push(Seen::TooBig);
        }
        fn abandon(self: Box<Self>) {
            self.0.lock().unwrap().push(Seen::Abandon);
        }
    }

    type Frames = Vec<Result<Frame<Bytes>, std::io::Error>>;

    fn tee(
        frames: Frames,
        max: usize,
        expected: Option<u64>,
    ) -> (
        CacheBody<impl Body<Data = Bytes, Error = std::io::Error>>,
        Arc<Mutex<Vec<Seen>>>,
    ) {
        let seen = Arc::default();
        let body = StreamBody::new(futures_util::stream::iter(frames));
        let fill = Fill::new(Box::new(Sink(Arc::clone(&seen))), max, expected);
        (CacheBody::tee(body, fill), seen)
    }

    fn data(s: &'static str) -> Result<Frame<Bytes>, std::io::Error> {
        Ok(Frame::data(Bytes::from_static(s.as_bytes())))
    }

    #[tokio::test]
    async fn whole_body_with_trailers_is_completed() {
        let mut t = HeaderMap::new();
        t.insert("x-sum", "1".parse().unwrap());
        let (body, seen) = tee(
            vec![data("ab"), data("cd"), Ok(Frame::trailers(t))],
            100,
            None,
        );
        let out = body.collect().await.unwrap();
        assert!(out.trailers().is_some());
        assert_eq!(out.to_bytes(), "abcd");
        assert_eq!(
            *seen.lock().unwrap(),
            vec![Seen::Complete(Bytes::from_static(b"abcd"), true)]
        );
    }

    #[tokio::test]
    async fn error_mid_body_is_abandoned() {
        let (body, seen) = tee(
            vec![data("ab"), Err(std::io::Error::other("reset"))],
            100,
            None,
        );
        assert!(body.collect().await.is_err());
        assert_eq!(*seen.lock().unwrap(), vec![Seen::Abandon]);
    }

    #[tokio::test]
    async fn short_body_for_its_content_length_is_abandoned() {
        let (body, seen) = tee(vec![data("ab")], 100, Some(10));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "ab");
        assert_eq!(*seen.lock().unwrap(), vec![Seen::Abandon]);
    }

    #[tokio::test]
    async fn dropped_half_way_is_abandoned_and_dropped_at_length_is_whole() {
        let (mut body, seen) = tee(vec![data("ab"), data("cd")], 100, None);
        body.frame().await.unwrap().unwrap();
        drop(body);
        assert_eq!(*seen.lock().unwrap(), vec![Seen::Abandon]);
        let (mut body, seen) = tee(vec![data("ab"), data("cd")], 100, Some(2));
        body.frame().await.unwrap().unwrap();
        drop(body);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![Seen::Complete(Bytes::from_static(b"ab"), false)]
        );
    }

    #[tokio::test]
    async fn too_big_streams_through() {
        let (body, seen) = tee(vec![data("abc"), data("def")], 4, None);
        assert_eq!(body.collect().await.unwrap().to_bytes(), "abcdef");
        assert_eq!(*seen.lock().unwrap(), vec![Seen::TooBig]);
    }

    #[tokio::test]
    async fn cached_body_has_exact_size_and_trailers() {
        let mut t = HeaderMap::new();
        t.insert("x", "1".parse().unwrap());
        let body: CacheBody<http_body_util::Empty<Bytes>> =
            CacheBody::cached(Bytes::from_static(b"hey"), Some(t));
        assert_eq!(body.size_hint().exact(), Some(3));
        assert!(body.is_cached());
        let out = body.collect().await.unwrap();
        assert_eq!(out.trailers().unwrap()["x"], "1");
        let empty: CacheBody<http_body_util::Empty<Bytes>> = CacheBody::empty();
        assert!(empty.is_end_stream());
    }
}
