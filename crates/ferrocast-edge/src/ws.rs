use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::future::BoxFuture;
use metrics::counter;

use ferrocast_core::metrics as names;
use ferrocast_protocol::stomp::Version;
use ferrocast_protocol::SUBPROTOCOL_JSON;

use crate::edge::Edge;
use crate::session::{self, JsonProtocol, StompProtocol};

/// Subprotocols this node speaks, in the order they are listed to clients.
const SUPPORTED: &[&str] = &[SUBPROTOCOL_JSON, "v12.stomp", "v11.stomp", "v10.stomp"];

/// The public listener's routes: `GET /ws`, `GET /sse`, `POST /publish`.
pub fn public_router(edge: Edge) -> Router {
    Router::new()
        .route("/ws", get(upgrade))
        .route("/sse", get(crate::sse::stream))
        .route("/publish", axum::routing::post(crate::publish::publish))
        .with_state(edge)
}

fn reject(status: StatusCode, reason: &'static str, message: String) -> Response {
    counter!(names::CONNECTIONS_REJECTED, "reason" => reason).increment(1);
    let mut response = (status, message + "\n").into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    response
}

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

async fn upgrade(
    State(edge): State<Edge>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if edge.is_draining() {
        return reject(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "this node is draining; connect to another node".into(),
        );
    }
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            counter!(names::CONNECTIONS_REJECTED, "reason" => "bad_request").increment(1);
            return rejection.into_response();
        }
    };
    let protocol = match negotiate(&headers) {
        Ok(protocol) => protocol,
        Err(message) => return reject(StatusCode::BAD_REQUEST, "subprotocol", message),
    };
    let Some(permit) = edge.try_admit() else {
        counter!(names::LIMIT_HITS, "limit" => "connections").increment(1);
        return reject(
            StatusCode::SERVICE_UNAVAILABLE,
            "node_limit",
            format!(
                "this node is at its limit of {} connections; retry later or elsewhere",
                edge.settings().max_connections
            ),
        );
    };
    let settings = edge.settings();
    let mut upgrade = upgrade
        .max_message_size(settings.max_message_size)
        .max_frame_size(settings.max_message_size)
        .read_buffer_size(settings.read_buffer_size);
    if let Some(protocol) = protocol {
        upgrade = upgrade.protocols([protocol]);
    }
    let stomp = protocol.and_then(Version::from_subprotocol);
    upgrade
        .on_failed_upgrade(|error| tracing::debug!(%error, "websocket upgrade failed"))
        .on_upgrade(move |socket| -> BoxFuture<'static, ()> {
            // Boxed apart, so that each connection holds the state of its
            // own protocol only.
            match stomp {
                Some(version) => {
                    let conn = edge.next_session_number();
                    let protocol = StompProtocol::new(version, conn, edge.settings());
                    Box::pin(session::serve(edge, socket, permit, protocol))
                }
                None => Box::pin(session::serve(edge, socket, permit, JsonProtocol)),
            }
        })
}
