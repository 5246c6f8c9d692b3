//! One WebSocket connection speaking `ferrocast.v1.json`.
//!
//! A single task serves the connection. It polls, in this order: the writer
//! (moves the outbound queue to the socket in batches, several JSON objects per
//! text frame), completed requests (backplane acknowledgements), the socket
//! (client requests), and the keep-alive timers. Requests that wait on the
//! backplane run concurrently, up to [`MAX_IN_FLIGHT`]; past that the session
//! stops reading, which pushes back on the client through TCP.

use std::collections::HashSet;
use std::future::poll_fn;
use std::pin::pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, SplitSink, SplitStream};
use futures::{FutureExt, SinkExt, StreamExt};
use metrics::{counter, gauge, histogram, Counter, Histogram};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite;

use ferrocast_core::metrics as names;
use ferrocast_core::{unix_micros, CloseReason, ConnId, Outbound, OutboundQueue, Taken};
use ferrocast_protocol::json::{
    decode_requests, encode_error, encode_ok, encode_pong, ClientRequest, ErrorCode, OkReply,
    RequestError,
};
use ferrocast_protocol::TopicFilter;

use crate::edge::{Edge, CLOSE_GRACE};

/// Most queued items written as one WebSocket frame.
const MAX_BATCH_ITEMS: usize = 64;
/// Requests of one connection that may wait on the backplane at once.
const MAX_IN_FLIGHT: usize = 256;
/// The `protocol` label of this session's metrics.
const PROTOCOL: &str = "json";

/// Close codes (docs/protocol.md).
mod code {
    pub(super) const PROTOCOL_ERROR: u16 = 1002;
    pub(super) const INVALID_DATA: u16 = 1007;
    pub(super) const TOO_BIG: u16 = 1009;
    pub(super) const SERVICE_RESTART: u16 = 1012;
    pub(super) const SLOW_CONSUMER: u16 = 4000;
    pub(super) const PING_TIMEOUT: u16 = 4001;
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Queue(CloseReason),
    ClientClosed,
    TooLarge,
    InvalidUtf8,
    ProtocolError,
    PingTimeout,
    Io,
}

impl End {
    /// The `reason` label of `ferrocast_connections_closed_total`.
    fn label(self) -> &'static str {
        match self {
            Self::Queue(CloseReason::SlowConsumer) => "slow_consumer",
            Self::Queue(CloseReason::Shutdown) => "shutdown",
            Self::ClientClosed => "normal",
            Self::TooLarge => "too_large",
            Self::InvalidUtf8 | Self::ProtocolError => "protocol_error",
            Self::PingTimeout => "ping_timeout",
            Self::Io => "error",
        }
    }

    /// The close frame the node sends, if the connection can still carry one.
    fn close_frame(self, edge: &Edge) -> Option<CloseFrame> {
        let (code, reason) = match self {
            Self::Queue(CloseReason::SlowConsumer) => (
                code::SLOW_CONSUMER,
                format!(
                    "slow consumer: more than {} bytes waiting",
                    edge.settings().outbound_queue_bytes
                ),
            ),
            Self::Queue(CloseReason::Shutdown) => (
                code::SERVICE_RESTART,
                "node draining; reconnect to another node".into(),
            ),
            Self::TooLarge => (
                code::TOO_BIG,
                format!("message over {} bytes", edge.settings().max_message_size),
            ),
            Self::InvalidUtf8 => (code::INVALID_DATA, "text frame is not valid UTF-8".into()),
            Self::ProtocolError => (code::PROTOCOL_ERROR, "WebSocket protocol error".into()),
            Self::PingTimeout => (code::PING_TIMEOUT, "no pong within the ping timeout".into()),
            Self::ClientClosed | Self::Io => return None,
        };
        Some(CloseFrame {
            code,
            reason: Utf8Bytes::from(reason),
        })
    }
}

/// What a request that waited on the backplane produced.
enum Completion {
    /// A reply to send, or nothing (a request without id that succeeded).
    Reply(Option<Bytes>),
    Error(RequestError),
    /// The backplane refused the subscription: undo it locally.
    SubscribeFailed {
        filter: TopicFilter,
        error: RequestError,
    },
}

type InFlight = FuturesUnordered<BoxFuture<'static, Completion>>;

/// Per-connection handles on the writer's metrics (resolved once, not per message).
struct WriterMetrics {
    delivered: Counter,
    lag: Histogram,
}

/// Serves one upgraded connection until it closes. `_permit` is the
/// connection's slot under `max_connections`, released on return.
pub(crate) async fn run(edge: Edge, socket: WebSocket, _permit: OwnedSemaphorePermit) {
    let queue = Arc::new(OutboundQueue::new(edge.settings().outbound_queue_bytes));
    let conn = edge.register(queue.clone());
    let connections = gauge!(names::CONNECTIONS, "protocol" => PROTOCOL);
    connections.increment(1.0);
    counter!(names::CONNECTIONS_OPENED, "protocol" => PROTOCOL).increment(1);

    let mut session = JsonSession {
        edge: edge.clone(),
        conn,
        queue,
        subscriptions: HashSet::new(),
    };
    let end = session.serve(socket).await;
    session.release();
    edge.deregister(conn);

    connections.decrement(1.0);
    counter!(names::CONNECTIONS_CLOSED, "reason" => end.label()).increment(1);
    tracing::debug!(conn, reason = end.label(), "connection closed");
}

struct JsonSession {
    edge: Edge,
    conn: ConnId,
    queue: Arc<OutboundQueue>,
    /// What this connection is subscribed to, to enforce the limit and to
    /// unsubscribe everything when it closes.
    subscriptions: HashSet<TopicFilter>,
}

impl JsonSession {
    async fn serve(&mut self, socket: WebSocket) -> End {
        let (mut sink, mut stream) = socket.split();
        let settings = self.edge.settings().clone();
        let queue = self.queue.clone();
        let writer = WriterMetrics {
            delivered: counter!(names::MESSAGES_DELIVERED),
            lag: histogram!(names::DELIVERY_LAG),
        };
        let mut batch = Vec::new();
        let mut in_flight = InFlight::new();
        let mut ping = tokio::time::interval_at(
            Instant::now() + settings.ping_interval,
            settings.ping_interval,
        );
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut pong_deadline = pin!(tokio::time::sleep(settings.pong_timeout));
        let mut awaiting_pong = false;

        let end = loop {
            tokio::select! {
                biased;
                written = poll_fn(|cx| pump(cx, &mut sink, &queue, &mut batch, &writer)) => {
                    break match written {
                        Ok(reason) => End::Queue(reason),
                        Err(_) => End::Io,
                    };
                }
                Some(done) = in_flight.next(), if !in_flight.is_empty() => self.complete(done),
                incoming = stream.next(), if in_flight.len() < MAX_IN_FLIGHT => {
                    awaiting_pong = false;
                    match incoming {
                        None => break End::ClientClosed,
                        Some(Ok(Message::Text(text))) => self.handle_text(text.into(), &mut in_flight),
                        Some(Ok(Message::Binary(_))) => self.reply_error(RequestError::new(
                            None,
                            ErrorCode::BadRequest,
                            "binary frames are not part of ferrocast.v1.json; send JSON in text frames",
                        )),
                        // Pings are answered and a close is echoed by the codec;
                        // after a close the stream ends.
                        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Close(_))) => {}
                        Some(Err(error)) => break classify(error),
                    }
                }
                _ = ping.tick() => {
                    if !awaiting_pong {
                        awaiting_pong = true;
                        pong_deadline.as_mut().reset(Instant::now() + settings.pong_timeout);
                    }
                    // A full queue has already closed the session as slow.
                    let _ = self.queue.push(Outbound::Ping);
                }
                () = &mut pong_deadline, if awaiting_pong => break End::PingTimeout,
            }
        };
        self.close(end, sink, stream).await;
        end
    }

    /// Sends the close frame for `end` (after a `too_large` error for an
    /// oversized message) and waits, up to [`CLOSE_GRACE`], for the client's
    /// close reply.
    async fn close(
        &self,
        end: End,
        mut sink: SplitSink<WebSocket, Message>,
        mut stream: SplitStream<WebSocket>,
    ) {
        let Some(frame) = end.close_frame(&self.edge) else {
            return;
        };
        let handshake = async {
            if end == End::TooLarge {
                let error = RequestError::new(
                    None,
                    ErrorCode::TooLarge,
                    format!(
                        "message over {} bytes",
                        self.edge.settings().max_message_size
                    ),
                );
                count_error(&error);
                sink.send(text_message(encode_error(&error))).await?;
            }
            sink.send(Message::Close(Some(frame))).await?;
            while let Some(Ok(_)) = stream.next().await {}
            Ok::<_, axum::Error>(())
        };
        let _ = tokio::time::timeout(CLOSE_GRACE, handshake).await;
    }

    /// Unsubscribes everything the connection held.
    fn release(&mut self) {
        let hub = self.edge.hub();
        for filter in self.subscriptions.drain() {
            hub.unsubscribe(&filter, self.conn);
        }
    }

    fn reply(&self, frame: Bytes) {
        // If the queue is closed the session is ending; the reply has nowhere to go.
        let _ = self.queue.push(Outbound::Frame(frame));
    }

    fn reply_ok(&self, reply: OkReply) {
        if reply.id.is_some() {
            self.reply(encode_ok(&reply));
        }
    }

    fn reply_error(&self, error: RequestError) {
        count_error(&error);
        self.reply(encode_error(&error));
    }

    fn handle_text(&mut self, frame: Bytes, in_flight: &mut InFlight) {
        let max_topic_length = self.edge.settings().max_topic_length;
        for request in decode_requests(&frame, max_topic_length) {
            match request {
                Ok(request) => self.handle(request, in_flight),
                Err(error) => {
                    if error.code == ErrorCode::TooLarge {
                        counter!(names::LIMIT_HITS, "limit" => "topic_length").increment(1);
                    }
                    self.reply_error(error);
                }
            }
        }
    }

    fn handle(&mut self, request: ClientRequest, in_flight: &mut InFlight) {
        match request {
            ClientRequest::Subscribe { id, filter, since } => {
                // No namespace keeps history yet, so a resume cannot recover.
                let recovered = since.map(|_| false);
                if self.subscriptions.contains(&filter) {
                    self.reply_ok(OkReply {
                        id,
                        recovered,
                        ..OkReply::default()
                    });
                    return;
                }
                let limit = self.edge.settings().max_subscriptions_per_connection;
                if self.subscriptions.len() >= limit {
                    counter!(names::LIMIT_HITS, "limit" => "subscriptions").increment(1);
                    self.reply_error(RequestError::new(
                        id,
                        ErrorCode::LimitExceeded,
                        format!("this connection already holds {limit} subscriptions, the limit"),
                    ));
                    return;
                }
                self.subscriptions.insert(filter.clone());
                let confirmed = self
                    .edge
                    .hub()
                    .subscribe(&filter, self.conn, self.queue.clone());
                in_flight.push(
                    async move {
                        match confirmed.await {
                            Ok(()) => Completion::Reply(id.map(|id| {
                                encode_ok(&OkReply {
                                    id: Some(id),
                                    recovered,
                                    ..OkReply::default()
                                })
                            })),
                            Err(error) => Completion::SubscribeFailed {
                                filter,
                                error: RequestError::new(
                                    id,
                                    ErrorCode::Unavailable,
                                    error.to_string(),
                                ),
                            },
                        }
                    }
                    .boxed(),
                );
            }
            ClientRequest::Unsubscribe { id, filter } => {
                if self.subscriptions.remove(&filter) {
                    self.edge.hub().unsubscribe(&filter, self.conn);
                }
                self.reply_ok(OkReply {
                    id,
                    ..OkReply::default()
                });
            }
            ClientRequest::Publish { id, topic, data } => {
                let accepted = self.edge.hub().publish(topic, data);
                in_flight.push(
                    async move {
                        match accepted.await {
                            Ok(()) => Completion::Reply(id.map(|id| {
                                encode_ok(&OkReply {
                                    id: Some(id),
                                    ..OkReply::default()
                                })
                            })),
                            Err(error) => Completion::Error(RequestError::new(
                                id,
                                ErrorCode::Unavailable,
                                format!("{error}; delivered to this node's subscribers only"),
                            )),
                        }
                    }
                    .boxed(),
                );
            }
            ClientRequest::Ping { id } => self.reply(encode_pong(id)),
        }
    }

    fn complete(&mut self, done: Completion) {
        match done {
            Completion::Reply(Some(frame)) => self.reply(frame),
            Completion::Reply(None) => {}
            Completion::Error(error) => self.reply_error(error),
            Completion::SubscribeFailed { filter, error } => {
                if self.subscriptions.remove(&filter) {
                    self.edge.hub().unsubscribe(&filter, self.conn);
                }
                self.reply_error(error);
            }
        }
    }
}

fn count_error(error: &RequestError) {
    counter!(names::CLIENT_ERRORS, "code" => error.code.as_str()).increment(1);
}

/// Maps a read error to how the session ends.
fn classify(error: axum::Error) -> End {
    match error.into_inner().downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => {
            counter!(names::LIMIT_HITS, "limit" => "message_size").increment(1);
            End::TooLarge
        }
        Some(tungstenite::Error::Utf8(_)) => End::InvalidUtf8,
        Some(tungstenite::Error::Protocol(_)) => End::ProtocolError,
        _ => End::Io,
    }
}

fn text_message(frame: Bytes) -> Message {
    match Utf8Bytes::try_from(frame) {
        Ok(text) => Message::Text(text),
        // Every frame is built from UTF-8 parts; this cannot happen.
        Err(_) => Message::Text(Utf8Bytes::from_static(
            r#"{"op":"error","code":"internal","message":"frame was not UTF-8"}"#,
        )),
    }
}

/// Writes queued items to the socket until the queue is empty (then flushes
/// and waits) or closed (then returns the reason). Cancel-safe: what was taken
/// from the queue is already in the codec's buffer.
fn pump(
    cx: &mut Context<'_>,
    sink: &mut SplitSink<WebSocket, Message>,
    queue: &OutboundQueue,
    batch: &mut Vec<Outbound>,
    metrics: &WriterMetrics,
) -> Poll<Result<CloseReason, axum::Error>> {
    loop {
        ready!(sink.poll_ready_unpin(cx))?;
        match queue.poll_take(cx, batch, MAX_BATCH_ITEMS) {
            Poll::Ready(Taken::Closed(reason)) => return Poll::Ready(Ok(reason)),
            Poll::Ready(Taken::Items) => {
                let message = encode_batch(batch, metrics);
                batch.clear();
                sink.start_send_unpin(message)?;
            }
            Poll::Pending => {
                ready!(sink.poll_flush_unpin(cx))?;
                return Poll::Pending;
            }
        }
    }
}

/// One WebSocket message for a batch taken from the queue: a ping alone, or
/// the JSON objects joined by `\n` in one text frame.
fn encode_batch(batch: &[Outbound], metrics: &WriterMetrics) -> Message {
    let mut deliveries = 0u64;
    let mut oldest = u64::MAX;
    let mut frames: [Option<&Bytes>; MAX_BATCH_ITEMS] = [None; MAX_BATCH_ITEMS];
    let mut len = 0;
    for (slot, item) in frames.iter_mut().zip(batch) {
        *slot = match item {
            Outbound::Ping => return Message::Ping(Bytes::new()),
            Outbound::Frame(frame) => Some(frame),
            Outbound::Delivery(delivery) => {
                deliveries += 1;
                oldest = oldest.min(delivery.publication.published_at_micros);
                Some(delivery.json_frame())
            }
        };
        len += 1;
    }
    if deliveries > 0 {
        metrics.delivered.increment(deliveries);
        let lag_micros = unix_micros().saturating_sub(oldest);
        metrics.lag.record(lag_micros as f64 / 1e6);
    }
    let frames = frames[..len].iter().flatten();
    let text = if len == 1 {
        frames.map(|f| (*f).clone()).next().unwrap_or_default()
    } else {
        let total: usize = frames.clone().map(|f| f.len() + 1).sum();
        let mut joined = BytesMut::with_capacity(total);
        for (i, frame) in frames.enumerate() {
            if i > 0 {
                joined.extend_from_slice(b"\n");
            }
            joined.extend_from_slice(frame);
        }
        joined.freeze()
    };
    text_message(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrocast_core::{Delivery, Publication};
    use ferrocast_protocol::Topic;

    fn metrics() -> WriterMetrics {
        WriterMetrics {
            delivered: Counter::noop(),
            lag: Histogram::noop(),
        }
    }

    fn delivery(payload: &'static str) -> Outbound {
        Outbound::Delivery(Delivery::new(Publication::new(
            Topic::parse("a.b", 255).unwrap(),
            Bytes::from_static(payload.as_bytes()),
            Arc::from("n1"),
        )))
    }

    #[test]
    fn batches_join_objects_with_newlines() {
        let batch = [
            Outbound::Frame(Bytes::from_static(br#"{"op":"pong"}"#)),
            delivery("1"),
            delivery("[2]"),
        ];
        let Message::Text(text) = encode_batch(&batch, &metrics()) else {
            panic!()
        };
        assert_eq!(
            text.as_str(),
            "{\"op\":\"pong\"}\n{\"op\":\"message\",\"topic\":\"a.b\",\"data\":1}\n{\"op\":\"message\",\"topic\":\"a.b\",\"data\":[2]}"
        );
        let Message::Text(single) = encode_batch(&[delivery("3")], &metrics()) else {
            panic!()
        };
        assert_eq!(
            single.as_str(),
            r#"{"op":"message","topic":"a.b","data":3}"#
        );
        assert!(matches!(
            encode_batch(&[Outbound::Ping], &metrics()),
            Message::Ping(_)
        ));
    }

    #[test]
    fn a_delivery_is_encoded_once_for_all_subscribers() {
        let Outbound::Delivery(shared) = delivery("{}") else {
            panic!()
        };
        let a = shared.json_frame().clone();
        let b = shared.json_frame().clone();
        // Same allocation, not an equal copy.
        assert_eq!(a.as_ptr(), b.as_ptr());
    }
}
