//! The device's record of one wallet: the share in use and, during a refresh, the next one.
//!
//! File layout: `b"TSWR"`, a big-endian `u16` version (2), then `postcard` of the record with
//! each share in its own versioned format and the parties this device banned. Version 1 (no
//! bans) and a bare key-share file (`b"TSKS"`, as written before refresh existed) still read.

use serde::{Deserialize, Serialize};
use tessera_core::KeyShare;
use zeroize::Zeroizing;

use crate::ClientError;

const MAGIC: &[u8; 4] = b"TSWR";
const VERSION: u16 = 2;

/// The device's shares of one wallet.
#[derive(Debug)]
pub struct WalletRecord {
    /// The share in use.
    pub current: KeyShare,
    /// A refreshed share (next epoch) stored before the server switched; it becomes `current`
    /// once the server confirms, or is dropped if the server never switched.
    pub pending: Option<KeyShare>,
    /// Parties of this wallet the engine blamed in a session of this device (the server, or a
    /// peer). While one is in force this device refuses every session of the wallet; a complete
    /// refresh that the owner approved on this device ([`WalletRecord::approve_lift`]) lifts it.
    pub bans: Vec<PartyBan>,
}

/// A party this device banned from a wallet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartyBan {
    /// The party (with a server: the server is party 1).
    pub party: u8,
    /// The session in which the engine blamed it, hex.
    pub session_id: String,
    /// The round whose message failed the check.
    pub round: u8,
    /// The engine's description of the failed check.
    pub reason: String,
    /// When, Unix seconds.
    pub banned_at: u64,
    /// Whether the owner approved lifting the ban (then only a refresh may run, and lifts it).
    pub lift_approved: bool,
}

impl std::fmt::Display for PartyBan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "party {} is banned from this wallet: the engine blamed it in round {} of session {} ({})",
            self.party, self.round, self.session_id, self.reason
        )
    }
}

#[derive(Serialize, Deserialize)]
struct Body {
    #[serde(with = "serde_bytes")]
    current: Vec<u8>,
    pending: Option<serde_bytes::ByteBuf>,
    /// Absent in version 1.
    bans: Vec<PartyBan>,
}

/// Version 1: no bans.
#[derive(Serialize, Deserialize)]
struct BodyV1 {
    #[serde(with = "serde_bytes")]
    current: Vec<u8>,
    pending: Option<serde_bytes::ByteBuf>,
}

impl Drop for BodyV1 {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.current.zeroize();
        if let Some(p) = &mut self.pending {
            p.as_mut_slice().zeroize();
        }
    }
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
            bans: Vec::new(),
        }
    }

    /// Records that the engine blamed `party` (kept if a ban of it is already in force).
    pub fn ban(&mut self, party: u8, session_id: &str, round: u8, reason: &str) {
        if self.bans.iter().any(|b| b.party == party) {
            return;
        }
        self.bans.push(PartyBan {
            party,
            session_id: session_id.to_string(),
            round,
            reason: reason.to_string(),
            banned_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            lift_approved: false,
        });
    }

    /// Refuses any session of the wallet while a ban is in force.
    ///
    /// # Errors
    /// [`ClientError::Banned`] naming the ban.
    pub fn refuse_if_banned(&self) -> Result<(), ClientError> {
        match self.bans.first() {
            Some(ban) => Err(ClientError::Banned(format!(
                "{ban}; {}",
                if ban.lift_approved {
                    "its lift is approved: only a refresh of the wallet may run, and lifts it"
                } else {
                    "approve lifting it on this device, then refresh the wallet"
                }
            ))),
            None => Ok(()),
        }
    }

    /// Refuses a refresh while a ban whose lift the owner did not approve is in force.
    ///
    /// # Errors
    /// [`ClientError::Banned`] naming the ban.
    pub fn refuse_refresh_if_banned(&self) -> Result<(), ClientError> {
        match self.bans.iter().find(|b| !b.lift_approved) {
            Some(ban) => Err(ClientError::Banned(format!(
                "{ban}; approve lifting it on this device, then refresh the wallet"
            ))),
            None => Ok(()),
        }
    }

    /// The owner approves lifting every ban in force: the next complete refresh lifts them
    /// (a refresh is the only session allowed meanwhile). Store the record afterwards.
    pub fn approve_lift(&mut self) {
        for ban in &mut self.bans {
            ban.lift_approved = true;
        }
    }

    /// After a complete refresh: the bans whose lift was approved are lifted; returns them.
    pub fn lift_approved_bans(&mut self) -> Vec<PartyBan> {
        let (lifted, kept) = std::mem::take(&mut self.bans)
            .into_iter()
            .partition(|b| b.lift_approved);
        self.bans = kept;
        lifted
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
            bans: self.bans.clone(),
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
        let body = match u16::from_be_bytes([bytes[4], bytes[5]]) {
            1 => {
                let (v1, rest) = postcard::take_from_bytes::<BodyV1>(&bytes[6..])
                    .map_err(|_| bad("wallet record does not decode"))?;
                if !rest.is_empty() {
                    return Err(bad("unexpected bytes after the wallet record"));
                }
                Body {
                    current: v1.current.clone(),
                    pending: v1.pending.clone(),
                    bans: Vec::new(),
                }
            }
            VERSION => {
                let (body, rest) = postcard::take_from_bytes::<Body>(&bytes[6..])
                    .map_err(|_| bad("wallet record does not decode"))?;
                if !rest.is_empty() {
                    return Err(bad("unexpected bytes after the wallet record"));
                }
                body
            }
            _ => return Err(bad("wallet record of an unknown version")),
        };
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
        Ok(WalletRecord {
            current,
            pending,
            bans: body.bans.clone(),
        })
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
