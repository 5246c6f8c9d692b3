//! `ferrocast.v1.json`: JSON objects in text frames (docs/protocol.md).

use std::collections::VecDeque;

use axum::extract::ws::Message;
use bytes::{Bytes, BytesMut};

use ferrocast_core::metrics as names;
use ferrocast_core::{CloseReason, Outbound};
use ferrocast_protocol::json::{
    decode_requests, encode_error, encode_ok, encode_pong, encode_presence, ClientRequest,
    ErrorCode, OkReply, RequestError,
};
use ferrocast_protocol::{Topic, TopicFilter};

use super::{count_error, text_or_binary, End, Link, Opening, Protocol};
use crate::rate::RateLimited;

/// What a request that waited on the backplane produced.
pub(crate) enum Completion {
    /// A reply to send, or nothing (a request without id that succeeded).
    Reply(Option<Bytes>),
    /// A subscription in a namespace with history is ready to start.
    Opened {
        id: Option<u64>,
        filter: TopicFilter,
        opening: Opening,
    },
    Error(RequestError),
    /// The backplane refused the subscription: undo it locally.
    SubscribeFailed {
        filter: TopicFilter,
        error: RequestError,
    },
}

/// The JSON protocol of one connection: it keeps no state of its own (the
/// [`Link`] knows the subscriptions).
#[derive(Debug, Default)]
pub(crate) struct JsonProtocol;

impl Protocol for JsonProtocol {
    type Completion = Completion;
    const LABEL: &'static str = "json";

    fn on_message(&mut self, link: &mut Link<Completion>, message: Message) -> Option<End> {
        match message {
            Message::Text(text) => self.handle_text(link, text.into()),
            _ => reply_error(
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
        match done {
            Completion::Reply(Some(frame)) => link.send(frame),
            Completion::Reply(None) => {}
            Completion::Opened {
                id,
                filter,
                opening,
            } => link.open(&filter, opening, |opened| {
                id.map(|id| {
                    encode_ok(&OkReply {
                        id: Some(id),
                        epoch: Some(opened.top.epoch.clone()),
                        offset: Some(opened.top.offset),
                        recovered: opened.recovered,
                    })
                })
            }),
            Completion::Error(error) => reply_error(link, error),
            Completion::SubscribeFailed { filter, error } => {
                if link.holds(&filter) {
                    link.unsubscribe(&filter);
                }
                reply_error(link, error);
            }
        }
    }

    /// Tells the client with `{"op":"unsubscribed","topic":…}`.
    fn on_server_unsubscribe(&mut self, link: &mut Link<Completion>, filter: &TopicFilter) {
        link.unsubscribe(filter);
        // The topic grammar has no character that JSON needs to escape.
        link.send(Bytes::from(format!(
            r#"{{"op":"unsubscribed","topic":"{}"}}"#,
            filter.as_str()
        )));
    }

    /// Joins the batch's objects with `\n` into one text frame.
    fn encode(&mut self, batch: &[Outbound], out: &mut VecDeque<Message>) -> u64 {
        let mut deliveries = 0;
        let frames: Vec<&Bytes> = batch
            .iter()
            .filter_map(|item| match item {
                Outbound::Frame(frame) => Some(frame),
                Outbound::Delivery(delivery, _) => {
                    deliveries += 1;
                    Some(delivery.json_frame())
                }
                Outbound::Ping | Outbound::Unsubscribe(_) => None,
            })
            .collect();
        let text = match &frames[..] {
            [] => return deliveries,
            [one] => (*one).clone(),
            many => {
                let total: usize = many.iter().map(|f| f.len() + 1).sum();
                let mut joined = BytesMut::with_capacity(total);
                for (i, frame) in many.iter().enumerate() {
                    if i > 0 {
                        joined.extend_from_slice(b"\n");
                    }
                    joined.extend_from_slice(frame);
                }
                joined.freeze()
            }
        };
        out.push_back(text_or_binary(text));
        deliveries
    }

    fn too_large(&mut self, max_message_size: usize) -> Option<Message> {
        let error = RequestError::new(
            None,
            ErrorCode::TooLarge,
            format!("message over {max_message_size} bytes"),
        );
        count_error(error.code.as_str());
        Some(text_or_binary(encode_error(&error)))
    }
}

fn reply_error(link: &Link<Completion>, error: RequestError) {
    count_error(error.code.as_str());
    link.send(encode_error(&error));
}

/// Refuses one request over a rate limit; the connection goes on.
fn rate_limited(link: &Link<Completion>, id: Option<u64>, limited: &RateLimited) {
    reply_error(
        link,
        RequestError::new(id, ErrorCode::RateLimited, limited.to_string()),
    );
}

fn reply_ok(link: &Link<Completion>, reply: OkReply) {
    if reply.id.is_some() {
        link.send(encode_ok(&reply));
    }
}

impl JsonProtocol {
    fn handle_text(&mut self, link: &mut Link<Completion>, frame: Bytes) {
        let max_topic_length = link.edge.settings().max_topic_length;
        for request in decode_requests(&frame, max_topic_length) {
            match request {
                Ok(request) => self.handle(link, request),
                Err(error) => {
                    if error.code == ErrorCode::TooLarge {
                        metrics::counter!(names::LIMIT_HITS, "limit" => "topic_length")
                            .increment(1);
                    }
                    reply_error(link, error);
                }
            }
        }
    }

    fn handle(&mut self, link: &mut Link<Completion>, request: ClientRequest) {
        if let ClientRequest::Auth { id, token } = request {
            match link.authenticate(&token) {
                Ok(()) => reply_ok(
                    link,
                    OkReply {
                        id,
                        ..OkReply::default()
                    },
                ),
                Err(message) => {
                    reply_error(
                        link,
                        RequestError::new(id, ErrorCode::Unauthorized, message),
                    );
                    link.close(CloseReason::Unauthorized);
                }
            }
            return;
        }
        if link.awaiting_token() {
            reply_error(
                link,
                RequestError::new(
                    request.id(),
                    ErrorCode::Unauthorized,
                    "this node needs a token: send {\"op\":\"auth\",\"token\":\"…\"} first",
                ),
            );
            link.close(CloseReason::Unauthorized);
            return;
        }
        match request {
            ClientRequest::Auth { .. } => {}
            ClientRequest::Subscribe { id, filter, since } => {
                if let Err(limited) = link.admit_subscribe() {
                    return rate_limited(link, id, &limited);
                }
                if let Err(denied) = link.may_subscribe(&filter) {
                    reply_error(link, denied.into_error(id));
                    return;
                }
                let kept = link
                    .edge
                    .hub()
                    .namespace(filter.namespace())
                    .history
                    .is_some();
                if kept && since.is_some() && filter.is_pattern() {
                    reply_error(
                        link,
                        RequestError::new(
                            id,
                            ErrorCode::BadRequest,
                            "`since` resumes one topic; a pattern cannot carry it",
                        ),
                    );
                    return;
                }
                // Without history in the namespace a resume cannot recover.
                let recovered = since.as_ref().filter(|_| !kept).map(|_| false);
                if link.holds(&filter) {
                    reply_ok(
                        link,
                        OkReply {
                            id,
                            recovered,
                            ..OkReply::default()
                        },
                    );
                    return;
                }
                let limit = link.edge.settings().max_subscriptions_per_connection;
                if link.subscription_count() >= limit {
                    metrics::counter!(names::LIMIT_HITS, "limit" => "subscriptions").increment(1);
                    reply_error(
                        link,
                        RequestError::new(
                            id,
                            ErrorCode::LimitExceeded,
                            format!(
                                "this connection already holds {limit} subscriptions, the limit"
                            ),
                        ),
                    );
                    return;
                }
                let confirmed = link.subscribe(&filter, since.filter(|_| kept));
                link.spawn(async move {
                    match confirmed.await {
                        Ok(Some(opening)) => Completion::Opened {
                            id,
                            filter,
                            opening,
                        },
                        Ok(None) => Completion::Reply(id.map(|id| {
                            encode_ok(&OkReply {
                                id: Some(id),
                                recovered,
                                ..OkReply::default()
                            })
                        })),
                        Err(error) => Completion::SubscribeFailed {
                            filter,
                            error: RequestError::new(id, ErrorCode::Unavailable, error.to_string()),
                        },
                    }
                });
            }
            ClientRequest::Unsubscribe { id, filter } => {
                if link.holds(&filter) {
                    link.unsubscribe(&filter);
                }
                reply_ok(
                    link,
                    OkReply {
                        id,
                        ..OkReply::default()
                    },
                );
            }
            ClientRequest::Publish { id, topic, data } => {
                if let Err(limited) = link.admit_publish() {
                    return rate_limited(link, id, &limited);
                }
                if let Err(denied) = link.may_publish(&topic) {
                    reply_error(link, denied.into_error(id));
                    return;
                }
                let hub = link.edge.hub();
                let kept = hub.namespace(topic.namespace()).history.is_some();
                let accepted = hub.publish(topic, data);
                link.spawn(async move {
                    match accepted.await {
                        Ok(position) => Completion::Reply(id.map(|id| {
                            let (epoch, offset) = position.map(|p| (p.epoch, p.offset)).unzip();
                            encode_ok(&OkReply {
                                id: Some(id),
                                epoch,
                                offset,
                                ..OkReply::default()
                            })
                        })),
                        Err(error) => Completion::Error(RequestError::new(
                            id,
                            ErrorCode::Unavailable,
                            if kept {
                                format!("{error}; not published")
                            } else {
                                format!("{error}; delivered to this node's subscribers only")
                            },
                        )),
                    }
                });
            }
            ClientRequest::Ping { id } => link.send(encode_pong(id)),
            ClientRequest::Presence { id, topic } => presence(link, id, topic),
        }
    }
}

/// Reads who is subscribed to `topic`, for a client that may subscribe to it.
fn presence(link: &mut Link<Completion>, id: Option<u64>, topic: Topic) {
    if let Err(denied) = link.may_subscribe(&TopicFilter::from(topic.clone())) {
        reply_error(link, denied.into_error(id));
        return;
    }
    let hub = link.edge.hub();
    if !hub.namespace(topic.namespace()).presence {
        reply_error(
            link,
            RequestError::new(
                id,
                ErrorCode::BadRequest,
                format!("the namespace {:?} keeps no presence", topic.namespace()),
            ),
        );
        return;
    }
    let read = hub.presence(&topic);
    link.spawn(async move {
        match read.await {
            Ok(entries) => Completion::Reply(Some(encode_presence(id, &entries))),
            Err(error) => Completion::Error(RequestError::new(
                id,
                ErrorCode::Unavailable,
                error.to_string(),
            )),
        }
    });
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use ferrocast_core::{Delivery, Publication};
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
        let mut out = VecDeque::new();
        let n = JsonProtocol.encode(batch, &mut out);
        (out.into_iter().collect(), n)
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
