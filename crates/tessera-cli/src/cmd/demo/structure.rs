//! `tessera demo --in-process --structure TEXT`: a wallet under an access structure, all
//! parties in this process (issue #14): key generation under the structure, a signature by every
//! minimal authorised quorum (each verified), the refusal of every maximal unauthorised set with
//! the library's explanation, then a reshare to another structure ([`reshare_step`]).

use std::io::IsTerminal;
use std::time::Instant;

use tessera_core::ecdsa::eip191_digest;
use tessera_core::protocols::{SignRequest, SignSession, StructureKeygenSession, fresh_nonce};
use tessera_core::runner::{self, Delivery, RunStats};
use tessera_core::structure::WalletStructure;
use tessera_core::{DerivationPath, KeyShare, PartyIndex, PublicKey, Signature, WalletId};

use crate::failure::{CliResult, Failure};
use crate::output;
use crate::progress::Progress;

/// At most this many minimal quorums sign (a 16-party structure may have thousands).
const MAX_QUORUMS: usize = 32;

/// The reshare of the demo: from this quorum of the old structure...
const RESHARE_FROM: [&str; 2] = ["server", "phone"];
/// ...to this structure (`tablet` added, `laptop` removed)...
const RESHARE_TO: &str = "and(server, or(phone, tablet))";
/// ...after which these sign with their new shares...
const RESHARE_SIGNERS: [&str; 2] = ["server", "tablet"];
/// ...and this party's old share is refused.
const RESHARE_REMOVED: &str = "laptop";

/// One quorum's signature.
struct QuorumSignature {
    labels: Vec<String>,
    signature: Signature,
}

/// What the reshare step did.
enum ReshareOutcome {
    /// The demo's reshare does not apply to this structure.
    Skipped(String),
    /// Reshared, signed with the new shares and refused the removed party's old share.
    Done {
        signed: QuorumSignature,
        old_share_refused: String,
    },
}

pub(super) fn run(text: &str, message: &str, path: &str, format: output::Format) -> CliResult {
    let structure = WalletStructure::parse(text).map_err(Failure::usage)?;
    let path: DerivationPath = path.parse().map_err(Failure::usage)?;
    let mut progress = Progress::new(std::io::stderr().is_terminal());

    // 1. Key generation under the structure, all parties in this process.
    let wallet = WalletId::random();
    let nonce = fresh_nonce();
    let sessions = structure
        .parties()
        .map(|p| StructureKeygenSession::new(wallet, &structure, p, &nonce))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Failure::usage)?;
    let step = progress.step(&format!("key generation, {structure}"), 4);
    let started = Instant::now();
    let (mut shares, keygen_stats) = runner::run_with(
        sessions,
        |_| Delivery::Deliver,
        |round, total| step.round(round, total),
    )
    .map_err(Failure::failed)?;
    step.finish(started.elapsed());
    shares.sort_by_key(KeyShare::party);
    let root = shares[0].public_key();
    let key = shares[0].public_key_at(&path).map_err(Failure::failed)?;
    let digest = eip191_digest(message.as_bytes());

    // 2. Every minimal authorised quorum signs; each signature is verified.
    // In party order: `server + phone` before `server + laptop`.
    let mut quorums = structure.minimal_quorums();
    quorums.sort();
    let mut signed = Vec::new();
    let mut sign_bytes = 0;
    for quorum in quorums.iter().take(MAX_QUORUMS) {
        let signers: Vec<&KeyShare> = quorum.iter().map(|p| share_of(&shares, *p)).collect();
        let (signature, stats) = sign_quorum(&mut progress, &structure, &signers, digest, &path)?;
        key.verify(&digest, &signature).map_err(Failure::failed)?;
        sign_bytes = sign_bytes.max(stats.max_bytes_per_party());
        signed.push(QuorumSignature {
            labels: labels(&structure, quorum.iter().copied()),
            signature,
        });
    }

    // 3. Every maximal unauthorised set is refused before any message, saying what it lacks.
    let mut refused = Vec::new();
    for set in structure.maximal_unauthorised_sets() {
        let members: Vec<PartyIndex> = set.iter().copied().collect();
        let request = SignRequest {
            nonce: fresh_nonce(),
            signers: members.clone(),
            digest,
            path: path.clone(),
        };
        let why = match SignSession::new(share_of(&shares, members[0]), &request) {
            Err(e) => e.to_string(),
            Ok(_) => {
                return Err(Failure::Failed(format!(
                    "the unauthorised set {} was accepted",
                    labels(&structure, members.iter().copied()).join(" + ")
                )));
            }
        };
        refused.push((labels(&structure, members.iter().copied()), why));
    }

    // 4. The reshare.
    let reshare = reshare_step(&mut progress, &structure, &shares, &key, digest, &path)?;

    if format.json {
        return output::print_json(&serde_json::json!({
            "wallet_id": wallet.to_string(),
            "structure": structure.to_string(),
            "parties": structure.labels(),
            "root_public_key": root.to_string(),
            "path": path.to_string(),
            "public_key": key.to_string(),
            "eth_address": key.eth_address(),
            "message": message,
            "digest": hex::encode(digest),
            "minimal_quorums": quorums.len(),
            "signatures": signed.iter().map(signature_json).collect::<Vec<_>>(),
            "refused": refused
                .iter()
                .map(|(set, why)| serde_json::json!({ "signers": set, "error": why }))
                .collect::<Vec<_>>(),
            "reshare": match &reshare {
                ReshareOutcome::Skipped(why) => {
                    serde_json::json!({ "status": "skipped", "reason": why })
                }
                ReshareOutcome::Done { signed, old_share_refused } => serde_json::json!({
                    "status": "done",
                    "from": RESHARE_FROM,
                    "structure": RESHARE_TO,
                    "signature": signature_json(signed),
                    "old_share_refused": { "party": RESHARE_REMOVED, "error": old_share_refused },
                }),
            },
            "traffic_bytes_per_party": {
                "keygen": keygen_stats.max_bytes_per_party(),
                "sign": sign_bytes,
            },
            "verified": true,
        }));
    }
    println!("wallet         {wallet}");
    println!(
        "structure      {structure} ({} parties: {})",
        structure.party_count(),
        structure.labels().join(", ")
    );
    if !path.is_root() {
        println!("root key       {root}");
    }
    println!("path           {path}");
    println!("public key     {key}");
    println!("eth address    {}", key.eth_address());
    println!("message        {message:?}");
    println!(
        "digest         {} (EIP-191 personal_sign)",
        hex::encode(digest)
    );
    for s in &signed {
        print_signature(s, "");
    }
    if quorums.len() > signed.len() {
        println!(
            "               ({} of {} minimal quorums signed; the demo stops there)",
            signed.len(),
            quorums.len()
        );
    }
    for (set, why) in &refused {
        println!("refused        {}: {why}", set.join(" + "));
    }
    match &reshare {
        ReshareOutcome::Skipped(why) => println!("reshare        skipped: {why}"),
        ReshareOutcome::Done {
            signed,
            old_share_refused,
        } => {
            println!(
                "reshare        {} to {RESHARE_TO}: same public key",
                RESHARE_FROM.join(" + ")
            );
            print_signature(signed, " (new shares)");
            println!("refused        {RESHARE_REMOVED}'s old share: {old_share_refused}");
        }
    }
    println!(
        "traffic        keygen {} KB, signing {} KB per party",
        keygen_stats.max_bytes_per_party() / 1000,
        sign_bytes / 1000
    );
    println!("verified       yes (k256, every signature, under the public key above)");
    Ok(())
}

/// The demo's reshare (issue #14, item 7): the quorum `server` + `phone` reshares the wallet to
/// `and(server, or(phone, tablet))` (adds `tablet`, removes `laptop`); the key must not change;
/// `server` + `tablet` sign with their new shares (verified); `laptop`'s old share, with the
/// new `server` share, is refused. Applies to structures with `server`, `phone` and `laptop` in
/// which `server` + `phone` is a minimal quorum, as `and(server, or(phone, laptop))`.
fn reshare_step(
    progress: &mut Progress,
    structure: &WalletStructure,
    shares: &[KeyShare],
    key: &PublicKey,
    digest: [u8; 32],
    path: &DerivationPath,
) -> Result<ReshareOutcome, Failure> {
    let party = |label: &str| structure.party(label);
    let (Some(server), Some(phone), Some(removed)) =
        (party("server"), party("phone"), party(RESHARE_REMOVED))
    else {
        return Ok(ReshareOutcome::Skipped(format!(
            "the demo reshares wallets with `server`, `phone` and `{RESHARE_REMOVED}`"
        )));
    };
    if structure.check_quorum(&[server, phone]).is_err() {
        return Ok(ReshareOutcome::Skipped(format!(
            "{} is not a minimal quorum of {structure}",
            RESHARE_FROM.join(" + ")
        )));
    }
    let quorum_shares: Vec<&KeyShare> = [server, phone]
        .iter()
        .map(|&p| share_of(shares, p))
        .collect();
    let new_structure = WalletStructure::parse(RESHARE_TO).map_err(Failure::failed)?;

    let new_shares = runner::reshare(&quorum_shares, &new_structure).map_err(Failure::failed)?;

    if new_shares
        .iter()
        .any(|s| s.public_key() != quorum_shares[0].public_key())
    {
        return Err(Failure::Failed("the reshare changed the wallet key".into()));
    }
    let new_party = |label: &str| {
        new_structure
            .party(label)
            .and_then(|p| new_shares.iter().find(|s| s.party() == p))
            .ok_or_else(|| Failure::Failed(format!("the reshare gave `{label}` no share")))
    };
    let signers = RESHARE_SIGNERS
        .iter()
        .map(|l| new_party(l))
        .collect::<Result<Vec<_>, _>>()?;
    let (signature, _) = sign_quorum(progress, &new_structure, &signers, digest, path)?;
    key.verify(&digest, &signature).map_err(Failure::failed)?;

    // The removed party's old share with the new server share: they are no longer one wallet.
    let new_server = new_party("server")?;
    let request = SignRequest {
        nonce: fresh_nonce(),
        signers: vec![new_server.party(), removed],
        digest,
        path: path.clone(),
    };
    let old_share_refused = match (
        SignSession::new(new_server, &request),
        SignSession::new(share_of(shares, removed), &request),
    ) {
        (Ok(a), Ok(b)) => match runner::run(vec![a, b]) {
            Ok(_) => {
                return Err(Failure::Failed(format!(
                    "{RESHARE_REMOVED}'s old share signed after the reshare"
                )));
            }
            Err(e) => e.to_string(),
        },
        (Err(e), _) | (_, Err(e)) => e.to_string(),
    };
    Ok(ReshareOutcome::Done {
        signed: QuorumSignature {
            labels: RESHARE_SIGNERS.iter().map(|l| (*l).to_string()).collect(),
            signature,
        },
        old_share_refused,
    })
}

/// `shares` is every party's, in party order.
fn share_of(shares: &[KeyShare], party: PartyIndex) -> &KeyShare {
    &shares[usize::from(party.get())]
}

fn labels(structure: &WalletStructure, parties: impl Iterator<Item = PartyIndex>) -> Vec<String> {
    parties
        .filter_map(|p| structure.label(p).map(str::to_string))
        .collect()
}

/// Signs `digest` with `signers` (a quorum of `structure`), showing progress.
fn sign_quorum(
    progress: &mut Progress,
    structure: &WalletStructure,
    signers: &[&KeyShare],
    digest: [u8; 32],
    path: &DerivationPath,
) -> Result<(Signature, RunStats), Failure> {
    let request = SignRequest {
        nonce: fresh_nonce(),
        signers: signers.iter().map(|s| s.party()).collect(),
        digest,
        path: path.clone(),
    };
    let sessions = signers
        .iter()
        .map(|s| SignSession::new(s, &request))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Failure::failed)?;
    let names = labels(structure, request.signers.iter().copied()).join(" + ");
    let step = progress.step(&format!("signing by {names}"), 3);
    let started = Instant::now();
    let (signatures, stats) = runner::run_with(
        sessions,
        |_| Delivery::Deliver,
        |round, total| step.round(round, total),
    )
    .map_err(Failure::failed)?;
    step.finish(started.elapsed());
    let first = signatures[0];
    if signatures.iter().any(|s| *s != first) {
        return Err(Failure::Failed(
            "the signers produced different signatures".into(),
        ));
    }
    Ok((first, stats))
}

fn signature_json(s: &QuorumSignature) -> serde_json::Value {
    serde_json::json!({
        "signers": s.labels,
        "signature_der": hex::encode(s.signature.to_der()),
        "signature_rsv": hex::encode(s.signature.to_rsv()),
        "recovery_id": s.signature.recovery_id(),
        "verified": true,
    })
}

fn print_signature(s: &QuorumSignature, note: &str) {
    println!(
        "signed by      {}{note}: r||s||v {} verified",
        s.labels.join(" + "),
        hex::encode(s.signature.to_rsv())
    );
}
