//! Installs a bundle into the inactive slot: check the signature and what the
//! header claims before anything is written, then inflate the payload chunk
//! by chunk, verifying each chunk's hash *before* writing it, then read the
//! whole slot back and compare. Only after that may the caller make the slot
//! bootable (one boot-state write, see `slots`). The active slot is never
//! opened for writing: the caller passes the other slot's device.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use miniz_oxide::inflate::stream::{inflate, InflateState};
use miniz_oxide::{DataFormat, MZError, MZFlush, MZStatus};

use crate::bundle::format::{
    self, BundleError, BundleHeader, Compression, MAX_HEADER_LEN, SIGNATURE_LEN,
};

/// Compressed bytes read per step.
const READ_STEP: usize = 64 * 1024;
/// Trusted release keys file: at most this many bytes (a few hex lines).
const MAX_KEYS_FILE: u64 = 16 * 1024;
/// Where an image keeps the release public keys it trusts (one hex key per line).
pub const RELEASE_KEYS_PATH: &str = "/etc/outpost/release-keys";

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{0}")]
    Bundle(#[from] BundleError),
    #[error("reading the bundle {path}: {source}")]
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
pub fn verify(
    bundle: &Path,
    trust: &Trust,
    force: bool,
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
    if len != payload_at as u64 + header.payload_size {
        return Err(BundleError::Truncated("payload").into());
    }
    Ok((header, payload_at as u64))
}

/// Write the verified bundle's image into `slot` (a block device or, in host
/// mode, a file), verifying every chunk before it is written, then read it
/// back. `progress` gets the bytes written so far.
pub fn write_slot(
    bundle: &Path,
    header: &BundleHeader,
    payload_at: u64,
    slot: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<(), InstallError> {
    let read_err = |source| InstallError::Read {
        path: bundle.to_path_buf(),
        source,
    };
    let write_err = |source| InstallError::Write {
        path: slot.to_path_buf(),
        source,
    };
    let mut input = File::open(bundle).map_err(read_err)?;
    input.seek(SeekFrom::Start(payload_at)).map_err(read_err)?;
    let mut input = input.take(header.payload_size);
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

    let chunk_size = usize::try_from(header.chunk_size).unwrap_or(usize::MAX);
    let mut chunk = vec![0u8; chunk_size];
    let mut filled = 0usize;
    let mut index = 0usize;
    let mut written = 0u64;
    let mut flush_chunk =
        |chunk: &[u8], index: &mut usize, written: &mut u64| -> Result<(), InstallError> {
            let want = header
                .chunks
                .get(*index)
                .ok_or_else(|| InstallError::Payload("more data than the header lists".into()))?;
            if ring::digest::digest(&ring::digest::SHA256, chunk).as_ref() != want {
                return Err(BundleError::Chunk { index: *index }.into());
            }
            out.write_all_at(chunk, *written).map_err(write_err)?;
            *written += chunk.len() as u64;
            *index += 1;
            progress(*written);
            Ok(())
        };

    match header.compression {
        Compression::None => loop {
            let n = read_full(&mut input, &mut chunk).map_err(read_err)?;
            if n == 0 {
                break;
            }
            flush_chunk(&chunk[..n], &mut index, &mut written)?;
        },
        Compression::Deflate => {
            let mut state = InflateState::new_boxed(DataFormat::Raw);
            let mut buf = vec![0u8; READ_STEP];
            let (mut have_in, mut used_in, mut eof, mut done) = (0usize, 0usize, false, false);
            while !done {
                if used_in == have_in && !eof {
                    have_in = read_full(&mut input, &mut buf).map_err(read_err)?;
                    used_in = 0;
                    eof = have_in < buf.len();
                }
                // Never `Finish`: on a first call miniz switches to one-shot
                // mode and cannot continue into the next chunk buffer. The
                // stream's own end marker (StreamEnd) ends the loop.
                let r = inflate(
                    &mut state,
                    &buf[used_in..have_in],
                    &mut chunk[filled..],
                    MZFlush::None,
                );
                used_in += r.bytes_consumed;
                filled += r.bytes_written;
                match r.status {
                    Ok(MZStatus::StreamEnd) => done = true,
                    Ok(_)
                        if eof
                            && used_in == have_in
                            && r.bytes_written == 0
                            && filled < chunk.len() =>
                    {
                        return Err(InstallError::Payload("compressed stream ends early".into()))
                    }
                    Ok(_) => {}
                    // No progress possible: out of input or output space.
                    Err(MZError::Buf) if filled == chunk.len() => {}
                    Err(MZError::Buf) if eof && used_in == have_in && r.bytes_written == 0 => {
                        return Err(InstallError::Payload("compressed stream ends early".into()))
                    }
                    Err(MZError::Buf) => {}
                    Err(e) => return Err(InstallError::Payload(format!("inflate: {e:?}"))),
                }
                if filled == chunk.len() || (done && filled > 0) {
                    flush_chunk(&chunk[..filled], &mut index, &mut written)?;
                    filled = 0;
                }
            }
        }
    }
    if written != header.image_size || index != header.chunks.len() {
        return Err(InstallError::Payload(format!(
            "payload gave {written} bytes, the header says {}",
            header.image_size
        )));
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

/// Read until `buf` is full or the input ends.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
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

    /// Build a bundle file (the same way `outpost bundle build` does).
    fn bundle(
        f: &Fixture,
        version: &str,
        tamper: impl Fn(&mut BundleHeader, &mut Vec<u8>),
    ) -> PathBuf {
        use std::io::Write;
        let chunk_size = 4096u32;
        let mut enc = miniz_oxide::deflate::compress_to_vec(&f.image, 6);
        let mut header = BundleHeader {
            board: "qemu-virt".into(),
            version: version.into(),
            min_version: "0.1.0".into(),
            build_time: 0,
            image_size: f.image.len() as u64,
            image_sha256: ring::digest::digest(&ring::digest::SHA256, &f.image)
                .as_ref()
                .try_into()
                .unwrap(),
            chunk_size,
            chunks: f
                .image
                .chunks(chunk_size as usize)
                .map(|c| {
                    ring::digest::digest(&ring::digest::SHA256, c)
                        .as_ref()
                        .try_into()
                        .unwrap()
                })
                .collect(),
            compression: Compression::Deflate,
            payload_size: 0,
        };
        tamper(&mut header, &mut enc);
        header.payload_size = enc.len() as u64;
        let signed = encode_signed_part(&header);
        let path = f.dir.path().join(format!("{version}.bundle"));
        let mut file = File::create(&path).unwrap();
        file.write_all(&signed).unwrap();
        file.write_all(f.key.sign(&signed).as_ref()).unwrap();
        file.write_all(&enc).unwrap();
        path
    }

    fn slot(f: &Fixture) -> PathBuf {
        let p = f.dir.path().join("slot-b.img");
        std::fs::write(&p, vec![0xeeu8; 400_000]).unwrap();
        p
    }

    fn install(f: &Fixture, b: &Path, slot: &Path) -> Result<(), InstallError> {
        let (h, at) = verify(b, &f.trust, false)?;
        write_slot(b, &h, at, slot, &mut |_| {})
    }

    #[test]
    fn tampered_and_wrong_bundles_are_refused_before_writing() {
        let f = fixture();
        let s = slot(&f);
        let untouched = std::fs::read(&s).unwrap();
        // A chunk whose data does not match its hash: refused at that chunk.
        let b = bundle(&f, "1.1.0", |h, _| h.chunks[3][0] ^= 1);
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
        // A payload cut short (and signed that way): refused, never a hang.
        let b = bundle(&f, "1.1.3", |_, p| p.truncate(p.len() / 2));
        assert!(install(&f, &b, &s).is_err());
        let b = bundle(&f, "1.1.4", |_, p| p.clear());
        assert!(install(&f, &b, &s).is_err());
        // Truncated file.
        let b = bundle(&f, "1.1.2", |_, _| {});
        let bytes = std::fs::read(&b).unwrap();
        std::fs::write(&b, &bytes[..bytes.len() - 10]).unwrap();
        assert!(matches!(
            verify(&b, &f.trust, false),
            Err(InstallError::Bundle(BundleError::Truncated(_)))
        ));
        // Downgrade.
        let b = bundle(&f, "0.9.0", |_, _| {});
        assert!(matches!(
            verify(&b, &f.trust, false),
            Err(InstallError::Bundle(BundleError::Downgrade { .. }))
        ));
        assert!(verify(&b, &f.trust, true).is_ok());
        // Wrong key.
        let b = bundle(&f, "1.2.0", |_, _| {});
        let other = Trust {
            keys: vec![[9; 32]],
            board: "qemu-virt".into(),
            running_version: "1.0.0".into(),
        };
        assert!(matches!(
            verify(&b, &other, false),
            Err(InstallError::Bundle(BundleError::Signature))
        ));
        // Chunks before the bad one may have been written, but never a bad chunk:
        // the first 3 chunks equal the image, the rest is untouched.
        let now = std::fs::read(&s).unwrap();
        assert_eq!(&now[12288..], &untouched[12288..]);
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
