//! Refusals: why a request was turned away, what the hooks are told, and the response it gets.

use bytes::Bytes;
use http::{Response, StatusCode};
use std::{sync::Arc, time::Duration};
use tower_kit_core::{RefusalResponse, grpc};

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefusalReason {
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

impl RefusalReason {
    /// Every reason, in declaration order.
    pub const ALL: [RefusalReason; 4] = [
        RefusalReason::QueueFull,
        RefusalReason::QueueTimeout,
        RefusalReason::KeyLimit,
        RefusalReason::TooManyKeys,
    ];

    /// The `reason` metric label: `queue_full`, `queue_timeout`, `key_limit` or `too_many_keys`.
    pub const fn as_str(self) -> &'static str {
        match self {
            RefusalReason::QueueFull => "queue_full",
            RefusalReason::QueueTimeout => "queue_timeout",
            RefusalReason::KeyLimit => "key_limit",
            RefusalReason::TooManyKeys => "too_many_keys",
        }
    }
}

tower_kit_core::display_as_str!(RefusalReason);

/// What the [`on_refusal`](crate::ConcurrencyLayerBuilder::on_refusal) and
/// [`map_refusal`](crate::ConcurrencyLayerBuilder::map_refusal) hooks are told about a refusal.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Refusal {
    /// Why the request was refused.
    pub reason: RefusalReason,
    /// The limit at the time.
    pub limit: usize,
    /// How long the request waited in the queue (zero when it was refused at once).
    pub waited: Duration,
    /// The retry delay the response carries (`Retry-After` in whole seconds rounded up, at least 1; for gRPC,
    /// `grpc-retry-pushback-ms`).
    pub retry_after: Duration,
    /// Whether the request was a gRPC call (the response is then a gRPC refusal).
    pub grpc: bool,
}

/// A hook that sees each refusal.
pub(crate) type RefusalHook = Arc<dyn Fn(&Refusal) + Send + Sync>;
/// A hook that may change the refusal response (headers, status, body) before it is sent.
pub(crate) type MapRefusal = Arc<dyn Fn(&Refusal, &mut Response<Bytes>) + Send + Sync>;

/// How a refusal looks, and who hears of it; part of the layer's configuration.
pub(crate) struct Refusals {
    pub(crate) response: RefusalResponse,
    pub(crate) retry_after: Duration,
    pub(crate) on_refusal: Option<RefusalHook>,
    pub(crate) map: Option<MapRefusal>,
}

impl Refusals {
    pub(crate) fn new(
        status: StatusCode,
        body: Bytes,
        retry_after: Duration,
        on_refusal: Option<RefusalHook>,
        map: Option<MapRefusal>,
    ) -> Self {
        Refusals {
            response: RefusalResponse::new(status)
                .retry_after(retry_after)
                .body(body)
                .grpc(grpc::RESOURCE_EXHAUSTED, "concurrency limit reached"),
            retry_after,
            on_refusal,
            map,
        }
    }

    /// Builds the refusal for `reason`: HTTP `status` with `Retry-After` and the body, or for gRPC an HTTP 200
    /// with `grpc-status: 8` (RESOURCE_EXHAUSTED) and `grpc-retry-pushback-ms`; then runs the hooks.
    pub(crate) fn build(
        &self,
        reason: RefusalReason,
        limit: usize,
        waited: Duration,
        grpc: bool,
    ) -> Response<Bytes> {
        let mut response = self.response.to_response(grpc);
        if self.on_refusal.is_some() || self.map.is_some() {
            let refusal = Refusal {
                reason,
                limit,
                waited,
                retry_after: self.retry_after,
                grpc,
            };
            if let Some(hook) = &self.on_refusal {
                hook(&refusal);
            }
            if let Some(map) = &self.map {
                map(&refusal, &mut response);
            }
        }
        response
    }
}

impl std::fmt::Debug for Refusals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refusals")
            .field("response", &self.response)
            .field("on_refusal", &self.on_refusal.is_some())
            .field("map_refusal", &self.map.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, header};
    use std::sync::Mutex;

    fn refusals(body: &'static str, retry_after: Duration) -> Refusals {
        Refusals::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Bytes::from_static(body.as_bytes()),
            retry_after,
            None,
            None,
        )
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_at_least_one() {
        for (d, want) in [
            (Duration::ZERO, "1"),
            (Duration::from_millis(1), "1"),
            (Duration::from_secs(1), "1"),
            (Duration::from_millis(1500), "2"),
        ] {
            let resp = refusals("", d).build(RefusalReason::QueueFull, 1, Duration::ZERO, false);
            let values: Vec<_> = resp.headers().get_all(header::RETRY_AFTER).iter().collect();
            assert_eq!(values, [want], "{d:?}");
            assert!(resp.headers().get(header::CONTENT_TYPE).is_none());
        }
    }

    #[test]
    fn grpc_refusal_shape() {
        let r = refusals("busy", Duration::from_millis(2500));
        let resp = r.build(RefusalReason::QueueTimeout, 1, Duration::ZERO, true);
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["grpc-status"], "8");
        assert_eq!(resp.headers()["grpc-message"], "concurrency limit reached");
        assert_eq!(resp.headers()["grpc-retry-pushback-ms"], "2500");
        assert!(resp.body().is_empty());
    }

    #[test]
    fn on_refusal_sees_each_refusal_and_map_refusal_edits_the_response() {
        let seen: Arc<Mutex<Vec<(RefusalReason, Duration)>>> = Arc::default();
        let seen2 = Arc::clone(&seen);
        let on_refusal: RefusalHook = Arc::new(move |r: &Refusal| {
            seen2.lock().unwrap().push((r.reason, r.waited));
        });
        let map: MapRefusal = Arc::new(|rej, resp| {
            resp.headers_mut()
                .insert("x-reason", HeaderValue::from_static(rej.reason.as_str()));
            *resp.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        });
        let r = Refusals::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Bytes::from_static(b"busy"),
            Duration::from_secs(1),
            Some(on_refusal),
            Some(map),
        );
        let resp = r.build(RefusalReason::KeyLimit, 1, Duration::from_millis(3), false);
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()["x-reason"], "key_limit");
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
        assert_eq!(
            *seen.lock().unwrap(),
            [(RefusalReason::KeyLimit, Duration::from_millis(3))]
        );
    }
}
