//! The frames a session socket carries between the server and a party (`session_frame`): each
//! input is a sequence of frames (two-byte big-endian length, then the frame) that party 1
//! sends to party 0 of a three-party session. Each frame is decoded (what decodes must encode
//! to the same bytes), checked and absorbed as a link does (`Peers::check`, `Peers::absorb`),
//! and every whole protocol message that comes out is decoded as an envelope. The addressed
//! form the server relays (`split_addressed`) and the end sniffing (`ends_from`) read each
//! frame too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_api::session_frame::{Frame, Peers, ends_from, split_addressed};
use tessera_core::Envelope;
use tessera_fuzz::{frames, p};

fuzz_target!(|data: &[u8]| {
    let mut peers = Peers::new(p(0), &[p(1), p(2)]).unwrap();
    for frame in frames(data) {
        let _ = split_addressed(frame);
        let _ = ends_from(frame);
        if let Ok(decoded) = Frame::decode(frame) {
            assert_eq!(
                decoded.encode().as_deref(),
                Ok(frame),
                "a frame with two encodings"
            );
        }
        let checked = match peers.check(frame) {
            Ok(f) => f,
            Err(_) => continue,
        };
        match peers.absorb(checked) {
            Ok(Some((from, message))) => {
                let _ = Envelope::from_bytes(from, &message);
            }
            Ok(None) => {}
            // The sender ended or misbehaved: a link stops reading it.
            Err(_) => break,
        }
    }
});
