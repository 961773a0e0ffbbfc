//! Wallet structures: an [`AccessStructure`] whose leaves are a wallet's signing parties.
//!
//! A [`WalletStructure`] is an access structure checked against the rules a wallet needs on top of
//! the grammar's: distinct party labels, at most [`MAX_PARTIES`] parties, every party in at least
//! one minimal authorised set (reachable), `1 <= k <= n` on every threshold, and no single party
//! authorised alone (a one-party quorum is a plain key, not a threshold wallet; allowed only
//! through [`WalletStructure::parse_allowing_single_party`], for tests). Party `i` of the wallet
//! ([`PartyIndex`] `i`) is the `i`-th label in the structure's written order, so today's t-of-n
//! wallet over parties `p0 … p(n-1)` is exactly `threshold(t, p0, …, p(n-1))`
//! ([`WalletStructure::threshold`]).
//!
//! A signer set is checked with [`WalletStructure::check_quorum`]: a set that is not authorised
//! is refused with what it lacks ([`Missing`], e.g. "needs `server` and one of `phone`,
//! `laptop`, `tablet`"), a set with parties the structure does not need is refused naming them,
//! and an accepted quorum carries each member's reconstruction coefficient
//! ([`AccessStructure::reconstruction_coefficients`]).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;

use k256::Scalar;

use super::{AccessStructure, StructureError};
use crate::types::{MAX_PARTIES, PartyIndex};

/// Why text or a tree is not a usable wallet structure.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WalletStructureError {
    /// The text or tree breaks the grammar's rules (syntax, arity, `k` out of range, depth).
    #[error("{0}")]
    Grammar(StructureError),
    /// A party label that breaks the label rules.
    #[error("invalid party label \"{label}\": {reason}")]
    InvalidPartyLabel {
        /// The label as written.
        label: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// The same party at two leaves.
    #[error("party \"{0}\" appears twice; each party holds one share and appears once")]
    DuplicateParty(String),
    /// More parties than a wallet supports.
    #[error("the structure has {count} parties; a wallet has at most {MAX_PARTIES}")]
    TooManyParties {
        /// How many parties it has.
        count: usize,
    },
    /// A party in no minimal authorised set: its share would never be needed.
    #[error("party \"{0}\" is in no authorised set that needs it")]
    UnreachableParty(String),
    /// No set of parties is authorised.
    #[error("the structure authorises no set of parties")]
    AuthorisesNobody,
    /// One party alone is authorised.
    #[error(
        "party \"{0}\" alone is authorised to sign; a wallet must need at least two parties \
         (use and(...) or a threshold of at least 2)"
    )]
    SingleParty(String),
}

impl From<StructureError> for WalletStructureError {
    fn from(e: StructureError) -> Self {
        match e {
            StructureError::DuplicateHolder(label) => WalletStructureError::DuplicateParty(label),
            StructureError::InvalidLabel { label, reason, .. } => {
                WalletStructureError::InvalidPartyLabel { label, reason }
            }
            StructureError::TooManyHolders { count } => {
                WalletStructureError::TooManyParties { count }
            }
            other => WalletStructureError::Grammar(other),
        }
    }
}

/// An access structure over a wallet's parties, validated. See the [module documentation](self).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalletStructure {
    tree: AccessStructure,
    /// Labels in written order: party `i` is `labels[i]`.
    labels: Vec<String>,
    single_party_allowed: bool,
}

impl WalletStructure {
    /// Parses and validates a wallet structure, refusing one in which a single party is
    /// authorised alone.
    ///
    /// # Errors
    /// Any rule of the [module documentation](self) the text breaks.
    pub fn parse(text: &str) -> Result<Self, WalletStructureError> {
        Self::new(AccessStructure::parse(text)?, false)
    }

    /// As [`Self::parse`], but accepts structures in which a single party is authorised alone.
    /// For tests of the structure arithmetic only: the signing engine needs two signers.
    ///
    /// # Errors
    /// Any other rule of the [module documentation](self) the text breaks.
    pub fn parse_allowing_single_party(text: &str) -> Result<Self, WalletStructureError> {
        Self::new(AccessStructure::parse(text)?, true)
    }

    /// Today's t-of-n wallet: `threshold(t, labels…)`, party `i` being `labels[i]`.
    ///
    /// # Errors
    /// As [`Self::parse`] (`t` of 0 or 1 or over `n`, bad or repeated labels, too many).
    pub fn threshold<S: AsRef<str>>(t: usize, labels: &[S]) -> Result<Self, WalletStructureError> {
        let tree = AccessStructure::Threshold {
            k: t,
            of: labels
                .iter()
                .map(|l| AccessStructure::Leaf(l.as_ref().to_owned()))
                .collect(),
        };
        tree.validate()?;
        Self::new(tree, false)
    }

    /// Validates a tree built in code (see [`Self::parse`]); `allow_single_party` as in
    /// [`Self::parse_allowing_single_party`].
    ///
    /// # Errors
    /// Any rule of the [module documentation](self) the tree breaks.
    pub fn new(
        tree: AccessStructure,
        allow_single_party: bool,
    ) -> Result<Self, WalletStructureError> {
        tree.validate()?;
        let labels: Vec<String> = tree.holders().into_iter().map(str::to_owned).collect();
        if labels.len() > usize::from(MAX_PARTIES) {
            return Err(WalletStructureError::TooManyParties {
                count: labels.len(),
            });
        }
        // At most 16 parties: at most C(16, 8) = 12870 minimal sets (Sperner), cheap to list.
        let minimal = tree.minimal_authorised_sets();
        if minimal.is_empty() {
            return Err(WalletStructureError::AuthorisesNobody);
        }
        let reachable: HashSet<&str> = minimal.iter().flatten().map(String::as_str).collect();
        if let Some(unreached) = labels.iter().find(|l| !reachable.contains(l.as_str())) {
            return Err(WalletStructureError::UnreachableParty(unreached.clone()));
        }
        if !allow_single_party
            && let Some(alone) = minimal.iter().find(|set| set.len() == 1)
            && let Some(label) = alone.first()
        {
            return Err(WalletStructureError::SingleParty(label.clone()));
        }
        Ok(WalletStructure {
            tree,
            labels,
            single_party_allowed: allow_single_party,
        })
    }

    /// Whether this structure was accepted with a single party authorised alone
    /// ([`Self::parse_allowing_single_party`]).
    pub fn single_party_allowed(&self) -> bool {
        self.single_party_allowed
    }

    /// The structure tree.
    pub fn tree(&self) -> &AccessStructure {
        &self.tree
    }

    /// The number of parties.
    pub fn party_count(&self) -> usize {
        self.labels.len()
    }

    /// The parties' labels, party `i` first at index `i`.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// All parties, `0..n`.
    pub fn parties(&self) -> impl Iterator<Item = PartyIndex> + '_ {
        (0..self.labels.len()).map(|i| PartyIndex::new(i as u8))
    }

    /// The label of `party`, if it is one of this wallet's.
    pub fn label(&self, party: PartyIndex) -> Option<&str> {
        self.labels
            .get(usize::from(party.get()))
            .map(String::as_str)
    }

    /// The party labelled `label`, if any.
    pub fn party(&self, label: &str) -> Option<PartyIndex> {
        self.labels
            .iter()
            .position(|l| l == label)
            .map(|i| PartyIndex::new(i as u8))
    }

    fn labels_of<'a>(&'a self, parties: &[PartyIndex]) -> Vec<&'a str> {
        parties.iter().filter_map(|&p| self.label(p)).collect()
    }

    /// Whether `parties` together may sign.
    pub fn is_authorised(&self, parties: &[PartyIndex]) -> bool {
        self.tree.is_authorised(&self.labels_of(parties))
    }

    /// The minimal authorised sets of parties, sorted as
    /// [`AccessStructure::minimal_authorised_sets`] sorts their labels.
    pub fn minimal_quorums(&self) -> Vec<BTreeSet<PartyIndex>> {
        self.tree
            .minimal_authorised_sets()
            .iter()
            .map(|set| set.iter().filter_map(|l| self.party(l)).collect())
            .collect()
    }

    /// The maximal sets of parties that are not authorised (every party added makes them
    /// authorised). Lists all `2^n` subsets: for tests and small structures.
    pub fn maximal_unauthorised_sets(&self) -> Vec<BTreeSet<PartyIndex>> {
        let n = self.labels.len();
        let all: Vec<PartyIndex> = self.parties().collect();
        let mut out = Vec::new();
        for mask in 0u32..(1u32 << n) {
            let set: Vec<PartyIndex> = (0..n)
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| all[i])
                .collect();
            if self.is_authorised(&set) {
                continue;
            }
            let maximal = all.iter().filter(|p| !set.contains(p)).all(|p| {
                let mut bigger = set.clone();
                bigger.push(*p);
                self.is_authorised(&bigger)
            });
            if maximal {
                out.push(set.into_iter().collect());
            }
        }
        out
    }

    /// What `present` lacks to be authorised (empty when it is authorised).
    pub fn missing(&self, present: &[PartyIndex]) -> Missing {
        let present: HashSet<&str> = self.labels_of(present).into_iter().collect();
        Missing(self.tree.missing_requirement(&present))
    }

    /// Checks that `signers` is a quorum: authorised, and with no party the structure does not
    /// need (every signer must contribute a share); returns each signer's reconstruction
    /// coefficient.
    ///
    /// # Errors
    /// [`QuorumError`] naming what is missing or which parties are not needed.
    pub fn check_quorum(&self, signers: &[PartyIndex]) -> Result<Quorum, QuorumError> {
        let mut unique = BTreeSet::new();
        for &p in signers {
            if self.label(p).is_none() {
                return Err(QuorumError::UnknownParty(p));
            }
            if !unique.insert(p) {
                return Err(QuorumError::DuplicateSigner(p));
            }
        }
        let labels = self.labels_of(signers);
        let Some(coefficients) = self.tree.reconstruction_coefficients(&labels) else {
            return Err(QuorumError::NotAuthorised(self.missing(signers)));
        };
        let unneeded: Vec<String> = labels
            .iter()
            .filter(|l| !coefficients.contains_key(**l))
            .map(|l| (*l).to_owned())
            .collect();
        if !unneeded.is_empty() {
            return Err(QuorumError::NotNeeded(unneeded));
        }
        let coefficients = coefficients
            .into_iter()
            .filter_map(|(label, c)| self.party(&label).map(|p| (p, c)))
            .collect();
        Ok(Quorum { coefficients })
    }
}

impl fmt::Display for WalletStructure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.tree.fmt(f)
    }
}

impl std::str::FromStr for WalletStructure {
    type Err = WalletStructureError;
    fn from_str(text: &str) -> Result<Self, WalletStructureError> {
        Self::parse(text)
    }
}

/// An authorised signer set with the reconstruction coefficient of each member: the wallet key
/// is `Σ c_i · x_i` over the members' shares `x_i`, so member `i`'s additive share for this
/// quorum is `c_i · x_i` (cb-mpc's `to_additive_share`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quorum {
    coefficients: BTreeMap<PartyIndex, Scalar>,
}

impl Quorum {
    /// The members.
    pub fn members(&self) -> impl Iterator<Item = PartyIndex> + '_ {
        self.coefficients.keys().copied()
    }

    /// The reconstruction coefficient of `party`, if it is a member.
    pub fn coefficient(&self, party: PartyIndex) -> Option<&Scalar> {
        self.coefficients.get(&party)
    }

    /// Every member's coefficient.
    pub fn coefficients(&self) -> &BTreeMap<PartyIndex, Scalar> {
        &self.coefficients
    }
}

/// Why a signer set cannot sign.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuorumError {
    /// The set is not authorised.
    #[error("the signers are not authorised: {0}")]
    NotAuthorised(Missing),
    /// The set is authorised but includes parties the structure does not need.
    #[error(
        "the signers include {} that the structure does not need; sign with a minimal quorum",
        quoted(.0)
    )]
    NotNeeded(Vec<String>),
    /// A signer index that is not a party of the wallet.
    #[error("party {0} is not a party of this wallet")]
    UnknownParty(PartyIndex),
    /// A signer listed twice.
    #[error("party {0} is listed twice among the signers")]
    DuplicateSigner(PartyIndex),
}

pub(crate) fn quoted(labels: &[String]) -> String {
    labels
        .iter()
        .map(|l| format!("`{l}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a set of parties lacks to be authorised, as a requirement tree; `Display` gives the
/// sentence ("needs `server` and one of `phone`, `laptop`, `tablet`").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing(pub(crate) Option<Requirement>);

impl Missing {
    /// Whether nothing is missing (the set is authorised).
    pub fn is_nothing(&self) -> bool {
        self.0.is_none()
    }
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str("nothing is missing"),
            Some(r) => write!(f, "needs {}", r.text(Place::Open)),
        }
    }
}

/// One unmet part of a structure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Requirement {
    /// This party.
    Party(String),
    /// All of these.
    All(Vec<Requirement>),
    /// `count` of these (1 = "one of").
    Some { count: usize, of: Vec<Requirement> },
}

/// Where a requirement is written: parentheses only where the sentence would be ambiguous.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    /// The whole sentence, or the last part of an "and" list.
    Open,
    /// A part of an "and" list before its last part.
    AndPart,
    /// An item of a "one of" list (which is comma-separated).
    ListItem,
}

impl Requirement {
    fn text(&self, place: Place) -> String {
        match self {
            Requirement::Party(label) => format!("`{label}`"),
            Requirement::All(parts) => {
                let last = parts.len().saturating_sub(1);
                let joined = parts
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        p.text(if i == last {
                            Place::Open
                        } else {
                            Place::AndPart
                        })
                    })
                    .collect::<Vec<_>>()
                    .join(" and ");
                if place == Place::ListItem {
                    format!("({joined})")
                } else {
                    joined
                }
            }
            Requirement::Some { count, of } => {
                let list = of
                    .iter()
                    .map(|p| p.text(Place::ListItem))
                    .collect::<Vec<_>>()
                    .join(", ");
                let text = if *count == 1 {
                    format!("one of {list}")
                } else {
                    format!("{count} of {list}")
                };
                if place == Place::Open {
                    text
                } else {
                    format!("({text})")
                }
            }
        }
    }
}

impl AccessStructure {
    /// What `present` lacks for this node to be satisfied; `None` when it is.
    pub(crate) fn missing_requirement(&self, present: &HashSet<&str>) -> Option<Requirement> {
        match self {
            AccessStructure::Leaf(label) => {
                (!present.contains(label.as_str())).then(|| Requirement::Party(label.clone()))
            }
            AccessStructure::And(children) => {
                let unmet: Vec<Requirement> = children
                    .iter()
                    .filter_map(|c| c.missing_requirement(present))
                    .collect();
                match unmet.len() {
                    0 => None,
                    1 => unmet.into_iter().next(),
                    _ => Some(Requirement::All(unmet)),
                }
            }
            AccessStructure::Or(children) => {
                let unmet: Vec<Requirement> = children
                    .iter()
                    .map(|c| c.missing_requirement(present))
                    .collect::<Option<Vec<_>>>()?;
                Some(Requirement::Some {
                    count: 1,
                    of: unmet,
                })
            }
            AccessStructure::Threshold { k, of } => {
                let unmet: Vec<Requirement> = of
                    .iter()
                    .filter_map(|c| c.missing_requirement(present))
                    .collect();
                let met = of.len() - unmet.len();
                let count = k.checked_sub(met).filter(|&c| c > 0)?;
                if count == unmet.len() {
                    match unmet.len() {
                        1 => unmet.into_iter().next(),
                        _ => Some(Requirement::All(unmet)),
                    }
                } else {
                    Some(Requirement::Some { count, of: unmet })
                }
            }
        }
    }

    /// The reconstruction coefficients of an authorised `quorum` (cb-mpc's `to_additive_share`,
    /// `src/cbmpc/protocol/ec_dkg.cpp`): a secret shared down the tree — `and` splits it into
    /// summands, `or` copies it, `threshold(k, …)` gives child `j` (1-based position) the value
    /// `f(j)` of a degree `k − 1` polynomial with `f(0)` the node's value — is `Σ c_l · s_l` over
    /// the returned labels `l` with their shares `s_l`.
    ///
    /// Walking down from the root with coefficient 1: `and` passes its coefficient to every
    /// child, `or` to its first satisfied child, `threshold` to its first `k` satisfied children
    /// times their Lagrange coefficient at 0 over those children's positions. Labels of `quorum`
    /// that this selection does not use are absent from the map (the map's labels are a minimal
    /// authorised subset of `quorum`); `None` when `quorum` is not authorised.
    pub fn reconstruction_coefficients<S: AsRef<str>>(
        &self,
        quorum: &[S],
    ) -> Option<BTreeMap<String, Scalar>> {
        let present: HashSet<&str> = quorum.iter().map(AsRef::as_ref).collect();
        if !self.authorised_by(&present) {
            return None;
        }
        let mut out = BTreeMap::new();
        self.assign_coefficients(&present, Scalar::ONE, &mut out)?;
        Some(out)
    }

    fn assign_coefficients(
        &self,
        present: &HashSet<&str>,
        coefficient: Scalar,
        out: &mut BTreeMap<String, Scalar>,
    ) -> Option<()> {
        match self {
            AccessStructure::Leaf(label) => {
                out.insert(label.clone(), coefficient);
            }
            AccessStructure::And(children) => {
                for c in children {
                    c.assign_coefficients(present, coefficient, out)?;
                }
            }
            AccessStructure::Or(children) => {
                children
                    .iter()
                    .find(|c| c.authorised_by(present))?
                    .assign_coefficients(present, coefficient, out)?;
            }
            AccessStructure::Threshold { k, of } => {
                let chosen: Vec<usize> = (0..of.len())
                    .filter(|&j| of[j].authorised_by(present))
                    .take(*k)
                    .collect();
                if chosen.len() < *k {
                    return None;
                }
                let xs: Vec<u64> = chosen.iter().map(|&j| j as u64 + 1).collect();
                for (position, &j) in chosen.iter().enumerate() {
                    let lambda = lagrange_at_zero(&xs, position)?;
                    of[j].assign_coefficients(present, coefficient * lambda, out)?;
                }
            }
        }
        Some(())
    }
}

/// The Lagrange coefficient at 0 of `xs[j]` over the distinct nonzero points `xs`.
pub(crate) fn lagrange_at_zero(xs: &[u64], j: usize) -> Option<Scalar> {
    let xj = Scalar::from(*xs.get(j)?);
    let mut numerator = Scalar::ONE;
    let mut denominator = Scalar::ONE;
    for (m, &x) in xs.iter().enumerate() {
        if m != j {
            let xm = Scalar::from(x);
            numerator *= xm;
            denominator *= xm - xj;
        }
    }
    Option::<Scalar>::from(denominator.invert()).map(|inv| numerator * inv)
}
