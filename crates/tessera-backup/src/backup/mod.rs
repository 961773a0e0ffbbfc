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

mod binding;
mod create;
mod format;
mod restore;
mod sharing;
#[cfg(test)]
mod tests;
mod tree;
mod verify;

use std::fmt;

use k256::ProjectivePoint;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::BackupError;
use crate::holder::HolderPublicKey;
use crate::pve;
use crate::structure::AccessStructure;

use format::Body;

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

impl Backup {
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
}
