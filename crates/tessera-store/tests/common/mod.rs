//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tessera_store::{Keystore, KeystoreOptions, Passphrase};

/// A keystore with cheap Argon2 parameters, so that the suite stays fast.
pub fn fast_keystore(dir: &Path) -> Keystore {
    Keystore::open_with(
        dir,
        KeystoreOptions::default().insecure_fast_kdf_for_tests(),
    )
    .unwrap()
}

pub fn pass(s: &str) -> Passphrase {
    Passphrase::new(s.to_owned()).unwrap()
}

pub fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

pub fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Names of the files in `dir`, sorted.
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}
