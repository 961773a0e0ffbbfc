//! The device's party in the resharing of a structure wallet (issue 15; the server's side is
//! `tessera_server::reshare`, the protocol `tessera_core::ReshareSession`): asked for by one
//! device ([`ServerClient::reshare`]) — a device added, one removed, or a new structure — and
//! joined by the others ([`ServerClient::join_reshare`]), a device that joins the wallet
//! included (it holds no share yet).
//!
//! What the server says is checked before anything runs, as for the other sessions
//! (`crate::parties`): the wallet's public facts it lists must be this device's share's (a
//! device joining the wallet takes the server's word for them, but the dealers bind them into
//! the session id, so a server that lies to it only makes the run fail), and the run's parties
//! must be the new structure's, then the dealers that leave, each where
//! `ReshareSession::run_index` puts it.
//!
//! The finish is the two-phase one the server coordinates (`tessera_core::driver`): a device of
//! the new structure is given its new share through `keep_pending` (store it as pending,
//! durably) before it commits, and the share is returned once the server switched; the caller
//! then switches. A dealer that leaves gets [`Reshared::Left`] once the server finished: its
//! old share signs nothing the new ones sign.

use std::collections::BTreeMap;

use tessera_api as api;
use tessera_api::session_frame::End;
use tessera_core::driver;
use tessera_core::protocols::{fresh_nonce, joint_nonce};
use tessera_core::structure::WalletStructure;
use tessera_core::{
    KeyShare, PartyIndex, ReshareRequest, ReshareSession, Session, WalletId, WalletPublic,
};
use tessera_store::DeviceIdentity;

use crate::ServerClient;
use crate::error::{ClientError, Result, net};
use crate::parties::PARTY_WAIT;

/// What a resharing changes: devices added or removed, or the whole new structure; and the
/// other devices that deal with this one and the server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReshareChange {
    /// Party labels of the user's active devices to add beside the wallet's devices.
    pub add: Vec<String>,
    /// Device parties to remove.
    pub remove: Vec<String>,
    /// The new structure (its current one: a refresh of the wallet).
    pub structure: Option<String>,
    /// Other device parties that deal (with this device and the server, a minimal quorum).
    pub with: Vec<String>,
}

/// Where this device's part in a resharing is, for the `on_step` hook (progress, and the
/// points where a crash test stops the process).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReshareStep {
    /// Protocol round `r` of `total` completed.
    Round(u8, u8),
    /// The new share was stored as pending (`keep_pending` returned); the commit is next.
    PendingStored,
    /// The commit was sent; the server may have switched already.
    CommitSent,
}

/// How this device's part in a resharing ended.
#[derive(Debug)]
pub enum Reshared {
    /// Its share of the new structure; the server switched to its epoch.
    Share(Box<KeyShare>),
    /// This device dealt and is not in the new structure.
    Left,
}

fn bad(why: impl std::fmt::Display) -> ClientError {
    net(format!("the server described the resharing wrongly: {why}"))
}

/// A resharing's description, checked.
struct Checked {
    old: WalletPublic,
    request: ReshareRequest,
    /// This device's label in the run.
    label: String,
    server: PartyIndex,
    devices: Vec<(PartyIndex, api::SessionParty, [u8; 32])>,
}

/// Checks what the server says about a resharing (module documentation).
fn check(
    wallet_id: &api::WalletId,
    parties: &api::SessionParties,
    info: &api::ReshareInfo,
    nonce: [u8; 32],
    identity: &DeviceIdentity,
    share: Option<&KeyShare>,
) -> Result<Checked> {
    let wallet = WalletId::from_hex(wallet_id)?;
    let old = info.wallet.to_wallet_public(wallet).map_err(bad)?;
    if let Some(share) = share
        && share.wallet_public() != old
    {
        return Err(bad(format!(
            "the wallet at epoch {} it describes is not this device's share's (epoch {})",
            old.epoch,
            share.epoch()
        )));
    }
    let new_structure = WalletStructure::parse(&parties.structure).map_err(bad)?;
    let request = ReshareRequest {
        nonce,
        quorum: info.quorum.iter().copied().map(PartyIndex::new).collect(),
        new_structure,
    };
    let leaving = request
        .quorum
        .iter()
        .filter_map(|&p| old.structure.label(p))
        .filter(|l| request.new_structure.party(l).is_none())
        .count();
    if parties.parties.len() != request.new_structure.party_count() + leaving {
        return Err(bad(format!(
            "{} parties listed for a run of {}",
            parties.parties.len(),
            request.new_structure.party_count() + leaving
        )));
    }
    let mut server = None;
    let mut devices = Vec::new();
    let mut label = None;
    for (i, party) in parties.parties.iter().enumerate() {
        let index = PartyIndex::new(party.party);
        if usize::from(party.party) != i
            || ReshareSession::run_index(&old, &request, &party.label)? != Some(index)
        {
            return Err(bad(format!(
                "party {} ({:?}) is not where the run puts it",
                party.party, party.label
            )));
        }
        match (&party.device_id, &party.identity_key) {
            (None, None) if server.is_none() && party.label == "server" => server = Some(index),
            (Some(_), Some(key)) => {
                let mut bytes = [0u8; 32];
                hex::decode_to_slice(key, &mut bytes)
                    .map_err(|_| bad(format!("party {index}'s identity key")))?;
                if party.party == parties.me {
                    if bytes != identity.public_key() {
                        return Err(bad(format!(
                            "this device's party {index} has another identity key"
                        )));
                    }
                    label = Some(party.label.clone());
                } else {
                    devices.push((index, party.clone(), bytes));
                }
            }
            _ => {
                return Err(bad(format!(
                    "party {index} is neither the server nor a device"
                )));
            }
        }
    }
    let server = server.ok_or_else(|| bad("no party is the server"))?;
    let label = label.ok_or_else(|| bad(format!("this device cannot be party {}", parties.me)))?;
    if let Some(share) = share
        && old.structure.label(share.party()) != Some(label.as_str())
    {
        return Err(bad(format!(
            "this device is party {:?} of the wallet, not {label:?}",
            old.structure.label(share.party()).unwrap_or("?")
        )));
    }
    Ok(Checked {
        old,
        request,
        label,
        server,
        devices,
    })
}

impl ServerClient {
    /// Reshares a structure wallet of which this device holds `share`: asks the server for the
    /// resharing `change` describes and runs this device's party (a dealer, with the server and
    /// `change.with`); every device of the new structure and every other dealer joins from its
    /// `tessera listen` ([`Self::join_reshare`]) within [`PARTY_WAIT`]. `keep_pending(new)`
    /// must store this device's new share as pending, durably, before it returns (it is called
    /// before the commit). Identity keys as [`Self::keygen_structure`].
    ///
    /// # Errors
    /// The server's refusal (a structure naming an unknown device, dealers that are not a
    /// minimal quorum, a resharing or refresh of the wallet in progress...), `trust`'s or
    /// `keep_pending`'s, a party that never came or failed (named), network errors.
    #[allow(clippy::too_many_arguments)] // a resharing's parts and its three hooks
    pub async fn reshare(
        &self,
        share: &KeyShare,
        change: &ReshareChange,
        identity: &DeviceIdentity,
        trust: impl FnMut(&api::SessionParty, [u8; 32]) -> Result<[u8; 32]>,
        on_step: impl FnMut(ReshareStep),
        keep_pending: impl FnOnce(&KeyShare) -> Result<()>,
    ) -> Result<Reshared> {
        let ours = fresh_nonce();
        let created: api::SessionCreated = self
            .post(
                "/reshare",
                &api::ReshareRequest {
                    wallet_id: share.wallet_id().to_string().into(),
                    add: change.add.clone(),
                    remove: change.remove.clone(),
                    structure: change.structure.clone(),
                    with: change.with.clone(),
                    device_nonce: hex::encode(ours),
                },
            )
            .await?;
        let (Some(parties), Some(info)) = (&created.parties, &created.reshare) else {
            return Err(bad("no parties"));
        };
        let mut server = [0u8; 32];
        hex::decode_to_slice(&created.nonce, &mut server).map_err(|_| bad("its nonce"))?;
        let nonce = joint_nonce(&[ours, server]);
        self.run_reshare(
            &created.session_id,
            (&created.wallet_id, parties, info, nonce),
            Some(share),
            identity,
            trust,
            on_step,
            keep_pending,
        )
        .await
    }

    /// Joins `session` (from [`Self::joinable`], a resharing) with this device's `share` of the
    /// wallet, or with none when this device joins the wallet; as [`Self::reshare`] from there.
    ///
    /// # Errors
    /// As [`Self::reshare`]; [`ClientError::Refused`] for a session that is not a resharing.
    #[allow(clippy::too_many_arguments)] // as `reshare`
    pub async fn join_reshare(
        &self,
        session: &api::JoinableSession,
        share: Option<&KeyShare>,
        identity: &DeviceIdentity,
        trust: impl FnMut(&api::SessionParty, [u8; 32]) -> Result<[u8; 32]>,
        on_step: impl FnMut(ReshareStep),
        keep_pending: impl FnOnce(&KeyShare) -> Result<()>,
    ) -> Result<Reshared> {
        let Some(info) = session
            .reshare
            .as_ref()
            .filter(|_| session.protocol == "reshare")
        else {
            return Err(ClientError::Refused(format!(
                "session {} is a {}, not a resharing",
                session.session_id, session.protocol
            )));
        };
        let mut nonce = [0u8; 32];
        hex::decode_to_slice(&session.nonce, &mut nonce).map_err(|_| bad("its nonce"))?;
        self.run_reshare(
            &session.session_id,
            (&session.wallet_id, &session.parties, info, nonce),
            share,
            identity,
            trust,
            on_step,
            keep_pending,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)] // the two callers' common part
    async fn run_reshare(
        &self,
        session_id: &api::ServerSessionId,
        (wallet_id, parties, info, nonce): (
            &api::WalletId,
            &api::SessionParties,
            &api::ReshareInfo,
            [u8; 32],
        ),
        share: Option<&KeyShare>,
        identity: &DeviceIdentity,
        mut trust: impl FnMut(&api::SessionParty, [u8; 32]) -> Result<[u8; 32]>,
        mut on_step: impl FnMut(ReshareStep),
        keep_pending: impl FnOnce(&KeyShare) -> Result<()>,
    ) -> Result<Reshared> {
        let checked = check(wallet_id, parties, info, nonce, identity, share)?;
        let mut trusted = BTreeMap::new();
        for (index, party, registry) in &checked.devices {
            trusted.insert(*index, trust(party, *registry)?);
        }
        let mut session = match share {
            Some(share) => ReshareSession::new(share, &checked.request)?,
            None => ReshareSession::joining(&checked.old, &checked.label, &checked.request)?,
        };
        let mut link = self
            .sealed_link(session_id, &session, identity, &trusted)
            .await?;
        let session_ref = session.session_id();
        let fail = |e| crate::session::drive_error(session_ref, e);
        let output = driver::drive(&mut session, &mut link, Some(PARTY_WAIT), |round, total| {
            on_step(ReshareStep::Round(round, total));
            Ok(())
        })
        .await
        .map_err(fail)?;
        let Some(new) = output else {
            link.await_finished(checked.server, PARTY_WAIT).await?;
            link.end(End::finished()).await?;
            return Ok(Reshared::Left);
        };
        if new.public_key() != checked.old.public_key || new.epoch() != checked.old.epoch + 1 {
            return Err(bad("the run made another key or epoch"));
        }
        let announced =
            driver::await_pending(&mut link, checked.server, new.epoch(), Some(PARTY_WAIT))
                .await
                .map_err(fail)?;
        keep_pending(&new)?;
        on_step(ReshareStep::PendingStored);
        let committed = announced.commit(&mut link).await.map_err(fail)?;
        on_step(ReshareStep::CommitSent);
        committed
            .await_switch(&mut link, Some(PARTY_WAIT))
            .await
            .map_err(fail)?;
        link.await_finished(checked.server, PARTY_WAIT).await?;
        link.end(End::finished()).await?;
        Ok(Reshared::Share(Box::new(new)))
    }
}
