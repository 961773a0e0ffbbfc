//! Text and JSON the server and the CLI accept. The first byte picks the reader:
//! 0 an access structure (`AccessStructure::parse`), 1 a wallet structure
//! (`WalletStructure::parse`), 2 a `PUT /policy` body (`SetPolicy` JSON, then the server's
//! `policy::check`), 3 a signing intent (`SignKind` JSON, then `intent::decode`, which computes
//! the digest the server signs), 4 a device name (the server's `names::normalise`, `skeleton`,
//! `party_label`), 5 a derivation path.
//!
//! Invariants: a structure or path that parses prints as text that parses to the same value;
//! a policy or intent re-serialises to JSON that reads back the same; a normalised name is a
//! fixed point of normalisation, and its party label (when it has one) is a valid label.
#![no_main]

use std::str::FromStr;

use libfuzzer_sys::fuzz_target;
use tessera_api::SetPolicy;
use tessera_api::intent::{self, SignKind};
use tessera_core::DerivationPath;
use tessera_core::structure::{AccessStructure, WalletStructure, check_label};
use tessera_server::{names, policy};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    // Every reader here takes text (JSON is UTF-8 too).
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    match selector % 6 {
        0 => {
            if let Ok(s) = AccessStructure::parse(text) {
                let printed = s.to_string();
                assert_eq!(
                    AccessStructure::parse(&printed).as_ref(),
                    Ok(&s),
                    "{printed}"
                );
            }
        }
        1 => {
            if let Ok(s) = WalletStructure::parse(text) {
                let printed = s.to_string();
                assert_eq!(
                    WalletStructure::parse(&printed).as_ref(),
                    Ok(&s),
                    "{printed}"
                );
            }
        }
        2 => {
            if let Ok(body) = serde_json::from_str::<SetPolicy>(text) {
                let _ = policy::check(&body.policy);
                let again: SetPolicy =
                    serde_json::from_slice(&serde_json::to_vec(&body).unwrap()).unwrap();
                assert_eq!(again.policy, body.policy);
            }
        }
        3 => {
            if let Ok(kind) = serde_json::from_str::<SignKind>(text) {
                let decoded = intent::decode(&kind);
                let again: SignKind =
                    serde_json::from_slice(&serde_json::to_vec(&kind).unwrap()).unwrap();
                assert_eq!(again, kind);
                if let Ok(decoded) = decoded {
                    let twice = intent::decode(&again).expect("decodes twice");
                    assert_eq!(twice.digest, decoded.digest, "one intent, two digests");
                }
            }
        }
        4 => {
            if let Ok(name) = names::normalise("device name", text) {
                assert_eq!(
                    names::normalise("device name", &name).ok().as_ref(),
                    Some(&name)
                );
                let _ = names::skeleton(&name);
                if let Some(label) = names::party_label(&name) {
                    assert!(
                        check_label(&label, None).is_ok(),
                        "label {label:?} of {name:?}"
                    );
                }
            }
        }
        _ => {
            if let Ok(path) = DerivationPath::from_str(text) {
                let printed = path.to_string();
                assert_eq!(
                    DerivationPath::from_str(&printed).ok(),
                    Some(path),
                    "{printed}"
                );
            }
        }
    }
});
