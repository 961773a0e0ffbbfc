//! Malicious parties of wallets under access structures, all in one process: each case asserts
//! the exact error and the party it names (keygen dealings, keygen and signing messages, a party
//! claiming another's label).
//!
//! The payloads are rewritten through mirrors of the wire structs (postcard is not
//! self-describing, so a struct with the same fields in the same order decodes the same bytes),
//! as a malicious party re-encoding its own messages would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use common::{Net, p, run_tampered, sign_sessions};
use dkls23::protocols::dkg::{
    BroadcastDerivationPhase3to4, TransmitInitMulPhase3to4, TransmitInitZeroSharePhase3to4,
};
use dkls23::protocols::signing::{Broadcast3to4, TransmitPhase2to3};
use dkls23::utilities::proofs::DLogProof;
use k256::{AffinePoint, ProjectivePoint, Scalar};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tessera_core::protocols::fresh_nonce;
use tessera_core::structure::WalletStructure;
use tessera_core::{
    Error, KeyShare, PartyIndex, Session, SessionId, SignRequest, SignSession,
    StructureKeygenSession, WalletId, runner,
};

type Curve = k256::Secp256k1;

/// `engine/dkls23/structure_setup.rs`'s round-1 payload: the hash commitment to the dealing and
/// the engine's round-1 message (which carries the sub-share).
#[derive(Serialize, Deserialize)]
struct Wire1 {
    dealing_commitment: [u8; 32],
    #[serde(with = "serde_bytes")]
    engine: Vec<u8>,
}

/// Round 2: the public dealing and the engine's round-2 message.
#[derive(Serialize, Deserialize)]
struct Wire2 {
    dealing: PublicDealing,
    #[serde(with = "serde_bytes")]
    engine: Vec<u8>,
}

/// Round 3: the echo of every dealing and the engine's round-3 message.
#[derive(Serialize, Deserialize)]
struct Wire3 {
    echo: [u8; 32],
    #[serde(with = "serde_bytes")]
    engine: Vec<u8>,
}

/// `structure::sharing::PublicDealing`: a point per node (pre-order) and the Feldman
/// commitments of every threshold node.
#[derive(Serialize, Deserialize)]
struct PublicDealing {
    node_points: Vec<AffinePoint>,
    commitments: Vec<Vec<AffinePoint>>,
}

/// `engine/dkls23/setup.rs`'s round 1: the epoch and the fragment (here, the sub-share).
#[derive(Serialize, Deserialize)]
struct EngineRound1 {
    epoch: u64,
    fragment: Scalar,
}

/// `engine/dkls23/setup.rs`'s round 3.
#[derive(Serialize, Deserialize)]
struct EngineRound3 {
    echo: [u8; 32],
    proof: DLogProof<Curve>,
    chain_code: Option<BroadcastDerivationPhase3to4>,
    zero_share: TransmitInitZeroSharePhase3to4,
    multiplication: TransmitInitMulPhase3to4<Curve>,
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> T {
    let (value, rest) = postcard::take_from_bytes(bytes).unwrap();
    assert!(rest.is_empty(), "the mirror struct does not match the wire");
    value
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).unwrap()
}

/// The round-1 hash commitment to a dealing, as every party computes it: a dealer that wants
/// to show a changed dealing recommits to it, so that only the change itself can be caught.
fn dealing_commitment(
    session_id: &SessionId,
    dealer: PartyIndex,
    dealing: &PublicDealing,
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"tessera/structure-dealing/v1");
    h.update(session_id.as_bytes());
    h.update([dealer.get()]);
    h.update(encode(dealing));
    h.finalize().into()
}

fn keygen_sessions(structure: &WalletStructure) -> Vec<StructureKeygenSession> {
    let wallet = WalletId::random();
    let nonce = fresh_nonce();
    structure
        .parties()
        .map(|me| StructureKeygenSession::new(wallet, structure, me, &nonce).unwrap())
        .collect()
}

fn structure(text: &str) -> WalletStructure {
    WalletStructure::parse(text).unwrap()
}

/// Runs a keygen under `text` in which `dealer` shows `victim` its dealing changed by `change`
/// (and recommitted in round 1); every other party sees the genuine one. Returns the first
/// error, which must be the victim's.
fn forged_dealing(
    text: &str,
    dealer: u8,
    victim: u8,
    change: impl FnOnce(&mut PublicDealing),
) -> Error {
    let mut net = Net::start(keygen_sessions(&structure(text)));
    // The dealer's round-1 message to the victim waits until its dealing (round 2) is known.
    let mut held = Some(net.take(dealer, victim, 1));
    let mut change = Some(change);
    while let Some(mut e) = net.queue.pop_front() {
        let (from, to) = (e.from.get(), e.to.get());
        if (from, to, e.round) == (dealer, victim, 2) {
            let mut w2: Wire2 = decode(&e.payload);
            (change.take().unwrap())(&mut w2.dealing);
            let mut r1 = held.take().unwrap();
            let mut w1: Wire1 = decode(&r1.payload);
            w1.dealing_commitment = dealing_commitment(&e.session_id, e.from, &w2.dealing);
            r1.payload = encode(&w1);
            e.payload = encode(&w2);
            // The commitment is only a hash: the victim takes it.
            net.deliver_as(dealer, victim, &r1).unwrap();
        }
        if let Err(err) = net.deliver_as(from, to, &e) {
            assert_eq!(to, victim, "party {to} failed first: {err}");
            return err;
        }
    }
    panic!("the keygen completed despite the forged dealing");
}

fn blamed(err: &Error, party: u8, reason: &str) {
    assert_eq!(
        *err,
        Error::PartyMisbehaved {
            party: p(party),
            reason: reason.into()
        }
    );
}

#[test]
fn commitments_of_the_wrong_degree_name_the_dealer() {
    // Node 2 (pre-order) is threshold(2, cfo, ceo, cto): one commitment, for a degree-1
    // polynomial. The dealer adds a second (its sub-shares would then need 3 officers, not 2) or
    // drops the one it has (a constant: any one officer would hold the node's value).
    let text = "and(server, threshold(2, cfo, ceo, cto))";
    let err = forged_dealing(text, 2, 0, |d| {
        assert_eq!(d.commitments[2].len(), 1);
        d.commitments[2].push(AffinePoint::GENERATOR);
    });
    blamed(
        &err,
        2,
        "its commitments for threshold(2, cfo, ceo, cto) have degree 2, the node needs 1",
    );
    let err = forged_dealing(text, 3, 1, |d| {
        d.commitments[2].clear();
    });
    blamed(
        &err,
        3,
        "its commitments for threshold(2, cfo, ceo, cto) have degree 0, the node needs 1",
    );
    // A commitment on a node that has none (the `and` root).
    let err = forged_dealing(text, 0, 3, |d| {
        d.commitments[0].push(AffinePoint::GENERATOR);
    });
    blamed(
        &err,
        0,
        "its commitments for and(server, threshold(2, cfo, ceo, cto)) have degree 1, the node needs 0",
    );
}

#[test]
fn identity_points_in_a_dealing_name_the_dealer() {
    let text = "and(server, threshold(2, cfo, ceo, cto))";
    // As the dealt secret's point (the wallet key would not depend on this dealer's secret).
    let err = forged_dealing(text, 1, 0, |d| d.node_points[0] = AffinePoint::IDENTITY);
    blamed(
        &err,
        1,
        "its dealing has the identity point at and(server, threshold(2, cfo, ceo, cto))",
    );
    // As a Feldman commitment.
    let err = forged_dealing(text, 3, 2, |d| d.commitments[2][0] = AffinePoint::IDENTITY);
    blamed(
        &err,
        3,
        "its dealing has the identity point at threshold(2, cfo, ceo, cto)",
    );
    // A dealing whose points no longer add up at the root.
    let err = forged_dealing(text, 2, 0, |d| {
        d.node_points[1] =
            (ProjectivePoint::from(d.node_points[1]) + ProjectivePoint::GENERATOR).to_affine();
    });
    blamed(
        &err,
        2,
        "its node points for and(server, threshold(2, cfo, ceo, cto)) do not add up",
    );
}

#[test]
fn a_zero_sub_share_is_refused_naming_the_dealer() {
    let s = structure("and(server, or(phone, laptop))");
    // Party 1's round-1 message to party 0 carries party 0's sub-share as the engine fragment.
    let err = run_tampered(keygen_sessions(&s), 1, 0, 1, |e| {
        let mut w1: Wire1 = decode(&e.payload);
        let mut r1: EngineRound1 = decode(&w1.engine);
        r1.fragment = Scalar::ZERO;
        w1.engine = encode(&r1);
        e.payload = encode(&w1);
    });
    assert_eq!(
        err,
        Error::InvalidMessage {
            party: p(1),
            round: 1,
            reason: "the polynomial fragment is zero".into()
        }
    );
    // A nonzero sub-share that is not the one dealt: named once the dealing is opened.
    let err = run_tampered(keygen_sessions(&s), 2, 1, 1, |e| {
        let mut w1: Wire1 = decode(&e.payload);
        let mut r1: EngineRound1 = decode(&w1.engine);
        r1.fragment += Scalar::ONE;
        w1.engine = encode(&r1);
        e.payload = encode(&w1);
    });
    blamed(
        &err,
        2,
        "the sub-share it sent does not match its commitments",
    );
}

#[test]
fn identity_points_in_keygen_messages_are_refused_naming_the_sender() {
    let s = structure("and(server, or(phone, laptop))");
    let tamper_round3 = |edit: fn(&mut EngineRound3)| {
        run_tampered(keygen_sessions(&s), 2, 0, 3, move |e| {
            let mut w3: Wire3 = decode(&e.payload);
            let mut r3: EngineRound3 = decode(&w3.engine);
            edit(&mut r3);
            w3.engine = encode(&r3);
            e.payload = encode(&w3);
        })
    };
    let err = tamper_round3(|r3| r3.proof.point = AffinePoint::IDENTITY);
    assert_eq!(
        err,
        Error::InvalidMessage {
            party: p(2),
            round: 3,
            reason: "the proof's public share is the point at infinity".into()
        }
    );
    let err = tamper_round3(|r3| r3.multiplication.dlog_proof.point = AffinePoint::IDENTITY);
    assert_eq!(
        err,
        Error::InvalidMessage {
            party: p(2),
            round: 3,
            reason: "the OT set-up point is the point at infinity".into()
        }
    );
    // A valid point, but not the verifying share the dealings give that party.
    let err = tamper_round3(|r3| r3.proof.point = AffinePoint::GENERATOR);
    blamed(
        &err,
        2,
        "the share it proved knowledge of is not the share dealt to it",
    );
}

fn structure_wallet(text: &str) -> (WalletStructure, Vec<KeyShare>) {
    let s = structure(text);
    let shares = runner::keygen_structure(&s).unwrap();
    (s, shares)
}

#[test]
fn identity_points_and_zero_scalars_in_quorum_signing_are_refused_naming_the_sender() {
    let (s, shares) = structure_wallet("and(server, threshold(2, cfo, ceo, cto))");
    // The quorum server, ceo, cto: every member's share is mapped to its additive share.
    let quorum: Vec<&KeyShare> = ["server", "ceo", "cto"]
        .iter()
        .map(|l| &shares[usize::from(s.party(l).unwrap().get())])
        .collect();
    let sessions = || sign_sessions(&quorum, [9; 32]);
    let err = run_tampered(sessions(), 3, 0, 2, |e| {
        let mut m: TransmitPhase2to3<Curve> = decode(&e.payload);
        m.instance_point = AffinePoint::IDENTITY;
        e.payload = encode(&m);
    });
    assert_eq!(
        err,
        Error::InvalidMessage {
            party: p(3),
            round: 2,
            reason: "the instance point is the point at infinity".into()
        }
    );
    let err = run_tampered(sessions(), 2, 3, 3, |e| {
        let mut m: Broadcast3to4<Curve> = decode(&e.payload);
        m.u = Scalar::ZERO;
        e.payload = encode(&m);
    });
    assert_eq!(
        err,
        Error::InvalidMessage {
            party: p(2),
            round: 3,
            reason: "u is zero".into()
        }
    );
    // A valid gamma_u that is not what the multiplication gives: the engine blames the sender.
    let err = run_tampered(sessions(), 0, 2, 2, |e| {
        let mut m: TransmitPhase2to3<Curve> = decode(&e.payload);
        m.gamma_u = (ProjectivePoint::from(m.gamma_u) + ProjectivePoint::GENERATOR).to_affine();
        e.payload = encode(&m);
    });
    blamed(&err, 0, "its gamma_u is inconsistent");
    // Untampered, the same quorum signs.
    let (sig, _) = runner::sign(&quorum, [9; 32], &tessera_core::DerivationPath::root()).unwrap();
    common::verify_everywhere(&shares[0].public_key(), &[9; 32], &sig);
}

/// `laptop`'s device (authenticated by the transport as party 2) runs a keygen session as
/// `phone` (party 1). Its messages claim party 1 and are refused naming party 2; the mail it
/// gets as party 2 is not for party 1; with its claim rewritten to its own index the envelope
/// passes but the engine message inside still says party 1, and is refused naming party 2.
/// The honest parties' sessions are unchanged by all of it.
#[test]
fn a_device_claiming_another_partys_label_in_keygen_is_refused_naming_it() {
    let s = structure("and(server, or(phone, laptop))");
    let wallet = WalletId::random();
    let nonce = fresh_nonce();
    let honest: Vec<StructureKeygenSession> = s
        .parties()
        .map(|me| StructureKeygenSession::new(wallet, &s, me, &nonce).unwrap())
        .collect();
    let mut impostor = StructureKeygenSession::new(wallet, &s, p(1), &nonce).unwrap();
    let mut net = Net::start(honest);
    let mut claims = impostor.start().unwrap();
    let to_server = claims.iter().position(|e| e.to == p(0)).unwrap();
    let forged = claims.remove(to_server);
    assert_eq!(forged.from, p(1));

    // Its envelope claims party 1; the transport says party 2.
    assert_eq!(
        net.deliver_as(2, 0, &forged),
        Err(Error::SenderMismatch {
            party: p(2),
            claimed: p(1)
        })
    );
    // Mail for laptop is not addressed to the party it runs as.
    let for_laptop = net.take(0, 2, 1);
    assert_eq!(
        impostor.receive(p(0), for_laptop.clone()),
        Err(Error::WrongRecipient {
            party: p(0),
            to: p(2)
        })
    );
    net.queue.push_front(for_laptop);

    // Given phone's mail (the round-1 messages for party 1), it reaches round 2. Its round-2
    // message, with the envelope's claim rewritten to party 2, passes the header checks, but the
    // engine message inside is party 1's: refused, naming party 2.
    let mut round2 = Vec::new();
    for from in [0, 2] {
        let mail = net.take(from, 1, 1);
        round2 = impostor.receive(p(from), mail.clone()).unwrap();
        net.queue.push_front(mail);
    }
    let mut relabelled = round2.into_iter().find(|e| e.to == p(0)).unwrap();
    relabelled.from = p(2);
    assert_eq!(
        net.deliver_as(2, 0, &relabelled),
        Err(Error::InvalidMessage {
            party: p(2),
            round: 2,
            reason: "inner routing says party 1 to party 0, the envelope says 2 to 0".into()
        })
    );
    // (Its round-1 message rewritten the same way would pass: it holds only a hash and a
    // scalar. That is party 2 sending a round-1 message of its choice, which it may; its dealing
    // commitment is bound to party 1 and would not open as party 2's.)

    // None of it changed the honest sessions: they complete and agree.
    net.drain().unwrap();
    let keys: Vec<KeyShare> = net
        .sessions
        .iter_mut()
        .map(|s| s.take_output().unwrap())
        .collect();
    assert!(keys.iter().all(|k| k.public_key() == keys[0].public_key()));
}

/// `laptop`'s device runs the keygen under the structure with `phone` and `laptop` swapped, so
/// that its index (2) is `phone`'s label: the session id binds the structure's text, so every
/// message it sends is of another session, refused naming it, and it refuses everyone's.
#[test]
fn a_device_relabelling_the_structure_is_in_another_session() {
    let s = structure("and(server, or(phone, laptop))");
    let swapped = structure("and(server, or(laptop, phone))");
    assert_eq!(swapped.label(p(2)), Some("phone"));
    let wallet = WalletId::random();
    let nonce = fresh_nonce();
    let sessions = vec![
        StructureKeygenSession::new(wallet, &s, p(0), &nonce).unwrap(),
        StructureKeygenSession::new(wallet, &s, p(1), &nonce).unwrap(),
        StructureKeygenSession::new(wallet, &swapped, p(2), &nonce).unwrap(),
    ];
    let mut net = Net::start(sessions);
    let from_laptop = net.take(2, 0, 1);
    assert_eq!(
        net.deliver_as(2, 0, &from_laptop),
        Err(Error::WrongSession { party: p(2) })
    );
    let to_laptop = net.take(1, 2, 1);
    assert_eq!(
        net.deliver_as(1, 2, &to_laptop),
        Err(Error::WrongSession { party: p(1) })
    );
}

/// `laptop` holds a copy of `phone`'s share and signs with `server` as `phone`: the transport
/// names it party 2, whatever the envelope claims, and party 2 is not in the quorum; with the
/// quorum it could join (`server`, `laptop`) the copied share is refused before any message.
#[test]
fn a_copied_share_signing_as_another_party_is_refused_naming_the_device() {
    let (_, shares) = structure_wallet("and(server, or(phone, laptop))");
    let request = SignRequest {
        nonce: fresh_nonce(),
        signers: vec![p(0), p(1)],
        digest: [4; 32],
        path: tessera_core::DerivationPath::root(),
    };
    let mut server = SignSession::new(&shares[0], &request).unwrap();
    server.start().unwrap();
    let mut impostor = SignSession::new(&shares[1], &request).unwrap();
    let mut sent = impostor.start().unwrap();
    let mut e = sent.pop().unwrap();
    assert_eq!((e.from, e.to), (p(1), p(0)));
    assert_eq!(
        server.receive(p(2), e.clone()),
        Err(Error::SenderMismatch {
            party: p(2),
            claimed: p(1)
        })
    );
    e.from = p(2);
    assert_eq!(
        server.receive(p(2), e),
        Err(Error::UnknownSender { party: p(2) })
    );
    assert_eq!(server.round(), 1);
    // The quorum server + laptop, with phone's share.
    let request = SignRequest {
        signers: vec![p(0), p(2)],
        ..request
    };
    assert_eq!(
        SignSession::new(&shares[1], &request).unwrap_err(),
        Error::InvalidParameters("this share (party 1) is not in the signer set".into())
    );
}
