"""The Python bindings of the device SDK against a real `tessera server`.

Run by crates/tessera-cli/tests/bindings.rs (scripts/test), which starts the server and sets
TESSERA_SERVER_URL, and TESSERA_CLI to the `tessera` binary for the test with a CLI device.
Every device here keeps its home in Python (an in-memory `AppStorage`), answers user-presence
questions from Python, and, in device-to-device mode, talks to the other device over a link
made of two Python queues. Signatures are checked with independent verifiers (eth-account,
coincurve).
"""

import asyncio
import json
import os
import queue
import subprocess
import tempfile
import threading
import uuid

import pytest
import rlp  # eth-account's dependency
from coincurve import PublicKey
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.typed_transactions import TypedTransaction
from eth_utils import keccak, to_checksum_address
from hexbytes import HexBytes

import tessera
from tessera import ActionKind, TesseraError

PASSPHRASE = "correct horse battery staple, ünïcödé"
CLI_PASSPHRASE = "the cli device's own passphrase"
MESSAGE = "Tessera from Python: sign in at example.org, nonce 42"
TX = {
    "chain_id": 1,
    "nonce": 0,
    "max_fee_per_gas": "30000000000",
    "max_priority_fee_per_gas": "1000000000",
    "gas_limit": 21000,
    "to": "0x1111111111111111111111111111111111111111",
    "value": "1000",
    "data": "0x",
}
# Longest a peer link waits for the other side's next frame before it reports the link closed
# (so that a failure on one side cannot hang the other forever).
LINK_TIMEOUT = 120
# Longest one side of a peer run may take.
PEER_RUN_TIMEOUT = 300


# ---------------------------------------------------------------------------------------------
# The app's side: storage, user presence, progress, the peer link and its prompt.


# The device home in memory: the package's own dict-of-blobs AppStorage (tessera/memory.py).
MemoryStorage = tessera.MemoryStorage


class Presence(tessera.UserPresence):
    """Records what the user was asked; answers `self.answer`."""

    def __init__(self, answer=True):
        self.answer = answer
        self.asked = []
        self.lock = threading.Lock()

    def confirm(self, action):
        with self.lock:
            self.asked.append(action)
        return self.answer

    def kinds(self):
        with self.lock:
            return [a.kind for a in self.asked]


class Progress(tessera.ProgressListener):
    def __init__(self):
        self.rounds = []

    def on_round(self, round, total):
        self.rounds.append((round, total))


class QueueTransport(tessera.PeerTransport):
    """One end of a link made of two queues. `None` on a queue means the other end closed."""

    def __init__(self, inbox, outbox, tamper=None):
        self.inbox = inbox
        self.outbox = outbox
        self.tamper = tamper
        self.closed = False
        self.sent = 0

    def send(self, frame):
        frame = bytes(frame)
        self.sent += 1
        if self.tamper is not None:
            frame = self.tamper(frame)
        self.outbox.put(frame)

    def recv(self):
        if self.closed:
            return None
        try:
            frame = self.inbox.get(timeout=LINK_TIMEOUT)
        except queue.Empty:
            frame = None
        if frame is None:
            self.closed = True
        return frame

    def close(self):
        # The SDK calls this when its session is over (and the test when a side ends): the
        # other end sees the link close after the frames already sent, and a `recv` of ours
        # still waiting ends too.
        self.outbox.put(None)
        self.inbox.put(None)


def link():
    """Two joined transports: (a, b)."""
    a_to_b, b_to_a = queue.Queue(), queue.Queue()
    return QueueTransport(b_to_a, a_to_b), QueueTransport(a_to_b, b_to_a)


class Prompt(tessera.PeerPrompt):
    def __init__(self, accept=True):
        self.accept = accept
        self.seen = []
        self.confirmed = threading.Event()

    def confirm_code(self, peer_name, code):
        self.seen.append((peer_name, code))
        self.confirmed.set()
        return self.accept


class Side(threading.Thread):
    """One device's side of a peer run: its own thread and event loop (each side blocks in
    its transport's `recv` while it waits for the other). Closes its end of the link when done,
    so that the other side sees the link close instead of waiting."""

    def __init__(self, name, make_coroutine, transport):
        super().__init__(name=name, daemon=True)
        self.make_coroutine = make_coroutine
        self.transport = transport
        self.value = None
        self.error = None

    def run(self):
        try:
            self.value = asyncio.run(self.make_coroutine())
        except BaseException as e:  # noqa: B036 - reported by outcome()
            self.error = e
        finally:
            self.transport.close()

    def outcome(self):
        self.join(PEER_RUN_TIMEOUT)
        assert not self.is_alive(), f"{self.name} did not finish in {PEER_RUN_TIMEOUT} s"
        return self.value, self.error


def both(a, b):
    a.start()
    b.start()
    return a.outcome(), b.outcome()


# ---------------------------------------------------------------------------------------------
# Helpers.


@pytest.fixture(scope="session")
def server_url():
    url = os.environ.get("TESSERA_SERVER_URL")
    if not url:
        pytest.fail(
            "TESSERA_SERVER_URL is not set: these tests run against a real server, started by "
            "`cargo test -p tessera-cli --test bindings` (see scripts/test)",
            pytrace=False,
        )
    return url


@pytest.fixture(scope="session")
def cli():
    path = os.environ.get("TESSERA_CLI")
    if not path or not os.access(path, os.X_OK):
        pytest.fail(
            f"TESSERA_CLI ({path!r}) is not the `tessera` binary: run these tests through "
            "`cargo test -p tessera-cli --test bindings`",
            pytrace=False,
        )
    return path


def fresh_user():
    return f"py-{uuid.uuid4().hex[:12]}"


def run(coroutine):
    return asyncio.run(coroutine)


def unhex(text):
    return bytes.fromhex(text[2:] if text.startswith("0x") else text)


def eth_address_of(public_key_hex):
    point = PublicKey(unhex(public_key_hex)).format(compressed=False)
    return to_checksum_address(keccak(point[1:])[-20:])


def check_message_signature(sig, wallet, message):
    """The signature of `message` (EIP-191) verifies under the wallet's key, independently."""
    rsv = unhex(sig.signature65)
    assert len(rsv) == 65
    assert rsv[:32] == unhex(sig.r).rjust(32, b"\0")
    assert rsv[32:64] == unhex(sig.s).rjust(32, b"\0")
    assert rsv[64] in (27, 28) and rsv[64] - 27 == sig.recovery_id
    assert sig.public_key.lower() == wallet.public_key.lower()
    # eth-account: recovers the address from r||s||v.
    recovered = Account.recover_message(encode_defunct(text=message), signature=rsv)
    assert recovered == wallet.eth_address
    # libsecp256k1 (coincurve): the DER signature verifies over the EIP-191 hash, and the
    # 65-byte form recovers the wallet's key.
    data = message.encode()
    digest = keccak(b"\x19Ethereum Signed Message:\n" + str(len(data)).encode() + data)
    key = PublicKey(unhex(wallet.public_key))
    assert key.verify(unhex(sig.der), digest, hasher=None)
    recovered_key = PublicKey.from_signature_and_message(
        rsv[:64] + bytes([sig.recovery_id]), digest, hasher=None
    )
    assert recovered_key.format(compressed=True) == key.format(compressed=True)


async def new_device(server_url, presence=None, user=None, name="py-phone"):
    """A registered, connected device with its own in-memory storage."""
    storage = MemoryStorage()
    presence = presence or Presence()
    device = tessera.TesseraDevice(storage, presence)
    registration = await device.register(server_url, user or fresh_user(), name, PASSPHRASE)
    online = await device.connect(PASSPHRASE)
    return storage, presence, device, registration, online


# ---------------------------------------------------------------------------------------------
# Server mode.


def test_a_device_registers_makes_a_wallet_and_signs_a_message_and_a_transaction(server_url):
    storage, presence = MemoryStorage(), Presence()
    device = tessera.TesseraDevice(storage, presence)
    assert not device.is_set_up()
    assert device.local_wallets() == []
    keygen_progress, message_progress, tx_progress = Progress(), Progress(), Progress()

    async def main():
        registration = await device.register(server_url, fresh_user(), "py-phone", PASSPHRASE)
        online = await device.connect(PASSPHRASE)
        wallet = await online.keygen("main", keygen_progress)
        message_sig = await online.sign_message("main", MESSAGE, message_progress)
        tx_sig = await online.sign_eth_tx("main", json.dumps(TX), tx_progress)
        listed = await online.wallets()
        return registration, online, wallet, message_sig, tx_sig, listed

    registration, online, wallet, message_sig, tx_sig, listed = run(main())

    # The first device of a new user is active at once.
    assert registration.status == "active"
    assert registration.approval_code is None
    assert online.device_id() == registration.device_id
    assert device.is_set_up()
    assert device.local_wallets() == ["main"]

    assert wallet.name == "main"
    assert len(unhex(wallet.public_key)) == 33 and wallet.public_key[:2] in ("02", "03")
    assert wallet.eth_address == eth_address_of(wallet.public_key)
    assert online.pubkey("main") == wallet
    [entry] = [w for w in listed if w.name == "main"]
    assert entry.public_key.lower() == wallet.public_key.lower()
    assert entry.share_on_this_device
    assert entry.wallet_id

    check_message_signature(message_sig, wallet, MESSAGE)
    assert message_sig.raw_tx is None

    # The transaction: eth-account recovers the sender from the signed bytes, which carry the
    # fields asked for and the signature returned.
    assert tx_sig.raw_tx is not None
    raw = unhex(tx_sig.raw_tx)
    assert raw[0] == 2  # EIP-1559
    assert Account.recover_transaction(raw) == wallet.eth_address
    fields = TypedTransaction.from_bytes(HexBytes(raw)).as_dict()
    assert fields["chainId"] == TX["chain_id"]
    assert fields["nonce"] == TX["nonce"]
    assert fields["maxFeePerGas"] == int(TX["max_fee_per_gas"])
    assert fields["maxPriorityFeePerGas"] == int(TX["max_priority_fee_per_gas"])
    assert fields["gas"] == TX["gas_limit"]
    assert fields["to"].hex().lower().removeprefix("0x") == TX["to"][2:]
    assert fields["value"] == int(TX["value"])
    assert fields["r"] == int.from_bytes(unhex(tx_sig.r), "big")
    assert fields["s"] == int.from_bytes(unhex(tx_sig.s), "big")
    assert fields["v"] == tx_sig.recovery_id
    signed_hash = keccak(raw[:1] + _unsigned_payload(raw))
    assert PublicKey(unhex(wallet.public_key)).verify(unhex(tx_sig.der), signed_hash, hasher=None)

    # Progress was reported round by round, ending at the last round.
    for progress in (keygen_progress, message_progress, tx_progress):
        assert progress.rounds, "no progress reported"
        assert all(1 <= r <= t for r, t in progress.rounds), progress.rounds
        assert progress.rounds[-1][0] == progress.rounds[-1][1], progress.rounds
    # The user was asked before each operation, and shown what it does.
    assert presence.kinds() == [ActionKind.KEYGEN, ActionKind.SIGN, ActionKind.SIGN], presence.asked
    assert all(action.wallet == "main" for action in presence.asked), presence.asked
    assert MESSAGE in presence.asked[1].summary, presence.asked[1]
    assert f"send {TX['value']} wei to {TX['to']}" in presence.asked[2].summary, presence.asked[2]


def _unsigned_payload(raw):
    """The RLP payload an EIP-1559 signature covers: the signed transaction without its last
    three fields (y parity, r, s)."""
    fields = rlp.decode(raw[1:])
    return rlp.encode(fields[:-3])


def test_a_refresh_keeps_the_key_and_reports_its_rounds(server_url):
    progress = Progress()

    async def main():
        _, presence, _, _, online = await new_device(server_url)
        wallet = await online.keygen("main", None)
        epoch = await online.refresh("main", progress)
        sig = await online.sign_message("main", MESSAGE, None)
        return presence, wallet, epoch, online.pubkey("main"), sig

    presence, wallet, epoch, after, sig = run(main())
    assert epoch == 1
    assert after == wallet
    check_message_signature(sig, wallet, MESSAGE)
    assert ActionKind.REFRESH in presence.kinds(), presence.asked
    rounds = [r for r, _ in progress.rounds]
    assert rounds and rounds == list(range(1, len(rounds) + 1)), progress.rounds


def test_a_refresh_reports_its_rounds_out_of_their_total(server_url):
    progress = Progress()

    async def main():
        _, _, _, _, online = await new_device(server_url)
        await online.keygen("main", None)
        await online.refresh("main", progress)

    run(main())
    assert progress.rounds and all(1 <= r <= t for r, t in progress.rounds), progress.rounds
    assert progress.rounds[-1][0] == progress.rounds[-1][1], progress.rounds


def test_the_storage_sees_only_ciphertext_and_a_lost_wallet_blob_is_a_typed_error(server_url):
    async def main():
        storage, _, device, _, online = await new_device(server_url)
        wallet = await online.keygen("main", None)
        return storage, device, online, wallet

    storage, device, online, wallet = run(main())
    names = sorted(storage.blobs)
    assert "device.json" in names, names
    wallet_blobs = [n for n in names if n.startswith("wallets/")]
    assert len(wallet_blobs) == 1 and "main" in wallet_blobs[0], names

    # No blob holds the passphrase, in any common encoding.
    secrets = [PASSPHRASE.encode(enc) for enc in ("utf-8", "utf-16-le", "utf-16-be")]
    for name, blob in storage.blobs.items():
        for secret in secrets:
            assert secret not in blob, f"{name} contains the passphrase"
    # The wallet blob does not even show the (public) key it holds a share of.
    blob = storage.blobs[wallet_blobs[0]]
    public_key = unhex(wallet.public_key)
    for needle in (
        public_key,
        public_key[1:],
        wallet.public_key.lower().encode(),
        wallet.public_key.upper().encode(),
        wallet.eth_address.encode(),
        wallet.eth_address.lower().encode(),
    ):
        assert needle not in blob, f"the wallet blob shows {needle!r}"

    # The app loses the blob: signing says which wallet is missing; the rest still works.
    assert storage.delete(wallet_blobs[0])

    async def after_loss():
        with pytest.raises(TesseraError.WalletNotFound) as missing:
            await online.sign_message("main", MESSAGE, None)
        assert isinstance(missing.value, TesseraError)
        listed = await online.wallets()
        second = await online.keygen("second", None)
        sig = await online.sign_message("second", MESSAGE, None)
        return missing.value, listed, second, sig

    missing, listed, second, sig = run(after_loss())
    assert missing.name == "main"
    assert device.local_wallets() == ["second"]
    main_entry = [w for w in listed if w.name == "main"]
    assert main_entry and not main_entry[0].share_on_this_device, listed
    check_message_signature(sig, second, MESSAGE)


class FailingStorage(MemoryStorage):
    """Storage whose methods named in `self.failing` raise `self.failure`: an arbitrary Python
    exception, or the declared StorageError."""

    def __init__(self):
        super().__init__()
        self.failing = set()
        self.failure = RuntimeError("the platform keychain is locked")

    def _check(self, method):
        if method in self.failing:
            raise self.failure

    def get(self, name):
        self._check("get")
        return super().get(name)

    def put(self, name, data):
        self._check("put")
        return super().put(name, data)

    def list(self, prefix):
        self._check("list")
        return super().list(prefix)


def test_a_failing_storage_is_a_typed_error_not_a_crash(server_url):
    storage = FailingStorage()
    device = tessera.TesseraDevice(storage, Presence())

    storage.failing = {"get"}
    with pytest.raises(TesseraError.Storage):
        device.is_set_up()
    with pytest.raises(TesseraError.Storage):
        run(device.connect(PASSPHRASE))
    storage.failing, storage.failure = {"list"}, KeyError("odd")
    with pytest.raises(TesseraError.Storage):
        device.local_wallets()
    # The declared error, with its reason.
    storage.failing, storage.failure = {"get"}, tessera.StorageError.Failed("quota exceeded")
    with pytest.raises(TesseraError.Storage) as declared:
        device.is_set_up()
    assert "quota exceeded" in str(declared.value)

    # Once the storage works again, so does the device (nothing was left half done).
    storage.failing = set()

    async def main():
        await device.register(server_url, fresh_user(), "py-phone", PASSPHRASE)
        online = await device.connect(PASSPHRASE)
        wallet = await online.keygen("main", None)
        storage.failing, storage.failure = {"get"}, OSError(5, "I/O error")
        with pytest.raises(TesseraError.Storage):
            await online.sign_message("main", MESSAGE, None)
        storage.failing = set()
        return wallet, await online.sign_message("main", MESSAGE, None)

    wallet, sig = run(main())
    check_message_signature(sig, wallet, MESSAGE)


class RaisingPresence(Presence):
    def confirm(self, action):
        super().confirm(action)
        raise RuntimeError("the biometric sensor failed")


class RaisingProgress(tessera.ProgressListener):
    def on_round(self, round, total):
        raise ValueError("the progress bar crashed")


def test_callbacks_that_raise_are_typed_errors_not_crashes(server_url):
    presence = Presence()

    async def main():
        _, _, device, _, online = await new_device(server_url, presence)
        wallet = await online.keygen("main", None)
        # A presence check that raises is no confirmation.
        raising = tessera.TesseraDevice(MemoryStorage(), RaisingPresence())
        await raising.register(server_url, fresh_user(), "py-phone", PASSPHRASE)
        with pytest.raises(TesseraError.UserRefused):
            await (await raising.connect(PASSPHRASE)).keygen("main", None)
        # A progress callback that raises is ignored: progress is for the eyes, the
        # signature it reports on completes.
        ignored = await online.sign_message("main", MESSAGE, RaisingProgress())
        # The device goes on working.
        return wallet, ignored, await online.sign_message("main", MESSAGE, None)

    wallet, ignored, sig = run(main())
    check_message_signature(ignored, wallet, MESSAGE)
    check_message_signature(sig, wallet, MESSAGE)


def test_a_refusal_by_the_user_signs_nothing_and_leaves_no_audit_record(server_url):
    presence = Presence(answer=True)
    message = "Send 5 ETH to 0x2222222222222222222222222222222222222222"

    async def main():
        _, _, _, _, online = await new_device(server_url, presence)
        await online.keygen("main", None)
        before = await online.audit("main")
        before_all = await online.audit(None)
        presence.answer = False
        with pytest.raises(TesseraError.UserRefused) as refused:
            await online.sign_message("main", message, None)
        after = await online.audit("main")
        after_all = await online.audit(None)
        presence.answer = True
        await online.sign_message("main", message, None)
        signed = await online.audit("main")
        return refused.value, before, before_all, after, after_all, signed

    refused, before, before_all, after, after_all, signed = run(main())
    assert isinstance(refused, TesseraError)
    # Refused on the device: the server never heard of it.
    assert [r.seq for r in after] == [r.seq for r in before]
    assert [r.seq for r in after_all] == [r.seq for r in before_all]
    # The refused question: a signature, of this wallet, showing the message.
    asked = presence.asked[-2]
    assert asked.kind == ActionKind.SIGN
    assert asked.wallet == "main"
    assert message in asked.summary, asked.summary
    # A signature the user accepts is audited (so the comparison above could see one).
    assert len(signed) > len(after)
    assert "sign.completed" in [r.kind for r in signed[len(after):]], [r.kind for r in signed]


def test_errors_are_typed(server_url):
    async def main():
        fresh = tessera.TesseraDevice(MemoryStorage(), Presence())
        with pytest.raises(TesseraError.NotSetUp):
            await fresh.connect(PASSPHRASE)

        _, _, device, _, online = await new_device(server_url)
        await online.keygen("main", None)

        with pytest.raises(TesseraError.WrongPassphrase):
            await device.connect("not the passphrase")
        with pytest.raises(TesseraError.InvalidArgument):
            await online.sign_digest("main", "zz", None)
        with pytest.raises(TesseraError.InvalidArgument):
            await online.sign_eth_tx("main", "{not json", None)
        with pytest.raises(TesseraError.WalletNotFound) as not_found:
            await online.sign_message("no-such-wallet", MESSAGE, None)
        assert not_found.value.name == "no-such-wallet"
        with pytest.raises(TesseraError.WalletExists) as exists:
            await online.keygen("main", None)
        assert exists.value.name == "main"
        # New wallets' policy allows transactions and messages, not raw digests: the server
        # refuses, and says why.
        with pytest.raises(TesseraError.ServerRefused) as denied:
            await online.sign_digest("main", "11" * 32, None)
        with pytest.raises(TesseraError.ServerRefused) as unknown:
            await online.revoke_device("00000000-0000-0000-0000-000000000000", False)
        return denied.value, unknown.value

    denied, unknown = run(main())
    # The status and the server's reason.
    assert denied.status == 403, repr(denied)
    assert "digest requests are not allowed" in str(denied), repr(denied)
    assert unknown.status == 404, repr(unknown)
    assert "no device" in str(unknown), repr(unknown)
    for refusal in (denied, unknown):
        assert PASSPHRASE not in str(refusal)


def test_a_backup_made_in_python_to_cli_holder_keys_verifies_and_restores(server_url, cli):
    holders = tempfile.TemporaryDirectory(prefix="tessera-holders-")
    holder_passphrase = "the holders' passphrase"

    def holder_key(label):
        env = dict(os.environ, TESSERA_HOME=holders.name)
        env["TESSERA_BACKUP_KEY_PASSPHRASE"] = holder_passphrase
        done = subprocess.run(
            [cli, "backup-key", "new", "--label", label],
            env=env, capture_output=True, text=True, timeout=300, check=False,
        )
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
        public = next(w for w in done.stdout.split() if w.startswith("tessera-holder-v1:"))
        path = os.path.join(holders.name, "backup-keys", f"{label}.key")
        assert os.path.isfile(path), done.stdout
        return public, path

    (usb, usb_file), (cloud, cloud_file) = holder_key("usb"), holder_key("cloud")
    structure = "threshold(2, usb, cloud)"

    async def main():
        _, _, device, _, online = await new_device(server_url)
        wallet = await online.keygen("main", None)
        backup = device.backup_create(PASSPHRASE, "main", structure, [usb, cloud])
        recorded = await online.record_backup(backup)
        return device, wallet, backup, recorded

    device, wallet, backup, recorded = run(main())
    assert recorded
    info = device.backup_verify(backup)
    assert info.wallet == "main"
    assert info.public_key.lower() == wallet.public_key.lower()
    assert info.party == 0
    assert "usb" in info.structure and "cloud" in info.structure, info.structure
    # Not a backup, or one altered: refused.
    with pytest.raises(TesseraError.InvalidArgument):
        device.backup_verify(b"not a backup")
    altered = bytearray(backup)
    altered[len(altered) // 2] ^= 0x01
    with pytest.raises(TesseraError.InvalidArgument):
        device.backup_verify(bytes(altered))

    # A new phone restores the share with both holders' keys (and the user's presence).
    presence = Presence()
    phone = tessera.TesseraDevice(MemoryStorage(), presence)

    async def restore(files, as_name):
        return await phone.backup_restore(PASSPHRASE, backup, files, holder_passphrase, as_name)

    with pytest.raises(TesseraError.InvalidArgument) as too_few:
        run(restore([usb_file], "restored"))  # one holder of two: says which is missing
    assert "cloud" in str(too_few.value), too_few.value
    assert phone.local_wallets() == []
    restored = run(restore([usb_file, cloud_file], "restored"))
    assert restored.name == "restored"
    assert restored.public_key.lower() == wallet.public_key.lower()
    assert restored.eth_address == wallet.eth_address
    assert phone.local_wallets() == ["restored"]
    assert presence.kinds()[-1] == ActionKind.RESTORE
    with pytest.raises(TesseraError.WalletExists):
        run(restore([usb_file, cloud_file], "restored"))
    holders.cleanup()


# ---------------------------------------------------------------------------------------------
# Device-to-device mode over the app's own link.


def test_two_devices_pair_make_a_wallet_and_sign_over_the_apps_link():
    a_presence, b_presence = Presence(), Presence()
    a_storage, b_storage = MemoryStorage(), MemoryStorage()
    a = tessera.TesseraDevice(a_storage, a_presence)
    b = tessera.TesseraDevice(b_storage, b_presence)
    a_prompt, b_prompt = Prompt(), Prompt()
    progress = Progress()
    cwd_before = set(os.listdir("."))

    a_link, b_link = link()
    (wallet, a_error), (_, b_error) = both(
        Side(
            "A keygen",
            lambda: a.peer_keygen(PASSPHRASE, "alice-phone", "shared", a_link, a_prompt, progress),
            a_link,
        ),
        Side(
            "B respond",
            lambda: b.peer_respond(PASSPHRASE, "alice-tablet", b_link, b_prompt),
            b_link,
        ),
    )
    assert a_error is None and b_error is None, (a_error, b_error)
    # Both users were shown the same 6-digit code, each with the other's name.
    [(a_peer, a_code)] = a_prompt.seen
    [(b_peer, b_code)] = b_prompt.seen
    assert a_code == b_code and len(a_code) == 6 and a_code.isdigit(), (a_code, b_code)
    assert (a_peer, b_peer) == ("alice-tablet", "alice-phone")
    assert wallet.name == "shared"
    assert wallet.eth_address == eth_address_of(wallet.public_key)
    assert progress.rounds and progress.rounds[-1][0] == progress.rounds[-1][1]
    assert a.local_wallets() == ["shared"]
    assert "shared" in b.local_wallets()
    # Peer mode's records (the paired device, the wallet's devices) are in the app's storage
    # too, and nothing was written to files.
    for storage in (a_storage, b_storage):
        assert {"peers.json", "peer-wallets.json"} <= set(storage.blobs), sorted(storage.blobs)
    assert set(os.listdir(".")) == cwd_before

    # Signing: already paired, so no code this time.
    a_link, b_link = link()
    (sig, a_error), (_, b_error) = both(
        Side(
            "A sign",
            lambda: a.peer_sign_message(
                PASSPHRASE, "alice-phone", "shared", MESSAGE, a_link, a_prompt, None
            ),
            a_link,
        ),
        Side(
            "B respond",
            lambda: b.peer_respond(PASSPHRASE, "alice-tablet", b_link, b_prompt),
            b_link,
        ),
    )
    assert a_error is None and b_error is None, (a_error, b_error)
    assert len(a_prompt.seen) == 1 and len(b_prompt.seen) == 1
    check_message_signature(sig, wallet, MESSAGE)
    # Each user confirmed each operation: A before it asked, B when asked.
    assert a_presence.kinds() == [ActionKind.PEER_KEYGEN, ActionKind.PEER_SIGN], a_presence.asked
    assert b_presence.kinds() == [ActionKind.PEER_KEYGEN, ActionKind.PEER_SIGN], b_presence.asked
    assert all(action.wallet == "shared" for action in a_presence.asked + b_presence.asked)
    assert MESSAGE in a_presence.asked[1].summary, a_presence.asked[1]


def test_a_refused_pairing_code_fails_on_both_sides():
    a = tessera.TesseraDevice(MemoryStorage(), Presence())
    b = tessera.TesseraDevice(MemoryStorage(), Presence())
    a_prompt, b_prompt = Prompt(accept=True), Prompt(accept=False)
    a_link, b_link = link()
    (wallet, a_error), (_, b_error) = both(
        Side(
            "A keygen",
            lambda: a.peer_keygen(PASSPHRASE, "bob-phone", "shared", a_link, a_prompt, None),
            a_link,
        ),
        Side(
            "B respond",
            lambda: b.peer_respond(PASSPHRASE, "bob-laptop", b_link, b_prompt),
            b_link,
        ),
    )
    assert wallet is None
    assert isinstance(a_error, TesseraError), repr(a_error)
    assert isinstance(b_error, TesseraError), repr(b_error)
    # The side whose user refused says so.
    assert isinstance(b_error, TesseraError.UserRefused), repr(b_error)
    # The other device is told, and says so too.
    assert isinstance(a_error, TesseraError.UserRefused), repr(a_error)
    assert b_prompt.seen and a_prompt.seen
    assert a.local_wallets() == [] and b.local_wallets() == []


def tamper_after_pairing(prompt):
    """A tamper function for one side's outgoing frames: flips a bit in the second frame that
    side sends after its user confirmed the pairing code (the first is its confirmation; the
    second belongs to the key generation). Returns it and the list of frames seen."""
    seen = []

    def tamper(frame):
        if not prompt.confirmed.is_set():
            return frame
        seen.append(len(frame))
        if len(seen) != 2:
            return frame
        changed = bytearray(frame)
        changed[len(changed) // 2] ^= 0x01
        return bytes(changed)

    return tamper, seen


def run_tampered_keygen(tampered_side):
    """A peer keygen between fresh devices A (leads, "dana-phone") and B (responds,
    "dana-laptop") where a frame of `tampered_side` is altered on the link after the pairing.
    Returns (A's outcome, B's outcome) as (value, error) pairs."""
    a = tessera.TesseraDevice(MemoryStorage(), Presence())
    b = tessera.TesseraDevice(MemoryStorage(), Presence())
    a_prompt, b_prompt = Prompt(), Prompt()
    a_to_b, b_to_a = queue.Queue(), queue.Queue()
    tamper, seen = tamper_after_pairing(a_prompt if tampered_side == "A" else b_prompt)
    a_link = QueueTransport(b_to_a, a_to_b, tamper if tampered_side == "A" else None)
    b_link = QueueTransport(a_to_b, b_to_a, tamper if tampered_side == "B" else None)
    outcomes = both(
        Side(
            "A keygen",
            lambda: a.peer_keygen(PASSPHRASE, "dana-phone", "shared", a_link, a_prompt, None),
            a_link,
        ),
        Side(
            "B respond",
            lambda: b.peer_respond(PASSPHRASE, "dana-laptop", b_link, b_prompt),
            b_link,
        ),
    )
    (_, a_error), (_, b_error) = outcomes
    print(f"\ntampered: a frame of {tampered_side}; A's error: {a_error!r}; B's: {b_error!r}")
    assert len(seen) >= 2, f"the run ended before a frame of {tampered_side} was tampered with"
    # Nothing was made from the altered run.
    assert outcomes[0][0] is None
    assert a.local_wallets() == [] and b.local_wallets() == []
    return outcomes


def test_a_frame_tampered_on_its_way_to_the_leading_device_aborts_naming_the_other_device():
    (_, a_error), (_, b_error) = run_tampered_keygen("B")
    # A received the altered frame: the protocol aborted, and A names the device at fault.
    assert isinstance(a_error, TesseraError.ProtocolAborted), repr(a_error)
    assert a_error.party == "dana-laptop", repr(a_error)
    assert isinstance(b_error, TesseraError), repr(b_error)


def test_a_frame_tampered_on_its_way_to_the_responding_device_aborts_naming_the_other_device():
    (_, a_error), (_, b_error) = run_tampered_keygen("A")
    assert isinstance(a_error, TesseraError), repr(a_error)
    # B received the altered frame.
    assert isinstance(b_error, TesseraError.ProtocolAborted), repr(b_error)
    assert b_error.party == "dana-phone", repr(b_error)


# ---------------------------------------------------------------------------------------------
# A Python device and a CLI device of one user.


def test_python_and_cli_devices_of_one_user_approve_each_other(server_url, cli):
    user = fresh_user()
    home = tempfile.TemporaryDirectory(prefix="tessera-cli-home-")

    def tessera_cli(*args):
        env = dict(os.environ, TESSERA_HOME=home.name, TESSERA_PASSPHRASE=CLI_PASSPHRASE)
        env.pop("TESSERA_DATABASE_URL", None)
        done = subprocess.run(
            [cli, *args], env=env, capture_output=True, text=True, timeout=300, check=False
        )
        assert done.returncode == 0, (
            f"tessera {' '.join(args)}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
        return done.stdout

    def field(out, name):
        for line in out.splitlines():
            if line.startswith(name):
                return line[len(name):].split()[0]
        raise AssertionError(f"no {name!r} in:\n{out}")

    def cli_devices():
        return {d["name"]: d for d in json.loads(tessera_cli("device", "list", "--json"))}

    async def main():
        # The Python device comes first: active.
        _, _, _, first, first_online = await new_device(server_url, user=user, name="py-phone")
        assert first.status == "active"

        # The CLI device joins: pending, with a code the Python device approves.
        out = tessera_cli("init", "--server", server_url, "--user", user, "--name", "cli-laptop")
        assert field(out, "status") == "Pending", out
        cli_id = field(out, "device id")
        approved = await first_online.approve_device(field(out, "approval code"))
        assert approved.device_id == cli_id and approved.status == "active", approved
        listed = cli_devices()
        assert {n: d["status"] for n, d in listed.items()} == {
            "py-phone": "active",
            "cli-laptop": "active",
        }, listed
        assert listed["cli-laptop"]["this_device"]

        # A second Python device: pending, and the CLI device approves it.
        storage = MemoryStorage()
        second = tessera.TesseraDevice(storage, Presence())
        pending = await second.register(server_url, user, "py-tablet", PASSPHRASE)
        assert pending.status == "pending" and pending.approval_code, pending
        with pytest.raises(TesseraError):
            await second.connect(PASSPHRASE)  # not approved yet
        out = tessera_cli("device", "approve", pending.approval_code)
        assert pending.device_id in out, out
        second_online = await second.connect(PASSPHRASE)
        assert second_online.device_id() == pending.device_id
        devices = await second_online.devices()
        return devices, cli_id, first.device_id

    devices, cli_id, first_id = run(main())
    statuses = {d.device_id: (d.name, d.status) for d in devices}
    assert statuses == {
        first_id: ("py-phone", "active"),
        cli_id: ("cli-laptop", "active"),
        [d.device_id for d in devices if d.name == "py-tablet"][0]: ("py-tablet", "active"),
    }, statuses
    home.cleanup()


def test_a_device_home_is_shared_by_the_cli_and_python(server_url, cli):
    """`TesseraDevice.open_dir` opens the home the `tessera` CLI keeps: each sees and signs
    with the wallets the other made."""
    home = tempfile.TemporaryDirectory(prefix="tessera-shared-home-")
    env = dict(os.environ, TESSERA_HOME=home.name, TESSERA_PASSPHRASE=CLI_PASSPHRASE)
    env.pop("TESSERA_DATABASE_URL", None)

    def tessera_cli(*args):
        done = subprocess.run(
            [cli, *args], env=env, capture_output=True, text=True, timeout=300, check=False
        )
        assert done.returncode == 0, (
            f"tessera {' '.join(args)}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
        return done.stdout

    tessera_cli("init", "--server", server_url, "--user", fresh_user(), "--name", "laptop")
    made_by_cli = json.loads(tessera_cli("keygen", "--name", "cli-made", "--json"))

    device = tessera.TesseraDevice.open_dir(home.name, Presence())
    assert device.is_set_up()
    assert device.local_wallets() == ["cli-made"]

    async def main():
        online = await device.connect(CLI_PASSPHRASE)
        wallet = online.pubkey("cli-made")
        sig = await online.sign_message("cli-made", MESSAGE, None)
        made_by_python = await online.keygen("python-made", None)
        return wallet, sig, made_by_python

    wallet, sig, made_by_python = run(main())
    assert wallet.public_key.lower() == made_by_cli["public_key"].lower()
    assert wallet.eth_address == made_by_cli["eth_address"]
    check_message_signature(sig, wallet, MESSAGE)
    seen_by_cli = json.loads(tessera_cli("pubkey", "--wallet", "python-made", "--json"))
    assert seen_by_cli["public_key"].lower() == made_by_python.public_key.lower()
    assert seen_by_cli["eth_address"] == made_by_python.eth_address
    home.cleanup()
