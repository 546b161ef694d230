//! Replay protection for call-home commands: per operator certificate, the
//! highest sequence number seen and a 64-wide window below it (as IPsec's
//! anti-replay window), so two commands of one operator that cross in
//! flight both run, and a copy of either never does. Kept on DATA and
//! written before the command runs: a reboot (even one the command asked
//! for) does not open the window again.

use std::path::{Path, PathBuf};

/// Operator certificates remembered. Each costs 32 bytes on DATA; a site
/// has a handful of operators. When full, the one with the oldest sequence
/// number goes (its commands are long expired: the CLI's sequence numbers
/// are its clock).
pub const MAX_OPERATORS: usize = 256;
/// Commands below the highest seen that may still arrive late.
const WINDOW: u64 = 64;
const RECORD: usize = 32;

/// Which operator certificate: the first 16 bytes of its SHA-256.
pub type KeyId = [u8; 16];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    key: KeyId,
    high: u64,
    /// Bit i set: `high - i` was seen.
    seen: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("sequence {seq} was already used or is too old (highest seen {high})")]
pub struct Replayed {
    pub seq: u64,
    pub high: u64,
}

pub struct ReplayGuard {
    path: Option<PathBuf>,
    entries: Vec<Entry>,
}

impl ReplayGuard {
    /// The guard kept in `path` (missing or unreadable: start empty).
    pub fn load(path: &Path) -> Self {
        use std::io::Read;
        let mut bytes = Vec::new();
        let read = std::fs::File::open(path).and_then(|f| {
            f.take((MAX_OPERATORS * RECORD) as u64)
                .read_to_end(&mut bytes)
        });
        if let Err(e) = read {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(
                    "callhome: {}: {e}; starting a new replay record",
                    path.display()
                );
            }
        }
        Self {
            path: Some(path.to_path_buf()),
            entries: bytes.chunks_exact(RECORD).filter_map(parse).collect(),
        }
    }

    /// A guard that persists nothing (tests).
    #[cfg(test)]
    fn in_memory() -> Self {
        Self {
            path: None,
            entries: Vec::new(),
        }
    }

    /// Accept `seq` from `key` once; record it durably before returning.
    pub fn accept(&mut self, key: KeyId, seq: u64) -> Result<(), Replayed> {
        match self.entries.iter_mut().find(|e| e.key == key) {
            Some(e) if seq > e.high => {
                let shift = seq - e.high;
                e.seen = if shift >= WINDOW { 0 } else { e.seen << shift } | 1;
                e.high = seq;
            }
            Some(e) => {
                let behind = e.high - seq;
                let bit = 1u64.checked_shl(u32::try_from(behind).unwrap_or(u32::MAX));
                match bit {
                    Some(bit) if behind < WINDOW && e.seen & bit == 0 => e.seen |= bit,
                    _ => return Err(Replayed { seq, high: e.high }),
                }
            }
            None => {
                if self.entries.len() >= MAX_OPERATORS {
                    if let Some(oldest) = (0..self.entries.len())
                        .min_by_key(|&i| self.entries.get(i).map_or(0, |e| e.high))
                    {
                        self.entries.swap_remove(oldest);
                    }
                }
                self.entries.push(Entry {
                    key,
                    high: seq,
                    seen: 1,
                });
            }
        }
        self.save();
        Ok(())
    }

    fn save(&self) {
        let Some(path) = &self.path else { return };
        let mut bytes = Vec::with_capacity(self.entries.len() * RECORD);
        for e in &self.entries {
            bytes.extend_from_slice(&e.key);
            bytes.extend_from_slice(&e.high.to_le_bytes());
            bytes.extend_from_slice(&e.seen.to_le_bytes());
        }
        // Not saved: still refused for this boot (in memory); a reboot
        // would forget it, so say so loudly.
        if let Err(e) = crate::device::durable::write_durably(path, &bytes) {
            tracing::error!("callhome: saving {}: {e}", path.display());
        }
    }
}

fn parse(rec: &[u8]) -> Option<Entry> {
    let key = rec.get(..16)?.try_into().ok()?;
    let high = u64::from_le_bytes(rec.get(16..24)?.try_into().ok()?);
    let seen = u64::from_le_bytes(rec.get(24..32)?.try_into().ok()?);
    Some(Entry { key, high, seen })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_sequence_number_runs_once_even_out_of_order() {
        let mut g = ReplayGuard::in_memory();
        let k = [1; 16];
        assert_eq!(g.accept(k, 100), Ok(()));
        assert_eq!(
            g.accept(k, 100),
            Err(Replayed {
                seq: 100,
                high: 100
            })
        );
        assert_eq!(g.accept(k, 98), Ok(()), "late but inside the window");
        assert!(g.accept(k, 98).is_err());
        assert_eq!(g.accept(k, 200), Ok(()));
        assert!(g.accept(k, 200 - 64).is_err(), "older than the window");
        assert!(g.accept(k, 100).is_err());
        assert_eq!(g.accept(k, 199), Ok(()));
        // Another operator has its own numbers.
        assert_eq!(g.accept([2; 16], 5), Ok(()));
        assert_eq!(g.accept(k, u64::MAX), Ok(()));
        assert!(g.accept(k, 0).is_err());
    }

    #[test]
    fn survives_a_reboot_and_evicts_the_oldest() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state/callhome-seq");
        let mut g = ReplayGuard::load(&path);
        g.accept([1; 16], 10).unwrap();
        g.accept([1; 16], 8).unwrap();
        let mut again = ReplayGuard::load(&path);
        assert!(again.accept([1; 16], 10).is_err());
        assert!(again.accept([1; 16], 8).is_err());
        assert!(again.accept([1; 16], 9).is_ok());
        for i in 0..MAX_OPERATORS as u64 {
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&(i + 100).to_le_bytes());
            again.accept(key, 1000 + i).unwrap();
        }
        assert_eq!(again.entries.len(), MAX_OPERATORS);
        assert!(
            again.entries.iter().all(|e| e.key != [1; 16]),
            "oldest went"
        );
        // A torn or foreign file is read as far as whole records go.
        std::fs::write(&path, [7u8; 40]).unwrap();
        assert_eq!(ReplayGuard::load(&path).entries.len(), 1);
    }
}
