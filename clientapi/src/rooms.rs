//! Room creation, membership, sending, state, redaction and room reads.

use axum::Router;

use crate::AppState;

/// The routes of this module.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
}
