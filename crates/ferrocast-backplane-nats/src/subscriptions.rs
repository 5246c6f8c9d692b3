//! Interest: one NATS subscription per filter, each with its own forwarding
//! task.
//!
//! A task per filter (rather than one task polling all subscriptions) keeps
//! the code small and lets filters be added and removed without touching the
//! others: the task owns its async-nats `Subscriber`, so removing a filter is
//! cancelling its task, which unsubscribes. Order is what the guarantees need:
//! NATS delivers one subscription's messages in order, and one task forwards
//! them in that order; nothing is promised between filters. Tasks are cheap
//! (a node subscribes each filter once, however many clients use it), and
//! deliveries of different filters run in parallel.
//!
//! The map of filters is the *desired* interest. async-nats re-sends every live
//! subscription after a reconnect by itself (checked by the outage tests), so
//! a filter stays subscribed across outages without any work here; a filter
//! added while disconnected is sent when the connection is back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::{Client, Subject};
use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use ferrocast_core::backplane::{envelope, BackplaneError, PublicationSink};
use ferrocast_core::metrics as names;
use ferrocast_core::NodeId;
use ferrocast_protocol::TopicFilter;

/// How often at most a forwarding task logs undecodable messages.
const DECODE_WARN_EVERY: Duration = Duration::from_secs(10);

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
    /// the UNSUB is queued in async-nats (after everything queued before it).
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

/// What every forwarding task shares.
#[derive(Clone)]
pub(crate) struct Forwarding {
    pub(crate) client: Client,
    pub(crate) node_id: NodeId,
    pub(crate) prefix: Arc<str>,
    pub(crate) sink: Arc<dyn PublicationSink>,
    /// Longest wait for room in async-nats's command queue when unsubscribing.
    pub(crate) timeout: Duration,
}

impl Forwarding {
    pub(crate) fn subject(&self, filter_or_topic: &str) -> Subject {
        Subject::from(format!("{}.{}", self.prefix, filter_or_topic))
    }

    /// Starts the subscription of `filter`.
    pub(crate) fn spawn(&self, filter: TopicFilter) -> Entry {
        let cancel = CancellationToken::new();
        let (ready_tx, ready) = watch::channel(None);
        let task = tokio::spawn(self.clone().forward(filter, cancel.clone(), ready_tx));
        Entry {
            cancel,
            task,
            ready,
        }
    }

    async fn forward(
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
        let mut subscriber = match subscribed {
            Ok(subscriber) => subscriber,
            Err(error) => {
                tracing::error!(%filter, %error, "NATS subscribe failed");
                ready.send_replace(Some(Err(BackplaneError::Unavailable(format!(
                    "NATS subscribe failed: {error}"
                )))));
                return;
            }
        };
        ready.send_replace(Some(Ok(())));

        let received = metrics::counter!(names::BACKPLANE_RECEIVED);
        let decode_errors = metrics::counter!(names::BACKPLANE_ERRORS, "op" => "decode");
        let mut last_warning: Option<Instant> = None;
        loop {
            let message = tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    // Waits for room in async-nats's command queue, so the
                    // UNSUB keeps its place behind earlier commands. Bounded:
                    // while disconnected the queue may stay full; dropping
                    // the subscriber then still keeps async-nats from
                    // re-sending the SUB after the reconnect.
                    let _ = tokio::time::timeout(self.timeout, subscriber.unsubscribe()).await;
                    return;
                }
                message = subscriber.next() => message,
            };
            let Some(message) = message else {
                // async-nats closed the subscription (client gone).
                return;
            };
            let problem = match envelope::decode(message.payload) {
                // Second guard behind no_echo: never hand a node its own
                // publication (the hub delivered it locally already).
                Ok(publication) if *publication.origin == *self.node_id => continue,
                Ok(publication) if filter.matches(&publication.topic) => {
                    received.increment(1);
                    self.sink.deliver(&filter, publication);
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
}

/// The desired interest, by filter.
pub(crate) type Interest = HashMap<TopicFilter, Entry>;
