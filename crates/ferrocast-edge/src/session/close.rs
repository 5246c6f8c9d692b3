//! How a session ends: the close codes, the reason counted in metrics, the
//! close frame sent, and the close handshake.

use axum::extract::ws::{CloseFrame, Utf8Bytes};
use futures::SinkExt;
use futures::StreamExt;
use metrics::counter;

use ferrocast_core::metrics as names;
use ferrocast_core::CloseReason;

use super::{Protocol, Socket};

use crate::edge::{Edge, CLOSE_GRACE};
use crate::ws::WsError;

/// Close codes (docs/protocol.md).
pub(crate) mod code {
    pub(crate) const NORMAL: u16 = 1000;
    pub(crate) const PROTOCOL_ERROR: u16 = 1002;
    pub(crate) const UNSUPPORTED_DATA: u16 = 1003;
    pub(crate) const POLICY: u16 = 1008;
    pub(crate) const INVALID_DATA: u16 = 1007;
    pub(crate) const TOO_BIG: u16 = 1009;
    pub(crate) const INTERNAL: u16 = 1011;
    pub(crate) const SERVICE_RESTART: u16 = 1012;
    pub(crate) const SLOW_CONSUMER: u16 = 4000;
    pub(crate) const PING_TIMEOUT: u16 = 4001;
    pub(crate) const DISCONNECTED: u16 = 4002;
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The queue was closed: by fan-out (slow consumer), drain, or the protocol.
    Queue(CloseReason),
    /// The client closed the connection.
    ClientClosed,
    /// The client went away without closing (socket closed, network gone).
    ClientGone,
    /// The codec refused an oversized message.
    TooLarge,
    InvalidUtf8,
    ProtocolError,
    /// A text frame on a subprotocol of binary frames (`ferrocast.v1.proto`).
    TextFrame,
    /// No pong (or protocol heart-beat) in time.
    PingTimeout,
    /// No token came in time, or the token expired.
    TokenDeadline,
    Io,
}

impl End {
    /// The `reason` label of `ferrocast_connections_closed_total`.
    pub(super) fn label(self) -> &'static str {
        match self {
            Self::Queue(CloseReason::SlowConsumer) => "slow_consumer",
            Self::Queue(CloseReason::HistoryUnavailable) => "history_unavailable",
            Self::Queue(CloseReason::Shutdown) => "shutdown",
            Self::Queue(CloseReason::ClientRequest) | Self::ClientClosed => "normal",
            Self::ClientGone => "client_gone",
            Self::Queue(CloseReason::TooLarge) | Self::TooLarge => "too_large",
            Self::Queue(CloseReason::ProtocolError)
            | Self::InvalidUtf8
            | Self::ProtocolError
            | Self::TextFrame => "protocol_error",
            Self::PingTimeout => "ping_timeout",
            Self::Queue(CloseReason::Unauthorized) | Self::TokenDeadline => "unauthorized",
            Self::Queue(CloseReason::Disconnected) => "disconnected",
            Self::Queue(CloseReason::RateLimited) => "rate_limited",
            Self::Io => "error",
        }
    }

    /// The close frame the node sends, if the connection can still carry one.
    pub(crate) fn close_frame(self, edge: &Edge) -> Option<CloseFrame> {
        let settings = edge.settings();
        let (code, reason) = match self {
            Self::Queue(CloseReason::SlowConsumer) => (
                code::SLOW_CONSUMER,
                format!(
                    "slow consumer: more than {} bytes waiting",
                    settings.outbound_queue_bytes
                ),
            ),
            Self::Queue(CloseReason::Shutdown) => return Some(shutdown_frame()),
            Self::Queue(CloseReason::ClientRequest) => (code::NORMAL, "disconnected".into()),
            Self::Queue(CloseReason::HistoryUnavailable) => (
                code::INTERNAL,
                "history unavailable; reconnect and resume from your last position".into(),
            ),
            Self::Queue(CloseReason::ProtocolError) | Self::ProtocolError => {
                (code::PROTOCOL_ERROR, "protocol error".into())
            }
            Self::Queue(CloseReason::TooLarge) | Self::TooLarge => (
                code::TOO_BIG,
                format!("message over {} bytes", settings.max_message_size),
            ),
            Self::InvalidUtf8 => (code::INVALID_DATA, "text frame is not valid UTF-8".into()),
            Self::TextFrame => (
                code::UNSUPPORTED_DATA,
                "text frames are not part of this subprotocol; send binary frames".into(),
            ),
            Self::PingTimeout => (code::PING_TIMEOUT, "no pong within the ping timeout".into()),
            Self::Queue(CloseReason::Unauthorized) => {
                (code::POLICY, "unauthorized: a valid token is needed".into())
            }
            Self::TokenDeadline => (code::POLICY, "no valid token in time, or it expired".into()),
            Self::Queue(CloseReason::Disconnected) => (
                code::DISCONNECTED,
                "disconnected by the server; do not reconnect".into(),
            ),
            Self::Queue(CloseReason::RateLimited) => (code::POLICY, "rate limited".into()),
            Self::ClientClosed | Self::ClientGone | Self::Io => return None,
        };
        Some(CloseFrame {
            code,
            reason: Utf8Bytes::from(reason),
        })
    }
}

/// The close frame of a session that drain ends.
pub(crate) fn shutdown_frame() -> CloseFrame {
    CloseFrame {
        code: code::SERVICE_RESTART,
        reason: Utf8Bytes::from_static("node draining; reconnect to another node"),
    }
}

/// Sends the close frame for `end` (after the protocol's own error for an
/// oversized message) and waits, up to [`CLOSE_GRACE`], for the client's
/// close reply.
pub(super) async fn close<P: Protocol, S: Socket>(
    protocol: &mut P,
    edge: &Edge,
    end: End,
    socket: &mut S,
) {
    let Some(frame) = end.close_frame(edge) else {
        return;
    };
    let farewell = if end == End::TooLarge {
        protocol.too_large(edge.settings().max_message_size)
    } else {
        None
    };
    let handshake = async {
        if let Some(message) = farewell {
            socket.send(message).await?;
        }
        socket.send_close(frame).await?;
        while let Some(Ok(_)) = socket.next().await {}
        Ok::<_, axum::Error>(())
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, handshake).await;
}

/// Maps a read error to how the session ends.
pub(crate) fn classify(error: axum::Error) -> End {
    match error.into_inner().downcast_ref::<WsError>() {
        Some(WsError::TooLarge) => {
            counter!(names::LIMIT_HITS, "limit" => "message_size").increment(1);
            End::TooLarge
        }
        // A compressed message that inflates beyond the size limit: a
        // decompression bomb, or just too large.
        Some(WsError::Inflated) => {
            counter!(names::LIMIT_HITS, "limit" => "inflated_size").increment(1);
            End::TooLarge
        }
        Some(WsError::Utf8) => End::InvalidUtf8,
        // The client went away without a close handshake (closed its socket,
        // or the network dropped it): nothing to answer.
        Some(WsError::Reset | WsError::Closed) => End::ClientGone,
        Some(WsError::Io(error)) if is_disconnect(error.kind()) => End::ClientGone,
        Some(WsError::Protocol(_)) => End::ProtocolError,
        _ => End::Io,
    }
}

pub(super) fn is_disconnect(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        kind,
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
    )
}
