//! The SQL of rooms: every statement that reads or writes events, edges, state groups,
//! memberships and aliases lives here.
//!
//! State is stored as *state groups*: a group is either a full snapshot or a delta over a
//! previous group, and every event row names the group of the state after it. Only state events
//! create groups (a message shares the group of its parent), so a message costs no state rows;
//! a state event costs one delta row. A snapshot is written when a delta chain grows longer than
//! the state it leads to ([`needs_snapshot`]), so the rows stay linear in the number of state
//! changes; a chain is read in one recursive query, and the loaded maps are cached in memory
//! within a byte budget (see `state.rs`).

mod aliases;
mod groups;
pub(crate) mod redactions;

pub(crate) use aliases::*;
pub(crate) use groups::*;

use std::collections::HashMap;

use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId, events::StateEventType};
use sqlx::{AnyConnection, AnyPool, Row};

use super::{
    StateMap,
    pdu::{Pdu, Replaced},
};
use crate::{Error, Result, StreamPosition, storage::Batch};

/// One event to insert with everything that changes with it.
pub(crate) struct EventRow<'a> {
    /// The event.
    pub(crate) pdu: &'a Pdu,
    /// Its stream position.
    pub(crate) position: StreamPosition,
    /// The state group after it.
    pub(crate) state_group: i64,
    /// A new state group the event creates.
    pub(crate) new_group: Option<NewGroup>,
    /// The membership change it makes to current state.
    pub(crate) membership: Option<(OwnedUserId, String)>,
    /// The sending device and transaction ID, for idempotent sends.
    pub(crate) txn: Option<(String, String)>,
    /// Whether the event soft-failed: kept in the DAG, left out of timelines and state.
    pub(crate) soft_failed: bool,
}

/// `events.rejected` of an accepted event.
const ACCEPTED: i64 = 0;
/// `events.rejected` of an event that failed auth against its auth events or prior state.
const REJECTED: i64 = 1;
/// `events.rejected` of an event that failed auth against the current state only.
const SOFT_FAILED: i64 = 2;

/// A room's current head: its state group, that group's state and its forward extremities.
pub(crate) struct Head<'a> {
    /// The state group of the current state.
    pub(crate) group: i64,
    /// The current state (what `rooms.encrypted` is read from).
    pub(crate) state: &'a StateMap,
    /// The forward extremities.
    pub(crate) extremities: &'a [OwnedEventId],
}

impl Head<'_> {
    /// Whether the current state holds an `m.room.encryption` event.
    fn encrypted(&self) -> bool {
        self.state
            .contains_key(&(StateEventType::RoomEncryption, String::new()))
    }
}

/// Adds the insertion of a room row to `batch`; `room_type` is the `type` of its create event.
pub(crate) fn push_insert_room(
    batch: &mut Batch,
    room: &RoomId,
    version: &str,
    room_type: Option<&str>,
    head: &Head<'_>,
) -> Result<()> {
    batch.push(
        "INSERT INTO rooms (room_id, room_version, current_group, extremities, room_type, \
         encrypted) VALUES ($1, $2, $3, $4, $5, $6)",
        vec![
            room.as_str().into(),
            version.into(),
            head.group.into(),
            serde_json::to_string(head.extremities)?.into(),
            room_type.into(),
            i64::from(head.encrypted()).into(),
        ],
    );
    Ok(())
}

/// Inserts a room row.
pub(crate) async fn insert_room(
    conn: &mut AnyConnection,
    room: &RoomId,
    version: &str,
    room_type: Option<&str>,
    head: &Head<'_>,
) -> Result<()> {
    let mut batch = Batch::default();
    push_insert_room(&mut batch, room, version, room_type, head)?;
    batch.run(conn).await
}

/// Adds moving the room's current state group and forward extremities to `batch`, with what
/// list filters read of the new current state.
pub(crate) fn push_room_head(batch: &mut Batch, room: &RoomId, head: &Head<'_>) -> Result<()> {
    batch.push(
        "UPDATE rooms SET current_group = $1, extremities = $2, encrypted = $3 \
         WHERE room_id = $4",
        vec![
            head.group.into(),
            serde_json::to_string(head.extremities)?.into(),
            i64::from(head.encrypted()).into(),
            room.as_str().into(),
        ],
    );
    Ok(())
}

/// Adds an event with its edges, its new state group and its membership change to `batch`.
pub(crate) fn push_event(batch: &mut Batch, row: &EventRow<'_>) {
    let pdu = row.pdu;
    let (device, txn_id) = match &row.txn {
        Some((d, t)) => (Some(d.as_str()), Some(t.as_str())),
        None => (None, None),
    };
    let rejected = if pdu.rejected {
        REJECTED
    } else if row.soft_failed {
        SOFT_FAILED
    } else {
        ACCEPTED
    };
    batch.push(
        "INSERT INTO events (event_id, room_id, position, depth, event_type, state_key, sender, \
         origin_server_ts, pdu, state_group, rejected, txn_device, txn_id, replaces_state) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        vec![
            pdu.event_id.as_str().into(),
            pdu.room.as_str().into(),
            row.position.0.into(),
            i64::try_from(pdu.depth).unwrap_or(i64::MAX).into(),
            pdu.kind.to_string().into(),
            pdu.state_key.as_deref().into(),
            pdu.sender.as_str().into(),
            i64::from(pdu.origin_server_ts.get()).into(),
            pdu.json.to_string().into(),
            row.state_group.into(),
            rejected.into(),
            device.into(),
            txn_id.into(),
            replaced_column(&pdu.replaced).into(),
        ],
    );
    push_edges(batch, pdu);
    if rejected == ACCEPTED && row.position.0 > 0 && is_bump(&pdu.kind.to_string()) {
        batch.push(
            "UPDATE rooms SET bump_position = $1 WHERE room_id = $2 AND bump_position < $1",
            vec![row.position.0.into(), pdu.room.as_str().into()],
        );
    }
    if let Some(group) = &row.new_group {
        push_group(batch, &pdu.room, group);
    }
    if let Some((user, membership)) = &row.membership {
        batch.push(
            "INSERT INTO memberships (room_id, user_id, membership, event_id, position, forgotten) \
             VALUES ($1, $2, $3, $4, $5, 0) \
             ON CONFLICT (room_id, user_id) DO UPDATE SET membership = $3, event_id = $4, \
             position = $5, forgotten = 0",
            vec![
                pdu.room.as_str().into(),
                user.as_str().into(),
                membership.as_str().into(),
                pdu.event_id.as_str().into(),
                row.position.0.into(),
            ],
        );
        batch.push(
            "INSERT INTO membership_log (user_id, position, room_id, membership, event_id) \
             VALUES ($1, $2, $3, $4, $5)",
            vec![
                user.as_str().into(),
                row.position.0.into(),
                pdu.room.as_str().into(),
                membership.as_str().into(),
                pdu.event_id.as_str().into(),
            ],
        );
    }
}

/// The event types that move a room up a user's list (`rooms.bump_position`); the migration
/// that added the column names the same ones.
const BUMP_TYPES: &[&str] = &[
    "m.room.create",
    "m.room.message",
    "m.room.encrypted",
    "m.sticker",
    "m.call.invite",
    "m.poll.start",
    "org.matrix.msc3381.poll.start",
    "m.beacon_info",
    "org.matrix.msc3672.beacon_info",
];

/// Whether an event of type `kind` moves its room up the list.
pub(crate) fn is_bump(kind: &str) -> bool {
    BUMP_TYPES.contains(&kind)
}

/// One room of a user's list, with what orders and filters it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListedRoom {
    /// The room.
    pub(crate) room: OwnedRoomId,
    /// The user's membership in it.
    pub(crate) membership: String,
    /// The position of the event that set that membership.
    pub(crate) membership_position: i64,
    /// The position of the room's newest message-like event, 0 when it has none held here.
    pub(crate) bump_position: i64,
    /// What the room is, when this node holds it (None: an invite to a room not held here).
    pub(crate) kind: Option<RoomKind>,
}

/// What a room is, for list filters: `rooms.room_type` and `rooms.encrypted`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RoomKind {
    /// The `type` of its create event (None: a room without a type).
    pub(crate) room_type: Option<String>,
    /// Whether its current state holds an `m.room.encryption` event.
    pub(crate) encrypted: bool,
}

/// The rooms `user` is joined or invited to, and those they left or were
/// banned from after `left_after`, with what orders them, in one read of the membership index.
pub(crate) async fn listed_rooms(
    pool: &AnyPool,
    user: &UserId,
    left_after: i64,
) -> Result<Vec<ListedRoom>> {
    type Row = (
        String,
        String,
        i64,
        Option<i64>,
        Option<String>,
        Option<i64>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT m.room_id, m.membership, m.position, r.bump_position, r.room_type, \
         r.encrypted FROM memberships m \
         LEFT JOIN rooms r ON r.room_id = m.room_id \
         WHERE m.user_id = $1 AND m.forgotten = 0 AND (m.membership IN ('join', 'invite') \
         OR m.position > $2)",
    )
    .bind(user.as_str())
    .bind(left_after)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(room, membership, position, bump, room_type, encrypted)| {
            let room = OwnedRoomId::try_from(room).map_err(|e| Error::Corrupt(e.to_string()))?;
            Ok(ListedRoom {
                room,
                membership,
                membership_position: position,
                bump_position: bump.unwrap_or(0),
                // `encrypted` is NOT NULL, so it is NULL only when the room row is missing.
                kind: encrypted.map(|encrypted| RoomKind {
                    room_type,
                    encrypted: encrypted != 0,
                }),
            })
        })
        .collect()
}

/// Adds an event's `prev_events` edges to `batch`.
fn push_edges(batch: &mut Batch, pdu: &Pdu) {
    for prev in &pdu.prev_events {
        batch.push(
            "INSERT INTO event_edges (event_id, prev_event_id, room_id) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
            vec![
                pdu.event_id.as_str().into(),
                prev.as_str().into(),
                pdu.room.as_str().into(),
            ],
        );
    }
}

/// Inserts an event with its edges, its new state group and its membership change.
pub(crate) async fn insert_event(conn: &mut AnyConnection, row: &EventRow<'_>) -> Result<()> {
    let mut batch = Batch::default();
    push_event(&mut batch, row);
    batch.run(conn).await
}

/// Adds replacing an event's stored PDU with its redacted form to `batch`.
pub(crate) fn push_redaction(
    batch: &mut Batch,
    target: &OwnedEventId,
    redacted_json: &str,
    redacted_by: &OwnedEventId,
) {
    batch.push(
        "UPDATE events SET pdu = $1, redacted_by = $2 WHERE event_id = $3",
        vec![
            redacted_json.into(),
            redacted_by.as_str().into(),
            target.as_str().into(),
        ],
    );
}

/// A room's stored head: version, current group and forward extremities.
pub(crate) async fn room_head(
    pool: &AnyPool,
    room: &RoomId,
) -> Result<Option<(String, i64, Vec<OwnedEventId>, bool)>> {
    let row: Option<(String, i64, String, i64)> = sqlx::query_as(
        "SELECT room_version, current_group, extremities, published FROM rooms WHERE room_id = $1",
    )
    .bind(room.as_str())
    .fetch_optional(pool)
    .await?;
    match row {
        Some((version, group, ext, published)) => {
            let ext: Vec<OwnedEventId> = serde_json::from_str(&ext)?;
            Ok(Some((version, group, ext, published != 0)))
        }
        None => Ok(None),
    }
}

/// A stored event, with its stream position and state group.
pub(crate) struct StoredEvent {
    /// The event.
    pub(crate) pdu: Pdu,
    /// Its stream position (None for outliers).
    pub(crate) position: Option<i64>,
    /// The state group after it.
    pub(crate) state_group: Option<i64>,
    /// The redaction that redacted it.
    pub(crate) redacted_by: Option<OwnedEventId>,
    /// The sending device and transaction ID.
    pub(crate) txn: Option<(String, String)>,
}

const EVENT_COLUMNS: &str = "event_id, room_id, pdu, position, state_group, redacted_by, \
     txn_device, txn_id, rejected, replaces_state";

/// `events.replaces_state` of what an event replaced: NULL when not known, an empty string
/// when nothing.
fn replaced_column(replaced: &Replaced) -> Option<&str> {
    match replaced {
        Replaced::Unknown => None,
        Replaced::Nothing => Some(""),
        Replaced::Event(id) => Some(id.as_str()),
    }
}

/// What `events.replaces_state` says.
fn replaced_of(column: Option<String>) -> Result<Replaced> {
    match column.as_deref() {
        None => Ok(Replaced::Unknown),
        Some("") => Ok(Replaced::Nothing),
        Some(id) => OwnedEventId::try_from(id)
            .map(Replaced::Event)
            .map_err(|e| Error::Corrupt(format!("replaces_state: {e}"))),
    }
}

/// Adds recording what a stored state event replaced, when not recorded yet, to `batch`.
pub(crate) fn push_replaced(batch: &mut Batch, event_id: &OwnedEventId, replaced: &Replaced) {
    batch.push(
        "UPDATE events SET replaces_state = $1 WHERE event_id = $2 AND replaces_state IS NULL",
        vec![replaced_column(replaced).into(), event_id.as_str().into()],
    );
}

fn stored_from_row(row: &sqlx::any::AnyRow) -> Result<StoredEvent> {
    let event_id: String = row.try_get(0)?;
    let room_id: String = row.try_get(1)?;
    let json: String = row.try_get(2)?;
    let position: Option<i64> = row.try_get(3)?;
    let state_group: Option<i64> = row.try_get(4)?;
    let redacted_by: Option<String> = row.try_get(5)?;
    let device: Option<String> = row.try_get(6)?;
    let txn_id: Option<String> = row.try_get(7)?;
    let rejected: i64 = row.try_get(8)?;
    let replaced: Option<String> = row.try_get(9)?;
    let event_id = OwnedEventId::try_from(event_id).map_err(|e| Error::Corrupt(e.to_string()))?;
    let room = OwnedRoomId::try_from(room_id).map_err(|e| Error::Corrupt(e.to_string()))?;
    let mut pdu = Pdu::parse(event_id, Some(&room), &json)
        .map_err(|e| Error::Corrupt(format!("stored event: {e}")))?;
    pdu.rejected = rejected == REJECTED;
    pdu.replaced = replaced_of(replaced)?;
    Ok(StoredEvent {
        pdu,
        position,
        state_group,
        redacted_by: redacted_by.and_then(|id| OwnedEventId::try_from(id).ok()),
        txn: device.zip(txn_id),
    })
}

/// One event by ID.
pub(crate) async fn event(pool: &AnyPool, event_id: &str) -> Result<Option<StoredEvent>> {
    let row = sqlx::query(&format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE event_id = $1"
    ))
    .bind(event_id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(stored_from_row).transpose()
}

/// Events by ID (missing ones are left out).
pub(crate) async fn events_by_id(
    pool: &AnyPool,
    ids: &[OwnedEventId],
) -> Result<HashMap<OwnedEventId, StoredEvent>> {
    let mut out = HashMap::with_capacity(ids.len());
    // Fetched in chunks so the statement stays within both engines' parameter limits.
    for chunk in ids.chunks(200) {
        let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE event_id IN ({})",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for id in chunk {
            query = query.bind(id.as_str());
        }
        for row in query.fetch_all(pool).await? {
            let stored = stored_from_row(&row)?;
            out.insert(stored.pdu.event_id.clone(), stored);
        }
    }
    Ok(out)
}

/// The event a device already sent with this transaction ID.
pub(crate) async fn event_for_txn(
    pool: &AnyPool,
    user: &UserId,
    device: &str,
    txn_id: &str,
) -> Result<Option<OwnedEventId>> {
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT event_id FROM events WHERE sender = $1 AND txn_device = $2 AND txn_id = $3",
    )
    .bind(user.as_str())
    .bind(device)
    .bind(txn_id)
    .fetch_optional(pool)
    .await?;
    row.map(|(id,)| OwnedEventId::try_from(id).map_err(|e| Error::Corrupt(e.to_string())))
        .transpose()
}

/// Which way a range of the timeline is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Oldest first, positions above the start.
    Forward,
    /// Newest first, positions at or below the start.
    Backward,
}

/// Events of a room in `(after, upto]` newest first (Backward) or oldest first (Forward), at
/// most `limit`.
pub(crate) async fn room_events(
    pool: &AnyPool,
    room: &RoomId,
    after: i64,
    upto: i64,
    direction: Direction,
    limit: i64,
) -> Result<Vec<StoredEvent>> {
    let order = match direction {
        Direction::Forward => "ASC",
        Direction::Backward => "DESC",
    };
    let rows = sqlx::query(&format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND position > $2 \
         AND position <= $3 AND rejected = 0 ORDER BY position {order} LIMIT $4"
    ))
    .bind(room.as_str())
    .bind(after)
    .bind(upto)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(stored_from_row).collect()
}

/// Accepted events of every room in `(after, upto]`, oldest first, at most `limit`.
pub(crate) async fn stream_events(
    pool: &AnyPool,
    after: i64,
    upto: i64,
    limit: i64,
) -> Result<Vec<StoredEvent>> {
    let rows = sqlx::query(&format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE position > $1 AND position <= $2 \
         AND rejected = 0 ORDER BY position ASC LIMIT $3"
    ))
    .bind(after)
    .bind(upto)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(stored_from_row).collect()
}

/// The state group after the last event of `room` at or before `position`.
pub(crate) async fn group_at(pool: &AnyPool, room: &RoomId, position: i64) -> Result<Option<i64>> {
    let row: Option<(Option<i64>,)> = sqlx::query_as(
        "SELECT state_group FROM events WHERE room_id = $1 AND position <= $2 \
         AND rejected = 0 ORDER BY position DESC LIMIT 1",
    )
    .bind(room.as_str())
    .bind(position)
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|(g,)| g))
}

/// The state group and ID of the room's first accepted event in the stream after `position`.
pub(crate) async fn first_group_after(
    pool: &AnyPool,
    room: &RoomId,
    position: i64,
) -> Result<Option<(i64, OwnedEventId)>> {
    let row: Option<(Option<i64>, String)> = sqlx::query_as(
        "SELECT state_group, event_id FROM events WHERE room_id = $1 AND position > $2 \
         AND rejected = 0 ORDER BY position ASC LIMIT 1",
    )
    .bind(room.as_str())
    .bind(position)
    .fetch_optional(pool)
    .await?;
    let Some((Some(group), id)) = row else {
        return Ok(None);
    };
    let id = OwnedEventId::try_from(id).map_err(|e| Error::Corrupt(format!("event id: {e}")))?;
    Ok(Some((group, id)))
}

/// A row of a user's membership log.
#[derive(Debug, Clone)]
pub(crate) struct MembershipChange {
    /// The room.
    pub(crate) room: OwnedRoomId,
    /// The new membership.
    pub(crate) membership: String,
    /// Its position.
    pub(crate) position: i64,
}

/// Rooms where the user's current membership is `membership`.
pub(crate) async fn rooms_with_membership(
    pool: &AnyPool,
    user: &UserId,
    membership: &str,
) -> Result<Vec<OwnedRoomId>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT room_id FROM memberships WHERE user_id = $1 AND membership = $2 ORDER BY room_id",
    )
    .bind(user.as_str())
    .bind(membership)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(r,)| OwnedRoomId::try_from(r).map_err(|e| Error::Corrupt(e.to_string())))
        .collect()
}

/// The user's current membership in a room, with whether they forgot it.
pub(crate) async fn membership(
    pool: &AnyPool,
    room: &RoomId,
    user: &UserId,
) -> Result<Option<(String, bool)>> {
    let row: Option<(String, i64)> = sqlx::query_as(
        "SELECT membership, forgotten FROM memberships WHERE room_id = $1 AND user_id = $2",
    )
    .bind(room.as_str())
    .bind(user.as_str())
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(m, f)| (m, f != 0)))
}

/// The user's current membership in a room with the position of the event that set it.
pub(crate) async fn membership_at(
    pool: &AnyPool,
    room: &RoomId,
    user: &UserId,
) -> Result<Option<(String, i64)>> {
    Ok(sqlx::query_as(
        "SELECT membership, position FROM memberships WHERE room_id = $1 AND user_id = $2",
    )
    .bind(room.as_str())
    .bind(user.as_str())
    .fetch_optional(pool)
    .await?)
}

/// Members of a room with the given membership.
pub(crate) async fn members_with(
    pool: &AnyPool,
    room: &RoomId,
    membership: &str,
) -> Result<Vec<OwnedUserId>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT user_id FROM memberships WHERE room_id = $1 AND membership = $2 ORDER BY user_id",
    )
    .bind(room.as_str())
    .bind(membership)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(u,)| OwnedUserId::try_from(u).map_err(|e| Error::Corrupt(e.to_string())))
        .collect()
}

/// Users joined to at least one room that `user` is joined to.
pub(crate) async fn users_sharing_rooms(pool: &AnyPool, user: &UserId) -> Result<Vec<OwnedUserId>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT b.user_id FROM memberships a JOIN memberships b ON a.room_id = b.room_id \
         WHERE a.user_id = $1 AND a.membership = 'join' AND b.membership = 'join'",
    )
    .bind(user.as_str())
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(u,)| OwnedUserId::try_from(u).map_err(|e| Error::Corrupt(e.to_string())))
        .collect()
}

/// Marks a room forgotten for a user.
pub(crate) async fn forget(pool: &AnyPool, room: &RoomId, user: &UserId) -> Result<()> {
    sqlx::query("UPDATE memberships SET forgotten = 1 WHERE room_id = $1 AND user_id = $2")
        .bind(room.as_str())
        .bind(user.as_str())
        .execute(pool)
        .await?;
    Ok(())
}

/// Walks the auth chains of `start` through stored events, at most `limit` events, loop-based.
pub(crate) async fn auth_chain_events(
    pool: &AnyPool,
    start: &[OwnedEventId],
    limit: usize,
) -> Result<HashMap<OwnedEventId, Pdu>> {
    let mut seen: HashMap<OwnedEventId, Pdu> = HashMap::new();
    let mut frontier: Vec<OwnedEventId> = start.to_vec();
    while !frontier.is_empty() {
        if seen.len() >= limit {
            return Err(Error::LimitExceeded(format!(
                "auth chain longer than {limit} events"
            )));
        }
        frontier.retain(|id| !seen.contains_key(id));
        frontier.sort();
        frontier.dedup();
        let found = events_by_id(pool, &frontier).await?;
        let mut next = Vec::new();
        for (id, stored) in found {
            next.extend(stored.pdu.auth_events.iter().cloned());
            seen.insert(id, stored.pdu);
        }
        frontier = next;
    }
    Ok(seen)
}

/// Every membership change of a user up to `upto`, oldest first.
pub(crate) async fn membership_log(
    pool: &AnyPool,
    user: &UserId,
    upto: i64,
) -> Result<Vec<MembershipChange>> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT room_id, membership, position FROM membership_log \
         WHERE user_id = $1 AND position <= $2 ORDER BY position",
    )
    .bind(user.as_str())
    .bind(upto)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(room, membership, position)| {
            Ok(MembershipChange {
                room: OwnedRoomId::try_from(room).map_err(|e| Error::Corrupt(e.to_string()))?,
                membership,
                position,
            })
        })
        .collect()
}

/// Membership changes in any room with positions in `(after, upto]`: (room, user, membership).
pub(crate) async fn member_changes(
    pool: &AnyPool,
    after: i64,
    upto: i64,
) -> Result<Vec<(OwnedRoomId, OwnedUserId, String)>> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT room_id, user_id, membership FROM membership_log WHERE position > $1 \
         AND position <= $2 ORDER BY position",
    )
    .bind(after)
    .bind(upto)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(r, u, m)| {
            let room = OwnedRoomId::try_from(r).map_err(|e| Error::Corrupt(e.to_string()))?;
            let user = OwnedUserId::try_from(u).map_err(|e| Error::Corrupt(e.to_string()))?;
            Ok((room, user, m))
        })
        .collect()
}

/// Rooms with events at positions in `(after, upto]`.
pub(crate) async fn rooms_with_events(
    pool: &AnyPool,
    after: i64,
    upto: i64,
) -> Result<Vec<OwnedRoomId>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT room_id FROM events WHERE position > $1 AND position <= $2",
    )
    .bind(after)
    .bind(upto)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(r,)| OwnedRoomId::try_from(r).map_err(|e| Error::Corrupt(e.to_string())))
        .collect()
}

/// Inserts an event known only by its content (an outlier: no stream position, no state),
/// unless it is already stored.
pub(crate) async fn insert_outlier(conn: &mut AnyConnection, pdu: &Pdu) -> Result<()> {
    sqlx::query(
        "INSERT INTO events (event_id, room_id, position, depth, event_type, state_key, sender, \
         origin_server_ts, pdu, state_group, rejected) \
         VALUES ($1, $2, NULL, $3, $4, $5, $6, $7, $8, NULL, 0) ON CONFLICT DO NOTHING",
    )
    .bind(pdu.event_id.as_str())
    .bind(pdu.room.as_str())
    .bind(i64::try_from(pdu.depth).unwrap_or(i64::MAX))
    .bind(pdu.kind.to_string())
    .bind(pdu.state_key.as_deref())
    .bind(pdu.sender.as_str())
    .bind(i64::from(pdu.origin_server_ts.get()))
    .bind(&*pdu.json)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records a user's current membership of a room without a log entry (remote members learnt
/// from a room's state when joining it).
pub(crate) async fn set_membership(
    conn: &mut AnyConnection,
    room: &RoomId,
    user: &UserId,
    membership: &str,
    event_id: &str,
    position: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO memberships (room_id, user_id, membership, event_id, position, forgotten) \
         VALUES ($1, $2, $3, $4, $5, 0) \
         ON CONFLICT (room_id, user_id) DO UPDATE SET membership = $3, event_id = $4, \
         position = $5",
    )
    .bind(room.as_str())
    .bind(user.as_str())
    .bind(membership)
    .bind(event_id)
    .bind(position)
    .execute(conn)
    .await?;
    Ok(())
}

/// Adds an entry to a user's membership log (a membership change sync must show).
pub(crate) async fn log_membership(
    conn: &mut AnyConnection,
    user: &UserId,
    position: i64,
    room: &RoomId,
    membership: &str,
    event_id: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO membership_log (user_id, position, room_id, membership, event_id) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(user.as_str())
    .bind(position)
    .bind(room.as_str())
    .bind(membership)
    .bind(event_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records (or replaces) an invite of a local user to a room this node is not in.
pub(crate) async fn insert_remote_invite(
    conn: &mut AnyConnection,
    room: &RoomId,
    user: &UserId,
    event_id: &str,
    version: &str,
    invite_state: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO remote_invites (room_id, user_id, event_id, room_version, invite_state) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (room_id, user_id) DO UPDATE SET \
         event_id = $3, room_version = $4, invite_state = $5",
    )
    .bind(room.as_str())
    .bind(user.as_str())
    .bind(event_id)
    .bind(version)
    .bind(invite_state)
    .execute(conn)
    .await?;
    Ok(())
}

/// An invite of a local user to a room this node is not in: (event ID, version, stripped state).
pub(crate) async fn remote_invite(
    pool: &AnyPool,
    room: &RoomId,
    user: &UserId,
) -> Result<Option<(String, String, String)>> {
    Ok(sqlx::query_as(
        "SELECT event_id, room_version, invite_state FROM remote_invites \
         WHERE room_id = $1 AND user_id = $2",
    )
    .bind(room.as_str())
    .bind(user.as_str())
    .fetch_optional(pool)
    .await?)
}

/// Forgets the invites to a room (joined or refused).
pub(crate) async fn delete_remote_invites(
    conn: &mut AnyConnection,
    room: &RoomId,
    user: Option<&UserId>,
) -> Result<()> {
    match user {
        Some(user) => {
            sqlx::query("DELETE FROM remote_invites WHERE room_id = $1 AND user_id = $2")
                .bind(room.as_str())
                .bind(user.as_str())
                .execute(conn)
                .await?;
        }
        None => {
            sqlx::query("DELETE FROM remote_invites WHERE room_id = $1")
                .bind(room.as_str())
                .execute(conn)
                .await?;
        }
    }
    Ok(())
}

/// The lowest stream position any event holds (0 when there are none).
pub(crate) async fn lowest_position(conn: &mut AnyConnection) -> Result<i64> {
    let row: (Option<i64>,) = sqlx::query_as("SELECT MIN(position) FROM events")
        .fetch_one(conn)
        .await?;
    Ok(row.0.unwrap_or(0))
}

/// The parents, missing from the timeline, of the room's `scan` oldest timeline events.
pub(crate) async fn backfill_frontier(
    pool: &AnyPool,
    room: &RoomId,
    scan: i64,
) -> Result<Vec<OwnedEventId>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT e.prev_event_id FROM event_edges e \
         JOIN (SELECT event_id FROM events WHERE room_id = $1 AND position IS NOT NULL \
               ORDER BY position ASC LIMIT $2) oldest ON oldest.event_id = e.event_id \
         LEFT JOIN events p ON p.event_id = e.prev_event_id \
         WHERE p.position IS NULL ORDER BY e.prev_event_id",
    )
    .bind(room.as_str())
    .bind(scan)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(id,)| OwnedEventId::try_from(id).map_err(|e| Error::Corrupt(e.to_string())))
        .collect()
}

/// Adds giving a stored outlier a place in the timeline, with its edges, to `batch`.
pub(crate) fn push_promote_outlier(batch: &mut Batch, pdu: &Pdu, position: i64, group: i64) {
    batch.push(
        "UPDATE events SET position = $1, state_group = $2, rejected = $3, replaces_state = $4 \
         WHERE event_id = $5",
        vec![
            position.into(),
            group.into(),
            if pdu.rejected { REJECTED } else { ACCEPTED }.into(),
            replaced_column(&pdu.replaced).into(),
            pdu.event_id.as_str().into(),
        ],
    );
    push_edges(batch, pdu);
}
