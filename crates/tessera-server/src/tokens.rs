//! The server's tokens: short-lived JWTs signed with the server's Ed25519 key (EdDSA only).
//!
//! A token's algorithm is pinned to EdDSA (`alg: none`, HS256 with the public key as secret and
//! RS256 are refused); its signature, expiry and audience are checked here, the device's
//! standing by [`crate::auth`] on every request.
//!
//! Service accounts' tokens name another audience ([`SERVICE_AUDIENCE`]): [`JwtKeys::verify`],
//! which every device endpoint uses, refuses them. The same key signs webhook bodies
//! ([`JwtKeys::sign`]); its public half is published ([`JwtKeys::public_key`]).

use std::path::Path;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::clock::now;
use crate::error::{ApiError, SetupError};

/// The audience every token names.
pub const AUDIENCE: &str = "tessera-commitment-server";
/// The audience of service accounts' tokens: only the endpoints that take a
/// [`crate::caller::Caller`] accept it.
pub const SERVICE_AUDIENCE: &str = "tessera-service-account";
/// Token lifetime.
pub const TOKEN_TTL_SECS: u64 = 15 * 60;

/// The server's token-signing key, created on first start in the data directory (mode 0600).
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    pair: Ed25519KeyPair,
    /// Tokens whose signature was checked already: the SHA-256 of the whole token, and its
    /// claims. A device's next request with the same token skips the Ed25519 verification
    /// (a signing socket's one request is one check less per signature); its expiry and
    /// audience are checked on every use. At most [`VERIFIED_CAP`], cleared when full.
    verified: std::sync::Mutex<std::collections::HashMap<[u8; 32], Claims>>,
}

/// How many verified tokens [`JwtKeys`] remembers.
const VERIFIED_CAP: usize = 4096;

/// The leeway on a token's expiry, seconds.
const LEEWAY_SECS: u64 = 5;

impl JwtKeys {
    /// Loads `path`, or creates it with a fresh Ed25519 key.
    ///
    /// # Errors
    /// A message when the file cannot be read, written or parsed.
    pub fn open_or_create(path: &Path) -> Result<Self, SetupError> {
        let pkcs8 = if path.exists() {
            std::fs::read(path).map_err(SetupError::io("read", path))?
        } else {
            let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                .map_err(|_| SetupError::Failed("cannot generate the token-signing key".into()))?;
            crate::files::write_private_file(path, doc.as_ref())?;
            doc.as_ref().to_vec()
        };
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| {
            SetupError::Invalid(format!("{} is not an Ed25519 PKCS#8 key", path.display()))
        })?;
        Ok(JwtKeys {
            encoding: EncodingKey::from_ed_der(&pkcs8),
            decoding: DecodingKey::from_ed_der(pair.public_key().as_ref()),
            pair,
            verified: std::sync::Mutex::default(),
        })
    }

    /// Issues a token for `device_id`.
    ///
    /// # Errors
    /// [`ApiError::Internal`] if signing fails.
    pub fn issue(&self, device_id: &str, user_id: &str) -> Result<String, ApiError> {
        self.issue_for(AUDIENCE, device_id, user_id)
    }

    /// Issues a token for the service account `service_id` of `user_id` (audience
    /// [`SERVICE_AUDIENCE`]).
    ///
    /// # Errors
    /// [`ApiError::Internal`] if signing fails.
    pub fn issue_service(&self, service_id: &str, user_id: &str) -> Result<String, ApiError> {
        self.issue_for(SERVICE_AUDIENCE, service_id, user_id)
    }

    fn issue_for(&self, audience: &str, subject: &str, user_id: &str) -> Result<String, ApiError> {
        let iat = now();
        let claims = Claims {
            sub: subject.to_string(),
            usr: user_id.to_string(),
            aud: audience.to_string(),
            iat,
            exp: iat + TOKEN_TTL_SECS as i64,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &self.encoding)
            .map_err(|e| ApiError::Internal(format!("jwt: {e}")))
    }

    /// Signs `bytes` with the server's Ed25519 key (RFC 8032): webhook bodies.
    #[must_use]
    pub fn sign(&self, bytes: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.pair.sign(bytes).as_ref());
        out
    }

    /// The server's Ed25519 public key (32 bytes, RFC 8032 encoding).
    #[must_use]
    pub fn public_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.pair.public_key().as_ref());
        out
    }

    /// Checks a device token's algorithm, signature, expiry and audience ([`AUDIENCE`]).
    ///
    /// # Errors
    /// [`ApiError::Unauthorized`] saying why.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        self.verify_for(token, &[AUDIENCE])
    }

    /// Checks a token of a device or of a service account: [`Claims::aud`] says which.
    ///
    /// # Errors
    /// [`ApiError::Unauthorized`] saying why.
    pub fn verify_any(&self, token: &str) -> Result<Claims, ApiError> {
        self.verify_for(token, &[AUDIENCE, SERVICE_AUDIENCE])
    }

    fn verify_for(&self, token: &str, audiences: &[&str]) -> Result<Claims, ApiError> {
        use sha2::Digest as _;
        let key: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let known = self
            .verified
            .lock()
            .ok()
            .and_then(|verified| verified.get(&key).cloned());
        if let Some(claims) = known
            && audiences.contains(&claims.aud.as_str())
            && claims.exp.saturating_add(LEEWAY_SECS as i64)
                >= jsonwebtoken::get_current_timestamp() as i64
        {
            return Ok(claims);
        }
        // Unknown, or expired or for another audience: the whole check, which says why.
        let claims = self.check(token, audiences)?;
        if let Ok(mut verified) = self.verified.lock() {
            if verified.len() >= VERIFIED_CAP {
                verified.clear();
            }
            verified.insert(key, claims.clone());
        }
        Ok(claims)
    }

    /// The whole check of a token: algorithm, signature, expiry and audience.
    fn check(&self, token: &str, audiences: &[&str]) -> Result<Claims, ApiError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| ApiError::Unauthorized("malformed token".into()))?;
        if header.alg != Algorithm::EdDSA {
            return Err(ApiError::Unauthorized(format!(
                "token algorithm {:?} is not accepted (EdDSA only)",
                header.alg
            )));
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(audiences);
        validation.leeway = LEEWAY_SECS;
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map(|d| d.claims)
            .map_err(|e| {
                ApiError::Unauthorized(match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => "token expired".into(),
                    jsonwebtoken::errors::ErrorKind::InvalidAudience => {
                        "token for another audience".into()
                    }
                    jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                        "token signature invalid".into()
                    }
                    _ => "invalid token".into(),
                })
            })
    }
}

/// What a token says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Device id (a service account's id in a [`SERVICE_AUDIENCE`] token).
    pub sub: String,
    /// User id.
    pub usr: String,
    /// Audience.
    pub aud: String,
    /// Issued at.
    pub iat: i64,
    /// Expiry.
    pub exp: i64,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn keys() -> (JwtKeys, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let keys = JwtKeys::open_or_create(&dir.path().join("jwt.key")).unwrap();
        (keys, dir)
    }

    /// A remembered token is the whole token: another signature over the same claims is checked
    /// (and refused), however often the genuine one was used.
    #[test]
    fn a_remembered_token_does_not_vouch_for_another() {
        let (keys, _dir) = keys();
        let token = keys.issue("device-1", "user-1").unwrap();
        for _ in 0..3 {
            assert_eq!(keys.verify(&token).unwrap().sub, "device-1");
        }
        let (head, signature) = token.rsplit_once('.').unwrap();
        let mut forged = signature.as_bytes().to_vec();
        forged[3] = if forged[3] == b'A' { b'B' } else { b'A' };
        let forged = format!("{head}.{}", String::from_utf8(forged).unwrap());
        assert!(keys.verify(&forged).is_err());
        // A token of another key is refused too.
        let (other, _other_dir) = self::keys();
        assert!(
            keys.verify(&other.issue("device-1", "user-1").unwrap())
                .is_err()
        );
    }

    /// A remembered token's expiry and audience are checked on every use.
    #[test]
    fn a_remembered_token_still_expires_and_keeps_its_audience() {
        let (keys, _dir) = keys();
        let token = keys.issue("device-1", "user-1").unwrap();
        keys.verify(&token).unwrap();
        assert!(
            keys.verify_for(&token, &[SERVICE_AUDIENCE]).is_err(),
            "a device token passed as a service account's"
        );
        // A token 3 s past its expiry is still within the leeway (5 s): accepted, and
        // remembered; 3 s later it is refused.
        let now = jsonwebtoken::get_current_timestamp() as i64;
        let claims = Claims {
            sub: "device-1".into(),
            usr: "user-1".into(),
            aud: AUDIENCE.into(),
            iat: now - 60,
            exp: now - 3,
        };
        let ending =
            jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &keys.encoding).unwrap();
        keys.verify(&ending).unwrap();
        std::thread::sleep(std::time::Duration::from_secs(3));
        assert!(
            keys.verify(&ending).is_err(),
            "an expired token was accepted"
        );
    }
}
