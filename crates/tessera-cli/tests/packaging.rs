//! What a package ships beside the binary: shell completions and manual pages from the built
//! `tessera`, and the systemd unit in deploy/ (checked by `systemd-analyze` where it is
//! installed, by its own parse everywhere).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

/// Whether `program` runs here (`program --version` exits 0).
fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Subcommands every script and page must know, top-level and nested.
const COMMANDS: [&str; 6] = ["keygen", "server", "sign", "backup", "completions", "man"];

#[test]
fn bash_completion_is_valid_and_completes_subcommands() {
    let script = ok(&tessera(&["completions", "bash"]));
    for command in COMMANDS {
        assert!(script.contains(command), "no {command} in:\n{script}");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tessera.bash");
    std::fs::write(&file, &script).unwrap();
    let syntax = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(
        syntax.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    // Loaded as bash-completion would, the function completes `tessera ke<TAB>` and the
    // options of `tessera server --tls<TAB>`.
    let complete = |words: &str| -> Vec<String> {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                r#"source "$1"; COMP_WORDS=({words}); COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 )); COMP_LINE="${{COMP_WORDS[*]}}"; COMP_POINT=${{#COMP_LINE}}; _tessera tessera "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"; printf '%s\n' "${{COMPREPLY[@]}}""#
            ))
            .arg("bash")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "completing {words}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    };
    let top = complete("tessera ke");
    assert!(top.contains(&"keygen".to_string()), "{top:?}");
    assert!(top.contains(&"kek".to_string()), "{top:?}");
    assert!(!top.contains(&"sign".to_string()), "{top:?}");
    let server = complete("tessera server --tls");
    assert!(server.contains(&"--tls-cert".to_string()), "{server:?}");
    assert!(server.contains(&"--tls-key".to_string()), "{server:?}");
}

#[test]
fn zsh_and_fish_completions_name_the_subcommands() {
    let zsh = ok(&tessera(&["completions", "zsh"]));
    assert!(zsh.starts_with("#compdef tessera"), "{zsh}");
    let fish = ok(&tessera(&["completions", "fish"]));
    assert!(fish.contains("complete -c tessera"), "{fish}");
    for (shell, script) in [("zsh", &zsh), ("fish", &fish)] {
        for command in COMMANDS {
            assert!(script.contains(command), "{shell}: no {command}");
        }
        // The server's options, with their help.
        assert!(script.contains("tls-cert"), "{shell}: no --tls-cert");
        // Hidden options stay out, as they do of --help.
        assert!(
            !script.contains("session-idle-timeout"),
            "{shell}: a hidden option"
        );
    }
    for (shell, script, check) in [("zsh", &zsh, "-n"), ("fish", &fish, "--no-execute")] {
        if installed(shell) {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("script");
            std::fs::write(&file, script).unwrap();
            let out = Command::new(shell).arg(check).arg(&file).output().unwrap();
            assert!(
                out.status.success(),
                "{shell} {check}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        } else {
            eprintln!("{shell} is not installed: its script's syntax was not checked");
        }
    }
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let out = tessera(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("tcsh"), "{err}");
    for shell in ["bash", "zsh", "fish"] {
        assert!(err.contains(shell), "{err}");
    }
    let out = tessera(&["completions"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn man_prints_the_main_page() {
    let page = ok(&tessera(&["man"]));
    assert!(
        page.lines().any(|l| l.starts_with(".TH tessera 1")),
        "{page}"
    );
    assert!(page.contains(".SH NAME"), "{page}");
    assert!(page.contains(".SH SUBCOMMANDS"), "{page}");
    for command in COMMANDS {
        assert!(
            page.contains(&format!("tessera\\-{command}(1)")),
            "{command}"
        );
    }
}

#[test]
fn man_dir_writes_a_page_per_command() {
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("man1");
    let out = tessera(&["man", "--dir", pages.to_str().unwrap()]);
    ok(&out);
    let mut written: Vec<String> = std::fs::read_dir(&pages)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    written.sort();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(&format!("wrote {} manual pages", written.len())),
        "{stderr} / {written:?}"
    );
    for name in [
        "tessera.1",
        "tessera-server.1",
        "tessera-keygen.1",
        "tessera-kek-rotate.1",
        "tessera-device-approve.1",
        "tessera-backup-restore.1",
        "tessera-completions.1",
    ] {
        assert!(written.contains(&name.to_string()), "{name} in {written:?}");
    }
    assert!(
        !written.iter().any(|n| n.contains("help")),
        "no page for `help`: {written:?}"
    );
    for name in &written {
        let page = std::fs::read_to_string(pages.join(name)).unwrap();
        assert!(page.starts_with('.'), "{name} starts with roff");
        let title = name.trim_end_matches(".1");
        assert!(
            page.lines()
                .any(|l| l.starts_with(&format!(".TH {title} 1"))),
            "{name} has no .TH {title}"
        );
    }
    let server = std::fs::read_to_string(pages.join("tessera-server.1")).unwrap();
    for flag in [
        "tls\\-cert",
        "database\\-url",
        "TESSERA_DATABASE_URL",
        "kek",
    ] {
        assert!(server.contains(flag), "tessera-server.1 lacks {flag}");
    }
    assert!(
        !server.contains("session\\-idle\\-timeout"),
        "a hidden option"
    );
    // Rendered as `man` would, when groff is here: no warnings, the options readable.
    if installed("groff") {
        let out = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(pages.join("tessera-server.1"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(
            out.stderr.is_empty(),
            "groff warns: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new("groff")
            .args(["-man", "-Tascii", "-P-c", "-P-b", "-P-u"])
            .arg(pages.join("tessera-server.1"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("--tls-cert"), "{text}");
    } else {
        eprintln!("groff is not installed: the page was not rendered");
    }
}

/// A systemd unit file: section → (key, value) in order, continuation lines joined.
fn parse_unit(text: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let mut sections: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut section = None;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.to_string());
            sections.entry(name.to_string()).or_default();
            continue;
        }
        let mut logical = line.to_string();
        while logical.ends_with('\\') {
            logical.pop();
            logical.push(' ');
            logical.push_str(lines.next().expect("a continued line").trim());
        }
        let (key, value) = logical
            .split_once('=')
            .unwrap_or_else(|| panic!("not key=value: {logical}"));
        let section = section.clone().expect("a key before any section");
        sections
            .get_mut(&section)
            .unwrap()
            .push((key.trim().to_string(), value.trim().to_string()));
    }
    sections
}

fn value<'a>(
    unit: &'a BTreeMap<String, Vec<(String, String)>>,
    section: &str,
    key: &str,
) -> &'a str {
    unit[section]
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key} in [{section}]"))
}

#[test]
fn the_systemd_unit_runs_the_server_sandboxed() {
    let text = std::fs::read_to_string(workspace_root().join("deploy/tessera.service")).unwrap();
    let unit = parse_unit(&text);
    for section in ["Unit", "Service", "Install"] {
        assert!(unit.contains_key(section), "no [{section}]");
    }
    let exec = value(&unit, "Service", "ExecStart");
    let words: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(words[0], "/usr/local/bin/tessera", "{exec}");
    assert_eq!(words[1], "server", "{exec}");
    assert!(
        exec.contains("--tls-cert") && exec.contains("--tls-key"),
        "{exec}"
    );
    assert!(exec.contains("--data-dir /var/lib/tessera"), "{exec}");
    assert_eq!(value(&unit, "Service", "StateDirectory"), "tessera");
    for (key, expected) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("CapabilityBoundingSet", ""),
        ("UMask", "0077"),
        ("KillSignal", "SIGTERM"),
    ] {
        assert_eq!(value(&unit, "Service", key), expected, "{key}");
    }
    // systemd waits longer than the server lets running sessions finish, then kills.
    let grace: u64 = words
        .iter()
        .position(|w| *w == "--shutdown-grace")
        .map_or(30, |i| words[i + 1].parse().unwrap());
    let stop: u64 = value(&unit, "Service", "TimeoutStopSec").parse().unwrap();
    assert!(
        stop > grace,
        "TimeoutStopSec={stop} ≤ --shutdown-grace {grace}"
    );

    // Every option the unit passes is one `tessera server` takes.
    let help = ok(&tessera(&["server", "--help"]));
    for flag in words.iter().filter(|w| w.starts_with("--")) {
        assert!(
            help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
            "tessera server has no {flag}"
        );
    }
    // And every variable of the example environment file is one it reads.
    let env = std::fs::read_to_string(workspace_root().join("deploy/tessera.env.example")).unwrap();
    for line in env.lines() {
        let Some((name, _)) = line.trim_start_matches('#').split_once('=') else {
            continue;
        };
        if name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            && name != "RUST_LOG"
        {
            assert!(help.contains(name), "tessera server does not read {name}");
        }
    }

    if !installed("systemd-analyze") {
        eprintln!("systemd-analyze is not installed: the unit was only parsed, not verified");
        return;
    }
    // `verify` checks that the executable exists and that Documentation= names a page `man`
    // finds: point ExecStart at the built binary and MANPATH at the pages it writes.
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("man");
    ok(&tessera(&[
        "man",
        "--dir",
        man.join("man1").to_str().unwrap(),
    ]));
    let copy = dir.path().join("tessera.service");
    std::fs::write(
        &copy,
        text.replace("/usr/local/bin/tessera", env!("CARGO_BIN_EXE_tessera")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .env("MANPATH", &man)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    // Unknown keys and bad values are only warnings (exit 0): none may name this unit.
    let about_unit: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("tessera.service"))
        .collect();
    assert!(
        about_unit.is_empty(),
        "systemd-analyze verify: {about_unit:?}"
    );
    // The sandbox as systemd scores it, 0 (confined) to 10: the unit scores 1.1 with systemd
    // 252; dropping a few of its options or the system call filter goes above 1.5.
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=15"])
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "exposure above 1.5: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}
