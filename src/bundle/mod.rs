//! The OS image manifest: what a slot holds. Written by the image builder into
//! the slot (`manifest.toml`); signed bundles (issue 4) wrap the same manifest.

use serde::{Deserialize, Serialize};

pub mod delta;
pub mod format;

/// File name of the manifest inside a slot.
pub const MANIFEST_FILE: &str = "manifest.toml";
/// Largest manifest accepted (a few files' hashes fit in far less).
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub board: String,
    pub version: String,
    pub build_time: u64,
    /// Debian kernel package the image was built from ("name version").
    pub kernel_package: String,
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub name: String,
    pub size: u64,
    /// Lowercase hex SHA-256.
    pub sha256: String,
}

impl Manifest {
    pub fn from_toml(text: &str) -> Result<Self, String> {
        if text.len() > MAX_MANIFEST_BYTES {
            return Err(format!(
                "manifest is {} bytes, limit {MAX_MANIFEST_BYTES}",
                text.len()
            ));
        }
        toml::from_str(text).map_err(|e| format!("manifest: {e}"))
    }
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

/// Lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

/// The bytes of hex text (either case); `None` if it is not an even run of
/// hex digits.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len() / 2)
        .map(|i| u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// Lowercase hex of `bytes` (digests, keys, ids): the one hex formatter.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        for nibble in [b >> 4, b & 0xf] {
            out.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_two_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn manifest_round_trip_and_hash() {
        let m = Manifest {
            board: "qemu-virt".into(),
            version: "0.1.0".into(),
            build_time: 1,
            kernel_package: "linux-image-6.1.0-50-arm64 6.1.176-1".into(),
            files: vec![FileEntry {
                name: "Image.gz".into(),
                size: 3,
                sha256: sha256_hex(b"abc"),
            }],
        };
        assert_eq!(Manifest::from_toml(&m.to_toml()).unwrap(), m);
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
