//! The subscriptions of one subscriber: the one component every kind of
//! session uses to subscribe, resume and receive without gap or duplicate.
//!
//! A subscriber is anything with an [`OutboundQueue`] in the hub: a WebSocket
//! session (JSON, protobuf, STOMP), an SSE stream, a Subscribe call of the
//! server API, and any session kind added later. Each owns one
//! [`Subscriptions`] and drives it; none repeats its lifecycle:
//!
//! 1. [`Subscriptions::subscribe`] registers the filter in the hub (the first
//!    use of a filter; later uses only count) and, for one topic of a
//!    namespace with history, closes its gate: deliveries are held from then
//!    on. The returned future completes once the backplane routes the filter
//!    to this node, and (with history) once the topic's history after the
//!    client's `since` (or just its top) was read: an [`Opening`].
//! 2. [`Subscriptions::open`] puts the owner's reply, what the client missed
//!    and what was held at the front of the queue, in offset order, and opens
//!    the gate.
//! 3. The owner's writer passes every batch it takes from the queue through
//!    [`Subscriptions::admit`]: duplicates are dropped, and a gap (live
//!    delivery is at most once, and two nodes' publications may overtake each
//!    other) holds the topic and asks for a history read.
//! 4. The owner runs the reads of [`Subscriptions::take_resyncs`] alongside
//!    its other work and hands each result to [`Subscriptions::resynced`],
//!    which fills the gap at the front of the queue (or closes the queue with
//!    [`CloseReason::HistoryUnavailable`] when history cannot be read: the
//!    client resumes elsewhere).
//! 5. [`Subscriptions::unsubscribe`] drops one use; [`Subscriptions::release`]
//!    drops all when the subscriber ends.
//!
//! # Guarantees
//! For a subscription to one topic of a namespace with history, whatever the
//! backplane and however many nodes publish: the subscriber receives the
//! topic's publications in offset order, each once, from its `since` (or the
//! top at subscribe time) on, without a hole, except a hole that the history
//! no longer keeps, which is crossed rather than asked for again. A
//! subscriber that resumes learns whether nothing was missed
//! ([`Opened::recovered`]). For patterns and namespaces without history,
//! delivery is live and at most once, in the order the node receives it.
//! The tests below check each guarantee against a real hub (memory
//! backplane); `crates/ferrocast-server/tests/` checks them across nodes on
//! Redis and NATS.

mod gate;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;

use ferrocast_core::backplane::{BackplaneError, HistoryPage};
use ferrocast_core::{CloseReason, ConnId, Hub, Outbound, OutboundQueue, SubscribeError};
use ferrocast_protocol::{StreamPosition, Topic, TopicFilter};

use gate::{Gates, Resync, Start};

/// A subscription in a namespace with history, once the backplane routes it
/// here and its history was read: what [`Subscriptions::open`] needs.
#[derive(Debug)]
pub struct Opening {
    topic: Topic,
    since: Option<StreamPosition>,
    page: HistoryPage,
}

/// Where a subscription starts, for the owner's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The newest position in the topic's history.
    pub top: StreamPosition,
    /// For a subscription that resumed from a position: whether nothing was
    /// missed.
    pub recovered: Option<bool>,
    /// The position the subscriber is at once what it missed is replayed
    /// (what an SSE event id names).
    pub from: StreamPosition,
}

/// A history read that fills a gap, finished: for [`Subscriptions::resynced`].
#[derive(Debug)]
pub struct Resynced {
    resync: Resync,
    read: Result<HistoryPage, BackplaneError>,
}

/// The subscriptions of one subscriber, and the gates of those in namespaces
/// with history (see the module documentation).
#[derive(Debug)]
pub struct Subscriptions {
    hub: Hub,
    /// The subscriber's id in the hub.
    conn: ConnId,
    /// Where the hub delivers, and where replies and replays are put.
    queue: Arc<OutboundQueue>,
    /// Filter → how many uses of it the owner holds (several STOMP
    /// subscriptions may share a filter); the hub sees one subscription.
    filters: FilterUses,
    /// Allocated at the first subscription in a namespace with history, so
    /// that a subscriber without one stays small.
    gates: Option<Box<Gates>>,
    /// Whether subscriptions to one topic join the topic's presence (client
    /// sessions do; SSE streams and server API feeds do not).
    joins_presence: bool,
}

impl Subscriptions {
    /// The subscriptions of subscriber `conn`, delivered to `queue`.
    pub fn new(hub: Hub, conn: ConnId, queue: Arc<OutboundQueue>, joins_presence: bool) -> Self {
        Self {
            hub,
            conn,
            queue,
            filters: FilterUses::default(),
            gates: None,
            joins_presence,
        }
    }

    /// The subscriber's id in the hub.
    pub fn conn(&self) -> ConnId {
        self.conn
    }

    /// The subscriber's queue.
    pub fn queue(&self) -> &Arc<OutboundQueue> {
        &self.queue
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Adds one use of `filter`. The first use subscribes in the hub (and
    /// joins presence as `user`); the future completes when the backplane
    /// routes the filter here.
    ///
    /// In a namespace with history, a first use of one topic (not a pattern)
    /// then reads the topic's history, after `since` if given, and yields an
    /// [`Opening`]; until it is passed to [`Subscriptions::open`] the
    /// subscription's deliveries are held back. A pattern, a namespace
    /// without history, or a filter already in use yields `None`.
    ///
    /// On `Err` the owner calls [`Subscriptions::unsubscribe`] to undo it.
    pub fn subscribe(
        &mut self,
        filter: &TopicFilter,
        since: Option<StreamPosition>,
        user: Option<&str>,
    ) -> BoxFuture<'static, Result<Option<Opening>, SubscribeError>> {
        let uses = self.filters.add(filter);
        if uses > 1 {
            return futures::future::ready(Ok(None)).boxed();
        }
        let hub = self.hub.clone();
        let kept = hub.namespace(filter.namespace()).history.is_some();
        let topic = filter.as_topic().filter(|_| kept);
        if kept {
            self.gates
                .get_or_insert_with(Box::default)
                .open(filter, topic.is_some());
        }
        let confirmed = hub.subscribe(filter, self.conn, self.queue.clone());
        if self.joins_presence {
            if let Some(topic) = filter.as_topic() {
                hub.join(&topic, self.conn, user);
            }
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
    /// `reply` (the owner's answer, given where the subscription starts),
    /// then what the subscriber missed, then the deliveries held meanwhile.
    /// Returns where it starts.
    pub fn open(
        &mut self,
        filter: &TopicFilter,
        opening: Opening,
        reply: impl FnOnce(&Opened) -> Option<Bytes>,
    ) -> Opened {
        let Opening { topic, since, page } = opening;
        let start = Start::of(since, page);
        let opened = Opened {
            top: start.top,
            recovered: start.recovered,
            from: start.from.clone(),
        };
        let mut items = Vec::with_capacity(start.replay.len() + 1);
        if let Some(frame) = reply(&opened) {
            items.push(Outbound::Frame(frame));
        }
        if let Some(gates) = &mut self.gates {
            items.extend(gates.opened(filter, &topic, start.from, start.replay));
        }
        self.queue.push_front(items);
        opened
    }

    /// Filters a batch the owner took from the queue, in place: drops
    /// duplicates, holds back what waits for history, and notes the gaps to
    /// fill ([`Subscriptions::take_resyncs`]).
    pub fn admit(&mut self, batch: &mut Vec<Outbound>) {
        if let Some(gates) = self.gates.as_mut().filter(|gates| !gates.is_empty()) {
            gates.admit(batch);
        }
    }

    /// The history reads that the gaps found so far call for, each asked for
    /// once; the owner runs them and hands each result to
    /// [`Subscriptions::resynced`].
    pub fn take_resyncs(&mut self) -> impl Iterator<Item = BoxFuture<'static, Resynced>> + '_ {
        let hub = &self.hub;
        let resyncs = self.gates.as_mut().map(|gates| gates.take_resyncs());
        resyncs.into_iter().flatten().map(move |resync| {
            let read = hub.history(&resync.topic, resync.after);
            async move {
                Resynced {
                    read: read.await,
                    resync,
                }
            }
            .boxed()
        })
    }

    /// A history read for a gap finished: puts what it fills at the front of
    /// the queue, or closes the queue when the read failed (the subscriber
    /// resumes elsewhere, from its last position).
    pub fn resynced(&mut self, resynced: Resynced) {
        let Resynced { resync, read } = resynced;
        match read {
            Ok(page) => {
                if let Some(gates) = &mut self.gates {
                    let items = gates.resynced(&resync, page.epoch, page.publications);
                    self.queue.push_front(items);
                }
            }
            Err(error) => {
                tracing::warn!(conn = self.conn, %error, "cannot read history to fill a gap; closing");
                self.queue.close(CloseReason::HistoryUnavailable);
            }
        }
    }

    /// Whether `filter` is in use.
    pub fn holds(&self, filter: &TopicFilter) -> bool {
        self.filters.contains(filter)
    }

    /// How many distinct filters are in use.
    pub fn len(&self) -> usize {
        self.filters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// Removes one use of `filter`; the last one unsubscribes in the hub and
    /// leaves presence. Returns whether that was the last use.
    pub fn unsubscribe(&mut self, filter: &TopicFilter) -> bool {
        if self.filters.remove(filter) != Some(0) {
            return false;
        }
        if let Some(gates) = &mut self.gates {
            gates.close(filter);
        }
        self.leave(filter);
        true
    }

    /// Drops every subscription (the subscriber ends).
    pub fn release(&mut self) {
        for (filter, _) in std::mem::take(&mut self.filters).0 {
            if let Some(gates) = &mut self.gates {
                gates.close(&filter);
            }
            self.leave(&filter);
        }
    }

    fn leave(&self, filter: &TopicFilter) {
        self.hub.unsubscribe(filter, self.conn);
        if self.joins_presence {
            if let Some(topic) = filter.as_topic() {
                self.hub.leave(&topic, self.conn);
            }
        }
    }
}

/// The filters a subscriber uses and how often each: a list, not a hash
/// map, because nearly every connection holds a few (a map's smallest table
/// is four slots, ~200 bytes, for one filter) and the list grows one slot at
/// a time while short. Bounded by `--max-subscriptions-per-connection`.
#[derive(Debug, Default)]
struct FilterUses(Vec<(TopicFilter, usize)>);

impl FilterUses {
    fn contains(&self, filter: &TopicFilter) -> bool {
        self.0.iter().any(|(f, _)| f == filter)
    }

    /// One more use of `filter`; returns how many there are now.
    fn add(&mut self, filter: &TopicFilter) -> usize {
        if let Some((_, uses)) = self.0.iter_mut().find(|(f, _)| f == filter) {
            *uses += 1;
            return *uses;
        }
        if self.0.len() == self.0.capacity() {
            self.0.reserve_exact(self.0.len().clamp(1, 64));
        }
        self.0.push((filter.clone(), 1));
        1
    }

    /// One use less of `filter`: how many are left (the filter is gone at
    /// 0), or `None` if it was not in use.
    fn remove(&mut self, filter: &TopicFilter) -> Option<usize> {
        let at = self.0.iter().position(|(f, _)| f == filter)?;
        self.0[at].1 -= 1;
        let left = self.0[at].1;
        if left == 0 {
            self.0.swap_remove(at);
            if self.0.is_empty() {
                self.0 = Vec::new();
            }
        }
        Some(left)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
