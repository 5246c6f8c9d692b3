//! The node's WebSocket (RFC 6455 with permessage-deflate, RFC 7692) and
//! `GET /ws`, the WebSocket endpoint, with subprotocol negotiation.
//!
//! A request is admitted ([`Admission::SESSION`]), must be a WebSocket
//! handshake and must offer a subprotocol this node speaks (or none); the
//! upgraded connection is then served by a `session` with that protocol.
//!
//! The codec is the node's own (`frame.rs`, `socket.rs`, `upgrade.rs`,
//! `deflate.rs`) rather than tungstenite's: permessage-deflate needs RSV1
//! frames in and out, which tungstenite refuses, and the node's fan-out
//! writes one compressed form of a publication to every subscriber, which
//! needs frames written from prepared bytes. docs/architecture.md has the
//! reasons and the alternatives weighed.

mod deflate;
mod frame;
mod socket;
mod upgrade;

pub(crate) use deflate::compress_shared;
pub(crate) use socket::WebSocket;
pub(crate) use upgrade::{Upgrade, UpgradeRejection, WebSocketUpgrade};

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::Response;

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
    upgrade: Result<WebSocketUpgrade, UpgradeRejection>,
) -> Result<Response, Refusal> {
    let Admitted { identity, permit } = Admission::SESSION.admit_connection(&edge, &caller)?;
    let mut upgrade = accept(&edge, upgrade)?;
    let protocol = negotiate(&headers).map_err(Refusal::subprotocol)?;
    if let Some(protocol) = protocol {
        upgrade = upgrade.protocol(protocol);
    }
    let stomp = protocol.and_then(Version::from_subprotocol);
    Ok(upgrade.on_upgrade(move |socket| {
        // A task per protocol, so that each connection holds the state of
        // its own protocol only.
        match stomp {
            Some(version) => {
                let conn = edge.next_session_number();
                let protocol = StompProtocol::new(version, conn, edge.settings());
                tokio::spawn(session::serve(edge, socket, permit, protocol, identity));
            }
            None if protocol == Some(SUBPROTOCOL_PROTO) => {
                tokio::spawn(session::serve(
                    edge,
                    socket,
                    permit,
                    ProtoProtocol,
                    identity,
                ));
            }
            None => {
                tokio::spawn(session::serve(edge, socket, permit, JsonProtocol, identity));
            }
        }
    }))
}

/// Refuses a request that is not a WebSocket handshake; else configures the
/// codec (message size, read size, compression) as for every WebSocket of
/// the public listener, `/ws` and `/echo` alike.
pub(crate) fn accept(
    edge: &Edge,
    upgrade: Result<WebSocketUpgrade, UpgradeRejection>,
) -> Result<Upgrade, Refusal> {
    let upgrade = upgrade.map_err(|rejection| Refusal::not_an_upgrade(&rejection))?;
    let settings = edge.settings();
    Ok(upgrade.config(
        settings.max_message_size,
        settings.read_buffer_size,
        settings.ws_compression.min_size(),
    ))
}

/// Why a WebSocket failed, inside the `axum::Error` its stream yields.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WsError {
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("message over the size limit")]
    TooLarge,
    #[error("compressed message inflates beyond the size limit")]
    Inflated,
    #[error("text message is not valid UTF-8")]
    Utf8,
    #[error("connection closed without a close handshake")]
    Reset,
    #[error("the WebSocket is closed")]
    Closed,
    #[error(transparent)]
    Io(std::io::Error),
}
