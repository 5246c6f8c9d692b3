//! The edge of a ferrocast node: it terminates client connections.
//!
//! - [`public_router`]: `GET /ws` (WebSocket with subprotocol negotiation),
//!   `GET /sse` (Server-Sent Events) and `POST /publish` (HTTP publish),
//!   with CORS preflights (`OPTIONS /sse`, `OPTIONS /publish`) for the
//!   browser SDK's fallback from pages of other origins (`cors`).
//! - The browser SDK, from [`ferrocast_web`]: `GET /ferrocast.js` (the
//!   entry, revalidated), `GET /ferrocast.d.ts`, and
//!   `GET /ferrocast/<version>/<file>` (the modules, immutable). Static
//!   files: no admission.
//! - `GET /echo`, only with [`EdgeSettings::echo_endpoint`]: a WebSocket echo
//!   on the stack of `/ws`, for conformance testing.
//! - SockJS 0.3 under `--sockjs-path` (default `/sockjs`), every transport
//!   sockjs-client uses, carrying STOMP or JSON sessions (`sockjs`); with
//!   `--sockjs-conformance`, the reference test suite's services too.
//! - [`admin_router`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`Edge::drain`]: closes every connection with 1012 in paced batches.
//! - [`serve`]: the accept loop of a listener (request head timeout, TLS
//!   through [`tls::server_config`], graceful shutdown).
//! - Rate limits per connection (publishes, subscribes) and per client
//!   address (connection attempts), in `rate`.
//!
//! Every route of the public listener lets requests in through `admission`
//! (draining, the client address's rate, `Origin`, token, connection slot,
//! in that order) and refuses in one shape (`admission::Refusal`: status,
//! error code, message, metric label). Each WebSocket connection is served
//! by one task (`session`) that reads requests, answers them and writes its
//! [`OutboundQueue`](ferrocast_core::OutboundQueue) to the socket in batches;
//! the subprotocol (`ferrocast.v1.json`, protobuf or STOMP) is a
//! `session::Protocol`.
//!
//! # Modules, and what each may use
//!
//! A module uses only modules on the lines below its own, so no two modules
//! use each other:
//!
//! ```text
//! lib            public_router: mounts the routes
//! routes         ws (/ws), sse (/sse), publish (/publish), echo (/echo; uses ws's codec settings),
//!                cors (preflights and allowed origins of /sse and /publish), sockjs (SockJS)
//! admission      whether a request comes in; Refusal, the one shape of a refusal
//! serving        session (sessions over any Socket), subscriptions (shared by every session kind)
//! state          edge (hub, settings, authenticator, connection slots, address limiter, open connections)
//! policy         auth (tokens, who may do what), rate (limiters, the client's address)
//! configuration  settings
//! ```
//!
//! `admin`, `serve` and `tls` stand apart: the admin listener, the accept
//! loop and its TLS. A new kind of session is a route (as `sockjs` is): it
//! admits with `Admission::SESSION.admit_connection`, then serves through the
//! serving parts, its transport adapted to a `session::Socket`.

mod admin;
mod admission;
mod auth;
mod cors;
mod echo;
mod edge;
mod feed;
pub mod owner;
mod publish;
mod rate;
mod serve;
mod session;
mod settings;
mod socketio;
mod sockjs;
mod sse;
pub mod subscriptions;
pub mod tls;
mod ws;

use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use axum::Router;

pub use admin::{admin_router, MetricsRender};
pub use auth::{AuthConfig, AuthError, Authenticator, Identity};
pub use edge::{Edge, Target};
pub use feed::Feed;
pub use serve::{serve, ServeSettings};
pub use settings::{EdgeSettings, Rate, SocketioSettings, SockjsSettings, WsCompression};
pub use subscriptions::Subscriptions;

/// The public listener's routes: `GET /ws`, `GET /sse`, `POST /publish`
/// (both with CORS), the browser SDK, and `GET /echo` when
/// [`EdgeSettings::echo_endpoint`] is on.
pub fn public_router(edge: Edge) -> Router {
    let cors = from_fn_with_state(edge.clone(), cors::allow_origin);
    let mut router = Router::new()
        .route("/ws", get(ws::upgrade))
        .route(
            "/sse",
            get(sse::stream)
                .layer(cors.clone())
                .merge(cors::preflight("GET")),
        )
        .route(
            "/publish",
            post(publish::publish)
                .layer(cors)
                .merge(cors::preflight("POST")),
        )
        .merge(ferrocast_web::routes())
        .merge(sockjs::routes(&edge))
        .merge(socketio::routes(&edge));
    if edge.settings().echo_endpoint {
        router = router.route("/echo", get(echo::upgrade));
    }
    router.with_state(edge)
}
