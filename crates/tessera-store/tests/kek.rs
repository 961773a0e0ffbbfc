//! Key-encryption keys and envelope encryption against real key files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;

use common::{mode, set_mode};
use tessera_store::kek::{SEALED_SECRET_VERSION, open, rewrap, seal};
use tessera_store::{DataKey, Error, FileKek, KeyEncryptionKey, SealedSecret};

const AAD: &[u8] = b"wallet 7f3a/party 1/epoch 4";

fn two_keks() -> (tempfile::TempDir, FileKek, FileKek) {
    let dir = tempfile::tempdir().unwrap();
    let a = FileKek::open_or_create(dir.path().join("a.key")).unwrap();
    let b = FileKek::open_or_create(dir.path().join("b.key")).unwrap();
    (dir, a, b)
}

#[test]
fn seal_open_round_trip_through_serialization() {
    let (_dir, kek, _) = two_keks();
    let sealed = seal(&kek, b"server share bytes", AAD).unwrap();
    assert_eq!(sealed.version, SEALED_SECRET_VERSION);
    assert_eq!(sealed.kek_id, kek.id());
    assert_eq!(&*open(&kek, &sealed, AAD).unwrap(), b"server share bytes");

    let json = serde_json::to_string(&sealed).unwrap();
    let back: SealedSecret = serde_json::from_str(&json).unwrap();
    assert_eq!(back, sealed);
    let compact = postcard::to_allocvec(&sealed).unwrap();
    let (back, rest) = postcard::take_from_bytes::<SealedSecret>(&compact).unwrap();
    assert!(rest.is_empty());
    assert_eq!(&*open(&kek, &back, AAD).unwrap(), b"server share bytes");

    // Through a trait object, as a server holding `Arc<dyn KeyEncryptionKey>` would call it.
    let dyn_kek: &dyn KeyEncryptionKey = &kek;
    let sealed = seal(dyn_kek, b"", b"").unwrap();
    assert!(open(dyn_kek, &sealed, b"").unwrap().is_empty());
}

#[test]
fn every_secret_gets_its_own_data_key_and_nonce() {
    let (_dir, kek, _) = two_keks();
    let s1 = seal(&kek, b"same", AAD).unwrap();
    let s2 = seal(&kek, b"same", AAD).unwrap();
    assert_ne!(s1.wrapped_key, s2.wrapped_key);
    assert_ne!(s1.nonce, s2.nonce);
    assert_ne!(s1.ciphertext, s2.ciphertext);
}

#[test]
fn another_kek_is_refused_by_id() {
    let (_dir, a, b) = two_keks();
    assert_ne!(a.id(), b.id());
    let sealed = seal(&a, b"x", AAD).unwrap();
    let err = open(&b, &sealed, AAD).unwrap_err();
    assert!(matches!(err, Error::KekMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&a.id()) && err.to_string().contains(&b.id()));

    // Relabelled to claim the other KEK: the wrapped key still does not unwrap.
    let mut forged = sealed.clone();
    forged.kek_id = b.id();
    assert!(matches!(
        open(&b, &forged, AAD),
        Err(Error::UnwrapFailed { .. })
    ));
}

#[test]
fn tampering_is_refused() {
    let (_dir, kek, _) = two_keks();
    let sealed = seal(&kek, b"secret", AAD).unwrap();

    for i in 0..sealed.wrapped_key.len() {
        let mut t = sealed.clone();
        t.wrapped_key[i] ^= 1;
        assert!(
            matches!(open(&kek, &t, AAD), Err(Error::UnwrapFailed { .. })),
            "wrapped key byte {i}"
        );
    }
    for wrapped_key in [vec![], sealed.wrapped_key[..71].to_vec(), {
        let mut v = sealed.wrapped_key.clone();
        v.push(0);
        v
    }] {
        let t = SealedSecret {
            wrapped_key,
            ..sealed.clone()
        };
        assert!(matches!(
            open(&kek, &t, AAD),
            Err(Error::UnwrapFailed { .. })
        ));
    }
    for i in 0..sealed.ciphertext.len() {
        let mut t = sealed.clone();
        t.ciphertext[i] ^= 0x80;
        assert!(
            matches!(open(&kek, &t, AAD), Err(Error::SealedSecretInvalid(_))),
            "ciphertext byte {i}"
        );
    }
    let mut t = sealed.clone();
    t.ciphertext.pop();
    assert!(open(&kek, &t, AAD).is_err());
    let mut t = sealed.clone();
    t.nonce[0] ^= 1;
    assert!(matches!(
        open(&kek, &t, AAD),
        Err(Error::SealedSecretInvalid(_))
    ));
    let mut t = sealed.clone();
    t.version = 2;
    assert!(matches!(
        open(&kek, &t, AAD),
        Err(Error::SealedSecretInvalid(_))
    ));

    assert!(matches!(
        open(&kek, &sealed, b"wallet 7f3a/party 1/epoch 5"),
        Err(Error::SealedSecretInvalid(_))
    ));
    assert!(matches!(
        open(&kek, &sealed, b""),
        Err(Error::SealedSecretInvalid(_))
    ));
    assert_eq!(&*open(&kek, &sealed, AAD).unwrap(), b"secret");
}

#[test]
fn rewrap_rotates_the_kek_and_keeps_the_ciphertext() {
    let (_dir, old, new) = two_keks();
    let sealed = seal(&old, b"long-lived share", AAD).unwrap();
    let rotated = rewrap(&old, &new, &sealed).unwrap();

    assert_eq!(rotated.kek_id, new.id());
    assert_ne!(rotated.wrapped_key, sealed.wrapped_key);
    assert_eq!(rotated.ciphertext, sealed.ciphertext);
    assert_eq!(rotated.nonce, sealed.nonce);
    assert_eq!(&*open(&new, &rotated, AAD).unwrap(), b"long-lived share");
    assert!(matches!(
        open(&old, &rotated, AAD),
        Err(Error::KekMismatch { .. })
    ));
    // Rotating with the wrong "old" KEK is refused.
    assert!(matches!(
        rewrap(&new, &old, &sealed),
        Err(Error::KekMismatch { .. })
    ));
}

#[test]
fn key_file_is_created_owner_only_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kek.key");
    let kek = FileKek::open_or_create(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(fs::read(&path).unwrap().len(), 32);
    assert_eq!(common::file_names(dir.path()), ["kek.key"]);

    let id = kek.id();
    assert!(id.starts_with("file:"), "{id}");
    assert_eq!(id.len(), "file:".len() + 16);
    assert!(id["file:".len()..].bytes().all(|b| b.is_ascii_hexdigit()));

    let again = FileKek::open_or_create(&path).unwrap();
    assert_eq!(again.id(), id);
    let sealed = seal(&kek, b"x", AAD).unwrap();
    assert_eq!(&*open(&again, &sealed, AAD).unwrap(), b"x");

    // Stricter than 0600 is fine.
    set_mode(&path, 0o400);
    assert_eq!(FileKek::open_or_create(&path).unwrap().id(), id);
}

#[test]
fn loose_permissions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kek.key");
    FileKek::open_or_create(&path).unwrap();
    let before = fs::read(&path).unwrap();
    for loose in [0o644, 0o640, 0o604, 0o660, 0o666] {
        set_mode(&path, loose);
        let err = FileKek::open_or_create(&path).unwrap_err();
        assert!(
            matches!(err, Error::InsecurePermissions { mode, .. } if mode == loose),
            "{loose:o}: {err}"
        );
        assert!(err.to_string().contains(&path.display().to_string()));
        assert!(err.to_string().contains(&format!("{loose:04o}")), "{err}");
    }
    // Refusing changes nothing: the key is still there, with the user's mode.
    assert_eq!(fs::read(&path).unwrap(), before);
    assert_eq!(mode(&path), 0o666);
}

#[test]
fn malformed_key_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for len in [0usize, 31, 33, 64] {
        let path = dir.path().join(format!("k{len}"));
        fs::write(&path, vec![1u8; len]).unwrap();
        set_mode(&path, 0o600);
        let err = FileKek::open_or_create(&path).unwrap_err();
        assert!(matches!(err, Error::InvalidKeyFile { .. }), "{len}: {err}");
        assert_eq!(fs::read(&path).unwrap().len(), len, "left as it was");
    }
    let sub = dir.path().join("a-directory");
    fs::create_dir(&sub).unwrap();
    common::set_mode(&sub, 0o700);
    assert!(matches!(
        FileKek::open_or_create(&sub),
        Err(Error::InvalidKeyFile { .. })
    ));
    assert!(matches!(
        FileKek::open_or_create(dir.path().join("missing-dir").join("k")),
        Err(Error::Io { .. })
    ));
}

#[test]
fn debug_output_carries_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kek.key");
    let kek = FileKek::open_or_create(&path).unwrap();
    let key = fs::read(&path).unwrap();
    let shown = format!("{kek:?}");
    assert!(
        shown.contains("<redacted>") && shown.contains(&kek.id()),
        "{shown}"
    );
    assert!(!shown.contains(&hex::encode(&key)));

    let dk = DataKey::generate();
    let shown = format!("{dk:?} {dk:#?}");
    assert!(shown.contains("<redacted>"));
    let secret = dk.expose_secret();
    assert!(!shown.contains(&hex::encode(secret)));
    assert!(!shown.contains(&format!("{secret:?}")));
    assert!(!shown.contains(&format!("{:?}", &secret[..4])[1..8]));
}

#[test]
fn data_keys_are_random() {
    assert_ne!(
        DataKey::generate().expose_secret(),
        DataKey::generate().expose_secret()
    );
}
