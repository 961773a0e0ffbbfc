//! `tessera plan`: recommends where shares and backups live, and shows which losses and which
//! compromises a set-up (or any access structure) survives. Everything is computed by
//! `tessera_backup::planner`; this module only gathers answers and prints, and [`commands`]
//! spells the plan's setup steps as the command lines to type.

mod commands;

use std::io::IsTerminal;
use std::path::PathBuf;

use tessera_backup::planner::{self, Answers, Formula, LossTable, Plan};
use tessera_backup::structure::AccessStructure;

use crate::failure::Failure;

/// How many sets a line of the table lists before eliding the rest.
const LISTED_SETS: usize = 6;

const ANSWER_FLAGS: &str = "--devices N [--server | --no-server] [--usb N] [--cloud] \
                            [--institutional] [--offline-recovery] [--escape-hatch]";

/// Arguments of `tessera plan`.
#[derive(clap::Args)]
pub(crate) struct PlanArgs {
    /// Show the loss and compromise table of this access structure, e.g.
    /// 'threshold(2, device, usb-1, cloud)', instead of recommending a set-up.
    #[arg(long, value_name = "TEXT", conflicts_with_all = [
        "answers", "devices", "server", "no_server", "usb", "cloud", "institutional",
        "offline_recovery", "escape_hatch",
    ])]
    structure: Option<String>,
    /// Read the answers from a JSON file: {"own_devices": 2, "cosigning_server": true,
    /// "usb_drives": 1, "cloud_folder": true, "institutional": false, "offline_recovery": false}.
    #[arg(long, value_name = "FILE.json", conflicts_with_all = [
        "devices", "server", "no_server", "usb", "cloud", "institutional", "offline_recovery",
        "escape_hatch",
    ])]
    answers: Option<PathBuf>,
    /// Devices you (or your institution's officers) can keep a share on: 1 to 5.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=5))]
    devices: Option<u8>,
    /// A co-signing server holds a share.
    #[arg(long, conflicts_with = "no_server")]
    server: bool,
    /// No co-signing server (the default).
    #[arg(long)]
    no_server: bool,
    /// USB drives available for backup keys: 0 to 3.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=3))]
    usb: Option<u8>,
    /// A cloud folder is available for a backup key.
    #[arg(long)]
    cloud: bool,
    /// The wallet belongs to an institution (officers' devices, an offline vault).
    #[arg(long)]
    institutional: bool,
    /// Recovery must work offline: prefer USB drives and printed codes over the cloud.
    #[arg(long)]
    offline_recovery: bool,
    /// With the server: also back up the server's share to your holders (more of them than the
    /// device share's backup needs), a way to the funds should the server disappear; those
    /// holders together then rebuild the key without the server, outside every policy.
    #[arg(long, requires = "server")]
    escape_hatch: bool,
    /// Print JSON for scripts instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs `tessera plan`.
pub(crate) fn run(args: &PlanArgs) -> Result<(), Failure> {
    if let Some(text) = &args.structure {
        return analyse_structure(text, args.json);
    }
    let answers = answers(args)?;
    let plan = planner::recommend(&answers).map_err(|e| Failure::Usage(e.to_string()))?;
    let table = plan
        .loss_table()
        .map_err(|e| Failure::Failed(e.to_string()))?;
    if args.json {
        let plan = commands::plan_json(&plan)
            .map_err(|e| Failure::Failed(format!("cannot encode JSON: {e}")))?;
        let out = serde_json::json!({ "answers": answers, "plan": plan, "loss_table": table });
        return print_json(&out);
    }
    print!("{}", render_plan(&plan, &table));
    Ok(())
}

fn analyse_structure(text: &str, json: bool) -> Result<(), Failure> {
    let structure = AccessStructure::parse(text)
        .map_err(|e| Failure::Usage(format!("invalid structure: {e}")))?;
    let table = planner::loss_table(&Formula::from(&structure))
        .map_err(|e| Failure::Usage(e.to_string()))?;
    let warnings = table.warnings();
    if json {
        let out = serde_json::json!({
            "structure": structure.to_string(),
            "loss_table": table,
            "warnings": warnings,
        });
        return print_json(&out);
    }
    print!("{}", render_table(&table));
    print!("{}", render_warnings(&warnings));
    Ok(())
}

fn print_json(value: &serde_json::Value) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::Failed(format!("cannot encode JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

/// The answers from the file, the flags, or the terminal, in that order.
fn answers(args: &PlanArgs) -> Result<Answers, Failure> {
    if let Some(path) = &args.answers {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", path.display())))?;
        let answers: Answers = serde_json::from_str(&text)
            .map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
        answers
            .validate()
            .map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
        return Ok(answers);
    }
    let any_flag = args.devices.is_some()
        || args.server
        || args.no_server
        || args.usb.is_some()
        || args.cloud
        || args.institutional
        || args.offline_recovery
        || args.escape_hatch;
    if any_flag {
        let Some(own_devices) = args.devices else {
            return Err(Failure::Usage(format!(
                "--devices N is needed with the other answer flags ({ANSWER_FLAGS})"
            )));
        };
        return Ok(Answers {
            own_devices,
            cosigning_server: args.server,
            usb_drives: args.usb.unwrap_or(0),
            cloud_folder: args.cloud,
            institutional: args.institutional,
            offline_recovery: args.offline_recovery,
            escape_hatch: args.escape_hatch,
        });
    }
    if !std::io::stdin().is_terminal() {
        return Err(Failure::Usage(format!(
            "no answers and no terminal to ask them on: give --answers FILE.json, or the flags \
             {ANSWER_FLAGS}, or --structure TEXT"
        )));
    }
    ask().map_err(|e| Failure::Failed(format!("cannot ask the questions: {e}")))
}

fn ask() -> Result<Answers, dialoguer::Error> {
    use dialoguer::{Confirm, Input};
    let institutional = Confirm::new()
        .with_prompt("Is the wallet an institution's (officers, an offline vault)?")
        .default(false)
        .interact()?;
    let own_devices: u8 = Input::new()
        .with_prompt(if institutional {
            "How many officers' devices will hold a share (1-5)?"
        } else {
            "How many of your devices (phone, laptop, tablet) can hold a share (1-5)?"
        })
        .default(1)
        .validate_with(|n: &u8| {
            if (1..=5).contains(n) {
                Ok(())
            } else {
                Err("enter a number from 1 to 5")
            }
        })
        .interact_text()?;
    let cosigning_server = Confirm::new()
        .with_prompt("Will a co-signing server hold a share?")
        .default(true)
        .interact()?;
    let usb_drives: u8 = Input::new()
        .with_prompt("How many USB drives can keep a backup key (0-3)?")
        .default(1)
        .validate_with(|n: &u8| {
            if *n <= 3 {
                Ok(())
            } else {
                Err("enter a number from 0 to 3")
            }
        })
        .interact_text()?;
    let cloud_folder = Confirm::new()
        .with_prompt("Can a cloud folder keep a backup key?")
        .default(true)
        .interact()?;
    let offline_recovery = Confirm::new()
        .with_prompt("Must recovery work offline (USB drives and printed codes, not the cloud)?")
        .default(false)
        .interact()?;
    Ok(Answers {
        own_devices,
        cosigning_server,
        usb_drives,
        cloud_folder,
        institutional,
        offline_recovery,
        // Never by default, and not asked: only `--escape-hatch` or the answer file.
        escape_hatch: false,
    })
}

fn join_set(set: &[String]) -> String {
    set.join("+")
}

/// At most [`LISTED_SETS`] sets, then how many more.
fn list_sets(sets: &[Vec<String>]) -> String {
    let mut out: Vec<String> = sets.iter().take(LISTED_SETS).map(|s| join_set(s)).collect();
    if sets.len() > LISTED_SETS {
        out.push(format!("... {} more", sets.len() - LISTED_SETS));
    }
    out.join(", ")
}

fn render_table(table: &LossTable) -> String {
    let mut out = format!("Loss tolerance of {}:\n", table.formula);
    if !table.reachable {
        out.push_str("  the funds are not reachable even with every item present\n");
        return out;
    }
    out.push_str("  lost items  survivable\n");
    // Rows until the first size at which no loss is survivable: larger ones add nothing.
    for row in &table.rows {
        let mut line = format!(
            "  any {:<7} {} of {}",
            row.lost, row.survivable, row.subsets
        );
        if !row.minimal_fatal.is_empty() {
            line = format!("{line:<24}   (fatal: {})", list_sets(&row.minimal_fatal));
        }
        out.push_str(&line);
        out.push('\n');
        if row.survivable == 0 {
            break;
        }
    }
    let spof = if table.single_points_of_failure.is_empty() {
        "none".to_owned()
    } else {
        table.single_points_of_failure.join(", ")
    };
    out.push_str(&format!("Single points of failure: {spof}\n"));
    let smallest = table.compromise_threshold();
    let smallest_sets: Vec<Vec<String>> = table
        .minimal_compromise_sets
        .iter()
        .filter(|s| s.len() == smallest)
        .cloned()
        .collect();
    if table.fatal_single_compromises.is_empty() {
        out.push_str(&format!(
            "Single compromise that is fatal: none  (smallest sets that reach the key: {})\n",
            list_sets(&smallest_sets)
        ));
    } else {
        out.push_str(&format!(
            "Single compromise that is fatal: {}\n",
            table.fatal_single_compromises.join(", ")
        ));
    }
    out
}

fn render_warnings(warnings: &[String]) -> String {
    if warnings.is_empty() {
        return String::new();
    }
    let mut out = String::from("Warnings:\n");
    for w in warnings {
        out.push_str(&format!("  - {w}\n"));
    }
    out
}

fn render_plan(plan: &Plan, table: &LossTable) -> String {
    let mut out = match &plan.structure {
        Some(_) => format!(
            "Recommended set-up: {} (the server and any {} sign)\n",
            plan.topology,
            if plan.topology.starts_with("institutional") {
                "two officers"
            } else {
                "one device"
            }
        ),
        None => format!(
            "Recommended set-up: {} (any {} of the {} shares sign)\n",
            plan.topology, plan.t, plan.n
        ),
    };
    // Holders that alone reach the key are said before anything else.
    if !plan.holder_only_compromises.is_empty()
        && let Some(first) = plan.warnings.first()
    {
        out.push_str(&format!("WARNING: {first}\n"));
    }
    out.push_str("\nShares:\n");
    let width = plan.shares.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for share in &plan.shares {
        let held = format!("on {} ({})", share.held_by, share.held_by_kind.describe());
        let backup = share.backup.as_ref().map_or_else(
            || "not backed up".to_owned(),
            |b| format!("backup opened by {b}"),
        );
        out.push_str(&format!("  {:<width$}  {held}; {backup}\n", share.name));
    }
    if !plan.holders.is_empty() {
        out.push_str("\nBackup holders:\n");
        let width = plan
            .holders
            .iter()
            .map(|h| h.label.len())
            .max()
            .unwrap_or(0);
        for h in &plan.holders {
            out.push_str(&format!("  {:<width$}  {}\n", h.label, h.kind.describe()));
        }
    }
    let commands = commands::commands(plan);
    if !commands.is_empty() {
        out.push_str(&format!(
            "\nCommands (replace {} with the wallet's name):\n",
            commands::WALLET_PLACEHOLDER
        ));
        for c in &commands {
            match &c.note {
                Some(note) => out.push_str(&format!("  # on {}: {note}\n", c.run_on)),
                None => out.push_str(&format!("  # on {}\n", c.run_on)),
            }
            out.push_str(&format!("  {}\n", c.command));
        }
    }
    out.push_str(&format!(
        "\nThe funds are reachable while {} holds over the items you still have.\n\n",
        plan.recovery
    ));
    out.push_str(&render_table(table));
    out.push_str(&render_warnings(&plan.warnings));
    if !plan.advice.is_empty() {
        out.push_str("Also:\n");
        for a in &plan.advice {
            out.push_str(&format!("  - {a}\n"));
        }
    }
    out
}
