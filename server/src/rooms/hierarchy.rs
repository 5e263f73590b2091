//! Space hierarchies: a space lists its rooms in `m.space.child` state events (state key = the
//! child's room ID, `via` = servers to reach it through), and [`hierarchy`] walks them depth
//! first from a root, asking federation about rooms this node does not know.
//!
//! A room is shown to a local user who is joined to it, or when it is world-readable or
//! anyone may join it; to another server when one of its users is joined, or on the same
//! terms. Everything a walk can grow is bounded: rooms visited, children per room, depth and
//! remote lookups.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use ruma::{OwnedRoomId, OwnedServerName, RoomId, ServerName, UserId};
use serde_json::{Map, Value};

use super::Rooms;
use crate::{Error, Result, federation::Remote};

/// Deepest level a walk descends to (the root is level 0).
pub const MAX_HIERARCHY_DEPTH: usize = 10;
/// Rooms one page holds, at most.
pub const MAX_HIERARCHY_LIMIT: usize = 50;
/// Rooms one page holds when the client names no limit.
pub const DEFAULT_HIERARCHY_LIMIT: usize = 20;
/// Children taken from one space, at most.
pub const MAX_SPACE_CHILDREN: usize = 100;
/// Rooms one walk looks at, at most (pages included).
const MAX_WALKED_ROOMS: usize = 500;
/// Rooms one walk asks other servers about, at most.
const MAX_REMOTE_LOOKUPS: usize = 20;

/// A room a space lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpaceChild {
    /// The child room.
    pub room: OwnedRoomId,
    /// Servers to reach it through.
    pub via: Vec<OwnedServerName>,
    /// Whether the space suggests it.
    pub suggested: bool,
    order: Option<String>,
    ts: u64,
}

/// One room of a hierarchy: its public summary and the `m.space.child` events it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct SpaceRoom {
    /// The summary fields (those of a public room listing: `room_id`, `name`, `join_rule`...).
    pub summary: Map<String, Value>,
    /// The stripped `m.space.child` state events that list a child (with a non-empty `via`).
    pub children_state: Vec<Value>,
}

/// What another server says of a space: the space itself and those of its children it knows
/// and lets this server see.
#[derive(Debug, Clone)]
pub struct RemoteSpace {
    /// The space.
    pub room: SpaceRoom,
    /// Its children's summaries (without their own children).
    pub children: Vec<SpaceRoom>,
}

impl SpaceRoom {
    /// The room's ID, from its summary.
    pub fn room_id(&self) -> Option<OwnedRoomId> {
        self.summary
            .get("room_id")
            .and_then(Value::as_str)
            .and_then(|r| OwnedRoomId::try_from(r).ok())
    }

    /// Whether anyone may see it: world-readable history or a public join rule.
    pub fn is_open(&self) -> bool {
        // A summary leaves `join_rule` out when it is public.
        self.summary.get("world_readable") == Some(&Value::Bool(true))
            || self
                .summary
                .get("join_rule")
                .is_none_or(|r| r.as_str() == Some("public"))
    }

    /// The children it lists, in the order a client shows them: by `order`, then by the time
    /// of the event, then by room ID.
    pub fn children(&self, suggested_only: bool) -> Vec<SpaceChild> {
        let mut out: Vec<SpaceChild> = self
            .children_state
            .iter()
            .filter_map(parse_child)
            .filter(|c| c.suggested || !suggested_only)
            .take(MAX_SPACE_CHILDREN)
            .collect();
        out.sort_by(|a, b| {
            let key = |c: &SpaceChild| (c.order.is_none(), c.order.clone());
            key(a)
                .cmp(&key(b))
                .then(a.ts.cmp(&b.ts))
                .then(a.room.cmp(&b.room))
        });
        out
    }

    /// The client's form: the summary with `children_state`.
    pub fn to_chunk(&self) -> Value {
        let mut map = self.summary.clone();
        map.insert(
            "children_state".into(),
            Value::Array(self.children_state.clone()),
        );
        Value::Object(map)
    }

    /// The summary alone, as federation lists a child.
    pub fn to_summary(&self) -> Value {
        Value::Object(self.summary.clone())
    }

    /// Reads a room from another server's answer; `None` when it has no valid room ID.
    pub fn from_chunk(value: &Value) -> Option<SpaceRoom> {
        let mut summary = value.as_object()?.clone();
        OwnedRoomId::try_from(summary.get("room_id")?.as_str()?).ok()?;
        let children_state = match summary.remove("children_state") {
            Some(Value::Array(list)) => list
                .into_iter()
                .filter(|e| parse_child(e).is_some())
                .take(MAX_SPACE_CHILDREN)
                .collect(),
            _ => Vec::new(),
        };
        Some(SpaceRoom {
            summary,
            children_state,
        })
    }
}

/// A `m.space.child` event, when it names a room and at least one server.
fn parse_child(event: &Value) -> Option<SpaceChild> {
    if event["type"] != "m.space.child" {
        return None;
    }
    let room = OwnedRoomId::try_from(event["state_key"].as_str()?).ok()?;
    let via: Vec<OwnedServerName> = event["content"]["via"]
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .filter_map(|s| OwnedServerName::try_from(s).ok())
        .take(MAX_VIA)
        .collect();
    if via.is_empty() {
        return None;
    }
    // The spec's bound on `order`: longer or non-printable values are ignored.
    let order = event["content"]["order"]
        .as_str()
        .filter(|o| o.len() <= 50 && o.chars().all(|c| ('\x20'..='\x7e').contains(&c)))
        .map(str::to_owned);
    Some(SpaceChild {
        room,
        via,
        suggested: event["content"]["suggested"].as_bool().unwrap_or(false),
        order,
        ts: event["origin_server_ts"].as_u64().unwrap_or(0),
    })
}

/// Servers taken from one `via` list, at most.
const MAX_VIA: usize = 10;

/// Who looks at a room.
#[derive(Debug, Clone, Copy)]
pub enum Viewer<'a> {
    /// A local user.
    User(&'a UserId),
    /// Another server.
    Server(&'a ServerName),
}

impl Rooms {
    /// A room this node knows, as a hierarchy shows it (`None` when it does not know it).
    pub async fn space_room(&self, room: &RoomId) -> Result<Option<SpaceRoom>> {
        if !self.is_known(room).await? {
            return Ok(None);
        }
        let chunk = self.public_chunk(room).await?;
        let Value::Object(summary) = serde_json::to_value(&chunk)? else {
            return Err(Error::Internal("room summary is not an object".into()));
        };
        let (_, events) = self.current_state(room).await?;
        let mut children_state: Vec<Value> = events
            .iter()
            .filter(|e| e.kind.to_string() == "m.space.child")
            .map(|e| {
                serde_json::json!({
                    "type": "m.space.child",
                    "state_key": e.state_key.clone().unwrap_or_default(),
                    "sender": e.sender.as_str(),
                    "origin_server_ts": u64::from(e.origin_server_ts.get()),
                    "content": e.content_value(),
                })
            })
            .filter(|e| parse_child(e).is_some())
            .collect();
        children_state.sort_by(|a, b| a["state_key"].as_str().cmp(&b["state_key"].as_str()));
        children_state.truncate(MAX_SPACE_CHILDREN);
        Ok(Some(SpaceRoom {
            summary,
            children_state,
        }))
    }

    /// Whether `viewer` may see a room this node knows, summarised as `summary`.
    pub async fn may_see(&self, room: &SpaceRoom, viewer: Viewer<'_>) -> Result<bool> {
        if room.is_open() {
            return Ok(true);
        }
        let Some(id) = room.room_id() else {
            return Ok(false);
        };
        match viewer {
            Viewer::User(user) => self.is_joined(user, &id).await,
            Viewer::Server(server) => {
                Ok(self.servers_in_room(&id).await?.iter().any(|s| s == server))
            }
        }
    }
}

/// What a client asks of a hierarchy.
#[derive(Debug, Clone)]
pub struct HierarchyQuery {
    /// Deepest level to include (the root is level 0); capped at [`MAX_HIERARCHY_DEPTH`].
    pub max_depth: usize,
    /// Rooms on the page; capped at [`MAX_HIERARCHY_LIMIT`].
    pub limit: usize,
    /// Rooms of the walk already shown on earlier pages.
    pub skip: usize,
    /// Follow only children the space suggests.
    pub suggested_only: bool,
}

/// One page of a hierarchy.
#[derive(Debug, Clone)]
pub struct HierarchyPage {
    /// The rooms, in the client's form.
    pub rooms: Vec<Value>,
    /// The token of the next page.
    pub next_batch: Option<String>,
}

/// Parses a hierarchy `from` token (rooms already shown).
pub fn parse_from(token: &str) -> Result<usize> {
    token
        .parse()
        .map_err(|_| Error::InvalidParam("bad from token".into()))
}

/// Walks the hierarchy under `root` depth first as `user` may see it, asking `remote` about
/// rooms this node does not know.
pub async fn hierarchy(
    rooms: &Rooms,
    remote: Option<&Arc<dyn Remote>>,
    user: &UserId,
    root: &RoomId,
    query: &HierarchyQuery,
) -> Result<HierarchyPage> {
    let max_depth = query.max_depth.min(MAX_HIERARCHY_DEPTH);
    let limit = query.limit.clamp(1, MAX_HIERARCHY_LIMIT);
    match rooms.space_room(root).await? {
        None => return Err(Error::NotFound("unknown room".into())),
        Some(space) => {
            if !rooms.may_see(&space, Viewer::User(user)).await? {
                return Err(Error::Forbidden("you may not see this room".into()));
            }
        }
    }
    // Children summaries other servers sent along, for rooms not looked up on their own.
    let mut heard: HashMap<OwnedRoomId, SpaceRoom> = HashMap::new();
    let mut seen: HashSet<OwnedRoomId> = HashSet::new();
    let mut stack: Vec<(OwnedRoomId, usize, Vec<OwnedServerName>)> =
        vec![(root.to_owned(), 0, Vec::new())];
    let mut shown = 0usize;
    let mut lookups = 0usize;
    let mut out = Vec::new();
    let mut more = false;
    while let Some((room, depth, via)) = stack.pop() {
        if seen.len() >= MAX_WALKED_ROOMS {
            break;
        }
        if !seen.insert(room.clone()) {
            continue;
        }
        let found = match rooms.space_room(&room).await? {
            Some(local) => rooms
                .may_see(&local, Viewer::User(user))
                .await?
                .then_some(local),
            None => {
                let wants_children = depth < max_depth;
                match remote {
                    Some(remote)
                        if lookups < MAX_REMOTE_LOOKUPS
                            && (wants_children || !heard.contains_key(&room)) =>
                    {
                        lookups += 1;
                        match remote.hierarchy(&room, &via, query.suggested_only).await {
                            Ok(Some(answer)) => {
                                for child in answer.children {
                                    if let Some(id) = child.room_id() {
                                        heard.entry(id).or_insert(child);
                                    }
                                }
                                Some(answer.room)
                            }
                            Ok(None) => heard.remove(&room),
                            Err(e) => {
                                tracing::debug!(%room, error = %e, "space child not reached");
                                heard.remove(&room)
                            }
                        }
                    }
                    _ => heard.remove(&room),
                }
            }
        };
        let Some(found) = found else {
            continue;
        };
        if found.room_id().as_deref() != Some(&*room) {
            continue;
        }
        shown += 1;
        if shown > query.skip {
            if out.len() >= limit {
                more = true;
                break;
            }
            out.push(found.to_chunk());
        }
        if depth < max_depth {
            for child in found.children(query.suggested_only).into_iter().rev() {
                if !seen.contains(&child.room) {
                    stack.push((child.room, depth + 1, child.via));
                }
            }
        }
    }
    Ok(HierarchyPage {
        rooms: out,
        next_batch: more.then(|| (query.skip + limit).to_string()),
    })
}

#[cfg(test)]
mod tests;
