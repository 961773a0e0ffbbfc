//! The encrypted entry file format and its key derivation.
//!
//! ```text
//! offset size  field
//!      0    4  magic b"TSKE"
//!      4    2  format version, u16 big-endian (1)
//!      6    1  entry kind (1 = device identity, 2 = wallet, 3 = backup holder key)
//!      7    4  Argon2id m_cost in KiB, u32 big-endian
//!     11    4  Argon2id t_cost (passes), u32 big-endian
//!     15    4  Argon2id p_cost (lanes), u32 big-endian
//!     19   16  salt
//!     35   24  XChaCha20-Poly1305 nonce
//!     59    4  ciphertext length, u32 big-endian
//!     63    …  ciphertext (plaintext length + 16-byte tag)
//! ```
//!
//! The key is Argon2id(passphrase, salt) with the parameters of the header (Argon2 version 0x13,
//! 32-byte output). All 63 header bytes are the AEAD associated data, so changing any of them makes
//! decryption fail. The ciphertext length is in the header so that a truncated file is reported as
//! damaged rather than as a wrong passphrase.
//!
//! Old versions must keep loading: `tests/fixtures/` holds a file of every version.

use std::path::Path;

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use zeroize::Zeroizing;

use super::Passphrase;
use crate::error::{Error, Result};

const MAGIC: &[u8; 4] = b"TSKE";
/// The keystore entry format this build writes.
pub const FORMAT_VERSION: u16 = 1;
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
pub(crate) const HEADER_LEN: usize = 4 + 2 + 1 + 4 * 3 + SALT_LEN + NONCE_LEN + 4;

/// Largest plaintext an entry may hold. Shares are tens of kilobytes; the limit lets a reader
/// refuse a huge file before reading it into memory.
pub const MAX_ENTRY_PLAINTEXT: usize = 16 * 1024 * 1024;
pub(crate) const MAX_FILE_LEN: usize = HEADER_LEN + MAX_ENTRY_PLAINTEXT + TAG_LEN;

/// What an entry holds. Part of the header, so an identity file copied over a wallet file (or the
/// reverse) is refused instead of decrypting into the wrong use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EntryKind {
    Identity = 1,
    Wallet = 2,
    /// A backup holder's private key (`tessera backup-key new`), kept outside the keystore.
    BackupKey = 3,
}

impl EntryKind {
    fn name(self) -> &'static str {
        match self {
            EntryKind::Identity => "device identity",
            EntryKind::Wallet => "wallet",
            EntryKind::BackupKey => "backup key",
        }
    }
}

const KIB_PER_MIB: u32 = 1024;

/// Argon2id cost parameters of a keystore entry.
///
/// [`KdfParams::new`] accepts only values under the DoS ceiling (see the constants), which is
/// also what a reader accepts from a file, so that anything this build writes it can read again.
/// The security floor is enforced by the keystore, not here, so that tests can build cheap
/// parameters (see [`super::KeystoreOptions::insecure_fast_kdf_for_tests`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
}

impl KdfParams {
    /// What a keystore uses unless told otherwise: 64 MiB, 3 passes, 1 lane (about half a second
    /// on a phone-class core; above OWASP's recommendation of 46 MiB, 1 pass).
    pub const DEFAULT: KdfParams = KdfParams {
        m_cost_kib: 64 * KIB_PER_MIB,
        t_cost: 3,
        p_cost: 1,
    };

    /// Cheap parameters for tests only (256 KiB, 1 pass): a keystore accepts them only when
    /// opened with [`super::KeystoreOptions::insecure_fast_kdf_for_tests`].
    pub const INSECURE_FAST_FOR_TESTS: KdfParams = KdfParams {
        m_cost_kib: 256,
        t_cost: 1,
        p_cost: 1,
    };

    /// Security floor for memory: 8 MiB.
    pub const MIN_M_COST_KIB: u32 = 8 * KIB_PER_MIB;
    /// DoS ceiling for memory: 4 GiB.
    pub const MAX_M_COST_KIB: u32 = 4 * 1024 * KIB_PER_MIB;
    /// DoS ceiling for passes.
    pub const MAX_T_COST: u32 = 100;
    /// DoS ceiling for lanes.
    pub const MAX_P_COST: u32 = 16;
    /// DoS ceiling for the total work, memory × passes: 16 GiB (the per-parameter ceilings alone
    /// would still allow 400 GiB of memory traffic, many minutes of work).
    pub const MAX_WORK_KIB: u64 = 16 * 1024 * 1024;

    /// Validated parameters: memory in KiB, passes, lanes.
    ///
    /// # Errors
    /// [`Error::InvalidKdfParams`] if they are not valid Argon2 parameters or are over a ceiling.
    pub fn new(m_cost_kib: u32, t_cost: u32, p_cost: u32) -> Result<Self> {
        Self::checked(m_cost_kib, t_cost, p_cost)
    }

    fn checked(m_cost_kib: u32, t_cost: u32, p_cost: u32) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidKdfParams { path: None, reason };
        if t_cost == 0 || p_cost == 0 {
            return Err(invalid("t_cost and p_cost must be at least 1".into()));
        }
        // Argon2 needs 8 KiB (two blocks per sync point) per lane.
        if u64::from(m_cost_kib) < 8 * u64::from(p_cost) {
            return Err(invalid(format!(
                "m_cost {m_cost_kib} KiB is below Argon2's minimum of 8 KiB per lane"
            )));
        }
        if m_cost_kib > Self::MAX_M_COST_KIB {
            return Err(invalid(format!(
                "m_cost {m_cost_kib} KiB is over the 4 GiB ceiling"
            )));
        }
        if t_cost > Self::MAX_T_COST {
            return Err(invalid(format!(
                "t_cost {t_cost} is over the ceiling of {}",
                Self::MAX_T_COST
            )));
        }
        if p_cost > Self::MAX_P_COST {
            return Err(invalid(format!(
                "p_cost {p_cost} is over the ceiling of {}",
                Self::MAX_P_COST
            )));
        }
        if u64::from(m_cost_kib) * u64::from(t_cost) > Self::MAX_WORK_KIB {
            return Err(invalid(format!(
                "m_cost × t_cost = {m_cost_kib} KiB × {t_cost} is over the 16 GiB work ceiling"
            )));
        }
        Ok(KdfParams {
            m_cost_kib,
            t_cost,
            p_cost,
        })
    }

    /// Memory cost in KiB.
    #[must_use]
    pub fn m_cost_kib(&self) -> u32 {
        self.m_cost_kib
    }

    /// Number of passes.
    #[must_use]
    pub fn t_cost(&self) -> u32 {
        self.t_cost
    }

    /// Number of lanes.
    #[must_use]
    pub fn p_cost(&self) -> u32 {
        self.p_cost
    }

    /// Why these parameters are below the security floor, if they are.
    pub(crate) fn below_floor(&self) -> Option<String> {
        (self.m_cost_kib < Self::MIN_M_COST_KIB).then(|| {
            format!(
                "m_cost {} KiB is below the floor of {} KiB",
                self.m_cost_kib,
                Self::MIN_M_COST_KIB
            )
        })
    }

    fn derive_key(&self, passphrase: &Passphrase, salt: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        let params = Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(32))
            .map_err(|e| Error::Crypto(format!("Argon2 parameters: {e}")))?;
        let mut key = Zeroizing::new([0u8; 32]);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(passphrase.as_bytes(), salt, key.as_mut())
            .map_err(|e| Error::Crypto(format!("Argon2: {e}")))?;
        Ok(key)
    }
}

impl Default for KdfParams {
    fn default() -> Self {
        Self::DEFAULT
    }
}

fn cipher(key: &[u8; 32]) -> XChaCha20Poly1305 {
    // A 32-byte slice is always a valid XChaCha20-Poly1305 key; `new_from_slice` (rather than an
    // array conversion) avoids leaving an unzeroized copy of the key on the stack.
    #[allow(clippy::expect_used)]
    XChaCha20Poly1305::new_from_slice(key).expect("32-byte key")
}

/// Encrypts `plaintext` into a complete entry file.
pub(crate) fn seal_entry(
    kind: EntryKind,
    params: &KdfParams,
    passphrase: &Passphrase,
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    if plaintext.len() > MAX_ENTRY_PLAINTEXT {
        return Err(Error::EntryTooLarge {
            size: plaintext.len(),
            limit: MAX_ENTRY_PLAINTEXT,
        });
    }
    let salt = crate::random_bytes::<SALT_LEN>();
    let nonce = crate::random_bytes::<NONCE_LEN>();
    // Bounded by MAX_ENTRY_PLAINTEXT, so it fits.
    let ciphertext_len = u32::try_from(plaintext.len() + TAG_LEN)
        .map_err(|_| Error::Crypto("entry length overflow".into()))?;

    let mut file = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
    file.extend_from_slice(MAGIC);
    file.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    file.push(kind as u8);
    file.extend_from_slice(&params.m_cost_kib.to_be_bytes());
    file.extend_from_slice(&params.t_cost.to_be_bytes());
    file.extend_from_slice(&params.p_cost.to_be_bytes());
    file.extend_from_slice(salt.as_ref());
    file.extend_from_slice(nonce.as_ref());
    file.extend_from_slice(&ciphertext_len.to_be_bytes());
    debug_assert_eq!(file.len(), HEADER_LEN);

    let key = params.derive_key(passphrase, salt.as_ref())?;
    let ciphertext = cipher(&key)
        .encrypt(
            &(*nonce).into(),
            Payload {
                msg: plaintext,
                aad: &file,
            },
        )
        .map_err(|_| Error::Crypto("XChaCha20-Poly1305 encryption failed".into()))?;
    file.extend_from_slice(&ciphertext);
    Ok(file)
}

/// Checks and decrypts an entry file read from `path`.
///
/// Every structural check runs before the (costly) key derivation, so a damaged file is reported
/// as damaged, and a file with hostile parameters costs nothing.
pub(crate) fn open_entry(
    path: &Path,
    bytes: &[u8],
    expected: EntryKind,
    passphrase: &Passphrase,
    allow_weak_kdf: bool,
) -> Result<Zeroizing<Vec<u8>>> {
    let corrupt = |reason: String| Error::CorruptFile {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(corrupt("bad magic".into()));
    }
    if bytes.len() < HEADER_LEN {
        return Err(corrupt(format!(
            "truncated: {} bytes, shorter than the {HEADER_LEN}-byte header",
            bytes.len()
        )));
    }
    let (header, ciphertext) = bytes.split_at(HEADER_LEN);
    let mut fields = Fields(&header[MAGIC.len()..]);

    let version = u16::from_be_bytes(fields.take());
    if version != FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            path: path.to_path_buf(),
            version,
        });
    }
    let [kind] = fields.take::<1>();
    if kind != expected as u8 {
        let found = match kind {
            1 => EntryKind::Identity.name(),
            2 => EntryKind::Wallet.name(),
            3 => EntryKind::BackupKey.name(),
            _ => return Err(corrupt(format!("unknown entry kind {kind}"))),
        };
        return Err(corrupt(format!(
            "it holds a {found} entry where a {} entry belongs",
            expected.name()
        )));
    }
    let m_cost = u32::from_be_bytes(fields.take());
    let t_cost = u32::from_be_bytes(fields.take());
    let p_cost = u32::from_be_bytes(fields.take());
    let params = KdfParams::checked(m_cost, t_cost, p_cost).map_err(|e| match e {
        Error::InvalidKdfParams { reason, .. } => Error::InvalidKdfParams {
            path: Some(path.to_path_buf()),
            reason,
        },
        other => other,
    })?;
    if let (Some(reason), false) = (params.below_floor(), allow_weak_kdf) {
        return Err(Error::WeakKdfParams {
            path: Some(path.to_path_buf()),
            reason,
        });
    }
    let salt: [u8; SALT_LEN] = fields.take();
    let nonce: [u8; NONCE_LEN] = fields.take();
    let declared_len = u32::from_be_bytes(fields.take()) as usize;
    if declared_len != ciphertext.len() {
        return Err(corrupt(format!(
            "the header declares {declared_len} bytes of ciphertext, the file has {} \
             (truncated or extended)",
            ciphertext.len()
        )));
    }
    if ciphertext.len() < TAG_LEN {
        return Err(corrupt("the ciphertext is shorter than its tag".into()));
    }

    let key = params.derive_key(passphrase, &salt)?;
    let plaintext = cipher(&key)
        .decrypt(
            &nonce.into(),
            Payload {
                msg: ciphertext,
                aad: header,
            },
        )
        .map_err(|_| Error::WrongPassphrase {
            path: path.to_path_buf(),
        })?;
    Ok(Zeroizing::new(plaintext))
}

/// Reads fixed-size fields off a header whose length was checked beforehand.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.0[..N]);
        self.0 = &self.0[N..];
        out
    }
}
