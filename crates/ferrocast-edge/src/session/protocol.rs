//! What differs between subprotocols: the [`Protocol`] trait a session kind
//! implements, and the helpers protocols share.

use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes};
use bytes::Bytes;
use metrics::counter;

use ferrocast_core::metrics as names;
use ferrocast_core::Outbound;
use ferrocast_protocol::TopicFilter;

use super::writer::Staged;
use super::{End, Link};

/// A protocol-level keep-alive, agreed with the client (STOMP heart-beats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Heartbeat {
    /// How often the node sends a heart-beat, if at all.
    pub(crate) send_every: Option<Duration>,
    /// How long the client may stay silent before it is closed, if checked.
    pub(crate) expect_within: Option<Duration>,
}

/// What differs between subprotocols.
pub(crate) trait Protocol: Send + 'static {
    /// What a request that waited on the backplane hands back.
    type Completion: Send + 'static;
    /// The `protocol` label of connection metrics.
    const LABEL: &'static str;

    /// A text or binary message from the client. `Some` ends the session.
    fn on_message(&mut self, link: &mut Link<Self::Completion>, message: Message) -> Option<End>;

    /// A request that waited on the backplane finished.
    fn on_completion(&mut self, link: &mut Link<Self::Completion>, done: Self::Completion);

    /// Encodes a batch taken from the queue into WebSocket messages, and
    /// returns how many publications it delivered.
    fn encode(&mut self, batch: &[Outbound], out: &mut Staged) -> u64;

    /// The protocol keep-alive currently agreed.
    fn heartbeat(&self) -> Heartbeat {
        Heartbeat::default()
    }

    /// The bytes of one protocol heart-beat.
    fn heartbeat_frame(&self) -> Bytes {
        Bytes::new()
    }

    /// What to send before the close frame when the codec refused a message
    /// as too large (an error in the protocol's own terms).
    fn too_large(&mut self, _max_message_size: usize) -> Option<Message> {
        None
    }

    /// The server API ended the connection's subscription to `filter` (which
    /// it holds): drop every protocol-level subscription using it (through
    /// [`Link::unsubscribe`]) and tell the client if the protocol can.
    fn on_server_unsubscribe(&mut self, link: &mut Link<Self::Completion>, filter: &TopicFilter);

    /// The session is over: undo protocol state (transactions, ...).
    fn on_end(&mut self, _link: &mut Link<Self::Completion>) {}
}

/// Counts an error reply by its protocol-independent code.
pub(crate) fn count_error(code: &'static str) {
    counter!(names::CLIENT_ERRORS, "code" => code).increment(1);
}

/// A text message if `frame` is UTF-8, else a binary one.
pub(crate) fn text_or_binary(frame: Bytes) -> Message {
    match Utf8Bytes::try_from(frame.clone()) {
        Ok(text) => Message::Text(text),
        Err(_) => Message::Binary(frame),
    }
}
