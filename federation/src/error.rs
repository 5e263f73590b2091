//! Errors: what a remote server is told (a Matrix error body), and what went wrong talking to
//! one.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;
use tracing::warn;

/// An error answered to a remote server as a Matrix error body.
#[derive(Debug)]
pub struct FedError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The Matrix error code.
    pub errcode: &'static str,
    /// A human-readable message.
    pub message: String,
    /// For `M_LIMIT_EXCEEDED`: how long to wait before trying again.
    pub retry_after_ms: Option<u64>,
}

impl FedError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, errcode: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            errcode,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    /// `429 M_LIMIT_EXCEEDED`, to be tried again after `retry_after_ms`.
    pub fn limited(message: impl Into<String>, retry_after_ms: u64) -> Self {
        Self {
            retry_after_ms: Some(retry_after_ms),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED", message)
        }
    }

    /// `403 M_FORBIDDEN`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "M_FORBIDDEN", message)
    }

    /// `404 M_NOT_FOUND`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "M_NOT_FOUND", message)
    }

    /// `400 M_BAD_JSON`.
    pub fn bad_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_BAD_JSON", message)
    }

    /// `401 M_UNAUTHORIZED`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED", message)
    }
}

impl From<grove_server::Error> for FedError {
    fn from(e: grove_server::Error) -> Self {
        use grove_server::Error as E;
        match e {
            E::Forbidden(m) => Self::forbidden(m),
            E::NotFound(m) => Self::not_found(m),
            E::BadJson(m) => Self::bad_json(m),
            E::InvalidParam(m) => Self::new(StatusCode::BAD_REQUEST, "M_INVALID_PARAM", m),
            E::UnsupportedRoomVersion(m) => {
                Self::new(StatusCode::BAD_REQUEST, "M_INCOMPATIBLE_ROOM_VERSION", m)
            }
            E::LimitExceeded(m) => Self::new(StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED", m),
            E::RoomInUse(m) => Self::new(StatusCode::BAD_REQUEST, "M_ROOM_IN_USE", m),
            E::TooLarge(m) => Self::new(StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE", m),
            other => {
                warn!(error = %other, "federation request failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "M_UNKNOWN",
                    "internal error",
                )
            }
        }
    }
}

impl IntoResponse for FedError {
    fn into_response(self) -> Response {
        let mut body = json!({ "errcode": self.errcode, "error": self.message });
        if let Some(ms) = self.retry_after_ms {
            body["retry_after_ms"] = ms.into();
        }
        (self.status, Json(body)).into_response()
    }
}

/// Why a request to another server failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The server name is 64 hex but not a valid overlay key.
    #[error("{0} is not a valid overlay key")]
    NotOverlay(String),
    /// TLS could not be set up, or the server's certificate is not trusted for its name.
    #[error("tls: {0}")]
    Tls(String),
    /// No session could be opened or used.
    #[error("session: {0}")]
    Session(String),
    /// HTTP over the session failed.
    #[error("http: {0}")]
    Http(String),
    /// The remote server answered with an error.
    #[error("remote answered {status}: {body}")]
    Remote {
        /// The HTTP status.
        status: u16,
        /// The body, as text.
        body: String,
    },
    /// The answer was not the JSON expected.
    #[error("bad answer: {0}")]
    BadAnswer(String),
    /// The request took too long.
    #[error("timed out")]
    Timeout,
    /// The answer was longer than the caller accepts.
    #[error("answer too large")]
    TooLarge,
}

/// The `error` message of a Matrix error body, or the body itself.
fn remote_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.to_owned())
}

impl From<RequestError> for grove_server::Error {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::Remote { status: 403, body } => {
                grove_server::Error::Forbidden(remote_message(&body))
            }
            RequestError::Remote { status: 404, body } => {
                grove_server::Error::NotFound(remote_message(&body))
            }
            RequestError::TooLarge => {
                grove_server::Error::TooLarge("the remote file is too large".into())
            }
            other => grove_server::Error::NotFound(format!("remote server: {other}")),
        }
    }
}
