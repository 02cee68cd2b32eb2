//! `tower_kit::serve` over real sockets: header, idle and HTTP/2 keep-alive deadlines, the connection cap, the
//! HTTP/2 stream limit, graceful shutdown. Real time with short timeouts and generous upper bounds; lower bounds
//! only where a timer cannot fire early.
#![cfg(feature = "serve")]

use axum::{Router, extract::State, routing::get};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::{Semaphore, oneshot},
    task::JoinHandle,
    time::Instant,
};
use tower_kit::serve::{CLOSED_CONNECTIONS, ServeConfig, ServeConfigBuilder, bind, serve};

/// A server on an ephemeral port; dropping `stop` (or sending on it) starts its shutdown.
struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    fn start(config: ServeConfigBuilder, app: Router) -> Self {
        let config = config.build().unwrap();
        let listener = bind("127.0.0.1:0".parse().unwrap(), config.listen_backlog()).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            serve(listener, app, &config, async {
                let _ = stopped.await;
            })
            .await
        });
        Server {
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn shut_down(mut self) {
        drop(self.stop.take());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the server stops")
            .unwrap()
            .unwrap();
    }
}

/// `/health` answers at once, `/slow` after `ms` milliseconds (query `?ms=`), `/wait` holds until the test adds a
/// permit, `/hang` never answers.
#[derive(Clone)]
struct Gate {
    permits: Arc<Semaphore>,
    active: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            permits: Arc::new(Semaphore::new(0)),
            active: Arc::default(),
            most: Arc::default(),
        }
    }
}

fn app(gate: Gate) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                "slow"
            }),
        )
        .route(
            "/wait",
            get(|State(gate): State<Gate>| async move {
                let now = gate.active.fetch_add(1, Ordering::SeqCst) + 1;
                gate.most.fetch_max(now, Ordering::SeqCst);
                let _permit = gate.permits.acquire().await.unwrap();
                gate.active.fetch_sub(1, Ordering::SeqCst);
                "done"
            }),
        )
        .route("/hang", get(std::future::pending::<&'static str>))
        .with_state(gate)
}

fn config() -> ServeConfigBuilder {
    ServeConfig::builder()
        .header_read_timeout(Duration::from_secs(5))
        .idle_timeout(Duration::from_secs(10))
        .drain_timeout(Duration::from_secs(2))
}

/// Reads until the peer closes (EOF or reset); the time from `since`, or `None` if still open after `within`.
async fn closed_after(
    stream: &mut TcpStream,
    since: Instant,
    within: Duration,
) -> Option<Duration> {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(since + within, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(since.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// Reads one HTTP/1.1 response with a `content-length`; returns the status and the body.
async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_string();
            let status: u16 = head[9..12].parse().unwrap();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().unwrap())
                })
                .unwrap_or(0);
            while data.len() < end + 4 + len {
                let n = stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed mid-body");
                data.extend_from_slice(&buf[..n]);
            }
            let body = String::from_utf8_lossy(&data[end + 4..end + 4 + len]).to_string();
            return (status, body);
        }
        let n = stream.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "closed before a response: {:?}",
            String::from_utf8_lossy(&data)
        );
        data.extend_from_slice(&buf[..n]);
    }
}

async fn get_once(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    read_response(&mut s).await
}

fn counter(snapshot: &[(metrics_util::CompositeKey, DebugValue)], name: &str, reason: &str) -> u64 {
    snapshot
        .iter()
        .filter(|(k, _)| {
            k.key().name() == name
                && k.key()
                    .labels()
                    .any(|l| l.key() == "reason" && l.value() == reason)
        })
        .map(|(_, v)| match v {
            DebugValue::Counter(n) => *n,
            _ => 0,
        })
        .sum()
}

/// 30 sockets that never send a byte, against a cap of 20: each new one closes the longest-idle silent one, a new
/// connection's `/health` answers at once, and the silent sockets left are closed at the header deadline.
#[test]
fn silent_sockets_beyond_the_cap_are_closed_while_health_answers() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let header = Duration::from_millis(1500);
            let server = Server::start(
                config().header_read_timeout(header).max_connections(20),
                app(Gate::default()),
            );
            let mut silent = Vec::new();
            for _ in 0..30 {
                let opened = Instant::now();
                let s = TcpStream::connect(server.addr).await.unwrap();
                silent.push((opened, s));
            }
            let asked = Instant::now();
            let (status, body) =
                tokio::time::timeout(Duration::from_secs(5), get_once(server.addr, "/health"))
                    .await
                    .expect("/health answers while the silent sockets are held");
            assert_eq!((status, body.as_str()), (200, "ok"));
            assert!(
                asked.elapsed() < header,
                "answered before any header deadline: {:?}",
                asked.elapsed()
            );

            let mut at_deadline = 0;
            for (opened, s) in &mut silent {
                let closed = closed_after(s, *opened, Duration::from_secs(10))
                    .await
                    .expect("every silent socket is closed");
                if closed >= header {
                    at_deadline += 1;
                }
            }
            // 10 silent sockets made room for the last 10, one more for /health; 19 waited for the deadline.
            assert_eq!(at_deadline, 19);
            let snapshot: Vec<_> = snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .map(|(k, _, _, v)| (k, v))
                .collect();
            assert_eq!(counter(&snapshot, CLOSED_CONNECTIONS, "evicted"), 11);
            assert_eq!(counter(&snapshot, CLOSED_CONNECTIONS, "header_timeout"), 19);
            server.shut_down().await;
        })
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_request_head_is_closed_at_the_header_deadline() {
    let header = Duration::from_millis(700);
    let server = Server::start(config().header_read_timeout(header), app(Gate::default()));
    let opened = Instant::now();
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
    // One header byte every 100 ms: never a complete head.
    let (mut read, mut write) = s.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            if write.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut buf = Vec::new();
    let result = tokio::time::timeout(Duration::from_secs(8), read.read_to_end(&mut buf)).await;
    let closed = opened.elapsed();
    assert!(result.is_ok(), "the connection is closed");
    assert!(buf.is_empty(), "no response for a head that never ended");
    assert!(
        closed >= header && closed < Duration::from_secs(5),
        "closed at the header deadline, not before: {closed:?}"
    );
    trickle.abort();
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_second_head_on_a_keep_alive_connection_has_its_own_deadline() {
    let header = Duration::from_millis(700);
    let server = Server::start(
        config()
            .header_read_timeout(header)
            .idle_timeout(Duration::from_secs(30)),
        app(Gate::default()),
    );
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut s).await, (200, "ok".to_owned()));
    // Idle for longer than the header deadline: the idle timeout (30 s) applies, not the header one.
    tokio::time::sleep(header * 2).await;
    let started = Instant::now();
    s.write_all(b"GET /health HTTP/1.1\r\nhost").await.unwrap();
    let closed = closed_after(&mut s, started, Duration::from_secs(8))
        .await
        .expect("the half-sent head is cut at its deadline");
    assert!(closed >= header, "{closed:?}");
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_close_after_the_idle_timeout_but_busy_ones_do_not() {
    let idle = Duration::from_millis(700);
    let server = Server::start(config().idle_timeout(idle), app(Gate::default()));

    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut s).await, (200, "ok".to_owned()));
    let answered = Instant::now();
    let closed = closed_after(&mut s, answered, Duration::from_secs(8))
        .await
        .expect("the idle keep-alive connection is closed");
    assert!(
        closed >= idle / 2 && closed < Duration::from_secs(5),
        "{closed:?}"
    );

    // A handler that takes twice the idle timeout: the connection is busy, not idle, and gets its answer.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut s).await, (200, "slow".to_owned()));
    server.shut_down().await;
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const EMPTY_SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];

/// An HTTP/2 HEADERS frame for `GET path` on stream 1, END_STREAM | END_HEADERS.
fn headers_frame(path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x04, path.len() as u8];
    block.extend_from_slice(path.as_bytes());
    block.extend_from_slice(&[0x01, 1, b'x']);
    let len = block.len();
    let mut frame = vec![
        (len >> 16) as u8,
        (len >> 8) as u8,
        len as u8,
        1,
        0x5,
        0,
        0,
        0,
        1,
    ];
    frame.extend_from_slice(&block);
    frame
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_http2_connection_is_closed_at_the_header_deadline() {
    let header = Duration::from_millis(700);
    let server = Server::start(
        config()
            .header_read_timeout(header)
            .http2_keep_alive_interval(None),
        app(Gate::default()),
    );
    let opened = Instant::now();
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(PREFACE).await.unwrap();
    s.write_all(&EMPTY_SETTINGS).await.unwrap();
    let closed = closed_after(&mut s, opened, Duration::from_secs(8))
        .await
        .expect("an HTTP/2 connection that sends no request is closed");
    assert!(closed >= header, "{closed:?}");
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_peer_that_stops_answering_pings_is_closed() {
    let server = Server::start(
        config()
            .header_read_timeout(Duration::from_secs(30))
            .idle_timeout(Duration::from_secs(30))
            .http2_keep_alive_interval(Some(Duration::from_millis(200)))
            .http2_keep_alive_timeout(Duration::from_millis(300)),
        app(Gate::default()),
    );
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(PREFACE).await.unwrap();
    s.write_all(&EMPTY_SETTINGS).await.unwrap();
    s.write_all(&headers_frame("/hang")).await.unwrap();
    let sent = Instant::now();
    // The request is in flight, so no header or idle deadline applies; only the unanswered pings close it.
    let closed = closed_after(&mut s, sent, Duration::from_secs(10))
        .await
        .expect("a peer that never acknowledges a ping is closed");
    assert!(closed < Duration::from_secs(10), "{closed:?}");
    server.shut_down().await;

    // The same silent peer with pings off stays open: the pings are what closed it.
    let server = Server::start(
        config()
            .header_read_timeout(Duration::from_secs(30))
            .idle_timeout(Duration::from_secs(30))
            .http2_keep_alive_interval(None),
        app(Gate::default()),
    );
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(PREFACE).await.unwrap();
    s.write_all(&EMPTY_SETTINGS).await.unwrap();
    s.write_all(&headers_frame("/hang")).await.unwrap();
    let sent = Instant::now();
    assert_eq!(
        closed_after(&mut s, sent, Duration::from_secs(2)).await,
        None,
        "without pings nothing closes a connection with a request in flight"
    );
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_beyond_the_limit_wait_for_a_free_one() {
    let gate = Gate::default();
    let server = Server::start(config().http2_max_concurrent_streams(2), app(gate.clone()));
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    // One request first, so the client has the server's SETTINGS (the limit) before it opens three streams.
    let mut warm = sender.clone();
    warm.ready().await.unwrap();
    let req = http::Request::get("http://x/health")
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(warm.send_request(req).await.unwrap().status(), 200);
    let mut requests = Vec::new();
    for _ in 0..3 {
        let mut sender = sender.clone();
        requests.push(tokio::spawn(async move {
            sender.ready().await.unwrap();
            let req = http::Request::get("http://x/wait")
                .body(Empty::<Bytes>::new())
                .unwrap();
            let response = sender.send_request(req).await.unwrap();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, body)
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while gate.active.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "two streams reach the handler");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        gate.active.load(Ordering::SeqCst),
        2,
        "the third stream waits"
    );
    gate.permits.add_permits(3);
    for request in requests {
        let (status, body) = tokio::time::timeout(Duration::from_secs(5), request)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((status.as_u16(), &body[..]), (200, &b"done"[..]));
    }
    assert_eq!(gate.most.load(Ordering::SeqCst), 2);
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_after_the_idle_timeout() {
    let idle = Duration::from_millis(700);
    let server = Server::start(
        config()
            .header_read_timeout(Duration::from_millis(300))
            .idle_timeout(idle),
        app(Gate::default()),
    );
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    // PINGs and SETTINGS between streams do not count as a request head: only the idle timeout applies.
    sender.ready().await.unwrap();
    let req = http::Request::get("http://x/health")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();
    let answered = Instant::now();
    tokio::time::timeout(Duration::from_secs(8), conn)
        .await
        .expect("the server ends the idle HTTP/2 connection")
        .unwrap()
        .ok();
    let closed = answered.elapsed();
    assert!(closed >= idle / 2, "{closed:?}");
    server.shut_down().await;
}

/// Reads HTTP/2 frames until one of `kind` arrives; returns its flags, stream id and payload.
async fn next_frame(s: &mut TcpStream, kind: u8) -> (u8, u32, Vec<u8>) {
    loop {
        let mut head = [0u8; 9];
        s.read_exact(&mut head).await.unwrap();
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).await.unwrap();
        if head[3] == kind {
            return (head[4], stream, payload);
        }
    }
}

fn stream_headers(stream: u8, path: &str) -> Vec<u8> {
    let mut frame = headers_frame(path);
    frame[8] = stream;
    frame
}

/// A client that ignores the advertised limit gets `REFUSED_STREAM` for the stream beyond it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_beyond_the_limit_are_refused() {
    let server = Server::start(
        config().http2_max_concurrent_streams(2),
        app(Gate::default()),
    );
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(PREFACE).await.unwrap();
    s.write_all(&EMPTY_SETTINGS).await.unwrap();
    let reading = async {
        loop {
            let (flags, _, payload) = next_frame(&mut s, 4).await;
            if flags & 1 == 0 {
                return payload;
            }
        }
    };
    let settings = tokio::time::timeout(Duration::from_secs(5), reading)
        .await
        .unwrap();
    // SETTINGS_MAX_CONCURRENT_STREAMS (0x3) = 2 is advertised.
    assert!(
        settings.chunks(6).any(|p| p == [0, 3, 0, 0, 0, 2]),
        "{settings:?}"
    );
    s.write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0]).await.unwrap(); // SETTINGS ack
    for stream in [1, 3, 5] {
        s.write_all(&stream_headers(stream, "/hang")).await.unwrap();
    }
    let (_, stream, payload) = tokio::time::timeout(Duration::from_secs(5), next_frame(&mut s, 3))
        .await
        .expect("a RST_STREAM");
    assert_eq!(stream, 5);
    assert_eq!(payload, [0, 0, 0, 7], "REFUSED_STREAM");
    server.shut_down().await;
}

/// At the cap with every connection busy, nothing can be closed: accepting pauses, and the new connection is
/// served as soon as a request ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_with_every_connection_busy_accepting_pauses_until_one_frees() {
    let gate = Gate::default();
    let server = Server::start(config().max_connections(2), app(gate.clone()));
    let mut busy = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"GET /wait HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        busy.push(s);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while gate.active.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "both requests reach the handler");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let waiting = tokio::spawn(get_once(server.addr, "/health"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "the third connection waits in the backlog"
    );
    gate.permits.add_permits(1);
    let (status, body) = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("served once a request ended")
        .unwrap();
    assert_eq!((status, body.as_str()), (200, "ok"));
    for s in &mut busy {
        gate.permits.add_permits(1);
        let _ = tokio::time::timeout(Duration::from_secs(5), read_response(s)).await;
    }
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_requests_in_flight_finish_then_closes_what_is_left() {
    let server = Server::start(
        config().drain_timeout(Duration::from_millis(2500)),
        app(Gate::default()),
    );
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut hung = TcpStream::connect(server.addr).await.unwrap();
    hung.write_all(b"GET /hang HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let addr = server.addr;
    let stopping = Instant::now();
    let stopped = tokio::spawn(server.shut_down());
    // The slow request (1.5 s) finishes within the drain deadline.
    assert_eq!(read_response(&mut slow).await, (200, "slow".to_owned()));
    // The hung one is cut at the deadline.
    let closed = closed_after(&mut hung, stopping, Duration::from_secs(10))
        .await
        .expect("closed at the drain deadline");
    assert!(closed >= Duration::from_millis(2500), "{closed:?}");
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}

#[cfg(feature = "axum")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_and_layers_see_the_peer_address() {
    use axum::extract::{ConnectInfo, Request};
    let app = Router::new().route(
        "/peer",
        get(
            |ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request| async move {
                let seen = tower_kit::core::client_addr(req.extensions());
                format!("{peer} {}", seen.map(|a| a.to_string()).unwrap_or_default())
            },
        ),
    );
    let server = Server::start(config(), app);
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let local = s.local_addr().unwrap();
    s.write_all(b"GET /peer HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let (status, body) = read_response(&mut s).await;
    assert_eq!(status, 200);
    assert_eq!(body, format!("{local} {local}"));
    server.shut_down().await;
}
