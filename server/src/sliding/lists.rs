//! A user's rooms in the order lists show them, and the windows the lists' ranges cut out.
//!
//! The order comes from the membership index joined with each room's `bump_position`: no
//! event of any room is read to sort, so sorting 10,000 rooms costs one query and a sort.

use std::collections::HashSet;

use ruma::{OwnedRoomId, api::client::sync::sync_events::v5::request::ListFilters};

use crate::rooms::streams::ListedRoom;

/// One room of the user's list, with what sorts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The room.
    pub(crate) room: OwnedRoomId,
    /// The user's membership in it.
    pub(crate) membership: String,
    /// The position of the event that set that membership.
    pub(crate) membership_position: i64,
    /// The position clients sort the room by (`bump_stamp`).
    pub(crate) bump: i64,
}

/// The user's rooms, most recently active first (ties by room ID, so the order is stable).
///
/// A joined room sorts by its newest message-like event, or by the join when it has none held
/// here; any other membership sorts by the event that set it, so an old room one is invited to
/// shows when the invite came.
pub(crate) fn ordered(rows: Vec<ListedRoom>) -> Vec<Entry> {
    let mut entries: Vec<Entry> = rows
        .into_iter()
        .map(|(room, membership, membership_position, bump_position)| {
            let bump = if membership == "join" && bump_position > 0 {
                bump_position
            } else {
                membership_position
            };
            Entry {
                room,
                membership,
                membership_position,
                bump,
            }
        })
        .collect();
    entries.sort_by(|a, b| b.bump.cmp(&a.bump).then_with(|| a.room.cmp(&b.room)));
    entries
}

/// What a list's filters need to know of a room beyond its membership.
pub(crate) struct Facts<'a> {
    /// Rooms the user's `m.direct` account data names.
    pub(crate) direct: &'a HashSet<OwnedRoomId>,
}

/// Whether `entry` passes `filters`.
pub(crate) fn passes(entry: &Entry, filters: Option<&ListFilters>, facts: &Facts<'_>) -> bool {
    let Some(filters) = filters else {
        return true;
    };
    if let Some(want) = filters.is_invite
        && want != (entry.membership == "invite")
    {
        return false;
    }
    if let Some(want) = filters.is_dm
        && want != facts.direct.contains(&entry.room)
    {
        return false;
    }
    true
}

/// The indices a list's ranges cover in a list of `count` rooms: each range clamped to the
/// list (a window past its end is empty), overlapping ranges counted once, in order.
pub(crate) fn window(ranges: &[(u64, u64)], count: usize) -> Vec<usize> {
    let mut covered = Vec::new();
    let mut seen = HashSet::new();
    for &(start, end) in ranges {
        let Ok(start) = usize::try_from(start) else {
            continue;
        };
        if start >= count {
            continue;
        }
        let end = usize::try_from(end).unwrap_or(usize::MAX).min(count - 1);
        for i in start..=end {
            if seen.insert(i) {
                covered.push(i);
            }
        }
    }
    covered.sort_unstable();
    covered
}

#[cfg(test)]
mod tests {
    use ruma::{RoomId, api::client::sync::sync_events::v5::request::ListFilters};

    use super::*;

    fn row(room: &str, membership: &str, at: i64, bump: i64) -> ListedRoom {
        (
            RoomId::parse(room).expect("room id"),
            membership.to_owned(),
            at,
            bump,
        )
    }

    #[track_caller]
    fn check_order(rows: Vec<ListedRoom>, expected: &[&str]) {
        let got: Vec<String> = ordered(rows)
            .into_iter()
            .map(|e| e.room.to_string())
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn newest_message_first_and_invites_by_their_invite() {
        check_order(
            vec![
                row("!old:x", "join", 5, 10),
                row("!new:x", "join", 6, 90),
                row("!invited:x", "invite", 50, 0),
                // Joined over federation, no message held yet: sorted by the join.
                row("!quiet:x", "join", 70, 0),
            ],
            &["!new:x", "!quiet:x", "!invited:x", "!old:x"],
        );
        // Ties fall back to the room ID so every response agrees.
        check_order(
            vec![row("!b:x", "join", 1, 7), row("!a:x", "join", 1, 7)],
            &["!a:x", "!b:x"],
        );
    }

    #[track_caller]
    fn check_window(ranges: &[(u64, u64)], count: usize, expected: &[usize]) {
        assert_eq!(window(ranges, count), expected);
    }

    #[test]
    fn ranges_are_clamped_and_merged() {
        check_window(&[(0, 2)], 10, &[0, 1, 2]);
        check_window(&[(0, 99)], 3, &[0, 1, 2]);
        check_window(&[(5, 9)], 3, &[]);
        check_window(&[(0, 0)], 0, &[]);
        check_window(&[(0, 1), (1, 3)], 10, &[0, 1, 2, 3]);
        check_window(&[(8, 9), (0, 1)], 10, &[0, 1, 8, 9]);
        check_window(&[(0, u64::MAX)], 4, &[0, 1, 2, 3]);
        check_window(&[(u64::MAX, u64::MAX)], 4, &[]);
    }

    #[test]
    fn filters_pick_invites_and_direct_rooms() {
        let entries = ordered(vec![
            row("!dm:x", "join", 1, 3),
            row("!inv:x", "invite", 2, 0),
            row("!group:x", "join", 1, 1),
        ]);
        let direct: HashSet<OwnedRoomId> = [RoomId::parse("!dm:x").expect("room id")].into();
        let facts = Facts { direct: &direct };
        let pick = |filters: ListFilters| -> Vec<String> {
            entries
                .iter()
                .filter(|e| passes(e, Some(&filters), &facts))
                .map(|e| e.room.to_string())
                .collect()
        };
        let mut invites = ListFilters::default();
        invites.is_invite = Some(true);
        assert_eq!(pick(invites), ["!inv:x"]);
        let mut not_invites = ListFilters::default();
        not_invites.is_invite = Some(false);
        assert_eq!(pick(not_invites), ["!dm:x", "!group:x"]);
        let mut dms = ListFilters::default();
        dms.is_dm = Some(true);
        assert_eq!(pick(dms), ["!dm:x"]);
        assert_eq!(pick(ListFilters::default()).len(), 3);
    }
}
