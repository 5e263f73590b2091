//! Account data, tags, filters, push rules, pushers, presence, typing, receipts and read
//! markers.
//!
//! - `GET|PUT /_matrix/client/v3/user/{userId}/account_data/{type}`
//! - `GET|PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}`
//! - `GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags`,
//!   `PUT|DELETE .../tags/{tag}`
//! - `POST /_matrix/client/v3/user/{userId}/filter`, `GET .../filter/{filterId}`
//! - push rules and pushers: see [`push`]
//! - `GET|PUT /_matrix/client/v3/presence/{userId}/status`
//! - `PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}`
//! - `POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}`
//! - `POST /_matrix/client/v3/rooms/{roomId}/read_markers`

mod ephemeral;
mod push;

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    routing::{get, post, put},
};
use ruma::{
    RoomId, UserId,
    api::client::{
        config::{
            get_global_account_data, get_room_account_data, set_global_account_data,
            set_room_account_data,
        },
        filter::{create_filter, get_filter},
        tag::{create_tag, delete_tag, get_tags},
    },
};
use serde_json::{Value, json};

use crate::{
    AppState,
    error::ApiError,
    extract::{ApiResult, Ruma, RumaResponse},
};

/// The routes of this module.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/_matrix/client/v3/user/{user_id}/account_data/{event_type}",
            get(get_global_account_data).put(set_global_account_data),
        )
        .route(
            "/_matrix/client/v3/user/{user_id}/rooms/{room_id}/account_data/{event_type}",
            get(get_room_account_data).put(set_room_account_data),
        )
        .route(
            "/_matrix/client/v3/user/{user_id}/rooms/{room_id}/tags",
            get(get_tags),
        )
        .route(
            "/_matrix/client/v3/user/{user_id}/rooms/{room_id}/tags/{tag}",
            put(create_tag).delete(delete_tag),
        )
        .route(
            "/_matrix/client/v3/user/{user_id}/filter",
            post(create_filter),
        )
        .route(
            "/_matrix/client/v3/user/{user_id}/filter/{filter_id}",
            get(get_filter),
        )
        .merge(push::routes())
        .merge(ephemeral::routes())
}

/// Refuses to act on another user's data.
pub(crate) fn own(session_user: &UserId, target: &UserId) -> Result<(), ApiError> {
    if session_user != target {
        return Err(ApiError::forbidden("Cannot access another user's data"));
    }
    Ok(())
}

/// Account-data types the server manages itself, which clients set through other endpoints.
fn server_managed(data_type: &str) -> Result<(), ApiError> {
    if matches!(data_type, "m.push_rules" | "m.fully_read") {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "M_BAD_JSON",
            format!("{data_type} cannot be set through the account data API"),
        ));
    }
    Ok(())
}

fn content_of<T>(raw: &ruma::serde::Raw<T>) -> Result<Value, ApiError> {
    let content: Value =
        serde_json::from_str(raw.json().get()).map_err(|e| ApiError::bad_json(e.to_string()))?;
    if !content.is_object() {
        return Err(ApiError::bad_json("Content must be a JSON object"));
    }
    Ok(content)
}

/// Reads global (`room` None) or room account data of the session's own user.
async fn read_account_data(
    state: &AppState,
    session_user: &UserId,
    target: &UserId,
    room: Option<&RoomId>,
    data_type: String,
) -> Result<Json<Value>, ApiError> {
    own(session_user, target)?;
    state
        .hs
        .userdata
        .account_data(session_user, room, &data_type)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("Account data not found"))
}

/// Writes global (`room` None) or room account data of the session's own user.
async fn write_account_data<T>(
    state: &AppState,
    session_user: &UserId,
    target: &UserId,
    room: Option<&RoomId>,
    data_type: String,
    data: &ruma::serde::Raw<T>,
) -> Result<(), ApiError> {
    own(session_user, target)?;
    server_managed(&data_type)?;
    let content = content_of(data)?;
    state
        .hs
        .userdata
        .set_account_data(session_user, room, &data_type, &content)
        .await?;
    Ok(())
}

async fn get_global_account_data(
    State(state): State<AppState>,
    req: Ruma<get_global_account_data::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let b = &req.body;
    let user = &req.session()?.user_id;
    read_account_data(&state, user, &b.user_id, None, b.event_type.to_string()).await
}

async fn set_global_account_data(
    State(state): State<AppState>,
    req: Ruma<set_global_account_data::v3::Request>,
) -> ApiResult<set_global_account_data::v3::Response> {
    let b = &req.body;
    let user = &req.session()?.user_id;
    write_account_data(
        &state,
        user,
        &b.user_id,
        None,
        b.event_type.to_string(),
        &b.data,
    )
    .await?;
    Ok(RumaResponse(set_global_account_data::v3::Response::new()))
}

async fn get_room_account_data(
    State(state): State<AppState>,
    req: Ruma<get_room_account_data::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let b = &req.body;
    let user = &req.session()?.user_id;
    let room = Some(&*b.room_id);
    read_account_data(&state, user, &b.user_id, room, b.event_type.to_string()).await
}

async fn set_room_account_data(
    State(state): State<AppState>,
    req: Ruma<set_room_account_data::v3::Request>,
) -> ApiResult<set_room_account_data::v3::Response> {
    let b = &req.body;
    let user = &req.session()?.user_id;
    let room = Some(&*b.room_id);
    write_account_data(
        &state,
        user,
        &b.user_id,
        room,
        b.event_type.to_string(),
        &b.data,
    )
    .await?;
    Ok(RumaResponse(set_room_account_data::v3::Response::new()))
}

async fn get_tags(
    State(state): State<AppState>,
    req: Ruma<get_tags::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let session = req.session()?;
    own(&session.user_id, &req.body.user_id)?;
    let tags = state
        .hs
        .userdata
        .tags(&session.user_id, &req.body.room_id)
        .await?;
    Ok(Json(json!({ "tags": tags })))
}

async fn create_tag(
    State(state): State<AppState>,
    req: Ruma<create_tag::v3::Request>,
) -> ApiResult<create_tag::v3::Response> {
    let session = req.session()?;
    own(&session.user_id, &req.body.user_id)?;
    let info = serde_json::to_value(&req.body.tag_info).map_err(ApiError::internal)?;
    state
        .hs
        .userdata
        .set_tag(
            &session.user_id,
            &req.body.room_id,
            &req.body.tag,
            Some(info),
        )
        .await?;
    Ok(RumaResponse(create_tag::v3::Response::new()))
}

async fn delete_tag(
    State(state): State<AppState>,
    req: Ruma<delete_tag::v3::Request>,
) -> ApiResult<delete_tag::v3::Response> {
    let session = req.session()?;
    own(&session.user_id, &req.body.user_id)?;
    state
        .hs
        .userdata
        .set_tag(&session.user_id, &req.body.room_id, &req.body.tag, None)
        .await?;
    Ok(RumaResponse(delete_tag::v3::Response::new()))
}

async fn create_filter(
    State(state): State<AppState>,
    req: Ruma<create_filter::v3::Request>,
) -> ApiResult<create_filter::v3::Response> {
    let session = req.session()?;
    own(&session.user_id, &req.body.user_id)?;
    let id = state
        .hs
        .userdata
        .create_filter(&session.user_id, &req.body.filter)
        .await?;
    Ok(RumaResponse(create_filter::v3::Response::new(id)))
}

async fn get_filter(
    State(state): State<AppState>,
    req: Ruma<get_filter::v3::Request>,
) -> ApiResult<get_filter::v3::Response> {
    let session = req.session()?;
    own(&session.user_id, &req.body.user_id)?;
    let filter = state
        .hs
        .userdata
        .filter(&session.user_id, &req.body.filter_id)
        .await?
        .ok_or_else(|| ApiError::not_found("Filter not found"))?;
    Ok(RumaResponse(get_filter::v3::Response::new(filter)))
}
