//! Keygen and signing between devices over authenticated channels.
//!
//! The device that starts (the *leader*) sends a request to every other device; each shows it
//! to its user, who approves or refuses, and answers with its contribution to the session
//! nonce. The leader then sends everyone all contributions (`Start`), so the session id is
//! fresh for every party: `SHA-256("tessera/peer-session/v1" || invitation hash || nonces)`.
//! With three devices, the invited devices also connect to each other (the lower index
//! connects to the higher, at the address the leader used, and authenticates it like any
//! peer), so that every pair of parties has its own authenticated channel: nobody relays
//! another party's protocol messages. The sans-IO sessions of `tessera-core` validate every
//! envelope; a party that fails or disconnects is named. Results are returned only after the
//! protocol ended for everyone (`Done` from each peer), and the caller stores them then.

use std::collections::BTreeMap;

use tessera_core::ecdsa::eip191_digest;
use tessera_core::{
    DerivationPath, KeyShare, KeygenSession, PartyIndex, SignRequest, SignSession, Signature,
    Threshold, WalletId,
};

use super::PeerError;
use super::known::{KnownPeers, PeerWallet};
pub use super::mesh::{Confirm, JOIN_TIMEOUT, Joins, Link, connect, invitation_hash, refuse};
use super::mesh::{Mesh, accept, gather, interconnect, session_nonce, sorted};
use super::pairing::{AuthenticatedPeer, LocalDevice};
use super::refresh::Held;
use super::wire::{Participant, Request, check_name};

/// Leads a keygen: this device is party 0, `links[i]` party `i + 1`. Returns the share and the
/// wallet's device list, once every device finished.
///
/// # Errors
/// A refusal (naming the device), protocol and channel errors (naming the party).
pub async fn lead_keygen(
    me: &LocalDevice,
    links: Vec<Link>,
    wallet: &str,
    threshold: u8,
    on_round: &mut (dyn FnMut(u8, u8) + Send),
) -> Result<(KeyShare, PeerWallet), PeerError> {
    check_name(wallet)?;
    let n = u8::try_from(links.len() + 1)
        .map_err(|_| PeerError::Protocol("too many devices".into()))?;
    let threshold_tn = Threshold::new(threshold, n)?;
    let mut parties = vec![Participant {
        name: me.name.clone(),
        identity: me.identity.public_key(),
        address: None,
    }];
    let mut mesh = Mesh::new(BTreeMap::new());
    for (i, link) in links.into_iter().enumerate() {
        parties.push(Participant {
            name: link.peer.name.clone(),
            identity: link.peer.identity,
            address: link.address.clone(),
        });
        mesh.links.insert(
            PartyIndex::new(u8::try_from(i + 1).unwrap_or(u8::MAX)),
            (link.peer.name, link.channel),
        );
    }
    let wallet_id = WalletId::random();
    let ours = tessera_core::protocols::fresh_nonce();
    let request = Request::Keygen {
        wallet: wallet.to_string(),
        wallet_id: *wallet_id.as_bytes(),
        threshold,
        parties: parties.clone(),
        nonce: ours,
    };
    let invitation = invitation_hash(&request);
    let nonces = gather(&mut mesh, &request, ours, None).await?;
    let nonce = session_nonce(&invitation, &nonces);
    let session = KeygenSession::new(wallet_id, threshold_tn, PartyIndex::new(0), &nonce)?;
    let share = mesh.run(session, on_round).await?;
    mesh.finish().await?;
    mesh.close().await;
    Ok((
        share,
        PeerWallet {
            wallet_id: wallet_id.to_string(),
            me: 0,
            parties,
        },
    ))
}

/// A keygen invitation, checked, for the user to approve.
#[derive(Clone, Debug)]
pub struct KeygenInvitation {
    /// The wallet's name.
    pub wallet: String,
    /// Its id.
    pub wallet_id: WalletId,
    /// t-of-n.
    pub threshold: Threshold,
    /// Every device in party order.
    pub parties: Vec<Participant>,
    /// Our party index.
    pub me: u8,
    request: Request,
}

/// Checks a keygen request from `from`: it must be party 0, we must be listed once.
///
/// # Errors
/// [`PeerError::Protocol`] naming what is wrong.
pub fn check_keygen(
    request: &Request,
    from: &AuthenticatedPeer,
    me: &LocalDevice,
) -> Result<KeygenInvitation, PeerError> {
    let Request::Keygen {
        wallet,
        wallet_id,
        threshold,
        parties,
        ..
    } = request
    else {
        return Err(PeerError::Protocol("not a keygen request".into()));
    };
    let bad = |why: &str| Err(PeerError::Protocol(why.to_string()));
    let n = u8::try_from(parties.len()).unwrap_or(u8::MAX);
    let threshold = Threshold::new(*threshold, n)?;
    if parties.first().map(|p| p.identity) != Some(from.identity) {
        return bad("the requesting device is not party 0 of its own request");
    }
    let mine = me.identity.public_key();
    let listed: Vec<_> = parties
        .iter()
        .enumerate()
        .filter(|(_, p)| p.identity == mine)
        .collect();
    let [(index, _)] = listed.as_slice() else {
        return bad("this device is not listed exactly once");
    };
    let mut keys: Vec<_> = parties.iter().map(|p| p.identity).collect();
    keys.sort_unstable();
    keys.dedup();
    if keys.len() != parties.len() {
        return bad("a device is listed twice");
    }
    for (i, p) in parties.iter().enumerate().skip(1) {
        if i != *index && p.address.is_none() {
            return bad("an invited device has no address");
        }
    }
    Ok(KeygenInvitation {
        wallet: wallet.clone(),
        wallet_id: WalletId::from_bytes(*wallet_id),
        threshold,
        parties: parties.clone(),
        me: u8::try_from(*index).unwrap_or(u8::MAX),
        request: request.clone(),
    })
}

/// Takes part in an approved keygen as party `invitation.me`.
///
/// # Errors
/// Protocol and channel errors (naming the party).
#[allow(clippy::too_many_arguments)]
pub async fn join_keygen(
    invitation: &KeygenInvitation,
    leader: Link,
    me: &LocalDevice,
    known: &mut KnownPeers,
    confirm: &mut Confirm<'_>,
    joins: &Joins,
    on_round: &mut (dyn FnMut(u8, u8) + Send),
) -> Result<(KeyShare, PeerWallet), PeerError> {
    let hash = invitation_hash(&invitation.request);
    let mut mesh = Mesh::new(BTreeMap::from([(
        PartyIndex::new(0),
        (leader.peer.name, leader.channel),
    )]));
    // Expect the other invited devices before accepting: once the leader has everyone's
    // answer, they may connect to us at any moment.
    let waiting = joins.expect(hash);
    let accepted = accept(&mut mesh, invitation.me, invitation.parties.len()).await;
    let nonces = match accepted {
        Ok(n) => n,
        Err(e) => {
            joins.forget(&hash);
            return Err(e);
        }
    };
    let members: Vec<u8> = (0..invitation.threshold.n).collect();
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
    let nonce = session_nonce(&hash, &nonces);
    let session = KeygenSession::new(
        invitation.wallet_id,
        invitation.threshold,
        PartyIndex::new(invitation.me),
        &nonce,
    )?;
    let share = mesh.run(session, on_round).await?;
    mesh.finish().await?;
    mesh.close().await;
    Ok((
        share,
        PeerWallet {
            wallet_id: invitation.wallet_id.to_string(),
            me: invitation.me,
            parties: invitation.parties.clone(),
        },
    ))
}

/// A sign invitation, checked, for the user to approve.
#[derive(Clone, Debug)]
pub struct SignInvitation {
    /// The wallet's name.
    pub wallet: String,
    /// The text to sign.
    pub message: String,
    /// Its EIP-191 digest, computed here.
    pub digest: [u8; 32],
    /// The derivation path.
    pub path: DerivationPath,
    /// Signing parties.
    pub signers: Vec<PartyIndex>,
    request: Request,
}

/// Checks a sign request from `from` against our share of the wallet and its device list.
///
/// # Errors
/// [`PeerError::Protocol`] naming what is wrong.
pub fn check_sign(
    request: &Request,
    from: &AuthenticatedPeer,
    share: &KeyShare,
    wallet: &PeerWallet,
) -> Result<SignInvitation, PeerError> {
    let Request::Sign {
        wallet: name,
        wallet_id,
        message,
        path,
        signers,
        ..
    } = request
    else {
        return Err(PeerError::Protocol("not a sign request".into()));
    };
    let bad = |why: &str| Err(PeerError::Protocol(why.to_string()));
    if share.wallet_id().as_bytes() != wallet_id {
        return bad("the wallet id differs from ours");
    }
    if signers.len() != 2 || signers.len() != usize::from(share.threshold().t) {
        return bad("device-to-device signing takes exactly two signers of a 2-of-n wallet");
    }
    let requester = signers[0];
    let Some(listed) = wallet.parties.get(usize::from(requester)) else {
        return bad("the requester's party is not in the wallet");
    };
    if listed.identity != from.identity {
        return bad("the requesting device is not the wallet's party it claims to be");
    }
    if !signers.contains(&share.party().get()) {
        return bad("this device is not among the signers");
    }
    let path: DerivationPath = path
        .parse()
        .map_err(|e: tessera_core::Error| PeerError::Protocol(e.to_string()))?;
    Ok(SignInvitation {
        wallet: name.clone(),
        message: message.clone(),
        digest: eip191_digest(message.as_bytes()),
        path,
        signers: signers.iter().map(|&p| PartyIndex::new(p)).collect(),
        request: request.clone(),
    })
}

/// Leads a signature of `message` (EIP-191) with `share` and the device at `link`, which holds
/// party `peer_party` of the wallet. The signature is verified before it is returned.
///
/// # Errors
/// A refusal, protocol and channel errors; a signature that does not verify.
pub async fn lead_sign(
    share: &KeyShare,
    wallet: &str,
    link: Link,
    peer_party: u8,
    message: &str,
    path: &DerivationPath,
    on_round: &mut (dyn FnMut(u8, u8) + Send),
) -> Result<Signature, PeerError> {
    lead_sign_holding(
        share, None, wallet, link, peer_party, message, path, on_round,
    )
    .await
}

/// [`lead_sign`] by a device that may also hold a `pending` share of the wallet (of an
/// interrupted refresh), which it tells a device that asks (the settling of
/// [`super::refresh`]).
///
/// # Errors
/// As [`lead_sign`].
#[allow(clippy::too_many_arguments)]
pub async fn lead_sign_holding(
    share: &KeyShare,
    pending: Option<u64>,
    wallet: &str,
    link: Link,
    peer_party: u8,
    message: &str,
    path: &DerivationPath,
    on_round: &mut (dyn FnMut(u8, u8) + Send),
) -> Result<Signature, PeerError> {
    let held = Held {
        current: share.epoch(),
        pending,
    };
    let ours = tessera_core::protocols::fresh_nonce();
    let me = share.party();
    let peer = PartyIndex::new(peer_party);
    let request = Request::Sign {
        wallet: wallet.to_string(),
        wallet_id: *share.wallet_id().as_bytes(),
        message: message.to_string(),
        path: path.to_string(),
        signers: vec![me.get(), peer_party],
        nonce: ours,
    };
    let invitation = invitation_hash(&request);
    let mut mesh = Mesh::new(BTreeMap::from([(peer, (link.peer.name, link.channel))]));
    let nonces = gather(&mut mesh, &request, ours, Some((wallet, held))).await?;
    let digest = eip191_digest(message.as_bytes());
    let sign_request = SignRequest {
        nonce: session_nonce(&invitation, &nonces),
        signers: sorted(&[me, peer]),
        digest,
        path: path.clone(),
    };
    let signature = mesh
        .run(SignSession::new(share, &sign_request)?, on_round)
        .await?;
    mesh.finish().await?;
    mesh.close().await;
    share.public_key_at(path)?.verify(&digest, &signature)?;
    Ok(signature)
}

/// Takes part in an approved signature; returns it (verified).
///
/// # Errors
/// Protocol and channel errors; a signature that does not verify.
pub async fn join_sign(
    invitation: &SignInvitation,
    leader: Link,
    share: &KeyShare,
    on_round: &mut (dyn FnMut(u8, u8) + Send),
) -> Result<Signature, PeerError> {
    let hash = invitation_hash(&invitation.request);
    let leader_party = invitation.signers[0];
    let mut mesh = Mesh::new(BTreeMap::from([(
        leader_party,
        (leader.peer.name, leader.channel),
    )]));
    let position = invitation
        .signers
        .iter()
        .position(|&p| p == share.party())
        .unwrap_or(usize::MAX);
    let nonces = accept(
        &mut mesh,
        u8::try_from(position).unwrap_or(u8::MAX),
        invitation.signers.len(),
    )
    .await?;
    let sign_request = SignRequest {
        nonce: session_nonce(&hash, &nonces),
        signers: sorted(&invitation.signers),
        digest: invitation.digest,
        path: invitation.path.clone(),
    };
    let signature = mesh
        .run(SignSession::new(share, &sign_request)?, on_round)
        .await?;
    mesh.finish().await?;
    mesh.close().await;
    share
        .public_key_at(&invitation.path)?
        .verify(&invitation.digest, &signature)?;
    Ok(signature)
}
