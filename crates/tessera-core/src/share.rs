//! A party's share of a wallet key, and its versioned persistence format.
//!
//! File layout (all versions): `b"TSKS"`, a big-endian `u16` format version, then the body of
//! that version. Version 1's body is `postcard` of `KeyShareBodyV1` (a t-of-n wallet, which is
//! `threshold(t, p0, …, p(n-1))`); version 2's is `KeyShareBodyV2`: version 1's fields followed
//! by the wallet's access structure and every party's public verifying share. A t-of-n share is
//! still written as version 1, so its bytes do not change. Old versions must keep loading:
//! `tests/fixtures/` holds a share file of every version with a test that loads it.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

use crate::derivation::DerivationPath;
use crate::ecdsa::PublicKey;
use crate::engine::dkls23::EngineShare;
use crate::error::{Error, Result};
use crate::structure::WalletStructure;
use crate::types::{PartyIndex, Threshold, WalletId};

const MAGIC: &[u8; 4] = b"TSKS";
/// The share format this build writes for a t-of-n wallet.
pub const KEY_SHARE_VERSION: u16 = 1;
/// The share format this build writes for a wallet under an access structure.
pub const KEY_SHARE_VERSION_STRUCTURE: u16 = 2;
/// Engine id of DKLs23 (dkls23 crate 0.6) in share files.
const ENGINE_DKLS23: u8 = 1;

/// One party's share of a wallet key at one epoch.
///
/// It holds secret material: it is zeroized on drop, its `Debug` prints only public fields, and
/// [`KeyShare::to_bytes`] returns a buffer that is zeroized on drop too. Two shares of the same
/// wallet can sign together only if they have the same epoch.
pub struct KeyShare {
    pub(crate) wallet_id: WalletId,
    pub(crate) party: PartyIndex,
    pub(crate) threshold: Threshold,
    pub(crate) epoch: u64,
    pub(crate) public_key: PublicKey,
    pub(crate) engine: EngineShare,
    /// `Some` for a wallet keyed under an access structure ([`crate::StructureKeygenSession`]);
    /// `None` for a t-of-n (Shamir) wallet.
    pub(crate) structure: Option<StructureKey>,
}

/// What a share of a structure wallet knows beyond a t-of-n share: the structure, and every
/// party's public verifying share `X_j = x_j·G` (from the key generation's dealings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StructureKey {
    pub(crate) structure: WalletStructure,
    pub(crate) verifying_shares: Vec<PublicKey>,
}

/// The public facts of a wallet at one epoch, from which a resharing starts
/// ([`crate::ReshareSession`]): what a party joining the wallet must be given by someone it
/// trusts (at least the public key it checks against what it expects), and what every party of
/// the resharing must agree on (the session id binds all of it). Not secret, but private (the
/// chain code reveals every child public key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalletPublic {
    /// The wallet.
    pub wallet_id: WalletId,
    /// The wallet's public key.
    pub public_key: PublicKey,
    /// The BIP-32 chain code, kept by a resharing so child keys do not change.
    pub chain_code: [u8; 32],
    /// The epoch of the shares the resharing starts from.
    pub epoch: u64,
    /// Who may sign at that epoch (`threshold(t, p0, …)` for a t-of-n wallet).
    pub structure: WalletStructure,
    /// Every party's public verifying share, in party order, where the shares carry them (a
    /// structure wallet); `None` for a t-of-n wallet, whose shares do not.
    pub verifying_shares: Option<Vec<PublicKey>>,
}

impl WalletPublic {
    /// Checks that the verifying shares (if any) are one per party and combine to the public
    /// key under every minimal quorum.
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] saying what does not hold.
    pub fn validate(&self) -> Result<()> {
        let Some(shares) = &self.verifying_shares else {
            return Ok(());
        };
        let bad = |why: &str| Error::InvalidParameters(why.to_string());
        if shares.len() != self.structure.party_count() {
            return Err(bad("one verifying share per party is needed"));
        }
        for quorum in self.structure.minimal_quorums() {
            let members: Vec<PartyIndex> = quorum.into_iter().collect();
            let quorum = self.structure.check_quorum(&members)?;
            let combined = quorum.coefficients().iter().fold(
                k256::ProjectivePoint::IDENTITY,
                |acc, (p, c)| {
                    acc + k256::ProjectivePoint::from(*shares[usize::from(p.get())].as_affine()) * c
                },
            );
            if combined.to_affine() != *self.public_key.as_affine() {
                return Err(bad("the verifying shares do not combine to the public key"));
            }
        }
        Ok(())
    }
}

/// Version 2's addition to version 1's fields.
#[derive(Serialize, Deserialize)]
struct StructureBody {
    structure: String,
    single_party_allowed: bool,
    #[serde(with = "serde_bytes")]
    verifying_shares: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct KeyShareBodyV1 {
    engine: u8,
    wallet_id: WalletId,
    party: PartyIndex,
    threshold: Threshold,
    epoch: u64,
    #[serde(with = "serde_bytes")]
    public_key: Vec<u8>,
    chain_code: [u8; 32],
    #[serde(with = "serde_bytes")]
    engine_state: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct KeyShareBodyV2 {
    v1: KeyShareBodyV1,
    structure: StructureBody,
}

impl Drop for KeyShareBodyV1 {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.engine_state);
    }
}

impl KeyShare {
    /// The wallet this share belongs to.
    #[must_use]
    pub fn wallet_id(&self) -> WalletId {
        self.wallet_id
    }

    /// This share's party index.
    #[must_use]
    pub fn party(&self) -> PartyIndex {
        self.party
    }

    /// The wallet's threshold. For a wallet under an access structure this is the engine's
    /// n-of-n set-up, not who may sign: see [`KeyShare::structure`].
    #[must_use]
    pub fn threshold(&self) -> Threshold {
        self.threshold
    }

    /// Who may sign: the access structure the key was generated under, or for a t-of-n wallet
    /// `threshold(t, p0, …, p(n-1))` (party `i` labelled `p<i>`).
    #[must_use]
    pub fn structure(&self) -> WalletStructure {
        match &self.structure {
            Some(key) => key.structure.clone(),
            None => {
                let labels: Vec<String> =
                    self.threshold.parties().map(|p| format!("p{p}")).collect();
                // A valid `Threshold` (2 <= t <= n <= 16) is always a valid structure.
                #[allow(clippy::expect_used)]
                WalletStructure::threshold(usize::from(self.threshold.t), &labels)
                    .expect("a t-of-n threshold is a valid structure")
            }
        }
    }

    /// The wallet's public facts at this share's epoch, for a resharing
    /// ([`crate::ReshareSession`]).
    #[must_use]
    pub fn wallet_public(&self) -> WalletPublic {
        WalletPublic {
            wallet_id: self.wallet_id,
            public_key: self.public_key,
            chain_code: self.chain_code(),
            epoch: self.epoch,
            structure: self.structure(),
            verifying_shares: self.structure.as_ref().map(|k| k.verifying_shares.clone()),
        }
    }

    /// Whether the key was generated under an access structure (share format 2).
    #[must_use]
    pub fn is_structure_wallet(&self) -> bool {
        self.structure.is_some()
    }

    /// The epoch: 0 after key generation, one more after each refresh.
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The wallet's (root) public key.
    #[must_use]
    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// The BIP-32 chain code shared by all parties. With the public key it forms the extended
    /// public key, which reveals every non-hardened child public key (not a secret, but private).
    #[must_use]
    pub fn chain_code(&self) -> [u8; 32] {
        self.engine.chain_code()
    }

    /// The public key of the non-hardened child at `path`.
    ///
    /// # Errors
    /// [`Error::InvalidDerivationPath`] in the (negligible) case BIP-32 declares the child invalid.
    pub fn public_key_at(&self, path: &DerivationPath) -> Result<PublicKey> {
        PublicKey::from_affine(self.engine.public_key_at(path)?)
    }

    /// This party's public share `x_i·G`: public, it identifies the secret share without revealing
    /// it (a backup of the share is verified against it).
    #[must_use]
    pub fn public_share(&self) -> PublicKey {
        // A loaded share's secret is non-zero (checked by `EngineShare::from_bytes` and by key
        // generation), so its public share is never the identity.
        #[allow(clippy::expect_used)]
        PublicKey::from_affine(self.engine.public_share()).expect("a share's secret is non-zero")
    }

    /// The public share of `party`: this share's own, any party's in a structure wallet (kept
    /// from key generation), or, in a 2-party t-of-n wallet, the other party's, derived from the
    /// wallet key (`pk = λ_0·X_0 + λ_1·X_1`). With more than two parties the others' public
    /// shares of a t-of-n wallet are not derivable from what a share holds.
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] for a party outside the wallet or a wallet of more than two
    /// parties.
    pub fn public_share_of(&self, party: PartyIndex) -> Result<PublicKey> {
        if party == self.party {
            return Ok(self.public_share());
        }
        if let Some(key) = &self.structure {
            return key
                .verifying_shares
                .get(usize::from(party.get()))
                .copied()
                .ok_or_else(|| {
                    Error::InvalidParameters(format!("party {party} is not a party of this wallet"))
                });
        }
        if !self.threshold.contains(party) || self.threshold.n != 2 {
            return Err(Error::InvalidParameters(format!(
                "the public share of party {party} is only derivable in a 2-party wallet it belongs to (this wallet is {})",
                self.threshold
            )));
        }
        let point = crate::engine::dkls23::other_public_share_of_two(
            self.public_key.as_affine(),
            self.party,
            &self.engine.public_share(),
            party,
        )
        .ok_or_else(|| Error::InvalidParameters("degenerate party indices".into()))?;
        PublicKey::from_affine(point)
    }

    /// The secret share's 32 big-endian bytes, for a verifiable backup of this share
    /// (`tessera-backup`), zeroized on drop. Nothing else should need it.
    #[must_use]
    pub fn secret_share_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.engine.secret_scalar().to_bytes().into())
    }

    /// A proof that the holder of this share knows its secret (a non-interactive proof of
    /// knowledge of the discrete logarithm of [`KeyShare::public_share`]), bound to `context`:
    /// how a device that restored a share from a backup proves it to the server.
    ///
    /// # Errors
    /// [`Error::Aborted`] in the (negligible) case the proof search is exhausted.
    pub fn prove_possession(&self, context: &[u8]) -> Result<Vec<u8>> {
        crate::engine::dkls23::prove_dlog(self.engine.secret_scalar(), context)
            .ok_or_else(|| Error::Aborted("the possession proof could not be made".into()))
    }

    /// Checks a [`KeyShare::prove_possession`] proof for `public_share` and `context`.
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] when it does not verify.
    pub fn verify_possession(public_share: &PublicKey, context: &[u8], proof: &[u8]) -> Result<()> {
        if crate::engine::dkls23::verify_dlog(public_share.as_affine(), context, proof) {
            Ok(())
        } else {
            Err(Error::InvalidParameters(
                "the proof of possession of the share does not verify".into(),
            ))
        }
    }

    /// Encodes the share in the current format. The buffer holds the secret share and is zeroized
    /// when dropped; store it encrypted.
    #[must_use]
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let engine_state = self.engine.to_bytes();
        let body = KeyShareBodyV1 {
            engine: ENGINE_DKLS23,
            wallet_id: self.wallet_id,
            party: self.party,
            threshold: self.threshold,
            epoch: self.epoch,
            public_key: self.public_key.to_compressed().to_vec(),
            chain_code: self.engine.chain_code(),
            engine_state: engine_state.to_vec(),
        };
        let mut out = Zeroizing::new(Vec::with_capacity(engine_state.len() + 128));
        out.extend_from_slice(MAGIC);
        // Serializing plain data into a Vec cannot fail.
        let encoded = match &self.structure {
            None => {
                out.extend_from_slice(&KEY_SHARE_VERSION.to_be_bytes());
                Zeroizing::new(postcard::to_allocvec(&body).unwrap_or_default())
            }
            Some(key) => {
                out.extend_from_slice(&KEY_SHARE_VERSION_STRUCTURE.to_be_bytes());
                let body = KeyShareBodyV2 {
                    v1: body,
                    structure: StructureBody {
                        structure: key.structure.to_string(),
                        single_party_allowed: key.structure.single_party_allowed(),
                        verifying_shares: key
                            .verifying_shares
                            .iter()
                            .flat_map(PublicKey::to_compressed)
                            .collect(),
                    },
                };
                Zeroizing::new(postcard::to_allocvec(&body).unwrap_or_default())
            }
        };
        out.extend_from_slice(&encoded);
        out
    }

    /// Decodes and validates a share written by this or an earlier version.
    ///
    /// # Errors
    /// [`Error::InvalidKeyShare`] for a wrong magic, an unknown version or engine, a body that
    /// does not decode, or fields that contradict each other (party index, threshold, public key
    /// and chain code are cross-checked against the engine state).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |why: String| Error::InvalidKeyShare(why);
        if bytes.len() < 6 || &bytes[..4] != MAGIC {
            return Err(bad("not a Tessera key share (bad magic)".into()));
        }
        let version = u16::from_be_bytes([bytes[4], bytes[5]]);
        match version {
            KEY_SHARE_VERSION => {
                let (body, rest) = postcard::take_from_bytes::<KeyShareBodyV1>(&bytes[6..])
                    .map_err(|_| bad("the share body does not decode".into()))?;
                if !rest.is_empty() {
                    return Err(bad("unexpected bytes after the share".into()));
                }
                Self::from_body(&body, None)
            }
            KEY_SHARE_VERSION_STRUCTURE => {
                let (body, rest) = postcard::take_from_bytes::<KeyShareBodyV2>(&bytes[6..])
                    .map_err(|_| bad("the share body does not decode".into()))?;
                if !rest.is_empty() {
                    return Err(bad("unexpected bytes after the share".into()));
                }
                Self::from_body(&body.v1, Some(&body.structure))
            }
            _ => Err(bad(format!(
                "share format version {version} is not supported by this build (it reads 1 and 2)"
            ))),
        }
    }

    fn from_body(body: &KeyShareBodyV1, structure: Option<&StructureBody>) -> Result<Self> {
        let bad = |why: String| Error::InvalidKeyShare(why);
        if body.engine != ENGINE_DKLS23 {
            return Err(bad(format!("unknown engine id {}", body.engine)));
        }
        let threshold =
            Threshold::new(body.threshold.t, body.threshold.n).map_err(|e| bad(e.to_string()))?;
        if !threshold.contains(body.party) {
            return Err(bad(format!("party {} is outside {threshold}", body.party)));
        }
        let public_key =
            PublicKey::from_sec1_bytes(&body.public_key).map_err(|e| bad(e.to_string()))?;
        let engine = EngineShare::from_bytes(
            &body.engine_state,
            body.party,
            threshold,
            &public_key,
            &body.chain_code,
        )?;
        let structure = structure
            .map(|s| StructureKey::decode(s, threshold, body.party, &engine, &public_key))
            .transpose()?;
        Ok(KeyShare {
            wallet_id: body.wallet_id,
            party: body.party,
            threshold,
            epoch: body.epoch,
            public_key,
            engine,
            structure,
        })
    }
}

impl StructureKey {
    /// Checks version 2's structure fields against the rest of the share: the engine set-up is
    /// n-of-n over the structure's parties, one verifying share per party, ours matching our
    /// secret.
    fn decode(
        body: &StructureBody,
        threshold: Threshold,
        party: PartyIndex,
        engine: &EngineShare,
        public_key: &PublicKey,
    ) -> Result<Self> {
        let bad = |why: String| Error::InvalidKeyShare(why);
        let structure = if body.single_party_allowed {
            WalletStructure::parse_allowing_single_party(&body.structure)
        } else {
            WalletStructure::parse(&body.structure)
        }
        .map_err(|e| bad(format!("the access structure is invalid: {e}")))?;
        if structure.to_string() != body.structure {
            return Err(bad("the access structure is not in canonical form".into()));
        }
        let n = structure.party_count();
        if usize::from(threshold.n) != n || threshold.t != threshold.n {
            return Err(bad(format!(
                "the engine set-up {threshold} does not match the structure's {n} parties"
            )));
        }
        if body.verifying_shares.len() != 33 * n {
            return Err(bad("one verifying share per party is needed".into()));
        }
        let verifying_shares = body
            .verifying_shares
            .chunks(33)
            .map(PublicKey::from_sec1_bytes)
            .collect::<Result<Vec<_>>>()
            .map_err(|e| bad(format!("a verifying share is invalid: {e}")))?;
        if verifying_shares
            .get(usize::from(party.get()))
            .map(PublicKey::as_affine)
            != Some(&engine.public_share())
        {
            return Err(bad("our verifying share does not match our secret".into()));
        }
        // The verifying shares are those of one sharing of the key: every minimal quorum's
        // combination of them is the public key.
        for quorum in structure.minimal_quorums() {
            let members: Vec<PartyIndex> = quorum.into_iter().collect();
            let quorum = structure
                .check_quorum(&members)
                .map_err(|e| bad(e.to_string()))?;
            let combined = quorum.coefficients().iter().fold(
                k256::ProjectivePoint::IDENTITY,
                |acc, (p, c)| {
                    acc + k256::ProjectivePoint::from(
                        *verifying_shares[usize::from(p.get())].as_affine(),
                    ) * c
                },
            );
            if combined.to_affine() != *public_key.as_affine() {
                return Err(bad(
                    "the verifying shares do not combine to the public key".into()
                ));
            }
        }
        Ok(StructureKey {
            structure,
            verifying_shares,
        })
    }
}

impl fmt::Debug for KeyShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("KeyShare");
        d.field("wallet_id", &self.wallet_id)
            .field("party", &self.party)
            .field("threshold", &self.threshold);
        if let Some(key) = &self.structure {
            d.field("structure", &key.structure.to_string());
        }
        d.field("epoch", &self.epoch)
            .field("public_key", &self.public_key)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Serialize for KeyShare {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.to_bytes())
    }
}

impl<'de> Deserialize<'de> for KeyShare {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = Zeroizing::new(serde_bytes::ByteBuf::deserialize(deserializer)?.into_vec());
        KeyShare::from_bytes(&bytes).map_err(serde::de::Error::custom)
    }
}
