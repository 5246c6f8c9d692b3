//! The WebSocket opening handshake (RFC 6455 §4.2), server side, with the
//! permessage-deflate negotiation (RFC 7692).

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use hyper::upgrade::OnUpgrade;
use sha1::{Digest, Sha1};

use super::deflate::Deflate;
use super::socket::{Config, Io, WebSocket};

/// The GUID of RFC 6455 §1.3 that `Sec-WebSocket-Accept` hashes with the key.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A request that is a valid WebSocket handshake, to be configured
/// ([`WebSocketUpgrade::config`]) before it can be answered.
#[derive(Debug)]
pub(crate) struct WebSocketUpgrade {
    on_upgrade: OnUpgrade,
    key: HeaderValue,
    /// What the client offered that the node accepts; dropped by
    /// [`WebSocketUpgrade::config`] when compression is off.
    offered_deflate: Option<Deflate>,
}

/// A handshake with the codec's settings, ready to be answered.
#[derive(Debug)]
pub(crate) struct Upgrade {
    on_upgrade: OnUpgrade,
    key: HeaderValue,
    protocol: Option<&'static str>,
    config: Config,
}

/// Why a request is no WebSocket handshake: a status and a message.
#[derive(Debug)]
pub(crate) struct UpgradeRejection {
    status: StatusCode,
    message: &'static str,
}

impl UpgradeRejection {
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    pub(crate) fn body_text(&self) -> String {
        self.message.to_owned()
    }
}

impl IntoResponse for UpgradeRejection {
    fn into_response(self) -> Response {
        (self.status, self.message).into_response()
    }
}

fn header_has_token(parts: &Parts, name: header::HeaderName, token: &str) -> bool {
    parts
        .headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

impl<S: Send + Sync> FromRequestParts<S> for WebSocketUpgrade {
    type Rejection = UpgradeRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let reject = |status, message| Err(UpgradeRejection { status, message });
        if parts.method != Method::GET {
            return reject(
                StatusCode::METHOD_NOT_ALLOWED,
                "a WebSocket handshake is a GET request",
            );
        }
        if !header_has_token(parts, header::CONNECTION, "upgrade") {
            return reject(
                StatusCode::BAD_REQUEST,
                "Connection header did not include 'upgrade'",
            );
        }
        if !header_has_token(parts, header::UPGRADE, "websocket") {
            return reject(
                StatusCode::BAD_REQUEST,
                "`Upgrade` header did not include 'websocket'",
            );
        }
        if parts.headers.get(header::SEC_WEBSOCKET_VERSION) != Some(&HeaderValue::from_static("13"))
        {
            return reject(
                StatusCode::BAD_REQUEST,
                "`Sec-WebSocket-Version` header did not include '13'",
            );
        }
        let Some(key) = parts.headers.get(header::SEC_WEBSOCKET_KEY).cloned() else {
            return reject(
                StatusCode::BAD_REQUEST,
                "`Sec-WebSocket-Key` header missing",
            );
        };
        let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
            return reject(
                StatusCode::UPGRADE_REQUIRED,
                "WebSocket request couldn't be upgraded since no upgrade state was present",
            );
        };
        let offered_deflate = Deflate::negotiate(
            parts
                .headers
                .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        );
        Ok(Self {
            on_upgrade,
            key,
            offered_deflate,
        })
    }
}

impl WebSocketUpgrade {
    /// The codec's limits; `compress_min: None` turns permessage-deflate off.
    pub(crate) fn config(
        self,
        max_message_size: usize,
        read_size: usize,
        compress_min: Option<usize>,
    ) -> Upgrade {
        Upgrade {
            on_upgrade: self.on_upgrade,
            key: self.key,
            protocol: None,
            config: Config {
                max_message_size,
                read_size,
                deflate: compress_min.and(self.offered_deflate),
                compress_min: compress_min.unwrap_or(usize::MAX),
            },
        }
    }
}

impl Upgrade {
    /// The subprotocol the answer names.
    pub(crate) fn protocol(mut self, protocol: &'static str) -> Self {
        self.protocol = Some(protocol);
        self
    }

    /// The `101 Switching Protocols` answer; once the connection is
    /// switched, `callback` gets the WebSocket and spawns the task that
    /// serves it. The upgrade's own task then ends: a connection is one
    /// task whose future is its session, sized for its protocol, not a
    /// session boxed inside the task that waited for the upgrade.
    pub(crate) fn on_upgrade<F>(self, callback: F) -> Response
    where
        F: FnOnce(WebSocket) + Send + 'static,
    {
        let config = self.config;
        let accept = accept_key(self.key.as_bytes());
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&accept) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        if let Some(protocol) = self.protocol {
            headers.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(protocol),
            );
        }
        if let Some(deflate) = config.deflate {
            if let Ok(value) = HeaderValue::from_str(&deflate.response()) {
                headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, value);
            }
        }
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let (io, pending) = Io::from_upgraded(upgraded);
                    callback(WebSocket::new(io, pending, config));
                }
                Err(error) => tracing::debug!(%error, "websocket upgrade failed"),
            }
        });
        response
    }
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
fn accept_key(key: &[u8]) -> String {
    let mut digest = Sha1::new();
    digest.update(key);
    digest.update(ACCEPT_GUID);
    base64::engine::general_purpose::STANDARD.encode(digest.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_key_of_rfc_6455() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
