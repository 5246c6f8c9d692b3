//! The [`Socket`]s a SockJS session runs over besides [`HttpSocket`]
//! (super::http_session): the SockJS WebSocket transport
//! ([`FramedWebSocket`]), and [`Replay`], which hands a session the message
//! that chose its protocol.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};

use crate::ws::WebSocket;
use bytes::Bytes;
use futures::{Sink, SinkExt, Stream, StreamExt};

use super::frame;
use crate::session::{count_error, Socket};
use crate::settings::EdgeSettings;

/// `/<server>/<session>/websocket`: SockJS frames over a WebSocket. The
/// client sends JSON arrays of messages (or one JSON string); the node sends
/// `a[…]` for each message, `h` for each keep-alive ping, and `c[…]` before
/// the WebSocket close frame. Broken JSON ends the connection at once.
pub(super) struct FramedWebSocket {
    socket: WebSocket,
    /// Messages of the last WebSocket message not yet handed on.
    incoming: VecDeque<String>,
    /// The WebSocket close frame, sent after the `c[…]` frame went.
    closing: Option<CloseFrame>,
}

impl FramedWebSocket {
    /// Wraps `socket`, after the open frame was sent on it.
    pub(super) fn new(socket: WebSocket) -> Self {
        Self {
            socket,
            incoming: VecDeque::new(),
            closing: None,
        }
    }

    /// Sends the WebSocket close frame that follows a `c[…]` frame.
    fn poll_closing(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        if self.closing.is_some() {
            ready!(self.socket.poll_ready_unpin(cx))?;
            if let Some(frame) = self.closing.take() {
                self.socket.start_send_unpin(Message::Close(Some(frame)))?;
            }
        }
        Poll::Ready(Ok(()))
    }
}

fn text(frame: Bytes) -> Result<Message, axum::Error> {
    Utf8Bytes::try_from(frame)
        .map(Message::Text)
        .map_err(axum::Error::new)
}

impl Stream for FramedWebSocket {
    type Item = Result<Message, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(message) = self.incoming.pop_front() {
                return Poll::Ready(Some(Ok(Message::Text(message.into()))));
            }
            let payload = match ready!(self.socket.poll_next_unpin(cx)) {
                Some(Ok(Message::Text(text))) => Bytes::from(text),
                Some(Ok(Message::Binary(bytes))) => bytes,
                other => return Poll::Ready(other),
            };
            match frame::decode_websocket(&payload) {
                Ok(messages) => self.incoming.extend(messages),
                Err(error) => {
                    count_error(error.label());
                    let broken = std::io::Error::new(std::io::ErrorKind::InvalidData, error);
                    return Poll::Ready(Some(Err(axum::Error::new(broken))));
                }
            }
        }
    }
}

impl Sink<Message> for FramedWebSocket {
    type Error = axum::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        ready!(self.poll_closing(cx))?;
        self.socket.poll_ready_unpin(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, message: Message) -> Result<(), axum::Error> {
        let framed = match message {
            Message::Text(text) => frame::messages([&frame::quoted(text.as_str())]),
            Message::Binary(bytes) => {
                frame::messages([&frame::quoted(&String::from_utf8_lossy(&bytes))])
            }
            Message::Ping(_) => frame::HEARTBEAT,
            Message::Pong(_) => return Ok(()),
            Message::Close(close) => {
                let framed = super::http_session::close_frame(close.clone());
                self.closing = close;
                framed
            }
        };
        self.socket.start_send_unpin(text(framed)?)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        ready!(self.poll_closing(cx))?;
        self.socket.poll_flush_unpin(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        ready!(self.poll_closing(cx))?;
        self.socket.poll_close_unpin(cx)
    }
}

impl Socket for FramedWebSocket {
    const ANSWERS_PINGS: bool = false;

    fn label(protocol: &'static str) -> &'static str {
        super::label(protocol)
    }

    fn keepalive_interval(settings: &EdgeSettings) -> Duration {
        settings.sockjs.heartbeat
    }
}

/// A socket whose first message was already read (it chose the session's
/// protocol): the stream yields it again before the rest.
pub(super) struct Replay<S> {
    first: Option<Message>,
    socket: S,
}

impl<S> Replay<S> {
    pub(super) fn new(first: Message, socket: S) -> Self {
        Self {
            first: Some(first),
            socket,
        }
    }
}

impl<S: Socket> Stream for Replay<S> {
    type Item = Result<Message, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        self.socket.poll_next_unpin(cx)
    }
}

impl<S: Socket> Sink<Message> for Replay<S> {
    type Error = axum::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        self.socket.poll_ready_unpin(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, message: Message) -> Result<(), axum::Error> {
        self.socket.start_send_unpin(message)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        self.socket.poll_flush_unpin(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        self.socket.poll_close_unpin(cx)
    }
}

impl<S: Socket> Socket for Replay<S> {
    const ANSWERS_PINGS: bool = S::ANSWERS_PINGS;

    fn label(protocol: &'static str) -> &'static str {
        S::label(protocol)
    }

    fn keepalive_interval(settings: &EdgeSettings) -> Duration {
        S::keepalive_interval(settings)
    }

    fn send_close(
        &mut self,
        frame: CloseFrame,
    ) -> impl std::future::Future<Output = Result<(), axum::Error>> + Send {
        self.socket.send_close(frame)
    }
}
