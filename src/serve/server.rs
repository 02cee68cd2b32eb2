//! The accept loop, the connection cap and graceful shutdown.

use super::{
    ServeConfig,
    connection::{Capacity, Conn, Due, Tracked, TrackedIo},
};
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use std::{
    collections::HashMap,
    error::Error as StdError,
    future::Future,
    io,
    net::SocketAddr,
    pin::pin,
    sync::{Arc, Mutex, PoisonError, atomic::Ordering},
    time::Duration,
};
use tokio::{
    net::{TcpListener, TcpSocket},
    sync::watch,
    task::JoinSet,
    time::Instant,
};

/// Gauge: connections open now.
pub const OPEN_CONNECTIONS: &str = "tower_kit.serve.open_connections";
/// Counter: connections accepted.
pub const ACCEPTED_CONNECTIONS: &str = "tower_kit.serve.accepted_connections";
/// Counter: connections the server closed, by `reason`: `header_timeout`, `idle_timeout`, `evicted` (closed for
/// the connection cap), `drain_timeout` (still open when the drain deadline passed).
pub const CLOSED_CONNECTIONS: &str = "tower_kit.serve.closed_connections";
/// Counter: times the accept loop paused because every connection under the cap had a request in flight.
pub const ACCEPT_PAUSES: &str = "tower_kit.serve.accept_pauses";

/// How long a connection closed for idleness or for the cap may take to close gracefully (an HTTP/2 `GOAWAY`)
/// before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

type BoxError = Box<dyn StdError + Send + Sync>;

/// Binds a TCP listener on `addr` with a listen backlog of `backlog` (see
/// [`ServeConfig::listen_backlog`]), with `SO_REUSEADDR` on Unix so a restarted server can bind at once.
///
/// Must be called inside a Tokio runtime.
pub fn bind(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

struct Registry {
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes the connection idle for longest, if one is idle; `false` when every connection is busy.
    fn evict_longest_idle(&self) -> bool {
        let mut conns = self.lock();
        let victim = conns
            .iter()
            .filter_map(|(id, c)| c.idle_since().map(|since| (since, *id)))
            .min();
        match victim.and_then(|(_, id)| conns.remove(&id)) {
            Some(conn) => {
                conn.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Removes its connection from the registry and the gauge when the connection's task ends (or is aborted).
struct Registered {
    registry: Arc<Registry>,
    capacity: Arc<Capacity>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
        metrics::gauge!(OPEN_CONNECTIONS).decrement(1.0);
        self.capacity.signal();
    }
}

/// Serves `service` on every connection `listener` accepts, over HTTP/1.1 or HTTP/2 (chosen per connection from
/// the client's first bytes, with HTTP/1 upgrades), until `shutdown` completes; then stops accepting, lets
/// requests in flight finish for at most [`ServeConfig::drain_timeout`], and closes what is left.
///
/// Each request carries the peer's address as a `SocketAddr` extension and, with the `axum` feature, as axum's
/// `ConnectInfo<SocketAddr>`, so [`client_addr`](crate::core::client_addr), the rate limiter and axum's
/// `ConnectInfo` extractor find it. An axum `Router` is served as it is (no `into_make_service` needed).
///
/// Connections are handled as [`ServeConfig`] says:
/// - the first request's head must arrive within `header_read_timeout` of the accept (this deadline also covers
///   the bytes read to tell HTTP/1 from HTTP/2), and each later HTTP/1 head within `header_read_timeout` of its
///   first byte; a connection that misses it is closed;
/// - a connection with no request in flight for `idle_timeout` is closed (HTTP/2 gets a `GOAWAY`);
/// - HTTP/2 connections are pinged every `http2_keep_alive_interval` and closed when a ping goes unanswered for
///   `http2_keep_alive_timeout`; clients may open `http2_max_concurrent_streams` streams at once;
/// - at `max_connections`, a new connection closes the connection idle for longest (a keep-alive connection
///   between requests, or one that has not finished sending its first request); when every connection has a
///   request in flight, accepting pauses (new connections wait in the listen backlog) until one closes or goes
///   idle. A request in flight is never cut for the cap.
///
/// A request is in flight from its complete head until its response body ends or is dropped. Requests whose
/// bodies the client sends slowly are not timed here: put a timeout layer on the service for that. Upgraded
/// connections (WebSocket) leave the server's accounting once upgraded.
///
/// Metrics (through the `metrics` facade): [`OPEN_CONNECTIONS`], [`ACCEPTED_CONNECTIONS`],
/// [`CLOSED_CONNECTIONS`] by `reason`, [`ACCEPT_PAUSES`].
///
/// Accept errors (out of file descriptors, a connection reset before it was accepted) are logged and retried
/// after 50 ms; the function returns `Ok(())` after shutdown.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    config: &ServeConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()>
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's own header timeout is off: it starts only after the protocol sniff, and ours covers both.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(config.http2_keep_alive_interval)
        .keep_alive_timeout(config.http2_keep_alive_timeout)
        .max_concurrent_streams(config.http2_max_concurrent_streams);
    let builder = Arc::new(builder);

    let epoch = Instant::now();
    let capacity = Arc::new(Capacity::default());
    let registry = Arc::new(Registry {
        conns: Mutex::new(HashMap::new()),
    });
    let (draining, _) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut next_id: u64 = 0;
    let mut shutdown = pin!(shutdown);

    'accept: loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break 'accept,
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                log_join(joined);
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    if !is_connection_error(&e) {
                        // Out of file descriptors and the like: wait a little rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    continue;
                }
            },
        };
        metrics::counter!(ACCEPTED_CONNECTIONS).increment(1);

        // The cap: make room by closing the longest-idle connection, or wait until one closes or goes idle.
        loop {
            if registry.lock().len() < config.max_connections {
                break;
            }
            if registry.evict_longest_idle() {
                metrics::counter!(CLOSED_CONNECTIONS, "reason" => "evicted").increment(1);
                break;
            }
            metrics::counter!(ACCEPT_PAUSES).increment(1);
            tracing::debug!(
                max_connections = config.max_connections,
                "every connection is busy: accepting pauses"
            );
            capacity.waiting.store(true, Ordering::Relaxed);
            let stop = tokio::select! {
                biased;
                () = &mut shutdown => true,
                () = capacity.notify.notified() => false,
                Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                    log_join(joined);
                    false
                }
            };
            capacity.waiting.store(false, Ordering::Relaxed);
            if stop {
                break 'accept;
            }
        }

        let _ = stream.set_nodelay(true);
        let conn = Arc::new(Conn::new(
            epoch,
            Arc::clone(&capacity),
            config.header_read_timeout,
            config.idle_timeout,
        ));
        let id = next_id;
        next_id += 1;
        registry.lock().insert(id, Arc::clone(&conn));
        metrics::gauge!(OPEN_CONNECTIONS).increment(1.0);
        let registered = Registered {
            registry: Arc::clone(&registry),
            capacity: Arc::clone(&capacity),
            id,
        };
        let io = TokioIo::new(TrackedIo {
            stream,
            conn: Arc::clone(&conn),
        });
        let service = Tracked {
            inner: service.clone(),
            conn: Arc::clone(&conn),
            peer,
        };
        let builder = Arc::clone(&builder);
        let draining = draining.subscribe();
        tasks.spawn(async move {
            let _registered = registered;
            let connection = builder.serve_connection_with_upgrades(io, service);
            run_connection(connection, &conn, peer, draining).await;
        });
    }

    // Shutdown: stop accepting, ask every connection to finish, wait for at most the drain timeout.
    drop(listener);
    let _ = draining.send(true);
    let open = tasks.len();
    if open > 0 {
        tracing::info!(
            connections = open,
            drain_timeout = ?config.drain_timeout,
            "draining connections"
        );
    }
    let drained = tokio::time::timeout(config.drain_timeout, async {
        while let Some(joined) = tasks.join_next().await {
            log_join(joined);
        }
    })
    .await;
    if drained.is_err() {
        let left = tasks.len();
        tracing::warn!(
            connections = left,
            "drain deadline passed; closing the remaining connections"
        );
        metrics::counter!(CLOSED_CONNECTIONS, "reason" => "drain_timeout").increment(left as u64);
        tasks.shutdown().await;
    }
    Ok(())
}

/// Drives one connection until it ends, times out, is evicted, or drains.
async fn run_connection<F, E>(
    connection: F,
    conn: &Conn,
    peer: SocketAddr,
    mut draining: watch::Receiver<bool>,
) where
    F: Future<Output = Result<(), E>> + GracefulShutdown,
    E: std::fmt::Display,
{
    let mut connection = pin!(connection);
    let mut closing: Option<Instant> = None;
    let mut drain_started = *draining.borrow_and_update();
    if drain_started {
        connection.as_mut().shut_down();
    }
    loop {
        let wake = match closing {
            Some(deadline) => Due::Later(deadline),
            None => conn.due(),
        };
        let wake = match wake {
            Due::Later(at) => at,
            Due::HeaderTimeout => {
                tracing::debug!(%peer, "request head not received in time: closing");
                metrics::counter!(CLOSED_CONNECTIONS, "reason" => "header_timeout").increment(1);
                return;
            }
            Due::IdleTimeout => {
                tracing::trace!(%peer, "idle: closing");
                metrics::counter!(CLOSED_CONNECTIONS, "reason" => "idle_timeout").increment(1);
                connection.as_mut().shut_down();
                closing = Some(Instant::now() + CLOSE_GRACE);
                continue;
            }
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            () = tokio::time::sleep_until(wake) => {
                if closing.is_some() {
                    if conn.is_busy() {
                        // A request started before the close took effect: let it finish.
                        closing = Some(Instant::now() + CLOSE_GRACE);
                    } else {
                        return;
                    }
                }
            }
            () = conn.changed.notified(), if closing.is_none() => {}
            () = conn.evict.notified() => {
                if conn.awaiting_head() {
                    return;
                }
                connection.as_mut().shut_down();
                closing = Some(Instant::now() + CLOSE_GRACE);
            }
            _ = draining.changed(), if !drain_started => {
                drain_started = true;
                connection.as_mut().shut_down();
            }
        }
    }
}

/// hyper-util's connection types, as one thing to shut down gracefully.
trait GracefulShutdown {
    fn shut_down(self: std::pin::Pin<&mut Self>);
}

impl<I, S, E, B> GracefulShutdown for auto::UpgradeableConnection<'_, I, S, E>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    S::Future: 'static,
    S::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: Body + 'static,
    B::Error: Into<BoxError>,
    E: auto::HttpServerConnExec<S::Future, B>,
{
    fn shut_down(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

fn log_join(joined: Result<(), tokio::task::JoinError>) {
    if let Err(e) = joined
        && e.is_panic()
    {
        tracing::error!(error = %e, "a connection task panicked");
    }
}

/// Errors about one connection that the accept loop skips at once (as hyper's and axum's servers do).
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
