use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use metrics::{counter, gauge, Counter, Gauge};
use parking_lot::RwLock;
use tokio::sync::oneshot;

use ferrocast_protocol::TopicFilter;

use crate::backplane::{BackplaneError, PublicationSink};
use crate::metrics as names;
use crate::namespace::is_reserved;
use crate::pattern_index::PatternIndex;
use crate::publication::{Delivery, Publication};
use crate::queue::{ConnId, Outbound, OutboundQueue, PushError};

/// Shards of the registry: enough that fan-out on one filter rarely waits for a
/// subscribe on another.
const SHARDS: usize = 64;

/// Whether the backplane routes a filter to this node yet.
#[derive(Debug)]
enum BackplaneInterest {
    Confirmed,
    /// Subscribers that wait for the backplane to confirm.
    Pending(Vec<oneshot::Sender<Result<(), BackplaneError>>>),
}

#[derive(Debug)]
struct FilterEntry {
    subscribers: HashMap<ConnId, Arc<OutboundQueue>>,
    backplane: BackplaneInterest,
}

/// What [`SubscriptionRegistry::add`] did.
#[derive(Debug)]
pub(crate) struct Added {
    /// The filter had no local subscriber before: the backplane must learn of it.
    pub(crate) first: bool,
    /// Resolves when the backplane routes the filter here; `None` if it already does.
    pub(crate) confirmation: Option<oneshot::Receiver<Result<(), BackplaneError>>>,
}

/// The node's local subscriptions: for each filter, the queues of the
/// connections subscribed to it, in 64 shards, plus an index of the wildcard
/// filters among them.
///
/// It is the [`PublicationSink`] of the backplane: a delivery is fanned out to
/// the queues of the filter it came with, without waiting on any of them.
/// Publications of this node's own clients go through
/// [`SubscriptionRegistry::deliver_local`] instead.
///
/// Lock order: a shard, then `patterns`; never the other way round.
#[derive(Debug)]
pub struct SubscriptionRegistry {
    shards: Box<[RwLock<HashMap<TopicFilter, FilterEntry>>]>,
    /// The wildcard filters that have local subscribers.
    patterns: RwLock<PatternIndex>,
    hasher: RandomState,
    metrics: RegistryMetrics,
}

#[derive(Debug)]
struct RegistryMetrics {
    subscriptions: Gauge,
    topics: Gauge,
    /// The values of the two gauges, readable (for the server API's Info).
    subscription_count: AtomicU64,
    topic_count: AtomicU64,
    dropped_slow: Counter,
    /// Deliveries to a connection already closing (after overflow or drain).
    dropped_closing: Counter,
}

impl RegistryMetrics {
    /// Adds `delta` to the subscription gauge and count, unless `filter` is
    /// in a reserved namespace (the node's own subscriptions are not clients').
    fn count_subscription(&self, filter: &TopicFilter, delta: i64) {
        if !is_reserved(filter.namespace()) {
            self.subscriptions.increment(delta as f64);
            self.subscription_count
                .fetch_add(delta as u64, Ordering::Relaxed);
        }
    }

    /// The same for the topic gauge and count.
    fn count_topic(&self, filter: &TopicFilter, delta: i64) {
        if !is_reserved(filter.namespace()) {
            self.topics.increment(delta as f64);
            self.topic_count.fetch_add(delta as u64, Ordering::Relaxed);
        }
    }
}

impl Default for SubscriptionRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl SubscriptionRegistry {
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            patterns: RwLock::new(PatternIndex::default()),
            hasher: RandomState::new(),
            metrics: RegistryMetrics {
                subscriptions: gauge!(names::SUBSCRIPTIONS),
                topics: gauge!(names::TOPICS),
                subscription_count: AtomicU64::new(0),
                topic_count: AtomicU64::new(0),
                dropped_slow: counter!(names::MESSAGES_DROPPED, "reason" => "slow_consumer"),
                dropped_closing: counter!(names::MESSAGES_DROPPED, "reason" => "closing"),
            },
        }
    }

    /// Local subscriptions (connection × filter) and distinct filters.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.metrics.subscription_count.load(Ordering::Relaxed),
            self.metrics.topic_count.load(Ordering::Relaxed),
        )
    }

    fn shard(&self, filter: &TopicFilter) -> &RwLock<HashMap<TopicFilter, FilterEntry>> {
        let index = self.hasher.hash_one(filter) as usize % SHARDS;
        &self.shards[index]
    }

    /// Subscribes `conn` to `filter`. Subscribing twice is harmless.
    pub(crate) fn add(
        &self,
        filter: &TopicFilter,
        conn: ConnId,
        queue: Arc<OutboundQueue>,
    ) -> Added {
        let mut shard = self.shard(filter).write();
        let entry = match shard.entry(filter.clone()) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                self.metrics.count_topic(filter, 1);
                if filter.is_pattern() {
                    self.patterns.write().insert(filter);
                }
                e.insert(FilterEntry {
                    subscribers: HashMap::new(),
                    backplane: BackplaneInterest::Pending(Vec::new()),
                })
            }
        };
        let first = entry.subscribers.is_empty();
        if entry.subscribers.insert(conn, queue).is_none() {
            self.metrics.count_subscription(filter, 1);
        }
        let confirmation = match &mut entry.backplane {
            BackplaneInterest::Confirmed => None,
            BackplaneInterest::Pending(waiters) => {
                let (tx, rx) = oneshot::channel();
                waiters.push(tx);
                Some(rx)
            }
        };
        Added {
            first,
            confirmation,
        }
    }

    /// Whether `conn` is subscribed to `filter`.
    pub(crate) fn holds(&self, filter: &TopicFilter, conn: ConnId) -> bool {
        self.shard(filter)
            .read()
            .get(filter)
            .is_some_and(|entry| entry.subscribers.contains_key(&conn))
    }

    /// Unsubscribes `conn` from `filter`. True when that was the last local
    /// subscriber (the backplane interest can go).
    pub(crate) fn remove(&self, filter: &TopicFilter, conn: ConnId) -> bool {
        let mut shard = self.shard(filter).write();
        let Some(entry) = shard.get_mut(filter) else {
            return false;
        };
        if entry.subscribers.remove(&conn).is_none() {
            return false;
        }
        self.metrics.count_subscription(filter, -1);
        if entry.subscribers.is_empty() {
            shard.remove(filter);
            if filter.is_pattern() {
                self.patterns.write().remove(filter);
            }
            self.metrics.count_topic(filter, -1);
            return true;
        }
        false
    }

    pub(crate) fn has_subscribers(&self, filter: &TopicFilter) -> bool {
        self.shard(filter).read().contains_key(filter)
    }

    /// Records the backplane's answer for `filter` and tells whoever waits.
    pub(crate) fn confirm(&self, filter: &TopicFilter, result: &Result<(), BackplaneError>) {
        let waiters = {
            let mut shard = self.shard(filter).write();
            let Some(entry) = shard.get_mut(filter) else {
                return;
            };
            match &mut entry.backplane {
                BackplaneInterest::Confirmed => return,
                BackplaneInterest::Pending(waiters) => {
                    let waiters = std::mem::take(waiters);
                    if result.is_ok() {
                        entry.backplane = BackplaneInterest::Confirmed;
                    }
                    waiters
                }
            }
        };
        for waiter in waiters {
            let _ = waiter.send(result.clone());
        }
    }

    /// Delivers a publication of this node's own clients to every local
    /// subscription that matches its topic, wildcards included. One
    /// [`Delivery`] is shared by all of them.
    /// Returns how many local subscriptions it reached (queued for).
    pub(crate) fn deliver_local(&self, publication: Publication) -> usize {
        let mut filters = Vec::new();
        {
            let patterns = self.patterns.read();
            if patterns.len() > 0 {
                patterns.matches(&publication.topic, &mut filters);
            }
        }
        filters.push(TopicFilter::from(publication.topic.clone()));
        let delivery = Delivery::new(publication);
        filters
            .iter()
            .map(|filter| self.fan_out(filter, &delivery))
            .sum()
    }

    /// Queues `delivery` for every subscriber of `filter`; returns how many
    /// queues took it.
    fn fan_out(&self, filter: &TopicFilter, delivery: &Arc<Delivery>) -> usize {
        let shard = self.shard(filter).read();
        let Some(entry) = shard.get(filter) else {
            return 0;
        };
        let mut queued = 0;
        for queue in entry.subscribers.values() {
            match queue.push(Outbound::Delivery(delivery.clone(), filter.clone())) {
                Ok(()) => queued += 1,
                Err(PushError::Overflow { dropped }) => {
                    self.metrics.dropped_slow.increment(dropped as u64);
                }
                Err(PushError::Closed) => self.metrics.dropped_closing.increment(1),
            }
        }
        queued
    }
}

impl PublicationSink for SubscriptionRegistry {
    fn deliver(&self, filter: &TopicFilter, publication: Publication) {
        self.fan_out(filter, &Delivery::new(publication));
    }
}
