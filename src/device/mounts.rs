//! Filesystems PID 1 mounts: the pseudo filesystems first thing at boot, DATA
//! once its block device shows up, and the orderly unmount at shutdown.

use std::time::{Duration, Instant};

use super::sys::{Errno, MsFlags, Sys, SysError};

/// Where DATA is mounted.
pub const DATA_MOUNT: &str = "/data";

/// ext4 options for DATA, chosen for power cuts (docs/storage.md): metadata
/// journalled and data written before the metadata that points at it
/// (`data=ordered`, ext4's default, stated so a kernel default cannot change
/// it), and on a detected inconsistency DATA turns read-only instead of
/// spreading it (`errors=remount-ro`); the board keeps running and says so.
pub const DATA_OPTIONS: &str = "data=ordered,errors=remount-ro";

/// How long DATA's block device may take to appear after boot (the SD/virtio
/// driver probes asynchronously), and how often we look.
pub const DATA_DEVICE_WAIT: Duration = Duration::from_secs(10);
pub const DATA_DEVICE_POLL: Duration = Duration::from_millis(20);

/// How long the board's DATA device may be missing before DATA is looked for
/// on the other disks of its kind (see [`find_data`]).
pub const DATA_SIBLING_GRACE: Duration = Duration::from_secs(2);

/// DATA's ext4 label (`mke2fs -L DATA` at image build).
pub const DATA_LABEL: &[u8] = b"DATA";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountError {
    #[error("mounting {fstype} on {target}: {source}")]
    Pseudo {
        target: &'static str,
        fstype: &'static str,
        source: SysError,
    },
    #[error("creating mount point: {0}")]
    MountPoint(SysError),
    #[error("DATA device {device} did not appear within {waited:?}, nor DATA on another disk of its kind")]
    DeviceMissing { device: String, waited: Duration },
    #[error("DATA device {device} is missing and the DATA label is on several disks ({found}): not guessing which is this board's")]
    DataAmbiguous { device: String, found: String },
    #[error("mounting DATA device {device} (ext4) on {target}: {source}")]
    Data {
        device: String,
        target: String,
        source: SysError,
    },
    #[error("unmounting {target}: {source}")]
    Unmount { target: String, source: SysError },
    #[error("making / read-only: {0}")]
    RootReadOnly(SysError),
}

/// One pseudo filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PseudoMount {
    pub source: &'static str,
    pub target: &'static str,
    pub fstype: &'static str,
    pub flags: MsFlags,
    pub data: Option<&'static str>,
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// The pseudo filesystems, in mount order (/dev before /dev/pts).
pub const PSEUDO_MOUNTS: &[PseudoMount] = &[
    PseudoMount {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
    PseudoMount {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
    PseudoMount {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MsFlags::MS_NOSUID,
        data: Some("mode=0755"),
    },
    PseudoMount {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        data: Some("mode=0620,ptmxmode=0666"),
    },
    PseudoMount {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=0755"),
    },
    PseudoMount {
        source: "tmpfs",
        target: "/tmp",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=1777"),
    },
];

/// Mount every pseudo filesystem. One already mounted (a mount point, or the
/// kernel answers EBUSY) is skipped. A failure does not stop the others: all
/// are tried, each failure is logged, and the first is returned.
pub fn mount_pseudo(sys: &dyn Sys) -> Result<(), MountError> {
    let mut first = None;
    for m in PSEUDO_MOUNTS {
        if let Err(e) = mount_one(sys, m) {
            tracing::error!("{e}");
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

fn mount_one(sys: &dyn Sys, m: &PseudoMount) -> Result<(), MountError> {
    let err = |source| MountError::Pseudo {
        target: m.target,
        fstype: m.fstype,
        source,
    };
    if sys.is_mountpoint(m.target) {
        tracing::debug!(target = m.target, "already mounted");
        return Ok(());
    }
    sys.mkdir_p(m.target, 0o755).map_err(err)?;
    match sys.mount(Some(m.source), m.target, Some(m.fstype), m.flags, m.data) {
        Ok(()) => Ok(()),
        Err(e) if e.errno() == Some(Errno::EBUSY) => Ok(()),
        Err(e) => Err(err(e)),
    }
}

/// Find DATA (see [`find_data`]), then mount it (ext4, `noatime`, no
/// suid/dev nodes) on `target`: the device it mounted. Already mounted
/// there: nothing to do.
pub async fn mount_data(sys: &dyn Sys, device: &str, target: &str) -> Result<String, MountError> {
    mount_data_with(sys, device, target, DATA_DEVICE_WAIT, DATA_DEVICE_POLL).await
}

/// [`mount_data`] with the wait and poll interval given (tests use short ones).
pub async fn mount_data_with(
    sys: &dyn Sys,
    device: &str,
    target: &str,
    wait: Duration,
    poll: Duration,
) -> Result<String, MountError> {
    if sys.is_mountpoint(target) {
        tracing::info!(target, "DATA already mounted");
        return Ok(device.to_owned());
    }
    let device = find_data(sys, device, wait, poll).await?;
    sys.mkdir_p(target, 0o755).map_err(MountError::MountPoint)?;
    let flags = MsFlags::MS_NOATIME | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    sys.mount(
        Some(&device),
        target,
        Some("ext4"),
        flags,
        Some(DATA_OPTIONS),
    )
    .map_err(|source| MountError::Data {
        device: device.clone(),
        target: target.to_owned(),
        source,
    })?;
    tracing::info!(device, target, "DATA mounted");
    Ok(device)
}

/// Where DATA is. The board's device (`outpost.data=`, from the board
/// definition) as soon as it exists. If it stays missing for
/// [`DATA_SIBLING_GRACE`], partition 4 of another disk of the same kind
/// whose ext4 label is DATA: on a Raspberry Pi 4 or 5 the Wi-Fi's SDIO host
/// may probe first and take mmc0, making the SD card mmcblk1 (the device
/// trees have no mmc aliases). Two such disks (another Outpost card in a
/// USB reader) are refused rather than guessed between: DATA is the
/// board's identity.
pub async fn find_data(
    sys: &dyn Sys,
    device: &str,
    wait: Duration,
    poll: Duration,
) -> Result<String, MountError> {
    let start = Instant::now();
    loop {
        if sys.exists(device) {
            return Ok(device.to_owned());
        }
        if start.elapsed() >= DATA_SIBLING_GRACE.min(wait) {
            let found: Vec<String> = sibling_partitions(device)
                .into_iter()
                .filter(|d| sys.exists(d) && has_data_label(sys, d))
                .collect();
            match found.as_slice() {
                [] => {}
                [one] => {
                    tracing::warn!(
                        "DATA device {device} is missing; DATA found by its label on {one}"
                    );
                    return Ok(one.clone());
                }
                many => {
                    return Err(MountError::DataAmbiguous {
                        device: device.to_owned(),
                        found: many.join(", "),
                    })
                }
            }
        }
        if start.elapsed() >= wait {
            return Err(MountError::DeviceMissing {
                device: device.to_owned(),
                waited: wait,
            });
        }
        smol::Timer::after(poll).await;
    }
}

/// Partition 4 of the other disks of `device`'s kind, first few of each:
/// `/dev/mmcblk0p4` → `/dev/mmcblk1p4` …; `/dev/sda4` → `/dev/sdb4` ….
/// None for a name that is not partition 4 of a disk.
pub fn sibling_partitions(device: &str) -> Vec<String> {
    let Some((dir, name)) = device.rsplit_once('/') else {
        return Vec::new();
    };
    let Some(disk) = name.strip_suffix('4') else {
        return Vec::new();
    };
    // `mmcblk0p` / `nvme0n1p`: a disk named by a number, partitions after `p`.
    if let Some(disk) = disk.strip_suffix('p') {
        let digits = disk.bytes().rev().take_while(u8::is_ascii_digit).count();
        let (kind, number) = disk.split_at(disk.len() - digits);
        if kind.is_empty() || number.is_empty() {
            return Vec::new();
        }
        return (0..4)
            .map(|i| format!("{dir}/{kind}{i}p4"))
            .filter(|d| d != device)
            .collect();
    }
    // `sda` / `vda`: a disk named by a letter.
    match disk.split_at(disk.len().saturating_sub(1)) {
        (kind, letter) if !kind.is_empty() && letter.bytes().all(|b| b.is_ascii_lowercase()) => {
            (b'a'..=b'h')
                .map(|c| format!("{dir}/{kind}{}4", char::from(c)))
                .filter(|d| d != device)
                .collect()
        }
        _ => Vec::new(),
    }
}

/// An ext4 superblock (at 1 KiB) labelled DATA.
fn has_data_label(sys: &dyn Sys, device: &str) -> bool {
    const MAGIC: usize = 0x38;
    const LABEL: usize = 0x78;
    let Ok(sb) = sys.read_at(device, 1024, 256) else {
        return false;
    };
    let (Some(magic), Some(label)) = (sb.get(MAGIC..MAGIC + 2), sb.get(LABEL..LABEL + 16)) else {
        return false;
    };
    let end = label.iter().position(|&b| b == 0).unwrap_or(label.len());
    magic == [0x53, 0xef] && label.get(..end) == Some(DATA_LABEL)
}

/// Remount the root filesystem (the initramfs) read-only, once every mount
/// point under it exists. Only DATA, /run and /tmp stay writable.
pub fn root_read_only(sys: &dyn Sys) -> Result<(), MountError> {
    let flags = MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    sys.mount(None, "/", None, flags, None)
        .map_err(MountError::RootReadOnly)?;
    tracing::info!("root filesystem is read-only");
    Ok(())
}

/// Shutdown: flush, then unmount DATA first (it is the only filesystem that
/// must be clean), then the tmpfs mounts. DATA still busy (a service holds a
/// file) is remounted read-only instead, which also leaves it clean. /proc,
/// /sys and /dev stay: they hold nothing and reboot needs nothing from them.
/// All are tried; the first failure is returned.
pub fn unmount_all(sys: &dyn Sys, data_target: &str) -> Result<(), MountError> {
    sys.sync();
    let mut first = None;
    if sys.is_mountpoint(data_target) {
        if let Err(e) = unmount_data(sys, data_target) {
            tracing::error!("{e}");
            first.get_or_insert(e);
        }
    }
    for target in ["/tmp", "/run", "/dev/pts"] {
        if !sys.is_mountpoint(target) {
            continue;
        }
        if let Err(source) = sys.umount(target) {
            // Not fatal: these are in RAM.
            tracing::warn!("unmounting {target}: {source}");
        }
    }
    sys.sync();
    first.map_or(Ok(()), Err)
}

fn unmount_data(sys: &dyn Sys, target: &str) -> Result<(), MountError> {
    match sys.umount(target) {
        Ok(()) => Ok(()),
        Err(e) if e.errno() == Some(Errno::EBUSY) => {
            tracing::warn!("{target} busy; remounting read-only");
            let flags = MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
            sys.mount(None, target, None, flags, None)
                .map_err(|source| MountError::Unmount {
                    target: target.to_owned(),
                    source,
                })
        }
        Err(source) => Err(MountError::Unmount {
            target: target.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::sys::{Call, RecordingSys};

    fn mounted_targets(sys: &RecordingSys) -> Vec<String> {
        sys.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Mount { target, .. } => Some(target),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_failed_pseudo_mount_does_not_stop_the_others() {
        let sys = RecordingSys::new();
        sys.fail("mount", "/sys", Errno::ENODEV);
        let err = mount_pseudo(&sys).unwrap_err();
        assert!(
            matches!(err, MountError::Pseudo { target: "/sys", .. }),
            "{err}"
        );
        assert!(err.to_string().contains("sysfs on /sys"), "{err}");
        assert_eq!(
            mounted_targets(&sys),
            ["/proc", "/sys", "/dev", "/dev/pts", "/run", "/tmp"]
        );
    }

    #[test]
    fn busy_or_mounted_pseudo_filesystems_are_skipped() {
        let sys = RecordingSys::new();
        sys.set_mountpoint("/dev");
        sys.fail("mount", "/proc", Errno::EBUSY);
        mount_pseudo(&sys).unwrap();
        assert_eq!(
            mounted_targets(&sys),
            ["/proc", "/sys", "/dev/pts", "/run", "/tmp"]
        );
    }

    #[test]
    fn pseudo_mounts_have_the_right_options() {
        let sys = RecordingSys::new();
        mount_pseudo(&sys).unwrap();
        let calls = sys.actions();
        assert_eq!(calls[0], Call::MkdirP("/proc".into(), 0o755));
        assert!(calls.contains(&Call::Mount {
            source: Some("tmpfs".into()),
            target: "/tmp".into(),
            fstype: Some("tmpfs".into()),
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            data: Some("mode=1777".into()),
        }));
        assert!(calls.contains(&Call::Mount {
            source: Some("tmpfs".into()),
            target: "/run".into(),
            fstype: Some("tmpfs".into()),
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            data: Some("mode=0755".into()),
        }));
    }

    #[test]
    fn missing_data_device_is_named() {
        let sys = RecordingSys::new();
        let err = smol::block_on(mount_data_with(
            &sys,
            "/dev/vda4",
            "/data",
            Duration::from_millis(30),
            Duration::from_millis(5),
        ))
        .unwrap_err();
        assert!(err.to_string().contains("/dev/vda4"), "{err}");
        assert!(mounted_targets(&sys).is_empty());
    }

    /// An ext4 superblock region (from 1 KiB) with `label`.
    fn ext4_with_label(label: &[u8]) -> Vec<u8> {
        let mut disk = vec![0u8; 4096];
        disk[1024 + 0x38..1024 + 0x3a].copy_from_slice(&[0x53, 0xef]);
        disk[1024 + 0x78..1024 + 0x78 + label.len()].copy_from_slice(label);
        disk
    }

    #[test]
    fn sibling_partitions_are_the_same_kind_of_disk() {
        assert_eq!(
            sibling_partitions("/dev/mmcblk0p4"),
            ["/dev/mmcblk1p4", "/dev/mmcblk2p4", "/dev/mmcblk3p4"]
        );
        assert_eq!(sibling_partitions("/dev/mmcblk1p4")[0], "/dev/mmcblk0p4");
        let sd = sibling_partitions("/dev/sda4");
        assert_eq!((sd[0].as_str(), sd.len()), ("/dev/sdb4", 7));
        assert_eq!(sibling_partitions("/dev/vdb4")[0], "/dev/vda4");
        for not_data in ["/dev/mmcblk0p3", "/dev/sda", "vda4", "/dev/4", "/dev/p4"] {
            assert!(sibling_partitions(not_data).is_empty(), "{not_data}");
        }
    }

    #[test]
    fn data_is_found_by_its_label_when_the_boards_device_is_missing() {
        // The Pi's SDIO host took mmc0: the card is mmcblk1.
        let sys = RecordingSys::new();
        sys.set_exists("/dev/mmcblk1p4");
        sys.set_blob("/dev/mmcblk1p4", ext4_with_label(b"DATA"));
        // Another ext4 that is not DATA is passed over.
        sys.set_exists("/dev/mmcblk2p4");
        sys.set_blob("/dev/mmcblk2p4", ext4_with_label(b"DATAX"));
        let find = || {
            smol::block_on(find_data(
                &sys,
                "/dev/mmcblk0p4",
                DATA_SIBLING_GRACE * 2,
                Duration::from_millis(50),
            ))
        };
        assert_eq!(find().unwrap(), "/dev/mmcblk1p4");
        // A second card with DATA (another Outpost card in a reader): refused.
        sys.set_blob("/dev/mmcblk2p4", ext4_with_label(b"DATA"));
        let err = find().unwrap_err().to_string();
        assert!(
            err.contains("/dev/mmcblk1p4, /dev/mmcblk2p4") && err.contains("/dev/mmcblk0p4"),
            "{err}"
        );
        // The board's own device wins whenever it is there (at once).
        sys.set_exists("/dev/mmcblk0p4");
        let found = find().unwrap();
        assert_eq!(found, "/dev/mmcblk0p4");
    }

    #[test]
    fn failed_data_mount_is_named() {
        let sys = RecordingSys::new();
        sys.set_exists("/dev/vda4");
        sys.fail("mount", "/data", Errno::EINVAL);
        let err = smol::block_on(mount_data(&sys, "/dev/vda4", "/data")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("/dev/vda4") && text.contains("EINVAL"),
            "{text}"
        );
    }

    #[test]
    fn data_waits_for_its_device_then_mounts_noatime() {
        let sys = RecordingSys::new();
        sys.appear_after("/dev/vda4", 3);
        smol::block_on(mount_data(&sys, "/dev/vda4", "/data")).unwrap();
        assert_eq!(
            sys.actions(),
            [
                Call::MkdirP("/data".into(), 0o755),
                Call::Mount {
                    source: Some("/dev/vda4".into()),
                    target: "/data".into(),
                    fstype: Some("ext4".into()),
                    flags: MsFlags::MS_NOATIME | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    data: Some(DATA_OPTIONS.into()),
                }
            ]
        );
        // Second call: already mounted, nothing done.
        smol::block_on(mount_data(&sys, "/dev/vda4", "/data")).unwrap();
        assert_eq!(sys.actions().len(), 2);
    }

    #[test]
    fn unmount_all_syncs_and_does_data_first() {
        let sys = RecordingSys::new();
        mount_pseudo(&sys).unwrap();
        sys.set_exists("/dev/vda4");
        smol::block_on(mount_data(&sys, "/dev/vda4", "/data")).unwrap();
        let before = sys.actions().len();
        unmount_all(&sys, "/data").unwrap();
        assert_eq!(
            sys.actions()[before..],
            [
                Call::Sync,
                Call::Umount("/data".into()),
                Call::Umount("/tmp".into()),
                Call::Umount("/run".into()),
                Call::Umount("/dev/pts".into()),
                Call::Sync,
            ]
        );
    }

    #[test]
    fn root_is_remounted_read_only_and_a_refusal_is_named() {
        let sys = RecordingSys::new();
        root_read_only(&sys).unwrap();
        assert_eq!(
            sys.actions(),
            [Call::Mount {
                source: None,
                target: "/".into(),
                fstype: None,
                flags: MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                data: None,
            }]
        );
        let sys = RecordingSys::new();
        sys.fail("mount", "/", Errno::EINVAL);
        let err = root_read_only(&sys).unwrap_err();
        assert!(err.to_string().contains("read-only") && err.to_string().contains("EINVAL"));
    }

    #[test]
    fn busy_data_is_remounted_read_only() {
        let sys = RecordingSys::new();
        sys.set_mountpoint("/data");
        sys.fail("umount", "/data", Errno::EBUSY);
        unmount_all(&sys, "/data").unwrap();
        assert!(sys.actions().contains(&Call::Mount {
            source: None,
            target: "/data".into(),
            fstype: None,
            flags: MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            data: None,
        }));

        let sys = RecordingSys::new();
        sys.set_mountpoint("/data");
        sys.fail("umount", "/data", Errno::EBUSY);
        sys.fail("mount", "/data", Errno::EBUSY);
        let err = unmount_all(&sys, "/data").unwrap_err();
        assert!(err.to_string().contains("/data"), "{err}");
        assert_eq!(sys.actions().last(), Some(&Call::Sync));
    }
}
