//! How a wallet's public key is shown to other tools: BIP-32 extended public keys (xpub, tpub)
//! at a non-hardened path, and Bitcoin P2WPKH addresses.
//!
//! - BIP-32 (public parent → public child, "CKDpub") and its 78-byte serialisation, base58check
//!   with the `xpub` version for mainnet and `tpub` for every test network.
//! - BIP-141/BIP-173: the P2WPKH output (witness v0, HASH160 of the compressed key) and its bech32
//!   address (`bc1`, `tb1`, `bcrt1`).
//!
//! Everything is done by the `bitcoin` crate (no hand-written HMAC, base58 or bech32). A wallet
//! key only ever has non-hardened children ([`DerivationPath`] refuses hardened ones): each party
//! shifts its share by the public BIP-32 tweak, so the key an extended public key derives here is
//! the key the parties sign with at that path (the tests check it against the engine's own
//! derivation). A watch-only wallet given [`ExtendedPublicKey::encode`]'s output derives the
//! same addresses. The Ethereum address of a key is `tessera_core::PublicKey::eth_address`.

use std::fmt;
use std::str::FromStr;

use bitcoin::bip32::{ChainCode, ChildNumber, Fingerprint, Xpub};
use bitcoin::secp256k1::{self, Secp256k1};
use bitcoin::{Address, CompressedPublicKey, NetworkKind};
use tessera_core::{DerivationPath, PublicKey};

/// What went wrong with a key, a path or a network name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeysError {
    /// A network name other than those [`Network`] accepts.
    #[error(
        "unknown network {0:?}: use mainnet (or bitcoin), testnet, testnet4, signet or regtest"
    )]
    UnknownNetwork(String),
    /// Not a compressed secp256k1 public key, or not a 32-byte chain code.
    #[error("invalid public key: {0}")]
    InvalidPublicKey(String),
    /// A path that cannot be derived (hardened, too deep, not a path).
    #[error("{0}")]
    InvalidPath(String),
    /// BIP-32's "invalid child" (a tweak at least the group order, or a child at infinity),
    /// which happens with probability below 2^-127; BIP-32 says to use the next index.
    #[error("BIP-32 derivation failed at {path}: {reason}; use the next index")]
    Derivation {
        /// The path asked for.
        path: String,
        /// What the `bitcoin` crate said.
        reason: String,
    },
    /// A string that is not a BIP-32 extended public key (`xpub…` or `tpub…`).
    #[error("not an extended public key (xpub or tpub): {0}")]
    InvalidExtendedKey(String),
}

/// The Bitcoin network an address, an extended key or a PSBT is for.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// Bitcoin mainnet (`xpub`, `bc1…`).
    #[default]
    #[serde(alias = "bitcoin")]
    Mainnet,
    /// Testnet3 (`tpub`, `tb1…`).
    Testnet,
    /// Testnet4 (`tpub`, `tb1…`).
    Testnet4,
    /// Signet (`tpub`, `tb1…`).
    Signet,
    /// Regtest (`tpub`, `bcrt1…`).
    Regtest,
}

impl Network {
    /// Every network, in the order the error message names them.
    pub const ALL: [Network; 5] = [
        Network::Mainnet,
        Network::Testnet,
        Network::Testnet4,
        Network::Signet,
        Network::Regtest,
    ];

    /// The `bitcoin` crate's name for it.
    #[must_use]
    pub fn to_bitcoin(self) -> bitcoin::Network {
        match self {
            Network::Mainnet => bitcoin::Network::Bitcoin,
            Network::Testnet => bitcoin::Network::Testnet,
            Network::Testnet4 => bitcoin::Network::Testnet4,
            Network::Signet => bitcoin::Network::Signet,
            Network::Regtest => bitcoin::Network::Regtest,
        }
    }

    /// Whether extended keys for it are `tpub` (every network but mainnet).
    #[must_use]
    pub fn is_test(self) -> bool {
        self != Network::Mainnet
    }

    /// The prefix of its extended public keys: `xpub` or `tpub`.
    #[must_use]
    pub fn xpub_prefix(self) -> &'static str {
        if self.is_test() { "tpub" } else { "xpub" }
    }
}

impl FromStr for Network {
    type Err = KeysError;

    /// `mainnet` (or `bitcoin`, `main`), `testnet` (or `test`, `testnet3`), `testnet4`,
    /// `signet`, `regtest`; case-insensitive.
    fn from_str(text: &str) -> Result<Self, KeysError> {
        Ok(match text.trim().to_ascii_lowercase().as_str() {
            "mainnet" | "bitcoin" | "main" => Network::Mainnet,
            "testnet" | "test" | "testnet3" => Network::Testnet,
            "testnet4" => Network::Testnet4,
            "signet" => Network::Signet,
            "regtest" => Network::Regtest,
            _ => return Err(KeysError::UnknownNetwork(text.to_string())),
        })
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Network::Mainnet => "mainnet",
            Network::Testnet => "testnet",
            Network::Testnet4 => "testnet4",
            Network::Signet => "signet",
            Network::Regtest => "regtest",
        })
    }
}

/// A BIP-32 extended public key: a key, its chain code, and where it sits in the tree (depth,
/// parent fingerprint, child number). Which network it is shown for is chosen when it is
/// encoded ([`ExtendedPublicKey::encode`]), as for addresses.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ExtendedPublicKey {
    xpub: Xpub,
    /// The same key as `xpub.public_key`, converted once (so that reading it cannot fail).
    key: PublicKey,
}

impl ExtendedPublicKey {
    /// A wallet's root (`m`): its public key and chain code, at depth 0 with no parent.
    ///
    /// # Errors
    /// [`KeysError::InvalidPublicKey`] if `secp256k1` refuses the key (it never does for a
    /// valid [`PublicKey`]).
    pub fn root(public_key: &PublicKey, chain_code: [u8; 32]) -> Result<Self, KeysError> {
        Self::root_from_sec1(&public_key.to_compressed(), &chain_code)
    }

    /// A wallet's root from a compressed SEC1 key (33 bytes) and a 32-byte chain code.
    ///
    /// # Errors
    /// [`KeysError::InvalidPublicKey`] for a key that is not 33 bytes or not on the curve, or a
    /// chain code that is not 32 bytes.
    pub fn root_from_sec1(public_key: &[u8], chain_code: &[u8]) -> Result<Self, KeysError> {
        if public_key.len() != 33 {
            return Err(KeysError::InvalidPublicKey(format!(
                "expected a 33-byte compressed key, got {} bytes",
                public_key.len()
            )));
        }
        let public_key = secp256k1::PublicKey::from_slice(public_key)
            .map_err(|_| KeysError::InvalidPublicKey("not a point on secp256k1".into()))?;
        let chain_code: [u8; 32] = chain_code.try_into().map_err(|_| {
            KeysError::InvalidPublicKey(format!(
                "the chain code must be 32 bytes, got {}",
                chain_code.len()
            ))
        })?;
        Self::of_xpub(Xpub {
            network: NetworkKind::Main,
            depth: 0,
            parent_fingerprint: Fingerprint::default(),
            child_number: ChildNumber::Normal { index: 0 },
            public_key,
            chain_code: ChainCode::from(chain_code),
        })
    }

    fn of_xpub(xpub: Xpub) -> Result<Self, KeysError> {
        // Both libraries check the point; the conversion fails for no valid key.
        let key = PublicKey::from_sec1_bytes(&xpub.public_key.serialize())
            .map_err(|e| KeysError::InvalidPublicKey(e.to_string()))?;
        Ok(ExtendedPublicKey { xpub, key })
    }

    /// A wallet's root from its public facts (`GET /pubkey`'s wallet, or a share's).
    ///
    /// # Errors
    /// As [`ExtendedPublicKey::root`].
    pub fn of_wallet(wallet: &tessera_core::WalletPublic) -> Result<Self, KeysError> {
        Self::root(&wallet.public_key, wallet.chain_code)
    }

    /// Parses an `xpub…` or `tpub…` (which of the two is not kept: [`Self::encode`] takes the
    /// network).
    ///
    /// # Errors
    /// [`KeysError::InvalidExtendedKey`] for anything else (an `xprv` included).
    pub fn parse(text: &str) -> Result<Self, KeysError> {
        let mut xpub = Xpub::from_str(text.trim())
            .map_err(|e| KeysError::InvalidExtendedKey(e.to_string()))?;
        xpub.network = NetworkKind::Main;
        Self::of_xpub(xpub)
    }

    /// The key at `path` below this one (`m` is this key itself): CKDpub once per index.
    ///
    /// # Errors
    /// [`KeysError::InvalidPath`] when the result would be deeper than BIP-32's 255 levels;
    /// [`KeysError::Derivation`] for BIP-32's (astronomically rare) invalid child.
    pub fn derive(&self, path: &DerivationPath) -> Result<Self, KeysError> {
        if usize::from(self.xpub.depth) + path.indices().len() > usize::from(u8::MAX) {
            return Err(KeysError::InvalidPath(format!(
                "{path} below a key at depth {} is deeper than BIP-32's 255 levels",
                self.xpub.depth
            )));
        }
        let children = path
            .indices()
            .iter()
            .map(|&index| {
                ChildNumber::from_normal_idx(index)
                    .map_err(|e| KeysError::InvalidPath(format!("index {index} of {path}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let child = self
            .xpub
            .derive_pub(&Secp256k1::verification_only(), &children)
            .map_err(|e| KeysError::Derivation {
                path: path.to_string(),
                reason: e.to_string(),
            })?;
        Self::of_xpub(child)
    }

    /// The key at a path given as text (`m/0/7`).
    ///
    /// # Errors
    /// [`KeysError::InvalidPath`] for a hardened or malformed path; as [`Self::derive`].
    pub fn derive_str(&self, path: &str) -> Result<Self, KeysError> {
        let path: DerivationPath = path
            .parse()
            .map_err(|e: tessera_core::Error| KeysError::InvalidPath(e.to_string()))?;
        self.derive(&path)
    }

    /// The public key.
    #[must_use]
    pub fn public_key(&self) -> PublicKey {
        self.key
    }

    /// The 33-byte compressed key.
    #[must_use]
    pub fn public_key_bytes(&self) -> [u8; 33] {
        self.xpub.public_key.serialize()
    }

    /// The chain code.
    #[must_use]
    pub fn chain_code(&self) -> [u8; 32] {
        self.xpub.chain_code.to_bytes()
    }

    /// Its depth: 0 for the root, the path's length below it.
    #[must_use]
    pub fn depth(&self) -> u8 {
        self.xpub.depth
    }

    /// The first four bytes of HASH160 of the parent's key (zero for the root).
    #[must_use]
    pub fn parent_fingerprint(&self) -> [u8; 4] {
        self.xpub.parent_fingerprint.to_bytes()
    }

    /// Its index below its parent (0 for the root).
    #[must_use]
    pub fn child_number(&self) -> u32 {
        u32::from(self.xpub.child_number)
    }

    /// Its own fingerprint (what its children carry as parent fingerprint; for the root, the
    /// "master fingerprint" of descriptors and PSBTs).
    #[must_use]
    pub fn fingerprint(&self) -> [u8; 4] {
        self.xpub.fingerprint().to_bytes()
    }

    /// The BIP-32 serialisation for `network`: `xpub…` on mainnet, `tpub…` on test networks.
    #[must_use]
    pub fn encode(&self, network: Network) -> String {
        let mut xpub = self.xpub;
        xpub.network = if network.is_test() {
            NetworkKind::Test
        } else {
            NetworkKind::Main
        };
        xpub.to_string()
    }

    /// The P2WPKH (native SegWit v0) address of this key on `network`.
    #[must_use]
    pub fn p2wpkh_address(&self, network: Network) -> String {
        Address::p2wpkh(
            &CompressedPublicKey(self.xpub.public_key),
            network.to_bitcoin(),
        )
        .to_string()
    }
}

impl fmt::Debug for ExtendedPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExtendedPublicKey({})", self.encode(Network::Mainnet))
    }
}

/// The P2WPKH (native SegWit v0) address of `public_key` on `network`.
///
/// # Errors
/// [`KeysError::InvalidPublicKey`] if `secp256k1` refuses the key (it never does for a valid
/// [`PublicKey`]).
pub fn p2wpkh_address(public_key: &PublicKey, network: Network) -> Result<String, KeysError> {
    let key = CompressedPublicKey::from_slice(&public_key.to_compressed())
        .map_err(|e| KeysError::InvalidPublicKey(e.to_string()))?;
    Ok(Address::p2wpkh(&key, network.to_bitcoin()).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::ecdsa::eip191_digest;
    use tessera_core::{Threshold, runner};

    // BIP-32 test vector 1 (seed 000102…0f): the extended public keys of chain m/0H/1/2H and
    // of its non-hardened descendants m/0H/1/2H/2 and m/0H/1/2H/2/1000000000, and of m/0H and
    // m/0H/1.
    const V1_0H: &str = "xpub68Gmy5EdvgibQVfPdqkBBCHxA5htiqg55crXYuXoQRKfDBFA1WEjWgP6LHhwBZeNK1VTsfTFUHCdrfp1bgwQ9xv5ski8PX9rL2dZXvgGDnw";
    const V1_0H_1: &str = "xpub6ASuArnXKPbfEwhqN6e3mwBcDTgzisQN1wXN9BJcM47sSikHjJf3UFHKkNAWbWMiGj7Wf5uMash7SyYq527Hqck2AxYysAA7xmALppuCkwQ";
    const V1_0H_1_2H: &str = "xpub6D4BDPcP2GT577Vvch3R8wDkScZWzQzMMUm3PWbmWvVJrZwQY4VUNgqFJPMM3No2dFDFGTsxxpG5uJh7n7epu4trkrX7x7DogT5Uv6fcLW5";
    const V1_0H_1_2H_2: &str = "xpub6FHa3pjLCk84BayeJxFW2SP4XRrFd1JYnxeLeU8EqN3vDfZmbqBqaGJAyiLjTAwm6ZLRQUMv1ZACTj37sR62cfN7fe5JnJ7dh8zL4fiyLHV";
    const V1_0H_1_2H_2_1E9: &str = "xpub6H1LXWLaKsWFhvm6RVpEL9P4KfRZSW7abD2ttkWP3SSQvnyA8FSVqNTEcYFgJS2UaFcxupHiYkro49S8yGasTvXEYBVPamhGW6cFJodrTHy";
    // BIP-32 test vector 2: the master (depth 0) and its non-hardened child m/0.
    const V2_M: &str = "xpub661MyMwAqRbcFW31YEwpkMuc5THy2PSt5bDMsktWQcFF8syAmRUapSCGu8ED9W6oDMSgv6Zz8idoc4a6mr8BDzTJY47LJhkJ8UB7WEGuduB";
    const V2_0: &str = "xpub69H7F5d8KSRgmmdJg2KhpAK8SR3DjMwAdkxj3ZuxV27CprR9LgpeyGmXUbC6wb7ERfvrnKZjXoUmmDznezpbZb7ap6r1D3tgFxHmwMkQTPH";
    // Vector 2's master as a tpub (same key and chain code, test version bytes); embit's
    // `to_string(NETWORKS["test"]["xpub"])`.
    const V2_M_TPUB: &str = "tpubD6NzVbkrYhZ4XJDrzRvuxHEyQaPd1mwwdDofEJwekX18tAdsqeKfxss79AJzg1431FybXg5rfpTrJF4iAhyR7RubberdzEQXiRmXGADH2eA";

    fn xpub(text: &str) -> ExtendedPublicKey {
        ExtendedPublicKey::parse(text).unwrap()
    }

    #[test]
    fn bip32_vector_1_public_derivation() {
        assert_eq!(
            xpub(V1_0H)
                .derive_str("m/1")
                .unwrap()
                .encode(Network::Mainnet),
            V1_0H_1
        );
        let at_2h = xpub(V1_0H_1_2H);
        let child = at_2h.derive_str("m/2").unwrap();
        assert_eq!(child.encode(Network::Mainnet), V1_0H_1_2H_2);
        // Depth, parent fingerprint and child number are the serialisation's, checked apart.
        assert_eq!(child.depth(), 4);
        assert_eq!(child.parent_fingerprint(), at_2h.fingerprint());
        assert_eq!(child.child_number(), 2);
        let grandchild = at_2h.derive_str("m/2/1000000000").unwrap();
        assert_eq!(grandchild.encode(Network::Mainnet), V1_0H_1_2H_2_1E9);
        assert_eq!(
            grandchild,
            child.derive_str("m/1000000000").unwrap(),
            "one step at a time"
        );
        assert_eq!(at_2h.derive_str("m").unwrap(), at_2h, "m is the key itself");
    }

    #[test]
    fn bip32_vector_2_from_a_root_built_from_its_parts() {
        let master = xpub(V2_M);
        // A root built from a key and a chain code is the master the vector serialises.
        let root =
            ExtendedPublicKey::root_from_sec1(&master.public_key_bytes(), &master.chain_code())
                .unwrap();
        assert_eq!(root.encode(Network::Mainnet), V2_M);
        assert_eq!(
            (root.depth(), root.parent_fingerprint(), root.child_number()),
            (0, [0; 4], 0)
        );
        assert_eq!(root.encode(Network::Regtest), V2_M_TPUB);
        assert_eq!(root.encode(Network::Signet), V2_M_TPUB);
        assert_eq!(xpub(V2_M_TPUB), root, "a tpub parses to the same key");
        let child = root.derive_str("m/0").unwrap();
        assert_eq!(child.encode(Network::Mainnet), V2_0);
        assert_eq!(child.depth(), 1);
        assert_eq!(child.parent_fingerprint(), root.fingerprint());
        // Through a tessera_core key too.
        let again = ExtendedPublicKey::root(&root.public_key(), root.chain_code()).unwrap();
        assert_eq!(again, root);
    }

    #[test]
    fn p2wpkh_addresses_of_bip173() {
        // BIP-173's example key (the generator); addresses also checked with embit.
        let key = PublicKey::from_hex(
            "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
        )
        .unwrap();
        for (network, address) in [
            (
                Network::Mainnet,
                "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
            ),
            (
                Network::Testnet,
                "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx",
            ),
            (
                Network::Signet,
                "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx",
            ),
            (
                Network::Regtest,
                "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
            ),
        ] {
            assert_eq!(p2wpkh_address(&key, network).unwrap(), address, "{network}");
            let xkey = ExtendedPublicKey::root(&key, [7; 32]).unwrap();
            assert_eq!(xkey.p2wpkh_address(network), address, "{network}");
        }
    }

    #[test]
    fn networks_parse_and_unknown_ones_are_refused() {
        for (text, network) in [
            ("mainnet", Network::Mainnet),
            ("bitcoin", Network::Mainnet),
            ("Testnet", Network::Testnet),
            ("testnet4", Network::Testnet4),
            ("signet", Network::Signet),
            (" regtest ", Network::Regtest),
        ] {
            assert_eq!(text.parse::<Network>().unwrap(), network, "{text}");
        }
        for network in Network::ALL {
            assert_eq!(network.to_string().parse::<Network>().unwrap(), network);
            assert_eq!(network.xpub_prefix(), &xpub(V2_M).encode(network)[..4]);
        }
        for bad in ["", "mainnet2", "litecoin", "test net"] {
            let err = bad.parse::<Network>().unwrap_err();
            assert_eq!(err, KeysError::UnknownNetwork(bad.to_string()));
            assert!(err.to_string().contains("regtest"), "{err}");
        }
    }

    #[test]
    fn bad_keys_paths_and_extended_keys_are_refused() {
        let master = xpub(V2_M);
        for bad in ["m/0'", "m/1/2h", "m/2147483648", "0/1", "m/x"] {
            assert!(
                matches!(master.derive_str(bad), Err(KeysError::InvalidPath(_))),
                "{bad} accepted"
            );
        }
        assert!(
            master
                .derive_str("m/0'")
                .unwrap_err()
                .to_string()
                .contains("hardened")
        );
        // 255 levels is BIP-32's limit, counted from the key's own depth.
        let deep = DerivationPath::from_indices(vec![1; 255]).unwrap();
        let at_depth_1 = master.derive_str("m/1").unwrap();
        assert!(matches!(
            at_depth_1.derive(&deep),
            Err(KeysError::InvalidPath(_))
        ));
        let uncompressed = master.public_key().to_uncompressed();
        let mut x_zero = [0u8; 33];
        x_zero[0] = 2;
        for (key, chain_code) in [
            (&uncompressed[..], &[0u8; 32][..]),
            (&x_zero[..], &[0u8; 32][..]), // no point of secp256k1 has x = 0
            (&[5u8; 33][..], &[0u8; 32][..]), // not a SEC1 prefix
            (&master.public_key_bytes()[..], &[0u8; 31][..]),
        ] {
            assert!(matches!(
                ExtendedPublicKey::root_from_sec1(key, chain_code),
                Err(KeysError::InvalidPublicKey(_))
            ));
        }
        // An xprv, a corrupted checksum, garbage.
        let xprv = "xprv9s21ZrQH143K3QTDL4LXw2F7HEK3wJUD2nW2nRk4stbPy6cq3jPPqjiChkVvvNKmPGJxWUtg6LnF5kejMRNNU3TGtRBeJgk33yuGBxrMPHi";
        let mut corrupted = V2_M.to_string();
        corrupted.replace_range(10..11, "z");
        for bad in [xprv, corrupted.as_str(), "xpub", ""] {
            assert!(matches!(
                ExtendedPublicKey::parse(bad),
                Err(KeysError::InvalidExtendedKey(_))
            ));
        }
    }

    /// The key an xpub derives at a path is the key the parties sign with there: a 2-of-2
    /// wallet's engine derivation (`KeyShare::public_key_at`, which `sign --path` uses) and a
    /// signature made at the path.
    #[test]
    fn derivation_equals_the_engines_and_signatures_verify() {
        let shares = runner::keygen(Threshold::new(2, 2).unwrap()).unwrap();
        let root =
            ExtendedPublicKey::root(&shares[0].public_key(), shares[0].chain_code()).unwrap();
        assert_eq!(
            ExtendedPublicKey::of_wallet(&shares[1].wallet_public()).unwrap(),
            root
        );
        // The root's own xpub, parsed back, derives the same as the root.
        let reparsed = ExtendedPublicKey::parse(&root.encode(Network::Mainnet)).unwrap();
        for text in [
            "m",
            "m/0",
            "m/0/7",
            "m/1/2",
            "m/44/60/0/0/1",
            "m/2147483647",
        ] {
            let path: DerivationPath = text.parse().unwrap();
            let ours = root.derive(&path).unwrap();
            assert_eq!(
                ours.public_key(),
                shares[0].public_key_at(&path).unwrap(),
                "{text}"
            );
            assert_eq!(ours, reparsed.derive(&path).unwrap(), "{text}");
            assert_eq!(usize::from(ours.depth()), path.indices().len());
        }
        let path: DerivationPath = "m/0/7".parse().unwrap();
        let child = root.derive(&path).unwrap();
        assert_ne!(child.public_key(), root.public_key());
        let digest = eip191_digest(b"hello");
        let (signature, _) = runner::sign(&[&shares[0], &shares[1]], digest, &path).unwrap();
        child.public_key().verify(&digest, &signature).unwrap();
        assert!(root.public_key().verify(&digest, &signature).is_err());
        // The key one level down, from the xpub at m/0, is the same as from the root.
        let at_0 = root.derive_str("m/0").unwrap();
        assert_eq!(at_0.derive_str("m/7").unwrap(), child);
        assert_eq!(child.parent_fingerprint(), at_0.fingerprint());
        assert_eq!(child.child_number(), 7);
    }
}
