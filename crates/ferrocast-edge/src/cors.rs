//! CORS for the routes a page of another origin calls with `fetch()`: the
//! browser SDK's fallback when WebSocket is blocked streams `GET /sse` with
//! `Authorization` and `Last-Event-ID` headers, and sends `POST /publish`
//! as `application/json`. Both make the browser send a preflight first.
//!
//! The origins allowed are admission's (`allowed_origins`; none configured
//! allows every one), so CORS lets a page read exactly what admission lets
//! it do. The answer names the page's origin rather than `*`, with
//! `vary: origin` so that a cache keeps one answer per origin. Tokens travel
//! in headers, not cookies: `access-control-allow-credentials` is never
//! sent.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{options, MethodRouter};

use crate::admission::{self, Refusal};
use crate::edge::Edge;

/// The request headers the SDK sends cross-origin.
const ALLOWED_HEADERS: &str = "authorization, content-type, last-event-id";
/// Seconds a browser may reuse a preflight's answer: short enough that a
/// change of `allowed_origins` reaches pages soon.
const MAX_AGE_SECONDS: &str = "600";

/// `OPTIONS` of a route whose methods are `methods`: 204 with the CORS
/// headers for an allowed origin, 403 (counted as admission's origin
/// refusal) for another.
pub(crate) fn preflight(methods: &'static str) -> MethodRouter<Edge> {
    options(
        move |State(edge): State<Edge>, headers: HeaderMap| async move {
            answer_preflight(&edge, &headers, methods)
        },
    )
}

fn answer_preflight(edge: &Edge, headers: &HeaderMap, methods: &'static str) -> Response {
    let origin = headers.get(header::ORIGIN);
    let Some(allowed) = allowed(edge, origin) else {
        return Refusal::origin().into_response();
    };
    let mut response = StatusCode::NO_CONTENT.into_response();
    let out = response.headers_mut();
    if let Some(origin) = allowed {
        allow(out, origin.clone());
    }
    out.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    out.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOWED_HEADERS),
    );
    out.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(MAX_AGE_SECONDS),
    );
    response
}

/// Middleware of the routes a page calls cross-origin: every answer,
/// refusals included (so that the page can read why), names an allowed
/// origin.
pub(crate) async fn allow_origin(
    State(edge): State<Edge>,
    request: Request,
    next: Next,
) -> Response {
    let origin = request.headers().get(header::ORIGIN).cloned();
    let mut response = next.run(request).await;
    if let Some(Some(origin)) = allowed(&edge, origin.as_ref()) {
        allow(response.headers_mut(), origin.clone());
    }
    response
}

/// `None`: the origin is refused; `Some(None)`: no `Origin` was sent (not a
/// browser's cross-origin request) and the node lets such clients in.
fn allowed<'a>(edge: &Edge, origin: Option<&'a HeaderValue>) -> Option<Option<&'a HeaderValue>> {
    match origin {
        Some(value) => {
            let text = value.to_str().ok()?;
            admission::origin_allowed(edge.settings(), Some(text)).then_some(Some(value))
        }
        None => admission::origin_allowed(edge.settings(), None).then_some(None),
    }
}

fn allow(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.append(header::VARY, HeaderValue::from_static("origin"));
}
