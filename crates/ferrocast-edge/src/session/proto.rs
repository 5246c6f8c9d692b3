//! `ferrocast.v1.proto`: length-delimited protobuf messages in binary frames
//! (`proto/ferrocast/v1/client.proto`, docs/protocol.md). The requests and
//! their handling are the JSON protocol's ([`native`]).

use axum::extract::ws::Message;
use bytes::Bytes;

use ferrocast_core::history::HistoryRead;
use ferrocast_core::{Delivery, Outbound, Publication};
use ferrocast_protocol::proto_frames::{
    decode_requests, encode_error, encode_history, encode_ok, encode_pong, encode_presence,
    encode_unsubscribed,
};
use ferrocast_protocol::TopicFilter;
use ferrocast_protocol::{ErrorCode, OkReply, PresenceEntry, RequestError};

use super::native::{self, Completion, Replies};
use super::{count_error, End, Link, Protocol, SharedFormat, Staged};

/// The protobuf protocol of one connection: like the JSON protocol, it keeps
/// no state of its own (the [`Link`] knows the subscriptions).
#[derive(Debug, Default)]
pub(crate) struct ProtoProtocol;

impl Protocol for ProtoProtocol {
    type Completion = Completion;
    const LABEL: &'static str = "proto";

    fn on_message(&mut self, link: &mut Link<Completion>, message: Message) -> Option<End> {
        match message {
            Message::Binary(frame) => {
                let max_topic_length = link.edge.settings().max_topic_length;
                native::serve_requests::<Self>(link, decode_requests(&frame, max_topic_length));
                None
            }
            // Text would have to be decoded some other way: there is no
            // reliable answer but closing (1003, unsupported data).
            _ => {
                count_error(ErrorCode::BadRequest.as_str());
                Some(End::TextFrame)
            }
        }
    }

    fn on_completion(&mut self, link: &mut Link<Completion>, done: Completion) {
        native::complete::<Self>(link, done);
    }

    fn on_server_unsubscribe(&mut self, link: &mut Link<Completion>, filter: &TopicFilter) {
        native::server_unsubscribe::<Self>(link, filter);
    }

    /// Puts the batch's length-delimited messages one after the other into
    /// one binary frame.
    /// (Where the socket compresses shared frames, each delivery is a
    /// message of its own.)
    fn encode(&mut self, batch: &[Outbound], out: &mut Staged) -> u64 {
        if out.shares_frames() {
            return native::stage_each(batch, out, SharedFormat::Proto, Message::Binary);
        }
        let (frame, deliveries) = native::join_batch::<Self>(batch, b"");
        if let Some(frame) = frame {
            out.push_back(Message::Binary(frame));
        }
        deliveries
    }

    fn too_large(&mut self, max_message_size: usize) -> Option<Message> {
        Some(Message::Binary(native::too_large::<Self>(max_message_size)))
    }
}

impl Replies for ProtoProtocol {
    const AUTH_FIRST: &'static str = "this node needs a token: send an Auth request first";

    fn ok(reply: &OkReply) -> Bytes {
        encode_ok(reply)
    }

    fn error(error: &RequestError) -> Bytes {
        encode_error(error)
    }

    fn pong(id: Option<u64>) -> Bytes {
        encode_pong(id)
    }

    fn unsubscribed(filter: &TopicFilter) -> Bytes {
        encode_unsubscribed(filter)
    }

    fn presence(id: Option<u64>, entries: &[PresenceEntry]) -> Bytes {
        encode_presence(id, entries)
    }

    fn history(id: Option<u64>, read: &HistoryRead) -> Bytes {
        let items = read.publications.iter().map(Publication::history_item);
        encode_history(id, &read.top, read.recovered, items)
    }

    fn delivery(delivery: &Delivery) -> &Bytes {
        delivery.proto_frame()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::session::writer::Outgoing;
    use ferrocast_core::Publication;
    use ferrocast_protocol::proto_frames::decode_messages;
    use ferrocast_protocol::proto_frames::pb::server_message::Kind;
    use ferrocast_protocol::proto_frames::pb::ServerMessage;
    use ferrocast_protocol::{Topic, TopicFilter};

    fn delivery(payload: &'static [u8], content_type: Option<&str>) -> Outbound {
        let topic = Topic::parse("a.b", 255).unwrap();
        let mut publication =
            Publication::new(topic.clone(), Bytes::from_static(payload), Arc::from("n1"));
        publication.content_type = content_type.map(Arc::from);
        Outbound::Delivery(Delivery::new(publication), TopicFilter::from(topic))
    }

    fn encode(batch: &[Outbound]) -> (Vec<Message>, u64) {
        let mut out = Staged::for_test(false);
        let n = ProtoProtocol.encode(batch, &mut out);
        let messages = out.into_messages().into_iter();
        (messages.map(Outgoing::into_message).collect(), n)
    }

    #[test]
    fn a_batch_is_one_binary_frame_of_several_messages() {
        let batch = [
            Outbound::Frame(encode_pong(Some(7))),
            delivery(b"1", None),
            Outbound::Ping,
            delivery(&[0xff, 0], Some("application/octet-stream")),
        ];
        let (messages, delivered) = encode(&batch);
        assert_eq!(delivered, 2);
        let [Message::Binary(frame)] = &messages[..] else {
            panic!("{messages:?}")
        };
        let decoded: Vec<ServerMessage> = decode_messages(frame).collect::<Result<_, _>>().unwrap();
        assert_eq!(decoded.len(), 3, "{decoded:?}");
        assert!(matches!(decoded[0].kind, Some(Kind::Pong(_))) && decoded[0].id == Some(7));
        let data: Vec<(&[u8], &str)> = decoded[1..]
            .iter()
            .map(|m| match &m.kind {
                Some(Kind::Message(m)) => (&m.data[..], m.content_type.as_str()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            data,
            [
                (&b"1"[..], ""),
                (&[0xff, 0][..], "application/octet-stream")
            ]
        );

        // Nothing but a ping: no frame.
        assert!(encode(&[Outbound::Ping]).0.is_empty());
    }

    #[test]
    fn a_delivery_is_encoded_once_for_all_subscribers() {
        let Outbound::Delivery(shared, _) = delivery(b"{}", None) else {
            panic!()
        };
        let (a, b) = (shared.proto_frame().clone(), shared.proto_frame().clone());
        assert_eq!(a.as_ptr(), b.as_ptr());
        // A single delivery is written as encoded, not copied.
        let (messages, _) = encode(&[Outbound::Delivery(
            shared.clone(),
            TopicFilter::parse("a.b", 255).unwrap(),
        )]);
        let [Message::Binary(frame)] = &messages[..] else {
            panic!()
        };
        assert_eq!(frame.as_ptr(), a.as_ptr());
    }
}
