//! The SQL of federation's outgoing queues: one queue of events per destination server, filled
//! from the node-wide event stream by a persisted cursor, so an event committed before a crash
//! is still queued (and sent) after it.
//!
//! This module decides *which* servers get an event; sending is the federation crate's job.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
};

use ruma::{OwnedEventId, OwnedServerName, ServerName, UserId};
use sqlx::Row;

use crate::{Result, Storage};

/// The outgoing queues of this node.
#[derive(Clone)]
pub struct FederationQueue {
    storage: Storage,
    /// How far the stream was scanned, at or ahead of the persisted cursor: the events between
    /// the two were messages of rooms no other server is in ([`NOT_SCANNED`] until the first
    /// fill). Skipping them needs no write, so a local message costs no second transaction.
    scanned: Arc<AtomicI64>,
}

/// `scanned` before the persisted cursor was first read.
const NOT_SCANNED: i64 = i64::MIN;

/// The columns a fill reads of each event after the cursor.
const EVENTS_AFTER: &str = "SELECT event_id, room_id, sender, event_type, state_key, rejected, position \
     FROM events WHERE position > $1 ORDER BY position LIMIT $2";

/// One queued event, ready to send.
#[derive(Debug, Clone)]
pub struct QueuedPdu {
    /// The event ID.
    pub event_id: OwnedEventId,
    /// The PDU as canonical JSON text.
    pub pdu: String,
}

/// One queued EDU.
#[derive(Debug, Clone)]
pub struct QueuedEdu {
    /// Its place in the queue.
    pub id: i64,
    /// The EDU as JSON text.
    pub edu: String,
}

impl FederationQueue {
    /// The queues over `storage`.
    pub fn new(storage: Storage) -> Self {
        Self {
            storage,
            scanned: Arc::new(AtomicI64::new(NOT_SCANNED)),
        }
    }

    /// Moves the scan past the events after it that give no server anything, without the
    /// writer lock: messages (no state event, whose memberships the persisted cursor must
    /// not pass unrecorded) of rooms with no other server joined. `Some(more)` when it went
    /// through the whole batch; `None` when [`FederationQueue::fill`]'s locked path must run.
    async fn skip_local_only(&self, ours: &ServerName, batch: i64) -> Result<Option<bool>> {
        let cursor = self.scanned.load(Ordering::Acquire);
        if cursor == NOT_SCANNED {
            return Ok(None);
        }
        let rows = sqlx::query(EVENTS_AFTER)
            .bind(cursor)
            .bind(batch)
            .fetch_all(self.storage.pool())
            .await?;
        let more = i64::try_from(rows.len()).unwrap_or(i64::MAX) >= batch;
        let mut remote_rooms: HashMap<String, bool> = HashMap::new();
        let mut last = cursor;
        let mut whole = true;
        for row in &rows {
            let room_id: String = row.try_get(1)?;
            let sender: String = row.try_get(2)?;
            let state_key: Option<String> = row.try_get(4)?;
            let rejected: i64 = row.try_get(5)?;
            let position: i64 = row.try_get(6)?;
            if state_key.is_some() {
                whole = false;
                break;
            }
            let local = UserId::parse(sender.as_str()).is_ok_and(|u| u.server_name() == ours);
            if local && rejected == 0 {
                let remote = match remote_rooms.get(&room_id) {
                    Some(remote) => *remote,
                    None => {
                        let remote = !other_servers(&self.storage, &room_id, ours)
                            .await?
                            .is_empty();
                        remote_rooms.insert(room_id, remote);
                        remote
                    }
                };
                if remote {
                    whole = false;
                    break;
                }
            }
            last = position;
        }
        self.scanned.fetch_max(last, Ordering::AcqRel);
        Ok(whole.then_some(more))
    }

    /// Queues the events committed after the cursor that `ours` originated, for every other
    /// server with a joined member in the event's room (and, for membership events, the
    /// target's server), at most `batch` stream positions at a time. Returns the destinations
    /// that got something, and whether more positions remain.
    pub async fn fill(
        &self,
        ours: &ServerName,
        batch: i64,
    ) -> Result<(BTreeSet<OwnedServerName>, bool)> {
        if let Some(more) = self.skip_local_only(ours, batch).await? {
            return Ok((BTreeSet::new(), more));
        }
        // Through the writer lock: it reads, then writes, and must not race other writers.
        let mut tx = self.storage.write().await?;
        let (persisted,): (i64,) =
            sqlx::query_as("SELECT position FROM federation_cursor WHERE id = 1")
                .fetch_one(tx.conn())
                .await?;
        let cursor = persisted.max(self.scanned.load(Ordering::Acquire));
        let rows = sqlx::query(EVENTS_AFTER)
            .bind(cursor)
            .bind(batch)
            .fetch_all(tx.conn())
            .await?;
        let more = i64::try_from(rows.len()).unwrap_or(i64::MAX) >= batch;
        let mut touched = BTreeSet::new();
        let mut last = cursor;
        for row in &rows {
            let event_id: String = row.try_get(0)?;
            let room_id: String = row.try_get(1)?;
            let sender: String = row.try_get(2)?;
            let kind: String = row.try_get(3)?;
            let state_key: Option<String> = row.try_get(4)?;
            let rejected: i64 = row.try_get(5)?;
            let position: i64 = row.try_get(6)?;
            last = last.max(position);
            let local = UserId::parse(sender.as_str()).is_ok_and(|u| u.server_name() == ours);
            if !local || rejected != 0 {
                continue;
            }
            let mut servers = joined_servers(tx.conn(), &room_id).await?;
            if kind == "m.room.member"
                && let Some(target) = state_key.as_deref().and_then(|k| UserId::parse(k).ok())
            {
                servers.insert(target.server_name().to_owned());
            }
            servers.remove(ours);
            for server in servers {
                sqlx::query(
                    "INSERT INTO federation_queue (destination, position, event_id) \
                     VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                )
                .bind(server.as_str())
                .bind(position)
                .bind(event_id.as_str())
                .execute(tx.conn())
                .await?;
                touched.insert(server);
            }
        }
        if last != persisted {
            sqlx::query("UPDATE federation_cursor SET position = $1 WHERE id = 1")
                .bind(last)
                .execute(tx.conn())
                .await?;
        }
        tx.commit().await?;
        self.scanned.fetch_max(last, Ordering::AcqRel);
        Ok((touched, more))
    }

    /// Queues one stored event for `destination` directly (a resident server passing a
    /// remote join on to the room's other servers).
    pub async fn push(&self, destination: &ServerName, event_id: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO federation_queue (destination, position, event_id) \
             SELECT $1, COALESCE(position, 0), event_id FROM events WHERE event_id = $2 \
             ON CONFLICT DO NOTHING",
        )
        .bind(destination.as_str())
        .bind(event_id)
        .execute(self.storage.pool())
        .await?;
        Ok(())
    }

    /// Destinations with queued events or EDUs.
    pub async fn destinations(&self) -> Result<Vec<OwnedServerName>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT destination FROM federation_queue \
             UNION SELECT destination FROM federation_edu_queue",
        )
        .fetch_all(self.storage.pool())
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(d,)| OwnedServerName::try_from(d).ok())
            .collect())
    }

    /// The oldest `limit` events queued for `destination`.
    pub async fn peek(&self, destination: &ServerName, limit: i64) -> Result<Vec<QueuedPdu>> {
        let rows = sqlx::query(
            "SELECT q.event_id, e.pdu FROM federation_queue q JOIN events e \
             ON e.event_id = q.event_id WHERE q.destination = $1 \
             ORDER BY q.position LIMIT $2",
        )
        .bind(destination.as_str())
        .bind(limit)
        .fetch_all(self.storage.pool())
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.try_get(0)?;
            let pdu: String = row.try_get(1)?;
            if let Ok(event_id) = OwnedEventId::try_from(id) {
                out.push(QueuedPdu { event_id, pdu });
            }
        }
        Ok(out)
    }

    /// Queues EDUs (JSON text, `edu_type` and `content`) for `destination`, in order, in one
    /// transaction.
    pub async fn push_edus(&self, destination: &ServerName, edus: &[String]) -> Result<()> {
        let mut tx = self.storage.pool().begin().await?;
        for edu in edus {
            sqlx::query("INSERT INTO federation_edu_queue (destination, edu) VALUES ($1, $2)")
                .bind(destination.as_str())
                .bind(edu.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The oldest `limit` EDUs queued for `destination`, with their queue IDs.
    pub async fn peek_edus(&self, destination: &ServerName, limit: i64) -> Result<Vec<QueuedEdu>> {
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT id, edu FROM federation_edu_queue WHERE destination = $1 ORDER BY id LIMIT $2",
        )
        .bind(destination.as_str())
        .bind(limit)
        .fetch_all(self.storage.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, edu)| QueuedEdu { id, edu })
            .collect())
    }

    /// Removes `destination`'s queued EDUs up to and including queue ID `upto`.
    pub async fn remove_edus(&self, destination: &ServerName, upto: i64) -> Result<()> {
        sqlx::query("DELETE FROM federation_edu_queue WHERE destination = $1 AND id <= $2")
            .bind(destination.as_str())
            .bind(upto)
            .execute(self.storage.pool())
            .await?;
        Ok(())
    }

    /// Removes sent events from `destination`'s queue.
    pub async fn remove(&self, destination: &ServerName, ids: &[OwnedEventId]) -> Result<()> {
        for id in ids {
            sqlx::query("DELETE FROM federation_queue WHERE destination = $1 AND event_id = $2")
                .bind(destination.as_str())
                .bind(id.as_str())
                .execute(self.storage.pool())
                .await?;
        }
        Ok(())
    }
}

/// The servers with a joined member in `room`.
async fn joined_servers<'c>(
    executor: impl sqlx::Executor<'c, Database = sqlx::Any>,
    room: &str,
) -> Result<BTreeSet<OwnedServerName>> {
    let members: Vec<(String,)> = sqlx::query_as(
        "SELECT user_id FROM memberships WHERE room_id = $1 AND membership = 'join'",
    )
    .bind(room)
    .fetch_all(executor)
    .await?;
    Ok(members
        .iter()
        .filter_map(|(u,)| UserId::parse(u.as_str()).ok())
        .map(|u| u.server_name().to_owned())
        .collect())
}

/// The servers other than `ours` with a joined member in `room`.
async fn other_servers(
    storage: &Storage,
    room: &str,
    ours: &ServerName,
) -> Result<BTreeSet<OwnedServerName>> {
    let mut servers = joined_servers(storage.pool(), room).await?;
    servers.remove(ours);
    Ok(servers)
}
