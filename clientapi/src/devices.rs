//! The user's devices.
//!
//! - `GET /_matrix/client/v3/devices`
//! - `GET|PUT|DELETE /_matrix/client/v3/devices/{deviceId}` (delete: user-interactive auth)
//! - `POST /_matrix/client/v3/delete_devices` (user-interactive auth)

use axum::{
    Router,
    extract::State,
    routing::{get, post},
};
use grove_server::accounts::Device as StoredDevice;
use ruma::{
    MilliSecondsSinceUnixEpoch, UInt,
    api::client::device::{
        self, delete_device, delete_devices, get_device, get_devices, update_device,
    },
};

use crate::{
    AppState,
    extract::{ApiResult, Ruma, RumaResponse},
};

/// The routes of this module.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/_matrix/client/v3/devices", get(get_devices))
        .route(
            "/_matrix/client/v3/devices/{device_id}",
            get(get_device).put(update_device).delete(delete_device),
        )
        .route("/_matrix/client/v3/delete_devices", post(delete_devices))
}

fn to_wire(d: StoredDevice) -> device::Device {
    let mut out = device::Device::new(d.device_id);
    out.display_name = d.display_name;
    out.last_seen_ip = d.last_seen_ip;
    out.last_seen_ts = d
        .last_seen_ts
        .and_then(|ts| UInt::try_from(ts).ok())
        .map(MilliSecondsSinceUnixEpoch);
    out
}

async fn get_devices(
    State(state): State<AppState>,
    req: Ruma<get_devices::v3::Request>,
) -> ApiResult<get_devices::v3::Response> {
    let session = req.session()?;
    let devices = state.hs.accounts.devices(&session.user_id).await?;
    Ok(RumaResponse(get_devices::v3::Response::new(
        devices.into_iter().map(to_wire).collect(),
    )))
}

async fn get_device(
    State(state): State<AppState>,
    req: Ruma<get_device::v3::Request>,
) -> ApiResult<get_device::v3::Response> {
    let session = req.session()?;
    let device = state
        .hs
        .accounts
        .device(&session.user_id, &req.body.device_id)
        .await?;
    Ok(RumaResponse(get_device::v3::Response::new(to_wire(device))))
}

async fn update_device(
    State(state): State<AppState>,
    req: Ruma<update_device::v3::Request>,
) -> ApiResult<update_device::v3::Response> {
    let session = req.session()?;
    state
        .hs
        .accounts
        .set_device_display_name(
            &session.user_id,
            &req.body.device_id,
            req.body.display_name.as_deref(),
        )
        .await?;
    Ok(RumaResponse(update_device::v3::Response::new()))
}

async fn delete_device(
    State(state): State<AppState>,
    req: Ruma<delete_device::v3::Request>,
) -> ApiResult<delete_device::v3::Response> {
    let session = req.session()?;
    let accounts = &state.hs.accounts;
    // An unknown device is a 404 before any authentication is asked for.
    accounts
        .device(&session.user_id, &req.body.device_id)
        .await?;
    accounts
        .confirm_owner(&session.user_id, req.body.auth.as_ref())
        .await?;
    accounts
        .delete_devices(&session.user_id, std::slice::from_ref(&req.body.device_id))
        .await?;
    Ok(RumaResponse(delete_device::v3::Response::new()))
}

async fn delete_devices(
    State(state): State<AppState>,
    req: Ruma<delete_devices::v3::Request>,
) -> ApiResult<delete_devices::v3::Response> {
    let session = req.session()?;
    let accounts = &state.hs.accounts;
    accounts
        .confirm_owner(&session.user_id, req.body.auth.as_ref())
        .await?;
    accounts
        .delete_devices(&session.user_id, &req.body.devices)
        .await?;
    Ok(RumaResponse(delete_devices::v3::Response::new()))
}
