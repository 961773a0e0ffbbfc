//! The answers a plan is made from: what the user has and wants.

use serde::{Deserialize, Serialize};

use super::PlanError;

/// What the user has and wants, as asked by `tessera plan` or read from a JSON answer file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answers {
    /// Devices the user (or, for an institution, its officers) can keep a share on: 1 to 5.
    pub own_devices: u8,
    /// Whether a co-signing server is used.
    #[serde(default)]
    pub cosigning_server: bool,
    /// USB drives available for backup keys: 0 to 3.
    #[serde(default)]
    pub usb_drives: u8,
    /// Whether a cloud folder is available for a backup key.
    #[serde(default)]
    pub cloud_folder: bool,
    /// Whether the wallet belongs to an institution (officers, an offline vault).
    #[serde(default)]
    pub institutional: bool,
    /// Whether recovery must work offline: prefer USB drives and printed codes over the cloud.
    #[serde(default)]
    pub offline_recovery: bool,
    /// With a co-signing server: whether to back up the server's share to the owner's holders
    /// too, as a way to the funds should the server disappear for good. Those holders together
    /// then rebuild the key without the server and outside every policy, so the plan asks more
    /// of them than of the device share's backup, and warns first.
    #[serde(default)]
    pub escape_hatch: bool,
}

impl Answers {
    /// Checks the ranges of the numeric answers.
    pub fn validate(&self) -> Result<(), PlanError> {
        if !(1..=5).contains(&self.own_devices) {
            return Err(PlanError::InvalidAnswer {
                field: "own_devices",
                reason: format!("must be between 1 and 5, got {}", self.own_devices),
            });
        }
        if self.usb_drives > 3 {
            return Err(PlanError::InvalidAnswer {
                field: "usb_drives",
                reason: format!("must be between 0 and 3, got {}", self.usb_drives),
            });
        }
        Ok(())
    }
}
