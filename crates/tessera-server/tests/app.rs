//! `app()` without a socket: the real router over a real SQLite database and key-file KEK in a
//! temporary directory, called with `tower::ServiceExt::oneshot`. Routing (every route answers,
//! unknown paths and methods), authentication (a token from the real challenge flow, and the
//! tokens that must be refused) and the one JSON error shape of every error answer, extractor
//! rejections included. The process tests in `tessera-cli/tests` cover the same server end to
//! end over TLS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tessera_api as api;
use tessera_server::{AppState, Config, app};
use tower::ServiceExt;

/// A server over a fresh data directory (SQLite, `kek.key`, `token-signing.pk8`).
struct TestServer {
    dir: tempfile::TempDir,
    app: Router,
}

async fn server() -> TestServer {
    server_with(|_| {}).await
}

async fn server_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path().join("data"));
    adjust(&mut config);
    let state = AppState::open(config).await.unwrap();
    TestServer {
        app: app(state),
        dir,
    }
}

/// One answer: status, headers and the body as JSON (`Value::Null` when empty or not JSON).
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl TestServer {
    async fn send(&self, request: Request<Body>) -> Answer {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
        }
    }

    /// `method path` with an optional bearer token and an optional JSON body.
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        json: Option<Value>,
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match json {
            Some(value) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(value.to_string())
            }
            None => Body::empty(),
        };
        self.send(request.body(body).unwrap()).await
    }

    /// `method path` with raw bytes and the given content type (none when `None`).
    async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        bytes: Vec<u8>,
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        self.send(request.body(Body::from(bytes)).unwrap()).await
    }
}

/// The documented error body: `{"error": code, "message": text}` (plus `rule` only for a policy
/// denial), with the status that goes with the code.
#[track_caller]
fn assert_error(answer: &Answer, status: StatusCode, code: &str) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(
        answer.headers.get(header::CONTENT_TYPE).unwrap(),
        "application/json",
        "{}",
        answer.body
    );
    let object = answer.body.as_object().expect("a JSON object");
    assert_eq!(object["error"], code, "{}", answer.body);
    assert!(
        object["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        answer.body
    );
    let allowed = ["error", "message", "rule"];
    assert!(
        object.keys().all(|k| allowed.contains(&k.as_str())),
        "{}",
        answer.body
    );
    assert_eq!(object.contains_key("rule"), code == "policy_denied");
    // The client SDK reads exactly this type.
    let parsed: api::ApiError = serde_json::from_value(answer.body.clone()).unwrap();
    assert_eq!(parsed.error, code);
}

/// A device with an Ed25519 identity key, registered through `POST /devices`.
struct Device {
    key: Ed25519KeyPair,
    id: api::DeviceId,
}

impl Device {
    fn identity(&self) -> [u8; 32] {
        self.key.public_key().as_ref().try_into().unwrap()
    }

    fn sign(&self, message: &[u8]) -> String {
        hex::encode(self.key.sign(message).as_ref())
    }
}

async fn register(server: &TestServer, user: &str, name: &str) -> Device {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let identity: [u8; 32] = key.public_key().as_ref().try_into().unwrap();
    let signature = hex::encode(
        key.sign(&api::register_message(user, name, &identity))
            .as_ref(),
    );
    let answer = server
        .call(
            Method::POST,
            "/devices",
            None,
            Some(json!({
                "user": user,
                "device_name": name,
                "identity_key": hex::encode(identity),
                "signature": signature,
            })),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    let device: api::Device = serde_json::from_value(answer.body).unwrap();
    assert_eq!(device.status, api::DeviceStatus::Active);
    assert_eq!(device.identity_key, hex::encode(identity));
    Device {
        key,
        id: device.device_id,
    }
}

/// The challenge flow: `POST /auth/challenge`, sign it, `POST /auth/token`.
async fn log_in(server: &TestServer, device: &Device) -> String {
    let answer = server
        .call(
            Method::POST,
            "/auth/challenge",
            None,
            Some(json!({ "device_id": device.id })),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let challenge: api::Challenge = serde_json::from_value(answer.body).unwrap();
    let bytes = hex::decode(&challenge.challenge).unwrap();
    let answer = server
        .call(
            Method::POST,
            "/auth/token",
            None,
            Some(json!({
                "device_id": device.id,
                "challenge": challenge.challenge,
                "signature": device.sign(&api::auth_message(&device.id, &bytes)),
            })),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let token: api::Token = serde_json::from_value(answer.body).unwrap();
    assert!(token.expires_in > 0);
    token.token
}

/// Every route of the API, as method and a concrete path.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/status"),
    ("POST", "/devices"),
    ("GET", "/devices"),
    ("POST", "/devices/d/revoke"),
    ("POST", "/devices/d/approve"),
    ("POST", "/devices/d/recover"),
    ("POST", "/backups/verify"),
    ("POST", "/backups/server"),
    ("GET", "/actions"),
    ("POST", "/actions/a"),
    ("POST", "/auth/challenge"),
    ("POST", "/auth/token"),
    ("POST", "/keygen"),
    ("POST", "/sign"),
    ("POST", "/refresh"),
    ("GET", "/pubkey"),
    ("GET", "/wallets"),
    ("GET", "/ws"),
    ("GET", "/relay/ABCD-EFGH-JKMN"),
    ("GET", "/policy"),
    ("PUT", "/policy"),
    ("GET", "/approvals"),
    ("POST", "/approvals/s"),
    ("GET", "/sign/s"),
    ("GET", "/audit"),
    ("GET", "/audit/verify"),
    ("GET", "/bans"),
    ("POST", "/bans/b/approve-lift"),
];

/// The routes anyone may call; every other one wants a token first.
const PUBLIC: &[&str] = &[
    "/status",
    "/devices/d/recover",
    "/auth/challenge",
    "/auth/token",
    "/relay/ABCD-EFGH-JKMN",
];

#[tokio::test]
async fn every_route_answers_and_its_errors_have_the_one_shape() {
    // More refused requests than the authentication back-off allows from one address by default.
    let server = server_with(|c| c.limits.auth_failure_burst = 100).await;
    for (method, path) in ROUTES {
        let method: Method = method.parse().unwrap();
        let answer = server.call(method.clone(), path, None, None).await;
        if *path == "/status" {
            assert_eq!(answer.status, StatusCode::OK);
            let status: api::Status = serde_json::from_value(answer.body).unwrap();
            assert_eq!(status.status, "ok");
            continue;
        }
        if *path == "/devices" && method == Method::POST {
            // Anyone may register: the body is read, and there is none.
            assert_error(
                &answer,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            );
        } else if *path == "/relay/ABCD-EFGH-JKMN" {
            // A plain GET on the relay's WebSocket endpoint.
            assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
        } else if PUBLIC.contains(path) {
            assert_error(
                &answer,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            );
        } else {
            assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
        }
    }
}

#[tokio::test]
async fn the_per_address_back_off_covers_every_route_and_the_fallback() {
    let server = server().await;
    let burst = Config::new("unused").limits.auth_failure_burst;
    // Each refused token counts; the one past the burst starts the back-off.
    for _ in 0..=burst {
        let answer = server
            .call(Method::GET, "/wallets", Some("garbage"), None)
            .await;
        assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    for (method, path) in [
        (Method::GET, "/wallets"),
        (Method::GET, "/status"),
        (Method::POST, "/auth/challenge"),
        (Method::GET, "/nope"),
        (Method::DELETE, "/status"),
    ] {
        let answer = server.call(method, path, None, None).await;
        assert_error(&answer, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
        let retry: u64 = answer.headers[header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(retry >= 1, "{path}: Retry-After {retry}");
    }
}

#[tokio::test]
async fn the_registration_limit_covers_registering_and_nothing_else() {
    let server = server().await;
    let device = register(&server, "erin", "tablet").await;
    let token = log_in(&server, &device).await;
    // Every registration attempt from the address counts, even one whose body is refused.
    let burst = tessera_server::enrolment::REGISTRATION_BURST;
    for _ in 1..burst {
        let answer = server.call(Method::POST, "/devices", None, None).await;
        assert_error(
            &answer,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        );
    }
    let answer = server.call(Method::POST, "/devices", None, None).await;
    assert_error(&answer, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(answer.headers.contains_key(header::RETRY_AFTER));
    // The same path's GET, and the other public routes, are not behind it.
    let answer = server
        .call(Method::GET, "/devices", Some(&token), None)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let answer = server
        .call(
            Method::POST,
            "/auth/challenge",
            None,
            Some(json!({ "device_id": device.id })),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
}

#[tokio::test]
async fn unknown_paths_are_404_and_wrong_methods_405_in_the_one_shape() {
    let server = server().await;
    for path in ["/", "/nope", "/devices/d", "/status/extra", "/relay"] {
        let answer = server.call(Method::GET, path, None, None).await;
        assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
        assert!(
            answer.body["message"].as_str().unwrap().contains(path),
            "{}",
            answer.body
        );
    }
    // A POST to an unknown path is 404 too, whatever its body.
    let answer = server
        .raw(
            Method::POST,
            "/nope",
            None,
            Some("text/plain"),
            b"x".to_vec(),
        )
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "not_found");

    for (method, path, allow) in [
        (Method::DELETE, "/status", vec!["GET"]),
        (Method::POST, "/status", vec!["GET"]),
        (Method::GET, "/keygen", vec!["POST"]),
        (Method::PUT, "/devices", vec!["GET", "POST"]),
        (Method::DELETE, "/policy", vec!["GET", "PUT"]),
        (Method::GET, "/actions/a", vec!["POST"]),
        (Method::POST, "/ws", vec!["GET"]),
    ] {
        let answer = server.call(method.clone(), path, None, None).await;
        assert_error(
            &answer,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        );
        let header = answer
            .headers
            .get(header::ALLOW)
            .unwrap_or_else(|| panic!("{method} {path}: no Allow header"))
            .to_str()
            .unwrap()
            .to_string();
        for m in allow {
            assert!(header.contains(m), "{method} {path}: Allow is {header}");
        }
    }
}

#[tokio::test]
async fn a_token_from_the_challenge_flow_is_accepted_and_bad_ones_refused() {
    let server = server().await;
    let device = register(&server, "alice", "laptop").await;
    let token = log_in(&server, &device).await;

    let answer = server
        .call(Method::GET, "/wallets", Some(&token), None)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body, json!([]));
    let answer = server
        .call(Method::GET, "/devices", Some(&token), None)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let devices: Vec<api::Device> = serde_json::from_value(answer.body).unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].device_id, device.id);

    // No token, another scheme, garbage.
    let answer = server.call(Method::GET, "/wallets", None, None).await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
    let answer = server
        .send(
            Request::get("/wallets")
                .header(header::AUTHORIZATION, format!("Basic {token}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
    let answer = server
        .call(Method::GET, "/wallets", Some("garbage"), None)
        .await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(answer.body["message"], "malformed token");
    // The real token with its signature's last characters changed.
    let mut forged = token.clone();
    let tail = if forged.ends_with('A') { "B" } else { "A" };
    forged.replace_range(forged.len() - 2.., &format!("{tail}{tail}"));
    let answer = server
        .call(Method::GET, "/wallets", Some(&forged), None)
        .await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");

    // Expired, and for another audience: signed with the server's own key from its data
    // directory, so that only the refused claim differs.
    let pkcs8 = std::fs::read(server.dir.path().join("data/token-signing.pk8")).unwrap();
    let key = jsonwebtoken::EncodingKey::from_ed_der(&pkcs8);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let user_id = devices[0].user_id.clone();
    let make = |exp: i64, aud: &str| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
            &json!({ "sub": device.id, "usr": user_id, "aud": aud, "iat": now - 7200, "exp": exp }),
            &key,
        )
        .unwrap()
    };
    let good = make(now + 600, "tessera-commitment-server");
    let answer = server
        .call(Method::GET, "/wallets", Some(&good), None)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let expired = make(now - 3600, "tessera-commitment-server");
    let answer = server
        .call(Method::GET, "/wallets", Some(&expired), None)
        .await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(answer.body["message"], "token expired");
    let foreign = make(now + 600, "another-server");
    let answer = server
        .call(Method::GET, "/wallets", Some(&foreign), None)
        .await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(answer.body["message"], "token for another audience");

    // A challenge answered by another key, and a challenge used twice.
    let answer = server
        .call(
            Method::POST,
            "/auth/challenge",
            None,
            Some(json!({ "device_id": device.id })),
        )
        .await;
    let challenge: api::Challenge = serde_json::from_value(answer.body).unwrap();
    let stranger = register(&server, "mallory", "phone").await;
    let bytes = hex::decode(&challenge.challenge).unwrap();
    let request = json!({
        "device_id": device.id,
        "challenge": challenge.challenge,
        "signature": stranger.sign(&api::auth_message(&device.id, &bytes)),
    });
    let answer = server
        .call(Method::POST, "/auth/token", None, Some(request.clone()))
        .await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(answer.body["message"], "identity signature does not verify");
    let answer = server
        .call(Method::POST, "/auth/token", None, Some(request))
        .await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(answer.body["message"], "unknown or used challenge");
    // An unknown device gets no challenge.
    let answer = server
        .call(
            Method::POST,
            "/auth/challenge",
            None,
            Some(json!({ "device_id": "no-such-device" })),
        )
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(stranger.identity().len(), 32);
}

#[tokio::test]
async fn every_rejection_kind_has_its_status_and_the_one_shape() {
    let server = server().await;
    let device = register(&server, "bob", "desktop").await;
    let token = log_in(&server, &device).await;
    let t = Some(token.as_str());
    let json_type = Some("application/json");

    // Malformed JSON: 400.
    let answer = server
        .raw(Method::POST, "/keygen", t, json_type, b"{not json".to_vec())
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    // Valid JSON of the wrong shape: a wrong type, a missing field, an unknown kind: 422.
    for body in [
        json!({ "name": 5 }),
        json!({}),
        json!({ "wallet_id": "00", "kind": "bitcoin", "path": "m" }),
    ] {
        let path = if body.get("kind").is_some() {
            "/sign"
        } else {
            "/keygen"
        };
        let answer = server.call(Method::POST, path, t, Some(body)).await;
        assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
    }
    let answer = server
        .call(Method::POST, "/keygen", t, Some(json!({})))
        .await;
    assert!(
        answer.body["message"]
            .as_str()
            .unwrap()
            .contains("missing field `name`"),
        "{}",
        answer.body
    );
    // No content type, and another one: 415.
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let answer = server
            .raw(
                Method::POST,
                "/keygen",
                t,
                content_type,
                br#"{"name":"w"}"#.to_vec(),
            )
            .await;
        assert_error(
            &answer,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        );
    }
    // Over the body limit: 413 (64 KiB in general; a backup may be larger).
    let big = format!(r#"{{"user":"{}"}}"#, "u".repeat(200_000)).into_bytes();
    let answer = server
        .raw(Method::POST, "/devices", None, json_type, big)
        .await;
    assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    let backup = format!(r#"{{"backup":"{}"}}"#, "0".repeat(200_000)).into_bytes();
    let answer = server
        .raw(Method::POST, "/backups/verify", t, json_type, backup)
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    let too_big = format!(r#"{{"backup":"{}"}}"#, "0".repeat(17 * 1024 * 1024)).into_bytes();
    let answer = server
        .raw(Method::POST, "/backups/verify", t, json_type, too_big)
        .await;
    assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    // A query string that does not parse: a required parameter missing.
    for path in ["/pubkey", "/pubkey?wallet_id=00", "/bans?wallet_id=00"] {
        let answer = server.call(Method::GET, path, t, None).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    }
    // A path parameter that is not UTF-8.
    let answer = server
        .call(
            Method::POST,
            "/actions/%FF%FE",
            t,
            Some(json!({ "approve": true, "signature": "00" })),
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    let answer = server
        .call(Method::POST, "/devices/%C3%28/recover", None, None)
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");

    // The protocol socket without a WebSocket upgrade, and with the headers of one but no
    // connection that can be upgraded (there is no socket here).
    let answer = server.call(Method::GET, "/ws?session_id=00", t, None).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    let answer = server.call(Method::GET, "/ws", t, None).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    let upgrade = Request::get("/ws?session_id=00")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_VERSION, "13")
        .header(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==")
        .body(Body::empty())
        .unwrap();
    let answer = server.send(upgrade).await;
    assert_error(&answer, StatusCode::UPGRADE_REQUIRED, "upgrade_required");

    // A handler's own refusal keeps its status and has the same shape.
    let answer = server
        .call(
            Method::POST,
            "/sign",
            t,
            Some(json!({ "wallet_id": "00", "kind": "digest", "digest": "zz", "path": "m" })),
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    let answer = server
        .call(
            Method::GET,
            &format!("/pubkey?wallet={}", "ab".repeat(16)),
            t,
            None,
        )
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
}

/// `PUT /policy` with a kind no signing request has: the policy's 400, naming the kinds (the
/// kinds are an enum in the API, and the refusal stays what it was); a policy of the wrong
/// shape otherwise is the 422 of every body.
#[tokio::test]
async fn a_policy_with_an_unknown_kind_is_a_400_naming_the_kinds() {
    let server = server().await;
    let device = register(&server, "carol", "desktop").await;
    let token = log_in(&server, &device).await;
    let body = |policy: serde_json::Value| json!({ "wallet_id": "00", "version": 1, "policy": policy, "signature": "00" });
    let answer = server
        .call(
            Method::PUT,
            "/policy",
            Some(&token),
            Some(body(json!({ "allowed_kinds": ["eth-tx", "bitcoin"] }))),
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    assert_eq!(
        answer.body["message"],
        "unknown kind \"bitcoin\": use eth-tx, eth-message, eth-typed-data, eth-authorization, btc-psbt, digest"
    );
    for policy in [
        json!({ "allowed_kinds": "eth-tx" }),
        json!({ "allowed_kinds": [5] }),
        json!({ "chain_ids": "one" }),
    ] {
        let answer = server
            .call(Method::PUT, "/policy", Some(&token), Some(body(policy)))
            .await;
        assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
    }
}

/// Once the server drains (after SIGTERM, `tessera_server::shutdown`), `/readyz` says so with a
/// 503 naming the `serving` check, so that a load balancer stops sending requests, while
/// `/healthz` (the process) still answers 200.
#[tokio::test]
async fn readiness_fails_while_the_server_drains() {
    let dir = tempfile::tempdir().unwrap();
    let state = AppState::open(Config::new(dir.path().join("data")))
        .await
        .unwrap();
    let server = TestServer {
        app: app(state.clone()),
        dir,
    };
    let ready = server.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
    assert_eq!(ready.body["serving"]["ok"], true);
    state.shutdown().begin_draining();
    let draining = server.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(draining.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(draining.body["status"], "not_ready");
    assert_eq!(draining.body["serving"]["ok"], false);
    assert_eq!(
        draining.body["serving"]["error"],
        "the server is shutting down"
    );
    assert_eq!(draining.body["database"]["ok"], true);
    let alive = server.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(alive.status, StatusCode::OK);
}
