//! `tessera completions` and `tessera man`: the shell completion scripts and manual pages that a
//! package installs, generated from the same argument definitions as `--help`, so they never
//! describe another version of the command.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, ValueEnum};

use crate::failure::{CliResult, Failure};

#[derive(Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete `tessera` in.
    #[arg(value_enum)]
    shell: Shell,
}

/// The shells `tessera completions` writes a script for.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Shell {
    /// Bash: install as /usr/share/bash-completion/completions/tessera, or source it from ~/.bashrc.
    Bash,
    /// Zsh: install as _tessera in a directory of $fpath, e.g. /usr/share/zsh/vendor-completions.
    Zsh,
    /// Fish: install as tessera.fish in /usr/share/fish/vendor_completions.d or
    /// ~/.config/fish/completions.
    Fish,
}

#[derive(Args)]
pub(crate) struct ManArgs {
    /// Write one page per command into this directory (tessera.1, tessera-server.1,
    /// tessera-kek-rotate.1, …; created if missing) instead of printing the main page.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// Prints the completion script for `args.shell` on stdout.
pub(crate) fn completions(args: &CompletionsArgs) -> CliResult {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    // Into a buffer first: the generators panic when their writer fails (a closed pipe), and
    // a failed write must end in one line like every other error.
    let mut script = Vec::new();
    let mut command = without_hidden(&crate::Cli::command());
    clap_complete::generate(shell, &mut command, "tessera", &mut script);
    write_stdout(&script)
}

/// `command` and its subcommands without the hidden options and subcommands (test and benchmark
/// knobs, refused old flags): clap_complete offers hidden items too (clap issue #1335), while
/// --help and the manual pages leave them out. clap cannot remove an argument from a command,
/// so this builds the tree again with what completion uses: names, help, arguments, aliases.
fn without_hidden(command: &clap::Command) -> clap::Command {
    let mut copy = clap::Command::new(command.get_name().to_string())
        .args(
            command
                .get_arguments()
                .filter(|a| !a.is_hide_set())
                .cloned(),
        )
        .subcommands(
            command
                .get_subcommands()
                .filter(|c| !c.is_hide_set())
                .map(without_hidden),
        )
        .visible_aliases(command.get_visible_aliases().map(str::to_string));
    if let Some(about) = command.get_about() {
        copy = copy.about(about.clone());
    }
    if let Some(version) = command.get_version() {
        copy = copy.version(version.to_string());
    }
    copy
}

/// Prints the main manual page (roff) on stdout, or writes every command's page into `args.dir`.
pub(crate) fn man(args: &ManArgs) -> CliResult {
    match &args.dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(crate::Cli::command())
                .render(&mut page)
                .map_err(|e| Failure::Failed(format!("cannot render the manual page: {e}")))?;
            write_stdout(&page)
        }
        Some(dir) => write_pages(dir),
    }
}

fn write_pages(dir: &Path) -> CliResult {
    std::fs::create_dir_all(dir)
        .map_err(|e| Failure::Failed(format!("cannot create {}: {e}", dir.display())))?;
    clap_mangen::generate_to(crate::Cli::command(), dir).map_err(|e| {
        Failure::Failed(format!(
            "cannot write the manual pages into {}: {e}",
            dir.display()
        ))
    })?;
    let count = pages(&crate::Cli::command());
    // The pages go to the directory; this line is for the person running the command.
    eprintln!("wrote {count} manual pages into {}", dir.display());
    Ok(())
}

/// How many pages `clap_mangen::generate_to` writes for `command`: its own and one per visible
/// subcommand, recursively (no page for `help`).
fn pages(command: &clap::Command) -> usize {
    1 + command
        .get_subcommands()
        .filter(|c| !c.is_hide_set() && c.get_name() != "help")
        .map(pages)
        .sum::<usize>()
}

fn write_stdout(bytes: &[u8]) -> CliResult {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| Failure::Failed(format!("cannot write to stdout: {e}")))
}
