//! Sessions over mailboxes (`tessera_server::session_link`): real protocols run with the one
//! driver, one party per replica, each over its own `MailboxLink`: a structure keygen, a
//! signature by an authorised quorum (checked with k256), a reshare that adds a party with its
//! two-phase finish (the key does not change); a party that vanishes mid-run is named by the
//! others; bad frames put straight into a mailbox end the run saying what was wrong. SQLite (one
//! process) always; PostgreSQL (three replicas in this process sharing one fresh database) when
//! `TESSERA_TEST_DATABASE_URL` names a server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use tessera_api::ServerSessionId;
use tessera_core::driver::{self, Control, CoordinatorPending, Link};
use tessera_core::protocols::fresh_nonce;
use tessera_core::structure::WalletStructure;
use tessera_core::{
    DerivationPath, KeyShare, PartyIndex, PublicKey, Session, SignRequest, SignSession, Signature,
    StructureKeygenSession, WalletId, runner,
};
use tessera_server::mailboxes::{MAX_FRAME, Route};
use tessera_server::session_link::{
    Body, End, EndReason, Frame, FrameError, LinkError, MAX_CHANNEL, MAX_END_MESSAGE, MAX_PART,
    MailboxLink, message_frames, party_address,
};
use tessera_server::{AppState, Config};

/// How long a party waits for the others' mailboxes, and for a message.
const APPEAR: Duration = Duration::from_secs(60);
const IDLE: Duration = Duration::from_secs(300);

fn p(i: u8) -> PartyIndex {
    PartyIndex::new(i)
}

fn new_session() -> ServerSessionId {
    ServerSessionId::new(hex::encode(fresh_nonce()))
}

/// Checks `sig` with k256 directly (not through Tessera's own types), and with Tessera's.
fn verify(pk: &PublicKey, digest: &[u8; 32], sig: &Signature) {
    use k256::ecdsa::signature::hazmat::PrehashVerifier;
    let key = k256::ecdsa::VerifyingKey::from_sec1_bytes(&pk.to_compressed()).unwrap();
    let k256_sig = k256::ecdsa::Signature::from_slice(&sig.to_compact()).unwrap();
    key.verify_prehash(digest, &k256_sig)
        .expect("k256 rejects the signature");
    pk.verify(digest, sig).unwrap();
}

async fn sqlite(dir: &tempfile::TempDir) -> AppState {
    AppState::open(Config::new(dir.path().join("data")))
        .await
        .unwrap()
}

/// `n` replicas of one fresh PostgreSQL database, or `None` without a server.
async fn replicas(dir: &tempfile::TempDir, n: usize) -> Option<(Vec<AppState>, sqlx::AnyPool)> {
    let url = common::fresh_postgres_database("sl").await?;
    let mut config = Config::new(dir.path().join("data"));
    config.database_url = Some(url.clone());
    let mut states = Vec::new();
    for _ in 0..n {
        states.push(AppState::open(config.clone()).await.unwrap());
    }
    let db = sqlx::AnyPool::connect(&url).await.unwrap();
    Some((states, db))
}

async fn count(db: &sqlx::AnyPool, sql: &'static str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(db).await.unwrap();
    n
}

/// Waits until no mailbox is open and no frame is stored (closing is asynchronous).
async fn nothing_left(db: &sqlx::AnyPool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(db, "SELECT COUNT(*) FROM mailboxes").await > 0 {
        assert!(Instant::now() < deadline, "mailbox rows stayed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(count(db, "SELECT COUNT(*) FROM mailbox_frames").await, 0);
}

/// One party of session `sid` on `state`: opens its link, drives `session`, says it finished.
async fn run_party<S>(
    state: AppState,
    sid: ServerSessionId,
    mut session: S,
) -> Result<S::Output, String>
where
    S: Session,
{
    let mut link = MailboxLink::open(
        state.mailboxes(),
        &sid,
        session.party(),
        &session.peers(),
        APPEAR,
    )
    .await
    .map_err(|e| e.to_string())?;
    let output = driver::drive(&mut session, &mut link, Some(IDLE), |_, _| Ok(()))
        .await
        .map_err(|e| e.to_string())?;
    link.end(End::finished()).await.map_err(|e| e.to_string())?;
    Ok(output)
}

/// Runs every party of one session, each on its replica, at the same time.
async fn run_all<S>(parties: Vec<(AppState, S)>) -> Vec<S::Output>
where
    S: Session + Send + 'static,
    S::Output: Send + 'static,
{
    let sid = new_session();
    let tasks: Vec<_> = parties
        .into_iter()
        .map(|(state, session)| tokio::spawn(run_party(state, sid.clone(), session)))
        .collect();
    let mut outputs = Vec::new();
    for task in tasks {
        outputs.push(task.await.unwrap().unwrap());
    }
    outputs
}

/// A structure keygen, party `i` on `place(i)`; the shares in party order.
async fn keygen(
    structure: &WalletStructure,
    place: impl Fn(PartyIndex) -> AppState,
) -> Vec<KeyShare> {
    let wallet = WalletId::random();
    let nonce = fresh_nonce();
    let parties = structure
        .parties()
        .map(|party| {
            let session = StructureKeygenSession::new(wallet, structure, party, &nonce).unwrap();
            (place(party), session)
        })
        .collect();
    let mut shares = run_all(parties).await;
    shares.sort_by_key(KeyShare::party);
    let pk = shares[0].public_key();
    assert!(shares.iter().all(|s| s.public_key() == pk));
    shares
}

/// Signs `digest` with `signers` (each share on its replica) and checks the signature.
async fn sign(signers: &[(AppState, &KeyShare)], digest: [u8; 32]) -> Signature {
    let request = SignRequest {
        nonce: fresh_nonce(),
        signers: signers.iter().map(|(_, s)| s.party()).collect(),
        digest,
        path: DerivationPath::root(),
    };
    let parties = signers
        .iter()
        .map(|(state, share)| (state.clone(), SignSession::new(share, &request).unwrap()))
        .collect();
    let signatures = run_all(parties).await;
    assert!(signatures.iter().all(|s| *s == signatures[0]));
    verify(&signers[0].1.public_key(), &digest, &signatures[0]);
    signatures[0]
}

/// Reshares the wallet of `quorum` to `to`, run party `i` on `place(i)`, with the two-phase
/// finish over the links (the coordinator is `coordinator`'s run party); the new shares in
/// party order.
async fn reshare(
    quorum: &[&KeyShare],
    to: &WalletStructure,
    coordinator: &str,
    place: impl Fn(PartyIndex) -> AppState,
) -> Vec<KeyShare> {
    let sessions = runner::reshare_sessions(quorum, to, &fresh_nonce()).unwrap();
    let all: Vec<PartyIndex> = sessions.iter().map(|s| s.party()).collect();
    let coordinator = to.party(coordinator).unwrap();
    let sid = new_session();
    let tasks: Vec<_> = sessions
        .into_iter()
        .map(|mut session| {
            let state = place(session.party());
            let sid = sid.clone();
            let participants: Vec<PartyIndex> =
                all.iter().copied().filter(|&q| q != coordinator).collect();
            tokio::spawn(async move {
                let me = session.party();
                let mut link =
                    MailboxLink::open(state.mailboxes(), &sid, me, &session.peers(), APPEAR)
                        .await
                        .unwrap();
                let share = driver::drive(&mut session, &mut link, Some(IDLE), |_, _| Ok(()))
                    .await
                    .unwrap()
                    .expect("every dealer is in the new structure");
                // (Storing the share as pending, then as current, is the caller's; here the
                // steps only go over the link.)
                let epoch = share.epoch();
                if me == coordinator {
                    let all_committed = CoordinatorPending::stored(epoch)
                        .collect_commits(&mut link, &participants, Some(IDLE))
                        .await
                        .unwrap();
                    assert_eq!(all_committed.epoch(), epoch);
                    all_committed.announce_switch(&mut link).await.unwrap();
                } else {
                    let switched = driver::await_pending(&mut link, coordinator, epoch, Some(IDLE))
                        .await
                        .unwrap()
                        .commit(&mut link)
                        .await
                        .unwrap()
                        .await_switch(&mut link, Some(IDLE))
                        .await
                        .unwrap();
                    assert_eq!(switched, epoch);
                }
                link.end(End::finished()).await.unwrap();
                share
            })
        })
        .collect();
    let mut shares = Vec::new();
    for task in tasks {
        shares.push(task.await.unwrap());
    }
    shares.sort_by_key(KeyShare::party);
    shares
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_and_sign_over_in_process_mailboxes() {
    let dir = tempfile::tempdir().unwrap();
    let state = sqlite(&dir).await;
    let structure = WalletStructure::parse("threshold(2, a, b, c)").unwrap();
    let shares = keygen(&structure, |_| state.clone()).await;
    assert_eq!(shares.len(), 3);
    let digest = [0x5a; 32];
    let sig = sign(
        &[(state.clone(), &shares[0]), (state.clone(), &shares[2])],
        digest,
    )
    .await;
    verify(&shares[1].public_key(), &digest, &sig);
    // Every link said it finished and closed its mailbox.
    assert_eq!(state.mailboxes().held(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_sign_and_reshare_across_replicas_on_postgresql() {
    let dir = tempfile::tempdir().unwrap();
    let Some((replicas, db)) = replicas(&dir, 3).await else {
        eprintln!("TESSERA_TEST_DATABASE_URL not set: PostgreSQL skipped");
        return;
    };
    // server on replica 0, a on 1, b on 2.
    let structure = WalletStructure::parse("and(server, or(a, b))").unwrap();
    let on = |i: usize| replicas[i].clone();
    let shares = keygen(&structure, |party| on(usize::from(party.get()))).await;
    let pk = shares[0].public_key();

    // An authorised quorum (server, a) signs across two replicas.
    let digest = [0x17; 32];
    sign(&[(on(0), &shares[0]), (on(1), &shares[1])], digest).await;

    // Reshared by (server, b) to add c (on replica 2 with b), with the two-phase finish.
    let bigger = WalletStructure::parse("and(server, or(a, b, c))").unwrap();
    let new = reshare(&[&shares[0], &shares[2]], &bigger, "server", |party| {
        on(usize::from(party.get()).min(2))
    })
    .await;
    assert_eq!(new.len(), 4);
    for share in &new {
        assert_eq!(share.public_key(), pk);
        assert_eq!(share.epoch(), shares[0].epoch() + 1);
        assert_eq!(share.structure(), bigger);
    }
    // The new party signs with the server, across replicas, under the same key.
    let c = bigger.party("c").unwrap();
    let digest = [0x42; 32];
    let sig = sign(
        &[(on(0), &new[0]), (on(2), &new[usize::from(c.get())])],
        digest,
    )
    .await;
    verify(&pk, &digest, &sig);

    // Every mailbox closed, every stored frame read.
    nothing_left(&db).await;
}

/// A 3-party keygen on `place`s where party 2 stops after its first round and its link is
/// dropped without a word: both others end with an error naming party 2.
async fn a_vanished_party_is_named(place: impl Fn(PartyIndex) -> AppState) {
    let structure = WalletStructure::parse("threshold(2, a, b, c)").unwrap();
    let wallet = WalletId::random();
    let nonce = fresh_nonce();
    let sid = new_session();
    let mut tasks = Vec::new();
    for party in structure.parties() {
        let mut session = StructureKeygenSession::new(wallet, &structure, party, &nonce).unwrap();
        let state = place(party);
        let sid = sid.clone();
        tasks.push(tokio::spawn(async move {
            let mut link =
                MailboxLink::open(state.mailboxes(), &sid, party, &session.peers(), APPEAR)
                    .await
                    .unwrap();
            let vanishes = party == p(2);
            let result = driver::drive(&mut session, &mut link, Some(IDLE), |round, _| {
                if vanishes && round >= 1 {
                    return Err(LinkError::Invalid("stopped on purpose".into()));
                }
                Ok(())
            })
            .await;
            if vanishes {
                // Dropped without an end: its mailbox closes.
                drop(link);
                assert!(result.is_err());
                return None;
            }
            // The survivors keep their mailboxes open until both have ended, so that each
            // finds party 2 gone, not the other survivor.
            let error = match result {
                Err(driver::DriveError::Link(e)) => e,
                Err(other) => panic!("party {party}: another error: {other}"),
                Ok(_) => panic!("party {party} finished without party 2"),
            };
            Some((error, link))
        }));
    }
    let mut kept = Vec::new();
    for task in tasks {
        if let Some((error, link)) = task.await.unwrap() {
            assert_eq!(error.party(), Some(p(2)), "{error}");
            assert!(
                matches!(error, LinkError::Gone { .. }),
                "not the vanished party: {error}"
            );
            assert!(
                error.to_string().contains("party 2 left the session"),
                "{error}"
            );
            kept.push(link);
        }
    }
    assert_eq!(kept.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_party_whose_mailbox_closes_mid_run_is_named_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let state = sqlite(&dir).await;
    a_vanished_party_is_named(|_| state.clone()).await;
    assert_eq!(state.mailboxes().held(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_party_whose_mailbox_closes_mid_run_is_named_across_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let Some((replicas, db)) = replicas(&dir, 3).await else {
        eprintln!("TESSERA_TEST_DATABASE_URL not set: PostgreSQL skipped");
        return;
    };
    a_vanished_party_is_named(|party| replicas[usize::from(party.get())].clone()).await;
    nothing_left(&db).await;
}

#[tokio::test]
async fn a_peer_whose_replica_dies_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let Some((mut replicas, db)) = replicas(&dir, 3).await else {
        eprintln!("TESSERA_TEST_DATABASE_URL not set: PostgreSQL skipped");
        return;
    };
    let dying = replicas.pop().unwrap();
    let (a, b) = (&replicas[0], &replicas[1]);
    // Party 0 on A; party 1 on the replica that dies, party 2 on B: A's inbox watches both.
    let sid = new_session();
    let one = dying
        .mailboxes()
        .open(&party_address(&sid, p(1)))
        .await
        .unwrap();
    let _two = b
        .mailboxes()
        .open(&party_address(&sid, p(2)))
        .await
        .unwrap();
    let mut link = MailboxLink::open(a.mailboxes(), &sid, p(0), &[p(1), p(2)], APPEAR)
        .await
        .unwrap();
    // The replica stops (its liveness connection closes) with its mailbox row still there.
    std::mem::forget(one);
    drop(dying);
    let deadline = Instant::now() + Duration::from_secs(60);
    while a.forget_dead_replicas().await.unwrap() == 0 {
        assert!(
            Instant::now() < deadline,
            "the replica was never found dead"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let error = link.recv(Some(IDLE)).await.unwrap_err();
    assert_eq!(error.party(), Some(p(1)), "{error}");
    // Found at once through the closed inbox (it watches both peers' replicas), not later by a
    // check of the peers' mailboxes.
    assert!(
        error
            .to_string()
            .contains("party 1 left the session: its mailbox closed (its replica"),
        "{error}"
    );
    drop((link, _two));
    nothing_left(&db).await;
}

/// Party 0 of a fresh 3-party session on `states[0]` (parties 1 and 2 hold plain mailboxes on
/// `states[1]`), and the route to party 0's mailbox from `states[1]`.
async fn receiver(
    states: &[AppState],
) -> (MailboxLink, Route, Vec<tessera_server::mailboxes::Inbox>) {
    let sid = new_session();
    let other = &states[1 % states.len()];
    let mut peers = Vec::new();
    for i in [1, 2] {
        peers.push(
            other
                .mailboxes()
                .open(&party_address(&sid, p(i)))
                .await
                .unwrap(),
        );
    }
    let link = MailboxLink::open(states[0].mailboxes(), &sid, p(0), &[p(1), p(2)], APPEAR)
        .await
        .unwrap();
    let to = other
        .mailboxes()
        .route(&party_address(&sid, p(0)))
        .await
        .unwrap()
        .unwrap();
    (link, to, peers)
}

fn raw(from: u8, body: Body) -> Vec<u8> {
    Frame {
        from: p(from),
        body,
    }
    .encode()
    .unwrap()
}

/// Bad frames put straight into party 0's mailbox from another replica (or this process):
/// each ends the wait with an error saying what was wrong; nothing panics.
async fn bad_frames_are_refused(states: &[AppState]) {
    let sender = &states[1 % states.len()];
    // What is sent, the party the error names, what it says.
    type Case = (&'static str, Vec<Vec<u8>>, Option<u8>, &'static str);
    let cases: Vec<Case> = vec![
        (
            "unknown kind",
            vec![vec![1, 9, 1, 0xaa]],
            Some(1),
            "unknown kind 9",
        ),
        (
            "truncated",
            vec![vec![1, 1]],
            None,
            "shorter than its 3-byte header",
        ),
        (
            "another version",
            vec![vec![7, 1, 1, 5]],
            None,
            "format version 7",
        ),
        ("empty message", vec![vec![1, 1, 1]], Some(1), "no bytes"),
        (
            "control of the wrong length",
            vec![vec![1, 2, 1, 0, 1, 2, 3]],
            Some(1),
            "control frame with 4 bytes of body, not 9",
        ),
        (
            "unknown control",
            vec![vec![1, 2, 1, 9]],
            Some(1),
            "unknown type 9",
        ),
        (
            "end without reason",
            vec![vec![1, 3, 1]],
            Some(1),
            "without a known reason",
        ),
        (
            "end of unknown reason",
            vec![vec![1, 3, 1, 8]],
            Some(1),
            "without a known reason",
        ),
        (
            "end with a control character",
            vec![vec![1, 3, 1, 3, b'a', 0x07]],
            Some(1),
            "without control characters",
        ),
        (
            "end that is not UTF-8",
            vec![vec![1, 3, 1, 3, 0xff, 0xfe]],
            Some(1),
            "without control characters",
        ),
        (
            "a sender outside the session",
            vec![raw(5, Body::Message(vec![1, 2, 3]))],
            Some(5),
            "names party 5 as its sender, which is not a party of this session",
        ),
        (
            "the receiver as its sender",
            vec![raw(0, Body::Message(vec![1, 2, 3]))],
            Some(0),
            "names party 0 as its sender, which is the receiving party itself",
        ),
        (
            "a message longer than an envelope",
            vec![
                raw(1, Body::Part(vec![1; MAX_PART])),
                raw(1, Body::Part(vec![2; MAX_PART])),
                raw(1, Body::Message(vec![3; MAX_PART])),
            ],
            Some(1),
            "party 1 sent a protocol message of more than 262144 bytes",
        ),
        (
            "a control inside a message",
            vec![
                raw(1, Body::Part(vec![1; 10])),
                raw(1, Body::Control(Control::Switched)),
            ],
            Some(1),
            "party 1 broke off a protocol message",
        ),
        (
            "a frame after the end",
            vec![
                raw(2, Body::End(End::finished())),
                raw(2, Body::Message(vec![1])),
            ],
            Some(2),
            "party 2 sent a frame after it finished",
        ),
        (
            "an end-to-end channel frame to the server's party",
            vec![raw(1, Body::Channel(vec![1, 2, 3]))],
            Some(1),
            "party 1 sent an end-to-end channel frame, which only two devices exchange",
        ),
        (
            "a channel frame of no bytes",
            vec![vec![1, 4, 1]],
            Some(1),
            "a channel frame of 0 bytes",
        ),
        (
            "a peer that failed",
            vec![raw(
                1,
                Body::End(End::new(EndReason::Failed, "its share store failed")),
            )],
            Some(1),
            "party 1 ended the session (failed: its share store failed)",
        ),
    ];
    for (case, frames, party, expected) in cases {
        let (mut link, to, _peers) = receiver(states).await;
        for frame in frames {
            assert!(sender.mailboxes().send(&to, frame).await.unwrap(), "{case}");
        }
        let error = link.recv(Some(IDLE)).await.expect_err(case);
        let text = error.to_string();
        assert!(text.contains(expected), "{case}: {text}");
        assert_eq!(error.party(), party.map(p), "{case}: {text}");
    }

    // Good frames: a message in parts is joined; a control that arrives during `recv` waits
    // for `recv_control`; nothing for the idle time is `Ok(None)`.
    let (mut link, to, _peers) = receiver(states).await;
    let long: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut frames = vec![raw(2, Body::Control(Control::Pending(7)))];
    frames.extend(message_frames(p(1), &long).unwrap());
    frames.push(raw(2, Body::Message(vec![9, 9])));
    for frame in frames {
        assert!(sender.mailboxes().send(&to, frame).await.unwrap());
    }
    assert_eq!(link.recv(Some(IDLE)).await.unwrap(), Some((p(1), long)));
    assert_eq!(
        link.recv(Some(IDLE)).await.unwrap(),
        Some((p(2), vec![9, 9]))
    );
    assert_eq!(
        link.recv_control(p(2), Some(IDLE)).await.unwrap(),
        Some(Control::Pending(7))
    );
    assert_eq!(
        link.recv(Some(Duration::from_millis(200))).await.unwrap(),
        None
    );
    assert_eq!(
        link.recv_control(p(1), Some(Duration::from_millis(200)))
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn bad_frames_are_refused_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let state = sqlite(&dir).await;
    bad_frames_are_refused(std::slice::from_ref(&state)).await;
    assert_eq!(state.mailboxes().held(), 0);
}

#[tokio::test]
async fn bad_frames_are_refused_across_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let Some((replicas, db)) = replicas(&dir, 2).await else {
        eprintln!("TESSERA_TEST_DATABASE_URL not set: PostgreSQL skipped");
        return;
    };
    bad_frames_are_refused(&replicas).await;
    nothing_left(&db).await;
}

#[tokio::test]
async fn a_peer_that_never_opens_its_mailbox_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let state = sqlite(&dir).await;
    let sid = new_session();
    let _one = state
        .mailboxes()
        .open(&party_address(&sid, p(1)))
        .await
        .unwrap();
    let error = MailboxLink::open(
        state.mailboxes(),
        &sid,
        p(0),
        &[p(1), p(3)],
        Duration::from_millis(300),
    )
    .await
    .err()
    .unwrap();
    assert_eq!(error.party(), Some(p(3)));
    assert!(
        error
            .to_string()
            .contains("party 3 did not open its mailbox of the session"),
        "{error}"
    );
    // Its own mailbox is closed again.
    assert!(
        state
            .mailboxes()
            .route(&party_address(&sid, p(0)))
            .await
            .unwrap()
            .is_none()
    );
    // Bad party sets and session ids are refused before anything opens.
    for (peers, sid) in [
        (vec![], new_session()),
        (vec![p(1), p(1)], new_session()),
        (vec![p(0), p(1)], new_session()),
        (vec![p(1)], ServerSessionId::new("a/b")),
        (vec![p(1)], ServerSessionId::new("")),
    ] {
        let e = MailboxLink::open(state.mailboxes(), &sid, p(0), &peers, APPEAR)
            .await
            .err()
            .unwrap();
        assert!(matches!(e, LinkError::Invalid(_)), "{e}");
    }
    assert_eq!(state.mailboxes().held(), 1);
}

/// A session ended from outside its parties (an invited device declined: the end is recorded,
/// then the mailboxes open at that moment are told) stops a link that is still looking for a
/// missing peer, with the reason recorded, long before its wait ends; a link that does not read
/// the sessions keeps waiting.
#[tokio::test]
async fn a_session_ended_outside_its_parties_stops_a_link_looking_for_its_peers() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let state = sqlite(&dir).await;
    let sid = new_session();
    // The session's row, written from outside as another replica would (its device and
    // wallet are not this test's business: this connection does not enforce foreign keys).
    let url = format!("sqlite://{}", dir.path().join("data/tessera.db").display());
    let mut outside = sqlx::AnyConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("PRAGMA foreign_keys = OFF")
        .execute(&mut outside)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO sessions (id, device_id, wallet_id, protocol, status, nonce, params, epoch, \
         created_at, last_message_at) VALUES ($1, 'd', 'w', 'keygen', 'running', $2, '{}', 0, 0, 0)",
    )
    .bind(sid.as_str())
    .bind(vec![0u8; 32])
    .execute(&mut outside)
    .await
    .unwrap();
    let started = Instant::now();
    let peers = [p(1)];
    let checking = MailboxLink::open_checking(
        state.mailboxes(),
        Some(state.db()),
        &sid,
        p(0),
        &peers,
        APPEAR,
    );
    let blind_sid = new_session();
    let blind = MailboxLink::open(state.mailboxes(), &blind_sid, p(0), &peers, APPEAR);
    let end = async {
        // Running, and missing its peer, past the first checks: still waiting.
        tokio::time::sleep(Duration::from_millis(900)).await;
        sqlx::query(
            "UPDATE sessions SET status = 'failed', \
             detail = 'party 1 (\"bob.phone\") left: declined' WHERE id = $1",
        )
        .bind(sid.as_str())
        .execute(&mut outside)
        .await
        .unwrap();
    };
    let (checked, ()) = tokio::join!(checking, end);
    let e = checked.err().unwrap();
    assert!(
        matches!(&e, LinkError::Ended(why) if why == "party 1 (\"bob.phone\") left: declined"),
        "{e}"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(e.party(), None);
    // Its own mailbox is closed again.
    let own = state.mailboxes().route(&party_address(&sid, p(0))).await;
    assert!(own.unwrap().is_none());
    // Without the check (and without a row), a link waits for its peer.
    assert!(
        tokio::time::timeout(Duration::from_secs(2), blind)
            .await
            .is_err()
    );
}

#[test]
fn frames_round_trip_and_every_field_is_checked() {
    let bodies = [
        Body::Part(vec![1; MAX_PART]),
        Body::Message(vec![2]),
        Body::Control(Control::Pending(u64::MAX)),
        Body::Control(Control::Commit(3)),
        Body::Control(Control::Switched),
        Body::End(End::finished()),
        Body::End(End::new(EndReason::Expired, "no message for 300 s")),
        Body::Channel(vec![5; MAX_CHANNEL]),
    ];
    for body in bodies {
        let frame = Frame { from: p(4), body };
        let bytes = frame.encode().unwrap();
        assert!(bytes.len() <= MAX_FRAME);
        assert_eq!(Frame::decode(&bytes).unwrap(), frame);
        // Every cut of a frame is refused or is another valid frame (a message's prefix), never
        // a panic; trailing bytes after a control are refused.
        for cut in 0..bytes.len().min(64) {
            let _ = Frame::decode(&bytes[..cut]);
        }
    }
    let control = raw(1, Body::Control(Control::Commit(1)));
    assert!(matches!(
        Frame::decode(&[control.as_slice(), &[0]].concat()),
        Err(FrameError::ControlLength { .. })
    ));
    assert!(matches!(
        Frame::decode(&control[..control.len() - 1]),
        Err(FrameError::ControlLength { .. })
    ));
    assert_eq!(
        Frame::decode(&vec![1; MAX_FRAME + 1]),
        Err(FrameError::TooLong(MAX_FRAME + 1))
    );
    assert_eq!(
        Frame {
            from: p(1),
            body: Body::Message(vec![0; MAX_PART + 1])
        }
        .encode(),
        Err(FrameError::TooLong(MAX_FRAME + 1))
    );
    assert_eq!(Frame::decode(&[]), Err(FrameError::Truncated(0)));
    assert_eq!(
        Frame {
            from: p(1),
            body: Body::Channel(vec![0; MAX_CHANNEL + 1])
        }
        .encode(),
        Err(FrameError::ChannelLength(MAX_CHANNEL + 1))
    );
    assert_eq!(
        Frame::decode(&[&[1, 4, 1][..], &vec![0; MAX_CHANNEL + 1]].concat()),
        Err(FrameError::ChannelLength(MAX_CHANNEL + 1))
    );

    // Messages are cut into parts, the last one marked; too long or empty is refused.
    let frames = message_frames(p(2), &vec![7; 2 * MAX_PART + 1]).unwrap();
    let kinds: Vec<_> = frames
        .iter()
        .map(|f| match Frame::decode(f).unwrap().body {
            Body::Part(b) => ("part", b.len()),
            Body::Message(b) => ("message", b.len()),
            _ => ("other", 0),
        })
        .collect();
    assert_eq!(
        kinds,
        [("part", MAX_PART), ("part", MAX_PART), ("message", 1)]
    );
    assert_eq!(message_frames(p(2), &[]), Err(FrameError::EmptyMessage));
    assert!(matches!(
        message_frames(p(2), &vec![0; 256 * 1024 + 1]),
        Err(FrameError::MessageTooLong(_))
    ));

    // An end's text is made sendable: cut to the limit on a character boundary, controls
    // replaced.
    let end = End::new(EndReason::Left, &format!("a\nb{}", "é".repeat(300)));
    assert!(end.message().len() <= MAX_END_MESSAGE);
    assert!(end.message().starts_with("a b"));
    let bytes = raw(3, Body::End(end.clone()));
    assert_eq!(Frame::decode(&bytes).unwrap().body, Body::End(end));
}

/// Party 0 of a fresh session with parties 1 and 2 opening its link on `state` (still looking:
/// party 2 never comes), party 1's plain mailbox on `other`, and the route to party 0's
/// mailbox from `other` once it is open.
async fn party_zero_looking(
    state: &AppState,
    other: &AppState,
) -> (
    tokio::task::JoinHandle<Result<MailboxLink, LinkError>>,
    tessera_server::mailboxes::Inbox,
    Route,
) {
    let sid = new_session();
    let opening = {
        let (state, sid) = (state.clone(), sid.clone());
        tokio::spawn(async move {
            MailboxLink::open(state.mailboxes(), &sid, p(0), &[p(1), p(2)], APPEAR).await
        })
    };
    let boxes = other.mailboxes();
    let one = boxes.open(&party_address(&sid, p(1))).await.unwrap();
    let deadline = Instant::now() + APPEAR;
    let to_zero = loop {
        if let Some(route) = boxes.route(&party_address(&sid, p(0))).await.unwrap() {
            break route;
        }
        assert!(Instant::now() < deadline, "party 0 never opened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    (opening, one, to_zero)
}

/// A peer that opens its mailbox, gives up and leaves before this party found every peer: the
/// search stops at its end (not after the wait, at a peer that never comes), naming it. Party 0
/// on `states[0]`, party 1 on `states[1]`.
async fn a_peer_that_ends_early_is_named(states: &[AppState]) {
    let (state, other) = (&states[0], &states[1 % states.len()]);
    // Party 2 never comes: without the early end, party 0 waits APPEAR and names party 2.
    let (opening, one, to_zero) = party_zero_looking(state, other).await;
    let boxes = other.mailboxes();
    let gave_up = End::new(EndReason::Left, "its user declined");
    assert!(
        boxes
            .send(&to_zero, raw(1, Body::End(gave_up)))
            .await
            .unwrap()
    );
    drop(one);
    let error = opening.await.unwrap().err().unwrap();
    assert_eq!(error.party(), Some(p(1)), "{error}");
    assert!(
        error
            .to_string()
            .contains("party 1 ended the session (left: its user declined)"),
        "{error}"
    );
    assert_eq!(state.mailboxes().held(), 0);
}

#[tokio::test]
async fn a_peer_that_ends_while_this_party_looks_for_the_others_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let state = sqlite(&dir).await;
    a_peer_that_ends_early_is_named(&[state]).await;
}

#[tokio::test]
async fn a_peer_on_another_replica_that_ends_early_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let Some((replicas, db)) = replicas(&dir, 2).await else {
        eprintln!("TESSERA_TEST_DATABASE_URL not set: PostgreSQL skipped");
        return;
    };
    a_peer_that_ends_early_is_named(&replicas).await;
    nothing_left(&db).await;
}

/// A peer that ends its run and closes its mailbox while this party writes to it: the link
/// reads the end that is waiting (within the grace) and reports it, with its reason, rather
/// than the closed mailbox. Without any end, the peer is named as gone.
#[tokio::test]
async fn a_closed_mailbox_is_reported_with_the_end_that_came_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = sqlite(&dir).await;
    let states = [state.clone()];
    let (mut link, to, mut peers) = receiver(&states).await;
    let failed = End::new(EndReason::Failed, "its share store failed");
    assert!(
        state
            .mailboxes()
            .send(&to, raw(1, Body::End(failed)))
            .await
            .unwrap()
    );
    drop(peers.remove(0));
    // The announcement goes to both peers; party 1's mailbox is closed.
    let error = link.send_control(Control::Pending(1)).await.unwrap_err();
    assert_eq!(error.party(), Some(p(1)), "{error}");
    assert!(
        error
            .to_string()
            .contains("party 1 ended the session (failed: its share store failed)"),
        "{error}"
    );

    // No end: after the grace, the peer is gone.
    let (mut link, _to, mut peers) = receiver(&states).await;
    drop(peers.remove(0));
    let error = link.send_control(Control::Pending(1)).await.unwrap_err();
    assert!(matches!(error, LinkError::Gone { .. }), "{error}");
    assert_eq!(error.party(), Some(p(1)), "{error}");
    assert!(
        error.to_string().contains("its mailbox is closed"),
        "{error}"
    );
}

/// A peer that floods this party's mailbox before this party found every peer is named, and
/// what it sent is not kept beyond the bound.
#[tokio::test]
async fn a_peer_flooding_the_mailbox_before_the_others_are_found_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let state = sqlite(&dir).await;
    // Party 2 never comes, so party 0 is still looking when the flood arrives.
    let (opening, _one, to_zero) = party_zero_looking(&state, &state).await;
    let boxes = state.mailboxes();
    let part = raw(1, Body::Part(vec![7; MAX_PART]));
    let mut sent = 0;
    while sent <= tessera_server::session_link::MAX_EARLY_BYTES {
        if !boxes.send(&to_zero, part.clone()).await.unwrap() {
            // Party 0 stopped (and closed its mailbox) once the bound was passed.
            break;
        }
        sent += part.len();
    }
    let error = opening.await.unwrap().err().unwrap();
    assert_eq!(error.party(), Some(p(1)), "{error}");
    assert!(
        error
            .to_string()
            .contains("party 1 sent more than 2097152 bytes before this party found its peers"),
        "{error}"
    );
}
