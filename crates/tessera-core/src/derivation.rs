//! BIP-32 derivation paths.
//!
//! Only non-hardened derivation is possible for a threshold key: a hardened child needs the parent
//! private key, which never exists in one place. Each party shifts its share by the public BIP-32
//! tweak, so the parties jointly hold the child key.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Children below this are non-hardened (BIP-32).
const HARDENED_BIT: u32 = 1 << 31;
/// BIP-32 depth is one byte.
const MAX_DEPTH: usize = 255;

/// A non-hardened BIP-32 path such as `m/0/7`. `m` alone is the root key.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct DerivationPath(Vec<u32>);

impl DerivationPath {
    /// The root (`m`).
    #[must_use]
    pub fn root() -> Self {
        DerivationPath(Vec::new())
    }

    /// A path from child numbers, each below 2^31.
    ///
    /// # Errors
    /// [`Error::InvalidDerivationPath`] for a hardened index or a path deeper than 255.
    pub fn from_indices(indices: Vec<u32>) -> Result<Self> {
        if let Some(i) = indices.iter().find(|&&i| i >= HARDENED_BIT) {
            return Err(hardened(&format!(
                "index {i} is 2^31 or more, i.e. hardened"
            )));
        }
        if indices.len() > MAX_DEPTH {
            return Err(Error::InvalidDerivationPath(format!(
                "{} levels: BIP-32 allows at most {MAX_DEPTH}",
                indices.len()
            )));
        }
        Ok(DerivationPath(indices))
    }

    /// The child numbers.
    #[must_use]
    pub fn indices(&self) -> &[u32] {
        &self.0
    }

    /// Whether this is the root.
    #[must_use]
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// A canonical byte encoding, bound into signing session ids.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|i| i.to_be_bytes()).collect()
    }
}

fn hardened(detail: &str) -> Error {
    Error::InvalidDerivationPath(format!(
        "hardened derivation is impossible for a threshold key ({detail}); use non-hardened indices such as m/0/7"
    ))
}

impl FromStr for DerivationPath {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let text = text.trim();
        let mut parts = text.split('/');
        if parts.next() != Some("m") {
            return Err(Error::InvalidDerivationPath(format!(
                "{text:?} must start with \"m\", e.g. m/0/7"
            )));
        }
        let mut indices = Vec::new();
        for part in parts {
            if part.ends_with(['\'', 'h', 'H']) {
                return Err(hardened(&format!("component {part:?}")));
            }
            let index: u32 = part.parse().map_err(|_| {
                Error::InvalidDerivationPath(format!(
                    "component {part:?} of {text:?} is not a number below 2^31"
                ))
            })?;
            indices.push(index);
        }
        Self::from_indices(indices)
    }
}

impl fmt::Display for DerivationPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("m")?;
        for i in &self.0 {
            write!(f, "/{i}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for DerivationPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DerivationPath({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let p: DerivationPath = "m/0/7".parse().unwrap();
        assert_eq!(p.indices(), &[0, 7]);
        assert_eq!(p.to_string(), "m/0/7");
        assert!("m".parse::<DerivationPath>().unwrap().is_root());
        assert_eq!(
            "m/2147483647".parse::<DerivationPath>().unwrap().indices(),
            &[HARDENED_BIT - 1]
        );
    }

    #[test]
    fn refuses_hardened_and_garbage() {
        for bad in ["m/0'", "m/0h", "m/44'/60'/0'/0/0", "m/2147483648"] {
            let err = bad.parse::<DerivationPath>().unwrap_err();
            assert!(err.to_string().contains("hardened"), "{bad}: {err}");
        }
        for bad in ["", "0/1", "m/", "m/x", "m/-1", "m//1", "n/1"] {
            assert!(
                matches!(
                    bad.parse::<DerivationPath>(),
                    Err(Error::InvalidDerivationPath(_))
                ),
                "{bad} accepted"
            );
        }
        assert!(DerivationPath::from_indices(vec![0; 256]).is_err());
    }
}
