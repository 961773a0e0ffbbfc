//! The device's record of one wallet: the share in use and, during a refresh, the next one.
//!
//! File layout: `b"TSWR"`, a big-endian `u16` version (1), then `postcard` of the record with
//! each share in its own versioned format. A bare key-share file (`b"TSKS"`, as written before
//! refresh existed) reads as a record without a pending share.

use serde::{Deserialize, Serialize};
use tessera_core::KeyShare;
use zeroize::Zeroizing;

use crate::ClientError;

const MAGIC: &[u8; 4] = b"TSWR";
const VERSION: u16 = 1;

/// The device's shares of one wallet.
#[derive(Debug)]
pub struct WalletRecord {
    /// The share in use.
    pub current: KeyShare,
    /// A refreshed share (next epoch) stored before the server switched; it becomes `current`
    /// once the server confirms, or is dropped if the server never switched.
    pub pending: Option<KeyShare>,
}

#[derive(Serialize, Deserialize)]
struct Body {
    #[serde(with = "serde_bytes")]
    current: Vec<u8>,
    pending: Option<serde_bytes::ByteBuf>,
}

impl Drop for Body {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.current.zeroize();
        if let Some(p) = &mut self.pending {
            p.as_mut_slice().zeroize();
        }
    }
}

impl WalletRecord {
    /// A record of a fresh wallet.
    #[must_use]
    pub fn new(current: KeyShare) -> Self {
        WalletRecord {
            current,
            pending: None,
        }
    }

    /// Encodes the record (secret: store it encrypted).
    #[must_use]
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let body = Body {
            current: self.current.to_bytes().to_vec(),
            pending: self
                .pending
                .as_ref()
                .map(|p| serde_bytes::ByteBuf::from(p.to_bytes().to_vec())),
        };
        let mut out = Zeroizing::new(MAGIC.to_vec());
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&Zeroizing::new(
            postcard::to_allocvec(&body).unwrap_or_default(),
        ));
        out
    }

    /// Decodes a record, or a bare key share.
    ///
    /// # Errors
    /// [`ClientError::Protocol`] with the share's validation error.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ClientError> {
        if bytes.starts_with(b"TSKS") {
            return Ok(WalletRecord::new(KeyShare::from_bytes(bytes)?));
        }
        let bad =
            |why: &str| ClientError::Protocol(tessera_core::Error::InvalidKeyShare(why.into()));
        if bytes.len() < 6 || &bytes[..4] != MAGIC {
            return Err(bad("not a Tessera wallet record"));
        }
        if u16::from_be_bytes([bytes[4], bytes[5]]) != VERSION {
            return Err(bad("wallet record of an unknown version"));
        }
        let (body, rest) = postcard::take_from_bytes::<Body>(&bytes[6..])
            .map_err(|_| bad("wallet record does not decode"))?;
        if !rest.is_empty() {
            return Err(bad("unexpected bytes after the wallet record"));
        }
        let current = KeyShare::from_bytes(&body.current)?;
        let pending = body
            .pending
            .as_ref()
            .map(|p| KeyShare::from_bytes(p))
            .transpose()?;
        if pending.as_ref().is_some_and(|p| {
            p.wallet_id() != current.wallet_id() || p.public_key() != current.public_key()
        }) {
            return Err(bad("pending share belongs to another wallet"));
        }
        Ok(WalletRecord { current, pending })
    }

    /// Brings the record in line with the server's active `epoch` (the repair after a crash in a
    /// refresh): if our pending share is of that epoch, the server switched and so do we; if our
    /// current share is, a pending one was never committed and is dropped. Returns whether the
    /// record changed (and must be stored).
    ///
    /// # Errors
    /// [`ClientError::EpochMismatch`] if we hold neither epoch.
    pub fn settle(&mut self, epoch: u64) -> Result<bool, ClientError> {
        if self.current.epoch() == epoch {
            return Ok(self.pending.take().is_some());
        }
        if self.pending.as_ref().is_some_and(|p| p.epoch() == epoch) {
            if let Some(p) = self.pending.take() {
                self.current = p;
            }
            return Ok(true);
        }
        Err(ClientError::EpochMismatch {
            device: self.current.epoch(),
            pending: self.pending.as_ref().map(KeyShare::epoch),
            server: epoch,
        })
    }
}
