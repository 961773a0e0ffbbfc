//! Robust signing under an access structure: which quorum to try next, and which party to ban,
//! when signing runs fail.
//!
//! [`Isolation`] is a sans-IO state machine for one signing request. The caller asks it for a
//! quorum ([`Isolation::next_quorum`]), runs the signing protocol with that quorum, and reports
//! how the run ended ([`Isolation::report`] with an [`Outcome`]); the machine answers with the
//! party to ban, if the evidence now pins one, and with the next quorum to try, until the
//! request is signed and nothing is left to learn, or no quorum can sign (a typed
//! [`IsolationError`]). [`crate::runner::sign_robust`] drives it in one process; a server drives
//! it over its transport. It relies on:
//!
//! - the quorum choice of [`super::quorum_choice`] (minimal authorised sets of online, non-banned
//!   parties containing the required ones, in a fixed order);
//! - the engine's blame: a DKLs23 abort of kind `BanCounterparty` becomes
//!   [`crate::Error::PartyMisbehaved`] naming the party (`engine/dkls23/mod.rs`), which is
//!   proof to the party whose engine found it;
//! - the engine's final check: every signer verifies the signature it assembled
//!   (`sign_phase4`), so a corrupted share of the signature (`u`, `w` of round 3) makes the run
//!   fail, but names nobody: with three or more signers no honest signer can tell which of the
//!   others sent the bad share.
//!
//! # What happens on a failure
//!
//! A failure the engine attributes ([`Outcome::Blamed`]) bans that party at once
//! ([`Evidence::Named`]) and the next quorum excludes it. A failure that names nobody
//! ([`Outcome::Failed`]) starts an *isolation*: the suspects are the members of the failed
//! quorum that are not `trusted` (the coordinator itself, when it runs this). After every later
//! run of the isolation,
//!
//! > suspects = (members common to every failed quorum) − (members of any quorum that signed)
//! > − trusted,
//!
//! and when one suspect is left it is banned ([`Evidence::Isolated`], with the quorums tried)
//! and the isolation is over. The quorums tried *split* the suspects (they hold some but not all
//! of them; the most even split first, then the smallest quorum, then the choice order), so that
//! either outcome removes at least one suspect. When no available quorum splits them: if the
//! request is not yet signed, a quorum holding none of them is tried; if there is none, the
//! machine stops with [`IsolationError::Inseparable`], naming them, and bans nobody. A request
//! is signed by the first run that succeeds; runs tried after it (to pin the culprit) sign the
//! same digest again.
//!
//! # Assumptions
//!
//! 1. At most one party outside `trusted` misbehaves during one isolation, and `trusted`
//!    parties are honest.
//! 2. The misbehaving party misbehaves in every run it takes part in during the isolation.
//! 3. A run fails only because of it: report [`Outcome::Failed`] for an abort of the protocol
//!    (a signature that does not verify, a failed check), never for a timeout, a dropped
//!    connection or a crash. A party that drops out is offline ([`Isolation::went_offline`]),
//!    not a suspect.
//!
//! # Soundness: only the misbehaving party is banned
//!
//! Let `c` be the misbehaving party. By 3, `c` is in every failed quorum; by 2, in no quorum
//! that signed; by 1, not trusted. So `c` is always a suspect, and when one suspect is left it is
//! `c`. (Without 2, the rule can be steered: a party that fails the runs holding an honest `y`
//! and behaves in one without `y` clears itself and leaves `y`. [`Evidence::Isolated`] keeps the
//! quorums tried, so a ban that needed a successful run to clear a suspect can be told from one
//! that the failures alone decide, which needs only 1 and 3.) A blame from the engine
//! ([`Outcome::Blamed`]) is proof for the party whose engine produced it: a coordinator must
//! report as `Blamed` only blame its own engine found, and a blame that another party merely
//! claims as [`Outcome::Failed`] — the isolation then finds whichever of the two lies.
//!
//! # The bound on tries
//!
//! With `s` the number of untrusted members of the first quorum tried, a request takes at most
//! **`s + 1` tries** under the assumptions, and [`Isolation::max_tries`] (one more than the most
//! untrusted members of any quorum available at the start, so at most 17) bounds every request:
//!
//! - the engine names the party: 2 tries (the failed run, and a run without it);
//! - the party is not in the first quorum: 1 try;
//! - otherwise the first run fails with `|S₀| ≤ s` suspects. Every later try of the isolation
//!   either splits the suspects, and a failure leaves `S ∩ Q`, a success `S − Q`: at least one
//!   suspect fewer, so at most `|S₀| − 1` such tries; or, once none splits them, it is the one
//!   try of a quorum holding none of them (made only while unsigned). After the ban, at most
//!   one try without the banned party, and only if no earlier try signed; a try of a quorum
//!   holding no suspect signs (it excludes the culprit), after which nothing splits the suspects
//!   and the request ends. In total at most `1 + (|S₀| − 1) + 1 = |S₀| + 1 ≤ s + 1`.
//!
//! Where the structure allows an even split, each failure or success halves the suspects and the
//! isolation takes about `log₂ |S₀|` tries; it need not allow one — in
//! `and(server, threshold(2, x, y, z))` a quorum swaps one officer at a time — so `s + 1` is the
//! bound guaranteed. Without the assumptions the machine still ends: every try bans a party,
//! removes a suspect, signs, or ends the request (an isolation whose suspects run out stops with
//! [`IsolationError::Inconclusive`] and bans nobody), so a request that bans `b` parties takes at
//! most `(b + 1)(s + 1)` tries.
//!
//! # When the culprit is banned, and when the request is signed
//!
//! Under the assumptions, a misbehaving `c` in the first quorum `Q₁` is banned exactly when, for
//! every other untrusted member `o` of `Q₁`, some available quorum holds one of `c`, `o` and not
//! the other (such a quorum splits the suspects as long as `o` is one; a party no quorum
//! separates from `c` stays a suspect with it). The request is signed exactly when some
//! available quorum excludes `c`. The unit proptest
//! `random_structures_ban_only_the_culprit_within_the_bound` checks both, and the bound, against
//! a brute-force reading of these two sentences.

use std::collections::BTreeSet;

use super::quorum_choice::{NoQuorum, diagnose, labels, party_set, quorums_with};
use super::wallet::{WalletStructure, quoted};
use crate::error::Error;
use crate::types::PartyIndex;

/// How one signing run ended, as the coordinator saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The run produced a signature that verifies.
    Signed,
    /// The engine blamed this party ([`Error::PartyMisbehaved`]).
    Blamed(PartyIndex),
    /// The run aborted and nobody was blamed (e.g. the final signature did not verify).
    Failed,
}

impl Outcome {
    /// The outcome of a run that ended with `result`: [`Outcome::Blamed`] for
    /// [`Error::PartyMisbehaved`], [`Outcome::Failed`] for every other error (validation
    /// errors that name a sender included: a party that keeps sending them is isolated like any
    /// other; see the [module documentation](self) for what must not be reported at all).
    pub fn of<T>(result: &Result<T, Error>) -> Self {
        match result {
            Ok(_) => Outcome::Signed,
            Err(Error::PartyMisbehaved { party, .. }) => Outcome::Blamed(*party),
            Err(_) => Outcome::Failed,
        }
    }
}

/// Why a party was banned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// The engine named it.
    Named,
    /// It was the only suspect left of failures that named nobody.
    Isolated {
        /// The quorums whose runs failed, in order.
        failed: Vec<BTreeSet<PartyIndex>>,
        /// The quorums whose runs signed during the isolation, in order.
        succeeded: Vec<BTreeSet<PartyIndex>>,
    },
}

/// A party to refuse in every later session of the wallet until a refresh or a reshare without
/// it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ban {
    /// The party.
    pub party: PartyIndex,
    /// Why.
    pub evidence: Evidence,
}

/// Why a request cannot be signed (after the bans [`Isolation::bans`] lists), or a report the
/// machine did not expect.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IsolationError {
    /// No quorum is available (see [`NoQuorum`]).
    #[error("{0}")]
    NoQuorum(#[from] NoQuorum),
    /// A run failed naming nobody, and every available quorum holds all of these suspects: they
    /// cannot be told apart, and no quorum avoids them. Nobody is banned.
    #[error(
        "a signing run failed without naming a party, and every available quorum includes all \
         of {}: the one at fault cannot be told apart from the others, and no quorum avoids them",
        quoted(suspects)
    )]
    Inseparable {
        /// The suspects' labels.
        suspects: Vec<String>,
    },
    /// The failed runs share no untrusted party: more than one party misbehaved, or runs failed
    /// for another reason (see the assumptions in the [module documentation](self)). Nobody is
    /// banned.
    #[error(
        "signing runs failed without naming a party and no single party explains the failures; \
         nobody is banned"
    )]
    Inconclusive,
    /// A report for a quorum that is not the one [`Isolation::next_quorum`] handed out.
    #[error("a report for a quorum that was not handed out")]
    NotHandedOut,
    /// A blame of a party that is not in the quorum of the run.
    #[error("party {0} was blamed but is not in the quorum of the run")]
    BlameOutsideQuorum(PartyIndex),
}

/// Evidence of an isolation under way.
#[derive(Clone, Debug)]
struct Suspicion {
    suspects: BTreeSet<PartyIndex>,
    failed: Vec<BTreeSet<PartyIndex>>,
    succeeded: Vec<BTreeSet<PartyIndex>>,
}

/// Quorum choice, bans and isolation for one signing request. See the
/// [module documentation](self).
#[derive(Clone, Debug)]
pub struct Isolation {
    structure: WalletStructure,
    /// The minimal quorums holding the required parties, in choice order.
    quorums: Vec<BTreeSet<PartyIndex>>,
    online: BTreeSet<PartyIndex>,
    required: BTreeSet<PartyIndex>,
    trusted: BTreeSet<PartyIndex>,
    banned: BTreeSet<PartyIndex>,
    bans: Vec<Ban>,
    suspicion: Option<Suspicion>,
    /// Suspects left when the request ended without a ban (empty: inconclusive).
    unresolved: Option<BTreeSet<PartyIndex>>,
    signed: bool,
    tries: usize,
    max_tries: usize,
    pending: Option<BTreeSet<PartyIndex>>,
}

impl Isolation {
    /// A request to be signed by `structure`'s parties: those `online`, minus those `banned`
    /// earlier, in a quorum that holds every `required` party; `trusted` parties (the
    /// coordinator itself) are never suspected of a failure that names nobody.
    ///
    /// # Errors
    /// [`NoQuorum::UnknownParty`] for an index that is not one of the wallet's parties.
    pub fn new(
        structure: &WalletStructure,
        online: &[PartyIndex],
        banned: &[PartyIndex],
        required: &[PartyIndex],
        trusted: &[PartyIndex],
    ) -> Result<Self, NoQuorum> {
        let online = party_set(structure, online)?;
        let banned = party_set(structure, banned)?;
        let required = party_set(structure, required)?;
        let trusted = party_set(structure, trusted)?;
        let quorums = quorums_with(structure, &required);
        let max_tries = 1 + quorums
            .iter()
            .filter(|q| q.is_subset(&online) && q.is_disjoint(&banned))
            .map(|q| q.difference(&trusted).count())
            .max()
            .unwrap_or(0);
        Ok(Isolation {
            structure: structure.clone(),
            quorums,
            online,
            required,
            trusted,
            banned,
            bans: Vec::new(),
            suspicion: None,
            unresolved: None,
            signed: false,
            tries: 0,
            max_tries,
            pending: None,
        })
    }

    /// The quorum to run next: `Ok(Some(quorum))`; `Ok(None)` once the request is signed and
    /// nothing more can be learnt. Until the run is reported, the same quorum again.
    ///
    /// # Errors
    /// [`IsolationError`] when no quorum can sign the request (bans made so far stand).
    pub fn next_quorum(&mut self) -> Result<Option<BTreeSet<PartyIndex>>, IsolationError> {
        if let Some(q) = &self.pending {
            return Ok(Some(q.clone()));
        }
        if let Some(left) = &self.unresolved {
            return match (self.signed, left.is_empty()) {
                (true, _) => Ok(None),
                (false, true) => Err(IsolationError::Inconclusive),
                (false, false) => Err(IsolationError::Inseparable {
                    suspects: labels(&self.structure, left),
                }),
            };
        }
        let available: Vec<&BTreeSet<PartyIndex>> = self
            .quorums
            .iter()
            .filter(|q| q.is_subset(&self.online) && q.is_disjoint(&self.banned))
            .collect();
        let suspects = self.suspicion.as_ref().map(|s| s.suspects.clone());
        let choice = match suspects {
            None if self.signed => return Ok(None),
            None => match available.first() {
                Some(q) => (*q).clone(),
                None => {
                    return Err(diagnose(
                        &self.structure,
                        &self.quorums,
                        &self.online,
                        &self.banned,
                        &self.required,
                    )
                    .into());
                }
            },
            Some(suspects) => match best_split(&available, &suspects) {
                Some(q) => q.clone(),
                None if self.signed => {
                    self.unresolved = Some(suspects);
                    self.suspicion = None;
                    return Ok(None);
                }
                None => match available.iter().find(|q| q.is_disjoint(&suspects)) {
                    Some(q) => (*q).clone(),
                    None => {
                        return Err(IsolationError::Inseparable {
                            suspects: labels(&self.structure, &suspects),
                        });
                    }
                },
            },
        };
        self.tries += 1;
        self.pending = Some(choice.clone());
        Ok(Some(choice))
    }

    /// Reports how the run of `quorum` (the one [`Self::next_quorum`] handed out) ended; returns
    /// the party to ban if the evidence now pins one. Persist the ban before the next run.
    ///
    /// # Errors
    /// [`IsolationError::NotHandedOut`], [`IsolationError::BlameOutsideQuorum`]; nothing changes.
    pub fn report(
        &mut self,
        quorum: &BTreeSet<PartyIndex>,
        outcome: Outcome,
    ) -> Result<Option<Ban>, IsolationError> {
        if self.pending.as_ref() != Some(quorum) {
            return Err(IsolationError::NotHandedOut);
        }
        if let Outcome::Blamed(p) = outcome
            && !quorum.contains(&p)
        {
            return Err(IsolationError::BlameOutsideQuorum(p));
        }
        self.pending = None;
        match outcome {
            Outcome::Blamed(party) => {
                // The engine's word ends any isolation under way: under the assumptions, this
                // is the one misbehaving party.
                self.suspicion = None;
                return Ok(Some(self.ban(party, Evidence::Named)));
            }
            Outcome::Signed => {
                self.signed = true;
                if let Some(s) = &mut self.suspicion {
                    s.succeeded.push(quorum.clone());
                    s.suspects.retain(|p| !quorum.contains(p));
                }
            }
            Outcome::Failed => match &mut self.suspicion {
                Some(s) => {
                    s.failed.push(quorum.clone());
                    s.suspects.retain(|p| quorum.contains(p));
                }
                None => {
                    self.suspicion = Some(Suspicion {
                        suspects: quorum.difference(&self.trusted).copied().collect(),
                        failed: vec![quorum.clone()],
                        succeeded: Vec::new(),
                    });
                }
            },
        }
        let left = self.suspicion.as_ref().map(|s| s.suspects.len());
        match (left, self.suspicion.take()) {
            (Some(0), Some(_)) => {
                self.unresolved = Some(BTreeSet::new());
                Ok(None)
            }
            (Some(1), Some(s)) => {
                let party = s.suspects.first().copied();
                Ok(party.map(|party| {
                    self.ban(
                        party,
                        Evidence::Isolated {
                            failed: s.failed,
                            succeeded: s.succeeded,
                        },
                    )
                }))
            }
            (_, s) => {
                self.suspicion = s;
                Ok(None)
            }
        }
    }

    /// Reports a run this machine did not hand out: for a coordinator that keeps the runs of
    /// one request across the requester's retries (each a new request to it) and rebuilds the
    /// machine from them before choosing the next quorum. The runs must be replayed in the
    /// order they ran; the evidence is then the one [`Self::report`] would have gathered.
    ///
    /// # Errors
    /// [`IsolationError::BlameOutsideQuorum`]; nothing changes.
    pub fn replay(
        &mut self,
        quorum: &BTreeSet<PartyIndex>,
        outcome: Outcome,
    ) -> Result<Option<Ban>, IsolationError> {
        let before = (self.pending.replace(quorum.clone()), self.tries);
        self.tries += 1;
        let reported = self.report(quorum, outcome);
        if reported.is_err() {
            (self.pending, self.tries) = before;
        }
        reported
    }

    fn ban(&mut self, party: PartyIndex, evidence: Evidence) -> Ban {
        let ban = Ban { party, evidence };
        self.banned.insert(party);
        self.bans.push(ban.clone());
        ban
    }

    /// The wallet's structure.
    pub fn structure(&self) -> &WalletStructure {
        &self.structure
    }

    /// `party` is no longer online: later quorums avoid it.
    pub fn went_offline(&mut self, party: PartyIndex) {
        self.online.remove(&party);
    }

    /// The bans made for this request, in order.
    pub fn bans(&self) -> &[Ban] {
        &self.bans
    }

    /// Every banned party: the earlier bans and this request's.
    pub fn banned(&self) -> &BTreeSet<PartyIndex> {
        &self.banned
    }

    /// The parties suspected of the failure under isolation, if one is.
    pub fn suspects(&self) -> Option<&BTreeSet<PartyIndex>> {
        self.suspicion.as_ref().map(|s| &s.suspects)
    }

    /// Suspects left when the request ended without banning one (empty when the evidence was
    /// inconclusive).
    pub fn unresolved(&self) -> Option<&BTreeSet<PartyIndex>> {
        self.unresolved.as_ref()
    }

    /// Whether some run signed.
    pub fn is_signed(&self) -> bool {
        self.signed
    }

    /// Quorums handed out so far.
    pub fn tries(&self) -> usize {
        self.tries
    }

    /// The most tries a request takes under the assumptions of the
    /// [module documentation](self): one more than the most untrusted members of any quorum
    /// available when the request was made (at least 1).
    pub fn max_tries(&self) -> usize {
        self.max_tries
    }
}

/// The available quorum that splits `suspects` most evenly (then the smallest, then the first).
fn best_split<'a>(
    available: &[&'a BTreeSet<PartyIndex>],
    suspects: &BTreeSet<PartyIndex>,
) -> Option<&'a BTreeSet<PartyIndex>> {
    available
        .iter()
        .enumerate()
        .filter_map(|(i, q)| {
            let inside = q.intersection(suspects).count();
            let outside = suspects.len() - inside;
            (inside > 0 && outside > 0).then_some((
                std::cmp::Reverse(inside.min(outside)),
                q.len(),
                i,
                *q,
            ))
        })
        .min()
        .map(|(_, _, _, q)| q)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(text: &str) -> WalletStructure {
        WalletStructure::parse(text).unwrap()
    }

    fn ps(structure: &WalletStructure, labels: &[&str]) -> Vec<PartyIndex> {
        labels.iter().map(|l| structure.party(l).unwrap()).collect()
    }

    /// How the simulated culprit behaves.
    #[derive(Clone, Copy, Debug)]
    enum Culprit {
        Named(PartyIndex),
        Unnamed(PartyIndex),
    }

    /// Runs `isolation` against a simulated engine in which every run holding the culprit fails
    /// (named or not) and every other run signs. Returns the end, the quorums tried, the bans.
    fn simulate(
        mut isolation: Isolation,
        culprit: Option<Culprit>,
    ) -> (
        Result<(), IsolationError>,
        Vec<BTreeSet<PartyIndex>>,
        Vec<Ban>,
    ) {
        let mut tried = Vec::new();
        let mut bans = Vec::new();
        loop {
            let q = match isolation.next_quorum() {
                Ok(Some(q)) => q,
                Ok(None) => return (Ok(()), tried, bans),
                Err(e) => return (Err(e), tried, bans),
            };
            assert!(tried.len() < 300, "the isolation does not end");
            let outcome = match culprit {
                Some(Culprit::Named(c)) if q.contains(&c) => Outcome::Blamed(c),
                Some(Culprit::Unnamed(c)) if q.contains(&c) => Outcome::Failed,
                _ => Outcome::Signed,
            };
            tried.push(q.clone());
            bans.extend(isolation.report(&q, outcome).unwrap());
        }
    }

    #[test]
    fn an_unnamed_officer_is_isolated_in_three_tries() {
        let w = s("and(server, threshold(2, x, y, z))");
        let all: Vec<PartyIndex> = w.parties().collect();
        let server = ps(&w, &["server"]);
        for officer in ["x", "y", "z"] {
            let c = w.party(officer).unwrap();
            for trusted in [&[][..], &server[..]] {
                let isolation = Isolation::new(&w, &all, &[], &server, trusted).unwrap();
                let bound = isolation.max_tries();
                assert_eq!(bound, 4 - trusted.len());
                let (end, tried, bans) = simulate(isolation, Some(Culprit::Unnamed(c)));
                assert_eq!(end, Ok(()));
                assert!(tried.len() <= bound, "{officer}: {tried:?}");
                if officer == "z" {
                    // Not in the first quorum {server, x, y}: it signs, z is not seen.
                    assert_eq!(tried.len(), 1);
                    assert!(bans.is_empty());
                } else {
                    assert_eq!(bans.len(), 1);
                    assert_eq!(bans[0].party, c);
                }
            }
        }
    }

    #[test]
    fn runs_replayed_into_a_new_machine_give_the_same_evidence_and_next_quorum() {
        let w = s("and(server, threshold(2, x, y, z))");
        let all: Vec<PartyIndex> = w.parties().collect();
        let server = ps(&w, &["server"]);
        let required = ps(&w, &["server", "x"]);
        let y = w.party("y").unwrap();
        // The coordinator's first request: {server, x, y} fails naming nobody.
        let mut first = Isolation::new(&w, &all, &[], &required, &server).unwrap();
        let q1 = first.next_quorum().unwrap().unwrap();
        assert_eq!(q1, ps(&w, &["server", "x", "y"]).into_iter().collect());
        assert_eq!(first.report(&q1, Outcome::Failed).unwrap(), None);
        // The retry, a new request: a new machine with that run replayed picks the quorum the
        // first machine would have, which splits the suspects x and y.
        let mut again = Isolation::new(&w, &all, &[], &required, &server).unwrap();
        assert_eq!(again.replay(&q1, Outcome::Failed).unwrap(), None);
        let q2 = again.next_quorum().unwrap().unwrap();
        assert_eq!(first.next_quorum().unwrap().unwrap(), q2);
        assert_eq!(q2, ps(&w, &["server", "x", "z"]).into_iter().collect());
        // It signs: y is the one suspect left, banned with the quorums as evidence.
        let mut third = Isolation::new(&w, &all, &[], &required, &server).unwrap();
        assert_eq!(third.replay(&q1, Outcome::Failed).unwrap(), None);
        let ban = third.replay(&q2, Outcome::Signed).unwrap().unwrap();
        assert_eq!(ban.party, y);
        assert_eq!(
            ban.evidence,
            Evidence::Isolated {
                failed: vec![q1.clone()],
                succeeded: vec![q2.clone()]
            }
        );
        // A blame outside the replayed quorum is refused and changes nothing.
        let mut bad = Isolation::new(&w, &all, &[], &required, &server).unwrap();
        let z = w.party("z").unwrap();
        assert_eq!(
            bad.replay(&q1, Outcome::Blamed(z)),
            Err(IsolationError::BlameOutsideQuorum(z))
        );
        assert_eq!(bad.next_quorum().unwrap().unwrap(), q1);
    }

    #[test]
    fn a_named_party_is_banned_at_once_and_the_next_quorum_excludes_it() {
        let w = s("and(server, or(a, b, c))");
        let all: Vec<PartyIndex> = w.parties().collect();
        let a = w.party("a").unwrap();
        let mut isolation = Isolation::new(&w, &all, &[], &ps(&w, &["server"]), &[]).unwrap();
        let q = isolation.next_quorum().unwrap().unwrap();
        assert!(q.contains(&a));
        assert_eq!(
            isolation.report(&q, Outcome::Blamed(a)).unwrap(),
            Some(Ban {
                party: a,
                evidence: Evidence::Named
            })
        );
        let q = isolation.next_quorum().unwrap().unwrap();
        assert_eq!(q, ps(&w, &["server", "b"]).into_iter().collect());
        assert_eq!(isolation.report(&q, Outcome::Signed).unwrap(), None);
        assert_eq!(isolation.next_quorum(), Ok(None));
        assert_eq!(isolation.tries(), 2);
    }

    #[test]
    fn reports_out_of_turn_change_nothing() {
        let w = s("and(server, or(a, b))");
        let all: Vec<PartyIndex> = w.parties().collect();
        let mut isolation = Isolation::new(&w, &all, &[], &[], &[]).unwrap();
        let other: BTreeSet<PartyIndex> = ps(&w, &["server", "b"]).into_iter().collect();
        assert_eq!(
            isolation.report(&other, Outcome::Signed),
            Err(IsolationError::NotHandedOut)
        );
        let q = isolation.next_quorum().unwrap().unwrap();
        assert_eq!(isolation.next_quorum().unwrap().unwrap(), q);
        let b = w.party("b").unwrap();
        assert_eq!(
            isolation.report(&q, Outcome::Blamed(b)),
            Err(IsolationError::BlameOutsideQuorum(b))
        );
        assert_eq!(isolation.tries(), 1);
        assert!(isolation.bans().is_empty());
        assert_eq!(isolation.report(&q, Outcome::Signed), Ok(None));
    }

    #[test]
    fn when_every_quorum_needs_the_culprit_nobody_honest_is_banned() {
        let w = s("and(server, a)");
        let all: Vec<PartyIndex> = w.parties().collect();
        let (server, a) = (w.party("server").unwrap(), w.party("a").unwrap());
        // Unnamed, nobody trusted: the two cannot be told apart.
        let (end, tried, bans) = simulate(
            Isolation::new(&w, &all, &[], &[], &[]).unwrap(),
            Some(Culprit::Unnamed(a)),
        );
        assert_eq!(
            end.unwrap_err().to_string(),
            "a signing run failed without naming a party, and every available quorum includes \
             all of `server`, `a`: the one at fault cannot be told apart from the others, and no \
             quorum avoids them"
        );
        assert_eq!((tried.len(), bans.len()), (1, 0));
        // The server trusts itself: `a` is pinned, then nothing can sign.
        let (end, _, bans) = simulate(
            Isolation::new(&w, &all, &[], &[], &[server]).unwrap(),
            Some(Culprit::Unnamed(a)),
        );
        assert_eq!(bans.iter().map(|b| b.party).collect::<Vec<_>>(), [a]);
        assert_eq!(
            end.unwrap_err().to_string(),
            "every authorised quorum includes a party banned from this wallet: a quorum needs \
             `a`; sign again after a refresh or a reshare without it"
        );
        // Runs failing with no common untrusted party: inconclusive, nobody banned. A quorum
        // of trusted parties fails...
        let w = s("threshold(2, a, b, c)");
        let all: Vec<PartyIndex> = w.parties().collect();
        let mut isolation = Isolation::new(&w, &all, &[], &[], &ps(&w, &["a", "b"])).unwrap();
        let q = isolation.next_quorum().unwrap().unwrap();
        assert_eq!(isolation.report(&q, Outcome::Failed), Ok(None));
        assert_eq!(isolation.next_quorum(), Err(IsolationError::Inconclusive));
        // ... or a quorum holding none of the suspects fails too.
        let w = s("or(and(a, b), and(c, d))");
        let all: Vec<PartyIndex> = w.parties().collect();
        let mut isolation = Isolation::new(&w, &all, &[], &[], &[]).unwrap();
        let q1 = isolation.next_quorum().unwrap().unwrap();
        assert_eq!(isolation.report(&q1, Outcome::Failed), Ok(None));
        let q2 = isolation.next_quorum().unwrap().unwrap();
        assert!(q2.is_disjoint(isolation.suspects().unwrap()));
        assert_eq!(isolation.report(&q2, Outcome::Failed), Ok(None));
        assert_eq!(isolation.next_quorum(), Err(IsolationError::Inconclusive));
        assert!(isolation.bans().is_empty());
        assert_eq!(isolation.tries(), 2);
    }

    /// A culprit that the structure never separates from another party is not banned, and
    /// neither is that party; a quorum without both still signs.
    #[test]
    fn inseparable_parties_are_not_banned_and_a_quorum_without_them_signs() {
        let w = s("or(and(a, b), and(c, d))");
        let all: Vec<PartyIndex> = w.parties().collect();
        let a = w.party("a").unwrap();
        let mut isolation = Isolation::new(&w, &all, &[], &[], &[]).unwrap();
        let (end, tried, bans) = {
            let isolation = isolation.clone();
            simulate(isolation, Some(Culprit::Unnamed(a)))
        };
        assert_eq!(end, Ok(()));
        assert_eq!(tried.len(), 2);
        assert!(bans.is_empty());
        // Driven by hand: the unresolved suspects are kept.
        let q = isolation.next_quorum().unwrap().unwrap();
        isolation.report(&q, Outcome::Failed).unwrap();
        let q = isolation.next_quorum().unwrap().unwrap();
        isolation.report(&q, Outcome::Signed).unwrap();
        assert_eq!(isolation.next_quorum(), Ok(None));
        assert_eq!(
            isolation.unresolved().unwrap(),
            &ps(&w, &["a", "b"]).into_iter().collect::<BTreeSet<_>>()
        );
    }

    /// The brute-force reading of the module documentation's last section.
    fn separable(quorums: &[&BTreeSet<PartyIndex>], c: PartyIndex, o: PartyIndex) -> bool {
        quorums.iter().any(|q| q.contains(&c) != q.contains(&o))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn random_structures_ban_only_the_culprit_within_the_bound(
            w in structures(),
            culprit_pick in any::<prop::sample::Index>(),
            named in any::<bool>(),
            honest_culprit in any::<bool>(),
            offline_mask in any::<u16>(),
            trusted_pick in proptest::option::of(any::<prop::sample::Index>()),
            required_pick in proptest::option::of(any::<prop::sample::Index>()),
        ) {
            let n = w.party_count();
            let all: Vec<PartyIndex> = w.parties().collect();
            let c = all[culprit_pick.index(n)];
            // Some parties offline (never the culprit: an offline party does not take part).
            let online: Vec<PartyIndex> = all
                .iter()
                .copied()
                .filter(|p| *p == c || offline_mask & (1 << p.get()) == 0)
                .collect();
            let trusted: Vec<PartyIndex> = trusted_pick
                .map(|t| all[t.index(n)])
                .filter(|t| *t != c)
                .into_iter()
                .collect();
            let required: Vec<PartyIndex> =
                required_pick.map(|r| all[r.index(n)]).into_iter().collect();
            let isolation = Isolation::new(&w, &online, &[], &required, &trusted).unwrap();
            let bound = isolation.max_tries();
            let culprit = match (honest_culprit, named) {
                (true, _) => None,
                (false, true) => Some(Culprit::Named(c)),
                (false, false) => Some(Culprit::Unnamed(c)),
            };
            let online_set: BTreeSet<PartyIndex> = online.iter().copied().collect();
            let required_set: BTreeSet<PartyIndex> = required.iter().copied().collect();
            let quorums = quorums_with(&w, &required_set);
            let available: Vec<&BTreeSet<PartyIndex>> =
                quorums.iter().filter(|q| q.is_subset(&online_set)).collect();
            let (end, tried, bans) = simulate(isolation, culprit);

            // Honest parties are never banned; nothing is banned twice.
            prop_assert!(bans.iter().all(|b| b.party == c && culprit.is_some()), "{bans:?}");
            prop_assert!(bans.len() <= 1);
            prop_assert!(tried.len() <= bound, "{} tries, bound {bound}", tried.len());
            let Some(first) = tried.first() else {
                // No quorum at all: the error says so, nothing was tried.
                prop_assert!(available.is_empty());
                prop_assert!(matches!(end, Err(IsolationError::NoQuorum(_))));
                return Ok(());
            };
            prop_assert_eq!(first, available[0]);
            let untrusted_first = first.iter().filter(|p| !trusted.contains(p)).count();
            prop_assert!(tried.len() <= untrusted_first + 1);
            let signed_without_c = available.iter().any(|q| !q.contains(&c));
            match culprit {
                None => {
                    prop_assert_eq!(tried.len(), 1);
                    prop_assert!(end.is_ok());
                }
                Some(_) if !first.contains(&c) => {
                    prop_assert_eq!(tried.len(), 1);
                    prop_assert!(end.is_ok() && bans.is_empty());
                }
                Some(Culprit::Named(_)) => {
                    prop_assert_eq!(bans.len(), 1);
                    prop_assert_eq!(end.is_ok(), signed_without_c);
                    prop_assert!(tried.len() <= 2);
                }
                Some(Culprit::Unnamed(_)) => {
                    let pinnable = first
                        .iter()
                        .filter(|o| **o != c && !trusted.contains(o))
                        .all(|&o| separable(&available, c, o));
                    prop_assert_eq!(bans.len() == 1, pinnable, "{:?} {:?}", tried, end);
                    prop_assert_eq!(end.is_ok(), signed_without_c, "{:?} {:?}", tried, end);
                }
            }
            if let Err(e) = &end {
                prop_assert!(matches!(
                    e,
                    IsolationError::NoQuorum(_) | IsolationError::Inseparable { .. }
                ), "{e}");
            }
        }
    }

    /// Wallet structures of 2 to 6 parties.
    fn structures() -> impl Strategy<Value = WalletStructure> {
        use crate::structure::AccessStructure;
        let leaf = Just(AccessStructure::Leaf(String::new()));
        let shape = leaf.prop_recursive(2, 6, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 2..4).prop_map(AccessStructure::And),
                proptest::collection::vec(inner.clone(), 2..4).prop_map(AccessStructure::Or),
                (
                    proptest::collection::vec(inner, 2..=4),
                    any::<prop::sample::Index>()
                )
                    .prop_map(|(of, k)| AccessStructure::Threshold {
                        k: k.index(of.len()) + 1,
                        of
                    }),
            ]
        });
        shape.prop_filter_map("not a wallet structure", |mut tree| {
            let mut count = 0;
            label(&mut tree, &mut count);
            (count <= 6)
                .then(|| WalletStructure::new(tree, false).ok())
                .flatten()
        })
    }

    fn label(node: &mut crate::structure::AccessStructure, next: &mut usize) {
        use crate::structure::AccessStructure as A;
        match node {
            A::Leaf(l) => {
                *l = format!("p{next}");
                *next += 1;
            }
            A::And(c) | A::Or(c) => c.iter_mut().for_each(|c| label(c, next)),
            A::Threshold { of, .. } => of.iter_mut().for_each(|c| label(c, next)),
        }
    }
}
