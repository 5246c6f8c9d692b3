//! The endpoint's own pages: the greeting (`GET <prefix>`), `/info` (what a
//! client asks before it opens a session) and the iframe page
//! (`/iframe*.html`, which transports without CORS load from the node's
//! origin).

use std::hash::{DefaultHasher, Hash, Hasher};

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::headers;
use super::Endpoint;
use crate::session::rand_suffix;

const GREETING: &str = "Welcome to SockJS!\n";

/// `GET <prefix>` and `GET <prefix>/`.
pub(super) fn greeting() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")],
        GREETING,
    )
        .into_response()
}

/// `GET <prefix>/info`: whether WebSocket is on, whether cookies are needed,
/// the (unused) origins, and a random number for browsers without a good
/// source of their own.
pub(super) fn info(endpoint: &Endpoint, request: &HeaderMap) -> Response {
    let body = serde_json::json!({
        "websocket": endpoint.websocket,
        "cookie_needed": endpoint.cookie_needed,
        "origins": ["*:*"],
        "entropy": rand_suffix(),
    });
    let mut response = (
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        body.to_string(),
    )
        .into_response();
    let out = response.headers_mut();
    headers::no_cache(out);
    headers::cors(endpoint.edge.settings(), request, out);
    response
}

/// Whether `name` (after the prefix's `/`) names the iframe page:
/// `iframe.html`, or a versioned `iframe-<version>.html`.
pub(super) fn is_iframe(name: &str) -> bool {
    name.strip_prefix("iframe")
        .and_then(|rest| rest.strip_suffix(".html"))
        .is_some_and(|version| {
            version.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'_')
            })
        })
}

/// The iframe page, loading sockjs-client from `client_url`.
fn iframe_page(client_url: &str) -> String {
    format!(
        r#"<!DOCTYPE html>
<html>
<head>
  <meta http-equiv="X-UA-Compatible" content="IE=edge" />
  <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
  <script src="{client_url}"></script>
  <script>
    document.domain = document.domain;
    SockJS.bootstrap_iframe();
  </script>
</head>
<body>
  <h2>Don't panic!</h2>
  <p>This is a SockJS hidden iframe. It's used for cross domain magic.</p>
</body>
</html>"#
    )
}

/// `GET <prefix>/iframe*.html`: cached for a year, with an ETag of its
/// content; 304 when the browser holds it.
pub(super) fn iframe(client_url: &str, request: &HeaderMap) -> Response {
    let page = iframe_page(client_url);
    let mut hasher = DefaultHasher::new();
    page.hash(&mut hasher);
    let etag = format!("\"{:016x}\"", hasher.finish());
    let fresh = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|tag| tag.trim() == etag || tag.trim() == "*");
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, "text/html; charset=UTF-8")], page).into_response()
    };
    let out = response.headers_mut();
    headers::cache_for_a_year(out);
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        out.insert(header::ETAG, etag);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iframe_names_are_the_protocols() {
        for name in [
            "iframe.html",
            "iframe-a.html",
            "iframe-.html",
            "iframe-0.1.2.html",
            "iframe-0.1.2abc-dirty.2144.html",
        ] {
            assert!(is_iframe(name), "{name}");
        }
        for name in [
            "iframe.htm",
            "iframe",
            "IFRAME.HTML",
            "iframe.HTML",
            "iframe.xml",
            "iframe-/.html",
        ] {
            assert!(!is_iframe(name), "{name}");
        }
    }
}
