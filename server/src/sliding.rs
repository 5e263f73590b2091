//! Simplified sliding sync (MSC4186), the sync Element X speaks.
//!
//! A client keeps a connection (`conn_id`) and sends lists, each with ranges over the user's
//! rooms sorted by recency, and room subscriptions. The answer gives each list's room count
//! and, for the rooms its windows and subscriptions hold, what the client lacks: a room new to
//! the connection whole (`initial`), a known one only when something happened in it since the
//! copy the client holds. The connection's state ([`Connections`]) says what each room's copy
//! is; the `pos` of a response names that state, and the next request sends it back.
//!
//! The calling sequence for one request: [`sync`] checks the request's bounds, finds the state
//! its `pos` names ([`Error::UnknownPos`] when there is none: the client starts over), reads
//! the user's rooms in order from the membership index (`Rooms::listed_rooms`, no events
//! read; a state whose rooms are still the user's carries them, moved forward in memory by
//! the message-like events since), cuts the windows, builds the rooms and extensions up to the notifier's position, and
//! when there is nothing to say waits on [`crate::Notifier::wait_beyond`] until something is
//! committed or the timeout passes. The new state is stored and its `pos` answered.

mod connections;
mod extensions;
mod lists;
mod room;

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use ruma::{
    DeviceId, OwnedDeviceId, OwnedRoomId, OwnedUserId, UInt,
    api::client::sync::sync_events::v5::{Request, Response, response},
};

use connections::{ConnKey, ConnState, SentRoom};
pub use connections::{Connections, MAX_CONNECTIONS, MAX_CONNECTIONS_PER_DEVICE, MAX_STATES};
use lists::{Entry, Facts};
use room::{RoomSpec, Span};

use crate::{Error, Homeserver, Result, StreamPosition, storage::Change};

/// Lists one request may hold.
pub const MAX_LISTS: usize = 32;
/// Ranges one list may hold.
pub const MAX_RANGES: usize = 16;
/// `required_state` pairs one list or subscription may ask for.
pub const MAX_REQUIRED_STATE: usize = 256;
/// Room subscriptions one request may hold.
pub const MAX_SUBSCRIPTIONS: usize = 512;
/// The longest list name, connection ID or transaction ID, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// What a client asks of simplified sliding sync.
#[derive(Debug, Clone)]
pub struct SlidingRequest {
    /// The syncing user.
    pub user: OwnedUserId,
    /// The syncing device.
    pub device: OwnedDeviceId,
    /// The request as the client sent it.
    pub body: Request,
    /// How long to wait for something to report (already capped by the caller).
    pub timeout: Duration,
}

/// Answers a simplified sliding sync request.
pub async fn sync(hs: &Homeserver, request: &SlidingRequest) -> Result<Response> {
    check_bounds(&request.body)?;
    let body = &request.body;
    let key: ConnKey = (
        request.user.clone(),
        request.device.clone(),
        body.conn_id.clone().unwrap_or_default(),
    );
    let started = Instant::now();
    let base = match body.pos.as_deref() {
        Some(pos) => {
            let pos: u64 = pos.parse().map_err(|_| Error::UnknownPos)?;
            hs.sliding
                .state(&key, pos, started)
                .map_err(|_| Error::UnknownPos)?
        }
        None => {
            hs.sliding.reset(&key);
            Arc::new(ConnState::default())
        }
    };
    let deadline = started + request.timeout;
    let mut upto = hs.notifier.current().max(base.stream);
    loop {
        let (mut response, state) = build(hs, request, &base, upto).await?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let quiet = body.pos.is_some()
            && response.rooms.is_empty()
            && state.counts == base.counts
            && extensions::is_quiet(&response.extensions);
        if quiet && !remaining.is_zero() {
            let next = hs.notifier.wait_beyond(upto, remaining).await;
            if next > upto {
                upto = next;
                continue;
            }
        }
        response.pos = hs.sliding.store(&key, state, Instant::now()).to_string();
        response.txn_id = body.txn_id.clone();
        return Ok(response);
    }
}

/// The user's rooms in list order as of `upto`. A connection's previous state holds them as
/// of its own position; while no membership changed since, they are brought forward in memory
/// with the message-like events in between (the recent events held in memory), so a woken
/// request does not read the membership index again.
async fn listed(
    hs: &Homeserver,
    user: &ruma::UserId,
    base: &ConnState,
    upto: StreamPosition,
) -> Result<Arc<Vec<Entry>>> {
    let since = base.stream;
    let left_after = if since.0 == 0 { i64::MAX } else { since.0 };
    if let Some(held) = &base.listed
        && since.0 > 0
        && !hs.storage.changed_since(Change::Memberships, since)
        && let Some(bumps) = hs.rooms.bumps_between(since.0, upto.0).await?
    {
        return Ok(match lists::advanced(held, &bumps, left_after) {
            Some(moved) => Arc::new(moved),
            None => held.clone(),
        });
    }
    let rows = hs.rooms.listed_rooms(user, left_after).await?;
    Ok(Arc::new(lists::ordered(rows)))
}

/// Refuses a request past this node's bounds, or with a range that ends before it starts.
fn check_bounds(body: &Request) -> Result<()> {
    let too_long = |s: &Option<String>| s.as_ref().is_some_and(|s| s.len() > MAX_NAME_BYTES);
    if too_long(&body.conn_id) || too_long(&body.txn_id) || too_long(&body.pos) {
        return Err(Error::InvalidParam(format!(
            "conn_id, txn_id and pos are at most {MAX_NAME_BYTES} bytes"
        )));
    }
    if body.lists.len() > MAX_LISTS {
        return Err(Error::InvalidParam(format!("at most {MAX_LISTS} lists")));
    }
    if body.room_subscriptions.len() > MAX_SUBSCRIPTIONS {
        return Err(Error::InvalidParam(format!(
            "at most {MAX_SUBSCRIPTIONS} room subscriptions"
        )));
    }
    for (name, list) in &body.lists {
        if name.len() > MAX_NAME_BYTES {
            return Err(Error::InvalidParam(format!(
                "list names are at most {MAX_NAME_BYTES} bytes"
            )));
        }
        if list.ranges.len() > MAX_RANGES {
            return Err(Error::InvalidParam(format!(
                "list {name:?}: at most {MAX_RANGES} ranges"
            )));
        }
        if let Some((start, end)) = list.ranges.iter().find(|(start, end)| start > end) {
            return Err(Error::InvalidParam(format!(
                "list {name:?}: range [{start}, {end}] ends before it starts"
            )));
        }
        if list.room_details.required_state.len() > MAX_REQUIRED_STATE {
            return Err(Error::InvalidParam(format!(
                "list {name:?}: at most {MAX_REQUIRED_STATE} required_state pairs"
            )));
        }
    }
    if body
        .room_subscriptions
        .values()
        .any(|s| s.required_state.len() > MAX_REQUIRED_STATE)
    {
        return Err(Error::InvalidParam(format!(
            "room subscriptions: at most {MAX_REQUIRED_STATE} required_state pairs"
        )));
    }
    Ok(())
}

/// One room the response covers, with what is asked of it.
struct Wanted {
    entry: Entry,
    spec: RoomSpec,
}

/// Builds the response up to `upto` over the connection state `base`, and the state after it.
async fn build(
    hs: &Homeserver,
    request: &SlidingRequest,
    base: &ConnState,
    upto: StreamPosition,
) -> Result<(Response, ConnState)> {
    let body = &request.body;
    let user = &*request.user;
    let since = base.stream;
    let fresh = since.0 == 0;
    let wants_direct = body
        .lists
        .values()
        .any(|l| l.filters.as_ref().is_some_and(|f| f.is_dm.is_some()));
    let (listed, direct) = tokio::try_join!(listed(hs, user, base, upto), async {
        if !wants_direct {
            return Ok(HashSet::new());
        }
        let content = hs.userdata.account_data(user, None, "m.direct").await?;
        Ok(content.map(|c| room::direct_rooms(&c)).unwrap_or_default())
    })?;
    let mut listed = listed;
    if body
        .lists
        .values()
        .any(|l| lists::asks_kind(l.filters.as_ref()))
    {
        // Invites to rooms this node does not hold: what they are comes from the stripped
        // state the inviting server sent (a few rows, and only for such invites).
        if listed.iter().any(|e| e.kind.is_none()) {
            for entry in Arc::make_mut(&mut listed)
                .iter_mut()
                .filter(|e| e.kind.is_none())
            {
                let state = hs.rooms.invite_state(&entry.room, user).await?;
                entry.kind = Some(lists::kind_from_stripped(&state));
            }
        }
    }
    let entries = &*listed;
    let facts = Facts { direct: &direct };

    let mut response = Response::new(String::new());
    let mut counts = HashMap::new();
    let mut scope = extensions::Scope::default();
    let mut order: Vec<OwnedRoomId> = Vec::new();
    let mut wanted: HashMap<OwnedRoomId, Wanted> = HashMap::new();
    let mut want = |entry: &Entry, spec: &RoomSpec, order: &mut Vec<OwnedRoomId>| match wanted
        .get_mut(&entry.room)
    {
        Some(w) => w.spec.merge(spec),
        None => {
            order.push(entry.room.clone());
            wanted.insert(
                entry.room.clone(),
                Wanted {
                    entry: entry.clone(),
                    spec: spec.clone(),
                },
            );
        }
    };
    for (name, list) in &body.lists {
        let filtered: Vec<&Entry> = entries
            .iter()
            .filter(|e| lists::passes(e, list.filters.as_ref(), &facts))
            .collect();
        let spec = RoomSpec::new(
            &list.room_details.required_state,
            list.room_details.timeline_limit,
        );
        let ranges: Vec<(u64, u64)> = list
            .ranges
            .iter()
            .map(|(a, b)| (u64::from(*a), u64::from(*b)))
            .collect();
        let mut in_window = Vec::new();
        for i in lists::window(&ranges, filtered.len()) {
            if let Some(entry) = filtered.get(i) {
                want(entry, &spec, &mut order);
                in_window.push(entry.room.clone());
            }
        }
        scope.lists.insert(name.clone(), in_window);
        let mut counted = response::List::default();
        counted.count = UInt::try_from(filtered.len()).unwrap_or(UInt::MAX);
        response.lists.insert(name.clone(), counted);
        counts.insert(name.clone(), filtered.len());
    }
    let by_room: HashMap<&OwnedRoomId, &Entry> = entries.iter().map(|e| (&e.room, e)).collect();
    for (room, subscription) in &body.room_subscriptions {
        let entry = match by_room.get(room) {
            Some(entry) => (*entry).clone(),
            None => match hs.rooms.membership_now(room, user).await? {
                // A room left before the connection began is still the user's to look at, up
                // to the leave.
                Some((membership, position)) if membership == "leave" || membership == "ban" => {
                    Entry {
                        room: room.clone(),
                        membership,
                        membership_position: position,
                        bump: position,
                        kind: None,
                    }
                }
                _ => continue,
            },
        };
        let spec = RoomSpec::new(&subscription.required_state, subscription.timeline_limit);
        want(&entry, &spec, &mut order);
        scope.subscribed.push(room.clone());
    }

    // Rooms where something happened since the last response; a room the client holds from
    // before that (it left the window meanwhile) is read from its own copy's position.
    let changed: HashSet<OwnedRoomId> = if fresh {
        HashSet::new()
    } else {
        let (events, receipts) =
            tokio::try_join!(hs.rooms.rooms_with_events(since.0, upto.0), async {
                if hs.storage.changed_since(Change::Ephemeral, since) {
                    hs.userdata.rooms_with_receipts(since, upto).await
                } else {
                    Ok(Vec::new())
                }
            })?;
        events.into_iter().chain(receipts).collect()
    };

    let mut state = ConnState {
        stream: upto,
        rooms: base.rooms.clone(),
        counts,
        listed: Some(listed.clone()),
    };
    let who = (user, &*request.device as &DeviceId);
    for room in &order {
        let Some(Wanted { entry, spec }) = wanted.get(room) else {
            continue;
        };
        let digest = spec.digest();
        let sent = base.rooms.get(room).copied();
        let built = match entry.membership.as_str() {
            "invite" => {
                if sent.is_some_and(|s| s.upto >= entry.membership_position) {
                    None
                } else {
                    scope.initial.insert(room.clone());
                    Some(room::invited(hs, user, entry).await?)
                }
            }
            "join" | "leave" | "ban" => {
                let span = match sent {
                    None => Some(Span {
                        since: None,
                        upto: upto.0,
                        full_state: true,
                    }),
                    // An invite accepted: the client holds only the invite, so the room comes whole.
                    Some(s) if entry.membership == "join" && entry.membership_position > s.upto => {
                        Some(Span {
                            since: None,
                            upto: upto.0,
                            full_state: true,
                        })
                    }
                    Some(s) => {
                        let spec_changed = s.spec != digest;
                        let moved = s.upto < since.0
                            || entry.membership_position > s.upto
                            || changed.contains(room);
                        (spec_changed || moved).then_some(Span {
                            since: Some(s.upto),
                            upto: upto.0,
                            full_state: spec_changed,
                        })
                    }
                };
                match span {
                    None => None,
                    Some(span) => {
                        if span.since.is_none() {
                            scope.initial.insert(room.clone());
                        }
                        match room::joined(hs, who, entry, spec, span).await {
                            Ok(built) => built,
                            // Nothing of the room is the user's to see (a leave long ago in a
                            // room whose history is hidden): it is left out.
                            Err(Error::Forbidden(_)) => None,
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
            _ => continue,
        };
        state.rooms.insert(
            room.clone(),
            SentRoom {
                upto: upto.0,
                spec: digest,
            },
        );
        if let Some(built) = built {
            response.rooms.insert(room.clone(), built);
        }
    }
    response.extensions =
        extensions::extensions(hs, who, body, &scope, extensions::Range { since, upto }).await?;
    Ok((response, state))
}
