//! The status LED and the rollback button (docs/leds.md). The pattern logic
//! is sans-io (`pattern`, `button`); the driver sets an embedded-hal output
//! pin: a GPIO line on a board, a simulated LED in host mode.

pub mod button;
pub mod pattern;
pub mod pin;

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use embedded_hal::digital::{OutputPin, PinState};

pub use pattern::{Indicator, LedPattern};

/// `Identify` longer than this is refused: a forgotten identify must not
/// hide the board's state for long.
pub const MAX_IDENTIFY_SECS: u16 = 3600;

/// Reports whether an install is writing a slot now.
pub type InstallProbe = Box<dyn Fn() -> bool + Send + Sync>;

/// The shared handle: boot, the API and the upgrade path tell it what
/// happens; the driver task shows it.
pub struct Led {
    state: Mutex<Indicator>,
    wake: smol::channel::Sender<()>,
    installing: OnceLock<InstallProbe>,
    now_ms: fn() -> u64,
}

impl Led {
    fn with<R>(&self, f: impl FnOnce(&mut Indicator) -> R) -> R {
        let r = f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner));
        // Full means a wake-up is pending already.
        let _ = self.wake.try_send(());
        r
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
        let _ = self.wake.try_send(());
    }

    /// The pattern shown now.
    pub fn pattern(&self) -> LedPattern {
        let now = (self.now_ms)();
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pattern(now)
    }
}

/// Start the driver for `pin` on `ex`; `on_change` hears each new pattern
/// (host mode records it). Patterns are timed by `now_ms`.
pub fn start<P: OutputPin + Send + 'static>(
    ex: &smol::Executor<'static>,
    pin: P,
    now_ms: fn() -> u64,
    on_change: impl Fn(LedPattern) + Send + 'static,
) -> Arc<Led> {
    let (wake, woken) = smol::channel::bounded(1);
    let led = Arc::new(Led {
        state: Mutex::new(Indicator::new()),
        wake,
        installing: OnceLock::new(),
        now_ms,
    });
    ex.spawn(drive(led.clone(), pin, woken, on_change)).detach();
    led
}

async fn drive<P: OutputPin>(
    led: Arc<Led>,
    mut pin: P,
    woken: smol::channel::Receiver<()>,
    on_change: impl Fn(LedPattern),
) {
    let mut shown: Option<bool> = None;
    let mut failed = false;
    loop {
        let installing = led.installing.get().is_some_and(|probe| probe());
        let now = (led.now_ms)();
        let step = {
            let mut ind = led.state.lock().unwrap_or_else(PoisonError::into_inner);
            ind.set_installing(installing);
            ind.step(now)
        };
        if let Some(p) = step.changed {
            tracing::info!("status LED: {}", p.name());
            on_change(p);
        }
        if shown != Some(step.on) {
            match pin.set_state(PinState::from(step.on)) {
                Ok(()) => shown = Some(step.on),
                // Once in the log, not at every blink.
                Err(e) if !failed => {
                    failed = true;
                    tracing::error!("status LED: {e:?}");
                }
                Err(_) => {}
            }
        }
        let timer = async {
            smol::Timer::after(Duration::from_millis(step.wait_ms)).await;
        };
        let wake = async {
            let _ = woken.recv().await;
        };
        smol::future::or(timer, wake).await;
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
        let ex = Arc::new(smol::Executor::new());
        let pin = RecordingPin::default();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        FAKE_NOW.store(0, Ordering::SeqCst);
        let led = start(&ex, pin.clone(), fake_now, move |p| {
            seen2.lock().unwrap().push(p)
        });
        let run = |ms: u64| {
            // Advance the fake clock, then let the driver catch up.
            FAKE_NOW.fetch_add(ms, Ordering::SeqCst);
            let _ = led.wake.try_send(());
            for _ in 0..50 {
                ex.try_tick();
            }
        };
        run(0);
        assert_eq!(*pin.0.lock().unwrap(), vec![true]);
        run(120); // booting: off after 100 ms
        assert_eq!(*pin.0.lock().unwrap(), vec![true, false]);
        led.committed(false);
        run(0);
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
}
