//! Key generation under an access structure: every party deals a random secret down the
//! structure with Feldman commitments ([`crate::structure::sharing`]); the wallet key is the sum
//! of the dealt secrets and each party's share the sum of the sub-shares dealt to it. The DKLs23
//! pairwise set-up (zero-share seeds, OT-based multiplication for every pair, chain code) and the
//! proofs of knowledge of each share come from the engine's key generation run n-of-n over the
//! same parties ([`Setup::keygen_with_fragments`]), whose round-1 fragments are the sub-shares:
//! the engine's share is then exactly the structure share. The engine's own public key (its
//! interpolation of the n-of-n proofs) is replaced by the structure's.
//!
//! This is cb-mpc's `threshold_dkg` (`src/cbmpc/protocol/ec_dkg.h`) on DKLs23. The rounds are the
//! engine keygen's four (see [`super::setup`]), each payload carrying the engine's message plus:
//!
//! | round | added to each party's message |
//! |---|---|
//! | 1 | a hash commitment to our public dealing (the sub-share is the engine fragment) |
//! | 2 | our public dealing (node points and Feldman commitments) |
//! | 3 | an echo: hash of every party's dealing as we received it |
//! | 4 | nothing |
//!
//! The dealing is committed in round 1, when every sub-share is fixed, and opened in round 2, so
//! no dealer chooses its secret after seeing another's public dealing (the bias Gennaro, Jarecki,
//! Krawczyk and Rabin show in Feldman-based key generation, "Secure distributed key generation
//! for discrete-log based cryptosystems", J. Cryptology 2007, is the reason to commit first).
//! After round 2 each party checks, for every dealer: the opening matches the commitment, the
//! dealing has the structure's shape with commitments of exactly degree `k − 1` on every threshold
//! node and adds up ([`PublicDealing::verify`]), and the sub-share it received matches the
//! dealer's leaf point; any failure names the dealer ([`Error::PartyMisbehaved`]). After round 3
//! the echoes must agree (one view of every dealing) and every party's proven share point (the
//! engine's proof of knowledge) must be its verifying share `X_j = Σ_dealers leaf_j`.

use std::collections::BTreeMap;

use k256::{AffinePoint, ProjectivePoint, Scalar};
use serde::{Deserialize, Serialize};

use zeroize::Zeroizing;

use super::setup::{Message as EngineMessage, Setup};
use crate::ecdsa::PublicKey;
use crate::error::{Error, Result};
use crate::session::{Advance, Outgoing, Rounds, decode, encode};
use crate::share::{KeyShare, StructureKey};
use crate::structure::WalletStructure;
use crate::structure::sharing::{PublicDealing, deal};
use crate::types::{PartyIndex, SessionId, Threshold, WalletId};

type Hash = [u8; 32];

#[derive(Serialize, Deserialize)]
struct Wire1 {
    dealing_commitment: Hash,
    #[serde(with = "serde_bytes")]
    engine: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct Wire2 {
    dealing: PublicDealing,
    #[serde(with = "serde_bytes")]
    engine: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct Wire3 {
    echo: Hash,
    #[serde(with = "serde_bytes")]
    engine: Vec<u8>,
}

pub(crate) enum Message {
    R1 {
        dealing_commitment: Hash,
        engine: EngineMessage,
    },
    R2 {
        dealing: Box<PublicDealing>,
        engine: EngineMessage,
    },
    R3 {
        echo: Hash,
        engine: EngineMessage,
    },
    R4(EngineMessage),
}

/// Keygen rounds of one party of a structure wallet.
pub(crate) struct StructureSetup {
    session_id: SessionId,
    me: PartyIndex,
    structure: WalletStructure,
    inner: Setup,
    own_dealing: PublicDealing,
    own_commitment: Hash,
    /// Round-1 commitments and the sub-shares dealt to us, by dealer (ours included).
    commitments: BTreeMap<PartyIndex, Hash>,
    sub_shares: BTreeMap<PartyIndex, Zeroizing<Scalar>>,
    dealings: BTreeMap<PartyIndex, PublicDealing>,
    echo: Hash,
    verifying_shares: Vec<AffinePoint>,
    public_key: Option<AffinePoint>,
}

fn dealing_commitment(session_id: &SessionId, dealer: PartyIndex, dealing: &PublicDealing) -> Hash {
    dealing.commitment(b"tessera/structure-dealing/v1", session_id, dealer)
}

fn dealings_echo(session_id: &SessionId, dealings: &BTreeMap<PartyIndex, PublicDealing>) -> Hash {
    PublicDealing::echo(b"tessera/structure-dealings-echo/v1", session_id, dealings)
}

impl StructureSetup {
    pub(crate) fn new(
        session_id: SessionId,
        wallet_id: WalletId,
        me: PartyIndex,
        structure: WalletStructure,
    ) -> Result<Self> {
        let n = u8::try_from(structure.party_count())
            .map_err(|_| Error::InvalidParameters("too many parties".into()))?;
        let threshold = Threshold::new(n, n)?;
        let secret = Zeroizing::new(crate::types::random_nonzero_scalar()?);
        let dealing = deal(&structure, &secret)?;
        let fragments: Zeroizing<Vec<Scalar>> =
            Zeroizing::new(dealing.sub_shares.iter().map(|s| **s).collect());
        let inner = Setup::keygen_with_fragments(session_id, wallet_id, me, threshold, fragments)?;
        let own_commitment = dealing_commitment(&session_id, me, &dealing.public);
        let mut sub_shares = BTreeMap::new();
        sub_shares.insert(me, dealing.sub_shares[usize::from(me.get())].clone());
        Ok(StructureSetup {
            session_id,
            me,
            structure,
            inner,
            own_dealing: dealing.public,
            own_commitment,
            commitments: BTreeMap::from([(me, own_commitment)]),
            sub_shares,
            dealings: BTreeMap::new(),
            echo: [0; 32],
            verifying_shares: Vec::new(),
            public_key: None,
        })
    }

    fn out_of_order() -> Error {
        Error::OutOfOrder("structure keygen phase called out of order")
    }

    fn misbehaved(party: PartyIndex, reason: impl std::fmt::Display) -> Error {
        Error::PartyMisbehaved {
            party,
            reason: reason.to_string(),
        }
    }

    /// Checks every dealing received in round 2 and derives the verifying shares and the key.
    fn check_dealings(&mut self) -> Result<()> {
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
                .verify(&self.structure)
                .map_err(|fault| Self::misbehaved(dealer, fault))?;
            let sub_share = self
                .sub_shares
                .get(&dealer)
                .ok_or_else(Self::out_of_order)?;
            dealing
                .check_sub_share(&self.structure, self.me, sub_share)
                .map_err(|fault| Self::misbehaved(dealer, fault))?;
        }
        let mut key = ProjectivePoint::IDENTITY;
        for dealing in self.dealings.values() {
            key += ProjectivePoint::from(*dealing.root().ok_or_else(Self::out_of_order)?);
        }
        let mut verifying_shares = Vec::with_capacity(self.structure.party_count());
        for party in self.structure.parties() {
            let mut x = ProjectivePoint::IDENTITY;
            for dealing in self.dealings.values() {
                x += ProjectivePoint::from(
                    dealing
                        .leaf_point(&self.structure, party)
                        .ok_or_else(Self::out_of_order)?,
                );
            }
            verifying_shares.push(x.to_affine());
        }
        self.public_key = Some(key.to_affine());
        self.verifying_shares = verifying_shares;
        Ok(())
    }

    fn wrap<W: Serialize>(out: Outgoing, wrap: impl Fn(Vec<u8>) -> W) -> Outgoing {
        out.into_iter()
            .map(|(p, engine)| (p, encode(&wrap(engine))))
            .collect()
    }
}

impl Rounds for StructureSetup {
    type Message = Message;
    type Output = KeyShare;
    const ROUNDS: u8 = 4;

    fn start(&mut self) -> Result<Outgoing> {
        let out = self.inner.start()?;
        let commitment = self.own_commitment;
        Ok(Self::wrap(out, |engine| Wire1 {
            dealing_commitment: commitment,
            engine,
        }))
    }

    fn parse(&self, round: u8, from: PartyIndex, payload: &[u8]) -> Result<Message> {
        match round {
            1 => {
                let w: Wire1 = decode(round, from, payload)?;
                Ok(Message::R1 {
                    dealing_commitment: w.dealing_commitment,
                    engine: self.inner.parse(round, from, &w.engine)?,
                })
            }
            2 => {
                let w: Wire2 = decode(round, from, payload)?;
                Ok(Message::R2 {
                    dealing: Box::new(w.dealing),
                    engine: self.inner.parse(round, from, &w.engine)?,
                })
            }
            3 => {
                let w: Wire3 = decode(round, from, payload)?;
                Ok(Message::R3 {
                    echo: w.echo,
                    engine: self.inner.parse(round, from, &w.engine)?,
                })
            }
            _ => Ok(Message::R4(self.inner.parse(round, from, payload)?)),
        }
    }

    fn advance(
        &mut self,
        round: u8,
        received: BTreeMap<PartyIndex, Message>,
    ) -> Result<Advance<KeyShare>> {
        let mut engine = BTreeMap::new();
        match round {
            1 => {
                for (p, m) in received {
                    let Message::R1 {
                        dealing_commitment,
                        engine: inner,
                    } = m
                    else {
                        return Err(Self::out_of_order());
                    };
                    let EngineMessage::R1(r1) = &inner else {
                        return Err(Self::out_of_order());
                    };
                    self.sub_shares.insert(p, Zeroizing::new(*r1.fragment()));
                    self.commitments.insert(p, dealing_commitment);
                    engine.insert(p, inner);
                }
                let Advance::Send(out) = self.inner.advance(1, engine)? else {
                    return Err(Self::out_of_order());
                };
                let dealing = self.own_dealing.clone();
                Ok(Advance::Send(Self::wrap(out, |engine| Wire2 {
                    dealing: dealing.clone(),
                    engine,
                })))
            }
            2 => {
                self.dealings.insert(self.me, self.own_dealing.clone());
                for (p, m) in received {
                    let Message::R2 {
                        dealing,
                        engine: inner,
                    } = m
                    else {
                        return Err(Self::out_of_order());
                    };
                    self.dealings.insert(p, *dealing);
                    engine.insert(p, inner);
                }
                self.check_dealings()?;
                self.echo = dealings_echo(&self.session_id, &self.dealings);
                let Advance::Send(out) = self.inner.advance(2, engine)? else {
                    return Err(Self::out_of_order());
                };
                let echo = self.echo;
                Ok(Advance::Send(Self::wrap(out, |engine| Wire3 {
                    echo,
                    engine,
                })))
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
                    let EngineMessage::R3(r3) = &inner else {
                        return Err(Self::out_of_order());
                    };
                    if self.verifying_shares.get(usize::from(p.get())) != Some(r3.proven_point()) {
                        return Err(Self::misbehaved(
                            p,
                            "the share it proved knowledge of is not the share dealt to it",
                        ));
                    }
                    engine.insert(p, inner);
                }
                self.inner.advance(3, engine)
            }
            4 => {
                for (p, m) in received {
                    let Message::R4(inner) = m else {
                        return Err(Self::out_of_order());
                    };
                    engine.insert(p, inner);
                }
                let Advance::Done(mut share) = self.inner.advance(4, engine)? else {
                    return Err(Self::out_of_order());
                };
                let public_key = self.public_key.ok_or_else(Self::out_of_order)?;
                // Our engine share is the sum of our sub-shares: it must be our verifying share.
                if Some(&share.engine.public_share())
                    != self.verifying_shares.get(usize::from(self.me.get()))
                {
                    return Err(Error::Aborted(
                        "our share does not match our verifying share".into(),
                    ));
                }
                share.engine.set_public_key(public_key);
                share.public_key = PublicKey::from_affine(public_key)?;
                share.structure = Some(StructureKey {
                    structure: self.structure.clone(),
                    verifying_shares: self
                        .verifying_shares
                        .iter()
                        .map(|p| PublicKey::from_affine(*p))
                        .collect::<Result<_>>()?,
                });
                Ok(Advance::Done(share))
            }
            _ => Err(Self::out_of_order()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::StructureKeygenSession;
    use crate::runner;

    fn sessions(text: &str) -> Vec<StructureKeygenSession> {
        let structure = WalletStructure::parse(text).unwrap();
        let wallet = WalletId::random();
        let nonce = [5; 32];
        structure
            .parties()
            .map(|me| StructureKeygenSession::new(wallet, &structure, me, &nonce).unwrap())
            .collect()
    }

    /// Lets party `bad` change its public dealing before it starts, and recommits to it so that
    /// only the change itself can be caught.
    fn with_bad_dealer(text: &str, bad: u8, change: impl FnOnce(&mut PublicDealing)) -> Error {
        let mut all = sessions(text);
        let rounds = all[usize::from(bad)].0.rounds_mut();
        change(&mut rounds.own_dealing);
        rounds.own_commitment =
            dealing_commitment(&rounds.session_id, rounds.me, &rounds.own_dealing);
        rounds.commitments.insert(rounds.me, rounds.own_commitment);
        runner::run(all).err().unwrap()
    }

    fn blames(err: &Error, party: u8, reason: &str) -> bool {
        matches!(err, Error::PartyMisbehaved { party: p, reason: r }
            if *p == PartyIndex::new(party) && r.contains(reason))
    }

    #[test]
    fn commitments_of_too_high_a_degree_name_the_dealer() {
        // Node 2 is threshold(2, cfo, ceo, cto): one commitment; a degree-2 polynomial has two.
        let err = with_bad_dealer("and(server, threshold(2, cfo, ceo, cto))", 2, |d| {
            assert_eq!(d.commitments[2].len(), 1);
            let extra = d.commitments[2][0];
            d.commitments[2].push(extra);
        });
        assert!(
            blames(
                &err,
                2,
                "its commitments for threshold(2, cfo, ceo, cto) have degree 2, the node needs 1"
            ),
            "{err}"
        );
    }

    #[test]
    fn commitments_of_too_low_a_degree_name_the_dealer() {
        let err = with_bad_dealer("threshold(3, a, b, c, d)", 1, |d| {
            d.commitments[0].pop();
        });
        assert!(blames(&err, 1, "have degree 1, the node needs 2"), "{err}");
    }

    #[test]
    fn an_inconsistent_or_trivial_dealing_names_the_dealer() {
        let err = with_bad_dealer("and(server, or(phone, laptop))", 0, |d| {
            // The or node's second child no longer carries the or node's point.
            d.node_points[4] = k256::AffinePoint::GENERATOR;
        });
        assert!(blames(&err, 0, "do not add up"), "{err}");
        let err = with_bad_dealer("and(server, or(phone, laptop))", 1, |d| {
            d.node_points[0] = k256::AffinePoint::IDENTITY;
        });
        assert!(blames(&err, 1, "identity point"), "{err}");
        let err = with_bad_dealer("and(server, or(phone, laptop))", 2, |d| {
            d.node_points.pop();
        });
        assert!(blames(&err, 2, "node points"), "{err}");
    }

    #[test]
    fn an_opening_that_differs_from_the_commitment_names_the_dealer() {
        let mut all = sessions("and(a, b, c)");
        // Party 1 commits to its dealing, then opens another one.
        let rounds = all[1].0.rounds_mut();
        rounds.own_dealing.node_points.swap(1, 2);
        let err = runner::run(all).err().unwrap();
        assert!(
            blames(&err, 1, "does not match the commitment it sent in round 1"),
            "{err}"
        );
    }

    /// A dealer that opens two different (each valid, each committed) dealings to two parties
    /// is caught by the round-3 echo, before anyone takes a share.
    #[test]
    fn a_dealer_equivocating_its_dealing_is_caught_by_the_echo() {
        use crate::envelope::Envelope;
        use crate::runner::{Delivery, InFlight};
        // Dealer 1 shows party 2 (`c`) a dealing whose points of `a` and `b` are shifted by ±G:
        // it still adds up and still matches c's sub-share, but differs from what `a` sees.
        let mut all = sessions("and(a, b, c)");
        let dealer = all[1].0.rounds_mut();
        let mut other = dealer.own_dealing.clone();
        let g = ProjectivePoint::GENERATOR;
        other.node_points[1] = (ProjectivePoint::from(other.node_points[1]) + g).to_affine();
        other.node_points[2] = (ProjectivePoint::from(other.node_points[2]) - g).to_affine();
        let other_commitment = dealing_commitment(&dealer.session_id, dealer.me, &other);
        let result = runner::run_with(
            all,
            |m: InFlight<'_>| {
                if m.sender == PartyIndex::new(1) && m.recipient == PartyIndex::new(2) {
                    let mut e = Envelope::from_bytes(m.sender, m.bytes).unwrap();
                    match m.round {
                        1 => {
                            let mut w: Wire1 = decode(1, m.sender, &e.payload).unwrap();
                            w.dealing_commitment = other_commitment;
                            e.payload = encode(&w);
                        }
                        2 => {
                            let mut w: Wire2 = decode(2, m.sender, &e.payload).unwrap();
                            w.dealing = other.clone();
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
