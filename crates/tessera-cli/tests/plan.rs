//! `tessera plan`, run as a user would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output, Stdio};

use common::Server;

mod common;

fn tessera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .output()
        .expect("tessera runs")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Exit 2 with a one-line error; returns it.
fn usage_error(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn structure_table_of_two_of_three() {
    let out = ok(&tessera(&[
        "plan",
        "--structure",
        "Threshold(2, device,usb-1, cloud)",
    ]));
    assert!(
        out.starts_with("Loss tolerance of threshold(2, device, usb-1, cloud):\n"),
        "{out}"
    );
    assert!(out.contains("  any 1       3 of 3\n"), "{out}");
    assert!(
        out.contains("(fatal: device+usb-1, device+cloud, usb-1+cloud)"),
        "{out}"
    );
    assert!(
        !out.contains("any 3"),
        "rows stop at the first fatal size: {out}"
    );
    assert!(out.contains("Single points of failure: none\n"), "{out}");
    assert!(
        out.contains(
            "Single compromise that is fatal: none  (smallest sets that reach the key: \
             device+usb-1, device+cloud, usb-1+cloud)"
        ),
        "{out}"
    );
    assert!(!out.contains("Warnings"), "{out}");
}

#[test]
fn structure_and_warns_of_single_points_of_failure() {
    let out = ok(&tessera(&["plan", "--structure", "and(phone, usb-1)"]));
    assert!(
        out.contains("Single points of failure: phone, usb-1\n"),
        "{out}"
    );
    assert!(
        out.contains("  - losing phone alone loses the funds\n"),
        "{out}"
    );
    assert!(
        out.contains("  - losing usb-1 alone loses the funds\n"),
        "{out}"
    );
    assert!(out.contains("any 1       0 of 2"), "{out}");
}

#[test]
fn structure_or_warns_of_single_compromise() {
    let out = ok(&tessera(&["plan", "--structure", "or(phone, usb)"]));
    assert!(
        out.contains("Single compromise that is fatal: phone, usb\n"),
        "{out}"
    );
    assert!(
        out.contains("  - phone alone can restore the key\n"),
        "{out}"
    );
    assert!(out.contains("  - usb alone can restore the key\n"), "{out}");
    assert!(out.contains("Single points of failure: none"), "{out}");
}

#[test]
fn structure_json_for_scripts() {
    let out = ok(&tessera(&[
        "plan",
        "--structure",
        "and(phone, usb-1)",
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["structure"], "and(phone, usb-1)");
    assert_eq!(
        v["loss_table"]["single_points_of_failure"],
        serde_json::json!(["phone", "usb-1"])
    );
    assert_eq!(v["warnings"][0], "losing phone alone loses the funds");
}

#[test]
fn bad_structure_text_is_a_usage_error() {
    for (text, expected) in [
        ("xor(a, b)", "unknown keyword \"xor\" at column 1"),
        (
            "threshold(3, a, b)",
            "threshold(3, a, b): k must be between 1 and 2",
        ),
        ("and(usb-1, usb-1)", "holder \"usb-1\" appears twice"),
        ("and(USB, b)", "labels are lowercase"),
        ("and(a, b", "the text ends"),
    ] {
        let err = usage_error(&tessera(&["plan", "--structure", text]));
        assert!(err.contains("invalid structure: "), "{err}");
        assert!(err.contains(expected), "{text}: {err}");
    }
    let many: Vec<String> = (0..17).map(|i| format!("h{i}")).collect();
    let err = usage_error(&tessera(&[
        "plan",
        "--structure",
        &format!("or({})", many.join(", ")),
    ]));
    assert!(err.contains("17 items is too many"), "{err}");
}

/// The command lines a plan prints, with the device each runs on.
fn commands(out: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = out.lines().collect();
    lines
        .windows(2)
        .filter_map(|w| {
            let on = w[0].strip_prefix("  # on ")?;
            let command = w[1].strip_prefix("  ")?;
            assert!(command.starts_with("tessera "), "{command}");
            let device = on.split_once(':').map_or(on, |(d, _)| d);
            Some((device.to_owned(), command.to_owned()))
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

#[test]
fn flags_give_a_recommendation_with_its_table() {
    let out = ok(&tessera(&[
        "plan",
        "--devices",
        "2",
        "--server",
        "--usb",
        "1",
        "--cloud",
    ]));
    // Two devices with the server: each holds a share of its own of a structure wallet, and
    // the commands make it (every device registers, the phone approves the other, which
    // listens while the phone runs the key generation).
    assert!(
        out.starts_with(
            "Recommended set-up: personal and(server, or(phone, device-2)) with co-signing \
             server (the server and any one device sign)"
        ),
        "{out}"
    );
    assert_eq!(
        commands(&out),
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
        ]),
        "{out}"
    );
    assert!(
        out.contains("  # on phone: CODE: the approval code `tessera init` printed on device-2\n"),
        "{out}"
    );
    assert!(
        out.contains("Loss tolerance of and(or(or(phone, or(usb-1, cloud)), device-2), server)"),
        "{out}"
    );
    // The server's share is not backed up to the holders: its loss is the server's operator's.
    assert!(out.contains("Single points of failure: server"), "{out}");
    assert!(
        out.contains("  - the server's share is not backed up to your holders"),
        "{out}"
    );
    assert!(!out.contains("--server-share"), "{out}");
    assert!(!out.contains("WARNING"), "{out}");
    assert!(
        !out.contains("CloudFolder") && !out.contains(".backup"),
        "{out}"
    );
}

/// The commands `tessera plan plan_args` prints for a structure wallet with the server, run in
/// order as printed (placeholders replaced: the server's URL, a user, the approval codes
/// `init` printed, the wallet's name, the USB and cloud folders) against a real server process:
/// they make the structure wallet `stored` over `devices`, each device holding a share of its
/// own; then each device signs with the server, with the device `co_signer` gives it (a label
/// and that device, which answers from `tessera listen`) where one is needed; and the first
/// device's share is backed up.
fn printed_structure_commands_make_the_wallet(
    plan_args: &[&str],
    devices: &[&str],
    stored: &str,
    co_signer: impl Fn(&str) -> Option<(&'static str, &'static str)>,
) {
    let out = ok(&tessera(&[&["plan"], plan_args].concat()));
    let server = Server::start_fresh(&[]);
    let homes: Vec<(&str, tempfile::TempDir)> = devices
        .iter()
        .map(|d| (*d, tempfile::tempdir().unwrap()))
        .collect();
    let home = |on: &str| {
        homes
            .iter()
            .find(|(d, _)| *d == on)
            .unwrap()
            .1
            .path()
            .to_owned()
    };
    let media = tempfile::tempdir().unwrap();
    let (usb, cloud) = (media.path().join("usb"), media.path().join("cloud"));
    std::fs::create_dir_all(&usb).unwrap();
    std::fs::create_dir_all(&cloud).unwrap();
    let run = |on: &str, words: &[String]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
        cmd.args(&words[1..])
            .current_dir(media.path())
            .env("TESSERA_HOME", home(on))
            .env("TESSERA_PASSPHRASE", "correct horse battery staple")
            .env("TESSERA_BACKUP_KEY_PASSPHRASE", "a backup key passphrase")
            .env_remove("TESSERA_DATABASE_URL");
        cmd
    };
    let (mut codes, mut listening): (Vec<String>, _) = (Vec::new(), Vec::new());
    let printed = commands(&out);
    assert!(
        printed.iter().any(|(_, c)| c.contains("--structure")),
        "{out}"
    );
    for (on, line) in printed {
        let mut line = line
            .replace("SERVER_URL", &server.url)
            .replace("USER", "pat")
            .replace("WALLET", "family")
            .replace("/media/usb", usb.to_str().unwrap())
            .replace("$CLOUD_DIR", cloud.to_str().unwrap());
        if line.contains("approve CODE") {
            line = line.replace("CODE", &codes.remove(0));
        }
        let words = shell_words(&line);
        if words[1] == "listen" {
            let child = run(&on, &words)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            listening.push(child);
            continue;
        }
        let done = ok(&run(&on, &words).output().unwrap());
        // A device of a user that has one already waits for its approval.
        if words[1] == "init"
            && let Some(code) = done
                .lines()
                .find_map(|l| l.strip_prefix("approval code"))
                .and_then(|c| c.split_whitespace().next())
        {
            codes.push(code.to_owned());
        }
    }
    assert!(codes.is_empty(), "approval codes left: {codes:?}");
    for child in listening {
        ok(&child.wait_with_output().unwrap());
    }
    assert!(media.path().join(format!("{}.tsb", devices[0])).exists());
    let mut keys = Vec::new();
    for on in devices {
        let shown = ok(&run(
            on,
            &shell_words("tessera wallet show --wallet family --json"),
        )
        .output()
        .unwrap());
        let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
        assert_eq!(shown["structure"], stored);
        keys.push(shown["public_key"].clone());
        let mut sign = format!("tessera sign --wallet family --message 'from {on}'");
        let answering = co_signer(on).map(|(label, device)| {
            sign.push_str(&format!(" --with {label}"));
            let mut child = run(device, &shell_words("tessera listen --once"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child.stdin.take().unwrap().write_all(b"y\n").unwrap();
            child
        });
        ok(&run(on, &shell_words(&sign)).output().unwrap());
        if let Some(child) = answering {
            ok(&child.wait_with_output().unwrap());
        }
    }
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
}

/// A person's two devices and the server: any one device signs with the server.
#[test]
fn the_printed_structure_commands_make_the_wallet() {
    printed_structure_commands_make_the_wallet(
        &["--devices", "2", "--server", "--usb", "1", "--cloud"],
        &["phone", "device-2"],
        "and(server, or(phone, device-2))",
        |_| None,
    );
}

/// An institution's three officers and the server: each officer registers as a user of their
/// own, officer-1 invites the others by name, they accept from `tessera listen`, and any two
/// officers sign with the server.
#[test]
fn the_printed_institutional_commands_make_the_officers_wallet() {
    printed_structure_commands_make_the_wallet(
        &[
            "--devices",
            "3",
            "--server",
            "--institutional",
            "--usb",
            "1",
        ],
        &["officer-1", "officer-2", "officer-3"],
        "and(server, threshold(2, officer-1, officer-2.officer-2, officer-3.officer-3))",
        |on| match on {
            "officer-1" => Some(("officer-2.officer-2", "officer-2")),
            "officer-2" => Some(("officer-3.officer-3", "officer-3")),
            _ => Some(("officer-1", "officer-1")),
        },
    );
}

#[test]
fn one_device_with_server_prints_exact_commands() {
    let out = ok(&tessera(&[
        "plan",
        "--devices",
        "1",
        "--server",
        "--usb",
        "1",
        "--cloud",
    ]));
    assert!(
        out.starts_with(
            "Recommended set-up: personal 2-of-2 with co-signing server (any 2 of the 2 shares sign)\n"
        ),
        "{out}"
    );
    assert_eq!(
        commands(&out),
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
                "phone",
                "tessera backup create --wallet WALLET --policy 'or(usb-1, cloud)' --out phone.tsb"
            ),
        ]),
        "{out}"
    );
    assert!(
        out.contains("  # on phone: CLOUD_DIR: the folder your cloud drive syncs\n"),
        "{out}"
    );
    assert!(
        out.contains(
            "The funds are reachable while and(or(phone, or(usb-1, cloud)), server) holds"
        ),
        "{out}"
    );
    assert!(!out.contains("WARNING"), "{out}");
    // A device alone cannot take the server's share: the table says why it is not an item.
    assert!(
        out.contains("exporting the server's share is never one device's decision"),
        "{out}"
    );
    // What the table does not model: the server co-signs for whoever holds the device share.
    assert!(out.contains("\n  - the table counts key material"), "{out}");
    assert!(out.contains("tessera policy set"), "{out}");
}

#[test]
fn two_devices_without_server_print_exact_commands() {
    let out = ok(&tessera(&[
        "plan",
        "--devices",
        "2",
        "--no-server",
        "--usb",
        "1",
    ]));
    assert!(
        out.starts_with(
            "Recommended set-up: personal 2-of-2 device-to-device (any 2 of the 2 shares sign)\n"
        ),
        "{out}"
    );
    assert_eq!(
        commands(&out),
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
        ]),
        "{out}"
    );
    assert!(
        out.contains(
            "  # on device-2: HEX: from the public key `tessera backup-key new --label phone` showed on phone\n"
        ),
        "{out}"
    );
    assert!(out.contains("Single points of failure: none"), "{out}");
    assert!(!out.contains("Warnings"), "{out}");
}

#[test]
fn one_device_without_server_is_told_why_it_gets_the_server() {
    let out = ok(&tessera(&[
        "plan",
        "--devices",
        "1",
        "--no-server",
        "--usb",
        "2",
    ]));
    assert!(
        out.starts_with("Recommended set-up: personal 2-of-2 with co-signing server"),
        "{out}"
    );
    assert!(
        out.contains("  - no co-signing server was asked for, but with one device no threshold"),
        "{out}"
    );
    assert!(!out.contains("peer keygen"), "{out}");
}

/// Splits a command line as a POSIX shell would (single and double quotes; no escapes needed).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    for ch in line.chars() {
        match (quote, ch) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '\'' | '"') => {
                quote = Some(ch);
                word.get_or_insert_with(String::new);
            }
            (None, ' ') => words.extend(word.take()),
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    assert!(quote.is_none(), "unbalanced quotes: {line}");
    words.extend(word);
    words
}

/// The subcommands a `--help` text lists.
fn subcommands(help: &str) -> Vec<String> {
    help.split_once("Commands:\n")
        .map_or(Vec::new(), |(_, rest)| {
            rest.lines()
                .take_while(|l| l.starts_with("  "))
                .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
                .collect()
        })
}

/// The help text's option blocks: each option line ("      --out <OUT>  …" or
/// "  -t, --threshold <THRESHOLD>  …") with the lines under it, up to the next option.
fn option_blocks(help: &str) -> Vec<(String, String)> {
    let mut blocks: Vec<(String, String)> = Vec::new();
    let options = help.split_once("Options:\n").map_or("", |(_, o)| o);
    for line in options.lines() {
        let trimmed = line.trim_start();
        let long = trimmed
            .split_once(", ")
            .filter(|(short, _)| short.len() == 2 && short.starts_with('-'))
            .map_or(trimmed, |(_, long)| long);
        if long.starts_with("--") && line.starts_with("  ") && !line.starts_with("          ") {
            blocks.push((long.to_owned(), String::new()));
        } else if let Some((_, body)) = blocks.last_mut() {
            body.push_str(trimmed);
            body.push('\n');
        }
    }
    blocks
}

/// The values an option's help block allows, in either help form: "[possible values: a, b]"
/// or a "Possible values:" list of "- a: …" lines. `None` when it does not list them.
fn possible_values(block: &str) -> Option<Vec<String>> {
    if let Some((_, rest)) = block.split_once("[possible values: ") {
        let (list, _) = rest.split_once(']')?;
        return Some(list.split(", ").map(str::to_owned).collect());
    }
    let (_, rest) = block.split_once("Possible values:\n")?;
    Some(
        rest.lines()
            .filter_map(|l| {
                l.strip_prefix("- ")?
                    .split_once(':')
                    .map(|(v, _)| v.to_owned())
            })
            .collect(),
    )
}

/// Checks a printed command against the real CLI's `--help`: its subcommand exists, every flag
/// is one of its options, takes a value exactly when the option does (and one of its possible
/// values, when it lists them), every required option is given, and there are no more
/// positionals than the usage names.
fn check_against_help(line: &str) -> Result<(), String> {
    let words = shell_words(line);
    if words.first().map(String::as_str) != Some("tessera") {
        return Err(format!("{line}: not a tessera command"));
    }
    let mut path: Vec<String> = Vec::new();
    let mut rest = &words[1..];
    let mut help = ok(&tessera(&["--help"]));
    while let Some(next) = rest.first() {
        if next.starts_with('-') || !subcommands(&help).contains(next) {
            break;
        }
        path.push(next.clone());
        rest = &rest[1..];
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        help = ok(&tessera(&args));
    }
    let command = format!("tessera {}", path.join(" "));
    if path.is_empty() || !subcommands(&help).is_empty() {
        return Err(format!("{line}: `{command}` is not a complete subcommand"));
    }
    let blocks = option_blocks(&help);
    let usage = help
        .lines()
        .find(|l| l.starts_with("Usage: "))
        .ok_or_else(|| format!("no usage in {help}"))?;
    let usage_words: Vec<&str> = usage.split_whitespace().collect();
    let mut positionals = 0;
    let mut given = Vec::new();
    let mut i = 0;
    while let Some(word) = rest.get(i) {
        i += 1;
        if !word.starts_with("--") {
            positionals += 1;
            continue;
        }
        let (head, block) = blocks
            .iter()
            .find(|(head, _)| {
                head.strip_prefix(word.as_str())
                    .is_some_and(|r| r.is_empty() || r.starts_with(' '))
            })
            .ok_or_else(|| format!("{line}: {word} is not an option of `{command}`"))?;
        if head[word.len()..].starts_with(" <") {
            let value = rest
                .get(i)
                .filter(|v| !v.starts_with("--"))
                .ok_or_else(|| format!("{line}: {word} needs a value"))?;
            i += 1;
            if let Some(allowed) = possible_values(&format!("{head}\n{block}"))
                && !allowed.contains(value)
            {
                return Err(format!("{line}: {word} {value} is not one of {allowed:?}"));
            }
        }
        given.push(word.clone());
    }
    // Required options appear in the usage line ("--wallet <WALLET>"); optional ones are
    // folded into [OPTIONS].
    for w in usage_words.iter().filter(|w| w.starts_with("--")) {
        if !given.iter().any(|g| g == w) {
            return Err(format!("{line}: {w} is required by `{command}`"));
        }
    }
    let usage_positionals = usage_words
        .windows(2)
        .filter(|w| w[1].trim_start_matches('[').starts_with('<') && !w[0].contains("--"))
        .count();
    let required_positionals = usage_words
        .windows(2)
        .filter(|w| w[1].starts_with('<') && !w[0].contains("--"))
        .count();
    if positionals < required_positionals {
        return Err(format!(
            "{line}: {positionals} positionals, the usage needs {required_positionals}: {usage}"
        ));
    }
    if positionals > usage_positionals {
        return Err(format!(
            "{line}: {positionals} positionals, the usage has {usage_positionals}: {usage}"
        ));
    }
    Ok(())
}

#[test]
fn every_printed_command_parses_with_the_real_cli() {
    let mut seen = std::collections::BTreeSet::new();
    for flags in [
        &["--devices", "1", "--server", "--usb", "1", "--cloud"][..],
        &["--devices", "2", "--no-server", "--usb", "1"],
        &["--devices", "3", "--server", "--usb", "3", "--cloud"],
        &[
            "--devices",
            "5",
            "--no-server",
            "--usb",
            "1",
            "--cloud",
            "--offline-recovery",
        ],
        &["--devices", "1", "--no-server", "--offline-recovery"],
        &["--devices", "3", "--institutional", "--usb", "1"],
        &["--devices", "2", "--institutional", "--server", "--cloud"],
        &["--devices", "2", "--institutional", "--no-server"],
        &[
            "--devices",
            "1",
            "--server",
            "--usb",
            "2",
            "--cloud",
            "--escape-hatch",
        ],
    ] {
        let mut args = vec!["plan"];
        args.extend_from_slice(flags);
        let out = ok(&tessera(&args));
        let printed = commands(&out);
        assert!(printed.len() >= 4, "{flags:?}: {out}");
        for (_, line) in printed {
            if !seen.insert(line.clone()) {
                continue;
            }
            check_against_help(&line).unwrap();
            // Every policy is a valid structure.
            let words = shell_words(&line);
            if let Some(k) = words.iter().position(|w| w == "--policy") {
                ok(&tessera(&["plan", "--structure", &words[k + 1]]));
            }
        }
    }
    // The checker itself refuses what the CLI would.
    for bad in [
        "tessera backup create --wallet W --policy 'a' --out x.tsb --server",
        "tessera backup-key new --label a --kind vault",
        "tessera backup create --wallet W --policy 'a'",
        "tessera backup-key add --kind usb",
        "tessera backup-key add tessera-holder-v1:a:HEX --kind vault",
        "tessera backup-key add tessera-holder-v1:a:HEX extra --kind usb",
        "tessera peer keygen --name W --threshold",
        "tessera backup make --wallet W",
    ] {
        assert!(check_against_help(bad).is_err(), "accepted: {bad}");
    }
}

/// The issue's recommended personal set-up: two USB drives must not reach the key. Only with
/// `--escape-hatch` is the server's share backed up, to all three holders, said at the top.
#[test]
fn the_personal_set_up_keeps_two_usb_drives_from_the_key() {
    let flags = [
        "plan",
        "--devices",
        "1",
        "--server",
        "--usb",
        "2",
        "--cloud",
    ];
    let out = ok(&tessera(&flags));
    assert!(
        out.contains(
            "The funds are reachable while and(or(phone, threshold(2, usb-1, usb-2, cloud)), server) holds"
        ),
        "{out}"
    );
    assert!(
        out.contains("smallest sets that reach the key: phone+server"),
        "{out}"
    );
    assert!(!out.contains("--server-share"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&tessera(&[&flags[..], &["--json"]].concat()))).unwrap();
    assert_eq!(
        json["plan"]["holder_only_compromises"],
        serde_json::json!([])
    );
    for set in json["loss_table"]["minimal_compromise_sets"]
        .as_array()
        .unwrap()
    {
        assert!(
            set.as_array().unwrap().iter().any(|i| i == "server"),
            "{set}"
        );
    }

    let out = ok(&tessera(&[&flags[..], &["--escape-hatch"]].concat()));
    let second_line = out.lines().nth(1).unwrap();
    assert_eq!(
        second_line,
        "WARNING: escape hatch: the server's share is backed up to your holders, so \
         usb-1+usb-2+cloud together rebuild the key without the server and outside every policy; \
         keep them apart"
    );
    assert!(
        out.contains(
            "tessera backup create --wallet WALLET --policy 'and(usb-1, usb-2, cloud)' --out server.tsb --server-share"
        ),
        "{out}"
    );
    // Two drives still do not: the smallest holder-only set is all three.
    let json: serde_json::Value = serde_json::from_str(&ok(&tessera(
        &[&flags[..], &["--escape-hatch", "--json"]].concat(),
    )))
    .unwrap();
    assert_eq!(
        json["plan"]["holder_only_compromises"],
        serde_json::json!([["usb-1", "usb-2", "cloud"]])
    );
    // Only with the server.
    let err = usage_error(&tessera(&["plan", "--devices", "2", "--escape-hatch"]));
    assert!(
        err.contains("required arguments were not provided"),
        "{err}"
    );
}

#[test]
fn too_few_items_are_recommended_with_warnings() {
    let out = ok(&tessera(&["plan", "--devices", "1", "--server"]));
    assert!(
        out.contains("Single points of failure: phone, server"),
        "{out}"
    );
    assert!(
        out.contains("  - losing phone alone loses the funds"),
        "{out}"
    );
    assert!(out.contains("  - no backup holders"), "{out}");
}

#[test]
fn bad_flags_are_usage_errors() {
    let err = usage_error(&tessera(&["plan", "--devices", "0"]));
    assert!(err.contains("--devices"), "{err}");
    let err = usage_error(&tessera(&["plan", "--devices", "2", "--usb", "4"]));
    assert!(err.contains("--usb"), "{err}");
    let err = usage_error(&tessera(&["plan", "--server", "--cloud"]));
    assert!(err.contains("--devices N is needed"), "{err}");
    let err = usage_error(&tessera(&[
        "plan",
        "--server",
        "--no-server",
        "--devices",
        "1",
    ]));
    assert!(err.contains("--no-server"), "{err}");
    usage_error(&tessera(&["plan", "--structure", "a", "--devices", "1"]));
}

#[test]
fn json_answer_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("answers.json");
    std::fs::write(
        &path,
        r#"{"own_devices": 2, "cosigning_server": true, "usb_drives": 2, "cloud_folder": false,
            "institutional": true, "offline_recovery": false}"#,
    )
    .unwrap();
    let path = path.to_str().unwrap();
    let text = ok(&tessera(&["plan", "--answers", path]));
    assert!(
        text.starts_with("Recommended set-up: institutional 2-of-2 with co-signing server"),
        "{text}"
    );

    let out = ok(&tessera(&["plan", "--answers", path, "--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["plan"]["t"], 2);
    assert_eq!(v["plan"]["n"], 2);
    assert_eq!(v["answers"]["own_devices"], 2);
    assert_eq!(
        v["loss_table"]["single_points_of_failure"],
        serde_json::json!(["server"])
    );
    assert_eq!(
        v["loss_table"]["fatal_single_compromises"],
        serde_json::json!([])
    );
    assert!(
        v["plan"]["recovery"]
            .as_str()
            .unwrap()
            .starts_with("and(or(officer-1, threshold(2, vault, usb-1, usb-2, officer-2)), ")
    );
}

#[test]
fn bad_answer_files_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (body, expected) in [
        (
            r#"{"own_devices": 2, "colour": "red"}"#,
            "unknown field `colour`",
        ),
        (
            r#"{"own_devices": 9}"#,
            "own_devices: must be between 1 and 5, got 9",
        ),
        (
            r#"{"own_devices": 1, "usb_drives": 7}"#,
            "usb_drives: must be between 0 and 3",
        ),
        (r#"{"cloud_folder": true}"#, "missing field `own_devices`"),
        ("not json", "expected"),
    ] {
        let path = dir.path().join("answers.json");
        std::fs::write(&path, body).unwrap();
        let err = usage_error(&tessera(&["plan", "--answers", path.to_str().unwrap()]));
        assert!(err.contains(expected), "{body}: {err}");
    }
    let err = usage_error(&tessera(&[
        "plan",
        "--answers",
        dir.path().join("absent.json").to_str().unwrap(),
    ]));
    assert!(err.contains("cannot read"), "{err}");
}

#[test]
fn no_answers_without_a_terminal_lists_the_flags() {
    // `output()` gives the child no terminal on stdin.
    let err = usage_error(&tessera(&["plan"]));
    assert!(err.contains("--answers FILE.json"), "{err}");
    assert!(err.contains("--devices N"), "{err}");
    assert!(err.contains("--structure TEXT"), "{err}");
}

#[test]
fn structures_deserialize_only_when_valid() {
    use tessera_backup::structure::AccessStructure;
    let s = AccessStructure::parse("threshold(2, usb-1, and(cloud, laptop), phone)").unwrap();
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(serde_json::from_str::<AccessStructure>(&json).unwrap(), s);
    let dup = r#"{"And":[{"Leaf":"a"},{"Leaf":"a"}]}"#;
    let e = serde_json::from_str::<AccessStructure>(dup).unwrap_err();
    assert!(e.to_string().contains("holder \"a\" appears twice"), "{e}");
    let bad_k = r#"{"Threshold":{"k":0,"of":[{"Leaf":"a"},{"Leaf":"b"}]}}"#;
    assert!(serde_json::from_str::<AccessStructure>(bad_k).is_err());
}

/// `tessera plan` in a real terminal (tmux) asks its questions and answers with a plan.
#[test]
fn interactive_questions_in_a_terminal() {
    let socket = tempfile::tempdir().unwrap();
    let socket = socket.path().join("tmux.sock");
    let tmux = |args: &[&str]| {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args(args)
            .output()
            .expect("tmux runs (scripts/test installs it)");
        assert!(out.status.success(), "tmux {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let command = format!("{} plan; sleep 60", env!("CARGO_BIN_EXE_tessera"));
    tmux(&["new-session", "-d", "-x", "160", "-y", "60", &command]);
    let screen = || tmux(&["capture-pane", "-p", "-S", "-200"]);
    let wait_for = |text: &str| {
        for _ in 0..100 {
            if screen().contains(text) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("never showed {text:?}:\n{}", screen());
    };
    // Each question, then its answer as a person types it.
    for (question, keys) in [
        ("institution", &["n"][..]),
        ("How many of your devices", &["2", "Enter"][..]),
        ("co-signing server", &["y"][..]),
        ("USB drives", &["1", "Enter"][..]),
        ("cloud folder", &["y"][..]),
        ("offline", &["n"][..]),
    ] {
        wait_for(question);
        let mut args = vec!["send-keys"];
        args.extend(keys);
        tmux(&args);
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    wait_for("Single points of failure");
    let shown = screen();
    let _ = Command::new("tmux")
        .arg("-S")
        .arg(&socket)
        .arg("kill-server")
        .status();
    assert!(
        shown.contains("personal and(server, or(phone, device-2)) with co-signing server"),
        "{shown}"
    );
    assert!(shown.contains("--policy 'or(usb-1, cloud)'"), "{shown}");
    // The server's share is not backed up to the holders: its loss is listed, honestly.
    assert!(
        shown.contains("Single points of failure: server"),
        "{shown}"
    );
}
