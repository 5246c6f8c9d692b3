//! What runs inside a SockJS session: a ferrocast session (STOMP or the
//! native JSON protocol, told apart by the first message), or, in
//! conformance mode, the reference suite's echo and close services.

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use metrics::counter;
use tokio::sync::OwnedSemaphorePermit;

use ferrocast_core::metrics as names;
use ferrocast_core::Outbound;
use ferrocast_protocol::stomp::Version;
use ferrocast_protocol::TopicFilter;

use super::socket::Replay;
use crate::auth::Identity;
use crate::edge::Edge;
use crate::session::{
    self, count_error, shutdown_frame, text_or_binary, End, JsonProtocol, Link, Protocol, Socket,
    Staged, StompProtocol,
};

/// What a SockJS endpoint serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// ferrocast sessions: STOMP or the JSON protocol.
    Ferrocast,
    /// Conformance: every message comes back.
    Echo,
    /// Conformance: every session is closed at once with `3000 Go away!`.
    Close,
}

/// Serves one session of `kind` over `socket` until it ends; `permit` is
/// its connection slot.
pub(super) async fn run<S: Socket>(
    kind: Kind,
    edge: Edge,
    mut socket: S,
    permit: OwnedSemaphorePermit,
    identity: Option<Identity>,
) {
    match kind {
        Kind::Ferrocast => ferrocast(edge, socket, permit, identity).await,
        Kind::Echo => session::serve(edge, socket, permit, EchoProtocol, identity).await,
        Kind::Close => {
            let go_away = CloseFrame {
                code: 3000,
                reason: Utf8Bytes::from_static("Go away!"),
            };
            let _ = socket.send_close(go_away).await;
            let _ = socket.close().await;
        }
    }
}

/// The protocol the first message of a session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Picked {
    Stomp,
    Json,
}

/// A STOMP frame (`CONNECT` or `STOMP`, what Spring clients send first,
/// after heart-beat newlines) picks STOMP; a JSON object the JSON protocol.
fn pick(first: &[u8]) -> Option<Picked> {
    let start = first.iter().position(|b| !b.is_ascii_whitespace())?;
    let rest = &first[start..];
    if rest.starts_with(b"{") {
        Some(Picked::Json)
    } else if rest.starts_with(b"CONNECT") || rest.starts_with(b"STOMP") {
        Some(Picked::Stomp)
    } else {
        None
    }
}

async fn ferrocast<S: Socket>(
    edge: Edge,
    mut socket: S,
    permit: OwnedSemaphorePermit,
    identity: Option<Identity>,
) {
    let awaiting_token = identity.is_none() && !edge.auth().allows_anonymous();
    let Some(first) = first_message(&edge, &mut socket, awaiting_token).await else {
        return;
    };
    let picked = match &first {
        Message::Text(text) => pick(text.as_bytes()),
        Message::Binary(bytes) => pick(bytes),
        _ => None,
    };
    let socket = Replay::new(first, socket);
    match picked {
        Some(Picked::Stomp) => {
            // The CONNECT frame negotiates the version, up to 1.2.
            let conn = edge.next_session_number();
            let protocol = StompProtocol::new(Version::V1_2, conn, edge.settings());
            Box::pin(session::serve(edge, socket, permit, protocol, identity)).await;
        }
        Some(Picked::Json) => {
            Box::pin(session::serve(edge, socket, permit, JsonProtocol, identity)).await;
        }
        None => {
            count_error("bad_request");
            let refusal = CloseFrame {
                code: session::code::PROTOCOL_ERROR,
                reason: Utf8Bytes::from_static(
                    "the first message must be a STOMP CONNECT frame or a JSON object",
                ),
            };
            let mut socket = socket;
            let _ = socket.send_close(refusal).await;
        }
    }
}

/// Waits for the client's first message, with heartbeats meanwhile; `None`
/// when the client went away, the node drains (the client then got 1012), or
/// a client `awaiting_token` sent nothing within the auth timeout (1008, as a
/// session would close it).
async fn first_message<S: Socket>(
    edge: &Edge,
    socket: &mut S,
    awaiting_token: bool,
) -> Option<Message> {
    let settings = edge.settings();
    let every = S::keepalive_interval(settings);
    let mut heartbeats = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let token_due = async {
        if awaiting_token {
            tokio::time::sleep(settings.auth_timeout).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let mut token_due = std::pin::pin!(token_due);
    loop {
        tokio::select! {
            message = socket.next() => match message {
                Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => return Some(message),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            },
            _ = heartbeats.tick() => {
                socket.send(Message::Ping(Bytes::new())).await.ok()?;
            }
            () = edge.draining().cancelled() => {
                let _ = socket.send_close(shutdown_frame()).await;
                return None;
            }
            () = &mut token_due => {
                counter!(names::CONNECTIONS_REJECTED, "reason" => "unauthorized").increment(1);
                if let Some(frame) = End::TokenDeadline.close_frame(edge) {
                    let _ = socket.send_close(frame).await;
                }
                return None;
            }
        }
    }
}

/// The reference suite's echo service, as a protocol of the shared session:
/// what the client sends comes back.
struct EchoProtocol;

impl Protocol for EchoProtocol {
    type Completion = ();
    const LABEL: &'static str = "echo";

    fn on_message(&mut self, link: &mut Link<()>, message: Message) -> Option<End> {
        match message {
            Message::Text(text) => link.send(Bytes::from(text)),
            Message::Binary(bytes) => link.send(bytes),
            _ => {}
        }
        None
    }

    fn on_completion(&mut self, _: &mut Link<()>, (): ()) {}

    fn encode(&mut self, batch: &[Outbound], out: &mut Staged) -> u64 {
        for item in batch {
            if let Outbound::Frame(frame) = item {
                out.push_back(text_or_binary(frame.clone()));
            }
        }
        0
    }

    fn on_server_unsubscribe(&mut self, _: &mut Link<()>, _: &TopicFilter) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_message_picks_the_protocol() {
        assert_eq!(
            pick(b"CONNECT\naccept-version:1.2\n\n\0"),
            Some(Picked::Stomp)
        );
        assert_eq!(pick(b"\nSTOMP\n\n\0"), Some(Picked::Stomp));
        assert_eq!(pick(br#"{"op":"auth","token":"t"}"#), Some(Picked::Json));
        assert_eq!(pick(b"SEND\n\n\0"), None);
        assert_eq!(pick(b"hello"), None);
        assert_eq!(pick(b""), None);
    }
}
