//! The receive path: push messages of the pub/sub connection, handled on the
//! connection's reader as they are parsed.
//!
//! Running here (instead of behind a channel) keeps memory bounded: while the
//! sink is busy, the reader does not read, and TCP pushes back on Redis. The
//! sink never blocks (it only queues), so the reader is never held up long.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use metrics::Counter;
use redis::aio::{AsyncPushSender, SendError};
use redis::{PushInfo, PushKind, Value};
use tokio::sync::Notify;

use ferrocast_core::backplane::envelope;
use ferrocast_core::metrics::{BACKPLANE_ERRORS, BACKPLANE_RECEIVED};
use ferrocast_protocol::TopicFilter;

use crate::Shared;

/// At most one warning about undecodable messages per this interval; the
/// others are logged at debug level (all are counted).
const DECODE_WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Tells a connection's task that the connection is gone. Each connection
/// gets its own, so a late notice from an old connection cannot end a new one.
#[derive(Debug, Default)]
pub(crate) struct LostSignal(Notify);

impl LostSignal {
    pub(crate) fn notify(&self) {
        // A stored permit: the task sees it even if it is busy right now.
        self.0.notify_one();
    }

    pub(crate) async fn lost(&self) {
        self.0.notified().await;
    }
}

/// The push handler of the publisher connection: it only listens for the
/// connection's end.
pub(crate) struct PublisherPushes {
    pub(crate) lost: Arc<LostSignal>,
}

impl AsyncPushSender for PublisherPushes {
    fn send(&self, info: PushInfo) -> Result<(), SendError> {
        if info.kind == PushKind::Disconnection {
            self.lost.notify();
        }
        Ok(())
    }
}

/// The push handler of the pub/sub connection: decodes messages and hands
/// them to the sink.
pub(crate) struct SubscriberPushes {
    shared: Arc<Shared>,
    lost: Arc<LostSignal>,
    received: Counter,
    decode_errors: Counter,
    /// When the last decode warning was logged, in ms since `started`.
    last_warning: AtomicU64,
    started: Instant,
}

impl SubscriberPushes {
    pub(crate) fn new(shared: Arc<Shared>, lost: Arc<LostSignal>) -> Self {
        Self {
            shared,
            lost,
            received: metrics::counter!(BACKPLANE_RECEIVED),
            decode_errors: metrics::counter!(BACKPLANE_ERRORS, "op" => "decode"),
            last_warning: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    /// A message on an exact channel: `[channel, payload]`.
    fn on_message(&self, data: Vec<Value>) {
        let mut data = data.into_iter();
        let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
            (data.next(), data.next())
        else {
            return self.undecodable("a message push without channel and payload");
        };
        let Ok(channel) = std::str::from_utf8(&channel) else {
            return self.undecodable("a channel name that is not UTF-8");
        };
        // A message that raced an unsubscribe is not delivered: the node no
        // longer wants it.
        let Some(filter) = self.shared.interest.exact(channel) else {
            return;
        };
        self.deliver(std::slice::from_ref(&filter), payload);
    }

    /// A message matched by a pattern: `[pattern, channel, payload]`.
    fn on_pattern_message(&self, data: Vec<Value>) {
        let mut data = data.into_iter();
        let (Some(Value::BulkString(pattern)), Some(_channel), Some(Value::BulkString(payload))) =
            (data.next(), data.next(), data.next())
        else {
            return self.undecodable("a pmessage push without pattern, channel and payload");
        };
        let Ok(pattern) = std::str::from_utf8(&pattern) else {
            return self.undecodable("a pattern that is not UTF-8");
        };
        let Some(filters) = self.shared.interest.patterns(pattern) else {
            return;
        };
        self.deliver(&filters, payload);
    }

    /// A sharded channel was unsubscribed: `[channel, count]`. When the node
    /// still wants it, the server did it, because the channel's slot moved
    /// to another master (a resharding, or this master became a replica):
    /// the connection is given up, and the next one subscribes every channel
    /// on the master that now serves its slot. (An unsubscribe this node
    /// sent concerns a channel it no longer wants.)
    fn on_shard_unsubscribed(&self, data: &[Value]) {
        let Some(Value::BulkString(channel)) = data.first() else {
            return;
        };
        let Ok(channel) = std::str::from_utf8(channel) else {
            return;
        };
        if self.shared.interest.exact(channel).is_some() {
            tracing::info!(
                url = %self.shared.connector.redacted_url(),
                channel,
                "redis moved a subscribed channel's slot; subscribing again where it is now"
            );
            self.lost.notify();
        }
    }

    /// Decodes `payload` and delivers it once per filter in `filters` that
    /// matches its topic.
    fn deliver(&self, filters: &[TopicFilter], payload: Vec<u8>) {
        let publication = match envelope::decode(Bytes::from(payload)) {
            Ok(publication) => publication,
            Err(e) => return self.undecodable(&e.to_string()),
        };
        // Redis echoes this node's own publications; the hub delivered them.
        if publication.origin == self.shared.node_id {
            return;
        }
        let mut matching = filters
            .iter()
            .filter(|f| f.matches(&publication.topic))
            .peekable();
        let Some(mut filter) = matching.next() else {
            // The channel and the envelope disagree (or the glob matched more
            // than the filter does, which is expected and not an error).
            if filters.iter().all(|f| !f.is_pattern()) {
                self.undecodable("the envelope's topic differs from its channel");
            }
            return;
        };
        self.received.increment(1);
        // Clone for every filter but the last, which takes the publication.
        loop {
            match matching.next() {
                Some(next) => {
                    self.shared.sink.deliver(filter, publication.clone());
                    filter = next;
                }
                None => {
                    self.shared.sink.deliver(filter, publication);
                    return;
                }
            }
        }
    }

    fn undecodable(&self, reason: &str) {
        self.decode_errors.increment(1);
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.last_warning.load(Ordering::Relaxed);
        let interval = u64::try_from(DECODE_WARN_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        if (last == 0 || now.saturating_sub(last) >= interval)
            && self
                .last_warning
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                url = %self.shared.connector.redacted_url(),
                reason,
                "dropped an undecodable message from redis (further ones for 10 s at debug level)"
            );
        } else {
            tracing::debug!(reason, "dropped an undecodable message from redis");
        }
    }
}

impl AsyncPushSender for SubscriberPushes {
    fn send(&self, info: PushInfo) -> Result<(), SendError> {
        match info.kind {
            PushKind::Message | PushKind::SMessage => self.on_message(info.data),
            PushKind::PMessage => self.on_pattern_message(info.data),
            PushKind::Disconnection => self.lost.notify(),
            PushKind::SUnsubscribe => self.on_shard_unsubscribed(&info.data),
            // Subscription confirmations (their replies complete the
            // subscribe commands) and anything else.
            _ => {}
        }
        Ok(())
    }
}
