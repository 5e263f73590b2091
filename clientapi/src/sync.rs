//! - `GET /_matrix/client/v3/sync`: resolves the filter, caps the timeout by
//!   [`crate::Limits::max_sync_timeout_ms`] and hands the rest to `grove_server::sync`.
//! - `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`: simplified sliding
//!   sync (MSC4186), the same cap on its timeout, answered by `grove_server::sliding`.

use std::time::Duration;

use axum::{
    Router,
    extract::State,
    routing::{get, post},
};
use grove_server::{
    sliding::{self, SlidingRequest},
    sync::{SyncRequest, resolve_filter, sync},
};
use ruma::api::client::sync::sync_events;

use crate::{
    AppState,
    extract::{ApiResult, Ruma, RumaResponse},
};

/// The routes of this module.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/_matrix/client/v3/sync", get(get_sync))
        .route(
            "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync",
            post(sliding_sync),
        )
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

/// `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`
async fn sliding_sync(
    State(app): State<AppState>,
    ruma: Ruma<sync_events::v5::Request>,
) -> ApiResult<sync_events::v5::Response> {
    let session = ruma.session()?;
    let cap = Duration::from_millis(app.limits.max_sync_timeout_ms);
    let request = SlidingRequest {
        user: session.user_id.clone(),
        device: session.device_id.clone(),
        timeout: ruma.body.timeout.unwrap_or_default().min(cap),
        body: ruma.body.clone(),
    };
    let response = sliding::sync(&app.hs, &request).await?;
    Ok(RumaResponse(response))
}
