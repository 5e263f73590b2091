//! The SQL of room aliases and the public room directory.

use ruma::{OwnedRoomId, RoomId, UserId};
use sqlx::AnyPool;

use crate::{Error, Result};

/// The room an alias points to.
pub(crate) async fn alias_room(
    pool: &AnyPool,
    alias: &str,
) -> Result<Option<(OwnedRoomId, String)>> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT room_id, creator FROM room_aliases WHERE alias = $1")
            .bind(alias)
            .fetch_optional(pool)
            .await?;
    row.map(|(r, c)| {
        OwnedRoomId::try_from(r)
            .map(|r| (r, c))
            .map_err(|e| Error::Corrupt(e.to_string()))
    })
    .transpose()
}

/// Adds an alias; false when it is taken.
pub(crate) async fn insert_alias(
    pool: &AnyPool,
    alias: &str,
    room: &RoomId,
    creator: &UserId,
) -> Result<bool> {
    let done = sqlx::query(
        "INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1, $2, $3) \
         ON CONFLICT (alias) DO NOTHING",
    )
    .bind(alias)
    .bind(room.as_str())
    .bind(creator.as_str())
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Removes an alias.
pub(crate) async fn delete_alias(pool: &AnyPool, alias: &str) -> Result<()> {
    sqlx::query("DELETE FROM room_aliases WHERE alias = $1")
        .bind(alias)
        .execute(pool)
        .await?;
    Ok(())
}

/// The local aliases of a room.
pub(crate) async fn room_aliases(pool: &AnyPool, room: &RoomId) -> Result<Vec<String>> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias")
            .bind(room.as_str())
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().map(|(a,)| a).collect())
}

/// Sets whether a room is listed in the public directory.
pub(crate) async fn set_published(pool: &AnyPool, room: &RoomId, published: bool) -> Result<()> {
    sqlx::query("UPDATE rooms SET published = $1 WHERE room_id = $2")
        .bind(i64::from(published))
        .bind(room.as_str())
        .execute(pool)
        .await?;
    Ok(())
}

/// Rooms listed in the public directory, or all rooms.
pub(crate) async fn rooms(pool: &AnyPool, published_only: bool) -> Result<Vec<OwnedRoomId>> {
    let sql = if published_only {
        "SELECT room_id FROM rooms WHERE published = 1 ORDER BY room_id"
    } else {
        "SELECT room_id FROM rooms ORDER BY room_id"
    };
    let rows: Vec<(String,)> = sqlx::query_as(sql).fetch_all(pool).await?;
    rows.into_iter()
        .map(|(r,)| OwnedRoomId::try_from(r).map_err(|e| Error::Corrupt(e.to_string())))
        .collect()
}
