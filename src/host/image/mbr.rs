//! The disk's partition table: MBR (the Raspberry Pi boot ROM reads nothing
//! else), four primary partitions, 1 MiB aligned.

use std::io::{Seek, Write};

use anyhow::{Context as _, Result};
use mbrman::{MBRPartitionEntry, CHS, MBR};

pub(crate) const SECTOR: u64 = 512;
pub(crate) const MIB: u64 = 1 << 20;

/// FAT32 with LBA addressing.
pub(crate) const TYPE_FAT32_LBA: u8 = 0x0c;
pub(crate) const TYPE_LINUX: u8 = 0x83;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// 1-based, as U-Boot (`virtio 0:2`) and Linux (`vda2`) number them.
    pub number: u8,
    pub label: &'static str,
    /// Byte offset and size on the disk.
    pub start: u64,
    pub size: u64,
    pub kind: u8,
    pub bootable: bool,
}

impl Partition {
    pub fn start_lba(&self) -> u32 {
        u32::try_from(self.start / SECTOR).unwrap_or(u32::MAX)
    }
}

/// Where everything is on the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub boot: Partition,
    pub slot_a: Partition,
    pub slot_b: Partition,
    pub data: Partition,
}

impl Layout {
    /// BOOT 64 MiB, SLOT_A/SLOT_B 128 MiB each, DATA 64 MiB (grown on the
    /// device at first boot), from 1 MiB on.
    pub fn standard() -> Layout {
        let mut next = MIB;
        let mut part = |number, label, size_mib: u64, kind, bootable| {
            let p = Partition {
                number,
                label,
                start: next,
                size: size_mib * MIB,
                kind,
                bootable,
            };
            next += p.size;
            p
        };
        Layout {
            boot: part(1, "BOOT", 64, TYPE_FAT32_LBA, true),
            slot_a: part(2, "SLOT_A", 128, TYPE_FAT32_LBA, false),
            slot_b: part(3, "SLOT_B", 128, TYPE_FAT32_LBA, false),
            data: part(4, "DATA", 64, TYPE_LINUX, false),
        }
    }

    pub fn partitions(&self) -> [&Partition; 4] {
        [&self.boot, &self.slot_a, &self.slot_b, &self.data]
    }

    /// Total image size: the end of the last partition.
    pub fn disk_size(&self) -> u64 {
        self.data.start + self.data.size
    }
}

/// A disk signature derived from the hostname: rebuilding an image gives
/// the same bytes, and two devices' cards differ.
pub(crate) fn disk_signature(hostname: &str) -> [u8; 4] {
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        format!("outpost-mbr:{hostname}").as_bytes(),
    );
    let b = d.as_ref();
    [b[0], b[1], b[2], b[3]]
}

/// Write the MBR of `layout` at the start of `disk` (already `disk_size` long).
pub(crate) fn write<D: Write + Seek>(
    disk: &mut D,
    layout: &Layout,
    signature: [u8; 4],
) -> Result<()> {
    let mut mbr = MBR::new_from(disk, SECTOR as u32, signature).context("creating the MBR")?;
    for p in layout.partitions() {
        let first = p.start_lba();
        let sectors = u32::try_from(p.size / SECTOR).context("partition too large for MBR")?;
        mbr[usize::from(p.number)] = MBRPartitionEntry {
            boot: if p.bootable { 0x80 } else { 0 },
            first_chs: chs(first),
            sys: p.kind,
            last_chs: chs(first + sectors - 1),
            starting_lba: first,
            sectors,
        };
    }
    mbr.write_into(disk).context("writing the MBR")?;
    Ok(())
}

/// CHS in the usual 255-head, 63-sector translation; past its reach (8 GiB)
/// the conventional 1023/254/63 "use LBA" marker.
fn chs(lba: u32) -> CHS {
    CHS::from_lba_exact(lba, 1023, 255, 63).unwrap_or(CHS::new(1023, 254, 63))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn layout_and_table() {
        let layout = Layout::standard();
        assert_eq!(layout.disk_size(), 385 * MIB);
        let mut disk = Cursor::new(vec![0u8; layout.disk_size() as usize]);
        write(&mut disk, &layout, disk_signature("edge-1")).unwrap();
        let bytes = disk.get_ref();
        assert_eq!(&bytes[510..512], &[0x55, 0xaa]);
        assert_eq!(&bytes[440..444], &disk_signature("edge-1"));
        assert_ne!(disk_signature("edge-1"), disk_signature("edge-2"));

        let mbr = MBR::read_from(&mut disk, 512).unwrap();
        let want = [
            (1, 2048, 64, 0x0c, true),
            (2, 2048 + 64 * 2048, 128, 0x0c, false),
            (3, 2048 + 192 * 2048, 128, 0x0c, false),
            (4, 2048 + 320 * 2048, 64, 0x83, false),
        ];
        for (i, start, mib, kind, boot) in want {
            let p = &mbr[i];
            assert_eq!(p.starting_lba, start, "partition {i}");
            assert_eq!(p.starting_lba % 2048, 0, "1 MiB aligned");
            assert_eq!(u64::from(p.sectors) * SECTOR, mib * MIB, "partition {i}");
            assert_eq!(p.sys, kind);
            assert_eq!(p.is_active(), boot);
        }
    }

    /// sfdisk (util-linux) reads the same table, when installed.
    #[test]
    fn sfdisk_agrees() {
        let layout = Layout::standard();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        let mut f = std::fs::File::create(&path).unwrap();
        f.set_len(layout.disk_size()).unwrap();
        write(&mut f, &layout, [1, 2, 3, 4]).unwrap();
        drop(f);
        let Ok(out) = std::process::Command::new("sfdisk")
            .arg("-d")
            .arg(&path)
            .output()
        else {
            eprintln!("SKIP: sfdisk not installed");
            return;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("label-id: 0x04030201"), "{text}");
        assert!(
            text.contains("start=        2048, size=      131072, type=c, bootable"),
            "{text}"
        );
        assert!(
            text.contains("start=      657408, size=      131072, type=83"),
            "{text}"
        );
    }
}
