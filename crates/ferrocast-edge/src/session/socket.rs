//! What a session runs over: the [`Socket`] trait, and the node's WebSocket
//! as the first (and cheapest) kind of socket.

use std::future::Future;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message};
use bytes::Bytes;
use futures::{Sink, SinkExt, Stream};

use super::writer::Outgoing;
use crate::settings::EdgeSettings;
use crate::ws::{compress_shared, WebSocket};

/// A transport a session can run over: a stream of the client's messages
/// and a sink of the node's, in WebSocket terms. A WebSocket is one as it is;
/// a SockJS session (over a WebSocket or over HTTP requests) adapts its own
/// transport to it, so that every kind of session runs the same lifecycle
/// (`session::serve`): the protocols, the writer, the keep-alive and the
/// close.
///
/// The keep-alive sends [`Message::Ping`] every [`Socket::keepalive_interval`]:
/// a WebSocket ping, or what the transport has instead (a SockJS heartbeat
/// frame `h`). Only a transport whose client answers pings
/// ([`Socket::ANSWERS_PINGS`]) is closed for not answering in time; the others
/// end their stream when their own liveness rule says the client is gone.
pub(crate) trait Socket:
    Stream<Item = Result<Message, axum::Error>>
    + Sink<Message, Error = axum::Error>
    + Unpin
    + Send
    + 'static
{
    /// Whether the client answers [`Message::Ping`] with a pong: the session
    /// closes a client that stays silent after a ping for the pong timeout.
    const ANSWERS_PINGS: bool = true;

    /// The `protocol` label of connection metrics for a session speaking
    /// `protocol` (a [`Protocol::LABEL`](super::Protocol::LABEL)) over this socket.
    fn label(protocol: &'static str) -> &'static str {
        protocol
    }

    /// How often the keep-alive sends [`Message::Ping`].
    fn keepalive_interval(settings: &EdgeSettings) -> Duration {
        settings.ping_interval
    }

    /// Whether the socket sends [`Outgoing::Shared`] deliveries compressed
    /// once for every subscriber: protocols then stage each such delivery
    /// as its own message.
    fn shares_frames(&self) -> bool {
        false
    }

    /// Queues `outgoing`, after [`Sink::poll_ready`] said it may.
    fn start_send_outgoing(&mut self, outgoing: Outgoing) -> Result<(), axum::Error> {
        self.start_send_unpin(outgoing.into_message())
    }

    /// Sends the close frame, after what was sent before it.
    fn send_close(
        &mut self,
        frame: CloseFrame,
    ) -> impl Future<Output = Result<(), axum::Error>> + Send {
        self.send(Message::Close(Some(frame)))
    }
}

/// A plain WebSocket: pings, pongs and the close handshake of RFC 6455, and
/// deliveries compressed once for every subscriber where permessage-deflate
/// was negotiated with the default window.
impl Socket for WebSocket {
    fn shares_frames(&self) -> bool {
        self.shares_compressed_frames()
    }

    fn start_send_outgoing(&mut self, outgoing: Outgoing) -> Result<(), axum::Error> {
        match outgoing {
            Outgoing::Message(message) => self.start_send_unpin(message),
            Outgoing::Shared(delivery, format) => {
                let frame = format.frame(&delivery);
                self.start_send_prepared(format.is_binary(), frame, || {
                    delivery
                        .compressed(format.wire(), frame, |plain| {
                            Bytes::from(compress_shared(plain))
                        })
                        .clone()
                })
            }
        }
    }
}
