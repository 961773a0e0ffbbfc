//! Fixtures shared by the fuzz targets (see `fuzz/README.md`).
//!
//! The protocol targets are structure-aware: [`Rounds`] runs the honest parties of a real run up
//! to round `r`, holds back, for each party, the one envelope of round `r` it still waits for, and
//! lets the fuzzer write that envelope's payload behind its valid header. The victim therefore
//! gets past every header check and parses (and, when the payload parses, computes on) the
//! fuzzed bytes in the state the protocol really has at that round.
//!
//! Invariants the fixture asserts after every input:
//! - a payload that is only checked (`check_only`, the checks `receive` makes before it keeps
//!   anything) is rejected naming its sender or accepted, and the victim stays in its round;
//! - a rejected payload is rejected naming its sender, and leaves the victim in the round it
//!   was in;
//! - now and then (every [`HONEST_CHECK_EVERY`]-th rejection) the held-back honest envelope is
//!   delivered after the rejection and must be accepted: a rejected message changed nothing.
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::VecDeque;
use std::sync::OnceLock;

use tessera_core::{
    DerivationPath, Envelope, Error, KeyShare, KeygenSession, PartyIndex, RefreshSession, Session,
    SignRequest, SignSession, Threshold, WalletId, runner,
};

/// How often a rejection is followed by the honest message (which then must be accepted).
pub const HONEST_CHECK_EVERY: u64 = 64;

/// The nonce of every fixture run, so that keygen session ids (and so the seeds of the
/// `envelope` target) are the same in every process.
pub const NONCE: [u8; 32] = [7; 32];
/// The wallet id of the keygen fixtures.
pub const WALLET: WalletId = WalletId::from_bytes([9; 16]);

#[must_use]
pub fn p(i: u8) -> PartyIndex {
    PartyIndex::new(i)
}

/// The two wallet shapes every protocol target covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    TwoOfTwo,
    TwoOfThree,
}

impl Shape {
    #[must_use]
    pub fn threshold(self) -> Threshold {
        match self {
            Shape::TwoOfTwo => Threshold::new(2, 2).unwrap(),
            Shape::TwoOfThree => Threshold::new(2, 3).unwrap(),
        }
    }
}

/// One key generation per shape and process (seconds, once), for the sign and refresh targets.
#[must_use]
pub fn shares(shape: Shape) -> &'static [KeyShare] {
    static TWO: OnceLock<Vec<KeyShare>> = OnceLock::new();
    static THREE: OnceLock<Vec<KeyShare>> = OnceLock::new();
    let cell = match shape {
        Shape::TwoOfTwo => &TWO,
        Shape::TwoOfThree => &THREE,
    };
    cell.get_or_init(|| runner::keygen(shape.threshold()).expect("fixture keygen"))
}

/// Every party's session of a keygen of `shape`.
#[must_use]
pub fn keygen_sessions(shape: Shape) -> Vec<KeygenSession> {
    let threshold = shape.threshold();
    threshold
        .parties()
        .map(|me| KeygenSession::new(WALLET, threshold, me, &NONCE).unwrap())
        .collect()
}

/// The sessions of parties 0 and 1 signing a fixed digest.
#[must_use]
pub fn sign_sessions(shape: Shape) -> Vec<SignSession> {
    let shares = shares(shape);
    let request = SignRequest {
        nonce: NONCE,
        signers: vec![p(0), p(1)],
        digest: [0x42; 32],
        path: DerivationPath::root(),
    };
    shares[..2]
        .iter()
        .map(|s| SignSession::new(s, &request).unwrap())
        .collect()
}

/// Every party's session of a refresh.
#[must_use]
pub fn refresh_sessions(shape: Shape) -> Vec<RefreshSession> {
    shares(shape)
        .iter()
        .map(|s| RefreshSession::new(s, &NONCE).unwrap())
        .collect()
}

/// A victim waiting in `round` for one last envelope, which is held back.
pub struct Prepared<S: Session> {
    pub victim: S,
    /// The honest envelope the victim waits for (from its highest peer).
    pub held: Envelope,
}

/// Runs `sessions` honestly until every party waits in `round` for its last envelope of that
/// round (the one from its highest peer, held back); every other envelope of `round` is
/// delivered, later rounds are never reached. One victim per party, in the sessions' order:
/// the parties' roles differ (in DKLs23's multiplication, the lower index of a pair is the OT
/// receiver), so each one's parsers are fuzzed.
///
/// # Panics
/// When the honest run fails (a bug the fuzzer did not cause).
#[must_use]
pub fn prepare<S: Session>(mut sessions: Vec<S>, round: u8) -> Vec<Prepared<S>> {
    let mut queue: VecDeque<Envelope> = VecDeque::new();
    for s in &mut sessions {
        queue.extend(s.start().expect("start"));
    }
    let mut last_round: Vec<Envelope> = Vec::new();
    while let Some(e) = queue.pop_front() {
        if e.round > round {
            continue;
        }
        if e.round == round {
            last_round.push(e);
            continue;
        }
        let to = sessions
            .iter_mut()
            .find(|s| s.party() == e.to)
            .expect("recipient");
        queue.extend(to.receive(e.from, e).expect("honest run"));
    }
    last_round.sort_by_key(|e| (e.to, e.from));
    sessions
        .into_iter()
        .map(|mut victim| {
            let me = victim.party();
            let mut mine: Vec<Envelope> =
                last_round.iter().filter(|e| e.to == me).cloned().collect();
            let held = mine
                .pop()
                .expect("an envelope of that round for every party");
            for e in mine {
                let out = victim.receive(e.from, e).expect("honest run");
                assert!(
                    out.is_empty(),
                    "the round completed without its last envelope"
                );
            }
            assert_eq!(
                victim.round(),
                round,
                "the victim is not in the round prepared"
            );
            Prepared { victim, held }
        })
        .collect()
}

/// The session types whose rounds are fuzzed: [`Session`] and the `fuzzing` feature's
/// `check_only`.
pub trait Checked: Session {
    /// The checks of `receive` without keeping the envelope or running the round.
    ///
    /// # Errors
    /// As `receive`'s validation errors.
    fn check_only(&self, sender: PartyIndex, envelope: &Envelope) -> tessera_core::Result<()>;
}

macro_rules! checked {
    ($($t:ty),*) => {$(
        impl Checked for $t {
            fn check_only(
                &self,
                sender: PartyIndex,
                envelope: &Envelope,
            ) -> tessera_core::Result<()> {
                <$t>::check_only(self, sender, envelope)
            }
        }
    )*};
}
checked!(KeygenSession, SignSession, RefreshSession);

/// One prepared victim per party of a slot; a victim used up is `None` until the next refill.
type Pool<S> = Vec<Option<Prepared<S>>>;

/// The selector bit that delivers the payload (the round runs on it when it parses); without
/// it, the payload only goes through the checks (`check_only`), which leave the victim as it is.
pub const DELIVER: u8 = 0x80;

/// A protocol target: for each (shape, round) a victim prepared once and reused for as long
/// as the fuzzed payloads are rejected without changing it.
///
/// An input's first byte selects the slot (its low seven bits) and the mode ([`DELIVER`]).
/// Checking alone costs one parse, so most inputs go through a round's parser thousands of
/// times a second; a delivered payload that parses runs the round's cryptography, after which
/// the victim must be prepared again (seconds for keygen's and refresh's later rounds).
pub struct Rounds<S: Checked> {
    make: fn(Shape) -> Vec<S>,
    /// Per (shape, round): a pool with one prepared victim per party (taken ones are `None`).
    slots: Vec<(Shape, u8, Pool<S>)>,
    rejections: u64,
}

impl<S: Checked> Rounds<S> {
    /// Slots for every round of `make`'s protocol in both shapes.
    #[must_use]
    pub fn new(make: fn(Shape) -> Vec<S>) -> Self {
        let rounds = make(Shape::TwoOfTwo)[0].total_rounds();
        let mut slots = Vec::new();
        for shape in [Shape::TwoOfTwo, Shape::TwoOfThree] {
            for r in 1..=rounds {
                slots.push((shape, r, Vec::new()));
            }
        }
        Rounds {
            make,
            slots,
            rejections: 0,
        }
    }

    /// How many (shape, round) slots there are: a seed's first byte selects one.
    #[must_use]
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// The (shape, round) of slot `i`.
    #[must_use]
    pub fn slot(&self, i: usize) -> (Shape, u8) {
        (self.slots[i].0, self.slots[i].1)
    }

    /// Delivers `data[1..]` as the payload of the held-back envelope of the slot and party that
    /// `data[0]` selects.
    pub fn run(&mut self, data: &[u8]) {
        let Some((&selector, payload)) = data.split_first() else {
            return;
        };
        let (index, party) = self.select(selector);
        let (shape, round, pool) = &mut self.slots[index];
        if pool.get(party).is_none_or(Option::is_none) {
            // Refill the pool from one honest run; victims still unused stay.
            let fresh = prepare((self.make)(*shape), *round);
            if pool.is_empty() {
                pool.resize_with(fresh.len(), || None);
            }
            for (slot, new) in pool.iter_mut().zip(fresh) {
                if slot.is_none() {
                    *slot = Some(new);
                }
            }
        }
        let party = party % pool.len();
        let entry = &mut pool[party];
        let prepared = entry.as_mut().expect("prepared above");
        let sender = prepared.held.from;
        let mut fuzzed = prepared.held.clone();
        fuzzed.payload = payload.to_vec();
        if selector & DELIVER == 0 {
            if let Err(e) = prepared.victim.check_only(sender, &fuzzed) {
                assert_eq!(
                    e.party(),
                    Some(sender),
                    "a rejection names another party: {e}"
                );
            }
            assert_eq!(
                prepared.victim.round(),
                *round,
                "checking changed the round"
            );
            return;
        }
        match prepared.victim.receive(sender, fuzzed) {
            Err(Error::InvalidMessage { party, .. } | Error::EpochMismatch { party, .. }) => {
                // Rejected while parsing: named, and nothing changed.
                assert_eq!(party, sender, "a rejection names another party");
                assert_eq!(
                    prepared.victim.round(),
                    *round,
                    "a rejection changed the round"
                );
                assert!(!prepared.victim.is_finished());
                self.rejections += 1;
                if self.rejections.is_multiple_of(HONEST_CHECK_EVERY) {
                    let honest = prepared.held.clone();
                    let result = prepared.victim.receive(sender, honest);
                    assert!(
                        result.is_ok(),
                        "the honest message was refused after a rejected one: {result:?}"
                    );
                    *entry = None;
                }
            }
            Err(e) => {
                // Parsed, then failed in the cryptography (or blamed): the run is over, and the
                // error must name the sender where it names anybody.
                if let Some(party) = e.party() {
                    assert_eq!(party, sender, "a failure blames another party: {e}");
                }
                *entry = None;
            }
            Ok(_) => {
                // The fuzzer found a payload the round accepts (e.g. the honest one): the
                // victim moved on, so prepare a new one next time.
                *entry = None;
            }
        }
    }

    /// The slot and the party (an index into the slot's victims) a selector byte picks.
    fn select(&self, selector: u8) -> (usize, usize) {
        let low = usize::from(selector & !DELIVER);
        (low % self.slots.len(), low / self.slots.len())
    }

    /// The honest payloads of every slot, each behind its selector byte, checked and delivered:
    /// the seed corpus.
    #[must_use]
    pub fn seeds(&mut self) -> Vec<Vec<u8>> {
        let mut seeds = Vec::new();
        for i in 0..self.slots.len() {
            let (shape, round) = self.slot(i);
            for (party, prepared) in prepare((self.make)(shape), round).iter().enumerate() {
                let low = u8::try_from(i + party * self.slots.len()).unwrap();
                assert_eq!(low & DELIVER, 0, "too many slots for one selector byte");
                assert_eq!(self.select(low), (i, party));
                for mode in [0, DELIVER] {
                    let mut seed = vec![low | mode];
                    seed.extend_from_slice(&prepared.held.payload);
                    seeds.push(seed);
                }
            }
        }
        seeds
    }
}

/// The keygen victim of the `envelope` target: party 0 of a 2-of-2 keygen in round 1, whose
/// session id is fixed by [`NONCE`] and [`WALLET`].
#[must_use]
pub fn envelope_victim() -> Prepared<KeygenSession> {
    prepare(keygen_sessions(Shape::TwoOfTwo), 1).swap_remove(0)
}

/// Splits `data` into chunks, each preceded by a one-byte length (the fuzzer's way to make a
/// sequence of messages).
#[must_use]
pub fn chunks(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some((&len, rest)) = data.split_first() {
        let len = usize::from(len).min(rest.len());
        out.push(&rest[..len]);
        data = &rest[len..];
    }
    out
}

/// Splits `data` into frames, each preceded by a two-byte big-endian length (frames longer than
/// a chunk's 255 bytes); a length past the end takes what is left.
#[must_use]
pub fn frames(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let [a, b, rest @ ..] = data {
        let len = usize::from(u16::from_be_bytes([*a, *b])).min(rest.len());
        out.push(&rest[..len]);
        data = &rest[len..];
    }
    out
}
