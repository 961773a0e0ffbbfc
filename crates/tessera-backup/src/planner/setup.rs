//! The steps that set a plan up: the wallet, every holder's key pair, the public keys each
//! backing-up device lacks, and the backups, each with the device it is done on, in order.

use super::{
    BackupServerRole, ItemKind, OFFLINE_COMPUTER, PlannedHolder, PlannedShare, SetupAction,
    SetupStep,
};

/// The steps that set a plan up: the wallet (with the server: a 2-of-2, or a wallet under
/// `structure` whose every device registers, is approved by the first and takes part; with
/// `officers`, each device registers as a user of its own and accepts the first's invitation),
/// every
/// holder's key, the public keys each backing-up device lacks, and the backups. `devices[0]`
/// creates the wallet and the USB,
/// vault and cloud holders' keys (so it knows their public keys); a device keystore holder's
/// key is made on its device; a printed code's on an offline computer.
pub(super) fn setup_steps(
    (with_server, structure, officers): (bool, Option<&str>, bool),
    t: usize,
    devices: &[String],
    shares: &[PlannedShare],
    holders: &[PlannedHolder],
) -> Vec<SetupStep> {
    let mut out = Vec::new();
    let mut push = |run_on: &str, action: SetupAction| {
        out.push(SetupStep {
            run_on: run_on.to_owned(),
            action,
        });
    };
    let lead = devices.first().map_or("phone", String::as_str);
    let others = devices.get(1..).unwrap_or(&[]);
    if let (Some(structure), true) = (structure, officers) {
        // Each officer registers as a user of their own (named as the device); the first
        // invites the others by name, and they accept from their agents.
        for d in devices {
            push(d, SetupAction::JoinServerAs { user: d.to_owned() });
        }
        for d in others {
            push(
                d,
                SetupAction::AcceptInvitation {
                    owner: lead.to_owned(),
                },
            );
        }
        push(
            lead,
            SetupAction::StructureKeygen {
                structure: structure.to_owned(),
            },
        );
    } else if let Some(structure) = structure {
        // Every device registers and the first approves the others; they wait for the key
        // generation the first starts.
        push(lead, SetupAction::JoinServer);
        for d in others {
            push(d, SetupAction::JoinServer);
            push(
                lead,
                SetupAction::ApproveDevice {
                    device: d.to_owned(),
                },
            );
        }
        for d in others {
            push(
                d,
                SetupAction::ServerListen {
                    lead: lead.to_owned(),
                },
            );
        }
        push(
            lead,
            SetupAction::StructureKeygen {
                structure: structure.to_owned(),
            },
        );
    } else if with_server {
        push(lead, SetupAction::JoinServer);
        push(lead, SetupAction::ServerKeygen);
    } else {
        for d in others {
            push(
                d,
                SetupAction::PeerListen {
                    lead: lead.to_owned(),
                },
            );
        }
        push(
            lead,
            SetupAction::PeerKeygen {
                threshold: t,
                others: others.to_vec(),
            },
        );
    }
    // Which holders' public keys each device knows (`backup-key new` and `add` record them).
    let mut known: Vec<(String, String)> = Vec::new();
    for h in holders {
        let run_on = match h.kind {
            ItemKind::DeviceKeystore => h.label.clone(),
            ItemKind::PrintedCode => OFFLINE_COMPUTER.to_owned(),
            ItemKind::CloudFolder
            | ItemKind::OfflineVault
            | ItemKind::UsbFile
            | ItemKind::Device
            | ItemKind::CosigningServer => lead.to_owned(),
        };
        push(&run_on, SetupAction::NewHolderKey { holder: h.clone() });
        known.push((run_on, h.label.clone()));
    }
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
                SetupAction::AddHolderKey {
                    holder: h.clone(),
                    made_on: made_on.to_owned(),
                },
            );
            known.push((on.clone(), h.label.clone()));
        }
        let server = match (with_server, s.held_by_kind) {
            (true, ItemKind::CosigningServer) => BackupServerRole::ExportsItsShare,
            (true, _) => BackupServerRole::Records,
            (false, _) => BackupServerRole::NoServer,
        };
        push(
            on,
            SetupAction::CreateBackup {
                share: s.name.clone(),
                structure: b.clone(),
                server,
            },
        );
    }
    out
}
