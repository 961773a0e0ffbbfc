//! The `tessera` command lines that set a plan up: each of the planner's setup steps spelled as
//! the command to type on its device, with a note on what to do around it or what a placeholder
//! in it stands for.

use clap::ValueEnum;
use serde::Serialize;
use tessera_backup::planner::{
    BackupServerRole, ItemKind, Plan, PlannedHolder, SetupAction, SetupStep,
};

use crate::cmd::backup::HolderKind;

/// Placeholder for the wallet name in the commands.
pub(crate) const WALLET_PLACEHOLDER: &str = "WALLET";

/// A command to run, and where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct PlanCommand {
    /// Where to run it: a device of the plan (`phone`, `device-2`, `officer-1`) or
    /// `an offline computer`.
    pub(crate) run_on: String,
    /// The command line, exactly as to type it (after replacing the placeholders the note
    /// names, and [`WALLET_PLACEHOLDER`]).
    pub(crate) command: String,
    /// What to do around it, or what a placeholder in it stands for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) note: Option<String>,
}

/// The commands that set the plan up, in order: one per setup step.
pub(crate) fn commands(plan: &Plan) -> Vec<PlanCommand> {
    plan.steps.iter().map(command).collect()
}

/// The command line of one step.
fn command(step: &SetupStep) -> PlanCommand {
    let on = step.run_on.as_str();
    let (command, note) = match &step.action {
        SetupAction::JoinServer => (
            format!("tessera init --server SERVER_URL --user USER --name {on}"),
            Some("SERVER_URL: the co-signing server's URL; USER: your user name on it".to_owned()),
        ),
        SetupAction::JoinServerAs { user } => (
            format!("tessera init --server SERVER_URL --user {user} --name {on}"),
            Some(format!(
                "SERVER_URL: the co-signing server's URL; {user} is this officer's own user (the \
                 wallet's structure names it: another user name goes into the structure too)"
            )),
        ),
        SetupAction::AcceptInvitation { owner } => (
            format!("tessera listen --yes --accept-from {owner} --once"),
            Some(format!(
                "keep it running until {owner}'s key generation is done: it accepts {owner}'s \
                 invitation into the wallet and takes part"
            )),
        ),
        SetupAction::ServerKeygen => (format!("tessera keygen --name {WALLET_PLACEHOLDER}"), None),
        SetupAction::ApproveDevice { device } => (
            "tessera device approve CODE".to_owned(),
            Some(format!(
                "CODE: the approval code `tessera init` printed on {device}"
            )),
        ),
        SetupAction::ServerListen { lead } => (
            "tessera listen --yes --once".to_owned(),
            Some(format!(
                "keep it running until {lead}'s key generation is done: this device takes part"
            )),
        ),
        SetupAction::StructureKeygen { structure } => (
            format!("tessera keygen --name {WALLET_PLACEHOLDER} --structure '{structure}'"),
            Some(
                "each other device's `tessera listen` takes part; each device gets a share of \
                 its own"
                    .to_owned(),
            ),
        ),
        SetupAction::PeerListen { lead } => (
            format!("tessera peer listen --device-name {on}"),
            Some(format!(
                "keep it running and approve {lead}'s request until the wallet is created"
            )),
        ),
        SetupAction::PeerKeygen { threshold, others } => (
            format!(
                "tessera peer keygen --name {WALLET_PLACEHOLDER} --threshold {threshold} --with {} \
                 --device-name {on}",
                others.join(",")
            ),
            None,
        ),
        SetupAction::NewHolderKey { holder } => new_holder_key(holder),
        SetupAction::AddHolderKey { holder, made_on } => (
            format!(
                "tessera backup-key add tessera-holder-v1:{}:HEX --kind {}",
                holder.label,
                kind_value(holder.kind)
            ),
            Some(format!(
                "HEX: from the public key `tessera backup-key new --label {}` showed on {made_on}",
                holder.label
            )),
        ),
        SetupAction::CreateBackup {
            share,
            structure,
            server,
        } => {
            let flag = match server {
                BackupServerRole::ExportsItsShare => " --server-share",
                BackupServerRole::Records => "",
                BackupServerRole::NoServer => " --no-server",
            };
            let note = (*server == BackupServerRole::ExportsItsShare).then(|| {
                "the server holds this export until another of your devices approves it \
                 (tessera approvals approve ID) or, with one device, until its time lock ends; \
                 then run the command again; these holders become the wallet's fixed ones"
                    .to_owned()
            });
            // Labels never need shell quoting; policy text has spaces and parentheses:
            // single-quote it.
            (
                format!(
                    "tessera backup create --wallet {WALLET_PLACEHOLDER} --policy '{structure}' \
                     --out {share}.tsb{flag}"
                ),
                note,
            )
        }
    };
    PlanCommand {
        run_on: step.run_on.clone(),
        command,
        note,
    }
}

/// `tessera backup-key new` for a holder: where its private key file goes, by kind (a device
/// keystore holder's stays in the keystore of the device it is made on).
fn new_holder_key(holder: &PlannedHolder) -> (String, Option<String>) {
    let label = &holder.label;
    let (out_arg, note) = match holder.kind {
        ItemKind::DeviceKeystore => (String::new(), None),
        ItemKind::CloudFolder => (
            format!(" --out \"$CLOUD_DIR/{label}.key\""),
            Some("CLOUD_DIR: the folder your cloud drive syncs".to_owned()),
        ),
        ItemKind::PrintedCode => (
            format!(" --out {label}.key"),
            Some(format!(
                "print {label}.key and keep the print offline, then delete the file; copy the \
                 public key it shows for the devices below"
            )),
        ),
        ItemKind::OfflineVault => (
            format!(" --out /media/usb/{label}.key"),
            Some(
                "with the vault's USB drive mounted at /media/usb; it then stays in the safe"
                    .to_owned(),
            ),
        ),
        ItemKind::UsbFile | ItemKind::Device | ItemKind::CosigningServer => (
            format!(" --out /media/usb/{label}.key"),
            Some(format!("with the USB drive {label} mounted at /media/usb")),
        ),
    };
    (
        format!(
            "tessera backup-key new --label {label}{out_arg} --kind {}",
            kind_value(holder.kind)
        ),
        note,
    )
}

/// The holder kind `tessera backup-key new|add --kind` takes for a backup holder of this
/// kind (`None` for items that hold live shares, not backup keys).
fn holder_kind(kind: ItemKind) -> Option<HolderKind> {
    match kind {
        ItemKind::UsbFile | ItemKind::OfflineVault => Some(HolderKind::Usb),
        ItemKind::CloudFolder => Some(HolderKind::Cloud),
        ItemKind::DeviceKeystore => Some(HolderKind::Device),
        ItemKind::PrintedCode => Some(HolderKind::Paper),
        ItemKind::Device | ItemKind::CosigningServer => None,
    }
}

/// The `--kind` value for a holder of this kind, as the CLI parses it (`usb` for an item that
/// is not a backup holder: the planner never makes one a holder).
fn kind_value(kind: ItemKind) -> String {
    holder_kind(kind)
        .unwrap_or(HolderKind::Usb)
        .to_possible_value()
        .map_or_else(|| "usb".to_owned(), |v| v.get_name().to_owned())
}

/// The plan as JSON for `tessera plan --json`: its data, with its setup steps given as the
/// commands that do them.
pub(crate) fn plan_json(plan: &Plan) -> serde_json::Result<serde_json::Value> {
    let mut value = serde_json::to_value(plan)?;
    if let Some(fields) = value.as_object_mut() {
        fields.remove("steps");
        fields.insert("commands".to_owned(), serde_json::to_value(commands(plan))?);
    }
    Ok(value)
}

#[cfg(test)]
mod tests;
