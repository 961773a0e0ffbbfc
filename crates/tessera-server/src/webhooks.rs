//! Webhooks: the server POSTs request state changes to a configured URL. Being written.

use crate::db::WriteTx;
use crate::error::ApiResult;

/// Queues a webhook delivery of `request`'s new state, in the transaction of the change.
///
/// # Errors
/// A database error.
pub async fn enqueue(
    _tx: &mut WriteTx,
    _request: &tessera_api::requests::RequestInfo,
) -> ApiResult<()> {
    Ok(())
}
