//! Fetching a room's older history from the other servers in it, for a client paging back past
//! the oldest event this node holds (before it joined, say).
//!
//! The events are asked for with `/backfill` from the parents missing under the timeline,
//! checked (signatures and hashes against their signers' names), their missing auth events and,
//! where their parents cannot be had, the state before them fetched as in a gap, and then placed
//! by the server core under the timeline.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use grove_server::{Result, rooms::backfill::MAX_BACKFILL_BATCH};
use ruma::{CanonicalJsonValue, OwnedEventId, OwnedRoomId, RoomId};
use tracing::debug;

use crate::{Ctx, client::segment, keys, receive};

/// Servers asked in turn for one backfill, at most.
const MAX_SERVERS: usize = 3;
/// Events whose state is fetched separately in one backfill, at most (each costs a
/// `state_ids` request).
const MAX_STATE_FETCHES: usize = 3;
/// How long a frontier no server could extend is left alone.
const RETRY_AFTER: Duration = Duration::from_secs(60);
/// How long one backfill from one server may spend fetching the auth and state events its
/// answer needs.
const BACKFILL_GAP_BUDGET: Duration = Duration::from_secs(30);
/// Rooms whose failed frontiers are remembered, at most.
const MAX_REMEMBERED: usize = 1024;

/// Frontiers that no server could extend lately, by room.
#[derive(Default)]
pub struct Attempts(Mutex<HashMap<OwnedRoomId, (Vec<OwnedEventId>, Instant)>>);

impl Attempts {
    fn recently_failed(&self, room: &RoomId, frontier: &[OwnedEventId]) -> bool {
        let Ok(map) = self.0.lock() else {
            return false;
        };
        map.get(room)
            .is_some_and(|(f, at)| f == frontier && at.elapsed() < RETRY_AFTER)
    }

    fn failed(&self, room: &RoomId, frontier: Vec<OwnedEventId>) {
        let Ok(mut map) = self.0.lock() else {
            return;
        };
        if map.len() >= MAX_REMEMBERED {
            map.retain(|_, (_, at)| at.elapsed() < RETRY_AFTER);
            if map.len() >= MAX_REMEMBERED {
                map.clear();
            }
        }
        map.insert(room.to_owned(), (frontier, Instant::now()));
    }
}

/// Backfills up to `limit` events of `room`; how many were placed under its timeline.
pub async fn backfill(
    ctx: &Ctx,
    attempts: &Attempts,
    room: &RoomId,
    limit: usize,
) -> Result<usize> {
    let rooms = &ctx.hs.rooms;
    let frontier = rooms.backfill_frontier(room).await?;
    if frontier.is_empty() || attempts.recently_failed(room, &frontier) {
        return Ok(0);
    }
    let rules = grove_server::rooms::builder::rules_for(&rooms.room_version(room).await?)?;
    let limit = limit.clamp(1, MAX_BACKFILL_BATCH);
    let mut servers = rooms.servers_in_room(room).await?;
    servers.retain(|s| *s != ctx.hs.config.server_name);
    for server in servers.iter().take(MAX_SERVERS) {
        let mut path = format!(
            "/_matrix/federation/v1/backfill/{}?limit={limit}",
            segment(room.as_str())
        );
        for id in &frontier {
            path.push_str("&v=");
            path.push_str(&segment(id.as_str()));
        }
        let answer = match ctx
            .client
            .request(server, http::Method::GET, &path, None)
            .await
        {
            Ok(a) => a,
            Err(e) => {
                debug!(%room, %server, error = %e, "backfill request failed");
                continue;
            }
        };
        // Events of other rooms are left out when placed (a v12 create event names its room
        // only through its ID).
        let mut events = Vec::new();
        for object in receive::pdu_objects(&answer, limit) {
            match ctx.keys.check_event(&object, &rules).await {
                Ok(()) => events.push(object),
                // Signed but altered, or withheld from this server: kept in its redacted form.
                Err(keys::EventCheckError::Hash) => {
                    if let Ok(redacted) =
                        ruma::canonical_json::redact(object, &rules.redaction, None)
                    {
                        events.push(redacted);
                    }
                }
                Err(keys::EventCheckError::Signature(_)) => {}
            }
        }
        if events.is_empty() {
            continue;
        }
        // Auth events the batch names and this node lacks, so each can be checked.
        let ids: Vec<OwnedEventId> = events
            .iter()
            .filter_map(|o| grove_server::rooms::builder::event_id_of(o, &rules).ok())
            .collect();
        let auth: Vec<OwnedEventId> = events
            .iter()
            .filter_map(|o| match o.get("auth_events") {
                Some(CanonicalJsonValue::Array(a)) => Some(a),
                _ => None,
            })
            .flatten()
            .filter_map(|v| match v {
                CanonicalJsonValue::String(s) => OwnedEventId::try_from(s.as_str()).ok(),
                _ => None,
            })
            .filter(|id| !ids.contains(id))
            .collect();
        let gap = receive::Gap {
            origin: server,
            room,
            rules: &rules,
            deadline: tokio::time::Instant::now() + BACKFILL_GAP_BUDGET,
        };
        if let Err(e) = receive::fetch_unknown(ctx, &gap, auth).await {
            debug!(%room, %server, error = %e, "backfill auth events not fetched");
        }
        let mut states = HashMap::new();
        for id in rooms
            .backfill_needs_state(room, &events)
            .await?
            .into_iter()
            .take(MAX_STATE_FETCHES)
        {
            match receive::state_before(ctx, &gap, &id).await {
                Ok(state) => {
                    states.insert(id, state);
                }
                Err(e) => debug!(%room, %server, event = %id, error = %e, "backfill state"),
            }
        }
        let placed = rooms.add_backfilled(room, &events, &states).await?;
        debug!(%room, %server, placed, "backfilled");
        if placed > 0 {
            return Ok(placed);
        }
    }
    attempts.failed(room, frontier);
    Ok(0)
}
