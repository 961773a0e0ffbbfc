//! Who calls an endpoint that both devices and service accounts may call (`POST /requests`,
//! `GET /requests/{id}`).
//!
//! A device token ([`crate::tokens::AUDIENCE`]) gives [`Caller::Device`], checked as
//! [`AuthDevice`] is; a service account's token ([`crate::tokens::SERVICE_AUDIENCE`]) gives
//! [`Caller::Service`] once the account is read from the database (on every request: a revoked
//! account's token stops at once) and the account's rate limit allows it.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use tessera_api::RequestKind;

use crate::auth::AuthDevice;
use crate::error::ApiError;
use crate::state::AppState;

/// An authenticated caller: an active device, or an active service account.
#[derive(Debug, Clone)]
pub enum Caller {
    /// An active device.
    Device(AuthDevice),
    /// An active (not revoked) service account.
    Service(AuthService),
}

/// An authenticated, active service account and its scope, read from the database on every
/// request (a revoked account's tokens stop at once).
#[derive(Debug, Clone)]
pub struct AuthService {
    /// The service account.
    pub service_id: String,
    /// The user it acts for.
    pub user_id: String,
    /// The wallets it may create requests for.
    pub wallets: Vec<String>,
    /// The kinds of request it may create.
    pub kinds: Vec<RequestKind>,
}

impl AuthService {
    /// Whether its scope covers a request of `kind` for `wallet_id`.
    ///
    /// # Errors
    /// 403 naming what is outside the scope.
    pub fn allows(&self, wallet_id: &str, kind: RequestKind) -> Result<(), ApiError> {
        if !self.wallets.iter().any(|w| w == wallet_id) {
            return Err(ApiError::Forbidden(format!(
                "service account {} may not create requests for wallet {wallet_id}",
                self.service_id
            )));
        }
        if !self.kinds.contains(&kind) {
            return Err(ApiError::Forbidden(format!(
                "service account {} may not create {kind} requests",
                self.service_id
            )));
        }
        Ok(())
    }
}

impl Caller {
    /// The user the caller acts for.
    #[must_use]
    pub fn user_id(&self) -> &str {
        match self {
            Caller::Device(d) => &d.user_id,
            Caller::Service(s) => &s.user_id,
        }
    }
}

impl AuthService {
    /// The account `service_id` as it stands, for a token naming `user_id`.
    ///
    /// # Errors
    /// 401 for an unknown account (or another user's), or a revoked one ("service account
    /// revoked").
    pub async fn load(state: &AppState, service_id: &str, user_id: &str) -> Result<Self, ApiError> {
        let row = crate::db::service_accounts::by_id(state.db(), service_id).await?;
        let row = row
            .filter(|r| r.1 == user_id)
            .ok_or_else(|| ApiError::Unauthorized("unknown service account".into()))?;
        if row.8.is_some() {
            return Err(ApiError::Unauthorized("service account revoked".into()));
        }
        let account = crate::service_accounts::account_of(row)?;
        Ok(AuthService {
            service_id: account.service_id.into_string(),
            user_id: account.user_id.into_string(),
            wallets: account
                .wallets
                .into_iter()
                .map(|w| w.into_string())
                .collect(),
            kinds: account.kinds,
        })
    }
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthorized("missing Authorization: Bearer token".into()))?;
    header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::Unauthorized("Authorization must be `Bearer <token>`".into()))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let claims = state.jwt().verify_any(bearer(parts)?)?;
        if claims.aud != crate::tokens::SERVICE_AUDIENCE {
            return AuthDevice::from_request_parts(parts, state)
                .await
                .map(Caller::Device);
        }
        crate::observe::authenticated(&claims.sub);
        state.limits().check_device(&claims.sub)?;
        AuthService::load(state, &claims.sub, &claims.usr)
            .await
            .map(Caller::Service)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use tessera_api::service as wire;
    use tessera_store::{DeviceIdentity, Keystore, KeystoreOptions, Passphrase};
    use tower::ServiceExt;

    use super::*;
    use crate::db::service_accounts as rows;
    use crate::db::{self, DeviceStatus};
    use crate::state::now;

    async fn open() -> (tempfile::TempDir, AppState) {
        let dir = tempfile::tempdir().unwrap();
        let state = AppState::open(crate::Config::new(dir.path().join("data")))
            .await
            .unwrap();
        (dir, state)
    }

    fn key_in(dir: &std::path::Path) -> DeviceIdentity {
        Keystore::open_with(
            dir,
            KeystoreOptions::default().insecure_fast_kdf_for_tests(),
        )
        .unwrap()
        .create_identity(&Passphrase::new("pw".into()).unwrap())
        .unwrap()
    }

    /// A user with one active device; (user, device).
    async fn new_user(state: &AppState, name: &str) -> (String, String) {
        let (user, device) = (
            uuid::Uuid::new_v4().to_string(),
            uuid::Uuid::new_v4().to_string(),
        );
        let mut tx = state.begin_write().await.unwrap();
        db::devices::insert_user(&mut *tx, &user, name, now())
            .await
            .unwrap();
        db::devices::insert(
            &mut *tx,
            &db::devices::NewDevice {
                id: &device,
                user_id: &user,
                name: "laptop",
                identity_key: &[name.len() as u8; 32],
                status: DeviceStatus::Active,
                at: now(),
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        (user, device)
    }

    async fn service(state: &AppState, user: &str, device: &str, key: &[u8; 32]) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        rows::insert(
            state.db(),
            &rows::NewServiceAccount {
                id: &id,
                user_id: user,
                name: "withdrawals",
                public_key: key,
                wallets: r#"["w1"]"#,
                kinds: r#"["digest"]"#,
                created_by: device,
                at: now(),
            },
        )
        .await
        .unwrap();
        id
    }

    async fn who(c: Caller) -> String {
        match c {
            Caller::Device(d) => format!("device {}", d.device_id),
            Caller::Service(s) => format!("service {}", s.service_id),
        }
    }

    async fn call(
        app: axum::Router,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (StatusCode, String) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        let resp = app.oneshot(req.body(body).unwrap()).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    fn probe(state: &AppState) -> axum::Router {
        axum::Router::new()
            .route("/probe", axum::routing::get(who))
            .with_state(state.clone())
    }

    #[tokio::test]
    async fn a_service_token_is_a_service_caller_until_revoked_and_never_a_device() {
        let (_dir, state) = open().await;
        let (user, device) = new_user(&state, "alice").await;
        let id = service(&state, &user, &device, &[3u8; 32]).await;

        let device_token = state.jwt().issue(&device, &user).unwrap();
        let (status, body) = call(probe(&state), "GET", "/probe", Some(&device_token), None).await;
        assert_eq!((status, body), (StatusCode::OK, format!("device {device}")));

        let token = state.jwt().issue_service(&id, &user).unwrap();
        let (status, body) = call(probe(&state), "GET", "/probe", Some(&token), None).await;
        assert_eq!((status, body), (StatusCode::OK, format!("service {id}")));

        // Every device endpoint refuses it.
        for path in ["/devices", "/wallets", "/audit", "/service-accounts"] {
            let (status, body) =
                call(crate::app(state.clone()), "GET", path, Some(&token), None).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
            assert!(body.contains("another audience"), "{path}: {body}");
        }

        // A token naming another user is refused.
        let (bob, _) = new_user(&state, "bob").await;
        let forged = state.jwt().issue_service(&id, &bob).unwrap();
        let (status, body) = call(probe(&state), "GET", "/probe", Some(&forged), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

        // Revoked: the same token stops at once.
        assert!(
            rows::revoke(state.db(), &id, &user, &device, now())
                .await
                .unwrap()
        );
        let (status, body) = call(probe(&state), "GET", "/probe", Some(&token), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert!(body.contains("service account revoked"), "{body}");
    }

    #[test]
    fn the_scope_names_what_is_outside_it() {
        let s = AuthService {
            service_id: "svc".into(),
            user_id: "u".into(),
            wallets: vec!["w1".into()],
            kinds: vec![RequestKind::Digest, RequestKind::EthTx],
        };
        assert!(s.allows("w1", RequestKind::Digest).is_ok());
        assert!(s.allows("w1", RequestKind::EthTx).is_ok());
        let e = s.allows("w2", RequestKind::Digest).unwrap_err();
        assert!(
            matches!(&e, ApiError::Forbidden(m) if m.contains("wallet w2")),
            "{e}"
        );
        let e = s.allows("w1", RequestKind::EthMessage).unwrap_err();
        assert!(
            matches!(&e, ApiError::Forbidden(m) if m.contains("eth-message")),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_service_account_gets_a_token_with_its_key_only() {
        let (dir, state) = open().await;
        let (user, device) = new_user(&state, "alice").await;
        let key = key_in(&dir.path().join("svc"));
        let other = key_in(&dir.path().join("other"));
        let id = service(&state, &user, &device, &key.public_key()).await;
        let app = || crate::app(state.clone());

        let challenge = |app: axum::Router| {
            let id = id.clone();
            async move {
                let (status, body) = call(
                    app,
                    "POST",
                    "/auth/service/challenge",
                    None,
                    Some(serde_json::json!({ "service_id": id })),
                )
                .await;
                assert_eq!(status, StatusCode::OK, "{body}");
                let c: tessera_api::Challenge = serde_json::from_str(&body).unwrap();
                c.challenge
            }
        };
        let token_with = |app: axum::Router, signer: &DeviceIdentity, challenge: String| {
            let bytes = hex::decode(&challenge).unwrap();
            let signature = hex::encode(signer.sign(&wire::service_auth_message(&id, &bytes)));
            let body = serde_json::json!({ "service_id": id, "challenge": challenge, "signature": signature });
            async move { call(app, "POST", "/auth/service/token", None, Some(body)).await }
        };

        // Another key: refused, and the challenge is used up.
        let c = challenge(app()).await;
        let (status, body) = token_with(app(), &other, c.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        let (status, body) = token_with(app(), &key, c).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert!(body.contains("unknown or used challenge"), "{body}");

        // Its key: a service token, audited.
        let c = challenge(app()).await;
        let (status, body) = token_with(app(), &key, c).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let token: tessera_api::Token = serde_json::from_str(&body).unwrap();
        let (status, who) = call(probe(&state), "GET", "/probe", Some(&token.token), None).await;
        assert_eq!((status, who), (StatusCode::OK, format!("service {id}")));
        let records = db::audit::of_user(state.db(), &user).await.unwrap();
        assert!(
            records
                .iter()
                .any(|r| r.2 == "service.token" && r.6.contains(&id))
        );

        // An unknown account has no challenge; a revoked one gets no token.
        let (status, _) = call(
            app(),
            "POST",
            "/auth/service/challenge",
            None,
            Some(serde_json::json!({ "service_id": "nobody" })),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        rows::revoke(state.db(), &id, &user, &device, now())
            .await
            .unwrap();
        let c = challenge(app()).await;
        let (status, body) = token_with(app(), &key, c).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert!(body.contains("service account revoked"), "{body}");
    }
}
