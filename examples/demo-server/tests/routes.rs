//! The demo server's routes over a real socket, started in-process.

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use metrics_exporter_prometheus::PrometheusHandle;
use std::{net::SocketAddr, sync::OnceLock, time::Duration};
use tokio::sync::oneshot;

struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// The demo installs its Prometheus recorder globally, as `main` does; once for this test binary.
fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            demo_server::observability::prometheus_builder()
                .unwrap()
                .install_recorder()
                .unwrap()
        })
        .clone()
}

async fn start() -> Running {
    start_with(demo_server::Config::for_tests()).await
}

async fn start_with(config: demo_server::Config) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = metrics();
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(demo_server::serve(listener, config, metrics, async move {
        let _ = stopped.await;
    }));
    Running {
        addr,
        stop: Some(stop),
        done,
    }
}

async fn get(addr: SocketAddr, path: &str) -> (http::StatusCode, http::HeaderMap, Bytes) {
    send(addr, http::Request::get(path), None).await
}

async fn send(
    addr: SocketAddr,
    builder: http::request::Builder,
    bearer: Option<&str>,
) -> (http::StatusCode, http::HeaderMap, Bytes) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut builder = builder;
    let path = builder.uri_ref().unwrap().to_string();
    builder = builder.uri(format!("http://{addr}{path}"));
    if let Some(token) = bearer {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    let response = client
        .request(builder.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test]
async fn every_route_answers() {
    let mut server = start().await;
    let (status, _, body) = get(server.addr, "/health").await;
    assert_eq!((status.as_u16(), &body[..]), (200, &b"ok"[..]));

    let (status, headers, body) = get(server.addr, "/api/items").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    let items: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(items.len() as u64, demo_server::items::SEED_ITEMS);
    assert!(body.len() > 95_000, "about 100 KiB, got {}", body.len());

    let (status, _, body) = get(server.addr, "/api/items/42").await;
    assert_eq!(status, 200);
    let item: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(item["id"], 42);

    let (status, headers, body) = get(server.addr, "/api/items/999999").await;
    assert_eq!(status, 404);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["error"],
        "item not found"
    );

    let (status, _, _) = get(server.addr, "/api/items/not-a-number").await;
    assert_eq!(status, 400);

    let (status, headers, body) = get(server.addr, "/no/such/route").await;
    assert_eq!(status, 404);
    assert_eq!(headers["content-type"], "application/json");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"], "not found");

    let (status, headers, _) = get(server.addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );

    server.stop.take().unwrap().send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server.done)
        .await
        .expect("shuts down promptly when idle")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn metrics_use_the_route_template_and_stats_are_served() {
    let mut server = start().await;
    for id in [1, 2, 3] {
        get(server.addr, &format!("/api/items/{id}")).await;
    }
    let (_, _, body) = get(server.addr, "/metrics").await;
    let text = String::from_utf8(body.to_vec()).unwrap();
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("http_server_request_duration_seconds_count")
                && l.contains(r#"http_route="/api/items/{id}""#)
        })
        .unwrap_or_else(|| panic!("no duration series for the route template in:\n{text}"));
    assert!(line.contains(r#"http_request_method="GET""#), "{line}");
    assert!(
        !text.contains("/api/items/1\""),
        "raw paths never become labels"
    );

    let (status, _, body) = get(server.addr, "/api/performance/metrics").await;
    assert_eq!(status, 200);
    let stats: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let route = stats["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "/api/items/{id}" && r["method"] == "GET")
        .unwrap();
    assert_eq!(route["count"], 3);
    for field in [
        "min_ms", "max_ms", "mean_ms", "p50_ms", "p95_ms", "p99_ms", "active",
    ] {
        assert!(route[field].is_number(), "{field}");
    }
    server.stop.take().unwrap().send(()).unwrap();
}

#[tokio::test]
async fn reset_needs_the_admin_token() {
    // No token configured: nobody may reset.
    let mut server = start().await;
    let (status, _, _) = send(
        server.addr,
        http::Request::post("/api/performance/reset"),
        Some("x"),
    )
    .await;
    assert_eq!(status, 403);
    server.stop.take().unwrap().send(()).unwrap();

    let mut config = demo_server::Config::for_tests();
    config.timing.admin_token = Some("s3cret".into());
    let mut server = start_with(config).await;
    get(server.addr, "/api/items/1").await;
    for bad in [None, Some("wrong"), Some("s3cre"), Some("S3CRET")] {
        let (status, headers, _) = send(
            server.addr,
            http::Request::post("/api/performance/reset"),
            bad,
        )
        .await;
        assert_eq!(status, 401, "{bad:?}");
        assert_eq!(headers["www-authenticate"], "Bearer");
    }
    let (status, _, _) = send(
        server.addr,
        http::Request::post("/api/performance/reset"),
        Some("s3cret"),
    )
    .await;
    assert_eq!(status, 200);
    let (_, _, body) = get(server.addr, "/api/performance/metrics").await;
    let stats: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let items = stats["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "/api/items/{id}");
    assert!(items.is_none_or(|r| r["count"] == 0), "{stats}");
    server.stop.take().unwrap().send(()).unwrap();
}

#[tokio::test]
async fn server_timing_only_when_asked_for() {
    let mut server = start().await;
    let (_, headers, _) = get(server.addr, "/health").await;
    assert!(headers.get("server-timing").is_none());
    let (_, headers, _) = send(
        server.addr,
        http::Request::get("/health").header("x-debug-timing", "1"),
        None,
    )
    .await;
    assert!(
        headers["server-timing"]
            .to_str()
            .unwrap()
            .starts_with("app;dur=")
    );
    server.stop.take().unwrap().send(()).unwrap();
}

#[tokio::test]
async fn an_added_item_is_found_by_id_and_in_the_list() {
    use tower::ServiceExt;
    let app = demo_server::app(&demo_server::Config::for_tests(), metrics()).unwrap();
    let created = app
        .clone()
        .oneshot(
            http::Request::post("/api/items")
                .header("content-type", "application/json")
                .body(axum::body::Body::from(
                    r#"{"name":"new thing","price_cents":250}"#,
                ))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let got = app
        .clone()
        .oneshot(
            http::Request::get(&location)
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        got.status(),
        200,
        "{location} is served by the batched SQLite lookup"
    );
    let body = got.into_body().collect().await.unwrap().to_bytes();
    let item: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(item["name"], "new thing");
}

#[tokio::test]
async fn every_layer_can_be_switched_off() {
    let config = demo_server::Config::load_from([
        "demo-server",
        "--disable",
        "timing,ratelimit,concurrency,gzip,cache,batch",
    ])
    .unwrap();
    let mut config = config;
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.batch = demo_server::Config::for_tests().batch;
    config.batch.batch_lookups = false;
    let mut server = start_with(config).await;
    let (status, headers, _) = get(server.addr, "/api/items").await;
    assert_eq!(status, 200);
    assert!(headers.get("x-cache").is_none(), "no cache layer");
    let (status, headers, _) = send(
        server.addr,
        http::Request::get("/health").header("x-debug-timing", "1"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(headers.get("server-timing").is_none(), "no timing layer");
    for _ in 0..30 {
        assert_eq!(
            get(server.addr, "/api/items/3").await.0,
            200,
            "no rate limit"
        );
    }
    server.stop.take().unwrap().send(()).unwrap();
}
