//! One room of a sliding-sync response: its timeline (the latest events, or those since the
//! client's copy), the required state it asks for (`$LAZY`, `$ME` and `*` understood), its
//! name, avatar, heroes and member counts, unread counts and `bump_stamp`; an invite's stripped
//! state instead for a room the user is invited to.

use std::{
    collections::{BTreeSet, HashSet},
    hash::{DefaultHasher, Hash, Hasher},
    sync::Arc,
};

use js_option::JsOption;
use ruma::{
    OwnedEventId, OwnedMxcUri, OwnedRoomId, OwnedUserId, RoomId, UInt, UserId,
    api::client::sync::sync_events::{
        UnreadNotificationsCount,
        v5::response::{Hero, Room},
    },
    events::{StateEventType, TimelineEventType},
    serde::Raw,
};

use super::lists::Entry;
use crate::{
    Homeserver, Result,
    rooms::{StateMap, pdu::Pdu, timeline::Viewer},
    sync::{MAX_TIMELINE_LIMIT, PushJudge},
};

/// Heroes named for a room without a name, at most.
const MAX_HEROES: usize = 5;
/// A timeline read from the room's start: every event held, backfilled ones included.
const WHOLE_HISTORY: i64 = i64::MIN;
/// `$LAZY`: the members who sent the timeline's events.
const LAZY: &str = "$LAZY";
/// `$ME`: the syncing user.
const ME: &str = "$ME";
/// `*`: any type or any state key.
const ANY: &str = "*";

/// What the client asks to see of a room: the union over the lists and subscriptions that
/// hold it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RoomSpec {
    /// `(event type, state key)` patterns.
    pub(crate) required_state: BTreeSet<(String, String)>,
    /// Timeline events to send at most.
    pub(crate) timeline_limit: usize,
}

impl RoomSpec {
    /// The spec of one list or subscription.
    pub(crate) fn new(required_state: &[(StateEventType, String)], timeline_limit: UInt) -> Self {
        Self {
            required_state: required_state
                .iter()
                .map(|(t, k)| (t.to_string(), k.clone()))
                .collect(),
            timeline_limit: usize::try_from(u64::from(timeline_limit))
                .unwrap_or(MAX_TIMELINE_LIMIT)
                .min(MAX_TIMELINE_LIMIT),
        }
    }

    /// Adds what `other` asks for.
    pub(crate) fn merge(&mut self, other: &RoomSpec) {
        self.required_state
            .extend(other.required_state.iter().cloned());
        self.timeline_limit = self.timeline_limit.max(other.timeline_limit);
    }

    /// A digest that changes when the required state asked for changes.
    pub(crate) fn digest(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        self.required_state.hash(&mut hasher);
        hasher.finish()
    }

    fn lazy_members(&self) -> bool {
        self.required_state
            .iter()
            .any(|(t, k)| k == LAZY && (t == ANY || t == "m.room.member"))
    }
}

/// The positions one room is read between.
pub(crate) struct Span {
    /// The client's copy is current to this position (None: it has none; send it whole).
    pub(crate) since: Option<i64>,
    /// Read up to this position.
    pub(crate) upto: i64,
    /// Send every required state event, not only the changed ones.
    pub(crate) full_state: bool,
}

/// The state keys of `state` the spec asks for; `lazy` holds the members `$LAZY` stands for.
fn required_ids(
    spec: &RoomSpec,
    state: &StateMap,
    user: &UserId,
    lazy: &HashSet<OwnedUserId>,
) -> Vec<OwnedEventId> {
    let mut ids: BTreeSet<OwnedEventId> = BTreeSet::new();
    let exact = |kind: &str, key: &str, ids: &mut BTreeSet<OwnedEventId>| {
        if let Some(id) = state.get(&(StateEventType::from(kind), key.to_owned())) {
            ids.insert(id.clone());
        }
    };
    let mut wildcard = false;
    for (kind, key) in &spec.required_state {
        match (kind.as_str(), key.as_str()) {
            (ANY, _) | (_, ANY) => wildcard = true,
            (kind, LAZY) => {
                for member in lazy {
                    exact(kind, member.as_str(), &mut ids);
                }
            }
            (kind, ME) => exact(kind, user.as_str(), &mut ids),
            (kind, key) => exact(kind, key, &mut ids),
        }
    }
    if wildcard {
        for ((kind, key), id) in state {
            let kind = kind.to_string();
            let matches = spec.required_state.iter().any(|(t, k)| {
                (t == ANY || *t == kind)
                    && (k == ANY || (t == ANY && (k == key || (k == ME && key == user.as_str()))))
            });
            if matches {
                ids.insert(id.clone());
            }
        }
    }
    ids.into_iter().collect()
}

/// A joined (or left) room, or None when nothing the client lacks happened in it.
pub(crate) async fn joined(
    hs: &Homeserver,
    (user, device): (&UserId, &ruma::DeviceId),
    entry: &Entry,
    spec: &RoomSpec,
    span: Span,
) -> Result<Option<Room>> {
    let room = &entry.room;
    // A room left shows up to the leave, never past it.
    let upto = if entry.membership == "join" {
        span.upto
    } else {
        span.upto.min(entry.membership_position)
    };
    let limit = spec.timeline_limit;
    let mut events = if limit == 0 {
        Vec::new()
    } else {
        hs.rooms
            .latest_events(
                room,
                span.since.unwrap_or(WHOLE_HISTORY),
                upto,
                limit as i64 + 1,
            )
            .await?
    };
    let limited = events.len() > limit;
    events.truncate(limit);
    events.reverse();
    let timeline_start = events
        .first()
        .and_then(|e| e.position)
        .map_or(upto, |p| p - 1);
    let mut judge = hs.rooms.history_judge(room, user).await?;
    let viewer = Viewer {
        user,
        device: Some(device),
    };
    let mut timeline = Vec::new();
    let mut senders: HashSet<OwnedUserId> = HashSet::new();
    for stored in &events {
        if !judge.allows(stored).await? {
            continue;
        }
        senders.insert(stored.pdu.sender.clone());
        timeline.push(hs.rooms.client_event(stored, viewer, false).await?);
    }
    let now = hs.rooms.state_at_position(room, upto).await?;
    let mut ids = required_ids(spec, &now, user, &senders);
    if let (Some(since), false) = (span.since, span.full_state) {
        let before = hs.rooms.state_at_position(room, since).await?;
        let old: HashSet<&OwnedEventId> = before.values().collect();
        // Lazy members the client may not hold yet are sent with the events naming them.
        let lazy: HashSet<OwnedEventId> = if spec.lazy_members() {
            senders
                .iter()
                .filter_map(|s| now.get(&(StateEventType::RoomMember, s.to_string())))
                .cloned()
                .collect()
        } else {
            HashSet::new()
        };
        ids.retain(|id| !old.contains(id) || lazy.contains(id));
        if timeline.is_empty() && ids.is_empty() && span.since.is_some_and(|s| s >= upto) {
            return Ok(None);
        }
    }
    let required_state = state_events(hs, &ids).await?;
    let mut out = Room::new();
    out.initial = span.since.is_none().then_some(true);
    out.limited = limited;
    out.prev_batch = Some(timeline_start.to_string());
    out.num_live = span
        .since
        .map(|_| UInt::try_from(timeline.len()).unwrap_or_default());
    out.timeline = timeline;
    out.required_state = required_state;
    out.bump_stamp = UInt::try_from(entry.bump.max(0)).ok();
    describe(hs, entry, user, &now, &mut out).await?;
    let (notes, highlights) = {
        let read = hs.userdata.read_position(user, room).await?;
        let mut judge = PushJudge::new(hs, room, user);
        hs.rooms
            .unread_counts(
                room,
                user,
                read,
                entry.membership_position,
                upto,
                &mut judge,
            )
            .await?
    };
    let mut counts = UnreadNotificationsCount::new();
    counts.notification_count = Some(UInt::try_from(notes).unwrap_or_default());
    counts.highlight_count = Some(UInt::try_from(highlights).unwrap_or_default());
    out.unread_notifications = counts;
    Ok(Some(out))
}

/// Loads state events by ID, in the order the DAG gave them, in the client format.
async fn state_events(
    hs: &Homeserver,
    ids: &[OwnedEventId],
) -> Result<Vec<Raw<ruma::events::AnySyncStateEvent>>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let loaded = hs.rooms.load_pdus(ids).await?;
    let mut events: Vec<&Pdu> = loaded.values().map(|e| &**e).collect();
    events.sort_by(|a, b| a.depth.cmp(&b.depth).then(a.event_id.cmp(&b.event_id)));
    let mut unsigned = hs.rooms.state_unsigned(&events).await?;
    Ok(events
        .into_iter()
        .map(|e| e.to_client_raw_with(false, unsigned.remove(&e.event_id).as_deref()))
        .collect())
}

/// The room's name, avatar, member counts and, when it has no name, its heroes, from its
/// state at `state` (the current state, held in memory, for a joined room).
async fn describe(
    hs: &Homeserver,
    entry: &Entry,
    user: &UserId,
    state: &StateMap,
    out: &mut Room,
) -> Result<()> {
    let events: Vec<Arc<Pdu>> = if entry.membership == "join" {
        hs.rooms.current_state(&entry.room).await?.1
    } else {
        let ids: Vec<OwnedEventId> = state.values().cloned().collect();
        hs.rooms.load_pdus(&ids).await?.into_values().collect()
    };
    let content = |kind: TimelineEventType, field: &str| {
        events
            .iter()
            .find(|e| e.kind == kind && e.state_key.as_deref() == Some(""))
            .and_then(|e| e.content_str(field))
    };
    out.name = content(TimelineEventType::RoomName, "name").filter(|n| !n.is_empty());
    out.avatar = match content(TimelineEventType::RoomAvatar, "url") {
        Some(url) if !url.is_empty() => JsOption::Some(OwnedMxcUri::from(url)),
        _ => JsOption::Undefined,
    };
    let mut joined = 0u64;
    let mut invited = 0u64;
    let mut heroes: Vec<&Pdu> = Vec::new();
    let mut members: Vec<&Pdu> = events
        .iter()
        .map(|e| &**e)
        .filter(|e| e.kind == TimelineEventType::RoomMember)
        .collect();
    members.sort_by(|a, b| a.state_key.cmp(&b.state_key));
    for member in members {
        match member.content_str("membership").as_deref() {
            Some("join") => joined += 1,
            Some("invite") => invited += 1,
            _ => continue,
        }
        if member.state_key.as_deref() != Some(user.as_str()) && heroes.len() < MAX_HEROES {
            heroes.push(member);
        }
    }
    out.joined_count = Some(UInt::try_from(joined).unwrap_or_default());
    out.invited_count = Some(UInt::try_from(invited).unwrap_or_default());
    if out.name.is_none() {
        let heroes = heroes
            .into_iter()
            .filter_map(|m| {
                let id = UserId::parse(m.state_key.as_deref()?).ok()?;
                let mut hero = Hero::new(id);
                hero.name = m.content_str("displayname");
                hero.avatar = m.content_str("avatar_url").map(OwnedMxcUri::from);
                Some(hero)
            })
            .collect();
        out.heroes = Some(heroes);
    }
    Ok(())
}

/// A room the user is invited to: the invite's stripped state.
pub(crate) async fn invited(hs: &Homeserver, user: &UserId, entry: &Entry) -> Result<Room> {
    let events = hs
        .rooms
        .invite_state(&entry.room, user)
        .await?
        .into_iter()
        .filter_map(|v| serde_json::value::to_raw_value(&v).ok())
        .map(Raw::from_json)
        .collect();
    let mut out = Room::new();
    out.initial = Some(true);
    out.invite_state = Some(events);
    out.bump_stamp = UInt::try_from(entry.bump.max(0)).ok();
    Ok(out)
}

/// The rooms of `m.direct` content.
pub(crate) fn direct_rooms(content: &serde_json::Value) -> HashSet<OwnedRoomId> {
    content
        .as_object()
        .into_iter()
        .flat_map(|users| users.values())
        .filter_map(serde_json::Value::as_array)
        .flatten()
        .filter_map(|r| RoomId::parse(r.as_str()?).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use ruma::{EventId, owned_user_id};

    use super::*;

    fn state() -> StateMap {
        let mut state = StateMap::default();
        let mut add = |kind: StateEventType, key: &str, id: &str| {
            state.insert(
                (kind, key.to_owned()),
                EventId::parse(id).expect("event id"),
            );
        };
        add(StateEventType::RoomCreate, "", "$create");
        add(StateEventType::RoomName, "", "$name");
        add(StateEventType::RoomMember, "@me:x", "$me");
        add(StateEventType::RoomMember, "@ann:x", "$ann");
        add(StateEventType::RoomMember, "@bob:x", "$bob");
        add(StateEventType::from("m.call.member"), "a", "$call_a");
        add(StateEventType::from("m.call.member"), "b", "$call_b");
        state
    }

    #[track_caller]
    fn check(patterns: &[(&str, &str)], lazy: &[&str], expected: &[&str]) {
        let spec = RoomSpec {
            required_state: patterns
                .iter()
                .map(|(t, k)| ((*t).to_owned(), (*k).to_owned()))
                .collect(),
            timeline_limit: 1,
        };
        let lazy: HashSet<OwnedUserId> = lazy
            .iter()
            .map(|u| UserId::parse(*u).expect("user id"))
            .collect();
        let got = required_ids(&spec, &state(), &owned_user_id!("@me:x"), &lazy);
        let mut got: Vec<String> = got.into_iter().map(|id| id.to_string()).collect();
        got.sort();
        let mut expected: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
        expected.sort();
        assert_eq!(got, expected);
    }

    #[test]
    fn required_state_patterns() {
        check(&[("m.room.name", "")], &[], &["$name"]);
        check(&[("m.room.member", "$ME")], &[], &["$me"]);
        check(&[("m.room.member", "$LAZY")], &["@bob:x"], &["$bob"]);
        check(&[("m.room.member", "$LAZY")], &[], &[]);
        check(&[("m.call.member", "*")], &[], &["$call_a", "$call_b"]);
        check(
            &[("*", "*")],
            &[],
            &[
                "$create", "$name", "$me", "$ann", "$bob", "$call_a", "$call_b",
            ],
        );
        check(&[("*", "")], &[], &["$create", "$name"]);
        check(&[("*", "$ME")], &[], &["$me"]);
        check(&[("m.room.topic", "")], &[], &[]);
        check(&[("m.room.member", "@nobody:x")], &[], &[]);
    }

    #[test]
    fn specs_merge_to_their_union() {
        let mut a = RoomSpec::new(
            &[(StateEventType::RoomName, String::new())],
            UInt::from(1u32),
        );
        let b = RoomSpec::new(
            &[(StateEventType::RoomTopic, String::new())],
            UInt::from(20u32),
        );
        let before = a.digest();
        a.merge(&b);
        assert_eq!(a.required_state.len(), 2);
        assert_eq!(a.timeline_limit, 20);
        assert_ne!(a.digest(), before);
        let huge = RoomSpec::new(&[], UInt::MAX);
        assert_eq!(huge.timeline_limit, MAX_TIMELINE_LIMIT);
    }

    #[test]
    fn direct_rooms_ignore_garbage() {
        let content = serde_json::json!({
            "@a:x": ["!one:x", "not a room", 7],
            "@b:x": "nope",
            "@c:x": ["!two:x"],
        });
        assert_eq!(direct_rooms(&content).len(), 2);
        assert!(direct_rooms(&serde_json::json!([1, 2])).is_empty());
    }
}
