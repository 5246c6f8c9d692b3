//! What the load tool publishes and how it reads what arrives, in the native
//! JSON protocol (`ferrocast.v1.json`): requests are encoded and server
//! frames decoded by [`ferrocast_protocol::client`]; this module adds the
//! tool's own data (`{"ts":…,"seq":…,"pad":"xx…"}`) and reduces each object
//! to a [`ServerEvent`]. No I/O, so that it can be tested on its own.

use std::fmt::Write as _;

use ferrocast_protocol::client::{decode_frame, Request, ServerObject};
use ferrocast_protocol::StreamPosition;
use serde::Deserialize;

pub(crate) use ferrocast_protocol::client::Position;

/// The topic subscriber `index` subscribes to, and publishers publish to in turn.
pub(crate) fn topic_name(index: usize) -> String {
    format!("bench.t{index}")
}

/// `{"op":"subscribe","id":<id>,"topic":"<topic>"}`, with
/// `"since":{"epoch":…,"offset":N}` when resuming.
pub(crate) fn subscribe_request(id: u64, topic: &str, since: Option<&StreamPosition>) -> String {
    Request::Subscribe {
        id: Some(id),
        topic,
        since,
    }
    .encode()
}

/// A publish without `id` (the node sends no reply unless it fails):
/// `{"op":"publish","topic":"…","data":<bench data>}`.
pub(crate) fn publish_request(topic: &str, ts: u64, seq: u64, payload_bytes: usize) -> String {
    let mut data = String::with_capacity(payload_bytes + 48);
    write_bench_data(&mut data, ts, seq, payload_bytes);
    let mut out = String::with_capacity(data.len() + topic.len() + 40);
    Request::Publish {
        id: None,
        topic,
        data: &data,
    }
    .write_to(&mut out);
    out
}

/// The `data` of every publication of the tool,
/// `{"ts":…,"seq":…,"pad":"xx…"}`, appended to `out`.
///
/// `ts` is the send time in Unix nanoseconds; `pad` makes the object
/// `payload_bytes` long, or as short as it can be when `payload_bytes` is
/// smaller than the object without padding.
pub(crate) fn write_bench_data(out: &mut String, ts: u64, seq: u64, payload_bytes: usize) {
    let data_start = out.len();
    let _ = write!(out, r#"{{"ts":{ts},"seq":{seq},"pad":""#);
    // The data object ends with `"}`: two more bytes.
    let pad = payload_bytes.saturating_sub(out.len() - data_start + 2);
    out.extend(std::iter::repeat_n('x', pad));
    out.push_str(r#""}"#);
}

/// `ts` and `seq` of a body that holds the tool's data (a delivery's data, a
/// STOMP MESSAGE body). The tool's own shape is read in place, without a
/// JSON parser (which would cost the generator more CPU than the node spends
/// delivering); anything else is parsed.
pub(crate) fn parse_bench_data(body: &str) -> Option<(u64, u64)> {
    if let Some((ts, seq, _)) = scan_bench_data(body) {
        return Some((ts, seq));
    }
    // Only an object is ours (serde would also read a struct from an array).
    if !body.trim_start().starts_with('{') {
        return None;
    }
    serde_json::from_str::<BenchData>(body)
        .ok()
        .map(|data| (data.ts, data.seq))
}

/// One object from the node, reduced to what the load tool looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ServerEvent<'a> {
    /// A delivery of one of our publications.
    Delivery {
        topic: &'a str,
        /// Unix nanoseconds at publish.
        ts: u64,
        seq: u64,
        /// Where the publication sits in its topic's history, when it has one.
        position: Option<Position<'a>>,
    },
    /// A delivery whose data is not one of ours (no integer `ts` and `seq`).
    ForeignDelivery,
    /// A successful reply (JSON `ok`, STOMP `RECEIPT`).
    Ok {
        id: Option<u64>,
        /// On a reply to a `subscribe` with `since`: whether the gap was replayed.
        recovered: Option<bool>,
        position: Option<StreamPosition>,
    },
    Error {
        id: Option<u64>,
        code: String,
        message: String,
    },
    /// Anything else (`pong`, ops this tool does not know, objects it cannot read).
    Other,
}

/// The `data` the load tool publishes; `pad` is skipped.
#[derive(Deserialize)]
struct BenchData {
    ts: u64,
    seq: u64,
}

/// Hands every object of a JSON text frame to `on_event`, in order.
pub(crate) fn read_frame<'a>(text: &'a str, mut on_event: impl FnMut(ServerEvent<'a>)) {
    for object in decode_frame(text) {
        on_event(object.map_or(ServerEvent::Other, event));
    }
}

/// What one decoded object means to the tool.
fn event(object: ServerObject<'_>) -> ServerEvent<'_> {
    match object {
        ServerObject::Message(delivery) => {
            let topic = match delivery.topic {
                std::borrow::Cow::Borrowed(topic) => Some(topic),
                // Topics of the tool need no unescaping.
                std::borrow::Cow::Owned(_) => None,
            };
            match (topic, parse_bench_data(delivery.data.get())) {
                (Some(topic), Some((ts, seq))) => ServerEvent::Delivery {
                    topic,
                    ts,
                    seq,
                    position: delivery.position,
                },
                _ => ServerEvent::ForeignDelivery,
            }
        }
        ServerObject::Ok(reply) => ServerEvent::Ok {
            id: reply.id,
            recovered: reply.recovered,
            position: reply
                .epoch
                .zip(reply.offset)
                .map(|(epoch, offset)| StreamPosition { epoch, offset }),
        },
        ServerObject::Error(error) => ServerEvent::Error {
            id: error.id,
            code: error.code.into_owned(),
            message: error.message.into_owned(),
        },
        ServerObject::Presence { .. }
        | ServerObject::History { .. }
        | ServerObject::Pong { .. }
        | ServerObject::Unsubscribed { .. }
        | ServerObject::Other { .. } => ServerEvent::Other,
    }
}

/// `ts`, `seq` and what follows a data object exactly as the tool writes it,
/// `{"ts":N,"seq":N}` or `{"ts":N,"seq":N,"pad":"x…"}`.
fn scan_bench_data(text: &str) -> Option<(u64, u64, &str)> {
    let rest = text.strip_prefix(r#"{"ts":"#)?;
    let (ts, rest) = leading_integer(rest)?;
    let rest = rest.strip_prefix(r#","seq":"#)?;
    let (seq, rest) = leading_integer(rest)?;
    let rest = match rest.strip_prefix(r#","pad":""#) {
        Some(pad) => {
            let end = pad.bytes().position(|b| b != b'x')?;
            pad[end..].strip_prefix('"')?
        }
        None => rest,
    };
    Some((ts, seq, rest.strip_prefix('}')?))
}

/// The unsigned integer at the start of `text` and what follows it.
fn leading_integer(text: &str) -> Option<(u64, &str)> {
    let end = text
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, rest) = text.split_at(end);
    if digits.is_empty() || (digits.len() > 1 && digits.starts_with('0')) {
        return None;
    }
    Some((digits.parse().ok()?, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the tool makes of each object of `frame`.
    fn events(frame: &str) -> Vec<ServerEvent<'_>> {
        let mut out = Vec::new();
        read_frame(frame, |event| out.push(event));
        out
    }

    /// What the tool makes of one object.
    fn parse_object(line: &str) -> ServerEvent<'_> {
        let mut all = events(line);
        assert_eq!(all.len(), 1, "{line}");
        all.remove(0)
    }

    fn at(epoch: &str, offset: u64) -> Option<Position<'_>> {
        Some(Position {
            epoch: epoch.into(),
            offset,
        })
    }

    fn delivery<'a>(
        topic: &'a str,
        ts: u64,
        seq: u64,
        position: Option<Position<'a>>,
    ) -> ServerEvent<'a> {
        ServerEvent::Delivery {
            topic,
            ts,
            seq,
            position,
        }
    }

    #[test]
    fn a_batched_frame_is_split_into_its_objects() {
        let frame = concat!(
            r#"{"op":"message","topic":"bench.t0","data":{"ts":10,"seq":1,"pad":"xx"}}"#,
            "\n",
            r#"{"op":"ok","id":7}"#,
            "\n",
            r#"{"op":"message","topic":"bench.t1","data":{"ts":20,"seq":2,"pad":""},"offset":4,"epoch":"e"}"#,
            "\n",
        );
        assert_eq!(
            events(frame),
            [
                delivery("bench.t0", 10, 1, None),
                ServerEvent::Ok {
                    id: Some(7),
                    recovered: None,
                    position: None
                },
                delivery("bench.t1", 20, 2, at("e", 4)),
            ]
        );
    }

    #[test]
    fn a_frame_with_one_object_needs_no_newline() {
        assert_eq!(events(r#"{"op":"pong","id":1}"#), [ServerEvent::Other]);
        assert_eq!(events(""), []);
    }

    #[test]
    fn subscribe_replies_carry_recovery_and_position() {
        assert_eq!(
            parse_object(r#"{"op":"ok","id":2,"recovered":false}"#),
            ServerEvent::Ok {
                id: Some(2),
                recovered: Some(false),
                position: None
            }
        );
        assert_eq!(
            parse_object(r#"{"op":"ok","id":3,"epoch":"x1","offset":41,"recovered":true}"#),
            ServerEvent::Ok {
                id: Some(3),
                recovered: Some(true),
                position: Some(StreamPosition {
                    epoch: "x1".into(),
                    offset: 41
                })
            }
        );
    }

    #[test]
    fn errors_and_foreign_data_are_recognised_and_garbage_is_an_error() {
        assert_eq!(
            parse_object(r#"{"op":"error","code":"rate_limited","message":"slow \"down\""}"#),
            ServerEvent::Error {
                id: None,
                code: "rate_limited".into(),
                message: "slow \"down\"".into()
            }
        );
        assert_eq!(
            parse_object(r#"{"op":"message","topic":"bench.t0","data":[1,2]}"#),
            ServerEvent::ForeignDelivery
        );
        assert_eq!(
            parse_object(r#"{"op":"message","topic":"bench.t0","data":{"ts":-1,"seq":0}}"#),
            ServerEvent::ForeignDelivery
        );
        assert_eq!(parse_object("{\"op\":"), ServerEvent::Other);
        assert_eq!(parse_object("[]"), ServerEvent::Other);
    }

    #[test]
    fn the_tools_data_is_read_in_place_and_anything_else_parsed() {
        let lines = [
            (
                r#"{"op":"message","topic":"bench.t0","data":{"ts":1700000000123456789,"seq":0,"pad":"xxxx"}}"#,
                delivery("bench.t0", 1_700_000_000_123_456_789, 0, None),
            ),
            (
                r#"{"op":"message","topic":"bench.t12","data":{"ts":5,"seq":18446744073709551615,"pad":""},"offset":3,"epoch":"e"}"#,
                delivery("bench.t12", 5, u64::MAX, at("e", 3)),
            ),
            (
                r#"{"op":"message","topic":"bench.t0","data":{"ts":5,"seq":7}}"#,
                delivery("bench.t0", 5, 7, None),
            ),
            // Not in the tool's exact shape: parsed, with the same result.
            (
                r#"{"op":"message","topic":"bench.t0","data":{"seq":7,"ts":5}}"#,
                delivery("bench.t0", 5, 7, None),
            ),
            (
                r#"{"op":"message","topic":"bench.t0","data":{"ts":5,"seq":7,"pad":"xy"}}"#,
                delivery("bench.t0", 5, 7, None),
            ),
            (
                r#"{ "op":"message", "topic":"bench.t0", "data":{"seq":7, "ts":5}, "epoch":"e", "offset":1}"#,
                delivery("bench.t0", 5, 7, at("e", 1)),
            ),
        ];
        for (line, event) in lines {
            assert_eq!(parse_object(line), event, "{line}");
        }
        for line in [
            r#"{"op":"message","topic":"bench.t0","data":{"ts":5.5,"seq":7}}"#,
            r#"{"op":"message","topic":"bench.t0","data":{"ts":-5,"seq":7}}"#,
            r#"{"op":"message","topic":"bench.t0","data":{"ts":99999999999999999999,"seq":7}}"#,
        ] {
            assert_eq!(parse_object(line), ServerEvent::ForeignDelivery, "{line}");
        }
        for line in [
            r#"{"op":"message","topic":"bench.t0","data":{"ts":05,"seq":7}}"#,
            r#"{"op":"message","topic":"a"b","data":{"ts":5,"seq":7}}"#,
        ] {
            assert_eq!(parse_object(line), ServerEvent::Other, "{line}");
        }
    }

    #[test]
    fn publish_data_has_the_requested_size_and_parses_back() {
        for payload_bytes in [0, 10, 64, 128, 4096] {
            let request = publish_request("bench.t3", 1_700_000_000_123_456_789, 42, payload_bytes);
            let value: serde_json::Value = serde_json::from_str(&request).unwrap();
            assert_eq!(value["op"], "publish");
            assert_eq!(value["topic"], "bench.t3");
            assert_eq!(value["data"]["ts"], 1_700_000_000_123_456_789_u64);
            assert_eq!(value["data"]["seq"], 42);
            let data = value["data"].to_string();
            let minimum = r#"{"ts":1700000000123456789,"seq":42,"pad":""}"#.len();
            assert_eq!(data.len(), payload_bytes.max(minimum), "{payload_bytes}");
            assert_eq!(
                parse_bench_data(&data),
                Some((1_700_000_000_123_456_789, 42))
            );
        }
        assert_eq!(parse_bench_data(r#" {"seq":2,"ts":1}"#), Some((1, 2)));
        assert_eq!(parse_bench_data("hello"), None);
    }

    #[test]
    fn subscribe_requests_are_the_documented_shape() {
        assert_eq!(
            subscribe_request(1, &topic_name(0), None),
            r#"{"op":"subscribe","id":1,"topic":"bench.t0"}"#
        );
        let since = StreamPosition {
            epoch: "ep\"1".into(),
            offset: 41,
        };
        let request = subscribe_request(2, "bench.t1", Some(&since));
        assert_eq!(
            request,
            r#"{"op":"subscribe","id":2,"topic":"bench.t1","since":{"epoch":"ep\"1","offset":41}}"#
        );
        let value: serde_json::Value = serde_json::from_str(&request).unwrap();
        assert_eq!(value["since"]["epoch"], "ep\"1");
    }
}
