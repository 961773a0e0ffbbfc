"""Verifies a signed Bitcoin transaction's P2WPKH (BIP-143) and P2PKH (legacy) input signatures
with embit, independently of the Rust `bitcoin` crate; crates/tessera-api/tests/btc.rs runs it.

Reads JSON on stdin: {"tx": hex, "prevouts": [{"script": hex, "value": sats}, ...],
"check": [input indices]}. For each input to check: the key's hash must be the one the spent
script pays to, the signature's sighash byte SIGHASH_ALL, and the ECDSA signature must verify
over the sighash embit computes itself. Prints {"verified": [...]} and exits 0, or prints what
failed and exits 1.
"""

import json
import sys

from embit import ec, hashes, script
from embit.script import Script
from embit.transaction import SIGHASH, Transaction


def pushes(script_sig: bytes):
    """The data pushes of a scriptSig made only of direct pushes (1..75 bytes)."""
    out, i = [], 0
    while i < len(script_sig):
        n = script_sig[i]
        if not 1 <= n <= 75:
            raise ValueError("scriptSig is not a list of short pushes")
        out.append(script_sig[i + 1 : i + 1 + n])
        i += 1 + n
    return out


def main():
    req = json.load(sys.stdin)
    tx = Transaction.parse(bytes.fromhex(req["tx"]))
    if len(tx.vin) != len(req["prevouts"]):
        raise SystemExit("prevouts do not match the inputs")
    verified = []
    for i in req["check"]:
        spk = Script(bytes.fromhex(req["prevouts"][i]["script"]))
        value = req["prevouts"][i]["value"]
        kind = spk.script_type()
        if kind == "p2wpkh":
            items = tx.vin[i].witness.items
            if len(items) != 2 or tx.vin[i].script_sig.data:
                raise SystemExit(f"input {i}: not a P2WPKH witness")
            sig, pub = items
            if hashes.hash160(pub) != spk.data[2:]:
                raise SystemExit(f"input {i}: the key does not match the script")
            h = tx.sighash_segwit(i, script.p2pkh_from_p2wpkh(spk), value, SIGHASH.ALL)
        elif kind == "p2pkh":
            items = pushes(tx.vin[i].script_sig.data)
            if len(items) != 2 or tx.vin[i].witness.items:
                raise SystemExit(f"input {i}: not a P2PKH scriptSig")
            sig, pub = items
            if hashes.hash160(pub) != spk.data[3:23]:
                raise SystemExit(f"input {i}: the key does not match the script")
            h = tx.sighash_legacy(i, spk, SIGHASH.ALL)
        else:
            raise SystemExit(f"input {i}: unexpected script type {kind}")
        if sig[-1] != SIGHASH.ALL:
            raise SystemExit(f"input {i}: sighash byte {sig[-1]} is not SIGHASH_ALL")
        key = ec.PublicKey.parse(pub)
        if not key.verify(ec.Signature.parse(sig[:-1]), h):
            raise SystemExit(f"input {i}: the signature does not verify")
        verified.append(i)
    print(json.dumps({"verified": verified}))


if __name__ == "__main__":
    main()
