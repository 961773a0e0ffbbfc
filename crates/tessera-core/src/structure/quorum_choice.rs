//! Choosing the quorum that signs a request: an authorised set of online parties that are not
//! banned, containing the parties the request needs (the requester, the server), or a typed
//! reason why there is none.
//!
//! A signer set must be a *minimal* authorised set ([`WalletStructure::check_quorum`] refuses a
//! party the structure does not need), so the candidates are the structure's minimal quorums
//! ([`WalletStructure::minimal_quorums`]) that contain the required parties; the choice is the
//! first available one in that list's order: smallest first, then by the members' labels. The
//! same inputs always give the same quorum, so every replica of a coordinator picks alike.
//!
//! When none is available the error says why, in this order: a required party is banned
//! ([`NoQuorum::RequiredBanned`]); no minimal quorum holds all the required parties
//! ([`NoQuorum::RequiredApart`]); every candidate needs a banned party, named
//! ([`NoQuorum::NeedsBanned`]: only a refresh or a reshare without it helps); else some candidate
//! is only waiting for offline parties, and [`NoQuorum::NotEnoughOnline`] says which, in the
//! words of [`WalletStructure::missing`] ("needs `server` and one of `phone`, `laptop`"),
//! never suggesting a banned party.

use std::collections::{BTreeSet, HashSet};

use super::AccessStructure;
use super::wallet::{Missing, Requirement, WalletStructure};
use crate::types::PartyIndex;

/// Why no quorum can sign a request now.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoQuorum {
    /// A party index that is not a party of the wallet.
    #[error("party {0} is not a party of this wallet")]
    UnknownParty(PartyIndex),
    /// A party the request requires is banned from the wallet.
    #[error(
        "`{0}` is required to sign this request but is banned from this wallet until a refresh or \
         a reshare without it"
    )]
    RequiredBanned(String),
    /// No minimal authorised set contains all the required parties.
    #[error("no authorised quorum of this wallet contains all of {}", super::wallet::quoted(.0))]
    RequiredApart(Vec<String>),
    /// Every authorised quorum (with the required parties) includes a banned party; the
    /// requirement lists only banned parties.
    #[error(
        "every authorised quorum includes a party banned from this wallet: a quorum {0}; sign \
         again after a refresh or a reshare without it"
    )]
    NeedsBanned(Missing),
    /// Some quorum would sign if more parties were online; the requirement lists only parties
    /// that are not banned.
    #[error("not enough parties are online: a quorum {0}")]
    NotEnoughOnline(Missing),
}

/// Whether a node is satisfied by the present parties, what it still needs, or whether it
/// cannot be satisfied without an excluded party.
enum Need {
    Met,
    Unmet(Requirement),
    Impossible,
}

fn all_of(mut parts: Vec<Requirement>) -> Requirement {
    if parts.len() == 1 {
        parts.remove(0)
    } else {
        Requirement::All(parts)
    }
}

/// [`AccessStructure::missing_requirement`] where `excluded` parties can never be added.
fn need(node: &AccessStructure, present: &HashSet<&str>, excluded: &HashSet<&str>) -> Need {
    match node {
        AccessStructure::Leaf(label) if present.contains(label.as_str()) => Need::Met,
        AccessStructure::Leaf(label) if excluded.contains(label.as_str()) => Need::Impossible,
        AccessStructure::Leaf(label) => Need::Unmet(Requirement::Party(label.clone())),
        AccessStructure::And(children) => {
            let mut unmet = Vec::new();
            for child in children {
                match need(child, present, excluded) {
                    Need::Met => {}
                    Need::Impossible => return Need::Impossible,
                    Need::Unmet(r) => unmet.push(r),
                }
            }
            if unmet.is_empty() {
                Need::Met
            } else {
                Need::Unmet(all_of(unmet))
            }
        }
        AccessStructure::Or(children) => {
            let mut unmet = Vec::new();
            for child in children {
                match need(child, present, excluded) {
                    Need::Met => return Need::Met,
                    Need::Impossible => {}
                    Need::Unmet(r) => unmet.push(r),
                }
            }
            match unmet.len() {
                0 => Need::Impossible,
                1 => Need::Unmet(unmet.remove(0)),
                _ => Need::Unmet(Requirement::Some {
                    count: 1,
                    of: unmet,
                }),
            }
        }
        AccessStructure::Threshold { k, of } => {
            let mut met = 0;
            let mut unmet = Vec::new();
            for child in of {
                match need(child, present, excluded) {
                    Need::Met => met += 1,
                    Need::Impossible => {}
                    Need::Unmet(r) => unmet.push(r),
                }
            }
            let Some(count) = k.checked_sub(met).filter(|&c| c > 0) else {
                return Need::Met;
            };
            if unmet.len() < count {
                Need::Impossible
            } else if unmet.len() == count {
                Need::Unmet(all_of(unmet))
            } else {
                Need::Unmet(Requirement::Some { count, of: unmet })
            }
        }
    }
}

/// "One of" the given sets of parties (each set: all of it), minimal sets only, smallest first,
/// then in party order.
fn one_of_sets(structure: &WalletStructure, mut sets: Vec<BTreeSet<PartyIndex>>) -> Requirement {
    sets.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.iter().cmp(b.iter())));
    sets.dedup();
    let mut minimal: Vec<BTreeSet<PartyIndex>> = Vec::new();
    for set in sets {
        if !minimal.iter().any(|m| m.is_subset(&set)) {
            minimal.push(set);
        }
    }
    let mut options: Vec<Requirement> = minimal
        .iter()
        .map(|set| {
            all_of(
                labels(structure, set)
                    .into_iter()
                    .map(Requirement::Party)
                    .collect(),
            )
        })
        .collect();
    if options.len() == 1 {
        options.remove(0)
    } else {
        Requirement::Some {
            count: 1,
            of: options,
        }
    }
}

/// The labels of `parties`, in party order.
pub(crate) fn labels(structure: &WalletStructure, parties: &BTreeSet<PartyIndex>) -> Vec<String> {
    parties
        .iter()
        .filter_map(|&p| structure.label(p).map(str::to_owned))
        .collect()
}

/// The minimal quorums of `structure` that contain `required`, in
/// [`WalletStructure::minimal_quorums`] order (smallest first, then by label).
pub(crate) fn quorums_with(
    structure: &WalletStructure,
    required: &BTreeSet<PartyIndex>,
) -> Vec<BTreeSet<PartyIndex>> {
    structure
        .minimal_quorums()
        .into_iter()
        .filter(|q| required.is_subset(q))
        .collect()
}

/// Checks that every index is one of the wallet's parties and returns them as a set.
pub(crate) fn party_set(
    structure: &WalletStructure,
    parties: &[PartyIndex],
) -> Result<BTreeSet<PartyIndex>, NoQuorum> {
    parties
        .iter()
        .map(|&p| match structure.label(p) {
            Some(_) => Ok(p),
            None => Err(NoQuorum::UnknownParty(p)),
        })
        .collect()
}

/// Why none of `quorums` (the minimal quorums containing `required`) is within
/// `online \ banned`. Call only when that is so.
pub(crate) fn diagnose(
    structure: &WalletStructure,
    quorums: &[BTreeSet<PartyIndex>],
    online: &BTreeSet<PartyIndex>,
    banned: &BTreeSet<PartyIndex>,
    required: &BTreeSet<PartyIndex>,
) -> NoQuorum {
    if let Some(&p) = required.intersection(banned).next() {
        return NoQuorum::RequiredBanned(structure.label(p).unwrap_or_default().to_owned());
    }
    if quorums.is_empty() {
        return NoQuorum::RequiredApart(labels(structure, required));
    }
    let unbanned: Vec<&BTreeSet<PartyIndex>> =
        quorums.iter().filter(|q| q.is_disjoint(banned)).collect();
    if unbanned.is_empty() {
        let needs = quorums
            .iter()
            .map(|q| q.intersection(banned).copied().collect())
            .collect();
        return NoQuorum::NeedsBanned(Missing(Some(one_of_sets(structure, needs))));
    }
    // Some quorum is only waiting for offline parties. Say what is missing the way
    // `WalletStructure::missing` does, with the required parties counted as present (they are
    // then listed first when offline) and banned parties never offered.
    let name = |p: &PartyIndex| structure.label(*p).unwrap_or_default().to_owned();
    let mut present: HashSet<String> = online.difference(banned).map(name).collect();
    present.extend(required.iter().map(name));
    let excluded: HashSet<String> = banned.iter().map(name).collect();
    let present_refs: HashSet<&str> = present.iter().map(String::as_str).collect();
    let excluded_refs: HashSet<&str> = excluded.iter().map(String::as_str).collect();
    let mut parts: Vec<Requirement> = required
        .difference(online)
        .map(|p| Requirement::Party(name(p)))
        .collect();
    match need(structure.tree(), &present_refs, &excluded_refs) {
        Need::Unmet(r) => parts.push(r),
        // Authorised, but not by a quorum that holds the required parties: list the offline
        // members of each candidate instead.
        Need::Met | Need::Impossible if parts.is_empty() => {
            let offline = unbanned
                .iter()
                .map(|q| q.difference(online).copied().collect())
                .collect();
            parts.push(one_of_sets(structure, offline));
        }
        Need::Met | Need::Impossible => {}
    }
    NoQuorum::NotEnoughOnline(Missing(Some(all_of(parts))))
}

impl WalletStructure {
    /// The quorum to sign a request with: the first minimal authorised set (smallest, then by
    /// label) of parties that are `online`, not `banned`, and contains every `required` party.
    /// See the [module documentation](self).
    ///
    /// # Errors
    /// [`NoQuorum`], saying why no such set exists.
    pub fn choose_quorum(
        &self,
        online: &[PartyIndex],
        banned: &[PartyIndex],
        required: &[PartyIndex],
    ) -> Result<BTreeSet<PartyIndex>, NoQuorum> {
        let online = party_set(self, online)?;
        let banned = party_set(self, banned)?;
        let required = party_set(self, required)?;
        let quorums = quorums_with(self, &required);
        quorums
            .iter()
            .find(|q| q.is_subset(&online) && q.is_disjoint(&banned))
            .cloned()
            .ok_or_else(|| diagnose(self, &quorums, &online, &banned, &required))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> WalletStructure {
        WalletStructure::parse(text).unwrap()
    }

    fn ps(structure: &WalletStructure, labels: &[&str]) -> Vec<PartyIndex> {
        labels.iter().map(|l| structure.party(l).unwrap()).collect()
    }

    fn set(structure: &WalletStructure, labels: &[&str]) -> BTreeSet<PartyIndex> {
        ps(structure, labels).into_iter().collect()
    }

    fn err(text: &str, online: &[&str], banned: &[&str], required: &[&str]) -> String {
        let w = s(text);
        w.choose_quorum(&ps(&w, online), &ps(&w, banned), &ps(&w, required))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn the_smallest_available_quorum_is_chosen_deterministically() {
        let w = s("or(and(server, phone), threshold(3, a, b, c, d))");
        let all: Vec<PartyIndex> = w.parties().collect();
        assert_eq!(
            w.choose_quorum(&all, &[], &[]).unwrap(),
            set(&w, &["server", "phone"])
        );
        // Without the phone: the first three-party set by label.
        assert_eq!(
            w.choose_quorum(&all, &ps(&w, &["phone"]), &[]).unwrap(),
            set(&w, &["a", "b", "c"])
        );
        assert_eq!(
            w.choose_quorum(&ps(&w, &["d", "c", "b", "a"]), &ps(&w, &["a"]), &[])
                .unwrap(),
            set(&w, &["b", "c", "d"])
        );
        // A required party picks the quorum.
        let w = s("and(server, or(phone, laptop, tablet))");
        let all: Vec<PartyIndex> = w.parties().collect();
        assert_eq!(
            w.choose_quorum(&all, &[], &ps(&w, &["tablet", "server"]))
                .unwrap(),
            set(&w, &["server", "tablet"])
        );
    }

    #[test]
    fn no_quorum_says_why() {
        let text = "and(server, or(phone, laptop))";
        let all = ["server", "phone", "laptop"];
        assert_eq!(
            err(text, &all, &["server"], &[]),
            "every authorised quorum includes a party banned from this wallet: a quorum needs \
             `server`; sign again after a refresh or a reshare without it"
        );
        assert_eq!(
            err(text, &all, &["phone", "laptop"], &[]),
            "every authorised quorum includes a party banned from this wallet: a quorum needs \
             one of `phone`, `laptop`; sign again after a refresh or a reshare without it"
        );
        assert_eq!(
            err(text, &all, &["phone"], &["phone"]),
            "`phone` is required to sign this request but is banned from this wallet until a \
             refresh or a reshare without it"
        );
        assert_eq!(
            err(text, &all, &["laptop"], &["phone", "laptop"]),
            "`laptop` is required to sign this request but is banned from this wallet until a \
             refresh or a reshare without it"
        );
        assert_eq!(
            err(text, &all, &[], &["phone", "laptop"]),
            "no authorised quorum of this wallet contains all of `phone`, `laptop`"
        );
        // Offline parties: banned ones are never offered.
        assert_eq!(
            err(text, &["phone"], &[], &[]),
            "not enough parties are online: a quorum needs `server`"
        );
        assert_eq!(
            err(text, &["server", "laptop"], &["laptop"], &[]),
            "not enough parties are online: a quorum needs `phone`"
        );
        assert_eq!(
            err(text, &[], &[], &[]),
            "not enough parties are online: a quorum needs `server` and one of `phone`, `laptop`"
        );
        assert_eq!(
            err(text, &["server", "laptop"], &[], &["phone"]),
            "not enough parties are online: a quorum needs `phone`"
        );
        assert_eq!(
            err(
                "and(server, threshold(2, cfo, ceo, cto))",
                &["server"],
                &["cto"],
                &[]
            ),
            "not enough parties are online: a quorum needs `cfo` and `ceo`"
        );
        // Authorised without the required party's partner: the candidates' offline members.
        assert_eq!(
            err("or(and(a, b), and(c, d))", &["a", "c", "d"], &[], &["a"]),
            "not enough parties are online: a quorum needs `b`"
        );
        let w = s(text);
        assert_eq!(
            w.choose_quorum(&[PartyIndex::new(7)], &[], &[]),
            Err(NoQuorum::UnknownParty(PartyIndex::new(7)))
        );
    }
}
