//! An Engine.IO session over a WebSocket from its handshake on
//! (`transports: ["websocket"]`): the [`Socket`] is the WebSocket itself,
//! each message one Engine.IO packet. No task or channel besides the
//! session's own, so such a connection costs what a `/ws` one does; only a
//! session that starts on long-polling needs the shared state of `eio`.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::extract::ws::{CloseFrame, Message};

use crate::ws::WebSocket;
use futures::{Sink, SinkExt, Stream, StreamExt};

use super::engine::{farewell, DecodeError, Packet};
use crate::session::{code, count_error, Socket};

/// A WebSocket carrying Engine.IO packets.
pub(super) struct EioWebSocket {
    socket: WebSocket,
    /// Messages that go before the next one the session writes: a pong to
    /// a client's ping, the Socket.IO DISCONNECT before a final close.
    /// Empty (and unallocated) almost always.
    pending: VecDeque<Message>,
    /// The client sent the close packet: the stream has ended.
    closed: bool,
    /// The client sent a broken packet: the stream ends with this error
    /// once the close frame 1002 went out.
    broken: Option<DecodeError>,
}

impl EioWebSocket {
    /// Wraps `socket`, after the handshake packet was sent on it.
    pub(super) fn new(socket: WebSocket) -> Self {
        Self {
            socket,
            pending: VecDeque::new(),
            closed: false,
            broken: None,
        }
    }

    /// A broken packet: counted, answered with close 1002, and the end of
    /// the stream.
    fn refuse(&mut self, error: DecodeError) {
        count_error(error.label());
        self.pending.push_back(Message::Close(Some(CloseFrame {
            code: code::PROTOCOL_ERROR,
            reason: "broken Engine.IO packet".into(),
        })));
        self.broken = Some(error);
    }

    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        while !self.pending.is_empty() {
            ready!(self.socket.poll_ready_unpin(cx))?;
            if let Some(message) = self.pending.pop_front() {
                self.socket.start_send_unpin(message)?;
            }
        }
        Poll::Ready(Ok(()))
    }
}

fn broken(error: impl std::error::Error + Send + Sync + 'static) -> axum::Error {
    axum::Error::new(std::io::Error::new(std::io::ErrorKind::InvalidData, error))
}

impl Stream for EioWebSocket {
    type Item = Result<Message, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(error) = self.broken.clone() {
                let _ = ready!(self.poll_pending(cx));
                let _ = ready!(self.socket.poll_flush_unpin(cx));
                return Poll::Ready(Some(Err(broken(error))));
            }
            if self.closed {
                // The close packet is answered with a close frame, sent
                // before the stream ends (and the session drops the socket).
                let _ = ready!(self.poll_pending(cx));
                let _ = ready!(self.socket.poll_flush_unpin(cx));
                return Poll::Ready(None);
            }
            let text = match ready!(self.socket.poll_next_unpin(cx)) {
                Some(Ok(Message::Text(text))) => text,
                other => return Poll::Ready(other),
            };
            match Packet::decode_text(text.as_str()) {
                Ok(Packet::Message(data)) => {
                    return Poll::Ready(Some(Ok(Message::Text(data.into()))))
                }
                Ok(Packet::Pong(_)) => {
                    return Poll::Ready(Some(Ok(Message::Pong(Default::default()))))
                }
                Ok(Packet::Ping(data)) => {
                    // Answered with the next write, or at once if it can go.
                    self.pending
                        .push_back(Message::Text(Packet::Pong(data).encode_text().into()));
                    if self.poll_pending(cx).is_ready() {
                        let _ = self.socket.poll_flush_unpin(cx);
                    }
                }
                Ok(Packet::Close) => {
                    self.closed = true;
                    self.pending.push_back(Message::Close(Some(CloseFrame {
                        code: code::NORMAL,
                        reason: "closed by the client".into(),
                    })));
                }
                Ok(Packet::Noop) => {}
                Ok(Packet::Open(_) | Packet::Upgrade | Packet::Binary(_)) => {
                    self.refuse(DecodeError::Unexpected);
                }
                Err(error) => self.refuse(error),
            }
        }
    }
}

impl Sink<Message> for EioWebSocket {
    type Error = axum::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        ready!(self.poll_pending(cx))?;
        self.socket.poll_ready_unpin(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, message: Message) -> Result<(), axum::Error> {
        let framed = match message {
            Message::Text(text) => Message::Text(
                Packet::Message(text.as_str().to_owned())
                    .encode_text()
                    .into(),
            ),
            Message::Ping(_) => Message::Text(Packet::Ping(String::new()).encode_text().into()),
            Message::Pong(_) => return Ok(()),
            binary_or_close => binary_or_close,
        };
        self.socket.start_send_unpin(framed)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        ready!(self.poll_pending(cx))?;
        self.socket.poll_flush_unpin(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        ready!(self.poll_pending(cx))?;
        self.socket.poll_close_unpin(cx)
    }
}

impl Socket for EioWebSocket {
    /// The client answers the node's Engine.IO ping (`2`) with a pong (`3`).
    const ANSWERS_PINGS: bool = true;

    /// The close frame, after [`farewell`]'s packet.
    fn send_close(
        &mut self,
        frame: CloseFrame,
    ) -> impl std::future::Future<Output = Result<(), axum::Error>> + Send {
        if let Some(packet) = farewell(&frame) {
            self.pending
                .push_back(Message::Text(packet.encode_text().into()));
        }
        self.send(Message::Close(Some(frame)))
    }
}
