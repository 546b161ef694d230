//! Delta installs on the device: which chunks of a new image it can take from
//! what it already holds — its two slots (through the chunk list kept on
//! DATA for each, `state/slot-X.chunks`: the signed start of the bundle the
//! slot was written from) and delta payloads uploaded earlier,
//! whole or in part — each read back and hash-checked before it counts. A
//! chunk that does not match is "missing": the CLI sends it.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::install::{InstallError, Loc, Sources, EARLIER};
use crate::bootstate::Slot;
use crate::bundle::delta::{self, bit, bitmap_len, DELTA_PREFIX};
use crate::bundle::format::{self, BundleHeader, MAX_HEADER_LEN, PREAMBLE_LEN, SIGNATURE_LEN};

/// The chunk list of the image in a slot, on DATA.
pub fn index_path(data_dir: &Path, slot: Slot) -> PathBuf {
    data_dir.join(format!("state/slot-{}.chunks", slot.name()))
}

/// Staging files looked at for chunks of earlier delta uploads: the
/// directory holds at most a few uploads (`MAX_UPLOADS` parts and their
/// finished artifacts); more is not ours to scan.
const MAX_STAGED_SCAN: usize = 32;

/// Chunks found on the device for a new image.
pub struct Local {
    pub sources: Sources,
    /// Per chunk of the new image: where a verified copy is.
    pub locs: Vec<Option<Loc>>,
}

/// What the device holds of `header`: the slots' chunk lists (`slots`:
/// device and DATA chunk list of the active slot, then of the target) and
/// the delta payloads for `manifest` in `staging`. `target` is the slot about
/// to be written: its chunks count only where they are read before being
/// overwritten (at or after the offset being written, as writing goes up).
pub fn find(
    header: &BundleHeader,
    manifest: &[u8; 32],
    slots: [(&Path, &Path); 2],
    staging: &Path,
) -> Local {
    // Candidate places per hash of the new image (one map: each map type
    // costs PID 1 its own code).
    let mut cands: HashMap<[u8; 32], Vec<Loc>> = header
        .chunks
        .iter()
        .map(|c| (c.sha256, Vec::new()))
        .collect();
    let mut paths = Vec::new();
    let mut target_file = None;
    for (n, (device, index)) in slots.iter().enumerate() {
        let Some(old) = read_index(index) else {
            continue;
        };
        if n == 1 {
            target_file = Some(paths.len());
        }
        for (c, (at, _)) in old.chunks.iter().zip(old.offsets()) {
            if let Some(list) = cands.get_mut(&c.sha256) {
                list.push(Loc {
                    file: paths.len(),
                    at,
                    packed: c.len,
                });
            }
        }
        paths.push(device.to_path_buf());
    }
    for path in staged_payloads(staging, manifest) {
        let file = paths.len();
        if add_payload(header, &path, file, &mut cands) {
            paths.push(path);
        }
    }
    let mut sources = Sources::new(paths);
    let mut buf = Vec::new();
    let mut locs = Vec::with_capacity(header.chunks.len());
    for (c, (at, _)) in header.chunks.iter().zip(header.offsets()) {
        let Some(list) = cands.get_mut(&c.sha256) else {
            locs.push(None);
            continue;
        };
        let found = list
            .iter()
            .filter(|l| Some(l.file) != target_file || l.at >= at)
            .find(|&&l| l.file == EARLIER || matches!(sources.read(c, l, &mut buf), Ok(true)))
            .copied();
        locs.push(found);
        // Later chunks with this hash copy it from the slot being written.
        list.push(Loc {
            file: EARLIER,
            at,
            packed: c.len,
        });
    }
    Local { sources, locs }
}

/// The bitmap answered to `DeltaPlan`: the chunks with a place to come
/// from (the rule of `bundle::delta::have`).
pub fn have(header: &BundleHeader, local: &Local) -> Vec<u8> {
    let mut bits = vec![0u8; bitmap_len(header.chunks.len())];
    for (i, loc) in local.locs.iter().enumerate() {
        if loc.is_some() {
            delta::set_bit(&mut bits, i);
        }
    }
    bits
}

/// Take the chunks of an uploaded delta payload into `local` (they win over
/// local copies). The payload must be for `manifest` and exactly as long as
/// its bitmap says.
pub fn use_payload(
    header: &BundleHeader,
    manifest: &[u8; 32],
    payload: &Path,
    local: &mut Local,
) -> Result<(), InstallError> {
    let err = |m: &str| InstallError::Payload(format!("delta payload: {m}"));
    let p = read_prefix(header, payload).ok_or_else(|| err("unreadable"))?;
    if p.manifest != *manifest {
        return Err(err("made for another bundle"));
    }
    let mut at = (DELTA_PREFIX + p.sent.len()) as u64;
    if p.len != at + delta::sent_bytes(header, &p.sent) {
        return Err(err("length does not match its bitmap"));
    }
    let file = local.sources.add(payload.to_path_buf());
    for (i, c) in header.chunks.iter().enumerate() {
        if bit(&p.sent, i) {
            if let Some(slot) = local.locs.get_mut(i) {
                *slot = Some(Loc {
                    file,
                    at,
                    packed: c.clen,
                });
            }
            at += u64::from(c.clen);
        }
    }
    Ok(())
}

/// A slot's chunk list from DATA, if it is there and sane (a hint only:
/// every chunk is hash-checked when read).
fn read_index(path: &Path) -> Option<BundleHeader> {
    let mut bytes = Vec::new();
    File::open(path)
        .ok()?
        .take((MAX_HEADER_LEN + PREAMBLE_LEN + SIGNATURE_LEN) as u64)
        .read_to_end(&mut bytes)
        .ok()?;
    format::parse_unsigned(&bytes).ok()
}

/// Delta payloads in staging (finished or partial) made for `manifest`.
fn staged_payloads(staging: &Path, manifest: &[u8; 32]) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir(staging) else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .take(MAX_STAGED_SCAN)
        .map(|e| e.path())
        .filter(|p| {
            let mut start = [0u8; DELTA_PREFIX];
            File::open(p)
                .and_then(|f| f.read_exact_at(&mut start, 0))
                .is_ok()
                && delta::payload_manifest(&start) == Some(*manifest)
        })
        .collect()
}

/// The start of a delta payload file.
struct Prefix {
    manifest: [u8; 32],
    /// Bitmap of the chunks that follow.
    sent: Vec<u8>,
    /// The file's length.
    len: u64,
}

fn read_prefix(header: &BundleHeader, path: &Path) -> Option<Prefix> {
    let f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let mut start = vec![0u8; DELTA_PREFIX + bitmap_len(header.chunks.len())];
    f.read_exact_at(&mut start, 0).ok()?;
    let manifest = delta::payload_manifest(&start)?;
    Some(Prefix {
        manifest,
        sent: start.split_off(DELTA_PREFIX),
        len,
    })
}

/// Add the complete chunks of a (maybe partial) payload to the candidates.
fn add_payload(
    header: &BundleHeader,
    path: &Path,
    file: usize,
    cands: &mut HashMap<[u8; 32], Vec<Loc>>,
) -> bool {
    let Some(Prefix { sent, len, .. }) = read_prefix(header, path) else {
        return false;
    };
    let mut at = (DELTA_PREFIX + sent.len()) as u64;
    for (i, c) in header.chunks.iter().enumerate() {
        if !bit(&sent, i) {
            continue;
        }
        let end = at + u64::from(c.clen);
        if end > len {
            break;
        }
        if let Some(list) = cands.get_mut(&c.sha256) {
            list.push(Loc {
                file,
                at,
                packed: c.clen,
            });
        }
        at = end;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::format::{encode_signed_part, ChunkEntry};

    fn sha(d: &[u8]) -> [u8; 32] {
        ring::digest::digest(&ring::digest::SHA256, d)
            .as_ref()
            .try_into()
            .unwrap()
    }

    /// A header over `chunks`, all stored (not deflated).
    fn header(chunks: &[&[u8]]) -> BundleHeader {
        let image: Vec<u8> = chunks.concat();
        BundleHeader {
            board: "b".into(),
            version: "1".into(),
            min_version: "0".into(),
            build_time: 0,
            image_size: image.len() as u64,
            image_sha256: sha(&image),
            chunks: chunks
                .iter()
                .map(|c| ChunkEntry {
                    sha256: sha(c),
                    len: c.len() as u32,
                    clen: c.len() as u32,
                })
                .collect(),
            payload_size: image.len() as u64,
        }
    }

    fn signed_start(h: &BundleHeader) -> Vec<u8> {
        let mut start = encode_signed_part(h);
        start.extend([0u8; SIGNATURE_LEN]);
        start
    }

    #[test]
    fn local_repeated_and_sent_chunks_assemble_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let (x, y, z) = (vec![1u8; 3000], vec![2u8; 5000], vec![3u8; 700]);
        // Slot A holds [z, y]; the new image is [x, y, x, z, y].
        let old = header(&[&z, &y]);
        let slot_a = dir.path().join("a.img");
        std::fs::write(&slot_a, [&z[..], &y].concat()).unwrap();
        let index_a = dir.path().join("a.chunks");
        std::fs::write(&index_a, signed_start(&old)).unwrap();
        let slot_b = dir.path().join("b.img");
        std::fs::write(&slot_b, vec![0xee; 20_000]).unwrap();
        let new = header(&[&x, &y, &x, &z, &y]);
        let manifest = [9u8; 32];
        let staging = dir.path().join("staging");
        let none = dir.path().join("none");
        let local = find(
            &new,
            &manifest,
            [(&slot_a, &index_a), (&slot_b, &none)],
            &staging,
        );
        // x: sent; y: slot A; x again: the first x; z, y: slot A.
        assert_eq!(have(&new, &local), vec![0b11110]);
        assert_eq!(local.locs[2].map(|l| (l.file, l.at)), Some((EARLIER, 0)));

        // The delta payload: x only. A corrupted byte in slot A's z makes
        // z missing at the next plan (never installed from there).
        std::fs::create_dir_all(&staging).unwrap();
        let sent = vec![0b00001u8];
        let payload = staging.join("delta");
        std::fs::write(
            &payload,
            [delta::prefix(&manifest, &sent), x.clone()].concat(),
        )
        .unwrap();
        let mut local = local;
        use_payload(&new, &manifest, &payload, &mut local).unwrap();
        crate::device::install::write_slot(
            &new,
            &mut local.sources,
            &local.locs,
            &slot_b,
            &mut |_| {},
        )
        .unwrap();
        let image = [&x[..], &y, &x, &z, &y].concat();
        assert_eq!(&std::fs::read(&slot_b).unwrap()[..image.len()], &image[..]);

        let mut bytes = std::fs::read(&slot_a).unwrap();
        bytes[10] ^= 1;
        std::fs::write(&slot_a, bytes).unwrap();
        let again = find(
            &new,
            &[8; 32],
            [(&slot_a, &index_a), (&slot_b, &none)],
            &staging,
        );
        assert_eq!(have(&new, &again), vec![0b10110], "z is missing now");
        // A payload for another manifest is refused.
        let mut other = again;
        assert!(use_payload(&new, &[8; 32], &payload, &mut other).is_err());
    }
}
