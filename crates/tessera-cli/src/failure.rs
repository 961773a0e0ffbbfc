//! The one place where errors become exit codes and messages.
//!
//! Exit 2 ([`Failure::Usage`]): bad arguments or input, something the user fixes by typing the
//! command differently (a wrong passphrase, a bad name, a device not set up yet). Exit 1
//! ([`Failure::Failed`]): the operation ran and failed. The message is printed on one line
//! after `error: `.

use tessera_client::ClientError;
use tessera_client::device::DeviceError;

/// A failure with its exit code.
pub(crate) enum Failure {
    /// Bad arguments or input: exit 2.
    Usage(String),
    /// The operation failed: exit 1.
    Failed(String),
}

/// What a command returns.
pub(crate) type CliResult = Result<(), Failure>;

impl Failure {
    /// Bad input, with `e`'s message (for an error type whose code depends on what was parsed:
    /// a `tessera_core::Error` from reading an argument).
    pub(crate) fn usage(e: impl std::fmt::Display) -> Self {
        Failure::Usage(e.to_string())
    }

    /// A failed operation, with `e`'s message (a `tessera_core::Error` from running a protocol,
    /// an I/O error of the server's set-up).
    pub(crate) fn failed(e: impl std::fmt::Display) -> Self {
        Failure::Failed(e.to_string())
    }

    /// The exit code.
    pub(crate) fn code(&self) -> u8 {
        match self {
            Failure::Usage(_) => 2,
            Failure::Failed(_) => 1,
        }
    }

    /// The message.
    pub(crate) fn message(&self) -> &str {
        match self {
            Failure::Usage(m) | Failure::Failed(m) => m,
        }
    }
}

impl From<tessera_store::Error> for Failure {
    fn from(e: tessera_store::Error) -> Self {
        match e {
            tessera_store::Error::WrongPassphrase { .. }
            | tessera_store::Error::InvalidWalletName { .. } => Failure::Usage(e.to_string()),
            other => Failure::Failed(other.to_string()),
        }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure::Failed(e.to_string())
    }
}

impl From<DeviceError> for Failure {
    fn from(e: DeviceError) -> Self {
        match e {
            DeviceError::NotSetUp { location } => Failure::Usage(format!(
                "this device is not set up ({location} missing): run `tessera init --server URL --user USER --name NAME` first"
            )),
            DeviceError::Store(e) => e.into(),
            DeviceError::Client(e) => e.into(),
            DeviceError::ServerAddress(_)
            | DeviceError::WalletExists { .. }
            | DeviceError::InvalidRequest(_)
            | DeviceError::NoSuchRequest { .. }
            | DeviceError::HolderKeyDiffers { .. }
            | DeviceError::HolderKnown { .. }
            | DeviceError::NoHolderKey { .. }
            | DeviceError::InvalidHolderKey(_)
            | DeviceError::FileExists { .. }
            | DeviceError::InvalidBackupRequest(_)
            | DeviceError::ServerShareOnDevice
            | DeviceError::RestoreExists { .. }
            | DeviceError::NoKeyFile { .. }
            | DeviceError::NoKeyDirectory
            | DeviceError::InvalidPeerName(_) => Failure::Usage(e.to_string()),
            DeviceError::Damaged { .. }
            | DeviceError::WalletRecord { .. }
            | DeviceError::Revoked { .. }
            | DeviceError::Protocol(_)
            | DeviceError::Backup(_)
            | DeviceError::ServerBackupInvalid(_)
            | DeviceError::MalformedServerBackup(_)
            | DeviceError::ServerBackupMismatch
            | DeviceError::CreateDir { .. }
            | DeviceError::Encode(_) => Failure::Failed(e.to_string()),
            // A variant added later: the operation failed.
            other => Failure::Failed(other.to_string()),
        }
    }
}

impl From<tessera_client::peer::PeerError> for Failure {
    fn from(e: tessera_client::peer::PeerError) -> Self {
        match e {
            tessera_client::peer::PeerError::NotFound(_) => Failure::Usage(e.to_string()),
            tessera_client::peer::PeerError::Keystore(e) => e.into(),
            other => Failure::Failed(other.to_string()),
        }
    }
}
