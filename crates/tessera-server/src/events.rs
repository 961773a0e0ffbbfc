//! Each device's event stream (`GET /events`). Being written.

use crate::state::AppState;

/// The routes of this area.
pub(crate) fn router() -> axum::Router<AppState> {
    axum::Router::new()
}
