//! Read receipts (stored, each change at a stream position) and typing notifications (in
//! memory with timeouts, each change at a stream position too, so `/sync` wakes for them).
//!
//! Typing topology: [`Typing`] maps room → user → expiry. Setting or clearing a user's typing
//! allocates a position under the storage write lock. One sweeper task per room with typers
//! sleeps until the earliest expiry and clears expired typers; it ends when the room has none.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use ruma::{
    EventId, OwnedRoomId, OwnedUserId, RoomId, UserId, events::AnySyncEphemeralRoomEvent,
    serde::Raw,
};
use serde_json::{Value, json};

use crate::storage::Change;

use super::UserData;
use crate::{Error, Result, Storage, StreamPosition, accounts::now_ms};

/// The longest a client may ask to be shown typing without renewing.
const MAX_TYPING: Duration = Duration::from_secs(120);

/// Receipts changed in a range: user, type, thread, event, timestamp.
type ReceiptRow = (String, String, String, String, i64);

/// Who is typing where, in memory.
#[derive(Clone, Default)]
pub(crate) struct Typing {
    rooms: Arc<Mutex<HashMap<OwnedRoomId, RoomTyping>>>,
}

#[derive(Default)]
struct RoomTyping {
    users: HashMap<OwnedUserId, Instant>,
    changed: StreamPosition,
    sweeping: bool,
}

impl Typing {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<OwnedRoomId, RoomTyping>> {
        // Plain map updates cannot leave it inconsistent; recover from a poisoned lock.
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Current typers of a room and the position of its last change.
    fn snapshot(&self, room: &RoomId) -> Option<(Vec<OwnedUserId>, StreamPosition)> {
        let rooms = self.lock();
        let typing = rooms.get(room)?;
        let now = Instant::now();
        let mut users: Vec<_> = typing
            .users
            .iter()
            .filter(|(_, until)| **until > now)
            .map(|(u, _)| u.clone())
            .collect();
        users.sort();
        Some((users, typing.changed))
    }
}

impl UserData {
    /// Marks `user` as typing in `room` for `timeout`, or as not typing (`None`).
    pub async fn set_typing(
        &self,
        room: &RoomId,
        user: &UserId,
        timeout: Option<Duration>,
    ) -> Result<()> {
        let mut txn = self.storage.write().await?;
        let spawn_sweeper = {
            let mut rooms = self.typing.lock();
            let entry = rooms.entry(room.to_owned()).or_default();
            let changed = match timeout {
                Some(t) => entry
                    .users
                    .insert(user.to_owned(), Instant::now() + t.min(MAX_TYPING))
                    .is_none(),
                None => entry.users.remove(user).is_some(),
            };
            if !changed {
                return Ok(());
            }
            entry.changed = txn.next_position_for(&[Change::Ephemeral]);
            let spawn = !entry.sweeping && !entry.users.is_empty();
            entry.sweeping |= spawn;
            spawn
        };
        txn.commit().await?;
        if spawn_sweeper {
            tokio::spawn(sweep(
                self.typing.clone(),
                self.storage.clone(),
                room.to_owned(),
            ));
        }
        Ok(())
    }

    /// Stores a receipt (`m.read`, `m.read.private`) at a new stream position.
    pub async fn set_receipt(
        &self,
        room: &RoomId,
        user: &UserId,
        receipt_type: &str,
        thread: Option<&str>,
        event: &EventId,
    ) -> Result<StreamPosition> {
        if !matches!(receipt_type, "m.read" | "m.read.private") {
            return Err(Error::InvalidParam(format!(
                "unknown receipt type {receipt_type}"
            )));
        }
        let thread = thread.unwrap_or("");
        let mut txn = self.storage.write().await?;
        let position = txn.next_position_for(&[Change::Ephemeral]);
        sqlx::query(
            "DELETE FROM receipts WHERE room_id = $1 AND user_id = $2 AND receipt_type = $3 \
             AND thread_id = $4",
        )
        .bind(room.as_str())
        .bind(user.as_str())
        .bind(receipt_type)
        .bind(thread)
        .execute(txn.conn())
        .await?;
        sqlx::query(
            "INSERT INTO receipts (room_id, user_id, receipt_type, thread_id, event_id, ts, \
             position) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(room.as_str())
        .bind(user.as_str())
        .bind(receipt_type)
        .bind(thread)
        .bind(event.as_str())
        .bind(now_ms())
        .bind(position.0)
        .execute(txn.conn())
        .await?;
        txn.commit().await?;
        Ok(position)
    }

    /// Ephemeral events (an `m.receipt` with the receipts changed in `(since, upto]`, and an
    /// `m.typing` when typing changed) for each of `rooms`, as `viewer` may see them (private
    /// receipts of others are left out).
    pub async fn ephemeral_since(
        &self,
        viewer: &UserId,
        rooms: &[OwnedRoomId],
        since: StreamPosition,
        upto: StreamPosition,
    ) -> Result<BTreeMap<OwnedRoomId, Vec<Raw<AnySyncEphemeralRoomEvent>>>> {
        let mut out: BTreeMap<OwnedRoomId, Vec<_>> = BTreeMap::new();
        for room in rooms {
            let rows: Vec<ReceiptRow> = sqlx::query_as(
                "SELECT user_id, receipt_type, thread_id, event_id, ts FROM receipts \
                 WHERE room_id = $1 AND position > $2 AND position <= $3",
            )
            .bind(room.as_str())
            .bind(since.0)
            .bind(upto.0)
            .fetch_all(self.storage.pool())
            .await?;
            let mut content = serde_json::Map::new();
            for (user, receipt_type, thread, event, ts) in rows {
                if receipt_type == "m.read.private" && user != viewer.as_str() {
                    continue;
                }
                let mut receipt = json!({ "ts": ts });
                if !thread.is_empty() {
                    receipt["thread_id"] = Value::String(thread);
                }
                let by_type = content
                    .entry(event)
                    .or_insert_with(|| json!({}))
                    .as_object_mut()
                    .ok_or_else(|| Error::Internal("receipt content".into()))?
                    .entry(receipt_type)
                    .or_insert_with(|| json!({}));
                by_type[user] = receipt;
            }
            if !content.is_empty() {
                out.entry(room.clone())
                    .or_default()
                    .push(to_raw(&json!({ "type": "m.receipt", "content": content }))?);
            }
            if let Some((users, changed)) = self.typing.snapshot(room) {
                let in_range = changed > since && changed <= upto;
                if in_range || (since.0 == 0 && !users.is_empty()) {
                    out.entry(room.clone()).or_default().push(to_raw(
                        &json!({ "type": "m.typing", "content": { "user_ids": users } }),
                    )?);
                }
            }
        }
        Ok(out)
    }

    /// An `m.typing` event for each of `rooms` whose typing users changed in `(since, upto]`
    /// (or, when `since` is 0, where someone is typing), read from memory only.
    pub(crate) fn typing_since(
        &self,
        rooms: &[OwnedRoomId],
        since: StreamPosition,
        upto: StreamPosition,
    ) -> Result<BTreeMap<OwnedRoomId, Raw<AnySyncEphemeralRoomEvent>>> {
        let mut out = BTreeMap::new();
        for room in rooms {
            if let Some((users, changed)) = self.typing.snapshot(room) {
                let in_range = changed > since && changed <= upto;
                if in_range || (since.0 == 0 && !users.is_empty()) {
                    out.insert(
                        room.clone(),
                        to_raw(&json!({ "type": "m.typing", "content": { "user_ids": users } }))?,
                    );
                }
            }
        }
        Ok(out)
    }

    /// Rooms whose receipts changed in `(since, upto]`.
    pub(crate) async fn rooms_with_receipts(
        &self,
        since: StreamPosition,
        upto: StreamPosition,
    ) -> Result<Vec<OwnedRoomId>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT DISTINCT room_id FROM receipts WHERE position > $1 AND position <= $2",
        )
        .bind(since.0)
        .bind(upto.0)
        .fetch_all(self.storage.pool())
        .await?;
        rows.into_iter()
            .map(|(r,)| OwnedRoomId::try_from(r).map_err(|e| Error::Corrupt(e.to_string())))
            .collect()
    }

    /// The stream position of the newest event of `room` that `user` has read (by an
    /// unthreaded or main-thread read receipt), when it is known here.
    ///
    /// Every sync showing the room asks this; the answer is kept until a receipt is stored
    /// (an ephemeral change). An answer that hangs on an event not held yet (or held without a
    /// place in the timeline) is not kept: that event may arrive without a receipt.
    pub async fn read_position(&self, user: &UserId, room: &RoomId) -> Result<Option<i64>> {
        let key = (user.to_owned(), room.to_owned());
        if let Ok(kept) = self.reads.lock()
            && let Some((read_at, position)) = kept.get(&key)
            && !self
                .storage
                .changed_since(Change::Ephemeral, StreamPosition(*read_at))
        {
            return Ok(*position);
        }
        // Read before the query: a receipt committing after it leaves its mark past this.
        let read_at = self.storage.notifier().current().0;
        let newest: Option<(Option<i64>,)> = sqlx::query_as(
            "SELECT e.position FROM receipts r LEFT JOIN events e ON e.event_id = r.event_id \
             WHERE r.room_id = $1 AND r.user_id = $2 \
             AND r.receipt_type IN ('m.read', 'm.read.private') AND r.thread_id IN ('', 'main') \
             ORDER BY r.position DESC LIMIT 1",
        )
        .bind(room.as_str())
        .bind(user.as_str())
        .fetch_optional(self.storage.pool())
        .await?;
        let position = match newest {
            None => None,
            Some((Some(position),)) => Some(position),
            Some((None,)) => return self.read_position_of_placed(user, room).await,
        };
        if let Ok(mut kept) = self.reads.lock() {
            if kept.len() >= MAX_KEPT_READS {
                kept.clear();
            }
            kept.insert(key, (read_at, position));
        }
        Ok(position)
    }

    /// [`UserData::read_position`] read from the receipts whose event has a place in the
    /// timeline.
    async fn read_position_of_placed(&self, user: &UserId, room: &RoomId) -> Result<Option<i64>> {
        let row: Option<(Option<i64>,)> = sqlx::query_as(
            "SELECT e.position FROM receipts r JOIN events e ON e.event_id = r.event_id \
             WHERE r.room_id = $1 AND r.user_id = $2 \
             AND r.receipt_type IN ('m.read', 'm.read.private') AND r.thread_id IN ('', 'main') \
             AND e.position IS NOT NULL ORDER BY r.position DESC LIMIT 1",
        )
        .bind(room.as_str())
        .bind(user.as_str())
        .fetch_optional(self.storage.pool())
        .await?;
        Ok(row.and_then(|(p,)| p))
    }
}

/// Read positions kept, at most; past that the cache starts again.
const MAX_KEPT_READS: usize = 10_000;

fn to_raw<T>(value: &Value) -> Result<Raw<T>> {
    Ok(Raw::from_json(serde_json::value::to_raw_value(value)?))
}

/// Clears expired typers of `room` as they expire, taking a position for each change.
async fn sweep(typing: Typing, storage: Storage, room: OwnedRoomId) {
    loop {
        let next = {
            let mut rooms = typing.lock();
            let Some(entry) = rooms.get_mut(&room) else {
                return;
            };
            match entry.users.values().min().copied() {
                Some(next) => next,
                None => {
                    entry.sweeping = false;
                    return;
                }
            }
        };
        tokio::time::sleep_until(next.into()).await;
        let Ok(mut txn) = storage.write().await else {
            continue;
        };
        let changed = {
            let mut rooms = typing.lock();
            let Some(entry) = rooms.get_mut(&room) else {
                return;
            };
            let now = Instant::now();
            let before = entry.users.len();
            entry.users.retain(|_, until| *until > now);
            if entry.users.len() != before {
                entry.changed = txn.next_position_for(&[Change::Ephemeral]);
                true
            } else {
                false
            }
        };
        if changed && let Err(e) = txn.commit().await {
            tracing::warn!(error = %e, "recording typing expiry");
        }
    }
}
