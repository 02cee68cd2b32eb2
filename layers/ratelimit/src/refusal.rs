//! Refusals: why a request was turned away, what the hooks are told, and the response it gets.
//!
//! Deciding happens in [`decide`](crate::decide); this file only turns a refusal into a response: core's
//! [`RefusalResponse`] (429 or, for [`StoreFailure::FailClosed`](crate::StoreFailure::FailClosed), 503; the gRPC
//! shape for gRPC calls), the hooks, then the `RateLimit-Policy` / `RateLimit` fields.

use crate::{headers::PolicyState, key::Head};
use bytes::Bytes;
use http::{
    Extensions, HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Uri, header,
};
use std::{sync::Arc, time::Duration};
use tower_kit_core::{RefusalResponse, grpc};

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefusalReason {
    /// A policy's quota was spent: the request fits once enough of it comes back (`retry_after` is set).
    QuotaExceeded,
    /// The request costs more than a policy's burst: it can never be admitted (`retry_after` is `None`).
    CostAboveBurst,
    /// The store failed and the layer is configured to refuse then
    /// ([`StoreFailure::FailClosed`](crate::StoreFailure::FailClosed)): 503.
    StoreUnavailable,
}

impl RefusalReason {
    /// Every reason, in declaration order.
    pub const ALL: [RefusalReason; 3] = [
        RefusalReason::QuotaExceeded,
        RefusalReason::CostAboveBurst,
        RefusalReason::StoreUnavailable,
    ];

    /// A label for logs and metrics: `quota_exceeded`, `cost_above_burst` or `store_unavailable`.
    pub const fn as_str(self) -> &'static str {
        match self {
            RefusalReason::QuotaExceeded => "quota_exceeded",
            RefusalReason::CostAboveBurst => "cost_above_burst",
            RefusalReason::StoreUnavailable => "store_unavailable",
        }
    }
}

tower_kit_core::display_as_str!(RefusalReason);

/// What the [`on_refusal`](crate::RateLimitLayerBuilder::on_refusal) and
/// [`map_refusal`](crate::RateLimitLayerBuilder::map_refusal) hooks are told about a refusal: why, when to retry,
/// every policy that applied, and the request head.
#[derive(Debug)]
#[non_exhaustive]
pub struct Refusal<'a> {
    pub(crate) reason: RefusalReason,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) policies: &'a [PolicyState<'a>],
    pub(crate) head: Head<'a>,
    pub(crate) grpc: bool,
}

impl Refusal<'_> {
    /// Why the request was refused.
    pub fn reason(&self) -> RefusalReason {
        self.reason
    }

    /// When the same request could be admitted: the true wait, before rounding (`Retry-After` is this in whole
    /// seconds rounded up; `None`: never, its cost is above a burst).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Every policy that applied, with its outcome (empty for [`RefusalReason::StoreUnavailable`]: no policy
    /// decided).
    pub fn policies(&self) -> &[PolicyState<'_>] {
        self.policies
    }

    /// Whether the request was a gRPC call (the response is then a gRPC refusal: HTTP 200, `grpc-status`).
    pub fn grpc(&self) -> bool {
        self.grpc
    }

    /// The request's method.
    pub fn method(&self) -> &Method {
        self.head.method
    }

    /// The request's URI.
    pub fn uri(&self) -> &Uri {
        self.head.uri
    }

    /// The request's headers.
    pub fn headers(&self) -> &HeaderMap {
        self.head.headers
    }

    /// The request's extensions (axum's `MatchedPath`, the peer address).
    pub fn extensions(&self) -> &Extensions {
        self.head.extensions
    }
}

/// A hook that sees each refusal.
pub(crate) type RefusalHook = Arc<dyn Fn(&Refusal<'_>) + Send + Sync>;
/// A hook that may change the refusal response (headers, status, body, or all of it) before it is sent.
pub(crate) type MapRefusal = Arc<dyn Fn(&Refusal<'_>, &mut Response<Bytes>) + Send + Sync>;

/// How refusals look, and who hears of them; part of the layer's configuration.
pub(crate) struct Refusals {
    /// 429 (or the configured status), with the true wait as `Retry-After`.
    pub(crate) quota: RefusalResponse,
    /// The 503 of [`StoreFailure::FailClosed`](crate::StoreFailure::FailClosed), if configured.
    pub(crate) unavailable: Option<RefusalResponse>,
    pub(crate) on_refusal: Option<RefusalHook>,
    pub(crate) map: Option<MapRefusal>,
}

/// The default body of a quota refusal.
pub(crate) const DEFAULT_BODY: &[u8] = b"rate limit exceeded\n";

impl Refusals {
    pub(crate) fn new(
        status: StatusCode,
        body: Bytes,
        fail_closed_retry_after: Option<Duration>,
        on_refusal: Option<RefusalHook>,
        map: Option<MapRefusal>,
    ) -> Self {
        let unavailable = fail_closed_retry_after.map(|after| {
            RefusalResponse::new(StatusCode::SERVICE_UNAVAILABLE)
                .retry_after(after)
                .body("rate limiter unavailable\n")
                .grpc(grpc::UNAVAILABLE, "rate limiter unavailable")
        });
        Refusals {
            quota: RefusalResponse::new(status)
                .body(body)
                .grpc(grpc::RESOURCE_EXHAUSTED, "rate limit exceeded"),
            unavailable,
            on_refusal,
            map,
        }
    }

    /// The response to a refusal: core's shape (status, `Retry-After` or `grpc-retry-pushback-ms`, body), the
    /// hooks, then `headers` (`RateLimit-Policy`, `RateLimit`, ...) and `Retry-After` wherever the response does not
    /// already carry them, so a replaced response still tells the client when to come back.
    #[cold]
    pub(crate) fn respond<B: From<Bytes>>(
        &self,
        refusal: &Refusal<'_>,
        headers: Vec<(HeaderName, HeaderValue)>,
    ) -> Response<B> {
        let template = match (refusal.reason, &self.unavailable) {
            (RefusalReason::StoreUnavailable, Some(unavailable)) => unavailable,
            _ => &self.quota,
        };
        let mut response: Response<Bytes> = match refusal.reason {
            RefusalReason::StoreUnavailable => template.to_response(refusal.grpc),
            _ => template.to_response_after(refusal.grpc, refusal.retry_after),
        };
        if let Some(hook) = &self.on_refusal {
            hook(refusal);
        }
        if let Some(map) = &self.map {
            map(refusal, &mut response);
            if !refusal.grpc
                && let Some(after) = refusal.retry_after
                && !response.headers().contains_key(header::RETRY_AFTER)
            {
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(tower_kit_core::retry_after_secs(after)),
                );
            }
        }
        let h = response.headers_mut();
        for (name, value) in headers {
            if !h.contains_key(&name) {
                h.insert(name, value);
            }
        }
        response.map(B::from)
    }
}

impl std::fmt::Debug for Refusals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refusals")
            .field("quota", &self.quota)
            .field("unavailable", &self.unavailable)
            .field("on_refusal", &self.on_refusal.is_some())
            .field("map_refusal", &self.map.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;
    use std::sync::Mutex;

    fn refusals(on: Option<RefusalHook>, map: Option<MapRefusal>) -> Refusals {
        Refusals::new(
            StatusCode::TOO_MANY_REQUESTS,
            Bytes::from_static(DEFAULT_BODY),
            Some(Duration::from_secs(7)),
            on,
            map,
        )
    }

    fn refusal<'a>(
        reason: RefusalReason,
        retry_after: Option<Duration>,
        head: Head<'a>,
    ) -> Refusal<'a> {
        Refusal {
            reason,
            retry_after,
            policies: &[],
            grpc: grpc::is_grpc(head.headers),
            head,
        }
    }

    #[test]
    fn retry_after_is_the_true_wait_rounded_up_at_least_one() {
        let request = Request::new(());
        let r = refusals(None, None);
        for (wait, want) in [
            (Duration::ZERO, "1"),
            (Duration::from_nanos(1), "1"),
            (Duration::from_secs(30), "30"),
            (Duration::from_nanos(30_000_000_001), "31"),
        ] {
            let refusal = refusal(
                RefusalReason::QuotaExceeded,
                Some(wait),
                Head::of_request(&request),
            );
            let resp: Response<Bytes> = r.respond(&refusal, Vec::new());
            assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
            let v: Vec<_> = resp.headers().get_all(header::RETRY_AFTER).iter().collect();
            assert_eq!(v, [want], "{wait:?}");
            assert_eq!(resp.body(), DEFAULT_BODY);
        }
        let never = refusal(
            RefusalReason::CostAboveBurst,
            None,
            Head::of_request(&request),
        );
        let resp: Response<Bytes> = r.respond(&never, Vec::new());
        assert!(resp.headers().get(header::RETRY_AFTER).is_none());
    }

    #[test]
    fn store_unavailable_is_a_503_with_the_configured_retry_after() {
        let request = Request::new(());
        let r = refusals(None, None);
        let refusal = refusal(
            RefusalReason::StoreUnavailable,
            Some(Duration::from_secs(7)),
            Head::of_request(&request),
        );
        let resp: Response<Bytes> = r.respond(&refusal, Vec::new());
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "7");
        assert_eq!(resp.body(), "rate limiter unavailable\n");
    }

    #[test]
    fn hooks_observe_then_map_and_the_layer_completes_headers() {
        let seen: Arc<Mutex<Vec<(RefusalReason, String)>>> = Arc::default();
        let seen2 = Arc::clone(&seen);
        let on: RefusalHook = Arc::new(move |r: &Refusal<'_>| {
            seen2
                .lock()
                .unwrap()
                .push((r.reason(), r.uri().path().to_owned()));
        });
        let map: MapRefusal = Arc::new(|r, resp| {
            *resp = Response::new(Bytes::from(format!("{{\"reason\":\"{}\"}}", r.reason())));
            resp.headers_mut()
                .insert("ratelimit", HeaderValue::from_static("custom"));
        });
        let r = refusals(Some(on), Some(map));
        let request = Request::get("/api/x").body(()).unwrap();
        let refusal = refusal(
            RefusalReason::QuotaExceeded,
            Some(Duration::from_millis(1500)),
            Head::of_request(&request),
        );
        let headers = vec![
            (
                crate::headers::RATELIMIT.clone(),
                HeaderValue::from_static("\"p\";r=0;t=2"),
            ),
            (
                crate::headers::RATELIMIT_POLICY.clone(),
                HeaderValue::from_static("\"p\";q=1;w=2"),
            ),
        ];
        let resp: Response<Bytes> = r.respond(&refusal, headers);
        assert_eq!(resp.body(), r#"{"reason":"quota_exceeded"}"#);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "2", "completed");
        let rl: Vec<_> = resp.headers().get_all("ratelimit").iter().collect();
        assert_eq!(rl, ["custom"], "the hook's value is kept");
        assert_eq!(resp.headers()["ratelimit-policy"], "\"p\";q=1;w=2");
        assert_eq!(
            *seen.lock().unwrap(),
            [(RefusalReason::QuotaExceeded, "/api/x".to_owned())]
        );
    }

    #[test]
    fn grpc_refusals_carry_the_pushback_not_retry_after() {
        let request = Request::post("/pkg.Svc/Call")
            .header("content-type", "application/grpc")
            .body(())
            .unwrap();
        let r = refusals(None, None);
        let refusal = refusal(
            RefusalReason::QuotaExceeded,
            Some(Duration::from_micros(2_000_500)),
            Head::of_request(&request),
        );
        let resp: Response<Bytes> = r.respond(&refusal, Vec::new());
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["grpc-status"], "8");
        assert_eq!(resp.headers()["grpc-retry-pushback-ms"], "2001");
        assert!(resp.headers().get(header::RETRY_AFTER).is_none());
    }

    #[test]
    fn reasons_have_labels() {
        let labels: Vec<_> = RefusalReason::ALL.iter().map(|r| r.to_string()).collect();
        assert_eq!(
            labels,
            ["quota_exceeded", "cost_above_burst", "store_unavailable"]
        );
    }
}
