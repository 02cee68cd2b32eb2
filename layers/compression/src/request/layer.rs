//! [`RequestDecompressionLayer`] and its builder.

use super::service::RequestDecompression;
use crate::codec::{Coding, CodingSet};
use http::HeaderValue;
use std::sync::Arc;
use tower_kit_core::{ConfigError, Exempt};
use tower_layer::Layer;

/// Default cap on a decoded request body: 10 MiB.
pub const DEFAULT_MAX_DECODED: usize = 10 * 1024 * 1024;

#[derive(Debug)]
pub(crate) struct RequestConfig {
    pub(crate) max_decoded: usize,
    /// The codings decoded.
    pub(crate) codings: Vec<Coding>,
    /// The `Accept-Encoding` of a 415: the codings decoded, comma-separated.
    pub(crate) accept_encoding: HeaderValue,
    pub(crate) exempt: Exempt,
}

/// The `Accept-Encoding` value listing `codings`.
fn accept_encoding(codings: &[Coding]) -> HeaderValue {
    let list: Vec<&str> = codings.iter().map(|c| c.as_str()).collect();
    HeaderValue::from_str(&list.join(", ")).unwrap_or_else(|_| HeaderValue::from_static("identity"))
}

fn compiled() -> Vec<Coding> {
    [Coding::Gzip, Coding::Deflate, Coding::Br, Coding::Zstd]
        .into_iter()
        .filter(|c| c.is_compiled())
        .collect()
}

/// Decodes encoded request bodies (gzip, deflate, br, zstd) before the inner service sees them.
///
/// - `Content-Encoding` naming codings this layer decodes (`x-gzip` is gzip; `deflate` is the zlib format, and raw
///   deflate, which some clients send, is recognised too; `identity` members are ignored): the body is decoded into
///   memory, up to [`max_decoded`](RequestDecompressionLayerBuilder::max_decoded) bytes, stacked codings undone in
///   reverse of the order listed (at most 4); the inner service gets the decoded bytes with an exact
///   `Content-Length` and no `Content-Encoding`.
/// - Over the cap: `413 Payload Too Large`, without reading further; memory stays within the cap plus the codec's
///   window (zstd frames asking for a window over 8 MB are refused as corrupt, RFC 9659). Corrupt, truncated, or
///   unreadable: `400`.
/// - Any other coding: `415 Unsupported Media Type` with an `Accept-Encoding` listing the codings decoded (RFC 9110
///   §15.5.16).
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
                accept_encoding: accept_encoding(&compiled()),
                codings: compiled(),
                exempt: Exempt::none(),
            }),
        }
    }

    /// A builder starting from the defaults.
    pub fn builder() -> RequestDecompressionLayerBuilder {
        RequestDecompressionLayerBuilder {
            max_decoded: DEFAULT_MAX_DECODED,
            codings: CodingSet::compiled(),
            exempt: Exempt::none(),
        }
    }
}

/// Builds a [`RequestDecompressionLayer`].
#[derive(Clone, Debug)]
#[must_use]
pub struct RequestDecompressionLayerBuilder {
    max_decoded: usize,
    codings: CodingSet,
    exempt: Exempt,
}

impl RequestDecompressionLayerBuilder {
    fn enable(mut self, coding: Coding, on: bool) -> Self {
        if on {
            self.codings.insert(coding);
        } else {
            self.codings.remove(coding);
        }
        self
    }

    /// Whether gzip bodies are decoded (otherwise 415). Default: on with the `gzip` feature.
    pub fn gzip(self, on: bool) -> Self {
        self.enable(Coding::Gzip, on)
    }

    /// Whether deflate bodies (zlib format, or raw deflate) are decoded. Default: on with the `deflate` feature.
    pub fn deflate(self, on: bool) -> Self {
        self.enable(Coding::Deflate, on)
    }

    /// Whether Brotli bodies are decoded. Default: on with the `br` feature.
    pub fn br(self, on: bool) -> Self {
        self.enable(Coding::Br, on)
    }

    /// Whether zstd bodies are decoded (window at most 8 MB). Default: on with the `zstd` feature.
    pub fn zstd(self, on: bool) -> Self {
        self.enable(Coding::Zstd, on)
    }

    /// The most decoded bytes accepted, in bytes; more is answered 413. Default 10 MiB; at least 1, at most 1 GiB.
    pub fn max_decoded(mut self, bytes: usize) -> Self {
        self.max_decoded = bytes;
        self
    }

    tower_kit_core::exempt_setter! {
        /// Requests for which the predicate is true bypass decoding: passed to the inner service untouched, whatever
        /// their `Content-Encoding`, never refused (operational routes such as `/health` and `/metrics`). Default: none.
    }

    /// Checks the settings.
    pub fn build(self) -> Result<RequestDecompressionLayer, ConfigError> {
        if self.max_decoded == 0 || self.max_decoded > 1 << 30 {
            return Err(ConfigError::new(
                "max_decoded",
                format!("must be 1 byte to 1 GiB (got {})", self.max_decoded),
            ));
        }
        let codings: Vec<Coding> = compiled()
            .into_iter()
            .filter(|c| self.codings.contains(*c))
            .collect();
        Ok(RequestDecompressionLayer {
            config: Arc::new(RequestConfig {
                max_decoded: self.max_decoded,
                accept_encoding: accept_encoding(&codings),
                codings,
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
