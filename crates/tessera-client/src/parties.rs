//! The device's party in sessions of structure wallets (issue 15, docs/quorum-wallets.md): the
//! server coordinates, each party reaches the others through its own socket
//! ([`crate::session_socket::SocketLink`], `tessera_server::session_pump` on the server's side),
//! and frames between two devices are sealed end to end between them.
//!
//! Built: key generation, asked for by one device ([`ServerClient::keygen_structure`]) and
//! joined by the others ([`ServerClient::joinable`], [`ServerClient::join_keygen`]).
//!
//! What the server says about a session is checked before anything runs: the structure parses,
//! its parties are the ones listed, this device's party is a device party and the identity key
//! the registry has for it is this device's own. Which identity key to trust for each other
//! device is the caller's decision (`trust`; the device SDK pins the first key it sees for a
//! device and refuses a changed one): the server can neither read nor alter what two devices
//! exchange only if it cannot choose the keys they trust.
//! A run's share is returned only once the server's party said it finished (it says so after
//! it stored its own share and the wallet's key), and the key the server then lists for the
//! wallet is the share's.

use std::collections::BTreeMap;
use std::time::Duration;

use tessera_api as api;
use tessera_api::session_frame::End;
use tessera_core::driver;
use tessera_core::protocols::{fresh_nonce, joint_nonce};
use tessera_core::structure::WalletStructure;
use tessera_core::{KeyShare, PartyIndex, Session, StructureKeygenSession, WalletId};
use tessera_store::DeviceIdentity;

use crate::ServerClient;
use crate::error::{ClientError, Result, net};
use crate::session_socket::SocketLink;

/// How long a party waits for the others to come, and for each message of a run.
pub const PARTY_WAIT: Duration = Duration::from_secs(300);

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

impl ServerClient {
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
        mut on_round: impl FnMut(u8, u8),
    ) -> Result<KeyShare> {
        let checked = check(parties, identity)?;
        let mut trusted = BTreeMap::new();
        for (index, party, registry) in &checked.devices {
            trusted.insert(*index, trust(party, *registry)?);
        }
        let wallet = WalletId::from_hex(wallet_id)?;
        let mut session =
            StructureKeygenSession::new(wallet, &checked.structure, checked.me, &nonce)?;
        let peers = session.peers();
        let socket = self.connect(session_id.as_str()).await?;
        let mut link = SocketLink::new(socket, checked.me, &peers)?;
        link.seal(
            identity,
            session_id.as_str().as_bytes(),
            &trusted,
            PARTY_WAIT,
        )
        .await?;
        let session_ref = session.session_id();
        let share = driver::drive(&mut session, &mut link, Some(PARTY_WAIT), |round, total| {
            on_round(round, total);
            Ok(())
        })
        .await
        .map_err(|e| crate::session::drive_error(session_ref, e))?;
        link.await_finished(checked.server, PARTY_WAIT).await?;
        link.end(End::finished()).await?;
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
