//! The HTTP adapter: batched calls from handlers, with overload answered as 503 + `Retry-After` and a
//! `batch;dur=` Server-Timing entry.

use crate::{Batch, BatchError};
use bytes::Bytes;
use http::{
    Extensions, HeaderMap, HeaderValue, Request, Response, StatusCode,
    header::{CONTENT_TYPE, RETRY_AFTER},
    request::Parts,
};
use std::{fmt, time::Duration};
use tokio::time::Instant;
use tower_kit_core::{ServerTiming, grpc};

/// Default `Retry-After` on an overload refusal: 1 second.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// gRPC status `INTERNAL` (13).
const GRPC_INTERNAL: u8 = 13;

/// A [`Batch`] for HTTP handlers: [`load`](Self::load) records `batch;dur=<ms>` (the time from the call to its
/// answer) in the request's [`ServerTiming`], and failures come back as a [`BatchRefusal`] that turns into a
/// response: `Overloaded` as 503 with `Retry-After` (gRPC: `RESOURCE_EXHAUSTED`).
pub struct HttpBatch<Req, V, E> {
    batch: Batch<Req, V, E>,
    retry_after_secs: u64,
}

impl<Req, V, E> Clone for HttpBatch<Req, V, E> {
    fn clone(&self) -> Self {
        HttpBatch {
            batch: self.batch.clone(),
            retry_after_secs: self.retry_after_secs,
        }
    }
}

impl<Req, V, E> fmt::Debug for HttpBatch<Req, V, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpBatch")
            .field("batch", &self.batch)
            .field("retry_after_secs", &self.retry_after_secs)
            .finish()
    }
}

impl<Req, V, E> HttpBatch<Req, V, E> {
    /// Wraps `batch` with the default `Retry-After` (1 s).
    pub fn new(batch: Batch<Req, V, E>) -> Self {
        HttpBatch {
            batch,
            retry_after_secs: DEFAULT_RETRY_AFTER.as_secs(),
        }
    }

    /// The `Retry-After` sent with 503 answers, rounded up to whole seconds (at least 1).
    #[must_use]
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after_secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        self.retry_after_secs = self.retry_after_secs.max(1);
        self
    }

    /// The wrapped batcher.
    pub fn get_ref(&self) -> &Batch<Req, V, E> {
        &self.batch
    }

    /// Loads `item` for the request whose head is `parts`.
    pub async fn load(&self, parts: &Parts, item: Req) -> Result<V, BatchRefusal<E>> {
        self.load_with(&parts.headers, &parts.extensions, item)
            .await
    }

    /// Loads `item` for `request`.
    pub async fn load_for<B>(&self, request: &Request<B>, item: Req) -> Result<V, BatchRefusal<E>> {
        self.load_with(request.headers(), request.extensions(), item)
            .await
    }

    /// Loads `item` for a request with these headers (for gRPC detection) and extensions (for [`ServerTiming`]).
    pub async fn load_with(
        &self,
        headers: &HeaderMap,
        extensions: &Extensions,
        item: Req,
    ) -> Result<V, BatchRefusal<E>> {
        let start = Instant::now();
        let result = self.batch.load(item).await;
        if let Some(timing) = extensions.get::<ServerTiming>() {
            timing.duration("batch", start.elapsed());
        }
        result.map_err(|error| BatchRefusal {
            error,
            retry_after_secs: self.retry_after_secs,
            grpc: grpc::is_grpc(headers),
        })
    }
}

/// A batched call that failed, ready to become a response with [`into_response`](Self::into_response).
pub struct BatchRefusal<E> {
    error: BatchError<E>,
    retry_after_secs: u64,
    grpc: bool,
}

impl<E: fmt::Debug> fmt::Debug for BatchRefusal<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchRefusal")
            .field("error", &self.error)
            .field("retry_after_secs", &self.retry_after_secs)
            .field("grpc", &self.grpc)
            .finish()
    }
}

impl<E> BatchRefusal<E> {
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
        let retry = self.status() == StatusCode::SERVICE_UNAVAILABLE;
        let mut response = if self.grpc {
            let code = match self.error {
                BatchError::Overloaded => grpc::RESOURCE_EXHAUSTED,
                BatchError::Cancelled => grpc::UNAVAILABLE,
                _ => GRPC_INTERNAL,
            };
            grpc::refusal(code, message)
        } else {
            let mut response = Response::new(B::from(Bytes::from_static(message.as_bytes())));
            *response.status_mut() = self.status();
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            response
        };
        if retry {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(self.retry_after_secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    fn refusal(error: BatchError<()>, grpc: bool) -> BatchRefusal<()> {
        BatchRefusal {
            error,
            retry_after_secs: 2,
            grpc,
        }
    }

    #[test]
    fn overload_is_503_with_retry_after() {
        let r: Response<Full<Bytes>> = refusal(BatchError::Overloaded, false).into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let retry: Vec<_> = r.headers().get_all(RETRY_AFTER).iter().collect();
        assert_eq!(retry, ["2"]);
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
        let r: Response<Full<Bytes>> = refusal(BatchError::MissingResult, true).into_response();
        assert_eq!(r.headers()["grpc-status"], "13");
    }
}
