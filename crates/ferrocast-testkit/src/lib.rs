//! Test support for ferrocast integration tests (not published).
//!
//! - [`Node`]: a real `ferrocast` process on free loopback ports, killed on drop.
//! - [`Cluster`]: a backplane (Redis, NATS or memory) and nodes on it, each
//!   node in a [`TestDir`] of its own; what every multi-node test starts.
//! - [`JsonClient`]: a WebSocket client of the native JSON protocol;
//!   [`ProtoClient`]: of the protobuf protocol; [`StompClient`]: a raw
//!   STOMP-over-WebSocket client.
//! - [`SseClient`]: a Server-Sent Events client; [`HttpPublisher`]: HTTP publish.
//! - [`http_get`] and [`metric`]: read the admin listener; [`http_exchange`]:
//!   any request, with the response's headers.
//! - [`RedisServer`], [`NatsServer`]: real backplane servers on free ports,
//!   killed on drop, restartable for outage tests; their logs are kept for
//!   failures. [`RedisCluster`] (3 masters, 3 replicas) and [`NatsCluster`]
//!   (3 servers with JetStream): real clusters whose members can be killed.
//! - [`TcpProxy`]: a proxy that can stall, for network-path faults.
//! - [`HaProxy`]: a real HAProxy in front of nodes, configured as shipped in
//!   deploy/ (or refusing WebSocket upgrades, for fallback tests).

mod client;
mod cluster;
mod dir;
mod haproxy;
mod http;
mod nats_cluster;
mod node;
mod proto;
mod proxy;
mod redis_cluster;
mod script;
mod servers;
mod socket;
mod sse;
mod stomp;

pub use client::{ClientError, JsonClient};
pub use cluster::{Cluster, ClusterBackplane, ClusterBuilder};
pub use dir::TestDir;
pub use haproxy::HaProxy;
pub use http::{
    http_exchange, http_get, http_get_on, http_request, metric, wait_readyz, HttpResponse,
};
pub use nats_cluster::NatsCluster;
pub use node::{node_binary, Node};
pub use proto::ProtoClient;
pub use proxy::TcpProxy;
pub use redis_cluster::{RedisCluster, REDIS_CLUSTER_NODE_TIMEOUT};
pub use script::{require, require_npm_package, run_script, NodeScenario, ScriptRun, CHROMIUM};
pub use servers::{free_port, NatsServer, RedisServer};
pub use socket::next_text;
pub use sse::{HttpPublisher, SseClient, SseError, SseEvent, SseItem};
pub use stomp::{StompClient, StompFrame};

/// How long a test waits for something that should happen promptly.
pub const WAIT: std::time::Duration = std::time::Duration::from_secs(10);
