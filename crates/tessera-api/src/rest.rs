//! Request and answer types of the commitment server's REST API and the text frames of its
//! protocol socket. JSON over HTTPS; binary fields are lower-case hex.

use serde::{Deserialize, Serialize};

use crate::ids::{ActionId, BanId, DeviceId, ServerSessionId, UserId, WalletId};
use crate::states::{Approval, DeviceStatus, HeldKind, HeldStatus, RequestKind};

/// Domain separation for the identity signature that registers a device.
pub const REGISTER_CONTEXT: &[u8] = b"tessera/register-device/v1";
/// Domain separation for the identity signature by which an active device approves a new one.
pub const APPROVE_CONTEXT: &[u8] = b"tessera/approve-device/v1";
/// Domain separation for the identity signature over an authentication challenge.
pub const AUTH_CONTEXT: &[u8] = b"tessera/auth-challenge/v1";

/// `GET /status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Status {
    /// "ok" when the server serves.
    pub status: String,
    /// The server's version.
    pub version: String,
}

/// `POST /devices`: register a device. The signature, by the device's identity key, covers
/// [`register_message`], proving possession of the key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterDevice {
    /// The user name (created with the first device).
    pub user: String,
    /// A friendly device name ("Alice's laptop").
    pub device_name: String,
    /// The device's Ed25519 identity public key, 32 bytes hex.
    pub identity_key: String,
    /// Ed25519 signature over [`register_message`], 64 bytes hex.
    pub signature: String,
}

/// The bytes a device signs to register.
#[must_use]
pub fn register_message(user: &str, device_name: &str, identity_key: &[u8; 32]) -> Vec<u8> {
    let mut m = REGISTER_CONTEXT.to_vec();
    for field in [
        user.as_bytes(),
        device_name.as_bytes(),
        identity_key.as_slice(),
    ] {
        m.extend_from_slice(&(field.len() as u64).to_be_bytes());
        m.extend_from_slice(field);
    }
    m
}

/// A device as the registry describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Device {
    /// Device id (UUID).
    pub device_id: DeviceId,
    /// User id (UUID).
    pub user_id: UserId,
    /// Friendly name.
    pub name: String,
    /// Identity public key, hex.
    pub identity_key: String,
    /// Its state.
    pub status: DeviceStatus,
    /// RFC 3339.
    pub registered_at: String,
    /// RFC 3339, when it last authenticated.
    pub last_seen: Option<String>,
    /// RFC 3339, when revoked.
    pub revoked_at: Option<String>,
}

/// Hex digits in an [`approval_code`]: 80 bits, so that registering a device whose code
/// collides with another's takes about 2^80 key generations (32 bits took minutes).
pub const APPROVAL_CODE_HEX_DIGITS: usize = 20;

/// The code a pending device shows and the user types on an active device to approve it:
/// 20 hex digits of a hash of the new device's identity key, as `XXXX-XXXX-XXXX-XXXX-XXXX`.
#[must_use]
pub fn approval_code(identity_key: &[u8; 32]) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::new()
        .chain_update(b"tessera/approval-code/v2")
        .chain_update(identity_key)
        .finalize();
    let hex = hex::encode_upper(&h[..APPROVAL_CODE_HEX_DIGITS / 2]);
    let groups: Vec<&str> = (0..hex.len()).step_by(4).map(|i| &hex[i..i + 4]).collect();
    groups.join("-")
}

/// A typed approval code in the form [`approval_code`] prints: upper case, separators (`-`,
/// spaces) optional. `None` when it is not 20 hex digits.
#[must_use]
pub fn normalise_approval_code(typed: &str) -> Option<String> {
    let digits: String = typed
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if digits.len() != APPROVAL_CODE_HEX_DIGITS || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let groups: Vec<&str> = (0..digits.len())
        .step_by(4)
        .map(|i| &digits[i..i + 4])
        .collect();
    Some(groups.join("-"))
}

/// The bytes an active device signs to approve `device_id` with `identity_key`.
#[must_use]
pub fn approve_message(device_id: &str, identity_key: &[u8; 32]) -> Vec<u8> {
    let mut m = APPROVE_CONTEXT.to_vec();
    m.extend_from_slice(&(device_id.len() as u64).to_be_bytes());
    m.extend_from_slice(device_id.as_bytes());
    m.extend_from_slice(identity_key);
    m
}

/// `POST /devices/{id}/approve`, by an active device of the same user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApproveDevice {
    /// The approving device's identity signature over [`approve_message`], hex.
    pub signature: String,
}

/// `POST /devices/{id}/revoke`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RevokeDevice {
    /// Revoke even the user's last active device, which leaves no device that can log in,
    /// approve new devices or sign: the user is locked out for good.
    #[serde(default)]
    pub force: bool,
}

/// `POST /auth/challenge`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChallengeRequest {
    /// The device asking.
    pub device_id: DeviceId,
}

/// A fresh challenge, valid briefly and once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Challenge {
    /// 32 random bytes, hex.
    pub challenge: String,
    /// Seconds it stays valid.
    pub expires_in: u64,
}

/// The bytes a device signs to answer a challenge.
#[must_use]
pub fn auth_message(device_id: &str, challenge: &[u8]) -> Vec<u8> {
    let mut m = AUTH_CONTEXT.to_vec();
    m.extend_from_slice(&(device_id.len() as u64).to_be_bytes());
    m.extend_from_slice(device_id.as_bytes());
    m.extend_from_slice(challenge);
    m
}

/// `POST /auth/token`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenRequest {
    /// The device.
    pub device_id: DeviceId,
    /// The challenge it was given, hex.
    pub challenge: String,
    /// Ed25519 signature over [`auth_message`], hex.
    pub signature: String,
}

/// A short-lived bearer token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Token {
    /// The JWT.
    pub token: String,
    /// Seconds until it expires.
    pub expires_in: u64,
}

/// `POST /keygen`: a new wallet. Without a `structure`, a 2-of-2 wallet between this device
/// (party 0) and the server (party 1); with one, a wallet of that structure whose parties are
/// the server and devices of the user (docs/quorum-wallets.md), run among them through the
/// server, each device over its own socket (the answer's [`SessionCreated::parties`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeygenRequest {
    /// The wallet's name, unique for the user.
    pub name: String,
    /// The wallet's structure, e.g. `and(server, or(phone, laptop))`: `server` and the party
    /// labels of the user's active devices (another user's as `user:device`);
    /// [`DEFAULT_STRUCTURE`]: the server and every active device of the user,
    /// `and(server, or(…))`. Absent: a 2-of-2 wallet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structure: Option<String>,
    /// This device's fresh nonce for the run, 64 hex digits (see [`SessionCreated::nonce`]).
    /// Optional on the wire: a device that sends none gets a run whose freshness rests on the
    /// server's nonce alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_nonce: Option<String>,
}

/// `POST /sign`: what to sign with a wallet; the server computes the digest itself.
/// JSON: `{"wallet_id": …, "path": "m", "kind": "eth-tx", "tx": {…}}` (or `"kind": "eth-message",
/// "message": …`, or `"kind": "digest", "digest": …`). (The parameters of the signing protocol
/// run itself are `tessera_core::SignRequest`.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignIntentRequest {
    /// The wallet, hex id.
    pub wallet_id: WalletId,
    /// Non-hardened BIP-32 path, `m` for the wallet key.
    pub path: String,
    /// What to sign.
    #[serde(flatten)]
    pub kind: crate::intent::SignKind,
    /// This device's fresh nonce for the run, 64 hex digits (see [`SessionCreated::nonce`]).
    /// Optional on the wire: a device that sends none gets a run whose freshness rests on the
    /// server's nonce alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_nonce: Option<String>,
    /// A structure wallet's other device parties to sign with (their labels), besides this
    /// device and the server; together they must be a quorum of the structure.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub with: Vec<String>,
}

/// `GET /sign/ws`: the device's first frame (text, JSON): what `POST /sign` takes, and the
/// epoch of the device's share.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignSocketRequest {
    /// What to sign, as `POST /sign` takes it.
    #[serde(flatten)]
    pub intent: SignIntentRequest,
    /// The epoch of the device's share: the run starts only from the wallet's epoch.
    pub epoch: u64,
}

/// `GET /sign/ws`: the server's answer to the device's first frame (text, JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum SignSocketReply {
    /// The session `POST /sign` would have created. `running`: the server runs it on this
    /// socket now (binary protocol frames follow, as on `GET /ws`). Otherwise (it waits for
    /// approval, or the device's epoch is not the wallet's) the server closes the socket with
    /// 1000, and the session is opened on `GET /ws` once it may run.
    Created {
        /// The session.
        session: Box<SessionCreated>,
        /// Whether its run starts on this socket.
        running: bool,
    },
    /// Refused, as `POST /sign` would have answered: its HTTP status and error.
    Refused {
        /// The HTTP status `POST /sign` would have answered with.
        status: u16,
        /// Its error.
        error: ApiError,
    },
}

/// A wallet's signing policy. Absent limits do not apply; a new wallet allows `eth-tx` and
/// `eth-message`, not raw digests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Allowed kinds: `eth-tx`, `eth-message`, `eth-typed-data`, `eth-authorization`, `btc-psbt`,
    /// `digest`.
    #[serde(default = "default_kinds")]
    pub allowed_kinds: Vec<RequestKind>,
    /// Allowed chain ids of transactions.
    #[serde(default)]
    pub chain_ids: Option<Vec<u64>>,
    /// Allowed transaction recipients (0x hex, any case).
    #[serde(default)]
    pub destinations: Option<Vec<String>>,
    /// Largest value of one transaction, wei (decimal).
    #[serde(default)]
    pub max_value_per_tx: Option<String>,
    /// Largest total value of the transactions signed in any 24 hours, wei (decimal).
    /// Both value limits count a transaction's value plus its maximum fee
    /// (`gas_limit × max_fee_per_gas`).
    #[serde(default)]
    pub max_value_per_24h: Option<String>,
    /// Largest maximum fee (`gas_limit × max_fee_per_gas`) of one transaction, wei (decimal).
    /// Not written when absent, so that policies signed before it existed keep their bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fee_per_tx: Option<String>,
    /// Token contracts that the wallet's transactions and signed permits may act on, each with
    /// its rules. Absent: any token contract, without per-token limits; present: only these (a
    /// token call or permit for another contract is refused). Not written when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Vec<TokenRule>>,
    /// Unlimited token approvals (an allowance of 2^255 or more, a DAI-style permit, an
    /// operator approval for a whole collection) are refused unless this is true. Not written
    /// when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_unlimited_approvals: bool,
    /// Contracts that may receive call data that no decoder understands (anything but the
    /// ERC-20/721/1155 transfers and approvals), 0x hex. Absent: none may. Not written when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arbitrary_calls: Option<Vec<String>>,
    /// The only contracts (EIP-712 `verifyingContract`) that typed data may be signed for, 0x
    /// hex. Absent: any. Not written when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verifying_contracts: Option<Vec<String>>,
    /// The only Bitcoin addresses that a PSBT's outputs may pay (outputs back to the wallet
    /// excepted; an OP_RETURN of 0 sat is allowed). Absent: any. Not written when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub btc_destinations: Option<Vec<String>>,
    /// Most that one PSBT may spend from the wallet (its inputs less its change), satoshis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sat_per_tx: Option<u64>,
    /// Most that the PSBTs signed in any 24 hours may spend from the wallet together, satoshis
    /// (each transaction counted once, however many of its inputs are signed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sat_per_24h: Option<u64>,
    /// Highest fee of one PSBT, satoshis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fee_sat: Option<u64>,
    /// Contracts that this wallet's accounts may delegate to with EIP-7702 (an
    /// `eth-authorization` request, or the authorisations a type-4 transaction carries), 0x hex.
    /// Absent or empty: every delegation is refused. Not written when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_delegates: Option<Vec<String>>,
    /// Most signatures in any hour.
    #[serde(default)]
    pub max_signatures_per_hour: Option<u32>,
    /// Signing allowed only from hour `[0]` to hour `[1]` (UTC, end excluded; may wrap midnight).
    #[serde(default)]
    pub hours_utc: Option<[u8; 2]>,
    /// Another active device of the user must approve each request before signing starts.
    #[serde(default)]
    pub require_approval: bool,
    /// Seconds that approval may take.
    #[serde(default = "default_approval_timeout")]
    pub approval_timeout_secs: u64,
    /// Who must approve each durable signing request (`POST /requests`): an access structure
    /// over approvers, e.g. `and(cfo, threshold(2, ops-1, ops-2, ops-3))`. Absent: the
    /// requests need the approval `require_approval` asks for, or none. Not written when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals: Option<crate::requests::ApprovalRule>,
    /// Who must sign a new version of this policy before it applies (an admin quorum). Absent:
    /// any active device of the owner (the single-device default; `GET /policy` warns). Not
    /// written when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admins: Option<crate::requests::ApprovalRule>,
    /// Seconds a durable request may wait (for approvals and for its co-signers) before it
    /// expires, when the request names none; at most [`crate::requests::MAX_REQUEST_EXPIRY_SECS`].
    /// Absent: [`crate::requests::DEFAULT_REQUEST_EXPIRY_SECS`]. Not written when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_expiry_secs: Option<u64>,
}

/// A token contract in a policy's token list, and its rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TokenRule {
    /// The contract, 0x hex.
    pub address: String,
    /// `erc20` (the default), `erc721` or `erc1155`: how its calls are read (ERC-20's
    /// `approve` and `transferFrom` have the same bytes as ERC-721's).
    #[serde(default = "erc20")]
    pub standard: crate::calls::TokenStandard,
    /// Its symbol as approvers see it (letters and digits, at most 11).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbol: Option<String>,
    /// An ERC-20 token's decimals, to show amounts as people read them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decimals: Option<u8>,
    /// Largest amount that one request may transfer or approve, in the token's smallest unit
    /// (decimal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_amount_per_tx: Option<String>,
    /// Largest amount that the requests of any 24 hours may transfer or approve together,
    /// smallest unit (decimal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_amount_per_24h: Option<String>,
    /// The only spenders (and operators) that approvals and permits may name, 0x hex. Absent:
    /// any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_spenders: Option<Vec<String>>,
}

fn erc20() -> crate::calls::TokenStandard {
    crate::calls::TokenStandard::Erc20
}

fn default_kinds() -> Vec<RequestKind> {
    vec![RequestKind::EthTx, RequestKind::EthMessage]
}

fn default_approval_timeout() -> u64 {
    300
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            allowed_kinds: default_kinds(),
            chain_ids: None,
            destinations: None,
            max_value_per_tx: None,
            max_value_per_24h: None,
            max_fee_per_tx: None,
            tokens: None,
            allow_unlimited_approvals: false,
            arbitrary_calls: None,
            verifying_contracts: None,
            btc_destinations: None,
            max_sat_per_tx: None,
            max_sat_per_24h: None,
            max_fee_sat: None,
            allowed_delegates: None,
            max_signatures_per_hour: None,
            hours_utc: None,
            require_approval: false,
            approval_timeout_secs: default_approval_timeout(),
            approvals: None,
            admins: None,
            request_expiry_secs: None,
        }
    }
}

const POLICY_CONTEXT: &[u8] = b"tessera/policy/v1";

/// What the owner's device signs to set a policy: the wallet, the new version and the policy's
/// JSON (as `serde_json` writes this struct), so a signed policy cannot be replayed later.
#[must_use]
pub fn policy_message(wallet_id: &str, version: u64, policy_json: &str) -> Vec<u8> {
    let mut m = POLICY_CONTEXT.to_vec();
    m.extend_from_slice(&(wallet_id.len() as u64).to_be_bytes());
    m.extend_from_slice(wallet_id.as_bytes());
    m.extend_from_slice(&version.to_be_bytes());
    m.extend_from_slice(policy_json.as_bytes());
    m
}

/// `PUT /policy`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SetPolicy {
    /// The wallet, hex id.
    pub wallet_id: WalletId,
    /// The version this sets: the current one plus one.
    pub version: u64,
    /// The policy.
    pub policy: Policy,
    /// The device's identity signature over [`policy_message`], hex.
    pub signature: String,
}

/// `GET /policy?wallet=…`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolicyInfo {
    /// The wallet, hex id.
    pub wallet_id: WalletId,
    /// 0 for the default policy of a new wallet.
    pub version: u64,
    /// The policy.
    pub policy: Policy,
    /// The device that set it.
    pub set_by: Option<DeviceId>,
    /// When (RFC 3339).
    pub set_at: Option<String>,
}

/// A signing request waiting for another device's approval (`GET /approvals`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PendingApproval {
    /// The session the request created.
    pub session_id: ServerSessionId,
    /// The wallet, hex id.
    pub wallet_id: WalletId,
    /// The requesting device.
    pub device_id: DeviceId,
    /// What will be signed, decoded by the server.
    pub summary: String,
    /// The digest that will be signed, hex.
    pub digest: String,
    /// When the request lapses (RFC 3339).
    pub expires_at: String,
}

const SIGN_APPROVAL_CONTEXT: &[u8] = b"tessera/sign-approval/v1";

/// What an approving (or refusing) device signs.
#[must_use]
pub fn sign_approval_message(session_id: &str, digest_hex: &str, approve: bool) -> Vec<u8> {
    let mut m = SIGN_APPROVAL_CONTEXT.to_vec();
    m.extend_from_slice(&(session_id.len() as u64).to_be_bytes());
    m.extend_from_slice(session_id.as_bytes());
    m.extend_from_slice(digest_hex.as_bytes());
    m.push(u8::from(approve));
    m
}

/// `POST /approvals/{session_id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApproveSign {
    /// Approve (true) or refuse.
    pub approve: bool,
    /// The device's identity signature over [`sign_approval_message`], hex.
    pub signature: String,
}

/// `GET /sign/{session_id}`: where a signing request stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignStatus {
    /// `none` (no approval needed), `pending`, `approved`, `refused` or `expired`.
    pub approval: Approval,
}

/// A refusal by the policy (403), in the body's `message` and here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolicyDenial {
    /// The rule, e.g. `max_value_per_tx`.
    pub rule: String,
}

/// `POST /refresh`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RefreshRequest {
    /// The wallet, hex id.
    pub wallet_id: WalletId,
    /// This device's fresh nonce for the run, 64 hex digits (see [`SessionCreated::nonce`]).
    /// Optional on the wire: a device that sends none gets a run whose freshness rests on the
    /// server's nonce alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_nonce: Option<String>,
}

/// `POST /reshare`: moves a structure wallet's key to a new set of parties (same public key,
/// next epoch). Exactly one of `add`, `remove` or `structure` says how.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReshareRequest {
    /// The wallet, hex id.
    pub wallet_id: WalletId,
    /// Party labels of the user's active devices to add beside the wallet's devices (the
    /// wallet's devices must sit under one `or` or `threshold` node, the default's shape).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<String>,
    /// Device parties to remove (their labels).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
    /// The whole new structure, as for a key generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structure: Option<String>,
    /// Other device parties that deal with this device and the server (their labels of the
    /// current structure): together they must be a minimal quorum of it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub with: Vec<String>,
    /// This device's fresh nonce for the run, 64 hex digits.
    pub device_nonce: String,
}

/// A wallet's public facts at one epoch (`tessera_core::WalletPublic`), as a resharing starts
/// from them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WalletPublicInfo {
    /// Compressed public key, hex.
    pub public_key: String,
    /// The BIP-32 chain code, hex.
    pub chain_code: String,
    /// The epoch.
    pub epoch: u64,
    /// Its structure at that epoch (labels as stored).
    pub structure: String,
    /// Every party's verifying share, compressed, hex, in party order.
    pub verifying_shares: Vec<String>,
}

impl From<&tessera_core::WalletPublic> for WalletPublicInfo {
    fn from(w: &tessera_core::WalletPublic) -> Self {
        WalletPublicInfo {
            public_key: w.public_key.to_string(),
            chain_code: hex::encode(w.chain_code),
            epoch: w.epoch,
            structure: w.structure.to_string(),
            verifying_shares: w
                .verifying_shares
                .iter()
                .flatten()
                .map(ToString::to_string)
                .collect(),
        }
    }
}

impl WalletPublicInfo {
    /// The wallet `wallet_id`'s public facts, each field parsed and the verifying shares checked
    /// to combine to the key (`WalletPublic::validate`).
    ///
    /// # Errors
    /// What does not parse or hold.
    pub fn to_wallet_public(
        &self,
        wallet_id: tessera_core::WalletId,
    ) -> Result<tessera_core::WalletPublic, String> {
        let mut chain_code = [0u8; 32];
        hex::decode_to_slice(&self.chain_code, &mut chain_code)
            .map_err(|_| "the chain code is not 64 hex digits".to_string())?;
        let key = |text: &str| {
            tessera_core::PublicKey::from_hex(text).map_err(|e| format!("a public key: {e}"))
        };
        let wallet = tessera_core::WalletPublic {
            wallet_id,
            public_key: key(&self.public_key)?,
            chain_code,
            epoch: self.epoch,
            structure: tessera_core::structure::WalletStructure::parse(&self.structure)
                .map_err(|e| format!("the structure: {e}"))?,
            verifying_shares: Some(
                self.verifying_shares
                    .iter()
                    .map(|k| key(k))
                    .collect::<Result<_, _>>()?,
            ),
        };
        wallet.validate().map_err(|e| e.to_string())?;
        Ok(wallet)
    }
}

/// What a resharing session runs: the wallet it starts from, the dealers, the structure it
/// moves to. Its session's [`SessionParties`] are the run's parties: the new structure's (their
/// index in it), then the dealers that leave, with `structure` the new structure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReshareInfo {
    /// The wallet as it is.
    pub wallet: WalletPublicInfo,
    /// The dealers: a minimal quorum of the current structure, by its party indices.
    pub quorum: Vec<u8>,
}

/// After a refresh protocol, the server has stored its new share as pending under this epoch
/// (a text frame on the session's socket). The device stores its own as pending, then commits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RefreshPending {
    /// The new epoch.
    pub pending: u64,
}

/// The device has stored its new share as pending: the server may switch (a text frame). The
/// server answers by closing the socket with 1000 once it has switched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RefreshCommit {
    /// The new epoch.
    pub commit: u64,
}

/// A created protocol session: open `GET /ws?session_id=…` to run it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionCreated {
    /// The session, hex (the protocol's session id is derived from it and the run's parameters).
    pub session_id: ServerSessionId,
    /// The wallet, hex id.
    pub wallet_id: WalletId,
    /// The server's fresh nonce for the run, hex. When the request carried a `device_nonce`, the
    /// run's nonce is [`tessera_core::protocols::joint_nonce`]`(&[device_nonce, nonce])` (device first:
    /// party 0), so that each side knows the run is new; otherwise it is this nonce itself.
    pub nonce: String,
    /// The wallet's epoch the run starts from.
    pub epoch: u64,
    /// For a signature that needs another device's approval: `pending` until it is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
    /// For a session of a structure wallet: its parties, and which one the caller is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parties: Option<SessionParties>,
    /// For a resharing: what it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reshare: Option<ReshareInfo>,
}

/// The parties of a session of a structure wallet, as the server has them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionParties {
    /// The wallet's structure (labels as stored).
    pub structure: String,
    /// The caller's party index.
    pub me: u8,
    /// Every party of the wallet, by index.
    pub parties: Vec<SessionParty>,
    /// The parties that take part in the session (a key generation: all), by index.
    pub signers: Vec<u8>,
}

/// One party of a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionParty {
    /// Its index (its label's position in the structure).
    pub party: u8,
    /// Its label in the structure.
    pub label: String,
    /// The device (none: the server's party).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<DeviceId>,
    /// The device's name as registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    /// The device's Ed25519 identity key as the registry has it, hex. A device checks it
    /// against the key it pinned for that device before it trusts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_key: Option<String>,
}

/// What a joinable signing session signs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JoinableSign {
    /// Non-hardened BIP-32 path.
    pub path: String,
    /// What to sign.
    #[serde(flatten)]
    pub kind: crate::intent::SignKind,
}

/// `GET /sessions/joinable`: a session another device started in which the calling device is
/// a party, waiting for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JoinableSession {
    /// The session (open its socket with `GET /ws?session_id=…`).
    pub session_id: ServerSessionId,
    /// The wallet.
    pub wallet_id: WalletId,
    /// The wallet's name.
    pub wallet_name: String,
    /// What it runs: `keygen`, `sign` or `reshare`.
    pub protocol: String,
    /// What a signing session signs, as the requester asked it: the joining device decodes
    /// it and computes the digest itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign: Option<JoinableSign>,
    /// What a resharing runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reshare: Option<ReshareInfo>,
    /// The run's nonce, hex (the requester's contribution joined with the server's).
    pub nonce: String,
    /// The wallet's epoch the run starts from.
    pub epoch: u64,
    /// The name of the device that asked for it.
    pub requested_by: String,
    /// When it was asked for (Unix seconds).
    pub created_at: i64,
    /// Its parties, and which one the caller is.
    pub parties: SessionParties,
    /// Set when the wallet is another user's and the caller's device has not accepted its
    /// party yet: it must accept ([`acceptance_message`], `POST /wallet/accept`) before it
    /// can take part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invitation: Option<Invitation>,
}

/// Another user's invitation of a device into their wallet (a party of its structure).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Invitation {
    /// The name of the user whose wallet it is (who invited the device).
    pub owner: String,
    /// The device's party label in the wallet's structure (`user.device`).
    pub label: String,
}

/// The structure text of [`KeygenRequest::structure`] that asks for the user's default
/// structure: the server and every active device of the user, those online now taking part at
/// once, the others joining by resharing later. Not a valid structure otherwise (it does not
/// name the server).
pub const DEFAULT_STRUCTURE: &str = "default";

/// v2: the wallet's name is signed too (v1 signed the wallet, structure, party, label and
/// owner, so a wallet shown under one name could have its acceptance checked under another).
const ACCEPTANCE_CONTEXT: &[u8] = b"tessera/wallet-acceptance/v2";

/// What an invited device was shown and accepts: another user's wallet and its party in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Acceptance<'a> {
    /// The wallet's id.
    pub wallet_id: &'a str,
    /// The wallet's name, as its owner gave it.
    pub wallet_name: &'a str,
    /// Its structure, as stored.
    pub structure: &'a str,
    /// The device's party index.
    pub party: u8,
    /// The device's party label.
    pub label: &'a str,
    /// The owner's user name.
    pub owner: &'a str,
}

/// What an invited device signs to accept its party in another user's wallet: the wallet's
/// id and name, its structure as stored, the party's index and label, and the owner's user
/// name, so an acceptance is of exactly one party of one wallet as the device was shown it.
#[must_use]
pub fn acceptance_message(accepted: &Acceptance<'_>) -> Vec<u8> {
    length_prefixed(
        ACCEPTANCE_CONTEXT,
        &[
            accepted.wallet_id.as_bytes(),
            accepted.wallet_name.as_bytes(),
            accepted.structure.as_bytes(),
            &[accepted.party],
            accepted.label.as_bytes(),
            accepted.owner.as_bytes(),
        ],
    )
}

/// `POST /wallet/decline`: an invited device that has not accepted declines the key generation
/// it was invited into: its other parties are told at once, in its name (it may not open the
/// session's socket to tell them itself).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeclineInvitation {
    /// The key generation's session.
    pub session_id: ServerSessionId,
}

/// `POST /wallet/accept`: an invited device accepts its party in another user's wallet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AcceptWallet {
    /// The wallet.
    pub wallet_id: WalletId,
    /// The device's identity signature over [`acceptance_message`], hex.
    pub signature: String,
}

/// `GET /wallet?wallet=…`: a wallet with its structure and its parties.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WalletDetail {
    /// The wallet.
    #[serde(flatten)]
    pub info: WalletInfo,
    /// Its structure (none: a 2-of-2 wallet of this device and the server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structure: Option<String>,
    /// Its parties, by index (a 2-of-2 wallet: none listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parties: Vec<SessionParty>,
    /// Devices that are to join or leave it, waiting for a resharing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<PendingChange>,
    /// Its device parties whose agent is online now (`tessera listen` waiting on the server),
    /// by index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub online: Vec<u8>,
}

/// A change of a structure wallet's parties waiting for a resharing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PendingChange {
    /// The device.
    pub device_id: DeviceId,
    /// Its name as registered.
    pub device_name: String,
    /// Its party label: in the wallet (a device leaving it), or the one it joins as.
    pub label: String,
    /// `add` (an approved device joins) or `remove` (a revoked device leaves).
    pub change: String,
    /// Since when (Unix seconds).
    pub since: i64,
    /// Whether the device's agent is online now.
    #[serde(default)]
    pub online: bool,
}

/// `GET /pubkey?wallet=…` and the wallet list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WalletInfo {
    /// The wallet, hex id.
    pub wallet_id: WalletId,
    /// Its name.
    pub name: String,
    /// Compressed public key, hex.
    pub public_key: String,
    /// EIP-55 address.
    pub eth_address: String,
    /// Current epoch.
    pub epoch: u64,
}

/// Every error body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiError {
    /// A stable machine-readable code, e.g. `unauthorized`, `not_found`.
    pub error: String,
    /// A human-readable message.
    pub message: String,
    /// For a policy denial (`policy_denied`): the rule that denied the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

/// `GET /audit` answers with these, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditRecord {
    /// Position in the log: 1, 2, 3... with no gaps.
    pub seq: u64,
    /// When (RFC 3339, UTC).
    pub at: String,
    /// What happened, e.g. `device.registered`, `sign.completed`.
    pub kind: String,
    /// The user concerned.
    pub user_id: Option<UserId>,
    /// The device concerned (or acting).
    pub device_id: Option<DeviceId>,
    /// The wallet concerned.
    pub wallet_id: Option<WalletId>,
    /// Details, as JSON text.
    pub detail: String,
    /// This record's hash (hex): covers its fields and the previous record's hash.
    pub hash: String,
}

/// `GET /audit/verify`: the result of checking the whole chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditVerification {
    /// Records checked.
    pub records: u64,
    /// The last record's hash (hex), to compare with a copy kept elsewhere.
    pub head: String,
    /// The first record that breaks the chain, if any.
    pub first_bad: Option<AuditFault>,
}

/// A record that breaks the audit chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditFault {
    /// Its position (or where one is missing).
    pub seq: u64,
    /// What is wrong.
    pub reason: String,
}

/// Symbols of a device-to-device relay code (no 0/O, 1/I/L, which people confuse).
pub const RELAY_CODE_SYMBOLS: &[u8; 31] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";

/// Whether `code` is a relay code as shown and sent: `ABCD-EFGH-JKMN`.
#[must_use]
pub fn is_relay_code(code: &str) -> bool {
    let b = code.as_bytes();
    b.len() == 14
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 9 {
                *c == b'-'
            } else {
                RELAY_CODE_SYMBOLS.contains(c)
            }
        })
}

fn length_prefixed(context: &[u8], fields: &[&[u8]]) -> Vec<u8> {
    let mut m = context.to_vec();
    for field in fields {
        m.extend_from_slice(&(field.len() as u64).to_be_bytes());
        m.extend_from_slice(field);
    }
    m
}

const SERVER_BACKUP_CONTEXT: &[u8] = b"tessera/server-share-backup/v1";

/// The bytes a device signs to have the server back up its share of `wallet_id` under
/// `structure` to `holders` (holder public keys as text, in order).
#[must_use]
pub fn server_backup_message(wallet_id: &str, structure: &str, holders: &[String]) -> Vec<u8> {
    let mut fields: Vec<&[u8]> = vec![wallet_id.as_bytes(), structure.as_bytes()];
    fields.extend(holders.iter().map(|h| h.as_bytes()));
    length_prefixed(SERVER_BACKUP_CONTEXT, &fields)
}

const RECOVER_CONTEXT: &[u8] = b"tessera/recover-device/v1";

/// The context of a recovering device's proof of possession of a restored share, and the bytes
/// its identity signs: the device, its key, the wallet and the epoch of the share.
#[must_use]
pub fn recover_message(
    device_id: &str,
    identity_key: &[u8; 32],
    wallet_id: &str,
    epoch: u64,
) -> Vec<u8> {
    length_prefixed(
        RECOVER_CONTEXT,
        &[
            device_id.as_bytes(),
            identity_key,
            wallet_id.as_bytes(),
            &epoch.to_be_bytes(),
        ],
    )
}

/// `POST /backups/verify`: a backup file, hex, for the server to check and record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VerifyBackup {
    /// The backup file's bytes, hex.
    pub backup: String,
}

/// What the server found in a backup it verified or made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BackupReport {
    /// The wallet, hex id.
    pub wallet_id: WalletId,
    /// The party whose share it holds (0 = device, 1 = server).
    pub party: u16,
    /// The epoch of that share.
    pub epoch: u64,
    /// The access structure, canonical text.
    pub structure: String,
    /// The holders, `label (fingerprint)`.
    pub holders: Vec<String>,
    /// SHA-256 of the file, hex.
    pub digest: String,
    /// The file's size in bytes.
    pub size: u64,
}

/// `POST /backups/server`: back up the server's share of a wallet to the owner's holders.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServerBackupRequest {
    /// The wallet, hex id.
    pub wallet_id: WalletId,
    /// The access structure, text.
    pub structure: String,
    /// The holders' public keys as text (`tessera-holder-v1:<label>:<hex>`).
    pub holders: Vec<String>,
    /// The requesting device's identity signature over [`server_backup_message`], hex.
    pub signature: String,
}

/// The server's backup of its share.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServerBackup {
    /// The backup file, hex.
    pub backup: String,
    /// What it holds.
    pub report: BackupReport,
}

/// `POST /devices/{id}/recover`: a pending device proves it restored the device share of one of
/// its user's wallets, which approves it (when no active device is left to do so).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RecoverDevice {
    /// The wallet, hex id.
    pub wallet_id: WalletId,
    /// The epoch of the restored share.
    pub epoch: u64,
    /// Proof of possession of the device share (`KeyShare::prove_possession` over
    /// [`recover_message`]), hex.
    pub proof: String,
    /// The recovering device's identity signature over [`recover_message`], hex.
    pub signature: String,
}

/// A party the engine blamed in a session of a wallet (DKLs23 `BanCounterparty`): it is refused
/// for every later session of that wallet until a complete refresh, approved by another active
/// device of the owner, lifts the ban. `GET /bans?wallet=…`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Ban {
    /// The ban's id, hex.
    pub ban_id: BanId,
    /// The wallet, hex id.
    pub wallet_id: WalletId,
    /// The banned party (the device is party 0).
    pub party: u8,
    /// The device that ran the session as that party, if known.
    pub device_id: Option<DeviceId>,
    /// The session in which the party was blamed.
    pub session_id: ServerSessionId,
    /// The protocol round whose message failed the check.
    pub round: u8,
    /// The engine's description of the failed check.
    pub reason: String,
    /// When (RFC 3339).
    pub banned_at: String,
    /// The device that approved lifting the ban, once one did.
    pub lift_approved_by: Option<DeviceId>,
    /// When the refresh lifted it (RFC 3339), once one did.
    pub lifted_at: Option<String>,
}

const BAN_LIFT_CONTEXT: &[u8] = b"tessera/ban-lift/v1";

/// What another active device of the owner signs to approve lifting a ban: the wallet and the
/// ban's id, so an approval lifts exactly one ban.
#[must_use]
pub fn ban_lift_message(wallet_id: &str, ban_id: &str) -> Vec<u8> {
    let mut m = BAN_LIFT_CONTEXT.to_vec();
    m.extend_from_slice(&(wallet_id.len() as u64).to_be_bytes());
    m.extend_from_slice(wallet_id.as_bytes());
    m.extend_from_slice(&(ban_id.len() as u64).to_be_bytes());
    m.extend_from_slice(ban_id.as_bytes());
    m
}

/// `POST /bans/{ban_id}/approve-lift`: another active device of the owner approves lifting a
/// ban; the next complete refresh of the wallet then lifts it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApproveBanLift {
    /// The approving device's identity signature over [`ban_lift_message`], hex.
    pub signature: String,
}
/// An action that one device cannot take alone (`GET /actions`): exporting the server's share
/// to holders not yet fixed for the wallet, weakening a policy that requires approval,
/// recovering a device while the user has active devices. It waits for another active
/// device's signed approval or, where `unlock_at` is set, for its time lock to end; any active
/// device of the owner may cancel it meanwhile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeldAction {
    /// The action's id.
    pub id: ActionId,
    /// `server-share-export`, `policy-change` or `device-recovery`.
    pub kind: HeldKind,
    /// The wallet it is about.
    pub wallet_id: Option<WalletId>,
    /// The device that asked (for a recovery, the recovering device).
    pub requested_by: DeviceId,
    /// What it does, for the devices that approve or cancel it.
    pub summary: String,
    /// SHA-256 of the signed request, hex: what an approving or cancelling device signs.
    pub digest: String,
    /// `pending`, `approved`, `cancelled` or `released` (carried out).
    pub status: HeldStatus,
    /// When it was asked for (RFC 3339).
    pub requested_at: String,
    /// When its time lock ends (RFC 3339); `None`: only another device's approval releases it.
    pub unlock_at: Option<String>,
}

const HELD_ACTION_CONTEXT: &[u8] = b"tessera/held-action/v1";

/// What a device signs to approve (or cancel) a held action.
#[must_use]
pub fn held_action_message(id: &str, digest_hex: &str, approve: bool) -> Vec<u8> {
    length_prefixed(
        HELD_ACTION_CONTEXT,
        &[id.as_bytes(), digest_hex.as_bytes(), &[u8::from(approve)]],
    )
}

/// `POST /actions/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DecideHeldAction {
    /// Approve (true) or cancel.
    pub approve: bool,
    /// The device's identity signature over [`held_action_message`], hex.
    pub signature: String,
}

/// The answer to `POST /backups/server`: the backup (holders fixed for the wallet, or an
/// approved export), or the held export to approve or wait for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum ServerBackupOutcome {
    /// The backup.
    Ready(ServerBackup),
    /// The export waits (202).
    Held(HeldAction),
}

/// The answer to `PUT /policy`: applied, or (a weakening of a policy that requires approval)
/// held for another device's approval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum PolicyChange {
    /// The policy in force now (boxed: a policy is much larger than a held action).
    Applied(Box<PolicyInfo>),
    /// The proposal waits (202).
    Held(HeldAction),
}

/// The answer to `POST /devices/{id}/recover`: the device approved, or (active devices exist)
/// the recovery held under a time lock that any of them can cancel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Recovery {
    /// The device, now active.
    Approved(Device),
    /// The recovery waits (202).
    Held(HeldAction),
}
