//! The device keystore against real files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use common::{fast_keystore, file_names, mode, pass};
use tessera_store::keystore::format::{FORMAT_VERSION, MAX_ENTRY_PLAINTEXT};
use tessera_store::keystore::verify_identity_signature;
use tessera_store::{Error, KdfParams, Keystore, KeystoreOptions, Passphrase};

const HEADER_LEN: usize = 63;

fn wallet_file(ks: &Keystore, name: &str) -> PathBuf {
    ks.dir().join("wallets").join(format!("{name}.share"))
}

/// An error for a damaged file must say which file.
fn assert_names_file(err: &Error, path: &Path) {
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "error {msg:?} does not name {}",
        path.display()
    );
}

// --- identity ---

#[test]
fn identity_round_trip_and_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let ks = fast_keystore(dir.path());
    assert!(!ks.has_identity().unwrap());

    let created = ks.create_identity(&pass("correct horse")).unwrap();
    assert!(ks.has_identity().unwrap());
    let loaded = ks.load_identity(&pass("correct horse")).unwrap();
    assert_eq!(created.public_key(), loaded.public_key());

    let msg = b"tessera/auth/v1 challenge 42";
    let sig = loaded.sign(msg);
    assert_eq!(sig, created.sign(msg), "Ed25519 is deterministic");
    verify_identity_signature(&created.public_key(), msg, &sig).unwrap();

    assert!(matches!(
        verify_identity_signature(&created.public_key(), b"another message", &sig),
        Err(Error::SignatureInvalid)
    ));
    let mut bad_sig = sig;
    bad_sig[10] ^= 1;
    assert!(matches!(
        verify_identity_signature(&created.public_key(), msg, &bad_sig),
        Err(Error::SignatureInvalid)
    ));
}

#[test]
fn verification_rejects_invalid_and_small_order_keys() {
    let dir = tempfile::tempdir().unwrap();
    let id = fast_keystore(dir.path())
        .create_identity(&pass("p"))
        .unwrap();
    let sig = id.sign(b"m");
    // y = 2 is not the y-coordinate of any curve point.
    let mut not_a_point = [0u8; 32];
    not_a_point[0] = 2;
    assert!(matches!(
        verify_identity_signature(&not_a_point, b"m", &sig),
        Err(Error::InvalidPublicKey)
    ));
    // The identity point (small order): strict verification refuses it.
    let mut identity_point = [0u8; 32];
    identity_point[0] = 1;
    assert!(verify_identity_signature(&identity_point, b"m", &sig).is_err());
}

#[test]
fn two_keystores_have_different_identities() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let id_a = fast_keystore(a.path()).create_identity(&pass("p")).unwrap();
    let id_b = fast_keystore(b.path()).create_identity(&pass("p")).unwrap();
    assert_ne!(id_a.public_key(), id_b.public_key());
    let sig = id_a.sign(b"m");
    assert!(verify_identity_signature(&id_b.public_key(), b"m", &sig).is_err());
}

#[test]
fn identity_is_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let ks = fast_keystore(dir.path());
    let first = ks.create_identity(&pass("p")).unwrap();
    let before = fs::read(dir.path().join("identity.key")).unwrap();
    let err = ks.create_identity(&pass("another")).unwrap_err();
    assert!(matches!(err, Error::IdentityExists { .. }), "{err}");
    assert_eq!(fs::read(dir.path().join("identity.key")).unwrap(), before);
    assert_eq!(
        ks.load_identity(&pass("p")).unwrap().public_key(),
        first.public_key()
    );
}

#[test]
fn missing_identity_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let err = fast_keystore(dir.path())
        .load_identity(&pass("p"))
        .unwrap_err();
    assert!(matches!(err, Error::IdentityNotFound { .. }), "{err}");
}

// --- wallets ---

#[test]
fn wallet_round_trip_list_and_remove() {
    let dir = tempfile::tempdir().unwrap();
    let ks = fast_keystore(dir.path());
    assert!(ks.list_wallets().unwrap().is_empty());

    ks.save_wallet("savings", b"share one", &pass("p1"))
        .unwrap();
    ks.save_wallet("Daily-2.eth_main", b"share two", &pass("p2"))
        .unwrap();
    ks.save_wallet("empty", b"", &pass("p1")).unwrap();

    assert_eq!(
        ks.list_wallets().unwrap(),
        ["Daily-2.eth_main", "empty", "savings"]
    );
    assert!(ks.has_wallet("savings").unwrap());
    assert_eq!(
        &*ks.load_wallet("savings", &pass("p1")).unwrap(),
        b"share one"
    );
    assert_eq!(
        &*ks.load_wallet("Daily-2.eth_main", &pass("p2")).unwrap(),
        b"share two"
    );
    assert!(ks.load_wallet("empty", &pass("p1")).unwrap().is_empty());

    ks.remove_wallet("savings").unwrap();
    assert!(!ks.has_wallet("savings").unwrap());
    assert_eq!(ks.list_wallets().unwrap(), ["Daily-2.eth_main", "empty"]);
    assert!(matches!(
        ks.load_wallet("savings", &pass("p1")),
        Err(Error::WalletNotFound { .. })
    ));
    assert!(matches!(
        ks.remove_wallet("savings"),
        Err(Error::WalletNotFound { .. })
    ));
}

#[test]
fn list_ignores_files_that_are_not_wallets() {
    let dir = tempfile::tempdir().unwrap();
    let ks = fast_keystore(dir.path());
    ks.save_wallet("w", b"x", &pass("p")).unwrap();
    let wallets = dir.path().join("wallets");
    fs::write(wallets.join("notes.txt"), b"x").unwrap();
    fs::write(wallets.join(".hidden.share"), b"x").unwrap();
    fs::write(wallets.join(".tessera-tmp-0011223344556677"), b"x").unwrap();
    fs::create_dir(wallets.join("dir.share")).unwrap();
    assert_eq!(ks.list_wallets().unwrap(), ["w"]);
}

#[test]
fn save_never_overwrites_and_replace_must_be_explicit() {
    let dir = tempfile::tempdir().unwrap();
    let ks = fast_keystore(dir.path());
    ks.save_wallet("w", b"epoch 0", &pass("p")).unwrap();
    let before = fs::read(wallet_file(&ks, "w")).unwrap();

    let err = ks.save_wallet("w", b"epoch 1", &pass("p")).unwrap_err();
    assert!(matches!(err, Error::WalletExists { .. }), "{err}");
    assert!(err.to_string().contains("replace_wallet"));
    assert_eq!(fs::read(wallet_file(&ks, "w")).unwrap(), before);

    ks.replace_wallet("w", b"epoch 1", &pass("new pass"))
        .unwrap();
    assert_eq!(
        &*ks.load_wallet("w", &pass("new pass")).unwrap(),
        b"epoch 1"
    );
    assert!(matches!(
        ks.load_wallet("w", &pass("p")),
        Err(Error::WrongPassphrase { .. })
    ));

    assert!(matches!(
        ks.replace_wallet("absent", b"x", &pass("p")),
        Err(Error::WalletNotFound { .. })
    ));
    assert!(!ks.has_wallet("absent").unwrap());
    // No temporary file is left behind by successful writes.
    assert_eq!(file_names(&dir.path().join("wallets")), ["w.share"]);
}

#[test]
fn wrong_passphrase_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ks = fast_keystore(dir.path());
    ks.create_identity(&pass("right")).unwrap();
    ks.save_wallet("w", b"secret share", &pass("right"))
        .unwrap();
    let id_path = dir.path().join("identity.key");
    let wallet_path = wallet_file(&ks, "w");
    let (id_before, wallet_before) = (fs::read(&id_path).unwrap(), fs::read(&wallet_path).unwrap());

    let err = ks.load_identity(&pass("wrong")).unwrap_err();
    assert!(matches!(err, Error::WrongPassphrase { .. }), "{err}");
    assert_names_file(&err, &id_path);
    let err = ks.load_wallet("w", &pass("wrong")).unwrap_err();
    assert!(matches!(err, Error::WrongPassphrase { .. }), "{err}");
    assert_names_file(&err, &wallet_path);

    assert_eq!(fs::read(&id_path).unwrap(), id_before);
    assert_eq!(fs::read(&wallet_path).unwrap(), wallet_before);
    assert_eq!(file_names(dir.path()), ["identity.key", "wallets"]);
    assert_eq!(
        &*ks.load_wallet("w", &pass("right")).unwrap(),
        b"secret share"
    );
}

#[test]
fn every_byte_flip_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let ks = fast_keystore(dir.path());
    let plaintext = vec![0x5a; 200];
    ks.save_wallet("w", &plaintext, &pass("p")).unwrap();
    let path = wallet_file(&ks, "w");
    let original = fs::read(&path).unwrap();
    assert_eq!(original.len(), HEADER_LEN + plaintext.len() + 16);

    // Every header byte, and ciphertext bytes at the start, middle and end (the tag).
    let ciphertext = HEADER_LEN..original.len();
    let positions: Vec<usize> = (0..HEADER_LEN)
        .chain(ciphertext.clone().step_by(23))
        .chain(original.len() - 16..original.len())
        .collect();
    for &pos in &positions {
        for mask in [0x01u8, 0x80] {
            let mut damaged = original.clone();
            damaged[pos] ^= mask;
            fs::write(&path, &damaged).unwrap();

            let err = ks.load_wallet("w", &pass("p")).unwrap_err();
            assert_names_file(&err, &path);
            if ciphertext.contains(&pos) || (19..59).contains(&pos) {
                // Salt, nonce and ciphertext can only be caught by the AEAD.
                assert!(
                    matches!(err, Error::WrongPassphrase { .. }),
                    "byte {pos}: {err}"
                );
            } else {
                assert!(
                    !err.to_string().is_empty(),
                    "byte {pos} mask {mask:#x}: empty message"
                );
            }
            // Reading never writes.
            assert_eq!(fs::read(&path).unwrap(), damaged);
        }
    }
    fs::write(&path, &original).unwrap();
    assert_eq!(*ks.load_wallet("w", &pass("p")).unwrap(), plaintext);
}

#[test]
fn structural_damage_is_named_precisely() {
    let dir = tempfile::tempdir().unwrap();
    let ks = fast_keystore(dir.path());
    ks.save_wallet("w", b"data", &pass("p")).unwrap();
    let path = wallet_file(&ks, "w");
    let original = fs::read(&path).unwrap();
    let load_with = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = original.clone();
        edit(&mut bytes);
        fs::write(&path, &bytes).unwrap();
        ks.load_wallet("w", &pass("p")).unwrap_err()
    };

    let err = load_with(&|b| b[0] = b'X');
    assert!(
        matches!(&err, Error::CorruptFile { reason, .. } if reason.contains("magic")),
        "{err}"
    );
    let err = load_with(&|b| b[5] = 2);
    assert!(
        matches!(err, Error::UnsupportedVersion { version: 2, .. }),
        "{err}"
    );
    let err = load_with(&|b| b[6] = 1);
    assert!(
        matches!(&err, Error::CorruptFile { reason, .. } if reason.contains("device identity")),
        "{err}"
    );
    let err = load_with(&|b| b[6] = 9);
    assert!(matches!(err, Error::CorruptFile { .. }), "{err}");
    let err = load_with(&|b| b[7] = 0xff);
    assert!(
        matches!(&err, Error::InvalidKdfParams { path: Some(p), .. } if *p == path),
        "{err}"
    );
    let err = load_with(&|b| b[62] ^= 1);
    assert!(
        matches!(&err, Error::CorruptFile { reason, .. } if reason.contains("declares")),
        "{err}"
    );
    assert_eq!(FORMAT_VERSION, 1);
}

#[test]
fn truncated_or_extended_files_are_damaged_not_wrong_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let ks = fast_keystore(dir.path());
    ks.save_wallet("w", &[7u8; 100], &pass("p")).unwrap();
    let path = wallet_file(&ks, "w");
    let original = fs::read(&path).unwrap();

    let mut lengths = vec![
        0,
        1,
        3,
        4,
        6,
        20,
        HEADER_LEN - 1,
        HEADER_LEN,
        HEADER_LEN + 15,
    ];
    lengths.extend([original.len() - 16, original.len() - 1]);
    for len in lengths {
        fs::write(&path, &original[..len]).unwrap();
        let err = ks.load_wallet("w", &pass("p")).unwrap_err();
        assert!(
            matches!(err, Error::CorruptFile { .. }),
            "length {len}: {err}"
        );
        assert_names_file(&err, &path);
    }
    let mut extended = original.clone();
    extended.push(0);
    fs::write(&path, &extended).unwrap();
    let err = ks.load_wallet("w", &pass("p")).unwrap_err();
    assert!(matches!(err, Error::CorruptFile { .. }), "{err}");
}

#[test]
fn huge_files_are_refused_without_reading_them() {
    let dir = tempfile::tempdir().unwrap();
    let ks = fast_keystore(dir.path());
    let path = wallet_file(&ks, "big");
    let file = fs::File::create(&path).unwrap();
    // Sparse: costs no disk, but its length is over the limit.
    file.set_len(64 * 1024 * 1024).unwrap();
    let err = ks.load_wallet("big", &pass("p")).unwrap_err();
    assert!(matches!(err, Error::CorruptFile { .. }), "{err}");
    assert!(matches!(
        ks.save_wallet("w", &vec![0; MAX_ENTRY_PLAINTEXT + 1], &pass("p")),
        Err(Error::EntryTooLarge { .. })
    ));
}

#[test]
fn identity_and_wallet_files_are_not_interchangeable() {
    let dir = tempfile::tempdir().unwrap();
    let ks = fast_keystore(dir.path());
    ks.create_identity(&pass("p")).unwrap();
    let path = wallet_file(&ks, "copied");
    fs::copy(dir.path().join("identity.key"), &path).unwrap();
    let err = ks.load_wallet("copied", &pass("p")).unwrap_err();
    assert!(matches!(err, Error::CorruptFile { .. }), "{err}");
    assert_names_file(&err, &path);
}

#[test]
fn permissions_are_owner_only() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("nested").join("home");
    let ks = fast_keystore(&dir);
    ks.create_identity(&pass("p")).unwrap();
    ks.save_wallet("w", b"x", &pass("p")).unwrap();
    ks.replace_wallet("w", b"y", &pass("p")).unwrap();

    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("wallets")), 0o700);
    assert_eq!(mode(&dir.join("identity.key")), 0o600);
    assert_eq!(mode(&wallet_file(&ks, "w")), 0o600);
}

#[test]
fn opening_a_file_as_keystore_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    fs::write(&file, b"x").unwrap();
    let err = Keystore::open(&file).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert_names_file(&err, &file);
}

#[test]
fn a_crash_mid_write_leaves_the_old_entry() {
    let dir = tempfile::tempdir().unwrap();
    let ks = fast_keystore(dir.path());
    ks.save_wallet("w", b"old share", &pass("p")).unwrap();
    let wallets = dir.path().join("wallets");

    // What a crash leaves behind: a temporary file, complete or partial, never renamed.
    let other = tempfile::tempdir().unwrap();
    let scratch = fast_keystore(other.path());
    scratch.save_wallet("w", b"new share", &pass("p")).unwrap();
    let complete = fs::read(wallet_file(&scratch, "w")).unwrap();
    let stale = wallets.join(".tessera-tmp-00000000000000aa");
    let fresh = wallets.join(".tessera-tmp-00000000000000bb");
    fs::write(&stale, &complete).unwrap();
    fs::write(&fresh, &complete[..40]).unwrap();

    assert_eq!(&*ks.load_wallet("w", &pass("p")).unwrap(), b"old share");
    assert_eq!(ks.list_wallets().unwrap(), ["w"]);

    // Reopening cleans up old leftovers, but not young ones (another process may be writing).
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(an_hour_ago)
        .unwrap();
    let ks = fast_keystore(dir.path());
    assert!(!stale.exists());
    assert!(fresh.exists());
    assert_eq!(&*ks.load_wallet("w", &pass("p")).unwrap(), b"old share");

    // A later write is unaffected by the leftover.
    ks.replace_wallet("w", b"new share", &pass("p")).unwrap();
    assert_eq!(&*ks.load_wallet("w", &pass("p")).unwrap(), b"new share");
}

#[test]
fn wallet_names_are_validated() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("ks");
    let ks = fast_keystore(&dir);
    let too_long = "a".repeat(65);
    let bad = [
        "", "../x", "..", ".", "a/b", "/abs", ".hidden", "a b", "a\0b", "é", "a\\b", "x\n",
        &too_long,
    ];
    for name in bad {
        let err = ks.save_wallet(name, b"x", &pass("p")).unwrap_err();
        assert!(
            matches!(err, Error::InvalidWalletName { .. }),
            "{name:?}: {err}"
        );
        assert!(err.to_string().starts_with("invalid wallet name"));
        assert!(matches!(
            ks.load_wallet(name, &pass("p")),
            Err(Error::InvalidWalletName { .. })
        ));
        assert!(matches!(
            ks.remove_wallet(name),
            Err(Error::InvalidWalletName { .. })
        ));
        assert!(matches!(
            ks.has_wallet(name),
            Err(Error::InvalidWalletName { .. })
        ));
    }
    // Nothing was written anywhere, inside or outside the keystore.
    assert_eq!(file_names(parent.path()), ["ks"]);
    assert_eq!(file_names(&dir), ["wallets"]);
    assert!(file_names(&dir.join("wallets")).is_empty());

    let longest = "Z".repeat(64);
    for good in ["a", "a.b-c_D9", "x..y", "0", "-", &longest] {
        ks.save_wallet(good, b"x", &pass("p")).unwrap();
    }
    assert_eq!(ks.list_wallets().unwrap().len(), 6);
}

#[test]
fn a_long_hostile_name_is_not_echoed_whole() {
    let dir = tempfile::tempdir().unwrap();
    let ks = fast_keystore(dir.path());
    let err = ks
        .save_wallet(&"/".repeat(10_000), b"x", &pass("p"))
        .unwrap_err();
    assert!(err.to_string().len() < 300);
}

#[test]
fn empty_passphrase_is_refused() {
    assert!(matches!(
        Passphrase::new(String::new()),
        Err(Error::EmptyPassphrase)
    ));
}

#[test]
fn debug_output_carries_no_secret() {
    let p = Passphrase::new("hunter2-very-secret".into()).unwrap();
    let shown = format!("{p:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("<redacted>"));

    let dir = tempfile::tempdir().unwrap();
    let id = fast_keystore(dir.path()).create_identity(&p).unwrap();
    let shown = format!("{id:?}");
    assert_eq!(
        shown,
        format!(
            "DeviceIdentity {{ public_key: {:?}, secret: \"<redacted>\" }}",
            hex::encode(id.public_key())
        )
    );
}

// --- key derivation parameters ---

#[test]
fn default_parameters_work_and_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let ks = Keystore::open(dir.path()).unwrap();
    assert_eq!(ks.options().kdf_params(), KdfParams::DEFAULT);
    ks.save_wallet("w", b"strong", &pass("p")).unwrap();
    let bytes = fs::read(wallet_file(&ks, "w")).unwrap();
    assert_eq!(&bytes[7..11], &(64 * 1024u32).to_be_bytes());
    assert_eq!(&bytes[11..15], &3u32.to_be_bytes());
    assert_eq!(&bytes[15..19], &1u32.to_be_bytes());
    assert_eq!(&*ks.load_wallet("w", &pass("p")).unwrap(), b"strong");
}

#[test]
fn weak_parameters_need_the_explicit_test_option() {
    let dir = tempfile::tempdir().unwrap();
    let weak = KdfParams::new(1024, 1, 1).unwrap();
    let err = Keystore::open_with(dir.path(), KeystoreOptions::default().with_kdf_params(weak))
        .unwrap_err();
    assert!(
        matches!(err, Error::WeakKdfParams { path: None, .. }),
        "{err}"
    );

    // A file written with weak parameters is refused by a normal keystore, before any work.
    let ks = fast_keystore(dir.path());
    ks.save_wallet("w", b"x", &pass("p")).unwrap();
    let err = Keystore::open(dir.path())
        .unwrap()
        .load_wallet("w", &pass("p"))
        .unwrap_err();
    assert!(
        matches!(err, Error::WeakKdfParams { path: Some(_), .. }),
        "{err}"
    );
    assert_names_file(&err, &wallet_file(&ks, "w"));

    // At the floor is fine.
    let floor = KdfParams::new(KdfParams::MIN_M_COST_KIB, 1, 1).unwrap();
    Keystore::open_with(
        dir.path(),
        KeystoreOptions::default().with_kdf_params(floor),
    )
    .unwrap();
}

#[test]
fn absurd_parameters_are_refused_without_running_argon2() {
    for (m, t, p) in [
        (KdfParams::MAX_M_COST_KIB + 1, 1, 1),
        (65536, 101, 1),
        (65536, 1, 17),
        (4 * 1024 * 1024, 5, 1),
        (65536, 0, 1),
        (65536, 1, 0),
        (7, 1, 1),
        (64, 1, 9),
    ] {
        assert!(
            matches!(KdfParams::new(m, t, p), Err(Error::InvalidKdfParams { .. })),
            "{m} {t} {p}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let ks = fast_keystore(dir.path());
    ks.save_wallet("w", b"x", &pass("p")).unwrap();
    let path = wallet_file(&ks, "w");
    let mut bytes = fs::read(&path).unwrap();
    bytes[7..11].copy_from_slice(&u32::MAX.to_be_bytes());
    bytes[11..15].copy_from_slice(&u32::MAX.to_be_bytes());
    fs::write(&path, &bytes).unwrap();
    let start = Instant::now();
    let err = ks.load_wallet("w", &pass("p")).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(1));
    assert!(
        matches!(&err, Error::InvalidKdfParams { path: Some(p), .. } if *p == path),
        "{err}"
    );
}

#[test]
fn backup_key_files_round_trip_and_refuse_the_wrong_kind_passphrase_or_overwrite() {
    use tessera_store::keystore::{read_backup_key_file, write_backup_key_file};
    let dir = tempfile::tempdir().unwrap();
    let options = KeystoreOptions::default().insecure_fast_kdf_for_tests();
    let path = dir.path().join("usb-1.key");
    let secret = [7u8; 32];
    write_backup_key_file(&path, "usb-1", &secret, &pass("usb pass"), &options).unwrap();
    let (label, read) = read_backup_key_file(&path, &pass("usb pass"), &options).unwrap();
    assert_eq!((label.as_str(), *read), ("usb-1", secret));

    // Never overwritten.
    let err = write_backup_key_file(&path, "usb-1", &[8u8; 32], &pass("x"), &options).unwrap_err();
    assert!(matches!(err, Error::FileExists { .. }), "{err}");
    assert_eq!(
        *read_backup_key_file(&path, &pass("usb pass"), &options)
            .unwrap()
            .1,
        secret
    );
    // Wrong passphrase, missing file, a wallet or identity file in its place.
    let err = read_backup_key_file(&path, &pass("nope"), &options).unwrap_err();
    assert!(matches!(err, Error::WrongPassphrase { .. }), "{err}");
    let err = read_backup_key_file(&dir.path().join("none.key"), &pass("x"), &options).unwrap_err();
    assert!(matches!(err, Error::FileNotFound { .. }), "{err}");
    let ks = fast_keystore(&dir.path().join("ks"));
    ks.save_wallet("w", b"share", &pass("usb pass")).unwrap();
    let err =
        read_backup_key_file(&wallet_file(&ks, "w"), &pass("usb pass"), &options).unwrap_err();
    assert!(
        err.to_string().contains("wallet entry where a backup key"),
        "{err}"
    );
    // Secrets never in the error text.
    assert!(!err.to_string().contains("usb pass"));
}
