//! DATA grows to fill the disk at first boot: partition 4's MBR entry is
//! rewritten to end at the end of the disk, the kernel is told (BLKPG), and
//! the mounted ext4 is resized online (EXT4_IOC_RESIZE_FS).
//!
//! There is no "grown" flag: every boot reads the partition table, the
//! kernel's view of the partition and the filesystem's size, and does the
//! steps still missing. A power cut between two steps is completed by the
//! next boot; on a grown card the plan is empty.

use super::sys::{Sys, SysError};

pub const SECTOR: u64 = 512;
/// The MBR: one sector.
const MBR_LEN: usize = 512;
/// Partition entries start here in the MBR.
const TABLE_OFFSET: usize = 446;
const ENTRY_LEN: usize = 16;
/// DATA ends on a 1 MiB boundary (SD erase blocks, as the image builder aligns).
const ALIGN_SECTORS: u64 = 2048;
/// Smaller gains are not worth a resize (and an ext4 resize may leave a
/// too-small last group unused: this keeps a grown card's plan empty).
pub const MIN_GROW_BYTES: u64 = 4 << 20;
/// The ext4 superblock: 1024 bytes at byte 1024 of the partition.
const SB_OFFSET: u64 = 1024;
const SB_LEN: usize = 1024;
/// DATA is partition 4, the last one.
pub const DATA_PARTITION: u8 = 4;
/// The largest partition size an MBR entry can state (u32 sectors).
const MBR_MAX_SECTORS: u64 = u32::MAX as u64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrowError {
    #[error("partition table: the MBR is {0} bytes, not 512")]
    Short(usize),
    #[error("partition table: no MBR signature (found {0:#06x})")]
    Signature(u16),
    #[error("partition table: partitions {0} and {1} overlap")]
    Overlap(u8, u8),
    #[error("partition table: partition {number} ends at sector {end}, past the end of the disk ({disk} sectors)")]
    BeyondDisk { number: u8, end: u64, disk: u64 },
    #[error("partition table: partition 4 (DATA) is missing")]
    NoData,
    #[error("partition table: partition 4 (DATA) is not the last one (partition {0} follows it)")]
    NotLast(u8),
    #[error("the kernel has partition 4 at sector {kernel}, the table at {table}")]
    StartMismatch { kernel: u64, table: u64 },
    #[error("DATA's filesystem ({fs} bytes) is larger than its partition ({part} bytes)")]
    FsLargerThanPartition { fs: u64, part: u64 },
    #[error("DATA superblock: {0}")]
    Superblock(&'static str),
    #[error("`{0}` is not partition 4 of a disk")]
    NotPartition4(String),
    #[error("{0}")]
    Sys(#[from] SysError),
    #[error("sysfs {path}: `{text}` is not a number")]
    Sysfs { path: String, text: String },
}

/// A cursor over bytes from outside: every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.buf.get(..n)?, self.buf.get(n..)?);
        self.buf = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }
    fn u16le(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_le_bytes([*b.first()?, *b.get(1)?]))
    }
    fn u32le(&mut self) -> Option<u32> {
        let b: [u8; 4] = self.take(4)?.try_into().ok()?;
        Some(u32::from_le_bytes(b))
    }
}

/// One primary partition entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub kind: u8,
    pub start: u32,
    pub sectors: u32,
}

impl Entry {
    fn used(&self) -> bool {
        self.kind != 0 && self.sectors != 0
    }
    fn end(&self) -> u64 {
        u64::from(self.start) + u64::from(self.sectors)
    }
}

/// A validated MBR: four entries, partition 4 used and last, nothing
/// overlapping or past the disk's end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mbr {
    bytes: [u8; MBR_LEN],
    pub entries: [Entry; 4],
}

impl Mbr {
    pub fn parse(bytes: &[u8], disk_sectors: u64) -> Result<Mbr, GrowError> {
        let bytes: [u8; MBR_LEN] = bytes
            .try_into()
            .map_err(|_| GrowError::Short(bytes.len()))?;
        let mut r = Reader { buf: &bytes };
        let short = || GrowError::Short(0);
        r.take(TABLE_OFFSET).ok_or_else(short)?;
        let mut entries = [Entry {
            kind: 0,
            start: 0,
            sectors: 0,
        }; 4];
        for e in &mut entries {
            let mut er = Reader {
                buf: r.take(ENTRY_LEN).ok_or_else(short)?,
            };
            er.take(4).ok_or_else(short)?; // boot flag, CHS start
            e.kind = er.u8().ok_or_else(short)?;
            er.take(3).ok_or_else(short)?; // CHS end
            e.start = er.u32le().ok_or_else(short)?;
            e.sectors = er.u32le().ok_or_else(short)?;
        }
        let sig = r.u16le().ok_or_else(short)?;
        if sig != 0xaa55 {
            return Err(GrowError::Signature(sig));
        }
        let numbered = || (1u8..).zip(entries.iter()).filter(|(_, e)| e.used());
        for (n, e) in numbered() {
            if e.end() > disk_sectors {
                return Err(GrowError::BeyondDisk {
                    number: n,
                    end: e.end(),
                    disk: disk_sectors,
                });
            }
            for (m, f) in numbered().filter(|(m, _)| *m > n) {
                if u64::from(e.start) < f.end() && u64::from(f.start) < e.end() {
                    return Err(GrowError::Overlap(n, m));
                }
            }
        }
        let data = entries[3];
        if !data.used() {
            return Err(GrowError::NoData);
        }
        if let Some((n, _)) = numbered().find(|(n, e)| *n != DATA_PARTITION && e.start > data.start)
        {
            return Err(GrowError::NotLast(n));
        }
        Ok(Mbr { bytes, entries })
    }

    pub fn data(&self) -> Entry {
        self.entries[3]
    }

    /// The MBR with partition 4 `sectors` long (its CHS end set to the
    /// "beyond CHS" value every LBA-era reader ignores).
    pub fn with_data_sectors(&self, sectors: u32) -> [u8; MBR_LEN] {
        let mut out = self.bytes;
        let entry = TABLE_OFFSET + 3 * ENTRY_LEN;
        if let Some(chs) = out.get_mut(entry + 5..entry + 8) {
            chs.copy_from_slice(&[0xfe, 0xff, 0xff]);
        }
        if let Some(len) = out.get_mut(entry + 12..entry + 16) {
            len.copy_from_slice(&sectors.to_le_bytes());
        }
        out
    }
}

/// Partition 4's size when grown to the disk's end (1 MiB aligned, within
/// what an MBR can state), or None when that is not [`MIN_GROW_BYTES`] more.
pub fn grown_sectors(data: Entry, disk_sectors: u64) -> Option<u32> {
    let end = disk_sectors.min(MBR_MAX_SECTORS) / ALIGN_SECTORS * ALIGN_SECTORS;
    let sectors = end.checked_sub(u64::from(data.start))?;
    let sectors = u32::try_from(sectors.min(MBR_MAX_SECTORS)).ok()?;
    (u64::from(sectors) * SECTOR >= u64::from(data.sectors) * SECTOR + MIN_GROW_BYTES)
        .then_some(sectors)
}

/// The ext4 size: (blocks, block size).
pub fn parse_superblock(sb: &[u8]) -> Result<(u64, u64), GrowError> {
    let bad = GrowError::Superblock;
    let field = |at: usize, n: usize| sb.get(at..at + n).ok_or(bad("short"));
    let u32_at = |at: usize| -> Result<u32, GrowError> {
        let b: [u8; 4] = field(at, 4)?.try_into().map_err(|_| bad("short"))?;
        Ok(u32::from_le_bytes(b))
    };
    let magic = field(0x38, 2)?;
    if magic != [0x53, 0xef] {
        return Err(bad("no ext4 magic"));
    }
    let log = u32_at(0x18)?;
    if log > 6 {
        return Err(bad("block size over 64 KiB"));
    }
    let block = 1024u64 << log;
    let lo = u64::from(u32_at(0x04)?);
    // INCOMPAT_64BIT: the high half of the block count is valid.
    let hi = if u32_at(0x60)? & 0x80 != 0 {
        u64::from(u32_at(0x150)?)
    } else {
        0
    };
    Ok((hi << 32 | lo, block))
}

/// What the card looks like now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    pub disk_sectors: u64,
    /// Partition 4 as the kernel has it.
    pub kernel_start: u64,
    pub kernel_sectors: u64,
    pub fs_blocks: u64,
    pub block_size: u64,
}

/// One step still to do, in this order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Write this MBR (partition 4 grown) to sector 0.
    RewriteTable {
        sectors: u32,
        mbr: Box<[u8; MBR_LEN]>,
    },
    /// Tell the kernel partition 4's new length (bytes).
    TellKernel { start: u64, length: u64 },
    /// Resize the filesystem to this many blocks.
    ResizeFs { blocks: u64 },
}

/// The steps still missing, decided from the actual sizes. An empty plan:
/// DATA already fills the disk.
pub fn plan(mbr: &Mbr, s: &Sizes) -> Result<Vec<Step>, GrowError> {
    let data = mbr.data();
    if s.kernel_start != u64::from(data.start) {
        return Err(GrowError::StartMismatch {
            kernel: s.kernel_start,
            table: u64::from(data.start),
        });
    }
    let mut steps = Vec::new();
    let table = match grown_sectors(data, s.disk_sectors) {
        Some(sectors) => {
            steps.push(Step::RewriteTable {
                sectors,
                mbr: Box::new(mbr.with_data_sectors(sectors)),
            });
            u64::from(sectors)
        }
        None => u64::from(data.sectors),
    };
    if table > s.kernel_sectors {
        steps.push(Step::TellKernel {
            start: s.kernel_start * SECTOR,
            length: table * SECTOR,
        });
    }
    let part = table * SECTOR;
    let fs = s.fs_blocks.saturating_mul(s.block_size);
    if fs > part {
        return Err(GrowError::FsLargerThanPartition { fs, part });
    }
    if part - fs >= MIN_GROW_BYTES {
        steps.push(Step::ResizeFs {
            blocks: part / s.block_size.max(1),
        });
    }
    Ok(steps)
}

/// `/dev/vda4` -> ("vda", "vda4"); `/dev/mmcblk0p4` -> ("mmcblk0", "mmcblk0p4").
pub fn disk_of(device: &str) -> Result<(String, String), GrowError> {
    let bad = || GrowError::NotPartition4(device.to_owned());
    let name = device
        .bytes()
        .rposition(|b| b == b'/')
        .map_or(device, |i| device.get(i + 1..).unwrap_or(""));
    let digits = name.bytes().rev().take_while(u8::is_ascii_digit).count();
    let (base, number) = name.split_at(name.len() - digits);
    if number.parse::<u8>().ok() != Some(DATA_PARTITION) || base.is_empty() {
        return Err(bad());
    }
    // A disk whose name ends in a digit names its partitions with a `p`.
    let disk = match base.strip_suffix('p') {
        Some(d) if d.ends_with(|c: char| c.is_ascii_digit()) => d,
        _ => base,
    };
    Ok((disk.to_owned(), name.to_owned()))
}

/// What [`grow`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grown {
    pub steps: Vec<Step>,
    /// DATA's filesystem size in bytes before and after.
    pub before: u64,
    pub after: u64,
}

fn sysfs_number(sys: &dyn Sys, path: &str) -> Result<u64, GrowError> {
    let text = sys.read_to_string(path, 64)?;
    text.trim().parse().map_err(|_| GrowError::Sysfs {
        path: path.to_owned(),
        text: text.trim().to_owned(),
    })
}

/// Grow DATA (`device`, partition 4, mounted at `mountpoint`) to fill its
/// disk: the steps still missing, in order. Run after DATA is mounted.
pub fn grow(sys: &dyn Sys, device: &str, mountpoint: &str) -> Result<Grown, GrowError> {
    let (disk, part) = disk_of(device)?;
    // The disk's node sits beside the partition's (`/dev/vda4` -> `/dev/vda`).
    let disk_dev = format!(
        "{}{disk}",
        device.get(..device.len() - part.len()).unwrap_or("")
    );
    let sizes_now = |sys: &dyn Sys| -> Result<Sizes, GrowError> {
        let (fs_blocks, block_size) = parse_superblock(&sys.read_at(device, SB_OFFSET, SB_LEN)?)?;
        Ok(Sizes {
            disk_sectors: sysfs_number(sys, &format!("/sys/class/block/{disk}/size"))?,
            kernel_start: sysfs_number(sys, &format!("/sys/class/block/{part}/start"))?,
            kernel_sectors: sysfs_number(sys, &format!("/sys/class/block/{part}/size"))?,
            fs_blocks,
            block_size,
        })
    };
    let sizes = sizes_now(sys)?;
    let mbr = Mbr::parse(&sys.read_at(&disk_dev, 0, MBR_LEN)?, sizes.disk_sectors)?;
    let steps = plan(&mbr, &sizes)?;
    let before = sizes.fs_blocks * sizes.block_size;
    for step in &steps {
        match step {
            Step::RewriteTable { mbr, .. } => {
                tracing::info!("DATA: partition 4 grown to the disk's end in the MBR");
                sys.write_at_sync(&disk_dev, 0, &mbr[..])?;
            }
            Step::TellKernel { start, length } => {
                tracing::info!("DATA: telling the kernel the new partition size");
                sys.resize_partition(&disk_dev, i32::from(DATA_PARTITION), *start, *length)?;
            }
            Step::ResizeFs { blocks } => {
                tracing::info!("DATA: resizing ext4 online to {blocks} blocks");
                sys.resize_ext4(mountpoint, *blocks)?;
            }
        }
    }
    let after = if steps.is_empty() {
        before
    } else {
        let (blocks, bs) = parse_superblock(&sys.read_at(device, SB_OFFSET, SB_LEN)?)?;
        blocks * bs
    };
    Ok(Grown {
        steps,
        before,
        after,
    })
}

/// [`grow`], logged: what it did, or that DATA already fills the disk.
pub fn grow_and_report(sys: &dyn Sys, device: &str, mountpoint: &str) {
    match grow(sys, device, mountpoint) {
        Ok(g) if g.steps.is_empty() => {
            tracing::info!("DATA fills its disk ({} MiB)", g.after >> 20);
        }
        Ok(g) => tracing::info!(
            "DATA grown from {} MiB to {} MiB ({} steps)",
            g.before >> 20,
            g.after >> 20,
            g.steps.len()
        ),
        Err(e) => tracing::error!("DATA not grown: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::sys::{Call, RecordingSys};

    const MIB_S: u32 = 2048; // sectors per MiB

    /// The standard image layout: 1 MiB gap, BOOT 64, A 128, B 128, DATA 64 MiB.
    fn table(entries: &[(u8, u32, u32)]) -> Vec<u8> {
        let mut b = vec![0u8; 512];
        for (i, (kind, start, sectors)) in entries.iter().enumerate() {
            let at = TABLE_OFFSET + i * ENTRY_LEN;
            b[at + 4] = *kind;
            b[at + 8..at + 12].copy_from_slice(&start.to_le_bytes());
            b[at + 12..at + 16].copy_from_slice(&sectors.to_le_bytes());
        }
        b[510] = 0x55;
        b[511] = 0xaa;
        b
    }

    fn standard() -> Vec<u8> {
        table(&[
            (0x0c, MIB_S, 64 * MIB_S),
            (0x0c, 65 * MIB_S, 128 * MIB_S),
            (0x0c, 193 * MIB_S, 128 * MIB_S),
            (0x83, 321 * MIB_S, 64 * MIB_S),
        ])
    }
    const IMAGE_SECTORS: u64 = 385 * MIB_S as u64;

    #[test]
    fn malformed_tables_are_refused() {
        let disk = IMAGE_SECTORS;
        assert_eq!(Mbr::parse(&[0u8; 100], disk), Err(GrowError::Short(100)));
        let mut garbage = standard();
        garbage[510] = 0x12;
        assert!(matches!(
            Mbr::parse(&garbage, disk),
            Err(GrowError::Signature(_))
        ));
        let overlap = table(&[
            (0x0c, MIB_S, 64 * MIB_S),
            (0x0c, 60 * MIB_S, 128 * MIB_S),
            (0x0c, 193 * MIB_S, 128 * MIB_S),
            (0x83, 321 * MIB_S, 64 * MIB_S),
        ]);
        assert_eq!(Mbr::parse(&overlap, disk), Err(GrowError::Overlap(1, 2)));
        let not_last = table(&[
            (0x0c, MIB_S, 64 * MIB_S),
            (0x0c, 65 * MIB_S, 128 * MIB_S),
            (0x0c, 321 * MIB_S, 64 * MIB_S),
            (0x83, 193 * MIB_S, 128 * MIB_S),
        ]);
        assert_eq!(Mbr::parse(&not_last, disk), Err(GrowError::NotLast(3)));
        assert!(matches!(
            Mbr::parse(&standard(), disk - 1),
            Err(GrowError::BeyondDisk { number: 4, .. })
        ));
        let no_data = table(&[(0x0c, MIB_S, 64 * MIB_S)]);
        assert_eq!(Mbr::parse(&no_data, disk), Err(GrowError::NoData));
        // Entries near u32::MAX do not overflow.
        let huge = table(&[
            (0x83, 0, 0),
            (0, 0, 0),
            (0, 0, 0),
            (0x83, u32::MAX, u32::MAX),
        ]);
        assert!(matches!(
            Mbr::parse(&huge, disk),
            Err(GrowError::BeyondDisk { .. })
        ));
        assert!(Mbr::parse(&standard(), disk).is_ok());
    }

    #[test]
    fn rewrite_changes_only_partition_4() {
        let disk = IMAGE_SECTORS + 512 * u64::from(MIB_S);
        let mbr = Mbr::parse(&standard(), disk).unwrap();
        let sectors = grown_sectors(mbr.data(), disk).unwrap();
        assert_eq!(sectors, (64 + 512) * MIB_S);
        let new = mbr.with_data_sectors(sectors);
        let again = Mbr::parse(&new, disk).unwrap();
        assert_eq!(again.data().sectors, sectors);
        assert_eq!(again.data().start, mbr.data().start);
        assert_eq!(again.entries[..3], mbr.entries[..3]);
        let differ: Vec<usize> = (0..512).filter(|&i| new[i] != standard()[i]).collect();
        assert!(differ
            .iter()
            .all(|&i| (TABLE_OFFSET + 48..TABLE_OFFSET + 64).contains(&i)));
        // Not aligned disk end: rounded down to 1 MiB; tiny gains are not worth it.
        assert_eq!(grown_sectors(mbr.data(), disk + 7), Some(sectors));
        assert_eq!(grown_sectors(mbr.data(), IMAGE_SECTORS + 4000), None);
    }

    fn sizes(disk: u64, kernel_sectors: u64, fs_blocks: u64) -> Sizes {
        Sizes {
            disk_sectors: disk,
            kernel_start: 321 * u64::from(MIB_S),
            kernel_sectors,
            fs_blocks,
            block_size: 4096,
        }
    }

    #[test]
    fn plan_does_only_what_is_missing() {
        let big = IMAGE_SECTORS + 512 * u64::from(MIB_S);
        let grown = u64::from((64 + 512) * MIB_S);
        let small = u64::from(64 * MIB_S);
        let first = Mbr::parse(&standard(), big).unwrap();
        let steps = plan(&first, &sizes(big, small, 16384)).unwrap();
        assert!(matches!(steps[0], Step::RewriteTable { .. }));
        assert_eq!(
            steps[1..],
            [
                Step::TellKernel {
                    start: 321 << 20,
                    length: 576 << 20
                },
                Step::ResizeFs { blocks: 147456 }
            ]
        );
        // Cut after the table was written: the kernel and fs steps remain.
        let written = Mbr::parse(&first.with_data_sectors(576 * MIB_S), big).unwrap();
        assert_eq!(plan(&written, &sizes(big, small, 16384)).unwrap().len(), 2);
        // Cut after the kernel was told: only the fs.
        assert_eq!(
            plan(&written, &sizes(big, grown, 16384)).unwrap(),
            [Step::ResizeFs { blocks: 147456 }]
        );
        // Already grown: nothing.
        assert!(plan(&written, &sizes(big, grown, 147456))
            .unwrap()
            .is_empty());
        // An image on a disk of its own size: nothing.
        let exact = Mbr::parse(&standard(), IMAGE_SECTORS).unwrap();
        assert!(plan(&exact, &sizes(IMAGE_SECTORS, small, 16384))
            .unwrap()
            .is_empty());
        // A filesystem larger than its partition is not touched.
        assert!(matches!(
            plan(&exact, &sizes(IMAGE_SECTORS, small, 20000)),
            Err(GrowError::FsLargerThanPartition { .. })
        ));
        let mut odd = sizes(big, small, 16384);
        odd.kernel_start += 1;
        assert!(matches!(
            plan(&first, &odd),
            Err(GrowError::StartMismatch { .. })
        ));
    }

    #[test]
    fn superblock_parse() {
        let mut sb = vec![0u8; 1024];
        sb[0x38] = 0x53;
        sb[0x39] = 0xef;
        sb[0x18] = 2; // 4 KiB
        sb[0x04..0x08].copy_from_slice(&16384u32.to_le_bytes());
        assert_eq!(parse_superblock(&sb), Ok((16384, 4096)));
        sb[0x60] = 0x80;
        sb[0x150] = 1;
        assert_eq!(parse_superblock(&sb), Ok(((1 << 32) + 16384, 4096)));
        assert!(parse_superblock(&sb[..100]).is_err());
        sb[0x38] = 0;
        assert!(parse_superblock(&sb).is_err());
    }

    #[test]
    fn disk_names() {
        assert_eq!(
            disk_of("/dev/vda4").unwrap(),
            ("vda".to_owned(), "vda4".to_owned())
        );
        assert_eq!(
            disk_of("/dev/mmcblk0p4").unwrap(),
            ("mmcblk0".to_owned(), "mmcblk0p4".to_owned())
        );
        for bad in ["/dev/vda2", "/dev/vda", "/dev/4", "/dev/vda44"] {
            assert!(disk_of(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn grow_runs_the_steps_against_the_syscalls() {
        let sys = RecordingSys::new();
        let big = IMAGE_SECTORS + 512 * u64::from(MIB_S);
        let mut disk = standard();
        disk.resize(1024, 0);
        sys.set_blob("/dev/vda", disk);
        let card = |sys: &RecordingSys| {
            let mut sb = vec![0u8; 2048];
            sb[1024 + 0x38] = 0x53;
            sb[1024 + 0x39] = 0xef;
            sb[1024 + 0x18] = 2;
            sb[1024 + 4..1024 + 8].copy_from_slice(&16384u32.to_le_bytes());
            sys.set_blob("/dev/vda4", sb);
            sys.set_file("/sys/class/block/vda/size", &format!("{big}\n"));
            sys.set_file("/sys/class/block/vda4/start", "657408\n");
            sys.set_file("/sys/class/block/vda4/size", "131072\n");
        };
        card(&sys);
        let g = grow(&sys, "/dev/vda4", "/data").unwrap();
        assert_eq!(g.steps.len(), 3);
        let acts = sys.actions();
        assert!(matches!(&acts[0], Call::WriteAt(d, 0, b) if d == "/dev/vda" && b.len() == 512));
        assert_eq!(
            acts[1..],
            [
                Call::ResizePartition {
                    disk: "/dev/vda".into(),
                    number: 4,
                    start: 321 << 20,
                    length: 576 << 20
                },
                Call::ResizeExt4("/data".into(), 147456),
            ]
        );
        let table = sys.blob("/dev/vda").unwrap();
        let mbr = Mbr::parse(&table[..512], big).unwrap();
        assert_eq!(mbr.data().sectors, 576 * MIB_S);

        // A garbage table: nothing is written.
        let sys = RecordingSys::new();
        card(&sys);
        sys.set_blob("/dev/vda", vec![0xff; 512]);
        assert!(matches!(
            grow(&sys, "/dev/vda4", "/data"),
            Err(GrowError::Signature(0xffff))
        ));
        assert!(sys.actions().is_empty());
    }
}
