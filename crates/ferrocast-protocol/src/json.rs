//! The native JSON protocol, `ferrocast.v1.json`.
//!
//! Client frames are WebSocket text frames holding one or more JSON objects
//! (separated by whitespace, normally `\n`). Server frames hold one object, or
//! several joined by `\n` when a node batches deliveries; clients split on `\n`.
//! Every server object is encoded without a raw newline, so that split is safe.
//! `docs/protocol.md` is the reference.

use std::borrow::Cow;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::payload::compact_data;
use crate::position::StreamPosition;
use crate::presence::PresenceEntry;
use crate::request::{ClientRequest, ErrorCode, HistoryItem, OkReply, RequestError};
use crate::topic::{Topic, TopicFilter};

#[derive(Deserialize)]
struct WireRequest<'a> {
    #[serde(borrow)]
    op: Cow<'a, str>,
    #[serde(default)]
    id: Option<u64>,
    #[serde(default, borrow)]
    topic: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "present_raw")]
    data: Option<&'a RawValue>,
    #[serde(default)]
    since: Option<StreamPosition>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    limit: Option<u64>,
}

/// Keeps an explicit `"data": null` as `Some("null")`, unlike plain `Option`.
fn present_raw<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Decodes the requests of one client text frame.
///
/// Objects are decoded in order; an object that is not valid JSON, or not a
/// request object, ends the frame (what follows it cannot be delimited
/// reliably). `max_topic_len` bounds topics and filters.
pub fn decode_requests(
    frame: &Bytes,
    max_topic_len: usize,
) -> impl Iterator<Item = Result<ClientRequest, RequestError>> + '_ {
    let mut stream = serde_json::Deserializer::from_slice(frame).into_iter::<WireRequest<'_>>();
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed {
            return None;
        }
        match stream.next()? {
            Ok(wire) => Some(to_request(frame, wire, max_topic_len)),
            Err(err) => {
                failed = true;
                Some(Err(RequestError::new(
                    None,
                    ErrorCode::BadRequest,
                    format!("malformed request: {err}"),
                )))
            }
        }
    })
}

fn to_request(
    frame: &Bytes,
    wire: WireRequest<'_>,
    max_topic_len: usize,
) -> Result<ClientRequest, RequestError> {
    let id = wire.id;
    let topic = || {
        wire.topic.as_deref().ok_or_else(|| {
            RequestError::new(
                id,
                ErrorCode::BadRequest,
                format!("'{}' needs a topic", wire.op),
            )
        })
    };
    match &*wire.op {
        "subscribe" => Ok(ClientRequest::Subscribe {
            id,
            filter: TopicFilter::parse(topic()?, max_topic_len)
                .map_err(|e| RequestError::bad_topic(id, &e))?,
            since: wire.since,
        }),
        "unsubscribe" => Ok(ClientRequest::Unsubscribe {
            id,
            filter: TopicFilter::parse(topic()?, max_topic_len)
                .map_err(|e| RequestError::bad_topic(id, &e))?,
        }),
        "publish" => {
            let topic = Topic::parse(topic()?, max_topic_len)
                .map_err(|e| RequestError::bad_topic(id, &e))?;
            let raw = wire.data.ok_or_else(|| {
                RequestError::new(id, ErrorCode::BadRequest, "'publish' needs data")
            })?;
            Ok(ClientRequest::Publish {
                id,
                topic,
                data: compact_data(frame, raw.get().as_bytes()),
                content_type: None,
            })
        }
        "ping" => Ok(ClientRequest::Ping { id }),
        "auth" => Ok(ClientRequest::Auth {
            id,
            token: wire.token.ok_or_else(|| {
                RequestError::new(id, ErrorCode::BadRequest, "'auth' needs a token")
            })?,
        }),
        "presence" => Ok(ClientRequest::Presence {
            id,
            topic: Topic::parse(topic()?, max_topic_len)
                .map_err(|e| RequestError::bad_topic(id, &e))?,
        }),
        "history" => Ok(ClientRequest::History {
            id,
            topic: Topic::parse(topic()?, max_topic_len)
                .map_err(|e| RequestError::bad_topic(id, &e))?,
            since: wire.since,
            limit: wire.limit,
        }),
        other => Err(RequestError::new(
            id,
            ErrorCode::BadRequest,
            format!(
                "unknown op {:?}; expected subscribe, unsubscribe, publish, ping, auth, presence or history",
                truncate(other, 32)
            ),
        )),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[derive(Serialize)]
struct WireReply<'a> {
    op: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<ErrorCode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recovered: Option<bool>,
}

impl WireReply<'_> {
    fn op(op: &'static str, id: Option<u64>) -> Self {
        Self {
            op,
            id,
            code: None,
            message: None,
            epoch: None,
            offset: None,
            recovered: None,
        }
    }

    fn encode(&self) -> Bytes {
        // Serializing a struct of strings and integers cannot fail.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// `{"op":"ok",...}`
pub fn encode_ok(reply: &OkReply) -> Bytes {
    WireReply {
        epoch: reply.epoch.as_deref(),
        offset: reply.offset,
        recovered: reply.recovered,
        ..WireReply::op("ok", reply.id)
    }
    .encode()
}

/// `{"op":"error","id":…,"code":…,"message":…}`
pub fn encode_error(err: &RequestError) -> Bytes {
    WireReply {
        code: Some(err.code),
        message: Some(&err.message),
        ..WireReply::op("error", err.id)
    }
    .encode()
}

/// `{"op":"pong","id":…}`
/// `{"op":"unsubscribed","topic":…}`: the server API ended the
/// connection's subscription to `filter`.
pub fn encode_unsubscribed(filter: &TopicFilter) -> Bytes {
    // The topic grammar has no character that JSON needs to escape.
    Bytes::from(format!(
        r#"{{"op":"unsubscribed","topic":"{}"}}"#,
        filter.as_str()
    ))
}

pub fn encode_pong(id: Option<u64>) -> Bytes {
    WireReply::op("pong", id).encode()
}

/// `{"op":"ok","id":…,"presence":[{"client":…,"user":…,"node":…,"joined_at":…},…]}`
pub fn encode_presence(id: Option<u64>, entries: &[PresenceEntry]) -> Bytes {
    #[derive(Serialize)]
    struct Wire<'a> {
        op: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        presence: &'a [PresenceEntry],
    }
    let wire = Wire {
        op: "ok",
        id,
        presence: entries,
    };
    Bytes::from(serde_json::to_vec(&wire).unwrap_or_default())
}

/// `{"op":"message","topic":…,"data":…}` plus `offset` and `epoch` when the
/// topic keeps history; a payload that is not JSON as [`write_publication`]
/// says.
pub fn encode_message(
    topic: &Topic,
    payload: &[u8],
    content_type: Option<&str>,
    position: Option<&StreamPosition>,
) -> Bytes {
    let mut out = Vec::with_capacity(64 + topic.as_str().len() + payload.len());
    out.extend_from_slice(br#"{"op":"message","topic":""#);
    // The topic grammar has no character that JSON needs to escape.
    out.extend_from_slice(topic.as_str().as_bytes());
    out.extend_from_slice(br#"","#);
    write_publication(&mut out, payload, content_type, position);
    out.push(b'}');
    Bytes::from(out)
}

/// `{"op":"ok","id":…,"epoch":…,"offset":…,"recovered":…,"publications":[…]}`,
/// the reply to a `history` request: `epoch`/`offset` are the topic's top,
/// each publication is a `message` object's `data` (with `content_type` and
/// `encoding` as there) and position, oldest first.
pub fn encode_history<'a>(
    id: Option<u64>,
    top: &StreamPosition,
    recovered: bool,
    publications: impl IntoIterator<Item = HistoryItem<'a>>,
) -> Bytes {
    let head = encode_ok(&OkReply {
        id,
        epoch: Some(top.epoch.clone()),
        offset: Some(top.offset),
        recovered: Some(recovered),
    });
    let mut out = Vec::with_capacity(head.len() + 64);
    // The ok object without its closing brace, then the publications.
    out.extend_from_slice(head.strip_suffix(b"}").unwrap_or(&head));
    out.extend_from_slice(br#","publications":["#);
    for (i, item) in publications.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'{');
        write_publication(&mut out, item.payload, item.content_type, item.position);
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    Bytes::from(out)
}

/// `"data":…` (with `"content_type"` and `"encoding"` for a payload that is
/// not JSON) and `,"offset":…,"epoch":…` when there is a position: what a
/// `message` object and a history reply's publication carry.
///
/// `content_type` `None` means `payload` is JSON text without raw newlines (as
/// [`decode_requests`] produces) and is embedded as is. Any other payload (from
/// STOMP, say) is carried as a JSON string when it is UTF-8, else base64 with
/// `"encoding":"base64"`, and its `content_type` is included.
fn write_publication(
    out: &mut Vec<u8>,
    payload: &[u8],
    content_type: Option<&str>,
    position: Option<&StreamPosition>,
) {
    out.extend_from_slice(br#""data":"#);
    match content_type {
        None => out.extend_from_slice(payload),
        Some(content_type) => {
            // Serializing strings cannot fail.
            match std::str::from_utf8(payload) {
                Ok(text) => out.extend_from_slice(&serde_json::to_vec(text).unwrap_or_default()),
                Err(_) => {
                    out.push(b'"');
                    out.extend_from_slice(BASE64.encode(payload).as_bytes());
                    out.extend_from_slice(br#"","encoding":"base64"#);
                    out.push(b'"');
                }
            }
            out.extend_from_slice(br#","content_type":"#);
            out.extend_from_slice(&serde_json::to_vec(content_type).unwrap_or_default());
        }
    }
    if let Some(pos) = position {
        out.extend_from_slice(br#","offset":"#);
        out.extend_from_slice(pos.offset.to_string().as_bytes());
        out.extend_from_slice(br#","epoch":"#);
        out.extend_from_slice(&serde_json::to_vec(&pos.epoch).unwrap_or_default());
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::payload::{json_payload, publication_payload, PayloadError, MAX_CONTENT_TYPE_LEN};
    use crate::presence::{decode_presence_event, encode_presence_event, PresenceEvent};
    use crate::topic::MAX_TOPIC_LEN;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn decode(text: &str) -> Vec<Result<ClientRequest, RequestError>> {
        let frame = Bytes::copy_from_slice(text.as_bytes());
        decode_requests(&frame, MAX_TOPIC_LEN).collect()
    }

    fn decode_one(text: &str) -> Result<ClientRequest, RequestError> {
        let mut all = decode(text);
        assert_eq!(all.len(), 1, "{all:?}");
        all.remove(0)
    }

    #[test]
    fn decodes_history_requests() {
        assert_eq!(
            decode_one(
                r#"{"op":"history","id":1,"topic":"chat.a","since":{"epoch":"e","offset":4},"limit":10}"#
            ),
            Ok(ClientRequest::History {
                id: Some(1),
                topic: Topic::parse("chat.a", 255).unwrap(),
                since: Some(StreamPosition {
                    epoch: "e".into(),
                    offset: 4
                }),
                limit: Some(10),
            })
        );
        assert_eq!(
            decode_one(r#"{"op":"history","topic":"chat.a"}"#),
            Ok(ClientRequest::History {
                id: None,
                topic: Topic::parse("chat.a", 255).unwrap(),
                since: None,
                limit: None,
            })
        );
        let pattern = decode_one(r#"{"op":"history","id":2,"topic":"chat.*"}"#).unwrap_err();
        assert_eq!((pattern.id, pattern.code), (Some(2), ErrorCode::BadRequest));
        let missing = decode_one(r#"{"op":"history","id":3}"#).unwrap_err();
        assert_eq!(missing.code, ErrorCode::BadRequest);
    }

    #[test]
    fn encodes_history_replies_like_messages() {
        let topic = Topic::parse("chat.a", 255).unwrap();
        let at = |offset| StreamPosition {
            epoch: "e".into(),
            offset,
        };
        let (first, second) = (at(56), at(57));
        let (json, binary) = (
            Bytes::from_static(br#"{"t":"hi"}"#),
            Bytes::from_static(&[0xff, 0x00]),
        );
        let items = [
            HistoryItem {
                topic: &topic,
                payload: &json,
                content_type: None,
                position: Some(&first),
            },
            HistoryItem {
                topic: &topic,
                payload: &binary,
                content_type: Some("application/octet-stream"),
                position: Some(&second),
            },
        ];
        let reply: Value =
            serde_json::from_slice(&encode_history(Some(1), &at(57), true, items)).unwrap();
        assert_eq!(
            reply,
            json!({"op":"ok","id":1,"epoch":"e","offset":57,"recovered":true,"publications":[
                {"data":{"t":"hi"},"epoch":"e","offset":56},
                {"data":"/wA=","encoding":"base64","content_type":"application/octet-stream","epoch":"e","offset":57},
            ]})
        );
        let empty: Value =
            serde_json::from_slice(&encode_history(None, &at(0), false, [])).unwrap();
        assert_eq!(
            empty,
            json!({"op":"ok","epoch":"e","offset":0,"recovered":false,"publications":[]})
        );
    }

    #[test]
    fn decodes_presence_requests() {
        assert_eq!(
            decode_one(r#"{"op":"presence","id":7,"topic":"chat.room1"}"#),
            Ok(ClientRequest::Presence {
                id: Some(7),
                topic: Topic::parse("chat.room1", 255).unwrap(),
            })
        );
        // One topic: a pattern is refused, and so is a missing topic.
        let pattern = decode_one(r#"{"op":"presence","id":8,"topic":"chat.*"}"#).unwrap_err();
        assert_eq!((pattern.id, pattern.code), (Some(8), ErrorCode::BadRequest));
        let missing = decode_one(r#"{"op":"presence","id":9}"#).unwrap_err();
        assert_eq!((missing.id, missing.code), (Some(9), ErrorCode::BadRequest));
        assert!(
            missing.message.contains("needs a topic"),
            "{}",
            missing.message
        );
    }

    #[test]
    fn encodes_presence_replies_and_events() {
        let topic = Topic::parse("chat.room1", 255).unwrap();
        let alice = PresenceEntry {
            client: "n1-4".into(),
            user: Some("alice\n\"x".into()),
            node: "n1".into(),
            joined_at: 1_700_000_000_000,
        };
        let anonymous = PresenceEntry {
            client: "n2-1".into(),
            user: None,
            node: "n2".into(),
            joined_at: 5,
        };
        let reply = encode_presence(Some(3), &[alice.clone(), anonymous.clone()]);
        assert!(!reply.contains(&b'\n'), "a raw newline in a server frame");
        let value: Value = serde_json::from_slice(&reply).unwrap();
        assert_eq!(
            value,
            json!({"op":"ok","id":3,"presence":[
                {"client":"n1-4","user":"alice\n\"x","node":"n1","joined_at":1_700_000_000_000u64},
                {"client":"n2-1","node":"n2","joined_at":5}
            ]})
        );
        let empty: Value = serde_json::from_slice(&encode_presence(None, &[])).unwrap();
        assert_eq!(empty, json!({"op":"ok","presence":[]}));

        let join: Value =
            serde_json::from_slice(&encode_presence_event(PresenceEvent::Join, &topic, &alice))
                .unwrap();
        assert_eq!(
            join,
            json!({"op":"join","topic":"chat.room1","client":"n1-4","user":"alice\n\"x","node":"n1","joined_at":1_700_000_000_000u64})
        );
        let leave = encode_presence_event(PresenceEvent::Leave, &topic, &anonymous);
        assert_eq!(
            std::str::from_utf8(&leave).unwrap(),
            r#"{"op":"leave","topic":"chat.room1","client":"n2-1","node":"n2","joined_at":5}"#
        );
        // Events read back (the protobuf protocol re-encodes them).
        assert_eq!(
            decode_presence_event(&leave),
            Some((PresenceEvent::Leave, "chat.room1".into(), anonymous.clone()))
        );
        let join = encode_presence_event(PresenceEvent::Join, &topic, &alice);
        assert_eq!(
            decode_presence_event(&join),
            Some((PresenceEvent::Join, "chat.room1".into(), alice.clone()))
        );
        assert_eq!(
            decode_presence_event(br#"{"op":"message","topic":"a"}"#),
            None
        );
        assert_eq!(decode_presence_event(b"not json"), None);
        // Entries read back from what the backplane stores.
        let stored = serde_json::to_vec(&alice).unwrap();
        assert_eq!(
            serde_json::from_slice::<PresenceEntry>(&stored).unwrap(),
            alice
        );
    }

    #[test]
    fn decodes_every_op() {
        assert_eq!(
            decode_one(r#"{"op":"subscribe","id":1,"topic":"chat.*"}"#),
            Ok(ClientRequest::Subscribe {
                id: Some(1),
                filter: TopicFilter::parse("chat.*", 255).unwrap(),
                since: None
            })
        );
        assert_eq!(
            decode_one(r#"{"op":"subscribe","topic":"a","since":{"epoch":"e1","offset":41}}"#),
            Ok(ClientRequest::Subscribe {
                id: None,
                filter: TopicFilter::parse("a", 255).unwrap(),
                since: Some(StreamPosition {
                    epoch: "e1".into(),
                    offset: 41
                })
            })
        );
        assert_eq!(
            decode_one(r#"{"op":"unsubscribe","id":3,"topic":"chat.room1"}"#),
            Ok(ClientRequest::Unsubscribe {
                id: Some(3),
                filter: TopicFilter::parse("chat.room1", 255).unwrap()
            })
        );
        assert_eq!(
            decode_one(r#"{"op":"publish","id":4,"topic":"chat.room1","data":{"text":"hi"}}"#),
            Ok(ClientRequest::Publish {
                id: Some(4),
                topic: Topic::parse("chat.room1", 255).unwrap(),
                data: Bytes::from_static(br#"{"text":"hi"}"#),
                content_type: None,
            })
        );
        assert_eq!(
            decode_one(r#"{"op":"ping","id":5}"#),
            Ok(ClientRequest::Ping { id: Some(5) })
        );
        // Unknown fields are ignored, for forward compatibility.
        assert_eq!(
            decode_one(r#"{"op":"auth","id":6,"token":"a.b.c"}"#),
            Ok(ClientRequest::Auth {
                id: Some(6),
                token: "a.b.c".into()
            })
        );
        assert_eq!(
            decode_one(r#"{"op":"auth","id":7}"#).unwrap_err().code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            decode_one(r#"{"op":"ping","x":[1,2]}"#),
            Ok(ClientRequest::Ping { id: None })
        );
    }

    #[test]
    fn null_data_is_a_value_but_missing_data_is_an_error() {
        match decode_one(r#"{"op":"publish","topic":"a","data":null}"#) {
            Ok(ClientRequest::Publish { data, .. }) => assert_eq!(&data[..], b"null"),
            other => panic!("{other:?}"),
        }
        let err = decode_one(r#"{"op":"publish","id":9,"topic":"a"}"#).unwrap_err();
        assert_eq!((err.id, err.code), (Some(9), ErrorCode::BadRequest));
    }

    #[test]
    fn errors_carry_the_id_when_known() {
        let err = decode_one(r#"{"op":"fly","id":7}"#).unwrap_err();
        assert_eq!(err.id, Some(7));
        assert!(err.message.contains("unknown op"), "{}", err.message);

        let err = decode_one(r#"{"op":"subscribe","id":8,"topic":"a..b"}"#).unwrap_err();
        assert_eq!((err.id, err.code), (Some(8), ErrorCode::BadRequest));
        assert!(err.message.contains("invalid topic"));

        let err = decode_one(r#"{"op":"publish","id":8,"topic":"a.*","data":1}"#).unwrap_err();
        assert!(err.message.contains("wildcards"), "{}", err.message);

        let long = format!(
            r#"{{"op":"subscribe","id":6,"topic":"{}"}}"#,
            "a".repeat(256)
        );
        let err = decode_one(&long).unwrap_err();
        assert_eq!((err.id, err.code), (Some(6), ErrorCode::TooLarge));

        let err = decode_one(r#"{"op":"subscribe","id":2}"#).unwrap_err();
        assert!(err.message.contains("needs a topic"));
    }

    #[test]
    fn malformed_json_is_bad_request_and_ends_the_frame() {
        let all = decode("{\"op\":\"ping\",\"id\":1}\n{not json\n{\"op\":\"ping\",\"id\":2}");
        assert_eq!(all.len(), 2);
        assert_eq!(all[0], Ok(ClientRequest::Ping { id: Some(1) }));
        let err = all[1].clone().unwrap_err();
        assert_eq!((err.id, err.code), (None, ErrorCode::BadRequest));
        assert!(err.message.starts_with("malformed request"));

        for bad in [
            "",
            "[1,2]",
            "42",
            r#"{"op":1}"#,
            r#"{"id":1}"#,
            r#"{"op":"ping","id":-1}"#,
        ] {
            let all = decode(bad);
            if bad.is_empty() {
                assert!(all.is_empty());
                continue;
            }
            assert!(
                matches!(
                    &all[..],
                    [Err(RequestError {
                        code: ErrorCode::BadRequest,
                        ..
                    })]
                ),
                "{bad}: {all:?}"
            );
        }
    }

    #[test]
    fn several_objects_per_frame() {
        let all = decode(
            "{\"op\":\"ping\",\"id\":1}\n{\"op\":\"ping\",\"id\":2} {\"op\":\"ping\",\"id\":3}\n",
        );
        let ids: Vec<_> = all.into_iter().map(|r| r.unwrap().id()).collect();
        assert_eq!(ids, [Some(1), Some(2), Some(3)]);
    }

    #[test]
    fn data_with_newlines_is_flattened() {
        match decode_one("{\"op\":\"publish\",\"topic\":\"a\",\"data\":{\n\"k\":\r\n\"v\\n\"}}") {
            Ok(ClientRequest::Publish { data, .. }) => {
                assert!(!data.contains(&b'\n') && !data.contains(&b'\r'));
                let v: Value = serde_json::from_slice(&data).unwrap();
                assert_eq!(v, json!({"k": "v\n"}));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn json_payloads_are_checked_and_flattened() {
        let shared = Bytes::from_static(b"{\"a\":[1,2]}");
        let payload = json_payload(&shared).unwrap();
        assert_eq!(payload.as_ptr(), shared.as_ptr(), "copied needlessly");
        assert_eq!(
            &json_payload(&Bytes::from_static(b"{\r\n\"a\": 1\n}")).unwrap()[..],
            b"{  \"a\": 1 }"
        );
        assert_eq!(
            &json_payload(&Bytes::from_static(b"null")).unwrap()[..],
            b"null"
        );
        for bad in [&b""[..], b"hello", b"{\"a\":", b"1 2", &[0xff, 0]] {
            assert_eq!(json_payload(&Bytes::copy_from_slice(bad)), None, "{bad:?}");
        }
    }

    #[test]
    fn encodes_server_frames() {
        let ok = encode_ok(&OkReply {
            id: Some(1),
            epoch: Some("e".into()),
            offset: Some(41),
            recovered: Some(true),
        });
        assert_eq!(
            &ok[..],
            br#"{"op":"ok","id":1,"epoch":"e","offset":41,"recovered":true}"#
        );
        assert_eq!(&encode_ok(&OkReply::default())[..], br#"{"op":"ok"}"#);
        let err = encode_error(&RequestError::new(
            Some(4),
            ErrorCode::Forbidden,
            "no \"way\"",
        ));
        assert_eq!(
            &err[..],
            br#"{"op":"error","id":4,"code":"forbidden","message":"no \"way\""}"#
        );
        assert_eq!(&encode_pong(Some(5))[..], br#"{"op":"pong","id":5}"#);
        let topic = Topic::parse("chat.room1", 255).unwrap();
        assert_eq!(
            &encode_message(&topic, b"[1]", None, None)[..],
            br#"{"op":"message","topic":"chat.room1","data":[1]}"#
        );
        assert_eq!(
            &encode_message(&topic, b"hi\n", Some("text/plain"), None)[..],
            br#"{"op":"message","topic":"chat.room1","data":"hi\n","content_type":"text/plain"}"#
        );
        assert_eq!(
            &encode_message(&topic, &[0xff, 0], Some("application/octet-stream"), None)[..],
            br#"{"op":"message","topic":"chat.room1","data":"/wA=","encoding":"base64","content_type":"application/octet-stream"}"#
        );
        let pos = StreamPosition {
            epoch: "ep".into(),
            offset: 42,
        };
        assert_eq!(
            &encode_message(&topic, b"\"x\"", None, Some(&pos))[..],
            br#"{"op":"message","topic":"chat.room1","data":"x","offset":42,"epoch":"ep"}"#
        );
    }

    /// Arbitrary JSON values, with keys holding newlines and quotes and a
    /// string that looks like the end of a message object: what the JSON
    /// codec and the client codec must both carry unchanged.
    pub(crate) fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
            Just(Value::from(r#","offset":1,"epoch":"e"}"#)),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map("[a-z\"\n]{0,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// What a client publishes (compact or pretty-printed) is what a
        /// subscriber decodes from the message frame, and the frame has no newline.
        #[test]
        fn publish_to_message_round_trip(data in json_value(), pretty in any::<bool>(), id in prop::option::of(any::<u64>())) {
            let request = json!({"op": "publish", "id": id, "topic": "ns.t", "data": data});
            let text = if pretty { serde_json::to_string_pretty(&request) } else { serde_json::to_string(&request) }.unwrap();
            let decoded = decode_one(&text).unwrap();
            let ClientRequest::Publish { id: got_id, topic, data: raw, content_type: None } = decoded else { panic!() };
            prop_assert_eq!(got_id, id);
            let frame = encode_message(&topic, &raw, None, None);
            prop_assert!(!frame.contains(&b'\n'));
            let parsed: Value = serde_json::from_slice(&frame).unwrap();
            prop_assert_eq!(&parsed["data"], &data);
            prop_assert_eq!(&parsed["topic"], "ns.t");
        }

        #[test]
        fn error_frames_are_valid_json(message in ".{0,64}", id in prop::option::of(any::<u64>())) {
            let frame = encode_error(&RequestError::new(id, ErrorCode::BadRequest, message.clone()));
            prop_assert!(!frame.contains(&b'\n'));
            let v: Value = serde_json::from_slice(&frame).unwrap();
            prop_assert_eq!(v["message"].as_str(), Some(message.as_str()));
        }

        #[test]
        fn arbitrary_frames_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let frame = Bytes::from(bytes);
            for r in decode_requests(&frame, MAX_TOPIC_LEN).take(300) {
                let _ = r;
            }
        }
    }

    #[test]
    fn publication_payloads_are_json_unless_a_content_type_says_otherwise() {
        let json = |data: &'static [u8], content_type| {
            publication_payload(Bytes::from_static(data), content_type)
        };
        assert_eq!(
            json(b"{\"a\":\n1}", "").unwrap(),
            (Bytes::from_static(b"{\"a\": 1}"), None)
        );
        assert_eq!(json(b"\"x\"", "").unwrap().0, Bytes::from_static(b"\"x\""));
        assert_eq!(
            json(b"[1]", "application/json; charset=utf-8").unwrap(),
            (Bytes::from_static(b"[1]"), None)
        );
        assert_eq!(json(b"not json", ""), Err(PayloadError::NotJson));
        let (raw, content_type) = json(b"\xff\n", "application/octet-stream").unwrap();
        assert_eq!(&raw[..], b"\xff\n");
        assert_eq!(content_type.as_deref(), Some("application/octet-stream"));
        assert_eq!(
            json(b"x", "text/plain\r\nx: y"),
            Err(PayloadError::BadContentType)
        );
        let long = "t/".to_string() + &"x".repeat(MAX_CONTENT_TYPE_LEN);
        assert_eq!(
            publication_payload(Bytes::from_static(b"x"), &long),
            Err(PayloadError::BadContentType)
        );
    }
}
