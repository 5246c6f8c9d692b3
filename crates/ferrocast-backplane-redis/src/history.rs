//! History in Redis: positions and kept publications of the topics whose
//! namespace keeps history.
//!
//! # Layout
//! Each topic has two keys, named after its channel `{prefix}{topic}`:
//!
//! - `{<channel>}:meta`, a hash: `epoch` (the current incarnation of the
//!   topic's history), `top` (the newest offset given) and `rid` (the
//!   replication id of the master that gave it; see Failover below).
//! - `{<channel>}:hist`, a stream with one entry per kept publication, oldest
//!   first: field `o`, its offset, and field `p`, its envelope with the
//!   position set. Entry ids are Redis's own (the time of the append, in ms),
//!   which is what trimming by age uses.
//!
//! The hash tag (the part in braces) is the channel itself, so in Redis
//! Cluster both keys live in the slot of the channel, the slot `SPUBLISH`
//! uses too: one script may touch the keys and publish on the channel.
//! Topic tokens have no braces and the channel prefix may not have any, so
//! the tag is always the whole channel.
//!
//! # Scripts
//! Two Lua scripts do all the work, each in one atomic step:
//!
//! - `history/append.lua` (a publish with history): reads the meta (starting
//!   a new epoch, given by the caller, when there is none), takes the next
//!   offset, appends the envelope with its position to the stream, trims the
//!   stream to the policy's size and age, sets the time-to-live of both keys,
//!   and publishes the positioned envelope on the channel. The position is
//!   appended to the envelope's bytes as protobuf field 8: appending a field
//!   to an encoded message sets it, so the script needs no protobuf library.
//! - `history/read.lua` (history): reads the meta and the stream together and
//!   works out the oldest offset still kept under the policy.
//!
//! Both go through the publisher connection like every publication (module
//! `publisher`), by `EVALSHA` inside its pipelines: publications with and
//! without history keep their call order, and a node reads its own writes.
//! The scripts are loaded (`SCRIPT LOAD`) on each connection when first
//! needed, and again when Redis answers `NOSCRIPT` (its script cache was
//! flushed): a request answered `NOSCRIPT` did not run, so sending it again
//! cannot apply it twice.
//!
//! # Why offsets are never duplicated or skipped
//! Redis runs one script at a time, and nothing else in between: the offset a
//! script takes is the meta's `top` plus one, and it stores that as the new
//! `top` in the same step, so two appends, from any nodes, can never take
//! the same offset. The entry, the new `top` and the publication happen
//! together or not at all (see the comment at the top of `append.lua` for the
//! order that makes a failing script change nothing), so no offset is taken
//! without its publication. Within an epoch the offsets are therefore 1, 2,
//! 3, … in the order Redis ran the appends, and the stream holds a contiguous
//! run of them ending at `top`, which `read.lua` relies on.
//!
//! A history ends as a whole: both keys expire together, a time-to-live
//! after the last append, and the next append starts a new epoch.
//!
//! # Failover
//! Redis replicates asynchronously: a replica promoted after its master died
//! may lack the last appends its master acknowledged (and published). Had
//! the new master continued the epoch, it would give those offsets again to
//! other publications, and a client that had seen the lost ones would miss
//! their replacements without being told. So the meta keeps the replication
//! id of the master that appended (`rid`), and `append.lua` starts a new
//! epoch when it finds another one: a promoted replica, or a master that
//! restarted without its data, ends every history it inherited with its
//! first append there. Until then reads serve the inherited history, which
//! is a prefix of what the old master had (a client that saw more is beyond
//! its top, hence not recovered); afterwards a client resuming from the old
//! epoch is told `recovered: false` and reloads. Nothing is lost silently;
//! the price is that a failover ends the histories of its master's topics.
//! A Redis restarted without persistence lost the meta altogether, so its
//! topics start new epochs too.

use bytes::Bytes;
use redis::{Cmd, Value};

use ferrocast_core::backplane::{envelope, BackplaneError, HistoryPage, HistoryPolicy};
use ferrocast_core::history::new_epoch;
use ferrocast_core::Publication;
use ferrocast_protocol::StreamPosition;

use crate::connection::{ConnectionError, Link};

/// Every script, in the order of [`Script`].
const SOURCES: [&str; 4] = [
    include_str!("history/append.lua"),
    include_str!("history/read.lua"),
    include_str!("presence/update.lua"),
    include_str!("presence/read.lua"),
];

/// The scripts' digests, as the connected Redis gave them, in the order of
/// [`Script`].
#[derive(Debug, Clone)]
pub(crate) struct Scripts {
    digests: Vec<String>,
}

impl Scripts {
    /// Loads every script (`SCRIPT LOAD`; on a cluster, on every member,
    /// so that a promoted replica has them too) within `timeout`.
    pub(crate) async fn load(
        link: &mut Link,
        timeout: std::time::Duration,
    ) -> Result<Self, ConnectionError> {
        let loads = SOURCES.map(|source| {
            let mut link = link.clone();
            async move {
                let mut load = redis::cmd("SCRIPT");
                load.arg("LOAD").arg(source);
                link.command(&load, timeout).await
            }
        });
        let replies = futures::future::join_all(loads)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        let digests = replies.into_iter().map(|reply| match reply {
            Value::BulkString(digest) => String::from_utf8(digest).map_err(|_| {
                ConnectionError::Refused("a script digest that is not UTF-8".to_string())
            }),
            Value::SimpleString(digest) => Ok(digest),
            Value::ServerError(error) => Err(ConnectionError::Refused(format!(
                "redis refused to load the history scripts: {error}"
            ))),
            other => Err(ConnectionError::Refused(format!(
                "unexpected reply to SCRIPT LOAD: {other:?}"
            ))),
        });
        let digests = digests.collect::<Result<Vec<_>, _>>()?;
        if digests.len() != SOURCES.len() {
            return Err(ConnectionError::Refused(
                "no digest in the reply to SCRIPT LOAD".to_string(),
            ));
        }
        Ok(Self { digests })
    }
}

/// The scripts, in the order of [`SOURCES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Script {
    Append = 0,
    Read = 1,
    /// `presence/update.lua` (module `presence`).
    PresenceUpdate = 2,
    /// `presence/read.lua`.
    PresenceRead = 3,
}

/// One invocation of a script (history or presence), waiting in the
/// publisher's queue.
#[derive(Debug)]
pub(crate) struct Call {
    script: Script,
    /// Two keys of one topic (one hash slot).
    keys: [String; 2],
    args: Vec<Bytes>,
}

/// `{<channel>}:meta` and `{<channel>}:hist`.
fn keys(channel: &str) -> [String; 2] {
    [format!("{{{channel}}}:meta"), format!("{{{channel}}}:hist")]
}

/// The policy's size and time-to-live in ms as script arguments, each at
/// least 1.
fn policy_args(policy: HistoryPolicy) -> [Bytes; 2] {
    let ttl_ms = u64::try_from(policy.ttl.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    [
        Bytes::from(policy.size.max(1).to_string()),
        Bytes::from(ttl_ms.to_string()),
    ]
}

impl Call {
    pub(crate) fn new(script: Script, keys: [String; 2], args: Vec<Bytes>) -> Self {
        Self { script, keys, args }
    }

    /// Appends `publication` (its position, if any, is replaced) and
    /// publishes it on `channel` with `publish_command`.
    pub(crate) fn append(
        channel: String,
        mut publication: Publication,
        policy: HistoryPolicy,
        publish_command: &'static str,
    ) -> Self {
        publication.position = None;
        let [size, ttl] = policy_args(policy);
        Self {
            script: Script::Append,
            keys: keys(&channel),
            args: vec![
                envelope::encode(&publication),
                Bytes::from(new_epoch()),
                size,
                ttl,
                Bytes::from(channel),
                Bytes::from_static(publish_command.as_bytes()),
            ],
        }
    }

    /// Reads the history of `channel`'s topic after offset `after`.
    pub(crate) fn read(channel: &str, policy: HistoryPolicy, after: u64) -> Self {
        let [size, ttl] = policy_args(policy);
        Self {
            script: Script::Read,
            keys: keys(channel),
            args: vec![Bytes::from(after.to_string()), size, ttl],
        }
    }

    /// The `EVALSHA` of this call.
    pub(crate) fn command(&self, scripts: &Scripts) -> Cmd {
        let digest = &scripts.digests[self.script as usize];
        let mut command = redis::cmd("EVALSHA");
        command.arg(digest).arg(self.keys.len()).arg(&self.keys[..]);
        for arg in &self.args {
            command.arg(&arg[..]);
        }
        command
    }

    /// The first key, whose hash tag (the topic's channel) places the call
    /// in a cluster.
    pub(crate) fn key(&self) -> &str {
        &self.keys[0]
    }
}

pub(crate) fn unexpected(what: &str, reply: &Value) -> BackplaneError {
    BackplaneError::Rejected(format!("unexpected reply of the {what} script: {reply:?}"))
}

fn text(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}

/// The position that `append.lua` returned.
pub(crate) fn position(reply: Value) -> Result<StreamPosition, BackplaneError> {
    if let Value::Array(items) = &reply {
        if let [epoch, offset] = &items[..] {
            if let (Some(epoch), Some(offset)) = (text(epoch.clone()), number(offset)) {
                return Ok(StreamPosition { epoch, offset });
            }
        }
    }
    Err(unexpected("append", &reply))
}

/// The page that `read.lua` returned.
pub(crate) fn page(reply: Value) -> Result<HistoryPage, BackplaneError> {
    let Value::Array(items) = reply else {
        return Err(unexpected("read", &reply));
    };
    if items.is_empty() {
        return Ok(HistoryPage::empty());
    }
    let malformed = || BackplaneError::Rejected("malformed reply of the read script".to_string());
    let mut items = items.into_iter();
    let epoch = items.next().and_then(text).ok_or_else(malformed)?;
    let top = items
        .next()
        .as_ref()
        .and_then(number)
        .ok_or_else(malformed)?;
    let oldest = items
        .next()
        .as_ref()
        .and_then(number)
        .ok_or_else(malformed)?;
    let publications = items
        .map(|item| match item {
            Value::BulkString(bytes) => envelope::decode(Bytes::from(bytes)).map_err(|error| {
                BackplaneError::Rejected(format!("a history entry is not a publication: {error}"))
            }),
            other => Err(unexpected("read", &other)),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HistoryPage {
        epoch,
        top,
        oldest,
        publications,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_channel_slot() {
        assert_eq!(
            keys("ferrocast:chat.a"),
            [
                "{ferrocast:chat.a}:meta".to_string(),
                "{ferrocast:chat.a}:hist".to_string()
            ]
        );
    }

    #[test]
    fn policy_arguments_are_at_least_one() {
        let policy = HistoryPolicy {
            size: 0,
            ttl: std::time::Duration::from_micros(10),
        };
        assert_eq!(policy_args(policy), [Bytes::from("1"), Bytes::from("1")]);
    }

    #[test]
    fn replies_are_checked() {
        let reply = Value::Array(vec![Value::BulkString(b"e".to_vec()), Value::Int(3)]);
        assert_eq!(
            position(reply),
            Ok(StreamPosition {
                epoch: "e".into(),
                offset: 3
            })
        );
        assert!(position(Value::Int(3)).is_err());
        assert_eq!(page(Value::Array(Vec::new())), Ok(HistoryPage::empty()));
        let garbage = Value::Array(vec![
            Value::BulkString(b"e".to_vec()),
            Value::Int(1),
            Value::Int(1),
            Value::BulkString(b"\xff\xff".to_vec()),
        ]);
        assert!(matches!(page(garbage), Err(BackplaneError::Rejected(_))));
    }
}
