//! Installs a bundle into the inactive slot: check the signature and what the
//! header claims before anything is written, then write the image chunk by
//! chunk — each from wherever it is (the bundle's payload, a delta payload,
//! a slot that already holds it), inflated and verified *before* it is
//! written — then read the whole slot back and compare. Only after that may
//! the caller make the slot bootable (one boot-state write, see `slots`).
//! The active slot is never opened for writing: the caller passes the other
//! slot's device.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::bundle::format::{
    self, BundleError, BundleHeader, ChunkEntry, MAX_CHUNK, MAX_HEADER_LEN, SIGNATURE_LEN,
};

/// Read size of the final read-back.
const READ_STEP: usize = 64 * 1024;
/// Trusted release keys file: at most this many bytes (a few hex lines).
const MAX_KEYS_FILE: u64 = 16 * 1024;
/// Where an image keeps the release public keys it trusts (one hex key per line).
pub const RELEASE_KEYS_PATH: &str = "/etc/outpost/release-keys";

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{0}")]
    Bundle(#[from] BundleError),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing slot {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bundle payload is corrupt: {0}")]
    Payload(String),
    #[error("slot {path} is {have} bytes, the image needs {need}")]
    SlotTooSmall { path: PathBuf, have: u64, need: u64 },
    #[error("no trusted release key: {0}")]
    NoKeys(String),
    #[error("chunk {0} was neither sent nor found on this device; run the upgrade again")]
    Missing(usize),
}

/// Who the device is and whom it trusts.
pub struct Trust {
    pub keys: Vec<[u8; 32]>,
    pub board: String,
    pub running_version: String,
}

/// Parse hex public keys, one per line (`#` comments, blank lines skipped).
pub fn parse_keys(text: &str) -> Vec<[u8; 32]> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| l.len() == 64 && l.bytes().all(|b| b.is_ascii_hexdigit()))
        .filter_map(|l| {
            let mut key = [0u8; 32];
            for (i, b) in key.iter_mut().enumerate() {
                *b = u8::from_str_radix(l.get(2 * i..2 * i + 2)?, 16).ok()?;
            }
            Some(key)
        })
        .collect()
}

/// The release keys an image trusts.
pub fn read_keys(path: &Path) -> Result<Vec<[u8; 32]>, InstallError> {
    let mut text = String::new();
    File::open(path)
        .and_then(|f| f.take(MAX_KEYS_FILE).read_to_string(&mut text))
        .map_err(|e| InstallError::NoKeys(format!("{}: {e}", path.display())))?;
    let keys = parse_keys(&text);
    if keys.is_empty() {
        return Err(InstallError::NoKeys(format!(
            "{} lists no key",
            path.display()
        )));
    }
    Ok(keys)
}

/// Check a bundle's signature, board and version. Returns the header and
/// the offset of its payload. Reads at most the header's capped size.
/// `whole`: the file is the whole bundle (else only its signed start, as a
/// delta upgrade uploads it).
pub fn verify(
    bundle: &Path,
    trust: &Trust,
    force: bool,
    whole: bool,
) -> Result<(BundleHeader, u64), InstallError> {
    let read_err = |source| InstallError::Read {
        path: bundle.to_path_buf(),
        source,
    };
    let mut file = File::open(bundle).map_err(read_err)?;
    let mut preamble = [0u8; format::PREAMBLE_LEN];
    file.read_exact(&mut preamble)
        .map_err(|_| BundleError::Truncated("preamble"))?;
    let signed_len = format::signed_part_len(&preamble)?;
    let mut start =
        vec![0u8; (signed_len + SIGNATURE_LEN).min(MAX_HEADER_LEN + 64 + format::PREAMBLE_LEN)];
    file.seek(SeekFrom::Start(0)).map_err(read_err)?;
    file.read_exact(&mut start)
        .map_err(|_| BundleError::Truncated("header"))?;
    let (header, payload_at) = format::parse(&start, &trust.keys)?;
    format::check_install(&header, &trust.board, &trust.running_version, force)?;
    let len = file.metadata().map_err(read_err)?.len();
    let want = payload_at as u64 + if whole { header.payload_size } else { 0 };
    if len != want {
        return Err(BundleError::Truncated("payload").into());
    }
    Ok((header, payload_at as u64))
}

/// `Loc::file` of a chunk equal to an earlier one of the same image: read
/// back from the slot being written, at `at`.
pub const EARLIER: usize = usize::MAX;

/// Where one chunk's bytes are: `packed` bytes at `at` of file `file`,
/// stored when `packed` equals the chunk's length, else raw deflate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    pub file: usize,
    pub at: u64,
    pub packed: u32,
}

/// The files chunks are read from, opened once.
pub struct Sources {
    files: Vec<(PathBuf, Option<File>)>,
    packed: Vec<u8>,
}

impl Sources {
    pub fn new(paths: Vec<PathBuf>) -> Self {
        Self {
            files: paths.into_iter().map(|p| (p, None)).collect(),
            packed: Vec::new(),
        }
    }

    /// Add a file; its index for `Loc::file`.
    pub fn add(&mut self, path: PathBuf) -> usize {
        self.files.push((path, None));
        self.files.len() - 1
    }

    /// Read chunk `c` from `loc` into `out` (resized to its length) and
    /// check its hash: a chunk that does not match is never returned.
    pub fn read(
        &mut self,
        c: &ChunkEntry,
        loc: Loc,
        out: &mut Vec<u8>,
    ) -> Result<bool, InstallError> {
        let (path, file) = self
            .files
            .get_mut(loc.file)
            .ok_or_else(|| InstallError::Payload("no such chunk source".into()))?;
        let read_err = |source| InstallError::Read {
            path: path.clone(),
            source,
        };
        if file.is_none() {
            *file = Some(File::open(&*path).map_err(read_err)?);
        }
        let f = file
            .as_ref()
            .ok_or_else(|| InstallError::Payload("closed".into()))?;
        let len = c.len.min(MAX_CHUNK) as usize;
        out.resize(len, 0);
        if loc.packed == c.len {
            f.read_exact_at(out, loc.at).map_err(read_err)?;
        } else {
            self.packed.resize(loc.packed.min(MAX_CHUNK) as usize, 0);
            f.read_exact_at(&mut self.packed, loc.at)
                .map_err(read_err)?;
            let n = miniz_oxide::inflate::decompress_slice_iter_to_slice(
                out,
                std::iter::once(&self.packed[..]),
                false,
                true,
            );
            if n != Ok(len) {
                return Ok(false);
            }
        }
        Ok(ring::digest::digest(&ring::digest::SHA256, out).as_ref() == c.sha256)
    }
}

/// Write `header`'s image into `slot` (a block device or, in host mode, a
/// file): chunk i from `locs[i]` (`EARLIER`: copied from what this write
/// already put in the slot); each verified before it is written. Then read
/// the slot back. `progress` gets the bytes written so far.
pub fn write_slot(
    header: &BundleHeader,
    sources: &mut Sources,
    locs: &[Option<Loc>],
    slot: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<(), InstallError> {
    let write_err = |source| InstallError::Write {
        path: slot.to_path_buf(),
        source,
    };
    let out = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(slot)
        .map_err(write_err)?;
    let have = slot_size(&out).map_err(write_err)?;
    if have < header.image_size {
        return Err(InstallError::SlotTooSmall {
            path: slot.to_path_buf(),
            have,
            need: header.image_size,
        });
    }
    let mut buf = Vec::new();
    for (i, (c, (at, _))) in header.chunks.iter().zip(header.offsets()).enumerate() {
        let good = match locs.get(i).copied().flatten() {
            Some(loc) if loc.file == EARLIER && loc.at < at => {
                buf.resize(c.len.min(MAX_CHUNK) as usize, 0);
                out.read_exact_at(&mut buf, loc.at).map_err(write_err)?;
                ring::digest::digest(&ring::digest::SHA256, &buf).as_ref() == c.sha256
            }
            Some(loc) if loc.file != EARLIER => sources.read(c, loc, &mut buf)?,
            _ => return Err(InstallError::Missing(i)),
        };
        if !good {
            return Err(BundleError::Chunk { index: i }.into());
        }
        out.write_all_at(&buf, at).map_err(write_err)?;
        progress(at + u64::from(c.len));
    }
    out.sync_all().map_err(write_err)?;
    read_back(&out, header).map_err(|e| match e {
        ReadBack::Io(source) => InstallError::Write {
            path: slot.to_path_buf(),
            source,
        },
        ReadBack::Mismatch => BundleError::Image.into(),
    })
}

/// Every chunk from a whole bundle's payload (a full install).
pub fn payload_locs(header: &BundleHeader, payload_at: u64, file: usize) -> Vec<Option<Loc>> {
    header
        .chunks
        .iter()
        .zip(header.offsets())
        .map(|(c, (_, p))| {
            Some(Loc {
                file,
                at: payload_at + p,
                packed: c.clen,
            })
        })
        .collect()
}

enum ReadBack {
    Io(std::io::Error),
    Mismatch,
}

/// Read the written image back from the slot and compare its SHA-256.
fn read_back(out: &File, header: &BundleHeader) -> Result<(), ReadBack> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; READ_STEP];
    let mut offset = 0u64;
    while offset < header.image_size {
        let n = usize::try_from((header.image_size - offset).min(READ_STEP as u64))
            .unwrap_or(READ_STEP);
        out.read_exact_at(&mut buf[..n], offset)
            .map_err(ReadBack::Io)?;
        ctx.update(&buf[..n]);
        offset += n as u64;
    }
    if ctx.finish().as_ref() == header.image_sha256 {
        Ok(())
    } else {
        Err(ReadBack::Mismatch)
    }
}

/// Size of a block device or regular file (seek to the end: works for both).
fn slot_size(file: &File) -> std::io::Result<u64> {
    let mut f = file;
    let size = f.seek(SeekFrom::End(0))?;
    f.seek(SeekFrom::Start(0))?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::format::encode_signed_part;
    use ring::signature::KeyPair;

    struct Fixture {
        dir: tempfile::TempDir,
        trust: Trust,
        key: ring::signature::Ed25519KeyPair,
        image: Vec<u8>,
    }

    fn fixture() -> Fixture {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let key = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let trust = Trust {
            keys: vec![key.public_key().as_ref().try_into().unwrap()],
            board: "qemu-virt".into(),
            running_version: "1.0.0".into(),
        };
        // An image with some structure and long zero runs, like a slot.
        let mut image = vec![0u8; 300_000];
        for (i, b) in image.iter_mut().enumerate().take(50_000) {
            *b = (i * 7 % 251) as u8;
        }
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            trust,
            key,
            image,
        }
    }

    fn sha(d: &[u8]) -> [u8; 32] {
        ring::digest::digest(&ring::digest::SHA256, d)
            .as_ref()
            .try_into()
            .unwrap()
    }

    /// Build a bundle file as `outpost bundle build` does (fixed-size
    /// chunks here: the device does not care how they were cut).
    fn bundle(
        f: &Fixture,
        version: &str,
        tamper: impl Fn(&mut BundleHeader, &mut Vec<u8>),
    ) -> PathBuf {
        use std::io::Write;
        let mut payload = Vec::new();
        let mut chunks = Vec::new();
        for c in f.image.chunks(4096) {
            let mut packed = miniz_oxide::deflate::compress_to_vec(c, 6);
            if packed.len() >= c.len() {
                packed = c.to_vec();
            }
            chunks.push(ChunkEntry {
                sha256: sha(c),
                len: c.len() as u32,
                clen: packed.len() as u32,
            });
            payload.extend(packed);
        }
        let mut header = BundleHeader {
            board: "qemu-virt".into(),
            version: version.into(),
            min_version: "0.1.0".into(),
            build_time: 0,
            image_size: f.image.len() as u64,
            image_sha256: sha(&f.image),
            chunks,
            payload_size: 0,
        };
        tamper(&mut header, &mut payload);
        header.payload_size = payload.len() as u64;
        let signed = encode_signed_part(&header);
        let path = f.dir.path().join(format!("{version}.bundle"));
        let mut file = File::create(&path).unwrap();
        file.write_all(&signed).unwrap();
        file.write_all(f.key.sign(&signed).as_ref()).unwrap();
        file.write_all(&payload).unwrap();
        path
    }

    fn slot(f: &Fixture) -> PathBuf {
        let p = f.dir.path().join("slot-b.img");
        std::fs::write(&p, vec![0xeeu8; 400_000]).unwrap();
        p
    }

    fn install(f: &Fixture, b: &Path, slot: &Path) -> Result<(), InstallError> {
        let (h, at) = verify(b, &f.trust, false, true)?;
        let locs = payload_locs(&h, at, 0);
        write_slot(
            &h,
            &mut Sources::new(vec![b.into()]),
            &locs,
            slot,
            &mut |_| {},
        )
    }

    #[test]
    fn tampered_and_wrong_bundles_are_refused_before_writing() {
        let f = fixture();
        let s = slot(&f);
        let untouched = std::fs::read(&s).unwrap();
        // A chunk whose data does not match its hash: refused at that chunk.
        let b = bundle(&f, "1.1.0", |h, _| h.chunks[3].sha256[0] ^= 1);
        assert!(matches!(
            install(&f, &b, &s),
            Err(InstallError::Bundle(BundleError::Chunk { index: 3 }))
        ));
        // Payload bytes flipped after signing: inflate or a chunk hash fails.
        let b = bundle(&f, "1.1.1", |_, p| {
            let mid = p.len() / 2;
            p[mid] ^= 0x55;
        });
        assert!(install(&f, &b, &s).is_err());
        // A payload cut short (and signed that way): refused by the header check.
        let b = bundle(&f, "1.1.3", |_, p| p.truncate(p.len() / 2));
        assert!(verify(&b, &f.trust, false, true).is_err());
        // Truncated file.
        let b = bundle(&f, "1.1.2", |_, _| {});
        let bytes = std::fs::read(&b).unwrap();
        std::fs::write(&b, &bytes[..bytes.len() - 10]).unwrap();
        assert!(matches!(
            verify(&b, &f.trust, false, true),
            Err(InstallError::Bundle(BundleError::Truncated(_)))
        ));
        // Downgrade.
        let b = bundle(&f, "0.9.0", |_, _| {});
        assert!(matches!(
            verify(&b, &f.trust, false, true),
            Err(InstallError::Bundle(BundleError::Downgrade { .. }))
        ));
        assert!(verify(&b, &f.trust, true, true).is_ok());
        // Wrong key.
        let b = bundle(&f, "1.2.0", |_, _| {});
        let other = Trust {
            keys: vec![[9; 32]],
            board: "qemu-virt".into(),
            running_version: "1.0.0".into(),
        };
        assert!(matches!(
            verify(&b, &other, false, true),
            Err(InstallError::Bundle(BundleError::Signature))
        ));
        // Good chunks before a bad one may have been written, never a bad
        // one: every byte is the image's or untouched.
        let now = std::fs::read(&s).unwrap();
        assert!(now
            .iter()
            .zip(&untouched)
            .zip(f.image.iter().chain(std::iter::repeat(&0xee)))
            .all(|((n, u), i)| n == u || n == i));
    }

    #[test]
    fn a_good_bundle_is_written_and_read_back() {
        let f = fixture();
        let s = slot(&f);
        let b = bundle(&f, "1.1.0", |_, _| {});
        install(&f, &b, &s).unwrap();
        let now = std::fs::read(&s).unwrap();
        assert_eq!(&now[..f.image.len()], &f.image[..]);
        assert!(
            now[f.image.len()..].iter().all(|&b| b == 0xee),
            "beyond the image nothing is written"
        );
        // Only the signed start, as a delta upload: verifies as such, not whole.
        let (h, at) = verify(&b, &f.trust, false, true).unwrap();
        let start = f.dir.path().join("start");
        std::fs::write(&start, &std::fs::read(&b).unwrap()[..at as usize]).unwrap();
        assert_eq!(verify(&start, &f.trust, false, false).unwrap().0, h);
        assert!(verify(&start, &f.trust, false, true).is_err());
        // A chunk that no source has is a clear error.
        let mut locs = payload_locs(&h, at, 0);
        locs[5] = None;
        let err = write_slot(
            &h,
            &mut Sources::new(vec![b.clone()]),
            &locs,
            &s,
            &mut |_| {},
        );
        assert!(matches!(err, Err(InstallError::Missing(5))), "{err:?}");
        // A slot smaller than the image is refused before writing.
        let small = f.dir.path().join("small.img");
        std::fs::write(&small, vec![0u8; 1000]).unwrap();
        assert!(matches!(
            install(&f, &b, &small),
            Err(InstallError::SlotTooSmall { .. })
        ));
    }

    #[test]
    fn keys_file_parsing() {
        let hex = "ab".repeat(32);
        let keys = parse_keys(&format!(
            "# release keys\n{hex}\nnot-a-key\n\n{hex} # second\n"
        ));
        assert_eq!(keys, vec![[0xab; 32], [0xab; 32]]);
        assert!(parse_keys("zz").is_empty());
    }
}
