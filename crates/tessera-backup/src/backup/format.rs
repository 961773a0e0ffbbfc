//! The backup file: its CBOR body, and reading and writing the file (see the layout in the
//! [module documentation](super)), with every check of its form.

use serde::{Deserialize, Serialize};
use serde_bytes::{ByteArray, ByteBuf};
use sha2::{Digest, Sha256};

use super::binding::{context_digest, pre_digest};
use super::tree::flatten;
use super::{
    Backup, BackupContext, FORMAT_VERSION, MAGIC, MAX_FILE_BYTES, MAX_HOLDERS,
    OLDEST_FORMAT_VERSION,
};
use crate::error::BackupError;
use crate::holder::HolderPublicKey;
use crate::pve::{self, LeafProof};
use crate::structure::AccessStructure;

/// One node of the structure on file.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NodeRecord {
    pub(super) point: ByteArray<33>,
    pub(super) commitments: Vec<ByteArray<33>>,
    pub(super) proof: Option<LeafProof>,
}

/// The CBOR body of the file.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Body {
    pub(super) context: BackupContext,
    pub(super) structure: String,
    pub(super) holders: Vec<HolderPublicKey>,
    pub(super) nodes: Vec<NodeRecord>,
    pub(super) aux_salt: ByteArray<32>,
    pub(super) aux_ciphertext: ByteBuf,
}

impl Backup {
    /// The file: magic, format version, CBOR body (see the [module documentation](super)).
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
