//! The admin UI of `admin/` (HTML, CSS and ES modules, no build step, no
//! third-party code), served on the admin listener only:
//!
//! | path | what |
//! |---|---|
//! | `GET /ui` | a redirect to `/ui/` (the pages' relative URLs need the slash) |
//! | `GET /ui/` | `index.html` |
//! | `GET /ui/<file>` | each file of `admin/` |
//!
//! Every answer is revalidated (`no-cache`) against an `ETag` of the UI's
//! content version (304 when the browser holds it), and carries a
//! content security policy that lets the pages load only their own files
//! and call only their own origin (the `/api/` of the same listener), no
//! CORS header, and `x-frame-options: DENY`: another site can neither read
//! nor frame the UI.
//!
//! The UI is static and holds no secret: it asks for the API key and sends
//! it to `/api/` as a Bearer token. It is served where the API can be
//! called: with an API key, or without one on a loopback listener. On a
//! listener reachable from other hosts without a key, every path answers
//! 403 saying why.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use crate::{conditional, counted, embedded};

/// Where the UI lives on the admin listener.
pub const ADMIN_PATH: &str = "/ui/";

const INDEX: &str = "index.html";
const REVALIDATE: &str = "no-cache";
/// The pages' own files and their own origin, nothing else.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      img-src 'self' data:; connect-src 'self'; form-action 'none'; \
                      base-uri 'none'; frame-ancestors 'none'";

/// The routes of the admin UI. With `enabled` false (no API key on a
/// listener that is not loopback), each answers 403 with the reason.
pub fn admin_routes<S: Clone + Send + Sync + 'static>(enabled: bool) -> Router<S> {
    if !enabled {
        return Router::new()
            .route("/ui", get(refused))
            .route("/ui/", get(refused))
            .route("/ui/{file}", get(refused));
    }
    Router::new()
        .route(
            "/ui",
            get(|| async { counted(Redirect::permanent(ADMIN_PATH).into_response()) }),
        )
        .route(
            "/ui/",
            get(|headers: HeaderMap| async move { page(INDEX, &headers) }),
        )
        .route(
            "/ui/{file}",
            get(
                |Path(file): Path<String>, headers: HeaderMap| async move { page(&file, &headers) },
            ),
        )
}

/// The file `name` of the UI, or 404 naming what exists.
fn page(name: &str, request: &HeaderMap) -> Response {
    let found = embedded::ADMIN_FILES
        .iter()
        .find(|(file, _)| *file == name)
        .map(|(_, bytes)| *bytes);
    let response = match (found, content_type(name)) {
        (Some(bytes), Some(kind)) => conditional(
            request,
            embedded::ADMIN_VERSION,
            kind,
            REVALIDATE,
            bytes.to_vec(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            format!("{ADMIN_PATH}{name} is not part of the admin UI; open {ADMIN_PATH}\n"),
        )
            .into_response(),
    };
    guarded(response)
}

async fn refused() -> Response {
    guarded(
        (
            StatusCode::FORBIDDEN,
            "the admin UI is off on this listener: it is not on loopback and no API key is \
             configured (--api-key)\n",
        )
            .into_response(),
    )
}

fn content_type(name: &str) -> Option<&'static str> {
    let (_, extension) = name.rsplit_once('.')?;
    Some(match extension {
        "html" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "svg" => "image/svg+xml",
        _ => return None,
    })
}

/// The headers that keep other sites out, on every answer; counted.
fn guarded(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    counted(response)
}

#[cfg(test)]
mod tests {
    use axum::http::Method;

    use super::*;
    use crate::tests::{fetch_from, value};

    async fn get(enabled: bool, path: &str, etag: Option<&str>) -> (StatusCode, HeaderMap, String) {
        let held: Vec<(header::HeaderName, &str)> = etag
            .map(|etag| (header::IF_NONE_MATCH, etag))
            .into_iter()
            .collect();
        fetch_from(admin_routes(enabled), Method::GET, path, &held).await
    }

    #[tokio::test]
    async fn every_file_is_served_with_its_type_and_revalidated() {
        let (status, headers, body) = get(true, "/ui/", None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.starts_with("<!doctype html>"), "{body}");
        assert_eq!(
            value(&headers, header::CONTENT_TYPE),
            "text/html; charset=utf-8"
        );
        assert_eq!(value(&headers, header::CACHE_CONTROL), "no-cache");
        assert!(headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        assert_eq!(value(&headers, header::X_FRAME_OPTIONS), "DENY");
        assert!(value(&headers, header::CONTENT_SECURITY_POLICY).contains("connect-src 'self'"));
        for (name, _) in embedded::ADMIN_FILES {
            let (status, headers, _) = get(true, &format!("/ui/{name}"), None).await;
            assert_eq!(status, StatusCode::OK, "{name}");
            assert_eq!(
                headers.get(header::CONTENT_TYPE).unwrap(),
                content_type(name).unwrap(),
                "{name}"
            );
        }
        assert!(embedded::ADMIN_FILES.len() >= 3);
    }

    #[tokio::test]
    async fn a_held_version_is_304_and_unknown_files_404() {
        let (_, headers, _) = get(true, "/ui/app.css", None).await;
        let etag = value(&headers, header::ETAG).to_string();
        let (status, _, body) = get(true, "/ui/app.css", Some(&etag)).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert_eq!(body, "");
        let (status, _, body) = get(true, "/ui/secret.txt", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("open /ui/"), "{body}");
        let (status, headers, _) = get(true, "/ui", None).await;
        assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
        assert_eq!(value(&headers, header::LOCATION), "/ui/");
    }

    #[tokio::test]
    async fn off_where_the_api_refuses_every_call() {
        for path in ["/ui", "/ui/", "/ui/index.html"] {
            let (status, _, body) = get(false, path, None).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
            assert!(body.contains("--api-key"), "{body}");
        }
    }
}
