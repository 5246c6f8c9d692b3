//! The client side of `ferrocast.v1.json` (docs/protocol.md): requests are
//! written into frames of several objects, server frames are split on `\n`
//! and each object decoded without copying more than a message's data.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use ferrocast_protocol::StreamPosition;

/// Requests written into one frame, at most this many bytes (a single larger
/// request goes alone), so that a batch stays well under a node's
/// `--max-message-size` (64 KiB by default).
const FRAME_BYTES: usize = 16 * 1024;

#[derive(Serialize)]
struct Request<'a> {
    op: &'static str,
    id: u64,
    topic: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    since: Option<&'a StreamPosition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
}

/// Requests waiting to be written, already grouped into text frames.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    frames: Vec<String>,
    current: String,
    /// Send a WebSocket ping with the next write.
    ping: bool,
}

impl Outbox {
    pub(crate) fn subscribe(&mut self, id: u64, filter: &str, since: Option<&StreamPosition>) {
        self.push(&Request {
            op: "subscribe",
            id,
            topic: filter,
            since,
            data: None,
        });
    }

    pub(crate) fn unsubscribe(&mut self, id: u64, filter: &str) {
        self.push(&Request {
            op: "unsubscribe",
            id,
            topic: filter,
            since: None,
            data: None,
        });
    }

    pub(crate) fn publish(&mut self, id: u64, topic: &str, data: &RawValue) {
        self.push(&Request {
            op: "publish",
            id,
            topic,
            since: None,
            data: Some(data),
        });
    }

    pub(crate) fn ping(&mut self) {
        self.ping = true;
    }

    /// Bytes waiting, to bound how much one wake-up batches.
    pub(crate) fn len(&self) -> usize {
        self.frames.iter().map(String::len).sum::<usize>() + self.current.len()
    }

    /// Whether a ping was asked for (and clears the request), and the text
    /// frames to send, in order.
    pub(crate) fn take(&mut self) -> (bool, Vec<String>) {
        if !self.current.is_empty() {
            self.frames.push(std::mem::take(&mut self.current));
        }
        (
            std::mem::take(&mut self.ping),
            std::mem::take(&mut self.frames),
        )
    }

    fn push(&mut self, request: &Request<'_>) {
        // A struct of strings, integers and JSON text always serializes.
        let object = serde_json::to_string(request).unwrap_or_default();
        if !self.current.is_empty() && self.current.len() + 1 + object.len() > FRAME_BYTES {
            self.frames.push(std::mem::take(&mut self.current));
        }
        if !self.current.is_empty() {
            self.current.push('\n');
        }
        self.current.push_str(&object);
    }
}

/// One object of a server frame; which fields are set depends on `op`.
#[derive(Debug, Deserialize)]
pub(crate) struct ServerObject<'a> {
    #[serde(borrow)]
    pub(crate) op: Cow<'a, str>,
    #[serde(default)]
    pub(crate) id: Option<u64>,
    #[serde(default, borrow)]
    pub(crate) topic: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "present")]
    pub(crate) data: Option<&'a RawValue>,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default)]
    epoch: Option<String>,
    #[serde(default)]
    pub(crate) recovered: Option<bool>,
    #[serde(default)]
    pub(crate) code: Option<String>,
    #[serde(default)]
    pub(crate) message: Option<String>,
    #[serde(default)]
    pub(crate) content_type: Option<String>,
    #[serde(default, borrow)]
    pub(crate) encoding: Option<Cow<'a, str>>,
}

/// Keeps `"data": null` as the JSON `null`, unlike a plain `Option`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

impl<'a> ServerObject<'a> {
    pub(crate) fn decode(line: &'a str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(line)
    }

    /// The position the object carries (a message of a topic with history,
    /// or a reply that names one).
    pub(crate) fn position(&mut self) -> Option<StreamPosition> {
        Some(StreamPosition {
            offset: self.offset?,
            epoch: self.epoch.take()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects(frame: &str) -> Vec<serde_json::Value> {
        frame
            .split('\n')
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn requests_are_batched_into_frames_of_newline_separated_objects() {
        let mut out = Outbox::default();
        let since = StreamPosition {
            epoch: "e1".into(),
            offset: 41,
        };
        out.subscribe(1, "chat.a", Some(&since));
        out.subscribe(2, "chat.*", None);
        let data = serde_json::value::to_raw_value(&serde_json::json!({"n": 1})).unwrap();
        out.publish(3, "chat.a", &data);
        out.unsubscribe(4, "chat.a");
        let (ping, frames) = out.take();
        assert!(!ping);
        assert_eq!(frames.len(), 1);
        assert_eq!(
            objects(&frames[0]),
            [
                serde_json::json!({"op":"subscribe","id":1,"topic":"chat.a","since":{"epoch":"e1","offset":41}}),
                serde_json::json!({"op":"subscribe","id":2,"topic":"chat.*"}),
                serde_json::json!({"op":"publish","id":3,"topic":"chat.a","data":{"n":1}}),
                serde_json::json!({"op":"unsubscribe","id":4,"topic":"chat.a"}),
            ]
        );
        assert_eq!(out.len(), 0);
        assert!(out.take().1.is_empty());
    }

    #[test]
    fn frames_stay_small_and_a_large_request_goes_alone() {
        let mut out = Outbox::default();
        for id in 0..1_000 {
            out.subscribe(id, "some.topic.with.a.long.name", None);
        }
        let big = serde_json::value::to_raw_value(&"x".repeat(40_000)).unwrap();
        out.publish(1_000, "a.b", &big);
        out.ping();
        let (ping, frames) = out.take();
        assert!(ping);
        assert!(frames.len() > 2);
        let (last, rest) = frames.split_last().unwrap();
        assert!(rest.iter().all(|f| f.len() <= FRAME_BYTES));
        assert!(last.len() > 40_000 && !last.contains('\n'));
        let count: usize = frames.iter().map(|f| f.split('\n').count()).sum();
        assert_eq!(count, 1_001);
    }

    #[test]
    fn decodes_messages_and_replies() {
        let mut m = ServerObject::decode(
            r#"{"op":"message","topic":"chat.a","data":{"t":"a\nb"},"offset":42,"epoch":"e1"}"#,
        )
        .unwrap();
        assert_eq!(
            (m.op.as_ref(), m.topic.as_deref()),
            ("message", Some("chat.a"))
        );
        assert_eq!(m.data.unwrap().get(), r#"{"t":"a\nb"}"#);
        assert_eq!(
            m.position(),
            Some(StreamPosition {
                epoch: "e1".into(),
                offset: 42
            })
        );

        let mut null = ServerObject::decode(r#"{"op":"message","topic":"a","data":null}"#).unwrap();
        assert_eq!(null.data.map(RawValue::get), Some("null"));
        assert_eq!(null.position(), None);

        let ok =
            ServerObject::decode(r#"{"op":"ok","id":7,"epoch":"","offset":0,"recovered":true}"#)
                .unwrap();
        assert_eq!((ok.id, ok.recovered), (Some(7), Some(true)));

        let error = ServerObject::decode(
            r#"{"op":"error","id":8,"code":"forbidden","message":"no","future":[1]}"#,
        )
        .unwrap();
        assert_eq!(
            (error.code.as_deref(), error.message.as_deref()),
            (Some("forbidden"), Some("no"))
        );

        let stomp = ServerObject::decode(
            r#"{"op":"message","topic":"f.x","data":"/wA=","encoding":"base64","content_type":"application/octet-stream"}"#,
        )
        .unwrap();
        assert_eq!(stomp.encoding.as_deref(), Some("base64"));
        assert_eq!(
            stomp.content_type.as_deref(),
            Some("application/octet-stream")
        );

        assert!(ServerObject::decode("{\"op\":").is_err());
    }
}
