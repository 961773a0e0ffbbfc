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

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use sha2::{Digest, Sha256};
use tessera_core::driver::{self, Control, DriveError, Link as DriverLink};
use tessera_core::ecdsa::eip191_digest;
use tessera_core::{
    DerivationPath, KeyShare, KeygenSession, PartyIndex, Session, SignRequest, SignSession,
    Signature, Threshold, WalletId,
};
use tokio::sync::mpsc;

use super::PeerError;
use super::channel::{Channel, Frames};
use super::known::{KnownPeers, PeerWallet};
use super::pairing::{AuthenticatedPeer, CodePrompt, LocalDevice, authenticate, recv, send};
use super::wire::{Message, Participant, Request, check_name};

/// How long an invited device waits for the others to connect to it.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

/// A user's answer to a pairing code.
pub type Confirm = dyn FnMut(&CodePrompt) -> bool + Send;

/// An authenticated channel to another device.
pub struct Link {
    /// Who is at the other end.
    pub peer: AuthenticatedPeer,
    /// The channel.
    pub channel: Channel,
    /// Where we reached it (for the others to reach it too), if we connected.
    pub address: Option<String>,
}

/// Connects over TCP to the first of `addresses` that answers and authenticates the device
/// there.
///
/// # Errors
/// Connection (naming every address tried), handshake and pairing errors.
pub async fn connect(
    addresses: &[String],
    me: &LocalDevice,
    known: &mut KnownPeers,
    confirm: &mut Confirm,
) -> Result<Link, PeerError> {
    let mut failures = Vec::new();
    for address in addresses {
        let stream = match tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect(address.as_str()),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                failures.push(format!("{address}: {e}"));
                continue;
            }
            Err(_) => {
                failures.push(format!("{address}: timed out"));
                continue;
            }
        };
        let mut channel = Channel::initiate(Frames::tcp(stream)).await?;
        let peer = authenticate(&mut channel, me, known, confirm).await?;
        return Ok(Link {
            peer,
            channel,
            address: Some(address.clone()),
        });
    }
    Err(PeerError::Io(format!(
        "cannot connect: {}",
        if failures.is_empty() {
            "no address".to_string()
        } else {
            failures.join("; ")
        }
    )))
}

/// Channels between invited devices, handed from the listener's accept loop to the session
/// that waits for them (by invitation hash).
#[derive(Clone, Default)]
pub struct Joins(Arc<Mutex<HashMap<[u8; 32], mpsc::Sender<Joined>>>>);

/// A device that joined a session: its party, who it is, its channel.
type Joined = (u8, AuthenticatedPeer, Channel);

impl Joins {
    fn expect(&self, session: [u8; 32]) -> mpsc::Receiver<Joined> {
        let (tx, rx) = mpsc::channel(16);
        if let Ok(mut map) = self.0.lock() {
            map.insert(session, tx);
        }
        rx
    }

    fn forget(&self, session: &[u8; 32]) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(session);
        }
    }

    /// Hands a joining device's channel to the session it names.
    ///
    /// # Errors
    /// [`PeerError::NotFound`] when no session here waits for it (the channel is refused).
    pub async fn deliver(
        &self,
        session: [u8; 32],
        from: u8,
        peer: AuthenticatedPeer,
        mut channel: Channel,
    ) -> Result<(), PeerError> {
        let tx = self.0.lock().ok().and_then(|m| m.get(&session).cloned());
        match tx {
            Some(tx) => tx
                .send((from, peer, channel))
                .await
                .map_err(|_| PeerError::NotFound("the session ended".into())),
            None => {
                let _ = send(
                    &mut channel,
                    &Message::Refuse {
                        reason: "no session here waits for you".into(),
                    },
                )
                .await;
                Err(PeerError::NotFound(
                    "a device asked to join an unknown session".into(),
                ))
            }
        }
    }
}

struct ForgetOnDrop<'a>(&'a Joins, [u8; 32]);

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.forget(&self.1);
    }
}

/// The hash that names an invitation (and binds the session to everything it says).
#[must_use]
pub fn invitation_hash(request: &Request) -> [u8; 32] {
    Sha256::new()
        .chain_update(b"tessera/peer-invite/v1")
        .chain_update(postcard::to_allocvec(request).unwrap_or_default())
        .finalize()
        .into()
}

fn session_nonce(invitation: &[u8; 32], nonces: &[[u8; 32]]) -> [u8; 32] {
    let mut h = Sha256::new()
        .chain_update(b"tessera/peer-session/v1")
        .chain_update(invitation);
    for n in nonces {
        h.update(n);
    }
    h.finalize().into()
}

/// Refuses a request with a reason.
pub async fn refuse(channel: &mut Channel, reason: &str) {
    let _ = send(
        channel,
        &Message::Refuse {
            reason: reason.to_string(),
        },
    )
    .await;
}

/// The channels of one run, by party.
struct Mesh {
    links: BTreeMap<PartyIndex, (String, Channel)>,
    /// Parties whose `Done` arrived while we were still running (they finished first).
    done: std::collections::BTreeSet<PartyIndex>,
}

impl Mesh {
    fn new(links: BTreeMap<PartyIndex, (String, Channel)>) -> Self {
        Mesh {
            links,
            done: std::collections::BTreeSet::new(),
        }
    }
}

impl Mesh {
    fn name(&self, p: PartyIndex) -> String {
        self.links
            .get(&p)
            .map_or_else(|| format!("party {}", p.get()), |(n, _)| n.clone())
    }

    fn failed(&self, p: PartyIndex, e: &PeerError) -> PeerError {
        PeerError::Party {
            party: p.get(),
            name: self.name(p),
            reason: e.to_string(),
        }
    }

    async fn send_to(&mut self, p: PartyIndex, m: &Message) -> Result<(), PeerError> {
        let result = match self.links.get_mut(&p) {
            Some((_, c)) => send(c, m).await,
            None => Err(PeerError::Protocol(format!(
                "no channel to party {}",
                p.get()
            ))),
        };
        result.map_err(|e| self.failed(p, &e))
    }

    async fn send_all(&mut self, m: &Message) -> Result<(), PeerError> {
        let parties: Vec<_> = self.links.keys().copied().collect();
        for p in parties {
            self.send_to(p, m).await?;
        }
        Ok(())
    }

    /// The next message from any party.
    async fn recv_any(&mut self) -> (PartyIndex, Result<Message, PeerError>) {
        let futures: Vec<_> = self
            .links
            .iter_mut()
            .map(|(p, (_, c))| {
                let p = *p;
                async move { (p, recv(c).await) }.boxed()
            })
            .collect();
        futures_util::future::select_all(futures).await.0
    }

    async fn recv_from(&mut self, p: PartyIndex) -> Result<Message, PeerError> {
        let result = match self.links.get_mut(&p) {
            Some((_, c)) => recv(c).await,
            None => Err(PeerError::Protocol("no channel".into())),
        };
        result.map_err(|e| self.failed(p, &e))
    }

    /// Runs `session` to its end over the mesh (the one driver).
    async fn run<S: Session>(
        &mut self,
        mut session: S,
        on_round: &mut (dyn FnMut(u8, u8) + Send),
    ) -> Result<S::Output, PeerError> {
        let session_id = session.session_id();
        driver::drive(&mut session, self, None, |r, total| {
            on_round(r, total);
            Ok(())
        })
        .await
        .map_err(|e| match e {
            DriveError::Link(e) | DriveError::Stopped(e) => e,
            DriveError::Blamed {
                party,
                round,
                reason,
            } => PeerError::Blamed {
                party: party.get(),
                name: self.name(party),
                session_id: session_id.to_string(),
                round,
                reason,
            },
            DriveError::Rejected { error, .. } => PeerError::Core(error),
            DriveError::Expired => PeerError::Protocol("no message for the idle timeout".into()),
            DriveError::Finish(m) => PeerError::Protocol(m),
        })
    }

    /// Everyone says `Done`: the run ended for all, results can be kept.
    async fn finish(&mut self) -> Result<(), PeerError> {
        self.send_all(&Message::Done).await?;
        let parties: Vec<_> = self
            .links
            .keys()
            .copied()
            .filter(|p| !self.done.contains(p))
            .collect();
        for p in parties {
            match self.recv_from(p).await? {
                Message::Done => {}
                _ => {
                    return Err(self.failed(p, &PeerError::Protocol("expected done".into())));
                }
            }
        }
        Ok(())
    }

    async fn close(self) {
        for (_, (_, c)) in self.links {
            c.close().await;
        }
    }
}

/// The mesh as a [`DriverLink`] of the one driver: envelopes travel as [`Message::Envelope`] on the
/// channel of their recipient; a `Done` from a party that finished first is kept for
/// [`Mesh::finish`].
impl DriverLink for Mesh {
    type Error = PeerError;

    async fn send(&mut self, envelope: &tessera_core::Envelope) -> Result<(), PeerError> {
        self.send_to(envelope.to, &Message::Envelope(envelope.to_bytes()))
            .await
    }

    async fn recv(
        &mut self,
        _idle: Option<Duration>,
    ) -> Result<Option<(PartyIndex, Vec<u8>)>, PeerError> {
        // The channels' own timeouts bound the wait.
        loop {
            let (from, message) = self.recv_any().await;
            match message {
                Ok(Message::Envelope(bytes)) if !self.done.contains(&from) => {
                    return Ok(Some((from, bytes)));
                }
                // A party with less left to receive can finish first; its Done is kept.
                Ok(Message::Done) if self.done.insert(from) => {}
                Ok(_) => {
                    return Err(self.failed(
                        from,
                        &PeerError::Protocol("a message other than a protocol envelope".into()),
                    ));
                }
                Err(e) => return Err(self.failed(from, &e)),
            }
        }
    }

    async fn send_control(&mut self, _control: Control) -> Result<(), PeerError> {
        Err(PeerError::Protocol(
            "device-to-device runs have no two-phase finish yet".into(),
        ))
    }

    async fn recv_control(
        &mut self,
        _from: PartyIndex,
        _idle: Option<Duration>,
    ) -> Result<Option<Control>, PeerError> {
        Err(PeerError::Protocol(
            "device-to-device runs have no two-phase finish yet".into(),
        ))
    }
}

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
    let nonces = gather(&mut mesh, &request, ours).await?;
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

/// Sends the request, collects every acceptance, sends `Start`; returns the nonces in party
/// order (ours first).
async fn gather(
    mesh: &mut Mesh,
    request: &Request,
    ours: [u8; 32],
) -> Result<Vec<[u8; 32]>, PeerError> {
    mesh.send_all(&Message::Request(request.clone())).await?;
    let mut nonces = vec![ours];
    let parties: Vec<_> = mesh.links.keys().copied().collect();
    for p in parties {
        match mesh.recv_from(p).await? {
            Message::Accept { nonce } => nonces.push(nonce),
            _ => {
                return Err(mesh.failed(p, &PeerError::Protocol("expected an answer".into())));
            }
        }
    }
    mesh.send_all(&Message::Start {
        nonces: nonces.clone(),
    })
    .await?;
    Ok(nonces)
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
    confirm: &mut Confirm,
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

/// Answers `Accept` with our nonce to the leader (party key 0 of `mesh`), then reads `Start`.
async fn accept(mesh: &mut Mesh, me: u8, parties: usize) -> Result<Vec<[u8; 32]>, PeerError> {
    let leader = *mesh
        .links
        .keys()
        .next()
        .ok_or_else(|| PeerError::Protocol("no leader".into()))?;
    let ours = tessera_core::protocols::fresh_nonce();
    mesh.send_to(leader, &Message::Accept { nonce: ours })
        .await?;
    let Message::Start { nonces } = mesh.recv_from(leader).await? else {
        return Err(mesh.failed(leader, &PeerError::Protocol("expected start".into())));
    };
    let position = usize::from(me).min(parties);
    if nonces.len() != parties || nonces.get(position) != Some(&ours) {
        return Err(mesh.failed(
            leader,
            &PeerError::Protocol("the session nonces leave out ours".into()),
        ));
    }
    Ok(nonces)
}

/// Connects the invited devices to each other: the lower party index connects to the higher.
#[allow(clippy::too_many_arguments)]
async fn interconnect(
    mesh: &mut Mesh,
    session: [u8; 32],
    mut waiting: mpsc::Receiver<Joined>,
    me_index: u8,
    members: &[u8],
    parties: &[Participant],
    me: &LocalDevice,
    known: &mut KnownPeers,
    confirm: &mut Confirm,
    joins: &Joins,
) -> Result<(), PeerError> {
    // However this ends, the session no longer waits for joins.
    let _forget = ForgetOnDrop(joins, session);
    let leader = members.first().copied().unwrap_or(0);
    let others: Vec<u8> = members
        .iter()
        .copied()
        .filter(|&p| p != leader && p != me_index)
        .collect();
    for &q in others.iter().filter(|&&q| q > me_index) {
        let target = &parties[usize::from(q)];
        let address = target.address.clone().unwrap_or_default();
        let mut link =
            connect(&[address], me, known, confirm)
                .await
                .map_err(|e| PeerError::Party {
                    party: q,
                    name: target.name.clone(),
                    reason: e.to_string(),
                })?;
        if link.peer.identity != target.identity {
            return Err(PeerError::Party {
                party: q,
                name: target.name.clone(),
                reason: "the device at its address has another identity key".into(),
            });
        }
        send(
            &mut link.channel,
            &Message::Request(Request::Join {
                session,
                from: me_index,
            }),
        )
        .await?;
        mesh.links
            .insert(PartyIndex::new(q), (target.name.clone(), link.channel));
    }
    let mut expected: Vec<u8> = others.into_iter().filter(|&q| q < me_index).collect();
    while !expected.is_empty() {
        let next = tokio::time::timeout(JOIN_TIMEOUT, waiting.recv()).await;
        let Ok(Some((from, peer, channel))) = next else {
            return Err(PeerError::Protocol(format!(
                "parties {expected:?} did not connect within {}s",
                JOIN_TIMEOUT.as_secs()
            )));
        };
        let Some(pos) = expected.iter().position(|&q| q == from) else {
            continue;
        };
        if parties[usize::from(from)].identity != peer.identity {
            continue;
        }
        expected.remove(pos);
        mesh.links
            .insert(PartyIndex::new(from), (peer.name, channel));
    }
    Ok(())
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
    let nonces = gather(&mut mesh, &request, ours).await?;
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

fn sorted(parties: &[PartyIndex]) -> Vec<PartyIndex> {
    let mut v = parties.to_vec();
    v.sort_unstable();
    v
}
