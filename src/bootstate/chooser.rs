//! The A/B chooser (RAUC's bootchooser shape) as a pure state machine:
//! `state + event → next state`, no I/O. `uboot/boot.cmd` runs [`Event::Boot`]
//! in U-Boot; outpost-init runs the others. The model reads env values the
//! way the script does (U-Boot's `setexpr`/`test` number parsing), so a
//! garbled value means the same thing on both sides.

use super::Env;

/// Boot attempts a slot gets when it is (re)armed or marked good.
pub const DEFAULT_ATTEMPTS: u8 = 3;

/// Most attempts a slot may hold. boot.cmd clamps larger counters to this,
/// so a garbled counter cannot keep a bad slot booting for ever.
pub const MAX_ATTEMPTS: u8 = 0x10;

/// The chooser variables (U-Boot imports and exports exactly these, plus
/// `BOOT_SEQ` of the redundant copies).
pub const VAR_ORDER: &str = "BOOT_ORDER";
pub const VAR_A_LEFT: &str = "BOOT_A_LEFT";
pub const VAR_B_LEFT: &str = "BOOT_B_LEFT";
/// Slots marked good since they were last switched to (`A`, `A B`, or
/// absent). U-Boot passes it through untouched.
pub const VAR_GOOD: &str = "BOOT_GOOD";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub const ALL: [Slot; 2] = [Slot::A, Slot::B];

    pub fn name(self) -> &'static str {
        match self {
            Slot::A => "A",
            Slot::B => "B",
        }
    }
    pub fn parse(s: &str) -> Option<Slot> {
        match s {
            "A" => Some(Slot::A),
            "B" => Some(Slot::B),
            _ => None,
        }
    }
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The chooser state, normalized: `order` holds 1 or 2 distinct slots,
/// counters are `0..=MAX_ATTEMPTS`, `good` is sorted and distinct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootState {
    /// Slots in the order U-Boot tries them; a slot not listed is never booted.
    pub order: Vec<Slot>,
    pub a_left: u8,
    pub b_left: u8,
    /// Slots marked good (healthy) since they were last switched to.
    pub good: Vec<Slot>,
}

/// What happens to the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// U-Boot chooses a slot and spends one of its attempts (boot.cmd).
    Boot,
    /// The booted slot passed its health checks: its attempts are restored
    /// and it counts as good.
    MarkGood(Slot),
    /// Make `slot` primary with `attempts` tries (an installed update), in one write.
    SwitchTo { slot: Slot, attempts: u8 },
    /// Make the second slot of the order primary again; it must be good.
    Rollback,
}

/// The slot [`Event::Boot`] chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    pub slot: Slot,
    /// No slot had attempts left: every counter was re-armed first.
    pub rearmed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChooserError {
    #[error("attempts must be 1 to {MAX_ATTEMPTS}, not {0}")]
    Attempts(u8),
    #[error("rollback needs a good slot after {primary} in BOOT_ORDER")]
    NoGoodSlot { primary: Slot },
}

impl BootState {
    /// Fresh card: slot A first with full attempts, B empty.
    pub fn initial() -> Self {
        Self {
            order: vec![Slot::A, Slot::B],
            a_left: DEFAULT_ATTEMPTS,
            b_left: 0,
            good: Vec::new(),
        }
    }

    pub fn left(&self, slot: Slot) -> u8 {
        match slot {
            Slot::A => self.a_left,
            Slot::B => self.b_left,
        }
    }

    fn set_left(&mut self, slot: Slot, n: u8) {
        match slot {
            Slot::A => self.a_left = n,
            Slot::B => self.b_left = n,
        }
    }

    /// The slot U-Boot tries first.
    pub fn primary(&self) -> Slot {
        self.order.first().copied().unwrap_or(Slot::A)
    }

    pub fn is_good(&self, slot: Slot) -> bool {
        self.good.contains(&slot)
    }

    /// Apply one event. `Boot` also says which slot was chosen.
    pub fn apply(&self, event: Event) -> Result<(BootState, Option<Choice>), ChooserError> {
        let mut next = self.clone();
        match event {
            Event::Boot => {
                let choice = next.boot();
                return Ok((next, Some(choice)));
            }
            Event::MarkGood(slot) => {
                next.set_left(slot, DEFAULT_ATTEMPTS);
                next.add_good(slot);
            }
            Event::SwitchTo { slot, attempts } => {
                if attempts == 0 || attempts > MAX_ATTEMPTS {
                    return Err(ChooserError::Attempts(attempts));
                }
                next.order = vec![slot, slot.other()];
                next.set_left(slot, attempts);
                next.good.retain(|&s| s != slot);
            }
            Event::Rollback => {
                let primary = self.primary();
                let target = primary.other();
                if !self.is_good(target) {
                    return Err(ChooserError::NoGoodSlot { primary });
                }
                next.order = vec![target, primary];
                if next.left(target) == 0 {
                    next.set_left(target, DEFAULT_ATTEMPTS);
                }
            }
        }
        Ok((next, None))
    }

    /// boot.cmd's rule: the first slot in order with attempts left, one
    /// attempt spent. None left: re-arm every counter (never strand the
    /// board in U-Boot, rauc#683), then take the first slot of the order.
    fn boot(&mut self) -> Choice {
        let found = self.order.iter().copied().find(|&s| self.left(s) > 0);
        let (slot, rearmed) = match found {
            Some(s) => (s, false),
            None => {
                self.a_left = DEFAULT_ATTEMPTS;
                self.b_left = DEFAULT_ATTEMPTS;
                (self.primary(), true)
            }
        };
        self.set_left(slot, self.left(slot).saturating_sub(1));
        Choice { slot, rearmed }
    }

    fn add_good(&mut self, slot: Slot) {
        if !self.good.contains(&slot) {
            self.good.push(slot);
            self.good.sort();
        }
    }

    /// The variables as U-Boot exports them: numbers as `0x` hex (what
    /// `setexpr` computes, prefixed so `test -gt` reads them as hex), an
    /// empty `BOOT_GOOD` left out (U-Boot cannot hold an empty variable).
    pub fn to_env(&self) -> Env {
        let mut env = Env::new();
        env.set(VAR_ORDER, slot_words(&self.order));
        env.set(VAR_A_LEFT, format!("{:#x}", self.a_left));
        env.set(VAR_B_LEFT, format!("{:#x}", self.b_left));
        if !self.good.is_empty() {
            env.set(VAR_GOOD, slot_words(&self.good));
        }
        env
    }

    /// Read the chooser variables the way boot.cmd does; never fails. What
    /// was garbled (and how it was read) is listed, for the log.
    pub fn from_env(env: &Env) -> (Self, Vec<String>) {
        let mut issues = Vec::new();
        let raw_order = env.get(VAR_ORDER).unwrap_or("");
        let mut order = slot_list(raw_order);
        if order.is_empty() {
            order = vec![Slot::A, Slot::B];
        }
        if slot_words(&order) != raw_order {
            issues.push(format!(
                "{VAR_ORDER} `{}` read as `{}`",
                raw_order.escape_debug(),
                slot_words(&order)
            ));
        }
        let mut counter = |key: &str| {
            let raw = env.get(key).unwrap_or("");
            let n = counter_value(raw);
            if format!("{n:#x}") != raw && raw != n.to_string() {
                issues.push(format!("{key} `{}` read as {n}", raw.escape_debug()));
            }
            n
        };
        let a_left = counter(VAR_A_LEFT);
        let b_left = counter(VAR_B_LEFT);
        let raw_good = env.get(VAR_GOOD).unwrap_or("");
        let mut good = slot_list(raw_good);
        good.sort();
        if slot_words(&good) != raw_good {
            issues.push(format!(
                "{VAR_GOOD} `{}` read as `{}`",
                raw_good.escape_debug(),
                slot_words(&good)
            ));
        }
        (
            Self {
                order,
                a_left,
                b_left,
                good,
            },
            issues,
        )
    }
}

fn slot_words(slots: &[Slot]) -> String {
    let names: Vec<&str> = slots.iter().map(|s| s.name()).collect();
    names.join(" ")
}

/// boot.cmd's reading of a slot list: the words `A` and `B`, first
/// occurrence only; every other word is ignored.
fn slot_list(text: &str) -> Vec<Slot> {
    let mut out = Vec::new();
    for slot in text.split_whitespace().filter_map(Slot::parse) {
        if !out.contains(&slot) {
            out.push(slot);
        }
    }
    out
}

/// A counter as boot.cmd reads it: `setexpr V "${V}" + 0` (U-Boot's
/// `hextoul`), then `test 0x${V}` compares it as a signed 64-bit number:
/// negative (or 0) is 0, more than [`MAX_ATTEMPTS`] is `MAX_ATTEMPTS`.
pub fn counter_value(raw: &str) -> u8 {
    #[allow(clippy::cast_possible_wrap)] // U-Boot's `test` casts the same way
    let signed = uboot_hextoul(raw) as i64;
    u8::try_from(signed.clamp(0, i64::from(MAX_ATTEMPTS))).unwrap_or(0)
}

/// U-Boot's `hextoul` (`simple_strtoul(s, NULL, 16)`), as `setexpr` applies
/// it to its operands: an optional `0x`, then hex digits up to the first
/// other character, wrapping at 64 bits. No digits is 0. boot.cmd zeroes a
/// value whose first byte sorts before `0` (so `*addr`, which setexpr would
/// dereference, never reaches it); that too reads as 0 here.
pub fn uboot_hextoul(raw: &str) -> u64 {
    let digits = raw
        .strip_prefix("0x")
        .or_else(|| raw.strip_prefix("0X"))
        .unwrap_or(raw);
    let mut value: u64 = 0;
    for c in digits.chars() {
        let Some(d) = c.to_digit(16) else { break };
        value = value.wrapping_mul(16).wrapping_add(u64::from(d));
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(order: &[Slot], a: u8, b: u8, good: &[Slot]) -> BootState {
        BootState {
            order: order.to_vec(),
            a_left: a,
            b_left: b,
            good: good.to_vec(),
        }
    }

    fn env_of(pairs: &[(&str, &str)]) -> Env {
        let mut env = Env::new();
        for (k, v) in pairs {
            env.set(k, *v);
        }
        env
    }

    use Slot::{A, B};

    // Malformed input first.

    #[test]
    fn garbled_counters_read_like_uboot() {
        for (raw, want) in [
            ("", 0),
            ("zz", 0),
            ("-1", 0),
            ("*0x40000000", 0),
            (" 3", 0),
            ("3z", 3),
            ("3 4", 3),
            ("0x0x3", 0),
            ("0X2", 2),
            ("a", 10),
            ("0xa", 10),
            ("10", MAX_ATTEMPTS),
            ("0x11", MAX_ATTEMPTS),
            ("ffffffffffffffff", 0), // -1 to `test`
            ("8000000000000000", 0), // most negative
            ("7fffffffffffffff", MAX_ATTEMPTS),
            ("1ffffffffffffffff2", 0), // wraps: ...fff2 is negative
            ("é", 0),
        ] {
            assert_eq!(counter_value(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn garbled_env_is_normalized_and_reported() {
        let env = env_of(&[
            (VAR_ORDER, "C B  B A x"),
            (VAR_A_LEFT, "zz"),
            (VAR_B_LEFT, "0x2"),
            (VAR_GOOD, "B B Q"),
        ]);
        let (s, issues) = BootState::from_env(&env);
        assert_eq!(s, state(&[B, A], 0, 2, &[B]));
        assert_eq!(issues.len(), 3, "{issues:?}");
        assert!(issues[0].contains("BOOT_ORDER"), "{issues:?}");
        assert!(issues[1].contains("BOOT_A_LEFT"), "{issues:?}");

        // Nothing at all: order A B, no attempts, nothing good.
        let (s, issues) = BootState::from_env(&Env::new());
        assert_eq!(s, state(&[A, B], 0, 0, &[]));
        assert!(issues.iter().any(|i| i.contains("BOOT_ORDER")));
        // A single-slot order stays single.
        let (s, _) = BootState::from_env(&env_of(&[(VAR_ORDER, "B")]));
        assert_eq!(s.order, [B]);
    }

    #[test]
    fn canonical_env_round_trips_without_issues() {
        for s in [
            BootState::initial(),
            state(&[B, A], 0xf, 0, &[A, B]),
            state(&[B], 0, MAX_ATTEMPTS, &[A]),
        ] {
            let env = s.to_env();
            assert_eq!(BootState::from_env(&env), (s, vec![]));
        }
        // Decimal counters (older images wrote `3`) are read without complaint.
        let env = env_of(&[(VAR_ORDER, "A B"), (VAR_A_LEFT, "3"), (VAR_B_LEFT, "0")]);
        assert_eq!(BootState::from_env(&env), (BootState::initial(), vec![]));
        let env = BootState::initial().to_env();
        assert_eq!(env.get(VAR_A_LEFT), Some("0x3"));
        assert_eq!(env.get(VAR_GOOD), None);
    }

    #[test]
    fn boot_takes_first_slot_with_attempts() {
        let (s, c) = BootState::initial().apply(Event::Boot).unwrap();
        assert_eq!(
            c,
            Some(Choice {
                slot: A,
                rearmed: false
            })
        );
        assert_eq!(s, state(&[A, B], 2, 0, &[]));

        // A has none left, B primary: B.
        let (s, c) = state(&[B, A], 0, 1, &[A]).apply(Event::Boot).unwrap();
        assert_eq!(c.unwrap().slot, B);
        assert_eq!(s, state(&[B, A], 0, 0, &[A]));

        // B primary but exhausted: fall back to A.
        let (s, c) = state(&[B, A], 2, 0, &[A]).apply(Event::Boot).unwrap();
        assert_eq!(
            c.unwrap(),
            Choice {
                slot: A,
                rearmed: false
            }
        );
        assert_eq!(s, state(&[B, A], 1, 0, &[A]));
    }

    #[test]
    fn boot_rearms_when_nothing_is_left() {
        let (s, c) = state(&[B, A], 0, 0, &[]).apply(Event::Boot).unwrap();
        assert_eq!(
            c.unwrap(),
            Choice {
                slot: B,
                rearmed: true
            }
        );
        assert_eq!(s, state(&[B, A], 3, 2, &[]));
        // A slot missing from the order is never chosen, even after re-arming.
        let (s, c) = state(&[A], 0, 5, &[]).apply(Event::Boot).unwrap();
        assert_eq!(
            c.unwrap(),
            Choice {
                slot: A,
                rearmed: true
            }
        );
        assert_eq!(s, state(&[A], 2, 3, &[]));
    }

    #[test]
    fn repeated_boots_burn_then_rearm() {
        let mut s = BootState::initial();
        let mut seen = Vec::new();
        for _ in 0..5 {
            let (next, c) = s.apply(Event::Boot).unwrap();
            seen.push((c.unwrap().rearmed, next.a_left));
            s = next;
        }
        assert_eq!(
            seen,
            [(false, 2), (false, 1), (false, 0), (true, 2), (false, 1)]
        );
    }

    #[test]
    fn mark_good_restores_attempts() {
        let (s, c) = state(&[A, B], 2, 0, &[]).apply(Event::MarkGood(A)).unwrap();
        assert_eq!(c, None);
        assert_eq!(s, state(&[A, B], 3, 0, &[A]));
        // Idempotent; marking the fallback slot does not reorder.
        let (s2, _) = s.apply(Event::MarkGood(A)).unwrap();
        assert_eq!(s2, s);
        let (s, _) = state(&[B, A], 1, 0, &[A])
            .apply(Event::MarkGood(A))
            .unwrap();
        assert_eq!(s, state(&[B, A], 3, 0, &[A]));
    }

    #[test]
    fn switch_to_makes_a_trial_primary_in_one_step() {
        let (s, _) = state(&[A, B], 3, 0, &[A])
            .apply(Event::SwitchTo {
                slot: B,
                attempts: 3,
            })
            .unwrap();
        assert_eq!(s, state(&[B, A], 3, 3, &[A]));
        // Switching to a slot that was good makes it a trial again.
        let (s, _) = state(&[A, B], 3, 3, &[A, B])
            .apply(Event::SwitchTo {
                slot: B,
                attempts: 1,
            })
            .unwrap();
        assert_eq!(s, state(&[B, A], 3, 1, &[A]));
        for bad in [0, MAX_ATTEMPTS + 1] {
            assert_eq!(
                BootState::initial().apply(Event::SwitchTo {
                    slot: B,
                    attempts: bad
                }),
                Err(ChooserError::Attempts(bad))
            );
        }
    }

    #[test]
    fn rollback_needs_a_good_other_slot() {
        assert_eq!(
            BootState::initial().apply(Event::Rollback),
            Err(ChooserError::NoGoodSlot { primary: A })
        );
        let (s, _) = state(&[B, A], 0, 3, &[A, B])
            .apply(Event::Rollback)
            .unwrap();
        assert_eq!(s, state(&[A, B], 3, 3, &[A, B]));
        let (s, _) = state(&[B, A], 2, 3, &[A]).apply(Event::Rollback).unwrap();
        assert_eq!(s, state(&[A, B], 2, 3, &[A]));
    }

    #[test]
    fn slot_names() {
        assert_eq!(Slot::parse("A").map(Slot::other), Some(B));
        assert_eq!(Slot::parse("a"), None);
        assert_eq!(B.to_string(), "B");
    }
}
