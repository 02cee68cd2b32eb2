//! One connection's state, shared by its task, its IO wrapper, its service wrapper and the connection registry.

use http::{Request, Response, Version};
use http_body::Body;
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::Notify,
    time::Instant,
};
use tower_kit_core::{BodyEnd, BodyObserver, ObservedBody};

const NONE: u64 = u64::MAX;

/// Wakes the accept loop when it waits for a connection to close or go idle.
#[derive(Debug, Default)]
pub(crate) struct Capacity {
    /// Set while the accept loop waits: only then do requests that end signal it.
    pub(crate) waiting: AtomicBool,
    pub(crate) notify: Notify,
}

impl Capacity {
    pub(crate) fn signal(&self) {
        if self.waiting.load(Ordering::Relaxed) {
            self.notify.notify_one();
        }
    }
}

/// What the watchdog should do with a connection now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// Nothing yet: look again at this time.
    Later(Instant),
    /// The first request, or an HTTP/1 request head, missed its deadline.
    HeaderTimeout,
    /// No request for the idle timeout.
    IdleTimeout,
}

/// One connection's activity. Times are microseconds since the server's epoch.
#[derive(Debug)]
pub(crate) struct Conn {
    epoch: Instant,
    accepted: u64,
    in_flight: AtomicU32,
    served: AtomicBool,
    http2: AtomicBool,
    idle_since: AtomicU64,
    head_started: AtomicU64,
    capacity: Arc<Capacity>,
    header_read_timeout: u64,
    idle_timeout: u64,
    /// When the watchdog will look next; a change that brings a deadline before it notifies `changed`.
    armed: AtomicU64,
    /// Wakes the watchdog when a deadline moved earlier than the time it sleeps to.
    pub(crate) changed: Notify,
    /// Notified when the accept loop picks this connection to close for the cap.
    pub(crate) evict: Notify,
}

impl Conn {
    pub(crate) fn new(
        epoch: Instant,
        capacity: Arc<Capacity>,
        header_read_timeout: Duration,
        idle_timeout: Duration,
    ) -> Self {
        let accepted = micros(epoch, Instant::now());
        Self {
            epoch,
            accepted,
            in_flight: AtomicU32::new(0),
            served: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            idle_since: AtomicU64::new(accepted),
            head_started: AtomicU64::new(NONE),
            capacity,
            header_read_timeout: duration_micros(header_read_timeout),
            idle_timeout: duration_micros(idle_timeout),
            armed: AtomicU64::new(NONE),
            changed: Notify::new(),
            evict: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        micros(self.epoch, Instant::now())
    }

    fn at(&self, micros: u64) -> Instant {
        self.epoch + Duration::from_micros(micros)
    }

    /// Since when the connection has had no request in flight (its accept time before its first request), or
    /// `None` while a request is in flight.
    pub(crate) fn idle_since(&self) -> Option<u64> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            None
        } else if !self.served.load(Ordering::Acquire) {
            Some(self.accepted)
        } else {
            Some(self.idle_since.load(Ordering::Acquire))
        }
    }

    /// No request was ever completed-in-head on this connection, or an HTTP/1 head is half read: closing it loses
    /// nothing, so it is closed at once rather than gracefully.
    pub(crate) fn awaiting_head(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
            && (!self.served.load(Ordering::Acquire)
                || self.head_started.load(Ordering::Acquire) != NONE)
    }

    pub(crate) fn is_busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    /// The watchdog's verdict at this moment; a `Later` time is remembered as the time it sleeps to.
    pub(crate) fn due(&self) -> Due {
        // While the verdict is computed any change notifies: it may not be in the snapshot.
        self.armed.store(0, Ordering::Release);
        let due = self.verdict();
        if let Due::Later(at) = due {
            self.armed.store(micros(self.epoch, at), Ordering::Release);
        }
        due
    }

    fn verdict(&self) -> Due {
        let now = self.now();
        let header = self.header_read_timeout;
        let idle = self.idle_timeout;
        if self.in_flight.load(Ordering::Acquire) > 0 {
            // Busy: look again later; a request that ends sets a later deadline than this one.
            return Due::Later(self.at(now.saturating_add(header.min(idle))));
        }
        let (deadline, verdict) = if !self.served.load(Ordering::Acquire) {
            (self.accepted.saturating_add(header), Due::HeaderTimeout)
        } else {
            match self.head_started.load(Ordering::Acquire) {
                NONE => (
                    self.idle_since.load(Ordering::Acquire).saturating_add(idle),
                    Due::IdleTimeout,
                ),
                started => (started.saturating_add(header), Due::HeaderTimeout),
            }
        };
        if now >= deadline {
            verdict
        } else {
            Due::Later(self.at(deadline))
        }
    }

    fn start_request(self: &Arc<Self>, version: Version) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        if !self.served.load(Ordering::Relaxed) {
            self.served.store(true, Ordering::Release);
        }
        if version == Version::HTTP_2 && !self.http2.load(Ordering::Relaxed) {
            self.http2.store(true, Ordering::Release);
        }
        InFlight(Arc::clone(self))
    }

    fn end_request(&self) {
        // The idle clock and the head clock are set before the count drops, so the watchdog never sees an idle
        // connection with a stale clock.
        let now = self.now();
        self.idle_since.store(now, Ordering::Release);
        self.head_started.store(NONE, Ordering::Release);
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.capacity.signal();
            self.deadline_set(now.saturating_add(self.idle_timeout));
        }
    }

    /// Wakes the watchdog if `deadline` comes before the time it sleeps to (with the default settings, an idle
    /// timeout longer than the header timeout, this never happens after a request, so there is no extra wake).
    fn deadline_set(&self, deadline: u64) {
        if deadline < self.armed.load(Ordering::Acquire) {
            self.changed.notify_one();
        }
    }

    /// Bytes arrived: on an idle HTTP/1 connection they start the head deadline of the next request.
    #[inline]
    fn on_read(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_started.load(Ordering::Relaxed) == NONE
            && self.served.load(Ordering::Relaxed)
            && !self.http2.load(Ordering::Relaxed)
        {
            let now = self.now();
            if self
                .head_started
                .compare_exchange(NONE, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                self.deadline_set(now.saturating_add(self.header_read_timeout));
            }
        }
    }
}

fn micros(epoch: Instant, t: Instant) -> u64 {
    duration_micros(t.saturating_duration_since(epoch))
}

fn duration_micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(NONE - 1)
}

/// A request in flight, until its response body ends or is dropped.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Conn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end_request();
    }
}

impl BodyObserver for InFlight {
    fn on_end(self, _end: BodyEnd) {}
}

/// The socket, watched for bytes that start a request head.
#[derive(Debug)]
pub(crate) struct TrackedIo {
    pub(crate) stream: TcpStream,
    pub(crate) conn: Arc<Conn>,
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.stream).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            this.conn.on_read();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The user's service for one connection: adds the peer address to each request and counts requests in flight
/// until their response bodies end.
#[derive(Debug)]
pub(crate) struct Tracked<S> {
    pub(crate) inner: S,
    pub(crate) conn: Arc<Conn>,
    pub(crate) peer: SocketAddr,
}

impl<S, B> hyper::service::Service<Request<Incoming>> for Tracked<S>
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone,
    B: Body,
{
    type Response = Response<ObservedBody<B, InFlight>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, Request<Incoming>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(self.peer);
        #[cfg(feature = "axum")]
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(self.peer));
        let in_flight = self.conn.start_request(req.version());
        ResponseFuture {
            state: State::NotReady {
                service: self.inner.clone(),
                req: Some(req),
            },
            in_flight: Some(in_flight),
        }
    }
}

pin_project! {
    /// The response future of a served request.
    pub(crate) struct ResponseFuture<S, R>
    where
        S: tower_service::Service<R>,
    {
        #[pin]
        state: State<S, R>,
        in_flight: Option<InFlight>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, R>
    where
        S: tower_service::Service<R>,
    {
        NotReady { service: S, req: Option<R> },
        Called { #[pin] future: S::Future },
    }
}

impl<S, R, B> Future for ResponseFuture<S, R>
where
    S: tower_service::Service<R, Response = Response<B>>,
    B: Body,
{
    type Output = Result<Response<ObservedBody<B, InFlight>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::NotReady { service, req } => {
                    ready!(service.poll_ready(cx))?;
                    let Some(req) = req.take() else {
                        // Unreachable: the state changes to `Called` right after the request is taken.
                        return Poll::Pending;
                    };
                    let future = service.call(req);
                    this.state.set(State::Called { future });
                }
                StateProj::Called { future } => {
                    let response = ready!(future.poll(cx))?;
                    let Some(in_flight) = this.in_flight.take() else {
                        // Unreachable: a future resolves once.
                        return Poll::Pending;
                    };
                    return Poll::Ready(
                        Ok(response.map(|body| ObservedBody::new(body, in_flight))),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Arc<Conn> {
        Arc::new(Conn::new(
            Instant::now(),
            Arc::new(Capacity::default()),
            HEAD,
            IDLE,
        ))
    }

    const HEAD: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_misses_the_header_deadline() {
        let c = conn();
        assert!(matches!(c.due(), Due::Later(_)));
        c.on_read(); // bytes of a first head do not move its deadline, counted from the accept
        tokio::time::advance(HEAD).await;
        assert_eq!(c.due(), Due::HeaderTimeout);
        assert!(c.awaiting_head());
    }

    #[tokio::test(start_paused = true)]
    async fn busy_then_idle_then_a_slow_next_head() {
        let c = conn();
        let req = c.start_request(Version::HTTP_11);
        tokio::time::advance(IDLE * 2).await;
        assert!(matches!(c.due(), Due::Later(_)), "busy: never due");
        assert_eq!(c.idle_since(), None);
        drop(req);
        assert!(!c.awaiting_head());
        tokio::time::advance(IDLE - Duration::from_secs(1)).await;
        assert!(matches!(c.due(), Due::Later(_)));
        c.on_read(); // the next head starts: its own deadline replaces the idle one
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(matches!(c.due(), Due::Later(_)));
        assert!(c.awaiting_head());
        tokio::time::advance(HEAD).await;
        assert_eq!(c.due(), Due::HeaderTimeout);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_keep_alive_times_out() {
        let c = conn();
        drop(c.start_request(Version::HTTP_11));
        tokio::time::advance(IDLE).await;
        assert_eq!(c.due(), Due::IdleTimeout);
    }

    #[tokio::test(start_paused = true)]
    async fn http2_frames_between_streams_do_not_start_a_head_deadline() {
        let c = conn();
        drop(c.start_request(Version::HTTP_2));
        c.on_read(); // a PING or SETTINGS frame
        tokio::time::advance(HEAD * 2).await;
        assert!(matches!(c.due(), Due::Later(_)));
        tokio::time::advance(IDLE).await;
        assert_eq!(c.due(), Due::IdleTimeout);
    }
}
