//! The ferrocast server API, for backends that publish, read history and
//! presence, and control client sessions without holding a WebSocket.
//!
//! - [`Api`]: the operations, over the node's [`Edge`](ferrocast_edge::Edge).
//! - [`grpc_service`], `ferrocast.v1.FerrocastApi` (proto/ferrocast/v1/api.proto)
//!   for the gRPC listener.
//! - [`http_router`]: the same calls as JSON under `/api/` for the admin
//!   listener.
//! - [`Access`]: the API key both check.
//!
//! Disconnect, Unsubscribe and Info reach every node through the control
//! channel (`control`), publications in the reserved `_ctl` namespace of the
//! backplane; a node that does not answer in time is reported, not waited for.

mod access;
mod control;
mod error;
mod grpc;
mod http;
mod node_facts;
mod service;

/// Messages and service stubs generated from `proto/ferrocast/v1/api.proto`
/// and `control.proto`; [`pb::ferrocast_api_client`] is a client for backends
/// written in Rust.
pub mod pb {
    #![allow(missing_debug_implementations, unreachable_pub, clippy::all)]
    tonic::include_proto!("ferrocast.v1");
}

pub use access::Access;
pub use error::ApiError;
pub use grpc::{grpc_service, GrpcApi, RECOVERED_HEADER};
pub use http::http_router;
pub use node_facts::{NamespaceView, NodeConfig, NodeFacts};
pub use service::{Api, PublicationStream, Subscribed, MAX_BROADCAST_TOPICS};
