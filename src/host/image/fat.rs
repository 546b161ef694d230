//! FAT filesystems (BOOT, SLOT_A, SLOT_B) built in memory with `fatfs`, and
//! read back from a disk image through a byte window on the partition.

use std::io::{self, Read, Seek, SeekFrom, Write};

use anyhow::{bail, Context as _, Result};
use fatfs::{FatType, FileSystem, FormatVolumeOptions, FsOptions};

/// One FAT volume to build.
pub(crate) struct Volume<'a> {
    /// Volume label (at most 11 characters, stored upper case).
    pub(crate) label: &'a str,
    pub(crate) size: u64,
    pub(crate) volume_id: u32,
    /// Sectors before the partition on the disk (its start LBA): the BPB
    /// field some firmware checks.
    pub(crate) hidden_sectors: u32,
    /// Seconds since the epoch stamped on every directory entry.
    pub(crate) time: u64,
}

/// Build `vol` holding `files` (`name` or `dir/name`, in the given order).
pub(crate) fn build(vol: &Volume<'_>, files: &[(&str, &[u8])]) -> Result<Vec<u8>> {
    let size = usize::try_from(vol.size).context("volume too large")?;
    let mut disk = io::Cursor::new(vec![0u8; size]);
    // FAT32 as the Raspberry Pi firmware and U-Boot expect on BOOT; fatfs
    // would pick FAT16 below 512 MiB.
    let opts = FormatVolumeOptions::new()
        .fat_type(FatType::Fat32)
        .volume_label(label_bytes(vol.label)?)
        .volume_id(vol.volume_id);
    fatfs::format_volume(&mut disk, opts)
        .with_context(|| format!("formatting FAT volume {}", vol.label))?;
    disk.seek(SeekFrom::Start(0))?;
    let fat32 = {
        // fatfs wants a &'static time provider; one small leak per volume
        // built keeps the entries' timestamps fixed (reproducible images).
        let clock: &'static FixedClock = Box::leak(Box::new(FixedClock::at(vol.time)));
        let fs = FileSystem::new(&mut disk, FsOptions::new().time_provider(clock))
            .with_context(|| format!("opening new FAT volume {}", vol.label))?;
        for (name, data) in files {
            write_file(&fs, name, data)
                .with_context(|| format!("{}: writing {name}", vol.label))?;
        }
        let fat32 = fs.fat_type() == FatType::Fat32;
        fs.unmount()
            .with_context(|| format!("closing FAT volume {}", vol.label))?;
        fat32
    };
    let mut bytes = disk.into_inner();
    // BPB hidden sectors (0x1C), also in FAT32's backup boot sector (sector 6).
    let hidden = vol.hidden_sectors.to_le_bytes();
    bytes[0x1c..0x20].copy_from_slice(&hidden);
    if fat32 {
        bytes[6 * 512 + 0x1c..6 * 512 + 0x20].copy_from_slice(&hidden);
    }
    Ok(bytes)
}

fn write_file<T: fatfs::ReadWriteSeek>(fs: &FileSystem<T>, name: &str, data: &[u8]) -> Result<()> {
    let mut dir = fs.root_dir();
    let mut parts: Vec<&str> = name.split('/').collect();
    let Some(file_name) = parts.pop() else {
        bail!("empty name")
    };
    for part in parts {
        dir = match dir.open_dir(part) {
            Ok(d) => d,
            Err(_) => dir.create_dir(part)?,
        };
    }
    let mut file = dir.create_file(file_name)?;
    file.truncate()?;
    file.write_all(data)?;
    file.flush()?;
    Ok(())
}

fn label_bytes(label: &str) -> Result<[u8; 11]> {
    if label.is_empty()
        || label.len() > 11
        || !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        bail!("FAT label `{label}` must be 1 to 11 letters, digits or '_'");
    }
    let mut out = [b' '; 11];
    out[..label.len()].copy_from_slice(label.to_ascii_uppercase().as_bytes());
    Ok(out)
}

/// A FAT volume's id from the hostname and label (reproducible, distinct).
pub(crate) fn volume_id(hostname: &str, label: &str) -> u32 {
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        format!("outpost-fat:{hostname}:{label}").as_bytes(),
    );
    let b = d.as_ref();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

#[derive(Debug)]
struct FixedClock(fatfs::DateTime);

impl FixedClock {
    fn at(secs: u64) -> FixedClock {
        // FAT dates span 1980..=2107; clamp into it.
        let secs = i64::try_from(secs)
            .unwrap_or(i64::MAX)
            .clamp(315_532_800, 4_354_819_199);
        let t = time::OffsetDateTime::from_unix_timestamp(secs)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        FixedClock(fatfs::DateTime {
            date: fatfs::Date {
                year: t.year() as u16,
                month: u8::from(t.month()).into(),
                day: t.day().into(),
            },
            time: fatfs::Time {
                hour: t.hour().into(),
                min: t.minute().into(),
                sec: t.second().into(),
                millis: 0,
            },
        })
    }
}

impl fatfs::TimeProvider for FixedClock {
    fn get_current_date(&self) -> fatfs::Date {
        self.0.date
    }
    fn get_current_date_time(&self) -> fatfs::DateTime {
        self.0
    }
}

/// A byte range of a larger stream (a partition of a disk image), so fatfs
/// can work on it in place.
pub(crate) struct Window<F> {
    inner: F,
    start: u64,
    len: u64,
    pos: u64,
}

impl<F: Seek> Window<F> {
    pub(crate) fn new(inner: F, start: u64, len: u64) -> Window<F> {
        Window {
            inner,
            start,
            len,
            pos: 0,
        }
    }
    fn room(&self, want: usize) -> usize {
        usize::try_from(self.len.saturating_sub(self.pos)).map_or(want, |left| want.min(left))
    }
}

impl<F: Read + Seek> Read for Window<F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.room(buf.len());
        if n == 0 {
            return Ok(0);
        }
        self.inner.seek(SeekFrom::Start(self.start + self.pos))?;
        let got = self.inner.read(&mut buf[..n])?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl<F: Write + Seek> Write for Window<F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.room(buf.len());
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the partition",
            ));
        }
        self.inner.seek(SeekFrom::Start(self.start + self.pos))?;
        let put = self.inner.write(&buf[..n])?;
        self.pos += put as u64;
        Ok(put)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<F: Seek> Seek for Window<F> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match target {
            Some(p) if p <= self.len => {
                self.pos = p;
                Ok(p)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek outside the partition",
            )),
        }
    }
}

/// Read `name` from the FAT volume in `stream` (a partition window).
pub(crate) fn read_file<T: fatfs::ReadWriteSeek>(
    stream: T,
    name: &str,
    limit: u64,
) -> Result<Vec<u8>> {
    let fs = FileSystem::new(stream, FsOptions::new()).context("not a FAT volume")?;
    let mut file = fs
        .root_dir()
        .open_file(name)
        .with_context(|| format!("no {name}"))?;
    let mut data = Vec::new();
    (&mut file).take(limit + 1).read_to_end(&mut data)?;
    if data.len() as u64 > limit {
        bail!("{name} is larger than {limit} bytes");
    }
    Ok(data)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn build_and_read_back() {
        let vol = Volume {
            label: "SLOT_A",
            size: 128 << 20,
            volume_id: 7,
            hidden_sectors: 133_120,
            time: 1_700_000_000,
        };
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let img = build(
            &vol,
            &[
                ("Image.gz", &big),
                ("boot.env", b"A=1\n"),
                ("dtbs/x.dtb", b"dtb"),
            ],
        )
        .unwrap();
        assert_eq!(img.len(), 128 << 20);
        assert_eq!(&img[0x1c..0x20], &133_120u32.to_le_bytes());
        let fs = FileSystem::new(io::Cursor::new(img.clone()), FsOptions::new()).unwrap();
        assert_eq!(fs.fat_type(), FatType::Fat32);
        assert_eq!(fs.volume_label(), "SLOT_A");
        let entry = fs
            .root_dir()
            .iter()
            .find_map(|e| e.ok().filter(|e| e.file_name() == "boot.env"))
            .unwrap();
        assert_eq!(entry.modified().date.year, 2023);
        drop(fs);
        assert_eq!(
            read_file(io::Cursor::new(img.clone()), "Image.gz", 10 << 20).unwrap(),
            big
        );
        assert!(read_file(io::Cursor::new(img.clone()), "Image.gz", 100).is_err());
        // Same inputs, same bytes.
        let again = build(
            &vol,
            &[
                ("Image.gz", &big),
                ("boot.env", b"A=1\n"),
                ("dtbs/x.dtb", b"dtb"),
            ],
        )
        .unwrap();
        assert!(img == again);
    }

    #[test]
    fn window_reads_a_partition_in_place() {
        let vol = Volume {
            label: "BOOT",
            size: 64 << 20,
            volume_id: 1,
            hidden_sectors: 2048,
            time: 0,
        };
        let fat = build(&vol, &[("state.env", b"x")]).unwrap();
        let mut disk = vec![0xeeu8; 1 << 20];
        disk.extend_from_slice(&fat);
        let w = Window::new(io::Cursor::new(disk), 1 << 20, 64 << 20);
        assert_eq!(read_file(w, "state.env", 10).unwrap(), b"x");
    }

    /// dosfsck agrees the volume is clean, when installed.
    #[test]
    fn fsck_fat_is_happy() {
        let vol = Volume {
            label: "BOOT",
            size: 64 << 20,
            volume_id: 1,
            hidden_sectors: 2048,
            time: 1_700_000_000,
        };
        let fat = build(&vol, &[("boot.scr", b"x"), ("state.env", &[0u8; 0x4000])]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("boot.vfat");
        std::fs::write(&p, fat).unwrap();
        let Ok(out) = std::process::Command::new("fsck.fat")
            .arg("-n")
            .arg(&p)
            .output()
        else {
            eprintln!("SKIP: fsck.fat not installed");
            return;
        };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
