//! Unit tests of the recommendation: every answer set, and the steps that set each plan up.
//! (The command lines the CLI prints for the steps are tested in the CLI.)

use super::*;
use crate::planner::{BackupServerRole, OFFLINE_COMPUTER, SetupAction};

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

/// Replays the setup steps: which holders each device knows (making a key pair on a device and
/// adding a public key record it), that every backup's holders are known where it is made, that
/// each backed-up share is backed up once, on the right device, with the right part for the
/// server, and that no device holds a backup key to its own share. (The CLI's tests replay the
/// command lines it prints for the steps the same way.)
fn check_steps(a: &Answers, plan: &Plan) {
    let server = plan.shares.iter().any(|s| s.held_by == "server");
    let mut known: Vec<(String, String)> = Vec::new();
    let mut created = Vec::new();
    let (mut joined, mut approved, mut listening) = (Vec::new(), Vec::new(), Vec::new());
    let n_devices = plan
        .shares
        .iter()
        .filter(|s| s.held_by_kind == ItemKind::Device)
        .count();
    for step in &plan.steps {
        let on = &step.run_on;
        match &step.action {
            SetupAction::NewHolderKey { holder } => {
                assert!(plan.holders.contains(holder), "{a:?}: {step:?}");
                match holder.kind {
                    ItemKind::DeviceKeystore => assert_eq!(*on, holder.label, "{a:?}: {step:?}"),
                    ItemKind::PrintedCode => assert_eq!(on, OFFLINE_COMPUTER, "{a:?}: {step:?}"),
                    _ => assert_eq!(*on, plan.shares[0].held_by, "{a:?}: {step:?}"),
                }
                if on != OFFLINE_COMPUTER {
                    known.push((on.clone(), holder.label.clone()));
                }
            }
            SetupAction::AddHolderKey { holder, made_on } => {
                assert!(
                    !known.contains(&(on.clone(), holder.label.clone())),
                    "{a:?}: {step:?}"
                );
                if made_on != OFFLINE_COMPUTER {
                    assert!(
                        known.contains(&(made_on.clone(), holder.label.clone())),
                        "{a:?}: {step:?}"
                    );
                }
                known.push((on.clone(), holder.label.clone()));
            }
            SetupAction::CreateBackup {
                share,
                structure,
                server: role,
            } => {
                let s = plan.shares.iter().find(|s| s.name == *share).unwrap();
                assert_eq!(s.backup.as_ref(), Some(structure), "{a:?}: {step:?}");
                assert_eq!(*on, s.backed_up_on, "{a:?}: {step:?}");
                let expected = match (server, s.held_by == "server") {
                    (true, true) => BackupServerRole::ExportsItsShare,
                    (true, false) => BackupServerRole::Records,
                    (false, _) => BackupServerRole::NoServer,
                };
                assert_eq!(*role, expected, "{a:?}: {step:?}");
                if server {
                    assert_eq!(*on, plan.shares[0].held_by, "{a:?}: {step:?}");
                } else {
                    assert_eq!(*on, s.held_by, "{a:?}: {step:?}");
                }
                for label in structure.holders() {
                    assert!(
                        known.contains(&(on.clone(), label.to_owned())),
                        "{a:?}: {on} does not know {label}: {:?}",
                        plan.steps
                    );
                    // A device never holds a backup key to its own share.
                    assert_ne!(label, s.held_by, "{a:?}");
                    if s.held_by == "server" {
                        assert_ne!(label, plan.shares[0].held_by, "{a:?}");
                    }
                }
                created.push(share.clone());
            }
            SetupAction::ServerKeygen => {
                assert!(server && plan.structure.is_none(), "{a:?}: {step:?}");
                assert_eq!(*on, plan.shares[0].held_by, "{a:?}: {step:?}");
            }
            SetupAction::JoinServer => {
                assert!(server, "{a:?}: {step:?}");
                // Every device of a structure wallet registers; else the one of the 2-of-2.
                let devices = if plan.structure.is_some() {
                    n_devices
                } else {
                    1
                };
                assert!(
                    plan.shares[..devices].iter().any(|s| s.held_by == *on),
                    "{a:?}: {step:?}"
                );
                joined.push(on.clone());
            }
            SetupAction::JoinServerAs { user } => {
                assert!(server && plan.structure.is_some(), "{a:?}: {step:?}");
                assert!(a.institutional, "{a:?}: {step:?}");
                assert_eq!(user, on, "{a:?}: {step:?}");
                assert!(
                    plan.shares[..n_devices].iter().any(|s| s.held_by == *on),
                    "{a:?}: {step:?}"
                );
                joined.push(on.clone());
            }
            SetupAction::AcceptInvitation { owner } => {
                assert!(plan.structure.is_some(), "{a:?}: {step:?}");
                assert_eq!(*owner, plan.shares[0].held_by, "{a:?}: {step:?}");
                assert!(joined.contains(on), "{a:?}: {on} accepts unregistered");
                assert!(
                    joined.contains(owner),
                    "{a:?}: {owner} invites unregistered"
                );
                listening.push(on.clone());
            }
            SetupAction::ApproveDevice { device } => {
                assert!(plan.structure.is_some(), "{a:?}: {step:?}");
                assert_eq!(*on, plan.shares[0].held_by, "{a:?}: {step:?}");
                assert!(joined.contains(device), "{a:?}: approved before it joined");
                approved.push(device.clone());
            }
            SetupAction::ServerListen { lead } => {
                assert!(plan.structure.is_some(), "{a:?}: {step:?}");
                assert_eq!(*lead, plan.shares[0].held_by, "{a:?}: {step:?}");
                assert!(approved.contains(on), "{a:?}: {on} listens unapproved");
                listening.push(on.clone());
            }
            SetupAction::StructureKeygen { structure } => {
                assert_eq!(Some(structure), plan.structure.as_ref(), "{a:?}: {step:?}");
                assert_eq!(*on, plan.shares[0].held_by, "{a:?}: {step:?}");
                // Every other device listens by then, and each is a party of the structure.
                let others: Vec<String> = plan.shares[1..n_devices]
                    .iter()
                    .map(|s| s.held_by.clone())
                    .collect();
                assert_eq!(listening, others, "{a:?}");
                for s in &plan.shares[..n_devices] {
                    assert!(structure.contains(&s.held_by), "{a:?}: {structure}");
                }
            }
            SetupAction::PeerListen { lead } => {
                assert!(!server, "{a:?}: {step:?}");
                assert_eq!(*lead, plan.shares[0].held_by, "{a:?}: {step:?}");
            }
            SetupAction::PeerKeygen { threshold, others } => {
                assert!(!server, "{a:?}: {step:?}");
                assert_eq!(*threshold, plan.t, "{a:?}: {step:?}");
                let devices: Vec<&String> = plan.shares.iter().map(|s| &s.held_by).collect();
                assert_eq!(devices[0], on, "{a:?}: {step:?}");
                assert_eq!(devices[1..].to_vec(), others.iter().collect::<Vec<_>>());
            }
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

/// A person's devices with the server: each holds a share of its own of
/// `and(server, or(phone, device-2, …))`, so any one of them signs with the server and losing one
/// loses nothing while another is left; only the phone's share is backed up, to the USB drives
/// and the cloud folder (not to the other devices, which hold shares already).
#[test]
fn personal_devices_with_server_each_hold_a_share_of_a_structure_wallet() {
    for devices in [2, 3] {
        let a = answers(devices, true, 1, true);
        let plan = recommend(&a).unwrap();
        let names = if devices == 2 {
            "phone, device-2"
        } else {
            "phone, device-2, device-3"
        };
        let structure = format!("and(server, or({names}))");
        assert_eq!(plan.structure.as_deref(), Some(structure.as_str()));
        assert_eq!(
            plan.topology,
            format!("personal {structure} with co-signing server")
        );
        assert_eq!((plan.t, plan.n), (2, usize::from(devices) + 1));
        let others = if devices == 2 {
            "device-2"
        } else {
            "device-2, device-3"
        };
        assert_eq!(
            plan.recovery.to_string(),
            format!("and(or(or(phone, or(usb-1, cloud)), {others}), server)")
        );
        assert!(plan.holder_only_compromises.is_empty());
        let t = plan.loss_table().unwrap();
        assert_eq!(t.single_points_of_failure, vec!["server"]);
        assert!(t.fatal_single_compromises.is_empty());
        // Losing the phone, or any device, loses nothing while another is left.
        assert!(plan.recovery.holds(&["device-2", "server"]));
        assert!(!plan.recovery.holds(&["phone", "device-2"]));
        assert!(
            t.minimal_compromise_sets
                .iter()
                .all(|s| s.contains(&"server".to_owned()))
        );
        assert_eq!(plan.shares[0].backup_holders.len(), 2);
        assert!(plan.shares[1..].iter().all(|s| s.backup.is_none()));
        assert!(
            plan.warnings
                .iter()
                .any(|w| w.starts_with("each device holds a share of its own")),
            "{:?}",
            plan.warnings
        );
        assert!(
            plan.warnings
                .iter()
                .any(|w| w.starts_with(SERVER_NOT_BACKED_UP))
        );
        check_steps(&a, &plan);
    }
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
    check_steps(&a, &plan);
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
    assert!(!plan.warnings.iter().any(|w| w.starts_with("escape hatch")));
    check_steps(&a, &plan);

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
    check_steps(&a, &plan);

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
    check_steps(&a, &plan);
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
        check_steps(&a, &plan);
    }
    let plan = recommend(&answers(3, false, 0, false)).unwrap();
    assert_eq!(
        plan.recovery.to_string(),
        "threshold(2, or(phone, and(device-2, device-3)), or(device-2, and(phone, device-3)), \
         or(device-3, and(phone, device-2)))"
    );
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
    check_steps(&a, &plan);
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
}

/// Three officers with the server: a structure wallet of the server and the officers, each a
/// user of their own, any two of them signing with the server.
#[test]
fn institutional_officers_with_server_make_a_structure_wallet() {
    let a = Answers {
        institutional: true,
        ..answers(3, true, 1, false)
    };
    let plan = recommend(&a).unwrap();
    assert_eq!(
        plan.structure.as_deref(),
        Some("and(server, threshold(2, officer-1, officer-2:officer-2, officer-3:officer-3))")
    );
    assert_eq!(
        plan.recovery.to_string(),
        "and(threshold(2, or(officer-1, and(vault, usb-1)), officer-2, officer-3), server)"
    );
    let t = plan.loss_table().unwrap();
    assert_eq!(t.single_points_of_failure, vec!["server"]);
    assert!(t.fatal_single_compromises.is_empty());
    assert!(plan.holder_only_compromises.is_empty());
    // Officer-1 invites the others, who register as users of their own and accept.
    let steps: Vec<(&str, &SetupAction)> = plan
        .steps
        .iter()
        .map(|s| (s.run_on.as_str(), &s.action))
        .take(6)
        .collect();
    let owner = || SetupAction::AcceptInvitation {
        owner: "officer-1".into(),
    };
    let user = |u: &str| SetupAction::JoinServerAs { user: u.into() };
    assert_eq!(
        steps,
        vec![
            ("officer-1", &user("officer-1")),
            ("officer-2", &user("officer-2")),
            ("officer-3", &user("officer-3")),
            ("officer-2", &owner()),
            ("officer-3", &owner()),
            (
                "officer-1",
                &SetupAction::StructureKeygen {
                    structure: plan.structure.clone().unwrap()
                }
            ),
        ]
    );
    check_steps(&a, &plan);
}

/// Two officers with the server ("any two officers" with two is both: their 2-of-2 would stop
/// at one lost device), or three with an escape hatch: officer-1's 2-of-2 with the server, its
/// share backed up to the other officers and the vault.
#[test]
fn institutional_with_server_backs_both_shares_up_to_officers_and_vault() {
    let a = Answers {
        institutional: true,
        ..answers(2, true, 1, false)
    };
    let plan = recommend(&a).unwrap();
    assert_eq!(plan.topology, "institutional 2-of-2 with co-signing server");
    assert_eq!(
        plan.recovery.to_string(),
        "and(or(officer-1, threshold(2, vault, usb-1, officer-2)), server)"
    );
    let t = plan.loss_table().unwrap();
    assert_eq!(t.single_points_of_failure, vec!["server"]);
    assert!(t.fatal_single_compromises.is_empty());
    assert!(plan.holder_only_compromises.is_empty());
    // Without the server, the officer's share survives any two losses among its holders.
    let without_server = Formula::from(plan.shares[0].backup.as_ref().unwrap());
    let officer = loss_table(&Formula::Or(vec![
        Formula::Item("officer-1".into()),
        without_server,
    ]))
    .unwrap();
    assert!(officer.loss_tolerance() >= 2, "{officer:?}");
    check_steps(&a, &plan);
    // Three officers asking for the escape hatch: three of the four holders for the server's
    // share.
    let hatch = Answers {
        escape_hatch: true,
        own_devices: 3,
        ..a
    };
    let plan = recommend(&hatch).unwrap();
    assert_eq!(plan.topology, "institutional 2-of-2 with co-signing server");
    assert_eq!(
        plan.shares[1].backup.as_ref().unwrap().to_string(),
        "threshold(3, vault, usb-1, officer-2, officer-3)"
    );
    assert!(plan.warnings[0].starts_with("escape hatch: "));
    check_steps(&hatch, &plan);
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
    check_steps(&a, &plan);

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
    check_steps(&a, &plan);

    // One officer: the server.
    let a = Answers {
        institutional: true,
        ..answers(1, false, 2, false)
    };
    let plan = recommend(&a).unwrap();
    assert_eq!(plan.topology, "institutional 2-of-2 with co-signing server");
    check_steps(&a, &plan);
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
    check_steps(&a, &plan);
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
                // A person's devices with the server each hold a share of a structure wallet,
                // and so do three officers or more (but with an escape hatch, which is a
                // 2-of-2's).
                let quorum = if a.institutional { 3 } else { 2 };
                let structure = a.cosigning_server && devices >= quorum && !a.escape_hatch;
                assert_eq!(plan.structure.is_some(), structure, "{a:?}");
                assert_eq!(plan.t, 2, "{a:?}");
                assert_eq!(
                    plan.n,
                    if structure {
                        usize::from(devices) + 1
                    } else if server {
                        2
                    } else {
                        usize::from(devices).min(3)
                    },
                    "{a:?}"
                );
                let server_share = plan.shares.iter().find(|s| s.held_by == "server");
                assert_eq!(
                    plan.shares.iter().any(|s| s.held_by == "server"),
                    server,
                    "{a:?}"
                );
                check_steps(&a, &plan);
                // Backup holders alone reach the key with the server only through an escape
                // hatch that was asked for, warned of first, and needing more holders than
                // the device share's backup.
                if let Some(server_share) = server_share {
                    let hatch = server_share.backup.as_ref();
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
                    let server_unbacked = server_share.is_some_and(|s| s.backup.is_none());
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
