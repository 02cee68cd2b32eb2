//! The response a layer sends when its policy refuses a request: one shape for every layer.
//!
//! A refusal is a response, never an error: plain HTTP clients get a status (503, 429) with `Retry-After` and a short
//! plain-text body; gRPC clients (`content-type: application/grpc*`) get HTTP 200 with `grpc-status` and
//! `grpc-message` (see [`grpc`](crate::grpc)), plus `grpc-retry-pushback-ms` when a retry delay is known.
//!
//! `Retry-After` has one rounding rule everywhere: whole seconds, rounded up, at least 1 ([`retry_after_secs`]), so
//! a client never retries before the hint and never reads "0" as "retry at once".

use crate::grpc;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use std::{borrow::Cow, time::Duration};

/// `Retry-After` in whole seconds: `after` rounded up, at least 1.
///
/// ```
/// use std::time::Duration;
/// use tower_kit_core::retry_after_secs;
///
/// assert_eq!(retry_after_secs(Duration::ZERO), 1);
/// assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
/// assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
/// ```
#[inline]
pub fn retry_after_secs(after: Duration) -> u64 {
    after
        .as_secs()
        .saturating_add(u64::from(after.subsec_nanos() != 0))
        .max(1)
}

/// `grpc-retry-pushback-ms`: `after` in milliseconds, rounded up (never earlier than the delay).
fn pushback_millis(after: Duration) -> u64 {
    let millis = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
    millis.saturating_add(u64::from(!after.subsec_nanos().is_multiple_of(1_000_000)))
}

/// A prepared refusal: the status, `Retry-After`, body and gRPC status of one layer's refusals, with the header
/// values formatted once, when the layer is built.
///
/// ```
/// use bytes::Bytes;
/// use http::{Response, StatusCode};
/// use std::time::Duration;
/// use tower_kit_core::{RefusalResponse, grpc};
///
/// let refusal = RefusalResponse::new(StatusCode::SERVICE_UNAVAILABLE)
///     .retry_after(Duration::from_millis(1500))
///     .body("server busy, retry later\n")
///     .grpc(grpc::RESOURCE_EXHAUSTED, "concurrency limit reached");
///
/// let plain: Response<Bytes> = refusal.to_response(false);
/// assert_eq!(plain.status(), StatusCode::SERVICE_UNAVAILABLE);
/// assert_eq!(plain.headers()["retry-after"], "2");
/// assert_eq!(plain.headers()["content-type"], "text/plain; charset=utf-8");
///
/// let rpc: Response<Bytes> = refusal.to_response(true);
/// assert_eq!(rpc.status(), StatusCode::OK);
/// assert_eq!(rpc.headers()["grpc-status"], "8");
/// assert_eq!(rpc.headers()["grpc-retry-pushback-ms"], "1500");
/// ```
#[derive(Clone)]
pub struct RefusalResponse {
    status: StatusCode,
    body: Bytes,
    retry_after: Option<(Duration, HeaderValue, HeaderValue)>,
    grpc_code: u8,
    grpc_message: Cow<'static, str>,
}

impl RefusalResponse {
    /// A refusal with this HTTP status, no `Retry-After`, an empty body, and gRPC status `UNAVAILABLE`.
    pub fn new(status: StatusCode) -> Self {
        RefusalResponse {
            status,
            body: Bytes::new(),
            retry_after: None,
            grpc_code: grpc::UNAVAILABLE,
            grpc_message: Cow::Borrowed(""),
        }
    }

    /// Sends `Retry-After` ([`retry_after_secs`]: whole seconds, rounded up, at least 1) on HTTP refusals and
    /// `grpc-retry-pushback-ms` on gRPC ones.
    #[must_use]
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some((
            after,
            HeaderValue::from(retry_after_secs(after)),
            HeaderValue::from(pushback_millis(after)),
        ));
        self
    }

    /// The body of HTTP refusals, sent as `text/plain; charset=utf-8` (empty: no body, no `Content-Type`).
    #[must_use]
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// The `grpc-status` and `grpc-message` of gRPC refusals.
    #[must_use]
    pub fn grpc(mut self, code: u8, message: impl Into<Cow<'static, str>>) -> Self {
        self.grpc_code = code;
        self.grpc_message = message.into();
        self
    }

    /// The HTTP status of plain refusals.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The retry delay as configured (before rounding), if any.
    pub fn retry_after_duration(&self) -> Option<Duration> {
        self.retry_after.as_ref().map(|(d, _, _)| *d)
    }

    /// The response: the gRPC shape when `grpc` is true (see [`is_grpc`](crate::grpc::is_grpc)), else the HTTP one.
    pub fn to_response<B: From<Bytes>>(&self, grpc: bool) -> Response<B> {
        if grpc {
            self.grpc_response()
        } else {
            self.http_response()
        }
    }

    /// The response with `after` as its retry delay instead of the configured one, for a layer whose delay differs
    /// per request (a rate limiter's true wait); `None` sends no `Retry-After` and no pushback.
    pub fn to_response_after<B: From<Bytes>>(
        &self,
        grpc: bool,
        after: Option<Duration>,
    ) -> Response<B> {
        let mut response: Response<B> = self.to_response(grpc);
        let headers = response.headers_mut();
        let name = if grpc {
            header::HeaderName::from_static("grpc-retry-pushback-ms")
        } else {
            header::RETRY_AFTER
        };
        match after {
            Some(after) if grpc => {
                headers.insert(name, HeaderValue::from(pushback_millis(after)));
            }
            Some(after) => {
                headers.insert(name, HeaderValue::from(retry_after_secs(after)));
            }
            None => {
                headers.remove(name);
            }
        }
        response
    }

    /// The plain HTTP refusal: the status, `Retry-After`, and the body as `text/plain; charset=utf-8`.
    pub fn http_response<B: From<Bytes>>(&self) -> Response<B> {
        let mut response = Response::new(B::from(self.body.clone()));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        if let Some((_, secs, _)) = &self.retry_after {
            headers.insert(header::RETRY_AFTER, secs.clone());
        }
        if !self.body.is_empty() {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
        }
        response
    }

    /// The gRPC refusal: HTTP 200, `grpc-status`, `grpc-message`, and `grpc-retry-pushback-ms` when a retry delay
    /// is set.
    pub fn grpc_response<B: From<Bytes>>(&self) -> Response<B> {
        let mut response: Response<B> = grpc::refusal(self.grpc_code, &self.grpc_message);
        if let Some((_, _, millis)) = &self.retry_after {
            response
                .headers_mut()
                .insert("grpc-retry-pushback-ms", millis.clone());
        }
        response
    }
}

impl std::fmt::Debug for RefusalResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefusalResponse")
            .field("status", &self.status)
            .field("body", &self.body)
            .field("retry_after", &self.retry_after_duration())
            .field("grpc_code", &self.grpc_code)
            .field("grpc_message", &self.grpc_message)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_at_least_one() {
        for (d, want) in [
            (Duration::ZERO, 1),
            (Duration::from_nanos(1), 1),
            (Duration::from_secs(1), 1),
            (Duration::from_millis(1500), 2),
            (Duration::from_secs(2), 2),
            (Duration::from_millis(2001), 3),
            (Duration::MAX, u64::MAX),
        ] {
            assert_eq!(retry_after_secs(d), want, "{d:?}");
        }
    }

    #[test]
    fn http_shape_with_every_header_once() {
        let r = RefusalResponse::new(StatusCode::TOO_MANY_REQUESTS)
            .retry_after(Duration::from_millis(10))
            .body("slow down");
        let resp: Response<Bytes> = r.to_response(false);
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry: Vec<_> = resp.headers().get_all(header::RETRY_AFTER).iter().collect();
        assert_eq!(retry, ["1"]);
        let ct: Vec<_> = resp
            .headers()
            .get_all(header::CONTENT_TYPE)
            .iter()
            .collect();
        assert_eq!(ct, ["text/plain; charset=utf-8"]);
        assert_eq!(resp.body(), "slow down");
        assert!(resp.headers().get("grpc-status").is_none());
    }

    #[test]
    fn no_body_no_content_type_and_no_retry_after_unless_set() {
        let resp: Response<Bytes> =
            RefusalResponse::new(StatusCode::PAYLOAD_TOO_LARGE).to_response(false);
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(resp.headers().is_empty());
        assert!(resp.body().is_empty());
    }

    #[test]
    fn a_per_request_delay_replaces_the_configured_one_and_rounds_up() {
        let r = RefusalResponse::new(StatusCode::TOO_MANY_REQUESTS)
            .retry_after(Duration::from_secs(9))
            .grpc(grpc::RESOURCE_EXHAUSTED, "limit");
        let after = Some(Duration::from_micros(1_500_001));
        let plain: Response<Bytes> = r.to_response_after(false, after);
        let retry: Vec<_> = plain
            .headers()
            .get_all(header::RETRY_AFTER)
            .iter()
            .collect();
        assert_eq!(retry, ["2"]);
        let rpc: Response<Bytes> = r.to_response_after(true, after);
        let pushback: Vec<_> = rpc
            .headers()
            .get_all("grpc-retry-pushback-ms")
            .iter()
            .collect();
        assert_eq!(pushback, ["1501"], "rounded up, never before the delay");
        assert!(rpc.headers().get(header::RETRY_AFTER).is_none());
        let never: Response<Bytes> = r.to_response_after(false, None);
        assert!(never.headers().get(header::RETRY_AFTER).is_none());
        let never: Response<Bytes> = r.to_response_after(true, None);
        assert!(never.headers().get("grpc-retry-pushback-ms").is_none());
    }

    #[test]
    fn grpc_shape() {
        let r = RefusalResponse::new(StatusCode::SERVICE_UNAVAILABLE)
            .retry_after(Duration::from_millis(2500))
            .body("busy")
            .grpc(grpc::RESOURCE_EXHAUSTED, "limit reached");
        let resp: Response<Bytes> = r.to_response(true);
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["grpc-status"], "8");
        assert_eq!(resp.headers()["grpc-message"], "limit reached");
        assert_eq!(resp.headers()["grpc-retry-pushback-ms"], "2500");
        assert_eq!(resp.headers()["content-type"], "application/grpc");
        assert!(resp.headers().get(header::RETRY_AFTER).is_none());
        assert!(resp.body().is_empty());
        let without: Response<Bytes> =
            RefusalResponse::new(StatusCode::SERVICE_UNAVAILABLE).to_response(true);
        assert_eq!(without.headers()["grpc-status"], "14");
        assert!(without.headers().get("grpc-retry-pushback-ms").is_none());
    }
}
