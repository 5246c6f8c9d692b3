//! Requests batched into text frames of `ferrocast.v1.json`, encoded by
//! [`ferrocast_protocol::client`] (which also decodes what the node sends).

use serde_json::value::RawValue;

use ferrocast_protocol::client::Request;
use ferrocast_protocol::StreamPosition;

/// Requests written into one frame, at most this many bytes (a single larger
/// request goes alone), so that a batch stays well under a node's
/// `--max-message-size` (64 KiB by default).
const FRAME_BYTES: usize = 16 * 1024;

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
        self.push(Request::Subscribe {
            id: Some(id),
            topic: filter,
            since,
        });
    }

    pub(crate) fn unsubscribe(&mut self, id: u64, filter: &str) {
        self.push(Request::Unsubscribe {
            id: Some(id),
            topic: filter,
        });
    }

    pub(crate) fn publish(&mut self, id: u64, topic: &str, data: &RawValue) {
        self.push(Request::Publish {
            id: Some(id),
            topic,
            data: data.get(),
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

    fn push(&mut self, request: Request<'_>) {
        let object = request.encode();
        if !self.current.is_empty() && self.current.len() + 1 + object.len() > FRAME_BYTES {
            self.frames.push(std::mem::take(&mut self.current));
        }
        if !self.current.is_empty() {
            self.current.push('\n');
        }
        self.current.push_str(&object);
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
}
