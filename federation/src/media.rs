//! Media across servers: serving this node's files to other servers, and fetching other
//! servers' files for local users (the client API caches them through the server core).
//!
//! - `GET /_matrix/federation/v1/media/download/{mediaId}`
//! - `GET /_matrix/federation/v1/media/thumbnail/{mediaId}`
//!
//! Both answer `multipart/mixed`: a JSON metadata part (empty for now) and the file. Only this
//! node's own uploads are served; copies of other servers' files are not passed on.

use std::sync::Arc;

use axum::{
    Router,
    body::Body,
    extract::{Path, Query, State, rejection::QueryRejection},
    response::{IntoResponse, Response},
    routing::get,
};
use bytes::BytesMut;
use grove_server::{
    Error, Result,
    federation::RemoteMedia,
    media::{Method, NewMedia, ThumbnailRequest, valid_media_id},
};
use ruma::{
    ServerName,
    api::{
        IncomingResponseExt, OutgoingResponseExt,
        federation::authenticated_media::{
            Content, ContentMetadata, FileOrLocation, get_content, get_content_thumbnail,
        },
    },
    http_headers::{ContentDisposition, ContentDispositionType},
};
use serde::Deserialize;
use tracing::debug;

use crate::{Ctx, client::segment, error::FedError};

/// Room for the multipart framing around a file in a download answer.
const MULTIPART_OVERHEAD: usize = 64 * 1024;

/// The media routes of the federation router.
pub(crate) fn routes() -> Router<Arc<Ctx>> {
    Router::new()
        .route(
            "/_matrix/federation/v1/media/download/{media_id}",
            get(download),
        )
        .route(
            "/_matrix/federation/v1/media/thumbnail/{media_id}",
            get(thumbnail),
        )
}

fn not_found() -> FedError {
    FedError::not_found("media not found")
}

/// `GET /_matrix/federation/v1/media/download/{mediaId}`
async fn download(
    State(ctx): State<Arc<Ctx>>,
    Path(media_id): Path<String>,
) -> Result<Response, FedError> {
    let ours = &ctx.hs.config.server_name;
    let Some((info, bytes)) = ctx.hs.media.read(ours, &media_id).await? else {
        return Err(not_found());
    };
    let content_type = info
        .content_type
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    // Serving clients decide inline or attachment themselves; the name is what travels.
    let disposition =
        ContentDisposition::new(ContentDispositionType::Attachment).with_filename(info.filename);
    let content = Content::new(bytes, content_type, disposition);
    multipart(get_content::v1::Response::new(
        ContentMetadata::new(),
        FileOrLocation::File(content),
    ))
}

#[derive(Debug, Deserialize)]
struct ThumbnailQuery {
    width: u32,
    height: u32,
    method: Option<String>,
}

/// `GET /_matrix/federation/v1/media/thumbnail/{mediaId}`
async fn thumbnail(
    State(ctx): State<Arc<Ctx>>,
    Path(media_id): Path<String>,
    query: Result<Query<ThumbnailQuery>, QueryRejection>,
) -> Result<Response, FedError> {
    let Query(query) = query.map_err(|e| {
        FedError::new(
            http::StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
            e.body_text(),
        )
    })?;
    let method = match query.method.as_deref() {
        None | Some("scale") => Method::Scale,
        Some("crop") => Method::Crop,
        Some(_) => {
            return Err(FedError::new(
                http::StatusCode::BAD_REQUEST,
                "M_INVALID_PARAM",
                "method must be crop or scale",
            ));
        }
    };
    let request = ThumbnailRequest {
        width: query.width,
        height: query.height,
        method,
    };
    let ours = &ctx.hs.config.server_name;
    let Some(thumbnail) = ctx.hs.media.thumbnail(ours, &media_id, request).await? else {
        return Err(not_found());
    };
    let content = Content::new(
        thumbnail.bytes,
        thumbnail.content_type,
        ContentDisposition::new(ContentDispositionType::Inline),
    );
    multipart(get_content_thumbnail::v1::Response::new(
        ContentMetadata::new(),
        FileOrLocation::File(content),
    ))
}

fn multipart(response: impl OutgoingResponseExt) -> Result<Response, FedError> {
    match response.try_into_http_response::<BytesMut>() {
        Ok(response) => Ok(response
            .map(|body| Body::from(body.freeze()))
            .into_response()),
        Err(e) => Err(Error::Internal(format!("multipart answer: {e}")).into()),
    }
}

/// Downloads `media_id` from `origin` (the [`grove_server::federation::Remote`] operation).
pub(crate) async fn fetch(
    ctx: &Ctx,
    origin: &ServerName,
    media_id: &str,
    max_bytes: u64,
) -> Result<RemoteMedia> {
    if !valid_media_id(media_id) {
        return Err(Error::NotFound("invalid media ID".into()));
    }
    let path = format!(
        "/_matrix/federation/v1/media/download/{}",
        segment(media_id)
    );
    let limit = usize::try_from(max_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(MULTIPART_OVERHEAD);
    let response = ctx
        .client
        .request_raw(origin, http::Method::GET, &path, None, limit)
        .await?;
    let (parts, body) = response.into_parts();
    let answer = get_content::v1::Response::try_from_http_response(http::Response::from_parts(
        parts,
        &body[..],
    ))
    .map_err(|e| {
        debug!(%origin, media_id, error = %e, "unreadable media answer");
        Error::NotFound(format!("the origin's answer was unreadable: {e}"))
    })?;
    let FileOrLocation::File(content) = answer.content else {
        // Redirects lead outside the overlay, where this node does not go.
        return Err(Error::NotFound(
            "the origin answered with a redirect".into(),
        ));
    };
    if u64::try_from(content.file.len()).unwrap_or(u64::MAX) > max_bytes {
        return Err(Error::TooLarge("the remote file is too large".into()));
    }
    Ok(RemoteMedia {
        meta: NewMedia {
            content_type: content.content_type,
            filename: content.content_disposition.and_then(|d| d.filename),
        },
        bytes: content.file,
    })
}
