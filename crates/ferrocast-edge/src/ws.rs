//! `GET /ws`: the WebSocket endpoint, with subprotocol negotiation.
//!
//! A request is admitted ([`Admission::SESSION`]), must be a WebSocket
//! handshake and must offer a subprotocol this node speaks (or none); the
//! upgraded connection is then served by a `session` with that protocol.

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::Response;
use futures::future::BoxFuture;

use ferrocast_protocol::stomp::Version;
use ferrocast_protocol::{SUBPROTOCOL_JSON, SUBPROTOCOL_PROTO};

use crate::admission::{Admission, Admitted, Caller, Refusal};
use crate::edge::Edge;
use crate::session::{self, JsonProtocol, ProtoProtocol, StompProtocol};

/// Subprotocols this node speaks, in the order they are listed to clients.
const SUPPORTED: &[&str] = &[
    SUBPROTOCOL_JSON,
    SUBPROTOCOL_PROTO,
    "v12.stomp",
    "v11.stomp",
    "v10.stomp",
];

/// Picks the first subprotocol the client offered, in the client's order of
/// preference (RFC 6455 §4.1), that this node speaks. `Ok(None)`: the client
/// offered none (the JSON protocol is used).
fn negotiate(headers: &HeaderMap) -> Result<Option<&'static str>, String> {
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    if offered.is_empty() {
        return Ok(None);
    }
    offered
        .iter()
        .find_map(|o| SUPPORTED.iter().find(|s| s.eq_ignore_ascii_case(o)).copied())
        .map(Some)
        .ok_or_else(|| {
            format!(
                "none of the offered WebSocket subprotocols ({}) is supported; this node speaks: {}",
                offered.join(", "),
                SUPPORTED.join(", ")
            )
        })
}

pub(crate) async fn upgrade(
    State(edge): State<Edge>,
    caller: Caller,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, Refusal> {
    let Admitted { identity, permit } = Admission::SESSION.admit_connection(&edge, &caller)?;
    let mut upgrade = accept(&edge, upgrade)?;
    let protocol = negotiate(&headers).map_err(Refusal::subprotocol)?;
    if let Some(protocol) = protocol {
        upgrade = upgrade.protocols([protocol]);
    }
    let stomp = protocol.and_then(Version::from_subprotocol);
    Ok(upgrade
        .on_failed_upgrade(|error| tracing::debug!(%error, "websocket upgrade failed"))
        .on_upgrade(move |socket| -> BoxFuture<'static, ()> {
            // Boxed apart, so that each connection holds the state of its
            // own protocol only.
            match stomp {
                Some(version) => {
                    let conn = edge.next_session_number();
                    let protocol = StompProtocol::new(version, conn, edge.settings());
                    Box::pin(session::serve(edge, socket, permit, protocol, identity))
                }
                None if protocol == Some(SUBPROTOCOL_PROTO) => Box::pin(session::serve(
                    edge,
                    socket,
                    permit,
                    ProtoProtocol,
                    identity,
                )),
                None => Box::pin(session::serve(edge, socket, permit, JsonProtocol, identity)),
            }
        }))
}

/// Refuses a request that is not a WebSocket handshake; else configures the
/// codec (message, frame and read buffer sizes) as for every WebSocket of
/// the public listener, `/ws` and `/echo` alike.
pub(crate) fn accept(
    edge: &Edge,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<WebSocketUpgrade, Refusal> {
    let upgrade = upgrade.map_err(|rejection| Refusal::not_an_upgrade(&rejection))?;
    let settings = edge.settings();
    Ok(upgrade
        .max_message_size(settings.max_message_size)
        .max_frame_size(settings.max_message_size)
        .read_buffer_size(settings.read_buffer_size))
}
