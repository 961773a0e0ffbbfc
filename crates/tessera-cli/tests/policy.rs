//! Signing policies against a real server process: an allow and a deny test for every rule,
//! approval by a second device, and signed `eth-tx` transactions decoded with alloy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use alloy_consensus::TxEnvelope;
use alloy_consensus::transaction::SignerRecoverable;
use alloy_eips::eip2718::Decodable2718;
use tessera_api::Policy;
use tessera_api::intent::{EthTransaction, SignKind};
use tessera_client::{ClientError, ServerClient};
use tessera_core::{DerivationPath, KeyShare};
use tessera_store::DeviceIdentity;

use common::{Server, identity};

mod common;

struct Owner {
    laptop: ServerClient,
    laptop_id: DeviceIdentity,
    phone: ServerClient,
    phone_id: DeviceIdentity,
    share: KeyShare,
    wallet: String,
    _homes: (tempfile::TempDir, tempfile::TempDir),
}

/// A user with a laptop (which made the wallet) and an approved phone.
async fn owner(server: &Server, user: &str) -> Owner {
    let (h1, h2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (laptop_id, phone_id) = (identity(h1.path()), identity(h2.path()));
    let mut laptop = ServerClient::new(&server.url).unwrap();
    let d1 = laptop.register(&laptop_id, user, "laptop").await.unwrap();
    laptop.login(&laptop_id, &d1.device_id).await.unwrap();
    let mut phone = ServerClient::new(&server.url).unwrap();
    let d2 = phone.register(&phone_id, user, "phone").await.unwrap();
    laptop
        .approve(
            &laptop_id,
            &tessera_api::approval_code(&phone_id.public_key()),
        )
        .await
        .unwrap();
    phone.login(&phone_id, &d2.device_id).await.unwrap();
    let share = laptop.keygen("w", |_, _| {}).await.unwrap();
    let wallet = share.wallet_id().to_string();
    Owner {
        laptop,
        laptop_id,
        phone,
        phone_id,
        share,
        wallet,
        _homes: (h1, h2),
    }
}

const ALICE: &str = "0x1111111111111111111111111111111111111111";
const BOB: &str = "0x2222222222222222222222222222222222222222";

/// A transaction that pays no fee, so that only its value counts against the value limits
/// (`fees_count_against_value_limits` covers fees).
fn tx(chain_id: u64, to: Option<&str>, value: u64) -> SignKind {
    with_fees(chain_id, to, &value.to_string(), 21_000, "0")
}

fn with_fees(
    chain_id: u64,
    to: Option<&str>,
    value: &str,
    gas_limit: u64,
    max_fee_per_gas: &str,
) -> SignKind {
    call(chain_id, to, value, gas_limit, max_fee_per_gas, "0x")
}

/// An EIP-1559 transaction with call data `data` (0x hex).
fn call(
    chain_id: u64,
    to: Option<&str>,
    value: &str,
    gas_limit: u64,
    max_fee_per_gas: &str,
    data: &str,
) -> SignKind {
    let tx: EthTransaction = serde_json::from_value(serde_json::json!({
        "chain_id": chain_id, "nonce": 7, "max_fee_per_gas": max_fee_per_gas,
        "max_priority_fee_per_gas": "0", "gas_limit": gas_limit, "to": to, "value": value,
        "data": data,
    }))
    .unwrap();
    SignKind::EthTx { tx }
}

fn message(text: &str) -> SignKind {
    SignKind::EthMessage {
        message: text.into(),
    }
}

impl Owner {
    async fn sign(&self, kind: &SignKind) -> Result<tessera_core::Signature, ClientError> {
        self.laptop
            .sign_kind(
                &self.share,
                kind,
                &DerivationPath::root(),
                |_, _| {},
                |_| {},
            )
            .await
    }

    async fn policy(&self, policy: Policy) {
        self.laptop
            .set_policy(&self.laptop_id, &self.wallet, &policy)
            .await
            .unwrap();
    }

    /// Asserts `kind` is denied by `rule` (403) and audited.
    async fn denied(&self, kind: &SignKind, rule: &str) {
        match self.sign(kind).await {
            Err(ClientError::Server {
                status: 403,
                code,
                message,
            }) => {
                assert_eq!(code, "policy_denied");
                assert!(message.contains(rule), "{message}");
            }
            other => panic!("not denied by {rule}: {other:?}"),
        }
        let audit = self.laptop.audit(Some(&self.wallet)).await.unwrap();
        let last = audit
            .iter()
            .rev()
            .find(|r| r.kind == "sign.denied")
            .unwrap();
        assert!(
            last.detail.contains(&format!("\"rule\":\"{rule}\"")),
            "{}",
            last.detail
        );
    }
}

#[tokio::test]
async fn kinds_transactions_chains_and_destinations() {
    let server = Server::start_fresh(&[]);
    let o = owner(&server, "kinds").await;
    // A new wallet: messages and transactions, not raw digests.
    o.sign(&message("hello")).await.unwrap();
    let digest = SignKind::Digest {
        digest: hex::encode([9u8; 32]),
    };
    o.denied(&digest, "allowed_kinds").await;
    o.policy(Policy {
        allowed_kinds: vec![
            tessera_api::RequestKind::EthTx,
            tessera_api::RequestKind::Digest,
        ],
        ..Policy::default()
    })
    .await;
    o.sign(&digest).await.unwrap();
    o.denied(&message("hello"), "allowed_kinds").await;

    // A signed transaction decodes with alloy and its sender is the wallet's address.
    let kind = tx(1, Some(ALICE), 1000);
    let sig = o.sign(&kind).await.unwrap();
    let SignKind::EthTx { tx: t } = &kind else {
        unreachable!()
    };
    let raw = t.signed_raw(&sig).unwrap();
    let envelope = TxEnvelope::decode_2718(&mut raw.as_slice()).unwrap();
    let sender = envelope.recover_signer().unwrap();
    assert_eq!(
        format!("{sender:#x}"),
        o.share.public_key().eth_address().to_lowercase()
    );

    // Chains.
    o.policy(Policy {
        chain_ids: Some(vec![1]),
        ..Policy::default()
    })
    .await;
    o.sign(&tx(1, Some(ALICE), 1)).await.unwrap();
    o.denied(&tx(5, Some(ALICE), 1), "chain_ids").await;

    // Destinations.
    o.policy(Policy {
        destinations: Some(vec![ALICE.to_uppercase().replace("0X", "0x")]),
        ..Policy::default()
    })
    .await;
    o.sign(&tx(1, Some(ALICE), 1)).await.unwrap();
    o.denied(&tx(1, Some(BOB), 1), "destinations").await;
    o.denied(&tx(1, None, 1), "destinations").await;
}

#[tokio::test]
async fn values_rates_and_hours() {
    let server = Server::start_fresh(&[]);
    let o = owner(&server, "values").await;
    o.policy(Policy {
        max_value_per_tx: Some("1000".into()),
        max_value_per_24h: Some("1500".into()),
        ..Policy::default()
    })
    .await;
    o.denied(&tx(1, Some(ALICE), 1001), "max_value_per_tx")
        .await;
    o.sign(&tx(1, Some(ALICE), 1000)).await.unwrap();
    o.sign(&tx(1, Some(ALICE), 400)).await.unwrap();
    o.denied(&tx(1, Some(ALICE), 200), "max_value_per_24h")
        .await;
    o.sign(&tx(1, Some(ALICE), 100)).await.unwrap();

    // Signatures per hour (the 3 transactions above count).
    o.policy(Policy {
        max_signatures_per_hour: Some(4),
        ..Policy::default()
    })
    .await;
    o.sign(&message("fourth")).await.unwrap();
    o.denied(&message("fifth"), "max_signatures_per_hour").await;

    // Hours: a window with this hour in it, and one without.
    let hour = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 86_400
        / 3600) as u8;
    o.policy(Policy {
        hours_utc: Some([hour, hour + 1]),
        ..Policy::default()
    })
    .await;
    o.sign(&message("in hours")).await.unwrap();
    o.policy(Policy {
        hours_utc: Some([(hour + 2) % 24, (hour + 3) % 24]),
        ..Policy::default()
    })
    .await;
    o.denied(&message("out of hours"), "hours_utc").await;
}

#[tokio::test]
async fn a_second_device_must_approve() {
    let server = Server::start_fresh(&[]);
    let o = owner(&server, "approvals").await;
    o.policy(Policy {
        require_approval: true,
        approval_timeout_secs: 10,
        ..Policy::default()
    })
    .await;

    // Approved by the phone: the laptop's signature goes through.
    let rent = message("pay the rent");
    let (sig, ()) = tokio::join!(o.sign(&rent), async {
        let pending = loop {
            let p = o.phone.approvals().await.unwrap();
            if let Some(first) = p.into_iter().next() {
                break first;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        assert!(
            pending.summary.contains("pay the rent"),
            "{}",
            pending.summary
        );
        // The requesting device cannot approve itself.
        assert!(matches!(
            o.laptop.decide(&o.laptop_id, &pending, true).await,
            Err(ClientError::Server { status: 403, .. })
        ));
        o.phone.decide(&o.phone_id, &pending, true).await.unwrap();
    });
    sig.unwrap();

    // Refused by the phone.
    let suspicious = message("suspicious");
    let (result, ()) = tokio::join!(o.sign(&suspicious), async {
        let pending = loop {
            if let Some(p) = o.phone.approvals().await.unwrap().into_iter().next() {
                break p;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        o.phone.decide(&o.phone_id, &pending, false).await.unwrap();
    });
    assert!(matches!(result, Err(ClientError::Refused(m)) if m.contains("refused")));

    // Nobody approves: the request lapses.
    let result = o.sign(&message("forgotten")).await;
    assert!(matches!(result, Err(ClientError::Refused(m)) if m.contains("expired")));
    let audit = o.laptop.audit(Some(&o.wallet)).await.unwrap();
    let kinds: Vec<&str> = audit.iter().map(|r| r.kind.as_str()).collect();
    assert!(kinds.contains(&"sign.approved") && kinds.contains(&"sign.refused"));
}

#[tokio::test]
async fn policies_are_signed_versioned_and_owned() {
    let server = Server::start_fresh(&[]);
    let o = owner(&server, "owner").await;
    let stranger = owner(&server, "stranger").await;
    let info = o.laptop.policy(&o.wallet).await.unwrap();
    assert_eq!(info.version, 0);
    assert_eq!(info.policy, Policy::default());
    o.policy(Policy {
        max_signatures_per_hour: Some(100),
        ..Policy::default()
    })
    .await;
    let info = o.laptop.policy(&o.wallet).await.unwrap();
    assert_eq!(info.version, 1);
    assert_eq!(info.policy.max_signatures_per_hour, Some(100));
    // The phone (another active device of the owner) may set it too; a stranger may not.
    o.phone
        .set_policy(&o.phone_id, &o.wallet, &Policy::default())
        .await
        .unwrap();
    assert!(matches!(
        stranger
            .laptop
            .set_policy(&stranger.laptop_id, &o.wallet, &Policy::default())
            .await,
        Err(ClientError::Server { status: 404, .. })
    ));
    // A signature by another key, or over another version, is refused; nothing changes.
    let text = serde_json::to_string(&Policy::default()).unwrap();
    let forged = hex::encode(
        stranger
            .laptop_id
            .sign(&tessera_api::policy_message(&o.wallet, 3, &text)),
    );
    let http = reqwest::Client::new();
    let put = |version: u64, signature: String| {
        http.put(format!("{}/policy", server.url))
            .bearer_auth(o.laptop.token().unwrap())
            .json(&tessera_api::SetPolicy {
                wallet_id: o.wallet.clone().into(),
                version,
                policy: Policy::default(),
                signature,
            })
            .send()
    };
    assert_eq!(put(3, forged).await.unwrap().status().as_u16(), 401);
    let replay = hex::encode(
        o.laptop_id
            .sign(&tessera_api::policy_message(&o.wallet, 2, &text)),
    );
    assert_eq!(put(2, replay).await.unwrap().status().as_u16(), 409);
    assert_eq!(o.laptop.policy(&o.wallet).await.unwrap().version, 2);
    let audit = o.laptop.audit(Some(&o.wallet)).await.unwrap();
    assert_eq!(
        audit.iter().filter(|r| r.kind == "policy.changed").count(),
        2
    );
}

/// A transaction's fees (`gas_limit × max_fee_per_gas`) count against the value limits, and
/// `max_fee_per_tx` limits them alone. (One wallet per policy: each policy is only ever set on a
/// fresh wallet.)
#[tokio::test]
async fn fees_count_against_value_limits() {
    let server = Server::start_fresh(&[]);

    // The reported transaction: nothing sent, but up to 30,000,000 × 10^15 = 3·10^22 wei of fees.
    let o = owner(&server, "fees-per-tx").await;
    o.policy(Policy {
        max_value_per_tx: Some("1000".into()),
        ..Policy::default()
    })
    .await;
    let burner = with_fees(1, Some(ALICE), "0", 30_000_000, "1000000000000000");
    o.denied(&burner, "max_value_per_tx").await;
    match o.sign(&burner).await {
        Err(ClientError::Server { message, .. }) => assert!(
            message.contains("0 wei plus up to 30000000000000000000000 wei of fees"),
            "{message}"
        ),
        other => panic!("{other:?}"),
    }
    o.sign(&with_fees(1, Some(ALICE), "1000", 21_000, "0"))
        .await
        .unwrap();

    // The 24-hour budget counts values and fees: 500 wei without a fee first; then 400 wei plus
    // up to 21,000 wei of fees would make 21,900 > 21,899, and 399 wei fits exactly.
    let o = owner(&server, "fees-per-day").await;
    o.policy(Policy {
        max_value_per_24h: Some("21899".into()),
        ..Policy::default()
    })
    .await;
    o.sign(&with_fees(1, Some(ALICE), "500", 21_000, "0"))
        .await
        .unwrap();
    o.denied(
        &with_fees(1, Some(ALICE), "400", 21_000, "1"),
        "max_value_per_24h",
    )
    .await;
    o.sign(&with_fees(1, Some(ALICE), "399", 21_000, "1"))
        .await
        .unwrap();

    // One ether per transaction, fees included, and at most 21,000 gas at 30 gwei of fees.
    let o = owner(&server, "fees-limited").await;
    o.policy(Policy {
        max_value_per_tx: Some("1000000000000000000".into()),
        max_fee_per_tx: Some("630000000000000".into()),
        ..Policy::default()
    })
    .await;
    o.sign(&with_fees(
        1,
        Some(ALICE),
        "999370000000000000",
        21_000,
        "30000000000",
    ))
    .await
    .unwrap();
    o.denied(
        &with_fees(1, Some(ALICE), "999370000000000001", 21_000, "30000000000"),
        "max_value_per_tx",
    )
    .await;
    o.denied(
        &with_fees(1, Some(ALICE), "0", 21_001, "30000000000"),
        "max_fee_per_tx",
    )
    .await;
    assert_eq!(
        o.laptop
            .policy(&o.wallet)
            .await
            .unwrap()
            .policy
            .max_fee_per_tx,
        Some("630000000000000".into())
    );
}

const USDC: &str = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48";

/// ERC-20 call data, encoded by alloy's ABI encoder.
fn erc20_transfer(to: &str, amount: tessera_api::intent::U256) -> String {
    use tessera_api::calls::{Erc20, SolCall};
    let data = Erc20::transferCall {
        to: to.parse().unwrap(),
        amount,
    }
    .abi_encode();
    format!("0x{}", hex::encode(data))
}

fn erc20_approve(spender: &str, amount: tessera_api::intent::U256) -> String {
    use tessera_api::calls::{Erc20, SolCall};
    let data = Erc20::approveCall {
        spender: spender.parse().unwrap(),
        amount,
    }
    .abi_encode();
    format!("0x{}", hex::encode(data))
}

fn token_call(data: &str) -> SignKind {
    call(1, Some(USDC), "0", 60_000, "0", data)
}

/// What a transaction's call data does (issue 17): the ERC-20 transfer of 10^30 units
/// under `max_value_per_tx: "0"` is refused by the token's limit, naming the rule; unknown call
/// data and an unlimited approval are refused; the daily token limit counts what was signed; the
/// summary that the audit log records and approvers see tells amounts in the token's decimals.
#[tokio::test]
async fn token_calls_are_decoded_and_limited_per_token() {
    use tessera_api::TokenRule;
    use tessera_api::calls::TokenStandard;
    use tessera_api::intent::U256;

    let server = Server::start_fresh(&[]);
    let o = owner(&server, "tokens").await;
    let huge = U256::from(10u64).pow(U256::from(30u64));
    let usdc = TokenRule {
        address: USDC.into(),
        standard: TokenStandard::Erc20,
        symbol: Some("USDC".into()),
        decimals: Some(6),
        max_amount_per_tx: Some("1000000000".into()),
        max_amount_per_24h: Some("1500000000".into()),
        allowed_spenders: Some(vec![BOB.into()]),
    };
    o.policy(Policy {
        max_value_per_tx: Some("0".into()),
        tokens: Some(vec![usdc]),
        ..Policy::default()
    })
    .await;
    o.denied(
        &token_call(&erc20_transfer(ALICE, huge)),
        "tokens.max_amount_per_tx",
    )
    .await;
    // 1,000 USDC signs (the value limit of 0 wei still holds: no ether moves, no fee).
    o.sign(&token_call(&erc20_transfer(
        ALICE,
        U256::from(1_000_000_000u64),
    )))
    .await
    .unwrap();
    let audit = o.laptop.audit(Some(&o.wallet)).await.unwrap();
    let requested = audit
        .iter()
        .rev()
        .find(|r| r.kind == "sign.requested")
        .unwrap();
    assert!(
        requested.detail.contains(&format!(
            "transfer 1000 USDC (1000000000 units of {USDC}) to {ALICE}"
        )),
        "{}",
        requested.detail
    );
    // 600 more would make 1,600 in 24 hours: over the daily 1,500; an approval counts too.
    o.denied(
        &token_call(&erc20_transfer(ALICE, U256::from(600_000_000u64))),
        "tokens.max_amount_per_24h",
    )
    .await;
    o.denied(
        &token_call(&erc20_approve(BOB, U256::from(600_000_000u64))),
        "tokens.max_amount_per_24h",
    )
    .await;
    o.sign(&token_call(&erc20_approve(BOB, U256::from(500_000_000u64))))
        .await
        .unwrap();
    // Unlimited approvals, spenders off the list, unknown call data, other tokens.
    o.denied(
        &token_call(&erc20_approve(BOB, U256::MAX)),
        "allow_unlimited_approvals",
    )
    .await;
    o.denied(
        &token_call(&erc20_approve(ALICE, U256::from(1u8))),
        "tokens.allowed_spenders",
    )
    .await;
    o.denied(&token_call("0xdeadbeef00"), "arbitrary_calls")
        .await;
    // Truncated call data is not a transfer either.
    let full = erc20_transfer(ALICE, U256::from(1u8));
    o.denied(&token_call(&full[..full.len() - 2]), "arbitrary_calls")
        .await;
    o.denied(
        &call(
            1,
            Some(BOB),
            "0",
            60_000,
            "0",
            &erc20_transfer(ALICE, U256::from(1u8)),
        ),
        "tokens",
    )
    .await;
    // A revocation moves nothing and is allowed even to a spender off the list.
    o.sign(&token_call(&erc20_approve(ALICE, U256::ZERO)))
        .await
        .unwrap();
}

/// A policy that requires approval cannot be weakened by one device: removing
/// `require_approval` is held (the device still needs approval to sign, and cannot approve the
/// change itself); cancelled it never applies; approved by the phone it does, audited as a
/// proposal and its approval. Tightening applies at once.
#[tokio::test]
async fn weakening_a_policy_that_requires_approval_needs_another_device() {
    use tessera_api::proposals::PolicyOutcome;
    let server = Server::start_fresh(&[]);
    let o = owner(&server, "weaken").await;
    o.policy(Policy {
        require_approval: true,
        approval_timeout_secs: 30,
        ..Policy::default()
    })
    .await;
    let open = Policy::default();

    // The laptop removes require_approval alone: held, not applied.
    let held = match o
        .laptop
        .submit_policy(&o.laptop_id, &o.wallet, &open)
        .await
        .unwrap()
    {
        PolicyOutcome::Held(action) => action,
        other => panic!("applied at once: {other:?}"),
    };
    assert_eq!(held.kind, "policy-change");
    assert!(
        held.summary.contains("require_approval"),
        "{}",
        held.summary
    );
    assert!(
        held.unlock_at.is_none(),
        "a user with two devices gets no time lock"
    );
    let info = o.laptop.policy(&o.wallet).await.unwrap();
    assert_eq!(info.version, 1);
    assert!(info.policy.require_approval);
    // set_policy says so rather than pretending.
    assert!(matches!(
        o.laptop.set_policy(&o.laptop_id, &o.wallet, &open).await,
        Err(ClientError::Server { status: 202, .. })
    ));
    // It cannot approve its own change.
    assert!(matches!(
        o.laptop.decide_held(&o.laptop_id, &held, true).await,
        Err(ClientError::Server { status: 403, .. })
    ));
    // Signing still needs the phone: refused there, it does not sign.
    let alone = message("alone");
    let (result, ()) = tokio::join!(o.sign(&alone), async {
        let pending = loop {
            if let Some(p) = o.phone.approvals().await.unwrap().into_iter().next() {
                break p;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        o.phone.decide(&o.phone_id, &pending, false).await.unwrap();
    });
    assert!(matches!(result, Err(ClientError::Refused(_))), "{result:?}");

    // The phone sees the change and cancels it: it never applies.
    let listed = o.phone.held_actions().await.unwrap();
    assert_eq!(listed.iter().map(|a| &a.id).collect::<Vec<_>>(), [&held.id]);
    let cancelled = o
        .phone
        .decide_held(&o.phone_id, &held, false)
        .await
        .unwrap();
    assert_eq!(cancelled.status, "cancelled");
    assert!(o.phone.held_actions().await.unwrap().is_empty());
    assert!(
        o.laptop
            .policy(&o.wallet)
            .await
            .unwrap()
            .policy
            .require_approval
    );

    // Proposed again and approved by the phone: applied at once.
    let again = match o
        .laptop
        .submit_policy(&o.laptop_id, &o.wallet, &open)
        .await
        .unwrap()
    {
        PolicyOutcome::Held(action) => action,
        other => panic!("applied at once: {other:?}"),
    };
    assert_ne!(again.id, held.id);
    let approved = o
        .phone
        .decide_held(&o.phone_id, &again, true)
        .await
        .unwrap();
    assert_eq!(approved.status, "released");
    let info = o.laptop.policy(&o.wallet).await.unwrap();
    assert_eq!(info.version, 2);
    assert!(!info.policy.require_approval);
    o.sign(&message("now alone")).await.unwrap();

    // Tightening applies at once, even while approval is required.
    o.policy(Policy {
        require_approval: true,
        approval_timeout_secs: 30,
        ..Policy::default()
    })
    .await;
    let tighter = Policy {
        require_approval: true,
        approval_timeout_secs: 20,
        max_value_per_tx: Some("1000".into()),
        allowed_kinds: vec![tessera_api::RequestKind::EthTx],
        ..Policy::default()
    };
    match o
        .laptop
        .submit_policy(&o.laptop_id, &o.wallet, &tighter)
        .await
        .unwrap()
    {
        PolicyOutcome::Applied(info) => assert_eq!(info.version, 4),
        other => panic!("tightening was held: {other:?}"),
    }
    // Raising a limit is a weakening too.
    let raised = Policy {
        max_value_per_tx: Some("1001".into()),
        ..tighter.clone()
    };
    let held = o
        .laptop
        .submit_policy(&o.laptop_id, &o.wallet, &raised)
        .await
        .unwrap();
    assert!(
        matches!(&held, PolicyOutcome::Held(a) if a.summary.contains("max_value_per_tx")),
        "{held:?}"
    );

    let audit = o.laptop.audit(Some(&o.wallet)).await.unwrap();
    let kinds: Vec<&str> = audit.iter().map(|r| r.kind.as_str()).collect();
    for kind in [
        "policy.proposed",
        "policy.cancelled",
        "policy.approved",
        "policy.proposal_applied",
    ] {
        assert!(kinds.contains(&kind), "no {kind} in {kinds:?}");
    }
}

/// A user with one device and a policy that requires approval (which it cannot give itself):
/// a weakening waits for the time lock, then the same proposal applies.
#[tokio::test]
async fn a_lone_device_weakens_a_policy_after_the_time_lock() {
    use tessera_api::proposals::PolicyOutcome;
    let server = Server::start_fresh(&[]);
    let dir = tempfile::tempdir().unwrap();
    let me = identity(dir.path());
    let mut client = ServerClient::new(&server.url).unwrap();
    let device = client.register(&me, "lone", "phone").await.unwrap();
    client.login(&me, &device.device_id).await.unwrap();
    let share = client.keygen("w", |_, _| {}).await.unwrap();
    let wallet = share.wallet_id().to_string();
    let strict = Policy {
        require_approval: true,
        ..Policy::default()
    };
    client.set_policy(&me, &wallet, &strict).await.unwrap();
    let held = match client
        .submit_policy(&me, &wallet, &Policy::default())
        .await
        .unwrap()
    {
        PolicyOutcome::Held(action) => action,
        other => panic!("applied at once: {other:?}"),
    };
    assert!(held.unlock_at.is_some());
    // Before the time lock ends, asking again gives the same held change.
    match client
        .submit_policy(&me, &wallet, &Policy::default())
        .await
        .unwrap()
    {
        PolicyOutcome::Held(again) => assert_eq!(again.id, held.id),
        other => panic!("applied before the time lock: {other:?}"),
    }
    {
        let db = server.database().await;
        sqlx::query("UPDATE held_actions SET unlock_at = 0 WHERE id = $1")
            .bind(&held.id)
            .execute(&db)
            .await
            .unwrap();
        db.close().await;
    }
    match client
        .submit_policy(&me, &wallet, &Policy::default())
        .await
        .unwrap()
    {
        PolicyOutcome::Applied(info) => assert!(!info.policy.require_approval),
        other => panic!("still held: {other:?}"),
    }
}
