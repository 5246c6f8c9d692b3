//! The in-memory backplane: a single node with no other dependency, or several
//! nodes inside one process (all attached to the same [`MemoryBus`]).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use futures::future::{self, BoxFuture, FutureExt};
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use ferrocast_protocol::StreamPosition;
use ferrocast_protocol::{Topic, TopicFilter};

use super::{
    Backplane, BackplaneError, HistoryPage, HistoryPolicy, PresenceEntry, PublicationSink,
};
use crate::history::TopicHistory;
use crate::publication::Publication;

/// Publications with history between two sweeps of expired topic histories.
const SWEEP_EVERY: u64 = 4096;

/// Interest of one attached node.
struct Attached {
    sink: Arc<dyn PublicationSink>,
    /// Filters without wildcards, looked up by topic.
    exact: HashSet<TopicFilter>,
    /// Filters with wildcards, matched one by one.
    patterns: HashSet<TopicFilter>,
}

#[derive(Default)]
struct BusState {
    nodes: HashMap<u64, Attached>,
}

/// The histories of every topic published with a policy.
#[derive(Default)]
struct Histories {
    topics: HashMap<Topic, (HistoryPolicy, TopicHistory)>,
    appended: u64,
}

impl Histories {
    /// The topic's live history, a fresh one if it had none or it expired.
    fn live(&mut self, topic: &Topic, policy: HistoryPolicy, now: Instant) -> &mut TopicHistory {
        let (kept_policy, history) = self
            .topics
            .entry(topic.clone())
            .or_insert_with(|| (policy, TopicHistory::new(now)));
        if history.expired(policy.ttl, now) {
            *history = TopicHistory::new(now);
        }
        *kept_policy = policy;
        history
    }

    /// Drops histories that expired (bounded memory for one-off topics).
    fn sweep(&mut self, now: Instant) {
        self.topics
            .retain(|_, (policy, history)| !history.expired(policy.ttl, now));
    }
}

/// Presence updates between two sweeps of every topic's expired entries.
const PRESENCE_SWEEP_EVERY: u64 = 256;

/// Every topic's presence: client → entry and when it expires.
#[derive(Default)]
struct Presence {
    topics: HashMap<Topic, HashMap<String, (PresenceEntry, Instant)>>,
    updates: u64,
}

impl Presence {
    fn update(
        &mut self,
        add: Vec<(Topic, PresenceEntry)>,
        remove: Vec<(Topic, String)>,
        ttl: std::time::Duration,
    ) {
        let now = Instant::now();
        let expires = now + ttl;
        for (topic, client) in remove {
            if let Some(entries) = self.topics.get_mut(&topic) {
                entries.remove(&client);
                if entries.is_empty() {
                    self.topics.remove(&topic);
                }
            }
        }
        for (topic, entry) in add {
            self.topics
                .entry(topic)
                .or_default()
                .insert(entry.client.clone(), (entry, expires));
        }
        self.updates += 1;
        if self.updates.is_multiple_of(PRESENCE_SWEEP_EVERY) {
            self.topics.retain(|_, entries| {
                entries.retain(|_, (_, expires)| *expires > now);
                !entries.is_empty()
            });
        }
    }

    fn read(&self, topic: &Topic) -> Vec<PresenceEntry> {
        let now = Instant::now();
        self.topics.get(topic).map_or_else(Vec::new, |entries| {
            entries
                .values()
                .filter(|(_, expires)| *expires > now)
                .map(|(entry, _)| entry.clone())
                .collect()
        })
    }
}

/// The shared medium of in-memory backplanes. Cloning gives another handle to
/// the same bus.
#[derive(Clone, Default)]
pub struct MemoryBus {
    /// A read lock is held while a publication is handed to sinks (which never
    /// block); subscription changes take the write lock.
    state: Arc<RwLock<BusState>>,
    /// Held while a publication with history is appended and handed to sinks,
    /// so that every node sees a topic's offsets in order.
    histories: Arc<Mutex<Histories>>,
    presence: Arc<Mutex<Presence>>,
    next_id: Arc<AtomicU64>,
}

impl fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBus")
            .field("nodes", &self.state.read().nodes.len())
            .finish()
    }
}

impl MemoryBus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Attaches a node whose deliveries go to `sink`. The node detaches when the
    /// returned backplane is dropped.
    pub fn attach(&self, sink: Arc<dyn PublicationSink>) -> MemoryBackplane {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.state.write().nodes.insert(
            id,
            Attached {
                sink,
                exact: HashSet::new(),
                patterns: HashSet::new(),
            },
        );
        let (health, _) = watch::channel(true);
        MemoryBackplane {
            bus: self.clone(),
            id,
            health,
        }
    }

    fn publish_with_history(
        &self,
        origin: u64,
        publication: Publication,
        policy: HistoryPolicy,
    ) -> StreamPosition {
        let now = Instant::now();
        let mut histories = self.histories.lock();
        histories.appended += 1;
        if histories.appended.is_multiple_of(SWEEP_EVERY) {
            histories.sweep(now);
        }
        let (positioned, position) =
            histories
                .live(&publication.topic, policy, now)
                .append(publication, policy, now);
        self.publish(origin, &positioned);
        position
    }

    fn history(&self, topic: &Topic, policy: HistoryPolicy, after: u64) -> HistoryPage {
        let now = Instant::now();
        let mut histories = self.histories.lock();
        match histories.topics.get_mut(topic) {
            Some((_, history)) if !history.expired(policy.ttl, now) => {
                history.page(policy, after, now)
            }
            _ => HistoryPage::empty(),
        }
    }

    fn publish(&self, origin: u64, publication: &Publication) {
        let state = self.state.read();
        let as_filter = TopicFilter::from(publication.topic.clone());
        let others = state.nodes.iter().filter(|(id, _)| **id != origin);
        for (_, node) in others {
            if let Some(filter) = node.exact.get(&as_filter) {
                node.sink.deliver(filter, publication.clone());
            }
            for pattern in &node.patterns {
                if pattern.matches(&publication.topic) {
                    node.sink.deliver(pattern, publication.clone());
                }
            }
        }
    }
}

/// One node's handle on a [`MemoryBus`].
pub struct MemoryBackplane {
    bus: MemoryBus,
    id: u64,
    /// Always up: there is nothing to lose contact with.
    health: watch::Sender<bool>,
}

impl fmt::Debug for MemoryBackplane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBackplane")
            .field("id", &self.id)
            .finish()
    }
}

impl Drop for MemoryBackplane {
    fn drop(&mut self) {
        self.bus.state.write().nodes.remove(&self.id);
    }
}

impl MemoryBackplane {
    fn change_interest(&self, filters: Vec<TopicFilter>, add: bool) {
        let mut state = self.bus.state.write();
        let Some(node) = state.nodes.get_mut(&self.id) else {
            return;
        };
        for filter in filters {
            let set = if filter.is_pattern() {
                &mut node.patterns
            } else {
                &mut node.exact
            };
            if add {
                set.insert(filter);
            } else {
                set.remove(&filter);
            }
        }
    }
}

impl Backplane for MemoryBackplane {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn publish(
        &self,
        publication: Publication,
        history: Option<HistoryPolicy>,
    ) -> BoxFuture<'static, Result<Option<StreamPosition>, BackplaneError>> {
        let position = match history {
            Some(policy) => Some(self.bus.publish_with_history(self.id, publication, policy)),
            None => {
                self.bus.publish(self.id, &publication);
                None
            }
        };
        future::ready(Ok(position)).boxed()
    }

    fn history(
        &self,
        topic: &Topic,
        policy: HistoryPolicy,
        after: u64,
    ) -> BoxFuture<'static, Result<HistoryPage, BackplaneError>> {
        future::ready(Ok(self.bus.history(topic, policy, after))).boxed()
    }

    fn subscribe(
        &self,
        filters: Vec<TopicFilter>,
    ) -> BoxFuture<'static, Result<(), BackplaneError>> {
        self.change_interest(filters, true);
        future::ready(Ok(())).boxed()
    }

    fn unsubscribe(
        &self,
        filters: Vec<TopicFilter>,
    ) -> BoxFuture<'static, Result<(), BackplaneError>> {
        self.change_interest(filters, false);
        future::ready(Ok(())).boxed()
    }

    fn health(&self) -> watch::Receiver<bool> {
        self.health.subscribe()
    }

    fn presence_update(
        &self,
        add: Vec<(Topic, PresenceEntry)>,
        remove: Vec<(Topic, String)>,
        ttl: std::time::Duration,
    ) -> BoxFuture<'static, Result<(), BackplaneError>> {
        self.bus.presence.lock().update(add, remove, ttl);
        future::ready(Ok(())).boxed()
    }

    fn presence(
        &self,
        topic: &Topic,
    ) -> BoxFuture<'static, Result<Vec<PresenceEntry>, BackplaneError>> {
        future::ready(Ok(self.bus.presence.lock().read(topic))).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backplane::conformance::Attach;

    /// One bus per test; nothing to keep alive besides it.
    fn bus() -> ((), Attach) {
        let bus = MemoryBus::new();
        let attach: Attach = Box::new(move |_id, sink| {
            let backplane = Arc::new(bus.attach(sink)) as Arc<dyn Backplane>;
            future::ready(backplane).boxed()
        });
        ((), attach)
    }

    crate::backplane_conformance_tests!(bus());
}
