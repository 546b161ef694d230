//! Time without an RTC. A Raspberry Pi boots at 1970 and every certificate
//! would look invalid; so, right after DATA is mounted, the clock is set to
//! the latest of: the clock as booted (a real RTC), the time saved on DATA,
//! the image's build time. It is saved periodically and at shutdown, then
//! synced with SNTP (`sync`). rustls reads the same clock ([`TimeKeeper`] is
//! its `TimeProvider`), so certificate checks agree with `outpost time`.

pub mod sntp;
pub mod source;
pub mod store;
pub mod sync;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

pub use source::{Clock, ClockError, FakeClock, OffsetClock, RealClock};

/// How often the clock is saved to DATA. A board that loses power restarts
/// at most this far behind (well inside the day of slack certificates get);
/// 24 small writes a day cost an SD card nothing.
pub const SAVE_INTERVAL: Duration = Duration::from_secs(3600);

/// Where the current time came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The clock as the kernel booted with it (an RTC, or the host's clock).
    Rtc,
    /// The time last saved on DATA.
    Restored,
    /// The image's build time (nothing later was known).
    BuildTime,
    /// An SNTP server.
    Sntp,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Rtc => "rtc",
            Source::Restored => "restored",
            Source::BuildTime => "build-time",
            Source::Sntp => "sntp",
        }
    }
}

/// What boot does to the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restore {
    /// Step the clock to this, or leave it.
    pub set_to: Option<Duration>,
    pub source: Source,
}

/// The latest of the booted clock, the saved time and the build time; the
/// clock never goes backwards here (an RTC ahead of both wins).
pub fn decide(rtc: Duration, saved: Option<Duration>, build: Duration) -> Restore {
    let saved = saved.unwrap_or_default();
    if rtc >= saved && rtc >= build {
        Restore {
            set_to: None,
            source: Source::Rtc,
        }
    } else if saved >= build {
        Restore {
            set_to: Some(saved),
            source: Source::Restored,
        }
    } else {
        Restore {
            set_to: Some(build),
            source: Source::BuildTime,
        }
    }
}

/// The last successful SNTP exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastSync {
    pub server: std::net::SocketAddr,
    pub sample: sntp::Sample,
    pub at: Instant,
}

struct State {
    source: Source,
    last_sync: Option<LastSync>,
    /// `synced` holds until then (a few missed re-syncs are tolerated).
    synced_until: Option<Instant>,
}

/// The device's clock and what is known about it; shared by the API, the
/// TLS config, the SNTP task and the saver.
pub struct TimeKeeper {
    clock: Arc<dyn Clock>,
    /// DATA, where the clock file is; `None` when DATA is not mounted.
    data: Option<PathBuf>,
    state: Mutex<State>,
}

impl std::fmt::Debug for TimeKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimeKeeper")
            .field("data", &self.data)
            .finish_non_exhaustive()
    }
}

impl TimeKeeper {
    /// Restore the clock at boot (see [`decide`]); every problem is logged,
    /// none is fatal: the worst case is the clock as booted.
    pub fn boot(clock: Arc<dyn Clock>, data: Option<&Path>, build_time: Duration) -> Self {
        let saved = match data.map(store::load) {
            Some(Ok(saved)) => saved,
            Some(Err(e)) => {
                tracing::warn!("clock: {e}; the saved time is ignored");
                None
            }
            None => None,
        };
        let booted = clock.now();
        let restore = decide(booted, saved, build_time);
        let mut source = restore.source;
        if let Some(to) = restore.set_to {
            match clock.set(to) {
                Ok(()) => tracing::info!(
                    "clock: {} s -> {} s ({})",
                    booted.as_secs(),
                    to.as_secs(),
                    source.name()
                ),
                Err(e) => {
                    tracing::error!("clock: {e}; keeping {} s", booted.as_secs());
                    source = Source::Rtc;
                }
            }
        } else {
            tracing::info!("clock: {} s (rtc)", booted.as_secs());
        }
        Self {
            clock,
            data: data.map(Path::to_path_buf),
            state: Mutex::new(State {
                source,
                last_sync: None,
                synced_until: None,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    pub fn now(&self) -> Duration {
        self.clock.now()
    }

    pub fn source(&self) -> Source {
        self.state().source
    }

    /// True while SNTP syncs keep succeeding.
    pub fn synced(&self) -> bool {
        self.state()
            .synced_until
            .is_some_and(|until| Instant::now() < until)
    }

    pub fn last_sync(&self) -> Option<LastSync> {
        self.state().last_sync
    }

    /// The API's answer to `Time`.
    pub fn info(&self) -> crate::wire::TimeInfo {
        crate::wire::TimeInfo {
            unix_ms: u64::try_from(self.now().as_millis()).unwrap_or(u64::MAX),
            source: self.source().name().into(),
            synced: self.synced(),
        }
    }

    /// Take an SNTP sample: step the clock on the first sync or when it is
    /// off by more than `step_threshold`; `synced` then holds for `valid_for`.
    /// Returns whether the clock was stepped.
    pub fn apply_sync(
        &self,
        server: std::net::SocketAddr,
        sample: sntp::Sample,
        step_threshold: Duration,
        valid_for: Duration,
    ) -> Result<bool, ClockError> {
        let first = self.source() != Source::Sntp;
        let off = sample.offset_ns.unsigned_abs();
        let stepped = if first || u128::from(off) > step_threshold.as_nanos() {
            let now = i64::try_from(self.clock.now().as_nanos()).unwrap_or(i64::MAX);
            let to = now.saturating_add(sample.offset_ns).max(0);
            let to = Duration::from_nanos(u64::try_from(to).unwrap_or(0));
            self.clock.set(to)?;
            true
        } else {
            false
        };
        let mut st = self.state();
        st.source = Source::Sntp;
        let at = Instant::now();
        st.last_sync = Some(LastSync { server, sample, at });
        st.synced_until = at.checked_add(valid_for);
        Ok(stepped)
    }

    /// Save the clock to DATA (no-op without DATA); errors are logged.
    pub fn save(&self) {
        if let Some(data) = &self.data {
            match store::save(data, self.now()) {
                Ok(()) => tracing::debug!("clock: saved"),
                Err(e) => tracing::warn!("clock: {e}"),
            }
        }
    }
}

impl rustls::time_provider::TimeProvider for TimeKeeper {
    fn current_time(&self) -> Option<rustls::pki_types::UnixTime> {
        Some(rustls::pki_types::UnixTime::since_unix_epoch(self.now()))
    }
}

/// Save the clock every [`SAVE_INTERVAL`], forever. The durable write
/// (write, fsync, rename, fsync the directory) runs off the executor thread:
/// on a slow SD card it can take a second, which the API and the watchdog
/// must not wait out.
pub async fn save_periodically(keeper: Arc<TimeKeeper>) {
    loop {
        smol::Timer::after(SAVE_INTERVAL).await;
        save_off_thread(&keeper);
    }
}

/// [`TimeKeeper::save`] on a thread of its own, not awaited (a save is
/// hourly or after a first sync: a short thread costs less than the ~10 KB a
/// blocking pool adds to the binary).
pub fn save_off_thread(keeper: &Arc<TimeKeeper>) {
    let keeper = keeper.clone();
    if let Err(e) = std::thread::Builder::new()
        .name("clock-save".into())
        .spawn(move || keeper.save())
    {
        tracing::warn!("clock: starting the save thread: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUILD: Duration = Duration::from_secs(1_700_000_000);

    #[test]
    fn never_before_build_time() {
        let r = decide(Duration::from_secs(5), None, BUILD);
        assert_eq!(r.set_to, Some(BUILD));
        assert_eq!(r.source, Source::BuildTime);
        // A saved time older than the image (a card re-flashed with a newer one).
        let r = decide(Duration::ZERO, Some(BUILD - Duration::from_secs(60)), BUILD);
        assert_eq!((r.set_to, r.source), (Some(BUILD), Source::BuildTime));
    }

    #[test]
    fn saved_time_restores_and_rtc_ahead_wins() {
        let saved = BUILD + Duration::from_secs(86_400);
        let r = decide(Duration::ZERO, Some(saved), BUILD);
        assert_eq!((r.set_to, r.source), (Some(saved), Source::Restored));
        let rtc = saved + Duration::from_secs(1);
        let r = decide(rtc, Some(saved), BUILD);
        assert_eq!((r.set_to, r.source), (None, Source::Rtc));
    }

    #[test]
    fn boot_steps_the_clock_and_ignores_a_garbage_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(store::CLOCK_FILE);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, "\0\0garbage").unwrap();
        let clock = Arc::new(FakeClock::at(Duration::from_secs(3)));
        let k = TimeKeeper::boot(clock.clone(), Some(dir.path()), BUILD);
        assert_eq!(clock.sets(), vec![BUILD]);
        assert_eq!(k.info().source, "build-time");
        assert!(!k.info().synced);

        // Saved, then a new boot at 1970 restores it.
        k.save();
        let clock = Arc::new(FakeClock::at(Duration::ZERO));
        let k = TimeKeeper::boot(clock.clone(), Some(dir.path()), BUILD);
        assert_eq!(clock.sets(), vec![BUILD]);
        assert_eq!(k.source(), Source::Restored);
    }

    #[test]
    fn first_sync_steps_later_small_offsets_do_not() {
        let clock = Arc::new(FakeClock::at(BUILD));
        let k = TimeKeeper::boot(clock.clone(), None, BUILD);
        assert_eq!(k.source(), Source::Rtc);
        let server = "127.0.0.1:123".parse().unwrap();
        let year_ns = 365 * 86_400 * 1_000_000_000i64;
        let sample = |offset_ns| sntp::Sample {
            offset_ns,
            delay: Duration::from_millis(3),
        };
        let thr = Duration::from_millis(128);
        let hour = Duration::from_secs(3600);
        // Even a tiny offset steps on the first sync: the source changes.
        assert!(k.apply_sync(server, sample(1_000), thr, hour).unwrap());
        assert!(k.synced());
        assert_eq!(k.info().source, "sntp");
        assert!(!k.apply_sync(server, sample(50_000_000), thr, hour).unwrap());
        assert!(k.apply_sync(server, sample(year_ns), thr, hour).unwrap());
        assert_eq!(
            k.now(),
            BUILD + Duration::from_nanos(1_000) + Duration::from_secs(365 * 86_400)
        );
        assert_eq!(clock.sets().len(), 2);
        // Stale after `valid_for`.
        k.apply_sync(server, sample(0), thr, Duration::ZERO)
            .unwrap();
        assert!(!k.synced());
    }

    #[test]
    fn rustls_reads_the_same_clock() {
        use rustls::time_provider::TimeProvider;
        let clock = Arc::new(FakeClock::at(BUILD));
        let k = TimeKeeper::boot(clock, None, Duration::ZERO);
        assert_eq!(k.current_time().unwrap().as_secs(), BUILD.as_secs());
    }
}
