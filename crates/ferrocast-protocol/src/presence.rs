//! Presence: who is subscribed to a topic of a namespace with presence, and
//! the join/leave events nodes publish on such topics.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::topic::Topic;

/// The content type of a presence event: a publication that a node makes
/// on a topic of a namespace with presence when a client joins or leaves it.
/// Its payload is the whole `{"op":"join"|"leave",…}` object
/// ([`encode_presence_event`]), which JSON clients get as it is.
pub const PRESENCE_CONTENT_TYPE: &str = "application/vnd.ferrocast.presence+json";

/// One subscriber of a topic in a namespace with presence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceEntry {
    /// The subscribing connection, unique in the cluster (`<node>-<conn>`).
    pub client: String,
    /// The connection's user; absent for an anonymous connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The node that serves the connection.
    pub node: String,
    /// When the client subscribed, in milliseconds since the Unix epoch.
    pub joined_at: u64,
}

/// What happened to a topic's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceEvent {
    Join,
    Leave,
}

impl PresenceEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Join => "join",
            Self::Leave => "leave",
        }
    }
}

/// `{"op":"join"|"leave","topic":…,"client":…,"user":…,"node":…,"joined_at":…}`
/// (no `user` for an anonymous client).
pub fn encode_presence_event(event: PresenceEvent, topic: &Topic, entry: &PresenceEntry) -> Bytes {
    #[derive(Serialize)]
    struct Wire<'a> {
        op: &'static str,
        topic: &'a str,
        #[serde(flatten)]
        entry: &'a PresenceEntry,
    }
    let wire = Wire {
        op: event.as_str(),
        topic: topic.as_str(),
        entry,
    };
    // Serializing strings and integers cannot fail.
    Bytes::from(serde_json::to_vec(&wire).unwrap_or_default())
}

/// The event, topic and entry of a presence event's payload, as
/// [`encode_presence_event`] wrote it; `None` for anything else.
pub fn decode_presence_event(payload: &[u8]) -> Option<(PresenceEvent, String, PresenceEntry)> {
    #[derive(Deserialize)]
    struct Wire {
        op: String,
        topic: String,
        #[serde(flatten)]
        entry: PresenceEntry,
    }
    let wire: Wire = serde_json::from_slice(payload).ok()?;
    let event = match wire.op.as_str() {
        "join" => PresenceEvent::Join,
        "leave" => PresenceEvent::Leave,
        _ => return None,
    };
    Some((event, wire.topic, wire.entry))
}
