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
    #[error("DATA device {device} did not appear within {waited:?}")]
    DeviceMissing { device: String, waited: Duration },
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

/// Wait for `device` to appear, then mount it (ext4, `noatime`, no suid/dev
/// nodes) on `target`. Already mounted there: nothing to do.
pub async fn mount_data(sys: &dyn Sys, device: &str, target: &str) -> Result<(), MountError> {
    mount_data_with(sys, device, target, DATA_DEVICE_WAIT, DATA_DEVICE_POLL).await
}

/// [`mount_data`] with the wait and poll interval given (tests use short ones).
pub async fn mount_data_with(
    sys: &dyn Sys,
    device: &str,
    target: &str,
    wait: Duration,
    poll: Duration,
) -> Result<(), MountError> {
    if sys.is_mountpoint(target) {
        tracing::info!(target, "DATA already mounted");
        return Ok(());
    }
    wait_for_device(sys, device, wait, poll).await?;
    sys.mkdir_p(target, 0o755).map_err(MountError::MountPoint)?;
    let flags = MsFlags::MS_NOATIME | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    sys.mount(
        Some(device),
        target,
        Some("ext4"),
        flags,
        Some(DATA_OPTIONS),
    )
    .map_err(|source| MountError::Data {
        device: device.to_owned(),
        target: target.to_owned(),
        source,
    })?;
    tracing::info!(device, target, "DATA mounted");
    Ok(())
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

/// Poll for a device node: drivers probe asynchronously, so the node may show
/// up a moment after the module loads.
pub async fn wait_for_device(
    sys: &dyn Sys,
    device: &str,
    wait: Duration,
    poll: Duration,
) -> Result<(), MountError> {
    let start = Instant::now();
    loop {
        if sys.exists(device) {
            return Ok(());
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
