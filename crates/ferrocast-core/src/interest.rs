//! Keeps the backplane's interest in step with local subscriptions.
//!
//! Sessions only mark a filter as changed ([`InterestSync::mark`]); one task per
//! node compares what the registry wants with what the backplane has and sends
//! the difference in batches. A filter that is subscribed and unsubscribed
//! before the task runs costs the backplane nothing, and the backplane always
//! sees one node's changes to one filter in order.

use std::collections::HashSet;
use std::sync::Arc;

use metrics::{counter, gauge};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use ferrocast_protocol::TopicFilter;

use crate::backplane::SharedBackplane;
use crate::metrics as names;
use crate::registry::SubscriptionRegistry;

/// Most filters sent to the backplane in one call.
const BATCH: usize = 512;

#[derive(Debug, Default)]
pub(crate) struct InterestSync {
    /// Filters whose local subscriber set went from empty to not, or back.
    dirty: Mutex<HashSet<TopicFilter>>,
    wake: Notify,
}

impl InterestSync {
    pub(crate) fn mark(&self, filter: TopicFilter) {
        self.dirty.lock().insert(filter);
        self.wake.notify_one();
    }

    pub(crate) async fn run(
        self: Arc<Self>,
        registry: Arc<SubscriptionRegistry>,
        backplane: SharedBackplane,
        shutdown: CancellationToken,
    ) {
        let mut applied: HashSet<TopicFilter> = HashSet::new();
        let applied_gauge = gauge!(names::BACKPLANE_SUBSCRIPTIONS);
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = shutdown.cancelled() => return,
            }
            let dirty: Vec<TopicFilter> = self.dirty.lock().drain().collect();
            let mut add = Vec::new();
            let mut remove = Vec::new();
            for filter in dirty {
                match (registry.has_subscribers(&filter), applied.contains(&filter)) {
                    (true, false) => add.push(filter),
                    (false, true) => remove.push(filter),
                    (true, true) => registry.confirm(&filter, &Ok(())),
                    (false, false) => {}
                }
            }
            for chunk in remove.chunks(BATCH) {
                if let Err(error) = backplane.unsubscribe(chunk.to_vec()).await {
                    counter!(names::BACKPLANE_ERRORS, "op" => "unsubscribe").increment(1);
                    tracing::warn!(%error, filters = chunk.len(), "backplane unsubscribe failed");
                }
                for filter in chunk {
                    applied.remove(filter);
                }
            }
            for chunk in add.chunks(BATCH) {
                let result = backplane.subscribe(chunk.to_vec()).await;
                if let Err(error) = &result {
                    counter!(names::BACKPLANE_ERRORS, "op" => "subscribe").increment(1);
                    tracing::warn!(%error, filters = chunk.len(), "backplane subscribe failed");
                }
                // The backplane keeps the interest even on error and applies it
                // when it is back, so the filters count as applied either way.
                for filter in chunk {
                    applied.insert(filter.clone());
                    registry.confirm(filter, &result);
                }
            }
            applied_gauge.set(applied.len() as f64);
        }
    }
}
