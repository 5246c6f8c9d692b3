//! Wire formats of ferrocast, free of I/O.
//!
//! - [`topic`]: topic names ([`Topic`]) and subscription filters with NATS-style
//!   wildcards ([`TopicFilter`]), validated against the grammar in `docs/protocol.md`.
//! - [`json`]: the native `ferrocast.v1.json` protocol: decoding client frames and
//!   encoding server frames.
//! - [`envelope`]: the protobuf envelope that carries a publication across the
//!   backplane.
//! - [`stomp`]: STOMP 1.0–1.2 frames, an incremental decoder, encoding, and the
//!   version and heart-beat negotiation of the handshake.

pub mod envelope;
pub mod json;
pub mod stomp;
pub mod topic;

pub use topic::{Topic, TopicError, TopicFilter, MAX_TOPIC_LEN};

/// WebSocket subprotocols a node may speak, in order of preference.
///
/// Only `ferrocast.v1.json` is served today; the others are reserved names that
/// later protocol codecs register under.
pub const SUBPROTOCOL_JSON: &str = "ferrocast.v1.json";
