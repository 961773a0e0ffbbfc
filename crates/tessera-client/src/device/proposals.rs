//! Policy changes by the policy's admin quorum (issue 16): proposing a version, listing the
//! proposals waiting, and signing one after showing it.
//!
//! Every admin signs [`api::policy_message`] over the wallet, the version and the policy's JSON
//! as `serde_json` writes [`api::Policy`]; before signing, the SDK checks that the JSON of the
//! policy it was shown hashes to the proposal's `policy_sha256`, so that what a person approved is
//! what is signed.

use sha2::{Digest, Sha256};
use tessera_api::proposals::{
    PolicyOutcome, PolicyView, ProposalInfo, ProposalState, SignProposal,
};
use tessera_api::{self as api};
use tessera_store::DeviceIdentity;

use super::{DeviceError, Online};
use crate::{ClientError, Result, ServerClient};

fn net(e: impl std::fmt::Display) -> ClientError {
    ClientError::Network(e.to_string())
}

/// Ids in a query string: the server's ids are hex or UUIDs.
fn query_id(what: &str, id: &str) -> Result<()> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(ClientError::Network(format!(
            "{what} {id:?} is not an id (letters, digits and '-')"
        )));
    }
    Ok(())
}

impl ServerClient {
    /// `GET /policy?wallet=…` with its warning (one device alone can change the policy).
    ///
    /// # Errors
    /// Network or server errors.
    pub async fn policy_view(&self, wallet_id: &str) -> Result<PolicyView> {
        query_id("wallet", wallet_id)?;
        self.get(&format!("/policy?wallet={wallet_id}")).await
    }

    /// `PUT /policy` of the next version, signed by `identity`: applied, held for another
    /// device's approval, or proposed to the admin quorum of the policy in force.
    ///
    /// # Errors
    /// Network or server errors (403: not an admin; 409: the policy changed meanwhile).
    pub async fn submit_policy(
        &self,
        identity: &DeviceIdentity,
        wallet_id: &str,
        policy: &api::Policy,
    ) -> Result<PolicyOutcome> {
        let current = self.policy_view(wallet_id).await?;
        let version = current.info.version + 1;
        let text = serde_json::to_string(policy).map_err(net)?;
        let signature = hex::encode(identity.sign(&api::policy_message(wallet_id, version, &text)));
        self.put(
            "/policy",
            &api::SetPolicy {
                wallet_id: wallet_id.into(),
                version,
                policy: policy.clone(),
                signature,
            },
        )
        .await
    }

    /// `GET /policy/proposals`: of one wallet, or of every wallet this device owns or
    /// administers; pending ones unless `state` says.
    ///
    /// # Errors
    /// Network or server errors.
    pub async fn policy_proposals(
        &self,
        wallet_id: Option<&str>,
        state: Option<ProposalState>,
    ) -> Result<Vec<ProposalInfo>> {
        let mut params = Vec::new();
        if let Some(w) = wallet_id {
            query_id("wallet", w)?;
            params.push(format!("wallet={w}"));
        }
        if let Some(s) = state {
            params.push(format!("state={s}"));
        }
        let query = if params.is_empty() {
            String::new()
        } else {
            format!("?{}", params.join("&"))
        };
        self.get(&format!("/policy/proposals{query}")).await
    }

    /// `GET /policy/proposals/{id}`.
    ///
    /// # Errors
    /// Network or server errors (404: no such proposal of a wallet this device may see).
    pub async fn policy_proposal(&self, id: &str) -> Result<ProposalInfo> {
        query_id("proposal", id)?;
        self.get(&format!("/policy/proposals/{id}")).await
    }

    /// Signs `proposal` (as it was shown) with `identity`: the proposal after the signature,
    /// `applied` when it completed the admin quorum.
    ///
    /// # Errors
    /// [`ClientError::Network`] when the policy shown does not hash to the proposal's
    /// `policy_sha256` (nothing is signed); network or server errors (403: not an admin; 409:
    /// no longer pending, or the policy changed meanwhile).
    pub async fn sign_policy_proposal(
        &self,
        identity: &DeviceIdentity,
        proposal: &ProposalInfo,
    ) -> Result<ProposalInfo> {
        query_id("proposal", proposal.id.as_str())?;
        let text = signed_text(proposal)?;
        let signature = hex::encode(identity.sign(&api::policy_message(
            proposal.wallet_id.as_str(),
            proposal.version,
            &text,
        )));
        self.post(
            &format!("/policy/proposals/{}/sign", proposal.id),
            &SignProposal { signature },
        )
        .await
    }
}

/// The bytes an admin signs for `proposal`: its policy's JSON, checked against its hash.
///
/// # Errors
/// [`ClientError::Network`] when they differ.
pub fn signed_text(proposal: &ProposalInfo) -> Result<String> {
    let text = serde_json::to_string(&proposal.policy).map_err(net)?;
    let hash = hex::encode(Sha256::digest(text.as_bytes()));
    if !hash.eq_ignore_ascii_case(&proposal.policy_sha256) {
        return Err(ClientError::Network(format!(
            "proposal {}: its policy hashes to {hash}, not to the policy_sha256 {} it names; not signed",
            proposal.id, proposal.policy_sha256
        )));
    }
    Ok(text)
}

impl Online {
    /// A wallet's id: of the local wallet named `wallet`, or `wallet` itself (an id, for a
    /// wallet this device administers without a share of it).
    fn wallet_ref(&self, wallet: &str) -> String {
        self.wallet(wallet)
            .map(|r| r.current.wallet_id().to_string())
            .unwrap_or_else(|_| wallet.to_string())
    }

    /// A wallet's policy on the server, with its warning.
    ///
    /// # Errors
    /// [`DeviceError::Client`].
    pub async fn policy_view(&self, wallet: &str) -> std::result::Result<PolicyView, DeviceError> {
        Ok(self.client.policy_view(&self.wallet_ref(wallet)).await?)
    }

    /// Proposes a wallet's next policy, signed by this device: applied, held for another
    /// device's approval, or proposed to the admin quorum (waiting for its other signatures).
    ///
    /// # Errors
    /// [`DeviceError::Client`].
    pub async fn propose_policy(
        &self,
        wallet: &str,
        policy: &api::Policy,
    ) -> std::result::Result<PolicyOutcome, DeviceError> {
        Ok(self
            .client
            .submit_policy(&self.identity, &self.wallet_ref(wallet), policy)
            .await?)
    }

    /// Policy proposals waiting (or in `state`), of `wallet` or of every wallet this device
    /// owns or administers.
    ///
    /// # Errors
    /// [`DeviceError::Client`].
    pub async fn policy_proposals(
        &self,
        wallet: Option<&str>,
        state: Option<ProposalState>,
    ) -> std::result::Result<Vec<ProposalInfo>, DeviceError> {
        let id = wallet.map(|w| self.wallet_ref(w));
        Ok(self.client.policy_proposals(id.as_deref(), state).await?)
    }

    /// One policy proposal, to show before signing it.
    ///
    /// # Errors
    /// [`DeviceError::Client`].
    pub async fn policy_proposal(
        &self,
        id: &str,
    ) -> std::result::Result<ProposalInfo, DeviceError> {
        Ok(self.client.policy_proposal(id).await?)
    }

    /// Signs a proposal as it was shown: the proposal after the signature.
    ///
    /// # Errors
    /// [`DeviceError::Client`].
    pub async fn sign_policy_proposal(
        &self,
        proposal: &ProposalInfo,
    ) -> std::result::Result<ProposalInfo, DeviceError> {
        Ok(self
            .client
            .sign_policy_proposal(&self.identity, proposal)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proposal(policy: api::Policy) -> ProposalInfo {
        let text = serde_json::to_string(&policy).unwrap();
        ProposalInfo {
            id: "p1".into(),
            wallet_id: "00".repeat(16).into(),
            version: 2,
            policy,
            policy_sha256: hex::encode(Sha256::digest(text.as_bytes())),
            weakens: vec![],
            proposed_by: "d1".into(),
            signers: vec![],
            waiting_for: "and(a, b)".into(),
            state: ProposalState::Pending,
            created_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn what_is_signed_is_what_was_shown() {
        let p = proposal(api::Policy::default());
        assert_eq!(
            signed_text(&p).unwrap(),
            serde_json::to_string(&api::Policy::default()).unwrap()
        );
        // A server that shows one policy and names the hash of another gets no signature.
        let mut shown = p.clone();
        shown.policy.require_approval = true;
        let err = signed_text(&shown).unwrap_err().to_string();
        assert!(err.contains("not signed"), "{err}");
    }

    #[test]
    fn ids_in_queries_are_checked() {
        assert!(query_id("wallet", "ab12-cd").is_ok());
        for bad in ["", "a&state=x", "a/b", "a b"] {
            assert!(query_id("wallet", bad).is_err(), "{bad:?}");
        }
    }
}
