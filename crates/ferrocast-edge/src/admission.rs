//! Whether a request of the public listener may come in, and how a refusal
//! is answered.
//!
//! Every route admits its requests through an [`Admission`], which runs the
//! checks the route needs in one fixed order:
//!
//! | # | check | refusal | counted in |
//! |---|---|---|---|
//! | 1 | the node drains | 503, `Retry-After: 5` | `ferrocast_connections_rejected_total{reason="draining"}` |
//! | 2 | the client address's rate ([`Limited`] says as what the request counts) | 429, `Retry-After` | `{reason="rate_limited"}`, `ferrocast_rate_limited_total{kind}` |
//! | 3 | `Origin` against `allowed_origins` | 403 | `{reason="origin"}` |
//! | 4 | the token, when one is sent (header, or `token` query parameter) | 401 | `{reason="unauthorized"}`, `ferrocast_auth_failures_total{reason}` |
//! | 5 | a connection slot under `max_connections` | 503, `Retry-After: 5` | `{reason="node_limit"}`, `ferrocast_limit_hits_total{limit="connections"}` |
//!
//! Cheapest and most telling first: a draining node sends everyone
//! elsewhere before it counts anything; every attempt of an address counts
//! against its rate, whatever else is wrong with it, so a flood of bad
//! requests is limited too; a page of a foreign origin learns nothing about
//! tokens; and the slot comes last, so a request that admission refuses
//! never holds one (a route's own checks run after admission, and a request
//! they refuse gives its slot back at once).
//!
//! The counters named are those of a refusal answered as text (a connection
//! route); answered in JSON (`POST /publish`, which opens no connection) a
//! refusal counts in `ferrocast_client_errors_total{code}` instead. The
//! rate, token and slot counters are counted either way.
//!
//! A new kind of session (SockJS, Socket.IO) admits a request with one call,
//! then refuses what it checks itself as a [`Refusal`] too:
//!
//! ```ignore
//! async fn open(State(edge): State<Edge>, caller: Caller) -> Result<Response, Refusal> {
//!     let Admitted { identity, permit } = Admission::SESSION.admit_connection(&edge, &caller)?;
//!     // … the transport's own checks, then serve the session holding `permit`.
//! }
//! ```
//!
//! A [`Refusal`] is one shape for every route: an HTTP status, the JSON
//! protocol's [`ErrorCode`], a message for the client and the check that
//! refused (the metric label). Connection routes (`/ws`, `/echo`, `/sse`)
//! answer it as text ([`Answer::Text`]); `POST /publish` as the JSON
//! protocol's error object ([`Answer::Json`]).

// The refusals here are the HTTP responses themselves, built once per refused
// request: boxing them would buy nothing.
#![allow(clippy::result_large_err)]

use std::convert::Infallible;
use std::net::IpAddr;

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use metrics::counter;
use tokio::sync::OwnedSemaphorePermit;

use ferrocast_core::metrics as names;
use ferrocast_protocol::json::encode_error;
use ferrocast_protocol::{ErrorCode, RequestError, Topic, TopicError, TopicFilter};

use crate::auth::{self, AuthError, Denied, Identity};
use crate::edge::Edge;
use crate::rate::{self, Limited, RateLimited};
use crate::session::count_error;
use crate::settings::EdgeSettings;
use crate::ws::UpgradeRejection;

/// `Retry-After` of a node that drains or is full: long enough for the load
/// balancer to pick another node, short enough that a client does not wait
/// for nothing.
const RETRY_ELSEWHERE_SECONDS: u32 = 5;
/// `Retry-After` of an HTTP publish the backplane could not take: it is
/// usually back within a second.
const RETRY_PUBLISH_SECONDS: u32 = 1;

/// Where a route reads the client's token from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenFrom {
    /// `Authorization: Bearer` only.
    Header,
    /// `Authorization: Bearer`, else the `token` query parameter (browsers
    /// cannot set headers on a WebSocket or an `EventSource`; proxies may log
    /// the query, so the header wins).
    HeaderOrQuery,
}

/// The checks a route runs before it serves a request, in the order of the
/// module's table. Built once per route, as a constant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Admission {
    /// Refuse while the node drains: whatever is opened now would be closed
    /// at once.
    draining: bool,
    /// What a request counts as against its address's rate; `None`: it does
    /// not count.
    address_rate: Option<Limited>,
    /// Refuse an `Origin` that `allowed_origins` does not allow (cross-site
    /// WebSocket hijacking).
    origin: bool,
    /// Where a token may come from; `None`: tokens are not read.
    token: Option<TokenFrom>,
}

/// What came in: who the request proved to be and the connection slot it
/// holds until the session ends.
#[derive(Debug)]
pub(crate) struct Admitted {
    /// `None`: no token was sent (the session may still authenticate later,
    /// or the namespace rules serve it anonymously).
    pub(crate) identity: Option<Identity>,
    /// The connection's slot under `max_connections`.
    pub(crate) permit: OwnedSemaphorePermit,
}

impl Admission {
    /// A session that holds a connection: `/ws`, `/sse`, and every kind of
    /// session to come. Every check; the token from the header or the query.
    pub(crate) const SESSION: Self = Self::new()
        .refuse_while_draining()
        .limit_address(Limited::Connection)
        .check_origin()
        .read_token(TokenFrom::HeaderOrQuery);

    /// No check at all; add the ones the route needs.
    pub(crate) const fn new() -> Self {
        Self {
            draining: false,
            address_rate: None,
            origin: false,
            token: None,
        }
    }

    pub(crate) const fn refuse_while_draining(self) -> Self {
        Self {
            draining: true,
            ..self
        }
    }

    /// Counts each request as `kind` against its client address's rate.
    pub(crate) const fn limit_address(self, kind: Limited) -> Self {
        Self {
            address_rate: Some(kind),
            ..self
        }
    }

    pub(crate) const fn check_origin(self) -> Self {
        Self {
            origin: true,
            ..self
        }
    }

    /// Verifies the token the request sends (from `from`); a request without
    /// one is admitted without an identity.
    pub(crate) const fn read_token(self, from: TokenFrom) -> Self {
        Self {
            token: Some(from),
            ..self
        }
    }

    /// Admits a one-shot request (it holds no connection): the identity its
    /// token proves, if it sent one.
    pub(crate) fn admit_request(
        &self,
        edge: &Edge,
        caller: &Caller,
    ) -> Result<Option<Identity>, Refusal> {
        if self.draining && edge.is_draining() {
            return Err(Refusal::draining());
        }
        if let Some(kind) = self.address_rate {
            edge.admit_address(caller.addr, kind)
                .map_err(Refusal::rate_limited)?;
        }
        if self.origin && !origin_allowed(edge.settings(), caller.origin.as_deref()) {
            return Err(Refusal::origin());
        }
        let Some(token) = self.token.and_then(|from| caller.token(from)) else {
            return Ok(None);
        };
        edge.auth().verify(token).map(Some).map_err(Refusal::token)
    }

    /// Admits a request that opens a session: [`admit_request`](Self::admit_request),
    /// then a connection slot, which the session holds until it ends.
    pub(crate) fn admit_connection(
        &self,
        edge: &Edge,
        caller: &Caller,
    ) -> Result<Admitted, Refusal> {
        let identity = self.admit_request(edge, caller)?;
        let permit = edge
            .try_admit()
            .ok_or_else(|| Refusal::node_limit(edge.settings().max_connections))?;
        Ok(Admitted { identity, permit })
    }
}

/// What admission reads of a request: its client's address, `Origin` and
/// token. An extractor, so that a route takes it as a handler argument.
#[derive(Debug)]
pub(crate) struct Caller {
    /// For the per-address rate; `None` when that limit is off or the
    /// address unknown.
    addr: Option<IpAddr>,
    /// `Origin`, when sent (and ASCII).
    origin: Option<String>,
    /// The `Authorization: Bearer` token.
    bearer: Option<String>,
    /// The `token` query parameter.
    query_token: Option<String>,
}

impl Caller {
    fn of(parts: &Parts, settings: &EdgeSettings) -> Self {
        let query_token = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .ok()
            .and_then(|Query(params)| {
                params
                    .into_iter()
                    .find_map(|(name, value)| (name == "token").then_some(value))
            });
        Self {
            addr: rate::client_addr(parts, settings),
            origin: text(&parts.headers, header::ORIGIN).map(str::to_owned),
            bearer: text(&parts.headers, header::AUTHORIZATION)
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
                .map(str::to_owned),
            query_token,
        }
    }

    /// The token sent where `from` allows, trimmed.
    fn token(&self, from: TokenFrom) -> Option<&str> {
        let query = match from {
            TokenFrom::Header => None,
            TokenFrom::HeaderOrQuery => self.query_token.as_deref(),
        };
        self.bearer.as_deref().or(query).map(str::trim)
    }
}

impl FromRequestParts<Edge> for Caller {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, edge: &Edge) -> Result<Self, Infallible> {
        Ok(Self::of(parts, edge.settings()))
    }
}

/// A header's value, when it is ASCII text.
fn text(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Whether a browser of `origin` may connect. With no allowed origins
/// configured every origin is; a client without `Origin` (not a browser)
/// only when `allow_missing_origin` is on. CORS answers (`cors`) follow
/// the same rule.
pub(crate) fn origin_allowed(settings: &EdgeSettings, origin: Option<&str>) -> bool {
    if settings.allowed_origins.is_empty() {
        return true;
    }
    match origin {
        None => settings.allow_missing_origin,
        Some(origin) => settings
            .allowed_origins
            .iter()
            .any(|pattern| origin_matches(pattern, origin)),
    }
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

/// [`auth::may_subscribe`] for a plain HTTP request of `identity` (an SSE
/// stream): a node that serves no anonymous client refuses one without a
/// token, which, unlike a WebSocket session, cannot send one later.
pub(crate) fn may_subscribe_as(
    edge: &Edge,
    identity: Option<&Identity>,
    filter: &TopicFilter,
) -> Result<(), Refusal> {
    require_token(edge, identity)?;
    let settings = edge.hub().namespace(filter.namespace());
    let user = identity.map(|id| id.user.as_str());
    Ok(auth::may_subscribe(identity, user, settings, filter)?)
}

/// [`auth::may_publish`] for a plain HTTP request of `identity` (an HTTP
/// publish), with the same rule for anonymous clients as [`may_subscribe_as`].
pub(crate) fn may_publish_as(
    edge: &Edge,
    identity: Option<&Identity>,
    topic: &Topic,
) -> Result<(), Refusal> {
    require_token(edge, identity)?;
    let settings = edge.hub().namespace(topic.namespace());
    Ok(auth::may_publish(
        identity,
        edge.auth().has_keys(),
        settings,
        topic,
    )?)
}

fn require_token(edge: &Edge, identity: Option<&Identity>) -> Result<(), Denied> {
    if identity.is_none() && !edge.auth().allows_anonymous() {
        return Err(Denied::Unauthorized(
            "this node needs a token: Authorization: Bearer, or the token query parameter".into(),
        ));
    }
    Ok(())
}

/// Which check refused a request: the `reason` label of
/// `ferrocast_connections_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Draining,
    AddressRate,
    Origin,
    Token,
    ConnectionSlot,
    /// The request is no WebSocket handshake.
    Upgrade,
    /// The client offered no WebSocket subprotocol this node speaks.
    Subprotocol,
    /// What the request asks for (its topics, body, grants); also a client
    /// error (`ferrocast_client_errors_total{code}`).
    Request,
}

impl Check {
    fn reason(self) -> &'static str {
        match self {
            Self::Draining => "draining",
            Self::AddressRate => "rate_limited",
            Self::Origin => "origin",
            Self::Token => "unauthorized",
            Self::ConnectionSlot => "node_limit",
            Self::Subprotocol => "subprotocol",
            Self::Upgrade | Self::Request => "bad_request",
        }
    }
}

/// How a route answers a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The message as plain text, counted as a refused connection: the
    /// connection routes (`/ws`, `/echo`, `/sse`), whose clients read no
    /// JSON before they are connected.
    Text,
    /// The JSON protocol's `{"op":"error",…}`, counted as a client error:
    /// `POST /publish`, whose replies are that protocol's objects.
    Json,
}

/// Why a request is refused; one shape for every route and every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    /// The JSON protocol's code, so that `ferrocast_client_errors_total{code}`
    /// counts every client path alike.
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
    /// The check that refused (the metric label).
    check: Check,
    /// When to come back, where that is known.
    retry_after: Option<HeaderValue>,
}

impl Refusal {
    /// A refusal of what the request asks for.
    pub(crate) fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self::by(Check::Request, status, code, message)
    }

    fn by(check: Check, status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            check,
            retry_after: None,
        }
    }

    fn retry_after(self, value: HeaderValue) -> Self {
        Self {
            retry_after: Some(value),
            ..self
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
    }

    /// `text` is not a valid topic or filter: `too_large` over the length
    /// limit (a limit hit), else `bad_request`; HTTP 400 either way.
    pub(crate) fn topic(text: &str, error: &TopicError) -> Self {
        match error {
            TopicError::TooLong { .. } => {
                counter!(names::LIMIT_HITS, "limit" => "topic_length").increment(1);
                Self::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::TooLarge,
                    format!("invalid topic: {error}"),
                )
            }
            _ => Self::bad_request(format!("invalid topic {text:?}: {error}")),
        }
    }

    /// The request is no WebSocket handshake: its status and reason.
    pub(crate) fn not_an_upgrade(rejection: &UpgradeRejection) -> Self {
        Self::by(
            Check::Upgrade,
            rejection.status(),
            ErrorCode::BadRequest,
            rejection.body_text(),
        )
    }

    /// No offered WebSocket subprotocol is spoken here; `message` lists both
    /// sides'.
    pub(crate) fn subprotocol(message: String) -> Self {
        Self::by(
            Check::Subprotocol,
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            message,
        )
    }

    fn draining() -> Self {
        Self::by(
            Check::Draining,
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "this node is draining; connect to another node",
        )
        .retry_after(HeaderValue::from(RETRY_ELSEWHERE_SECONDS))
    }

    /// Counted in `ferrocast_rate_limited_total{kind}` when `limited` was made.
    fn rate_limited(limited: RateLimited) -> Self {
        Self::by(
            Check::AddressRate,
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            limited.to_string(),
        )
        .retry_after(limited.retry_after_header())
    }

    /// Also a refused CORS preflight's answer (`cors`).
    pub(crate) fn origin() -> Self {
        Self::by(
            Check::Origin,
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "this origin may not connect to this node",
        )
    }

    /// Counts the failure in `ferrocast_auth_failures_total{reason}`.
    fn token(error: AuthError) -> Self {
        counter!(names::AUTH_FAILURES, "reason" => error.label()).increment(1);
        Self::by(
            Check::Token,
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            format!("unauthorized: {error}"),
        )
    }

    /// Counts the hit in `ferrocast_limit_hits_total{limit="connections"}`.
    fn node_limit(max_connections: usize) -> Self {
        counter!(names::LIMIT_HITS, "limit" => "connections").increment(1);
        Self::by(
            Check::ConnectionSlot,
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::LimitExceeded,
            format!(
                "this node is at its limit of {max_connections} connections; retry later or elsewhere"
            ),
        )
        .retry_after(HeaderValue::from(RETRY_ELSEWHERE_SECONDS))
    }

    /// The response, counted as `answer` says.
    pub(crate) fn answer(self, answer: Answer) -> Response {
        match answer {
            Answer::Text => {
                counter!(names::CONNECTIONS_REJECTED, "reason" => self.check.reason()).increment(1);
                if self.check == Check::Request {
                    count_error(self.code.as_str());
                }
                let mut response = (self.status, self.message + "\n").into_response();
                if let Some(retry_after) = self.retry_after {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, retry_after);
                }
                response
            }
            Answer::Json => {
                count_error(self.code.as_str());
                let retry_after = self.retry_after.or_else(|| {
                    (self.status == StatusCode::SERVICE_UNAVAILABLE)
                        .then(|| HeaderValue::from(RETRY_PUBLISH_SECONDS))
                });
                let status = self.status;
                let error = RequestError::new(None, self.code, self.message);
                let mut response = (status, encode_error(&error)).into_response();
                let headers = response.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                if let Some(retry_after) = retry_after {
                    headers.insert(header::RETRY_AFTER, retry_after);
                }
                response
            }
        }
    }
}

impl IntoResponse for Refusal {
    /// As text: what every connection route answers.
    fn into_response(self) -> Response {
        self.answer(Answer::Text)
    }
}

impl From<Denied> for Refusal {
    /// 401 (a token is needed) or 403 (it does not allow the request).
    fn from(denied: Denied) -> Self {
        match denied {
            Denied::Unauthorized(m) => {
                Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, m)
            }
            Denied::Forbidden(m) => Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, m),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{SystemTime, UNIX_EPOCH};

    use axum::body::to_bytes;
    use axum::http::Request;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use ferrocast_core::backplane::memory::MemoryBus;
    use ferrocast_core::{Hub, Namespaces, SubscriptionRegistry};

    use super::*;
    use crate::auth::{AuthConfig, Authenticator};
    use crate::settings::Rate;

    const SECRET: &[u8] = b"admission-test-secret";
    /// The checks of [`Admission::SESSION`], in the order they must run.
    const ORDER: [Check; 5] = [
        Check::Draining,
        Check::AddressRate,
        Check::Origin,
        Check::Token,
        Check::ConnectionSlot,
    ];

    fn hub() -> Hub {
        let registry = Arc::new(SubscriptionRegistry::new());
        let backplane = Arc::new(MemoryBus::new().attach(registry.clone()));
        Hub::start(
            Arc::from("admission-test"),
            registry,
            backplane,
            Namespaces::default(),
            &TaskTracker::new(),
            CancellationToken::new(),
        )
    }

    fn token(user: &str) -> String {
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        let claims = serde_json::json!({"sub": user, "exp": exp});
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    /// An edge and a caller on which every check from `first_failing` on
    /// fails (none when `None`).
    fn failing_from(first_failing: Option<Check>) -> (Edge, Caller) {
        let fails = |check: Check| {
            let at = |c: Check| ORDER.iter().position(|&o| o == c);
            first_failing.is_some_and(|first| at(check) >= at(first))
        };
        let settings = EdgeSettings {
            ip_connection_rate: Rate {
                per_second: 1,
                burst: 1,
            },
            allowed_origins: vec!["https://app.example".into()],
            max_connections: if fails(Check::ConnectionSlot) { 0 } else { 1 },
            ..EdgeSettings::default()
        };
        let auth = Authenticator::new(AuthConfig {
            hmac_secret: Some(SECRET.to_vec()),
            allow_anonymous: true,
            ..AuthConfig::default()
        })
        .unwrap();
        let edge = Edge::with_auth(hub(), settings, auth);
        let addr: IpAddr = "192.0.2.1".parse().unwrap();
        if fails(Check::Draining) {
            edge.draining().cancel();
        }
        if fails(Check::AddressRate) {
            edge.admit_address(Some(addr), Limited::Connection).unwrap();
        }
        let caller = Caller {
            addr: Some(addr),
            origin: Some(if fails(Check::Origin) {
                "https://evil.example".into()
            } else {
                "https://app.example".into()
            }),
            bearer: Some(if fails(Check::Token) {
                "not-a-token".into()
            } else {
                token("u1")
            }),
            query_token: None,
        };
        (edge, caller)
    }

    #[tokio::test]
    async fn checks_run_in_order_and_the_first_that_fails_refuses() {
        for expected in ORDER {
            let (edge, caller) = failing_from(Some(expected));
            let refusal = Admission::SESSION
                .admit_connection(&edge, &caller)
                .unwrap_err();
            assert_eq!(refusal.check, expected, "{refusal:?}");
            // No slot is held by a refused request.
            assert_eq!(edge.connection_count(), 0);
        }
        let (edge, caller) = failing_from(None);
        let Admitted { identity, permit } =
            Admission::SESSION.admit_connection(&edge, &caller).unwrap();
        assert_eq!(identity.map(|id| id.user).as_deref(), Some("u1"));
        assert_eq!(edge.connection_count(), 1);
        drop(permit);
        assert_eq!(edge.connection_count(), 0);
    }

    #[tokio::test]
    async fn a_route_runs_only_the_checks_it_names() {
        // Everything but the slot fails: a route that checks nothing comes in.
        let (edge, caller) = failing_from(Some(Check::Draining));
        let nothing = Admission::new();
        assert_eq!(nothing.admit_request(&edge, &caller), Ok(None));
        // The address has spent its budget: a route that counts it is refused.
        let rate_only = Admission::new().limit_address(Limited::Publish);
        assert_eq!(
            rate_only.admit_request(&edge, &caller).unwrap_err().check,
            Check::AddressRate
        );
        // A query token is not read where only the header counts.
        let (edge, mut caller) = failing_from(None);
        caller.query_token = caller.bearer.take();
        let header_only = Admission::new().read_token(TokenFrom::Header);
        assert_eq!(header_only.admit_request(&edge, &caller), Ok(None));
        let either = Admission::new().read_token(TokenFrom::HeaderOrQuery);
        assert!(either.admit_request(&edge, &caller).unwrap().is_some());
    }

    #[test]
    fn the_caller_is_read_from_the_request() {
        let (parts, ()) = Request::get("/ws?a=1&token=q%2Eb&token=second")
            .header(header::ORIGIN, "https://app.example")
            .header(header::AUTHORIZATION, "Bearer  h.t ")
            .body(())
            .unwrap()
            .into_parts();
        let caller = Caller::of(&parts, &EdgeSettings::default());
        assert_eq!(caller.addr, None, "the per-address limit is off");
        assert_eq!(caller.origin.as_deref(), Some("https://app.example"));
        assert_eq!(caller.token(TokenFrom::Header), Some("h.t"));
        assert_eq!(caller.token(TokenFrom::HeaderOrQuery), Some("h.t"));
        let without_header = Caller {
            bearer: None,
            ..caller
        };
        assert_eq!(without_header.token(TokenFrom::Header), None);
        assert_eq!(without_header.token(TokenFrom::HeaderOrQuery), Some("q.b"));
    }

    /// Status, headers and body of `refusal` answered as `answer`.
    async fn answered(refusal: Refusal, answer: Answer) -> (u16, HeaderMap, String) {
        let response = refusal.answer(answer);
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = to_bytes(response.into_body(), 1 << 16).await.unwrap();
        (status, headers, String::from_utf8(body.to_vec()).unwrap())
    }

    fn retry_after(headers: &HeaderMap) -> Option<&str> {
        text(headers, header::RETRY_AFTER)
    }

    #[tokio::test]
    async fn every_refusal_has_its_status_headers_text_and_label() {
        let (edge, caller) = failing_from(Some(Check::AddressRate));
        let Err(limited) = edge.admit_address(caller.addr, Limited::Connection) else {
            panic!("the address's budget is spent");
        };
        let auth_error = edge.auth().verify("not-a-token").unwrap_err();
        let cases = [
            (
                Refusal::draining(),
                503,
                Some("5"),
                "this node is draining; connect to another node\n",
                "draining",
            ),
            (
                Refusal::rate_limited(limited),
                429,
                Some("1"),
                "rate limited: more than 1 connection attempts and HTTP publishes per second from this address (burst 1); retry in ",
                "rate_limited",
            ),
            (
                Refusal::origin(),
                403,
                None,
                "this origin may not connect to this node\n",
                "origin",
            ),
            (
                Refusal::token(auth_error),
                401,
                None,
                "unauthorized: malformed token",
                "unauthorized",
            ),
            (
                Refusal::node_limit(7),
                503,
                Some("5"),
                "this node is at its limit of 7 connections; retry later or elsewhere\n",
                "node_limit",
            ),
            (
                Refusal::subprotocol("none of the offered".into()),
                400,
                None,
                "none of the offered\n",
                "subprotocol",
            ),
            (
                Refusal::from(Denied::Forbidden("not yours".into())),
                403,
                None,
                "not yours\n",
                "bad_request",
            ),
            (
                Refusal::from(Denied::Unauthorized("token first".into())),
                401,
                None,
                "token first\n",
                "bad_request",
            ),
        ];
        for (refusal, status, retry, text, reason) in cases {
            assert_eq!(refusal.check.reason(), reason, "{refusal:?}");
            let (got, headers, body) = answered(refusal, Answer::Text).await;
            assert_eq!((got, retry_after(&headers)), (status, retry), "{body}");
            assert!(body.starts_with(text) && body.ends_with('\n'), "{body:?}");
        }
    }

    #[tokio::test]
    async fn a_publish_is_refused_with_the_json_error_object() {
        let (edge, caller) = failing_from(Some(Check::AddressRate));
        let Err(limited) = edge.admit_address(caller.addr, Limited::Publish) else {
            panic!("the address's budget is spent");
        };
        let unavailable = Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "backplane down; not published",
        );
        for (refusal, status, retry, code) in [
            (
                Refusal::rate_limited(limited),
                429,
                Some("1"),
                "rate_limited",
            ),
            (
                Refusal::token(AuthError::Expired),
                401,
                None,
                "unauthorized",
            ),
            (unavailable, 503, Some("1"), "unavailable"),
        ] {
            let message = refusal.message.clone();
            let (got, headers, body) = answered(refusal, Answer::Json).await;
            assert_eq!((got, retry_after(&headers)), (status, retry), "{body}");
            assert_eq!(
                text(&headers, header::CONTENT_TYPE),
                Some("application/json")
            );
            let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(
                reply,
                serde_json::json!({"op": "error", "code": code, "message": message})
            );
        }
    }

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

    #[test]
    fn origins_are_allowed_by_the_settings() {
        let open = EdgeSettings::default();
        assert!(origin_allowed(&open, None));
        assert!(origin_allowed(&open, Some("https://any.example")));
        let closed = EdgeSettings {
            allowed_origins: vec!["https://app.example".into()],
            ..EdgeSettings::default()
        };
        assert!(origin_allowed(&closed, Some("https://app.example")));
        assert!(!origin_allowed(&closed, Some("https://evil.example")));
        assert_eq!(origin_allowed(&closed, None), closed.allow_missing_origin);
    }
}
