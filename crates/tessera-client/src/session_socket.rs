//! A device's link in a session of several parties through the server: one WebSocket, on which
//! the device writes each session frame ([`tessera_api::session_frame`]) behind the index of
//! the party it is for, and reads the frames the others sent it, their sender in the header
//! (written by the server, which authenticated each party's socket). [`SocketLink`] is the one
//! driver's [`Link`] over it: every frame read is checked ([`Peers`]: a known version and kind,
//! a sender that is a peer, parts that join into at most an envelope, no flood of controls,
//! nothing after a peer's end), and a party's end other than "finished" ends the run naming it.
//!
//! The server's side is `tessera_server::session_pump`.

use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tessera_api::session_frame::{End, Fault, Peers, addressed, message_frames};
use tessera_core::driver::{Control, Link};
use tessera_core::{Envelope, PartyIndex};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::error::{ClientError, Result, net};

/// How long [`SocketLink::end`] waits for the server's close.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Party `me`'s link to the other parties of a session, over `socket`.
pub struct SocketLink<S> {
    socket: S,
    peers: Peers,
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
        })
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
        let frames =
            message_frames(me, &envelope.to_bytes()).map_err(|e| Fault::Invalid(e.to_string()))?;
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
            if let Some(message) = self.peers.absorb(frame)? {
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
            if let Some((party, message)) = self.peers.absorb(frame)? {
                self.peers.keep_message(party, message)?;
            }
        }
    }
}
