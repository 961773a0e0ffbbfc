//! The workflows of the device that starts: reach the other devices (pairing new ones), then
//! create a wallet with them, sign with one of them, or refresh a wallet's shares with all of
//! them. A front end parses its arguments, calls these, and shows what they return; the
//! person at the device is asked and told things through [`PeerUser`].

use std::time::Duration;

use tessera_core::{DerivationPath, KeyShare, Signature};

use super::PeerError;
use super::channel::Channel;
use super::device::{PeerDevice, WalletSummary};
use super::discovery;
use super::known::{KnownPeers, PeerWallet};
use super::pairing::{self, CodePrompt};
use super::refresh::{self, Finish, Held, Settlement};
use super::relay;
use super::session;
pub use super::session::Link;
use super::user::{PeerEvent, PeerUser, RefreshStep};
use crate::WalletRecord;

/// How the leading device reaches the others.
#[derive(Clone, Debug)]
pub enum Reach {
    /// Through a commitment server's relay: a code is shown for the other device to join.
    Relay {
        /// The server's URL.
        url: String,
        /// Its certificate's pin (SHA-256, hex), if any.
        fingerprint: Option<String>,
    },
    /// Directly: by name over mDNS, or by address.
    Direct {
        /// Devices to find by name (mDNS).
        names: Vec<String>,
        /// Devices at `HOST:PORT`.
        addresses: Vec<String>,
        /// How long to look for each name.
        discovery_timeout: Duration,
    },
}

/// Connects to the devices `how` names and authenticates them (pairing new ones, each code
/// confirmed by the user).
///
/// # Errors
/// [`PeerError::NotFound`] when no device is named; discovery, connection and pairing errors;
/// [`PeerError::WrongDevice`] when a named device presents another name.
pub async fn reach(
    device: &PeerDevice,
    how: &Reach,
    user: &dyn PeerUser,
) -> Result<Vec<Link>, PeerError> {
    let mut known = KnownPeers::load(device.home.clone())?;
    let mut confirm = |p: &CodePrompt| user.confirm_code(p);
    let (names, connect, discovery_timeout) = match how {
        Reach::Relay { url, fingerprint } => {
            let code = relay::new_code();
            user.notify(PeerEvent::RelayCode {
                url,
                code: &code,
                fingerprint: fingerprint.as_deref(),
            });
            let frames = relay::open(url, fingerprint.as_deref(), &code).await?;
            // The joining device starts the handshake; we answer it.
            let mut channel = Channel::accept(frames).await?;
            let peer =
                pairing::authenticate(&mut channel, &device.me, &mut known, &mut confirm).await?;
            if peer.newly_paired {
                user.notify(PeerEvent::Paired { name: &peer.name });
            }
            return Ok(vec![Link {
                peer,
                channel,
                address: None,
            }]);
        }
        Reach::Direct {
            names,
            addresses,
            discovery_timeout,
        } => (names, addresses, *discovery_timeout),
    };
    let mut addresses: Vec<(Option<String>, Vec<String>)> =
        connect.iter().map(|a| (None, vec![a.clone()])).collect();
    for name in names {
        let wanted = name.clone();
        let found =
            tokio::task::spawn_blocking(move || discovery::find(&wanted, discovery_timeout))
                .await
                .map_err(|e| PeerError::Discovery(e.to_string()))??;
        if found.addresses.is_empty() {
            return Err(PeerError::NoAddress(name.clone()));
        }
        let all = found.addresses.iter().map(ToString::to_string).collect();
        addresses.push((Some(name.clone()), all));
    }
    if addresses.is_empty() {
        return Err(PeerError::NotFound(
            "name the other device: --with NAME, --connect HOST:PORT or --relay URL".into(),
        ));
    }
    let mut links = Vec::new();
    for (name, address) in addresses {
        let link = session::connect(&address, &device.me, &mut known, &mut confirm).await?;
        if let Some(name) = name
            && link.peer.name != name
        {
            return Err(PeerError::WrongDevice {
                address: link.address.clone().unwrap_or_default(),
                presented: link.peer.name.clone(),
                expected: name,
            });
        }
        if link.peer.newly_paired {
            user.notify(PeerEvent::Paired {
                name: &link.peer.name,
            });
        }
        links.push(link);
    }
    Ok(links)
}

/// Pairs with each reached device (nothing else): returns each one's name and whether it was
/// new.
///
/// # Errors
/// Channel errors.
pub async fn pair(links: Vec<Link>) -> Result<Vec<(String, bool)>, PeerError> {
    let mut paired = Vec::new();
    for mut link in links {
        pairing::send(
            &mut link.channel,
            &super::wire::Message::Request(super::wire::Request::Pair),
        )
        .await?;
        link.channel.close().await;
        paired.push((link.peer.name, link.peer.newly_paired));
    }
    Ok(paired)
}

/// Device-to-device signing takes exactly two devices (`peer sign` and one other): a wallet
/// that needs more signers could never sign, so it is refused before anyone is contacted.
pub const PEER_SIGNERS: u8 = 2;

/// A device-to-device wallet of `t` signers that `peer sign` could never sign with.
#[derive(Debug, thiserror::Error)]
#[error(
    "a device-to-device wallet needs exactly {PEER_SIGNERS} signers (`tessera peer sign` signs \
     with this device and one other), so a --threshold {0} wallet could never sign: use \
     --threshold {PEER_SIGNERS} (any two of its devices sign)"
)]
pub struct UnsignableThreshold(pub u8);

/// Refuses a threshold `peer sign` could never sign with.
///
/// # Errors
/// [`UnsignableThreshold`].
pub fn refuse_unsignable_threshold(t: u8) -> Result<(), UnsignableThreshold> {
    if t == PEER_SIGNERS {
        return Ok(());
    }
    Err(UnsignableThreshold(t))
}

fn on_round<'a>(user: &'a dyn PeerUser, protocol: &'static str) -> impl FnMut(u8, u8) + Send + 'a {
    move |round, total| {
        user.notify(PeerEvent::Round {
            protocol,
            round,
            total,
        });
    }
}

/// Creates wallet `name` of `threshold` signers with the reached devices (this one is party 0)
/// and stores it once every device has its share.
///
/// # Errors
/// A refusal, protocol and channel errors (naming the party); storage errors.
pub async fn keygen(
    device: &PeerDevice,
    links: Vec<Link>,
    name: &str,
    threshold: u8,
    user: &dyn PeerUser,
) -> Result<WalletSummary, PeerError> {
    let (share, wallet) = session::lead_keygen(
        &device.me,
        links,
        name,
        threshold,
        &mut on_round(user, "keygen"),
    )
    .await?;
    device.store_wallet(name, share, &wallet)
}

/// A wallet of this device opened for a session: its devices and its record.
pub struct OpenWallet {
    /// Its name.
    pub name: String,
    /// Its devices.
    pub wallet: PeerWallet,
    /// Its record (share in use, pending share, bans).
    pub record: WalletRecord,
}

impl OpenWallet {
    /// Opens wallet `name` to sign: refused while a ban is in force.
    ///
    /// # Errors
    /// [`PeerError::NotFound`] (not a device-to-device wallet), keystore errors,
    /// [`PeerError::Wallet`] naming a ban.
    pub fn to_sign(device: &PeerDevice, name: &str) -> Result<Self, PeerError> {
        let wallet = device.peer_wallet(name)?;
        let record = device.record(name)?;
        record
            .refuse_if_banned()
            .map_err(|e| PeerError::wallet(name, e))?;
        Ok(OpenWallet {
            name: name.to_string(),
            wallet,
            record,
        })
    }

    /// Opens wallet `name` to refresh: refused while a ban whose lift the owner did not
    /// approve is in force.
    ///
    /// # Errors
    /// As [`OpenWallet::to_sign`].
    pub fn to_refresh(device: &PeerDevice, name: &str) -> Result<Self, PeerError> {
        let wallet = device.peer_wallet(name)?;
        let record = device.record(name)?;
        record
            .refuse_refresh_if_banned()
            .map_err(|e| PeerError::wallet(name, e))?;
        Ok(OpenWallet {
            name: name.to_string(),
            wallet,
            record,
        })
    }

    /// The wallet's other devices, by party index.
    #[must_use]
    pub fn others(&self) -> Vec<(u8, &str)> {
        (0u8..)
            .zip(&self.wallet.parties)
            .filter(|(i, _)| *i != self.wallet.me)
            .map(|(i, p)| (i, p.name.as_str()))
            .collect()
    }

    /// The party `link` holds of this wallet.
    ///
    /// # Errors
    /// [`PeerError::NotASigner`].
    pub fn party_of(&self, link: &Link) -> Result<u8, PeerError> {
        (0u8..)
            .zip(&self.wallet.parties)
            .find(|(i, p)| *i != self.wallet.me && p.identity == link.peer.identity)
            .map(|(i, _)| i)
            .ok_or_else(|| PeerError::NotASigner {
                device: link.peer.name.clone(),
                wallet: self.name.clone(),
            })
    }

    fn held(&self) -> Held {
        Held {
            current: self.record.current.epoch(),
            pending: self.record.pending.as_ref().map(KeyShare::epoch),
        }
    }

    /// After an interrupted refresh (a pending share here): asks each linked device what it
    /// holds, settles and stores the record.
    async fn settle_with(
        &mut self,
        device: &PeerDevice,
        links: &mut [Link],
        user: &dyn PeerUser,
    ) -> Result<(), PeerError> {
        if self.record.pending.is_none() {
            return Ok(());
        }
        let mine = self.held();
        let mut others = Vec::new();
        for link in links.iter_mut() {
            let theirs = refresh::exchange_held(&mut link.channel, &self.name, mine)
                .await
                .map_err(|e| PeerError::Party {
                    party: self.party_of(link).unwrap_or(u8::MAX),
                    name: link.peer.name.clone(),
                    reason: e.to_string(),
                })?;
            others.push(theirs);
        }
        let every_party = others.len() + 1 == self.wallet.parties.len();
        apply_settlement(
            device,
            &self.name,
            &mut self.record,
            refresh::settle(mine, &others, every_party)?,
            user,
        )
    }

    fn ban_on_blame(&mut self, device: &PeerDevice, e: &PeerError, user: &dyn PeerUser) {
        if let PeerError::Blamed {
            party,
            session_id,
            round,
            reason,
            ..
        } = e
        {
            self.record.ban(*party, session_id, *round, reason);
            if let Err(error) = device.save_record(&self.name, &self.record) {
                user.notify(PeerEvent::BanNotStored {
                    party: *party,
                    wallet: &self.name,
                    error: &error,
                });
            }
        }
    }
}

/// Applies a [`Settlement`] to `record` and stores it when it changed.
pub(super) fn apply_settlement(
    device: &PeerDevice,
    name: &str,
    record: &mut WalletRecord,
    settlement: Settlement,
    user: &dyn PeerUser,
) -> Result<(), PeerError> {
    match settlement {
        Settlement::Unchanged => return Ok(()),
        Settlement::Switch => {
            if let Some(next) = record.pending.take() {
                record.current = next;
            }
        }
        Settlement::DropPending => record.pending = None,
    }
    device.save_record(name, record)?;
    user.notify(PeerEvent::Settled {
        wallet: name,
        epoch: record.current.epoch(),
    });
    Ok(())
}

/// Signs `message` (EIP-191) with `wallet` and the device at `link`, after settling the
/// wallet's record with it if a refresh was interrupted. The signature is verified before it
/// is returned; a party the engine blames is banned from the wallet.
///
/// # Errors
/// [`PeerError::NotASigner`], a refusal, protocol and channel errors.
pub async fn sign(
    device: &PeerDevice,
    wallet: &mut OpenWallet,
    link: Link,
    message: &str,
    path: &DerivationPath,
    user: &dyn PeerUser,
) -> Result<Signature, PeerError> {
    let party = wallet.party_of(&link)?;
    let mut links = [link];
    wallet.settle_with(device, &mut links, user).await?;
    let [link] = links;
    let result = session::lead_sign_holding(
        &wallet.record.current,
        wallet.record.pending.as_ref().map(KeyShare::epoch),
        &wallet.name,
        link,
        party,
        message,
        path,
        &mut on_round(user, "sign"),
    )
    .await;
    if let Err(e) = &result {
        wallet.ban_on_blame(device, e, user);
    }
    result
}

/// Refreshes `wallet`'s shares with every other device of it (`links`): same public key,
/// next epoch, the old shares deleted once every device switched. Returns the new epoch.
///
/// # Errors
/// A missing or unknown device, a refusal, protocol and channel errors, storage errors.
pub async fn refresh(
    device: &PeerDevice,
    wallet: &mut OpenWallet,
    mut links: Vec<Link>,
    user: &dyn PeerUser,
) -> Result<u64, PeerError> {
    for link in &links {
        wallet.party_of(link)?;
    }
    wallet.settle_with(device, &mut links, user).await?;
    if wallet.record.pending.is_some() {
        return Err(PeerError::Protocol(format!(
            "wallet {:?} holds a pending share from an interrupted refresh that cannot be \
             settled without every device of the wallet",
            wallet.name
        )));
    }
    // The hook owns the record while the run borrows the share in use: a copy of it.
    let share = KeyShare::from_bytes(&wallet.record.current.to_bytes())?;
    let OpenWallet {
        name,
        wallet: devices,
        record,
    } = wallet;
    let result = refresh::lead_refresh(
        &share,
        name,
        devices,
        links,
        &mut on_round(user, "refresh"),
        &mut |step| finish_step(device, name, record, step, user),
    )
    .await;
    if let Err(e) = &result {
        wallet.ban_on_blame(device, e, user);
    }
    result
}

/// Stores one step of a refresh's two-phase finish in `record`.
pub(super) fn finish_step(
    device: &PeerDevice,
    name: &str,
    record: &mut WalletRecord,
    step: Finish,
    user: &dyn PeerUser,
) -> Result<(), PeerError> {
    let step = match step {
        Finish::StorePending(fresh) => {
            record.pending = Some(*fresh);
            device.save_record(name, record)?;
            RefreshStep::PendingStored
        }
        Finish::Committed => RefreshStep::Committed,
        Finish::Switch(epoch) => {
            record
                .settle(epoch)
                .map_err(|e| PeerError::wallet(name, e))?;
            // A complete refresh: a new OT set-up, so what a banned party may have learnt is
            // worthless; the bans the owner approved lifting are lifted.
            record.lift_approved_bans();
            device.save_record(name, record)?;
            RefreshStep::Switched
        }
    };
    user.notify(PeerEvent::Refresh(step));
    Ok(())
}
