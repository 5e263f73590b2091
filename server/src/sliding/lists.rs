//! A user's rooms in the order lists show them, and the windows the lists' ranges cut out.
//!
//! The order comes from the membership index joined with each room's `bump_position`: no
//! event of any room is read to sort, so sorting 10,000 rooms costs one query and a sort.

use std::collections::{HashMap, HashSet};

use ruma::{OwnedRoomId, api::client::sync::sync_events::v5::request::ListFilters};

use crate::rooms::streams::{ListedRoom, RoomKind};

/// One room of the user's list, with what sorts and filters it.
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
    /// Its type and encryption (None: an invite to a room not held here, until its stripped
    /// state is read).
    pub(crate) kind: Option<RoomKind>,
}

/// The user's rooms, most recently active first (ties by room ID, so the order is stable).
///
/// A joined room sorts by its newest message-like event, or by the join when it has none held
/// here; any other membership sorts by the event that set it, so an old room one is invited to
/// shows when the invite came.
pub(crate) fn ordered(rows: Vec<ListedRoom>) -> Vec<Entry> {
    let mut entries: Vec<Entry> = rows
        .into_iter()
        .map(|row| {
            let bump = if row.membership == "join" && row.bump_position > 0 {
                row.bump_position
            } else {
                row.membership_position
            };
            Entry {
                room: row.room,
                membership: row.membership,
                membership_position: row.membership_position,
                bump,
                kind: row.kind,
            }
        })
        .collect();
    sort(&mut entries);
    entries
}

/// The list `listed`, read at an earlier position, brought forward: joined rooms with a newer
/// message-like event (`bumps`, room to position) move up, and rooms left or banned from at or
/// before `left_after` go. None when nothing moves.
///
/// Valid only while no membership changed in between: the rooms of the list are the same.
pub(crate) fn advanced(
    listed: &[Entry],
    bumps: &HashMap<OwnedRoomId, i64>,
    left_after: i64,
) -> Option<Vec<Entry>> {
    let stays = |e: &Entry| {
        matches!(e.membership.as_str(), "join" | "invite") || e.membership_position > left_after
    };
    let moved = listed.iter().any(|e| {
        !stays(e) || (e.membership == "join" && bumps.get(&e.room).is_some_and(|b| *b > e.bump))
    });
    if !moved {
        return None;
    }
    let mut entries: Vec<Entry> = listed
        .iter()
        .filter(|e| stays(e))
        .map(|e| {
            let mut e = e.clone();
            if e.membership == "join"
                && let Some(bump) = bumps.get(&e.room)
            {
                e.bump = e.bump.max(*bump);
            }
            e
        })
        .collect();
    sort(&mut entries);
    Some(entries)
}

/// Sorts newest first, ties by room ID.
fn sort(entries: &mut [Entry]) {
    entries.sort_by(|a, b| b.bump.cmp(&a.bump).then_with(|| a.room.cmp(&b.room)));
}

/// Whether `filters` ask what a room is (its type or encryption), beyond its membership.
pub(crate) fn asks_kind(filters: Option<&ListFilters>) -> bool {
    filters.is_some_and(|f| {
        f.is_encrypted.is_some() || !f.room_types.is_empty() || !f.not_room_types.is_empty()
    })
}

/// What a room the node does not hold is, from the stripped state of an invite to it.
pub(crate) fn kind_from_stripped(state: &[serde_json::Value]) -> RoomKind {
    let of = |kind: &str| {
        state.iter().find(|e| {
            e.get("type").and_then(serde_json::Value::as_str) == Some(kind)
                && e.get("state_key").and_then(serde_json::Value::as_str) == Some("")
        })
    };
    RoomKind {
        room_type: of("m.room.create")
            .and_then(|e| e.pointer("/content/type"))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned),
        encrypted: of("m.room.encryption").is_some(),
    }
}

/// What a list's filters need to know of a room beyond its membership.
pub(crate) struct Facts<'a> {
    /// Rooms the user's `m.direct` account data names.
    pub(crate) direct: &'a HashSet<OwnedRoomId>,
}

/// Whether `entry` passes `filters`. A room whose kind is not known counts as a room without
/// a type and without encryption.
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
    let kind = entry.kind.as_ref();
    if let Some(want) = filters.is_encrypted
        && want != kind.is_some_and(|k| k.encrypted)
    {
        return false;
    }
    let room_type = kind.and_then(|k| k.room_type.as_deref());
    // `not_room_types` wins over `room_types` when both name a type.
    if filters
        .not_room_types
        .iter()
        .any(|t| t.as_str() == room_type)
    {
        return false;
    }
    if !filters.room_types.is_empty() && !filters.room_types.iter().any(|t| t.as_str() == room_type)
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
    use ruma::{
        RoomId, api::client::sync::sync_events::v5::request::ListFilters, directory::RoomTypeFilter,
    };

    use super::*;

    fn row(room: &str, membership: &str, at: i64, bump: i64) -> ListedRoom {
        ListedRoom {
            room: RoomId::parse(room).expect("room id"),
            membership: membership.to_owned(),
            membership_position: at,
            bump_position: bump,
            kind: Some(RoomKind::default()),
        }
    }

    fn kinded(room: &str, room_type: Option<&str>, encrypted: bool) -> ListedRoom {
        ListedRoom {
            kind: Some(RoomKind {
                room_type: room_type.map(str::to_owned),
                encrypted,
            }),
            ..row(room, "join", 1, 1)
        }
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

    #[test]
    fn filters_pick_by_type_and_encryption() {
        let entries = ordered(vec![
            kinded("!plain:x", None, false),
            kinded("!secret:x", None, true),
            kinded("!space:x", Some("m.space"), false),
            kinded("!call:x", Some("org.matrix.msc3417.call"), true),
            // An invite to a room not held here whose stripped state was not read.
            ListedRoom {
                kind: None,
                ..row("!unknown:x", "invite", 1, 1)
            },
        ]);
        let direct = HashSet::new();
        let facts = Facts { direct: &direct };
        let pick = |filters: ListFilters| -> Vec<String> {
            let mut got: Vec<String> = entries
                .iter()
                .filter(|e| passes(e, Some(&filters), &facts))
                .map(|e| e.room.to_string())
                .collect();
            got.sort();
            got
        };
        let mut encrypted = ListFilters::default();
        encrypted.is_encrypted = Some(true);
        assert_eq!(pick(encrypted), ["!call:x", "!secret:x"]);
        let mut clear = ListFilters::default();
        clear.is_encrypted = Some(false);
        assert_eq!(pick(clear), ["!plain:x", "!space:x", "!unknown:x"]);
        let mut spaces = ListFilters::default();
        spaces.room_types = vec![RoomTypeFilter::Space];
        assert_eq!(pick(spaces), ["!space:x"]);
        let mut untyped = ListFilters::default();
        untyped.room_types = vec![RoomTypeFilter::Default];
        assert_eq!(pick(untyped), ["!plain:x", "!secret:x", "!unknown:x"]);
        let mut not_spaces = ListFilters::default();
        not_spaces.not_room_types = vec![RoomTypeFilter::Space];
        assert_eq!(
            pick(not_spaces),
            ["!call:x", "!plain:x", "!secret:x", "!unknown:x"]
        );
        // A type named in both is left out.
        let mut both = ListFilters::default();
        both.room_types = vec![RoomTypeFilter::Space, RoomTypeFilter::Default];
        both.not_room_types = vec![RoomTypeFilter::Space];
        assert_eq!(pick(both), ["!plain:x", "!secret:x", "!unknown:x"]);
        let mut custom = ListFilters::default();
        custom.room_types = vec![RoomTypeFilter::from(Some("org.matrix.msc3417.call"))];
        custom.is_encrypted = Some(true);
        assert_eq!(pick(custom), ["!call:x"]);
    }

    #[test]
    fn stripped_state_tells_an_unheld_room() {
        let state = vec![
            serde_json::json!({"type": "m.room.create", "state_key": "",
                "content": {"type": "m.space"}}),
            serde_json::json!({"type": "m.room.encryption", "state_key": "", "content": {}}),
        ];
        let kind = kind_from_stripped(&state);
        assert_eq!(kind.room_type.as_deref(), Some("m.space"));
        assert!(kind.encrypted);
        let garbage = vec![
            serde_json::json!({"type": "m.room.create", "state_key": "", "content": {"type": 7}}),
            serde_json::json!("nope"),
            serde_json::json!({"type": "m.room.encryption", "state_key": "x"}),
        ];
        assert_eq!(kind_from_stripped(&garbage), RoomKind::default());
    }

    #[test]
    fn a_list_moves_forward_in_memory_as_the_index_would() {
        let listed = ordered(vec![
            row("!a:x", "join", 1, 10),
            row("!b:x", "join", 1, 20),
            row("!inv:x", "invite", 15, 0),
            row("!gone:x", "leave", 12, 0),
        ]);
        let bumps: HashMap<OwnedRoomId, i64> = [
            (RoomId::parse("!a:x").expect("room id"), 30),
            // An invite does not move with the room's messages.
            (RoomId::parse("!inv:x").expect("room id"), 31),
        ]
        .into();
        let names = |entries: &[Entry]| -> Vec<String> {
            entries.iter().map(|e| e.room.to_string()).collect()
        };
        let moved = advanced(&listed, &bumps, 12).expect("moved");
        assert_eq!(names(&moved), ["!a:x", "!b:x", "!inv:x"]);
        // What a fresh read of the index would give.
        let fresh = ordered(vec![
            row("!a:x", "join", 1, 30),
            row("!b:x", "join", 1, 20),
            row("!inv:x", "invite", 15, 0),
        ]);
        assert_eq!(moved, fresh);
        assert_eq!(advanced(&fresh, &HashMap::new(), 12), None);
        assert_eq!(advanced(&fresh, &bumps, 12), None, "bumps already counted");
    }
}
