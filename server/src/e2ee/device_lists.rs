//! Whose device lists a user tracks: the users sharing an encrypted room with them, at any
//! stream position. Comparing two positions gives who started sharing one (`changed`) and who
//! stopped (`left`), for `/keys/changes` and `/sync`'s `device_lists`.

use std::collections::{BTreeSet, HashMap};

use ruma::{OwnedUserId, UserId};

use super::E2ee;
use crate::{Error, Result, StreamPosition};

/// How the users sharing encrypted rooms with one user changed between two positions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharingChange {
    /// Users who share an encrypted room at the later position but did not at the earlier one.
    pub started: BTreeSet<OwnedUserId>,
    /// Users who shared an encrypted room at the earlier position but no longer do.
    pub stopped: BTreeSet<OwnedUserId>,
}

impl E2ee {
    /// Users (other than `user`) who share an encrypted room with `user` at `at`: both joined
    /// to a room whose state has an `m.room.encryption` event.
    pub async fn encrypted_room_peers(
        &self,
        user: &UserId,
        at: StreamPosition,
    ) -> Result<BTreeSet<OwnedUserId>> {
        let pool = self.storage.pool();
        let own: Vec<(String, String)> = sqlx::query_as(
            "SELECT room_id, membership FROM membership_log WHERE user_id = $1 \
             AND position <= $2 ORDER BY position",
        )
        .bind(user.as_str())
        .bind(at.0)
        .fetch_all(pool)
        .await?;
        let mut peers = BTreeSet::new();
        for room in joined(own) {
            let (encrypted,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM events WHERE room_id = $1 \
                 AND event_type = 'm.room.encryption' AND state_key = '' AND rejected = 0 \
                 AND position <= $2",
            )
            .bind(&room)
            .bind(at.0)
            .fetch_one(pool)
            .await?;
            if encrypted == 0 {
                continue;
            }
            let members: Vec<(String, String)> = sqlx::query_as(
                "SELECT user_id, membership FROM membership_log WHERE room_id = $1 \
                 AND position <= $2 ORDER BY position",
            )
            .bind(&room)
            .bind(at.0)
            .fetch_all(pool)
            .await?;
            for member in joined(members) {
                let member = OwnedUserId::try_from(member)
                    .map_err(|e| Error::Corrupt(format!("user id: {e}")))?;
                if member != user {
                    peers.insert(member);
                }
            }
        }
        Ok(peers)
    }

    /// Who started and who stopped sharing an encrypted room with `user` between `from` and
    /// `to`.
    pub async fn sharing_change(
        &self,
        user: &UserId,
        from: StreamPosition,
        to: StreamPosition,
    ) -> Result<SharingChange> {
        let before = self.encrypted_room_peers(user, from).await?;
        let after = self.encrypted_room_peers(user, to).await?;
        Ok(SharingChange {
            started: after.difference(&before).cloned().collect(),
            stopped: before.difference(&after).cloned().collect(),
        })
    }

    /// Whether a room turned encrypted (an `m.room.encryption` event) in `(since, upto]`; with
    /// the membership changes of that range, this decides whether sharing may have changed.
    pub async fn encryption_enabled_between(
        &self,
        since: StreamPosition,
        upto: StreamPosition,
    ) -> Result<bool> {
        let (encryption,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM events WHERE event_type = 'm.room.encryption' \
             AND position > $1 AND position <= $2",
        )
        .bind(since.0)
        .bind(upto.0)
        .fetch_one(self.storage.pool())
        .await?;
        Ok(encryption > 0)
    }
}

/// The keys whose last membership in a log (oldest first) is `join`.
fn joined(log: Vec<(String, String)>) -> Vec<String> {
    let mut last: HashMap<String, String> = HashMap::new();
    for (key, membership) in log {
        last.insert(key, membership);
    }
    let mut keys: Vec<String> = last
        .into_iter()
        .filter(|(_, m)| m == "join")
        .map(|(k, _)| k)
        .collect();
    keys.sort();
    keys
}
