//! The release of a signature: the server's last signing message lets the device finish the
//! signature alone, so the server records that it released it before that message leaves. A run
//! that fails after the release is `sign.unconfirmed` (the device may hold a valid signature),
//! never a plain `sign.failed`.
//!
//! Structure wallets' runs only (`coordinator`). A 2-of-2 run (`ws`) holds its last message
//! until the signature is checked and `sign.completed` is written, so it releases nothing
//! before its end is recorded and needs no record of its own.

use serde_json::json;

use crate::audit::{self, Subject};
use crate::auth::AuthDevice;
use crate::error::ApiResult;
use crate::state::AppState;

/// What to record when the last message of a signing run is about to leave.
pub struct Release {
    /// The signing session.
    pub session_id: String,
    /// The wallet.
    pub wallet_id: String,
    /// The digest signed, hex.
    pub digest: String,
    /// The device that asked.
    pub device: AuthDevice,
}

/// Audits `sign.released`; the message must not leave if this fails.
///
/// # Errors
/// The audit log's error.
pub async fn record(state: &AppState, release: &Release) -> ApiResult<()> {
    audit::append(
        state,
        "sign.released",
        Subject::device(&release.device).wallet(&release.wallet_id),
        json!({ "session_id": release.session_id, "digest": release.digest }),
    )
    .await
}
