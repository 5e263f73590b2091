//! Server-side key backup: versions (only the latest takes new keys) and the room keys in
//! them, keeping the better copy of each session as the spec orders them.

use ruma::UserId;
use serde_json::{Map, Value, json};

use super::E2ee;
use crate::{Error, Result};

/// A backup version's metadata as `GET /room_keys/version` answers it.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupVersion {
    /// The version, as a decimal string.
    pub version: String,
    /// The algorithm.
    pub algorithm: String,
    /// The algorithm's data.
    pub auth_data: Value,
    /// How many keys it holds.
    pub count: i64,
    /// Changes whenever its keys change.
    pub etag: String,
}

/// Keys were sent for a version that is not the latest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrongVersion {
    /// The latest version, if any.
    pub current: Option<String>,
}

/// Which keys a read or delete covers.
#[derive(Debug, Clone, Copy)]
pub enum KeyScope<'a> {
    /// Every room.
    All,
    /// One room.
    Room(&'a str),
    /// One session of one room.
    Session(&'a str, &'a str),
}

impl KeyScope<'_> {
    fn clause(&self) -> &'static str {
        match self {
            KeyScope::All => "",
            KeyScope::Room(_) => " AND room_id = $3",
            KeyScope::Session(_, _) => " AND room_id = $3 AND session_id = $4",
        }
    }
}

fn parse_version(version: &str) -> Result<i64> {
    version
        .parse::<i64>()
        .map_err(|_| Error::NotFound("Unknown backup version".into()))
}

impl E2ee {
    async fn latest_version(&self, user: &UserId) -> Result<Option<i64>> {
        let row: (Option<i64>,) = sqlx::query_as(
            "SELECT MAX(version) FROM backup_versions WHERE user_id = $1 AND deleted = 0",
        )
        .bind(user.as_str())
        .fetch_one(self.storage.pool())
        .await?;
        Ok(row.0)
    }

    /// Creates a new backup version, which becomes the latest.
    pub async fn create_backup(
        &self,
        user: &UserId,
        algorithm: &str,
        auth_data: &Value,
    ) -> Result<String> {
        let mut txn = self.storage.write().await?;
        let last: (Option<i64>,) =
            sqlx::query_as("SELECT MAX(version) FROM backup_versions WHERE user_id = $1")
                .bind(user.as_str())
                .fetch_one(txn.conn())
                .await?;
        let version = last.0.unwrap_or(0) + 1;
        sqlx::query(
            "INSERT INTO backup_versions (user_id, version, algorithm, auth_data, etag, deleted) \
             VALUES ($1, $2, $3, $4, 0, 0)",
        )
        .bind(user.as_str())
        .bind(version)
        .bind(algorithm)
        .bind(serde_json::to_string(auth_data)?)
        .execute(txn.conn())
        .await?;
        txn.commit().await?;
        Ok(version.to_string())
    }

    /// A backup version (the latest when `version` is `None`); `NotFound` when there is none.
    pub async fn backup(&self, user: &UserId, version: Option<&str>) -> Result<BackupVersion> {
        let version = match version {
            Some(v) => parse_version(v)?,
            None => self
                .latest_version(user)
                .await?
                .ok_or_else(|| Error::NotFound("No current backup version".into()))?,
        };
        let row: Option<(String, String, i64)> = sqlx::query_as(
            "SELECT algorithm, auth_data, etag FROM backup_versions \
             WHERE user_id = $1 AND version = $2 AND deleted = 0",
        )
        .bind(user.as_str())
        .bind(version)
        .fetch_optional(self.storage.pool())
        .await?;
        let (algorithm, auth_data, etag) =
            row.ok_or_else(|| Error::NotFound("Unknown backup version".into()))?;
        let count: (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM backup_keys WHERE user_id = $1 AND version = $2")
                .bind(user.as_str())
                .bind(version)
                .fetch_one(self.storage.pool())
                .await?;
        Ok(BackupVersion {
            version: version.to_string(),
            algorithm,
            auth_data: serde_json::from_str(&auth_data)?,
            count: count.0,
            etag: etag.to_string(),
        })
    }

    /// Replaces a version's auth data; the algorithm cannot change.
    pub async fn update_backup(
        &self,
        user: &UserId,
        version: &str,
        algorithm: &str,
        auth_data: &Value,
    ) -> Result<()> {
        let current = self.backup(user, Some(version)).await?;
        if current.algorithm != algorithm {
            return Err(Error::InvalidParam(
                "the algorithm of a backup cannot change".into(),
            ));
        }
        sqlx::query(
            "UPDATE backup_versions SET auth_data = $1 WHERE user_id = $2 AND version = $3",
        )
        .bind(serde_json::to_string(auth_data)?)
        .bind(user.as_str())
        .bind(parse_version(version)?)
        .execute(self.storage.pool())
        .await?;
        Ok(())
    }

    /// Deletes a version and its keys.
    pub async fn delete_backup(&self, user: &UserId, version: &str) -> Result<()> {
        self.backup(user, Some(version)).await?;
        let version = parse_version(version)?;
        let mut txn = self.storage.write().await?;
        sqlx::query("UPDATE backup_versions SET deleted = 1 WHERE user_id = $1 AND version = $2")
            .bind(user.as_str())
            .bind(version)
            .execute(txn.conn())
            .await?;
        sqlx::query("DELETE FROM backup_keys WHERE user_id = $1 AND version = $2")
            .bind(user.as_str())
            .bind(version)
            .execute(txn.conn())
            .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Stores keys (room → session → key data) into the latest version, keeping the better
    /// copy of sessions already there. Returns `(count, etag)`, or the wrong-version answer.
    pub async fn put_backup_keys(
        &self,
        user: &UserId,
        version: &str,
        rooms: &Map<String, Value>,
    ) -> Result<std::result::Result<(i64, String), WrongVersion>> {
        let latest = self.latest_version(user).await?;
        let wanted = version.parse::<i64>().ok();
        if wanted.is_none() || latest != wanted {
            if latest.is_none() && wanted.is_some() {
                // Sending to a version that never existed is a 404, as for reads.
                self.backup(user, Some(version)).await?;
            }
            return Ok(Err(WrongVersion {
                current: latest.map(|v| v.to_string()),
            }));
        }
        let version = wanted.unwrap_or_default();
        let mut txn = self.storage.write().await?;
        let mut changed = false;
        for (room, sessions) in rooms {
            let Some(sessions) = sessions.as_object() else {
                return Err(Error::BadJson("sessions must be an object".into()));
            };
            for (session, data) in sessions {
                let old: Option<(String,)> = sqlx::query_as(
                    "SELECT key_json FROM backup_keys WHERE user_id = $1 AND version = $2 \
                     AND room_id = $3 AND session_id = $4",
                )
                .bind(user.as_str())
                .bind(version)
                .bind(room)
                .bind(session)
                .fetch_optional(txn.conn())
                .await?;
                if let Some((old,)) = &old {
                    let old: Value = serde_json::from_str(old)?;
                    if !better(data, &old) {
                        continue;
                    }
                }
                sqlx::query(
                    "DELETE FROM backup_keys WHERE user_id = $1 AND version = $2 \
                     AND room_id = $3 AND session_id = $4",
                )
                .bind(user.as_str())
                .bind(version)
                .bind(room)
                .bind(session)
                .execute(txn.conn())
                .await?;
                sqlx::query(
                    "INSERT INTO backup_keys (user_id, version, room_id, session_id, key_json) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(user.as_str())
                .bind(version)
                .bind(room)
                .bind(session)
                .bind(serde_json::to_string(data)?)
                .execute(txn.conn())
                .await?;
                changed = true;
            }
        }
        if changed {
            sqlx::query(
                "UPDATE backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2",
            )
            .bind(user.as_str())
            .bind(version)
            .execute(txn.conn())
            .await?;
        }
        txn.commit().await?;
        let info = self.backup(user, Some(&version.to_string())).await?;
        Ok(Ok((info.count, info.etag)))
    }

    /// Keys of a version in `scope`, as room → `{"sessions": {session → key data}}`.
    pub async fn backup_keys(
        &self,
        user: &UserId,
        version: &str,
        scope: KeyScope<'_>,
    ) -> Result<Map<String, Value>> {
        self.backup(user, Some(version)).await?;
        let sql = format!(
            "SELECT room_id, session_id, key_json FROM backup_keys \
             WHERE user_id = $1 AND version = $2{}",
            scope.clause()
        );
        let mut query = sqlx::query_as::<_, (String, String, String)>(&sql)
            .bind(user.as_str())
            .bind(parse_version(version)?);
        match scope {
            KeyScope::All => {}
            KeyScope::Room(room) => query = query.bind(room),
            KeyScope::Session(room, session) => query = query.bind(room).bind(session),
        }
        let rows = query.fetch_all(self.storage.pool()).await?;
        let mut out = Map::new();
        for (room, session, key) in rows {
            let entry = out.entry(room).or_insert_with(|| json!({ "sessions": {} }));
            entry["sessions"][session] = serde_json::from_str(&key)?;
        }
        Ok(out)
    }

    /// Deletes keys of a version in `scope`; returns `(count, etag)` afterwards.
    pub async fn delete_backup_keys(
        &self,
        user: &UserId,
        version: &str,
        scope: KeyScope<'_>,
    ) -> Result<(i64, String)> {
        self.backup(user, Some(version)).await?;
        let number = parse_version(version)?;
        let sql = format!(
            "DELETE FROM backup_keys WHERE user_id = $1 AND version = $2{}",
            scope.clause()
        );
        let mut txn = self.storage.write().await?;
        let mut query = sqlx::query(&sql).bind(user.as_str()).bind(number);
        match scope {
            KeyScope::All => {}
            KeyScope::Room(room) => query = query.bind(room),
            KeyScope::Session(room, session) => query = query.bind(room).bind(session),
        }
        let done = query.execute(txn.conn()).await?;
        if done.rows_affected() > 0 {
            sqlx::query(
                "UPDATE backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2",
            )
            .bind(user.as_str())
            .bind(number)
            .execute(txn.conn())
            .await?;
        }
        txn.commit().await?;
        let info = self.backup(user, Some(version)).await?;
        Ok((info.count, info.etag))
    }
}

/// Whether `new` should replace `old`: a verified copy beats an unverified one, then the lower
/// `first_message_index`, then the lower `forwarded_count`.
fn better(new: &Value, old: &Value) -> bool {
    let verified = |v: &Value| {
        v.get("is_verified")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    let index = |v: &Value| {
        v.get("first_message_index")
            .and_then(Value::as_u64)
            .unwrap_or(u64::MAX)
    };
    let forwarded = |v: &Value| {
        v.get("forwarded_count")
            .and_then(Value::as_u64)
            .unwrap_or(u64::MAX)
    };
    if verified(new) != verified(old) {
        return verified(new);
    }
    if index(new) != index(old) {
        return index(new) < index(old);
    }
    forwarded(new) < forwarded(old)
}
