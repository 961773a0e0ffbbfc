//! The command lines that set a plan up, and where each runs.

use super::{
    ItemKind, OFFLINE_COMPUTER, PlanCommand, PlannedHolder, PlannedShare, WALLET_PLACEHOLDER,
};

/// The commands that set a plan up: the wallet, every holder's key, the public keys each
/// backing-up device lacks, and the backups. `devices[0]` creates the wallet and the USB,
/// vault and cloud holders' keys (so it knows their public keys); a device keystore holder's
/// key is made on its device; a printed code's on an offline computer.
pub(super) fn commands(
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
