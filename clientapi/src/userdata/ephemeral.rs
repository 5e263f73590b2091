//! Presence, typing, receipts and read markers.
//!
//! - `GET|PUT /_matrix/client/v3/presence/{userId}/status`
//! - `PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}`
//! - `POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}`
//! - `POST /_matrix/client/v3/rooms/{roomId}/read_markers`
//!
//! Typing, receipts and read markers need the user to be joined to the room.

use std::time::Duration;

use axum::{
    Router,
    extract::State,
    routing::{get, post, put},
};
use ruma::{
    EventId, RoomId, UserId,
    api::client::{
        presence::{get_presence, set_presence},
        read_marker::set_read_marker,
        receipt::create_receipt,
        typing::create_typing_event,
    },
    events::receipt::ReceiptThread,
    presence::PresenceState,
};
use serde_json::json;

use super::own;
use crate::{
    AppState,
    error::ApiError,
    extract::{ApiResult, Ruma, RumaResponse},
};

/// The routes of this module.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/_matrix/client/v3/presence/{user_id}/status",
            get(get_presence).put(set_presence),
        )
        .route(
            "/_matrix/client/v3/rooms/{room_id}/typing/{user_id}",
            put(create_typing),
        )
        .route(
            "/_matrix/client/v3/rooms/{room_id}/receipt/{receipt_type}/{event_id}",
            post(create_receipt),
        )
        .route(
            "/_matrix/client/v3/rooms/{room_id}/read_markers",
            post(set_read_marker),
        )
}

async fn joined(state: &AppState, user: &UserId, room: &RoomId) -> Result<(), ApiError> {
    if !state.hs.rooms.is_joined(user, room).await? {
        return Err(ApiError::forbidden("You are not joined to this room"));
    }
    Ok(())
}

async fn get_presence(
    State(state): State<AppState>,
    req: Ruma<get_presence::v3::Request>,
) -> ApiResult<get_presence::v3::Response> {
    req.session()?;
    let user = &req.body.user_id;
    // A user of another server has the presence its server last sent (offline if none).
    if user.server_name() == state.hs.config.server_name && !state.hs.accounts.exists(user).await? {
        return Err(ApiError::not_found("Unknown user"));
    }
    let Some(presence) = state.hs.userdata.presence(user).await? else {
        return Ok(RumaResponse(get_presence::v3::Response::new(
            PresenceState::Offline,
        )));
    };
    let mut resp = get_presence::v3::Response::new(PresenceState::from(presence.state.as_str()));
    resp.status_msg = presence.status_msg;
    resp.currently_active = Some(presence.state == "online");
    let ago = grove_now_ms()
        .saturating_sub(presence.last_active_ts)
        .max(0);
    resp.last_active_ago = Some(Duration::from_millis(u64::try_from(ago).unwrap_or(0)));
    Ok(RumaResponse(resp))
}

fn grove_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

async fn set_presence(
    State(state): State<AppState>,
    req: Ruma<set_presence::v3::Request>,
) -> ApiResult<set_presence::v3::Response> {
    let session = req.session()?;
    own(&session.user_id, &req.body.user_id)?;
    state
        .hs
        .userdata
        .set_presence(
            &session.user_id,
            req.body.presence.as_str(),
            req.body.status_msg.as_deref(),
        )
        .await?;
    Ok(RumaResponse(set_presence::v3::Response::new()))
}

async fn create_typing(
    State(state): State<AppState>,
    req: Ruma<create_typing_event::v3::Request>,
) -> ApiResult<create_typing_event::v3::Response> {
    let session = req.session()?;
    own(&session.user_id, &req.body.user_id)?;
    joined(&state, &session.user_id, &req.body.room_id).await?;
    let timeout = match req.body.state {
        create_typing_event::v3::Typing::Yes(info) => Some(info.timeout),
        _ => None,
    };
    state
        .hs
        .userdata
        .set_typing(&req.body.room_id, &session.user_id, timeout)
        .await?;
    if let Some(remote) = state.hs.remote.get() {
        let mut content = json!({
            "room_id": req.body.room_id,
            "user_id": session.user_id,
            "typing": timeout.is_some(),
        });
        if let Some(t) = timeout {
            content["timeout"] = u64::try_from(t.as_millis()).unwrap_or(u64::MAX).into();
        }
        remote.ephemeral(&req.body.room_id, "m.typing", content);
    }
    Ok(RumaResponse(create_typing_event::v3::Response::new()))
}

fn thread_id(thread: &ReceiptThread) -> Result<Option<String>, ApiError> {
    Ok(match thread {
        ReceiptThread::Unthreaded => None,
        ReceiptThread::Main => Some("main".to_owned()),
        ReceiptThread::Thread(id) => Some(id.to_string()),
        _ => return Err(ApiError::invalid_param("Unknown thread_id")),
    })
}

async fn set_fully_read(
    state: &AppState,
    user: &UserId,
    room: &RoomId,
    event: &EventId,
) -> Result<(), ApiError> {
    state
        .hs
        .userdata
        .set_account_data(
            user,
            Some(room),
            "m.fully_read",
            &json!({ "event_id": event }),
        )
        .await?;
    Ok(())
}

async fn create_receipt(
    State(state): State<AppState>,
    req: Ruma<create_receipt::v3::Request>,
) -> ApiResult<create_receipt::v3::Response> {
    use create_receipt::v3::ReceiptType;
    let session = req.session()?;
    let room = &req.body.room_id;
    joined(&state, &session.user_id, room).await?;
    let receipt_type = match &req.body.receipt_type {
        ReceiptType::FullyRead => {
            set_fully_read(&state, &session.user_id, room, &req.body.event_id).await?;
            return Ok(RumaResponse(create_receipt::v3::Response::new()));
        }
        ReceiptType::Read => "m.read",
        ReceiptType::ReadPrivate => "m.read.private",
        _ => return Err(ApiError::invalid_param("Unknown receipt type")),
    };
    let thread = thread_id(&req.body.thread)?;
    state
        .hs
        .userdata
        .set_receipt(
            room,
            &session.user_id,
            receipt_type,
            thread.as_deref(),
            &req.body.event_id,
        )
        .await?;
    if receipt_type == "m.read" {
        share_receipt(
            &state,
            room,
            &session.user_id,
            &req.body.event_id,
            thread.as_deref(),
        );
    }
    Ok(RumaResponse(create_receipt::v3::Response::new()))
}

/// Tells the other servers in the room of a public read receipt.
fn share_receipt(
    state: &AppState,
    room: &RoomId,
    user: &UserId,
    event: &EventId,
    thread: Option<&str>,
) {
    let Some(remote) = state.hs.remote.get() else {
        return;
    };
    let ts = u64::from(ruma::MilliSecondsSinceUnixEpoch::now().get());
    let mut data = json!({ "ts": ts });
    if let Some(thread) = thread {
        data["thread_id"] = thread.into();
    }
    let content = json!({
        room.as_str(): { "m.read": { user.as_str(): { "event_ids": [event], "data": data } } }
    });
    remote.ephemeral(room, "m.receipt", content);
}

async fn set_read_marker(
    State(state): State<AppState>,
    req: Ruma<set_read_marker::v3::Request>,
) -> ApiResult<set_read_marker::v3::Response> {
    let session = req.session()?;
    let room = &req.body.room_id;
    joined(&state, &session.user_id, room).await?;
    let userdata = &state.hs.userdata;
    if let Some(event) = &req.body.fully_read {
        set_fully_read(&state, &session.user_id, room, event).await?;
    }
    if let Some(event) = &req.body.read_receipt {
        userdata
            .set_receipt(room, &session.user_id, "m.read", None, event)
            .await?;
        share_receipt(&state, room, &session.user_id, event, None);
    }
    if let Some(event) = &req.body.private_read_receipt {
        userdata
            .set_receipt(room, &session.user_id, "m.read.private", None, event)
            .await?;
    }
    Ok(RumaResponse(set_read_marker::v3::Response::new()))
}
