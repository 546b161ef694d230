//! Which blocks of a disk image hold something a card needs, read from the
//! partitions' own metadata: everything before the first partition (MBR,
//! and zeros over whatever a card had there), each FAT volume's reserved
//! sectors, FATs and allocated clusters, each ext4 volume's in-use blocks
//! (e2fsprogs' view, `dumpe2fs`), and all of any other partition.
//!
//! Why not the image file's holes: the builder skips all-zero chunks, so a
//! FAT table's free entries and an ext4 bitmap of free blocks are holes in
//! the file — yet on a card they must read as zeros, not as what the card
//! held before. Metadata says what matters; holes only say what is zero.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context as _, Result};

const SECTOR: u64 = 512;
/// A FAT32 volume of 2 TiB with 32 KiB clusters has a 256 MiB FAT; ours
/// are 1 MiB. Larger FATs are not read: the partition is mapped whole.
const MAX_FAT_BYTES: u64 = 64 << 20;
/// The area before the first partition that is always mapped (the MBR and
/// the usual 1 MiB alignment gap), when the table does not say.
const DEFAULT_LEAD: u64 = 1 << 20;

/// Used blocks of `block_size` bytes in `image`, as ascending, merged
/// `(first, last)` block ranges.
pub fn used_blocks(image: &Path, block_size: u64) -> Result<Vec<(u64, u64)>> {
    let mut f = File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let size = f.metadata()?.len();
    let table = mbrman::MBR::read_from(&mut f, SECTOR as u32)
        .with_context(|| format!("{}: no MBR partition table", image.display()))?;
    let mut used: Vec<(u64, u64)> = Vec::new();
    let mut lead = DEFAULT_LEAD;
    for (_, p) in table.iter() {
        if p.is_used() {
            lead = lead.min(u64::from(p.starting_lba) * SECTOR);
        }
    }
    used.push((0, lead.max(SECTOR)));
    for (i, p) in table.iter() {
        if !p.is_used() {
            continue;
        }
        let start = u64::from(p.starting_lba) * SECTOR;
        let len = u64::from(p.sectors) * SECTOR;
        if start.saturating_add(len) > size {
            bail!(
                "{}: partition {i} ends past the image's end",
                image.display()
            );
        }
        let part = match p.sys {
            0x01 | 0x04 | 0x06 | 0x0b | 0x0c | 0x0e => fat_used(&f, start, len),
            0x83 => ext4_used(image, start, len),
            _ => None,
        };
        match part {
            Some(ranges) => used.extend(ranges.into_iter().map(|(a, b)| (start + a, start + b))),
            // Not a volume we can read: all of it matters.
            None => used.push((start, start + len)),
        }
    }
    Ok(to_blocks(&mut used, block_size, size))
}

/// Byte ranges `[a, b)` → sorted, merged block ranges `first..=last`.
fn to_blocks(used: &mut [(u64, u64)], block_size: u64, size: u64) -> Vec<(u64, u64)> {
    used.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &(a, b) in used.iter() {
        let b = b.min(size);
        if b <= a {
            continue;
        }
        let (first, last) = (a / block_size, (b - 1) / block_size);
        match out.last_mut() {
            Some(prev) if first <= prev.1 + 1 => prev.1 = prev.1.max(last),
            _ => out.push((first, last)),
        }
    }
    out
}

fn le16(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from(u16::from_le_bytes(
        b.get(at..at + 2)?.try_into().ok()?,
    )))
}

fn le32(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from(u32::from_le_bytes(
        b.get(at..at + 4)?.try_into().ok()?,
    )))
}

/// A FAT16/FAT32 volume's used byte ranges (relative to its start): the
/// reserved sectors, FATs and FAT16 root directory, and every cluster the
/// first FAT marks as not free. `None`: not a FAT volume we understand.
fn fat_used(f: &File, start: u64, len: u64) -> Option<Vec<(u64, u64)>> {
    let mut bs = [0u8; 512];
    f.read_exact_at(&mut bs, start).ok()?;
    if bs.get(510..512)? != [0x55, 0xaa] {
        return None;
    }
    let bps = le16(&bs, 11)?;
    let spc = u64::from(*bs.get(13)?);
    let reserved = le16(&bs, 14)?;
    let nfats = u64::from(*bs.get(16)?);
    let root_entries = le16(&bs, 17)?;
    let fat_sectors = match le16(&bs, 22)? {
        0 => le32(&bs, 36)?,
        n => n,
    };
    let total = match le16(&bs, 19)? {
        0 => le32(&bs, 32)?,
        n => n,
    };
    if !(512..=4096).contains(&bps) || !bps.is_power_of_two() || !spc.is_power_of_two() {
        return None;
    }
    if reserved == 0 || nfats == 0 || fat_sectors == 0 || total * bps > len {
        return None;
    }
    let root_sectors = (root_entries * 32).div_ceil(bps);
    let first_data = reserved + nfats * fat_sectors + root_sectors;
    let clusters = total.checked_sub(first_data)? / spc;
    let entry = match clusters {
        0..=4084 => return None, // FAT12: rare, mapped whole
        4085..=65524 => 2,
        _ => 4,
    };
    let fat_bytes = fat_sectors * bps;
    if fat_bytes > MAX_FAT_BYTES || (clusters + 2) * entry > fat_bytes {
        return None;
    }
    let mut fat = vec![0u8; usize::try_from(fat_bytes).ok()?];
    f.read_exact_at(&mut fat, start + reserved * bps).ok()?;
    let cluster_bytes = spc * bps;
    let data_start = first_data * bps;
    let mut out = vec![(0, data_start)];
    let entry_len = usize::try_from(entry).ok()?;
    for (i, e) in fat.chunks_exact(entry_len).enumerate().skip(2) {
        let c = i as u64 - 2;
        if c >= clusters {
            break;
        }
        let value = e.iter().rev().fold(0u64, |v, b| v << 8 | u64::from(*b)) & 0x0fff_ffff;
        if value != 0 {
            let a = data_start + c * cluster_bytes;
            match out.last_mut() {
                Some(prev) if prev.1 == a => prev.1 = a + cluster_bytes,
                _ => out.push((a, a + cluster_bytes)),
            }
        }
    }
    Some(out)
}

/// An ext4 volume's in-use byte ranges: the complement of the free blocks
/// `dumpe2fs` lists per group (it reads the bitmaps, uninitialised groups
/// included). `None`: not an ext2/3/4 volume, or e2fsprogs is missing.
fn ext4_used(image: &Path, start: u64, len: u64) -> Option<Vec<(u64, u64)>> {
    let out = Command::new("dumpe2fs")
        .arg(format!("{}?offset={start}", image.display()))
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let free = parse_dumpe2fs(&text)?;
    if free.block_count * free.block_size > len {
        return None;
    }
    let bs = free.block_size;
    let mut used = Vec::new();
    let mut next = 0u64;
    for (a, b) in free.free {
        if a > next {
            used.push((next * bs, a * bs));
        }
        next = next.max(b + 1);
    }
    if next < free.block_count {
        used.push((next * bs, free.block_count * bs));
    }
    Some(used)
}

struct Ext4Free {
    block_size: u64,
    block_count: u64,
    /// Free block ranges `a..=b`, ascending.
    free: Vec<(u64, u64)>,
}

/// The superblock's block size and count, and every group's "Free blocks:"
/// list (indented; the unindented header line is a count).
fn parse_dumpe2fs(text: &str) -> Option<Ext4Free> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let block_size = field("Block size:")?;
    let block_count = field("Block count:")?;
    if !(1024..=65536).contains(&block_size) {
        return None;
    }
    let mut free = Vec::new();
    for line in text.lines() {
        let Some(list) = line.strip_prefix("  Free blocks:") else {
            continue;
        };
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (a, b) = item.split_once('-').unwrap_or((item, item));
            let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
            if a > b || b >= block_count {
                return None;
            }
            free.push((a, b));
        }
    }
    free.sort_unstable();
    Some(Ext4Free {
        block_size,
        block_count,
        free,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn byte_ranges_become_merged_blocks() {
        let mut r = [(8192, 8193), (0, 512), (4096, 4097), (20_000, 30_000)];
        assert_eq!(
            to_blocks(&mut r, 4096, 1 << 20),
            [(0, 2), (4, 7)],
            "block 0, 1, 2 touch; 20000..30000 spans 4..=7"
        );
        let mut r = [(0, 10_000)];
        assert_eq!(
            to_blocks(&mut r, 4096, 5000),
            [(0, 1)],
            "cut at the image end"
        );
    }

    #[test]
    fn dumpe2fs_free_lists() {
        let text = "Block count:              100\nFree blocks:              60\n\
                    Block size:               4096\nGroup 0: (Blocks 0-99)\n  Free blocks: 10-19, 30, 50-98\n\
                    Group 1:\n  Free blocks: \n";
        let f = parse_dumpe2fs(text).unwrap();
        assert_eq!((f.block_size, f.block_count), (4096, 100));
        assert_eq!(f.free, [(10, 19), (30, 30), (50, 98)]);
        assert!(
            parse_dumpe2fs("Block size: 4096\nBlock count: 10\n  Free blocks: 5-20\n").is_none()
        );
        assert!(parse_dumpe2fs("Block size: 4096\nBlock count: 10\n  Free blocks: x\n").is_none());
    }
}
