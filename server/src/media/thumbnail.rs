//! Thumbnails: scaled or cropped copies of stored PNG, JPEG, GIF and WebP images, made on first
//! request and kept on disk and in `media_thumbnails` for the next.
//!
//! Decoding runs on the blocking pool, a few at a time, under decoder limits, so a hostile
//! image costs bounded memory and never stalls the async workers.

use std::{io::Cursor, path::PathBuf, sync::Arc};

use image::{DynamicImage, ImageFormat, ImageReader, Limits, imageops::FilterType};
use ruma::ServerName;
use tokio::sync::Semaphore;
use tracing::debug;

use super::{Media, io_error};
use crate::{Error, Result, accounts::ids::now_ms};

/// Largest thumbnail side made; larger requests are answered at this bound.
const MAX_THUMBNAIL_SIDE: u32 = 1024;
/// Largest side of an image decoded for thumbnailing.
const MAX_SOURCE_SIDE: u32 = 8192;
/// Most memory one decode may allocate.
const MAX_DECODE_ALLOC: u64 = 128 * 1024 * 1024;
/// Thumbnails kept per media file; requests for further sizes are made but not kept, so a
/// client cycling through sizes cannot fill the disk.
const MAX_KEPT_PER_MEDIA: i64 = 8;
/// JPEG thumbnails' quality.
const JPEG_QUALITY: u8 = 80;
/// Decodes running at once, node-wide.
pub(super) const CONCURRENT_DECODES: usize = 2;

/// How a thumbnail is fitted to the requested size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The whole image, scaled to fit inside the box, aspect ratio kept.
    Scale,
    /// The box filled, aspect ratio kept, the overflow cut off evenly on both sides.
    Crop,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Scale => "scale",
            Method::Crop => "crop",
        }
    }
}

/// A thumbnail request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThumbnailRequest {
    /// Requested width in pixels (at least 1).
    pub width: u32,
    /// Requested height in pixels (at least 1).
    pub height: u32,
    /// How to fit the image.
    pub method: Method,
}

/// A thumbnail, or the original image when it already fits the box.
#[derive(Debug, Clone)]
pub struct Thumbnail {
    /// Its MIME type.
    pub content_type: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// The decode semaphore shared by clones of one repository.
pub(super) fn decoders() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(CONCURRENT_DECODES))
}

impl Media {
    fn thumbnail_path(
        &self,
        origin: &ServerName,
        media_id: &str,
        request: &ThumbnailRequest,
    ) -> Result<PathBuf> {
        let key = format!(
            "{}\n{media_id}\n{}\n{}\n{}",
            origin.as_str(),
            request.width,
            request.height,
            request.method.as_str()
        );
        self.hashed_path("thumbnails", &key)
    }

    /// A thumbnail of a stored image; `Ok(None)` when no such media is stored, `NotFound`
    /// when it is not an image this node can read, `InvalidParam` for a zero side.
    pub async fn thumbnail(
        &self,
        origin: &ServerName,
        media_id: &str,
        request: ThumbnailRequest,
    ) -> Result<Option<Thumbnail>> {
        if request.width == 0 || request.height == 0 {
            return Err(Error::InvalidParam(
                "thumbnail width and height must be positive".into(),
            ));
        }
        let request = ThumbnailRequest {
            width: request.width.min(MAX_THUMBNAIL_SIDE),
            height: request.height.min(MAX_THUMBNAIL_SIDE),
            method: request.method,
        };
        if self.info(origin, media_id).await?.is_none() {
            return Ok(None);
        }
        if let Some(kept) = self.kept_thumbnail(origin, media_id, &request).await? {
            return Ok(Some(kept));
        }
        let Some((_, original)) = self.read(origin, media_id).await? else {
            return Ok(None);
        };
        let permit = self
            .decoders
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Internal("thumbnailer closed".into()))?;
        let made = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            make(&original, request).map(|made| (made, original))
        })
        .await
        .map_err(|e| Error::Internal(format!("thumbnail task: {e}")))?;
        let (made, original) = made.map_err(|e| {
            debug!(%origin, media_id, error = %e, "cannot thumbnail");
            Error::NotFound("this media cannot be thumbnailed".into())
        })?;
        match made {
            Made::Original(format) => Ok(Some(Thumbnail {
                content_type: format.to_mime_type().to_owned(),
                bytes: original,
            })),
            Made::Thumbnail(thumbnail) => {
                self.keep_thumbnail(origin, media_id, &request, &thumbnail)
                    .await?;
                Ok(Some(thumbnail))
            }
        }
    }

    async fn kept_thumbnail(
        &self,
        origin: &ServerName,
        media_id: &str,
        request: &ThumbnailRequest,
    ) -> Result<Option<Thumbnail>> {
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT content_type FROM media_thumbnails WHERE origin = $1 AND media_id = $2 \
             AND width = $3 AND height = $4 AND method = $5",
        )
        .bind(origin.as_str())
        .bind(media_id)
        .bind(i64::from(request.width))
        .bind(i64::from(request.height))
        .bind(request.method.as_str())
        .fetch_optional(self.storage.pool())
        .await?;
        let Some((content_type,)) = row else {
            return Ok(None);
        };
        let path = self.thumbnail_path(origin, media_id, request)?;
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(Some(Thumbnail {
                content_type,
                bytes,
            })),
            // The row outlived its file (a wiped directory): made again, the row is replaced.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&path, e)),
        }
    }

    async fn keep_thumbnail(
        &self,
        origin: &ServerName,
        media_id: &str,
        request: &ThumbnailRequest,
        thumbnail: &Thumbnail,
    ) -> Result<()> {
        let (kept,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM media_thumbnails WHERE origin = $1 AND media_id = $2",
        )
        .bind(origin.as_str())
        .bind(media_id)
        .fetch_one(self.storage.pool())
        .await?;
        if kept >= MAX_KEPT_PER_MEDIA {
            return Ok(());
        }
        let mut upload = self.begin_upload().await?;
        upload.write(&thumbnail.bytes).await?;
        upload.seal().await?;
        let path = self.thumbnail_path(origin, media_id, request)?;
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| io_error(parent, e))?;
        }
        tokio::fs::rename(&upload.temp, &path)
            .await
            .map_err(|e| io_error(&path, e))?;
        upload.placed = true;
        sqlx::query(
            "INSERT INTO media_thumbnails (origin, media_id, width, height, method, \
             content_type, size, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (origin, media_id, width, height, method) DO UPDATE \
             SET content_type = $6, size = $7, created_ms = $8",
        )
        .bind(origin.as_str())
        .bind(media_id)
        .bind(i64::from(request.width))
        .bind(i64::from(request.height))
        .bind(request.method.as_str())
        .bind(thumbnail.content_type.as_str())
        .bind(i64::try_from(thumbnail.bytes.len()).unwrap_or(i64::MAX))
        .bind(now_ms())
        .execute(self.storage.pool())
        .await?;
        Ok(())
    }
}

/// What thumbnailing produced.
enum Made {
    /// The original already fits the box; it is served as it is.
    Original(ImageFormat),
    /// A new, smaller image.
    Thumbnail(Thumbnail),
}

/// Why an image could not be thumbnailed.
#[derive(Debug, thiserror::Error)]
enum MakeError {
    /// Not PNG, JPEG, GIF or WebP.
    #[error("unsupported image format")]
    Unsupported,
    /// Decoding or encoding failed (corrupt data, over the limits).
    #[error("image: {0}")]
    Image(#[from] image::ImageError),
    /// Reading the in-memory buffer failed.
    #[error("reading: {0}")]
    Io(#[from] std::io::Error),
}

/// A reader over an image held in memory.
type MemoryReader<'a> = ImageReader<Cursor<&'a [u8]>>;

fn open_image(bytes: &[u8]) -> Result<(MemoryReader<'_>, ImageFormat), MakeError> {
    let mut reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format()?;
    let format = match reader.format() {
        Some(f @ (ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Gif | ImageFormat::WebP)) => {
            f
        }
        _ => return Err(MakeError::Unsupported),
    };
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SOURCE_SIDE);
    limits.max_image_height = Some(MAX_SOURCE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    reader.limits(limits);
    Ok((reader, format))
}

/// Scales or crops `bytes` into the requested box; never enlarges.
fn make(bytes: &[u8], request: ThumbnailRequest) -> Result<Made, MakeError> {
    let (reader, format) = open_image(bytes)?;
    let (width, height) = reader.into_dimensions()?;
    if width <= request.width && height <= request.height {
        return Ok(Made::Original(format));
    }
    let (reader, _) = open_image(bytes)?;
    let image = reader.decode()?;
    let resized = match request.method {
        Method::Scale => image.resize(request.width, request.height, FilterType::Triangle),
        Method::Crop => image.resize_to_fill(
            request.width.min(width),
            request.height.min(height),
            FilterType::Triangle,
        ),
    };
    let mut out = Cursor::new(Vec::new());
    let content_type = if format == ImageFormat::Jpeg {
        let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY);
        DynamicImage::ImageRgb8(resized.to_rgb8()).write_with_encoder(encoder)?;
        "image/jpeg"
    } else {
        resized.write_to(&mut out, ImageFormat::Png)?;
        "image/png"
    };
    Ok(Made::Thumbnail(Thumbnail {
        content_type: content_type.to_owned(),
        bytes: out.into_inner(),
    }))
}
