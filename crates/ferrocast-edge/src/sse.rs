//! Server-Sent Events: `GET /sse?topic=…` for clients that cannot use
//! WebSocket (docs/protocol.md, "Server-Sent Events").
//!
//! A stream subscribes to up to [`MAX_TOPICS`] topics and patterns. One task
//! serves it ([`serve`]), registered with the [`Edge`] like a WebSocket
//! connection: it holds a connection slot, drain closes its
//! [`OutboundQueue`] in the same paced batches, and fan-out closes it when
//! the client reads too slowly. The task moves the queue into the response
//! body through a channel of a few chunks.
//!
//! Every event's id names, for each topic of the stream in the order of the
//! request, the last position the client got (`<epoch>:<offset>`; empty for
//! topics without history), so `Last-Event-ID` resumes all of them at once,
//! on any node: each topic opens through the same [`Subscriptions`] as a
//! WebSocket `subscribe` with `since` (no gap, no duplicate at the seam).
//! Ids are written when the writer takes an event from the queue, so they
//! never go backwards.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::poll_fn;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use metrics::{counter, gauge};
use serde::Serialize;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::time::Instant;
use tracing::Instrument;

use ferrocast_core::metrics as names;
use ferrocast_core::{CloseReason, Outbound, OutboundQueue, SubscribeError, Taken, WritePacing};
use ferrocast_protocol::{ErrorCode, StreamPosition};
use ferrocast_protocol::{Topic, TopicFilter};

use crate::admission::{self, Admission, Admitted, Caller, Refusal};
use crate::edge::{DeliveryMetrics, Edge, CLOSE_GRACE};
use crate::subscriptions::{Opening, Resynced, Subscriptions};

/// The `protocol` label of connection metrics.
const LABEL: &str = "sse";
/// Most topics and patterns in one stream (fewer when
/// `max_subscriptions_per_connection` is lower): every event id names a
/// position per topic, so the id grows with them.
const MAX_TOPICS: usize = 16;
/// The query parameter that carries the last event id, for clients that
/// cannot set the `Last-Event-ID` header.
const LAST_EVENT_ID_PARAM: &str = "lastEventId";
/// Most queued items encoded into one chunk of the body.
const MAX_BATCH_ITEMS: usize = 64;
/// Chunks that may wait between the stream's task and the connection.
const BODY_CHUNKS: usize = 4;
/// The reconnect delay hinted to clients (`retry:`) is spread over
/// `RETRY_MIN ..= RETRY_MIN + 2 s` across streams, so that the clients of a
/// node that died do not all come back at the same instant.
const RETRY_MIN: Duration = Duration::from_millis(1_000);
const KEEPALIVE: &[u8] = b": ka\n\n";

/// One topic or pattern of a stream, in the order of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Slot {
    filter: TopicFilter,
    /// The topic, when its namespace keeps history (it is then no pattern).
    kept: Option<Topic>,
    /// Where the client resumes from, from its last event id.
    since: Option<StreamPosition>,
    /// The last position written to the client; what event ids carry.
    at: Option<StreamPosition>,
}

/// `GET /sse`: admits the request as a session ([`Admission::SESSION`]; the
/// token may come as a parameter, since `EventSource` cannot set headers),
/// checks its topics, then answers with the event stream that a task of its
/// own fills.
pub(crate) async fn stream(
    State(edge): State<Edge>,
    caller: Caller,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let Admitted { identity, permit } = Admission::SESSION.admit_connection(&edge, &caller)?;
    let Query(params) = query.map_err(|rejection| Refusal::bad_request(rejection.body_text()))?;
    let slots = slots(&edge, &params, &headers)?;
    for slot in &slots {
        admission::may_subscribe_as(&edge, identity.as_ref(), &slot.filter)?;
    }
    let expires = identity.as_ref().map(|id| Instant::now() + id.remaining());
    let user = identity.map(|id| id.user);
    let (body, chunks) = mpsc::channel(BODY_CHUNKS);
    tokio::spawn(serve(edge, permit, slots, expires, user, body));
    let chunks = futures::stream::unfold(chunks, |mut chunks| async move {
        let chunk = chunks.recv().await?;
        Some((Ok::<_, Infallible>(chunk), chunks))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            // nginx buffers responses unless told not to.
            (HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(chunks),
    )
        .into_response())
}

/// The stream's topics from the query (`topic`, repeated), with where each
/// resumes from (`Last-Event-ID`, or the `lastEventId` parameter).
fn slots(
    edge: &Edge,
    params: &[(String, String)],
    headers: &HeaderMap,
) -> Result<Vec<Slot>, Refusal> {
    let settings = edge.settings();
    let topics: Vec<&str> = params
        .iter()
        .filter(|(name, _)| name == "topic")
        .map(|(_, value)| value.as_str())
        .collect();
    if topics.is_empty() {
        return Err(Refusal::bad_request(
            "name the topics to stream: /sse?topic=<topic>&topic=<topic>",
        ));
    }
    let limit = MAX_TOPICS.min(settings.max_subscriptions_per_connection);
    if topics.len() > limit {
        counter!(names::LIMIT_HITS, "limit" => "subscriptions").increment(1);
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::LimitExceeded,
            format!(
                "{} topics named; a stream carries at most {limit}",
                topics.len()
            ),
        ));
    }
    let mut slots: Vec<Slot> = Vec::with_capacity(topics.len());
    for text in topics {
        let filter = TopicFilter::parse(text, settings.max_topic_length)
            .map_err(|e| Refusal::topic(text, &e))?;
        let namespace = filter.namespace();
        if slots.iter().any(|slot| slot.filter == filter) {
            return Err(Refusal::bad_request(format!("{text:?} is named twice")));
        }
        let kept = edge.hub().namespace(namespace).history.is_some();
        if kept && filter.is_pattern() {
            return Err(Refusal::bad_request(format!(
                "{text:?} is a pattern in the namespace {namespace:?}, which keeps history; \
                 name its topics one by one so that the stream can resume each"
            )));
        }
        slots.push(Slot {
            kept: filter.as_topic().filter(|_| kept),
            filter,
            since: None,
            at: None,
        });
    }
    if let Some(id) = last_event_id(params, headers)? {
        let positions = parse_id(id, slots.len()).map_err(|e| {
            Refusal::bad_request(format!(
                "Last-Event-ID {id:?} is not one of this stream: {e}"
            ))
        })?;
        for (slot, since) in slots.iter_mut().zip(positions) {
            // Until the topic is open again, ids keep where the client is.
            slot.at = since.clone().filter(|_| slot.kept.is_some());
            slot.since = since;
        }
    }
    Ok(slots)
}

/// The id the client resumes from: the header (what `EventSource` sends when
/// it reconnects) before the query parameter (set once, by the application).
fn last_event_id<'a>(
    params: &'a [(String, String)],
    headers: &'a HeaderMap,
) -> Result<Option<&'a str>, Refusal> {
    let id = match headers.get("last-event-id") {
        Some(value) => value
            .to_str()
            .map_err(|_| Refusal::bad_request("Last-Event-ID is not ASCII"))?,
        None => params
            .iter()
            .find(|(name, _)| name == LAST_EVENT_ID_PARAM)
            .map_or("", |(_, value)| value.as_str()),
    };
    Ok(Some(id).filter(|id| !id.is_empty()))
}

/// Writes the `id:` line: per slot `<epoch>:<offset>`, or nothing before
/// its first position, joined by `,`.
fn write_id(slots: &[Slot], out: &mut BytesMut) {
    out.extend_from_slice(b"id: ");
    for (i, slot) in slots.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b",");
        }
        if let Some(at) = &slot.at {
            // Writing to memory cannot fail.
            let _ = write!(out, "{}:{}", at.epoch, at.offset);
        }
    }
    out.extend_from_slice(b"\n");
}

/// Reads an id that [`write_id`] wrote for a stream of `count` topics.
fn parse_id(id: &str, count: usize) -> Result<Vec<Option<StreamPosition>>, String> {
    let positions = id
        .split(',')
        .map(|part| {
            if part.is_empty() {
                return Ok(None);
            }
            let (epoch, offset) = part
                .split_once(':')
                .ok_or_else(|| format!("{part:?} is not <epoch>:<offset>"))?;
            let epoch_ok = epoch
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            let offset = offset.parse().ok().filter(|_| epoch_ok);
            let offset = offset.ok_or_else(|| format!("{part:?} is not <epoch>:<offset>"))?;
            Ok(Some(StreamPosition {
                epoch: epoch.into(),
                offset,
            }))
        })
        .collect::<Result<Vec<_>, String>>()?;
    if positions.len() != count {
        return Err(format!(
            "it holds {} positions for {count} topics (resume with the same topics in the same order)",
            positions.len()
        ));
    }
    Ok(positions)
}

/// The data of a `subscribed` event.
#[derive(Serialize)]
struct Subscribed<'a> {
    topic: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recovered: Option<bool>,
}

impl Subscribed<'_> {
    /// The event without its id: the writer adds the id and the blank line
    /// that ends the event.
    fn event(&self) -> Bytes {
        let mut out = b"event: subscribed\ndata: ".to_vec();
        // Serializing strings, integers and booleans cannot fail.
        out.extend_from_slice(&serde_json::to_vec(self).unwrap_or_default());
        out.push(b'\n');
        Bytes::from(out)
    }
}

/// Why a stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    /// The queue was closed: by fan-out (slow consumer), drain, or a failed
    /// history read.
    Queue(CloseReason),
    /// The client took nothing for a whole keep-alive interval while events
    /// waited.
    Stalled,
    /// A subscription could not be made; the client reconnects and resumes.
    Unsubscribed(String),
    /// The client went away.
    ClientGone,
    /// The client's token expired.
    TokenExpired,
}

impl End {
    /// The `reason` label of `ferrocast_connections_closed_total`.
    fn label(&self) -> &'static str {
        match self {
            Self::Queue(CloseReason::SlowConsumer) | Self::Stalled => "slow_consumer",
            Self::Queue(CloseReason::Shutdown) => "shutdown",
            Self::Queue(CloseReason::HistoryUnavailable) => "history_unavailable",
            Self::Queue(CloseReason::ClientRequest) => "normal",
            Self::Queue(CloseReason::ProtocolError) => "protocol_error",
            Self::Queue(CloseReason::RateLimited) => "rate_limited",
            Self::Queue(CloseReason::TooLarge) => "too_large",
            Self::Queue(CloseReason::Unauthorized) | Self::TokenExpired => "unauthorized",
            Self::Queue(CloseReason::Disconnected) => "disconnected",
            Self::Unsubscribed(_) => "error",
            Self::ClientGone => "client_gone",
        }
    }

    /// The comment that ends the stream, saying why.
    fn farewell(&self, edge: &Edge) -> Option<String> {
        let reason = match self {
            Self::Queue(CloseReason::SlowConsumer) => format!(
                "slow consumer: more than {} bytes waiting",
                edge.settings().outbound_queue_bytes
            ),
            Self::Queue(CloseReason::Shutdown) => "node draining; reconnect to another node".into(),
            Self::Queue(CloseReason::HistoryUnavailable) => {
                "history unavailable; reconnect to resume".into()
            }
            Self::TokenExpired => "token expired; reconnect with a new one".into(),
            Self::Queue(CloseReason::Disconnected) => {
                "disconnected by the server; do not reconnect".into()
            }
            Self::Queue(_) => "closed".into(),
            Self::Unsubscribed(reason) => reason.clone(),
            Self::Stalled | Self::ClientGone => return None,
        };
        // A line break would end the comment early.
        Some(format!(": {}\n\n", reason.replace(['\n', '\r'], " ")))
    }
}

/// Something that finished waiting on the backplane.
enum Read {
    /// The subscription of slot `.0` is in place; for a topic with history,
    /// its history was read.
    Opened(usize, Result<Option<Opening>, SubscribeError>),
    /// A history read that fills a gap.
    Resynced(Resynced),
}

/// The state of one stream's task.
struct Stream {
    edge: Edge,
    /// The stream's subscriptions, its id and its queue.
    subscriptions: Subscriptions,
    slots: Vec<Slot>,
    /// Whether events carry ids: only when a topic of the stream keeps history.
    ids: bool,
    reads: FuturesUnordered<BoxFuture<'static, Read>>,
    metrics: DeliveryMetrics,
    /// When the client's token expires, if it brought one.
    expires: Option<Instant>,
}

/// The response refusing a stream, counted.
/// Serves one stream until it ends; `_permit` is its connection slot.
async fn serve(
    edge: Edge,
    _permit: OwnedSemaphorePermit,
    slots: Vec<Slot>,
    expires: Option<Instant>,
    user: Option<String>,
    body: mpsc::Sender<Bytes>,
) {
    let queue = Arc::new(OutboundQueue::new(edge.settings().outbound_queue_bytes));
    let conn = edge.register(queue.clone());
    if let Some(user) = &user {
        edge.identify(conn, user);
    }
    let connections = gauge!(names::CONNECTIONS, "protocol" => LABEL);
    connections.increment(1.0);
    counter!(names::CONNECTIONS_OPENED, "protocol" => LABEL).increment(1);
    // SSE streams are not listed in presence.
    let subscriptions = Subscriptions::new(edge.hub().clone(), conn, queue, false);
    let mut stream = Stream {
        ids: slots.iter().any(|slot| slot.kept.is_some()),
        edge: edge.clone(),
        subscriptions,
        slots,
        reads: FuturesUnordered::new(),
        metrics: edge.delivery_metrics().clone(),
        expires,
    };
    stream.subscribe();
    tracing::debug!(conn, topics = stream.slots.len(), "stream opened");
    let end = stream
        .run(&body)
        .instrument(tracing::debug_span!("sse", conn))
        .await;
    if let Some(farewell) = end.farewell(&edge) {
        let _ = tokio::time::timeout(CLOSE_GRACE, body.send(Bytes::from(farewell))).await;
    }
    stream.subscriptions.release();
    edge.deregister(conn);
    connections.decrement(1.0);
    counter!(names::CONNECTIONS_CLOSED, "reason" => end.label()).increment(1);
    tracing::debug!(
        conn,
        protocol = LABEL,
        reason = end.label(),
        "stream closed"
    );
}

impl Stream {
    /// Subscribes every slot. A topic with history is gated until its
    /// history was read (from the client's position, or just its top).
    fn subscribe(&mut self) {
        for (index, slot) in self.slots.iter().enumerate() {
            let since = slot.since.clone().filter(|_| slot.kept.is_some());
            let opened = self.subscriptions.subscribe(&slot.filter, since, None);
            self.reads
                .push(async move { Read::Opened(index, opened.await) }.boxed());
        }
    }

    /// Moves the queue into the body until the stream ends. Starts with the
    /// reconnect hint; a comment keeps an idle stream open.
    async fn run(&mut self, body: &mpsc::Sender<Bytes>) -> End {
        let keepalive = self.edge.settings().sse_keepalive;
        let retry = RETRY_MIN.as_millis() as u64 + (self.subscriptions.conn() % 21) * 100;
        let mut staged = Some(Bytes::from(format!("retry: {retry}\n\n")));
        let mut idle = pin!(tokio::time::sleep(keepalive));
        let expires = self.expires;
        let mut expiry = pin!(async move {
            match expires {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        });
        let mut batch = Vec::with_capacity(MAX_BATCH_ITEMS);
        let mut pacing = WritePacing::new(self.edge.settings().write_interval);
        loop {
            tokio::select! {
                biased;
                () = body.closed() => return End::ClientGone,
                permit = body.reserve(), if staged.is_some() => {
                    let Ok(permit) = permit else {
                        return End::ClientGone;
                    };
                    if let Some(chunk) = staged.take() {
                        permit.send(chunk);
                    }
                    idle.as_mut().reset(Instant::now() + keepalive);
                }
                taken = poll_fn(|cx| {
                    let queue = self.subscriptions.queue();
                    queue.poll_take_paced(cx, &mut batch, MAX_BATCH_ITEMS, &mut pacing)
                }),
                    if staged.is_none() => match taken {
                    Taken::Items => {
                        self.subscriptions.admit(&mut batch);
                        staged = self.encode(&batch);
                        batch.clear();
                        self.resync();
                    }
                    Taken::Closed(reason) => return End::Queue(reason),
                },
                Some(read) = self.reads.next(), if !self.reads.is_empty() => {
                    if let Some(end) = self.on_read(read) {
                        return end;
                    }
                }
                () = &mut expiry => return End::TokenExpired,
                () = &mut idle => {
                    if staged.is_some() {
                        return End::Stalled;
                    }
                    staged = Some(Bytes::from_static(KEEPALIVE));
                    idle.as_mut().reset(Instant::now() + keepalive);
                }
            }
        }
    }

    /// Encodes a batch into one chunk of the body: each event with the id
    /// of the positions written so far.
    fn encode(&mut self, batch: &[Outbound]) -> Option<Bytes> {
        let mut out = BytesMut::new();
        let mut delivered = 0;
        for item in batch {
            match item {
                Outbound::Frame(event) => out.extend_from_slice(event),
                Outbound::Delivery(delivery, filter) => {
                    let publication = &delivery.publication;
                    if let Some(position) = &publication.position {
                        let slot = self
                            .slots
                            .iter_mut()
                            .find(|slot| slot.kept.is_some() && &slot.filter == filter);
                        if let Some(slot) = slot {
                            slot.at = Some(position.clone());
                        }
                    }
                    // The JSON protocol's message object, encoded once per
                    // node for every JSON and SSE subscriber.
                    out.extend_from_slice(b"data: ");
                    out.extend_from_slice(delivery.json_frame());
                    out.extend_from_slice(b"\n");
                    delivered += 1;
                }
                Outbound::Ping => continue,
                Outbound::Unsubscribe(filter) => {
                    // The server API ended this topic's subscription.
                    self.subscriptions.unsubscribe(filter);
                    out.extend_from_slice(
                        b"event: unsubscribed\ndata: {\"op\":\"unsubscribed\",\"topic\":\"",
                    );
                    out.extend_from_slice(filter.as_str().as_bytes());
                    out.extend_from_slice(b"\"}\n\n");
                    continue;
                }
            }
            if self.ids {
                write_id(&self.slots, &mut out);
            }
            out.extend_from_slice(b"\n");
        }
        self.metrics.record(batch, delivered);
        (!out.is_empty()).then(|| out.freeze())
    }

    /// Starts the history reads for the gaps the writer found.
    fn resync(&mut self) {
        for read in self.subscriptions.take_resyncs() {
            self.reads.push(read.map(Read::Resynced).boxed());
        }
    }

    fn on_read(&mut self, read: Read) -> Option<End> {
        match read {
            Read::Opened(index, Ok(opening)) => self.opened(index, opening),
            Read::Opened(index, Err(error)) => {
                let filter = self.slots[index].filter.as_str();
                return Some(End::Unsubscribed(format!(
                    "cannot subscribe to {filter}: {error}; reconnect to resume"
                )));
            }
            Read::Resynced(read) => self.subscriptions.resynced(read),
        }
        None
    }

    /// Slot `index` is subscribed: queues its `subscribed` event, then (for
    /// a topic with history) what the client missed; held deliveries follow.
    fn opened(&mut self, index: usize, opening: Option<Opening>) {
        let slot = &mut self.slots[index];
        let since = slot.since.take();
        let Some(opening) = opening else {
            let subscribed = Subscribed {
                topic: slot.filter.as_str(),
                epoch: None,
                offset: None,
                // Without history a resume cannot recover.
                recovered: since.as_ref().map(|_| false),
            };
            self.subscriptions
                .queue()
                .push_front(vec![Outbound::Frame(subscribed.event())]);
            return;
        };
        let opened = self.subscriptions.open(&slot.filter, opening, |opened| {
            let subscribed = Subscribed {
                topic: slot.filter.as_str(),
                epoch: Some(&opened.top.epoch),
                offset: Some(opened.top.offset),
                recovered: opened.recovered,
            };
            Some(subscribed.event())
        });
        // The id of the `subscribed` event, written next, carries the start.
        slot.at = Some(opened.from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(filter: &str, at: Option<(&str, u64)>) -> Slot {
        let filter = TopicFilter::parse(filter, 255).unwrap();
        Slot {
            kept: filter.as_topic(),
            filter,
            since: None,
            at: at.map(|(epoch, offset)| StreamPosition {
                epoch: epoch.into(),
                offset,
            }),
        }
    }

    fn id(slots: &[Slot]) -> String {
        let mut out = BytesMut::new();
        write_id(slots, &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn ids_name_a_position_per_topic_and_read_back() {
        let slots = [
            slot("feed.a", Some(("9f3c2a1b4d5e6f70", 41))),
            slot("news.*", None),
            slot("feed.b", Some(("", 0))),
        ];
        let line = id(&slots);
        assert_eq!(line, "id: 9f3c2a1b4d5e6f70:41,,:0\n");
        let value = line.trim_start_matches("id: ").trim_end();
        let read: Vec<Option<StreamPosition>> = slots.iter().map(|s| s.at.clone()).collect();
        assert_eq!(parse_id(value, 3), Ok(read));
        assert_eq!(parse_id("", 1), Ok(vec![None]));
    }

    #[test]
    fn foreign_ids_are_refused() {
        assert!(parse_id("e:1", 2).unwrap_err().contains("same topics"));
        for bad in ["e", "e:x", "e:-1", "e f:1", "e:1:2", "é:1"] {
            assert!(parse_id(bad, 1).is_err(), "{bad}");
        }
    }
}
