//! WebSocket: `GET /ws` pushes item updates (created, price changed) to every subscriber, batched per connection
//! with latest-wins per item, and echoes what the client sends; `GET /api/performance/websocket` is the snapshot of
//! the WebSocket metrics (the shape of `/api/performance/metrics`).
//!
//! ```text
//! websocat ws://localhost:3000/ws &                                    # or any WebSocket client
//! curl -s -X POST localhost:3000/api/items -H 'content-type: application/json' -d '{"name":"lamp","price_cents":1999}'
//! curl -s -X PUT localhost:3000/api/items/1/price -H 'content-type: application/json' -d '{"price_cents":1500}'
//! # the client receives, within 100 ms, one frame per batch:
//! # [{"type":"created","item":{"id":591,...}},{"type":"price_changed","id":1,"price_cents":1500}]
//! curl -s localhost:3000/api/performance/websocket
//! ```
//!
//! Each connection is wrapped by the timing crate's `WebSocketMetrics` (connections, messages and bytes each way,
//! close codes; pings every 20 s, closed after 60 s without a word from the client) and its outgoing updates go
//! through the batch crate's `MessageBatcher` (10 updates or 100 ms per frame, the newest update per item, at most
//! 1000 waiting per client; a client that falls further behind is closed with 1008).

use crate::items::{ItemUpdate, Items};
use axum::{
    Json, Router,
    extract::{
        MatchedPath, State,
        ws::{Message, WebSocket, WebSocketUpgrade},
    },
    response::{IntoResponse, Response},
    routing::get,
};
use futures_util::StreamExt;
use std::{pin::pin, time::Duration};
use tokio::sync::broadcast::error::RecvError;
use tower_kit::timing::ws::{WebSocketHandle, WebSocketMetrics};
use tower_kit_batch::ws::{MessageBatcher, Overflow};

/// Pings go out this often.
pub const PING_INTERVAL: Duration = Duration::from_secs(20);
/// A connection from which nothing (not even a pong) came for this long is closed (1001).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Close code for a client that fell more than `max_queued` updates behind: policy violation.
pub const SLOW_CLIENT_CLOSE: u16 = 1008;

/// The batcher of item updates: one frame (a JSON array) per batch, the newest update per item.
pub type UpdateBatcher = MessageBatcher<ItemUpdate, Message, u64>;

/// The demo's batcher: 10 updates or 100 ms per frame, latest wins per item, at most `max_queued` waiting per
/// client, then `overflow`.
pub fn batcher(
    max_queued: usize,
    overflow: Overflow,
) -> Result<UpdateBatcher, tower_kit::core::ConfigError> {
    // ANCHOR: batcher
    MessageBatcher::builder(encode)
        .weigh(weigh)
        .max_queued(max_queued)
        .overflow(overflow)
        .latest_wins(ItemUpdate::item_id)
        .build()
    // ANCHOR_END: batcher
}

fn encode(batch: Vec<ItemUpdate>) -> Message {
    // Serialising these types cannot fail; an empty array would be the harmless answer if it did.
    Message::Text(
        serde_json::to_string(&batch)
            .unwrap_or_else(|_| "[]".to_owned())
            .into(),
    )
}

/// About the JSON size of an update.
fn weigh(update: &ItemUpdate) -> usize {
    match update {
        ItemUpdate::Created { item } => {
            120 + item.name.len()
                + item.description.len()
                + item.tags.iter().map(|t| t.len() + 3).sum::<usize>()
        }
        ItemUpdate::PriceChanged { .. } => 56,
    }
}

#[derive(Clone)]
struct Ws {
    items: Items,
    meter: WebSocketMetrics,
    stats: WebSocketHandle,
    batcher: UpdateBatcher,
}

/// `GET /ws` and `GET /api/performance/websocket` with the demo's settings.
pub fn router(items: &Items) -> Result<Router, tower_kit::core::ConfigError> {
    // ANCHOR: meter
    let meter = WebSocketMetrics::builder()
        .ping_interval(Some(PING_INTERVAL))
        .idle_timeout(Some(IDLE_TIMEOUT))
        .build()?;
    // ANCHOR_END: meter
    let batcher = batcher(
        tower_kit_batch::ws::DEFAULT_MAX_QUEUED,
        Overflow::Close {
            code: SLOW_CLIENT_CLOSE,
        },
    )?;
    Ok(router_with(items, meter, batcher))
}

/// [`router`] with your own metering and batching.
pub fn router_with(items: &Items, meter: WebSocketMetrics, batcher: UpdateBatcher) -> Router {
    Router::new()
        .route("/ws", get(upgrade))
        .route("/api/performance/websocket", get(snapshot))
        .with_state(Ws {
            items: items.clone(),
            stats: meter.handle(),
            meter,
            batcher,
        })
}

async fn snapshot(State(ws): State<Ws>) -> impl IntoResponse {
    Json(ws.stats.snapshot())
}

async fn upgrade(ws: WebSocketUpgrade, route: MatchedPath, State(state): State<Ws>) -> Response {
    ws.on_upgrade(move |socket| serve(socket, route, state))
}

// ANCHOR: serve
async fn serve(socket: WebSocket, route: MatchedPath, state: Ws) {
    // Subscribe first, so no update between the upgrade and the loop is missed.
    let mut updates = state.items.updates();
    let socket = state.meter.wrap(socket, route.as_str());
    let (sink, mut stream) = socket.split();
    let (sender, driver) = state.batcher.attach(sink);
    let mut driver = pin!(driver);
    let mut driver_done = false;
    loop {
        tokio::select! {
            update = updates.recv() => match update {
                Ok(update) => {
                    // Full under a drop policy: the update is dropped and the connection goes on.
                    if sender.send(update).is_err() && sender.is_closed() {
                        break;
                    }
                }
                // The broadcast outran this task: the skipped updates are lost, the next ones come.
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break,
            },
            message = stream.next() => match message {
                Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                    let _ = sender.send_frame(m);
                }
                // Pings are answered by axum; a close frame is followed by the end of the stream.
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
            // The slow-client policy closed the connection, or the socket failed.
            _ = &mut driver, if !driver_done => {
                driver_done = true;
                break;
            }
        }
    }
    drop(sender);
    if !driver_done {
        // Flush what is pending, briefly: the client may be gone.
        let _ = tokio::time::timeout(Duration::from_secs(1), driver).await;
    }
}
// ANCHOR_END: serve
