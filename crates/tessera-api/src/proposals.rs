//! Policy changes by the policy's admin quorum (issue 16, item 5).
//!
//! A policy may name its own admin quorum ([`crate::Policy::admins`], an
//! [`ApprovalRule`](crate::requests::ApprovalRule)). Then `PUT /policy` does not apply a new
//! version: it proposes it, signed by the calling admin device over [`crate::policy_message`]
//! (the wallet, the new version and the policy's JSON). Every other admin signs the same bytes
//! (`POST /policy/proposals/{id}/sign`); once the signers' labels form an authorised set of the
//! quorum, the version applies, and until then the old one does. A policy without an admin
//! quorum is changed by any one active device of its owner, and `GET /policy` says so
//! ([`PolicyView::warning`]).

use serde::{Deserialize, Serialize};

use crate::{DeviceId, HeldAction, Policy, PolicyInfo, ProposalId, WalletId};

/// Where a proposal stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ProposalState {
    /// Waiting for more admin signatures.
    Pending,
    /// Signed by an authorised set of admins: its version is in force (or was).
    Applied,
    /// Another proposal for the same version applied first: this one never will.
    Superseded,
}

impl ProposalState {
    /// As stored and written.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ProposalState::Pending => "pending",
            ProposalState::Applied => "applied",
            ProposalState::Superseded => "superseded",
        }
    }
}

impl std::str::FromStr for ProposalState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pending" => Ok(ProposalState::Pending),
            "applied" => Ok(ProposalState::Applied),
            "superseded" => Ok(ProposalState::Superseded),
            other => Err(format!(
                "unknown proposal state {other:?}: use pending, applied or superseded"
            )),
        }
    }
}

impl std::fmt::Display for ProposalState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One admin's signature of a proposal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProposalSigner {
    /// The signing device.
    pub device_id: DeviceId,
    /// The labels of the admin quorum it speaks for.
    pub labels: Vec<String>,
    /// Its identity signature over [`crate::policy_message`], hex.
    pub signature: String,
    /// When, RFC 3339.
    pub at: String,
}

/// A proposed policy version (`GET /policy/proposals`, and `PUT /policy`'s 202).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProposalInfo {
    /// The proposal.
    pub id: ProposalId,
    /// The wallet, hex id.
    pub wallet_id: WalletId,
    /// The version it would set: the one in force when it was proposed, plus one.
    pub version: u64,
    /// The policy proposed. Its JSON as `serde_json` writes this struct is what every admin
    /// signs ([`crate::policy_message`]).
    pub policy: Policy,
    /// SHA-256 of that JSON, hex: two proposals of the same version differ by it.
    pub policy_sha256: String,
    /// The rules of the policy in force that it weakens (field names).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weakens: Vec<String>,
    /// The device that proposed it.
    pub proposed_by: DeviceId,
    /// The admins that signed it so far (the proposer first).
    pub signers: Vec<ProposalSigner>,
    /// The admin quorum it waits for, e.g. `and(a, b)`.
    pub waiting_for: String,
    /// Where it stands.
    pub state: ProposalState,
    /// When it was proposed, RFC 3339.
    pub created_at: String,
}

/// `POST /policy/proposals/{id}/sign`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SignProposal {
    /// The device's identity signature over [`crate::policy_message`] of the proposal's
    /// wallet, version and policy JSON, hex.
    pub signature: String,
}

/// `GET /policy/proposals?wallet=&state=`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
pub struct ProposalQuery {
    /// Only this wallet's (hex id). Absent: every wallet whose policy the caller owns or
    /// administers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wallet: Option<WalletId>,
    /// Only proposals in this state. Absent: pending ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ProposalState>,
}

/// The answer to `PUT /policy`: applied (200), held for another device's approval (202, a
/// policy without an admin quorum that requires approval), or proposed to the admin quorum
/// (202). The same `outcome` tags as [`crate::PolicyChange`], and one more.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum PolicyOutcome {
    /// The policy in force now.
    Applied(Box<PolicyInfo>),
    /// Held for another device's approval.
    Held(HeldAction),
    /// Waiting for the admin quorum's signatures.
    Proposed(Box<ProposalInfo>),
}

/// `GET /policy?wallet=…`: the policy in force and, when one device alone can change it, a
/// warning saying so.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolicyView {
    /// The policy in force.
    #[serde(flatten)]
    pub info: PolicyInfo,
    /// Set when the policy names no admin quorum (any one active device of the owner changes
    /// it), or one that a single device satisfies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// The warning of a policy without an admin quorum.
pub const NO_ADMIN_QUORUM_WARNING: &str = "one device alone can change this policy: it names \
     no admin quorum, so any active device of the owner sets a new version. Name one with \
     \"admins\", e.g. {\"structure\": \"and(laptop, phone)\", \"approvers\": {\"laptop\": \
     {\"device\": \"<device id>\"}, \"phone\": {\"device\": \"<device id>\"}}}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_read_as_policy_changes_where_they_share_a_tag() {
        let info = PolicyInfo {
            wallet_id: "00".repeat(16).into(),
            version: 1,
            policy: Policy::default(),
            set_by: None,
            set_at: None,
        };
        let text = serde_json::to_string(&PolicyOutcome::Applied(Box::new(info.clone()))).unwrap();
        let old: crate::PolicyChange = serde_json::from_str(&text).unwrap();
        assert_eq!(old, crate::PolicyChange::Applied(Box::new(info.clone())));
        let view = PolicyView {
            info: info.clone(),
            warning: Some(NO_ADMIN_QUORUM_WARNING.into()),
        };
        let text = serde_json::to_string(&view).unwrap();
        // A client that knows only PolicyInfo still reads the view.
        let plain: PolicyInfo = serde_json::from_str(&text).unwrap();
        assert_eq!(plain, info);
        assert_eq!(serde_json::from_str::<PolicyView>(&text).unwrap(), view);
    }

    #[test]
    fn states_round_trip_and_unknown_ones_are_named() {
        for s in [
            ProposalState::Pending,
            ProposalState::Applied,
            ProposalState::Superseded,
        ] {
            assert_eq!(s.as_str().parse::<ProposalState>().unwrap(), s);
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        assert!(
            "done"
                .parse::<ProposalState>()
                .unwrap_err()
                .contains("done")
        );
    }
}
