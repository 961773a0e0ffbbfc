//! Helpers shared by the integration tests.
#![allow(dead_code, missing_docs, clippy::unwrap_used, clippy::expect_used)]

pub mod structures;

use std::collections::VecDeque;

use tessera_core::runner::{self, Delivery, InFlight};
use tessera_core::{
    DerivationPath, Envelope, Error, KeyShare, PartyIndex, PublicKey, Session, SignRequest,
    SignSession, Signature, Threshold,
};

pub fn p(i: u8) -> PartyIndex {
    PartyIndex::new(i)
}

pub fn keygen(t: u8, n: u8) -> Vec<KeyShare> {
    runner::keygen(Threshold::new(t, n).unwrap()).unwrap()
}

/// Verifies with libsecp256k1 (the `secp256k1` crate), independently of k256: plain ECDSA on
/// the compact form, and public-key recovery with the recovery id.
pub fn verify_with_libsecp256k1(public_key: &PublicKey, digest: &[u8; 32], sig: &Signature) {
    use secp256k1::ecdsa::{RecoverableSignature, RecoveryId, Signature as LibSig};
    let pk = secp256k1::PublicKey::from_slice(&public_key.to_compressed()).unwrap();
    let msg = secp256k1::Message::from_digest(*digest);
    let compact = LibSig::from_compact(&sig.to_compact()).unwrap();
    secp256k1::SECP256K1
        .verify_ecdsa(msg, &compact, &pk)
        .expect("libsecp256k1 rejects the signature");
    // libsecp256k1 only accepts low-S signatures: normalising must not change ours.
    let mut normalised = compact;
    normalised.normalize_s();
    assert_eq!(normalised, compact, "signature is not low-S");
    let der = LibSig::from_der(&sig.to_der()).unwrap();
    assert_eq!(der, compact);
    let rid = RecoveryId::try_from(i32::from(sig.recovery_id())).unwrap();
    let rec = RecoverableSignature::from_compact(&sig.to_compact(), rid).unwrap();
    assert_eq!(secp256k1::SECP256K1.recover_ecdsa(msg, &rec).unwrap(), pk);
}

/// Every way we check a signature: k256 (ours), the encoded verifier, libsecp256k1.
pub fn verify_everywhere(public_key: &PublicKey, digest: &[u8; 32], sig: &Signature) {
    public_key.verify(digest, sig).unwrap();
    tessera_core::ecdsa::verify_encoded(public_key, digest, &sig.to_rsv()).unwrap();
    assert_eq!(sig.recover(digest).unwrap(), *public_key);
    verify_with_libsecp256k1(public_key, digest, sig);
}

pub fn sign_request(shares: &[&KeyShare], digest: [u8; 32]) -> SignRequest {
    SignRequest {
        nonce: tessera_core::protocols::fresh_nonce(),
        signers: shares.iter().map(|s| s.party()).collect(),
        digest,
        path: DerivationPath::root(),
    }
}

pub fn sign_sessions(shares: &[&KeyShare], digest: [u8; 32]) -> Vec<SignSession> {
    let request = sign_request(shares, digest);
    shares
        .iter()
        .map(|s| SignSession::new(s, &request).unwrap())
        .collect()
}

/// Runs `sessions`, letting `edit` change the one envelope from `from` to `to` of `round` (decoded,
/// then re-encoded), and returns the error the run ends with.
pub fn run_tampered<S: Session>(
    sessions: Vec<S>,
    from: u8,
    to: u8,
    round: u8,
    mut edit: impl FnMut(&mut Envelope),
) -> Error {
    let mut done = false;
    let result = runner::run_with(
        sessions,
        |m: InFlight<'_>| {
            if !done && m.sender == p(from) && m.recipient == p(to) && m.round == round {
                done = true;
                let mut e = Envelope::from_bytes(m.sender, m.bytes).unwrap();
                edit(&mut e);
                *m.bytes = e.to_bytes();
            }
            Delivery::Deliver
        },
        |_, _| {},
    );
    assert!(done, "no message {from}->{to} in round {round}");
    match result {
        Ok(_) => panic!("the tampered run succeeded"),
        Err(e) => e,
    }
}

/// A hand-driven network, for replays and interleavings the runner does not do.
pub struct Net<S: Session> {
    pub sessions: Vec<S>,
    pub queue: VecDeque<Envelope>,
}

impl<S: Session> Net<S> {
    pub fn start(mut sessions: Vec<S>) -> Self {
        let mut queue = VecDeque::new();
        for s in &mut sessions {
            queue.extend(s.start().unwrap());
        }
        Net { sessions, queue }
    }

    pub fn session(&mut self, party: u8) -> &mut S {
        self.sessions
            .iter_mut()
            .find(|s| s.party() == p(party))
            .unwrap()
    }

    /// Delivers `e` as coming from `sender`, queueing what the recipient sends back.
    pub fn deliver_as(&mut self, sender: u8, to: u8, e: &Envelope) -> Result<(), Error> {
        let out = self.session(to).receive_bytes(p(sender), &e.to_bytes())?;
        self.queue.extend(out);
        Ok(())
    }

    /// Takes the first queued envelope matching the filter.
    pub fn take(&mut self, from: u8, to: u8, round: u8) -> Envelope {
        let i = self
            .queue
            .iter()
            .position(|e| e.from == p(from) && e.to == p(to) && e.round == round)
            .unwrap_or_else(|| panic!("no queued message {from}->{to} round {round}"));
        self.queue.remove(i).unwrap()
    }

    /// Delivers everything queued until the queue is empty.
    pub fn drain(&mut self) -> Result<(), Error> {
        while let Some(e) = self.queue.pop_front() {
            let (from, to) = (e.from.get(), e.to.get());
            self.deliver_as(from, to, &e)?;
        }
        Ok(())
    }
}
