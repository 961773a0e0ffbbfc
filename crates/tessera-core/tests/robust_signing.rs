//! Robust signing under access structures, with the real protocol in one process
//! (`runner::sign_robust` driving `structure::Isolation`): a party that corrupts its messages is
//! banned when the engine names it, isolated when it does not, and never an honest one; every
//! signature produced is verified with k256 and libsecp256k1.
//!
//! A misbehaving party is played by rewriting its messages in flight, through the engine's own
//! wire structs, as a malicious party re-encoding its messages would: its round-2
//! `gamma_u` shifted by `G` (the engine's multiplication check fails at every receiver, which
//! blames it) or its round-3 signature share `u` plus one (the assembled signature does not
//! verify; nobody is named).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::collections::BTreeSet;

use common::{structures::wallet_structure, verify_everywhere};
use dkls23::protocols::signing::{Broadcast3to4, TransmitPhase2to3};
use k256::{ProjectivePoint, Scalar};
use proptest::prelude::*;
use tessera_core::runner::{self, Delivery, InFlight, RobustSigning};
use tessera_core::structure::{Evidence, Isolation, IsolationError, Outcome, WalletStructure};
use tessera_core::{DerivationPath, Envelope, Error, KeyShare, PartyIndex};

type Curve = k256::Secp256k1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Misbehaviour {
    /// Shifts its round-2 `gamma_u`: the engine blames it.
    Named,
    /// Adds one to its round-3 signature share `u`: the signature does not verify, nobody is
    /// blamed.
    Unnamed,
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> T {
    let (value, rest) = postcard::take_from_bytes(bytes).unwrap();
    assert!(rest.is_empty());
    value
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).unwrap()
}

/// The intercept hook of a network on which `culprit` misbehaves in every run it joins.
fn misbehaving(culprit: PartyIndex, how: Misbehaviour) -> impl FnMut(InFlight<'_>) -> Delivery {
    move |m: InFlight<'_>| {
        let round = match how {
            Misbehaviour::Named => 2,
            Misbehaviour::Unnamed => 3,
        };
        if m.sender == culprit && m.round == round {
            let mut e = Envelope::from_bytes(m.sender, m.bytes).unwrap();
            e.payload = match how {
                Misbehaviour::Named => {
                    let mut t: TransmitPhase2to3<Curve> = decode(&e.payload);
                    t.gamma_u =
                        (ProjectivePoint::from(t.gamma_u) + ProjectivePoint::GENERATOR).to_affine();
                    encode(&t)
                }
                Misbehaviour::Unnamed => {
                    let mut b: Broadcast3to4<Curve> = decode(&e.payload);
                    b.u += Scalar::ONE;
                    encode(&b)
                }
            };
            *m.bytes = e.to_bytes();
        }
        Delivery::Deliver
    }
}

fn honest() -> impl FnMut(InFlight<'_>) -> Delivery {
    |_| Delivery::Deliver
}

struct Wallet {
    structure: WalletStructure,
    shares: Vec<KeyShare>,
}

impl Wallet {
    fn new(text: &str) -> Self {
        Self::of(WalletStructure::parse(text).unwrap())
    }

    fn of(structure: WalletStructure) -> Self {
        let shares = runner::keygen_structure(&structure).unwrap();
        Wallet { structure, shares }
    }

    fn p(&self, label: &str) -> PartyIndex {
        self.structure.party(label).unwrap()
    }

    fn ps(&self, labels: &[&str]) -> Vec<PartyIndex> {
        labels.iter().map(|l| self.p(l)).collect()
    }

    fn set(&self, labels: &[&str]) -> BTreeSet<PartyIndex> {
        self.ps(labels).into_iter().collect()
    }

    fn all(&self) -> Vec<PartyIndex> {
        self.structure.parties().collect()
    }

    /// Signs `digest` robustly with every party online, nobody banned before.
    fn sign(
        &self,
        required: &[PartyIndex],
        trusted: &[PartyIndex],
        digest: [u8; 32],
        intercept: impl FnMut(InFlight<'_>) -> Delivery,
    ) -> (RobustSigning, usize) {
        let isolation =
            Isolation::new(&self.structure, &self.all(), &[], required, trusted).unwrap();
        let bound = isolation.max_tries();
        let shares: Vec<&KeyShare> = self.shares.iter().collect();
        let run = runner::sign_robust(
            isolation,
            &shares,
            digest,
            &DerivationPath::root(),
            intercept,
        )
        .unwrap();
        // Every signature any run produced verifies, the first is the one returned.
        for a in &run.attempts {
            if let Ok(sig) = &a.result {
                verify_everywhere(&self.shares[0].public_key(), &digest, sig);
            }
        }
        if let Ok(sig) = &run.signature {
            let first = run.attempts.iter().find_map(|a| a.result.as_ref().ok());
            assert_eq!(Some(sig), first);
        }
        assert!(
            run.attempts.len() <= bound,
            "{} tries, bound {bound}",
            run.attempts.len()
        );
        (run, bound)
    }
}

fn banned(run: &RobustSigning) -> Vec<PartyIndex> {
    run.bans.iter().map(|b| b.party).collect()
}

fn quorums(run: &RobustSigning) -> Vec<BTreeSet<PartyIndex>> {
    run.attempts.iter().map(|a| a.quorum.clone()).collect()
}

#[test]
fn a_device_the_engine_names_is_banned_and_the_server_signs_with_another() {
    let w = Wallet::new("and(server, or(a, b, c))");
    let a = w.p("a");
    let (run, _) = w.sign(
        &w.ps(&["server"]),
        &[],
        [1; 32],
        misbehaving(a, Misbehaviour::Named),
    );
    assert_eq!(
        quorums(&run),
        [w.set(&["server", "a"]), w.set(&["server", "b"])]
    );
    assert_eq!(
        run.attempts[0].result.as_ref().unwrap_err(),
        &Error::PartyMisbehaved {
            party: a,
            reason: "its gamma_u is inconsistent".into()
        }
    );
    assert_eq!(run.attempts[0].outcome, Outcome::Blamed(a));
    assert_eq!(run.attempts[1].outcome, Outcome::Signed);
    assert_eq!(banned(&run), [a]);
    assert_eq!(run.bans[0].evidence, Evidence::Named);
    assert!(run.signature.is_ok());
    assert_eq!(run.unresolved, None);
}

#[test]
fn an_officer_corrupting_its_signature_share_is_isolated_and_banned() {
    let w = Wallet::new("and(server, threshold(2, x, y, z))");
    let server = w.ps(&["server"]);
    // x and y are in the first quorum, {server, x, y}.
    for officer in ["x", "y"] {
        let c = w.p(officer);
        for trusted in [&[][..], &server[..]] {
            let (run, bound) = w.sign(
                &server,
                trusted,
                [2; 32],
                misbehaving(c, Misbehaviour::Unnamed),
            );
            // Three signers: the engine names nobody.
            for a in &run.attempts {
                match &a.result {
                    Ok(_) => assert!(!a.quorum.contains(&c)),
                    Err(e) => {
                        assert!(a.quorum.contains(&c));
                        assert!(
                            matches!(e, Error::Aborted(_)),
                            "{officer}: the engine named someone: {e}"
                        );
                        assert_eq!(a.outcome, Outcome::Failed);
                    }
                }
            }
            assert_eq!(banned(&run), [c], "{officer}, trusted {trusted:?}");
            assert!(matches!(run.bans[0].evidence, Evidence::Isolated { .. }));
            assert!(run.signature.is_ok());
            // The bound: untrusted members of the first quorum, plus one.
            assert_eq!(bound, 4 - trusted.len());
            assert!(run.attempts.len() <= 3 - trusted.len() + 1);
            assert_eq!(run.unresolved, None);
        }
    }
    // z is not in the first quorum: that quorum signs, and z's misbehaviour is not seen.
    let (run, _) = w.sign(
        &server,
        &[],
        [3; 32],
        misbehaving(w.p("z"), Misbehaviour::Unnamed),
    );
    assert_eq!(quorums(&run), [w.set(&["server", "x", "y"])]);
    assert!(run.signature.is_ok() && run.bans.is_empty());
    // With x misbehaving and nobody trusted, exactly these
    // runs: {server, x, y} fails, {server, x, z} fails (server and x left), {server, y, z}
    // signs and clears the server.
    let (run, _) = w.sign(
        &server,
        &[],
        [3; 32],
        misbehaving(w.p("x"), Misbehaviour::Unnamed),
    );
    assert_eq!(
        quorums(&run),
        [
            w.set(&["server", "x", "y"]),
            w.set(&["server", "x", "z"]),
            w.set(&["server", "y", "z"])
        ]
    );
    assert_eq!(
        run.bans[0].evidence,
        Evidence::Isolated {
            failed: vec![w.set(&["server", "x", "y"]), w.set(&["server", "x", "z"])],
            succeeded: vec![w.set(&["server", "y", "z"])],
        }
    );
}

#[test]
fn when_every_quorum_needs_the_misbehaving_party_nothing_is_signed_and_nobody_honest_is_banned() {
    let w = Wallet::new("and(server, a)");
    let (server, a) = (w.p("server"), w.p("a"));
    let no_signature = |run: &RobustSigning| {
        assert!(run.attempts.iter().all(|at| at.result.is_err()));
        run.signature.clone().unwrap_err().to_string()
    };
    // Named: banned, and then no quorum is left.
    for culprit in [a, server] {
        let (run, _) = w.sign(&[], &[], [4; 32], misbehaving(culprit, Misbehaviour::Named));
        assert_eq!(banned(&run), [culprit]);
        assert_eq!(run.attempts.len(), 1);
        assert_eq!(
            no_signature(&run),
            format!(
                "every authorised quorum includes a party banned from this wallet: a quorum \
                 needs `{}`; sign again after a refresh or a reshare without it",
                w.structure.label(culprit).unwrap()
            )
        );
    }
    // Not named, nobody trusted: server and a cannot be told apart; neither is banned.
    for culprit in [a, server] {
        let (run, _) = w.sign(
            &[],
            &[],
            [5; 32],
            misbehaving(culprit, Misbehaviour::Unnamed),
        );
        assert!(run.bans.is_empty());
        assert_eq!(
            run.signature.clone().unwrap_err(),
            IsolationError::Inseparable {
                suspects: vec!["server".into(), "a".into()]
            }
        );
        no_signature(&run);
    }
    // The server trusts itself (it is honest here): `a` is banned, then nothing can sign.
    let (run, _) = w.sign(
        &[],
        &[server],
        [6; 32],
        misbehaving(a, Misbehaviour::Unnamed),
    );
    assert_eq!(banned(&run), [a]);
    assert!(no_signature(&run).contains("needs `a`"));

    // A required device that is banned: said before any run.
    let w = Wallet::new("and(server, or(phone, laptop))");
    let phone = w.p("phone");
    let (run, _) = w.sign(
        &w.ps(&["phone"]),
        &[],
        [7; 32],
        misbehaving(phone, Misbehaviour::Named),
    );
    assert_eq!(banned(&run), [phone]);
    assert_eq!(
        run.signature.unwrap_err().to_string(),
        "`phone` is required to sign this request but is banned from this wallet until a \
         refresh or a reshare without it"
    );
    // Without a requirement, the first quorum is {server, laptop} (by label); a misbehaving
    // laptop is banned and the phone signs.
    let laptop = w.p("laptop");
    let (run, _) = w.sign(&[], &[], [8; 32], misbehaving(laptop, Misbehaviour::Named));
    assert_eq!(banned(&run), [laptop]);
    assert_eq!(
        quorums(&run),
        [w.set(&["server", "laptop"]), w.set(&["server", "phone"])]
    );
    assert!(run.signature.is_ok());
}

#[test]
fn an_honest_request_takes_one_run() {
    let w = Wallet::new("and(server, threshold(2, x, y, z))");
    let (run, _) = w.sign(&w.ps(&["server", "z"]), &[], [9; 32], honest());
    assert_eq!(quorums(&run), [w.set(&["server", "x", "z"])]);
    assert!(run.signature.is_ok() && run.bans.is_empty());
    // Shares of two wallets would only make runs fail and get parties blamed: refused first.
    let other = Wallet::new("and(server, threshold(2, x, y, z))");
    let mixed: Vec<&KeyShare> = vec![&w.shares[0], &other.shares[1], &w.shares[2], &w.shares[3]];
    let isolation = Isolation::new(&w.structure, &w.all(), &[], &[], &[]).unwrap();
    assert_eq!(
        runner::sign_robust(
            isolation,
            &mixed,
            [9; 32],
            &DerivationPath::root(),
            honest()
        )
        .unwrap_err(),
        Error::InvalidParameters(
            "the shares are not of one wallet at one epoch under the isolation's structure".into()
        )
    );
}

/// Whether some quorum of `available` holds exactly one of `c`, `o`.
fn separable(available: &[BTreeSet<PartyIndex>], c: PartyIndex, o: PartyIndex) -> bool {
    available.iter().any(|q| q.contains(&c) != q.contains(&o))
}

proptest! {
    // Each case is a key generation and several signing runs.
    #![proptest_config(ProptestConfig::with_cases(8))]

    /// Random structures of up to 4 parties, one random misbehaving party (named or not), the
    /// coordinator trusting a random honest party or nobody: honest parties are never banned,
    /// the culprit is banned exactly when the isolation module says, the request is signed
    /// exactly when a quorum without the culprit exists, within the bound.
    #[test]
    fn random_structures_ban_only_the_culprit_and_sign_when_possible(
        structure in wallet_structure(4),
        culprit_pick in any::<prop::sample::Index>(),
        named in any::<bool>(),
        trusted_pick in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let w = Wallet::of(structure);
        let all = w.all();
        let c = all[culprit_pick.index(all.len())];
        let how = if named { Misbehaviour::Named } else { Misbehaviour::Unnamed };
        let trusted: Vec<PartyIndex> = trusted_pick
            .map(|t| all[t.index(all.len())])
            .filter(|t| *t != c)
            .into_iter()
            .collect();
        let (run, _) = w.sign(&[], &trusted, [10; 32], misbehaving(c, how));
        let available = w.structure.minimal_quorums();
        let first = &run.attempts[0].quorum;
        prop_assert_eq!(first, &available[0]);

        prop_assert!(banned(&run).iter().all(|b| *b == c), "{:?}", run.bans);
        let untrusted_first = first.iter().filter(|p| !trusted.contains(p)).count();
        prop_assert!(run.attempts.len() <= untrusted_first + 1);
        let without_c = available.iter().any(|q| !q.contains(&c));
        if !first.contains(&c) {
            prop_assert_eq!(run.attempts.len(), 1);
            prop_assert!(run.signature.is_ok() && run.bans.is_empty());
        } else {
            let pinned = named
                || first
                    .iter()
                    .filter(|o| **o != c && !trusted.contains(o))
                    .all(|&o| separable(&available, c, o));
            prop_assert_eq!(banned(&run) == [c], pinned, "{:?}", quorums(&run));
            prop_assert_eq!(run.signature.is_ok(), without_c, "{:?}", run.signature);
        }
    }
}
