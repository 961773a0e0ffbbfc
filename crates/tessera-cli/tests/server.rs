//! The commitment server as a real process over real sockets: registration, authentication,
//! keygen and signing with the client SDK and the CLI, and the bad-input cases.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::json;
use tessera_api as api;
use tessera_client::{ClientError, ServerClient};
use tessera_core::DerivationPath;
use tessera_store::DeviceIdentity;

use common::{allow_digests, fresh_postgres_database, identity};

mod common;

/// A `tessera server` process on a free loopback port, killed on drop.
/// Which database a server process uses.
#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

const BACKENDS: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];

struct ServerProcess {
    child: Child,
    url: String,
    /// Arguments every (re)start passes, e.g. the database URL.
    args: Vec<String>,
    /// The certificate fingerprint a TLS server printed.
    fingerprint: Option<String>,
    _dir: tempfile::TempDir,
    data: std::path::PathBuf,
}

impl ServerProcess {
    fn start(extra: &[&str]) -> Self {
        Self::start_on(Backend::Sqlite, extra)
    }

    fn start_on(backend: Backend, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if let Backend::Postgres = backend {
            args.push("--database-url".into());
            args.push(fresh_postgres_database());
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let (child, url, fingerprint) = Self::spawn(&data, &refs);
        ServerProcess {
            child,
            url,
            args,
            fingerprint,
            _dir: dir,
            data,
        }
    }

    /// SIGKILL, as a crash would.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts again on the same data directory (a new port).
    fn restart(&mut self) {
        self.kill();
        let refs: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let (child, url, fingerprint) = Self::spawn(&self.data, &refs);
        self.child = child;
        self.url = url;
        self.fingerprint = fingerprint;
    }

    fn spawn(data: &Path, extra: &[&str]) -> (Child, String, Option<String>) {
        let transport: &[&str] = if extra.contains(&"--dev-tls") {
            &[]
        } else {
            &["--insecure-http"]
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .arg("server")
            .args(transport)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://") || w.starts_with("https://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .to_string();
        let words: Vec<&str> = line.split_whitespace().collect();
        let fingerprint = words
            .iter()
            .position(|w| *w == "SHA-256")
            .map(|i| words[i + 1].to_string());
        (child, url, fingerprint)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn device(
    server: &ServerProcess,
    user: &str,
    name: &str,
) -> (ServerClient, DeviceIdentity, api::Device, tempfile::TempDir) {
    let home = tempfile::tempdir().unwrap();
    let id = identity(home.path());
    let client = ServerClient::new(&server.url).unwrap();
    let d = client.register(&id, user, name).await.unwrap();
    (client, id, d, home)
}

#[tokio::test]
async fn keygen_and_sign_with_the_sdk() {
    for backend in BACKENDS {
        keygen_and_sign_on(backend).await;
    }
}

async fn keygen_and_sign_on(backend: Backend) {
    let server = ServerProcess::start_on(backend, &[]);
    let (mut client, id, d, _home) = device(&server, "alice", "laptop").await;
    assert_eq!(d.status, api::DeviceStatus::Active);
    client.login(&id, &d.device_id).await.unwrap();
    let share = client.keygen("main", |_, _| {}).await.unwrap();
    client
        .set_policy(&id, &share.wallet_id().to_string(), &allow_digests())
        .await
        .unwrap();
    let info = client.pubkey(&share.wallet_id().to_string()).await.unwrap();
    assert_eq!(info.public_key, share.public_key().to_string());
    assert_eq!(info.eth_address, share.public_key().eth_address());
    for path in ["m", "m/0/7"] {
        let path: DerivationPath = path.parse().unwrap();
        let digest = [7u8; 32];
        let sig = client.sign(&share, digest, &path, |_, _| {}).await.unwrap();
        share
            .public_key_at(&path)
            .unwrap()
            .verify(&digest, &sig)
            .unwrap();
    }
    // The same name again is refused; a second wallet is fine.
    assert!(matches!(
        client.keygen("main", |_, _| {}).await,
        Err(ClientError::Server { status: 409, .. })
    ));
    assert_eq!(client.wallets().await.unwrap().len(), 1);

    // The server keeps serving after all of that.
    assert_eq!(client.status().await.unwrap().status, "ok");
}

#[tokio::test]
async fn registry_identity_and_revocation() {
    for backend in BACKENDS {
        registry_on(backend).await;
    }
}

async fn registry_on(backend: Backend) {
    let server = ServerProcess::start_on(backend, &[]);
    let (mut alice, alice_id, alice_dev, _h1) = device(&server, "alice", "laptop").await;
    // Same identity again: same device (reinstall), nothing re-created.
    let again = ServerClient::new(&server.url)
        .unwrap()
        .register(&alice_id, "alice", "laptop")
        .await
        .unwrap();
    assert_eq!(again.device_id, alice_dev.device_id);
    // A second device of alice: its own identity, pending, cannot log in.
    let (mut phone, phone_id, phone_dev, _h2) = device(&server, "alice", "phone").await;
    assert_eq!(phone_dev.status, api::DeviceStatus::Pending);
    assert_ne!(phone_dev.identity_key, alice_dev.identity_key);
    assert!(matches!(
        phone.login(&phone_id, &phone_dev.device_id).await,
        Err(ClientError::Server { status: 403, .. })
    ));

    alice.login(&alice_id, &alice_dev.device_id).await.unwrap();
    let devices = alice.devices().await.unwrap();
    assert_eq!(devices.len(), 2);
    // A wrong code approves nothing; bob cannot approve alice's phone; alice's laptop can.
    assert!(matches!(
        alice.approve(&alice_id, "0000-0000-0000-0000-0000").await,
        Err(ClientError::Server { status: 404, .. })
    ));
    let code = api::approval_code(&phone_id.public_key());
    let forged = {
        let (bob, bob_id, bob_dev, _h) = device(&server, "mallory", "pc").await;
        let mut bob = bob;
        bob.login(&bob_id, &bob_dev.device_id).await.unwrap();
        // Mallory signs an approval of alice's phone and posts it with her own token.
        let mut key = [0u8; 32];
        hex::decode_to_slice(&phone_dev.identity_key, &mut key).unwrap();
        let sig = bob_id.sign(&api::approve_message(&phone_dev.device_id, &key));
        raw(
            &server,
            "POST",
            &format!("/devices/{}/approve", phone_dev.device_id),
            bob.token(),
            Some(
                json!({"signature": hex::encode(sig)})
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await
    };
    assert_eq!(forged.0, 404, "{}", forged.1);
    // An approval with a signature by the wrong key (the phone's own) is refused.
    let mut key = [0u8; 32];
    hex::decode_to_slice(&phone_dev.identity_key, &mut key).unwrap();
    let self_signed = phone_id.sign(&api::approve_message(&phone_dev.device_id, &key));
    let (s, _) = raw(
        &server,
        "POST",
        &format!("/devices/{}/approve", phone_dev.device_id),
        alice.token(),
        Some(
            json!({"signature": hex::encode(self_signed)})
                .to_string()
                .into_bytes(),
        ),
    )
    .await;
    assert_eq!(s, 401);
    assert!(matches!(
        phone.login(&phone_id, &phone_dev.device_id).await,
        Err(ClientError::Server { status: 403, .. })
    ));
    let approved = alice
        .approve(&alice_id, &code.to_lowercase())
        .await
        .unwrap();
    assert_eq!(approved.status, api::DeviceStatus::Active);
    phone.login(&phone_id, &phone_dev.device_id).await.unwrap();
    assert_eq!(phone.devices().await.unwrap().len(), 2);
    // Bob cannot see or revoke alice's devices, nor sign with her wallet.
    let (mut bob, bob_id, bob_dev, _h3) = device(&server, "bob", "desktop").await;
    bob.login(&bob_id, &bob_dev.device_id).await.unwrap();
    assert!(matches!(
        bob.approve(&bob_id, &code).await,
        Err(ClientError::Server { status: 404, .. })
    ));
    assert_eq!(bob.devices().await.unwrap().len(), 1);
    assert!(matches!(
        bob.revoke(&alice_dev.device_id).await,
        Err(ClientError::Server { status: 404, .. })
    ));
    let share = alice.keygen("w", |_, _| {}).await.unwrap();
    assert!(matches!(
        bob.pubkey(&share.wallet_id().to_string()).await,
        Err(ClientError::Server { status: 404, .. })
    ));
    assert!(matches!(
        bob.sign(&share, [1; 32], &DerivationPath::root(), |_, _| {})
            .await,
        Err(ClientError::Server { status: 404, .. })
    ));

    // Revoking alice's laptop (from itself): its token stops working at once.
    alice.revoke(&alice_dev.device_id).await.unwrap();
    assert!(matches!(
        alice.devices().await,
        Err(ClientError::Server { status: 401, .. })
    ));
    assert!(matches!(
        alice.login(&alice_id, &alice_dev.device_id).await,
        Err(ClientError::Server { status: 401, .. })
    ));
    // Signing reads the device's standing with the wallet: refused as revoked (401), for its
    // own wallet and for another user's alike (not 404).
    assert!(matches!(
        alice
            .sign(&share, [2; 32], &DerivationPath::root(), |_, _| {})
            .await,
        Err(ClientError::Server { status: 401, .. })
    ));
    let stranger = bob.keygen("b", |_, _| {}).await.unwrap();
    assert!(matches!(
        alice
            .sign(&stranger, [2; 32], &DerivationPath::root(), |_, _| {})
            .await,
        Err(ClientError::Server { status: 401, .. })
    ));
}

async fn raw(
    server: &ServerProcess,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
) -> (u16, serde_json::Value) {
    tessera_client::tls::install_crypto_provider();
    let http = reqwest::Client::new();
    let url = format!("{}{path}", server.url);
    let mut req = if method == "GET" {
        http.get(url)
    } else {
        http.post(url)
    };
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if path.starts_with("/ws") {
        // A real WebSocket handshake, so the server gets past the upgrade check to ours.
        req = req
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    }
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(json!({ "raw": text })),
    )
}

fn b64(bytes: &[u8]) -> String {
    // base64url without padding, for hand-made JWTs.
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test]
async fn bad_input_is_refused_and_the_server_keeps_serving() {
    for backend in BACKENDS {
        bad_input_on(backend).await;
    }
}

async fn bad_input_on(backend: Backend) {
    let server = ServerProcess::start_on(backend, &[]);
    let (mut client, id, d, _h) = device(&server, "carol", "laptop").await;
    client.login(&id, &d.device_id).await.unwrap();
    let token = client.token().unwrap().to_string();

    // Malformed JSON, wrong types, oversize bodies.
    let (s, _) = raw(
        &server,
        "POST",
        "/keygen",
        Some(&token),
        Some(b"{not json".to_vec()),
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = raw(
        &server,
        "POST",
        "/keygen",
        Some(&token),
        Some(br#"{"name": 5}"#.to_vec()),
    )
    .await;
    assert_eq!(s, 422);
    let (s, _) = raw(&server, "POST", "/devices", None, Some(vec![b' '; 200_000])).await;
    assert_eq!(s, 413);
    let (s, body) = raw(
        &server,
        "POST",
        "/sign",
        Some(&token),
        Some(br#"{"wallet_id":"00","kind":"digest","digest":"zz","path":"m"}"#.to_vec()),
    )
    .await;
    assert_eq!(s, 400, "{body}");
    // An unknown kind, and no kind: the body does not parse.
    for body in [
        br#"{"wallet_id":"00","kind":"bitcoin","path":"m"}"#.to_vec(),
        br#"{"wallet_id":"00","digest":"00","path":"m"}"#.to_vec(),
    ] {
        let (s, _) = raw(&server, "POST", "/sign", Some(&token), Some(body)).await;
        assert_eq!(s, 422);
    }

    // Tokens: none, garbage, alg none, HS256 with the public key as secret, expired (signed with
    // the server's real key, read from its data directory), wrong audience.
    let (s, _) = raw(&server, "GET", "/wallets", None, None).await;
    assert_eq!(s, 401);
    let (s, _) = raw(&server, "GET", "/wallets", Some("garbage"), None).await;
    assert_eq!(s, 401);
    let claims = |exp: i64, aud: &str| {
        json!({"sub": d.device_id, "usr": d.user_id, "aud": aud, "iat": 0, "exp": exp}).to_string()
    };
    let far = 4_000_000_000i64;
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims(far, "tessera-commitment-server").as_bytes())
    );
    let (s, body) = raw(&server, "GET", "/wallets", Some(&none), None).await;
    assert_eq!(s, 401, "{body}");
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::from_str::<serde_json::Value>(&claims(far, "tessera-commitment-server"))
            .unwrap(),
        &jsonwebtoken::EncodingKey::from_secret(d.identity_key.as_bytes()),
    )
    .unwrap();
    let (s, body) = raw(&server, "GET", "/wallets", Some(&hs), None).await;
    assert_eq!(s, 401);
    assert!(
        body["message"].as_str().unwrap().contains("EdDSA only"),
        "{body}"
    );
    let key = std::fs::read(server.data.join("token-signing.pk8")).unwrap();
    let sign_real = |c: String| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
            &serde_json::from_str::<serde_json::Value>(&c).unwrap(),
            &jsonwebtoken::EncodingKey::from_ed_der(&key),
        )
        .unwrap()
    };
    let (s, body) = raw(
        &server,
        "GET",
        "/wallets",
        Some(&sign_real(claims(1000, "tessera-commitment-server"))),
        None,
    )
    .await;
    assert_eq!(
        (s, body["message"].as_str().unwrap()),
        (401, "token expired")
    );
    let (s, body) = raw(
        &server,
        "GET",
        "/wallets",
        Some(&sign_real(claims(far, "someone-else"))),
        None,
    )
    .await;
    assert_eq!(
        (s, body["message"].as_str().unwrap()),
        (401, "token for another audience")
    );
    // The real key and claims work, which shows the refusals above are about what they changed.
    let (s, _) = raw(
        &server,
        "GET",
        "/wallets",
        Some(&sign_real(claims(far, "tessera-commitment-server"))),
        None,
    )
    .await;
    assert_eq!(s, 200);

    // Sessions: unknown, another device's, finished.
    let (s, _) = raw(&server, "GET", "/ws?session_id=00", Some(&token), None).await;
    assert_eq!(s, 404);
    let (mut other, oid, od, _h2) = device(&server, "dave", "pc").await;
    other.login(&oid, &od.device_id).await.unwrap();
    let (s, created) = raw(
        &server,
        "POST",
        "/keygen",
        Some(other.token().unwrap()),
        Some(br#"{"name":"x"}"#.to_vec()),
    )
    .await;
    assert_eq!(s, 200);
    let sid = created["session_id"].as_str().unwrap();
    let (s, _) = raw(
        &server,
        "GET",
        &format!("/ws?session_id={sid}"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(s, 403);

    let share = client.keygen("k", |_, _| {}).await.unwrap();
    assert_eq!(client.status().await.unwrap().status, "ok");
    let _ = share;
}

mod ws {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tessera_core::protocols::KeygenSession;
    use tessera_core::{PartyIndex, Session, Threshold, WalletId};
    use tokio_tungstenite::tungstenite::Message;

    type Socket = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;

    async fn open(server: &ServerProcess, token: &str, session_id: &str) -> Socket {
        tokio_tungstenite::connect_async(common::ws_request(&server.url, token, session_id))
            .await
            .unwrap()
            .0
    }

    /// Reads until the server closes; returns the close code and reason.
    async fn close_of(socket: &mut Socket) -> (u16, String) {
        while let Some(frame) = socket.next().await {
            if let Ok(Message::Close(Some(f))) = frame {
                return (u16::from(f.code), f.reason.to_string());
            }
        }
        panic!("the server did not close the socket with a code");
    }

    async fn logged_in(server: &ServerProcess, user: &str) -> (ServerClient, String) {
        let (mut client, id, d, home) = device(server, user, "laptop").await;
        client.login(&id, &d.device_id).await.unwrap();
        std::mem::forget(home);
        let token = client.token().unwrap().to_string();
        (client, token)
    }

    async fn keygen_session(server: &ServerProcess, token: &str) -> api::SessionCreated {
        let (s, body) = raw(
            server,
            "POST",
            "/keygen",
            Some(token),
            Some(br#"{"name":"w"}"#.to_vec()),
        )
        .await;
        assert_eq!(s, 200, "{body}");
        serde_json::from_value(body).unwrap()
    }

    fn our_session(
        created: &api::SessionCreated,
        nonce_override: Option<[u8; 32]>,
    ) -> KeygenSession {
        let mut nonce = [0u8; 32];
        hex::decode_to_slice(&created.nonce, &mut nonce).unwrap();
        let wallet = WalletId::from_hex(&created.wallet_id).unwrap();
        KeygenSession::new(
            wallet,
            Threshold::new(2, 2).unwrap(),
            PartyIndex::new(0),
            &nonce_override.unwrap_or(nonce),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn bad_frames_close_the_session_with_a_reason() {
        let server = ServerProcess::start(&[]);
        let (client, token) = logged_in(&server, "erin").await;

        // A frame of another session (another nonce): 4400, and the session is over for good.
        let created = keygen_session(&server, &token).await;
        let mut socket = open(&server, &token, &created.session_id).await;
        let mut wrong = our_session(&created, Some([9; 32]));
        let frame = wrong.start().unwrap().remove(0).to_bytes();
        socket.send(Message::Binary(frame.into())).await.unwrap();
        let (code, reason) = close_of(&mut socket).await;
        assert_eq!(code, 4400);
        assert!(reason.contains("belongs to another session"), "{reason}");
        let (s, _) = raw(
            &server,
            "GET",
            &format!("/ws?session_id={}", created.session_id),
            Some(&token),
            None,
        )
        .await;
        assert_eq!(s, 410);

        // A replayed frame: the same round-1 message twice.
        let created = keygen_session(&server, &token).await;
        let mut socket = open(&server, &token, &created.session_id).await;
        let mut ours = our_session(&created, None);
        let frame = ours.start().unwrap().remove(0).to_bytes();
        socket
            .send(Message::Binary(frame.clone().into()))
            .await
            .unwrap();
        socket.send(Message::Binary(frame.into())).await.unwrap();
        let (code, reason) = close_of(&mut socket).await;
        assert_eq!(code, 4400);
        assert!(reason.contains("replayed a message of round 1"), "{reason}");

        // A frame for a round the session is not in.
        let created = keygen_session(&server, &token).await;
        let mut socket = open(&server, &token, &created.session_id).await;
        let mut ours = our_session(&created, None);
        let mut e = ours.start().unwrap().remove(0);
        e.round = 3;
        socket
            .send(Message::Binary(e.to_bytes().into()))
            .await
            .unwrap();
        let (code, reason) = close_of(&mut socket).await;
        assert_eq!(code, 4400);
        assert!(reason.contains("round 3"), "{reason}");

        // Text and garbage.
        let created = keygen_session(&server, &token).await;
        let mut socket = open(&server, &token, &created.session_id).await;
        socket
            .send(Message::Binary(vec![1, 2, 3].into()))
            .await
            .unwrap();
        assert_eq!(close_of(&mut socket).await.0, 4400);

        // Nothing was stored and the server still works.
        assert!(client.wallets().await.unwrap().is_empty());
        client.keygen("good", |_, _| {}).await.unwrap();
        assert_eq!(client.wallets().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn the_run_nonce_joins_the_devices_contribution() {
        for backend in BACKENDS {
            run_nonce_on(backend).await;
        }
    }

    async fn run_nonce_on(backend: Backend) {
        let server = ServerProcess::start_on(backend, &[]);
        let (client, token) = logged_in(&server, "nina").await;
        let (mut client2, id, d, _home) = device(&server, "olga", "phone").await;
        client2.login(&id, &d.device_id).await.unwrap();

        // A malformed contribution is refused before any session exists.
        let (s, body) = raw(
            &server,
            "POST",
            "/keygen",
            Some(&token),
            Some(br#"{"name":"w","device_nonce":"zz"}"#.to_vec()),
        )
        .await;
        assert_eq!(s, 400, "{body}");
        assert!(
            body["message"].as_str().unwrap().contains("device_nonce"),
            "{body}"
        );

        let device_nonce = [0x33u8; 32];
        let request = json!({ "name": "w", "device_nonce": hex::encode(device_nonce) });
        let create = || async {
            let (s, body) = raw(
                &server,
                "POST",
                "/keygen",
                Some(&token),
                Some(request.to_string().into_bytes()),
            )
            .await;
            assert_eq!(s, 200, "{body}");
            serde_json::from_value::<api::SessionCreated>(body).unwrap()
        };

        // Running with the server's nonce alone, as if the device had contributed nothing: the
        // server bound the contribution, so this is another session.
        let created = create().await;
        let mut socket = open(&server, &token, &created.session_id).await;
        let mut alone = our_session(&created, None);
        let frame = alone.start().unwrap().remove(0).to_bytes();
        socket.send(Message::Binary(frame.into())).await.unwrap();
        let (code, reason) = close_of(&mut socket).await;
        assert_eq!(code, 4400);
        assert!(reason.contains("belongs to another session"), "{reason}");

        // With the joint nonce the server takes our round-1 message and moves on to round 2.
        let created = create().await;
        let mut server_nonce = [0u8; 32];
        hex::decode_to_slice(&created.nonce, &mut server_nonce).unwrap();
        let joint = tessera_core::protocols::joint_nonce(&[device_nonce, server_nonce]);
        let mut socket = open(&server, &token, &created.session_id).await;
        let mut ours = our_session(&created, Some(joint));
        let frame = ours.start().unwrap().remove(0).to_bytes();
        socket.send(Message::Binary(frame.into())).await.unwrap();
        loop {
            match socket.next().await.unwrap().unwrap() {
                Message::Binary(bytes) => {
                    let e = tessera_core::Envelope::from_bytes(PartyIndex::new(1), &bytes).unwrap();
                    if e.round == 2 {
                        break;
                    }
                }
                Message::Close(frame) => panic!("the server refused the joint nonce: {frame:?}"),
                _ => {}
            }
        }
        drop(socket);

        // The SDK contributes its nonce on every run: keygen, signing and refresh all complete,
        // and signatures verify under the wallet key before and after the refresh.
        let share = client2.keygen("main", |_, _| {}).await.unwrap();
        client2
            .set_policy(&id, &share.wallet_id().to_string(), &allow_digests())
            .await
            .unwrap();
        let pk = share.public_key();
        let sig = client2
            .sign(&share, [5; 32], &DerivationPath::root(), |_, _| {})
            .await
            .unwrap();
        pk.verify(&[5; 32], &sig).unwrap();
        let mut record = tessera_client::WalletRecord::new(share);
        assert_eq!(
            client2.refresh(&mut record, |_, _| Ok(())).await.unwrap(),
            1
        );
        let sig = client2
            .sign(&record.current, [6; 32], &DerivationPath::root(), |_, _| {})
            .await
            .unwrap();
        pk.verify(&[6; 32], &sig).unwrap();
        drop(client);
    }

    #[tokio::test]
    async fn idle_sessions_expire_and_the_client_can_start_again() {
        let server = ServerProcess::start(&["--session-idle-timeout", "1"]);
        let (client, token) = logged_in(&server, "frank").await;
        let created = keygen_session(&server, &token).await;
        let mut socket = open(&server, &token, &created.session_id).await;
        let started = std::time::Instant::now();
        let (code, reason) = close_of(&mut socket).await;
        assert_eq!(code, 4408, "{reason}");
        assert!(reason.contains("expired"), "{reason}");
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
        let (s, body) = raw(
            &server,
            "GET",
            &format!("/ws?session_id={}", created.session_id),
            Some(&token),
            None,
        )
        .await;
        assert_eq!(s, 410);
        assert!(
            body["message"].as_str().unwrap().contains("expired"),
            "{body}"
        );
        // A session created but not opened within the timeout expires too.
        let unopened = keygen_session(&server, &token).await;
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        let (s, body) = raw(
            &server,
            "GET",
            &format!("/ws?session_id={}", unopened.session_id),
            Some(&token),
            None,
        )
        .await;
        assert_eq!(s, 410, "{body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("expired before it was opened"),
            "{body}"
        );
        // A fresh session completes.
        client.keygen("after", |_, _| {}).await.unwrap();
    }
}

mod refresh {
    use super::*;
    use tessera_client::{RefreshStep, WalletRecord};

    async fn wallet(
        server: &ServerProcess,
    ) -> (
        ServerClient,
        DeviceIdentity,
        String,
        WalletRecord,
        tempfile::TempDir,
    ) {
        let (mut client, id, d, home) = device(server, "rita", "laptop").await;
        client.login(&id, &d.device_id).await.unwrap();
        let share = client.keygen("w", |_, _| {}).await.unwrap();
        client
            .set_policy(&id, &share.wallet_id().to_string(), &allow_digests())
            .await
            .unwrap();
        (
            client,
            id,
            d.device_id.into(),
            WalletRecord::new(share),
            home,
        )
    }

    /// What a device stores at each step, as the CLI does: the record at Settled, PendingStored
    /// (before committing) and Switched.
    fn persists(step: RefreshStep) -> bool {
        matches!(
            step,
            RefreshStep::Settled | RefreshStep::PendingStored | RefreshStep::Switched
        )
    }

    /// After a crash: the device reloads what it stored, the server restarts on its data, and
    /// both agree on one epoch and sign; a further refresh completes.
    async fn check_recovers(
        server: &mut ServerProcess,
        id: &DeviceIdentity,
        device_id: &str,
        stored: &[u8],
        expect_epoch: u64,
    ) {
        let mut record = WalletRecord::from_bytes(stored).unwrap();
        let pk = record.current.public_key();
        let mut client = ServerClient::new(&server.url).unwrap();
        client.login(id, device_id).await.unwrap();
        let sig = client
            .sign_wallet(
                &mut record,
                |_| Ok(()),
                &tessera_api::intent::SignKind::Digest {
                    digest: hex::encode([3u8; 32]),
                },
                &DerivationPath::root(),
                |_, _| {},
                |_| {},
            )
            .await
            .unwrap();
        pk.verify(&[3; 32], &sig).unwrap();
        assert_eq!(record.current.epoch(), expect_epoch);
        assert!(record.pending.is_none());
        let info = client
            .pubkey(&record.current.wallet_id().to_string())
            .await
            .unwrap();
        assert_eq!(info.epoch, expect_epoch, "device and server disagree");
        let next = client.refresh(&mut record, |_, _| Ok(())).await.unwrap();
        assert_eq!(next, expect_epoch + 1);
        let sig = client
            .sign(&record.current, [4; 32], &DerivationPath::root(), |_, _| {})
            .await
            .unwrap();
        pk.verify(&[4; 32], &sig).unwrap();
    }

    #[tokio::test]
    async fn a_complete_refresh_switches_both_sides() {
        let server = ServerProcess::start(&[]);
        let (client, _, _, mut record, _h) = wallet(&server).await;
        let before = record.current.to_bytes().to_vec();
        let mut steps = Vec::new();
        let epoch = client
            .refresh(&mut record, |s, _| {
                steps.push(s);
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(epoch, 1);
        assert_eq!(record.current.epoch(), 1);
        assert_ne!(*record.current.to_bytes(), before);
        assert_eq!(steps.last(), Some(&RefreshStep::Switched));
        assert!(
            steps.contains(&RefreshStep::PendingStored) && steps.contains(&RefreshStep::CommitSent)
        );
        // The old share no longer signs with the server.
        let old = tessera_core::KeyShare::from_bytes(&before).unwrap();
        assert!(matches!(
            client
                .sign(&old, [1; 32], &DerivationPath::root(), |_, _| {})
                .await,
            Err(ClientError::EpochMismatch {
                device: 0,
                server: 1,
                ..
            })
        ));
    }

    #[tokio::test]
    async fn one_refresh_of_a_wallet_at_a_time() {
        for backend in BACKENDS {
            one_refresh_on(backend).await;
        }
    }

    async fn one_refresh_on(backend: Backend) {
        let server = ServerProcess::start_on(backend, &["--session-idle-timeout", "1"]);
        let (client, _, _, mut record, _h) = wallet(&server).await;
        let token = client.token().unwrap().to_string();
        let wallet_id = record.current.wallet_id().to_string();
        let body = serde_json::to_vec(&json!({ "wallet_id": wallet_id })).unwrap();
        // A refresh session is created (not yet opened): a second one is refused with a reason,
        // from the SDK too, and nothing changes.
        let (s, first) = raw(
            &server,
            "POST",
            "/refresh",
            Some(&token),
            Some(body.clone()),
        )
        .await;
        assert_eq!(s, 200, "{first}");
        let (s, second) = raw(
            &server,
            "POST",
            "/refresh",
            Some(&token),
            Some(body.clone()),
        )
        .await;
        assert_eq!(s, 409, "{second}");
        assert!(
            second["message"]
                .as_str()
                .unwrap()
                .contains("already in progress"),
            "{second}"
        );
        match client.refresh(&mut record, |_, _| Ok(())).await {
            Err(ClientError::Server { status: 409, .. }) => {}
            other => panic!("a concurrent refresh was not refused: {other:?}"),
        }
        assert_eq!(record.current.epoch(), 0);
        assert!(record.pending.is_none());
        // Signing is not blocked by it.
        let pk = record.current.public_key();
        let sig = client
            .sign(&record.current, [5; 32], &DerivationPath::root(), |_, _| {})
            .await
            .unwrap();
        pk.verify(&[5; 32], &sig).unwrap();
        // Never opened, it expires after the idle timeout and no longer blocks.
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        assert_eq!(client.refresh(&mut record, |_, _| Ok(())).await.unwrap(), 1);
        let (s, body) = raw(
            &server,
            "GET",
            &format!("/ws?session_id={}", first["session_id"].as_str().unwrap()),
            Some(&token),
            None,
        )
        .await;
        assert_eq!(s, 410, "{body}");
        let sig = client
            .sign(&record.current, [6; 32], &DerivationPath::root(), |_, _| {})
            .await
            .unwrap();
        pk.verify(&[6; 32], &sig).unwrap();
    }

    #[tokio::test]
    async fn server_killed_at_each_step_of_a_refresh() {
        for backend in BACKENDS {
            server_killed_on(backend).await;
        }
    }

    async fn server_killed_on(backend: Backend) {
        // (step at which the server is SIGKILLed, epoch both sides must agree on afterwards)
        for (crash_at, expect) in [
            (RefreshStep::Round { round: 2, total: 4 }, 0),
            (RefreshStep::PendingStored, 0),
            (RefreshStep::CommitSent, 1),
        ] {
            let mut server = ServerProcess::start_on(backend, &[]);
            let (client, id, device_id, mut record, _h) = wallet(&server).await;
            let mut stored = record.to_bytes().to_vec();
            let result = client
                .refresh(&mut record, |step, rec| {
                    if persists(step) {
                        stored = rec.to_bytes().to_vec();
                    }
                    if step == crash_at {
                        if step == RefreshStep::CommitSent {
                            // Let the commit land, so the server dies after switching but
                            // before the device hears of it.
                            std::thread::sleep(std::time::Duration::from_millis(500));
                        }
                        server.kill();
                    }
                    Ok(())
                })
                .await;
            // Killed after switching, the server may already have sent its close: the device
            // then finishes too. Either way both must end on the same epoch.
            if crash_at != RefreshStep::CommitSent {
                assert!(
                    result.is_err(),
                    "{crash_at:?}: the refresh did not notice the crash"
                );
            }
            server.restart();
            check_recovers(&mut server, &id, &device_id, &stored, expect).await;
        }
    }

    #[tokio::test]
    async fn device_crashing_at_each_step_of_a_refresh() {
        // (step at which the device dies, whether it stored that step first, agreed epoch)
        for (crash_at, stored_first, expect) in [
            (RefreshStep::Round { round: 2, total: 4 }, false, 0),
            (RefreshStep::PendingStored, false, 0),
            (RefreshStep::PendingStored, true, 0),
            (RefreshStep::CommitSent, true, 1),
        ] {
            let mut server = ServerProcess::start(&[]);
            let (client, id, device_id, mut record, _h) = wallet(&server).await;
            let mut stored = record.to_bytes().to_vec();
            let result = client
                .refresh(&mut record, |step, rec| {
                    if step == crash_at {
                        if stored_first {
                            stored = rec.to_bytes().to_vec();
                        }
                        return Err("device crashed".into());
                    }
                    if persists(step) {
                        stored = rec.to_bytes().to_vec();
                    }
                    Ok(())
                })
                .await;
            assert!(matches!(result, Err(ClientError::Stopped(_))));
            drop(client);
            // Give the server a moment to see the socket close (or the commit) and record it.
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            check_recovers(&mut server, &id, &device_id, &stored, expect).await;
        }
    }
}

/// The device commands of the `tessera` binary against a server process, as a user runs them.
#[tokio::test]
async fn cli_device_commands() {
    // Over TLS with the development certificate, pinned by the device.
    let server = ServerProcess::start(&["--dev-tls"]);
    let pin = server.fingerprint.clone().unwrap();
    let home = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(args)
            .env("TESSERA_HOME", home.path())
            .env("TESSERA_PASSPHRASE", "correct horse battery staple")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let field = |out: &str, name: &str| -> String {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|r| r.split_whitespace().next().unwrap().to_string())
            .unwrap_or_else(|| panic!("no {name} in {out}"))
    };
    let (code, out, err) = run(&[
        "init",
        "--server-fingerprint",
        &pin,
        "--server",
        &server.url,
        "--user",
        "gina",
        "--name",
        "Gina's laptop",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("Active"), "{out}");
    // A second init finds the same device again (reinstall with the keystore kept).
    let (_, again, _) = run(&[
        "init",
        "--server-fingerprint",
        &pin,
        "--server",
        &server.url,
        "--user",
        "gina",
        "--name",
        "Gina's laptop",
    ]);
    assert_eq!(field(&out, "device id"), field(&again, "device id"));

    let (code, out, err) = run(&["keygen", "--name", "main"]);
    assert_eq!(code, Some(0), "{err}");
    let pubkey = field(&out, "public key");
    assert!(err.contains("keygen round 4/4 done"), "{err}");

    let (code, out, err) = run(&["sign", "--wallet", "main", "--message", "hello"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(field(&out, "public key"), pubkey);
    let sig = field(&out, "signature DER");
    let verify = |sig: &str| {
        run(&[
            "verify",
            "--pubkey",
            &pubkey,
            "--message",
            "hello",
            "--signature",
            sig,
        ])
        .0
    };
    assert_eq!(verify(&sig), Some(0));

    let (code, out, err) = run(&["refresh", "--wallet", "main"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("now epoch 1"), "{out}");
    let (code, out, err) = run(&[
        "sign",
        "--wallet",
        "main",
        "--message",
        "hello",
        "--path",
        "m/0/7",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert_ne!(field(&out, "public key"), pubkey);

    // An EIP-1559 transaction: the raw signed transaction is printed; a raw digest is refused by
    // a new wallet's policy (403 naming the rule), then allowed by a policy set from a file.
    let tx = home.path().join("tx.json");
    std::fs::write(
        &tx,
        r#"{"chain_id":1,"nonce":0,"max_fee_per_gas":"30000000000","max_priority_fee_per_gas":"1000000000","gas_limit":21000,"to":"0x1111111111111111111111111111111111111111","value":"1000","data":"0x"}"#,
    )
    .unwrap();
    let (code, out, err) = run(&["sign", "--wallet", "main", "--eth-tx", tx.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(field(&out, "raw tx").starts_with("0x02"), "{out}");
    assert!(out.contains("send 1000 wei to 0x1111"), "{out}");
    let digest = "ab".repeat(32);
    let (code, _, err) = run(&["sign", "--wallet", "main", "--digest", &digest]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("allowed_kinds"), "{err}");
    let policy = home.path().join("policy.json");
    // A kind no signing request has is bad input: refused before anything is signed or sent
    // (exit 2), naming the kinds.
    std::fs::write(&policy, r#"{"allowed_kinds":["digest","bitcoin"]}"#).unwrap();
    let (code, _, err) = run(&[
        "policy",
        "set",
        "--wallet",
        "main",
        "--file",
        policy.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(
            "unknown variant `bitcoin`, expected one of `eth-tx`, `eth-message`, `digest`"
        ),
        "{err}"
    );
    std::fs::write(&policy, r#"{"allowed_kinds":["digest","eth-tx"]}"#).unwrap();
    let (code, out, err) = run(&[
        "policy",
        "set",
        "--wallet",
        "main",
        "--file",
        policy.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("version 1"), "{out}");
    let (code, out, _) = run(&["policy", "show", "--wallet", "main"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("\"digest\""), "{out}");
    let (code, _, err) = run(&["sign", "--wallet", "main", "--digest", &digest]);
    assert_eq!(code, Some(0), "{err}");
    let (code, out, _) = run(&["audit", "list", "--wallet", "main"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("sign.denied") && out.contains("policy.changed"),
        "{out}"
    );
    let (code, out, _) = run(&["audit", "verify"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("intact"), "{out}");

    let (code, out, _) = run(&["wallets"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("main") && out.contains("epoch 1"), "{out}");
    let (code, out, _) = run(&["pubkey", "--wallet", "main"]);
    assert_eq!((code, field(&out, "public key")), (Some(0), pubkey.clone()));
    let (code, out, _) = run(&["device", "list"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("(this device)") && out.contains("Gina's laptop"),
        "{out}"
    );

    // Bad input: one line, exit 2, nothing changed.
    for args in [
        &["keygen", "--name", "../escape"][..],
        &["keygen", "--name", "main"],
        &["sign", "--wallet", "main", "--digest", "abcd"],
        &["sign", "--wallet", "nope", "--message", "x"],
        &[
            "sign",
            "--wallet",
            "main",
            "--message",
            "x",
            "--path",
            "m/1'",
        ],
    ] {
        let (code, _, err) = run(args);
        assert!(
            code == Some(2) || code == Some(1),
            "{args:?}: {code:?} {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    }
    let wrong = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["wallets"])
        .env("TESSERA_HOME", home.path())
        .env("TESSERA_PASSPHRASE", "wrong")
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("wrong passphrase"));
}

mod tls {
    use super::*;

    #[tokio::test]
    async fn dev_tls_with_a_pinned_certificate() {
        let server = ServerProcess::start(&["--dev-tls"]);
        assert!(
            server.url.starts_with("https://127.0.0.1:"),
            "{}",
            server.url
        );
        let fingerprint = server.fingerprint.clone().unwrap();
        assert_eq!(fingerprint.len(), 64);

        // Pinned: the whole flow works over HTTPS and WSS.
        let home = tempfile::tempdir().unwrap();
        let id = identity(home.path());
        let mut client = ServerClient::with_pinned_certificate(&server.url, &fingerprint).unwrap();
        let d = client.register(&id, "tina", "laptop").await.unwrap();
        client.login(&id, &d.device_id).await.unwrap();
        let share = client.keygen("w", |_, _| {}).await.unwrap();
        client
            .set_policy(&id, &share.wallet_id().to_string(), &allow_digests())
            .await
            .unwrap();
        let sig = client
            .sign(&share, [5; 32], &DerivationPath::root(), |_, _| {})
            .await
            .unwrap();
        share.public_key().verify(&[5; 32], &sig).unwrap();

        // Another pin, the web PKI (a self-signed certificate is not in it), plain HTTP: refused.
        let mut wrong = fingerprint.clone().into_bytes();
        wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
        let wrong = String::from_utf8(wrong).unwrap();
        let other = ServerClient::with_pinned_certificate(&server.url, &wrong).unwrap();
        let err = other.status().await.unwrap_err();
        assert!(matches!(err, ClientError::Network(_)), "{err}");
        let unpinned = ServerClient::new(&server.url).unwrap();
        assert!(matches!(
            unpinned.status().await,
            Err(ClientError::Network(_))
        ));
        let plain = ServerClient::new(&server.url.replace("https://", "http://")).unwrap();
        assert!(plain.status().await.is_err());
        assert!(
            ServerClient::with_pinned_certificate(
                &server.url.replace("https://", "http://"),
                &fingerprint
            )
            .is_err()
        );
        assert!(ServerClient::with_pinned_certificate(&server.url, "abcd").is_err());

        // The certificate is kept: a restart serves the same fingerprint.
        let mut server = server;
        server.kill();
        let (child, url, again) = ServerProcess::spawn(&server.data, &["--dev-tls"]);
        server.child = child;
        server.url = url;
        assert_eq!(again.as_deref(), Some(fingerprint.as_str()));
        let client = ServerClient::with_pinned_certificate(&server.url, &fingerprint).unwrap();
        assert_eq!(client.status().await.unwrap().status, "ok");
    }

    #[test]
    fn plain_http_only_on_loopback_and_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        for args in [
            &["server", "--listen", "127.0.0.1:0"][..],
            &["server", "--insecure-http", "--listen", "0.0.0.0:0"],
            &[
                "server",
                "--tls-cert",
                "/nonexistent.pem",
                "--tls-key",
                "/nonexistent.key",
                "--listen",
                "127.0.0.1:0",
            ],
            &["server", "--dev-tls", "--insecure-http"],
        ] {
            let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
                .args(args)
                .args(["--data-dir"])
                .arg(dir.path())
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(2), "{args:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        }
    }
}

/// `tessera refresh` SIGKILLed as a process at each step; afterwards the device (the CLI, from its
/// keystore) and the server agree on one epoch and sign.
#[tokio::test]
async fn device_process_killed_during_refresh() {
    for (pause_at, expect_epoch) in [("round-2", 0), ("pending-stored", 0), ("commit-sent", 1)] {
        let server = ServerProcess::start(&[]);
        let home = tempfile::tempdir().unwrap();
        let tessera = |args: &[&str]| {
            let mut c = Command::new(env!("CARGO_BIN_EXE_tessera"));
            c.args(args)
                .env("TESSERA_HOME", home.path())
                .env("TESSERA_PASSPHRASE", "pw for the crash test");
            c
        };
        let ok = |mut c: Command| {
            let out = c.output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        ok(tessera(&[
            "init",
            "--server",
            &server.url,
            "--user",
            "kim",
            "--name",
            "pc",
        ]));
        ok(tessera(&["keygen", "--name", "w"]));

        let mut child = tessera(&["refresh", "--wallet", "w"])
            .env("TESSERA_TEST_PAUSE_AT", pause_at)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        loop {
            let line = lines
                .next()
                .expect("refresh ended before the pause")
                .unwrap();
            if line == format!("paused at {pause_at}") {
                break;
            }
        }
        if pause_at == "commit-sent" {
            // Let the server receive the commit and switch before the device dies.
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;

        let out = ok(tessera(&[
            "sign",
            "--wallet",
            "w",
            "--message",
            "after the crash",
        ]));
        assert!(out.contains("verified       yes"), "{out}");
        let wallets = ok(tessera(&["wallets"]));
        assert!(
            wallets.contains(&format!("epoch {expect_epoch}")),
            "{pause_at}: {wallets}"
        );
        let out = ok(tessera(&["refresh", "--wallet", "w"]));
        assert!(
            out.contains(&format!("now epoch {}", expect_epoch + 1)),
            "{out}"
        );
        ok(tessera(&[
            "sign",
            "--wallet",
            "w",
            "--message",
            "after another refresh",
        ]));
    }
}
