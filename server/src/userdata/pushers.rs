//! Pushers: stored as the client gave them, replaced or removed by app ID and push key.

use ruma::UserId;
use serde_json::Value;

use super::UserData;
use crate::{Error, Result};

impl UserData {
    /// The user's pushers, as JSON objects in the shape `GET /pushers` returns.
    pub async fn pushers(&self, user: &UserId) -> Result<Vec<Value>> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT pusher_json FROM pushers WHERE user_id = $1 ORDER BY app_id")
                .bind(user.as_str())
                .fetch_all(self.storage.pool())
                .await?;
        rows.into_iter()
            .map(|(p,)| serde_json::from_str(&p).map_err(Error::from))
            .collect()
    }

    /// Adds or replaces a pusher (`Some(json)`), or removes it (`None`).
    pub async fn set_pusher(
        &self,
        user: &UserId,
        app_id: &str,
        pushkey: &str,
        pusher: Option<&Value>,
    ) -> Result<()> {
        let mut txn = self.storage.write().await?;
        sqlx::query("DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3")
            .bind(user.as_str())
            .bind(app_id)
            .bind(pushkey)
            .execute(txn.conn())
            .await?;
        if let Some(pusher) = pusher {
            sqlx::query(
                "INSERT INTO pushers (user_id, app_id, pushkey, pusher_json) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(user.as_str())
            .bind(app_id)
            .bind(pushkey)
            .bind(serde_json::to_string(pusher)?)
            .execute(txn.conn())
            .await?;
        }
        txn.commit().await?;
        Ok(())
    }
}
