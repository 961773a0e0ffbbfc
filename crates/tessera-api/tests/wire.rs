//! The JSON of the REST API, pinned byte for byte: a change here breaks every deployed client or
//! server of the other version. Each document is parsed into its type and written back unchanged.
#![allow(clippy::unwrap_used)]

use serde::Serialize;
use serde::de::DeserializeOwned;
use tessera_api::intent::{EthTransaction, SignKind};
use tessera_api::*;

#[track_caller]
fn pinned<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: &T, json: &str) {
    assert_eq!(serde_json::to_string(value).unwrap(), json);
    assert_eq!(&serde_json::from_str::<T>(json).unwrap(), value);
}

const WALLET: &str = "0123456789abcdef0123456789abcdef";
const DEVICE: &str = "6f1c2f0e-4a43-4d1a-9d55-2f3b8f0d2c11";
const USER: &str = "0b7e0a7c-5a2d-4b8e-8d7c-0f4b8a1d3e22";

#[test]
fn device_registry_and_auth() {
    pinned(
        &RegisterDevice {
            user: "alice".into(),
            device_name: "laptop".into(),
            identity_key: "aa".repeat(32),
            signature: "bb".repeat(64),
        },
        &format!(
            r#"{{"user":"alice","device_name":"laptop","identity_key":"{}","signature":"{}"}}"#,
            "aa".repeat(32),
            "bb".repeat(64)
        ),
    );
    pinned(
        &Device {
            device_id: DEVICE.into(),
            user_id: USER.into(),
            name: "laptop".into(),
            identity_key: "aa".repeat(32),
            status: DeviceStatus::Pending,
            registered_at: "2026-01-02T03:04:05Z".into(),
            last_seen: None,
            revoked_at: None,
        },
        &format!(
            r#"{{"device_id":"{DEVICE}","user_id":"{USER}","name":"laptop","identity_key":"{}","status":"pending","registered_at":"2026-01-02T03:04:05Z","last_seen":null,"revoked_at":null}}"#,
            "aa".repeat(32)
        ),
    );
    pinned(
        &TokenRequest {
            device_id: DEVICE.into(),
            challenge: "cc".repeat(32),
            signature: "dd".repeat(64),
        },
        &format!(
            r#"{{"device_id":"{DEVICE}","challenge":"{}","signature":"{}"}}"#,
            "cc".repeat(32),
            "dd".repeat(64)
        ),
    );
    pinned(&RevokeDevice { force: false }, r#"{"force":false}"#);
    assert_eq!(
        serde_json::from_str::<RevokeDevice>("{}").unwrap(),
        RevokeDevice::default()
    );
}

#[test]
fn signing_requests_and_sessions() {
    pinned(
        &SignIntentRequest {
            wallet_id: WALLET.into(),
            path: "m/0/1".into(),
            kind: SignKind::Digest {
                digest: "ee".repeat(32),
            },
            device_nonce: None,
            with: vec![],
        },
        &format!(
            r#"{{"wallet_id":"{WALLET}","path":"m/0/1","kind":"digest","digest":"{}"}}"#,
            "ee".repeat(32)
        ),
    );
    pinned(
        &SignIntentRequest {
            wallet_id: WALLET.into(),
            path: "m".into(),
            kind: SignKind::EthTx {
                tx: EthTransaction {
                    tx_type: Default::default(),
                    chain_id: 1,
                    nonce: 7,
                    gas_price: None,
                    max_fee_per_gas: Some("30000000000".into()),
                    max_priority_fee_per_gas: Some("1000000000".into()),
                    gas_limit: 21000,
                    to: Some("0x00000000000000000000000000000000000000aa".into()),
                    value: "1000000000000000000".into(),
                    data: "0x".into(),
                    access_list: None,
                    authorization_list: None,
                },
            },
            device_nonce: Some("11".repeat(32)),
            with: vec![],
        },
        &format!(
            r#"{{"wallet_id":"{WALLET}","path":"m","kind":"eth-tx","tx":{{"chain_id":1,"nonce":7,"max_fee_per_gas":"30000000000","max_priority_fee_per_gas":"1000000000","gas_limit":21000,"to":"0x00000000000000000000000000000000000000aa","value":"1000000000000000000","data":"0x"}},"device_nonce":"{}"}}"#,
            "11".repeat(32)
        ),
    );
    pinned(
        &SignIntentRequest {
            wallet_id: WALLET.into(),
            path: "m".into(),
            kind: SignKind::EthMessage {
                message: "hello".into(),
            },
            device_nonce: None,
            with: vec![],
        },
        &format!(r#"{{"wallet_id":"{WALLET}","path":"m","kind":"eth-message","message":"hello"}}"#),
    );
    pinned(
        &SessionCreated {
            session_id: "22".repeat(32).into(),
            wallet_id: WALLET.into(),
            nonce: "33".repeat(32),
            epoch: 2,
            approval: Some(Approval::Pending),
            parties: None,
            reshare: None,
        },
        &format!(
            r#"{{"session_id":"{}","wallet_id":"{WALLET}","nonce":"{}","epoch":2,"approval":"pending"}}"#,
            "22".repeat(32),
            "33".repeat(32)
        ),
    );
    pinned(
        &KeygenRequest {
            name: "main".into(),
            structure: None,
            device_nonce: None,
        },
        r#"{"name":"main"}"#,
    );
    pinned(
        &KeygenRequest {
            name: "family".into(),
            structure: Some("and(server, or(phone, laptop))".into()),
            device_nonce: Some("44".repeat(32)),
        },
        &format!(
            r#"{{"name":"family","structure":"and(server, or(phone, laptop))","device_nonce":"{}"}}"#,
            "44".repeat(32)
        ),
    );
    pinned(
        &SessionParties {
            structure: "and(server, laptop)".into(),
            me: 1,
            parties: vec![
                SessionParty {
                    party: 0,
                    label: "server".into(),
                    device_id: None,
                    device_name: None,
                    identity_key: None,
                },
                SessionParty {
                    party: 1,
                    label: "laptop".into(),
                    device_id: Some("d1".into()),
                    device_name: Some("Laptop".into()),
                    identity_key: Some("55".repeat(32)),
                },
            ],
            signers: vec![0, 1],
        },
        &format!(
            r#"{{"structure":"and(server, laptop)","me":1,"parties":[{{"party":0,"label":"server"}},{{"party":1,"label":"laptop","device_id":"d1","device_name":"Laptop","identity_key":"{}"}}],"signers":[0,1]}}"#,
            "55".repeat(32)
        ),
    );
    pinned(&RefreshPending { pending: 3 }, r#"{"pending":3}"#);
    pinned(&RefreshCommit { commit: 3 }, r#"{"commit":3}"#);
    pinned(
        &SignStatus {
            approval: Approval::Approved,
        },
        r#"{"approval":"approved"}"#,
    );
}

#[test]
fn held_actions_and_outcomes() {
    let held = HeldAction {
        id: "44".repeat(16).into(),
        kind: HeldKind::ServerShareExport,
        wallet_id: Some(WALLET.into()),
        requested_by: DEVICE.into(),
        summary: "export".into(),
        digest: "55".repeat(32),
        status: HeldStatus::Pending,
        requested_at: "2026-01-02T03:04:05Z".into(),
        unlock_at: None,
    };
    let held_json = format!(
        r#"{{"id":"{}","kind":"server-share-export","wallet_id":"{WALLET}","requested_by":"{DEVICE}","summary":"export","digest":"{}","status":"pending","requested_at":"2026-01-02T03:04:05Z","unlock_at":null}}"#,
        "44".repeat(16),
        "55".repeat(32)
    );
    pinned(&held, &held_json);
    pinned(
        &ServerBackupOutcome::Held(held.clone()),
        &format!(r#"{{"outcome":"held",{}"#, &held_json[1..]),
    );
    pinned(
        &PolicyChange::Applied(Box::new(PolicyInfo {
            wallet_id: WALLET.into(),
            version: 0,
            policy: Policy::default(),
            set_by: None,
            set_at: None,
        })),
        &format!(
            r#"{{"outcome":"applied","wallet_id":"{WALLET}","version":0,"policy":{{"allowed_kinds":["eth-tx","eth-message"],"chain_ids":null,"destinations":null,"max_value_per_tx":null,"max_value_per_24h":null,"max_signatures_per_hour":null,"hours_utc":null,"require_approval":false,"approval_timeout_secs":300}},"set_by":null,"set_at":null}}"#
        ),
    );
    pinned(
        &Ban {
            ban_id: "66".repeat(16).into(),
            wallet_id: WALLET.into(),
            party: 0,
            device_id: Some(DEVICE.into()),
            session_id: "77".repeat(32).into(),
            round: 2,
            reason: "bad proof".into(),
            banned_at: "2026-01-02T03:04:05Z".into(),
            lift_approved_by: None,
            lifted_at: None,
        },
        &format!(
            r#"{{"ban_id":"{}","wallet_id":"{WALLET}","party":0,"device_id":"{DEVICE}","session_id":"{}","round":2,"reason":"bad proof","banned_at":"2026-01-02T03:04:05Z","lift_approved_by":null,"lifted_at":null}}"#,
            "66".repeat(16),
            "77".repeat(32)
        ),
    );
}

#[test]
fn the_error_body() {
    pinned(
        &ApiError {
            error: "not_found".into(),
            message: "unknown device".into(),
            rule: None,
        },
        r#"{"error":"not_found","message":"unknown device"}"#,
    );
    pinned(
        &ApiError {
            error: "policy_denied".into(),
            message: "denied".into(),
            rule: Some("max_value_per_tx".into()),
        },
        r#"{"error":"policy_denied","message":"denied","rule":"max_value_per_tx"}"#,
    );
}

#[test]
fn signed_messages_keep_their_bytes() {
    // The domain-separated messages a device's identity key signs: a change would make every
    // signature by a device of the other version fail.
    assert_eq!(
        hex::encode(auth_message("d", &[1, 2])),
        format!("{}{}640102", hex::encode(AUTH_CONTEXT), "0000000000000001")
    );
    assert_eq!(
        approval_code(&[0u8; 32]).len(),
        APPROVAL_CODE_HEX_DIGITS + APPROVAL_CODE_HEX_DIGITS / 4 - 1
    );
    assert_eq!(
        normalise_approval_code(&approval_code(&[9u8; 32]).to_lowercase()),
        Some(approval_code(&[9u8; 32]))
    );
}

/// Every state and kind, written as the text the server always stored and sent, and read back.
#[test]
fn states_are_their_strings() {
    #[track_caller]
    fn each<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(pairs: &[(T, &str)]) {
        for (value, text) in pairs {
            pinned(value, &format!("\"{text}\""));
        }
    }
    each(&[
        (Approval::None, "none"),
        (Approval::Pending, "pending"),
        (Approval::Approved, "approved"),
        (Approval::Refused, "refused"),
        (Approval::Expired, "expired"),
    ]);
    each(&[
        (DeviceStatus::Active, "active"),
        (DeviceStatus::Pending, "pending"),
        (DeviceStatus::Revoked, "revoked"),
    ]);
    each(&[
        (HeldKind::ServerShareExport, "server-share-export"),
        (HeldKind::PolicyChange, "policy-change"),
        (HeldKind::DeviceRecovery, "device-recovery"),
    ]);
    each(&[
        (HeldStatus::Pending, "pending"),
        (HeldStatus::Approved, "approved"),
        (HeldStatus::Cancelled, "cancelled"),
        (HeldStatus::Released, "released"),
    ]);
    each(&[
        (RequestKind::EthTx, "eth-tx"),
        (RequestKind::EthMessage, "eth-message"),
        (RequestKind::Digest, "digest"),
    ]);
    each(&[
        (SessionStatus::Created, "created"),
        (SessionStatus::Running, "running"),
        (SessionStatus::Done, "done"),
        (SessionStatus::Failed, "failed"),
        (SessionStatus::Expired, "expired"),
    ]);
    each(&[
        (Protocol::Keygen, "keygen"),
        (Protocol::Sign, "sign"),
        (Protocol::Refresh, "refresh"),
        (Protocol::Reshare, "reshare"),
    ]);
    each(&[(PartyKind::Server, "server"), (PartyKind::Device, "device")]);
}

#[test]
fn approvals_and_held_states_in_their_documents() {
    for approval in [Approval::None, Approval::Refused, Approval::Expired] {
        pinned(
            &SignStatus { approval },
            &format!(r#"{{"approval":"{approval}"}}"#),
        );
    }
    // No approval: the field is left out, as before.
    pinned(
        &SessionCreated {
            session_id: "22".repeat(32).into(),
            wallet_id: WALLET.into(),
            nonce: "33".repeat(32),
            epoch: 0,
            approval: None,
            parties: None,
            reshare: None,
        },
        &format!(
            r#"{{"session_id":"{}","wallet_id":"{WALLET}","nonce":"{}","epoch":0}}"#,
            "22".repeat(32),
            "33".repeat(32)
        ),
    );
    pinned(
        &HeldAction {
            id: "44".repeat(16).into(),
            kind: HeldKind::DeviceRecovery,
            wallet_id: None,
            requested_by: DEVICE.into(),
            summary: "recover".into(),
            digest: "55".repeat(32),
            status: HeldStatus::Released,
            requested_at: "2026-01-02T03:04:05Z".into(),
            unlock_at: Some("2026-01-03T03:04:05Z".into()),
        },
        &format!(
            r#"{{"id":"{}","kind":"device-recovery","wallet_id":null,"requested_by":"{DEVICE}","summary":"recover","digest":"{}","status":"released","requested_at":"2026-01-02T03:04:05Z","unlock_at":"2026-01-03T03:04:05Z"}}"#,
            "44".repeat(16),
            "55".repeat(32)
        ),
    );
    pinned(
        &Policy {
            allowed_kinds: vec![RequestKind::Digest, RequestKind::EthTx],
            ..Policy::default()
        },
        r#"{"allowed_kinds":["digest","eth-tx"],"chain_ids":null,"destinations":null,"max_value_per_tx":null,"max_value_per_24h":null,"max_signatures_per_hour":null,"hours_utc":null,"require_approval":false,"approval_timeout_secs":300}"#,
    );
}

/// A state or kind the type does not know does not parse, on the wire or from text.
#[test]
fn unknown_states_are_refused() {
    for json in [
        r#"{"approval":"maybe"}"#,
        r#"{"approval":"Approved"}"#,
        r#"{"approval":""}"#,
        r#"{"approval":1}"#,
    ] {
        assert!(serde_json::from_str::<SignStatus>(json).is_err(), "{json}");
    }
    let held = format!(
        r#"{{"id":"{}","kind":"server-share-export","wallet_id":null,"requested_by":"{DEVICE}","summary":"s","digest":"d","status":"pending","requested_at":"t","unlock_at":null}}"#,
        "44".repeat(16)
    );
    assert!(serde_json::from_str::<HeldAction>(&held).is_ok());
    for (from, to) in [
        ("\"server-share-export\"", "\"share-export\""),
        ("\"pending\"", "\"paused\""),
    ] {
        let bad = held.replace(from, to);
        assert!(serde_json::from_str::<HeldAction>(&bad).is_err(), "{bad}");
    }
    let e = serde_json::from_str::<Policy>(r#"{"allowed_kinds":["eth-tx","bitcoin"]}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown variant `bitcoin`"), "{e}");
    assert!(serde_json::from_str::<DeviceStatus>(r#""banned""#).is_err());
    assert!(serde_json::from_str::<SessionStatus>(r#""paused""#).is_err());
    assert!(serde_json::from_str::<Protocol>(r#""Sign""#).is_err());
    let e = "bitcoin".parse::<RequestKind>().unwrap_err();
    assert_eq!((e.what, e.value.as_str()), ("request kind", "bitcoin"));
    assert!("Expired".parse::<Approval>().is_err());
}

/// A state of another JSON type is a data error ("invalid type"), as a string field's was; an
/// unknown text names the known ones.
#[test]
fn a_state_of_another_type_is_an_invalid_type() {
    let e = serde_json::from_str::<SignStatus>(r#"{"approval":1}"#).unwrap_err();
    assert_eq!(e.classify(), serde_json::error::Category::Data, "{e}");
    assert!(
        e.to_string()
            .contains("invalid type: integer `1`, expected a string naming the approval"),
        "{e}"
    );
    let e = serde_json::from_str::<Policy>(r#"{"allowed_kinds":[5]}"#).unwrap_err();
    assert_eq!(e.classify(), serde_json::error::Category::Data, "{e}");
    let e = serde_json::from_str::<HeldKind>(r#""export""#).unwrap_err();
    assert_eq!(e.classify(), serde_json::error::Category::Data, "{e}");
    assert!(
        e.to_string().contains(
            "unknown variant `export`, expected one of `server-share-export`, `policy-change`, `device-recovery`"
        ),
        "{e}"
    );
}
