//! What the WebSocket parts of tower-kit need to know about a message type, so that they work with axum's
//! `Message` and tungstenite's alike without depending on either.
//!
//! The timing crate's socket wrapper reads the [`kind`](WsMessage::kind), the
//! [`payload_len`](WsMessage::payload_len) and the [`close_code`](WsMessage::close_code) of each message it sees,
//! and builds pings and close frames for keep-alive and idle timeouts; the batch crate's message batcher builds a
//! close frame when a slow client's queue overflows. Implementations exist for axum's `Message` (features `axum` and
//! `ws`) and tungstenite's `Message` (feature `tungstenite`); implement the trait for your own type to use another
//! WebSocket library.

use bytes::Bytes;

/// The kind of a WebSocket message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MessageKind {
    /// A UTF-8 text message.
    Text,
    /// A binary message.
    Binary,
    /// A ping control frame.
    Ping,
    /// A pong control frame.
    Pong,
    /// A close control frame.
    Close,
    /// Anything else a library exposes (tungstenite's raw `Frame`).
    Other,
}

impl MessageKind {
    /// Whether this is a data message (text or binary), as opposed to a control frame.
    pub fn is_data(self) -> bool {
        matches!(self, MessageKind::Text | MessageKind::Binary)
    }
}

/// Close code 1000: normal closure.
pub const CLOSE_NORMAL: u16 = 1000;
/// Close code 1001: the endpoint is going away (server shutdown, idle timeout).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code 1006: the connection ended without a close frame (never sent on the wire; used in metrics).
pub const CLOSE_ABNORMAL: u16 = 1006;
/// Close code 1008: policy violation (a client too slow to keep up).
pub const CLOSE_POLICY_VIOLATION: u16 = 1008;
/// Close code 1013: try again later.
pub const CLOSE_TRY_AGAIN_LATER: u16 = 1013;

/// A WebSocket message type: its kind, its payload length, its close code, and how to build a ping and a close
/// frame.
pub trait WsMessage: Sized {
    /// The kind of this message.
    fn kind(&self) -> MessageKind;
    /// The payload length in bytes (the text's UTF-8 length, the binary or control payload's length; for a close
    /// frame, 2 bytes of code plus the reason, or 0 without a code).
    fn payload_len(&self) -> usize;
    /// The close code of a close frame that carries one.
    fn close_code(&self) -> Option<u16>;
    /// A ping frame with this payload (at most 125 bytes).
    fn ping(payload: Bytes) -> Self;
    /// A close frame with this code and reason (the reason at most 123 bytes).
    fn close(code: u16, reason: &'static str) -> Self;
}

#[cfg(all(feature = "axum", feature = "ws"))]
mod axum_impl {
    use super::{MessageKind, WsMessage};
    use axum::extract::ws::{CloseFrame, Message};
    use bytes::Bytes;

    impl WsMessage for Message {
        fn kind(&self) -> MessageKind {
            match self {
                Message::Text(_) => MessageKind::Text,
                Message::Binary(_) => MessageKind::Binary,
                Message::Ping(_) => MessageKind::Ping,
                Message::Pong(_) => MessageKind::Pong,
                Message::Close(_) => MessageKind::Close,
            }
        }

        fn payload_len(&self) -> usize {
            match self {
                Message::Text(t) => t.len(),
                Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b.len(),
                Message::Close(Some(frame)) => 2 + frame.reason.len(),
                Message::Close(None) => 0,
            }
        }

        fn close_code(&self) -> Option<u16> {
            match self {
                Message::Close(Some(frame)) => Some(frame.code),
                _ => None,
            }
        }

        fn ping(payload: Bytes) -> Self {
            Message::Ping(payload)
        }

        fn close(code: u16, reason: &'static str) -> Self {
            Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            }))
        }
    }
}

#[cfg(feature = "tungstenite")]
mod tungstenite_impl {
    use super::{MessageKind, WsMessage};
    use bytes::Bytes;
    use tungstenite::protocol::{CloseFrame, Message};

    impl WsMessage for Message {
        fn kind(&self) -> MessageKind {
            match self {
                Message::Text(_) => MessageKind::Text,
                Message::Binary(_) => MessageKind::Binary,
                Message::Ping(_) => MessageKind::Ping,
                Message::Pong(_) => MessageKind::Pong,
                Message::Close(_) => MessageKind::Close,
                Message::Frame(_) => MessageKind::Other,
            }
        }

        fn payload_len(&self) -> usize {
            match self {
                Message::Text(t) => t.len(),
                Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b.len(),
                Message::Close(Some(frame)) => 2 + frame.reason.len(),
                Message::Close(None) => 0,
                Message::Frame(f) => f.payload().len(),
            }
        }

        fn close_code(&self) -> Option<u16> {
            match self {
                Message::Close(Some(frame)) => Some(frame.code.into()),
                _ => None,
            }
        }

        fn ping(payload: Bytes) -> Self {
            Message::Ping(payload)
        }

        fn close(code: u16, reason: &'static str) -> Self {
            Message::Close(Some(CloseFrame {
                code: code.into(),
                reason: reason.into(),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_kinds() {
        assert!(MessageKind::Text.is_data());
        assert!(MessageKind::Binary.is_data());
        assert!(!MessageKind::Ping.is_data());
        assert!(!MessageKind::Close.is_data());
    }

    #[cfg(all(feature = "axum", feature = "ws"))]
    #[test]
    fn axum_messages() {
        use axum::extract::ws::Message;
        let text = Message::Text("héllo".into());
        assert_eq!((text.kind(), text.payload_len()), (MessageKind::Text, 6));
        let close = <Message as WsMessage>::close(4000, "bye");
        assert_eq!(
            (close.kind(), close.payload_len(), close.close_code()),
            (MessageKind::Close, 5, Some(4000))
        );
        assert_eq!(Message::Close(None).close_code(), None);
    }

    #[cfg(feature = "tungstenite")]
    #[test]
    fn tungstenite_messages() {
        use tungstenite::Message;
        let bin = Message::Binary(Bytes::from_static(b"abc"));
        assert_eq!((bin.kind(), bin.payload_len()), (MessageKind::Binary, 3));
        let close = <Message as WsMessage>::close(1001, "idle");
        assert_eq!(close.close_code(), Some(1001));
        assert_eq!(
            <Message as WsMessage>::ping(Bytes::new()).kind(),
            MessageKind::Ping
        );
    }
}
