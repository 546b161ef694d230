//! The A/B slot service: reads the boot state (the newer valid of the two
//! copies on BOOT), and applies `mark_good`, `switch_to` and `rollback` as
//! ONE write each, always of the older copy (`crate::bootstate` decides
//! everything; this module only moves bytes).
//!
//! Backends are sibling files: [`block`] rewrites the copies in place on a
//! real BOOT partition, `file` keeps them as files in a directory (tests and
//! host mode only: feature `sim`).
//! [`commit`] is the boot's commit-or-fall-back step.

pub mod block;
pub mod commit;
#[cfg(any(test, feature = "sim"))]
pub mod file;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use crate::bootstate::{BootState, CopyId, Current, EnvError, Event, PlanError, Planned, Slot};
use crate::device::durable::write_durably;

pub use block::{BlockBackend, BlockDev, PartitionFile};
#[cfg(any(test, feature = "sim"))]
pub use file::FileBackend;

/// Where the boot record goes on DATA (for the API later).
pub const LAST_BOOT_FILE: &str = "state/last-boot.toml";

#[derive(Debug, thiserror::Error)]
pub enum SlotsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{device}: {why}")]
    Fat { device: String, why: String },
    #[error("a boot-state copy must be exactly 16384 bytes, not {0}")]
    Size(usize),
    #[error("both boot-state copies are invalid ({first}; {second})")]
    NoValidCopy { first: String, second: String },
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("boot-state env: {0}")]
    Env(EnvError),
}

impl SlotsError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        SlotsError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// Where the two copies live.
pub trait Backend: Send {
    /// The copy's bytes (a copy that cannot be read counts as invalid).
    fn read_copy(&self, copy: CopyId) -> Result<Vec<u8>, SlotsError>;
    /// Replace the copy and make it durable before returning.
    fn write_copy(&self, copy: CopyId, blob: &[u8]) -> Result<(), SlotsError>;
    /// For logs: "BOOT partition /dev/vda1".
    fn describe(&self) -> String;
}

/// One slot as the API will show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotInfo {
    pub slot: Slot,
    /// The slot this system runs from.
    pub active: bool,
    /// Boot attempts left.
    pub attempts_left: u8,
    pub health: SlotHealth,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotHealth {
    /// Marked good since it was last switched to.
    Good,
    /// Not (yet) marked good, attempts left: on trial.
    Trial,
    /// Not marked good and out of attempts (or not in the boot order).
    Bad,
}

/// The A/B state for the API: `Slots::state()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotsState {
    /// The slot the kernel command line says was booted.
    pub booted: Option<Slot>,
    /// The slot U-Boot tries first.
    pub primary: Slot,
    pub order: Vec<Slot>,
    pub slots: [SlotInfo; 2],
    /// Sequence number of the copy read, and which copy it was.
    pub seq: u8,
    pub copy: Option<CopyId>,
    /// What is wrong with either copy or with the values, if anything.
    pub problems: Vec<String>,
}

impl SlotsState {
    fn new(cur: &Current, booted: Option<Slot>) -> Self {
        let s = &cur.state;
        let info = |slot: Slot| {
            let left = s.left(slot);
            let health = if s.is_good(slot) {
                SlotHealth::Good
            } else if left > 0 && s.order.contains(&slot) {
                SlotHealth::Trial
            } else {
                SlotHealth::Bad
            };
            SlotInfo {
                slot,
                active: booted == Some(slot),
                attempts_left: left,
                health,
            }
        };
        let mut problems = cur.issues.clone();
        for (id, err) in CopyId::BOTH.iter().zip(&cur.errors) {
            if let Some(e) = err {
                problems.push(format!("{}: {e}", id.file()));
            }
        }
        Self {
            booted,
            primary: s.primary(),
            order: s.order.clone(),
            slots: [info(Slot::A), info(Slot::B)],
            seq: cur.seq,
            copy: cur.from,
            problems,
        }
    }
}

/// The slot service. Each change is read → plan → one write, under a lock.
pub struct Slots {
    backend: Mutex<Box<dyn Backend>>,
    booted: Option<Slot>,
}

impl Slots {
    pub fn new(backend: Box<dyn Backend>, booted: Option<Slot>) -> Self {
        Self {
            backend: Mutex::new(backend),
            booted,
        }
    }

    pub fn booted(&self) -> Option<Slot> {
        self.booted
    }

    /// Both copies, read and chosen between. An unreadable copy is invalid.
    pub fn read(&self) -> Current {
        let backend = self.backend.lock().unwrap_or_else(PoisonError::into_inner);
        read_current(&**backend)
    }

    /// The state for the API.
    pub fn state(&self) -> SlotsState {
        SlotsState::new(&self.read(), self.booted)
    }

    /// The booted slot passed its health checks: restore its attempts.
    pub fn mark_good(&self, slot: Slot) -> Result<Planned, SlotsError> {
        self.apply(Event::MarkGood(slot))
    }

    /// Make `slot` primary with `attempts` tries (after an install).
    pub fn switch_to(&self, slot: Slot, attempts: u8) -> Result<Planned, SlotsError> {
        self.apply(Event::SwitchTo { slot, attempts })
    }

    /// Make the other, good slot primary again.
    pub fn rollback(&self) -> Result<Planned, SlotsError> {
        self.apply(Event::Rollback)
    }

    /// What U-Boot's boot.cmd does (choose a slot, spend an attempt, persist):
    /// host mode runs it at start so a simulated device boots like a board.
    pub fn boot_as_uboot_would(&self) -> Result<Slot, SlotsError> {
        let plan = self.apply(Event::Boot)?;
        Ok(plan.choice.map(|c| c.slot).unwrap_or(Slot::A))
    }

    fn apply(&self, event: Event) -> Result<Planned, SlotsError> {
        let backend = self.backend.lock().unwrap_or_else(PoisonError::into_inner);
        let cur = read_current(&**backend);
        if cur.from.is_none() {
            // U-Boot starts over from A in this case; writing A's state over
            // a board that ran B would be a guess. Refuse, say why.
            return Err(SlotsError::NoValidCopy {
                first: error_text(&cur.errors[0]),
                second: error_text(&cur.errors[1]),
            });
        }
        let plan = cur.apply(event)?;
        backend.write_copy(plan.write.copy, &plan.write.blob)?;
        Ok(plan)
    }

    pub fn describe(&self) -> String {
        self.backend
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .describe()
    }
}

fn error_text(e: &Option<EnvError>) -> String {
    e.as_ref()
        .map_or_else(|| "unreadable".into(), ToString::to_string)
}

fn read_current(backend: &dyn Backend) -> Current {
    let first = backend.read_copy(CopyId::First);
    let second = backend.read_copy(CopyId::Second);
    let bytes = |r: &Result<Vec<u8>, SlotsError>| r.as_deref().unwrap_or_default().to_vec();
    let mut cur = Current::read(&bytes(&first), &bytes(&second));
    // Say why a copy could not even be read (Current only saw no bytes).
    for (id, r) in CopyId::BOTH.iter().zip([&first, &second]) {
        if let Err(e) = r {
            cur.issues.push(format!("{}: {e}", id.file()));
        }
    }
    cur
}

/// How this boot came about, from the state U-Boot left (read before
/// `mark_good` changes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootRecord {
    pub booted: Slot,
    /// First slot of BOOT_ORDER at boot.
    pub primary: Slot,
    pub fallback: bool,
    pub reason: String,
}

impl BootRecord {
    pub fn new(booted: Slot, at_boot: &BootState) -> Self {
        let primary = at_boot.primary();
        let fallback = booted != primary;
        let reason = if !fallback {
            "primary".to_string()
        } else if !at_boot.order.contains(&primary) || at_boot.left(primary) == 0 {
            format!("fallback: slot {primary} has no boot attempts left")
        } else {
            format!("fallback: slot {primary} was not chosen")
        };
        Self {
            booted,
            primary,
            fallback,
            reason,
        }
    }

    /// The log line for it.
    pub fn describe(&self) -> String {
        if self.fallback {
            format!(
                "booted {} after fallback from {} ({})",
                self.booted, self.primary, self.reason
            )
        } else {
            format!("booted primary slot {}", self.booted)
        }
    }

    /// `last-boot.toml`.
    pub fn to_toml(&self, marked_good: bool, uptime_ms: u64) -> String {
        format!(
            "# Written by outpost-init at each boot.\nbooted = \"{}\"\nprimary = \"{}\"\nfallback = {}\nreason = \"{}\"\nmarked_good = {marked_good}\nuptime_ms = {uptime_ms}\n",
            self.booted,
            self.primary,
            self.fallback,
            self.reason.escape_default()
        )
    }

    /// Write it under `data`, durably (`device::durable`).
    pub fn save(&self, data: &Path, marked_good: bool, uptime_ms: u64) -> Result<(), SlotsError> {
        let path = data.join(LAST_BOOT_FILE);
        write_durably(&path, self.to_toml(marked_good, uptime_ms).as_bytes())
            .map_err(|e| SlotsError::io(&path, e))
    }
}

/// BOOT's block device: `outpost.boot=` when given, else partition 1 of
/// DATA's disk (the image layout: BOOT is 1, DATA is 4) — `/dev/vda4` →
/// `/dev/vda1`, `/dev/mmcblk0p4` → `/dev/mmcblk0p1`,
/// `/dev/disk/by-partuuid/XXXXXXXX-04` → `…-01`.
pub fn boot_device(boot: Option<&str>, data: Option<&str>) -> Option<String> {
    if let Some(b) = boot {
        return Some(b.to_owned());
    }
    let data = data?;
    let digits = data.bytes().rev().take_while(u8::is_ascii_digit).count();
    let (base, number) = data.split_at(data.len() - digits);
    if number.parse::<u32>().ok()? != 4 || base.ends_with('/') {
        return None;
    }
    Some(format!("{base}{:0width$}", 1, width = number.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstate::{encode_copy, initial_copies, DEFAULT_ATTEMPTS, STATE_SIZE};
    use std::sync::Arc;

    /// Copies in memory; writes can be made to fail or to tear.
    #[derive(Clone, Default)]
    struct Mem {
        copies: Arc<Mutex<[Vec<u8>; 2]>>,
        fail_writes: Arc<Mutex<bool>>,
        writes: Arc<Mutex<Vec<CopyId>>>,
    }

    impl Backend for Mem {
        fn read_copy(&self, copy: CopyId) -> Result<Vec<u8>, SlotsError> {
            Ok(self.copies.lock().unwrap()[copy.index()].clone())
        }
        fn write_copy(&self, copy: CopyId, blob: &[u8]) -> Result<(), SlotsError> {
            if *self.fail_writes.lock().unwrap() {
                // A torn write: the power went after the first bytes (half
                // of the new CRC; the whole text lies in the first sector).
                let mut c = self.copies.lock().unwrap();
                c[copy.index()][..2].copy_from_slice(&blob[..2]);
                return Err(SlotsError::io(
                    Path::new("mem"),
                    std::io::ErrorKind::Other.into(),
                ));
            }
            self.copies.lock().unwrap()[copy.index()] = blob.to_vec();
            self.writes.lock().unwrap().push(copy);
            Ok(())
        }
        fn describe(&self) -> String {
            "memory".into()
        }
    }

    fn fresh() -> (Slots, Mem) {
        let mem = Mem::default();
        *mem.copies.lock().unwrap() = initial_copies(&BootState::initial()).unwrap();
        (Slots::new(Box::new(mem.clone()), Some(Slot::A)), mem)
    }

    /// What U-Boot does before the kernel starts.
    fn uboot_boots(mem: &Mem) {
        let c = mem.copies.lock().unwrap().clone();
        let plan = Current::read(&c[0], &c[1]).apply(Event::Boot).unwrap();
        mem.copies.lock().unwrap()[plan.write.copy.index()] = plan.write.blob;
    }

    #[test]
    fn both_copies_invalid_refuses_to_write() {
        let mem = Mem::default();
        *mem.copies.lock().unwrap() = [vec![0; 5], vec![0xff; STATE_SIZE]];
        let slots = Slots::new(Box::new(mem.clone()), Some(Slot::B));
        let err = slots.mark_good(Slot::B).unwrap_err();
        assert!(matches!(err, SlotsError::NoValidCopy { .. }), "{err}");
        assert!(mem.writes.lock().unwrap().is_empty());
        let st = slots.state();
        assert_eq!(st.copy, None);
        assert_eq!(st.problems.len(), 2, "{:?}", st.problems);
    }

    #[test]
    fn torn_write_keeps_the_previous_state() {
        let (slots, mem) = fresh();
        uboot_boots(&mem);
        let before = slots.read().state;
        *mem.fail_writes.lock().unwrap() = true;
        assert!(slots.mark_good(Slot::A).is_err());
        let after = slots.read();
        assert_eq!(after.state, before);
        assert!(after.errors.iter().any(Option::is_some), "{after:?}");
        // And the next write succeeds over the torn copy.
        *mem.fail_writes.lock().unwrap() = false;
        slots.mark_good(Slot::A).unwrap();
        assert_eq!(slots.read().state.a_left, DEFAULT_ATTEMPTS);
    }

    #[test]
    fn mark_good_after_boot_restores_attempts_and_alternates_copies() {
        let (slots, mem) = fresh();
        uboot_boots(&mem); // writes the first copy (seq 2)
        let st = slots.state();
        assert_eq!(st.slots[0].attempts_left, 2);
        assert_eq!(st.slots[0].health, SlotHealth::Trial);
        assert!(st.slots[0].active);
        assert_eq!(st.slots[1].health, SlotHealth::Bad);
        let plan = slots.mark_good(Slot::A).unwrap();
        assert_eq!(plan.write.copy, CopyId::Second);
        assert_eq!(plan.write.seq, 3);
        let st = slots.state();
        assert_eq!(
            (st.slots[0].attempts_left, st.slots[0].health),
            (3, SlotHealth::Good)
        );
        assert_eq!((st.copy, st.seq), (Some(CopyId::Second), 3));
        assert!(st.problems.is_empty(), "{:?}", st.problems);
    }

    #[test]
    fn switch_then_fallback_then_rollback() {
        let (slots, mem) = fresh();
        uboot_boots(&mem);
        slots.mark_good(Slot::A).unwrap();
        slots.switch_to(Slot::B, 2).unwrap();
        let st = slots.state();
        assert_eq!(
            (st.primary, st.slots[1].health),
            (Slot::B, SlotHealth::Trial)
        );
        // B fails twice; U-Boot falls back to A.
        uboot_boots(&mem);
        uboot_boots(&mem);
        uboot_boots(&mem);
        let at_boot = slots.read().state;
        let record = BootRecord::new(Slot::A, &at_boot);
        assert!(record.fallback);
        assert!(
            record.describe().contains("after fallback from B"),
            "{}",
            record.describe()
        );
        slots.mark_good(Slot::A).unwrap();
        assert_eq!(slots.state().slots[1].health, SlotHealth::Bad);
        // Rollback to a slot that is not good is refused; to A it works.
        slots.switch_to(Slot::B, 3).unwrap();
        assert!(slots.rollback().is_ok());
        assert_eq!(slots.state().primary, Slot::A);
        let (slots_b, _) = fresh();
        assert!(matches!(
            slots_b.rollback(),
            Err(SlotsError::Plan(PlanError::Chooser(_)))
        ));
    }

    #[test]
    fn boot_record_and_file() {
        let r = BootRecord::new(Slot::A, &BootState::initial());
        assert!(!r.fallback);
        assert_eq!(r.describe(), "booted primary slot A");
        let dir = tempfile::tempdir().unwrap();
        r.save(dir.path(), true, 1234).unwrap();
        let text = std::fs::read_to_string(dir.path().join(LAST_BOOT_FILE)).unwrap();
        let v: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(v["booted"].as_str(), Some("A"));
        assert_eq!(v["marked_good"].as_bool(), Some(true));
        assert_eq!(v["reason"].as_str(), Some("primary"));
    }

    #[test]
    fn boot_device_from_data() {
        assert_eq!(
            boot_device(None, Some("/dev/vda4")).as_deref(),
            Some("/dev/vda1")
        );
        assert_eq!(
            boot_device(None, Some("/dev/mmcblk0p4")).as_deref(),
            Some("/dev/mmcblk0p1")
        );
        assert_eq!(
            boot_device(None, Some("/dev/disk/by-partuuid/0a1b2c3d-04")).as_deref(),
            Some("/dev/disk/by-partuuid/0a1b2c3d-01")
        );
        assert_eq!(
            boot_device(Some("/dev/sdb1"), Some("/dev/vda4")).as_deref(),
            Some("/dev/sdb1")
        );
        for odd in ["/dev/vda", "/dev/vda3", "/dev/4", "/dev/vda99999999999999"] {
            assert_eq!(boot_device(None, Some(odd)), None, "{odd}");
        }
        assert_eq!(boot_device(None, None), None);
    }

    #[test]
    fn file_backend_end_to_end() {
        let dir = tempfile::tempdir().unwrap();
        let backend = FileBackend::create(dir.path()).unwrap();
        let slots = Slots::new(Box::new(backend), Some(Slot::A));
        assert_eq!(slots.state().seq, 1);
        slots.mark_good(Slot::A).unwrap();
        slots.switch_to(Slot::B, 3).unwrap();
        let st = slots.state();
        assert_eq!((st.primary, st.seq), (Slot::B, 3));
        // Corrupt the newer file: the older one wins, the next write heals.
        let newer = dir.path().join(st.copy.unwrap().file());
        std::fs::write(&newer, b"garbage").unwrap();
        let st = slots.state();
        assert_eq!((st.primary, st.seq), (Slot::A, 2));
        assert!(
            st.problems.iter().any(|p| p.contains("bytes")),
            "{:?}",
            st.problems
        );
        slots.switch_to(Slot::B, 1).unwrap();
        assert_eq!(slots.state().seq, 3);
        let blob = std::fs::read(&newer).unwrap();
        assert_eq!(blob, encode_copy(&slots.read().state, 3).unwrap());
    }
}
