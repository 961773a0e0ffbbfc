//! Graceful shutdown: on SIGTERM or SIGINT the server stops accepting connections, lets the
//! running protocol sessions finish for a grace period, then closes what is left with
//! [`CLOSE_GOING_AWAY`] and stops.
//!
//! What is waited for: every protocol socket (a 2-of-2 run, a party's socket in a session of a
//! structure wallet, a relay between two devices) and every run of the server's own party in a
//! session of a structure wallet, each counted by a [`Tracked`] guard for as long as it lives.
//! A run closed at the end of the grace period fails like a disconnect: its row and audit
//! records are written before the close frame leaves, and a refresh or resharing that had not
//! switched keeps the old epoch usable on every side (the two-phase switch, `ws::commit_refresh`),
//! so no share is lost whichever moment the signal comes. A relay is cut (its bytes are the two
//! devices' own encrypted channel, which they restart).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// The WebSocket close code of a session the server ended because it is shutting down
/// (RFC 6455 §7.4.1, "going away"). A device may start the operation again against another
/// replica, or once the server is back.
pub const CLOSE_GOING_AWAY: u16 = 1001;

/// Default grace period: how long running sessions may take to finish after the signal.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// How long the sessions closed at the end of the grace period get to record their end and
/// finish their closing handshakes.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Where the server is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Serving.
    Serving,
    /// Asked to stop: no new connections; running sessions may finish.
    Draining,
    /// The grace period is over: the sessions still running are being closed.
    Closing,
}

/// The server's shutdown state, shared by every handler (one per process).
#[derive(Debug)]
pub struct Shutdown {
    phase: watch::Sender<Phase>,
    live: watch::Sender<usize>,
    since: OnceLock<Instant>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            phase: watch::Sender::new(Phase::Serving),
            live: watch::Sender::new(0),
            since: OnceLock::new(),
        }
    }
}

/// How the running sessions ended at shutdown, counted as [`Shutdown::track`] counts them
/// (each protocol socket, and each run of the server's own party).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Drained {
    /// Protocol sockets and server runs alive when the signal came.
    pub running: usize,
    /// Of those, the ones still running at the end of the grace period, closed with
    /// [`CLOSE_GOING_AWAY`].
    pub closed: usize,
}

impl Shutdown {
    /// The current phase.
    #[must_use]
    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Starts draining (once; later calls change nothing).
    pub fn begin_draining(&self) {
        self.since.get_or_init(Instant::now);
        self.phase.send_if_modified(|phase| {
            let serving = *phase == Phase::Serving;
            if serving {
                *phase = Phase::Draining;
            }
            serving
        });
    }

    /// Protocol sockets and server runs alive now.
    #[must_use]
    pub fn live(&self) -> usize {
        *self.live.borrow()
    }

    /// Counts a protocol socket or a server run (`kind`, a metrics label) until the guard drops.
    pub fn track(&self, kind: &'static str) -> Tracked<'_> {
        self.live.send_modify(|n| *n += 1);
        metrics::gauge!(crate::observe::OPEN_SOCKETS, "kind" => kind).increment(1.0);
        Tracked {
            live: &self.live,
            kind,
        }
    }

    /// The phase, to watch (a server run's mailbox link ends itself once it is
    /// [`Phase::Closing`]).
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// When the grace period counted from the signal ends (`None` before the signal).
    #[must_use]
    pub fn grace_ends(&self, grace: Duration) -> Option<Instant> {
        self.since.get().map(|since| *since + grace)
    }

    /// Completes once the grace period is over and the sessions still running must close.
    pub async fn closing(&self) {
        let mut phase = self.phase.subscribe();
        // The sender lives as long as `self`: `wait_for` only returns once the phase is reached.
        let _ = phase.wait_for(|p| *p == Phase::Closing).await;
    }

    /// After [`Shutdown::begin_draining`]: waits until every tracked socket and run ended or
    /// `grace` (counted from the signal) passed; then closes the rest and waits a few seconds
    /// for them to record their end.
    pub async fn drain(&self, grace: Duration) -> Drained {
        let since = *self.since.get_or_init(Instant::now);
        let running = self.live();
        let mut live = self.live.subscribe();
        let deadline = tokio::time::Instant::from_std(since + grace);
        if tokio::time::timeout_at(deadline, live.wait_for(|n| *n == 0))
            .await
            .is_ok()
        {
            return Drained { running, closed: 0 };
        }
        let closed = self.live();
        self.phase.send_replace(Phase::Closing);
        let _ = tokio::time::timeout(CLOSE_WAIT, live.wait_for(|n| *n == 0)).await;
        Drained { running, closed }
    }
}

/// A protocol socket or a server run, counted while it lives.
#[must_use]
pub struct Tracked<'a> {
    live: &'a watch::Sender<usize>,
    kind: &'static str,
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        self.live.send_modify(|n| *n = n.saturating_sub(1));
        metrics::gauge!(crate::observe::OPEN_SOCKETS, "kind" => self.kind).decrement(1.0);
    }
}

/// Completes on the first SIGTERM or SIGINT.
///
/// # Errors
/// When the signal handlers cannot be installed.
pub fn signals() -> std::io::Result<impl Future<Output = &'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}
