//! A subscriber inside the node: the publications of one filter as a
//! stream, for the server API's Subscribe, the control channel and the
//! session owners' inboxes.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt};

use crate::subscriptions::{Opened, Resynced};
use crate::{Edge, Subscriptions};
use ferrocast_core::{
    CloseReason, ConnId, Hub, Outbound, OutboundQueue, Publication, SubscribeError, Taken,
};
use ferrocast_protocol::{StreamPosition, TopicFilter};

/// Most items moved out of the queue at once.
const BATCH: usize = 256;

/// The publications of one filter on this node (and, through the backplane,
/// the cluster), as a stream. Unsubscribes when dropped.
///
/// It subscribes through the edge's [`Subscriptions`], as client sessions
/// do: for one topic of a namespace with history, publications come in
/// offset order, each once, without a hole (two nodes' publications that
/// overtake each other are put back in order, a gap is filled from history).
/// Like a client connection it has a bounded queue: a consumer that falls
/// more than the bound behind ends the stream with
/// [`CloseReason::SlowConsumer`].
pub struct Feed {
    subscriptions: Subscriptions,
    /// History reads that fill gaps, running while the stream is polled.
    resyncs: FuturesUnordered<BoxFuture<'static, Resynced>>,
    /// Items taken from the queue, not yet yielded.
    taken: Vec<Outbound>,
    ready: VecDeque<Publication>,
    /// Set once the queue closed: the stream then ends.
    closed: Option<CloseReason>,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("subscriptions", &self.subscriptions)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl Feed {
    /// Subscribes to `filter` with a queue bounded to `queue_bytes`; returns
    /// once the backplane routes the filter to this node. With `since` (one
    /// topic of a namespace with history), the stream starts with what was
    /// published after it, and the [`Opened`] says whether it reached back.
    pub async fn open(
        edge: &Edge,
        filter: TopicFilter,
        since: Option<StreamPosition>,
        queue_bytes: usize,
    ) -> Result<(Self, Option<Opened>), SubscribeError> {
        Self::open_on(
            edge.hub(),
            edge.internal_conn_id(),
            filter,
            since,
            queue_bytes,
        )
        .await
    }

    /// [`Feed::open`] on `hub` as its subscriber `conn` (an id from
    /// [`Edge::internal_conn_id`]), for parts that hold the hub rather than
    /// the edge.
    pub async fn open_on(
        hub: &Hub,
        conn: ConnId,
        filter: TopicFilter,
        since: Option<StreamPosition>,
        queue_bytes: usize,
    ) -> Result<(Self, Option<Opened>), SubscribeError> {
        let queue = Arc::new(OutboundQueue::new(queue_bytes));
        let subscriptions = Subscriptions::new(hub.clone(), conn, queue, false);
        let mut feed = Self {
            subscriptions,
            resyncs: FuturesUnordered::new(),
            taken: Vec::new(),
            ready: VecDeque::new(),
            closed: None,
        };
        // On error `feed` is dropped, which unsubscribes.
        let opening = feed.subscriptions.subscribe(&filter, since, None).await?;
        let opened = opening.map(|opening| feed.subscriptions.open(&filter, opening, |_| None));
        Ok((feed, opened))
    }

    /// Why the stream ended, once it has.
    pub fn closed(&self) -> Option<CloseReason> {
        self.closed
    }
}

impl Stream for Feed {
    type Item = Publication;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Publication>> {
        let this = &mut *self;
        loop {
            if let Some(publication) = this.ready.pop_front() {
                return Poll::Ready(Some(publication));
            }
            if this.closed.is_some() {
                return Poll::Ready(None);
            }
            if !this.resyncs.is_empty() {
                if let Poll::Ready(Some(read)) = this.resyncs.poll_next_unpin(cx) {
                    this.subscriptions.resynced(read);
                    continue;
                }
            }
            match this
                .subscriptions
                .queue()
                .poll_take(cx, &mut this.taken, BATCH)
            {
                Poll::Ready(Taken::Items) => {
                    this.subscriptions.admit(&mut this.taken);
                    this.resyncs.extend(this.subscriptions.take_resyncs());
                    this.ready
                        .extend(this.taken.drain(..).filter_map(|item| match item {
                            Outbound::Delivery(delivery, _) => Some(delivery.publication.clone()),
                            _ => None,
                        }));
                }
                Poll::Ready(Taken::Closed(reason)) => this.closed = Some(reason),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.subscriptions.release();
    }
}
