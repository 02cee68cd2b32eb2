//! cache-proxy end to end over TCP: a real upstream (hyper) started by each test, the proxy in front of it, and a
//! client that speaks HTTP/1.1 to the proxy.

mod common;

use bytes::Bytes;
use common::{Got, all, proxy};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use tokio::{net::TcpListener, task::JoinHandle};

/// What the upstream saw: method, target, headers, per request.
type Seen = Arc<Mutex<Vec<(String, String, HeaderMap)>>>;

struct Upstream {
    addr: SocketAddr,
    seen: Seen,
    task: JoinHandle<()>,
}

impl Upstream {
    fn calls(&self, target: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, t, _)| t == target)
            .count()
    }

    fn last(&self, target: &str) -> (String, HeaderMap) {
        let seen = self.seen.lock().unwrap();
        let (m, _, h) = seen.iter().rev().find(|(_, t, _)| t == target).unwrap();
        (m.clone(), h.clone())
    }
}

fn answer(path: &str, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let b = Response::builder();
    let (b, body): (_, &'static str) = match path {
        "/echo" => (
            b.header("cache-control", "no-store")
                .header("x-end", "1")
                .header("x-multi", "a")
                .header("x-multi", "b")
                .header("connection", "x-hop-res")
                .header("x-hop-res", "secret")
                .header("keep-alive", "timeout=5")
                .header("proxy-authenticate", "Basic realm=up")
                .header("trailer", "x-sum")
                .header("upgrade", "h2c"),
            "echo",
        ),
        p if p.starts_with("/status/") => {
            let code: u16 = p["/status/".len()..].parse().unwrap();
            (
                b.status(code).header("x-status", code.to_string()),
                "status",
            )
        }
        "/cached" => {
            if req
                .headers()
                .get("if-none-match")
                .is_some_and(|v| v == "\"v1\"")
            {
                (
                    b.status(304)
                        .header("etag", "\"v1\"")
                        .header("cache-control", "max-age=60"),
                    "",
                )
            } else {
                (
                    b.header("etag", "\"v1\"")
                        .header("cache-control", "max-age=60"),
                    "cached body",
                )
            }
        }
        "/private" => (b.header("cache-control", "private, max-age=60"), "mine"),
        "/sie" => (
            b.header("cache-control", "max-age=1, stale-if-error=600"),
            "still here",
        ),
        _ => (b.header("cache-control", "no-store"), "ok"),
    };
    b.body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

/// An upstream without automatic `Date` headers; `/slow` answers after 5 s. Aborting `task` closes every
/// connection it has open.
async fn upstream() -> Upstream {
    const SLOW: Duration = Duration::from_secs(5);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let log = Arc::clone(&seen);
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let log = Arc::clone(&log);
            connections.spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let log = Arc::clone(&log);
                    async move {
                        let target = req.uri().path_and_query().unwrap().as_str().to_owned();
                        log.lock().unwrap().push((
                            req.method().to_string(),
                            target,
                            req.headers().clone(),
                        ));
                        let path = req.uri().path().to_owned();
                        if path.starts_with("/slow") {
                            tokio::time::sleep(SLOW).await;
                        }
                        let res = answer(&path, &req);
                        // Read the request body to its end (POSTs).
                        let _ = req.into_body().collect().await;
                        Ok::<_, Infallible>(res)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .auto_date_header(false)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Upstream { addr, seen, task }
}

/// One request on a fresh HTTP/1.1 connection, headers exactly as given: the response and its body.
async fn fetch(
    proxy: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> (Got, Bytes) {
    let got = common::fetch(proxy, method, target, headers, body).await;
    let body = got.body.clone();
    (got, body)
}

#[tokio::test]
async fn end_to_end_headers_pass_and_hop_by_hop_headers_are_stripped_both_ways() {
    let up = upstream().await;
    let proxy = proxy(up.addr).await;
    let (res, body) = fetch(
        proxy,
        "PUT",
        "/echo?b=2&a=1&a=3",
        &[
            ("x-end-req", "1"),
            ("x-multi-req", "a"),
            ("x-multi-req", "b"),
            ("content-type", "text/plain"),
            ("connection", "x-hop-req"),
            ("x-hop-req", "secret"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x-sum"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic abc"),
            ("proxy-connection", "keep-alive"),
        ],
        "request body",
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(body, "echo");

    let (method, seen) = up.last("/echo?b=2&a=1&a=3");
    assert_eq!(method, "PUT", "method and target pass unchanged");
    assert_eq!(all(&seen, "x-end-req"), "1");
    assert_eq!(all(&seen, "x-multi-req"), "a | b");
    assert_eq!(all(&seen, "content-type"), "text/plain");
    assert_eq!(all(&seen, "content-length"), "12");
    assert_eq!(all(&seen, "x-forwarded-host"), "proxy.test");
    assert_eq!(all(&seen, "via"), "1.1 cache-proxy");
    for hop in [
        "x-hop-req",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
    ] {
        assert_eq!(all(&seen, hop), "", "{hop} reached the upstream");
    }
    assert!(!all(&seen, "connection").contains("x-hop-req"));

    let h = &res.headers;
    assert_eq!(all(h, "x-end"), "1");
    assert_eq!(all(h, "x-multi"), "a | b");
    assert_eq!(all(h, "cache-control"), "no-store");
    assert_eq!(all(h, "via"), "1.1 cache-proxy");
    assert!(
        httpdate::parse_http_date(&all(h, "date")).is_ok(),
        "Date added to an answer without one"
    );
    for hop in [
        "x-hop-res",
        "keep-alive",
        "proxy-authenticate",
        "trailer",
        "upgrade",
    ] {
        assert_eq!(all(h, hop), "", "{hop} reached the client");
    }
    assert!(!all(h, "connection").contains("x-hop-res"));
    up.task.abort();
}

#[tokio::test]
async fn unusual_statuses_pass_through() {
    let up = upstream().await;
    let proxy = proxy(up.addr).await;
    for code in [299u16, 418, 451, 599, 207, 404, 503] {
        let (res, body) = fetch(proxy, "GET", &format!("/status/{code}"), &[], "").await;
        assert_eq!(res.status.as_u16(), code);
        assert_eq!(all(&res.headers, "x-status"), code.to_string());
        assert_eq!(body, "status", "{code}");
    }
    up.task.abort();
}

#[tokio::test]
async fn a_slow_upstream_response_does_not_hold_up_others() {
    let up = upstream().await;
    let proxy = proxy(up.addr).await;
    let start = Instant::now();
    let slow: Vec<_> = (0..3)
        .map(|i| {
            tokio::spawn(fetch(
                proxy,
                "GET",
                Box::leak(format!("/slow/{i}").into_boxed_str()),
                &[],
                "",
            ))
        })
        .collect();
    // Let the slow requests reach the upstream first.
    let deadline = Instant::now() + Duration::from_secs(4);
    while (0..3).any(|i| up.calls(&format!("/slow/{i}")) == 0) {
        assert!(
            Instant::now() < deadline,
            "the slow requests never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let fast: Vec<_> = (0..30)
        .map(|i| {
            tokio::spawn(async move {
                fetch(
                    proxy,
                    "GET",
                    Box::leak(format!("/fast/{i}").into_boxed_str()),
                    &[],
                    "",
                )
                .await;
                Instant::now()
            })
        })
        .collect();
    let mut last_fast = start;
    for f in fast {
        last_fast = last_fast.max(f.await.unwrap());
    }
    assert!(
        slow.iter().all(|s| !s.is_finished()),
        "the fast requests finished while the slow ones were still in flight"
    );
    for s in slow {
        let (res, _) = s.await.unwrap();
        assert_eq!(res.status, StatusCode::OK);
    }
    let all_slow = start.elapsed();
    // The slow ones take 5 s upstream: fast requests queued behind one would take longer.
    assert!(
        last_fast.duration_since(start) < Duration::from_secs(4),
        "fast requests waited for the slow one: {:?}",
        last_fast.duration_since(start)
    );
    // At once, about 5 s; two after each other would take 10 s, all three 15 s.
    assert!(
        all_slow < Duration::from_secs(9),
        "three slow requests ran one after the other: {all_slow:?}"
    );
    up.task.abort();
}

#[tokio::test]
async fn caches_per_rfc_9111() {
    let up = upstream().await;
    let proxy = proxy(up.addr).await;
    let (first, body) = fetch(proxy, "GET", "/cached", &[], "").await;
    assert_eq!(all(&first.headers, "x-cache"), "MISS");
    assert_eq!(body, "cached body");
    // A request with a Cookie is served from the cache too: pure RFC 9111.
    let (hit, body) = fetch(proxy, "GET", "/cached", &[("cookie", "a=1")], "").await;
    assert_eq!(all(&hit.headers, "x-cache"), "HIT");
    assert!(all(&hit.headers, "cache-status").starts_with("tower-kit; hit; ttl="));
    assert!(all(&hit.headers, "age").parse::<u64>().is_ok());
    assert_eq!(body, "cached body");
    // A conditional request is answered 304 by the cache.
    let (nm, body) = fetch(
        proxy,
        "GET",
        "/cached",
        &[("if-none-match", "W/\"v1\"")],
        "",
    )
    .await;
    assert_eq!(nm.status, StatusCode::NOT_MODIFIED);
    assert_eq!(all(&nm.headers, "etag"), "\"v1\"");
    assert!(body.is_empty());
    // HEAD from the stored GET.
    let (head, body) = fetch(proxy, "HEAD", "/cached", &[], "").await;
    assert_eq!(all(&head.headers, "x-cache"), "HIT");
    assert!(body.is_empty());
    assert_eq!(up.calls("/cached"), 1);
    // `Cache-Control: no-cache` from the client: revalidated with the cache's validator, 304 from the origin.
    let (rv, body) = fetch(
        proxy,
        "GET",
        "/cached",
        &[("cache-control", "no-cache")],
        "",
    )
    .await;
    assert_eq!(all(&rv.headers, "x-cache"), "REVALIDATED");
    assert_eq!(body, "cached body");
    assert_eq!(all(&up.last("/cached").1, "if-none-match"), "\"v1\"");
    // A successful POST invalidates the URI.
    let (post, _) = fetch(
        proxy,
        "POST",
        "/cached",
        &[("content-type", "text/plain")],
        "x",
    )
    .await;
    assert_eq!(post.status, StatusCode::OK);
    let (after, _) = fetch(proxy, "GET", "/cached", &[], "").await;
    assert_eq!(all(&after.headers, "x-cache"), "MISS");
    assert_eq!(up.calls("/cached"), 4);
    // Never stored: no-store and private.
    for target in ["/echo", "/private"] {
        fetch(proxy, "GET", target, &[], "").await;
        let (again, _) = fetch(proxy, "GET", target, &[], "").await;
        assert_eq!(all(&again.headers, "x-cache"), "MISS", "{target}");
        assert_eq!(up.calls(target), 2, "{target}");
    }
    up.task.abort();
}

#[tokio::test]
async fn a_dead_upstream_is_a_502_unless_stale_if_error_allows_the_stored_answer() {
    let up = upstream().await;
    let proxy = proxy(up.addr).await;
    let (res, _) = fetch(proxy, "GET", "/sie", &[], "").await;
    assert_eq!(all(&res.headers, "x-cache"), "MISS");
    up.task.abort();
    let _ = up.task.await;
    // Let the entry go stale (max-age=1, real time: this test runs over real sockets).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (stale, body) = fetch(proxy, "GET", "/sie", &[], "").await;
    assert_eq!(stale.status, StatusCode::OK);
    assert_eq!(all(&stale.headers, "x-cache"), "STALE");
    assert!(all(&stale.headers, "cache-status").contains("detail=stale-if-error"));
    assert_eq!(body, "still here");
    let (down, _) = fetch(proxy, "GET", "/nothing-stored", &[], "").await;
    assert_eq!(down.status, StatusCode::BAD_GATEWAY);
}

#[test]
fn upstream_urls_are_checked() {
    assert!(
        "http://127.0.0.1:3000"
            .parse::<cache_proxy::Upstream>()
            .is_ok()
    );
    assert!(
        "http://127.0.0.1:3000/base/"
            .parse::<cache_proxy::Upstream>()
            .is_ok()
    );
    let err = "https://example.com"
        .parse::<cache_proxy::Upstream>()
        .unwrap_err();
    assert!(err.contains("plain http"), "{err}");
    assert!("127.0.0.1:3000".parse::<cache_proxy::Upstream>().is_err());
    assert!("http://h/?q=1".parse::<cache_proxy::Upstream>().is_err());
}

#[test]
fn help_documents_the_flags() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cache-proxy"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--listen",
        "--upstream",
        "--max-bytes",
        "--max-entry-size",
        "plain http",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}:\n{text}");
    }
}
