//! One room of a sync response: its timeline (limited, with `prev_batch`, and only the events
//! the room's history visibility lets the user see), the state before the timeline (all of it,
//! or the changes since the last sync), lazy-loaded members, the summary and unread counts.

use std::collections::HashSet;

use ruma::{
    OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UInt,
    api::client::sync::sync_events::{
        UnreadNotificationsCount,
        v3::{JoinedRoom, LeftRoom, RoomSummary, State, StateEvents, Timeline},
    },
    events::{StateEventType, TimelineEventType},
};

use super::{DEFAULT_TIMELINE_LIMIT, MAX_TIMELINE_LIMIT, SyncRequest, notifications::PushJudge};
use crate::{
    Homeserver, Result,
    rooms::{
        StateMap,
        timeline::{Viewer, filter_matches},
    },
};

/// Heroes named in a room summary, at most.
const MAX_HEROES: usize = 5;

/// A timeline read from the room's start: every event held, backfilled ones included.
pub(super) const WHOLE_HISTORY: i64 = i64::MIN;

/// The positions one room is read between.
pub(super) struct Range {
    /// Timeline events after this position.
    pub(super) since: i64,
    /// ... up to this one.
    pub(super) upto: i64,
    /// Whether to send the full state rather than changes.
    pub(super) full: bool,
    /// The request's `since`, for state changes.
    pub(super) incremental_since: i64,
}

struct Built {
    timeline: Timeline,
    state: Vec<ruma::serde::Raw<ruma::events::AnySyncStateEvent>>,
    has_member_changes: bool,
}

async fn build(
    hs: &Homeserver,
    request: &SyncRequest,
    room: &RoomId,
    range: &Range,
) -> Result<Option<Built>> {
    let filter = &request.filter.room;
    let limit = filter
        .timeline
        .limit
        .map_or(DEFAULT_TIMELINE_LIMIT, |l| {
            usize::try_from(u64::from(l)).unwrap_or(MAX_TIMELINE_LIMIT)
        })
        .min(MAX_TIMELINE_LIMIT);
    let (mut events, mut judge) = tokio::try_join!(
        hs.rooms
            .latest_events(room, range.since, range.upto, limit as i64 + 1),
        hs.rooms.history_judge(room, &request.user),
    )?;
    if !range.full && events.is_empty() {
        return Ok(None);
    }
    // Everything held fits, but older history this node lacks is still there to page back
    // into (a room joined through another server): the client must be told.
    let limited = events.len() > limit
        || (range.since == WHOLE_HISTORY
            && !events.is_empty()
            && !hs.rooms.backfill_frontier(room).await?.is_empty());
    events.truncate(limit);
    events.reverse();
    let timeline_start = events
        .first()
        .and_then(|e| e.position)
        .map_or(range.upto, |p| p - 1);
    let viewer = Viewer {
        user: &request.user,
        device: Some(&request.device),
    };
    let mut timeline = Timeline::new();
    timeline.limited = limited;
    timeline.prev_batch = Some(timeline_start.to_string());
    let mut senders: HashSet<OwnedUserId> = HashSet::new();
    let mut has_member_changes = false;
    for stored in &events {
        has_member_changes |= stored.pdu.kind == TimelineEventType::RoomMember;
        if !filter_matches(&filter.timeline, &stored.pdu) || !judge.allows(stored).await? {
            continue;
        }
        senders.insert(stored.pdu.sender.clone());
        timeline
            .events
            .push(hs.rooms.client_event(stored, viewer, false).await?);
    }

    let lazy = !filter.state.lazy_load_options.is_disabled();
    if !range.full && !limited && !lazy && range.since == range.incremental_since {
        // The timeline holds every event since the last sync, so no state changed before it.
        return Ok(Some(Built {
            timeline,
            state: Vec::new(),
            has_member_changes,
        }));
    }
    let at_start = hs.rooms.state_at_position(room, timeline_start).await?;
    let mut state: StateMap = if range.full {
        (*at_start).clone()
    } else {
        let old = hs
            .rooms
            .state_at_position(room, range.incremental_since)
            .await?;
        at_start
            .iter()
            .filter(|(k, v)| old.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    if lazy {
        senders.insert(request.user.clone());
        state.retain(|(kind, key), _| {
            *kind != StateEventType::RoomMember || is_one_of(&senders, key)
        });
        for sender in &senders {
            let key = (StateEventType::RoomMember, sender.to_string());
            if let Some(id) = at_start.get(&key) {
                state.insert(key, id.clone());
            }
        }
    }
    has_member_changes |= state.keys().any(|(k, _)| *k == StateEventType::RoomMember);
    let ids: Vec<OwnedEventId> = state.values().cloned().collect();
    let loaded = hs.rooms.state_pdus(room, &ids).await?;
    let mut state_events: Vec<_> = loaded.values().collect();
    state_events.sort_by(|a, b| a.depth.cmp(&b.depth).then(a.event_id.cmp(&b.event_id)));
    let state_events: Vec<&crate::rooms::Pdu> = state_events
        .into_iter()
        .filter(|e| filter_matches(&filter.state, e))
        .map(|e| &**e)
        .collect();
    let mut unsigned = hs.rooms.state_unsigned(&state_events).await?;
    let state = state_events
        .into_iter()
        .map(|e| e.to_client_raw_with(false, unsigned.remove(&e.event_id).as_deref()))
        .collect();
    Ok(Some(Built {
        timeline,
        state,
        has_member_changes,
    }))
}

fn is_one_of(users: &HashSet<OwnedUserId>, key: &str) -> bool {
    users.iter().any(|u| u.as_str() == key)
}

/// A joined room's section, or None when nothing changed in it.
pub(super) async fn joined_room(
    hs: &Homeserver,
    request: &SyncRequest,
    room: &OwnedRoomId,
    range: Range,
    joined_at: i64,
) -> Result<Option<JoinedRoom>> {
    // The unread counts do not depend on the timeline: both are read side by side.
    let (built, (notes, highlights)) = tokio::try_join!(build(hs, request, room, &range), async {
        let read = hs.userdata.read_position(&request.user, room).await?;
        let mut judge = PushJudge::new(hs, room, &request.user);
        hs.rooms
            .unread_counts(room, &request.user, read, joined_at, range.upto, &mut judge)
            .await
    })?;
    let Some(built) = built else {
        return Ok(None);
    };
    let mut joined = JoinedRoom::new();
    joined.timeline = built.timeline;
    joined.state = State::Before(StateEvents::with_events(built.state));
    if range.full || built.has_member_changes {
        joined.summary = summary(hs, room, &request.user).await?;
    }
    let mut counts = UnreadNotificationsCount::new();
    counts.notification_count = Some(UInt::try_from(notes).unwrap_or_default());
    counts.highlight_count = Some(UInt::try_from(highlights).unwrap_or_default());
    joined.unread_notifications = counts;
    Ok(Some(joined))
}

/// A left room's section: the timeline up to the leave.
pub(super) async fn left_room(
    hs: &Homeserver,
    request: &SyncRequest,
    room: &OwnedRoomId,
    range: Range,
) -> Result<LeftRoom> {
    let full = Range {
        full: true,
        ..range
    };
    let mut left = LeftRoom::new();
    if let Some(built) = build(hs, request, room, &full).await? {
        left.timeline = built.timeline;
        left.state = State::Before(StateEvents::with_events(built.state));
    }
    Ok(left)
}

async fn summary(hs: &Homeserver, room: &RoomId, user: &ruma::UserId) -> Result<RoomSummary> {
    let (_, events) = hs.rooms.current_state(room).await?;
    let mut joined = 0u64;
    let mut invited = 0u64;
    let mut heroes = Vec::new();
    let mut members: Vec<_> = events
        .iter()
        .filter(|e| e.kind == TimelineEventType::RoomMember)
        .collect();
    members.sort_by(|a, b| a.state_key.cmp(&b.state_key));
    for member in members {
        let membership = member.content_str("membership");
        match membership.as_deref() {
            Some("join") => joined += 1,
            Some("invite") => invited += 1,
            _ => continue,
        }
        if heroes.len() < MAX_HEROES
            && let Some(key) = member.state_key.as_deref()
            && key != user.as_str()
            && let Ok(id) = ruma::UserId::parse(key)
        {
            heroes.push(id);
        }
    }
    let mut summary = RoomSummary::new();
    summary.heroes = heroes;
    summary.joined_member_count = Some(UInt::try_from(joined).unwrap_or_default());
    summary.invited_member_count = Some(UInt::try_from(invited).unwrap_or_default());
    Ok(summary)
}
