//! The edge of a ferrocast node: it terminates client connections.
//!
//! - [`public_router`]: `GET /ws` (WebSocket with subprotocol negotiation),
//!   `GET /sse` (Server-Sent Events) and `POST /publish` (HTTP publish).
//! - `GET /echo`, only with [`EdgeSettings::echo_endpoint`]: a WebSocket echo
//!   on the stack of `/ws`, for conformance testing.
//! - [`admin_router`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`Edge::drain`]: closes every connection with 1012 in paced batches.
//! - [`serve`]: the accept loop of a listener (request head timeout, TLS
//!   through [`tls::server_config`], graceful shutdown).
//! - Rate limits per connection (publishes, subscribes) and per client
//!   address (connection attempts), in `rate`.
//!
//! Each WebSocket connection is served by one task (`session`) that reads
//! requests, answers them and writes its [`OutboundQueue`](ferrocast_core::OutboundQueue)
//! to the socket in batches; the subprotocol (`ferrocast.v1.json` or STOMP)
//! is a `session::Protocol`.

mod admin;
mod auth;
mod echo;
mod edge;
mod publish;
mod rate;
mod refusal;
mod serve;
mod session;
mod settings;
mod sse;
pub mod subscriptions;
pub mod tls;
mod ws;

pub use admin::{admin_router, MetricsRender};
pub use auth::{AuthConfig, AuthError, Authenticator, Identity};
pub use edge::{Edge, Target};
pub use serve::{serve, ServeSettings};
pub use settings::{EdgeSettings, Rate};
pub use subscriptions::Subscriptions;
pub use ws::public_router;
