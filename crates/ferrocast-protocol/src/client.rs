//! The native JSON protocol (`ferrocast.v1.json`) as a client speaks it:
//! [`Request`]s encoded into client frames, server frames split on `\n` and
//! each object decoded into a [`ServerObject`]. The server's side of the same
//! protocol is [`crate::json`]; the tests below hold the two to each other.
//!
//! Decoding borrows from the frame wherever it can: a load generator reads
//! hundreds of thousands of deliveries a second, and a [`Delivery`] is only
//! the topic, the data's JSON text and the position, pointing into the
//! frame. Deliveries in exactly the shape [`crate::json::encode_message`]
//! writes them (JSON data, optional position) are read in place, the data
//! only skipped over ([`decode_object`]); anything else goes through a full
//! `serde_json` parse.
//!
//! The test kit (`ferrocast-testkit`) keeps a decoder of its own on purpose:
//! checking the node with the codec it shares with its clients would hide a
//! bug that both sides have.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::position::StreamPosition;
use crate::presence::PresenceEntry;
use crate::request::{ErrorCode, OkReply};

/// A request of the client, borrowing what it names. `id` asks the node for a
/// reply with the same id; without it the node answers only errors (without
/// an id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    /// Subscribe to a topic or pattern; with `since`, replay what came after
    /// that position first.
    Subscribe {
        id: Option<u64>,
        topic: &'a str,
        since: Option<&'a StreamPosition>,
    },
    Unsubscribe {
        id: Option<u64>,
        topic: &'a str,
    },
    /// Publish `data`, which must be the JSON text of one value (the node
    /// refuses anything else with `bad_request`).
    Publish {
        id: Option<u64>,
        topic: &'a str,
        data: &'a str,
    },
    Ping {
        id: Option<u64>,
    },
    Auth {
        id: Option<u64>,
        token: &'a str,
    },
    /// Who is subscribed to a topic of a namespace with presence.
    Presence {
        id: Option<u64>,
        topic: &'a str,
    },
    /// A topic's history: the newest `limit`, or the oldest `limit` after
    /// `since` (the node caps `limit` at 100).
    History {
        id: Option<u64>,
        topic: &'a str,
        since: Option<&'a StreamPosition>,
        limit: Option<u64>,
    },
}

impl Request<'_> {
    /// The request as one JSON object, without a newline.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(64);
        self.write_to(&mut out);
        out
    }

    /// Appends the request as one JSON object (without a newline) to `out`,
    /// so that a client can batch several into a frame, `\n` between them.
    pub fn write_to(&self, out: &mut String) {
        let (op, id) = match *self {
            Self::Subscribe { id, .. } => ("subscribe", id),
            Self::Unsubscribe { id, .. } => ("unsubscribe", id),
            Self::Publish { id, .. } => ("publish", id),
            Self::Ping { id } => ("ping", id),
            Self::Auth { id, .. } => ("auth", id),
            Self::Presence { id, .. } => ("presence", id),
            Self::History { id, .. } => ("history", id),
        };
        out.push_str(r#"{"op":""#);
        out.push_str(op);
        out.push('"');
        if let Some(id) = id {
            // Writing to a String cannot fail.
            let _ = write!(out, r#","id":{id}"#);
        }
        match *self {
            Self::Subscribe { topic, since, .. } => {
                write_field(out, "topic", topic);
                write_since(out, since);
            }
            Self::History {
                topic,
                since,
                limit,
                ..
            } => {
                write_field(out, "topic", topic);
                write_since(out, since);
                if let Some(limit) = limit {
                    let _ = write!(out, r#","limit":{limit}"#);
                }
            }
            Self::Unsubscribe { topic, .. } | Self::Presence { topic, .. } => {
                write_field(out, "topic", topic);
            }
            Self::Publish { topic, data, .. } => {
                write_field(out, "topic", topic);
                out.push_str(r#","data":"#);
                out.push_str(data);
            }
            Self::Ping { .. } => {}
            Self::Auth { token, .. } => write_field(out, "token", token),
        }
        out.push('}');
    }
}

/// `,"since":{"epoch":…,"offset":…}` when there is a position.
fn write_since(out: &mut String, since: Option<&StreamPosition>) {
    if let Some(since) = since {
        out.push_str(r#","since":{"epoch":"#);
        write_json_str(out, &since.epoch);
        // Writing to a String cannot fail.
        let _ = write!(out, r#","offset":{}}}"#, since.offset);
    }
}

/// `,"name":"value"`.
fn write_field(out: &mut String, name: &str, value: &str) {
    out.push_str(",\"");
    out.push_str(name);
    out.push_str("\":");
    write_json_str(out, value);
}

/// `value` as a JSON string. Topics, the bulk of what is written, never need
/// escaping and are copied as they are.
fn write_json_str(out: &mut String, value: &str) {
    if value.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(value);
        out.push('"');
    } else {
        // Serializing a string cannot fail.
        out.push_str(&serde_json::to_string(value).unwrap_or_default());
    }
}

/// A position in a topic's history as a server object carries it, borrowed
/// from the frame when the epoch needs no unescaping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position<'a> {
    pub epoch: Cow<'a, str>,
    pub offset: u64,
}

impl Position<'_> {
    pub fn to_stream_position(&self) -> StreamPosition {
        StreamPosition {
            epoch: self.epoch.clone().into_owned(),
            offset: self.offset,
        }
    }
}

/// A publication delivered to the client (`{"op":"message",…}`).
#[derive(Debug, Clone)]
pub struct Delivery<'a> {
    /// The topic it was published on (for a pattern, the topic that matched).
    pub topic: Cow<'a, str>,
    /// The data: the JSON text of one value, a slice of the frame. When
    /// `content_type` is set it is a JSON string holding the body (base64
    /// when `base64`).
    pub data: &'a RawValue,
    /// The media type of a publication that was not JSON (made over STOMP
    /// or the protobuf protocol).
    pub content_type: Option<Cow<'a, str>>,
    pub base64: bool,
    /// Where it sits in the topic's history, when the namespace keeps one.
    pub position: Option<Position<'a>>,
}

impl PartialEq for Delivery<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.topic == other.topic
            && self.data.get() == other.data.get()
            && self.content_type == other.content_type
            && self.base64 == other.base64
            && self.position == other.position
    }
}

/// One publication of a history reply: a [`Delivery`] without the topic
/// (the request named it).
#[derive(Debug, Clone)]
pub struct HistoryPublication<'a> {
    /// As [`Delivery::data`].
    pub data: &'a RawValue,
    pub content_type: Option<Cow<'a, str>>,
    pub base64: bool,
    pub position: Option<Position<'a>>,
}

impl PartialEq for HistoryPublication<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.data.get() == other.data.get()
            && self.content_type == other.content_type
            && self.base64 == other.base64
            && self.position == other.position
    }
}

/// A reply `{"op":"error",…}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply<'a> {
    pub id: Option<u64>,
    /// As sent: one of [`ErrorCode`]'s codes from this version of the node,
    /// or a newer one.
    pub code: Cow<'a, str>,
    pub message: Cow<'a, str>,
}

impl ErrorReply<'_> {
    /// The code, when this version of the protocol knows it.
    pub fn known_code(&self) -> Option<ErrorCode> {
        ERROR_CODES
            .into_iter()
            .find(|known| known.as_str() == self.code)
    }
}

/// Every code of `{"op":"error"}`, to read them back.
const ERROR_CODES: [ErrorCode; 8] = [
    ErrorCode::BadRequest,
    ErrorCode::Unauthorized,
    ErrorCode::Forbidden,
    ErrorCode::TooLarge,
    ErrorCode::RateLimited,
    ErrorCode::LimitExceeded,
    ErrorCode::Unavailable,
    ErrorCode::Internal,
];

/// One object of a server frame.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerObject<'a> {
    Message(Delivery<'a>),
    /// `{"op":"ok",…}` to a request with an id (or without one).
    Ok(OkReply),
    /// `{"op":"ok","presence":[…]}`, the reply to a presence request.
    Presence {
        id: Option<u64>,
        entries: Vec<PresenceEntry>,
    },
    /// `{"op":"ok",…,"publications":[…]}`, the reply to a history request:
    /// `reply` holds the topic's top and `recovered`.
    History {
        reply: OkReply,
        publications: Vec<HistoryPublication<'a>>,
    },
    Error(ErrorReply<'a>),
    Pong {
        id: Option<u64>,
    },
    /// The server API ended the connection's subscription to `topic` (a
    /// topic or pattern).
    Unsubscribed {
        topic: Cow<'a, str>,
    },
    /// An op this version does not know; clients ignore it, so that nodes
    /// can add ops.
    Other {
        op: Cow<'a, str>,
    },
}

/// Why an object of a server frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a server object: {0}")]
    Json(#[from] serde_json::Error),
    #[error("a {op:?} object without {field:?}")]
    Missing {
        op: &'static str,
        field: &'static str,
    },
}

/// The objects of one text frame: one object, or several joined by `\n`.
/// Blank lines (a trailing newline) are skipped.
pub fn split_frame(text: &str) -> impl Iterator<Item = &str> {
    text.split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .filter(|line| !line.trim().is_empty())
}

/// Decodes every object of one text frame, in order. An object that cannot
/// be read does not stop the ones after it: objects are delimited by `\n`.
pub fn decode_frame(text: &str) -> impl Iterator<Item = Result<ServerObject<'_>, DecodeError>> {
    split_frame(text).map(decode_object)
}

/// Decodes one object of a server frame (one line).
pub fn decode_object(line: &str) -> Result<ServerObject<'_>, DecodeError> {
    if let Some(delivery) = scan_delivery(line) {
        return Ok(ServerObject::Message(delivery));
    }
    parse_object(line)
}

/// The fields of any server object; which are set depends on `op`.
#[derive(Deserialize)]
struct WireObject<'a> {
    #[serde(borrow)]
    op: Cow<'a, str>,
    #[serde(default)]
    id: Option<u64>,
    #[serde(default, borrow, deserialize_with = "borrowed")]
    topic: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default, borrow, deserialize_with = "borrowed")]
    epoch: Option<Cow<'a, str>>,
    #[serde(default)]
    recovered: Option<bool>,
    #[serde(default, borrow, deserialize_with = "borrowed")]
    code: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "borrowed")]
    message: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "borrowed")]
    content_type: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "borrowed")]
    encoding: Option<Cow<'a, str>>,
    #[serde(default)]
    presence: Option<Vec<PresenceEntry>>,
    #[serde(default, borrow)]
    publications: Option<Vec<WirePublication<'a>>>,
}

/// One publication of a history reply.
#[derive(Deserialize)]
struct WirePublication<'a> {
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default, borrow, deserialize_with = "borrowed")]
    epoch: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "borrowed")]
    content_type: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "borrowed")]
    encoding: Option<Cow<'a, str>>,
}

/// A string borrowed from the frame unless it has escapes: serde borrows a
/// `Cow` only as a field of its own, not inside an `Option`.
fn borrowed<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    #[derive(Deserialize)]
    struct Text<'a>(#[serde(borrow)] Cow<'a, str>);
    Option::<Text<'de>>::deserialize(d).map(|text| text.map(|Text(text)| text))
}

/// Keeps `"data": null` as the JSON `null`, unlike a plain `Option`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Any server object, with `serde_json`.
fn parse_object(line: &str) -> Result<ServerObject<'_>, DecodeError> {
    let wire: WireObject<'_> = serde_json::from_str(line)?;
    let missing = |op, field| DecodeError::Missing { op, field };
    let position = match (wire.epoch.clone(), wire.offset) {
        (Some(epoch), Some(offset)) => Some(Position { epoch, offset }),
        _ => None,
    };
    Ok(match wire.op.as_ref() {
        "message" => ServerObject::Message(Delivery {
            topic: wire.topic.ok_or(missing("message", "topic"))?,
            data: wire.data.ok_or(missing("message", "data"))?,
            base64: wire.encoding.as_deref() == Some("base64"),
            content_type: wire.content_type,
            position,
        }),
        "ok" => {
            let reply = OkReply {
                id: wire.id,
                epoch: wire.epoch.map(Cow::into_owned),
                offset: wire.offset,
                recovered: wire.recovered,
            };
            match (wire.presence, wire.publications) {
                (Some(entries), _) => ServerObject::Presence {
                    id: wire.id,
                    entries,
                },
                (None, Some(publications)) => ServerObject::History {
                    reply,
                    publications: publications
                        .into_iter()
                        .map(|p| HistoryPublication {
                            data: p.data,
                            base64: p.encoding.as_deref() == Some("base64"),
                            content_type: p.content_type,
                            position: p
                                .epoch
                                .zip(p.offset)
                                .map(|(epoch, offset)| Position { epoch, offset }),
                        })
                        .collect(),
                },
                (None, None) => ServerObject::Ok(reply),
            }
        }
        "error" => ServerObject::Error(ErrorReply {
            id: wire.id,
            code: wire.code.ok_or(missing("error", "code"))?,
            message: wire.message.unwrap_or_default(),
        }),
        "pong" => ServerObject::Pong { id: wire.id },
        "unsubscribed" => ServerObject::Unsubscribed {
            topic: wire.topic.ok_or(missing("unsubscribed", "topic"))?,
        },
        _ => ServerObject::Other { op: wire.op },
    })
}

/// The fast path for the bulk of the traffic: a delivery of JSON data exactly
/// as [`crate::json::encode_message`] writes it,
/// `{"op":"message","topic":"…","data":…}` or with `,"offset":N,"epoch":"…"`
/// after the data. The data is only skipped over, without building anything,
/// and the rest is read in place. `None` for anything else (escapes in the
/// topic or epoch, a content type, another field order), which the parser
/// then reads.
fn scan_delivery(line: &str) -> Option<Delivery<'_>> {
    let rest = line.strip_prefix(r#"{"op":"message","topic":""#)?;
    let (topic, rest) = rest.split_once('"')?;
    if topic.contains('\\') {
        return None;
    }
    let rest = rest.strip_prefix(r#","data":"#)?;
    let mut values = serde_json::Deserializer::from_str(rest).into_iter::<&RawValue>();
    let data = values.next()?.ok()?;
    let tail = &rest[values.byte_offset()..];
    let position = match tail {
        "}" => None,
        _ => {
            let tail = tail.strip_prefix(r#","offset":"#)?;
            let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
            let offset = unsigned(&tail[..digits])?;
            let tail = tail[digits..].strip_prefix(r#","epoch":""#)?;
            let epoch = tail.strip_suffix(r#""}"#)?;
            if epoch.contains(['"', '\\']) {
                return None;
            }
            Some(Position {
                epoch: Cow::Borrowed(epoch),
                offset,
            })
        }
    };
    Some(Delivery {
        topic: Cow::Borrowed(topic),
        data,
        content_type: None,
        base64: false,
        position,
    })
}

/// `text` as a JSON unsigned integer (no sign, no leading zero).
fn unsigned(text: &str) -> Option<u64> {
    if text.is_empty() || (text.len() > 1 && text.starts_with('0')) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use crate::json::tests::json_value;
    use bytes::Bytes;
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;
    use crate::json::{
        decode_requests, encode_error, encode_history, encode_message, encode_ok, encode_pong,
        encode_presence, encode_unsubscribed,
    };
    use crate::request::{ClientRequest, HistoryItem, RequestError};
    use crate::topic::{Topic, TopicFilter, MAX_TOPIC_LEN};

    /// What the node decodes from `requests`, sent as one frame.
    fn node_reads(requests: &[Request<'_>]) -> Vec<Result<ClientRequest, RequestError>> {
        let mut text = String::new();
        for request in requests {
            if !text.is_empty() {
                text.push('\n');
            }
            request.write_to(&mut text);
        }
        let frame = Bytes::from(text);
        decode_requests(&frame, MAX_TOPIC_LEN).collect()
    }

    fn text(frame: &Bytes) -> &str {
        std::str::from_utf8(frame).unwrap()
    }

    fn filter(text: &str) -> TopicFilter {
        TopicFilter::parse(text, MAX_TOPIC_LEN).unwrap()
    }

    fn topic(text: &str) -> Topic {
        Topic::parse(text, MAX_TOPIC_LEN).unwrap()
    }

    #[test]
    fn the_node_reads_every_request_as_sent() {
        let since = StreamPosition {
            epoch: "e\"1\n".into(),
            offset: 41,
        };
        let requests = [
            Request::Subscribe {
                id: Some(1),
                topic: "chat.*",
                since: None,
            },
            Request::Subscribe {
                id: None,
                topic: "chat.a",
                since: Some(&since),
            },
            Request::Unsubscribe {
                id: Some(3),
                topic: "chat.a",
            },
            Request::Publish {
                id: Some(4),
                topic: "chat.a",
                data: r#"{"text":"hi"}"#,
            },
            Request::Ping { id: Some(5) },
            Request::Auth {
                id: Some(6),
                token: "a.b\\c",
            },
            Request::Presence {
                id: Some(7),
                topic: "chat.a",
            },
        ];
        assert_eq!(
            node_reads(&requests),
            [
                Ok(ClientRequest::Subscribe {
                    id: Some(1),
                    filter: filter("chat.*"),
                    since: None
                }),
                Ok(ClientRequest::Subscribe {
                    id: None,
                    filter: filter("chat.a"),
                    since: Some(since.clone())
                }),
                Ok(ClientRequest::Unsubscribe {
                    id: Some(3),
                    filter: filter("chat.a")
                }),
                Ok(ClientRequest::Publish {
                    id: Some(4),
                    topic: topic("chat.a"),
                    data: Bytes::from_static(br#"{"text":"hi"}"#),
                    content_type: None
                }),
                Ok(ClientRequest::Ping { id: Some(5) }),
                Ok(ClientRequest::Auth {
                    id: Some(6),
                    token: "a.b\\c".into()
                }),
                Ok(ClientRequest::Presence {
                    id: Some(7),
                    topic: topic("chat.a")
                }),
            ]
        );
        assert_eq!(
            Request::Subscribe {
                id: Some(1),
                topic: "bench.t0",
                since: None
            }
            .encode(),
            r#"{"op":"subscribe","id":1,"topic":"bench.t0"}"#
        );
        assert_eq!(Request::Ping { id: None }.encode(), r#"{"op":"ping"}"#);
        // A topic the node refuses is still sent as valid JSON.
        let refused = node_reads(&[Request::Subscribe {
            id: Some(9),
            topic: "a\"b",
            since: None,
        }]);
        assert!(
            matches!(&refused[..], [Err(e)] if e.id == Some(9) && e.code == ErrorCode::BadRequest),
            "{refused:?}"
        );
    }

    #[test]
    fn every_server_object_the_node_writes_reads_back() {
        let ok = OkReply {
            id: Some(1),
            epoch: Some("e\"".into()),
            offset: Some(41),
            recovered: Some(false),
        };
        assert_eq!(
            decode_object(text(&encode_ok(&ok))).unwrap(),
            ServerObject::Ok(ok)
        );
        assert_eq!(
            decode_object(text(&encode_ok(&OkReply::default()))).unwrap(),
            ServerObject::Ok(OkReply::default())
        );
        let error = RequestError::new(Some(4), ErrorCode::RateLimited, "slow \"down\"");
        let error = encode_error(&error);
        let ServerObject::Error(reply) = decode_object(text(&error)).unwrap() else {
            panic!("not an error");
        };
        assert_eq!(
            (reply.id, reply.known_code(), reply.message.as_ref()),
            (Some(4), Some(ErrorCode::RateLimited), "slow \"down\"")
        );
        assert_eq!(
            decode_object(text(&encode_pong(Some(5)))).unwrap(),
            ServerObject::Pong { id: Some(5) }
        );
        assert_eq!(
            decode_object(text(&encode_unsubscribed(&filter("chat.>")))).unwrap(),
            ServerObject::Unsubscribed {
                topic: "chat.>".into()
            }
        );
        let entries = vec![PresenceEntry {
            client: "n1-4".into(),
            user: None,
            node: "n1".into(),
            joined_at: 5,
        }];
        assert_eq!(
            decode_object(text(&encode_presence(Some(3), &entries))).unwrap(),
            ServerObject::Presence {
                id: Some(3),
                entries
            }
        );
        let (chat, top) = (
            topic("chat.a"),
            StreamPosition {
                epoch: "e".into(),
                offset: 7,
            },
        );
        let (json, binary) = (Bytes::from_static(b"[1]"), Bytes::from_static(&[0xff, 0]));
        let history = encode_history(
            Some(6),
            &top,
            true,
            [
                HistoryItem {
                    topic: &chat,
                    payload: &json,
                    content_type: None,
                    position: Some(&top),
                },
                HistoryItem {
                    topic: &chat,
                    payload: &binary,
                    content_type: Some("application/octet-stream"),
                    position: None,
                },
            ],
        );
        let ServerObject::History {
            reply,
            publications,
        } = decode_object(text(&history)).unwrap()
        else {
            panic!("not a history reply");
        };
        assert_eq!(
            reply,
            OkReply {
                id: Some(6),
                epoch: Some("e".into()),
                offset: Some(7),
                recovered: Some(true),
            }
        );
        let read: Vec<_> = publications
            .iter()
            .map(|p| {
                (
                    p.data.get(),
                    p.base64,
                    p.content_type.as_deref(),
                    p.position.as_ref().map(Position::to_stream_position),
                )
            })
            .collect();
        assert_eq!(
            read,
            [
                ("[1]", false, None, Some(top.clone())),
                (r#""/wA=""#, true, Some("application/octet-stream"), None),
            ]
        );
        let stomp = encode_message(
            &topic("f.x"),
            &[0xff, 0],
            Some("application/octet-stream"),
            None,
        );
        let ServerObject::Message(delivery) = decode_object(text(&stomp)).unwrap() else {
            panic!("not a message");
        };
        assert_eq!(delivery.data.get(), r#""/wA=""#);
        assert!(delivery.base64);
        assert_eq!(
            delivery.content_type.as_deref(),
            Some("application/octet-stream")
        );
        let plain = encode_message(
            &topic("f.x"),
            b"a,\"epoch\":\"e\"",
            Some("text/plain"),
            None,
        );
        let ServerObject::Message(delivery) = decode_object(text(&plain)).unwrap() else {
            panic!("not a message");
        };
        assert_eq!(delivery.data.get(), r#""a,\"epoch\":\"e\"""#);
        assert_eq!((delivery.position, delivery.base64), (None, false));
    }

    /// Moved from the Rust SDK's own decoder, which this module replaces.
    #[test]
    fn decodes_messages_and_replies() {
        let Ok(ServerObject::Message(m)) = decode_object(
            r#"{"op":"message","topic":"chat.a","data":{"t":"a\nb"},"offset":42,"epoch":"e1"}"#,
        ) else {
            panic!("not a message");
        };
        assert_eq!(m.topic.as_ref(), "chat.a");
        assert_eq!(m.data.get(), r#"{"t":"a\nb"}"#);
        assert_eq!(
            m.position.map(|p| p.to_stream_position()),
            Some(StreamPosition {
                epoch: "e1".into(),
                offset: 42
            })
        );

        let Ok(ServerObject::Message(null)) =
            decode_object(r#"{"op":"message","topic":"a","data":null}"#)
        else {
            panic!("not a message");
        };
        assert_eq!(null.data.get(), "null");
        assert_eq!(null.position, None);

        let Ok(ServerObject::Ok(ok)) =
            decode_object(r#"{"op":"ok","id":7,"epoch":"","offset":0,"recovered":true}"#)
        else {
            panic!("not ok");
        };
        assert_eq!((ok.id, ok.recovered), (Some(7), Some(true)));

        let Ok(ServerObject::Error(error)) = decode_object(
            r#"{"op":"error","id":8,"code":"forbidden","message":"no","future":[1]}"#,
        ) else {
            panic!("not an error");
        };
        assert_eq!(
            (error.code.as_ref(), error.message.as_ref()),
            ("forbidden", "no")
        );

        let Ok(ServerObject::Message(stomp)) = decode_object(
            r#"{"op":"message","topic":"f.x","data":"/wA=","encoding":"base64","content_type":"application/octet-stream"}"#,
        ) else {
            panic!("not a message");
        };
        assert!(stomp.base64);
        assert_eq!(
            stomp.content_type.as_deref(),
            Some("application/octet-stream")
        );

        assert!(decode_object("{\"op\":").is_err());
    }

    #[test]
    fn frames_split_on_newlines_and_unknown_ops_are_kept_apart() {
        let frame = "{\"op\":\"message\",\"topic\":\"a\",\"data\":null}\n{\"op\":\"join\",\"x\":1}\r\n{\"op\":\n\n";
        let objects: Vec<_> = decode_frame(frame).collect();
        assert_eq!(objects.len(), 3);
        assert!(matches!(&objects[0], Ok(ServerObject::Message(d)) if d.data.get() == "null"));
        assert!(matches!(&objects[1], Ok(ServerObject::Other { op }) if op == "join"));
        assert!(matches!(objects[2], Err(DecodeError::Json(_))));
        assert!(matches!(
            decode_object(r#"{"op":"error","id":1}"#),
            Err(DecodeError::Missing { .. })
        ));
        assert!(matches!(
            decode_object(r#"{"op":"message","topic":"a"}"#),
            Err(DecodeError::Missing { .. })
        ));
        assert_eq!(split_frame("").count(), 0);
    }

    #[test]
    fn the_fast_path_reads_only_the_shape_the_node_writes() {
        for line in [
            r#"{"op":"message","topic":"a","data":{"ts":1,"seq":2,"pad":"xx"}}"#,
            r#"{"op":"message","topic":"a","data":[1,{"b":"}"}],"offset":3,"epoch":"e"}"#,
            r#"{"op":"message","topic":"a","data":{"offset":1,"epoch":"x"},"offset":0,"epoch":""}"#,
            r#"{"op":"message","topic":"a","data":12}"#,
            r#"{"op":"message","topic":"a","data":"x\"}","offset":1,"epoch":"e"}"#,
        ] {
            let fast = scan_delivery(line);
            assert!(fast.is_some(), "{line}");
            assert_eq!(
                fast.map(ServerObject::Message),
                Some(parse_object(line).unwrap())
            );
        }
        for line in [
            r#"{"op":"message","topic":"a","data":"x","content_type":"text/plain"}"#,
            r#"{"op":"message","topic":"a","data":{"a":1,}}"#,
            r#"{"op":"message","topic":"a\"b","data":1}"#,
            r#"{"op":"message","topic":"a","data":1,"offset":01,"epoch":"e"}"#,
            r#"{"op":"message","topic":"a","data":1,"offset":1,"epoch":"e\"x"}"#,
            r#"{"op":"message","topic":"a","data":1,"epoch":"e","offset":1}"#,
            r#"{ "op":"message","topic":"a","data":1}"#,
            r#"{"op":"ok","id":1}"#,
        ] {
            assert_eq!(scan_delivery(line), None, "{line}");
        }
        // The parser borrows as well, unless a string has escapes.
        let Ok(ServerObject::Message(parsed)) =
            decode_object(r#"{ "op":"message","topic":"a","data":1,"offset":1,"epoch":"e"}"#)
        else {
            panic!("not a message");
        };
        assert!(matches!(parsed.topic, Cow::Borrowed("a")));
        assert!(matches!(
            parsed.position.map(|p| p.epoch),
            Some(Cow::Borrowed("e"))
        ));
        // Left to the parser, which reads them all the same.
        let ServerObject::Message(delivery) = decode_object(
            r#"{"op":"message","data":{"a":1},"epoch":"e\"x","topic":"a","offset":7}"#,
        )
        .unwrap() else {
            panic!("not a message");
        };
        assert_eq!(
            delivery.position.map(|p| p.to_stream_position()),
            Some(StreamPosition {
                epoch: "e\"x".into(),
                offset: 7
            })
        );
    }

    fn topic_name() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9_:@=-]{1,8}(\\.[a-zA-Z0-9_:@=-]{1,8}){0,3}"
    }

    fn position() -> impl Strategy<Value = Option<StreamPosition>> {
        prop::option::of(
            (".{0,10}", any::<u64>()).prop_map(|(epoch, offset)| StreamPosition { epoch, offset }),
        )
    }

    proptest! {
        /// What the client encodes, the node decodes to the same request.
        #[test]
        fn requests_round_trip_through_the_node_codec(
            id in prop::option::of(any::<u64>()),
            name in topic_name(),
            since in position(),
            data in json_value(),
            token in ".{0,24}",
            limit in prop::option::of(any::<u64>()),
        ) {
            let data_text = data.to_string();
            let read = node_reads(&[
                Request::Subscribe { id, topic: &name, since: since.as_ref() },
                Request::Publish { id, topic: &name, data: &data_text },
                Request::Auth { id, token: &token },
                Request::History { id, topic: &name, since: since.as_ref(), limit },
            ]);
            prop_assert_eq!(read, vec![
                Ok(ClientRequest::Subscribe { id, filter: filter(&name), since: since.clone() }),
                Ok(ClientRequest::Publish {
                    id,
                    topic: topic(&name),
                    data: Bytes::from(data_text.clone()),
                    content_type: None,
                }),
                Ok(ClientRequest::Auth { id, token: token.clone() }),
                Ok(ClientRequest::History { id, topic: topic(&name), since: since.clone(), limit }),
            ]);
        }

        /// What the node encodes as a delivery, the client reads back: the
        /// same topic, data and position, by the fast path where it applies
        /// and by the parser alike.
        #[test]
        fn deliveries_round_trip_from_the_node_codec(
            name in topic_name(),
            data in json_value(),
            at in position(),
        ) {
            let payload = data.to_string();
            let frame = encode_message(&topic(&name), payload.as_bytes(), None, at.as_ref());
            let line = std::str::from_utf8(&frame).unwrap();
            let ServerObject::Message(delivery) = decode_object(line).unwrap() else {
                panic!("not a message: {line}");
            };
            prop_assert_eq!(delivery.topic.as_ref(), name.as_str());
            prop_assert_eq!(delivery.data.get(), payload.as_str());
            prop_assert_eq!(delivery.position.as_ref().map(Position::to_stream_position), at);
            prop_assert_eq!(&delivery.content_type, &None);
            let parsed: Value = serde_json::from_str(delivery.data.get()).unwrap();
            prop_assert_eq!(parsed, data);
            prop_assert_eq!(ServerObject::Message(delivery), parse_object(line).unwrap());
        }

        #[test]
        fn replies_round_trip_from_the_node_codec(
            id in prop::option::of(any::<u64>()),
            epoch in prop::option::of(".{0,8}"),
            offset in prop::option::of(any::<u64>()),
            recovered in prop::option::of(any::<bool>()),
            message in ".{0,32}",
        ) {
            let ok = OkReply { id, epoch, offset, recovered };
            let frame = encode_ok(&ok);
            prop_assert_eq!(decode_object(std::str::from_utf8(&frame).unwrap()).unwrap(), ServerObject::Ok(ok));
            let error = encode_error(&RequestError::new(id, ErrorCode::Forbidden, message.clone()));
            let text = std::str::from_utf8(&error).unwrap();
            let ServerObject::Error(reply) = decode_object(text).unwrap() else { panic!("{text}") };
            prop_assert_eq!((reply.id, reply.known_code(), reply.message.as_ref()), (id, Some(ErrorCode::Forbidden), message.as_str()));
        }

        #[test]
        fn arbitrary_lines_never_panic(line in ".{0,200}") {
            let _ = decode_object(&line);
            let with_prefix = format!(r#"{{"op":"message","topic":"{line}"#);
            let _ = decode_object(&with_prefix);
        }
    }
}
