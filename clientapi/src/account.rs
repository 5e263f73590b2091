//! Password change, deactivation and third-party identifiers.
//!
//! - `POST /_matrix/client/v3/account/password` (user-interactive auth: the password)
//! - `POST /_matrix/client/v3/account/deactivate` (user-interactive auth: the password); the
//!   user also leaves every room and the user directory
//! - `GET /_matrix/client/v3/account/3pid` (always empty: no identity server)

use axum::{
    Json, Router,
    extract::State,
    routing::{get, post},
};
use ruma::api::client::account::{
    ThirdPartyIdRemovalStatus, change_password, deactivate, get_3pids,
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
        .route("/_matrix/client/v3/account/password", post(change_password))
        .route("/_matrix/client/v3/account/deactivate", post(deactivate))
        .route("/_matrix/client/v3/account/3pid", get(get_3pids))
}

async fn change_password(
    State(state): State<AppState>,
    req: Ruma<change_password::v3::Request>,
) -> ApiResult<change_password::v3::Response> {
    let session = req.session()?;
    let accounts = &state.hs.accounts;
    accounts
        .confirm_owner(&session.user_id, req.body.auth.as_ref())
        .await?;
    accounts
        .change_password(
            &session.user_id,
            &req.body.new_password,
            req.body.logout_devices,
            Some(&session.device_id),
        )
        .await?;
    Ok(RumaResponse(change_password::v3::Response::new()))
}

async fn deactivate(
    State(state): State<AppState>,
    req: Ruma<deactivate::v3::Request>,
) -> ApiResult<deactivate::v3::Response> {
    let session = req.session()?;
    let accounts = &state.hs.accounts;
    accounts
        .confirm_owner(&session.user_id, req.body.auth.as_ref())
        .await?;
    grove_server::accounts::deactivate_account(&state.hs, &session.user_id).await?;
    Ok(RumaResponse(deactivate::v3::Response::new(
        ThirdPartyIdRemovalStatus::NoSupport,
    )))
}

async fn get_3pids(req: Ruma<get_3pids::v3::Request>) -> Result<Json<Value>, ApiError> {
    req.session()?;
    // Written by hand: the typed response leaves out an empty list, and clients expect it.
    Ok(Json(json!({ "threepids": [] })))
}
