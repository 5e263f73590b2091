//! Presence of local users and of users of other servers, and local users' profiles.

use ruma::{OwnedUserId, ServerName, UserId, events::presence::PresenceEvent, serde::Raw};
use serde_json::json;

use crate::storage::Change;

use super::{Profile, UserData};
use crate::{Error, Result, StreamPosition, accounts::now_ms};

/// The longest status message kept.
const MAX_STATUS_BYTES: usize = 1024;

/// A user's presence as last set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// `online`, `unavailable` or `offline`.
    pub state: String,
    /// The status message, if any.
    pub status_msg: Option<String>,
    /// When the presence was last set, in ms since the epoch.
    pub last_active_ts: i64,
}

/// A presence row: user, state, status message, last active time.
type PresenceRow = (String, String, Option<String>, i64);

impl UserData {
    /// Sets `user`'s presence at a new stream position.
    pub async fn set_presence(
        &self,
        user: &UserId,
        state: &str,
        status_msg: Option<&str>,
    ) -> Result<StreamPosition> {
        self.store_presence(user, state, status_msg, now_ms()).await
    }

    /// Records the presence another server reports for one of its users, last active at
    /// `last_active_ts` (ms since the epoch).
    pub async fn set_remote_presence(
        &self,
        user: &UserId,
        state: &str,
        status_msg: Option<&str>,
        last_active_ts: i64,
    ) -> Result<StreamPosition> {
        self.store_presence(user, state, status_msg, last_active_ts.min(now_ms()))
            .await
    }

    async fn store_presence(
        &self,
        user: &UserId,
        state: &str,
        status_msg: Option<&str>,
        last_active_ts: i64,
    ) -> Result<StreamPosition> {
        if !matches!(state, "online" | "unavailable" | "offline") {
            return Err(Error::InvalidParam(format!("unknown presence {state}")));
        }
        if status_msg.is_some_and(|m| m.len() > MAX_STATUS_BYTES) {
            return Err(Error::InvalidParam("status_msg too long".into()));
        }
        let mut txn = self.storage.write().await?;
        let position = txn.next_position_for(&[Change::Presence]);
        sqlx::query("DELETE FROM presence WHERE user_id = $1")
            .bind(user.as_str())
            .execute(txn.conn())
            .await?;
        sqlx::query(
            "INSERT INTO presence (user_id, state, status_msg, last_active_ts, position) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(user.as_str())
        .bind(state)
        .bind(status_msg.map(str::to_owned))
        .bind(last_active_ts)
        .bind(position.0)
        .execute(txn.conn())
        .await?;
        txn.commit().await?;
        Ok(position)
    }

    /// Presence changes in `(since, upto]` of users of `server`, oldest first. The table holds
    /// one row per user, so this is bounded by the users who ever set a presence.
    pub async fn presence_changes_of(
        &self,
        server: &ServerName,
        since: StreamPosition,
        upto: StreamPosition,
    ) -> Result<Vec<(OwnedUserId, Presence)>> {
        Ok(self
            .changed_between(since, upto)
            .await?
            .into_iter()
            .filter_map(|(user, state, status_msg, last_active_ts)| {
                let user = OwnedUserId::try_from(user).ok()?;
                (user.server_name() == server).then_some((
                    user,
                    Presence {
                        state,
                        status_msg,
                        last_active_ts,
                    },
                ))
            })
            .collect())
    }

    /// The presence rows set in `(since, upto]`, oldest first.
    async fn changed_between(
        &self,
        since: StreamPosition,
        upto: StreamPosition,
    ) -> Result<Vec<PresenceRow>> {
        Ok(sqlx::query_as(
            "SELECT user_id, state, status_msg, last_active_ts FROM presence \
             WHERE position > $1 AND position <= $2 ORDER BY position",
        )
        .bind(since.0)
        .bind(upto.0)
        .fetch_all(self.storage.pool())
        .await?)
    }

    /// `user`'s presence, if ever set.
    pub async fn presence(&self, user: &UserId) -> Result<Option<Presence>> {
        let row: Option<(String, Option<String>, i64)> = sqlx::query_as(
            "SELECT state, status_msg, last_active_ts FROM presence WHERE user_id = $1",
        )
        .bind(user.as_str())
        .fetch_optional(self.storage.pool())
        .await?;
        Ok(row.map(|(state, status_msg, last_active_ts)| Presence {
            state,
            status_msg,
            last_active_ts,
        }))
    }

    /// Presence of `users` that changed in `(since, upto]`.
    pub async fn presence_since(
        &self,
        users: &[OwnedUserId],
        since: StreamPosition,
        upto: StreamPosition,
    ) -> Result<Vec<Raw<PresenceEvent>>> {
        let rows = self.changed_between(since, upto).await?;
        let now = now_ms();
        let mut out = Vec::new();
        for (user, state, status_msg, ts) in rows {
            if !users.iter().any(|u| u.as_str() == user) {
                continue;
            }
            let mut content = json!({
                "presence": state,
                "last_active_ago": (now - ts).max(0),
                "currently_active": state == "online",
            });
            if let Some(msg) = status_msg {
                content["status_msg"] = msg.into();
            }
            let event = json!({ "type": "m.presence", "sender": user, "content": content });
            out.push(Raw::from_json(serde_json::value::to_raw_value(&event)?));
        }
        Ok(out)
    }

    /// The profile of a local user (empty when never set).
    pub async fn profile(&self, user: &UserId) -> Result<Profile> {
        read_profile(self.storage.pool(), user).await
    }

    /// Replaces the display name (`None` removes it) and returns the new profile.
    pub async fn set_displayname(&self, user: &UserId, name: Option<&str>) -> Result<Profile> {
        if name.is_some_and(|n| n.len() > 256) {
            return Err(Error::InvalidParam("displayname too long".into()));
        }
        let mut profile = self.profile(user).await?;
        profile.displayname = name.map(str::to_owned);
        self.store_profile(user, &profile).await?;
        Ok(profile)
    }

    /// Replaces the avatar (`None` removes it) and returns the new profile.
    pub async fn set_avatar_url(
        &self,
        user: &UserId,
        url: Option<&ruma::MxcUri>,
    ) -> Result<Profile> {
        let mut profile = self.profile(user).await?;
        profile.avatar_url = url.map(ToOwned::to_owned);
        self.store_profile(user, &profile).await?;
        Ok(profile)
    }

    /// Erases the display name and avatar (for a deactivated account).
    pub async fn erase_profile(&self, user: &UserId) -> Result<()> {
        self.store_profile(user, &Profile::default()).await
    }

    async fn store_profile(&self, user: &UserId, profile: &Profile) -> Result<()> {
        let mut txn = self.storage.write().await?;
        sqlx::query("DELETE FROM profiles WHERE user_id = $1")
            .bind(user.as_str())
            .execute(txn.conn())
            .await?;
        sqlx::query("INSERT INTO profiles (user_id, displayname, avatar_url) VALUES ($1, $2, $3)")
            .bind(user.as_str())
            .bind(profile.displayname.clone())
            .bind(profile.avatar_url.as_ref().map(|u| u.to_string()))
            .execute(txn.conn())
            .await?;
        txn.commit().await?;
        Ok(())
    }
}

/// The profile of a local user (empty when never set); rooms read it to fill member events.
pub(crate) async fn read_profile(pool: &sqlx::AnyPool, user: &UserId) -> Result<Profile> {
    let row: Option<(Option<String>, Option<String>)> =
        sqlx::query_as("SELECT displayname, avatar_url FROM profiles WHERE user_id = $1")
            .bind(user.as_str())
            .fetch_optional(pool)
            .await?;
    let Some((displayname, avatar_url)) = row else {
        return Ok(Profile::default());
    };
    Ok(Profile {
        displayname,
        avatar_url: avatar_url.map(Into::into),
    })
}
