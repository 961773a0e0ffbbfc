//! The device keystore's encrypted entry files, read as the keystore reads them from disk. The
//! first byte picks the entry: 0 the device identity (`identity.key`), 1 a wallet
//! (`wallets/w.share`), 2 a backup holder's key file (`read_backup_key_file`).
//!
//! Every structural check runs before the key derivation, so the fuzzer exercises the header
//! checks and the AEAD; it cannot forge a tag, so the decrypted layouts behind it are reached only
//! by the seeds' own (valid) files. Entries whose Argon2 parameters ask for more than 4 MiB or
//! two passes are skipped: those cost what the file asks (bounded by `KdfParams::MAX_WORK_KIB`),
//! by design, and would only slow the fuzzer down.
#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use tessera_store::keystore::read_backup_key_file;
use tessera_store::{Keystore, KeystoreOptions, Passphrase};

/// The passphrase of the seeds (`examples/seeds.rs`).
const PASSPHRASE: &str = "fuzzing passphrase";

static HOME: LazyLock<PathBuf> = LazyLock::new(|| tempfile::tempdir().expect("temp dir").keep());

fn options() -> KeystoreOptions {
    KeystoreOptions::default().insecure_fast_kdf_for_tests()
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, file)) = data.split_first() else {
        return;
    };
    let field = |at: usize| {
        file.get(at..at + 4)
            .map(|b| u32::from_be_bytes(b.try_into().unwrap()))
    };
    // magic 4, version 2, kind 1, then m_cost, t_cost, p_cost (big-endian u32).
    if field(7).is_some_and(|m| m > 4096) || field(11).is_some_and(|t| t > 2) {
        return;
    }
    let passphrase = Passphrase::new(PASSPHRASE.into()).unwrap();
    let dir = HOME.join("keystore");
    let keystore = Keystore::open_with(&dir, options()).expect("keystore");
    match selector % 3 {
        0 => {
            std::fs::write(dir.join("identity.key"), file).unwrap();
            let _ = keystore.load_identity(&passphrase);
        }
        1 => {
            std::fs::create_dir_all(dir.join("wallets")).unwrap();
            std::fs::write(dir.join("wallets").join("w.share"), file).unwrap();
            let _ = keystore.load_wallet("w", &passphrase);
        }
        _ => {
            let path = HOME.join("holder.key");
            std::fs::write(&path, file).unwrap();
            let _ = read_backup_key_file(&path, &passphrase, &options());
        }
    }
});
