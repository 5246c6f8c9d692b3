//! Socket.IO v5 over an Engine.IO session: the [`SocketIoProtocol`], one
//! more `session::Protocol` (docs/socketio.md).
//!
//! The main namespace `/` is served; a CONNECT to another is refused with
//! `CONNECT_ERROR`. Pub/sub maps onto events: the client emits `subscribe`,
//! `unsubscribe` and `publish` (answered through their acks with
//! `{ok: true, position}` or `{error: {code, message}}`), and receives each
//! publication as an event named by the publication's `event` header
//! (default `message`) with the arguments `(data, {topic, position},
//! offset)`: JSON as JSON, other payloads as a binary attachment.
//!
//! Every event the node sends ends with the recovery offset (`recovery`),
//! and `subscribed` / `unsubscribed` events carry it when the rooms change,
//! so that the offset a client sends back always names every room it holds.

use axum::extract::ws::{Message, Utf8Bytes};
use bytes::Bytes;
use futures::future::join_all;
use serde_json::{json, Value};

use ferrocast_core::{
    CloseReason, Delivery, Outbound, Publication, PublishError, SubscribeError, WireFormat,
};
use ferrocast_protocol::{
    ErrorCode, StreamPosition, Topic, TopicError, TopicFilter, PRESENCE_CONTENT_TYPE,
};

use super::packet::{self, Kind, Packet};
use super::random_id;
use super::recovery::{self, Rooms};
use crate::session::{count_error, End, Link, Protocol, Staged};
use crate::subscriptions::Opening;

/// What separates the Socket.IO packets of one queued frame (replies that
/// must reach the client together): never part of a packet, where JSON
/// escapes control characters.
const PACKETS: u8 = 0x1e;

/// The event a publication without an `event` header arrives as.
pub(super) const DEFAULT_EVENT: &str = "message";

/// Event names socket.io-client keeps for itself: a publication named so
/// arrives as [`DEFAULT_EVENT`] instead (Socket.IO's own server refuses to
/// emit them).
const RESERVED_EVENTS: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// The event a presence change (join, leave) arrives as.
const PRESENCE_EVENT: &str = "presence";

/// The media type of a binary publication from a Socket.IO client.
const BINARY: &str = "application/octet-stream";

/// A binary packet waiting for its attachments.
struct Partial {
    packet: Packet,
    attachments: Vec<Bytes>,
}

/// The Socket.IO state of one connection.
#[derive(Default)]
pub(crate) struct SocketIoProtocol {
    /// Whether the client is connected to the main namespace.
    connected: bool,
    /// Boxed: only a client sending binary pays for it.
    partial: Option<Box<Partial>>,
    /// What recovery carries: the connection's filters and positions.
    rooms: Rooms,
}

/// What a request that waited on the backplane hands back.
pub(crate) enum Completion {
    Subscribed {
        ack: Option<u64>,
        filter: TopicFilter,
        since: Option<StreamPosition>,
        result: Result<Option<Opening>, SubscribeError>,
    },
    Published {
        ack: Option<u64>,
        result: Result<Option<StreamPosition>, PublishError>,
    },
    /// A recovering CONNECT's subscriptions are ready (or failed).
    Restored {
        pid: String,
        /// Whether nothing was lost before the subscriptions were made.
        recovered: bool,
        rooms: Vec<Restoring>,
    },
}

pub(crate) struct Restoring {
    filter: TopicFilter,
    since: Option<StreamPosition>,
    result: Result<Option<Opening>, SubscribeError>,
}

/// An argument of a client's event: JSON, or a binary attachment.
enum Arg {
    Json(Value),
    Binary(Bytes),
}

/// A refused request, answered through its ack.
struct Refusal {
    code: ErrorCode,
    message: String,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    fn topic(error: &TopicError) -> Self {
        let code = if matches!(error, TopicError::TooLong { .. }) {
            metrics::counter!(ferrocast_core::metrics::LIMIT_HITS, "limit" => "topic_length")
                .increment(1);
            ErrorCode::TooLarge
        } else {
            ErrorCode::BadRequest
        };
        Self::new(code, error.to_string())
    }
}

impl Protocol for SocketIoProtocol {
    type Completion = Completion;
    const LABEL: &'static str = "socketio";

    fn on_message(&mut self, link: &mut Link<Completion>, message: Message) -> Option<End> {
        let (packet, attachments) = match message {
            Message::Text(text) => {
                if self.partial.is_some() {
                    count_error("socketio_missing_attachment");
                    return Some(End::ProtocolError);
                }
                let packet = match Packet::decode(text.as_str()) {
                    Ok(packet) => packet,
                    Err(error) => {
                        tracing::debug!(conn = link.conn(), %error, "broken Socket.IO packet");
                        count_error("socketio_bad_packet");
                        return Some(End::ProtocolError);
                    }
                };
                if packet.attachments > 0 {
                    self.partial = Some(Box::new(Partial {
                        attachments: Vec::with_capacity(packet.attachments),
                        packet,
                    }));
                    return None;
                }
                (packet, Vec::new())
            }
            Message::Binary(bytes) => {
                let Some(partial) = self.partial.as_mut() else {
                    count_error("socketio_unexpected_attachment");
                    return Some(End::ProtocolError);
                };
                partial.attachments.push(bytes);
                if partial.attachments.len() < partial.packet.attachments {
                    return None;
                }
                let partial = self.partial.take()?;
                (partial.packet, partial.attachments)
            }
            _ => return None,
        };
        self.on_packet(link, packet, attachments)
    }

    fn on_completion(&mut self, link: &mut Link<Completion>, done: Completion) {
        match done {
            Completion::Subscribed {
                ack,
                filter,
                since,
                result,
            } => self.subscribed(link, ack, filter, since, result),
            Completion::Published { ack, result } => match result {
                Ok(position) => reply(link, ack, ok(position.as_ref())),
                Err(error) => refuse(link, ack, Refusal::new(error.code(), error.to_string())),
            },
            Completion::Restored {
                pid,
                recovered,
                rooms,
            } => self.restored(link, pid, recovered, rooms),
        }
    }

    fn encode(&mut self, batch: &[Outbound], out: &mut Staged) -> u64 {
        let mut deliveries = 0;
        for item in batch {
            match item {
                Outbound::Frame(frame) => {
                    // Frames are the node's own packet texts: UTF-8.
                    for text in frame.split(|b| *b == PACKETS) {
                        if let Ok(text) = Utf8Bytes::try_from(frame.slice_ref(text)) {
                            out.push_back(Message::Text(text));
                        }
                    }
                }
                Outbound::Delivery(delivery, filter) => {
                    deliveries += 1;
                    let publication = &delivery.publication;
                    if let Some(position) = &publication.position {
                        self.rooms.delivered(filter, position);
                    }
                    self.encode_delivery(delivery, out);
                }
                // Engine.IO clients count pings to know the node is alive:
                // none may be lost in a busy batch.
                Outbound::Ping => out.push_back(Message::Ping(Bytes::new())),
                Outbound::Unsubscribe(_) => {}
            }
        }
        deliveries
    }

    fn on_server_unsubscribe(&mut self, link: &mut Link<Completion>, filter: &TopicFilter) {
        link.unsubscribe(filter);
        self.rooms.leave(filter);
        let notice = self.event("unsubscribed", &[json!(filter.as_str()), json!({})]);
        link.send(notice.into());
    }
}

impl SocketIoProtocol {
    fn on_packet(
        &mut self,
        link: &mut Link<Completion>,
        packet: Packet,
        attachments: Vec<Bytes>,
    ) -> Option<End> {
        if packet.namespace != "/" {
            if packet.kind == Kind::Connect {
                count_error("socketio_namespace");
                link.send(packet::connect_error(&packet.namespace, "Invalid namespace").into());
            }
            return None;
        }
        match packet.kind {
            Kind::Connect => self.connect(link, packet.data),
            // The client leaves the only namespace: the connection ends
            // with a normal close once what is queued went out.
            Kind::Disconnect => link.close(CloseReason::ClientRequest),
            Kind::Event | Kind::BinaryEvent if self.connected => {
                let Some(Value::Array(args)) = packet.data else {
                    return None;
                };
                match resolve(args, &attachments) {
                    Ok((name, args)) => self.event_in(link, packet.id, &name, args),
                    Err(refusal) => refuse(link, packet.id, refusal),
                }
            }
            Kind::Event | Kind::BinaryEvent => count_error("socketio_not_connected"),
            // The node asks for no acks: nothing waits for one.
            Kind::Ack | Kind::BinaryAck => {}
            Kind::ConnectError => {
                count_error("socketio_bad_packet");
                return Some(End::ProtocolError);
            }
        }
        None
    }

    /// CONNECT to `/`: authenticates with `auth.token`, then restores the
    /// rooms of `auth.pid` / `auth.offset`, or connects afresh.
    fn connect(&mut self, link: &mut Link<Completion>, auth: Option<Value>) {
        let auth = auth.unwrap_or(Value::Null);
        let token = auth.get("token").and_then(Value::as_str);
        if let Some(token) = token.filter(|_| link.identity().is_none()) {
            if let Err(message) = link.authenticate(token) {
                count_error("unauthorized");
                link.send(packet::connect_error("/", &message).into());
                return;
            }
        }
        if link.awaiting_token() {
            count_error("unauthorized");
            let message = "this node needs a token: connect with auth: { token }";
            link.send(packet::connect_error("/", message).into());
            return;
        }
        let pid = auth.get("pid").and_then(Value::as_str);
        match pid {
            Some(pid) if !self.connected => {
                let offset = auth.get("offset").and_then(Value::as_str).unwrap_or("");
                self.restore(link, pid.to_owned(), offset);
            }
            _ => {
                self.connected = true;
                link.send(connected(&random_id()).into());
            }
        }
    }

    /// Subscribes again to every room of `offset`, from its position.
    fn restore(&mut self, link: &mut Link<Completion>, pid: String, offset: &str) {
        let settings = link.edge.settings();
        let entries = recovery::parse(
            offset,
            settings.max_topic_length,
            settings.max_subscriptions_per_connection,
        );
        let entries = match entries {
            Ok(entries) => entries,
            Err(error) => {
                count_error("socketio_bad_offset");
                tracing::debug!(conn = link.conn(), %error, "cannot recover a Socket.IO session");
                self.connected = true;
                link.send(connected(&random_id()).into());
                return;
            }
        };
        let mut recovered = true;
        let mut waiting = Vec::with_capacity(entries.len());
        for (filter, since) in entries {
            if link.may_subscribe(&filter).is_err() || link.admit_subscribe().is_err() {
                recovered = false;
                continue;
            }
            let kept = keeps_history(link, &filter);
            // A pattern, or a namespace without history, is live only:
            // what it carried meanwhile is lost.
            recovered &= kept && since.is_some();
            let since = since.filter(|_| kept);
            let subscribed = link.subscribe(&filter, since.clone());
            waiting.push(async move {
                Restoring {
                    filter,
                    since,
                    result: subscribed.await,
                }
            });
        }
        link.spawn(async move {
            Completion::Restored {
                pid,
                recovered,
                rooms: join_all(waiting).await,
            }
        });
    }

    fn restored(
        &mut self,
        link: &mut Link<Completion>,
        pid: String,
        mut recovered: bool,
        rooms: Vec<Restoring>,
    ) {
        self.connected = true;
        let mut openings = Vec::new();
        for Restoring {
            filter,
            since,
            result,
        } in rooms
        {
            match result {
                Ok(Some(opening)) => openings.push((filter, since, opening)),
                Ok(None) => self.rooms.join(filter, None),
                Err(error) => {
                    tracing::debug!(conn = link.conn(), %error, "a room could not be restored");
                    recovered = false;
                    if link.holds(&filter) {
                        link.unsubscribe(&filter);
                    }
                }
            }
        }
        // Each opening goes to the front of the queue, so the last one
        // opened carries the CONNECT reply: it reaches the client before
        // every replayed publication.
        let last = openings.len().checked_sub(1);
        let Some(last) = last else {
            let pid = if recovered { pid } else { random_id() };
            link.send(connected(&pid).into());
            return;
        };
        for (i, (filter, since, opening)) in openings.into_iter().enumerate() {
            let rooms = &mut self.rooms;
            let recovered = &mut recovered;
            let pid = &pid;
            link.open(&filter, opening, |opened| {
                *recovered &= opened.recovered == Some(true);
                rooms.join(filter.clone(), since.or_else(|| Some(opened.top.clone())));
                (i == last).then(|| {
                    let pid = if *recovered { pid.clone() } else { random_id() };
                    Bytes::from(connected(&pid))
                })
            });
        }
    }

    /// One of the client's events.
    fn event_in(
        &mut self,
        link: &mut Link<Completion>,
        ack: Option<u64>,
        name: &str,
        args: Vec<Arg>,
    ) {
        if link.awaiting_token() {
            return refuse(
                link,
                ack,
                Refusal::new(
                    ErrorCode::Unauthorized,
                    "connect with auth: { token } first",
                ),
            );
        }
        let mut args = args.into_iter();
        let topic = match args.next() {
            Some(Arg::Json(Value::String(topic))) => topic,
            _ => {
                return refuse(
                    link,
                    ack,
                    Refusal::new(
                        ErrorCode::BadRequest,
                        format!("{name:?} takes a topic (a string) first"),
                    ),
                )
            }
        };
        let outcome = match name {
            "subscribe" => self.subscribe(link, ack, &topic, args.next()),
            "unsubscribe" => self.unsubscribe(link, ack, &topic),
            "publish" => publish(link, ack, &topic, args.next(), args.next()),
            _ => Err(Refusal::new(
                ErrorCode::BadRequest,
                format!(
                    "unknown event {name:?}: the node serves subscribe, unsubscribe and publish"
                ),
            )),
        };
        if let Err(refusal) = outcome {
            refuse(link, ack, refusal);
        }
    }

    fn subscribe(
        &mut self,
        link: &mut Link<Completion>,
        ack: Option<u64>,
        topic: &str,
        options: Option<Arg>,
    ) -> Result<(), Refusal> {
        link.admit_subscribe()
            .map_err(|limited| Refusal::new(ErrorCode::RateLimited, limited.to_string()))?;
        let settings = link.edge.settings();
        let filter = TopicFilter::parse(topic, settings.max_topic_length)
            .map_err(|error| Refusal::topic(&error))?;
        link.may_subscribe(&filter).map_err(|denied| {
            let error = denied.into_error(None);
            Refusal::new(error.code, error.message)
        })?;
        let since = match options {
            Some(Arg::Json(Value::Object(options))) => match options.get("since") {
                Some(since) => Some(
                    serde_json::from_value::<StreamPosition>(since.clone()).map_err(|_| {
                        Refusal::new(
                            ErrorCode::BadRequest,
                            "`since` is a position: {epoch, offset}",
                        )
                    })?,
                ),
                None => None,
            },
            None | Some(Arg::Json(Value::Null)) => None,
            Some(_) => {
                return Err(Refusal::new(
                    ErrorCode::BadRequest,
                    "subscribe's options are an object: {since}",
                ))
            }
        };
        if since.is_some() && filter.is_pattern() {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "`since` resumes one topic; a pattern cannot carry it",
            ));
        }
        if link.holds(&filter) {
            reply(link, ack, ok(None));
            return Ok(());
        }
        let limit = settings.max_subscriptions_per_connection;
        if link.subscription_count() >= limit {
            metrics::counter!(ferrocast_core::metrics::LIMIT_HITS, "limit" => "subscriptions")
                .increment(1);
            return Err(Refusal::new(
                ErrorCode::LimitExceeded,
                format!("this connection already holds {limit} subscriptions, the limit"),
            ));
        }
        let kept = keeps_history(link, &filter);
        let since = since.filter(|_| kept);
        let confirmed = link.subscribe(&filter, since.clone());
        link.spawn(async move {
            Completion::Subscribed {
                ack,
                filter,
                since,
                result: confirmed.await,
            }
        });
        Ok(())
    }

    fn subscribed(
        &mut self,
        link: &mut Link<Completion>,
        ack: Option<u64>,
        filter: TopicFilter,
        since: Option<StreamPosition>,
        result: Result<Option<Opening>, SubscribeError>,
    ) {
        match result {
            Ok(Some(opening)) => {
                let rooms = &mut self.rooms;
                link.open(&filter, opening, |opened| {
                    let at = since.unwrap_or_else(|| opened.top.clone());
                    rooms.join(filter.clone(), Some(at.clone()));
                    let mut answer = ok(Some(&opened.top));
                    if let Some(recovered) = opened.recovered {
                        answer["recovered"] = json!(recovered);
                    }
                    let reply = ack.map(|id| {
                        packet::encode(Kind::Ack, Some(id), &json!([answer]).to_string())
                    });
                    let notice = event_text(
                        "subscribed",
                        &[json!(filter.as_str()), json!({ "position": at })],
                        &rooms.offset(),
                    );
                    Some(join(reply.into_iter().chain([notice])))
                });
            }
            Ok(None) => {
                self.rooms.join(filter.clone(), None);
                reply(link, ack, ok(None));
                let notice = self.event("subscribed", &[json!(filter.as_str()), json!({})]);
                link.send(notice.into());
            }
            Err(error) => {
                if link.holds(&filter) {
                    link.unsubscribe(&filter);
                }
                refuse(
                    link,
                    ack,
                    Refusal::new(ErrorCode::Unavailable, error.to_string()),
                );
            }
        }
    }

    fn unsubscribe(
        &mut self,
        link: &mut Link<Completion>,
        ack: Option<u64>,
        topic: &str,
    ) -> Result<(), Refusal> {
        let filter = TopicFilter::parse(topic, link.edge.settings().max_topic_length)
            .map_err(|error| Refusal::topic(&error))?;
        reply(link, ack, ok(None));
        if link.holds(&filter) {
            link.unsubscribe(&filter);
            self.rooms.leave(&filter);
            let notice = self.event("unsubscribed", &[json!(filter.as_str()), json!({})]);
            link.send(notice.into());
        }
        Ok(())
    }

    /// An event of the node with `args`, ending with the recovery offset.
    fn event(&self, name: &str, args: &[Value]) -> String {
        event_text(name, args, &self.rooms.offset())
    }

    /// A publication as an event: JSON data inline, other data as a binary
    /// attachment. What every subscriber's packet shares (everything before
    /// the recovery offset) is encoded once per node
    /// ([`WireFormat::SocketIoHead`]); each subscriber adds its offset.
    fn encode_delivery(&self, delivery: &Delivery, out: &mut Staged) {
        let publication = &delivery.publication;
        let binary = attached(publication);
        let head = delivery.frame(WireFormat::SocketIoHead, event_head);
        let mut text = String::with_capacity(head.len() + 64);
        text.push_str(&String::from_utf8_lossy(head));
        text.push_str(",\"");
        let offset_at = text.len();
        self.rooms.write_offset(&mut text);
        // Topics and epochs need no JSON escape; should one ever, quote it properly.
        if text[offset_at..].contains(|c: char| c == '"' || c == '\\' || c.is_control()) {
            let offset = text.split_off(offset_at);
            text.pop();
            text.push_str(&Value::String(offset).to_string());
        } else {
            text.push('"');
        }
        text.push(']');
        out.push_back(Message::Text(text.into()));
        if binary {
            out.push_back(Message::Binary(publication.payload.clone()));
        }
    }
}

/// Whether `publication` goes as a binary attachment: only a payload
/// without a media type is JSON the node checked (a declared JSON type may
/// carry what does not parse: STOMP keeps such a body as it came), and
/// `text/*` goes as a string; anything else is bytes.
fn attached(publication: &Publication) -> bool {
    let content_type = publication.content_type.as_deref();
    let presence = content_type == Some(PRESENCE_CONTENT_TYPE);
    !(content_type.is_none() || presence || content_type.is_some_and(|t| t.starts_with("text/")))
}

/// The packet text of `publication` as an event, without its last argument
/// (the recovery offset) and the closing `]`.
fn event_head(publication: &Publication) -> Bytes {
    let content_type = publication.content_type.as_deref();
    // Presence events are the node's own JSON, named for what they are.
    let presence = content_type == Some(PRESENCE_CONTENT_TYPE);
    let named = publication.headers.iter().find(|(key, _)| key == "event");
    let name = match named.filter(|(_, event)| !RESERVED_EVENTS.contains(&event.as_str())) {
        Some((_, event)) => event.as_str(),
        None if presence => PRESENCE_EVENT,
        None => DEFAULT_EVENT,
    };
    let mut meta = json!({ "topic": publication.topic.as_str() });
    if let Some(position) = &publication.position {
        meta["position"] = json!(position);
    }
    let name = Value::String(name.to_owned());
    let text = if attached(publication) {
        let data = format!("[{name},{},{meta}", packet::placeholder(0));
        packet::encode_binary(Kind::BinaryEvent, 1, &data)
    } else if content_type.is_none() || presence {
        let data = String::from_utf8_lossy(&publication.payload);
        packet::encode(Kind::Event, None, &format!("[{name},{data},{meta}"))
    } else {
        let data = Value::String(String::from_utf8_lossy(&publication.payload).into_owned());
        packet::encode(Kind::Event, None, &format!("[{name},{data},{meta}"))
    };
    Bytes::from(text)
}

/// A client's `publish`: JSON data as JSON, a binary attachment with its
/// own media type; `options.event` names the event subscribers receive.
fn publish(
    link: &mut Link<Completion>,
    ack: Option<u64>,
    topic: &str,
    data: Option<Arg>,
    options: Option<Arg>,
) -> Result<(), Refusal> {
    link.admit_publish()
        .map_err(|limited| Refusal::new(ErrorCode::RateLimited, limited.to_string()))?;
    let topic = Topic::parse(topic, link.edge.settings().max_topic_length)
        .map_err(|error| Refusal::topic(&error))?;
    link.may_publish(&topic).map_err(|denied| {
        let error = denied.into_error(None);
        Refusal::new(error.code, error.message)
    })?;
    let (payload, content_type) = match data {
        Some(Arg::Json(value)) => (Bytes::from(value.to_string()), None),
        Some(Arg::Binary(bytes)) => (bytes, Some(BINARY.into())),
        None => {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "publish takes a topic and the data",
            ))
        }
    };
    let mut headers = Vec::new();
    if let Some(Arg::Json(Value::Object(options))) = options {
        if let Some(Value::String(event)) = options.get("event") {
            headers.push(("event".to_owned(), event.clone()));
        }
    }
    let accepted = link
        .edge
        .hub()
        .publish_message(topic, payload, content_type, headers);
    link.spawn(async move {
        Completion::Published {
            ack,
            result: accepted.await,
        }
    });
    Ok(())
}

/// The event name and arguments of an event's data, placeholders replaced
/// by their attachments (at the top level: binary deeper inside is refused).
fn resolve(args: Vec<Value>, attachments: &[Bytes]) -> Result<(String, Vec<Arg>), Refusal> {
    let mut args = args.into_iter();
    let Some(Value::String(name)) = args.next() else {
        return Err(Refusal::new(ErrorCode::BadRequest, "an event needs a name"));
    };
    let args = args
        .map(|arg| match packet::placeholder_num(&arg) {
            Some(num) => attachments
                .get(num)
                .cloned()
                .map(Arg::Binary)
                .ok_or_else(|| {
                    Refusal::new(
                        ErrorCode::BadRequest,
                        "a placeholder without its attachment",
                    )
                }),
            None => Ok(Arg::Json(arg)),
        })
        .collect::<Result<_, _>>()?;
    Ok((name, args))
}

/// Whether `filter`'s namespace keeps history (a `since` can resume it).
fn keeps_history(link: &Link<Completion>, filter: &TopicFilter) -> bool {
    let namespace = link.edge.hub().namespace(filter.namespace());
    namespace.history.is_some()
}

/// `{ok: true}`, with the position when there is one.
fn ok(position: Option<&StreamPosition>) -> Value {
    let mut answer = json!({ "ok": true });
    if let Some(position) = position {
        answer["position"] = json!(position);
    }
    answer
}

fn reply(link: &Link<Completion>, ack: Option<u64>, answer: Value) {
    if let Some(id) = ack {
        let text = packet::encode(Kind::Ack, Some(id), &json!([answer]).to_string());
        link.send(text.into());
    }
}

/// Answers a refused request through its ack (counted either way).
fn refuse(link: &Link<Completion>, ack: Option<u64>, refusal: Refusal) {
    count_error(refusal.code.as_str());
    let error = json!({ "error": { "code": refusal.code.as_str(), "message": refusal.message } });
    reply(link, ack, error);
}

/// The text of an event of the node, with the recovery `offset` last.
fn event_text(name: &str, args: &[Value], offset: &str) -> String {
    let mut all = Vec::with_capacity(args.len() + 2);
    all.push(json!(name));
    all.extend_from_slice(args);
    all.push(json!(offset));
    packet::encode(Kind::Event, None, &Value::Array(all).to_string())
}

/// The CONNECT reply: the socket's id and the recovery `pid`.
fn connected(pid: &str) -> String {
    let data = json!({ "sid": random_id(), "pid": pid }).to_string();
    packet::encode(Kind::Connect, None, &data)
}

/// Packets that must reach the client together, as one queued frame.
fn join(texts: impl Iterator<Item = String>) -> Bytes {
    let mut frame = Vec::new();
    for (i, text) in texts.enumerate() {
        if i > 0 {
            frame.push(PACKETS);
        }
        frame.extend_from_slice(text.as_bytes());
    }
    frame.into()
}
