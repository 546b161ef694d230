//! Orphan reaping for PID 1, without racing async-process.
//!
//! Every process whose parent dies is re-parented to PID 1 and stays a zombie
//! until we `wait` for it. async-process waits for the children *it* spawned,
//! by pid; a blanket `waitpid(-1)` here would steal their exit status. So the
//! reaper peeks (`waitid(P_ALL, WEXITED|WNOHANG|WNOWAIT)` leaves the zombie in
//! place) and reaps a pid only when it is not in the [`ChildRegistry`] of the
//! children our supervisor spawned.
//!
//! The supervisor must spawn through [`ChildRegistry::spawn`] (spawn and
//! register under one lock, so a child that exits at once is never mistaken for
//! an orphan) and call [`ChildRegistry::forget`] once async-process has
//! reported its exit.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::sys::{Exited, Sys, SysError};

/// How often the reaper looks for orphans. Zombies cost only a process-table
/// slot, so half a second is plenty, and a tick is cheaper than a SIGCHLD
/// handler that async-process already installs for itself.
pub const REAP_INTERVAL: Duration = Duration::from_millis(500);

/// Most orphans reaped in one tick, so a fork bomb of orphans cannot keep the
/// reaper from yielding to other tasks.
pub const MAX_REAPS_PER_TICK: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReaperError {
    #[error("peeking at exited children: {0}")]
    Peek(SysError),
    #[error("reaping orphan {pid}: {source}")]
    Reap { pid: i32, source: SysError },
}

/// The pids our supervisor spawned (async-process owns their `wait`).
#[derive(Debug, Clone, Default)]
pub struct ChildRegistry {
    pids: Arc<Mutex<HashSet<i32>>>,
}

impl ChildRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashSet<i32>> {
        self.pids.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Spawn a child and register it before the reaper can look: the reaper
    /// takes the same lock for each decision.
    pub fn spawn(
        &self,
        command: &mut async_process::Command,
    ) -> std::io::Result<async_process::Child> {
        let mut pids = self.lock();
        let child = command.spawn()?;
        if let Ok(pid) = i32::try_from(child.id()) {
            pids.insert(pid);
        }
        Ok(child)
    }

    /// As [`Self::spawn`] for a `std` command: the supervisor waits for its
    /// children with a pidfd (`services::child::wait`), which keeps
    /// async-process's reaper thread and signal machinery out of PID 1.
    pub fn spawn_std(
        &self,
        command: &mut std::process::Command,
    ) -> std::io::Result<std::process::Child> {
        let mut pids = self.lock();
        let child = command.spawn()?;
        if let Ok(pid) = i32::try_from(child.id()) {
            pids.insert(pid);
        }
        Ok(child)
    }

    /// Register a pid spawned some other way (hold no other lock while calling).
    pub fn insert(&self, pid: i32) {
        self.lock().insert(pid);
    }

    /// The child's exit was collected by its owner: the pid may be reused.
    pub fn forget(&self, pid: i32) {
        self.lock().remove(&pid);
    }

    pub fn contains(&self, pid: i32) -> bool {
        self.lock().contains(&pid)
    }
}

/// What to do with an exited child the peek found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Not ours: an orphan. Reap it.
    Reap(i32),
    /// Spawned by our supervisor: async-process will collect it. Leave it.
    Leave(i32),
    /// No exited child right now.
    Idle,
}

/// The rule, alone: reap an exited child only if we did not spawn it.
pub fn decide(exited: Option<Exited>, ours: &HashSet<i32>) -> Decision {
    match exited {
        None => Decision::Idle,
        Some(Exited { pid }) if pid <= 0 => Decision::Idle,
        Some(Exited { pid }) if ours.contains(&pid) => Decision::Leave(pid),
        Some(Exited { pid }) => Decision::Reap(pid),
    }
}

/// One pass: reap exited orphans until none is left, one of ours is next in
/// line (the kernel reports it first until async-process collects it), or the
/// per-tick cap is hit. Returns the pids reaped.
pub fn reap_once(sys: &dyn Sys, registry: &ChildRegistry) -> Result<Vec<i32>, ReaperError> {
    let mut reaped = Vec::new();
    while reaped.len() < MAX_REAPS_PER_TICK {
        // Decide and reap under the lock: a spawn cannot slip in between.
        let pids = registry.lock();
        let exited = sys.wait_peek_exited().map_err(ReaperError::Peek)?;
        match decide(exited, &pids) {
            Decision::Idle | Decision::Leave(_) => break,
            Decision::Reap(pid) => {
                sys.wait_reap(pid)
                    .map_err(|source| ReaperError::Reap { pid, source })?;
                tracing::debug!(pid, "reaped orphan");
                reaped.push(pid);
            }
        }
    }
    Ok(reaped)
}

/// The reaper task: a pass every [`REAP_INTERVAL`], forever. Errors are logged
/// and the next tick tries again.
pub async fn run(sys: Arc<dyn Sys>, registry: ChildRegistry) {
    loop {
        smol::Timer::after(REAP_INTERVAL).await;
        if let Err(e) = reap_once(sys.as_ref(), &registry) {
            tracing::warn!("{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::sys::{Call, Errno, RecordingSys};

    #[test]
    fn decision_rule() {
        let ours: HashSet<i32> = [10, 11].into_iter().collect();
        assert_eq!(decide(None, &ours), Decision::Idle);
        assert_eq!(decide(Some(Exited { pid: 0 }), &ours), Decision::Idle);
        assert_eq!(decide(Some(Exited { pid: -1 }), &ours), Decision::Idle);
        assert_eq!(decide(Some(Exited { pid: 10 }), &ours), Decision::Leave(10));
        assert_eq!(decide(Some(Exited { pid: 12 }), &ours), Decision::Reap(12));
    }

    #[test]
    fn orphans_are_reaped_ours_are_left() {
        let sys = RecordingSys::new();
        let registry = ChildRegistry::new();
        registry.insert(20);
        sys.push_exited(30)
            .push_exited(31)
            .push_exited(20)
            .push_exited(32);
        assert_eq!(reap_once(&sys, &registry).unwrap(), [30, 31]);
        // 20 is ours and next in line: left for async-process.
        assert_eq!(sys.zombies(), [20, 32]);
        assert!(!sys.calls().contains(&Call::WaitReap(20)));

        // async-process collected 20 (simulated) and the supervisor forgot it.
        sys.wait_reap(20).unwrap();
        registry.forget(20);
        assert_eq!(reap_once(&sys, &registry).unwrap(), [32]);
        assert!(sys.zombies().is_empty());
        assert!(reap_once(&sys, &registry).unwrap().is_empty());
    }

    #[test]
    fn errors_are_reported() {
        let sys = RecordingSys::new();
        sys.fail("waitid", "P_ALL", Errno::EINTR);
        assert!(matches!(
            reap_once(&sys, &ChildRegistry::new()),
            Err(ReaperError::Peek(_))
        ));
        sys.push_exited(5);
        sys.fail("waitpid", "5", Errno::ECHILD);
        assert!(matches!(
            reap_once(&sys, &ChildRegistry::new()),
            Err(ReaperError::Reap { pid: 5, .. })
        ));
    }

    #[test]
    fn registry_spawn_registers_and_real_reaping_leaves_our_child() {
        let registry = ChildRegistry::new();
        let mut child = registry
            .spawn(async_process::Command::new("true").kill_on_drop(false))
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        assert!(registry.contains(pid));
        // Wait until it has exited (zombie), then the real reaper must leave it.
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            let status = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if status.is_empty() || status.contains(") Z ") {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Peeking (WNOWAIT) must leave the zombie for async-process. (No real
        // reaping here: other tests in this process have children of their own.)
        crate::device::sys::RealSys.wait_peek_exited().unwrap();
        let status = smol::block_on(child.status()).unwrap();
        assert!(status.success());
        registry.forget(pid);
        assert!(!registry.contains(pid));
    }
}
