//! The channels of one device-to-device run and how they come to be: connecting to and
//! authenticating a device ([`connect`]), the invited devices connecting to each other
//! ([`Joins`]), the request/accept/start handshake that fixes the session nonce, and the
//! [`Mesh`] of channels by party, which is the one driver's [`DriverLink`] (envelopes and the
//! two-phase finish's control messages travel on the channel of each party).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use sha2::{Digest, Sha256};
use tessera_core::PartyIndex;
use tessera_core::Session;
use tessera_core::driver::{self, Control, DriveError, Link as DriverLink};
use tokio::sync::mpsc;

use super::PeerError;
use super::channel::{Channel, Frames};
use super::known::KnownPeers;
use super::pairing::{AuthenticatedPeer, CodePrompt, LocalDevice, authenticate, recv, send};
use super::refresh::Held;
use super::wire::{Message, Participant, Request};

/// How long an invited device waits for the others to connect to it.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

/// A user's answer to a pairing code.
pub type Confirm<'a> = dyn FnMut(&CodePrompt) -> bool + Send + 'a;

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
    confirm: &mut Confirm<'_>,
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
    pub(super) fn expect(&self, session: [u8; 32]) -> mpsc::Receiver<Joined> {
        let (tx, rx) = mpsc::channel(16);
        if let Ok(mut map) = self.0.lock() {
            map.insert(session, tx);
        }
        rx
    }

    pub(super) fn forget(&self, session: &[u8; 32]) {
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

pub(super) fn session_nonce(invitation: &[u8; 32], nonces: &[[u8; 32]]) -> [u8; 32] {
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
pub(super) struct Mesh {
    pub(super) links: BTreeMap<PartyIndex, (String, Channel)>,
    /// Parties whose `Done` arrived while we were still running (they finished first).
    done: BTreeSet<PartyIndex>,
    /// Control messages of the two-phase finish that arrived while we were still running (the
    /// leader finished first and announced its pending share).
    early: BTreeMap<PartyIndex, Control>,
    /// The party that announced a pending share: our commit goes to it.
    coordinator: Option<PartyIndex>,
}

impl Mesh {
    pub(super) fn new(links: BTreeMap<PartyIndex, (String, Channel)>) -> Self {
        Mesh {
            links,
            done: BTreeSet::new(),
            early: BTreeMap::new(),
            coordinator: None,
        }
    }
}

impl Mesh {
    pub(super) fn name(&self, p: PartyIndex) -> String {
        self.links
            .get(&p)
            .map_or_else(|| format!("party {}", p.get()), |(n, _)| n.clone())
    }

    pub(super) fn failed(&self, p: PartyIndex, e: &PeerError) -> PeerError {
        PeerError::Party {
            party: p.get(),
            name: self.name(p),
            reason: e.to_string(),
        }
    }

    pub(super) async fn send_to(&mut self, p: PartyIndex, m: &Message) -> Result<(), PeerError> {
        let result = match self.links.get_mut(&p) {
            Some((_, c)) => send(c, m).await,
            None => Err(PeerError::Protocol(format!(
                "no channel to party {}",
                p.get()
            ))),
        };
        result.map_err(|e| self.failed(p, &e))
    }

    pub(super) async fn send_all(&mut self, m: &Message) -> Result<(), PeerError> {
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

    pub(super) async fn recv_from(&mut self, p: PartyIndex) -> Result<Message, PeerError> {
        let result = match self.links.get_mut(&p) {
            Some((_, c)) => recv(c).await,
            None => Err(PeerError::Protocol("no channel".into())),
        };
        result.map_err(|e| self.failed(p, &e))
    }

    /// Runs `session` to its end over the mesh (the one driver).
    pub(super) async fn run<S: Session>(
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
        .map_err(|e| self.drive_error(session_id, e))
    }

    /// A driver error as the peer workflows report it (naming the party where there is one).
    pub(super) fn drive_error(
        &self,
        session_id: tessera_core::SessionId,
        e: DriveError<PeerError>,
    ) -> PeerError {
        match e {
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
        }
    }

    /// Everyone says `Done`: the run ended for all, results can be kept.
    pub(super) async fn finish(&mut self) -> Result<(), PeerError> {
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

    pub(super) async fn close(self) {
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
                // So can the leader of a refresh, which then announces its pending share.
                Ok(Message::RefreshPending { epoch }) if !self.early.contains_key(&from) => {
                    self.early.insert(from, Control::Pending(epoch));
                }
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

    async fn send_control(&mut self, control: Control) -> Result<(), PeerError> {
        match control {
            Control::Pending(epoch) => self.send_all(&Message::RefreshPending { epoch }).await,
            Control::Switched => self.send_all(&Message::RefreshSwitched).await,
            Control::Commit(epoch) => match self.coordinator {
                Some(c) => self.send_to(c, &Message::RefreshCommit { epoch }).await,
                None => Err(PeerError::Protocol(
                    "a commit before any pending share was announced".into(),
                )),
            },
        }
    }

    async fn recv_control(
        &mut self,
        from: PartyIndex,
        _idle: Option<Duration>,
    ) -> Result<Option<Control>, PeerError> {
        // The channels' own timeouts bound the wait.
        let control = match self.early.remove(&from) {
            Some(c) => c,
            None => match self.recv_from(from).await? {
                Message::RefreshPending { epoch } => Control::Pending(epoch),
                Message::RefreshCommit { epoch } => Control::Commit(epoch),
                Message::RefreshSwitched => Control::Switched,
                Message::Refuse { reason } => {
                    return Err(self.failed(from, &PeerError::Refused(reason)));
                }
                _ => {
                    return Err(self.failed(
                        from,
                        &PeerError::Protocol("expected a step of the refresh's finish".into()),
                    ));
                }
            },
        };
        if matches!(control, Control::Pending(_)) {
            self.coordinator = Some(from);
        }
        Ok(Some(control))
    }
}

/// Sends the request, collects every acceptance, sends `Start`; returns the nonces in party
/// order (ours first).
///
/// A device that holds a pending share of the wallet asks what we hold first (`Held`, the
/// settling after an interrupted refresh): `held` is our answer, the wallet's name and what we
/// hold (`None` for a new wallet).
pub(super) async fn gather(
    mesh: &mut Mesh,
    request: &Request,
    ours: [u8; 32],
    held: Option<(&str, Held)>,
) -> Result<Vec<[u8; 32]>, PeerError> {
    mesh.send_all(&Message::Request(request.clone())).await?;
    let mut nonces = vec![ours];
    let parties: Vec<_> = mesh.links.keys().copied().collect();
    for p in parties {
        loop {
            match (mesh.recv_from(p).await?, held) {
                (Message::Accept { nonce }, _) => {
                    nonces.push(nonce);
                    break;
                }
                (Message::Held { wallet, .. }, Some((name, mine))) if wallet == name => {
                    let answer = Message::Held {
                        wallet,
                        current: mine.current,
                        pending: mine.pending,
                    };
                    mesh.send_to(p, &answer).await?;
                }
                _ => {
                    return Err(mesh.failed(p, &PeerError::Protocol("expected an answer".into())));
                }
            }
        }
    }
    mesh.send_all(&Message::Start {
        nonces: nonces.clone(),
    })
    .await?;
    Ok(nonces)
}

/// Answers `Accept` with our nonce to the leader (party key 0 of `mesh`), then reads `Start`.
pub(super) async fn accept(
    mesh: &mut Mesh,
    me: u8,
    parties: usize,
) -> Result<Vec<[u8; 32]>, PeerError> {
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
pub(super) async fn interconnect(
    mesh: &mut Mesh,
    session: [u8; 32],
    mut waiting: mpsc::Receiver<Joined>,
    me_index: u8,
    members: &[u8],
    parties: &[Participant],
    me: &LocalDevice,
    known: &mut KnownPeers,
    confirm: &mut Confirm<'_>,
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

pub(super) fn sorted(parties: &[PartyIndex]) -> Vec<PartyIndex> {
    let mut v = parties.to_vec();
    v.sort_unstable();
    v
}
