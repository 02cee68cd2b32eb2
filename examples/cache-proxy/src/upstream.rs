//! The proxy's client side: one pooled HTTP/1.1 client to the upstream, bounded in time at every step, with the
//! upstream's framing headers made to agree with the body the proxy forwards, and every failure named so that the
//! proxy can answer `502 Bad Gateway` or `504 Gateway Timeout`.
//!
//! - Connecting may take [`UpstreamTimeouts::connect`]; then the response head must arrive within
//!   [`UpstreamTimeouts::response`] of the last request byte handed to the upstream (a long upload keeps the clock
//!   at zero while it makes progress); then no gap between two body chunks may exceed
//!   [`UpstreamTimeouts::body_idle`].
//! - The response head is forwarded once its first body chunk has arrived (or at once when it has no body). A
//!   failure before that point (a malformed first chunk, silence after the head) is an error response the client
//!   can read; after it, the client's connection is aborted, so that a cut-short body never looks complete to the
//!   client and is never stored by the cache.
//! - `Transfer-Encoding` wins over `Content-Length` (RFC 9112 §6.1, §6.3): the length is removed, and the body is
//!   sent on with the framing the proxy chooses. A transfer coding other than `chunked`, which the proxy cannot
//!   decode, is a `502`.

use crate::{Upstream, VIA, strip_hop_by_hop};
use bytes::{Buf, Bytes};
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header,
    response::Parts,
};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use pin_project_lite::pin_project;
use std::{
    error::Error as StdError,
    fmt,
    future::Future,
    pin::{Pin, pin},
    sync::Arc,
    task::{Context, Poll, ready},
    time::{Duration, SystemTime},
};
use tokio::{
    sync::Notify,
    time::{Instant, Sleep},
};
use tower_service::Service;

/// How long the proxy waits for the upstream at each step. Every limit answers the client `504 Gateway Timeout`
/// (or a stored response that may be served stale) when it is reached before the response head was sent,
/// and aborts the client's connection when it is reached while the body streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamTimeouts {
    /// The longest a TCP connection to the upstream may take to open. Default 5 s.
    pub connect: Duration,
    /// The longest wait for the response head, counted from the last request byte handed to the upstream
    /// (connecting included). Default 30 s.
    pub response: Duration,
    /// The longest gap between two chunks of the response body (and between the head and the first chunk).
    /// Default 30 s.
    pub body_idle: Duration,
}

impl Default for UpstreamTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            response: Duration::from_secs(30),
            body_idle: Duration::from_secs(30),
        }
    }
}

/// Parses a timeout written `250ms`, `10s`, `2m` or as a bare number of seconds (`1.5`); zero is refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 250ms, 10s or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit `{unit}` in `{text}`: use ms, s or m")),
    };
    let duration = Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{text}`: {e}"))?;
    if duration.is_zero() {
        return Err(format!("`{text}`: a timeout must be longer than zero"));
    }
    Ok(duration)
}

/// Why the upstream gave no usable answer; [`UpstreamError::status`] is what the proxy answers instead.
#[derive(Debug)]
pub struct UpstreamError {
    kind: Kind,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The request target cannot be put under the upstream's base path.
    Target,
    /// No connection: refused, unreachable, DNS failed.
    Connect,
    /// No connection within the connect timeout.
    ConnectTimeout(Duration),
    /// No response head within the response timeout.
    ResponseTimeout(Duration),
    /// A gap in the body longer than the body-idle timeout.
    BodyTimeout(Duration),
    /// The connection failed or the head was malformed.
    Response,
    /// The head is one the proxy cannot forward faithfully.
    Framing(&'static str),
    /// The body was malformed or cut short.
    Body,
}

impl UpstreamError {
    fn new(kind: Kind, source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self {
            kind,
            source: Some(source.into()),
        }
    }

    fn bare(kind: Kind) -> Self {
        Self { kind, source: None }
    }

    /// The client's error for a failed request: a `hyper-util` client error, told apart by its cause.
    fn from_client(e: hyper_util::client::legacy::Error) -> Self {
        let kind = if e.is_connect() {
            Kind::Connect
        } else {
            Kind::Response
        };
        Self::new(kind, e)
    }

    /// What the proxy answers instead: `504 Gateway Timeout` when a timeout ran out, `400 Bad Request` for a
    /// target that cannot be forwarded, `502 Bad Gateway` otherwise.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            Kind::Target => StatusCode::BAD_REQUEST,
            Kind::ConnectTimeout(_) | Kind::ResponseTimeout(_) | Kind::BodyTimeout(_) => {
                StatusCode::GATEWAY_TIMEOUT
            }
            Kind::Connect | Kind::Response | Kind::Framing(_) | Kind::Body => {
                StatusCode::BAD_GATEWAY
            }
        }
    }

    /// Whether a timeout ran out.
    pub fn is_timeout(&self) -> bool {
        self.status() == StatusCode::GATEWAY_TIMEOUT
    }

    /// The proxy's own answer for this error: [`UpstreamError::status`] with a one-line plain-text reason.
    pub fn response(&self) -> Response<Full<Bytes>> {
        let status = self.status();
        let reason = status.canonical_reason().unwrap_or("error").to_lowercase();
        let mut response = Response::new(Full::new(Bytes::from(format!("{reason}: {self}\n"))));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Kind::Target => f.write_str("the request target cannot be forwarded"),
            Kind::Connect => f.write_str("the upstream could not be reached"),
            Kind::ConnectTimeout(d) => write!(f, "no connection to the upstream within {d:?}"),
            Kind::ResponseTimeout(d) => {
                write!(f, "the upstream sent no response head within {d:?}")
            }
            Kind::BodyTimeout(d) => write!(f, "the upstream's body paused for more than {d:?}"),
            Kind::Response => f.write_str("the upstream did not answer"),
            Kind::Framing(why) => write!(f, "the upstream's response cannot be forwarded: {why}"),
            Kind::Body => f.write_str("the upstream's body was malformed or cut short"),
        }
    }
}

impl StdError for UpstreamError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// The service under the cache: sends a request to the upstream within the [`UpstreamTimeouts`], cleans both heads,
/// and answers once the response's first body chunk has arrived.
#[derive(Clone)]
pub struct Forward {
    client: Client<HttpConnector, RequestBody>,
    upstream: Arc<Upstream>,
    timeouts: UpstreamTimeouts,
}

impl fmt::Debug for Forward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Forward")
            .field("upstream", &self.upstream)
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

impl Forward {
    /// A pooled HTTP/1.1 client for `upstream` with the default [`UpstreamTimeouts`].
    pub fn new(upstream: Upstream) -> Self {
        Self::with_timeouts(upstream, UpstreamTimeouts::default())
    }

    /// A pooled HTTP/1.1 client for `upstream` with these timeouts.
    pub fn with_timeouts(upstream: Upstream, timeouts: UpstreamTimeouts) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeouts.connect));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Self {
            client,
            upstream: Arc::new(upstream),
            timeouts,
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl Service<Request<Incoming>> for Forward {
    type Response = Response<UpstreamBody>;
    type Error = UpstreamError;
    type Future = BoxFuture<Result<Response<UpstreamBody>, UpstreamError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The client queues on its pool itself.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let client = self.client.clone();
        let upstream = Arc::clone(&self.upstream);
        let timeouts = self.timeouts;
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            if let Some(host) = parts.headers.remove(header::HOST) {
                parts
                    .headers
                    .insert(HeaderName::from_static("x-forwarded-host"), host);
            }
            parts
                .headers
                .append(header::VIA, HeaderValue::from_static(VIA));
            parts.uri = upstream
                .target(&parts.uri)
                .map_err(|e| UpstreamError::new(Kind::Target, e))?;
            parts.version = http::Version::HTTP_11;
            let method = parts.method.clone();
            let progress = Arc::new(Notify::new());
            let body = RequestBody {
                body,
                progress: Arc::clone(&progress),
            };
            let response = client.request(Request::from_parts(parts, body));
            let response = head_within(response, &progress, timeouts).await?;

            let (mut head, body) = response.into_parts();
            framing(&mut head, &method)?;
            strip_hop_by_hop(&mut head.headers);
            if !head.headers.contains_key(header::DATE)
                && let Ok(date) = HeaderValue::from_str(&httpdate::fmt_http_date(SystemTime::now()))
            {
                head.headers.insert(header::DATE, date);
            }
            head.headers
                .append(header::VIA, HeaderValue::from_static(VIA));
            let body = UpstreamBody::first_chunk(body, timeouts.body_idle).await?;
            Ok(Response::from_parts(head, body))
        })
    }
}

/// Waits for the response head: at most `timeouts.response` after the last request body chunk went out.
async fn head_within<F>(
    response: F,
    progress: &Notify,
    timeouts: UpstreamTimeouts,
) -> Result<Response<Incoming>, UpstreamError>
where
    F: Future<Output = Result<Response<Incoming>, hyper_util::client::legacy::Error>>,
{
    let mut response = pin!(response);
    loop {
        tokio::select! {
            biased;
            result = &mut response => {
                return result.map_err(|e| {
                    if is_timed_out(&e) {
                        UpstreamError::new(Kind::ConnectTimeout(timeouts.connect), e)
                    } else {
                        UpstreamError::from_client(e)
                    }
                });
            }
            () = progress.notified() => {}
            () = tokio::time::sleep(timeouts.response) => {
                return Err(UpstreamError::bare(Kind::ResponseTimeout(timeouts.response)));
            }
        }
    }
}

/// Whether the connector gave up on its connect timeout (an `io::Error` of kind `TimedOut` in the chain).
fn is_timed_out(e: &hyper_util::client::legacy::Error) -> bool {
    let mut source = e.source();
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        source = cause.source();
    }
    false
}

/// Makes the framing headers of the upstream's response agree with the body hyper decoded from it, before the
/// hop-by-hop headers go: with `Transfer-Encoding`, `Content-Length` is removed (RFC 9112 §6.3: it would tell the
/// client a length the decoded body does not have); several equal `Content-Length` values become one; a
/// `Content-Length` that cannot be parsed (hyper only lets one through where no body follows) goes; `204` and `1xx`
/// answers carry none (RFC 9110 §8.6).
fn framing(head: &mut Parts, method: &Method) -> Result<(), UpstreamError> {
    let status = head.status;
    let headers = &mut head.headers;
    let has_body = !(method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED);
    if headers.contains_key(header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
        if has_body && !only_chunked(headers) {
            return Err(UpstreamError::bare(Kind::Framing(
                "a transfer coding other than chunked",
            )));
        }
    } else if headers.contains_key(header::CONTENT_LENGTH) {
        match content_length(headers) {
            Some(n) => {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
            }
            None => {
                headers.remove(header::CONTENT_LENGTH);
            }
        }
    }
    if status.is_informational() || status == StatusCode::NO_CONTENT {
        headers.remove(header::CONTENT_LENGTH);
    }
    Ok(())
}

/// Whether `Transfer-Encoding` names exactly one coding, `chunked` (the one hyper decodes).
fn only_chunked(headers: &HeaderMap) -> bool {
    let mut codings = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|c| !c.is_empty());
    codings
        .next()
        .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
        && codings.next().is_none()
}

/// The length every `Content-Length` value (comma lists included) agrees on, if they all parse and agree.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let n: u64 = std::str::from_utf8(part).ok()?.parse().ok()?;
            if length.is_some_and(|l| l != n) {
                return None;
            }
            length = Some(n);
        }
    }
    length
}

pin_project! {
    /// The request body on its way to the upstream: each chunk handed over restarts the response timeout.
    pub(crate) struct RequestBody {
        #[pin]
        body: Incoming,
        progress: Arc<Notify>,
    }
}

impl fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBody").finish_non_exhaustive()
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.project();
        let frame = ready!(this.body.poll_frame(cx));
        if let Some(Ok(_)) = &frame {
            this.progress.notify_one();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

pin_project! {
    /// The upstream's response body: its first chunk (read before the head was forwarded), then the rest as it
    /// arrives, ended with an [`UpstreamError`] when the upstream pauses longer than the body-idle timeout or
    /// sends a malformed or short body.
    pub struct UpstreamBody {
        first: Option<Frame<Bytes>>,
        #[pin]
        body: Incoming,
        #[pin]
        idle: Sleep,
        idle_for: Duration,
        waiting: bool,
        done: bool,
    }
}

impl fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("idle_for", &self.idle_for)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl UpstreamBody {
    /// Waits for the first frame of `body` (at most `idle_for`), so that a failure there is still an error response.
    async fn first_chunk(mut body: Incoming, idle_for: Duration) -> Result<Self, UpstreamError> {
        let first = if body.is_end_stream() {
            None
        } else {
            match tokio::time::timeout(idle_for, body.frame()).await {
                Err(_) => return Err(UpstreamError::bare(Kind::BodyTimeout(idle_for))),
                Ok(Some(Err(e))) => return Err(UpstreamError::new(Kind::Body, e)),
                Ok(Some(Ok(frame))) => Some(frame),
                Ok(None) => None,
            }
        };
        Ok(Self {
            first,
            body,
            idle: tokio::time::sleep(idle_for),
            idle_for,
            waiting: false,
            done: false,
        })
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let mut this = self.project();
        if let Some(frame) = this.first.take() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if *this.done {
            return Poll::Ready(None);
        }
        match this.body.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                *this.waiting = false;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                *this.done = true;
                Poll::Ready(Some(Err(UpstreamError::new(Kind::Body, e))))
            }
            Poll::Ready(None) => {
                *this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                // The gap is timed from when the proxy asks for the next chunk, so that a slow client (which
                // stops the proxy asking) never counts against the upstream.
                if !*this.waiting {
                    *this.waiting = true;
                    this.idle.as_mut().reset(Instant::now() + *this.idle_for);
                }
                ready!(this.idle.poll(cx));
                *this.done = true;
                Poll::Ready(Some(Err(UpstreamError::bare(Kind::BodyTimeout(
                    *this.idle_for,
                )))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && (self.done || self.body.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self.body.size_hint();
        let first = self
            .first
            .as_ref()
            .and_then(Frame::data_ref)
            .map_or(0, |d| d.remaining() as u64);
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + first);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + first);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        for bad in ["", "ten", "5h", "-1s", "0s", "0", "s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    fn head(status: u16, headers: &[(&'static str, &'static str)]) -> Parts {
        let mut b = Response::builder().status(status);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn values(parts: &Parts, name: &str) -> Vec<String> {
        parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn transfer_encoding_removes_content_length() {
        let mut h = head(
            200,
            &[("content-length", "2"), ("transfer-encoding", "chunked")],
        );
        framing(&mut h, &Method::GET).unwrap();
        assert!(values(&h, "content-length").is_empty());
        // Hyper decodes `chunked` only: anything else under it would reach the client still encoded.
        for te in ["gzip, chunked", "chunked, chunked", "identity"] {
            let mut h = head(200, &[("transfer-encoding", te)]);
            let e = framing(&mut h, &Method::GET).unwrap_err();
            assert_eq!(e.status(), StatusCode::BAD_GATEWAY, "{te}");
        }
        // No body follows a HEAD answer: its codings do not matter.
        let mut h = head(
            200,
            &[
                ("transfer-encoding", "gzip, chunked"),
                ("content-length", "9"),
            ],
        );
        framing(&mut h, &Method::HEAD).unwrap();
        assert!(values(&h, "content-length").is_empty());
        let mut h = head(200, &[("transfer-encoding", "Chunked")]);
        framing(&mut h, &Method::GET).unwrap();
    }

    #[test]
    fn content_length_becomes_one_value_or_none() {
        let mut h = head(200, &[("content-length", "5, 5"), ("content-length", "5")]);
        framing(&mut h, &Method::GET).unwrap();
        assert_eq!(values(&h, "content-length"), ["5"]);
        let mut h = head(200, &[("content-length", "1234")]);
        framing(&mut h, &Method::HEAD).unwrap();
        assert_eq!(
            values(&h, "content-length"),
            ["1234"],
            "HEAD keeps the GET's length"
        );
        let mut h = head(304, &[("content-length", "x")]);
        framing(&mut h, &Method::GET).unwrap();
        assert!(values(&h, "content-length").is_empty());
        let mut h = head(204, &[("content-length", "0")]);
        framing(&mut h, &Method::GET).unwrap();
        assert!(values(&h, "content-length").is_empty());
        let mut h = head(200, &[("content-length", "5"), ("content-length", "6")]);
        framing(&mut h, &Method::HEAD).unwrap();
        assert!(values(&h, "content-length").is_empty());
    }

    #[test]
    fn errors_map_to_gateway_statuses() {
        let timeout = UpstreamError::bare(Kind::ResponseTimeout(Duration::from_secs(30)));
        assert_eq!(timeout.status(), StatusCode::GATEWAY_TIMEOUT);
        assert!(timeout.is_timeout());
        let res = timeout.response();
        assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(res.headers()["cache-control"], "no-store");
        let refused = UpstreamError::new(Kind::Connect, std::io::Error::other("refused"));
        assert_eq!(refused.status(), StatusCode::BAD_GATEWAY);
        assert!(refused.source().is_some());
        assert_eq!(
            UpstreamError::bare(Kind::Target).status(),
            StatusCode::BAD_REQUEST
        );
    }
}
