//! The media repository: files uploaded by local users, copies of other servers' files fetched
//! for local users, and thumbnails of both.
//!
//! The bytes live in files under the configured media directory, named by a hash of
//! `(origin, media ID)` so that no ID, however odd, can name a path of its own; the `media` and
//! `media_thumbnails` tables say what each file is. A file is written under `tmp/`, synced and
//! renamed into place before its row is written, so a crash leaves at worst an unnamed file
//! (swept from `tmp/` at the next start), never a half file under a real ID.
//!
//! Use: [`Media::begin_upload`], [`Upload::write`] for each chunk, then [`Upload::finish`] (or
//! [`Upload::finish_reserved`] for an ID reserved by [`Media::reserve`]); [`Media::open`] to
//! stream a file back; [`Media::store`] for bytes already in memory (a remote server's answer);
//! [`Media::thumbnail`] for a scaled or cropped image.

mod thumbnail;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rand::{Rng, distributions::Alphanumeric};
use ruma::{OwnedServerName, ServerName, UserId};
use sha2::{Digest, Sha256};
use sqlx::Row;
use tokio::io::AsyncWriteExt;
use tracing::{debug, warn};

pub use thumbnail::{Method, Thumbnail, ThumbnailRequest};

use crate::{Error, Result, ServerConfig, Storage, accounts::ids::now_ms, federation::RemoteHook};

/// Length of a new media ID: 32 letters and digits, about 190 bits.
const MEDIA_ID_LEN: usize = 32;
/// Longest media ID accepted from anyone (other servers included).
const MAX_MEDIA_ID_LEN: usize = 255;
/// Longest content type kept; a longer one is stored as `application/octet-stream`.
const MAX_CONTENT_TYPE_LEN: usize = 255;
/// Longest file name kept, in characters.
const MAX_FILENAME_CHARS: usize = 255;
/// How long an ID reserved for an asynchronous upload waits for its content.
pub const RESERVATION_TTL_MS: i64 = 24 * 60 * 60 * 1000;
/// Most IDs one user may hold reserved and not yet uploaded at once.
const MAX_PENDING_PER_USER: i64 = 16;

/// What a file is, as the uploader (or the origin server) described it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewMedia {
    /// The MIME type, when one was given.
    pub content_type: Option<String>,
    /// The file name, when one was given.
    pub filename: Option<String>,
}

/// A stored media file's description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaInfo {
    /// The server the media belongs to.
    pub origin: OwnedServerName,
    /// The media ID (the path of its `mxc://` URI).
    pub media_id: String,
    /// The MIME type, when known.
    pub content_type: Option<String>,
    /// The file name, when known.
    pub filename: Option<String>,
    /// Size in bytes.
    pub size: u64,
    /// The local user who uploaded it; none for copies of other servers' media.
    pub uploader: Option<String>,
    /// When it was stored here, in milliseconds since the Unix epoch.
    pub created_ms: i64,
}

/// A stored file opened for reading.
#[derive(Debug)]
pub struct MediaFile {
    /// What the file is.
    pub info: MediaInfo,
    /// The open file, positioned at its start.
    pub file: tokio::fs::File,
}

/// Whether a media ID is of the form the spec allows: letters, digits, `-` and `_`.
pub fn valid_media_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_MEDIA_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The content type as stored: a valid header value of sane length, or none.
fn clean_content_type(content_type: Option<String>) -> Option<String> {
    let content_type = content_type?.trim().to_owned();
    let printable = content_type.bytes().all(|b| (0x20..0x7f).contains(&b));
    (printable && !content_type.is_empty() && content_type.len() <= MAX_CONTENT_TYPE_LEN)
        .then_some(content_type)
}

/// The file name as stored: no control characters, no path, bounded length.
fn clean_filename(filename: Option<String>) -> Option<String> {
    let filename = filename?;
    let base = filename.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = base
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_FILENAME_CHARS)
        .collect();
    (!cleaned.trim().is_empty()).then_some(cleaned)
}

/// The media repository of one node.
#[derive(Clone)]
pub struct Media {
    storage: Storage,
    config: Arc<ServerConfig>,
    /// Federation, for media of other servers.
    remote: RemoteHook,
    /// Bounds the thumbnail decodes running at once.
    decoders: Arc<tokio::sync::Semaphore>,
    /// Woken when a reserved ID gets its content, for downloads waiting on it.
    uploaded: Arc<tokio::sync::Notify>,
}

impl Media {
    /// The repository over `storage`, keeping files in `config.media_dir` and fetching other
    /// servers' media through `remote` once federation is installed there.
    pub fn new(storage: Storage, config: Arc<ServerConfig>, remote: RemoteHook) -> Self {
        Self {
            storage,
            config,
            remote,
            decoders: thumbnail::decoders(),
            uploaded: Arc::default(),
        }
    }

    /// The largest file accepted, in bytes.
    pub fn max_upload_bytes(&self) -> u64 {
        self.config.max_upload_bytes
    }

    fn dir(&self) -> Result<&Path> {
        self.config
            .media_dir
            .as_deref()
            .ok_or_else(|| Error::NotEnabled("this node keeps no media".into()))
    }

    /// Creates the media directory and removes files left in `tmp/` by an interrupted write.
    pub async fn prepare(&self) -> Result<()> {
        let Ok(dir) = self.dir() else { return Ok(()) };
        let tmp = dir.join("tmp");
        match tokio::fs::remove_dir_all(&tmp).await {
            Ok(()) => debug!("removed unfinished media files"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&tmp, e)),
        }
        tokio::fs::create_dir_all(&tmp)
            .await
            .map_err(|e| io_error(&tmp, e))
    }

    /// Where the file of `(origin, media_id)` lives: a hash, so that no ID names a path.
    fn content_path(&self, origin: &ServerName, media_id: &str) -> Result<PathBuf> {
        self.hashed_path("content", &format!("{}\n{media_id}", origin.as_str()))
    }

    /// `<dir>/<kind>/<2 hex>/<62 hex>` for the SHA-256 of `key`: no key names a path, and no
    /// directory grows past 256 entries at the first level.
    fn hashed_path(&self, kind: &str, key: &str) -> Result<PathBuf> {
        let hash = hex::encode(Sha256::digest(key.as_bytes()));
        let (shard, rest) = hash.split_at(2);
        Ok(self.dir()?.join(kind).join(shard).join(rest))
    }

    /// Starts writing a new file, at most [`Media::max_upload_bytes`] long.
    pub async fn begin_upload(&self) -> Result<Upload> {
        let tmp = self.dir()?.join("tmp");
        tokio::fs::create_dir_all(&tmp)
            .await
            .map_err(|e| io_error(&tmp, e))?;
        let path = tmp.join(random_id());
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|e| io_error(&path, e))?;
        Ok(Upload {
            media: self.clone(),
            file: Some(file),
            temp: path,
            written: 0,
            placed: false,
        })
    }

    /// Stores bytes already in memory under a new ID of this server (`media_id: None`) or
    /// under the given ID of `origin` (a copy of another server's file). Storing a copy that
    /// is already here keeps the first.
    pub async fn store(
        &self,
        origin: &ServerName,
        media_id: Option<&str>,
        bytes: &[u8],
        meta: NewMedia,
        uploader: Option<&UserId>,
    ) -> Result<MediaInfo> {
        let mut upload = self.begin_upload().await?;
        upload.write(bytes).await?;
        upload.finish_as(origin, media_id, meta, uploader).await
    }

    /// Reserves a new media ID of this server for `uploader`, whose content comes later
    /// through [`Upload::finish_reserved`]. Returns the ID and when the reservation lapses.
    pub async fn reserve(&self, uploader: &UserId) -> Result<(String, i64)> {
        self.dir()?;
        let now = now_ms();
        let origin = self.config.server_name.as_str();
        // Reservations that lapsed are dropped, so that their IDs stop counting.
        sqlx::query("DELETE FROM media WHERE origin = $1 AND size IS NULL AND created_ms < $2")
            .bind(origin)
            .bind(now - RESERVATION_TTL_MS)
            .execute(self.storage.pool())
            .await?;
        let (pending,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM media WHERE origin = $1 AND uploader = $2 AND size IS NULL",
        )
        .bind(origin)
        .bind(uploader.as_str())
        .fetch_one(self.storage.pool())
        .await?;
        if pending >= MAX_PENDING_PER_USER {
            return Err(Error::LimitExceeded(
                "too many media IDs waiting for their content".into(),
            ));
        }
        let media_id = random_id();
        sqlx::query(
            "INSERT INTO media (origin, media_id, content_type, filename, size, uploader, \
             created_ms) VALUES ($1, $2, NULL, NULL, NULL, $3, $4)",
        )
        .bind(origin)
        .bind(media_id.as_str())
        .bind(uploader.as_str())
        .bind(now)
        .execute(self.storage.pool())
        .await?;
        Ok((media_id, now + RESERVATION_TTL_MS))
    }

    /// The description of a stored file; `Ok(None)` when there is none (yet).
    pub async fn info(&self, origin: &ServerName, media_id: &str) -> Result<Option<MediaInfo>> {
        if !valid_media_id(media_id) {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT content_type, filename, size, uploader, created_ms FROM media \
             WHERE origin = $1 AND media_id = $2 AND size IS NOT NULL",
        )
        .bind(origin.as_str())
        .bind(media_id)
        .fetch_optional(self.storage.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let size: i64 = row.try_get(2)?;
        Ok(Some(MediaInfo {
            origin: origin.to_owned(),
            media_id: media_id.to_owned(),
            content_type: row.try_get(0)?,
            filename: row.try_get(1)?,
            size: u64::try_from(size).map_err(|_| Error::Corrupt("negative media size".into()))?,
            uploader: row.try_get(3)?,
            created_ms: row.try_get(4)?,
        }))
    }

    /// The description of a file of any server, fetching a copy from its origin over
    /// federation when this node has none yet (and `fetch` allows it); `Ok(None)` when there
    /// is no such file here and none could be fetched.
    pub async fn locate(
        &self,
        origin: &ServerName,
        media_id: &str,
        fetch: bool,
    ) -> Result<Option<MediaInfo>> {
        if !valid_media_id(media_id) {
            return Ok(None);
        }
        if let Some(info) = self.info(origin, media_id).await? {
            return Ok(Some(info));
        }
        if origin == self.config.server_name || !fetch {
            return Ok(None);
        }
        let Some(remote) = self.remote.get() else {
            return Ok(None);
        };
        let fetched = match remote
            .download_media(origin, media_id, self.max_upload_bytes())
            .await
        {
            Ok(fetched) => fetched,
            Err(Error::NotFound(reason)) => {
                debug!(%origin, media_id, %reason, "remote media not found");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let info = self
            .store(origin, Some(media_id), &fetched.bytes, fetched.meta, None)
            .await?;
        debug!(%origin, media_id, size = info.size, "cached remote media");
        Ok(Some(info))
    }

    /// Whether `(origin, media_id)` is reserved and still waits for its content.
    pub async fn is_pending(&self, origin: &ServerName, media_id: &str) -> Result<bool> {
        let row: Option<(i64,)> = sqlx::query_as(
            "SELECT created_ms FROM media WHERE origin = $1 AND media_id = $2 AND size IS NULL",
        )
        .bind(origin.as_str())
        .bind(media_id)
        .fetch_optional(self.storage.pool())
        .await?;
        Ok(row.is_some_and(|(created,)| created + RESERVATION_TTL_MS > now_ms()))
    }

    /// Waits up to `timeout` while `(origin, media_id)` is reserved without content; whether
    /// it stopped waiting (content arrived, or the reservation lapsed) before the timeout.
    pub async fn wait_for_upload(
        &self,
        origin: &ServerName,
        media_id: &str,
        timeout: std::time::Duration,
    ) -> Result<bool> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before the check, so an upload finishing in between is not missed.
            let notified = self.uploaded.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.is_pending(origin, media_id).await? {
                return Ok(true);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(false);
            }
        }
    }

    /// Opens a stored file for reading; `Ok(None)` when there is none.
    pub async fn open(&self, origin: &ServerName, media_id: &str) -> Result<Option<MediaFile>> {
        let Some(info) = self.info(origin, media_id).await? else {
            return Ok(None);
        };
        let path = self.content_path(origin, media_id)?;
        match tokio::fs::File::open(&path).await {
            Ok(file) => Ok(Some(MediaFile { info, file })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                warn!(%origin, media_id, "media row without its file");
                Ok(None)
            }
            Err(e) => Err(io_error(&path, e)),
        }
    }

    /// Reads a whole stored file; `Ok(None)` when there is none.
    pub async fn read(
        &self,
        origin: &ServerName,
        media_id: &str,
    ) -> Result<Option<(MediaInfo, Vec<u8>)>> {
        let Some(info) = self.info(origin, media_id).await? else {
            return Ok(None);
        };
        let path = self.content_path(origin, media_id)?;
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(Some((info, bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                warn!(%origin, media_id, "media row without its file");
                Ok(None)
            }
            Err(e) => Err(io_error(&path, e)),
        }
    }
}

/// A file being written. Dropping it before it is finished removes what was written.
pub struct Upload {
    media: Media,
    file: Option<tokio::fs::File>,
    temp: PathBuf,
    written: u64,
    placed: bool,
}

impl Upload {
    /// Appends a chunk; past the size limit the upload fails with [`Error::TooLarge`].
    pub async fn write(&mut self, chunk: &[u8]) -> Result<()> {
        let len = u64::try_from(chunk.len()).unwrap_or(u64::MAX);
        let limit = self.media.max_upload_bytes();
        if self.written.saturating_add(len) > limit {
            return Err(Error::TooLarge(format!(
                "media files are limited to {limit} bytes"
            )));
        }
        let Some(file) = self.file.as_mut() else {
            return Err(Error::Internal(
                "write after the upload was finished".into(),
            ));
        };
        file.write_all(chunk)
            .await
            .map_err(|e| io_error(&self.temp, e))?;
        self.written += len;
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Flushes the file to disk and closes it, so that a rename publishes whole content.
    async fn seal(&mut self) -> Result<()> {
        let Some(mut file) = self.file.take() else {
            return Err(Error::Internal("upload finished twice".into()));
        };
        file.flush().await.map_err(|e| io_error(&self.temp, e))?;
        file.sync_all().await.map_err(|e| io_error(&self.temp, e))?;
        Ok(())
    }

    async fn place(&mut self, origin: &ServerName, media_id: &str) -> Result<PathBuf> {
        let path = self.media.content_path(origin, media_id)?;
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| io_error(parent, e))?;
        }
        tokio::fs::rename(&self.temp, &path)
            .await
            .map_err(|e| io_error(&path, e))?;
        self.placed = true;
        Ok(path)
    }

    /// Stores the file under a new media ID of this server, uploaded by `uploader`.
    pub async fn finish(self, meta: NewMedia, uploader: &UserId) -> Result<MediaInfo> {
        let origin = self.media.config.server_name.clone();
        self.finish_as(&origin, None, meta, Some(uploader)).await
    }

    async fn finish_as(
        mut self,
        origin: &ServerName,
        media_id: Option<&str>,
        meta: NewMedia,
        uploader: Option<&UserId>,
    ) -> Result<MediaInfo> {
        let media_id = match media_id {
            Some(id) if valid_media_id(id) => id.to_owned(),
            Some(id) => return Err(Error::InvalidParam(format!("invalid media ID {id:?}"))),
            None => random_id(),
        };
        if let Some(info) = self.media.info(origin, &media_id).await? {
            // A copy fetched twice at once: the first stays, this one is dropped.
            return Ok(info);
        }
        self.seal().await?;
        let path = self.place(origin, &media_id).await?;
        let info = MediaInfo {
            origin: origin.to_owned(),
            media_id,
            content_type: clean_content_type(meta.content_type),
            filename: clean_filename(meta.filename),
            size: self.written,
            uploader: uploader.map(|u| u.to_string()),
            created_ms: now_ms(),
        };
        let inserted = sqlx::query(
            "INSERT INTO media (origin, media_id, content_type, filename, size, uploader, \
             created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(info.origin.as_str())
        .bind(info.media_id.as_str())
        .bind(info.content_type.as_deref())
        .bind(info.filename.as_deref())
        .bind(i64::try_from(info.size).unwrap_or(i64::MAX))
        .bind(info.uploader.as_deref())
        .bind(info.created_ms)
        .execute(self.media.storage.pool())
        .await;
        match inserted {
            Ok(done) if done.rows_affected() == 1 => Ok(info),
            // Another copy won the race; its bytes are the same file of the same origin.
            Ok(_) => self
                .media
                .info(origin, &info.media_id)
                .await?
                .ok_or_else(|| Error::Internal("stored media vanished".into())),
            Err(e) => {
                let _ = tokio::fs::remove_file(&path).await;
                Err(e.into())
            }
        }
    }

    /// Gives an ID reserved by [`Media::reserve`] its content. Only the user who reserved it
    /// may, and only once (`Forbidden` otherwise; `NotFound` for an unknown or lapsed ID).
    pub async fn finish_reserved(
        mut self,
        media_id: &str,
        meta: NewMedia,
        uploader: &UserId,
    ) -> Result<MediaInfo> {
        let origin = self.media.config.server_name.clone();
        if !valid_media_id(media_id) {
            return Err(Error::NotFound("unknown media ID".into()));
        }
        let row: Option<(Option<String>, Option<i64>, i64)> = sqlx::query_as(
            "SELECT uploader, size, created_ms FROM media WHERE origin = $1 AND media_id = $2",
        )
        .bind(origin.as_str())
        .bind(media_id)
        .fetch_optional(self.media.storage.pool())
        .await?;
        match row {
            None => return Err(Error::NotFound("unknown media ID".into())),
            Some((owner, _, _)) if owner.as_deref() != Some(uploader.as_str()) => {
                return Err(Error::Forbidden(
                    "this media ID was reserved by another user".into(),
                ));
            }
            Some((_, Some(_), _)) => return Err(Error::CannotOverwriteMedia),
            Some((_, None, created)) if created + RESERVATION_TTL_MS <= now_ms() => {
                return Err(Error::NotFound(
                    "the reservation of this media ID lapsed".into(),
                ));
            }
            Some(_) => {}
        }
        self.seal().await?;
        let content_type = clean_content_type(meta.content_type);
        let filename = clean_filename(meta.filename);
        let size = self.written;
        // The row is claimed in a transaction that commits only once the file is in place: a
        // second upload for the same ID finds the row claimed and never replaces the file.
        let mut txn = self.media.storage.pool().begin().await?;
        let claimed = sqlx::query(
            "UPDATE media SET content_type = $1, filename = $2, size = $3 \
             WHERE origin = $4 AND media_id = $5 AND size IS NULL",
        )
        .bind(content_type.as_deref())
        .bind(filename.as_deref())
        .bind(i64::try_from(size).unwrap_or(i64::MAX))
        .bind(origin.as_str())
        .bind(media_id)
        .execute(&mut *txn)
        .await?;
        if claimed.rows_affected() != 1 {
            return Err(Error::CannotOverwriteMedia);
        }
        let path = self.place(&origin, media_id).await?;
        if let Err(e) = txn.commit().await {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(e.into());
        }
        self.media.uploaded.notify_waiters();
        Ok(MediaInfo {
            origin,
            media_id: media_id.to_owned(),
            content_type,
            filename,
            size,
            uploader: Some(uploader.to_string()),
            created_ms: now_ms(),
        })
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.placed {
            // Blocking, but a single unlink; it keeps `tmp/` from growing on failed uploads.
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// A new random media ID (or temporary file name).
fn random_id() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(MEDIA_ID_LEN)
        .map(char::from)
        .collect()
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::Internal(format!("media file {}: {e}", path.display()))
}
