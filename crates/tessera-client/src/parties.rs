//! The device's party in sessions of structure wallets (issue 15, docs/quorum-wallets.md): the
//! server coordinates, each party reaches the others through its own socket
//! ([`crate::session_socket::SocketLink`], `tessera_server::session_pump` on the server's side),
//! and frames between two devices are sealed end to end between them.
//!
//! Built: key generation, asked for by one device ([`ServerClient::keygen_structure`]) and
//! joined by the others ([`ServerClient::joinable`], [`ServerClient::join_keygen`]); signing,
//! asked for by one device with the server and the devices it names
//! ([`ServerClient::sign_structure`]), the others joining ([`ServerClient::join_sign`]) after
//! decoding what is signed and computing its digest themselves.
//!
//! What the server says about a session is checked before anything runs: the structure parses,
//! its parties are the ones listed, this device's party is a device party and the identity key
//! the registry has for it is this device's own. Which identity key to trust for each other
//! device is the caller's decision (`trust`; the device SDK pins the first key it sees for a
//! device and refuses a changed one): the server can neither read nor alter what two devices
//! exchange only if it cannot choose the keys they trust.
//! A key generation's share is returned only once the server's party said it finished (it says
//! so after it stored its own share and the wallet's key), and the key the server then lists for
//! the wallet is the share's. A signature is returned only once it verifies under the wallet's
//! key at the path, against the digest this device computed.

use std::collections::BTreeMap;
use std::time::Duration;

use tessera_api as api;
use tessera_api::intent::SignKind;
use tessera_api::session_frame::{End, EndReason};
use tessera_core::driver;
use tessera_core::protocols::{fresh_nonce, joint_nonce};
use tessera_core::structure::WalletStructure;
use tessera_core::{
    DerivationPath, KeyShare, PartyIndex, Session, SignRequest, SignSession, Signature,
    StructureKeygenSession, WalletId,
};
use tessera_store::DeviceIdentity;

use crate::ServerClient;
use crate::error::{ClientError, Result, net};
use crate::session_socket::SocketLink;

/// How long a party waits for the others to come, and for each message of a run.
pub const PARTY_WAIT: Duration = Duration::from_secs(300);

/// How many times [`ServerClient::sign_structure`] asks again after a run failed: after the
/// server banned a party of it, or after a run that named nobody (the server isolates the
/// party at fault across the retries, `tessera_server::isolation`). Three covers the isolation
/// in a quorum of three devices and the server (at most `s + 1` runs for `s` devices), and a
/// ban of each co-signer of a smaller one.
pub const MAX_SIGN_RETRIES: usize = 3;

/// A session's parties, checked: the structure, this device's party, and each other device
/// party with the registry's identity key for it.
struct Checked {
    structure: WalletStructure,
    me: PartyIndex,
    server: PartyIndex,
    devices: Vec<(PartyIndex, api::SessionParty, [u8; 32])>,
}

fn bad(why: impl std::fmt::Display) -> ClientError {
    net(format!("the server described the session wrongly: {why}"))
}

/// Checks what the server says about a session's parties against itself and `identity`.
fn check(parties: &api::SessionParties, identity: &DeviceIdentity) -> Result<Checked> {
    let structure = WalletStructure::parse(&parties.structure).map_err(bad)?;
    if parties.parties.len() != structure.party_count() {
        return Err(bad(format!(
            "{} parties listed for a structure of {}",
            parties.parties.len(),
            structure.party_count()
        )));
    }
    let me = PartyIndex::new(parties.me);
    let mut server = None;
    let mut devices = Vec::new();
    for (i, party) in parties.parties.iter().enumerate() {
        let index = PartyIndex::new(party.party);
        if usize::from(party.party) != i || structure.label(index) != Some(party.label.as_str()) {
            return Err(bad(format!(
                "party {} ({:?}) is not the structure's",
                party.party, party.label
            )));
        }
        match (&party.device_id, &party.identity_key) {
            (None, None) if server.is_none() => server = Some(index),
            (Some(_), Some(key)) => {
                let mut bytes = [0u8; 32];
                hex::decode_to_slice(key, &mut bytes)
                    .map_err(|_| bad(format!("party {index}'s identity key")))?;
                if index == me {
                    if bytes != identity.public_key() {
                        return Err(bad(format!(
                            "this device's party {index} has another identity key"
                        )));
                    }
                } else {
                    devices.push((index, party.clone(), bytes));
                }
            }
            _ => {
                return Err(bad(format!(
                    "party {index} is neither one server nor a device"
                )));
            }
        }
    }
    let server = server.ok_or_else(|| bad("no party is the server"))?;
    if me == server || usize::from(parties.me) >= parties.parties.len() {
        return Err(bad(format!("this device cannot be party {me}")));
    }
    Ok(Checked {
        structure,
        me,
        server,
        devices,
    })
}

/// Checks a signing session's parties against this device's `share`: the same wallet
/// structure, this device's party, signers that include it and the server and are a quorum.
fn check_signers(checked: &Checked, share: &KeyShare, signers: &[u8]) -> Result<Vec<PartyIndex>> {
    if !share.is_structure_wallet()
        || share.structure().to_string() != checked.structure.to_string()
        || share.party() != checked.me
    {
        return Err(bad(format!(
            "its structure {} and party {} are not this device's share's ({}, party {})",
            checked.structure,
            checked.me,
            share.structure(),
            share.party()
        )));
    }
    let signers: Vec<PartyIndex> = signers.iter().copied().map(PartyIndex::new).collect();
    if !signers.contains(&checked.me)
        || !signers.contains(&checked.server)
        || !checked.structure.is_authorised(&signers)
    {
        return Err(bad(format!(
            "signers {signers:?} are not a quorum with this device and the server"
        )));
    }
    Ok(signers)
}

impl ServerClient {
    /// Signs what `kind` describes with a structure wallet's `share` under `path`, together
    /// with the server and the device parties labelled `with` (which join with
    /// [`Self::join_sign`]; none: the server picks them among the devices online). The server
    /// applies the wallet's policy as for a 2-of-2 wallet; when it requires another device's
    /// approval, `on_wait` is told and this waits for it. Identity keys as
    /// [`Self::keygen_structure`]. The signature is verified before it is returned.
    ///
    /// Robust signing: when a run fails and the server banned a party of it for misbehaving
    /// (the engine blamed it, or its message failed the checks), the request is made again
    /// without it, the server picking the co-signers among the devices online; when a run
    /// fails naming nobody (the final signature did not verify), the request is made again and
    /// the server picks the quorum that isolates the party at fault. At most
    /// [`MAX_SIGN_RETRIES`] times; the bans are returned with the signature (the requester is
    /// told). A run that fails otherwise (a party that declined, never came or went away) is
    /// not retried.
    ///
    /// # Errors
    /// The server's refusal (a policy denial, parties that are not a quorum, no quorum online
    /// without the banned parties...), a signer that never came or failed (named),
    /// [`ClientError::EpochMismatch`], network errors.
    #[allow(clippy::too_many_arguments)] // a signing request's parts and its three hooks
    pub async fn sign_structure(
        &self,
        share: &KeyShare,
        kind: &SignKind,
        path: &DerivationPath,
        with: &[String],
        identity: &DeviceIdentity,
        mut trust: impl FnMut(&api::SessionParty, [u8; 32]) -> Result<[u8; 32]>,
        mut on_round: impl FnMut(u8, u8),
        on_wait: impl FnOnce(&str),
    ) -> Result<(Signature, Vec<api::Ban>)> {
        let digest = tessera_api::intent::decode(kind)?.digest;
        let mut with = with.to_vec();
        let mut on_wait = Some(on_wait);
        let mut banned: Vec<api::Ban> = Vec::new();
        let mut sessions = Vec::new();
        loop {
            let (created, ours) = self.request_sign(share, kind, path, &with).await?;
            let parties = created
                .parties
                .as_ref()
                .ok_or_else(|| bad("no parties for a structure wallet"))?;
            self.await_approval(&created, |s| {
                if let Some(on_wait) = on_wait.take() {
                    on_wait(s);
                }
            })
            .await?;
            let mut server = [0u8; 32];
            hex::decode_to_slice(&created.nonce, &mut server).map_err(|_| bad("its nonce"))?;
            let request = (joint_nonce(&[ours, server]), digest, path.clone());
            let run = self
                .run_sign(
                    &created.session_id,
                    parties,
                    request,
                    share,
                    identity,
                    &mut trust,
                    &mut on_round,
                )
                .await;
            sessions.push(created.session_id.clone());
            let error = match run {
                Ok(signature) if sessions.len() == 1 => return Ok((signature, banned)),
                Ok(signature) => {
                    // After retries: the run that signed may have ended an isolation.
                    let new = self.bans_of(share, &sessions, &banned).await?;
                    banned.extend(new);
                    return Ok((signature, banned));
                }
                Err(e) => e,
            };
            if sessions.len() > MAX_SIGN_RETRIES {
                return Err(error);
            }
            // The server is going away (a shutdown, close code 1001): nobody to look for, and
            // it may not answer any more.
            if matches!(&error, ClientError::Closed { code: 1001, .. }) {
                return Err(error);
            }
            // What the server banned in this run: a party other than this device. When that
            // cannot be read, the run's own error is the one to report.
            let Ok(new) = self
                .bans_of(share, std::slice::from_ref(&created.session_id), &banned)
                .await
            else {
                return Err(error);
            };
            // A run that failed naming nobody: our own check did (the engine's error names no
            // party), or the server's party failed first and its end reached us before the
            // message our check would have failed on. The server names the party it can name
            // (a ban, above); a failed end of its own naming nobody is the same unnamed abort,
            // which the server counts, and asking again is what isolates the culprit.
            let unnamed = match &error {
                ClientError::Protocol(e) => e.party().is_none(),
                ClientError::Session(tessera_api::session_frame::Fault::Ended { party, end }) => {
                    end.reason() == EndReason::Failed
                        && parties
                            .parties
                            .iter()
                            .any(|p| p.party == party.get() && p.device_id.is_none())
                }
                _ => false,
            };
            if new.is_empty() && !unnamed {
                return Err(error);
            }
            banned.extend(new);
            // The server picks the co-signers again, without the banned ones.
            with.clear();
        }
    }

    /// The bans in force the server made in `sessions` of parties other than this device's,
    /// except those in `known`.
    async fn bans_of(
        &self,
        share: &KeyShare,
        sessions: &[api::ServerSessionId],
        known: &[api::Ban],
    ) -> Result<Vec<api::Ban>> {
        Ok(self
            .bans(&share.wallet_id().to_string())
            .await?
            .into_iter()
            .filter(|b| {
                sessions.contains(&b.session_id)
                    && b.lifted_at.is_none()
                    && b.party != share.party().get()
                    && !known.iter().any(|k| k.ban_id == b.ban_id)
            })
            .collect())
    }

    /// Joins `session` (from [`Self::joinable`], a signing session) with this device's `share`:
    /// decodes what it signs and computes the digest here, then runs as
    /// [`Self::sign_structure`]. Show [`tessera_api::intent::decode`]'s summary of
    /// `session.sign` to the person before calling this.
    ///
    /// # Errors
    /// As [`Self::sign_structure`]; [`ClientError::Refused`] for a session that is not a
    /// signing session.
    pub async fn join_sign(
        &self,
        share: &KeyShare,
        session: &api::JoinableSession,
        identity: &DeviceIdentity,
        trust: impl FnMut(&api::SessionParty, [u8; 32]) -> Result<[u8; 32]>,
        on_round: impl FnMut(u8, u8),
    ) -> Result<Signature> {
        let sign = match (&session.sign, session.protocol.as_str()) {
            (Some(sign), "sign") => sign,
            _ => {
                return Err(ClientError::Refused(format!(
                    "session {} is a {}, not a signing session",
                    session.session_id, session.protocol
                )));
            }
        };
        if session.wallet_id.as_str() != share.wallet_id().to_string() {
            return Err(bad("it is another wallet's"));
        }
        if session.epoch != share.epoch() {
            return Err(ClientError::EpochMismatch {
                device: share.epoch(),
                pending: None,
                server: session.epoch,
            });
        }
        let digest = tessera_api::intent::decode(&sign.kind)?.digest;
        let path: DerivationPath = sign.path.parse()?;
        let mut nonce = [0u8; 32];
        hex::decode_to_slice(&session.nonce, &mut nonce).map_err(|_| bad("its nonce"))?;
        self.run_sign(
            &session.session_id,
            &session.parties,
            (nonce, digest, path),
            share,
            identity,
            trust,
            on_round,
        )
        .await
    }

    /// Accepts this device's party in another user's wallet, the invitation `session` carries
    /// (from [`Self::joinable`]): signs `api::acceptance_message` over the wallet (id and name),
    /// its structure and this device's party as listed, and the inviting user's name, so that the server lets
    /// this device take part. Nothing to do without an invitation.
    ///
    /// # Errors
    /// [`ClientError::BadResponse`] when the invitation's label is not this device's party in
    /// the listed structure; network or server errors.
    pub async fn accept_invitation(
        &self,
        session: &api::JoinableSession,
        identity: &DeviceIdentity,
    ) -> Result<()> {
        let Some(invitation) = &session.invitation else {
            return Ok(());
        };
        let parties = &session.parties;
        let mine = parties
            .parties
            .iter()
            .find(|p| p.party == parties.me)
            .ok_or_else(|| bad("this device's party is not listed"))?;
        if mine.label != invitation.label {
            return Err(bad(format!(
                "the invitation names party {:?}, the session lists this device as {:?}",
                invitation.label, mine.label
            )));
        }
        let message = api::acceptance_message(&api::Acceptance {
            wallet_id: session.wallet_id.as_str(),
            wallet_name: &session.wallet_name,
            structure: &parties.structure,
            party: parties.me,
            label: &invitation.label,
            owner: &invitation.owner,
        });
        let _: serde_json::Value = self
            .post(
                "/wallet/accept",
                &api::AcceptWallet {
                    wallet_id: session.wallet_id.clone(),
                    signature: hex::encode(identity.sign(&message)),
                },
            )
            .await?;
        Ok(())
    }

    /// Declines `session` (from [`Self::joinable`]): opens this device's socket in it only to
    /// tell every other party that this device will not take part, so that the session ends at
    /// once, naming this device, instead of waiting for it. An invitation not accepted (this
    /// device may not open the session) is declined through `POST /wallet/decline`: the server
    /// tells the others in this device's name.
    ///
    /// # Errors
    /// Network or server errors (a session that ended meanwhile).
    pub async fn decline(&self, session: &api::JoinableSession) -> Result<()> {
        if session.invitation.is_some() {
            // Not accepted, this device may not open the session: the server tells the others.
            let _: serde_json::Value = self
                .post(
                    "/wallet/decline",
                    &api::DeclineInvitation {
                        session_id: session.session_id.clone(),
                    },
                )
                .await?;
            return Ok(());
        }
        let me = PartyIndex::new(session.parties.me);
        let peers: Vec<PartyIndex> = session
            .parties
            .signers
            .iter()
            .map(|&p| PartyIndex::new(p))
            .filter(|&p| p != me)
            .collect();
        let socket = self.connect(session.session_id.as_str()).await?;
        let link = SocketLink::new(socket, me, &peers)?;
        link.end(End::new(
            EndReason::Left,
            "the person at this device declined",
        ))
        .await
    }

    /// Runs this device's party of a signing session; `(nonce, digest, path)` of the run.
    #[allow(clippy::too_many_arguments)] // the two callers' common part
    async fn run_sign(
        &self,
        session_id: &api::ServerSessionId,
        parties: &api::SessionParties,
        (nonce, digest, path): ([u8; 32], [u8; 32], DerivationPath),
        share: &KeyShare,
        identity: &DeviceIdentity,
        mut trust: impl FnMut(&api::SessionParty, [u8; 32]) -> Result<[u8; 32]>,
        on_round: impl FnMut(u8, u8),
    ) -> Result<Signature> {
        let checked = check(parties, identity)?;
        let signers = check_signers(&checked, share, &parties.signers)?;
        let mut trusted = BTreeMap::new();
        for (index, party, registry) in &checked.devices {
            if signers.contains(index) {
                trusted.insert(*index, trust(party, *registry)?);
            }
        }
        let request = SignRequest {
            nonce,
            signers,
            digest,
            path: path.clone(),
        };
        let session = SignSession::new(share, &request)?;
        let signature = self
            .run_party(
                session_id,
                session,
                checked.server,
                identity,
                &trusted,
                on_round,
            )
            .await?;
        share.public_key_at(&path)?.verify(&digest, &signature)?;
        Ok(signature)
    }

    /// Runs `session`, this device's party, over its socket: the channels with the other
    /// devices (`trusted`: their identity keys) set up, the protocol driven, the server's
    /// party's finish awaited.
    async fn run_party<S: Session>(
        &self,
        session_id: &api::ServerSessionId,
        mut session: S,
        server: PartyIndex,
        identity: &DeviceIdentity,
        trusted: &BTreeMap<PartyIndex, [u8; 32]>,
        mut on_round: impl FnMut(u8, u8),
    ) -> Result<S::Output> {
        let mut link = self
            .sealed_link(session_id, &session, identity, trusted)
            .await?;
        let session_ref = session.session_id();
        let run = driver::drive(&mut session, &mut link, Some(PARTY_WAIT), |round, total| {
            on_round(round, total);
            Ok(())
        })
        .await;
        let output = match run {
            Ok(output) => output,
            Err(e) => {
                if matches!(&e, driver::DriveError::Rejected { error, .. } if error.party().is_none())
                {
                    // A run that named nobody: the server's party fails the same way and
                    // records the run for its isolation before it tells its end; wait for that
                    // end, so that a request made again finds the run recorded.
                    let _ = link.await_finished(server, PARTY_WAIT).await;
                }
                return Err(crate::session::drive_error(session_ref, e));
            }
        };
        link.await_finished(server, PARTY_WAIT).await?;
        link.end(End::finished()).await?;
        Ok(output)
    }

    /// This device's socket in `session`, its channels with the other devices (`trusted`: their
    /// identity keys) set up.
    pub(crate) async fn sealed_link<S: Session>(
        &self,
        session_id: &api::ServerSessionId,
        session: &S,
        identity: &DeviceIdentity,
        trusted: &BTreeMap<PartyIndex, [u8; 32]>,
    ) -> Result<SocketLink<crate::session::Socket>> {
        let socket = self.connect(session_id.as_str()).await?;
        let mut link = SocketLink::new(socket, session.party(), &session.peers())?;
        link.seal(
            identity,
            session_id.as_str().as_bytes(),
            trusted,
            PARTY_WAIT,
        )
        .await?;
        Ok(link)
    }

    /// Creates wallet `name` under `structure` (`server` and the party labels of this user's
    /// active devices, e.g. `and(server, or(phone, laptop))`) and runs this device's party of
    /// its key generation; every other device party joins ([`Self::join_keygen`]) within
    /// [`PARTY_WAIT`]. `trust(party, registry_key)` says which identity key to trust for each
    /// other device (or refuses). Returns this device's share once the server stored its own;
    /// the caller stores it. `on_round(r, total)` reports progress.
    ///
    /// # Errors
    /// The server's refusal (a structure naming an unknown device...), `trust`'s, a party that
    /// never came or failed (named), network errors.
    pub async fn keygen_structure(
        &self,
        name: &str,
        structure: &str,
        identity: &DeviceIdentity,
        trust: impl FnMut(&api::SessionParty, [u8; 32]) -> Result<[u8; 32]>,
        on_round: impl FnMut(u8, u8),
    ) -> Result<KeyShare> {
        let ours = fresh_nonce();
        let created: api::SessionCreated = self
            .post(
                "/keygen",
                &api::KeygenRequest {
                    name: name.into(),
                    structure: Some(structure.into()),
                    device_nonce: Some(hex::encode(ours)),
                },
            )
            .await?;
        let parties = created
            .parties
            .as_ref()
            .ok_or_else(|| bad("no parties for a structure wallet"))?;
        let mut server = [0u8; 32];
        hex::decode_to_slice(&created.nonce, &mut server).map_err(|_| bad("its nonce"))?;
        let nonce = joint_nonce(&[ours, server]);
        self.run_keygen(
            &created.session_id,
            &created.wallet_id,
            parties,
            nonce,
            identity,
            trust,
            on_round,
        )
        .await
    }

    /// The sessions of structure wallets that other devices started and in which this device is
    /// a party, waiting for it.
    ///
    /// # Errors
    /// Network or server errors.
    pub async fn joinable(&self) -> Result<Vec<api::JoinableSession>> {
        self.get("/sessions/joinable").await
    }

    /// [`Self::joinable`], waiting up to `wait` (the server caps it at 25 s) for one to come
    /// when there is none: a device agent learns of a request as soon as it is made.
    ///
    /// # Errors
    /// Network or server errors.
    pub async fn joinable_wait(&self, wait: Duration) -> Result<Vec<api::JoinableSession>> {
        self.get(&format!("/sessions/joinable?wait={}", wait.as_secs()))
            .await
    }

    /// Runs this device's party of `session`, a key generation another device started
    /// ([`Self::joinable`]); as [`Self::keygen_structure`] from there.
    ///
    /// # Errors
    /// As [`Self::keygen_structure`]; [`ClientError::Refused`] for a session that is not a key
    /// generation.
    pub async fn join_keygen(
        &self,
        session: &api::JoinableSession,
        identity: &DeviceIdentity,
        trust: impl FnMut(&api::SessionParty, [u8; 32]) -> Result<[u8; 32]>,
        on_round: impl FnMut(u8, u8),
    ) -> Result<KeyShare> {
        if session.protocol != "keygen" {
            return Err(ClientError::Refused(format!(
                "this build joins key generations only, not a {}",
                session.protocol
            )));
        }
        let mut nonce = [0u8; 32];
        hex::decode_to_slice(&session.nonce, &mut nonce).map_err(|_| bad("its nonce"))?;
        self.run_keygen(
            &session.session_id,
            &session.wallet_id,
            &session.parties,
            nonce,
            identity,
            trust,
            on_round,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)] // the two callers' common part
    async fn run_keygen(
        &self,
        session_id: &api::ServerSessionId,
        wallet_id: &api::WalletId,
        parties: &api::SessionParties,
        nonce: [u8; 32],
        identity: &DeviceIdentity,
        mut trust: impl FnMut(&api::SessionParty, [u8; 32]) -> Result<[u8; 32]>,
        on_round: impl FnMut(u8, u8),
    ) -> Result<KeyShare> {
        let checked = check(parties, identity)?;
        let mut trusted = BTreeMap::new();
        for (index, party, registry) in &checked.devices {
            trusted.insert(*index, trust(party, *registry)?);
        }
        let wallet = WalletId::from_hex(wallet_id)?;
        let session = StructureKeygenSession::new(wallet, &checked.structure, checked.me, &nonce)?;
        let share = self
            .run_party(
                session_id,
                session,
                checked.server,
                identity,
                &trusted,
                on_round,
            )
            .await?;
        let listed = self.pubkey(wallet_id.as_str()).await?;
        if listed.public_key != share.public_key().to_string() {
            return Err(bad(format!(
                "it lists {} as the wallet's key, the run made {}",
                listed.public_key,
                share.public_key()
            )));
        }
        Ok(share)
    }
}
