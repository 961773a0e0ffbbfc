//! A device's link in a session of several parties through the server: one WebSocket, on which
//! the device writes each session frame ([`tessera_api::session_frame`]) behind the index of
//! the party it is for, and reads the frames the others sent it, their sender in the header
//! (written by the server, which authenticated each party's socket). [`SocketLink`] is the one
//! driver's [`Link`] over it: every frame read is checked ([`Peers`]: a known version and kind,
//! a sender that is a peer, parts that join into at most an envelope, no flood of controls,
//! nothing after a peer's end), and a party's end other than "finished" ends the run naming it.
//!
//! Between two devices the frames are end to end encrypted and authenticated
//! ([`SocketLink::seal`]): before the protocol starts, each pair of devices runs a Noise `XX`
//! handshake (`Noise_XX_25519_ChaChaPoly_SHA256`, the `snow` crate, fresh keys per session; its
//! prologue binds the session and both party indices) in channel frames, then each signs the
//! handshake hash, with the two party indices, with its Ed25519 identity key and sends the
//! signature sealed; the other checks it against the identity key it trusts for that party (the
//! SIGMA pattern: the signatures bind the ephemeral keys to the identities, so whoever carries
//! the frames cannot stand in the middle). From then on each protocol message between them
//! (each part) is a Noise transport message: the server forwards what it can neither read nor
//! alter, and a frame dropped, replayed, reordered or changed on the way fails to decrypt and
//! ends the run ([`ClientError::Channel`], which does not blame the sending device: the
//! carrier may be at fault). Frames with the server's own party stay plain (the server is that
//! party, and the socket is TLS). Ends and the finish's controls are not sealed: the server
//! speaks for a device that left (its pump reports it in the device's name), and coordinates
//! every finish; what the server can do with them, stop a run, it can do anyway.
//!
//! The server's side is `tessera_server::session_pump`.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tessera_api::session_frame::{
    Body, End, Fault, Frame, MAX_CHANNEL, Peers, addressed, channel_frame, message_frames,
};
use tessera_core::driver::{Control, Link};
use tessera_core::envelope::MAX_ENVELOPE_BYTES;
use tessera_core::{Envelope, PartyIndex};
use tessera_store::DeviceIdentity;
use tessera_store::keystore::verify_identity_signature;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message};
use zeroize::Zeroizing;

use crate::error::{ClientError, Result, net};

/// How long [`SocketLink::end`] waits for the server's close.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// The Noise protocol of the channels between devices.
pub const NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_SHA256";
/// Bound into each channel's handshake, with the session and the two parties.
const PROLOGUE: &[u8] = b"tessera/session-channel/v1";
/// What a device signs to authenticate a channel, before the handshake hash and the parties.
const AUTH_CONTEXT: &[u8] = b"tessera/session-channel-auth/v1";
/// Noise's tag.
const TAG_LEN: usize = 16;
/// The most plaintext one sealed frame carries.
const SEALED_CHUNK: usize = MAX_CHANNEL - TAG_LEN;

/// The end-to-end channel with one device of the session.
enum Channel {
    /// The handshake, under way.
    Handshake(Box<snow::HandshakeState>),
    /// Established; `authenticated` once the peer's signature checked out.
    Open {
        noise: Box<snow::TransportState>,
        hash: [u8; 32],
        authenticated: bool,
    },
}

/// Party `me`'s link to the other parties of a session, over `socket`.
pub struct SocketLink<S> {
    socket: S,
    peers: Peers,
    /// The end-to-end channels with the other devices ([`SocketLink::seal`]).
    channels: BTreeMap<PartyIndex, Channel>,
}

fn channel_error(party: PartyIndex, reason: impl Into<String>) -> ClientError {
    ClientError::Channel {
        party: party.get(),
        reason: reason.into(),
    }
}

fn noise_error(party: PartyIndex, e: &snow::Error) -> ClientError {
    channel_error(party, format!("Noise: {e}"))
}

/// The handshake's prologue: the context, the session and the two parties (lower first).
fn prologue(session: &[u8], a: PartyIndex, b: PartyIndex) -> Vec<u8> {
    let (low, high) = if a < b { (a, b) } else { (b, a) };
    let mut out = PROLOGUE.to_vec();
    out.extend_from_slice(
        &u32::try_from(session.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(session);
    out.extend_from_slice(&[low.get(), high.get()]);
    out
}

/// What `signer` signs to authenticate its channel with `other`.
fn auth_transcript(hash: &[u8; 32], signer: PartyIndex, other: PartyIndex) -> Vec<u8> {
    let mut out = AUTH_CONTEXT.to_vec();
    out.extend_from_slice(hash);
    out.extend_from_slice(&[signer.get(), other.get()]);
    out
}

impl<S> SocketLink<S>
where
    S: Stream<Item = std::result::Result<Message, tungstenite::Error>>
        + Sink<Message, Error = tungstenite::Error>
        + Unpin,
{
    /// Party `me` of a session whose other parties are `peers`, over `socket` (connected to the
    /// server's pump for `me`).
    ///
    /// # Errors
    /// [`ClientError::Session`] for a bad party set (empty, repeated, `me` among them).
    pub fn new(socket: S, me: PartyIndex, peers: &[PartyIndex]) -> Result<Self> {
        Ok(SocketLink {
            socket,
            peers: Peers::new(me, peers)?,
            channels: BTreeMap::new(),
        })
    }

    /// Sets up the end-to-end channel with each of `devices` (the other devices of the session,
    /// each with the identity key this device trusts for it), authenticating this device with
    /// `identity`, for session `session` (its id: bound into every handshake). Returns once
    /// every channel is authenticated both ways, or fails after `within`. Messages from the
    /// server's party that arrive meanwhile are kept.
    ///
    /// # Errors
    /// [`ClientError::Channel`] naming the device whose channel failed (a bad handshake
    /// message, a signature that does not verify with its identity key, none in time);
    /// [`ClientError::Session`] for a device that is not a peer, or a peer's fault; the
    /// socket's errors.
    pub async fn seal(
        &mut self,
        identity: &DeviceIdentity,
        session: &[u8],
        devices: &BTreeMap<PartyIndex, [u8; 32]>,
        within: Duration,
    ) -> Result<()> {
        let me = self.peers.me();
        let deadline = Instant::now() + within;
        for &party in devices.keys() {
            if !self.peers.contains(party) || self.channels.contains_key(&party) {
                return Err(Fault::Invalid(format!(
                    "party {party} is not a peer of this party without a channel"
                ))
                .into());
            }
            let params: snow::params::NoiseParams =
                NOISE_PARAMS.parse().map_err(|e| noise_error(party, &e))?;
            let keys = snow::Builder::new(params.clone())
                .generate_keypair()
                .map_err(|e| noise_error(party, &e))?;
            let private = Zeroizing::new(keys.private);
            let prologue = prologue(session, me, party);
            let builder = snow::Builder::new(params)
                .local_private_key(&private)
                .map_err(|e| noise_error(party, &e))?
                .prologue(&prologue)
                .map_err(|e| noise_error(party, &e))?;
            let handshake = if me < party {
                builder.build_initiator()
            } else {
                builder.build_responder()
            }
            .map_err(|e| noise_error(party, &e))?;
            self.channels
                .insert(party, Channel::Handshake(Box::new(handshake)));
            self.advance(party, identity).await?;
        }
        loop {
            let waiting = self.channels.iter().find(|(_, c)| {
                !matches!(
                    c,
                    Channel::Open {
                        authenticated: true,
                        ..
                    }
                )
            });
            let Some((&waiting, _)) = waiting else {
                return Ok(());
            };
            let Some(frame) = self.next_frame(Some(deadline)).await? else {
                return Err(channel_error(
                    waiting,
                    "the end-to-end channel was not set up in time",
                ));
            };
            match frame.body {
                Body::Channel(bytes) if self.channels.contains_key(&frame.from) => {
                    let key = devices.get(&frame.from).copied();
                    self.channel_message(frame.from, &bytes, key, identity)
                        .await?;
                }
                _ => {
                    if let Some((party, message)) = self.take_in(frame)? {
                        self.peers.keep_message(party, message)?;
                    }
                }
            }
        }
    }

    /// Writes this party's next handshake message to `party` if it is this party's turn; once
    /// the handshake is over, sends the sealed signature.
    async fn advance(&mut self, party: PartyIndex, identity: &DeviceIdentity) -> Result<()> {
        let me = self.peers.me();
        let mut buf = vec![0u8; MAX_CHANNEL];
        let Some(Channel::Handshake(handshake)) = self.channels.get_mut(&party) else {
            return Ok(());
        };
        let mut out = Vec::new();
        if handshake.is_my_turn() && !handshake.is_handshake_finished() {
            let n = handshake
                .write_message(&[], &mut buf)
                .map_err(|e| noise_error(party, &e))?;
            out.push(buf[..n].to_vec());
        }
        if handshake.is_handshake_finished() {
            let Some(Channel::Handshake(handshake)) = self.channels.remove(&party) else {
                return Ok(());
            };
            let hash: [u8; 32] = handshake
                .get_handshake_hash()
                .try_into()
                .map_err(|_| channel_error(party, "the handshake hash's length"))?;
            let mut noise = handshake
                .into_transport_mode()
                .map_err(|e| noise_error(party, &e))?;
            let signature = identity.sign(&auth_transcript(&hash, me, party));
            let n = noise
                .write_message(&signature, &mut buf)
                .map_err(|e| noise_error(party, &e))?;
            out.push(buf[..n].to_vec());
            self.channels.insert(
                party,
                Channel::Open {
                    noise: Box::new(noise),
                    hash,
                    authenticated: false,
                },
            );
        }
        for message in out {
            let frame = channel_frame(me, &message).map_err(|e| Fault::Invalid(e.to_string()))?;
            self.write(party, &frame).await?;
        }
        Ok(())
    }

    /// Takes in a channel message from `party`: the next handshake message, or its sealed
    /// signature, checked against `key`, the identity key this device trusts for it.
    async fn channel_message(
        &mut self,
        party: PartyIndex,
        bytes: &[u8],
        key: Option<[u8; 32]>,
        identity: &DeviceIdentity,
    ) -> Result<()> {
        let me = self.peers.me();
        let mut buf = vec![0u8; MAX_CHANNEL];
        match self.channels.get_mut(&party) {
            Some(Channel::Handshake(handshake)) => {
                // The handshake's messages carry no payload: anything else is not a peer's.
                if !matches!(handshake.read_message(bytes, &mut buf), Ok(0)) {
                    return Err(channel_error(
                        party,
                        "a handshake message that is not valid (altered on the way, or not \
                         from that device)",
                    ));
                }
                self.advance(party, identity).await
            }
            Some(Channel::Open {
                noise,
                hash,
                authenticated: authenticated @ false,
            }) => {
                let key = key.ok_or_else(|| channel_error(party, "no identity key for it"))?;
                let n = noise.read_message(bytes, &mut buf).map_err(|_| {
                    channel_error(party, "its signature did not decrypt (altered on the way)")
                })?;
                let signature: [u8; 64] = buf[..n]
                    .try_into()
                    .map_err(|_| channel_error(party, "its signature's length"))?;
                verify_identity_signature(&key, &auth_transcript(hash, party, me), &signature)
                    .map_err(|_| {
                        channel_error(
                            party,
                            "its signature does not verify with the identity key this device \
                             trusts for it (someone in the middle, or another device)",
                        )
                    })?;
                *authenticated = true;
                Ok(())
            }
            _ => Err(channel_error(
                party,
                "a channel message after its channel was set up",
            )),
        }
    }

    /// A checked frame: a sealed one opened, then taken in by [`Peers::absorb`].
    fn take_in(&mut self, mut frame: Frame) -> Result<Option<(PartyIndex, Vec<u8>)>> {
        let from = frame.from;
        // Controls and ends are not sealed (the pump speaks for a device that left, in its
        // name); a device's end comes through even before its channel is set up.
        let sealed = matches!(
            frame.body,
            Body::Part(_) | Body::Message(_) | Body::Channel(_)
        );
        if let Some(channel) = self.channels.get_mut(&from).filter(|_| sealed) {
            let Channel::Open {
                noise,
                authenticated: true,
                ..
            } = channel
            else {
                return Err(channel_error(
                    from,
                    "a frame before its end-to-end channel was set up",
                ));
            };
            match &mut frame.body {
                Body::Part(sealed) | Body::Message(sealed) => {
                    let mut plain = vec![0u8; sealed.len()];
                    let n = noise.read_message(sealed, &mut plain).map_err(|_| {
                        channel_error(
                            from,
                            "a frame did not decrypt: dropped, replayed, reordered or altered \
                             on the way, or not from that device",
                        )
                    })?;
                    plain.truncate(n);
                    *sealed = plain;
                }
                Body::Channel(_) => {
                    return Err(channel_error(
                        from,
                        "a channel message after its channel was set up",
                    ));
                }
                Body::Control(_) | Body::End(_) => {}
            }
        }
        Ok(self.peers.absorb(frame)?)
    }

    /// The frames of `message` for `to`: sealed parts over its channel, if there is one, else
    /// plain parts.
    fn frames_for(&mut self, to: PartyIndex, message: &[u8]) -> Result<Vec<Vec<u8>>> {
        let me = self.peers.me();
        let Some(channel) = self.channels.get_mut(&to) else {
            return Ok(message_frames(me, message).map_err(|e| Fault::Invalid(e.to_string()))?);
        };
        let Channel::Open {
            noise,
            authenticated: true,
            ..
        } = channel
        else {
            return Err(channel_error(to, "its end-to-end channel is not set up"));
        };
        if message.is_empty() || message.len() > MAX_ENVELOPE_BYTES {
            return Err(Fault::Invalid(format!("a message of {} bytes", message.len())).into());
        }
        let count = message.len().div_ceil(SEALED_CHUNK);
        let mut frames = Vec::with_capacity(count);
        let mut sealed = vec![0u8; MAX_CHANNEL];
        for (i, chunk) in message.chunks(SEALED_CHUNK).enumerate() {
            let n = noise
                .write_message(chunk, &mut sealed)
                .map_err(|e| noise_error(to, &e))?;
            let body = sealed[..n].to_vec();
            let body = if i + 1 == count {
                Body::Message(body)
            } else {
                Body::Part(body)
            };
            frames.push(
                Frame { from: me, body }
                    .encode()
                    .map_err(|e| Fault::Invalid(e.to_string()))?,
            );
        }
        Ok(frames)
    }

    /// Waits until `party` says its run finished (the server's party says so once it stored its
    /// outcome), at most `within`; protocol messages that come meanwhile are kept.
    ///
    /// # Errors
    /// [`ClientError::Session`] for `party`'s (or another peer's) end other than finished, a
    /// fault of a peer's frames, or no end in time; the socket's errors.
    pub async fn await_finished(&mut self, party: PartyIndex, within: Duration) -> Result<()> {
        if !self.peers.contains(party) {
            return Err(Fault::Invalid(format!("party {party} is not a peer")).into());
        }
        let deadline = Instant::now() + within;
        loop {
            if !self.peers.unfinished().any(|p| p == party) {
                return Ok(());
            }
            let Some(frame) = self.next_frame(Some(deadline)).await? else {
                return Err(Fault::Gone {
                    party,
                    why: format!(
                        "it did not say it finished within {} s",
                        within.as_secs_f32()
                    ),
                }
                .into());
            };
            if let Some((from, message)) = self.take_in(frame)? {
                self.peers.keep_message(from, message)?;
            }
        }
    }

    /// This party.
    #[must_use]
    pub fn party(&self) -> PartyIndex {
        self.peers.me()
    }

    /// Tells every peer that has not finished that this party's run ended (after a successful
    /// run, [`End::finished`]), then closes the socket and waits a moment for the server's
    /// close.
    ///
    /// # Errors
    /// The socket's, when the end could not be sent.
    pub async fn end(mut self, end: End) -> Result<()> {
        let frame = self.peers.end_frame(&end);
        let to: Vec<PartyIndex> = self.peers.unfinished().collect();
        for party in to {
            self.write(party, &frame).await?;
        }
        self.socket.close().await.map_err(net)?;
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            while let Some(Ok(_)) = self.socket.next().await {}
        })
        .await;
        Ok(())
    }

    async fn write(&mut self, to: PartyIndex, frame: &[u8]) -> Result<()> {
        self.socket
            .send(Message::Binary(addressed(to, frame).into()))
            .await
            .map_err(net)
    }

    /// The next frame, checked, or `None` once `deadline` passed.
    async fn next_frame(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<Option<tessera_api::session_frame::Frame>> {
        loop {
            let next = match deadline {
                Some(deadline) => match tokio::time::timeout_at(deadline, self.socket.next()).await
                {
                    Ok(next) => next,
                    Err(_) => return Ok(None),
                },
                None => self.socket.next().await,
            };
            match next {
                Some(Ok(Message::Binary(bytes))) => return Ok(Some(self.peers.check(&bytes)?)),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    return Err(net("the server sent a text frame in a session of parties"));
                }
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame.map_or((1005, String::new()), |f| {
                        (u16::from(f.code), f.reason.to_string())
                    });
                    return Err(ClientError::Closed { code, reason });
                }
                Some(Err(e)) => return Err(net(e)),
                None => return Err(net("the server went away")),
            }
        }
    }
}

impl<S> Link for SocketLink<S>
where
    S: Stream<Item = std::result::Result<Message, tungstenite::Error>>
        + Sink<Message, Error = tungstenite::Error>
        + Unpin,
{
    type Error = ClientError;

    async fn send(&mut self, envelope: &Envelope) -> Result<()> {
        let me = self.peers.me();
        if envelope.from != me || !self.peers.contains(envelope.to) {
            return Err(Fault::Invalid(format!(
                "party {me} cannot send an envelope from party {} to party {}",
                envelope.from, envelope.to
            ))
            .into());
        }
        let frames = self.frames_for(envelope.to, &envelope.to_bytes())?;
        for frame in frames {
            self.write(envelope.to, &frame).await?;
        }
        Ok(())
    }

    async fn recv(&mut self, idle: Option<Duration>) -> Result<Option<(PartyIndex, Vec<u8>)>> {
        if let Some(message) = self.peers.waiting_message() {
            return Ok(Some(message));
        }
        let deadline = idle.map(|d| Instant::now() + d);
        loop {
            let Some(frame) = self.next_frame(deadline).await? else {
                return Ok(None);
            };
            if let Some(message) = self.take_in(frame)? {
                return Ok(Some(message));
            }
        }
    }

    async fn send_control(&mut self, control: Control) -> Result<()> {
        let frame = self.peers.control_frame(control);
        for party in self.peers.control_recipients(control)? {
            self.write(party, &frame).await?;
        }
        Ok(())
    }

    async fn recv_control(
        &mut self,
        from: PartyIndex,
        idle: Option<Duration>,
    ) -> Result<Option<Control>> {
        let deadline = idle.map(|d| Instant::now() + d);
        loop {
            if let Some(control) = self.peers.take_control(from)? {
                return Ok(Some(control));
            }
            let Some(frame) = self.next_frame(deadline).await? else {
                return Ok(None);
            };
            if let Some((party, message)) = self.take_in(frame)? {
                self.peers.keep_message(party, message)?;
            }
        }
    }
}
