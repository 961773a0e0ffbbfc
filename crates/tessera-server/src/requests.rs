//! Durable signing requests (`POST /requests`): created, approved by quorum, signed when ready (issue 16). Being written.

use crate::state::AppState;

/// The routes of this area.
pub(crate) fn router() -> axum::Router<AppState> {
    axum::Router::new()
}
