//! The boot-state copies on a real BOOT partition (FAT32), rewritten in place.
//!
//! The copies were preallocated by the image builder and are never resized,
//! so their clusters are fixed: we find them by parsing the boot sector, the
//! FAT and the root directory (through the one cursor, no slice indexing),
//! then `pwrite` the 16 KiB over the file's data and fsync the block device.
//! No vfat mount, no kernel module, no FAT metadata written: a power cut can
//! only tear the one copy being written (U-Boot's `fatwrite` of a same-size
//! file rewrites the same data clusters; verified on an image byte for byte).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use super::{Backend, SlotsError};
use crate::bootstate::{CopyId, STATE_SIZE};
use crate::device::net::reader::{ReadError, Reader};

/// A boot sector is one 512-byte sector whatever the sector size says.
const BOOT_SECTOR: usize = 512;
/// Largest cluster we accept (FAT allows up to 64 KiB with 512-byte sectors).
const MAX_CLUSTER_BYTES: u64 = 64 << 10;
/// Root directory clusters we follow before giving up: BOOT holds a handful
/// of files; a longer chain means a corrupt FAT (or a loop).
const MAX_DIR_CLUSTERS: usize = 64;
/// FAT32 entries are 28 bits; these values end a chain.
const FAT32_MASK: u32 = 0x0fff_ffff;
const FAT32_EOC: u32 = 0x0fff_fff8;
const DIR_ENTRY: usize = 32;
const ATTR_LFN: u8 = 0x0f;
const ATTR_VOLUME_OR_DIR: u8 = 0x18;

/// Raw access to the partition: reads and writes at byte offsets, and a flush
/// to stable storage. The seam that tests replace with memory.
pub trait BlockDev: Send {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
    fn write_at(&self, offset: u64, data: &[u8]) -> std::io::Result<()>;
    fn sync(&self) -> std::io::Result<()>;
}

/// A partition as a file: the block device itself (`start` 0), or a byte
/// range of a disk image (host tools and tests).
#[derive(Debug)]
pub struct PartitionFile {
    file: File,
    start: u64,
    path: PathBuf,
}

impl PartitionFile {
    pub fn open(path: &Path, start: u64) -> Result<Self, SlotsError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| SlotsError::io(path, e))?;
        Ok(Self {
            file,
            start,
            path: path.to_owned(),
        })
    }
}

impl BlockDev for PartitionFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let at = self.start.checked_add(offset).ok_or_else(overflow)?;
        self.file.read_exact_at(buf, at)
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let at = self.start.checked_add(offset).ok_or_else(overflow)?;
        self.file.write_all_at(data, at)
    }
    fn sync(&self) -> std::io::Result<()> {
        self.file.sync_all()
    }
}

fn overflow() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, "offset overflows")
}

/// The copies on a FAT32 partition.
pub struct BlockBackend {
    dev: Box<dyn BlockDev>,
    name: String,
}

impl BlockBackend {
    /// `name` is for messages (the device path).
    pub fn new(dev: Box<dyn BlockDev>, name: &str) -> Self {
        Self {
            dev,
            name: name.to_owned(),
        }
    }

    /// The block device at `path` (e.g. `/dev/vda1`).
    pub fn open(path: &Path) -> Result<Self, SlotsError> {
        let dev = PartitionFile::open(path, 0)?;
        let name = dev.path.display().to_string();
        Ok(Self::new(Box::new(dev), &name))
    }

    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, SlotsError> {
        let mut buf = vec![0u8; len];
        self.dev
            .read_at(offset, &mut buf)
            .map_err(|e| SlotsError::io(Path::new(&self.name), e))?;
        Ok(buf)
    }

    fn fat_error(&self, why: String) -> SlotsError {
        SlotsError::Fat {
            device: self.name.clone(),
            why,
        }
    }

    /// Where `copy`'s 16 KiB live: one extent per run of adjacent clusters.
    pub fn locate(&self, copy: CopyId) -> Result<Vec<Extent>, SlotsError> {
        let boot = self.read(0, BOOT_SECTOR)?;
        let fs = Fat32::parse(&boot).map_err(|e| self.fat_error(e))?;
        let want = short_name(copy.file()).map_err(|e| self.fat_error(e))?;
        let mut entry = None;
        let mut cluster = fs.root_cluster;
        'dir: for _ in 0..MAX_DIR_CLUSTERS {
            let at = fs.cluster_offset(cluster).map_err(|e| self.fat_error(e))?;
            let bytes = self.read(at, fs.cluster_len())?;
            match find_entry(&bytes, &want).map_err(|e| self.fat_error(e))? {
                DirScan::Found(e) => {
                    entry = Some(e);
                    break 'dir;
                }
                DirScan::End => break 'dir,
                DirScan::More => {}
            }
            match self.next_cluster(&fs, cluster)? {
                Some(next) => cluster = next,
                None => break 'dir,
            }
        }
        let entry = entry
            .ok_or_else(|| self.fat_error(format!("no {} in the root directory", copy.file())))?;
        if usize::try_from(entry.size).ok() != Some(STATE_SIZE) {
            return Err(self.fat_error(format!(
                "{} is {} bytes, not the preallocated {STATE_SIZE}",
                copy.file(),
                entry.size
            )));
        }
        self.extents(&fs, entry.first_cluster, copy)
    }

    /// Follow the file's chain for exactly its size, merging adjacent clusters.
    fn extents(&self, fs: &Fat32, first: u32, copy: CopyId) -> Result<Vec<Extent>, SlotsError> {
        let cluster_len = fs.cluster_len();
        let clusters = STATE_SIZE.div_ceil(cluster_len);
        let mut extents: Vec<Extent> = Vec::new();
        let mut left = STATE_SIZE;
        let mut cluster = first;
        for i in 0..clusters {
            let offset = fs.cluster_offset(cluster).map_err(|e| self.fat_error(e))?;
            let len = left.min(cluster_len);
            match extents.last_mut() {
                Some(last) if last.offset + last.len as u64 == offset => last.len += len,
                _ => extents.push(Extent { offset, len }),
            }
            left -= len;
            if i + 1 < clusters {
                cluster = self.next_cluster(fs, cluster)?.ok_or_else(|| {
                    self.fat_error(format!("{}'s cluster chain ends early", copy.file()))
                })?;
            }
        }
        Ok(extents)
    }

    /// The FAT entry of `cluster`: the next one, or `None` at the chain's end.
    fn next_cluster(&self, fs: &Fat32, cluster: u32) -> Result<Option<u32>, SlotsError> {
        let at = fs
            .fat_offset
            .checked_add(u64::from(cluster) * 4)
            .ok_or_else(|| self.fat_error("FAT offset overflows".into()))?;
        let bytes = self.read(at, 4)?;
        let raw = Reader::new(&bytes)
            .array::<4>()
            .map(u32::from_le_bytes)
            .map_err(|e| self.fat_error(e.to_string()))?;
        let next = raw & FAT32_MASK;
        if next >= FAT32_EOC {
            return Ok(None);
        }
        if next < 2 || next > fs.max_cluster {
            return Err(self.fat_error(format!("cluster {cluster} links to {next}")));
        }
        Ok(Some(next))
    }
}

impl Backend for BlockBackend {
    fn read_copy(&self, copy: CopyId) -> Result<Vec<u8>, SlotsError> {
        let mut out = Vec::with_capacity(STATE_SIZE);
        for e in self.locate(copy)? {
            out.extend_from_slice(&self.read(e.offset, e.len)?);
        }
        Ok(out)
    }

    fn write_copy(&self, copy: CopyId, blob: &[u8]) -> Result<(), SlotsError> {
        if blob.len() != STATE_SIZE {
            return Err(SlotsError::Size(blob.len()));
        }
        let io = |e| SlotsError::io(Path::new(&self.name), e);
        let mut rest = blob;
        for e in self.locate(copy)? {
            let (part, tail) = rest
                .split_at_checked(e.len)
                .ok_or(SlotsError::Size(blob.len()))?;
            self.dev.write_at(e.offset, part).map_err(io)?;
            rest = tail;
        }
        self.dev.sync().map_err(io)
    }

    fn describe(&self) -> String {
        format!("BOOT partition {}", self.name)
    }
}

/// A byte range of the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub len: usize,
}

/// The geometry of a FAT32 volume, from its boot sector.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fat32 {
    cluster_bytes: u64,
    fat_offset: u64,
    data_offset: u64,
    root_cluster: u32,
    max_cluster: u32,
}

impl Fat32 {
    fn parse(sector: &[u8]) -> Result<Fat32, String> {
        let e = |e: ReadError| format!("boot sector: {e}");
        let mut r = Reader::new(sector);
        r.take(11).map_err(e)?; // jump, OEM name
        let bytes_per_sector = u16::from_le_bytes(r.array().map_err(e)?);
        let sectors_per_cluster = r.u8().map_err(e)?;
        let reserved = u16::from_le_bytes(r.array().map_err(e)?);
        let fats = r.u8().map_err(e)?;
        let root_entries = u16::from_le_bytes(r.array().map_err(e)?);
        let total16 = u16::from_le_bytes(r.array().map_err(e)?);
        r.u8().map_err(e)?; // media
        let fat16_size = u16::from_le_bytes(r.array().map_err(e)?);
        r.take(8).map_err(e)?; // geometry, hidden sectors
        let total32 = u32::from_le_bytes(r.array().map_err(e)?);
        let fat_size = u32::from_le_bytes(r.array().map_err(e)?);
        r.take(4).map_err(e)?; // flags, version
        let root_cluster = u32::from_le_bytes(r.array().map_err(e)?);
        r.take(510 - 48).map_err(e)?;
        let signature = r.array::<2>().map_err(e)?;
        r.finish().map_err(e)?;

        if signature != [0x55, 0xaa] {
            return Err("no boot sector signature".into());
        }
        if !matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096) {
            return Err(format!("{bytes_per_sector} bytes per sector"));
        }
        if !sectors_per_cluster.is_power_of_two() {
            return Err(format!("{sectors_per_cluster} sectors per cluster"));
        }
        if root_entries != 0 || fat16_size != 0 || total16 != 0 || fat_size == 0 {
            return Err("not FAT32 (the image builder makes BOOT FAT32)".into());
        }
        if !(1..=2).contains(&fats) || reserved == 0 || root_cluster < 2 {
            return Err(format!(
                "implausible layout: {fats} FATs, {reserved} reserved sectors, root at {root_cluster}"
            ));
        }
        let bps = u64::from(bytes_per_sector);
        let cluster_bytes = bps * u64::from(sectors_per_cluster);
        if cluster_bytes > MAX_CLUSTER_BYTES {
            return Err(format!("{cluster_bytes}-byte clusters"));
        }
        let fat_sectors = u64::from(fats) * u64::from(fat_size);
        let data_sector = u64::from(reserved) + fat_sectors;
        let data_clusters = u64::from(total32)
            .checked_sub(data_sector)
            .ok_or("FATs are larger than the volume")?
            / u64::from(sectors_per_cluster);
        // Clusters are numbered from 2; the FAT must have an entry for each.
        let max_cluster = u32::try_from(data_clusters + 1)
            .map_err(|_| "too many clusters".to_string())?
            .min(u32::try_from(u64::from(fat_size) * bps / 4 - 1).unwrap_or(u32::MAX));
        if root_cluster > max_cluster {
            return Err(format!("root cluster {root_cluster} is past the end"));
        }
        Ok(Fat32 {
            cluster_bytes,
            fat_offset: u64::from(reserved) * bps,
            data_offset: data_sector * bps,
            root_cluster,
            max_cluster,
        })
    }

    fn cluster_len(&self) -> usize {
        // At most MAX_CLUSTER_BYTES (checked in parse).
        usize::try_from(self.cluster_bytes).unwrap_or(BOOT_SECTOR)
    }

    fn cluster_offset(&self, cluster: u32) -> Result<u64, String> {
        if cluster < 2 || cluster > self.max_cluster {
            return Err(format!("cluster {cluster} is out of range"));
        }
        Ok(self.data_offset + u64::from(cluster - 2) * self.cluster_bytes)
    }
}

/// A root directory entry we care about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DirEntry {
    first_cluster: u32,
    size: u32,
}

enum DirScan {
    Found(DirEntry),
    /// The end-of-directory marker: the file is not there.
    End,
    /// Not in this cluster; the directory goes on.
    More,
}

/// Look for the short name `want` in one directory cluster.
fn find_entry(cluster: &[u8], want: &[u8; 11]) -> Result<DirScan, String> {
    let mut r = Reader::new(cluster);
    while !r.is_empty() {
        let mut e = r.sub(DIR_ENTRY).map_err(|e| format!("directory: {e}"))?;
        let err = |e: ReadError| format!("directory entry: {e}");
        let name = e.array::<11>().map_err(err)?;
        let attr = e.u8().map_err(err)?;
        e.take(8).map_err(err)?;
        let hi = u16::from_le_bytes(e.array().map_err(err)?);
        e.take(4).map_err(err)?;
        let lo = u16::from_le_bytes(e.array().map_err(err)?);
        let size = u32::from_le_bytes(e.array().map_err(err)?);
        e.finish().map_err(err)?;
        match name.first() {
            Some(0) => return Ok(DirScan::End),
            Some(0xe5) => continue, // deleted
            _ => {}
        }
        if attr == ATTR_LFN || attr & ATTR_VOLUME_OR_DIR != 0 {
            continue;
        }
        if name.eq_ignore_ascii_case(want) {
            let first_cluster = (u32::from(hi) << 16) | u32::from(lo);
            return Ok(DirScan::Found(DirEntry {
                first_cluster,
                size,
            }));
        }
    }
    Ok(DirScan::More)
}

/// `state.env` → `STATE   ENV`: the 8.3 directory name.
fn short_name(file: &str) -> Result<[u8; 11], String> {
    let (base, ext) = file.split_once('.').unwrap_or((file, ""));
    let ok = |s: &str, max: usize| {
        !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    if !ok(base, 8) || !(ext.is_empty() || ok(ext, 3)) {
        return Err(format!("`{file}` is not an 8.3 name"));
    }
    let mut out = [b' '; 11];
    for (dst, src) in out.iter_mut().zip(base.bytes()) {
        *dst = src.to_ascii_uppercase();
    }
    for (dst, src) in out.iter_mut().skip(8).zip(ext.bytes()) {
        *dst = src.to_ascii_uppercase();
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A partition in memory that records writes and syncs.
    #[derive(Clone, Default)]
    pub(crate) struct MemDev {
        pub(crate) bytes: Arc<Mutex<Vec<u8>>>,
        pub(crate) log: Arc<Mutex<Vec<String>>>,
    }

    impl BlockDev for MemDev {
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
            let bytes = self.bytes.lock().unwrap();
            let start = usize::try_from(offset).unwrap();
            let src = bytes
                .get(start..start + buf.len())
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
            buf.copy_from_slice(src);
            Ok(())
        }
        fn write_at(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            let mut bytes = self.bytes.lock().unwrap();
            let start = usize::try_from(offset).unwrap();
            bytes[start..start + data.len()].copy_from_slice(data);
            self.log
                .lock()
                .unwrap()
                .push(format!("write {offset:#x} {}", data.len()));
            Ok(())
        }
        fn sync(&self) -> std::io::Result<()> {
            self.log.lock().unwrap().push("sync".into());
            Ok(())
        }
    }

    /// A minimal FAT32 volume by hand: 512-byte sectors and clusters, one
    /// FAT, the root directory in cluster 2 (continued in `root_next`), and
    /// `files` as (8.3 name, first cluster, size, chain).
    pub(crate) fn fat32(
        files: &[(&[u8; 11], u32, u32, &[u32])],
        root_next: Option<u32>,
    ) -> Vec<u8> {
        let total_sectors: u32 = 2048;
        let reserved: u16 = 32;
        let fat_sectors: u32 = 16;
        let mut v = vec![0u8; total_sectors as usize * 512];
        v[0..3].copy_from_slice(&[0xeb, 0x58, 0x90]);
        v[11..13].copy_from_slice(&512u16.to_le_bytes());
        v[13] = 1;
        v[14..16].copy_from_slice(&reserved.to_le_bytes());
        v[16] = 1;
        v[21] = 0xf8;
        v[32..36].copy_from_slice(&total_sectors.to_le_bytes());
        v[36..40].copy_from_slice(&fat_sectors.to_le_bytes());
        v[44..48].copy_from_slice(&2u32.to_le_bytes());
        v[510] = 0x55;
        v[511] = 0xaa;
        let fat = usize::from(reserved) * 512;
        let data = fat + fat_sectors as usize * 512;
        let set_fat = |v: &mut Vec<u8>, n: u32, val: u32| {
            let at = fat + n as usize * 4;
            v[at..at + 4].copy_from_slice(&val.to_le_bytes());
        };
        set_fat(&mut v, 2, root_next.unwrap_or(FAT32_MASK));
        if let Some(n) = root_next {
            set_fat(&mut v, n, FAT32_MASK);
        }
        let mut slot = 0usize;
        // A long-name entry and a volume label first, as real volumes have.
        let mut put = |v: &mut Vec<u8>, entry: [u8; 32]| {
            let cluster = if slot < 16 { 2 } else { root_next.unwrap() };
            let at = data + (cluster as usize - 2) * 512 + (slot % 16) * 32;
            v[at..at + 32].copy_from_slice(&entry);
            slot += 1;
        };
        let mut label = [0u8; 32];
        label[..11].copy_from_slice(b"BOOT       ");
        label[11] = 0x08;
        put(&mut v, label);
        for (name, first, size, chain) in files {
            let mut lfn = [0u8; 32];
            lfn[0] = 0x41;
            lfn[11] = ATTR_LFN;
            put(&mut v, lfn);
            let mut e = [0u8; 32];
            e[..11].copy_from_slice(*name);
            e[11] = 0x20;
            e[20..22].copy_from_slice(&((first >> 16) as u16).to_le_bytes());
            e[26..28].copy_from_slice(&(*first as u16).to_le_bytes());
            e[28..32].copy_from_slice(&size.to_le_bytes());
            put(&mut v, e);
            for w in chain.windows(2) {
                set_fat(&mut v, w[0], w[1]);
            }
            if let Some(&last) = chain.last() {
                set_fat(&mut v, last, FAT32_MASK);
            }
        }
        v
    }

    fn chain(first: u32, n: u32) -> Vec<u32> {
        (first..first + n).collect()
    }

    fn backend(bytes: Vec<u8>) -> (BlockBackend, MemDev) {
        let dev = MemDev::default();
        *dev.bytes.lock().unwrap() = bytes;
        (BlockBackend::new(Box::new(dev.clone()), "mem"), dev)
    }

    #[test]
    fn malformed_boot_sectors_are_refused() {
        let good = fat32(&[], None);
        assert!(Fat32::parse(&good[..512]).is_ok());
        assert!(Fat32::parse(&good[..100]).unwrap_err().contains("needs"));
        let mut bad = good[..512].to_vec();
        bad[510] = 0;
        assert!(Fat32::parse(&bad).unwrap_err().contains("signature"));
        let mut bad = good[..512].to_vec();
        bad[11..13].copy_from_slice(&100u16.to_le_bytes());
        assert!(Fat32::parse(&bad).is_err());
        let mut bad = good[..512].to_vec();
        bad[13] = 3;
        assert!(Fat32::parse(&bad).is_err());
        let mut bad = good[..512].to_vec();
        bad[17] = 1; // FAT12/16 root entries
        assert!(Fat32::parse(&bad).unwrap_err().contains("FAT32"));
        let mut bad = good[..512].to_vec();
        bad[36..40].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Fat32::parse(&bad).is_err());
        let mut bad = good[..512].to_vec();
        bad[44..48].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Fat32::parse(&bad).is_err());
        assert!(Fat32::parse(&[0u8; 512]).is_err());
    }

    #[test]
    fn missing_wrong_size_and_broken_chains_are_refused() {
        let (b, _) = backend(fat32(&[(b"STATE   ENV", 10, 16384, &chain(10, 32))], None));
        assert!(b.locate(CopyId::First).is_ok());
        assert!(matches!(
            b.locate(CopyId::Second),
            Err(SlotsError::Fat { .. })
        ));

        let (b, _) = backend(fat32(&[(b"STATE   ENV", 10, 100, &[10])], None));
        let err = b.locate(CopyId::First).unwrap_err().to_string();
        assert!(err.contains("100 bytes"), "{err}");

        // Chain ends after 3 clusters.
        let (b, _) = backend(fat32(&[(b"STATE   ENV", 10, 16384, &chain(10, 3))], None));
        assert!(b
            .locate(CopyId::First)
            .unwrap_err()
            .to_string()
            .contains("ends early"));
        // Chain points at cluster 1, or past the end.
        let mut img = fat32(&[(b"STATE   ENV", 10, 16384, &chain(10, 32))], None);
        img[32 * 512 + 11 * 4..32 * 512 + 12 * 4].copy_from_slice(&1u32.to_le_bytes());
        let (b, _) = backend(img.clone());
        assert!(b.locate(CopyId::First).is_err());
        img[32 * 512 + 11 * 4..32 * 512 + 12 * 4].copy_from_slice(&0x0fff_0000u32.to_le_bytes());
        let (b, _) = backend(img);
        assert!(b.locate(CopyId::First).is_err());
        // First cluster out of range.
        let (b, _) = backend(fat32(&[(b"STATE   ENV", 99_999, 16384, &[])], None));
        assert!(b.locate(CopyId::First).is_err());
        // A root directory that loops on itself ends at the cap.
        let mut img = fat32(&[], None);
        img[32 * 512 + 8..32 * 512 + 12].copy_from_slice(&2u32.to_le_bytes());
        // Fill cluster 2 with non-matching entries so the scan wants more.
        let data = 32 * 512 + 16 * 512;
        for i in 0..16 {
            img[data + i * 32] = b'X';
        }
        let (b, _) = backend(img);
        assert!(b.locate(CopyId::First).is_err());
    }

    #[test]
    fn contiguous_copy_is_one_write_and_a_sync() {
        let files: [(&[u8; 11], u32, u32, &[u32]); 2] = [
            (b"STATE   ENV", 10, 16384, &chain(10, 32)),
            (b"STATE2  ENV", 42, 16384, &chain(42, 32)),
        ];
        let (b, dev) = backend(fat32(&files, None));
        let ext = b.locate(CopyId::Second).unwrap();
        let data = (32 + 16) * 512;
        assert_eq!(
            ext,
            [Extent {
                offset: (data + 40 * 512) as u64,
                len: STATE_SIZE
            }]
        );
        let before = dev.bytes.lock().unwrap().clone();
        let blob = vec![0xabu8; STATE_SIZE];
        b.write_copy(CopyId::Second, &blob).unwrap();
        assert_eq!(b.read_copy(CopyId::Second).unwrap(), blob);
        assert_eq!(
            *dev.log.lock().unwrap(),
            [format!("write {:#x} 16384", data + 40 * 512), "sync".into()]
        );
        // Nothing but those 16 KiB changed: no FAT, no directory entry.
        let after = dev.bytes.lock().unwrap().clone();
        let changed: Vec<usize> = (0..after.len())
            .filter(|&i| after[i] != before[i])
            .collect();
        assert!(changed
            .iter()
            .all(|&i| i >= data + 40 * 512 && i < data + 72 * 512));
        assert!(b.write_copy(CopyId::First, &[0u8; 10]).is_err());
    }

    #[test]
    fn fragmented_copy_and_long_root_directory() {
        // Root spills into a second cluster; the copy's chain has a gap.
        let mut ch = chain(100, 16);
        ch.extend(chain(200, 16));
        let filler: Vec<[u8; 11]> = (0..8)
            .map(|i| *format!("FILE{i}   TXT").as_bytes().first_chunk().unwrap())
            .collect();
        let mut files: Vec<(&[u8; 11], u32, u32, &[u32])> =
            filler.iter().map(|n| (n, 0u32, 0u32, &[][..])).collect();
        files.push((b"STATE2  ENV", 100, 16384, &ch));
        let (b, dev) = backend(fat32(&files, Some(50)));
        let ext = b.locate(CopyId::Second).unwrap();
        assert_eq!(ext.len(), 2);
        assert_eq!(ext[0].len + ext[1].len, STATE_SIZE);
        let blob: Vec<u8> = (0..STATE_SIZE).map(|i| (i % 251) as u8).collect();
        b.write_copy(CopyId::Second, &blob).unwrap();
        assert_eq!(b.read_copy(CopyId::Second).unwrap(), blob);
        assert_eq!(dev.log.lock().unwrap().len(), 3);
    }

    #[test]
    fn short_names() {
        assert_eq!(&short_name("state.env").unwrap(), b"STATE   ENV");
        assert_eq!(&short_name("state2.env").unwrap(), b"STATE2  ENV");
        assert!(short_name("state.env.b").is_err());
        assert!(short_name("toolongname.env").is_err());
        assert!(short_name("").is_err());
    }
}
