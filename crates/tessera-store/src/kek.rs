//! Key-encryption keys (KEKs) for the server's envelope encryption.
//!
//! Each secret is encrypted under its own fresh [`DataKey`]; only that data key is encrypted
//! ("wrapped") by a long-lived KEK. Rotating the KEK then re-wraps 32-byte keys ([`rewrap`])
//! without touching the secrets' ciphertexts, and a KEK can live where keys cannot be read out
//! (an HSM). Like rustls' `CryptoProvider`, the backend is chosen by the caller: anything that
//! implements [`KeyEncryptionKey`] — [`FileKek`] here, a PKCS#11 provider later.
//!
//! Wrapped keys and sealed secrets use XChaCha20-Poly1305 with random 24-byte nonces, which are
//! large enough that random nonces never repeat in practice.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::fs::{Overwrite, Written, write_atomically};

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Associated data of a [`FileKek`] wrap: binds wrapped keys to this purpose and format.
const FILE_KEK_AAD: &[u8] = b"tessera/kek/v1";
/// Length of a [`FileKek`]-wrapped data key: nonce, encrypted key, tag.
const FILE_KEK_WRAPPED_LEN: usize = NONCE_LEN + KEY_LEN + TAG_LEN;
/// The [`SealedSecret`] format this build writes.
pub const SEALED_SECRET_VERSION: u16 = 1;

/// A 32-byte symmetric key that encrypts one secret. Zeroized on drop; `Debug` prints
/// `<redacted>`; not `Clone`, so each key exists once in memory.
pub struct DataKey(Zeroizing<[u8; KEY_LEN]>);

impl DataKey {
    /// A fresh random key from the operating system's generator.
    #[must_use]
    pub fn generate() -> Self {
        DataKey(crate::random_bytes())
    }

    /// A key from its bytes: for [`KeyEncryptionKey::unwrap`] implementations.
    #[must_use]
    pub fn from_bytes(bytes: Zeroizing<[u8; KEY_LEN]>) -> Self {
        DataKey(bytes)
    }

    /// The key bytes: for [`KeyEncryptionKey::wrap`] implementations. Do not copy them anywhere
    /// that is not zeroized.
    #[must_use]
    pub fn expose_secret(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

/// A key-encryption key: wraps and unwraps [`DataKey`]s. Implementations must use authenticated
/// encryption, so that a wrapped key that was altered, or wrapped by another KEK, fails to unwrap.
pub trait KeyEncryptionKey: Send + Sync {
    /// A stable identifier of this key (not of the backend: two different keys have different
    /// ids). It is stored with every sealed secret to find the KEK that opens it, so it must not
    /// reveal the key; e.g. `"file:" + hex(SHA-256(key)[..8])`.
    fn id(&self) -> String;

    /// Encrypts a data key.
    ///
    /// # Errors
    /// Backend-specific (an HSM that is unreachable, ...).
    fn wrap(&self, data_key: &DataKey) -> Result<Vec<u8>>;

    /// Decrypts a data key wrapped by [`KeyEncryptionKey::wrap`] of this same key.
    ///
    /// # Errors
    /// [`Error::UnwrapFailed`] if `wrapped` is malformed or does not authenticate.
    fn unwrap(&self, wrapped: &[u8]) -> Result<DataKey>;
}

/// A KEK kept in a local file of exactly 32 random bytes, mode 0600. The default provider: it
/// protects the database (or a copy of it) from anyone who cannot also read the key file.
pub struct FileKek {
    key: Zeroizing<[u8; KEY_LEN]>,
    id: String,
}

impl FileKek {
    /// Loads the key file at `path`, creating it (32 random bytes, mode 0600, atomically) if it
    /// does not exist. The parent directory must exist.
    ///
    /// # Errors
    /// [`Error::InsecurePermissions`] if the file is accessible to its group or others;
    /// [`Error::InvalidKeyFile`] if it is not a regular file of exactly 32 bytes; [`Error::Io`].
    pub fn open_or_create(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        match Self::load(path)? {
            Some(kek) => Ok(kek),
            None => {
                let key = crate::random_bytes::<KEY_LEN>();
                match write_atomically(path, key.as_ref(), Overwrite::Never)? {
                    Written::Done => Ok(Self::from_key(key)),
                    // Another process created it in the meantime: use theirs, never replace it.
                    Written::TargetExists => Self::load(path)?
                        .ok_or_else(|| Error::io("open", path, io::ErrorKind::NotFound.into())),
                }
            }
        }
    }

    fn load(path: &Path) -> Result<Option<Self>> {
        let invalid = |reason: String| Error::InvalidKeyFile {
            path: path.to_path_buf(),
            reason,
        };
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open", path, e)),
        };
        // Checked on the opened file, not the path, so the file checked is the file read.
        let meta = file.metadata().map_err(|e| Error::io("inspect", path, e))?;
        if !meta.is_file() {
            return Err(invalid("not a regular file".into()));
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(Error::InsecurePermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        if meta.len() != KEY_LEN as u64 {
            return Err(invalid(format!(
                "it has {} bytes; a key file has exactly {KEY_LEN}",
                meta.len()
            )));
        }
        let key = read_key(file, path)?;
        Ok(Some(Self::from_key(key)))
    }

    fn from_key(key: Zeroizing<[u8; KEY_LEN]>) -> Self {
        let digest = Sha256::digest(key.as_ref());
        let id = format!("file:{}", hex::encode(&digest[..8]));
        FileKek { key, id }
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        cipher(&self.key)
    }
}

fn read_key(mut file: File, path: &Path) -> Result<Zeroizing<[u8; KEY_LEN]>> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    file.read_exact(key.as_mut())
        .map_err(|e| Error::io("read", path, e))?;
    // The length was checked before reading; a file that grew since is not a key file we trust.
    let mut probe = [0u8; 1];
    match file.read(&mut probe) {
        Ok(0) => Ok(key),
        Ok(_) => Err(Error::InvalidKeyFile {
            path: path.to_path_buf(),
            reason: "it changed while being read".into(),
        }),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

impl fmt::Debug for FileKek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileKek")
            .field("id", &self.id)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl KeyEncryptionKey for FileKek {
    fn id(&self) -> String {
        self.id.clone()
    }

    fn wrap(&self, data_key: &DataKey) -> Result<Vec<u8>> {
        let nonce = crate::random_bytes::<NONCE_LEN>();
        let ciphertext = self
            .cipher()
            .encrypt(
                &(*nonce).into(),
                Payload {
                    msg: data_key.expose_secret(),
                    aad: FILE_KEK_AAD,
                },
            )
            .map_err(|_| Error::Crypto("XChaCha20-Poly1305 encryption failed".into()))?;
        let mut wrapped = Vec::with_capacity(FILE_KEK_WRAPPED_LEN);
        wrapped.extend_from_slice(nonce.as_ref());
        wrapped.extend_from_slice(&ciphertext);
        Ok(wrapped)
    }

    fn unwrap(&self, wrapped: &[u8]) -> Result<DataKey> {
        let failed = |reason| Error::UnwrapFailed {
            kek_id: self.id.clone(),
            reason,
        };
        if wrapped.len() != FILE_KEK_WRAPPED_LEN {
            return Err(failed("it has the wrong length"));
        }
        let (nonce, ciphertext) = wrapped.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| failed("it has the wrong length"))?;
        let plaintext = Zeroizing::new(
            self.cipher()
                .decrypt(
                    &nonce.into(),
                    Payload {
                        msg: ciphertext,
                        aad: FILE_KEK_AAD,
                    },
                )
                .map_err(|_| failed("it does not authenticate (another KEK, or altered)"))?,
        );
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(&plaintext);
        Ok(DataKey::from_bytes(key))
    }
}

fn cipher(key: &[u8; KEY_LEN]) -> XChaCha20Poly1305 {
    // A 32-byte slice is always a valid key; `new_from_slice` avoids an unzeroized array copy.
    #[allow(clippy::expect_used)]
    XChaCha20Poly1305::new_from_slice(key).expect("32-byte key")
}

/// A secret encrypted under its own data key, with that data key wrapped by a KEK. Nothing in it
/// is secret: it can be stored as is (e.g. in a database row) and opened only with the KEK.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSecret {
    /// Format version ([`SEALED_SECRET_VERSION`]): the algorithms below are fixed per version.
    pub version: u16,
    /// [`KeyEncryptionKey::id`] of the KEK that wrapped the data key.
    pub kek_id: String,
    /// The data key, wrapped by that KEK.
    #[serde(with = "serde_bytes")]
    pub wrapped_key: Vec<u8>,
    /// XChaCha20-Poly1305 nonce of `ciphertext`.
    pub nonce: [u8; NONCE_LEN],
    /// The secret encrypted under the data key (with the 16-byte tag).
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
}

/// Encrypts `plaintext` under a fresh data key wrapped by `kek`.
///
/// `aad` is authenticated, not stored: [`open`] needs the same bytes. Bind each secret to where
/// it belongs (e.g. wallet id, party and epoch) so a sealed secret moved to another row fails to
/// open.
///
/// # Errors
/// Whatever `kek.wrap` returns; [`Error::Crypto`] (not expected).
pub fn seal<K: KeyEncryptionKey + ?Sized>(
    kek: &K,
    plaintext: &[u8],
    aad: &[u8],
) -> Result<SealedSecret> {
    let data_key = DataKey::generate();
    let nonce = *crate::random_bytes::<NONCE_LEN>();
    let ciphertext = cipher(data_key.expose_secret())
        .encrypt(
            &nonce.into(),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| Error::Crypto("XChaCha20-Poly1305 encryption failed".into()))?;
    Ok(SealedSecret {
        version: SEALED_SECRET_VERSION,
        kek_id: kek.id(),
        wrapped_key: kek.wrap(&data_key)?,
        nonce,
        ciphertext,
    })
}

/// Decrypts a secret sealed by [`seal`] under `kek` with the same `aad`.
///
/// # Errors
/// [`Error::SealedSecretInvalid`] for an unknown version or if the ciphertext or `aad` changed;
/// [`Error::KekMismatch`] if it was sealed under another KEK; [`Error::UnwrapFailed`] if the
/// wrapped key was altered.
pub fn open<K: KeyEncryptionKey + ?Sized>(
    kek: &K,
    sealed: &SealedSecret,
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    let data_key = unwrap_data_key(kek, sealed)?;
    let plaintext = cipher(data_key.expose_secret())
        .decrypt(
            &sealed.nonce.into(),
            Payload {
                msg: &sealed.ciphertext,
                aad,
            },
        )
        .map_err(|_| {
            Error::SealedSecretInvalid("its ciphertext or associated data does not authenticate")
        })?;
    Ok(Zeroizing::new(plaintext))
}

/// Re-wraps the data key of `sealed` from `old` to `new` (KEK rotation). The ciphertext is copied
/// unchanged, so the secret is never decrypted; it is not authenticated here either (that needs
/// its `aad`): [`open`] does that.
///
/// # Errors
/// As for [`open`] with `old`, and whatever `new.wrap` returns.
pub fn rewrap<Old, New>(old: &Old, new: &New, sealed: &SealedSecret) -> Result<SealedSecret>
where
    Old: KeyEncryptionKey + ?Sized,
    New: KeyEncryptionKey + ?Sized,
{
    let data_key = unwrap_data_key(old, sealed)?;
    Ok(SealedSecret {
        version: SEALED_SECRET_VERSION,
        kek_id: new.id(),
        wrapped_key: new.wrap(&data_key)?,
        nonce: sealed.nonce,
        ciphertext: sealed.ciphertext.clone(),
    })
}

fn unwrap_data_key<K: KeyEncryptionKey + ?Sized>(
    kek: &K,
    sealed: &SealedSecret,
) -> Result<DataKey> {
    if sealed.version != SEALED_SECRET_VERSION {
        return Err(Error::SealedSecretInvalid(
            "its format version is not supported by this build",
        ));
    }
    let id = kek.id();
    if sealed.kek_id != id {
        return Err(Error::KekMismatch {
            sealed_with: sealed.kek_id.clone(),
            given: id,
        });
    }
    kek.unwrap(&sealed.wrapped_key)
}
