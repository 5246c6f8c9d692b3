//! Engine.IO protocol v4 packets: their encoding on a WebSocket (one packet
//! per message) and in an HTTP long-polling payload (packets joined by the
//! record separator `\x1e`, binary ones as `b<base64>`). No I/O.

use axum::extract::ws::CloseFrame;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;

use super::packet;
use crate::session::code;

/// What separates the packets of a long-polling payload.
pub(super) const SEPARATOR: char = '\x1e';

/// One Engine.IO packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Packet {
    /// `0`: the handshake, the node's first packet.
    Open(String),
    /// `1`: the session ends.
    Close,
    /// `2`: a ping (the node's, or a client's upgrade probe `2probe`).
    Ping(String),
    /// `3`: the answer to a ping (`3probe` to a probe).
    Pong(String),
    /// `4`: a text message (a Socket.IO packet).
    Message(String),
    /// A binary message (a Socket.IO packet's attachment).
    Binary(Bytes),
    /// `5`: the client switches to the transport it probed.
    Upgrade,
    /// `6`: nothing; ends a pending poll during an upgrade.
    Noop,
}

/// Why a packet could not be decoded: the session closes (what the
/// reference implementation does with a broken payload).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum DecodeError {
    #[error("an empty Engine.IO packet")]
    Empty,
    #[error("unknown Engine.IO packet type {0:?}")]
    UnknownType(char),
    #[error("a binary packet's base64 is broken")]
    Base64,
    #[error("an Engine.IO packet a client does not send on this transport")]
    Unexpected,
}

impl DecodeError {
    /// The `code` label of `ferrocast_client_errors_total`.
    pub(super) fn label(&self) -> &'static str {
        "socketio_bad_packet"
    }
}

impl Packet {
    /// A text packet (a WebSocket text message, or one packet of a
    /// long-polling payload, where `b` marks base64 binary).
    pub(super) fn decode_text(text: &str) -> Result<Self, DecodeError> {
        let mut chars = text.chars();
        let kind = chars.next().ok_or(DecodeError::Empty)?;
        let rest = chars.as_str();
        Ok(match kind {
            '0' => Self::Open(rest.into()),
            '1' => Self::Close,
            '2' => Self::Ping(rest.into()),
            '3' => Self::Pong(rest.into()),
            '4' => Self::Message(rest.into()),
            '5' => Self::Upgrade,
            '6' => Self::Noop,
            'b' => Self::Binary(
                STANDARD
                    .decode(rest)
                    .map_err(|_| DecodeError::Base64)?
                    .into(),
            ),
            other => return Err(DecodeError::UnknownType(other)),
        })
    }

    /// The packets of a long-polling payload, in order.
    pub(super) fn decode_payload(payload: &str) -> Result<Vec<Self>, DecodeError> {
        payload.split(SEPARATOR).map(Self::decode_text).collect()
    }

    /// The packet as a WebSocket message carries it: text, or binary for
    /// [`Packet::Binary`].
    pub(super) fn encode_websocket(&self) -> Result<String, Bytes> {
        match self {
            Self::Binary(bytes) => Err(bytes.clone()),
            text => Ok(text.encode_text()),
        }
    }

    /// The packet's text, binary as `b<base64>` (long-polling's form).
    pub(super) fn encode_text(&self) -> String {
        match self {
            Self::Open(data) => format!("0{data}"),
            Self::Close => "1".into(),
            Self::Ping(data) => format!("2{data}"),
            Self::Pong(data) => format!("3{data}"),
            Self::Message(data) => format!("4{data}"),
            Self::Upgrade => "5".into(),
            Self::Noop => "6".into(),
            Self::Binary(bytes) => format!("b{}", STANDARD.encode(bytes)),
        }
    }

    /// What the packet counts against a session's outbox, in bytes.
    pub(super) fn size(&self) -> usize {
        match self {
            Self::Open(data) | Self::Ping(data) | Self::Pong(data) | Self::Message(data) => {
                data.len() + 1
            }
            Self::Binary(bytes) => bytes.len() * 4 / 3 + 4,
            Self::Close | Self::Upgrade | Self::Noop => 1,
        }
    }
}

/// What goes before a close with `frame`: a Socket.IO `DISCONNECT` when the
/// client must not retry (a refused or expired token, a backend's
/// disconnect), so that socket.io-client stays disconnected. Any other close
/// (drain, slow consumer, ping timeout) ends the transport only, and the
/// client reconnects, possibly to another node, and recovers.
pub(super) fn farewell(frame: &CloseFrame) -> Option<Packet> {
    matches!(frame.code, code::POLICY | code::DISCONNECTED)
        .then(|| Packet::Message(packet::encode(packet::Kind::Disconnect, None, "")))
}

/// The long-polling payload of `packets`.
pub(super) fn encode_payload<'a>(packets: impl IntoIterator<Item = &'a Packet>) -> String {
    let mut payload = String::new();
    for (i, packet) in packets.into_iter().enumerate() {
        if i > 0 {
            payload.push(SEPARATOR);
        }
        payload.push_str(&packet.encode_text());
    }
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_join_packets_and_carry_binary_as_base64() {
        let packets = vec![
            Packet::Message("hello".into()),
            Packet::Binary(Bytes::from_static(&[1, 2, 3, 4])),
            Packet::Ping(String::new()),
        ];
        let payload = encode_payload(&packets);
        assert_eq!(payload, "4hello\x1ebAQIDBA==\x1e2");
        assert_eq!(Packet::decode_payload(&payload).unwrap(), packets);
    }

    #[test]
    fn every_packet_type_round_trips() {
        for packet in [
            Packet::Open(r#"{"sid":"x"}"#.into()),
            Packet::Close,
            Packet::Ping("probe".into()),
            Packet::Pong("probe".into()),
            Packet::Message("2[\"a\"]".into()),
            Packet::Upgrade,
            Packet::Noop,
        ] {
            let text = packet.encode_websocket().unwrap();
            assert_eq!(Packet::decode_text(&text).unwrap(), packet);
        }
    }

    #[test]
    fn broken_packets_are_refused() {
        assert_eq!(Packet::decode_text(""), Err(DecodeError::Empty));
        assert_eq!(
            Packet::decode_text("abc"),
            Err(DecodeError::UnknownType('a'))
        );
        assert_eq!(Packet::decode_text("b!!"), Err(DecodeError::Base64));
        assert!(Packet::decode_payload("4a\x1e").is_err());
    }
}
