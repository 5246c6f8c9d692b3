//! The in-memory backplane: a single node with no other dependency, or several
//! nodes inside one process (all attached to the same [`MemoryBus`]).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::future::{self, BoxFuture, FutureExt};
use parking_lot::RwLock;
use tokio::sync::watch;

use ferrocast_protocol::TopicFilter;

use super::{Backplane, BackplaneError, PublicationSink};
use crate::publication::Publication;

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

/// The shared medium of in-memory backplanes. Cloning gives another handle to
/// the same bus.
#[derive(Clone, Default)]
pub struct MemoryBus {
    /// A read lock is held while a publication is handed to sinks (which never
    /// block); subscription changes take the write lock.
    state: Arc<RwLock<BusState>>,
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

    fn publish(&self, publication: Publication) -> BoxFuture<'static, Result<(), BackplaneError>> {
        self.bus.publish(self.id, &publication);
        future::ready(Ok(())).boxed()
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backplane::conformance;

    #[tokio::test]
    async fn memory_backplane_conforms() {
        let bus = MemoryBus::new();
        conformance::run(|_id, sink| {
            let bus = bus.clone();
            async move { Arc::new(bus.attach(sink)) as Arc<dyn Backplane> }
        })
        .await;
    }
}
