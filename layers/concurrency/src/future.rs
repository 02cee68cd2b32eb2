//! [`ResponseFuture`]: waits for a slot if needed, then runs the inner service.

use crate::{
    RefusalReason,
    body::{ConcurrencyBody, Held, LayerPermit},
    keyed::KeyPermit,
    layer::{Config, ReleaseAt},
    queue::Waiter,
};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header, response::Parts};
use http_body::Body;
use pin_project_lite::pin_project;
use std::{
    future::Future,
    mem::ManuallyDrop,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};
use tokio::time::{Instant, Sleep};
use tower_kit_core::{ServerTiming, content_length};
use tower_service::Service;

pin_project! {
    /// The response future of [`Concurrency`](crate::Concurrency).
    ///
    /// Dropping it while it waits in the queue leaves the queue at once; dropping it while the inner service runs
    /// gives the slot back.
    ///
    /// The admitted path's state sits in plain fields (the inner future and the slot), the rare ones (waiting in
    /// the queue, refused) in one box, and each field that owns something is dropped by a small inline test with
    /// the real work out of line: dropping a finished future then costs a few tests, which lets the compiler keep
    /// the response where it is instead of copying it around the drop.
    pub struct ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        // `Some` from the call until the response is ready.
        #[pin]
        future: Option<S::Future>,
        // The slot until the response is wrapped; empty for an exempt request.
        held: Slot<Held>,
        // Whether the request was a HEAD request (read by the adaptive limit's end-of-body hints).
        head: bool,
        // Waiting for a slot, or refused.
        other: Slot<Box<Other<S, ReqBody>>>,
    }
}

/// An optional value whose drop is an inline test, with the drop itself out of line.
struct Slot<T>(ManuallyDrop<Option<T>>);

impl<T> Slot<T> {
    #[inline]
    fn new(value: Option<T>) -> Self {
        Slot(ManuallyDrop::new(value))
    }

    #[inline]
    fn take(&mut self) -> Option<T> {
        // `take` leaves `None` behind, which needs no drop.
        self.0.take()
    }
}

impl<T> Drop for Slot<T> {
    #[inline]
    fn drop(&mut self) {
        if let Some(value) = self.take() {
            drop_out_of_line(value);
        }
    }
}

#[cold]
#[inline(never)]
fn drop_out_of_line<T>(value: T) {
    drop(value);
}

enum Other<S, ReqBody> {
    Refused(Response<Bytes>),
    Waiting(Queued<S, ReqBody>),
}

struct Queued<S, ReqBody> {
    waiter: Waiter<Arc<Config>>,
    deadline: Pin<Box<Sleep>>,
    service: S,
    request: Request<ReqBody>,
    key: Option<KeyPermit>,
    since: Instant,
    grpc: bool,
}

impl<S, ReqBody> ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    /// The inner service runs; `head` says whether the request was a HEAD request.
    #[inline]
    pub(crate) fn running(future: S::Future, held: Option<Held>, head: bool) -> Self {
        ResponseFuture {
            future: Some(future),
            held: Slot::new(held),
            head,
            other: Slot::new(None),
        }
    }

    pub(crate) fn refused(response: Response<Bytes>) -> Self {
        ResponseFuture {
            future: None,
            held: Slot::new(None),
            head: false,
            other: Slot::new(Some(Box::new(Other::Refused(response)))),
        }
    }

    pub(crate) fn waiting(
        waiter: Waiter<Arc<Config>>,
        service: S,
        request: Request<ReqBody>,
        key: Option<KeyPermit>,
        grpc: bool,
    ) -> Self {
        let queued = Queued {
            deadline: Box::pin(tokio::time::sleep(waiter.owner().max_queue_wait)),
            waiter,
            service,
            request,
            key,
            since: Instant::now(),
            grpc,
        };
        ResponseFuture {
            future: None,
            held: Slot::new(None),
            head: false,
            other: Slot::new(Some(Box::new(Other::Waiting(queued)))),
        }
    }
}

/// Counts a refusal and builds its response.
pub(crate) fn refusal(
    config: &Config,
    reason: RefusalReason,
    waited: Duration,
    grpc: bool,
) -> Response<Bytes> {
    config.metrics.rejected(reason);
    config
        .refusals
        .build(reason, config.gate.limit(), waited, grpc)
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes>,
{
    type Output = Result<Response<ConcurrencyBody<ResBody>>, S::Error>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            // The admitted path is kept small so that it inlines into the caller; the rest is out of line.
            if let Some(future) = this.future.as_mut().as_pin_mut() {
                let result = ready!(future.poll(cx));
                // The finished inner future stays in place until this one is dropped, as in tower's layers (a
                // second poll polls it again).
                let held = this.held.take();
                // On an inner error `held` is dropped here: the slot is given back, no latency sample.
                let response = result?;
                return Poll::Ready(Ok(wrap(response, held, *this.head)));
            }
            match ready!(poll_other(this.other, cx)) {
                Admitted::Run(mut service, request, held) => {
                    *this.head = request.method() == Method::HEAD;
                    *this.held = Slot::new(Some(held));
                    this.future.set(Some(service.call(request)));
                }
                Admitted::Refused(response) => return Poll::Ready(Ok(response)),
            }
        }
    }
}

/// What a waiting or refused future came to.
enum Admitted<S, ReqBody, ResBody> {
    /// A slot: call this service.
    Run(S, Request<ReqBody>, Held),
    /// The answer is a refusal.
    Refused(Response<ConcurrencyBody<ResBody>>),
}

/// Polls a future that is waiting or refused.
#[cold]
#[inline(never)]
fn poll_other<S, ReqBody, ResBody>(
    other: &mut Slot<Box<Other<S, ReqBody>>>,
    cx: &mut Context<'_>,
) -> Poll<Admitted<S, ReqBody, ResBody>>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    let outcome: Result<(LayerPermit, usize), RefusalReason> = match other.0.as_deref_mut() {
        None => panic!("ResponseFuture polled after completion"),
        Some(Other::Refused(_)) => Err(RefusalReason::QueueFull),
        Some(Other::Waiting(q)) => match q.waiter.check(Some(cx.waker())) {
            Poll::Ready(Ok(permit)) => Ok(permit),
            Poll::Ready(Err(_evicted)) => Err(RefusalReason::QueueFull),
            Poll::Pending => {
                if q.deadline.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                // The deadline passed; a slot may have been handed over at the same instant.
                match q.waiter.check(None) {
                    Poll::Ready(Ok(permit)) => Ok(permit),
                    _ => Err(RefusalReason::QueueTimeout),
                }
            }
        },
    };
    let Some(other) = other.take() else {
        panic!("ResponseFuture polled after completion");
    };
    let queued = match *other {
        Other::Refused(response) => {
            return Poll::Ready(Admitted::Refused(response.map(ConcurrencyBody::refusal)));
        }
        Other::Waiting(queued) => queued,
    };
    let Queued {
        waiter,
        service,
        request,
        key,
        since,
        grpc,
        ..
    } = queued;
    let config = waiter.owner().clone();
    // Leave the queue (if still in it) before anything else.
    drop(waiter);
    let waited = since.elapsed();
    config.metrics.queue_wait(waited);
    if let Some(timing) = ServerTiming::from_request(&request) {
        timing.duration("queue", waited);
    }
    Poll::Ready(match outcome {
        Ok((permit, in_flight)) => {
            Admitted::Run(service, request, Held::new(permit, in_flight, key))
        }
        Err(reason) => {
            drop(key);
            let response = refusal(&config, reason, waited, grpc);
            Admitted::Refused(response.map(ConcurrencyBody::refusal))
        }
    })
}

/// Whether the response is `text/event-stream`.
fn is_event_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(is_event_stream_type)
}

/// [`is_event_stream`] for the admitted path, inlined: no lookup for an empty map, and for a map with a few names
/// a scan of the names (one comparison each for the standard ones), cheaper than hashing one. It keeps the
/// response's own headers out of calls (see [`wrap`]) but for a large map.
#[inline(always)]
fn is_event_stream_fast(headers: &http::HeaderMap) -> bool {
    if headers.is_empty() {
        return false;
    }
    if headers.keys_len() > SCAN_HEADERS {
        return is_event_stream(headers);
    }
    // The first value of the first entry with the name: the value `get` returns.
    headers
        .iter()
        .find(|(name, _)| *name == header::CONTENT_TYPE)
        .is_some_and(|(_, value)| is_event_stream_type(value))
}

/// Up to this many names, [`is_event_stream_fast`] scans them instead of looking one up.
const SCAN_HEADERS: usize = 16;

#[inline]
fn is_event_stream_type(value: &http::HeaderValue) -> bool {
    let v = value.as_bytes();
    v.len() >= 17 && v[..17].eq_ignore_ascii_case(b"text/event-stream")
}

/// What the adaptive limit reads from the response head to tell a completed body from an aborted one: whether
/// the response has no body to send (HEAD, 1xx, 204, 304), and its `Content-Length`.
#[derive(Clone, Copy)]
struct EndHints {
    bodyless: bool,
    content_length: Option<u64>,
}

/// Moves the slot into the body, or gives it back now when it is released at the head.
///
/// This is inlined into the caller (always: when it is not, the response goes through memory and is copied by
/// `memcpy` several times), and the response goes through it as `Parts` and a body, never by value or by
/// reference into a call that is not inlined (`Response::map`, or a check of the headers out of line, brought
/// back the `memcpy` calls). The rare cases (release at the head, an adaptive limit, a stream predicate) read the
/// head out of line, by reference, and only say what goes into the body.
#[inline(always)]
fn wrap<B: Body>(
    response: Response<B>,
    held: Option<Held>,
    head: bool,
) -> Response<ConcurrencyBody<B>> {
    let (parts, body) = response.into_parts();
    let (held, hints) = match held {
        // Exempt: nothing to hold, nothing to sample.
        None => (None, None),
        Some(held) => {
            let config = held.config();
            if !config.plain_response {
                general(&parts, held, head)
            } else if config.streams_at_head && is_event_stream_fast(&parts.headers) {
                // A stream's duration says nothing about capacity: released now, no sample.
                held.finish(false);
                (None, None)
            } else {
                (Some(held), None)
            }
        }
    };
    Response::from_parts(parts, observe(body, held, hints))
}

/// [`wrap`] when the slot is released at the head, feeds the adaptive limit, or a stream predicate is set: what
/// goes into the body (the slot, unless it is given back now, and the adaptive limit's end hints).
#[inline(never)]
fn general(parts: &Parts, held: Held, head: bool) -> (Option<Held>, Option<EndHints>) {
    let config = held.config();
    let release_now = if config.release_at == ReleaseAt::Head {
        // Released at the head by choice: the latency to the head is the sample, unless it is a stream.
        Some(!is_stream(config, parts))
    } else if config.streams_at_head && is_stream(config, parts) {
        // A stream's duration says nothing about capacity: no sample.
        Some(false)
    } else {
        None
    };
    // Only the adaptive limit cares how the body ended (a completed body is a sample): read the end hints.
    let hints = config.adaptive.is_some().then(|| EndHints {
        bodyless: head
            || parts.status.is_informational()
            || parts.status == StatusCode::NO_CONTENT
            || parts.status == StatusCode::NOT_MODIFIED,
        content_length: content_length(&parts.headers),
    });
    match release_now {
        Some(sample) => {
            held.finish(sample);
            (None, hints)
        }
        None => (Some(held), hints),
    }
}

/// Whether the response is a long-lived stream: `text/event-stream`, or one the user's predicate picks.
fn is_stream(config: &Config, parts: &Parts) -> bool {
    is_event_stream(&parts.headers) || config.stream_predicate.as_ref().is_some_and(|p| p(parts))
}

#[inline(always)]
fn observe<B: Body>(
    body: B,
    mut held: Option<Held>,
    hints: Option<EndHints>,
) -> ConcurrencyBody<B> {
    if let Some(hints) = hints
        && let Some(held) = &mut held
    {
        // The adaptive limit: a body dropped once it has sent everything still counts as completed.
        let expected = hints.content_length.or_else(|| body.size_hint().exact());
        held.observe_end(expected, hints.bodyless || body.is_end_stream());
    }
    ConcurrencyBody::new(body, held)
}

impl<S, ReqBody> std::fmt::Debug for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match (&self.future, self.other.0.as_deref()) {
            (Some(_), _) => "running",
            (None, Some(Other::Refused(_))) => "refused",
            (None, Some(Other::Waiting(_))) => "waiting",
            (None, None) => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
