//! The syscall seam: every operation boot and shutdown perform on the kernel
//! (mount, module load, hostname, reboot, wait) goes through [`Sys`], so the
//! boot steps can be tested against [`RecordingSys`] on any host, unprivileged
//! (youki's `syscall/syscall.rs` + `syscall/test.rs` shape).
//!
//! [`RealSys`] is the device backend. It is built on nix/rustix safe wrappers;
//! the `unsafe` in this file is the ioctls no safe wrapper covers: the
//! watchdog's ([`watchdog_set_timeout`]), BLKPG, EXT4_IOC_RESIZE_FS and the
//! GPIO character device's ([`GpioLine`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

pub use nix::errno::Errno;
pub use nix::mount::MsFlags;

/// `finit_module` flag: the file is compressed and the kernel decompresses it
/// (Linux ≥ 5.17 with `CONFIG_MODULE_DECOMPRESS`); not in nix's flag set.
const MODULE_INIT_COMPRESSED_FILE: u32 = 4;

/// A failed syscall, naming the operation and what it was applied to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SysError {
    #[error("{op} `{target}`: {errno}")]
    Call {
        op: &'static str,
        target: String,
        errno: Errno,
    },
    #[error("`{path}` is larger than the {limit}-byte limit for this file")]
    TooLarge { path: String, limit: usize },
    #[error("`{path}` is not UTF-8 text")]
    NotUtf8 { path: String },
    #[error("{op}: argument `{arg}` contains a NUL byte")]
    Nul { op: &'static str, arg: String },
}

impl SysError {
    pub fn call(op: &'static str, target: &str, errno: Errno) -> Self {
        SysError::Call {
            op,
            target: target.to_owned(),
            errno,
        }
    }

    /// The errno of a failed call, if this is one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            SysError::Call { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

fn io_errno(err: &std::io::Error) -> Errno {
    err.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}

/// What `reboot(2)` should do once everything is synced and unmounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebootMode {
    Restart,
    PowerOff,
}

/// Outcome of a successful `finit_module`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleLoad {
    Loaded,
    /// The kernel already had it (EEXIST): not an error.
    AlreadyLoaded,
}

/// An exited child seen by [`Sys::wait_peek_exited`] (still a zombie: WNOWAIT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exited {
    pub pid: i32,
}

/// The kernel operations PID 1 needs. Object safe; every method is a single,
/// short syscall (or a bounded small-file read), safe to call from a task.
pub trait Sys: Send + Sync {
    /// `mount(2)`. `None` source/fstype/data are passed as NULL.
    fn mount(
        &self,
        source: Option<&str>,
        target: &str,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), SysError>;
    /// `umount(2)` (no flags).
    fn umount(&self, target: &str) -> Result<(), SysError>;
    /// Create `path` and its parents with `mode`; an existing directory is fine.
    fn mkdir_p(&self, path: &str, mode: u32) -> Result<(), SysError>;
    /// Load the module at `path` with `params` ("" for none). EEXIST is
    /// [`ModuleLoad::AlreadyLoaded`].
    fn finit_module(&self, path: &str, params: &str) -> Result<ModuleLoad, SysError>;
    fn sethostname(&self, name: &str) -> Result<(), SysError>;
    /// `reboot(2)`. Returns only when the kernel refused.
    fn reboot(&self, mode: RebootMode) -> SysError;
    fn sync(&self);
    /// Read a small text file, refusing one larger than `limit` bytes.
    fn read_to_string(&self, path: &str, limit: usize) -> Result<String, SysError>;
    /// Whether `path` exists (follows symlinks: a device node or a link to one).
    fn exists(&self, path: &str) -> bool;
    /// Whether `path` is the root of a mount (its device differs from its parent's).
    fn is_mountpoint(&self, path: &str) -> bool;
    /// `uname -r`.
    fn kernel_release(&self) -> Result<String, SysError>;
    /// `waitid(P_ALL, WEXITED | WNOHANG | WNOWAIT)`: an exited child, left
    /// unreaped, or `None` when no child has exited (or there are no children).
    fn wait_peek_exited(&self) -> Result<Option<Exited>, SysError>;
    /// `waitpid(pid, WNOHANG)`: reap that one child.
    fn wait_reap(&self, pid: i32) -> Result<(), SysError>;
    /// Read exactly `len` bytes at `offset` of a file or block device
    /// (`len` is the caller's bounded constant).
    fn read_at(&self, path: &str, offset: u64, len: usize) -> Result<Vec<u8>, SysError>;
    /// Write `bytes` at `offset` of a file or block device, then fsync it.
    fn write_at_sync(&self, path: &str, offset: u64, bytes: &[u8]) -> Result<(), SysError>;
    /// `BLKPG_RESIZE_PARTITION` on the whole disk `disk`: partition `number`
    /// now spans `length` bytes from `start` (bytes; `start` must not change).
    fn resize_partition(
        &self,
        disk: &str,
        number: i32,
        start: u64,
        length: u64,
    ) -> Result<(), SysError>;
    /// `EXT4_IOC_RESIZE_FS` on the ext4 filesystem mounted at `mountpoint`:
    /// grow it online to `blocks` filesystem blocks.
    fn resize_ext4(&self, mountpoint: &str, blocks: u64) -> Result<(), SysError>;
}

/// The device backend: real syscalls through nix/rustix.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealSys;

fn cstring(op: &'static str, arg: &str) -> Result<CString, SysError> {
    CString::new(arg).map_err(|_| SysError::Nul {
        op,
        arg: arg.escape_debug().to_string(),
    })
}

impl Sys for RealSys {
    fn mount(
        &self,
        source: Option<&str>,
        target: &str,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), SysError> {
        nix::mount::mount(source, target, fstype, flags, data)
            .map_err(|e| SysError::call("mount", target, e))
    }

    fn umount(&self, target: &str) -> Result<(), SysError> {
        nix::mount::umount(target).map_err(|e| SysError::call("umount", target, e))
    }

    fn mkdir_p(&self, path: &str, mode: u32) -> Result<(), SysError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(path)
            .map_err(|e| SysError::call("mkdir", path, io_errno(&e)))
    }

    fn finit_module(&self, path: &str, params: &str) -> Result<ModuleLoad, SysError> {
        use nix::kmod::ModuleInitFlags;
        let params = cstring("finit_module", params)?;
        let file = File::open(path).map_err(|e| SysError::call("open", path, io_errno(&e)))?;
        let compressed = [".ko.xz", ".ko.zst", ".ko.gz"]
            .iter()
            .any(|ext| path.ends_with(ext));
        let flags = if compressed {
            ModuleInitFlags::from_bits_retain(MODULE_INIT_COMPRESSED_FILE)
        } else {
            ModuleInitFlags::empty()
        };
        match nix::kmod::finit_module(&file, &params, flags) {
            Ok(()) => Ok(ModuleLoad::Loaded),
            Err(Errno::EEXIST) => Ok(ModuleLoad::AlreadyLoaded),
            Err(e) => Err(SysError::call("finit_module", path, e)),
        }
    }

    fn sethostname(&self, name: &str) -> Result<(), SysError> {
        nix::unistd::sethostname(name).map_err(|e| SysError::call("sethostname", name, e))
    }

    fn reboot(&self, mode: RebootMode) -> SysError {
        use nix::sys::reboot::RebootMode as Rb;
        let (rb, what) = match mode {
            RebootMode::Restart => (Rb::RB_AUTOBOOT, "restart"),
            RebootMode::PowerOff => (Rb::RB_POWER_OFF, "power-off"),
        };
        match nix::sys::reboot::reboot(rb) {
            Err(e) => SysError::call("reboot", what, e),
            Ok(never) => match never {},
        }
    }

    fn sync(&self) {
        nix::unistd::sync();
    }

    fn read_to_string(&self, path: &str, limit: usize) -> Result<String, SysError> {
        let file = File::open(path).map_err(|e| SysError::call("open", path, io_errno(&e)))?;
        // Files under /proc and /sys report size 0: read, do not trust metadata.
        let mut bytes = Vec::new();
        file.take(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| SysError::call("read", path, io_errno(&e)))?;
        if bytes.len() > limit {
            return Err(SysError::TooLarge {
                path: path.to_owned(),
                limit,
            });
        }
        String::from_utf8(bytes).map_err(|_| SysError::NotUtf8 {
            path: path.to_owned(),
        })
    }

    fn exists(&self, path: &str) -> bool {
        Path::new(path).exists()
    }

    fn is_mountpoint(&self, path: &str) -> bool {
        let path = Path::new(path);
        let Ok(meta) = std::fs::metadata(path) else {
            return false;
        };
        match path.parent() {
            // "/" is always a mount point.
            None => true,
            Some(parent) => {
                let parent = if parent.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    parent
                };
                std::fs::metadata(parent).is_ok_and(|p| p.dev() != meta.dev())
            }
        }
    }

    fn kernel_release(&self) -> Result<String, SysError> {
        let uts = rustix::system::uname();
        uts.release()
            .to_str()
            .map(str::to_owned)
            .map_err(|_| SysError::NotUtf8 {
                path: "uname release".to_owned(),
            })
    }

    fn wait_peek_exited(&self) -> Result<Option<Exited>, SysError> {
        use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        match waitid(Id::All, flags) {
            Ok(WaitStatus::Exited(pid, _)) | Ok(WaitStatus::Signaled(pid, _, _)) => {
                Ok(Some(Exited { pid: pid.as_raw() }))
            }
            Ok(_) => Ok(None),
            Err(Errno::ECHILD) => Ok(None),
            Err(e) => Err(SysError::call("waitid", "P_ALL", e)),
        }
    }

    fn wait_reap(&self, pid: i32) -> Result<(), SysError> {
        use nix::sys::wait::{waitpid, WaitPidFlag};
        use nix::unistd::Pid;
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(_) => Ok(()),
            Err(e) => Err(SysError::call("waitpid", &pid.to_string(), e)),
        }
    }

    fn read_at(&self, path: &str, offset: u64, len: usize) -> Result<Vec<u8>, SysError> {
        use std::os::unix::fs::FileExt;
        let file = File::open(path).map_err(|e| SysError::call("open", path, io_errno(&e)))?;
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, offset)
            .map_err(|e| SysError::call("read", path, io_errno(&e)))?;
        Ok(buf)
    }

    fn write_at_sync(&self, path: &str, offset: u64, bytes: &[u8]) -> Result<(), SysError> {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| SysError::call("open", path, io_errno(&e)))?;
        file.write_all_at(bytes, offset)
            .map_err(|e| SysError::call("write", path, io_errno(&e)))?;
        file.sync_all()
            .map_err(|e| SysError::call("fsync", path, io_errno(&e)))
    }

    fn resize_partition(
        &self,
        disk: &str,
        number: i32,
        start: u64,
        length: u64,
    ) -> Result<(), SysError> {
        let file = File::open(disk).map_err(|e| SysError::call("open", disk, io_errno(&e)))?;
        let (Ok(start), Ok(length)) = (i64::try_from(start), i64::try_from(length)) else {
            return Err(SysError::call(
                "BLKPG_RESIZE_PARTITION",
                disk,
                Errno::EINVAL,
            ));
        };
        blk::resize_partition(&file, number, start, length)
            .map_err(|e| SysError::call("BLKPG_RESIZE_PARTITION", disk, e))
    }

    fn resize_ext4(&self, mountpoint: &str, blocks: u64) -> Result<(), SysError> {
        let dir =
            File::open(mountpoint).map_err(|e| SysError::call("open", mountpoint, io_errno(&e)))?;
        blk::resize_ext4(&dir, blocks)
            .map_err(|e| SysError::call("EXT4_IOC_RESIZE_FS", mountpoint, e))
    }
}

/// One call seen by [`RecordingSys`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Mount {
        source: Option<String>,
        target: String,
        fstype: Option<String>,
        flags: MsFlags,
        data: Option<String>,
    },
    Umount(String),
    MkdirP(String, u32),
    FinitModule {
        path: String,
        params: String,
    },
    SetHostname(String),
    Reboot(RebootMode),
    Sync,
    ReadToString(String),
    Exists(String),
    IsMountpoint(String),
    KernelRelease,
    WaitPeekExited,
    WaitReap(i32),
    ReadAt(String, u64, usize),
    WriteAt(String, u64, Vec<u8>),
    ResizePartition {
        disk: String,
        number: i32,
        start: u64,
        length: u64,
    },
    ResizeExt4(String, u64),
}

impl Call {
    /// The operation name used by [`RecordingSys::fail`] scripts.
    pub fn op(&self) -> &'static str {
        match self {
            Call::Mount { .. } => "mount",
            Call::Umount(_) => "umount",
            Call::MkdirP(..) => "mkdir",
            Call::FinitModule { .. } => "finit_module",
            Call::SetHostname(_) => "sethostname",
            Call::Reboot(_) => "reboot",
            Call::Sync => "sync",
            Call::ReadToString(_) => "read",
            Call::Exists(_) => "exists",
            Call::IsMountpoint(_) => "is_mountpoint",
            Call::KernelRelease => "uname",
            Call::WaitPeekExited => "waitid",
            Call::WaitReap(_) => "waitpid",
            Call::ReadAt(..) => "read_at",
            Call::WriteAt(..) => "write_at",
            Call::ResizePartition { .. } => "blkpg",
            Call::ResizeExt4(..) => "ext4_resize",
        }
    }
}

#[derive(Debug, Default)]
struct Script {
    calls: Vec<Call>,
    /// (op, target) → errors returned by the next matching calls, in order.
    failures: HashMap<(&'static str, String), VecDeque<Errno>>,
    files: HashMap<String, String>,
    /// path → how many more `exists` checks answer `false` before `true`.
    appears_after: HashMap<String, usize>,
    existing: HashSet<String>,
    mountpoints: HashSet<String>,
    /// Modules the kernel already has: `finit_module` answers AlreadyLoaded.
    loaded_modules: HashSet<String>,
    exited: VecDeque<i32>,
    release: String,
    /// Binary files and block devices for `read_at` / `write_at_sync`.
    blobs: HashMap<String, Vec<u8>>,
}

/// A fake [`Sys`] that records every call and answers from a script: files to
/// read, paths that exist (now or after N checks), errors to return. Calls
/// without a scripted error succeed. Used by unit tests across `device`, and
/// by integration tests (hence `pub`, not `cfg(test)`).
#[derive(Debug, Default)]
pub struct RecordingSys {
    script: Mutex<Script>,
}

impl RecordingSys {
    pub fn new() -> Self {
        let sys = Self::default();
        sys.lock().release = "6.1.0-test".to_owned();
        sys
    }

    fn lock(&self) -> MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The calls so far, leaving out the read-only queries (reads, `exists`,
    /// `is_mountpoint`, `uname`, `waitid`): what the code *did*.
    pub fn actions(&self) -> Vec<Call> {
        self.lock()
            .calls
            .iter()
            .filter(|c| {
                !matches!(
                    c,
                    Call::ReadToString(_)
                        | Call::Exists(_)
                        | Call::IsMountpoint(_)
                        | Call::KernelRelease
                        | Call::WaitPeekExited
                        | Call::ReadAt(..)
                )
            })
            .cloned()
            .collect()
    }

    /// The next call of `op` ("mount", "umount", "mkdir", "finit_module",
    /// "sethostname", "reboot", "read", "waitid", "waitpid") on `target` fails
    /// with `errno`. Scripted once per call: script it N times for N failures.
    pub fn fail(&self, op: &'static str, target: &str, errno: Errno) -> &Self {
        self.lock()
            .failures
            .entry((op, target.to_owned()))
            .or_default()
            .push_back(errno);
        self
    }

    pub fn set_file(&self, path: &str, content: &str) -> &Self {
        self.lock()
            .files
            .insert(path.to_owned(), content.to_owned());
        self
    }

    /// `path` exists from now on.
    pub fn set_exists(&self, path: &str) -> &Self {
        self.lock().existing.insert(path.to_owned());
        self
    }

    /// `path` is absent for the next `checks` calls of `exists`, then present.
    pub fn appear_after(&self, path: &str, checks: usize) -> &Self {
        self.lock().appears_after.insert(path.to_owned(), checks);
        self
    }

    pub fn set_mountpoint(&self, path: &str) -> &Self {
        self.lock().mountpoints.insert(path.to_owned());
        self
    }

    /// The module file at `path` is already in the kernel (EEXIST).
    pub fn set_module_loaded(&self, path: &str) -> &Self {
        self.lock().loaded_modules.insert(path.to_owned());
        self
    }

    pub fn set_kernel_release(&self, release: &str) -> &Self {
        self.lock().release = release.to_owned();
        self
    }

    /// Children that `wait_peek_exited` reports as exited, in order; each is
    /// reported until `wait_reap` reaps it.
    pub fn push_exited(&self, pid: i32) -> &Self {
        self.lock().exited.push_back(pid);
        self
    }

    /// The bytes `read_at` reads from `path` (a fake disk or partition).
    pub fn set_blob(&self, path: &str, bytes: Vec<u8>) -> &Self {
        self.lock().blobs.insert(path.to_owned(), bytes);
        self
    }

    /// The bytes of a fake disk, after the writes made to it.
    pub fn blob(&self, path: &str) -> Option<Vec<u8>> {
        self.lock().blobs.get(path).cloned()
    }

    /// Pids still waiting to be reaped.
    pub fn zombies(&self) -> Vec<i32> {
        self.lock().exited.iter().copied().collect()
    }

    fn record(&self, call: Call, target: &str) -> Result<(), SysError> {
        let op = call.op();
        let mut script = self.lock();
        script.calls.push(call);
        let key = (op, target.to_owned());
        if let Some(errno) = script.failures.get_mut(&key).and_then(VecDeque::pop_front) {
            return Err(SysError::call(op, target, errno));
        }
        Ok(())
    }
}

impl Sys for RecordingSys {
    fn mount(
        &self,
        source: Option<&str>,
        target: &str,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), SysError> {
        let call = Call::Mount {
            source: source.map(str::to_owned),
            target: target.to_owned(),
            fstype: fstype.map(str::to_owned),
            flags,
            data: data.map(str::to_owned),
        };
        self.record(call, target)?;
        if !flags.contains(MsFlags::MS_REMOUNT) {
            self.lock().mountpoints.insert(target.to_owned());
        }
        Ok(())
    }

    fn umount(&self, target: &str) -> Result<(), SysError> {
        self.record(Call::Umount(target.to_owned()), target)?;
        self.lock().mountpoints.remove(target);
        Ok(())
    }

    fn mkdir_p(&self, path: &str, mode: u32) -> Result<(), SysError> {
        self.record(Call::MkdirP(path.to_owned(), mode), path)
    }

    fn finit_module(&self, path: &str, params: &str) -> Result<ModuleLoad, SysError> {
        let call = Call::FinitModule {
            path: path.to_owned(),
            params: params.to_owned(),
        };
        self.record(call, path)?;
        let newly = self.lock().loaded_modules.insert(path.to_owned());
        Ok(if newly {
            ModuleLoad::Loaded
        } else {
            ModuleLoad::AlreadyLoaded
        })
    }

    fn sethostname(&self, name: &str) -> Result<(), SysError> {
        self.record(Call::SetHostname(name.to_owned()), name)
    }

    fn reboot(&self, mode: RebootMode) -> SysError {
        let what = match mode {
            RebootMode::Restart => "restart",
            RebootMode::PowerOff => "power-off",
        };
        match self.record(Call::Reboot(mode), what) {
            Err(e) => e,
            // A fake cannot reboot: report that like a kernel refusal would be.
            Ok(()) => SysError::call("reboot", what, Errno::ENOSYS),
        }
    }

    fn sync(&self) {
        self.lock().calls.push(Call::Sync);
    }

    fn read_to_string(&self, path: &str, limit: usize) -> Result<String, SysError> {
        self.record(Call::ReadToString(path.to_owned()), path)?;
        let content = self
            .lock()
            .files
            .get(path)
            .cloned()
            .ok_or_else(|| SysError::call("open", path, Errno::ENOENT))?;
        if content.len() > limit {
            return Err(SysError::TooLarge {
                path: path.to_owned(),
                limit,
            });
        }
        Ok(content)
    }

    fn exists(&self, path: &str) -> bool {
        let mut script = self.lock();
        script.calls.push(Call::Exists(path.to_owned()));
        if script.existing.contains(path) || script.files.contains_key(path) {
            return true;
        }
        match script.appears_after.get_mut(path) {
            Some(0) => true,
            Some(n) => {
                *n -= 1;
                false
            }
            None => false,
        }
    }

    fn is_mountpoint(&self, path: &str) -> bool {
        let mut script = self.lock();
        script.calls.push(Call::IsMountpoint(path.to_owned()));
        script.mountpoints.contains(path)
    }

    fn kernel_release(&self) -> Result<String, SysError> {
        self.record(Call::KernelRelease, "")?;
        Ok(self.lock().release.clone())
    }

    fn wait_peek_exited(&self) -> Result<Option<Exited>, SysError> {
        self.record(Call::WaitPeekExited, "P_ALL")?;
        Ok(self.lock().exited.front().map(|&pid| Exited { pid }))
    }

    fn wait_reap(&self, pid: i32) -> Result<(), SysError> {
        self.record(Call::WaitReap(pid), &pid.to_string())?;
        let mut script = self.lock();
        let before = script.exited.len();
        script.exited.retain(|&p| p != pid);
        if script.exited.len() == before {
            return Err(SysError::call("waitpid", &pid.to_string(), Errno::ECHILD));
        }
        Ok(())
    }

    fn read_at(&self, path: &str, offset: u64, len: usize) -> Result<Vec<u8>, SysError> {
        self.record(Call::ReadAt(path.to_owned(), offset, len), path)?;
        let script = self.lock();
        let blob = script
            .blobs
            .get(path)
            .ok_or_else(|| SysError::call("open", path, Errno::ENOENT))?;
        usize::try_from(offset)
            .ok()
            .and_then(|o| blob.get(o..o.checked_add(len)?))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| SysError::call("read", path, Errno::EIO))
    }

    fn write_at_sync(&self, path: &str, offset: u64, bytes: &[u8]) -> Result<(), SysError> {
        self.record(Call::WriteAt(path.to_owned(), offset, bytes.to_vec()), path)?;
        let mut script = self.lock();
        let blob = script.blobs.entry(path.to_owned()).or_default();
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(bytes.len());
        if blob.len() < end {
            blob.resize(end, 0);
        }
        if let Some(dst) = blob.get_mut(start..end) {
            dst.copy_from_slice(bytes);
        }
        Ok(())
    }

    fn resize_partition(
        &self,
        disk: &str,
        number: i32,
        start: u64,
        length: u64,
    ) -> Result<(), SysError> {
        let call = Call::ResizePartition {
            disk: disk.to_owned(),
            number,
            start,
            length,
        };
        self.record(call, disk)
    }

    fn resize_ext4(&self, mountpoint: &str, blocks: u64) -> Result<(), SysError> {
        self.record(Call::ResizeExt4(mountpoint.to_owned(), blocks), mountpoint)
    }
}

/// `WDIOC_SETTIMEOUT` on an open watchdog device: ask for `secs` seconds,
/// get back what the driver set (it may round or clamp).
pub fn watchdog_set_timeout(dev: &impl std::os::fd::AsRawFd, secs: i32) -> Result<i32, Errno> {
    wdioc::set_timeout(dev.as_raw_fd(), secs)
}

#[allow(unsafe_code)]
mod wdioc {
    use nix::libc::c_int;
    use std::os::fd::RawFd;

    // <linux/watchdog.h>: #define WDIOC_SETTIMEOUT _IOWR(WATCHDOG_IOCTL_BASE, 6, int)
    nix::ioctl_readwrite!(wdioc_settimeout, b'W', 6, c_int);

    pub(super) fn set_timeout(fd: RawFd, secs: i32) -> Result<i32, nix::errno::Errno> {
        let mut value: c_int = secs;
        // SAFETY: `fd` is borrowed from an open file for the whole call, and
        // WDIOC_SETTIMEOUT reads and writes exactly one `int` through the
        // pointer, which points at `value`, alive on this stack frame.
        unsafe { wdioc_settimeout(fd, &mut value) }?;
        Ok(value)
    }
}

/// Prepare a service's child, in the child between fork and exec: it dies
/// with its supervisor (PR_SET_PDEATHSIG: in host mode the daemon can be
/// killed; a service must not outlive it), and, with `procs` (its cgroup's
/// `cgroup.procs`, opened by the parent), it joins that cgroup by writing
/// "0" — so the program never runs outside its limits, not even for the
/// instant a write from the parent after the spawn would leave.
pub fn service_pre_exec(command: &mut std::process::Command, procs: Option<std::os::fd::OwnedFd>) {
    child_setup::pre_exec(command, procs);
}

#[allow(unsafe_code)]
mod child_setup {
    use std::os::fd::{AsFd, OwnedFd};
    use std::os::unix::process::CommandExt as _;

    pub(super) fn pre_exec(command: &mut std::process::Command, procs: Option<OwnedFd>) {
        let hook = move || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::Kill))?;
            if let Some(fd) = &procs {
                rustix::io::write(fd.as_fd(), b"0")?;
            }
            Ok(())
        };
        // SAFETY: the hook runs in the forked child before exec, where only
        // async-signal-safe calls are allowed: one prctl(2) and one write(2)
        // on an fd opened before the fork; it allocates nothing and takes no
        // lock (rustix's errno converts to io::Error without allocating). A
        // failure fails the spawn; the error reaches the parent.
        unsafe {
            command.pre_exec(hook);
        }
    }
}

/// Block-layer and ext4 ioctls (no safe wrapper covers them).
#[allow(unsafe_code)]
mod blk {
    use nix::libc::{c_char, c_int, c_longlong, c_void};
    use std::os::fd::AsRawFd;

    // <linux/blkpg.h>
    const BLKPG_RESIZE_PARTITION: c_int = 3;
    const BLKPG_DEVNAMELTH: usize = 64;
    const BLKPG_VOLNAMELTH: usize = 64;

    #[repr(C)]
    struct BlkpgPartition {
        start: c_longlong,
        length: c_longlong,
        pno: c_int,
        devname: [c_char; BLKPG_DEVNAMELTH],
        volname: [c_char; BLKPG_VOLNAMELTH],
    }

    #[repr(C)]
    struct BlkpgIoctlArg {
        op: c_int,
        flags: c_int,
        datalen: c_int,
        data: *mut c_void,
    }

    // #define BLKPG _IO(0x12,105), though it takes a pointer.
    nix::ioctl_write_ptr_bad!(blkpg, nix::request_code_none!(0x12, 105), BlkpgIoctlArg);
    // #define EXT4_IOC_RESIZE_FS _IOW('f', 16, __u64)
    nix::ioctl_write_ptr!(ext4_ioc_resize_fs, b'f', 16, u64);

    pub(super) fn resize_partition(
        disk: &impl AsRawFd,
        number: c_int,
        start: c_longlong,
        length: c_longlong,
    ) -> Result<(), nix::errno::Errno> {
        let mut part = BlkpgPartition {
            start,
            length,
            pno: number,
            devname: [0; BLKPG_DEVNAMELTH],
            volname: [0; BLKPG_VOLNAMELTH],
        };
        let arg = BlkpgIoctlArg {
            op: BLKPG_RESIZE_PARTITION,
            flags: 0,
            datalen: c_int::try_from(std::mem::size_of::<BlkpgPartition>()).unwrap_or(0),
            data: std::ptr::addr_of_mut!(part).cast(),
        };
        // SAFETY: the fd is borrowed from an open file for the whole call;
        // BLKPG reads one `blkpg_ioctl_arg` through the pointer, and through
        // its `data` one `blkpg_partition` of `datalen` bytes: both live on
        // this stack frame until the call returns.
        unsafe { blkpg(disk.as_raw_fd(), &arg) }?;
        Ok(())
    }

    pub(super) fn resize_ext4(dir: &impl AsRawFd, blocks: u64) -> Result<(), nix::errno::Errno> {
        // SAFETY: the fd is borrowed from an open file for the whole call;
        // EXT4_IOC_RESIZE_FS reads one u64 (the new block count) through the
        // pointer, which points at `blocks` on this stack frame.
        unsafe { ext4_ioc_resize_fs(dir.as_raw_fd(), &blocks) }?;
        Ok(())
    }
}

/// How a GPIO line is requested (`GPIO_V2_LINE_FLAG_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpioRequest {
    pub line: u32,
    pub output: bool,
    /// The kernel inverts the level: "active" (1) is electrically low.
    pub active_low: bool,
    /// Ask for the pull-up bias (a button to ground); drivers without bias
    /// control ignore it.
    pub pull_up: bool,
}

/// One requested GPIO line (GPIO character device, uAPI v2). Values are
/// logical: with `active_low` the kernel inverts them. Dropping it releases
/// the line.
#[derive(Debug)]
pub struct GpioLine {
    fd: std::os::fd::OwnedFd,
}

impl GpioLine {
    /// Request `req.line` of the chip `/dev/gpiochipN` at `chip`, naming
    /// `consumer` (shown by `gpioinfo`).
    pub fn request(chip: &str, req: GpioRequest, consumer: &str) -> Result<GpioLine, SysError> {
        let f = File::open(chip).map_err(|e| SysError::call("open", chip, io_errno(&e)))?;
        // The line is part of what failed (EBUSY: the kernel owns it).
        let fd = gpio::request_line(&f, req, consumer).map_err(|e| SysError::Call {
            op: "GPIO_V2_GET_LINE",
            target: format!("{chip} line {}", req.line),
            errno: e,
        })?;
        Ok(GpioLine { fd })
    }

    /// Drive an output line.
    pub fn set(&self, active: bool) -> Result<(), SysError> {
        gpio::set_value(&self.fd, active)
            .map_err(|e| SysError::call("GPIO_V2_LINE_SET_VALUES", "line", e))
    }

    /// Read the line.
    pub fn get(&self) -> Result<bool, SysError> {
        gpio::get_value(&self.fd).map_err(|e| SysError::call("GPIO_V2_LINE_GET_VALUES", "line", e))
    }
}

/// The label of the GPIO chip at `chip` (`pinctrl-bcm2835`): chip numbers
/// follow probe order, labels do not.
pub fn gpio_chip_label(chip: &str) -> Result<String, SysError> {
    let f = File::open(chip).map_err(|e| SysError::call("open", chip, io_errno(&e)))?;
    gpio::chip_label(&f).map_err(|e| SysError::call("GPIO_GET_CHIPINFO", chip, e))
}

/// The GPIO character device uAPI v2 (`<linux/gpio.h>`), by hand: gpio-cdev
/// and linux-embedded-hal bring far more than PID 1 needs.
#[allow(unsafe_code)]
mod gpio {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    use nix::errno::Errno;

    pub(super) const GPIO_MAX_NAME_SIZE: usize = 32;
    pub(super) const GPIO_V2_LINES_MAX: usize = 64;
    pub(super) const GPIO_V2_LINE_NUM_ATTRS_MAX: usize = 10;
    pub(super) const FLAG_ACTIVE_LOW: u64 = 1 << 1;
    pub(super) const FLAG_INPUT: u64 = 1 << 2;
    pub(super) const FLAG_OUTPUT: u64 = 1 << 3;
    pub(super) const FLAG_BIAS_PULL_UP: u64 = 1 << 8;

    /// `struct gpio_v2_line_attribute`: id, padding, then a u64 union.
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    pub(super) struct LineAttribute {
        pub(super) id: u32,
        pub(super) padding: u32,
        pub(super) value: u64,
    }

    /// `struct gpio_v2_line_config_attribute`.
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    pub(super) struct LineConfigAttribute {
        pub(super) attr: LineAttribute,
        pub(super) mask: u64,
    }

    /// `struct gpio_v2_line_config`.
    #[repr(C)]
    pub(super) struct LineConfig {
        pub(super) flags: u64,
        pub(super) num_attrs: u32,
        pub(super) padding: [u32; 5],
        pub(super) attrs: [LineConfigAttribute; GPIO_V2_LINE_NUM_ATTRS_MAX],
    }

    /// `struct gpio_v2_line_request`.
    #[repr(C)]
    pub(super) struct LineRequest {
        pub(super) offsets: [u32; GPIO_V2_LINES_MAX],
        pub(super) consumer: [u8; GPIO_MAX_NAME_SIZE],
        pub(super) config: LineConfig,
        pub(super) num_lines: u32,
        pub(super) event_buffer_size: u32,
        pub(super) padding: [u32; 5],
        pub(super) fd: i32,
    }

    /// `struct gpio_v2_line_values`: bit i is line i of the request.
    #[repr(C)]
    #[derive(Default)]
    pub(super) struct LineValues {
        pub(super) bits: u64,
        pub(super) mask: u64,
    }

    /// `struct gpiochip_info`.
    #[repr(C)]
    pub(super) struct ChipInfo {
        pub(super) name: [u8; GPIO_MAX_NAME_SIZE],
        pub(super) label: [u8; GPIO_MAX_NAME_SIZE],
        pub(super) lines: u32,
    }

    // #define GPIO_GET_CHIPINFO_IOCTL _IOR(0xB4, 0x01, struct gpiochip_info)
    nix::ioctl_read!(get_chipinfo, 0xB4, 0x01, ChipInfo);
    // #define GPIO_V2_GET_LINE_IOCTL _IOWR(0xB4, 0x07, struct gpio_v2_line_request)
    nix::ioctl_readwrite!(get_line, 0xB4, 0x07, LineRequest);
    // #define GPIO_V2_LINE_GET_VALUES_IOCTL _IOWR(0xB4, 0x0E, struct gpio_v2_line_values)
    nix::ioctl_readwrite!(get_values, 0xB4, 0x0E, LineValues);
    // #define GPIO_V2_LINE_SET_VALUES_IOCTL _IOWR(0xB4, 0x0F, struct gpio_v2_line_values)
    nix::ioctl_readwrite!(set_values, 0xB4, 0x0F, LineValues);

    /// The request for one line; the consumer name is cut to fit (NUL-terminated).
    pub(super) fn line_request(req: super::GpioRequest, consumer: &str) -> LineRequest {
        let mut flags = if req.output { FLAG_OUTPUT } else { FLAG_INPUT };
        if req.active_low {
            flags |= FLAG_ACTIVE_LOW;
        }
        if req.pull_up {
            flags |= FLAG_BIAS_PULL_UP;
        }
        let mut name = [0u8; GPIO_MAX_NAME_SIZE];
        for (dst, src) in name
            .iter_mut()
            .zip(consumer.bytes().take(GPIO_MAX_NAME_SIZE - 1))
        {
            *dst = src;
        }
        let mut offsets = [0u32; GPIO_V2_LINES_MAX];
        offsets[0] = req.line;
        LineRequest {
            offsets,
            consumer: name,
            config: LineConfig {
                flags,
                num_attrs: 0,
                padding: [0; 5],
                attrs: [LineConfigAttribute::default(); GPIO_V2_LINE_NUM_ATTRS_MAX],
            },
            num_lines: 1,
            event_buffer_size: 0,
            padding: [0; 5],
            fd: -1,
        }
    }

    pub(super) fn request_line(
        chip: &impl AsRawFd,
        req: super::GpioRequest,
        consumer: &str,
    ) -> Result<OwnedFd, Errno> {
        let mut request = line_request(req, consumer);
        // SAFETY: the chip fd is borrowed from an open file for the whole
        // call; GPIO_V2_GET_LINE reads and writes one `gpio_v2_line_request`
        // (592 bytes, layout pinned by the tests) through the pointer, which
        // points at `request` on this stack frame.
        unsafe { get_line(chip.as_raw_fd(), &mut request) }?;
        if request.fd < 0 {
            return Err(Errno::EBADF);
        }
        // SAFETY: on success the kernel stored a new file descriptor for the
        // line in `fd`; nothing else owns it, so `OwnedFd` may close it.
        Ok(unsafe { OwnedFd::from_raw_fd(request.fd) })
    }

    pub(super) fn set_value(line: &OwnedFd, active: bool) -> Result<(), Errno> {
        let mut values = LineValues {
            bits: u64::from(active),
            mask: 1,
        };
        // SAFETY: `line` is an open line fd for the whole call; the ioctl
        // reads and writes one `gpio_v2_line_values` at `values` on this frame.
        unsafe { set_values(line.as_raw_fd(), &mut values) }?;
        Ok(())
    }

    pub(super) fn get_value(line: &OwnedFd) -> Result<bool, Errno> {
        let mut values = LineValues { bits: 0, mask: 1 };
        // SAFETY: as in `set_value`: one `gpio_v2_line_values` on this frame.
        unsafe { get_values(line.as_raw_fd(), &mut values) }?;
        Ok(values.bits & 1 != 0)
    }

    pub(super) fn chip_label(chip: &impl AsRawFd) -> Result<String, Errno> {
        let mut info = ChipInfo {
            name: [0; GPIO_MAX_NAME_SIZE],
            label: [0; GPIO_MAX_NAME_SIZE],
            lines: 0,
        };
        // SAFETY: the fd is borrowed from an open file for the whole call;
        // GPIO_GET_CHIPINFO writes one `gpiochip_info` (68 bytes) at `info`.
        unsafe { get_chipinfo(chip.as_raw_fd(), &mut info) }?;
        let end = info
            .label
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(GPIO_MAX_NAME_SIZE);
        Ok(String::from_utf8_lossy(info.label.get(..end).unwrap_or_default()).into_owned())
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use std::mem::{offset_of, size_of};

        /// Sizes, offsets and request codes as `<linux/gpio.h>` (Linux 6.1)
        /// gives them: the kernel checks none of this, a mismatch corrupts memory.
        #[test]
        fn layouts_match_the_uapi_header() {
            assert_eq!(size_of::<LineAttribute>(), 16);
            assert_eq!(size_of::<LineConfigAttribute>(), 24);
            assert_eq!(size_of::<LineConfig>(), 272);
            assert_eq!(offset_of!(LineConfig, num_attrs), 8);
            assert_eq!(offset_of!(LineConfig, attrs), 32);
            assert_eq!(size_of::<LineRequest>(), 592);
            assert_eq!(offset_of!(LineRequest, consumer), 256);
            assert_eq!(offset_of!(LineRequest, config), 288);
            assert_eq!(offset_of!(LineRequest, num_lines), 560);
            assert_eq!(offset_of!(LineRequest, event_buffer_size), 564);
            assert_eq!(offset_of!(LineRequest, fd), 588);
            assert_eq!(size_of::<LineValues>(), 16);
            assert_eq!(size_of::<ChipInfo>(), 68);
            assert_eq!(offset_of!(ChipInfo, label), 32);
            assert_eq!(offset_of!(ChipInfo, lines), 64);
            let code = |dir: u64, nr: u64, size: usize| {
                (dir << 30) | ((size as u64) << 16) | (0xB4 << 8) | nr
            };
            assert_eq!(code(3, 0x07, size_of::<LineRequest>()), 0xc250_b407);
            assert_eq!(code(3, 0x0F, size_of::<LineValues>()), 0xc010_b40f);
            assert_eq!(code(3, 0x0E, size_of::<LineValues>()), 0xc010_b40e);
            assert_eq!(code(2, 0x01, size_of::<ChipInfo>()), 0x8044_b401);
            assert_eq!(
                nix::request_code_readwrite!(0xB4, 0x07, size_of::<LineRequest>()) as u64,
                0xc250_b407
            );
            assert_eq!(
                nix::request_code_read!(0xB4, 0x01, size_of::<ChipInfo>()) as u64,
                0x8044_b401
            );
        }

        #[test]
        fn one_line_request_is_encoded() {
            let req = super::super::GpioRequest {
                line: 29,
                output: true,
                active_low: true,
                pull_up: false,
            };
            let r = line_request(req, "outpost-led-with-a-very-long-consumer-name");
            assert_eq!(r.num_lines, 1);
            assert_eq!(r.offsets[0], 29);
            assert_eq!(r.offsets[1], 0);
            assert_eq!(r.config.flags, FLAG_OUTPUT | FLAG_ACTIVE_LOW);
            assert_eq!(r.config.num_attrs, 0);
            assert_eq!(&r.consumer[..6], b"outpos");
            assert_eq!(r.consumer[31], 0, "NUL-terminated even when cut");
            let button = super::super::GpioRequest {
                line: 17,
                output: false,
                active_low: true,
                pull_up: true,
            };
            assert_eq!(
                line_request(button, "b").config.flags,
                FLAG_INPUT | FLAG_ACTIVE_LOW | FLAG_BIAS_PULL_UP
            );
        }

        #[test]
        fn opening_a_non_chip_fails_cleanly() {
            let f = std::fs::File::open("/dev/null").unwrap();
            assert!(chip_label(&f).is_err());
            let req = super::super::GpioRequest {
                line: 0,
                output: true,
                active_low: false,
                pull_up: false,
            };
            assert!(request_line(&f, req, "t").is_err());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_read_refuses_oversized_and_non_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; 65]).unwrap();
        let big = big.to_str().unwrap();
        assert!(matches!(
            RealSys.read_to_string(big, 64),
            Err(SysError::TooLarge { limit: 64, .. })
        ));
        assert_eq!(RealSys.read_to_string(big, 65).unwrap().len(), 65);

        let bin = dir.path().join("bin");
        std::fs::write(&bin, [0xff, 0xfe]).unwrap();
        assert!(matches!(
            RealSys.read_to_string(bin.to_str().unwrap(), 64),
            Err(SysError::NotUtf8 { .. })
        ));

        let err = RealSys
            .read_to_string(dir.path().join("none").to_str().unwrap(), 64)
            .unwrap_err();
        assert_eq!(err.errno(), Some(Errno::ENOENT));
    }

    #[test]
    fn real_proc_files_read_despite_zero_size() {
        let text = RealSys.read_to_string("/proc/self/stat", 4096).unwrap();
        assert!(!text.is_empty());
    }

    #[test]
    fn real_mkdir_and_mountpoint() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        let deep = deep.to_str().unwrap();
        RealSys.mkdir_p(deep, 0o755).unwrap();
        RealSys.mkdir_p(deep, 0o755).unwrap();
        assert!(RealSys.exists(deep));
        assert!(!RealSys.is_mountpoint(deep));
        assert!(RealSys.is_mountpoint("/"));
        assert!(RealSys.is_mountpoint("/proc"));
        assert!(!RealSys.kernel_release().unwrap().is_empty());
    }

    #[test]
    fn real_finit_module_rejects_nul_params() {
        assert!(matches!(
            RealSys.finit_module("/nonexistent.ko", "a\0b"),
            Err(SysError::Nul { .. })
        ));
    }

    #[test]
    fn recording_scripts_failures_once_each() {
        let sys = RecordingSys::new();
        sys.fail("mount", "/proc", Errno::EBUSY);
        let m =
            |s: &RecordingSys| s.mount(Some("proc"), "/proc", Some("proc"), MsFlags::empty(), None);
        assert_eq!(m(&sys).unwrap_err().errno(), Some(Errno::EBUSY));
        assert!(m(&sys).is_ok());
        assert_eq!(sys.calls().len(), 2);
        assert!(sys.is_mountpoint("/proc"));
    }

    #[test]
    fn recording_exists_after_n_checks_and_reaping() {
        let sys = RecordingSys::new();
        sys.appear_after("/dev/vda4", 2);
        assert!(!sys.exists("/dev/vda4"));
        assert!(!sys.exists("/dev/vda4"));
        assert!(sys.exists("/dev/vda4"));

        sys.push_exited(7);
        assert_eq!(sys.wait_peek_exited().unwrap(), Some(Exited { pid: 7 }));
        assert_eq!(sys.wait_peek_exited().unwrap(), Some(Exited { pid: 7 }));
        sys.wait_reap(7).unwrap();
        assert_eq!(sys.wait_peek_exited().unwrap(), None);
        assert_eq!(sys.wait_reap(7).unwrap_err().errno(), Some(Errno::ECHILD));
    }
}
