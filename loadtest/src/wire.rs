//! The parts of the native JSON protocol (`ferrocast.v1.json`) the load tool
//! speaks: subscribe and publish requests out, replies and deliveries in.
//! No I/O, so that it can be tested on its own.

use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::value::RawValue;

/// The subprotocol offered on every connection.
pub(crate) const SUBPROTOCOL: &str = "ferrocast.v1.json";

/// The topic subscriber `index` subscribes to, and publishers publish to in turn.
pub(crate) fn topic_name(index: usize) -> String {
    format!("bench.t{index}")
}

/// A position in a topic's history, as the node reports it on deliveries and
/// `ok` replies of topics that keep history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position<'a> {
    pub(crate) epoch: &'a str,
    pub(crate) offset: u64,
}

/// An owned [`Position`], kept by a client to resume from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResumePoint {
    pub(crate) epoch: String,
    pub(crate) offset: u64,
}

impl ResumePoint {
    pub(crate) fn from_position(position: Position<'_>) -> Self {
        Self {
            epoch: position.epoch.to_owned(),
            offset: position.offset,
        }
    }
}

/// `{"op":"subscribe","id":<id>,"topic":"<topic>"}`, with
/// `"since":{"epoch":…,"offset":N}` when resuming. Topics made by
/// [`topic_name`] need no JSON escaping.
pub(crate) fn subscribe_request(id: u64, topic: &str, since: Option<&ResumePoint>) -> String {
    match since {
        None => format!(r#"{{"op":"subscribe","id":{id},"topic":"{topic}"}}"#),
        Some(point) => {
            let epoch = serde_json::Value::from(point.epoch.as_str());
            format!(
                r#"{{"op":"subscribe","id":{id},"topic":"{topic}","since":{{"epoch":{epoch},"offset":{}}}}}"#,
                point.offset
            )
        }
    }
}

/// A publish without `id` (the node sends no reply unless it fails):
/// `{"op":"publish","topic":"…","data":<bench data>}`.
pub(crate) fn publish_request(topic: &str, ts: u64, seq: u64, payload_bytes: usize) -> String {
    let mut out = String::with_capacity(payload_bytes + topic.len() + 48);
    let _ = write!(out, r#"{{"op":"publish","topic":"{topic}","data":"#);
    write_bench_data(&mut out, ts, seq, payload_bytes);
    out.push('}');
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

/// `ts` and `seq` of a body that holds the tool's data (a STOMP MESSAGE body).
pub(crate) fn parse_bench_data(body: &str) -> Option<(u64, u64)> {
    if let Some((ts, seq, _)) = scan_bench_data(body) {
        return Some((ts, seq));
    }
    if !body.trim_start().starts_with('{') {
        return None;
    }
    serde_json::from_str::<BenchData>(body)
        .ok()
        .map(|data| (data.ts, data.seq))
}

/// The objects of one text frame: a frame may carry several, one per line.
/// Empty lines (a trailing newline) are skipped.
pub(crate) fn split_frame(text: &str) -> impl Iterator<Item = &str> {
    text.split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .filter(|line| !line.trim().is_empty())
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
        position: Option<Position<'a>>,
    },
    Error {
        id: Option<u64>,
        code: String,
        message: String,
    },
    /// Anything else (`pong`, ops this tool does not know).
    Other,
}

/// The fields of any server object; absent ones are `None`.
#[derive(Deserialize)]
struct RawObject<'a> {
    #[serde(borrow)]
    op: std::borrow::Cow<'a, str>,
    #[serde(default)]
    id: Option<u64>,
    #[serde(default, borrow)]
    topic: Option<&'a str>,
    /// Kept as text and decoded only for deliveries.
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default, borrow)]
    epoch: Option<&'a str>,
    #[serde(default)]
    recovered: Option<bool>,
}

impl<'a> RawObject<'a> {
    fn position(&self) -> Option<Position<'a>> {
        Some(Position {
            epoch: self.epoch?,
            offset: self.offset?,
        })
    }
}

/// The `data` the load tool publishes; `pad` is skipped.
#[derive(Deserialize)]
struct BenchData {
    ts: u64,
    seq: u64,
}

/// Parses one object (one line of a frame).
pub(crate) fn parse_object(line: &str) -> Result<ServerEvent<'_>, serde_json::Error> {
    if let Some(delivery) = scan_delivery(line) {
        return Ok(delivery);
    }
    parse_with_serde(line)
}

/// The fast path for the bulk of the traffic: a delivery of our data exactly
/// as the node encodes it,
/// `{"op":"message","topic":"…","data":{"ts":N,"seq":N,"pad":"x…"}}`, optionally
/// followed by `,"offset":N,"epoch":"…"`. Reads the fields in place without a
/// JSON parser (which would cost the generator more CPU than the node spends
/// delivering). Anything else, or in another field order, is `None` and goes
/// to the JSON parser.
fn scan_delivery(line: &str) -> Option<ServerEvent<'_>> {
    let rest = line.strip_prefix(r#"{"op":"message","topic":""#)?;
    let (topic, rest) = rest.split_once('"')?;
    if topic.contains('\\') {
        return None;
    }
    let rest = rest.strip_prefix(r#","data":"#)?;
    let (ts, seq, rest) = scan_bench_data(rest)?;
    let position = match rest {
        "}" => None,
        _ => {
            let rest = rest.strip_prefix(r#","offset":"#)?;
            let (offset, rest) = leading_integer(rest)?;
            let rest = rest.strip_prefix(r#","epoch":""#)?;
            let (epoch, rest) = rest.split_once('"')?;
            if epoch.contains('\\') || rest != "}" {
                return None;
            }
            Some(Position { epoch, offset })
        }
    };
    Some(ServerEvent::Delivery {
        topic,
        ts,
        seq,
        position,
    })
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

fn parse_with_serde(line: &str) -> Result<ServerEvent<'_>, serde_json::Error> {
    let raw: RawObject<'_> = serde_json::from_str(line)?;
    Ok(match raw.op.as_ref() {
        "message" => {
            // Only an object is ours (serde would also read a struct from an array).
            let ours = raw
                .data
                .filter(|data| data.get().starts_with('{'))
                .and_then(|data| serde_json::from_str::<BenchData>(data.get()).ok());
            match (raw.topic, ours) {
                (Some(topic), Some(BenchData { ts, seq })) => ServerEvent::Delivery {
                    topic,
                    ts,
                    seq,
                    position: raw.position(),
                },
                _ => ServerEvent::ForeignDelivery,
            }
        }
        "ok" => ServerEvent::Ok {
            id: raw.id,
            recovered: raw.recovered,
            position: raw.position(),
        },
        "error" => ServerEvent::Error {
            id: raw.id,
            code: raw.code.unwrap_or_default(),
            message: raw.message.unwrap_or_default(),
        },
        _ => ServerEvent::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let events: Vec<_> = split_frame(frame)
            .map(|line| parse_object(line).unwrap())
            .collect();
        assert_eq!(
            events,
            [
                delivery("bench.t0", 10, 1, None),
                ServerEvent::Ok {
                    id: Some(7),
                    recovered: None,
                    position: None
                },
                delivery(
                    "bench.t1",
                    20,
                    2,
                    Some(Position {
                        epoch: "e",
                        offset: 4
                    })
                ),
            ]
        );
    }

    #[test]
    fn a_frame_with_one_object_needs_no_newline() {
        let lines: Vec<_> = split_frame(r#"{"op":"pong","id":1}"#).collect();
        assert_eq!(lines, [r#"{"op":"pong","id":1}"#]);
        assert_eq!(parse_object(lines[0]).unwrap(), ServerEvent::Other);
        assert_eq!(split_frame("").count(), 0);
    }

    #[test]
    fn subscribe_replies_carry_recovery_and_position() {
        assert_eq!(
            parse_object(r#"{"op":"ok","id":2,"recovered":false}"#).unwrap(),
            ServerEvent::Ok {
                id: Some(2),
                recovered: Some(false),
                position: None
            }
        );
        assert_eq!(
            parse_object(r#"{"op":"ok","id":3,"epoch":"x1","offset":41,"recovered":true}"#)
                .unwrap(),
            ServerEvent::Ok {
                id: Some(3),
                recovered: Some(true),
                position: Some(Position {
                    epoch: "x1",
                    offset: 41
                })
            }
        );
    }

    #[test]
    fn errors_and_foreign_data_are_recognised_and_garbage_is_an_error() {
        assert_eq!(
            parse_object(r#"{"op":"error","code":"rate_limited","message":"slow \"down\""}"#)
                .unwrap(),
            ServerEvent::Error {
                id: None,
                code: "rate_limited".into(),
                message: "slow \"down\"".into()
            }
        );
        assert_eq!(
            parse_object(r#"{"op":"message","topic":"bench.t0","data":[1,2]}"#).unwrap(),
            ServerEvent::ForeignDelivery
        );
        assert_eq!(
            parse_object(r#"{"op":"message","topic":"bench.t0","data":{"ts":-1,"seq":0}}"#)
                .unwrap(),
            ServerEvent::ForeignDelivery
        );
        assert!(parse_object("{\"op\":").is_err());
        assert!(parse_object("[]").is_err());
    }

    #[test]
    fn the_fast_path_agrees_with_the_json_parser() {
        let lines = [
            r#"{"op":"message","topic":"bench.t0","data":{"ts":1700000000123456789,"seq":0,"pad":"xxxx"}}"#,
            r#"{"op":"message","topic":"bench.t12","data":{"ts":5,"seq":18446744073709551615,"pad":""},"offset":3,"epoch":"e"}"#,
            r#"{"op":"message","topic":"bench.t0","data":{"ts":5,"seq":7}}"#,
        ];
        for line in lines {
            let fast = scan_delivery(line);
            assert!(fast.is_some(), "{line}");
            assert_eq!(fast, Some(parse_with_serde(line).unwrap()), "{line}");
        }
        // Not in the node's exact shape: left to the JSON parser.
        for line in [
            r#"{"op":"message","topic":"bench.t0","data":{"seq":7,"ts":5}}"#,
            r#"{"op":"message","topic":"bench.t0","data":{"ts":05,"seq":7}}"#,
            r#"{"op":"message","topic":"bench.t0","data":{"ts":5.5,"seq":7}}"#,
            r#"{"op":"message","topic":"bench.t0","data":{"ts":-5,"seq":7}}"#,
            r#"{"op":"message","topic":"bench.t0","data":{"ts":99999999999999999999,"seq":7}}"#,
            r#"{"op":"message","topic":"a"b","data":{"ts":5,"seq":7}}"#,
            r#"{ "op":"message","topic":"bench.t0","data":{"ts":5,"seq":7}}"#,
            r#"{"op":"message","topic":"bench.t0","data":{"ts":5,"seq":7,"pad":"xy"}}"#,
            r#"{"op":"message","topic":"bench.t0","data":{"ts":5,"seq":7},"epoch":"e","offset":1}"#,
            r#"{"op":"ok","id":1}"#,
        ] {
            assert_eq!(scan_delivery(line), None, "{line}");
        }
        assert_eq!(
            parse_object(r#"{ "op":"message", "topic":"bench.t0", "data":{"seq":7, "ts":5}, "epoch":"e", "offset":1}"#)
                .unwrap(),
            delivery("bench.t0", 5, 7, Some(Position { epoch: "e", offset: 1 }))
        );
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
        let since = ResumePoint {
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
