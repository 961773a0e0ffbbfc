//! The listening device: authenticates each connection (pairing new devices, the code
//! confirmed by the user), then answers its request — keygen, sign or refresh, each shown to
//! the user for approval — or hands it to the session it joins. A front end binds the socket
//! (or joins a relay), builds a [`Responder`] with its [`PeerUser`], and calls
//! [`Responder::listen`] or [`Responder::serve`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::PeerError;
use super::channel::{Channel, Frames};
use super::device::PeerDevice;
use super::discovery::Advertisement;
use super::known::{KnownPeers, PeerWallet};
use super::lead::{apply_settlement, finish_step, refuse_unsignable_threshold};
use super::pairing::{self, AuthenticatedPeer, CodePrompt, PairingLimit};
use super::refresh::{self, Held};
use super::session::{self, Joins, Link};
use super::user::{Approval, PeerEvent, PeerUser};
use super::wire::{Message, Request};
use crate::WalletRecord;

/// Answers other devices' requests on behalf of this device.
pub struct Responder {
    device: PeerDevice,
    user: Arc<dyn PeerUser>,
    joins: Joins,
    advertisement: Mutex<Option<Advertisement>>,
    busy: Mutex<usize>,
    idle: Duration,
    pairing_limit: PairingLimit,
}

impl Responder {
    /// A responder for `device`; `advertisement` (if any) shows `busy` while a request runs;
    /// a connection is closed after `idle` without a message.
    #[must_use]
    pub fn new(
        device: PeerDevice,
        user: Arc<dyn PeerUser>,
        advertisement: Option<Advertisement>,
        idle: Duration,
    ) -> Arc<Self> {
        Arc::new(Responder {
            device,
            user,
            joins: Joins::default(),
            advertisement: Mutex::new(advertisement),
            busy: Mutex::new(0),
            idle,
            pairing_limit: PairingLimit::default(),
        })
    }

    /// This device.
    #[must_use]
    pub fn device(&self) -> &PeerDevice {
        &self.device
    }

    fn set_busy(&self, delta: isize) {
        let mut busy = self
            .busy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *busy = busy.saturating_add_signed(delta);
        let status = if *busy > 0 { "busy" } else { "ready" };
        if let Ok(mut ad) = self.advertisement.lock()
            && let Some(ad) = ad.as_mut()
        {
            let _ = ad.set_status(status);
        }
    }

    /// Accepts connections on `socket` for ever, serving each on its own task; a failed one is
    /// reported as [`PeerEvent::SessionFailed`].
    ///
    /// # Errors
    /// When accepting fails.
    pub async fn listen(
        self: &Arc<Self>,
        socket: tokio::net::TcpListener,
    ) -> Result<(), std::io::Error> {
        loop {
            let (stream, from) = socket.accept().await?;
            let responder = self.clone();
            tokio::spawn(async move {
                if let Err(error) = responder.serve(Frames::tcp(stream), false).await {
                    responder.user.notify(PeerEvent::SessionFailed {
                        from,
                        error: &error,
                    });
                }
            });
        }
    }

    /// Serves one connection: authenticate, then answer its request. `we_connect`: this side
    /// starts the handshake (a relay joined with a code).
    ///
    /// # Errors
    /// Channel, pairing and protocol errors; a refusal (ours or the user's).
    pub async fn serve(
        self: &Arc<Self>,
        frames: Frames,
        we_connect: bool,
    ) -> Result<(), PeerError> {
        let mut channel = if we_connect {
            Channel::initiate(frames).await?
        } else {
            Channel::accept(frames).await?
        };
        channel.set_idle_timeout(self.idle);
        let mut known = KnownPeers::load(self.device.home.clone())?;
        let user = &*self.user;
        let mut confirm = |p: &CodePrompt| user.confirm_code(p);
        let limit = &self.pairing_limit;
        let authenticated = pairing::authenticate_limited(
            &mut channel,
            &self.device.me,
            &mut known,
            &mut confirm,
            Some(limit),
        )
        .await;
        let peer = match authenticated {
            Ok(peer) => peer,
            Err(e) => {
                if !matches!(e, PeerError::PairingPaused { .. })
                    && let Err(wait) = limit.check()
                {
                    user.notify(PeerEvent::PairingPaused {
                        minutes: wait.as_secs().div_ceil(60),
                    });
                }
                return Err(e);
            }
        };
        user.notify(PeerEvent::Authenticated { name: &peer.name });
        if peer.newly_paired {
            user.notify(PeerEvent::Paired { name: &peer.name });
        }
        let request = loop {
            match pairing::recv(&mut channel).await {
                Ok(Message::Request(r)) => break r,
                // A leader that holds a pending share settles first.
                Ok(Message::Held {
                    wallet,
                    current,
                    pending,
                }) => {
                    self.answer_held(&mut channel, &peer, &wallet, Held { current, pending })
                        .await?;
                }
                Ok(_) => return Err(PeerError::Protocol("expected a request".into())),
                Err(PeerError::Closed) => return Ok(()),
                Err(e) => return Err(e),
            }
        };
        match request {
            Request::Pair => Ok(()),
            Request::Join { session, from } => {
                self.joins.deliver(session, from, peer, channel).await
            }
            Request::Keygen { .. } => {
                self.set_busy(1);
                let result = self
                    .answer_keygen(&request, peer, channel, &mut known)
                    .await;
                self.set_busy(-1);
                result
            }
            Request::Sign { .. } => {
                self.set_busy(1);
                let result = self.answer_sign(&request, peer, channel).await;
                self.set_busy(-1);
                result
            }
            Request::Refresh { .. } => {
                self.set_busy(1);
                let result = self
                    .answer_refresh(&request, peer, channel, &mut known)
                    .await;
                self.set_busy(-1);
                result
            }
        }
    }

    /// Answers a leader's [`Message::Held`] with what we hold of `wallet`, and settles. Only a
    /// device of the wallet is answered: what another one claims to hold proves nothing.
    async fn answer_held(
        &self,
        channel: &mut Channel,
        peer: &AuthenticatedPeer,
        wallet: &str,
        theirs: Held,
    ) -> Result<(), PeerError> {
        let found = self.device.peer_wallet(wallet).and_then(|w| {
            let record = self.device.record(wallet)?;
            refuse_outsider(peer, &w, wallet)?;
            Ok((record, w.parties.len()))
        });
        let (mut record, parties) = match found {
            Ok(found) => found,
            Err(e) => {
                let reason = format!("{:?} cannot settle {wallet:?}: {e}", self.device.me.name);
                return Err(refused(channel, reason).await);
            }
        };
        let mine = held(&record);
        pairing::send(
            channel,
            &Message::Held {
                wallet: wallet.to_string(),
                current: mine.current,
                pending: mine.pending,
            },
        )
        .await?;
        let settlement = refresh::settle(mine, &[theirs], parties == 2)?;
        apply_settlement(&self.device, wallet, &mut record, settlement, &*self.user)
    }

    /// Our record of `name` for a session the leader asked for, settled with the leader (a
    /// device of the wallet) when we hold a pending share.
    async fn settled_record(
        &self,
        channel: &mut Channel,
        peer: &AuthenticatedPeer,
        name: &str,
        wallet: &PeerWallet,
    ) -> Result<WalletRecord, PeerError> {
        let mut record = self.device.record(name)?;
        if record.pending.is_some() {
            refuse_outsider(peer, wallet, name)?;
            let mine = held(&record);
            let theirs = refresh::exchange_held(channel, name, mine).await?;
            let every_party = wallet.parties.len() == 2;
            let settlement = refresh::settle(mine, &[theirs], every_party)?;
            apply_settlement(&self.device, name, &mut record, settlement, &*self.user)?;
        }
        Ok(record)
    }

    async fn answer_keygen(
        &self,
        request: &Request,
        peer: AuthenticatedPeer,
        mut channel: Channel,
        known: &mut KnownPeers,
    ) -> Result<(), PeerError> {
        let device = &self.device;
        let invitation = match session::check_keygen(request, &peer, &device.me) {
            Ok(i) => i,
            Err(e) => {
                session::refuse(&mut channel, &e.to_string()).await;
                return Err(e);
            }
        };
        if let Err(unsignable) = refuse_unsignable_threshold(invitation.threshold.t) {
            let reason = unsignable.to_string();
            return Err(refused(&mut channel, reason).await);
        }
        if device
            .keystore
            .has_wallet(&invitation.wallet)
            .unwrap_or(true)
        {
            let reason = format!(
                "{:?} already has a wallet named {:?}",
                device.me.name, invitation.wallet
            );
            return Err(refused(&mut channel, reason).await);
        }
        let approval = Approval::Keygen {
            from: &peer.name,
            invitation: &invitation,
        };
        if !self.user.approve(&approval) {
            session::refuse(&mut channel, "the user refused the keygen").await;
            return Err(PeerError::Refused("keygen refused here".into()));
        }
        let leader = Link {
            peer,
            channel,
            address: None,
        };
        let user = &*self.user;
        let mut confirm = |p: &CodePrompt| user.confirm_code(p);
        let (share, wallet) = session::join_keygen(
            &invitation,
            leader,
            &device.me,
            known,
            &mut confirm,
            &self.joins,
            &mut on_round(user, "keygen"),
        )
        .await?;
        let summary = device.store_wallet(&invitation.wallet, share, &wallet)?;
        user.notify(PeerEvent::WalletCreated(&summary));
        Ok(())
    }

    async fn answer_sign(
        &self,
        request: &Request,
        peer: AuthenticatedPeer,
        mut channel: Channel,
    ) -> Result<(), PeerError> {
        let device = &self.device;
        let Request::Sign { wallet: name, .. } = request else {
            return Err(PeerError::Protocol("not a sign request".into()));
        };
        let local = match device.peer_wallet(name) {
            Ok(wallet) => self
                .settled_record(&mut channel, &peer, name, &wallet)
                .await
                .and_then(|record| {
                    record
                        .refuse_if_banned()
                        .map_err(|e| PeerError::wallet(name, e))?;
                    Ok((record, wallet))
                }),
            Err(e) => Err(e),
        };
        let (record, wallet) = match local {
            Ok(found) => found,
            Err(e) => {
                let reason = format!("{:?} cannot sign with {name:?}: {e}", device.me.name);
                return Err(refused(&mut channel, reason).await);
            }
        };
        let share = &record.current;
        let invitation = match session::check_sign(request, &peer, share, &wallet) {
            Ok(i) => i,
            Err(e) => {
                session::refuse(&mut channel, &e.to_string()).await;
                return Err(e);
            }
        };
        let approval = Approval::Sign {
            from: &peer.name,
            invitation: &invitation,
        };
        if !self.user.approve(&approval) {
            session::refuse(&mut channel, "the user refused to sign").await;
            return Err(PeerError::Refused("signature refused here".into()));
        }
        let leader = Link {
            peer,
            channel,
            address: None,
        };
        let user = &*self.user;
        let signature = session::join_sign(&invitation, leader, share, &mut on_round(user, "sign"))
            .await
            .inspect_err(|e| {
                if let Err(error) = device.ban_on_blame(name, e)
                    && let PeerError::Blamed { party, .. } = e
                {
                    user.notify(PeerEvent::BanNotStored {
                        party: *party,
                        wallet: name,
                        error: &error,
                    });
                }
            })?;
        user.notify(PeerEvent::Signed {
            message: &invitation.message,
            signature: &signature,
        });
        Ok(())
    }

    async fn answer_refresh(
        &self,
        request: &Request,
        peer: AuthenticatedPeer,
        mut channel: Channel,
        known: &mut KnownPeers,
    ) -> Result<(), PeerError> {
        let device = &self.device;
        let Request::Refresh { wallet: name, .. } = request else {
            return Err(PeerError::Protocol("not a refresh request".into()));
        };
        let local = match device.peer_wallet(name) {
            Ok(wallet) => self
                .settled_record(&mut channel, &peer, name, &wallet)
                .await
                .and_then(|record| {
                    record
                        .refuse_refresh_if_banned()
                        .map_err(|e| PeerError::wallet(name, e))?;
                    if record.pending.is_some() {
                        return Err(PeerError::Protocol(
                            "a pending share of an interrupted refresh is not settled yet".into(),
                        ));
                    }
                    Ok((record, wallet))
                }),
            Err(e) => Err(e),
        };
        let (mut record, wallet) = match local {
            Ok(found) => found,
            Err(e) => {
                let reason = format!("{:?} cannot refresh {name:?}: {e}", device.me.name);
                return Err(refused(&mut channel, reason).await);
            }
        };
        let invitation = match refresh::check_refresh(request, &peer, &record.current, &wallet) {
            Ok(i) => i,
            Err(e) => {
                let reason = format!("{:?} cannot refresh {name:?}: {e}", device.me.name);
                return Err(refused(&mut channel, reason).await);
            }
        };
        let approval = Approval::Refresh {
            from: &peer.name,
            invitation: &invitation,
        };
        if !self.user.approve(&approval) {
            session::refuse(&mut channel, "the user refused the refresh").await;
            return Err(PeerError::Refused("refresh refused here".into()));
        }
        let leader = Link {
            peer,
            channel,
            address: None,
        };
        let user = &*self.user;
        let mut confirm = |p: &CodePrompt| user.confirm_code(p);
        // The hook owns the record while the run borrows the share in use: a copy of it.
        let share = tessera_core::KeyShare::from_bytes(&record.current.to_bytes())?;
        let epoch = refresh::join_refresh(
            &invitation,
            leader,
            &share,
            &device.me,
            known,
            &mut confirm,
            &self.joins,
            &mut on_round(user, "refresh"),
            &mut |step| finish_step(device, name, &mut record, step, user),
        )
        .await
        .inspect_err(|e| {
            if let Err(error) = device.ban_on_blame(name, e)
                && let PeerError::Blamed { party, .. } = e
            {
                user.notify(PeerEvent::BanNotStored {
                    party: *party,
                    wallet: name,
                    error: &error,
                });
            }
        })?;
        user.notify(PeerEvent::Refreshed {
            wallet: name,
            epoch,
        });
        Ok(())
    }
}

/// Refuses a device that is not one of `wallet`'s (other than this one).
fn refuse_outsider(
    peer: &AuthenticatedPeer,
    wallet: &PeerWallet,
    name: &str,
) -> Result<(), PeerError> {
    let listed = (0u8..)
        .zip(&wallet.parties)
        .any(|(i, p)| i != wallet.me && p.identity == peer.identity);
    if listed {
        Ok(())
    } else {
        Err(PeerError::NotASigner {
            device: peer.name.clone(),
            wallet: name.to_string(),
        })
    }
}

fn held(record: &WalletRecord) -> Held {
    Held {
        current: record.current.epoch(),
        pending: record.pending.as_ref().map(tessera_core::KeyShare::epoch),
    }
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

/// Tells the other device why its request is refused, and returns the same reason as our error.
async fn refused(channel: &mut Channel, reason: String) -> PeerError {
    session::refuse(channel, &reason).await;
    PeerError::Refused(reason)
}
