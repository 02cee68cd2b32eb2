use crate::content_length;
use bytes::Buf;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

/// How a response body finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BodyEnd {
    /// Every byte was produced: the inner body returned its last frame, or the server stopped polling because
    /// nothing was left to send (see [`ObservedBody`] for the cases hyper ends without polling to the end).
    Completed,
    /// The inner body returned an error.
    Errored,
    /// The body was dropped before its end: the client went away, or the connection was closed.
    Aborted,
}

impl BodyEnd {
    /// `Completed` is the only ending in which the whole body reached the server's writer.
    pub fn is_completed(self) -> bool {
        matches!(self, BodyEnd::Completed)
    }
}

/// Watches a body on behalf of a layer. [`on_end`](BodyObserver::on_end) is called exactly once.
///
/// Closures `FnOnce(BodyEnd)` are observers too.
pub trait BodyObserver {
    /// A data frame of `len` bytes was produced.
    #[inline]
    fn on_data(&mut self, len: usize) {
        let _ = len;
    }

    /// A trailers frame was produced (gRPC sends its status here).
    #[inline]
    fn on_trailers(&mut self, trailers: &HeaderMap) {
        let _ = trailers;
    }

    /// The body ended, errored, or was dropped. Called once, and always: a panic or a client disconnect drops the
    /// body, and the drop calls this.
    fn on_end(self, end: BodyEnd);
}

impl<F: FnOnce(BodyEnd)> BodyObserver for F {
    fn on_end(self, end: BodyEnd) {
        self(end)
    }
}

pin_project! {
    /// A body that reports its end to a [`BodyObserver`], exactly once.
    ///
    /// Data, trailers, `size_hint` and `is_end_stream` pass through unchanged.
    ///
    /// hyper stops polling a body without waiting for its final `None` in three cases, and this type counts each as
    /// [`BodyEnd::Completed`] when the body is then dropped:
    ///
    /// - the body says [`is_end_stream`](Body::is_end_stream) is true (checked when created and after each frame);
    /// - as many bytes as the expected length (the exact [`size_hint`](Body::size_hint) when created, or
    ///   [`expected_len`](ObservedBody::expected_len)) were sent;
    /// - the response has no body to send ([`bodyless`](ObservedBody::bodyless)): a HEAD request, or a 1xx, 204 or
    ///   304 status. [`for_response`](ObservedBody::for_response) sets all of this from the request method and
    ///   the response head.
    ///
    /// Any other drop before the end is [`BodyEnd::Aborted`].
    pub struct ObservedBody<B, O: BodyObserver> {
        #[pin]
        inner: B,
        observer: Option<O>,
        sent: u64,
        expected: Option<u64>,
        done_hint: bool,
    }

    impl<B, O: BodyObserver> PinnedDrop for ObservedBody<B, O> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(observer) = this.observer.take() {
                let completed = *this.done_hint || this.expected.is_some_and(|n| *this.sent >= n);
                observer.on_end(if completed { BodyEnd::Completed } else { BodyEnd::Aborted });
            }
        }
    }
}

impl<B: Body, O: BodyObserver> ObservedBody<B, O> {
    /// Wraps `inner`; the expected length is its exact size hint, if it has one.
    pub fn new(inner: B, observer: O) -> Self {
        let expected = inner.size_hint().exact();
        let done_hint = inner.is_end_stream();
        Self {
            inner,
            observer: Some(observer),
            sent: 0,
            expected,
            done_hint,
        }
    }

    /// Wraps the body of a response, reading the end hints from the request method and the response head:
    /// HEAD requests and 1xx/204/304 statuses are bodyless, and a `Content-Length` header sets the expected length.
    pub fn for_response(
        inner: B,
        observer: O,
        method: &http::Method,
        status: http::StatusCode,
        headers: &HeaderMap,
    ) -> Self {
        let bodyless = method == http::Method::HEAD
            || status.is_informational()
            || status == http::StatusCode::NO_CONTENT
            || status == http::StatusCode::NOT_MODIFIED;
        let mut body = Self::new(inner, observer).bodyless(bodyless);
        if let Some(len) = content_length(headers) {
            body.expected = Some(len);
        }
        body
    }
}

impl<B, O: BodyObserver> ObservedBody<B, O> {
    /// Marks the response as one with no body to send (HEAD, 1xx, 204, 304): a drop is then a normal end.
    #[must_use]
    pub fn bodyless(mut self, bodyless: bool) -> Self {
        self.done_hint |= bodyless;
        self
    }

    /// Sets the number of bytes after which a drop counts as a normal end (a `Content-Length`).
    #[must_use]
    pub fn expected_len(mut self, len: Option<u64>) -> Self {
        self.expected = len;
        self
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// Bytes of data produced so far.
    pub fn bytes_sent(&self) -> u64 {
        self.sent
    }

    fn finish(self: Pin<&mut Self>, end: BodyEnd) {
        if let Some(observer) = self.project().observer.take() {
            observer.on_end(end);
        }
    }
}

impl<B: Body, O: BodyObserver> Body for ObservedBody<B, O> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.as_mut().project();
        let result = ready!(this.inner.poll_frame(cx));
        match &result {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.remaining();
                    *this.sent += len as u64;
                    if let Some(observer) = this.observer.as_mut() {
                        observer.on_data(len);
                    }
                } else if let Some(trailers) = frame.trailers_ref()
                    && let Some(observer) = this.observer.as_mut()
                {
                    observer.on_trailers(trailers);
                }
                let this = self.as_mut().project();
                if this.inner.is_end_stream() {
                    *this.done_hint = true;
                }
            }
            Some(Err(_)) => self.finish(BodyEnd::Errored),
            None => self.finish(BodyEnd::Completed),
        }
        Poll::Ready(result)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B, O> std::fmt::Debug for ObservedBody<B, O>
where
    B: std::fmt::Debug,
    O: BodyObserver,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObservedBody")
            .field("inner", &self.inner)
            .field("sent", &self.sent)
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full, StreamBody};
    use std::sync::{Arc, Mutex};

    type Seen = Arc<Mutex<Vec<BodyEnd>>>;

    fn recorder() -> (Seen, impl FnOnce(BodyEnd) + Send + 'static) {
        let seen: Seen = Arc::default();
        let s = seen.clone();
        (seen, move |end| s.lock().unwrap().push(end))
    }

    type Item = Result<Frame<Bytes>, std::io::Error>;

    fn frames(
        items: Vec<Item>,
    ) -> StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Item>>> {
        StreamBody::new(futures_util::stream::iter(items))
    }

    #[tokio::test]
    async fn end_of_stream_is_completed_once() {
        let (seen, obs) = recorder();
        let body = ObservedBody::new(
            frames(vec![
                Ok(Frame::data(Bytes::from_static(b"ab"))),
                Ok(Frame::data(Bytes::from_static(b"cd"))),
            ]),
            obs,
        );
        let out = body.collect().await.unwrap().to_bytes();
        assert_eq!(out, "abcd");
        assert_eq!(*seen.lock().unwrap(), vec![BodyEnd::Completed]);
    }

    #[tokio::test]
    async fn error_is_errored_once() {
        let (seen, obs) = recorder();
        let body = ObservedBody::new(
            frames(vec![
                Ok(Frame::data(Bytes::from_static(b"ab"))),
                Err(std::io::Error::other("boom")),
            ]),
            obs,
        );
        assert!(body.collect().await.is_err());
        assert_eq!(*seen.lock().unwrap(), vec![BodyEnd::Errored]);
    }

    #[tokio::test]
    async fn drop_mid_stream_is_aborted() {
        let (seen, obs) = recorder();
        let mut body = ObservedBody::new(
            frames(vec![
                Ok(Frame::data(Bytes::from_static(b"ab"))),
                Ok(Frame::data(Bytes::from_static(b"cd"))),
            ]),
            obs,
        );
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "ab");
        assert!(seen.lock().unwrap().is_empty(), "not ended while streaming");
        drop(body);
        assert_eq!(*seen.lock().unwrap(), vec![BodyEnd::Aborted]);
    }

    #[test]
    fn drop_of_an_end_stream_body_is_completed() {
        let (seen, obs) = recorder();
        drop(ObservedBody::new(
            http_body_util::Empty::<Bytes>::new(),
            obs,
        ));
        assert_eq!(*seen.lock().unwrap(), vec![BodyEnd::Completed]);
    }

    #[test]
    fn drop_of_a_bodyless_response_is_completed() {
        let (seen, obs) = recorder();
        let body = ObservedBody::for_response(
            Full::new(Bytes::from_static(b"not sent")),
            obs,
            &http::Method::HEAD,
            http::StatusCode::OK,
            &HeaderMap::new(),
        );
        drop(body);
        assert_eq!(*seen.lock().unwrap(), vec![BodyEnd::Completed]);
        for status in [204, 304] {
            let (seen, obs) = recorder();
            drop(ObservedBody::for_response(
                Full::new(Bytes::from_static(b"x")),
                obs,
                &http::Method::GET,
                http::StatusCode::from_u16(status).unwrap(),
                &HeaderMap::new(),
            ));
            assert_eq!(*seen.lock().unwrap(), vec![BodyEnd::Completed]);
        }
    }

    #[tokio::test]
    async fn drop_after_content_length_bytes_is_completed() {
        let (seen, obs) = recorder();
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_LENGTH, "2".parse().unwrap());
        // A stream body has no exact size hint: only the header says when it is done.
        let mut body = ObservedBody::for_response(
            frames(vec![
                Ok(Frame::data(Bytes::from_static(b"ab"))),
                Ok(Frame::data(Bytes::new())),
            ]),
            obs,
            &http::Method::GET,
            http::StatusCode::OK,
            &headers,
        );
        body.frame().await.unwrap().unwrap();
        drop(body);
        assert_eq!(*seen.lock().unwrap(), vec![BodyEnd::Completed]);
    }

    #[tokio::test]
    async fn malformed_content_length_is_not_trusted() {
        let (seen, obs) = recorder();
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_LENGTH, "+0".parse().unwrap());
        let body = ObservedBody::for_response(
            frames(vec![Ok(Frame::data(Bytes::from_static(b"ab")))]),
            obs,
            &http::Method::GET,
            http::StatusCode::OK,
            &headers,
        );
        drop(body);
        assert_eq!(*seen.lock().unwrap(), vec![BodyEnd::Aborted]);
    }

    #[tokio::test]
    async fn observer_sees_bytes_and_trailers() {
        #[derive(Default)]
        struct Obs {
            bytes: usize,
            trailer: Option<String>,
            out: Arc<Mutex<Option<Seen3>>>,
        }
        type Seen3 = (usize, Option<String>, BodyEnd);
        impl BodyObserver for Obs {
            fn on_data(&mut self, len: usize) {
                self.bytes += len;
            }
            fn on_trailers(&mut self, t: &HeaderMap) {
                self.trailer = t.get("grpc-status").map(|v| v.to_str().unwrap().to_owned());
            }
            fn on_end(self, end: BodyEnd) {
                *self.out.lock().unwrap() = Some((self.bytes, self.trailer, end));
            }
        }
        let out = Arc::default();
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "5".parse().unwrap());
        let body = ObservedBody::new(
            frames(vec![
                Ok(Frame::data(Bytes::from_static(b"abc"))),
                Ok(Frame::trailers(trailers)),
            ]),
            Obs {
                out: Arc::clone(&out),
                ..Default::default()
            },
        );
        let collected = body.collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "5");
        assert_eq!(
            *out.lock().unwrap(),
            Some((3, Some("5".to_owned()), BodyEnd::Completed))
        );
    }

    #[test]
    fn size_hint_and_end_stream_pass_through() {
        let (_seen, obs) = recorder();
        let body = ObservedBody::new(Full::new(Bytes::from_static(b"hello")), obs);
        assert_eq!(body.size_hint().exact(), Some(5));
        assert!(!body.is_end_stream());
    }
}
