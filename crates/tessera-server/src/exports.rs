//! Exporting the server's share: `POST /backups/server` encrypts the server's share of a wallet
//! to the owner's backup holders. The server's share and the device's together are the private
//! key, so one device may not choose alone where the server's share goes: the holders are fixed
//! by the wallet's first export, and an export to any other holders (the first one included) is
//! a held action ([`crate::held`]): another active device of the owner approves it, or, for a
//! user with one active device, it waits for the time lock, visible to and cancellable by the
//! owner's devices. Exports to the fixed holders (a new backup after a refresh) go through at
//! once, since those holders were approved.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::json;
use tessera_api as api;
use tessera_backup::holder::HolderPublicKey;
use tessera_backup::structure::AccessStructure;

use crate::audit;
use crate::auth::AuthDevice;
use crate::backups::report;
use crate::db;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::hold;
use crate::registry::verify_device_signature;
use crate::state::{AppState, now};
use crate::vault;

/// The structure and holders the server's share of `wallet_id` is fixed to, if any: canonical
/// structure text and the sorted holder keys as JSON.
async fn fixed_holders(state: &AppState, wallet_id: &str) -> ApiResult<Option<(String, String)>> {
    Ok(db::backup_holders::of_wallet(state.db(), wallet_id).await?)
}

async fn fix_holders(
    state: &AppState,
    wallet_id: &str,
    structure: &str,
    holders: &str,
    set_by: &str,
) -> ApiResult<()> {
    Ok(db::backup_holders::set(state.db(), wallet_id, structure, holders, set_by, now()).await?)
}

/// `POST /backups/server`: backs up the server's share of a wallet under the owner's access
/// structure and holders; the request carries the device's identity signature, so a stolen
/// token alone cannot ask for it. 200 with the backup when the holders are the wallet's fixed
/// ones or the export was approved (or its time lock ended); 202 with the held export otherwise.
#[utoipa::path(post, path = "/backups/server", tag = "backups", security(("bearer" = [])), request_body = api::ServerBackupRequest, responses((status = 200, description = "The server's share, verifiably encrypted to the holders", body = api::ServerBackupOutcome), (status = 202, description = "Held: another device must approve, or the time lock must pass", body = api::ServerBackupOutcome), crate::openapi::AuthErrors, crate::openapi::NotFound, crate::openapi::Conflict, crate::openapi::Errors))]
pub async fn server_share(
    State(state): State<AppState>,
    me: AuthDevice,
    ApiJson(req): ApiJson<api::ServerBackupRequest>,
) -> ApiResult<(StatusCode, Json<api::ServerBackupOutcome>)> {
    let wallet = db::wallets::owned(state.db(), &me.user_id, &req.wallet_id).await?;
    let structure = AccessStructure::parse(&req.structure)
        .map_err(|e| ApiError::BadRequest(format!("access structure: {e}")))?;
    let holders = req
        .holders
        .iter()
        .map(|h| HolderPublicKey::from_text(h))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::BadRequest(format!("holder key: {e}")))?;
    let message = api::server_backup_message(&req.wallet_id, &req.structure, &req.holders);
    verify_device_signature(&state, &me.device_id, &message, &req.signature).await?;
    let structure_text = structure.to_string();
    let mut sorted: Vec<String> = holders.iter().map(HolderPublicKey::to_text).collect();
    sorted.sort();
    sorted.dedup();
    let holders_text = json!(sorted).to_string();
    let fixed = fixed_holders(&state, &wallet.id).await?;
    let to_fixed = fixed
        .as_ref()
        .is_some_and(|(s, h)| *s == structure_text && *h == holders_text);
    let approved = if to_fixed {
        None
    } else {
        let export = Export {
            wallet: &wallet,
            structure: &structure_text,
            holders: &holders,
            sorted: &sorted,
            message: &message,
            first: fixed.is_none(),
        };
        match hold_export(&state, &me, &export).await? {
            Ok(held) => Some(held),
            Err(action) => {
                return Ok((
                    StatusCode::ACCEPTED,
                    Json(api::ServerBackupOutcome::Held(action)),
                ));
            }
        }
    };
    let share = vault::load_active(&state, &wallet.id).await?;
    let name = wallet.name.clone();
    let backup = tokio::task::spawn_blocking(move || {
        tessera_backup::wallet::backup_share(&share, &name, &structure, &holders)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let bytes = backup.to_bytes();
    let summary = report(&backup, &bytes);
    match approved {
        Some(held) => {
            if !hold::release(&state, &held, &me.user_id, json!(summary)).await? {
                return Err(ApiError::Conflict(
                    "the export was cancelled meanwhile".into(),
                ));
            }
            fix_holders(
                &state,
                &wallet.id,
                &structure_text,
                &holders_text,
                &me.device_id,
            )
            .await?;
        }
        None => {
            audit::append(
                &state,
                hold::audit_kinds(hold::Kind::ServerShareExport)[3],
                audit::Subject::device(&me).wallet(&wallet.id),
                json!({ "holders": "fixed", "detail": summary }),
            )
            .await?;
        }
    }
    Ok((
        StatusCode::OK,
        Json(api::ServerBackupOutcome::Ready(api::ServerBackup {
            backup: hex::encode(&bytes),
            report: summary,
        })),
    ))
}

/// An export to holders other than the wallet's fixed ones.
struct Export<'a> {
    wallet: &'a db::wallets::Wallet,
    structure: &'a str,
    holders: &'a [HolderPublicKey],
    /// The holders' keys as text, sorted.
    sorted: &'a [String],
    /// The signed request.
    message: &'a [u8],
    /// Whether it is the wallet's first export (no holders fixed yet).
    first: bool,
}

/// Holds `export` for another device's approval (or, for a user with one active device, for
/// the time lock): `Ok` once it may go ahead, `Err` with the action while it waits.
async fn hold_export(
    state: &AppState,
    me: &AuthDevice,
    export: &Export<'_>,
) -> ApiResult<Result<hold::Held, api::HeldAction>> {
    let lone = hold::other_active_devices(state, &me.user_id, &me.device_id).await? == 0;
    let digest = hold::digest(export.message);
    let labels: Vec<String> = export
        .holders
        .iter()
        .map(|h| format!("{} ({})", h.label(), h.fingerprint()))
        .collect();
    let structure_text = export.structure;
    let request = hold::Request {
        kind: hold::Kind::ServerShareExport,
        user_id: &me.user_id,
        wallet_id: Some(&export.wallet.id),
        requested_by: &me.device_id,
        digest: &digest,
        request: json!({ "structure": structure_text, "holders": export.sorted }),
        summary: format!(
            "export the server's share of wallet {} under {structure_text} to {}{}",
            export.wallet.name,
            labels.join(", "),
            if export.first {
                " (the wallet's first server-share backup: these holders become fixed)"
            } else {
                " (other holders than the wallet's fixed ones)"
            }
        ),
    };
    hold::hold_or_ready(state, request, lone).await
}

/// The backup of the server's own share: `POST /backups/server`.
pub(crate) fn router() -> axum::Router<AppState> {
    axum::Router::new().route("/backups/server", axum::routing::post(server_share))
}
