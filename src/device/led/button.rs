//! The rollback button: held from init's start for [`HOLD_MS`], it asks for
//! a rollback to the other good slot. The decision is a pure function of
//! samples; the sampler reads an embedded-hal input pin.

use std::time::Duration;

use embedded_hal::digital::InputPin;

/// How long the button must be held, from init's start. Long enough that a
/// knock or a bouncing contact does not roll a board back.
pub const HOLD_MS: u64 = 3_000;
/// Sampling period while deciding.
pub const SAMPLE_MS: u64 = 50;

/// Where the decision stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Pressed so far; keep sampling.
    Pending,
    /// Pressed at every sample for [`HOLD_MS`]: roll back.
    Held,
    /// Released (or unreadable) at some sample: a normal boot.
    NotHeld,
}

/// Decides from samples: every sample must read pressed, from the first
/// one until [`HOLD_MS`] later. One released sample ends it (the safe way).
#[derive(Debug, Clone)]
pub struct HoldDetector {
    start_ms: Option<u64>,
    done: Option<Hold>,
}

impl Default for HoldDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl HoldDetector {
    pub fn new() -> Self {
        Self {
            start_ms: None,
            done: None,
        }
    }

    /// One sample at `now_ms`: `Some(true)` pressed, `Some(false)`
    /// released, `None` the pin could not be read.
    pub fn feed(&mut self, now_ms: u64, pressed: Option<bool>) -> Hold {
        if let Some(done) = self.done {
            return done;
        }
        let start = *self.start_ms.get_or_insert(now_ms);
        let result = match pressed {
            Some(true) if now_ms.saturating_sub(start) >= HOLD_MS => Hold::Held,
            Some(true) => Hold::Pending,
            _ => Hold::NotHeld,
        };
        if result != Hold::Pending {
            self.done = Some(result);
        }
        result
    }
}

/// Sample `pin` (high = pressed, polarity is the line's `active-low`) until
/// the detector decides, sleeping between samples (run it on its own
/// thread). Returns whether the button was held.
pub fn sample<P: InputPin>(mut pin: P, now_ms: impl Fn() -> u64) -> bool {
    let mut detector = HoldDetector::new();
    loop {
        let pressed = pin.is_high().ok();
        match detector.feed(now_ms(), pressed) {
            Hold::Held => return true,
            Hold::NotHeld => return false,
            Hold::Pending => std::thread::sleep(Duration::from_millis(SAMPLE_MS)),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_for_the_whole_window_is_a_rollback() {
        let mut d = HoldDetector::new();
        for t in (500..3_500).step_by(50) {
            assert_eq!(d.feed(t, Some(true)), Hold::Pending, "{t}");
        }
        assert_eq!(d.feed(3_500, Some(true)), Hold::Held);
        // Decided: later samples do not change it.
        assert_eq!(d.feed(3_550, Some(false)), Hold::Held);
    }

    #[test]
    fn a_release_or_a_read_error_is_a_normal_boot() {
        let mut d = HoldDetector::new();
        assert_eq!(d.feed(0, Some(true)), Hold::Pending);
        assert_eq!(d.feed(2_950, Some(false)), Hold::NotHeld);
        assert_eq!(d.feed(3_000, Some(true)), Hold::NotHeld);

        assert_eq!(HoldDetector::new().feed(0, Some(false)), Hold::NotHeld);
        let mut d = HoldDetector::new();
        d.feed(0, Some(true));
        assert_eq!(d.feed(100, None), Hold::NotHeld);
    }

    /// A fake input pin that replays levels, one per read.
    struct Replay(std::vec::IntoIter<bool>);
    impl embedded_hal::digital::ErrorType for Replay {
        type Error = core::convert::Infallible;
    }
    impl InputPin for Replay {
        fn is_high(&mut self) -> Result<bool, Self::Error> {
            Ok(self.0.next().unwrap_or(false))
        }
        fn is_low(&mut self) -> Result<bool, Self::Error> {
            self.is_high().map(|h| !h)
        }
    }

    #[test]
    fn sampler_reads_the_pin_until_decided() {
        let clock = std::sync::atomic::AtomicU64::new(0);
        // Each sample advances the fake clock by 1 s.
        let now = || clock.fetch_add(1_000, std::sync::atomic::Ordering::Relaxed);
        let held = sample(Replay(vec![true; 10].into_iter()), now);
        assert!(held);
        let clock2 = std::sync::atomic::AtomicU64::new(0);
        let now2 = || clock2.fetch_add(1_000, std::sync::atomic::Ordering::Relaxed);
        let released = sample(
            Replay(vec![true, true, false, true, true].into_iter()),
            now2,
        );
        assert!(!released);
    }
}
