//! RFC 9180 `SealBase` with the ephemeral key derived from a seed: the deterministic encryption
//! behind the format-2 leaf proofs (see [`crate::pve`]).
//!
//! A leaf proof reveals, for each opened half, the half and the seed of its encryption; a
//! verifier re-encrypts and must get the same bytes. Format 1 took the ephemeral key from the
//! `hpke` crate's key generation fed with a seeded generator, which depends on how that crate
//! draws randomness (not a documented promise). Here the ephemeral key pair is RFC 9180
//! `DeriveKeyPair(seed)` (§7.1.3), and encapsulation, key schedule and encryption are the RFC's
//! own steps, so the bytes depend only on the RFC: any conforming HPKE implementation decrypts
//! them, and the known-answer test of RFC 9180 appendix A.2.1 (our suite: DHKEM(X25519,
//! HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305, base mode) pins them.
//!
//! The `hpke` crate has no public way to encapsulate with a given ephemeral key, so `Encap`
//! (§4.1) and `KeyScheduleS` (§5.1) for base mode are written out below, step by step with the
//! RFC's pseudocode quoted; `DeriveKeyPair` is the `hpke` crate's ([`hpke::Kem::derive_keypair`]).
//! Holders decrypt with the `hpke` crate's ordinary `single_shot_open`.

use chacha20poly1305::ChaCha20Poly1305;
use chacha20poly1305::aead::{Aead as _, KeyInit, Payload};
use curve25519_dalek::montgomery::MontgomeryPoint;
use hkdf::{Hkdf, HkdfExtract};
use hpke::Serializable;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::holder::Kem;

/// `suite_id` of the KEM: `"KEM" ‖ I2OSP(kem_id, 2)`, DHKEM(X25519, HKDF-SHA256) = 0x0020.
const KEM_SUITE_ID: &[u8] = b"KEM\x00\x20";
/// `suite_id` of HPKE: `"HPKE" ‖ kem_id ‖ kdf_id ‖ aead_id` = 0x0020, HKDF-SHA256 = 0x0001,
/// ChaCha20-Poly1305 = 0x0003.
const HPKE_SUITE_ID: &[u8] = b"HPKE\x00\x20\x00\x01\x00\x03";
/// `mode_base`.
const MODE_BASE: u8 = 0;

/// Why sealing failed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SealError {
    /// The Diffie–Hellman result is all zero (a low-order recipient key, RFC 9180 §7.1.4).
    ZeroSharedSecret,
    /// The AEAD refused (cannot happen for the sizes used).
    Aead,
}

/// `LabeledExtract(salt, label, ikm) = Extract(salt, "HPKE-v1" ‖ suite_id ‖ label ‖ ikm)`.
fn labeled_extract(suite_id: &[u8], salt: &[u8], label: &[u8], ikm: &[u8]) -> Hkdf<Sha256> {
    let mut extract = HkdfExtract::<Sha256>::new(Some(salt));
    extract.input_ikm(b"HPKE-v1");
    extract.input_ikm(suite_id);
    extract.input_ikm(label);
    extract.input_ikm(ikm);
    extract.finalize().1
}

/// The pseudorandom key of [`labeled_extract`] itself (for `psk_id_hash` and `info_hash`).
fn labeled_extract_bytes(suite_id: &[u8], salt: &[u8], label: &[u8], ikm: &[u8]) -> [u8; 32] {
    let mut extract = HkdfExtract::<Sha256>::new(Some(salt));
    extract.input_ikm(b"HPKE-v1");
    extract.input_ikm(suite_id);
    extract.input_ikm(label);
    extract.input_ikm(ikm);
    extract.finalize().0.into()
}

/// `LabeledExpand(prk, label, info, L) = Expand(prk, I2OSP(L, 2) ‖ "HPKE-v1" ‖ suite_id ‖ label
/// ‖ info, L)`. Every `L` used here is at most 32, far below HKDF-SHA256's limit.
fn labeled_expand(prk: &Hkdf<Sha256>, suite_id: &[u8], label: &[u8], info: &[u8], out: &mut [u8]) {
    let length = u16::try_from(out.len()).unwrap_or(u16::MAX).to_be_bytes();
    if prk
        .expand_multi_info(&[&length, b"HPKE-v1", suite_id, label, info], out)
        .is_err()
    {
        out.fill(0);
    }
}

/// `SealBase(pkR, info, aad, pt)` with the ephemeral key pair `DeriveKeyPair(ikm_e)`; returns
/// `(enc, ct)`.
pub(crate) fn seal_base(
    pk_r: &[u8; 32],
    info: &[u8],
    aad: &[u8],
    plaintext: &[u8],
    ikm_e: &[u8; 32],
) -> Result<([u8; 32], Vec<u8>), SealError> {
    // def Encap(pkR):
    //   skE, pkE = DeriveKeyPair(ikmE)   (GenerateKeyPair with the seed given)
    let (sk_e, pk_e) = <Kem as hpke::Kem>::derive_keypair(ikm_e);
    let mut sk_bytes = Zeroizing::new([0u8; 32]);
    sk_bytes.copy_from_slice(sk_e.to_bytes().as_slice());
    drop(sk_e);
    let mut enc = [0u8; 32];
    enc.copy_from_slice(pk_e.to_bytes().as_slice());
    //   dh = DH(skE, pkR)   (X25519, RFC 7748: the scalar is clamped; an all-zero result is an
    //                        error, §7.1.4)
    let dh = Zeroizing::new(MontgomeryPoint(*pk_r).mul_clamped(*sk_bytes).to_bytes());
    if dh.iter().all(|&b| b == 0) {
        return Err(SealError::ZeroSharedSecret);
    }
    //   enc = SerializePublicKey(pkE)
    //   pkRm = SerializePublicKey(pkR)
    //   kem_context = concat(enc, pkRm)
    let mut kem_context = [0u8; 64];
    kem_context[..32].copy_from_slice(&enc);
    kem_context[32..].copy_from_slice(pk_r);
    //   shared_secret = ExtractAndExpand(dh, kem_context)
    //     eae_prk = LabeledExtract("", "eae_prk", dh)
    //     shared_secret = LabeledExpand(eae_prk, "shared_secret", kem_context, Nsecret)
    let eae_prk = labeled_extract(KEM_SUITE_ID, b"", b"eae_prk", dh.as_ref());
    let mut shared_secret = Zeroizing::new([0u8; 32]);
    labeled_expand(
        &eae_prk,
        KEM_SUITE_ID,
        b"shared_secret",
        &kem_context,
        shared_secret.as_mut(),
    );

    // def KeySchedule<ROLE>(mode, shared_secret, info, psk, psk_id):   (base: psk = psk_id = "")
    //   psk_id_hash = LabeledExtract("", "psk_id_hash", psk_id)
    //   info_hash = LabeledExtract("", "info_hash", info)
    //   key_schedule_context = concat(mode, psk_id_hash, info_hash)
    let psk_id_hash = labeled_extract_bytes(HPKE_SUITE_ID, b"", b"psk_id_hash", b"");
    let info_hash = labeled_extract_bytes(HPKE_SUITE_ID, b"", b"info_hash", info);
    let mut context = [0u8; 65];
    context[0] = MODE_BASE;
    context[1..33].copy_from_slice(&psk_id_hash);
    context[33..].copy_from_slice(&info_hash);
    //   secret = LabeledExtract(shared_secret, "secret", psk)
    //   key = LabeledExpand(secret, "key", key_schedule_context, Nk)
    //   base_nonce = LabeledExpand(secret, "base_nonce", key_schedule_context, Nn)
    let secret = labeled_extract(HPKE_SUITE_ID, shared_secret.as_ref(), b"secret", b"");
    let mut key = Zeroizing::new([0u8; 32]);
    labeled_expand(&secret, HPKE_SUITE_ID, b"key", &context, key.as_mut());
    let mut base_nonce = [0u8; 12];
    labeled_expand(
        &secret,
        HPKE_SUITE_ID,
        b"base_nonce",
        &context,
        &mut base_nonce,
    );

    // def ContextS.Seal(aad, pt):   (the first message: seq = 0, so the nonce is base_nonce)
    //   ct = Seal(self.key, self.ComputeNonce(self.seq), aad, pt)
    let ct = ChaCha20Poly1305::new(&(*key).into())
        .encrypt(
            &base_nonce.into(),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| SealError::Aead)?;
    Ok((enc, ct))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::holder::{Aead, Kdf};
    use hpke::Deserializable;

    fn bytes(text: &str) -> Vec<u8> {
        hex::decode(text).unwrap()
    }

    fn array(text: &str) -> [u8; 32] {
        bytes(text).try_into().unwrap()
    }

    // RFC 9180, appendix A.2.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20Poly1305, base
    // mode, the first encryption (sequence number 0).
    const INFO: &str = "4f6465206f6e2061204772656369616e2055726e";
    const IKM_E: &str = "909a9b35d3dc4713a5e72a4da274b55d3d3821a37e5d099e74a647db583a904b";
    const PK_EM: &str = "1afa08d3dec047a643885163f1180476fa7ddb54c6a8029ea33f95796bf2ac4a";
    const PK_RM: &str = "4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a";
    const SK_RM: &str = "8057991eef8f1f1af18f4a9491d16a1ce333f695d4db8e38da75975c4478e0fb";
    const PT: &str = "4265617574792069732074727574682c20747275746820626561757479";
    const AAD: &str = "436f756e742d30";
    const CT: &str = concat!(
        "1c5250d8034ec2b784ba2cfd69dbdb8af406cfe3ff938e131f0def8c8b60b4db",
        "21993c62ce81883d2dd1b51a28"
    );

    #[test]
    fn rfc_9180_a_2_1_known_answer() {
        let (enc, ct) = seal_base(
            &array(PK_RM),
            &bytes(INFO),
            &bytes(AAD),
            &bytes(PT),
            &array(IKM_E),
        )
        .unwrap();
        assert_eq!(hex::encode(enc), PK_EM);
        assert_eq!(hex::encode(ct), CT);
    }

    #[test]
    fn the_hpke_crate_opens_what_is_sealed() {
        let sk = <Kem as hpke::Kem>::PrivateKey::from_bytes(&bytes(SK_RM)).unwrap();
        for seed in [[1u8; 32], [2u8; 32]] {
            let (enc, ct) =
                seal_base(&array(PK_RM), b"info", b"aad", b"a secret half", &seed).unwrap();
            let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&enc).unwrap();
            let pt = hpke::single_shot_open::<Aead, Kdf, Kem>(
                &hpke::OpModeR::Base,
                &sk,
                &enc,
                b"info",
                &ct,
                b"aad",
            )
            .unwrap();
            assert_eq!(pt, b"a secret half");
        }
    }

    #[test]
    fn low_order_recipients_are_refused() {
        // u = 0 and u = 1: every shared secret is zero.
        let mut one = [0u8; 32];
        one[0] = 1;
        for pk in [[0u8; 32], one] {
            assert_eq!(
                seal_base(&pk, b"", b"", b"x", &[5u8; 32]),
                Err(SealError::ZeroSharedSecret)
            );
        }
    }
}
