//! Account data, tags, filters, push rules, pushers, presence, typing, receipts and read markers.

use axum::Router;

use crate::AppState;

/// The routes of this module.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
}
