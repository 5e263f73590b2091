//! The SQL of redactions that arrived before the event they redact.

use ruma::{OwnedEventId, RoomId};
use sqlx::AnyPool;

use crate::{Error, Result, storage::Batch};

/// Adds keeping `redaction` of `target` until the target arrives to `batch`.
pub(crate) fn push_pending(
    batch: &mut Batch,
    room: &RoomId,
    target: &OwnedEventId,
    redaction: &OwnedEventId,
) {
    batch.push(
        "INSERT INTO pending_redactions (target_id, redaction_id, room_id) VALUES ($1, $2, $3) \
         ON CONFLICT DO NOTHING",
        vec![
            target.as_str().into(),
            redaction.as_str().into(),
            room.as_str().into(),
        ],
    );
}

/// Adds forgetting the pending redactions of `target` to `batch`.
pub(crate) fn push_delete_pending(batch: &mut Batch, target: &OwnedEventId) {
    batch.push(
        "DELETE FROM pending_redactions WHERE target_id = $1",
        vec![target.as_str().into()],
    );
}

/// The redactions of `room` kept for `target`.
pub(crate) async fn pending_for(
    pool: &AnyPool,
    room: &RoomId,
    target: &OwnedEventId,
) -> Result<Vec<OwnedEventId>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT redaction_id FROM pending_redactions WHERE target_id = $1 AND room_id = $2 \
         ORDER BY redaction_id",
    )
    .bind(target.as_str())
    .bind(room.as_str())
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(id,)| OwnedEventId::try_from(id).map_err(|e| Error::Corrupt(e.to_string())))
        .collect()
}
