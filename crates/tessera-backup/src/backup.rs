//! A party's secret share, secret-shared down an access structure, each leaf verifiably encrypted
//! to its holder; and the versioned backup file.
//!
//! # Sharing
//!
//! The root value is the share's secret scalar `x` (public point `X = x·G`, the party's public
//! share). Going down the tree, a node with value `s`:
//! - `and(c_1, …, c_m)`: additive shares, `s_1, …, s_{m−1}` random and `s_m = s − Σ s_j`;
//! - `or(c_1, …, c_m)`: every child gets `s`;
//! - `threshold(k, c_1, …, c_m)`: Shamir sharing with a random polynomial `f` of degree `k − 1`,
//!   `f(0) = s`; child `j` (1-based) gets `f(j)`. Feldman commitments `C_l = f_l·G` to the
//!   coefficients `l = 1 … k−1` are published.
//!
//! Every node's point `V = s·G` is published. Each leaf's value is encrypted to its holder with
//! the publicly verifiable encryption of [`crate::pve`]. Anybody can then check, without any
//! secret ([`Backup::verify`]): the root point is `X`; an `and` node's point is the sum of its
//! children's; an `or` node's children carry its point; child `j` of a threshold node has point
//! `V + Σ_l C_l·j^l`; and every leaf's proof verifies against its point. So any authorised set of
//! holders can recover `x`: the backup is known to be restorable before it is ever needed.
//!
//! The `aux` blob (the engine's full share state, so a restored share signs at once) is encrypted
//! with ChaCha20-Poly1305 under `HKDF-SHA256(salt, x, "tessera-backup-aux-v1" ‖ pre-digest)`.
//! It is not verifiable (it is opaque); a damaged one is reported at restore
//! ([`BackupError::AuxDamaged`]). Its public part is: from format 2 the context carries
//! `share_state`, a digest of the wallet's public state (see
//! [`crate::wallet::share_state_digest`]), which anybody holding a share of the wallet checks at
//! verification ([`Backup::verify_for_share`]) and which the restored share must match.
//!
//! Every leaf proof is bound to the *context digest*: SHA-256 with a domain tag over the format
//! version, the [`BackupContext`], the structure's canonical text, the holders (label, key), every
//! node point and Feldman commitment, the aux salt (this much is the *pre-digest*) and the aux
//! ciphertext. Changing any byte of a backup file therefore makes it fail to load or to verify.
//!
//! # File layout (format version 2; 1 is still read)
//!
//! ```text
//! "TSBK"                magic, 4 bytes
//! version               u16 big-endian, 2 (or 1)
//! body                  CBOR (RFC 8949), one map:
//!   context             map: wallet_id (text), wallet_name (text), party, threshold_t,
//!                       threshold_n (uint), epoch (uint), wallet_public_key (bytes 33),
//!                       public_share (bytes 33), created_at (uint, unix seconds),
//!                       share_state (bytes 32; format 2 only)
//!   structure           text: the access structure, canonical form
//!   holders             array of maps {label: text, key: bytes 32}, sorted by label
//!   nodes               array, the structure's nodes in pre-order, each a map:
//!     point             bytes 33: compressed SEC1 point of the node's value
//!     commitments       array of bytes 33: Feldman commitments (threshold nodes: k − 1)
//!     proof             null for inner nodes; for leaves a map (see crate::pve::LeafProof):
//!                       challenge (bytes 16), commitments, opened_halves, opened_seeds,
//!                       unopened_encs (arrays of 128 bytes 33/32/32/32), unopened_cts
//!                       (array of 128 bytes 48)
//!   aux_salt            bytes 32
//!   aux_ciphertext      bytes: ChaCha20-Poly1305 ciphertext and tag of the aux blob
//! ```
//!
//! Format 1 differs only in two points: its context has no `share_state`, and the ephemeral keys
//! of its leaf ciphertexts come from the `hpke` crate's key generation fed with a seeded
//! generator rather than from RFC 9180 `DeriveKeyPair` ([`pve::Ephemeral`]). Format-1 files are
//! read, verified and restored as before; only format 2 is written.
//!
//! A file is rejected when it is larger than [`MAX_FILE_BYTES`], has another magic or version,
//! bytes after the body, a body that is not the canonical encoding of its value (re-encoding
//! must give the same bytes), unknown or missing fields, more than [`MAX_HOLDERS`] holders,
//! structure text that does not parse or is not canonical, holders that do not match the
//! structure, or a malformed point or count anywhere.

use std::collections::BTreeMap;
use std::fmt;

use chacha20poly1305::ChaCha20Poly1305;
use chacha20poly1305::aead::{Aead as _, KeyInit, Payload};
use hkdf::Hkdf;
use k256::{ProjectivePoint, Scalar};
use serde::{Deserialize, Serialize};
use serde_bytes::{ByteArray, ByteBuf};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::BackupError;
use crate::holder::{HolderPublicKey, HolderSecretKey};
use crate::pve::{self, LeafProof};
use crate::structure::AccessStructure;

/// The file's magic bytes.
pub const MAGIC: [u8; 4] = *b"TSBK";
/// The file format version written.
pub const FORMAT_VERSION: u16 = 2;
/// The oldest file format version still read.
pub const OLDEST_FORMAT_VERSION: u16 = 1;
/// Largest backup file accepted, in bytes.
pub const MAX_FILE_BYTES: usize = 8 << 20;
/// Most holders in one backup.
pub const MAX_HOLDERS: usize = 32;
/// Largest aux blob accepted by [`Backup::create`], in bytes (the file must stay below
/// [`MAX_FILE_BYTES`] with every leaf proof).
pub const MAX_AUX_BYTES: usize = 4 << 20;
/// Longest wallet id, wallet name, in bytes.
const MAX_NAME_BYTES: usize = 256;

/// Domain tag of the pre-digest (everything but the aux ciphertext).
const PRE_DIGEST_TAG: &[u8] = b"tessera-backup-v1/pre-digest";
/// Domain tag of the context digest given to every leaf proof.
const CONTEXT_DIGEST_TAG: &[u8] = b"tessera-backup-v1/context";
/// HKDF `info` prefix of the aux key.
const AUX_INFO: &[u8] = b"tessera-backup-aux-v1";

/// The public description of the share a backup holds. Bound into every leaf proof.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupContext {
    /// The wallet's id.
    pub wallet_id: String,
    /// The wallet's human name.
    pub wallet_name: String,
    /// The party whose share this is (0-based).
    pub party: u16,
    /// Signers needed in the wallet.
    pub threshold_t: u16,
    /// Share holders in the wallet.
    pub threshold_n: u16,
    /// The share's epoch (incremented by every refresh).
    pub epoch: u64,
    /// The wallet's public key, compressed SEC1.
    #[serde(with = "serde_bytes")]
    pub wallet_public_key: [u8; 33],
    /// The party's public share `x·G`, compressed SEC1.
    #[serde(with = "serde_bytes")]
    pub public_share: [u8; 33],
    /// When the backup was made, unix seconds.
    pub created_at: u64,
    /// A digest of the wallet's public state at this epoch, the same for every party of it
    /// ([`crate::wallet::share_state_digest`]): required from format 2, absent in format 1.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    pub share_state: Option<[u8; 32]>,
}

impl BackupContext {
    /// Checks the fields' shapes: names, threshold, party, points.
    fn validate(&self) -> Result<ProjectivePoint, BackupError> {
        let bad = |reason: String| Err(BackupError::InvalidContext(reason));
        for (what, value, may_be_empty) in [
            ("wallet id", &self.wallet_id, false),
            ("wallet name", &self.wallet_name, true),
        ] {
            if value.is_empty() && !may_be_empty {
                return bad(format!("the {what} is empty"));
            }
            if value.len() > MAX_NAME_BYTES {
                return bad(format!("the {what} is longer than {MAX_NAME_BYTES} bytes"));
            }
            if value.chars().any(char::is_control) {
                return bad(format!("the {what} contains control characters"));
            }
        }
        if self.threshold_t == 0 || self.threshold_t > self.threshold_n {
            return bad(format!(
                "threshold {}-of-{} is impossible",
                self.threshold_t, self.threshold_n
            ));
        }
        if self.party >= self.threshold_n {
            return bad(format!(
                "party {} is not one of the wallet's {} parties (0 to {})",
                self.party,
                self.threshold_n,
                self.threshold_n - 1
            ));
        }
        if pve::decode_point(&self.wallet_public_key).is_none() {
            return bad("the wallet public key is not a valid compressed point".into());
        }
        pve::decode_point(&self.public_share).map_or_else(
            || bad("the public share is not a valid compressed point".into()),
            Ok,
        )
    }

    /// Canonical encoding for the digest: fixed-width integers, length-prefixed strings.
    fn digest_into(&self, h: &mut Sha256) {
        field(h, self.wallet_id.as_bytes());
        field(h, self.wallet_name.as_bytes());
        h.update(self.party.to_be_bytes());
        h.update(self.threshold_t.to_be_bytes());
        h.update(self.threshold_n.to_be_bytes());
        h.update(self.epoch.to_be_bytes());
        h.update(self.wallet_public_key);
        h.update(self.public_share);
        h.update(self.created_at.to_be_bytes());
        // Absent in format 1, whose digest is unchanged; required in format 2 (the version is
        // hashed first, so the two layouts cannot collide).
        if let Some(state) = &self.share_state {
            h.update(state);
        }
    }
}

/// Hashes a length-prefixed (u32 BE) field.
fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update(u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
    h.update(bytes);
}

/// What [`Backup::restore`] recovers. Zeroized on drop; `Debug` is redacted.
pub struct Restored {
    /// The share's secret scalar, 32 bytes big-endian.
    pub secret: Zeroizing<[u8; 32]>,
    /// The aux blob given to [`Backup::create`] (the engine's share state).
    pub aux: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Restored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Restored")
            .field("secret", &"<redacted>")
            .field("aux", &"<redacted>")
            .finish()
    }
}

/// One node of the structure on file.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeRecord {
    point: ByteArray<33>,
    commitments: Vec<ByteArray<33>>,
    proof: Option<LeafProof>,
}

/// The CBOR body of the file.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    context: BackupContext,
    structure: String,
    holders: Vec<HolderPublicKey>,
    nodes: Vec<NodeRecord>,
    aux_salt: ByteArray<32>,
    aux_ciphertext: ByteBuf,
}

/// A node of the structure with its place: pre-order index, children's indices, path.
struct FlatNode<'a> {
    node: &'a AccessStructure,
    children: Vec<usize>,
    /// Child positions from the root (0-based).
    path: Vec<usize>,
}

impl FlatNode<'_> {
    /// "threshold(2, a, b, c) at the root", "or(b, c) at root/2": for error messages.
    fn describe(&self) -> String {
        format!("{} at {}", self.node, path_text(&self.path))
    }

    /// The Feldman commitments a node must have.
    fn commitment_count(&self) -> usize {
        match self.node {
            AccessStructure::Threshold { k, .. } => k.saturating_sub(1),
            _ => 0,
        }
    }

    fn label(&self) -> Option<&str> {
        match self.node {
            AccessStructure::Leaf(label) => Some(label),
            _ => None,
        }
    }

    /// The id a leaf proof is bound to: `<label>@<path>`, e.g. `cloud@r.2.0`.
    fn leaf_id(&self, label: &str) -> Vec<u8> {
        let mut id = format!("{label}@r");
        for i in &self.path {
            id.push('.');
            id.push_str(&i.to_string());
        }
        id.into_bytes()
    }
}

/// Human path: "the root" or "root/2/1" (1-based child positions).
fn path_text(path: &[usize]) -> String {
    if path.is_empty() {
        return "the root".into();
    }
    let mut out = String::from("root");
    for i in path {
        out.push('/');
        out.push_str(&(i + 1).to_string());
    }
    out
}

fn flatten(structure: &AccessStructure) -> Vec<FlatNode<'_>> {
    fn walk<'a>(node: &'a AccessStructure, path: Vec<usize>, out: &mut Vec<FlatNode<'a>>) -> usize {
        let index = out.len();
        out.push(FlatNode {
            node,
            children: Vec::new(),
            path: path.clone(),
        });
        let mut children = Vec::new();
        for (i, child) in node.children().iter().enumerate() {
            let mut child_path = path.clone();
            child_path.push(i);
            children.push(walk(child, child_path, out));
        }
        out[index].children = children;
        index
    }
    let mut out = Vec::new();
    walk(structure, Vec::new(), &mut out);
    out
}

/// What a verifier holding a share of the same wallet expects a backup of a party's share to
/// state ([`crate::wallet::expected_share`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedShare {
    /// The party's public share, compressed SEC1.
    pub public_share: [u8; 33],
    /// The wallet's share-state digest ([`crate::wallet::share_state_digest`]).
    pub share_state: [u8; 32],
}

/// A backup of one party's share: public, verifiable by anybody, restorable by any authorised set
/// of holders.
#[derive(Clone, PartialEq, Eq)]
pub struct Backup {
    /// The file format version (1 or 2).
    version: u16,
    body: Body,
    structure: AccessStructure,
    /// Decoded `body.nodes[i].point`.
    points: Vec<ProjectivePoint>,
    /// Decoded `body.nodes[i].commitments`.
    commitments: Vec<Vec<ProjectivePoint>>,
    /// The digest every leaf proof is bound to.
    context_digest: [u8; 32],
    /// The pre-digest the aux key is bound to.
    pre_digest: [u8; 32],
}

impl fmt::Debug for Backup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backup")
            .field("context", &self.body.context)
            .field("structure", &self.body.structure)
            .field("holders", &self.body.holders)
            .finish_non_exhaustive()
    }
}

/// The node values of a sharing, in pre-order, zeroized on drop.
struct Sharing {
    values: Vec<Zeroizing<Scalar>>,
    commitments: Vec<Vec<ProjectivePoint>>,
}

/// Shares `value` down the tree (see the module documentation).
fn share_down(flat: &[FlatNode<'_>], value: &Scalar) -> Result<Sharing, BackupError> {
    let mut values: Vec<Zeroizing<Scalar>> = vec![Zeroizing::new(Scalar::ZERO); flat.len()];
    let mut commitments = vec![Vec::new(); flat.len()];
    values[0] = Zeroizing::new(*value);
    // Pre-order: a parent's value is set before its children are visited.
    for (index, node) in flat.iter().enumerate() {
        let s = values[index].clone();
        let children = &node.children;
        match node.node {
            AccessStructure::Leaf(_) => {}
            AccessStructure::Or(_) => {
                for &c in children {
                    values[c] = s.clone();
                }
            }
            AccessStructure::And(_) => {
                // s_1 … s_{m−1} random, s_m = s − Σ; every share nonzero so every point is a
                // real point (a zero last share has probability 2⁻²⁵⁶: draw again).
                let shares = loop {
                    let mut shares = Vec::with_capacity(children.len());
                    let mut sum = Zeroizing::new(Scalar::ZERO);
                    for _ in 1..children.len() {
                        let r = pve::random_nonzero_scalar()?;
                        *sum += &*r;
                        shares.push(r);
                    }
                    let last = Zeroizing::new(*s - *sum);
                    if !bool::from(last.is_zero()) {
                        shares.push(last);
                        break shares;
                    }
                };
                for (&c, share) in children.iter().zip(shares) {
                    values[c] = share;
                }
            }
            AccessStructure::Threshold { k, .. } => {
                // f(z) = s + f_1 z + … + f_{k−1} z^{k−1}; child j (1-based) gets f(j).
                let (coefficients, shares) = loop {
                    let coefficients = (1..*k)
                        .map(|_| pve::random_nonzero_scalar())
                        .collect::<Result<Vec<_>, _>>()?;
                    let shares: Vec<Zeroizing<Scalar>> = (1..=children.len())
                        .map(|j| evaluate(&s, &coefficients, j))
                        .collect();
                    if shares.iter().all(|v| !bool::from(v.is_zero())) {
                        break (coefficients, shares);
                    }
                };
                commitments[index] = coefficients
                    .iter()
                    .map(|c| ProjectivePoint::mul_by_generator(c))
                    .collect();
                for (&c, share) in children.iter().zip(shares) {
                    values[c] = share;
                }
            }
        }
    }
    Ok(Sharing {
        values,
        commitments,
    })
}

/// `f(x) = constant + Σ_l coefficients[l−1]·x^l`, by Horner's rule.
fn evaluate(constant: &Scalar, coefficients: &[Zeroizing<Scalar>], x: usize) -> Zeroizing<Scalar> {
    let x = Scalar::from(x as u64);
    let mut acc = Zeroizing::new(Scalar::ZERO);
    for c in coefficients.iter().rev() {
        *acc = (*acc + **c) * x;
    }
    *acc += constant;
    acc
}

/// The Lagrange coefficient at 0 of `x_j` over the set `xs` (distinct, nonzero).
fn lagrange_at_zero(xs: &[u64], j: usize) -> Option<Scalar> {
    let xj = Scalar::from(xs[j]);
    let mut numerator = Scalar::ONE;
    let mut denominator = Scalar::ONE;
    for (m, &x) in xs.iter().enumerate() {
        if m != j {
            let xm = Scalar::from(x);
            numerator *= xm;
            denominator *= xm - xj;
        }
    }
    Option::<Scalar>::from(denominator.invert()).map(|inv| numerator * inv)
}

impl Backup {
    /// Backs up `secret` (whose public point must be `context.public_share`) under `structure`,
    /// each leaf verifiably encrypted to the holder of its label, with `aux` (the engine's share
    /// state) encrypted alongside.
    ///
    /// # Errors
    /// [`BackupError::InvalidSecret`] (zero, or not matching the public share),
    /// [`BackupError::InvalidContext`], [`BackupError::InvalidStructure`],
    /// [`BackupError::HolderMismatch`] (a holder key missing, extra or given twice),
    /// [`BackupError::Randomness`], [`BackupError::Encryption`], [`BackupError::Format`] for an
    /// aux blob too large.
    pub fn create(
        secret: &Scalar,
        context: BackupContext,
        structure: &AccessStructure,
        holders: &[HolderPublicKey],
        aux: &[u8],
    ) -> Result<Backup, BackupError> {
        let public_share = context.validate()?;
        if context.share_state.is_none() {
            return Err(BackupError::InvalidContext(
                "the share-state digest is missing (format 2 requires it)".into(),
            ));
        }
        if bool::from(secret.is_zero()) {
            return Err(BackupError::InvalidSecret("the share is zero"));
        }
        if ProjectivePoint::mul_by_generator(secret) != public_share {
            return Err(BackupError::InvalidSecret(
                "the share does not match the context's public share",
            ));
        }
        structure
            .validate()
            .map_err(|e| BackupError::InvalidStructure(e.to_string()))?;
        let holders = match_holders(structure, holders)?;
        if aux.len() > MAX_AUX_BYTES {
            return Err(BackupError::Format(format!(
                "the aux blob is {} bytes, more than the {MAX_AUX_BYTES} allowed",
                aux.len()
            )));
        }

        let flat = flatten(structure);
        let sharing = share_down(&flat, secret)?;
        let points: Vec<ProjectivePoint> = sharing
            .values
            .iter()
            .map(|v| ProjectivePoint::mul_by_generator(v))
            .collect();
        let mut body = Body {
            context,
            structure: structure.to_string(),
            holders,
            nodes: points
                .iter()
                .zip(&sharing.commitments)
                .map(|(p, cs)| NodeRecord {
                    point: ByteArray::new(pve::encode_point(p)),
                    commitments: cs
                        .iter()
                        .map(|c| ByteArray::new(pve::encode_point(c)))
                        .collect(),
                    proof: None,
                })
                .collect(),
            aux_salt: ByteArray::new(*pve::random_bytes()?),
            aux_ciphertext: ByteBuf::new(),
        };

        let pre_digest = pre_digest(FORMAT_VERSION, &body);
        let cipher = aux_cipher(secret, &body.aux_salt.into_array(), &pre_digest);
        body.aux_ciphertext = ByteBuf::from(
            cipher
                .encrypt(
                    &AUX_NONCE.into(),
                    Payload {
                        msg: aux,
                        aad: &pre_digest,
                    },
                )
                .map_err(|_| BackupError::Encryption {
                    label: "aux".into(),
                    reason: "ChaCha20-Poly1305 encryption of the aux blob failed",
                })?,
        );
        let context_digest = context_digest(&pre_digest, &body.aux_ciphertext);

        let keys: BTreeMap<&str, &HolderPublicKey> =
            body.holders.iter().map(|h| (h.label(), h)).collect();
        let mut proofs = Vec::new();
        for (index, node) in flat.iter().enumerate() {
            if let Some(label) = node.label() {
                let pk = keys.get(label).ok_or_else(|| {
                    BackupError::HolderMismatch(format!("no key for holder {label:?}"))
                })?;
                let proof = pve::encrypt(
                    pk,
                    &sharing.values[index],
                    &node.leaf_id(label),
                    &context_digest,
                )?;
                proofs.push((index, proof));
            }
        }
        for (index, proof) in proofs {
            body.nodes[index].proof = Some(proof);
        }
        drop(sharing);

        let backup = Backup {
            version: FORMAT_VERSION,
            body,
            structure: structure.clone(),
            points,
            commitments: Vec::new(),
            context_digest,
            pre_digest,
        };
        // Round-trip through the file form: the backup returned is exactly what a reader gets.
        let bytes = backup.to_bytes();
        if bytes.len() > MAX_FILE_BYTES {
            return Err(BackupError::Format(format!(
                "the backup would be {} bytes, more than the {MAX_FILE_BYTES} allowed",
                bytes.len()
            )));
        }
        Backup::from_bytes(&bytes)
    }

    /// Checks everything that can be checked without a secret: the root point is the public
    /// share, every node's point is consistent with its parent's (sums, equalities, Feldman
    /// commitments), and every leaf's proof verifies. A backup that verifies can be restored by
    /// every authorised set of holders.
    ///
    /// # Errors
    /// [`BackupError::Node`] naming the inconsistent node, [`BackupError::Proof`] /
    /// [`BackupError::LeafProof`] naming the leaf (and repetition) whose proof fails.
    pub fn verify(&self) -> Result<(), BackupError> {
        let flat = flatten(&self.structure);
        let node_error = |index: usize, reason: String| BackupError::Node {
            node: flat[index].describe(),
            reason,
        };
        let public_share = self.context_public_share()?;
        if self.points[0] != public_share {
            return Err(node_error(
                0,
                "the root's point is not the backup's public share".into(),
            ));
        }
        for (index, node) in flat.iter().enumerate() {
            let point = self.points[index];
            match node.node {
                AccessStructure::Leaf(_) => {}
                AccessStructure::Or(_) => {
                    for (j, &c) in node.children.iter().enumerate() {
                        if self.points[c] != point {
                            return Err(node_error(
                                index,
                                format!("child {} does not carry the node's point", j + 1),
                            ));
                        }
                    }
                }
                AccessStructure::And(_) => {
                    let sum = node
                        .children
                        .iter()
                        .fold(ProjectivePoint::IDENTITY, |acc, &c| acc + self.points[c]);
                    if sum != point {
                        return Err(node_error(
                            index,
                            "the children's points do not add up to the node's point".into(),
                        ));
                    }
                }
                AccessStructure::Threshold { .. } => {
                    // Feldman: child j (1-based) has point V + Σ_l C_l·j^l.
                    for (j, &c) in node.children.iter().enumerate() {
                        let x = Scalar::from(j as u64 + 1);
                        let mut power = Scalar::ONE;
                        let mut expected = point;
                        for commitment in &self.commitments[index] {
                            power *= x;
                            expected += commitment * &power;
                        }
                        if self.points[c] != expected {
                            return Err(node_error(
                                index,
                                format!(
                                    "child {}'s point does not match the polynomial commitments",
                                    j + 1
                                ),
                            ));
                        }
                    }
                }
            }
        }
        // Cheap checks of every leaf first (openings against commitments), then the full proofs
        // (re-encryption and challenge): most damage is found before any encryption is redone.
        let leaves: Vec<(usize, &str)> = flat
            .iter()
            .enumerate()
            .filter_map(|(index, node)| node.label().map(|label| (index, label)))
            .collect();
        let ephemeral = self.ephemeral();
        for pass in [pve::precheck, pve::verify] {
            for &(index, label) in &leaves {
                let proof = self.body.nodes[index]
                    .proof
                    .as_ref()
                    .ok_or_else(|| BackupError::Format(format!("leaf {label:?} has no proof")))?;
                pass(
                    ephemeral,
                    self.holder(label)?,
                    &self.points[index],
                    &flat[index].leaf_id(label),
                    &self.context_digest,
                    proof,
                )?;
            }
        }
        Ok(())
    }

    /// [`Self::verify`], and checks that the backup is of the share whose public share is
    /// `expected_public_share` (compressed SEC1).
    ///
    /// # Errors
    /// As [`Self::verify`]; [`BackupError::WrongShare`] for a valid backup of another share.
    pub fn verify_for(&self, expected_public_share: &[u8; 33]) -> Result<(), BackupError> {
        self.verify()?;
        if self.body.context.public_share != *expected_public_share {
            return Err(BackupError::WrongShare {
                found: hex::encode(self.body.context.public_share),
                expected: hex::encode(expected_public_share),
            });
        }
        Ok(())
    }

    /// [`Self::verify_for`] the expected public share, and checks that the backup states the
    /// wallet's public state that `expected` (made from a share of the same wallet) has: a backup
    /// whose signing state was taken from another share (another chain code, threshold, party
    /// set, epoch or wallet key) is refused. Format-1 backups state none; for them only the
    /// public share is checked.
    ///
    /// # Errors
    /// As [`Self::verify_for`]; [`BackupError::WrongShareState`].
    pub fn verify_for_share(&self, expected: &ExpectedShare) -> Result<(), BackupError> {
        self.verify_for(&expected.public_share)?;
        match &self.body.context.share_state {
            Some(state) if *state != expected.share_state => Err(BackupError::WrongShareState {
                found: hex::encode(state),
                expected: hex::encode(expected.share_state),
            }),
            _ => Ok(()),
        }
    }

    /// Restores the share with the holders' secret `keys`: verifies the backup, checks every key
    /// against its holder, checks that the keys are an authorised set, decrypts the leaves needed
    /// and reconstructs up the tree (sums, any child, Lagrange interpolation), checking every
    /// reconstructed value against its node's point; then decrypts the aux blob.
    ///
    /// # Errors
    /// The errors of [`Self::verify`]; [`BackupError::UnknownHolder`],
    /// [`BackupError::DuplicateKey`], [`BackupError::WrongKey`] naming the key at fault;
    /// [`BackupError::NotAuthorised`] naming the keys given and what to add;
    /// [`BackupError::Node`] if a reconstructed value does not match;
    /// [`BackupError::AuxDamaged`].
    pub fn restore(&self, keys: &[HolderSecretKey]) -> Result<Restored, BackupError> {
        self.verify()?;
        let mut by_label: BTreeMap<&str, &HolderSecretKey> = BTreeMap::new();
        for key in keys {
            let label = key.label();
            let Ok(holder) = self.holder(label) else {
                return Err(BackupError::UnknownHolder {
                    label: label.to_owned(),
                    holders: self.holder_labels().join(", "),
                });
            };
            if by_label.insert(label, key).is_some() {
                return Err(BackupError::DuplicateKey {
                    label: label.to_owned(),
                });
            }
            let public = key.public();
            if public != *holder {
                return Err(BackupError::WrongKey {
                    label: label.to_owned(),
                    given: public.fingerprint(),
                    expected: holder.fingerprint(),
                });
            }
        }
        let given: Vec<String> = by_label.keys().map(|l| (*l).to_owned()).collect();
        if !self.structure.is_authorised(&given) {
            // Listing the options is combinatorial for wide thresholds: only list when small.
            let options = if self.structure.minimal_authorised_set_count() <= 1000 {
                self.structure.missing(&given)
            } else {
                Vec::new()
            };
            return Err(BackupError::NotAuthorised { given, options });
        }

        let flat = flatten(&self.structure);
        let secret = self.reconstruct(&flat, 0, &by_label)?.ok_or_else(|| {
            // Unreachable after the authorisation check; kept as an error, not a panic.
            BackupError::NotAuthorised {
                given: Vec::new(),
                options: Vec::new(),
            }
        })?;
        if ProjectivePoint::mul_by_generator(&secret) != self.context_public_share()? {
            return Err(BackupError::Node {
                node: flat[0].describe(),
                reason: "the reconstructed share does not match the public share".into(),
            });
        }
        let cipher = aux_cipher(&secret, &self.body.aux_salt.into_array(), &self.pre_digest);
        let aux = Zeroizing::new(
            cipher
                .decrypt(
                    &AUX_NONCE.into(),
                    Payload {
                        msg: &self.body.aux_ciphertext,
                        aad: &self.pre_digest,
                    },
                )
                .map_err(|_| BackupError::AuxDamaged)?,
        );
        Ok(Restored {
            secret: pve::scalar_bytes(&secret),
            aux,
        })
    }

    /// The value of node `index` if the keys can open it (`None` if they cannot), checked against
    /// the node's point.
    fn reconstruct(
        &self,
        flat: &[FlatNode<'_>],
        index: usize,
        keys: &BTreeMap<&str, &HolderSecretKey>,
    ) -> Result<Option<Zeroizing<Scalar>>, BackupError> {
        let node = &flat[index];
        let value = match node.node {
            AccessStructure::Leaf(label) => {
                let Some(key) = keys.get(label.as_str()) else {
                    return Ok(None);
                };
                let proof = self.body.nodes[index]
                    .proof
                    .as_ref()
                    .ok_or_else(|| BackupError::Format(format!("leaf {label:?} has no proof")))?;
                pve::decrypt_verified(
                    self.ephemeral(),
                    key,
                    &self.points[index],
                    &node.leaf_id(label),
                    &self.context_digest,
                    proof,
                )?
            }
            AccessStructure::Or(_) => {
                let mut found = None;
                for &c in &node.children {
                    if let Some(v) = self.reconstruct(flat, c, keys)? {
                        found = Some(v);
                        break;
                    }
                }
                let Some(v) = found else { return Ok(None) };
                v
            }
            AccessStructure::And(_) => {
                let mut sum = Zeroizing::new(Scalar::ZERO);
                for &c in &node.children {
                    let Some(v) = self.reconstruct(flat, c, keys)? else {
                        return Ok(None);
                    };
                    *sum += &*v;
                }
                sum
            }
            AccessStructure::Threshold { k, .. } => {
                let mut xs = Vec::with_capacity(*k);
                let mut ys = Vec::with_capacity(*k);
                for (j, &c) in node.children.iter().enumerate() {
                    if xs.len() == *k {
                        break;
                    }
                    if let Some(v) = self.reconstruct(flat, c, keys)? {
                        xs.push(j as u64 + 1);
                        ys.push(v);
                    }
                }
                if xs.len() < *k {
                    return Ok(None);
                }
                let mut sum = Zeroizing::new(Scalar::ZERO);
                for (j, y) in ys.iter().enumerate() {
                    let lambda = lagrange_at_zero(&xs, j).ok_or_else(|| BackupError::Node {
                        node: node.describe(),
                        reason: "repeated interpolation points".into(),
                    })?;
                    *sum += &(**y * lambda);
                }
                sum
            }
        };
        if ProjectivePoint::mul_by_generator(&value) != self.points[index] {
            return Err(BackupError::Node {
                node: node.describe(),
                reason: "the reconstructed value does not match the node's point".into(),
            });
        }
        Ok(Some(value))
    }

    /// The file format version: [`FORMAT_VERSION`] for new backups, older for files read.
    #[must_use]
    pub fn format_version(&self) -> u16 {
        self.version
    }

    /// How this format's leaf ciphertexts get their ephemeral keys.
    fn ephemeral(&self) -> pve::Ephemeral {
        if self.version == 1 {
            pve::Ephemeral::SeededGenerator
        } else {
            pve::Ephemeral::DeriveKeyPair
        }
    }

    /// The public description of the share.
    #[must_use]
    pub fn context(&self) -> &BackupContext {
        &self.body.context
    }

    /// The access structure.
    #[must_use]
    pub fn structure(&self) -> &AccessStructure {
        &self.structure
    }

    /// The holders' public keys, sorted by label.
    #[must_use]
    pub fn holders(&self) -> &[HolderPublicKey] {
        &self.body.holders
    }

    fn holder_labels(&self) -> Vec<&str> {
        self.body
            .holders
            .iter()
            .map(HolderPublicKey::label)
            .collect()
    }

    fn holder(&self, label: &str) -> Result<&HolderPublicKey, BackupError> {
        self.body
            .holders
            .binary_search_by(|h| h.label().cmp(label))
            .map(|i| &self.body.holders[i])
            .map_err(|_| BackupError::Format(format!("no holder key for leaf {label:?}")))
    }

    fn context_public_share(&self) -> Result<ProjectivePoint, BackupError> {
        pve::decode_point(&self.body.context.public_share).ok_or_else(|| {
            BackupError::InvalidContext("the public share is not a valid point".into())
        })
    }

    /// The file: magic, format version, CBOR body (see the module documentation).
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 * 1024);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.version.to_be_bytes());
        // Writing plain data into a Vec cannot fail: no I/O error, no unsupported type.
        if ciborium::into_writer(&self.body, &mut out).is_err() {
            out.truncate(MAGIC.len() + 2);
        }
        out
    }

    /// Reads a backup file, checking its form (not its proofs: see [`Self::verify`]).
    ///
    /// # Errors
    /// [`BackupError::Format`] saying what is wrong (size, magic, version, encoding, counts,
    /// points); [`BackupError::InvalidStructure`]; [`BackupError::InvalidContext`]; the errors of
    /// holder keys.
    pub fn from_bytes(bytes: &[u8]) -> Result<Backup, BackupError> {
        let format = |reason: String| BackupError::Format(reason);
        if bytes.len() > MAX_FILE_BYTES {
            return Err(format(format!(
                "it is {} bytes, more than the {MAX_FILE_BYTES} allowed",
                bytes.len()
            )));
        }
        let Some((magic, rest)) = bytes.split_first_chunk::<4>() else {
            return Err(format("it is too short to be a backup".into()));
        };
        if *magic != MAGIC {
            return Err(format(
                "it is not a Tessera backup (wrong magic bytes)".into(),
            ));
        }
        let Some((version, body_bytes)) = rest.split_first_chunk::<2>() else {
            return Err(format("it is too short to be a backup".into()));
        };
        let version = u16::from_be_bytes(*version);
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(format(format!(
                "format version {version} is not supported (this build reads versions \
                 {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION})"
            )));
        }
        let mut reader = body_bytes;
        let body: Body = ciborium::from_reader(&mut reader)
            .map_err(|e| format(format!("the body does not decode: {e}")))?;
        if !reader.is_empty() {
            return Err(format(format!(
                "{} unexpected bytes after the body",
                reader.len()
            )));
        }
        let mut again = Vec::with_capacity(body_bytes.len());
        ciborium::into_writer(&body, &mut again)
            .map_err(|e| format(format!("the body does not re-encode: {e}")))?;
        if again != body_bytes {
            return Err(format("the body is not canonically encoded".into()));
        }
        Self::from_body(version, body)
    }

    /// Checks a decoded body's form and decodes its points.
    fn from_body(version: u16, body: Body) -> Result<Backup, BackupError> {
        let format = |reason: String| BackupError::Format(reason);
        body.context.validate()?;
        match (version, body.context.share_state.is_some()) {
            (1, true) => {
                return Err(format(
                    "a format-1 backup cannot state a share-state digest".into(),
                ));
            }
            (1, false) | (_, true) => {}
            (_, false) => {
                return Err(format(format!(
                    "a format-{version} backup must state the share-state digest"
                )));
            }
        }
        if body.holders.len() > MAX_HOLDERS {
            return Err(format(format!(
                "{} holders, more than the {MAX_HOLDERS} allowed",
                body.holders.len()
            )));
        }
        let structure = AccessStructure::parse(&body.structure)
            .map_err(|e| BackupError::InvalidStructure(e.to_string()))?;
        if structure.to_string() != body.structure {
            return Err(BackupError::InvalidStructure(format!(
                "{:?} is not in canonical form ({structure})",
                body.structure
            )));
        }
        if !body.holders.windows(2).all(|w| w[0].label() < w[1].label()) {
            return Err(format(
                "the holders are not sorted by label, or repeat one".into(),
            ));
        }
        let mut expected: Vec<&str> = structure.holders();
        expected.sort_unstable();
        let labels: Vec<&str> = body.holders.iter().map(HolderPublicKey::label).collect();
        if labels != expected {
            return Err(format(format!(
                "the holders ({}) are not the structure's ({})",
                labels.join(", "),
                expected.join(", ")
            )));
        }

        let flat = flatten(&structure);
        if body.nodes.len() != flat.len() {
            return Err(format(format!(
                "{} nodes recorded, the structure has {}",
                body.nodes.len(),
                flat.len()
            )));
        }
        let mut points = Vec::with_capacity(flat.len());
        let mut commitments = Vec::with_capacity(flat.len());
        for (node, record) in flat.iter().zip(&body.nodes) {
            let bad = |reason: &str| format(format!("node {}: {reason}", node.describe()));
            points.push(
                pve::decode_point(&record.point.into_array())
                    .ok_or_else(|| bad("its point is not a valid curve point"))?,
            );
            if record.commitments.len() != node.commitment_count() {
                return Err(bad(&format!(
                    "{} polynomial commitments, expected {}",
                    record.commitments.len(),
                    node.commitment_count()
                )));
            }
            commitments.push(
                record
                    .commitments
                    .iter()
                    .map(|c| pve::decode_point(&c.into_array()))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| bad("a polynomial commitment is not a valid curve point"))?,
            );
            match (node.label(), &record.proof) {
                (Some(_), Some(_)) | (None, None) => {}
                (Some(_), None) => return Err(bad("a leaf without its encrypted share")),
                (None, Some(_)) => return Err(bad("an inner node with an encrypted share")),
            }
        }
        if body.aux_ciphertext.len() < 16 {
            return Err(format("the aux ciphertext is shorter than its tag".into()));
        }
        let pre_digest = pre_digest(version, &body);
        let context_digest = context_digest(&pre_digest, &body.aux_ciphertext);
        Ok(Backup {
            version,
            body,
            structure,
            points,
            commitments,
            context_digest,
            pre_digest,
        })
    }

    /// SHA-256 of the file ([`Self::to_bytes`]), for audit records.
    #[must_use]
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.to_bytes()).into()
    }
}

/// Pairs each structure label with exactly one holder key; sorted by label.
fn match_holders(
    structure: &AccessStructure,
    holders: &[HolderPublicKey],
) -> Result<Vec<HolderPublicKey>, BackupError> {
    if holders.len() > MAX_HOLDERS {
        return Err(BackupError::HolderMismatch(format!(
            "{} holder keys, more than the {MAX_HOLDERS} allowed",
            holders.len()
        )));
    }
    let mut by_label: BTreeMap<&str, &HolderPublicKey> = BTreeMap::new();
    for h in holders {
        if by_label.insert(h.label(), h).is_some() {
            return Err(BackupError::HolderMismatch(format!(
                "two keys for holder {:?}",
                h.label()
            )));
        }
    }
    let labels = structure.holders();
    for label in &labels {
        if !by_label.contains_key(label) {
            return Err(BackupError::HolderMismatch(format!(
                "no key for holder {label:?}"
            )));
        }
    }
    for label in by_label.keys() {
        if !labels.contains(label) {
            return Err(BackupError::HolderMismatch(format!(
                "a key was given for {label:?}, which is not in the structure {structure}"
            )));
        }
    }
    Ok(by_label.into_values().cloned().collect())
}

/// The digest of everything but the aux ciphertext (which is encrypted under a key bound to it).
fn pre_digest(version: u16, body: &Body) -> [u8; 32] {
    let mut h = Sha256::new();
    field(&mut h, PRE_DIGEST_TAG);
    h.update(version.to_be_bytes());
    body.context.digest_into(&mut h);
    field(&mut h, body.structure.as_bytes());
    h.update(
        u32::try_from(body.holders.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    for holder in &body.holders {
        field(&mut h, holder.label().as_bytes());
        h.update(holder.key_bytes());
    }
    h.update(
        u32::try_from(body.nodes.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    for node in &body.nodes {
        h.update(node.point.as_slice());
        h.update(
            u32::try_from(node.commitments.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        for c in &node.commitments {
            h.update(c.as_slice());
        }
    }
    h.update(body.aux_salt.as_slice());
    h.finalize().into()
}

/// The digest every leaf proof is bound to: the pre-digest and the aux ciphertext.
fn context_digest(pre_digest: &[u8; 32], aux_ciphertext: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    field(&mut h, CONTEXT_DIGEST_TAG);
    h.update(pre_digest);
    field(&mut h, aux_ciphertext);
    h.finalize().into()
}

/// The aux blob's nonce. The key is fresh for every backup (HKDF over a fresh random 32-byte
/// salt), and each key encrypts exactly one message, so a fixed nonce never repeats under a key.
const AUX_NONCE: [u8; 12] = [0u8; 12];

/// ChaCha20-Poly1305 keyed by `HKDF-SHA256(salt, x, "tessera-backup-aux-v1" ‖ pre-digest)`.
fn aux_cipher(secret: &Scalar, salt: &[u8; 32], pre_digest: &[u8; 32]) -> ChaCha20Poly1305 {
    let ikm = pve::scalar_bytes(secret);
    let hkdf = Hkdf::<Sha256>::new(Some(salt), ikm.as_ref());
    let mut info = Vec::with_capacity(AUX_INFO.len() + 32);
    info.extend_from_slice(AUX_INFO);
    info.extend_from_slice(pre_digest);
    let mut key = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's limit of 255 · 32: expansion cannot fail.
    if hkdf.expand(&info, key.as_mut()).is_err() {
        key.fill(0);
    }
    ChaCha20Poly1305::new(&(*key).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context_for(secret: &Scalar) -> BackupContext {
        BackupContext {
            wallet_id: "w-0123".into(),
            wallet_name: "Savings".into(),
            party: 1,
            threshold_t: 2,
            threshold_n: 3,
            epoch: 4,
            wallet_public_key: pve::encode_point(
                &(ProjectivePoint::GENERATOR * Scalar::from(77u64)),
            ),
            public_share: pve::encode_point(&(ProjectivePoint::GENERATOR * secret)),
            created_at: 1_700_000_000,
            share_state: Some([3u8; 32]),
        }
    }

    struct Fixture {
        secret: Scalar,
        keys: Vec<HolderSecretKey>,
        backup: Backup,
        aux: Vec<u8>,
    }

    fn fixture(structure: &str) -> Fixture {
        let structure = AccessStructure::parse(structure).unwrap();
        let secret = *pve::random_nonzero_scalar().unwrap();
        let keys: Vec<HolderSecretKey> = structure
            .holders()
            .iter()
            .map(|l| HolderSecretKey::generate(*l).unwrap())
            .collect();
        let publics: Vec<HolderPublicKey> = keys.iter().map(HolderSecretKey::public).collect();
        let aux: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        let backup =
            Backup::create(&secret, context_for(&secret), &structure, &publics, &aux).unwrap();
        Fixture {
            secret,
            keys,
            backup,
            aux,
        }
    }

    fn keys_for(f: &Fixture, labels: &[&str]) -> Vec<HolderSecretKey> {
        labels
            .iter()
            .map(|l| {
                let k = f.keys.iter().find(|k| k.label() == *l).unwrap();
                HolderSecretKey::from_bytes(k.label(), *k.to_bytes()).unwrap()
            })
            .collect()
    }

    /// Every subset of the holders: authorised ones restore exactly, the others are refused
    /// naming what is missing.
    fn check_all_subsets(structure: &str) {
        let f = fixture(structure);
        f.backup.verify().unwrap();
        let labels: Vec<&str> = f.backup.structure().holders();
        let mut authorised = 0;
        for mask in 0u32..(1 << labels.len()) {
            let chosen: Vec<&str> = labels
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, l)| *l)
                .collect();
            let keys = keys_for(&f, &chosen);
            if f.backup.structure().is_authorised(&chosen) {
                authorised += 1;
                let restored = f.backup.restore(&keys).unwrap();
                assert_eq!(
                    *restored.secret,
                    *pve::scalar_bytes(&f.secret),
                    "{chosen:?}"
                );
                assert_eq!(*restored.aux, f.aux, "{chosen:?}");
            } else {
                let err = f.backup.restore(&keys).unwrap_err();
                let BackupError::NotAuthorised { given, options } = &err else {
                    panic!("{chosen:?}: {err}");
                };
                assert_eq!(
                    given,
                    &chosen.iter().map(|s| s.to_string()).collect::<Vec<_>>()
                );
                assert!(!options.is_empty());
                for option in options {
                    let mut with: Vec<&str> = chosen.clone();
                    with.extend(option.iter().map(String::as_str));
                    assert!(f.backup.structure().is_authorised(&with), "{err}");
                }
            }
        }
        assert!(authorised > 0);
    }

    #[test]
    fn every_authorised_set_restores_threshold_2_of_3() {
        check_all_subsets("threshold(2, a, b, c)");
    }

    #[test]
    fn every_authorised_set_restores_and_or() {
        check_all_subsets("and(a, or(b, c))");
    }

    #[test]
    fn every_authorised_set_restores_threshold_2_of_4() {
        check_all_subsets("threshold(2, a, b, c, d)");
    }

    #[test]
    fn nested_structure_restores() {
        check_all_subsets("or(threshold(3, a, b, c, d), and(e, f))");
    }

    #[test]
    fn single_holder_and_threshold_1() {
        check_all_subsets("solo");
        check_all_subsets("threshold(1, a, b)");
    }

    #[test]
    fn unauthorised_sets_name_the_missing_holders() {
        let f = fixture("threshold(2, a, b, c)");
        let err = f.backup.restore(&keys_for(&f, &["b"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "not authorised: keys given for b; add one of: a, c"
        );
        let f = fixture("and(a, or(b, c))");
        let err = f.backup.restore(&keys_for(&f, &["b"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "not authorised: keys given for b; add one of: a"
        );
        let err = f.backup.restore(&[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "not authorised: no keys given; add one of: (a and b), (a and c)"
        );
    }

    #[test]
    fn wrong_unknown_and_duplicate_keys_are_named() {
        let f = fixture("and(a, or(b, c))");
        let impostor = HolderSecretKey::generate("b").unwrap();
        let mut keys = keys_for(&f, &["a"]);
        keys.push(impostor);
        let err = f.backup.restore(&keys).unwrap_err();
        assert!(
            matches!(&err, BackupError::WrongKey { label, .. } if label == "b"),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("the key given for \"b\" is not the backup's key")
        );

        let mut keys = keys_for(&f, &["a", "b"]);
        keys.push(HolderSecretKey::generate("zed").unwrap());
        let err = f.backup.restore(&keys).unwrap_err();
        assert!(
            err.to_string().contains("\"zed\", which is not a holder"),
            "{err}"
        );

        let keys = keys_for(&f, &["a", "b", "a"]);
        let err = f.backup.restore(&keys).unwrap_err();
        assert!(
            matches!(&err, BackupError::DuplicateKey { label } if label == "a"),
            "{err}"
        );
    }

    #[test]
    fn backup_of_another_share_is_recognised() {
        let f = fixture("threshold(2, a, b, c)");
        let ours = f.backup.context().public_share;
        f.backup.verify_for(&ours).unwrap();
        let other = pve::encode_point(&(ProjectivePoint::GENERATOR * Scalar::from(5u64)));
        let err = f.backup.verify_for(&other).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("this backup is of another share (public share "),
            "{text}"
        );
        assert!(text.contains(&hex::encode(ours)) && text.contains(&hex::encode(other)));
    }

    #[test]
    fn file_round_trip_and_digest() {
        let f = fixture("threshold(2, a, b, c)");
        let bytes = f.backup.to_bytes();
        assert_eq!(&bytes[..6], b"TSBK\x00\x02");
        assert_eq!(f.backup.format_version(), 2);
        let back = Backup::from_bytes(&bytes).unwrap();
        assert_eq!(back, f.backup);
        assert_eq!(back.to_bytes(), bytes);
        assert_eq!(back.digest(), <[u8; 32]>::from(Sha256::digest(&bytes)));
        back.verify().unwrap();
        assert_eq!(back.holders().len(), 3);
        assert_eq!(back.structure().to_string(), "threshold(2, a, b, c)");
    }

    #[test]
    fn malformed_files_are_rejected_with_reasons() {
        let f = fixture("or(a, b)");
        let bytes = f.backup.to_bytes();
        let reason = |b: &[u8]| Backup::from_bytes(b).unwrap_err().to_string();
        assert!(reason(&bytes[..3]).contains("too short"));
        let mut wrong_magic = bytes.clone();
        wrong_magic[0] = b'X';
        assert!(reason(&wrong_magic).contains("wrong magic"));
        let mut v3 = bytes.clone();
        v3[5] = 3;
        assert!(reason(&v3).contains("format version 3 is not supported"));
        let mut v0 = bytes.clone();
        v0[5] = 0;
        assert!(reason(&v0).contains("format version 0 is not supported"));
        // The version and the share-state digest go together.
        let mut v1 = bytes.clone();
        v1[5] = 1;
        assert!(reason(&v1).contains("a format-1 backup cannot state a share-state digest"));
        let mut body = f.backup.body.clone();
        body.context.share_state = None;
        assert!(reason(&file_of(&body)).contains("must state the share-state digest"));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(reason(&trailing).contains("1 unexpected bytes after the body"));
        let big = vec![0u8; MAX_FILE_BYTES + 1];
        assert!(reason(&big).contains("more than the"));
        assert!(reason(&bytes[..bytes.len() - 1]).contains("does not decode"));

        // A body re-encoded with a structure text that is not canonical.
        let mut body = f.backup.body.clone();
        body.structure = "OR(a,b)".into();
        assert!(reason(&file_of(&body)).contains("not in canonical form"));
        let mut body = f.backup.body.clone();
        body.structure = "or(a, b, c)".into();
        assert!(reason(&file_of(&body)).contains("are not the structure's"));
        let mut body = f.backup.body.clone();
        body.structure = "or(a,".into();
        assert!(reason(&file_of(&body)).contains("invalid access structure"));
        let mut body = f.backup.body.clone();
        body.holders.reverse();
        assert!(reason(&file_of(&body)).contains("not sorted"));
        let mut body = f.backup.body.clone();
        body.nodes[1].point = ByteArray::new([5u8; 33]);
        let text = reason(&file_of(&body));
        assert!(
            text.contains("node a at root/1: its point is not a valid curve point"),
            "{text}"
        );
        let mut body = f.backup.body.clone();
        body.nodes[0].proof = body.nodes[1].proof.clone();
        assert!(reason(&file_of(&body)).contains("an inner node with an encrypted share"));
        let mut body = f.backup.body.clone();
        body.nodes.pop();
        assert!(reason(&file_of(&body)).contains("2 nodes recorded, the structure has 3"));
        let mut body = f.backup.body.clone();
        body.context.party = 3;
        assert!(reason(&file_of(&body)).contains("party 3 is not one of"));
        let mut body = f.backup.body.clone();
        let extra = HolderSecretKey::generate("zz").unwrap().public();
        body.holders = vec![extra; MAX_HOLDERS + 1];
        assert!(reason(&file_of(&body)).contains("holders, more than the 32 allowed"));

        // A non-canonical encoding of the same value: epoch 4 as a two-byte integer.
        let mut body_bytes = Vec::new();
        ciborium::into_writer(&f.backup.body, &mut body_bytes).unwrap();
        let needle = b"epoch\x04";
        let at = body_bytes
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap();
        let mut long = body_bytes[..at + 5].to_vec();
        long.extend_from_slice(&[0x18, 0x04]);
        long.extend_from_slice(&body_bytes[at + 6..]);
        let mut file = b"TSBK\x00\x02".to_vec();
        file.extend_from_slice(&long);
        assert!(reason(&file).contains("not canonically encoded"));
    }

    fn file_of(body: &Body) -> Vec<u8> {
        let mut out = b"TSBK\x00\x02".to_vec();
        ciborium::into_writer(body, &mut out).unwrap();
        out
    }

    #[test]
    fn inconsistent_points_are_caught_by_verify() {
        // Re-signing nothing: swap in a well-formed but wrong node point; verify names the node.
        let f = fixture("and(a, or(b, c))");
        let mut body = f.backup.body.clone();
        body.nodes[3].point = ByteArray::new(pve::encode_point(&ProjectivePoint::GENERATOR));
        let backup = Backup::from_bytes(&file_of(&body)).unwrap();
        let err = backup.verify().unwrap_err().to_string();
        assert_eq!(
            err,
            "node or(b, c) at root/2: child 1 does not carry the node's point",
        );
        let mut body = f.backup.body.clone();
        body.context.public_share = pve::encode_point(&ProjectivePoint::GENERATOR);
        let backup = Backup::from_bytes(&file_of(&body)).unwrap();
        let err = backup.verify().unwrap_err().to_string();
        assert!(
            err.contains("the root's point is not the backup's public share"),
            "{err}"
        );
    }

    #[test]
    fn create_rejects_bad_inputs() {
        let structure = AccessStructure::parse("threshold(2, a, b, c)").unwrap();
        let secret = *pve::random_nonzero_scalar().unwrap();
        let keys: Vec<HolderPublicKey> = ["a", "b", "c"]
            .iter()
            .map(|l| HolderSecretKey::generate(*l).unwrap().public())
            .collect();
        let ctx = context_for(&secret);
        let err = |r: Result<Backup, BackupError>| r.unwrap_err().to_string();

        let other = Scalar::from(3u64);
        assert!(
            err(Backup::create(&other, ctx.clone(), &structure, &keys, b""))
                .contains("does not match")
        );
        assert!(
            err(Backup::create(
                &Scalar::ZERO,
                ctx.clone(),
                &structure,
                &keys,
                b""
            ))
            .contains("zero")
        );
        assert!(
            err(Backup::create(
                &secret,
                ctx.clone(),
                &structure,
                &keys[..2],
                b""
            ))
            .contains("no key for holder \"c\"")
        );
        let mut dup = keys.clone();
        dup.push(keys[0].clone());
        assert!(
            err(Backup::create(&secret, ctx.clone(), &structure, &dup, b""))
                .contains("two keys for holder \"a\"")
        );
        let mut extra = keys.clone();
        extra.push(HolderSecretKey::generate("d").unwrap().public());
        assert!(
            err(Backup::create(
                &secret,
                ctx.clone(),
                &structure,
                &extra,
                b""
            ))
            .contains("\"d\", which is not in the structure")
        );
        let mut bad_ctx = ctx.clone();
        bad_ctx.threshold_t = 4;
        assert!(
            err(Backup::create(&secret, bad_ctx, &structure, &keys, b""))
                .contains("threshold 4-of-3")
        );
        let mut bad_ctx = ctx.clone();
        bad_ctx.wallet_id = String::new();
        assert!(
            err(Backup::create(&secret, bad_ctx, &structure, &keys, b""))
                .contains("wallet id is empty")
        );
        let mut bad_ctx = ctx.clone();
        bad_ctx.share_state = None;
        assert!(
            err(Backup::create(&secret, bad_ctx, &structure, &keys, b""))
                .contains("share-state digest is missing")
        );
        let invalid = AccessStructure::And(vec![AccessStructure::Leaf("a".into())]);
        assert!(
            err(Backup::create(&secret, ctx, &invalid, &keys[..1], b""))
                .contains("invalid access structure")
        );
    }

    #[test]
    fn damaged_aux_is_reported_at_restore() {
        let f = fixture("or(a, b)");
        // An aux ciphertext from another backup, with the digests recomputed as an attacker
        // would have to (the proofs then no longer match: verify catches it first).
        let mut body = f.backup.body.clone();
        let mut ct = body.aux_ciphertext.to_vec();
        ct[0] ^= 1;
        body.aux_ciphertext = ByteBuf::from(ct);
        let backup = Backup::from_bytes(&file_of(&body)).unwrap();
        assert!(
            backup
                .verify()
                .unwrap_err()
                .to_string()
                .contains("challenge does not match")
        );

        // Past verification (as if the proofs had been made over the damaged ciphertext): the
        // aux does not authenticate.
        let mut backup = backup;
        backup.context_digest = f.backup.context_digest;
        let err = backup.restore(&keys_for(&f, &["a"])).unwrap_err();
        assert!(matches!(err, BackupError::AuxDamaged), "{err}");
    }

    #[test]
    fn restored_debug_is_redacted() {
        let f = fixture("or(a, b)");
        let restored = f.backup.restore(&keys_for(&f, &["b"])).unwrap();
        let debug = format!("{restored:?}");
        assert_eq!(
            debug,
            "Restored { secret: \"<redacted>\", aux: \"<redacted>\" }"
        );
    }
}
