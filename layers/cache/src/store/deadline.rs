//! The per-request Redis deadline ([`tower_kit_core::redis::Deadline`]): the cache runs each request's store
//! calls inside one, so that all of them together wait at most one Redis timeout. Without the `redis` feature no
//! store waits on Redis, and this is a no-op.

#[cfg(feature = "redis")]
pub(crate) use tower_kit_core::redis::Deadline;

/// Without Redis: nothing to bound.
#[cfg(not(feature = "redis"))]
#[derive(Clone, Debug, Default)]
pub(crate) struct Deadline;

#[cfg(not(feature = "redis"))]
impl Deadline {
    pub(crate) fn new() -> Self {
        Self
    }

    pub(crate) fn scope<F: std::future::Future>(self, fut: F) -> F {
        fut
    }

    pub(crate) fn current() -> Option<Self> {
        None
    }

    pub(crate) fn is_spent(&self) -> bool {
        false
    }

    pub(crate) fn spend(&self) {}
}
