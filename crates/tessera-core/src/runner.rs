//! Runs all parties of a protocol in one process: for tests, benches and `tessera demo`.
//!
//! Messages are encoded to bytes and decoded by the recipient exactly as over a network, so the
//! envelope checks and size accounting are the real ones.

use std::collections::{BTreeMap, VecDeque};

use crate::derivation::DerivationPath;
use crate::ecdsa::Signature;
use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::protocols::{KeygenSession, RefreshSession, SignRequest, SignSession, fresh_nonce};
use crate::session::Session;
use crate::share::KeyShare;
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
/// `intercept` sees every message before delivery and may change or drop it (tests use it to play
/// a malicious network or party); `on_round(r, total)` is called each time every party has reached
/// round `r`. The first error any party returns ends the run.
///
/// # Errors
/// The first error a session returns, or [`Error::Aborted`] if the run stalls.
pub fn run_with<S: Session>(
    mut sessions: Vec<S>,
    mut intercept: impl FnMut(InFlight<'_>) -> Delivery,
    mut on_round: impl FnMut(u8, u8),
) -> Result<(Vec<S::Output>, RunStats)> {
    let mut stats = RunStats::default();
    let index: BTreeMap<PartyIndex, usize> = sessions
        .iter()
        .enumerate()
        .map(|(i, s)| (s.party(), i))
        .collect();
    let mut queue: VecDeque<Envelope> = VecDeque::new();
    for s in &mut sessions {
        queue.extend(s.start()?);
    }
    let total = sessions.first().map_or(0, Session::total_rounds);
    let mut reported = 0;
    while let Some(envelope) = queue.pop_front() {
        let sender = envelope.from;
        let recipient = envelope.to;
        let mut bytes = envelope.to_bytes();
        drop(envelope);
        if let Delivery::Drop = intercept(InFlight {
            sender,
            recipient,
            round: peek_round(&bytes),
            bytes: &mut bytes,
        }) {
            continue;
        }
        *stats.bytes_sent.entry(sender).or_default() += bytes.len();
        stats.messages += 1;
        stats.largest_message = stats.largest_message.max(bytes.len());
        let Some(&i) = index.get(&recipient) else {
            return Err(Error::InvalidParameters(format!(
                "no session for party {recipient}"
            )));
        };
        queue.extend(sessions[i].receive_bytes(sender, &bytes)?);
        let slowest = sessions.iter().map(Session::round).min().unwrap_or(0);
        let all_done = sessions.iter().all(Session::is_finished);
        let level = if all_done {
            total
        } else {
            slowest.saturating_sub(1)
        };
        while reported < level {
            reported += 1;
            on_round(reported, total);
        }
    }
    let mut outputs = Vec::with_capacity(sessions.len());
    for s in &mut sessions {
        match s.take_output() {
            Some(o) => outputs.push(o),
            None => {
                return Err(Error::Aborted(format!(
                    "party {} did not finish: messages were dropped or never sent",
                    s.party()
                )));
            }
        }
    }
    Ok((outputs, stats))
}

/// The round byte of an encoded envelope, for the intercept hook (0 if unreadable).
fn peek_round(bytes: &[u8]) -> u8 {
    Envelope::from_bytes(PartyIndex::new(0), bytes).map_or(0, |e| e.round)
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

/// Signs `digest` with the given shares (exactly `t` of one wallet) under the child key at `path`.
///
/// # Errors
/// As [`SignSession::new`] and [`run_with`].
pub fn sign(
    shares: &[&KeyShare],
    digest: [u8; 32],
    path: &DerivationPath,
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
    let (signatures, stats) = run(sessions)?;
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
