//! Server-side key backup.
//!
//! - `GET|POST /_matrix/client/v3/room_keys/version`
//! - `GET|PUT|DELETE /_matrix/client/v3/room_keys/version/{version}`
//! - `GET|PUT|DELETE /_matrix/client/v3/room_keys/keys[/{roomId}[/{sessionId}]]?version=`

use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
use grove_server::e2ee::{BackupVersion, KeyScope, WrongVersion};
use ruma::api::client::backup::{
    add_backup_keys, add_backup_keys_for_room, add_backup_keys_for_session, create_backup_version,
    delete_backup_keys, delete_backup_keys_for_room, delete_backup_keys_for_session,
    delete_backup_version, get_backup_info, get_backup_keys, get_backup_keys_for_room,
    get_backup_keys_for_session, get_latest_backup_info, update_backup_version,
};
use serde_json::{Map, Value, json};

use super::value_of;
use crate::{AppState, error::ApiError, extract::Ruma};

/// The routes of this module.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/_matrix/client/v3/room_keys/version",
            get(latest_version).post(create_version),
        )
        .route(
            "/_matrix/client/v3/room_keys/version/{version}",
            get(get_version).put(update_version).delete(delete_version),
        )
        .route(
            "/_matrix/client/v3/room_keys/keys",
            get(get_all).put(put_all).delete(delete_all),
        )
        .route(
            "/_matrix/client/v3/room_keys/keys/{room_id}",
            get(get_room).put(put_room).delete(delete_room),
        )
        .route(
            "/_matrix/client/v3/room_keys/keys/{room_id}/{session_id}",
            get(get_session).put(put_session).delete(delete_session),
        )
}

fn version_json(v: BackupVersion) -> Json<Value> {
    Json(json!({
        "version": v.version,
        "algorithm": v.algorithm,
        "auth_data": v.auth_data,
        "count": v.count,
        "etag": v.etag,
    }))
}

/// The algorithm and auth data of a version body.
fn algorithm_of(body: &Value) -> Result<(String, Value), ApiError> {
    let algorithm = body
        .get("algorithm")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_json("Missing algorithm"))?;
    let auth_data = body
        .get("auth_data")
        .filter(|a| a.is_object())
        .ok_or_else(|| ApiError::bad_json("Missing auth_data"))?;
    Ok((algorithm.to_owned(), auth_data.clone()))
}

fn wrong_version(w: WrongVersion) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "M_WRONG_ROOM_KEYS_VERSION",
        "Wrong backup version",
    )
    .with_extra(json!({ "current_version": w.current }))
}

async fn latest_version(
    State(state): State<AppState>,
    req: Ruma<get_latest_backup_info::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let session = req.session()?;
    Ok(version_json(
        state.hs.e2ee.backup(&session.user_id, None).await?,
    ))
}

async fn create_version(
    State(state): State<AppState>,
    req: Ruma<create_backup_version::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let session = req.session()?;
    let (algorithm, auth_data) = algorithm_of(&value_of(&req.body.algorithm)?)?;
    let version = state
        .hs
        .e2ee
        .create_backup(&session.user_id, &algorithm, &auth_data)
        .await?;
    Ok(Json(json!({ "version": version })))
}

async fn get_version(
    State(state): State<AppState>,
    req: Ruma<get_backup_info::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let session = req.session()?;
    Ok(version_json(
        state
            .hs
            .e2ee
            .backup(&session.user_id, Some(&req.body.version))
            .await?,
    ))
}

async fn update_version(
    State(state): State<AppState>,
    req: Ruma<update_backup_version::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let session = req.session()?;
    let body = value_of(&req.body.algorithm)?;
    if let Some(v) = body.get("version").and_then(Value::as_str)
        && v != req.body.version
    {
        return Err(ApiError::invalid_param(
            "Version in body does not match path",
        ));
    }
    let (algorithm, auth_data) = algorithm_of(&body)?;
    state
        .hs
        .e2ee
        .update_backup(&session.user_id, &req.body.version, &algorithm, &auth_data)
        .await?;
    Ok(Json(json!({})))
}

async fn delete_version(
    State(state): State<AppState>,
    req: Ruma<delete_backup_version::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let session = req.session()?;
    state
        .hs
        .e2ee
        .delete_backup(&session.user_id, &req.body.version)
        .await?;
    Ok(Json(json!({})))
}

async fn put_rooms(
    state: &AppState,
    user: &ruma::UserId,
    version: &str,
    rooms: Map<String, Value>,
) -> Result<Json<Value>, ApiError> {
    match state.hs.e2ee.put_backup_keys(user, version, &rooms).await? {
        Ok((count, etag)) => Ok(Json(json!({ "count": count, "etag": etag }))),
        Err(w) => Err(wrong_version(w)),
    }
}

async fn put_all(
    State(state): State<AppState>,
    req: Ruma<add_backup_keys::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let session = req.session()?;
    let mut rooms = Map::new();
    for (room, backup) in &req.body.rooms {
        let backup = serde_json::to_value(backup).map_err(ApiError::internal)?;
        rooms.insert(
            room.to_string(),
            backup.get("sessions").cloned().unwrap_or_else(|| json!({})),
        );
    }
    put_rooms(&state, &session.user_id, &req.body.version, rooms).await
}

async fn put_room(
    State(state): State<AppState>,
    req: Ruma<add_backup_keys_for_room::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let session = req.session()?;
    let sessions = serde_json::to_value(&req.body.sessions).map_err(ApiError::internal)?;
    let mut rooms = Map::new();
    rooms.insert(req.body.room_id.to_string(), sessions);
    put_rooms(&state, &session.user_id, &req.body.version, rooms).await
}

async fn put_session(
    State(state): State<AppState>,
    req: Ruma<add_backup_keys_for_session::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let session = req.session()?;
    let data = value_of(&req.body.session_data)?;
    let mut rooms = Map::new();
    rooms.insert(
        req.body.room_id.to_string(),
        json!({ &req.body.session_id: data }),
    );
    put_rooms(&state, &session.user_id, &req.body.version, rooms).await
}

async fn get_all(
    State(state): State<AppState>,
    req: Ruma<get_backup_keys::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let session = req.session()?;
    let rooms = state
        .hs
        .e2ee
        .backup_keys(&session.user_id, &req.body.version, KeyScope::All)
        .await?;
    Ok(Json(json!({ "rooms": rooms })))
}

async fn get_room(
    State(state): State<AppState>,
    req: Ruma<get_backup_keys_for_room::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let session = req.session()?;
    let room = req.body.room_id.as_str();
    let mut rooms = state
        .hs
        .e2ee
        .backup_keys(&session.user_id, &req.body.version, KeyScope::Room(room))
        .await?;
    Ok(Json(
        rooms
            .remove(room)
            .unwrap_or_else(|| json!({ "sessions": {} })),
    ))
}

async fn get_session(
    State(state): State<AppState>,
    req: Ruma<get_backup_keys_for_session::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let session = req.session()?;
    let room = req.body.room_id.as_str();
    let scope = KeyScope::Session(room, &req.body.session_id);
    let rooms = state
        .hs
        .e2ee
        .backup_keys(&session.user_id, &req.body.version, scope)
        .await?;
    rooms
        .get(room)
        .and_then(|r| r.get("sessions"))
        .and_then(|s| s.get(&req.body.session_id))
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::not_found("No such session in the backup"))
}

async fn delete_scope(
    state: &AppState,
    user: &ruma::UserId,
    version: &str,
    scope: KeyScope<'_>,
) -> Result<Json<Value>, ApiError> {
    let (count, etag) = state
        .hs
        .e2ee
        .delete_backup_keys(user, version, scope)
        .await?;
    Ok(Json(json!({ "count": count, "etag": etag })))
}

async fn delete_all(
    State(state): State<AppState>,
    req: Ruma<delete_backup_keys::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let session = req.session()?;
    delete_scope(&state, &session.user_id, &req.body.version, KeyScope::All).await
}

async fn delete_room(
    State(state): State<AppState>,
    req: Ruma<delete_backup_keys_for_room::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let session = req.session()?;
    let scope = KeyScope::Room(req.body.room_id.as_str());
    delete_scope(&state, &session.user_id, &req.body.version, scope).await
}

async fn delete_session(
    State(state): State<AppState>,
    req: Ruma<delete_backup_keys_for_session::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let session = req.session()?;
    let scope = KeyScope::Session(req.body.room_id.as_str(), &req.body.session_id);
    delete_scope(&state, &session.user_id, &req.body.version, scope).await
}
