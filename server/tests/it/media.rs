//! Tests of the media repository: files on disk, rows in both databases, thumbnails.

use grove_server::{
    Error, Homeserver, NodeKey, ServerConfig,
    media::{Method, NewMedia, ThumbnailRequest},
    storage::Backend,
    testing::{TestDb, dimensions, png},
};
use ruma::{server_name, user_id};

const BACKENDS: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];

async fn open(db: &TestDb, dir: &std::path::Path, key: NodeKey, max: u64) -> Homeserver {
    let mut config = ServerConfig::new(key.server_name(), db.url.clone());
    config.media_dir = Some(dir.to_owned());
    config.max_upload_bytes = max;
    Homeserver::open(config, key).await.expect("open")
}

fn tmp_is_empty(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir.join("tmp")).map_or(true, |mut d| d.next().is_none())
}

#[tokio::test]
async fn upload_read_and_reopen() {
    for backend in BACKENDS {
        let db = TestDb::new(backend).await;
        let dir = tempfile::tempdir().expect("dir");
        let key = NodeKey::generate().expect("key");
        let seed = key.seed();
        let hs = open(&db, dir.path(), key, 1024).await;
        let alice = user_id!("@alice:example.org");
        let ours = hs.config.server_name.clone();

        let mut upload = hs.media.begin_upload().await.expect("begin");
        upload.write(b"hello ").await.expect("write");
        upload.write(b"media").await.expect("write");
        let info = upload
            .finish(
                NewMedia {
                    content_type: Some("text/plain".into()),
                    filename: Some("../../etc/notes\n.txt".into()),
                },
                alice,
            )
            .await
            .expect("finish");
        assert!(info.media_id.len() >= 24, "{}", info.media_id);
        assert!(grove_server::media::valid_media_id(&info.media_id));
        assert_eq!(info.size, 11);
        assert_eq!(info.filename.as_deref(), Some("notes.txt"));
        assert!(tmp_is_empty(dir.path()), "the temporary file was moved");

        let (read, bytes) = hs
            .media
            .read(&ours, &info.media_id)
            .await
            .expect("read")
            .expect("stored");
        assert_eq!(bytes, b"hello media");
        assert_eq!(read.content_type.as_deref(), Some("text/plain"));
        assert_eq!(read.uploader.as_deref(), Some(alice.as_str()));

        assert!(hs.media.read(&ours, "nope").await.expect("read").is_none());
        assert!(hs.media.read(&ours, "../x").await.expect("read").is_none());
        let other = server_name!("other.example");
        assert!(
            hs.media
                .read(other, &info.media_id)
                .await
                .expect("read")
                .is_none(),
            "an ID is looked up with its origin"
        );

        hs.close().await;
        let hs = open(
            &db,
            dir.path(),
            NodeKey::from_seed(seed).expect("key"),
            1024,
        )
        .await;
        let (_, bytes) = hs
            .media
            .read(&ours, &info.media_id)
            .await
            .expect("read")
            .expect("kept across a restart");
        assert_eq!(bytes, b"hello media");
        hs.close().await;
    }
}

#[tokio::test]
async fn too_large_uploads_leave_nothing() {
    for backend in BACKENDS {
        let db = TestDb::new(backend).await;
        let dir = tempfile::tempdir().expect("dir");
        let hs = open(&db, dir.path(), NodeKey::generate().expect("key"), 10).await;
        let mut upload = hs.media.begin_upload().await.expect("begin");
        upload.write(b"0123456789").await.expect("at the limit");
        let err = upload.write(b"!").await.expect_err("over the limit");
        assert!(matches!(err, Error::TooLarge(_)), "{err:?}");
        drop(upload);
        assert!(tmp_is_empty(dir.path()));
        let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM media")
            .fetch_one(hs.storage.pool())
            .await
            .expect("count");
        assert_eq!(count, 0);
        hs.close().await;
    }
}

#[tokio::test]
async fn media_is_refused_without_a_directory() {
    let db = TestDb::new(Backend::Sqlite).await;
    let key = NodeKey::generate().expect("key");
    let config = ServerConfig::new(key.server_name(), db.url.clone());
    let hs = Homeserver::open(config, key).await.expect("open");
    assert!(matches!(
        hs.media.begin_upload().await,
        Err(Error::NotEnabled(_))
    ));
    hs.close().await;
}

#[tokio::test]
async fn copies_of_remote_media_keep_their_id() {
    for backend in BACKENDS {
        let db = TestDb::new(backend).await;
        let dir = tempfile::tempdir().expect("dir");
        let hs = open(&db, dir.path(), NodeKey::generate().expect("key"), 1024).await;
        let origin = server_name!("remote.example");
        let meta = NewMedia {
            content_type: Some("application/pdf\r\nX-Evil: 1".into()),
            filename: None,
        };
        let info = hs
            .media
            .store(origin, Some("AbC_d-1"), b"first", meta.clone(), None)
            .await
            .expect("store");
        assert_eq!(info.media_id, "AbC_d-1");
        assert_eq!(info.content_type, None, "a header-breaking type is dropped");
        let again = hs
            .media
            .store(origin, Some("AbC_d-1"), b"second", meta.clone(), None)
            .await
            .expect("store again");
        assert_eq!(again.size, 5, "the first copy stays");
        let (_, bytes) = hs
            .media
            .read(origin, "AbC_d-1")
            .await
            .expect("read")
            .expect("stored");
        assert_eq!(bytes, b"first");
        assert!(matches!(
            hs.media.store(origin, Some("a/b"), b"x", meta, None).await,
            Err(Error::InvalidParam(_))
        ));
        hs.close().await;
    }
}

#[tokio::test]
async fn reserved_ids_take_content_once() {
    for backend in BACKENDS {
        let db = TestDb::new(backend).await;
        let dir = tempfile::tempdir().expect("dir");
        let hs = open(&db, dir.path(), NodeKey::generate().expect("key"), 1024).await;
        let ours = hs.config.server_name.clone();
        let alice = user_id!("@alice:example.org");
        let bob = user_id!("@bob:example.org");
        let (id, expires) = hs.media.reserve(alice).await.expect("reserve");
        assert!(expires > 0);
        assert!(hs.media.is_pending(&ours, &id).await.expect("pending"));
        assert!(hs.media.read(&ours, &id).await.expect("read").is_none());

        let mut upload = hs.media.begin_upload().await.expect("begin");
        upload.write(b"late").await.expect("write");
        assert!(matches!(
            upload.finish_reserved(&id, NewMedia::default(), bob).await,
            Err(Error::Forbidden(_))
        ));

        let mut upload = hs.media.begin_upload().await.expect("begin");
        upload.write(b"late").await.expect("write");
        upload
            .finish_reserved(&id, NewMedia::default(), alice)
            .await
            .expect("content");
        assert!(!hs.media.is_pending(&ours, &id).await.expect("pending"));

        let mut upload = hs.media.begin_upload().await.expect("begin");
        upload.write(b"again").await.expect("write");
        assert!(matches!(
            upload
                .finish_reserved(&id, NewMedia::default(), alice)
                .await,
            Err(Error::CannotOverwriteMedia)
        ));
        let (_, bytes) = hs
            .media
            .read(&ours, &id)
            .await
            .expect("read")
            .expect("stored");
        assert_eq!(bytes, b"late");
        assert!(tmp_is_empty(dir.path()));
        hs.close().await;
    }
}

#[tokio::test]
async fn thumbnails_fit_the_box_and_are_kept() {
    for backend in BACKENDS {
        let db = TestDb::new(backend).await;
        let dir = tempfile::tempdir().expect("dir");
        let hs = open(&db, dir.path(), NodeKey::generate().expect("key"), 1 << 20).await;
        let ours = hs.config.server_name.clone();
        let alice = user_id!("@alice:example.org");
        let original = png(64, 32);
        let id = hs
            .media
            .store(
                &ours,
                None,
                &original,
                NewMedia {
                    content_type: Some("image/png".into()),
                    filename: None,
                },
                Some(alice),
            )
            .await
            .expect("store")
            .media_id;

        let scale = ThumbnailRequest {
            width: 16,
            height: 16,
            method: Method::Scale,
        };
        let thumb = hs
            .media
            .thumbnail(&ours, &id, scale)
            .await
            .expect("thumbnail")
            .expect("stored");
        assert_eq!(thumb.content_type, "image/png");
        assert_eq!(dimensions(&thumb.bytes), (16, 8), "aspect ratio kept");

        let crop = ThumbnailRequest {
            width: 20,
            height: 20,
            method: Method::Crop,
        };
        let thumb = hs
            .media
            .thumbnail(&ours, &id, crop)
            .await
            .expect("thumbnail")
            .expect("stored");
        assert_eq!(dimensions(&thumb.bytes), (20, 20), "the box filled");

        let (kept,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM media_thumbnails")
            .fetch_one(hs.storage.pool())
            .await
            .expect("count");
        assert_eq!(kept, 2);
        let again = hs
            .media
            .thumbnail(&ours, &id, crop)
            .await
            .expect("thumbnail")
            .expect("stored");
        assert_eq!(again.bytes, thumb.bytes, "served from the kept copy");
        // A wiped thumbnail directory: the thumbnails are made again, their rows replaced.
        std::fs::remove_dir_all(dir.path().join("thumbnails")).expect("wipe thumbnails");
        let remade = hs
            .media
            .thumbnail(&ours, &id, crop)
            .await
            .expect("thumbnail")
            .expect("stored");
        assert_eq!(dimensions(&remade.bytes), (20, 20));
        let (kept,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM media_thumbnails")
            .fetch_one(hs.storage.pool())
            .await
            .expect("count");
        assert_eq!(kept, 2, "one row per thumbnail still");
        assert!(
            dir.path().join("thumbnails").is_dir(),
            "the remade thumbnail is kept again"
        );

        let big = ThumbnailRequest {
            width: 640,
            height: 480,
            method: Method::Scale,
        };
        let same = hs
            .media
            .thumbnail(&ours, &id, big)
            .await
            .expect("thumbnail")
            .expect("stored");
        assert_eq!(same.bytes, original, "a small image is served as it is");

        assert!(matches!(
            hs.media
                .thumbnail(
                    &ours,
                    &id,
                    ThumbnailRequest {
                        width: 0,
                        height: 5,
                        method: Method::Crop
                    }
                )
                .await,
            Err(Error::InvalidParam(_))
        ));
        let text = hs
            .media
            .store(
                &ours,
                None,
                b"not an image",
                NewMedia::default(),
                Some(alice),
            )
            .await
            .expect("store")
            .media_id;
        assert!(matches!(
            hs.media.thumbnail(&ours, &text, scale).await,
            Err(Error::NotFound(_))
        ));
        assert!(
            hs.media
                .thumbnail(&ours, "missing", scale)
                .await
                .expect("thumbnail")
                .is_none()
        );
        hs.close().await;
    }
}
