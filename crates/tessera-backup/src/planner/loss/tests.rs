//! Unit tests of the loss and compromise table.

use std::collections::BTreeSet;

use super::*;
use crate::structure::{AccessStructure, combinations};

fn table(text: &str) -> LossTable {
    loss_table(&Formula::from(&AccessStructure::parse(text).unwrap())).unwrap()
}

fn v(list: &[&[&str]]) -> Vec<Vec<String>> {
    list.iter()
        .map(|s| s.iter().map(|x| x.to_string()).collect())
        .collect()
}
#[test]
fn two_of_three_tolerates_any_single_loss() {
    let t = table("threshold(2, a, b, c)");
    assert!(t.reachable);
    assert_eq!(t.items, vec!["a", "b", "c"]);
    assert_eq!((t.rows[0].survivable, t.rows[0].subsets), (3, 3));
    assert_eq!((t.rows[1].survivable, t.rows[1].subsets), (0, 3));
    assert_eq!(
        t.rows[1].minimal_fatal,
        v(&[&["a", "b"], &["a", "c"], &["b", "c"]])
    );
    assert_eq!((t.rows[2].survivable, t.rows[2].subsets), (0, 1));
    assert!(t.rows[2].minimal_fatal.is_empty());
    assert!(t.single_points_of_failure.is_empty());
    assert!(t.fatal_single_compromises.is_empty());
    assert_eq!(
        t.minimal_compromise_sets,
        v(&[&["a", "b"], &["a", "c"], &["b", "c"]])
    );
    assert_eq!(t.loss_tolerance(), 1);
    assert_eq!(t.compromise_threshold(), 2);
    assert!(t.warnings().is_empty());
}

#[test]
fn and_makes_each_item_a_single_point_of_failure() {
    let t = table("and(phone, usb)");
    assert_eq!(t.single_points_of_failure, vec!["phone", "usb"]);
    assert!(t.fatal_single_compromises.is_empty());
    assert_eq!(t.loss_tolerance(), 0);
    assert_eq!(
        t.warnings(),
        vec![
            "losing phone alone loses the funds",
            "losing usb alone loses the funds"
        ]
    );
}

#[test]
fn or_makes_each_item_a_fatal_compromise() {
    let t = table("or(phone, usb)");
    assert!(t.single_points_of_failure.is_empty());
    assert_eq!(t.fatal_single_compromises, vec!["phone", "usb"]);
    assert_eq!(t.loss_tolerance(), 1);
    assert_eq!(
        t.warnings(),
        vec![
            "phone alone can restore the key",
            "usb alone can restore the key"
        ]
    );
}

#[test]
fn two_of_two_with_backups_composes() {
    // Phone share backed up under threshold(2, usb-1, cloud, laptop); the server's too.
    let b = Formula::from(&AccessStructure::parse("threshold(2, usb-1, cloud, laptop)").unwrap());
    let f = Formula::And(vec![
        Formula::Or(vec![Formula::Item("phone".into()), b.clone()]),
        Formula::Or(vec![Formula::Item("server".into()), b]),
    ]);
    assert_eq!(
        f.to_string(),
        "and(or(phone, threshold(2, usb-1, cloud, laptop)), or(server, threshold(2, usb-1, cloud, laptop)))"
    );
    let t = loss_table(&f).unwrap();
    assert_eq!(t.items, vec!["phone", "usb-1", "cloud", "laptop", "server"]);
    assert!(t.single_points_of_failure.is_empty());
    assert!(t.fatal_single_compromises.is_empty());
    // Losing the phone and one holder is fine; the phone and two holders is not.
    assert!(f.holds(&["server", "cloud", "laptop"]));
    assert!(!f.holds(&["server", "laptop"]));
    assert_eq!((t.rows[0].survivable, t.rows[1].survivable), (5, 10));
    assert_eq!(t.loss_tolerance(), 2);
    // Fatal triples: the phone or the server, and two of the three holders.
    assert_eq!((t.rows[2].survivable, t.rows[2].subsets), (4, 10));
    assert_eq!(
        t.rows[2].minimal_fatal,
        v(&[
            &["phone", "usb-1", "cloud"],
            &["phone", "usb-1", "laptop"],
            &["phone", "cloud", "laptop"],
            &["usb-1", "cloud", "server"],
            &["usb-1", "laptop", "server"],
            &["cloud", "laptop", "server"],
        ])
    );
    // Smallest attacks: phone + server, or any two holders.
    assert_eq!(
        t.minimal_compromise_sets,
        v(&[
            &["phone", "server"],
            &["usb-1", "cloud"],
            &["usb-1", "laptop"],
            &["cloud", "laptop"]
        ])
    );
}

#[test]
fn loss_table_cross_checks_brute_force() {
    let f = Formula::from(
        &AccessStructure::parse("or(and(a, b), threshold(2, c, d, and(e, f)))").unwrap(),
    );
    let t = loss_table(&f).unwrap();
    let items: Vec<&str> = f.items();
    for row in &t.rows {
        let mut surv = 0;
        for lost in combinations(items.len(), row.lost) {
            let left: Vec<&str> = (0..items.len())
                .filter(|i| !lost.contains(i))
                .map(|i| items[i])
                .collect();
            surv += u64::from(f.holds(&left));
        }
        assert_eq!(row.survivable, surv, "row {}", row.lost);
    }
    let s = AccessStructure::parse("or(and(a, b), threshold(2, c, d, and(e, f)))").unwrap();
    let mut from_structure: Vec<BTreeSet<String>> = s.minimal_authorised_sets();
    let mut from_table: Vec<BTreeSet<String>> = t
        .minimal_compromise_sets
        .iter()
        .map(|s| s.iter().cloned().collect())
        .collect();
    from_structure.sort();
    from_table.sort();
    assert_eq!(from_structure, from_table);
}

#[test]
fn loss_table_refuses_too_many_items_and_bad_formulas() {
    let f = Formula::Or((0..17).map(|i| Formula::Item(format!("h{i}"))).collect());
    assert_eq!(
        loss_table(&f).unwrap_err().to_string(),
        "17 items is too many to enumerate every loss; the limit is 16"
    );
    let sixteen = Formula::Threshold {
        k: 8,
        of: (0..16).map(|i| Formula::Item(format!("h{i}"))).collect(),
    };
    assert_eq!(loss_table(&sixteen).unwrap().compromise_threshold(), 8);
    let bad = Formula::Threshold {
        k: 3,
        of: vec![Formula::Item("a".into()), Formula::Item("b".into())],
    };
    assert_eq!(
        loss_table(&bad).unwrap_err().to_string(),
        "invalid formula threshold(3, a, b): k must be between 1 and 2"
    );
    assert!(loss_table(&Formula::And(Vec::new())).is_err());
    assert!(loss_table(&Formula::Item(String::new())).is_err());
}
