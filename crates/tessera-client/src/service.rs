//! A service account's client: creates signing requests with its own Ed25519 key (issue 16). Being written.
