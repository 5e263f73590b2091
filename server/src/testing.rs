//! Databases for tests: a fresh SQLite file or a fresh PostgreSQL database per test.
//!
//! PostgreSQL is reached at `GROVE_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); each [`TestDb`] creates its own database
//! there and drops it when the value is dropped.
//!
//! Compiled only with the `testing` feature, which dev-dependencies enable: a node built for
//! use carries none of this.

use rand::RngCore;
use sqlx::{Connection, Executor, PgConnection};

use crate::storage::Backend;

/// The PostgreSQL server used by tests.
pub fn postgres_admin_url() -> String {
    std::env::var("GROVE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A throw-away database; its URL is valid until it is dropped.
pub struct TestDb {
    /// The URL to hand to [`crate::Storage::connect`] or to a node's config.
    pub url: String,
    backend: Backend,
    pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// Creates an empty database on `backend`.
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::Builder::new()
                    .prefix("grove-test-")
                    .tempdir()
                    .unwrap_or_else(|e| panic!("creating a test directory: {e}"));
                let url = format!("sqlite://{}", dir.path().join("grove.db").display());
                Self {
                    url,
                    backend,
                    pg_name: None,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let name = format!("grove_test_{:016x}", rand::rngs::OsRng.next_u64());
                let admin = postgres_admin_url();
                let mut conn = PgConnection::connect(&admin)
                    .await
                    .unwrap_or_else(|e| panic!("test postgres at {admin}: {e}"));
                conn.execute(format!("CREATE DATABASE {name}").as_str())
                    .await
                    .unwrap_or_else(|e| panic!("creating test database: {e}"));
                let _ = conn.close().await;
                let base = admin
                    .rsplit_once('/')
                    .map_or(admin.as_str(), |(base, _)| base);
                let url = format!("{base}/{name}");
                Self {
                    url,
                    backend,
                    pg_name: Some(name),
                    _dir: None,
                }
            }
        }
    }

    /// The engine behind this database.
    pub fn backend(&self) -> Backend {
        self.backend
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Dropped from sync and async contexts alike: use a thread with its own runtime.
        let admin = postgres_admin_url();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = PgConnection::connect(&admin).await {
                    let _ = conn
                        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                        .await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

/// A real PNG image of the given size, for media tests.
pub fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbaImage::from_fn(width, height, |x, y| {
        image::Rgba([(x * 7) as u8, (y * 13) as u8, 90, 255])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut out, image::ImageFormat::Png)
        .expect("encode png");
    out.into_inner()
}

/// The width and height of an encoded image, for media tests.
pub fn dimensions(bytes: &[u8]) -> (u32, u32) {
    let image = image::load_from_memory(bytes).expect("a decodable image");
    (image.width(), image.height())
}
