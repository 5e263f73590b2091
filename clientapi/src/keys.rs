//! End-to-end encryption keys, to-device messages and key backup.

use axum::Router;

use crate::AppState;

/// The routes of this module.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
}
