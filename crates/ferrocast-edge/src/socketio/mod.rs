//! Socket.IO (protocol v5) over Engine.IO (protocol v4), what
//! `socket.io-client` 3.x and 4.x speak, on the public listener under
//! `--socketio-path` (docs/socketio.md).
//!
//! An Engine.IO session carries one ferrocast session: the
//! [`SocketIoProtocol`](protocol::SocketIoProtocol) run by the same
//! `session::serve` as every other kind, over an Engine.IO socket: a
//! WebSocket from the start (`websocket::EioWebSocket`), or HTTP
//! long-polling, possibly upgraded to a WebSocket later (`eio::EioSocket`).
//!
//! Files by concern: `engine` (Engine.IO packets and payloads), `packet`
//! (Socket.IO packets), `eio` (a session's state shared by its transports),
//! `transports` (the HTTP and WebSocket handlers, the sessions by id),
//! `relay` (polling sessions held by other nodes: owner routing),
//! `protocol` (Socket.IO ↔ ferrocast requests and deliveries), `recovery`
//! (what the recovery offset carries), `conformance` (what
//! `--socketio-conformance` serves for the official test suites).

mod conformance;
mod eio;
mod engine;
mod packet;
mod protocol;
mod recovery;
mod relay;
mod transports;
mod websocket;

use std::sync::Arc;

use axum::extract::Request;
use axum::middleware::from_fn_with_state;
use axum::Router;
use metrics::{describe_counter, describe_gauge};

use crate::cors;
use crate::edge::Edge;
use transports::Serves;

/// Engine.IO requests, by transport and step.
pub(crate) const REQUESTS: &str = "ferrocast_socketio_requests_total";
/// Engine.IO sessions this node holds.
pub(crate) const SESSIONS: &str = "ferrocast_socketio_sessions";

/// Where `--socketio-conformance` serves the Engine.IO echo that the
/// Engine.IO suite expects.
pub(crate) const CONFORMANCE_ECHO_PATH: &str = "/engine.io";

/// The Socket.IO routes of the public listener: `--socketio-path` (with
/// and without its trailing slash), unless turned off.
pub(crate) fn routes(edge: &Edge) -> Router<Edge> {
    describe_counter!(
        REQUESTS,
        "Engine.IO requests, by transport (polling, websocket) and step (handshake, poll, send, upgrade, bad_request)."
    );
    describe_gauge!(SESSIONS, "Engine.IO sessions this node holds.");
    describe_counter!(
        relay::RELAYED,
        "Engine.IO requests for sessions held by another node, by outcome: relayed (served through the owner), unknown (the owner no longer held it), silent (the owner did not answer), lost (packets lost between the nodes)."
    );
    let settings = &edge.settings().socketio;
    let mut endpoints = Vec::new();
    if let Some(path) = &settings.path {
        let serves = if settings.conformance {
            Serves::SuiteHandlers
        } else {
            Serves::Events
        };
        endpoints.push((path.clone(), serves));
    }
    if settings.conformance {
        endpoints.push((CONFORMANCE_ECHO_PATH.into(), Serves::EngineEcho));
    }
    let mut router = Router::new();
    for (path, serves) in endpoints {
        let endpoint = Arc::new(transports::Endpoint::new(edge.clone(), serves));
        let handler = move |request: Request| {
            let endpoint = endpoint.clone();
            async move { transports::dispatch(endpoint, request).await }
        };
        // Polling from a page of another origin: every answer names the
        // allowed origin; a preflight comes only with extra headers.
        let cors = from_fn_with_state(edge.clone(), cors::allow_origin);
        let route = cors::preflight("GET, POST").fallback(handler).layer(cors);
        router = router
            .route(&path, route.clone())
            .route(&format!("{path}/"), route);
    }
    router
}

/// A new random id (32 hex digits): session ids, socket ids, recovery pids.
fn random_id() -> String {
    use ferrocast_core::history::new_epoch;
    format!("{}{}", new_epoch(), new_epoch())
}

#[cfg(test)]
mod tests {
    use super::protocol::SocketIoProtocol;
    use super::websocket::EioWebSocket;
    use crate::session::serve;

    /// The size of the future a function of five arguments returns.
    fn future_size<A, B, C, D, E, F>(_: fn(A, B, C, D, E) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// An idle Socket.IO connection over a WebSocket is mostly this future
    /// (plus the socket's buffers): a budget that keeps it from growing
    /// unnoticed (docs/benchmarks.md, memory per connection).
    #[test]
    fn the_state_of_an_idle_socketio_connection_stays_small() {
        let size = future_size(serve::<SocketIoProtocol, EioWebSocket>);
        eprintln!("idle Socket.IO session future: {size} B");
        assert!(
            size <= 1280,
            "a Socket.IO connection's future takes {size} bytes"
        );
    }
}
