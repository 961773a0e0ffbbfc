//! Failures as the bindings see them: one typed error ([`TesseraError`], an exception class
//! per variant in Swift, Kotlin and Python) over the SDK's detailed ones, and the errors the
//! app's callbacks may raise ([`StorageError`], [`TransportError`]). Messages never carry
//! secret material (the SDK's errors do not).

use tessera_client::ClientError;
use tessera_client::device::DeviceError;
use tessera_client::peer::PeerError;

/// Everything a call can fail with.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum TesseraError {
    /// An argument is not valid (a bad digest, transaction, name, structure, backup…).
    #[error("{detail}")]
    InvalidArgument {
        /// What is wrong.
        detail: String,
    },
    /// The device was never set up (`register`).
    #[error("{detail}")]
    NotSetUp {
        /// Details.
        detail: String,
    },
    /// The passphrase does not open the keystore (or its entries were altered).
    #[error("{detail}")]
    WrongPassphrase {
        /// Details (which entry).
        detail: String,
    },
    /// No wallet of this name on this device.
    #[error("no wallet named {name:?} on this device")]
    WalletNotFound {
        /// The name.
        name: String,
    },
    /// A wallet of this name is on this device already.
    #[error("a wallet named {name:?} already exists on this device")]
    WalletExists {
        /// The name.
        name: String,
    },
    /// The server refused (a policy denial, an unknown code, a revoked device…).
    #[error("the server refused ({status}): {detail}")]
    ServerRefused {
        /// The HTTP status (0 when the refusal came another way).
        status: u16,
        /// The server's message.
        detail: String,
    },
    /// The server or the other device could not be reached.
    #[error("{detail}")]
    Network {
        /// Details.
        detail: String,
    },
    /// A protocol run stopped: a party misbehaved, left, or sent what it may not.
    #[error("{detail}")]
    ProtocolAborted {
        /// What happened.
        detail: String,
        /// The party at fault, where the protocol names one (a device's name, or `server`,
        /// or a party index).
        party: Option<String>,
    },
    /// The user (or the other device's user) did not confirm.
    #[error("not confirmed: {action}")]
    UserRefused {
        /// What was refused.
        action: String,
    },
    /// The app's storage failed.
    #[error("storage: {detail}")]
    Storage {
        /// Details.
        detail: String,
    },
    /// Anything else (a bug: please report it).
    #[error("{detail}")]
    Internal {
        /// Details.
        detail: String,
    },
}

/// What the app's [`crate::AppStorage`] raises.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum StorageError {
    /// The operation failed.
    #[error("{reason}")]
    Failed {
        /// Why.
        reason: String,
    },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for StorageError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        StorageError::Failed { reason: e.reason }
    }
}

/// What the app's [`crate::PeerTransport`] raises.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum TransportError {
    /// The link is closed.
    #[error("the link is closed")]
    Closed,
    /// The link failed.
    #[error("{reason}")]
    Failed {
        /// Why.
        reason: String,
    },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for TransportError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        TransportError::Failed { reason: e.reason }
    }
}

/// [`TesseraError::InvalidArgument`] saying what is wrong.
pub(crate) fn invalid(detail: impl ToString) -> TesseraError {
    TesseraError::InvalidArgument {
        detail: detail.to_string(),
    }
}

impl From<tessera_store::Error> for TesseraError {
    fn from(e: tessera_store::Error) -> Self {
        use tessera_store::Error as E;
        match e {
            E::WrongPassphrase { .. } => TesseraError::WrongPassphrase {
                detail: e.to_string(),
            },
            E::WalletNotFound { name } => TesseraError::WalletNotFound { name },
            E::WalletExists { name } => TesseraError::WalletExists { name },
            E::EmptyPassphrase | E::InvalidWalletName { .. } | E::InvalidLabel(_) => invalid(e),
            E::IdentityNotFound { .. } => TesseraError::NotSetUp {
                detail: e.to_string(),
            },
            other => TesseraError::Storage {
                detail: other.to_string(),
            },
        }
    }
}

impl From<ClientError> for TesseraError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Server {
                status, message, ..
            } => TesseraError::ServerRefused {
                status,
                detail: message,
            },
            ClientError::Network(detail) => TesseraError::Network { detail },
            ClientError::Refused(detail) => TesseraError::ServerRefused { status: 0, detail },
            ClientError::PartyBlamed { party, .. } => TesseraError::ProtocolAborted {
                detail: e.to_string(),
                party: Some(if party == tessera_client::SERVER.get() {
                    "server".to_owned()
                } else {
                    format!("party {party}")
                }),
            },
            other => TesseraError::ProtocolAborted {
                detail: other.to_string(),
                party: None,
            },
        }
    }
}

impl From<DeviceError> for TesseraError {
    fn from(e: DeviceError) -> Self {
        match e {
            DeviceError::NotSetUp { .. } => TesseraError::NotSetUp {
                detail: e.to_string(),
            },
            DeviceError::Store(e) => e.into(),
            DeviceError::Client(e) | DeviceError::ServerAddress(e) => e.into(),
            DeviceError::WalletExists { name } | DeviceError::RestoreExists { name } => {
                TesseraError::WalletExists { name }
            }
            DeviceError::Revoked { .. } => TesseraError::ServerRefused {
                status: 403,
                detail: e.to_string(),
            },
            DeviceError::InvalidRequest(_)
            | DeviceError::InvalidPeerName(_)
            | DeviceError::InvalidHolderKey(_)
            | DeviceError::InvalidBackupRequest(_)
            | DeviceError::Backup(_)
            | DeviceError::NoHolderKey { .. }
            | DeviceError::NoKeyFile { .. }
            | DeviceError::ServerShareOnDevice
            | DeviceError::NoSuchRequest { .. } => invalid(e),
            DeviceError::Protocol(_) => TesseraError::ProtocolAborted {
                detail: e.to_string(),
                party: None,
            },
            other => TesseraError::Internal {
                detail: other.to_string(),
            },
        }
    }
}

impl TesseraError {
    /// A device-to-device failure; `peer` is the other device once it is known (after
    /// authentication a broken or tampered channel is that link's fault).
    pub(crate) fn peer(e: PeerError, peer: Option<&str>) -> Self {
        match e {
            PeerError::Party { ref name, .. } | PeerError::Blamed { ref name, .. } => {
                TesseraError::ProtocolAborted {
                    party: Some(name.clone()),
                    detail: e.to_string(),
                }
            }
            PeerError::Keystore(e) => e.into(),
            PeerError::Refused(action) => TesseraError::UserRefused { action },
            PeerError::NotFound(_) => invalid(e),
            PeerError::Wallet { .. } | PeerError::NotASigner { .. } => invalid(e),
            PeerError::Store(detail) => TesseraError::Storage { detail },
            PeerError::Io(detail) => TesseraError::Network { detail },
            other => TesseraError::ProtocolAborted {
                detail: other.to_string(),
                party: peer.map(str::to_owned),
            },
        }
    }
}
