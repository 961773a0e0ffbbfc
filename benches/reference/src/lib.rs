//! Helpers for the `cggmp21` reference benchmark.
//!
//! Every protocol here runs all of its parties in one thread, driven by
//! `round_based::sim` (the simulated network that `cggmp21`'s own tests use). The wall-clock
//! time of one run is therefore the *sum* of all parties' computation: divide by the number of
//! parties for a per-party figure.
//!
//! [`traffic`] re-runs a protocol under a small counting driver that serialises every outgoing
//! message, so the byte counts never contaminate the timings.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use cggmp21::key_share::AuxInfo;
use cggmp21::round_based::{sim, MessageDestination};
use cggmp21::supported_curves::Secp256k1;
use cggmp21::{
    DataToSign, ExecutionId, IncompleteKeyShare, PartialSignature, PregeneratedPrimes,
    Presignature, Signature, SigningError,
};
use rand_core::{OsRng, RngCore};
use sha2::Sha256;

pub use cggmp21::KeyShare;

/// The curve used throughout.
pub type E = Secp256k1;

/// Messages of the signing / presigning protocol (default digest, SHA-256).
pub type SigningMsg = cggmp21::signing::msg::Msg<E, Sha256>;

/// A fresh, random 32-byte execution id (session id). `cggmp21` requires one that never
/// repeats; each benchmark iteration draws its own, which costs nothing measurable.
pub fn fresh_eid() -> [u8; 32] {
    let mut eid = [0u8; 32];
    OsRng.fill_bytes(&mut eid);
    eid
}

/// The message digest signed by every signing benchmark.
pub fn data_to_sign() -> DataToSign<E> {
    DataToSign::digest::<Sha256>(b"tessera reference benchmark message")
}

/// Threshold (`t`-of-`n`) distributed key generation, no auxiliary info.
pub fn keygen_threshold(t: u16, n: u16) -> Vec<IncompleteKeyShare<E>> {
    let eid = fresh_eid();
    let eid = ExecutionId::new(&eid);
    sim::run(n, |i, party| async move {
        let mut rng = OsRng;
        cggmp21::keygen::<E>(eid, i, n)
            .set_threshold(t)
            .start(&mut rng, party)
            .await
    })
    .expect("simulation of threshold keygen")
    .expect_ok()
    .into_vec()
}

/// Non-threshold (`n`-of-`n`) key generation, the original CGGMP21 DKG; no auxiliary info.
pub fn keygen_non_threshold(n: u16) -> Vec<IncompleteKeyShare<E>> {
    let eid = fresh_eid();
    let eid = ExecutionId::new(&eid);
    sim::run(n, |i, party| async move {
        let mut rng = OsRng;
        cggmp21::keygen::<E>(eid, i, n).start(&mut rng, party).await
    })
    .expect("simulation of non-threshold keygen")
    .expect_ok()
    .into_vec()
}

/// Paillier safe-prime generation for one party (two 1536-bit safe primes at the default
/// `SecurityLevel128`).
pub fn generate_primes() -> PregeneratedPrimes {
    PregeneratedPrimes::generate(&mut OsRng)
}

/// The auxiliary-info generation protocol (Paillier moduli, ring-Pedersen parameters and
/// their ZK proofs) for `primes.len()` parties, given each party's pre-generated primes.
pub fn aux_info_gen(primes: Vec<PregeneratedPrimes>) -> Vec<AuxInfo> {
    let n = u16::try_from(primes.len()).expect("party count fits in u16");
    let eid = fresh_eid();
    let eid = ExecutionId::new(&eid);
    sim::run_with_setup(primes, |i, party, primes| async move {
        let mut rng = OsRng;
        cggmp21::aux_info_gen(eid, i, n, primes)
            .start(&mut rng, party)
            .await
    })
    .expect("simulation of aux info generation")
    .expect_ok()
    .into_vec()
}

/// Joins key shares and auxiliary info into complete key shares (validates their consistency).
pub fn complete(incomplete: Vec<IncompleteKeyShare<E>>, aux: Vec<AuxInfo>) -> Vec<KeyShare<E>> {
    assert_eq!(incomplete.len(), aux.len());
    incomplete
        .into_iter()
        .zip(aux)
        .map(|parts| KeyShare::from_parts(parts).expect("key share and aux info are consistent"))
        .collect()
}

/// Presignature generation by the parties whose keygen indices are `signers`.
pub fn presign(shares: &[KeyShare<E>], signers: &[u16]) -> Vec<Presignature<E>> {
    let t = u16::try_from(signers.len()).expect("signer count fits in u16");
    let eid = fresh_eid();
    let eid = ExecutionId::new(&eid);
    sim::run(t, |i, party| {
        let share = &shares[usize::from(signers[usize::from(i)])];
        async move {
            let mut rng = OsRng;
            cggmp21::signing(eid, i, signers, share)
                .generate_presignature(&mut rng, party)
                .await
        }
    })
    .expect("simulation of presigning")
    .expect_ok()
    .into_vec()
}

/// The non-interactive online phase: every signer issues a partial signature from its
/// presignature, and the partial signatures are combined into one signature.
pub fn sign_with_presignatures(
    presignatures: Vec<Presignature<E>>,
    data: DataToSign<E>,
) -> Signature<E> {
    let partials: Vec<PartialSignature<E>> = presignatures
        .into_iter()
        .map(|p| p.issue_partial_signature(data))
        .collect();
    PartialSignature::combine(&partials).expect("partial signatures combine")
}

/// Full interactive signing (presigning and the online round in one protocol run).
pub fn sign_interactive(
    shares: &[KeyShare<E>],
    signers: &[u16],
    data: DataToSign<E>,
) -> Signature<E> {
    let t = u16::try_from(signers.len()).expect("signer count fits in u16");
    let eid = fresh_eid();
    let eid = ExecutionId::new(&eid);
    sim::run(t, |i, party| {
        let share = &shares[usize::from(signers[usize::from(i)])];
        async move {
            let mut rng = OsRng;
            cggmp21::signing(eid, i, signers, share)
                .sign(&mut rng, party, data)
                .await
        }
    })
    .expect("simulation of interactive signing")
    .expect_ok()
    .expect_eq()
}

/// Panics unless `sig` is a valid ECDSA signature on `data` under the shares' public key.
pub fn assert_valid(shares: &[KeyShare<E>], sig: &Signature<E>, data: &DataToSign<E>) {
    let pk = shares[0].shared_public_key;
    sig.verify(&pk, data).expect("signature verifies");
}

/// One-time set-up shared by the signing benchmarks: keygen, primes, aux info, completion.
pub fn full_setup(t: u16, n: u16) -> Vec<KeyShare<E>> {
    let incomplete = keygen_threshold(t, n);
    let primes = (0..n).map(|_| generate_primes()).collect();
    complete(incomplete, aux_info_gen(primes))
}

pub mod traffic {
    //! Counting what each party sends.
    //!
    //! [`run`] is a copy of the loop in `round_based::sim::Simulation::run`, with the one
    //! addition that every outgoing message is serialised (postcard and serde_json) and its
    //! size charged to the sender.

    use std::collections::VecDeque;

    use cggmp21::round_based::state_machine::{ProceedResult, StateMachine};
    use cggmp21::round_based::{Incoming, MessageType, Outgoing};
    use serde::Serialize;

    use super::MessageDestination;

    /// What one party sent during one protocol run.
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub struct Sent {
        /// Broadcast messages emitted (each counted once).
        pub broadcasts: usize,
        /// Point-to-point messages emitted.
        pub p2p: usize,
        /// postcard bytes, each broadcast counted once (a true broadcast channel).
        pub postcard_emitted: usize,
        /// postcard bytes, each broadcast counted once per recipient (broadcast sent as
        /// `n - 1` point-to-point copies, the usual case on a real network).
        pub postcard_delivered: usize,
        /// serde_json bytes, each broadcast counted once.
        pub json_emitted: usize,
        /// serde_json bytes, each broadcast counted once per recipient.
        pub json_delivered: usize,
    }

    impl Sent {
        /// Adds a message of `postcard`/`json` bytes that reaches `copies` recipients.
        pub fn charge(&mut self, broadcast: bool, copies: usize, postcard: usize, json: usize) {
            if broadcast {
                self.broadcasts += 1;
            } else {
                self.p2p += 1;
            }
            self.postcard_emitted += postcard;
            self.postcard_delivered += postcard * copies;
            self.json_emitted += json;
            self.json_delivered += json * copies;
        }
    }

    /// Sizes of `msg` in postcard and serde_json.
    pub fn sizes<M: Serialize>(msg: &M) -> (usize, usize) {
        let postcard = postcard::to_allocvec(msg)
            .expect("postcard serialisation")
            .len();
        let json = serde_json::to_vec(msg)
            .expect("serde_json serialisation")
            .len();
        (postcard, json)
    }

    /// A boxed protocol party, as [`run`] takes it.
    pub type Party<'a, O, M> = Box<dyn StateMachine<Output = O, Msg = M> + 'a>;

    /// Runs the given state machines to completion, delivering messages between them, and
    /// returns every party's output together with what it sent.
    pub fn run<'a, O, M>(parties: Vec<Party<'a, O, M>>) -> Vec<(O, Sent)>
    where
        M: Clone + Serialize,
    {
        let n = parties.len();
        let mut state: Vec<Option<Party<'a, O, M>>> = parties.into_iter().map(Some).collect();
        let mut wants_msg = vec![false; n];
        let mut outputs: Vec<Option<O>> = (0..n).map(|_| None).collect();
        let mut sent = vec![Sent::default(); n];
        let mut queues: Vec<VecDeque<Incoming<M>>> = (0..n).map(|_| VecDeque::new()).collect();
        let mut next_id = 0u64;
        let mut left = n;

        while left > 0 {
            let mut progressed = false;
            for i in 0..n {
                let Some(party) = state[i].as_mut() else {
                    continue;
                };
                loop {
                    if wants_msg[i] {
                        let Some(msg) = queues[i].pop_front() else {
                            break;
                        };
                        if party.received_msg(msg).is_err() {
                            panic!("party {i} refused an incoming message");
                        }
                        wants_msg[i] = false;
                    }
                    progressed = true;
                    match party.proceed() {
                        ProceedResult::SendMsg(Outgoing { recipient, msg }) => {
                            let (pc, js) = sizes(&msg);
                            let sender = u16::try_from(i).expect("index fits in u16");
                            match recipient {
                                MessageDestination::AllParties => {
                                    sent[i].charge(true, n - 1, pc, js);
                                    for (j, queue) in queues.iter_mut().enumerate() {
                                        if j != i {
                                            queue.push_back(Incoming {
                                                id: next_id,
                                                sender,
                                                msg_type: MessageType::Broadcast,
                                                msg: msg.clone(),
                                            });
                                            next_id += 1;
                                        }
                                    }
                                }
                                MessageDestination::OneParty(j) => {
                                    sent[i].charge(false, 1, pc, js);
                                    queues[usize::from(j)].push_back(Incoming {
                                        id: next_id,
                                        sender,
                                        msg_type: MessageType::P2P,
                                        msg,
                                    });
                                    next_id += 1;
                                }
                            }
                        }
                        ProceedResult::NeedsOneMoreMessage => wants_msg[i] = true,
                        ProceedResult::Yielded => {}
                        ProceedResult::Output(out) => {
                            outputs[i] = Some(out);
                            state[i] = None;
                            left -= 1;
                            break;
                        }
                        ProceedResult::Error(err) => panic!("party {i} failed: {err}"),
                    }
                }
            }
            assert!(progressed, "deadlock: every party waits for a message");
        }

        outputs
            .into_iter()
            .zip(sent)
            .map(|(o, s)| (o.expect("every party finished"), s))
            .collect()
    }
}

/// Traffic of one presigning run among `signers`; also returns the presignatures.
pub fn presign_traffic(
    shares: &[KeyShare<E>],
    signers: &[u16],
) -> Vec<(Presignature<E>, traffic::Sent)> {
    use cggmp21::round_based::state_machine::wrap_protocol;
    let eid = fresh_eid();
    let eid = ExecutionId::new(&eid);
    let parties = (0u16..)
        .zip(signers)
        .map(|(i, &k)| {
            let share = &shares[usize::from(k)];
            let sm = wrap_protocol(move |party| async move {
                let mut rng = OsRng;
                cggmp21::signing(eid, i, signers, share)
                    .generate_presignature(&mut rng, party)
                    .await
            });
            Box::new(sm) as traffic::Party<'_, _, SigningMsg>
        })
        .collect::<Vec<traffic::Party<'_, Result<Presignature<E>, SigningError>, SigningMsg>>>();
    traffic::run(parties)
        .into_iter()
        .map(|(out, sent)| (out.expect("presigning succeeds"), sent))
        .collect()
}

/// Traffic of one interactive signing run among `signers`; also returns the signature.
pub fn sign_traffic(
    shares: &[KeyShare<E>],
    signers: &[u16],
    data: DataToSign<E>,
) -> (Signature<E>, Vec<traffic::Sent>) {
    use cggmp21::round_based::state_machine::wrap_protocol;
    let eid = fresh_eid();
    let eid = ExecutionId::new(&eid);
    let parties = (0u16..)
        .zip(signers)
        .map(|(i, &k)| {
            let share = &shares[usize::from(k)];
            let sm = wrap_protocol(move |party| async move {
                let mut rng = OsRng;
                cggmp21::signing(eid, i, signers, share)
                    .sign(&mut rng, party, data)
                    .await
            });
            Box::new(sm) as traffic::Party<'_, _, SigningMsg>
        })
        .collect::<Vec<traffic::Party<'_, Result<Signature<E>, SigningError>, SigningMsg>>>();
    let mut sigs = Vec::new();
    let mut sent = Vec::new();
    for (out, s) in traffic::run(parties) {
        sigs.push(out.expect("signing succeeds"));
        sent.push(s);
    }
    assert!(sigs.windows(2).all(|w| w[0] == w[1]), "signers agree");
    (sigs[0], sent)
}
