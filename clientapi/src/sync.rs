//! `GET /_matrix/client/v3/sync`: resolves the filter, caps the timeout by
//! [`crate::Limits::max_sync_timeout_ms`] and hands the rest to `grove_server::sync`.

use std::time::Duration;

use axum::{Router, extract::State, routing::get};
use grove_server::sync::{SyncRequest, resolve_filter, sync};
use ruma::api::client::sync::sync_events;

use crate::{
    AppState,
    extract::{ApiResult, Ruma, RumaResponse},
};

/// The routes of this module.
pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/_matrix/client/v3/sync", get(get_sync))
}

/// `GET /_matrix/client/v3/sync`
async fn get_sync(
    State(app): State<AppState>,
    ruma: Ruma<sync_events::v3::Request>,
) -> ApiResult<sync_events::v3::Response> {
    let session = ruma.session()?;
    let b = &ruma.body;
    let filter = resolve_filter(&app.hs, &session.user_id, b.filter.as_ref()).await?;
    let cap = Duration::from_millis(app.limits.max_sync_timeout_ms);
    let request = SyncRequest {
        user: session.user_id.clone(),
        device: session.device_id.clone(),
        since: b.since.clone(),
        full_state: b.full_state,
        filter,
        timeout: b.timeout.unwrap_or_default().min(cap),
    };
    let response = sync(&app.hs, &request).await?;
    Ok(RumaResponse(response))
}
