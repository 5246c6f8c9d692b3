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
//!
//! # History
//! A publication made with a [`HistoryPolicy`] (its namespace keeps history) is
//! appended to its topic's history and given a [`StreamPosition`] by the
//! backplane, atomically, so that every node agrees:
//! - **Offsets are contiguous per topic within an epoch**: 1, 2, 3, … in the
//!   order the backplane appended them. An epoch names one incarnation of the
//!   topic's history; a new one (offsets from 1 again) starts when the history
//!   expired entirely or was lost. A topic that has never been published to,
//!   or whose history expired, has the empty epoch `""` and top offset 0.
//! - **Positioned publications travel like the others** (never back to the
//!   origin, which delivers them itself once [`Backplane::publish`] returned the
//!   position), carrying their position. Live delivery stays at most once and
//!   may reorder publications of different nodes: receivers detect a gap or a
//!   reordering by the offsets and read what they miss with
//!   [`Backplane::history`].
//! - **History is trimmed** to the policy's size (newest kept) and age; an
//!   entry older than the time-to-live is never returned, and the whole history
//!   of a topic without a publication for the time-to-live may vanish.
//!
//! # Presence
//! Namespaces with presence keep, per topic, who is subscribed: one
//! [`PresenceEntry`] per client, written by the client's node with
//! [`Backplane::presence_update`] and read by any node with
//! [`Backplane::presence`].
//! - **Entries are shared.** Once an update completed, every node reads the
//!   entries it added (the newest write per topic and client wins) and none
//!   of those it removed.
//! - **Entries live for a time-to-live.** An entry not added again within the
//!   `ttl` of its last update is never returned again: the node refreshes its
//!   entries every third of the ttl, so a node that died (and with it its
//!   clients) disappears from every list within the ttl, without anybody
//!   removing anything. Expiry is checked by the backplane's clock (memory:
//!   the process, Redis: the server's `TIME`, NATS: the server's `max_age`),
//!   so nodes with skewed clocks agree.
//! - **Join and leave events are ordinary publications** on the topic itself
//!   with the content type [`PRESENCE_CONTENT_TYPE`], made by the hub after
//!   the update that they announce completed, without a history position.
//!   They follow every guarantee of publications above (interest-based, at
//!   most once, in order per node); the backplane gives them nothing special.
//!
//! [`PRESENCE_CONTENT_TYPE`]: ferrocast_protocol::PRESENCE_CONTENT_TYPE

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::watch;

pub use ferrocast_protocol::PresenceEntry;
use ferrocast_protocol::StreamPosition;
use ferrocast_protocol::{Topic, TopicFilter};

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

/// How much history a namespace keeps for each of its topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryPolicy {
    /// Most publications kept per topic (at least 1).
    pub size: usize,
    /// How long a publication is kept.
    pub ttl: std::time::Duration,
}

/// A topic's history as [`Backplane::history`] read it.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPage {
    /// The current incarnation of the topic's history; `""` when there is none.
    pub epoch: String,
    /// Offset of the newest publication (0 when there is none).
    pub top: u64,
    /// Offset of the oldest publication still kept (`top + 1` when none is).
    pub oldest: u64,
    /// The kept publications after the requested offset, oldest first, each
    /// with its position.
    pub publications: Vec<Publication>,
}

impl HistoryPage {
    /// The page of a topic without history.
    pub fn empty() -> Self {
        Self {
            epoch: String::new(),
            top: 0,
            oldest: 1,
            publications: Vec::new(),
        }
    }

    /// The position of the newest publication.
    pub fn top_position(&self) -> StreamPosition {
        StreamPosition {
            epoch: self.epoch.clone(),
            offset: self.top,
        }
    }
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
    ///
    /// With a `history` policy the publication is also appended to its topic's
    /// history, and the future yields the position it was given (see the
    /// module docs); without one it yields `None`.
    fn publish(
        &self,
        publication: Publication,
        history: Option<HistoryPolicy>,
    ) -> BoxFuture<'static, Result<Option<StreamPosition>, BackplaneError>>;

    /// Reads `topic`'s history under `policy`: its epoch and top offset, and
    /// the kept publications with an offset above `after` (all kept ones for
    /// 0), oldest first.
    fn history(
        &self,
        topic: &Topic,
        policy: HistoryPolicy,
        after: u64,
    ) -> BoxFuture<'static, Result<HistoryPage, BackplaneError>>;

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

    /// Writes one node's presence changes in one batch: every entry of `add`
    /// is stored (or refreshed) for `ttl` under its topic and client, every
    /// `(topic, client)` of `remove` is deleted. Completes when every node
    /// reads the result (see the module docs).
    fn presence_update(
        &self,
        add: Vec<(Topic, PresenceEntry)>,
        remove: Vec<(Topic, String)>,
        ttl: std::time::Duration,
    ) -> BoxFuture<'static, Result<(), BackplaneError>>;

    /// The entries of `topic` that are neither removed nor expired, in no
    /// particular order.
    fn presence(
        &self,
        topic: &Topic,
    ) -> BoxFuture<'static, Result<Vec<PresenceEntry>, BackplaneError>>;
}

/// A shared handle to any backplane.
pub type SharedBackplane = Arc<dyn Backplane>;
