//! Refreshing a device-to-device wallet's shares: every device of the wallet takes part, the
//! public key stays, every share moves to the next epoch, and the old shares become useless.
//!
//! The run is the one driver's (a [`RefreshSession`] over the mesh of channels) followed by its
//! two-phase finish, the leader coordinating: the leader stores its new share as pending and
//! says so (`RefreshPending`); each participant stores its own as pending and answers
//! `RefreshCommit`; once every participant committed, the leader switches (deleting the old
//! share) and says so (`RefreshSwitched`); then each participant switches. The caller's `finish` hook does the storing.
//!
//! A crash leaves each device with its old share in use and, perhaps, the new one pending (or,
//! on the leader only, the new one in use once everyone committed). Before the next session of
//! the wallet the devices that hold a pending share exchange what they hold (`Held`) and
//! [`settle`]: a device switches when another one already did (so everyone committed) or when
//! every device of the wallet holds the new share; it drops its pending share when another
//! device never stored it (so nobody can have switched). Otherwise it keeps both and uses the
//! old one, which every device still holds.

use std::collections::BTreeMap;

use tessera_core::driver::{self, CoordinatorPending};
use tessera_core::{KeyShare, PartyIndex, RefreshSession, WalletId};

use super::PeerError;
use super::channel::Channel;
use super::known::{KnownPeers, PeerWallet};
use super::mesh::{Confirm, Joins, Link, Mesh, accept, gather, interconnect, session_nonce};
use super::pairing::{AuthenticatedPeer, LocalDevice, recv, send};
use super::session::invitation_hash;
use super::wire::{Message, Participant, Request};

/// The epochs of one wallet's shares a device holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    /// The share in use.
    pub current: u64,
    /// A pending share (stored during a refresh that did not finish here), if any.
    pub pending: Option<u64>,
}

/// What a device does with its record after comparing what the devices hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settlement {
    /// Nothing to change (no pending share, or not enough known to decide: keep both and use
    /// the share in use, which every device holds).
    Unchanged,
    /// Switch to the pending share and delete the old one.
    Switch,
    /// Delete the pending share: the refresh never finished anywhere.
    DropPending,
}

/// Decides how `mine` settles against what `others` hold; `every_party`: `others` are all the
/// other devices of the wallet.
///
/// # Errors
/// [`PeerError::EpochMismatch`] when another device uses an epoch this one does not hold.
pub fn settle(mine: Held, others: &[Held], every_party: bool) -> Result<Settlement, PeerError> {
    let ahead = others.iter().map(|h| h.current).max().unwrap_or(0);
    if ahead > mine.current {
        // The leader switches only once every device committed: switch too.
        return if mine.pending == Some(ahead) {
            Ok(Settlement::Switch)
        } else {
            Err(PeerError::EpochMismatch {
                current: mine.current,
                pending: mine.pending,
                other: ahead,
            })
        };
    }
    let Some(next) = mine.pending else {
        return Ok(Settlement::Unchanged);
    };
    if others
        .iter()
        .any(|h| h.current != next && h.pending != Some(next))
    {
        // A device never stored the new share, so it never committed and nobody switched.
        Ok(Settlement::DropPending)
    } else if every_party {
        Ok(Settlement::Switch)
    } else {
        Ok(Settlement::Unchanged)
    }
}

/// Tells the device at `channel` what this one holds of `wallet` and returns what it holds.
///
/// # Errors
/// Channel errors; a refusal; an answer about another wallet.
pub async fn exchange_held(
    channel: &mut Channel,
    wallet: &str,
    mine: Held,
) -> Result<Held, PeerError> {
    send(
        channel,
        &Message::Held {
            wallet: wallet.to_string(),
            current: mine.current,
            pending: mine.pending,
        },
    )
    .await?;
    receive_held(channel, wallet).await
}

/// Reads the other device's [`Message::Held`] about `wallet`.
///
/// # Errors
/// Channel errors; a refusal; another message.
pub async fn receive_held(channel: &mut Channel, wallet: &str) -> Result<Held, PeerError> {
    match recv(channel).await? {
        Message::Held {
            wallet: theirs,
            current,
            pending,
        } if theirs == wallet => Ok(Held { current, pending }),
        Message::Refuse { reason } => Err(PeerError::Refused(reason)),
        _ => Err(PeerError::Protocol(
            "expected the epochs the device holds".into(),
        )),
    }
}

/// A refresh invitation, checked, for the user to approve.
#[derive(Clone, Debug)]
pub struct RefreshInvitation {
    /// The wallet's name.
    pub wallet: String,
    /// Its id.
    pub wallet_id: WalletId,
    /// The epoch refreshed.
    pub epoch: u64,
    /// The leader's party index.
    pub leader: u8,
    /// Every device in party order.
    pub parties: Vec<Participant>,
    /// Our party index.
    pub me: u8,
    request: Request,
}

impl RefreshInvitation {
    /// The parties with the leader first, then the others in order (the order of the session
    /// nonces).
    fn members(&self) -> Vec<u8> {
        members(self.leader, self.parties.len())
    }
}

fn members(leader: u8, n: usize) -> Vec<u8> {
    let n = u8::try_from(n).unwrap_or(u8::MAX);
    std::iter::once(leader)
        .chain((0..n).filter(|&p| p != leader))
        .collect()
}

/// Checks a refresh request from `from` against our share of the wallet and its device list.
///
/// # Errors
/// [`PeerError::Protocol`] or [`PeerError::EpochMismatch`] naming what is wrong.
pub fn check_refresh(
    request: &Request,
    from: &AuthenticatedPeer,
    share: &KeyShare,
    wallet: &PeerWallet,
) -> Result<RefreshInvitation, PeerError> {
    let Request::Refresh {
        wallet: name,
        wallet_id,
        epoch,
        leader,
        parties,
        ..
    } = request
    else {
        return Err(PeerError::Protocol("not a refresh request".into()));
    };
    let bad = |why: &str| Err(PeerError::Protocol(why.to_string()));
    if share.wallet_id().as_bytes() != wallet_id {
        return bad("the wallet id differs from ours");
    }
    if parties.len() != wallet.parties.len()
        || parties
            .iter()
            .zip(&wallet.parties)
            .any(|(a, b)| a.identity != b.identity)
    {
        return bad("the devices named differ from this wallet's devices");
    }
    if parties.get(usize::from(*leader)).map(|p| p.identity) != Some(from.identity) {
        return bad("the requesting device is not the wallet's party it claims to be");
    }
    let me = share.party().get();
    if me == *leader || usize::from(wallet.me) != usize::from(me) {
        return bad("this device's party is not the one the wallet lists");
    }
    if *epoch != share.epoch() {
        return Err(PeerError::EpochMismatch {
            current: share.epoch(),
            pending: None,
            other: *epoch,
        });
    }
    for (i, p) in parties.iter().enumerate() {
        if i != usize::from(*leader) && i != usize::from(me) && p.address.is_none() {
            return bad("an invited device has no address");
        }
    }
    Ok(RefreshInvitation {
        wallet: name.clone(),
        wallet_id: share.wallet_id(),
        epoch: *epoch,
        leader: *leader,
        parties: parties.clone(),
        me,
        request: request.clone(),
    })
}

/// A step of the two-phase finish where the caller stores something (an error stops the
/// refresh there, as a crash would).
pub enum Finish {
    /// Store the new share as pending (the old one stays in use).
    StorePending(Box<KeyShare>),
    /// Everyone committed (leader) / this device committed (participant): nothing to store;
    /// the point where a crash is most interesting.
    Committed,
    /// Switch to the pending share of `epoch` and delete the old one.
    Switch(u64),
}

/// The caller's storage for [`Finish`] steps.
pub type FinishHook<'a> = dyn FnMut(Finish) -> Result<(), PeerError> + Send + 'a;

/// Leads a refresh of `share` (this device's, of wallet `name` with the devices `wallet`
/// lists) with `links` to every other device of the wallet. Returns the new epoch once this
/// device switched.
///
/// # Errors
/// A missing or unknown device, a refusal, protocol and channel errors (naming the party), or
/// the error `finish` returned.
pub async fn lead_refresh(
    share: &KeyShare,
    name: &str,
    wallet: &PeerWallet,
    links: Vec<Link>,
    on_round: &mut (dyn FnMut(u8, u8) + Send),
    finish: &mut FinishHook<'_>,
) -> Result<u64, PeerError> {
    let me = share.party().get();
    let mut parties = wallet.parties.clone();
    let mut mesh = Mesh::new(BTreeMap::new());
    for link in links {
        let Some(party) = parties
            .iter()
            .position(|p| p.identity == link.peer.identity)
            .filter(|&p| p != usize::from(me))
        else {
            return Err(PeerError::NotASigner {
                device: link.peer.name,
                wallet: name.to_string(),
            });
        };
        parties[party].address.clone_from(&link.address);
        let index = PartyIndex::new(u8::try_from(party).unwrap_or(u8::MAX));
        mesh.links.insert(index, (link.peer.name, link.channel));
    }
    let missing: Vec<&str> = parties
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            *i != usize::from(me)
                && !mesh
                    .links
                    .contains_key(&PartyIndex::new(u8::try_from(*i).unwrap_or(u8::MAX)))
        })
        .map(|(_, p)| p.name.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(PeerError::NotFound(format!(
            "a refresh takes every device of wallet {name:?}: also reach {}",
            missing.join(", ")
        )));
    }
    parties[usize::from(me)].address = None;
    let ours = tessera_core::protocols::fresh_nonce();
    let request = Request::Refresh {
        wallet: name.to_string(),
        wallet_id: *share.wallet_id().as_bytes(),
        epoch: share.epoch(),
        leader: me,
        parties,
        nonce: ours,
    };
    let invitation = invitation_hash(&request);
    let held = Held {
        current: share.epoch(),
        pending: None,
    };
    let nonces = gather(&mut mesh, &request, ours, Some((name, held))).await?;
    let session = RefreshSession::new(share, &session_nonce(&invitation, &nonces))?;
    let session_id = tessera_core::Session::session_id(&session);
    let fresh = mesh.run(session, on_round).await?;
    let epoch = fresh.epoch();
    let participants: Vec<PartyIndex> = mesh.links.keys().copied().collect();
    finish(Finish::StorePending(Box::new(fresh)))?;
    let all = CoordinatorPending::stored(epoch)
        .collect_commits(&mut mesh, &participants, None)
        .await
        .map_err(|e| mesh.drive_error(session_id, e))?;
    finish(Finish::Committed)?;
    finish(Finish::Switch(epoch))?;
    // Switched, durably: a participant that does not hear it switches when it next settles
    // with this device (it holds the new share as pending), so the refresh is done here.
    let _ = all.announce_switch(&mut mesh).await;
    mesh.close().await;
    Ok(epoch)
}

/// Takes part in an approved refresh as party `invitation.me`; returns the new epoch once this
/// device switched.
///
/// # Errors
/// Protocol and channel errors (naming the party), or the error `finish` returned.
#[allow(clippy::too_many_arguments)]
pub async fn join_refresh(
    invitation: &RefreshInvitation,
    leader: Link,
    share: &KeyShare,
    me: &LocalDevice,
    known: &mut KnownPeers,
    confirm: &mut Confirm<'_>,
    joins: &Joins,
    on_round: &mut (dyn FnMut(u8, u8) + Send),
    finish: &mut FinishHook<'_>,
) -> Result<u64, PeerError> {
    let hash = invitation_hash(&invitation.request);
    let coordinator = PartyIndex::new(invitation.leader);
    let mut mesh = Mesh::new(BTreeMap::from([(
        coordinator,
        (leader.peer.name, leader.channel),
    )]));
    let members = invitation.members();
    let position = members
        .iter()
        .position(|&p| p == invitation.me)
        .unwrap_or(usize::MAX);
    let waiting = joins.expect(hash);
    let accepted = accept(
        &mut mesh,
        u8::try_from(position).unwrap_or(u8::MAX),
        members.len(),
    )
    .await;
    let nonces = match accepted {
        Ok(n) => n,
        Err(e) => {
            joins.forget(&hash);
            return Err(e);
        }
    };
    interconnect(
        &mut mesh,
        hash,
        waiting,
        invitation.me,
        &members,
        &invitation.parties,
        me,
        known,
        confirm,
        joins,
    )
    .await?;
    let session = RefreshSession::new(share, &session_nonce(&hash, &nonces))?;
    let session_id = tessera_core::Session::session_id(&session);
    let fresh = mesh.run(session, on_round).await?;
    let epoch = fresh.epoch();
    let announced = driver::await_pending(&mut mesh, coordinator, epoch, None)
        .await
        .map_err(|e| mesh.drive_error(session_id, e))?;
    finish(Finish::StorePending(Box::new(fresh)))?;
    let committed = announced
        .commit(&mut mesh)
        .await
        .map_err(|e| mesh.drive_error(session_id, e))?;
    finish(Finish::Committed)?;
    committed
        .await_switch(&mut mesh, None)
        .await
        .map_err(|e| mesh.drive_error(session_id, e))?;
    finish(Finish::Switch(epoch))?;
    mesh.close().await;
    Ok(epoch)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const fn held(current: u64, pending: Option<u64>) -> Held {
        Held { current, pending }
    }

    #[test]
    fn a_device_switches_only_when_someone_switched_or_every_device_holds_the_new_share() {
        // Someone switched (the leader does so only once everyone committed).
        assert_eq!(
            settle(held(0, Some(1)), &[held(1, None)], false).unwrap(),
            Settlement::Switch
        );
        // Every device of the wallet holds it pending.
        assert_eq!(
            settle(held(0, Some(1)), &[held(0, Some(1))], true).unwrap(),
            Settlement::Switch
        );
        // Some devices of a larger wallet hold it, the others are unknown: keep both.
        assert_eq!(
            settle(held(0, Some(1)), &[held(0, Some(1))], false).unwrap(),
            Settlement::Unchanged
        );
    }

    #[test]
    fn a_pending_share_another_device_never_stored_is_dropped() {
        assert_eq!(
            settle(held(0, Some(1)), &[held(0, None)], true).unwrap(),
            Settlement::DropPending
        );
        assert_eq!(
            settle(held(0, Some(1)), &[held(0, Some(1)), held(0, None)], false).unwrap(),
            Settlement::DropPending
        );
    }

    #[test]
    fn nothing_pending_changes_nothing_and_an_epoch_we_lack_is_an_error() {
        assert_eq!(
            settle(held(3, None), &[held(3, None)], true).unwrap(),
            Settlement::Unchanged
        );
        // Behind the other device with no pending share of its epoch: no repair applies.
        assert!(matches!(
            settle(held(0, None), &[held(1, None)], true),
            Err(PeerError::EpochMismatch { other: 1, .. })
        ));
        assert!(settle(held(0, Some(1)), &[held(2, None)], true).is_err());
    }
}
