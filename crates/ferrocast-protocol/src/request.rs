//! The native protocol's model: what a client asks for and what it is told,
//! whatever the encoding (JSON in [`crate::json`], protobuf in
//! [`crate::proto_frames`]). Other session kinds (STOMP, SSE, the server API)
//! answer with the same [`ErrorCode`]s.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use crate::position::StreamPosition;
use crate::topic::{Topic, TopicError, TopicFilter};

/// The error codes of `{"op":"error"}` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request is malformed: not JSON, an unknown op, a missing field, a bad topic.
    BadRequest,
    /// No or invalid credentials.
    Unauthorized,
    /// Valid credentials that do not allow this request.
    Forbidden,
    /// The frame or a field is larger than the node allows.
    TooLarge,
    /// The client sends faster than its rate limit.
    RateLimited,
    /// A per-connection or per-node limit (subscriptions, ...) is reached.
    LimitExceeded,
    /// The node cannot serve the request now (backplane down, draining); retry.
    Unavailable,
    /// A bug or unexpected failure in the node.
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::TooLarge => "too_large",
            Self::RateLimited => "rate_limited",
            Self::LimitExceeded => "limit_exceeded",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A decoded client request.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientRequest {
    Subscribe {
        id: Option<u64>,
        filter: TopicFilter,
        since: Option<StreamPosition>,
    },
    Unsubscribe {
        id: Option<u64>,
        filter: TopicFilter,
    },
    Publish {
        id: Option<u64>,
        topic: Topic,
        /// The payload: compact JSON text (no raw newline) when `content_type`
        /// is `None`, sharing the frame's buffer when it could be used as is.
        data: Bytes,
        /// The media type of a payload that is not JSON (the protobuf
        /// protocol publishes any bytes); always `None` from JSON clients.
        content_type: Option<Arc<str>>,
    },
    Ping {
        id: Option<u64>,
    },
    /// Authenticates the connection with a token (the first request of a
    /// connection that brought none at the upgrade).
    Auth {
        id: Option<u64>,
        token: String,
    },
    /// Asks who is subscribed to one topic of a namespace with presence.
    Presence {
        id: Option<u64>,
        topic: Topic,
    },
    /// Reads one topic's history (a namespace with history): the newest
    /// `limit` publications, or with `since` the oldest `limit` after it.
    History {
        id: Option<u64>,
        topic: Topic,
        since: Option<StreamPosition>,
        /// As the client asked; the node caps it at [`MAX_HISTORY_LIMIT`].
        limit: Option<u64>,
    },
}

/// Most publications one `history` request returns, and how many it returns
/// without a `limit`: one reply is one frame, so its size stays bounded.
pub const MAX_HISTORY_LIMIT: u64 = 100;

/// One publication of a `history` reply, as a `message` carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryItem<'a> {
    pub topic: &'a Topic,
    /// JSON text when `content_type` is `None`, else any bytes.
    pub payload: &'a Bytes,
    pub content_type: Option<&'a str>,
    pub position: Option<&'a StreamPosition>,
}

impl ClientRequest {
    pub fn id(&self) -> Option<u64> {
        match self {
            Self::Subscribe { id, .. }
            | Self::Unsubscribe { id, .. }
            | Self::Publish { id, .. }
            | Self::Ping { id }
            | Self::Auth { id, .. }
            | Self::Presence { id, .. }
            | Self::History { id, .. } => *id,
        }
    }
}

/// A request that cannot be served, with what to tell the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct RequestError {
    pub id: Option<u64>,
    pub code: ErrorCode,
    pub message: String,
}

impl RequestError {
    pub fn new(id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            id,
            code,
            message: message.into(),
        }
    }

    /// `too_large` for a topic over the length limit, else `bad_request`.
    pub(crate) fn bad_topic(id: Option<u64>, err: &TopicError) -> Self {
        let code = match err {
            TopicError::TooLong { .. } => ErrorCode::TooLarge,
            _ => ErrorCode::BadRequest,
        };
        Self::new(id, code, format!("invalid topic: {err}"))
    }
}

/// Fields of an `{"op":"ok"}` reply; which are set depends on the request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OkReply {
    pub id: Option<u64>,
    pub epoch: Option<String>,
    pub offset: Option<u64>,
    pub recovered: Option<bool>,
}
