//! The one error type of `tessera-store`.
//!
//! Messages name files, wallets and key ids so that a user can act on them, and never carry secret
//! material: no passphrase, key or plaintext byte ever reaches an error. Every read error leaves
//! the stored files exactly as they were.

use std::path::PathBuf;

/// Result alias for `tessera-store`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `tessera-store`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file system operation failed.
    #[error("could not {action} {path}: {source}")]
    Io {
        /// What we were doing ("read", "create", "rename onto", ...).
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },

    /// Neither `TESSERA_HOME` nor a home directory is known, so there is no default keystore.
    #[error("no keystore directory: set TESSERA_HOME or HOME")]
    NoKeystoreDirectory,

    /// The passphrase given is empty.
    #[error("the passphrase must not be empty")]
    EmptyPassphrase,

    /// A wallet name is not 1-64 characters of `[A-Za-z0-9_.-]` or starts with a dot.
    #[error("invalid wallet name {name:?}: {reason}")]
    InvalidWalletName {
        /// The name as given (shortened if very long).
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// `save_wallet` for a name that is already stored: overwriting needs `replace_wallet`.
    #[error("wallet {name:?} already exists; use replace_wallet to overwrite it")]
    WalletExists {
        /// The wallet name.
        name: String,
    },

    /// No wallet of this name is stored.
    #[error("no wallet named {name:?} in the keystore")]
    WalletNotFound {
        /// The wallet name.
        name: String,
    },

    /// `create_identity` on a keystore that already has one: the identity is never replaced.
    #[error("the keystore already has a device identity ({path}); it is never replaced")]
    IdentityExists {
        /// The identity file.
        path: PathBuf,
    },

    /// A file that is never overwritten (a backup key) exists already.
    #[error("{path} exists already; it is never overwritten")]
    FileExists {
        /// The file.
        path: PathBuf,
    },

    /// A file named by the user does not exist.
    #[error("{path} does not exist")]
    FileNotFound {
        /// The file.
        path: PathBuf,
    },

    /// A backup key label that cannot be stored.
    #[error("invalid backup key label: {0}")]
    InvalidLabel(String),

    /// The keystore has no device identity yet.
    #[error("the keystore has no device identity ({path} does not exist)")]
    IdentityNotFound {
        /// Where the identity file would be.
        path: PathBuf,
    },

    /// Decryption failed: the passphrase is wrong, or the encrypted part of the file was altered.
    /// (Authenticated encryption cannot tell these apart.)
    #[error("wrong passphrase for {path} (or its contents were altered)")]
    WrongPassphrase {
        /// The file that did not decrypt.
        path: PathBuf,
    },

    /// A keystore file is truncated, too large, or not a keystore file of the expected kind.
    #[error("{path} is damaged or not a Tessera keystore file: {reason}")]
    CorruptFile {
        /// The file.
        path: PathBuf,
        /// What is wrong, without echoing its bytes.
        reason: String,
    },

    /// A keystore file of a format version this build does not read.
    #[error("{path} has keystore format version {version}; this build reads version 1")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version it carries.
        version: u16,
    },

    /// Argon2 parameters outside what this build accepts (too costly to be honest: a denial of
    /// service), or not valid Argon2 parameters at all.
    #[error("invalid Argon2 parameters{}: {reason}", path_suffix(path))]
    InvalidKdfParams {
        /// The file that carries them, if they come from a file.
        path: Option<PathBuf>,
        /// Which limit is broken.
        reason: String,
    },

    /// Argon2 parameters below the security floor, on a keystore not opened with
    /// `insecure_fast_kdf_for_tests`.
    #[error(
        "Argon2 parameters{} are below the security floor ({reason}); \
         only a keystore opened with insecure_fast_kdf_for_tests accepts them",
        path_suffix(path)
    )]
    WeakKdfParams {
        /// The file that carries them, if they come from a file.
        path: Option<PathBuf>,
        /// Which floor is not met.
        reason: String,
    },

    /// An entry to store is over the size limit.
    #[error("an entry of {size} bytes is over the {limit}-byte limit")]
    EntryTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },

    /// Key derivation or encryption failed for a reason other than the input (should not happen).
    #[error("cryptographic operation failed: {0}")]
    Crypto(String),

    /// A public key is not a valid Ed25519 point.
    #[error("invalid Ed25519 public key")]
    InvalidPublicKey,

    /// A device identity signature does not verify under the given public key and message.
    #[error("the device identity signature does not verify")]
    SignatureInvalid,

    /// A key file (key-encryption key) is readable or writable by others than its owner.
    #[error("{path} has mode {mode:04o}; a key file must be accessible by its owner only (0600)")]
    InsecurePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },

    /// A key file is not a regular file or does not hold exactly one key.
    #[error("{path} is not a valid key file: {reason}")]
    InvalidKeyFile {
        /// The key file.
        path: PathBuf,
        /// What is wrong, without echoing its bytes.
        reason: String,
    },

    /// A sealed secret was wrapped by another key-encryption key than the one given.
    #[error("the secret is sealed under KEK {sealed_with}, not under KEK {given}")]
    KekMismatch {
        /// The KEK id recorded in the sealed secret.
        sealed_with: String,
        /// The id of the KEK given.
        given: String,
    },

    /// A wrapped data key is malformed or does not authenticate under the KEK.
    #[error("the wrapped data key does not unwrap under KEK {kek_id}: {reason}")]
    UnwrapFailed {
        /// The KEK used.
        kek_id: String,
        /// What failed.
        reason: &'static str,
    },

    /// A sealed secret is malformed, or its ciphertext or associated data changed.
    #[error("the sealed secret does not open: {0}")]
    SealedSecretInvalid(&'static str),

    /// The PKCS#11 token (HSM) refused or failed: a wrong PIN, a missing token or key...
    #[error("HSM: {0}")]
    Hsm(String),
}

fn path_suffix(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!(" in {}", p.display()))
        .unwrap_or_default()
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
