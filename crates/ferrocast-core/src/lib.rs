//! The heart of a ferrocast node, free of network protocol concerns.
//!
//! ```text
//!  session ──publish──▶ Hub ──▶ Backplane (memory | redis | nats) ──▶ every other interested node
//!                        │                                              │ (on those nodes)
//!                        ▼ deliver_local                                ▼ deliver(filter, publication)
//!                  SubscriptionRegistry ─ one Arc<Delivery> per publication, encoded once per format
//!                        │
//!                        ▼
//!                  OutboundQueue (per connection, bounded in bytes) ──▶ writer
//! ```
//!
//! - [`Hub`]: what sessions use: subscribe, unsubscribe, publish.
//! - [`SubscriptionRegistry`]: the sharded map from filter to local subscribers.
//! - [`OutboundQueue`]: a connection's bounded queue; overflow closes the
//!   connection as a slow consumer instead of blocking fan-out.
//! - [`backplane::Backplane`]: the trait that carries publications between nodes,
//!   with [`backplane::memory`] for a single node (or several in one process).

pub mod backplane;
pub mod history;
mod hub;
mod interest;
pub mod metrics;
mod namespace;
mod pattern_index;
mod presence;
mod publication;
mod queue;
mod registry;

pub use hub::{Hub, PublishError, SubscribeError};
pub use namespace::{
    is_reserved, NamespaceSettings, Namespaces, CONTROL_NAMESPACE, DEFAULT_PRESENCE_TTL,
    OWNER_NAMESPACE, OWNER_RECORD_TTL,
};
pub use publication::{unix_micros, Delivery, NodeId, Publication, WireFormat};
pub use queue::{CloseReason, ConnId, Outbound, OutboundQueue, PushError, Taken, WritePacing};
pub use registry::SubscriptionRegistry;
