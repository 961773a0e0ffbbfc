//! Runs all parties of a protocol in one process: for tests, benches and `tessera demo`.
//!
//! Messages are encoded to bytes and decoded by the recipient exactly as over a network, so the
//! envelope checks and size accounting are the real ones; each party runs the one driver
//! ([`crate::driver::drive`]) over an in-memory link.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::derivation::DerivationPath;
use crate::driver::{Control, DriveError, Link, drive};
use crate::ecdsa::Signature;
use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::protocols::{
    KeygenSession, RefreshSession, ReshareRequest, ReshareSession, SignRequest, SignSession,
    StructureKeygenSession, fresh_nonce,
};
use crate::session::Session;
use crate::share::KeyShare;
use crate::structure::{Ban, Isolation, IsolationError, Outcome, WalletStructure};
use crate::types::{PartyIndex, Threshold, WalletId};

/// What a run sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Encoded bytes each party sent, envelopes included.
    pub bytes_sent: BTreeMap<PartyIndex, usize>,
    /// Envelopes delivered.
    pub messages: usize,
    /// The largest envelope, in bytes.
    pub largest_message: usize,
}

impl RunStats {
    /// The most any one party sent.
    #[must_use]
    pub fn max_bytes_per_party(&self) -> usize {
        self.bytes_sent.values().copied().max().unwrap_or(0)
    }
}

/// What the intercept hook decides for one message in flight.
pub enum Delivery {
    /// Deliver the (possibly modified) bytes.
    Deliver,
    /// Drop the message.
    Drop,
}

/// A message in flight, as the intercept hook sees it.
pub struct InFlight<'a> {
    /// The sending party (the transport-authenticated sender; the hook may forge the envelope's
    /// own `from` inside `bytes`, not this).
    pub sender: PartyIndex,
    /// The recipient the transport delivers to.
    pub recipient: PartyIndex,
    /// The envelope's round.
    pub round: u8,
    /// The encoded envelope.
    pub bytes: &'a mut Vec<u8>,
}

/// Drives `sessions` (one per party, any order) to completion.
///
/// Each party runs [`crate::driver::drive`] over an in-memory [`Link`]; one thread polls them
/// all (their futures are always ready or waiting for a message, so no runtime is needed).
/// `intercept` sees every message before delivery and may change or drop it (tests use it to
/// play a malicious network or party); `on_round(r, total)` is called each time every party
/// has reached round `r`. The first error any party returns ends the run.
///
/// # Errors
/// The first error a session returns, or [`Error::Aborted`] if the run stalls.
pub fn run_with<S: Session>(
    mut sessions: Vec<S>,
    intercept: impl FnMut(InFlight<'_>) -> Delivery,
    mut on_round: impl FnMut(u8, u8),
) -> Result<(Vec<S::Output>, RunStats)> {
    let parties: Vec<PartyIndex> = sessions.iter().map(Session::party).collect();
    let total = sessions.first().map_or(0, Session::total_rounds);
    let network = RefCell::new(Network {
        queues: parties.iter().map(|&p| (p, VecDeque::new())).collect(),
        intercept: Box::new(intercept),
        stats: RunStats::default(),
        moved: 0,
    });
    let completed: RefCell<Vec<u8>> = RefCell::new(vec![0; sessions.len()]);
    let mut links: Vec<MemoryLink<'_, '_>> = parties
        .iter()
        .map(|&me| MemoryLink {
            me,
            network: &network,
        })
        .collect();
    let mut runs: Vec<_> = sessions
        .iter_mut()
        .zip(links.iter_mut())
        .enumerate()
        .map(|(i, (session, link))| {
            let completed = &completed;
            Box::pin(drive(session, link, None, move |r, _| {
                completed.borrow_mut()[i] = r;
                Ok(())
            }))
        })
        .collect();
    let mut outputs: Vec<Option<S::Output>> = (0..runs.len()).map(|_| None).collect();
    let mut context = Context::from_waker(Waker::noop());
    let mut reported = 0;
    loop {
        let before = network.borrow().moved;
        let mut finished_now = false;
        for (run, output) in runs.iter_mut().zip(outputs.iter_mut()) {
            if output.is_some() {
                continue;
            }
            if let Poll::Ready(result) = run.as_mut().poll(&mut context) {
                *output = Some(result.map_err(into_error)?);
                finished_now = true;
            }
        }
        let slowest = completed.borrow().iter().copied().min().unwrap_or(0);
        while reported < slowest {
            reported += 1;
            on_round(reported, total);
        }
        if outputs.iter().all(Option::is_some) {
            break;
        }
        if !finished_now && network.borrow().moved == before {
            let stuck = outputs
                .iter()
                .zip(&parties)
                .find(|(o, _)| o.is_none())
                .map_or(PartyIndex::new(0), |(_, p)| *p);
            return Err(Error::Aborted(format!(
                "party {stuck} did not finish: messages were dropped or never sent"
            )));
        }
    }
    drop(runs);
    let stats = std::mem::take(&mut network.borrow_mut().stats);
    Ok((outputs.into_iter().flatten().collect(), stats))
}

/// Every party's inbox, and what went through.
struct Network<'a> {
    queues: BTreeMap<PartyIndex, VecDeque<(PartyIndex, Vec<u8>)>>,
    intercept: Box<dyn FnMut(InFlight<'_>) -> Delivery + 'a>,
    stats: RunStats,
    /// Messages sent or taken so far: a poll of every party that moves none is a stall.
    moved: usize,
}

/// One party's end of the in-memory network.
struct MemoryLink<'n, 'i> {
    me: PartyIndex,
    network: &'n RefCell<Network<'i>>,
}

impl Link for MemoryLink<'_, '_> {
    type Error = Error;

    async fn send(&mut self, envelope: &Envelope) -> Result<()> {
        let mut bytes = envelope.to_bytes();
        let mut net = self.network.borrow_mut();
        net.moved += 1;
        let round = envelope.round;
        if let Delivery::Drop = (net.intercept)(InFlight {
            sender: self.me,
            recipient: envelope.to,
            round,
            bytes: &mut bytes,
        }) {
            return Ok(());
        }
        net.stats.messages += 1;
        *net.stats.bytes_sent.entry(self.me).or_default() += bytes.len();
        net.stats.largest_message = net.stats.largest_message.max(bytes.len());
        let queue = net.queues.get_mut(&envelope.to).ok_or_else(|| {
            Error::InvalidParameters(format!("no session for party {}", envelope.to))
        })?;
        queue.push_back((self.me, bytes));
        Ok(())
    }

    fn recv(
        &mut self,
        _idle: Option<Duration>,
    ) -> impl Future<Output = Result<Option<(PartyIndex, Vec<u8>)>>> {
        std::future::poll_fn(move |_| {
            let mut net = self.network.borrow_mut();
            match net.queues.get_mut(&self.me).and_then(VecDeque::pop_front) {
                Some(message) => {
                    net.moved += 1;
                    Poll::Ready(Ok(Some(message)))
                }
                None => Poll::Pending,
            }
        })
    }

    async fn send_control(&mut self, _control: Control) -> Result<()> {
        Err(Error::InvalidParameters(
            "the in-process runner has no two-phase finish".into(),
        ))
    }

    async fn recv_control(
        &mut self,
        _from: PartyIndex,
        _idle: Option<Duration>,
    ) -> Result<Option<Control>> {
        Err(Error::InvalidParameters(
            "the in-process runner has no two-phase finish".into(),
        ))
    }
}

/// The session's own error, as the runner has always returned it.
fn into_error(e: DriveError<Error>) -> Error {
    match e {
        DriveError::Link(e) | DriveError::Stopped(e) => e,
        DriveError::Blamed { party, reason, .. } => Error::PartyMisbehaved { party, reason },
        DriveError::Rejected { error, .. } => error,
        DriveError::Expired => Error::Aborted("no message".into()),
        DriveError::Finish(m) => Error::Aborted(m),
    }
}

/// [`run_with`] without interception or progress.
///
/// # Errors
/// As [`run_with`].
pub fn run<S: Session>(sessions: Vec<S>) -> Result<(Vec<S::Output>, RunStats)> {
    run_with(sessions, |_| Delivery::Deliver, |_, _| {})
}

/// Generates a new `threshold` wallet: one share per party, in party order.
///
/// # Errors
/// As [`run_with`], or [`Error::InvalidParameters`] for a bad threshold.
pub fn keygen(threshold: Threshold) -> Result<Vec<KeyShare>> {
    let wallet = WalletId::random();
    let nonce = fresh_nonce();
    let sessions = threshold
        .parties()
        .map(|p| KeygenSession::new(wallet, threshold, p, &nonce))
        .collect::<Result<Vec<_>>>()?;
    let (mut shares, _) = run(sessions)?;
    shares.sort_by_key(KeyShare::party);
    Ok(shares)
}

/// Generates a new wallet under `structure`: one share per party, in party order.
///
/// # Errors
/// As [`run_with`].
pub fn keygen_structure(structure: &WalletStructure) -> Result<Vec<KeyShare>> {
    let wallet = WalletId::random();
    let nonce = fresh_nonce();
    let sessions = structure
        .parties()
        .map(|p| StructureKeygenSession::new(wallet, structure, p, &nonce))
        .collect::<Result<Vec<_>>>()?;
    let (mut shares, _) = run(sessions)?;
    shares.sort_by_key(KeyShare::party);
    Ok(shares)
}

/// Signs `digest` with the given shares (exactly `t` of one t-of-n wallet, or a quorum of a
/// structure wallet) under the child key at `path`.
///
/// # Errors
/// As [`SignSession::new`] and [`run_with`].
pub fn sign(
    shares: &[&KeyShare],
    digest: [u8; 32],
    path: &DerivationPath,
) -> Result<(Signature, RunStats)> {
    sign_with(shares, digest, path, |_| Delivery::Deliver)
}

/// [`sign`] with every message passing `intercept` first (see [`run_with`]): tests use it to
/// play a party that corrupts its messages.
///
/// # Errors
/// As [`sign`].
pub fn sign_with(
    shares: &[&KeyShare],
    digest: [u8; 32],
    path: &DerivationPath,
    intercept: impl FnMut(InFlight<'_>) -> Delivery,
) -> Result<(Signature, RunStats)> {
    let request = SignRequest {
        nonce: fresh_nonce(),
        signers: shares.iter().map(|s| s.party()).collect(),
        digest,
        path: path.clone(),
    };
    let sessions = shares
        .iter()
        .map(|s| SignSession::new(s, &request))
        .collect::<Result<Vec<_>>>()?;
    let (signatures, stats) = run_with(sessions, intercept, |_, _| {})?;
    let first = signatures
        .first()
        .copied()
        .ok_or_else(|| Error::Aborted("no signer".into()))?;
    if signatures.iter().any(|s| *s != first) {
        return Err(Error::Aborted(
            "signers produced different signatures".into(),
        ));
    }
    Ok((first, stats))
}

/// One signing run of [`sign_robust`].
#[derive(Clone, Debug)]
pub struct Attempt {
    /// The quorum that ran.
    pub quorum: BTreeSet<PartyIndex>,
    /// How it ended, as reported to the [`Isolation`].
    pub outcome: Outcome,
    /// The run's signature, or the error it ended with.
    pub result: Result<Signature>,
    /// The party banned after this run, if any.
    pub ban: Option<Ban>,
}

/// What [`sign_robust`] did: the requester is told all of it.
#[derive(Clone, Debug)]
pub struct RobustSigning {
    /// The first signature produced (runs after it, made to pin a culprit, sign the same
    /// digest again), or why none could be.
    pub signature: std::result::Result<Signature, IsolationError>,
    /// Every run, in order.
    pub attempts: Vec<Attempt>,
    /// The parties banned, in order: persist them.
    pub bans: Vec<Ban>,
    /// Suspects of a failure that named nobody, left when the request ended without banning one.
    pub unresolved: Option<BTreeSet<PartyIndex>>,
}

/// Signs `digest` under the child key at `path` robustly: runs the quorums `isolation` hands
/// out with their members' `shares` (any superset of the online parties' shares), reports each
/// run's [`Outcome`], and goes on until the request is signed and nothing is left to learn, or
/// no quorum can sign. `intercept` sees every message of every run (tests use it to play a
/// misbehaving party). See [`crate::structure::isolation`] for the rules and the bound on runs.
///
/// # Errors
/// [`Error::InvalidParameters`] when the shares are not of one wallet at one epoch under the
/// isolation's structure, or a quorum member's share is not given; [`SignSession::new`]'s
/// errors. A request that cannot be signed is not an error: [`RobustSigning::signature`] says
/// why.
pub fn sign_robust(
    mut isolation: Isolation,
    shares: &[&KeyShare],
    digest: [u8; 32],
    path: &DerivationPath,
    mut intercept: impl FnMut(InFlight<'_>) -> Delivery,
) -> Result<RobustSigning> {
    // Shares of another wallet would only make runs fail, and the isolation would blame parties
    // for it: refuse them here.
    if let Some(first) = shares.first() {
        let wallet = first.wallet_public();
        if wallet.structure != *isolation.structure()
            || shares.iter().any(|s| s.wallet_public() != wallet)
        {
            return Err(Error::InvalidParameters(
                "the shares are not of one wallet at one epoch under the isolation's structure"
                    .into(),
            ));
        }
    }
    let mut attempts: Vec<Attempt> = Vec::new();
    // The machine ends by itself (its module documentation bounds the runs); this only stops a
    // bug from looping a caller forever.
    let cap = (usize::from(crate::types::MAX_PARTIES) + 1).pow(2);
    let end = loop {
        let quorum = match isolation.next_quorum() {
            Ok(Some(quorum)) => quorum,
            Ok(None) => break None,
            Err(e) => break Some(e),
        };
        if attempts.len() >= cap {
            return Err(Error::Aborted("the isolation did not end".into()));
        }
        let members = quorum
            .iter()
            .map(|&p| {
                shares
                    .iter()
                    .copied()
                    .find(|s| s.party() == p)
                    .ok_or_else(|| {
                        Error::InvalidParameters(format!("no share of party {p} was given"))
                    })
            })
            .collect::<Result<Vec<&KeyShare>>>()?;
        let result = sign_with(&members, digest, path, &mut intercept).map(|(sig, _)| sig);
        if let Err(e @ (Error::Quorum(_) | Error::InvalidParameters(_))) = &result {
            // Refused before any message: the caller's inputs, not a party, are wrong.
            return Err(e.clone());
        }
        let outcome = Outcome::of(&result);
        let ban = isolation
            .report(&quorum, outcome)
            .map_err(|e| Error::InvalidParameters(e.to_string()))?;
        attempts.push(Attempt {
            quorum,
            outcome,
            result,
            ban,
        });
    };
    let first = attempts
        .iter()
        .find_map(|a| a.result.as_ref().ok().copied());
    let signature = match (first, end) {
        (Some(signature), _) => Ok(signature),
        (None, Some(e)) => Err(e),
        (None, None) => Err(IsolationError::Inconclusive),
    };
    Ok(RobustSigning {
        signature,
        attempts,
        bans: isolation.bans().to_vec(),
        unresolved: isolation.unresolved().cloned(),
    })
}

/// Refreshes all `n` shares of a wallet.
///
/// # Errors
/// As [`run_with`].
pub fn refresh(shares: &[KeyShare]) -> Result<Vec<KeyShare>> {
    let nonce = fresh_nonce();
    let sessions = shares
        .iter()
        .map(|s| RefreshSession::new(s, &nonce))
        .collect::<Result<Vec<_>>>()?;
    let (mut fresh, _) = run(sessions)?;
    fresh.sort_by_key(KeyShare::party);
    Ok(fresh)
}

/// The sessions of a resharing of the wallet of `old_quorum` (the shares of a minimal
/// authorised quorum of its structure, at one epoch, in any order) to `new_structure`, with
/// `nonce`: one per dealer, and one joining session for every party of the new structure that
/// is not a dealer (it is given the wallet's public facts from the first share).
///
/// # Errors
/// [`Error::InvalidParameters`] for no shares or shares of different wallets or epochs; as
/// [`ReshareSession::new`] (an unauthorised quorum is refused here, before any message).
pub fn reshare_sessions(
    old_quorum: &[&KeyShare],
    new_structure: &WalletStructure,
    nonce: &[u8; 32],
) -> Result<Vec<ReshareSession>> {
    let first = old_quorum
        .first()
        .ok_or_else(|| Error::InvalidParameters("no shares to reshare".into()))?;
    let wallet = first.wallet_public();
    if old_quorum.iter().any(|s| s.wallet_public() != wallet) {
        return Err(Error::InvalidParameters(
            "the shares are not of one wallet at one epoch".into(),
        ));
    }
    let request = ReshareRequest {
        nonce: *nonce,
        quorum: old_quorum.iter().map(|s| s.party()).collect(),
        new_structure: new_structure.clone(),
    };
    let dealers: Vec<&str> = old_quorum
        .iter()
        .filter_map(|s| wallet.structure.label(s.party()))
        .collect();
    let mut sessions = old_quorum
        .iter()
        .map(|s| ReshareSession::new(s, &request))
        .collect::<Result<Vec<_>>>()?;
    for label in new_structure.labels() {
        if !dealers.contains(&label.as_str()) {
            sessions.push(ReshareSession::joining(&wallet, label, &request)?);
        }
    }
    Ok(sessions)
}

/// Reshares the wallet of `old_quorum` (the shares of a minimal authorised quorum of its
/// structure, at one epoch) to `new_structure`: returns the new shares (epoch + 1, share format
/// 2) in the new structure's party order.
///
/// # Errors
/// As [`reshare_sessions`] and [`run_with`].
pub fn reshare(old_quorum: &[&KeyShare], new_structure: &WalletStructure) -> Result<Vec<KeyShare>> {
    let sessions = reshare_sessions(old_quorum, new_structure, &fresh_nonce())?;
    let (outputs, _) = run(sessions)?;
    let mut shares: Vec<KeyShare> = outputs.into_iter().flatten().collect();
    shares.sort_by_key(KeyShare::party);
    Ok(shares)
}
