//! Matrix error responses: every failure a client sees is a JSON body with an `errcode`.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use tracing::error;

/// A failure answered to a client as a Matrix error.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The Matrix error code, such as `M_FORBIDDEN`.
    pub errcode: &'static str,
    /// A human-readable message.
    pub message: String,
    /// Extra top-level fields (for example `retry_after_ms`), or a whole body for UIA.
    pub extra: Option<Value>,
    /// Close the connection after answering (its request body was not read to the end).
    pub close: bool,
}

impl ApiError {
    /// An error with the given status, code and message.
    pub fn new(status: StatusCode, errcode: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            errcode,
            message: message.into(),
            extra: None,
            close: false,
        }
    }

    /// `400 M_BAD_JSON`.
    pub fn bad_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_BAD_JSON", message)
    }

    /// `400 M_NOT_JSON`.
    pub fn not_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_NOT_JSON", message)
    }

    /// `400 M_INVALID_PARAM`.
    pub fn invalid_param(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_INVALID_PARAM", message)
    }

    /// `400 M_MISSING_PARAM`.
    pub fn missing_param(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_MISSING_PARAM", message)
    }

    /// `403 M_FORBIDDEN`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "M_FORBIDDEN", message)
    }

    /// `404 M_NOT_FOUND`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "M_NOT_FOUND", message)
    }

    /// `404 M_UNRECOGNIZED`: no such endpoint.
    pub fn unrecognized() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "M_UNRECOGNIZED",
            "Unrecognized request",
        )
    }

    /// `401 M_MISSING_TOKEN`.
    pub fn missing_token() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "M_MISSING_TOKEN",
            "Missing access token",
        )
    }

    /// `401 M_UNKNOWN_TOKEN`.
    pub fn unknown_token() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "M_UNKNOWN_TOKEN",
            "Unknown access token",
        )
        .with_extra(json!({ "soft_logout": false }))
    }

    /// `413 M_TOO_LARGE`.
    pub fn too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "M_TOO_LARGE",
            "Request body too large",
        )
    }

    /// `429 M_LIMIT_EXCEEDED` with a retry hint.
    pub fn limit_exceeded(retry_after_ms: u64) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "M_LIMIT_EXCEEDED",
            "Too many requests",
        )
        .with_extra(json!({ "retry_after_ms": retry_after_ms }))
    }

    /// `500 M_UNKNOWN`, with the detail logged and not sent.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        error!(%detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "M_UNKNOWN",
            "Internal server error",
        )
    }

    /// Asks for the connection to be closed after this answer.
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// Adds top-level fields to the body.
    pub fn with_extra(mut self, extra: Value) -> Self {
        self.extra = Some(extra);
        self
    }
}

impl From<grove_server::Error> for ApiError {
    fn from(e: grove_server::Error) -> Self {
        use grove_server::Error as E;
        match e {
            E::Forbidden(m) => Self::forbidden(m),
            E::NotFound(m) => Self::not_found(m),
            E::BadJson(m) => Self::bad_json(m),
            E::InvalidParam(m) => Self::invalid_param(m),
            E::UserInUse => Self::new(
                StatusCode::BAD_REQUEST,
                "M_USER_IN_USE",
                "User ID already taken",
            ),
            E::InvalidUsername(m) => Self::new(StatusCode::BAD_REQUEST, "M_INVALID_USERNAME", m),
            E::RoomInUse(m) => Self::new(StatusCode::BAD_REQUEST, "M_ROOM_IN_USE", m),
            E::UnsupportedRoomVersion(m) => {
                Self::new(StatusCode::BAD_REQUEST, "M_UNSUPPORTED_ROOM_VERSION", m)
            }
            E::UnknownToken => Self::unknown_token(),
            E::InvalidCredentials => Self::forbidden("Invalid username or password"),
            E::LimitExceeded(m) => Self::new(StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED", m),
            E::UiaRequired(body) => Self {
                status: StatusCode::UNAUTHORIZED,
                errcode: "",
                message: String::new(),
                extra: Some(body),
                close: false,
            },
            E::NotEnabled(m) => Self::forbidden(m),
            E::UnknownPos => Self::new(
                StatusCode::BAD_REQUEST,
                "M_UNKNOWN_POS",
                "Unknown or expired position: start the connection over",
            ),
            E::TooLarge(m) => Self::new(StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE", m),
            E::CannotOverwriteMedia => Self::new(
                StatusCode::CONFLICT,
                "M_CANNOT_OVERWRITE_MEDIA",
                "This media already has content",
            ),
            E::NotYetUploaded => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "M_NOT_YET_UPLOADED",
                "The media has not been uploaded yet",
            ),
            e @ (E::Database(_) | E::Migrate(_) | E::Corrupt(_) | E::Internal(_)) => {
                Self::internal(e)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = if self.errcode.is_empty() {
            // A user-interactive auth response: the body is given whole.
            self.extra.clone().unwrap_or_else(|| json!({}))
        } else {
            json!({ "errcode": self.errcode, "error": self.message })
        };
        if !self.errcode.is_empty()
            && let (Some(Value::Object(extra)), Value::Object(map)) = (self.extra, &mut body)
        {
            map.extend(extra);
        }
        let mut response = (self.status, Json(body)).into_response();
        if self.close {
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        response
    }
}
