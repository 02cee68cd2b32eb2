//! [`RequestDecompression`]: the request decoding service.

use super::{body::DecodedBody, decode::Decoder, future::RequestFuture, layer::RequestConfig};
use crate::metrics;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header::CONTENT_ENCODING};
use http_body::Body;
use std::{
    sync::Arc,
    task::{Context, Poll},
};
use tower_kit_core::PolicyBody;
use tower_service::Service;

/// Decodes gzip request bodies for `S`; made by [`RequestDecompressionLayer`](crate::RequestDecompressionLayer).
#[derive(Clone, Debug)]
pub struct RequestDecompression<S> {
    inner: S,
    config: Arc<RequestConfig>,
}

impl<S> RequestDecompression<S> {
    pub(crate) fn new(inner: S, config: Arc<RequestConfig>) -> Self {
        Self { inner, config }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// What a request's `Content-Encoding` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coding {
    /// No coding (or only `identity`): `strip` when the header is there.
    Identity {
        strip: bool,
    },
    Gzip,
    Unsupported,
}

pub(crate) fn coding(headers: &HeaderMap) -> Coding {
    let mut codings = Vec::new();
    let mut present = false;
    for value in headers.get_all(CONTENT_ENCODING) {
        present = true;
        let Ok(text) = value.to_str() else {
            return Coding::Unsupported;
        };
        codings.extend(
            text.split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity")),
        );
    }
    match codings.as_slice() {
        [] => Coding::Identity { strip: present },
        [one] if one.eq_ignore_ascii_case("gzip") || one.eq_ignore_ascii_case("x-gzip") => {
            Coding::Gzip
        }
        _ => Coding::Unsupported,
    }
}

/// Whether a request has no body to decode: its body says it has ended or is exactly 0 bytes long (hyper's body
/// for an HTTP/1 request without `Content-Length` and `Transfer-Encoding`, or an HTTP/2 request whose headers end
/// the stream), or it declares `Content-Length: 0`.
pub(crate) fn carries_no_body<B: Body>(request: &Request<B>) -> bool {
    let body = request.body();
    body.is_end_stream()
        || body.size_hint().exact() == Some(0)
        || tower_kit_core::content_length(request.headers()) == Some(0)
}

/// A plain-text refusal.
pub(crate) fn refusal<B>(status: StatusCode, message: &'static str) -> Response<PolicyBody<B>> {
    let mut response = Response::new(PolicyBody::full(message));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        // RFC 7694: say which codings are accepted.
        response.headers_mut().insert(
            http::header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip"),
        );
    }
    response
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequestDecompression<S>
where
    S: Service<Request<DecodedBody<ReqBody>>, Response = Response<ResBody>> + Clone,
    ReqBody: Body,
{
    type Response = Response<PolicyBody<ResBody>>;
    type Error = S::Error;
    type Future = RequestFuture<S, ReqBody>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        if let Some(exempt) = &self.config.exempt {
            let (parts, body) = request.into_parts();
            let exempt = exempt(&parts);
            let request = Request::from_parts(parts, body);
            if exempt {
                let request = request.map(|body| DecodedBody::Passthrough { body });
                return RequestFuture::inner(self.inner.call(request));
            }
            return self.decide(request);
        }
        self.decide(request)
    }
}

impl<S> RequestDecompression<S> {
    fn decide<ReqBody, ResBody>(&mut self, request: Request<ReqBody>) -> RequestFuture<S, ReqBody>
    where
        S: Service<Request<DecodedBody<ReqBody>>, Response = Response<ResBody>> + Clone,
        ReqBody: Body,
    {
        let coding = coding(request.headers());
        if !matches!(coding, Coding::Identity { .. }) && carries_no_body(&request) {
            // Nothing to decode (`GET /health` from a client that sets `Content-Encoding` on every request): not
            // refused, not touched.
            metrics::request("no_body");
            let (parts, body) = request.into_parts();
            let request = Request::from_parts(parts, DecodedBody::Passthrough { body });
            return RequestFuture::inner(self.inner.call(request));
        }
        match coding {
            Coding::Identity { strip } => {
                let (mut parts, body) = request.into_parts();
                if strip {
                    parts.headers.remove(CONTENT_ENCODING);
                }
                let request = Request::from_parts(parts, DecodedBody::Passthrough { body });
                RequestFuture::inner(self.inner.call(request))
            }
            Coding::Unsupported => {
                metrics::request("unsupported");
                RequestFuture::immediate(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "request Content-Encoding must be gzip or identity\n",
                )
            }
            Coding::Gzip => {
                // The ready clone goes with the request; the fresh clone waits for the next `poll_ready`.
                let clone = self.inner.clone();
                let service = std::mem::replace(&mut self.inner, clone);
                let (parts, body) = request.into_parts();
                RequestFuture::decoding(service, parts, body, Decoder::new(self.config.max_decoded))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coding_of(values: &[&[u8]]) -> Coding {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(CONTENT_ENCODING, HeaderValue::from_bytes(v).unwrap());
        }
        coding(&h)
    }

    #[test]
    fn content_encoding_values() {
        assert_eq!(coding_of(&[]), Coding::Identity { strip: false });
        assert_eq!(coding_of(&[b"identity"]), Coding::Identity { strip: true });
        assert_eq!(coding_of(&[b""]), Coding::Identity { strip: true });
        assert_eq!(coding_of(&[b"gzip"]), Coding::Gzip);
        assert_eq!(coding_of(&[b" GZIP "]), Coding::Gzip);
        assert_eq!(coding_of(&[b"x-gzip"]), Coding::Gzip);
        assert_eq!(coding_of(&[b"identity, gzip"]), Coding::Gzip);
        assert_eq!(coding_of(&[b"gzip, gzip"]), Coding::Unsupported);
        assert_eq!(coding_of(&[b"gzip", b"gzip"]), Coding::Unsupported);
        assert_eq!(coding_of(&[b"br"]), Coding::Unsupported);
        assert_eq!(coding_of(&[b"deflate"]), Coding::Unsupported);
        assert_eq!(coding_of(&[b"gzip, br"]), Coding::Unsupported);
        assert_eq!(coding_of(&[b"gz\xffip"]), Coding::Unsupported);
    }
}
