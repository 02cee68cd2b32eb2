//! The operator's kit: every PromQL expression in `examples/prometheus/alerts.yml` and in the Grafana dashboard
//! `examples/grafana/tower-kit.json` parses, and every metric it names is one the layers export (read from the demo
//! server's own `/metrics` after traffic that exercises every layer).

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use promql_parser::parser::{self, Expr};
use std::{collections::BTreeSet, net::SocketAddr, num::NonZeroU32, path::Path, time::Duration};

fn names(expr: &Expr, out: &mut BTreeSet<String>) {
    match expr {
        Expr::Aggregate(a) => {
            names(&a.expr, out);
            if let Some(p) = &a.param {
                names(p, out);
            }
        }
        Expr::Unary(u) => names(&u.expr, out),
        Expr::Binary(b) => {
            names(&b.lhs, out);
            names(&b.rhs, out);
        }
        Expr::Paren(p) => names(&p.expr, out),
        Expr::Subquery(s) => names(&s.expr, out),
        Expr::VectorSelector(v) => out.extend(v.name.clone()),
        Expr::MatrixSelector(m) => out.extend(m.vs.name.clone()),
        Expr::Call(c) => c.args.args.iter().for_each(|a| names(a, out)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

fn kit_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// (where, expression) for every alert rule and dashboard target.
fn expressions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let alerts: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(kit_dir().join("prometheus/alerts.yml")).unwrap(),
    )
    .unwrap();
    for group in alerts["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().unwrap().to_owned();
            out.push((
                format!("alert {name}"),
                rule["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(kit_dir().join("grafana/tower-kit.json")).unwrap(),
    )
    .unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            out.push((
                format!("panel {}", panel["title"]),
                target["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    out
}

#[test]
fn every_expression_parses_and_names_metrics() {
    let exprs = expressions();
    assert!(exprs.len() >= 20, "{}", exprs.len());
    for (place, expr) in exprs {
        let ast = parser::parse(&expr).unwrap_or_else(|e| panic!("{place}: {e}\n{expr}"));
        let mut found = BTreeSet::new();
        names(&ast, &mut found);
        assert!(!found.is_empty(), "{place} names no metric");
    }
}

async fn get(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    url: String,
) -> u16 {
    let request = http::Request::get(url)
        .header("accept-encoding", "gzip")
        .body(Empty::new())
        .unwrap();
    let res = client.request(request).await.unwrap();
    let status = res.status().as_u16();
    res.into_body().collect().await.unwrap();
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_named_is_exported() {
    let metrics = demo_server::observability::prometheus_builder()
        .unwrap()
        .install_recorder()
        .unwrap();
    let mut config = demo_server::Config::for_tests();
    // Small limits, so a little traffic makes the global limiter queue and shed, and the quota refuse.
    config.concurrency.concurrency_max_in_flight = 2;
    config.concurrency.concurrency_max_queue = 3;
    config.concurrency.concurrency_queue_wait = Duration::from_secs(5);
    config.ratelimit.rate_limit = NonZeroU32::new(1000).unwrap();
    config.ratelimit.rate_limit_burst = NonZeroU32::new(40).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(demo_server::serve(
        listener,
        config,
        metrics.clone(),
        std::future::pending(),
    ));

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let base = format!("http://{addr}");
    for path in [
        "/health",
        "/api/items",
        "/api/items",
        "/api/items/3",
        "/api/report",
        "/nope",
    ] {
        get(&client, format!("{base}{path}")).await;
    }
    // Concurrent slow calls: two run, three queue, the rest are shed. Each takes 2 s, so that all twelve overlap even
    // when a loaded machine is slow to send them.
    let slow: Vec<_> = (0..12)
        .map(|_| {
            let (client, base) = (client.clone(), base.clone());
            tokio::spawn(async move { get(&client, format!("{base}/api/slow?ms=2000")).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for s in slow {
        statuses.push(s.await.unwrap());
    }
    assert!(statuses.contains(&503), "{statuses:?}");
    // Past the burst: refusals.
    for _ in 0..60 {
        get(&client, format!("{base}/api/items/1")).await;
    }
    // A second server whose rate limiter is on a Redis that is not there: it fails open and counts store errors.
    let mut redis_mode = demo_server::Config::for_tests();
    redis_mode.ratelimit.redis_url = Some(format!("redis://127.0.0.1:{}/", closed_port()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redis_addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(demo_server::serve(
        listener,
        redis_mode,
        metrics.clone(),
        std::future::pending(),
    ));
    assert_eq!(
        get(&client, format!("http://{redis_addr}/api/items/1")).await,
        200,
        "fails open"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A WebSocket client: one echo, then a close, so the WebSocket series exist (the duration at the close).
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    futures_util::SinkExt::send(
        &mut ws,
        tokio_tungstenite::tungstenite::Message::Text("hi".into()),
    )
    .await
    .unwrap();
    futures_util::StreamExt::next(&mut ws).await;
    ws.close(None).await.unwrap();
    while futures_util::StreamExt::next(&mut ws).await.is_some() {}
    for _ in 0..1000 {
        if metrics
            .render()
            .contains("websocket_server_connection_duration")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let text = metrics.render();
    let exported: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .flat_map(|l| {
            let mut parts = l.split_whitespace();
            let name = parts.next().unwrap_or_default().to_owned();
            let kind = parts.next().unwrap_or_default();
            // Histograms are queried through their series.
            let mut all = vec![name.clone()];
            if kind == "histogram" {
                all.extend(["_bucket", "_sum", "_count"].map(|s| format!("{name}{s}")));
            }
            all
        })
        .collect();
    let mut missing = Vec::new();
    for (place, expr) in expressions() {
        let mut found = BTreeSet::new();
        names(&parser::parse(&expr).unwrap(), &mut found);
        for name in found {
            if !exported.contains(&name) {
                missing.push(format!("{place}: {name}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not exported: {missing:#?}\nexported: {exported:#?}"
    );
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
