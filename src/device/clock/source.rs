//! Clock backends behind one small trait: the kernel's realtime clock on a
//! board, an offset over the system clock in host mode (unprivileged), and
//! a recording fake for tests.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Failure to set the clock.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("setting the clock: {0}")]
pub struct ClockError(pub String);

/// The wall clock: read it, step it. Times are durations since the Unix epoch.
pub trait Clock: Send + Sync {
    fn now(&self) -> Duration;
    fn set(&self, to: Duration) -> Result<(), ClockError>;
}

/// `clock_gettime`/`clock_settime(CLOCK_REALTIME)` (needs CAP_SYS_TIME: PID 1).
#[derive(Debug, Default, Clone, Copy)]
pub struct RealClock;

impl Clock for RealClock {
    fn now(&self) -> Duration {
        // A clock before 1970 reads as 1970 (the epoch), the floor we restore from.
        match nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME) {
            Ok(t) => Duration::new(
                u64::try_from(t.tv_sec()).unwrap_or(0),
                u32::try_from(t.tv_nsec()).unwrap_or(0),
            ),
            Err(_) => Duration::ZERO,
        }
    }

    fn set(&self, to: Duration) -> Result<(), ClockError> {
        nix::time::clock_settime(
            nix::time::ClockId::CLOCK_REALTIME,
            nix::sys::time::TimeSpec::from_duration(to),
        )
        .map_err(|e| ClockError(e.to_string()))
    }
}

/// Host mode: a process-local offset over the system clock, so the daemon
/// can "step" its clock without privileges and without touching the host's.
#[derive(Debug, Default)]
pub struct OffsetClock {
    offset_ns: AtomicI64,
}

fn system_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn duration_ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

impl Clock for OffsetClock {
    fn now(&self) -> Duration {
        let ns = system_ns().saturating_add(self.offset_ns.load(Ordering::Relaxed));
        Duration::from_nanos(u64::try_from(ns).unwrap_or(0))
    }

    fn set(&self, to: Duration) -> Result<(), ClockError> {
        self.offset_ns.store(
            duration_ns(to).saturating_sub(system_ns()),
            Ordering::Relaxed,
        );
        Ok(())
    }
}

/// Tests: a clock that stands still unless set, and records every set.
#[derive(Debug, Default)]
pub struct FakeClock {
    state: Mutex<(Duration, Vec<Duration>)>,
}

impl FakeClock {
    pub fn at(now: Duration) -> Self {
        Self {
            state: Mutex::new((now, Vec::new())),
        }
    }
    /// Every value passed to `set`, in order.
    pub fn sets(&self) -> Vec<Duration> {
        self.state.lock().map(|s| s.1.clone()).unwrap_or_default()
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Duration {
        self.state.lock().map(|s| s.0).unwrap_or_default()
    }
    fn set(&self, to: Duration) -> Result<(), ClockError> {
        let mut s = self
            .state
            .lock()
            .map_err(|_| ClockError("poisoned".into()))?;
        s.0 = to;
        s.1.push(to);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_clock_steps_without_privileges() {
        let c = OffsetClock::default();
        let year = Duration::from_secs(365 * 86_400);
        let ahead = c.now() + year;
        c.set(ahead).unwrap();
        let now = c.now();
        assert!(
            now >= ahead && now < ahead + Duration::from_secs(5),
            "{now:?}"
        );
        c.set(Duration::from_secs(1)).unwrap();
        assert!(c.now() < Duration::from_secs(10));
    }

    #[test]
    fn fake_clock_records_sets() {
        let c = FakeClock::at(Duration::from_secs(5));
        c.set(Duration::from_secs(9)).unwrap();
        assert_eq!(c.now(), Duration::from_secs(9));
        assert_eq!(c.sets(), vec![Duration::from_secs(9)]);
    }
}
