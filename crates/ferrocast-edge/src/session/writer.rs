//! The writer: moves a connection's queue to its socket in batches.

use std::collections::VecDeque;
use std::task::{ready, Context, Poll};

use axum::extract::ws::Message;
use bytes::Bytes;
use futures::SinkExt;
use metrics::{counter, histogram, Counter, Histogram};

use ferrocast_core::metrics as names;
use ferrocast_core::{unix_micros, CloseReason, Outbound, Taken};
use ferrocast_protocol::TopicFilter;

use super::{Protocol, Socket};
use crate::subscriptions::Subscriptions;

/// Most queued items encoded in one go.
pub(super) const MAX_BATCH_ITEMS: usize = 64;

/// Per-connection handles on the writer's metrics (resolved once, not per message).
pub(super) struct WriterMetrics {
    delivered: Counter,
    lag: Histogram,
}

/// What moves the queue to the socket: the batch being encoded and the
/// encoded messages not yet handed to the socket. Both are empty, holding no
/// memory, while the connection is idle.
pub(super) struct Writer {
    batch: Vec<Outbound>,
    staged: VecDeque<Message>,
    /// Filters the server API unsubscribed, taken from the queue in order
    /// with the deliveries; the session applies them after the write.
    pub(super) unsubscribed: Vec<TopicFilter>,
    metrics: WriterMetrics,
}

impl Writer {
    pub(super) fn new() -> Self {
        Self {
            batch: Vec::new(),
            staged: VecDeque::new(),
            unsubscribed: Vec::new(),
            metrics: WriterMetrics {
                delivered: counter!(names::MESSAGES_DELIVERED),
                lag: histogram!(names::DELIVERY_LAG),
            },
        }
    }
}

/// Writes queued items to the socket until the queue is empty (then flushes
/// and waits) or closed and empty (then returns the reason). Cancel-safe: what
/// was taken from the queue is either staged here or in the codec's buffer.
pub(super) fn pump<P: Protocol, S: Socket>(
    cx: &mut Context<'_>,
    socket: &mut S,
    writer: &mut Writer,
    protocol: &mut P,
    subscriptions: &mut Subscriptions,
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
        match subscriptions.queue().poll_take(cx, batch, MAX_BATCH_ITEMS) {
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
                subscriptions.admit(batch);
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

pub(super) fn record_deliveries(batch: &[Outbound], deliveries: u64, metrics: &WriterMetrics) {
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
