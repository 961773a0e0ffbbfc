//! Threshold engines. Each engine lives in one module and is reached only through Tessera's own
//! types ([`crate::KeyShare`], the sessions, [`crate::Signature`]); no engine type appears in a
//! public signature.

pub(crate) mod dkls23;
