//! [`ConcurrencyBody`]: the response body, which carries the request's slot until the body ends.
//!
//! Why not core's `ObservedBody`: expressed as `PolicyBody<ObservedBody<B, _>>` the admitted path costs 625
//! instructions per call instead of 573 (+9 %; 1 269 instead of 1 207 with a `content-type`, +5 %), measured with
//! callgrind on `benches/concurrency/examples/loop.rs`. `ObservedBody` counts bytes and checks `is_end_stream` on
//! every body; here only the adaptive limit needs that, so it lives in the boxed extras of [`Held`] (`EndState`,
//! the same rules as `ObservedBody`'s) and the common case pays one test.

use crate::{keyed::KeyPermit, layer::Config, queue::Permit};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::{
    mem::ManuallyDrop,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};
use tokio::time::Instant;
use tower_kit_core::PolicyBody;

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
    /// How far the body got, for the adaptive limit (a completed body is a sample).
    end: EndState,
}

/// How far a response body got, which tells a completed body from an aborted one when it is dropped before its
/// final frame. hyper stops polling a body without waiting for its end when the body says it is at its end, when
/// as many bytes as the expected length were sent, and when the response has no body to send (HEAD, 1xx, 204,
/// 304): each of these counts as completed.
#[derive(Default)]
struct EndState {
    /// Set when the slot moves into a response body; until then a drop (an inner error) is no sample.
    observed: bool,
    /// The body said it was at its end, or the response has no body to send.
    done: bool,
    sent: u64,
    expected: Option<u64>,
}

impl EndState {
    fn completed(&self) -> bool {
        self.observed && (self.done || self.expected.is_some_and(|n| self.sent >= n))
    }
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
            extra: ManuallyDrop::new(Some(Box::new(Extra {
                _key: key,
                sample,
                end: EndState::default(),
            }))),
        }
    }

    /// The layer's shared config.
    #[inline]
    pub(crate) fn config(&self) -> &Config {
        self.permit.owner()
    }

    /// Gives the slots back; a completed request first feeds its latency to the adaptive limit.
    #[inline]
    pub(crate) fn finish(mut self, completed: bool) {
        if let Some(extra) = self.extra.take() {
            self.finish_extra(extra, completed);
        }
    }

    /// The slot moves into a response body whose end the adaptive limit watches: `expected` is its length when
    /// known, `done` whether it has nothing (more) to send.
    #[inline]
    pub(crate) fn observe_end(&mut self, expected: Option<u64>, done: bool) {
        if let Some(extra) = self.extra.as_deref_mut() {
            extra.end = EndState {
                observed: true,
                done,
                sent: 0,
                expected,
            };
        }
    }

    /// The body produced a frame; `at_end` says whether the body is now at its end.
    #[inline]
    fn on_frame(&mut self, frame: &Frame<Bytes>, at_end: impl FnOnce() -> bool) {
        if let Some(extra) = self.extra.as_deref_mut() {
            if let Some(data) = frame.data_ref() {
                extra.end.sent += data.len() as u64;
            }
            if at_end() {
                extra.end.done = true;
            }
        }
    }

    #[cold]
    #[inline(never)]
    fn finish_extra(&self, extra: Box<Extra>, completed: bool) {
        let config = self.config();
        if completed
            && let Some((started, in_flight)) = extra.sample
            && let Some(controller) = &config.adaptive
        {
            let limit = controller.sample(started.elapsed(), in_flight);
            config.gate.set_limit(limit);
        }
        // The key's slot is given back here, the global slot right after (the permit is a field of `Held`).
        drop(extra);
    }
}

impl Drop for Held {
    #[inline]
    fn drop(&mut self) {
        // Taking the value out leaves `None` behind, which needs no drop. A body dropped before its final frame
        // is a sample if it had sent everything (see `EndState`).
        if let Some(extra) = self.extra.take() {
            let completed = extra.end.completed();
            self.finish_extra(extra, completed);
        }
    }
}

pin_project! {
    /// The response body of [`Concurrency`](crate::Concurrency): the inner body, which holds the request's slot
    /// until it ends, errors or is dropped, or the layer's own refusal.
    ///
    /// Frames, `size_hint` and `is_end_stream` pass through unchanged.
    pub struct ConcurrencyBody<B> {
        #[pin]
        inner: PolicyBody<B>,
        // The slots, until the body ends; empty for a refusal, an exempt request or a slot given back at the head.
        held: Option<Held>,
    }
}

impl<B> ConcurrencyBody<B> {
    #[inline]
    pub(crate) fn new(body: B, held: Option<Held>) -> Self {
        ConcurrencyBody {
            inner: PolicyBody::Inner { body },
            held,
        }
    }

    pub(crate) fn refusal(body: Bytes) -> Self {
        ConcurrencyBody {
            inner: PolicyBody::full(body),
            held: None,
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
        let mut this = self.project();
        let result = ready!(this.inner.as_mut().poll_frame(cx));
        match &result {
            Some(Ok(frame)) => {
                if let Some(held) = this.held {
                    held.on_frame(frame, || this.inner.is_end_stream());
                }
            }
            // The end of the body, or an error: the slots go back now, not when the body is dropped.
            Some(Err(_)) => {
                if let Some(held) = this.held.take() {
                    held.finish(false);
                }
            }
            None => {
                if let Some(held) = this.held.take() {
                    held.finish(true);
                }
            }
        }
        Poll::Ready(result)
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
        // The body adds the slot to the inner body (or the refusal), nothing else.
        type Inner = http_body_util::Full<Bytes>;
        assert_eq!(
            size_of::<ConcurrencyBody<Inner>>(),
            size_of::<PolicyBody<Inner>>() + size_of::<Held>()
        );
    }

    /// What the adaptive limit counts as a completed body when the body is dropped before its final frame (the
    /// cases in which hyper stops polling a body that has nothing more to send).
    #[test]
    fn a_body_dropped_once_everything_was_sent_is_completed() {
        assert!(
            !EndState::default().completed(),
            "not in a body (an inner error): no sample"
        );
        let mut end = EndState {
            observed: true,
            done: false,
            sent: 0,
            expected: Some(2),
        };
        assert!(!end.completed(), "dropped before the expected length");
        end.sent = 2;
        assert!(end.completed(), "the expected length was sent");
        let end = EndState {
            observed: true,
            done: true,
            sent: 0,
            expected: None,
        };
        assert!(end.completed(), "at its end, or nothing to send");
        let end = EndState {
            observed: true,
            done: false,
            sent: 5,
            expected: None,
        };
        assert!(
            !end.completed(),
            "no known length: dropped early is aborted"
        );
    }
}
