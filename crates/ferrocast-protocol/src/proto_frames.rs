//! The protobuf protocol, `ferrocast.v1.proto` (`proto/ferrocast/v1/client.proto`).
//!
//! A WebSocket binary frame holds one or more messages, each preceded by its
//! length as a varint (prost's `encode_length_delimited`). Clients send
//! [`pb::ClientMessage`]s, the node sends [`pb::ServerMessage`]s, several per
//! frame when it batches.
//!
//! The protocol is the JSON protocol in another encoding: requests decode to
//! the same [`ClientRequest`]s (with the same validation and error texts), and
//! replies encode the same [`OkReply`] and [`RequestError`], so that a node
//! serves both alike. What differs is the payload: bytes with a content type
//! instead of a JSON value, so binary payloads travel without base64.

use std::sync::Arc;

use bytes::{Buf, Bytes};
use prost::Message as _;

use crate::presence::decode_presence_event;
use crate::topic::{Topic, TopicFilter};
use crate::{
    publication_payload, ClientRequest, ErrorCode, HistoryItem, OkReply, PresenceEntry,
    PresenceEvent, RequestError, StreamPosition,
};

/// The messages of `proto/ferrocast/v1/client.proto`, generated with prost;
/// the `.proto` file documents them.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/client/ferrocast.v1.rs"));
}

use pb::client_message::Request;
use pb::server_message::{self as server, Kind};
use pb::{ClientMessage, ServerMessage};

/// Why a frame could not be split into messages. Byte positions count from
/// the start of the frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix is not a varint, or ends with the frame.
    #[error("the length prefix at byte {at} is not a complete varint")]
    Length { at: usize },
    /// The prefix announces more bytes than the frame holds.
    #[error("the message at byte {at} announces {len} bytes, but only {left} follow")]
    Truncated { at: usize, len: usize, left: usize },
    /// The bytes of one message are not a valid protobuf message of the
    /// expected type.
    #[error("the message at byte {at} does not decode: {reason}")]
    Malformed { at: usize, reason: String },
}

/// The messages of one frame, in order. An error ends the iteration: what
/// follows a bad prefix or a truncated message cannot be delimited.
pub fn decode_messages<M: prost::Message + Default>(
    frame: &Bytes,
) -> impl Iterator<Item = Result<M, FrameError>> {
    let mut rest = frame.clone();
    let total = frame.len();
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || rest.is_empty() {
            return None;
        }
        let at = total - rest.len();
        let result = next_message(&mut rest, at);
        failed = result.is_err();
        Some(result)
    })
}

fn next_message<M: prost::Message + Default>(rest: &mut Bytes, at: usize) -> Result<M, FrameError> {
    let len = prost::decode_length_delimiter(&mut *rest).map_err(|_| FrameError::Length { at })?;
    if len > rest.remaining() {
        return Err(FrameError::Truncated {
            at,
            len,
            left: rest.remaining(),
        });
    }
    // Decoding from `Bytes` makes `bytes` fields slices of the frame, not copies.
    M::decode(rest.split_to(len)).map_err(|error| FrameError::Malformed {
        at,
        reason: error.to_string(),
    })
}

/// Decodes the requests of one client frame.
///
/// Messages are decoded in order; a frame error ends the frame (one
/// `bad_request` without id), a message that is not a valid request is
/// answered and the next one is still decoded. `max_topic_len` bounds topics
/// and filters.
pub fn decode_requests(
    frame: &Bytes,
    max_topic_len: usize,
) -> impl Iterator<Item = Result<ClientRequest, RequestError>> {
    decode_messages::<ClientMessage>(frame).map(move |message| match message {
        Ok(message) => to_request(message, max_topic_len),
        Err(error) => Err(RequestError::new(
            None,
            ErrorCode::BadRequest,
            format!("malformed frame: {error}"),
        )),
    })
}

fn to_request(message: ClientMessage, max_topic_len: usize) -> Result<ClientRequest, RequestError> {
    let id = message.id;
    let required = |value: String, what: &str, op: &str| {
        if value.is_empty() {
            Err(RequestError::new(
                id,
                ErrorCode::BadRequest,
                format!("'{op}' needs a {what}"),
            ))
        } else {
            Ok(value)
        }
    };
    let filter = |topic: String, op: &str| {
        TopicFilter::parse(&required(topic, "topic", op)?, max_topic_len)
            .map_err(|e| RequestError::bad_topic(id, &e))
    };
    let topic = |topic: String, op: &str| {
        Topic::parse(&required(topic, "topic", op)?, max_topic_len)
            .map_err(|e| RequestError::bad_topic(id, &e))
    };
    match message.request {
        Some(Request::Subscribe(subscribe)) => Ok(ClientRequest::Subscribe {
            id,
            filter: filter(subscribe.topic, "subscribe")?,
            since: subscribe.since.map(|since| StreamPosition {
                epoch: since.epoch,
                offset: since.offset,
            }),
        }),
        Some(Request::Unsubscribe(unsubscribe)) => Ok(ClientRequest::Unsubscribe {
            id,
            filter: filter(unsubscribe.topic, "unsubscribe")?,
        }),
        Some(Request::Publish(publish)) => {
            let topic = topic(publish.topic, "publish")?;
            let (data, content_type) = payload(id, publish.data, publish.content_type)?;
            Ok(ClientRequest::Publish {
                id,
                topic,
                data,
                content_type,
            })
        }
        Some(Request::Ping(_)) => Ok(ClientRequest::Ping { id }),
        Some(Request::Auth(auth)) => Ok(ClientRequest::Auth {
            id,
            token: required(auth.token, "token", "auth")?,
        }),
        Some(Request::Presence(presence)) => Ok(ClientRequest::Presence {
            id,
            topic: topic(presence.topic, "presence")?,
        }),
        Some(Request::History(history)) => Ok(ClientRequest::History {
            id,
            topic: topic(history.topic, "history")?,
            since: history.since.map(|since| StreamPosition {
                epoch: since.epoch,
                offset: since.offset,
            }),
            limit: history.limit.map(u64::from),
        }),
        None => Err(RequestError::new(
            id,
            ErrorCode::BadRequest,
            "no request, or one this node does not know; expected subscribe, unsubscribe, publish, ping, auth, presence or history",
        )),
    }
}

/// The payload and content type to publish (see
/// [`publication_payload`]), or the request's error.
fn payload(
    id: Option<u64>,
    data: Bytes,
    content_type: String,
) -> Result<(Bytes, Option<Arc<str>>), RequestError> {
    publication_payload(data, &content_type)
        .map_err(|error| RequestError::new(id, ErrorCode::BadRequest, error.to_string()))
}

/// One server message, length-delimited.
fn encode(id: Option<u64>, kind: Kind) -> Bytes {
    let message = ServerMessage {
        id,
        kind: Some(kind),
    };
    Bytes::from(message.encode_length_delimited_to_vec())
}

/// An `ok` reply.
pub fn encode_ok(reply: &OkReply) -> Bytes {
    encode(
        reply.id,
        Kind::Ok(server::Ok {
            epoch: reply.epoch.clone(),
            offset: reply.offset,
            recovered: reply.recovered,
            presence: None,
            history: None,
        }),
    )
}

/// An `error` reply, with the JSON protocol's code.
pub fn encode_error(error: &RequestError) -> Bytes {
    encode(
        error.id,
        Kind::Error(server::Error {
            code: error.code.as_str().to_string(),
            message: error.message.clone(),
        }),
    )
}

/// A `pong`.
pub fn encode_pong(id: Option<u64>) -> Bytes {
    encode(id, Kind::Pong(server::Pong {}))
}

/// Tells the client that the server API ended its subscription to `filter`.
pub fn encode_unsubscribed(filter: &TopicFilter) -> Bytes {
    encode(
        None,
        Kind::Unsubscribed(server::Unsubscribed {
            topic: filter.as_str().to_string(),
        }),
    )
}

/// The `ok` of a presence request, with who is subscribed.
pub fn encode_presence(id: Option<u64>, entries: &[PresenceEntry]) -> Bytes {
    encode(
        id,
        Kind::Ok(server::Ok {
            presence: Some(server::PresenceList {
                entries: entries.iter().map(entry).collect(),
            }),
            ..server::Ok::default()
        }),
    )
}

fn entry(entry: &PresenceEntry) -> server::PresenceEntry {
    server::PresenceEntry {
        client: entry.client.clone(),
        user: entry.user.clone(),
        node: entry.node.clone(),
        joined_at: entry.joined_at,
    }
}

/// A join or leave event.
pub fn encode_presence_event(event: PresenceEvent, topic: &str, who: &PresenceEntry) -> Bytes {
    let event_of = server::PresenceEvent {
        topic: topic.to_string(),
        entry: Some(entry(who)),
    };
    encode(
        None,
        match event {
            PresenceEvent::Join => Kind::Join(event_of),
            PresenceEvent::Leave => Kind::Leave(event_of),
        },
    )
}

/// A presence event publication (its payload is the JSON protocol's
/// `{"op":"join"|"leave",…}` object) as a `join` or `leave`; `None` when the
/// payload is not such an object.
pub fn encode_presence_payload(payload: &[u8]) -> Option<Bytes> {
    let (event, topic, who) = decode_presence_event(payload)?;
    Some(encode_presence_event(event, &topic, &who))
}

/// A delivery: the payload as published, `content_type` `None` meaning JSON
/// text, and the position in a namespace with history.
pub fn encode_message(
    topic: &Topic,
    payload: &Bytes,
    content_type: Option<&str>,
    position: Option<&StreamPosition>,
) -> Bytes {
    encode(
        None,
        Kind::Message(message(HistoryItem {
            topic,
            payload,
            content_type,
            position,
        })),
    )
}

/// The `ok` of a history request: the topic's top, `recovered`, and the
/// publications, each as [`encode_message`] would deliver it.
pub fn encode_history<'a>(
    id: Option<u64>,
    top: &StreamPosition,
    recovered: bool,
    publications: impl IntoIterator<Item = HistoryItem<'a>>,
) -> Bytes {
    encode(
        id,
        Kind::Ok(server::Ok {
            epoch: Some(top.epoch.clone()),
            offset: Some(top.offset),
            recovered: Some(recovered),
            history: Some(server::HistoryPage {
                publications: publications.into_iter().map(message).collect(),
            }),
            presence: None,
        }),
    )
}

fn message(item: HistoryItem<'_>) -> server::Message {
    server::Message {
        topic: item.topic.as_str().to_string(),
        data: item.payload.clone(),
        content_type: item.content_type.unwrap_or_default().to_string(),
        offset: item.position.map(|p| p.offset),
        epoch: item.position.map(|p| p.epoch.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::MAX_TOPIC_LEN;
    use crate::PresenceEvent;
    use pb::client_message::{self as client, subscribe::Since};
    use proptest::prelude::*;

    fn frame(messages: &[ClientMessage]) -> Bytes {
        let mut out = Vec::new();
        for message in messages {
            message.encode_length_delimited(&mut out).unwrap();
        }
        Bytes::from(out)
    }

    fn request(id: Option<u64>, request: Request) -> ClientMessage {
        ClientMessage {
            id,
            request: Some(request),
        }
    }

    fn publish(topic: &str, data: &[u8], content_type: &str) -> Request {
        Request::Publish(client::Publish {
            topic: topic.into(),
            data: Bytes::copy_from_slice(data),
            content_type: content_type.into(),
        })
    }

    fn decode(frame: &Bytes) -> Vec<Result<ClientRequest, RequestError>> {
        decode_requests(frame, MAX_TOPIC_LEN).collect()
    }

    fn decode_one(message: ClientMessage) -> Result<ClientRequest, RequestError> {
        let mut all = decode(&frame(&[message]));
        assert_eq!(all.len(), 1, "{all:?}");
        all.remove(0)
    }

    fn server_messages(frame: &Bytes) -> Vec<ServerMessage> {
        decode_messages::<ServerMessage>(frame)
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn every_request_decodes_like_its_json_twin() {
        let messages = [
            request(
                Some(1),
                Request::Subscribe(client::Subscribe {
                    topic: "chat.*".into(),
                    since: None,
                }),
            ),
            request(
                None,
                Request::Subscribe(client::Subscribe {
                    topic: "chat.room1".into(),
                    since: Some(Since {
                        epoch: "e1".into(),
                        offset: 41,
                    }),
                }),
            ),
            request(
                Some(3),
                Request::Unsubscribe(client::Unsubscribe {
                    topic: "chat.room1".into(),
                }),
            ),
            request(Some(4), publish("chat.room1", br#"{"text":"hi"}"#, "")),
            request(Some(0), Request::Ping(client::Ping {})),
            request(
                Some(6),
                Request::Auth(client::Auth {
                    token: "a.b.c".into(),
                }),
            ),
            request(
                Some(7),
                Request::Presence(client::Presence {
                    topic: "chat.room1".into(),
                }),
            ),
            request(
                Some(8),
                Request::History(client::History {
                    topic: "chat.room1".into(),
                    since: Some(Since {
                        epoch: "e1".into(),
                        offset: 41,
                    }),
                    limit: Some(10),
                }),
            ),
            request(
                None,
                Request::History(client::History {
                    topic: "chat.room1".into(),
                    since: None,
                    limit: None,
                }),
            ),
        ];
        let topic = |t| Topic::parse(t, 255).unwrap();
        let filter = |t| TopicFilter::parse(t, 255).unwrap();
        assert_eq!(
            decode(&frame(&messages)),
            vec![
                Ok(ClientRequest::Subscribe {
                    id: Some(1),
                    filter: filter("chat.*"),
                    since: None
                }),
                Ok(ClientRequest::Subscribe {
                    id: None,
                    filter: filter("chat.room1"),
                    since: Some(StreamPosition {
                        epoch: "e1".into(),
                        offset: 41
                    })
                }),
                Ok(ClientRequest::Unsubscribe {
                    id: Some(3),
                    filter: filter("chat.room1")
                }),
                Ok(ClientRequest::Publish {
                    id: Some(4),
                    topic: topic("chat.room1"),
                    data: Bytes::from_static(br#"{"text":"hi"}"#),
                    content_type: None
                }),
                Ok(ClientRequest::Ping { id: Some(0) }),
                Ok(ClientRequest::Auth {
                    id: Some(6),
                    token: "a.b.c".into()
                }),
                Ok(ClientRequest::Presence {
                    id: Some(7),
                    topic: topic("chat.room1")
                }),
                Ok(ClientRequest::History {
                    id: Some(8),
                    topic: topic("chat.room1"),
                    since: Some(StreamPosition {
                        epoch: "e1".into(),
                        offset: 41
                    }),
                    limit: Some(10),
                }),
                Ok(ClientRequest::History {
                    id: None,
                    topic: topic("chat.room1"),
                    since: None,
                    limit: None,
                }),
            ]
        );
    }

    #[test]
    fn payloads_are_json_unless_a_content_type_says_otherwise() {
        let decoded = |data: &[u8], content_type: &str| match decode_one(request(
            Some(9),
            publish("a.b", data, content_type),
        )) {
            Ok(ClientRequest::Publish {
                data, content_type, ..
            }) => Ok((data, content_type)),
            Ok(other) => panic!("{other:?}"),
            Err(error) => Err(error),
        };
        // JSON, flattened onto one line as the JSON protocol does.
        assert_eq!(
            decoded(b"{\n\"k\": [1]\n}", ""),
            Ok((Bytes::from_static(b"{ \"k\": [1] }"), None))
        );
        assert_eq!(
            decoded(b"\"x\"", "application/JSON; charset=utf-8"),
            Ok((Bytes::from_static(b"\"x\""), None))
        );
        for not_json in [&b""[..], b"hello", &[0xff, 0x00]] {
            let error = decoded(not_json, "").unwrap_err();
            assert_eq!((error.id, error.code), (Some(9), ErrorCode::BadRequest));
            assert!(error.message.contains("not one JSON value"), "{error}");
        }
        // Anything else is opaque, empty data included.
        let binary = [0xff, 0x00, b'\n', 0x80];
        assert_eq!(
            decoded(&binary, "application/octet-stream"),
            Ok((
                Bytes::copy_from_slice(&binary),
                Some(Arc::from("application/octet-stream"))
            ))
        );
        assert_eq!(
            decoded(b"", "text/plain"),
            Ok((Bytes::new(), Some(Arc::from("text/plain"))))
        );
        for bad in ["text/plain\r\nx: y", &"a/b".repeat(100)] {
            let error = decoded(b"x", bad).unwrap_err();
            assert_eq!(error.code, ErrorCode::BadRequest, "{bad:?}");
            assert!(error.message.contains("content_type"), "{error}");
        }
    }

    #[test]
    fn binary_data_is_a_slice_of_the_frame() {
        let frame = frame(&[request(None, publish("a.b", &[1, 2, 3], "x/y"))]);
        let Ok(ClientRequest::Publish { data, .. }) = decode(&frame).remove(0) else {
            panic!()
        };
        let range = frame.as_ptr_range();
        assert!(range.contains(&data.as_ptr()), "the payload was copied");
    }

    #[test]
    fn invalid_requests_are_answered_with_their_id() {
        let cases = [
            (
                ClientMessage {
                    id: Some(1),
                    request: None,
                },
                ErrorCode::BadRequest,
                "no request",
            ),
            (
                request(Some(2), Request::Subscribe(client::Subscribe::default())),
                ErrorCode::BadRequest,
                "'subscribe' needs a topic",
            ),
            (
                request(
                    Some(3),
                    Request::Subscribe(client::Subscribe {
                        topic: "a..b".into(),
                        since: None,
                    }),
                ),
                ErrorCode::BadRequest,
                "empty token",
            ),
            (
                request(Some(4), publish("a.*", b"1", "")),
                ErrorCode::BadRequest,
                "wildcards",
            ),
            (
                request(Some(5), publish(&"x".repeat(256), b"1", "")),
                ErrorCode::TooLarge,
                "limit is 255",
            ),
            (
                request(Some(6), Request::Auth(client::Auth::default())),
                ErrorCode::BadRequest,
                "'auth' needs a token",
            ),
            (
                request(
                    Some(7),
                    Request::Presence(client::Presence {
                        topic: "room.*".into(),
                    }),
                ),
                ErrorCode::BadRequest,
                "wildcards",
            ),
        ];
        for (message, code, text) in cases {
            let error = decode_one(message.clone()).unwrap_err();
            assert_eq!((error.id, error.code), (message.id, code), "{error}");
            assert!(error.message.contains(text), "{message:?}: {error}");
        }
    }

    #[test]
    fn a_request_from_a_newer_client_is_unknown_but_keeps_its_id() {
        // Field 40 of ClientMessage: a request kind this node does not know.
        let mut body = Vec::new();
        prost::encoding::uint64::encode(1, &12, &mut body);
        prost::encoding::bytes::encode(40, &Bytes::from_static(b"\x0a\x01x"), &mut body);
        let mut raw = Vec::new();
        prost::encoding::encode_varint(body.len() as u64, &mut raw);
        raw.extend_from_slice(&body);
        let error = decode(&Bytes::from(raw)).remove(0).unwrap_err();
        assert_eq!((error.id, error.code), (Some(12), ErrorCode::BadRequest));
    }

    #[test]
    fn frame_errors_are_typed_and_end_the_frame() {
        let ping = request(Some(1), Request::Ping(client::Ping {}));
        let good = frame(std::slice::from_ref(&ping));

        // A prefix that announces more than follows.
        let mut truncated = good.to_vec();
        truncated.extend_from_slice(&[10, 1, 2, 3]);
        let all: Vec<_> = decode_messages::<ClientMessage>(&Bytes::from(truncated)).collect();
        assert_eq!(
            all,
            vec![
                Ok(ping.clone()),
                Err(FrameError::Truncated {
                    at: good.len(),
                    len: 10,
                    left: 3
                })
            ]
        );

        // A varint that never ends, or is cut by the end of the frame.
        for bad in [&[0xff; 11][..], &[0x80]] {
            let all: Vec<_> =
                decode_messages::<ClientMessage>(&Bytes::copy_from_slice(bad)).collect();
            assert_eq!(all, vec![Err(FrameError::Length { at: 0 })], "{bad:?}");
        }

        // Bytes that are not a ClientMessage (a field with wire type 7),
        // then a valid message that is no longer read.
        let mut garbage = vec![2, 0x0f, 0x00];
        garbage.extend_from_slice(&good);
        let all: Vec<_> = decode_messages::<ClientMessage>(&Bytes::from(garbage)).collect();
        assert!(
            matches!(&all[..], [Err(FrameError::Malformed { at: 0, .. })]),
            "{all:?}"
        );

        // As requests: one bad_request without id, after what came before.
        let mut mixed = good.to_vec();
        mixed.extend_from_slice(&[5, 0xff]);
        let all = decode(&Bytes::from(mixed));
        assert_eq!(all.len(), 2, "{all:?}");
        assert_eq!(all[0], Ok(ClientRequest::Ping { id: Some(1) }));
        let error = all[1].clone().unwrap_err();
        assert_eq!((error.id, error.code), (None, ErrorCode::BadRequest));
        assert!(error.message.starts_with("malformed frame"), "{error}");

        // Nothing in, nothing out; an empty message is a request of no kind.
        assert!(decode(&Bytes::new()).is_empty());
        let all = decode(&Bytes::from_static(&[0]));
        assert!(
            matches!(&all[..], [Err(RequestError { id: None, .. })]),
            "{all:?}"
        );
    }

    #[test]
    fn server_frames_carry_several_messages() {
        let topic = Topic::parse("chat.room1", 255).unwrap();
        let position = StreamPosition {
            epoch: "ep".into(),
            offset: 42,
        };
        let binary = Bytes::from_static(&[0xff, 0x00, 0x80]);
        let mut joined = Vec::new();
        for part in [
            encode_ok(&OkReply {
                id: Some(1),
                epoch: Some("ep".into()),
                offset: Some(41),
                recovered: Some(true),
            }),
            encode_error(&RequestError::new(Some(2), ErrorCode::Forbidden, "no")),
            encode_pong(None),
            encode_message(&topic, &Bytes::from_static(b"[1]"), None, None),
            encode_message(
                &topic,
                &binary,
                Some("application/octet-stream"),
                Some(&position),
            ),
        ] {
            joined.extend_from_slice(&part);
        }
        let messages = server_messages(&Bytes::from(joined));
        assert_eq!(
            messages,
            vec![
                ServerMessage {
                    id: Some(1),
                    kind: Some(Kind::Ok(server::Ok {
                        epoch: Some("ep".into()),
                        offset: Some(41),
                        recovered: Some(true),
                        presence: None,
                        history: None,
                    })),
                },
                ServerMessage {
                    id: Some(2),
                    kind: Some(Kind::Error(server::Error {
                        code: "forbidden".into(),
                        message: "no".into(),
                    })),
                },
                ServerMessage {
                    id: None,
                    kind: Some(Kind::Pong(server::Pong {})),
                },
                ServerMessage {
                    id: None,
                    kind: Some(Kind::Message(server::Message {
                        topic: "chat.room1".into(),
                        data: Bytes::from_static(b"[1]"),
                        content_type: String::new(),
                        offset: None,
                        epoch: None,
                    })),
                },
                ServerMessage {
                    id: None,
                    kind: Some(Kind::Message(server::Message {
                        topic: "chat.room1".into(),
                        data: binary,
                        content_type: "application/octet-stream".into(),
                        offset: Some(42),
                        epoch: Some("ep".into()),
                    })),
                },
            ]
        );
        // An ok without fields is a bare ok.
        assert_eq!(
            server_messages(&encode_ok(&OkReply::default())),
            vec![ServerMessage {
                id: None,
                kind: Some(Kind::Ok(server::Ok::default())),
            }]
        );
    }

    #[test]
    fn history_replies_carry_the_top_and_each_publication_as_a_message() {
        let topic = Topic::parse("chat.a", 255).unwrap();
        let at = |offset| StreamPosition {
            epoch: "e".into(),
            offset,
        };
        let (first, payload) = (at(56), Bytes::from_static(&[0xff, 0x00]));
        let item = HistoryItem {
            topic: &topic,
            payload: &payload,
            content_type: Some("application/octet-stream"),
            position: Some(&first),
        };
        let [reply] = &server_messages(&encode_history(Some(4), &at(57), false, [item]))[..] else {
            panic!("one message");
        };
        let [delivery] = &server_messages(&encode_message(
            &topic,
            &payload,
            item.content_type,
            item.position,
        ))[..] else {
            panic!("one message");
        };
        let Some(Kind::Message(message)) = &delivery.kind else {
            panic!("{delivery:?}");
        };
        assert_eq!(
            reply,
            &ServerMessage {
                id: Some(4),
                kind: Some(Kind::Ok(server::Ok {
                    epoch: Some("e".into()),
                    offset: Some(57),
                    recovered: Some(false),
                    presence: None,
                    history: Some(server::HistoryPage {
                        publications: vec![message.clone()],
                    }),
                })),
            }
        );
    }

    #[test]
    fn presence_lists_and_events() {
        let alice = PresenceEntry {
            client: "n1-4".into(),
            user: Some("alice".into()),
            node: "n1".into(),
            joined_at: 1_700_000_000_000,
        };
        let anonymous = PresenceEntry {
            client: "n2-1".into(),
            user: None,
            node: "n2".into(),
            joined_at: 5,
        };
        let [list] = &server_messages(&encode_presence(Some(3), &[alice.clone(), anonymous]))[..]
        else {
            panic!()
        };
        let Some(Kind::Ok(ok)) = &list.kind else {
            panic!("{list:?}")
        };
        let entries = &ok.presence.as_ref().unwrap().entries;
        assert_eq!(list.id, Some(3));
        assert_eq!(
            entries
                .iter()
                .map(|e| (e.client.as_str(), e.user.as_deref()))
                .collect::<Vec<_>>(),
            [("n1-4", Some("alice")), ("n2-1", None)]
        );
        // An empty list is still a presence answer.
        let [empty] = &server_messages(&encode_presence(None, &[]))[..] else {
            panic!()
        };
        assert!(matches!(
            &empty.kind,
            Some(Kind::Ok(server::Ok {
                presence: Some(_),
                ..
            }))
        ));

        // An event publication's JSON payload becomes a join or leave.
        let topic = Topic::parse("room.1", 255).unwrap();
        for (event, want) in [
            (PresenceEvent::Join, "join"),
            (PresenceEvent::Leave, "leave"),
        ] {
            let payload = crate::presence::encode_presence_event(event, &topic, &alice);
            let frame = encode_presence_payload(&payload).unwrap();
            let [message] = &server_messages(&frame)[..] else {
                panic!()
            };
            let (got, change) = match &message.kind {
                Some(Kind::Join(change)) => ("join", change),
                Some(Kind::Leave(change)) => ("leave", change),
                other => panic!("{other:?}"),
            };
            assert_eq!(got, want);
            assert_eq!(change.topic, "room.1");
            assert_eq!(change.entry, Some(entry(&alice)));
        }
        assert_eq!(encode_presence_payload(b"{}"), None);
    }

    proptest! {
        /// Whatever a protobuf client publishes with a content type reaches a
        /// protobuf subscriber byte for byte, and JSON values as published.
        #[test]
        fn publish_to_message_round_trip(
            data in prop::collection::vec(any::<u8>(), 0..64),
            content_type in "[a-z]{1,8}/[a-z0-9.+-]{1,12}",
            id in prop::option::of(any::<u64>()),
        ) {
            let decoded = decode_one(request(id, publish("ns.t", &data, &content_type)));
            let Ok(ClientRequest::Publish { id: got_id, topic, data: payload, content_type: got_type }) = decoded else {
                panic!("{decoded:?}")
            };
            prop_assert_eq!(got_id, id);
            let frame = encode_message(&topic, &payload, got_type.as_deref(), None);
            let [message] = &server_messages(&frame)[..] else { panic!() };
            let Some(Kind::Message(message)) = &message.kind else { panic!() };
            prop_assert_eq!(&message.data[..], &data[..]);
            prop_assert_eq!(&message.content_type, &content_type);
            prop_assert_eq!(&message.topic, "ns.t");
        }

        #[test]
        fn arbitrary_frames_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let frame = Bytes::from(bytes);
            // Each message takes at least its one-byte prefix.
            let all: Vec<_> = decode_requests(&frame, MAX_TOPIC_LEN).take(frame.len() + 2).collect();
            prop_assert!(all.len() <= frame.len());
            if let Some(at) = all.iter().position(|r| matches!(r, Err(e) if e.message.starts_with("malformed frame"))) {
                prop_assert_eq!(at + 1, all.len());
            }
        }
    }
}
