//! The encrypted channel between two devices.
//!
//! Noise `XX` (`Noise_XX_25519_ChaChaPoly_SHA256`, the `snow` crate) over any carrier of frames:
//! a TCP connection (each frame prefixed by its 2-byte length) or the commitment server's relay
//! WebSocket (one binary message per frame). Ephemeral-ephemeral Diffie-Hellman gives forward
//! secrecy. Each side's Noise static key is fresh per connection: what authenticates a device is
//! its Ed25519 identity key signing the handshake hash (see [`super::pairing`]), so a connection
//! is bound to exactly one handshake.
//!
//! Transport messages carry an implicit counter nonce, so a replayed, reordered, truncated or
//! altered frame fails authentication and closes the channel. A message larger than one Noise
//! frame is split into records of at most [`MAX_FRAME`] bytes, each starting with a flag byte
//! (1: more records follow, 0: last).

use std::pin::Pin;
use std::time::Duration;

use futures_util::{Sink, SinkExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

use super::PeerError;

/// The Noise protocol name.
pub const NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_SHA256";
/// Bound into the handshake: a different application or version cannot complete it.
const PROLOGUE: &[u8] = b"tessera/peer-channel/v1";
/// Largest Noise message (the Noise limit).
pub const MAX_FRAME: usize = 65_535;
const TAG_LEN: usize = 16;
const RECORD: usize = MAX_FRAME - TAG_LEN - 1;
/// Largest application message (the largest protocol envelope is about 150 KB).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// A channel with no message for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// The handshake must complete within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where frames are written.
enum FrameWriter {
    Tcp(tokio::net::tcp::OwnedWriteHalf),
    Sink(FrameSink),
    Closed,
}

/// A sink of frames (e.g. binary WebSocket messages).
pub type FrameSink = Pin<Box<dyn Sink<Vec<u8>, Error = PeerError> + Send>>;

/// Frames in and out of a carrier. Frames are read by a task (so that receiving is
/// cancel-safe) and written directly (so that a sent frame is on its way when `send` returns,
/// even if the process then ends).
pub struct Frames {
    writer: FrameWriter,
    rx: mpsc::Receiver<Result<Vec<u8>, PeerError>>,
    reader: JoinHandle<()>,
}

impl Frames {
    /// Frames over TCP: a 2-byte big-endian length, then the frame.
    #[must_use]
    pub fn tcp(stream: TcpStream) -> Self {
        let _ = stream.set_nodelay(true);
        let (mut r, w) = stream.into_split();
        let (in_tx, rx) = mpsc::channel(64);
        let reader = tokio::spawn(async move {
            loop {
                let next = read_tcp_frame(&mut r).await;
                let stop = next.is_err();
                if in_tx.send(next).await.is_err() || stop {
                    break;
                }
            }
        });
        Frames {
            writer: FrameWriter::Tcp(w),
            rx,
            reader,
        }
    }

    /// Frames from any carrier: `sink` takes frames to send; `rx` yields received frames (or
    /// the error that ended the carrier), filled by `reader`, which is aborted on drop.
    #[must_use]
    pub fn from_parts(
        sink: FrameSink,
        rx: mpsc::Receiver<Result<Vec<u8>, PeerError>>,
        reader: JoinHandle<()>,
    ) -> Self {
        Frames {
            writer: FrameWriter::Sink(sink),
            rx,
            reader,
        }
    }

    async fn send(&mut self, frame: Vec<u8>) -> Result<(), PeerError> {
        let result = match &mut self.writer {
            FrameWriter::Tcp(w) => {
                let len = u16::try_from(frame.len())
                    .map_err(|_| PeerError::Channel("a frame over 65535 bytes".into()))?;
                let mut buf = Vec::with_capacity(frame.len() + 2);
                buf.extend_from_slice(&len.to_be_bytes());
                buf.extend_from_slice(&frame);
                w.write_all(&buf).await.map_err(|_| PeerError::Closed)
            }
            FrameWriter::Sink(s) => s.send(frame).await,
            FrameWriter::Closed => Err(PeerError::Closed),
        };
        if result.is_err() {
            self.writer = FrameWriter::Closed;
        }
        result
    }

    async fn recv(&mut self, timeout: Duration) -> Result<Vec<u8>, PeerError> {
        match tokio::time::timeout(timeout, self.rx.recv()).await {
            Err(_) => Err(PeerError::Timeout(timeout)),
            Ok(None) => Err(PeerError::Closed),
            Ok(Some(Err(e))) => Err(e),
            Ok(Some(Ok(frame))) if frame.is_empty() || frame.len() > MAX_FRAME => Err(
                PeerError::Channel(format!("a frame of {} bytes", frame.len())),
            ),
            Ok(Some(Ok(frame))) => Ok(frame),
        }
    }

    /// Closes the sending side.
    async fn close(&mut self) {
        match std::mem::replace(&mut self.writer, FrameWriter::Closed) {
            FrameWriter::Tcp(mut w) => {
                let _ = w.shutdown().await;
            }
            FrameWriter::Sink(mut s) => {
                let _ = s.close().await;
            }
            FrameWriter::Closed => {}
        }
    }
}

impl Drop for Frames {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn read_tcp_frame(r: &mut tokio::net::tcp::OwnedReadHalf) -> Result<Vec<u8>, PeerError> {
    let mut len = [0u8; 2];
    match r.read(&mut len[..1]).await {
        Ok(0) => return Err(PeerError::Closed),
        Ok(_) => {}
        Err(e) => return Err(PeerError::Io(e.to_string())),
    }
    r.read_exact(&mut len[1..])
        .await
        .map_err(|_| PeerError::Channel("the connection ended inside a frame header".into()))?;
    let n = usize::from(u16::from_be_bytes(len));
    if n == 0 {
        return Err(PeerError::Channel("an empty frame".into()));
    }
    let mut frame = vec![0u8; n];
    r.read_exact(&mut frame).await.map_err(|_| {
        PeerError::Channel(format!(
            "the connection ended inside a frame (truncated {n}-byte frame)"
        ))
    })?;
    Ok(frame)
}

/// An established channel: authenticated encryption both ways, bound to its handshake hash.
pub struct Channel {
    frames: Frames,
    noise: snow::TransportState,
    hash: [u8; 32],
    initiator: bool,
    partial: Vec<u8>,
    broken: bool,
    idle: Duration,
}

impl Channel {
    /// Runs the Noise XX handshake as the side that connected.
    ///
    /// # Errors
    /// [`PeerError::Handshake`] when the peer's handshake messages are invalid; I/O, timeout.
    pub async fn initiate(frames: Frames) -> Result<Self, PeerError> {
        Self::handshake(frames, true).await
    }

    /// Runs the Noise XX handshake as the side that accepted the connection.
    ///
    /// # Errors
    /// As [`Channel::initiate`].
    pub async fn accept(frames: Frames) -> Result<Self, PeerError> {
        Self::handshake(frames, false).await
    }

    async fn handshake(mut frames: Frames, initiator: bool) -> Result<Self, PeerError> {
        let noise_err = |e: snow::Error| PeerError::Handshake(e.to_string());
        let params: snow::params::NoiseParams = NOISE_PARAMS.parse().map_err(noise_err)?;
        let keys = snow::Builder::new(params.clone())
            .generate_keypair()
            .map_err(noise_err)?;
        let private = Zeroizing::new(keys.private);
        let builder = snow::Builder::new(params)
            .local_private_key(&private)
            .map_err(noise_err)?
            .prologue(PROLOGUE)
            .map_err(noise_err)?;
        let mut hs = if initiator {
            builder.build_initiator()
        } else {
            builder.build_responder()
        }
        .map_err(noise_err)?;
        let mut buf = vec![0u8; MAX_FRAME];
        while !hs.is_handshake_finished() {
            if hs.is_my_turn() {
                let n = hs.write_message(&[], &mut buf).map_err(noise_err)?;
                frames.send(buf[..n].to_vec()).await?;
            } else {
                let frame = frames.recv(HANDSHAKE_TIMEOUT).await?;
                // Our handshake messages carry no payload: anything else is not from us.
                match hs.read_message(&frame, &mut buf) {
                    Ok(0) => {}
                    _ => {
                        return Err(PeerError::Handshake(
                            "the peer's handshake message is invalid".into(),
                        ));
                    }
                }
            }
        }
        let hash: [u8; 32] = hs
            .get_handshake_hash()
            .try_into()
            .map_err(|_| PeerError::Handshake("handshake hash length".into()))?;
        let noise = hs.into_transport_mode().map_err(noise_err)?;
        Ok(Channel {
            frames,
            noise,
            hash,
            initiator,
            partial: Vec::new(),
            broken: false,
            idle: IDLE_TIMEOUT,
        })
    }

    /// The Noise handshake hash: unique to this channel, known to both ends.
    #[must_use]
    pub fn handshake_hash(&self) -> &[u8; 32] {
        &self.hash
    }

    /// Whether this side connected (the Noise initiator).
    #[must_use]
    pub fn is_initiator(&self) -> bool {
        self.initiator
    }

    /// Sets the idle timeout (default [`IDLE_TIMEOUT`]).
    pub fn set_idle_timeout(&mut self, idle: Duration) {
        self.idle = idle;
    }

    /// Sends one message (split into records as needed).
    ///
    /// # Errors
    /// [`PeerError::Channel`] for an oversized message; [`PeerError::Closed`].
    pub async fn send(&mut self, message: &[u8]) -> Result<(), PeerError> {
        if self.broken {
            return Err(PeerError::Closed);
        }
        if message.len() > MAX_MESSAGE_BYTES {
            return Err(PeerError::Channel(format!(
                "a message of {} bytes (limit {MAX_MESSAGE_BYTES})",
                message.len()
            )));
        }
        let mut chunks = message.chunks(RECORD).peekable();
        let mut plain = Vec::with_capacity(RECORD + 1);
        let mut out = vec![0u8; MAX_FRAME];
        loop {
            let chunk = chunks.next().unwrap_or_default();
            let last = chunks.peek().is_none();
            plain.clear();
            plain.push(u8::from(!last));
            plain.extend_from_slice(chunk);
            let n = self
                .noise
                .write_message(&plain, &mut out)
                .map_err(|e| PeerError::Channel(e.to_string()))?;
            self.frames.send(out[..n].to_vec()).await?;
            if last {
                return Ok(());
            }
        }
    }

    /// Receives one whole message. Cancel-safe: a partly received message is kept.
    ///
    /// # Errors
    /// [`PeerError::Channel`] when a frame fails authentication (garbage, truncated, replayed,
    /// reordered) — the channel is then unusable; [`PeerError::Closed`]; [`PeerError::Timeout`].
    pub async fn recv(&mut self) -> Result<Vec<u8>, PeerError> {
        if self.broken {
            return Err(PeerError::Closed);
        }
        loop {
            let frame = match self.frames.recv(self.idle).await {
                Ok(f) => f,
                Err(e) => {
                    self.broken = true;
                    return Err(e);
                }
            };
            let mut plain = vec![0u8; frame.len()];
            let n = match self.noise.read_message(&frame, &mut plain) {
                Ok(n) if n >= 1 => n,
                _ => {
                    self.broken = true;
                    return Err(PeerError::Channel(
                        "a frame failed authentication (garbage, truncated, replayed or reordered data); the channel is closed".into(),
                    ));
                }
            };
            let more = match plain[0] {
                0 => false,
                1 => true,
                _ => {
                    self.broken = true;
                    return Err(PeerError::Channel("a record with a bad flag".into()));
                }
            };
            if self.partial.len() + n - 1 > MAX_MESSAGE_BYTES {
                self.broken = true;
                return Err(PeerError::Channel(format!(
                    "a message over {MAX_MESSAGE_BYTES} bytes"
                )));
            }
            self.partial.extend_from_slice(&plain[1..n]);
            if !more {
                return Ok(std::mem::take(&mut self.partial));
            }
        }
    }

    /// Closes the channel (the peer sees the end of the stream).
    pub async fn close(mut self) {
        self.frames.close().await;
    }
}
