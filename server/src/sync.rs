//! Assembling `/sync` responses from the stream of changes between two positions.
//!
//! A sync reads everything in `(since, upto]`, where `upto` is the notifier's committed
//! position when the read starts (lowered to the last to-device message carried when more wait
//! than one response may carry); `upto` becomes `next_batch`. An incremental sync with
//! nothing to report waits on [`crate::Notifier::wait_beyond`] (never polling) and reads again,
//! until something arrives or the timeout passes. Because tokens are stream positions stored
//! with the rows, a token from before a restart keeps working.

mod notifications;
pub(crate) use notifications::PushJudge;
mod room;

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    time::{Duration, Instant},
};

use ruma::{
    OwnedRoomId, OwnedUserId, UserId,
    api::client::{
        filter::FilterDefinition,
        sync::sync_events::{
            DeviceLists,
            v3::{InviteState, InvitedRoom, Response},
        },
    },
    serde::Raw,
};

use crate::{
    Error, Homeserver, Result, StreamPosition,
    rooms::streams::{MembershipChange, memberships_as_of},
    storage::Change,
};

/// The timeline length when the filter sets none.
pub const DEFAULT_TIMELINE_LIMIT: usize = 10;
/// The longest timeline a filter may ask for.
pub const MAX_TIMELINE_LIMIT: usize = 500;

/// What a client asks `/sync` for.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    /// The syncing user.
    pub user: OwnedUserId,
    /// The syncing device.
    pub device: ruma::OwnedDeviceId,
    /// The previous `next_batch`, if any.
    pub since: Option<String>,
    /// Send the full state of every room.
    pub full_state: bool,
    /// The filter in force.
    pub filter: FilterDefinition,
    /// How long to wait for something to report (already capped by the caller).
    pub timeout: Duration,
}

/// Parses a sync token.
pub fn parse_since(token: &str) -> Result<StreamPosition> {
    token
        .trim_start_matches('s')
        .parse::<i64>()
        .ok()
        .filter(|p| *p >= 0)
        .map(StreamPosition)
        .ok_or_else(|| Error::InvalidParam(format!("bad sync token {token:?}")))
}

/// Answers a `/sync`.
pub async fn sync(hs: &Homeserver, request: &SyncRequest) -> Result<Response> {
    let since = request.since.as_deref().map(parse_since).transpose()?;
    let deadline = Instant::now() + request.timeout;
    let mut upto = hs.notifier.current();
    if let Some(since) = since
        && since > upto
    {
        // A token from the future (another node's, or a restored database): treat as now.
        return sync_once(hs, request, Some(upto), upto).await;
    }
    loop {
        let response = sync_once(hs, request, since, upto).await?;
        let Some(since) = since else {
            return Ok(response);
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        if request.full_state || !is_empty(&response) || remaining.is_zero() {
            return Ok(response);
        }
        let waited_from = upto.max(since);
        upto = hs.notifier.wait_beyond(waited_from, remaining).await;
        if upto <= waited_from {
            return Ok(response);
        }
    }
}

fn is_empty(r: &Response) -> bool {
    r.rooms.is_empty()
        && r.presence.is_empty()
        && r.account_data.is_empty()
        && r.to_device.is_empty()
        && r.device_lists.is_empty()
}

async fn sync_once(
    hs: &Homeserver,
    request: &SyncRequest,
    since: Option<StreamPosition>,
    upto: StreamPosition,
) -> Result<Response> {
    let user = &request.user;
    let since_pos = since.map_or(0, |s| s.0);
    // With more to-device messages waiting than one response carries, the whole response ends
    // at the last one it carries: `next_batch` then acknowledges exactly those.
    // A kind of change with nothing committed since the token is not read at all: a
    // long-poll woken by one message reads little more than that message's room.
    let changed = |kind: Change| hs.storage.changed_since(kind, StreamPosition(since_pos));
    let upto = if changed(Change::ToDevice) {
        hs.e2ee
            .to_device_horizon(user, &request.device, StreamPosition(since_pos), upto)
            .await?
    } else {
        upto
    };
    // Independent reads run side by side: each is a round trip to the database, and a woken
    // long-poll answers sooner when they overlap.
    let (log, active) = tokio::try_join!(hs.rooms.membership_log(user, upto.0), async {
        match since {
            Some(since) => Ok(Some(hs.rooms.rooms_with_events(since.0, upto.0).await?)),
            None => Ok(None),
        }
    })?;
    let now = memberships_as_of(&log, upto.0);
    let before = memberships_as_of(&log, since_pos);
    let room_filter = &request.filter.room;
    let wanted = |room: &OwnedRoomId| {
        !room_filter.not_rooms.contains(room)
            && room_filter.rooms.as_ref().is_none_or(|r| r.contains(room))
    };

    let mut response = Response::new(upto.0.to_string());
    let mut joined_rooms: Vec<OwnedRoomId> = Vec::new();
    let mut newly_joined: Vec<OwnedRoomId> = Vec::new();
    let mut changes: Vec<&MembershipChange> = now.values().collect();
    changes.sort_by_key(|c| c.position);
    for change in changes {
        let room = &change.room;
        let changed_since = since.is_none() || change.position > since_pos;
        match change.membership.as_str() {
            "join" => {
                joined_rooms.push(room.clone());
                let was_joined = before.get(room).is_some_and(|b| b.membership == "join");
                if since.is_some() && !was_joined {
                    newly_joined.push(room.clone());
                }
                if !wanted(room) {
                    continue;
                }
                let fresh = since.is_none() || !was_joined || request.full_state;
                if !fresh && active.as_ref().is_some_and(|a| !a.contains(room)) {
                    continue;
                }
                let joined = room::joined_room(
                    hs,
                    request,
                    room,
                    room::Range {
                        // A room new to the client shows its latest events, backfilled
                        // history below the stream included.
                        since: if since.is_none() || !was_joined {
                            room::WHOLE_HISTORY
                        } else {
                            since_pos
                        },
                        upto: upto.0,
                        full: fresh,
                        incremental_since: since_pos,
                    },
                    change.position,
                )
                .await?;
                if let Some(joined) = joined {
                    response.rooms.join.insert(room.clone(), joined);
                }
            }
            "invite" if changed_since && wanted(room) => {
                let events: Vec<Raw<ruma::events::AnyStrippedStateEvent>> = hs
                    .rooms
                    .invite_state(room, user)
                    .await?
                    .into_iter()
                    .filter_map(|v| serde_json::value::to_raw_value(&v).ok())
                    .map(Raw::from_json)
                    .collect();
                let mut invited = InvitedRoom::new();
                invited.invite_state = InviteState::from(events);
                response.rooms.invite.insert(room.clone(), invited);
            }
            "leave" | "ban" => {
                let include = changed_since
                    && (since.is_some() || room_filter.include_leave)
                    && wanted(room)
                    && !hs.rooms.is_forgotten(room, user).await?;
                if include {
                    let left = room::left_room(
                        hs,
                        request,
                        room,
                        room::Range {
                            since: since_pos,
                            upto: change.position,
                            full: since.is_none() || request.full_state,
                            incremental_since: since_pos,
                        },
                    )
                    .await?;
                    response.rooms.leave.insert(room.clone(), left);
                }
            }
            _ => {}
        }
    }

    // Everything below depends only on the rooms found above; read it all at once.
    let since_position = StreamPosition(since_pos);
    let (
        ephemeral,
        (room_data, global_data),
        to_device,
        (one_time_keys, fallback_types),
        (presence, device_lists),
    ) = tokio::try_join!(
        async {
            if changed(Change::Ephemeral) {
                hs.userdata
                    .ephemeral_since(user, &joined_rooms, since_position, upto)
                    .await
            } else {
                Ok(Default::default())
            }
        },
        async {
            if !changed(Change::AccountData) {
                return Ok(Default::default());
            }
            tokio::try_join!(
                hs.userdata
                    .room_account_data_since(user, since_position, upto),
                hs.userdata
                    .global_account_data_since(user, since_position, upto),
            )
        },
        async {
            // Skipped, it also leaves acknowledged messages in place until the next one comes:
            // they lie at or before every later token, so they are never sent again.
            if changed(Change::ToDevice) {
                hs.e2ee
                    .sync_to_device(user, &request.device, since_position, upto)
                    .await
            } else {
                Ok(Default::default())
            }
        },
        hs.e2ee.key_counts(user, &request.device),
        async {
            let lists_changed = since.is_some() && changed(Change::DeviceLists);
            if !changed(Change::Presence) && !lists_changed {
                return Ok::<_, Error>((Vec::new(), None));
            }
            let sharing = hs.rooms.users_sharing_rooms_with(user).await?;
            let presence = if changed(Change::Presence) {
                hs.userdata
                    .presence_since(&sharing, since_position, upto)
                    .await?
            } else {
                Vec::new()
            };
            let lists = match since {
                Some(_) if lists_changed => Some(
                    device_lists(
                        hs,
                        user,
                        since_pos,
                        upto,
                        &sharing,
                        &joined_rooms,
                        &newly_joined,
                    )
                    .await?,
                ),
                _ => None,
            };
            Ok::<_, Error>((presence, lists))
        },
    )?;
    for room in &joined_rooms {
        let events = ephemeral.get(room).cloned().unwrap_or_default();
        let data = room_data.get(room).cloned().unwrap_or_default();
        if events.is_empty() && data.is_empty() {
            continue;
        }
        if !wanted(room) {
            continue;
        }
        let entry = match response.rooms.join.get_mut(room) {
            Some(entry) => entry,
            None => {
                let mut fresh = ruma::api::client::sync::sync_events::v3::JoinedRoom::new();
                fresh.timeline.prev_batch = Some(upto.0.to_string());
                response.rooms.join.entry(room.clone()).or_insert(fresh)
            }
        };
        entry.ephemeral.events = events;
        entry.account_data.events = data;
    }

    response.account_data.events = global_data;
    response.to_device.events = to_device;
    response.device_one_time_keys_count = one_time_keys;
    response.device_unused_fallback_key_types = Some(fallback_types);
    response.presence.events = presence;
    if let Some(lists) = device_lists {
        response.device_lists = lists;
    }
    Ok(response)
}

/// The device-list changes `user` must learn of in `(since, upto]`: `changed` holds users
/// sharing a room with them (`user` included) whose devices or keys changed, and users who started sharing an
/// encrypted room with them; `left` holds users who shared an encrypted room with them at
/// `since` and share none at `upto`. Serves `/keys/changes` and `/sync`.
pub async fn key_changes(
    hs: &Homeserver,
    user: &UserId,
    since: StreamPosition,
    upto: StreamPosition,
) -> Result<DeviceLists> {
    let sharing: HashSet<OwnedUserId> = hs
        .rooms
        .users_sharing_rooms_with(user)
        .await?
        .into_iter()
        .collect();
    let members_changed = !hs.rooms.member_changes(since.0, upto.0).await?.is_empty();
    let joiners = BTreeSet::new();
    device_list_changes(hs, user, (since, upto), &sharing, joiners, members_changed).await
}

/// [`key_changes`] over `(since, upto]` with the users sharing any room with `user` now,
/// `also_changed` (users the caller knows began sharing a room) added to `changed`, and
/// whether any membership changed in the range.
async fn device_list_changes(
    hs: &Homeserver,
    user: &UserId,
    (since, upto): (StreamPosition, StreamPosition),
    sharing: &HashSet<OwnedUserId>,
    also_changed: BTreeSet<OwnedUserId>,
    members_changed: bool,
) -> Result<DeviceLists> {
    let mut changed: BTreeSet<OwnedUserId> = hs
        .e2ee
        .users_with_key_changes(since, upto)
        .await?
        .into_iter()
        .chain(also_changed)
        .filter(|u| sharing.contains(u))
        .collect();
    let mut left = BTreeSet::new();
    let may_have_changed = since < upto
        && (members_changed || hs.e2ee.encryption_enabled_between(since, upto).await?);
    if may_have_changed {
        let change = hs.e2ee.sharing_change(user, since, upto).await?;
        changed.extend(change.started);
        left = change.stopped;
    }
    let mut lists = DeviceLists::new();
    lists.changed = changed.difference(&left).cloned().collect();
    lists.left = left.into_iter().collect();
    Ok(lists)
}

/// Sync's device lists: [`key_changes`], plus everyone in rooms the user just joined and
/// everyone who just joined the user's rooms (the client may not know their devices yet).
async fn device_lists(
    hs: &Homeserver,
    user: &UserId,
    since: i64,
    upto: StreamPosition,
    sharing: &[OwnedUserId],
    joined_rooms: &[OwnedRoomId],
    newly_joined: &[OwnedRoomId],
) -> Result<DeviceLists> {
    let sharing: HashSet<OwnedUserId> = sharing.iter().cloned().collect();
    let mut joiners: BTreeSet<OwnedUserId> = BTreeSet::new();
    for room in newly_joined {
        joiners.extend(hs.rooms.joined_user_ids(room).await?);
    }
    let member_changes = hs.rooms.member_changes(since, upto.0).await?;
    for (room, other, membership) in &member_changes {
        if membership == "join" && joined_rooms.contains(room) && !newly_joined.contains(room) {
            joiners.insert(other.clone());
        }
    }
    let range = (StreamPosition(since), upto);
    let members_changed = !member_changes.is_empty();
    // The user's own changes are kept: their other devices (and this one, after uploading
    // cross-signing keys or signatures) learn from them to fetch the user's keys again.
    device_list_changes(hs, user, range, &sharing, joiners, members_changed).await
}

/// The filter of a sync request: an inline JSON definition, a stored filter's ID, or none.
pub async fn resolve_filter(
    hs: &Homeserver,
    user: &UserId,
    filter: Option<&ruma::api::client::sync::sync_events::v3::Filter>,
) -> Result<FilterDefinition> {
    use ruma::api::client::sync::sync_events::v3::Filter;
    match filter {
        None => Ok(FilterDefinition::default()),
        Some(Filter::FilterDefinition(def)) => Ok(def.clone()),
        Some(Filter::FilterId(id)) => Ok(hs.userdata.filter(user, id).await?.unwrap_or_default()),
        Some(_) => Ok(FilterDefinition::default()),
    }
}

/// The per-room map type of responses, re-exported for the client API.
pub type JoinedRooms = BTreeMap<OwnedRoomId, ruma::api::client::sync::sync_events::v3::JoinedRoom>;
