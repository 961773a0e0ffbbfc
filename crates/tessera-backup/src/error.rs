//! Why a backup operation failed.
//!
//! Every message names the element at fault (a holder label, a leaf, a repetition, a node of the
//! access structure, a section of the file) and says what is wrong with it, so that the person
//! restoring can act on it. No message ever carries a secret: only labels, indices, public points
//! and key fingerprints appear.

use std::collections::BTreeSet;
use std::fmt;

/// Why a backup operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// A holder label does not follow the rule (1–32 characters of `a-z 0-9 . _ -`, starting with
    /// a letter or digit).
    #[error("invalid holder label {label:?}: {reason}")]
    InvalidLabel {
        /// The label as given (labels are public).
        label: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A holder public key cannot be used.
    #[error("invalid public key for holder {label:?}: {reason}")]
    InvalidHolderKey {
        /// The holder's label.
        label: String,
        /// What is wrong with the key.
        reason: &'static str,
    },

    /// The text form of a holder public key could not be read.
    #[error("invalid holder public key text: {0}")]
    InvalidHolderText(String),

    /// The access structure text could not be parsed, or the structure cannot be used.
    #[error("invalid access structure: {0}")]
    InvalidStructure(String),

    /// The holder keys given to [`crate::backup::Backup::create`] do not match the structure's
    /// holders.
    #[error("holder keys do not match the access structure: {0}")]
    HolderMismatch(String),

    /// The secret given to [`crate::backup::Backup::create`] cannot be backed up as asked.
    #[error("invalid secret: {0}")]
    InvalidSecret(&'static str),

    /// The public description of the backup (wallet, party, threshold, keys) is inconsistent.
    #[error("invalid backup context: {0}")]
    InvalidContext(String),

    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed")]
    Randomness,

    /// Encryption to a holder failed (the holder key is unusable for HPKE).
    #[error("encryption to holder {label:?} failed: {reason}")]
    Encryption {
        /// The holder's label.
        label: String,
        /// What failed.
        reason: &'static str,
    },

    /// One repetition of a leaf's verifiable-encryption proof is wrong.
    #[error("leaf {leaf:?}, repetition {repetition}: {reason}")]
    Proof {
        /// The leaf (holder label and position in the structure).
        leaf: String,
        /// The repetition's index (0-based).
        repetition: usize,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A leaf's verifiable-encryption proof is wrong as a whole.
    #[error("leaf {leaf:?}: {reason}")]
    LeafProof {
        /// The leaf (holder label and position in the structure).
        leaf: String,
        /// What is wrong with the proof.
        reason: String,
    },

    /// A holder's key opened none of a leaf's ciphertexts to the leaf's share.
    #[error("leaf {leaf:?}: {reason}")]
    Decryption {
        /// The leaf (holder label and position in the structure).
        leaf: String,
        /// What failed.
        reason: &'static str,
    },

    /// A node's published point is inconsistent with its parent, its children or the
    /// reconstructed value.
    #[error("node {node}: {reason}")]
    Node {
        /// The node (its kind and position in the structure).
        node: String,
        /// What is inconsistent.
        reason: String,
    },

    /// The backup is valid but holds another share than the one expected.
    #[error(
        "this backup is of another share (public share {found}, expected {expected}): \
         it cannot restore or stand for the expected share"
    )]
    WrongShare {
        /// The backup's public share (compressed SEC1, hex).
        found: String,
        /// The public share the caller expected (compressed SEC1, hex).
        expected: String,
    },

    /// The backup holds the expected public share, but states another public state of the
    /// wallet (chain code, threshold, parties, epoch or wallet key) than the share it is checked
    /// against: its signing state (the aux blob) is not this wallet's.
    #[error(
        "this backup states another public state of the wallet (chain code, threshold, parties, \
         epoch or wallet key: digest {found}, expected {expected}) than the share it is checked \
         against: the signing state it restores is not this wallet's"
    )]
    WrongShareState {
        /// The backup's share-state digest, hex.
        found: String,
        /// The digest the caller expected, hex.
        expected: String,
    },

    /// A key was given for a label that is not a holder of this backup.
    #[error(
        "a key was given for {label:?}, which is not a holder of this backup (holders: {holders})"
    )]
    UnknownHolder {
        /// The label of the key given.
        label: String,
        /// The backup's holders, comma separated.
        holders: String,
    },

    /// Two keys were given for one holder.
    #[error("two keys were given for holder {label:?}")]
    DuplicateKey {
        /// The label given twice.
        label: String,
    },

    /// A key carries a holder's label but is not that holder's key.
    #[error(
        "the key given for {label:?} is not the backup's key for that holder \
         (its public key has fingerprint {given}, the backup's holder {expected})"
    )]
    WrongKey {
        /// The holder's label.
        label: String,
        /// Fingerprint of the public key of the key given.
        given: String,
        /// Fingerprint of the holder's public key recorded in the backup.
        expected: String,
    },

    /// The keys given are not an authorised set of the backup's access structure.
    #[error("{}", NotAuthorised { given, options })]
    NotAuthorised {
        /// Labels of the keys given, sorted.
        given: Vec<String>,
        /// Minimal sets of holders, any one of which, added to the keys given, would be enough.
        options: Vec<BTreeSet<String>>,
    },

    /// The encrypted auxiliary data (the engine's share state) did not decrypt: it was altered, or
    /// the backup was assembled from pieces of different backups.
    #[error(
        "the backup's auxiliary data (the engine share state) is damaged: it does not \
         authenticate under the recovered share"
    )]
    AuxDamaged,

    /// The share restored from a backup is not the share the backup describes (wallet, party,
    /// epoch, keys), or cannot be read.
    #[error("the restored share does not match the backup: {0}")]
    RestoredShareMismatch(String),

    /// The backup file cannot be read.
    #[error("not a valid backup file: {0}")]
    Format(String),
}

/// Display helper for [`BackupError::NotAuthorised`].
struct NotAuthorised<'a> {
    given: &'a [String],
    options: &'a [BTreeSet<String>],
}

impl fmt::Display for NotAuthorised<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not authorised: ")?;
        if self.given.is_empty() {
            f.write_str("no keys given")?;
        } else {
            write!(f, "keys given for {}", self.given.join(", "))?;
        }
        if self.options.is_empty() {
            return Ok(());
        }
        f.write_str("; add one of: ")?;
        for (i, option) in self.options.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            let labels: Vec<&str> = option.iter().map(String::as_str).collect();
            if labels.len() == 1 {
                f.write_str(labels[0])?;
            } else {
                write!(f, "({})", labels.join(" and "))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_authorised_names_given_and_missing() {
        let e = BackupError::NotAuthorised {
            given: vec!["usb-1".into()],
            options: vec![
                BTreeSet::from(["cloud".to_string()]),
                BTreeSet::from(["laptop".to_string()]),
            ],
        };
        assert_eq!(
            e.to_string(),
            "not authorised: keys given for usb-1; add one of: cloud, laptop"
        );
        let e = BackupError::NotAuthorised {
            given: vec![],
            options: vec![BTreeSet::from(["a".to_string(), "b".to_string()])],
        };
        assert_eq!(
            e.to_string(),
            "not authorised: no keys given; add one of: (a and b)"
        );
    }

    #[test]
    fn proof_error_names_leaf_and_repetition() {
        let e = BackupError::Proof {
            leaf: "cloud".into(),
            repetition: 17,
            reason: "the opened share does not match its commitment",
        };
        assert_eq!(
            e.to_string(),
            "leaf \"cloud\", repetition 17: the opened share does not match its commitment"
        );
    }
}
