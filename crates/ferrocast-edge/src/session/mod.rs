//! One WebSocket connection, whatever its subprotocol.
//!
//! A single task serves the connection ([`serve`]). It polls, in this order:
//! the writer (moves the connection's [`OutboundQueue`] to the socket in
//! batches), requests that finished waiting on the backplane, the socket, and
//! the keep-alive timers. What differs per subprotocol (decoding requests,
//! encoding batches, protocol heart-beats) is a [`Protocol`]; what a protocol
//! may do with its connection is a [`Link`]. Requests that wait on the
//! backplane run concurrently, up to [`MAX_IN_FLIGHT`]; past that the session
//! stops reading, which pushes back on the client through TCP.

mod json;
mod native;
mod proto;
pub(crate) mod resume;
mod stomp;

pub(crate) use json::JsonProtocol;
pub(crate) use proto::ProtoProtocol;
pub(crate) use stomp::StompProtocol;

use std::collections::{HashMap, VecDeque};
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, SinkExt, StreamExt};
use metrics::{counter, gauge, histogram, Counter, Histogram};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::tungstenite;

use ferrocast_core::backplane::{BackplaneError, HistoryPage};
use ferrocast_core::metrics as names;
use ferrocast_core::{
    unix_micros, CloseReason, ConnId, Outbound, OutboundQueue, SubscribeError, Taken,
};
use ferrocast_protocol::StreamPosition;
use ferrocast_protocol::{Topic, TopicFilter};

use resume::{Gates, Resync};

use crate::auth::{self, Denied, Identity};

use crate::edge::{Edge, CLOSE_GRACE};
use crate::rate::{ConnectionRates, Limited, RateLimited};

/// Most queued items encoded in one go.
const MAX_BATCH_ITEMS: usize = 64;
/// Requests of one connection that may wait on the backplane at once.
const MAX_IN_FLIGHT: usize = 256;

/// Close codes (docs/protocol.md).
pub(crate) mod code {
    pub(crate) const NORMAL: u16 = 1000;
    pub(crate) const PROTOCOL_ERROR: u16 = 1002;
    pub(crate) const UNSUPPORTED_DATA: u16 = 1003;
    pub(crate) const POLICY: u16 = 1008;
    pub(crate) const INVALID_DATA: u16 = 1007;
    pub(crate) const TOO_BIG: u16 = 1009;
    pub(crate) const INTERNAL: u16 = 1011;
    pub(crate) const SERVICE_RESTART: u16 = 1012;
    pub(crate) const SLOW_CONSUMER: u16 = 4000;
    pub(crate) const PING_TIMEOUT: u16 = 4001;
    pub(crate) const DISCONNECTED: u16 = 4002;
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The queue was closed: by fan-out (slow consumer), drain, or the protocol.
    Queue(CloseReason),
    /// The client closed the connection.
    ClientClosed,
    /// The client went away without closing (socket closed, network gone).
    ClientGone,
    /// The codec refused an oversized message.
    TooLarge,
    InvalidUtf8,
    ProtocolError,
    /// A text frame on a subprotocol of binary frames (`ferrocast.v1.proto`).
    TextFrame,
    /// No pong (or protocol heart-beat) in time.
    PingTimeout,
    /// No token came in time, or the token expired.
    TokenDeadline,
    Io,
}

impl End {
    /// The `reason` label of `ferrocast_connections_closed_total`.
    fn label(self) -> &'static str {
        match self {
            Self::Queue(CloseReason::SlowConsumer) => "slow_consumer",
            Self::Queue(CloseReason::HistoryUnavailable) => "history_unavailable",
            Self::Queue(CloseReason::Shutdown) => "shutdown",
            Self::Queue(CloseReason::ClientRequest) | Self::ClientClosed => "normal",
            Self::ClientGone => "client_gone",
            Self::Queue(CloseReason::TooLarge) | Self::TooLarge => "too_large",
            Self::Queue(CloseReason::ProtocolError)
            | Self::InvalidUtf8
            | Self::ProtocolError
            | Self::TextFrame => "protocol_error",
            Self::PingTimeout => "ping_timeout",
            Self::Queue(CloseReason::Unauthorized) | Self::TokenDeadline => "unauthorized",
            Self::Queue(CloseReason::Disconnected) => "disconnected",
            Self::Queue(CloseReason::RateLimited) => "rate_limited",
            Self::Io => "error",
        }
    }

    /// The close frame the node sends, if the connection can still carry one.
    fn close_frame(self, edge: &Edge) -> Option<CloseFrame> {
        let settings = edge.settings();
        let (code, reason) = match self {
            Self::Queue(CloseReason::SlowConsumer) => (
                code::SLOW_CONSUMER,
                format!(
                    "slow consumer: more than {} bytes waiting",
                    settings.outbound_queue_bytes
                ),
            ),
            Self::Queue(CloseReason::Shutdown) => (
                code::SERVICE_RESTART,
                "node draining; reconnect to another node".into(),
            ),
            Self::Queue(CloseReason::ClientRequest) => (code::NORMAL, "disconnected".into()),
            Self::Queue(CloseReason::HistoryUnavailable) => (
                code::INTERNAL,
                "history unavailable; reconnect and resume from your last position".into(),
            ),
            Self::Queue(CloseReason::ProtocolError) | Self::ProtocolError => {
                (code::PROTOCOL_ERROR, "protocol error".into())
            }
            Self::Queue(CloseReason::TooLarge) | Self::TooLarge => (
                code::TOO_BIG,
                format!("message over {} bytes", settings.max_message_size),
            ),
            Self::InvalidUtf8 => (code::INVALID_DATA, "text frame is not valid UTF-8".into()),
            Self::TextFrame => (
                code::UNSUPPORTED_DATA,
                "text frames are not part of this subprotocol; send binary frames".into(),
            ),
            Self::PingTimeout => (code::PING_TIMEOUT, "no pong within the ping timeout".into()),
            Self::Queue(CloseReason::Unauthorized) => {
                (code::POLICY, "unauthorized: a valid token is needed".into())
            }
            Self::TokenDeadline => (code::POLICY, "no valid token in time, or it expired".into()),
            Self::Queue(CloseReason::Disconnected) => (
                code::DISCONNECTED,
                "disconnected by the server; do not reconnect".into(),
            ),
            Self::Queue(CloseReason::RateLimited) => (code::POLICY, "rate limited".into()),
            Self::ClientClosed | Self::ClientGone | Self::Io => return None,
        };
        Some(CloseFrame {
            code,
            reason: Utf8Bytes::from(reason),
        })
    }
}

/// A protocol-level keep-alive, agreed with the client (STOMP heart-beats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Heartbeat {
    /// How often the node sends a heart-beat, if at all.
    pub(crate) send_every: Option<Duration>,
    /// How long the client may stay silent before it is closed, if checked.
    pub(crate) expect_within: Option<Duration>,
}

/// What differs between subprotocols.
pub(crate) trait Protocol: Send + 'static {
    /// What a request that waited on the backplane hands back.
    type Completion: Send + 'static;
    /// The `protocol` label of connection metrics.
    const LABEL: &'static str;

    /// A text or binary message from the client. `Some` ends the session.
    fn on_message(&mut self, link: &mut Link<Self::Completion>, message: Message) -> Option<End>;

    /// A request that waited on the backplane finished.
    fn on_completion(&mut self, link: &mut Link<Self::Completion>, done: Self::Completion);

    /// Encodes a batch taken from the queue into WebSocket messages, and
    /// returns how many publications it delivered.
    fn encode(&mut self, batch: &[Outbound], out: &mut VecDeque<Message>) -> u64;

    /// The protocol keep-alive currently agreed.
    fn heartbeat(&self) -> Heartbeat {
        Heartbeat::default()
    }

    /// The bytes of one protocol heart-beat.
    fn heartbeat_frame(&self) -> Bytes {
        Bytes::new()
    }

    /// What to send before the close frame when the codec refused a message
    /// as too large (an error in the protocol's own terms).
    fn too_large(&mut self, _max_message_size: usize) -> Option<Message> {
        None
    }

    /// The server API ended the connection's subscription to `filter` (which
    /// it holds): drop every protocol-level subscription using it (through
    /// [`Link::unsubscribe`]) and tell the client if the protocol can.
    fn on_server_unsubscribe(&mut self, link: &mut Link<Self::Completion>, filter: &TopicFilter);

    /// The session is over: undo protocol state (transactions, ...).
    fn on_end(&mut self, _link: &mut Link<Self::Completion>) {}
}

/// Something that finished waiting on the backplane.
enum Done<C> {
    /// A protocol request.
    Protocol(C),
    /// A history read that fills a gap.
    Resynced(Resync, Result<HistoryPage, BackplaneError>),
}

/// A subscription in a namespace with history, once the backplane routes it
/// here and its history was read: what [`Link::open`] needs.
#[derive(Debug)]
pub(crate) struct Opening {
    topic: Topic,
    since: Option<StreamPosition>,
    page: HistoryPage,
}

/// Where a subscription starts, for the protocol's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Opened {
    /// The newest position in the topic's history.
    pub(crate) top: StreamPosition,
    /// For a subscription that resumed from a position: whether nothing was
    /// missed.
    pub(crate) recovered: Option<bool>,
}

/// What a [`Protocol`] may do with its connection.
pub(crate) struct Link<C> {
    pub(crate) edge: Edge,
    pub(crate) conn: ConnId,
    queue: Arc<OutboundQueue>,
    /// Local subscriptions of this connection: filter → how many protocol-level
    /// subscriptions use it (several STOMP subscriptions may share a filter).
    filters: HashMap<TopicFilter, usize>,
    /// Subscriptions in namespaces with history.
    gates: Gates,
    in_flight: FuturesUnordered<BoxFuture<'static, Done<C>>>,
    /// Who the client is, once a token was verified.
    identity: Option<Arc<Identity>>,
    /// On a node without authentication, the user a STOMP client named
    /// (`--stomp-login-is-user`).
    named_user: Option<String>,
    /// Set while the node waits for a token (none came with the upgrade and
    /// anonymous connections are not served): when it must come by.
    token_due: Option<Instant>,
    /// When the token of `identity` expires, fixed once it was verified.
    token_expires: Option<Instant>,
    /// The connection's publish and subscribe limits, allocated at the first
    /// publish or subscribe (an idle connection stays small).
    rates: Option<Box<ConnectionRates>>,
}

impl<C: Send + 'static> Link<C> {
    /// Queues an encoded frame for the client.
    pub(crate) fn send(&self, frame: Bytes) {
        // A closed queue means the session is ending; the frame has nowhere to go.
        let _ = self.queue.push(Outbound::Frame(frame));
    }

    /// Writes what is queued, then closes the connection for `reason`.
    pub(crate) fn close(&self, reason: CloseReason) {
        self.queue.close(reason);
    }

    /// Runs `work` (a request waiting on the backplane) alongside the session;
    /// its result comes back through [`Protocol::on_completion`].
    pub(crate) fn spawn(&mut self, work: impl Future<Output = C> + Send + 'static) {
        self.in_flight.push(work.map(Done::Protocol).boxed());
    }

    /// Adds one use of `filter`. The first use subscribes the connection in
    /// the hub; the future completes when the backplane routes it here.
    ///
    /// In a namespace with history, a first use of one topic (not a pattern)
    /// then reads the topic's history, after `since` if given, and yields an
    /// [`Opening`]; until it is passed to [`Link::open`] the subscription's
    /// deliveries are held back. A pattern, or a filter already in use, yields
    /// `None`.
    pub(crate) fn subscribe(
        &mut self,
        filter: &TopicFilter,
        since: Option<StreamPosition>,
    ) -> BoxFuture<'static, Result<Option<Opening>, SubscribeError>> {
        let uses = self.filters.entry(filter.clone()).or_insert(0);
        *uses += 1;
        if *uses > 1 {
            return futures::future::ready(Ok(None)).boxed();
        }
        let hub = self.edge.hub().clone();
        let kept = hub.namespace(filter.namespace()).history.is_some();
        let topic = filter.as_topic().filter(|_| kept);
        if kept {
            self.gates.open(filter, topic.is_some());
        }
        let confirmed = hub.subscribe(filter, self.conn, self.queue.clone());
        if let Some(topic) = filter.as_topic() {
            hub.join(&topic, self.conn, self.user());
        }
        async move {
            confirmed.await?;
            let Some(topic) = topic else {
                return Ok(None);
            };
            let after = since.as_ref().map_or(u64::MAX, |s| s.offset);
            let page = hub.history(&topic, after).await?;
            Ok(Some(Opening { topic, since, page }))
        }
        .boxed()
    }

    /// Starts delivering a subscription whose history was read: queues
    /// `reply` (the protocol's answer, given where the subscription starts),
    /// then what the client missed, then the live deliveries.
    pub(crate) fn open(
        &mut self,
        filter: &TopicFilter,
        opening: Opening,
        reply: impl FnOnce(&Opened) -> Option<Bytes>,
    ) {
        let Opening { topic, since, page } = opening;
        let start = resume::Start::of(since, page);
        let mut items = Vec::with_capacity(start.replay.len() + 1);
        let opened = Opened {
            top: start.top,
            recovered: start.recovered,
        };
        if let Some(frame) = reply(&opened) {
            items.push(Outbound::Frame(frame));
        }
        items.extend(self.gates.opened(filter, &topic, start.from, start.replay));
        self.queue.push_front(items);
    }

    /// Who the client is, if it presented a valid token.
    pub(crate) fn identity(&self) -> Option<&Identity> {
        self.identity.as_deref()
    }

    /// The user of the connection: the token's subject, else the user a
    /// STOMP client named on a node without authentication.
    pub(crate) fn user(&self) -> Option<&str> {
        self.identity
            .as_ref()
            .map(|id| id.user.as_str())
            .or(self.named_user.as_deref())
    }

    /// Takes `user` as the connection's user without a token (development:
    /// `--stomp-login-is-user`).
    pub(crate) fn name_user(&mut self, user: String) {
        self.edge.identify(self.conn, &user);
        self.named_user = Some(user);
    }

    /// Whether the node still waits for the client's token.
    pub(crate) fn awaiting_token(&self) -> bool {
        self.token_due.is_some()
    }

    /// Verifies `token` and makes its user the connection's. A connection
    /// authenticates once.
    pub(crate) fn authenticate(&mut self, token: &str) -> Result<(), String> {
        if self.identity.is_some() {
            return Err("this connection is already authenticated".into());
        }
        match self.edge.auth().verify(token) {
            Ok(identity) => {
                self.token_expires = Some(Instant::now() + identity.remaining());
                self.edge.identify(self.conn, &identity.user);
                self.identity = Some(Arc::new(identity));
                self.token_due = None;
                Ok(())
            }
            Err(error) => {
                counter!(names::AUTH_FAILURES, "reason" => error.label()).increment(1);
                Err(error.to_string())
            }
        }
    }

    /// When the connection must close: the token deadline while waiting for
    /// one, else the token's expiry. Fixed values, so that the keep-alive
    /// timer is not re-armed on every message.
    fn closes_at(&self) -> Option<Instant> {
        self.token_due.or(self.token_expires)
    }

    /// Whether the client may subscribe to `filter`.
    pub(crate) fn may_subscribe(&self, filter: &TopicFilter) -> Result<(), Denied> {
        let settings = self.edge.hub().namespace(filter.namespace());
        auth::may_subscribe(self.identity(), self.user(), settings, filter)
            .inspect_err(count_denied)
    }

    /// Whether the client may publish to `topic`.
    pub(crate) fn may_publish(&self, topic: &Topic) -> Result<(), Denied> {
        let settings = self.edge.hub().namespace(topic.namespace());
        let checks_tokens = self.edge.auth().has_keys();
        auth::may_publish(self.identity(), checks_tokens, settings, topic).inspect_err(count_denied)
    }

    /// Counts a publish against the connection's rate limit; `Err` (counted
    /// in `ferrocast_rate_limited_total`) when it is over it: the protocol
    /// refuses the publish.
    pub(crate) fn admit_publish(&mut self) -> Result<(), RateLimited> {
        self.admit(Limited::Publish)
    }

    /// Counts a subscribe against the connection's rate limit; `Err` when it
    /// is over it: the protocol refuses the subscribe.
    pub(crate) fn admit_subscribe(&mut self) -> Result<(), RateLimited> {
        self.admit(Limited::Subscribe)
    }

    fn admit(&mut self, kind: Limited) -> Result<(), RateLimited> {
        let settings = self.edge.settings();
        if !ConnectionRates::apply(settings) {
            return Ok(());
        }
        self.rates
            .get_or_insert_with(|| Box::new(ConnectionRates::new(settings)))
            .admit(kind, settings)
    }

    /// Whether the connection is subscribed to `filter`.
    pub(crate) fn holds(&self, filter: &TopicFilter) -> bool {
        self.filters.contains_key(filter)
    }

    /// How many distinct filters the connection is subscribed to.
    pub(crate) fn subscription_count(&self) -> usize {
        self.filters.len()
    }

    /// Removes one use of `filter`; the last one unsubscribes from the hub.
    pub(crate) fn unsubscribe(&mut self, filter: &TopicFilter) {
        let Some(uses) = self.filters.get_mut(filter) else {
            return;
        };
        *uses -= 1;
        if *uses == 0 {
            self.filters.remove(filter);
            self.gates.close(filter);
            self.leave(filter);
        }
    }

    /// Reads the history for the gaps the writer found.
    fn resync(&mut self) {
        for resync in self.gates.take_resyncs() {
            let read = self.edge.hub().history(&resync.topic, resync.after);
            self.in_flight
                .push(async move { Done::Resynced(resync, read.await) }.boxed());
        }
    }

    /// A history read for a gap finished: replays it, or closes the
    /// connection (the client resumes elsewhere) when it failed.
    fn resynced(&mut self, resync: Resync, read: Result<HistoryPage, BackplaneError>) {
        match read {
            Ok(page) => {
                let items = self.gates.resynced(&resync, page.epoch, page.publications);
                self.queue.push_front(items);
            }
            Err(error) => {
                tracing::warn!(conn = self.conn, %error, "cannot read history to fill a gap; closing the connection");
                self.queue.close(CloseReason::HistoryUnavailable);
            }
        }
    }

    /// Unsubscribes `filter` in the hub, and leaves its presence.
    fn leave(&self, filter: &TopicFilter) {
        let hub = self.edge.hub();
        hub.unsubscribe(filter, self.conn);
        if let Some(topic) = filter.as_topic() {
            hub.leave(&topic, self.conn);
        }
    }

    fn release(&mut self) {
        for (filter, _) in std::mem::take(&mut self.filters) {
            self.leave(&filter);
        }
    }
}

fn count_denied(denied: &Denied) {
    let label = match denied {
        Denied::Unauthorized(_) => "unauthorized",
        Denied::Forbidden(_) => "forbidden",
    };
    counter!(names::ACCESS_DENIED, "reason" => label).increment(1);
}

/// Counts an error reply by its protocol-independent code.
pub(crate) fn count_error(code: &'static str) {
    counter!(names::CLIENT_ERRORS, "code" => code).increment(1);
}

/// A text message if `frame` is UTF-8, else a binary one.
pub(crate) fn text_or_binary(frame: Bytes) -> Message {
    match Utf8Bytes::try_from(frame.clone()) {
        Ok(text) => Message::Text(text),
        Err(_) => Message::Binary(frame),
    }
}

/// Per-connection handles on the writer's metrics (resolved once, not per message).
struct WriterMetrics {
    delivered: Counter,
    lag: Histogram,
}

/// What moves the queue to the socket: the batch being encoded and the
/// encoded messages not yet handed to the socket. Both are empty, holding no
/// memory, while the connection is idle.
struct Writer {
    batch: Vec<Outbound>,
    staged: VecDeque<Message>,
    /// Filters the server API unsubscribed, taken from the queue in order
    /// with the deliveries; the session applies them after the write.
    unsubscribed: Vec<TopicFilter>,
    metrics: WriterMetrics,
}

/// What the keep-alive timer asks for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Due {
    ping: bool,
    heartbeat: bool,
    timed_out: bool,
    /// The token deadline passed.
    deadline: bool,
}

/// Every keep-alive deadline of a connection on one timer: WebSocket pings
/// with their pong timeout, and the protocol heart-beats agreed (STOMP).
struct Keepalive {
    timer: Pin<Box<Sleep>>,
    ping_interval: Duration,
    pong_timeout: Duration,
    next_ping: Instant,
    /// Set when a ping went out and nothing arrived since.
    pong_due: Option<Instant>,
    heartbeat: Heartbeat,
    next_heartbeat: Option<Instant>,
    next_check: Option<Instant>,
    /// When protocol data last arrived: heart-beats count data only, not
    /// WebSocket pongs.
    last_data: Instant,
    /// When the connection must close (a token deadline or expiry).
    close_at: Option<Instant>,
}

impl Keepalive {
    fn new(ping_interval: Duration, pong_timeout: Duration) -> Self {
        let now = Instant::now();
        let next_ping = now + ping_interval;
        Self {
            timer: Box::pin(tokio::time::sleep_until(next_ping)),
            ping_interval,
            pong_timeout,
            next_ping,
            pong_due: None,
            heartbeat: Heartbeat::default(),
            next_heartbeat: None,
            next_check: None,
            last_data: now,
            close_at: None,
        }
    }

    /// Closes the connection at `at` (`None`: no such deadline).
    fn close_at(&mut self, at: Option<Instant>) {
        if at != self.close_at {
            self.close_at = at;
            self.rearm();
        }
    }

    /// Something arrived from the client; `data` when it was protocol data.
    fn heard(&mut self, data: bool) {
        self.pong_due = None;
        if data {
            self.last_data = Instant::now();
        }
    }

    /// Follows the protocol heart-beats currently agreed.
    fn agree(&mut self, heartbeat: Heartbeat) {
        if heartbeat == self.heartbeat {
            return;
        }
        let now = Instant::now();
        self.heartbeat = heartbeat;
        self.next_heartbeat = heartbeat.send_every.map(|every| now + every);
        self.next_check = heartbeat.expect_within.map(|window| now + window);
        self.rearm();
    }

    fn rearm(&mut self) {
        let next = [
            Some(self.next_ping),
            self.pong_due,
            self.next_heartbeat,
            self.next_check,
            self.close_at,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(self.next_ping);
        self.timer.as_mut().reset(next);
    }

    fn poll_due(&mut self, cx: &mut Context<'_>) -> Poll<Due> {
        ready!(self.timer.as_mut().poll(cx));
        let now = Instant::now();
        let mut due = Due::default();
        if self.close_at.is_some_and(|at| at <= now) {
            due.deadline = true;
            return Poll::Ready(due);
        }
        if self.pong_due.is_some_and(|at| at <= now) {
            due.timed_out = true;
            return Poll::Ready(due);
        }
        if self.next_ping <= now {
            due.ping = true;
            self.pong_due.get_or_insert(now + self.pong_timeout);
            self.next_ping = now + self.ping_interval;
        }
        if let (Some(at), Some(every)) = (self.next_heartbeat, self.heartbeat.send_every) {
            if at <= now {
                due.heartbeat = true;
                self.next_heartbeat = Some(now + every);
            }
        }
        if let (Some(at), Some(window)) = (self.next_check, self.heartbeat.expect_within) {
            if at <= now {
                // The spec asks for tolerance: allow twice the agreed window.
                if now.saturating_duration_since(self.last_data) > window.saturating_mul(2) {
                    due.timed_out = true;
                }
                self.next_check = Some(now + window);
            }
        }
        self.rearm();
        Poll::Ready(due)
    }
}

/// One connection: its socket, protocol state, queue and timers, polled by
/// hand as one future (no split socket, no per-source futures), which keeps
/// an idle connection small.
struct Session<P: Protocol> {
    socket: WebSocket,
    protocol: P,
    link: Link<P::Completion>,
    writer: Writer,
    keepalive: Keepalive,
}

/// Serves one upgraded connection with `protocol` until it closes. `permit`
/// is the connection's slot under `max_connections`, released at the end.
pub(crate) fn serve<P: Protocol>(
    edge: Edge,
    socket: WebSocket,
    permit: OwnedSemaphorePermit,
    protocol: P,
    identity: Option<Identity>,
) -> impl Future<Output = ()> + Send {
    let queue = Arc::new(OutboundQueue::new(edge.settings().outbound_queue_bytes));
    let conn = edge.register(queue.clone());
    if let Some(identity) = &identity {
        edge.identify(conn, &identity.user);
    }
    gauge!(names::CONNECTIONS, "protocol" => P::LABEL).increment(1.0);
    counter!(names::CONNECTIONS_OPENED, "protocol" => P::LABEL).increment(1);
    let settings = edge.settings();
    let keepalive = Keepalive::new(settings.ping_interval, settings.pong_timeout);
    let token_due = (identity.is_none() && !edge.auth().allows_anonymous())
        .then(|| Instant::now() + settings.auth_timeout);
    let mut session = Session {
        socket,
        protocol,
        link: Link {
            edge,
            conn,
            queue,
            filters: HashMap::new(),
            gates: Gates::default(),
            in_flight: FuturesUnordered::new(),
            token_expires: identity.as_ref().map(|id| Instant::now() + id.remaining()),
            identity: identity.map(Arc::new),
            named_user: None,
            token_due,
            rates: None,
        },
        writer: Writer {
            batch: Vec::new(),
            staged: VecDeque::new(),
            unsubscribed: Vec::new(),
            metrics: WriterMetrics {
                delivered: counter!(names::MESSAGES_DELIVERED),
                lag: histogram!(names::DELIVERY_LAG),
            },
        },
        keepalive,
    };
    let closes_at = session.link.closes_at();
    session.keepalive.close_at(closes_at);
    // An async block that uses `session` in place: an `async fn` taking it
    // by value would hold it twice.
    async move {
        let end = poll_fn(|cx| session.poll_end(cx)).await;
        session.finish(end).await;
        drop(permit);
    }
}

impl<P: Protocol> Session<P> {
    /// Closes the connection for `end` and releases what it held.
    async fn finish(&mut self, end: End) {
        let edge = self.link.edge.clone();
        // Boxed: only a closing connection pays for the close handshake.
        Box::pin(close(&mut self.protocol, &edge, end, &mut self.socket)).await;
        self.protocol.on_end(&mut self.link);
        self.link.release();
        edge.deregister(self.link.conn);
        gauge!(names::CONNECTIONS, "protocol" => P::LABEL).decrement(1.0);
        counter!(names::CONNECTIONS_CLOSED, "reason" => end.label()).increment(1);
        tracing::debug!(
            conn = self.link.conn,
            protocol = P::LABEL,
            reason = end.label(),
            "connection closed"
        );
    }

    /// Polls, in this order, the writer, requests that finished waiting on
    /// the backplane, the socket (unless [`MAX_IN_FLIGHT`] requests wait) and
    /// the keep-alive timer, until none has anything to do or the session
    /// ends.
    fn poll_end(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        loop {
            let written = pump(
                cx,
                &mut self.socket,
                &self.link.queue,
                &mut self.writer,
                &mut self.protocol,
                &mut self.link.gates,
            );
            match written {
                Poll::Ready(Ok(reason)) => return Poll::Ready(End::Queue(reason)),
                Poll::Ready(Err(error)) => return Poll::Ready(classify(error)),
                Poll::Pending => {}
            }
            if !self.writer.unsubscribed.is_empty() {
                for filter in std::mem::take(&mut self.writer.unsubscribed) {
                    if self.link.holds(&filter) {
                        self.protocol.on_server_unsubscribe(&mut self.link, &filter);
                    }
                }
                continue;
            }
            self.link.resync();
            if !self.link.in_flight.is_empty() {
                if let Poll::Ready(Some(done)) = self.link.in_flight.poll_next_unpin(cx) {
                    match done {
                        Done::Protocol(done) => self.protocol.on_completion(&mut self.link, done),
                        Done::Resynced(resync, read) => self.link.resynced(resync, read),
                    }
                    continue;
                }
            }
            if self.link.in_flight.len() < MAX_IN_FLIGHT {
                if let Poll::Ready(incoming) = self.socket.poll_next_unpin(cx) {
                    match incoming {
                        None => return Poll::Ready(End::ClientClosed),
                        Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                            self.keepalive.heard(true);
                            if let Some(end) = self.protocol.on_message(&mut self.link, message) {
                                return Poll::Ready(end);
                            }
                            self.keepalive.agree(self.protocol.heartbeat());
                            self.keepalive.close_at(self.link.closes_at());
                        }
                        // Pings are answered and a close is echoed by the
                        // codec; after a close the stream ends.
                        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Close(_))) => {
                            self.keepalive.heard(false);
                        }
                        Some(Err(error)) => return Poll::Ready(classify(error)),
                    }
                    continue;
                }
            }
            if let Poll::Ready(due) = self.keepalive.poll_due(cx) {
                if due.deadline {
                    return Poll::Ready(End::TokenDeadline);
                }
                if due.timed_out {
                    return Poll::Ready(End::PingTimeout);
                }
                if due.ping {
                    // A full queue has already closed the session as slow.
                    let _ = self.link.queue.push(Outbound::Ping);
                }
                if due.heartbeat {
                    self.link.send(self.protocol.heartbeat_frame());
                }
                continue;
            }
            return Poll::Pending;
        }
    }
}

/// Sends the close frame for `end` (after the protocol's own error for an
/// oversized message) and waits, up to [`CLOSE_GRACE`], for the client's
/// close reply.
async fn close<P: Protocol>(protocol: &mut P, edge: &Edge, end: End, socket: &mut WebSocket) {
    let Some(frame) = end.close_frame(edge) else {
        return;
    };
    let farewell = if end == End::TooLarge {
        protocol.too_large(edge.settings().max_message_size)
    } else {
        None
    };
    let handshake = async {
        if let Some(message) = farewell {
            socket.send(message).await?;
        }
        socket.send(Message::Close(Some(frame))).await?;
        while let Some(Ok(_)) = socket.next().await {}
        Ok::<_, axum::Error>(())
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, handshake).await;
}

/// Maps a read error to how the session ends.
fn classify(error: axum::Error) -> End {
    match error.into_inner().downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => {
            counter!(names::LIMIT_HITS, "limit" => "message_size").increment(1);
            End::TooLarge
        }
        Some(tungstenite::Error::Utf8(_)) => End::InvalidUtf8,
        // The client went away without a close handshake (closed its socket,
        // or the network dropped it): nothing to answer.
        Some(tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        ))
        | Some(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
            End::ClientGone
        }
        Some(tungstenite::Error::Io(error)) if is_disconnect(error.kind()) => End::ClientGone,
        Some(tungstenite::Error::Protocol(_)) => End::ProtocolError,
        _ => End::Io,
    }
}

fn is_disconnect(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        kind,
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
    )
}

/// Writes queued items to the socket until the queue is empty (then flushes
/// and waits) or closed and empty (then returns the reason). Cancel-safe: what
/// was taken from the queue is either staged here or in the codec's buffer.
fn pump<P: Protocol>(
    cx: &mut Context<'_>,
    socket: &mut WebSocket,
    queue: &OutboundQueue,
    writer: &mut Writer,
    protocol: &mut P,
    gates: &mut Gates,
) -> Poll<Result<CloseReason, axum::Error>> {
    let Writer {
        batch,
        staged,
        unsubscribed,
        metrics,
    } = writer;
    loop {
        if !staged.is_empty() {
            ready!(socket.poll_ready_unpin(cx))?;
            if let Some(message) = staged.pop_front() {
                socket.start_send_unpin(message)?;
            }
            continue;
        }
        match queue.poll_take(cx, batch, MAX_BATCH_ITEMS) {
            Poll::Ready(Taken::Closed(reason)) => {
                ready!(socket.poll_flush_unpin(cx))?;
                return Poll::Ready(Ok(reason));
            }
            Poll::Ready(Taken::Items) => {
                if batch
                    .iter()
                    .any(|item| matches!(item, Outbound::Unsubscribe(_)))
                {
                    batch.retain(|item| match item {
                        Outbound::Unsubscribe(filter) => {
                            unsubscribed.push(filter.clone());
                            false
                        }
                        _ => true,
                    });
                }
                if !gates.is_empty() {
                    gates.admit(batch);
                }
                if let [Outbound::Ping] = &batch[..] {
                    staged.push_back(Message::Ping(Bytes::new()));
                } else {
                    let deliveries = protocol.encode(batch, staged);
                    record_deliveries(batch, deliveries, metrics);
                }
                batch.clear();
            }
            Poll::Pending => {
                ready!(socket.poll_flush_unpin(cx))?;
                // Idle: give the buffers back.
                *batch = Vec::new();
                *staged = VecDeque::new();
                return Poll::Pending;
            }
        }
    }
}

fn record_deliveries(batch: &[Outbound], deliveries: u64, metrics: &WriterMetrics) {
    if deliveries == 0 {
        return;
    }
    metrics.delivered.increment(deliveries);
    let oldest = batch
        .iter()
        .filter_map(|item| match item {
            Outbound::Delivery(d, _) => Some(d.publication.published_at_micros),
            _ => None,
        })
        .min()
        .unwrap_or_else(unix_micros);
    let lag_micros = unix_micros().saturating_sub(oldest);
    metrics.lag.record(lag_micros as f64 / 1e6);
}
#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future a function of five arguments returns.
    fn future_size<A, B, C, D, E, F>(_: fn(A, B, C, D, E) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// An idle connection is mostly this future (plus the socket's kernel
    /// buffers and the codec's read buffer): a budget that keeps it from
    /// growing unnoticed (docs/benchmarks.md, memory per connection).
    #[test]
    fn the_state_of_an_idle_connection_stays_small() {
        let json = future_size(serve::<JsonProtocol>);
        let proto = future_size(serve::<ProtoProtocol>);
        let stomp = future_size(serve::<StompProtocol>);
        assert!(
            json <= 1024,
            "a JSON connection's future takes {json} bytes"
        );
        assert!(
            proto <= 1024,
            "a protobuf connection's future takes {proto} bytes"
        );
        assert!(
            stomp <= 1536,
            "a STOMP connection's future takes {stomp} bytes"
        );
    }
}
