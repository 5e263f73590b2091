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
use serde_json::{Value, json, value::RawValue as RawJsonValue};

use crate::{
    AppState,
    error::ApiError,
    extract::{ApiResult, Ruma, RumaResponse, object_content},
};

/// The routes of this module.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/_matrix/client/v3/user/{user_id}/account_data/{event_type}",
            get(get_account_data::<get_global_account_data::v3::Request>)
                .put(set_account_data::<set_global_account_data::v3::Request>),
        )
        .route(
            "/_matrix/client/v3/user/{user_id}/rooms/{room_id}/account_data/{event_type}",
            get(get_account_data::<get_room_account_data::v3::Request>)
                .put(set_account_data::<set_room_account_data::v3::Request>),
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

/// The session's user, when it is `target` (the owner of the data asked for).
fn owner<'a, R>(req: &'a Ruma<R>, target: &UserId) -> Result<&'a UserId, ApiError> {
    let user = &req.session()?.user_id;
    own(user, target)?;
    Ok(user)
}

fn userdata(state: &AppState) -> &grove_server::userdata::UserData {
    &state.hs.userdata
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

/// What an account-data request names: whose data, in which room (none: global), which type.
trait AccountDataPath {
    fn path(&self) -> (&UserId, Option<&RoomId>, String);
}

/// An account-data request that writes: the new content too.
trait AccountDataWrite: AccountDataPath {
    fn content(&self) -> &RawJsonValue;
}

impl AccountDataPath for get_global_account_data::v3::Request {
    fn path(&self) -> (&UserId, Option<&RoomId>, String) {
        (&self.user_id, None, self.event_type.to_string())
    }
}

impl AccountDataPath for set_global_account_data::v3::Request {
    fn path(&self) -> (&UserId, Option<&RoomId>, String) {
        (&self.user_id, None, self.event_type.to_string())
    }
}

impl AccountDataWrite for set_global_account_data::v3::Request {
    fn content(&self) -> &RawJsonValue {
        self.data.json()
    }
}

impl AccountDataPath for get_room_account_data::v3::Request {
    fn path(&self) -> (&UserId, Option<&RoomId>, String) {
        (
            &self.user_id,
            Some(&self.room_id),
            self.event_type.to_string(),
        )
    }
}

impl AccountDataPath for set_room_account_data::v3::Request {
    fn path(&self) -> (&UserId, Option<&RoomId>, String) {
        (
            &self.user_id,
            Some(&self.room_id),
            self.event_type.to_string(),
        )
    }
}

impl AccountDataWrite for set_room_account_data::v3::Request {
    fn content(&self) -> &RawJsonValue {
        self.data.json()
    }
}

/// `GET` global or room account data of the session's own user.
async fn get_account_data<R: AccountDataPath>(
    State(state): State<AppState>,
    req: Ruma<R>,
) -> Result<Json<Value>, ApiError> {
    let (target, room, data_type) = req.body.path();
    let user = owner(&req, target)?;
    userdata(&state)
        .account_data(user, room, &data_type)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("Account data not found"))
}

/// `PUT` global or room account data of the session's own user.
async fn set_account_data<R: AccountDataWrite>(
    State(state): State<AppState>,
    req: Ruma<R>,
) -> Result<Json<Value>, ApiError> {
    let (target, room, data_type) = req.body.path();
    let user = owner(&req, target)?;
    server_managed(&data_type)?;
    let content = object_content(req.body.content().get())?;
    userdata(&state)
        .set_account_data(user, room, &data_type, &content)
        .await?;
    Ok(Json(json!({})))
}

async fn get_tags(
    State(state): State<AppState>,
    req: Ruma<get_tags::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let user = owner(&req, &req.body.user_id)?;
    let tags = userdata(&state).tags(user, &req.body.room_id).await?;
    Ok(Json(json!({ "tags": tags })))
}

async fn create_tag(
    State(state): State<AppState>,
    req: Ruma<create_tag::v3::Request>,
) -> ApiResult<create_tag::v3::Response> {
    let user = owner(&req, &req.body.user_id)?;
    let info = serde_json::to_value(&req.body.tag_info).map_err(ApiError::internal)?;
    userdata(&state)
        .set_tag(user, &req.body.room_id, &req.body.tag, Some(info))
        .await?;
    Ok(RumaResponse(create_tag::v3::Response::new()))
}

async fn delete_tag(
    State(state): State<AppState>,
    req: Ruma<delete_tag::v3::Request>,
) -> ApiResult<delete_tag::v3::Response> {
    let user = owner(&req, &req.body.user_id)?;
    userdata(&state)
        .set_tag(user, &req.body.room_id, &req.body.tag, None)
        .await?;
    Ok(RumaResponse(delete_tag::v3::Response::new()))
}

async fn create_filter(
    State(state): State<AppState>,
    req: Ruma<create_filter::v3::Request>,
) -> ApiResult<create_filter::v3::Response> {
    let user = owner(&req, &req.body.user_id)?;
    let id = userdata(&state)
        .create_filter(user, &req.body.filter)
        .await?;
    Ok(RumaResponse(create_filter::v3::Response::new(id)))
}

async fn get_filter(
    State(state): State<AppState>,
    req: Ruma<get_filter::v3::Request>,
) -> ApiResult<get_filter::v3::Response> {
    let user = owner(&req, &req.body.user_id)?;
    let filter = userdata(&state)
        .filter(user, &req.body.filter_id)
        .await?
        .ok_or_else(|| ApiError::not_found("Filter not found"))?;
    Ok(RumaResponse(get_filter::v3::Response::new(filter)))
}
