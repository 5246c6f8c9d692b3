//! `GET /echo`: a WebSocket echo, for conformance testing only.
//!
//! Served when [`EdgeSettings::echo_endpoint`](crate::EdgeSettings) is on, so
//! that a conformance suite (the Autobahn suite, docs/security.md) exercises
//! the WebSocket stack of `/ws` without a subprotocol in the way: the same
//! axum upgrade, the same codec settings (message, frame and read buffer
//! sizes, [`ws::accept`]), and the admission of a session without its Origin
//! and token checks: refused while draining, counted against the address's
//! rate of connection attempts, holding a connection slot. Text and binary
//! messages come back unchanged; pings, pongs and the close handshake are
//! left to the codec, as in a session.

use axum::extract::ws::{CloseFrame, Message};
use axum::extract::State;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use tokio::sync::OwnedSemaphorePermit;

use crate::admission::{Admission, Admitted, Caller, Refusal};
use crate::edge::Edge;
use crate::rate::Limited;
use crate::session::code;
use crate::ws;

/// No Origin or token check: a conformance suite sends neither.
const ADMISSION: Admission = Admission::new()
    .refuse_while_draining()
    .limit_address(Limited::Connection);

pub(crate) async fn upgrade(
    State(edge): State<Edge>,
    caller: Caller,
    upgrade: Result<ws::WebSocketUpgrade, ws::UpgradeRejection>,
) -> Result<Response, Refusal> {
    let Admitted { permit, .. } = ADMISSION.admit_connection(&edge, &caller)?;
    let upgrade = ws::accept(&edge, upgrade)?;
    Ok(upgrade.on_upgrade(move |socket| {
        tokio::spawn(echo(edge, socket, permit));
    }))
}

/// Sends every text and binary message back until the client closes, the
/// codec fails the connection, or the node drains (then 1012). `_permit`
/// holds the connection's slot.
async fn echo(edge: Edge, mut socket: ws::WebSocket, _permit: OwnedSemaphorePermit) {
    let draining = edge.draining().clone();
    loop {
        let received = tokio::select! {
            received = socket.next() => received,
            () = draining.cancelled() => {
                let farewell = CloseFrame {
                    code: code::SERVICE_RESTART,
                    reason: "node draining; reconnect to another node".into(),
                };
                let _ = socket.send(Message::Close(Some(farewell))).await;
                return;
            }
        };
        match received {
            Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                if socket.send(message).await.is_err() {
                    return;
                }
            }
            // Pings are answered and a close is echoed by the codec; after a
            // close the stream ends.
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Close(_))) => {}
            // A protocol violation, invalid UTF-8 or an oversized message:
            // the codec has failed the connection; dropping the socket closes it.
            Some(Err(error)) => {
                tracing::debug!(%error, "echo connection failed");
                return;
            }
            None => return,
        }
    }
}
