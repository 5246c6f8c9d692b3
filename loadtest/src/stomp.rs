//! The parts of STOMP 1.2 (subprotocol `v12.stomp`) the load tool speaks:
//! `CONNECT`, `SUBSCRIBE` with a receipt (and `ferrocast-since` to resume) and
//! `SEND` out; `CONNECTED`, `MESSAGE`, `RECEIPT` and `ERROR` in, with the
//! history positions ferrocast adds (`ferrocast-epoch`, `ferrocast-offset`,
//! `ferrocast-recovered`). No I/O.
//!
//! Header values the tool reads back are taken as they are: a value holding
//! an escape (a backslash) is ignored rather than unescaped, which only
//! matters for an epoch, and then the client does not resume.

use std::fmt::Write as _;

use ferrocast_protocol::StreamPosition;

use crate::wire::{parse_bench_data, write_bench_data, Position, ServerEvent};

/// The subprotocol offered on STOMP connections.
pub(crate) const SUBPROTOCOL: &str = "v12.stomp";

/// The destination prefix of topics.
const TOPIC_PREFIX: &str = "/topic/";

/// `CONNECT` for STOMP 1.2 without heart-beats.
pub(crate) fn connect_frame() -> String {
    "CONNECT\naccept-version:1.2\nhost:ferrocast\nheart-beat:0,0\n\n\0".to_owned()
}

/// `SUBSCRIBE` to `/topic/<topic>` with subscription id `id`, asking for a
/// `RECEIPT` whose `receipt-id` is `id` as well; with
/// `ferrocast-since:<epoch>:<offset>` when resuming.
pub(crate) fn subscribe_frame(id: u64, topic: &str, since: Option<&StreamPosition>) -> String {
    let mut out =
        format!("SUBSCRIBE\nid:{id}\ndestination:{TOPIC_PREFIX}{topic}\nack:auto\nreceipt:{id}\n");
    if let Some(point) = since {
        let _ = writeln!(
            out,
            "ferrocast-since:{}\\c{}",
            escape_header_value(&point.epoch),
            point.offset
        );
    }
    out.push_str("\n\0");
    out
}

/// Escapes a STOMP 1.2 header value (`\\`, `\c`, `\n`, `\r`).
fn escape_header_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ':' => out.push_str("\\c"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// `SEND` of the tool's data (see [`write_bench_data`]) to `/topic/<topic>` as
/// `application/json`, without a receipt.
pub(crate) fn send_frame(topic: &str, ts: u64, seq: u64, payload_bytes: usize) -> String {
    let mut body = String::with_capacity(payload_bytes + 48);
    write_bench_data(&mut body, ts, seq, payload_bytes);
    let mut out = String::with_capacity(body.len() + topic.len() + 96);
    let _ = write!(
        out,
        "SEND\ndestination:{TOPIC_PREFIX}{topic}\ncontent-type:application/json\ncontent-length:{}\n\n{body}\0",
        body.len()
    );
    out
}

/// One frame as received: the command, the header block and the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StompFrame<'a> {
    pub(crate) command: &'a str,
    headers: &'a str,
    pub(crate) body: &'a str,
}

impl<'a> StompFrame<'a> {
    /// Parses one frame without its NUL; leading EOLs (heart-beats) are
    /// skipped. `None` when there is no command line and blank line.
    pub(crate) fn parse(text: &'a str) -> Option<Self> {
        let text = text.trim_start_matches(['\r', '\n']);
        let (command, rest) = text.split_once('\n')?;
        let command = command.strip_suffix('\r').unwrap_or(command);
        // The header block ends at the first empty line.
        let (headers, body) = if let Some(body) = rest.strip_prefix('\n') {
            ("", body)
        } else if let Some(body) = rest.strip_prefix("\r\n") {
            ("", body)
        } else {
            let end = rest.find("\n\n").or_else(|| rest.find("\r\n\r\n"))?;
            let blank = if rest[end..].starts_with("\n\n") {
                2
            } else {
                4
            };
            (&rest[..end], &rest[end + blank..])
        };
        Some(Self {
            command,
            headers,
            body,
        })
    }

    /// The first value of header `name` (unescaped headers only).
    pub(crate) fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.lines().find_map(|line| {
            let line = line.strip_suffix('\r').unwrap_or(line);
            line.strip_prefix(name)?.strip_prefix(':')
        })
    }

    /// `ferrocast-epoch` and `ferrocast-offset`, when both are there.
    fn position(&self) -> Option<Position<'a>> {
        let epoch = self
            .header("ferrocast-epoch")
            .filter(|epoch| !epoch.contains('\\'))?;
        let offset = self.header("ferrocast-offset")?.parse().ok()?;
        Some(Position {
            epoch: epoch.into(),
            offset,
        })
    }

    /// What the frame means to the tool, in the terms of the JSON protocol.
    pub(crate) fn event(&self) -> ServerEvent<'a> {
        match self.command {
            "MESSAGE" => {
                let topic = self
                    .header("destination")
                    .and_then(|d| d.strip_prefix(TOPIC_PREFIX));
                match (topic, parse_bench_data(self.body)) {
                    (Some(topic), Some((ts, seq))) => ServerEvent::Delivery {
                        topic,
                        ts,
                        seq,
                        position: self.position(),
                    },
                    _ => ServerEvent::ForeignDelivery,
                }
            }
            "RECEIPT" => ServerEvent::Ok {
                id: self.header("receipt-id").and_then(|id| id.parse().ok()),
                recovered: self
                    .header("ferrocast-recovered")
                    .and_then(|r| r.parse().ok()),
                position: self.position().map(|p| p.to_stream_position()),
            },
            "ERROR" => ServerEvent::Error {
                id: self.header("receipt-id").and_then(|id| id.parse().ok()),
                code: "stomp_error".to_owned(),
                message: self.header("message").unwrap_or_default().to_owned(),
            },
            _ => ServerEvent::Other,
        }
    }
}

/// Reassembles frames from WebSocket messages: a message may hold several
/// frames, and a frame may span messages.
#[derive(Debug, Default)]
pub(crate) struct FrameReader {
    /// The start of a frame whose NUL has not arrived yet.
    partial: String,
}

impl FrameReader {
    /// Hands every frame completed by `text` to `on_frame`, in order.
    pub(crate) fn feed<'t>(&mut self, text: &'t str, mut on_frame: impl FnMut(StompFrame<'_>)) {
        let mut handle = |raw: &str| {
            if let Some(frame) = StompFrame::parse(raw) {
                on_frame(frame);
            }
        };
        let rest: &'t str = if self.partial.is_empty() {
            text
        } else {
            match text.split_once('\0') {
                None => {
                    self.partial.push_str(text);
                    return;
                }
                Some((end, rest)) => {
                    let mut whole = std::mem::take(&mut self.partial);
                    whole.push_str(end);
                    handle(&whole);
                    rest
                }
            }
        };
        let mut pieces = rest.split('\0');
        let tail = pieces.next_back().unwrap_or_default();
        for raw in pieces {
            handle(raw);
        }
        // What follows the last NUL: heart-beat EOLs, or the start of a frame.
        if !tail.trim_start_matches(['\r', '\n']).is_empty() {
            self.partial.push_str(tail);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::publish_request;

    fn events(reader: &mut FrameReader, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        reader.feed(text, |frame| out.push(format!("{:?}", frame.event())));
        out
    }

    #[test]
    fn client_frames_are_nul_terminated_with_the_expected_headers() {
        assert_eq!(
            connect_frame(),
            "CONNECT\naccept-version:1.2\nhost:ferrocast\nheart-beat:0,0\n\n\0"
        );
        let subscribe = subscribe_frame(7, "bench.t3", None);
        let frame = StompFrame::parse(subscribe.strip_suffix('\0').unwrap()).unwrap();
        assert_eq!(frame.command, "SUBSCRIBE");
        assert_eq!(frame.header("id"), Some("7"));
        assert_eq!(frame.header("receipt"), Some("7"));
        assert_eq!(frame.header("destination"), Some("/topic/bench.t3"));
        assert_eq!(frame.header("ferrocast-since"), None);
        let since = StreamPosition {
            epoch: "e:1\\x".into(),
            offset: 41,
        };
        let resume = subscribe_frame(8, "bench.t3", Some(&since));
        let frame = StompFrame::parse(resume.strip_suffix('\0').unwrap()).unwrap();
        // Escaped as STOMP 1.2 demands; the node splits at the last `:`.
        assert_eq!(frame.header("ferrocast-since"), Some("e\\c1\\\\x\\c41"));

        let send = send_frame("bench.t1", 1_700_000_000_000_000_000, 5, 100);
        let frame = StompFrame::parse(send.strip_suffix('\0').unwrap()).unwrap();
        assert_eq!(frame.command, "SEND");
        assert_eq!(frame.header("content-type"), Some("application/json"));
        assert_eq!(frame.header("content-length"), Some("100"));
        assert_eq!(frame.body.len(), 100);
        // The body is the same data a JSON publish carries.
        let json: serde_json::Value = serde_json::from_str(&publish_request(
            "bench.t1",
            1_700_000_000_000_000_000,
            5,
            100,
        ))
        .unwrap();
        let body: serde_json::Value = serde_json::from_str(frame.body).unwrap();
        assert_eq!(json["data"], body);
    }

    #[test]
    fn messages_receipts_and_errors_become_events() {
        let mut reader = FrameReader::default();
        let text = concat!(
            "MESSAGE\nsubscription:1\nmessage-id:9\ndestination:/topic/bench.t2\n",
            "content-type:application/json\ncontent-length:32\n\n",
            r#"{"ts":1234,"seq":8,"pad":"xxxxx"}"#,
            "\0\n",
            "RECEIPT\nreceipt-id:4\n\n\0",
            "ERROR\nmessage:too slow\ncontent-type:text/plain\n\nbody\0",
            "MESSAGE\ndestination:/topic/bench.t2\n\n[1,2]\0",
        );
        assert_eq!(
            events(&mut reader, text),
            [
                r#"Delivery { topic: "bench.t2", ts: 1234, seq: 8, position: None }"#,
                "Ok { id: Some(4), recovered: None, position: None }",
                r#"Error { id: None, code: "stomp_error", message: "too slow" }"#,
                "ForeignDelivery",
            ]
        );
    }

    #[test]
    fn history_positions_and_recovery_are_read_from_headers() {
        let mut reader = FrameReader::default();
        let text = concat!(
            "RECEIPT\nreceipt-id:2\nferrocast-epoch:ab12\nferrocast-offset:40\nferrocast-recovered:true\n\n\0",
            "MESSAGE\ndestination:/topic/bench.t1\nferrocast-epoch:ab12\nferrocast-offset:41\n\n",
            r#"{"ts":9,"seq":3}"#,
            "\0",
            "MESSAGE\ndestination:/topic/bench.t1\nferrocast-epoch:a\\cb\nferrocast-offset:42\n\n",
            r#"{"ts":9,"seq":4}"#,
            "\0",
        );
        assert_eq!(
            events(&mut reader, text),
            [
                r#"Ok { id: Some(2), recovered: Some(true), position: Some(StreamPosition { epoch: "ab12", offset: 40 }) }"#,
                r#"Delivery { topic: "bench.t1", ts: 9, seq: 3, position: Some(Position { epoch: "ab12", offset: 41 }) }"#,
                // An escaped epoch is not resumed from.
                r#"Delivery { topic: "bench.t1", ts: 9, seq: 4, position: None }"#,
            ]
        );
    }

    #[test]
    fn a_frame_split_over_messages_is_reassembled() {
        let whole = "RECEIPT\r\nreceipt-id:12\r\n\r\n\0MESSAGE\ndestination:/topic/bench.t0\n\n{\"ts\":5,\"seq\":6}\0\n\n";
        for cut in 0..whole.len() {
            let mut reader = FrameReader::default();
            let mut seen = events(&mut reader, &whole[..cut]);
            seen.extend(events(&mut reader, &whole[cut..]));
            assert_eq!(
                seen,
                [
                    "Ok { id: Some(12), recovered: None, position: None }",
                    r#"Delivery { topic: "bench.t0", ts: 5, seq: 6, position: None }"#,
                ],
                "cut at {cut}"
            );
            assert!(reader.partial.is_empty(), "cut at {cut}");
        }
    }

    #[test]
    fn heart_beats_and_garbage_yield_nothing() {
        let mut reader = FrameReader::default();
        assert!(events(&mut reader, "\n\r\n").is_empty());
        assert!(events(&mut reader, "NOHEADERS\0").is_empty());
        assert_eq!(
            events(&mut reader, "CONNECTED\nversion:1.2\n\n\0"),
            ["Other"]
        );
    }
}
