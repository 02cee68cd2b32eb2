//! Refusals: why a request was turned away, and the response it gets.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use std::{sync::Arc, time::Duration};
use tower_kit_core::grpc;

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// Every slot was taken and the queue was full (or disabled), or a fresher caller evicted this one from a
    /// full LIFO queue.
    QueueFull,
    /// The request waited in the queue for `max_queue_wait` without getting a slot.
    QueueTimeout,
    /// The request's key already had `max_per_key` requests in flight.
    KeyLimit,
    /// The per-key map already tracked `max_keys` keys with requests in flight.
    TooManyKeys,
}

impl RejectReason {
    /// Every reason, in declaration order.
    pub const ALL: [RejectReason; 4] = [
        RejectReason::QueueFull,
        RejectReason::QueueTimeout,
        RejectReason::KeyLimit,
        RejectReason::TooManyKeys,
    ];

    /// The `reason` metric label: `queue_full`, `queue_timeout`, `key_limit` or `too_many_keys`.
    pub const fn as_str(self) -> &'static str {
        match self {
            RejectReason::QueueFull => "queue_full",
            RejectReason::QueueTimeout => "queue_timeout",
            RejectReason::KeyLimit => "key_limit",
            RejectReason::TooManyKeys => "too_many_keys",
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a [rejection hook](crate::ConcurrencyLayerBuilder::on_rejection) is told about a refusal.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Rejection {
    /// Why the request was refused.
    pub reason: RejectReason,
    /// The limit at the time.
    pub limit: usize,
    /// How long the request waited in the queue (zero when it was refused at once).
    pub waited: Duration,
    /// The `Retry-After` the response carries.
    pub retry_after: Duration,
    /// Whether the request was a gRPC call (the response is then a gRPC refusal).
    pub grpc: bool,
}

/// A hook that may change the refusal response (headers, status, body) before it is sent.
pub(crate) type RejectionHook = Arc<dyn Fn(&Rejection, &mut Response<Bytes>) + Send + Sync>;

/// How a refusal looks; part of the layer's configuration.
pub(crate) struct RejectionResponse {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
    pub(crate) retry_after: Duration,
    pub(crate) retry_after_value: HeaderValue,
    pub(crate) grpc_pushback_value: HeaderValue,
    pub(crate) hook: Option<RejectionHook>,
}

impl RejectionResponse {
    pub(crate) fn new(
        status: StatusCode,
        body: Bytes,
        retry_after: Duration,
        hook: Option<RejectionHook>,
    ) -> Self {
        // Retry-After is in whole seconds: round up, so a client never retries before the hint.
        let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        let millis = u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX);
        RejectionResponse {
            status,
            body,
            retry_after,
            retry_after_value: HeaderValue::from(secs),
            grpc_pushback_value: HeaderValue::from(millis),
            hook,
        }
    }

    /// Builds the refusal for `reason`: HTTP `status` with `Retry-After` and the body, or for gRPC an HTTP 200
    /// with `grpc-status: 8` (RESOURCE_EXHAUSTED) and `grpc-retry-pushback-ms`.
    pub(crate) fn build(
        &self,
        reason: RejectReason,
        limit: usize,
        waited: Duration,
        grpc: bool,
    ) -> Response<Bytes> {
        let mut response = if grpc {
            let mut r: Response<Bytes> =
                grpc::refusal(grpc::RESOURCE_EXHAUSTED, "concurrency limit reached");
            r.headers_mut()
                .insert("grpc-retry-pushback-ms", self.grpc_pushback_value.clone());
            r
        } else {
            let mut r = Response::new(self.body.clone());
            *r.status_mut() = self.status;
            let h = r.headers_mut();
            h.insert(header::RETRY_AFTER, self.retry_after_value.clone());
            if !self.body.is_empty() {
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
            }
            r
        };
        if let Some(hook) = &self.hook {
            let rejection = Rejection {
                reason,
                limit,
                waited,
                retry_after: self.retry_after,
                grpc,
            };
            hook(&rejection, &mut response);
        }
        response
    }
}

impl std::fmt::Debug for RejectionResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RejectionResponse")
            .field("status", &self.status)
            .field("body", &self.body)
            .field("retry_after", &self.retry_after)
            .field("hook", &self.hook.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        for (d, want) in [
            (Duration::ZERO, "0"),
            (Duration::from_millis(1), "1"),
            (Duration::from_secs(1), "1"),
            (Duration::from_millis(1500), "2"),
        ] {
            let r = RejectionResponse::new(StatusCode::SERVICE_UNAVAILABLE, Bytes::new(), d, None);
            let resp = r.build(RejectReason::QueueFull, 1, Duration::ZERO, false);
            assert_eq!(resp.headers()[header::RETRY_AFTER], want);
            assert!(resp.headers().get(header::CONTENT_TYPE).is_none());
        }
    }

    #[test]
    fn grpc_refusal_shape() {
        let r = RejectionResponse::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Bytes::from_static(b"busy"),
            Duration::from_millis(2500),
            None,
        );
        let resp = r.build(RejectReason::QueueTimeout, 1, Duration::ZERO, true);
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["grpc-status"], "8");
        assert_eq!(resp.headers()["grpc-retry-pushback-ms"], "2500");
        assert!(resp.body().is_empty());
    }

    #[test]
    fn the_hook_sees_the_reason_and_edits_the_response() {
        let hook: RejectionHook = Arc::new(|rej, resp| {
            resp.headers_mut()
                .insert("x-reason", HeaderValue::from_static(rej.reason.as_str()));
            *resp.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        });
        let r = RejectionResponse::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Bytes::from_static(b"busy"),
            Duration::from_secs(1),
            Some(hook),
        );
        let resp = r.build(RejectReason::KeyLimit, 1, Duration::ZERO, false);
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()["x-reason"], "key_limit");
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
    }
}
