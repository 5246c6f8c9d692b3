//! The backplane carries publications between the nodes of a cluster.
//!
//! # Guarantees every implementation gives
//! The conformance suite ([`conformance`], feature `conformance`) checks each of
//! them against every implementation.
//!
//! - **Interest-based routing.** A node receives a publication only for the
//!   filters it subscribed with [`Backplane::subscribe`], once per matching
//!   filter, and passes it to its [`PublicationSink`] together with that filter.
//!   A node that subscribed nothing receives nothing.
//! - **A node's own publications are not delivered back to it.** The hub
//!   delivers them to local subscribers itself (so local delivery goes on while
//!   the backplane is down); an implementation whose medium echoes them (Redis)
//!   drops them by origin, one that can ask the medium not to (NATS no-echo)
//!   does so. A publication therefore reaches each node once per matching filter.
//! - **Order per topic and publisher.** Publications that one node publishes on
//!   one topic, by calls made one after the other, reach every subscribed node in
//!   that order. [`Backplane::publish`] queues the publication before it returns,
//!   so several publish futures created in order keep their order even when they
//!   are awaited together. No order is promised between different nodes.
//! - **At most once live delivery.** A publication reaches a subscribed node at
//!   most once per matching filter; while the backplane is down, publications can
//!   be lost (publish then fails with [`BackplaneError::Unavailable`] whenever the
//!   implementation can tell), never duplicated.
//! - **Interest survives outages.** Filters subscribed while the backplane is
//!   unreachable, or before it restarts, are (re)applied by the implementation
//!   once it is back; callers do not resubscribe.
//! - **Topic semantics** are those of [`TopicFilter::matches`]: `*` one token, `>`
//!   one or more trailing tokens, whatever the backplane's native syntax.

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::watch;

use ferrocast_protocol::TopicFilter;

use crate::publication::Publication;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod envelope;
pub mod memory;

/// Why a backplane operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackplaneError {
    /// The backplane cannot be reached now; the operation may succeed later.
    #[error("backplane unavailable: {0}")]
    Unavailable(String),
    /// The backplane did not answer within its timeout.
    #[error("backplane timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The backplane refused the operation (a bug, or a misconfiguration).
    #[error("backplane rejected the operation: {0}")]
    Rejected(String),
}

/// Receives what the backplane routes to this node.
pub trait PublicationSink: Send + Sync + 'static {
    /// Called with each publication and the subscribed filter it matched. Must
    /// not block: it runs on the backplane's reader.
    fn deliver(&self, filter: &TopicFilter, publication: Publication);
}

/// Carries publications between nodes. See the module docs for the guarantees.
pub trait Backplane: Send + Sync + fmt::Debug + 'static {
    /// A short name for logs and metrics: `memory`, `redis`, `nats`.
    fn kind(&self) -> &'static str;

    /// Publishes to every other node subscribed to a matching filter. The
    /// publication is queued before this returns; the future completes when the
    /// backplane accepted it, or fails with [`BackplaneError::Unavailable`]
    /// while the backplane is unreachable.
    fn publish(&self, publication: Publication) -> BoxFuture<'static, Result<(), BackplaneError>>;

    /// Adds interest in `filters`. Completes when the backplane routes them to
    /// this node. On error the interest is kept and applied once the backplane
    /// is back.
    fn subscribe(
        &self,
        filters: Vec<TopicFilter>,
    ) -> BoxFuture<'static, Result<(), BackplaneError>>;

    /// Removes interest in `filters`.
    fn unsubscribe(
        &self,
        filters: Vec<TopicFilter>,
    ) -> BoxFuture<'static, Result<(), BackplaneError>>;

    /// Whether the backplane is reachable now; the receiver sees every change.
    fn health(&self) -> watch::Receiver<bool>;
}

/// A shared handle to any backplane.
pub type SharedBackplane = Arc<dyn Backplane>;
