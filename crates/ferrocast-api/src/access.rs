//! The API key: who may call the server API on one listener.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::error::ApiError;

/// Who may call the server API on one listener.
#[derive(Clone)]
pub enum Access {
    /// Callers present this key as `Authorization: Bearer <key>`.
    Key(Arc<str>),
    /// No key is configured and the listener is on loopback: every local
    /// process may call (development).
    Open,
    /// No key is configured and the listener is reachable from other hosts:
    /// every call is refused, saying why.
    Closed,
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Key(_) => "Key(<redacted>)",
            Self::Open => "Open",
            Self::Closed => "Closed",
        })
    }
}

impl Access {
    /// The access of a listener on `addr` given the configured `key`.
    pub fn for_listener(key: Option<&str>, addr: SocketAddr) -> Self {
        match key {
            Some(key) => Self::Key(Arc::from(key)),
            None if addr.ip().is_loopback() => Self::Open,
            None => Self::Closed,
        }
    }

    /// Whether the admin UI is served on this listener: the UI only calls
    /// the API, so it is off where the API refuses every call.
    pub fn serves_ui(&self) -> bool {
        !matches!(self, Self::Closed)
    }

    /// Checks the `authorization` header (or gRPC metadata) of a call.
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<(), ApiError> {
        let key = match self {
            Self::Open => return Ok(()),
            Self::Closed => {
                return Err(ApiError::Unauthenticated(
                    "the server API is off on this listener: it is not on loopback and no API key is configured (--api-key)".into(),
                ))
            }
            Self::Key(key) => key,
        };
        // The scheme is case-insensitive (RFC 9110, 11.1).
        let presented = authorization
            .filter(|value| value.len() > 7 && value[..7].eq_ignore_ascii_case(b"bearer "))
            .map(|value| value[7..].trim_ascii())
            .ok_or_else(|| {
                ApiError::Unauthenticated(
                    "the server API needs `authorization: Bearer <API key>`".into(),
                )
            })?;
        if constant_time_eq(presented, key.as_bytes()) {
            Ok(())
        } else {
            Err(ApiError::Unauthenticated("wrong API key".into()))
        }
    }
}

/// Compares without returning early, so that the time taken does not tell
/// how much of a guessed key was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("a socket address")
    }

    #[test]
    fn a_key_is_required_when_configured() {
        let access = Access::for_listener(Some("s3cret"), addr("127.0.0.1:1"));
        assert_eq!(access.check(Some(b"Bearer s3cret")), Ok(()));
        assert_eq!(access.check(Some(b"bearer s3cret")), Ok(()));
        assert!(access.check(Some(b"Bearer s3cres")).is_err());
        assert!(access.check(Some(b"Bearer s3cret2")).is_err());
        assert!(access.check(Some(b"s3cret")).is_err());
        assert!(access.check(None).is_err());
    }

    #[test]
    fn without_a_key_only_loopback_listeners_serve() {
        assert_eq!(
            Access::for_listener(None, addr("127.0.0.1:1")).check(None),
            Ok(())
        );
        assert_eq!(
            Access::for_listener(None, addr("[::1]:1")).check(None),
            Ok(())
        );
        let closed = Access::for_listener(None, addr("0.0.0.0:1"));
        assert!(!closed.serves_ui());
        assert!(Access::for_listener(None, addr("127.0.0.1:1")).serves_ui());
        assert!(Access::for_listener(Some("k"), addr("0.0.0.0:1")).serves_ui());
        assert!(matches!(
            closed.check(Some(b"Bearer anything")),
            Err(ApiError::Unauthenticated(_))
        ));
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let access = Access::for_listener(Some("s3cret"), addr("127.0.0.1:1"));
        assert!(!format!("{access:?}").contains("s3cret"));
    }
}
