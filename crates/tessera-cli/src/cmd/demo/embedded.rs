//! `tessera demo`: the product's main topology in one command. An embedded commitment server
//! on loopback (SQLite in a temporary directory) and this device (a temporary keystore) run
//! device set-up, 2-of-2 key generation, signing, a refresh, and signing again.

use std::io::IsTerminal;
use std::time::Instant;

use tessera_client::{RefreshStep, ServerClient, WalletRecord};
use tessera_core::ecdsa::eip191_digest;
use tessera_core::{DerivationPath, Signature};
use tessera_store::{Keystore, Passphrase};

use crate::failure::Failure;
use crate::progress::Progress;

pub(super) async fn run(
    message: &str,
    path: &DerivationPath,
    format: crate::output::Format,
) -> Result<(), Failure> {
    let mut progress = Progress::new(std::io::stderr().is_terminal());
    let tmp = tempfile::tempdir()
        .map_err(|e| Failure::failed(format!("cannot create a temporary directory: {e}")))?;

    // 1. The commitment server, embedded, on a free loopback port.
    let step = progress.step(
        "start the commitment server (embedded, loopback, SQLite)",
        1,
    );
    let started = Instant::now();
    let state =
        tessera_server::AppState::open(tessera_server::Config::new(tmp.path().join("server")))
            .await
            .map_err(|e| Failure::Failed(e.to_string()))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(Failure::failed)?;
    let url = format!("http://{}", listener.local_addr().map_err(Failure::failed)?);
    let server = tokio::spawn(tessera_server::serve(listener, state));
    step.finish(started.elapsed());

    // 2. This device: identity key in its keystore, registration, login.
    let step = progress.step("set up this device (identity key, registration, login)", 1);
    let started = Instant::now();
    let keystore = Keystore::open(tmp.path().join("device")).map_err(Failure::from)?;
    let passphrase = Passphrase::new("tessera demo passphrase".into()).map_err(Failure::from)?;
    let identity = keystore
        .create_identity(&passphrase)
        .map_err(Failure::from)?;
    let mut client = ServerClient::new(&url).map_err(Failure::from)?;
    let device = client
        .register(&identity, "demo", "this computer")
        .await
        .map_err(Failure::from)?;
    client
        .login(&identity, &device.device_id)
        .await
        .map_err(Failure::from)?;
    step.finish(started.elapsed());

    // 3. Key generation: the device is party 0, the server party 1.
    let step = progress.step("key generation, 2-of-2 with the server", 4);
    let started = Instant::now();
    let share = client
        .keygen("demo", |r, t| step.round(r, t))
        .await
        .map_err(Failure::from)?;
    step.finish(started.elapsed());
    let mut record = WalletRecord::new(share);
    keystore
        .save_wallet("demo", &record.to_bytes(), &passphrase)
        .map_err(Failure::from)?;
    let key = record
        .current
        .public_key_at(path)
        .map_err(Failure::failed)?;
    let digest = eip191_digest(message.as_bytes());
    let kind = tessera_api::intent::SignKind::EthMessage {
        message: message.to_string(),
    };

    // 4. Sign, refresh, sign again.
    let step = progress.step("signing (device + server)", 3);
    let started = Instant::now();
    let first = client
        .sign_kind(
            &record.current,
            &kind,
            path,
            |r, t| step.round(r, t),
            |_| {},
        )
        .await
        .map_err(Failure::from)?;
    step.finish(started.elapsed());

    let step = progress.step("refresh (new shares, same key, two-phase switch)", 4);
    let started = Instant::now();
    let epoch = client
        .refresh(&mut record, |s, r| match s {
            RefreshStep::Round { round, total } => {
                step.round(round, total);
                Ok(())
            }
            RefreshStep::Settled
            | RefreshStep::PendingStored
            | RefreshStep::Switched
            | RefreshStep::Banned => keystore
                .replace_wallet("demo", &r.to_bytes(), &passphrase)
                .map_err(Into::into),
            RefreshStep::CommitSent => Ok(()),
        })
        .await
        .map_err(Failure::from)?;
    step.finish(started.elapsed());

    let step = progress.step("signing again with the refreshed shares", 3);
    let started = Instant::now();
    let second = client
        .sign_kind(
            &record.current,
            &kind,
            path,
            |r, t| step.round(r, t),
            |_| {},
        )
        .await
        .map_err(Failure::from)?;
    step.finish(started.elapsed());
    server.abort();

    if format.json {
        key.verify(&digest, &first).map_err(Failure::failed)?;
        key.verify(&digest, &second).map_err(Failure::failed)?;
        let signatures: Vec<_> = [first, second]
            .iter()
            .map(|sig| {
                serde_json::json!({
                    "der": hex::encode(sig.to_der()),
                    "rsv": hex::encode(sig.to_rsv()),
                })
            })
            .collect();
        return crate::output::print_json(&serde_json::json!({
            "server": url,
            "device_id": device.device_id,
            "device_name": device.name,
            "wallet_id": record.current.wallet_id().to_string(),
            "path": path.to_string(),
            "public_key": key.to_string(),
            "eth_address": key.eth_address(),
            "message": message,
            "digest": hex::encode(digest),
            "signatures": signatures,
            "epoch_after_refresh": epoch,
            "verified": true,
        }));
    }
    let show = |label: &str, sig: &Signature| {
        println!("{label} DER  {}", hex::encode(sig.to_der()));
        println!("{label} rsv  {}", hex::encode(sig.to_rsv()));
    };
    println!("server         {url} (embedded; data in a temporary directory)");
    println!("device         {} ({})", device.device_id, device.name);
    println!(
        "wallet         {} (2-of-2: this device + the server)",
        record.current.wallet_id()
    );
    println!("path           {path}");
    println!("public key     {key}");
    println!("eth address    {}", key.eth_address());
    println!("message        {message:?}");
    println!(
        "digest         {} (EIP-191 personal_sign)",
        hex::encode(digest)
    );
    show("signature 1", &first);
    show("signature 2", &second);
    println!("epoch          {epoch} after the refresh (key unchanged)");
    key.verify(&digest, &first).map_err(Failure::failed)?;
    key.verify(&digest, &second).map_err(Failure::failed)?;
    println!("verified       yes, both (k256, under the public key above)");
    Ok(())
}
