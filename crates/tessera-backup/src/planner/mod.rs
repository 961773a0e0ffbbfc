//! The set-up planner: from a few answers about what a user owns, where the key shares should
//! live and how each should be backed up, and what losing or leaking any set of items does.
//!
//! Two questions matter for every plan, and both are answered by enumeration, never by rules
//! of thumb:
//!
//! - **Loss**: after losing a set of items (a phone dropped in a lake, a USB drive gone), can the
//!   funds still be reached? The funds are reachable from a set of surviving items when the
//!   plan's [recovery formula](Plan::recovery) holds over them.
//! - **Compromise**: can an attacker who holds a set of items reach the key? The same formula,
//!   over the attacker's items.
//!
//! The recovery formula is built by composition: a share is available when its holder is, or its
//! backup's [`AccessStructure`] is satisfied; the key is available when `t` shares are. The same
//! physical holder (say `usb-1`) often backs up several shares, so the formula is a [`Formula`],
//! which, unlike an access structure, lets an item appear more than once.
//!
//! Backup files themselves are ciphertexts and are assumed to be kept in several places; only
//! the holders' keys count as items.
//!
//! # What [`recommend`] builds
//!
//! Only set-ups the product can make today: a 2-of-2 of one device and the co-signing server
//! (`tessera init`, `tessera keygen`), a structure wallet of the server and a person's devices
//! (`tessera keygen --structure`), or a device-to-device 2-of-2 or 2-of-3
//! (`tessera peer keygen`). There is no share that exists only as a backup: every share is held
//! by a device (or the server) from key generation.
//!
//! - **Co-signing server and a person's two devices or more** (no escape hatch asked for): the
//!   wallet is `and(server, or(phone, device-2, …))`, each device holding a share of its own
//!   (every device registers, the first approves the others, which take part in the key
//!   generation from `tessera listen`); the server signs with any one of them, so a lost
//!   device loses nothing while another is left. Only the first device's share is backed up,
//!   to the USB drives, cloud folder or printed code (the other devices hold shares already);
//!   the server's share is not backed up to the holders.
//! - **Co-signing server** otherwise (asked for, or forced, below): the first device (`phone`, or
//!   `officer-1`) and the server share a 2-of-2. The device share is backed up on that device
//!   (`tessera backup create`) to the holders: USB drives, the cloud folder, a printed code when
//!   recovery must work offline, and the other devices' keystores (`--kind device` holders,
//!   made on those devices and added on the first). The server's share is NOT backed up to the
//!   same holders: they would then rebuild the key without the server, outside every policy.
//!   Only when the answers ask for an escape hatch ([`Answers::escape_hatch`]) is it backed up
//!   (`… --server-share`, which the server holds for another device's approval or a time lock),
//!   under a higher threshold of the holders than the device share's, and the plan's first
//!   warning names the sets of holders that then reach the key.
//! - **No server, two devices or more**: a device-to-device 2-of-2 (two devices) or 2-of-3 (the
//!   first three; further devices only hold backup keys). Each device backs up its own share
//!   (`--no-server`) to the USB drives, cloud folder, printed code and the OTHER devices'
//!   keystores: a device never holds a backup key to its own share. With a single possible
//!   holder (the other device of a 2-of-2) the shares are not backed up, and a warning says so.
//! - **No server, one device**: no threshold wallet is possible alone, so the plan uses the
//!   co-signing server, with a warning saying why.
//! - **Institutions** follow the same rules with officers' devices (`officer-1`…) and an
//!   offline vault, a backup key on a USB drive kept in a safe, that is always a holder: with
//!   the server, `officer-1` and the server, both shares under
//!   `threshold(2, vault, …, officer-2, officer-3)`; without it, a device-to-device 2-of-3 of
//!   three officers' devices, each share under `threshold(2, vault, …, the other officers)`.
//!   With only two officers' devices and no server, a 2-of-2 between them and a warning (add a
//!   third device or the server); with one, the server (as for a person).
//!
//! Backup structures: one holder alone, two together (either one for a person's device share
//! in the 2-of-2 with the server, whose leak alone is harmless), any two of three or more; the
//! server's share in an escape hatch, one more holder than the device share's.
//!
//! The compromise analysis applies the same rule: [`Plan::holder_only_compromises`] lists the
//! minimal sets of backup holders that reach the key with no live share, and a plan that has any
//! warns of them first.
//!
//! A plan is data: the shares, the holders and the backups' structures, and the
//! [steps](Plan::steps) that set it up, each with the device it is done on. Which `tessera`
//! command line does a step is the CLI's to say.
//!
//! [`AccessStructure`]: crate::structure::AccessStructure

mod answers;
mod formula;
mod loss;
mod plan;
mod recommend;
mod setup;

use crate::structure::StructureError;

pub use answers::Answers;
pub use formula::Formula;
pub use loss::{LossRow, LossTable, MAX_ITEMS, loss_table};
pub use plan::{
    BackupServerRole, ItemKind, OFFLINE_COMPUTER, Plan, PlannedHolder, PlannedShare, SetupAction,
    SetupStep,
};
pub use recommend::recommend;

/// Why planning failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// An answer is out of range.
    #[error("answer {field}: {reason}")]
    InvalidAnswer {
        /// The answer's field name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Too many items to enumerate every subset.
    #[error("{count} items is too many to enumerate every loss; the limit is {MAX_ITEMS}")]
    TooManyItems {
        /// How many distinct items the formula names.
        count: usize,
    },
    /// A formula that breaks the formula rules.
    #[error("invalid formula {formula}: {reason}")]
    InvalidFormula {
        /// The formula, as text.
        formula: String,
        /// What is wrong.
        reason: String,
    },
    /// A backup structure the planner built was rejected (a planner bug).
    #[error("planned backup structure rejected: {0}")]
    Structure(#[from] StructureError),
}
