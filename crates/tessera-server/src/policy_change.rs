//! Which rules a policy change weakens, compared rule by rule. A change that weakens any rule
//! of a policy requiring approval must itself be approved by another device
//! ([`crate::policy::set`]); one that only tightens applies at once.

use tessera_api::intent::U256;
use tessera_api::{Policy, TokenRule};

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
        tokens,
        allow_unlimited_approvals,
        arbitrary_calls,
        verifying_contracts,
        btc_destinations,
        max_sat_per_tx,
        max_sat_per_24h,
        max_fee_sat,
        allowed_delegates,
        max_signatures_per_hour,
        hours_utc,
        require_approval,
        approval_timeout_secs,
        approvals,
        admins,
        request_expiry_secs,
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
    if tokens_widen(old.tokens.as_deref(), tokens.as_deref()) {
        out.push("tokens");
    }
    if *allow_unlimited_approvals && !old.allow_unlimited_approvals {
        out.push("allow_unlimited_approvals");
    }
    if arbitrary_calls.iter().flatten().any(|c| {
        !old.arbitrary_calls
            .iter()
            .flatten()
            .any(|before| before.eq_ignore_ascii_case(c))
    }) {
        out.push("arbitrary_calls");
    }
    if widens(
        &old.verifying_contracts,
        verifying_contracts,
        |a: &String, b: &String| a.eq_ignore_ascii_case(b),
    ) {
        out.push("verifying_contracts");
    }
    if widens(
        &old.btc_destinations,
        btc_destinations,
        |a: &String, b: &String| a == b,
    ) {
        out.push("btc_destinations");
    }
    if raises(&old.max_sat_per_tx, max_sat_per_tx) {
        out.push("max_sat_per_tx");
    }
    if raises(&old.max_sat_per_24h, max_sat_per_24h) {
        out.push("max_sat_per_24h");
    }
    if raises(&old.max_fee_sat, max_fee_sat) {
        out.push("max_fee_sat");
    }
    // Absent means none allowed (the opposite of the allow-lists above): any delegate that the
    // old policy did not list widens it.
    let delegates_before = old.allowed_delegates.as_deref().unwrap_or_default();
    if allowed_delegates.iter().flatten().any(|d| {
        !delegates_before
            .iter()
            .any(|before| before.eq_ignore_ascii_case(d))
    }) {
        out.push("allowed_delegates");
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
    // Any other approval quorum or admin quorum counts as weakening: who may approve changes.
    if old.approvals.is_some() && old.approvals != *approvals {
        out.push("approvals");
    }
    if old.admins.is_some() && old.admins != *admins {
        out.push("admins");
    }
    if request_expiry_secs.unwrap_or(tessera_api::requests::DEFAULT_REQUEST_EXPIRY_SECS)
        > old
            .request_expiry_secs
            .unwrap_or(tessera_api::requests::DEFAULT_REQUEST_EXPIRY_SECS)
    {
        out.push("request_expiry_secs");
    }
    out
}

/// The token list (`None`: any token, no per-token limits) is lifted, gains a token, or one of
/// its tokens' rules is loosened (a limit raised or lifted, a spender added or the spender list
/// lifted). A changed standard counts too: it changes how the same call data is read.
fn tokens_widen(old: Option<&[TokenRule]>, new: Option<&[TokenRule]>) -> bool {
    let Some(old) = old else { return false };
    let Some(new) = new else { return true };
    new.iter().any(|n| {
        let Some(o) = old
            .iter()
            .find(|o| o.address.eq_ignore_ascii_case(&n.address))
        else {
            return true;
        };
        o.standard != n.standard
            || raises_amount(&o.max_amount_per_tx, &n.max_amount_per_tx)
            || raises_amount(&o.max_amount_per_24h, &n.max_amount_per_24h)
            || widens(&o.allowed_spenders, &n.allowed_spenders, |a, b| {
                a.eq_ignore_ascii_case(b)
            })
    })
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
fn raises<T: PartialOrd>(old: &Option<T>, new: &Option<T>) -> bool {
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
            tokens: Some(vec![TokenRule {
                address: "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48".into(),
                standard: tessera_api::calls::TokenStandard::Erc20,
                symbol: Some("USDC".into()),
                decimals: Some(6),
                max_amount_per_tx: Some("100".into()),
                max_amount_per_24h: Some("500".into()),
                allowed_spenders: Some(vec!["0x00000000000000000000000000000000000000b0".into()]),
            }]),
            allow_unlimited_approvals: false,
            arbitrary_calls: Some(vec!["0x00000000000000000000000000000000000000c0".into()]),
            verifying_contracts: Some(vec!["0x00000000000000000000000000000000000000d0".into()]),
            btc_destinations: Some(vec!["bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080".into()]),
            max_sat_per_tx: Some(100_000),
            max_sat_per_24h: Some(500_000),
            max_fee_sat: Some(5_000),
            allowed_delegates: Some(vec!["0x00000000000000000000000000000000000000e0".into()]),
            max_signatures_per_hour: Some(5),
            hours_utc: Some([9, 17]),
            require_approval: true,
            approval_timeout_secs: 300,
            approvals: None,
            admins: None,
            request_expiry_secs: None,
        }
    }

    #[test]
    fn token_rules_and_call_allowances() {
        assert_eq!(weakens(|p| p.tokens = None), ["tokens"]);
        let usdc = |p: &mut Policy| p.tokens.as_mut().unwrap()[0].clone();
        assert_eq!(
            weakens(|p| {
                let mut other = usdc(p);
                other.address = "0x1111111111111111111111111111111111111111".into();
                p.tokens.as_mut().unwrap().push(other);
            }),
            ["tokens"]
        );
        assert_eq!(
            weakens(|p| p.tokens.as_mut().unwrap()[0].max_amount_per_tx = Some("101".into())),
            ["tokens"]
        );
        assert_eq!(
            weakens(|p| p.tokens.as_mut().unwrap()[0].max_amount_per_24h = None),
            ["tokens"]
        );
        assert_eq!(
            weakens(|p| p.tokens.as_mut().unwrap()[0].allowed_spenders = None),
            ["tokens"]
        );
        assert_eq!(
            weakens(|p| {
                p.tokens.as_mut().unwrap()[0].standard = tessera_api::calls::TokenStandard::Erc721;
            }),
            ["tokens"]
        );
        tightens(
            |_| {},
            |p| p.tokens.as_mut().unwrap()[0].max_amount_per_tx = Some("1".into()),
        );
        tightens(|_| {}, |p| p.tokens = Some(vec![]));
        tightens(|p| p.tokens = None, |_| {});
        // A symbol or decimals change only how amounts are shown.
        tightens(
            |_| {},
            |p| p.tokens.as_mut().unwrap()[0].symbol = Some("X".into()),
        );

        assert_eq!(
            weakens(|p| p.allow_unlimited_approvals = true),
            ["allow_unlimited_approvals"]
        );
        assert_eq!(
            weakens(|p| p.arbitrary_calls = Some(vec![
                "0x00000000000000000000000000000000000000c0".into(),
                "0x00000000000000000000000000000000000000c1".into(),
            ])),
            ["arbitrary_calls"]
        );
        tightens(|_| {}, |p| p.arbitrary_calls = None);
        assert_eq!(
            weakens(|p| p.verifying_contracts = None),
            ["verifying_contracts"]
        );
        assert_eq!(
            weakens(|p| p.allowed_delegates =
                Some(vec!["0x00000000000000000000000000000000000000e1".into()])),
            ["allowed_delegates"]
        );
        tightens(|_| {}, |p| p.allowed_delegates = None);

        assert_eq!(
            weakens(|p| p.max_sat_per_tx = Some(100_001)),
            ["max_sat_per_tx"]
        );
        assert_eq!(weakens(|p| p.max_fee_sat = None), ["max_fee_sat"]);
        assert_eq!(weakens(|p| p.max_sat_per_24h = None), ["max_sat_per_24h"]);
        assert_eq!(weakens(|p| p.btc_destinations = None), ["btc_destinations"]);
        tightens(|_| {}, |p| p.max_sat_per_tx = Some(1));
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

    fn rule(structure: &str, labels: &[&str]) -> tessera_api::requests::ApprovalRule {
        tessera_api::requests::ApprovalRule {
            structure: structure.into(),
            approvers: labels
                .iter()
                .map(|l| {
                    (
                        (*l).to_string(),
                        tessera_api::requests::Approver::Device(tessera_api::DeviceId::new(
                            format!("d-{l}"),
                        )),
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn quorums_named_where_there_were_none_tighten_and_any_other_change_weakens() {
        let two = rule("and(a, b)", &["a", "b"]);
        // Naming an admin or approval quorum where any one device was enough tightens.
        tightens(|_| {}, |p| p.admins = Some(two.clone()));
        tightens(|_| {}, |p| p.approvals = Some(two.clone()));
        // Lifting one, or changing who is in it (even to a larger quorum), weakens: who may
        // approve changes.
        let with = |f: fn(&mut Policy)| {
            let mut before = strict();
            before.admins = Some(rule("and(a, b)", &["a", "b"]));
            before.approvals = Some(rule("and(a, b)", &["a", "b"]));
            let mut after = before.clone();
            f(&mut after);
            weakenings(&before, &after)
        };
        assert_eq!(with(|p| p.admins = None), ["admins"]);
        assert_eq!(with(|p| p.approvals = None), ["approvals"]);
        assert_eq!(
            with(|p| p.admins = Some(rule("or(a, b)", &["a", "b"]))),
            ["admins"]
        );
        assert_eq!(
            with(|p| p.admins = Some(rule("and(a, c)", &["a", "c"]))),
            ["admins"]
        );
        assert_eq!(
            with(|p| p.approvals = Some(rule("threshold(2, a, b, c)", &["a", "b", "c"]))),
            ["approvals"]
        );
        assert_eq!(
            with(|p| {
                p.admins = None;
                p.approvals = None;
            }),
            ["approvals", "admins"]
        );
        // The same quorum, with other rules unchanged, weakens nothing.
        assert!(with(|_| {}).is_empty());
    }

    #[test]
    fn request_expiry() {
        assert_eq!(
            weakens(
                |p| p.request_expiry_secs = Some(tessera_api::requests::MAX_REQUEST_EXPIRY_SECS)
            ),
            ["request_expiry_secs"]
        );
        tightens(|_| {}, |p| p.request_expiry_secs = Some(60));
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
                "tokens",
                "verifying_contracts",
                "btc_destinations",
                "max_sat_per_tx",
                "max_sat_per_24h",
                "max_fee_sat",
                "max_signatures_per_hour",
                "hours_utc",
                "require_approval",
            ]
        );
    }
}
