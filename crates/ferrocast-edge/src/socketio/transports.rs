//! The HTTP side of Engine.IO: [`dispatch`] reads the query (`EIO`,
//! `transport`, `sid`; `t` is a cache-buster and ignored) and answers.
//!
//! | request | answer |
//! |---|---|
//! | `GET ?EIO=4&transport=polling` | the handshake `0{sid, upgrades, pingInterval, pingTimeout, maxPayload}`: a new session |
//! | `GET ?…&transport=polling&sid=…` | a poll: the session's packets joined by `\x1e` |
//! | `POST ?…&transport=polling&sid=…` | a send: the client's packets into the session, `ok` |
//! | `GET ?…&transport=websocket` (upgrade) | a new session over a WebSocket, handshake first |
//! | `GET ?…&transport=websocket&sid=…` (upgrade) | the upgrade of a polling session: probe, noop, upgrade |
//!
//! Refusals carry Engine.IO's codes and bodies, `{"code":N,"message":…}`:
//! 0 unknown transport, 1 unknown session id, 2 bad handshake method, 3 bad
//! request, 4 forbidden (admission's own refusals keep their status and
//! body), 5 unsupported protocol version.

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Weak};

use axum::extract::ws::Message;
use axum::extract::{FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use metrics::{counter, gauge};
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::OwnedSemaphorePermit;

use ferrocast_core::metrics as names;

use super::conformance::{EngineEcho, SuiteHandlers};
use super::eio::{EioSession, EioSocket, Transport};
use super::engine::{encode_payload, Packet};
use super::protocol::SocketIoProtocol;
use super::websocket::EioWebSocket;
use super::{random_id, REQUESTS, SESSIONS};
use crate::admission::{Admission, Admitted, Caller};
use crate::auth::Identity;
use crate::edge::Edge;
use crate::owner;
use crate::session::{self, count_error, Socket};
use crate::ws;

/// Engine.IO's refusals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EngineError {
    UnknownTransport,
    UnknownSid,
    BadHandshakeMethod,
    BadRequest,
    UnsupportedProtocolVersion,
}

impl EngineError {
    fn code(self) -> u8 {
        match self {
            Self::UnknownTransport => 0,
            Self::UnknownSid => 1,
            Self::BadHandshakeMethod => 2,
            Self::BadRequest => 3,
            Self::UnsupportedProtocolVersion => 5,
        }
    }

    fn message(self) -> &'static str {
        match self {
            Self::UnknownTransport => "Transport unknown",
            Self::UnknownSid => "Session ID unknown",
            Self::BadHandshakeMethod => "Bad handshake method",
            Self::BadRequest => "Bad request",
            Self::UnsupportedProtocolVersion => "Unsupported protocol version",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::UnknownTransport => "socketio_unknown_transport",
            Self::UnknownSid => "socketio_unknown_sid",
            Self::BadHandshakeMethod => "socketio_bad_handshake_method",
            Self::BadRequest => "socketio_bad_request",
            Self::UnsupportedProtocolVersion => "socketio_unsupported_version",
        }
    }

    /// The body of the refusal: `{"code":N,"message":…}`.
    pub(super) fn body(self) -> String {
        json!({ "code": self.code(), "message": self.message() }).to_string()
    }
}

impl IntoResponse for EngineError {
    fn into_response(self) -> Response {
        count_error(self.label());
        json_refusal(StatusCode::BAD_REQUEST, self.body())
    }
}

fn json_refusal(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The polling sessions this node holds, by id. A std-like lock held for
/// map operations only, never across an await.
pub(super) type Sessions = Mutex<HashMap<Box<str>, Arc<EioSession>>>;

/// What an endpoint's sessions run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Serves {
    /// Socket.IO with ferrocast's events (`protocol`).
    Events,
    /// Conformance: the Engine.IO echo.
    EngineEcho,
    /// Conformance: the Socket.IO suite's handlers.
    SuiteHandlers,
}

impl Serves {
    /// The endpoint's sessions in owner routing: one token each, so that
    /// two endpoints of a node never share session ids.
    pub(super) fn owner_kind(self) -> &'static str {
        match self {
            Self::Events | Self::SuiteHandlers => "eio",
            Self::EngineEcho => "eio_echo",
        }
    }
}

/// An Engine.IO endpoint: its sessions over polling, by id.
pub(super) struct Endpoint {
    pub(super) edge: Edge,
    pub(super) serves: Serves,
    pub(super) sessions: Arc<Sessions>,
    /// Whether owner routing knows this endpoint's sessions (`relay`).
    pub(super) held: AtomicBool,
}

impl Endpoint {
    pub(super) fn new(edge: Edge, serves: Serves) -> Self {
        Self {
            edge,
            serves,
            sessions: Arc::default(),
            held: AtomicBool::new(false),
        }
    }

    pub(super) fn find(&self, sid: &str) -> Option<Arc<EioSession>> {
        self.sessions.lock().get(sid).cloned()
    }

    /// Starts a new long-polling session and the task that runs it, found
    /// by its id until the task ends.
    fn start(&self, admitted: Admitted) -> String {
        let Admitted { identity, permit } = admitted;
        let sid = random_id();
        let (session, messages) = EioSession::new(self.edge.settings());
        let session = Arc::new(session);
        self.sessions
            .lock()
            .insert(sid.as_str().into(), session.clone());
        gauge!(SESSIONS).increment(1.0);
        let sessions: Weak<_> = Arc::downgrade(&self.sessions);
        let key = sid.clone();
        let forget = Box::new(move || {
            if let Some(sessions) = sessions.upgrade() {
                if sessions.lock().remove(key.as_str()).is_some() {
                    gauge!(SESSIONS).decrement(1.0);
                }
            }
        });
        let socket = EioSocket::new(session, messages, forget);
        tokio::spawn(run(
            self.serves,
            self.edge.clone(),
            socket,
            permit,
            identity,
        ));
        sid
    }

    /// The handshake packet of session `sid`.
    fn open_packet(&self, sid: &str, upgrades: &[&str]) -> Packet {
        let settings = self.edge.settings();
        let open = json!({
            "sid": sid,
            "upgrades": upgrades,
            "pingInterval": settings.ping_interval.as_millis() as u64,
            "pingTimeout": settings.pong_timeout.as_millis() as u64,
            "maxPayload": settings.max_message_size,
        });
        Packet::Open(open.to_string())
    }
}

/// Serves one session of `serves` over `socket` until it ends; `permit` is
/// its connection slot.
async fn run<S: Socket>(
    serves: Serves,
    edge: Edge,
    socket: S,
    permit: OwnedSemaphorePermit,
    identity: Option<Identity>,
) {
    match serves {
        Serves::Events => {
            let protocol = SocketIoProtocol::default();
            session::serve(edge, socket, permit, protocol, identity).await;
        }
        Serves::EngineEcho => session::serve(edge, socket, permit, EngineEcho, identity).await,
        Serves::SuiteHandlers => {
            let protocol = SuiteHandlers::default();
            session::serve(edge, socket, permit, protocol, identity).await;
        }
    }
}

/// The query parameters Engine.IO reads.
#[derive(Debug, Default)]
struct EngineQuery {
    version: Option<String>,
    transport: Option<String>,
    sid: Option<String>,
}

impl EngineQuery {
    fn of(parts: &Parts) -> Self {
        let params = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map(|Query(params)| params)
            .unwrap_or_default();
        let mut query = Self::default();
        for (name, value) in params {
            match name.as_str() {
                "EIO" => query.version = Some(value),
                "transport" => query.transport = Some(value),
                "sid" => query.sid = Some(value),
                _ => {}
            }
        }
        query
    }
}

fn count(transport: &'static str, step: &'static str) {
    counter!(REQUESTS, "transport" => transport, "step" => step).increment(1);
}

/// Answers a request at the endpoint's path.
pub(super) async fn dispatch(endpoint: Arc<Endpoint>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    let query = EngineQuery::of(&parts);
    let transport = match query.transport.as_deref() {
        Some("polling") => Transport::Polling,
        Some("websocket") => Transport::WebSocket,
        _ => {
            count("unknown", "bad_request");
            return EngineError::UnknownTransport.into_response();
        }
    };
    let Some(sid) = query.sid else {
        if query.version.as_deref() != Some("4") {
            count("unknown", "bad_request");
            return EngineError::UnsupportedProtocolVersion.into_response();
        }
        if transport == Transport::WebSocket {
            count("websocket", "handshake");
            return websocket(&endpoint, &mut parts, None).await;
        }
        if parts.method != Method::GET {
            count("polling", "bad_request");
            return EngineError::BadHandshakeMethod.into_response();
        }
        count("polling", "handshake");
        return handshake(&endpoint, &mut parts).await;
    };
    let session = endpoint.find(&sid);
    if transport == Transport::WebSocket {
        count("websocket", "upgrade");
        // A session held by another node is not upgraded: it keeps polling.
        let Some(session) = session else {
            return EngineError::UnknownSid.into_response();
        };
        return websocket(&endpoint, &mut parts, Some(session)).await;
    }
    let answer = match parts.method {
        Method::GET => {
            count("polling", "poll");
            let polled = match session {
                Some(session) => {
                    // A session living longer than its owner record is claimed again.
                    if session.claimed.due() {
                        endpoint.claim(&sid).await;
                    }
                    Some(poll(session).await)
                }
                None => endpoint.poll_elsewhere(&sid).await,
            };
            polled.map(|polled| polled.map(Some))
        }
        Method::POST => {
            count("polling", "send");
            let limit = endpoint.edge.settings().max_message_size;
            let Ok(payload) = axum::body::to_bytes(body, limit).await else {
                counter!(names::LIMIT_HITS, "limit" => "message_size").increment(1);
                if let Some(session) = session {
                    session.break_off();
                }
                return (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("a payload carries at most {limit} bytes (maxPayload)"),
                )
                    .into_response();
            };
            let sent = match session {
                Some(session) => Some(
                    deliver(&session, &payload)
                        .await
                        .map_err(EngineError::refused),
                ),
                None => match String::from_utf8(payload.to_vec()) {
                    Ok(payload) => endpoint.send_elsewhere(&sid, payload).await,
                    Err(_) => return EngineError::BadRequest.into_response(),
                },
            };
            // A send is answered `ok` once the session took it.
            sent.map(|sent| sent.map(|()| None))
        }
        _ => {
            count("polling", "bad_request");
            return EngineError::BadRequest.into_response();
        }
    };
    match answer {
        Some(Ok(Some(payload))) => text(payload),
        Some(Ok(None)) => ([(header::CONTENT_TYPE, "text/html")], "ok").into_response(),
        Some(Err(refused)) if refused.status == 404 => EngineError::UnknownSid.into_response(),
        Some(Err(refused)) => {
            count_error("socketio_relayed_refusal");
            json_refusal(StatusCode::BAD_REQUEST, refused.body)
        }
        None => EngineError::UnknownSid.into_response(),
    }
}

/// A new session over long-polling: its handshake is the answer.
async fn handshake(endpoint: &Endpoint, parts: &mut Parts) -> Response {
    let Ok(caller) = Caller::from_request_parts(parts, &endpoint.edge).await;
    let admitted = match Admission::SESSION.admit_connection(&endpoint.edge, &caller) {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.into_response(),
    };
    let sid = endpoint.start(admitted);
    endpoint.claim(&sid).await;
    let open = endpoint.open_packet(&sid, &["websocket"]);
    text(open.encode_text())
}

/// Detaches a poll request when it ends, answered or cut.
struct Attached {
    session: Arc<EioSession>,
    number: u64,
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.session.detach_poller(self.number);
    }
}

/// A poll of a session held here: its packets, once there are any. A
/// second poll while one waits breaks the session (the waiting one gets the
/// close packet).
async fn poll(session: Arc<EioSession>) -> Result<String, owner::Refused> {
    if session.transport() == Transport::WebSocket {
        return Err(EngineError::BadRequest.refused());
    }
    let Ok(number) = session.attach_poller() else {
        return Err(EngineError::BadRequest.refused());
    };
    Ok(next_payload(session, number).await)
}

/// The payload poll request `number` answers with; detaches it when done or
/// dropped.
pub(super) async fn next_payload(session: Arc<EioSession>, number: u64) -> String {
    let attached = Attached { session, number };
    let packets = poll_fn(|cx| attached.session.poll_payload(number, cx)).await;
    encode_payload(&packets)
}

/// A send: the client's packets, in order, into a session held here.
pub(super) async fn deliver(session: &EioSession, payload: &[u8]) -> Result<(), EngineError> {
    if session.transport() == Transport::WebSocket {
        return Err(EngineError::BadRequest);
    }
    let packets = std::str::from_utf8(payload)
        .map_err(|_| ())
        .and_then(|text| Packet::decode_payload(text).map_err(|_| ()));
    let Ok(packets) = packets else {
        count_error("socketio_bad_packet");
        session.break_off();
        return Err(EngineError::BadRequest);
    };
    for packet in packets {
        let closing = packet == Packet::Close;
        if session.receive(packet).await.is_err() && !closing {
            return Err(EngineError::BadRequest);
        }
    }
    Ok(())
}

/// A WebSocket: a new session over it, or the upgrade of `session`.
async fn websocket(
    endpoint: &Arc<Endpoint>,
    parts: &mut Parts,
    session: Option<Arc<EioSession>>,
) -> Response {
    let upgrade = ws::WebSocketUpgrade::from_request_parts(parts, &()).await;
    if upgrade.is_err() || parts.method != Method::GET {
        return EngineError::BadRequest.into_response();
    }
    let edge = endpoint.edge.clone();
    if let Some(session) = session {
        if session.transport() != Transport::Polling || !session.is_open() {
            return EngineError::BadRequest.into_response();
        }
        let upgrade = match ws::accept(&edge, upgrade) {
            Ok(upgrade) => upgrade,
            Err(refusal) => return refusal.into_response(),
        };
        let wait = edge.settings().pong_timeout;
        return upgrade.on_upgrade(move |socket| {
            tokio::spawn(async move {
                let probed = tokio::time::timeout(wait, probe(&session, socket)).await;
                match probed {
                    Ok(Some(socket)) => pump(&session, socket).await,
                    _ => session.cancel_upgrade(),
                }
            });
        });
    }
    let Ok(caller) = Caller::from_request_parts(parts, &edge).await;
    let admitted = match Admission::SESSION.admit_connection(&edge, &caller) {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.into_response(),
    };
    let upgrade = match ws::accept(&edge, upgrade) {
        Ok(upgrade) => upgrade,
        Err(refusal) => return refusal.into_response(),
    };
    let open = endpoint.open_packet(&random_id(), &[]).encode_text();
    let serves = endpoint.serves;
    upgrade.on_upgrade(move |mut socket| {
        tokio::spawn(async move {
            let Admitted { identity, permit } = admitted;
            if socket.send(Message::Text(open.into())).await.is_ok() {
                let socket = EioWebSocket::new(socket);
                Box::pin(run(serves, edge, socket, permit, identity)).await;
            }
        });
    })
}

/// The upgrade's handshake on the new WebSocket: `2probe` answered with
/// `3probe` (and a noop that ends the pending poll), then `5`. `None` when
/// the client did something else: the session stays on polling.
async fn probe(session: &EioSession, mut socket: ws::WebSocket) -> Option<ws::WebSocket> {
    let Some(Ok(Message::Text(probe))) = socket.next().await else {
        return None;
    };
    if probe.as_str() != "2probe" || !session.probe() {
        return None;
    }
    socket.send(Message::Text("3probe".into())).await.ok()?;
    let Some(Ok(Message::Text(upgrade))) = socket.next().await else {
        return None;
    };
    if upgrade.as_str() != "5" {
        return None;
    }
    session.upgrade();
    Some(socket)
}

/// Moves a session's packets to its WebSocket and the client's packets to
/// the session, until either ends.
async fn pump(session: &EioSession, mut socket: ws::WebSocket) {
    loop {
        tokio::select! {
            out = poll_fn(|cx| session.poll_websocket(cx)) => match out {
                Ok(packets) => {
                    for packet in packets {
                        let message = match packet.encode_websocket() {
                            Ok(text) => Message::Text(text.into()),
                            Err(bytes) => Message::Binary(bytes),
                        };
                        if socket.feed(message).await.is_err() {
                            session.break_off();
                            return;
                        }
                    }
                    if socket.flush().await.is_err() {
                        session.break_off();
                        return;
                    }
                }
                Err(frame) => {
                    let _ = socket.send(Message::Close(frame)).await;
                    return;
                }
            },
            incoming = socket.next() => {
                let packet = match incoming {
                    Some(Ok(Message::Text(text))) => Packet::decode_text(text.as_str()),
                    Some(Ok(Message::Binary(bytes))) => Ok(Packet::Binary(bytes)),
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => {
                        session.break_off();
                        return;
                    }
                };
                match packet {
                    // An ended session's close goes out on the next turn.
                    Ok(packet) => {
                        let _ = session.receive(packet).await;
                    }
                    Err(error) => {
                        count_error(error.label());
                        session.break_off();
                    }
                }
            }
        }
    }
}

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=UTF-8")], body).into_response()
}
