//! The content repository.
//!
//! - `POST /_matrix/media/v3/upload`, `POST /_matrix/media/v1/create`,
//!   `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`
//! - `GET /_matrix/client/v1/media/config`, `GET /_matrix/media/v3/config`
//! - `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}[/{fileName}]` and
//!   `GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}` (authenticated)
//! - `GET /_matrix/media/v3/download/...` and `GET /_matrix/media/v3/thumbnail/...` (the
//!   older unauthenticated forms)
//!
//! Uploads stream into the server core chunk by chunk under the configured size limit, never
//! whole into memory; downloads stream out of the stored file. Every file is served with headers
//! that keep a browser from running it as part of a page: a sandboxing
//! `Content-Security-Policy`, and `Content-Disposition: attachment` unless its type is on a
//! short list of passive ones.

use std::time::Duration;

use axum::{
    Json, Router,
    body::Body,
    extract::{
        FromRef, FromRequestParts, Path, Query, State,
        rejection::{PathRejection, QueryRejection},
    },
    http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use bytes::Bytes;
use futures_util::StreamExt;
use grove_server::{
    accounts::Session,
    media::{MediaInfo, Method, NewMedia, ThumbnailRequest, valid_media_id},
};
use ruma::{
    OwnedServerName,
    http_headers::{ContentDisposition, ContentDispositionType},
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use crate::{AppState, error::ApiError, extract::bearer_or_query_token};

/// The `Content-Security-Policy` of every file served: nothing in it may run or load.
const CONTENT_SECURITY_POLICY: &str = "sandbox; default-src 'none'; script-src 'none'; \
     plugin-types application/pdf; style-src 'unsafe-inline'; object-src 'self';";
/// Bytes read from a stored file per chunk sent.
const READ_CHUNK: usize = 64 * 1024;
/// Types a browser only displays, never runs: these are served `inline`, all others as
/// `attachment`.
const INLINE_TYPES: &[&str] = &[
    "text/css",
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

/// The routes of this module.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/_matrix/media/v3/upload", post(upload))
        .route("/_matrix/media/v1/create", post(create))
        .route(
            "/_matrix/media/v3/upload/{server_name}/{media_id}",
            put(upload_reserved),
        )
        .route("/_matrix/client/v1/media/config", get(config))
        .route("/_matrix/media/v3/config", get(config))
        .route(
            "/_matrix/client/v1/media/download/{server_name}/{media_id}",
            get(download_authenticated),
        )
        .route(
            "/_matrix/client/v1/media/download/{server_name}/{media_id}/{file_name}",
            get(download_authenticated_as),
        )
        .route(
            "/_matrix/client/v1/media/thumbnail/{server_name}/{media_id}",
            get(thumbnail_authenticated),
        )
        .route(
            "/_matrix/media/v3/download/{server_name}/{media_id}",
            get(download_legacy),
        )
        .route(
            "/_matrix/media/v3/download/{server_name}/{media_id}/{file_name}",
            get(download_legacy_as),
        )
        .route(
            "/_matrix/media/v3/thumbnail/{server_name}/{media_id}",
            get(thumbnail_legacy),
        )
}

/// The authenticated caller of a media endpoint (`M_MISSING_TOKEN` without a token).
struct Caller(Session);

impl<S> FromRequestParts<S> for Caller
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let app = AppState::from_ref(state);
        let token = bearer_or_query_token(parts).ok_or_else(ApiError::missing_token)?;
        Ok(Caller(app.hs.accounts.authenticate(&token).await?))
    }
}

#[derive(Debug, Deserialize)]
struct UploadQuery {
    filename: Option<String>,
}

#[derive(Debug, Deserialize)]
struct DownloadQuery {
    /// Only on the unauthenticated routes: whether to fetch other servers' media.
    allow_remote: Option<bool>,
    timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct ThumbnailQuery {
    width: Option<String>,
    height: Option<String>,
    method: Option<String>,
    allow_remote: Option<bool>,
    timeout_ms: Option<u64>,
}

/// How long a download waits by default for a reserved ID's content (the spec's default).
const DEFAULT_WAIT_MS: u64 = 20_000;
/// How long a download may ask to wait, at most.
const MAX_WAIT_MS: u64 = 60_000;

/// Where a file may be looked for, and how long to wait for a reserved one.
#[derive(Debug, Clone, Copy)]
struct Lookup {
    /// Whether other servers' media may be fetched.
    fetch: bool,
    /// How long to wait for content not yet uploaded.
    wait: Duration,
}

impl Lookup {
    fn new(fetch: bool, timeout_ms: Option<u64>) -> Self {
        let ms = timeout_ms.unwrap_or(DEFAULT_WAIT_MS).min(MAX_WAIT_MS);
        Self {
            fetch,
            wait: Duration::from_millis(ms),
        }
    }
}

fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| ApiError::invalid_param(e.body_text()))
}

fn path<T>(path: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    path.map(|Path(p)| p)
        .map_err(|e| ApiError::invalid_param(e.body_text()))
}

/// The uploader's `Content-Type`, when it sent one.
fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Streams `body` into a new upload, refusing at once a declared length over the limit.
async fn receive(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<grove_server::media::Upload, ApiError> {
    let limit = state.hs.media.max_upload_bytes();
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large(limit));
    }
    let mut upload = state.hs.media.begin_upload().await?;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| crate::extract::body_error(&e))?;
        upload.write(&chunk).await.map_err(|e| match e {
            grove_server::Error::TooLarge(_) => too_large(limit),
            other => other.into(),
        })?;
    }
    Ok(upload)
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "M_TOO_LARGE",
        format!("Media files are limited to {limit} bytes"),
    )
}

/// `POST /_matrix/media/v3/upload`
async fn upload(
    State(state): State<AppState>,
    Caller(session): Caller,
    params: Result<Query<UploadQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let params = query(params)?;
    let upload = receive(&state, &headers, body).await?;
    let meta = NewMedia {
        content_type: content_type(&headers),
        filename: params.filename,
    };
    let info = upload.finish(meta, &session.user_id).await?;
    Ok(Json(json!({ "content_uri": mxc(&info) })))
}

/// `POST /_matrix/media/v1/create`
async fn create(
    State(state): State<AppState>,
    Caller(session): Caller,
) -> Result<Json<Value>, ApiError> {
    let (media_id, expires) = state.hs.media.reserve(&session.user_id).await?;
    Ok(Json(json!({
        "content_uri": format!("mxc://{}/{media_id}", state.hs.config.server_name),
        "unused_expires_at": expires,
    })))
}

/// `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`
async fn upload_reserved(
    State(state): State<AppState>,
    Caller(session): Caller,
    ids: Result<Path<(String, String)>, PathRejection>,
    params: Result<Query<UploadQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let (server_name, media_id) = path(ids)?;
    let params = query(params)?;
    if server_name != state.hs.config.server_name.as_str() {
        return Err(ApiError::forbidden(
            "Media of other servers cannot be uploaded here",
        ));
    }
    let upload = receive(&state, &headers, body).await?;
    let meta = NewMedia {
        content_type: content_type(&headers),
        filename: params.filename,
    };
    upload
        .finish_reserved(&media_id, meta, &session.user_id)
        .await?;
    Ok(Json(json!({})))
}

/// `GET /_matrix/client/v1/media/config`
async fn config(State(state): State<AppState>, Caller(_): Caller) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({ "m.upload.size": state.hs.media.max_upload_bytes() }),
    ))
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}`
async fn download_authenticated(
    State(state): State<AppState>,
    Caller(_): Caller,
    ids: Result<Path<(String, String)>, PathRejection>,
    params: Result<Query<DownloadQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (server_name, media_id) = path(ids)?;
    let lookup = Lookup::new(true, query(params)?.timeout_ms);
    download(&state, &server_name, &media_id, None, lookup).await
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}`
async fn download_authenticated_as(
    State(state): State<AppState>,
    Caller(_): Caller,
    ids: Result<Path<(String, String, String)>, PathRejection>,
    params: Result<Query<DownloadQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (server_name, media_id, file_name) = path(ids)?;
    let lookup = Lookup::new(true, query(params)?.timeout_ms);
    download(&state, &server_name, &media_id, Some(file_name), lookup).await
}

/// `GET /_matrix/media/v3/download/{serverName}/{mediaId}`
async fn download_legacy(
    State(state): State<AppState>,
    ids: Result<Path<(String, String)>, PathRejection>,
    params: Result<Query<DownloadQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (server_name, media_id) = path(ids)?;
    let params = query(params)?;
    let lookup = Lookup::new(params.allow_remote.unwrap_or(true), params.timeout_ms);
    download(&state, &server_name, &media_id, None, lookup).await
}

/// `GET /_matrix/media/v3/download/{serverName}/{mediaId}/{fileName}`
async fn download_legacy_as(
    State(state): State<AppState>,
    ids: Result<Path<(String, String, String)>, PathRejection>,
    params: Result<Query<DownloadQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (server_name, media_id, file_name) = path(ids)?;
    let params = query(params)?;
    let lookup = Lookup::new(params.allow_remote.unwrap_or(true), params.timeout_ms);
    download(&state, &server_name, &media_id, Some(file_name), lookup).await
}

/// `GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}`
async fn thumbnail_authenticated(
    State(state): State<AppState>,
    Caller(_): Caller,
    ids: Result<Path<(String, String)>, PathRejection>,
    params: Result<Query<ThumbnailQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (server_name, media_id) = path(ids)?;
    let params = query(params)?;
    let lookup = Lookup::new(true, params.timeout_ms);
    thumbnail(&state, &server_name, &media_id, params, lookup).await
}

/// `GET /_matrix/media/v3/thumbnail/{serverName}/{mediaId}`
async fn thumbnail_legacy(
    State(state): State<AppState>,
    ids: Result<Path<(String, String)>, PathRejection>,
    params: Result<Query<ThumbnailQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (server_name, media_id) = path(ids)?;
    let params = query(params)?;
    let lookup = Lookup::new(params.allow_remote.unwrap_or(true), params.timeout_ms);
    thumbnail(&state, &server_name, &media_id, params, lookup).await
}

fn not_found() -> ApiError {
    ApiError::not_found("Media not found")
}

/// Finds a file here or, when allowed, at its origin. A reserved ID still waiting for its
/// content is waited for as long as the lookup allows, then `M_NOT_YET_UPLOADED`.
async fn locate(
    state: &AppState,
    server_name: &str,
    media_id: &str,
    lookup: Lookup,
) -> Result<(OwnedServerName, MediaInfo), ApiError> {
    let origin = OwnedServerName::try_from(server_name).map_err(|_| not_found())?;
    if !valid_media_id(media_id) {
        return Err(not_found());
    }
    let media = &state.hs.media;
    if let Some(info) = media.locate(&origin, media_id, lookup.fetch).await? {
        return Ok((origin, info));
    }
    if !media.is_pending(&origin, media_id).await? {
        return Err(not_found());
    }
    if !media
        .wait_for_upload(&origin, media_id, lookup.wait)
        .await?
    {
        return Err(grove_server::Error::NotYetUploaded.into());
    }
    match media.locate(&origin, media_id, false).await? {
        Some(info) => Ok((origin, info)),
        None => Err(not_found()),
    }
}

async fn download(
    state: &AppState,
    server_name: &str,
    media_id: &str,
    file_name: Option<String>,
    lookup: Lookup,
) -> Result<Response, ApiError> {
    let (origin, _) = locate(state, server_name, media_id, lookup).await?;
    let file = state
        .hs
        .media
        .open(&origin, media_id)
        .await?
        .ok_or_else(not_found)?;
    let content_type = file
        .info
        .content_type
        .clone()
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    let file_name = file_name.or_else(|| file.info.filename.clone());
    let mut response = Body::from_stream(chunks(file.file)).into_response();
    let headers = response.headers_mut();
    set_safe_headers(headers, &content_type, file_name);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(file.info.size));
    Ok(response)
}

async fn thumbnail(
    state: &AppState,
    server_name: &str,
    media_id: &str,
    params: ThumbnailQuery,
    lookup: Lookup,
) -> Result<Response, ApiError> {
    let side = |value: Option<String>, name: &str| -> Result<u32, ApiError> {
        let value =
            value.ok_or_else(|| ApiError::missing_param(format!("Missing {name} parameter")))?;
        value
            .parse::<u32>()
            .map_err(|_| ApiError::invalid_param(format!("Invalid {name}")))
    };
    let width = side(params.width, "width")?;
    let height = side(params.height, "height")?;
    let method = match params.method.as_deref() {
        None | Some("scale") => Method::Scale,
        Some("crop") => Method::Crop,
        Some(_) => return Err(ApiError::invalid_param("method must be crop or scale")),
    };
    let (origin, _) = locate(state, server_name, media_id, lookup).await?;
    let request = ThumbnailRequest {
        width,
        height,
        method,
    };
    let thumbnail = state
        .hs
        .media
        .thumbnail(&origin, media_id, request)
        .await?
        .ok_or_else(not_found)?;
    let size = thumbnail.bytes.len();
    let mut response = Body::from(thumbnail.bytes).into_response();
    let headers = response.headers_mut();
    set_safe_headers(headers, &thumbnail.content_type, None);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    Ok(response)
}

/// `mxc://server/id` of a stored file.
fn mxc(info: &MediaInfo) -> String {
    format!("mxc://{}/{}", info.origin, info.media_id)
}

/// Whether a type is on the list of types served `inline`.
fn is_inline(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    INLINE_TYPES.contains(&essence.as_str())
}

/// Sets the type, disposition and the headers that keep served files inert.
fn set_safe_headers(headers: &mut HeaderMap, content_type: &str, file_name: Option<String>) {
    let content_type = HeaderValue::from_str(content_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    let inline = content_type.to_str().is_ok_and(is_inline);
    headers.insert(header::CONTENT_TYPE, content_type);
    let disposition = ContentDisposition::new(if inline {
        ContentDispositionType::Inline
    } else {
        ContentDispositionType::Attachment
    })
    .with_filename(file_name);
    if let Ok(value) = HeaderValue::from_str(&disposition.to_string()) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    } else {
        headers.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment"),
        );
    }
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("cross-origin"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// The file as a stream of chunks; a read error ends the stream with that error.
fn chunks(
    file: tokio::fs::File,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; READ_CHUNK];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_passive_types_are_inline() {
        assert!(is_inline("image/png"));
        assert!(is_inline("Text/Plain; charset=utf-8"));
        assert!(!is_inline("text/html"));
        assert!(!is_inline("image/svg+xml"));
        assert!(!is_inline("application/octet-stream"));
        assert!(!is_inline(""));
    }

    #[test]
    fn file_names_cannot_break_the_header() {
        let mut headers = HeaderMap::new();
        set_safe_headers(
            &mut headers,
            "text/html",
            Some("a\"b;\r\nSet-Cookie: x.html".into()),
        );
        let value = headers[header::CONTENT_DISPOSITION]
            .to_str()
            .expect("ascii");
        assert!(value.starts_with("attachment"), "{value}");
        assert!(!value.contains('\n') && !value.contains('\r'), "{value}");
        assert!(
            value.contains(r#"filename="a\"b;"#),
            "quoted and escaped: {value}"
        );

        set_safe_headers(&mut headers, "image/png", Some("été.png".into()));
        let value = headers[header::CONTENT_DISPOSITION]
            .to_str()
            .expect("ascii");
        assert!(value.starts_with("inline; filename*="), "{value}");
    }
}
