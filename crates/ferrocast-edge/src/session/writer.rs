//! The writer: moves a connection's queue to its socket in batches.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::extract::ws::Message;
use bytes::Bytes;
use futures::SinkExt;

use ferrocast_core::{CloseReason, Delivery, Outbound, Taken, WireFormat, WritePacing};
use ferrocast_protocol::TopicFilter;

use super::{text_or_binary, Protocol, Socket};
use crate::edge::DeliveryMetrics;
use crate::subscriptions::Subscriptions;

/// A message on its way to the socket.
#[derive(Debug)]
pub(crate) enum Outgoing {
    Message(Message),
    /// A delivery whose whole frame every subscriber of `format` shares: a
    /// socket that compresses sends the one compressed form made for all
    /// ([`Socket::shares_frames`]).
    Shared(Arc<Delivery>, SharedFormat),
}

/// The wire formats whose frames are the same for every subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SharedFormat {
    /// `ferrocast.v1.json`, in a text message.
    Json,
    /// `ferrocast.v1.proto`, in a binary message.
    Proto,
}

impl SharedFormat {
    pub(crate) fn wire(self) -> WireFormat {
        match self {
            Self::Json => WireFormat::Json,
            Self::Proto => WireFormat::Proto,
        }
    }

    pub(crate) fn frame(self, delivery: &Delivery) -> &Bytes {
        match self {
            Self::Json => delivery.json_frame(),
            Self::Proto => delivery.proto_frame(),
        }
    }

    pub(crate) fn is_binary(self) -> bool {
        self == Self::Proto
    }
}

impl Outgoing {
    /// As a plain message, for sockets that do not compress.
    pub(crate) fn into_message(self) -> Message {
        match self {
            Self::Message(message) => message,
            Self::Shared(delivery, SharedFormat::Json) => {
                text_or_binary(delivery.json_frame().clone())
            }
            Self::Shared(delivery, SharedFormat::Proto) => {
                Message::Binary(delivery.proto_frame().clone())
            }
        }
    }
}

/// What a protocol encodes a batch into: messages in order, and whether the
/// socket takes shared frames, in which case each delivery of a shared
/// format is best staged as its own message ([`Staged::push_shared`]) rather
/// than joined with others into one frame that only this subscriber has.
#[derive(Debug, Default)]
pub(crate) struct Staged {
    messages: VecDeque<Outgoing>,
    shares_frames: bool,
}

impl Staged {
    pub(crate) fn push_back(&mut self, message: Message) {
        self.messages.push_back(Outgoing::Message(message));
    }

    pub(crate) fn push_shared(&mut self, delivery: Arc<Delivery>, format: SharedFormat) {
        self.messages.push_back(Outgoing::Shared(delivery, format));
    }

    pub(crate) fn shares_frames(&self) -> bool {
        self.shares_frames
    }

    /// An empty stage for a socket that shares frames or not (protocol tests).
    #[cfg(test)]
    pub(crate) fn for_test(shares_frames: bool) -> Self {
        Self {
            messages: VecDeque::new(),
            shares_frames,
        }
    }

    /// What a protocol staged, in order (protocol tests).
    #[cfg(test)]
    pub(crate) fn into_messages(self) -> Vec<Outgoing> {
        self.messages.into()
    }
}

/// Most queued items encoded in one go.
pub(super) const MAX_BATCH_ITEMS: usize = 64;

/// What moves the queue to the socket: the batch being encoded and the
/// encoded messages not yet handed to the socket, which hold no memory while
/// the connection is idle, and the pacing of `--write-interval`.
pub(super) struct Writer {
    batch: Vec<Outbound>,
    staged: Staged,
    pacing: WritePacing,
    /// Filters the server API unsubscribed, taken from the queue in order
    /// with the deliveries; the session applies them after the write.
    pub(super) unsubscribed: Vec<TopicFilter>,
    metrics: DeliveryMetrics,
}

impl Writer {
    pub(super) fn new(metrics: DeliveryMetrics, pacing: WritePacing) -> Self {
        Self {
            batch: Vec::new(),
            staged: Staged::default(),
            pacing,
            unsubscribed: Vec::new(),
            metrics,
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
        pacing,
        unsubscribed,
        metrics,
    } = writer;
    loop {
        if !staged.messages.is_empty() {
            ready!(socket.poll_ready_unpin(cx))?;
            if let Some(message) = staged.messages.pop_front() {
                socket.start_send_outgoing(message)?;
            }
            continue;
        }
        let queue = subscriptions.queue();
        match queue.poll_take_paced(cx, batch, MAX_BATCH_ITEMS, pacing) {
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
                    staged.shares_frames = socket.shares_frames();
                    let deliveries = protocol.encode(batch, staged);
                    metrics.record(batch, deliveries);
                }
                batch.clear();
            }
            Poll::Pending => {
                ready!(socket.poll_flush_unpin(cx))?;
                // Idle: give the buffers back.
                *batch = Vec::new();
                staged.messages = VecDeque::new();
                return Poll::Pending;
            }
        }
    }
}
