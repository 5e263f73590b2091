//! Discovery: well-known, versions, capabilities, TURN and third-party protocols.
//!
//! - `GET /.well-known/matrix/client`
//! - `GET /_matrix/client/versions`
//! - `GET /_matrix/client/v3/capabilities`
//! - `GET /_matrix/client/v3/voip/turnServer`
//! - `GET /_matrix/client/v3/thirdparty/protocols`
//! - `GET /_matrix/client/v1/auth_metadata` (and its unstable MSC2965 path): no OAuth here

use axum::{Json, Router, extract::State, routing::get};
use ruma::api::client::{
    discovery::get_capabilities, thirdparty::get_protocols, voip::get_turn_server_info,
};
use serde_json::{Value, json};

use crate::{AppState, error::ApiError, extract::Ruma};

/// Spec versions whose client API this server honours.
const VERSIONS: [&str; 12] = [
    "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11",
    "v1.12",
];

/// The routes of this module.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/.well-known/matrix/client", get(well_known))
        .route("/_matrix/client/versions", get(versions))
        .route("/_matrix/client/v3/capabilities", get(capabilities))
        .route("/_matrix/client/v3/voip/turnServer", get(turn_server))
        .route("/_matrix/client/v3/thirdparty/protocols", get(protocols))
        .route("/_matrix/client/v1/auth_metadata", get(no_oauth))
        .route(
            "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata",
            get(no_oauth),
        )
}

async fn well_known(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "m.homeserver": { "base_url": &*state.public_base_url } }))
}

async fn versions() -> Json<Value> {
    Json(json!({
        "versions": VERSIONS,
        "unstable_features": {
            "org.matrix.e2e_cross_signing": true,
            "org.matrix.msc2432": true,
            "org.matrix.msc3440.stable": true,
            "org.matrix.simplified_msc3575": true,
        },
    }))
}

async fn capabilities(
    State(state): State<AppState>,
    _req: Ruma<get_capabilities::v3::Request>,
) -> Json<Value> {
    Json(json!({
        "capabilities": {
            "m.room_versions": {
                "default": state.hs.config.default_room_version.as_str(),
                "available": { "10": "stable", "11": "stable", "12": "stable" },
            },
            "m.change_password": { "enabled": true },
            "m.set_displayname": { "enabled": true },
            "m.set_avatar_url": { "enabled": true },
            "m.3pid_changes": { "enabled": false },
            "m.get_login_token": { "enabled": false },
        }
    }))
}

async fn turn_server(
    State(state): State<AppState>,
    req: Ruma<get_turn_server_info::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let session = req.session()?;
    let Some(turn) = state.hs.accounts.turn_credentials(&session.user_id)? else {
        return Ok(Json(json!({})));
    };
    Ok(Json(json!({
        "username": turn.username,
        "password": turn.password,
        "uris": turn.uris,
        "ttl": turn.ttl_secs,
    })))
}

async fn protocols(_req: Ruma<get_protocols::v3::Request>) -> Json<Value> {
    Json(json!({}))
}

async fn no_oauth() -> ApiError {
    ApiError::unrecognized()
}
