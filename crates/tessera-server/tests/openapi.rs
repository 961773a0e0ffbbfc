//! The OpenAPI document: the committed `docs/openapi.json` is the one the server generates
//! (regenerate it with `TESSERA_UPDATE_OPENAPI=1 cargo test -p tessera-server --test openapi`),
//! `GET /openapi.json` serves it, it is OpenAPI 3.1, every operation it describes is routed and
//! every route of the API is described, and every documented error answer has the one shape.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tessera_server::{AppState, Config, app};
use tower::ServiceExt;

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");

#[test]
fn the_committed_document_is_the_generated_one() {
    let generated = tessera_server::openapi::pretty();
    if std::env::var_os("TESSERA_UPDATE_OPENAPI").is_some() {
        std::fs::write(COMMITTED, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json differs from the API the server describes; regenerate it with \
         `TESSERA_UPDATE_OPENAPI=1 cargo test -p tessera-server --test openapi` and review the diff"
    );
}

async fn get(app: &axum::Router, method: Method, path: &str) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from("{}"))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn the_served_document_describes_every_route_and_only_routes() {
    let dir = tempfile::tempdir().unwrap();
    let state = AppState::open(Config::new(dir.path().join("data")))
        .await
        .unwrap();
    let app = app(state);
    let (status, served) = get(&app, Method::GET, "/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let generated: Value = serde_json::from_str(&tessera_server::openapi::pretty()).unwrap();
    assert_eq!(served, generated);
    assert_eq!(served["openapi"], "3.1.0");

    // Every documented operation is routed: called without a token or a valid body, it answers
    // with something other than "no such path" or "method not allowed".
    let mut documented = BTreeSet::new();
    for (path, item) in served["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let concrete = path
                .replace("{id}", "x")
                .replace("{session_id}", "x")
                .replace("{ban_id}", "x")
                .replace("{code}", "ABCD-EFGH-JKMN");
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let (status, body) = get(&app, m, &concrete).await;
            assert!(
                !body["message"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("no endpoint at"),
                "{method} {path} is documented but not routed: {status} {body}"
            );
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            // Every documented error answer is the one error shape.
            for (code, response) in operation["responses"].as_object().unwrap() {
                // The readiness probe's 503 is its own answer (the failing checks).
                let probe = path == "/readyz" && code == "503";
                if (code.starts_with('4') || code.starts_with('5')) && !probe {
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ApiError",
                        "{method} {path} {code}"
                    );
                }
            }
            documented.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    // Every route of the API is documented: the routes `app()` builds, listed here by hand
    // (axum's router does not list its routes). A route added to `app()` and not here is not
    // caught by this test; one added here and not documented, or documented and not here, is.
    let routes = [
        "GET /status",
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
        "GET /openapi.json",
        "POST /devices",
        "GET /devices",
        "POST /devices/{id}/revoke",
        "POST /devices/{id}/approve",
        "POST /auth/challenge",
        "POST /auth/token",
        "POST /devices/{id}/recover",
        "POST /backups/verify",
        "POST /backups/server",
        "GET /actions",
        "POST /actions/{id}",
        "POST /keygen",
        "POST /sign",
        "POST /refresh",
        "POST /reshare",
        "POST /wallet/accept",
        "POST /wallet/decline",
        "GET /pubkey",
        "GET /wallet",
        "GET /wallets",
        "GET /sessions/joinable",
        "GET /ws",
        "GET /sign/ws",
        "GET /relay/{code}",
        "GET /policy",
        "PUT /policy",
        "GET /approvals",
        "POST /approvals/{session_id}",
        "GET /sign/{session_id}",
        "GET /audit",
        "GET /audit/verify",
        "GET /bans",
        "POST /bans/{ban_id}/approve-lift",
        "POST /requests",
        "GET /requests",
        "GET /requests/{id}",
        "POST /requests/{id}/approve",
        "POST /requests/{id}/refuse",
        "POST /requests/{id}/session",
        "GET /events",
        "GET /policy/proposals",
        "GET /policy/proposals/{id}",
        "POST /policy/proposals/{id}/sign",
        "POST /service-accounts",
        "GET /service-accounts",
        "POST /service-accounts/{id}/revoke",
        "POST /auth/service/challenge",
        "POST /auth/service/token",
        "GET /webhooks/key",
    ];
    let routes: BTreeSet<String> = routes.iter().map(|r| r.to_string()).collect();
    assert_eq!(documented, routes);
}
