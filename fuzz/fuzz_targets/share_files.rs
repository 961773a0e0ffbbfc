//! Files and stored blobs that hold or describe shares. The first byte picks the decoder:
//! 0 a key share (`KeyShare::from_bytes`), 1 a backup file (`Backup::from_bytes`, then
//! `verify` on what decodes), 2 a holder public key (`HolderPublicKey::from_text`), 3 a device's
//! wallet record (`WalletRecord::from_bytes`), 4 the server's sealed share blob
//! (`decode_sealed`, then `kek::open` under a fixed key).
//!
//! A backup file has one encoding: what decodes must encode back to the same bytes. Share files
//! and wallet records are also read in the layouts earlier builds wrote: what decodes must
//! encode to bytes that decode and encode to the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_backup::backup::Backup;
use tessera_backup::holder::HolderPublicKey;
use tessera_client::WalletRecord;
use tessera_core::KeyShare;
use tessera_store::kek;

/// A key-encryption key no input was sealed under (the fuzzer cannot make a blob it opens).
static KEK: std::sync::LazyLock<kek::FileKek> = std::sync::LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("temp dir").keep();
    kek::FileKek::open_or_create(dir.join("kek")).expect("key file")
});

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    match selector % 5 {
        0 => {
            // A share file is read in the layouts earlier builds wrote too, so its reader is not
            // one-encoding: what it reads must write bytes that read back to the same bytes.
            if let Ok(share) = KeyShare::from_bytes(bytes) {
                let encoded = share.to_bytes();
                let again = KeyShare::from_bytes(&encoded).expect("re-read");
                assert_eq!(again.to_bytes().as_slice(), encoded.as_slice());
                assert_eq!(again.public_key(), share.public_key());
                assert_eq!(again.party(), share.party());
            }
        }
        1 => {
            if let Ok(backup) = Backup::from_bytes(bytes) {
                assert_eq!(backup.to_bytes(), bytes, "a backup with two encodings");
                let _ = backup.verify();
            }
        }
        2 => {
            let Ok(text) = std::str::from_utf8(bytes) else {
                return;
            };
            if let Ok(key) = HolderPublicKey::from_text(text) {
                let again = HolderPublicKey::from_text(&key.to_text()).expect("re-read");
                assert_eq!(again.to_text(), key.to_text());
                assert_eq!(again.fingerprint(), key.fingerprint());
            }
        }
        3 => {
            if let Ok(record) = WalletRecord::from_bytes(bytes) {
                let encoded = record.to_bytes();
                let again = WalletRecord::from_bytes(&encoded).expect("re-read");
                assert_eq!(again.to_bytes().as_slice(), encoded.as_slice());
            }
        }
        _ => {
            if let Ok(sealed) = tessera_server::db::shares::decode_sealed(bytes) {
                assert!(
                    kek::open(&*KEK, &sealed, b"fuzz").is_err(),
                    "opened a forged blob"
                );
            }
        }
    }
});
