//! The on-disk formats: checked against their documentation by an independent decryption, and
//! pinned by fixture files that every later build must keep reading.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::Path;

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use common::{fast_keystore, pass, set_mode};
use tessera_store::kek::{open, seal};
use tessera_store::{FileKek, KeyEncryptionKey, SealedSecret};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
const FIXTURE_PASSPHRASE: &str = "fixture passphrase";
const FIXTURE_WALLET: &str = "fixture-wallet";
const FIXTURE_WALLET_PLAINTEXT: &[u8] = b"tessera keystore fixture v1: opaque share bytes";
const FIXTURE_IDENTITY_PUBLIC_KEY: &str =
    "51ea08dd7d80c246955310efc8204f881eef6193a2e2517b75048a21cd00213e";
const FIXTURE_KEK_ID: &str = "file:2effb937bacd61a6";
const FIXTURE_SEALED_PLAINTEXT: &[u8] = b"tessera sealed secret fixture v1";
const FIXTURE_SEALED_AAD: &[u8] = b"wallet fixture/party 1/epoch 0";
const FIXTURE_BACKUP_KEY_LABEL: &str = "usb-1";
const FIXTURE_BACKUP_KEY: [u8; 32] = [0x5a; 32];

/// Decrypts an entry file following only the layout documented in `keystore::format`.
fn decrypt_as_documented(file: &[u8], passphrase: &str) -> Vec<u8> {
    let be32 = |at: usize| u32::from_be_bytes(file[at..at + 4].try_into().unwrap());
    assert_eq!(&file[0..4], b"TSKE");
    assert_eq!(u16::from_be_bytes([file[4], file[5]]), 1);
    let (m, t, p) = (be32(7), be32(11), be32(15));
    let salt = &file[19..35];
    let nonce: [u8; 24] = file[35..59].try_into().unwrap();
    let ciphertext_len = be32(59) as usize;
    let (header, ciphertext) = file.split_at(63);
    assert_eq!(ciphertext.len(), ciphertext_len);

    let mut key = [0u8; 32];
    Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(m, t, p, Some(32)).unwrap(),
    )
    .hash_password_into(passphrase.as_bytes(), salt, &mut key)
    .unwrap();
    XChaCha20Poly1305::new_from_slice(&key)
        .unwrap()
        .decrypt(
            &nonce.into(),
            Payload {
                msg: ciphertext,
                aad: header,
            },
        )
        .unwrap()
}

#[test]
fn entries_follow_the_documented_format() {
    let dir = tempfile::tempdir().unwrap();
    let ks = fast_keystore(dir.path());
    let identity = ks.create_identity(&pass("doc")).unwrap();
    ks.save_wallet("w", b"opaque share", &pass("doc")).unwrap();

    let wallet = fs::read(dir.path().join("wallets/w.share")).unwrap();
    assert_eq!(wallet[6], 2, "wallet kind");
    assert_eq!(decrypt_as_documented(&wallet, "doc"), b"opaque share");

    let id_file = fs::read(dir.path().join("identity.key")).unwrap();
    assert_eq!(id_file[6], 1, "identity kind");
    let seed: [u8; 32] = decrypt_as_documented(&id_file, "doc").try_into().unwrap();
    let public = ed25519_dalek::SigningKey::from_bytes(&seed)
        .verifying_key()
        .to_bytes();
    assert_eq!(public, identity.public_key());

    // The secret is not in the identity's Debug output in any usual rendering.
    let shown = format!("{identity:?} {identity:#?}");
    assert!(!shown.contains(&hex::encode(seed)));
    assert!(!shown.contains(&format!("{seed:?}")));
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn keystore_v1_fixture_still_loads() {
    // Copied: opening a keystore may tidy its directory, and the fixtures must stay untouched.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&Path::new(FIXTURES).join("keystore-v1"), dir.path());
    let ks = fast_keystore(dir.path());
    let p = pass(FIXTURE_PASSPHRASE);

    let identity = ks.load_identity(&p).unwrap();
    assert_eq!(
        hex::encode(identity.public_key()),
        FIXTURE_IDENTITY_PUBLIC_KEY
    );
    assert_eq!(ks.list_wallets().unwrap(), [FIXTURE_WALLET]);
    assert_eq!(
        &*ks.load_wallet(FIXTURE_WALLET, &p).unwrap(),
        FIXTURE_WALLET_PLAINTEXT
    );
}

#[test]
fn sealed_secret_v1_fixture_still_opens() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("kek.key");
    fs::copy(Path::new(FIXTURES).join("kek-v1/kek.key"), &key_path).unwrap();
    // Git does not keep file modes.
    set_mode(&key_path, 0o600);
    let kek = FileKek::open_or_create(&key_path).unwrap();
    assert_eq!(kek.id(), FIXTURE_KEK_ID);

    let json = fs::read_to_string(Path::new(FIXTURES).join("kek-v1/sealed.json")).unwrap();
    let sealed: SealedSecret = serde_json::from_str(&json).unwrap();
    assert_eq!(
        &*open(&kek, &sealed, FIXTURE_SEALED_AAD).unwrap(),
        FIXTURE_SEALED_PLAINTEXT
    );
}

#[test]
fn backup_key_v1_fixture_still_opens() {
    let path = Path::new(FIXTURES).join("backup-key-v1/usb-1.key");
    let options = tessera_store::KeystoreOptions::default().insecure_fast_kdf_for_tests();
    let (label, key) =
        tessera_store::keystore::read_backup_key_file(&path, &pass(FIXTURE_PASSPHRASE), &options)
            .unwrap();
    assert_eq!(
        (label.as_str(), *key),
        (FIXTURE_BACKUP_KEY_LABEL, FIXTURE_BACKUP_KEY)
    );
}

/// Writes the fixtures of the current format version. Run once when a version is added, with
/// `TESSERA_STORE_FIXTURE_OUT=<dir> cargo test -p tessera-store --test format -- --ignored`, then
/// copy the printed constants above; never regenerate the fixtures of an existing version.
#[test]
#[ignore = "writes fixture files; run by hand when a format version is added"]
fn write_fixtures() {
    let out = std::path::PathBuf::from(std::env::var_os("TESSERA_STORE_FIXTURE_OUT").unwrap());

    let ks = fast_keystore(&out.join("keystore-v1"));
    let p = pass(FIXTURE_PASSPHRASE);
    let identity = ks.create_identity(&p).unwrap();
    ks.save_wallet(FIXTURE_WALLET, FIXTURE_WALLET_PLAINTEXT, &p)
        .unwrap();

    fs::create_dir_all(out.join("backup-key-v1")).unwrap();
    tessera_store::keystore::write_backup_key_file(
        &out.join("backup-key-v1/usb-1.key"),
        FIXTURE_BACKUP_KEY_LABEL,
        &FIXTURE_BACKUP_KEY,
        &p,
        &tessera_store::KeystoreOptions::default().insecure_fast_kdf_for_tests(),
    )
    .unwrap();

    fs::create_dir_all(out.join("kek-v1")).unwrap();
    let kek = FileKek::open_or_create(out.join("kek-v1/kek.key")).unwrap();
    let sealed = seal(&kek, FIXTURE_SEALED_PLAINTEXT, FIXTURE_SEALED_AAD).unwrap();
    fs::write(
        out.join("kek-v1/sealed.json"),
        serde_json::to_string_pretty(&sealed).unwrap() + "\n",
    )
    .unwrap();

    println!(
        "FIXTURE_IDENTITY_PUBLIC_KEY = {:?}",
        hex::encode(identity.public_key())
    );
    println!("FIXTURE_KEK_ID = {:?}", kek.id());
}
