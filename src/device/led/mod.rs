//! The status LED and the rollback button (docs/leds.md). The pattern logic
//! is sans-io (`pattern`, `button`); the driver sets an embedded-hal output
//! pin: a GPIO line on a board, a simulated LED in host mode. The driver and
//! the button sampler run on small threads of their own: plain loops that
//! sleep, which cost PID 1 less code than two more async tasks.

pub mod button;
pub mod pattern;
pub mod pin;

use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use embedded_hal::digital::{OutputPin, PinState};

pub use pattern::{Indicator, LedPattern};

/// `Identify` longer than this is refused: a forgotten identify must not
/// hide the board's state for long.
pub const MAX_IDENTIFY_SECS: u16 = 3600;
/// The driver thread only loops and sets a pin.
const THREAD_STACK: usize = 64 << 10;

/// Reports whether an install is writing a slot now.
pub type InstallProbe = Box<dyn Fn() -> bool + Send + Sync>;

struct Shared {
    indicator: Indicator,
    /// Set on a state change, so the driver does not sleep through it.
    woken: bool,
}

/// The shared handle: boot, the API and the upgrade path tell it what
/// happens; the driver thread shows it.
pub struct Led {
    shared: Mutex<Shared>,
    wake: Condvar,
    installing: OnceLock<InstallProbe>,
    now_ms: fn() -> u64,
}

impl Led {
    fn new(now_ms: fn() -> u64) -> Self {
        Self {
            shared: Mutex::new(Shared {
                indicator: Indicator::new(),
                woken: false,
            }),
            wake: Condvar::new(),
            installing: OnceLock::new(),
            now_ms,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn with(&self, f: impl FnOnce(&mut Indicator)) {
        let mut shared = self.lock();
        f(&mut shared.indicator);
        shared.woken = true;
        self.wake.notify_one();
    }

    /// The slot was committed; `fallback`: this boot fell back.
    pub fn committed(&self, fallback: bool) {
        self.with(|i| i.committed(fallback));
    }

    /// Identify for `secs` (0 ends it).
    pub fn identify(&self, secs: u16) {
        let now = (self.now_ms)();
        self.with(|i| i.identify(now, secs));
    }

    /// Where the driver learns about installs (the A/B manager comes later
    /// in the boot than the LED).
    pub fn watch_installs(&self, probe: InstallProbe) {
        let _ = self.installing.set(probe);
        self.with(|_| {});
    }

    /// The pattern shown now.
    pub fn pattern(&self) -> LedPattern {
        let now = (self.now_ms)();
        self.lock().indicator.pattern(now)
    }

    /// Sleep `ms`, or less if the state changes.
    fn sleep(&self, ms: u64) {
        let mut shared = self.lock();
        if !shared.woken {
            shared = self
                .wake
                .wait_timeout(shared, Duration::from_millis(ms))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        shared.woken = false;
    }
}

/// Sets the pin as the indicator says, one step at a time.
struct Driver<P, F> {
    pin: P,
    on_change: F,
    shown: Option<bool>,
    failed: bool,
}

impl<P: OutputPin, F: Fn(LedPattern)> Driver<P, F> {
    /// One step: set the level due now; returns how long until the next.
    fn tick(&mut self, led: &Led) -> u64 {
        let installing = led.installing.get().is_some_and(|probe| probe());
        let now = (led.now_ms)();
        let step = {
            let mut shared = led.lock();
            shared.indicator.set_installing(installing);
            shared.indicator.step(now)
        };
        if let Some(p) = step.changed {
            tracing::info!("status LED: {}", p.name());
            (self.on_change)(p);
        }
        if self.shown != Some(step.on) {
            match self.pin.set_state(PinState::from(step.on)) {
                Ok(()) => self.shown = Some(step.on),
                // Once in the log, not at every blink.
                Err(e) if !self.failed => {
                    self.failed = true;
                    tracing::error!("status LED: {e:?}");
                }
                Err(_) => {}
            }
        }
        step.wait_ms
    }
}

/// Start the driver thread for `pin`; `on_change` hears each new pattern
/// (host mode records it). Patterns are timed by `now_ms`. `None` (logged)
/// when the thread cannot start.
pub fn start<P: OutputPin + Send + 'static>(
    pin: P,
    now_ms: fn() -> u64,
    on_change: impl Fn(LedPattern) + Send + 'static,
) -> Option<Arc<Led>> {
    let led = Arc::new(Led::new(now_ms));
    let shown = led.clone();
    let mut driver = Driver {
        pin,
        on_change,
        shown: None,
        failed: false,
    };
    let spawned = std::thread::Builder::new()
        .name("led".into())
        .stack_size(THREAD_STACK)
        .spawn(move || loop {
            let wait = driver.tick(&shown);
            shown.sleep(wait);
        });
    match spawned {
        Ok(_) => Some(led),
        Err(e) => {
            tracing::error!("status LED: starting its thread: {e}");
            None
        }
    }
}

/// An LED that is only a name: host mode's board has no GPIO.
#[derive(Debug, Default)]
pub struct SimPin;

impl embedded_hal::digital::ErrorType for SimPin {
    type Error = core::convert::Infallible;
}

impl OutputPin for SimPin {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    static FAKE_NOW: AtomicU64 = AtomicU64::new(0);
    fn fake_now() -> u64 {
        FAKE_NOW.load(Ordering::SeqCst)
    }

    /// An output pin that records every level set.
    #[derive(Clone, Default)]
    struct RecordingPin(Arc<Mutex<Vec<bool>>>);
    impl embedded_hal::digital::ErrorType for RecordingPin {
        type Error = core::convert::Infallible;
    }
    impl OutputPin for RecordingPin {
        fn set_low(&mut self) -> Result<(), Self::Error> {
            self.0.lock().unwrap().push(false);
            Ok(())
        }
        fn set_high(&mut self) -> Result<(), Self::Error> {
            self.0.lock().unwrap().push(true);
            Ok(())
        }
    }

    /// The driver sets the pin as the pattern says and follows state
    /// changes: booting blinks, healthy is on, identify blinks, then back.
    #[test]
    fn driver_sets_the_pin_and_follows_the_state() {
        FAKE_NOW.store(0, Ordering::SeqCst);
        let led = Led::new(fake_now);
        let pin = RecordingPin::default();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let mut driver = Driver {
            pin: pin.clone(),
            on_change: move |p| seen2.lock().unwrap().push(p),
            shown: None,
            failed: false,
        };
        // Advance the fake clock, then one driver step.
        let mut run = |ms: u64| {
            FAKE_NOW.fetch_add(ms, Ordering::SeqCst);
            driver.tick(&led)
        };
        assert_eq!(run(0), 100);
        assert_eq!(*pin.0.lock().unwrap(), vec![true]);
        assert_eq!(run(120), 80, "booting: off after 100 ms, for 100");
        assert_eq!(*pin.0.lock().unwrap(), vec![true, false]);
        run(10);
        assert_eq!(pin.0.lock().unwrap().len(), 2, "unchanged level: no write");
        led.committed(false);
        assert_eq!(run(0), pattern::MAX_POLL_MS);
        assert_eq!(led.pattern(), LedPattern::Healthy);
        assert_eq!(pin.0.lock().unwrap().last(), Some(&true));
        led.identify(2);
        run(0);
        assert_eq!(pin.0.lock().unwrap().last(), Some(&true));
        run(60); // identify: on 50, off 50
        assert_eq!(pin.0.lock().unwrap().last(), Some(&false));
        run(2_000);
        assert_eq!(led.pattern(), LedPattern::Healthy);
        led.watch_installs(Box::new(|| true));
        run(0);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                LedPattern::Booting,
                LedPattern::Healthy,
                LedPattern::Identify,
                LedPattern::Healthy,
                LedPattern::Upgrading
            ]
        );
    }

    /// A state change wakes the sleeping driver at once.
    #[test]
    fn a_state_change_cuts_the_sleep_short() {
        let led = Arc::new(Led::new(fake_now));
        let other = led.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            other.committed(false);
        });
        let start = std::time::Instant::now();
        led.sleep(10_000);
        assert!(start.elapsed() < Duration::from_secs(5));
        t.join().unwrap();
        // The wake-up was consumed: the next sleep waits its time.
        let start = std::time::Instant::now();
        led.sleep(30);
        assert!(start.elapsed() >= Duration::from_millis(25));
    }
}
