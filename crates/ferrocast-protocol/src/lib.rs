//! Wire formats of ferrocast, free of I/O.
//!
//! - [`topic`]: topic names ([`Topic`]) and subscription filters with NATS-style
//!   wildcards ([`TopicFilter`]), validated against the grammar in `docs/protocol.md`.
//! - [`request`]: the native protocol's model, whatever its encoding: client
//!   requests, replies and error codes. [`position`]: positions in a topic's
//!   history. [`presence`]: presence entries and events. [`payload`]: how a
//!   payload declared JSON becomes a JSON publication's payload.
//! - [`json`]: the JSON codec of the native protocol (`ferrocast.v1.json`):
//!   decoding client frames and encoding server frames.
//! - [`client`]: the same JSON protocol as a client speaks it: encoding
//!   requests and decoding server frames, borrowing from the frame (what the
//!   Rust SDK and the load tool use).
//! - [`proto_frames`]: the native `ferrocast.v1.proto` protocol: the same
//!   requests and replies as protobuf messages (`proto/ferrocast/v1/client.proto`),
//!   with binary payloads.
//! - [`envelope`]: the protobuf envelope that carries a publication across the
//!   backplane.
//! - [`stomp`]: STOMP 1.0–1.2 frames, an incremental decoder, encoding, and the
//!   version and heart-beat negotiation of the handshake.

pub mod client;
pub mod envelope;
pub mod json;
pub mod payload;
pub mod position;
pub mod presence;
pub mod proto_frames;
pub mod request;
pub mod stomp;
pub mod topic;

pub use payload::{json_payload, publication_payload, PayloadError, MAX_CONTENT_TYPE_LEN};
pub use position::StreamPosition;
pub use presence::{PresenceEntry, PresenceEvent, PRESENCE_CONTENT_TYPE};
pub use request::{
    ClientRequest, ErrorCode, HistoryItem, OkReply, RequestError, MAX_HISTORY_LIMIT,
};
pub use topic::{Topic, TopicError, TopicFilter, MAX_TOPIC_LEN};

/// The WebSocket subprotocol of the native JSON protocol ([`json`]).
pub const SUBPROTOCOL_JSON: &str = "ferrocast.v1.json";

/// The WebSocket subprotocol of the native protobuf protocol ([`proto_frames`]).
pub const SUBPROTOCOL_PROTO: &str = "ferrocast.v1.proto";
