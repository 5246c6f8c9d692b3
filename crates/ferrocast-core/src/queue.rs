//! The per-connection outbound queue.
//!
//! Fan-out pushes into it without ever waiting; the connection's writer drains
//! it in batches. The queue is bounded in bytes: a push that would go past the
//! bound closes the queue as a slow consumer (the connection is then closed with
//! code 4000) so that one stalled client never holds back anybody else.
//! Closing the queue is also how a node tells a connection to go away (drain,
//! disconnect from the server API).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::task::AtomicWaker;
use parking_lot::Mutex;
use tokio::time::{Instant, Sleep};

use ferrocast_protocol::TopicFilter;

use crate::publication::Delivery;

/// Identifies a connection within a node.
pub type ConnId = u64;

/// Something to write to a connection.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A reply already encoded in the connection's wire format.
    Frame(Bytes),
    /// A publication, encoded by the writer in the connection's wire format,
    /// with the subscribed filter it matched (a STOMP connection may hold
    /// several subscriptions, each needing its own MESSAGE).
    Delivery(Arc<Delivery>, TopicFilter),
    /// A transport-level keep-alive (a WebSocket ping).
    Ping,
    /// The server API ended the connection's subscription to this filter:
    /// the session drops it and tells the client.
    Unsubscribe(TopicFilter),
}

impl Outbound {
    fn size(&self) -> usize {
        match self {
            Self::Frame(b) => b.len() + 16,
            Self::Delivery(d, _) => d.queued_size(),
            Self::Ping => 16,
            Self::Unsubscribe(filter) => filter.as_str().len() + 16,
        }
    }
}

/// Why a queue, and so its connection, was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The outbound bound was exceeded: the client reads too slowly.
    SlowConsumer,
    /// The node is draining (shutdown or rolling deploy).
    Shutdown,
    /// The client asked to disconnect (e.g. STOMP DISCONNECT); what was queued
    /// (a receipt) is written first.
    ClientRequest,
    /// The client broke the protocol; the error already queued is written first.
    ProtocolError,
    /// The client exceeded a size limit; the error already queued is written first.
    TooLarge,
    /// A subscription's history could not be read to fill a gap: the client
    /// reconnects and resumes from its last position instead.
    HistoryUnavailable,
    /// The client presented no valid token where one is needed; the error
    /// already queued is written first.
    Unauthorized,
    /// The server API disconnected the client (Disconnect); it should not
    /// reconnect on its own.
    Disconnected,
    /// The client exceeded a rate limit where its protocol has no way to
    /// refuse one request and go on (STOMP: every ERROR closes); the error
    /// already queued is written first.
    RateLimited,
}

/// Why a push failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The bound was exceeded: the queue dropped `dropped` items (its backlog
    /// and the one pushed) and closed as a slow consumer.
    #[error("outbound queue overflowed; {dropped} items dropped and the connection closed as a slow consumer")]
    Overflow { dropped: usize },
    #[error("the connection is closing")]
    Closed,
}

/// What [`OutboundQueue::poll_take`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// Items were moved into the caller's buffer.
    Items,
    /// The queue is closed and empty: close the connection for this reason.
    Closed(CloseReason),
}

#[derive(Debug, Default)]
struct State {
    items: VecDeque<Outbound>,
    /// Sum of `Outbound::size` over `items`.
    bytes: usize,
    /// Set once; further pushes fail.
    closed: Option<CloseReason>,
}

/// A connection's outbound queue: many producers (fan-out, the session), one
/// consumer (the writer).
///
/// A `parking_lot::Mutex` guards the state: it is held only for a push or a
/// batch move, never across an `.await`.
#[derive(Debug)]
pub struct OutboundQueue {
    state: Mutex<State>,
    /// Woken when an item arrives or the queue closes.
    writer: AtomicWaker,
    /// The most bytes (by `Outbound::size`) that may wait in the queue.
    limit_bytes: usize,
}

impl OutboundQueue {
    pub fn new(limit_bytes: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            writer: AtomicWaker::new(),
            limit_bytes,
        }
    }

    /// Queues `item` without waiting. On overflow the queue drops what it holds
    /// and closes as [`CloseReason::SlowConsumer`].
    pub fn push(&self, item: Outbound) -> Result<(), PushError> {
        let size = item.size();
        {
            let mut state = self.state.lock();
            if state.closed.is_some() {
                return Err(PushError::Closed);
            }
            if state.bytes + size > self.limit_bytes {
                let dropped = state.items.len() + 1;
                state.items = VecDeque::new();
                state.bytes = 0;
                state.closed = Some(CloseReason::SlowConsumer);
                drop(state);
                self.writer.wake();
                return Err(PushError::Overflow { dropped });
            }
            state.bytes += size;
            state.items.push_back(item);
        }
        self.writer.wake();
        Ok(())
    }

    /// Puts `items` before everything queued, in order: a replay that must
    /// reach the client before live deliveries already waiting. It is counted
    /// in the queue's bytes but never overflows it (a replay is bounded by the
    /// history size); ignored when the queue is closed.
    pub fn push_front(&self, items: Vec<Outbound>) {
        {
            let mut state = self.state.lock();
            if state.closed.is_some() {
                return;
            }
            state.bytes += items.iter().map(Outbound::size).sum::<usize>();
            for item in items.into_iter().rev() {
                state.items.push_front(item);
            }
        }
        self.writer.wake();
    }

    /// Closes the queue for `reason`. Items already queued are still taken
    /// before [`Taken::Closed`] is returned. Has no effect if already closed.
    pub fn close(&self, reason: CloseReason) {
        let mut state = self.state.lock();
        if state.closed.is_none() {
            state.closed = Some(reason);
            drop(state);
            self.writer.wake();
        }
    }

    /// Whether the queue was closed (it may still hold items).
    pub fn is_closed(&self) -> bool {
        self.state.lock().closed.is_some()
    }

    /// Moves up to `max_items` queued items into `out`, stopping before a
    /// [`Outbound::Ping`] unless it comes first (a ping is taken alone).
    /// Pending (with the waker registered) when the queue is open and empty.
    pub fn poll_take(
        &self,
        cx: &mut Context<'_>,
        out: &mut Vec<Outbound>,
        max_items: usize,
    ) -> Poll<Taken> {
        if let Some(taken) = self.try_take(out, max_items) {
            return Poll::Ready(taken);
        }
        self.writer.register(cx.waker());
        // An item may have arrived between the check and the registration.
        match self.try_take(out, max_items) {
            Some(taken) => Poll::Ready(taken),
            None => Poll::Pending,
        }
    }

    /// [`poll_take`](Self::poll_take) paced by the writer's [`WritePacing`]:
    /// what arrives less than the pacing's interval after the writer last
    /// began taking deliveries waits for the rest of the interval, with
    /// whatever else arrives meanwhile; what arrives for a writer that took
    /// no delivery for longer is taken at once. Once it takes, the writer
    /// takes until the queue is empty. A closed queue is taken from without
    /// waiting.
    pub fn poll_take_paced(
        &self,
        cx: &mut Context<'_>,
        out: &mut Vec<Outbound>,
        max_items: usize,
        pacing: &mut WritePacing,
    ) -> Poll<Taken> {
        let Some(pacing) = &mut pacing.0 else {
            return self.poll_take(cx, out, max_items);
        };
        if let (None, false, Some(last)) = (&pacing.wait, pacing.draining, pacing.last_take) {
            let due = last + pacing.interval;
            let waiting = {
                let state = self.state.lock();
                !state.items.is_empty() && state.closed.is_none()
            };
            if waiting && due > Instant::now() {
                pacing.wait = Some(Box::pin(tokio::time::sleep_until(due)));
            }
        }
        if let Some(wait) = &mut pacing.wait {
            ready!(wait.as_mut().poll(cx));
            pacing.wait = None;
        }
        let before = out.len();
        let taken = self.poll_take(cx, out, max_items);
        match taken {
            // Only deliveries start an interval: a reply to a quiet
            // connection (a subscribe's acknowledgement) goes out without
            // holding back the delivery after it.
            Poll::Ready(Taken::Items)
                if !pacing.draining
                    && out[before..]
                        .iter()
                        .any(|item| matches!(item, Outbound::Delivery(..))) =>
            {
                pacing.last_take = Some(Instant::now());
                pacing.draining = true;
            }
            Poll::Pending => pacing.draining = false,
            Poll::Ready(_) => {}
        }
        taken
    }

    fn try_take(&self, out: &mut Vec<Outbound>, max_items: usize) -> Option<Taken> {
        let mut state = self.state.lock();
        if state.items.is_empty() {
            // Idle: an empty queue holds no memory.
            state.items = VecDeque::new();
            return state.closed.map(Taken::Closed);
        }
        let mut taken = 0;
        while taken < max_items {
            let is_ping = matches!(state.items.front(), Some(Outbound::Ping));
            if is_ping && taken > 0 {
                break;
            }
            let Some(item) = state.items.pop_front() else {
                break;
            };
            state.bytes -= item.size();
            out.push(item);
            taken += 1;
            if is_ping {
                break;
            }
        }
        Some(Taken::Items)
    }
}

/// The shortest time between two writes of deliveries to one connection
/// (`--write-interval`): a message for a connection sent a delivery less
/// than this long ago waits for the rest of it, and goes out in one write
/// with whatever else arrives meanwhile; a message for a connection that
/// was quiet longer goes at once, and a write of replies only (no
/// delivery) starts no interval. A write costs about the same whether it
/// carries one message or ten (the system call, the TCP segment and the
/// client's wake-up dominate), so a connection that gets many messages a
/// second costs the node less CPU per message, for up to the interval more
/// latency. Zero writes everything at once.
#[derive(Debug)]
pub struct WritePacing(Option<Box<Paced>>);

/// The state of a paced writer; unpaced writers hold none.
#[derive(Debug)]
struct Paced {
    interval: Duration,
    /// When the writer last began taking deliveries from the queue.
    last_take: Option<Instant>,
    /// The wait under way.
    wait: Option<Pin<Box<Sleep>>>,
    /// The writer is taking: it takes without waiting until the queue is empty.
    draining: bool,
}

impl WritePacing {
    pub fn new(interval: Duration) -> Self {
        Self((!interval.is_zero()).then(|| {
            Box::new(Paced {
                interval,
                last_take: None,
                wait: None,
                draining: false,
            })
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::task::noop_waker_ref;

    fn frame(n: usize) -> Outbound {
        Outbound::Frame(Bytes::from(vec![b'x'; n]))
    }

    fn take(q: &OutboundQueue, max: usize) -> (Poll<Taken>, Vec<Outbound>) {
        let mut out = Vec::new();
        let poll = q.poll_take(&mut Context::from_waker(noop_waker_ref()), &mut out, max);
        (poll, out)
    }

    #[test]
    fn push_front_goes_before_what_waits_and_may_exceed_the_bound() {
        let q = OutboundQueue::new(100);
        q.push(frame(40)).unwrap();
        q.push_front(vec![frame(1), frame(80)]);
        let (poll, out) = take(&q, 10);
        assert_eq!(poll, Poll::Ready(Taken::Items));
        let sizes: Vec<usize> = out
            .iter()
            .map(|item| match item {
                Outbound::Frame(b) => b.len(),
                _ => 0,
            })
            .collect();
        assert_eq!(sizes, [1, 80, 40]);
        q.close(CloseReason::Shutdown);
        q.push_front(vec![frame(1)]);
        assert_eq!(
            take(&q, 10).0,
            Poll::Ready(Taken::Closed(CloseReason::Shutdown))
        );
    }

    #[test]
    fn overflow_closes_as_slow_consumer_and_drops_the_backlog() {
        let q = OutboundQueue::new(100);
        q.push(frame(40)).unwrap();
        assert_eq!(q.push(frame(40)), Err(PushError::Overflow { dropped: 2 }));
        assert_eq!(q.push(frame(1)), Err(PushError::Closed));
        let (poll, out) = take(&q, 10);
        assert_eq!(poll, Poll::Ready(Taken::Closed(CloseReason::SlowConsumer)));
        assert!(out.is_empty());
    }

    #[test]
    fn shutdown_keeps_what_was_queued() {
        let q = OutboundQueue::new(1000);
        q.push(frame(1)).unwrap();
        q.push(frame(2)).unwrap();
        q.close(CloseReason::Shutdown);
        q.close(CloseReason::SlowConsumer);
        assert_eq!(q.push(frame(1)), Err(PushError::Closed));
        let (poll, out) = take(&q, 10);
        assert_eq!((poll, out.len()), (Poll::Ready(Taken::Items), 2));
        let (poll, _) = take(&q, 10);
        assert_eq!(poll, Poll::Ready(Taken::Closed(CloseReason::Shutdown)));
    }

    #[test]
    fn pings_are_taken_alone_and_budget_is_released() {
        let q = OutboundQueue::new(200);
        q.push(frame(50)).unwrap();
        q.push(Outbound::Ping).unwrap();
        q.push(frame(50)).unwrap();
        let (_, out) = take(&q, 10);
        assert!(matches!(&out[..], [Outbound::Frame(_)]));
        let (_, out) = take(&q, 10);
        assert!(matches!(&out[..], [Outbound::Ping]));
        let (_, out) = take(&q, 10);
        assert!(matches!(&out[..], [Outbound::Frame(_)]));
        assert_eq!(take(&q, 10).0, Poll::Pending);
        // Everything was taken, so the whole budget is free again.
        q.push(frame(150)).unwrap();
    }

    fn take_paced(q: &OutboundQueue, pacing: &mut WritePacing) -> (Poll<Taken>, Vec<Outbound>) {
        let mut out = Vec::new();
        let cx = &mut Context::from_waker(noop_waker_ref());
        let poll = q.poll_take_paced(cx, &mut out, 64, pacing);
        (poll, out)
    }

    /// A delivery of `n` on `a.b`.
    fn delivery(n: u8) -> Outbound {
        let topic = ferrocast_protocol::Topic::parse("a.b", 255).unwrap();
        let publication = crate::Publication::new(topic, Bytes::from(vec![n]), Arc::from("n"));
        let filter = TopicFilter::parse("a.b", 255).unwrap();
        Outbound::Delivery(Delivery::new(publication), filter)
    }

    #[tokio::test]
    async fn pacing_gathers_what_arrives_within_the_interval_into_one_take() {
        let q = OutboundQueue::new(10_000);
        let mut pacing = WritePacing::new(Duration::from_millis(30));
        assert_eq!(take_paced(&q, &mut pacing).0, Poll::Pending);
        // A quiet connection's first message is taken at once ...
        q.push(delivery(1)).unwrap();
        let first = Instant::now();
        assert_eq!(take_paced(&q, &mut pacing).1.len(), 1);
        assert_eq!(take_paced(&q, &mut pacing).0, Poll::Pending);
        // ... the next ones wait for the rest of the interval, together.
        q.push(delivery(2)).unwrap();
        assert_eq!(take_paced(&q, &mut pacing).0, Poll::Pending);
        q.push(delivery(3)).unwrap();
        let mut out = Vec::new();
        let taken =
            std::future::poll_fn(|cx| q.poll_take_paced(cx, &mut out, 64, &mut pacing)).await;
        assert_eq!((taken, out.len()), (Taken::Items, 2));
        assert!(first.elapsed() >= Duration::from_millis(30));
        // Until the queue is empty the writer takes without waiting.
        q.push(delivery(4)).unwrap();
        assert_eq!(take_paced(&q, &mut pacing).1.len(), 1);
        assert_eq!(take_paced(&q, &mut pacing).0, Poll::Pending);
        q.push(delivery(5)).unwrap();
        assert_eq!(take_paced(&q, &mut pacing).0, Poll::Pending);
    }

    #[tokio::test]
    async fn a_reply_starts_no_interval() {
        let q = OutboundQueue::new(10_000);
        let mut pacing = WritePacing::new(Duration::from_secs(60));
        q.push(frame(1)).unwrap();
        assert_eq!(take_paced(&q, &mut pacing).1.len(), 1);
        assert_eq!(take_paced(&q, &mut pacing).0, Poll::Pending);
        // The delivery after a reply goes at once; the next one waits.
        q.push(delivery(2)).unwrap();
        assert_eq!(take_paced(&q, &mut pacing).1.len(), 1);
        assert_eq!(take_paced(&q, &mut pacing).0, Poll::Pending);
        q.push(delivery(3)).unwrap();
        assert_eq!(take_paced(&q, &mut pacing).0, Poll::Pending);
    }

    #[tokio::test]
    async fn a_closed_queue_and_a_zero_interval_are_taken_from_at_once() {
        let q = OutboundQueue::new(10_000);
        let mut unpaced = WritePacing::new(Duration::ZERO);
        for n in 1..=2 {
            q.push(frame(n)).unwrap();
            assert_eq!(take_paced(&q, &mut unpaced).1.len(), 1);
        }
        let mut pacing = WritePacing::new(Duration::from_secs(60));
        q.push(delivery(1)).unwrap();
        assert_eq!(take_paced(&q, &mut pacing).1.len(), 1);
        assert_eq!(take_paced(&q, &mut pacing).0, Poll::Pending);
        q.push(delivery(2)).unwrap();
        q.close(CloseReason::Shutdown);
        let (poll, out) = take_paced(&q, &mut pacing);
        assert_eq!((poll, out.len()), (Poll::Ready(Taken::Items), 1));
        assert_eq!(
            take_paced(&q, &mut pacing).0,
            Poll::Ready(Taken::Closed(CloseReason::Shutdown))
        );
    }

    #[test]
    fn batches_are_bounded_by_max_items() {
        let q = OutboundQueue::new(10_000);
        for _ in 0..5 {
            q.push(frame(1)).unwrap();
        }
        assert_eq!(take(&q, 3).1.len(), 3);
        assert_eq!(take(&q, 3).1.len(), 2);
    }
}
