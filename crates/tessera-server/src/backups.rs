//! Backups: the server verifies every backup a device shows it and records it in the audit log,
//! backs up its own share to the owner's holders, restores its share from such a backup, and
//! approves a device that proves it restored the device share of one of its user's wallets.
//!
//! A backup is checked against the public share the server derives itself (in a 2-party wallet
//! the device's public share follows from the wallet key and the server's own), never against
//! the one the file states, and against the wallet's current epoch: a backup made before a
//! refresh restores a share that no longer signs.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::json;
use tessera_api as api;
use tessera_backup::backup::Backup;
use tessera_core::{KeyShare, PartyIndex};

use crate::audit;
use crate::auth::AuthDevice;
use crate::db::{self, DeviceStatus};
use crate::error::{ApiError, ApiResult, SetupError};
use crate::extract::{ApiJson, ApiPath};
use crate::registry::verify_device_signature;
use crate::state::AppState;
use crate::vault;

/// The largest backup file accepted over the API (as `tessera-backup` reads).
const MAX_BACKUP_BYTES: usize = 8 * 1024 * 1024;
/// The body limit of `POST /backups/verify`: the file in hex and the JSON around it.
pub const MAX_REQUEST_BYTES: usize = 2 * MAX_BACKUP_BYTES + 1024;

/// What a backup holds, for the caller and the audit log.
pub fn report(backup: &Backup, bytes: &[u8]) -> api::BackupReport {
    let context = backup.context();
    api::BackupReport {
        wallet_id: context.wallet_id.clone().into(),
        party: context.party,
        epoch: context.epoch,
        structure: backup.structure().to_string(),
        holders: backup
            .holders()
            .iter()
            .map(|h| format!("{} ({})", h.label(), h.fingerprint()))
            .collect(),
        digest: hex::encode(backup.digest()),
        size: bytes.len() as u64,
    }
}

/// Checks `backup` against the wallet as the server knows it: the wallet, the epoch, and the
/// public share the server derives for the backup's party.
async fn check_against_wallet(
    state: &AppState,
    backup: Backup,
    wallet_epoch: u64,
) -> ApiResult<Backup> {
    let context = backup.context();
    if context.epoch != wallet_epoch {
        return Err(ApiError::BadRequest(format!(
            "the backup holds the share of epoch {}, the wallet is at epoch {wallet_epoch}: it restores a share that no longer signs (make a new backup)",
            context.epoch
        )));
    }
    let server_share = vault::load_active(state, &context.wallet_id).await?;
    let expected = tessera_backup::wallet::expected_share(&server_share, context.party)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    tokio::task::spawn_blocking(move || backup.verify_for_share(&expected).map(|()| backup))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::BadRequest(format!("the backup does not verify: {e}")))
}

/// `POST /backups/verify`: verifies a backup of a share of one of the caller's wallets and records
/// the outcome in the audit log.
#[utoipa::path(post, path = "/backups/verify", tag = "backups", security(("bearer" = [])), request_body = api::VerifyBackup, responses((status = 200, description = "The backup verified against the wallet", body = api::BackupReport), crate::openapi::AuthErrors, crate::openapi::NotFound, crate::openapi::Errors))]
pub async fn verify(
    State(state): State<AppState>,
    me: AuthDevice,
    ApiJson(req): ApiJson<api::VerifyBackup>,
) -> ApiResult<Json<api::BackupReport>> {
    if req.backup.len() > 2 * MAX_BACKUP_BYTES {
        return Err(ApiError::BadRequest(format!(
            "a backup is at most {MAX_BACKUP_BYTES} bytes"
        )));
    }
    let bytes =
        hex::decode(&req.backup).map_err(|_| ApiError::BadRequest("backup must be hex".into()))?;
    let backup = Backup::from_bytes(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("not a valid backup file: {e}")))?;
    let wallet = db::wallets::owned(state.db(), &me.user_id, &backup.context().wallet_id).await?;
    let summary = report(&backup, &bytes);
    match check_against_wallet(&state, backup, wallet.epoch).await {
        Ok(_) => {
            audit::append(
                &state,
                "backup.verified",
                audit::Subject::device(&me).wallet(&wallet.id),
                json!(summary),
            )
            .await?;
            Ok(Json(summary))
        }
        Err(e) => {
            audit::append(
                &state,
                "backup.rejected",
                audit::Subject::device(&me).wallet(&wallet.id),
                json!({ "party": summary.party, "epoch": summary.epoch, "digest": summary.digest, "reason": e.to_string() }),
            )
            .await?;
            Err(e)
        }
    }
}

/// Restores the server's share of a wallet from a backup already decrypted into `share`
/// (`tessera server restore-share`, run by the operator with the holders' keys): the wallet must
/// exist with the same key and epoch; the restored share replaces the active one.
///
/// # Errors
/// A message for the operator: unknown wallet, another key, another party, a stale epoch.
pub async fn restore_server_share(state: &AppState, share: &KeyShare) -> Result<(), SetupError> {
    let wallet_id = share.wallet_id().to_string();
    let row = db::wallets::key_and_epoch(state.db(), &wallet_id)
        .await
        .map_err(SetupError::db("database"))?;
    let (public_key, epoch) = row.ok_or_else(|| {
        SetupError::Invalid(format!(
            "this server has no wallet {wallet_id}: restore into the server that runs it"
        ))
    })?;
    if public_key != share.public_key().to_compressed() {
        return Err(SetupError::Invalid(format!(
            "the backup is of another key than wallet {wallet_id}"
        )));
    }
    if share.party() != PartyIndex::new(1) {
        return Err(SetupError::Invalid(format!(
            "the backup holds party {}'s share, not the server's (party 1)",
            share.party()
        )));
    }
    if share.epoch() != epoch as u64 {
        return Err(SetupError::Invalid(format!(
            "the backup holds the share of epoch {}, the wallet is at epoch {epoch}: a backup made before a refresh cannot restore",
            share.epoch()
        )));
    }
    vault::replace_active(state, &wallet_id, share)
        .await
        .map_err(|e| SetupError::Failed(e.to_string()))?;
    audit::append(
        state,
        "backup.server_share_restored",
        audit::Subject {
            user: None,
            device: None,
            wallet: Some(&wallet_id),
        },
        json!({ "epoch": share.epoch(), "public_share": hex::encode(share.public_share().to_compressed()) }),
    )
    .await
    .map_err(|e| {
        SetupError::Failed(format!(
            "the share was restored, but its audit record could not be written: {e}"
        ))
    })?;
    Ok(())
}

/// `POST /devices/{id}/recover`: a pending device proves possession of the device share of one
/// of its user's wallets (restored from a backup) and is approved by it. This is the approval
/// path when the user's only device was lost; the proof is bound to the device, its identity
/// key, the wallet and the epoch, and the device signs the same bytes with its identity. While
/// the user has an active device (a lost phone stays active until revoked), the recovery is
/// held under the time lock: 202, and the device sends the same proof again once it ends.
#[utoipa::path(post, path = "/devices/{id}/recover", tag = "backups", params(("id" = String, Path, description = "The pending device that restored a share")), request_body = api::RecoverDevice, responses((status = 200, description = "Recovered: the device is active", body = api::Recovery), (status = 202, description = "Held: another device must approve, or the time lock must pass", body = api::Recovery), crate::openapi::AuthErrors, crate::openapi::NotFound, crate::openapi::Conflict, crate::openapi::Errors))]
pub async fn recover(
    State(state): State<AppState>,
    ApiPath(device_id): ApiPath<String>,
    ApiJson(req): ApiJson<api::RecoverDevice>,
) -> ApiResult<(StatusCode, Json<api::Recovery>)> {
    let (owner, key) = recovering_device(&state, &device_id).await?;
    let message = api::recover_message(&device_id, &key, &req.wallet_id, req.epoch);
    verify_device_signature(&state, &device_id, &message, &req.signature).await?;
    let wallet = db::wallets::owned(state.db(), &owner.user_id, &req.wallet_id).await?;
    if req.epoch != wallet.epoch {
        return Err(ApiError::BadRequest(format!(
            "the restored share is of epoch {}, the wallet is at epoch {}: it no longer signs",
            req.epoch, wallet.epoch
        )));
    }
    let proof =
        hex::decode(&req.proof).map_err(|_| ApiError::BadRequest("proof must be hex".into()))?;
    let recovery_digest = crate::hold::digest(&message);
    check_possession(&state, &owner, &wallet, message, proof).await?;
    // Active devices exist (perhaps the lost one, perhaps the user's own phone in an
    // attacker's presence): the recovery waits for the time lock, visible to them and
    // cancellable by any (which revokes this device), or for one of them to approve it.
    if crate::hold::other_active_devices(&state, &owner.user_id, &device_id).await? > 0 {
        return recover_when_released(&state, &owner, &key, &wallet, &recovery_digest).await;
    }
    let mut tx = state.begin_write().await?;
    let joins = crate::hold::activate_recovered(&mut tx, &device_id).await?;
    audit::append_in(
        &mut tx,
        "device.recovered",
        audit::Subject::device(&owner).wallet(&wallet.id),
        json!({ "epoch": wallet.epoch, "proof": "possession of the device share", "joins_wallets": joins }),
    )
    .await?;
    tx.commit().await?;
    let device = crate::registry::device(&state, &device_id).await?;
    Ok((StatusCode::OK, Json(api::Recovery::Approved(device))))
}

/// The pending device `device_id` that asks to recover: as its user's device, and its identity
/// key.
async fn recovering_device(state: &AppState, device_id: &str) -> ApiResult<(AuthDevice, [u8; 32])> {
    let device = db::devices::user_key_status(state.db(), device_id).await?;
    let (user_id, key, status) =
        device.ok_or_else(|| ApiError::NotFound(format!("no device {device_id}")))?;
    if status != DeviceStatus::Pending {
        return Err(ApiError::Conflict(format!(
            "device is {status}, not pending"
        )));
    }
    let key: [u8; 32] = key
        .try_into()
        .map_err(|_| ApiError::Internal("stored identity key has a wrong length".into()))?;
    Ok((
        AuthDevice {
            device_id: device_id.to_string(),
            user_id,
        },
        key,
    ))
}

/// Checks that the recovering device holds the device share of `wallet` (a proof of possession
/// over `message` against the public share the server derives); a failed proof is audited.
async fn check_possession(
    state: &AppState,
    owner: &AuthDevice,
    wallet: &db::wallets::Wallet,
    message: Vec<u8>,
    proof: Vec<u8>,
) -> ApiResult<()> {
    let server_share = vault::load_active(state, &wallet.id).await?;
    let device_public = server_share
        .public_share_of(PartyIndex::new(0))
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let checked = tokio::task::spawn_blocking(move || {
        KeyShare::verify_possession(&device_public, &message, &proof)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    if let Err(e) = checked {
        audit::append(
            state,
            "device.recovery_refused",
            audit::Subject::device(owner).wallet(&wallet.id),
            json!({ "reason": e.to_string() }),
        )
        .await?;
        return Err(ApiError::Unauthorized(e.to_string()));
    }
    Ok(())
}

/// A recovery while the user has active devices: held until one of them approves it or its
/// time lock ends; carried out once that happened.
async fn recover_when_released(
    state: &AppState,
    owner: &AuthDevice,
    key: &[u8; 32],
    wallet: &db::wallets::Wallet,
    digest: &str,
) -> ApiResult<(StatusCode, Json<api::Recovery>)> {
    let device_id = &owner.device_id;
    let request = crate::hold::Request {
        kind: crate::hold::Kind::DeviceRecovery,
        user_id: &owner.user_id,
        wallet_id: Some(&wallet.id),
        requested_by: device_id,
        digest,
        request: json!({ "wallet_id": wallet.id, "epoch": wallet.epoch, "identity_key": hex::encode(key) }),
        summary: format!(
            "approve the pending device {device_id} (identity {}) by possession of the device share of wallet {}",
            hex::encode(key),
            wallet.name
        ),
    };
    match crate::hold::hold_or_ready(state, request, true).await? {
        Err(action) => Ok((StatusCode::ACCEPTED, Json(api::Recovery::Held(action)))),
        Ok(held) => {
            let mut tx = state.begin_write().await?;
            let joins = crate::hold::activate_recovered(&mut tx, device_id).await?;
            tx.commit().await?;
            crate::hold::release(state, &held, &owner.user_id, json!({ "epoch": wallet.epoch, "proof": "possession of the device share", "after": "time lock", "joins_wallets": joins }))
                .await?;
            let device = crate::registry::device(state, device_id).await?;
            Ok((StatusCode::OK, Json(api::Recovery::Approved(device))))
        }
    }
}

/// Backups of device shares and device recovery: `POST /backups/verify` (with its own, larger
/// body limit), `POST /devices/{id}/recover`.
pub(crate) fn router() -> axum::Router<AppState> {
    use axum::extract::DefaultBodyLimit;
    use axum::routing::post;
    axum::Router::new()
        .route("/devices/{id}/recover", post(recover))
        .route(
            "/backups/verify",
            post(verify).layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES)),
        )
}
