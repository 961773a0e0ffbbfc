//! Durable signing requests (`POST /requests`), their approvals by quorum, and the event stream
//! that tells a device about work waiting for it (`GET /events`).
//!
//! A request is created by a device or a service account with its decoded intent and digest,
//! and moves through [`RequestState`]: `awaiting_approval → ready → signing → signed`, or
//! `refused | expired | failed`. Approvers sign [`request_decision_message`] over the request id,
//! its digest and the summary they were shown, so an approval cannot be replayed for another
//! request nor given to a summary the server did not show. Protocol sessions are created only
//! for a `ready` request whose co-signers are online (`POST /requests/{id}/session`), so the
//! sessions' idle rule never applies to a waiting request.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{DeviceId, EventKind, RequestId, RequestKind, RequestState, ServiceAccountId};
use crate::{ServerSessionId, UserId, WalletId};

/// A request's default life when neither the request nor the policy names one: 24 hours.
pub const DEFAULT_REQUEST_EXPIRY_SECS: u64 = 86_400;

/// The longest life of a request: 7 days.
pub const MAX_REQUEST_EXPIRY_SECS: u64 = 7 * 86_400;

/// Who must approve (or sign a policy change): an access structure over approver labels, in
/// the grammar of wallet structures (`and(…)`, `or(…)`, `threshold(k, …)`), and what each label
/// names. A label's refusal refuses the request when the approvers left can no longer form an
/// authorised set (a mandatory approver's refusal always does).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ApprovalRule {
    /// The structure, e.g. `and(cfo, threshold(2, ops-1, ops-2, ops-3))`.
    pub structure: String,
    /// Each label of the structure and who it is.
    pub approvers: BTreeMap<String, Approver>,
}

/// An approver: one device, or a user (any of the user's active devices speaks for them).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Approver {
    /// This device.
    Device(DeviceId),
    /// Any active device of this user.
    User(UserId),
}

/// Who created a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Creator {
    /// A device.
    Device(DeviceId),
    /// A service account.
    Service(ServiceAccountId),
}

/// `POST /requests`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateRequest {
    /// The wallet, hex id.
    pub wallet_id: WalletId,
    /// Non-hardened BIP-32 path, `m` for the wallet key.
    pub path: String,
    /// What to sign.
    #[serde(flatten)]
    pub kind: crate::intent::SignKind,
    /// Seconds the request may wait before it expires (at most
    /// [`MAX_REQUEST_EXPIRY_SECS`]). Absent: the policy's `request_expiry_secs`, or
    /// [`DEFAULT_REQUEST_EXPIRY_SECS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_secs: Option<u64>,
}

/// One approver's decision on a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RequestDecision {
    /// The deciding device.
    pub device_id: DeviceId,
    /// The labels of the approval rule it speaks for (a device, or its user).
    pub labels: Vec<String>,
    /// Approved (true) or refused.
    pub approve: bool,
    /// When, RFC 3339.
    pub at: String,
}

/// `GET /requests/{id}` (and every answer about a request).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RequestInfo {
    /// The request.
    pub id: RequestId,
    /// The wallet, hex id.
    pub wallet_id: WalletId,
    /// Where it stands.
    pub state: RequestState,
    /// Who created it.
    pub created_by: Creator,
    /// Its kind.
    pub kind: RequestKind,
    /// What is signed, decoded, as approvers see it.
    pub summary: String,
    /// The digest signed, hex.
    pub digest: String,
    /// The BIP-32 path.
    pub path: String,
    /// What was asked, as sent (a co-signing device re-decodes it before it signs). Nested,
    /// not flattened: its `kind` tag and a digest request's `digest` would repeat this
    /// struct's own `kind` and `digest` keys, and such a document does not read back.
    pub intent: crate::intent::SignKind,
    /// When it was created, RFC 3339.
    pub created_at: String,
    /// When it expires unless signed, RFC 3339.
    pub expires_at: String,
    /// The approval rule it waits for (a structure over labels), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_rule: Option<String>,
    /// The decisions given so far.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decisions: Vec<RequestDecision>,
    /// The protocol session that runs (or last ran) it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<ServerSessionId>,
    /// The signature once signed: r ‖ s ‖ v, hex (65 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// Why it was refused or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

const REQUEST_DECISION_CONTEXT: &[u8] = b"tessera/request-decision/v1";

/// What an approver's device signs to approve (or refuse) a request: the request id, its
/// digest and the summary it was shown, each length-prefixed.
#[must_use]
pub fn request_decision_message(
    request_id: &str,
    digest_hex: &str,
    summary: &str,
    approve: bool,
) -> Vec<u8> {
    let mut m = REQUEST_DECISION_CONTEXT.to_vec();
    for part in [request_id, digest_hex, summary] {
        m.extend_from_slice(&(part.len() as u64).to_be_bytes());
        m.extend_from_slice(part.as_bytes());
    }
    m.push(u8::from(approve));
    m
}

/// `POST /requests/{id}/approve` and `/refuse`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DecideRequest {
    /// The summary the approver was shown (must be the request's).
    pub summary: String,
    /// The device's identity signature over [`request_decision_message`], hex.
    pub signature: String,
}

/// `GET /requests?wallet=&state=`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
pub struct RequestQuery {
    /// Only this wallet's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wallet: Option<WalletId>,
    /// Only requests in this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<RequestState>,
}

/// One event of a device's stream (`GET /events?after=CURSOR`, a WebSocket of JSON text
/// frames). Events are kept, so a device that reconnects with the last cursor it saw misses
/// nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceEvent {
    /// Its position in the device's stream: reconnect with `after` = the last one seen.
    pub cursor: u64,
    /// What it tells.
    pub kind: EventKind,
    /// The request it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestId>,
    /// The wallet it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wallet_id: Option<WalletId>,
    /// The device it is about (a pending device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<DeviceId>,
    /// A line for people.
    pub summary: String,
    /// When, RFC 3339.
    pub at: String,
}
