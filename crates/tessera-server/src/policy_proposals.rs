//! Policy changes signed by the policy's admin quorum. Being written.

use crate::state::AppState;

/// The routes of this area.
pub(crate) fn router() -> axum::Router<AppState> {
    axum::Router::new()
}
