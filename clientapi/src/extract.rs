//! The `Ruma<T>` extractor: parses a ruma request type from the HTTP request and authenticates
//! it once, answering every failure as a Matrix error; and `RumaResponse`, which serialises a
//! ruma response type.

use std::panic::AssertUnwindSafe;

use axum::{
    body::Body,
    extract::{FromRef, FromRequest, FromRequestParts, RawPathParams, Request},
    http::{Method, header},
    response::{IntoResponse, Response},
};
use bytes::BytesMut;
use grove_server::accounts::Session;
use ruma::api::{
    IncomingRequest, IncomingRequestExt, OutgoingResponse, OutgoingResponseExt,
    auth_scheme::{
        AccessToken, AccessTokenOptional, AppserviceToken, AppserviceTokenOptional, AuthScheme,
        NoAccessToken, NoAuthentication,
    },
    error::{DeserializationError, FromHttpRequestError},
};

use tracing::warn;

use crate::{AppState, error::ApiError, metrics::Refusal};

/// How an endpoint authenticates, derived from its ruma auth scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthRequirement {
    /// No token is read.
    None,
    /// A token is used when present.
    Optional,
    /// A token must be present and valid.
    Required,
}

/// Maps a ruma auth scheme onto what this server requires.
pub trait Authenticated: AuthScheme {
    /// The requirement for endpoints with this scheme.
    const REQUIREMENT: AuthRequirement;
}

impl Authenticated for NoAuthentication {
    const REQUIREMENT: AuthRequirement = AuthRequirement::None;
}
impl Authenticated for NoAccessToken {
    const REQUIREMENT: AuthRequirement = AuthRequirement::None;
}
impl Authenticated for AccessToken {
    const REQUIREMENT: AuthRequirement = AuthRequirement::Required;
}
impl Authenticated for AccessTokenOptional {
    const REQUIREMENT: AuthRequirement = AuthRequirement::Optional;
}
// Application services are not supported; their tokens are checked like users' tokens.
impl Authenticated for AppserviceToken {
    const REQUIREMENT: AuthRequirement = AuthRequirement::Required;
}
impl Authenticated for AppserviceTokenOptional {
    const REQUIREMENT: AuthRequirement = AuthRequirement::Optional;
}

/// A parsed and authenticated client request.
pub struct Ruma<T> {
    /// The request.
    pub body: T,
    /// The caller, when the request carried a valid access token.
    pub session: Option<Session>,
    /// The access token as sent, when there was one.
    pub access_token: Option<String>,
}

impl<T> Ruma<T> {
    /// The caller of an endpoint that requires authentication.
    pub fn session(&self) -> Result<&Session, ApiError> {
        self.session.as_ref().ok_or_else(ApiError::missing_token)
    }
}

impl<T, S> FromRequest<S> for Ruma<T>
where
    T: IncomingRequest + Send,
    T::Authentication: Authenticated,
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let app = AppState::from_ref(state);
        let (mut parts, body) = req.into_parts();
        let path_args: Vec<String> =
            match RawPathParams::from_request_parts(&mut parts, state).await {
                Ok(params) => params.iter().map(|(_, v)| v.to_owned()).collect(),
                Err(_) => return Err(ApiError::invalid_param("Invalid path parameters")),
            };
        let bytes = read_body(body, app.limits.max_body_bytes).await?;

        let access_token = bearer_or_query_token(&parts);
        let session = match (T::Authentication::REQUIREMENT, &access_token) {
            (AuthRequirement::None, _) | (AuthRequirement::Optional, None) => None,
            (AuthRequirement::Required, None) => return Err(ApiError::missing_token()),
            (_, Some(token)) => Some(app.hs.accounts.authenticate(token).await?),
        };

        let has_body = matches!(parts.method, Method::POST | Method::PUT)
            || (parts.method == Method::DELETE && !bytes.is_empty());
        // An empty body on an endpoint that takes one is read as `{}` so that optional-only
        // bodies work; anything else must be JSON.
        let bytes: &[u8] = if has_body && bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        if has_body && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err() {
            return Err(ApiError::not_json("Content not JSON"));
        }
        let path = parts.uri.path().to_owned();
        let request = axum::http::Request::from_parts(parts, bytes);
        let args: Vec<&str> = path_args.iter().map(String::as_str).collect();
        // Some of ruma's request parsers index into the JSON they are given and panic on input
        // they did not expect; whatever they choke on is the client's bad JSON, not our fault.
        let parsed = std::panic::catch_unwind(AssertUnwindSafe(|| {
            T::try_from_http_request(request, &args)
        }));
        let body = match parsed {
            Ok(result) => result.map_err(map_parse_error)?,
            Err(_) => {
                app.metrics.refuse(Refusal::ParsePanic);
                warn!(%path, "request parser panicked on the body; answered M_BAD_JSON");
                return Err(ApiError::bad_json("Malformed request body"));
            }
        };
        Ok(Ruma {
            body,
            session,
            access_token,
        })
    }
}

/// Reads a whole request body of at most `limit` bytes: `413 M_TOO_LARGE` past it, `408` when
/// the client stops sending, `400` when the connection breaks off.
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|e| body_error(&e))
}

/// The Matrix error for a request body that could not be read.
pub(crate) fn body_error(e: &axum::Error) -> ApiError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(cause) = source {
        if cause.is::<http_body_util::LengthLimitError>() {
            return ApiError::too_large();
        }
        if cause.is::<crate::serve::BodyTimedOut>() {
            return ApiError::new(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                "M_UNKNOWN",
                "Request body timed out",
            )
            .closing();
        }
        source = cause.source();
    }
    ApiError::new(
        axum::http::StatusCode::BAD_REQUEST,
        "M_UNKNOWN",
        "Request body could not be read",
    )
    .closing()
}

fn map_parse_error(e: FromHttpRequestError) -> ApiError {
    match e {
        FromHttpRequestError::Deserialization(DeserializationError::Json(e)) => {
            ApiError::bad_json(e.to_string())
        }
        FromHttpRequestError::Deserialization(DeserializationError::Ident(e)) => {
            ApiError::invalid_param(e.to_string())
        }
        FromHttpRequestError::Deserialization(e) => ApiError::invalid_param(e.to_string()),
        FromHttpRequestError::MethodMismatch { .. } => ApiError::unrecognized(),
        other => ApiError::bad_json(other.to_string()),
    }
}

/// The access token from the `Authorization: Bearer` header or the `access_token` query.
pub fn bearer_or_query_token(parts: &axum::http::request::Parts) -> Option<String> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION)
        && let Ok(value) = value.to_str()
        && let Some(token) = value.strip_prefix("Bearer ")
    {
        return Some(token.trim().to_owned());
    }
    let query = parts.uri.query()?;
    form_urlencoded_pairs(query)
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v)
}

fn form_urlencoded_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        Some((percent_decode(k)?, percent_decode(v)?))
    })
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A ruma response type, serialised as the endpoint defines.
pub struct RumaResponse<T>(pub T);

impl<T: OutgoingResponse> IntoResponse for RumaResponse<T> {
    fn into_response(self) -> Response {
        match self.0.try_into_http_response::<BytesMut>() {
            Ok(response) => response.map(|body| Body::from(body.freeze())),
            Err(e) => ApiError::internal(e).into_response(),
        }
    }
}

/// The result type of handlers.
pub type ApiResult<T> = Result<RumaResponse<T>, ApiError>;

/// Parses event or account-data content, which must be a JSON object (`M_BAD_JSON` otherwise).
pub(crate) fn object_content(json: &str) -> Result<serde_json::Value, ApiError> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| ApiError::bad_json(e.to_string()))?;
    if !value.is_object() {
        return Err(ApiError::bad_json("Content must be a JSON object"));
    }
    Ok(value)
}
