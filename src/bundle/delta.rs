//! Delta installs: which chunks of a new image a device must be sent, and
//! the file that carries them.
//!
//! The device answers a signed header with a bitmap of the chunks it can
//! produce itself (bit i set = "I have chunk i": found in a slot or an
//! earlier delta upload, hash-checked, or equal to an earlier chunk of the
//! same image). The CLI then uploads a *delta payload* — an ordinary,
//! resumable upload:
//!
//! ```text
//! "OUTPOSTD" | manifest: SHA-256 of the signed header artifact (32 B)
//!            | sent: bitmap, ceil(chunks / 8) bytes, bit i = chunk i follows
//!            | the sent chunks in order, each as in the bundle payload
//! ```
//! Bitmaps are LSB first: chunk i is bit `i % 8` of byte `i / 8`.

use std::collections::HashSet;

use super::format::BundleHeader;

pub const DELTA_MAGIC: &[u8; 8] = b"OUTPOSTD";
/// Bytes of a delta payload before its bitmap.
pub const DELTA_PREFIX: usize = 8 + 32;

pub fn bitmap_len(chunks: usize) -> usize {
    chunks.div_ceil(8)
}

pub fn bit(bits: &[u8], i: usize) -> bool {
    bits.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
}

pub fn set_bit(bits: &mut [u8], i: usize) {
    if let Some(b) = bits.get_mut(i / 8) {
        *b |= 1 << (i % 8);
    }
}

/// The "have" bitmap for `header`: chunk i is had when `local(i)` finds it
/// on the device, or when an earlier chunk has the same hash (the device
/// copies it from what it already wrote).
pub fn have(header: &BundleHeader, mut local: impl FnMut(usize) -> bool) -> Vec<u8> {
    let mut bits = vec![0u8; bitmap_len(header.chunks.len())];
    let mut seen = HashSet::new();
    for (i, c) in header.chunks.iter().enumerate() {
        if !seen.insert(c.sha256) || local(i) {
            set_bit(&mut bits, i);
        }
    }
    bits
}

/// The bitmap of chunks to send: those not in `have`.
pub fn missing(header: &BundleHeader, have: &[u8]) -> Vec<u8> {
    let mut bits = vec![0u8; bitmap_len(header.chunks.len())];
    for i in 0..header.chunks.len() {
        if !bit(have, i) {
            set_bit(&mut bits, i);
        }
    }
    bits
}

/// Payload bytes of the chunks in `sent`.
pub fn sent_bytes(header: &BundleHeader, sent: &[u8]) -> u64 {
    header
        .chunks
        .iter()
        .enumerate()
        .filter(|(i, _)| bit(sent, *i))
        .map(|(_, c)| u64::from(c.clen))
        .sum()
}

/// The start of a delta payload, before its chunks.
pub fn prefix(manifest: &[u8; 32], sent: &[u8]) -> Vec<u8> {
    [&DELTA_MAGIC[..], manifest, sent].concat()
}

/// The manifest a delta payload belongs to, if `start` begins one.
pub fn payload_manifest(start: &[u8]) -> Option<[u8; 32]> {
    if start.get(..8)? != DELTA_MAGIC {
        return None;
    }
    start.get(8..DELTA_PREFIX)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::format::ChunkEntry;

    fn header(hashes: &[u8]) -> BundleHeader {
        let chunks: Vec<ChunkEntry> = hashes
            .iter()
            .map(|&h| ChunkEntry {
                sha256: [h; 32],
                len: 100,
                clen: 10,
            })
            .collect();
        BundleHeader {
            board: "b".into(),
            version: "1".into(),
            min_version: "0".into(),
            build_time: 0,
            image_size: 100 * chunks.len() as u64,
            image_sha256: [0; 32],
            payload_size: 10 * chunks.len() as u64,
            chunks,
        }
    }

    #[test]
    fn have_counts_local_chunks_and_repeats() {
        // 9 chunks: hash 7 repeats (second copy is had), chunk 1 is local.
        let h = header(&[7, 1, 7, 2, 3, 4, 5, 6, 8]);
        let have = have(&h, |i| i == 1);
        assert_eq!(have, vec![0b0000_0110, 0]);
        let miss = missing(&h, &have);
        assert_eq!(miss, vec![0b1111_1001, 1]);
        assert_eq!(sent_bytes(&h, &miss), 70);
        assert!(bit(&miss, 8) && !bit(&miss, 9) && !bit(&[], 0));
    }

    #[test]
    fn payload_prefix_names_its_manifest() {
        let p = prefix(&[5; 32], &[1, 2]);
        assert_eq!(p.len(), DELTA_PREFIX + 2);
        assert_eq!(payload_manifest(&p), Some([5; 32]));
        assert_eq!(payload_manifest(&p[..20]), None);
        assert_eq!(
            payload_manifest(b"OUTPOSTB and more bytes than forty......."),
            None
        );
    }
}
