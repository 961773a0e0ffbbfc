//! Access structures: which sets of parties can, together, sign for a wallet or open a backup.
//!
//! One grammar and one tree serve both uses. A structure is a tree whose leaves are labels — the
//! holders of a backup (a USB key file, a cloud folder, a device keystore, a printed code) or the
//! signers of a wallet (`server`, `phone`, `laptop`) — and whose inner nodes say how their
//! children combine:
//!
//! - `and(x, y, ...)`: authorised when **all** children are;
//! - `or(x, y, ...)`: authorised when **any** child is;
//! - `threshold(k, x, y, ...)`: authorised when **any `k`** of the children are.
//!
//! A set of holders is *authorised* when the root is. The text form is
//! `label | and(x, y, ...) | or(x, y, ...) | threshold(k, x, y, ...)`; whitespace is ignored
//! and keywords are case-insensitive, but labels are lowercase (`[a-z0-9._-]`, 1 to 32
//! characters, starting with a letter or digit, and not a keyword). [`AccessStructure`]'s
//! `Display` prints the canonical form, which parses back to the same tree.
//!
//! Every structure, parsed or deserialized, is checked ([`AccessStructure::validate`]): a holder
//! appears at most once (a backup shares its secret down the tree, so a holder's single
//! ciphertext cannot sit at two leaves), `and`/`or` have at least two children, a threshold has
//! `n >= 2` children and `1 <= k <= n`, at most [`MAX_HOLDERS`] leaves, operators nested at most
//! [`MAX_DEPTH`] levels, and text at most [`MAX_TEXT_BYTES`] bytes. A wallet adds its own rules
//! ([`WalletStructure`]: at most 16 parties, no party authorised alone) and reads a quorum's
//! reconstruction coefficients ([`AccessStructure::reconstruction_coefficients`]).
//!
//! Which quorum signs a request ([`WalletStructure::choose_quorum`], [`quorum_choice`]) and what
//! to do when a signing run fails — ban the party the engine names, or isolate one it does not
//! ([`Isolation`], [`isolation`]) — are decided here too, without any transport.

pub mod isolation;
pub mod quorum_choice;
pub(crate) mod sharing;
pub mod wallet;

pub use isolation::{Ban, Evidence, Isolation, IsolationError, Outcome};
pub use quorum_choice::NoQuorum;
pub use wallet::{Missing, Quorum, QuorumError, WalletStructure, WalletStructureError};

use std::collections::{BTreeSet, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// Most leaves (holders) a structure may have.
pub const MAX_HOLDERS: usize = 32;
/// Deepest nesting of operators: a lone holder has depth 0, `and(a, b)` depth 1.
pub const MAX_DEPTH: usize = 8;
/// Longest structure text accepted by [`AccessStructure::parse`], in bytes.
pub const MAX_TEXT_BYTES: usize = 4096;
/// Longest holder label, in characters.
pub const MAX_LABEL_CHARS: usize = 32;

const KEYWORDS: [&str; 3] = ["and", "or", "threshold"];

/// An access structure over labelled holders or parties. See the [module documentation](self).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "UncheckedStructure")]
pub enum AccessStructure {
    /// One holder, by label.
    Leaf(String),
    /// Authorised when every child is.
    And(Vec<AccessStructure>),
    /// Authorised when any child is.
    Or(Vec<AccessStructure>),
    /// Authorised when at least `k` of the children are.
    Threshold {
        /// How many children are needed.
        k: usize,
        /// The children.
        of: Vec<AccessStructure>,
    },
}

/// Why a structure (text or tree) was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StructureError {
    /// The text is longer than [`MAX_TEXT_BYTES`].
    #[error("structure text is {len} bytes; the limit is {MAX_TEXT_BYTES}")]
    TooLong {
        /// Length of the text, in bytes.
        len: usize,
    },
    /// The text does not follow the grammar.
    #[error("{reason}{}", at(.column))]
    Syntax {
        /// What is wrong.
        reason: String,
        /// 1-based character column, when known.
        column: Option<usize>,
    },
    /// A word followed by `(` that is not `and`, `or` or `threshold`.
    #[error("unknown keyword \"{word}\" at column {column}; the keywords are and, or, threshold")]
    UnknownKeyword {
        /// The word as written.
        word: String,
        /// 1-based character column.
        column: usize,
    },
    /// A holder label that breaks the label rules.
    #[error("invalid holder label \"{label}\"{}: {reason}", at(.column))]
    InvalidLabel {
        /// The label as written.
        label: String,
        /// Which rule it breaks.
        reason: String,
        /// 1-based character column, when known.
        column: Option<usize>,
    },
    /// The same holder at two leaves.
    #[error("holder \"{0}\" appears twice")]
    DuplicateHolder(String),
    /// An `and`, `or` or `threshold` with fewer than two children.
    #[error("{node}: {keyword} needs at least 2 children, found {found}")]
    TooFewChildren {
        /// The node, in canonical text.
        node: String,
        /// `and`, `or` or `threshold`.
        keyword: &'static str,
        /// How many children it has.
        found: usize,
    },
    /// A threshold whose `k` is 0 or more than its number of children.
    #[error("{node}: k must be between 1 and {n}")]
    ThresholdOutOfRange {
        /// The node, in canonical text.
        node: String,
        /// The threshold as given.
        k: usize,
        /// Its number of children.
        n: usize,
    },
    /// More leaves than [`MAX_HOLDERS`].
    #[error("structure has {count} holders; the limit is {MAX_HOLDERS}")]
    TooManyHolders {
        /// How many leaves it has.
        count: usize,
    },
    /// Operators nested deeper than [`MAX_DEPTH`].
    #[error("structure nests operators {depth} levels deep; the limit is {MAX_DEPTH}")]
    TooDeep {
        /// The depth reached (for parsed text: the first depth over the limit).
        depth: usize,
    },
}

fn at(column: &Option<usize>) -> String {
    match column {
        Some(c) => format!(" at column {c}"),
        None => String::new(),
    }
}

impl AccessStructure {
    /// Parses and validates structure text (see the [module documentation](self)).
    pub fn parse(text: &str) -> Result<Self, StructureError> {
        if text.len() > MAX_TEXT_BYTES {
            return Err(StructureError::TooLong { len: text.len() });
        }
        let mut parser = Parser::new(text);
        let structure = parser.node(0)?;
        if let Some(token) = parser.next() {
            return Err(StructureError::Syntax {
                reason: format!(
                    "unexpected {} after the end of the structure",
                    token.describe()
                ),
                column: Some(token.column),
            });
        }
        structure.validate()?;
        Ok(structure)
    }

    /// Checks every rule of the [module documentation](self) on a tree built in code.
    pub fn validate(&self) -> Result<(), StructureError> {
        let depth = self.depth();
        if depth > MAX_DEPTH {
            return Err(StructureError::TooDeep { depth });
        }
        let holders = self.holders();
        if holders.len() > MAX_HOLDERS {
            return Err(StructureError::TooManyHolders {
                count: holders.len(),
            });
        }
        let mut seen = HashSet::new();
        for label in &holders {
            check_label(label, None)?;
            if !seen.insert(*label) {
                return Err(StructureError::DuplicateHolder((*label).to_owned()));
            }
        }
        self.check_arity()
    }

    fn check_arity(&self) -> Result<(), StructureError> {
        let (keyword, children) = match self {
            AccessStructure::Leaf(_) => return Ok(()),
            AccessStructure::And(c) => ("and", c),
            AccessStructure::Or(c) => ("or", c),
            AccessStructure::Threshold { of, .. } => ("threshold", of),
        };
        if children.len() < 2 {
            return Err(StructureError::TooFewChildren {
                node: self.to_string(),
                keyword,
                found: children.len(),
            });
        }
        if let AccessStructure::Threshold { k, of } = self
            && (*k == 0 || *k > of.len())
        {
            return Err(StructureError::ThresholdOutOfRange {
                node: self.to_string(),
                k: *k,
                n: of.len(),
            });
        }
        children.iter().try_for_each(Self::check_arity)
    }

    /// Nesting depth of operators: 0 for a lone holder.
    pub fn depth(&self) -> usize {
        match self.children() {
            [] => 0,
            children => 1 + children.iter().map(Self::depth).max().unwrap_or(0),
        }
    }

    /// The children of an operator node; empty for a leaf.
    pub fn children(&self) -> &[AccessStructure] {
        match self {
            AccessStructure::Leaf(_) => &[],
            AccessStructure::And(c) | AccessStructure::Or(c) => c,
            AccessStructure::Threshold { of, .. } => of,
        }
    }

    /// The leaf labels, in tree order (left to right as written).
    pub fn holders(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.collect_holders(&mut out);
        out
    }

    fn collect_holders<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            AccessStructure::Leaf(label) => out.push(label),
            _ => self.children().iter().for_each(|c| c.collect_holders(out)),
        }
    }

    /// Whether the holders in `present` are together authorised. Labels that are not holders of
    /// this structure are ignored.
    pub fn is_authorised<S: AsRef<str>>(&self, present: &[S]) -> bool {
        let present: HashSet<&str> = present.iter().map(AsRef::as_ref).collect();
        self.authorised_by(&present)
    }

    fn authorised_by(&self, present: &HashSet<&str>) -> bool {
        match self {
            AccessStructure::Leaf(label) => present.contains(label.as_str()),
            AccessStructure::And(c) => c.iter().all(|c| c.authorised_by(present)),
            AccessStructure::Or(c) => c.iter().any(|c| c.authorised_by(present)),
            AccessStructure::Threshold { k, of } => {
                of.iter().filter(|c| c.authorised_by(present)).count() >= *k
            }
        }
    }

    /// The minimal authorised sets: sets of holders that are authorised and have no authorised
    /// proper subset. Sorted by size, then by name.
    ///
    /// The number of sets grows combinatorially with wide thresholds (`threshold(16, ...)` over 32
    /// holders has about 6 * 10^8); [`Self::minimal_authorised_set_count`] tells beforehand.
    pub fn minimal_authorised_sets(&self) -> Vec<BTreeSet<String>> {
        let mut sets = self.min_sets();
        sort_sets(&mut sets);
        sets
    }

    /// How many sets [`Self::minimal_authorised_sets`] returns, computed without listing them
    /// (saturating at `u128::MAX`).
    pub fn minimal_authorised_set_count(&self) -> u128 {
        match self {
            AccessStructure::Leaf(_) => 1,
            AccessStructure::And(c) => c.iter().fold(1u128, |acc, c| {
                acc.saturating_mul(c.minimal_authorised_set_count())
            }),
            AccessStructure::Or(c) => c.iter().fold(0u128, |acc, c| {
                acc.saturating_add(c.minimal_authorised_set_count())
            }),
            AccessStructure::Threshold { k, of } => {
                // Elementary symmetric polynomial e_k of the children's counts.
                let mut e = vec![0u128; k + 1];
                e[0] = 1;
                for child in of {
                    let c = child.minimal_authorised_set_count();
                    for j in (1..=*k).rev() {
                        e[j] = e[j].saturating_add(e[j - 1].saturating_mul(c));
                    }
                }
                e[*k]
            }
        }
    }

    // Each holder appears once, so children have disjoint holders: unions of children's minimal
    // sets are minimal and distinct, and no minimisation pass is needed.
    fn min_sets(&self) -> Vec<BTreeSet<String>> {
        match self {
            AccessStructure::Leaf(label) => vec![BTreeSet::from([label.clone()])],
            AccessStructure::Or(c) => c.iter().flat_map(Self::min_sets).collect(),
            AccessStructure::And(c) => and_sets(c.iter().map(Self::min_sets).collect()),
            AccessStructure::Threshold { k, of } => {
                let per_child: Vec<_> = of.iter().map(Self::min_sets).collect();
                let mut out = Vec::new();
                for chosen in combinations(per_child.len(), *k) {
                    out.extend(and_sets(
                        chosen.iter().map(|&i| per_child[i].clone()).collect(),
                    ));
                }
                out
            }
        }
    }

    /// The minimal sets of holders to add to `present` to become authorised, sorted by size then
    /// by name; empty when `present` is already authorised.
    pub fn missing<S: AsRef<str>>(&self, present: &[S]) -> Vec<BTreeSet<String>> {
        if self.is_authorised(present) {
            return Vec::new();
        }
        let present: HashSet<&str> = present.iter().map(AsRef::as_ref).collect();
        let mut needs: Vec<BTreeSet<String>> = self
            .min_sets()
            .into_iter()
            .map(|set| {
                set.into_iter()
                    .filter(|h| !present.contains(h.as_str()))
                    .collect()
            })
            .collect();
        sort_sets(&mut needs);
        needs.dedup();
        // Sorted by size, so a set can only be a superset of an earlier one.
        let mut minimal: Vec<BTreeSet<String>> = Vec::new();
        for set in needs {
            if !minimal.iter().any(|m| m.is_subset(&set)) {
                minimal.push(set);
            }
        }
        minimal
    }
}

/// Sorts sets of names by size, then lexicographically by their sorted names.
fn sort_sets(sets: &mut [BTreeSet<String>]) {
    sets.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.iter().cmp(b.iter())));
}

/// Every union of one set from each group.
fn and_sets(groups: Vec<Vec<BTreeSet<String>>>) -> Vec<BTreeSet<String>> {
    groups
        .into_iter()
        .fold(vec![BTreeSet::new()], |acc, group| {
            acc.iter()
                .flat_map(|a| {
                    group
                        .iter()
                        .map(move |g| a.union(g).cloned().collect::<BTreeSet<String>>())
                })
                .collect()
        })
}

/// The `k`-element subsets of `0..n`, as sorted index lists, in lexicographic order.
pub fn combinations(n: usize, k: usize) -> Vec<Vec<usize>> {
    if k > n {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut idx: Vec<usize> = (0..k).collect();
    loop {
        out.push(idx.clone());
        // Find the rightmost index that can still move right.
        let Some(i) = (0..k).rev().find(|&i| idx[i] < n - k + i) else {
            return out;
        };
        idx[i] += 1;
        for j in i + 1..k {
            idx[j] = idx[j - 1] + 1;
        }
    }
}

impl fmt::Display for AccessStructure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (keyword, children) = match self {
            AccessStructure::Leaf(label) => return f.write_str(label),
            AccessStructure::And(c) => ("and", c),
            AccessStructure::Or(c) => ("or", c),
            AccessStructure::Threshold { k, of } => {
                write!(f, "threshold({k}")?;
                for child in of {
                    write!(f, ", {child}")?;
                }
                return f.write_str(")");
            }
        };
        write!(f, "{keyword}(")?;
        for (i, child) in children.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{child}")?;
        }
        f.write_str(")")
    }
}

impl std::str::FromStr for AccessStructure {
    type Err = StructureError;
    fn from_str(text: &str) -> Result<Self, StructureError> {
        Self::parse(text)
    }
}

/// Checks one label against the label rules; `column` only decorates the error.
pub fn check_label(label: &str, column: Option<usize>) -> Result<(), StructureError> {
    let bad = |reason: String| StructureError::InvalidLabel {
        label: label.to_owned(),
        reason,
        column,
    };
    let chars = label.chars().count();
    if chars == 0 || chars > MAX_LABEL_CHARS {
        return Err(bad(format!(
            "labels are 1 to {MAX_LABEL_CHARS} characters, this one has {chars}"
        )));
    }
    if label.chars().any(|c| c.is_uppercase()) {
        return Err(bad("labels are lowercase".into()));
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')))
    {
        return Err(bad(format!(
            "the character {c:?} is not allowed (use a-z, 0-9, '.', '_', '-')"
        )));
    }
    if !label.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(bad("labels start with a letter or a digit".into()));
    }
    if KEYWORDS.contains(&label) {
        return Err(bad("that is a keyword, not a holder label".into()));
    }
    Ok(())
}

// ---- Parsing ----

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TokenKind<'a> {
    Word(&'a str),
    Open,
    Close,
    Comma,
}

#[derive(Clone, Copy, Debug)]
struct Token<'a> {
    kind: TokenKind<'a>,
    /// 1-based character column.
    column: usize,
}

impl Token<'_> {
    fn describe(&self) -> String {
        match self.kind {
            TokenKind::Word(w) => format!("\"{w}\""),
            TokenKind::Open => "\"(\"".into(),
            TokenKind::Close => "\")\"".into(),
            TokenKind::Comma => "\",\"".into(),
        }
    }
}

struct Parser<'a> {
    tokens: Vec<Token<'a>>,
    pos: usize,
    end_column: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        let mut tokens = Vec::new();
        let mut chars = text.char_indices().enumerate().peekable();
        while let Some((col0, (start, c))) = chars.next() {
            let column = col0 + 1;
            let kind = match c {
                c if c.is_whitespace() => continue,
                '(' => TokenKind::Open,
                ')' => TokenKind::Close,
                ',' => TokenKind::Comma,
                _ => {
                    let mut end = start + c.len_utf8();
                    while let Some(&(_, (i, c))) = chars.peek() {
                        if c.is_whitespace() || matches!(c, '(' | ')' | ',') {
                            break;
                        }
                        end = i + c.len_utf8();
                        chars.next();
                    }
                    TokenKind::Word(&text[start..end])
                }
            };
            tokens.push(Token { kind, column });
        }
        Parser {
            tokens,
            pos: 0,
            end_column: text.chars().count() + 1,
        }
    }

    fn next(&mut self) -> Option<Token<'a>> {
        let token = self.tokens.get(self.pos).copied();
        self.pos += 1;
        token
    }

    fn peek(&self) -> Option<TokenKind<'a>> {
        self.tokens.get(self.pos).map(|t| t.kind)
    }

    fn syntax(&self, reason: String, column: usize) -> StructureError {
        StructureError::Syntax {
            reason,
            column: Some(column),
        }
    }

    fn next_or_end(&mut self, expected: &str) -> Result<Token<'a>, StructureError> {
        match self.next() {
            Some(t) => Ok(t),
            None => Err(self.syntax(
                format!("the text ends where {expected} was expected"),
                self.end_column,
            )),
        }
    }

    /// `depth` is the number of operators enclosing this node.
    fn node(&mut self, depth: usize) -> Result<AccessStructure, StructureError> {
        let token = self.next_or_end("a holder label or a keyword")?;
        let TokenKind::Word(word) = token.kind else {
            return Err(self.syntax(
                format!(
                    "expected a holder label or a keyword, found {}",
                    token.describe()
                ),
                token.column,
            ));
        };
        let keyword = word.to_ascii_lowercase();
        if self.peek() != Some(TokenKind::Open) {
            if KEYWORDS.contains(&keyword.as_str()) {
                return Err(self.syntax(
                    format!("keyword \"{word}\" must be followed by \"(\""),
                    token.column,
                ));
            }
            check_label(word, Some(token.column))?;
            return Ok(AccessStructure::Leaf(word.to_owned()));
        }
        if !KEYWORDS.contains(&keyword.as_str()) {
            return Err(StructureError::UnknownKeyword {
                word: word.to_owned(),
                column: token.column,
            });
        }
        if depth + 1 > MAX_DEPTH {
            return Err(StructureError::TooDeep { depth: depth + 1 });
        }
        self.next(); // "("
        let k = if keyword == "threshold" {
            let t = self.next_or_end("the threshold k")?;
            let k = match t.kind {
                TokenKind::Word(w) if w.bytes().all(|b| b.is_ascii_digit()) => {
                    // Too many digits to fit is simply out of range.
                    w.parse::<usize>().unwrap_or(usize::MAX)
                }
                _ => {
                    return Err(self.syntax(
                        format!(
                            "threshold's first argument must be the number k, found {}",
                            t.describe()
                        ),
                        t.column,
                    ));
                }
            };
            let t = self.next_or_end("\",\"")?;
            if t.kind != TokenKind::Comma {
                return Err(self.syntax(
                    format!("expected \",\" after threshold's k, found {}", t.describe()),
                    t.column,
                ));
            }
            Some(k)
        } else {
            None
        };
        let mut children = Vec::new();
        if self.peek() == Some(TokenKind::Close) && k.is_none() {
            self.next();
        } else {
            loop {
                children.push(self.node(depth + 1)?);
                let t = self.next_or_end("\",\" or \")\"")?;
                match t.kind {
                    TokenKind::Comma => continue,
                    TokenKind::Close => break,
                    _ => {
                        return Err(self.syntax(
                            format!("expected \",\" or \")\", found {}", t.describe()),
                            t.column,
                        ));
                    }
                }
            }
        }
        let node = match (keyword.as_str(), k) {
            ("and", _) => AccessStructure::And(children),
            ("or", _) => AccessStructure::Or(children),
            (_, k) => AccessStructure::Threshold {
                k: k.unwrap_or(0),
                of: children,
            },
        };
        // Report arity here, innermost first, so the message names the node as written.
        node.check_arity_shallow()?;
        Ok(node)
    }
}

impl AccessStructure {
    fn check_arity_shallow(&self) -> Result<(), StructureError> {
        match self {
            AccessStructure::Leaf(_) => Ok(()),
            AccessStructure::And(c) | AccessStructure::Or(c) if c.len() >= 2 => Ok(()),
            AccessStructure::Threshold { k, of } if of.len() >= 2 && (1..=of.len()).contains(k) => {
                Ok(())
            }
            // Leaves are fine, so the full check fails on this node itself.
            _ => self.check_arity(),
        }
    }
}

/// The serde shape of [`AccessStructure`], before validation.
#[derive(Deserialize)]
enum UncheckedStructure {
    Leaf(String),
    And(Vec<UncheckedStructure>),
    Or(Vec<UncheckedStructure>),
    Threshold {
        k: usize,
        of: Vec<UncheckedStructure>,
    },
}

impl UncheckedStructure {
    fn into_tree(self) -> AccessStructure {
        let all = |c: Vec<UncheckedStructure>| c.into_iter().map(Self::into_tree).collect();
        match self {
            UncheckedStructure::Leaf(l) => AccessStructure::Leaf(l),
            UncheckedStructure::And(c) => AccessStructure::And(all(c)),
            UncheckedStructure::Or(c) => AccessStructure::Or(all(c)),
            UncheckedStructure::Threshold { k, of } => {
                AccessStructure::Threshold { k, of: all(of) }
            }
        }
    }
}

impl TryFrom<UncheckedStructure> for AccessStructure {
    type Error = StructureError;
    fn try_from(raw: UncheckedStructure) -> Result<Self, StructureError> {
        let tree = raw.into_tree();
        tree.validate()?;
        Ok(tree)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> AccessStructure {
        AccessStructure::parse(text).unwrap()
    }

    fn err(text: &str) -> String {
        AccessStructure::parse(text).unwrap_err().to_string()
    }

    fn sets(list: &[&[&str]]) -> Vec<BTreeSet<String>> {
        list.iter()
            .map(|s| s.iter().map(|x| x.to_string()).collect())
            .collect()
    }

    fn leaf(l: &str) -> AccessStructure {
        AccessStructure::Leaf(l.into())
    }

    #[test]
    fn parses_the_grammar_into_trees() {
        assert_eq!(p("usb-1"), leaf("usb-1"));
        assert_eq!(
            p("  AND ( usb-1 ,\n OR(cloud,usb-2) )"),
            AccessStructure::And(vec![
                leaf("usb-1"),
                AccessStructure::Or(vec![leaf("cloud"), leaf("usb-2")])
            ])
        );
        assert_eq!(
            p("Threshold(2,usb-1,cloud,laptop)"),
            AccessStructure::Threshold {
                k: 2,
                of: vec![leaf("usb-1"), leaf("cloud"), leaf("laptop")]
            }
        );
    }

    #[test]
    fn display_is_canonical_and_round_trips() {
        for (text, canonical) in [
            (
                "threshold( 2,usb-1, cloud ,laptop)",
                "threshold(2, usb-1, cloud, laptop)",
            ),
            ("AND(usb-1,Or(cloud,usb-2))", "and(usb-1, or(cloud, usb-2))"),
            ("a.b_c-9", "a.b_c-9"),
            (
                "or(and(a,b),threshold(1,c,d),threshold(3,e,f,g))",
                "or(and(a, b), threshold(1, c, d), threshold(3, e, f, g))",
            ),
        ] {
            let s = p(text);
            assert_eq!(s.to_string(), canonical);
            assert_eq!(p(&s.to_string()), s);
        }
    }

    #[test]
    fn holders_are_in_tree_order() {
        assert_eq!(
            p("and(z, or(b, a), threshold(1, y, c))").holders(),
            vec!["z", "b", "a", "y", "c"]
        );
    }

    #[test]
    fn authorisation_follows_and_or_threshold() {
        let s = p("and(usb-1, or(cloud, usb-2))");
        assert!(s.is_authorised(&["usb-1", "cloud"]));
        assert!(s.is_authorised(&["usb-2", "usb-1", "stranger"]));
        assert!(!s.is_authorised(&["usb-1"]));
        assert!(!s.is_authorised(&["cloud", "usb-2"]));
        assert!(!s.is_authorised::<&str>(&[]));

        let t = p("threshold(2, a, b, c)");
        assert!(t.is_authorised(&["a", "c"]));
        assert!(!t.is_authorised(&["b"]));
        assert!(
            !t.is_authorised(&["b", "b"]),
            "one holder twice counts once"
        );
        let owned: Vec<String> = vec!["a".into(), "b".into()];
        assert!(t.is_authorised(&owned));
    }

    #[test]
    fn minimal_authorised_sets_are_complete_and_sorted() {
        let s = p("and(usb-1, or(cloud, usb-2))");
        assert_eq!(
            s.minimal_authorised_sets(),
            sets(&[&["cloud", "usb-1"], &["usb-1", "usb-2"]])
        );
        let t = p("or(threshold(2, a, b, c), d)");
        assert_eq!(
            t.minimal_authorised_sets(),
            sets(&[&["d"], &["a", "b"], &["a", "c"], &["b", "c"]])
        );
        for s in [s, t, p("threshold(3, a, and(b, c), or(d, e), f, g)")] {
            assert_eq!(
                s.minimal_authorised_set_count(),
                s.minimal_authorised_sets().len() as u128
            );
            for set in s.minimal_authorised_sets() {
                assert!(s.is_authorised(&set.iter().collect::<Vec<_>>()));
                for drop in &set {
                    let smaller: Vec<&String> = set.iter().filter(|h| *h != drop).collect();
                    assert!(!s.is_authorised(&smaller), "{set:?} is not minimal");
                }
            }
        }
    }

    #[test]
    fn count_does_not_enumerate_wide_thresholds() {
        let labels: Vec<String> = (0..32).map(|i| format!("h{i}")).collect();
        let s = p(&format!("threshold(16, {})", labels.join(", ")));
        assert_eq!(s.minimal_authorised_set_count(), 601_080_390);
    }

    #[test]
    fn missing_lists_what_to_add() {
        let s = p("and(usb-1, or(cloud, usb-2))");
        assert_eq!(
            s.missing(&["usb-1", "cloud"]),
            Vec::<BTreeSet<String>>::new()
        );
        assert_eq!(s.missing(&["usb-1"]), sets(&[&["cloud"], &["usb-2"]]));
        assert_eq!(
            s.missing(&["cloud"]),
            sets(&[&["usb-1"]]),
            "{{usb-1, usb-2}} is not minimal once cloud is present"
        );
        assert_eq!(
            s.missing::<&str>(&[]),
            sets(&[&["cloud", "usb-1"], &["usb-1", "usb-2"]])
        );
        let t = p("threshold(2, a, b, c)");
        assert_eq!(t.missing(&["b", "zzz"]), sets(&[&["a"], &["c"]]));
    }

    #[test]
    fn combinations_are_lexicographic() {
        assert_eq!(
            combinations(4, 2),
            vec![
                vec![0, 1],
                vec![0, 2],
                vec![0, 3],
                vec![1, 2],
                vec![1, 3],
                vec![2, 3]
            ]
        );
        assert_eq!(combinations(3, 0), vec![Vec::<usize>::new()]);
        assert!(combinations(2, 3).is_empty());
    }

    #[test]
    fn rejects_bad_thresholds_and_arity() {
        assert_eq!(
            err("threshold(3, a, b)"),
            "threshold(3, a, b): k must be between 1 and 2"
        );
        assert_eq!(
            err("threshold(0, a, b)"),
            "threshold(0, a, b): k must be between 1 and 2"
        );
        assert_eq!(
            err("threshold(99999999999999999999999, a, b)"),
            format!("threshold({}, a, b): k must be between 1 and 2", usize::MAX)
        );
        assert_eq!(
            err("threshold(1, a)"),
            "threshold(1, a): threshold needs at least 2 children, found 1"
        );
        assert_eq!(
            err("and(a)"),
            "and(a): and needs at least 2 children, found 1"
        );
        assert_eq!(err("or()"), "or(): or needs at least 2 children, found 0");
        assert_eq!(
            err("and(x, or(a))"),
            "or(a): or needs at least 2 children, found 1"
        );
    }

    #[test]
    fn rejects_bad_labels_and_duplicates() {
        assert_eq!(
            err("and(usb-1, cloud, usb-1)"),
            "holder \"usb-1\" appears twice"
        );
        assert_eq!(
            err("and(USB-1, cloud)"),
            "invalid holder label \"USB-1\" at column 5: labels are lowercase"
        );
        assert!(err("and(a, -b)").contains("start with a letter or a digit"));
        assert!(err("and(a, b$)").contains("the character '$' is not allowed"));
        assert!(err("and(a, clé)").contains("not allowed"));
        assert!(err(&"x".repeat(33)).contains("labels are 1 to 32 characters, this one has 33"));
        assert!(AccessStructure::parse(&"x".repeat(32)).is_ok());
        assert_eq!(
            err("or(a, and)"),
            "keyword \"and\" must be followed by \"(\" at column 7"
        );
    }

    #[test]
    fn rejects_syntax_errors_with_columns() {
        assert_eq!(
            err("xor(a, b)"),
            "unknown keyword \"xor\" at column 1; the keywords are and, or, threshold"
        );
        assert_eq!(
            err(""),
            "the text ends where a holder label or a keyword was expected at column 1"
        );
        assert_eq!(
            err("and(a, b"),
            "the text ends where \",\" or \")\" was expected at column 9"
        );
        assert_eq!(
            err("and(a b)"),
            "expected \",\" or \")\", found \"b\" at column 7"
        );
        assert_eq!(
            err("and(a, b))"),
            "unexpected \")\" after the end of the structure at column 10"
        );
        assert_eq!(
            err("a b"),
            "unexpected \"b\" after the end of the structure at column 3"
        );
        assert_eq!(
            err("and(a,,b)"),
            "expected a holder label or a keyword, found \",\" at column 7"
        );
        assert_eq!(
            err("threshold(two, a, b)"),
            "threshold's first argument must be the number k, found \"two\" at column 11"
        );
        assert_eq!(
            err("threshold(2 a, b)"),
            "expected \",\" after threshold's k, found \"a\" at column 13"
        );
    }

    #[test]
    fn enforces_size_limits() {
        assert_eq!(
            err(&" ".repeat(4097)),
            "structure text is 4097 bytes; the limit is 4096"
        );
        let labels: Vec<String> = (0..33).map(|i| format!("h{i}")).collect();
        assert_eq!(
            err(&format!("or({})", labels.join(","))),
            "structure has 33 holders; the limit is 32"
        );
        assert!(AccessStructure::parse(&format!("or({})", labels[..32].join(","))).is_ok());

        let nest = |levels: usize| {
            let mut text = "a0".to_string();
            for i in 1..=levels {
                text = format!("and({text}, a{i})");
            }
            text
        };
        assert_eq!(p(&nest(8)).depth(), 8);
        assert_eq!(
            err(&nest(9)),
            "structure nests operators 9 levels deep; the limit is 8"
        );
        // Deep nesting is refused before recursing further.
        assert!(err(&"and(".repeat(1000)).contains("9 levels deep"));
    }

    #[test]
    fn validate_checks_trees_built_in_code() {
        assert!(
            AccessStructure::And(vec![leaf("a"), leaf("b")])
                .validate()
                .is_ok()
        );
        assert_eq!(
            AccessStructure::Or(vec![leaf("a"), leaf("Bad")])
                .validate()
                .unwrap_err()
                .to_string(),
            "invalid holder label \"Bad\": labels are lowercase"
        );
        assert!(matches!(
            AccessStructure::Threshold {
                k: 3,
                of: vec![leaf("a"), leaf("b")]
            }
            .validate(),
            Err(StructureError::ThresholdOutOfRange { k: 3, n: 2, .. })
        ));
    }
}
