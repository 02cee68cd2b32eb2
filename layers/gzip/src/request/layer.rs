//! [`GzipRequestLayer`] and its builder.

use super::service::GzipRequest;
use http::request;
use std::{fmt, sync::Arc};
use tower_kit_core::ConfigError;
use tower_layer::Layer;

/// Default cap on a decoded request body: 10 MiB.
pub const DEFAULT_MAX_DECODED: usize = 10 * 1024 * 1024;

/// A request predicate: `true` for requests that bypass decoding.
pub(crate) type Exempt = Arc<dyn Fn(&request::Parts) -> bool + Send + Sync>;

pub(crate) struct RequestConfig {
    pub(crate) max_decoded: usize,
    pub(crate) exempt: Option<Exempt>,
}

impl fmt::Debug for RequestConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestConfig")
            .field("max_decoded", &self.max_decoded)
            .field("exempt", &self.exempt.is_some())
            .finish()
    }
}

/// Decodes gzip request bodies before the inner service sees them.
///
/// - `Content-Encoding: gzip` (or `x-gzip`; `identity` members are ignored): the body is decoded, every member of
///   a multi-member stream, into memory, up to [`max_decoded`](GzipRequestLayerBuilder::max_decoded) bytes; the
///   inner service gets the decoded bytes with an exact `Content-Length` and no `Content-Encoding`.
/// - Over the cap: `413 Payload Too Large`, without reading further. Corrupt, truncated, or unreadable: `400`.
/// - Any other coding, or gzip stacked on gzip: `415 Unsupported Media Type` with `Accept-Encoding: gzip`.
/// - No `Content-Encoding`: the request passes through untouched.
/// - No body (the body has ended or is exactly 0 bytes, or `Content-Length: 0`), whatever the `Content-Encoding`:
///   the request passes through untouched, so `GET /health` from a client that labels every request is not refused.
/// - Requests the [`exempt`](GzipRequestLayerBuilder::exempt) predicate picks pass through untouched.
#[derive(Clone, Debug)]
#[must_use]
pub struct GzipRequestLayer {
    config: Arc<RequestConfig>,
}

impl Default for GzipRequestLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl GzipRequestLayer {
    /// Decodes up to [`DEFAULT_MAX_DECODED`] (10 MiB).
    pub fn new() -> Self {
        Self {
            config: Arc::new(RequestConfig {
                max_decoded: DEFAULT_MAX_DECODED,
                exempt: None,
            }),
        }
    }

    /// A builder starting from the defaults.
    pub fn builder() -> GzipRequestLayerBuilder {
        GzipRequestLayerBuilder {
            max_decoded: DEFAULT_MAX_DECODED,
            exempt: None,
        }
    }
}

/// Builds a [`GzipRequestLayer`].
#[derive(Clone)]
#[must_use]
pub struct GzipRequestLayerBuilder {
    max_decoded: usize,
    exempt: Option<Exempt>,
}

impl fmt::Debug for GzipRequestLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GzipRequestLayerBuilder")
            .field("max_decoded", &self.max_decoded)
            .field("exempt", &self.exempt.is_some())
            .finish()
    }
}

impl GzipRequestLayerBuilder {
    /// The most decoded bytes accepted, in bytes; more is answered 413. Default 10 MiB; at least 1, at most 1 GiB.
    pub fn max_decoded(mut self, bytes: usize) -> Self {
        self.max_decoded = bytes;
        self
    }

    /// Requests for which the predicate is true bypass decoding: passed to the inner service untouched, whatever
    /// their `Content-Encoding`, never refused (operational routes such as `/health` and `/metrics`). Default: none.
    pub fn exempt<F>(mut self, predicate: F) -> Self
    where
        F: Fn(&request::Parts) -> bool + Send + Sync + 'static,
    {
        self.exempt = Some(Arc::new(predicate));
        self
    }

    /// Checks the settings.
    pub fn build(self) -> Result<GzipRequestLayer, ConfigError> {
        if self.max_decoded == 0 || self.max_decoded > 1 << 30 {
            return Err(ConfigError::new(
                "max_decoded",
                format!("must be 1 byte to 1 GiB (got {})", self.max_decoded),
            ));
        }
        Ok(GzipRequestLayer {
            config: Arc::new(RequestConfig {
                max_decoded: self.max_decoded,
                exempt: self.exempt,
            }),
        })
    }
}

impl<S> Layer<S> for GzipRequestLayer {
    type Service = GzipRequest<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GzipRequest::new(inner, Arc::clone(&self.config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert_eq!(
            GzipRequestLayer::builder()
                .max_decoded(0)
                .build()
                .unwrap_err()
                .field(),
            "max_decoded"
        );
        assert!(
            GzipRequestLayer::builder()
                .max_decoded((1 << 30) + 1)
                .build()
                .is_err()
        );
        assert!(GzipRequestLayer::builder().max_decoded(1).build().is_ok());
    }
}
