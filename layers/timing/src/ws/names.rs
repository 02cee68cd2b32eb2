//! The names of the WebSocket metrics and labels, for dashboards, alerts and tests.
//!
//! They follow the style of the HTTP ones ([`crate::names`]): OpenTelemetry-like dotted names, seconds and bytes as
//! units, the route template as `http.route`, and OpenTelemetry's `network.io.direction` (`transmit` for messages
//! the server sends, `receive` for messages it gets). A Prometheus exporter renders `websocket.server.messages` as
//! `websocket_server_messages_total`.

/// Counter: connections opened (sockets wrapped). Label: route.
pub const CONNECTIONS_OPENED: &str = "websocket.server.connections.opened";
/// Gauge: connections open now. Label: route.
pub const ACTIVE_CONNECTIONS: &str = "websocket.server.active_connections";
/// Histogram, seconds: how long a closed connection was open. Labels: route and [`CLOSE_CODE`]; its count is the
/// number of connections closed.
pub const CONNECTION_DURATION: &str = "websocket.server.connection.duration";
/// Counter: data messages (text and binary; not pings, pongs or close frames). Labels: route and [`DIRECTION`].
pub const MESSAGES: &str = "websocket.server.messages";
/// Counter, bytes: payload bytes of data messages. Labels: route and [`DIRECTION`].
pub const MESSAGE_BYTES: &str = "websocket.server.message.bytes";
/// Counter: sends that failed (the socket refused a message, a flush or the close). Label: route.
pub const SEND_ERRORS: &str = "websocket.server.send.errors";

/// Label: the route template the socket was opened on (`/ws`), capped like the HTTP route label.
pub const ROUTE: &str = crate::names::ROUTE;
/// Label: `transmit` (server to client) or `receive` (client to server).
pub const DIRECTION: &str = "network.io.direction";
/// Label on [`CONNECTION_DURATION`]: the close code of the first close frame sent or received, or `1006` when the
/// connection ended without one (an abrupt drop).
pub const CLOSE_CODE: &str = "websocket.close.code";

/// [`DIRECTION`] value of messages the server sends.
pub const TRANSMIT: &str = "transmit";
/// [`DIRECTION`] value of messages the server receives.
pub const RECEIVE: &str = "receive";
