//! The device's side of resharing a structure wallet (`crate::reshare`), with its keystore: the
//! new share kept as pending before the commit, the switch once the server switched, the
//! record of a wallet this device leaves removed, and the repair of a record left pending by an
//! interrupted run (`WalletRecord::settle` against the server's epoch).

use tessera_api as api;
use tessera_core::KeyShare;

use super::DeviceError;
use super::online::Online;
use crate::reshare::{ReshareChange, ReshareStep, Reshared};
use crate::{ClientError, WalletRecord};

/// How a resharing ended on this device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReshareOutcome {
    /// This device holds its share of the new structure, stored as the wallet's.
    Switched {
        /// The new epoch.
        epoch: u64,
        /// The wallet's public key (unchanged), hex.
        public_key: String,
    },
    /// This device dealt and is not in the new structure: its record of the wallet is removed.
    Left,
}

fn copy(share: &KeyShare) -> Result<KeyShare, ClientError> {
    Ok(KeyShare::from_bytes(&share.to_bytes())?)
}

impl Online {
    /// Reshares wallet `name` as `change` says, this device dealing with the server (and
    /// `change.with`); the other parties join from their `tessera listen`. `on_step` reports
    /// progress (each step done and stored). The record is
    /// repaired first if an earlier run left it pending; the new share is stored as pending
    /// before the commit and as the wallet's once the server switched.
    ///
    /// # Errors
    /// [`DeviceError::Client`] (the server's refusal, a party that never came, a changed
    /// identity key), [`DeviceError::Store`].
    pub async fn reshare(
        &self,
        name: &str,
        change: &ReshareChange,
        on_step: impl FnMut(ReshareStep),
    ) -> Result<ReshareOutcome, DeviceError> {
        let mut record = self.wallet(name)?;
        self.settle_with_server(name, &mut record).await?;
        let share = &record.current;
        let reshared = self
            .pinning(async |known| {
                let trust = |party: &api::SessionParty, key| known.trust(party, key);
                (self.client)
                    .reshare(share, change, &self.identity, trust, on_step, |new| {
                        self.keep_pending(name, new)
                    })
                    .await
            })
            .await?;
        self.finish(name, reshared)
    }

    /// Joins `session`, a resharing (from [`Self::joinable`]): with this device's share of the
    /// wallet, or, for a device joining the wallet, with none (its new share is then stored
    /// under the wallet's name before the commit).
    pub(super) async fn join_reshare(
        &self,
        session: &api::JoinableSession,
        mut on_round: impl FnMut(u8, u8),
    ) -> Result<ReshareOutcome, DeviceError> {
        let name = &session.wallet_name;
        let mut record = match self.keystore.has_wallet(name)? {
            false => None,
            true => Some(self.wallet(name)?),
        };
        if let Some(r) = &record {
            if r.current.wallet_id().to_string() != session.wallet_id.as_str() {
                return Err(DeviceError::WalletExists { name: name.clone() });
            }
            // A share of the epoch after the session's, of a device joining the wallet: an
            // earlier run stored it and never switched. This run replaces it.
            if r.current.epoch() == session.epoch + 1 && r.pending.is_none() {
                record = None;
            }
        }
        if let Some(r) = &mut record
            && r.settle(session.epoch).map_err(DeviceError::Client)?
        {
            self.store(name, r).map_err(ClientError::Stopped)?;
        }
        let share = record.as_ref().map(|r| &r.current);
        let joining = share.is_none();
        let on_step = |step| {
            if let ReshareStep::Round(r, total) = step {
                on_round(r, total);
            }
        };
        let reshared = self
            .pinning(async |known| {
                let trust = |party: &api::SessionParty, key| known.trust(party, key);
                (self.client)
                    .join_reshare(session, share, &self.identity, trust, on_step, |new| {
                        if joining {
                            let record = WalletRecord::new(copy(new)?);
                            let stored = match self.keystore.has_wallet(name) {
                                Ok(true) => self.store(name, &record),
                                _ => self
                                    .keystore
                                    .save_wallet(name, &record.to_bytes(), &self.passphrase)
                                    .map_err(Into::into),
                            };
                            stored.map_err(ClientError::Stopped)
                        } else {
                            self.keep_pending(name, new)
                        }
                    })
                    .await
            })
            .await?;
        self.finish(name, reshared)
    }

    /// The structure wallets this device holds a share of whose parties are to change (a device
    /// approved or revoked since), by name, with what the server says of them.
    ///
    /// # Errors
    /// [`DeviceError::Client`], [`DeviceError::Store`].
    pub async fn pending_changes(&self) -> Result<Vec<(String, api::WalletDetail)>, DeviceError> {
        let mut out = Vec::new();
        for name in self.keystore.list_wallets()? {
            let record = self.wallet(&name)?;
            if !record.current.is_structure_wallet() {
                continue;
            }
            let detail = (self.client)
                .wallet_detail(&record.current.wallet_id().to_string())
                .await?;
            if !detail.pending.is_empty() {
                out.push((name, detail));
            }
        }
        Ok(out)
    }

    /// Carries out wallet `name`'s pending party changes (devices approved join, devices revoked
    /// leave) with one resharing, as [`Self::reshare`]; `None` when none is pending.
    ///
    /// # Errors
    /// As [`Self::reshare`].
    pub async fn reshare_pending(
        &self,
        name: &str,
        on_step: impl FnMut(ReshareStep),
    ) -> Result<Option<ReshareOutcome>, DeviceError> {
        let detail = self.wallet_detail(name).await?;
        if detail.pending.is_empty() {
            return Ok(None);
        }
        let labels = |change: &str| {
            detail
                .pending
                .iter()
                .filter(|c| c.change == change)
                .map(|c| c.label.clone())
                .collect()
        };
        let change = ReshareChange {
            add: labels("add"),
            remove: labels("remove"),
            ..ReshareChange::default()
        };
        Ok(Some(self.reshare(name, &change, on_step).await?))
    }

    /// Stores `new` as the pending share of wallet `name`.
    fn keep_pending(&self, name: &str, new: &KeyShare) -> Result<(), ClientError> {
        let mut record = self
            .wallet(name)
            .map_err(|e| ClientError::Stopped(e.to_string().into()))?;
        record.pending = Some(copy(new)?);
        self.store(name, &record).map_err(ClientError::Stopped)
    }

    /// After the server switched: the wallet's record holds the new share alone; or, for a
    /// device that left, is removed.
    fn finish(&self, name: &str, reshared: Reshared) -> Result<ReshareOutcome, DeviceError> {
        match reshared {
            Reshared::Left => {
                self.keystore.remove_wallet(name)?;
                Ok(ReshareOutcome::Left)
            }
            Reshared::Share(new) => {
                let outcome = ReshareOutcome::Switched {
                    epoch: new.epoch(),
                    public_key: new.public_key().to_string(),
                };
                self.store(name, &WalletRecord::new(*new))
                    .map_err(ClientError::Stopped)?;
                Ok(outcome)
            }
        }
    }

    /// Brings a structure wallet's record in line with the server's epoch when an interrupted
    /// refresh or resharing left a pending share (`WalletRecord::settle`), storing it.
    pub(super) async fn settle_with_server(
        &self,
        name: &str,
        record: &mut WalletRecord,
    ) -> Result<(), DeviceError> {
        if record.pending.is_none() || !record.current.is_structure_wallet() {
            return Ok(());
        }
        let detail = (self.client)
            .wallet_detail(&record.current.wallet_id().to_string())
            .await?;
        if record.settle(detail.info.epoch)? {
            self.store(name, record).map_err(ClientError::Stopped)?;
        }
        Ok(())
    }
}
