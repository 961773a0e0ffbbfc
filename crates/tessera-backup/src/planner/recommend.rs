//! The recommendation: from the answers, the layout of shares (with the co-signing server, or
//! device-to-device), the backup holders and structures of each share, and the plan's warnings
//! and advice.

use super::setup::setup_steps;
use super::{Answers, Formula, ItemKind, Plan, PlanError, PlannedHolder, PlannedShare, loss_table};
use crate::structure::AccessStructure;

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
    /// Whether the wallet is with the co-signing server (else device-to-device).
    with_server: bool,
    /// The wallet's structure, when it is one over the server and every device (each holding
    /// a share of its own), with its recovery formula; else a 2-of-2 with the server, or a
    /// device-to-device t-of-n.
    structure: Option<(String, Formula)>,
    /// Whether the structure's devices are an institution's officers, each a user of their own.
    officers: bool,
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
        structure: None,
        officers: false,
        devices: vec![lead],
        shares: vec![device, server],
        notes,
    }
}

/// A person's devices, two or more, each with a share of its own of the wallet
/// `and(server, or(phone, device-2, …))` (`tessera keygen --structure`): the server signs with
/// any one of them, so losing a device loses no funds while another is left, and a new device
/// joins by resharing. The first device's share is backed up as in [`server_layout`], to the
/// USB drives, cloud folder or printed code (not to the other devices' keystores: each of them
/// holds a share already); the other devices' shares are not backed up. The server's share is
/// not backed up to the holders (the escape hatch is a 2-of-2's: [`recommend`] keeps
/// [`server_layout`] when it is asked for).
fn structure_layout(a: &Answers) -> Layout {
    let devices: Vec<String> = (1..=usize::from(a.own_devices))
        .map(|i| device_name(a, i))
        .collect();
    let lead = devices[0].clone();
    let holders = backup_holders(a, &[]);
    let mut shares: Vec<PlannedShare> = devices
        .iter()
        .map(|d| share(d, ItemKind::Device, d))
        .collect();
    // An officer's share alone is one of two an institution's signature needs: its backup
    // needs two holders together where there are two.
    back_up(&mut shares[0], &holders, !a.institutional);
    let device_shares: Vec<Formula> = shares.iter().map(PlannedShare::availability).collect();
    let server = share(SERVER, ItemKind::CosigningServer, &lead);
    let (structure, devices_needed, mut notes) = if a.institutional {
        // Each officer is a user of their own, named as their device: the others are invited
        // as `user:device`.
        let parties: Vec<String> = devices
            .iter()
            .enumerate()
            .map(|(i, d)| {
                if i == 0 {
                    d.clone()
                } else {
                    format!("{d}:{d}")
                }
            })
            .collect();
        (
            format!("and(server, threshold(2, {}))", parties.join(", ")),
            Formula::Threshold {
                k: 2,
                of: device_shares,
            },
            vec![format!(
                "each officer registers as a user of their own and holds a share of their own: \
                 any two officers sign with the server, so one officer alone cannot, and losing \
                 one officer's device loses nothing; {lead} creates the wallet and invites the \
                 others by user name, each accepting from `tessera listen`; only {lead}'s share \
                 is backed up"
            )],
        )
    } else {
        (
            format!("and(server, or({}))", devices.join(", ")),
            Formula::Or(device_shares),
            vec![format!(
                "each device holds a share of its own: the server signs with any one of them, so \
                 a lost device loses nothing while another is left (revoke it: `tessera device \
                 revoke ID --reshare` cuts its share out); a new device joins by resharing once \
                 approved; only {lead}'s share is backed up"
            )],
        )
    };
    let recovery = Formula::And(vec![devices_needed, server.availability()]);
    shares.push(server);
    if !holders.is_empty() {
        notes.push(
            "the server's share is not backed up to your holders (they would then rebuild the \
             key without the server, outside every policy): it lasts as long as the server and \
             its operator's backups"
                .to_owned(),
        );
    }
    let who = if a.institutional {
        "institutional"
    } else {
        "personal"
    };
    Layout {
        topology: format!("{who} {structure} with co-signing server"),
        with_server: true,
        structure: Some((structure, recovery)),
        officers: a.institutional,
        devices,
        shares,
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
        structure: None,
        officers: false,
        devices: live.to_vec(),
        shares,
        notes,
    }
}

/// Recommends a set-up for the answers (the rules are in the [module documentation](super)).
/// The plan's warnings list every single point of failure and single fatal compromise found by
/// enumerating the plan's recovery formula.
pub fn recommend(a: &Answers) -> Result<Plan, PlanError> {
    a.validate()?;
    let devices = usize::from(a.own_devices);
    // An institution's structure wallet wants three officers (two of them sign); with two, the
    // 2-of-2 with the server and backups below.
    let quorum = if a.institutional { 3 } else { 2 };
    let layout = if a.cosigning_server && devices >= quorum && !a.escape_hatch {
        structure_layout(a)
    } else if a.cosigning_server {
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
        structure,
        officers,
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
    let (structure, recovery) = match structure {
        Some((structure, recovery)) => (Some(structure), recovery),
        None if t == n => (None, Formula::And(availability)),
        None => (
            None,
            Formula::Threshold {
                k: t,
                of: availability,
            },
        ),
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
    let steps = setup_steps(
        (with_server, structure.as_deref(), officers),
        t,
        &share_devices,
        &shares,
        &holders,
    );
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
        structure,
        shares,
        holders,
        steps,
        recovery,
        warnings,
        advice,
        holder_only_compromises,
    })
}

#[cfg(test)]
mod tests;
