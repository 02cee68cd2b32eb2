//! The response body type of a [`RateLimit`](crate::RateLimit) service: [`WrapBody`] (default) or [`KeepBody`].

use bytes::Bytes;
use tower_kit_core::PolicyBody;

/// How the response body of a [`RateLimit`](crate::RateLimit) service relates to its inner service's body `B`.
///
/// The layer answers refusals itself, so its response body must be able to hold either the inner body or its own
/// bytes.
pub trait BodyMode<B> {
    /// The response body type.
    type Body: From<Bytes>;
    /// Wraps (or passes) the inner service's body.
    fn inner(body: B) -> Self::Body;
}

/// The default: responses carry a [`PolicyBody<B>`], which works with any inner body type.
#[derive(Clone, Copy, Debug, Default)]
pub struct WrapBody;

impl<B> BodyMode<B> for WrapBody {
    type Body = PolicyBody<B>;
    #[inline]
    fn inner(body: B) -> PolicyBody<B> {
        PolicyBody::inner(body)
    }
}

/// Responses keep the inner service's body type `B`, and refusals are built with `B::from(Bytes)`: for bodies that
/// can (axum's `Body`, `Full<Bytes>`). Under axum this spares the router from boxing every response body again
/// (it boxes any body that is not already `axum::body::Body`), which is most of this layer's cost on an admitted
/// request. Select it with [`RateLimitLayer::keep_inner_body`](crate::RateLimitLayer::keep_inner_body).
#[derive(Clone, Copy, Debug, Default)]
pub struct KeepBody;

impl<B: From<Bytes>> BodyMode<B> for KeepBody {
    type Body = B;
    #[inline]
    fn inner(body: B) -> B {
        body
    }
}
