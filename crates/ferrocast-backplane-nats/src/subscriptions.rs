//! Interest: one NATS subscription per filter, and one task that forwards
//! what every subscription receives into the node.
//!
//! # Why one forwarding task
//! async-nats hands each subscription's messages to its own channel. With a
//! task per subscription, every message woke the task of its filter, and a
//! read from the server that carried messages of several filters woke
//! several tasks; the runtime runs the last task woken next, and puts the
//! others at the back of its queue, behind every session task the earlier
//! deliveries woke (on a node fanning out to a thousand connections, a
//! whole round of socket writes). Messages of those filters then waited a
//! round each. One task polling every subscription is woken once per read,
//! runs right after the connection's task, and forwards everything that read
//! brought, in the order of each subscription, before it yields.
//!
//! # Subscribing and unsubscribing
//! Each filter still has a small task of its own for its lifecycle, because
//! subscribing and unsubscribing wait on async-nats's command queue (which,
//! while disconnected, takes commands only when it has room) and must not
//! hold up forwarding. It sends the SUB, hands the subscriber to the
//! forwarding task and waits for its cancellation; then the forwarding task
//! stops forwarding that filter and gives the subscriber back, and the
//! filter's task sends the UNSUB. Cancelling a filter thus completes only when
//! nothing more of it will be delivered and its UNSUB is queued behind
//! everything sent before.
//!
//! Order is what the guarantees need: NATS delivers one subscription's
//! messages in order, and the forwarding task forwards them in that order;
//! nothing is promised between filters.
//!
//! The map of filters is the *desired* interest. async-nats re-sends every live
//! subscription after a reconnect by itself (checked by the outage tests), so
//! a filter stays subscribed across outages without any work here; a filter
//! added while disconnected is sent when the connection is back.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_nats::{Client, Message, Subject, Subscriber};
use futures::stream::SelectAll;
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use ferrocast_core::backplane::{envelope, BackplaneError, PublicationSink};
use ferrocast_core::metrics as names;
use ferrocast_core::NodeId;
use ferrocast_protocol::TopicFilter;

/// How often at most the forwarding task logs undecodable messages.
const DECODE_WARN_EVERY: Duration = Duration::from_secs(10);
/// Subscribers on their way to the forwarding task, at most; a filter's task
/// waits for room.
const HANDOVER_CAPACITY: usize = 1024;

/// Whether a filter's SUB has been handed to async-nats: `None` while
/// pending, then the outcome. A dropped sender without an outcome means the
/// filter was unsubscribed first.
pub(crate) type Ready = watch::Receiver<Option<Result<(), BackplaneError>>>;

/// One subscribed filter.
#[derive(Debug)]
pub(crate) struct Entry {
    cancel: CancellationToken,
    task: JoinHandle<()>,
    ready: Ready,
}

impl Entry {
    pub(crate) fn ready(&self) -> Ready {
        self.ready.clone()
    }

    /// Stops forwarding and unsubscribes; the returned handle completes once
    /// nothing more of the filter is delivered and the UNSUB is queued in
    /// async-nats (after everything queued before it).
    pub(crate) fn cancel(self) -> JoinHandle<()> {
        self.cancel.cancel();
        self.task
    }

    /// Stops the task at once (the backplane is dropped: the connection goes
    /// with it, and the server forgets every subscription).
    pub(crate) fn abort(&self) {
        self.task.abort();
    }
}

/// What the filters' tasks share.
#[derive(Clone)]
pub(crate) struct Forwarding {
    pub(crate) client: Client,
    pub(crate) prefix: Arc<str>,
    /// Hands new subscribers to the forwarding task.
    handover: mpsc::Sender<Forwarded>,
    /// Longest wait for room in async-nats's command queue when unsubscribing.
    pub(crate) timeout: Duration,
}

impl Forwarding {
    /// Starts the forwarding task; it ends when every [`Forwarding`] clone is
    /// dropped, or with `stop`.
    pub(crate) fn start(
        client: Client,
        node_id: NodeId,
        prefix: Arc<str>,
        sink: Arc<dyn PublicationSink>,
        timeout: Duration,
    ) -> (Self, JoinHandle<()>) {
        let (handover, handed) = mpsc::channel(HANDOVER_CAPACITY);
        let task = tokio::spawn(forward(handed, node_id, sink));
        (
            Self {
                client,
                prefix,
                handover,
                timeout,
            },
            task,
        )
    }

    pub(crate) fn subject(&self, filter_or_topic: &str) -> Subject {
        Subject::from(format!("{}.{}", self.prefix, filter_or_topic))
    }

    /// Starts the subscription of `filter`.
    pub(crate) fn spawn(&self, filter: TopicFilter) -> Entry {
        let cancel = CancellationToken::new();
        let (ready_tx, ready) = watch::channel(None);
        let task = tokio::spawn(self.clone().lifecycle(filter, cancel.clone(), ready_tx));
        Entry {
            cancel,
            task,
            ready,
        }
    }

    /// A filter's life: SUB, hand the subscriber to the forwarding task,
    /// wait for the cancellation, take the subscriber back, UNSUB.
    async fn lifecycle(
        self,
        filter: TopicFilter,
        cancel: CancellationToken,
        ready: watch::Sender<Option<Result<(), BackplaneError>>>,
    ) {
        let subject = self.subject(filter.as_str());
        // While disconnected async-nats takes commands only when it has room
        // for them; waiting here does not hold up the caller, who stops
        // waiting after its timeout and leaves the interest in place.
        let subscribed = tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            subscribed = self.client.subscribe(subject) => subscribed,
        };
        let subscriber = match subscribed {
            Ok(subscriber) => subscriber,
            Err(error) => {
                tracing::error!(%filter, %error, "NATS subscribe failed");
                ready.send_replace(Some(Err(BackplaneError::Unavailable(format!(
                    "NATS subscribe failed: {error}"
                )))));
                return;
            }
        };
        let (give_back, taken_back) = oneshot::channel();
        let forwarded = Forwarded {
            filter,
            subscriber: Some(subscriber),
            cancelled: Box::pin(cancel.clone().cancelled_owned()),
            give_back: Some(give_back),
        };
        if self.handover.send(forwarded).await.is_err() {
            // The forwarding task is gone: the backplane is being dropped.
            return;
        }
        ready.send_replace(Some(Ok(())));

        cancel.cancelled().await;
        // The forwarding task gives the subscriber back once it has stopped
        // forwarding it; it drops it instead when async-nats ended the
        // subscription (client gone), and then there is nothing to send.
        let Ok(mut subscriber) = taken_back.await else {
            return;
        };
        // Waits for room in async-nats's command queue, so the UNSUB keeps
        // its place behind earlier commands. Bounded: while disconnected the
        // queue may stay full; dropping the subscriber then still keeps
        // async-nats from re-sending the SUB after the reconnect.
        let _ = tokio::time::timeout(self.timeout, subscriber.unsubscribe()).await;
    }
}

/// A subscription in the forwarding task: yields its messages with its
/// filter until it is cancelled (then it gives its subscriber back and ends)
/// or async-nats ends it.
struct Forwarded {
    filter: TopicFilter,
    /// `None` once given back.
    subscriber: Option<Subscriber>,
    /// Boxed to keep the stream `Unpin`, as [`SelectAll`] needs.
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    give_back: Option<oneshot::Sender<Subscriber>>,
}

impl Stream for Forwarded {
    type Item = (TopicFilter, Message);

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        // Cancellation first: nothing of a cancelled filter is forwarded.
        if this.cancelled.as_mut().poll(cx).is_ready() {
            if let (Some(subscriber), Some(give_back)) =
                (this.subscriber.take(), this.give_back.take())
            {
                let _ = give_back.send(subscriber);
            }
            return Poll::Ready(None);
        }
        let Some(subscriber) = this.subscriber.as_mut() else {
            return Poll::Ready(None);
        };
        subscriber
            .poll_next_unpin(cx)
            .map(|message| message.map(|message| (this.filter.clone(), message)))
    }
}

/// The forwarding task: takes new subscriptions from `handed` and forwards
/// every message of every subscription to `sink`. Runs until `handed` is
/// closed and every subscription has ended.
async fn forward(
    mut handed: mpsc::Receiver<Forwarded>,
    node_id: NodeId,
    sink: Arc<dyn PublicationSink>,
) {
    let received = metrics::counter!(names::BACKPLANE_RECEIVED);
    let decode_errors = metrics::counter!(names::BACKPLANE_ERRORS, "op" => "decode");
    let mut last_warning: Option<Instant> = None;
    let mut subscriptions = SelectAll::new();
    let mut open = true;
    loop {
        let (filter, message) = tokio::select! {
            biased;
            forwarded = handed.recv(), if open => {
                match forwarded {
                    Some(forwarded) => subscriptions.push(forwarded),
                    None => open = false,
                }
                continue;
            }
            Some(next) = subscriptions.next(), if !subscriptions.is_empty() => next,
            else => return,
        };
        let problem = match envelope::decode(message.payload) {
            // Second guard behind no_echo: never hand a node its own
            // publication (the hub delivered it locally already).
            Ok(publication) if *publication.origin == *node_id => continue,
            Ok(publication) if filter.matches(&publication.topic) => {
                received.increment(1);
                sink.deliver(&filter, publication);
                continue;
            }
            Ok(publication) => format!(
                "envelope topic {:?} does not match the subscription",
                publication.topic.as_str()
            ),
            Err(error) => error.to_string(),
        };
        decode_errors.increment(1);
        if last_warning.is_none_or(|at| at.elapsed() >= DECODE_WARN_EVERY) {
            last_warning = Some(Instant::now());
            tracing::warn!(
                %filter,
                subject = %message.subject,
                %problem,
                "dropped a message from NATS that is not a ferrocast publication"
            );
        }
    }
}

/// The desired interest, by filter.
pub(crate) type Interest = HashMap<TopicFilter, Entry>;
