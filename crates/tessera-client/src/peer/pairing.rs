//! Authenticating a channel: identity keys bound to the handshake, and the 6-digit pairing code.
//!
//! After the Noise handshake each side sends `Hello { name, identity, signature }`, the Ed25519
//! signature of `"tessera/peer-hello/v1" || role || handshake hash || name` by its identity key:
//! a relay of someone else's hello fails (it signs another handshake hash).
//!
//! A peer that is already paired (its identity key is in `peers.json`) needs nothing more. A
//! device name that was paired with a *different* key is refused loudly, like an SSH host-key
//! change. A new peer is paired by a short authentication string, as in the MANA-IV /
//! "SAS-MCA" construction of Vaudenay ("Secure Communications over Insecure Channels Based on
//! Short Authenticated Strings", CRYPTO 2005) and Bluetooth's numeric comparison:
//!
//! 1. the initiator commits to a random `n_i`: `c = SHA-256("tessera/peer-commit/v1" || h || n_i)`;
//! 2. the responder, having seen only `c`, sends a random `n_r`;
//! 3. the initiator opens `n_i`; the responder checks it against `c`;
//! 4. both show `code = SHA-256("tessera/peer-code/v1" || h || n_i || n_r)` reduced to 6 digits.
//!
//! A man in the middle runs two handshakes with different hashes `h1`, `h2`. On each side it
//! must fix its own nonce before it learns the honest party's (hidden by the commitment, or
//! not yet sent), so the two codes agree with probability 10^-6 per attempt and it cannot
//! search for a match. Both users confirm; one refusal aborts both, and nothing is stored.
//! A device that accepts connections pauses new pairings after a few failures
//! ([`PairingLimit`]), so that attempts cannot pile up.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tessera_store::DeviceIdentity;
use tessera_store::keystore::verify_identity_signature;

use super::PeerError;
use super::channel::Channel;
use super::known::{KnownPeers, Trust};
use super::wire::{Message, check_name};

/// This device as it introduces itself.
#[derive(Clone)]
pub struct LocalDevice {
    /// Its name.
    pub name: String,
    /// Its identity key (signs the handshake).
    pub identity: Arc<DeviceIdentity>,
}

/// The peer at the other end of an authenticated channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthenticatedPeer {
    /// Its name.
    pub name: String,
    /// Its Ed25519 identity key.
    pub identity: [u8; 32],
    /// Whether it was paired on this connection (the code was compared).
    pub newly_paired: bool,
}

/// What the user is asked to confirm.
#[derive(Clone, Debug)]
pub struct CodePrompt {
    /// The 6-digit code, e.g. `"042917"`.
    pub code: String,
    /// The peer's name.
    pub peer_name: String,
    /// The first 8 bytes of the peer's identity key, hex.
    pub peer_fingerprint: String,
}

impl CodePrompt {
    /// The code as shown: `042 917`.
    #[must_use]
    pub fn display(&self) -> String {
        format!("{} {}", &self.code[..3], &self.code[3..])
    }
}

/// Sends a message.
///
/// # Errors
/// As [`Channel::send`].
pub async fn send(channel: &mut Channel, message: &Message) -> Result<(), PeerError> {
    channel.send(&message.to_bytes()).await
}

/// Receives a message; a `Refuse` becomes [`PeerError::Refused`].
///
/// # Errors
/// As [`Channel::recv`], [`Message::from_bytes`].
pub async fn recv(channel: &mut Channel) -> Result<Message, PeerError> {
    match Message::from_bytes(&channel.recv().await?)? {
        Message::Refuse { reason } => Err(PeerError::Refused(reason)),
        m => Ok(m),
    }
}

fn hello_transcript(initiator: bool, hash: &[u8; 32], name: &str) -> Vec<u8> {
    let mut t = b"tessera/peer-hello/v1".to_vec();
    t.push(u8::from(!initiator));
    t.extend_from_slice(hash);
    t.extend_from_slice(&(name.len() as u32).to_be_bytes());
    t.extend_from_slice(name.as_bytes());
    t
}

fn commitment(hash: &[u8; 32], nonce: &[u8; 32]) -> [u8; 32] {
    Sha256::new()
        .chain_update(b"tessera/peer-commit/v1")
        .chain_update(hash)
        .chain_update(nonce)
        .finalize()
        .into()
}

/// The 6-digit code of a handshake hash and both nonces.
#[must_use]
pub fn pairing_code(hash: &[u8; 32], n_i: &[u8; 32], n_r: &[u8; 32]) -> String {
    let d = Sha256::new()
        .chain_update(b"tessera/peer-code/v1")
        .chain_update(hash)
        .chain_update(n_i)
        .chain_update(n_r)
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    // 2^64 / 10^6 leaves a bias below 10^-13.
    format!("{:06}", u64::from_be_bytes(first) % 1_000_000)
}

/// Authenticates the peer on `channel`: exchanges signed hellos, refuses a changed identity,
/// and pairs a new peer by the code, which `confirm` shows to the user and returns whether they
/// confirmed it. A newly paired peer is added to `known` only when both users confirmed.
///
/// # Errors
/// [`PeerError::IdentityChanged`], [`PeerError::Refused`] (the peer or our user refused),
/// [`PeerError::Protocol`] for a bad hello or commitment; channel errors.
pub async fn authenticate(
    channel: &mut Channel,
    me: &LocalDevice,
    known: &mut KnownPeers,
    confirm: &mut (dyn FnMut(&CodePrompt) -> bool + Send),
) -> Result<AuthenticatedPeer, PeerError> {
    authenticate_limited(channel, me, known, confirm, None).await
}

/// [`authenticate`] for a device that accepts connections: with `limit`, a new peer is not
/// paired while the limit pauses pairing (it is refused before any code is shown; paired peers
/// are still served), and every failed pairing counts towards the pause.
///
/// # Errors
/// As [`authenticate`]; [`PeerError::PairingPaused`] while pairing is paused.
pub async fn authenticate_limited(
    channel: &mut Channel,
    me: &LocalDevice,
    known: &mut KnownPeers,
    confirm: &mut (dyn FnMut(&CodePrompt) -> bool + Send),
    limit: Option<&PairingLimit>,
) -> Result<AuthenticatedPeer, PeerError> {
    let hash = *channel.handshake_hash();
    let initiator = channel.is_initiator();
    let signature = me
        .identity
        .sign(&hello_transcript(initiator, &hash, &me.name));
    send(
        channel,
        &Message::Hello {
            name: me.name.clone(),
            identity: me.identity.public_key(),
            signature: signature.to_vec(),
        },
    )
    .await?;
    let Message::Hello {
        name,
        identity,
        signature,
    } = recv(channel).await?
    else {
        return Err(PeerError::Protocol("expected a hello".into()));
    };
    check_name(&name)?;
    let signature: [u8; 64] = signature
        .try_into()
        .map_err(|_| PeerError::Protocol("hello signature length".into()))?;
    if identity == me.identity.public_key() {
        return Err(PeerError::Protocol(
            "the peer presents this device's own identity key".into(),
        ));
    }
    verify_identity_signature(
        &identity,
        &hello_transcript(!initiator, &hash, &name),
        &signature,
    )
    .map_err(|_| {
        PeerError::Protocol(format!(
            "{name:?} did not sign this connection with its identity key (a relayed or forged hello)"
        ))
    })?;

    let needs_code = match known.trust(&name, &identity) {
        Trust::Known => false,
        Trust::Unknown => true,
        Trust::Changed { paired } => {
            let _ = send(
                channel,
                &Message::Refuse {
                    reason: "your identity key is not the one this device paired with".into(),
                },
            )
            .await;
            return Err(PeerError::IdentityChanged {
                name,
                paired,
                presented: hex::encode(identity),
            });
        }
    };
    send(channel, &Message::Trust { needs_code }).await?;
    let Message::Trust {
        needs_code: peer_needs_code,
    } = recv(channel).await?
    else {
        return Err(PeerError::Protocol("expected the peer's trust".into()));
    };
    let peer = AuthenticatedPeer {
        name,
        identity,
        newly_paired: needs_code || peer_needs_code,
    };
    if !peer.newly_paired {
        return Ok(peer);
    }
    if let Some(limit) = limit
        && let Err(wait) = limit.check()
    {
        let _ = send(
            channel,
            &Message::Refuse {
                reason: format!(
                    "{:?} accepts no new pairing for {} s after too many failed attempts",
                    me.name,
                    wait.as_secs().max(1)
                ),
            },
        )
        .await;
        return Err(PeerError::PairingPaused {
            peer: peer.name,
            seconds: wait.as_secs().max(1),
        });
    }
    let paired = compare_codes(channel, &hash, initiator, peer, confirm).await;
    match (paired, limit) {
        (Ok(peer), _) => {
            known.add(&peer.name, &peer.identity)?;
            Ok(peer)
        }
        (Err(e), Some(limit)) => {
            limit.failed();
            Err(e)
        }
        (Err(e), None) => Err(e),
    }
}

/// The code comparison of a new peer: commit, nonces, reveal, both users confirm.
async fn compare_codes(
    channel: &mut Channel,
    hash: &[u8; 32],
    initiator: bool,
    peer: AuthenticatedPeer,
    confirm: &mut (dyn FnMut(&CodePrompt) -> bool + Send),
) -> Result<AuthenticatedPeer, PeerError> {
    let hash = *hash;
    let identity = peer.identity;
    // Commit-then-reveal: the initiator commits first, the responder answers with its nonce.
    let ours = tessera_core::protocols::fresh_nonce();
    let (n_i, n_r) = if initiator {
        send(channel, &Message::Commit(commitment(&hash, &ours))).await?;
        let Message::Nonce(n_r) = recv(channel).await? else {
            return Err(PeerError::Protocol("expected the pairing nonce".into()));
        };
        send(channel, &Message::Reveal(ours)).await?;
        (ours, n_r)
    } else {
        let Message::Commit(c) = recv(channel).await? else {
            return Err(PeerError::Protocol(
                "expected the pairing commitment".into(),
            ));
        };
        send(channel, &Message::Nonce(ours)).await?;
        let Message::Reveal(n_i) = recv(channel).await? else {
            return Err(PeerError::Protocol("expected the opened commitment".into()));
        };
        if commitment(&hash, &n_i) != c {
            return Err(PeerError::Protocol(
                "the peer's pairing commitment does not open: pairing aborted".into(),
            ));
        }
        (n_i, ours)
    };
    let prompt = CodePrompt {
        code: pairing_code(&hash, &n_i, &n_r),
        peer_name: peer.name.clone(),
        peer_fingerprint: hex::encode(&identity[..8]),
    };
    let accepted = confirm(&prompt);
    send(channel, &Message::Confirm { accepted }).await?;
    if !accepted {
        return Err(PeerError::Refused(
            "the pairing code was not confirmed on this device".into(),
        ));
    }
    let Message::Confirm {
        accepted: peer_accepted,
    } = recv(channel).await?
    else {
        return Err(PeerError::Protocol(
            "expected the peer's confirmation".into(),
        ));
    };
    if !peer_accepted {
        return Err(PeerError::Refused(format!(
            "{} did not confirm the pairing code",
            peer.name
        )));
    }
    Ok(peer)
}

/// Failed pairings tolerated in [`PAIRING_FAILURE_WINDOW`] before pairing pauses.
pub const MAX_PAIRING_FAILURES: usize = 3;
/// The window in which failures count.
pub const PAIRING_FAILURE_WINDOW: Duration = Duration::from_secs(10 * 60);
/// How long pairing pauses after too many failures.
pub const PAIRING_PAUSE: Duration = Duration::from_secs(10 * 60);

/// Limits failed pairing attempts on a device that accepts connections: after
/// [`MAX_PAIRING_FAILURES`] failures within [`PAIRING_FAILURE_WINDOW`], new pairings are refused
/// for [`PAIRING_PAUSE`]. Each attempt gives a man in the middle a one-in-a-million chance (a
/// code that happens to match); this keeps repeated attempts from adding up, and a user who is
/// shown code after code from a stranger gets a rest.
#[derive(Default)]
pub struct PairingLimit {
    state: Mutex<LimitState>,
}

#[derive(Default)]
struct LimitState {
    failures: VecDeque<Instant>,
    paused_until: Option<Instant>,
}

impl PairingLimit {
    /// `Err(time left)` while pairing is paused.
    ///
    /// # Errors
    /// The time until pairing resumes.
    pub fn check(&self) -> Result<(), Duration> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match state.paused_until {
            Some(until) => match until.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Err(left),
                _ => Ok(()),
            },
            None => Ok(()),
        }
    }

    /// Counts a failed pairing; returns how long pairing now pauses when this failure starts
    /// a pause.
    pub fn failed(&self) -> Option<Duration> {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        while state
            .failures
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > PAIRING_FAILURE_WINDOW)
        {
            state.failures.pop_front();
        }
        state.failures.push_back(now);
        if state.failures.len() >= MAX_PAIRING_FAILURES {
            state.failures.clear();
            state.paused_until = Some(now + PAIRING_PAUSE);
            return Some(PAIRING_PAUSE);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairing_pauses_after_the_third_failure_and_only_then() {
        let limit = PairingLimit::default();
        assert!(limit.check().is_ok());
        assert_eq!(limit.failed(), None);
        assert_eq!(limit.failed(), None);
        assert!(limit.check().is_ok());
        assert_eq!(limit.failed(), Some(PAIRING_PAUSE));
        let left = limit.check().expect_err("paused");
        assert!(left <= PAIRING_PAUSE && left > PAIRING_PAUSE / 2);
    }
}
