//! Block maps (`.bmap`): which 4 KiB blocks of an image matter, with a
//! SHA-256 of each run of them — the XML format of bmap-tools (version 2.0),
//! so Debian's `bmaptool copy` takes ours and `outpost flash` takes theirs.
//! Which blocks are mapped is decided from the partitions' contents
//! ([`usage`]), not from the image file's holes: see docs/flashing.md.

mod usage;
mod xml;

use std::fs::File;
use std::io::Read as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

pub use usage::used_blocks;
pub use xml::{parse, BmapError, MAX_BMAP_BYTES};

/// Block size of the maps we write: ext4's, and a multiple of FAT's sector.
pub const BLOCK_SIZE: u64 = 4096;

/// A parsed or computed block map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bmap {
    pub image_size: u64,
    pub block_size: u64,
    /// Ascending, non-overlapping, not adjacent (merged).
    pub ranges: Vec<Range>,
}

/// Blocks `first..=last`, with the SHA-256 (lowercase hex) of their bytes
/// in the image (the last block may be short: only the image's bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub first: u64,
    pub last: u64,
    pub sha256: Option<String>,
}

impl Bmap {
    pub fn blocks_count(&self) -> u64 {
        self.image_size.div_ceil(self.block_size)
    }

    pub fn mapped_blocks(&self) -> u64 {
        self.ranges.iter().map(|r| r.last - r.first + 1).sum()
    }

    /// Bytes the mapped blocks cover in the image.
    pub fn mapped_bytes(&self) -> u64 {
        self.ranges.iter().map(|r| self.byte_range(r).1).sum()
    }

    /// (offset, length) of `r` in the image, cut at the image's end.
    pub fn byte_range(&self, r: &Range) -> (u64, u64) {
        let start = r.first.saturating_mul(self.block_size);
        let end = (r.last.saturating_add(1))
            .saturating_mul(self.block_size)
            .min(self.image_size);
        (start, end.saturating_sub(start))
    }

    /// The map of `image` given its used blocks (ascending block ranges,
    /// `first..=last`), with each range's checksum read from the image.
    pub fn compute(image: &Path, used: &[(u64, u64)]) -> Result<Bmap> {
        let f = File::open(image).with_context(|| format!("opening {}", image.display()))?;
        let image_size = f.metadata()?.len();
        let mut bmap = Bmap {
            image_size,
            block_size: BLOCK_SIZE,
            ranges: Vec::new(),
        };
        let blocks = bmap.blocks_count();
        for &(first, last) in used {
            if first > last || last >= blocks {
                bail!("block range {first}-{last} is outside the image ({blocks} blocks)");
            }
            match bmap.ranges.last_mut() {
                Some(prev) if first <= prev.last + 1 => {
                    if first <= prev.last {
                        bail!("block ranges overlap or are not ascending at {first}");
                    }
                    prev.last = last;
                }
                _ => bmap.ranges.push(Range {
                    first,
                    last,
                    sha256: None,
                }),
            }
        }
        for i in 0..bmap.ranges.len() {
            let (off, len) = bmap.byte_range(&bmap.ranges[i]);
            let sum =
                sha256_of(&f, off, len).with_context(|| format!("reading {}", image.display()))?;
            bmap.ranges[i].sha256 = Some(sum);
        }
        Ok(bmap)
    }

    /// Read and check a `.bmap` file (format, its own checksum).
    pub fn read(path: &Path) -> Result<Bmap> {
        let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut bytes = Vec::new();
        f.take(MAX_BMAP_BYTES + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("reading {}", path.display()))?;
        parse(&bytes).with_context(|| format!("bmap {}", path.display()))
    }

    /// The XML text, in the layout `bmaptool create` writes.
    pub fn to_xml(&self) -> String {
        xml::render(self)
    }
}

/// Where the block map of `image` lives: `IMG.bmap` beside it (the first
/// name `bmaptool copy` looks for).
pub fn path_for(image: &Path) -> PathBuf {
    let mut name = image.as_os_str().to_owned();
    name.push(".bmap");
    PathBuf::from(name)
}

/// Compute the map of `image` (an Outpost disk image) and write it beside
/// it, through a temporary name: a map never describes another image.
pub fn write_beside(image: &Path) -> Result<(PathBuf, Bmap)> {
    let used = used_blocks(image, BLOCK_SIZE)?;
    let bmap = Bmap::compute(image, &used)?;
    let path = path_for(image);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .context("bmap path needs a file name")?;
    let tmp = path.with_file_name(format!(".{name}.partial"));
    std::fs::write(&tmp, bmap.to_xml()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok((path, bmap))
}

/// SHA-256 (hex) of `len` bytes at `offset` of `f`.
pub fn sha256_of(f: &File, offset: u64, len: u64) -> std::io::Result<String> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < len {
        let n = usize::try_from((len - done).min(buf.len() as u64)).unwrap_or(buf.len());
        let chunk = buf.get_mut(..n).unwrap_or_default();
        f.read_exact_at(chunk, offset + done)?;
        ctx.update(chunk);
        done += n as u64;
    }
    Ok(crate::bundle::hex(ctx.finish().as_ref()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
