//! Restart and power-off: flush, unmount DATA cleanly, flush again, then ask
//! the kernel. Stopping services first is the supervisor's job.

use super::mounts::{self, DATA_MOUNT};
use super::sys::{RebootMode, Sys, SysError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PowerError {
    #[error("the kernel refused to {mode}: {source}")]
    Refused {
        mode: &'static str,
        source: SysError,
    },
}

fn mode_name(mode: RebootMode) -> &'static str {
    match mode {
        RebootMode::Restart => "restart",
        RebootMode::PowerOff => "power off",
    }
}

/// Shut down: sync, unmount (DATA first, busy DATA remounted read-only), sync,
/// `reboot(2)`. Never returns when the kernel obeys; returns the error when it
/// refuses, so PID 1 logs it and keeps running. An unmount failure is logged
/// and does not stop the reboot: DATA is synced (or read-only) either way, and
/// refusing to reboot would leave a device that asked to restart stuck.
pub fn shutdown(sys: &dyn Sys, mode: RebootMode) -> PowerError {
    shutdown_with(sys, mode, DATA_MOUNT)
}

/// [`shutdown`] with DATA mounted at `data_target`.
pub fn shutdown_with(sys: &dyn Sys, mode: RebootMode, data_target: &str) -> PowerError {
    let name = mode_name(mode);
    tracing::warn!("shutting down: {name}");
    sys.sync();
    if let Err(e) = mounts::unmount_all(sys, data_target) {
        tracing::error!("shutdown continues after: {e}");
    }
    sys.sync();
    let source = sys.reboot(mode);
    let err = PowerError::Refused { mode: name, source };
    tracing::error!("{err}");
    err
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::sys::{Call, Errno, RecordingSys};

    #[test]
    fn refused_reboot_is_returned() {
        let sys = RecordingSys::new();
        sys.fail("reboot", "power-off", Errno::EPERM);
        let err = shutdown(&sys, RebootMode::PowerOff);
        assert!(err.to_string().contains("power off") && err.to_string().contains("EPERM"));
    }

    #[test]
    fn order_is_sync_unmount_sync_reboot_even_when_unmount_fails() {
        let sys = RecordingSys::new();
        sys.set_mountpoint("/data");
        sys.fail("umount", "/data", Errno::EIO);
        let _ = shutdown(&sys, RebootMode::Restart);
        let actions = sys.actions();
        assert_eq!(actions.first(), Some(&Call::Sync));
        let umount = actions
            .iter()
            .position(|c| *c == Call::Umount("/data".into()));
        let reboot = actions
            .iter()
            .position(|c| *c == Call::Reboot(RebootMode::Restart));
        assert!(umount.is_some() && reboot.is_some() && umount < reboot);
        assert_eq!(actions[actions.len() - 2], Call::Sync);
    }
}
