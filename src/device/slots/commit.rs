//! Commit or fall back: once this boot is healthy (API listening, DATA
//! mounted, machine config loaded, every service that has a health check
//! healthy), mark the booted slot good, which gives
//! its attempts back. Not healthy within [`COMMIT_DEADLINE`] of init's start:
//! reboot, so U-Boot spends the next attempt and, when they run out, falls
//! back to the other slot. Every boot also logs how it came about and leaves
//! `state/last-boot.toml` on DATA.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{BootRecord, Slots};

/// From init's start to a healthy boot. QEMU under TCG reaches the API in
/// ~5 s and a Pi on an SD card in ~10 s; DHCP backs off for at most ~20 s.
pub const COMMIT_DEADLINE: Duration = Duration::from_secs(60);

/// The health checks this build has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Health {
    pub data_mounted: bool,
    pub config_loaded: bool,
    pub api_listening: bool,
    /// Every configured service with a health check (tcp or exec) passed it
    /// before the commit (boot waits for them until shortly before
    /// [`COMMIT_DEADLINE`]). Services without a check do not count: a
    /// crash-looping service is the operator's to fix, not a reason to
    /// leave a slot that boots and answers.
    pub services_healthy: bool,
}

impl Health {
    /// The checks that failed, by name.
    pub fn failures(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if !self.data_mounted {
            out.push("DATA not mounted");
        }
        if !self.config_loaded {
            out.push("machine config not loaded");
        }
        if !self.api_listening {
            out.push("API not listening");
        }
        if !self.services_healthy {
            out.push("services not healthy");
        }
        out
    }
}

/// What [`commit`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// Marked good: attempts before → after.
    MarkedGood { before: u8, after: u8 },
    /// Healthy, but the state could not be written (logged); rebooting
    /// would not fix BOOT, so the boot stands.
    WriteFailed(String),
    /// Not healthy: left for the deadline.
    Unhealthy(Vec<&'static str>),
}

/// At the commit point: log how this boot came about, mark the slot good
/// when `health` passed, and record the outcome under `data` (if mounted).
/// Returns what happened; the caller cancels the deadline unless `Unhealthy`.
pub fn commit(slots: &Slots, health: &Health, data: Option<&Path>, uptime_ms: u64) -> Committed {
    let Some(booted) = slots.booted() else {
        return Committed::WriteFailed("no outpost.slot= on the kernel command line".into());
    };
    let at_boot = slots.read();
    for issue in &at_boot.issues {
        tracing::warn!("boot state: {issue}");
    }
    for (name, err) in crate::bootstate::COPY_FILES.iter().zip(&at_boot.errors) {
        if let Some(e) = err {
            tracing::warn!("boot state: {name}: {e}");
        }
    }
    let record = BootRecord::new(booted, &at_boot.state);
    if record.fallback {
        tracing::warn!("{}", record.describe());
    } else {
        tracing::info!("{}", record.describe());
    }

    let failures = health.failures();
    let outcome = if failures.is_empty() {
        let before = at_boot.state.left(booted);
        match slots.mark_good(booted) {
            Ok(plan) => {
                let after = plan.state.left(booted);
                tracing::info!(
                    "slot {booted} marked good (attempts {before} -> {after}; {} seq {:#x})",
                    plan.write.copy.file(),
                    plan.write.seq
                );
                Committed::MarkedGood { before, after }
            }
            Err(e) => {
                tracing::error!("marking slot {booted} good: {e}");
                Committed::WriteFailed(e.to_string())
            }
        }
    } else {
        tracing::error!(
            "slot {booted} is not healthy ({}); not marking it good",
            failures.join(", ")
        );
        Committed::Unhealthy(failures)
    };
    if let Some(data) = data {
        let good = matches!(outcome, Committed::MarkedGood { .. });
        if let Err(e) = record.save(data, good, uptime_ms) {
            tracing::error!("boot record: {e}");
        }
    }
    outcome
}

/// Wait `after`; if `healthy` is still false then, run `on_miss` (which
/// reboots). Spawned at init's start.
pub async fn deadline(after: Duration, healthy: Arc<AtomicBool>, on_miss: impl FnOnce()) {
    smol::Timer::after(after).await;
    if !healthy.load(Ordering::Acquire) {
        tracing::error!(
            "not healthy {} s after init started; rebooting to spend this attempt",
            after.as_secs()
        );
        on_miss();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstate::{initial_copies, BootState, Current, Event, Slot};
    use crate::device::slots::{FileBackend, LAST_BOOT_FILE};

    fn booted_once(dir: &Path) -> Slots {
        let backend = FileBackend::create(dir).unwrap();
        // U-Boot's boot: A 3 -> 2, written to the first copy.
        let c = initial_copies(&BootState::initial()).unwrap();
        let plan = Current::read(&c[0], &c[1]).apply(Event::Boot).unwrap();
        std::fs::write(dir.join(plan.write.copy.file()), &plan.write.blob).unwrap();
        Slots::new(Box::new(backend), Some(Slot::A))
    }

    const HEALTHY: Health = Health {
        data_mounted: true,
        config_loaded: true,
        api_listening: true,
        services_healthy: true,
    };

    #[test]
    fn unhealthy_boot_is_not_marked_but_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let slots = booted_once(&dir.path().join("boot"));
        let health = Health {
            api_listening: false,
            ..HEALTHY
        };
        let out = commit(&slots, &health, Some(dir.path()), 5);
        assert_eq!(out, Committed::Unhealthy(vec!["API not listening"]));
        assert_eq!(slots.read().state.a_left, 2);
        let text = std::fs::read_to_string(dir.path().join(LAST_BOOT_FILE)).unwrap();
        assert!(text.contains("marked_good = false"), "{text}");
        assert_eq!(Health::default().failures().len(), 4);
    }

    #[test]
    fn healthy_boot_is_marked_good() {
        let dir = tempfile::tempdir().unwrap();
        let slots = booted_once(&dir.path().join("boot"));
        let out = commit(&slots, &HEALTHY, Some(dir.path()), 5);
        assert_eq!(
            out,
            Committed::MarkedGood {
                before: 2,
                after: 3
            }
        );
        assert!(slots.read().state.is_good(Slot::A));
        let text = std::fs::read_to_string(dir.path().join(LAST_BOOT_FILE)).unwrap();
        assert!(
            text.contains("booted = \"A\"") && text.contains("marked_good = true"),
            "{text}"
        );
    }

    #[test]
    fn no_slot_or_no_state_is_a_write_failure_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let slots = Slots::new(Box::new(FileBackend::new(dir.path())), None);
        assert!(matches!(
            commit(&slots, &HEALTHY, None, 0),
            Committed::WriteFailed(_)
        ));
        let slots = Slots::new(Box::new(FileBackend::new(dir.path())), Some(Slot::B));
        assert!(matches!(
            commit(&slots, &HEALTHY, None, 0),
            Committed::WriteFailed(_)
        ));
    }

    #[test]
    fn deadline_fires_only_when_unhealthy() {
        let fired = Arc::new(AtomicBool::new(false));
        let f = fired.clone();
        smol::block_on(deadline(
            Duration::from_millis(10),
            Arc::new(AtomicBool::new(true)),
            move || f.store(true, Ordering::SeqCst),
        ));
        assert!(!fired.load(Ordering::SeqCst));
        let f = fired.clone();
        smol::block_on(deadline(
            Duration::from_millis(10),
            Arc::new(AtomicBool::new(false)),
            move || f.store(true, Ordering::SeqCst),
        ));
        assert!(fired.load(Ordering::SeqCst));
    }
}
