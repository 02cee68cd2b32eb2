//! cache-proxy against misbehaving upstreams, over TCP: each test scripts a raw origin byte by byte (hung, silent,
//! malformed, contradictory framing), puts the proxy in front of it with short upstream timeouts, and speaks
//! HTTP/1.1 to the proxy as a client. Real time with generous bounds: every request must end within `BOUND`.

use bytes::Bytes;
use cache_proxy::{Proxy, UpstreamTimeouts, serve};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
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
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};
use tower_kit_cache::CacheLayer;

/// The longest any request in these tests may take before it counts as hung.
const BOUND: Duration = Duration::from_secs(20);

/// What the scripted origin does after reading a request head.
#[derive(Clone)]
enum Step {
    /// Writes these bytes.
    Write(Vec<u8>),
    /// Waits this long.
    Pause(Duration),
    /// Reads the request body up to and including this marker.
    ReadUntil(&'static [u8]),
    /// Never answers: reads until the proxy closes the connection.
    Hang,
    /// Closes the connection.
    Close,
}

use Step::*;

fn send(bytes: &str) -> Step {
    Write(bytes.as_bytes().to_vec())
}

struct Origin {
    addr: SocketAddr,
    /// Requests read, over all connections.
    requests: Arc<AtomicUsize>,
    /// Connections the proxy closed while the origin was hanging.
    closed_while_hanging: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An origin that answers request number `n` (from 0, over all connections) with `script(n)`, keeping connections
/// open between requests.
async fn origin(script: impl Fn(usize) -> Vec<Step> + Send + Sync + 'static) -> Origin {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let closed_while_hanging = Arc::new(AtomicUsize::new(0));
    let script = Arc::new(script);
    let (count, closed) = (Arc::clone(&requests), Arc::clone(&closed_while_hanging));
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let (script, count, closed) =
                (Arc::clone(&script), Arc::clone(&count), Arc::clone(&closed));
            connections.spawn(async move {
                let mut buf = Vec::new();
                loop {
                    if !read_until(&mut stream, &mut buf, b"\r\n\r\n").await {
                        return;
                    }
                    let n = count.fetch_add(1, Ordering::SeqCst);
                    for step in script(n) {
                        match step {
                            Write(bytes) => {
                                if stream.write_all(&bytes).await.is_err() {
                                    return;
                                }
                                let _ = stream.flush().await;
                            }
                            Pause(d) => tokio::time::sleep(d).await,
                            ReadUntil(marker) => {
                                if !read_until(&mut stream, &mut buf, marker).await {
                                    return;
                                }
                            }
                            Close => return,
                            Hang => {
                                let mut sink = [0u8; 1024];
                                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                                closed.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    Origin {
        addr,
        requests,
        closed_while_hanging,
        task,
    }
}

/// Reads until `buf` holds `marker`, then drops everything up to and including it. False at end of stream.
async fn read_until(stream: &mut TcpStream, buf: &mut Vec<u8>, marker: &[u8]) -> bool {
    loop {
        if let Some(i) = buf.windows(marker.len()).position(|w| w == marker) {
            buf.drain(..i + marker.len());
            return true;
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn short_timeouts() -> UpstreamTimeouts {
    UpstreamTimeouts {
        connect: Duration::from_secs(2),
        response: Duration::from_millis(500),
        body_idle: Duration::from_millis(500),
    }
}

/// The proxy, in the binary's pure-RFC setting, in front of `upstream`.
async fn proxy(upstream: SocketAddr, timeouts: UpstreamTimeouts) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let target: cache_proxy::Upstream = format!("http://{upstream}").parse().unwrap();
    let cache = CacheLayer::builder().cookie_bypass(false).build().unwrap();
    tokio::spawn(serve(
        listener,
        Proxy::with_timeouts(target, timeouts, &cache),
    ));
    addr
}

/// One GET on a fresh connection: the head, and the body or the error that ended it.
async fn get(proxy: SocketAddr, target: &str) -> (http::response::Parts, Result<Bytes, String>) {
    tokio::time::timeout(BOUND, async {
        let stream = TcpStream::connect(proxy).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::get(target)
            .header("host", "proxy.test")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let (parts, body) = sender.send_request(req).await.unwrap().into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| e.to_string());
        (parts, body)
    })
    .await
    .unwrap_or_else(|_| panic!("GET {target} through the proxy took more than {BOUND:?}"))
}

fn all(headers: &HeaderMap, name: &str) -> String {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Waits (real time, bounded) until `done` holds.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + BOUND;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_hung_origin_gets_a_504_and_its_connection_is_closed() {
    let up = origin(|_| vec![Hang]).await;
    let proxy = proxy(up.addr, short_timeouts()).await;
    let (res, body) = get(proxy, "/hung").await;
    assert_eq!(res.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(all(&res.headers, "cache-control"), "no-store");
    let body = body.unwrap();
    assert!(
        String::from_utf8_lossy(&body).contains("no response head within 500ms"),
        "{body:?}"
    );
    // The proxy gives up on the hung connection rather than leaving it open.
    eventually("the proxy closed its connection to the hung origin", || {
        up.closed_while_hanging.load(Ordering::SeqCst) == 1
    })
    .await;
}

#[tokio::test]
async fn a_refused_connection_is_a_502() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    // Timeouts far beyond `BOUND`: only a prompt 502 passes.
    let timeouts = UpstreamTimeouts {
        connect: Duration::from_secs(60),
        response: Duration::from_secs(60),
        body_idle: Duration::from_secs(60),
    };
    let proxy = proxy(addr, timeouts).await;
    let (res, body) = get(proxy, "/").await;
    assert_eq!(res.status, StatusCode::BAD_GATEWAY);
    assert!(
        String::from_utf8_lossy(&body.unwrap()).contains("could not be reached"),
        "the 502 names the cause"
    );
}

/// A listener whose accept queue is full: the kernel drops further SYNs, so connecting to it hangs.
async fn unaccepting_listener() -> (tokio::net::TcpListener, Vec<TcpStream>, SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::new();
    for _ in 0..16 {
        match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => held.push(stream),
            Ok(Err(e)) => panic!("connecting to the test listener failed: {e}"),
            Err(_) => return (listener, held, addr),
        }
    }
    panic!("the kernel accepted 16 connections on a listener with backlog 0");
}

#[tokio::test]
async fn an_origin_that_never_accepts_gets_a_504_after_the_connect_timeout() {
    let (_listener, _held, addr) = unaccepting_listener().await;
    let timeouts = UpstreamTimeouts {
        connect: Duration::from_millis(300),
        response: Duration::from_secs(60),
        body_idle: Duration::from_secs(60),
    };
    let proxy = proxy(addr, timeouts).await;
    let (res, body) = get(proxy, "/").await;
    assert_eq!(res.status, StatusCode::GATEWAY_TIMEOUT);
    let body = String::from_utf8_lossy(&body.unwrap()).into_owned();
    assert!(
        body.contains("no connection to the upstream within 300ms"),
        "{body}"
    );
}

#[tokio::test]
async fn a_stored_response_with_stale_if_error_answers_when_the_origin_hangs() {
    // Fresh for 1 s, then usable on error for 600 s.
    let up = origin(|n| match n {
        0 => vec![send(
            "HTTP/1.1 200 OK\r\ncache-control: max-age=1, stale-if-error=600\r\n\
             content-length: 10\r\n\r\nstill here",
        )],
        _ => vec![Hang],
    })
    .await;
    let proxy = proxy(up.addr, short_timeouts()).await;
    let (first, body) = get(proxy, "/sie").await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(all(&first.headers, "x-cache"), "MISS");
    assert_eq!(body.unwrap(), "still here");
    // Let the entry go stale (real time: this test runs over real sockets).
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let (stale, body) = get(proxy, "/sie").await;
    assert_eq!(stale.status, StatusCode::OK);
    assert_eq!(all(&stale.headers, "x-cache"), "STALE");
    assert!(all(&stale.headers, "cache-status").contains("detail=stale-if-error"));
    assert_eq!(body.unwrap(), "still here");
    assert_eq!(
        up.requests.load(Ordering::SeqCst),
        2,
        "the stale entry was validated first"
    );

    let (nothing, _) = get(proxy, "/nothing-stored").await;
    assert_eq!(nothing.status, StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test]
async fn an_origin_silent_after_its_head_gets_a_504() {
    let up = origin(|_| {
        vec![
            send("HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: 5\r\n\r\n"),
            Hang,
        ]
    })
    .await;
    let proxy = proxy(up.addr, short_timeouts()).await;
    let (res, body) = get(proxy, "/silent").await;
    assert_eq!(res.status, StatusCode::GATEWAY_TIMEOUT);
    let body = String::from_utf8_lossy(&body.unwrap()).into_owned();
    assert!(body.contains("body paused for more than 500ms"), "{body}");
}

#[tokio::test]
async fn a_body_that_stalls_midway_aborts_the_client_and_is_not_stored() {
    for (framing, first_part) in [
        ("content-length: 20\r\n", "0123456789"),
        ("transfer-encoding: chunked\r\n", "a\r\n0123456789\r\n"),
    ] {
        let up = origin(move |n| match n {
            0 => vec![
                send(&format!(
                    "HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\n{framing}\r\n{first_part}"
                )),
                Hang,
            ],
            _ => vec![send(
                "HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: 20\r\n\r\n\
                 01234567890123456789",
            )],
        })
        .await;
        let proxy = proxy(up.addr, short_timeouts()).await;
        let (res, body) = get(proxy, "/stall").await;
        assert_eq!(res.status, StatusCode::OK, "{framing}");
        assert!(
            body.is_err(),
            "{framing}: a body cut short by the origin ended cleanly: {body:?}"
        );
        eventually("the proxy closed the stalled upstream connection", || {
            up.closed_while_hanging.load(Ordering::SeqCst) == 1
        })
        .await;
        // Nothing of the cut-short body was stored: the next request goes to the origin.
        let (again, body) = get(proxy, "/stall").await;
        assert_eq!(all(&again.headers, "x-cache"), "MISS", "{framing}");
        assert_eq!(body.unwrap(), "01234567890123456789");
        let (hit, body) = get(proxy, "/stall").await;
        assert_eq!(all(&hit.headers, "x-cache"), "HIT");
        assert_eq!(body.unwrap(), "01234567890123456789");
        assert_eq!(up.requests.load(Ordering::SeqCst), 2);
    }
}

/// 49 bytes of body in three chunks.
const CHUNKED_49: &str =
    "10\r\n0123456789abcdef\r\n10\r\nghijklmnopqrstuv\r\n11\r\nwxyzABCDEFGHIJKLM\r\n0\r\n\r\n";
const BODY_49: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLM";

#[tokio::test]
async fn transfer_encoding_wins_over_content_length() {
    let up = origin(|_| {
        vec![send(&format!(
            "HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: 2\r\n\
             transfer-encoding: chunked\r\n\r\n{CHUNKED_49}"
        ))]
    })
    .await;
    let proxy = proxy(up.addr, short_timeouts()).await;
    let (res, body) = get(proxy, "/both").await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(body.unwrap(), BODY_49);
    let length = all(&res.headers, "content-length");
    assert!(
        length.is_empty() || length == "49",
        "content-length: {length}"
    );
    // The whole body was stored, and is served whole.
    let (hit, body) = get(proxy, "/both").await;
    assert_eq!(all(&hit.headers, "x-cache"), "HIT");
    assert_eq!(body.unwrap(), BODY_49);
    let length = all(&hit.headers, "content-length");
    assert!(
        length.is_empty() || length == "49",
        "content-length: {length}"
    );
}

#[tokio::test]
async fn a_head_answer_keeps_the_length_of_the_get() {
    let up = origin(|_| {
        vec![Write(
            b"HTTP/1.1 200 OK\r\ncache-control: no-store\r\ncontent-length: 1234\r\n\r\n".to_vec(),
        )]
    })
    .await;
    let proxy = proxy(up.addr, short_timeouts()).await;
    let (res, body) = tokio::time::timeout(BOUND, async {
        let stream = TcpStream::connect(proxy).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::head("/file")
            .header("host", "proxy.test")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let (parts, body) = sender.send_request(req).await.unwrap().into_parts();
        (parts, body.collect().await.unwrap().to_bytes())
    })
    .await
    .unwrap();
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(all(&res.headers, "content-length"), "1234");
    assert!(body.is_empty());
}

#[tokio::test]
async fn a_transfer_coding_the_proxy_cannot_decode_is_a_502() {
    let up = origin(|_| {
        vec![send(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        )]
    })
    .await;
    let proxy = proxy(up.addr, short_timeouts()).await;
    let (res, _) = get(proxy, "/gzip-coded").await;
    assert_eq!(res.status, StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn a_malformed_first_chunk_is_a_502() {
    // In the same packet as the head, and after a pause.
    for steps in [
        vec![send(
            "HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nabc\r\n",
        )],
        vec![
            send(
                "HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ntransfer-encoding: chunked\r\n\r\n",
            ),
            Pause(Duration::from_millis(200)),
            send("zz\r\nabc\r\n"),
        ],
    ] {
        let up = origin(move |_| steps.clone()).await;
        let proxy = proxy(up.addr, short_timeouts()).await;
        let (res, body) = get(proxy, "/bad-chunk").await;
        assert_eq!(res.status, StatusCode::BAD_GATEWAY);
        let body = String::from_utf8_lossy(&body.unwrap()).into_owned();
        assert!(body.contains("malformed"), "{body}");
    }
}

#[tokio::test]
async fn a_malformed_chunk_after_data_aborts_the_client_and_is_not_stored() {
    let up = origin(|n| match n {
        0 => vec![
            send(
                "HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ntransfer-encoding: chunked\r\n\r\n\
                 5\r\nhello\r\n",
            ),
            Pause(Duration::from_millis(200)),
            send("zz\r\nworld\r\n0\r\n\r\n"),
        ],
        _ => vec![send(
            "HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: 11\r\n\r\nhello world",
        )],
    })
    .await;
    let proxy = proxy(up.addr, short_timeouts()).await;
    let (res, body) = get(proxy, "/late-bad-chunk").await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(body.is_err(), "a malformed chunk ended cleanly: {body:?}");
    let (again, body) = get(proxy, "/late-bad-chunk").await;
    assert_eq!(all(&again.headers, "x-cache"), "MISS");
    assert_eq!(body.unwrap(), "hello world");
}

#[tokio::test]
async fn a_body_shorter_than_its_content_length_aborts_the_client() {
    let up = origin(|_| {
        vec![
            send("HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: 20\r\n\r\n"),
            send("0123456789"),
            Pause(Duration::from_millis(100)),
            // Ten bytes short.
            Close,
        ]
    })
    .await;
    let proxy = proxy(up.addr, short_timeouts()).await;
    let (res, body) = get(proxy, "/short").await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(body.is_err(), "a short body ended cleanly: {body:?}");
    let (again, _) = get(proxy, "/short").await;
    assert_eq!(
        all(&again.headers, "x-cache"),
        "MISS",
        "the short body was stored"
    );
}

#[tokio::test]
async fn a_slow_upload_is_not_cut_off_by_the_response_timeout() {
    let up = origin(|_| {
        vec![
            ReadUntil(b"0\r\n\r\n"),
            send("HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nreceived"),
        ]
    })
    .await;
    let proxy = proxy(up.addr, short_timeouts()).await;
    // A raw client: a chunked upload of six chunks, 200 ms apart (1.2 s in all, the response timeout is 500 ms).
    let reply = tokio::time::timeout(BOUND, async {
        let mut stream = TcpStream::connect(proxy).await.unwrap();
        stream
            .write_all(
                b"POST /upload HTTP/1.1\r\nhost: proxy.test\r\ntransfer-encoding: chunked\r\n\r\n",
            )
            .await
            .unwrap();
        for _ in 0..6 {
            stream.write_all(b"3\r\nabc\r\n").await.unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        stream.write_all(b"0\r\n\r\n").await.unwrap();
        let mut reply = Vec::new();
        let mut buf = [0u8; 1024];
        while !reply.ends_with(b"received") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "connection closed: {}",
                String::from_utf8_lossy(&reply)
            );
            reply.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(reply).unwrap()
    })
    .await
    .expect("the upload never got its answer");
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
}

#[test]
fn the_upstream_timeouts_are_flags_with_defaults() {
    use clap::Parser;
    let args =
        cache_proxy::Args::try_parse_from(["cache-proxy", "--upstream", "http://127.0.0.1:1"])
            .unwrap();
    assert_eq!(args.upstream_timeouts(), UpstreamTimeouts::default());
    assert_eq!(
        UpstreamTimeouts::default(),
        UpstreamTimeouts {
            connect: Duration::from_secs(5),
            response: Duration::from_secs(30),
            body_idle: Duration::from_secs(30),
        }
    );
    let args = cache_proxy::Args::try_parse_from([
        "cache-proxy",
        "--upstream",
        "http://127.0.0.1:1",
        "--upstream-connect-timeout",
        "500ms",
        "--upstream-timeout",
        "2s",
        "--upstream-body-timeout",
        "1m",
    ])
    .unwrap();
    assert_eq!(
        args.upstream_timeouts(),
        UpstreamTimeouts {
            connect: Duration::from_millis(500),
            response: Duration::from_secs(2),
            body_idle: Duration::from_secs(60),
        }
    );
    for bad in ["0s", "soon", "5h"] {
        let err = cache_proxy::Args::try_parse_from([
            "cache-proxy",
            "--upstream",
            "http://127.0.0.1:1",
            "--upstream-timeout",
            bad,
        ])
        .unwrap_err();
        assert!(
            err.to_string().contains("--upstream-timeout"),
            "{bad}: {err}"
        );
    }

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cache-proxy"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for text in [
        "--upstream-connect-timeout",
        "--upstream-timeout",
        "--upstream-body-timeout",
        "504 Gateway",
        "[default: 5s]",
        "[default: 30s]",
    ] {
        assert!(help.contains(text), "--help lacks {text}:\n{help}");
    }
}

/// Kills the proxy process it holds when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_binary_applies_its_upstream_timeout_flag() {
    let up = origin(|_| vec![Hang]).await;
    let listen = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let _proxy = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_cache-proxy"))
            .args(["--listen", &listen.to_string()])
            .args(["--upstream", &format!("http://{}", up.addr)])
            .args(["--upstream-timeout", "300ms"])
            .env("RUST_LOG", "error")
            .spawn()
            .unwrap(),
    );
    let deadline = tokio::time::Instant::now() + BOUND;
    while TcpStream::connect(listen).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the proxy never listened on {listen}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (res, body) = get(listen, "/hung").await;
    assert_eq!(res.status, StatusCode::GATEWAY_TIMEOUT);
    let body = String::from_utf8_lossy(&body.unwrap()).into_owned();
    assert!(body.contains("within 300ms"), "{body}");
}
