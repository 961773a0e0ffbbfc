//! Tessera storage: the device keystore and key-encryption providers.
//!
//! - [`keystore`]: the device's keystore directory (`TESSERA_HOME`, default `~/.tessera`) holding
//!   the device identity key and the wallet shares, each encrypted under the user's passphrase
//!   (Argon2id, XChaCha20-Poly1305) and written atomically.
//! - [`home`]: the device home's plain records (device config, known holders and peers) behind
//!   the [`HomeStorage`] trait: files ([`FileHome`]) or memory ([`MemoryHome`]).
//! - [`kek`]: key-encryption keys for the server's envelope encryption, behind a pluggable
//!   [`kek::KeyEncryptionKey`] trait, with a local key file provider ([`kek::FileKek`]).
//! - [`pkcs11`]: the HSM provider ([`pkcs11::Pkcs11Kek`], PKCS#11 through `cryptoki`).
//!
//! Nothing in this crate knows what a key share contains: it stores and seals opaque bytes.
#![forbid(unsafe_code)]
#![deny(missing_docs, clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

// File modes (0600/0700), directory fsync and no-clobber links are what make the keystore safe;
// on a platform without them we would silently lose those guarantees, so we refuse to build.
#[cfg(not(unix))]
compile_error!("tessera-store needs a Unix platform (file modes, directory fsync)");

pub mod error;
mod fs;
pub mod home;
pub mod kek;
pub mod keystore;
pub mod pkcs11;

pub use error::{Error, Result};
pub use fs::{write_new_private_file, write_private_file};
pub use home::{FileHome, HomeRecord, HomeStorage, MemoryHome};
pub use kek::{DataKey, FileKek, KeyEncryptionKey, SealedSecret};
pub use keystore::{DeviceIdentity, KdfParams, Keystore, KeystoreOptions, Passphrase};
pub use pkcs11::{Pkcs11Kek, Pkcs11Spec};

/// `N` bytes from the operating system's generator.
pub(crate) fn random_bytes<const N: usize>() -> zeroize::Zeroizing<[u8; N]> {
    use rand::TryRng;

    let mut bytes = zeroize::Zeroizing::new([0u8; N]);
    // The OS generator failing is unrecoverable for a key-custody process: there is no safe
    // fallback, so we stop rather than continue with predictable keys, salts or nonces.
    #[allow(clippy::expect_used)]
    rand::rngs::SysRng
        .try_fill_bytes(bytes.as_mut())
        .expect("the operating system's random number generator failed");
    bytes
}
