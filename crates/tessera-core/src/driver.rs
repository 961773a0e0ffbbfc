//! The one driver: runs a sans-IO [`Session`] over a [`Link`] to its end, for every transport.
//!
//! A transport implements [`Link`] (send an envelope, receive the next protocol message within
//! an idle timeout, carry the finish's control messages); [`drive`] does the rest, the same way
//! everywhere: it starts the session, sends what it produces, hands every received message to
//! it together with the sender the link authenticated, reports each completed round, and maps
//! a failed check to an error that names the misbehaving party. The in-process runner
//! ([`crate::runner`]), the server's WebSocket, the device's WebSocket and the device-to-device
//! mesh are links; none of them holds protocol logic.
//!
//! [`CoordinatorPending`] and [`await_pending`] are the two sides of the two-phase finish of a
//! run whose output replaces stored state (a refresh), one state per step as in rustls'
//! handshake: the coordinator stores its result as pending and announces it; each participant
//! stores its own as pending and commits; once every participant committed, the coordinator
//! switches and says so; then the participants switch.
//! A crash at any point leaves every party holding the old state as current and, at most, the
//! new one as pending (or the new one as current on the coordinator, which the next session
//! settles): no party ever switches to a state another party may not hold.
//!
//! Nothing here needs an async runtime: [`Link`]'s futures are whatever the transport's are
//! (tokio's for sockets, always-ready ones in process), and the idle timeout is the link's to
//! enforce, given as a duration.

use std::future::Future;
use std::time::Duration;

use crate::envelope::Envelope;
use crate::error::Error;
use crate::session::Session;
use crate::types::PartyIndex;

/// A control message of the two-phase finish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// The coordinator stored the new state (epoch) as pending.
    Pending(u64),
    /// A participant stored the new state (epoch) as pending too.
    Commit(u64),
    /// The coordinator switched to the new state: participants may switch.
    Switched,
}

/// One party's transport to the other parties of a run.
pub trait Link {
    /// The transport's error (a closed connection, a message that is not a protocol message...).
    type Error;

    /// Sends `envelope` to its recipient (`envelope.to`).
    fn send(&mut self, envelope: &Envelope) -> impl Future<Output = Result<(), Self::Error>>;

    /// The next protocol message and the party the transport authenticated as its sender;
    /// `Ok(None)` when `idle` (if any) passed without one. Transport-level traffic (pings) is
    /// the link's and does not end the wait.
    fn recv(
        &mut self,
        idle: Option<Duration>,
    ) -> impl Future<Output = Result<Option<(PartyIndex, Vec<u8>)>, Self::Error>>;

    /// Sends a control message of the two-phase finish (to every other party).
    fn send_control(&mut self, control: Control) -> impl Future<Output = Result<(), Self::Error>>;

    /// The next control message, from `from` (the coordinator, or a participant). `Ok(None)`
    /// when `idle` (if any) passed without one.
    fn recv_control(
        &mut self,
        from: PartyIndex,
        idle: Option<Duration>,
    ) -> impl Future<Output = Result<Option<Control>, Self::Error>>;
}

/// Why a driven run ended without its output.
#[derive(Debug)]
pub enum DriveError<E> {
    /// The transport failed (its own error: closed, malformed frame...).
    Link(E),
    /// The progress hook stopped the run.
    Stopped(E),
    /// No message for the idle timeout.
    Expired,
    /// The engine proved that `party` misbehaved in `round`: refuse it from now on.
    Blamed {
        /// The misbehaving party.
        party: PartyIndex,
        /// The round the session was waiting for.
        round: u8,
        /// What the engine found.
        reason: String,
    },
    /// A message from `from` failed a check (wrong session, round, sender, malformed...), or
    /// the session failed otherwise.
    Rejected {
        /// The sender the link authenticated.
        from: Option<PartyIndex>,
        /// The session's error.
        error: Error,
    },
    /// The finish's control messages did not agree (another epoch, an unexpected message).
    Finish(String),
}

impl<E: std::fmt::Display> std::fmt::Display for DriveError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DriveError::Link(e) | DriveError::Stopped(e) => e.fmt(f),
            DriveError::Expired => f.write_str("no message for the idle timeout"),
            DriveError::Blamed { party, reason, .. } => {
                write!(
                    f,
                    "{}",
                    Error::PartyMisbehaved {
                        party: *party,
                        reason: reason.clone(),
                    }
                )
            }
            DriveError::Rejected { error, .. } => error.fmt(f),
            DriveError::Finish(m) => f.write_str(m),
        }
    }
}

impl<E> DriveError<E> {
    fn rejected(from: Option<PartyIndex>, round: u8, error: Error) -> Self {
        match error {
            Error::PartyMisbehaved { party, reason } => DriveError::Blamed {
                party,
                round,
                reason,
            },
            error => DriveError::Rejected { from, error },
        }
    }
}

/// Runs `session` over `link` to its end and returns its output.
///
/// `on_round(r, total)` is called once for each round `r` the session completed, in order, the
/// last one (`total`) when the output is ready; an error from it stops the run. `idle` is the
/// longest wait for a protocol message (`None`: the link's own limits); it restarts whenever
/// a message was handled and its answers sent.
///
/// # Errors
/// [`DriveError`]: the link's, the hook's, an idle timeout, a party the engine blamed or a
/// message the session rejected.
pub async fn drive<S: Session, L: Link>(
    session: &mut S,
    link: &mut L,
    idle: Option<Duration>,
    mut on_round: impl FnMut(u8, u8) -> Result<(), L::Error>,
) -> Result<S::Output, DriveError<L::Error>> {
    let total = session.total_rounds();
    let mut reported = 0u8;
    let mut outgoing = session
        .start()
        .map_err(|e| DriveError::rejected(None, 0, e))?;
    loop {
        for envelope in outgoing.drain(..) {
            link.send(&envelope).await.map_err(DriveError::Link)?;
        }
        // A round is complete once the session waits for a later one.
        let completed = if session.is_finished() {
            total
        } else {
            session.round().saturating_sub(1)
        };
        while reported < completed {
            reported += 1;
            on_round(reported, total).map_err(DriveError::Stopped)?;
        }
        if session.is_finished() {
            break;
        }
        let Some((from, bytes)) = link.recv(idle).await.map_err(DriveError::Link)? else {
            return Err(DriveError::Expired);
        };
        let round = session.round();
        outgoing = session
            .receive_bytes(from, &bytes)
            .map_err(|e| DriveError::rejected(Some(from), round, e))?;
    }
    session.take_output().ok_or(DriveError::Rejected {
        from: None,
        error: Error::Aborted("the session finished without output".into()),
    })
}

/// The two-phase finish, coordinator side, once its new state (`epoch`) is durably stored as
/// pending: [`CoordinatorPending::collect_commits`] announces it and waits for every
/// participant's commit; then switch, durably, and [`AllCommitted::announce_switch`].
#[derive(Debug)]
#[must_use]
pub struct CoordinatorPending {
    epoch: u64,
}

impl CoordinatorPending {
    /// Call once the new state of `epoch` is durably stored as pending.
    pub fn stored(epoch: u64) -> Self {
        CoordinatorPending { epoch }
    }

    /// Announces the pending epoch and waits for each of `participants` to commit it.
    ///
    /// # Errors
    /// The link's, [`DriveError::Expired`], or [`DriveError::Finish`] naming the participant
    /// that answered with anything but the commit of this epoch.
    pub async fn collect_commits<L: Link>(
        self,
        link: &mut L,
        participants: &[PartyIndex],
        idle: Option<Duration>,
    ) -> Result<AllCommitted, DriveError<L::Error>> {
        let epoch = self.epoch;
        link.send_control(Control::Pending(epoch))
            .await
            .map_err(DriveError::Link)?;
        for &p in participants {
            match link.recv_control(p, idle).await.map_err(DriveError::Link)? {
                None => return Err(DriveError::Expired),
                Some(Control::Commit(e)) if e == epoch => {}
                Some(other) => {
                    return Err(DriveError::Finish(format!(
                        "party {p} answered {other:?}, not the commit of epoch {epoch}"
                    )));
                }
            }
        }
        Ok(AllCommitted { epoch })
    }
}

/// Every participant holds the new state as pending: switch to it durably, then
/// [`AllCommitted::announce_switch`].
#[derive(Debug)]
#[must_use]
pub struct AllCommitted {
    epoch: u64,
}

impl AllCommitted {
    /// The epoch every party holds as pending.
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Call once switched, durably: tells the participants to switch.
    ///
    /// # Errors
    /// The link's.
    pub async fn announce_switch<L: Link>(self, link: &mut L) -> Result<(), DriveError<L::Error>> {
        link.send_control(Control::Switched)
            .await
            .map_err(DriveError::Link)
    }
}

/// The two-phase finish, participant side: waits for the coordinator to announce `epoch` as
/// pending; then store the new state as pending, durably, and [`PendingAnnounced::commit`].
///
/// # Errors
/// The link's, [`DriveError::Expired`], or [`DriveError::Finish`] when the coordinator
/// announced anything else.
pub async fn await_pending<L: Link>(
    link: &mut L,
    coordinator: PartyIndex,
    epoch: u64,
    idle: Option<Duration>,
) -> Result<PendingAnnounced, DriveError<L::Error>> {
    match link
        .recv_control(coordinator, idle)
        .await
        .map_err(DriveError::Link)?
    {
        None => Err(DriveError::Expired),
        Some(Control::Pending(e)) if e == epoch => Ok(PendingAnnounced { epoch, coordinator }),
        Some(other) => Err(DriveError::Finish(format!(
            "the coordinator announced {other:?}, not epoch {epoch} as pending"
        ))),
    }
}

/// The coordinator holds `epoch` as pending.
#[derive(Debug)]
#[must_use]
pub struct PendingAnnounced {
    epoch: u64,
    coordinator: PartyIndex,
}

impl PendingAnnounced {
    /// Call once the new state is durably stored as pending: commits it.
    ///
    /// # Errors
    /// The link's.
    pub async fn commit<L: Link>(self, link: &mut L) -> Result<Committed, DriveError<L::Error>> {
        link.send_control(Control::Commit(self.epoch))
            .await
            .map_err(DriveError::Link)?;
        Ok(Committed {
            epoch: self.epoch,
            coordinator: self.coordinator,
        })
    }
}

/// This participant committed: wait for the coordinator's switch, then switch.
#[derive(Debug)]
#[must_use]
pub struct Committed {
    epoch: u64,
    coordinator: PartyIndex,
}

impl Committed {
    /// Waits until the coordinator switched; the caller then switches to the epoch.
    ///
    /// # Errors
    /// The link's, [`DriveError::Expired`], or [`DriveError::Finish`] for another message.
    pub async fn await_switch<L: Link>(
        self,
        link: &mut L,
        idle: Option<Duration>,
    ) -> Result<u64, DriveError<L::Error>> {
        match link
            .recv_control(self.coordinator, idle)
            .await
            .map_err(DriveError::Link)?
        {
            None => Err(DriveError::Expired),
            Some(Control::Switched) => Ok(self.epoch),
            Some(other) => Err(DriveError::Finish(format!(
                "the coordinator answered {other:?}, not the switch"
            ))),
        }
    }
}
