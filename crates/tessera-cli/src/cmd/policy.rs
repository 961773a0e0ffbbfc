//! `tessera policy show | set | proposals | sign`: a wallet's signing policy on the server, and
//! changes of a policy that names an admin quorum (issue 16): proposed by one admin, applied once
//! the quorum has signed the same version.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use tessera_api as api;
use tessera_api::proposals::{PolicyOutcome, ProposalInfo};

use crate::cmd::approvals::print_held;
use crate::cmd::peer::{ask, yes};
use crate::failure::{CliResult, Failure};
use crate::output::{Format, print_json};
use crate::unlock;

#[derive(Subcommand)]
pub(crate) enum PolicyCommand {
    /// Show a wallet's policy, its version and its admin quorum.
    Show {
        /// The wallet.
        #[arg(long)]
        wallet: String,
    },
    /// Set a wallet's policy from a JSON file (`-` for stdin), signed by this device. When the
    /// policy in force names an admin quorum, this proposes the version (or signs the same
    /// proposal); it applies once the quorum has signed it.
    Set {
        /// The wallet.
        #[arg(long)]
        wallet: String,
        /// The policy, JSON: allowed_kinds, chain_ids, destinations, max_value_per_tx,
        /// max_value_per_24h, max_fee_per_tx, tokens (address, standard, symbol, decimals,
        /// max_amount_per_tx, max_amount_per_24h, allowed_spenders), allow_unlimited_approvals,
        /// arbitrary_calls, verifying_contracts, btc_destinations, max_sat_per_tx,
        /// max_sat_per_24h, max_fee_sat, allowed_delegates, max_signatures_per_hour, hours_utc,
        /// require_approval, approval_timeout_secs, approvals, admins (an approval rule:
        /// {"structure": "and(a, b)", "approvers": {"a": {"device": ID}, "b": {"user": ID}}}),
        /// request_expiry_secs.
        #[arg(long)]
        file: PathBuf,
    },
    /// List the policy proposals waiting for admin signatures.
    Proposals {
        /// Only this wallet's (its name, or its id for a wallet this device administers
        /// without a share).
        #[arg(long)]
        wallet: Option<String>,
        #[command(flatten)]
        format: Format,
    },
    /// Sign a policy proposal as one of its admins, after seeing what it changes.
    Sign {
        /// The proposal's id (`tessera policy proposals`).
        id: String,
        /// Sign without asking (needed when stdin is not a terminal).
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        format: Format,
    },
}

/// `tessera policy …`.
pub(crate) async fn run(home: &Path, command: PolicyCommand) -> CliResult {
    match command {
        PolicyCommand::Show { wallet } => show(home, &wallet).await,
        PolicyCommand::Set { wallet, file } => set(home, &wallet, &file).await,
        PolicyCommand::Proposals { wallet, format } => {
            proposals(home, wallet.as_deref(), format).await
        }
        PolicyCommand::Sign { id, yes, format } => sign(home, &id, yes, format).await,
    }
}

fn admins_line(policy: &api::Policy) -> String {
    match &policy.admins {
        None => "none (any active device of the owner changes it)".into(),
        Some(rule) => {
            let who: Vec<String> = rule
                .approvers
                .iter()
                .map(|(label, a)| match a {
                    api::requests::Approver::Device(d) => format!("{label} = device {d}"),
                    api::requests::Approver::User(u) => format!("{label} = user {u}"),
                })
                .collect();
            format!("{}  ({})", rule.structure, who.join(", "))
        }
    }
}

async fn show(home: &Path, wallet: &str) -> CliResult {
    let online = unlock::connect(home).await?;
    let view = online.policy_view(wallet).await?;
    let info = view.info;
    println!(
        "policy of {wallet}: version {}{}",
        info.version,
        info.set_by
            .map(|d| format!(", set by device {d} at {}", info.set_at.unwrap_or_default()))
            .unwrap_or_else(|| " (the default of a new wallet)".into())
    );
    println!("admins         {}", admins_line(&info.policy));
    if let Some(warning) = &view.warning {
        println!("warning        {warning}");
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&info.policy).map_err(Failure::failed)?
    );
    Ok(())
}

async fn set(home: &Path, wallet: &str, file: &Path) -> CliResult {
    let text = if file == Path::new("-") {
        let mut t = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut t)
            .map_err(|e| Failure::Usage(format!("cannot read the policy: {e}")))?;
        t
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", file.display())))?
    };
    let policy: api::Policy = serde_json::from_str(&text)
        .map_err(|e| Failure::Usage(format!("the policy is not valid: {e}")))?;
    let online = unlock::connect(home).await?;
    match online.propose_policy(wallet, &policy).await? {
        PolicyOutcome::Applied(info) => {
            println!("policy of {wallet} is now version {}", info.version);
        }
        PolicyOutcome::Held(action) => {
            print_held(&action);
            println!(
                "next           the current policy requires approval and this change weakens it: once another active device approves it (tessera approvals approve {}), it applies; after a time lock, run this same command again",
                action.id
            );
        }
        PolicyOutcome::Proposed(proposal) => {
            println!(
                "policy version {} of {wallet} is proposed; the current version still applies",
                proposal.version
            );
            print_proposal(&proposal);
            println!(
                "next           on the other admin devices: tessera policy sign {}",
                proposal.id
            );
        }
    }
    Ok(())
}

fn print_proposal(p: &ProposalInfo) {
    println!("proposal       {}", p.id);
    println!("wallet         {}", p.wallet_id);
    println!("version        {}", p.version);
    println!("state          {}", p.state);
    println!("proposed by    {} at {}", p.proposed_by, p.created_at);
    if !p.weakens.is_empty() {
        println!("weakens        {}", p.weakens.join(", "));
    }
    for s in &p.signers {
        println!(
            "signed by      {} ({}) at {}",
            s.device_id,
            s.labels.join(", "),
            s.at
        );
    }
    println!("waits for: {}", p.waiting_for);
}

async fn proposals(home: &Path, wallet: Option<&str>, format: Format) -> CliResult {
    let online = unlock::connect(home).await?;
    let list = online.policy_proposals(wallet, None).await?;
    if format.json {
        return print_json(&list);
    }
    if list.is_empty() {
        println!("no policy proposals waiting");
    }
    for (i, p) in list.iter().enumerate() {
        if i > 0 {
            println!();
        }
        print_proposal(p);
    }
    Ok(())
}

/// The rules that differ between `old` and `new`, one line each.
fn diff(old: &api::Policy, new: &api::Policy) -> Result<Vec<String>, Failure> {
    let as_map = |p: &api::Policy| match serde_json::to_value(p) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err(Failure::Failed("a policy is not a JSON object".into())),
        Err(e) => Err(Failure::failed(e)),
    };
    let (old, new) = (as_map(old)?, as_map(new)?);
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    let show =
        |v: Option<&serde_json::Value>| v.map_or_else(|| "(absent)".into(), |v| v.to_string());
    Ok(keys
        .into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| format!("  {k}: {} -> {}", show(old.get(k)), show(new.get(k))))
        .collect())
}

async fn sign(home: &Path, id: &str, assume_yes: bool, format: Format) -> CliResult {
    use std::io::IsTerminal;
    let online = unlock::connect(home).await?;
    let proposal = online.policy_proposal(id).await?;
    if !format.json {
        print_proposal(&proposal);
    }
    // The policy in force, to show what changes: readable by the owner's devices (an admin of
    // another user sees the whole proposed policy instead).
    let current = online.policy_view(proposal.wallet_id.as_str()).await.ok();
    let lines = match &current {
        Some(view) if view.info.version + 1 == proposal.version => {
            Some(diff(&view.info.policy, &proposal.policy)?)
        }
        _ => None,
    };
    if !format.json {
        match &lines {
            Some(lines) => {
                println!("changes from version {}:", proposal.version - 1);
                for l in lines {
                    println!("{l}");
                }
            }
            None => println!(
                "proposed policy:\n{}",
                serde_json::to_string_pretty(&proposal.policy).map_err(Failure::failed)?
            ),
        }
    }
    if !assume_yes {
        if !std::io::stdin().is_terminal() {
            return Err(Failure::Usage(
                "stdin is not a terminal: pass --yes to sign the proposal shown".into(),
            ));
        }
        if !yes(ask(&format!(
            "Sign policy version {} of wallet {}? [y/N]:",
            proposal.version, proposal.wallet_id
        ))) {
            return Err(Failure::Failed("not signed".into()));
        }
    }
    let after = online.sign_policy_proposal(&proposal).await?;
    if format.json {
        return print_json(&after);
    }
    match after.state {
        api::proposals::ProposalState::Applied => println!(
            "signed: policy version {} of wallet {} applies now",
            after.version, after.wallet_id
        ),
        _ => println!(
            "signed: policy version {} still waits for: {}",
            after.version, after.waiting_for
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_diff_names_each_changed_rule() {
        let old = api::Policy::default();
        let mut new = old.clone();
        new.require_approval = true;
        new.max_sat_per_tx = Some(5);
        let Ok(lines) = diff(&old, &new) else {
            panic!("no diff")
        };
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].starts_with("  max_sat_per_tx: (absent) -> 5"),
            "{lines:?}"
        );
        assert!(
            lines[1].starts_with("  require_approval: false -> true"),
            "{lines:?}"
        );
        assert!(diff(&old, &old).is_ok_and(|l| l.is_empty()));
    }
}
