//! Service accounts: a user's backend creates signing requests with its own key. Being written.

use crate::state::AppState;

/// The routes of this area.
pub(crate) fn router() -> axum::Router<AppState> {
    axum::Router::new()
}
