//! The task that owns the connection.
//!
//! [`Driver::run`] connects, serves the connection until it ends, waits as
//! the reconnect policy says, and starts over with the next URL. While
//! connected it polls, in this order: the client being closed, the socket,
//! subscriptions whose application caught up, the application's commands
//! (while fewer than [`MAX_IN_FLIGHT`] requests await a reply), and the
//! silence timers. Everything it writes goes through an [`Outbox`], flushed
//! once per wake-up.
//!
//! Per subscription it keeps a [`Record`]: the application's buffer, the
//! position tracker and where the subscription stands on the current
//! connection ([`State`]).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, SplitSink};
use futures::{FutureExt, SinkExt, StreamExt};
use serde_json::value::RawValue;
use tokio::net::TcpStream;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use ferrocast_protocol::client::{self as wire, Delivery, ServerObject};
use ferrocast_protocol::{OkReply, StreamPosition};
use ferrocast_protocol::{Topic, TopicFilter, MAX_TOPIC_LEN, SUBPROTOCOL_JSON};

use crate::backoff::{self, Backoff};
use crate::client::Settings;
use crate::tracker::{Tracker, Verdict};
use crate::wire::Outbox;
use crate::{Error, Event, Gap, Item, Message};

/// Requests awaiting a reply at once; past that, commands wait.
const MAX_IN_FLIGHT: usize = 256;
/// Commands handled in one wake-up, to batch them into few frames.
const COMMAND_BATCH: usize = 64;
/// The close code of a node that drains.
const SERVICE_RESTART: u16 = 1012;
/// The server disconnected the client for good (server API Disconnect).
const DISCONNECTED: u16 = 4002;
/// How long the close handshake may take.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Sink = SplitSink<Socket, WsMessage>;

/// What the application asks of the connection task.
#[derive(Debug)]
pub(crate) enum Command {
    Subscribe {
        filter: TopicFilter,
        since: Option<StreamPosition>,
        key: u64,
        items: mpsc::Sender<Item>,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Unsubscribe {
        filter: TopicFilter,
        key: u64,
        done: Option<oneshot::Sender<Result<(), Error>>>,
    },
    Publish {
        topic: Topic,
        data: Box<RawValue>,
        reply: oneshot::Sender<Result<Option<StreamPosition>, Error>>,
    },
}

/// A request sent on the current connection, by id.
#[derive(Debug)]
enum Pending {
    Subscribe {
        filter: String,
        key: u64,
        /// Sent with `since`.
        resumed: bool,
    },
    Unsubscribe(Option<oneshot::Sender<Result<(), Error>>>),
    Publish(oneshot::Sender<Result<Option<StreamPosition>, Error>>),
}

/// Where a subscription stands on the current connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not subscribed on this connection (none yet, or not restored yet).
    Idle,
    /// Subscribe sent, no reply yet. With `since`, whatever arrives for the
    /// topic before the reply is stale (the node sends the reply before
    /// what it replays) and is dropped.
    Subscribing {
        since: bool,
    },
    Live,
    /// The application's buffer was full: unsubscribed at the node, waiting
    /// for the application to read.
    Behind,
}

/// One subscription of the application.
#[derive(Debug)]
struct Record {
    filter: TopicFilter,
    /// Tells this subscription apart from a later one to the same filter.
    key: u64,
    /// The application's bounded buffer.
    items: mpsc::Sender<Item>,
    /// Unused for patterns: they cannot resume.
    tracker: Tracker,
    state: State,
    /// A gap to hand to the application before anything else.
    gap: Option<Gap>,
    /// The caller of `subscribe`, until the node's first reply.
    waiter: Option<oneshot::Sender<Result<(), Error>>>,
}

/// What became of a message handed to a [`Record`].
enum Outcome {
    /// Delivered, or dropped as a duplicate or stale.
    Done,
    /// The application's buffer is full.
    Full,
    /// The application dropped the subscription.
    Closed,
}

impl Record {
    /// Where a restored subscription resumes from, if it can.
    fn resume_position(&self) -> Option<StreamPosition> {
        if self.filter.is_pattern() {
            return None;
        }
        self.tracker.position().cloned()
    }

    /// Whether the application has been handed the subscription.
    fn started(&self) -> bool {
        self.waiter.is_none()
    }

    fn on_node(&self) -> bool {
        matches!(self.state, State::Live | State::Subscribing { .. })
    }

    fn deliver(&mut self, message: Message) -> Outcome {
        if matches!(
            self.state,
            State::Behind | State::Subscribing { since: true }
        ) {
            return Outcome::Done;
        }
        let tracked = if self.filter.is_pattern() {
            None
        } else {
            message.position.clone()
        };
        if let Some(position) = &tracked {
            match self.tracker.check(position) {
                Verdict::Duplicate => return Outcome::Done,
                Verdict::Jump { last } if self.gap.is_none() => {
                    self.gap = Some(Gap::Skipped {
                        last,
                        next: position.clone(),
                    });
                }
                Verdict::Jump { .. } | Verdict::Next => {}
            }
        }
        let needed = 1 + usize::from(self.gap.is_some());
        let mut permits = match self.items.try_reserve_many(needed) {
            Ok(permits) => permits,
            Err(TrySendError::Full(())) => {
                // Resuming from the last position fills a jump.
                if matches!(self.gap, Some(Gap::Skipped { .. })) {
                    self.gap = None;
                }
                return Outcome::Full;
            }
            Err(TrySendError::Closed(())) => return Outcome::Closed,
        };
        if let Some(gap) = self.gap.take() {
            if let Some(permit) = permits.next() {
                permit.send(Item::Gap(gap));
            }
        }
        if let Some(permit) = permits.next() {
            permit.send(Item::Message(message));
        }
        if let Some(position) = tracked {
            self.tracker.advance(position);
        }
        Outcome::Done
    }

    /// Notes a gap for the application; positions may jump after it.
    fn note_gap(&mut self, gap: Gap) {
        self.gap.get_or_insert(gap);
        self.tracker.announce_gap();
    }

    /// Hands the pending gap to the application. False when the buffer is
    /// full (the gap stays pending).
    fn flush_gap(&mut self) -> bool {
        let Some(gap) = self.gap.take() else {
            return true;
        };
        match self.items.try_reserve() {
            Ok(permit) => {
                permit.send(Item::Gap(gap));
                true
            }
            Err(TrySendError::Full(())) => {
                self.gap = Some(gap);
                false
            }
            // Nobody left to tell.
            Err(TrySendError::Closed(())) => true,
        }
    }
}

/// Why a connection ended.
#[derive(Debug)]
enum End {
    /// The client was closed, or every handle dropped.
    Shutdown,
    /// The node closed it with a close frame.
    Closed { code: Option<u16>, reason: String },
    /// It broke, went silent, or the node could not restore a subscription.
    Lost(String),
}

/// What woke the connection up.
enum Wake {
    Shutdown,
    Frame(Option<Result<WsMessage, tungstenite::Error>>),
    Room(String, u64),
    Command(Option<Command>),
    /// Half the idle timeout passed in silence: ping.
    Quiet,
    /// The whole idle timeout passed in silence: the connection is dead.
    Silent,
}

/// Resolves when a subscription's buffer has room again.
type RoomFuture = BoxFuture<'static, (String, u64)>;

pub(crate) struct Driver {
    settings: Settings,
    commands: mpsc::Receiver<Command>,
    events: broadcast::Sender<Event>,
    shutdown: CancellationToken,
    /// By filter.
    subscriptions: HashMap<String, Record>,
    /// The filters of `subscriptions` that are patterns, to match topics.
    patterns: HashSet<String>,
    pending: HashMap<u64, Pending>,
    next_id: u64,
    backoff: Backoff,
    /// The index in `settings.urls` of the next connection attempt.
    next_url: usize,
    /// Subscriptions behind, waiting for their application to read.
    room: FuturesUnordered<RoomFuture>,
}

impl Driver {
    pub(crate) fn new(
        settings: Settings,
        commands: mpsc::Receiver<Command>,
        events: broadcast::Sender<Event>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            backoff: Backoff::new(settings.backoff_base, settings.backoff_cap),
            settings,
            commands,
            events,
            shutdown,
            subscriptions: HashMap::new(),
            patterns: HashSet::new(),
            pending: HashMap::new(),
            next_id: 1,
            next_url: 0,
            room: FuturesUnordered::new(),
        }
    }

    /// Connects, serves, and reconnects until the client is closed.
    pub(crate) async fn run(mut self) {
        let shutdown = self.shutdown.clone();
        let mut delay = Duration::ZERO;
        loop {
            if !delay.is_zero() {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(delay) => {}
                }
            }
            let url = self.settings.urls[self.next_url].clone();
            self.next_url = (self.next_url + 1) % self.settings.urls.len();
            let connected = tokio::select! {
                () = shutdown.cancelled() => break,
                connected = connect(&url, self.settings.connect_timeout) => connected,
            };
            let socket = match connected {
                Ok(socket) => socket,
                Err(error) => {
                    delay = self.backoff.next_delay(&mut rand::rng());
                    tracing::debug!(%url, %error, ?delay, "connect failed");
                    self.emit(Event::ConnectFailed {
                        url,
                        error,
                        retry_in: delay,
                    });
                    continue;
                }
            };
            tracing::debug!(%url, "connected");
            self.emit(Event::Connected { url: url.clone() });
            let opened = Instant::now();
            let end = self.serve(socket).await;
            self.disconnected();
            if opened.elapsed() >= self.settings.stable_after {
                self.backoff.reset();
            }
            let (code, reason) = match end {
                End::Shutdown => break,
                End::Closed { code, reason } => (code, reason),
                End::Lost(reason) => (None, reason),
            };
            if code == Some(DISCONNECTED) {
                tracing::debug!(%url, %reason, "disconnected by the server; not reconnecting");
                self.emit(Event::DisconnectedByServer { url, reason });
                break;
            }
            delay = if code == Some(SERVICE_RESTART) {
                backoff::up_to(self.settings.drain_spread, &mut rand::rng())
            } else {
                self.backoff.next_delay(&mut rand::rng())
            };
            tracing::debug!(%url, ?code, %reason, ?delay, "disconnected");
            self.emit(Event::Disconnected {
                url,
                code,
                reason,
                retry_in: delay,
            });
        }
        tracing::debug!("client closed");
    }

    fn emit(&self, event: Event) {
        // No receiver is fine.
        let _ = self.events.send(event);
    }

    /// Serves one connection until it ends.
    async fn serve(&mut self, socket: Socket) -> End {
        let (mut sink, mut stream) = socket.split();
        let mut out = Outbox::default();
        self.restore(&mut out);
        let shutdown = self.shutdown.clone();
        let idle = self.settings.idle_timeout;
        let mut last_heard = Instant::now();
        let mut pinged = false;
        let end = loop {
            if let Err(error) = write(&mut sink, &mut out, idle).await {
                break End::Lost(error);
            }
            // Unbiased: a flood of messages does not starve the commands,
            // nor a flood of commands the socket.
            let wake = tokio::select! {
                () = shutdown.cancelled() => Wake::Shutdown,
                frame = stream.next() => Wake::Frame(frame),
                Some((filter, key)) = self.room.next(), if !self.room.is_empty() => {
                    Wake::Room(filter, key)
                }
                command = self.commands.recv(), if self.pending.len() < MAX_IN_FLIGHT => {
                    Wake::Command(command)
                }
                () = sleep_until(last_heard + idle / 2), if !pinged => Wake::Quiet,
                () = sleep_until(last_heard + idle) => Wake::Silent,
            };
            let ended = match wake {
                Wake::Shutdown => Some(End::Shutdown),
                Wake::Frame(frame) => {
                    last_heard = Instant::now();
                    pinged = false;
                    self.on_frame(frame, &mut out)
                }
                Wake::Room(filter, key) => {
                    self.on_room(&filter, key, &mut out);
                    None
                }
                Wake::Command(None) => Some(End::Shutdown),
                Wake::Command(Some(command)) => {
                    self.on_command(command, &mut out);
                    self.more_commands(&mut out);
                    None
                }
                Wake::Quiet => {
                    out.ping();
                    pinged = true;
                    None
                }
                Wake::Silent => Some(End::Lost(format!("nothing received for {idle:?}"))),
            };
            if let Some(end) = ended {
                break end;
            }
        };
        // Finish the close handshake, briefly: reading on sends the reply to
        // the node's close frame.
        let closing = matches!(end, End::Shutdown);
        let farewell = async {
            if closing {
                let frame = CloseFrame {
                    code: CloseCode::Normal,
                    reason: "client closed".into(),
                };
                let _ = sink.send(WsMessage::Close(Some(frame))).await;
            }
            while let Some(Ok(_)) = stream.next().await {}
        };
        if !matches!(end, End::Lost(_)) {
            let _ = timeout(CLOSE_GRACE, farewell).await;
        }
        end
    }

    /// Handles the commands already queued, up to a batch.
    fn more_commands(&mut self, out: &mut Outbox) {
        for _ in 0..COMMAND_BATCH {
            if self.pending.len() >= MAX_IN_FLIGHT || out.len() >= 64 * 1024 {
                return;
            }
            match self.commands.try_recv() {
                Ok(command) => self.on_command(command, out),
                Err(_) => return,
            }
        }
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Restores every subscription on a new connection.
    fn restore(&mut self, out: &mut Outbox) {
        // Subscriptions whose application is gone are forgotten.
        self.subscriptions.retain(|_, r| !r.items.is_closed());
        let subscriptions = &self.subscriptions;
        self.patterns.retain(|p| subscriptions.contains_key(p));
        let filters: Vec<String> = self
            .subscriptions
            .iter()
            .filter(|(_, r)| r.state != State::Behind)
            .map(|(f, _)| f.clone())
            .collect();
        for filter in filters {
            self.send_subscribe(&filter, true, out);
        }
    }

    /// Subscribes `filter` on this connection, with `since` when it can
    /// resume. With `announce`, a started subscription that cannot resume
    /// first tells the application of the gap.
    fn send_subscribe(&mut self, filter: &str, announce: bool, out: &mut Outbox) {
        let Some(record) = self.subscriptions.get_mut(filter) else {
            return;
        };
        let since = record.resume_position();
        if since.is_none() && announce && record.started() {
            record.note_gap(Gap::NotRecovered);
            if !record.flush_gap() {
                record.state = State::Behind;
                self.wait_for_room(filter);
                return;
            }
        }
        let key = record.key;
        record.state = State::Subscribing {
            since: since.is_some(),
        };
        let id = self.next_id();
        out.subscribe(id, filter, since.as_ref());
        self.pending.insert(
            id,
            Pending::Subscribe {
                filter: filter.to_string(),
                key,
                resumed: since.is_some(),
            },
        );
    }

    fn send_unsubscribe(
        &mut self,
        filter: &str,
        done: Option<oneshot::Sender<Result<(), Error>>>,
        out: &mut Outbox,
    ) {
        let id = self.next_id();
        out.unsubscribe(id, filter);
        self.pending.insert(id, Pending::Unsubscribe(done));
    }

    /// Forgets a subscription (unsubscribing at the node when it holds it).
    fn remove(&mut self, filter: &str, out: &mut Outbox) {
        self.patterns.remove(filter);
        if let Some(record) = self.subscriptions.remove(filter) {
            if record.on_node() {
                self.send_unsubscribe(filter, None, out);
            }
        }
    }

    /// Watches for the application of `filter` to read half its buffer.
    fn wait_for_room(&mut self, filter: &str) {
        let Some(record) = self.subscriptions.get(filter) else {
            return;
        };
        let items = record.items.clone();
        let wanted = (items.max_capacity() / 2).max(1);
        let (filter, key) = (filter.to_string(), record.key);
        self.room.push(
            async move {
                // The permits go back at once: this only waits for room.
                let _ = items.reserve_many(wanted).await;
                (filter, key)
            }
            .boxed(),
        );
    }

    /// The application's buffer for `filter` is full.
    fn fall_behind(&mut self, filter: &str, out: &mut Outbox) {
        let Some(record) = self.subscriptions.get_mut(filter) else {
            return;
        };
        let on_node = record.on_node();
        record.state = State::Behind;
        if record.resume_position().is_none() {
            record.note_gap(Gap::Overflow);
        }
        tracing::debug!(
            filter,
            "subscription buffer full; unsubscribed until the application reads"
        );
        self.wait_for_room(filter);
        if on_node {
            self.send_unsubscribe(filter, None, out);
        }
    }

    /// The application of `filter` read half its buffer: restore it.
    fn on_room(&mut self, filter: &str, key: u64, out: &mut Outbox) {
        let Some(record) = self.subscriptions.get_mut(filter) else {
            return;
        };
        if record.key != key || record.state != State::Behind {
            return;
        }
        if record.items.is_closed() {
            self.remove(filter, out);
            return;
        }
        if !record.flush_gap() {
            self.wait_for_room(filter);
            return;
        }
        record.state = State::Idle;
        // An overflow gap was just told; a resume says itself.
        self.send_subscribe(filter, false, out);
    }

    fn on_command(&mut self, command: Command, out: &mut Outbox) {
        match command {
            Command::Subscribe {
                filter,
                since,
                key,
                items,
                reply,
            } => {
                if reply.is_closed() {
                    return;
                }
                let name = filter.as_str().to_string();
                if let Some(existing) = self.subscriptions.get(&name) {
                    if !existing.items.is_closed() {
                        let _ = reply.send(Err(Error::AlreadySubscribed(name)));
                        return;
                    }
                    self.remove(&name, out);
                }
                if filter.is_pattern() {
                    self.patterns.insert(name.clone());
                }
                let record = Record {
                    filter,
                    key,
                    items,
                    tracker: since.map(Tracker::after).unwrap_or_default(),
                    state: State::Idle,
                    gap: None,
                    waiter: Some(reply),
                };
                self.subscriptions.insert(name.clone(), record);
                self.send_subscribe(&name, false, out);
            }
            Command::Unsubscribe { filter, key, done } => {
                let name = filter.as_str();
                let on_node = match self.subscriptions.get(name) {
                    Some(record) if record.key == key => record.on_node(),
                    _ => {
                        if let Some(done) = done {
                            let _ = done.send(Ok(()));
                        }
                        return;
                    }
                };
                self.subscriptions.remove(name);
                self.patterns.remove(name);
                if on_node {
                    self.send_unsubscribe(name, done, out);
                } else if let Some(done) = done {
                    let _ = done.send(Ok(()));
                }
            }
            Command::Publish { topic, data, reply } => {
                if reply.is_closed() {
                    return;
                }
                let id = self.next_id();
                out.publish(id, topic.as_str(), &data);
                self.pending.insert(id, Pending::Publish(reply));
            }
        }
    }

    fn on_frame(
        &mut self,
        frame: Option<Result<WsMessage, tungstenite::Error>>,
        out: &mut Outbox,
    ) -> Option<End> {
        match frame {
            None => Some(End::Lost("connection closed".into())),
            Some(Err(error)) => Some(End::Lost(error.to_string())),
            Some(Ok(WsMessage::Text(text))) => {
                for object in wire::decode_frame(text.as_str()) {
                    match object {
                        Ok(object) => {
                            if let Some(end) = self.on_object(object, out) {
                                return Some(end);
                            }
                        }
                        Err(error) => tracing::warn!(%error, "undecodable object from the node"),
                    }
                }
                None
            }
            Some(Ok(WsMessage::Close(frame))) => Some(End::Closed {
                code: frame.as_ref().map(|f| u16::from(f.code)),
                reason: frame
                    .map(|f| f.reason.as_str().to_string())
                    .unwrap_or_default(),
            }),
            // Pings are answered by the WebSocket layer.
            Some(Ok(_)) => None,
        }
    }

    fn on_object(&mut self, object: ServerObject<'_>, out: &mut Outbox) -> Option<End> {
        match object {
            ServerObject::Message(delivery) => {
                self.on_message(delivery, out);
                None
            }
            ServerObject::Ok(reply) => {
                let OkReply {
                    id,
                    epoch,
                    offset,
                    recovered,
                } = reply;
                let top = epoch
                    .zip(offset)
                    .map(|(epoch, offset)| StreamPosition { epoch, offset });
                self.on_reply(id, Ok(top), recovered, out)
            }
            ServerObject::Error(error) => {
                let refused = Error::Refused {
                    code: error.code.into_owned(),
                    message: error.message.into_owned(),
                };
                self.on_reply(error.id, Err(refused), None, out)
            }
            ServerObject::Unsubscribed { topic } => {
                self.on_unsubscribed(&topic, out);
                None
            }
            // Presence and history are not asked for; pongs answer nothing
            // sent; newer ops are ignored.
            ServerObject::Presence { .. }
            | ServerObject::History { .. }
            | ServerObject::Pong { .. }
            | ServerObject::Other { .. } => None,
        }
    }

    /// The server API ended a subscription: it is over for the application.
    fn on_unsubscribed(&mut self, filter: &str, out: &mut Outbox) {
        let Some(record) = self.subscriptions.get_mut(filter) else {
            return;
        };
        // The node no longer holds it: nothing to unsubscribe there.
        record.state = State::Idle;
        self.remove(filter, out);
        self.emit(Event::SubscriptionEnded {
            filter: filter.to_string(),
            code: "unsubscribed".into(),
            message: "the server ended this subscription".into(),
        });
    }

    fn on_message(&mut self, delivery: Delivery<'_>, out: &mut Outbox) {
        let name = delivery.topic;
        let exact = self
            .subscriptions
            .get(name.as_ref())
            .map(|r| r.filter.clone());
        let topic = match exact.as_ref() {
            Some(filter) => filter.as_topic(),
            None => Topic::parse(&name, MAX_TOPIC_LEN).ok(),
        };
        let Some(topic) = topic else {
            return;
        };
        let patterns: Vec<String> = self
            .patterns
            .iter()
            .filter(|p| {
                self.subscriptions
                    .get(p.as_str())
                    .is_some_and(|r| r.filter.matches(&topic))
            })
            .cloned()
            .collect();
        let message = Message {
            data: delivery.data.to_owned(),
            position: delivery.position.as_ref().map(|p| p.to_stream_position()),
            content_type: delivery.content_type.map(|c| c.into_owned()),
            base64: delivery.base64,
            topic,
        };
        for filter in &patterns {
            self.deliver(filter, message.clone(), out);
        }
        if exact.is_some() {
            self.deliver(&name, message, out);
        }
    }

    /// Hands `message` to the subscription to `filter`.
    fn deliver(&mut self, filter: &str, message: Message, out: &mut Outbox) {
        let Some(record) = self.subscriptions.get_mut(filter) else {
            return;
        };
        match record.deliver(message) {
            Outcome::Done => {}
            Outcome::Full => self.fall_behind(filter, out),
            Outcome::Closed => self.remove(filter, out),
        }
    }

    /// A reply to request `id`: `Ok` with the position it names (the top of
    /// a history, a publication's place), or the node's refusal.
    fn on_reply(
        &mut self,
        id: Option<u64>,
        result: Result<Option<StreamPosition>, Error>,
        recovered: Option<bool>,
        out: &mut Outbox,
    ) -> Option<End> {
        let Some(pending) = id.and_then(|id| self.pending.remove(&id)) else {
            if let Err(error) = result {
                tracing::warn!(%error, "error from the node");
            }
            return None;
        };
        match pending {
            Pending::Publish(reply) => {
                let _ = reply.send(result);
                None
            }
            Pending::Unsubscribe(done) => {
                if let Some(done) = done {
                    let _ = done.send(result.map(drop));
                }
                None
            }
            Pending::Subscribe {
                filter,
                key,
                resumed,
            } => {
                let reply = result.map(|top| (top, resumed && recovered == Some(true)));
                self.on_subscribed(&filter, key, resumed, reply, out)
            }
        }
    }

    /// The node answered a subscribe: `Ok` with the top of the history (if
    /// the namespace keeps one) and whether a resume recovered everything.
    fn on_subscribed(
        &mut self,
        filter: &str,
        key: u64,
        resumed: bool,
        reply: Result<(Option<StreamPosition>, bool), Error>,
        out: &mut Outbox,
    ) -> Option<End> {
        let record = self
            .subscriptions
            .get_mut(filter)
            .filter(|r| r.key == key)?;
        let (top, recovered) = match reply {
            Ok(answer) => answer,
            Err(error) => {
                // The node holds no subscription after an error.
                record.state = State::Idle;
                if let Some(waiter) = record.waiter.take() {
                    let _ = waiter.send(Err(error));
                    self.remove(filter, out);
                    return None;
                }
                let Error::Refused { code, message } = error else {
                    return None;
                };
                if code == "unavailable" || code == "internal" {
                    // Another node may serve it.
                    return Some(End::Lost(format!(
                        "the node could not restore {filter}: {code}: {message}"
                    )));
                }
                self.remove(filter, out);
                self.emit(Event::SubscriptionEnded {
                    filter: filter.to_string(),
                    code,
                    message,
                });
                return None;
            }
        };
        if !record.filter.is_pattern() {
            if let Some(top) = top {
                record.tracker.start_at(top);
            }
        }
        let waiter = record.waiter.take();
        if record.state == State::Behind {
            // Went behind before the reply: it is restored again later.
            if let Some(waiter) = waiter {
                let _ = waiter.send(Ok(()));
            }
            return None;
        }
        record.state = State::Live;
        if resumed && !recovered {
            record.note_gap(Gap::NotRecovered);
        }
        let flushed = record.flush_gap();
        match waiter {
            Some(waiter) => {
                if waiter.send(Ok(())).is_err() {
                    // The caller gave up waiting.
                    self.remove(filter, out);
                    return None;
                }
            }
            None => self.emit(Event::Resubscribed {
                filter: filter.to_string(),
                recovered,
            }),
        }
        if !flushed {
            self.fall_behind(filter, out);
        }
        None
    }

    /// The connection ended: what was sent on it is settled.
    fn disconnected(&mut self) {
        for (_, pending) in self.pending.drain() {
            match pending {
                Pending::Publish(reply) => {
                    let _ = reply.send(Err(Error::ConnectionLost));
                }
                // Gone with the connection.
                Pending::Unsubscribe(Some(done)) => {
                    let _ = done.send(Ok(()));
                }
                Pending::Unsubscribe(None) | Pending::Subscribe { .. } => {}
            }
        }
        for record in self.subscriptions.values_mut() {
            if record.on_node() {
                record.state = State::Idle;
            }
        }
    }
}

/// Opens a WebSocket connection offering `ferrocast.v1.json`.
async fn connect(url: &str, limit: Duration) -> Result<Socket, String> {
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    request.headers_mut().insert(
        SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(SUBPROTOCOL_JSON),
    );
    let handshake = tokio_tungstenite::connect_async_with_config(request, None, true);
    let (socket, _) = timeout(limit, handshake)
        .await
        .map_err(|_| format!("no handshake within {limit:?}"))?
        .map_err(|error| match error {
            tungstenite::Error::Http(response) => format!(
                "HTTP {}: {}",
                response.status(),
                response
                    .body()
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default()
                    .trim()
            ),
            other => other.to_string(),
        })?;
    Ok(socket)
}

/// Writes what the outbox holds, within `limit`.
async fn write(sink: &mut Sink, out: &mut Outbox, limit: Duration) -> Result<(), String> {
    let (ping, frames) = out.take();
    if !ping && frames.is_empty() {
        return Ok(());
    }
    let send = async {
        if ping {
            sink.feed(WsMessage::Ping(Default::default())).await?;
        }
        for frame in frames {
            sink.feed(WsMessage::text(frame)).await?;
        }
        sink.flush().await
    };
    timeout(limit, send)
        .await
        .map_err(|_| format!("nothing could be written for {limit:?}"))?
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(filter: &str, capacity: usize) -> (Record, mpsc::Receiver<Item>) {
        let (items, receiver) = mpsc::channel(capacity);
        let record = Record {
            filter: TopicFilter::parse(filter, MAX_TOPIC_LEN).unwrap(),
            key: 1,
            items,
            tracker: Tracker::default(),
            state: State::Live,
            gap: None,
            waiter: None,
        };
        (record, receiver)
    }

    fn message(topic: &str, offset: u64) -> Message {
        Message {
            topic: Topic::parse(topic, MAX_TOPIC_LEN).unwrap(),
            data: serde_json::value::to_raw_value(&offset).unwrap(),
            position: Some(StreamPosition {
                epoch: "e".into(),
                offset,
            }),
            content_type: None,
            base64: false,
        }
    }

    /// What the application would read: offsets, `0` for a gap.
    fn drain(receiver: &mut mpsc::Receiver<Item>) -> Vec<u64> {
        let mut out = Vec::new();
        while let Ok(item) = receiver.try_recv() {
            out.push(match item {
                Item::Message(m) => m.position.map_or(u64::MAX, |p| p.offset),
                Item::Gap(_) => 0,
            });
        }
        out
    }

    #[test]
    fn a_full_buffer_delivers_nothing_and_keeps_the_last_position() {
        let (mut record, mut receiver) = record("chat.a", 2);
        for offset in 1..=2 {
            assert!(matches!(
                record.deliver(message("chat.a", offset)),
                Outcome::Done
            ));
        }
        assert!(matches!(
            record.deliver(message("chat.a", 3)),
            Outcome::Full
        ));
        // The resume starts after what the application has.
        assert_eq!(record.resume_position().map(|p| p.offset), Some(2));
        assert_eq!(drain(&mut receiver), [1, 2]);
        drop(receiver);
        assert!(matches!(
            record.deliver(message("chat.a", 3)),
            Outcome::Closed
        ));
    }

    #[test]
    fn duplicates_and_stale_messages_are_dropped_and_jumps_reported() {
        let (mut record, mut receiver) = record("chat.a", 16);
        record.tracker.start_at(StreamPosition {
            epoch: "e".into(),
            offset: 4,
        });
        for offset in [3, 4, 5, 5, 6, 9, 10] {
            record.deliver(message("chat.a", offset));
        }
        assert_eq!(drain(&mut receiver), [5, 6, 0, 9, 10]);
        // Resubscribing with since: what arrives before the reply is stale.
        record.state = State::Subscribing { since: true };
        record.deliver(message("chat.a", 11));
        assert!(drain(&mut receiver).is_empty());
        assert_eq!(record.resume_position().map(|p| p.offset), Some(10));
    }

    #[test]
    fn a_gap_waits_for_room_and_goes_before_the_next_message() {
        let (mut record, mut receiver) = record("chat.a", 2);
        record.deliver(message("chat.a", 1));
        record.deliver(message("chat.a", 2));
        record.note_gap(Gap::NotRecovered);
        assert!(!record.flush_gap());
        assert_eq!(drain(&mut receiver), [1, 2]);
        // An announced gap lets the position jump.
        record.deliver(message("chat.a", 7));
        assert_eq!(drain(&mut receiver), [0, 7]);
        assert!(record.flush_gap());
    }

    #[test]
    fn patterns_keep_no_position() {
        let (mut record, mut receiver) = record("chat.*", 8);
        record.deliver(message("chat.a", 5));
        record.deliver(message("chat.b", 1));
        record.deliver(message("chat.a", 5));
        assert_eq!(drain(&mut receiver), [5, 1, 5]);
        assert_eq!(record.resume_position(), None);
    }
}
