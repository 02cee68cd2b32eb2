//! [`RequestDecompression`]: the request decoding service.

use super::{body::DecodedBody, decode::Decoder, future::RequestFuture, layer::RequestConfig};
use crate::codec::Coding;
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

    tower_kit_core::inner_service_accessors!();
}

/// The most codings a request body may stack; more is answered 415.
pub(crate) const MAX_STACKED: usize = 4;

/// What a request's `Content-Encoding` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RequestCoding {
    /// No coding (or only `identity`): `strip` when the header is there.
    Identity { strip: bool },
    /// These codings, in the order listed (applied first to last, so undone last to first).
    Encoded(Vec<Coding>),
    /// A coding this layer does not decode, or more than [`MAX_STACKED`].
    Unsupported,
}

pub(crate) fn coding(headers: &HeaderMap, accepted: &[Coding]) -> RequestCoding {
    let mut codings = Vec::new();
    let mut present = false;
    for value in headers.get_all(CONTENT_ENCODING) {
        present = true;
        let Ok(text) = value.to_str() else {
            return RequestCoding::Unsupported;
        };
        for token in text
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"))
        {
            match Coding::from_token(token) {
                Some(coding) if accepted.contains(&coding) && codings.len() < MAX_STACKED => {
                    codings.push(coding)
                }
                _ => return RequestCoding::Unsupported,
            }
        }
    }
    if codings.is_empty() {
        RequestCoding::Identity { strip: present }
    } else {
        RequestCoding::Encoded(codings)
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

/// A plain-text refusal; a 415 lists the codings this layer decodes in `Accept-Encoding` (RFC 9110 §15.5.16).
pub(crate) fn refusal<B>(
    status: StatusCode,
    message: &'static str,
    accept: &HeaderValue,
) -> Response<PolicyBody<B>> {
    let mut response = Response::new(PolicyBody::full(message));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        // RFC 9110 §15.5.16 (and RFC 7694): say which codings are accepted.
        response
            .headers_mut()
            .insert(http::header::ACCEPT_ENCODING, accept.clone());
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
        if self.config.exempt.is_set() {
            let (parts, body) = request.into_parts();
            let exempt = self.config.exempt.matches(&parts);
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
        let coding = coding(request.headers(), &self.config.codings);
        if !matches!(coding, RequestCoding::Identity { .. }) && carries_no_body(&request) {
            // Nothing to decode (`GET /health` from a client that sets `Content-Encoding` on every request): not
            // refused, not touched.
            metrics::request("no_body");
            let (parts, body) = request.into_parts();
            let request = Request::from_parts(parts, DecodedBody::Passthrough { body });
            return RequestFuture::inner(self.inner.call(request));
        }
        match coding {
            RequestCoding::Identity { strip } => {
                let (mut parts, body) = request.into_parts();
                if strip {
                    parts.headers.remove(CONTENT_ENCODING);
                }
                let request = Request::from_parts(parts, DecodedBody::Passthrough { body });
                RequestFuture::inner(self.inner.call(request))
            }
            RequestCoding::Unsupported => {
                metrics::request("unsupported");
                RequestFuture::immediate(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "request Content-Encoding is not one this server decodes (see Accept-Encoding)\n",
                    self.config.accept_encoding.clone(),
                )
            }
            RequestCoding::Encoded(codings) => {
                // The ready clone goes with the request; the fresh clone waits for the next `poll_ready`.
                let clone = self.inner.clone();
                let service = std::mem::replace(&mut self.inner, clone);
                let (parts, body) = request.into_parts();
                let decoder = Decoder::new(&codings, self.config.max_decoded);
                RequestFuture::decoding(
                    service,
                    parts,
                    body,
                    decoder,
                    self.config.accept_encoding.clone(),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Coding; 4] = [Coding::Gzip, Coding::Deflate, Coding::Br, Coding::Zstd];

    fn coding_of(values: &[&[u8]], accepted: &[Coding]) -> RequestCoding {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(CONTENT_ENCODING, HeaderValue::from_bytes(v).unwrap());
        }
        coding(&h, accepted)
    }

    #[test]
    fn content_encoding_values() {
        use RequestCoding::{Encoded, Identity, Unsupported};
        let of = |values: &[&[u8]]| coding_of(values, &ALL);
        assert_eq!(of(&[]), Identity { strip: false });
        assert_eq!(of(&[b"identity"]), Identity { strip: true });
        assert_eq!(of(&[b""]), Identity { strip: true });
        assert_eq!(of(&[b"gzip"]), Encoded(vec![Coding::Gzip]));
        assert_eq!(of(&[b" GZIP "]), Encoded(vec![Coding::Gzip]));
        assert_eq!(of(&[b"x-gzip"]), Encoded(vec![Coding::Gzip]));
        assert_eq!(of(&[b"identity, gzip"]), Encoded(vec![Coding::Gzip]));
        assert_eq!(of(&[b"br"]), Encoded(vec![Coding::Br]));
        assert_eq!(of(&[b"zstd"]), Encoded(vec![Coding::Zstd]));
        assert_eq!(of(&[b"deflate"]), Encoded(vec![Coding::Deflate]));
        assert_eq!(
            of(&[b"gzip, br"]),
            Encoded(vec![Coding::Gzip, Coding::Br]),
            "stacked, in the order listed"
        );
        assert_eq!(
            of(&[b"gzip", b"zstd"]),
            Encoded(vec![Coding::Gzip, Coding::Zstd]),
            "over several lines"
        );
        assert_eq!(
            of(&[b"gzip, gzip, gzip, gzip"]).clone(),
            Encoded(vec![Coding::Gzip; 4])
        );
        assert_eq!(
            of(&[b"gzip, gzip, gzip, gzip, gzip"]),
            Unsupported,
            "more than 4"
        );
        assert_eq!(of(&[b"compress"]), Unsupported);
        assert_eq!(of(&[b"gzip, compress"]), Unsupported);
        assert_eq!(of(&[b"gz\xffip"]), Unsupported);
        assert_eq!(
            coding_of(&[b"br"], &[Coding::Gzip]),
            Unsupported,
            "not enabled"
        );
    }
}
