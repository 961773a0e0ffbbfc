//! Monotone formulas over item names: the plan's recovery formula, in which, unlike an access
//! structure, one item (a backup holder of several shares) may appear more than once.

use std::fmt;

use serde::Serialize;

use super::PlanError;
use crate::structure::AccessStructure;

/// A monotone formula over item names; unlike an [`AccessStructure`], an item may appear more
/// than once. Displayed in the structure text syntax.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Formula {
    /// True when the item is present.
    Item(String),
    /// True when every child is.
    And(Vec<Formula>),
    /// True when any child is.
    Or(Vec<Formula>),
    /// True when at least `k` children are.
    Threshold {
        /// How many children are needed.
        k: usize,
        /// The children.
        of: Vec<Formula>,
    },
}

impl From<&AccessStructure> for Formula {
    fn from(s: &AccessStructure) -> Self {
        let all = |c: &[AccessStructure]| c.iter().map(Formula::from).collect();
        match s {
            AccessStructure::Leaf(l) => Formula::Item(l.clone()),
            AccessStructure::And(c) => Formula::And(all(c)),
            AccessStructure::Or(c) => Formula::Or(all(c)),
            AccessStructure::Threshold { k, of } => Formula::Threshold { k: *k, of: all(of) },
        }
    }
}

impl Formula {
    /// The distinct item names, in order of first appearance.
    pub fn items(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        self.collect_items(&mut out);
        out
    }

    fn collect_items<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Formula::Item(name) => {
                if !out.contains(&name.as_str()) {
                    out.push(name);
                }
            }
            Formula::And(c) | Formula::Or(c) | Formula::Threshold { of: c, .. } => {
                c.iter().for_each(|c| c.collect_items(out));
            }
        }
    }

    /// Whether the formula holds when exactly the items in `present` are available.
    pub fn holds<S: AsRef<str>>(&self, present: &[S]) -> bool {
        match self {
            Formula::Item(name) => present.iter().any(|p| p.as_ref() == name),
            Formula::And(c) => c.iter().all(|c| c.holds(present)),
            Formula::Or(c) => c.iter().any(|c| c.holds(present)),
            Formula::Threshold { k, of } => of.iter().filter(|c| c.holds(present)).count() >= *k,
        }
    }

    /// Checks item names are non-empty, `and`/`or` have a child, and `1 <= k <= n`.
    pub fn validate(&self) -> Result<(), PlanError> {
        let bad = |reason: &str| PlanError::InvalidFormula {
            formula: self.to_string(),
            reason: reason.to_owned(),
        };
        match self {
            Formula::Item(name) if name.is_empty() => Err(bad("an item name is empty")),
            Formula::Item(_) => Ok(()),
            Formula::And(c) | Formula::Or(c) if c.is_empty() => {
                Err(bad("an operator has no children"))
            }
            Formula::Threshold { k, of } if *k == 0 || *k > of.len() => {
                Err(bad(&format!("k must be between 1 and {}", of.len())))
            }
            Formula::And(c) | Formula::Or(c) | Formula::Threshold { of: c, .. } => {
                c.iter().try_for_each(Formula::validate)
            }
        }
    }

    /// The formula with item names replaced by their indices in `items`.
    pub(super) fn index(&self, items: &[&str]) -> Indexed {
        let all = |c: &[Formula]| c.iter().map(|c| c.index(items)).collect();
        match self {
            Formula::Item(name) => {
                Indexed::Item(items.iter().position(|i| i == name).unwrap_or(usize::MAX))
            }
            Formula::And(c) => Indexed::Threshold {
                k: c.len(),
                of: all(c),
            },
            Formula::Or(c) => Indexed::Threshold { k: 1, of: all(c) },
            Formula::Threshold { k, of } => Indexed::Threshold { k: *k, of: all(of) },
        }
    }
}

impl fmt::Display for Formula {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let children = match self {
            Formula::Item(name) => return f.write_str(name),
            Formula::And(c) => {
                f.write_str("and(")?;
                c
            }
            Formula::Or(c) => {
                f.write_str("or(")?;
                c
            }
            Formula::Threshold { k, of } => {
                write!(f, "threshold({k}, ")?;
                of
            }
        };
        for (i, child) in children.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{child}")?;
        }
        f.write_str(")")
    }
}

/// Formulas serialize as their text.
impl Serialize for Formula {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A formula over item indices, for evaluating every subset quickly.
pub(super) enum Indexed {
    Item(usize),
    Threshold { k: usize, of: Vec<Indexed> },
}

impl Indexed {
    pub(super) fn holds(&self, present: u32) -> bool {
        match self {
            Indexed::Item(i) => u32::try_from(*i)
                .ok()
                .and_then(|i| 1u32.checked_shl(i))
                .is_some_and(|bit| present & bit != 0),
            Indexed::Threshold { k, of } => of.iter().filter(|c| c.holds(present)).count() >= *k,
        }
    }
}
