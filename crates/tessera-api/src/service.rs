//! Service accounts and webhooks (issue 16).
//!
//! A service account is a user's backend (an exchange's withdrawal service, say) that creates
//! signing requests with its own Ed25519 key. An active device of the user registers it, scoped
//! to wallets and request kinds, with an identity signature over [`service_account_message`];
//! the account authenticates like a device (a signed challenge, [`service_auth_message`]) and gets
//! a token for another audience, which no device endpoint accepts. It never holds a share.
//!
//! Webhooks: the server POSTs each request state change as a [`WebhookEvent`] to a configured
//! URL, with [`SIGNATURE_HEADER`] = the hex Ed25519 signature (RFC 8032) of the exact body bytes
//! by the server's token key, published at `GET /webhooks/key` ([`WebhookKey`]).

use serde::{Deserialize, Serialize};

use crate::requests::RequestInfo;
use crate::{DeviceId, RequestKind, ServiceAccountId, UserId, WalletId};

/// The header carrying a webhook body's signature: hex Ed25519 over the exact body bytes.
pub const SIGNATURE_HEADER: &str = "Tessera-Signature";
/// The header carrying a webhook delivery's id (the same on every retry: receivers deduplicate).
pub const DELIVERY_HEADER: &str = "Tessera-Delivery";

const SERVICE_ACCOUNT_CONTEXT: &[u8] = b"tessera/service-account/v1";
const SERVICE_REVOKE_CONTEXT: &[u8] = b"tessera/service-account-revoke/v1";
const SERVICE_AUTH_CONTEXT: &[u8] = b"tessera/service-auth/v1";

fn put(m: &mut Vec<u8>, field: &[u8]) {
    m.extend_from_slice(&(field.len() as u64).to_be_bytes());
    m.extend_from_slice(field);
}

/// What the registering device signs: the account's name, public key, wallets and kinds, each
/// length-prefixed (lists with their count first), so no field can be moved into another.
#[must_use]
pub fn service_account_message(
    name: &str,
    public_key: &[u8; 32],
    wallets: &[WalletId],
    kinds: &[RequestKind],
) -> Vec<u8> {
    let mut m = SERVICE_ACCOUNT_CONTEXT.to_vec();
    put(&mut m, name.as_bytes());
    put(&mut m, public_key);
    m.extend_from_slice(&(wallets.len() as u64).to_be_bytes());
    for w in wallets {
        put(&mut m, w.as_str().as_bytes());
    }
    m.extend_from_slice(&(kinds.len() as u64).to_be_bytes());
    for k in kinds {
        put(&mut m, k.as_str().as_bytes());
    }
    m
}

/// What a device signs to revoke a service account.
#[must_use]
pub fn service_revoke_message(service_id: &str) -> Vec<u8> {
    let mut m = SERVICE_REVOKE_CONTEXT.to_vec();
    put(&mut m, service_id.as_bytes());
    m
}

/// What a service account signs with its key to get a token: its id and the challenge.
#[must_use]
pub fn service_auth_message(service_id: &str, challenge: &[u8]) -> Vec<u8> {
    let mut m = SERVICE_AUTH_CONTEXT.to_vec();
    put(&mut m, service_id.as_bytes());
    put(&mut m, challenge);
    m
}

/// `POST /service-accounts`: register a service account, by an active device of the user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AddServiceAccount {
    /// A name shown to people (checked as device names are).
    pub name: String,
    /// The account's Ed25519 public key, 64 hex digits.
    pub public_key: String,
    /// The wallets it may create requests for (the user's own).
    pub wallets: Vec<WalletId>,
    /// The kinds of request it may create.
    pub kinds: Vec<RequestKind>,
    /// The device's identity signature over [`service_account_message`], hex.
    pub signature: String,
}

/// `POST /service-accounts/{id}/revoke`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RevokeServiceAccount {
    /// The device's identity signature over [`service_revoke_message`], hex.
    pub signature: String,
}

/// A service account as the server describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceAccount {
    /// Its id.
    pub service_id: ServiceAccountId,
    /// The user it acts for.
    pub user_id: UserId,
    /// Its name.
    pub name: String,
    /// Its Ed25519 public key, hex.
    pub public_key: String,
    /// The wallets it may create requests for.
    pub wallets: Vec<WalletId>,
    /// The kinds of request it may create.
    pub kinds: Vec<RequestKind>,
    /// The device that registered it.
    pub created_by: DeviceId,
    /// When, RFC 3339.
    pub created_at: String,
    /// When it was revoked, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

/// `POST /auth/service/challenge`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ServiceChallengeRequest {
    /// The service account.
    pub service_id: ServiceAccountId,
}

/// `POST /auth/service/token`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ServiceTokenRequest {
    /// The service account.
    pub service_id: ServiceAccountId,
    /// The challenge it was given, hex.
    pub challenge: String,
    /// Its Ed25519 signature over [`service_auth_message`], hex.
    pub signature: String,
}

/// `GET /webhooks/key`: the key webhook bodies are signed with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookKey {
    /// The server's Ed25519 public key, 64 hex digits.
    pub public_key: String,
}

/// A webhook body: a request's new state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookEvent {
    /// `request.<state>`, e.g. `request.signed`.
    pub event: String,
    /// The request as it stands.
    pub request: RequestInfo,
    /// When the change was queued, RFC 3339.
    pub at: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_cannot_slide_into_each_other() {
        let key = [7u8; 32];
        let w = |s: &str| WalletId::from(s.to_string());
        let a = service_account_message("ab", &key, &[w("c")], &[RequestKind::Digest]);
        let b = service_account_message("a", &key, &[w("bc")], &[RequestKind::Digest]);
        assert_ne!(a, b);
        let c = service_account_message("a", &key, &[w("b"), w("c")], &[]);
        let d = service_account_message("a", &key, &[w("bc")], &[]);
        assert_ne!(c, d);
        assert_ne!(
            service_account_message("a", &key, &[], &[RequestKind::EthTx]),
            service_account_message("a", &key, &[], &[RequestKind::Digest])
        );
        assert_ne!(service_auth_message("s", b"x"), service_revoke_message("s"));
    }
}
