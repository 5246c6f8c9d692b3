//! Opening connections to Redis, and naming Redis in logs without secrets.

use std::time::Duration;

use redis::aio::{AsyncPushSender, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo, ProtocolVersion};

use ferrocast_core::backplane::BackplaneError;

/// Why a connection failed or was given up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectionError {
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the connection was closed")]
    Closed,
    #[error("not connected to redis")]
    NotConnected,
    #[error("redis refused: {0}")]
    Refused(String),
}

impl ConnectionError {
    /// Turns a failed command into this error: a server's error reply is a
    /// refusal (the connection is fine), anything else means the connection
    /// is gone or unusable.
    pub(crate) fn from_command(error: redis::RedisError) -> Self {
        if error.is_io_error()
            || error.is_unrecoverable_error()
            || error.is_connection_dropped()
            || error.is_timeout()
        {
            Self::Redis(error)
        } else {
            Self::Refused(error.to_string())
        }
    }

    /// Whether the connection is still usable after this error.
    pub(crate) fn is_refusal(&self) -> bool {
        matches!(self, Self::Refused(_))
    }

    /// What a caller waiting on the failed operation is told.
    pub(crate) fn to_backplane_error(&self) -> BackplaneError {
        match self {
            Self::Timeout(d) => BackplaneError::Timeout(*d),
            Self::Refused(reason) => BackplaneError::Rejected(reason.clone()),
            other => BackplaneError::Unavailable(other.to_string()),
        }
    }
}

/// Opens RESP3 connections to the configured Redis.
pub(crate) struct Connector {
    client: Client,
    /// The URL without user, password and query, for logs and errors.
    redacted: String,
    timeout: Duration,
}

impl Connector {
    /// Parses `url`; only `redis://` and `rediss://` are accepted.
    pub(crate) fn new(url: &str, timeout: Duration) -> Result<Self, BackplaneError> {
        let redacted = redact(url);
        let tls = if url.starts_with("rediss://") {
            true
        } else if url.starts_with("redis://") {
            false
        } else {
            return Err(BackplaneError::Rejected(format!(
                "the redis URL {redacted:?} must start with redis:// or rediss://"
            )));
        };
        let invalid = |e: redis::RedisError| {
            BackplaneError::Rejected(format!("invalid redis URL {redacted:?}: {e}"))
        };
        let info = url.into_connection_info().map_err(invalid)?;
        // RESP3: push messages let one multiplexed connection both carry
        // commands (PING, subscription changes) and deliver messages.
        let redis_settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let info = info.set_redis_settings(redis_settings);
        if tls {
            install_crypto_provider();
        }
        let client = Client::open(info).map_err(invalid)?;
        Ok(Self {
            client,
            redacted,
            timeout,
        })
    }

    pub(crate) fn redacted_url(&self) -> &str {
        &self.redacted
    }

    /// Connects (TCP, TLS, HELLO, AUTH, SELECT) within the timeout. Push
    /// messages, and the notice that the connection was lost, go to `push`.
    pub(crate) async fn connect(
        &self,
        push: impl AsyncPushSender,
        write_buffer: usize,
    ) -> Result<MultiplexedConnection, ConnectionError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            // Each caller bounds its own operations with the timeout.
            .set_response_timeout(None)
            .set_write_backpressure_boundary(write_buffer)
            .set_push_sender(push);
        match tokio::time::timeout(
            self.timeout,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
        {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(e)) => Err(ConnectionError::Redis(e)),
            Err(_) => Err(ConnectionError::Timeout(self.timeout)),
        }
    }
}

/// Makes ring the process' rustls crypto provider unless one was chosen
/// already (by the application or another library), so that building a TLS
/// configuration never panics for want of one.
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: one provider is set.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// `scheme://host:port/path` of `url`: user, password, query and fragment
/// removed, so that logs never carry credentials.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<not a URL>".to_string();
    };
    // Everything up to the last '@' may be credentials, even malformed ones.
    let host_on = rest.rsplit_once('@').map_or(rest, |(_, after)| after);
    let end = host_on.find(['?', '#']).unwrap_or(host_on.len());
    format!("{scheme}://{}", &host_on[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_removes_credentials() {
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(
            redact("redis://user:secret@example.com:6380/2"),
            "redis://example.com:6380/2"
        );
        assert_eq!(redact("rediss://:p@ss@h:1/0?x=1#f"), "rediss://h:1/0");
        assert_eq!(redact("nonsense"), "<not a URL>");
        assert!(!redact("redis://u:hunter2@h").contains("hunter2"));
    }
}
