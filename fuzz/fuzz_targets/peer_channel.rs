//! The device-to-device channel: Noise XX handshakes and records over a carrier of frames, and
//! the peer messages (`wire::Message`, pairing's hello/commit/reveal among them) carried in them.
//! The first byte picks the mode:
//! - 0: the bytes are a sequence of frames (two-byte big-endian length, then the frame) that an
//!   attacker sends to a device accepting a connection (`Channel::accept`): the handshake must
//!   fail cleanly, never complete with nobody on the other side;
//! - 1: two devices complete a real handshake; then each chunk (one-byte length, then the
//!   chunk) is either sent by the honest initiator as a whole message (even first byte: the
//!   fuzzer writes the plaintext inside authentic records) or put on the carrier as a raw frame
//!   (odd: forged or garbage records). The accepting device then reads messages as pairing
//!   does until the channel ends: a frame that fails authentication closes it; a message that
//!   decodes must encode to the same bytes.
#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tessera_client::peer::PeerError;
use tessera_client::peer::channel::{Channel, FrameSink, Frames};
use tessera_client::peer::wire::Message;
use tessera_fuzz::{chunks, frames};
use tokio::sync::mpsc;

type Inbox = mpsc::Sender<Result<Vec<u8>, PeerError>>;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
});

/// A carrier's sending side: every frame goes into `to`, another end's inbox. The other end may
/// be gone: frames to nobody are dropped, as on a closed socket.
fn sink_to(to: Inbox) -> FrameSink {
    Box::pin(futures_util::sink::unfold(to, |to, frame: Vec<u8>| async {
        let _ = to.send(Ok(frame)).await;
        Ok::<_, PeerError>(to)
    }))
}

/// A carrier end sending into `to` and reading from `inbox`.
fn carrier(to: Inbox, inbox: mpsc::Receiver<Result<Vec<u8>, PeerError>>) -> Frames {
    Frames::from_parts(sink_to(to), inbox, tokio::spawn(async {}))
}

async fn handshake_only(data: &[u8]) {
    let (discard_tx, mut discard_rx) = mpsc::channel(4096);
    tokio::spawn(async move { while discard_rx.recv().await.is_some() {} });
    let (inbox, inbox_rx) = mpsc::channel(4096);
    let accepting = carrier(discard_tx, inbox_rx);
    for frame in frames(data) {
        let _ = inbox.send(Ok(frame.to_vec())).await;
    }
    drop(inbox);
    let result = Channel::accept(accepting).await;
    assert!(
        result.is_err(),
        "a handshake completed with nobody on the other side"
    );
}

async fn records(data: &[u8]) {
    // Each end's inbox sender goes into the other end's sink.
    let (to_initiator_tx, to_initiator_rx) = mpsc::channel(4096);
    let (to_responder_tx, to_responder_rx) = mpsc::channel(4096);
    let initiator_frames = carrier(to_responder_tx.clone(), to_initiator_rx);
    let responder_frames = carrier(to_initiator_tx, to_responder_rx);
    let (initiator, responder) = tokio::join!(
        Channel::initiate(initiator_frames),
        Channel::accept(responder_frames)
    );
    let (mut initiator, mut responder) = (initiator.unwrap(), responder.unwrap());
    assert_eq!(initiator.handshake_hash(), responder.handshake_hash());
    responder.set_idle_timeout(Duration::from_secs(5));
    for chunk in chunks(data) {
        match chunk.split_first() {
            Some((flag, message)) if flag % 2 == 0 => {
                let _ = initiator.send(message).await;
            }
            _ => {
                let _ = to_responder_tx.send(Ok(chunk.to_vec())).await;
            }
        }
    }
    // The stream ends after what the fuzzer sent: the responder reads to the end.
    drop(initiator);
    drop(to_responder_tx);
    loop {
        match responder.recv().await {
            Ok(bytes) => {
                if let Ok(message) = Message::from_bytes(&bytes) {
                    assert_eq!(
                        message.to_bytes(),
                        bytes,
                        "a peer message with two encodings"
                    );
                }
            }
            Err(PeerError::Timeout(_)) => panic!("the responder waited for frames that never come"),
            Err(_) => break,
        }
    }
    // A broken or ended channel stays ended.
    assert!(responder.recv().await.is_err());
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    RUNTIME.block_on(async {
        if mode % 2 == 0 {
            handshake_only(rest).await;
        } else {
            records(rest).await;
        }
    });
});
