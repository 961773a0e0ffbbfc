//! Which rules a policy change weakens, compared rule by rule. A change that weakens any rule
//! of a policy requiring approval must itself be approved by another device
//! ([`crate::policy::set`]); one that only tightens applies at once.

use tessera_api::Policy;
use tessera_api::intent::U256;

/// The rules of `old` that `new` weakens (allows something `old` did not), by field name, in
/// the order of [`Policy`]'s fields. Empty when `new` allows nothing that `old` denied.
#[must_use]
pub fn weakenings(old: &Policy, new: &Policy) -> Vec<&'static str> {
    // Destructured without `..`: a new rule does not compile until it is compared here.
    let Policy {
        allowed_kinds,
        chain_ids,
        destinations,
        max_value_per_tx,
        max_value_per_24h,
        max_fee_per_tx,
        max_signatures_per_hour,
        hours_utc,
        require_approval,
        approval_timeout_secs,
    } = new;
    let mut out = Vec::new();
    if allowed_kinds.iter().any(|k| !old.allowed_kinds.contains(k)) {
        out.push("allowed_kinds");
    }
    if widens(&old.chain_ids, chain_ids, |a, b| a == b) {
        out.push("chain_ids");
    }
    if widens(&old.destinations, destinations, |a: &String, b: &String| {
        a.eq_ignore_ascii_case(b)
    }) {
        out.push("destinations");
    }
    if raises_amount(&old.max_value_per_tx, max_value_per_tx) {
        out.push("max_value_per_tx");
    }
    if raises_amount(&old.max_value_per_24h, max_value_per_24h) {
        out.push("max_value_per_24h");
    }
    if raises_amount(&old.max_fee_per_tx, max_fee_per_tx) {
        out.push("max_fee_per_tx");
    }
    if raises(&old.max_signatures_per_hour, max_signatures_per_hour) {
        out.push("max_signatures_per_hour");
    }
    if let Some(before) = old.hours_utc {
        let allowed_before = hours(before);
        let widened = match hours_utc {
            None => true,
            Some(after) => hours(*after)
                .iter()
                .zip(allowed_before.iter())
                .any(|(now, then)| *now && !*then),
        };
        if widened {
            out.push("hours_utc");
        }
    }
    if old.require_approval && !require_approval {
        out.push("require_approval");
    }
    if *approval_timeout_secs > old.approval_timeout_secs {
        out.push("approval_timeout_secs");
    }
    out
}

/// An allow-list (`None`: everything) gains an element, or is lifted.
fn widens<T>(old: &Option<Vec<T>>, new: &Option<Vec<T>>, same: impl Fn(&T, &T) -> bool) -> bool {
    match (old, new) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(before), Some(after)) => after.iter().any(|a| !before.iter().any(|b| same(a, b))),
    }
}

/// A limit (`None`: none) is raised or lifted.
fn raises(old: &Option<u32>, new: &Option<u32>) -> bool {
    match (old, new) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(before), Some(after)) => after > before,
    }
}

/// A wei limit (`None`: none) is raised or lifted; an amount that does not parse (refused
/// before by the policy check) counts as raised.
fn raises_amount(old: &Option<String>, new: &Option<String>) -> bool {
    let parse = |v: &String| U256::from_str_radix(v, 10).ok();
    match (old, new) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(before), Some(after)) => match (parse(before), parse(after)) {
            (Some(before), Some(after)) => after > before,
            _ => true,
        },
    }
}

/// The hours of the day a window `[start, end)` (may wrap midnight) allows.
fn hours([start, end]: [u8; 2]) -> [bool; 24] {
    let mut out = [false; 24];
    for (h, allowed) in out.iter_mut().enumerate() {
        let h = h as u8;
        *allowed = if start < end {
            h >= start && h < end
        } else {
            h >= start || h < end
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_api::RequestKind;

    fn strict() -> Policy {
        Policy {
            allowed_kinds: vec![RequestKind::EthTx],
            chain_ids: Some(vec![1, 10]),
            destinations: Some(vec!["0xAAaa000000000000000000000000000000000001".into()]),
            max_value_per_tx: Some("1000".into()),
            max_value_per_24h: Some("5000".into()),
            max_fee_per_tx: Some("100".into()),
            max_signatures_per_hour: Some(5),
            hours_utc: Some([9, 17]),
            require_approval: true,
            approval_timeout_secs: 300,
        }
    }

    fn weakens(change: impl FnOnce(&mut Policy)) -> Vec<&'static str> {
        let mut new = strict();
        change(&mut new);
        weakenings(&strict(), &new)
    }

    fn tightens(old: impl FnOnce(&mut Policy), new: impl FnOnce(&mut Policy)) {
        let (mut before, mut after) = (strict(), strict());
        old(&mut before);
        new(&mut after);
        assert_eq!(weakenings(&before, &after), Vec::<&str>::new());
    }

    #[test]
    fn the_same_policy_weakens_nothing() {
        assert!(weakenings(&strict(), &strict()).is_empty());
        assert!(weakenings(&Policy::default(), &Policy::default()).is_empty());
    }

    #[test]
    fn allowed_kinds() {
        assert_eq!(
            weakens(|p| p.allowed_kinds.push(RequestKind::Digest)),
            ["allowed_kinds"]
        );
        assert_eq!(
            weakens(|p| p.allowed_kinds = vec![RequestKind::EthMessage]),
            ["allowed_kinds"]
        );
        tightens(|p| p.allowed_kinds.push(RequestKind::Digest), |_| {});
        tightens(|_| {}, |p| p.allowed_kinds.clear());
    }

    #[test]
    fn chain_ids() {
        assert_eq!(weakens(|p| p.chain_ids = None), ["chain_ids"]);
        assert_eq!(
            weakens(|p| p.chain_ids = Some(vec![1, 10, 137])),
            ["chain_ids"]
        );
        assert_eq!(weakens(|p| p.chain_ids = Some(vec![137])), ["chain_ids"]);
        tightens(|_| {}, |p| p.chain_ids = Some(vec![1]));
        tightens(|p| p.chain_ids = None, |_| {});
    }

    #[test]
    fn destinations() {
        assert_eq!(weakens(|p| p.destinations = None), ["destinations"]);
        assert_eq!(
            weakens(|p| p
                .destinations
                .as_mut()
                .unwrap()
                .push("0x2222222222222222222222222222222222222222".into())),
            ["destinations"]
        );
        // The same address in another case is the same destination.
        tightens(
            |_| {},
            |p| p.destinations = Some(vec!["0xaaAA000000000000000000000000000000000001".into()]),
        );
        tightens(|_| {}, |p| p.destinations = Some(vec![]));
        tightens(|p| p.destinations = None, |_| {});
    }

    #[test]
    fn value_limits() {
        assert_eq!(weakens(|p| p.max_value_per_tx = None), ["max_value_per_tx"]);
        assert_eq!(
            weakens(|p| p.max_value_per_tx = Some("1001".into())),
            ["max_value_per_tx"]
        );
        assert_eq!(
            weakens(|p| p.max_value_per_24h = Some("5001".into())),
            ["max_value_per_24h"]
        );
        assert_eq!(
            weakens(|p| p.max_value_per_24h = None),
            ["max_value_per_24h"]
        );
        // Compared as numbers, not as text ("999" > "1000" as text).
        tightens(|_| {}, |p| p.max_value_per_tx = Some("999".into()));
        assert_eq!(
            weakens(|p| p.max_value_per_tx = Some("10000".into())),
            ["max_value_per_tx"]
        );
        tightens(|p| p.max_value_per_24h = None, |_| {});
        assert_eq!(weakens(|p| p.max_fee_per_tx = None), ["max_fee_per_tx"]);
        assert_eq!(
            weakens(|p| p.max_fee_per_tx = Some("101".into())),
            ["max_fee_per_tx"]
        );
        tightens(|_| {}, |p| p.max_fee_per_tx = Some("99".into()));
    }

    #[test]
    fn signatures_per_hour() {
        assert_eq!(
            weakens(|p| p.max_signatures_per_hour = Some(6)),
            ["max_signatures_per_hour"]
        );
        assert_eq!(
            weakens(|p| p.max_signatures_per_hour = None),
            ["max_signatures_per_hour"]
        );
        tightens(|_| {}, |p| p.max_signatures_per_hour = Some(0));
        tightens(|p| p.max_signatures_per_hour = None, |_| {});
    }

    #[test]
    fn hours() {
        assert_eq!(weakens(|p| p.hours_utc = None), ["hours_utc"]);
        assert_eq!(weakens(|p| p.hours_utc = Some([8, 17])), ["hours_utc"]);
        assert_eq!(weakens(|p| p.hours_utc = Some([16, 18])), ["hours_utc"]);
        // A window wrapping midnight covers hours outside [9, 17).
        assert_eq!(weakens(|p| p.hours_utc = Some([22, 2])), ["hours_utc"]);
        tightens(|_| {}, |p| p.hours_utc = Some([10, 12]));
        tightens(
            |p| p.hours_utc = Some([22, 6]),
            |p| p.hours_utc = Some([23, 1]),
        );
        tightens(|p| p.hours_utc = None, |_| {});
    }

    #[test]
    fn approval() {
        assert_eq!(
            weakens(|p| p.require_approval = false),
            ["require_approval"]
        );
        assert_eq!(
            weakens(|p| p.approval_timeout_secs = 301),
            ["approval_timeout_secs"]
        );
        tightens(|_| {}, |p| p.approval_timeout_secs = 60);
        tightens(|p| p.require_approval = false, |_| {});
    }

    #[test]
    fn every_weakened_rule_is_named() {
        assert_eq!(
            weakenings(&strict(), &Policy::default()),
            [
                "allowed_kinds",
                "chain_ids",
                "destinations",
                "max_value_per_tx",
                "max_value_per_24h",
                "max_fee_per_tx",
                "max_signatures_per_hour",
                "hours_utc",
                "require_approval",
            ]
        );
    }
}
