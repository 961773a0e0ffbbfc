"""EIP-712 test vectors for crates/tessera-api/tests/typed_data.rs, computed independently of
alloy with eth-account (0.14): each typed-data message's signing digest
keccak256(0x19 0x01 ‖ domainSeparator ‖ hashStruct(message)), cross-checked by signing it with
the EIP's example key (keccak256("cow")) and recovering the signer.

Run from this directory:  /work/pyvenv/bin/python make_vectors.py  (rewrites vectors.json).
Integers that do not fit in 53 bits are written as decimal (or 0x hex) strings so that JSON
readers without big-number support read them exactly; eth-account is given the very same JSON.
"""

import json
import pathlib

from eth_account import Account
from eth_account.messages import _hash_eip191_message, encode_typed_data
from eth_utils import keccak

COW_KEY = keccak(text="cow")
COW = Account.from_key(COW_KEY).address
assert COW == "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"

U256_MAX = str(2**256 - 1)
U160_MAX = str(2**160 - 1)
PERMIT2 = "0x000000000022D473030F116dDEE9F6B43aC78BA3"
USDC = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
DAI = "0x6B175474E89094C44Da98b954EedeAC495271d0F"
WETH = "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2"
ROUTER = "0x3fC91A3afd70395Cd496C647d5a6CC9D4B2b7FAD"
SPENDER = "0x1111111254EEB25477B68fb85Ed929f73A960582"


def field(name, type_):
    return {"name": name, "type": type_}


DOMAIN_TYPES_FULL = [
    field("name", "string"),
    field("version", "string"),
    field("chainId", "uint256"),
    field("verifyingContract", "address"),
]
PERMIT2_DOMAIN_TYPES = [
    field("name", "string"),
    field("chainId", "uint256"),
    field("verifyingContract", "address"),
]
PERMIT2_DOMAIN = {"name": "Permit2", "chainId": 1, "verifyingContract": PERMIT2}

EIP2612_PERMIT = [
    field("owner", "address"),
    field("spender", "address"),
    field("value", "uint256"),
    field("nonce", "uint256"),
    field("deadline", "uint256"),
]
DAI_PERMIT = [
    field("holder", "address"),
    field("spender", "address"),
    field("nonce", "uint256"),
    field("expiry", "uint256"),
    field("allowed", "bool"),
]
PERMIT_DETAILS = [
    field("token", "address"),
    field("amount", "uint160"),
    field("expiration", "uint48"),
    field("nonce", "uint48"),
]
TOKEN_PERMISSIONS = [field("token", "address"), field("amount", "uint256")]


def usdc_permit(value):
    return {
        "types": {"EIP712Domain": DOMAIN_TYPES_FULL, "Permit": EIP2612_PERMIT},
        "primaryType": "Permit",
        "domain": {"name": "USD Coin", "version": "2", "chainId": 1, "verifyingContract": USDC},
        "message": {
            "owner": COW,
            "spender": SPENDER,
            "value": value,
            "nonce": 0,
            "deadline": 1893456000,
        },
    }


def dai_permit(allowed):
    return {
        "types": {"EIP712Domain": DOMAIN_TYPES_FULL, "Permit": DAI_PERMIT},
        "primaryType": "Permit",
        "domain": {"name": "Dai Stablecoin", "version": "1", "chainId": 1, "verifyingContract": DAI},
        "message": {
            "holder": COW,
            "spender": SPENDER,
            "nonce": 3,
            "expiry": 1893456000,
            "allowed": allowed,
        },
    }


VECTORS = {
    # The EIP's own example (EIP-712, assets/eip-712/Example.js).
    "eip712_mail": {
        "types": {
            "EIP712Domain": DOMAIN_TYPES_FULL,
            "Person": [field("name", "string"), field("wallet", "address")],
            "Mail": [field("from", "Person"), field("to", "Person"), field("contents", "string")],
        },
        "primaryType": "Mail",
        "domain": {
            "name": "Ether Mail",
            "version": "1",
            "chainId": 1,
            "verifyingContract": "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC",
        },
        "message": {
            "from": {"name": "Cow", "wallet": COW},
            "to": {"name": "Bob", "wallet": "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"},
            "contents": "Hello, Bob!",
        },
    },
    # Arrays (dynamic, fixed, of structs, of arrays), nested structs, bytes, bytesN, bool,
    # signed and unsigned integers written as numbers, decimal strings and 0x hex; a salt.
    "everything": {
        "types": {
            "EIP712Domain": [
                field("name", "string"),
                field("chainId", "uint256"),
                field("salt", "bytes32"),
            ],
            "Person": [field("name", "string"), field("wallets", "address[]")],
            "Group": [field("name", "string"), field("members", "Person[]")],
            "Everything": [
                field("owner", "Person"),
                field("groups", "Group[]"),
                field("flags", "bool[3]"),
                field("grid", "uint16[2][]"),
                field("blob", "bytes"),
                field("emptyBlob", "bytes"),
                field("tag", "bytes4"),
                field("hash", "bytes32"),
                field("small", "int8"),
                field("big", "int256"),
                field("ratio", "uint128"),
                field("total", "uint256"),
                field("note", "string"),
                field("yes", "bool"),
                field("none", "uint256[]"),
            ],
        },
        "primaryType": "Everything",
        "domain": {
            "name": "Kitchen Sink",
            "chainId": 137,
            "salt": "0x" + "ab" * 32,
        },
        "message": {
            "owner": {"name": "Cow", "wallets": [COW, "0xDD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"]},
            "groups": [
                {
                    "name": "team",
                    "members": [
                        {"name": "Bob", "wallets": ["0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"]},
                        {"name": "Alice", "wallets": []},
                    ],
                },
                {"name": "empty", "members": []},
            ],
            "flags": [True, False, True],
            "grid": [[1, 2], [65535, 0]],
            "blob": "0xdeadbeef00",
            "emptyBlob": "0x",
            "tag": "0x12345678",
            "hash": "0x" + "0f" * 32,
            "small": -128,
            "big": "-57896044618658097711785492504343953926634992332820282019728792003956564819968",
            "ratio": "0xffffffffffffffffffffffffffffffff",
            "total": "123456789012345678901234567890",
            "note": "Grüße, 世界",
            "yes": True,
            "none": [],
        },
    },
    "permit_eip2612": usdc_permit(1000000),
    "permit_eip2612_unlimited": usdc_permit(U256_MAX),
    "permit_eip2612_zero": usdc_permit(0),
    "permit_dai": dai_permit(True),
    "permit_dai_revoke": dai_permit(False),
    "permit2_single": {
        "types": {
            "EIP712Domain": PERMIT2_DOMAIN_TYPES,
            "PermitDetails": PERMIT_DETAILS,
            "PermitSingle": [
                field("details", "PermitDetails"),
                field("spender", "address"),
                field("sigDeadline", "uint256"),
            ],
        },
        "primaryType": "PermitSingle",
        "domain": PERMIT2_DOMAIN,
        "message": {
            "details": {"token": USDC, "amount": U160_MAX, "expiration": 1718000000, "nonce": 0},
            "spender": ROUTER,
            "sigDeadline": 1716000000,
        },
    },
    "permit2_batch": {
        "types": {
            "EIP712Domain": PERMIT2_DOMAIN_TYPES,
            "PermitDetails": PERMIT_DETAILS,
            "PermitBatch": [
                field("details", "PermitDetails[]"),
                field("spender", "address"),
                field("sigDeadline", "uint256"),
            ],
        },
        "primaryType": "PermitBatch",
        "domain": PERMIT2_DOMAIN,
        "message": {
            "details": [
                {"token": USDC, "amount": 5000000, "expiration": 1718000000, "nonce": 1},
                {"token": WETH, "amount": "2000000000000000000", "expiration": 1718000000, "nonce": 0},
            ],
            "spender": ROUTER,
            "sigDeadline": 1716000000,
        },
    },
    "permit2_transfer_from": {
        "types": {
            "EIP712Domain": PERMIT2_DOMAIN_TYPES,
            "TokenPermissions": TOKEN_PERMISSIONS,
            "PermitTransferFrom": [
                field("permitted", "TokenPermissions"),
                field("spender", "address"),
                field("nonce", "uint256"),
                field("deadline", "uint256"),
            ],
        },
        "primaryType": "PermitTransferFrom",
        "domain": PERMIT2_DOMAIN,
        "message": {
            "permitted": {"token": DAI, "amount": "250000000000000000000"},
            "spender": SPENDER,
            "nonce": "0x1f",
            "deadline": 1716000000,
        },
    },
    "permit2_batch_transfer_from": {
        "types": {
            "EIP712Domain": PERMIT2_DOMAIN_TYPES,
            "TokenPermissions": TOKEN_PERMISSIONS,
            "PermitBatchTransferFrom": [
                field("permitted", "TokenPermissions[]"),
                field("spender", "address"),
                field("nonce", "uint256"),
                field("deadline", "uint256"),
            ],
        },
        "primaryType": "PermitBatchTransferFrom",
        "domain": PERMIT2_DOMAIN,
        "message": {
            "permitted": [
                {"token": DAI, "amount": "1000000000000000000"},
                {"token": USDC, "amount": 7},
            ],
            "spender": SPENDER,
            "nonce": 9,
            "deadline": 1716000000,
        },
    },
    # A UniswapX-style order: a signature transfer bound to a witness struct.
    "permit2_witness_transfer_from": {
        "types": {
            "EIP712Domain": PERMIT2_DOMAIN_TYPES,
            "TokenPermissions": TOKEN_PERMISSIONS,
            "Order": [field("reactor", "address"), field("minOut", "uint256")],
            "PermitWitnessTransferFrom": [
                field("permitted", "TokenPermissions"),
                field("spender", "address"),
                field("nonce", "uint256"),
                field("deadline", "uint256"),
                field("witness", "Order"),
            ],
        },
        "primaryType": "PermitWitnessTransferFrom",
        "domain": PERMIT2_DOMAIN,
        "message": {
            "permitted": {"token": WETH, "amount": "500000000000000000"},
            "spender": ROUTER,
            "nonce": 12,
            "deadline": 1716000000,
            "witness": {"reactor": ROUTER, "minOut": 1500000000},
        },
    },
    # Named Permit, EIP-2612's fields but one renamed (`amount` for `value`): not EIP-2612, so no
    # token action, but still hashed and shown.
    "permit_renamed_field": {
        "types": {
            "EIP712Domain": DOMAIN_TYPES_FULL,
            "Permit": [
                field("owner", "address"),
                field("spender", "address"),
                field("amount", "uint256"),
                field("nonce", "uint256"),
                field("deadline", "uint256"),
            ],
        },
        "primaryType": "Permit",
        "domain": {"name": "USD Coin", "version": "2", "chainId": 1, "verifyingContract": USDC},
        "message": {
            "owner": COW,
            "spender": SPENDER,
            "amount": 1000000,
            "nonce": 0,
            "deadline": 1893456000,
        },
    },
    # EIP-2612's fields plus one more: not EIP-2612 either.
    "permit_extra_field": {
        "types": {
            "EIP712Domain": DOMAIN_TYPES_FULL,
            "Permit": EIP2612_PERMIT + [field("memo", "string")],
        },
        "primaryType": "Permit",
        "domain": {"name": "USD Coin", "version": "2", "chainId": 1, "verifyingContract": USDC},
        "message": {
            "owner": COW,
            "spender": SPENDER,
            "value": 1000000,
            "nonce": 0,
            "deadline": 1893456000,
            "memo": "hi",
        },
    },
    # A string with a right-to-left override and zero-width characters: hashed as it is, shown
    # escaped.
    "bidi_string": {
        "types": {
            "EIP712Domain": [field("name", "string"), field("chainId", "uint256")],
            "Note": [field("text", "string"), field("to", "address")],
        },
        "primaryType": "Note",
        "domain": {"name": "Notes", "chainId": 10},
        "message": {
            "text": "pay \u202egnp.exe\u202c to bob\u200b\u200d\ufeff \"quoted\" \\ back",
            "to": SPENDER,
        },
    },
}


def main():
    out = []
    for name, typed_data in VECTORS.items():
        # Through JSON first, so that eth-account hashes exactly what the Rust test reads.
        typed_data = json.loads(json.dumps(typed_data))
        signable = encode_typed_data(full_message=typed_data)
        digest = _hash_eip191_message(signable)
        signed = Account.sign_message(signable, COW_KEY)
        assert signed.message_hash == digest
        recovered = Account.recover_message(
            encode_typed_data(full_message=typed_data), signature=signed.signature
        )
        assert recovered == COW, name
        out.append({"name": name, "digest": "0x" + digest.hex(), "typed_data": typed_data})
    assert out[0]["digest"] == (
        "0xbe609aee343fb3c4b28e1df9e632fca64fcfaede20f02e86244efddf30957bd2"
    )
    path = pathlib.Path(__file__).with_name("vectors.json")
    path.write_text(json.dumps(out, indent=1, ensure_ascii=True) + "\n", encoding="utf-8")
    print(f"wrote {len(out)} vectors to {path}")


if __name__ == "__main__":
    main()
