use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ferrocast_protocol::json::encode_message;
use ferrocast_protocol::{proto_frames, Topic};
use ferrocast_protocol::{HistoryItem, StreamPosition, PRESENCE_CONTENT_TYPE};

/// The name of a node in a cluster (unique per running process).
pub type NodeId = Arc<str>;

/// A message published on a topic: what crosses the backplane.
#[derive(Debug, Clone, PartialEq)]
pub struct Publication {
    pub topic: Topic,
    /// The message body: JSON text without raw newlines unless `content_type`
    /// says otherwise.
    pub payload: Bytes,
    /// Media type of `payload`; `None` means JSON text.
    pub content_type: Option<Arc<str>>,
    /// Application headers (e.g. from STOMP SEND), in order.
    pub headers: Vec<(String, String)>,
    /// The node that accepted the publication from a client or the server API.
    pub origin: NodeId,
    /// When the origin node accepted it, in microseconds since the Unix epoch;
    /// used for `ferrocast_delivery_lag_seconds`.
    pub published_at_micros: u64,
    /// The publication's place in the topic's history, for namespaces that keep one.
    pub position: Option<StreamPosition>,
}

impl Publication {
    /// The publication as a history reply carries it (the client protocols'
    /// encoders take it).
    pub fn history_item(&self) -> HistoryItem<'_> {
        HistoryItem {
            topic: &self.topic,
            payload: &self.payload,
            content_type: self.content_type.as_deref(),
            position: self.position.as_ref(),
        }
    }

    pub fn new(topic: Topic, payload: Bytes, origin: NodeId) -> Self {
        Self {
            topic,
            payload,
            content_type: None,
            headers: Vec::new(),
            origin,
            published_at_micros: unix_micros(),
            position: None,
        }
    }
}

/// Microseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The wire formats a delivery can be encoded in; each is encoded at most
/// once per delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFormat {
    /// The whole `ferrocast.v1.json` message frame.
    Json,
    /// The length-delimited `ferrocast.v1.proto` server message.
    Proto,
    /// What STOMP 1.0 MESSAGE frames share after their per-subscriber headers.
    StompTail10,
    /// The same for STOMP 1.1 (header values escaped, no `\r` escape).
    StompTail11,
    /// The same for STOMP 1.2.
    StompTail12,
    /// A Socket.IO event packet up to its last argument, the recovery
    /// offset, which is each subscriber's own.
    SocketIoHead,
}

const FORMATS: usize = 6;

/// A publication on its way to local subscribers, shared by all of them.
///
/// Each wire format is encoded at most once per node, by the first writer that
/// needs it; every other subscriber reuses the same bytes. So is its
/// compressed form (permessage-deflate without context takeover), for the
/// formats whose whole frame subscribers share.
#[derive(Debug)]
pub struct Delivery {
    pub publication: Publication,
    frames: [OnceLock<Bytes>; FORMATS],
    compressed: [OnceLock<Bytes>; FORMATS],
}

impl Delivery {
    pub fn new(publication: Publication) -> Arc<Self> {
        Arc::new(Self {
            publication,
            frames: Default::default(),
            compressed: Default::default(),
        })
    }

    /// The encoding of this delivery in `format`, made by `encode` the first
    /// time it is asked for.
    pub fn frame(&self, format: WireFormat, encode: impl FnOnce(&Publication) -> Bytes) -> &Bytes {
        self.frames[format as usize].get_or_init(|| encode(&self.publication))
    }

    /// `frame` (this delivery's encoding in `format`) compressed by
    /// `compress` the first time it is asked for.
    pub fn compressed(
        &self,
        format: WireFormat,
        frame: &Bytes,
        compress: impl FnOnce(&[u8]) -> Bytes,
    ) -> &Bytes {
        self.compressed[format as usize].get_or_init(|| compress(frame))
    }

    /// The `ferrocast.v1.json` message frame; a presence event is its own
    /// frame (`{"op":"join"|"leave",…}`).
    pub fn json_frame(&self) -> &Bytes {
        self.frame(WireFormat::Json, |p| {
            if p.content_type.as_deref() == Some(PRESENCE_CONTENT_TYPE) {
                return p.payload.clone();
            }
            encode_message(
                &p.topic,
                &p.payload,
                p.content_type.as_deref(),
                p.position.as_ref(),
            )
        })
    }

    /// The length-delimited `ferrocast.v1.proto` server message: a
    /// `message` with the payload as published, or a `join`/`leave` for a
    /// presence event.
    pub fn proto_frame(&self) -> &Bytes {
        self.frame(WireFormat::Proto, |p| {
            let content_type = p.content_type.as_deref();
            if content_type == Some(PRESENCE_CONTENT_TYPE) {
                if let Some(event) = proto_frames::encode_presence_payload(&p.payload) {
                    return event;
                }
            }
            proto_frames::encode_message(&p.topic, &p.payload, content_type, p.position.as_ref())
        })
    }

    /// What this delivery counts against a connection's outbound budget: an
    /// estimate of its encoded size that does not require encoding it.
    pub fn queued_size(&self) -> usize {
        let p = &self.publication;
        p.payload.len() + p.topic.as_str().len() + 64
    }
}
