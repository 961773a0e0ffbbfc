//! `tessera plan` (being written).

/// Arguments of `tessera plan`.
#[derive(clap::Args)]
pub(crate) struct PlanArgs {}

/// Runs `tessera plan`.
pub(crate) fn run(_args: &PlanArgs) -> Result<(), crate::Failure> {
    Ok(())
}
