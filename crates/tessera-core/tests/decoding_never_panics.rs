//! Property tests: arbitrary bytes, as an envelope or as any round's payload, give an error and
//! never a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::sync::OnceLock;

use common::{keygen, p, sign_sessions};
use proptest::prelude::*;
use tessera_core::{Envelope, KeyShare, KeygenSession, Session, Threshold, WalletId};

fn shares() -> &'static Vec<KeyShare> {
    static SHARES: OnceLock<Vec<KeyShare>> = OnceLock::new();
    SHARES.get_or_init(|| keygen(2, 2))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn envelope_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Envelope::from_bytes(p(1), &bytes);
    }

    #[test]
    fn envelope_decoding_of_mutated_valid_envelopes_never_panics(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)
    ) {
        let e = Envelope {
            version: 1,
            session_id: tessera_core::SessionId::from_bytes([3; 32]),
            protocol: tessera_core::Protocol::Keygen,
            round: 1,
            from: p(1),
            to: p(0),
            payload: vec![0x55; 64],
        };
        let mut bytes = e.to_bytes();
        for (i, b) in flips {
            let at = i.index(bytes.len());
            bytes[at] = b;
        }
        let _ = Envelope::from_bytes(p(1), &bytes);
    }

    #[test]
    fn sign_payloads_never_panic(round in 1u8..=3, payload in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let refs: Vec<_> = shares().iter().collect();
        let mut sessions = sign_sessions(&refs, [1; 32]);
        let out = sessions[1].start().unwrap();
        let mut e = out.into_iter().next().unwrap();
        e.round = round;
        e.payload = payload;
        let s0 = &mut sessions[0];
        s0.start().unwrap();
        prop_assert!(s0.receive(p(1), e).is_err());
    }

    #[test]
    fn keygen_payloads_never_panic(round in 1u8..=2, payload in proptest::collection::vec(any::<u8>(), 0..256)) {
        let t = Threshold::new(2, 2).unwrap();
        let w = WalletId::from_bytes([1; 16]);
        let mut s0 = KeygenSession::new(w, t, p(0), &[2; 32]).unwrap();
        s0.start().unwrap();
        let e = Envelope {
            version: 1,
            session_id: s0.session_id(),
            protocol: tessera_core::Protocol::Keygen,
            round,
            from: p(1),
            to: p(0),
            payload,
        };
        prop_assert!(s0.receive(p(1), e).is_err());
    }
}
