//! The HTTP side of every SockJS URL: [`dispatch`] reads the path below the
//! endpoint's prefix and answers, through the [`SessionDirectory`] for
//! session requests.
//!
//! | path | methods | answer |
//! |---|---|---|
//! | `` or `/` | GET | the greeting |
//! | `/info` | GET, OPTIONS | capabilities, entropy (CORS, not cached) |
//! | `/iframe[-<version>].html` | GET | the iframe page (cached, ETag) |
//! | `/websocket` | GET (upgrade) | a plain WebSocket |
//! | `/<server>/<session>/websocket` | GET (upgrade) | SockJS frames over a WebSocket |
//! | `/<server>/<session>/xhr`, `xhr_streaming` | POST, OPTIONS | frames, `\n` after each |
//! | `/<server>/<session>/eventsource` | GET | `data: <frame>\r\n\r\n` |
//! | `/<server>/<session>/htmlfile?c=<callback>` | GET | `<script>p("<frame>");</script>` |
//! | `/<server>/<session>/jsonp?c=<callback>` | GET | `/**/<callback>("<frame>");` |
//! | `/<server>/<session>/xhr_send` | POST, OPTIONS | 204 |
//! | `/<server>/<session>/jsonp_send` | POST | 200 `ok` |
//!
//! Server and session ids are non-empty and have no dot; the server id is
//! only for load balancers and is ignored.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ws::{Message, Utf8Bytes};
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use bytes::{BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use metrics::counter;

use ferrocast_core::metrics as names;

use super::directory::Refused;
use super::frame::{self, PayloadError};
use super::http_session::Answering;
use super::socket::FramedWebSocket;
use super::{headers, pages, service, Endpoint, REQUESTS};
use crate::admission::{Admission, Admitted, Caller, Refusal};
use crate::session::count_error;
use crate::ws;

/// The first bytes of an xhr-streaming response: some browsers hand a
/// response to the page only after 2 KiB.
const XHR_STREAMING_PRELUDE: usize = 2048;
/// Longest server or session id: sockjs-client's are a few characters; the
/// directory keeps session ids, so they are bounded.
const MAX_ID_LENGTH: usize = 128;
/// The htmlfile page is padded to this many bytes, for the same reason.
const HTMLFILE_PRELUDE: usize = 1024;

/// A receiving transport: how it wraps each frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Receiver {
    Xhr,
    XhrStreaming,
    EventSource,
    HtmlFile,
    Jsonp,
}

impl Receiver {
    fn label(self) -> &'static str {
        match self {
            Self::Xhr => "xhr",
            Self::XhrStreaming => "xhr_streaming",
            Self::EventSource => "eventsource",
            Self::HtmlFile => "htmlfile",
            Self::Jsonp => "jsonp",
        }
    }

    fn streaming(self) -> bool {
        matches!(
            self,
            Self::XhrStreaming | Self::EventSource | Self::HtmlFile
        )
    }

    fn method(self) -> Method {
        match self {
            Self::Xhr | Self::XhrStreaming => Method::POST,
            Self::EventSource | Self::HtmlFile | Self::Jsonp => Method::GET,
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Self::Xhr | Self::XhrStreaming | Self::Jsonp => "application/javascript; charset=UTF-8",
            // The event stream format is UTF-8 by definition (and the
            // reference suite expects no parameter).
            Self::EventSource => "text/event-stream",
            Self::HtmlFile => "text/html; charset=UTF-8",
        }
    }

    /// What the response starts with, before any frame.
    fn prelude(self, callback: &str) -> Option<Bytes> {
        match self {
            Self::XhrStreaming => {
                let mut prelude = vec![b'h'; XHR_STREAMING_PRELUDE];
                prelude.push(b'\n');
                Some(prelude.into())
            }
            Self::EventSource => Some(Bytes::from_static(b"\r\n")),
            Self::HtmlFile => {
                let mut page = format!(
                    r#"<!doctype html>
<html><head>
  <meta http-equiv="X-UA-Compatible" content="IE=edge" />
  <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
</head><body><h2>Don't panic!</h2>
  <script>
    document.domain = document.domain;
    var c = parent.{callback};
    c.start();
    function p(d) {{c.message(d);}};
    window.onload = function() {{c.stop();}};
  </script>"#
                );
                let padding = HTMLFILE_PRELUDE.saturating_sub(page.len());
                page.extend(std::iter::repeat_n(' ', padding));
                page.push_str("\r\n\r\n");
                Some(page.into())
            }
            Self::Xhr | Self::Jsonp => None,
        }
    }

    /// `frame` as this transport carries it.
    fn wrap(self, frame: &Bytes, callback: &str) -> Bytes {
        let mut out = BytesMut::with_capacity(frame.len() + 32);
        // Frames are UTF-8: the node writes them from text.
        let quoted = |out: &mut BytesMut| frame::quote(&String::from_utf8_lossy(frame), out);
        match self {
            Self::Xhr | Self::XhrStreaming => {
                out.put_slice(frame);
                out.put_u8(b'\n');
            }
            Self::EventSource => {
                out.put_slice(b"data: ");
                out.put_slice(frame);
                out.put_slice(b"\r\n\r\n");
            }
            Self::HtmlFile => {
                out.put_slice(b"<script>\np(");
                quoted(&mut out);
                out.put_slice(b");\n</script>\r\n");
            }
            Self::Jsonp => {
                out.put_slice(b"/**/");
                out.put_slice(callback.as_bytes());
                out.put_u8(b'(');
                quoted(&mut out);
                out.put_slice(b");\r\n");
            }
        }
        out.freeze()
    }
}

/// Answers a request below `endpoint`'s prefix.
pub(super) async fn dispatch(endpoint: Arc<Endpoint>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let rest = path.strip_prefix(&endpoint.prefix).unwrap_or_default();
    let method = parts.method.clone();
    match rest {
        "" | "/" => page(&method, "greeting", &[Method::GET], pages::greeting),
        "/info" if method == Method::OPTIONS => {
            count("options");
            preflight(&endpoint, &parts.headers, "OPTIONS, GET")
        }
        "/info" => page(&method, "info", &[Method::GET], || {
            pages::info(&endpoint, &parts.headers)
        }),
        "/websocket" if endpoint.websocket => {
            count("raw_websocket");
            websocket(&endpoint, &mut parts, false).await
        }
        _ => {
            let name = rest.strip_prefix('/').unwrap_or(rest);
            if pages::is_iframe(name) {
                let url = &endpoint.edge.settings().sockjs.client_url;
                return page(&method, "iframe", &[Method::GET], || {
                    pages::iframe(url, &parts.headers)
                });
            }
            let mut ids = name.split('/');
            let (Some(_server), Some(session), Some(transport), None) =
                (ids.next(), ids.next(), ids.next(), ids.next())
            else {
                return not_found();
            };
            if [_server, session]
                .iter()
                .any(|id| id.is_empty() || id.contains('.') || id.len() > MAX_ID_LENGTH)
            {
                return not_found();
            }
            session_request(&endpoint, parts, body, session, transport).await
        }
    }
}

async fn session_request(
    endpoint: &Arc<Endpoint>,
    mut parts: Parts,
    body: Body,
    session: &str,
    transport: &str,
) -> Response {
    let method = parts.method.clone();
    let receiver = match transport {
        "websocket" if endpoint.websocket => {
            count("websocket");
            return websocket(endpoint, &mut parts, true).await;
        }
        "xhr" => Receiver::Xhr,
        "xhr_streaming" => Receiver::XhrStreaming,
        "eventsource" => Receiver::EventSource,
        "htmlfile" => Receiver::HtmlFile,
        "jsonp" => Receiver::Jsonp,
        "xhr_send" | "jsonp_send" => {
            count(if transport == "xhr_send" {
                "xhr_send"
            } else {
                "jsonp_send"
            });
            let xhr = transport == "xhr_send";
            if xhr && method == Method::OPTIONS {
                return preflight(endpoint, &parts.headers, "OPTIONS, POST");
            }
            if method != Method::POST {
                return not_allowed(&[Method::POST]);
            }
            return send(endpoint, &parts, body, session, xhr).await;
        }
        _ => return not_found(),
    };
    count(receiver.label());
    if method == Method::OPTIONS && receiver.method() == Method::POST {
        return preflight(endpoint, &parts.headers, "OPTIONS, POST");
    }
    if method != receiver.method() {
        return not_allowed(&[receiver.method()]);
    }
    receive(endpoint, &mut parts, session, receiver).await
}

/// A receiving request: the session's frames, wrapped for the transport.
async fn receive(
    endpoint: &Arc<Endpoint>,
    parts: &mut Parts,
    session: &str,
    receiver: Receiver,
) -> Response {
    let callback = match receiver {
        Receiver::HtmlFile | Receiver::Jsonp => match callback(&parts.uri) {
            Ok(callback) => callback,
            Err(refusal) => {
                count_error("sockjs_callback");
                return error(StatusCode::INTERNAL_SERVER_ERROR, refusal);
            }
        },
        _ => String::new(),
    };
    let Ok(caller) = Caller::from_request_parts(parts, &endpoint.edge).await;
    let answering = Answering {
        streaming: receiver.streaming(),
        limit: endpoint.response_limit,
    };
    let frames = match endpoint
        .directory
        .receive(session, answering, &caller)
        .await
    {
        Ok(frames) => frames,
        Err(refused) => return refused_answer(endpoint, &parts.headers, refused),
    };
    let prelude = receiver.prelude(&callback);
    let body = futures::stream::iter(prelude)
        .chain(frames.map(move |frame| receiver.wrap(&frame, &callback)))
        .map(Ok::<_, Infallible>);
    let mut response = (
        [(header::CONTENT_TYPE, receiver.content_type())],
        Body::from_stream(body),
    )
        .into_response();
    session_headers(endpoint, &parts.headers, response.headers_mut());
    if receiver.streaming() {
        // nginx buffers responses unless told not to.
        response
            .headers_mut()
            .insert("x-accel-buffering", HeaderValue::from_static("no"));
    }
    response
}

/// A sending request: its messages into the session.
async fn send(
    endpoint: &Arc<Endpoint>,
    parts: &Parts,
    body: Body,
    session: &str,
    xhr: bool,
) -> Response {
    let limit = endpoint.edge.settings().max_message_size;
    let Ok(payload) = axum::body::to_bytes(body, limit).await else {
        counter!(names::LIMIT_HITS, "limit" => "message_size").increment(1);
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("a send carries at most {limit} bytes"),
        );
    };
    let form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"));
    let payload = if !xhr && form {
        form_payload(payload).await
    } else {
        Ok(payload)
    };
    let messages = match payload.and_then(|payload| frame::decode(&payload)) {
        Ok(messages) => messages,
        Err(error) => {
            count_error(error.label());
            let mut response = self::error(StatusCode::INTERNAL_SERVER_ERROR, &error.to_string());
            session_headers(endpoint, &parts.headers, response.headers_mut());
            return response;
        }
    };
    if let Err(refused) = endpoint.directory.send(session, messages).await {
        return refused_answer(endpoint, &parts.headers, refused);
    }
    let mut response = if xhr {
        StatusCode::NO_CONTENT.into_response()
    } else {
        "ok".into_response()
    };
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    session_headers(endpoint, &parts.headers, response.headers_mut());
    response
}

/// The `d` field of a form-encoded `jsonp_send` body.
async fn form_payload(body: Bytes) -> Result<Bytes, PayloadError> {
    let request = Request::builder()
        .method(Method::POST)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .map_err(|_| PayloadError::Broken)?;
    let Form(fields) = Form::<Vec<(String, String)>>::from_request(request, &())
        .await
        .map_err(|_| PayloadError::Broken)?;
    fields
        .into_iter()
        .find(|(name, _)| name == "d")
        .map(|(_, value)| Bytes::from(value))
        .ok_or(PayloadError::Empty)
}

/// The `c` parameter of htmlfile and jsonp: the page's function to call,
/// made of `[A-Za-z0-9_.-]` only (it is written into a script). `Err`: the
/// protocol's text for the refusal.
fn callback(uri: &axum::http::Uri) -> Result<String, &'static str> {
    let params = Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map(|Query(params)| params)
        .unwrap_or_default();
    let Some((_, callback)) = params.into_iter().find(|(name, _)| name == "c") else {
        return Err("\"callback\" parameter required");
    };
    let valid = !callback.is_empty()
        && callback
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !valid {
        return Err("invalid \"callback\" parameter");
    }
    Ok(callback)
}

/// `/websocket` (raw) and `/<server>/<session>/websocket` (`framed`).
async fn websocket(endpoint: &Arc<Endpoint>, parts: &mut Parts, framed: bool) -> Response {
    if parts.method != Method::GET {
        return not_allowed(&[Method::GET]);
    }
    let upgrade_header = parts
        .headers
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"));
    if !upgrade_header {
        return error(
            StatusCode::BAD_REQUEST,
            "Can \"Upgrade\" only to \"WebSocket\".",
        );
    }
    let connection_upgrade = parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if !connection_upgrade {
        return error(
            StatusCode::BAD_REQUEST,
            "\"Connection\" must be \"Upgrade\".",
        );
    }
    let edge = endpoint.edge.clone();
    let Ok(caller) = Caller::from_request_parts(parts, &edge).await;
    let upgrade = ws::WebSocketUpgrade::from_request_parts(parts, &()).await;
    let Admitted { identity, permit } = match Admission::SESSION.admit_connection(&edge, &caller) {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.into_response(),
    };
    let upgrade = match ws::accept(&edge, upgrade) {
        Ok(upgrade) => upgrade,
        Err(refusal) => return refusal.into_response(),
    };
    let kind = endpoint.kind;
    upgrade.on_upgrade(move |mut socket| {
        tokio::spawn(async move {
            if !framed {
                return service::run(kind, edge, socket, permit, identity).await;
            }
            let open = Message::Text(Utf8Bytes::from_static("o"));
            if socket.send(open).await.is_ok() {
                let socket = FramedWebSocket::new(socket);
                service::run(kind, edge, socket, permit, identity).await;
            }
        });
    })
}

/// An endpoint page for `methods`, or 405.
fn page(
    method: &Method,
    label: &'static str,
    methods: &[Method],
    answer: impl FnOnce() -> Response,
) -> Response {
    count(label);
    if methods.contains(method) || (*method == Method::HEAD && methods.contains(&Method::GET)) {
        answer()
    } else {
        not_allowed(methods)
    }
}

/// The answer to a CORS preflight, cached for a year.
fn preflight(endpoint: &Endpoint, request: &HeaderMap, methods: &'static str) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let out = response.headers_mut();
    headers::preflight(out, methods);
    headers::cors(endpoint.edge.settings(), request, out);
    response
}

/// What every session request's answer carries.
fn session_headers(endpoint: &Endpoint, request: &HeaderMap, out: &mut HeaderMap) {
    headers::no_cache(out);
    headers::cors(endpoint.edge.settings(), request, out);
    if endpoint.cookie_needed {
        headers::session_cookie(request, out);
    }
}

fn refused_answer(endpoint: &Endpoint, request: &HeaderMap, refused: Refused) -> Response {
    let mut response = match refused {
        Refused::NotFound => error(StatusCode::NOT_FOUND, "no such SockJS session on this node"),
        Refused::Admission(refusal) => Refusal::into_response(refusal),
    };
    headers::cors(endpoint.edge.settings(), request, response.headers_mut());
    response
}

fn count(transport: &'static str) {
    counter!(REQUESTS, "transport" => transport).increment(1);
}

fn not_found() -> Response {
    count("not_found");
    error(StatusCode::NOT_FOUND, "not a SockJS URL")
}

/// 405 with `Allow`, without a body or a content type (what the reference
/// suite checks).
fn not_allowed(methods: &[Method]) -> Response {
    let allow = methods
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    let mut response = StatusCode::METHOD_NOT_ALLOWED.into_response();
    if let Ok(allow) = HeaderValue::from_str(&allow) {
        response.headers_mut().insert(header::ALLOW, allow);
    }
    response
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")],
        format!("{message}\n"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_wrapped_per_transport() {
        let frame = Bytes::from_static(br#"a["x"]"#);
        let wrap = |receiver: Receiver| receiver.wrap(&frame, "cb");
        assert_eq!(&wrap(Receiver::Xhr)[..], b"a[\"x\"]\n");
        assert_eq!(&wrap(Receiver::EventSource)[..], b"data: a[\"x\"]\r\n\r\n");
        assert_eq!(
            &wrap(Receiver::HtmlFile)[..],
            b"<script>\np(\"a[\\\"x\\\"]\");\n</script>\r\n"
        );
        assert_eq!(&wrap(Receiver::Jsonp)[..], b"/**/cb(\"a[\\\"x\\\"]\");\r\n");
        let prelude = Receiver::HtmlFile.prelude("cb").unwrap();
        assert!(prelude.len() > HTMLFILE_PRELUDE);
        assert!(String::from_utf8_lossy(&prelude).contains("var c = parent.cb;"));
    }
}
