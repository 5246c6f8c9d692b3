//! What a ferrocast node serves to browsers, embedded at build time: the
//! JavaScript SDK of `js/` (plain ES modules and `index.d.ts`, no build
//! step) on the public listener, and the admin UI of `admin/` on the admin
//! listener ([`admin_routes`], see its module).
//!
//! [`routes`] serves the SDK on the public listener:
//!
//! | path | what | `cache-control` |
//! |---|---|---|
//! | `GET /ferrocast.js` | `export * from "./ferrocast/<version>/index.js";` | `no-cache` |
//! | `GET /ferrocast.d.ts` | the typings | `no-cache` |
//! | `GET /ferrocast/<version>/<file>` | each module (and `index.d.ts`) | `public, max-age=31536000, immutable` |
//!
//! The entry's URL never changes, so pages keep one `import`; the modules'
//! URLs carry the [`VERSION`] (a hash of every embedded file), so a browser
//! or a CDN keeps them forever and a new build is new URLs. A module of
//! another version, or an unknown file, is a 404 whose text names the
//! current entry. Every answer carries an `ETag` (answered with 304 on
//! `If-None-Match`), `access-control-allow-origin: *` (pages of other
//! origins import the modules; the code is public) and
//! `x-content-type-options: nosniff`.
//!
//! These are static files: no admission, no token, no connection slot.
//! Each answer counts once in `ferrocast_web_requests_total{status}`.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics::counter;

use ferrocast_core::metrics as names;

mod admin;
mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
}

pub use admin::{admin_routes, ADMIN_PATH};

/// The content version: the first 12 hex digits of a SHA-256 over every
/// embedded file, computed when the crate is built.
pub const VERSION: &str = embedded::VERSION;

/// The entry module's URL path, stable across versions.
pub const ENTRY_PATH: &str = "/ferrocast.js";
/// The typings' URL path, stable across versions.
pub const TYPINGS_PATH: &str = "/ferrocast.d.ts";

const TYPINGS_FILE: &str = "index.d.ts";
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const TYPESCRIPT: &str = "application/typescript; charset=utf-8";
/// The stable URLs: revalidate every time (a 304 costs a round trip, no body).
const REVALIDATE: &str = "no-cache";
/// The versioned URLs: their content never changes.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// The routes that serve the SDK, for any router state (the public
/// listener merges them into its router).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(ENTRY_PATH, get(entry))
        .route(TYPINGS_PATH, get(typings))
        .route("/ferrocast/{version}/{file}", get(module))
}

/// The embedded files' names, sorted (`index.js`, `index.d.ts`, …).
pub fn files() -> impl Iterator<Item = &'static str> {
    embedded::FILES.iter().map(|(name, _)| *name)
}

/// The versioned URL path of an embedded file.
pub fn module_path(file: &str) -> String {
    format!("/ferrocast/{VERSION}/{file}")
}

/// The embedded bytes of `file`.
fn file(name: &str) -> Option<&'static [u8]> {
    embedded::FILES
        .iter()
        .find(|(embedded, _)| *embedded == name)
        .map(|(_, bytes)| *bytes)
}

fn content_type(file: &str) -> &'static str {
    if file.ends_with(".d.ts") {
        TYPESCRIPT
    } else {
        JAVASCRIPT
    }
}

/// `GET /ferrocast.js`: re-exports the modules of this version.
async fn entry(headers: HeaderMap) -> Response {
    let body = format!("export * from \".{}\";\n", module_path("index.js"));
    answer(&headers, JAVASCRIPT, REVALIDATE, body.into_bytes())
}

/// `GET /ferrocast.d.ts`.
async fn typings(headers: HeaderMap) -> Response {
    match file(TYPINGS_FILE) {
        Some(bytes) => answer(&headers, TYPESCRIPT, REVALIDATE, bytes.to_vec()),
        None => not_found(TYPINGS_PATH),
    }
}

/// `GET /ferrocast/<version>/<file>`: a module of this version.
async fn module(Path((version, name)): Path<(String, String)>, headers: HeaderMap) -> Response {
    match file(&name).filter(|_| version == VERSION) {
        Some(bytes) => answer(&headers, content_type(&name), IMMUTABLE, bytes.to_vec()),
        None => not_found(&format!("/ferrocast/{version}/{name}")),
    }
}

/// 200 with `body`, or 304 when the client holds this version already.
fn answer(
    request: &HeaderMap,
    content_type: &'static str,
    cache: &'static str,
    body: Vec<u8>,
) -> Response {
    public(conditional(request, VERSION, content_type, cache, body))
}

/// 200 with `body` and the `ETag` of `version`, or 304 when `request`
/// holds that version already.
fn conditional(
    request: &HeaderMap,
    version: &str,
    content_type: &'static str,
    cache: &'static str,
    body: Vec<u8>,
) -> Response {
    // A node serves one version: every URL's content follows from it.
    let etag = format!("\"{version}\"");
    let fresh = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*");
    let (status, body) = if fresh {
        (StatusCode::NOT_MODIFIED, Vec::new())
    } else {
        (StatusCode::OK, body)
    };
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    if status == StatusCode::OK {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, etag);
    }
    response
}

/// 404 naming what this node serves instead of `path`.
fn not_found(path: &str) -> Response {
    let body = format!(
        "{path} is not served here: this node serves the ferrocast SDK version {VERSION} at \
         {ENTRY_PATH} (typings at {TYPINGS_PATH}), its files under /ferrocast/{VERSION}/: {}\n",
        files().collect::<Vec<_>>().join(", ")
    );
    public((StatusCode::NOT_FOUND, body).into_response())
}

/// The headers of every answer, counted.
fn public(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    counted(response)
}

/// `response` with `x-content-type-options: nosniff`, counted in
/// `ferrocast_web_requests_total{status}`.
fn counted(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The only statuses these routes answer.
    let status = match response.status() {
        StatusCode::OK => "200",
        StatusCode::NOT_MODIFIED => "304",
        StatusCode::PERMANENT_REDIRECT => "308",
        StatusCode::FORBIDDEN => "403",
        _ => "404",
    };
    counter!(names::WEB_REQUESTS, "status" => status).increment(1);
    response
}

#[cfg(test)]
mod tests {

    use axum::body::{to_bytes, Body};
    use axum::http::{Method, Request};
    use tower::ServiceExt;

    use super::*;

    /// Status, headers and body of `method path` with `headers`.
    async fn fetch(
        method: Method,
        path: &str,
        headers: &[(header::HeaderName, &str)],
    ) -> (StatusCode, HeaderMap, String) {
        fetch_from(routes(), method, path, headers).await
    }

    /// [`fetch`] from `router` (the SDK's or the admin UI's routes).
    pub(crate) async fn fetch_from(
        router: Router,
        method: Method,
        path: &str,
        headers: &[(header::HeaderName, &str)],
    ) -> (StatusCode, HeaderMap, String) {
        let mut request = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            request = request.header(name, *value);
        }
        let response = router
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let body = to_bytes(body, usize::MAX).await.unwrap();
        (
            parts.status,
            parts.headers,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    async fn get(path: &str) -> (StatusCode, HeaderMap, String) {
        fetch(Method::GET, path, &[]).await
    }

    pub(crate) fn value(headers: &HeaderMap, name: header::HeaderName) -> &str {
        headers.get(name).unwrap().to_str().unwrap()
    }

    #[test]
    fn the_version_is_twelve_hex_digits_and_the_sdk_is_embedded() {
        assert_eq!(VERSION.len(), 12);
        assert!(VERSION.bytes().all(|b| b.is_ascii_hexdigit()), "{VERSION}");
        let files: Vec<&str> = files().collect();
        assert!(files.contains(&"index.js"), "{files:?}");
        assert!(files.contains(&"index.d.ts"), "{files:?}");
        assert!(
            files
                .iter()
                .all(|f| f.ends_with(".js") || *f == "index.d.ts"),
            "{files:?}"
        );
    }

    #[tokio::test]
    async fn the_entry_reexports_the_modules_of_this_version_and_is_revalidated() {
        let (status, headers, body) = get("/ferrocast.js").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            format!("export * from \"./ferrocast/{VERSION}/index.js\";\n")
        );
        assert_eq!(value(&headers, header::CONTENT_TYPE), JAVASCRIPT);
        assert_eq!(value(&headers, header::CACHE_CONTROL), "no-cache");
        assert_eq!(value(&headers, header::ETAG), format!("\"{VERSION}\""));
        assert_eq!(value(&headers, header::ACCESS_CONTROL_ALLOW_ORIGIN), "*");
        assert_eq!(value(&headers, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
    }

    #[tokio::test]
    async fn every_module_is_served_immutable_under_its_version() {
        for name in files() {
            let (status, headers, body) = get(&module_path(name)).await;
            assert_eq!(status, StatusCode::OK, "{name}");
            assert_eq!(body.as_bytes(), file(name).unwrap(), "{name}");
            assert_eq!(value(&headers, header::CONTENT_TYPE), content_type(name));
            assert_eq!(value(&headers, header::CACHE_CONTROL), IMMUTABLE);
            assert_eq!(value(&headers, header::ACCESS_CONTROL_ALLOW_ORIGIN), "*");
        }
        assert_eq!(content_type("shared-worker.js"), JAVASCRIPT);
    }

    #[tokio::test]
    async fn the_typings_have_their_own_content_type() {
        let (status, headers, body) = get("/ferrocast.d.ts").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.as_bytes(), file("index.d.ts").unwrap());
        assert_eq!(
            value(&headers, header::CONTENT_TYPE),
            "application/typescript; charset=utf-8"
        );
        assert_eq!(value(&headers, header::CACHE_CONTROL), "no-cache");
    }

    #[tokio::test]
    async fn a_held_version_is_answered_304_without_a_body() {
        let etag = format!("\"{VERSION}\"");
        for held in [etag.clone(), format!("\"0\", W/{etag}"), "*".into()] {
            for path in ["/ferrocast.js".to_string(), module_path("index.js")] {
                let (status, headers, body) =
                    fetch(Method::GET, &path, &[(header::IF_NONE_MATCH, &held)]).await;
                assert_eq!(status, StatusCode::NOT_MODIFIED, "{path} {held}");
                assert_eq!(body, "");
                assert_eq!(value(&headers, header::ETAG), etag);
            }
        }
        let (status, _, body) = fetch(
            Method::GET,
            "/ferrocast.js",
            &[(header::IF_NONE_MATCH, "\"old\"")],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(!body.is_empty());
    }

    #[tokio::test]
    async fn another_version_or_an_unknown_file_is_404_naming_the_entry() {
        for path in [
            "/ferrocast/000000000000/index.js".to_string(),
            module_path("nope.js"),
            module_path("package.json"),
        ] {
            let (status, headers, body) = get(&path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert!(
                body.starts_with(&format!("{path} is not served here")),
                "{body}"
            );
            assert!(body.contains("/ferrocast.js"), "{body}");
            assert!(body.contains(&module_path("")), "{body}");
            assert_eq!(value(&headers, header::ACCESS_CONTROL_ALLOW_ORIGIN), "*");
        }
    }

    #[tokio::test]
    async fn head_answers_the_headers_only() {
        let (status, headers, body) = fetch(Method::HEAD, "/ferrocast.js", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "");
        assert_eq!(value(&headers, header::CONTENT_TYPE), JAVASCRIPT);
    }
}
