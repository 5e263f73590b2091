//! The federation router: one handler per endpoint of the server-server API, behind a layer
//! that checks the `X-Matrix` signature of every request: a hex origin against its
//! name-derived key, tied to the overlay key of the session the request came on; a DNS origin
//! against the keys its key server published. The same router serves overlay sessions and the
//! HTTPS listener.
//!
//! - `GET /_matrix/federation/v1/version`, `GET /_matrix/key/v2/server`
//! - `GET .../v1/make_join/{roomId}/{userId}`, `PUT .../v2/send_join/{roomId}/{eventId}`
//! - `GET .../v1/make_leave/{roomId}/{userId}`, `PUT .../v2/send_leave/{roomId}/{eventId}`
//! - `PUT .../v2/invite/{roomId}/{eventId}`, `PUT .../v1/send/{txnId}`
//! - `GET .../v1/state_ids/{roomId}`, `GET .../v1/state/{roomId}`, `GET .../v1/event/{eventId}`,
//!   `GET .../v1/event_auth/{roomId}/{eventId}`, `POST .../v1/get_missing_events/{roomId}`,
//!   `GET .../v1/backfill/{roomId}`
//! - `GET .../v1/query/profile`, `GET .../v1/query/directory`
//! - `GET|POST .../v1/publicRooms`, `GET .../v1/hierarchy/{roomId}`

use std::{sync::Arc, time::Duration};

use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::{Path, RawQuery, State},
    routing::{get, post, put},
};
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, MilliSecondsSinceUnixEpoch, OwnedEventId,
    OwnedServerName, RoomAliasId, RoomId, ServerName, UserId, serde::Base64,
};
use serde_json::{Value, json};

use grove_server::rooms::{directory::PublicRoomsQuery, hierarchy::Viewer};

use crate::{Ctx, error::FedError, keys};

mod auth;
mod membership;
mod send;

pub use auth::Origin;
use auth::authenticate;
use membership::{invite, make_join, make_leave, send_join, send_leave};
pub(crate) use send::RecentTxns;
use send::send_transaction;
pub use send::{TransactionBody, parse_transaction};

/// The largest request body accepted: a transaction of 50 PDUs at the size limit (3.2 MiB)
/// and 100 EDUs beside them, with room to spare.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Stripped state events kept with a remote invite, at most.
const MAX_INVITE_STATE: usize = 20;
/// Events answered to one get_missing_events or backfill request, at most.
const MAX_WALK_ANSWER: usize = 100;

type Ctxt = State<Arc<Ctx>>;
type Answer = Result<Json<Value>, FedError>;

/// The federation router over `ctx`.
pub fn router(ctx: Arc<Ctx>) -> Router {
    Router::new()
        .route("/_matrix/federation/v1/version", get(version))
        .route("/_matrix/key/v2/server", get(server_keys))
        .route(
            "/_matrix/federation/v1/make_join/{room_id}/{user_id}",
            get(make_join),
        )
        .route(
            "/_matrix/federation/v2/send_join/{room_id}/{event_id}",
            put(send_join),
        )
        .route(
            "/_matrix/federation/v1/make_leave/{room_id}/{user_id}",
            get(make_leave),
        )
        .route(
            "/_matrix/federation/v2/send_leave/{room_id}/{event_id}",
            put(send_leave),
        )
        .route(
            "/_matrix/federation/v2/invite/{room_id}/{event_id}",
            put(invite),
        )
        .route(
            "/_matrix/federation/v1/send/{txn_id}",
            put(send_transaction),
        )
        .route("/_matrix/federation/v1/state_ids/{room_id}", get(state_ids))
        .route("/_matrix/federation/v1/state/{room_id}", get(state))
        .route("/_matrix/federation/v1/event/{event_id}", get(event))
        .route(
            "/_matrix/federation/v1/event_auth/{room_id}/{event_id}",
            get(event_auth),
        )
        .route(
            "/_matrix/federation/v1/get_missing_events/{room_id}",
            post(get_missing_events),
        )
        .route("/_matrix/federation/v1/backfill/{room_id}", get(backfill))
        .route("/_matrix/federation/v1/query/profile", get(query_profile))
        .route(
            "/_matrix/federation/v1/query/directory",
            get(query_directory),
        )
        .route(
            "/_matrix/federation/v1/publicRooms",
            get(public_rooms).post(public_rooms_filtered),
        )
        .route("/_matrix/federation/v1/hierarchy/{room_id}", get(hierarchy))
        .merge(crate::e2ee::routes())
        .merge(crate::media::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            ctx.metrics.clone(),
            crate::metrics::record,
        ))
        .fallback(|| async {
            FedError::new(
                http::StatusCode::NOT_FOUND,
                "M_UNRECOGNIZED",
                "Unrecognized request",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            ctx.clone(),
            authenticate,
        ))
        // `authenticate` bounds the body; the extractors' own default (2 MiB) would refuse a
        // legal transaction, in plain text.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(grove_listen::panic_net(ctx.metrics.clone()))
        .with_state(ctx)
}

fn json_object(bytes: &[u8]) -> Result<CanonicalJsonObject, FedError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| FedError::bad_json(format!("not JSON: {e}")))?;
    match CanonicalJsonValue::try_from(value) {
        Ok(CanonicalJsonValue::Object(map)) => Ok(map),
        Ok(_) => Err(FedError::bad_json("expected a JSON object")),
        Err(e) => Err(FedError::bad_json(format!("not canonical JSON: {e}"))),
    }
}

fn room_id(text: &str) -> Result<&RoomId, FedError> {
    <&RoomId>::try_from(text).map_err(|e| FedError::bad_json(format!("room ID: {e}")))
}

fn event_id(text: &str) -> Result<&EventId, FedError> {
    <&EventId>::try_from(text).map_err(|e| FedError::bad_json(format!("event ID: {e}")))
}

/// Query parameters, in order; repeated names kept.
fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn pdu_value(pdu: &grove_server::rooms::Pdu) -> Value {
    serde_json::from_str(&pdu.json).unwrap_or(Value::Null)
}

async fn require_in_room(
    ctx: &Ctx,
    origin: &OwnedServerName,
    room: &RoomId,
) -> Result<(), FedError> {
    if !ctx.hs.rooms.is_known(room).await? {
        return Err(FedError::not_found("unknown room"));
    }
    require_acl(ctx, origin, room).await?;
    if ctx.hs.rooms.servers_in_room(room).await?.contains(origin) {
        Ok(())
    } else {
        Err(FedError::forbidden("your server is not in this room"))
    }
}

/// `M_FORBIDDEN` (and counted) when the room's server ACL denies `origin`.
pub(crate) async fn require_acl(
    ctx: &Ctx,
    origin: &ServerName,
    room: &RoomId,
) -> Result<(), FedError> {
    if ctx.hs.rooms.server_allowed(room, origin).await? {
        Ok(())
    } else {
        ctx.metrics.acl_refused(crate::metrics::AclRefusal::Request);
        Err(FedError::forbidden(
            "the room's server ACL denies your server",
        ))
    }
}

/// `GET /_matrix/federation/v1/version`
async fn version() -> Json<Value> {
    Json(json!({ "server": { "name": "Grove", "version": env!("CARGO_PKG_VERSION") } }))
}

/// The field of `/_matrix/key/v2/server` holding a home's replica document.
pub const REPLICA_DOCUMENT_FIELD: &str = "org.grove.replica_document";

/// `GET /_matrix/key/v2/server`
async fn server_keys(State(ctx): Ctxt) -> Answer {
    let key = &ctx.hs.key;
    let valid_until = MilliSecondsSinceUnixEpoch::from_system_time(
        std::time::SystemTime::now() + Duration::from_secs(7 * 24 * 3600),
    )
    .map(|t| u64::from(t.get()))
    .unwrap_or(0);
    let mut doc = json!({
        "server_name": ctx.hs.config.server_name.as_str(),
        "valid_until_ts": valid_until,
        "verify_keys": { key.key_id(): { "key": Base64::<ruma::serde::base64::Standard, _>::new(key.public_bytes().to_vec()).encode() } },
        "old_verify_keys": {},
    });
    // A home's replica document rides along: anyone can check it against the name, and its
    // revoked keys are this home's old keys.
    let server_name = &ctx.hs.config.server_name;
    if keys::is_hex_name(server_name)
        && let Some(replicas) = grove_server::home::load(&ctx.hs.storage, server_name).await?
    {
        let own = key.key_id();
        for revoked in replicas.revoked().iter().filter(|r| r.key_id != own) {
            doc["old_verify_keys"][&revoked.key_id] =
                json!({ "key": revoked.key, "expired_ts": revoked.expired_ts });
        }
        doc[REPLICA_DOCUMENT_FIELD] = replicas.to_json();
    }
    let mut object = match CanonicalJsonValue::try_from(doc) {
        Ok(CanonicalJsonValue::Object(o)) => o,
        _ => return Err(FedError::bad_json("key document")),
    };
    ruma::signatures::sign_json(
        ctx.hs.config.server_name.as_str(),
        key.key_pair(),
        &mut object,
    )
    .map_err(|e| FedError::from(grove_server::Error::Internal(e.to_string())))?;
    Ok(Json(serde_json::to_value(object).unwrap_or(Value::Null)))
}

fn query_event_id(query: Option<&str>) -> Result<OwnedEventId, FedError> {
    let id = query_pairs(query)
        .into_iter()
        .find(|(k, _)| k == "event_id")
        .map(|(_, v)| v)
        .ok_or_else(|| {
            FedError::new(
                http::StatusCode::BAD_REQUEST,
                "M_MISSING_PARAM",
                "event_id missing",
            )
        })?;
    OwnedEventId::try_from(id).map_err(|e| FedError::bad_json(format!("event ID: {e}")))
}

/// `GET /_matrix/federation/v1/state_ids/{roomId}?event_id=`
async fn state_ids(
    State(ctx): Ctxt,
    Extension(origin): Extension<Origin>,
    Path(room): Path<String>,
    RawQuery(query): RawQuery,
) -> Answer {
    let room = room_id(&room)?;
    require_in_room(&ctx, &origin.0, room).await?;
    let at = query_event_id(query.as_deref())?;
    let (state, chain) = ctx.hs.rooms.state_and_auth_chain(room, &at).await?;
    Ok(Json(json!({
        "pdu_ids": state.iter().map(|p| p.event_id.as_str()).collect::<Vec<_>>(),
        "auth_chain_ids": chain.iter().map(|p| p.event_id.as_str()).collect::<Vec<_>>(),
    })))
}

/// `GET /_matrix/federation/v1/state/{roomId}?event_id=`
async fn state(
    State(ctx): Ctxt,
    Extension(origin): Extension<Origin>,
    Path(room): Path<String>,
    RawQuery(query): RawQuery,
) -> Answer {
    let room = room_id(&room)?;
    require_in_room(&ctx, &origin.0, room).await?;
    let at = query_event_id(query.as_deref())?;
    let (state, chain) = ctx.hs.rooms.state_and_auth_chain(room, &at).await?;
    Ok(Json(json!({
        "pdus": state.iter().map(pdu_value).collect::<Vec<_>>(),
        "auth_chain": chain.iter().map(pdu_value).collect::<Vec<_>>(),
    })))
}

fn now_ms() -> u64 {
    u64::from(MilliSecondsSinceUnixEpoch::now().get())
}

/// `GET /_matrix/federation/v1/event/{eventId}`
async fn event(
    State(ctx): Ctxt,
    Extension(origin): Extension<Origin>,
    Path(id): Path<String>,
) -> Answer {
    let id = event_id(&id)?;
    let room = ctx
        .hs
        .rooms
        .pdu(id.as_str())
        .await?
        .ok_or_else(|| FedError::not_found("unknown event"))?
        .room;
    require_in_room(&ctx, &origin.0, &room).await?;
    // What the asking server's users may not see is answered redacted, as backfill does.
    let pdu = ctx
        .hs
        .rooms
        .event_for_server(id, &origin.0)
        .await?
        .ok_or_else(|| FedError::not_found("unknown event"))?;
    Ok(Json(json!({
        "origin": ctx.hs.config.server_name.as_str(),
        "origin_server_ts": now_ms(),
        "pdus": [pdu_value(&pdu)],
    })))
}

/// `GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}`
async fn event_auth(
    State(ctx): Ctxt,
    Extension(origin): Extension<Origin>,
    Path((room, id)): Path<(String, String)>,
) -> Answer {
    let room = room_id(&room)?;
    let id = event_id(&id)?;
    require_in_room(&ctx, &origin.0, room).await?;
    let pdu = ctx
        .hs
        .rooms
        .pdu(id.as_str())
        .await?
        .filter(|p| p.room == room)
        .ok_or_else(|| FedError::not_found("unknown event"))?;
    let chain = ctx.hs.rooms.auth_chain_of(&pdu.auth_events).await?;
    Ok(Json(
        json!({ "auth_chain": chain.iter().map(pdu_value).collect::<Vec<_>>() }),
    ))
}

fn id_list(value: &Value) -> Vec<OwnedEventId> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .filter_map(|s| OwnedEventId::try_from(s).ok())
                .take(MAX_WALK_ANSWER)
                .collect()
        })
        .unwrap_or_default()
}

/// `POST /_matrix/federation/v1/get_missing_events/{roomId}`
async fn get_missing_events(
    State(ctx): Ctxt,
    Extension(origin): Extension<Origin>,
    Path(room): Path<String>,
    body: Bytes,
) -> Answer {
    let room = room_id(&room)?;
    require_in_room(&ctx, &origin.0, room).await?;
    let body: Value =
        serde_json::from_slice(&body).map_err(|e| FedError::bad_json(format!("not JSON: {e}")))?;
    let limit = body["limit"]
        .as_u64()
        .unwrap_or(10)
        .min(MAX_WALK_ANSWER as u64) as usize;
    let earliest = id_list(&body["earliest_events"]);
    let latest = id_list(&body["latest_events"]);
    let events = ctx
        .hs
        .rooms
        .missing_events(room, &earliest, &latest, limit, &origin.0)
        .await?;
    Ok(Json(
        json!({ "events": events.iter().map(pdu_value).collect::<Vec<_>>() }),
    ))
}

/// `GET /_matrix/federation/v1/backfill/{roomId}?v=&limit=`
async fn backfill(
    State(ctx): Ctxt,
    Extension(origin): Extension<Origin>,
    Path(room): Path<String>,
    RawQuery(query): RawQuery,
) -> Answer {
    let room = room_id(&room)?;
    require_in_room(&ctx, &origin.0, room).await?;
    let pairs = query_pairs(query.as_deref());
    let from: Vec<OwnedEventId> = pairs
        .iter()
        .filter(|(k, _)| k == "v")
        .filter_map(|(_, v)| OwnedEventId::try_from(v.as_str()).ok())
        .take(MAX_WALK_ANSWER)
        .collect();
    let limit = pairs
        .iter()
        .find(|(k, _)| k == "limit")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(10)
        .min(MAX_WALK_ANSWER);
    let events = ctx
        .hs
        .rooms
        .backfill_from(room, &from, limit, &origin.0)
        .await?;
    Ok(Json(json!({
        "origin": ctx.hs.config.server_name.as_str(),
        "origin_server_ts": now_ms(),
        "pdus": events.iter().map(pdu_value).collect::<Vec<_>>(),
    })))
}

/// `GET /_matrix/federation/v1/query/profile?user_id=&field=`
async fn query_profile(State(ctx): Ctxt, RawQuery(query): RawQuery) -> Answer {
    let pairs = query_pairs(query.as_deref());
    let user = pairs
        .iter()
        .find(|(k, _)| k == "user_id")
        .and_then(|(_, v)| UserId::parse(v.as_str()).ok())
        .ok_or_else(|| FedError::bad_json("user_id missing or invalid"))?;
    if user.server_name() != ctx.hs.config.server_name || !ctx.hs.accounts.exists(&user).await? {
        return Err(FedError::not_found("the user is not on this server"));
    }
    let field = pairs
        .iter()
        .find(|(k, _)| k == "field")
        .map(|(_, v)| v.as_str());
    let profile = ctx.hs.userdata.profile(&user).await?;
    let mut out = serde_json::Map::new();
    if field.is_none_or(|f| f == "displayname")
        && let Some(name) = profile.displayname
    {
        out.insert("displayname".into(), name.into());
    }
    if field.is_none_or(|f| f == "avatar_url")
        && let Some(url) = profile.avatar_url
    {
        out.insert("avatar_url".into(), url.to_string().into());
    }
    Ok(Json(Value::Object(out)))
}

/// `GET /_matrix/federation/v1/query/directory?room_alias=`
async fn query_directory(State(ctx): Ctxt, RawQuery(query): RawQuery) -> Answer {
    let alias = query_pairs(query.as_deref())
        .into_iter()
        .find(|(k, _)| k == "room_alias")
        .map(|(_, v)| v)
        .ok_or_else(|| FedError::bad_json("room_alias missing"))?;
    let alias = RoomAliasId::parse(alias.as_str())
        .map_err(|e| FedError::bad_json(format!("alias: {e}")))?;
    let room = ctx
        .hs
        .rooms
        .resolve_alias(&alias)
        .await?
        .ok_or_else(|| FedError::not_found("unknown alias"))?;
    let mut servers = ctx.hs.rooms.servers_in_room(&room).await?;
    // This server first: it answered and it has the room.
    servers.retain(|s| *s != ctx.hs.config.server_name);
    servers.insert(0, ctx.hs.config.server_name.clone());
    Ok(Json(
        json!({ "room_id": room.as_str(), "servers": servers }),
    ))
}

/// Rooms one federation directory page lists, at most.
const MAX_DIRECTORY_PAGE: usize = grove_server::rooms::directory::MAX_PUBLIC_ROOMS;

async fn directory_page(ctx: &Ctx, query: &PublicRoomsQuery) -> Answer {
    let page = ctx
        .hs
        .rooms
        .public_rooms(
            query.limit.map(|l| l.min(MAX_DIRECTORY_PAGE)),
            query.since.as_deref(),
            query.search.as_deref(),
        )
        .await?;
    let mut out = json!({
        "chunk": serde_json::to_value(&page.chunk).map_err(|e| FedError::from(grove_server::Error::from(e)))?,
        "total_room_count_estimate": page.total,
    });
    if let Some(next) = page.next_batch {
        out["next_batch"] = next.into();
    }
    if let Some(prev) = page.prev_batch {
        out["prev_batch"] = prev.into();
    }
    Ok(Json(out))
}

/// `GET /_matrix/federation/v1/publicRooms?limit=&since=&include_all_networks=`
async fn public_rooms(State(ctx): Ctxt, RawQuery(query): RawQuery) -> Answer {
    let pairs = query_pairs(query.as_deref());
    let find = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let limit = match find("limit") {
        Some(l) => Some(l.parse::<usize>().map_err(|_| {
            FedError::new(
                http::StatusCode::BAD_REQUEST,
                "M_INVALID_PARAM",
                "limit is not a number",
            )
        })?),
        None => None,
    };
    let query = PublicRoomsQuery {
        limit,
        since: find("since"),
        search: None,
        include_all_networks: find("include_all_networks").as_deref() == Some("true"),
    };
    directory_page(&ctx, &query).await
}

/// `POST /_matrix/federation/v1/publicRooms`
async fn public_rooms_filtered(State(ctx): Ctxt, body: Bytes) -> Answer {
    let body: Value =
        serde_json::from_slice(&body).map_err(|e| FedError::bad_json(format!("not JSON: {e}")))?;
    if !body.is_object() {
        return Err(FedError::bad_json("expected a JSON object"));
    }
    let limit = match &body["limit"] {
        Value::Null => None,
        v => Some(
            v.as_u64()
                .ok_or_else(|| FedError::bad_json("limit is not a number"))?
                .try_into()
                .unwrap_or(usize::MAX),
        ),
    };
    let text = |v: &Value, what: &str| match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        _ => Err(FedError::bad_json(format!("{what} is not a string"))),
    };
    let query = PublicRoomsQuery {
        limit,
        since: text(&body["since"], "since")?,
        search: text(
            &body["filter"]["generic_search_term"],
            "generic_search_term",
        )?,
        include_all_networks: body["include_all_networks"].as_bool().unwrap_or(false),
    };
    directory_page(&ctx, &query).await
}

/// `GET /_matrix/federation/v1/hierarchy/{roomId}?suggested_only=`
async fn hierarchy(
    State(ctx): Ctxt,
    Extension(origin): Extension<Origin>,
    Path(room): Path<String>,
    RawQuery(query): RawQuery,
) -> Answer {
    let room = room_id(&room)?;
    let suggested_only = match query_pairs(query.as_deref())
        .into_iter()
        .find(|(k, _)| k == "suggested_only")
        .map(|(_, v)| v)
        .as_deref()
    {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(FedError::new(
                http::StatusCode::BAD_REQUEST,
                "M_INVALID_PARAM",
                "suggested_only is not a boolean",
            ));
        }
    };
    let rooms = &ctx.hs.rooms;
    if rooms.is_known(room).await? {
        require_acl(&ctx, &origin.0, room).await?;
    }
    let viewer = Viewer::Server(&origin.0);
    let space = rooms
        .space_room(room)
        .await?
        .ok_or_else(|| FedError::not_found("unknown room"))?;
    if !rooms.may_see(&space, viewer).await? {
        return Err(FedError::not_found("unknown room"));
    }
    let mut children = Vec::new();
    let mut inaccessible = Vec::new();
    for child in space.children(suggested_only) {
        match rooms.space_room(&child.room).await? {
            Some(summary) if rooms.may_see(&summary, viewer).await? => {
                children.push(summary.to_summary());
            }
            Some(_) => inaccessible.push(child.room),
            None => {}
        }
    }
    Ok(Json(json!({
        "room": space.to_chunk(),
        "children": children,
        "inaccessible_children": inaccessible,
    })))
}
