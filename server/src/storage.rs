//! The database: a sqlx pool over SQLite (embedded default) or PostgreSQL.
//!
//! Queries are written once, with `$1`-style placeholders that both backends accept, through
//! sqlx's `Any` driver; each backend has its own migrations under `migrations/<backend>/`, kept
//! equivalent. Types crossing the boundary are limited to what both backends store alike:
//! `i64`, `bool`, `String` and `Vec<u8>` (JSON is stored as `TEXT`).
//!
//! Writes that allocate stream positions go through [`Storage::write`], which serialises them
//! behind one lock, so positions become visible to readers in the order they were allocated, and
//! advances the [`Notifier`] only after the transaction has committed.

use std::{
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use sqlx::{
    Any, AnyConnection, AnyPool, Executor,
    any::AnyPoolOptions,
    pool::PoolConnection,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous},
};
use tokio::sync::{Mutex, MutexGuard};
use tracing::{debug, warn};

use crate::{
    error::{Error, Result},
    notifier::{Notifier, StreamPosition},
};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// While writes go on, how often the SQLite write-ahead log is copied back into the database
/// (a passive checkpoint, beside the writers rather than inside one of their commits).
const WAL_CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);
/// After this long without a write, the log is checkpointed in full and truncated.
const WAL_TRUNCATE_WHEN_IDLE: Duration = Duration::from_secs(10);
/// Frames (pages) the log may hold before it is reset under the writer lock. A log whose
/// readers never all leave at once is never reset by passive checkpoints alone: SQLite only
/// starts it over when a write begins with no reader left on it.
const WAL_RESET_FRAMES: i64 = 2048;
/// How long a reset waits for readers still on the log, at most, while writers wait for it.
const WAL_RESET_BUSY_TIMEOUT_MS: u32 = 200;
/// The SQLite busy timeout of every connection (ms).
const BUSY_TIMEOUT_MS: u32 = 10_000;
/// What a log is cut back to when SQLite starts it over (bytes).
const WAL_SIZE_LIMIT: u32 = 8 << 20;
/// Longest sleep of the checkpointer, so it notices a closed database.
const CHECKPOINTER_MAX_SLEEP: Duration = Duration::from_secs(60);
/// Connections in the pool; SQLite writes are serialised anyway, reads run in parallel.
const MAX_CONNECTIONS: u32 = 8;

/// Which database engine is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An SQLite file in WAL mode.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// A handle to the database, cheap to clone.
#[derive(Clone)]
pub struct Storage {
    inner: Arc<Inner>,
}

struct Inner {
    pool: AnyPool,
    backend: Backend,
    /// Guards every write that allocates stream positions; holds the last allocated position
    /// and the writers' own connection.
    writer: Mutex<WriterSlot>,
    notifier: Notifier,
    /// Per kind of [`Change`], the last position at which one may have been committed.
    marks: [AtomicI64; CHANGE_KINDS],
}

/// What the writer lock guards.
struct WriterSlot {
    /// The last allocated stream position.
    position: i64,
    /// The connection writes go through, kept between them: one connection's page cache stays
    /// warm across writes, where a connection that another one wrote behind must re-read the
    /// pages that changed. Taken from the pool on first use and after a failed write.
    conn: Option<PoolConnection<Any>>,
}

/// Kinds of change that a sync can skip reading when none was committed since its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Global or room account data (tags, push rules, direct rooms, ...).
    AccountData = 0,
    /// Receipts and typing.
    Ephemeral = 1,
    /// Presence.
    Presence = 2,
    /// To-device messages.
    ToDevice = 3,
    /// Anything a device list answer depends on: devices, keys, memberships, room state.
    DeviceLists = 4,
    /// Memberships: who is in which room (every state event counts, as every write that does
    /// not say what it changes).
    Memberships = 5,
}

const CHANGE_KINDS: usize = 6;
/// Every kind at once: what a write that does not say what it changes is taken to change.
const ALL_CHANGES: u8 = (1 << CHANGE_KINDS) - 1;

/// How long the first connection to PostgreSQL may take before the node gives up.
const POSTGRES_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Storage {
    /// Opens (creating if needed) the database at `url` and runs its migrations.
    ///
    /// `url` is `sqlite://<path>` or `postgres://...`.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let (pool, backend) = if url.starts_with("sqlite:") {
            // Parsed through the SQLite options so the pragmas are validated, then handed to
            // the Any driver as a URL with the same settings.
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS.into()))
                .pragma("journal_size_limit", WAL_SIZE_LIMIT.to_string());
            // Create the file and switch it to WAL once (the journal mode is stored in the
            // file); the Any pool's connections re-apply the per-connection pragmas.
            let conn = sqlx::ConnectOptions::connect(&options).await?;
            sqlx::Connection::close(conn).await?;
            let pool = AnyPoolOptions::new()
                .max_connections(MAX_CONNECTIONS)
                .min_connections(1)
                // A ping before every acquire doubles the round trips of a short query; a
                // local file does not drop connections, and a failed query surfaces anyway.
                .test_before_acquire(false)
                .after_connect(|conn, _meta| {
                    Box::pin(async move {
                        conn.execute(
                            format!(
                                "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
                                 PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}; \
                                 PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}; \
                                 PRAGMA wal_autocheckpoint = 0;"
                            )
                            .as_str(),
                        )
                        .await?;
                        Ok(())
                    })
                })
                .connect(url)
                .await?;
            (pool, Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            // One connection first, with a short deadline: a server that refuses or does not
            // answer is reported as such at once, not as a pool timeout half a minute later.
            let options = sqlx::postgres::PgConnectOptions::from_str(url)?;
            match tokio::time::timeout(
                POSTGRES_CONNECT_TIMEOUT,
                sqlx::ConnectOptions::connect(&options),
            )
            .await
            {
                Ok(conn) => sqlx::Connection::close(conn?).await?,
                Err(_) => {
                    return Err(Error::Database(sqlx::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "no answer from the PostgreSQL server within {} s",
                            POSTGRES_CONNECT_TIMEOUT.as_secs()
                        ),
                    ))));
                }
            }
            let pool = AnyPoolOptions::new()
                .max_connections(MAX_CONNECTIONS)
                // A broken connection fails its query and is replaced; pinging before every
                // acquire would cost a network round trip per query.
                .test_before_acquire(false)
                .connect(url)
                .await?;
            (pool, Backend::Postgres)
        } else {
            return Err(Error::InvalidParam(format!(
                "database url must start with sqlite:// or postgres://, got {url:?}"
            )));
        };
        match backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&pool).await?,
        }
        let position: (i64,) = sqlx::query_as("SELECT stream_position FROM meta WHERE id = 1")
            .fetch_one(&pool)
            .await?;
        let storage = Storage {
            inner: Arc::new(Inner {
                pool,
                backend,
                writer: Mutex::new(WriterSlot {
                    position: position.0,
                    conn: None,
                }),
                notifier: Notifier::new(StreamPosition(position.0)),
                // Nothing is known of what came before opening: any older token reads all.
                marks: std::array::from_fn(|_| AtomicI64::new(position.0)),
            }),
        };
        if backend == Backend::Sqlite {
            storage.spawn_checkpointer();
        }
        debug!(?backend, position = position.0, "storage opened");
        Ok(storage)
    }

    /// The connection pool, for reads.
    pub fn pool(&self) -> &AnyPool {
        &self.inner.pool
    }

    /// The engine behind the pool.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// The notifier advanced by every committed [`WriteTxn`].
    pub fn notifier(&self) -> Notifier {
        self.inner.notifier.clone()
    }

    /// Whether a change of `kind` may have been committed after `since`. False means a read
    /// of that kind over `(since, now]` would find nothing, and can be skipped.
    pub fn changed_since(&self, kind: Change, since: StreamPosition) -> bool {
        since.0 < self.inner.marks[kind as usize].load(Ordering::Acquire)
    }

    /// Starts a write transaction that may allocate stream positions.
    ///
    /// Only one runs at a time; hold it briefly and do no network IO inside it.
    pub async fn write(&self) -> Result<WriteTxn<'_>> {
        let mut txn = self.write_batched().await?;
        if let (Some(begin), Some(conn)) = (txn.pending_begin.take(), txn.conn.as_mut()) {
            conn.execute(begin).await?;
        }
        Ok(txn)
    }

    /// Starts a write transaction made of one [`Batch`] given to [`WriteTxn::commit_batch`]:
    /// the transaction begins in that batch, so the whole write is one round trip to the
    /// database. Its [`WriteTxn::conn`] must not be used.
    pub async fn write_batched(&self) -> Result<WriteTxn<'_>> {
        let mut guard = self.inner.writer.lock().await;
        let conn = match guard.conn.take() {
            Some(conn) => conn,
            None => self.inner.pool.acquire().await?,
        };
        // Take SQLite's write lock up front: a deferred transaction that read first fails at
        // once with SQLITE_BUSY_SNAPSHOT when another connection wrote in between, where an
        // immediate one waits out the busy timeout instead.
        let begin = match self.inner.backend {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        };
        let start = guard.position;
        Ok(WriteTxn {
            guard,
            conn: Some(conn),
            pending_begin: Some(begin),
            start,
            notifier: &self.inner.notifier,
            marks: &self.inner.marks,
            touched: 0,
        })
    }

    /// Waits for in-flight writes, truncates the SQLite log and closes the pool.
    pub async fn close(&self) {
        let mut guard = self.inner.writer.lock().await;
        // Back to the pool, which waits for every connection it lent before closing.
        guard.conn = None;
        if self.inner.backend == Backend::Sqlite
            && let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&self.inner.pool)
                .await
        {
            warn!(error = %e, "final wal checkpoint failed");
        }
        self.inner.pool.close().await;
    }

    /// Keeps the SQLite write-ahead log short without stalling writers: connections never
    /// checkpoint inside a commit (`wal_autocheckpoint = 0`); this task does it beside them, a
    /// passive checkpoint each interval while writes go on and a truncating one once they
    /// stop. A passive checkpoint copies pages back but cannot start the log over while syncs
    /// keep reading it, so once the log holds [`WAL_RESET_FRAMES`] the task resets it under
    /// the writer lock, waiting briefly for the readers on it. An idle node is woken once a
    /// minute at most.
    fn spawn_checkpointer(&self) {
        let weak = Arc::downgrade(&self.inner);
        let notifier = self.inner.notifier.clone();
        tokio::spawn(async move {
            let mut seen = notifier.current();
            let mut dirty = false;
            loop {
                let sleep = if dirty {
                    WAL_TRUNCATE_WHEN_IDLE
                } else {
                    CHECKPOINTER_MAX_SLEEP
                };
                let now = notifier.wait_beyond(seen, sleep).await;
                let Some(inner) = weak.upgrade() else { break };
                if inner.pool.is_closed() {
                    break;
                }
                if now > seen {
                    seen = now;
                    dirty = true;
                    drop(inner);
                    // Let a burst of writes gather so one checkpoint serves them all.
                    tokio::time::sleep(WAL_CHECKPOINT_INTERVAL).await;
                    let Some(inner) = weak.upgrade() else { break };
                    if inner.pool.is_closed() {
                        break;
                    }
                    let frames = checkpoint(&inner.pool, "PASSIVE").await;
                    if frames.is_some_and(|f| f >= WAL_RESET_FRAMES) {
                        reset_log(&inner).await;
                    }
                } else if dirty {
                    reset_log(&inner).await;
                    dirty = false;
                }
            }
        });
    }
}

/// Runs a checkpoint of `mode` on a pooled connection; returns the frames in the log.
async fn checkpoint(pool: &AnyPool, mode: &str) -> Option<i64> {
    match sqlx::query_as::<_, (i64, i64, i64)>(&format!("PRAGMA wal_checkpoint({mode})"))
        .fetch_one(pool)
        .await
    {
        Ok((_busy, frames, _copied)) => Some(frames),
        Err(e) => {
            warn!(error = %e, mode, "wal checkpoint failed");
            None
        }
    }
}

/// Checkpoints the whole log and truncates it, on the writers' connection and under their
/// lock, so no write lands in between; readers still on the log are waited for at most
/// [`WAL_RESET_BUSY_TIMEOUT_MS`], and the log is left for the next round if they stay.
async fn reset_log(inner: &Inner) {
    let mut guard = inner.writer.lock().await;
    let mut conn = match guard.conn.take() {
        Some(conn) => conn,
        None => match inner.pool.acquire().await {
            Ok(conn) => conn,
            Err(e) => {
                warn!(error = %e, "no connection to reset the wal");
                return;
            }
        },
    };
    let reset = async {
        conn.execute(format!("PRAGMA busy_timeout = {WAL_RESET_BUSY_TIMEOUT_MS}").as_str())
            .await?;
        let result = sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&mut *conn)
            .await;
        conn.execute(format!("PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}").as_str())
            .await?;
        result
    };
    match reset.await {
        Ok((busy, frames, _)) => debug!(busy, frames, "wal reset"),
        Err(e) => warn!(error = %e, "wal reset failed"),
    }
    guard.conn = Some(conn);
}

/// A write transaction holding the writer lock. Dropping it without [`WriteTxn::commit`] rolls
/// back and hands its positions out again.
///
/// The transaction is begun and committed by hand rather than through sqlx's `Transaction`, so
/// that the commit can travel in the same batch as the statements (one round trip to the
/// database thread instead of two). A transaction dropped while open takes its connection out
/// of the pool and closes it, which rolls it back.
pub struct WriteTxn<'a> {
    guard: MutexGuard<'a, WriterSlot>,
    /// The connection, with the transaction open on it; `None` once committed.
    conn: Option<PoolConnection<Any>>,
    /// The statement that begins the transaction, while it has not been sent.
    pending_begin: Option<&'static str>,
    start: i64,
    notifier: &'a Notifier,
    marks: &'a [AtomicI64; CHANGE_KINDS],
    /// The kinds of [`Change`] this transaction makes, as bits.
    touched: u8,
}

impl WriteTxn<'_> {
    /// The connection to run statements on.
    pub fn conn(&mut self) -> &mut AnyConnection {
        debug_assert!(
            self.pending_begin.is_none(),
            "a batched write's connection is used outside its batch"
        );
        // The connection is only taken by `commit_batch`, which consumes `self`.
        self.conn.as_mut().expect("connection present until commit")
    }

    /// Allocates the next stream position; positions are visible to sync once committed. The
    /// write counts as a change of every [`Change`] kind.
    pub fn next_position(&mut self) -> StreamPosition {
        self.touched = ALL_CHANGES;
        self.guard.position += 1;
        StreamPosition(self.guard.position)
    }

    /// Allocates the next stream position for a write that changes only `changes` (besides
    /// what no [`Change`] kind covers, such as a room's timeline).
    pub fn next_position_for(&mut self, changes: &[Change]) -> StreamPosition {
        for change in changes {
            self.touched |= 1 << *change as u8;
        }
        self.guard.position += 1;
        StreamPosition(self.guard.position)
    }

    /// Commits, persists the stream position and wakes waiting syncs.
    pub async fn commit(self) -> Result<StreamPosition> {
        self.commit_batch(Batch::default()).await
    }

    /// Runs `batch` with the stream position's update and the commit, then wakes waiting
    /// syncs.
    pub async fn commit_batch(mut self, mut batch: Batch) -> Result<StreamPosition> {
        let position = self.guard.position;
        if let Some(begin) = self.pending_begin.take() {
            batch.statements.insert(0, (begin, Vec::new()));
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(Error::Internal("write transaction committed twice".into()));
        };
        if position != self.start {
            batch.push(
                "UPDATE meta SET stream_position = $1 WHERE id = 1",
                vec![position.into()],
            );
        }
        batch.push("COMMIT", Vec::new());
        batch.run(conn).await?;
        // Committed: the connection is clean for the next write, and the positions are
        // durable, so a drop must not hand them out again.
        self.guard.conn = self.conn.take();
        self.start = position;
        // Marked before waking syncs, so a woken sync never skips what this write made.
        for (kind, mark) in self.marks.iter().enumerate() {
            if self.touched & (1 << kind) != 0 {
                mark.fetch_max(position, Ordering::AcqRel);
            }
        }
        if position != self.notifier.current().0 {
            self.notifier.advance(StreamPosition(position));
        }
        Ok(StreamPosition(position))
    }
}

impl Drop for WriteTxn<'_> {
    fn drop(&mut self) {
        self.guard.position = self.start;
        if self.pending_begin.is_some() {
            // Never begun: the connection is as it came, ready for the next write.
            self.guard.conn = self.conn.take();
            return;
        }
        if let Some(conn) = self.conn.take() {
            // Still open: closing the connection rolls the transaction back, and it never
            // returns to the pool with a transaction half done.
            drop(conn.detach());
        }
    }
}

/// A value bound to a statement of a [`Batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    /// An integer, or NULL.
    Int(Option<i64>),
    /// A text, or NULL.
    Text(Option<String>),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}

impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}

impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(Some(v.to_owned()))
    }
}

impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(Some(v))
    }
}

impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Self {
        Arg::Text(v.map(str::to_owned))
    }
}

/// Bound values per SQLite round trip, at most: well inside SQLite's limit on variables.
const MAX_BATCH_ARGS: usize = 10_000;

/// Statements that belong to one write, run together.
///
/// Each statement numbers its placeholders from `$1`. On SQLite the statements are joined into
/// one multi-statement query (placeholders renumbered), so the whole batch is one hand-off to
/// the database thread instead of one per statement; on PostgreSQL they run one after another.
#[derive(Debug, Default)]
pub struct Batch {
    statements: Vec<(&'static str, Vec<Arg>)>,
}

impl Batch {
    /// Adds a statement with its values.
    pub fn push(&mut self, sql: &'static str, args: Vec<Arg>) {
        self.statements.push((sql, args));
    }

    /// Whether the batch holds no statement.
    pub fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }

    /// Runs every statement on `conn`, in order.
    pub async fn run(self, conn: &mut AnyConnection) -> Result<()> {
        if conn.backend_name() != "SQLite" {
            for (sql, args) in self.statements {
                bind_all(sqlx::query(sql), args).execute(&mut *conn).await?;
            }
            return Ok(());
        }
        let mut sql = String::new();
        let mut args: Vec<Arg> = Vec::new();
        for (statement, values) in self.statements {
            if !args.is_empty() && args.len() + values.len() > MAX_BATCH_ARGS {
                bind_all(sqlx::query(&sql), std::mem::take(&mut args))
                    .execute(&mut *conn)
                    .await?;
                sql.clear();
            }
            renumber(statement, args.len(), &mut sql);
            sql.push_str(";\n");
            args.extend(values);
        }
        if !sql.is_empty() {
            bind_all(sqlx::query(&sql), args)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }
}

fn bind_all<'q>(
    mut query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    args: Vec<Arg>,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    for arg in args {
        query = match arg {
            Arg::Int(v) => query.bind(v),
            Arg::Text(v) => query.bind(v),
        };
    }
    query
}

/// Appends `sql` to `out` with every `$n` placeholder shifted by `offset`. Statements here
/// hold no `$` inside string literals.
fn renumber(sql: &str, offset: usize, out: &mut String) {
    let mut chars = sql.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let mut number = String::new();
        while let Some((_, d)) = chars.peek().filter(|(_, d)| d.is_ascii_digit()) {
            number.push(*d);
            chars.next();
        }
        match number.parse::<usize>() {
            Ok(n) => {
                out.push('$');
                out.push_str(&(n + offset).to_string());
            }
            Err(_) => {
                out.push('$');
                out.push_str(&number);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::renumber;

    #[test]
    fn placeholders_are_shifted_past_earlier_statements() {
        let mut out = String::new();
        renumber("INSERT INTO t (a, b) VALUES ($1, $2)", 0, &mut out);
        out.push(';');
        renumber("UPDATE t SET a = $2 WHERE b = $1 OR b = $10", 7, &mut out);
        assert_eq!(
            out,
            "INSERT INTO t (a, b) VALUES ($1, $2);UPDATE t SET a = $9 WHERE b = $8 OR b = $17"
        );
    }
}
