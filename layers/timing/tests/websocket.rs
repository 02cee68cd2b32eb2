//! WebSocket metrics over a real axum server and a real tokio-tungstenite client, and keep-alive on tokio's paused
//! clock over an in-memory pipe.
#![cfg(all(feature = "ws", feature = "axum", feature = "tungstenite"))]

#[allow(dead_code)]
#[path = "it/support.rs"]
mod support;

use axum::{
    Router,
    extract::{
        MatchedPath, State,
        ws::{CloseFrame, Message, WebSocketUpgrade},
    },
    response::Response,
    routing::get,
};
use futures_util::{SinkExt, StreamExt};
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};
use support::{Metrics, Value, labels};
use tokio_tungstenite::tungstenite::{self, protocol::Role};
use tower_kit_timing::ws::{WebSocketHandle, WebSocketMetrics, WebSocketSnapshot, names};

/// Sends "welcome", echoes text and binary messages, and on "bye" closes with 4000.
async fn echo(
    ws: WebSocketUpgrade,
    path: MatchedPath,
    State(meter): State<WebSocketMetrics>,
) -> Response {
    ws.on_upgrade(move |socket| async move {
        let mut socket = meter.wrap(socket, path.as_str());
        if socket.send(Message::Text("welcome".into())).await.is_err() {
            return;
        }
        while let Some(Ok(message)) = socket.next().await {
            match message {
                Message::Text(t) if t.as_str() == "bye" => {
                    let close = CloseFrame {
                        code: 4000,
                        reason: "bye".into(),
                    };
                    let _ = socket.send(Message::Close(Some(close))).await;
                    // Read until the client's close reply ends the stream.
                    while let Some(Ok(_)) = socket.next().await {}
                    return;
                }
                m @ (Message::Text(_) | Message::Binary(_)) => {
                    let sent = socket.send(m).await;
                    if sent.is_err() {
                        return;
                    }
                }
                _ => {}
            }
        }
    })
}

async fn server(meter: WebSocketMetrics) -> SocketAddr {
    let app = Router::new()
        .route("/ws/{room}", get(echo))
        .with_state(meter);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(addr: SocketAddr) -> Client {
    let (mut client, response) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws/lobby"))
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    let welcome = client.next().await.unwrap().unwrap();
    assert_eq!(welcome, tungstenite::Message::Text("welcome".into()));
    client
}

/// Waits (real time, generous bound) until `done` holds for the snapshot.
async fn until(
    stats: &WebSocketHandle,
    done: impl Fn(&WebSocketSnapshot) -> bool,
) -> WebSocketSnapshot {
    let start = Instant::now();
    loop {
        let snapshot = stats.snapshot();
        if done(&snapshot) {
            return snapshot;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "condition not reached: {snapshot:#?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn counter(metrics: &Metrics, name: &str, direction: &str) -> u64 {
    let want = labels(&[(names::ROUTE, "/ws/{room}"), (names::DIRECTION, direction)]);
    match metrics.series(name).into_iter().find(|(l, _)| *l == want) {
        Some((_, Value::Counter(c))) => c,
        other => panic!("{name} {direction}: {other:?}"),
    }
}

#[tokio::test]
async fn a_scripted_exchange_is_counted_exactly() {
    let metrics = Metrics::new();
    let _guard = metrics.install();
    let meter = WebSocketMetrics::new();
    let stats = meter.handle();
    let addr = server(meter).await;

    let mut client = connect(addr).await;
    client
        .send(tungstenite::Message::Text("hello".into()))
        .await
        .unwrap();
    assert_eq!(
        client.next().await.unwrap().unwrap(),
        tungstenite::Message::Text("hello".into())
    );
    client
        .send(tungstenite::Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(
        client.next().await.unwrap().unwrap(),
        tungstenite::Message::Binary(vec![1, 2, 3].into())
    );
    // A ping is not a data message.
    client
        .send(tungstenite::Message::Ping(vec![9].into()))
        .await
        .unwrap();
    let open = stats.snapshot();
    assert_eq!((open.active, open.get("/ws/{room}").unwrap().total), (1, 1));

    client.close(None).await.unwrap();
    while client.next().await.is_some() {}
    let snapshot = until(&stats, |s| s.active == 0).await;
    let route = snapshot.get("/ws/{room}").unwrap();
    // Sent: "welcome" (7) + "hello" (5) + 3 bytes; received: "hello" (5) + 3 bytes.
    assert_eq!(
        (route.messages_sent, route.bytes_sent),
        (3, 15),
        "{route:?}"
    );
    assert_eq!((route.messages_received, route.bytes_received), (2, 8));
    assert_eq!(route.avg_message_size_sent, 5.0);
    assert_eq!(route.avg_message_size_received, 4.0);
    assert_eq!((route.total, route.closed, route.send_errors), (1, 1, 0));
    // The client's close frame had no code: counted as a normal closure.
    assert_eq!(route.close_codes.get(&1000), Some(&1));

    assert_eq!(counter(&metrics, names::MESSAGES, names::TRANSMIT), 3);
    assert_eq!(counter(&metrics, names::MESSAGES, names::RECEIVE), 2);
    assert_eq!(counter(&metrics, names::MESSAGE_BYTES, names::TRANSMIT), 15);
    assert_eq!(counter(&metrics, names::MESSAGE_BYTES, names::RECEIVE), 8);
    let durations = metrics.series(names::CONNECTION_DURATION);
    assert_eq!(durations.len(), 1, "{durations:?}");
    assert_eq!(
        durations[0].0,
        labels(&[(names::ROUTE, "/ws/{room}"), (names::CLOSE_CODE, "1000")])
    );
    assert_eq!(durations[0].1.count(), 1);
    let opened = metrics.series(names::CONNECTIONS_OPENED);
    assert_eq!(opened[0].1, Value::Counter(1));
}

#[tokio::test]
async fn active_returns_to_zero_after_a_close_a_drop_and_a_server_close() {
    let metrics = Metrics::new();
    let _guard = metrics.install();
    let meter = WebSocketMetrics::new();
    let stats = meter.handle();
    let addr = server(meter).await;

    // The client closes with a code.
    let mut a = connect(addr).await;
    // Abrupt drop: the TCP connection goes away without a close frame.
    let b = connect(addr).await;
    // The server closes (4000) when told "bye".
    let mut c = connect(addr).await;
    until(&stats, |s| s.active == 3).await;

    a.close(Some(tungstenite::protocol::CloseFrame {
        code: 1001.into(),
        reason: "leaving".into(),
    }))
    .await
    .unwrap();
    while a.next().await.is_some() {}
    until(&stats, |s| s.active == 2).await;

    drop(b);
    until(&stats, |s| s.active == 1).await;

    c.send(tungstenite::Message::Text("bye".into()))
        .await
        .unwrap();
    match c.next().await {
        Some(Ok(tungstenite::Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 4000)
        }
        other => panic!("expected the server's close, got {other:?}"),
    }
    while c.next().await.is_some() {}
    let snapshot = until(&stats, |s| s.active == 0).await;

    let route = snapshot.get("/ws/{room}").unwrap();
    assert_eq!((route.total, route.closed), (3, 3));
    let codes: Vec<(u16, u64)> = route.close_codes.iter().map(|(k, v)| (*k, *v)).collect();
    assert_eq!(codes, [(1001, 1), (1006, 1), (4000, 1)]);
    let mut labelled = metrics.label_values(names::CONNECTION_DURATION, names::CLOSE_CODE);
    labelled.sort();
    assert_eq!(labelled, ["1001", "1006", "4000"]);
}

/// A server socket and a client socket over an in-memory pipe, so keep-alive runs on the paused clock.
async fn pipe(
    meter: &WebSocketMetrics,
) -> (
    tower_kit_timing::ws::MeteredSocket<
        tokio_tungstenite::WebSocketStream<tokio::io::DuplexStream>,
    >,
    tokio_tungstenite::WebSocketStream<tokio::io::DuplexStream>,
) {
    let (s, c) = tokio::io::duplex(64 * 1024);
    let server = tokio_tungstenite::WebSocketStream::from_raw_socket(s, Role::Server, None).await;
    let client = tokio_tungstenite::WebSocketStream::from_raw_socket(c, Role::Client, None).await;
    (meter.wrap(server, "/ws"), client)
}

#[tokio::test(start_paused = true)]
async fn pings_go_out_each_interval_while_the_socket_is_read() {
    let meter = WebSocketMetrics::builder()
        .ping_interval(Some(Duration::from_secs(10)))
        .build()
        .unwrap();
    let (mut server, mut client) = pipe(&meter).await;
    let reader = tokio::spawn(async move {
        // The server's receive loop; it returns when the client closes.
        while let Some(Ok(_)) = server.next().await {}
    });
    let start = tokio::time::Instant::now();
    for n in 1..=3u32 {
        match client.next().await {
            Some(Ok(tungstenite::Message::Ping(_))) => {}
            other => panic!("expected a ping, got {other:?}"),
        }
        assert_eq!(start.elapsed(), Duration::from_secs(10) * n);
    }
    client.close(None).await.unwrap();
    reader.await.unwrap();
    let route = meter.handle().snapshot();
    // Pings and pongs are not data messages.
    assert_eq!(route.get("/ws").unwrap().messages_sent, 0);
    assert_eq!(route.active, 0);
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_is_closed_with_1001_and_a_live_one_is_not() {
    let meter = WebSocketMetrics::builder()
        .ping_interval(Some(Duration::from_secs(10)))
        .idle_timeout(Some(Duration::from_secs(25)))
        .build()
        .unwrap();
    let stats = meter.handle();

    // A live client: it reads, so tungstenite answers each ping with a pong, which keeps the connection open.
    let (mut server, mut live) = pipe(&meter).await;
    let server_task = tokio::spawn(async move {
        let mut got = 0;
        while let Some(Ok(_)) = server.next().await {
            got += 1;
        }
        got
    });
    let live_task = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(100);
        let mut pings = 0;
        loop {
            tokio::select! {
                m = live.next() => match m {
                    Some(Ok(tungstenite::Message::Ping(_))) => pings += 1,
                    other => panic!("live client got {other:?}"),
                },
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        live.close(None).await.unwrap();
        while live.next().await.is_some() {}
        pings
    });

    // A silent client: it never reads nor writes, so no pong comes back.
    let (mut server2, mut silent) = pipe(&meter).await;
    let start = tokio::time::Instant::now();
    assert!(
        server2.next().await.is_none(),
        "the stream ends at the idle timeout"
    );
    assert_eq!(start.elapsed(), Duration::from_secs(25));
    // The close frame reached the client (after the two pings sent before it).
    let mut last = None;
    while let Some(Ok(m)) = silent.next().await {
        let close = matches!(m, tungstenite::Message::Close(_));
        last = Some(m);
        if close {
            break;
        }
    }
    drop(server2);
    match last {
        Some(tungstenite::Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("expected a 1001 close, got {other:?}"),
    }

    assert!(live_task.await.unwrap() >= 9);
    // Only pongs and the close reached the live server: no data message.
    assert!(server_task.await.unwrap() >= 9);
    let snapshot = stats.snapshot();
    let route = snapshot.get("/ws").unwrap();
    assert_eq!(snapshot.active, 0);
    let codes: Vec<(u16, u64)> = route.close_codes.iter().map(|(k, v)| (*k, *v)).collect();
    assert_eq!(codes, [(1000, 1), (1001, 1)]);
}
