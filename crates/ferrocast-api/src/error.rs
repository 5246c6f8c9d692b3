//! The server API's errors, shared by gRPC and the HTTP mirror.

use axum::http::StatusCode;

use ferrocast_core::PublishError;

/// Why a server API call failed. Each kind is one gRPC status code and one
/// HTTP status (docs/api.md).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// No API key, or the wrong one.
    #[error("{0}")]
    Unauthenticated(String),
    /// A request the API can never serve as given (bad topic, bad JSON, …).
    #[error("{0}")]
    InvalidArgument(String),
    /// Nothing to act on: no session of the user or client.
    #[error("{0}")]
    NotFound(String),
    /// The namespace does not keep what was asked (history, presence).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The backplane (or the node) cannot serve it now; retry later.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    /// The error's name in responses and the `code` label of
    /// `ferrocast_api_requests_total`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthenticated(_) => "unauthenticated",
            Self::InvalidArgument(_) => "invalid_argument",
            Self::NotFound(_) => "not_found",
            Self::FailedPrecondition(_) => "failed_precondition",
            Self::Unavailable(_) => "unavailable",
        }
    }

    /// The HTTP mirror's status for this error.
    pub fn http_status(&self) -> StatusCode {
        match self {
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::InvalidArgument(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::FailedPrecondition(_) => StatusCode::PRECONDITION_FAILED,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// A publish the backplane did not take, in the hub's wording (what every
/// way to publish answers). Its code, `unavailable`, is the one
/// [`PublishError::code`] gives clients.
impl From<PublishError> for ApiError {
    fn from(error: PublishError) -> Self {
        Self::Unavailable(error.to_string())
    }
}

impl From<ApiError> for tonic::Status {
    fn from(error: ApiError) -> Self {
        let message = error.to_string();
        match error {
            ApiError::Unauthenticated(_) => Self::unauthenticated(message),
            ApiError::InvalidArgument(_) => Self::invalid_argument(message),
            ApiError::NotFound(_) => Self::not_found(message),
            ApiError::FailedPrecondition(_) => Self::failed_precondition(message),
            ApiError::Unavailable(_) => Self::unavailable(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use ferrocast_core::backplane::BackplaneError;

    use super::*;

    #[test]
    fn a_publish_failure_keeps_the_hubs_wording_and_code() {
        let cause = BackplaneError::Timeout(std::time::Duration::from_secs(1));
        for failure in [
            PublishError::NotPublished {
                cause: cause.clone(),
            },
            PublishError::LocalOnly {
                local_subscriptions: 3,
                cause: cause.clone(),
            },
        ] {
            let error = ApiError::from(failure.clone());
            assert_eq!(error.to_string(), failure.to_string());
            assert_eq!(error.code(), failure.code().as_str());
            assert_eq!(error.http_status(), StatusCode::SERVICE_UNAVAILABLE);
        }
    }
}
