//! [`ConcurrencyBody`]: the response body, which carries the request's slot until the body ends.

use crate::{keyed::KeyPermit, layer::Config, queue::Permit};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::{
    mem::ManuallyDrop,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};
use tokio::time::Instant;
use tower_kit_core::{BodyEnd, BodyObserver, ObservedBody, PolicyBody};

/// A permit of the layer's gate; it holds the layer's shared config (and through it the gate).
pub(crate) type LayerPermit = Permit<Arc<Config>>;

/// What an admitted request holds: its slot, and when needed its key's slot and the adaptive sample. Dropping it
/// gives the slots back, whatever the reason: end of body, error, client disconnect, panic.
///
/// Two words: the permit (which also gives access to the config) and the rarely used extras, boxed, so that the
/// admitted path's future and body stay small.
pub(crate) struct Held {
    permit: LayerPermit,
    // Dropped by hand (see `Drop for Held`), so that the common case, none, costs one test.
    extra: ManuallyDrop<Option<Box<Extra>>>,
}

struct Extra {
    // Held only for its `Drop`, which frees the key's slot.
    _key: Option<KeyPermit>,
    /// When the request was admitted, and the slots taken then (the adaptive limit's utilisation signal).
    sample: Option<(Instant, usize)>,
}

impl Held {
    /// `in_flight` is the slots taken when the permit was handed out, itself included.
    #[inline]
    pub(crate) fn new(permit: LayerPermit, in_flight: usize, key: Option<KeyPermit>) -> Self {
        match key {
            None => Held::without_key(permit, in_flight),
            key => Held::with_extra(permit, in_flight, key),
        }
    }

    /// [`new`](Self::new) for a request without a key's slot (the common case).
    #[inline]
    pub(crate) fn without_key(permit: LayerPermit, in_flight: usize) -> Self {
        if permit.owner().adaptive.is_none() {
            return Held {
                permit,
                extra: ManuallyDrop::new(None),
            };
        }
        Held::with_extra(permit, in_flight, None)
    }

    #[cold]
    #[inline(never)]
    fn with_extra(permit: LayerPermit, in_flight: usize, key: Option<KeyPermit>) -> Self {
        let sample = permit
            .owner()
            .adaptive
            .is_some()
            .then(|| (Instant::now(), in_flight));
        Held {
            permit,
            extra: ManuallyDrop::new(Some(Box::new(Extra { _key: key, sample }))),
        }
    }

    /// The layer's shared config.
    #[inline]
    pub(crate) fn config(&self) -> &Config {
        self.permit.owner()
    }

    /// Gives the slots back; a completed request first feeds its latency to the adaptive limit.
    #[inline]
    pub(crate) fn finish(self, completed: bool) {
        if completed && let Some(extra) = &*self.extra {
            self.sample(extra);
        }
    }

    #[cold]
    #[inline(never)]
    fn sample(&self, extra: &Extra) {
        let config = self.config();
        if let Some((started, in_flight)) = extra.sample
            && let Some(controller) = &config.adaptive
        {
            let limit = controller.sample(started.elapsed(), in_flight);
            config.gate.set_limit(limit);
        }
    }
}

impl Drop for Held {
    #[inline]
    fn drop(&mut self) {
        // Taking the value out leaves `None` behind, which needs no drop. The key's slot is given back here, the
        // global slot right after (the permit is a field).
        if let Some(extra) = self.extra.take() {
            drop_extra(extra);
        }
    }
}

#[cold]
#[inline(never)]
fn drop_extra(extra: Box<Extra>) {
    drop(extra);
}

/// The body observer: holds the slots until the body ends.
pub(crate) struct Guard(pub(crate) Option<Held>);

impl BodyObserver for Guard {
    #[inline]
    fn on_end(self, end: BodyEnd) {
        if let Some(held) = self.0 {
            held.finish(end == BodyEnd::Completed);
        }
    }
}

pin_project! {
    /// The response body of [`Concurrency`](crate::Concurrency): the inner body (which holds the request's slot
    /// until it ends, errors or is dropped), or the layer's own refusal.
    ///
    /// Frames, `size_hint` and `is_end_stream` pass through unchanged.
    pub struct ConcurrencyBody<B> {
        #[pin]
        inner: PolicyBody<ObservedBody<B, Guard>>,
    }
}

impl<B> ConcurrencyBody<B> {
    pub(crate) fn observed(body: ObservedBody<B, Guard>) -> Self {
        ConcurrencyBody {
            inner: PolicyBody::inner(body),
        }
    }

    pub(crate) fn refusal(body: Bytes) -> Self {
        ConcurrencyBody {
            inner: PolicyBody::full(body),
        }
    }
}

impl<B: Body<Data = Bytes>> Body for ConcurrencyBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> std::fmt::Debug for ConcurrencyBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.inner {
            PolicyBody::Inner { .. } => "inner",
            PolicyBody::Full { .. } => "refusal",
        };
        f.debug_struct("ConcurrencyBody")
            .field("kind", &kind)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    /// The admitted path carries these through the response future and the body: keep them at two words (the
    /// permit, which also reaches the config, and the rarely used extras), and `Option` free.
    #[test]
    fn what_an_admitted_request_holds_stays_two_words() {
        assert_eq!(size_of::<LayerPermit>(), size_of::<usize>());
        assert_eq!(size_of::<Held>(), 2 * size_of::<usize>());
        assert_eq!(size_of::<Option<Held>>(), size_of::<Held>());
        assert_eq!(size_of::<Guard>(), size_of::<Held>());
    }
}
