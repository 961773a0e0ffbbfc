//! Tessera storage: the device keystore and key-encryption providers (in progress).
#![forbid(unsafe_code)]
