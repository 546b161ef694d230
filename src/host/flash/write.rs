//! Copy an image's pieces onto a medium, then read them back and check
//! them. The medium is a trait so a test can hand in one that lies.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::host::bmap::Bmap;

/// Bytes moved per read/write call.
const CHUNK: usize = 1 << 20;
/// Written bytes between two syncs: the progress bar then shows what the
/// card took, not what the page cache took.
const SYNC_EVERY: u64 = 32 << 20;
/// Alignment for O_DIRECT reads (logical block sizes are 512 or 4096).
const ALIGN: usize = 4096;

/// A run of image bytes to copy; `sha256` from the bmap, if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub offset: u64,
    pub len: u64,
    pub sha256: Option<String>,
}

/// The bmap's ranges, or the whole image as one piece.
pub fn pieces(bmap: Option<&Bmap>, image_size: u64) -> Vec<Piece> {
    match bmap {
        Some(b) => b
            .ranges
            .iter()
            .map(|r| {
                let (offset, len) = b.byte_range(r);
                Piece {
                    offset,
                    len,
                    sha256: r.sha256.clone(),
                }
            })
            .collect(),
        None => vec![Piece {
            offset: 0,
            len: image_size,
            sha256: None,
        }],
    }
}

/// Where the image goes.
pub trait Medium {
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Fill `buf` from `offset`, from the medium itself (not a cache).
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    fn sync(&mut self) -> io::Result<()>;
    /// Forget cached pages, so the next reads come from the medium.
    fn drop_cache(&mut self) -> io::Result<()>;
}

/// A file or block device. Reads go through a second, O_DIRECT descriptor
/// when the device allows one (block devices do; tmpfs files do not).
pub struct DeviceFile {
    file: File,
    direct: Option<File>,
    scratch: Vec<u8>,
}

impl DeviceFile {
    pub fn new(file: File, direct: Option<File>) -> Self {
        DeviceFile {
            file,
            direct,
            scratch: Vec::new(),
        }
    }

    /// O_DIRECT read: aligned buffer, offset and length; `None` when the
    /// request does not fit those rules or the kernel refuses (then the
    /// caller reads through the cache it just dropped).
    fn read_direct(&mut self, buf: &mut [u8], offset: u64) -> Option<io::Result<()>> {
        let direct = self.direct.as_ref()?;
        if offset % ALIGN as u64 != 0 {
            return None;
        }
        let want = buf.len().div_ceil(ALIGN) * ALIGN;
        if self.scratch.len() < want + ALIGN {
            self.scratch = vec![0u8; want + ALIGN];
        }
        let skew = self.scratch.as_ptr().align_offset(ALIGN);
        let aligned = self.scratch.get_mut(skew..skew + want)?;
        let mut done = 0;
        while done < buf.len() {
            let rest = aligned.get_mut(done..)?;
            match direct.read_at(rest, offset + done as u64) {
                Ok(0) => return Some(Err(io::ErrorKind::UnexpectedEof.into())),
                Ok(n) => done += n,
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                    // EINVAL: this device or file system takes no O_DIRECT.
                    self.direct = None;
                    return None;
                }
                Err(e) => return Some(Err(e)),
            }
        }
        buf.copy_from_slice(aligned.get(..buf.len())?);
        Some(Ok(()))
    }
}

impl Medium for DeviceFile {
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if let Some(r) = self.read_direct(buf, offset) {
            return r;
        }
        self.file.read_exact_at(buf, offset)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_all()
    }

    fn drop_cache(&mut self) -> io::Result<()> {
        // Best effort: block devices are read back with O_DIRECT anyway, and
        // a file system that ignores the advice serves its own pages (for a
        // file target, those are the truth).
        let _ = rustix::fs::fadvise(&self.file, 0, 0, rustix::fs::Advice::DontNeed);
        Ok(())
    }
}

/// What a copy did.
#[derive(Debug, Clone, Default)]
pub struct Copied {
    pub bytes_written: u64,
    pub bytes_verified: u64,
    pub write_time: Duration,
    pub verify_time: Duration,
}

/// Write every piece of `image` to `medium` (checking each against its
/// bmap checksum as it is read), sync, and with `verify` read them all
/// back: a piece with a checksum must hash to it, one without must equal
/// the image's bytes.
pub fn copy(
    image: &File,
    medium: &mut dyn Medium,
    pieces: &[Piece],
    verify: bool,
    bar: &indicatif::ProgressBar,
) -> Result<Copied> {
    let mut out = Copied::default();
    let mut buf = vec![0u8; CHUNK];
    let mut back = vec![0u8; CHUNK];
    let start = Instant::now();
    bar.set_message("writing");
    let mut unsynced = 0u64;
    for p in pieces {
        let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
        for (off, n) in chunks(p) {
            let data = buf.get_mut(..n).unwrap_or_default();
            image
                .read_exact_at(data, off)
                .with_context(|| format!("reading the image at byte {off}"))?;
            hash.update(data);
            medium
                .write_at(data, off)
                .with_context(|| format!("writing at byte {off}"))?;
            out.bytes_written += n as u64;
            unsynced += n as u64;
            bar.inc(n as u64);
            if unsynced >= SYNC_EVERY {
                medium.sync().context("syncing")?;
                unsynced = 0;
            }
        }
        if let Some(want) = &p.sha256 {
            if crate::bundle::hex(hash.finish().as_ref()) != *want {
                bail!(
                    "the image's bytes {}..{} do not match its bmap's checksum: the .bmap belongs to another image (nothing after them was written)",
                    p.offset,
                    p.offset + p.len
                );
            }
        }
    }
    medium.sync().context("syncing")?;
    out.write_time = start.elapsed();
    if !verify {
        return Ok(out);
    }
    let start = Instant::now();
    bar.set_message("verifying");
    medium.drop_cache().context("dropping cached pages")?;
    for p in pieces {
        let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
        for (off, n) in chunks(p) {
            let got = back.get_mut(..n).unwrap_or_default();
            medium
                .read_at(got, off)
                .with_context(|| format!("reading back at byte {off}"))?;
            if p.sha256.is_some() {
                hash.update(got);
            } else {
                let want = buf.get_mut(..n).unwrap_or_default();
                image.read_exact_at(want, off)?;
                if let Some(i) = want.iter().zip(got.iter()).position(|(a, b)| a != b) {
                    bail!(
                        "verify failed: the device differs from the image at byte {}",
                        off + i as u64
                    );
                }
            }
            out.bytes_verified += n as u64;
            bar.inc(n as u64);
        }
        if let Some(want) = &p.sha256 {
            if crate::bundle::hex(hash.finish().as_ref()) != *want {
                bail!(
                    "verify failed: bytes {}..{} read back from the device do not match the image (bad card or reader?)",
                    p.offset,
                    p.offset + p.len
                );
            }
        }
    }
    medium.sync().context("syncing")?;
    out.verify_time = start.elapsed();
    Ok(out)
}

/// (offset, length) of the piece in chunks of at most [`CHUNK`].
fn chunks(p: &Piece) -> impl Iterator<Item = (u64, usize)> + '_ {
    let end = p.offset + p.len;
    (p.offset..end).step_by(CHUNK).map(move |off| {
        (
            off,
            usize::try_from((end - off).min(CHUNK as u64)).unwrap_or(CHUNK),
        )
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A medium in memory that can flip a byte on its way back.
    struct Mem {
        data: Vec<u8>,
        lie_at: Option<usize>,
        writes: Vec<(u64, usize)>,
        synced: usize,
    }

    impl Medium for Mem {
        fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
            let o = offset as usize;
            self.data[o..o + buf.len()].copy_from_slice(buf);
            self.writes.push((offset, buf.len()));
            Ok(())
        }
        fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            let o = offset as usize;
            buf.copy_from_slice(&self.data[o..o + buf.len()]);
            if let Some(l) = self.lie_at {
                if (o..o + buf.len()).contains(&l) {
                    buf[l - o] ^= 0x01;
                }
            }
            Ok(())
        }
        fn sync(&mut self) -> io::Result<()> {
            self.synced += 1;
            Ok(())
        }
        fn drop_cache(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn image(len: usize) -> (tempfile::NamedTempFile, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), &data).unwrap();
        (f, data)
    }

    fn sha(d: &[u8]) -> Option<String> {
        Some(crate::bundle::sha256_hex(d))
    }

    #[test]
    fn writes_only_the_pieces_and_verifies_them() {
        let (img, data) = image(3 << 20);
        let pieces = vec![
            Piece {
                offset: 0,
                len: 4096,
                sha256: sha(&data[..4096]),
            },
            Piece {
                offset: 2 << 20,
                len: 1 << 20,
                sha256: sha(&data[2 << 20..]),
            },
        ];
        let mut m = Mem {
            data: vec![0xee; 3 << 20],
            lie_at: None,
            writes: vec![],
            synced: 0,
        };
        let bar = indicatif::ProgressBar::hidden();
        let c = copy(img.as_file(), &mut m, &pieces, true, &bar).unwrap();
        assert_eq!(c.bytes_written, 4096 + (1 << 20));
        assert_eq!(c.bytes_verified, c.bytes_written);
        assert_eq!(&m.data[..4096], &data[..4096]);
        assert!(
            m.data[4096..2 << 20].iter().all(|&b| b == 0xee),
            "gap untouched"
        );
        assert_eq!(&m.data[2 << 20..], &data[2 << 20..]);
        assert!(m.synced >= 2);
    }

    #[test]
    fn a_lying_medium_fails_verification() {
        let (img, data) = image(2 << 20);
        let bar = indicatif::ProgressBar::hidden();
        // With a checksum (bmap).
        let hashed = vec![Piece {
            offset: 0,
            len: 2 << 20,
            sha256: sha(&data),
        }];
        let mut m = Mem {
            data: vec![0; 2 << 20],
            lie_at: Some(1_500_000),
            writes: vec![],
            synced: 0,
        };
        let err = copy(img.as_file(), &mut m, &hashed, true, &bar).unwrap_err();
        assert!(
            format!("{err:#}").contains("verify failed: bytes 0..2097152"),
            "{err:#}"
        );
        // Without (full compare): the exact byte is named.
        let whole = pieces(None, 2 << 20);
        let mut m = Mem {
            data: vec![0; 2 << 20],
            lie_at: Some(1_500_000),
            writes: vec![],
            synced: 0,
        };
        let err = copy(img.as_file(), &mut m, &whole, true, &bar).unwrap_err();
        assert!(format!("{err:#}").contains("at byte 1500000"), "{err:#}");
        // --no-verify does not read back.
        let mut m = Mem {
            data: vec![0; 2 << 20],
            lie_at: Some(1_500_000),
            writes: vec![],
            synced: 0,
        };
        copy(img.as_file(), &mut m, &whole, false, &bar).unwrap();
    }

    #[test]
    fn a_bmap_of_another_image_stops_the_write() {
        let (img, _) = image(1 << 20);
        let pieces = vec![
            Piece {
                offset: 0,
                len: 4096,
                sha256: sha(b"something else"),
            },
            Piece {
                offset: 8192,
                len: 4096,
                sha256: None,
            },
        ];
        let mut m = Mem {
            data: vec![0; 1 << 20],
            lie_at: None,
            writes: vec![],
            synced: 0,
        };
        let err = copy(img.as_file(), &mut m, &pieces, true, &bar_hidden()).unwrap_err();
        assert!(
            format!("{err:#}").contains("belongs to another image"),
            "{err:#}"
        );
        assert!(
            m.writes.iter().all(|(o, _)| *o < 8192),
            "stopped at the bad piece"
        );
    }

    fn bar_hidden() -> indicatif::ProgressBar {
        indicatif::ProgressBar::hidden()
    }

    #[test]
    fn chunking() {
        let p = Piece {
            offset: 10,
            len: (2 << 20) + 5,
            sha256: None,
        };
        let c: Vec<_> = chunks(&p).collect();
        assert_eq!(
            c,
            [
                (10, 1 << 20),
                (10 + (1 << 20), 1 << 20),
                (10 + (2 << 20), 5)
            ]
        );
        assert_eq!(
            chunks(&Piece {
                offset: 0,
                len: 0,
                sha256: None
            })
            .count(),
            0
        );
    }
}
