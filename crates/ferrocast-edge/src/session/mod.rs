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
mod resume;
mod stomp;

pub(crate) use json::JsonProtocol;
pub(crate) use stomp::StompProtocol;

use std::collections::{HashMap, VecDeque};
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, SplitSink, SplitStream};
use futures::{FutureExt, SinkExt, StreamExt};
use metrics::{counter, gauge, histogram, Counter, Histogram};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite;

use ferrocast_core::backplane::{BackplaneError, HistoryPage};
use ferrocast_core::metrics as names;
use ferrocast_core::{
    unix_micros, CloseReason, ConnId, Outbound, OutboundQueue, SubscribeError, Taken,
};
use ferrocast_protocol::json::StreamPosition;
use ferrocast_protocol::{Topic, TopicFilter};

use resume::{Gates, Resync};

use crate::edge::{Edge, CLOSE_GRACE};

/// Most queued items encoded in one go.
const MAX_BATCH_ITEMS: usize = 64;
/// Requests of one connection that may wait on the backplane at once.
const MAX_IN_FLIGHT: usize = 256;

/// Close codes (docs/protocol.md).
pub(crate) mod code {
    pub(crate) const NORMAL: u16 = 1000;
    pub(crate) const PROTOCOL_ERROR: u16 = 1002;
    pub(crate) const INVALID_DATA: u16 = 1007;
    pub(crate) const TOO_BIG: u16 = 1009;
    pub(crate) const INTERNAL: u16 = 1011;
    pub(crate) const SERVICE_RESTART: u16 = 1012;
    pub(crate) const SLOW_CONSUMER: u16 = 4000;
    pub(crate) const PING_TIMEOUT: u16 = 4001;
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
    /// No pong (or protocol heart-beat) in time.
    PingTimeout,
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
            Self::Queue(CloseReason::ProtocolError) | Self::InvalidUtf8 | Self::ProtocolError => {
                "protocol_error"
            }
            Self::PingTimeout => "ping_timeout",
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
            Self::PingTimeout => (code::PING_TIMEOUT, "no pong within the ping timeout".into()),
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
        let top = page.top_position();
        let (recovered, start, replay) = match since {
            Some(since) => {
                let (recovered, replay) = ferrocast_core::history::resume(&since, page);
                let outcome = if recovered {
                    "recovered"
                } else {
                    "not_recovered"
                };
                counter!(names::RESUMES, "outcome" => outcome).increment(1);
                let start = if recovered || !replay.is_empty() {
                    since
                } else {
                    top.clone()
                };
                (Some(recovered), start, replay)
            }
            None => (None, top.clone(), Vec::new()),
        };
        let mut items = Vec::with_capacity(replay.len() + 1);
        if let Some(frame) = reply(&Opened { top, recovered }) {
            items.push(Outbound::Frame(frame));
        }
        items.extend(self.gates.opened(filter, &topic, start, replay));
        self.queue.push_front(items);
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
            self.edge.hub().unsubscribe(filter, self.conn);
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

    fn release(&mut self) {
        let hub = self.edge.hub().clone();
        for (filter, _) in self.filters.drain() {
            hub.unsubscribe(&filter, self.conn);
        }
    }
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

/// What moves the queue to the socket: the queue, the batch being encoded,
/// and the encoded messages not yet handed to the socket.
struct Writer {
    queue: Arc<OutboundQueue>,
    batch: Vec<Outbound>,
    staged: VecDeque<Message>,
    metrics: WriterMetrics,
}

/// Serves one upgraded connection with `protocol` until it closes. `_permit`
/// is the connection's slot under `max_connections`, released on return.
pub(crate) async fn serve<P: Protocol>(
    edge: Edge,
    socket: WebSocket,
    _permit: OwnedSemaphorePermit,
    mut protocol: P,
) {
    let queue = Arc::new(OutboundQueue::new(edge.settings().outbound_queue_bytes));
    let conn = edge.register(queue.clone());
    let connections = gauge!(names::CONNECTIONS, "protocol" => P::LABEL);
    connections.increment(1.0);
    counter!(names::CONNECTIONS_OPENED, "protocol" => P::LABEL).increment(1);

    let mut link = Link {
        edge: edge.clone(),
        conn,
        queue,
        filters: HashMap::new(),
        gates: Gates::default(),
        in_flight: FuturesUnordered::new(),
    };
    let end = run_loop(&mut protocol, &mut link, socket).await;
    protocol.on_end(&mut link);
    link.release();
    edge.deregister(conn);

    connections.decrement(1.0);
    counter!(names::CONNECTIONS_CLOSED, "reason" => end.label()).increment(1);
    tracing::debug!(
        conn,
        protocol = P::LABEL,
        reason = end.label(),
        "connection closed"
    );
}

/// A repeating timer that may be off.
fn timer(every: Option<Duration>) -> Option<Interval> {
    every.map(|every| {
        let mut interval = tokio::time::interval_at(Instant::now() + every, every);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        interval
    })
}

async fn tick(timer: &mut Option<Interval>) {
    match timer {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn run_loop<P: Protocol>(
    protocol: &mut P,
    link: &mut Link<P::Completion>,
    socket: WebSocket,
) -> End {
    let (mut sink, mut stream) = socket.split();
    let settings = link.edge.settings().clone();
    let mut writer = Writer {
        queue: link.queue.clone(),
        batch: Vec::new(),
        staged: VecDeque::new(),
        metrics: WriterMetrics {
            delivered: counter!(names::MESSAGES_DELIVERED),
            lag: histogram!(names::DELIVERY_LAG),
        },
    };
    let mut ping = timer(Some(settings.ping_interval));
    let mut pong_deadline = pin!(tokio::time::sleep(settings.pong_timeout));
    let mut awaiting_pong = false;
    let mut heartbeat = protocol.heartbeat();
    let mut heartbeat_send = timer(heartbeat.send_every);
    let mut heartbeat_check = timer(heartbeat.expect_within);
    // Protocol heart-beats count protocol data only, not WebSocket pongs.
    let mut last_data = Instant::now();

    let end = loop {
        tokio::select! {
            biased;
            written = poll_fn(|cx| pump(cx, &mut sink, &mut writer, protocol, &mut link.gates)) => {
                break match written {
                    Ok(reason) => End::Queue(reason),
                    Err(error) => classify(error),
                };
            }
            Some(done) = link.in_flight.next(), if !link.in_flight.is_empty() => match done {
                Done::Protocol(done) => protocol.on_completion(link, done),
                Done::Resynced(resync, read) => link.resynced(resync, read),
            },
            incoming = stream.next(), if link.in_flight.len() < MAX_IN_FLIGHT => {
                awaiting_pong = false;
                match incoming {
                    None => break End::ClientClosed,
                    Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                        last_data = Instant::now();
                        if let Some(end) = protocol.on_message(link, message) {
                            break end;
                        }
                        let agreed = protocol.heartbeat();
                        if agreed != heartbeat {
                            heartbeat = agreed;
                            heartbeat_send = timer(heartbeat.send_every);
                            heartbeat_check = timer(heartbeat.expect_within);
                        }
                    }
                    // Pings are answered and a close is echoed by the codec;
                    // after a close the stream ends.
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Close(_))) => {}
                    Some(Err(error)) => break classify(error),
                }
            }
            _ = tick(&mut ping) => {
                if !awaiting_pong {
                    awaiting_pong = true;
                    pong_deadline.as_mut().reset(Instant::now() + settings.pong_timeout);
                }
                // A full queue has already closed the session as slow.
                let _ = link.queue.push(Outbound::Ping);
            }
            () = &mut pong_deadline, if awaiting_pong => break End::PingTimeout,
            _ = tick(&mut heartbeat_send) => link.send(protocol.heartbeat_frame()),
            _ = tick(&mut heartbeat_check) => {
                // The spec asks for tolerance: allow twice the agreed window.
                let window = heartbeat.expect_within.unwrap_or(Duration::MAX);
                if last_data.elapsed() > window.saturating_mul(2) {
                    break End::PingTimeout;
                }
            }
        }
        link.resync();
    };
    let edge = link.edge.clone();
    close(protocol, &edge, end, sink, stream).await;
    end
}

/// Sends the close frame for `end` (after the protocol's own error for an
/// oversized message) and waits, up to [`CLOSE_GRACE`], for the client's
/// close reply.
async fn close<P: Protocol>(
    protocol: &mut P,
    edge: &Edge,
    end: End,
    mut sink: SplitSink<WebSocket, Message>,
    mut stream: SplitStream<WebSocket>,
) {
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
            sink.send(message).await?;
        }
        sink.send(Message::Close(Some(frame))).await?;
        while let Some(Ok(_)) = stream.next().await {}
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
    sink: &mut SplitSink<WebSocket, Message>,
    writer: &mut Writer,
    protocol: &mut P,
    gates: &mut Gates,
) -> Poll<Result<CloseReason, axum::Error>> {
    let Writer {
        queue,
        batch,
        staged,
        metrics,
    } = writer;
    loop {
        if !staged.is_empty() {
            ready!(sink.poll_ready_unpin(cx))?;
            if let Some(message) = staged.pop_front() {
                sink.start_send_unpin(message)?;
            }
            continue;
        }
        match queue.poll_take(cx, batch, MAX_BATCH_ITEMS) {
            Poll::Ready(Taken::Closed(reason)) => {
                ready!(sink.poll_flush_unpin(cx))?;
                return Poll::Ready(Ok(reason));
            }
            Poll::Ready(Taken::Items) => {
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
                ready!(sink.poll_flush_unpin(cx))?;
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
