//! A key-encryption key held in a PKCS#11 token (an HSM; SoftHSM2 in tests), through the
//! `cryptoki` crate.
//!
//! The KEK is an AES-256 secret key object on the token, created non-extractable and sensitive
//! ([`Pkcs11Kek::generate`]), so it never leaves the token: every data key is wrapped and
//! unwrapped by the token itself with AES-GCM (`CKM_AES_GCM`, a fresh random 96-bit IV per wrap,
//! 128-bit tag, associated data binding the purpose). A wrapped key is `IV || ciphertext || tag`.
//!
//! Configuration is one string, an RFC 7512 URI
//! (`pkcs11:token=LABEL;object=LABEL?module-path=PATH`, [`uri`]; the older
//! `pkcs11:module=PATH,token=LABEL,key=LABEL` is still read). The user PIN is given separately
//! (the server reads it from the environment) unless the URI carries `pin-source` or
//! `pin-value`; it is never part of [`Pkcs11Spec`].

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

pub mod uri;

pub use uri::{PinSource, Pkcs11Uri};

const AAD: &[u8] = b"tessera/kek/pkcs11/v1";
const IV_LEN: usize = 12;
const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;

/// Where the KEK is: a module, a token and a key (see [`uri`] for how it is written).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pkcs11Spec {
    /// The PKCS#11 module (shared library), e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// The token's label.
    pub token: String,
    /// The key object's label.
    pub key: String,
    /// The key's `CKA_ID`, if the URI names it (`id=`).
    pub id: Option<Vec<u8>>,
    /// The token's manufacturer, if the URI names it (`manufacturer=`).
    pub manufacturer: Option<String>,
    /// The token's model, if the URI names it (`model=`).
    pub model: Option<String>,
    /// The token's serial number, if the URI names it (`serial=`).
    pub serial: Option<String>,
}

impl FromStr for Pkcs11Spec {
    type Err = Error;

    /// Either form; a PIN in the URI is dropped (use [`Pkcs11Uri::parse`] to keep it).
    fn from_str(text: &str) -> Result<Self> {
        Pkcs11Uri::parse(text).map(|uri| uri.spec)
    }
}

impl fmt::Display for Pkcs11Spec {
    /// The RFC 7512 URI, without any PIN.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pkcs11:token={};object={}",
            uri::encode(self.token.as_bytes(), true),
            uri::encode(self.key.as_bytes(), true)
        )?;
        if let Some(id) = &self.id {
            // RFC 7512 §2.3: the whole value of `id` SHOULD be percent-encoded.
            let id: String = id.iter().map(|b| format!("%{b:02X}")).collect();
            write!(f, ";id={id}")?;
        }
        for (name, value) in [
            ("manufacturer", &self.manufacturer),
            ("model", &self.model),
            ("serial", &self.serial),
        ] {
            if let Some(v) = value {
                write!(f, ";{name}={}", uri::encode(v.as_bytes(), true))?;
            }
        }
        write!(
            f,
            "?module-path={}",
            uri::encode(self.module.as_os_str().as_encoded_bytes(), false)
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
        let mut template = vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Label(spec.key.as_bytes().to_vec()),
        ];
        if let Some(id) = &spec.id {
            template.push(Attribute::Id(id.clone()));
        }
        let found = session
            .find_objects(&template)
            .map_err(|e| hsm("searching for the key", e))?;
        let key = match found.as_slice() {
            [one] => *one,
            [] => {
                let with_id = if spec.id.is_some() {
                    " with that id"
                } else {
                    ""
                };
                return Err(Error::Hsm(format!(
                    "no AES key labelled {:?}{with_id} on token {:?} (create one with `tessera kek generate --kek {spec}`)",
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
        let id = match &spec.id {
            Some(id) => id.clone(),
            None => crate::random_bytes::<16>().to_vec(),
        };
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
                    Attribute::Id(id),
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
                && Self::narrowed(spec.manufacturer.as_deref(), info.manufacturer_id())
                && Self::narrowed(spec.model.as_deref(), info.model())
                && Self::narrowed(spec.serial.as_deref(), info.serial_number())
            {
                slot = Some(s);
                break;
            }
        }
        let slot = slot.ok_or_else(|| {
            let narrowed =
                if spec.manufacturer.is_some() || spec.model.is_some() || spec.serial.is_some() {
                    " with that manufacturer, model and serial"
                } else {
                    ""
                };
            Error::Hsm(format!(
                "no token labelled {:?}{narrowed} in {}",
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

    /// Whether a token's field (blank-padded, PKCS#11 §3.2) is what the URI asks for, if it asks.
    fn narrowed(wanted: Option<&str>, actual: &str) -> bool {
        wanted.is_none_or(|w| w == actual.trim_end())
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
