//! The hardware watchdog: armed right after the modules load (the driver,
//! e.g. `i6300esb` on qemu-virt or `bcm2835_wdt` on a Pi, is one of them),
//! petted from a task on PID 1's executor every timeout/3. If the executor
//! stalls, or init decides the boot is unhealthy and stops petting, the board
//! resets and U-Boot spends the next attempt.
//!
//! On restart the watchdog stays armed (a shutdown that hangs still ends in a
//! reset; the reset itself disarms it). On power-off it is disarmed first with
//! the magic close (`V`), or a halted board would be reset back to life.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The first watchdog device.
pub const WATCHDOG_DEV: &str = "/dev/watchdog";
/// Seconds without a pet before the board resets, unless `outpost.watchdog=`
/// says otherwise. Long enough for a slow SD card, short enough that a hung
/// board is back within a minute.
pub const DEFAULT_TIMEOUT_SECS: u32 = 15;
/// Bounds for `outpost.watchdog=` (a petting period under a second wastes
/// wake-ups; past five minutes a hang costs too much).
pub const MIN_TIMEOUT_SECS: u32 = super::cmdline::MIN_WATCHDOG_SECS;
pub const MAX_TIMEOUT_SECS: u32 = super::cmdline::MAX_WATCHDOG_SECS;

/// What a watchdog device can do; a fake in tests.
pub trait WatchdogDev: Send {
    /// Ask for `secs`; the driver's actual timeout comes back.
    fn set_timeout(&mut self, secs: u32) -> Result<u32, String>;
    fn keepalive(&mut self) -> std::io::Result<()>;
    /// The magic close: write `V`, close. The driver stops the timer.
    fn disarm(&mut self) -> std::io::Result<()>;
}

/// `/dev/watchdog`. Opening it starts the timer.
pub struct DevWatchdog {
    file: Option<File>,
}

impl DevWatchdog {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().write(true).open(path)?;
        Ok(Self { file: Some(file) })
    }
}

impl WatchdogDev for DevWatchdog {
    fn set_timeout(&mut self, secs: u32) -> Result<u32, String> {
        let file = self.file.as_ref().ok_or("watchdog is closed")?;
        let want = i32::try_from(secs).map_err(|_| format!("{secs} s is too long"))?;
        super::sys::watchdog_set_timeout(file, want)
            .map_err(|e| format!("WDIOC_SETTIMEOUT {secs}: {e}"))
            .map(|got| u32::try_from(got).unwrap_or(secs))
    }
    fn keepalive(&mut self) -> std::io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.write_all(b"\0"),
            None => Ok(()),
        }
    }
    fn disarm(&mut self) -> std::io::Result<()> {
        match self.file.take() {
            Some(mut f) => f.write_all(b"V"),
            None => Ok(()),
        }
    }
}

/// An armed watchdog and whether we still pet it.
pub struct Watchdog {
    dev: Mutex<Box<dyn WatchdogDev>>,
    /// Seconds; changed at run time by the machine config.
    timeout_secs: AtomicU32,
    petting: AtomicBool,
}

impl Watchdog {
    /// Set the timeout (logging what the driver chose) and pet once.
    pub fn arm(mut dev: Box<dyn WatchdogDev>, secs: u32) -> Self {
        let actual = program(dev.as_mut(), secs, "armed");
        let wd = Self {
            dev: Mutex::new(dev),
            timeout_secs: AtomicU32::new(actual),
            petting: AtomicBool::new(true),
        };
        wd.pet();
        wd
    }

    /// Change the timeout on a running board (machine config
    /// `watchdog.timeout_secs`); pets at once so the new period starts now.
    pub fn set_timeout(&self, secs: u32) -> Duration {
        let mut dev = self.dev.lock().unwrap_or_else(PoisonError::into_inner);
        let actual = program(dev.as_mut(), secs, "timeout set to");
        self.timeout_secs.store(actual, Ordering::Release);
        drop(dev);
        self.pet();
        self.timeout()
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(u64::from(self.timeout_secs.load(Ordering::Acquire)))
    }

    /// How often [`keep_alive`] pets: a third of the timeout.
    pub fn pet_interval(&self) -> Duration {
        (self.timeout() / 3).max(Duration::from_millis(500))
    }

    /// Pet it, unless petting was stopped. Returns whether it was petted.
    pub fn pet(&self) -> bool {
        if !self.petting.load(Ordering::Acquire) {
            return false;
        }
        let mut dev = self.dev.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = dev.keepalive() {
            tracing::error!("watchdog: keepalive: {e}");
            return false;
        }
        true
    }

    /// Stop petting for good: the board resets within the timeout.
    pub fn stop_petting(&self, why: &str) {
        if self.petting.swap(false, Ordering::AcqRel) {
            tracing::error!(
                "watchdog: no longer petted ({why}); reset in at most {} s",
                self.timeout().as_secs()
            );
        }
    }

    /// Disarm before a power-off (magic close).
    pub fn disarm(&self) {
        self.petting.store(false, Ordering::Release);
        let mut dev = self.dev.lock().unwrap_or_else(PoisonError::into_inner);
        match dev.disarm() {
            Ok(()) => tracing::info!("watchdog disarmed"),
            Err(e) => tracing::error!("watchdog: disarm: {e}"),
        }
    }
}

/// Ask the driver for `secs` (clamped to our bounds); returns the timeout
/// to pet for.
fn program(dev: &mut dyn WatchdogDev, secs: u32, what: &str) -> u32 {
    let secs = secs.clamp(MIN_TIMEOUT_SECS, MAX_TIMEOUT_SECS);
    match dev.set_timeout(secs) {
        Ok(got) => {
            tracing::info!("watchdog {what} {got} s");
            got.clamp(1, secs)
        }
        Err(e) => {
            // The driver's default (30 s on i6300esb) is longer than
            // ours, so petting at our pace is still in time.
            tracing::warn!("watchdog: {e}; keeping the driver's timeout");
            secs
        }
    }
}

/// Open and arm `/dev/watchdog`; `None` (logged) when the board has none.
pub fn open(path: &Path, secs: u32) -> Option<Arc<Watchdog>> {
    match DevWatchdog::open(path) {
        Ok(dev) => Some(Arc::new(Watchdog::arm(Box::new(dev), secs))),
        Err(e) => {
            tracing::warn!("watchdog: {}: {e}; running without one", path.display());
            None
        }
    }
}

/// The petting task: runs as long as the executor does.
pub async fn keep_alive(wd: Arc<Watchdog>) {
    loop {
        smol::Timer::after(wd.pet_interval()).await;
        wd.pet();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Fake {
        log: Arc<Mutex<Vec<String>>>,
        refuse_timeout: bool,
        max: Option<u32>,
    }

    impl WatchdogDev for Fake {
        fn set_timeout(&mut self, secs: u32) -> Result<u32, String> {
            self.log.lock().unwrap().push(format!("timeout {secs}"));
            if self.refuse_timeout {
                return Err("EINVAL".into());
            }
            Ok(self.max.map_or(secs, |m| secs.min(m)))
        }
        fn keepalive(&mut self) -> std::io::Result<()> {
            self.log.lock().unwrap().push("pet".into());
            Ok(())
        }
        fn disarm(&mut self) -> std::io::Result<()> {
            self.log.lock().unwrap().push("V".into());
            Ok(())
        }
    }

    #[test]
    fn out_of_range_timeouts_are_clamped_and_refusals_tolerated() {
        let fake = Fake::default();
        let wd = Watchdog::arm(Box::new(fake.clone()), 0);
        assert_eq!(
            wd.timeout(),
            Duration::from_secs(u64::from(MIN_TIMEOUT_SECS))
        );
        assert_eq!(wd.pet_interval(), Duration::from_secs(1));
        let wd = Watchdog::arm(Box::new(fake.clone()), 100_000);
        assert_eq!(wd.timeout().as_secs(), u64::from(MAX_TIMEOUT_SECS));
        let refusing = Fake {
            refuse_timeout: true,
            ..Fake::default()
        };
        let wd = Watchdog::arm(Box::new(refusing.clone()), 15);
        assert_eq!(wd.timeout().as_secs(), 15);
        assert_eq!(*refusing.log.lock().unwrap(), ["timeout 15", "pet"]);
        // A driver that lowers the timeout: we pet faster.
        let wd = Watchdog::arm(
            Box::new(Fake {
                max: Some(6),
                ..Fake::default()
            }),
            15,
        );
        assert_eq!(wd.pet_interval(), Duration::from_secs(2));
    }

    #[test]
    fn stops_petting_and_disarms() {
        let fake = Fake::default();
        let wd = Watchdog::arm(Box::new(fake.clone()), 15);
        assert!(wd.pet());
        wd.stop_petting("test");
        assert!(!wd.pet());
        wd.disarm();
        assert_eq!(*fake.log.lock().unwrap(), ["timeout 15", "pet", "pet", "V"]);
    }

    #[test]
    fn timeout_changes_at_run_time() {
        let fake = Fake::default();
        let wd = Watchdog::arm(Box::new(fake.clone()), 15);
        assert_eq!(wd.set_timeout(30).as_secs(), 30);
        assert_eq!(wd.pet_interval(), Duration::from_secs(10));
        assert_eq!(wd.set_timeout(1).as_secs(), u64::from(MIN_TIMEOUT_SECS));
        assert_eq!(
            *fake.log.lock().unwrap(),
            ["timeout 15", "pet", "timeout 30", "pet", "timeout 3", "pet"]
        );
    }

    #[test]
    fn missing_device_is_not_fatal() {
        assert!(open(Path::new("/nonexistent/watchdog"), 15).is_none());
    }

    #[test]
    fn keep_alive_pets_on_schedule() {
        let fake = Fake::default();
        let wd = Arc::new(Watchdog::arm(Box::new(fake.clone()), MIN_TIMEOUT_SECS));
        smol::block_on(async {
            let task = smol::spawn(keep_alive(wd.clone()));
            smol::Timer::after(Duration::from_millis(2300)).await;
            drop(task);
        });
        let pets = fake
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| *l == "pet")
            .count();
        // The pet at arming, then one a second (timing on a busy host may drop the last).
        assert!((2..=3).contains(&pets), "{:?}", fake.log.lock().unwrap());
    }
}
