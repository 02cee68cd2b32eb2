//! `GET /ws` over a real socket with a real WebSocket client: item updates pushed in batches with the newest price
//! per item, echoes, the snapshot and the Prometheus series; a stalled client closed at its queue bound while a
//! live one carries on.

use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Value, json};
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::OnceLock,
    time::{Duration, Instant},
};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tower_kit::timing::ws::WebSocketMetrics;
use tower_kit_batch::ws::Overflow;

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

async fn start() -> (SocketAddr, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    // A quota this test does not reach: it polls /api/performance/websocket.
    let mut config = demo_server::Config::for_tests();
    config.ratelimit.rate_limit = std::num::NonZeroU32::new(10_000).unwrap();
    config.ratelimit.rate_limit_burst = std::num::NonZeroU32::new(10_000).unwrap();
    tokio::spawn(demo_server::serve(
        listener,
        config,
        metrics(),
        async move {
            let _ = stopped.await;
        },
    ));
    (addr, stop)
}

async fn request(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> (u16, Bytes) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut builder = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    let body = match body {
        Some(json) => {
            builder = builder.header("content-type", "application/json");
            Full::new(Bytes::from(json.to_string()))
        }
        None => Full::new(Bytes::new()),
    };
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        client.request(builder.body(body).unwrap()),
    )
    .await
    .expect("an answer in time")
    .unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(addr: SocketAddr) -> Ws {
    let (ws, response) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    ws
}

async fn next_text(ws: &mut Ws) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame in time")
        {
            Some(Ok(Message::Text(t))) => return t.to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

async fn snapshot(addr: SocketAddr) -> Value {
    let (status, body) = request(addr, "GET", "/api/performance/websocket", None).await;
    assert_eq!(status, 200);
    serde_json::from_slice(&body).unwrap()
}

fn ws_route(snapshot: &Value) -> &Value {
    snapshot["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "/ws")
        .expect("a /ws entry")
}

#[tokio::test]
async fn updates_are_pushed_in_batches_with_the_newest_price_per_item_and_messages_are_echoed() {
    let (addr, _stop) = start().await;
    let mut ws = connect(addr).await;
    // The upgrade is served before the handler subscribes; wait until the connection is counted.
    let start = Instant::now();
    while snapshot(addr).await["active"] != 1 {
        assert!(start.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Echo.
    ws.send(Message::Text("hello".into())).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "hello");

    // A new item.
    let (status, body) = request(
        addr,
        "POST",
        "/api/items",
        Some(json!({"name": "lamp", "price_cents": 1999})),
    )
    .await;
    assert_eq!(status, 201);
    let created: Value = serde_json::from_slice(&body).unwrap();
    let frame: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(frame, json!([{"type": "created", "item": created}]));

    // Ten price changes of one item and one of another: the newest price per item arrives, and no frame carries
    // two updates of the same item.
    for price in 1001..=1010 {
        let (status, _) = request(
            addr,
            "PUT",
            "/api/items/1/price",
            Some(json!({"price_cents": price})),
        )
        .await;
        assert_eq!(status, 200);
    }
    let (status, _) = request(
        addr,
        "PUT",
        "/api/items/2/price",
        Some(json!({"price_cents": 7})),
    )
    .await;
    assert_eq!(status, 200);
    let mut newest = HashMap::new();
    let mut updates = 0;
    while newest.get(&1) != Some(&1010) || newest.get(&2) != Some(&7) {
        let frame: Vec<Value> = serde_json::from_str(&next_text(&mut ws).await).unwrap();
        let mut ids: Vec<u64> = frame.iter().map(|u| u["id"].as_u64().unwrap()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(
            ids.len(),
            frame.len(),
            "one update per item per frame: {frame:?}"
        );
        for update in frame {
            assert_eq!(update["type"], "price_changed");
            newest.insert(
                update["id"].as_u64().unwrap(),
                update["price_cents"].as_u64().unwrap(),
            );
            updates += 1;
        }
    }
    assert!(updates <= 11);
    let (status, _) = request(
        addr,
        "PUT",
        "/api/items/999999/price",
        Some(json!({"price_cents": 1})),
    )
    .await;
    assert_eq!(status, 404);

    // The snapshot and the Prometheus series.
    let snap = snapshot(addr).await;
    let route = ws_route(&snap);
    assert_eq!(route["active"], 1);
    assert_eq!(route["messages_received"], 1);
    assert_eq!(route["bytes_received"], 5);
    assert!(route["messages_sent"].as_u64().unwrap() >= 3);
    for key in ["since_unix_ms", "elapsed_seconds", "active"] {
        assert!(snap.get(key).is_some(), "{key} in {snap}");
    }
    let (_, body) = request(addr, "GET", "/metrics", None).await;
    let text = String::from_utf8(body.to_vec()).unwrap();
    for series in [
        "websocket_server_active_connections",
        "websocket_server_connections_opened",
        "websocket_server_messages",
        "websocket_server_message_bytes",
        "tower_kit_batch_ws_frames",
    ] {
        assert!(text.contains(series), "{series} missing from /metrics");
    }

    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}
    let start = Instant::now();
    loop {
        let snap = snapshot(addr).await;
        if snap["active"] == 0 {
            assert_eq!(ws_route(&snap)["close_codes"]["1000"], 1);
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{snap}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_stalled_client_is_closed_at_its_queue_bound_while_a_reading_one_carries_on() {
    let items = demo_server::items::Items::seeded();
    let meter = WebSocketMetrics::new();
    let stats = meter.handle();
    let batcher = demo_server::ws::batcher(20, Overflow::Close { code: 1008 }).unwrap();
    let app = demo_server::ws::router_with(&items, meter, batcher);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let stalled = connect(addr).await; // never read
    let mut reader = connect(addr).await;
    let start = Instant::now();
    while stats.snapshot().active != 2 {
        assert!(start.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let read = tokio::spawn(async move {
        let mut frames = 0u64;
        while let Some(Ok(m)) = reader.next().await {
            if matches!(m, Message::Text(_)) {
                frames += 1;
            }
        }
        frames
    });

    // Large updates until the stalled client's socket buffers fill and its queue passes 20.
    let description = "x".repeat(1900);
    let start = Instant::now();
    let closed = loop {
        for _ in 0..200 {
            items
                .add("big".into(), description.clone(), 1, Vec::new())
                .await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        let snap = stats.snapshot();
        if snap.get("/ws").is_some_and(|r| r.closed == 1) {
            break snap;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the stalled client was not closed: {snap:?}"
        );
    };
    let route = closed.get("/ws").unwrap();
    assert_eq!(route.active, 1, "the reading client is still connected");
    // The close frame is written if the socket takes it (1008), else the connection just ends (1006).
    let codes: Vec<u16> = route.close_codes.keys().copied().collect();
    assert!(codes == [1006] || codes == [1008], "{codes:?}");
    drop(stalled);
    assert!(!read.is_finished());
    read.abort();
}

/// Resident memory of this process, from /proc (Linux).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_with_a_thousand_stalled_clients() {
    const CLIENTS: usize = 1000;
    let items = demo_server::items::Items::seeded();
    let meter = WebSocketMetrics::new();
    let stats = meter.handle();
    let batcher = demo_server::ws::batcher(50, Overflow::DropOldest).unwrap();
    let app = demo_server::ws::router_with(&items, meter, batcher);
    // Small socket buffers on both sides (accepted sockets inherit the listener's), so a client that does not read
    // stalls its connection after a few KiB instead of after megabytes of kernel buffers.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(4096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1024).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // A thousand clients that never read.
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), stream)
            .await
            .unwrap();
        clients.push(ws);
    }
    let start = Instant::now();
    while stats.snapshot().active != CLIENTS as i64 {
        assert!(start.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Price changes of every seeded item, round after round: each distinct per round, so latest-wins does not
    // absorb them and only the queue bound (50 per client, drop oldest) keeps memory in check.
    async fn push(items: &demo_server::items::Items, rounds: u64) {
        for round in 0..rounds {
            for id in 1..=demo_server::items::SEED_ITEMS {
                items.set_price(id, round * 1000 + id).await;
            }
            // Let the connection tasks take every update from the broadcast (4096 deep), so none is skipped.
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    }
    push(&items, 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let filled = rss_bytes();
    push(&items, 4).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_bytes();

    // Unbounded queues would hold 4 x 590 more updates per client (measured: over 100 MiB more; bounded: under 10).
    let growth = after.saturating_sub(filled);
    assert!(
        growth < 32 * 1024 * 1024,
        "memory grew by {} MiB",
        growth / (1024 * 1024)
    );
    // Dropping the oldest keeps every stalled client connected.
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.active, CLIENTS as i64);
    drop(clients);
    let start = Instant::now();
    while stats.snapshot().active != 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{:?}",
            stats.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
