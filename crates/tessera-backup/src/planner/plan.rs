//! A plan as data: the shares and who holds them, the backup holders and what kind of item each
//! is, the backups' structures, the steps that set it up, the recovery formula and what the
//! enumeration found. How a step is typed (the `tessera` command line) is the CLI's.

use serde::{Deserialize, Serialize};

use super::{Formula, LossTable, PlanError, loss_table};
use crate::structure::AccessStructure;

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

/// One step of setting a plan up: what is done, and where. The CLI prints each step as the
/// command line that does it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SetupStep {
    /// Where it is done: a device of the plan (`phone`, `device-2`, `officer-1`) or
    /// [`OFFLINE_COMPUTER`].
    pub run_on: String,
    /// What is done there.
    pub action: SetupAction,
}

/// What a [`SetupStep`] does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum SetupAction {
    /// The device registers with the co-signing server, under its name.
    JoinServer,
    /// The device and the co-signing server generate the wallet's key, a 2-of-2.
    ServerKeygen,
    /// The device approves `device`, registered since with the co-signing server (with the
    /// code that device was given).
    ApproveDevice {
        /// The device approved.
        device: String,
    },
    /// The device registers with the co-signing server as a user of its own, `user` (an
    /// institution's officer: each is another user, invited into the wallet by name).
    JoinServerAs {
        /// The user name it registers under (the structure names it).
        user: String,
    },
    /// The device waits for the key generation of the wallet user `owner` invites it into,
    /// accepts the invitation and takes part.
    AcceptInvitation {
        /// The inviting user (the device that starts the key generation registered as it).
        owner: String,
    },
    /// The device waits, through the co-signing server, for the key generation `lead` starts,
    /// and takes part.
    ServerListen {
        /// The device that starts the key generation.
        lead: String,
    },
    /// The device starts the key generation of a wallet under `structure` with the co-signing
    /// server and the other devices it names, each of which gets a share of its own.
    StructureKeygen {
        /// The wallet's structure, over `server` and the devices' names.
        structure: String,
    },
    /// The device waits for the device-to-device key generation `lead` starts, and takes part.
    PeerListen {
        /// The device that starts the key generation.
        lead: String,
    },
    /// The device starts the device-to-device key generation with the `others`.
    PeerKeygen {
        /// Shares needed to sign.
        threshold: usize,
        /// The other devices that get a share, in party order.
        others: Vec<String>,
    },
    /// A backup holder's key pair is made here. A device keystore holder's private key stays in
    /// the keystore of the device it is made on; every other holder's is written out for its USB
    /// drive, vault, cloud folder or print. A device (not an offline computer) records the
    /// holder's public key as it makes it.
    NewHolderKey {
        /// The holder.
        holder: PlannedHolder,
    },
    /// The device records the public key of a holder whose key pair was made elsewhere.
    AddHolderKey {
        /// The holder.
        holder: PlannedHolder,
        /// Where its key pair was made (and its public key shown).
        made_on: String,
    },
    /// The device backs a share up to its holders.
    CreateBackup {
        /// The share's name ([`PlannedShare::name`]).
        share: String,
        /// Who can open the backup.
        structure: AccessStructure,
        /// What the co-signing server does with the backup.
        server: BackupServerRole,
    },
}

/// What the co-signing server does with a backup made by [`SetupAction::CreateBackup`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackupServerRole {
    /// The backup is of a device's share of a wallet with the server, which verifies it and
    /// records it in its audit log.
    Records,
    /// The backup is of the server's own share: the server exports it once another of the
    /// owner's devices approves, or with one device once a time lock ends.
    ExportsItsShare,
    /// None: a device-to-device wallet has no server.
    NoServer,
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
    /// The wallet's structure when every device holds a share of its own
    /// (`and(server, or(phone, device-2))`: the server and any one device sign); `None` for a
    /// `t`-of-`n`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub structure: Option<String>,
    /// The shares, in party order.
    pub shares: Vec<PlannedShare>,
    /// Every backup holder some share's backup names, once.
    pub holders: Vec<PlannedHolder>,
    /// The steps that set the plan up, in order.
    pub steps: Vec<SetupStep>,
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
    ///
    /// [`Answers::escape_hatch`]: super::Answers::escape_hatch
    pub holder_only_compromises: Vec<Vec<String>>,
}

impl Plan {
    /// The loss and compromise table of [`Plan::recovery`].
    pub fn loss_table(&self) -> Result<LossTable, PlanError> {
        loss_table(&self.recovery)
    }
}

/// Where an offline computer runs a command (printed codes are made there).
pub const OFFLINE_COMPUTER: &str = "an offline computer";
