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
//! (`tessera init`, `tessera keygen`), or a device-to-device 2-of-2 or 2-of-3
//! (`tessera peer keygen`). There is no t-of-n with the server, and no share that exists only
//! as a backup: every share is held by a device (or the server) from key generation.
//!
//! - **Co-signing server** (asked for, or forced, below): the first device (`phone`, or
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

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::structure::{AccessStructure, StructureError};

/// Most items [`loss_table`] enumerates (2^16 subsets).
pub const MAX_ITEMS: usize = 16;

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

// ---- Formulas ----

/// A monotone formula over item names; unlike an [`AccessStructure`], an item may appear more
/// than once. Displayed in the structure text syntax.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Formula {
    /// True when the item is present.
    Item(String),
    /// True when every child is.
    And(Vec<Formula>),
    /// True when any child is.
    Or(Vec<Formula>),
    /// True when at least `k` children are.
    Threshold {
        /// How many children are needed.
        k: usize,
        /// The children.
        of: Vec<Formula>,
    },
}

impl From<&AccessStructure> for Formula {
    fn from(s: &AccessStructure) -> Self {
        let all = |c: &[AccessStructure]| c.iter().map(Formula::from).collect();
        match s {
            AccessStructure::Leaf(l) => Formula::Item(l.clone()),
            AccessStructure::And(c) => Formula::And(all(c)),
            AccessStructure::Or(c) => Formula::Or(all(c)),
            AccessStructure::Threshold { k, of } => Formula::Threshold { k: *k, of: all(of) },
        }
    }
}

impl Formula {
    /// The distinct item names, in order of first appearance.
    pub fn items(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        self.collect_items(&mut out);
        out
    }

    fn collect_items<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Formula::Item(name) => {
                if !out.contains(&name.as_str()) {
                    out.push(name);
                }
            }
            Formula::And(c) | Formula::Or(c) | Formula::Threshold { of: c, .. } => {
                c.iter().for_each(|c| c.collect_items(out));
            }
        }
    }

    /// Whether the formula holds when exactly the items in `present` are available.
    pub fn holds<S: AsRef<str>>(&self, present: &[S]) -> bool {
        match self {
            Formula::Item(name) => present.iter().any(|p| p.as_ref() == name),
            Formula::And(c) => c.iter().all(|c| c.holds(present)),
            Formula::Or(c) => c.iter().any(|c| c.holds(present)),
            Formula::Threshold { k, of } => of.iter().filter(|c| c.holds(present)).count() >= *k,
        }
    }

    /// Checks item names are non-empty, `and`/`or` have a child, and `1 <= k <= n`.
    pub fn validate(&self) -> Result<(), PlanError> {
        let bad = |reason: &str| PlanError::InvalidFormula {
            formula: self.to_string(),
            reason: reason.to_owned(),
        };
        match self {
            Formula::Item(name) if name.is_empty() => Err(bad("an item name is empty")),
            Formula::Item(_) => Ok(()),
            Formula::And(c) | Formula::Or(c) if c.is_empty() => {
                Err(bad("an operator has no children"))
            }
            Formula::Threshold { k, of } if *k == 0 || *k > of.len() => {
                Err(bad(&format!("k must be between 1 and {}", of.len())))
            }
            Formula::And(c) | Formula::Or(c) | Formula::Threshold { of: c, .. } => {
                c.iter().try_for_each(Formula::validate)
            }
        }
    }

    /// The formula with item names replaced by their indices in `items`.
    fn index(&self, items: &[&str]) -> Indexed {
        let all = |c: &[Formula]| c.iter().map(|c| c.index(items)).collect();
        match self {
            Formula::Item(name) => {
                Indexed::Item(items.iter().position(|i| i == name).unwrap_or(usize::MAX))
            }
            Formula::And(c) => Indexed::Threshold {
                k: c.len(),
                of: all(c),
            },
            Formula::Or(c) => Indexed::Threshold { k: 1, of: all(c) },
            Formula::Threshold { k, of } => Indexed::Threshold { k: *k, of: all(of) },
        }
    }
}

impl fmt::Display for Formula {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let children = match self {
            Formula::Item(name) => return f.write_str(name),
            Formula::And(c) => {
                f.write_str("and(")?;
                c
            }
            Formula::Or(c) => {
                f.write_str("or(")?;
                c
            }
            Formula::Threshold { k, of } => {
                write!(f, "threshold({k}, ")?;
                of
            }
        };
        for (i, child) in children.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{child}")?;
        }
        f.write_str(")")
    }
}

/// Formulas serialize as their text.
impl Serialize for Formula {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A formula over item indices, for evaluating every subset quickly.
enum Indexed {
    Item(usize),
    Threshold { k: usize, of: Vec<Indexed> },
}

impl Indexed {
    fn holds(&self, present: u32) -> bool {
        match self {
            Indexed::Item(i) => u32::try_from(*i)
                .ok()
                .and_then(|i| 1u32.checked_shl(i))
                .is_some_and(|bit| present & bit != 0),
            Indexed::Threshold { k, of } => of.iter().filter(|c| c.holds(present)).count() >= *k,
        }
    }
}

// ---- Loss and compromise enumeration ----

/// Losses of exactly `lost` items.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LossRow {
    /// How many items are lost.
    pub lost: usize,
    /// How many sets of that many items there are.
    pub subsets: u64,
    /// How many of them leave the funds reachable.
    pub survivable: u64,
    /// The fatal sets of this size none of whose proper subsets is fatal.
    pub minimal_fatal: Vec<Vec<String>>,
}

/// What losing, or leaking, each set of items does; computed by enumerating every subset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LossTable {
    /// The formula analysed, as text.
    pub formula: String,
    /// The items, in order of first appearance in the formula. Sets below list items in this
    /// order and are sorted by size, then by this order.
    pub items: Vec<String>,
    /// Whether the funds are reachable with every item present.
    pub reachable: bool,
    /// One row per number of lost items, 1 to `items.len()`.
    pub rows: Vec<LossRow>,
    /// Every minimal fatal loss.
    pub minimal_fatal_losses: Vec<Vec<String>>,
    /// Items whose loss alone makes the funds unreachable.
    pub single_points_of_failure: Vec<String>,
    /// Items that alone reach the key.
    pub fatal_single_compromises: Vec<String>,
    /// The minimal sets of items that reach the key (what an attacker must gather).
    pub minimal_compromise_sets: Vec<Vec<String>>,
}

impl LossTable {
    /// The largest `k` such that every loss of `k` items is survivable.
    pub fn loss_tolerance(&self) -> usize {
        self.rows
            .iter()
            .take_while(|r| r.survivable == r.subsets)
            .count()
    }

    /// The size of the smallest set of items that reaches the key (0 if none does).
    pub fn compromise_threshold(&self) -> usize {
        self.minimal_compromise_sets.first().map_or(0, Vec::len)
    }

    /// Warnings about single points of failure and single fatal compromises.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.reachable {
            out.push("the funds are not reachable even with every item present".to_owned());
            return out;
        }
        for item in &self.single_points_of_failure {
            out.push(format!("losing {item} alone loses the funds"));
        }
        for item in &self.fatal_single_compromises {
            out.push(format!("{item} alone can restore the key"));
        }
        out
    }
}

/// Enumerates every subset of the formula's items (at most [`MAX_ITEMS`]) for losses and
/// compromises. For an access structure, pass `&Formula::from(&structure)`.
pub fn loss_table(formula: &Formula) -> Result<LossTable, PlanError> {
    formula.validate()?;
    let items = formula.items();
    let n = items.len();
    if n > MAX_ITEMS {
        return Err(PlanError::TooManyItems { count: n });
    }
    let indexed = formula.index(&items);
    let full: u32 = (1u32 << n) - 1;
    // holds[m]: the formula holds over the items in mask m.
    let holds: Vec<bool> = (0..=full).map(|m| indexed.holds(m)).collect();
    let at = |m: u32| holds.get(m as usize).copied().unwrap_or(false);
    let survives = |lost: u32| at(full & !lost);
    let bits = |m: u32| (0..n).filter(move |i| m & (1 << i) != 0);

    let names = |m: u32| -> Vec<String> { bits(m).map(|i| items[i].to_owned()).collect() };
    // Sets in order of size, then lexicographically by item index.
    let mut masks: Vec<u32> = (1..=full).collect();
    masks.sort_by_key(|&m| (m.count_ones(), bits(m).collect::<Vec<_>>()));

    let mut rows: Vec<LossRow> = (1..=n)
        .map(|lost| LossRow {
            lost,
            subsets: 0,
            survivable: 0,
            minimal_fatal: Vec::new(),
        })
        .collect();
    let mut minimal_fatal_losses = Vec::new();
    let mut minimal_compromise_sets = Vec::new();
    for &m in &masks {
        let size = m.count_ones() as usize;
        let Some(row) = rows.get_mut(size - 1) else {
            continue;
        };
        row.subsets += 1;
        if survives(m) {
            row.survivable += 1;
        } else if bits(m).all(|i| survives(m & !(1 << i))) {
            row.minimal_fatal.push(names(m));
            minimal_fatal_losses.push(names(m));
        }
        // Monotone: minimal when no one-smaller subset already holds.
        if at(m) && bits(m).all(|i| !at(m & !(1 << i))) {
            minimal_compromise_sets.push(names(m));
        }
    }
    let singles = |sets: &[Vec<String>]| -> Vec<String> {
        sets.iter()
            .filter(|s| s.len() == 1)
            .flat_map(|s| s.iter().cloned())
            .collect()
    };
    let reachable = at(full);
    Ok(LossTable {
        formula: formula.to_string(),
        items: items.iter().map(|s| (*s).to_owned()).collect(),
        reachable,
        single_points_of_failure: if reachable {
            singles(&minimal_fatal_losses)
        } else {
            Vec::new()
        },
        fatal_single_compromises: singles(&minimal_compromise_sets),
        rows,
        minimal_fatal_losses,
        minimal_compromise_sets,
    })
}

// ---- Answers ----

/// What the user has and wants, as asked by `tessera plan` or read from a JSON answer file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answers {
    /// Devices the user (or, for an institution, its officers) can keep a share on: 1 to 5.
    pub own_devices: u8,
    /// Whether a co-signing server is used.
    #[serde(default)]
    pub cosigning_server: bool,
    /// USB drives available for backup keys: 0 to 3.
    #[serde(default)]
    pub usb_drives: u8,
    /// Whether a cloud folder is available for a backup key.
    #[serde(default)]
    pub cloud_folder: bool,
    /// Whether the wallet belongs to an institution (officers, an offline vault).
    #[serde(default)]
    pub institutional: bool,
    /// Whether recovery must work offline: prefer USB drives and printed codes over the cloud.
    #[serde(default)]
    pub offline_recovery: bool,
    /// With a co-signing server: whether to back up the server's share to the owner's holders
    /// too, as a way to the funds should the server disappear for good. Those holders together
    /// then rebuild the key without the server and outside every policy, so the plan asks more
    /// of them than of the device share's backup, and warns first.
    #[serde(default)]
    pub escape_hatch: bool,
}

impl Answers {
    /// Checks the ranges of the numeric answers.
    pub fn validate(&self) -> Result<(), PlanError> {
        if !(1..=5).contains(&self.own_devices) {
            return Err(PlanError::InvalidAnswer {
                field: "own_devices",
                reason: format!("must be between 1 and 5, got {}", self.own_devices),
            });
        }
        if self.usb_drives > 3 {
            return Err(PlanError::InvalidAnswer {
                field: "usb_drives",
                reason: format!("must be between 0 and 3, got {}", self.usb_drives),
            });
        }
        Ok(())
    }
}

// ---- Plans ----

/// What kind of physical item something is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ItemKind {
    /// A phone or computer holding a live share.
    Device,
    /// The co-signing server.
    CosigningServer,
    /// An institution's offline vault: a backup key on a USB drive kept in a safe.
    OfflineVault,
    /// A backup key file on a USB drive.
    UsbFile,
    /// A backup key file in a cloud folder.
    CloudFolder,
    /// A backup key in another device's keystore.
    DeviceKeystore,
    /// A backup key printed on paper.
    PrintedCode,
}

impl ItemKind {
    /// A short human description.
    pub fn describe(self) -> &'static str {
        match self {
            ItemKind::Device => "device",
            ItemKind::CosigningServer => "co-signing server",
            ItemKind::OfflineVault => "offline vault (USB drive in a safe)",
            ItemKind::UsbFile => "USB file",
            ItemKind::CloudFolder => "cloud folder",
            ItemKind::DeviceKeystore => "device keystore",
            ItemKind::PrintedCode => "printed code",
        }
    }

    /// The holder kind `tessera backup-key new|add --kind` takes for a backup holder of this
    /// kind (`None` for items that hold live shares, not backup keys).
    pub fn cli_kind(self) -> Option<&'static str> {
        match self {
            ItemKind::UsbFile | ItemKind::OfflineVault => Some("usb"),
            ItemKind::CloudFolder => Some("cloud"),
            ItemKind::DeviceKeystore => Some("device"),
            ItemKind::PrintedCode => Some("paper"),
            ItemKind::Device | ItemKind::CosigningServer => None,
        }
    }
}

/// A backup holder: one backup key pair, by label.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedHolder {
    /// The holder's label, as used in backup structures. A device keystore holder is labelled
    /// with its device's name: it is the same physical item.
    pub label: String,
    /// Where its key lives.
    pub kind: ItemKind,
}

/// One key share of the plan. Every share is held by a device or the co-signing server: the
/// product has no share that exists only as a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedShare {
    /// The share's name: its holder's (`phone`, `device-2`, `officer-1`, `server`).
    pub name: String,
    /// The item holding the live share.
    pub held_by: String,
    /// The kind of item holding the live share.
    pub held_by_kind: ItemKind,
    /// Who can open the share's backup; `None` when the share is not backed up.
    pub backup: Option<AccessStructure>,
    /// The holders named in `backup`, with their kinds.
    pub backup_holders: Vec<PlannedHolder>,
    /// The device that runs `tessera backup create` for this share: its holder, or for the
    /// server's share the device holding the other share (`--server-share`).
    pub backed_up_on: String,
}

impl PlannedShare {
    /// When this share is available: its holder, or its backup's structure.
    pub fn availability(&self) -> Formula {
        let live = Formula::Item(self.held_by.clone());
        match &self.backup {
            Some(b) => Formula::Or(vec![live, Formula::from(b)]),
            None => live,
        }
    }
}

/// A command to run, and where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlanCommand {
    /// Where to run it: a device of the plan (`phone`, `device-2`, `officer-1`) or
    /// `an offline computer`.
    pub run_on: String,
    /// The command line, exactly as to type it (after replacing the placeholders the note
    /// names, and [`WALLET_PLACEHOLDER`]).
    pub command: String,
    /// What to do around it, or what a placeholder in it stands for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A recommended set-up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The topology's name, e.g. `personal 2-of-2 with co-signing server`.
    pub topology: String,
    /// Shares needed to sign.
    pub t: usize,
    /// Shares in all.
    pub n: usize,
    /// The shares, in party order.
    pub shares: Vec<PlannedShare>,
    /// Every backup holder some share's backup names, once.
    pub holders: Vec<PlannedHolder>,
    /// The commands that set the plan up, in order.
    pub commands: Vec<PlanCommand>,
    /// When the funds are reachable, over physical items.
    pub recovery: Formula,
    /// Weaknesses of the plan, found by enumeration, what to add, and why the plan differs
    /// from the answers when it must.
    pub warnings: Vec<String>,
    /// What the loss table does not show (it counts key material, not the server's policy).
    pub advice: Vec<String>,
    /// The minimal sets of backup holders that reach the key with no live share (no device
    /// holding a share, no server): a way around every policy. Empty for a recommended set-up
    /// with the co-signing server unless [`Answers::escape_hatch`] asked for one.
    pub holder_only_compromises: Vec<Vec<String>>,
}

impl Plan {
    /// The loss and compromise table of [`Plan::recovery`].
    pub fn loss_table(&self) -> Result<LossTable, PlanError> {
        loss_table(&self.recovery)
    }
}

/// Placeholder for the wallet name in [`Plan::commands`].
pub const WALLET_PLACEHOLDER: &str = "WALLET";

/// Where an offline computer runs a command (printed codes are made there).
pub const OFFLINE_COMPUTER: &str = "an offline computer";

/// The co-signing server's item name.
const SERVER: &str = "server";

/// The backup holders available to a share whose other devices' keystores are `devices`:
/// the vault (institutions), USB drives, then the cloud folder and the devices; when recovery
/// must work offline, a printed code comes before the devices and the cloud folder is dropped
/// if three others exist.
fn backup_holders(a: &Answers, devices: &[String]) -> Vec<PlannedHolder> {
    let holder = |label: String, kind| PlannedHolder { label, kind };
    let vault = a
        .institutional
        .then(|| holder("vault".into(), ItemKind::OfflineVault));
    let usb = (1..=a.usb_drives).map(|i| holder(format!("usb-{i}"), ItemKind::UsbFile));
    let devices = devices
        .iter()
        .map(|d| holder(d.clone(), ItemKind::DeviceKeystore));
    let cloud = a
        .cloud_folder
        .then(|| holder("cloud".into(), ItemKind::CloudFolder));
    if a.offline_recovery {
        let mut out: Vec<PlannedHolder> = vault
            .into_iter()
            .chain(usb)
            .chain(std::iter::once(holder(
                "paper-1".into(),
                ItemKind::PrintedCode,
            )))
            .chain(devices)
            .collect();
        if out.len() < 3 {
            out.extend(cloud);
        }
        out
    } else {
        vault
            .into_iter()
            .chain(usb)
            .chain(cloud)
            .chain(devices)
            .collect()
    }
}

/// The backup structure for a share, by how many holders there are: one holder alone, two
/// together (or, when `lenient`, either), any two of three or more. `lenient` is for a share
/// whose leak alone is harmless and whose loss matters (the device's in a 2-of-2 with the
/// co-signing server).
fn backup_structure(holders: &[PlannedHolder], lenient: bool) -> Option<AccessStructure> {
    let leaves: Vec<AccessStructure> = holders
        .iter()
        .map(|h| AccessStructure::Leaf(h.label.clone()))
        .collect();
    match leaves.len() {
        0 => None,
        1 => leaves.into_iter().next(),
        2 if lenient => Some(AccessStructure::Or(leaves)),
        2 => Some(AccessStructure::And(leaves)),
        _ => Some(AccessStructure::Threshold { k: 2, of: leaves }),
    }
}

fn share(name: &str, kind: ItemKind, backed_up_on: &str) -> PlannedShare {
    PlannedShare {
        name: name.to_owned(),
        held_by: name.to_owned(),
        held_by_kind: kind,
        backup: None,
        backup_holders: Vec::new(),
        backed_up_on: backed_up_on.to_owned(),
    }
}

fn back_up(share: &mut PlannedShare, holders: &[PlannedHolder], lenient: bool) {
    share.backup = backup_structure(holders, lenient);
    if share.backup.is_some() {
        share.backup_holders = holders.to_vec();
    }
}

/// The shares and topology before recovery and warnings are worked out.
struct Layout {
    topology: String,
    /// Whether the wallet is a 2-of-2 with the co-signing server (else device-to-device).
    with_server: bool,
    /// The devices holding shares; the first creates the wallet.
    devices: Vec<String>,
    shares: Vec<PlannedShare>,
    notes: Vec<String>,
}

/// Device `i` (from 1): `phone`, `device-2`… for a person, `officer-i` for an institution.
fn device_name(a: &Answers, i: usize) -> String {
    match (a.institutional, i) {
        (true, _) => format!("officer-{i}"),
        (false, 1) => "phone".to_owned(),
        (false, _) => format!("device-{i}"),
    }
}

/// The structure for the server's share in an escape hatch: more of the same holders than the
/// device share's backup needs (`device_k`), so that no set of holders that restores the device
/// share restores the server's too; `None` when there are not enough holders for that.
fn escape_structure(holders: &[PlannedHolder], device_k: usize) -> Option<AccessStructure> {
    let leaves: Vec<AccessStructure> = holders
        .iter()
        .map(|h| AccessStructure::Leaf(h.label.clone()))
        .collect();
    let k = device_k + 1;
    match leaves.len() {
        n if n < 2 || k > n => None,
        n if k == n => Some(AccessStructure::And(leaves)),
        _ => Some(AccessStructure::Threshold { k, of: leaves }),
    }
}

/// How many holders of `structure` (a backup structure of [`backup_structure`]) open it.
fn holders_needed(structure: &AccessStructure) -> usize {
    match structure {
        AccessStructure::Leaf(_) | AccessStructure::Or(_) => 1,
        AccessStructure::And(of) => of.len(),
        AccessStructure::Threshold { k, .. } => *k,
    }
}

/// A 2-of-2 of the first device and the co-signing server; the other devices' keystores hold
/// backup keys. The device share is backed up on the first device. The server's share is not
/// backed up to the owner's holders: with both shares backed up to them, holders alone would
/// rebuild the key without the server, outside every policy. Only when the answers ask for an
/// escape hatch is it backed up (`--server-share`), under a higher threshold of the holders
/// than the device share's.
fn server_layout(a: &Answers, notes: Vec<String>) -> Layout {
    let devices = usize::from(a.own_devices);
    let lead = device_name(a, 1);
    let spare: Vec<String> = (2..=devices).map(|i| device_name(a, i)).collect();
    let holders = backup_holders(a, &spare);
    let mut notes = notes;
    let mut device = share(&lead, ItemKind::Device, &lead);
    let mut server = share(SERVER, ItemKind::CosigningServer, &lead);
    // An officer's share gets the strict structure too; a person's alone is harmless.
    back_up(&mut device, &holders, !a.institutional);
    let device_k = device.backup.as_ref().map_or(0, holders_needed);
    match (a.escape_hatch, escape_structure(&holders, device_k)) {
        (true, Some(structure)) => {
            server.backup = Some(structure);
            server.backup_holders = holders.clone();
        }
        (true, None) => notes.push(format!(
            "no escape hatch: the server's share would need more backup holders than the \
             device share's backup ({device_k} of {}); add a holder (a USB drive, a printed code)",
            holders.len()
        )),
        (false, _) if holders.is_empty() => {}
        (false, _) => notes.push(
            "the server's share is not backed up to your holders (they would then rebuild the \
             key without the server, outside every policy): it lasts as long as the server and \
             its operator's backups; for a way to the funds without the server, ask for an \
             escape hatch (--escape-hatch), which backs it up to more of your holders"
                .to_owned(),
        ),
    }
    let who = if a.institutional {
        "institutional"
    } else {
        "personal"
    };
    Layout {
        topology: format!("{who} 2-of-2 with co-signing server"),
        with_server: true,
        devices: vec![lead],
        shares: vec![device, server],
        notes,
    }
}

/// A device-to-device wallet of the first two or three devices (2-of-2 or 2-of-3), each
/// device's share backed up on that device under the other holders: the vault, USB drives, the
/// cloud folder or a printed code, and the OTHER devices' keystores (never its own).
fn peer_layout(a: &Answers, mut notes: Vec<String>) -> Layout {
    let devices = usize::from(a.own_devices);
    let n = devices.min(3);
    let names: Vec<String> = (1..=devices).map(|i| device_name(a, i)).collect();
    let (live, extra) = names.split_at(n);
    if !extra.is_empty() {
        let (holds, keystores) = if extra.len() == 1 {
            ("holds", "its keystore holds")
        } else {
            ("hold", "their keystores hold")
        };
        notes.push(format!(
            "{} {holds} no share (a device-to-device wallet here is 2-of-3); {keystores} backup \
             keys",
            extra.join(", "),
        ));
    }
    let mut unbacked = Vec::new();
    let shares: Vec<PlannedShare> = live
        .iter()
        .map(|name| {
            let others: Vec<String> = names.iter().filter(|d| *d != name).cloned().collect();
            let holders = backup_holders(a, &others);
            let mut s = share(name, ItemKind::Device, name);
            if holders.len() >= 2 {
                back_up(&mut s, &holders, false);
            } else {
                // The one holder would be the other device: it would alone hold the key.
                unbacked.push(name.clone());
            }
            s
        })
        .collect();
    if !unbacked.is_empty() {
        notes.push(format!(
            "{} not backed up: the only backup holder would be the other device, which would \
             then alone hold the key; add a USB drive, a cloud folder or a printed code",
            if unbacked.len() == 1 {
                format!("{}'s share is", unbacked[0])
            } else {
                "the shares are".to_owned()
            }
        ));
    }
    let who = if a.institutional {
        "institutional"
    } else {
        "personal"
    };
    Layout {
        topology: format!("{who} 2-of-{n} device-to-device"),
        with_server: false,
        devices: live.to_vec(),
        shares,
        notes,
    }
}

/// Recommends a set-up for the answers (the rules are in the [module documentation](self)).
/// The plan's warnings list every single point of failure and single fatal compromise found by
/// enumerating the plan's recovery formula.
pub fn recommend(a: &Answers) -> Result<Plan, PlanError> {
    a.validate()?;
    let devices = usize::from(a.own_devices);
    let layout = if a.cosigning_server {
        server_layout(a, Vec::new())
    } else if devices == 1 {
        server_layout(
            a,
            vec![
                "no co-signing server was asked for, but with one device no threshold wallet is \
                 possible without one (every share is held by a device at key generation; a \
                 share cannot exist only as a backup), so this plan uses the co-signing server; \
                 for a wallet without a server, add a second device (device-to-device 2-of-2)"
                    .to_owned(),
            ],
        )
    } else {
        let mut notes = Vec::new();
        if a.institutional && devices < 3 {
            notes.push(
                "an institutional device-to-device 2-of-3 needs three officers' devices: with \
                 two, both officers must sign every transaction; add a third officer's device, \
                 or use the co-signing server"
                    .to_owned(),
            );
        }
        peer_layout(a, notes)
    };
    let Layout {
        topology,
        with_server,
        devices: share_devices,
        shares,
        notes,
    } = layout;
    for s in &shares {
        if let Some(b) = &s.backup {
            b.validate()?;
        }
    }
    let mut holders: Vec<PlannedHolder> = Vec::new();
    for h in shares.iter().flat_map(|s| &s.backup_holders) {
        if !holders.iter().any(|k| k.label == h.label) {
            holders.push(h.clone());
        }
    }
    let n = shares.len();
    let t = 2;
    let availability: Vec<Formula> = shares.iter().map(PlannedShare::availability).collect();
    let recovery = if t == n {
        Formula::And(availability)
    } else {
        Formula::Threshold {
            k: t,
            of: availability,
        }
    };
    let table = loss_table(&recovery)?;
    let live: Vec<&str> = shares.iter().map(|s| s.held_by.as_str()).collect();
    let holder_only_compromises: Vec<Vec<String>> = table
        .minimal_compromise_sets
        .iter()
        .filter(|set| set.iter().all(|item| !live.contains(&item.as_str())))
        .cloned()
        .collect();
    let mut warnings = Vec::new();
    if !holder_only_compromises.is_empty() {
        let sets: Vec<String> = holder_only_compromises
            .iter()
            .map(|s| s.join("+"))
            .collect();
        warnings.push(if with_server {
            format!(
                "escape hatch: the server's share is backed up to your holders, so {} together \
                 rebuild the key without the server and outside every policy; keep them apart",
                sets.join(" or ")
            )
        } else {
            format!(
                "backup holders alone rebuild the key (no device needed): {}; keep them apart",
                sets.join(" or ")
            )
        });
    }
    warnings.extend(table.warnings());
    if holders.is_empty() {
        warnings.push(
            "no backup holders: add a USB drive, a cloud folder or a printed code".to_owned(),
        );
    } else if holders.len() == 1 {
        warnings.push(format!(
            "only one backup holder ({}): losing it loses every backup; add a second",
            holders[0].label
        ));
    }
    warnings.extend(notes);
    let commands = commands(with_server, &share_devices, &shares, &holders);
    let mut advice = Vec::new();
    if with_server {
        advice.push(
            "exporting the server's share is never one device's decision: the server holds the \
             export until another of your devices approves it or, with one device, for a time \
             lock (24 hours by default) during which your devices see and can cancel it; so a \
             device alone does not reach the key"
                .to_owned(),
        );
        advice.push(format!(
            "the table counts key material: with the co-signing server, whoever holds the {} share \
             — the device, or an authorised set of its backup holders (a device that restores it \
             is approved by proving so) — can sign through the server within the wallet's \
             policy; set one with limits and approvals (tessera policy set)",
            share_devices.first().map_or("device", String::as_str)
        ));
    }
    Ok(Plan {
        topology,
        t,
        n,
        shares,
        holders,
        commands,
        recovery,
        warnings,
        advice,
        holder_only_compromises,
    })
}

/// The commands that set a plan up: the wallet, every holder's key, the public keys each
/// backing-up device lacks, and the backups. `devices[0]` creates the wallet and the USB,
/// vault and cloud holders' keys (so it knows their public keys); a device keystore holder's
/// key is made on its device; a printed code's on an offline computer.
fn commands(
    with_server: bool,
    devices: &[String],
    shares: &[PlannedShare],
    holders: &[PlannedHolder],
) -> Vec<PlanCommand> {
    let mut out = Vec::new();
    let mut push = |run_on: &str, command: String, note: Option<String>| {
        out.push(PlanCommand {
            run_on: run_on.to_owned(),
            command,
            note,
        });
    };
    let lead = devices.first().map_or("phone", String::as_str);
    if with_server {
        push(
            lead,
            format!("tessera init --server SERVER_URL --user USER --name {lead}"),
            Some("SERVER_URL: the co-signing server's URL; USER: your user name on it".to_owned()),
        );
        push(
            lead,
            format!("tessera keygen --name {WALLET_PLACEHOLDER}"),
            None,
        );
    } else {
        let others = devices.get(1..).unwrap_or(&[]);
        for d in others {
            push(
                d,
                format!("tessera peer listen --device-name {d}"),
                Some(format!(
                    "keep it running and approve {lead}'s request until the wallet is created"
                )),
            );
        }
        push(
            lead,
            format!(
                "tessera peer keygen --name {WALLET_PLACEHOLDER} --threshold 2 --with {} \
                 --device-name {lead}",
                others.join(",")
            ),
            None,
        );
    }
    // Which holders' public keys each device knows (`backup-key new` and `add` record them).
    let mut known: Vec<(String, String)> = Vec::new();
    for h in holders {
        let label = &h.label;
        let kind = h.kind.cli_kind().unwrap_or("usb");
        let (run_on, out_arg, note) = match h.kind {
            ItemKind::DeviceKeystore => (label.clone(), String::new(), None),
            ItemKind::CloudFolder => (
                lead.to_owned(),
                format!(" --out \"$CLOUD_DIR/{label}.key\""),
                Some("CLOUD_DIR: the folder your cloud drive syncs".to_owned()),
            ),
            ItemKind::PrintedCode => (
                OFFLINE_COMPUTER.to_owned(),
                format!(" --out {label}.key"),
                Some(format!(
                    "print {label}.key and keep the print offline, then delete the file; copy \
                     the public key it shows for the devices below"
                )),
            ),
            ItemKind::OfflineVault => (
                lead.to_owned(),
                format!(" --out /media/usb/{label}.key"),
                Some(
                    "with the vault's USB drive mounted at /media/usb; it then stays in the safe"
                        .to_owned(),
                ),
            ),
            ItemKind::UsbFile | ItemKind::Device | ItemKind::CosigningServer => (
                lead.to_owned(),
                format!(" --out /media/usb/{label}.key"),
                Some(format!("with the USB drive {label} mounted at /media/usb")),
            ),
        };
        push(
            &run_on,
            format!("tessera backup-key new --label {label}{out_arg} --kind {kind}"),
            note,
        );
        known.push((run_on, label.clone()));
    }
    // Labels never need shell quoting; policy text has spaces and parentheses: single-quote it.
    for s in shares {
        let Some(b) = &s.backup else { continue };
        let on = &s.backed_up_on;
        for h in &s.backup_holders {
            if known.iter().any(|(d, l)| d == on && *l == h.label) {
                continue;
            }
            let made_on = known
                .iter()
                .find(|(_, l)| *l == h.label)
                .map_or(OFFLINE_COMPUTER, |(d, _)| d.as_str());
            push(
                on,
                format!(
                    "tessera backup-key add tessera-holder-v1:{}:HEX --kind {}",
                    h.label,
                    h.kind.cli_kind().unwrap_or("usb")
                ),
                Some(format!(
                    "HEX: from the public key `tessera backup-key new --label {}` showed on {made_on}",
                    h.label
                )),
            );
            known.push((on.clone(), h.label.clone()));
        }
        let flag = match (with_server, s.held_by_kind) {
            (true, ItemKind::CosigningServer) => " --server-share",
            (true, _) => "",
            (false, _) => " --no-server",
        };
        let note = (s.held_by_kind == ItemKind::CosigningServer).then(|| {
            "the server holds this export until another of your devices approves it \
             (tessera approvals approve ID) or, with one device, until its time lock ends; then \
             run the command again; these holders become the wallet's fixed ones"
                .to_owned()
        });
        push(
            on,
            format!(
                "tessera backup create --wallet {WALLET_PLACEHOLDER} --policy '{b}' --out {}.tsb{flag}",
                s.name
            ),
            note,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::structure::combinations;

    fn table(text: &str) -> LossTable {
        loss_table(&Formula::from(&AccessStructure::parse(text).unwrap())).unwrap()
    }

    fn v(list: &[&[&str]]) -> Vec<Vec<String>> {
        list.iter()
            .map(|s| s.iter().map(|x| x.to_string()).collect())
            .collect()
    }

    fn answers(devices: u8, server: bool, usb: u8, cloud: bool) -> Answers {
        Answers {
            own_devices: devices,
            cosigning_server: server,
            usb_drives: usb,
            cloud_folder: cloud,
            institutional: false,
            offline_recovery: false,
            escape_hatch: false,
        }
    }

    const SERVER_NOT_BACKED_UP: &str = "the server's share is not backed up to your holders";

    #[test]
    fn two_of_three_tolerates_any_single_loss() {
        let t = table("threshold(2, a, b, c)");
        assert!(t.reachable);
        assert_eq!(t.items, vec!["a", "b", "c"]);
        assert_eq!((t.rows[0].survivable, t.rows[0].subsets), (3, 3));
        assert_eq!((t.rows[1].survivable, t.rows[1].subsets), (0, 3));
        assert_eq!(
            t.rows[1].minimal_fatal,
            v(&[&["a", "b"], &["a", "c"], &["b", "c"]])
        );
        assert_eq!((t.rows[2].survivable, t.rows[2].subsets), (0, 1));
        assert!(t.rows[2].minimal_fatal.is_empty());
        assert!(t.single_points_of_failure.is_empty());
        assert!(t.fatal_single_compromises.is_empty());
        assert_eq!(
            t.minimal_compromise_sets,
            v(&[&["a", "b"], &["a", "c"], &["b", "c"]])
        );
        assert_eq!(t.loss_tolerance(), 1);
        assert_eq!(t.compromise_threshold(), 2);
        assert!(t.warnings().is_empty());
    }

    #[test]
    fn and_makes_each_item_a_single_point_of_failure() {
        let t = table("and(phone, usb)");
        assert_eq!(t.single_points_of_failure, vec!["phone", "usb"]);
        assert!(t.fatal_single_compromises.is_empty());
        assert_eq!(t.loss_tolerance(), 0);
        assert_eq!(
            t.warnings(),
            vec![
                "losing phone alone loses the funds",
                "losing usb alone loses the funds"
            ]
        );
    }

    #[test]
    fn or_makes_each_item_a_fatal_compromise() {
        let t = table("or(phone, usb)");
        assert!(t.single_points_of_failure.is_empty());
        assert_eq!(t.fatal_single_compromises, vec!["phone", "usb"]);
        assert_eq!(t.loss_tolerance(), 1);
        assert_eq!(
            t.warnings(),
            vec![
                "phone alone can restore the key",
                "usb alone can restore the key"
            ]
        );
    }

    #[test]
    fn two_of_two_with_backups_composes() {
        // Phone share backed up under threshold(2, usb-1, cloud, laptop); the server's too.
        let b =
            Formula::from(&AccessStructure::parse("threshold(2, usb-1, cloud, laptop)").unwrap());
        let f = Formula::And(vec![
            Formula::Or(vec![Formula::Item("phone".into()), b.clone()]),
            Formula::Or(vec![Formula::Item("server".into()), b]),
        ]);
        assert_eq!(
            f.to_string(),
            "and(or(phone, threshold(2, usb-1, cloud, laptop)), or(server, threshold(2, usb-1, cloud, laptop)))"
        );
        let t = loss_table(&f).unwrap();
        assert_eq!(t.items, vec!["phone", "usb-1", "cloud", "laptop", "server"]);
        assert!(t.single_points_of_failure.is_empty());
        assert!(t.fatal_single_compromises.is_empty());
        // Losing the phone and one holder is fine; the phone and two holders is not.
        assert!(f.holds(&["server", "cloud", "laptop"]));
        assert!(!f.holds(&["server", "laptop"]));
        assert_eq!((t.rows[0].survivable, t.rows[1].survivable), (5, 10));
        assert_eq!(t.loss_tolerance(), 2);
        // Fatal triples: the phone or the server, and two of the three holders.
        assert_eq!((t.rows[2].survivable, t.rows[2].subsets), (4, 10));
        assert_eq!(
            t.rows[2].minimal_fatal,
            v(&[
                &["phone", "usb-1", "cloud"],
                &["phone", "usb-1", "laptop"],
                &["phone", "cloud", "laptop"],
                &["usb-1", "cloud", "server"],
                &["usb-1", "laptop", "server"],
                &["cloud", "laptop", "server"],
            ])
        );
        // Smallest attacks: phone + server, or any two holders.
        assert_eq!(
            t.minimal_compromise_sets,
            v(&[
                &["phone", "server"],
                &["usb-1", "cloud"],
                &["usb-1", "laptop"],
                &["cloud", "laptop"]
            ])
        );
    }

    #[test]
    fn loss_table_cross_checks_brute_force() {
        let f = Formula::from(
            &AccessStructure::parse("or(and(a, b), threshold(2, c, d, and(e, f)))").unwrap(),
        );
        let t = loss_table(&f).unwrap();
        let items: Vec<&str> = f.items();
        for row in &t.rows {
            let mut surv = 0;
            for lost in combinations(items.len(), row.lost) {
                let left: Vec<&str> = (0..items.len())
                    .filter(|i| !lost.contains(i))
                    .map(|i| items[i])
                    .collect();
                surv += u64::from(f.holds(&left));
            }
            assert_eq!(row.survivable, surv, "row {}", row.lost);
        }
        let s = AccessStructure::parse("or(and(a, b), threshold(2, c, d, and(e, f)))").unwrap();
        let mut from_structure: Vec<BTreeSet<String>> = s.minimal_authorised_sets();
        let mut from_table: Vec<BTreeSet<String>> = t
            .minimal_compromise_sets
            .iter()
            .map(|s| s.iter().cloned().collect())
            .collect();
        from_structure.sort();
        from_table.sort();
        assert_eq!(from_structure, from_table);
    }

    #[test]
    fn loss_table_refuses_too_many_items_and_bad_formulas() {
        let f = Formula::Or((0..17).map(|i| Formula::Item(format!("h{i}"))).collect());
        assert_eq!(
            loss_table(&f).unwrap_err().to_string(),
            "17 items is too many to enumerate every loss; the limit is 16"
        );
        let sixteen = Formula::Threshold {
            k: 8,
            of: (0..16).map(|i| Formula::Item(format!("h{i}"))).collect(),
        };
        assert_eq!(loss_table(&sixteen).unwrap().compromise_threshold(), 8);
        let bad = Formula::Threshold {
            k: 3,
            of: vec![Formula::Item("a".into()), Formula::Item("b".into())],
        };
        assert_eq!(
            loss_table(&bad).unwrap_err().to_string(),
            "invalid formula threshold(3, a, b): k must be between 1 and 2"
        );
        assert!(loss_table(&Formula::And(Vec::new())).is_err());
        assert!(loss_table(&Formula::Item(String::new())).is_err());
    }

    fn lines(plan: &Plan) -> Vec<(String, String)> {
        plan.commands
            .iter()
            .map(|c| (c.run_on.clone(), c.command.clone()))
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    /// The text between `--flag ` and the next space (or the quoted text after `--flag '`).
    fn arg<'a>(command: &'a str, flag: &str) -> Option<&'a str> {
        let rest = command.split_once(&format!("{flag} "))?.1;
        match rest.strip_prefix('\'') {
            Some(quoted) => quoted.split_once('\'').map(|(q, _)| q),
            None => rest.split(' ').next(),
        }
    }

    /// Replays the commands as the CLI would: which holders each device knows (`backup-key new`
    /// and `add` record them in its holders.json), that every backup's holders are known where
    /// it is made, that each backed-up share is backed up once, on the right device, with the
    /// right flags, and that no device holds a backup key to its own share.
    fn check_commands(a: &Answers, plan: &Plan) {
        let server = plan.shares.iter().any(|s| s.held_by == "server");
        let mut known: Vec<(String, String)> = Vec::new();
        let mut created = Vec::new();
        for c in &plan.commands {
            let words: Vec<&str> = c.command.split(' ').collect();
            assert_eq!(words[0], "tessera", "{a:?}: {c:?}");
            match (words[1], words[2]) {
                ("backup-key", "new") => {
                    let label = arg(&c.command, "--label").unwrap();
                    let kind = arg(&c.command, "--kind").unwrap();
                    let holder = plan.holders.iter().find(|h| h.label == label).unwrap();
                    assert_eq!(Some(kind), holder.kind.cli_kind(), "{a:?}: {c:?}");
                    // Without --out the key stays in the keystore of the device it runs on.
                    assert_eq!(
                        arg(&c.command, "--out").is_none(),
                        holder.kind == ItemKind::DeviceKeystore,
                        "{a:?}: {c:?}"
                    );
                    if holder.kind == ItemKind::DeviceKeystore {
                        assert_eq!(c.run_on, label, "{a:?}: {c:?}");
                    }
                    if c.run_on != OFFLINE_COMPUTER {
                        known.push((c.run_on.clone(), label.to_owned()));
                    }
                }
                ("backup-key", "add") => {
                    let text = words[3];
                    let label = text.split(':').nth(1).unwrap();
                    assert_eq!(text, format!("tessera-holder-v1:{label}:HEX"));
                    assert!(c.note.as_deref().unwrap().starts_with("HEX: "), "{c:?}");
                    known.push((c.run_on.clone(), label.to_owned()));
                }
                ("backup", "create") => {
                    let policy =
                        AccessStructure::parse(arg(&c.command, "--policy").unwrap()).unwrap();
                    let out = arg(&c.command, "--out").unwrap();
                    let name = out.strip_suffix(".tsb").unwrap();
                    let s = plan.shares.iter().find(|s| s.name == name).unwrap();
                    assert_eq!(s.backup.as_ref(), Some(&policy), "{a:?}: {c:?}");
                    assert_eq!(c.run_on, s.backed_up_on, "{a:?}: {c:?}");
                    assert_eq!(arg(&c.command, "--wallet"), Some(WALLET_PLACEHOLDER));
                    let server_share = c.command.ends_with(" --server-share");
                    let no_server = c.command.ends_with(" --no-server");
                    assert_eq!(server_share, s.held_by == "server", "{a:?}: {c:?}");
                    assert_eq!(no_server, !server, "{a:?}: {c:?}");
                    if server {
                        assert_eq!(c.run_on, plan.shares[0].held_by, "{a:?}: {c:?}");
                    } else {
                        assert_eq!(c.run_on, s.held_by, "{a:?}: {c:?}");
                    }
                    for label in policy.holders() {
                        assert!(
                            known.contains(&(c.run_on.clone(), label.to_owned())),
                            "{a:?}: {} does not know {label}: {:?}",
                            c.run_on,
                            plan.commands
                        );
                        // A device never holds a backup key to its own share.
                        assert_ne!(label, s.held_by, "{a:?}");
                        if s.held_by == "server" {
                            assert_ne!(label, plan.shares[0].held_by, "{a:?}");
                        }
                    }
                    created.push(name.to_owned());
                }
                ("init" | "keygen", _) => assert!(server, "{a:?}: {c:?}"),
                ("peer", "listen" | "keygen") => assert!(!server, "{a:?}: {c:?}"),
                _ => panic!("{a:?}: unexpected command {c:?}"),
            }
        }
        let backed_up: Vec<String> = plan
            .shares
            .iter()
            .filter(|s| s.backup.is_some())
            .map(|s| s.name.clone())
            .collect();
        assert_eq!(created, backed_up, "{a:?}");
    }

    #[test]
    fn personal_with_server_keeps_the_server_share_off_the_holders() {
        let a = answers(2, true, 1, true);
        let plan = recommend(&a).unwrap();
        assert_eq!(plan.topology, "personal 2-of-2 with co-signing server");
        assert_eq!((plan.t, plan.n), (2, 2));
        assert_eq!(
            plan.recovery.to_string(),
            "and(or(phone, threshold(2, usb-1, cloud, device-2)), server)"
        );
        assert!(plan.holder_only_compromises.is_empty());
        assert_eq!(plan.warnings.len(), 2, "{:?}", plan.warnings);
        assert_eq!(plan.warnings[0], "losing server alone loses the funds");
        assert!(plan.warnings[1].starts_with(SERVER_NOT_BACKED_UP));
        let t = plan.loss_table().unwrap();
        assert_eq!(t.single_points_of_failure, vec!["server"]);
        assert!(t.fatal_single_compromises.is_empty());
        // Every way to the key goes through the server (and its policy) or the phone's share
        // plus the server.
        assert!(
            t.minimal_compromise_sets
                .iter()
                .all(|s| s.contains(&"server".to_owned()))
        );
        assert_eq!(
            lines(&plan),
            pairs(&[
                (
                    "phone",
                    "tessera init --server SERVER_URL --user USER --name phone"
                ),
                ("phone", "tessera keygen --name WALLET"),
                (
                    "phone",
                    "tessera backup-key new --label usb-1 --out /media/usb/usb-1.key --kind usb"
                ),
                (
                    "phone",
                    "tessera backup-key new --label cloud --out \"$CLOUD_DIR/cloud.key\" --kind cloud"
                ),
                (
                    "device-2",
                    "tessera backup-key new --label device-2 --kind device"
                ),
                (
                    "phone",
                    "tessera backup-key add tessera-holder-v1:device-2:HEX --kind device"
                ),
                (
                    "phone",
                    "tessera backup create --wallet WALLET --policy 'threshold(2, usb-1, cloud, device-2)' --out phone.tsb"
                ),
            ])
        );
        assert_eq!(plan.shares[0].backup_holders.len(), 3);
        assert_eq!(
            plan.shares[0].backup_holders[2].kind,
            ItemKind::DeviceKeystore
        );
        check_commands(&a, &plan);
    }

    #[test]
    fn two_holders_each_restore_the_device_share_and_never_the_server_share() {
        let plan = recommend(&answers(1, true, 1, true)).unwrap();
        assert_eq!(
            plan.recovery.to_string(),
            "and(or(phone, or(usb-1, cloud)), server)"
        );
        assert!(plan.holder_only_compromises.is_empty());
        let t = plan.loss_table().unwrap();
        assert!(t.fatal_single_compromises.is_empty());
        // With an escape hatch, the server's share needs both holders.
        let a = Answers {
            escape_hatch: true,
            ..answers(1, true, 1, true)
        };
        let plan = recommend(&a).unwrap();
        assert_eq!(
            plan.recovery.to_string(),
            "and(or(phone, or(usb-1, cloud)), or(server, and(usb-1, cloud)))"
        );
        assert_eq!(plan.holder_only_compromises, v(&[&["usb-1", "cloud"]]));
        assert!(
            plan.warnings[0].starts_with("escape hatch: "),
            "{:?}",
            plan.warnings
        );
        assert!(
            plan.warnings[0].contains("usb-1+cloud together"),
            "{:?}",
            plan.warnings
        );
        check_commands(&a, &plan);
    }

    /// The recommended personal set-up of the issue: one phone, the server, two USB drives and a
    /// cloud folder. Two USB drives must not rebuild the key; only an escape hatch, asked for,
    /// lets holders alone do so, all three of them, with a warning first.
    #[test]
    fn two_usb_drives_never_rebuild_the_key() {
        let a = answers(1, true, 2, true);
        let plan = recommend(&a).unwrap();
        assert_eq!(
            plan.recovery.to_string(),
            "and(or(phone, threshold(2, usb-1, usb-2, cloud)), server)"
        );
        let t = plan.loss_table().unwrap();
        assert!(!plan.recovery.holds(&["usb-1", "usb-2"]));
        assert!(!plan.recovery.holds(&["usb-1", "usb-2", "cloud"]));
        assert!(plan.recovery.holds(&["usb-1", "usb-2", "server"]));
        assert!(plan.holder_only_compromises.is_empty());
        assert!(
            t.minimal_compromise_sets
                .iter()
                .all(|s| s.contains(&"server".to_owned()))
        );
        assert!(
            !plan
                .commands
                .iter()
                .any(|c| c.command.contains("--server-share"))
        );
        assert!(!plan.warnings.iter().any(|w| w.starts_with("escape hatch")));
        check_commands(&a, &plan);

        let a = Answers {
            escape_hatch: true,
            ..a
        };
        let plan = recommend(&a).unwrap();
        assert_eq!(
            plan.recovery.to_string(),
            "and(or(phone, threshold(2, usb-1, usb-2, cloud)), or(server, and(usb-1, usb-2, cloud)))"
        );
        assert!(!plan.recovery.holds(&["usb-1", "usb-2"]));
        assert!(plan.recovery.holds(&["usb-1", "usb-2", "cloud"]));
        assert_eq!(
            plan.holder_only_compromises,
            v(&[&["usb-1", "usb-2", "cloud"]])
        );
        assert_eq!(
            plan.warnings[0],
            "escape hatch: the server's share is backed up to your holders, so usb-1+usb-2+cloud \
             together rebuild the key without the server and outside every policy; keep them apart"
        );
        let server_backup = plan
            .commands
            .iter()
            .find(|c| c.command.ends_with("--server-share"))
            .unwrap();
        assert_eq!(
            server_backup.command,
            "tessera backup create --wallet WALLET --policy 'and(usb-1, usb-2, cloud)' --out server.tsb --server-share"
        );
        assert!(
            server_backup
                .note
                .as_deref()
                .unwrap()
                .contains("approves it")
        );
        check_commands(&a, &plan);

        // Four holders: the server's share needs three of them, the device's two.
        let a = Answers {
            escape_hatch: true,
            ..answers(2, true, 2, true)
        };
        let plan = recommend(&a).unwrap();
        assert_eq!(
            plan.shares[1].backup.as_ref().unwrap().to_string(),
            "threshold(3, usb-1, usb-2, cloud, device-2)"
        );
        assert!(plan.holder_only_compromises.iter().all(|s| s.len() == 3));
        // One holder: no escape hatch is possible, and the plan says so.
        let plan = recommend(&Answers {
            escape_hatch: true,
            ..answers(1, true, 1, false)
        })
        .unwrap();
        assert!(plan.shares[1].backup.is_none());
        assert!(
            plan.warnings
                .iter()
                .any(|w| w.starts_with("no escape hatch"))
        );
    }

    #[test]
    fn two_devices_without_server_are_a_device_to_device_two_of_two() {
        let a = answers(2, false, 1, false);
        let plan = recommend(&a).unwrap();
        assert_eq!(plan.topology, "personal 2-of-2 device-to-device");
        assert_eq!((plan.t, plan.n), (2, 2));
        assert_eq!(
            plan.recovery.to_string(),
            "and(or(phone, and(usb-1, device-2)), or(device-2, and(usb-1, phone)))"
        );
        let t = plan.loss_table().unwrap();
        assert!(t.single_points_of_failure.is_empty(), "{t:?}");
        assert!(t.fatal_single_compromises.is_empty(), "{t:?}");
        assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
        assert_eq!(
            lines(&plan),
            pairs(&[
                ("device-2", "tessera peer listen --device-name device-2"),
                (
                    "phone",
                    "tessera peer keygen --name WALLET --threshold 2 --with device-2 --device-name phone"
                ),
                (
                    "phone",
                    "tessera backup-key new --label usb-1 --out /media/usb/usb-1.key --kind usb"
                ),
                (
                    "device-2",
                    "tessera backup-key new --label device-2 --kind device"
                ),
                (
                    "phone",
                    "tessera backup-key new --label phone --kind device"
                ),
                (
                    "phone",
                    "tessera backup-key add tessera-holder-v1:device-2:HEX --kind device"
                ),
                (
                    "phone",
                    "tessera backup create --wallet WALLET --policy 'and(usb-1, device-2)' --out phone.tsb --no-server"
                ),
                (
                    "device-2",
                    "tessera backup-key add tessera-holder-v1:usb-1:HEX --kind usb"
                ),
                (
                    "device-2",
                    "tessera backup-key add tessera-holder-v1:phone:HEX --kind device"
                ),
                (
                    "device-2",
                    "tessera backup create --wallet WALLET --policy 'and(usb-1, phone)' --out device-2.tsb --no-server"
                ),
            ])
        );
        check_commands(&a, &plan);
    }

    #[test]
    fn three_devices_without_server_are_a_two_of_three() {
        for a in [
            answers(3, false, 2, false),
            answers(3, false, 0, false),
            answers(4, false, 0, true),
        ] {
            let plan = recommend(&a).unwrap();
            assert_eq!(plan.topology, "personal 2-of-3 device-to-device", "{a:?}");
            assert_eq!((plan.t, plan.n), (2, 3), "{a:?}");
            let t = plan.loss_table().unwrap();
            assert!(t.single_points_of_failure.is_empty(), "{a:?}: {t:?}");
            assert!(t.fatal_single_compromises.is_empty(), "{a:?}: {t:?}");
            check_commands(&a, &plan);
        }
        let plan = recommend(&answers(3, false, 0, false)).unwrap();
        assert_eq!(
            plan.recovery.to_string(),
            "threshold(2, or(phone, and(device-2, device-3)), or(device-2, and(phone, device-3)), \
             or(device-3, and(phone, device-2)))"
        );
        assert!(plan.commands.iter().any(|c| c.run_on == "phone"
            && c.command
                == "tessera peer keygen --name WALLET --threshold 2 --with device-2,device-3 --device-name phone"));
        // A fourth device holds no share, only backup keys.
        let plan = recommend(&answers(4, false, 0, true)).unwrap();
        assert_eq!(
            plan.shares[0].backup.as_ref().unwrap().to_string(),
            "threshold(2, cloud, device-2, device-3, device-4)"
        );
        assert!(
            plan.warnings
                .contains(&"device-4 holds no share (a device-to-device wallet here is 2-of-3); its keystore holds backup keys".to_owned()),
            "{:?}",
            plan.warnings
        );
    }

    #[test]
    fn two_devices_alone_are_not_backed_up_to_each_other() {
        let plan = recommend(&answers(2, false, 0, false)).unwrap();
        assert_eq!(plan.recovery.to_string(), "and(phone, device-2)");
        assert!(plan.holders.is_empty());
        assert!(
            plan.warnings
                .contains(&"losing phone alone loses the funds".to_owned())
        );
        assert!(
            plan.warnings
                .iter()
                .any(|w| w.starts_with("the shares are not backed up"))
        );
        assert!(
            !plan
                .commands
                .iter()
                .any(|c| c.command.starts_with("tessera backup"))
        );
    }

    #[test]
    fn one_device_without_server_uses_the_server_and_says_why() {
        let a = answers(1, false, 1, true);
        let plan = recommend(&a).unwrap();
        assert_eq!(plan.topology, "personal 2-of-2 with co-signing server");
        assert_eq!(
            plan.recovery.to_string(),
            "and(or(phone, or(usb-1, cloud)), server)"
        );
        assert_eq!(plan.warnings.len(), 3, "{:?}", plan.warnings);
        let why = plan
            .warnings
            .iter()
            .find(|w| {
                w.starts_with(
                    "no co-signing server was asked for, but with one device no threshold wallet \
                     is possible without one",
                )
            })
            .unwrap();
        assert!(why.contains("add a second device"));
        check_commands(&a, &plan);
    }

    #[test]
    fn too_few_items_still_plans_and_warns() {
        let plan = recommend(&answers(1, true, 0, false)).unwrap();
        assert_eq!(plan.recovery.to_string(), "and(phone, server)");
        assert!(
            plan.warnings
                .contains(&"losing phone alone loses the funds".to_owned())
        );
        assert!(
            plan.warnings
                .contains(&"losing server alone loses the funds".to_owned())
        );
        assert!(
            plan.warnings
                .iter()
                .any(|w| w.starts_with("no backup holders"))
        );

        let plan = recommend(&answers(1, true, 1, false)).unwrap();
        assert_eq!(plan.recovery.to_string(), "and(or(phone, usb-1), server)");
        assert!(
            plan.warnings
                .contains(&"losing server alone loses the funds".to_owned())
        );
        assert!(
            plan.warnings
                .iter()
                .any(|w| w.contains("server's share is not backed up"))
        );
        assert!(
            !plan
                .commands
                .iter()
                .any(|c| c.command.contains("--server-share"))
        );
    }

    #[test]
    fn institutional_with_server_backs_both_shares_up_to_officers_and_vault() {
        let a = Answers {
            institutional: true,
            ..answers(3, true, 1, false)
        };
        let plan = recommend(&a).unwrap();
        assert_eq!(plan.topology, "institutional 2-of-2 with co-signing server");
        assert_eq!(
            plan.recovery.to_string(),
            "and(or(officer-1, threshold(2, vault, usb-1, officer-2, officer-3)), server)"
        );
        let t = plan.loss_table().unwrap();
        assert_eq!(t.single_points_of_failure, vec!["server"]);
        assert!(t.fatal_single_compromises.is_empty());
        assert!(plan.holder_only_compromises.is_empty());
        // Without the server, the officer's share survives any three losses among its holders.
        let without_server = Formula::from(plan.shares[0].backup.as_ref().unwrap());
        let officer = loss_table(&Formula::Or(vec![
            Formula::Item("officer-1".into()),
            without_server,
        ]))
        .unwrap();
        assert!(officer.loss_tolerance() >= 3, "{officer:?}");
        assert_eq!(plan.warnings.len(), 2, "{:?}", plan.warnings);
        // Asked for, the escape hatch needs three of the four holders for the server's share.
        let hatch = recommend(&Answers {
            escape_hatch: true,
            ..a.clone()
        })
        .unwrap();
        assert_eq!(
            hatch.shares[1].backup.as_ref().unwrap().to_string(),
            "threshold(3, vault, usb-1, officer-2, officer-3)"
        );
        assert!(hatch.warnings[0].starts_with("escape hatch: "));
        assert!(plan.commands.iter().any(|c| c.run_on == "officer-1"
            && c.command
                == "tessera backup-key new --label vault --out /media/usb/vault.key --kind usb"));
        check_commands(&a, &plan);
    }

    #[test]
    fn institutional_without_server_is_officers_two_of_three() {
        let a = Answers {
            institutional: true,
            ..answers(3, false, 0, false)
        };
        let plan = recommend(&a).unwrap();
        assert_eq!(plan.topology, "institutional 2-of-3 device-to-device");
        assert_eq!(
            plan.shares[0].backup.as_ref().unwrap().to_string(),
            "threshold(2, vault, officer-2, officer-3)"
        );
        let t = plan.loss_table().unwrap();
        assert!(t.single_points_of_failure.is_empty());
        assert!(t.fatal_single_compromises.is_empty());
        assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
        check_commands(&a, &plan);

        // Two officers: a 2-of-2 between them, and a warning.
        let a = Answers {
            institutional: true,
            ..answers(2, false, 0, false)
        };
        let plan = recommend(&a).unwrap();
        assert_eq!(plan.topology, "institutional 2-of-2 device-to-device");
        assert_eq!(
            plan.recovery.to_string(),
            "and(or(officer-1, and(vault, officer-2)), or(officer-2, and(vault, officer-1)))"
        );
        assert!(
            plan.warnings
                .iter()
                .any(|w| w.starts_with("an institutional device-to-device 2-of-3 needs three")),
            "{:?}",
            plan.warnings
        );
        check_commands(&a, &plan);

        // One officer: the server.
        let a = Answers {
            institutional: true,
            ..answers(1, false, 2, false)
        };
        let plan = recommend(&a).unwrap();
        assert_eq!(plan.topology, "institutional 2-of-2 with co-signing server");
        check_commands(&a, &plan);
    }

    #[test]
    fn offline_recovery_prefers_usb_and_paper() {
        let a = Answers {
            offline_recovery: true,
            ..answers(1, true, 2, true)
        };
        let plan = recommend(&a).unwrap();
        let labels: Vec<&str> = plan.holders.iter().map(|h| h.label.as_str()).collect();
        assert_eq!(labels, vec!["usb-1", "usb-2", "paper-1"]);
        assert!(plan.holders.iter().any(|h| h.kind == ItemKind::PrintedCode));
        assert!(plan.holder_only_compromises.is_empty());
        assert!(
            !plan
                .warnings
                .iter()
                .any(|w| w.contains("alone can restore the key")),
            "{:?}",
            plan.warnings
        );
        // The printed code is made offline; its public key is added on the phone.
        assert!(plan.commands.iter().any(|c| c.run_on == OFFLINE_COMPUTER
            && c.command
                == "tessera backup-key new --label paper-1 --out paper-1.key --kind paper"));
        assert!(plan.commands.iter().any(|c| c.run_on == "phone"
            && c.command == "tessera backup-key add tessera-holder-v1:paper-1:HEX --kind paper"));
        check_commands(&a, &plan);
    }

    #[test]
    fn every_answer_set_is_analysed_and_weaknesses_are_warned() {
        for devices in 1..=5 {
            for usb in 0..=3 {
                for bits in 0..32u8 {
                    let a = Answers {
                        own_devices: devices,
                        cosigning_server: bits & 1 != 0,
                        usb_drives: usb,
                        cloud_folder: bits & 2 != 0,
                        institutional: bits & 4 != 0,
                        offline_recovery: bits & 8 != 0,
                        escape_hatch: bits & 16 != 0,
                    };
                    let plan = recommend(&a).unwrap();
                    let t = plan.loss_table().unwrap();
                    assert!(t.reachable, "{a:?}");
                    for w in t.warnings() {
                        assert!(plan.warnings.contains(&w), "{a:?}: {w}");
                    }
                    // Only topologies the product has.
                    let server = a.cosigning_server || devices == 1;
                    assert_eq!(plan.t, 2, "{a:?}");
                    assert_eq!(
                        plan.n,
                        if server {
                            2
                        } else {
                            usize::from(devices).min(3)
                        },
                        "{a:?}"
                    );
                    assert_eq!(
                        plan.shares.iter().any(|s| s.held_by == "server"),
                        server,
                        "{a:?}"
                    );
                    check_commands(&a, &plan);
                    // Backup holders alone reach the key with the server only through an escape
                    // hatch that was asked for, warned of first, and needing more holders than
                    // the device share's backup.
                    if server {
                        let hatch = plan.shares[1].backup.as_ref();
                        assert_eq!(
                            hatch.is_some(),
                            a.escape_hatch && !plan.holder_only_compromises.is_empty(),
                            "{a:?}"
                        );
                        if let Some(hatch) = hatch {
                            let device_k = plan.shares[0].backup.as_ref().map_or(0, holders_needed);
                            assert!(holders_needed(hatch) > device_k, "{a:?}");
                            assert!(plan.warnings[0].starts_with("escape hatch: "), "{a:?}");
                            assert!(
                                plan.holder_only_compromises
                                    .iter()
                                    .all(|s| s.len() == holders_needed(hatch)),
                                "{a:?}"
                            );
                        } else {
                            assert!(plan.holder_only_compromises.is_empty(), "{a:?}");
                        }
                    }
                    // Three or more backup holders are always enough to avoid both weaknesses
                    // (but the server's loss, when its share is not backed up to the holders).
                    if plan.holders.len() >= 3 {
                        let server_unbacked = server && plan.shares[1].backup.is_none();
                        let expected: Vec<String> = if server_unbacked {
                            vec!["server".to_owned()]
                        } else {
                            Vec::new()
                        };
                        assert_eq!(t.single_points_of_failure, expected, "{a:?}");
                        assert!(t.fatal_single_compromises.is_empty(), "{a:?}");
                    }
                    // And any device-to-device wallet with a holder besides its devices.
                    if !server && (usb > 0 || a.cloud_folder || a.offline_recovery) {
                        assert!(t.single_points_of_failure.is_empty(), "{a:?}");
                        assert!(t.fatal_single_compromises.is_empty(), "{a:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn bad_answers_are_rejected() {
        let e = recommend(&answers(0, true, 1, true)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "answer own_devices: must be between 1 and 5, got 0"
        );
        assert!(recommend(&answers(6, true, 1, true)).is_err());
        let e = recommend(&answers(1, true, 4, true)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "answer usb_drives: must be between 0 and 3, got 4"
        );
    }
}
