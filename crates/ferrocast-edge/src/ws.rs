// The refusals here are the HTTP responses themselves, built once per refused
// connection attempt: boxing them would buy nothing.
#![allow(clippy::result_large_err)]

use std::net::IpAddr;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::future::BoxFuture;
use metrics::counter;
use tokio::sync::OwnedSemaphorePermit;

use ferrocast_core::metrics as names;
use ferrocast_protocol::stomp::Version;
use ferrocast_protocol::{SUBPROTOCOL_JSON, SUBPROTOCOL_PROTO};

use crate::auth::Identity;
use crate::edge::Edge;
use crate::rate::{ClientAddr, Limited};
use crate::session::{self, JsonProtocol, ProtoProtocol, StompProtocol};

/// Subprotocols this node speaks, in the order they are listed to clients.
const SUPPORTED: &[&str] = &[
    SUBPROTOCOL_JSON,
    SUBPROTOCOL_PROTO,
    "v12.stomp",
    "v11.stomp",
    "v10.stomp",
];

/// The public listener's routes: `GET /ws`, `GET /sse`, `POST /publish`, and
/// `GET /echo` when [`EdgeSettings::echo_endpoint`](crate::EdgeSettings) is on.
pub fn public_router(edge: Edge) -> Router {
    let mut router = Router::new()
        .route("/ws", get(upgrade))
        .route("/sse", get(crate::sse::stream))
        .route("/publish", axum::routing::post(crate::publish::publish));
    if edge.settings().echo_endpoint {
        router = router.route("/echo", get(crate::echo::upgrade));
    }
    router.with_state(edge)
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
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let mut upgrade = match accept(&edge, addr, upgrade) {
        Ok(upgrade) => upgrade,
        Err(refusal) => return refusal,
    };
    let protocol = match negotiate(&headers) {
        Ok(protocol) => protocol,
        Err(message) => return reject(StatusCode::BAD_REQUEST, "subprotocol", message),
    };
    if let Err(refusal) = check_origin(&edge, &headers) {
        return refusal;
    }
    let identity = match authenticate(&edge, &headers, query_token(query.as_deref())) {
        Ok(identity) => identity,
        Err(refusal) => return refusal,
    };
    let permit = match admit(&edge) {
        Ok(permit) => permit,
        Err(refusal) => return refusal,
    };
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
        })
}

/// Refuses an upgrade while the node drains, when the client's address is
/// over its rate of connection attempts, or when the request is not a
/// WebSocket upgrade; else configures the codec (message, frame and read
/// buffer sizes) as for every WebSocket of the public listener, `/ws` and
/// `/echo` alike.
pub(crate) fn accept(
    edge: &Edge,
    addr: Option<IpAddr>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<WebSocketUpgrade, Response> {
    if edge.is_draining() {
        return Err(reject(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "this node is draining; connect to another node".into(),
        ));
    }
    admit_address(edge, addr)?;
    let upgrade = upgrade.map_err(|rejection| {
        counter!(names::CONNECTIONS_REJECTED, "reason" => "bad_request").increment(1);
        rejection.into_response()
    })?;
    let settings = edge.settings();
    Ok(upgrade
        .max_message_size(settings.max_message_size)
        .max_frame_size(settings.max_message_size)
        .read_buffer_size(settings.read_buffer_size))
}

/// Counts a connection attempt of the client at `addr`; beyond the
/// per-address rate, 429 with `Retry-After` and the reason.
pub(crate) fn admit_address(edge: &Edge, addr: Option<IpAddr>) -> Result<(), Response> {
    edge.admit_address(addr, Limited::Connection)
        .map_err(|limited| {
            let mut response = reject(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                limited.to_string(),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, limited.retry_after_header());
            response
        })
}

/// Refuses (403) a browser whose `Origin` is not allowed (cross-site
/// WebSocket hijacking), and a client without `Origin` when that is not
/// allowed either. With no allowed origins configured every origin is.
pub(crate) fn check_origin(edge: &Edge, headers: &HeaderMap) -> Result<(), Response> {
    let settings = edge.settings();
    if settings.allowed_origins.is_empty() {
        return Ok(());
    }
    let allowed = match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None => settings.allow_missing_origin,
        Some(origin) => settings
            .allowed_origins
            .iter()
            .any(|pattern| origin_matches(pattern, origin)),
    };
    if allowed {
        return Ok(());
    }
    Err(reject(
        StatusCode::FORBIDDEN,
        "origin",
        "this origin may not connect to this node".into(),
    ))
}

/// `pattern` is `*`, an origin (`https://app.example.com`), or one with a
/// wildcard subdomain (`https://*.example.com`); case-insensitive.
fn origin_matches(pattern: &str, origin: &str) -> bool {
    let (pattern, origin) = (pattern.to_ascii_lowercase(), origin.to_ascii_lowercase());
    if pattern == "*" || pattern == origin {
        return true;
    }
    match pattern.split_once("://*.") {
        Some((scheme, domain)) => origin
            .strip_prefix(scheme)
            .and_then(|rest| rest.strip_prefix("://"))
            .and_then(|host| host.strip_suffix(domain))
            .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
        None => false,
    }
}

/// The token of a request: `Authorization: Bearer`, else the `token` query
/// parameter (which proxies may log: prefer the header).
pub(crate) fn token<'a>(headers: &'a HeaderMap, query_token: Option<&'a str>) -> Option<&'a str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .or(query_token)
        .map(str::trim)
}

/// The user the request proves with a token ([`token`]). `Ok(None)` without
/// one; a token that fails is refused with 401 and the reason.
pub(crate) fn authenticate(
    edge: &Edge,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<Option<Identity>, Response> {
    let Some(token) = token(headers, query_token) else {
        return Ok(None);
    };
    edge.auth().verify(token).map(Some).map_err(|error| {
        counter!(names::AUTH_FAILURES, "reason" => error.label()).increment(1);
        reject(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!("unauthorized: {error}"),
        )
    })
}

/// The `token` parameter of a raw query string.
fn query_token(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
}

/// A connection slot, or the 503 refusal when the node is at
/// `max_connections`.
pub(crate) fn admit(edge: &Edge) -> Result<OwnedSemaphorePermit, Response> {
    edge.try_admit().ok_or_else(|| {
        counter!(names::LIMIT_HITS, "limit" => "connections").increment(1);
        reject(
            StatusCode::SERVICE_UNAVAILABLE,
            "node_limit",
            format!(
                "this node is at its limit of {} connections; retry later or elsewhere",
                edge.settings().max_connections
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::origin_matches;

    #[test]
    fn origins_match_exactly_or_by_subdomain() {
        assert!(origin_matches("*", "https://evil.example"));
        assert!(origin_matches(
            "https://app.example.com",
            "https://APP.example.com"
        ));
        assert!(!origin_matches(
            "https://app.example.com",
            "http://app.example.com"
        ));
        assert!(!origin_matches(
            "https://app.example.com",
            "https://app.example.com.evil.io"
        ));
        assert!(origin_matches(
            "https://*.example.com",
            "https://a.example.com"
        ));
        assert!(origin_matches(
            "https://*.example.com",
            "https://a.b.example.com"
        ));
        assert!(!origin_matches(
            "https://*.example.com",
            "https://example.com"
        ));
        assert!(!origin_matches(
            "https://*.example.com",
            "https://evilexample.com"
        ));
        assert!(!origin_matches(
            "https://*.example.com",
            "http://a.example.com"
        ));
    }
}
