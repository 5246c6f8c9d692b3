use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{counter, gauge, histogram, Counter, Histogram};
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use ferrocast_core::metrics as names;
use ferrocast_core::{unix_micros, CloseReason, ConnId, Hub, Outbound, OutboundQueue};
use ferrocast_protocol::TopicFilter;

use crate::auth::Authenticator;
use crate::owner::Owners;
use crate::rate::{AddressRates, Limited, RateLimited};
use crate::settings::EdgeSettings;

/// Time a closing connection gets to deliver its close frame.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Pause between two batches of closes while draining.
const DRAIN_BATCH_INTERVAL: Duration = Duration::from_millis(100);

/// Whom a server API operation (disconnect, unsubscribe) acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every connection of this user.
    User(String),
    /// One connection, by its client id in the cluster (`<node id>-<conn>`).
    Client(String),
}

#[derive(Debug, Default)]
struct OpenConnections {
    /// The queue of every open connection, and its user once known.
    by_conn: HashMap<ConnId, (Arc<OutboundQueue>, Option<Arc<str>>)>,
    /// The open connections of each user.
    by_user: HashMap<Arc<str>, Vec<ConnId>>,
}

/// The node's edge state, shared by every connection. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Edge {
    inner: Arc<EdgeInner>,
}

#[derive(Debug)]
struct EdgeInner {
    hub: Hub,
    settings: EdgeSettings,
    auth: Authenticator,
    /// One permit per open connection, taken before the upgrade; when every
    /// permit is back, every connection is gone.
    connections: Arc<Semaphore>,
    /// Every open connection, so that drain and the server API find them.
    open: Mutex<OpenConnections>,
    next_conn: AtomicU64,
    /// Cancelled when draining starts: `/readyz` fails and upgrades are refused.
    draining: CancellationToken,
    /// Connection attempts per client address, when that limit is on.
    addresses: Option<AddressRates>,
    /// Owner routing of sessions that live across HTTP requests, started
    /// by the first such session (its inbox costs nothing before).
    owners: OnceLock<Owners>,
    /// Handles on the metrics every session's writer records, resolved once
    /// for the node rather than once per connection (each resolution
    /// allocates).
    delivery_metrics: DeliveryMetrics,
}

/// What the writers of sessions and streams count: deliveries, the batches
/// they are written in, and their lag from the publication's acceptance to
/// the write.
#[derive(Debug, Clone)]
pub(crate) struct DeliveryMetrics {
    delivered: Counter,
    batches: Counter,
    lag: Histogram,
}

impl DeliveryMetrics {
    /// Records a batch taken from a connection's queue that held
    /// `deliveries` deliveries, about to be written in one go.
    pub(crate) fn record(&self, batch: &[Outbound], deliveries: u64) {
        if deliveries == 0 {
            return;
        }
        self.delivered.increment(deliveries);
        self.batches.increment(1);
        let oldest = batch
            .iter()
            .filter_map(|item| match item {
                Outbound::Delivery(d, _) => Some(d.publication.published_at_micros),
                _ => None,
            })
            .min()
            .unwrap_or_else(unix_micros);
        let lag_micros = unix_micros().saturating_sub(oldest);
        self.lag.record(lag_micros as f64 / 1e6);
    }
}

impl Edge {
    /// An edge that serves everyone without a token.
    pub fn new(hub: Hub, settings: EdgeSettings) -> Self {
        Self::with_auth(hub, settings, Authenticator::anonymous())
    }

    /// An edge that checks client tokens with `auth`.
    pub fn with_auth(hub: Hub, settings: EdgeSettings, auth: Authenticator) -> Self {
        Self {
            inner: Arc::new(EdgeInner {
                hub,
                auth,
                connections: Arc::new(Semaphore::new(settings.max_connections)),
                addresses: AddressRates::new(&settings),
                settings,
                open: Mutex::new(OpenConnections::default()),
                next_conn: AtomicU64::new(1),
                draining: CancellationToken::new(),
                owners: OnceLock::new(),
                delivery_metrics: DeliveryMetrics {
                    delivered: counter!(names::MESSAGES_DELIVERED),
                    batches: counter!(names::DELIVERY_BATCHES),
                    lag: histogram!(names::DELIVERY_LAG),
                },
            }),
        }
    }

    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    pub(crate) fn delivery_metrics(&self) -> &DeliveryMetrics {
        &self.inner.delivery_metrics
    }

    pub fn settings(&self) -> &EdgeSettings {
        &self.inner.settings
    }

    /// Verifies client tokens.
    pub fn auth(&self) -> &Authenticator {
        &self.inner.auth
    }

    /// Cancelled once draining starts.
    pub fn draining(&self) -> &CancellationToken {
        &self.inner.draining
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.is_cancelled()
    }

    /// A connection slot, or `None` when the node is at `max_connections`.
    pub(crate) fn try_admit(&self) -> Option<OwnedSemaphorePermit> {
        self.inner.connections.clone().try_acquire_owned().ok()
    }

    /// Counts a connection attempt or an HTTP publish (`kind`) of the client
    /// at `addr` against the per-address limit; `Err` over it. Always `Ok`
    /// when the limit is off or the address unknown.
    pub(crate) fn admit_address(
        &self,
        addr: Option<IpAddr>,
        kind: Limited,
    ) -> Result<(), RateLimited> {
        match (&self.inner.addresses, addr) {
            (Some(rates), Some(addr)) => rates.admit(addr, kind),
            _ => Ok(()),
        }
    }

    /// A number unique among this node's sessions (names STOMP sessions).
    pub(crate) fn next_session_number(&self) -> u64 {
        self.inner.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn register(&self, queue: Arc<OutboundQueue>) -> ConnId {
        let id = self.inner.next_conn.fetch_add(1, Ordering::Relaxed);
        if self.is_draining() {
            queue.close(CloseReason::Shutdown);
        }
        self.inner.open.lock().by_conn.insert(id, (queue, None));
        id
    }

    /// Records that connection `id` belongs to `user`.
    pub(crate) fn identify(&self, id: ConnId, user: &str) {
        let mut open = self.inner.open.lock();
        let open = &mut *open;
        let Some((_, slot)) = open.by_conn.get_mut(&id) else {
            return;
        };
        if slot.is_some() {
            return;
        }
        let user: Arc<str> = Arc::from(user);
        open.by_user.entry(user.clone()).or_default().push(id);
        *slot = Some(user);
    }

    pub(crate) fn deregister(&self, id: ConnId) {
        let mut open = self.inner.open.lock();
        if let Some((_, Some(user))) = open.by_conn.remove(&id) {
            if let Some(conns) = open.by_user.get_mut(&user) {
                conns.retain(|&c| c != id);
                if conns.is_empty() {
                    open.by_user.remove(&user);
                }
            }
        }
    }

    /// This node's end of owner routing (`crate::owner`), started on first
    /// use, inside the runtime; it runs as long as the process.
    pub fn owners(&self) -> &Owners {
        self.inner.owners.get_or_init(|| {
            Owners::start(
                self.inner.hub.clone(),
                self.internal_conn_id(),
                CancellationToken::new(),
            )
        })
    }

    /// A connection id for a subscriber inside the node (the server API's
    /// streams and control channel), unique among this node's connections.
    pub fn internal_conn_id(&self) -> ConnId {
        self.inner.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// The queues of this node's connections that `target` names (those
    /// already closing excepted).
    fn targets(&self, target: &Target) -> Vec<(ConnId, Arc<OutboundQueue>)> {
        let open = self.inner.open.lock();
        let found: Vec<(ConnId, Arc<OutboundQueue>)> = match target {
            Target::User(user) => open
                .by_user
                .get(user.as_str())
                .into_iter()
                .flatten()
                .filter_map(|id| open.by_conn.get(id).map(|(q, _)| (*id, q.clone())))
                .collect(),
            Target::Client(client) => client
                .rsplit_once('-')
                .filter(|(node, _)| *node == &**self.hub().node_id())
                .and_then(|(_, conn)| conn.parse::<ConnId>().ok())
                .and_then(|id| open.by_conn.get(&id).map(|(q, _)| (id, q.clone())))
                .into_iter()
                .collect(),
        };
        drop(open);
        // A connection already closing is as good as gone.
        found
            .into_iter()
            .filter(|(_, queue)| !queue.is_closed())
            .collect()
    }

    /// Closes this node's connections that `target` names with 4002 (after
    /// what is already queued for them); returns how many.
    pub fn disconnect(&self, target: &Target) -> usize {
        let found = self.targets(target);
        for (_, queue) in &found {
            queue.close(CloseReason::Disconnected);
        }
        found.len()
    }

    /// Ends the subscription to `filter` of this node's connections that
    /// `target` names and that hold it; returns how many.
    pub fn unsubscribe(&self, target: &Target, filter: &TopicFilter) -> usize {
        let mut ended = 0;
        for (id, queue) in self.targets(target) {
            if self.hub().is_subscribed(filter, id)
                && queue.push(Outbound::Unsubscribe(filter.clone())).is_ok()
            {
                ended += 1;
            }
        }
        ended
    }

    /// Open connections.
    pub fn connection_count(&self) -> usize {
        self.inner.settings.max_connections - self.inner.connections.available_permits()
    }

    /// Drains the node: `/readyz` turns false, upgrades are refused, and open
    /// connections are closed with 1012 in batches spread over most of
    /// `window`, each keeping what was already queued for it. Returns when every
    /// connection is gone or `window` has passed.
    pub async fn drain(&self, window: Duration) {
        let deadline = Instant::now() + window;
        self.inner.draining.cancel();
        gauge!(names::DRAINING).set(1.0);
        let queues: Vec<Arc<OutboundQueue>> = self
            .inner
            .open
            .lock()
            .by_conn
            .values()
            .map(|(queue, _)| queue.clone())
            .collect();
        // Leave time at the end for the last close frames.
        let span = window.saturating_sub(CLOSE_GRACE + Duration::from_millis(500));
        let batches = (span.as_millis() / DRAIN_BATCH_INTERVAL.as_millis()).max(1) as usize;
        let per_batch = queues.len().div_ceil(batches).max(1);
        tracing::info!(
            connections = queues.len(),
            batch = per_batch,
            window_ms = window.as_millis() as u64,
            "draining: closing connections with 1012"
        );
        for (i, chunk) in queues.chunks(per_batch).enumerate() {
            if i > 0 {
                tokio::time::sleep(DRAIN_BATCH_INTERVAL).await;
            }
            for queue in chunk {
                queue.close(CloseReason::Shutdown);
            }
        }
        // Connections whose upgrade was under way when draining started are
        // closed by `register`; wait for every slot to come back.
        let all = u32::try_from(self.inner.settings.max_connections).unwrap_or(u32::MAX);
        let semaphore = self.inner.connections.clone();
        if tokio::time::timeout_at(deadline, semaphore.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = self.connection_count(),
                "drain window ended with connections still open"
            );
        }
    }
}
