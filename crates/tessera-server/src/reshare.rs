//! Resharing a structure wallet through the server (issue 15): `POST /reshare` moves the
//! wallet's key to a new structure — a device added, a device removed, or any new structure
//! over the server and the user's active devices — with the same public key and chain code, at
//! the next epoch. A resharing to the same structure is the refresh of a structure wallet.
//!
//! The protocol is `tessera_core::ReshareSession` (Desmedt–Jajodia redistribution with
//! Wong–Wang–Wing's verification; see `tessera-core/src/engine/dkls23/reshare.rs`): the dealers
//! are a minimal quorum of the current structure made of the requesting device, the server and
//! the devices the request names (`with`; when it names none and the requester and the server
//! are not a quorum, the server completes the smallest one with devices online); every party
//! of the new structure receives a share (so each must be online: a device added joins from
//! its `tessera listen`, as do the others);
//! a dealer that is not in the new structure ends with none.
//!
//! The run's parties, by run index, are the new structure's parties, then the dealers that
//! leave (see `ReshareSession`); the session's stored parameters ([`StoredReshare`]) hold them
//! with the wallet's public facts at the current epoch, so that a device joining the wallet
//! (not yet one of its parties) finds the session (`GET /sessions/joinable`) and opens its
//! socket (`ws::party_of`).
//!
//! The finish is the driver's two-phase one (`tessera_core::driver`), the server coordinating:
//! 1. the server stores its new share as pending, bound to the session (`vault::store_pending`),
//!    and announces the epoch;
//! 2. every device of the new structure stores its new share as pending and commits;
//! 3. once every one committed, one write transaction switches the wallet: the pending share
//!    becomes the active one, the wallet's structure, parties and epoch become the new ones,
//!    every share of an older epoch is deleted (`db::shares::delete_old_epochs`), the party
//!    changes it carries out are no longer pending (`db::wallet_changes`), the bans of devices
//!    that left end and approved lifts take effect (`db::bans::after_structure_switch`,
//!    `bans::lift_in`), the session's end and its `reshare.done` record are written;
//! 4. the server announces the switch, and the devices switch.
//!
//! A crash anywhere leaves every party one usable epoch: before step 3 the wallet is at the old
//! epoch, which every old party still holds (devices drop their pending share when they see
//! the server's epoch: `WalletRecord::settle`); after it, every party of the new structure
//! holds the new share, at least as pending, and switches to it when it sees the new epoch.
//! A pending share the server kept from a run that never switched is discarded when the next
//! refresh or resharing of the wallet is created.
//!
//! Approving a device records that it is to join each of the user's structure wallets it can
//! be added to ([`record_joins`]); revoking one, that it is to leave each wallet it is a party
//! of (`db::wallet_changes::on_revocation`). `GET /wallet` lists those pending changes; a
//! device of the wallet carries them out with a resharing (`tessera wallet reshare --pending`,
//! or `tessera device approve|revoke --reshare`), which needs every device of the new structure
//! online; until then the change stays listed (a revoked device is refused at once all the
//! same).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tessera_api::{self as api, ServerSessionId};
use tessera_core::driver::{self, CoordinatorPending, DriveError};
use tessera_core::protocols::{fresh_nonce, joint_nonce};
use tessera_core::structure::{AccessStructure, WalletStructure};
use tessera_core::{KeyShare, PartyIndex, ReshareRequest, ReshareSession, Session};

use crate::audit::{self, Subject};
use crate::auth::AuthDevice;
use crate::db::{self, PartyKind, Protocol, SessionStatus};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::session_link::{End, EndReason, LinkError, MailboxLink};
use crate::state::{AppState, now};
use crate::wallet_parties::{self, Member};

/// A resharing session's stored parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredReshare {
    /// The new structure (labels as stored). Its presence marks a session of a structure
    /// wallet (`ws::openable`).
    pub structure: String,
    /// The size of its smallest quorum.
    pub smallest_quorum: i64,
    /// The wallet's public facts at the epoch reshared.
    pub wallet: api::WalletPublicInfo,
    /// The dealers, by party index of the current structure.
    pub quorum: Vec<u8>,
    /// The run's parties, by run index.
    pub run: Vec<RunParty>,
}

/// A party of a resharing run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunParty {
    /// Its label (in the new structure, or in the old one for a dealer that leaves).
    pub label: String,
    /// Its device and user (none: the server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<(String, String)>,
    /// Whether it is a dealer that leaves (it receives no share).
    #[serde(default)]
    pub leaves: bool,
}

impl StoredReshare {
    /// The run index of device `device_id`, if it takes part.
    #[must_use]
    pub fn run_index(&self, device_id: &str) -> Option<PartyIndex> {
        self.run
            .iter()
            .position(|p| p.device.as_ref().is_some_and(|(d, _)| d == device_id))
            .and_then(|i| u8::try_from(i).ok())
            .map(PartyIndex::new)
    }

    /// The parties that commit the new epoch: the new structure's devices.
    fn participants(&self) -> Vec<PartyIndex> {
        self.run
            .iter()
            .enumerate()
            .filter(|(_, p)| p.device.is_some() && !p.leaves)
            .filter_map(|(i, _)| u8::try_from(i).ok().map(PartyIndex::new))
            .collect()
    }

    /// The run's parties as device `device_id` is told them.
    ///
    /// # Errors
    /// [`ApiError::Forbidden`] when that device does not take part; a database error.
    pub async fn session_parties(
        &self,
        db: &sqlx::AnyPool,
        device_id: &str,
    ) -> ApiResult<api::SessionParties> {
        let me = self.run_index(device_id).ok_or_else(|| {
            ApiError::Forbidden("this device takes no part in this resharing".into())
        })?;
        let mut parties = Vec::with_capacity(self.run.len());
        for (i, p) in self.run.iter().enumerate() {
            let party = u8::try_from(i).map_err(|_| ApiError::Internal("run size".into()))?;
            let device = match &p.device {
                Some((id, _)) => Some((id.clone(), db::devices::by_id(db, id).await?)),
                None => None,
            };
            parties.push(api::SessionParty {
                party,
                label: p.label.clone(),
                device_id: device.as_ref().map(|(id, _)| id.clone().into()),
                device_name: device.as_ref().map(|(_, row)| row.2.clone()),
                identity_key: device.as_ref().map(|(_, row)| hex::encode(&row.3)),
            });
        }
        Ok(api::SessionParties {
            structure: self.structure.clone(),
            me: me.get(),
            signers: parties.iter().map(|p| p.party).collect(),
            parties,
        })
    }

    /// What a device is told the run does.
    #[must_use]
    pub fn info(&self) -> api::ReshareInfo {
        api::ReshareInfo {
            wallet: self.wallet.clone(),
            quorum: self.quorum.clone(),
        }
    }
}

/// The structure a request moves to: `structure` as given, or the current one with devices
/// added beside the wallet's devices and others removed.
///
/// # Errors
/// The reason, for the request (400).
pub fn new_structure(
    current: &WalletStructure,
    add: &[String],
    remove: &[String],
    structure: Option<&str>,
) -> Result<String, String> {
    match (structure, add.is_empty() && remove.is_empty()) {
        (Some(text), true) => return Ok(text.to_string()),
        (Some(_), false) => {
            return Err("give either the new structure or the devices to add and remove".into());
        }
        (None, true) => {
            return Err("say what changes: devices to add or remove, or the new structure".into());
        }
        (None, false) => {}
    }
    let mut tree = current.tree().clone();
    for label in remove {
        if label == "server" {
            return Err("the server is a party of every wallet it stores".into());
        }
        if current.party(label).is_none() {
            return Err(format!(
                "{label:?} is not a party of this wallet (its parties: {})",
                current.labels().join(", ")
            ));
        }
        tree =
            without(tree, label)?.ok_or_else(|| format!("removing {label:?} leaves no party"))?;
    }
    for label in add {
        if current.party(label).is_some() {
            return Err(format!("{label:?} is a party of this wallet already"));
        }
        if !beside_devices(&mut tree, label) {
            return Err(format!(
                "this wallet's devices do not sit under one or(…) or threshold(…) node, so \
                 where {label:?} goes is not clear: give the new structure instead"
            ));
        }
    }
    Ok(tree.to_string())
}

/// `node` without the leaf `label`: an `or` keeps its other children, a `threshold(k, …)` keeps
/// `k` of fewer children (an `and` when as many are left), a node left with one child is that
/// child. Removing a party every quorum needs (under an `and`) is refused.
fn without(node: AccessStructure, label: &str) -> Result<Option<AccessStructure>, String> {
    let shrink = |children: Vec<AccessStructure>| {
        children
            .into_iter()
            .map(|c| without(c, label))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(match node {
        AccessStructure::Leaf(l) if l == label => None,
        AccessStructure::Leaf(l) => Some(AccessStructure::Leaf(l)),
        AccessStructure::And(children) => {
            let kept = shrink(children)?;
            if kept.iter().any(Option::is_none) {
                return Err(format!(
                    "every quorum needs {label:?} (it sits under an and(…)): removing it leaves \
                     no authorised set; give the new structure instead"
                ));
            }
            // An `and` inside an `and` is one `and`.
            let flat = kept
                .into_iter()
                .flatten()
                .flat_map(|c| match c {
                    AccessStructure::And(inner) => inner,
                    other => vec![other],
                })
                .collect();
            one_or(flat, AccessStructure::And)
        }
        AccessStructure::Or(children) => {
            let kept: Vec<_> = shrink(children)?.into_iter().flatten().collect();
            match kept.len() {
                0 => None,
                _ => one_or(kept, AccessStructure::Or),
            }
        }
        AccessStructure::Threshold { k, of } => {
            let kept: Vec<_> = shrink(of)?.into_iter().flatten().collect();
            if kept.len() < k {
                return Err(format!(
                    "removing {label:?} leaves {} of the {k} parties a threshold({k}, …) needs",
                    kept.len()
                ));
            }
            if kept.len() == k {
                one_or(kept, AccessStructure::And)
            } else {
                Some(AccessStructure::Threshold { k, of: kept })
            }
        }
    })
}

fn one_or(
    mut children: Vec<AccessStructure>,
    node: fn(Vec<AccessStructure>) -> AccessStructure,
) -> Option<AccessStructure> {
    match children.len() {
        0 => None,
        1 => children.pop(),
        _ => Some(node(children)),
    }
}

/// Adds the leaf `label` to the first `or`/`threshold` node with a device leaf among its
/// children, or turns `and(server, device)` into `and(server, or(device, label))`.
fn beside_devices(node: &mut AccessStructure, label: &str) -> bool {
    let is_device = |c: &AccessStructure| matches!(c, AccessStructure::Leaf(l) if l != "server");
    match node {
        AccessStructure::Leaf(_) => false,
        AccessStructure::Or(children) | AccessStructure::Threshold { of: children, .. } => {
            if children.iter().any(is_device) {
                children.push(AccessStructure::Leaf(label.to_string()));
                return true;
            }
            children.iter_mut().any(|c| beside_devices(c, label))
        }
        AccessStructure::And(children) => {
            if children.iter_mut().any(|c| beside_devices(c, label)) {
                return true;
            }
            // `and(server, device)`, the default with one device: the device gets company.
            // With two devices or more under an `and`, each is required, and where a new one
            // goes is not clear.
            let devices = children.iter().filter(|c| is_device(c)).count();
            let leaves = children
                .iter()
                .all(|c| matches!(c, AccessStructure::Leaf(_)));
            if devices != 1 || !leaves {
                return false;
            }
            if let Some(device) = children.iter_mut().find(|c| is_device(c)) {
                let old = std::mem::replace(device, AccessStructure::Leaf(String::new()));
                *device = AccessStructure::Or(vec![old, AccessStructure::Leaf(label.to_string())]);
                return true;
            }
            false
        }
    }
}

/// The approval of device `device_id` (named `name`) of `user_id`, in its transaction: it is to
/// join each of the user's structure wallets whose devices it can sit beside
/// ([`new_structure`]'s `add`; a wallet of another shape, or a device whose name gives no
/// label, needs a resharing to a structure given in full). Returns those wallets' ids.
///
/// # Errors
/// A database error.
pub async fn record_joins(
    tx: &mut db::WriteTx,
    user_id: &str,
    device_id: &str,
    name: &str,
) -> ApiResult<Vec<String>> {
    let Some(label) = crate::names::party_label(name) else {
        return Ok(Vec::new());
    };
    let mut joins = Vec::new();
    for (wallet_id, structure) in
        db::wallet_changes::joinable_wallets(tx, user_id, device_id).await?
    {
        let Ok(current) = WalletStructure::parse(&structure) else {
            continue;
        };
        if new_structure(&current, std::slice::from_ref(&label), &[], None).is_ok() {
            db::wallet_changes::add(tx, &wallet_id, device_id, now()).await?;
            joins.push(wallet_id);
        }
    }
    Ok(joins)
}

/// A resharing created and waiting for its parties: what the server's party runs.
#[derive(Clone, Debug)]
pub struct ReshareJob {
    /// The session.
    pub session_id: ServerSessionId,
    /// The wallet.
    pub wallet_id: String,
    /// What it runs.
    pub stored: StoredReshare,
    /// The run's nonce.
    pub nonce: [u8; 32],
    /// Who asked.
    pub requester: AuthDevice,
    /// The server's share at the current epoch: its epoch and sealed bytes.
    pub share: (i64, Vec<u8>),
}

/// `POST /reshare`: see the [module documentation](self).
///
/// # Errors
/// 400 for a request that does not say one change, a structure that does not resolve, dealers
/// that are not a minimal quorum, a 2-of-2 wallet; 403 when the caller is not a party of the
/// wallet, or the new structure keeps a banned device whose lift nobody approved; 409 when a refresh or resharing of the wallet is live; database errors.
#[utoipa::path(post, path = "/reshare", tag = "wallets", security(("bearer" = [])), request_body = api::ReshareRequest, responses((status = 200, description = "A resharing session", body = api::SessionCreated), crate::openapi::AuthErrors, crate::openapi::NotFound, crate::openapi::Conflict, crate::openapi::Errors))]
pub async fn reshare(
    State(state): State<AppState>,
    me: AuthDevice,
    ApiJson(req): ApiJson<api::ReshareRequest>,
) -> ApiResult<Json<api::SessionCreated>> {
    let wallet = db::wallets::owned(state.db(), &me.user_id, &req.wallet_id).await?;
    let mut device_nonce = [0u8; 32];
    hex::decode_to_slice(&req.device_nonce, &mut device_nonce)
        .map_err(|_| ApiError::BadRequest("device_nonce must be 64 hex digits".into()))?;
    let Some(current) = db::wallet_parties::wallet(state.db(), &wallet.id)
        .await?
        .and_then(|w| w.structure)
    else {
        return Err(ApiError::BadRequest(
            "a 2-of-2 wallet is refreshed (`tessera refresh`), not reshared".into(),
        ));
    };
    let current = WalletStructure::parse(&current)
        .map_err(|e| ApiError::Internal(format!("stored structure: {e}")))?;
    let text = new_structure(&current, &req.add, &req.remove, req.structure.as_deref())
        .map_err(ApiError::BadRequest)?;
    // The server's share: the wallet's public facts, and what its party deals with.
    let share = db::shares::active(state.db(), &wallet.id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no server share for this wallet".into()))?;
    let public = crate::vault::unseal(&state, &wallet.id, share.0, &share.1)?.wallet_public();
    let mut tx = state.begin_write().await?;
    crate::vault::discard_stale_pending(&mut tx, &wallet.id).await?;
    let old = db::wallet_parties::of_wallet(&mut *tx, &wallet.id).await?;
    let resolved = wallet_parties::resolve(&mut tx, &me.user_id, &text, &old).await?;
    // Another user's device stays with its acceptance; one not yet a party is invited at a
    // key generation, where it accepts before it takes part.
    if let Some(party) = resolved.needs_acceptance().find(|p| {
        !old.iter().any(|o| {
            o.accepted.is_some()
                && matches!(&p.member, Member::Device { device_id, .. } if o.device_id.as_deref() == Some(device_id))
        })
    }) {
        return Err(ApiError::BadRequest(format!(
            "party {:?} is another user's device that is not a party of this wallet: a \
             resharing does not invite one (it would have to accept first); make a new wallet \
             with it instead",
            party.label
        )));
    }
    // A banned device stays out unless another device approved lifting its ban.
    let bans = crate::bans::structure_bans(&mut tx, &wallet.id).await?;
    let kept: Vec<&str> = resolved
        .parties()
        .iter()
        .filter_map(|p| match &p.member {
            Member::Device { device_id, .. } => Some(device_id.as_str()),
            Member::Server => None,
        })
        .collect();
    crate::bans::refuse_banned_devices(&bans, &kept)?;
    let old_index = |p: &db::wallet_parties::StoredParty| {
        u8::try_from(p.party).map_err(|_| ApiError::Internal(format!("stored party {}", p.party)))
    };
    let mine = old
        .iter()
        .find(|p| p.device_id.as_deref() == Some(me.device_id.as_str()))
        .ok_or_else(|| ApiError::Forbidden("this device is not a party of this wallet".into()))?;
    let server = old
        .iter()
        .find(|p| p.kind == PartyKind::Server)
        .ok_or_else(|| ApiError::Internal("a structure wallet without the server".into()))?;
    let mut quorum = std::collections::BTreeSet::from([old_index(mine)?, old_index(server)?]);
    for label in &req.with {
        let party = old
            .iter()
            .find(|p| p.label == *label && p.kind == PartyKind::Device)
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "{label:?} is not a device party of this wallet (its parties: {})",
                    current.labels().join(", ")
                ))
            })?;
        quorum.insert(old_index(party)?);
    }
    let mut members: Vec<PartyIndex> = quorum.iter().copied().map(PartyIndex::new).collect();
    if req.with.is_empty() && !current.is_authorised(&members) {
        // None named: the smallest quorum of the requester, the server and devices online, as
        // for a signature (`coordinator::sign_parties`).
        let mut online =
            db::wallet_changes::online_parties(&mut *tx, &wallet.id, crate::state::now()).await?;
        online.extend(members.iter().copied());
        let banned: Vec<PartyIndex> = bans.iter().map(|b| PartyIndex::new(b.party)).collect();
        members = current
            .choose_quorum(&online, &banned, &members)
            .map_err(|e| {
                ApiError::BadRequest(format!(
                    "this device and the server are not a quorum of {current}, and the devices \
                     online (running `tessera listen`) do not complete one ({e}): start their \
                     agents or name the devices to deal with (`--with`)"
                ))
            })?
            .into_iter()
            .collect();
    }
    let quorum: Vec<u8> = members.iter().map(|p| p.get()).collect();
    current.check_quorum(&members).map_err(|e| {
        ApiError::BadRequest(format!(
            "the dealers ({}) must be a minimal quorum of {current}: {e}",
            members
                .iter()
                .filter_map(|&p| current.label(p))
                .collect::<Vec<_>>()
                .join(" + ")
        ))
    })?;
    let mut run: Vec<RunParty> = resolved
        .parties()
        .iter()
        .map(|p| RunParty {
            label: p.label.clone(),
            device: match &p.member {
                Member::Server => None,
                Member::Device {
                    device_id, user_id, ..
                } => Some((device_id.clone(), user_id.clone())),
            },
            leaves: false,
        })
        .collect();
    for p in old.iter().filter(|p| quorum.contains(&(p.party as u8))) {
        if resolved.structure().party(&p.label).is_none() {
            run.push(RunParty {
                label: p.label.clone(),
                device: p.device_id.clone().zip(p.user_id.clone()),
                leaves: true,
            });
        }
    }
    let stored = StoredReshare {
        structure: resolved.text(),
        smallest_quorum: resolved.smallest_quorum() as i64,
        wallet: api::WalletPublicInfo::from(&public),
        quorum,
        run,
    };
    let session_id = hex::encode(fresh_nonce());
    let server_nonce = fresh_nonce();
    let nonce = joint_nonce(&[device_nonce, server_nonce]);
    let params = serde_json::to_string(&stored).map_err(|e| ApiError::Internal(e.to_string()))?;
    let inserted = crate::live_sessions::insert_within_caps(
        &state,
        &mut tx,
        &db::sessions::NewSession {
            id: &session_id,
            device_id: &me.device_id,
            wallet_id: &wallet.id,
            protocol: Protocol::Reshare,
            nonce: nonce.as_slice(),
            params: &params,
            epoch: wallet.epoch as i64,
            owner: None,
        },
    )
    .await;
    match inserted {
        Ok(()) => {}
        Err(crate::live_sessions::InsertError::Cap(e)) => return Err(e),
        Err(crate::live_sessions::InsertError::Database(sqlx::Error::Database(e)))
            if e.is_unique_violation() =>
        {
            return Err(ApiError::Conflict(
                "a refresh or resharing of this wallet is already in progress; try again when \
                 it ends"
                    .into(),
            ));
        }
        Err(crate::live_sessions::InsertError::Database(e)) => return Err(e.into()),
    }
    audit::append_in(
        &mut tx,
        "session.created",
        Subject::device(&me).wallet(&wallet.id),
        json!({
            "session_id": session_id,
            "protocol": Protocol::Reshare.as_str(),
            "epoch": wallet.epoch,
            "from": current.to_string(),
            "structure": stored.structure,
        }),
    )
    .await?;
    tx.commit().await?;
    let parties = stored.session_parties(state.db(), &me.device_id).await?;
    let job = ReshareJob {
        session_id: ServerSessionId::new(session_id),
        wallet_id: wallet.id.clone(),
        stored,
        nonce,
        requester: me,
        share,
    };
    let created = api::SessionCreated {
        session_id: job.session_id.clone(),
        wallet_id: wallet.id.into(),
        nonce: hex::encode(server_nonce),
        epoch: wallet.epoch,
        approval: None,
        parties: Some(parties),
        reshare: Some(job.stored.info()),
    };
    let (runner, appear_within) = (state.clone(), state.config().session_idle_timeout);
    tokio::spawn(async move { run_reshare(&runner, &job, appear_within).await });
    state.announce_joinable();
    Ok(Json(created))
}

/// Runs the server's party of a resharing (module documentation), and records its end:
/// `reshare.done` with the switch, or `reshare.failed` / `session.expired` naming the party at
/// fault where there is one.
pub async fn run_reshare(state: &AppState, job: &ReshareJob, appear_within: Duration) {
    let _live = state.shutdown().track("run");
    let sid = job.session_id.as_str();
    match db::sessions::claim(state.db(), sid, state.instance(), now()).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::warn!(session_id = %sid, error = %e, "could not claim a resharing");
            return;
        }
    }
    let started = std::time::Instant::now();
    crate::observe::session_started("reshare", sid);
    let (result, link) = reshare_party(state, job, appear_within).await;
    match &result {
        Ok(()) => {
            crate::observe::session_ended("reshare", sid, "done", None, None, started);
        }
        Err((status, reason, party)) => crate::observe::session_ended(
            "reshare",
            sid,
            status.as_str(),
            party.map(PartyIndex::get),
            Some(reason),
            started,
        ),
    }
    let end = match result {
        Ok(()) => End::finished(),
        Err((status, reason, party)) => {
            let kind = if status == SessionStatus::Expired {
                "session.expired"
            } else {
                "reshare.failed"
            };
            let recorded = crate::ws::record_end(
                state,
                sid,
                (status, Some(&reason)),
                Subject::device(&job.requester).wallet(&job.wallet_id),
                &[(
                    kind.to_string(),
                    json!({
                        "session_id": sid,
                        "detail": reason,
                        "party": party.map(PartyIndex::get),
                    }),
                )],
            )
            .await;
            if let Err(e) = recorded {
                tracing::error!(session_id = %sid, error = %e, "could not record the end of a resharing");
            }
            End::new(
                if status == SessionStatus::Expired {
                    EndReason::Expired
                } else {
                    EndReason::Failed
                },
                &reason,
            )
        }
    };
    if let Some(link) = link
        && let Err(e) = link.end(end).await
    {
        tracing::warn!(session_id = %sid, error = %e, "could not tell the parties how the server's run ended");
    }
}

type Failure = (SessionStatus, String, Option<PartyIndex>);

fn drive_failed(e: &DriveError<LinkError>) -> Failure {
    let (status, party, _) = crate::coordinator::drive_failure(e);
    (status, e.to_string(), party)
}

/// The server's party of a resharing, through the switch and its announcement.
async fn reshare_party(
    state: &AppState,
    job: &ReshareJob,
    appear_within: Duration,
) -> (Result<(), Failure>, Option<MailboxLink>) {
    let failed = |why: String| (SessionStatus::Failed, why, None);
    let prepared = (|| {
        let share = crate::vault::unseal(state, &job.wallet_id, job.share.0, &job.share.1)
            .map_err(|e| e.to_string())?;
        let new_structure =
            WalletStructure::parse(&job.stored.structure).map_err(|e| e.to_string())?;
        let request = ReshareRequest {
            nonce: job.nonce,
            quorum: job
                .stored
                .quorum
                .iter()
                .copied()
                .map(PartyIndex::new)
                .collect(),
            new_structure,
        };
        ReshareSession::new(&share, &request).map_err(|e| e.to_string())
    })();
    let mut session = match prepared {
        Ok(session) => session,
        Err(e) => return (Err(failed(e)), None),
    };
    let peers = session.peers();
    let mut link = match crate::session_link::opened_unless_closing(
        MailboxLink::open(
            state.mailboxes(),
            &job.session_id,
            session.party(),
            &peers,
            appear_within,
        ),
        state.shutdown(),
    )
    .await
    {
        Ok(link) => link,
        Err(e) => {
            let status = crate::coordinator::open_failure(&e);
            return (Err((status, e.to_string(), e.party())), None);
        }
    };
    let idle = Some(state.config().session_idle_timeout);
    let result = async {
        let share = driver::drive(&mut session, &mut link, idle, |_, _| Ok(()))
            .await
            .map_err(|e| drive_failed(&e))?
            .ok_or_else(|| failed("the server's party received no new share".into()))?;
        let epoch = share.epoch();
        crate::vault::store_pending(state, &job.wallet_id, job.session_id.as_str(), &share)
            .await
            .map_err(|e| failed(format!("the server could not store its new share: {e}")))?;
        let all = CoordinatorPending::stored(epoch)
            .collect_commits(&mut link, &job.stored.participants(), idle)
            .await
            .map_err(|e| drive_failed(&e))?;
        switch(state, job, &share)
            .await
            .map_err(|e| failed(format!("the server could not switch to the new epoch: {e}")))?;
        if let Err(e) = all.announce_switch(&mut link).await {
            // Switched and recorded: the parties see the new epoch on their next session.
            tracing::warn!(session_id = %job.session_id, error = %e, "could not announce the switch of a resharing");
        }
        Ok(())
    }
    .await;
    (result, Some(link))
}

/// The switch (module documentation, step 3): one write transaction, tried up to
/// [`db::DURABLE_ATTEMPTS`] times.
async fn switch(state: &AppState, job: &ReshareJob, share: &KeyShare) -> ApiResult<()> {
    let epoch = share.epoch() as i64;
    let wallet_id = job.wallet_id.as_str();
    let sid = job.session_id.as_str();
    let resolved_parties: Vec<db::wallet_parties::NewParty<'_>> = job
        .stored
        .run
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.leaves)
        .map(|(i, p)| db::wallet_parties::NewParty {
            party: i as i64,
            label: &p.label,
            kind: if p.device.is_some() {
                PartyKind::Device
            } else {
                PartyKind::Server
            },
            device: p.device.as_ref().map(|(d, u)| (d.as_str(), u.as_str())),
        })
        .collect();
    let mut attempt = 1;
    loop {
        let written = async {
            let mut tx = state.begin_write().await?;
            if !db::shares::switch_to_pending(&mut tx, wallet_id, sid, epoch).await? {
                return Err(ApiError::Conflict(format!(
                    "no pending epoch {epoch} of this session to switch to"
                )));
            }
            if !db::wallet_parties::switch_structure(
                &mut tx,
                wallet_id,
                &job.stored.structure,
                job.stored.smallest_quorum,
                epoch,
                &resolved_parties,
            )
            .await?
            {
                return Err(ApiError::Conflict(format!(
                    "wallet {wallet_id} is no longer at epoch {}",
                    epoch - 1
                )));
            }
            db::shares::delete_old_epochs(&mut *tx, wallet_id, epoch).await?;
            db::wallet_changes::settle(&mut tx, wallet_id).await?;
            // Bans: those of departed devices end; approved lifts take effect (the new
            // set-up makes what a banned party learnt worthless, as a refresh does); the rest
            // follow their device to its new index.
            let mut lifted = crate::bans::lift_in(&mut tx, wallet_id, sid).await?;
            lifted
                .bans
                .extend(db::bans::after_structure_switch(&mut tx, wallet_id, sid, now()).await?);
            crate::bans::audit_lifted(&mut tx, wallet_id, sid, &lifted).await?;
            db::sessions::record_end(&mut *tx, sid, SessionStatus::Done, None, now()).await?;
            audit::append_in(
                &mut tx,
                "reshare.done",
                Subject::device(&job.requester).wallet(wallet_id),
                json!({
                    "session_id": sid,
                    "epoch": epoch,
                    "from": job.stored.wallet.structure,
                    "structure": job.stored.structure,
                    "public_key": share.public_key().to_string(),
                }),
            )
            .await?;
            tx.commit().await
        }
        .await;
        match written {
            Ok(()) => {
                state.unsealed().forget(wallet_id);
                return Ok(());
            }
            Err(e @ ApiError::Conflict(_)) => return Err(e),
            Err(e) if attempt < db::DURABLE_ATTEMPTS => {
                tracing::warn!(session_id = %sid, attempt, error = %e, "retrying the switch of a resharing");
                attempt += 1;
                tokio::time::sleep(db::retry_pause(attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edit(current: &str, add: &[&str], remove: &[&str]) -> Result<String, String> {
        let current = WalletStructure::parse(current).unwrap();
        let owned = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        new_structure(&current, &owned(add), &owned(remove), None)
    }

    #[test]
    fn devices_are_added_beside_the_wallets_devices() {
        assert_eq!(
            edit("and(server, or(a, b, c))", &["d"], &[]).unwrap(),
            "and(server, or(a, b, c, d))"
        );
        assert_eq!(
            edit("and(server, a)", &["b"], &[]).unwrap(),
            "and(server, or(a, b))"
        );
        assert_eq!(
            edit("and(server, threshold(2, x, y, z))", &["w"], &[]).unwrap(),
            "and(server, threshold(2, x, y, z, w))"
        );
        assert!(edit("and(server, or(a, b))", &["a"], &[]).is_err());
        // Every device required: where a new one goes is not clear.
        assert!(edit("and(server, a, b)", &["c"], &[]).is_err());
    }

    #[test]
    fn devices_are_removed_and_what_would_leave_no_quorum_is_refused() {
        assert_eq!(
            edit("and(server, or(a, b, c))", &[], &["a"]).unwrap(),
            "and(server, or(b, c))"
        );
        assert_eq!(
            edit("and(server, or(a, b))", &[], &["a"]).unwrap(),
            "and(server, b)"
        );
        assert_eq!(
            edit("and(server, threshold(2, x, y, z))", &[], &["x"]).unwrap(),
            "and(server, y, z)"
        );
        assert!(edit("and(server, threshold(2, x, y))", &[], &["x"]).is_err());
        assert!(edit("and(server, a, or(b, c))", &[], &["a"]).is_err());
        assert!(edit("and(server, or(a, b))", &[], &["server"]).is_err());
        assert!(edit("and(server, or(a, b))", &[], &["q"]).is_err());
        assert!(edit("and(server, or(a, b))", &[], &[]).is_err());
    }
}
