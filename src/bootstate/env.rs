//! The U-Boot environment blob: `u32 crc32 (LE) | [u8 flags] | key=value\0 … \0`,
//! padded to a fixed size. The CRC covers the data area only (after the flags
//! byte in the redundant layout). Readable by Debian's `fw_printenv -c CFG`.

use std::collections::BTreeMap;

// The CRC-32 U-Boot's env code computes (zlib's); one table for the crate.
use crate::wire::serial::CRC32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `crc | data` — what `env export -c` writes and `env import -c` reads.
    Single,
    /// `crc | flags | data` — one of two redundant copies; the copy with the
    /// newer flags counter wins.
    Redundant { flags: u8 },
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EnvError {
    #[error("env blob is {got} bytes, expected {want}")]
    Size { got: usize, want: usize },
    #[error("env CRC mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Crc { stored: u32, computed: u32 },
    #[error("env entry is not `key=value` text: {0}")]
    Entry(String),
    #[error("env does not fit in {0} bytes")]
    Full(usize),
}

/// An ordered set of variables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl Env {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(String::as_str)
    }
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.vars.insert(key.to_owned(), value.into());
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Serialize into a blob of exactly `size` bytes.
    pub fn encode(&self, size: usize, layout: Layout) -> Result<Vec<u8>, EnvError> {
        let header = header_len(layout);
        let mut data = Vec::with_capacity(size);
        for (k, v) in &self.vars {
            if k.is_empty() || k.contains(['=', '\0']) || v.contains('\0') {
                return Err(EnvError::Entry(k.clone()));
            }
            data.extend_from_slice(k.as_bytes());
            data.push(b'=');
            data.extend_from_slice(v.as_bytes());
            data.push(0);
        }
        data.push(0);
        if size < header || data.len() > size - header {
            return Err(EnvError::Full(size));
        }
        data.resize(size - header, 0);
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(&CRC32.checksum(&data).to_le_bytes());
        if let Layout::Redundant { flags } = layout {
            out.push(flags);
        }
        out.extend_from_slice(&data);
        Ok(out)
    }

    /// Parse a blob of exactly `size` bytes; returns the env and its layout.
    pub fn decode(blob: &[u8], size: usize, redundant: bool) -> Result<(Self, Layout), EnvError> {
        if blob.len() != size || size < 5 {
            return Err(EnvError::Size {
                got: blob.len(),
                want: size,
            });
        }
        let (crc_bytes, rest) = blob.split_at(4);
        let stored = u32::from_le_bytes([crc_bytes[0], crc_bytes[1], crc_bytes[2], crc_bytes[3]]);
        let (layout, data) = match rest.split_first() {
            Some((&flags, data)) if redundant => (Layout::Redundant { flags }, data),
            _ => (Layout::Single, rest),
        };
        let computed = CRC32.checksum(data);
        if stored != computed {
            return Err(EnvError::Crc { stored, computed });
        }
        Ok((Self::parse_entries(data), layout))
    }

    /// The entries of a data area, read as U-Boot's importer (`himport_r`)
    /// does: a CRC-valid copy is valid, whatever its text. An entry without
    /// `=` removes that name, bytes that are not UTF-8 are replaced, a later
    /// entry overrides an earlier one; `\0\0` (or the end) stops.
    fn parse_entries(data: &[u8]) -> Self {
        let mut env = Env::new();
        for entry in data.split(|&b| b == 0) {
            if entry.is_empty() {
                break; // "\0\0" ends the list
            }
            let text = String::from_utf8_lossy(entry);
            match text.split_once('=') {
                Some((k, v)) if !k.is_empty() => env.set(k, v),
                Some(_) => {}
                None => {
                    env.vars.remove(text.as_ref());
                }
            }
        }
        env
    }

    /// Pick the valid copy of a redundant pair (libubootenv's rule: both valid →
    /// the newer flags counter, with 255→0 wrap-around).
    pub fn decode_redundant(a: &[u8], b: &[u8], size: usize) -> Result<(Self, Layout), EnvError> {
        match (Self::decode(a, size, true), Self::decode(b, size, true)) {
            (Ok(x), Ok(y)) => {
                let (fa, fb) = (flags_of(x.1), flags_of(y.1));
                let b_newer = (fa == 255 && fb == 0) || (fb > fa && !(fb == 255 && fa == 0));
                Ok(if b_newer { y } else { x })
            }
            (Ok(x), Err(_)) => Ok(x),
            (Err(_), Ok(y)) => Ok(y),
            (Err(e), Err(_)) => Err(e),
        }
    }
}

fn flags_of(layout: Layout) -> u8 {
    match layout {
        Layout::Redundant { flags } => flags,
        Layout::Single => 0,
    }
}

fn header_len(layout: Layout) -> usize {
    match layout {
        Layout::Single => 4,
        Layout::Redundant { .. } => 5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Env {
        let mut env = Env::new();
        env.set("BOOT_ORDER", "A B");
        env.set("BOOT_A_LEFT", "3");
        env
    }

    #[test]
    fn round_trip_both_layouts() {
        for layout in [Layout::Single, Layout::Redundant { flags: 7 }] {
            let blob = sample().encode(256, layout).unwrap();
            assert_eq!(blob.len(), 256);
            let (env, got) = Env::decode(&blob, 256, layout != Layout::Single).unwrap();
            assert_eq!((env, got), (sample(), layout));
        }
    }

    #[test]
    fn pinned_bytes() {
        let mut env = Env::new();
        env.set("a", "1");
        let blob = env.encode(16, Layout::Single).unwrap();
        assert_eq!(&blob[4..], b"a=1\0\0\0\0\0\0\0\0\0");
        assert_eq!(&blob[..4], &crc32fast::hash(&blob[4..]).to_le_bytes());
    }

    #[test]
    fn corrupt_blobs_are_refused() {
        let mut blob = sample().encode(128, Layout::Single).unwrap();
        blob[10] ^= 1;
        assert!(matches!(
            Env::decode(&blob, 128, false),
            Err(EnvError::Crc { .. })
        ));
        assert!(matches!(
            Env::decode(&blob[..100], 128, false),
            Err(EnvError::Size { .. })
        ));
        // Valid CRC over text that is not all key=value: read as U-Boot
        // imports it (no `=`: removes the name; not UTF-8: replaced).
        let mut data = b"k=1\0=x\0v=\xff\0k\0j=2\0\0".to_vec();
        data.resize(124, 0);
        let mut blob = crc32fast::hash(&data).to_le_bytes().to_vec();
        blob.extend(&data);
        let (env, _) = Env::decode(&blob, 128, false).unwrap();
        let got: Vec<(&str, &str)> = env.iter().collect();
        assert_eq!(got, [("j", "2"), ("v", "\u{fffd}")]);
        // No terminator at all: the entries up to the end.
        let data = vec![b'x'; 124];
        let mut blob = crc32fast::hash(&data).to_le_bytes().to_vec();
        blob.extend(&data);
        assert!(Env::decode(&blob, 128, false)
            .unwrap()
            .0
            .iter()
            .next()
            .is_none());
    }

    #[test]
    fn too_big_env_is_refused() {
        let mut env = Env::new();
        env.set("k", "v".repeat(100));
        assert_eq!(env.encode(64, Layout::Single), Err(EnvError::Full(64)));
    }

    #[test]
    fn redundant_pair_picks_newer_valid_copy() {
        let mut newer = sample();
        newer.set("BOOT_A_LEFT", "2");
        let a = sample()
            .encode(128, Layout::Redundant { flags: 4 })
            .unwrap();
        let b = newer.encode(128, Layout::Redundant { flags: 5 }).unwrap();
        assert_eq!(Env::decode_redundant(&a, &b, 128).unwrap().0, newer);
        let mut b_bad = b.clone();
        b_bad[20] ^= 0xff;
        assert_eq!(Env::decode_redundant(&a, &b_bad, 128).unwrap().0, sample());
        // Wrap-around: 0 is newer than 255.
        let a = sample()
            .encode(128, Layout::Redundant { flags: 255 })
            .unwrap();
        let b = newer.encode(128, Layout::Redundant { flags: 0 }).unwrap();
        assert_eq!(Env::decode_redundant(&a, &b, 128).unwrap().0, newer);
    }
}
