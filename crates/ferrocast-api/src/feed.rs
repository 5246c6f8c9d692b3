//! A subscriber inside the node: the publications of one filter as a
//! stream, for the gRPC Subscribe call and the control channel.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;

use ferrocast_core::{
    CloseReason, ConnId, Hub, Outbound, OutboundQueue, Publication, SubscribeError, Taken,
};
use ferrocast_edge::Edge;
use ferrocast_protocol::TopicFilter;

/// Most items moved out of the queue at once.
const BATCH: usize = 256;

/// The publications of one filter on this node (and, through the backplane,
/// the cluster), as a stream. Unsubscribes when dropped.
///
/// Like a client connection it has a bounded queue: a consumer that falls
/// more than the bound behind ends the stream with
/// [`CloseReason::SlowConsumer`].
#[derive(Debug)]
pub(crate) struct Feed {
    hub: Hub,
    filter: TopicFilter,
    /// The feed's id in the subscription registry, unique on the node.
    conn: ConnId,
    queue: Arc<OutboundQueue>,
    /// Items taken from the queue, not yet yielded.
    taken: Vec<Outbound>,
    ready: VecDeque<Publication>,
    /// Set once the queue closed: the stream then ends.
    closed: Option<CloseReason>,
}

impl Feed {
    /// Subscribes to `filter` with a queue bounded to `queue_bytes`; returns
    /// once the backplane routes the filter to this node.
    pub(crate) async fn open(
        edge: &Edge,
        filter: TopicFilter,
        queue_bytes: usize,
    ) -> Result<Self, SubscribeError> {
        let hub = edge.hub().clone();
        let conn = edge.internal_conn_id();
        let queue = Arc::new(OutboundQueue::new(queue_bytes));
        let feed = Self {
            hub: hub.clone(),
            filter: filter.clone(),
            conn,
            queue: queue.clone(),
            taken: Vec::new(),
            ready: VecDeque::new(),
            closed: None,
        };
        // On error `feed` is dropped, which unsubscribes.
        hub.subscribe(&filter, conn, queue).await?;
        Ok(feed)
    }

    /// Why the stream ended, once it has.
    pub(crate) fn closed(&self) -> Option<CloseReason> {
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
            match this.queue.poll_take(cx, &mut this.taken, BATCH) {
                Poll::Ready(Taken::Items) => {
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
        self.hub.unsubscribe(&self.filter, self.conn);
    }
}
