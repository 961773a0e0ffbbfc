//! Webhooks: the server POSTs request state changes to a configured URL, each body signed.
//!
//! A change is queued by [`enqueue`] in the transaction of the change itself (an outbox row in
//! `webhook_deliveries`), so a change that commits is announced and one that rolls back is not,
//! and a queued delivery survives a restart. A worker ([`spawn_delivery`]) POSTs each body
//! (a [`api::service::WebhookEvent`]) with the header `Tessera-Signature`: the hex Ed25519
//! signature (RFC 8032) of the exact body bytes by the server's token key, whose public half
//! `GET /webhooks/key` publishes and `tessera server` prints. A receiver that does not answer
//! 2xx gets the body again after 1, 2, 4, … seconds (at most [`MAX_BACKOFF_SECS`]); after
//! [`MAX_ATTEMPTS`] attempts the delivery is given up, logged and counted. Delivery is at least
//! once (a crash between the POST and its record repeats it): `Tessera-Delivery` carries an id
//! that stays the same on every attempt, for receivers to deduplicate.
//!
//! The key also signs the server's tokens; a signature of one cannot pass for the other: a
//! token's signed bytes are `base64url.base64url` text, never a JSON object, and a webhook body
//! is always one.
//!
//! With several replicas each one runs a worker; an attempt is claimed by a guarded update
//! first, so two replicas never post the same attempt. Queuing needs a configured URL: set it on
//! every replica alike.
//!
//! The server has no HTTP client of its own: the binary supplies a [`Transport`]
//! (`tessera server` uses the SDK's, with its TLS roots). Without one, deliveries wait.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Json;
use tessera_api as api;

use crate::db::WriteTx;
use crate::db::service_accounts::{self as rows, DeliveryOutcome};
use crate::error::ApiResult;
use crate::state::{AppState, now, rfc3339};

/// Attempts before a delivery is given up.
pub const MAX_ATTEMPTS: i64 = 10;
/// The longest wait between two attempts.
pub const MAX_BACKOFF_SECS: i64 = 600;
/// How long an attempt holds its claim (a replica that dies mid-attempt releases it then).
const CLAIM_SECS: i64 = 60;
/// How often the worker looks for due deliveries.
const POLL: Duration = Duration::from_millis(500);

/// Whether this process queues deliveries: a webhook URL is configured (see the module
/// documentation; [`enqueue`] has only the transaction to go by).
static ENABLED: AtomicBool = AtomicBool::new(false);

/// From now on, [`enqueue`] queues deliveries (a webhook URL is configured).
fn enable_queueing() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// What POSTs a webhook body.
pub trait Transport: Send + Sync + std::fmt::Debug {
    /// POSTs `body` to `url` with `headers`; the answer's status, or why there is none.
    fn post<'a>(
        &'a self,
        url: &'a str,
        body: &'a [u8],
        headers: &'a [(&'static str, String)],
    ) -> Pin<Box<dyn Future<Output = Result<u16, String>> + Send + 'a>>;
}

/// The body announcing `request`'s state.
///
/// # Errors
/// [`crate::error::ApiError::Internal`] when it cannot be encoded.
pub fn body_of(request: &api::requests::RequestInfo) -> ApiResult<String> {
    let event = api::service::WebhookEvent {
        event: format!("request.{}", request.state.as_str()),
        request: request.clone(),
        at: rfc3339(now()),
    };
    serde_json::to_string(&event)
        .map_err(|e| crate::error::ApiError::Internal(format!("webhook body: {e}")))
}

/// Queues a webhook delivery of `request`'s new state, in the transaction of the change.
/// Nothing when no webhook URL is configured.
///
/// # Errors
/// A database error.
pub async fn enqueue(tx: &mut WriteTx, request: &api::requests::RequestInfo) -> ApiResult<()> {
    if !ENABLED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let body = body_of(request)?;
    rows::queue_delivery(&mut **tx, &body, now()).await?;
    Ok(())
}

/// The wait after failed attempt `attempts` (1, 2, …): 1, 2, 4, … seconds, at most
/// [`MAX_BACKOFF_SECS`].
#[must_use]
pub fn backoff_secs(attempts: i64) -> i64 {
    let exponent = attempts.saturating_sub(1).clamp(0, 20) as u32;
    (1i64 << exponent).min(MAX_BACKOFF_SECS)
}

/// Starts the delivery worker when a webhook URL is configured (and from then on, [`enqueue`]
/// queues).
pub fn spawn_delivery(state: &AppState) {
    let Some(url) = state.config().webhook_url.clone() else {
        return;
    };
    enable_queueing();
    let state = state.clone();
    tokio::spawn(async move {
        let Some(transport) = state.config().webhook_transport.clone() else {
            tracing::warn!("a webhook URL is configured but no transport: deliveries wait");
            return;
        };
        loop {
            if let Err(e) = deliver_due(&state, &url, transport.as_ref()).await {
                tracing::warn!(error = %e, "webhook deliveries: database error");
            }
            tokio::time::sleep(POLL).await;
        }
    });
}

/// Attempts every delivery due now, once each. Returns how many were delivered.
///
/// # Errors
/// A database error.
pub async fn deliver_due(
    state: &AppState,
    url: &str,
    transport: &dyn Transport,
) -> ApiResult<usize> {
    let mut delivered = 0;
    for (id, body, attempts, due) in rows::due_deliveries(state.db(), now(), 32).await? {
        let at = now();
        if !rows::claim_delivery(state.db(), id, due, at + CLAIM_SECS).await? {
            continue;
        }
        let attempts = attempts + 1;
        let signature = hex::encode(state.jwt().sign(body.as_bytes()));
        let headers = [
            ("content-type", "application/json".to_string()),
            (api::service::SIGNATURE_HEADER, signature),
            (api::service::DELIVERY_HEADER, id.to_string()),
        ];
        let error = match transport.post(url, body.as_bytes(), &headers).await {
            Ok(status) if (200..300).contains(&status) => None,
            Ok(status) => Some(format!("the receiver answered {status}")),
            Err(e) => Some(e),
        };
        let outcome = match &error {
            None => {
                delivered += 1;
                metrics::counter!("tessera_webhook_deliveries_total", "outcome" => "delivered")
                    .increment(1);
                DeliveryOutcome::Delivered
            }
            Some(error) if attempts >= MAX_ATTEMPTS => {
                tracing::error!(delivery = id, attempts, error = %error, "webhook delivery given up");
                metrics::counter!("tessera_webhook_deliveries_total", "outcome" => "given_up")
                    .increment(1);
                DeliveryOutcome::GaveUp { error }
            }
            Some(error) => {
                tracing::info!(delivery = id, attempts, error = %error, "webhook delivery failed; will retry");
                metrics::counter!("tessera_webhook_deliveries_total", "outcome" => "retried")
                    .increment(1);
                DeliveryOutcome::Retry {
                    next_at: now() + backoff_secs(attempts),
                    error,
                }
            }
        };
        rows::settle_delivery(state.db(), id, outcome, now()).await?;
    }
    Ok(delivered)
}

/// `GET /webhooks/key`: the Ed25519 key that signs webhook bodies.
#[utoipa::path(get, path = "/webhooks/key", tag = "webhooks", responses((status = 200, description = "The key webhook bodies are signed with", body = api::service::WebhookKey), crate::openapi::Errors))]
pub async fn key(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Json<api::service::WebhookKey> {
    Json(api::service::WebhookKey {
        public_key: hex::encode(state.jwt().public_key()),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::Mutex;

    use tessera_api::requests::{Creator, RequestInfo};
    use tessera_api::{RequestKind, RequestState};

    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_ceiling() {
        assert_eq!(
            (1..=6).map(backoff_secs).collect::<Vec<_>>(),
            [1, 2, 4, 8, 16, 32]
        );
        assert_eq!(backoff_secs(0), 1);
        assert_eq!(backoff_secs(11), MAX_BACKOFF_SECS);
        assert_eq!(backoff_secs(i64::MAX), MAX_BACKOFF_SECS);
    }

    /// A body and its headers.
    type Post = (Vec<u8>, Vec<(String, String)>);

    /// A receiver that is down (`down`) or records what it was sent.
    #[derive(Debug, Default)]
    struct Receiver {
        down: std::sync::atomic::AtomicBool,
        got: Mutex<Vec<Post>>,
    }

    impl Transport for Receiver {
        fn post<'a>(
            &'a self,
            _url: &'a str,
            body: &'a [u8],
            headers: &'a [(&'static str, String)],
        ) -> Pin<Box<dyn Future<Output = Result<u16, String>> + Send + 'a>> {
            Box::pin(async move {
                if self.down.load(Ordering::Relaxed) {
                    return Err("connection refused".into());
                }
                let headers = headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect();
                self.got.lock().unwrap().push((body.to_vec(), headers));
                Ok(200)
            })
        }
    }

    fn request(state: RequestState) -> RequestInfo {
        let digest = "11".repeat(32);
        RequestInfo {
            id: "r-1".into(),
            wallet_id: "w1".into(),
            state,
            created_by: Creator::Service("svc".into()),
            kind: RequestKind::Digest,
            summary: "digest 1111…".into(),
            digest: digest.clone(),
            path: "m".into(),
            intent: tessera_api::intent::SignKind::Digest { digest },
            created_at: rfc3339(now()),
            expires_at: rfc3339(now() + 60),
            approval_rule: None,
            decisions: Vec::new(),
            session_id: None,
            signature: None,
            detail: None,
        }
    }

    async fn open(dir: &std::path::Path) -> AppState {
        let mut config = crate::Config::new(dir.join("data"));
        config.webhook_url = Some("http://127.0.0.1:9/hook".into());
        AppState::open(config).await.unwrap()
    }

    #[tokio::test]
    async fn a_queued_change_is_delivered_signed_after_a_receiver_outage_and_a_restart() {
        enable_queueing();
        let dir = tempfile::tempdir().unwrap();
        let state = open(dir.path()).await;
        let receiver = Receiver::default();
        receiver.down.store(true, Ordering::Relaxed);

        // Queued with the change; a rolled-back change queues nothing.
        let mut tx = state.begin_write().await.unwrap();
        enqueue(&mut tx, &request(RequestState::Signed))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let mut tx = state.begin_write().await.unwrap();
        enqueue(&mut tx, &request(RequestState::Refused))
            .await
            .unwrap();
        drop(tx);
        assert_eq!(rows::delivery_counts(state.db()).await.unwrap(), (1, 0, 0));

        // The receiver is down: one attempt, then a wait.
        let url = "http://127.0.0.1:9/hook";
        assert_eq!(deliver_due(&state, url, &receiver).await.unwrap(), 0);
        assert_eq!(deliver_due(&state, url, &receiver).await.unwrap(), 0);
        let attempts: (i64, i64) =
            sqlx::query_as("SELECT attempts, next_at - $1 FROM webhook_deliveries")
                .bind(now())
                .fetch_one(state.db())
                .await
                .unwrap();
        assert_eq!(attempts.0, 1);
        assert!((0..=1).contains(&attempts.1), "{attempts:?}");

        // The server restarts; the receiver is back; the delivery goes out once it is due.
        let key = state.jwt().public_key();
        drop(state);
        let state = open(dir.path()).await;
        assert_eq!(state.jwt().public_key(), key);
        receiver.down.store(false, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert_eq!(deliver_due(&state, url, &receiver).await.unwrap(), 1);
        assert_eq!(rows::delivery_counts(state.db()).await.unwrap(), (0, 1, 0));
        assert_eq!(deliver_due(&state, url, &receiver).await.unwrap(), 0);

        let got = receiver.got.lock().unwrap().clone();
        assert_eq!(got.len(), 1);
        let (body, headers) = &got[0];
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        let event: api::service::WebhookEvent = serde_json::from_slice(body).unwrap();
        assert_eq!(event.event, "request.signed");
        assert_eq!(event.request.id.as_str(), "r-1");
        assert_eq!(event.request.state, RequestState::Signed);
        assert_eq!(event.request.signature, None);
        let mut signature = [0u8; 64];
        hex::decode_to_slice(header("Tessera-Signature"), &mut signature).unwrap();
        tessera_store::keystore::verify_identity_signature(&key, body, &signature).unwrap();
        let mut tampered = body.clone();
        let at = tampered.iter().position(|b| *b == b'r').unwrap();
        tampered[at] = b'R';
        assert!(
            tessera_store::keystore::verify_identity_signature(&key, &tampered, &signature)
                .is_err()
        );
        assert!(!header("Tessera-Delivery").is_empty());
        assert_eq!(header("content-type"), "application/json");
    }

    #[tokio::test]
    async fn a_delivery_is_given_up_after_its_last_attempt() {
        enable_queueing();
        let dir = tempfile::tempdir().unwrap();
        let state = open(dir.path()).await;
        let receiver = Receiver::default();
        receiver.down.store(true, Ordering::Relaxed);
        let mut tx = state.begin_write().await.unwrap();
        enqueue(&mut tx, &request(RequestState::Expired))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        sqlx::query("UPDATE webhook_deliveries SET attempts = $1")
            .bind(MAX_ATTEMPTS - 1)
            .execute(state.db())
            .await
            .unwrap();
        assert_eq!(deliver_due(&state, "http://x", &receiver).await.unwrap(), 0);
        assert_eq!(rows::delivery_counts(state.db()).await.unwrap(), (0, 0, 1));
        // Given up is final: the receiver coming back changes nothing.
        receiver.down.store(false, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(deliver_due(&state, "http://x", &receiver).await.unwrap(), 0);
        assert!(receiver.got.lock().unwrap().is_empty());
    }
}
