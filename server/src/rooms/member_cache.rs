//! Users' memberships as last read, kept until a membership may have changed.
//!
//! Every sync reads the user's membership log and, per room it shows, the user's current
//! membership there; between membership changes both answers stay the same. Each answer is
//! kept with the committed position it was read at, and used again while no write marked
//! [`Change::Memberships`] after that position (every write that stores a membership does).

use std::{collections::HashMap, sync::Mutex};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};

use super::{Rooms, store};
use crate::{Result, StreamPosition, storage::Change};

/// Answers kept, of each kind, at most; past that the kind starts again.
const MAX_ENTRIES: usize = 10_000;

/// A user's membership of a room: the membership and its position.
type Current = Option<(String, i64)>;

/// The kept answers, each with the committed position it was read at.
#[derive(Default)]
pub(crate) struct MemberCache {
    logs: Mutex<HashMap<OwnedUserId, (i64, Vec<store::MembershipChange>)>>,
    current: Mutex<HashMap<(OwnedRoomId, OwnedUserId), (i64, Current)>>,
}

impl Rooms {
    /// Whether nothing that stores a membership committed after `read_at`.
    fn members_unchanged_since(&self, read_at: i64) -> bool {
        !self
            .storage
            .changed_since(Change::Memberships, StreamPosition(read_at))
    }

    /// Every membership change of `user` up to `upto`, oldest first.
    pub(crate) async fn membership_log(
        &self,
        user: &UserId,
        upto: i64,
    ) -> Result<Vec<store::MembershipChange>> {
        let up_to = |log: &[store::MembershipChange]| -> Vec<store::MembershipChange> {
            log.iter().filter(|c| c.position <= upto).cloned().collect()
        };
        if let Ok(logs) = self.inner.members.logs.lock()
            && let Some((read_at, log)) = logs.get(user)
            && self.members_unchanged_since(*read_at)
        {
            return Ok(up_to(log));
        }
        // Read before the query: whatever commits after this is caught by its mark.
        let read_at = self.notifier.current().0;
        let log = store::membership_log(self.storage.pool(), user, i64::MAX).await?;
        let out = up_to(&log);
        if let Ok(mut logs) = self.inner.members.logs.lock() {
            if logs.len() >= MAX_ENTRIES {
                logs.clear();
            }
            logs.insert(user.to_owned(), (read_at, log));
        }
        Ok(out)
    }

    /// `user`'s current membership of `room` and its position.
    pub(crate) async fn membership_now(&self, room: &RoomId, user: &UserId) -> Result<Current> {
        let key = (room.to_owned(), user.to_owned());
        if let Ok(current) = self.inner.members.current.lock()
            && let Some((read_at, membership)) = current.get(&key)
            && self.members_unchanged_since(*read_at)
        {
            return Ok(membership.clone());
        }
        let read_at = self.notifier.current().0;
        let membership = store::membership_at(self.storage.pool(), room, user).await?;
        if let Ok(mut current) = self.inner.members.current.lock() {
            if current.len() >= MAX_ENTRIES {
                current.clear();
            }
            current.insert(key, (read_at, membership.clone()));
        }
        Ok(membership)
    }
}
