"""Builds the PSBT fixtures of crates/tessera-api/tests/btc.rs with embit, a Bitcoin library
independent of the Rust `bitcoin` crate that Tessera uses, and signs and finalises a copy of each
with embit too, so that the Rust test can compare its own signed transaction with embit's byte for
byte.

Run it from anywhere with a python that has embit 0.8.0:

    /work/pyvenv/bin/python crates/tessera-api/tests/data/btc/make_psbt.py

It writes, next to itself, for each case NAME:
- NAME.psbt        the unsigned PSBT, base64 (BIP-174);
- NAME.embit.hex   the transaction embit signed (RFC 6979 nonces, ground to a low R as Bitcoin
                   Core does) and finalised, hex; present when embit could sign every input.

Everything is deterministic: fixed keys, fabricated previous transactions, no randomness.
"""

import hashlib
import os

from embit import bip32, ec, script
from embit.finalizer import finalize_psbt
from embit.psbt import PSBT, DerivationPath
from embit.script import Script
from embit.transaction import Transaction, TransactionInput, TransactionOutput

HERE = os.path.dirname(os.path.abspath(__file__))


def sha256(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


# The wallet's root key, standing in for the threshold wallet (whose private key never exists):
# the Rust test builds the same key from the same two strings.
WALLET = bip32.HDKey(
    ec.PrivateKey(sha256("tessera btc test wallet key")),
    sha256("tessera btc test wallet chain code"),
    version=bip32.NETWORKS["test"]["xprv"],
)
FINGERPRINT = WALLET.my_fingerprint
# Someone else's wallet (a co-spender in a joint transaction, or a payee).
OTHER = bip32.HDKey(
    ec.PrivateKey(sha256("tessera btc test other key")),
    sha256("tessera btc test other chain code"),
    version=bip32.NETWORKS["test"]["xprv"],
)


def wallet_key(path):
    return WALLET.derive(path)


def other_key(path):
    return OTHER.derive(path)


def prev_tx(seed: str, outputs):
    """A fabricated previous transaction paying `outputs` [(script, value)]; its txid is what
    the PSBT's inputs spend."""
    vin = [TransactionInput(sha256(seed), 0, sequence=0xFFFFFFFE)]
    vout = [TransactionOutput(value, spk) for spk, value in outputs]
    return Transaction(version=2, vin=vin, vout=vout, locktime=0)


def derivation(fingerprint, path):
    return DerivationPath(fingerprint, path)


def spend(spec, outputs, locktime=0):
    """A PSBT spending `spec` [dict(tx, vout, witness_utxo, non_witness_utxo, derivation,
    ...)] to `outputs` [(script, value, derivation or None)]."""
    vin = [
        TransactionInput(s["tx"].txid(), s["vout"], sequence=0xFFFFFFFD) for s in spec
    ]
    vout = [TransactionOutput(value, spk) for spk, value, _ in outputs]
    psbt = PSBT(Transaction(version=2, vin=vin, vout=vout, locktime=locktime))
    for inp, s in zip(psbt.inputs, spec):
        utxo = s["tx"].vout[s["vout"]]
        if s.get("witness_utxo", False):
            inp.witness_utxo = utxo
        if s.get("non_witness_utxo", False):
            inp.non_witness_utxo = s["tx"]
        for pub, der in s.get("bip32", []):
            inp.bip32_derivations[pub] = der
        for pub, der in s.get("tap_bip32", []):
            inp.taproot_bip32_derivations[pub] = ([], der)
        if "tap_internal_key" in s:
            inp.taproot_internal_key = s["tap_internal_key"]
        if "redeem_script" in s:
            inp.redeem_script = s["redeem_script"]
        if "witness_script" in s:
            inp.witness_script = s["witness_script"]
    for out, (_, _, der) in zip(psbt.outputs, outputs):
        if der is not None:
            pub, d = der
            out.bip32_derivations[pub] = d
    return psbt


def write(name, psbt, signers):
    with open(os.path.join(HERE, name + ".psbt"), "w") as f:
        f.write(psbt.to_base64() + "\n")
    embit_path = os.path.join(HERE, name + ".embit.hex")
    if not signers:
        if os.path.exists(embit_path):
            os.remove(embit_path)
        return
    signed = PSBT.from_base64(psbt.to_base64())
    for key in signers:
        assert signed.sign_with(key) > 0, (name, key)
    tx = finalize_psbt(signed)
    assert tx is not None, name
    with open(embit_path, "w") as f:
        f.write(tx.serialize().hex() + "\n")


def main():
    payee = other_key("m/0/0").get_public_key()
    external_wpkh = script.p2wpkh(payee)
    external_pkh = script.p2pkh(other_key("m/0/1").get_public_key())
    op_return = Script(b"\x6a\x07tessera")

    # 1. Two P2WPKH inputs of the wallet with their keys' paths, change back to the wallet, an
    #    OP_RETURN. Input 1 also carries the whole previous transaction.
    k00 = wallet_key("m/0/0").get_public_key()
    k01 = wallet_key("m/0/1").get_public_key()
    k10 = wallet_key("m/1/0").get_public_key()
    t1 = prev_tx("p2wpkh a", [(external_pkh, 7_000), (script.p2wpkh(k00), 150_000)])
    t2 = prev_tx("p2wpkh b", [(script.p2wpkh(k01), 250_000)])
    psbt = spend(
        [
            dict(tx=t1, vout=1, witness_utxo=True,
                 bip32=[(k00, derivation(FINGERPRINT, [0, 0]))]),
            dict(tx=t2, vout=0, witness_utxo=True, non_witness_utxo=True,
                 bip32=[(k01, derivation(FINGERPRINT, [0, 1]))]),
        ],
        [
            (external_wpkh, 300_000, None),
            (script.p2wpkh(k10), 95_000, (k10, derivation(FINGERPRINT, [1, 0]))),
            (op_return, 0, None),
        ],
        locktime=2_500_000,
    )
    write("wallet_p2wpkh", psbt, [WALLET])

    # 2. A legacy P2PKH input and a P2WPKH input, both at the wallet's default path m/0/7 and
    #    without any derivation entry: the signer must find the key itself.
    k07 = wallet_key("m/0/7")
    t3 = prev_tx("p2pkh", [(script.p2pkh(k07.get_public_key()), 100_000)])
    t4 = prev_tx("p2wpkh default", [(script.p2wpkh(k07.get_public_key()), 40_000)])
    psbt = spend(
        [
            dict(tx=t3, vout=0, non_witness_utxo=True),
            dict(tx=t4, vout=0, witness_utxo=True),
        ],
        [(external_pkh, 60_000, None), (external_wpkh, 70_000, None)],
    )
    write("wallet_p2pkh_default_path", psbt, [k07])

    # 3. A joint transaction: inputs 0 and 2 are the wallet's (P2WPKH, P2PKH), input 1 is
    #    another wallet's (with that wallet's own derivation entry).
    k02 = wallet_key("m/0/2").get_public_key()
    k03 = wallet_key("m/0/3").get_public_key()
    o05 = other_key("m/0/5").get_public_key()
    t5 = prev_tx("mixed a", [(script.p2wpkh(k02), 120_000)])
    t6 = prev_tx("mixed b", [(script.p2wpkh(o05), 80_000)])
    t7 = prev_tx("mixed c", [(external_wpkh, 1), (script.p2pkh(k03), 30_000)])
    psbt = spend(
        [
            dict(tx=t5, vout=0, witness_utxo=True,
                 bip32=[(k02, derivation(FINGERPRINT, [0, 2]))]),
            dict(tx=t6, vout=0, witness_utxo=True,
                 bip32=[(o05, derivation(OTHER.my_fingerprint, [0, 5]))]),
            dict(tx=t7, vout=1, non_witness_utxo=True,
                 bip32=[(k03, derivation(FINGERPRINT, [0, 3]))]),
        ],
        [(external_wpkh, 150_000, None), (script.p2wpkh(o05), 77_000, None)],
    )
    write("mixed_other_wallet", psbt, [WALLET, OTHER])

    # 4. A Taproot key-path input of the wallet (BIP-86 output key, BIP-371 derivation).
    k04 = wallet_key("m/0/4").get_public_key()
    t8 = prev_tx("taproot", [(script.p2tr(k04), 50_000)])
    psbt = spend(
        [dict(tx=t8, vout=0, witness_utxo=True, tap_internal_key=k04,
              tap_bip32=[(k04, derivation(FINGERPRINT, [0, 4]))])],
        [(external_wpkh, 49_000, None)],
    )
    write("taproot", psbt, [])

    # 5. A P2WSH 1-of-1 multisig of the wallet's key: a script this wallet does not sign.
    k05 = wallet_key("m/0/5").get_public_key()
    ms = script.multisig(1, [k05])
    t9 = prev_tx("p2wsh", [(script.p2wsh(ms), 60_000)])
    psbt = spend(
        [dict(tx=t9, vout=0, witness_utxo=True, witness_script=ms,
              bip32=[(k05, derivation(FINGERPRINT, [0, 5]))])],
        [(external_wpkh, 59_000, None)],
    )
    write("p2wsh", psbt, [])

    # 6. P2SH-wrapped P2WPKH of the wallet's key: refused too (only native P2WPKH and P2PKH).
    k06 = wallet_key("m/0/6").get_public_key()
    redeem = script.p2wpkh(k06)
    t10 = prev_tx("p2sh-p2wpkh", [(script.p2sh(redeem), 70_000)])
    psbt = spend(
        [dict(tx=t10, vout=0, witness_utxo=True, redeem_script=redeem,
              bip32=[(k06, derivation(FINGERPRINT, [0, 6]))])],
        [(external_wpkh, 69_000, None)],
    )
    write("p2sh_p2wpkh", psbt, [])


if __name__ == "__main__":
    main()
