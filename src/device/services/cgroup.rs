//! cgroup v2 for services: `<root>/outpost/<name>` per service, its limits
//! written before the program runs, the child joined before it execs, the
//! OOM-kill counter read at exit, and every process left in it killed at
//! stop. In host mode there is no cgroup tree of ours: limits are skipped
//! (one warning) and everything else works.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use crate::config::Limits;

/// Where the unified hierarchy is mounted on a board.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Our subtree under it (processes live only in its leaves).
const OUTPOST: &str = "outpost";
/// Controllers the limits need.
const CONTROLLERS: &[u8] = b"+memory +cpu +pids";
/// `memory.events` is a few short lines.
const MAX_EVENTS_BYTES: u64 = 4096;
/// `cgroup.procs` of a service: most pids read when killing leftovers.
const MAX_PROCS_BYTES: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The cgroup tree services run in, or none (host mode, or no cgroup2).
#[derive(Debug, Clone)]
pub struct Cgroups {
    /// `<root>/outpost`, when usable.
    base: Option<PathBuf>,
}

impl Cgroups {
    /// No cgroups: limits are ignored.
    pub fn disabled() -> Self {
        Self { base: None }
    }

    /// Set up `<root>/outpost` with the controllers enabled. The caller has
    /// mounted cgroup2 at `root` (on a board, [`CGROUP_ROOT`]).
    pub fn open(root: &Path) -> Result<Self, CgroupError> {
        write(&root.join("cgroup.subtree_control"), CONTROLLERS)?;
        let base = root.join(OUTPOST);
        mkdir(&base)?;
        write(&base.join("cgroup.subtree_control"), CONTROLLERS)?;
        Ok(Self { base: Some(base) })
    }

    pub fn enabled(&self) -> bool {
        self.base.is_some()
    }

    fn dir(&self, service: &str) -> Option<PathBuf> {
        self.base.as_ref().map(|b| b.join(service))
    }

    /// Create the service's cgroup, write its limits, and open its
    /// `cgroup.procs` for the child to join (see `sys::join_cgroup_before_exec`).
    /// None when cgroups are disabled.
    pub fn prepare(&self, service: &str, limits: &Limits) -> Result<Option<OwnedFd>, CgroupError> {
        let Some(dir) = self.dir(service) else {
            return Ok(None);
        };
        mkdir(&dir)?;
        // Unset limits are reset, so a config change takes effect on restart.
        let memory = limits.memory_max.as_deref().unwrap_or("max");
        write(&dir.join("memory.max"), memory.as_bytes())?;
        if limits.memory_max.is_some() {
            // Out of memory means killed, not swapped out slowly.
            let _ = write(&dir.join("memory.swap.max"), b"0");
        }
        let cpu = limits.cpu_max.as_deref().unwrap_or("max");
        write(&dir.join("cpu.max"), cpu.as_bytes())?;
        let pids = limits
            .pids_max
            .map(|p| p.to_string())
            .unwrap_or_else(|| "max".into());
        write(&dir.join("pids.max"), pids.as_bytes())?;
        let procs = dir.join("cgroup.procs");
        let file = OpenOptions::new()
            .write(true)
            .open(&procs)
            .map_err(io(&procs))?;
        Ok(Some(file.into()))
    }

    /// `oom_kill` from the service's `memory.events` (0 without cgroups).
    pub fn oom_kills(&self, service: &str) -> u64 {
        let Some(dir) = self.dir(service) else {
            return 0;
        };
        read_small(&dir.join("memory.events"), MAX_EVENTS_BYTES)
            .map(|t| parse_oom_kill(&t))
            .unwrap_or(0)
    }

    /// SIGKILL every process left in the service's cgroup: `cgroup.kill`
    /// (Linux 5.14+), else one by one from `cgroup.procs`.
    pub fn kill_all(&self, service: &str) {
        let Some(dir) = self.dir(service) else {
            return;
        };
        if write(&dir.join("cgroup.kill"), b"1").is_ok() {
            return;
        }
        let Some(text) = read_small(&dir.join("cgroup.procs"), MAX_PROCS_BYTES) else {
            return;
        };
        for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            if pid > 1 {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// The `oom_kill N` line of `memory.events`.
pub fn parse_oom_kill(events: &str) -> u64 {
    events
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

fn mkdir(dir: &Path) -> Result<(), CgroupError> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(io(dir)(e)),
        _ => Ok(()),
    }
}

fn write(path: &Path, value: &[u8]) -> Result<(), CgroupError> {
    // cgroup files take one write(2) each; no create, no truncate.
    let mut f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io(path))?;
    f.write_all(value).map_err(io(path))
}

fn read_small(path: &Path, limit: u64) -> Option<String> {
    use std::io::Read as _;
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(limit)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory laid out like cgroupfs (its files exist before a write).
    fn fake_root() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("cgroup.subtree_control"), "").unwrap();
        std::fs::create_dir(tmp.path().join(OUTPOST)).unwrap();
        std::fs::write(tmp.path().join("outpost/cgroup.subtree_control"), "").unwrap();
        tmp
    }

    #[test]
    fn limits_are_written_and_the_procs_file_opened() {
        let root = fake_root();
        let cg = Cgroups::open(root.path()).unwrap();
        let read = |p: &str| std::fs::read_to_string(root.path().join(p)).unwrap();
        assert_eq!(read("cgroup.subtree_control"), "+memory +cpu +pids");
        let dir = root.path().join("outpost/web");
        std::fs::create_dir(&dir).unwrap();
        for f in [
            "memory.max",
            "memory.swap.max",
            "cpu.max",
            "pids.max",
            "cgroup.procs",
        ] {
            std::fs::write(dir.join(f), "").unwrap();
        }
        let limits = Limits {
            memory_max: Some("32M".into()),
            cpu_max: None,
            pids_max: Some(16),
        };
        assert!(cg.prepare("web", &limits).unwrap().is_some());
        assert_eq!(read("outpost/web/memory.max"), "32M");
        assert_eq!(read("outpost/web/memory.swap.max"), "0");
        assert_eq!(read("outpost/web/cpu.max"), "max");
        assert_eq!(read("outpost/web/pids.max"), "16");
        std::fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        )
        .unwrap();
        assert_eq!(cg.oom_kills("web"), 1);
        assert_eq!(cg.oom_kills("other"), 0);
    }

    #[test]
    fn disabled_does_nothing() {
        let cg = Cgroups::disabled();
        assert!(!cg.enabled());
        assert!(cg.prepare("x", &Limits::default()).unwrap().is_none());
        assert_eq!(cg.oom_kills("x"), 0);
        cg.kill_all("x");
    }

    #[test]
    fn no_cgroupfs_is_an_error_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let err = Cgroups::open(&tmp.path().join("none")).unwrap_err();
        assert!(err.to_string().contains("cgroup.subtree_control"), "{err}");
    }

    #[test]
    fn oom_kill_parsing() {
        assert_eq!(parse_oom_kill("oom 2\noom_kill 2\noom_group_kill 0"), 2);
        assert_eq!(parse_oom_kill("garbage"), 0);
    }
}
