//! What `--socketio-conformance` serves for the official test suites
//! (`test-suite/` in socketio/engine.io-protocol and
//! socketio/socket.io-protocol), so that they run unchanged against a node:
//! an Engine.IO echo at `/engine.io/` ([`EngineEcho`]), and at the
//! Socket.IO path the handlers of the suites' test server
//! ([`SuiteHandlers`]) instead of ferrocast's events. Conformance testing
//! only; never in production.

use std::collections::BTreeSet;

use axum::extract::ws::Message;
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{json, Value};

use ferrocast_core::{CloseReason, Outbound};
use ferrocast_protocol::TopicFilter;

use super::packet::{self, Kind, Packet};
use super::random_id;
use crate::session::{count_error, End, Link, Protocol, Staged};

/// Marks a queued frame as a binary message (a frame's first byte).
const BINARY: u8 = 1;
/// Marks a queued frame as a text message.
const TEXT: u8 = 0;

fn frame(kind: u8, payload: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(payload.len() + 1);
    frame.put_u8(kind);
    frame.put_slice(payload);
    frame.freeze()
}

/// Queued frames back to messages of their kind; pings kept.
fn encode_frames(batch: &[Outbound], out: &mut Staged) {
    for item in batch {
        match item {
            Outbound::Frame(frame) => match frame.split_first() {
                Some((&BINARY, payload)) => {
                    out.push_back(Message::Binary(frame.slice(1..1 + payload.len())));
                }
                Some((_, payload)) => out.push_back(Message::Text(
                    String::from_utf8_lossy(payload).into_owned().into(),
                )),
                None => {}
            },
            Outbound::Ping => out.push_back(Message::Ping(Bytes::new())),
            Outbound::Delivery(..) | Outbound::Unsubscribe(_) => {}
        }
    }
}

/// Every Engine.IO message comes back as it came, text as text, binary as
/// binary.
#[derive(Debug, Default)]
pub(crate) struct EngineEcho;

impl Protocol for EngineEcho {
    type Completion = ();
    const LABEL: &'static str = "socketio_echo";

    fn on_message(&mut self, link: &mut Link<()>, message: Message) -> Option<End> {
        match message {
            Message::Text(text) => link.send(frame(TEXT, text.as_bytes())),
            Message::Binary(bytes) => link.send(frame(BINARY, &bytes)),
            _ => {}
        }
        None
    }

    fn on_completion(&mut self, _: &mut Link<()>, (): ()) {}

    fn encode(&mut self, batch: &[Outbound], out: &mut Staged) -> u64 {
        encode_frames(batch, out);
        0
    }

    fn on_server_unsubscribe(&mut self, _: &mut Link<()>, _: &TopicFilter) {}
}

/// The Socket.IO suite's test server: namespaces `/` and `/custom`; on
/// connect, an `auth` event with the CONNECT payload; `message` answered
/// with `message-back` and the same arguments, `message-with-ack` with an
/// ack of them (attachments included).
#[derive(Debug, Default)]
pub(crate) struct SuiteHandlers {
    namespaces: BTreeSet<String>,
    /// A binary packet waiting for its attachments.
    partial: Option<(Packet, Vec<Bytes>)>,
}

impl Protocol for SuiteHandlers {
    type Completion = ();
    const LABEL: &'static str = "socketio_conformance";

    fn on_message(&mut self, link: &mut Link<()>, message: Message) -> Option<End> {
        let (packet, attachments) = match message {
            Message::Text(text) if self.partial.is_none() => match Packet::decode(text.as_str()) {
                Ok(packet) if packet.attachments > 0 => {
                    self.partial = Some((packet, Vec::new()));
                    return None;
                }
                Ok(packet) => (packet, Vec::new()),
                Err(_) => {
                    count_error("socketio_bad_packet");
                    return Some(End::ProtocolError);
                }
            },
            Message::Binary(bytes) => {
                let (packet, mut attachments) = self.partial.take()?;
                attachments.push(bytes);
                if attachments.len() < packet.attachments {
                    self.partial = Some((packet, attachments));
                    return None;
                }
                (packet, attachments)
            }
            Message::Text(_) => return Some(End::ProtocolError),
            _ => return None,
        };
        self.on_packet(link, packet, attachments)
    }

    fn on_completion(&mut self, _: &mut Link<()>, (): ()) {}

    fn encode(&mut self, batch: &[Outbound], out: &mut Staged) -> u64 {
        encode_frames(batch, out);
        0
    }

    fn on_server_unsubscribe(&mut self, _: &mut Link<()>, _: &TopicFilter) {}
}

impl SuiteHandlers {
    fn on_packet(
        &mut self,
        link: &mut Link<()>,
        packet: Packet,
        attachments: Vec<Bytes>,
    ) -> Option<End> {
        let namespace = packet.namespace.clone();
        let prefix = if namespace == "/" {
            String::new()
        } else {
            format!("{namespace},")
        };
        match packet.kind {
            Kind::Connect if ["/", "/custom"].contains(&namespace.as_str()) => {
                self.namespaces.insert(namespace);
                let sid = json!({ "sid": random_id() });
                send_text(link, format!("0{prefix}{sid}"));
                let auth = packet.data.unwrap_or_else(|| json!({}));
                send_text(link, format!("2{prefix}{}", json!(["auth", auth])));
            }
            Kind::Connect => {
                send_text(link, packet::connect_error(&namespace, "Invalid namespace"))
            }
            Kind::Disconnect => {
                self.namespaces.remove(&namespace);
                if self.namespaces.is_empty() {
                    link.close(CloseReason::ClientRequest);
                }
            }
            Kind::Event | Kind::BinaryEvent if self.namespaces.contains(&namespace) => {
                let Some(Value::Array(mut args)) = packet.data else {
                    return None;
                };
                let name = args.first().and_then(Value::as_str).unwrap_or_default();
                let (kind, id) = match (name, packet.id) {
                    ("message", _) => {
                        args[0] = json!("message-back");
                        (Kind::Event, None)
                    }
                    ("message-with-ack", Some(id)) => {
                        args.remove(0);
                        (Kind::Ack, Some(id))
                    }
                    _ => return None,
                };
                let data = Value::Array(args).to_string();
                let id = id.map(|id| id.to_string()).unwrap_or_default();
                let text = if attachments.is_empty() {
                    format!("{}{prefix}{id}{data}", digit(kind, false))
                } else {
                    let digit = digit(kind, true);
                    format!("{digit}{}-{prefix}{id}{data}", attachments.len())
                };
                send_text(link, text);
                for attachment in attachments {
                    link.send(frame(BINARY, &attachment));
                }
            }
            _ => {}
        }
        None
    }
}

/// The type digit of an event or ack, binary or not.
fn digit(kind: Kind, binary: bool) -> char {
    match (kind, binary) {
        (Kind::Ack, false) => '3',
        (Kind::Ack, true) => '6',
        (_, false) => '2',
        (_, true) => '5',
    }
}

fn send_text(link: &Link<()>, text: String) {
    link.send(frame(TEXT, text.as_bytes()));
}
