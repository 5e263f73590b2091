//! Sending and reading room events:
//!
//! - `PUT .../rooms/{roomId}/send/{eventType}/{txnId}`
//! - `GET .../rooms/{roomId}/state`, `GET|PUT .../rooms/{roomId}/state/{eventType}[/{stateKey}]`
//! - `PUT .../rooms/{roomId}/redact/{eventId}/{txnId}`
//! - `GET .../rooms/{roomId}/messages`, `.../context/{eventId}`, `.../event/{eventId}`
//! - `GET .../rooms/{roomId}/members`, `.../joined_members`

use std::collections::BTreeMap;

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::request::Parts,
    routing::{get, put},
};
use grove_server::rooms::{Direction, timeline::Viewer};
use ruma::{
    OwnedRoomId, RoomId, UInt,
    api::{
        Direction as ApiDirection,
        client::{
            context::get_context,
            membership::{get_member_events, joined_members},
            message::{get_message_events, send_message_event},
            redact::redact_event,
            room::get_room_event,
            state::{get_state_event_for_key, get_state_events, send_state_event},
        },
    },
    events::StateEventType,
    serde::Raw,
};
use serde_json::Value;

use crate::{
    AppState,
    error::ApiError,
    extract::{ApiResult, Ruma, RumaResponse, bearer_or_query_token, object_content},
};

/// The routes of this module.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/_matrix/client/v3/rooms/{room_id}/send/{event_type}/{txn_id}",
            put(send_message),
        )
        .route("/_matrix/client/v3/rooms/{room_id}/state", get(room_state))
        .route(
            "/_matrix/client/v3/rooms/{room_id}/state/{event_type}/{state_key}",
            get(state_event).put(set_state_event),
        )
        .route(
            "/_matrix/client/v3/rooms/{room_id}/state/{event_type}",
            get(state_event_empty_key).put(set_state_event_empty_key),
        )
        .route(
            "/_matrix/client/v3/rooms/{room_id}/state/{event_type}/",
            get(state_event_empty_key).put(set_state_event_empty_key),
        )
        .route(
            "/_matrix/client/v3/rooms/{room_id}/redact/{event_id}/{txn_id}",
            put(redact),
        )
        .route("/_matrix/client/v3/rooms/{room_id}/messages", get(messages))
        .route(
            "/_matrix/client/v3/rooms/{room_id}/context/{event_id}",
            get(context),
        )
        .route(
            "/_matrix/client/v3/rooms/{room_id}/event/{event_id}",
            get(event),
        )
        .route("/_matrix/client/v3/rooms/{room_id}/members", get(members))
        .route(
            "/_matrix/client/v3/rooms/{room_id}/joined_members",
            get(get_joined_members),
        )
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}`
async fn send_message(
    State(app): State<AppState>,
    ruma: Ruma<send_message_event::v3::Request>,
) -> ApiResult<send_message_event::v3::Response> {
    let session = ruma.session()?;
    let b = &ruma.body;
    let content = object_content(b.body.json().get())?;
    let template = grove_server::rooms::EventTemplate::message(b.event_type.to_string(), content);
    let event_id = app
        .hs
        .rooms
        .send(
            &b.room_id,
            &session.user_id,
            Some((session.device_id.as_str(), b.txn_id.as_str())),
            template,
        )
        .await?;
    Ok(RumaResponse(send_message_event::v3::Response::new(
        event_id,
    )))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/state`
async fn room_state(
    State(app): State<AppState>,
    ruma: Ruma<get_state_events::v3::Request>,
) -> ApiResult<get_state_events::v3::Response> {
    let user = &ruma.session()?.user_id;
    let state = app.hs.rooms.room_state(&ruma.body.room_id, user).await?;
    Ok(RumaResponse(get_state_events::v3::Response::new(state)))
}

async fn read_state_event(
    app: &AppState,
    user: &ruma::UserId,
    room: &RoomId,
    kind: &StateEventType,
    key: &str,
    whole_event: bool,
) -> Result<Box<serde_json::value::RawValue>, ApiError> {
    let event = app.hs.rooms.room_state_event(room, user, kind, key).await?;
    if whole_event {
        return Ok(event.into_json());
    }
    let value: Value = serde_json::from_str(event.json().get()).map_err(ApiError::internal)?;
    serde_json::value::to_raw_value(&value["content"]).map_err(ApiError::internal)
}

/// `GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`
async fn state_event(
    State(app): State<AppState>,
    ruma: Ruma<get_state_event_for_key::v3::Request>,
) -> ApiResult<get_state_event_for_key::v3::Response> {
    let user = &ruma.session()?.user_id;
    let b = &ruma.body;
    let whole = b.format == get_state_event_for_key::v3::StateEventFormat::Event;
    let raw = read_state_event(&app, user, &b.room_id, &b.event_type, &b.state_key, whole).await?;
    Ok(RumaResponse(get_state_event_for_key::v3::Response::new(
        raw,
    )))
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`
async fn set_state_event(
    State(app): State<AppState>,
    ruma: Ruma<send_state_event::v3::Request>,
) -> ApiResult<send_state_event::v3::Response> {
    let user = &ruma.session()?.user_id;
    let b = &ruma.body;
    let content = object_content(b.body.json().get())?;
    let event_id = app
        .hs
        .rooms
        .send_state(
            &b.room_id,
            user,
            &b.event_type.to_string(),
            &b.state_key,
            content,
        )
        .await?;
    Ok(RumaResponse(send_state_event::v3::Response::new(event_id)))
}

pub(super) async fn session_of(
    app: &AppState,
    parts: &Parts,
) -> Result<ruma::OwnedUserId, ApiError> {
    let token = bearer_or_query_token(parts).ok_or_else(ApiError::missing_token)?;
    Ok(app.hs.accounts.authenticate(&token).await?.user_id)
}

pub(super) fn room_of(id: &str) -> Result<OwnedRoomId, ApiError> {
    RoomId::parse(id).map_err(|e| ApiError::invalid_param(e.to_string()))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}` (empty state key)
async fn state_event_empty_key(
    State(app): State<AppState>,
    Path((room_id, event_type)): Path<(String, String)>,
    Query(query): Query<BTreeMap<String, String>>,
    parts: Parts,
) -> Result<Json<Value>, ApiError> {
    let user = session_of(&app, &parts).await?;
    let room = room_of(&room_id)?;
    let whole = query.get("format").is_some_and(|f| f == "event");
    let raw = read_state_event(&app, &user, &room, &event_type.as_str().into(), "", whole).await?;
    let value: Value = serde_json::from_str(raw.get()).map_err(ApiError::internal)?;
    Ok(Json(value))
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}` (empty state key)
async fn set_state_event_empty_key(
    State(app): State<AppState>,
    Path((room_id, event_type)): Path<(String, String)>,
    request: axum::extract::Request,
) -> Result<Json<Value>, ApiError> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, app.limits.max_body_bytes)
        .await
        .map_err(|_| ApiError::too_large())?;
    let user = session_of(&app, &parts).await?;
    let room = room_of(&room_id)?;
    let text = std::str::from_utf8(&body).map_err(|_| ApiError::not_json("Content not JSON"))?;
    if serde_json::from_str::<Value>(text).is_err() {
        return Err(ApiError::not_json("Content not JSON"));
    }
    let content = object_content(text)?;
    let event_id = app
        .hs
        .rooms
        .send_state(&room, &user, &event_type, "", content)
        .await?;
    Ok(Json(serde_json::json!({ "event_id": event_id })))
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}`
async fn redact(
    State(app): State<AppState>,
    ruma: Ruma<redact_event::v3::Request>,
) -> ApiResult<redact_event::v3::Response> {
    let session = ruma.session()?;
    let b = &ruma.body;
    let event_id = app
        .hs
        .rooms
        .redact(
            &b.room_id,
            &session.user_id,
            b.event_id.as_str(),
            b.reason.as_deref(),
            Some((session.device_id.as_str(), b.txn_id.as_str())),
        )
        .await?;
    Ok(RumaResponse(redact_event::v3::Response::new(event_id)))
}

fn limit_of(limit: UInt) -> usize {
    usize::try_from(u64::from(limit)).unwrap_or(usize::MAX)
}

/// `GET /_matrix/client/v3/rooms/{roomId}/messages`
async fn messages(
    State(app): State<AppState>,
    ruma: Ruma<get_message_events::v3::Request>,
) -> ApiResult<get_message_events::v3::Response> {
    let session = ruma.session()?;
    let b = &ruma.body;
    let viewer = Viewer {
        user: &session.user_id,
        device: Some(&session.device_id),
    };
    let direction = match b.dir {
        ApiDirection::Forward => Direction::Forward,
        _ => Direction::Backward,
    };
    let limit = b
        .filter
        .limit
        .map_or(limit_of(b.limit), limit_of)
        .min(limit_of(b.limit));
    let read = || {
        app.hs.rooms.messages(
            &b.room_id,
            viewer,
            b.from.as_deref(),
            b.to.as_deref(),
            direction,
            limit,
            &b.filter,
        )
    };
    let mut page = read().await?;
    // Paging back past the oldest event held: ask the other servers for what came before,
    // then read the same page again (what they gave sits below everything held).
    if direction == Direction::Backward
        && b.to.is_none()
        && page.end.is_none()
        && let Some(remote) = app.hs.remote.get()
    {
        match remote.backfill(&b.room_id, limit.max(20)).await {
            Ok(0) => {}
            Ok(_) => page = read().await?,
            Err(e) => tracing::debug!(room = %b.room_id, error = %e, "backfill failed"),
        }
    }
    let mut response = get_message_events::v3::Response::new();
    response.start = page.start;
    response.end = page.end;
    response.chunk = page.chunk;
    response.state = page.state;
    Ok(RumaResponse(response))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/context/{eventId}`
async fn context(
    State(app): State<AppState>,
    ruma: Ruma<get_context::v3::Request>,
) -> ApiResult<get_context::v3::Response> {
    let session = ruma.session()?;
    let b = &ruma.body;
    let viewer = Viewer {
        user: &session.user_id,
        device: Some(&session.device_id),
    };
    let found = app
        .hs
        .rooms
        .context(
            &b.room_id,
            viewer,
            b.event_id.as_str(),
            limit_of(b.limit),
            &b.filter,
        )
        .await?;
    let mut response = get_context::v3::Response::new();
    response.start = Some(found.start);
    response.end = Some(found.end);
    response.event = Some(found.event);
    response.events_before = found.before;
    response.events_after = found.after;
    response.state = found.state;
    Ok(RumaResponse(response))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}`
async fn event(
    State(app): State<AppState>,
    ruma: Ruma<get_room_event::v3::Request>,
) -> ApiResult<get_room_event::v3::Response> {
    let session = ruma.session()?;
    let b = &ruma.body;
    let viewer = Viewer {
        user: &session.user_id,
        device: Some(&session.device_id),
    };
    let event = app
        .hs
        .rooms
        .event(&b.room_id, viewer, b.event_id.as_str())
        .await?;
    Ok(RumaResponse(get_room_event::v3::Response::new(event)))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/members`
async fn members(
    State(app): State<AppState>,
    ruma: Ruma<get_member_events::v3::Request>,
) -> ApiResult<get_member_events::v3::Response> {
    let user = &ruma.session()?.user_id;
    let b = &ruma.body;
    let events = app
        .hs
        .rooms
        .members(
            &b.room_id,
            user,
            b.at.as_deref(),
            b.membership.as_ref().map(|m| m.as_str()),
            b.not_membership.as_ref().map(|m| m.as_str()),
        )
        .await?;
    let chunk = events.into_iter().map(Raw::cast_unchecked).collect();
    Ok(RumaResponse(get_member_events::v3::Response::new(chunk)))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/joined_members`
async fn get_joined_members(
    State(app): State<AppState>,
    ruma: Ruma<joined_members::v3::Request>,
) -> ApiResult<joined_members::v3::Response> {
    let user = &ruma.session()?.user_id;
    let members = app
        .hs
        .rooms
        .joined_members(&ruma.body.room_id, user)
        .await?;
    let mut joined = BTreeMap::new();
    for (id, name, avatar) in members {
        let mut member = joined_members::v3::RoomMember::new();
        member.display_name = name;
        member.avatar_url = avatar.map(Into::into);
        joined.insert(id, member);
    }
    Ok(RumaResponse(joined_members::v3::Response::new(joined)))
}
