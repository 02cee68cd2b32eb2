//! cache-proxy end to end over TCP, one test per response rule of the cache: which statuses are stored (RFC 9111
//! §3, §4.2.2), how `Age` is read (§5.1), informational responses, and targeted cache control (RFC 9213). The
//! origin writes raw HTTP/1.1 bytes, so it can send what a hyper server cannot (a `103` before the final response,
//! repeated `Age` lines, unregistered status codes); the client is hyper's. Real time, with generous bounds.

mod common;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    task::JoinHandle,
};
use tower_kit_cache::{CacheLayerBuilder, MokaStore};

/// The origin's answer to the `n`th request (from 0) for a path: the raw bytes of one or more responses.
type Script = fn(path: &str, n: usize) -> String;

/// An origin that reads one request head per connection, answers it with `script`'s bytes and closes.
struct RawOrigin {
    addr: SocketAddr,
    calls: Arc<Mutex<HashMap<String, usize>>>,
    task: JoinHandle<()>,
}

impl Drop for RawOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawOrigin {
    async fn start(script: Script) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let calls: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let counts = Arc::clone(&calls);
        let task = tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let counts = Arc::clone(&counts);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let line = String::from_utf8_lossy(&head);
                    let path = line.split(' ').nth(1).unwrap_or("/").to_owned();
                    let n = {
                        let mut counts = counts.lock().unwrap();
                        let n = counts.entry(path.clone()).or_insert(0);
                        *n += 1;
                        *n - 1
                    };
                    let _ = stream.write_all(script(&path, n).as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Self { addr, calls, task }
    }

    fn calls(&self, path: &str) -> usize {
        self.calls.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

/// A final response: status line, the given header lines, and `body` with its length; the connection closes.
fn response(status: &str, headers: &[&str], body: &str) -> String {
    let mut out = format!("HTTP/1.1 {status}\r\n");
    for h in headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ));
    out
}

/// The proxy in front of `origin`, with the cache `configure` makes from the proxy's pure-RFC setting.
async fn proxy(
    origin: &RawOrigin,
    configure: impl FnOnce(CacheLayerBuilder<MokaStore>) -> CacheLayerBuilder<MokaStore>,
) -> SocketAddr {
    common::proxy_with(origin.addr, configure).await
}

struct Got {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Got {
    /// Every field line of `name`, joined with ` | `.
    fn all(&self, name: &str) -> String {
        common::all(&self.headers, name)
    }

    fn age(&self) -> u64 {
        self.all("age").parse().unwrap()
    }
}

/// `GET path` through the proxy with `headers`, within 20 s.
async fn get(proxy: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Got {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::get(format!("http://{proxy}{path}"));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let fetch = async {
        let res = client
            .request(req.body(Empty::new()).unwrap())
            .await
            .unwrap();
        let (parts, body) = res.into_parts();
        Got {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    };
    tokio::time::timeout(Duration::from_secs(20), fetch)
        .await
        .expect("the proxy answered within 20 s")
}

/// RFC 9111 §3, §4.2.2, §5.2.2.3: any final status with explicit freshness is stored (an error, an unregistered
/// code); without it only heuristically cacheable statuses get a default TTL; `must-understand` keeps statuses the
/// cache does not know out; a stored error is never served stale.
#[tokio::test]
async fn statuses_rfc9111_3_any_final_status_with_explicit_freshness_is_stored() {
    let origin = RawOrigin::start(|path, n| match path {
        "/500" => response(
            "500 Internal Server Error",
            &["cache-control: max-age=60"],
            "oops",
        ),
        "/599" => response("599 Whatever", &["cache-control: s-maxage=60"], "odd"),
        "/410" => response("410 Gone", &["cache-control: max-age=60"], "gone"),
        "/503-default" => response("503 Service Unavailable", &[], "down"),
        "/404-default" => response("404 Not Found", &[], "none"),
        "/599-must-understand" => response(
            "599 Whatever",
            &["cache-control: must-understand, max-age=60"],
            "odd",
        ),
        "/502-stale" if n == 0 => response("502 Bad Gateway", &["cache-control: max-age=1"], "bad"),
        "/200-stale" if n == 0 => response("200 OK", &["cache-control: max-age=1"], "ok"),
        _ => response("200 OK", &["cache-control: max-age=60"], "fresh"),
    })
    .await;
    let proxy = proxy(&origin, |b| {
        b.default_ttl("/", tower_kit_cache::TtlTier::Minute)
            .stale_while_revalidate(Duration::from_secs(600))
    })
    .await;

    for (path, status, body) in [
        ("/500", 500, "oops"),
        ("/599", 599, "odd"),
        ("/410", 410, "gone"),
    ] {
        let first = get(proxy, path, &[]).await;
        assert_eq!(
            (first.status, first.all("x-cache")),
            (status, "MISS".into()),
            "{path}"
        );
        let second = get(proxy, path, &[]).await;
        assert_eq!(second.status, status, "{path}");
        assert_eq!(second.all("x-cache"), "HIT", "{path} is stored");
        assert_eq!(second.body, body, "{path}");
        assert_eq!(origin.calls(path), 1, "{path}");
    }
    // Without explicit freshness: the default TTL only for a heuristically cacheable status.
    for (path, x_cache, calls) in [("/503-default", "MISS", 2), ("/404-default", "HIT", 1)] {
        get(proxy, path, &[]).await;
        let second = get(proxy, path, &[]).await;
        assert_eq!(second.all("x-cache"), x_cache, "{path}");
        assert_eq!(origin.calls(path), calls, "{path}");
    }
    get(proxy, "/599-must-understand", &[]).await;
    let second = get(proxy, "/599-must-understand", &[]).await;
    assert_eq!(second.all("x-cache"), "MISS");
    assert_eq!(origin.calls("/599-must-understand"), 2);

    // Once stale, a stored 502 is fetched again; a 200 may be served stale while it revalidates.
    get(proxy, "/502-stale", &[]).await;
    get(proxy, "/200-stale", &[]).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let error = get(proxy, "/502-stale", &[]).await;
    assert_eq!((error.status, error.all("x-cache")), (200, "MISS".into()));
    assert_eq!(error.body, "fresh");
    let ok = get(proxy, "/200-stale", &[]).await;
    assert_eq!((ok.status, ok.all("x-cache")), (200, "STALE".into()));
    assert_eq!(ok.body, "ok");
}

/// RFC 9111 §5.1: the first member of a list or of several field lines; a negative, fractional or non-numeric
/// `Age` is ignored; values of 2^31 or more count as 2^31.
#[tokio::test]
async fn age_rfc9111_5_1_first_member_invalid_ignored_capped() {
    let origin = RawOrigin::start(|path, _| {
        let age: &[&str] = match path {
            "/list" => &["age: 10, 40"],
            "/lines" => &["age: 10", "age: 40"],
            "/negative" => &["age: -30"],
            "/fraction" => &["age: 30.5"],
            "/word" => &["age: thirty, 40"],
            _ => &["age: 4294967296", "etag: \"v1\""],
        };
        let mut headers = vec!["cache-control: max-age=60"];
        headers.extend_from_slice(age);
        response("200 OK", &headers, "aged")
    })
    .await;
    let proxy = proxy(&origin, |b| b).await;
    for (path, age) in [
        ("/list", 10),
        ("/lines", 10),
        ("/negative", 0),
        ("/fraction", 0),
        ("/word", 0),
    ] {
        get(proxy, path, &[]).await;
        let hit = get(proxy, path, &[]).await;
        assert_eq!(hit.all("x-cache"), "HIT", "{path}");
        let got = hit.age();
        assert!(
            (age..age + 3).contains(&got),
            "{path}: Age {got}, want {age}"
        );
        let ttl: i64 = hit
            .all("cache-status")
            .rsplit("ttl=")
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            ttl <= 60 - age as i64 && ttl > 57 - age as i64,
            "{path}: ttl {ttl}"
        );
    }
    // Stale on arrival (2^31 s old) but stored to be validated: `max-stale` shows the capped age.
    get(proxy, "/huge", &[]).await;
    let stale = get(proxy, "/huge", &[("cache-control", "max-stale")]).await;
    assert_eq!(stale.all("x-cache"), "STALE");
    let got = stale.age();
    assert!((1 << 31..(1 << 31) + 3).contains(&got), "Age {got}");
}

/// Informational responses are never stored: the origin's `103` (with `max-age`) is skipped, the final
/// response decides, and the client gets the final response only.
#[tokio::test]
async fn informational_responses_are_never_stored_or_forwarded() {
    let origin = RawOrigin::start(|path, _| {
        let early = "HTTP/1.1 103 Early Hints\r\nlink: </s.css>; rel=preload\r\ncache-control: max-age=60\r\n\r\n";
        let last = match path {
            "/no-store" => response("200 OK", &["cache-control: no-store"], "final"),
            _ => response("200 OK", &["cache-control: max-age=60"], "final"),
        };
        format!("{early}{last}")
    })
    .await;
    let proxy = proxy(&origin, |b| b).await;
    for _ in 0..2 {
        let got = get(proxy, "/no-store", &[]).await;
        assert_eq!((got.status, got.body.as_ref()), (200, &b"final"[..]));
        assert_eq!(got.all("link"), "", "the 103's fields stay out");
        assert_eq!(got.all("x-cache"), "MISS");
    }
    assert_eq!(
        origin.calls("/no-store"),
        2,
        "the 103's max-age stored nothing"
    );
    get(proxy, "/stored", &[]).await;
    let hit = get(proxy, "/stored", &[]).await;
    assert_eq!((hit.status, hit.all("x-cache")), (200, "HIT".into()));
    assert_eq!(
        (hit.body.as_ref(), hit.all("link")),
        (&b"final"[..], String::new())
    );
}

/// RFC 9213: a valid `CDN-Cache-Control` (or a configured field, in precedence order) replaces `Cache-Control`
/// and `Expires` for the cache; `Cache-Control` and the targeted fields still reach the client; an invalid field
/// is ignored as a whole.
#[tokio::test]
async fn targeted_cache_control_rfc9213_replaces_cache_control_for_this_cache() {
    let origin = RawOrigin::start(|path, _| {
        let headers: &[&str] = match path {
            "/cdn" => &["cache-control: no-store", "cdn-cache-control: max-age=60"],
            "/cdn-no-store" => &[
                "cache-control: public, max-age=60",
                "cdn-cache-control: no-store",
            ],
            "/expires" => &[
                "expires: Thu, 01 Jan 2099 00:00:00 GMT",
                "cdn-cache-control: no-cache",
            ],
            "/acme" => &[
                "cache-control: no-store",
                "cdn-cache-control: no-store",
                "acme-cache-control: max-age=60",
            ],
            // Upper case keys are no Structured Field: the field is ignored, Cache-Control decides.
            _ => &[
                "cache-control: max-age=60",
                "cdn-cache-control: no-store, Private",
            ],
        };
        response("200 OK", headers, "targeted")
    })
    .await;
    let acme = HeaderName::from_static("acme-cache-control");
    let cdn = HeaderName::from_static("cdn-cache-control");
    let proxy = proxy(&origin, |b| b.targeted_cache_control([acme, cdn])).await;
    for (path, x_cache, calls) in [
        ("/cdn", "HIT", 1),
        ("/cdn-no-store", "MISS", 2),
        ("/expires", "MISS", 2),
        ("/acme", "HIT", 1),
        ("/invalid", "HIT", 1),
    ] {
        get(proxy, path, &[]).await;
        let second = get(proxy, path, &[]).await;
        assert_eq!(second.all("x-cache"), x_cache, "{path}");
        assert_eq!(origin.calls(path), calls, "{path}");
    }
    let hit = get(proxy, "/cdn", &[]).await;
    assert_eq!(
        hit.all("cache-control"),
        "no-store",
        "Cache-Control reaches clients unchanged"
    );
    assert_eq!(
        hit.all("cdn-cache-control"),
        "max-age=60",
        "targeted fields are forwarded"
    );
    let hit = get(proxy, "/acme", &[]).await;
    assert_eq!(hit.all("acme-cache-control"), "max-age=60");
}
