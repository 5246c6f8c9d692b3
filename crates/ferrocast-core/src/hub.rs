use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use metrics::{counter, histogram, Counter, Histogram};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use ferrocast_protocol::{Topic, TopicFilter};

use crate::backplane::{BackplaneError, SharedBackplane};
use crate::interest::InterestSync;
use crate::metrics as names;
use crate::publication::{NodeId, Publication};
use crate::queue::{ConnId, OutboundQueue};
use crate::registry::SubscriptionRegistry;

/// Why a subscription could not be confirmed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    #[error(transparent)]
    Backplane(#[from] BackplaneError),
    #[error("the node is shutting down")]
    ShuttingDown,
}

/// What sessions use to subscribe, unsubscribe and publish. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

#[derive(Debug)]
struct HubInner {
    node_id: NodeId,
    registry: Arc<SubscriptionRegistry>,
    backplane: SharedBackplane,
    interest: Arc<InterestSync>,
    published: Counter,
    publish_duration: Histogram,
}

impl Hub {
    /// Builds the hub over `registry`, which must be the sink `backplane`
    /// delivers to, and starts the task that keeps backplane interest in step
    /// (it stops on `shutdown`).
    pub fn start(
        node_id: NodeId,
        registry: Arc<SubscriptionRegistry>,
        backplane: SharedBackplane,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let interest = Arc::new(InterestSync::default());
        tasks.spawn(
            interest
                .clone()
                .run(registry.clone(), backplane.clone(), shutdown),
        );
        Self {
            inner: Arc::new(HubInner {
                node_id,
                registry,
                backplane,
                interest,
                published: counter!(names::MESSAGES_PUBLISHED),
                publish_duration: histogram!(names::BACKPLANE_PUBLISH_DURATION),
            }),
        }
    }

    pub fn node_id(&self) -> &NodeId {
        &self.inner.node_id
    }

    /// Whether the backplane is reachable; sees every change.
    pub fn backplane_health(&self) -> watch::Receiver<bool> {
        self.inner.backplane.health()
    }

    pub fn backplane_kind(&self) -> &'static str {
        self.inner.backplane.kind()
    }

    /// Subscribes `conn` (writing to `queue`) to `filter`. The subscription is
    /// in place when this returns; the future completes when the backplane also
    /// routes the filter to this node, so that nothing published after it
    /// completes is missed.
    pub fn subscribe(
        &self,
        filter: &TopicFilter,
        conn: ConnId,
        queue: Arc<OutboundQueue>,
    ) -> impl Future<Output = Result<(), SubscribeError>> + Send + 'static {
        let added = self.inner.registry.add(filter, conn, queue);
        if added.first {
            self.inner.interest.mark(filter.clone());
        }
        async move {
            match added.confirmation {
                None => Ok(()),
                Some(rx) => match rx.await {
                    Ok(result) => result.map_err(SubscribeError::from),
                    Err(_) => Err(SubscribeError::ShuttingDown),
                },
            }
        }
    }

    /// Removes the subscription of `conn` to `filter`, if any.
    pub fn unsubscribe(&self, filter: &TopicFilter, conn: ConnId) {
        if self.inner.registry.remove(filter, conn) {
            self.inner.interest.mark(filter.clone());
        }
    }

    /// Publishes `payload` (JSON text) on `topic`. The publication is handed to
    /// the backplane before this returns, so publish calls keep their order; the
    /// future completes when the backplane accepted it.
    pub fn publish(
        &self,
        topic: Topic,
        payload: Bytes,
    ) -> impl Future<Output = Result<(), BackplaneError>> + Send + 'static {
        let started = Instant::now();
        let publication = Publication::new(topic, payload, self.inner.node_id.clone());
        let accepted = self.inner.backplane.publish(publication);
        let inner = self.inner.clone();
        async move {
            let result = accepted.await;
            inner
                .publish_duration
                .record(started.elapsed().as_secs_f64());
            match &result {
                Ok(()) => inner.published.increment(1),
                Err(_) => counter!(names::BACKPLANE_ERRORS, "op" => "publish").increment(1),
            }
            result
        }
    }
}
