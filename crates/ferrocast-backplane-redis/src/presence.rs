//! Presence in Redis: who is subscribed to the topics of namespaces with
//! presence.
//!
//! # Layout
//! Each topic has two keys, named after its channel `{prefix}{topic}` (the
//! channel is the hash tag, as for history, so both live in one slot):
//!
//! - `{<channel>}:presence`, a hash: client id → the entry as JSON.
//! - `{<channel>}:presence:exp`, a sorted set: client id → when the entry
//!   expires, in milliseconds of the *server's* clock.
//!
//! # Scripts
//! - `presence/update.lua` writes one node's changes to one topic: sets the
//!   added entries with an expiry of now + ttl, deletes the removed ones,
//!   drops every entry that expired (a dead node's), and gives both keys the
//!   time-to-live of the longest-lived entry (so a topic whose nodes all
//!   died vanishes by itself).
//! - `presence/read.lua` returns the entries whose expiry lies ahead.
//!
//! Both use Redis's `TIME`, so nodes with skewed clocks agree, and run in
//! the publisher's pipelines like the history scripts (module `history`).
//! A node's update of many topics is one script call per topic, all queued
//! together, so they travel in one pipeline.

use bytes::Bytes;
use redis::Value;

use ferrocast_core::backplane::{BackplaneError, PresenceEntry};
use ferrocast_protocol::Topic;

use crate::history::{unexpected, Call, Script};
use crate::interest::channel_name;

/// `{<channel>}:presence` and `{<channel>}:presence:exp`.
fn keys(prefix: &str, topic: &Topic) -> [String; 2] {
    let channel = channel_name(prefix, topic.as_str());
    [
        format!("{{{channel}}}:presence"),
        format!("{{{channel}}}:presence:exp"),
    ]
}

/// The update of one topic: `add` stored for `ttl_ms`, `remove` deleted.
pub(crate) fn update(
    prefix: &str,
    topic: &Topic,
    add: &[PresenceEntry],
    remove: &[String],
    ttl_ms: u64,
) -> Call {
    let mut args = Vec::with_capacity(2 + 2 * add.len() + remove.len());
    args.push(Bytes::from(ttl_ms.max(1).to_string()));
    args.push(Bytes::from(add.len().to_string()));
    for entry in add {
        args.push(Bytes::from(entry.client.clone()));
        // Serializing strings and integers cannot fail.
        args.push(Bytes::from(serde_json::to_vec(entry).unwrap_or_default()));
    }
    args.extend(remove.iter().map(|client| Bytes::from(client.clone())));
    Call::new(Script::PresenceUpdate, keys(prefix, topic), args)
}

/// The read of one topic's entries.
pub(crate) fn read(prefix: &str, topic: &Topic) -> Call {
    Call::new(Script::PresenceRead, keys(prefix, topic), Vec::new())
}

/// The entries that `read.lua` returned.
pub(crate) fn entries(reply: Value) -> Result<Vec<PresenceEntry>, BackplaneError> {
    let Value::Array(items) = reply else {
        return Err(unexpected("presence read", &reply));
    };
    items
        .into_iter()
        .map(|item| match item {
            Value::BulkString(bytes) => serde_json::from_slice(&bytes).map_err(|error| {
                BackplaneError::Rejected(format!("a presence entry is not valid: {error}"))
            }),
            other => Err(unexpected("presence read", &other)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_channel_slot() {
        let topic = Topic::parse("chat.a", 255).unwrap();
        assert_eq!(
            keys("ferrocast:", &topic),
            [
                "{ferrocast:chat.a}:presence".to_string(),
                "{ferrocast:chat.a}:presence:exp".to_string()
            ]
        );
    }

    #[test]
    fn replies_are_checked() {
        let entry = PresenceEntry {
            client: "n-1".into(),
            user: None,
            node: "n".into(),
            joined_at: 1,
        };
        let stored = Value::BulkString(serde_json::to_vec(&entry).unwrap());
        assert_eq!(entries(Value::Array(vec![stored])), Ok(vec![entry]));
        assert!(entries(Value::Int(1)).is_err());
        assert!(entries(Value::Array(vec![Value::BulkString(b"{".to_vec())])).is_err());
    }
}
