//! Refresh under an access structure and resharing to new structures, all parties in one process
//! through the one driver: the key and its BIP-32 children never change, every minimal quorum of
//! each new structure signs (verified with k256 and libsecp256k1), old shares do not sign with
//! new ones (also when lying about their epoch), an unauthorised old quorum is refused before any
//! message, old-epoch messages are refused, and a crash at any step of the two-phase finish
//! leaves every remaining party one usable epoch.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use common::{p, run_tampered, verify_everywhere};
use tessera_core::driver::{self, Control, CoordinatorPending, Link};
use tessera_core::structure::{QuorumError, WalletStructure};
use tessera_core::testing::{claiming_epoch, claiming_to_be_like, reconstruct, secret_scalar};
use tessera_core::{
    DerivationPath, Envelope, Error, KeyShare, PartyIndex, PublicKey, RefreshSession,
    ReshareRequest, ReshareSession, Threshold, runner,
};

fn structure(text: &str) -> WalletStructure {
    WalletStructure::parse(text).unwrap()
}

fn by_label<'a>(shares: &'a [KeyShare], label: &str) -> &'a KeyShare {
    let s = shares[0].structure();
    let party = s.party(label).unwrap();
    shares.iter().find(|x| x.party() == party).unwrap()
}

fn child_path() -> DerivationPath {
    "m/0/7".parse().unwrap()
}

/// Every minimal quorum of the shares' structure signs (the first one also under a child key);
/// every signature verifies under the expected key.
fn every_minimal_quorum_signs(shares: &[KeyShare], pk: &PublicKey, child: &PublicKey) {
    let s = shares[0].structure();
    for (i, quorum) in s.minimal_quorums().into_iter().enumerate() {
        let signers: Vec<&KeyShare> = quorum
            .iter()
            .map(|q| shares.iter().find(|x| x.party() == *q).unwrap())
            .collect();
        let digest = [i as u8 + 1; 32];
        let (sig, _) = runner::sign(&signers, digest, &DerivationPath::root()).unwrap();
        verify_everywhere(pk, &digest, &sig);
        if i == 0 {
            let (sig, _) = runner::sign(&signers, digest, &child_path()).unwrap();
            verify_everywhere(child, &digest, &sig);
        }
    }
}

fn check_new_shares(
    shares: &[KeyShare],
    text: &str,
    pk: &PublicKey,
    child: &PublicKey,
    epoch: u64,
) {
    let s = structure(text);
    assert_eq!(shares.len(), s.party_count());
    for (i, share) in shares.iter().enumerate() {
        assert_eq!(share.party(), p(i as u8));
        assert_eq!(share.structure(), s);
        assert!(share.is_structure_wallet());
        assert_eq!(share.public_key(), *pk);
        assert_eq!(share.public_key_at(&child_path()).unwrap(), *child);
        assert_eq!(share.epoch(), epoch);
        // Share files of format 2 round-trip (and their verifying shares are checked on load).
        let back = KeyShare::from_bytes(&share.to_bytes()).unwrap();
        assert_eq!(back.public_share(), share.public_share());
        for other in shares {
            assert_eq!(
                share.public_share_of(other.party()).unwrap(),
                other.public_share()
            );
        }
    }
}

#[test]
fn refresh_of_a_structure_wallet_keeps_the_key_and_makes_old_shares_useless() {
    for text in [
        "and(server, or(phone, laptop, tablet))",
        "and(server, threshold(2, cfo, ceo, cto))",
    ] {
        let old = runner::keygen_structure(&structure(text)).unwrap();
        let pk = old[0].public_key();
        let child = old[0].public_key_at(&child_path()).unwrap();
        let new = runner::refresh(&old).unwrap();
        check_new_shares(&new, text, &pk, &child, 1);
        for (o, n) in old.iter().zip(&new) {
            assert_ne!(*secret_scalar(o), *secret_scalar(n), "a share did not move");
        }
        every_minimal_quorum_signs(&new, &pk, &child);
        // An old share and a new one: refused (another epoch, so another session) ...
        let mixed = [&new[0], &old[1]];
        assert!(runner::sign(&mixed, [3; 32], &DerivationPath::root()).is_err());
        // ... also when the old share claims the new epoch: the engine refuses it (its set-up
        // is the old key generation's), and the old share does not combine with the new ones.
        let liar = claiming_epoch(&old[1], 1).unwrap();
        assert!(runner::sign(&[&new[0], &liar], [3; 32], &DerivationPath::root()).is_err());
        assert!(reconstruct(&[&new[0], &liar]).is_err());
        // A second refresh works from the first.
        let again = runner::refresh(&new).unwrap();
        check_new_shares(&again, text, &pk, &child, 2);
        every_minimal_quorum_signs(&again, &pk, &child);
    }
}

#[test]
fn a_reshare_chain_keeps_the_key_and_every_minimal_quorum_signs() {
    let t_of_n = runner::keygen(Threshold::new(2, 3).unwrap()).unwrap();
    let pk = t_of_n[0].public_key();
    let child = t_of_n[0].public_key_at(&child_path()).unwrap();

    // t-of-n (threshold(2, p0, p1, p2)) → a structure: p2 removed, phone added.
    let text1 = "and(p0, or(p1, phone))";
    let s1 = runner::reshare(&[&t_of_n[0], &t_of_n[2]], &structure(text1)).unwrap();
    check_new_shares(&s1, text1, &pk, &child, 1);
    every_minimal_quorum_signs(&s1, &pk, &child);

    // → a bigger structure.
    let text2 = "and(p0, threshold(2, p1, phone, laptop, tablet))";
    let s2 = runner::reshare(
        &[by_label(&s1, "p0"), by_label(&s1, "phone")],
        &structure(text2),
    )
    .unwrap();
    check_new_shares(&s2, text2, &pk, &child, 2);
    every_minimal_quorum_signs(&s2, &pk, &child);

    // → a smaller one, dealt by a quorum of three.
    let text3 = "threshold(2, laptop, vault)";
    let s3 = runner::reshare(
        &[
            by_label(&s2, "p0"),
            by_label(&s2, "phone"),
            by_label(&s2, "tablet"),
        ],
        &structure(text3),
    )
    .unwrap();
    check_new_shares(&s3, text3, &pk, &child, 3);
    every_minimal_quorum_signs(&s3, &pk, &child);

    // Removed parties cannot sign with the new ones: p0 left in the last step.
    let p0 = by_label(&s2, "p0");
    let laptop = by_label(&s3, "laptop");
    assert!(runner::sign(&[p0, laptop], [4; 32], &DerivationPath::root()).is_err());
    let p0_liar = claiming_epoch(p0, 3).unwrap();
    assert!(runner::sign(&[&p0_liar, laptop], [4; 32], &DerivationPath::root()).is_err());
}

#[test]
fn the_demo_reshare_adds_tablet_removes_laptop() {
    let old = runner::keygen_structure(&structure("and(server, or(phone, laptop))")).unwrap();
    let pk = old[0].public_key();
    let child = old[0].public_key_at(&child_path()).unwrap();
    let text = "and(server, or(phone, tablet))";
    let new = runner::reshare(&[&old[0], &old[1]], &structure(text)).unwrap();
    check_new_shares(&new, text, &pk, &child, 1);
    let (sig, _) = runner::sign(
        &[by_label(&new, "server"), by_label(&new, "tablet")],
        [5; 32],
        &DerivationPath::root(),
    )
    .unwrap();
    verify_everywhere(&pk, &[5; 32], &sig);
    // laptop's old share: refused with the new server, also claiming the new epoch.
    let laptop = &old[2];
    assert!(
        runner::sign(
            &[by_label(&new, "server"), laptop],
            [5; 32],
            &DerivationPath::root()
        )
        .is_err()
    );
    let liar = claiming_epoch(laptop, 1).unwrap();
    assert!(runner::sign(&[&new[0], &liar], [5; 32], &DerivationPath::root()).is_err());
    // Even posing as tablet (party 2 of the new structure: same index, epoch, structure and
    // verifying shares, so the same session), laptop's old share does not sign with server's
    // new one: the engine refuses it (laptop's engine state, pairwise set-up included, is from
    // the old key generation, which the engine's signing checks; its secret is not a share of
    // the new sharing either).
    let impostor = claiming_to_be_like(laptop, by_label(&new, "tablet")).unwrap();
    assert_eq!(impostor.party(), by_label(&new, "tablet").party());
    assert_eq!(impostor.structure(), new[0].structure());
    let err = runner::sign(
        &[by_label(&new, "server"), &impostor],
        [5; 32],
        &DerivationPath::root(),
    )
    .unwrap_err();
    assert!(!matches!(err, Error::WrongSession { .. }), "{err}");
}

#[test]
fn a_dealer_that_leaves_deals_and_ends_without_a_share() {
    // laptop deals with server, and is not in the new structure.
    let old = runner::keygen_structure(&structure("and(server, or(phone, laptop))")).unwrap();
    let pk = old[0].public_key();
    let child = old[0].public_key_at(&child_path()).unwrap();
    let text = "and(server, or(phone, tablet))";
    let new_structure = structure(text);
    // Run indices: the new structure's parties, then the departing dealer.
    let request = ReshareRequest {
        nonce: [8; 32],
        quorum: vec![p(0), p(2)],
        new_structure: new_structure.clone(),
    };
    let wallet = old[0].wallet_public();
    // phone takes part with its old share without dealing; tablet joins with the public facts.
    let sessions = vec![
        ReshareSession::new(&old[0], &request).unwrap(),
        ReshareSession::new(&old[1], &request).unwrap(),
        ReshareSession::new(&old[2], &request).unwrap(),
        ReshareSession::joining(&wallet, "tablet", &request).unwrap(),
    ];
    assert_eq!(
        ReshareSession::run_index(&wallet, &request, "laptop").unwrap(),
        Some(p(3))
    );
    assert_eq!(
        ReshareSession::run_index(&wallet, &request, "tablet").unwrap(),
        Some(p(2))
    );
    let (outputs, stats) = runner::run(sessions).unwrap();
    assert_eq!(outputs.iter().filter(|o| o.is_none()).count(), 1);
    assert!(stats.bytes_sent.contains_key(&p(3)));
    let mut new: Vec<KeyShare> = outputs.into_iter().flatten().collect();
    new.sort_by_key(KeyShare::party);
    check_new_shares(&new, text, &pk, &child, 1);
    every_minimal_quorum_signs(&new, &pk, &child);
}

#[test]
fn an_unauthorised_or_oversized_old_quorum_is_refused_before_any_message() {
    let old = runner::keygen_structure(&structure("and(server, or(phone, laptop))")).unwrap();
    let new = structure("and(server, or(phone, tablet))");
    let err = runner::reshare(&[&old[1], &old[2]], &new).unwrap_err();
    assert!(
        matches!(&err, Error::Quorum(QuorumError::NotAuthorised(_))),
        "{err}"
    );
    assert!(err.to_string().contains("needs `server`"), "{err}");
    let err = runner::reshare(&[&old[0], &old[1], &old[2]], &new).unwrap_err();
    assert!(
        matches!(&err, Error::Quorum(QuorumError::NotNeeded(_))),
        "{err}"
    );
    // The session refuses it too, before it is started.
    let request = ReshareRequest {
        nonce: [1; 32],
        quorum: vec![p(1)],
        new_structure: new.clone(),
    };
    assert!(matches!(
        ReshareSession::new(&old[1], &request),
        Err(Error::Quorum(_))
    ));
    // A joining party cannot take a dealer's label, nor a label outside the new structure.
    let request = ReshareRequest {
        quorum: vec![p(0), p(1)],
        ..request
    };
    let wallet = old[0].wallet_public();
    assert!(ReshareSession::joining(&wallet, "server", &request).is_err());
    assert!(ReshareSession::joining(&wallet, "laptop", &request).is_err());
    // ... nor join with verifying shares that do not combine to the key.
    let mut forged = wallet.clone();
    if let Some(v) = &mut forged.verifying_shares {
        // (phone's and laptop's are equal: `or` copies; server's plus either is the key.)
        v[0] = v[1];
    }
    assert!(ReshareSession::joining(&forged, "tablet", &request).is_err());
}

#[test]
fn a_joining_party_with_another_view_of_the_wallet_is_in_another_session() {
    let old = runner::keygen_structure(&structure("and(server, or(phone, laptop))")).unwrap();
    let other = runner::keygen_structure(&structure("and(server, or(phone, laptop))")).unwrap();
    let new = structure("and(server, or(phone, tablet))");
    let request = ReshareRequest {
        nonce: [2; 32],
        quorum: vec![p(0), p(1)],
        new_structure: new,
    };
    // tablet was told another wallet's key (with this wallet's id).
    let mut wrong = other[0].wallet_public();
    wrong.wallet_id = old[0].wallet_id();
    let sessions = vec![
        ReshareSession::new(&old[0], &request).unwrap(),
        ReshareSession::new(&old[1], &request).unwrap(),
        ReshareSession::joining(&wrong, "tablet", &request).unwrap(),
    ];
    let err = runner::run(sessions).unwrap_err();
    assert!(matches!(err, Error::WrongSession { .. }), "{err}");
}

#[test]
fn old_epoch_messages_are_refused() {
    let old = runner::keygen_structure(&structure("and(server, or(phone, laptop))")).unwrap();
    let new = runner::refresh(&old).unwrap();
    let request = ReshareRequest {
        nonce: [3; 32],
        quorum: vec![p(0), p(1)],
        new_structure: structure("and(server, or(phone, tablet))"),
    };
    // phone takes part with its share of epoch 0 among shares of epoch 1: another session.
    let sessions = vec![
        ReshareSession::new(&new[0], &request).unwrap(),
        ReshareSession::new(&old[1], &request).unwrap(),
        ReshareSession::joining(&new[0].wallet_public(), "tablet", &request).unwrap(),
    ];
    let err = runner::run(sessions).unwrap_err();
    assert!(matches!(err, Error::WrongSession { .. }), "{err}");
    // A round-1 message claiming another epoch in the same session: refused, the sender named.
    // (Round 1's payload starts with the epoch, a postcard varint: 1 is the byte 0x01.)
    let sessions =
        runner::reshare_sessions(&[&new[0], &new[1]], &request.new_structure, &[4; 32]).unwrap();
    let err = run_tampered(sessions, 1, 2, 1, |e| {
        assert_eq!(e.payload[0], 1);
        e.payload[0] = 0;
    });
    assert!(
        matches!(
            err,
            Error::EpochMismatch {
                party,
                ours: 1,
                theirs: 0
            } if party == p(1)
        ),
        "{err}"
    );
    // An old refresh's epoch with the new shares' session: refused the same way.
    let sessions: Vec<RefreshSession> = new
        .iter()
        .map(|s| RefreshSession::new(s, &[5; 32]).unwrap())
        .collect();
    let err = run_tampered(sessions, 0, 1, 1, |e| {
        e.payload[0] = 0;
    });
    assert!(matches!(err, Error::EpochMismatch { .. }), "{err}");
}

/// One party's store during the two-phase finish: the current share, and the pending one.
struct Store {
    current: Option<KeyShare>,
    pending: Option<KeyShare>,
}

/// The repair the next session does: if the coordinator switched, every party that holds the
/// new epoch as pending switches to it (none is missing it: the coordinator switches only after
/// every commit); otherwise the pending shares are dropped.
fn repair(stores: &mut BTreeMap<String, Store>, coordinator: &str, new_epoch: u64) {
    let switched = stores[coordinator]
        .current
        .as_ref()
        .is_some_and(|s| s.epoch() == new_epoch);
    for store in stores.values_mut() {
        let pending = store.pending.take();
        if switched && let Some(share) = pending {
            store.current = Some(share);
        }
    }
}

/// Control messages between the parties of a finish, by (sender, recipient).
#[derive(Default)]
struct Mailboxes {
    queues: RefCell<BTreeMap<(u8, u8), VecDeque<Control>>>,
    parties: Vec<u8>,
    moved: Cell<usize>,
}

/// One party's end of [`Mailboxes`]: the two-phase finish's control messages only.
struct ControlLink<'a> {
    me: u8,
    boxes: &'a Mailboxes,
}

impl Link for ControlLink<'_> {
    type Error = Error;

    async fn send(&mut self, _envelope: &Envelope) -> Result<(), Error> {
        Err(Error::InvalidParameters("only the finish runs here".into()))
    }

    fn recv(
        &mut self,
        _idle: Option<Duration>,
    ) -> impl Future<Output = Result<Option<(PartyIndex, Vec<u8>)>, Error>> {
        std::future::ready(Err(Error::InvalidParameters(
            "only the finish runs here".into(),
        )))
    }

    async fn send_control(&mut self, control: Control) -> Result<(), Error> {
        let mut queues = self.boxes.queues.borrow_mut();
        for &to in self.boxes.parties.iter().filter(|&&p| p != self.me) {
            queues.entry((self.me, to)).or_default().push_back(control);
        }
        self.boxes.moved.set(self.boxes.moved.get() + 1);
        Ok(())
    }

    fn recv_control(
        &mut self,
        from: PartyIndex,
        _idle: Option<Duration>,
    ) -> impl Future<Output = Result<Option<Control>, Error>> {
        let (me, boxes) = (self.me, self.boxes);
        std::future::poll_fn(move |_| {
            let next = boxes
                .queues
                .borrow_mut()
                .get_mut(&(from.get(), me))
                .and_then(VecDeque::pop_front);
            match next {
                Some(control) => {
                    boxes.moved.set(boxes.moved.get() + 1);
                    Poll::Ready(Ok(Some(control)))
                }
                // A crashed party never answers: wait (the poll loop sees no progress).
                None => Poll::Pending,
            }
        })
    }
}

/// Runs the driver's two-phase finish (coordinator: [`CoordinatorPending`]; participants:
/// [`driver::await_pending`]) between `coordinator` and `participants` (labels; run indices in
/// that order), every store action going through `store(label, switch)`, which returns false
/// once the crash has happened (the party then stops). Ends when every party finished or is
/// stuck.
fn finish_with_crash(
    coordinator: &str,
    participants: &[String],
    epoch: u64,
    store: &dyn Fn(&str, bool) -> bool,
) {
    let boxes = Mailboxes {
        parties: (0..=participants.len() as u8).collect(),
        ..Mailboxes::default()
    };
    let indices: Vec<PartyIndex> = (1..=participants.len() as u8).map(p).collect();
    let mut runs: Vec<Pin<Box<dyn Future<Output = ()> + '_>>> = Vec::new();
    let boxes = &boxes;
    let indices = &indices;
    runs.push(Box::pin(async move {
        let mut link = ControlLink { me: 0, boxes };
        if !store(coordinator, false) {
            return;
        }
        let Ok(all) = CoordinatorPending::stored(epoch)
            .collect_commits(&mut link, indices, None)
            .await
        else {
            return;
        };
        if !store(coordinator, true) {
            return;
        }
        all.announce_switch(&mut link).await.unwrap();
    }));
    for (i, label) in participants.iter().enumerate() {
        runs.push(Box::pin(async move {
            let mut link = ControlLink {
                me: i as u8 + 1,
                boxes,
            };
            let announced = driver::await_pending(&mut link, p(0), epoch, None)
                .await
                .unwrap();
            if !store(label, false) {
                return;
            }
            let committed = announced.commit(&mut link).await.unwrap();
            assert_eq!(
                committed.await_switch(&mut link, None).await.unwrap(),
                epoch
            );
            store(label, true);
        }));
    }
    let mut done = vec![false; runs.len()];
    let mut context = Context::from_waker(Waker::noop());
    loop {
        let before = boxes.moved.get();
        for (run, done) in runs.iter_mut().zip(done.iter_mut()) {
            if !*done && run.as_mut().poll(&mut context).is_ready() {
                *done = true;
            }
        }
        if done.iter().all(|d| *d) || boxes.moved.get() == before {
            break;
        }
    }
}

/// A resharing's two-phase finish, with a crash after each of its steps: afterwards every
/// remaining party holds shares of one epoch, a quorum of which signs.
fn crash_at_every_step(old: &[KeyShare], quorum: &[PartyIndex], text: &str) {
    let old_structure = old[0].structure();
    let new_structure = structure(text);
    let pk = old[0].public_key();
    let dealers: Vec<&KeyShare> = quorum.iter().map(|q| &old[usize::from(q.get())]).collect();
    let new = if new_structure == old_structure {
        runner::refresh(old).unwrap()
    } else {
        runner::reshare(&dealers, &new_structure).unwrap()
    };
    let new_epoch = old[0].epoch() + 1;
    // Parties by label; the coordinator is the first party of the new structure.
    let coordinator = new_structure.labels()[0].clone();
    let mut labels: Vec<String> = old_structure.labels().to_vec();
    for l in new_structure.labels() {
        if !labels.contains(l) {
            labels.push(l.clone());
        }
    }
    let participants: Vec<String> = new_structure
        .labels()
        .iter()
        .filter(|l| **l != coordinator)
        .cloned()
        .collect();
    // Store actions: the coordinator's pending share, each participant's (then its commit),
    // the coordinator's switch, each participant's switch; a crash may come before any of them.
    let steps = 2 + 2 * participants.len();
    for crash_after in 0..=steps {
        let stores: BTreeMap<String, Store> = labels
            .iter()
            .map(|l| {
                let current = old_structure
                    .party(l)
                    .map(|i| KeyShare::from_bytes(&old[usize::from(i.get())].to_bytes()).unwrap());
                (
                    l.clone(),
                    Store {
                        current,
                        pending: None,
                    },
                )
            })
            .collect();
        let new_share = |l: &str| {
            let i = new_structure.party(l).unwrap();
            KeyShare::from_bytes(&new[usize::from(i.get())].to_bytes()).unwrap()
        };
        let stores = RefCell::new(stores);
        let budget = Cell::new(crash_after);
        // A store action, unless the crash came first (then the party stops).
        let store = |label: &str, switch: bool| -> bool {
            if budget.get() == 0 {
                return false;
            }
            budget.set(budget.get() - 1);
            let mut stores = stores.borrow_mut();
            let store = stores.get_mut(label).unwrap();
            if switch {
                store.current = store.pending.take();
            } else {
                store.pending = Some(new_share(label));
            }
            true
        };
        finish_with_crash(&coordinator, &participants, new_epoch, &store);
        let mut stores = stores.into_inner();
        repair(&mut stores, &coordinator, new_epoch);
        // The coordinator switched once every participant committed; then the new epoch holds.
        let epoch = stores[&coordinator].current.as_ref().unwrap().epoch();
        assert_eq!(
            epoch == new_epoch,
            crash_after >= participants.len() + 2,
            "step {crash_after}"
        );
        let s = if epoch == new_epoch {
            new_structure.clone()
        } else {
            old_structure.clone()
        };
        // Every party of that epoch's structure holds a share of that epoch.
        for l in s.labels() {
            let share = stores[l].current.as_ref().unwrap();
            assert_eq!(share.epoch(), epoch, "{l} at step {crash_after}");
        }
        // A minimal quorum of that epoch's structure, from the stores, signs.
        let quorum = s.minimal_quorums().into_iter().next().unwrap();
        let signers: Vec<&KeyShare> = quorum
            .iter()
            .map(|q| {
                let label = s.label(*q).unwrap();
                stores[label].current.as_ref().unwrap()
            })
            .collect();
        let digest = [crash_after as u8; 32];
        let (sig, _) = runner::sign(&signers, digest, &DerivationPath::root()).unwrap();
        verify_everywhere(&pk, &digest, &sig);
        // Parties not in the structure of that epoch hold nothing usable with it.
        for l in &labels {
            if s.party(l).is_none()
                && let Some(share) = stores[l].current.as_ref()
            {
                assert_ne!(
                    share.epoch(),
                    epoch,
                    "{l} holds a share of the current epoch"
                );
            }
        }
    }
}

#[test]
fn a_crash_at_any_step_of_a_reshare_finish_leaves_one_usable_epoch() {
    let old = runner::keygen_structure(&structure("and(server, or(phone, laptop))")).unwrap();
    crash_at_every_step(&old, &[p(0), p(1)], "and(server, or(phone, tablet))");
}

#[test]
fn a_crash_at_any_step_of_a_refresh_finish_leaves_one_usable_epoch() {
    let old = runner::keygen_structure(&structure("and(server, or(phone, laptop))")).unwrap();
    crash_at_every_step(&old, &[p(0), p(1)], "and(server, or(phone, laptop))");
}
