//! Signing a Bitcoin PSBT (BIP-174) with a server wallet: the device plans it with the wallet's
//! key ([`tessera_api::btc::plan`]: which inputs are the wallet's, at which paths), asks the
//! server to sign each of them (a `btc-psbt` request per input, each carrying the whole PSBT so
//! that the server computes the input's digest and applies the policy to the whole transaction
//! itself), then finalises the PSBT with the signatures, each verified again.

use tessera_api::btc::{self, BtcNetwork, BtcPlan, Finalized, InputSignature, WalletKey};
use tessera_api::intent::SignKind;
use tessera_core::DerivationPath;

use super::DeviceError;
use super::online::Online;

/// A PSBT signed by the wallet.
#[derive(Debug)]
pub struct SignedPsbt {
    /// What was signed, planned before signing.
    pub plan: BtcPlan,
    /// The PSBT with the wallet's inputs finalised, and the transaction when every input is.
    pub finalized: Finalized,
    /// Parties of a structure wallet the server banned on the way.
    pub banned: Vec<tessera_api::Ban>,
}

impl Online {
    /// The plan of signing `psbt` (binary or base64) with wallet `name`: its inputs, outputs
    /// (change found with the wallet's key; `default_path` for inputs and change without a
    /// `bip32_derivation` entry of the wallet) and fee, for the user to read before signing.
    ///
    /// # Errors
    /// [`DeviceError::InvalidRequest`] for a PSBT that cannot be signed (saying why);
    /// [`DeviceError::Store`].
    pub fn plan_psbt(
        &self,
        name: &str,
        psbt: &[u8],
        default_path: &DerivationPath,
        network: BtcNetwork,
    ) -> Result<BtcPlan, DeviceError> {
        let record = self.wallet(name)?;
        let parsed = btc::parse_psbt(psbt).map_err(DeviceError::InvalidRequest)?;
        plan_with(&record.current, &parsed, default_path, network)
    }

    /// Signs every input of `psbt` that wallet `name` owns ([`Self::plan_psbt`]), one
    /// signature each with the server (and the co-signers `with` of a structure wallet), then
    /// finalises them. `on_input(index, position, count)` is told before each input is signed;
    /// `on_wait` when another device must approve a request.
    ///
    /// # Errors
    /// As [`Self::plan_psbt`] and [`Online::sign_with`] (a policy denial names its rule).
    #[allow(clippy::too_many_arguments)] // a signing request's parts and its three hooks
    pub async fn sign_psbt(
        &self,
        name: &str,
        psbt: &[u8],
        default_path: &DerivationPath,
        network: BtcNetwork,
        with: &[String],
        mut on_input: impl FnMut(usize, usize, usize),
        mut on_round: impl FnMut(u8, u8),
        mut on_wait: impl FnMut(&str),
    ) -> Result<SignedPsbt, DeviceError> {
        // One unsealing of the wallet (Argon2id) and one parse serve the plan and every input.
        let mut record = self.wallet(name)?;
        let parsed = btc::parse_psbt(psbt).map_err(DeviceError::InvalidRequest)?;
        let plan = plan_with(&record.current, &parsed, default_path, network)?;
        // Every request carries the PSBT as base64, whatever form it came in.
        let text = btc::psbt_to_base64(&parsed);
        let mut signatures = Vec::with_capacity(plan.to_sign.len());
        let mut banned = Vec::new();
        let count = plan.to_sign.len();
        for (position, input) in plan.to_sign.iter().enumerate() {
            on_input(input.index, position + 1, count);
            let kind = SignKind::BtcPsbt {
                psbt: text.clone(),
                network,
                input: u32::try_from(input.index).map_err(|_| {
                    DeviceError::InvalidRequest(tessera_core::error::Error::InvalidParameters(
                        "too many inputs".into(),
                    ))
                })?,
            };
            let signed = self
                .sign_with(
                    name,
                    &mut record,
                    &kind,
                    &input.path,
                    with,
                    &mut on_round,
                    &mut on_wait,
                )
                .await?;
            banned.extend(signed.banned);
            signatures.push(InputSignature {
                index: input.index,
                signature: signed.signature.to_compact(),
                public_key: input.public_key,
            });
        }
        // `finalize` verifies each signature against its input's digest and key again.
        let finalized = btc::finalize(parsed, &signatures).map_err(DeviceError::InvalidRequest)?;
        Ok(SignedPsbt {
            plan,
            finalized,
            banned,
        })
    }
}

/// The plan of `psbt` with the wallet key of `share` (its root key and chain code).
fn plan_with(
    share: &tessera_core::KeyShare,
    psbt: &btc::Psbt,
    default_path: &DerivationPath,
    network: BtcNetwork,
) -> Result<BtcPlan, DeviceError> {
    let key = WalletKey {
        public_key: share.public_key().to_compressed(),
        chain_code: share.chain_code(),
    };
    btc::plan(psbt, &key, default_path, network).map_err(DeviceError::InvalidRequest)
}
