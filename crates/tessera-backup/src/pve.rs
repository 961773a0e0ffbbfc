//! Publicly verifiable encryption of a discrete logarithm to one backup holder.
//!
//! Given a secret scalar `v` with public point `V = v·G` (secp256k1) and a holder's HPKE public
//! key, [`encrypt`] produces a [`LeafProof`]: ciphertexts that only the holder can open, and a
//! proof that anybody can check *without any secret* ([`verify`]) that opening them yields `v`.
//! The holder recovers `v` with [`decrypt`].
//!
//! # Construction
//!
//! Cut-and-choose verifiable encryption of Camenisch and Damgård, "Verifiable Encryption, Group
//! Encryption, and Their Applications to Separable Group Signatures and Signature Schemes",
//! ASIACRYPT 2000 (§3, the discrete-logarithm relation), as deployed for key-share backups in
//! production MPC libraries (e.g. Coinbase cb-mpc's PVE), made non-interactive with Fiat–Shamir.
//! With one-bit challenges and [`REPETITIONS`] = 128 repetitions, a cheating prover convinces the
//! verifier with probability at most 2⁻¹²⁸ (it must guess every challenge bit).
//!
//! For repetition `i` (0 ≤ i < 128):
//! 1. split `v`: a random nonzero scalar `r_i`, halves `a_i0 = r_i`, `a_i1 = v − r_i`;
//! 2. commit: `A_i0 = a_i0·G` (then `A_i1 = V − A_i0` is implied);
//! 3. encrypt both halves: `c_ib = HPKE.Seal(pk, info, aad_ib, a_ib)` with the ephemeral X25519
//!    key pair `DeriveKeyPair(s_ib)` (RFC 9180 §7.1.3) for fresh random 32-byte seeds `s_ib`:
//!    encryption is deterministic given the seed, so revealing `(a_ib, s_ib)` lets a verifier
//!    recompute `c_ib` exactly (module `hpke_seeded`). Backups of format 1 took the ephemeral
//!    key from the `hpke` crate's key generation fed with `ChaCha20Rng::from_seed(s_ib)`; they are
//!    still verified that way ([`Ephemeral`]), and never written;
//! 4. challenge (Fiat–Shamir): `e = SHA-256(tag, context, leaf id, pk, V, A_*0, c_*0, c_*1)`; its
//!    first 128 bits are the challenge bits `e_i`;
//! 5. respond: open half `e_i` (`a_ie`, `s_ie`) and keep only the other half's ciphertext.
//!
//! Verification checks for every `i` that `a_ie` is a canonical nonzero scalar with
//! `a_ie·G = A_ie`, re-encrypts it under `s_ie`, and finally recomputes the challenge over all
//! commitments and ciphertexts. Decryption opens the unopened ciphertexts: any one that decrypts to
//! the correct half gives `v = a_i0 + a_i1`, checked against `V`.
//!
//! HPKE is RFC 9180 base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305, with
//! `info = "tessera-pve-v1" ‖ context` and `aad = leaf id ‖ i (u16 BE) ‖ b`: every ciphertext is
//! bound to the backup (through the 32-byte `context` digest), its leaf and its place.

use std::fmt;

use chacha20::ChaCha20Rng;
use k256::elliptic_curve::group::GroupEncoding;
use k256::elliptic_curve::{Field, Group, PrimeField};
use k256::{ProjectivePoint, Scalar};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteArray;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::BackupError;
use crate::holder::{Aead, HolderPublicKey, HolderSecretKey, Kdf, Kem};

/// Number of cut-and-choose repetitions: soundness error 2⁻¹²⁸ with one-bit challenges.
pub const REPETITIONS: usize = 128;

/// Prefix of the HPKE `info` of every leaf ciphertext.
const INFO_TAG: &[u8] = b"tessera-pve-v1";
/// Domain tag of the Fiat–Shamir challenge.
const CHALLENGE_TAG: &[u8] = b"tessera-pve-v1/challenge";
/// Bytes of the challenge kept: one bit per repetition.
const CHALLENGE_LEN: usize = REPETITIONS / 8;
/// Longest leaf id accepted.
const MAX_LEAF_ID_LEN: usize = 1024;
/// HPKE encapsulated key (X25519 public key).
const ENC_LEN: usize = 32;
/// HPKE ciphertext of a 32-byte scalar: 32 bytes and the 16-byte Poly1305 tag.
const CT_LEN: usize = 48;

/// The verifiable encryption of one leaf's share to its holder.
///
/// Public data: it reveals nothing about the share to anybody without the holder's secret key.
/// Deserialization only checks lengths of the fields; [`verify`] checks everything else.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeafProof {
    /// The Fiat–Shamir challenge `e` (bit `i`, most significant first, is `e_i`).
    challenge: ByteArray<CHALLENGE_LEN>,
    /// `A_i0 = a_i0·G`, compressed SEC1.
    commitments: Vec<ByteArray<33>>,
    /// The opened halves `a_ie`, 32-byte big-endian scalars.
    opened_halves: Vec<ByteArray<32>>,
    /// The seeds `s_ie` of the opened halves' encryption.
    opened_seeds: Vec<ByteArray<32>>,
    /// Encapsulated keys of the unopened ciphertexts `c_i(1−e)`.
    unopened_encs: Vec<ByteArray<ENC_LEN>>,
    /// The unopened ciphertexts `c_i(1−e)` themselves.
    unopened_cts: Vec<ByteArray<CT_LEN>>,
}

impl fmt::Debug for LeafProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeafProof")
            .field("challenge", &hex::encode(self.challenge.as_slice()))
            .field("repetitions", &self.commitments.len())
            .finish_non_exhaustive()
    }
}

/// One HPKE ciphertext: the encapsulated key and the sealed 32-byte half.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Ciphertext {
    enc: [u8; ENC_LEN],
    ct: [u8; CT_LEN],
}

/// Compressed SEC1 encoding of a point (callers never pass the identity).
pub(crate) fn encode_point(point: &ProjectivePoint) -> [u8; 33] {
    let mut out = [0u8; 33];
    out.copy_from_slice(point.to_bytes().as_slice());
    out
}

/// Decodes a compressed SEC1 point: on the curve, not the identity, canonically encoded.
pub(crate) fn decode_point(bytes: &[u8; 33]) -> Option<ProjectivePoint> {
    let repr = k256::CompressedPoint::try_from(&bytes[..]).ok()?;
    let point = Option::<ProjectivePoint>::from(ProjectivePoint::from_bytes(&repr))?;
    if bool::from(point.is_identity()) || encode_point(&point) != *bytes {
        return None;
    }
    Some(point)
}

/// Decodes a canonical (less than the group order) nonzero 32-byte big-endian scalar.
pub(crate) fn decode_nonzero_scalar(bytes: &[u8; 32]) -> Option<Scalar> {
    let scalar = Option::<Scalar>::from(Scalar::from_repr((*bytes).into()))?;
    if bool::from(scalar.is_zero()) {
        return None;
    }
    Some(scalar)
}

/// 32-byte big-endian encoding of a scalar, zeroized on drop.
pub(crate) fn scalar_bytes(scalar: &Scalar) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(scalar.to_bytes().as_slice());
    out
}

/// A uniformly random nonzero scalar from the operating system's generator.
pub(crate) fn random_nonzero_scalar() -> Result<Zeroizing<Scalar>, BackupError> {
    loop {
        let scalar = Zeroizing::new(
            Scalar::try_random(&mut rand::rngs::SysRng).map_err(|_| BackupError::Randomness)?,
        );
        if !bool::from(scalar.is_zero()) {
            return Ok(scalar);
        }
    }
}

/// 32 random bytes from the operating system's generator.
pub(crate) fn random_bytes() -> Result<Zeroizing<[u8; 32]>, BackupError> {
    use rand::TryRng;
    let mut out = Zeroizing::new([0u8; 32]);
    rand::rngs::SysRng
        .try_fill_bytes(out.as_mut())
        .map_err(|_| BackupError::Randomness)?;
    Ok(out)
}

/// Bit `i` of the challenge, most significant bit of byte 0 first.
fn challenge_bit(challenge: &[u8; CHALLENGE_LEN], i: usize) -> usize {
    usize::from((challenge[i / 8] >> (7 - i % 8)) & 1)
}

/// How the seed of a ciphertext becomes its HPKE ephemeral key: the one difference between the
/// leaf proofs of backup formats 1 and 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ephemeral {
    /// Format 1 (read only): the `hpke` crate's key generation fed with
    /// `ChaCha20Rng::from_seed(seed)`. Reproducible only as long as that crate draws its
    /// randomness the same way, which it does not promise.
    SeededGenerator,
    /// Format 2: RFC 9180 `DeriveKeyPair(seed)`, then the RFC's own `SealBase` steps.
    DeriveKeyPair,
}

/// Everything that binds a leaf's ciphertexts: the holder key, the backup and the leaf.
struct LeafBinding<'a> {
    ephemeral: Ephemeral,
    pk: &'a HolderPublicKey,
    hpke_pk: <Kem as hpke::Kem>::PublicKey,
    info: Vec<u8>,
    leaf_id: &'a [u8],
    context: &'a [u8; 32],
    /// The holder label, for error messages.
    leaf: String,
}

impl<'a> LeafBinding<'a> {
    fn new(
        ephemeral: Ephemeral,
        pk: &'a HolderPublicKey,
        leaf_id: &'a [u8],
        context: &'a [u8; 32],
    ) -> Result<Self, BackupError> {
        let leaf = pk.label().to_string();
        if leaf_id.is_empty() || leaf_id.len() > MAX_LEAF_ID_LEN {
            return Err(BackupError::LeafProof {
                leaf,
                reason: format!("the leaf id must be 1 to {MAX_LEAF_ID_LEN} bytes"),
            });
        }
        let mut info = Vec::with_capacity(INFO_TAG.len() + 32);
        info.extend_from_slice(INFO_TAG);
        info.extend_from_slice(context);
        Ok(LeafBinding {
            ephemeral,
            pk,
            hpke_pk: pk.hpke_key()?,
            info,
            leaf_id,
            context,
            leaf,
        })
    }

    /// `aad = leaf id ‖ i (u16 BE) ‖ b`.
    fn aad(&self, i: usize, b: usize) -> Vec<u8> {
        let mut aad = Vec::with_capacity(self.leaf_id.len() + 3);
        aad.extend_from_slice(self.leaf_id);
        // i < REPETITIONS = 128 and b ∈ {0, 1}: both fit.
        aad.extend_from_slice(&u16::try_from(i).unwrap_or(u16::MAX).to_be_bytes());
        aad.push(u8::try_from(b).unwrap_or(u8::MAX));
        aad
    }

    /// Step 3: `c_ib = HPKE.Seal(pk, info, aad_ib, a_ib)` with the ephemeral key of `s_ib`.
    fn seal(
        &self,
        i: usize,
        b: usize,
        half: &[u8; 32],
        seed: &[u8; 32],
    ) -> Result<Ciphertext, BackupError> {
        match self.ephemeral {
            Ephemeral::SeededGenerator => self.seal_with_seeded_generator(i, b, half, seed),
            Ephemeral::DeriveKeyPair => {
                let (enc, ct) = crate::hpke_seeded::seal_base(
                    &self.pk.key_bytes(),
                    &self.info,
                    &self.aad(i, b),
                    half,
                    seed,
                )
                .map_err(|_| BackupError::Encryption {
                    label: self.leaf.clone(),
                    reason: "HPKE encryption failed",
                })?;
                let ct: [u8; CT_LEN] = ct.try_into().map_err(|_| BackupError::Encryption {
                    label: self.leaf.clone(),
                    reason: "HPKE produced a ciphertext of unexpected length",
                })?;
                Ok(Ciphertext { enc, ct })
            }
        }
    }

    /// Format 1's step 3: randomness `ChaCha20Rng(s_ib)` given to the `hpke` crate.
    fn seal_with_seeded_generator(
        &self,
        i: usize,
        b: usize,
        half: &[u8; 32],
        seed: &[u8; 32],
    ) -> Result<Ciphertext, BackupError> {
        let mut rng = ChaCha20Rng::from_seed(*seed);
        let (enc, ct) = hpke::single_shot_seal_with_rng::<Aead, Kdf, Kem>(
            &hpke::OpModeS::Base,
            &self.hpke_pk,
            &self.info,
            half,
            &self.aad(i, b),
            &mut rng,
        )
        .map_err(|_| BackupError::Encryption {
            label: self.leaf.clone(),
            reason: "HPKE encryption failed",
        })?;
        let mut out = Ciphertext {
            enc: [0u8; ENC_LEN],
            ct: [0u8; CT_LEN],
        };
        out.enc
            .copy_from_slice(hpke::Serializable::to_bytes(&enc).as_slice());
        if ct.len() != CT_LEN {
            return Err(BackupError::Encryption {
                label: self.leaf.clone(),
                reason: "HPKE produced a ciphertext of unexpected length",
            });
        }
        out.ct.copy_from_slice(&ct);
        Ok(out)
    }

    /// Step 4: the Fiat–Shamir challenge over the whole first move. Every variable-length field
    /// is length-prefixed (u32 BE).
    fn challenge(
        &self,
        public: &[u8; 33],
        commitments: &[[u8; 33]],
        first: &[Ciphertext],
        second: &[Ciphertext],
    ) -> [u8; CHALLENGE_LEN] {
        fn field(h: &mut Sha256, bytes: &[u8]) {
            h.update(u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
            h.update(bytes);
        }
        let mut h = Sha256::new();
        field(&mut h, CHALLENGE_TAG);
        field(&mut h, self.context);
        field(&mut h, self.leaf_id);
        field(&mut h, &self.pk.key_bytes());
        field(&mut h, public);
        h.update(
            u32::try_from(commitments.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        for commitment in commitments {
            field(&mut h, commitment);
        }
        for c in first.iter().chain(second) {
            field(&mut h, &c.enc);
            field(&mut h, &c.ct);
        }
        let digest = h.finalize();
        let mut out = [0u8; CHALLENGE_LEN];
        out.copy_from_slice(&digest[..CHALLENGE_LEN]);
        out
    }

    fn proof_error(&self, repetition: usize, reason: &'static str) -> BackupError {
        BackupError::Proof {
            leaf: self.leaf.clone(),
            repetition,
            reason,
        }
    }
}

/// Encrypts `v` to the holder `pk`, with a proof that the ciphertexts hold the discrete logarithm
/// of `v·G`, bound to `leaf_id` and the backup's 32-byte `context` digest. Proofs are always
/// written with [`Ephemeral::DeriveKeyPair`].
///
/// # Errors
/// [`BackupError::InvalidSecret`] for `v = 0`; [`BackupError::LeafProof`] for an empty or
/// oversize leaf id; [`BackupError::Randomness`]; [`BackupError::Encryption`].
pub fn encrypt(
    pk: &HolderPublicKey,
    v: &Scalar,
    leaf_id: &[u8],
    context: &[u8; 32],
) -> Result<LeafProof, BackupError> {
    prove(
        Ephemeral::DeriveKeyPair,
        pk,
        v,
        leaf_id,
        context,
        &mut |_, _, _| {},
    )
}

/// The prover, with a hook on each plaintext before it is sealed (tests use it to play a cheating
/// prover; [`encrypt`] passes a no-op).
pub(crate) fn prove(
    ephemeral: Ephemeral,
    pk: &HolderPublicKey,
    v: &Scalar,
    leaf_id: &[u8],
    context: &[u8; 32],
    plaintext_hook: &mut dyn FnMut(usize, usize, &mut [u8; 32]),
) -> Result<LeafProof, BackupError> {
    if bool::from(v.is_zero()) {
        return Err(BackupError::InvalidSecret(
            "a zero share cannot be backed up",
        ));
    }
    let binding = LeafBinding::new(ephemeral, pk, leaf_id, context)?;
    let public = encode_point(&(ProjectivePoint::mul_by_generator(v)));

    let mut halves: Vec<[Zeroizing<[u8; 32]>; 2]> = Vec::with_capacity(REPETITIONS);
    let mut seeds: Vec<[Zeroizing<[u8; 32]>; 2]> = Vec::with_capacity(REPETITIONS);
    let mut commitments = Vec::with_capacity(REPETITIONS);
    let mut first = Vec::with_capacity(REPETITIONS);
    let mut second = Vec::with_capacity(REPETITIONS);
    for i in 0..REPETITIONS {
        // Step 1: a_i0 = r_i, a_i1 = v − r_i, both nonzero (so each commitment is a real point).
        let (a0, a1) = loop {
            let r = random_nonzero_scalar()?;
            let rest = Zeroizing::new(v - &*r);
            if !bool::from(rest.is_zero()) {
                break (r, rest);
            }
        };
        // Step 2: A_i0 = a_i0·G.
        commitments.push(encode_point(&ProjectivePoint::mul_by_generator(&a0)));
        // Step 3: encrypt both halves under fresh seeds.
        let pair = [scalar_bytes(&a0), scalar_bytes(&a1)];
        let pair_seeds = [random_bytes()?, random_bytes()?];
        for (b, out) in [&mut first, &mut second].into_iter().enumerate() {
            let mut plaintext = pair[b].clone();
            plaintext_hook(i, b, &mut plaintext);
            out.push(binding.seal(i, b, &plaintext, &pair_seeds[b])?);
        }
        halves.push(pair);
        seeds.push(pair_seeds);
    }

    // Step 4: e = H(..., all A_i0, all c_i0, all c_i1), one bit per repetition.
    let challenge = binding.challenge(&public, &commitments, &first, &second);

    // Step 5: open half e_i, keep the ciphertext of half 1 − e_i.
    let mut proof = LeafProof {
        challenge: ByteArray::new(challenge),
        commitments: commitments.into_iter().map(ByteArray::new).collect(),
        opened_halves: Vec::with_capacity(REPETITIONS),
        opened_seeds: Vec::with_capacity(REPETITIONS),
        unopened_encs: Vec::with_capacity(REPETITIONS),
        unopened_cts: Vec::with_capacity(REPETITIONS),
    };
    for i in 0..REPETITIONS {
        let e = challenge_bit(&challenge, i);
        let unopened = if e == 0 { second[i] } else { first[i] };
        proof.opened_halves.push(ByteArray::new(*halves[i][e]));
        proof.opened_seeds.push(ByteArray::new(*seeds[i][e]));
        proof.unopened_encs.push(ByteArray::new(unopened.enc));
        proof.unopened_cts.push(ByteArray::new(unopened.ct));
    }
    Ok(proof)
}

/// A proof whose shape has been checked: the right number of repetitions everywhere.
struct Shaped<'p> {
    proof: &'p LeafProof,
    challenge: [u8; CHALLENGE_LEN],
}

fn check_shape<'p>(
    binding: &LeafBinding<'_>,
    proof: &'p LeafProof,
) -> Result<Shaped<'p>, BackupError> {
    let counts = [
        ("commitments", proof.commitments.len()),
        ("opened halves", proof.opened_halves.len()),
        ("opened seeds", proof.opened_seeds.len()),
        ("unopened encapsulated keys", proof.unopened_encs.len()),
        ("unopened ciphertexts", proof.unopened_cts.len()),
    ];
    for (what, count) in counts {
        if count != REPETITIONS {
            return Err(BackupError::LeafProof {
                leaf: binding.leaf.clone(),
                reason: format!("the proof has {count} {what}, expected {REPETITIONS}"),
            });
        }
    }
    Ok(Shaped {
        proof,
        challenge: proof.challenge.into_array(),
    })
}

/// Checks, without any secret, that `proof` encrypts to the holder `pk` the discrete logarithm of
/// `public`, for this `leaf_id` and `context`.
///
/// # Errors
/// [`BackupError::Proof`] naming the first failing repetition and why,
/// [`BackupError::LeafProof`] for a malformed proof, a bad public point or a challenge mismatch.
pub fn verify(
    ephemeral: Ephemeral,
    pk: &HolderPublicKey,
    public: &ProjectivePoint,
    leaf_id: &[u8],
    context: &[u8; 32],
    proof: &LeafProof,
) -> Result<(), BackupError> {
    let binding = LeafBinding::new(ephemeral, pk, leaf_id, context)?;
    verify_bound(&binding, public, proof).map(|_| ())
}

/// The cheap half of verification (no encryption): the proof's shape, and for every repetition
/// that the opened half is a canonical nonzero scalar matching its commitment. [`crate::backup`]
/// runs it over every leaf before the full [`verify`] of each, so that most damage is reported
/// without re-encrypting anything.
pub(crate) fn precheck(
    ephemeral: Ephemeral,
    pk: &HolderPublicKey,
    public: &ProjectivePoint,
    leaf_id: &[u8],
    context: &[u8; 32],
    proof: &LeafProof,
) -> Result<(), BackupError> {
    let binding = LeafBinding::new(ephemeral, pk, leaf_id, context)?;
    check_openings(&binding, public, proof).map(|_| ())
}

fn check_openings<'p>(
    binding: &LeafBinding<'_>,
    public: &ProjectivePoint,
    proof: &'p LeafProof,
) -> Result<Shaped<'p>, BackupError> {
    if bool::from(public.is_identity()) {
        return Err(BackupError::LeafProof {
            leaf: binding.leaf.clone(),
            reason: "the leaf's public point is the identity".into(),
        });
    }
    let shaped = check_shape(binding, proof)?;
    for i in 0..REPETITIONS {
        let e = challenge_bit(&shaped.challenge, i);
        let a = decode_nonzero_scalar(&proof.opened_halves[i].into_array()).ok_or_else(|| {
            binding.proof_error(i, "the opened share is not a canonical nonzero scalar")
        })?;
        // The commitment A_i0 that the opened half implies: a·G if half 0 was opened, else
        // V − a·G (as A_i1 = V − A_i0). Comparing encodings checks that the commitment is the
        // canonical encoding of that point, without decompressing it.
        let opened_point = ProjectivePoint::mul_by_generator(&a);
        let implied = if e == 0 {
            opened_point
        } else {
            public - &opened_point
        };
        if bool::from(implied.is_identity()) {
            return Err(binding.proof_error(i, "the commitment is the identity point"));
        }
        if encode_point(&implied) != proof.commitments[i].into_array() {
            return Err(binding.proof_error(i, "the opened share does not match its commitment"));
        }
    }
    Ok(shaped)
}

/// [`verify`], returning the shaped proof for [`decrypt`].
fn verify_bound<'p>(
    binding: &LeafBinding<'_>,
    public: &ProjectivePoint,
    proof: &'p LeafProof,
) -> Result<Shaped<'p>, BackupError> {
    let shaped = check_openings(binding, public, proof)?;
    let public_bytes = encode_point(public);
    let mut commitments = Vec::with_capacity(REPETITIONS);
    let mut first = Vec::with_capacity(REPETITIONS);
    let mut second = Vec::with_capacity(REPETITIONS);
    for i in 0..REPETITIONS {
        let e = challenge_bit(&shaped.challenge, i);
        // Recompute c_ie from (a_ie, s_ie): deterministic HPKE encryption.
        let opened = binding.seal(
            i,
            e,
            &proof.opened_halves[i].into_array(),
            &proof.opened_seeds[i].into_array(),
        )?;
        let unopened = Ciphertext {
            enc: proof.unopened_encs[i].into_array(),
            ct: proof.unopened_cts[i].into_array(),
        };
        let (c0, c1) = if e == 0 {
            (opened, unopened)
        } else {
            (unopened, opened)
        };
        commitments.push(proof.commitments[i].into_array());
        first.push(c0);
        second.push(c1);
    }
    let challenge = binding.challenge(&public_bytes, &commitments, &first, &second);
    if challenge != shaped.challenge {
        return Err(BackupError::LeafProof {
            leaf: binding.leaf.clone(),
            reason: "the proof's challenge does not match its commitments and ciphertexts \
                     (the backup was altered, or the proof is false)"
                .into(),
        });
    }
    Ok(shaped)
}

/// Verifies `proof` (against the public key of `sk`), then decrypts the share with the holder's
/// secret key: the first unopened ciphertext that opens to the missing half gives `v`, checked
/// against `public`.
///
/// # Errors
/// The errors of [`verify`]; [`BackupError::Decryption`] when no ciphertext opens to the share
/// (only possible with negligible probability for a proof that verifies).
pub fn decrypt(
    ephemeral: Ephemeral,
    sk: &HolderSecretKey,
    public: &ProjectivePoint,
    leaf_id: &[u8],
    context: &[u8; 32],
    proof: &LeafProof,
) -> Result<Zeroizing<Scalar>, BackupError> {
    let pk = sk.public();
    let binding = LeafBinding::new(ephemeral, &pk, leaf_id, context)?;
    let shaped = verify_bound(&binding, public, proof)?;
    open(sk, &binding, public, &shaped)
}

/// [`decrypt`] for a proof the caller has just verified (the whole backup, in
/// [`crate::backup::Backup::restore`]).
pub(crate) fn decrypt_verified(
    ephemeral: Ephemeral,
    sk: &HolderSecretKey,
    public: &ProjectivePoint,
    leaf_id: &[u8],
    context: &[u8; 32],
    proof: &LeafProof,
) -> Result<Zeroizing<Scalar>, BackupError> {
    let pk = sk.public();
    let binding = LeafBinding::new(ephemeral, &pk, leaf_id, context)?;
    let shaped = check_shape(&binding, proof)?;
    open(sk, &binding, public, &shaped)
}

fn open(
    sk: &HolderSecretKey,
    binding: &LeafBinding<'_>,
    public: &ProjectivePoint,
    shaped: &Shaped<'_>,
) -> Result<Zeroizing<Scalar>, BackupError> {
    let hpke_sk = sk.hpke_key()?;
    let proof = shaped.proof;
    for i in 0..REPETITIONS {
        let e = challenge_bit(&shaped.challenge, i);
        let Some(opened) = decode_nonzero_scalar(&proof.opened_halves[i].into_array()) else {
            continue;
        };
        let Ok(enc) = <<Kem as hpke::Kem>::EncappedKey as hpke::Deserializable>::from_bytes(
            proof.unopened_encs[i].as_slice(),
        ) else {
            continue;
        };
        let Ok(plaintext) = hpke::single_shot_open::<Aead, Kdf, Kem>(
            &hpke::OpModeR::Base,
            &hpke_sk,
            &enc,
            &binding.info,
            proof.unopened_cts[i].as_slice(),
            &binding.aad(i, 1 - e),
        ) else {
            continue;
        };
        let plaintext = Zeroizing::new(plaintext);
        let Ok(bytes) = <[u8; 32]>::try_from(plaintext.as_slice()) else {
            continue;
        };
        let bytes = Zeroizing::new(bytes);
        let Some(other) = decode_nonzero_scalar(&bytes) else {
            continue;
        };
        let other = Zeroizing::new(other);
        // v = a_i0 + a_i1, whichever half was opened.
        let v = Zeroizing::new(opened + *other);
        if ProjectivePoint::mul_by_generator(&v) == *public {
            return Ok(v);
        }
    }
    Err(BackupError::Decryption {
        leaf: binding.leaf.clone(),
        reason: "none of the unopened ciphertexts decrypts to the share \
                 (the key is not this leaf's holder key, or the proof is false)",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: Ephemeral = Ephemeral::DeriveKeyPair;

    const CONTEXT: [u8; 32] = [9u8; 32];
    const LEAF: &[u8] = b"leaf:cloud/0";

    fn setup() -> (HolderSecretKey, Scalar, ProjectivePoint, LeafProof) {
        let sk = HolderSecretKey::generate("cloud").unwrap();
        let v = *random_nonzero_scalar().unwrap();
        let public = ProjectivePoint::GENERATOR * v;
        let proof = encrypt(&sk.public(), &v, LEAF, &CONTEXT).unwrap();
        (sk, v, public, proof)
    }

    fn expect_proof_error(result: Result<(), BackupError>, want: &str) {
        let err = result.unwrap_err().to_string();
        assert!(err.contains(want), "expected {want:?}, got {err:?}");
        assert!(err.starts_with("leaf \"cloud\""), "{err}");
    }

    #[test]
    fn round_trip() {
        let (sk, v, public, proof) = setup();
        verify(E, &sk.public(), &public, LEAF, &CONTEXT, &proof).unwrap();
        let got = decrypt(E, &sk, &public, LEAF, &CONTEXT, &proof).unwrap();
        assert_eq!(*got, v);
        assert_eq!(proof.commitments.len(), REPETITIONS);
        // Both challenge values occur (a 128-bit challenge with all bits equal has probability
        // 2⁻¹²⁷).
        let bits: Vec<usize> = (0..REPETITIONS)
            .map(|i| challenge_bit(&proof.challenge.into_array(), i))
            .collect();
        assert!(bits.contains(&0) && bits.contains(&1));
        // CBOR round trip keeps the proof valid.
        let mut bytes = Vec::new();
        ciborium::into_writer(&proof, &mut bytes).unwrap();
        let back: LeafProof = ciborium::from_reader(bytes.as_slice()).unwrap();
        assert_eq!(back, proof);
    }

    #[test]
    fn bound_to_key_point_leaf_and_context() {
        let (sk, _, public, proof) = setup();
        let pk = sk.public();
        let other_pk = HolderSecretKey::generate("cloud").unwrap().public();
        expect_proof_error(verify(E, &other_pk, &public, LEAF, &CONTEXT, &proof), "");
        let other_point = public + ProjectivePoint::GENERATOR;
        expect_proof_error(verify(E, &pk, &other_point, LEAF, &CONTEXT, &proof), "");
        expect_proof_error(
            verify(E, &pk, &public, b"leaf:cloud/1", &CONTEXT, &proof),
            "",
        );
        expect_proof_error(verify(E, &pk, &public, LEAF, &[8u8; 32], &proof), "");
        expect_proof_error(
            verify(E, &pk, &ProjectivePoint::IDENTITY, LEAF, &CONTEXT, &proof),
            "identity",
        );
        expect_proof_error(verify(E, &pk, &public, b"", &CONTEXT, &proof), "leaf id");
    }

    #[test]
    fn cheating_prover_is_caught() {
        // The prover encrypts garbage for one half of every repetition: some opened half is then
        // garbage unless it guessed all 128 challenge bits.
        let sk = HolderSecretKey::generate("cloud").unwrap();
        let v = *random_nonzero_scalar().unwrap();
        let public = ProjectivePoint::GENERATOR * v;
        let mut cheat = |i: usize, b: usize, pt: &mut [u8; 32]| {
            if b == i % 2 {
                pt[31] ^= 1;
            }
        };
        let proof = prove(E, &sk.public(), &v, LEAF, &CONTEXT, &mut cheat).unwrap();
        expect_proof_error(
            verify(E, &sk.public(), &public, LEAF, &CONTEXT, &proof),
            "challenge does not match",
        );
        assert!(decrypt(E, &sk, &public, LEAF, &CONTEXT, &proof).is_err());
    }

    #[test]
    fn one_garbage_half_is_caught_or_harmless() {
        // Garbage in one half of repetition 5: caught if that half is opened; otherwise the proof
        // verifies and the other repetitions still decrypt to v.
        let sk = HolderSecretKey::generate("cloud").unwrap();
        let v = *random_nonzero_scalar().unwrap();
        let public = ProjectivePoint::GENERATOR * v;
        let mut cheat = |i: usize, b: usize, pt: &mut [u8; 32]| {
            if i == 5 && b == 0 {
                *pt = [0xff; 32];
            }
        };
        let proof = prove(E, &sk.public(), &v, LEAF, &CONTEXT, &mut cheat).unwrap();
        let result = verify(E, &sk.public(), &public, LEAF, &CONTEXT, &proof);
        if challenge_bit(&proof.challenge.into_array(), 5) == 0 {
            expect_proof_error(result, "challenge does not match");
        } else {
            result.unwrap();
            assert_eq!(
                *decrypt(E, &sk, &public, LEAF, &CONTEXT, &proof).unwrap(),
                v
            );
        }
    }

    #[test]
    fn wrong_secret_key_cannot_decrypt() {
        let (sk, _, public, proof) = setup();
        let other = HolderSecretKey::generate("cloud").unwrap();
        // Verified against the other key's public key: the challenge does not match.
        assert!(decrypt(E, &other, &public, LEAF, &CONTEXT, &proof).is_err());
        // Skipping verification: nothing opens.
        let err = decrypt_verified(E, &other, &public, LEAF, &CONTEXT, &proof).unwrap_err();
        assert!(matches!(err, BackupError::Decryption { .. }), "{err}");
        drop(sk);
    }

    #[test]
    fn malformed_proofs_are_rejected_with_reasons() {
        let (sk, _, public, proof) = setup();
        let pk = sk.public();
        let check = |mutate: &dyn Fn(&mut LeafProof), want: &str| {
            let mut bad = proof.clone();
            mutate(&mut bad);
            expect_proof_error(verify(E, &pk, &public, LEAF, &CONTEXT, &bad), want);
        };
        check(
            &|p| {
                p.commitments.pop();
            },
            "127 commitments, expected 128",
        );
        check(
            &|p| p.opened_seeds.push(ByteArray::new([0; 32])),
            "129 opened seeds",
        );
        check(&|p| p.unopened_cts.clear(), "0 unopened ciphertexts");
        // Group order n: not canonical.
        let order: [u8; 32] =
            hex::decode("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141")
                .unwrap()
                .try_into()
                .unwrap();
        check(
            &|p| p.opened_halves[17] = ByteArray::new(order),
            "repetition 17: the opened share is not a canonical nonzero scalar",
        );
        check(
            &|p| p.opened_halves[3] = ByteArray::new([0; 32]),
            "repetition 3: the opened share is not a canonical",
        );
        check(
            &|p| {
                let mut h = p.opened_halves[17].into_array();
                h[31] ^= 1;
                p.opened_halves[17] = ByteArray::new(h);
            },
            "repetition 17: the opened share does not match its commitment",
        );
        check(
            &|p| {
                let mut c = p.commitments[9].into_array();
                c[0] = 0x04;
                p.commitments[9] = ByteArray::new(c);
            },
            "repetition 9: the opened share does not match its commitment",
        );
        check(
            &|p| p.commitments[9] = ByteArray::new([0; 33]),
            "repetition 9: the opened share does not match",
        );
        check(
            &|p| {
                let mut s = p.opened_seeds[100].into_array();
                s[0] ^= 1;
                p.opened_seeds[100] = ByteArray::new(s);
            },
            "challenge does not match",
        );
        check(
            &|p| {
                let mut c = p.unopened_cts[127].into_array();
                c[47] ^= 1;
                p.unopened_cts[127] = ByteArray::new(c);
            },
            "challenge does not match",
        );
        check(
            &|p| {
                let mut c = p.challenge.into_array();
                c[15] ^= 1;
                p.challenge = ByteArray::new(c);
            },
            "repetition 127",
        );
    }

    #[test]
    fn format_1_and_format_2_ephemeral_keys_differ_and_both_decrypt() {
        // A proof written the format-1 way verifies and decrypts only as format 1, and a format-2
        // proof only as format 2: the seeds are bound to their derivation.
        let sk = HolderSecretKey::generate("cloud").unwrap();
        let v = *random_nonzero_scalar().unwrap();
        let public = ProjectivePoint::GENERATOR * v;
        let old = Ephemeral::SeededGenerator;
        let v1 = prove(old, &sk.public(), &v, LEAF, &CONTEXT, &mut |_, _, _| {}).unwrap();
        let v2 = encrypt(&sk.public(), &v, LEAF, &CONTEXT).unwrap();
        verify(old, &sk.public(), &public, LEAF, &CONTEXT, &v1).unwrap();
        assert_eq!(*decrypt(old, &sk, &public, LEAF, &CONTEXT, &v1).unwrap(), v);
        verify(E, &sk.public(), &public, LEAF, &CONTEXT, &v2).unwrap();
        expect_proof_error(
            verify(E, &sk.public(), &public, LEAF, &CONTEXT, &v1),
            "challenge does not match",
        );
        expect_proof_error(
            verify(old, &sk.public(), &public, LEAF, &CONTEXT, &v2),
            "challenge does not match",
        );
        // A format-2 opened ciphertext is RFC 9180 SealBase with DeriveKeyPair(seed): its
        // encapsulated key is the public key the `hpke` crate derives from the seed.
        let seed = v2.opened_seeds[0].into_array();
        let (_, pk_e) = <Kem as hpke::Kem>::derive_keypair(&seed);
        let pk = sk.public();
        let binding = LeafBinding::new(E, &pk, LEAF, &CONTEXT).unwrap();
        let e = challenge_bit(&v2.challenge.into_array(), 0);
        let c = binding
            .seal(0, e, &v2.opened_halves[0].into_array(), &seed)
            .unwrap();
        assert_eq!(
            c.enc.as_slice(),
            hpke::Serializable::to_bytes(&pk_e).as_slice()
        );
    }

    #[test]
    fn zero_secret_is_refused() {
        let pk = HolderSecretKey::generate("cloud").unwrap().public();
        let err = encrypt(&pk, &Scalar::ZERO, LEAF, &CONTEXT).unwrap_err();
        assert!(matches!(err, BackupError::InvalidSecret(_)));
    }

    #[test]
    fn debug_shows_no_share_material() {
        let (_, _, _, proof) = setup();
        let debug = format!("{proof:?}");
        assert!(debug.contains("repetitions: 128"), "{debug}");
        assert!(!debug.contains(&hex::encode(proof.opened_halves[0].as_slice())));
    }
}
