//! The HTTP adapter: batched calls from handlers, with overload answered as 503 + `Retry-After` and a
//! `batch;dur=` Server-Timing entry.

use crate::{Batch, BatchError};
use bytes::Bytes;
use http::{Extensions, HeaderMap, Request, Response, StatusCode, request::Parts};
use std::{fmt, time::Duration};
use tokio::time::Instant;
use tower_kit_core::{RefusalResponse, ServerTiming, grpc};

/// Default `Retry-After` on an overload refusal: 1 second.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// gRPC status `INTERNAL` (13).
const GRPC_INTERNAL: u8 = 13;

/// A [`Batch`] for HTTP handlers: [`load`](Self::load) records `batch;dur=<ms>` (the time from the call to its
/// answer) in the request's [`ServerTiming`], and failures come back as a [`HttpBatchError`] that turns into a
/// response: `Overloaded` as 503 with `Retry-After` (gRPC: `RESOURCE_EXHAUSTED`).
pub struct HttpBatch<Req, V, E> {
    batch: Batch<Req, V, E>,
    retry_after: Duration,
}

impl<Req, V, E> Clone for HttpBatch<Req, V, E> {
    fn clone(&self) -> Self {
        HttpBatch {
            batch: self.batch.clone(),
            retry_after: self.retry_after,
        }
    }
}

impl<Req, V, E> fmt::Debug for HttpBatch<Req, V, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpBatch")
            .field("batch", &self.batch)
            .field("retry_after", &self.retry_after)
            .finish()
    }
}

impl<Req, V, E> HttpBatch<Req, V, E> {
    /// Wraps `batch` with the default `Retry-After` (1 s).
    pub fn new(batch: Batch<Req, V, E>) -> Self {
        HttpBatch {
            batch,
            retry_after: DEFAULT_RETRY_AFTER,
        }
    }

    /// The `Retry-After` sent with 503 answers, in whole seconds rounded up, at least 1
    /// ([`retry_after_secs`](tower_kit_core::retry_after_secs)); gRPC answers carry it as
    /// `grpc-retry-pushback-ms`.
    #[must_use]
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// The wrapped batcher.
    pub fn get_ref(&self) -> &Batch<Req, V, E> {
        &self.batch
    }

    /// Loads `item` for the request whose head is `parts`.
    pub async fn load(&self, parts: &Parts, item: Req) -> Result<V, HttpBatchError<E>> {
        self.load_with(&parts.headers, &parts.extensions, item)
            .await
    }

    /// Loads `item` for `request`.
    pub async fn load_for<B>(
        &self,
        request: &Request<B>,
        item: Req,
    ) -> Result<V, HttpBatchError<E>> {
        self.load_with(request.headers(), request.extensions(), item)
            .await
    }

    /// Loads `item` for a request with these headers (for gRPC detection) and extensions (for [`ServerTiming`]).
    pub async fn load_with(
        &self,
        headers: &HeaderMap,
        extensions: &Extensions,
        item: Req,
    ) -> Result<V, HttpBatchError<E>> {
        let start = Instant::now();
        let result = self.batch.load(item).await;
        if let Some(timing) = extensions.get::<ServerTiming>() {
            timing.duration("batch", start.elapsed());
        }
        result.map_err(|error| HttpBatchError {
            error,
            retry_after: self.retry_after,
            grpc: grpc::is_grpc(headers),
        })
    }
}

/// A batched call that failed, ready to become a response with [`into_response`](Self::into_response): a
/// refusal (the queue was full, the batcher is stopping) or a backend failure.
pub struct HttpBatchError<E> {
    error: BatchError<E>,
    retry_after: Duration,
    grpc: bool,
}

impl<E: fmt::Debug> fmt::Debug for HttpBatchError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpBatchError")
            .field("error", &self.error)
            .field("retry_after", &self.retry_after)
            .field("grpc", &self.grpc)
            .finish()
    }
}

impl<E> HttpBatchError<E> {
    /// What went wrong.
    pub fn error(&self) -> &BatchError<E> {
        &self.error
    }

    /// What went wrong, by value.
    pub fn into_error(self) -> BatchError<E> {
        self.error
    }

    /// The HTTP status [`into_response`](Self::into_response) uses: 503 for `Overloaded` and `Cancelled` (the
    /// batcher is shutting down), 500 for a backend error, a panic or a missing result. Handlers that read a
    /// missing result as "not found" match on [`error`](Self::error) first.
    pub fn status(&self) -> StatusCode {
        match self.error {
            BatchError::Overloaded | BatchError::Cancelled => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A plain-text response with [`status`](Self::status) and, for 503, `Retry-After`. For a gRPC request:
    /// HTTP 200 with `grpc-status` 8 (`RESOURCE_EXHAUSTED`) for overload, 14 (`UNAVAILABLE`) when cancelled,
    /// 13 (`INTERNAL`) otherwise. The backend's error text is not sent to the client.
    pub fn into_response<B: From<Bytes>>(self) -> Response<B> {
        let message = match self.error {
            BatchError::Overloaded => "overloaded: too many requests waiting, retry later",
            BatchError::Cancelled => "unavailable: the batcher is shutting down",
            BatchError::BackendPanicked => "internal error: the batch backend failed",
            BatchError::MissingResult => "internal error: no result for this item",
            BatchError::Backend(_) => "internal error: the batch backend failed",
        };
        let grpc_code = match self.error {
            BatchError::Overloaded => grpc::RESOURCE_EXHAUSTED,
            BatchError::Cancelled => grpc::UNAVAILABLE,
            _ => GRPC_INTERNAL,
        };
        let mut refusal = RefusalResponse::new(self.status())
            .body(Bytes::from_static(message.as_bytes()))
            .grpc(grpc_code, message);
        if self.status() == StatusCode::SERVICE_UNAVAILABLE {
            refusal = refusal.retry_after(self.retry_after);
        }
        refusal.to_response(self.grpc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    use http::header::{CONTENT_TYPE, RETRY_AFTER};

    fn refusal(error: BatchError<()>, grpc: bool) -> HttpBatchError<()> {
        HttpBatchError {
            error,
            retry_after: Duration::from_millis(1500),
            grpc,
        }
    }

    #[test]
    fn overload_is_503_with_retry_after() {
        let r: Response<Full<Bytes>> = refusal(BatchError::Overloaded, false).into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let retry: Vec<_> = r.headers().get_all(RETRY_AFTER).iter().collect();
        assert_eq!(retry, ["2"], "1.5 s rounds up");
        assert_eq!(r.headers()[CONTENT_TYPE], "text/plain; charset=utf-8");
    }

    #[test]
    fn a_zero_retry_after_is_sent_as_one_second() {
        let mut e = refusal(BatchError::Cancelled, false);
        e.retry_after = Duration::ZERO;
        let r: Response<Full<Bytes>> = e.into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[RETRY_AFTER], "1");
    }

    #[test]
    fn backend_failures_are_500_without_retry_after() {
        for e in [
            BatchError::BackendPanicked,
            BatchError::MissingResult,
            BatchError::Backend(std::sync::Arc::new(())),
        ] {
            let r: Response<Full<Bytes>> = refusal(e, false).into_response();
            assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
            assert!(r.headers().get(RETRY_AFTER).is_none());
        }
    }

    #[test]
    fn grpc_refusals() {
        let r: Response<Full<Bytes>> = refusal(BatchError::Overloaded, true).into_response();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["grpc-status"], "8");
        assert_eq!(r.headers()["grpc-retry-pushback-ms"], "1500");
        let r: Response<Full<Bytes>> = refusal(BatchError::MissingResult, true).into_response();
        assert_eq!(r.headers()["grpc-status"], "13");
    }
}
