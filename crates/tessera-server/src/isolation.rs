//! Robust signing of structure wallets across requests (issue 15): finding the party that makes
//! signing runs fail when the engine names nobody.
//!
//! A party whose message fails a check, or whom the engine blames, is named by the run itself
//! and banned at once (`coordinator::run_sign`). A run whose final signature does not verify
//! names nobody: with three or more signers, no honest signer can tell which of the others sent
//! the bad share of the signature (`tessera_core::structure::isolation`). The server is then the
//! coordinator of that module's [`Isolation`], across the requester's retries:
//!
//! - every run of the request — the wallet, its epoch and the digest — from the first failure
//!   that named nobody on is recorded with its quorum and outcome (`db::sign_runs`), before the
//!   parties are told the run's end;
//! - each later `POST /sign` of the same request rebuilds the machine from those runs
//!   ([`Isolation::replay`]) and runs the quorum it chooses instead of the one asked for: a
//!   quorum of the requester, the server and devices online, not banned, that splits the
//!   suspects (the server is trusted: it never suspects itself);
//! - after each run the machine is rebuilt again; when one suspect is left, it is banned with
//!   the quorums as evidence (audited as `party.banned`, round 0), and the runs are forgotten;
//! - when no quorum can separate the suspects, or none avoids them, or the failures share no
//!   party, the request is refused (409) with the machine's reason, and nobody is banned.
//!
//! **Bound on retries.** Under the module's assumptions (one misbehaving party, misbehaving in
//! every run it joins), a request takes at most `s + 1` runs, `s` the devices of the first
//! quorum; `Isolation::max_tries` bounds it for any structure (at most 17). The SDK asks again
//! at most `tessera_client::parties::MAX_SIGN_RETRIES` (3) times, which covers a quorum of three
//! devices; the runs stay recorded for [`WINDOW_MS`], so asking again later goes on where the
//! last request stopped.
//!
//! Runs of two signers (the server and one device) need no retry: the device is the only
//! suspect, banned at the first failure.
//!
//! **What a ban rests on.** The requester is in every quorum of its request (its device runs
//! the request), so only a run that signs can clear it. A ban that the failures alone decide
//! needs only the module's assumptions 1 and 3; one that needed a run that signed (its reason
//! says "… signed") also rests on assumption 2, that the culprit misbehaves in every run it
//! joins: a requester that corrupts only its first run and behaves in the next can steer the
//! ban onto the co-signer it shared the first run with. Such a ban costs the honest device its
//! place in the wallet's signatures until another device approves lifting it and a resharing
//! does (`crate::bans`); it never reaches the key.

use std::collections::BTreeSet;

use tessera_core::PartyIndex;
use tessera_core::structure::{Ban, Evidence, Isolation, IsolationError, Outcome, WalletStructure};

use crate::clock::now_ms;
use crate::db::sign_runs::{self, Request, SignRun};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// How long the runs of a request count, in milliseconds.
pub const WINDOW_MS: i64 = 60 * 60 * 1000;

fn quorum(run: &SignRun) -> BTreeSet<PartyIndex> {
    run.quorum.iter().copied().map(PartyIndex::new).collect()
}

fn outcome(run: &SignRun) -> Outcome {
    if run.signed {
        Outcome::Signed
    } else {
        Outcome::Failed
    }
}

/// The machine rebuilt from `runs`, and the last ban they make.
fn rebuilt(
    structure: &WalletStructure,
    runs: &[SignRun],
    (online, banned, required): (&[PartyIndex], &[PartyIndex], &[PartyIndex]),
    server: PartyIndex,
) -> ApiResult<(Isolation, Option<Ban>)> {
    let mut machine = Isolation::new(structure, online, banned, required, &[server])
        .map_err(|e| ApiError::Internal(format!("isolation: {e}")))?;
    let mut ban = None;
    for run in runs {
        if let Some(b) = machine
            .replay(&quorum(run), outcome(run))
            .map_err(|e| ApiError::Internal(format!("isolation: {e}")))?
        {
            ban = Some(b);
        }
    }
    Ok((machine, ban))
}

/// The quorum to run for `request`, when runs of it failed naming nobody: `None` when none did
/// (or the request was signed and nothing is left to learn), and the caller chooses as usual.
///
/// # Errors
/// 409 when the isolation cannot go on (the suspects cannot be told apart and no quorum
/// avoids them; the failures share no party; no quorum is online); database errors.
pub async fn next_quorum(
    tx: &mut crate::db::WriteTx,
    structure: &WalletStructure,
    request: Request<'_>,
    banned: &[PartyIndex],
    (requester, server): (PartyIndex, PartyIndex),
) -> ApiResult<Option<Vec<u8>>> {
    let runs = sign_runs::of_request(&mut **tx, request, now_ms() - WINDOW_MS).await?;
    if runs.is_empty() {
        return Ok(None);
    }
    let mut online = crate::db::wallet_changes::online_parties(
        &mut **tx,
        request.wallet_id,
        crate::clock::now(),
    )
    .await?;
    online.extend([requester, server]);
    let (mut machine, _) = rebuilt(
        structure,
        &runs,
        (&online, banned, &[requester, server]),
        server,
    )?;
    match machine.next_quorum() {
        Ok(q) => Ok(q.map(|q| q.into_iter().map(PartyIndex::get).collect())),
        Err(e @ (IsolationError::Inseparable { .. } | IsolationError::Inconclusive)) => {
            Err(ApiError::Conflict(format!(
                "earlier runs of this request failed without naming a party: {e}"
            )))
        }
        Err(e) => Err(ApiError::Conflict(format!(
            "earlier runs of this request failed without naming a party, and the server is \
             finding which one: {e} (start the other devices' agents, `tessera listen`)"
        ))),
    }
}

/// Records run `session_id` of `request` (by `quorum`) when it failed naming nobody or when
/// runs of the request did before; returns the device party to ban once the runs pin one, with
/// the reason to record, and then forgets the runs.
///
/// # Errors
/// Database errors.
pub async fn after_run(
    state: &AppState,
    structure: &WalletStructure,
    (session_id, request): (&str, Request<'_>),
    quorum: &[u8],
    signed: bool,
) -> ApiResult<Option<(PartyIndex, String)>> {
    let since = now_ms() - WINDOW_MS;
    let mut runs = sign_runs::of_request(state.db(), request, since).await?;
    if signed && runs.is_empty() {
        return Ok(None);
    }
    let run = SignRun {
        quorum: quorum.to_vec(),
        signed,
    };
    sign_runs::insert(state.db(), session_id, request, &run, now_ms()).await?;
    runs.push(run);
    let server = structure
        .party("server")
        .ok_or_else(|| ApiError::Internal("a structure wallet without the server".into()))?;
    let all: Vec<PartyIndex> = structure.parties().collect();
    let (_, ban) = rebuilt(structure, &runs, (&all, &[], &[]), server)?;
    let Some(ban) = ban else { return Ok(None) };
    sign_runs::forget(state.db(), request).await?;
    let names = |qs: &[BTreeSet<PartyIndex>]| {
        qs.iter()
            .map(|q| {
                q.iter()
                    .filter_map(|&p| structure.label(p))
                    .collect::<Vec<_>>()
                    .join(" + ")
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let why = match &ban.evidence {
        Evidence::Isolated { failed, succeeded } => format!(
            "isolated: the signatures of {} failed naming nobody{}; it is the one party they \
             share",
            names(failed),
            if succeeded.is_empty() {
                String::new()
            } else {
                format!(", that of {} signed", names(succeeded))
            }
        ),
        Evidence::Named => "named by the engine".to_owned(),
    };
    Ok(Some((ban.party, why)))
}
