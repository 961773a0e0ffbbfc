//! The server's side of sessions of several parties (issue 15): it creates them and runs its
//! own party of each over the session's mailboxes (`session_link::MailboxLink`), while each
//! device reaches the session through its socket (`session_pump`), on whichever replica.
//!
//! Built so far: a structure wallet's key generation.
//! - [`create_keygen`], in one write transaction: the structure resolved for the requesting
//!   user (`wallet_parties::resolve`), the wallet stored without a key, with its parties
//!   (`wallet_parties::store`), the session created (within the live-session caps) with its
//!   `session.created` record. Another user's device named in the structure is invited: it
//!   learns of the session from `GET /sessions/joinable` and accepts before it can join
//!   (`wallet_parties::accept`); one that does not join in time fails the run, as any party.
//! - [`run_keygen`]: claims the session, opens the server's mailbox and waits for every other
//!   party (`appear_within`), runs the server's party, then, in one write transaction, sets the
//!   wallet's public key (only on a wallet still without one), stores the server's sealed
//!   share, records the session's end and its `keygen.done` record, and only then says it
//!   finished. A run that fails tells the others why, and records the end (`keygen.failed`,
//!   `session.expired`) naming the party at fault where there is one; the wallet stays without
//!   a key, which every wallet query skips.
//!
//! Left (docs/quorum-wallets.md): the REST route and the devices' discovery of the sessions
//! they take part in, signing, refresh and reshare, bans by party index.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde_json::json;
use tessera_api::{self as api, ServerSessionId};
use tessera_core::driver::{self, DriveError};
use tessera_core::protocols::{fresh_nonce, joint_nonce};
use tessera_core::structure::WalletStructure;
use tessera_core::{
    PartyIndex, PublicKey, Session, SignRequest, SignSession, StructureKeygenSession, WalletId,
};

use crate::audit::{self, Subject};
use crate::auth::AuthDevice;
use crate::db::{self, Protocol, SessionStatus};
use crate::error::{ApiError, ApiResult};
use crate::session_link::{End, EndReason, LinkError, MailboxLink};
use crate::state::{AppState, now};
use crate::wallet_parties::{self, NewWallet};

/// A structure wallet's key generation, created and waiting for its parties.
#[derive(Clone, Debug)]
pub struct KeygenJob {
    /// The session.
    pub session_id: ServerSessionId,
    /// The new wallet.
    pub wallet: WalletId,
    /// Its structure (labels as stored).
    pub structure: WalletStructure,
    /// The session's nonce: the requester's joined with the server's.
    pub nonce: [u8; 32],
    /// The server's contribution to the nonce (what the requester is told).
    pub server_nonce: [u8; 32],
    /// Who asked (the audit records' subject).
    pub requester: AuthDevice,
}

/// Creates the key generation of a wallet named `name` under `structure` (text, labels of the
/// requester's devices and `server`, or `api::DEFAULT_STRUCTURE`: `wallet_parties::default_structure`) for `requester`, with the requester's nonce `device_nonce`.
///
/// # Errors
/// [`ApiError::BadRequest`] for a name or structure that is not valid (the resolver's reason);
/// [`ApiError::Conflict`] for a name in use; the session
/// caps' refusal; a database error.
pub async fn create_keygen(
    state: &AppState,
    requester: &AuthDevice,
    name: &str,
    structure: &str,
    device_nonce: [u8; 32],
) -> ApiResult<KeygenJob> {
    let name = crate::wallets::wallet_name(name)?;
    let mut tx = state.begin_write().await?;
    wallet_parties::discard_unmade(state, &mut tx, requester, name).await?;
    let (resolved, later) = if structure == api::DEFAULT_STRUCTURE {
        wallet_parties::default_structure(&mut tx, &requester.user_id, &requester.device_id, now())
            .await?
    } else {
        let resolved = wallet_parties::resolve(&mut tx, &requester.user_id, structure, &[]).await?;
        (resolved, Vec::new())
    };
    let wallet = WalletId::random();
    let wallet_id = wallet.to_string();
    wallet_parties::store(
        &mut tx,
        &NewWallet {
            id: &wallet_id,
            owner_id: &requester.user_id,
            name,
            public_key: None,
            epoch: 0,
            at: now(),
        },
        &resolved,
    )
    .await?;
    // The default structure's devices that are offline join by resharing once the wallet has
    // its key (`GET /wallet` lists them as pending).
    for (device_id, _) in &later {
        db::wallet_changes::add(&mut tx, &wallet_id, device_id, now()).await?;
    }
    let session_id = hex::encode(fresh_nonce());
    let server_nonce = fresh_nonce();
    let nonce = joint_nonce(&[device_nonce, server_nonce]);
    let params = json!({ "name": name, "structure": resolved.text() }).to_string();
    crate::live_sessions::insert_within_caps(
        state,
        &mut tx,
        &db::sessions::NewSession {
            id: &session_id,
            device_id: &requester.device_id,
            wallet_id: &wallet_id,
            protocol: Protocol::Keygen,
            nonce: nonce.as_slice(),
            params: &params,
            epoch: 0,
            owner: None,
        },
    )
    .await
    .map_err(|e| match e {
        crate::live_sessions::InsertError::Cap(e) => e,
        crate::live_sessions::InsertError::Database(e) => ApiError::from(e),
    })?;
    audit::append_in(
        &mut tx,
        "session.created",
        Subject::device(requester).wallet(&wallet_id),
        json!({
            "session_id": session_id,
            "protocol": Protocol::Keygen.as_str(),
            "epoch": 0,
            "structure": resolved.text(),
            "joins_later": later.iter().map(|(_, label)| label).collect::<Vec<_>>(),
        }),
    )
    .await?;
    tx.commit().await?;
    Ok(KeygenJob {
        session_id: ServerSessionId::new(session_id),
        wallet,
        structure: resolved.structure().clone(),
        nonce,
        server_nonce,
        requester: requester.clone(),
    })
}

/// How the server's run of a key generation ended.
#[derive(Debug)]
pub enum KeygenEnd {
    /// Every party finished; the wallet has its key and the server's share is stored.
    Stored(PublicKey),
    /// The run failed; the reason is recorded (and the party at fault, where there is one).
    Failed {
        /// The session's status recorded.
        status: SessionStatus,
        /// What happened.
        reason: String,
        /// The party the failure names.
        party: Option<PartyIndex>,
    },
}

/// Runs the server's party of `job`: waits up to `appear_within` for every other party's
/// mailbox, runs the key generation (each wait for a message bounded by the session idle
/// timeout), stores its outcome (module documentation).
pub async fn run_keygen(state: &AppState, job: &KeygenJob, appear_within: Duration) -> KeygenEnd {
    let _live = state.shutdown().track("run");
    let started = std::time::Instant::now();
    crate::observe::session_started("keygen", &job.session_id);
    let end = keygen_party(state, job, appear_within).await;
    let (outcome, party, detail) = match &end {
        KeygenEnd::Stored(_) => (SessionStatus::Done, None, None),
        KeygenEnd::Failed {
            status,
            reason,
            party,
        } => (*status, *party, Some(reason.as_str())),
    };
    crate::observe::session_ended(
        "keygen",
        &job.session_id,
        outcome.as_str(),
        party.map(PartyIndex::get),
        detail,
        started,
    );
    end
}

/// The server's party of a key generation, as [`run_keygen`] says.
async fn keygen_party(state: &AppState, job: &KeygenJob, appear_within: Duration) -> KeygenEnd {
    let sid = job.session_id.as_str();
    let Some(server) = job.structure.party("server") else {
        return failed(
            state,
            job,
            SessionStatus::Failed,
            "the structure has no server",
            None,
        )
        .await;
    };
    match db::sessions::claim(state.db(), sid, state.instance(), now()).await {
        Ok(true) => {}
        Ok(false) => {
            // Another replica (or an earlier call) runs it, or it ended: nothing to record.
            return KeygenEnd::Failed {
                status: SessionStatus::Failed,
                reason: "the session is already running or over".into(),
                party: None,
            };
        }
        Err(e) => {
            return failed(state, job, SessionStatus::Failed, &e.to_string(), None).await;
        }
    }
    let mut session =
        match StructureKeygenSession::new(job.wallet, &job.structure, server, &job.nonce) {
            Ok(session) => session,
            Err(e) => return failed(state, job, SessionStatus::Failed, &e.to_string(), None).await,
        };
    let peers = session.peers();
    let mut link = match crate::session_link::opened_unless_closing(
        MailboxLink::open_checking(
            state.mailboxes(),
            Some(state.db()),
            &job.session_id,
            server,
            &peers,
            appear_within,
        ),
        state.shutdown(),
    )
    .await
    {
        Ok(link) => link,
        // Ended from outside its parties (an invited device declined): the end is recorded.
        Err(LinkError::Ended(reason)) => {
            return KeygenEnd::Failed {
                status: SessionStatus::Failed,
                reason,
                party: None,
            };
        }
        Err(e) => {
            return failed(state, job, open_failure(&e), &e.to_string(), e.party()).await;
        }
    };
    let idle = Some(state.config().session_idle_timeout);
    let share = match driver::drive(&mut session, &mut link, idle, |_, _| Ok(())).await {
        Ok(share) => share,
        Err(e) => {
            let (status, party, end) = drive_failure(&e);
            let reason = e.to_string();
            if let Err(told) = link.end(End::new(end, &reason)).await {
                tracing::warn!(session_id = %sid, error = %told, "could not tell the parties that the server's run ended");
            }
            return failed(state, job, status, &reason, party).await;
        }
    };
    let public_key = share.public_key();
    if let Err(e) = store(state, job, &share).await {
        let reason = format!("the server could not store its share: {e}");
        if let Err(told) = link.end(End::new(EndReason::Failed, &reason)).await {
            tracing::warn!(session_id = %sid, error = %told, "could not tell the parties that the server's run ended");
        }
        return failed(state, job, SessionStatus::Failed, &reason, None).await;
    }
    if let Err(e) = link.end(End::finished()).await {
        tracing::warn!(session_id = %sid, error = %e, "could not tell the parties that the server finished");
    }
    KeygenEnd::Stored(public_key)
}

/// The wallet's key, the server's sealed share, the session's end and its record: one write
/// transaction, tried up to [`db::DURABLE_ATTEMPTS`] times.
async fn store(state: &AppState, job: &KeygenJob, share: &tessera_core::KeyShare) -> ApiResult<()> {
    let wallet_id = job.wallet.to_string();
    let sealed = crate::vault::seal(state, &wallet_id, share)?;
    let public_key = share.public_key().to_compressed();
    let mut attempt = 1;
    loop {
        let written = async {
            let mut tx = state.begin_write().await?;
            if !db::wallet_parties::set_public_key(&mut *tx, &wallet_id, &public_key).await? {
                return Err(ApiError::Conflict(format!(
                    "wallet {wallet_id} has a key already, or is not a structure wallet"
                )));
            }
            db::shares::insert_active(
                &mut *tx,
                &wallet_id,
                share.epoch() as i64,
                sealed.clone(),
                now(),
            )
            .await?;
            db::sessions::record_end(
                &mut *tx,
                job.session_id.as_str(),
                SessionStatus::Done,
                None,
                now(),
            )
            .await?;
            audit::append_in(
                &mut tx,
                "keygen.done",
                Subject::device(&job.requester).wallet(&wallet_id),
                json!({
                    "session_id": job.session_id.as_str(),
                    "public_key": hex::encode(public_key),
                    "structure": job.structure.to_string(),
                }),
            )
            .await?;
            tx.commit().await
        }
        .await;
        match written {
            Ok(()) => return Ok(()),
            Err(e @ ApiError::Conflict(_)) => return Err(e),
            Err(e) if attempt < db::DURABLE_ATTEMPTS => {
                tracing::warn!(session_id = %job.session_id, attempt, error = %e, "retrying the record of a key generation");
                attempt += 1;
                tokio::time::sleep(db::retry_pause(attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A structure wallet's signing session, opened by its requester: what the server's party
/// runs.
pub struct SignJob {
    /// The session.
    pub session_id: ServerSessionId,
    /// The wallet.
    pub wallet_id: String,
    /// Who asked.
    pub requester: AuthDevice,
    /// The run's nonce.
    pub nonce: [u8; 32],
    /// What is signed (as stored: digest, path, summary, signers).
    pub stored: crate::wallets::StoredSign,
    /// The server's active share: its epoch and sealed bytes.
    pub share: (i64, Vec<u8>),
}

/// Runs the server's party of a structure wallet's signing session: unseals the share, opens
/// its mailbox and waits up to `appear_within` for every other signer, runs the signing
/// (the `sign.released` record written before the server's messages of the last round leave,
/// as for a 2-of-2 wallet), then records the end: `sign.completed` with the signature, or the
/// failure naming the party at fault where there is one (`sign.unconfirmed` once released).
pub async fn run_sign(state: &AppState, job: &SignJob, appear_within: Duration) {
    let _live = state.shutdown().track("run");
    let started = std::time::Instant::now();
    crate::observe::session_started("sign", &job.session_id);
    let sid = job.session_id.as_str();
    let subject = Subject::device(&job.requester).wallet(&job.wallet_id);
    let SignOutcome {
        status,
        failure,
        signature,
        released,
        link,
        misbehaved,
        unnamed,
    } = sign_party(state, job, appear_within).await;
    let kind = match status {
        SessionStatus::Done => "sign.completed",
        _ if released => "sign.unconfirmed",
        SessionStatus::Expired => "session.expired",
        _ => "sign.failed",
    };
    let mut record = json!({
        "session_id": sid,
        "detail": failure.as_ref().map(|(d, ..)| d.as_str()),
        "party": failure.as_ref().and_then(|(_, p, _)| p.map(PartyIndex::get)),
        "signers": job.stored.signers,
    });
    if let Some(signature) = signature {
        record["signature"] = signature.into();
        record["digest"] = job.stored.digest.clone().into();
        record["summary"] = job.stored.summary.clone().into();
    }
    if let (Some((party, round)), Some((detail, ..))) = (misbehaved, &failure) {
        ban_misbehaving(state, job, party, (round, detail)).await;
    }
    // A run that failed naming nobody, and the runs of the same request after one did: the
    // isolation (`crate::isolation`), recorded before the parties are told the end, so that
    // the requester's next request finds it.
    if status == SessionStatus::Done || unnamed {
        match isolate(state, job, status == SessionStatus::Done).await {
            Ok(Some((party, why))) => ban_misbehaving(state, job, party, (0, &why)).await,
            Ok(None) => {}
            Err(e) => {
                tracing::error!(session_id = %sid, error = %e, "could not record a run for the isolation of a misbehaving party");
            }
        }
    }
    let reason = failure.as_ref().map(|(d, ..)| d.as_str());
    crate::observe::session_ended(
        "sign",
        sid,
        status.as_str(),
        failure
            .as_ref()
            .and_then(|(_, p, _)| p.map(PartyIndex::get)),
        reason,
        started,
    );
    let recorded = crate::ws::record_end(
        state,
        sid,
        (status, reason),
        subject,
        &[(kind.to_string(), record)],
    )
    .await;
    let end = match (&recorded, &failure) {
        (Err(e), _) => {
            tracing::error!(session_id = %sid, error = %e, "could not record the end of a signing session");
            End::new(EndReason::Failed, "the server could not record the outcome")
        }
        (Ok(()), None) => End::finished(),
        (Ok(()), Some((reason, _, end))) => End::new(*end, reason),
    };
    // The parties are told once the end is recorded: a device that saw the server finish
    // never finds the session among its joinable ones again.
    if let Some(link) = link
        && let Err(e) = link.end(end).await
    {
        tracing::warn!(session_id = %sid, error = %e, "could not tell the parties how the server's run ended");
    }
}

/// [`crate::isolation::after_run`] for run `job`.
async fn isolate(
    state: &AppState,
    job: &SignJob,
    signed: bool,
) -> ApiResult<Option<(PartyIndex, String)>> {
    let text = job
        .stored
        .structure
        .as_deref()
        .ok_or_else(|| ApiError::Internal("a structure run without its structure".into()))?;
    let structure = WalletStructure::parse(text)
        .map_err(|e| ApiError::Internal(format!("stored structure: {e}")))?;
    let request = db::sign_runs::Request {
        wallet_id: &job.wallet_id,
        epoch: job.share.0,
        digest: &job.stored.digest,
    };
    crate::isolation::after_run(
        state,
        &structure,
        (job.session_id.as_str(), request),
        &job.stored.signers,
        signed,
    )
    .await
}

/// A signing run of a structure wallet failed naming device party `party` (the engine blamed
/// it, or a message it sent failed the checks: the transport authenticates the sender): it is
/// banned from the wallet's signing sessions, so that the requester's next request is signed
/// without it (robust signing). A party that only went away or stalled is not banned
/// ([`SignOutcome::misbehaved`]).
async fn ban_misbehaving(
    state: &AppState,
    job: &SignJob,
    party: PartyIndex,
    (round, detail): (u8, &str),
) {
    let sid = job.session_id.as_str();
    let device = match db::wallet_parties::of_wallet(state.db(), &job.wallet_id).await {
        Ok(parties) => parties
            .into_iter()
            .find(|p| p.party == i64::from(party.get()))
            .and_then(|p| p.device_id),
        Err(e) => {
            tracing::error!(session_id = %sid, error = %e, "could not read the parties to ban one");
            return;
        }
    };
    // The server never bans itself.
    let Some(device) = device else { return };
    if let Err(e) = crate::bans::ban_structure_party(
        state,
        &job.requester,
        &job.wallet_id,
        sid,
        (party, &device),
        (round, detail),
    )
    .await
    {
        tracing::error!(session_id = %sid, error = %e, "could not record the ban of a misbehaving party");
    }
}

/// How the server's party of a signing run ended.
struct SignOutcome {
    status: SessionStatus,
    /// What failed, the party it names, and the end to tell the others.
    failure: Option<(String, Option<PartyIndex>, EndReason)>,
    /// The signature, hex.
    signature: Option<String>,
    /// Whether the signature was released.
    released: bool,
    /// The link, if it opened: the parties are told the end through it.
    link: Option<MailboxLink>,
    /// The party whose message the engine blamed (and the round), or whose message failed the
    /// checks (round 0: the driver does not say which), if the run failed so.
    misbehaved: Option<(PartyIndex, u8)>,
    /// The run failed and named nobody (the final signature did not verify).
    unnamed: bool,
}

/// The server's party of [`run_sign`].
async fn sign_party(state: &AppState, job: &SignJob, appear_within: Duration) -> SignOutcome {
    let failed = |why: String, party| SignOutcome {
        status: SessionStatus::Failed,
        failure: Some((why, party, EndReason::Failed)),
        signature: None,
        released: false,
        link: None,
        misbehaved: None,
        unnamed: false,
    };
    let share = match crate::vault::unseal(state, &job.wallet_id, job.share.0, &job.share.1) {
        Ok(share) => share,
        Err(e) => return failed(e.to_string(), None),
    };
    let mut digest = [0u8; 32];
    if hex::decode_to_slice(&job.stored.digest, &mut digest).is_err() {
        return failed("the stored digest".into(), None);
    }
    let path = match job.stored.path.parse() {
        Ok(path) => path,
        Err(e) => return failed(format!("the stored path: {e}"), None),
    };
    let request = SignRequest {
        nonce: job.nonce,
        signers: job
            .stored
            .signers
            .iter()
            .copied()
            .map(PartyIndex::new)
            .collect(),
        digest,
        path,
    };
    let mut session = match SignSession::new(&share, &request) {
        Ok(session) => session,
        Err(e) => return failed(e.to_string(), None),
    };
    let peers = session.peers();
    let link = match crate::session_link::opened_unless_closing(
        MailboxLink::open(
            state.mailboxes(),
            &job.session_id,
            share.party(),
            &peers,
            appear_within,
        ),
        state.shutdown(),
    )
    .await
    {
        Ok(link) => link,
        Err(e) => {
            return SignOutcome {
                status: open_failure(&e),
                failure: Some((e.to_string(), e.party(), EndReason::Failed)),
                signature: None,
                released: false,
                link: None,
                misbehaved: None,
                unnamed: false,
            };
        }
    };
    let mut link = Releasing {
        inner: link,
        state,
        release: Some(crate::release::Release {
            session_id: job.session_id.to_string(),
            wallet_id: job.wallet_id.clone(),
            digest: job.stored.digest.clone(),
            device: job.requester.clone(),
        }),
        last_round: session.total_rounds(),
    };
    let idle = Some(state.config().session_idle_timeout);
    let outcome = driver::drive(&mut session, &mut link, idle, |_, _| Ok(())).await;
    let released = link.release.is_none();
    let link = Some(link.inner);
    match outcome {
        Ok(signature) => SignOutcome {
            status: SessionStatus::Done,
            failure: None,
            signature: Some(hex::encode(signature.to_rsv())),
            released: true,
            link,
            misbehaved: None,
            unnamed: false,
        },
        Err(e) => {
            let (status, party, end) = drive_failure(&e);
            // A message that failed a check names its sender (the transport authenticated
            // it); an abort that names nobody does not blame whoever sent the round's last
            // message.
            let misbehaved = match &e {
                DriveError::Blamed { party, round, .. } => Some((*party, *round)),
                DriveError::Rejected { error, .. } => error.party().map(|p| (p, 0)),
                _ => None,
            };
            let unnamed =
                matches!(&e, DriveError::Rejected { error, .. } if error.party().is_none());
            SignOutcome {
                status,
                failure: Some((e.to_string(), party, end)),
                signature: None,
                released,
                link,
                misbehaved,
                unnamed,
            }
        }
    }
}

/// The status a run records when its mailbox link could not open: expired when a party never
/// came, failed otherwise.
pub(crate) fn open_failure(e: &LinkError) -> SessionStatus {
    match e {
        LinkError::NeverAppeared { .. } => SessionStatus::Expired,
        _ => SessionStatus::Failed,
    }
}

/// How a failed run is recorded and told: its status, the party at fault, the end sent.
pub(crate) fn drive_failure(
    e: &DriveError<LinkError>,
) -> (SessionStatus, Option<PartyIndex>, EndReason) {
    match e {
        DriveError::Expired => (SessionStatus::Expired, None, EndReason::Expired),
        DriveError::Link(l) | DriveError::Stopped(l) => {
            (SessionStatus::Failed, l.party(), EndReason::Failed)
        }
        DriveError::Blamed { party, .. } => {
            (SessionStatus::Failed, Some(*party), EndReason::Failed)
        }
        // The party the error names: a failed check names the sender; an abort that names
        // nobody is not the fault of whoever sent the round's last message.
        DriveError::Rejected { error, .. } => {
            (SessionStatus::Failed, error.party(), EndReason::Failed)
        }
        DriveError::Finish(_) => (SessionStatus::Failed, None, EndReason::Failed),
    }
}

/// The server's link in a signing run, recording the signature's release (`sign.released`)
/// before the first of its messages of the last round leaves: with them the other parties can
/// finish the signature.
struct Releasing<'a> {
    inner: MailboxLink,
    state: &'a AppState,
    release: Option<crate::release::Release>,
    last_round: u8,
}

impl driver::Link for Releasing<'_> {
    type Error = LinkError;

    async fn send(&mut self, envelope: &tessera_core::Envelope) -> Result<(), LinkError> {
        if envelope.round == self.last_round
            && let Some(release) = self.release.as_ref()
        {
            crate::release::record(self.state, release).await?;
            self.release = None;
        }
        self.inner.send(envelope).await
    }

    async fn recv(
        &mut self,
        idle: Option<Duration>,
    ) -> Result<Option<(PartyIndex, Vec<u8>)>, LinkError> {
        self.inner.recv(idle).await
    }

    async fn send_control(&mut self, control: driver::Control) -> Result<(), LinkError> {
        self.inner.send_control(control).await
    }

    async fn recv_control(
        &mut self,
        from: PartyIndex,
        idle: Option<Duration>,
    ) -> Result<Option<driver::Control>, LinkError> {
        self.inner.recv_control(from, idle).await
    }
}

/// The parties of wallet `wallet_id` as a device is told them, `me` the party of device
/// `device_id`.
///
/// # Errors
/// [`ApiError::Forbidden`] when that device is not a party of the wallet; a database error.
pub async fn session_parties(
    db: impl sqlx::any::AnyExecutor<'_>,
    wallet_id: &str,
    structure: &str,
    device_id: &str,
    signers: Option<&[u8]>,
) -> ApiResult<api::SessionParties> {
    let parties = listed_parties(db, wallet_id).await?;
    let me = parties
        .iter()
        .find(|p| {
            p.device_id
                .as_ref()
                .is_some_and(|id| id.as_str() == device_id)
        })
        .ok_or_else(|| ApiError::Forbidden("this device is not a party of this wallet".into()))?
        .party;
    Ok(api::SessionParties {
        structure: structure.to_string(),
        me,
        signers: match signers {
            Some(signers) => signers.to_vec(),
            None => parties.iter().map(|p| p.party).collect(),
        },
        parties,
    })
}

/// The parties of wallet `wallet_id`, by index, as devices are told them.
///
/// # Errors
/// A database error.
pub async fn listed_parties(
    db: impl sqlx::any::AnyExecutor<'_>,
    wallet_id: &str,
) -> ApiResult<Vec<api::SessionParty>> {
    let rows = db::wallet_parties::with_devices(db, wallet_id).await?;
    rows.iter()
        .map(|row| {
            Ok(api::SessionParty {
                party: u8::try_from(row.party)
                    .map_err(|_| ApiError::Internal(format!("stored party {}", row.party)))?,
                label: row.label.clone(),
                device_id: row.device.as_ref().map(|(id, ..)| id.clone().into()),
                device_name: row.device.as_ref().map(|(_, name, _)| name.clone()),
                identity_key: row.device.as_ref().map(|(.., key)| hex::encode(key)),
            })
        })
        .collect()
}

/// The parties of a signing session of a structure wallet: the requesting device's party, the
/// server's, and the device parties labelled `with`; they must be a quorum of `structure`.
/// When the requester names none and it and the server are not a quorum, the server completes
/// the smallest quorum with devices whose agent is online (`GET /sessions/joinable` waiting, or
/// within [`PRESENCE_GRACE`] of it) and not banned. A banned requester, or a banned device
/// named, is refused naming the ban. When earlier runs of the same `request` failed naming
/// nobody, the isolation chooses the quorum instead (`crate::isolation`).
///
/// # Errors
/// [`ApiError::Forbidden`] when the device is not a party of the wallet;
/// [`ApiError::BadRequest`] for a label that is not another device party, or parties that are
/// not a quorum; a database error.
pub async fn sign_parties(
    tx: &mut crate::db::WriteTx,
    request: db::sign_runs::Request<'_>,
    structure: &str,
    device_id: &str,
    with: &[String],
) -> ApiResult<api::SessionParties> {
    let wallet_id = request.wallet_id;
    let parsed = WalletStructure::parse(structure)
        .map_err(|e| ApiError::Internal(format!("stored structure: {e}")))?;
    let mut parties = session_parties(&mut **tx, wallet_id, structure, device_id, None).await?;
    let mut signers = std::collections::BTreeSet::from([parties.me]);
    let server = parties
        .parties
        .iter()
        .find(|p| p.device_id.is_none())
        .ok_or_else(|| ApiError::Internal("a structure wallet without the server".into()))?;
    signers.insert(server.party);
    let bans = crate::bans::structure_bans(tx, wallet_id).await?;
    // Earlier runs of this request failed naming nobody: the isolation chooses the quorum.
    crate::bans::refuse_banned_signers(&bans, &[parties.me])?;
    let banned: Vec<PartyIndex> = bans.iter().map(|b| PartyIndex::new(b.party)).collect();
    let isolating = crate::isolation::next_quorum(
        tx,
        &parsed,
        request,
        &banned,
        (PartyIndex::new(parties.me), PartyIndex::new(server.party)),
    )
    .await?;
    if let Some(quorum) = isolating {
        parties.signers = quorum;
        return Ok(parties);
    }
    for label in with {
        let party = parties
            .parties
            .iter()
            .find(|p| p.label == *label && p.device_id.is_some())
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "{label:?} is not a device party of this wallet (its parties: {})",
                    parties
                        .parties
                        .iter()
                        .map(|p| p.label.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        signers.insert(party.party);
    }
    let quorum: Vec<PartyIndex> = signers.iter().copied().map(PartyIndex::new).collect();
    crate::bans::refuse_banned_signers(&bans, &signers.iter().copied().collect::<Vec<_>>())?;
    if parsed.is_authorised(&quorum) {
        parties.signers = signers.into_iter().collect();
        return Ok(parties);
    }
    let labels: Vec<&str> = quorum.iter().filter_map(|&p| parsed.label(p)).collect();
    if !with.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "{} cannot sign together under {structure}: name the other devices to sign with",
            labels.join(" + ")
        )));
    }
    // None named: the smallest quorum of the requester, the server and devices online.
    let mut online = db::wallet_changes::online_parties(&mut **tx, wallet_id, now()).await?;
    online.extend(quorum.iter().copied());
    let chosen = parsed
        .choose_quorum(&online, &banned, &quorum)
        .map_err(|e| {
            ApiError::BadRequest(format!(
                "{} cannot sign together under {structure}, and the devices online (running \
             `tessera listen`) do not complete a quorum ({e}): start their agents or name the \
             devices to sign with",
                labels.join(" + ")
            ))
        })?;
    parties.signers = chosen.into_iter().map(PartyIndex::get).collect();
    Ok(parties)
}

/// `?wait=SECONDS` of `GET /sessions/joinable`.
#[derive(serde::Deserialize)]
pub struct JoinableQuery {
    /// How long to wait for a session when there is none yet (at most [`MAX_JOINABLE_WAIT`]).
    #[serde(default)]
    wait: u64,
}

/// The longest wait of `GET /sessions/joinable?wait=…`, in seconds.
pub const MAX_JOINABLE_WAIT: u64 = 25;

/// How long a device counts as online after its last `GET /sessions/joinable` was answered, in
/// seconds: more than `tessera listen`'s default poll period (1 s) between two requests, and
/// short, since a device that went away still counts as online for this long (a signature whose
/// chosen co-signer is gone fails naming it, once the idle timeout passed).
pub const PRESENCE_GRACE: i64 = 3;

/// How often a waiting `GET /sessions/joinable` reads the sessions again, for those that
/// become joinable on another replica (one on this replica wakes it at once).
const JOINABLE_RECHECK: Duration = Duration::from_millis(500);

/// `GET /sessions/joinable[?wait=SECONDS]`: the live sessions of structure wallets that
/// another device started and in which the caller is a party, created within the session idle
/// timeout (after it, the parties that were to come are past waiting for), with what the
/// caller needs to run its party. With `wait`, an empty answer waits up to that long (at most
/// [`MAX_JOINABLE_WAIT`] s) for one to come, so that a device agent learns of a request at
/// once without polling.
#[utoipa::path(get, path = "/sessions/joinable", tag = "sessions", security(("bearer" = [])), params(("wait" = Option<u64>, Query, minimum = 0, description = "Seconds to wait for a session when there is none yet (more than 25 waits 25)")), responses((status = 200, description = "Sessions this device may join", body = Vec<api::JoinableSession>), crate::openapi::AuthErrors, crate::openapi::Errors))]
pub async fn joinable(
    State(state): State<AppState>,
    me: AuthDevice,
    crate::extract::ApiQuery(q): crate::extract::ApiQuery<JoinableQuery>,
) -> ApiResult<Json<Vec<api::JoinableSession>>> {
    let wait = q.wait.min(MAX_JOINABLE_WAIT);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    // The device's agent is online while it waits here, and for a moment after (it asks again
    // at once, or after its poll period); a request dropped midway (the agent went away, or
    // stopped waiting) ends it at once, whenever it is dropped (see `Presence`).
    let mut presence = Presence::start(&state, &me.device_id, now() + wait as i64 + PRESENCE_GRACE);
    presence.started().await?;
    let answer = joinable_within(&state, &me, deadline).await;
    presence.ended(now() + PRESENCE_GRACE).await;
    answer
}

/// A device's presence while one of its `GET /sessions/joinable` runs: one `device_presence`
/// row, keyed by a fresh request id.
///
/// Every write of the row runs in a task of its own, so that dropping the handler (the client
/// went away or stopped waiting, which an agent does whenever its event stream wakes it) can
/// neither cancel a write midway nor let the first write land after the one that ends the
/// presence: a row written with the whole wait ahead and never ended would count the device
/// online for up to [`MAX_JOINABLE_WAIT`] s after it left.
struct Presence {
    state: AppState,
    device_id: Option<String>,
    request_id: String,
    /// The first write, until awaited by [`Self::started`] (or by the drop's last write).
    start: Option<tokio::task::JoinHandle<Result<(), sqlx::Error>>>,
}

impl Presence {
    /// Begins writing that device `device_id` is online until `until`.
    fn start(state: &AppState, device_id: &str, until: i64) -> Self {
        let request_id = hex::encode(&fresh_nonce()[..8]);
        let start = tokio::spawn({
            let (state, device_id, request_id) =
                (state.clone(), device_id.to_string(), request_id.clone());
            async move {
                db::wallet_changes::present_until(state.db(), &device_id, &request_id, until).await
            }
        });
        Presence {
            state: state.clone(),
            device_id: Some(device_id.to_string()),
            request_id,
            start: Some(start),
        }
    }

    /// Waits for the first write.
    ///
    /// # Errors
    /// A database error (the presence is then not recorded).
    async fn started(&mut self) -> Result<(), ApiError> {
        // Kept until it finished: dropped while waiting here, the drop waits for it instead.
        if let Some(start) = self.start.as_mut() {
            let written = start.await;
            self.start = None;
            match written {
                Ok(written) => written?,
                Err(e) => {
                    return Err(ApiError::Internal(format!(
                        "recording a device's presence: {e}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The request answered: online until `until`.
    async fn ended(&mut self, until: i64) {
        if let Some(device_id) = self.device_id.take() {
            let (state, request_id) = (self.state.clone(), self.request_id.clone());
            let written = tokio::spawn(async move {
                db::wallet_changes::present_until(state.db(), &device_id, &request_id, until)
                    .await
                    .map_err(|e| (device_id, e))
            });
            if let Ok(Err((device_id, e))) = written.await {
                tracing::warn!(device_id = %device_id, error = %e, "could not record a device's presence");
            }
        }
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        if let Some(device_id) = self.device_id.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let (state, request_id) = (self.state.clone(), std::mem::take(&mut self.request_id));
            let start = self.start.take();
            runtime.spawn(async move {
                // After the first write, whether or not the handler saw it end.
                if let Some(start) = start {
                    let _ = start.await;
                }
                let _ =
                    db::wallet_changes::present_until(state.db(), &device_id, &request_id, now())
                        .await;
            });
        }
    }
}

/// The joinable sessions of `me`, waiting until `deadline` for one when there is none.
async fn joinable_within(
    state: &AppState,
    me: &AuthDevice,
    deadline: tokio::time::Instant,
) -> ApiResult<Json<Vec<api::JoinableSession>>> {
    loop {
        let changed = state.joinable_changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let sessions = joinable_now(state, me).await?;
        let now = tokio::time::Instant::now();
        if !sessions.is_empty() || now >= deadline {
            return Ok(Json(sessions));
        }
        tokio::select! {
            () = &mut changed => {}
            () = tokio::time::sleep_until((now + JOINABLE_RECHECK).min(deadline)) => {}
        }
    }
}

/// The joinable sessions of `me` now (see [`joinable`]).
async fn joinable_now(state: &AppState, me: &AuthDevice) -> ApiResult<Vec<api::JoinableSession>> {
    let idle = state.config().session_idle_timeout.as_secs() as i64;
    let sessions = db::wallet_parties::joinable(state.db(), &me.device_id, now() - idle).await?;
    let mut out = Vec::with_capacity(sessions.len());
    for session in sessions {
        let structure = session.structure;
        let stored = |e: serde_json::Error| ApiError::Internal(format!("stored session: {e}"));
        let (parties, sign, reshare) = match session.protocol {
            Protocol::Reshare => {
                // Its parties are the run's, in the session (a device joining the wallet is
                // not one of the wallet's yet).
                let stored: crate::reshare::StoredReshare =
                    serde_json::from_str(&session.params).map_err(stored)?;
                if stored.run_index(&me.device_id).is_none() {
                    continue;
                }
                let parties = stored.session_parties(state.db(), &me.device_id).await?;
                (parties, None, Some(stored.info()))
            }
            Protocol::Sign => {
                let stored: crate::wallets::StoredSign =
                    serde_json::from_str(&session.params).map_err(stored)?;
                let Some(kind) = stored.intent else {
                    continue;
                };
                let parties = session_parties(
                    state.db(),
                    &session.wallet_id,
                    &structure,
                    &me.device_id,
                    Some(&stored.signers),
                )
                .await?;
                let sign = api::JoinableSign {
                    path: stored.path,
                    kind,
                };
                (parties, Some(sign), None)
            }
            _ => {
                let parties = session_parties(
                    state.db(),
                    &session.wallet_id,
                    &structure,
                    &me.device_id,
                    None,
                )
                .await?;
                (parties, None, None)
            }
        };
        if !parties.signers.contains(&parties.me) {
            continue;
        }
        // Another user's wallet: the device takes part once it accepted its party.
        let (owner_id, owner) = &session.owner;
        let mut invitation = None;
        if *owner_id != me.user_id {
            match &session.mine {
                Some((_, Some(_accepted_at))) => {}
                Some((label, None)) => {
                    invitation = Some(api::Invitation {
                        owner: owner.clone(),
                        label: label.clone(),
                    });
                }
                // A resharing's new party: this build does not invite one (`crate::reshare`).
                None => continue,
            }
        }
        out.push(api::JoinableSession {
            invitation,
            sign,
            reshare,
            session_id: session.session_id.into(),
            wallet_id: session.wallet_id.into(),
            wallet_name: session.wallet_name,
            protocol: session.protocol.as_str().to_string(),
            nonce: hex::encode(session.nonce),
            epoch: u64::try_from(session.epoch).unwrap_or_default(),
            requested_by: session.requested_by,
            created_at: session.created_at,
            parties,
        });
    }
    Ok(out)
}

/// Records a failed run (its end and its `keygen.failed` or `session.expired` record) and
/// returns it.
async fn failed(
    state: &AppState,
    job: &KeygenJob,
    status: SessionStatus,
    reason: &str,
    party: Option<PartyIndex>,
) -> KeygenEnd {
    let kind = if status == SessionStatus::Expired {
        "session.expired"
    } else {
        "keygen.failed"
    };
    let wallet_id = job.wallet.to_string();
    let written = crate::ws::record_end(
        state,
        job.session_id.as_str(),
        (status, Some(reason)),
        Subject::device(&job.requester).wallet(&wallet_id),
        &[(
            kind.to_string(),
            json!({
                "session_id": job.session_id.as_str(),
                "detail": reason,
                "party": party.map(PartyIndex::get),
            }),
        )],
    )
    .await;
    if let Err(e) = written {
        tracing::error!(session_id = %job.session_id, error = %e, "could not record the end of a key generation");
    }
    KeygenEnd::Failed {
        status,
        reason: reason.to_string(),
        party,
    }
}
