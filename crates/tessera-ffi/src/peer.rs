//! Device-to-device mode over the app's own link ([`PeerTransport`]: MultipeerConnectivity or
//! Bluetooth LE on iOS, Wi-Fi Direct on Android…). The link only carries frames: the Noise
//! channel, the pairing code ([`PeerPrompt`]) and the protocols run unchanged over it, as over
//! TCP or the server's relay, so the link need not be trusted (a frame altered on it stops the
//! session; nothing is signed or stored).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use tessera_client::peer::PeerError;
use tessera_client::peer::channel::{Channel, Frames};
use tessera_client::peer::known::KnownPeers;
use tessera_client::peer::lead::{self, Link, OpenWallet};
use tessera_client::peer::pairing::{self, CodePrompt};
use tessera_client::peer::responder::Responder;
use tessera_client::peer::user::{Approval, PeerEvent, PeerUser};
use tessera_core::DerivationPath;

use crate::device::{self, TesseraDevice};
use crate::error::{TesseraError, TransportError};
use crate::{
    ActionKind, PresenceAction, ProgressListener, SignatureInfo, UserPresence, WalletInfo, confirm,
    run, wallet_info,
};

/// The app's link to one other device: frames out and in, in order.
#[uniffi::export(with_foreign)]
pub trait PeerTransport: Send + Sync {
    /// Sends one frame (at most 65,535 bytes) to the other device.
    ///
    /// # Errors
    /// [`TransportError::Closed`] once the link is closed; [`TransportError::Failed`].
    fn send(&self, frame: Vec<u8>) -> Result<(), TransportError>;

    /// The next frame from the other device, waiting for it; `None` once the link is closed.
    ///
    /// # Errors
    /// [`TransportError::Failed`].
    fn recv(&self) -> Result<Option<Vec<u8>>, TransportError>;

    /// The session is over: the app may close the link (and must then end a waiting
    /// [`Self::recv`] with `None`).
    fn close(&self);
}

/// The app's prompt for a pairing code: both devices show the same six digits.
#[uniffi::export(with_foreign)]
pub trait PeerPrompt: Send + Sync {
    /// Whether the user sees `code` on the device named `peer_name` too.
    fn confirm_code(&self, peer_name: String, code: String) -> bool;
}

/// How long a device answering over the link waits for the next message.
const IDLE: Duration = Duration::from_secs(60);

/// The app's link as the SDK's frames: writes go through [`PeerTransport::send`], a reader
/// task takes frames from [`PeerTransport::recv`] (both off the runtime's workers: the app's
/// calls may block). The reader is returned, not handed to the frames (which would abort it
/// when dropped, leaving the app's `recv` call running on a thread of ours): [`finish`]
/// waits for it, so that no call into the app is still running when the operation returns
/// (an interpreter exiting under a call from a foreign thread aborts the process).
fn frames(transport: Arc<dyn PeerTransport>) -> (Frames, JoinHandle<()>) {
    let sink = futures_util::sink::unfold(transport.clone(), |t, frame: Vec<u8>| async move {
        let sender = t.clone();
        match tokio::task::spawn_blocking(move || sender.send(frame)).await {
            Ok(Ok(())) => Ok(t),
            Ok(Err(TransportError::Closed)) | Err(_) => Err(PeerError::Closed),
            Ok(Err(TransportError::Failed { reason })) => Err(PeerError::Io(reason)),
        }
    });
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let reader = tokio::spawn(async move {
        loop {
            let t = transport.clone();
            let next = match tokio::task::spawn_blocking(move || t.recv()).await {
                Ok(Ok(Some(frame))) => Ok(frame),
                Ok(Ok(None) | Err(TransportError::Closed)) | Err(_) => Err(PeerError::Closed),
                Ok(Err(TransportError::Failed { reason })) => Err(PeerError::Io(reason)),
            };
            let stop = next.is_err();
            if tx.send(next).await.is_err() || stop {
                break;
            }
        }
    });
    let placeholder = tokio::spawn(async {});
    (Frames::from_parts(Box::pin(sink), rx, placeholder), reader)
}

/// How long [`finish`] waits for the app to end its `recv` after [`PeerTransport::close`].
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// The session over the link is done: tells the app it may close the link, then waits for
/// the reader to see the end (the app's `recv` returning `None`).
async fn finish(transport: Arc<dyn PeerTransport>, reader: JoinHandle<()>) {
    let _ = tokio::task::spawn_blocking(move || transport.close()).await;
    let _ = tokio::time::timeout(CLOSE_WAIT, reader).await;
}

/// The person at this device, as the peer workflows ask and tell it: codes through the app's
/// prompt, other devices' requests through its user-presence check.
struct AppUser {
    prompt: Arc<dyn PeerPrompt>,
    presence: Arc<dyn UserPresence>,
    progress: Option<Arc<dyn ProgressListener>>,
    /// The other device, once it is authenticated (to name it in a failure).
    peer: Mutex<Option<String>>,
}

impl AppUser {
    fn new(
        prompt: Arc<dyn PeerPrompt>,
        presence: Arc<dyn UserPresence>,
        progress: Option<Arc<dyn ProgressListener>>,
    ) -> Self {
        AppUser {
            prompt,
            presence,
            progress,
            peer: Mutex::new(None),
        }
    }

    fn peer(&self) -> Option<String> {
        self.peer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl PeerUser for AppUser {
    fn confirm_code(&self, prompt: &CodePrompt) -> bool {
        let (name, code) = (prompt.peer_name.clone(), prompt.code.clone());
        // The app blocks on its prompt: let the runtime move its other tasks elsewhere.
        tokio::task::block_in_place(|| self.prompt.confirm_code(name, code))
    }

    fn approve(&self, request: &Approval<'_>) -> bool {
        let (kind, wallet) = match request {
            Approval::Keygen { invitation, .. } => {
                (ActionKind::PeerKeygen, invitation.wallet.clone())
            }
            Approval::Sign { invitation, .. } => (ActionKind::PeerSign, invitation.wallet.clone()),
            Approval::Refresh { invitation, .. } => {
                (ActionKind::Refresh, invitation.wallet.clone())
            }
        };
        let action = PresenceAction {
            kind,
            wallet: Some(wallet),
            summary: request.to_string(),
        };
        tokio::task::block_in_place(|| self.presence.confirm(action))
    }

    fn notify(&self, event: PeerEvent<'_>) {
        match event {
            PeerEvent::Authenticated { name } => {
                *self
                    .peer
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(name.to_owned());
            }
            PeerEvent::Round { round, total, .. } => crate::report(&self.progress, round, total),
            _ => {}
        }
    }
}

/// Opens a channel over `transport` as the device that starts, and authenticates the other
/// device (pairing it with the code if new).
async fn reach(
    device: &tessera_client::peer::device::PeerDevice,
    frames: Frames,
    user: &AppUser,
) -> Result<Link, TesseraError> {
    let mut channel = Channel::initiate(frames)
        .await
        .map_err(|e| TesseraError::peer(e, None))?;
    let mut known =
        KnownPeers::load(device.home.clone()).map_err(|e| TesseraError::peer(e, None))?;
    let mut confirm_code = |p: &CodePrompt| user.confirm_code(p);
    let peer = pairing::authenticate(&mut channel, &device.me, &mut known, &mut confirm_code)
        .await
        .map_err(|e| TesseraError::peer(e, None))?;
    Ok(Link {
        peer,
        channel,
        address: None,
    })
}

#[uniffi::export]
impl TesseraDevice {
    /// Creates a 2-of-2 wallet `wallet` with the device at the other end of `transport`,
    /// leading it; this device shows itself as `device_name`. A device not paired before is
    /// paired first: both show a code, which `prompt` confirms. Asks the user's presence
    /// before anything is sent.
    ///
    /// # Errors
    /// [`TesseraError::WalletExists`], [`TesseraError::UserRefused`] (here or on the other
    /// device), [`TesseraError::ProtocolAborted`] naming the other device.
    #[allow(clippy::too_many_arguments)] // the wallet, who we are, the link and the three hooks
    pub async fn peer_keygen(
        &self,
        passphrase: String,
        device_name: String,
        wallet: String,
        transport: Arc<dyn PeerTransport>,
        prompt: Arc<dyn PeerPrompt>,
        progress: Option<Arc<dyn ProgressListener>>,
    ) -> Result<WalletInfo, TesseraError> {
        let home = self.device.clone();
        let presence = self.presence.clone();
        let passphrase = device::passphrase(passphrase)?;
        run(async move {
            let me = home.peer(passphrase, Some(device_name))?;
            if me.keystore.has_wallet(&wallet)? {
                return Err(TesseraError::WalletExists { name: wallet });
            }
            let summary = format!("create the 2-of-2 wallet {wallet} with the other device");
            confirm(&presence, ActionKind::PeerKeygen, Some(&wallet), summary).await?;
            let user = AppUser::new(prompt, presence, progress);
            let (frames, reader) = frames(transport.clone());
            let result = async {
                let link = reach(&me, frames, &user).await?;
                let other = link.peer.name.clone();
                lead::keygen(&me, vec![link], &wallet, 2, &user)
                    .await
                    .map_err(|e| TesseraError::peer(e, Some(&other)))
            }
            .await;
            finish(transport, reader).await;
            Ok(wallet_info(&wallet, &result?.public_key))
        })
        .await
    }

    /// Signs `message` (EIP-191) with the device-to-device wallet `wallet` and the device at
    /// the other end of `transport`, after the user's confirmation.
    ///
    /// # Errors
    /// As [`Self::peer_keygen`]; [`TesseraError::InvalidArgument`] when the other device holds
    /// no share of the wallet.
    #[allow(clippy::too_many_arguments)] // as peer_keygen, with the message
    pub async fn peer_sign_message(
        &self,
        passphrase: String,
        device_name: String,
        wallet: String,
        message: String,
        transport: Arc<dyn PeerTransport>,
        prompt: Arc<dyn PeerPrompt>,
        progress: Option<Arc<dyn ProgressListener>>,
    ) -> Result<SignatureInfo, TesseraError> {
        let home = self.device.clone();
        let presence = self.presence.clone();
        let passphrase = device::passphrase(passphrase)?;
        run(async move {
            let me = home.peer(passphrase, Some(device_name))?;
            let mut open =
                OpenWallet::to_sign(&me, &wallet).map_err(|e| TesseraError::peer(e, None))?;
            let summary = format!("sign with wallet {wallet} the message {message:?}");
            confirm(&presence, ActionKind::PeerSign, Some(&wallet), summary).await?;
            let user = AppUser::new(prompt, presence, progress);
            let (frames, reader) = frames(transport.clone());
            let result = async {
                let link = reach(&me, frames, &user).await?;
                let other = link.peer.name.clone();
                let path = DerivationPath::root();
                lead::sign(&me, &mut open, link, &message, &path, &user)
                    .await
                    .map_err(|e| TesseraError::peer(e, Some(&other)))
            }
            .await;
            finish(transport, reader).await;
            let signature = result?;
            let mut info = SignatureInfo::from(&signature);
            info.public_key = hex::encode(open.record.current.public_key().to_compressed());
            Ok(info)
        })
        .await
    }

    /// Answers the device at the other end of `transport`: authenticates it (pairing it with
    /// the code if new), then serves its one request (a keygen or a signature), asking the
    /// user's presence with what it asks. Returns when the request is done.
    ///
    /// # Errors
    /// [`TesseraError::UserRefused`], [`TesseraError::ProtocolAborted`] naming the other device
    /// where it can.
    pub async fn peer_respond(
        &self,
        passphrase: String,
        device_name: String,
        transport: Arc<dyn PeerTransport>,
        prompt: Arc<dyn PeerPrompt>,
    ) -> Result<(), TesseraError> {
        let home = self.device.clone();
        let presence = self.presence.clone();
        let passphrase = device::passphrase(passphrase)?;
        run(async move {
            let me = home.peer(passphrase, Some(device_name))?;
            let user = Arc::new(AppUser::new(prompt, presence, None));
            let responder = Responder::new(me, user.clone(), None, IDLE);
            let (frames, reader) = frames(transport.clone());
            let result = responder.serve(frames, false).await;
            finish(transport, reader).await;
            result.map_err(|e| TesseraError::peer(e, user.peer().as_deref()))
        })
        .await
    }
}
