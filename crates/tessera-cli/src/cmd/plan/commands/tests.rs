//! Unit tests of the command lines: the exact commands of the planner's recommendations, and a
//! replay of every plan's commands as the CLI would run them.

use tessera_backup::planner::{Answers, ItemKind, OFFLINE_COMPUTER, Plan, recommend};
use tessera_backup::structure::AccessStructure;

use super::*;

/// The `--kind` value of a backup holder of this kind (`None` for items that hold live shares).
fn cli_kind(kind: ItemKind) -> Option<String> {
    holder_kind(kind).map(|_| kind_value(kind))
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

fn lines(commands: &[PlanCommand]) -> Vec<(String, String)> {
    commands
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
    let commands = commands(plan);
    let server = plan.shares.iter().any(|s| s.held_by == "server");
    let mut known: Vec<(String, String)> = Vec::new();
    let mut created = Vec::new();
    for c in &commands {
        let words: Vec<&str> = c.command.split(' ').collect();
        assert_eq!(words[0], "tessera", "{a:?}: {c:?}");
        match (words[1], words[2]) {
            ("backup-key", "new") => {
                let label = arg(&c.command, "--label").unwrap();
                let kind = arg(&c.command, "--kind").unwrap();
                let holder = plan.holders.iter().find(|h| h.label == label).unwrap();
                assert_eq!(Some(kind), cli_kind(holder.kind).as_deref(), "{a:?}: {c:?}");
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
                let policy = AccessStructure::parse(arg(&c.command, "--policy").unwrap()).unwrap();
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
                        commands
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
            ("device", "approve") | ("listen", _) => {
                assert!(plan.structure.is_some(), "{a:?}: {c:?}");
            }
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

/// A person's two devices with the server: a structure wallet each device holds a share of,
/// the phone's share backed up to the USB drive or the cloud folder.
#[test]
fn personal_devices_with_server_make_a_structure_wallet() {
    let a = answers(2, true, 1, true);
    let plan = recommend(&a).unwrap();
    assert_eq!(
        lines(&commands(&plan)),
        pairs(&[
            (
                "phone",
                "tessera init --server SERVER_URL --user USER --name phone"
            ),
            (
                "device-2",
                "tessera init --server SERVER_URL --user USER --name device-2"
            ),
            ("phone", "tessera device approve CODE"),
            ("device-2", "tessera listen --yes --once"),
            (
                "phone",
                "tessera keygen --name WALLET --structure 'and(server, or(phone, device-2))'"
            ),
            (
                "phone",
                "tessera backup-key new --label usb-1 --out /media/usb/usb-1.key --kind usb"
            ),
            (
                "phone",
                "tessera backup-key new --label cloud --out \"$CLOUD_DIR/cloud.key\" --kind cloud"
            ),
            (
                "phone",
                "tessera backup create --wallet WALLET --policy 'or(usb-1, cloud)' --out phone.tsb"
            ),
        ])
    );
    check_commands(&a, &plan);
}

#[test]
fn two_holders_each_restore_the_device_share_and_never_the_server_share() {
    // With an escape hatch, the server's share needs both holders.
    let a = Answers {
        escape_hatch: true,
        ..answers(1, true, 1, true)
    };
    let plan = recommend(&a).unwrap();
    check_commands(&a, &plan);
}

/// The recommended personal set-up of the issue: the server's share is backed up (to all three
/// holders) only with an escape hatch, asked for.
#[test]
fn two_usb_drives_never_rebuild_the_key() {
    let a = answers(1, true, 2, true);
    let plan = recommend(&a).unwrap();
    assert!(
        !commands(&plan)
            .iter()
            .any(|c| c.command.contains("--server-share"))
    );
    check_commands(&a, &plan);

    let a = Answers {
        escape_hatch: true,
        ..a
    };
    let plan = recommend(&a).unwrap();
    let commands = commands(&plan);
    let server_backup = commands
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
}

#[test]
fn two_devices_without_server_are_a_device_to_device_two_of_two() {
    let a = answers(2, false, 1, false);
    let plan = recommend(&a).unwrap();
    assert_eq!(
        lines(&commands(&plan)),
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
        check_commands(&a, &plan);
    }
    let plan = recommend(&answers(3, false, 0, false)).unwrap();
    assert!(commands(&plan).iter().any(|c| c.run_on == "phone"
        && c.command
            == "tessera peer keygen --name WALLET --threshold 2 --with device-2,device-3 --device-name phone"));
}

#[test]
fn two_devices_alone_are_not_backed_up_to_each_other() {
    let plan = recommend(&answers(2, false, 0, false)).unwrap();
    assert!(
        !commands(&plan)
            .iter()
            .any(|c| c.command.starts_with("tessera backup"))
    );
}

#[test]
fn one_device_without_server_uses_the_server_and_says_why() {
    let a = answers(1, false, 1, true);
    let plan = recommend(&a).unwrap();
    check_commands(&a, &plan);
}

#[test]
fn too_few_items_still_plans_and_warns() {
    let plan = recommend(&answers(1, true, 1, false)).unwrap();
    assert!(
        !commands(&plan)
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
    assert!(commands(&plan).iter().any(|c| c.run_on == "officer-1"
        && c.command
            == "tessera backup-key new --label vault --out /media/usb/vault.key --kind usb"));
    check_commands(&a, &plan);
}

#[test]
fn institutional_without_server_is_officers_two_of_three() {
    // Three officers; two (a 2-of-2 between them); one (the server).
    for devices in [3, 2] {
        let a = Answers {
            institutional: true,
            ..answers(devices, false, 0, false)
        };
        check_commands(&a, &recommend(&a).unwrap());
    }
    let a = Answers {
        institutional: true,
        ..answers(1, false, 2, false)
    };
    check_commands(&a, &recommend(&a).unwrap());
}

#[test]
fn offline_recovery_prefers_usb_and_paper() {
    let a = Answers {
        offline_recovery: true,
        ..answers(1, true, 2, true)
    };
    let plan = recommend(&a).unwrap();
    let commands = commands(&plan);
    // The printed code is made offline; its public key is added on the phone.
    assert!(commands.iter().any(|c| c.run_on == OFFLINE_COMPUTER
        && c.command == "tessera backup-key new --label paper-1 --out paper-1.key --kind paper"));
    assert!(commands.iter().any(|c| c.run_on == "phone"
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
                check_commands(&a, &plan);
            }
        }
    }
}
