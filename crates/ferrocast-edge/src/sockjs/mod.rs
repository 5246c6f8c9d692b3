//! SockJS 0.3 (what `sockjs-client` 1.x speaks) on the public listener,
//! under `--sockjs-path` (docs/protocol.md, "SockJS").
//!
//! A SockJS session carries a ferrocast session: the first message picks
//! STOMP (a `CONNECT`/`STOMP` frame, what Spring clients send) or the JSON
//! protocol (a JSON object), and the session then runs the same
//! `session::serve` as a WebSocket (`service`), over a [`Socket`](crate::session::Socket)
//! of its transport:
//!
//! - `/<server>/<session>/websocket`: SockJS frames over a WebSocket
//!   (`socket::FramedWebSocket`); `<prefix>/websocket`: a plain WebSocket,
//!   messages unframed.
//! - `xhr`, `xhr_streaming`, `eventsource`, `htmlfile`, `jsonp` (receiving)
//!   and `xhr_send`, `jsonp_send` (sending): HTTP requests, each going
//!   through the [`SessionDirectory`] (`directory`), which holds the
//!   sessions (`http_session`) and is the one seam where a session's owner on
//!   another node plugs in (`relay`).
//!
//! Files by concern: `frame` (framing and escaping), `pages` (greeting,
//! `/info`, the iframe page), `headers` (CORS, caching, cookie),
//! `directory`, `http_session` and `relay` (sessions over HTTP, here or on
//! their owner), `socket` (the WebSocket transport), `transports` (the HTTP
//! handlers), `service` (what runs inside). With `--sockjs-conformance` the reference test suite's four
//! services are mounted too (`/echo`, `/disabled_websocket_echo`,
//! `/cookie_needed_echo`, `/close`).

mod directory;
mod frame;
mod headers;
mod http_session;
mod pages;
mod relay;
mod service;
mod socket;
mod transports;

use std::sync::Arc;

use axum::extract::Request;
use axum::routing::any;
use axum::Router;
use metrics::{describe_counter, describe_gauge};

use crate::edge::Edge;
use directory::SessionDirectory;
use service::Kind;

/// SockJS requests, by transport (or page).
pub(crate) const REQUESTS: &str = "ferrocast_sockjs_requests_total";

/// The response limit of the conformance services: what the reference
/// suite expects of its test server.
const CONFORMANCE_RESPONSE_LIMIT: usize = 4096;

/// The `protocol` label of a session speaking `protocol` over SockJS.
pub(crate) fn label(protocol: &'static str) -> &'static str {
    match protocol {
        "stomp" => "sockjs_stomp",
        "json" => "sockjs_json",
        "proto" => "sockjs_proto",
        _ => "sockjs_echo",
    }
}

/// One SockJS endpoint: its prefix, what it serves, and its sessions.
pub(crate) struct Endpoint {
    edge: Edge,
    prefix: String,
    kind: Kind,
    /// Whether WebSocket transports are offered (`/info`'s `websocket`).
    websocket: bool,
    /// Whether `/info` says cookies are needed and sessions set `JSESSIONID`.
    cookie_needed: bool,
    /// Bytes a streaming response carries before it ends.
    response_limit: usize,
    directory: SessionDirectory,
}

/// The SockJS routes of the public listener: `--sockjs-path` (unless off),
/// and the conformance services with `--sockjs-conformance`.
pub(crate) fn routes(edge: &Edge) -> Router<Edge> {
    describe_counter!(
        REQUESTS,
        "SockJS requests, by transport (xhr, xhr_send, xhr_streaming, eventsource, htmlfile, jsonp, jsonp_send, websocket, raw_websocket) or page (greeting, info, iframe, options), and not_found."
    );
    describe_counter!(
        relay::RELAYED,
        "SockJS requests for sessions held by another node, by outcome: relayed (served through the owner), unknown (the owner no longer held it), silent (the owner did not answer), lost (frames lost between the nodes)."
    );
    describe_gauge!(
        directory::SESSIONS,
        "SockJS sessions served over HTTP that this node holds."
    );
    let settings = &edge.settings().sockjs;
    let mut endpoints = Vec::new();
    if let Some(prefix) = &settings.path {
        endpoints.push((
            prefix.clone(),
            Kind::Ferrocast,
            true,
            settings.cookie_needed,
            settings.response_limit,
        ));
    }
    if settings.conformance {
        for (prefix, kind, websocket, cookie_needed) in [
            ("/echo", Kind::Echo, true, false),
            ("/disabled_websocket_echo", Kind::Echo, false, false),
            ("/cookie_needed_echo", Kind::Echo, true, true),
            ("/close", Kind::Close, true, false),
        ] {
            endpoints.push((
                prefix.into(),
                kind,
                websocket,
                cookie_needed,
                CONFORMANCE_RESPONSE_LIMIT,
            ));
        }
    }
    let mut router = Router::new();
    for (prefix, kind, websocket, cookie_needed, response_limit) in endpoints {
        let endpoint = Arc::new(Endpoint {
            edge: edge.clone(),
            directory: SessionDirectory::new(edge.clone(), kind, &prefix),
            prefix: prefix.clone(),
            kind,
            websocket,
            cookie_needed,
            response_limit,
        });
        let handler = move |request: Request| {
            let endpoint = endpoint.clone();
            async move { transports::dispatch(endpoint, request).await }
        };
        router = router
            .route(&prefix, any(handler.clone()))
            .route(&format!("{prefix}/"), any(handler.clone()))
            .route(&format!("{prefix}/{{*rest}}"), any(handler));
    }
    router
}
