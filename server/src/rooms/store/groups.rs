//! The state groups' SQL: snapshots and deltas, and the delta chains read back in one query.

use ruma::{OwnedEventId, RoomId, events::StateEventType};
use sqlx::AnyPool;

use crate::{Error, Result, storage::Batch};

/// The delta chain a state group may always grow to before a snapshot is written.
pub(crate) const MIN_DELTA_CHAIN: i64 = 32;
/// The longest delta chain a load follows; a longer one is taken for corruption (a cycle).
pub(crate) const MAX_CHAIN_WALK: i64 = 1 << 22;

/// Whether a state change over a group whose chain is `chain_len` long should be written as a
/// snapshot of the `state_len` entries of the new state rather than as a delta.
///
/// A chain may grow to as many links as the state has entries (at least [`MIN_DELTA_CHAIN`]):
/// each snapshot then comes after at least as many one-entry deltas as it has rows, so the rows
/// of a room's state stay within about twice its number of state changes, where a snapshot
/// every fixed number of changes would store the whole state again and again (quadratic in a
/// room with large state). A chain is read in one query, so its length costs rows, not round
/// trips, and a load reads at most about twice the entries of the state it returns.
pub(crate) fn needs_snapshot(chain_len: i64, state_len: usize) -> bool {
    let allowed = MIN_DELTA_CHAIN.max(i64::try_from(state_len).unwrap_or(i64::MAX));
    chain_len.saturating_add(1) > allowed
}

/// A state group to write.
pub(crate) struct NewGroup {
    /// Its ID.
    pub(crate) id: i64,
    /// The group it is a delta over (None: a snapshot).
    pub(crate) prev: Option<i64>,
    /// Length of the delta chain down to a snapshot.
    pub(crate) chain_len: i64,
    /// Its entries (the delta, or the whole state for a snapshot).
    pub(crate) entries: Vec<((StateEventType, String), OwnedEventId)>,
}

/// Adds a state group with its entries to `batch`.
pub(crate) fn push_group(batch: &mut Batch, room: &RoomId, group: &NewGroup) {
    batch.push(
        "INSERT INTO state_groups (group_id, room_id, prev_group, chain_len) VALUES ($1, $2, $3, $4)",
        vec![
            group.id.into(),
            room.as_str().into(),
            group.prev.into(),
            group.chain_len.into(),
        ],
    );
    for ((kind, key), event_id) in &group.entries {
        batch.push(
            "INSERT INTO state_group_entries (group_id, event_type, state_key, event_id) \
             VALUES ($1, $2, $3, $4)",
            vec![
                group.id.into(),
                kind.to_string().into(),
                key.as_str().into(),
                event_id.as_str().into(),
            ],
        );
    }
}

/// The largest state group ID in use.
pub(crate) async fn max_group_id(pool: &AnyPool) -> Result<i64> {
    let row: (Option<i64>,) = sqlx::query_as("SELECT MAX(group_id) FROM state_groups")
        .fetch_one(pool)
        .await?;
    Ok(row.0.unwrap_or(0))
}

/// The recursive query walking a delta chain from the group `$1` down, at most `$2` links; each
/// row is `(group_id, prev_group, depth)`, depth 0 being `$1` itself.
macro_rules! chain_cte {
    () => {
        "WITH RECURSIVE chain (group_id, prev_group, depth) AS ( \
             SELECT group_id, prev_group, CAST(0 AS BIGINT) FROM state_groups \
             WHERE group_id = $1 \
             UNION ALL \
             SELECT s.group_id, s.prev_group, c.depth + 1 FROM state_groups s \
             JOIN chain c ON s.group_id = c.prev_group WHERE c.depth + 1 < $2) "
    };
}

/// The groups of `group`'s delta chain, from `group` itself down to its snapshot, each with
/// the group it is a delta over; at most `limit` of them.
pub(crate) async fn group_chain(
    pool: &AnyPool,
    group: i64,
    limit: i64,
) -> Result<Vec<(i64, Option<i64>)>> {
    let rows: Vec<(i64, Option<i64>)> = sqlx::query_as(concat!(
        chain_cte!(),
        "SELECT group_id, prev_group FROM chain ORDER BY depth"
    ))
    .bind(group)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// The entries of the top `links` groups of `group`'s delta chain, each with its depth below
/// `group` (0 for `group` itself).
pub(crate) async fn chain_entries(
    pool: &AnyPool,
    group: i64,
    links: i64,
) -> Result<Vec<(i64, (StateEventType, String), OwnedEventId)>> {
    let rows: Vec<(i64, String, String, String)> = sqlx::query_as(concat!(
        chain_cte!(),
        "SELECT c.depth, e.event_type, e.state_key, e.event_id \
         FROM chain c JOIN state_group_entries e ON e.group_id = c.group_id"
    ))
    .bind(group)
    .bind(links)
    .fetch_all(pool)
    .await?;
    let mut entries = Vec::with_capacity(rows.len());
    for (depth, kind, key, id) in rows {
        let id = OwnedEventId::try_from(id).map_err(|e| Error::Corrupt(e.to_string()))?;
        entries.push((depth, (StateEventType::from(kind), key), id));
    }
    Ok(entries)
}
