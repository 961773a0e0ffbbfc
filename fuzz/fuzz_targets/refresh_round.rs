//! Every round of refresh (2-of-2 and 2-of-3): the first byte picks the (shape, round) and
//! whether the payload is only checked or delivered (`tessera_fuzz::DELIVER`); the rest is the
//! payload of the victim's last envelope of that round, behind its valid header. See
//! `tessera_fuzz::Rounds` for what is asserted.
#![no_main]

use std::sync::{LazyLock, Mutex};

use libfuzzer_sys::fuzz_target;
use tessera_core::RefreshSession;
use tessera_fuzz::{Rounds, refresh_sessions};

static ROUNDS: LazyLock<Mutex<Rounds<RefreshSession>>> =
    LazyLock::new(|| Mutex::new(Rounds::new(refresh_sessions)));

fuzz_target!(|data: &[u8]| {
    ROUNDS.lock().unwrap().run(data);
});
