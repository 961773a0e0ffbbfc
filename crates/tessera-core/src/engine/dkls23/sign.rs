//! Signing: the paper's three rounds (Protocol 3.6 of eprint 2023/765).
//!
//! | round | sent to each other signer | engine phase run when the round is complete |
//! |---|---|---|
//! | 1 | our epoch; commitment to our instance point, OT-extension data (phase 1) | phase 2 |
//! | 2 | instance point, public share, gamma values, multiplication data (phase 2) | phase 3 |
//! | 3 | our `(u, w)` shares of the signature's numerator and denominator (broadcast) | phase 4 |
//!
//! Phase 4 adds everybody's `(u, w)`, normalises `s` to low-S and verifies the result under the
//! (derived) public key; we verify it again with `k256` before returning it.

use std::collections::BTreeMap;

use dkls23::protocols::signing::{
    Broadcast3to4, KeepPhase1to2, KeepPhase2to3, SignData, TransmitPhase1to2, TransmitPhase2to3,
    UniqueKeep1to2, UniqueKeep2to3,
};
use serde::{Deserialize, Serialize};

use super::{Check, Curve, Party, abort_error, engine_index};
use crate::ecdsa::{PublicKey, Signature};
use crate::error::{Error, Result};
use crate::session::{Advance, Outgoing, Rounds, decode, encode};
use crate::types::PartyIndex;

type EngineIndex = dkls23::protocols::PartyIndex;
type Kept1 = (
    UniqueKeep1to2<Curve>,
    BTreeMap<EngineIndex, KeepPhase1to2<Curve>>,
);
type Kept2 = (
    UniqueKeep2to3<Curve>,
    BTreeMap<EngineIndex, KeepPhase2to3<Curve>>,
);

#[derive(Serialize, Deserialize)]
pub(crate) struct Round1 {
    epoch: u64,
    message: TransmitPhase1to2,
}

pub(crate) enum Message {
    R1(Box<Round1>),
    R2(Box<TransmitPhase2to3<Curve>>),
    R3(Broadcast3to4<Curve>),
}

/// Signing rounds of one party.
pub(crate) struct Signing {
    me: PartyIndex,
    epoch: u64,
    /// Our share, shifted to the derivation path.
    party: Box<Party>,
    /// The key the signature must verify under (the derived child key).
    public_key: PublicKey,
    digest: [u8; 32],
    data: SignData,
    kept1: Option<Kept1>,
    kept2: Option<Kept2>,
    /// `r` (hex, as the engine keeps it) and our own round-3 broadcast.
    kept3: Option<(String, Broadcast3to4<Curve>)>,
}

impl Signing {
    pub(crate) fn new(
        session_id: &[u8; 32],
        me: PartyIndex,
        epoch: u64,
        party: Party,
        signers: &[PartyIndex],
        digest: [u8; 32],
    ) -> Result<Self> {
        let public_key = PublicKey::from_affine(party.pk)?;
        let data = SignData {
            sign_id: session_id.to_vec(),
            counterparties: signers
                .iter()
                .filter(|&&p| p != me)
                .map(|&p| engine_index(p))
                .collect(),
            message_hash: digest,
        };
        Ok(Signing {
            me,
            epoch,
            party: Box::new(party),
            public_key,
            digest,
            data,
            kept1: None,
            kept2: None,
            kept3: None,
        })
    }

    fn out_of_order() -> Error {
        Error::OutOfOrder("signing phase called out of order")
    }

    fn by_sender<T>(
        received: BTreeMap<PartyIndex, Message>,
        pick: impl Fn(Message) -> Option<T>,
    ) -> Result<Vec<T>> {
        received
            .into_values()
            .map(|m| pick(m).ok_or_else(Self::out_of_order))
            .collect()
    }
}

impl Rounds for Signing {
    type Message = Message;
    type Output = Signature;
    const ROUNDS: u8 = 3;

    fn start(&mut self) -> Result<Outgoing> {
        let (unique, kept, transmit) = self.party.sign_phase1(&self.data).map_err(abort_error)?;
        self.kept1 = Some((unique, kept));
        Ok(transmit
            .into_iter()
            .map(|message| {
                let to = super::tessera_index(message.parties.receiver);
                (
                    to,
                    encode(&Round1 {
                        epoch: self.epoch,
                        message,
                    }),
                )
            })
            .collect())
    }

    fn parse(&self, round: u8, from: PartyIndex, payload: &[u8]) -> Result<Message> {
        let check = Check {
            round,
            from,
            me: self.me,
        };
        match round {
            1 => {
                let m: Round1 = decode(round, from, payload)?;
                check.epoch(self.epoch, m.epoch)?;
                check.route(&m.message.parties)?;
                Ok(Message::R1(Box::new(m)))
            }
            2 => {
                let m: TransmitPhase2to3<Curve> = decode(round, from, payload)?;
                check.route(&m.parties)?;
                check.point(&m.instance_point, "the instance point")?;
                check.point(&m.public_share, "the public share")?;
                check.point(&m.gamma_u, "gamma_u")?;
                check.point(&m.gamma_v, "gamma_v")?;
                check.scalar(&m.psi, "psi")?;
                Ok(Message::R2(Box::new(m)))
            }
            3 => {
                let m: Broadcast3to4<Curve> = decode(round, from, payload)?;
                check.scalar(&m.u, "u")?;
                check.scalar(&m.w, "w")?;
                Ok(Message::R3(m))
            }
            _ => Err(check.fail("no such round")),
        }
    }

    fn advance(
        &mut self,
        round: u8,
        received: BTreeMap<PartyIndex, Message>,
    ) -> Result<Advance<Signature>> {
        match round {
            1 => {
                let msgs = Self::by_sender(received, |m| match m {
                    Message::R1(m) => Some(m.message),
                    _ => None,
                })?;
                let (unique, kept) = self.kept1.take().ok_or_else(Self::out_of_order)?;
                let (unique, kept, transmit) = self
                    .party
                    .sign_phase2(&self.data, unique, kept, &msgs)
                    .map_err(abort_error)?;
                self.kept2 = Some((unique, kept));
                Ok(Advance::Send(
                    transmit
                        .into_iter()
                        .map(|m| (super::tessera_index(m.parties.receiver), encode(&m)))
                        .collect(),
                ))
            }
            2 => {
                let msgs = Self::by_sender(received, |m| match m {
                    Message::R2(m) => Some(*m),
                    _ => None,
                })?;
                let (unique, kept) = self.kept2.take().ok_or_else(Self::out_of_order)?;
                let (x_coord, broadcast) = self
                    .party
                    .sign_phase3(&self.data, unique, kept, &msgs)
                    .map_err(abort_error)?;
                let bytes = encode(&broadcast);
                let out = self
                    .data
                    .counterparties
                    .iter()
                    .map(|&p| (super::tessera_index(p), bytes.clone()))
                    .collect();
                self.kept3 = Some((x_coord, broadcast));
                Ok(Advance::Send(out))
            }
            3 => {
                let (x_coord, own) = self.kept3.take().ok_or_else(Self::out_of_order)?;
                let mut all = Self::by_sender(received, |m| match m {
                    Message::R3(m) => Some(m),
                    _ => None,
                })?;
                all.push(own);
                let (s_hex, recovery_id) = self
                    .party
                    .sign_phase4(&self.data, &x_coord, &all, true)
                    .map_err(abort_error)?;
                let mut r = [0u8; 32];
                let mut s = [0u8; 32];
                hex::decode_to_slice(&x_coord, &mut r)
                    .and_then(|()| hex::decode_to_slice(&s_hex, &mut s))
                    .map_err(|_| {
                        Error::Aborted("the engine returned a malformed signature".into())
                    })?;
                // Independent check with k256; also computes the recovery id for the low-S form.
                let signature = Signature::from_scalars_with_hint(
                    r,
                    s,
                    &self.digest,
                    &self.public_key,
                    Some(recovery_id),
                )?;
                Ok(Advance::Done(signature))
            }
            _ => Err(Self::out_of_order()),
        }
    }
}
