//! `ferrocast.v1.json`: JSON objects in text frames (docs/protocol.md).

use axum::extract::ws::Message;
use bytes::Bytes;

use ferrocast_core::history::HistoryRead;
use ferrocast_core::{Delivery, Outbound, Publication};
use ferrocast_protocol::json::{
    decode_requests, encode_error, encode_history, encode_ok, encode_pong, encode_presence,
    encode_unsubscribed,
};
use ferrocast_protocol::TopicFilter;
use ferrocast_protocol::{ErrorCode, OkReply, PresenceEntry, RequestError};

use super::native::{self, Completion, Replies};
use super::{text_or_binary, End, Link, Protocol, SharedFormat, Staged};

/// The JSON protocol of one connection: it keeps no state of its own (the
/// [`Link`] knows the subscriptions).
#[derive(Debug, Default)]
pub(crate) struct JsonProtocol;

impl Protocol for JsonProtocol {
    type Completion = Completion;
    const LABEL: &'static str = "json";

    fn on_message(&mut self, link: &mut Link<Completion>, message: Message) -> Option<End> {
        match message {
            Message::Text(text) => {
                let frame = Bytes::from(text);
                let max_topic_length = link.edge.settings().max_topic_length;
                native::serve_requests::<Self>(link, decode_requests(&frame, max_topic_length));
            }
            _ => native::reply_error::<Self>(
                link,
                RequestError::new(
                    None,
                    ErrorCode::BadRequest,
                    "binary frames are not part of ferrocast.v1.json; send JSON in text frames",
                ),
            ),
        }
        None
    }

    fn on_completion(&mut self, link: &mut Link<Completion>, done: Completion) {
        native::complete::<Self>(link, done);
    }

    fn on_server_unsubscribe(&mut self, link: &mut Link<Completion>, filter: &TopicFilter) {
        native::server_unsubscribe::<Self>(link, filter);
    }

    /// Joins the batch's objects with `\n` into one text frame; where the
    /// socket compresses shared frames, each delivery is a message of its own.
    fn encode(&mut self, batch: &[Outbound], out: &mut Staged) -> u64 {
        if out.shares_frames() {
            return native::stage_each(batch, out, SharedFormat::Json, text_or_binary);
        }
        let (frame, deliveries) = native::join_batch::<Self>(batch, b"\n");
        if let Some(frame) = frame {
            out.push_back(text_or_binary(frame));
        }
        deliveries
    }

    fn too_large(&mut self, max_message_size: usize) -> Option<Message> {
        Some(text_or_binary(native::too_large::<Self>(max_message_size)))
    }
}

impl Replies for JsonProtocol {
    const AUTH_FIRST: &'static str =
        "this node needs a token: send {\"op\":\"auth\",\"token\":\"…\"} first";

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
        delivery.json_frame()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::session::writer::Outgoing;
    use ferrocast_core::Publication;
    use ferrocast_protocol::{Topic, TopicFilter};

    fn delivery(payload: &'static str) -> Outbound {
        let topic = Topic::parse("a.b", 255).unwrap();
        Outbound::Delivery(
            Delivery::new(Publication::new(
                topic.clone(),
                Bytes::from_static(payload.as_bytes()),
                Arc::from("n1"),
            )),
            TopicFilter::from(topic),
        )
    }

    fn encode(batch: &[Outbound]) -> (Vec<Message>, u64) {
        let mut out = Staged::for_test(false);
        let n = JsonProtocol.encode(batch, &mut out);
        let messages = out.into_messages().into_iter();
        (messages.map(Outgoing::into_message).collect(), n)
    }

    #[test]
    fn a_socket_that_shares_compressed_frames_gets_each_delivery_apart() {
        let batch = [
            Outbound::Frame(Bytes::from_static(br#"{"op":"pong"}"#)),
            delivery("1"),
            delivery("[2]"),
        ];
        let mut out = Staged::for_test(true);
        assert_eq!(JsonProtocol.encode(&batch, &mut out), 2);
        let staged = out.into_messages();
        let [Outgoing::Message(Message::Text(pong)), Outgoing::Shared(one, SharedFormat::Json), Outgoing::Shared(two, SharedFormat::Json)] =
            &staged[..]
        else {
            panic!("{staged:?}")
        };
        assert_eq!(pong.as_str(), r#"{"op":"pong"}"#);
        assert_eq!(
            &one.json_frame()[..],
            br#"{"op":"message","topic":"a.b","data":1}"#
        );
        assert_eq!(
            &two.json_frame()[..],
            br#"{"op":"message","topic":"a.b","data":[2]}"#
        );
    }

    #[test]
    fn batches_join_objects_with_newlines() {
        let batch = [
            Outbound::Frame(Bytes::from_static(br#"{"op":"pong"}"#)),
            delivery("1"),
            delivery("[2]"),
        ];
        let (messages, delivered) = encode(&batch);
        assert_eq!(delivered, 2);
        let [Message::Text(text)] = &messages[..] else {
            panic!("{messages:?}")
        };
        assert_eq!(
            text.as_str(),
            "{\"op\":\"pong\"}\n{\"op\":\"message\",\"topic\":\"a.b\",\"data\":1}\n{\"op\":\"message\",\"topic\":\"a.b\",\"data\":[2]}"
        );
        let (messages, _) = encode(&[delivery("3")]);
        let [Message::Text(single)] = &messages[..] else {
            panic!()
        };
        assert_eq!(
            single.as_str(),
            r#"{"op":"message","topic":"a.b","data":3}"#
        );
    }

    #[test]
    fn a_delivery_is_encoded_once_for_all_subscribers() {
        let Outbound::Delivery(shared, _) = delivery("{}") else {
            panic!()
        };
        let a = shared.json_frame().clone();
        let b = shared.json_frame().clone();
        // Same allocation, not an equal copy.
        assert_eq!(a.as_ptr(), b.as_ptr());
    }
}
