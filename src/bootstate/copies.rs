//! Two redundant copies of the boot state on BOOT, each a complete
//! single-copy env blob (what U-Boot's `env import -c` reads: Debian's
//! U-Boot 2023.01 refuses the `crc | flags | data` layout with "bad CRC", so
//! the flags byte of the redundant format is not an option) carrying a
//! sequence number `BOOT_SEQ`.
//!
//! libubootenv's rule, adapted: the valid copy with the newer sequence number
//! wins (compared modulo 256, so 0x00 is newer than 0xff); a write always goes
//! to the other, older copy with the next number. A write torn by a power cut
//! fails its CRC and the copy it did not touch still holds the previous state.
//! Pure: the caller reads and writes the bytes.

use super::chooser::uboot_hextoul;
use super::{BootState, Choice, Env, EnvError, Event, Layout, STATE_SIZE};

/// The copies' file names on BOOT, first and second. Both are 8.3 names, so
/// their directory entries can be found without long-name support.
pub const COPY_FILES: [&str; 2] = ["state.env", "state2.env"];

/// The sequence number variable (hex, `0x` prefixed, `0x0..=0xff`).
pub const VAR_SEQ: &str = "BOOT_SEQ";

/// One of the two copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyId {
    First,
    Second,
}

impl CopyId {
    pub const BOTH: [CopyId; 2] = [CopyId::First, CopyId::Second];

    pub fn other(self) -> CopyId {
        match self {
            CopyId::First => CopyId::Second,
            CopyId::Second => CopyId::First,
        }
    }
    /// Its file name on BOOT.
    pub fn file(self) -> &'static str {
        match self {
            CopyId::First => COPY_FILES[0],
            CopyId::Second => COPY_FILES[1],
        }
    }
    pub fn index(self) -> usize {
        match self {
            CopyId::First => 0,
            CopyId::Second => 1,
        }
    }
}

/// A copy that passed its CRC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidCopy {
    pub env: Env,
    pub seq: u8,
}

/// Decode one copy (`STATE_SIZE` bytes). Its sequence number is read as
/// boot.cmd reads it (`setexpr … % 0x100`): missing or garbled is 0.
pub fn decode_copy(blob: &[u8]) -> Result<ValidCopy, EnvError> {
    let (env, _) = Env::decode(blob, STATE_SIZE, false)?;
    let raw = env.get(VAR_SEQ).unwrap_or("");
    #[allow(clippy::cast_possible_truncation)] // modulo 256 is the point
    let seq = (uboot_hextoul(raw) & 0xff) as u8;
    Ok(ValidCopy { env, seq })
}

/// Whether sequence number `b` is newer than `a` (modulo 256: a difference
/// of 1..=127 counts forward; equal is not newer).
pub fn seq_newer(a: u8, b: u8) -> bool {
    (1..0x80).contains(&b.wrapping_sub(a))
}

/// The state as read from both copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    pub state: BootState,
    /// The copy it came from; `None` when both are invalid (then `state` is
    /// [`BootState::initial`], what U-Boot starts over with).
    pub from: Option<CopyId>,
    /// That copy's sequence number (0 when none).
    pub seq: u8,
    /// Why each copy is invalid, if it is.
    pub errors: [Option<EnvError>; 2],
    /// Garbled values in the chosen copy, and how they were read.
    pub issues: Vec<String>,
}

impl Current {
    /// Choose between the two copies (each exactly `STATE_SIZE` bytes).
    pub fn read(first: &[u8], second: &[u8]) -> Current {
        let copies = [decode_copy(first), decode_copy(second)];
        let pick = match (&copies[0], &copies[1]) {
            (Ok(a), Ok(b)) if seq_newer(a.seq, b.seq) => Some(CopyId::Second),
            (Ok(_), _) => Some(CopyId::First),
            (Err(_), Ok(_)) => Some(CopyId::Second),
            (Err(_), Err(_)) => None,
        };
        let errors = [copies[0].clone().err(), copies[1].clone().err()];
        match pick.and_then(|id| copies[id.index()].as_ref().ok().map(|c| (id, c))) {
            Some((id, copy)) => {
                let (state, issues) = BootState::from_env(&copy.env);
                Current {
                    state,
                    from: Some(id),
                    seq: copy.seq,
                    errors,
                    issues,
                }
            }
            None => Current {
                state: BootState::initial(),
                from: None,
                seq: 0,
                errors,
                issues: Vec::new(),
            },
        }
    }

    /// Where the next write goes: the older (or invalid) copy; the first
    /// when both are invalid.
    pub fn target(&self) -> CopyId {
        self.from.map_or(CopyId::First, CopyId::other)
    }

    /// The next write's sequence number: one past the current copy's, 0
    /// when starting over.
    pub fn next_seq(&self) -> u8 {
        match self.from {
            Some(_) => self.seq.wrapping_add(1),
            None => 0,
        }
    }

    /// The one write that stores `state`: which copy, and its bytes.
    pub fn write(&self, state: &BootState) -> Result<Write, EnvError> {
        Ok(Write {
            copy: self.target(),
            seq: self.next_seq(),
            blob: encode_copy(state, self.next_seq())?,
        })
    }

    /// Apply `event` and plan its write. After a [`Current::read`] of what
    /// U-Boot found, `apply(Event::Boot)` is exactly what boot.cmd writes.
    pub fn apply(&self, event: Event) -> Result<Planned, PlanError> {
        let (state, choice) = self.state.apply(event)?;
        let write = self.write(&state)?;
        Ok(Planned {
            state,
            choice,
            write,
        })
    }
}

/// A write of one copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub copy: CopyId,
    pub seq: u8,
    /// `STATE_SIZE` bytes.
    pub blob: Vec<u8>,
}

/// An event applied: the new state, the boot choice (for [`Event::Boot`]) and
/// the write that stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub state: BootState,
    pub choice: Option<Choice>,
    pub write: Write,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Chooser(#[from] super::ChooserError),
    #[error(transparent)]
    Env(#[from] EnvError),
}

/// One copy's bytes: the state's variables plus `BOOT_SEQ`, in U-Boot's
/// `env export -c -s 0x4000` format (sorted, zero padded).
pub fn encode_copy(state: &BootState, seq: u8) -> Result<Vec<u8>, EnvError> {
    let mut env = state.to_env();
    env.set(VAR_SEQ, format!("{seq:#x}"));
    env.encode(STATE_SIZE, Layout::Single)
}

/// Both copies of a fresh card: the same state, sequence numbers 0 and 1
/// (so the second is the newer and the first write goes to the first).
pub fn initial_copies(state: &BootState) -> Result<[Vec<u8>; 2], EnvError> {
    Ok([encode_copy(state, 0)?, encode_copy(state, 1)?])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstate::{Slot, DEFAULT_ATTEMPTS, MAX_ATTEMPTS};

    fn copy(state: &BootState, seq: u8) -> Vec<u8> {
        encode_copy(state, seq).unwrap()
    }

    fn torn(mut blob: Vec<u8>) -> Vec<u8> {
        // A write that stopped half-way: the tail still holds old bytes.
        for b in &mut blob[20..] {
            *b ^= 0x5a;
        }
        blob
    }

    #[test]
    fn both_copies_corrupt_start_over() {
        let junk = vec![0xffu8; STATE_SIZE];
        let cur = Current::read(&junk, &[0u8; 10]);
        assert_eq!(cur.from, None);
        assert_eq!(cur.state, BootState::initial());
        assert!(matches!(cur.errors[0], Some(EnvError::Crc { .. })));
        assert!(matches!(cur.errors[1], Some(EnvError::Size { .. })));
        let w = cur.write(&cur.state).unwrap();
        assert_eq!((w.copy, w.seq), (CopyId::First, 0));
        // The next read finds that write and goes on from it.
        let next = Current::read(&w.blob, &junk);
        assert_eq!(
            (next.from, next.seq, next.target()),
            (Some(CopyId::First), 0, CopyId::Second)
        );
    }

    #[test]
    fn one_copy_corrupt_the_other_wins_and_is_kept() {
        let old = BootState::initial();
        let (new, _) = old.apply(Event::Boot).unwrap();
        for (first, second, want_from, want_state) in [
            (torn(copy(&new, 5)), copy(&old, 4), CopyId::Second, &old),
            (copy(&old, 4), torn(copy(&new, 5)), CopyId::First, &old),
            (copy(&new, 9), vec![0; STATE_SIZE], CopyId::First, &new),
        ] {
            let cur = Current::read(&first, &second);
            assert_eq!(cur.from, Some(want_from));
            assert_eq!(&cur.state, want_state);
            // The write never touches the valid copy.
            assert_eq!(cur.target(), want_from.other());
        }
    }

    #[test]
    fn garbled_seq_reads_as_zero() {
        let mut env = BootState::initial().to_env();
        for (raw, want) in [("nope", 0), ("", 0), ("banana", 0xba), ("*1", 0)] {
            env.set(VAR_SEQ, raw);
            let blob = env.encode(STATE_SIZE, Layout::Single).unwrap();
            assert_eq!(decode_copy(&blob).unwrap().seq, want, "{raw:?}");
        }
        env.set(VAR_SEQ, "0x1ff");
        let blob = env.encode(STATE_SIZE, Layout::Single).unwrap();
        assert_eq!(decode_copy(&blob).unwrap().seq, 0xff);
    }

    #[test]
    fn newer_valid_copy_wins_with_wrap_around() {
        assert!(seq_newer(0, 1));
        assert!(seq_newer(0xff, 0));
        assert!(seq_newer(0xfe, 0x10));
        assert!(!seq_newer(1, 0));
        assert!(!seq_newer(0, 0xff));
        assert!(!seq_newer(7, 7));
        assert!(!seq_newer(0, 0x80)); // half-way round: the first copy
        let a = BootState::initial();
        let (b, _) = a.apply(Event::MarkGood(Slot::A)).unwrap();
        let cur = Current::read(&copy(&a, 0xff), &copy(&b, 0));
        assert_eq!(
            (cur.from, cur.state.clone()),
            (Some(CopyId::Second), b.clone())
        );
        assert_eq!((cur.target(), cur.next_seq()), (CopyId::First, 1));
        let cur = Current::read(&copy(&a, 0xfe), &copy(&b, 0xff));
        assert_eq!((cur.target(), cur.next_seq()), (CopyId::First, 0));
        // Equal numbers: the first copy.
        let cur = Current::read(&copy(&a, 3), &copy(&b, 3));
        assert_eq!(cur.from, Some(CopyId::First));
    }

    #[test]
    fn writes_alternate_between_copies() {
        let init = initial_copies(&BootState::initial()).unwrap();
        let mut copies = [init[0].clone(), init[1].clone()];
        let mut targets = Vec::new();
        for round in 0..300u32 {
            let cur = Current::read(&copies[0], &copies[1]);
            let event = if round % 2 == 0 {
                Event::Boot
            } else {
                Event::MarkGood(Slot::A)
            };
            let plan = cur.apply(event).unwrap();
            assert_eq!(plan.write.blob.len(), STATE_SIZE);
            targets.push(plan.write.copy);
            copies[plan.write.copy.index()] = plan.write.blob.clone();
            let again = Current::read(&copies[0], &copies[1]);
            assert_eq!(again.state, plan.state, "round {round}");
            assert_eq!(again.from, Some(plan.write.copy));
        }
        // First write to the first copy (the second is newer), then alternating,
        // straight through the sequence wrap at 256.
        assert_eq!(targets[..3], [CopyId::First, CopyId::Second, CopyId::First]);
        assert!(targets.windows(2).all(|w| w[0] != w[1]));
    }

    #[test]
    fn boot_plan_matches_the_script_contract() {
        let init = initial_copies(&BootState::initial()).unwrap();
        let cur = Current::read(&init[0], &init[1]);
        assert_eq!((cur.from, cur.seq), (Some(CopyId::Second), 1));
        let plan = cur.apply(Event::Boot).unwrap();
        assert_eq!(plan.choice.map(|c| c.slot), Some(Slot::A));
        assert_eq!((plan.write.copy, plan.write.seq), (CopyId::First, 2));
        // Exactly the text `env export -c` writes: sorted, 0x-hex numbers.
        assert!(plan.write.blob[4..]
            .starts_with(b"BOOT_A_LEFT=0x2\0BOOT_B_LEFT=0x0\0BOOT_ORDER=A B\0BOOT_SEQ=0x2\0\0"));
        assert!(plan.write.blob[4 + 62..].iter().all(|&b| b == 0));
        assert_eq!(plan.state.left(Slot::A), DEFAULT_ATTEMPTS - 1);
        const { assert!(MAX_ATTEMPTS > DEFAULT_ATTEMPTS) };
    }

    #[test]
    fn illegal_events_plan_no_write() {
        let init = initial_copies(&BootState::initial()).unwrap();
        let cur = Current::read(&init[0], &init[1]);
        assert!(matches!(
            cur.apply(Event::Rollback),
            Err(PlanError::Chooser(_))
        ));
    }
}
