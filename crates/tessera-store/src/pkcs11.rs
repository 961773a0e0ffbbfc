//! A key-encryption key held in a PKCS#11 token (an HSM; SoftHSM2 in tests), through the
//! `cryptoki` crate.
//!
//! The KEK is an AES-256 secret key object on the token, created non-extractable and sensitive
//! ([`Pkcs11Kek::generate`]), so it never leaves the token: every data key is wrapped and
//! unwrapped by the token itself with AES-GCM (`CKM_AES_GCM`, a fresh random 96-bit IV per wrap,
//! 128-bit tag, associated data binding the purpose). A wrapped key is `IV || ciphertext || tag`.
//!
//! Configuration is one string, `pkcs11:module=PATH,token=LABEL,key=LABEL`; the user PIN is
//! given separately (the server reads it from the environment), never in that string.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Mutex;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::kek::{DataKey, KeyEncryptionKey};

const AAD: &[u8] = b"tessera/kek/pkcs11/v1";
const IV_LEN: usize = 12;
const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;

/// Where the KEK is: `pkcs11:module=PATH,token=LABEL,key=LABEL`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pkcs11Spec {
    /// The PKCS#11 module (shared library), e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// The token's label.
    pub token: String,
    /// The key object's label.
    pub key: String,
}

impl FromStr for Pkcs11Spec {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::Hsm(format!(
                "{why}: expected pkcs11:module=PATH,token=LABEL,key=LABEL"
            ))
        };
        let rest = text
            .strip_prefix("pkcs11:")
            .ok_or_else(|| bad("not a pkcs11: key"))?;
        let (mut module, mut token, mut key) = (None, None, None);
        for part in rest.split(',') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| bad("a part without '='"))?;
            let v = v.trim();
            if v.is_empty() {
                return Err(bad(&format!("empty {k}")));
            }
            match k.trim() {
                "module" => module = Some(PathBuf::from(v)),
                "token" => token = Some(v.to_string()),
                "key" => key = Some(v.to_string()),
                other => return Err(bad(&format!("unknown part {other:?}"))),
            }
        }
        Ok(Pkcs11Spec {
            module: module.ok_or_else(|| bad("no module"))?,
            token: token.ok_or_else(|| bad("no token"))?,
            key: key.ok_or_else(|| bad("no key"))?,
        })
    }
}

impl fmt::Display for Pkcs11Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pkcs11:module={},token={},key={}",
            self.module.display(),
            self.token,
            self.key
        )
    }
}

/// An AES-256 KEK in a PKCS#11 token.
pub struct Pkcs11Kek {
    session: Mutex<Session>,
    key: ObjectHandle,
    id: String,
    _context: Pkcs11,
}

impl fmt::Debug for Pkcs11Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Kek").field("id", &self.id).finish()
    }
}

fn hsm(what: &str, e: CkError) -> Error {
    let reason = match &e {
        CkError::Pkcs11(RvError::PinIncorrect, _) => "wrong PIN".to_string(),
        CkError::Pkcs11(RvError::PinLocked, _) => "the PIN is locked".to_string(),
        CkError::Pkcs11(RvError::PinLenRange, _) => "the PIN has a wrong length".to_string(),
        CkError::LibraryLoading(l) => format!("cannot load the module ({l})"),
        other => other.to_string(),
    };
    Error::Hsm(format!("{what}: {reason}"))
}

impl Pkcs11Kek {
    /// Opens the token and finds the key.
    ///
    /// # Errors
    /// [`Error::Hsm`] naming what failed: the module cannot be loaded, no token with that label,
    /// a wrong PIN, no AES key with that label (or several).
    pub fn open(spec: &Pkcs11Spec, pin: &str) -> Result<Self> {
        let (context, session) = Self::login(spec, pin)?;
        let found = session
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Label(spec.key.as_bytes().to_vec()),
            ])
            .map_err(|e| hsm("searching for the key", e))?;
        let key = match found.as_slice() {
            [one] => *one,
            [] => {
                return Err(Error::Hsm(format!(
                    "no AES key labelled {:?} on token {:?} (create one with `tessera server kek-generate --kek {spec}`)",
                    spec.key, spec.token
                )));
            }
            _ => {
                return Err(Error::Hsm(format!(
                    "{} AES keys are labelled {:?} on token {:?}; labels must be unique",
                    found.len(),
                    spec.key,
                    spec.token
                )));
            }
        };
        let id = Self::key_id(&session, key, spec)?;
        Ok(Pkcs11Kek {
            session: Mutex::new(session),
            key,
            id,
            _context: context,
        })
    }

    /// Creates the key on the token: AES-256, non-extractable, sensitive, for encryption and
    /// decryption only, with a random `CKA_ID`. Refuses if a key with that label exists.
    ///
    /// # Errors
    /// [`Error::Hsm`].
    pub fn generate(spec: &Pkcs11Spec, pin: &str) -> Result<Self> {
        let (_, session) = Self::login(spec, pin)?;
        let existing = session
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Label(spec.key.as_bytes().to_vec()),
            ])
            .map_err(|e| hsm("searching for the key", e))?;
        if !existing.is_empty() {
            return Err(Error::Hsm(format!(
                "a key labelled {:?} already exists on token {:?}",
                spec.key, spec.token
            )));
        }
        let id = crate::random_bytes::<16>();
        session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    Attribute::Wrap(false),
                    Attribute::Unwrap(false),
                    Attribute::ValueLen((KEY_LEN as u64).into()),
                    Attribute::Label(spec.key.as_bytes().to_vec()),
                    Attribute::Id(id.to_vec()),
                ],
            )
            .map_err(|e| hsm("generating the key", e))?;
        drop(session);
        Self::open(spec, pin)
    }

    fn login(spec: &Pkcs11Spec, pin: &str) -> Result<(Pkcs11, Session)> {
        let context = Pkcs11::new(&spec.module)
            .map_err(|e| hsm(&format!("PKCS#11 module {}", spec.module.display()), e))?;
        match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) => {}
            Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(hsm("initialising the module", e)),
        }
        let slots = context
            .get_slots_with_token()
            .map_err(|e| hsm("listing tokens", e))?;
        let mut slot = None;
        for s in slots {
            if let Ok(info) = context.get_token_info(s)
                && info.label().trim_end() == spec.token
            {
                slot = Some(s);
                break;
            }
        }
        let slot = slot.ok_or_else(|| {
            Error::Hsm(format!(
                "no token labelled {:?} in {}",
                spec.token,
                spec.module.display()
            ))
        })?;
        let session = context
            .open_rw_session(slot)
            .map_err(|e| hsm("opening a session", e))?;
        let pin = AuthPin::new(pin.to_string().into());
        match session.login(UserType::User, Some(&pin)) {
            Ok(()) => {}
            Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => {
                return Err(hsm(&format!("logging in to token {:?}", spec.token), e));
            }
        }
        Ok((context, session))
    }

    fn key_id(session: &Session, key: ObjectHandle, spec: &Pkcs11Spec) -> Result<String> {
        let attrs = session
            .get_attributes(key, &[AttributeType::Id])
            .map_err(|e| hsm("reading the key's id", e))?;
        let ck_id = attrs.iter().find_map(|a| match a {
            Attribute::Id(id) if !id.is_empty() => Some(hex::encode(id)),
            _ => None,
        });
        Ok(match ck_id {
            Some(id) => format!("pkcs11:{}/{}/{id}", spec.token, spec.key),
            None => format!("pkcs11:{}/{}", spec.token, spec.key),
        })
    }

    fn with_session<T>(&self, f: impl FnOnce(&Session) -> Result<T>) -> Result<T> {
        let session = self
            .session
            .lock()
            .map_err(|_| Error::Hsm("the session lock is poisoned".into()))?;
        f(&session)
    }
}

impl KeyEncryptionKey for Pkcs11Kek {
    fn id(&self) -> String {
        self.id.clone()
    }

    fn wrap(&self, data_key: &DataKey) -> Result<Vec<u8>> {
        let mut iv = *crate::random_bytes::<IV_LEN>();
        let iv_copy = iv;
        let ciphertext = self.with_session(|s| {
            let params = GcmParams::new(&mut iv, AAD, ((TAG_LEN * 8) as u64).into())
                .map_err(|e| hsm("AES-GCM parameters", e))?;
            s.encrypt(
                &Mechanism::AesGcm(params),
                self.key,
                data_key.expose_secret(),
            )
            .map_err(|e| hsm("wrapping a data key", e))
        })?;
        let mut out = iv_copy.to_vec();
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    fn unwrap(&self, wrapped: &[u8]) -> Result<DataKey> {
        let failed = |reason| Error::UnwrapFailed {
            kek_id: self.id.clone(),
            reason,
        };
        if wrapped.len() != IV_LEN + KEY_LEN + TAG_LEN {
            return Err(failed("wrong length"));
        }
        let mut iv = [0u8; IV_LEN];
        iv.copy_from_slice(&wrapped[..IV_LEN]);
        let plain = self.with_session(|s| {
            let params = GcmParams::new(&mut iv, AAD, ((TAG_LEN * 8) as u64).into())
                .map_err(|e| hsm("AES-GCM parameters", e))?;
            s.decrypt(&Mechanism::AesGcm(params), self.key, &wrapped[IV_LEN..])
                .map_err(|_| failed("it does not authenticate under this key"))
        })?;
        let plain = Zeroizing::new(plain);
        let bytes: [u8; KEY_LEN] = plain
            .as_slice()
            .try_into()
            .map_err(|_| failed("wrong plaintext length"))?;
        Ok(DataKey::from_bytes(Zeroizing::new(bytes)))
    }
}
