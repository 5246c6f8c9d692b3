//! What the client hands to the application: messages and gap markers on a
//! subscription, connection events on the client.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use ferrocast_protocol::StreamPosition;
use ferrocast_protocol::Topic;

/// A publication received on a subscription.
#[derive(Debug, Clone)]
pub struct Message {
    pub(crate) topic: Topic,
    pub(crate) data: Box<RawValue>,
    pub(crate) position: Option<StreamPosition>,
    pub(crate) content_type: Option<String>,
    pub(crate) base64: bool,
}

impl Message {
    /// The topic it was published on (for a pattern subscription, the topic
    /// that matched).
    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    /// The published data, as the JSON text the node sent.
    pub fn data(&self) -> &RawValue {
        &self.data
    }

    /// The published data, deserialized.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.data.get())
    }

    /// Its position in the topic's history, when the topic's namespace keeps
    /// history.
    pub fn position(&self) -> Option<&StreamPosition> {
        self.position.as_ref()
    }

    /// The content type of a publication that was not JSON (made over
    /// STOMP): [`Message::data`] is then a JSON string holding the body.
    pub fn content_type(&self) -> Option<&str> {
        self.content_type.as_deref()
    }

    /// Whether that string is base64 (the body was not UTF-8).
    pub fn is_base64(&self) -> bool {
        self.base64
    }
}

/// What a [`Subscription`](crate::Subscription) yields.
#[derive(Debug, Clone)]
pub enum Item {
    Message(Message),
    /// Publications may be missing at this point of the stream: what
    /// follows does not continue what came before. Reload the state the
    /// messages build (from your own backend), then go on.
    Gap(Gap),
}

/// Why publications may be missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gap {
    /// The subscription was restored (after a reconnect, or from the position
    /// given to [`Client::subscribe_from`](crate::Client::subscribe_from))
    /// but the node could not replay everything missed: the topic's history
    /// no longer reaches back (trimmed by size, expired, or started over in a
    /// new epoch), its namespace keeps no history, or the subscription is a
    /// pattern (patterns do not resume).
    NotRecovered,
    /// The application read too slowly, the subscription's buffer was full,
    /// and the publications dropped meanwhile cannot be read again (the
    /// topic keeps no history, or it is a pattern).
    Overflow,
    /// The offsets jumped from `last` to `next` although the node said
    /// nothing was missed. A node never does this; the client reports it
    /// rather than skip silently.
    Skipped {
        last: StreamPosition,
        next: StreamPosition,
    },
}

/// A change of the client's connection, from [`Client::events`](crate::Client::events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A connection to `url` is open; subscriptions are being restored.
    Connected { url: String },
    /// Connecting to `url` failed; the next attempt (at the next URL) is in
    /// `retry_in`.
    ConnectFailed {
        url: String,
        error: String,
        retry_in: Duration,
    },
    /// The connection to `url` ended: closed by the node with `code` and
    /// `reason` (`1012`: the node drains), or lost (`code` is `None`). The
    /// next attempt (at the next URL) is in `retry_in`.
    Disconnected {
        url: String,
        code: Option<u16>,
        reason: String,
        retry_in: Duration,
    },
    /// The node closed the connection with 4002 (the server API's
    /// Disconnect): the client does not reconnect; its streams end.
    DisconnectedByServer { url: String, reason: String },
    /// A subscription was restored after a reconnect (or after the
    /// application caught up with a full buffer): `recovered` says whether
    /// everything missed meanwhile was replayed. When it is `false` the
    /// subscription also yields [`Item::Gap`] at that point.
    Resubscribed { filter: String, recovered: bool },
    /// The node refused to restore a subscription (`code` and `message` of
    /// its error); the subscription has ended.
    SubscriptionEnded {
        filter: String,
        code: String,
        message: String,
    },
    /// This receiver fell behind and missed `count` events.
    Lagged { count: u64 },
}
