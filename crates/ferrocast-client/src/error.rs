use std::time::Duration;

use ferrocast_protocol::TopicError;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// [`ClientBuilder::build`](crate::ClientBuilder::build) was given no URL.
    #[error("no node URL given")]
    NoUrl,
    /// A node URL is not a `ws://` or `wss://` URL.
    #[error("invalid node URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// [`ClientBuilder::build`](crate::ClientBuilder::build) was called
    /// outside a tokio runtime.
    #[error("the client needs a tokio runtime")]
    NoRuntime,
    /// The topic or filter is not valid (docs/protocol.md, "Topics").
    #[error("invalid topic: {0}")]
    Topic(#[from] TopicError),
    /// The data to publish cannot be serialized as JSON.
    #[error("data is not serializable as JSON: {0}")]
    Data(serde_json::Error),
    /// This client already holds a subscription to the filter.
    #[error("already subscribed to {0}")]
    AlreadySubscribed(String),
    /// The node answered with an error (`code` as in docs/protocol.md:
    /// `bad_request`, `forbidden`, `limit_exceeded`, `unavailable`, ...).
    #[error("the node refused: {code}: {message}")]
    Refused { code: String, message: String },
    /// The connection was lost after the request was sent and before the
    /// reply: it may or may not have taken effect.
    #[error("connection lost before the reply; the request may have taken effect")]
    ConnectionLost,
    /// No reply within the request timeout (the client may have been
    /// disconnected all along). A publish that was sent may still take effect.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The client was closed.
    #[error("the client is closed")]
    Closed,
}
