//! Why a plain HTTP request of a client (an SSE stream, an HTTP publish) is
//! refused: an HTTP status, an error code of the JSON protocol (so that
//! `ferrocast_client_errors_total{code}` counts every client path alike) and
//! a message for the client.

use axum::http::StatusCode;
use metrics::counter;

use ferrocast_core::metrics as names;
use ferrocast_protocol::ErrorCode;
use ferrocast_protocol::TopicError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
}

impl Refusal {
    pub(crate) fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
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
}
