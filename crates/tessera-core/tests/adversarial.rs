//! Malicious parties and bad input: each case asserts the exact error and the party it names.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use common::{Net, keygen, p, run_tampered, sign_request, sign_sessions};
use dkls23::protocols::signing::{Broadcast3to4, TransmitPhase2to3};
use k256::elliptic_curve::sec1::FromSec1Point;
use tessera_core::envelope::MAX_ENVELOPE_BYTES;
use tessera_core::protocols::fresh_nonce;
use tessera_core::{
    Error, KeygenSession, Protocol, RefreshSession, Session, SessionId, SignSession, Threshold,
    WalletId,
};

type Curve = k256::Secp256k1;

fn keygen_sessions(t: u8, n: u8) -> Vec<KeygenSession> {
    let threshold = Threshold::new(t, n).unwrap();
    let wallet = WalletId::random();
    let nonce = fresh_nonce();
    threshold
        .parties()
        .map(|i| KeygenSession::new(wallet, threshold, i, &nonce).unwrap())
        .collect()
}

#[test]
fn tampered_payload_byte_is_blamed_on_its_sender() {
    let shares = keygen(2, 2);
    let refs: Vec<_> = shares.iter().collect();
    // Round 1 of signing: [epoch][sender][receiver][session binding: 32][commitment: 32]...
    // Flipping a bit of the commitment to the instance point: the opening in round 2 then fails.
    let err = run_tampered(sign_sessions(&refs, [5; 32]), 1, 0, 1, |e| {
        e.payload[3 + 32 + 4] ^= 1
    });
    assert_eq!(
        err,
        Error::CheckFailed {
            party: p(1),
            reason: "its opening does not match its commitment".into()
        }
    );
    // Flipping a bit of the session binding is caught as a message of another session.
    let err = run_tampered(sign_sessions(&refs, [5; 32]), 0, 1, 1, |e| {
        e.payload[3 + 4] ^= 1
    });
    assert_eq!(
        err,
        Error::CheckFailed {
            party: p(0),
            reason: "its message belongs to a different signing session".into()
        }
    );
    // A gamma_u that is a valid point, but not the one the multiplication gives: the engine
    // blames the sender (ban).
    let err = run_tampered(sign_sessions(&refs, [5; 32]), 1, 0, 2, |e| {
        let mut m: TransmitPhase2to3<Curve> = postcard::from_bytes(&e.payload).unwrap();
        m.gamma_u =
            (k256::ProjectivePoint::from(m.gamma_u) + k256::ProjectivePoint::GENERATOR).to_affine();
        e.payload = postcard::to_allocvec(&m).unwrap();
    });
    assert_eq!(
        err,
        Error::PartyMisbehaved {
            party: p(1),
            reason: "its gamma_u is inconsistent".into()
        }
    );
    // A flipped byte in the last message (u, w) yields a signature that does not verify.
    let err = run_tampered(sign_sessions(&refs, [5; 32]), 1, 0, 3, |e| {
        let last = e.payload.len() - 1;
        e.payload[last] ^= 1;
    });
    assert_eq!(err, Error::Aborted("signature verification failed".into()));
}

#[test]
fn envelope_header_checks_name_the_sender() {
    let shares = keygen(2, 2);
    let refs: Vec<_> = shares.iter().collect();

    let err = run_tampered(sign_sessions(&refs, [6; 32]), 1, 0, 1, |e| {
        e.session_id = SessionId::from_bytes([0xAA; 32]);
    });
    assert_eq!(err, Error::WrongSession { party: p(1) });

    let err = run_tampered(sign_sessions(&refs, [6; 32]), 1, 0, 2, |e| {
        e.protocol = Protocol::Refresh
    });
    assert_eq!(
        err,
        Error::WrongProtocol {
            party: p(1),
            expected: Protocol::Sign,
            got: Protocol::Refresh
        }
    );

    let err = run_tampered(sign_sessions(&refs, [6; 32]), 0, 1, 1, |e| e.version = 9);
    assert_eq!(
        err,
        Error::UnsupportedVersion {
            party: p(0),
            version: 9
        }
    );

    // A message from another session of the same wallet (same parties, another nonce).
    let other = sign_sessions(&refs, [6; 32]);
    let other_id = other[0].session_id();
    let err = run_tampered(sign_sessions(&refs, [6; 32]), 0, 1, 2, |e| {
        e.session_id = other_id
    });
    assert_eq!(err, Error::WrongSession { party: p(0) });

    // Signing another digest or another path gives another session id: refused before parsing.
    let mut a = sign_request(&refs, [1; 32]);
    let b_req = tessera_core::SignRequest {
        digest: [2; 32],
        ..a.clone()
    };
    let s0 = SignSession::new(&shares[0], &a).unwrap();
    let s1 = SignSession::new(&shares[1], &b_req).unwrap();
    assert_ne!(s0.session_id(), s1.session_id());
    a.path = "m/1".parse().unwrap();
    assert_ne!(
        SignSession::new(&shares[0], &a).unwrap().session_id(),
        s0.session_id()
    );
}

#[test]
fn forged_sender_wrong_recipient_replay_and_duplicates() {
    let shares = keygen(3, 3);
    let refs: Vec<_> = shares.iter().collect();
    let mut net = Net::start(sign_sessions(&refs, [7; 32]));

    // Party 2 sends a message that claims to come from party 1.
    let mut forged = net.take(2, 0, 1);
    forged.from = p(1);
    assert_eq!(
        net.deliver_as(2, 0, &forged),
        Err(Error::SenderMismatch {
            party: p(2),
            claimed: p(1)
        })
    );

    // Party 1's message for party 0, delivered to party 2.
    let for_zero = net.take(1, 0, 1);
    assert_eq!(
        net.deliver_as(1, 2, &for_zero),
        Err(Error::WrongRecipient {
            party: p(1),
            to: p(0)
        })
    );

    // A party outside the signer set.
    let mut stranger = for_zero.clone();
    stranger.from = p(5);
    assert_eq!(
        net.deliver_as(5, 0, &stranger),
        Err(Error::UnknownSender { party: p(5) })
    );

    // The rejected messages changed nothing: deliver the genuine ones and finish round 1.
    net.deliver_as(1, 0, &for_zero).unwrap();
    assert_eq!(
        net.deliver_as(1, 0, &for_zero),
        Err(Error::DuplicateMessage {
            party: p(1),
            round: 1
        })
    );
    let mut genuine_from_2 = forged.clone();
    genuine_from_2.from = p(2);
    net.deliver_as(2, 0, &genuine_from_2).unwrap();
    assert_eq!(net.session(0).round(), 2);

    // Replaying party 1's round-1 message once party 0 is in round 2.
    assert_eq!(
        net.deliver_as(1, 0, &for_zero),
        Err(Error::ReplayedMessage {
            party: p(1),
            round: 1,
            current: 2
        })
    );

    // A message from two rounds ahead.
    let mut ahead = net.take(0, 1, 2);
    let back = ahead.clone();
    ahead.from = p(1);
    ahead.to = p(0);
    ahead.round = 4;
    assert_eq!(
        net.deliver_as(1, 0, &ahead),
        Err(Error::UnexpectedRound {
            party: p(1),
            round: 4,
            current: 2
        })
    );
    // The next round is accepted early, so its payload is checked at once.
    ahead.round = 3;
    assert!(
        matches!(net.deliver_as(1, 0, &ahead), Err(Error::InvalidMessage { party, round: 3, .. }) if party == p(1))
    );
    net.queue.push_front(back);

    // After all of that the run still completes and the signature verifies.
    net.drain().unwrap();
    let pk = shares[0].public_key();
    for s in &mut net.sessions {
        let sig = s.take_output().unwrap();
        pk.verify(&[7; 32], &sig).unwrap();
    }
}

#[test]
fn truncated_oversize_and_garbage_bytes() {
    let shares = keygen(2, 2);
    let refs: Vec<_> = shares.iter().collect();
    let mut net = Net::start(sign_sessions(&refs, [8; 32]));
    let e = net.take(1, 0, 1);
    let bytes = e.to_bytes();
    let s0 = net.session(0);
    for cut in [0, 1, 10, 40, bytes.len() / 2, bytes.len() - 1] {
        let err = s0.receive_bytes(p(1), &bytes[..cut]).unwrap_err();
        assert!(
            matches!(err, Error::MalformedEnvelope { party, .. } if party == p(1)),
            "cut {cut}: {err:?}"
        );
    }
    let mut oversize = bytes.clone();
    oversize.resize(MAX_ENVELOPE_BYTES + 1, 0);
    assert_eq!(
        s0.receive_bytes(p(1), &oversize),
        Err(Error::EnvelopeTooLarge {
            party: p(1),
            size: MAX_ENVELOPE_BYTES + 1,
            limit: MAX_ENVELOPE_BYTES
        })
    );
    let mut trailing = bytes.clone();
    trailing.extend_from_slice(&[0, 0]);
    assert!(matches!(
        s0.receive_bytes(p(1), &trailing),
        Err(Error::MalformedEnvelope { .. })
    ));

    // A payload that is cut short inside a valid envelope.
    let mut short = e.clone();
    short.payload.truncate(20);
    assert_eq!(
        s0.receive_bytes(p(1), &short.to_bytes()),
        Err(Error::InvalidMessage {
            party: p(1),
            round: 1,
            reason: "truncated payload".into()
        })
    );
    let mut long = e.clone();
    long.payload.push(0);
    assert!(matches!(
        s0.receive_bytes(p(1), &long.to_bytes()),
        Err(Error::InvalidMessage { party, round: 1, reason }) if party == p(1) && reason.contains("unexpected bytes")
    ));
    // Nothing was stored: the genuine message completes the run.
    net.deliver_as(1, 0, &e).unwrap();
    net.drain().unwrap();
    assert!(net.sessions.iter().all(Session::is_finished));
}

/// An x coordinate with no point on secp256k1.
fn off_curve_x() -> [u8; 32] {
    (1u8..)
        .map(|i| {
            let mut x = [0u8; 32];
            x[31] = i;
            x
        })
        .find(|x| {
            let mut sec1 = [2u8; 33];
            sec1[1..].copy_from_slice(x);
            k256::AffinePoint::from_sec1_bytes(&sec1).is_err()
        })
        .unwrap()
}

#[test]
fn invalid_points_and_zero_scalars_are_refused() {
    let shares = keygen(2, 2);
    let refs: Vec<_> = shares.iter().collect();
    use k256::elliptic_curve::sec1::ToSec1Point;

    // The identity as the instance point of round 2.
    let err = run_tampered(sign_sessions(&refs, [9; 32]), 1, 0, 2, |e| {
        let mut m: TransmitPhase2to3<Curve> = postcard::from_bytes(&e.payload).unwrap();
        m.instance_point = k256::AffinePoint::IDENTITY;
        e.payload = postcard::to_allocvec(&m).unwrap();
    });
    assert_eq!(
        err,
        Error::InvalidMessage {
            party: p(1),
            round: 2,
            reason: "the instance point is the point at infinity".into()
        }
    );

    // A point that is not on the curve: k256 refuses it while decoding.
    let err = run_tampered(sign_sessions(&refs, [9; 32]), 1, 0, 2, |e| {
        let m: TransmitPhase2to3<Curve> = postcard::from_bytes(&e.payload).unwrap();
        let gamma = m.gamma_u.to_sec1_point(true);
        let at = e
            .payload
            .windows(33)
            .position(|w| w == gamma.as_bytes())
            .unwrap();
        e.payload[at + 1..at + 33].copy_from_slice(&off_curve_x());
    });
    assert!(
        matches!(&err, Error::InvalidMessage { party, round: 2, reason } if *party == p(1) && reason.contains("cannot decode")),
        "{err:?}"
    );

    // A zero scalar where the engine expects a random one (the denominator share u of round 3).
    let err = run_tampered(sign_sessions(&refs, [9; 32]), 0, 1, 3, |e| {
        let mut m: Broadcast3to4<Curve> = postcard::from_bytes(&e.payload).unwrap();
        m.u = k256::Scalar::ZERO;
        e.payload = postcard::to_allocvec(&m).unwrap();
    });
    assert_eq!(
        err,
        Error::InvalidMessage {
            party: p(0),
            round: 3,
            reason: "u is zero".into()
        }
    );

    // A scalar above the group order does not decode.
    let err = run_tampered(sign_sessions(&refs, [9; 32]), 0, 1, 3, |e| {
        let m: Broadcast3to4<Curve> = postcard::from_bytes(&e.payload).unwrap();
        let u = m.u.to_bytes();
        let at = e
            .payload
            .windows(32)
            .position(|w| w == u.as_slice())
            .unwrap();
        e.payload[at..at + 32].fill(0xff);
    });
    assert!(
        matches!(&err, Error::InvalidMessage { party, round: 3, reason } if *party == p(0) && reason.contains("cannot decode")),
        "{err:?}"
    );
}

#[test]
fn signer_sets_are_validated() {
    let shares = keygen(2, 3);
    let mut req = sign_request(&[&shares[0], &shares[1]], [1; 32]);
    req.signers = vec![p(0), p(0)];
    assert_eq!(
        SignSession::new(&shares[0], &req).unwrap_err(),
        Error::InvalidParameters("party 0 appears twice in the signer set".into())
    );
    req.signers = vec![p(0)];
    assert_eq!(
        SignSession::new(&shares[0], &req).unwrap_err(),
        Error::InvalidParameters("a 2-of-3 wallet signs with exactly 2 parties, 1 given".into())
    );
    req.signers = vec![p(1), p(2)];
    assert_eq!(
        SignSession::new(&shares[0], &req).unwrap_err(),
        Error::InvalidParameters("this share (party 0) is not in the signer set".into())
    );
    req.signers = vec![p(0), p(3)];
    assert_eq!(
        SignSession::new(&shares[0], &req).unwrap_err(),
        Error::InvalidParameters("signer 3 is not one of the 3 parties".into())
    );
    assert!(matches!(
        KeygenSession::new(WalletId::random(), Threshold { t: 2, n: 2 }, p(2), &[0; 32]),
        Err(Error::InvalidParameters(_))
    ));
    assert!(matches!(
        KeygenSession::new(WalletId::random(), Threshold { t: 1, n: 2 }, p(0), &[0; 32]),
        Err(Error::InvalidParameters(_))
    ));
}

#[test]
fn keygen_detects_inconsistent_broadcasts_and_results() {
    // Party 1 tells party 0 something else about round 2 than it told party 2: the echo in
    // round 3 differs and party 2 (which compares party 0's echo with its own) aborts.
    let err = run_tampered(keygen_sessions(2, 3), 0, 2, 3, |e| {
        // Round 3 starts with the 32-byte echo.
        e.payload[0] ^= 1;
    });
    assert_eq!(
        err,
        Error::BroadcastMismatch {
            reported_by: p(0),
            round: 2
        }
    );

    // A different confirmation in round 4.
    let err = run_tampered(keygen_sessions(2, 2), 1, 0, 4, |e| e.payload[5] ^= 1);
    assert_eq!(err, Error::ConfirmationMismatch { party: p(1) });

    // A fragment (round 1) off the sender's polynomial. With n > t the public shares are
    // redundant and the check fails; the engine cannot tell who lied, so nobody is blamed. (With
    // n = t any fragments are consistent with some polynomial: nothing to detect.)
    let err = run_tampered(keygen_sessions(2, 3), 1, 0, 1, |e| {
        let last = e.payload.len() - 1;
        e.payload[last] ^= 1;
    });
    assert_eq!(err, Error::Aborted("polynomial inconsistency".into()));
}

#[test]
fn refresh_refuses_a_share_of_another_wallet() {
    let a = keygen(2, 2);
    let b = keygen(2, 2);
    let nonce = fresh_nonce();
    let sessions = vec![
        RefreshSession::new(&a[0], &nonce).unwrap(),
        RefreshSession::new(&b[1], &nonce).unwrap(),
    ];
    let err = tessera_core::runner::run(sessions).unwrap_err();
    assert!(matches!(err, Error::WrongSession { .. }), "{err:?}");
}

#[test]
fn a_failed_session_stays_failed() {
    let shares = keygen(2, 2);
    let refs: Vec<_> = shares.iter().collect();
    let mut net = Net::start(sign_sessions(&refs, [3; 32]));
    net.drain().unwrap();
    assert!(net.sessions.iter().all(Session::is_finished));
    let e = tessera_core::Envelope {
        version: 1,
        session_id: net.sessions[0].session_id(),
        protocol: Protocol::Sign,
        round: 1,
        from: p(1),
        to: p(0),
        payload: vec![],
    };
    assert_eq!(net.deliver_as(1, 0, &e), Err(Error::SessionFinished));
    assert_eq!(
        net.session(0).start(),
        Err(Error::OutOfOrder("start called twice"))
    );
}
