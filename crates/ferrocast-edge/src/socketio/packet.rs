//! Socket.IO protocol v5 packets, as the text of an Engine.IO message:
//! `<type>[<attachments>-][<namespace>,][<ack id>][<JSON>]`, binary
//! attachments following as binary messages. No I/O.

use std::fmt::Write as _;

use serde_json::Value;

/// The packet types of Socket.IO v5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Connect,
    Disconnect,
    Event,
    Ack,
    ConnectError,
    BinaryEvent,
    BinaryAck,
}

impl Kind {
    fn of(digit: u8) -> Option<Self> {
        Some(match digit {
            b'0' => Self::Connect,
            b'1' => Self::Disconnect,
            b'2' => Self::Event,
            b'3' => Self::Ack,
            b'4' => Self::ConnectError,
            b'5' => Self::BinaryEvent,
            b'6' => Self::BinaryAck,
            _ => return None,
        })
    }

    fn digit(self) -> char {
        match self {
            Self::Connect => '0',
            Self::Disconnect => '1',
            Self::Event => '2',
            Self::Ack => '3',
            Self::ConnectError => '4',
            Self::BinaryEvent => '5',
            Self::BinaryAck => '6',
        }
    }

    fn binary(self) -> bool {
        matches!(self, Self::BinaryEvent | Self::BinaryAck)
    }
}

/// A decoded packet; binary ones still wait for their attachments.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Packet {
    pub(super) kind: Kind,
    /// Binary messages that follow (binary packets only).
    pub(super) attachments: usize,
    pub(super) namespace: String,
    /// The acknowledgement id, for an event that asks for one or an ack.
    pub(super) id: Option<u64>,
    pub(super) data: Option<Value>,
}

/// Why a packet was refused: the session ends (a client that sends them is
/// broken, or not a Socket.IO client).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum PacketError {
    #[error("unknown Socket.IO packet type")]
    UnknownType,
    #[error("a binary packet without its attachment count")]
    Attachments,
    #[error("an ack id that is not a number")]
    AckId,
    #[error("a packet whose data is not JSON")]
    Json,
    #[error("a packet whose data does not fit its type")]
    Shape,
}

/// Most attachments one packet may announce: each is a message the session
/// holds until the packet is whole.
pub(super) const MAX_ATTACHMENTS: usize = 10;

impl Packet {
    pub(super) fn decode(text: &str) -> Result<Self, PacketError> {
        let bytes = text.as_bytes();
        let kind = bytes
            .first()
            .and_then(|b| Kind::of(*b))
            .ok_or(PacketError::UnknownType)?;
        let mut rest = &text[1..];
        let mut attachments = 0;
        if kind.binary() {
            let (count, after) = rest.split_once('-').ok_or(PacketError::Attachments)?;
            attachments = count.parse().map_err(|_| PacketError::Attachments)?;
            if attachments > MAX_ATTACHMENTS {
                return Err(PacketError::Attachments);
            }
            rest = after;
        }
        let mut namespace = String::from("/");
        if rest.starts_with('/') {
            let end = rest.find(',').unwrap_or(rest.len());
            namespace = rest[..end].to_owned();
            rest = rest.get(end + 1..).unwrap_or_default();
        }
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let id = if digits > 0 {
            Some(rest[..digits].parse().map_err(|_| PacketError::AckId)?)
        } else {
            None
        };
        rest = &rest[digits..];
        let data = if rest.is_empty() {
            None
        } else {
            Some(serde_json::from_str(rest).map_err(|_| PacketError::Json)?)
        };
        let packet = Self {
            kind,
            attachments,
            namespace,
            id,
            data,
        };
        packet.check()?;
        Ok(packet)
    }

    /// What v5 asks of each type's data.
    fn check(&self) -> Result<(), PacketError> {
        let fits = match (self.kind, &self.data) {
            (Kind::Connect, None | Some(Value::Object(_))) => true,
            (Kind::Disconnect, None) => true,
            (Kind::Event | Kind::BinaryEvent, Some(Value::Array(args))) => {
                matches!(args.first(), Some(Value::String(_)))
            }
            (Kind::Ack | Kind::BinaryAck, Some(Value::Array(_))) => self.id.is_some(),
            (Kind::ConnectError, Some(_)) => true,
            _ => false,
        };
        if fits {
            Ok(())
        } else {
            Err(PacketError::Shape)
        }
    }
}

/// The text of a packet of `kind` to namespace `/` with `data` (raw JSON).
pub(super) fn encode(kind: Kind, id: Option<u64>, data: &str) -> String {
    let mut text = String::with_capacity(data.len() + 8);
    text.push(kind.digit());
    if let Some(id) = id {
        let _ = write!(text, "{id}");
    }
    text.push_str(data);
    text
}

/// The text of a binary packet with `attachments` and `data` (raw JSON
/// with placeholders).
pub(super) fn encode_binary(kind: Kind, attachments: usize, data: &str) -> String {
    format!("{}{attachments}-{data}", kind.digit())
}

/// The text of a `CONNECT_ERROR` to `namespace` saying `message`.
pub(super) fn connect_error(namespace: &str, message: &str) -> String {
    let data = serde_json::json!({ "message": message }).to_string();
    if namespace == "/" {
        format!("4{data}")
    } else {
        format!("4{namespace},{data}")
    }
}

/// The placeholder of attachment `num` in a binary packet's data.
pub(super) fn placeholder(num: usize) -> String {
    format!(r#"{{"_placeholder":true,"num":{num}}}"#)
}

/// The attachment number `value` stands for, if it is a placeholder.
pub(super) fn placeholder_num(value: &Value) -> Option<usize> {
    let object = value.as_object()?;
    if object.get("_placeholder") != Some(&Value::Bool(true)) {
        return None;
    }
    object
        .get("num")
        .and_then(Value::as_u64)
        .and_then(|n| usize::try_from(n).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_part_of_a_packet() {
        let event = Packet::decode(r#"2/admin,12["subscribe","chat.room"]"#).unwrap();
        assert_eq!(event.kind, Kind::Event);
        assert_eq!(event.namespace, "/admin");
        assert_eq!(event.id, Some(12));
        assert_eq!(
            event.data,
            Some(serde_json::json!(["subscribe", "chat.room"]))
        );

        let binary =
            Packet::decode(r#"51-["publish","a.b",{"_placeholder":true,"num":0}]"#).unwrap();
        assert_eq!(binary.kind, Kind::BinaryEvent);
        assert_eq!(binary.attachments, 1);
        assert_eq!(binary.namespace, "/");
        let args = binary.data.unwrap();
        assert_eq!(placeholder_num(&args[2]), Some(0));

        let connect = Packet::decode(r#"0{"token":"x"}"#).unwrap();
        assert_eq!(connect.kind, Kind::Connect);
        assert_eq!(Packet::decode("0").unwrap().data, None);
        assert_eq!(Packet::decode("1").unwrap().kind, Kind::Disconnect);
        assert_eq!(Packet::decode("3[1]"), Err(PacketError::Shape));
        assert_eq!(Packet::decode("37[1]").unwrap().id, Some(7));
    }

    #[test]
    fn refuses_what_v5_does_not_allow() {
        for (text, error) in [
            ("", PacketError::UnknownType),
            ("9", PacketError::UnknownType),
            ("5[\"a\"]", PacketError::Attachments),
            ("511-[\"a\"]", PacketError::Attachments),
            ("2[\"a\"", PacketError::Json),
            ("2{}", PacketError::Shape),
            ("2[1]", PacketError::Shape),
            ("0[]", PacketError::Shape),
            ("1{}", PacketError::Shape),
            ("299999999999999999999[\"a\"]", PacketError::AckId),
        ] {
            assert_eq!(Packet::decode(text), Err(error), "{text:?}");
        }
    }

    #[test]
    fn encodes_as_clients_decode() {
        assert_eq!(encode(Kind::Ack, Some(3), "[1]"), "33[1]");
        assert_eq!(encode(Kind::Event, None, r#"["a"]"#), r#"2["a"]"#);
        assert_eq!(
            encode_binary(Kind::BinaryEvent, 1, &format!("[\"a\",{}]", placeholder(0))),
            r#"51-["a",{"_placeholder":true,"num":0}]"#
        );
        assert_eq!(connect_error("/x", "no"), r#"4/x,{"message":"no"}"#);
        assert_eq!(connect_error("/", "no"), r#"4{"message":"no"}"#);
    }
}
