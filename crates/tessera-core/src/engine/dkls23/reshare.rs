//! Resharing a wallet's key from an authorised quorum of its structure to a new structure, and
//! refresh under a structure (a resharing to the same structure).
//!
//! The scheme is Desmedt and Jajodia's redistribution of a shared secret to a new access
//! structure (Y. Desmedt, S. Jajodia, "Redistributing secret shares to new access structures and
//! its applications", Technical Report ISSE-TR-97-01, George Mason University, 1997): each member
//! `i` of an authorised quorum `Q` of the old structure turns its share `x_i` into its additive
//! share `a_i = λ_i^Q·x_i` (the old structure's reconstruction coefficient for `Q`,
//! [`crate::structure::Quorum`]; for a t-of-n wallet the Shamir Lagrange coefficient) and deals
//! `a_i` down the new structure; new party `j`'s share is the sum `y_j = Σ_i s_ij` of the
//! sub-shares dealt to it. (Desmedt–Jajodia and Wong–Wang–Wing have each old holder deal its
//! share `x_i` itself and the new holders weight the sub-shares by `λ_i^Q`; dealing `λ_i^Q·x_i`
//! instead is the same by linearity, and lets the new shares be plain sums.) The sharing down a
//! structure is Benaloh–Leichter's ([`crate::structure::sharing`]), which generalises the
//! threshold sharing of both papers to the structure's `and`/`or`/`threshold` nodes. Since
//! `Σ_i a_i` is the key and every dealing reconstructs to its constant term, the new shares are
//! a sharing of the same key under the new structure, and they are independent of the old ones
//! (each dealer's sharing polynomials are fresh), so old shares do not combine with new ones.
//!
//! Every dealing is verifiable as in Wong, Wang and Wing's verifiable redistribution (T. M. Wong,
//! C. Wang, J. M. Wing, "Verifiable secret redistribution for archive systems", IEEE Security in
//! Storage Workshop 2002): the dealing is public in the exponent (Feldman commitments,
//! [`crate::structure::sharing`]); each new party checks its sub-share against the dealer's
//! commitments, and every party checks that the dealer's constant-term point is `λ_i^Q·X_i`, `X_i`
//! the dealer's verifying share at the old epoch — so a dealer cannot change the key, and one
//! that tries is named ([`Error::PartyMisbehaved`]). Wong–Wang–Wing's check that the dealers'
//! constant terms themselves reconstruct the old secret in the exponent is the check
//! `Σ_i λ_i^Q·X_i = pk`; here the old verifying shares are checked to combine to the public key
//! under every minimal quorum before the run starts ([`WalletPublic::validate`]), and the dealt
//! constant terms must add up to the public key. Where the old shares carry no verifying shares
//! (a t-of-n wallet), a wrong constant term is still caught by that sum — the key cannot change —
//! but not attributed to a dealer. The new verifying shares are `Y_j = Σ_i leaf_j(dealing_i)`.
//!
//! The new parties also need the DKLs23 pairwise set-up (zero-share seeds and OT-based
//! multiplication for every pair): they run the engine's key generation n-of-n among themselves
//! ([`Setup`]) with each one's engine share fixed to `y_j` ([`Setup::fix_share`]); the engine's
//! proof of knowledge of each share must prove `Y_j`. The chain code stays the wallet's, so every
//! BIP-32 child key stays the same.
//!
//! Parties of one run: the new structure's parties (run index = their index in the new
//! structure), then the old quorum's members that are not in the new structure (by label), in
//! old-structure order. A quorum member in the new structure is one party with both roles. The
//! session id binds the nonce, the wallet, its public key, chain code, epoch, old structure and
//! verifying shares, the quorum, the new structure and this mapping (see
//! `crate::protocols::ReshareSession`); envelopes carry [`crate::Protocol::Refresh`].
//!
//! | round | dealer → every party | new party → new party |
//! |---|---|---|
//! | 1 | epoch; hash commitment to its public dealing; to a new party, its sub-share (secret) | engine keygen round 1 |
//! | 2 | its public dealing (node points, Feldman commitments) | engine round 2 |
//! | 3 | (every party) echo: hash of every dealing as received | engine round 3 (proofs of `y_j`) |
//! | 4 | (departing parties: an empty message) | engine round 4 (confirmation) |
//!
//! The dealing is committed to in round 1, when the sub-shares are sent, and opened in round 2
//! (as in [`super::structure_setup`]). After round 2 every party checks, for every dealer: the
//! opening matches the commitment, the dealing has the new structure's shape with commitments of
//! exactly degree `k − 1` and adds up ([`PublicDealing::verify`]), its constant term is
//! `λ_i^Q·X_i`, and (new parties) the sub-share it received matches the dealer's leaf point; any
//! failure names the dealer. After round 3 the echoes must agree, and every new party's proven
//! share point must be `Y_j`.

use std::collections::{BTreeMap, BTreeSet};

use k256::{AffinePoint, ProjectivePoint, Scalar};
use serde::{Deserialize, Serialize};

use zeroize::{Zeroize, Zeroizing};

use super::Check;
use super::setup::{Message as EngineMessage, Setup};
use crate::ecdsa::PublicKey;
use crate::error::{Error, Result};
use crate::session::{Advance, Outgoing, Rounds, decode, encode};
use crate::share::{KeyShare, StructureKey, WalletPublic};
use crate::structure::sharing::{PublicDealing, deal};
use crate::structure::{Quorum, WalletStructure};
use crate::types::{PartyIndex, SessionContext, SessionId, Threshold};

type Hash = [u8; 32];

/// Who takes part in a resharing and how: agreed by all its parties.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub(crate) old: WalletPublic,
    pub(crate) quorum: Quorum,
    pub(crate) new_structure: WalletStructure,
    /// Old quorum members not in the new structure, in old order: run index `n' + position`.
    departing: Vec<PartyIndex>,
}

impl Plan {
    /// Checks `old` and that `quorum` (old party indices) is a minimal authorised quorum of it.
    pub(crate) fn new(
        old: WalletPublic,
        quorum: &[PartyIndex],
        new_structure: WalletStructure,
    ) -> Result<Self> {
        old.validate()?;
        let quorum = old.structure.check_quorum(quorum)?;
        let departing = quorum
            .members()
            .filter(|&p| {
                old.structure
                    .label(p)
                    .is_none_or(|l| new_structure.party(l).is_none())
            })
            .collect();
        Ok(Plan {
            old,
            quorum,
            new_structure,
            departing,
        })
    }

    fn new_count(&self) -> usize {
        self.new_structure.party_count()
    }

    /// Every party of the run, by run index.
    pub(crate) fn run_parties(&self) -> Vec<PartyIndex> {
        (0..self.new_count() + self.departing.len())
            .map(|i| PartyIndex::new(i as u8))
            .collect()
    }

    /// The run index of old party `old`, if it takes part (a quorum member, or a party whose
    /// label is in the new structure).
    pub(crate) fn run_index_of_old(&self, old: PartyIndex) -> Option<PartyIndex> {
        let label = self.old.structure.label(old)?;
        if let Some(p) = self.new_structure.party(label) {
            return Some(p);
        }
        let position = self.departing.iter().position(|&d| d == old)?;
        Some(PartyIndex::new((self.new_count() + position) as u8))
    }

    /// The old party index of the dealer at run index `run`, if that party deals.
    fn dealer_at(&self, run: PartyIndex) -> Option<PartyIndex> {
        let i = usize::from(run.get());
        let old = if i < self.new_count() {
            let label = self.new_structure.label(run)?;
            self.old.structure.party(label)?
        } else {
            *self.departing.get(i - self.new_count())?
        };
        self.quorum.coefficient(old).is_some().then_some(old)
    }

    fn is_new(&self, run: PartyIndex) -> bool {
        usize::from(run.get()) < self.new_count()
    }

    /// Binds everything the parties must agree on into `context`.
    pub(crate) fn bind<'a>(&self, context: SessionContext<'a>) -> SessionContext<'a> {
        let verifying: Vec<u8> = self
            .old
            .verifying_shares
            .iter()
            .flatten()
            .flat_map(PublicKey::to_compressed)
            .collect();
        let quorum: Vec<u8> = self.quorum.members().map(PartyIndex::get).collect();
        let departing: Vec<u8> = self.departing.iter().map(|p| p.get()).collect();
        context
            .field(b"tessera/reshare/v1")
            .field(&self.old.epoch.to_be_bytes())
            .field(&self.old.public_key.to_compressed())
            .field(&self.old.chain_code)
            .field(self.old.structure.to_string().as_bytes())
            .field(&verifying)
            .field(&quorum)
            .field(self.new_structure.to_string().as_bytes())
            .field(&departing)
    }
}

#[derive(Serialize, Deserialize)]
struct Wire1 {
    epoch: u64,
    dealing_commitment: Option<Hash>,
    sub_share: Option<Scalar>,
    engine: Option<serde_bytes::ByteBuf>,
}

impl Drop for Wire1 {
    fn drop(&mut self) {
        self.sub_share.zeroize();
    }
}

#[derive(Serialize, Deserialize)]
struct Wire2 {
    dealing: Option<PublicDealing>,
    engine: Option<serde_bytes::ByteBuf>,
}

#[derive(Serialize, Deserialize)]
struct Wire3 {
    echo: Hash,
    engine: Option<serde_bytes::ByteBuf>,
}

#[derive(Serialize, Deserialize)]
struct Wire4 {
    engine: Option<serde_bytes::ByteBuf>,
}

pub(crate) enum Message {
    R1 {
        dealing_commitment: Option<Hash>,
        sub_share: Option<Zeroizing<Scalar>>,
        engine: Option<EngineMessage>,
    },
    R2 {
        dealing: Option<Box<PublicDealing>>,
        engine: Option<EngineMessage>,
    },
    R3 {
        echo: Hash,
        engine: Option<EngineMessage>,
    },
    R4 {
        engine: Option<EngineMessage>,
    },
}

/// Our own dealing, when we deal.
struct OwnDealing {
    public: PublicDealing,
    commitment: Hash,
    /// Sub-share of new party `j` at index `j`.
    sub_shares: Vec<Zeroizing<Scalar>>,
}

/// Resharing rounds of one party (see the [module documentation](self)). Its output is the new
/// share, or `None` for a dealer that is not in the new structure.
pub(crate) struct Reshare {
    session_id: SessionId,
    me: PartyIndex,
    plan: Plan,
    /// The engine keygen among the new parties; `None` for a departing dealer.
    inner: Option<Setup>,
    own: Option<OwnDealing>,
    commitments: BTreeMap<PartyIndex, Hash>,
    sub_shares: BTreeMap<PartyIndex, Zeroizing<Scalar>>,
    dealings: BTreeMap<PartyIndex, PublicDealing>,
    echo: Hash,
    verifying_shares: Vec<AffinePoint>,
}

fn dealing_commitment(session_id: &SessionId, dealer: PartyIndex, dealing: &PublicDealing) -> Hash {
    dealing.commitment(b"tessera/reshare-dealing/v1", session_id, dealer)
}

fn dealings_echo(session_id: &SessionId, dealings: &BTreeMap<PartyIndex, PublicDealing>) -> Hash {
    PublicDealing::echo(b"tessera/reshare-dealings-echo/v1", session_id, dealings)
}

fn bytes(b: Option<Vec<u8>>) -> Option<serde_bytes::ByteBuf> {
    b.map(serde_bytes::ByteBuf::from)
}

impl Reshare {
    /// Party `me` (run index) of the run `plan`; `share` is our share at the old epoch when we
    /// deal (a member of the quorum), and is otherwise not needed.
    pub(crate) fn new(
        session_id: SessionId,
        me: PartyIndex,
        plan: Plan,
        share: Option<&KeyShare>,
    ) -> Result<Self> {
        let dealer = plan.dealer_at(me);
        let own = match (dealer, share) {
            (Some(old), Some(share)) => {
                if share.party != old
                    || share.epoch != plan.old.epoch
                    || share.public_key != plan.old.public_key
                {
                    return Err(Error::InvalidParameters(
                        "the share is not the dealer's at the epoch being reshared".into(),
                    ));
                }
                let coefficient = plan
                    .quorum
                    .coefficient(old)
                    .ok_or_else(Self::out_of_order)?;
                let additive = Zeroizing::new(*coefficient * share.engine.secret_scalar());
                let dealing = deal(&plan.new_structure, &additive)?;
                let commitment = dealing_commitment(&session_id, me, &dealing.public);
                Some(OwnDealing {
                    public: dealing.public,
                    commitment,
                    sub_shares: dealing.sub_shares,
                })
            }
            (Some(_), None) => {
                return Err(Error::InvalidParameters(
                    "a member of the quorum deals: its share is needed".into(),
                ));
            }
            (None, _) => None,
        };
        let inner = if plan.is_new(me) {
            let n = u8::try_from(plan.new_count())
                .map_err(|_| Error::InvalidParameters("too many parties".into()))?;
            Some(Setup::keygen(
                session_id,
                plan.old.wallet_id,
                me,
                Threshold::new(n, n)?,
            )?)
        } else {
            None
        };
        Ok(Reshare {
            session_id,
            me,
            plan,
            inner,
            own,
            commitments: BTreeMap::new(),
            sub_shares: BTreeMap::new(),
            dealings: BTreeMap::new(),
            echo: [0; 32],
            verifying_shares: Vec::new(),
        })
    }

    fn out_of_order() -> Error {
        Error::OutOfOrder("reshare phase called out of order")
    }

    fn misbehaved(party: PartyIndex, reason: impl std::fmt::Display) -> Error {
        Error::PartyMisbehaved {
            party,
            reason: reason.to_string(),
        }
    }

    fn peers(&self) -> impl Iterator<Item = PartyIndex> + '_ {
        self.plan
            .run_parties()
            .into_iter()
            .filter(|&p| p != self.me)
    }

    /// The engine's round: runs it when we are a new party (`engine` holding the new parties'
    /// messages) and returns its payloads.
    fn engine_round(
        &mut self,
        round: u8,
        engine: BTreeMap<PartyIndex, EngineMessage>,
    ) -> Result<Outgoing> {
        match &mut self.inner {
            Some(inner) => match inner.advance(round, engine)? {
                Advance::Send(out) => Ok(out),
                Advance::Done(_) => Err(Self::out_of_order()),
            },
            None => Ok(Outgoing::new()),
        }
    }

    /// Checks every dealing (after round 2) and derives the new verifying shares.
    fn check_dealings(&mut self) -> Result<()> {
        let structure = &self.plan.new_structure;
        let mut key = ProjectivePoint::IDENTITY;
        for (&dealer, dealing) in &self.dealings {
            if self.commitments.get(&dealer)
                != Some(&dealing_commitment(&self.session_id, dealer, dealing))
            {
                return Err(Self::misbehaved(
                    dealer,
                    "its dealing does not match the commitment it sent in round 1",
                ));
            }
            dealing
                .verify(structure)
                .map_err(|fault| Self::misbehaved(dealer, fault))?;
            let root = ProjectivePoint::from(*dealing.root().ok_or_else(Self::out_of_order)?);
            let old = self.plan.dealer_at(dealer).ok_or_else(Self::out_of_order)?;
            if let Some(verifying) = &self.plan.old.verifying_shares {
                let coefficient = self
                    .plan
                    .quorum
                    .coefficient(old)
                    .ok_or_else(Self::out_of_order)?;
                let x = verifying
                    .get(usize::from(old.get()))
                    .ok_or_else(Self::out_of_order)?;
                if root != ProjectivePoint::from(*x.as_affine()) * coefficient {
                    return Err(Self::misbehaved(
                        dealer,
                        "the constant term it dealt is not its additive share of the key",
                    ));
                }
            }
            if self.plan.is_new(self.me) {
                let sub_share = self
                    .sub_shares
                    .get(&dealer)
                    .ok_or_else(Self::out_of_order)?;
                dealing
                    .check_sub_share(structure, self.me, sub_share)
                    .map_err(|fault| Self::misbehaved(dealer, fault))?;
            }
            key += root;
        }
        if key.to_affine() != *self.plan.old.public_key.as_affine() {
            return Err(Error::Aborted(
                "the dealt constant terms do not add up to the wallet's public key".into(),
            ));
        }
        let mut verifying_shares = Vec::with_capacity(structure.party_count());
        for party in structure.parties() {
            let mut y = ProjectivePoint::IDENTITY;
            for dealing in self.dealings.values() {
                y += ProjectivePoint::from(
                    dealing
                        .leaf_point(structure, party)
                        .ok_or_else(Self::out_of_order)?,
                );
            }
            verifying_shares.push(y.to_affine());
        }
        self.verifying_shares = verifying_shares;
        Ok(())
    }

    fn finish(&mut self, mut share: KeyShare) -> Result<KeyShare> {
        if Some(&share.engine.public_share())
            != self.verifying_shares.get(usize::from(self.me.get()))
        {
            return Err(Error::Aborted(
                "our new share does not match our new verifying share".into(),
            ));
        }
        let public_key = self.plan.old.public_key;
        share.engine.set_public_key(*public_key.as_affine());
        share.engine.set_chain_code(self.plan.old.chain_code);
        share.public_key = public_key;
        share.epoch = self.plan.old.epoch + 1;
        share.structure = Some(StructureKey {
            structure: self.plan.new_structure.clone(),
            verifying_shares: self
                .verifying_shares
                .iter()
                .map(|p| PublicKey::from_affine(*p))
                .collect::<Result<_>>()?,
        });
        Ok(share)
    }
}

impl Rounds for Reshare {
    type Message = Message;
    type Output = Option<KeyShare>;
    const ROUNDS: u8 = 4;

    fn start(&mut self) -> Result<Outgoing> {
        let mut engine = match &mut self.inner {
            Some(inner) => inner.start()?,
            None => Outgoing::new(),
        };
        let mut out = Outgoing::new();
        let peers: Vec<PartyIndex> = self.peers().collect();
        for p in peers {
            let (dealing_commitment, sub_share) = match &self.own {
                Some(own) => (
                    Some(own.commitment),
                    own.sub_shares.get(usize::from(p.get())).map(|s| **s),
                ),
                None => (None, None),
            };
            let wire = Wire1 {
                epoch: self.plan.old.epoch,
                dealing_commitment,
                sub_share,
                engine: bytes(engine.remove(&p)),
            };
            out.insert(p, encode(&wire));
        }
        Ok(out)
    }

    fn parse(&self, round: u8, from: PartyIndex, payload: &[u8]) -> Result<Message> {
        let check = Check {
            round,
            from,
            me: self.me,
        };
        let with_engine = self.plan.is_new(self.me) && self.plan.is_new(from);
        let dealer = self.plan.dealer_at(from).is_some();
        let engine = |bytes: &Option<serde_bytes::ByteBuf>| -> Result<Option<EngineMessage>> {
            match (bytes, &self.inner, with_engine) {
                (Some(b), Some(inner), true) => Ok(Some(inner.parse(round, from, b)?)),
                (None, _, false) => Ok(None),
                _ => Err(check.fail(if with_engine {
                    "the engine's message is missing"
                } else {
                    "an engine message from or to a party that is not in the new structure"
                })),
            }
        };
        match round {
            1 => {
                let w: Wire1 = decode(round, from, payload)?;
                check.epoch(self.plan.old.epoch, w.epoch)?;
                let wants_sub_share = dealer && self.plan.is_new(self.me);
                if w.dealing_commitment.is_some() != dealer
                    || w.sub_share.is_some() != wants_sub_share
                {
                    return Err(check.fail(if dealer {
                        "a dealer's commitment or sub-share is missing"
                    } else {
                        "a party that does not deal sent a dealing"
                    }));
                }
                if let Some(s) = &w.sub_share {
                    check.scalar(s, "the sub-share")?;
                }
                Ok(Message::R1 {
                    dealing_commitment: w.dealing_commitment,
                    sub_share: w.sub_share.map(Zeroizing::new),
                    engine: engine(&w.engine)?,
                })
            }
            2 => {
                let w: Wire2 = decode(round, from, payload)?;
                if w.dealing.is_some() != dealer {
                    return Err(check.fail(if dealer {
                        "the dealer's dealing is missing"
                    } else {
                        "a party that does not deal sent a dealing"
                    }));
                }
                Ok(Message::R2 {
                    engine: engine(&w.engine)?,
                    dealing: w.dealing.map(Box::new),
                })
            }
            3 => {
                let w: Wire3 = decode(round, from, payload)?;
                Ok(Message::R3 {
                    echo: w.echo,
                    engine: engine(&w.engine)?,
                })
            }
            4 => {
                let w: Wire4 = decode(round, from, payload)?;
                Ok(Message::R4 {
                    engine: engine(&w.engine)?,
                })
            }
            _ => Err(check.fail("no such round")),
        }
    }

    fn advance(
        &mut self,
        round: u8,
        received: BTreeMap<PartyIndex, Message>,
    ) -> Result<Advance<Option<KeyShare>>> {
        let mut engine = BTreeMap::new();
        match round {
            1 => {
                for (p, m) in received {
                    let Message::R1 {
                        dealing_commitment,
                        sub_share,
                        engine: inner,
                    } = m
                    else {
                        return Err(Self::out_of_order());
                    };
                    if let Some(c) = dealing_commitment {
                        self.commitments.insert(p, c);
                    }
                    if let Some(s) = sub_share {
                        self.sub_shares.insert(p, s);
                    }
                    if let Some(e) = inner {
                        engine.insert(p, e);
                    }
                }
                if let Some(own) = &self.own {
                    self.commitments.insert(self.me, own.commitment);
                    if let Some(s) = own.sub_shares.get(usize::from(self.me.get())) {
                        self.sub_shares.insert(self.me, s.clone());
                    }
                }
                if let Some(inner) = &mut self.inner {
                    let share = Zeroizing::new(
                        self.sub_shares
                            .values()
                            .fold(Scalar::ZERO, |acc, s| acc + **s),
                    );
                    inner.fix_share(*share)?;
                }
                let mut out = self.engine_round(1, engine)?;
                let dealing = self.own.as_ref().map(|o| o.public.clone());
                let peers: Vec<PartyIndex> = self.peers().collect();
                Ok(Advance::Send(
                    peers
                        .into_iter()
                        .map(|p| {
                            let wire = Wire2 {
                                dealing: dealing.clone(),
                                engine: bytes(out.remove(&p)),
                            };
                            (p, encode(&wire))
                        })
                        .collect(),
                ))
            }
            2 => {
                if let Some(own) = &self.own {
                    self.dealings.insert(self.me, own.public.clone());
                }
                for (p, m) in received {
                    let Message::R2 {
                        dealing,
                        engine: inner,
                    } = m
                    else {
                        return Err(Self::out_of_order());
                    };
                    if let Some(d) = dealing {
                        self.dealings.insert(p, *d);
                    }
                    if let Some(e) = inner {
                        engine.insert(p, e);
                    }
                }
                self.check_dealings()?;
                self.echo = dealings_echo(&self.session_id, &self.dealings);
                let mut out = self.engine_round(2, engine)?;
                let echo = self.echo;
                let peers: Vec<PartyIndex> = self.peers().collect();
                Ok(Advance::Send(
                    peers
                        .into_iter()
                        .map(|p| {
                            let wire = Wire3 {
                                echo,
                                engine: bytes(out.remove(&p)),
                            };
                            (p, encode(&wire))
                        })
                        .collect(),
                ))
            }
            3 => {
                for (p, m) in received {
                    let Message::R3 {
                        echo,
                        engine: inner,
                    } = m
                    else {
                        return Err(Self::out_of_order());
                    };
                    if echo != self.echo {
                        return Err(Error::BroadcastMismatch {
                            reported_by: p,
                            round: 2,
                        });
                    }
                    if let Some(inner) = inner {
                        let EngineMessage::R3(r3) = &inner else {
                            return Err(Self::out_of_order());
                        };
                        if self.verifying_shares.get(usize::from(p.get()))
                            != Some(r3.proven_point())
                        {
                            return Err(Self::misbehaved(
                                p,
                                "the share it proved knowledge of is not the share dealt to it",
                            ));
                        }
                        engine.insert(p, inner);
                    }
                }
                let mut out = self.engine_round(3, engine)?;
                let peers: Vec<PartyIndex> = self.peers().collect();
                Ok(Advance::Send(
                    peers
                        .into_iter()
                        .map(|p| {
                            let wire = Wire4 {
                                engine: bytes(out.remove(&p)),
                            };
                            (p, encode(&wire))
                        })
                        .collect(),
                ))
            }
            4 => {
                for (p, m) in received {
                    let Message::R4 { engine: inner } = m else {
                        return Err(Self::out_of_order());
                    };
                    if let Some(e) = inner {
                        engine.insert(p, e);
                    }
                }
                let Some(inner) = &mut self.inner else {
                    return Ok(Advance::Done(None));
                };
                let Advance::Done(share) = inner.advance(4, engine)? else {
                    return Err(Self::out_of_order());
                };
                Ok(Advance::Done(Some(self.finish(share)?)))
            }
            _ => Err(Self::out_of_order()),
        }
    }
}

/// A refresh's rounds: the engine's complete refresh for a t-of-n wallet, a resharing to the
/// same structure for a structure wallet.
pub(crate) enum Refresh {
    Shamir(Box<Setup>),
    Structure(Box<Reshare>),
}

pub(crate) enum RefreshMessage {
    Shamir(EngineMessage),
    Structure(Message),
}

impl Rounds for Refresh {
    type Message = RefreshMessage;
    type Output = KeyShare;
    const ROUNDS: u8 = 4;

    fn start(&mut self) -> Result<Outgoing> {
        match self {
            Refresh::Shamir(s) => s.start(),
            Refresh::Structure(s) => s.start(),
        }
    }

    fn parse(&self, round: u8, from: PartyIndex, payload: &[u8]) -> Result<RefreshMessage> {
        match self {
            Refresh::Shamir(s) => s.parse(round, from, payload).map(RefreshMessage::Shamir),
            Refresh::Structure(s) => s.parse(round, from, payload).map(RefreshMessage::Structure),
        }
    }

    fn advance(
        &mut self,
        round: u8,
        received: BTreeMap<PartyIndex, RefreshMessage>,
    ) -> Result<Advance<KeyShare>> {
        let wrong = || Error::OutOfOrder("refresh message of the other kind");
        match self {
            Refresh::Shamir(s) => {
                let received = received
                    .into_iter()
                    .map(|(p, m)| match m {
                        RefreshMessage::Shamir(m) => Ok((p, m)),
                        RefreshMessage::Structure(_) => Err(wrong()),
                    })
                    .collect::<Result<_>>()?;
                s.advance(round, received)
            }
            Refresh::Structure(s) => {
                let received = received
                    .into_iter()
                    .map(|(p, m)| match m {
                        RefreshMessage::Structure(m) => Ok((p, m)),
                        RefreshMessage::Shamir(_) => Err(wrong()),
                    })
                    .collect::<Result<_>>()?;
                match s.advance(round, received)? {
                    Advance::Send(out) => Ok(Advance::Send(out)),
                    Advance::Done(Some(share)) => Ok(Advance::Done(share)),
                    Advance::Done(None) => Err(Error::Aborted(
                        "a refresh left this party without a share".into(),
                    )),
                }
            }
        }
    }
}

/// The parties of `plan`'s run other than `me`.
pub(crate) fn run_peers(plan: &Plan, me: PartyIndex) -> BTreeSet<PartyIndex> {
    plan.run_parties()
        .into_iter()
        .filter(|&p| p != me)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::ReshareSession;
    use crate::runner;

    const OLD: &str = "and(server, threshold(2, cfo, ceo, cto))";
    const NEW: &str = "and(server, threshold(2, cfo, ceo, cto, cro))";

    /// A reshare of a fresh `OLD` wallet from server, cfo and ceo to `NEW` (run indices:
    /// server 0, cfo 1, ceo 2, cto 3, cro 4).
    fn sessions() -> Vec<ReshareSession> {
        let old = runner::keygen_structure(&WalletStructure::parse(OLD).unwrap()).unwrap();
        let quorum = [&old[0], &old[1], &old[2]];
        runner::reshare_sessions(&quorum, &WalletStructure::parse(NEW).unwrap(), &[7; 32]).unwrap()
    }

    fn dealer(all: &mut [ReshareSession], run: u8) -> &mut Reshare {
        all.iter_mut()
            .find(|s| crate::session::Session::party(*s) == PartyIndex::new(run))
            .unwrap()
            .0
            .rounds_mut()
    }

    fn recommit(r: &mut Reshare) {
        let own = r.own.as_mut().unwrap();
        own.commitment = dealing_commitment(&r.session_id, r.me, &own.public);
    }

    fn blames(err: &Error, party: u8, reason: &str) -> bool {
        matches!(err, Error::PartyMisbehaved { party: p, reason: r }
            if *p == PartyIndex::new(party) && r.contains(reason))
    }

    /// Makes the dealer at run index `run` deal a consistent dealing of another value (its
    /// additive share plus one), committed to as an honest dealing would be.
    fn deal_one_more(all: &mut [ReshareSession], run: u8) {
        let r = dealer(all, run);
        let own = r.own.as_ref().unwrap();
        let shift = deal(&r.plan.new_structure, &Scalar::ONE).unwrap();
        let leaves: Vec<Zeroizing<Scalar>> = own
            .sub_shares
            .iter()
            .zip(&shift.sub_shares)
            .map(|(a, b)| Zeroizing::new(**a + **b))
            .collect();
        // Re-deal the shifted secret with matching commitments: the shift dealing's public part
        // added node by node to ours is the public part of the sum.
        let add = |a: &AffinePoint, b: &AffinePoint| {
            (ProjectivePoint::from(*a) + ProjectivePoint::from(*b)).to_affine()
        };
        let public = PublicDealing {
            node_points: own
                .public
                .node_points
                .iter()
                .zip(&shift.public.node_points)
                .map(|(a, b)| add(a, b))
                .collect(),
            commitments: own
                .public
                .commitments
                .iter()
                .zip(&shift.public.commitments)
                .map(|(a, b)| a.iter().zip(b).map(|(x, y)| add(x, y)).collect())
                .collect(),
        };
        public.verify(&r.plan.new_structure).unwrap();
        let own = r.own.as_mut().unwrap();
        own.public = public;
        own.sub_shares = leaves;
        recommit(r);
    }

    #[test]
    fn a_dealer_whose_constant_term_is_not_its_additive_share_is_named() {
        let mut all = sessions();
        deal_one_more(&mut all, 1);
        let err = runner::run(all).err().unwrap();
        assert!(
            blames(
                &err,
                1,
                "the constant term it dealt is not its additive share"
            ),
            "{err}"
        );
    }

    /// A t-of-n (format 1) share carries no verifying shares, so a dealer's wrong constant term
    /// cannot be pinned on it: the sum of the dealt constant terms catches it, and the key cannot
    /// change.
    #[test]
    fn from_a_t_of_n_wallet_a_wrong_constant_term_is_caught_by_the_sum() {
        let old = runner::keygen(crate::types::Threshold::new(2, 3).unwrap()).unwrap();
        let new = WalletStructure::parse("and(p0, or(p1, phone))").unwrap();
        let honest = runner::reshare_sessions(&[&old[0], &old[1]], &new, &[8; 32]).unwrap();
        assert!(
            runner::run(honest).is_ok(),
            "the honest reshare must succeed"
        );
        let mut all = runner::reshare_sessions(&[&old[0], &old[1]], &new, &[9; 32]).unwrap();
        // p1 (run index 1) deals its additive share plus one.
        deal_one_more(&mut all, 1);
        let err = runner::run(all).err().unwrap();
        assert!(
            matches!(&err, Error::Aborted(why)
                if why.contains("the dealt constant terms do not add up to the wallet's public key")),
            "{err}"
        );
    }

    #[test]
    fn a_wrong_sub_share_names_the_dealer() {
        let mut all = sessions();
        // ceo sends cro (run index 4) a sub-share off by one.
        let r = dealer(&mut all, 2);
        let own = r.own.as_mut().unwrap();
        *own.sub_shares[4] += Scalar::ONE;
        let err = runner::run(all).err().unwrap();
        assert!(
            blames(
                &err,
                2,
                "the sub-share it sent does not match its commitments"
            ),
            "{err}"
        );
    }

    #[test]
    fn commitments_of_the_wrong_degree_name_the_dealer() {
        let mut all = sessions();
        // server's threshold(2, …) node (pre-order 2) gets a second commitment.
        let r = dealer(&mut all, 0);
        let own = r.own.as_mut().unwrap();
        let extra = own.public.commitments[2][0];
        own.public.commitments[2].push(extra);
        recommit(r);
        let err = runner::run(all).err().unwrap();
        assert!(blames(&err, 0, "have degree 2, the node needs 1"), "{err}");
    }

    #[test]
    fn a_zero_sub_share_is_refused_naming_the_dealer() {
        let mut all = sessions();
        let r = dealer(&mut all, 1);
        *r.own.as_mut().unwrap().sub_shares[3] = Scalar::ZERO;
        let err = runner::run(all).err().unwrap();
        assert!(
            matches!(&err, Error::InvalidMessage { party, round: 1, reason }
                if *party == PartyIndex::new(1) && reason.contains("the sub-share is zero")),
            "{err}"
        );
    }

    #[test]
    fn an_opening_that_differs_from_the_commitment_names_the_dealer() {
        let mut all = sessions();
        let r = dealer(&mut all, 1);
        r.own.as_mut().unwrap().public.node_points.swap(1, 2);
        let err = runner::run(all).err().unwrap();
        assert!(blames(&err, 1, "does not match the commitment"), "{err}");
    }

    #[test]
    fn a_party_proving_another_share_than_dealt_is_named() {
        // cto (run index 3, receives only) proves knowledge of a share it was not dealt: its
        // fixed share is moved by one before round 1 completes.
        let mut all = sessions();
        let r = dealer(&mut all, 3);
        r.sub_shares
            .insert(PartyIndex::new(9), Zeroizing::new(Scalar::ONE));
        let err = runner::run(all).err().unwrap();
        assert!(blames(&err, 3, "not the share dealt to it"), "{err}");
    }
    /// A dealer that opens two different dealings (each committed, each valid, each matching the
    /// recipient's sub-share) to two parties is caught by the round-3 echo.
    #[test]
    fn a_dealer_equivocating_its_dealing_is_caught_by_the_echo() {
        use crate::envelope::Envelope;
        use crate::runner::{Delivery, InFlight};
        let mut all = sessions();
        let r = dealer(&mut all, 1);
        // Pre-order of NEW: 0 and, 1 server, 2 threshold(2, …), 3 cfo, 4 ceo, 5 cto, 6 cro.
        // Move G from the threshold node to server (the root stays), and tilt the threshold
        // node's line so that cro's point (position 4) stays: P' = P − G, C' = C + G/4.
        let mut other = r.own.as_ref().unwrap().public.clone();
        let g = ProjectivePoint::GENERATOR;
        let quarter = g * Option::<Scalar>::from(Scalar::from(4u64).invert()).unwrap();
        let shift = |p: &mut AffinePoint, by: ProjectivePoint| {
            *p = (ProjectivePoint::from(*p) + by).to_affine();
        };
        shift(&mut other.node_points[1], g);
        shift(&mut other.node_points[2], -g);
        shift(&mut other.commitments[2][0], quarter);
        for (position, node) in [(1u64, 3usize), (2, 4), (3, 5), (4, 6)] {
            let point = ProjectivePoint::from(other.node_points[2])
                + ProjectivePoint::from(other.commitments[2][0]) * Scalar::from(position);
            other.node_points[node] = point.to_affine();
        }
        assert_eq!(
            other.node_points[6],
            r.own.as_ref().unwrap().public.node_points[6]
        );
        other.verify(&r.plan.new_structure).unwrap();
        let other_commitment = dealing_commitment(&r.session_id, r.me, &other);
        let result = runner::run_with(
            all,
            |m: InFlight<'_>| {
                if m.sender == PartyIndex::new(1) && m.recipient == PartyIndex::new(4) {
                    let mut e = Envelope::from_bytes(m.sender, m.bytes).unwrap();
                    match m.round {
                        1 => {
                            let mut w: Wire1 = decode(1, m.sender, &e.payload).unwrap();
                            w.dealing_commitment = Some(other_commitment);
                            e.payload = encode(&w);
                        }
                        2 => {
                            let mut w: Wire2 = decode(2, m.sender, &e.payload).unwrap();
                            w.dealing = Some(other.clone());
                            e.payload = encode(&w);
                        }
                        _ => {}
                    }
                    *m.bytes = e.to_bytes();
                }
                Delivery::Deliver
            },
            |_, _| {},
        );
        let err = result.err().unwrap();
        assert!(
            matches!(err, Error::BroadcastMismatch { round: 2, .. }),
            "{err}"
        );
    }
}
