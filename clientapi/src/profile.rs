//! Profiles of local users, and of remote users through federation.
//!
//! - `GET /_matrix/client/v3/profile/{userId}`
//! - `GET|PUT /_matrix/client/v3/profile/{userId}/displayname`
//! - `GET|PUT /_matrix/client/v3/profile/{userId}/avatar_url`
//!
//! Reading is open to anyone with a token; changing is for the user themself only. After a
//! change, the user's membership events are refreshed in every joined room.

use axum::{Json, Router, extract::State, routing::get};
use grove_server::userdata::Profile;
use ruma::{
    UserId,
    api::client::profile::{
        get_avatar_url, get_display_name, get_profile, set_avatar_url, set_display_name,
    },
};
use serde_json::{Map, Value};

use crate::{
    AppState,
    error::ApiError,
    extract::{ApiResult, Ruma, RumaResponse},
};

/// The routes of this module.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/_matrix/client/v3/profile/{user_id}", get(get_profile))
        .route(
            "/_matrix/client/v3/profile/{user_id}/displayname",
            get(get_display_name).put(set_display_name),
        )
        .route(
            "/_matrix/client/v3/profile/{user_id}/avatar_url",
            get(get_avatar_url).put(set_avatar_url),
        )
}

/// The profile of a local user, or `404 M_NOT_FOUND` for users this node does not have.
async fn known_profile(state: &AppState, user: &UserId) -> Result<Profile, ApiError> {
    if user.server_name() != state.hs.config.server_name
        && let Some(remote) = state.hs.remote.get()
    {
        return remote
            .profile(user)
            .await?
            .ok_or_else(|| ApiError::not_found("Profile not found"));
    }
    if user.server_name() != state.hs.config.server_name || !state.hs.accounts.exists(user).await? {
        return Err(ApiError::not_found("Profile not found"));
    }
    Ok(state.hs.userdata.profile(user).await?)
}

async fn get_profile(
    State(state): State<AppState>,
    req: Ruma<get_profile::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let profile = known_profile(&state, &req.body.user_id).await?;
    let mut body = Map::new();
    if let Some(name) = profile.displayname {
        body.insert("displayname".into(), name.into());
    }
    if let Some(url) = profile.avatar_url {
        body.insert("avatar_url".into(), url.to_string().into());
    }
    Ok(Json(Value::Object(body)))
}

async fn get_display_name(
    State(state): State<AppState>,
    req: Ruma<get_display_name::v3::Request>,
) -> ApiResult<get_display_name::v3::Response> {
    let profile = known_profile(&state, &req.body.user_id).await?;
    Ok(RumaResponse(get_display_name::v3::Response::new(
        profile.displayname,
    )))
}

async fn get_avatar_url(
    State(state): State<AppState>,
    req: Ruma<get_avatar_url::v3::Request>,
) -> ApiResult<get_avatar_url::v3::Response> {
    let profile = known_profile(&state, &req.body.user_id).await?;
    Ok(RumaResponse(get_avatar_url::v3::Response::new(
        profile.avatar_url,
    )))
}

fn own(session_user: &UserId, target: &UserId) -> Result<(), ApiError> {
    if session_user != target {
        return Err(ApiError::forbidden("You may only change your own profile"));
    }
    Ok(())
}

async fn set_display_name(
    State(state): State<AppState>,
    req: Ruma<set_display_name::v3::Request>,
) -> ApiResult<set_display_name::v3::Response> {
    let session = req.session()?;
    own(&session.user_id, &req.body.user_id)?;
    let profile = state
        .hs
        .userdata
        .set_displayname(&session.user_id, req.body.displayname.as_deref())
        .await?;
    state
        .hs
        .rooms
        .refresh_profile(
            &session.user_id,
            profile.displayname.as_deref(),
            profile.avatar_url.as_deref(),
        )
        .await?;
    Ok(RumaResponse(set_display_name::v3::Response::new()))
}

async fn set_avatar_url(
    State(state): State<AppState>,
    req: Ruma<set_avatar_url::v3::Request>,
) -> ApiResult<set_avatar_url::v3::Response> {
    let session = req.session()?;
    own(&session.user_id, &req.body.user_id)?;
    let profile = state
        .hs
        .userdata
        .set_avatar_url(&session.user_id, req.body.avatar_url.as_deref())
        .await?;
    state
        .hs
        .rooms
        .refresh_profile(
            &session.user_id,
            profile.displayname.as_deref(),
            profile.avatar_url.as_deref(),
        )
        .await?;
    Ok(RumaResponse(set_avatar_url::v3::Response::new()))
}
