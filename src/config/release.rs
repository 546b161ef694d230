//! `/etc/outpost-release` in the initramfs: what OS image this is.

use serde::{Deserialize, Serialize};

/// Path of the release file inside the initramfs.
pub const RELEASE_PATH: &str = "/etc/outpost-release";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    pub board: String,
    pub version: String,
    /// Seconds since the epoch when the image was built: the device's clock is
    /// never set earlier than this.
    pub build_time: u64,
}

impl Release {
    pub fn from_toml(text: &str) -> Result<Self, String> {
        if text.len() > 4096 {
            return Err(format!("release file is {} bytes, limit 4096", text.len()));
        }
        toml::from_str(text).map_err(|e| e.to_string())
    }
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}
