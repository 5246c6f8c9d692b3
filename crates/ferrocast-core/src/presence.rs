//! Keeps this node's presence entries in the backplane and announces joins
//! and leaves.
//!
//! Sessions only record that a connection joined or left a topic
//! ([`PresenceSync::join`], [`PresenceSync::leave`]); one task per node
//! writes what changed to the backplane in batches, refreshes every entry
//! every third of the ttl (so that entries of a node that died expire
//! everywhere within the ttl), and, once a batch is written, publishes the
//! join and leave events of that batch on their topics. A client that joins
//! and leaves before the task runs costs the backplane nothing and causes no
//! event.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, gauge};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use ferrocast_protocol::presence::encode_presence_event;
use ferrocast_protocol::Topic;
use ferrocast_protocol::{PresenceEntry, PresenceEvent, PRESENCE_CONTENT_TYPE};

use crate::backplane::SharedBackplane;
use crate::metrics as names;
use crate::publication::{unix_micros, NodeId, Publication};
use crate::queue::ConnId;
use crate::registry::SubscriptionRegistry;

/// Most entries written to the backplane in one call.
const BATCH: usize = 512;

/// One connection's presence on one topic.
type Key = (Topic, ConnId);

#[derive(Debug, Default)]
struct Held {
    /// What the node's connections hold now.
    entries: HashMap<Key, PresenceEntry>,
    /// Keys changed since the task last ran.
    dirty: HashSet<Key>,
}

#[derive(Debug)]
pub(crate) struct PresenceSync {
    node_id: NodeId,
    /// How long an entry lives in the backplane without a refresh.
    ttl: Duration,
    held: Mutex<Held>,
    wake: Notify,
}

impl PresenceSync {
    pub(crate) fn new(node_id: NodeId, ttl: Duration) -> Self {
        Self {
            node_id,
            ttl,
            held: Mutex::default(),
            wake: Notify::new(),
        }
    }

    /// The id of `conn` in the cluster.
    pub(crate) fn client_id(&self, conn: ConnId) -> String {
        format!("{}-{conn}", self.node_id)
    }

    /// Records that `conn` (of `user`) subscribed to `topic`.
    pub(crate) fn join(&self, topic: &Topic, conn: ConnId, user: Option<&str>) {
        let entry = PresenceEntry {
            client: self.client_id(conn),
            user: user.map(str::to_string),
            node: self.node_id.to_string(),
            joined_at: unix_micros() / 1000,
        };
        let key = (topic.clone(), conn);
        let mut held = self.held.lock();
        held.entries.insert(key.clone(), entry);
        held.dirty.insert(key);
        drop(held);
        self.wake.notify_one();
    }

    /// Records that `conn` no longer subscribes to `topic` (nothing if it
    /// was not recorded).
    pub(crate) fn leave(&self, topic: &Topic, conn: ConnId) {
        let key = (topic.clone(), conn);
        let mut held = self.held.lock();
        if held.entries.remove(&key).is_some() {
            held.dirty.insert(key);
            drop(held);
            self.wake.notify_one();
        }
    }

    /// Writes changes as they come and refreshes everything every third of
    /// the ttl, until `shutdown`.
    pub(crate) async fn run(
        self: Arc<Self>,
        registry: Arc<SubscriptionRegistry>,
        backplane: SharedBackplane,
        shutdown: CancellationToken,
    ) {
        // What the backplane was given: written entries, by key.
        let mut stored: HashMap<Key, PresenceEntry> = HashMap::new();
        let entries_gauge = gauge!(names::PRESENCE_ENTRIES);
        let every = (self.ttl / 3).max(Duration::from_millis(10));
        let mut refresh = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let refreshing = tokio::select! {
                () = self.wake.notified() => false,
                _ = refresh.tick() => true,
                () = shutdown.cancelled() => return,
            };
            let mut events = Vec::new();
            let mut remove = Vec::new();
            {
                let mut held = self.held.lock();
                let dirty: Vec<Key> = held.dirty.drain().collect();
                for key in dirty {
                    match (held.entries.get(&key), stored.contains_key(&key)) {
                        (Some(entry), false) => {
                            stored.insert(key.clone(), entry.clone());
                            events.push((PresenceEvent::Join, key.0, entry.clone()));
                        }
                        (None, true) => {
                            if let Some(entry) = stored.remove(&key) {
                                remove.push((key.0.clone(), entry.client.clone()));
                                events.push((PresenceEvent::Leave, key.0, entry));
                            }
                        }
                        // Left and joined again before this ran: the entry
                        // stays, with its new time.
                        (Some(entry), true) => {
                            stored.insert(key, entry.clone());
                        }
                        (None, false) => {}
                    }
                }
            }
            let add: Vec<(Topic, PresenceEntry)> = if refreshing {
                stored
                    .iter()
                    .map(|((topic, _), entry)| (topic.clone(), entry.clone()))
                    .collect()
            } else {
                events
                    .iter()
                    .filter(|(event, _, _)| *event == PresenceEvent::Join)
                    .map(|(_, topic, entry)| (topic.clone(), entry.clone()))
                    .collect()
            };
            entries_gauge.set(stored.len() as f64);
            if add.is_empty() && remove.is_empty() {
                continue;
            }
            if self.write(&backplane, add, remove).await {
                for (event, topic, entry) in events {
                    announce(&self.node_id, &registry, &backplane, event, topic, &entry);
                }
            }
        }
    }

    /// Writes `add` and `remove` in batches; false if any batch failed (the
    /// next refresh writes the entries again, and a lost removal expires).
    async fn write(
        &self,
        backplane: &SharedBackplane,
        mut add: Vec<(Topic, PresenceEntry)>,
        mut remove: Vec<(Topic, String)>,
    ) -> bool {
        let mut written = true;
        while !add.is_empty() || !remove.is_empty() {
            let removing = remove.split_off(remove.len().saturating_sub(BATCH));
            let adding = add.split_off(add.len().saturating_sub(BATCH - removing.len()));
            let count = adding.len() + removing.len();
            if let Err(error) = backplane.presence_update(adding, removing, self.ttl).await {
                counter!(names::BACKPLANE_ERRORS, "op" => "presence_update").increment(1);
                tracing::warn!(%error, entries = count, "backplane presence update failed");
                written = false;
            }
        }
        written
    }
}

/// Publishes a join or leave event on `topic`: to this node's subscribers
/// at once, through the backplane to the others. Never with a position.
fn announce(
    node_id: &NodeId,
    registry: &SubscriptionRegistry,
    backplane: &SharedBackplane,
    event: PresenceEvent,
    topic: Topic,
    entry: &PresenceEntry,
) {
    let payload = encode_presence_event(event, &topic, entry);
    let mut publication = Publication::new(topic, payload, node_id.clone());
    publication.content_type = Some(Arc::from(PRESENCE_CONTENT_TYPE));
    registry.deliver_local(publication.clone());
    let accepted = backplane.publish(publication, None);
    tokio::spawn(async move {
        if let Err(error) = accepted.await {
            counter!(names::BACKPLANE_ERRORS, "op" => "presence_event").increment(1);
            tracing::debug!(%error, "presence event not published");
        }
    });
}
