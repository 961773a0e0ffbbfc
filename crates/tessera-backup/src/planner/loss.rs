//! The loss and compromise table: what losing, or leaking, each set of items does, found by
//! enumerating every subset of a formula's items.

use serde::Serialize;

use super::{Formula, PlanError};

/// Most items [`loss_table`] enumerates (2^16 subsets).
pub const MAX_ITEMS: usize = 16;

/// Losses of exactly `lost` items.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LossRow {
    /// How many items are lost.
    pub lost: usize,
    /// How many sets of that many items there are.
    pub subsets: u64,
    /// How many of them leave the funds reachable.
    pub survivable: u64,
    /// The fatal sets of this size none of whose proper subsets is fatal.
    pub minimal_fatal: Vec<Vec<String>>,
}

/// What losing, or leaking, each set of items does; computed by enumerating every subset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LossTable {
    /// The formula analysed, as text.
    pub formula: String,
    /// The items, in order of first appearance in the formula. Sets below list items in this
    /// order and are sorted by size, then by this order.
    pub items: Vec<String>,
    /// Whether the funds are reachable with every item present.
    pub reachable: bool,
    /// One row per number of lost items, 1 to `items.len()`.
    pub rows: Vec<LossRow>,
    /// Every minimal fatal loss.
    pub minimal_fatal_losses: Vec<Vec<String>>,
    /// Items whose loss alone makes the funds unreachable.
    pub single_points_of_failure: Vec<String>,
    /// Items that alone reach the key.
    pub fatal_single_compromises: Vec<String>,
    /// The minimal sets of items that reach the key (what an attacker must gather).
    pub minimal_compromise_sets: Vec<Vec<String>>,
}

impl LossTable {
    /// The largest `k` such that every loss of `k` items is survivable.
    pub fn loss_tolerance(&self) -> usize {
        self.rows
            .iter()
            .take_while(|r| r.survivable == r.subsets)
            .count()
    }

    /// The size of the smallest set of items that reaches the key (0 if none does).
    pub fn compromise_threshold(&self) -> usize {
        self.minimal_compromise_sets.first().map_or(0, Vec::len)
    }

    /// Warnings about single points of failure and single fatal compromises.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.reachable {
            out.push("the funds are not reachable even with every item present".to_owned());
            return out;
        }
        for item in &self.single_points_of_failure {
            out.push(format!("losing {item} alone loses the funds"));
        }
        for item in &self.fatal_single_compromises {
            out.push(format!("{item} alone can restore the key"));
        }
        out
    }
}

/// Enumerates every subset of the formula's items (at most [`MAX_ITEMS`]) for losses and
/// compromises. For an access structure, pass `&Formula::from(&structure)`.
pub fn loss_table(formula: &Formula) -> Result<LossTable, PlanError> {
    formula.validate()?;
    let items = formula.items();
    let n = items.len();
    if n > MAX_ITEMS {
        return Err(PlanError::TooManyItems { count: n });
    }
    let indexed = formula.index(&items);
    let full: u32 = (1u32 << n) - 1;
    // holds[m]: the formula holds over the items in mask m.
    let holds: Vec<bool> = (0..=full).map(|m| indexed.holds(m)).collect();
    let at = |m: u32| holds.get(m as usize).copied().unwrap_or(false);
    let survives = |lost: u32| at(full & !lost);
    let bits = |m: u32| (0..n).filter(move |i| m & (1 << i) != 0);

    let names = |m: u32| -> Vec<String> { bits(m).map(|i| items[i].to_owned()).collect() };
    // Sets in order of size, then lexicographically by item index.
    let mut masks: Vec<u32> = (1..=full).collect();
    masks.sort_by_key(|&m| (m.count_ones(), bits(m).collect::<Vec<_>>()));

    let mut rows: Vec<LossRow> = (1..=n)
        .map(|lost| LossRow {
            lost,
            subsets: 0,
            survivable: 0,
            minimal_fatal: Vec::new(),
        })
        .collect();
    let mut minimal_fatal_losses = Vec::new();
    let mut minimal_compromise_sets = Vec::new();
    for &m in &masks {
        let size = m.count_ones() as usize;
        let Some(row) = rows.get_mut(size - 1) else {
            continue;
        };
        row.subsets += 1;
        if survives(m) {
            row.survivable += 1;
        } else if bits(m).all(|i| survives(m & !(1 << i))) {
            row.minimal_fatal.push(names(m));
            minimal_fatal_losses.push(names(m));
        }
        // Monotone: minimal when no one-smaller subset already holds.
        if at(m) && bits(m).all(|i| !at(m & !(1 << i))) {
            minimal_compromise_sets.push(names(m));
        }
    }
    let singles = |sets: &[Vec<String>]| -> Vec<String> {
        sets.iter()
            .filter(|s| s.len() == 1)
            .flat_map(|s| s.iter().cloned())
            .collect()
    };
    let reachable = at(full);
    Ok(LossTable {
        formula: formula.to_string(),
        items: items.iter().map(|s| (*s).to_owned()).collect(),
        reachable,
        single_points_of_failure: if reachable {
            singles(&minimal_fatal_losses)
        } else {
            Vec::new()
        },
        fatal_single_compromises: singles(&minimal_compromise_sets),
        rows,
        minimal_fatal_losses,
        minimal_compromise_sets,
    })
}

#[cfg(test)]
mod tests;
