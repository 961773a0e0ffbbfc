//! Writes the seed corpus of every fuzz target from real messages and files, made by the real
//! code (no binaries are committed): `cargo run --release --example seeds -- <corpus dir>`
//! (`scripts/fuzz` runs it). Each target's seeds go to `<corpus dir>/<target>/`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};

use tessera_api::session_frame::{End, EndReason, Frame, end_frame, message_frames};
use tessera_backup::holder::HolderSecretKey;
use tessera_backup::wallet::backup_share;
use tessera_client::WalletRecord;
use tessera_client::peer::wire::{Message, Participant, Request};
use tessera_core::driver::Control;
use tessera_core::structure::AccessStructure;
use tessera_core::{Session, runner};
use tessera_fuzz::{
    Rounds, Shape, envelope_victim, keygen_sessions, p, prepare, refresh_sessions, shares,
    sign_sessions,
};
use tessera_store::keystore::write_backup_key_file;
use tessera_store::{Keystore, KeystoreOptions, Passphrase, kek};

struct Corpus {
    root: PathBuf,
    written: usize,
}

impl Corpus {
    fn put(&mut self, target: &str, seed: &[u8]) {
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        let n = std::fs::read_dir(&dir).unwrap().count();
        std::fs::write(dir.join(format!("seed-{n:03}")), seed).unwrap();
        self.written += 1;
    }

    fn tagged(&mut self, target: &str, tag: u8, body: &[u8]) {
        let mut seed = vec![tag];
        seed.extend_from_slice(body);
        self.put(target, &seed);
    }
}

fn copy(share: &tessera_core::KeyShare) -> tessera_core::KeyShare {
    tessera_core::KeyShare::from_bytes(&share.to_bytes()).unwrap()
}

fn long_framed(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        out.extend_from_slice(&u16::try_from(f.len()).unwrap().to_be_bytes());
        out.extend_from_slice(f);
    }
    out
}

fn short_framed(chunks: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in chunks {
        for piece in c.chunks(255) {
            out.push(u8::try_from(piece.len()).unwrap());
            out.extend_from_slice(piece);
        }
    }
    out
}

fn protocols(c: &mut Corpus) {
    for seed in Rounds::new(keygen_sessions).seeds() {
        c.put("keygen_round", &seed);
    }
    for seed in Rounds::new(sign_sessions).seeds() {
        c.put("sign_round", &seed);
    }
    for seed in Rounds::new(refresh_sessions).seeds() {
        c.put("refresh_round", &seed);
    }
    // The envelope target's victim waits for exactly this envelope; other rounds' and
    // protocols' envelopes give the mutator other headers.
    c.put("envelope", &envelope_victim().held.to_bytes());
    c.put(
        "envelope",
        &prepare(keygen_sessions(Shape::TwoOfTwo), 2)[0]
            .held
            .to_bytes(),
    );
    c.put(
        "envelope",
        &prepare(sign_sessions(Shape::TwoOfTwo), 1)[0]
            .held
            .to_bytes(),
    );
    // Session frames: a whole envelope split into parts, a control, ends.
    let envelope = envelope_victim().held.to_bytes();
    let mut frames = message_frames(p(1), &envelope).unwrap();
    c.put("session_frame", &long_framed(&frames));
    let control = Frame {
        from: p(1),
        body: tessera_api::session_frame::Body::Control(Control::Pending(3)),
    };
    frames.push(control.encode().unwrap());
    frames.push(end_frame(p(1), &End::finished()));
    c.put("session_frame", &long_framed(&frames));
    let left = end_frame(p(2), &End::new(EndReason::Left, "declined the invitation"));
    c.put("session_frame", &long_framed(&[left]));
}

fn files(c: &mut Corpus, scratch: &Path) {
    let holders: Vec<HolderSecretKey> = ["alice", "bob", "carol"]
        .iter()
        .map(|l| HolderSecretKey::generate(*l).unwrap())
        .collect();
    let publics: Vec<_> = holders.iter().map(HolderSecretKey::public).collect();
    let structure = AccessStructure::parse("threshold(2, alice, bob, carol)").unwrap();
    for shape in [Shape::TwoOfTwo, Shape::TwoOfThree] {
        let share = &shares(shape)[0];
        c.tagged("share_files", 0, &share.to_bytes());
        let backup = backup_share(share, "vault", &structure, &publics).unwrap();
        c.tagged("share_files", 1, &backup.to_bytes());
        c.tagged("share_files", 3, &WalletRecord::new(copy(share)).to_bytes());
    }
    // A structure wallet's share (format 2).
    let structure_shares = runner::keygen_structure(
        &tessera_core::structure::WalletStructure::parse("and(server, or(phone, laptop))").unwrap(),
    )
    .unwrap();
    c.tagged("share_files", 0, &structure_shares[1].to_bytes());
    c.tagged("share_files", 2, publics[0].to_text().as_bytes());
    let kek = kek::FileKek::open_or_create(scratch.join("kek")).unwrap();
    let sealed = kek::seal(&kek, &shares(Shape::TwoOfTwo)[1].to_bytes(), b"aad").unwrap();
    c.tagged("share_files", 4, &postcard::to_allocvec(&sealed).unwrap());
    c.tagged("share_files", 4, &serde_json::to_vec(&sealed).unwrap());

    // Keystore entries, with the fuzz target's passphrase and the fast test parameters.
    let options = KeystoreOptions::default().insecure_fast_kdf_for_tests();
    let passphrase = || Passphrase::new("fuzzing passphrase".into()).unwrap();
    let dir = scratch.join("keystore");
    let keystore = Keystore::open_with(&dir, options).unwrap();
    keystore.create_identity(&passphrase()).unwrap();
    keystore
        .save_wallet(
            "w",
            &WalletRecord::new(copy(&shares(Shape::TwoOfTwo)[0])).to_bytes(),
            &passphrase(),
        )
        .unwrap();
    let holder_file = scratch.join("holder.key");
    write_backup_key_file(&holder_file, "alice", &[3; 32], &passphrase(), &options).unwrap();
    c.tagged(
        "keystore_entry",
        0,
        &std::fs::read(dir.join("identity.key")).unwrap(),
    );
    c.tagged(
        "keystore_entry",
        1,
        &std::fs::read(dir.join("wallets/w.share")).unwrap(),
    );
    c.tagged("keystore_entry", 2, &std::fs::read(&holder_file).unwrap());
}

fn texts(c: &mut Corpus) {
    for s in [
        "and(server, or(phone, laptop))",
        "threshold(2, alice, bob, carol)",
        "or(and(a, b), threshold(2, c, d, e), f)",
        "and(server, threshold(2, alice.phone, bob.phone, carol.laptop))",
    ] {
        AccessStructure::parse(s).expect("the structure seed parses");
        c.tagged("text_inputs", 0, s.as_bytes());
        c.tagged("text_inputs", 1, s.as_bytes());
    }
    let wallet = "00112233445566778899aabbccddeeff";
    let policy = format!(
        r#"{{"wallet_id":"{wallet}","version":2,"policy":{{"allowed_kinds":["eth-tx","eth-message"],"chain_ids":[1,10],"destinations":["0x00000000000000000000000000000000000000aa"],"max_value_per_tx":"1000000000000000000","max_value_per_24h":"5000000000000000000","max_fee_per_tx":"100000","hours_utc":[8,18],"require_approval":true,"approval_timeout_secs":600}},"signature":"00"}}"#
    );
    // The seeds must reach past the readers, so each is read here as the target reads it.
    serde_json::from_str::<tessera_api::SetPolicy>(&policy).expect("the policy seed reads");
    c.tagged("text_inputs", 2, policy.as_bytes());
    c.tagged(
        "text_inputs",
        2,
        format!(r#"{{"wallet_id":"{wallet}","version":1,"policy":{{}},"signature":""}}"#)
            .as_bytes(),
    );
    for intent in [
        r#"{"kind":"digest","digest":"4242424242424242424242424242424242424242424242424242424242424242"}"#,
        r#"{"kind":"eth-message","message":"sign in to example.org"}"#,
        r#"{"kind":"eth-tx","tx":{"chain_id":1,"nonce":0,"max_priority_fee_per_gas":"1000000000","max_fee_per_gas":"30000000000","gas_limit":21000,"to":"0x00000000000000000000000000000000000000aa","value":"1000","data":"0x"}}"#,
    ] {
        let kind: tessera_api::intent::SignKind = serde_json::from_str(intent).unwrap();
        tessera_api::intent::decode(&kind).expect("the intent seed decodes");
        c.tagged("text_inputs", 3, intent.as_bytes());
    }
    for name in [
        "Alice's phone",
        "laptop",
        "ноутбук",
        "pay\u{202e}lapyap",
        "pho\u{200b}ne",
        "ＰＨＯＮＥ",
    ] {
        c.tagged("text_inputs", 4, name.as_bytes());
    }
    for path in ["m", "m/0", "m/44/60/0/0/7"] {
        c.tagged("text_inputs", 5, path.as_bytes());
    }
    // The newer signing intents (issue 17): an EIP-712 message (the EIP's own example), a
    // legacy transaction, an EIP-7702 authorisation.
    for intent in [
        r#"{"kind":"eth-typed-data","typed_data":{"types":{"EIP712Domain":[{"name":"name","type":"string"},{"name":"version","type":"string"},{"name":"chainId","type":"uint256"},{"name":"verifyingContract","type":"address"}],"Person":[{"name":"name","type":"string"},{"name":"wallet","type":"address"}],"Mail":[{"name":"from","type":"Person"},{"name":"to","type":"Person"},{"name":"contents","type":"string"}]},"primaryType":"Mail","domain":{"name":"Ether Mail","version":"1","chainId":1,"verifyingContract":"0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC"},"message":{"from":{"name":"Cow","wallet":"0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"},"to":{"name":"Bob","wallet":"0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"},"contents":"Hello, Bob!"}}}"#,
        r#"{"kind":"eth-tx","tx":{"type":"legacy","chain_id":1,"nonce":9,"gas_price":"20000000000","gas_limit":21000,"to":"0x3535353535353535353535353535353535353535","value":"1000000000000000000","data":"0x"}}"#,
        r#"{"kind":"eth-authorization","authorization":{"chain_id":1,"address":"0x5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a","nonce":0}}"#,
    ] {
        let kind: tessera_api::intent::SignKind = serde_json::from_str(intent).unwrap();
        tessera_api::intent::decode(&kind).expect("the intent seed decodes");
        c.tagged("text_inputs", 3, intent.as_bytes());
    }
    // PSBTs: the fixtures of crates/tessera-api/tests/data/btc, made by embit, as binary.
    let fixtures = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crates/tessera-api/tests/data/btc"
    );
    for name in [
        "wallet_p2wpkh",
        "wallet_p2pkh_default_path",
        "mixed_other_wallet",
        "taproot",
    ] {
        let text = std::fs::read_to_string(format!("{fixtures}/{name}.psbt")).unwrap();
        let psbt = tessera_api::btc::parse_psbt(text.as_bytes()).expect("the PSBT seed reads");
        c.tagged("text_inputs", 6, &psbt.serialize());
    }
    // Call data: an ERC-20 transfer and approval, an ERC-721 operator approval.
    {
        use tessera_api::calls::{Address, Erc20, Erc721, SolCall};
        use tessera_api::intent::U256;
        let to = Address::repeat_byte(0xb0);
        c.tagged(
            "text_inputs",
            7,
            &Erc20::transferCall {
                to,
                amount: U256::from(1_500_000u64),
            }
            .abi_encode(),
        );
        c.tagged(
            "text_inputs",
            7,
            &Erc20::approveCall {
                spender: to,
                amount: U256::MAX,
            }
            .abi_encode(),
        );
        c.tagged(
            "text_inputs",
            7,
            &Erc721::setApprovalForAllCall {
                operator: to,
                approved: true,
            }
            .abi_encode(),
        );
    }
}

fn peer(c: &mut Corpus) {
    let participant = |name: &str| Participant {
        name: name.into(),
        identity: [5; 32],
        address: Some("192.168.1.20:7000".into()),
    };
    let messages = [
        Message::Hello {
            name: "phone".into(),
            identity: [1; 32],
            signature: vec![2; 64],
        },
        Message::Trust { needs_code: true },
        Message::Commit([3; 32]),
        Message::Nonce([4; 32]),
        Message::Reveal([5; 32]),
        Message::Confirm { accepted: true },
        Message::Request(Request::Pair),
        Message::Request(Request::Keygen {
            wallet: "vault".into(),
            wallet_id: [6; 16],
            threshold: 2,
            parties: vec![participant("phone"), participant("laptop")],
            nonce: [7; 32],
        }),
        Message::Request(Request::Sign {
            wallet: "vault".into(),
            wallet_id: [6; 16],
            message: "hello".into(),
            path: "m/0".into(),
            signers: vec![0, 1],
            nonce: [8; 32],
        }),
        Message::Start {
            nonces: vec![[9; 32], [10; 32]],
        },
        Message::Envelope(envelope_victim().held.to_bytes()),
        Message::Refuse {
            reason: "no".into(),
        },
        Message::Done,
        Message::RefreshPending { epoch: 1 },
        Message::Held {
            wallet: "vault".into(),
            current: 1,
            pending: Some(2),
        },
    ];
    // Mode 1: each message sent by the honest initiator (flag 0), one raw garbage frame (flag 1).
    let chunks: Vec<Vec<u8>> = messages
        .iter()
        .map(|m| {
            let mut chunk = vec![0];
            chunk.extend_from_slice(&m.to_bytes());
            chunk
        })
        .collect();
    for chunk in &chunks {
        if chunk.len() <= 255 {
            c.tagged(
                "peer_channel",
                1,
                &short_framed(std::slice::from_ref(chunk)),
            );
        }
    }
    let small: Vec<Vec<u8>> = chunks.iter().filter(|c| c.len() <= 255).cloned().collect();
    c.tagged("peer_channel", 1, &short_framed(&small));
    c.tagged("peer_channel", 1, &short_framed(&[vec![1, 0, 0, 0, 0]]));
    // Mode 0: handshake-shaped frames (Noise XX's first message is a 32-byte key).
    c.tagged(
        "peer_channel",
        0,
        &long_framed(&[vec![0x11; 32], vec![0x22; 96]]),
    );
}

fn main() {
    let root = std::env::args()
        .nth(1)
        .map_or_else(|| PathBuf::from("corpus"), PathBuf::from);
    let scratch = tempfile::tempdir().unwrap();
    let mut corpus = Corpus { root, written: 0 };
    protocols(&mut corpus);
    files(&mut corpus, scratch.path());
    texts(&mut corpus);
    peer(&mut corpus);
    // Keep the compiler honest about the one trait the fixtures need in scope.
    let _ = <tessera_core::SignSession as Session>::total_rounds;
    println!(
        "{} seeds written under {}",
        corpus.written,
        corpus.root.display()
    );
}
