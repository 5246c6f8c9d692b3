//! What the two native protocols, `ferrocast.v1.json` ([`super::json`]) and
//! `ferrocast.v1.proto` ([`super::proto`]), share: the same requests
//! (`ClientRequest`), served the same way, answered in each protocol's
//! encoding ([`Replies`]).

use axum::extract::ws::Message;
use bytes::{Bytes, BytesMut};

use ferrocast_core::history::HistoryRead;
use ferrocast_core::metrics as names;
use ferrocast_core::{CloseReason, Delivery, Outbound};
use ferrocast_protocol::{ClientRequest, ErrorCode, OkReply, PresenceEntry, RequestError};
use ferrocast_protocol::{StreamPosition, Topic, TopicFilter, MAX_HISTORY_LIMIT};

use super::{count_error, Link, SharedFormat, Staged};
use crate::rate::RateLimited;
use crate::subscriptions::Opening;

/// How a native protocol encodes its replies and deliveries.
pub(crate) trait Replies {
    /// What to tell a client that must authenticate before anything else.
    const AUTH_FIRST: &'static str;

    /// A request succeeded (fields depend on the request).
    fn ok(reply: &OkReply) -> Bytes;
    /// A request failed, or a frame could not be decoded.
    fn error(error: &RequestError) -> Bytes;
    /// The answer to a ping.
    fn pong(id: Option<u64>) -> Bytes;
    /// The notice that the server API ended a subscription.
    fn unsubscribed(filter: &TopicFilter) -> Bytes;
    /// The answer to a presence request.
    fn presence(id: Option<u64>, entries: &[PresenceEntry]) -> Bytes;
    /// The answer to a history request.
    fn history(id: Option<u64>, read: &HistoryRead) -> Bytes;
    /// The delivery in this protocol's wire format, encoded once per node.
    fn delivery(delivery: &Delivery) -> &Bytes;
}

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

/// Serves the requests decoded from one client frame, in order.
pub(crate) fn serve_requests<R: Replies>(
    link: &mut Link<Completion>,
    requests: impl Iterator<Item = Result<ClientRequest, RequestError>>,
) {
    for request in requests {
        match request {
            Ok(request) => handle::<R>(link, request),
            Err(error) => {
                if error.code == ErrorCode::TooLarge {
                    metrics::counter!(names::LIMIT_HITS, "limit" => "topic_length").increment(1);
                }
                reply_error::<R>(link, error);
            }
        }
    }
}

/// A request that waited on the backplane finished.
pub(crate) fn complete<R: Replies>(link: &mut Link<Completion>, done: Completion) {
    match done {
        Completion::Reply(Some(frame)) => link.send(frame),
        Completion::Reply(None) => {}
        Completion::Opened {
            id,
            filter,
            opening,
        } => link.open(&filter, opening, |opened| {
            id.map(|id| {
                R::ok(&OkReply {
                    id: Some(id),
                    epoch: Some(opened.top.epoch.clone()),
                    offset: Some(opened.top.offset),
                    recovered: opened.recovered,
                })
            })
        }),
        Completion::Error(error) => reply_error::<R>(link, error),
        Completion::SubscribeFailed { filter, error } => {
            if link.holds(&filter) {
                link.unsubscribe(&filter);
            }
            reply_error::<R>(link, error);
        }
    }
}

/// The items of a batch (replies and deliveries) joined by `separator` into
/// one frame, and how many deliveries it holds; `None` for a batch of pings.
pub(crate) fn join_batch<R: Replies>(batch: &[Outbound], separator: &[u8]) -> (Option<Bytes>, u64) {
    let mut deliveries = 0;
    let frames: Vec<&Bytes> = batch
        .iter()
        .filter_map(|item| match item {
            Outbound::Frame(frame) => Some(frame),
            Outbound::Delivery(delivery, _) => {
                deliveries += 1;
                Some(R::delivery(delivery))
            }
            Outbound::Ping | Outbound::Unsubscribe(_) => None,
        })
        .collect();
    let joined = match &frames[..] {
        [] => None,
        [one] => Some((*one).clone()),
        many => {
            let total: usize = many.iter().map(|f| f.len() + separator.len()).sum();
            let mut joined = BytesMut::with_capacity(total);
            for (i, frame) in many.iter().enumerate() {
                if i > 0 {
                    joined.extend_from_slice(separator);
                }
                joined.extend_from_slice(frame);
            }
            Some(joined.freeze())
        }
    };
    (joined, deliveries)
}

/// Stages each item of `batch` as a message of its own: deliveries as the
/// frame every subscriber shares (sent compressed once for all), replies as
/// `message` makes them.
pub(crate) fn stage_each(
    batch: &[Outbound],
    out: &mut Staged,
    format: SharedFormat,
    message: fn(Bytes) -> Message,
) -> u64 {
    let mut deliveries = 0;
    for item in batch {
        match item {
            Outbound::Frame(frame) => out.push_back(message(frame.clone())),
            Outbound::Delivery(delivery, _) => {
                deliveries += 1;
                out.push_shared(delivery.clone(), format);
            }
            Outbound::Ping | Outbound::Unsubscribe(_) => {}
        }
    }
    deliveries
}

/// The `too_large` error that precedes close 1009, counted.
pub(crate) fn too_large<R: Replies>(max_message_size: usize) -> Bytes {
    let error = RequestError::new(
        None,
        ErrorCode::TooLarge,
        format!("message over {max_message_size} bytes"),
    );
    count_error(error.code.as_str());
    R::error(&error)
}

/// The server API ended the subscription to `filter`: drop it and tell the
/// client.
pub(crate) fn server_unsubscribe<R: Replies>(link: &mut Link<Completion>, filter: &TopicFilter) {
    link.unsubscribe(filter);
    link.send(R::unsubscribed(filter));
}

/// Counts and queues an error reply.
pub(crate) fn reply_error<R: Replies>(link: &Link<Completion>, error: RequestError) {
    count_error(error.code.as_str());
    link.send(R::error(&error));
}

/// Refuses one request over a rate limit; the connection goes on.
fn rate_limited<R: Replies>(link: &Link<Completion>, id: Option<u64>, limited: &RateLimited) {
    reply_error::<R>(
        link,
        RequestError::new(id, ErrorCode::RateLimited, limited.to_string()),
    );
}

fn reply_ok<R: Replies>(link: &Link<Completion>, reply: OkReply) {
    if reply.id.is_some() {
        link.send(R::ok(&reply));
    }
}

fn handle<R: Replies>(link: &mut Link<Completion>, request: ClientRequest) {
    if let ClientRequest::Auth { id, token } = request {
        match link.authenticate(&token) {
            Ok(()) => reply_ok::<R>(
                link,
                OkReply {
                    id,
                    ..OkReply::default()
                },
            ),
            Err(message) => {
                reply_error::<R>(
                    link,
                    RequestError::new(id, ErrorCode::Unauthorized, message),
                );
                link.close(CloseReason::Unauthorized);
            }
        }
        return;
    }
    if link.awaiting_token() {
        reply_error::<R>(
            link,
            RequestError::new(request.id(), ErrorCode::Unauthorized, R::AUTH_FIRST),
        );
        link.close(CloseReason::Unauthorized);
        return;
    }
    match request {
        ClientRequest::Auth { .. } => {}
        ClientRequest::Subscribe { id, filter, since } => {
            if let Err(limited) = link.admit_subscribe() {
                return rate_limited::<R>(link, id, &limited);
            }
            if let Err(denied) = link.may_subscribe(&filter) {
                reply_error::<R>(link, denied.into_error(id));
                return;
            }
            let kept = link
                .edge
                .hub()
                .namespace(filter.namespace())
                .history
                .is_some();
            if kept && since.is_some() && filter.is_pattern() {
                reply_error::<R>(
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
                reply_ok::<R>(
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
                reply_error::<R>(
                    link,
                    RequestError::new(
                        id,
                        ErrorCode::LimitExceeded,
                        format!("this connection already holds {limit} subscriptions, the limit"),
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
                        R::ok(&OkReply {
                            id: Some(id),
                            recovered,
                            ..OkReply::default()
                        })
                    })),
                    Err(error) => Completion::SubscribeFailed {
                        filter,
                        error: RequestError::new(id, error.code(), error.to_string()),
                    },
                }
            });
        }
        ClientRequest::Unsubscribe { id, filter } => {
            if link.holds(&filter) {
                link.unsubscribe(&filter);
            }
            reply_ok::<R>(
                link,
                OkReply {
                    id,
                    ..OkReply::default()
                },
            );
        }
        ClientRequest::Publish {
            id,
            topic,
            data,
            content_type,
        } => {
            if let Err(limited) = link.admit_publish() {
                return rate_limited::<R>(link, id, &limited);
            }
            if let Err(denied) = link.may_publish(&topic) {
                reply_error::<R>(link, denied.into_error(id));
                return;
            }
            let accepted = link
                .edge
                .hub()
                .publish_message(topic, data, content_type, Vec::new());
            link.spawn(async move {
                match accepted.await {
                    Ok(position) => Completion::Reply(id.map(|id| {
                        let (epoch, offset) = position.map(|p| (p.epoch, p.offset)).unzip();
                        R::ok(&OkReply {
                            id: Some(id),
                            epoch,
                            offset,
                            ..OkReply::default()
                        })
                    })),
                    Err(error) => {
                        Completion::Error(RequestError::new(id, error.code(), error.to_string()))
                    }
                }
            });
        }
        ClientRequest::Ping { id } => link.send(R::pong(id)),
        ClientRequest::Presence { id, topic } => presence::<R>(link, id, topic),
        ClientRequest::History {
            id,
            topic,
            since,
            limit,
        } => history::<R>(link, id, topic, since, limit),
    }
}

/// Reads `topic`'s history for a client that may subscribe to it: the same
/// rate (a read costs a backplane round trip, like a subscribe) and the same
/// permission, since it shows what a subscription would.
fn history<R: Replies>(
    link: &mut Link<Completion>,
    id: Option<u64>,
    topic: Topic,
    since: Option<StreamPosition>,
    limit: Option<u64>,
) {
    if let Err(limited) = link.admit_subscribe() {
        return rate_limited::<R>(link, id, &limited);
    }
    if let Err(denied) = link.may_subscribe(&TopicFilter::from(topic.clone())) {
        reply_error::<R>(link, denied.into_error(id));
        return;
    }
    let hub = link.edge.hub();
    if hub.namespace(topic.namespace()).history.is_none() {
        reply_error::<R>(
            link,
            RequestError::new(
                id,
                ErrorCode::BadRequest,
                format!("the namespace {:?} keeps no history", topic.namespace()),
            ),
        );
        return;
    }
    let limit = limit.map_or(MAX_HISTORY_LIMIT, |asked| asked.min(MAX_HISTORY_LIMIT));
    // At most MAX_HISTORY_LIMIT: it fits any usize.
    let read = hub.read_history(&topic, since, limit as usize);
    link.spawn(async move {
        match read.await {
            Ok(read) => Completion::Reply(Some(R::history(id, &read))),
            Err(error) => Completion::Error(RequestError::new(
                id,
                ErrorCode::Unavailable,
                format!("cannot read the history: {error}"),
            )),
        }
    });
}

/// Reads who is subscribed to `topic`, for a client that may subscribe to it.
fn presence<R: Replies>(link: &mut Link<Completion>, id: Option<u64>, topic: Topic) {
    if let Err(denied) = link.may_subscribe(&TopicFilter::from(topic.clone())) {
        reply_error::<R>(link, denied.into_error(id));
        return;
    }
    let hub = link.edge.hub();
    if !hub.namespace(topic.namespace()).presence {
        reply_error::<R>(
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
            Ok(entries) => Completion::Reply(Some(R::presence(id, &entries))),
            Err(error) => Completion::Error(RequestError::new(
                id,
                ErrorCode::Unavailable,
                error.to_string(),
            )),
        }
    });
}
