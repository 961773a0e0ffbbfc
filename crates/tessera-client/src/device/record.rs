//! The device home's JSON records carry their format version: `{"version": N, …}` first in the
//! object. Files written before the field existed have none and are version 1; a version newer
//! than the reader knows is refused with a clear error instead of being half understood.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tessera_store::{HomeRecord, HomeStorage};

use super::DeviceError;

#[derive(Serialize)]
struct Versioned<'a, T> {
    version: u16,
    #[serde(flatten)]
    record: &'a T,
}

#[derive(Deserialize)]
struct Header {
    #[serde(default = "first_version")]
    version: u16,
}

const fn first_version() -> u16 {
    1
}

/// `record` as pretty JSON with `"version": version` first.
pub(crate) fn encode<T: Serialize>(record: &T, version: u16) -> Result<String, DeviceError> {
    serde_json::to_string_pretty(&Versioned { version, record }).map_err(DeviceError::encode)
}

/// Reads `bytes` of `which` (kept in `home`) as a record of at most version `supported`.
pub(crate) fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    home: &dyn HomeStorage,
    which: HomeRecord,
    supported: u16,
) -> Result<T, DeviceError> {
    let damaged = |reason: String| DeviceError::Damaged {
        location: home.location(which),
        reason,
    };
    let header: Header = serde_json::from_slice(bytes).map_err(|e| damaged(e.to_string()))?;
    if header.version == 0 || header.version > supported {
        return Err(damaged(format!(
            "format version {} is not one this build reads (1 to {supported}): a newer Tessera wrote it",
            header.version
        )));
    }
    serde_json::from_slice(bytes).map_err(|e| damaged(e.to_string()))
}
