//! Approval rules: who must approve a durable signing request, or sign a new version of a
//! policy (its admin quorum). A rule is an access structure over labels, in the grammar of
//! wallet structures (`tessera_core::structure::AccessStructure`: `and(…)`, `or(…)`,
//! `threshold(k, …)`), and each label names one device or one user (any active device of the
//! user speaks for them).
//!
//! A request (or proposal) is authorised when the labels that approved form an authorised set.
//! It is refused as soon as the labels that did not refuse can no longer form one: the refusal
//! of a mandatory approver (one in every authorised set, e.g. `cfo` in
//! `and(cfo, threshold(2, ops-1, ops-2, ops-3))`) refuses at once, and so do two refusals among
//! `ops-*` there. A device speaks for every label that names it or its user.

use std::collections::{BTreeMap, BTreeSet};

use tessera_api::requests::{ApprovalRule, Approver};
use tessera_core::structure::AccessStructure;

use crate::db::DeviceStatus;
use crate::error::{ApiError, ApiResult};

/// A checked rule: its structure parsed, and every label of it named, no other.
#[derive(Clone, Debug)]
pub struct Rule {
    structure: AccessStructure,
    approvers: BTreeMap<String, Approver>,
}

/// Where a rule stands for the decisions given so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    /// The approvals form an authorised set.
    Authorised,
    /// The labels that did not refuse can no longer form an authorised set; the refusing
    /// labels.
    Refused(Vec<String>),
    /// Neither yet.
    Waiting,
}

impl Rule {
    /// Checks `rule`'s shape: the structure parses, every label of it is named in `approvers`,
    /// and `approvers` names no other label.
    ///
    /// # Errors
    /// A message naming the field and what is wrong (the caller's 400).
    pub fn parse(rule: &ApprovalRule) -> Result<Rule, String> {
        let structure = AccessStructure::parse(&rule.structure)
            .map_err(|e| format!("structure {:?}: {e}", rule.structure))?;
        let labels: BTreeSet<&str> = structure.holders().into_iter().collect();
        if let Some(missing) = labels.iter().find(|l| !rule.approvers.contains_key(**l)) {
            return Err(format!(
                "approvers: label {missing:?} of the structure names nobody"
            ));
        }
        if let Some(extra) = rule.approvers.keys().find(|l| !labels.contains(l.as_str())) {
            return Err(format!(
                "approvers: label {extra:?} is not in the structure {:?}",
                rule.structure
            ));
        }
        for (label, approver) in &rule.approvers {
            let id = match approver {
                Approver::Device(d) => d.as_str(),
                Approver::User(u) => u.as_str(),
            };
            if id.is_empty()
                || id.len() > 64
                || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            {
                return Err(format!("approvers: label {label:?} names a malformed id"));
            }
        }
        Ok(Rule {
            structure,
            approvers: rule.approvers.clone(),
        })
    }

    /// Checks that every approver exists: each device registered and not revoked, each user
    /// with at least one active device.
    ///
    /// # Errors
    /// 400 naming the label; a database error.
    pub async fn check_registry(&self, conn: &mut sqlx::AnyConnection) -> ApiResult<()> {
        for (label, approver) in &self.approvers {
            match approver {
                Approver::Device(d) => {
                    let standing = crate::db::devices::standing(&mut *conn, d.as_str()).await?;
                    match standing {
                        Some((DeviceStatus::Active | DeviceStatus::Pending, _)) => {}
                        Some((DeviceStatus::Revoked, _)) => {
                            return Err(ApiError::BadRequest(format!(
                                "approvers: label {label:?} names revoked device {d}"
                            )));
                        }
                        None => {
                            return Err(ApiError::BadRequest(format!(
                                "approvers: label {label:?} names unknown device {d}"
                            )));
                        }
                    }
                }
                Approver::User(u) => {
                    let (count,): (i64,) = sqlx::query_as(
                        "SELECT COUNT(*) FROM devices WHERE user_id = $1 AND status = 'active'",
                    )
                    .bind(u.as_str())
                    .fetch_one(&mut *conn)
                    .await?;
                    if count == 0 {
                        return Err(ApiError::BadRequest(format!(
                            "approvers: label {label:?} names user {u}, who has no active device"
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// The users this rule names: those named, and those whose devices it names (a device
    /// unknown to the registry names nobody).
    ///
    /// # Errors
    /// A database error.
    pub async fn users_named(&self, conn: &mut sqlx::AnyConnection) -> ApiResult<BTreeSet<String>> {
        let mut users = BTreeSet::new();
        for approver in self.approvers.values() {
            match approver {
                Approver::Device(d) => {
                    if let Some((_, user)) =
                        crate::db::devices::standing(&mut *conn, d.as_str()).await?
                    {
                        users.insert(user);
                    }
                }
                Approver::User(u) => {
                    users.insert(u.as_str().to_string());
                }
            }
        }
        Ok(users)
    }

    /// The labels that `device_id` (of `user_id`) speaks for, in label order.
    #[must_use]
    pub fn labels_of(&self, device_id: &str, user_id: &str) -> Vec<String> {
        self.approvers
            .iter()
            .filter(|(_, a)| match a {
                Approver::Device(d) => d.as_str() == device_id,
                Approver::User(u) => u.as_str() == user_id,
            })
            .map(|(label, _)| label.clone())
            .collect()
    }

    /// The devices named directly and the users named, for telling them about work.
    #[must_use]
    pub fn named(&self) -> (Vec<&str>, Vec<&str>) {
        let mut devices = Vec::new();
        let mut users = Vec::new();
        for approver in self.approvers.values() {
            match approver {
                Approver::Device(d) => devices.push(d.as_str()),
                Approver::User(u) => users.push(u.as_str()),
            }
        }
        (devices, users)
    }

    /// Where the rule stands, given the labels that approved and those that refused.
    #[must_use]
    pub fn standing(&self, approved: &BTreeSet<String>, refused: &BTreeSet<String>) -> Standing {
        let yes: Vec<&str> = approved
            .iter()
            .filter(|l| !refused.contains(*l))
            .map(String::as_str)
            .collect();
        if self.structure.is_authorised(&yes) {
            return Standing::Authorised;
        }
        let not_refused: Vec<&str> = self
            .approvers
            .keys()
            .filter(|l| !refused.contains(*l))
            .map(String::as_str)
            .collect();
        if self.structure.is_authorised(&not_refused) {
            Standing::Waiting
        } else {
            Standing::Refused(refused.iter().cloned().collect())
        }
    }

    /// The structure, as text.
    #[must_use]
    pub fn structure_text(&self) -> String {
        self.structure.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_api::{DeviceId, UserId};

    fn rule() -> Rule {
        let mut approvers = BTreeMap::new();
        approvers.insert("cfo".to_string(), Approver::User(UserId::new("u-cfo")));
        for i in 1..=3 {
            approvers.insert(
                format!("ops-{i}"),
                Approver::Device(DeviceId::new(format!("d-ops-{i}"))),
            );
        }
        Rule::parse(&ApprovalRule {
            structure: "and(cfo, threshold(2, ops-1, ops-2, ops-3))".into(),
            approvers,
        })
        .unwrap()
    }

    fn set(labels: &[&str]) -> BTreeSet<String> {
        labels.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn every_subset_of_approvals_is_judged_by_the_structure() {
        let rule = rule();
        let labels = ["cfo", "ops-1", "ops-2", "ops-3"];
        for mask in 0u32..16 {
            let approved: Vec<&str> = (0..4)
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| labels[i])
                .collect();
            let ops = approved.iter().filter(|l| l.starts_with("ops")).count();
            let expected = if approved.contains(&"cfo") && ops >= 2 {
                Standing::Authorised
            } else {
                Standing::Waiting
            };
            assert_eq!(
                rule.standing(&set(&approved), &BTreeSet::new()),
                expected,
                "{approved:?}"
            );
        }
    }

    #[test]
    fn a_mandatory_refusal_refuses_and_others_only_when_no_set_is_left() {
        let rule = rule();
        assert_eq!(
            rule.standing(&set(&["ops-1", "ops-2"]), &set(&["cfo"])),
            Standing::Refused(vec!["cfo".into()])
        );
        assert_eq!(
            rule.standing(&set(&["cfo"]), &set(&["ops-1"])),
            Standing::Waiting
        );
        assert_eq!(
            rule.standing(&set(&["cfo"]), &set(&["ops-1", "ops-3"])),
            Standing::Refused(vec!["ops-1".into(), "ops-3".into()])
        );
    }

    #[test]
    fn a_device_speaks_for_its_labels_and_its_users() {
        let rule = rule();
        assert_eq!(rule.labels_of("d-ops-2", "u-x"), ["ops-2"]);
        assert_eq!(rule.labels_of("d-any", "u-cfo"), ["cfo"]);
        assert!(rule.labels_of("d-other", "u-other").is_empty());
    }

    #[test]
    fn labels_must_match_the_structure() {
        let mut approvers = BTreeMap::new();
        approvers.insert("a".to_string(), Approver::Device(DeviceId::new("d1")));
        let missing = Rule::parse(&ApprovalRule {
            structure: "and(a, b)".into(),
            approvers: approvers.clone(),
        })
        .unwrap_err();
        assert!(missing.contains("\"b\""), "{missing}");
        approvers.insert("c".to_string(), Approver::Device(DeviceId::new("d3")));
        approvers.insert("b".to_string(), Approver::Device(DeviceId::new("d2")));
        let extra = Rule::parse(&ApprovalRule {
            structure: "and(a, b)".into(),
            approvers,
        })
        .unwrap_err();
        assert!(extra.contains("\"c\""), "{extra}");
        let bad = Rule::parse(&ApprovalRule {
            structure: "and(a,".into(),
            approvers: BTreeMap::new(),
        })
        .unwrap_err();
        assert!(bad.starts_with("structure"), "{bad}");
    }
}
