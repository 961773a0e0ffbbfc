//! Envelopes: `Envelope::from_bytes`, then the session's header checks.
//!
//! Bytes from the fuzzer are decoded as party 1's envelope; what decodes must re-encode to the
//! same bytes (postcard has one encoding per value, so a second one would be a malleability), and
//! is delivered to party 0 of a 2-of-2 keygen waiting in round 1. The seeds are party 1's real
//! round-1 envelope (the fixture's session id is the same in every process), so mutations reach
//! every header check; a rejected envelope must name party 1 and leave the victim in round 1.
#![no_main]

use std::sync::Mutex;

use libfuzzer_sys::fuzz_target;
use tessera_core::{Envelope, KeygenSession, Session};
use tessera_fuzz::{Prepared, envelope_victim, p};

static VICTIM: Mutex<Option<Prepared<KeygenSession>>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let sender = p(1);
    let Ok(envelope) = Envelope::from_bytes(sender, data) else {
        return;
    };
    assert_eq!(envelope.to_bytes(), data, "an envelope with two encodings");
    let mut guard = VICTIM.lock().unwrap();
    let prepared = guard.get_or_insert_with(envelope_victim);
    match prepared.victim.receive(sender, envelope) {
        Err(e) if prepared.victim.round() == 1 && !prepared.victim.is_finished() => {
            assert_eq!(
                e.party(),
                Some(sender),
                "a rejection names another party: {e}"
            );
        }
        // Accepted (the header is the real one and the payload parses), or the round ran and
        // failed: the victim is used up.
        _ => *guard = None,
    }
});
