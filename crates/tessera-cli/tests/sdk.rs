//! The device SDK (`tessera_client::device::Device`) against a real `tessera server` process, on
//! SQLite and PostgreSQL: set-up, key generation, signing, refresh, listings, backups, the
//! server's held backup, device approval and revocation, and the revoked-device refusal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use tessera_api::DeviceStatus;
use tessera_api::intent::SignKind;
use tessera_backup::holder::HolderSecretKey;
use tessera_backup::structure::AccessStructure;
use tessera_client::device::backup::{restore_share, verify_backup};
use tessera_client::device::online::{BackupRecorded, ServerBackup};
use tessera_client::device::{Device, DeviceError, HolderKind, ServerAddress};
use tessera_core::DerivationPath;
use tessera_core::ecdsa::eip191_digest;
use tessera_store::{KeystoreOptions, Passphrase};

use common::{Backend, Server};

mod common;

fn device(dir: &Path) -> Device {
    Device::open_dir(dir)
        .with_keystore_options(KeystoreOptions::default().insecure_fast_kdf_for_tests())
}

fn passphrase() -> Passphrase {
    Passphrase::new("device pw".into()).unwrap()
}

fn address(server: &Server) -> ServerAddress {
    ServerAddress {
        url: server.url.clone(),
        fingerprint: None,
    }
}

async fn set_up(server: &Server, dir: &Path, user: &str, name: &str) -> (Device, DeviceStatus) {
    let device = device(dir);
    let address = address(server);
    let registered = device
        .init(
            &address.client().unwrap(),
            &passphrase(),
            &address,
            user,
            name,
        )
        .await
        .unwrap();
    assert_eq!(
        registered.approval_code.is_some(),
        registered.device.status == DeviceStatus::Pending
    );
    (device, registered.device.status)
}

async fn wallet_workflows(backend: Backend) {
    tessera_client::tls::install_crypto_provider();
    let server = common::start(backend);
    let home = tempfile::tempdir().unwrap();

    // Not set up yet: said so, before any passphrase is used.
    let fresh = device(home.path());
    let err = fresh.connect(passphrase()).await.unwrap_err();
    assert!(matches!(err, DeviceError::NotSetUp { .. }), "{err}");

    let (device, status) = set_up(&server, home.path(), "alice", "laptop").await;
    assert_eq!(status, DeviceStatus::Active);
    assert_eq!(device.config().unwrap().device_name, "laptop");

    // A wrong passphrase is the keystore's refusal.
    let wrong = device
        .connect(Passphrase::new("not it".into()).unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(
            wrong,
            DeviceError::Store(tessera_store::Error::WrongPassphrase { .. })
        ),
        "{wrong}"
    );

    let online = device.connect(passphrase()).await.unwrap();
    let mut rounds = Vec::new();
    let share = online
        .keygen("savings", |r, t| rounds.push((r, t)))
        .await
        .unwrap();
    assert_eq!(rounds.last().map(|&(r, t)| r == t), Some(true));
    let err = online.keygen("savings", |_, _| {}).await.unwrap_err();
    assert!(matches!(err, DeviceError::WalletExists { .. }), "{err}");

    let message = "pay 1 to bob";
    let kind = SignKind::EthMessage {
        message: message.into(),
    };
    let path = DerivationPath::root();
    let signed = online
        .sign("savings", &kind, &path, |_, _| {}, |_| {})
        .await
        .unwrap();
    assert_eq!(signed.public_key, share.public_key());
    signed
        .public_key
        .verify(&eip191_digest(message.as_bytes()), &signed.signature)
        .unwrap();
    assert!(signed.raw_tx.is_none());
    // A digest the policy does not allow: the server's refusal, typed.
    let digest = SignKind::Digest {
        digest: hex::encode([7u8; 32]),
    };
    let err = online
        .sign("savings", &digest, &path, |_, _| {}, |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            DeviceError::Client(tessera_client::ClientError::Server { status: 403, .. })
        ),
        "{err}"
    );

    let mut steps = Vec::new();
    let epoch = online
        .refresh("savings", |step| steps.push(step))
        .await
        .unwrap();
    assert_eq!(epoch, share.epoch() + 1);
    assert!(steps.contains(&tessera_client::RefreshStep::PendingStored));
    assert_eq!(steps.last(), Some(&tessera_client::RefreshStep::Switched));
    let record = online.wallet("savings").unwrap();
    assert_eq!(record.current.epoch(), epoch);
    assert_eq!(record.current.public_key(), share.public_key());
    online
        .sign("savings", &kind, &path, |_, _| {}, |_| {})
        .await
        .unwrap();

    let wallets = online.wallets().await.unwrap();
    assert_eq!(wallets.len(), 1);
    assert_eq!(wallets[0].info.name, "savings");
    assert_eq!(wallets[0].info.epoch, epoch);
    assert!(wallets[0].share_on_this_device);
    let policy = online.policy("savings").await.unwrap();
    assert_eq!((policy.version, policy.set_by.is_none()), (0, true));
    let audit = online.audit(Some("savings")).await.unwrap();
    assert!(
        audit.iter().any(|r| r.kind.contains("refresh")),
        "{audit:?}"
    );
    assert!(online.audit_verify().await.unwrap().first_bad.is_none());

    // A backup of this device's share to two holders, recorded by the server.
    let usb = HolderSecretKey::generate("usb-1").unwrap();
    let cloud = HolderSecretKey::generate("cloud").unwrap();
    device
        .remember_holder(&usb.public(), HolderKind::Usb)
        .unwrap();
    device
        .remember_holder(&cloud.public(), HolderKind::Cloud)
        .unwrap();
    let structure = AccessStructure::parse("or(usb-1, cloud)").unwrap();
    let holders = device
        .known_holders()
        .unwrap()
        .resolve(&structure, &[])
        .unwrap();
    let (backup, bytes) = device
        .backup_device_share(&passphrase(), "savings", &structure, &holders)
        .unwrap();
    assert_eq!(backup.context().epoch, epoch);
    verify_backup(&bytes, None).unwrap();
    match online.record_backup(&bytes).await.unwrap() {
        BackupRecorded::Recorded(digest) => assert!(!digest.is_empty()),
        BackupRecorded::NotAServerWallet => panic!("the server holds this wallet"),
    }
    let restored = restore_share(&backup, std::slice::from_ref(&cloud)).unwrap();
    assert_eq!(restored.public_key(), share.public_key());
    assert_eq!(restored.epoch(), epoch);
    // Tampered bytes do not verify.
    let mut bad = bytes.clone();
    let middle = bad.len() / 2;
    bad[middle] ^= 1;
    assert!(verify_backup(&bad, None).is_err());

    // The server's share, for a user with one active device: held under a time lock.
    match online
        .backup_server_share("savings", &structure, &holders)
        .await
        .unwrap()
    {
        ServerBackup::Held(action) => assert!(action.unlock_at.is_some(), "{action:?}"),
        ServerBackup::Ready(..) => panic!("an export with one active device must be held"),
    }
}

#[tokio::test]
async fn wallet_workflows_sqlite() {
    wallet_workflows(Backend::Sqlite).await;
}

#[tokio::test]
async fn wallet_workflows_postgres() {
    wallet_workflows(Backend::Postgres).await;
}

#[tokio::test]
async fn a_revoked_device_is_refused_at_init_and_its_config_is_unchanged() {
    tessera_client::tls::install_crypto_provider();
    let server = common::start(Backend::Sqlite);
    let (laptop_home, phone_home) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (laptop, _) = set_up(&server, laptop_home.path(), "bob", "laptop").await;
    let (phone, status) = set_up(&server, phone_home.path(), "bob", "phone").await;
    assert_eq!(status, DeviceStatus::Pending);
    let phone_config = phone.config().unwrap();

    let online = laptop.connect(passphrase()).await.unwrap();
    let devices = online.devices().await.unwrap();
    assert_eq!(devices.len(), 2);
    let code = {
        let identity = tessera_store::Keystore::open_with(
            phone_home.path(),
            KeystoreOptions::default().insecure_fast_kdf_for_tests(),
        )
        .unwrap()
        .load_identity(&passphrase())
        .unwrap();
        tessera_api::approval_code(&identity.public_key())
    };
    let approved = online.approve_device(&code).await.unwrap();
    assert_eq!(approved.device_id, phone_config.device_id);
    let revoked = online
        .revoke_device(&phone_config.device_id, false)
        .await
        .unwrap();
    assert_eq!(revoked.status, DeviceStatus::Revoked);

    let address = address(&server);
    let err = phone
        .init(
            &address.client().unwrap(),
            &passphrase(),
            &address,
            "bob",
            "phone again",
        )
        .await
        .unwrap_err();
    match &err {
        DeviceError::Revoked { device_id, .. } => assert_eq!(device_id, &phone_config.device_id),
        other => panic!("expected the revoked refusal, got {other}"),
    }
    assert!(err.to_string().contains("can never be used again"), "{err}");
    assert_eq!(phone.config().unwrap(), phone_config);
}

#[test]
fn an_unusable_server_address_is_refused_before_anything_is_sent() {
    let err = ServerAddress {
        url: "ftp://example".into(),
        fingerprint: None,
    }
    .client()
    .unwrap_err();
    assert!(matches!(err, DeviceError::ServerAddress(_)), "{err}");
    let err = ServerAddress {
        url: "http://127.0.0.1:1".into(),
        fingerprint: Some("ab".repeat(32)),
    }
    .client()
    .unwrap_err();
    assert!(matches!(err, DeviceError::ServerAddress(_)), "{err}");
}

/// What an app with the platform's secure storage does: the device's records and keystore
/// entries live only in the storage it plugs in (here in memory), and every server workflow
/// works through them: set-up, login, keygen, a refresh with its two-phase switch, signing.
#[tokio::test]
async fn a_device_kept_entirely_in_plugged_in_storage_runs_the_server_workflows() {
    use std::sync::Arc;
    use tessera_store::keystore::{EntryStorage, KeystoreEntry, MemoryEntries};
    use tessera_store::{HomeRecord, HomeStorage, MemoryHome};

    tessera_client::tls::install_crypto_provider();
    let server = common::start(Backend::Sqlite);
    let home = Arc::new(MemoryHome::new());
    let entries = Arc::new(MemoryEntries::new());
    let open = || {
        Device::in_storage(home.clone(), entries.clone())
            .with_keystore_options(KeystoreOptions::default().insecure_fast_kdf_for_tests())
    };
    let address = address(&server);
    let registered = open()
        .init(
            &address.client().unwrap(),
            &passphrase(),
            &address,
            "pat",
            "phone",
        )
        .await
        .unwrap();
    assert_eq!(registered.device.status, DeviceStatus::Active);

    let online = open().connect(passphrase()).await.unwrap();
    let share = online.keygen("pocket", |_, _| {}).await.unwrap();
    let mut steps = Vec::new();
    assert_eq!(
        online.refresh("pocket", |s| steps.push(s)).await.unwrap(),
        1
    );
    assert!(!steps.is_empty());

    // Everything the device keeps is in the two stores it was given.
    assert!(home.get(HomeRecord::DeviceConfig).unwrap().is_some());
    assert!(entries.exists(KeystoreEntry::Identity).unwrap());
    assert!(entries.exists(KeystoreEntry::Wallet("pocket")).unwrap());

    // Another handle over the same stores finds the refreshed wallet and signs with it.
    let again = open().connect(passphrase()).await.unwrap();
    assert_eq!(again.wallet("pocket").unwrap().current.epoch(), 1);
    let message = "from the phone's keychain";
    let signed = again
        .sign(
            "pocket",
            &SignKind::EthMessage {
                message: message.into(),
            },
            &DerivationPath::root(),
            |_, _| {},
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(signed.public_key, share.public_key());
    signed
        .public_key
        .verify(&eip191_digest(message.as_bytes()), &signed.signature)
        .unwrap();
}
