//! Receiving PDUs from a transaction: signatures and hashes checked against the names of the
//! servers that signed, then the server core's `add_pdu` (format, auth against auth events,
//! state before and current state, soft-fail, state resolution, persistence). Missing parents
//! are fetched with `get_missing_events` in rounds, bounded in count.

use std::{collections::HashMap, time::Duration};

use tokio::time::{Instant, timeout_at};

use ruma::{CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, RoomId, ServerName};
use serde_json::json;
use tracing::debug;

use crate::{
    Ctx,
    client::segment,
    metrics::{AclRefusal, PduOutcome},
};

/// Missing events asked for at once, at most.
const MISSING_LIMIT: u64 = 50;
/// Missing events fetched in rounds to close one gap, at most; a longer gap is bridged with
/// the state before its newest part.
const MAX_MISSING_EVENTS: usize = 500;
/// State and auth events fetched one by one to fill one gap, at most.
const MAX_GAP_EVENTS: usize = 200;
/// State and auth chain IDs taken from one state_ids answer, at most.
const MAX_STATE_IDS: usize = 10_000;
/// How long one transaction may spend asking its origin to fill gaps. The origin waits for the
/// answer (a Grove sender 12 s per attempt), and an origin that holds its answers back must not
/// hold the transaction: past this, what is missing stays missing.
pub const TRANSACTION_GAP_BUDGET: Duration = Duration::from_secs(9);
/// The part of that budget `get_missing_events` rounds may use; the rest is left for the state
/// before the gap.
const MISSING_EVENTS_BUDGET: Duration = Duration::from_secs(6);

/// Handles one PDU of a transaction from `origin`: its event ID (when it can be computed) and
/// whether it was taken. Requests to the origin about a gap before it end by `deadline`.
pub async fn handle_pdu(
    ctx: &Ctx,
    origin: &ServerName,
    object: CanonicalJsonObject,
    deadline: Instant,
) -> (Option<OwnedEventId>, Result<(), String>) {
    let (id, outcome) = handle_pdu_in(ctx, origin, object, deadline).await;
    if id.is_none() {
        ctx.metrics.pdu(PduOutcome::Refused);
    }
    (id, outcome)
}

async fn handle_pdu_in(
    ctx: &Ctx,
    origin: &ServerName,
    object: CanonicalJsonObject,
    deadline: Instant,
) -> (Option<OwnedEventId>, Result<(), String>) {
    let room = match object.get("room_id") {
        Some(CanonicalJsonValue::String(r)) => match RoomId::parse(r.as_str()) {
            Ok(r) => r,
            Err(e) => return (None, Err(format!("bad room ID: {e}"))),
        },
        _ => return (None, Err("no room ID".into())),
    };
    match ctx.hs.rooms.is_known(&room).await {
        Ok(true) => {}
        Ok(false) => return (None, Err("this server is not in the room".into())),
        Err(e) => return (None, Err(e.to_string())),
    }
    let rules = match ctx.hs.rooms.room_version(&room).await {
        Ok(v) => match grove_server::rooms::builder::rules_for(&v) {
            Ok(r) => r,
            Err(e) => return (None, Err(e.to_string())),
        },
        Err(e) => return (None, Err(e.to_string())),
    };
    let id = match grove_server::rooms::builder::event_id_of(&object, &rules) {
        Ok(id) => id,
        Err(e) => return (None, Err(e.to_string())),
    };
    // The room's server ACL speaks for the origin of the transaction, whoever signed the PDU.
    match ctx.hs.rooms.server_allowed(&room, origin).await {
        Ok(true) => {}
        Ok(false) => {
            ctx.metrics.acl_refused(AclRefusal::Pdu);
            ctx.metrics.pdu(PduOutcome::Refused);
            debug!(%origin, event = %id, "pdu refused by the room's server ACL");
            return (
                Some(id),
                Err("the room's server ACL denies the origin".into()),
            );
        }
        Err(e) => return (Some(id), Err(e.to_string())),
    }
    let outcome = match add_checked(ctx, &room, &rules, object.clone()).await {
        Err(AddError::MissingParents) if Instant::now() >= deadline => Err(AddError::Refused(
            "parents missing, and this transaction's time to ask for them is spent".into(),
        )),
        Err(AddError::MissingParents) => {
            let gap = Gap {
                origin,
                room: &room,
                rules: &rules,
                deadline,
            };
            fetch_missing(ctx, &gap, &id, &prev_events(&object)).await;
            match add_checked(ctx, &room, &rules, object.clone()).await {
                Err(AddError::MissingParents) => add_after_gap(ctx, &gap, object, &id).await,
                other => other,
            }
        }
        other => other,
    };
    count(ctx, &outcome);
    let outcome = outcome.map(drop).map_err(|e| e.to_string());
    if let Err(e) = &outcome {
        debug!(%origin, event = %id, error = %e, "pdu refused");
    }
    (Some(id), outcome)
}

/// Where a gap is and whom to ask about it, until when. Only requests are cut at the deadline,
/// never a write: a write that stops half-way would leave the room's head behind the database.
pub(crate) struct Gap<'a> {
    /// The server asked.
    pub(crate) origin: &'a ServerName,
    /// The room.
    pub(crate) room: &'a RoomId,
    /// The room version's rules.
    pub(crate) rules: &'a ruma::room_version_rules::RoomVersionRules,
    /// When requests about the gap stop.
    pub(crate) deadline: Instant,
}

impl Gap<'_> {
    /// A request to the origin, given up at the deadline.
    async fn ask(
        &self,
        ctx: &Ctx,
        method: http::Method,
        path: &str,
        body: Option<&serde_json::Value>,
        until: Instant,
    ) -> Result<serde_json::Value, String> {
        match timeout_at(until, ctx.client.request(self.origin, method, path, body)).await {
            Ok(answer) => answer.map_err(|e| e.to_string()),
            Err(_) => Err("no answer in the time given to the gap".into()),
        }
    }
}

/// Counts what became of a PDU.
fn count(ctx: &Ctx, outcome: &Result<PduOutcome, AddError>) {
    ctx.metrics.pdu(match outcome {
        Ok(verdict) => *verdict,
        Err(AddError::Rejected(_)) => PduOutcome::Rejected,
        Err(AddError::MissingParents | AddError::Refused(_)) => PduOutcome::Refused,
    });
}

#[derive(Debug, thiserror::Error)]
enum AddError {
    #[error("parents unknown")]
    MissingParents,
    /// Failed the authorization rules; stored as rejected.
    #[error("rejected: {0}")]
    Rejected(String),
    #[error("{0}")]
    Refused(String),
}

/// `object` once its signatures are checked: whole when its content hash matches, redacted
/// when it does not (the spec keeps an altered event in its redacted form).
pub(crate) async fn checked_or_redacted(
    ctx: &Ctx,
    object: CanonicalJsonObject,
    rules: &ruma::room_version_rules::RoomVersionRules,
) -> Result<CanonicalJsonObject, String> {
    match ctx.keys.check_event(&object, rules).await {
        Ok(()) => Ok(object),
        Err(crate::keys::EventCheckError::Hash) => {
            ctx.metrics.pdu_redacted();
            ruma::canonical_json::redact(object, &rules.redaction, None).map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    }
}

async fn add_checked(
    ctx: &Ctx,
    room: &RoomId,
    rules: &ruma::room_version_rules::RoomVersionRules,
    object: CanonicalJsonObject,
) -> Result<PduOutcome, AddError> {
    let object = checked_or_redacted(ctx, object, rules)
        .await
        .map_err(AddError::Refused)?;
    match ctx.hs.rooms.add_pdu(room, object).await {
        Ok(grove_server::rooms::auth::RemoteVerdict::Rejected(why)) => Err(AddError::Rejected(why)),
        Ok(grove_server::rooms::auth::RemoteVerdict::SoftFailed(why)) => {
            debug!(%room, %why, "pdu soft-failed");
            Ok(PduOutcome::SoftFailed)
        }
        Ok(grove_server::rooms::auth::RemoteVerdict::Accepted) => Ok(PduOutcome::Accepted),
        Err(grove_server::Error::NotFound(why)) => {
            debug!(%room, %why, "pdu parents unknown");
            Err(AddError::MissingParents)
        }
        Err(e) => Err(AddError::Refused(e.to_string())),
    }
}

/// Asks `origin` for the events between our head and `latest` (whose parents are
/// `parents`), in rounds of [`MISSING_LIMIT`] going further back while the oldest still lack
/// parents (at most [`MAX_MISSING_EVENTS`] in all), and adds them oldest first. Only events on
/// the way back from `latest` are kept: whatever else an answer holds was not asked for.
async fn fetch_missing(ctx: &Ctx, gap: &Gap<'_>, latest: &OwnedEventId, parents: &[OwnedEventId]) {
    let Gap {
        origin,
        room,
        rules,
        ..
    } = *gap;
    // Rounds stop early enough to leave time for the state before what they could not close.
    let rounds_by = gap.deadline.min(Instant::now() + MISSING_EVENTS_BUDGET);
    let earliest = ctx.hs.rooms.extremities(room).await.unwrap_or_default();
    let mut collected: HashMap<OwnedEventId, (i64, CanonicalJsonObject)> = HashMap::new();
    let mut from = vec![latest.clone()];
    let rounds = MAX_MISSING_EVENTS / MISSING_LIMIT as usize;
    for _ in 0..rounds {
        if from.is_empty() {
            break;
        }
        if Instant::now() >= rounds_by {
            break;
        }
        let page = missing_page(ctx, gap, &earliest, &from, rounds_by).await;
        let before = collected.len();
        let full = page.len() as u64 >= MISSING_LIMIT;
        for event in page {
            let Ok(id) = grove_server::rooms::builder::event_id_of(&event, rules) else {
                continue;
            };
            collected.insert(id, (depth_of(&event), event));
        }
        retain_ancestors(&mut collected, parents);
        if !full || collected.len() == before {
            break;
        }
        // The next round asks for what precedes the collected events whose parents neither
        // side of the gap holds yet.
        let mut parents: Vec<(OwnedEventId, OwnedEventId)> = Vec::new();
        for (id, (_, event)) in &collected {
            for parent in prev_events(event) {
                if !collected.contains_key(&parent) && !earliest.contains(&parent) {
                    parents.push((id.clone(), parent));
                }
            }
        }
        let ids: Vec<OwnedEventId> = parents.iter().map(|(_, p)| p.clone()).collect();
        let unknown = ctx.hs.rooms.unknown_events(&ids).await.unwrap_or_default();
        from = parents
            .into_iter()
            .filter(|(_, p)| unknown.contains(p))
            .map(|(child, _)| child)
            .collect();
        from.sort();
        from.dedup();
    }
    let mut events: Vec<(i64, CanonicalJsonObject)> = collected.into_values().collect();
    events.sort_by_key(|(depth, _)| *depth);
    // The oldest may still lack parents (a gap longer than what was asked for): it is added
    // with the state the origin reports before it, and the rest chain on to it.
    let mut gaps = 0;
    for (_, event) in events {
        let outcome = match add_checked(ctx, room, rules, event.clone()).await {
            Err(AddError::MissingParents) if gaps == 0 => {
                gaps += 1;
                match grove_server::rooms::builder::event_id_of(&event, rules) {
                    Ok(id) => add_after_gap(ctx, gap, event, &id).await,
                    Err(e) => Err(AddError::Refused(e.to_string())),
                }
            }
            other => other,
        };
        count(ctx, &outcome);
        if let Err(e) = outcome {
            debug!(%origin, error = %e, "missing event refused");
        }
    }
}

/// Keeps of `collected` the events reached from `parents` along `prev_events` within it.
fn retain_ancestors(
    collected: &mut HashMap<OwnedEventId, (i64, CanonicalJsonObject)>,
    parents: &[OwnedEventId],
) {
    let mut reached = std::collections::HashSet::new();
    let mut stack = parents.to_vec();
    while let Some(id) = stack.pop() {
        if let Some((_, event)) = collected.get(&id)
            && reached.insert(id)
        {
            stack.extend(prev_events(event));
        }
    }
    collected.retain(|id, _| reached.contains(id));
}

/// An event object's `depth` (0 when absent or malformed).
fn depth_of(event: &CanonicalJsonObject) -> i64 {
    match event.get("depth") {
        Some(CanonicalJsonValue::Integer(d)) => i64::from(*d),
        _ => 0,
    }
}

/// An event object's `prev_events` that parse as event IDs.
fn prev_events(event: &CanonicalJsonObject) -> Vec<OwnedEventId> {
    match event.get("prev_events") {
        Some(CanonicalJsonValue::Array(prev)) => prev
            .iter()
            .filter_map(|p| match p {
                CanonicalJsonValue::String(p) => OwnedEventId::try_from(p.as_str()).ok(),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// One get_missing_events answer from the gap's origin: the events before `latest` back to
/// `earliest`, at most [`MISSING_LIMIT`] (none when the request fails or is not answered by
/// `until`).
async fn missing_page(
    ctx: &Ctx,
    gap: &Gap<'_>,
    earliest: &[OwnedEventId],
    latest: &[OwnedEventId],
    until: Instant,
) -> Vec<CanonicalJsonObject> {
    let body = json!({
        "earliest_events": earliest,
        "latest_events": latest,
        "limit": MISSING_LIMIT,
        "min_depth": 0,
    });
    let path = format!(
        "/_matrix/federation/v1/get_missing_events/{}",
        segment(gap.room.as_str())
    );
    match gap
        .ask(ctx, http::Method::POST, &path, Some(&body), until)
        .await
    {
        Ok(answer) => pdu_objects(&answer, MISSING_LIMIT as usize),
        Err(e) => {
            debug!(origin = %gap.origin, error = %e, "get_missing_events failed");
            Vec::new()
        }
    }
}

/// The PDU objects of an answer's `events` or `pdus` array, at most `limit`.
pub(crate) fn pdu_objects(answer: &serde_json::Value, limit: usize) -> Vec<CanonicalJsonObject> {
    let list = answer["events"].as_array().or(answer["pdus"].as_array());
    list.into_iter()
        .flatten()
        .take(limit)
        .filter_map(|v| match CanonicalJsonValue::try_from(v.clone()) {
            Ok(CanonicalJsonValue::Object(o)) => Some(o),
            _ => None,
        })
        .collect()
}

/// Adds an event whose parents cannot be had: asks `origin` for the state before it, fetches
/// the state and auth events this node lacks (bounded), and adds the event over that state.
async fn add_after_gap(
    ctx: &Ctx,
    gap: &Gap<'_>,
    object: CanonicalJsonObject,
    id: &OwnedEventId,
) -> Result<PduOutcome, AddError> {
    let object = checked_or_redacted(ctx, object, gap.rules)
        .await
        .map_err(AddError::Refused)?;
    let state = state_before(ctx, gap, id)
        .await
        .map_err(AddError::Refused)?;
    match ctx
        .hs
        .rooms
        .add_pdu_after_gap(gap.room, object, state)
        .await
    {
        Ok(grove_server::rooms::auth::RemoteVerdict::Rejected(why)) => Err(AddError::Rejected(why)),
        Ok(grove_server::rooms::auth::RemoteVerdict::SoftFailed(_)) => Ok(PduOutcome::SoftFailed),
        Ok(grove_server::rooms::auth::RemoteVerdict::Accepted) => Ok(PduOutcome::Accepted),
        Err(e) => Err(AddError::Refused(e.to_string())),
    }
}

/// The state before event `id` as `origin` reports it, after storing (as outliers) the state
/// and auth events this node lacks, at most [`MAX_GAP_EVENTS`] of them.
pub(crate) async fn state_before(
    ctx: &Ctx,
    gap: &Gap<'_>,
    id: &OwnedEventId,
) -> Result<grove_server::rooms::StateMap, String> {
    let path = format!(
        "/_matrix/federation/v1/state_ids/{}?event_id={}",
        segment(gap.room.as_str()),
        segment(id.as_str())
    );
    let answer = gap
        .ask(ctx, http::Method::GET, &path, None, gap.deadline)
        .await
        .map_err(|e| format!("state_ids: {e}"))?;
    let ids = |field: &str| -> Vec<OwnedEventId> {
        answer[field]
            .as_array()
            .into_iter()
            .flatten()
            .take(MAX_STATE_IDS)
            .filter_map(|v| v.as_str())
            .filter_map(|s| OwnedEventId::try_from(s).ok())
            .collect()
    };
    let state_ids = ids("pdu_ids");
    let mut wanted = state_ids.clone();
    wanted.extend(ids("auth_chain_ids"));
    fetch_unknown(ctx, gap, wanted).await?;
    ctx.hs
        .rooms
        .state_map_of(gap.room, &state_ids)
        .await
        .map_err(|e| e.to_string())
}

/// Fetches from `origin` those of `wanted` this node lacks (at most [`MAX_GAP_EVENTS`]),
/// checks their signatures and hashes, and stores them as outliers.
pub(crate) async fn fetch_unknown(
    ctx: &Ctx,
    gap: &Gap<'_>,
    mut wanted: Vec<OwnedEventId>,
) -> Result<(), String> {
    let Gap { room, rules, .. } = *gap;
    wanted.sort();
    wanted.dedup();
    let unknown = ctx
        .hs
        .rooms
        .unknown_events(&wanted)
        .await
        .map_err(|e| e.to_string())?;
    if unknown.len() > MAX_GAP_EVENTS {
        return Err(format!(
            "gap needs {} events, more than {MAX_GAP_EVENTS}",
            unknown.len()
        ));
    }
    let mut fetched = Vec::with_capacity(unknown.len());
    for missing in &unknown {
        let path = format!("/_matrix/federation/v1/event/{}", segment(missing.as_str()));
        let answer = gap
            .ask(ctx, http::Method::GET, &path, None, gap.deadline)
            .await
            .map_err(|e| format!("event {missing}: {e}"))?;
        let Some(Ok(CanonicalJsonValue::Object(event))) = answer["pdus"]
            .as_array()
            .and_then(|a| a.first())
            .map(|v| CanonicalJsonValue::try_from(v.clone()))
        else {
            return Err(format!("event {missing}: no PDU"));
        };
        let got =
            grove_server::rooms::builder::event_id_of(&event, rules).map_err(|e| e.to_string())?;
        if got != *missing {
            return Err(format!("asked for {missing}, got {got}"));
        }
        fetched.push(checked_or_redacted(ctx, event, rules).await?);
    }
    ctx.hs
        .rooms
        .store_outliers(room, &fetched)
        .await
        .map_err(|e| e.to_string())
}

/// Typing notifications longer than this are cut short (a remote server cannot keep a user
/// typing for ever).
const MAX_REMOTE_TYPING: std::time::Duration = std::time::Duration::from_secs(30);

/// Handles one EDU from `origin`: typing and read receipts of its users in rooms it shares with
/// this node, presence, and the E2EE kinds; other kinds are accepted and ignored.
pub async fn handle_edu(ctx: &Ctx, origin: &ServerName, edu: &serde_json::Value) {
    let content = &edu["content"];
    match edu["edu_type"].as_str() {
        Some(crate::homes::REPLICA_DOCUMENT_EDU) => {
            // The origin's own home only: a peer cannot push documents of other homes.
            if crate::keys::is_hex_name(origin) {
                let _ = ctx.keys.homes().offer(origin, content).await;
            }
        }
        Some("m.typing") => {
            let (Some(room), Some(user)) = (
                content["room_id"]
                    .as_str()
                    .and_then(|r| RoomId::parse(r).ok()),
                content["user_id"]
                    .as_str()
                    .and_then(|u| ruma::UserId::parse(u).ok()),
            ) else {
                return;
            };
            if user.server_name() != origin || !shares_room(ctx, origin, &room).await {
                return;
            }
            let timeout = content["typing"].as_bool().unwrap_or(false).then(|| {
                content["timeout"]
                    .as_u64()
                    .map(std::time::Duration::from_millis)
                    .unwrap_or(MAX_REMOTE_TYPING)
                    .min(MAX_REMOTE_TYPING)
            });
            if let Err(e) = ctx.hs.userdata.set_typing(&room, &user, timeout).await {
                debug!(%origin, error = %e, "typing EDU not applied");
            }
        }
        Some("m.receipt") => {
            let Some(rooms) = content.as_object() else {
                return;
            };
            for (room, kinds) in rooms.iter().take(MAX_RECEIPT_ROOMS) {
                let Ok(room) = RoomId::parse(room.as_str()) else {
                    continue;
                };
                if !shares_room(ctx, origin, &room).await {
                    continue;
                }
                let Some(users) = kinds["m.read"].as_object() else {
                    continue;
                };
                for (user, receipt) in users.iter().take(MAX_RECEIPT_USERS) {
                    let Ok(user) = ruma::UserId::parse(user.as_str()) else {
                        continue;
                    };
                    let event = receipt["event_ids"]
                        .as_array()
                        .and_then(|a| a.first())
                        .and_then(|e| e.as_str())
                        .and_then(|e| ruma::EventId::parse(e).ok());
                    let Some(event) = event else {
                        continue;
                    };
                    if user.server_name() != origin {
                        continue;
                    }
                    let thread = receipt["data"]["thread_id"].as_str();
                    if let Err(e) = ctx
                        .hs
                        .userdata
                        .set_receipt(&room, &user, "m.read", thread, &event)
                        .await
                    {
                        debug!(%origin, error = %e, "receipt EDU not applied");
                    }
                }
            }
        }
        Some("m.presence") => crate::presence::handle_presence(ctx, origin, content).await,
        _ => crate::e2ee::handle_edu(ctx, origin, edu).await,
    }
}

/// Rooms named in one receipt EDU, at most.
const MAX_RECEIPT_ROOMS: usize = 50;
/// Users in one room of one receipt EDU, at most.
const MAX_RECEIPT_USERS: usize = 100;

/// Whether `origin` has a member in `room` and the room's server ACL lets it speak there.
async fn shares_room(ctx: &Ctx, origin: &ServerName, room: &RoomId) -> bool {
    let member = ctx
        .hs
        .rooms
        .servers_in_room(room)
        .await
        .is_ok_and(|servers| servers.iter().any(|s| s == origin));
    if !member {
        return false;
    }
    if ctx
        .hs
        .rooms
        .server_allowed(room, origin)
        .await
        .unwrap_or(false)
    {
        true
    } else {
        ctx.metrics.acl_refused(AclRefusal::Edu);
        false
    }
}
