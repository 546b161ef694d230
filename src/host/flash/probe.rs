//! Is DEVICE safe to overwrite? What the kernel says about it (/sys, and
//! /proc/self/mountinfo), read through [`Probe`] so tests can fake a
//! machine. Every reason not to write is collected, not just the first.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// What a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Missing,
    File {
        len: u64,
    },
    Block {
        major: u32,
        minor: u32,
    },
    /// A directory, character device, socket…
    Other,
}

/// The reads the checks need; [`SystemProbe`] does them on this machine.
pub trait Probe {
    /// What `path` is (following symlinks, as opening it would).
    fn kind(&self, path: &Path) -> io::Result<NodeKind>;
    /// A small text file (/sys attributes, mountinfo).
    fn read(&self, path: &Path) -> io::Result<String>;
    fn read_link(&self, path: &Path) -> io::Result<PathBuf>;
    /// Entry names in a directory.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
}

/// /sys attributes and mountinfo are small; a mountinfo with 100,000 mounts
/// is ~15 MB. Bounded so a strange file cannot exhaust memory.
const MAX_PROC_TEXT: u64 = 32 << 20;
/// Directory entries read from /sys (a disk's partitions, holders).
const MAX_DIR_ENTRIES: usize = 4096;

/// The real machine.
pub struct SystemProbe;

impl Probe for SystemProbe {
    fn kind(&self, path: &Path) -> io::Result<NodeKind> {
        use std::os::unix::fs::FileTypeExt as _;
        use std::os::unix::fs::MetadataExt as _;
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(NodeKind::Missing),
            Err(e) => return Err(e),
        };
        let ft = meta.file_type();
        Ok(if ft.is_file() {
            NodeKind::File { len: meta.len() }
        } else if ft.is_block_device() {
            let rdev = meta.rdev();
            NodeKind::Block {
                major: rustix::fs::major(rdev),
                minor: rustix::fs::minor(rdev),
            }
        } else {
            NodeKind::Other
        })
    }

    fn read(&self, path: &Path) -> io::Result<String> {
        use std::io::Read as _;
        let mut s = String::new();
        std::fs::File::open(path)?
            .take(MAX_PROC_TEXT)
            .read_to_string(&mut s)?;
        Ok(s)
    }

    fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        std::fs::read_link(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir)?.take(MAX_DIR_ENTRIES) {
            out.push(e?.file_name().to_string_lossy().into_owned());
        }
        Ok(out)
    }
}

/// A reason not to write to the device (overridden by `--force`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NotRemovable { disk: String },
    Partition { part: String, disk: String },
    Mounted { dev: String, at: String },
    RunningSystem { dev: String, at: String },
    TooSmall { size: u64, need: u64 },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotRemovable { disk } => write!(
                f,
                "{disk} is not a removable disk (/sys/block/{disk}/removable is 0 and it is not an SD card): is it an internal drive?"
            ),
            Refusal::Partition { part, disk } => write!(
                f,
                "{part} is a partition of {disk}: an image goes onto the whole disk (/dev/{disk})"
            ),
            Refusal::Mounted { dev, at } => {
                write!(f, "{dev} is mounted on {at}: unmount it first")
            }
            Refusal::RunningSystem { dev, at } => write!(
                f,
                "{dev} holds the running system (mounted on {at}): this is this machine's own disk"
            ),
            Refusal::TooSmall { size, need } => write!(
                f,
                "the device has {size} bytes ({} MiB), the image needs {need} ({} MiB)",
                size >> 20,
                need >> 20
            ),
        }
    }
}

/// What DEVICE turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A regular file, created or extended as needed.
    File { exists: bool },
    /// A block device: its disk's name and its size in bytes.
    Block { disk: String, size: u64 },
}

/// Mount points that mean "this machine's own system".
const SYSTEM_MOUNTS: [&str; 5] = ["/", "/boot", "/boot/efi", "/boot/firmware", "/usr"];

/// Look at `path` and list every reason not to write an image of
/// `image_size` bytes to it. `Err`: it cannot be a target at all.
pub fn check(
    probe: &dyn Probe,
    path: &Path,
    image_size: u64,
) -> Result<(Target, Vec<Refusal>), String> {
    let kind = probe.kind(path).map_err(|e| e.to_string())?;
    // A mistyped /dev/sdX must not become a 400 MB file in /dev (a RAM
    // file system): under /dev only devices are targets.
    if path.starts_with("/dev") && matches!(kind, NodeKind::Missing | NodeKind::File { .. }) {
        return Err("no such device (plain files are not written under /dev)".into());
    }
    let (major, minor) = match kind {
        NodeKind::Missing => return Ok((Target::File { exists: false }, Vec::new())),
        NodeKind::File { .. } => return Ok((Target::File { exists: true }, Vec::new())),
        NodeKind::Other => {
            return Err("is neither a block device nor a regular file".into());
        }
        NodeKind::Block { major, minor } => (major, minor),
    };
    let devno = format!("{major}:{minor}");
    let sys = PathBuf::from(format!("/sys/dev/block/{devno}"));
    let link = probe
        .read_link(&sys)
        .map_err(|e| format!("block device {devno} is not in /sys ({e})"))?;
    let name = last_component(&link).ok_or("its /sys entry has no name")?;
    let is_partition = probe.read(&sys.join("partition")).is_ok();
    let disk = if is_partition {
        link.parent()
            .and_then(last_component)
            .ok_or("partition without a parent disk in /sys")?
    } else {
        name.clone()
    };
    let size = read_number(probe, &sys.join("size"))
        .ok_or("its size in /sys is unreadable")?
        .saturating_mul(512);

    let mut refusals = Vec::new();
    if is_partition {
        refusals.push(Refusal::Partition {
            part: name.clone(),
            disk: disk.clone(),
        });
    }
    let disk_dir = PathBuf::from(format!("/sys/block/{disk}"));
    let removable = read_trim(probe, &disk_dir.join("removable")).as_deref() == Some("1");
    // Built-in card readers (mmcblk on an SDHCI controller) say removable=0;
    // the card in them says it is an SD card.
    let sd_card = read_trim(probe, &disk_dir.join("device/type")).as_deref() == Some("SD");
    if !removable && !sd_card {
        refusals.push(Refusal::NotRemovable { disk: disk.clone() });
    }
    if size < image_size {
        refusals.push(Refusal::TooSmall {
            size,
            need: image_size,
        });
    }

    // The disk, its partitions, and what is stacked on them (dm, md).
    let mut family: Vec<(String, String)> = Vec::new();
    let add = |family: &mut Vec<(String, String)>, name: &str, dir: &Path| {
        if let Some(d) = read_trim(probe, &dir.join("dev")) {
            family.push((d, name.to_owned()));
        }
        for h in probe.list(&dir.join("holders")).unwrap_or_default() {
            if let Some(d) = read_trim(probe, &Path::new("/sys/class/block").join(&h).join("dev")) {
                family.push((d, h));
            }
        }
    };
    add(&mut family, &disk, &disk_dir);
    for entry in probe.list(&disk_dir).unwrap_or_default() {
        if entry.starts_with(disk.as_str()) && entry != disk {
            add(&mut family, &entry, &disk_dir.join(&entry));
        }
    }

    let mountinfo = probe
        .read(Path::new("/proc/self/mountinfo"))
        .map_err(|e| format!("cannot read /proc/self/mountinfo ({e})"))?;
    for m in parse_mountinfo(&mountinfo) {
        let by_source = m
            .source
            .starts_with("/dev/")
            .then(|| probe.kind(Path::new(&m.source)).ok())
            .flatten()
            .and_then(|k| match k {
                NodeKind::Block { major, minor } => Some(format!("{major}:{minor}")),
                _ => None,
            });
        let hit = family
            .iter()
            .find(|(d, _)| *d == m.devno || by_source.as_deref() == Some(d.as_str()));
        if let Some((_, dev)) = hit {
            let (dev, at) = (dev.clone(), m.mount_point.clone());
            let r = if SYSTEM_MOUNTS.contains(&m.mount_point.as_str()) {
                Refusal::RunningSystem { dev, at }
            } else {
                Refusal::Mounted { dev, at }
            };
            if !refusals.contains(&r) {
                refusals.push(r);
            }
        }
    }
    Ok((Target::Block { disk, size }, refusals))
}

fn last_component(p: &Path) -> Option<String> {
    p.file_name().map(|n| n.to_string_lossy().into_owned())
}

fn read_trim(probe: &dyn Probe, p: &Path) -> Option<String> {
    probe.read(p).ok().map(|s| s.trim().to_owned())
}

fn read_number(probe: &dyn Probe, p: &Path) -> Option<u64> {
    read_trim(probe, p)?.parse().ok()
}

struct Mount {
    devno: String,
    mount_point: String,
    source: String,
}

/// `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL…] - FSTYPE SOURCE SUPER`
/// (proc(5)); spaces in paths are `\040`.
fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((head, tail)) = line.split_once(" - ") else {
            continue;
        };
        let f: Vec<&str> = head.split(' ').collect();
        let (Some(devno), Some(mp)) = (f.get(2), f.get(4)) else {
            continue;
        };
        let source = tail.split(' ').nth(1).unwrap_or_default();
        out.push(Mount {
            devno: (*devno).to_owned(),
            mount_point: unescape(mp),
            source: unescape(source),
        });
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A machine made of strings: files, links, directories, device nodes.
    #[derive(Default)]
    pub(crate) struct FakeProbe {
        files: BTreeMap<PathBuf, String>,
        links: BTreeMap<PathBuf, PathBuf>,
        nodes: BTreeMap<PathBuf, NodeKind>,
    }

    impl FakeProbe {
        pub(crate) fn file(mut self, p: &str, text: &str) -> Self {
            self.files.insert(p.into(), text.into());
            self
        }
        fn link(mut self, p: &str, to: &str) -> Self {
            self.links.insert(p.into(), to.into());
            self
        }
        fn node(mut self, p: &str, k: NodeKind) -> Self {
            self.nodes.insert(p.into(), k);
            self
        }

        /// A disk `name` (major:minor) with partitions `name{1..=parts}`
        /// (or `namep1` for names ending in a digit).
        fn disk(mut self, name: &str, major: u32, minor: u32, parts: u32, removable: bool) -> Self {
            let base = format!("/sys/devices/x/block/{name}");
            self = self
                .node(&format!("/dev/{name}"), NodeKind::Block { major, minor })
                .link(&format!("/sys/dev/block/{major}:{minor}"), &base)
                .file(&format!("/sys/dev/block/{major}:{minor}/size"), "2000000")
                .file(
                    &format!("/sys/block/{name}/dev"),
                    &format!("{major}:{minor}"),
                )
                .file(
                    &format!("/sys/block/{name}/removable"),
                    if removable { "1\n" } else { "0\n" },
                );
            let sep = if name.ends_with(|c: char| c.is_ascii_digit()) {
                "p"
            } else {
                ""
            };
            for i in 1..=parts {
                let p = format!("{name}{sep}{i}");
                let (maj, min) = (major, minor + i);
                self = self
                    .node(
                        &format!("/dev/{p}"),
                        NodeKind::Block {
                            major: maj,
                            minor: min,
                        },
                    )
                    .link(
                        &format!("/sys/dev/block/{maj}:{min}"),
                        &format!("{base}/{p}"),
                    )
                    .file(&format!("/sys/dev/block/{maj}:{min}/size"), "1000")
                    .file(
                        &format!("/sys/dev/block/{maj}:{min}/partition"),
                        &i.to_string(),
                    )
                    .file(
                        &format!("/sys/block/{name}/{p}/dev"),
                        &format!("{maj}:{min}"),
                    );
            }
            self
        }

        fn mounts(self, lines: &[&str]) -> Self {
            self.file("/proc/self/mountinfo", &(lines.join("\n") + "\n"))
        }
    }

    impl Probe for FakeProbe {
        fn kind(&self, path: &Path) -> io::Result<NodeKind> {
            if let Some(k) = self.nodes.get(path) {
                return Ok(*k);
            }
            Ok(match self.files.get(path) {
                Some(t) => NodeKind::File {
                    len: t.len() as u64,
                },
                None => NodeKind::Missing,
            })
        }
        fn read(&self, path: &Path) -> io::Result<String> {
            self.files
                .get(path)
                .cloned()
                .ok_or_else(|| io::ErrorKind::NotFound.into())
        }
        fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
            self.links
                .get(path)
                .cloned()
                .ok_or_else(|| io::ErrorKind::NotFound.into())
        }
        fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
            let mut out: Vec<String> = Vec::new();
            for p in self.files.keys().chain(self.links.keys()) {
                if let Ok(rest) = p.strip_prefix(dir) {
                    if let Some(first) = rest.components().next() {
                        let s = first.as_os_str().to_string_lossy().into_owned();
                        if !out.contains(&s) {
                            out.push(s);
                        }
                    }
                }
            }
            Ok(out)
        }
    }

    const ROOT: &str = "27 1 8:2 / / rw,relatime - ext4 /dev/sda2 rw";
    const BOOT: &str = "28 27 8:1 / /boot rw,relatime - vfat /dev/sda1 rw";

    fn machine() -> FakeProbe {
        FakeProbe::default()
            .disk("sda", 8, 0, 2, false)
            .disk("sdb", 8, 16, 2, true)
            .disk("mmcblk0", 179, 0, 2, false)
            .file("/sys/block/mmcblk0/device/type", "SD\n")
    }

    fn refusals(p: &FakeProbe, dev: &str, need: u64) -> Vec<Refusal> {
        check(p, Path::new(dev), need).unwrap().1
    }

    #[test]
    fn a_removable_unmounted_card_is_fine() {
        let p = machine().mounts(&[ROOT, BOOT]);
        let (t, r) = check(&p, Path::new("/dev/sdb"), 1 << 20).unwrap();
        assert_eq!(r, []);
        assert_eq!(
            t,
            Target::Block {
                disk: "sdb".into(),
                size: 2_000_000 * 512
            }
        );
        // A built-in reader's SD card says removable=0 but type SD.
        assert_eq!(refusals(&p, "/dev/mmcblk0", 1 << 20), []);
    }

    #[test]
    fn files_are_always_fine() {
        let p = machine().mounts(&[ROOT]).file("/tmp/card.img", "x");
        assert_eq!(
            check(&p, Path::new("/tmp/card.img"), 1 << 30).unwrap(),
            (Target::File { exists: true }, vec![])
        );
        assert_eq!(
            check(&p, Path::new("/tmp/new.img"), 1 << 30).unwrap(),
            (Target::File { exists: false }, vec![])
        );
        let p = p.node("/dev/tty0", NodeKind::Other);
        assert!(check(&p, Path::new("/dev/tty0"), 1).is_err());
        // A mistyped device name is not created as a file in /dev.
        let err = check(&p, Path::new("/dev/sdx"), 1).unwrap_err();
        assert!(err.contains("no such device"), "{err}");
        let p = p.file("/dev/sdq", "left over");
        assert!(check(&p, Path::new("/dev/sdq"), 1).is_err());
    }

    #[test]
    fn the_system_disk_is_refused_for_every_reason() {
        let p = machine().mounts(&[ROOT, BOOT]);
        let r = refusals(&p, "/dev/sda", 1 << 20);
        assert_eq!(
            r,
            [
                Refusal::NotRemovable { disk: "sda".into() },
                Refusal::RunningSystem {
                    dev: "sda2".into(),
                    at: "/".into()
                },
                Refusal::RunningSystem {
                    dev: "sda1".into(),
                    at: "/boot".into()
                },
            ]
        );
        assert!(
            r[1].to_string().contains("holds the running system"),
            "{}",
            r[1]
        );
    }

    #[test]
    fn a_mounted_partition_is_refused() {
        let p = machine().mounts(&[
            ROOT,
            "40 27 8:18 / /media/op/my\\040card rw - vfat /dev/sdb2 rw",
        ]);
        let r = refusals(&p, "/dev/sdb", 1 << 20);
        assert_eq!(
            r,
            [Refusal::Mounted {
                dev: "sdb2".into(),
                at: "/media/op/my card".into()
            }]
        );
        assert!(r[0].to_string().contains("unmount"));
    }

    #[test]
    fn mounts_found_by_source_and_through_holders() {
        // btrfs reports an anonymous device number; the source names the disk.
        let p = machine().mounts(&[ROOT, "41 27 0:55 / /mnt rw - btrfs /dev/sdb1 rw"]);
        assert_eq!(
            refusals(&p, "/dev/sdb", 1),
            [Refusal::Mounted {
                dev: "sdb1".into(),
                at: "/mnt".into()
            }]
        );
        // Root on LVM: dm-0 sits on sda2.
        let p = machine()
            .file("/sys/block/sda/sda2/holders/dm-0", "")
            .file("/sys/class/block/dm-0/dev", "254:0")
            .mounts(&["27 1 254:0 / / rw - ext4 /dev/mapper/vg-root rw"]);
        assert!(
            refusals(&p, "/dev/sda", 1).contains(&Refusal::RunningSystem {
                dev: "dm-0".into(),
                at: "/".into()
            })
        );
    }

    #[test]
    fn a_partition_and_a_small_card_are_refused() {
        let p = machine().mounts(&[ROOT]);
        assert_eq!(
            refusals(&p, "/dev/sdb1", 1000 * 512),
            [Refusal::Partition {
                part: "sdb1".into(),
                disk: "sdb".into()
            }]
        );
        let need = 2_000_000 * 512 + 1;
        assert_eq!(
            refusals(&p, "/dev/sdb", need),
            [Refusal::TooSmall {
                size: 2_000_000 * 512,
                need
            }]
        );
    }

    #[test]
    fn unreadable_sys_or_proc_is_an_error_not_a_pass() {
        let p = machine(); // no mountinfo
        assert!(check(&p, Path::new("/dev/sdb"), 1).is_err());
        let p = FakeProbe::default()
            .node(
                "/dev/sdz",
                NodeKind::Block {
                    major: 8,
                    minor: 200,
                },
            )
            .mounts(&[ROOT]);
        assert!(check(&p, Path::new("/dev/sdz"), 1).is_err());
    }
}
