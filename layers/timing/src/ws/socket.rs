//! [`MeteredSocket`]: a WebSocket wrapper that counts what passes through it, sends keep-alive pings and closes
//! idle connections.

use super::metrics::{Config, RouteCounters};
use super::names;
use bytes::Bytes;
use futures_core::Stream;
use futures_sink::Sink;
use metrics::{Counter, Gauge};
use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, PoisonError, atomic::Ordering::Relaxed},
    task::{Context, Poll, ready},
    time::{Duration, Instant},
};
use tokio::time::Sleep;
use tower_kit_core::ws::{CLOSE_ABNORMAL, CLOSE_GOING_AWAY, MessageKind, WsMessage};

/// How long an idle-timeout close may take to be written before the stream ends anyway.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// One open connection: its counters and metric handles, resolved once. Dropping it closes the connection in the
/// statistics (active down, duration and close code recorded).
pub(crate) struct Connection {
    counters: Arc<RouteCounters>,
    opened_at: Instant,
    close_code: Option<u16>,
    active: Gauge,
    messages_sent: Counter,
    messages_received: Counter,
    bytes_sent: Counter,
    bytes_received: Counter,
    send_errors: Counter,
}

impl Connection {
    pub(crate) fn open(counters: Arc<RouteCounters>) -> Self {
        metrics::describe_histogram!(
            names::CONNECTION_DURATION,
            metrics::Unit::Seconds,
            "How long closed WebSocket connections were open."
        );
        let route = metrics::SharedString::from(counters.route.to_string());
        let with_direction = |name: &'static str, direction: &'static str| metrics::counter!(name, names::ROUTE => route.clone(), names::DIRECTION => direction);
        let this = Self {
            active: metrics::gauge!(names::ACTIVE_CONNECTIONS, names::ROUTE => route.clone()),
            messages_sent: with_direction(names::MESSAGES, names::TRANSMIT),
            messages_received: with_direction(names::MESSAGES, names::RECEIVE),
            bytes_sent: with_direction(names::MESSAGE_BYTES, names::TRANSMIT),
            bytes_received: with_direction(names::MESSAGE_BYTES, names::RECEIVE),
            send_errors: metrics::counter!(names::SEND_ERRORS, names::ROUTE => route.clone()),
            counters,
            opened_at: Instant::now(),
            close_code: None,
        };
        metrics::counter!(names::CONNECTIONS_OPENED, names::ROUTE => route).increment(1);
        this.active.increment(1.0);
        this.counters.opened.fetch_add(1, Relaxed);
        this.counters.active.fetch_add(1, Relaxed);
        this
    }

    #[inline]
    fn sent(&mut self, kind: MessageKind, len: usize, close_code: Option<u16>) {
        if kind.is_data() {
            self.messages_sent.increment(1);
            self.bytes_sent.increment(len as u64);
            self.counters.messages_sent.fetch_add(1, Relaxed);
            self.counters.bytes_sent.fetch_add(len as u64, Relaxed);
        } else if kind == MessageKind::Close && self.close_code.is_none() {
            self.close_code = Some(close_code.unwrap_or(tower_kit_core::ws::CLOSE_NORMAL));
        }
    }

    #[inline]
    fn received<M: WsMessage>(&mut self, message: &M) {
        let kind = message.kind();
        if kind.is_data() {
            let len = message.payload_len() as u64;
            self.messages_received.increment(1);
            self.bytes_received.increment(len);
            self.counters.messages_received.fetch_add(1, Relaxed);
            self.counters.bytes_received.fetch_add(len, Relaxed);
        } else if kind == MessageKind::Close && self.close_code.is_none() {
            // A close frame without a code means 1005 ("no status received") on the wire; count it as normal.
            self.close_code = Some(
                message
                    .close_code()
                    .unwrap_or(tower_kit_core::ws::CLOSE_NORMAL),
            );
        }
    }

    fn send_error(&self) {
        self.send_errors.increment(1);
        self.counters.send_errors.fetch_add(1, Relaxed);
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let code = self.close_code.unwrap_or(CLOSE_ABNORMAL);
        self.active.decrement(1.0);
        self.counters.active.fetch_sub(1, Relaxed);
        self.counters.closed.fetch_add(1, Relaxed);
        *self
            .counters
            .close_codes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(code)
            .or_insert(0) += 1;
        metrics::histogram!(
            names::CONNECTION_DURATION,
            names::ROUTE => self.counters.route.to_string(),
            names::CLOSE_CODE => code.to_string()
        )
        .record(self.opened_at.elapsed().as_secs_f64());
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    Open,
    SendClose,
    Flush,
    Done,
}

pin_project_lite::pin_project! {
    /// A WebSocket (any `Stream` of `Result<M, E>` that is also a `Sink<M>`, with `M:`
    /// [`WsMessage`](tower_kit_core::ws::WsMessage)) that records what passes through it, made by
    /// [`WebSocketMetrics::wrap`](super::WebSocketMetrics::wrap).
    ///
    /// - Counts data messages and payload bytes each way and failed sends; per message this is a few atomic adds,
    ///   with no allocation.
    /// - The connection is open until the wrapper is dropped; then the duration is recorded with the close code of
    ///   the first close frame sent or received (1006 if none: the client vanished).
    /// - Keep-alive: with a ping interval, a ping goes out each interval while the stream side is polled; with an
    ///   idle timeout, when nothing was received for that long the wrapper sends a close frame (1001, "idle
    ///   timeout") and its stream ends.
    ///
    /// Split it with `futures_util::StreamExt::split` as you would the socket itself; both halves share the
    /// counters. Keep-alive needs a tokio runtime with time enabled.
    pub struct MeteredSocket<S> {
        #[pin]
        inner: S,
        conn: Connection,
        ping: Option<Pin<Box<Sleep>>>,
        ping_interval: Duration,
        ping_due: bool,
        idle: Option<Pin<Box<Sleep>>>,
        idle_timeout: Duration,
        closing: Closing,
    }
}

impl<S> std::fmt::Debug for MeteredSocket<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteredSocket")
            .field("route", &self.conn.counters.route)
            .field("closing", &self.closing)
            .finish_non_exhaustive()
    }
}

impl<S> MeteredSocket<S> {
    pub(crate) fn new(inner: S, conn: Connection, config: &Config) -> Self {
        let now = tokio::time::Instant::now();
        Self {
            inner,
            conn,
            ping: config
                .ping_interval
                .map(|d| Box::pin(tokio::time::sleep_until(now + d))),
            ping_interval: config.ping_interval.unwrap_or_default(),
            ping_due: false,
            idle: config
                .idle_timeout
                .map(|d| Box::pin(tokio::time::sleep_until(now + d))),
            idle_timeout: config.idle_timeout.unwrap_or_default(),
            closing: Closing::Open,
        }
    }

    /// The wrapped socket.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped socket, mutably. Messages sent or received through it directly are not counted.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped socket; the connection is counted as closed now.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, M, E> Stream for MeteredSocket<S>
where
    S: Stream<Item = Result<M, E>> + Sink<M>,
    M: WsMessage,
{
    type Item = Result<M, E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        loop {
            match *this.closing {
                Closing::Open => {}
                Closing::SendClose => {
                    if let Some(p) = poll_grace(this.idle, cx) {
                        return p;
                    }
                    match this.inner.as_mut().poll_ready(cx) {
                        Poll::Ready(Ok(())) => {
                            let close = M::close(CLOSE_GOING_AWAY, "idle timeout");
                            let code = close.close_code();
                            if this.inner.as_mut().start_send(close).is_ok() {
                                this.conn.sent(MessageKind::Close, 0, code);
                                *this.closing = Closing::Flush;
                            } else {
                                this.conn.send_error();
                                *this.closing = Closing::Done;
                            }
                        }
                        Poll::Ready(Err(_)) => {
                            this.conn.send_error();
                            *this.closing = Closing::Done;
                        }
                        Poll::Pending => return Poll::Pending,
                    }
                    continue;
                }
                Closing::Flush => {
                    if let Some(p) = poll_grace(this.idle, cx) {
                        return p;
                    }
                    if ready!(this.inner.as_mut().poll_flush(cx)).is_err() {
                        this.conn.send_error();
                    }
                    *this.closing = Closing::Done;
                    continue;
                }
                Closing::Done => return Poll::Ready(None),
            }

            match this.inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(message))) => {
                    this.conn.received(&message);
                    if let Some(idle) = this.idle.as_mut() {
                        let deadline = tokio::time::Instant::now() + *this.idle_timeout;
                        idle.as_mut().reset(deadline);
                    }
                    return Poll::Ready(Some(Ok(message)));
                }
                Poll::Ready(other) => return Poll::Ready(other),
                Poll::Pending => {}
            }

            if let Some(ping) = this.ping.as_mut()
                && (*this.ping_due || ping.as_mut().poll(cx).is_ready())
            {
                *this.ping_due = true;
                let sent = match this.inner.as_mut().poll_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        if this
                            .inner
                            .as_mut()
                            .start_send(M::ping(Bytes::new()))
                            .is_err()
                        {
                            this.conn.send_error();
                        } else if let Poll::Ready(Err(_)) = this.inner.as_mut().poll_flush(cx) {
                            this.conn.send_error();
                        }
                        true
                    }
                    Poll::Ready(Err(_)) => {
                        this.conn.send_error();
                        true
                    }
                    Poll::Pending => false,
                };
                if sent {
                    *this.ping_due = false;
                    let next = tokio::time::Instant::now() + *this.ping_interval;
                    ping.as_mut().reset(next);
                    // Registers the timer with this task.
                    let _ = ping.as_mut().poll(cx);
                }
            }

            if let Some(idle) = this.idle.as_mut()
                && idle.as_mut().poll(cx).is_ready()
            {
                idle.as_mut()
                    .reset(tokio::time::Instant::now() + CLOSE_GRACE.min(*this.idle_timeout));
                *this.closing = Closing::SendClose;
                continue;
            }
            return Poll::Pending;
        }
    }
}

/// While closing after an idle timeout: the stream ends when the grace period runs out.
fn poll_grace<T>(
    idle: &mut Option<Pin<Box<Sleep>>>,
    cx: &mut Context<'_>,
) -> Option<Poll<Option<T>>> {
    let idle = idle.as_mut()?;
    idle.as_mut()
        .poll(cx)
        .is_ready()
        .then_some(Poll::Ready(None))
}

impl<S, M> Sink<M> for MeteredSocket<S>
where
    S: Sink<M>,
    M: WsMessage,
{
    type Error = S::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.project();
        let result = ready!(this.inner.poll_ready(cx));
        if result.is_err() {
            this.conn.send_error();
        }
        Poll::Ready(result)
    }

    fn start_send(self: Pin<&mut Self>, item: M) -> Result<(), Self::Error> {
        let this = self.project();
        let (kind, len, code) = (item.kind(), item.payload_len(), item.close_code());
        match this.inner.start_send(item) {
            Ok(()) => {
                this.conn.sent(kind, len, code);
                Ok(())
            }
            Err(e) => {
                this.conn.send_error();
                Err(e)
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.project();
        let result = ready!(this.inner.poll_flush(cx));
        if result.is_err() {
            this.conn.send_error();
        }
        Poll::Ready(result)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Not counted as a send error: closing a socket the peer already closed fails with most libraries.
        self.project().inner.poll_close(cx)
    }
}
