//! [`RequestDecompressionLayer`] and its builder.

use super::service::RequestDecompression;
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
///   a multi-member stream, into memory, up to [`max_decoded`](RequestDecompressionLayerBuilder::max_decoded) bytes; the
///   inner service gets the decoded bytes with an exact `Content-Length` and no `Content-Encoding`.
/// - Over the cap: `413 Payload Too Large`, without reading further. Corrupt, truncated, or unreadable: `400`.
/// - Any other coding, or gzip stacked on gzip: `415 Unsupported Media Type` with `Accept-Encoding: gzip`.
/// - No `Content-Encoding`: the request passes through untouched.
/// - No body (the body has ended or is exactly 0 bytes, or `Content-Length: 0`), whatever the `Content-Encoding`:
///   the request passes through untouched, so `GET /health` from a client that labels every request is not refused.
/// - Requests the [`exempt`](RequestDecompressionLayerBuilder::exempt) predicate picks pass through untouched.
#[derive(Clone, Debug)]
#[must_use]
pub struct RequestDecompressionLayer {
    config: Arc<RequestConfig>,
}

impl Default for RequestDecompressionLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestDecompressionLayer {
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
    pub fn builder() -> RequestDecompressionLayerBuilder {
        RequestDecompressionLayerBuilder {
            max_decoded: DEFAULT_MAX_DECODED,
            exempt: None,
        }
    }
}

/// Builds a [`RequestDecompressionLayer`].
#[derive(Clone)]
#[must_use]
pub struct RequestDecompressionLayerBuilder {
    max_decoded: usize,
    exempt: Option<Exempt>,
}

impl fmt::Debug for RequestDecompressionLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestDecompressionLayerBuilder")
            .field("max_decoded", &self.max_decoded)
            .field("exempt", &self.exempt.is_some())
            .finish()
    }
}

impl RequestDecompressionLayerBuilder {
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
    pub fn build(self) -> Result<RequestDecompressionLayer, ConfigError> {
        if self.max_decoded == 0 || self.max_decoded > 1 << 30 {
            return Err(ConfigError::new(
                "max_decoded",
                format!("must be 1 byte to 1 GiB (got {})", self.max_decoded),
            ));
        }
        Ok(RequestDecompressionLayer {
            config: Arc::new(RequestConfig {
                max_decoded: self.max_decoded,
                exempt: self.exempt,
            }),
        })
    }
}

impl<S> Layer<S> for RequestDecompressionLayer {
    type Service = RequestDecompression<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestDecompression::new(inner, Arc::clone(&self.config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert_eq!(
            RequestDecompressionLayer::builder()
                .max_decoded(0)
                .build()
                .unwrap_err()
                .field(),
            "max_decoded"
        );
        assert!(
            RequestDecompressionLayer::builder()
                .max_decoded((1 << 30) + 1)
                .build()
                .is_err()
        );
        assert!(
            RequestDecompressionLayer::builder()
                .max_decoded(1)
                .build()
                .is_ok()
        );
    }
}
