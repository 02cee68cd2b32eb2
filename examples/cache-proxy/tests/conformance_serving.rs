//! cache-proxy end to end over TCP, one test per serving rule of the cache: ranges (RFC 9110 §14, RFC 9111
//! §3.3–3.4), a disconnected origin (RFC 9111 §4.2.4) and HEAD (RFC 9111 §4.3.5). The origin is a hyper server
//! whose answers the test decides; the client is hyper's. Real time, with generous bounds.

mod common;

use bytes::Bytes;
use common::{Got, proxy};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use tokio::{net::TcpListener, task::JoinHandle};

/// How the origin answers a request (method, path, headers): status, headers, body.
type Answer =
    Arc<dyn Fn(&str, &str, &HeaderMap) -> (u16, Vec<(&'static str, String)>, String) + Send + Sync>;

/// A hyper origin that counts requests per method and path. Dropping it (or `stop`) closes its listener and
/// every connection it has open.
struct Origin {
    addr: SocketAddr,
    calls: Arc<Mutex<Vec<(String, String)>>>,
    task: JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Origin {
    async fn start(answer: Answer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let calls: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let log = Arc::clone(&calls);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (log, answer) = (Arc::clone(&log), Arc::clone(&answer));
                connections.spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (method, path) =
                            (req.method().to_string(), req.uri().path().to_owned());
                        log.lock().unwrap().push((method.clone(), path.clone()));
                        let (status, headers, body) = answer(&method, &path, req.headers());
                        let mut b = Response::builder().status(status);
                        for (n, v) in headers {
                            b = b.header(n, v);
                        }
                        let res = b.body(Full::new(Bytes::from(body))).unwrap();
                        async move { Ok::<_, Infallible>(res) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, calls, task }
    }

    fn calls(&self, method: &str, path: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, p)| m == method && p == path)
            .count()
    }

    /// Closes the listener and every open connection: the origin can no longer be reached.
    async fn stop(self) {
        self.task.abort();
        let _ = (&mut { self }.task).await;
    }
}

/// One request on a fresh HTTP/1.1 connection.
async fn fetch(proxy: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Got {
    common::fetch(proxy, method, path, headers, "").await
}

const DIGITS: &str = "0123456789";

/// The origin of the range test: `/whole` always answers the whole `200`; `/parts` answers a `bytes=a-b` range
/// with a `206` of those bytes, else the whole `200`. Both with the strong ETag `"v1"`.
fn ranges_origin() -> Answer {
    Arc::new(|_, path, headers| {
        let mut h = vec![
            ("cache-control", "max-age=60".to_owned()),
            ("etag", "\"v1\"".to_owned()),
        ];
        let range = headers
            .get("range")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("bytes="))
            .and_then(|v| v.split_once('-'))
            .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)));
        match (path, range) {
            ("/parts", Some((first, last))) => {
                h.push(("content-range", format!("bytes {first}-{last}/10")));
                (206, h, DIGITS[first..=last].to_owned())
            }
            _ => (200, h, DIGITS.to_owned()),
        }
    })
}

#[tokio::test]
async fn ranges_rfc9110_14_rfc9111_3_3_served_from_stored_responses() {
    let origin = Origin::start(ranges_origin()).await;
    let proxy = proxy(origin.addr).await;

    // A stored complete 200 answers ranges itself.
    let first = fetch(proxy, "GET", "/whole", &[]).await;
    assert_eq!(first.all("x-cache"), "MISS");
    let part = fetch(proxy, "GET", "/whole", &[("range", "bytes=2-4")]).await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.body, "234");
    assert_eq!(part.all("content-range"), "bytes 2-4/10");
    assert_eq!(part.all("content-length"), "3");
    assert_eq!(part.all("accept-ranges"), "bytes");
    assert_eq!(part.all("x-cache"), "HIT");
    let suffix = fetch(proxy, "GET", "/whole", &[("range", "bytes=-3")]).await;
    assert_eq!(
        (suffix.status, &suffix.body[..]),
        (StatusCode::PARTIAL_CONTENT, &b"789"[..])
    );
    let none = fetch(proxy, "GET", "/whole", &[("range", "bytes=10-")]).await;
    assert_eq!(none.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(none.all("content-range"), "bytes */10");
    assert!(none.body.is_empty());
    let several = fetch(proxy, "GET", "/whole", &[("range", "bytes=0-1,4-5")]).await;
    assert_eq!(
        (several.status, &several.body[..]),
        (StatusCode::OK, DIGITS.as_bytes())
    );
    let strong = fetch(
        proxy,
        "GET",
        "/whole",
        &[("range", "bytes=0-1"), ("if-range", "\"v1\"")],
    )
    .await;
    assert_eq!(
        (strong.status, &strong.body[..]),
        (StatusCode::PARTIAL_CONTENT, &b"01"[..])
    );
    let changed = fetch(
        proxy,
        "GET",
        "/whole",
        &[("range", "bytes=0-1"), ("if-range", "\"v0\"")],
    )
    .await;
    assert_eq!(
        (changed.status, &changed.body[..]),
        (StatusCode::OK, DIGITS.as_bytes())
    );
    assert_eq!(origin.calls("GET", "/whole"), 1);

    // A 206 from the origin is stored and answers ranges inside it; a second part is combined with it.
    let first = fetch(proxy, "GET", "/parts", &[("range", "bytes=0-4")]).await;
    assert_eq!(
        (first.status, &first.body[..]),
        (StatusCode::PARTIAL_CONTENT, &b"01234"[..])
    );
    assert_eq!(first.all("x-cache"), "MISS");
    let inside = fetch(proxy, "GET", "/parts", &[("range", "bytes=1-3")]).await;
    assert_eq!(
        (inside.status, &inside.body[..]),
        (StatusCode::PARTIAL_CONTENT, &b"123"[..])
    );
    assert_eq!(inside.all("x-cache"), "HIT");
    let outside = fetch(proxy, "GET", "/parts", &[("range", "bytes=5-9")]).await;
    assert_eq!(outside.body, "56789");
    assert!(
        outside.all("cache-status").contains("fwd=partial"),
        "{}",
        outside.all("cache-status")
    );
    assert_eq!(origin.calls("GET", "/parts"), 2);
    let whole = fetch(proxy, "GET", "/parts", &[]).await;
    assert_eq!(
        (whole.status, &whole.body[..]),
        (StatusCode::OK, DIGITS.as_bytes())
    );
    assert_eq!(whole.all("x-cache"), "HIT");
    assert_eq!(whole.all("content-range"), "");
    assert_eq!(origin.calls("GET", "/parts"), 2);
}

#[tokio::test]
async fn disconnected_rfc9111_4_2_4_stale_served_unless_it_must_be_revalidated() {
    let origin = Origin::start(Arc::new(|_, path, _| {
        let cc = match path {
            "/must-revalidate" => "max-age=1, must-revalidate",
            "/s-maxage" => "s-maxage=1",
            _ => "max-age=1",
        };
        // With a validator, so that entries that must be revalidated are kept for it.
        (
            200,
            vec![
                ("cache-control", cc.to_owned()),
                ("etag", "\"e\"".to_owned()),
            ],
            format!("body of {path}"),
        )
    }))
    .await;
    let proxy = proxy(origin.addr).await;
    for path in ["/plain", "/must-revalidate", "/s-maxage"] {
        assert_eq!(
            fetch(proxy, "GET", path, &[]).await.all("x-cache"),
            "MISS",
            "{path}"
        );
    }
    origin.stop().await;
    // Let the entries go stale (max-age=1, real time).
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let stale = fetch(proxy, "GET", "/plain", &[]).await;
    assert_eq!(stale.status, StatusCode::OK);
    assert_eq!(stale.body, "body of /plain");
    assert_eq!(stale.all("x-cache"), "STALE");
    let status = stale.all("cache-status");
    assert!(
        status.contains("fwd=stale") && status.ends_with("detail=disconnected"),
        "{status}"
    );
    for path in ["/must-revalidate", "/s-maxage"] {
        let refused = fetch(proxy, "GET", path, &[]).await;
        assert_eq!(refused.status, StatusCode::GATEWAY_TIMEOUT, "{path}");
        assert_eq!(
            refused.all("cache-status"),
            "tower-kit; fwd=stale; detail=must-revalidate",
            "{path}"
        );
        assert!(refused.body.is_empty(), "{path}");
    }
    // Nothing stored: the proxy's own 502.
    let unknown = fetch(proxy, "GET", "/never-stored", &[]).await;
    assert_eq!(unknown.status, StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn head_rfc9111_4_3_5_updates_or_marks_the_stored_get_stale() {
    let version = Arc::new(AtomicUsize::new(1));
    let v = Arc::clone(&version);
    let origin = Origin::start(Arc::new(move |method, _, _| {
        let n = v.load(Ordering::SeqCst);
        // The GET is stored for 60 s; HEAD answers say 600 s.
        let max_age = if method == "HEAD" { 600 } else { 60 };
        let headers = vec![
            ("cache-control", format!("max-age={max_age}")),
            ("etag", format!("\"v{n}\"")),
        ];
        (200, headers, format!("version {n}"))
    }))
    .await;
    let proxy = proxy(origin.addr).await;
    assert_eq!(
        fetch(proxy, "GET", "/doc", &[]).await.all("x-cache"),
        "MISS"
    );

    // Same ETag: the HEAD response's metadata (max-age=600) updates the stored GET.
    let head = fetch(proxy, "HEAD", "/doc", &[("cache-control", "no-cache")]).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(origin.calls("HEAD", "/doc"), 1);
    let hit = fetch(proxy, "GET", "/doc", &[]).await;
    assert_eq!(hit.all("x-cache"), "HIT");
    let ttl: i64 = hit
        .all("cache-status")
        .rsplit("ttl=")
        .next()
        .and_then(|t| t.parse().ok())
        .unwrap();
    assert!(
        ttl > 500,
        "the stored GET keeps max-age=600 from the HEAD answer: ttl={ttl}"
    );
    assert_eq!(hit.body, "version 1");

    // Another ETag: the stored GET is marked stale, and the next GET goes to the origin.
    version.store(2, Ordering::SeqCst);
    fetch(proxy, "HEAD", "/doc", &[("cache-control", "no-cache")]).await;
    let after = fetch(proxy, "GET", "/doc", &[]).await;
    assert_eq!(after.all("x-cache"), "MISS");
    assert_eq!(after.body, "version 2");
    assert_eq!(origin.calls("GET", "/doc"), 2);
}

#[test]
fn the_disconnected_window_is_a_flag() {
    use clap::Parser;
    let args =
        cache_proxy::Args::try_parse_from(["cache-proxy", "--upstream", "http://127.0.0.1:1"])
            .unwrap();
    assert_eq!(args.stale_if_disconnected, Duration::from_secs(3600));
    let args = cache_proxy::Args::try_parse_from([
        "cache-proxy",
        "--upstream",
        "http://127.0.0.1:1",
        "--stale-if-disconnected",
        "5m",
    ])
    .unwrap();
    assert_eq!(args.stale_if_disconnected, Duration::from_secs(300));
    assert!(cache_proxy::cache_builder(&args).build().is_ok());
}
