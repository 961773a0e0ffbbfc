//! Smoke test: the smallest end-to-end run.
use tessera_core::{DerivationPath, Threshold, runner};

#[test]
fn keygen_sign_2_of_2() {
    let shares = runner::keygen(Threshold::new(2, 2).unwrap()).unwrap();
    let digest = [7u8; 32];
    let refs: Vec<_> = shares.iter().collect();
    let (sig, stats) = runner::sign(&refs, digest, &DerivationPath::root()).unwrap();
    shares[0].public_key().verify(&digest, &sig).unwrap();
    println!("{stats:?} share bytes {}", shares[0].to_bytes().len());
}
