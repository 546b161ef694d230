//! `outpost rollout start|resume|abort|status`: the wave state machine
//! (`rollout.rs`) driven through the broker. Upgrades run on a pool of
//! worker threads (`rollout_device`), a wave's soak re-check on a thread of
//! its own; outcomes go to the state machine; its state goes to the state
//! file (`rollout_state`) after every change, which `status` (another
//! process) reads. The driver also watches for an abort request beside the
//! state file: `rollout abort` writes one, and the driver takes it within a
//! tick. A file and not a signal: it carries who and why, it outlives a
//! rollout process that is suspended or dead (then `abort` marks the state
//! file itself), and it cannot hit an unrelated process that got a dead
//! rollout's pid.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use super::broker::BrokerUrl;
use super::cli::Format;
use super::context::Context;
use super::rollout::{DeviceState, Outcome, Phase, Policy, Restored, RestoredPhase, Rollout, Work};
use super::rollout_device::{self as device, Finished, Reach, Target};
use super::rollout_state::{
    self as state_file, AbortRecord, DeviceView, PolicyView, State, WaveView,
};

pub use super::rollout_state::state_path;

/// How often the driver looks at the clock (and for an abort request) when
/// no outcome comes in.
const TICK: Duration = Duration::from_millis(200);
/// How long `rollout abort` waits for a live rollout to take its request.
const ABORT_TAKEN_WITHIN: Duration = Duration::from_secs(10);

/// What `rollout start` needs besides the device list.
pub struct Plan {
    pub bundle: PathBuf,
    pub policy: Policy,
    /// Devices upgraded at once (each holds a broker session).
    pub parallel: usize,
    pub force: bool,
    /// Command expiry through the broker.
    pub expiry: Duration,
}

/// Refuse to start over a rollout that runs or was interrupted.
fn refuse_active(path: &Path) -> Result<()> {
    let Ok(old) = state_file::load(path) else {
        return Ok(());
    };
    // Alive even when aborted: it still waits for devices in flight.
    if state_file::writer_alive(&old) {
        bail!(
            "a rollout of {} is {} (pid {}): see `outpost rollout status`; `outpost rollout abort` stops it",
            old.bundle,
            if state_file::active(&old) { "running" } else { "finishing" },
            old.pid
        );
    }
    if !state_file::active(&old) {
        return Ok(());
    }
    bail!(
        "the rollout of {} was interrupted (its process {} is gone) at wave {}/{}: `outpost rollout resume` continues it, `outpost rollout abort` ends it",
        old.bundle,
        old.pid,
        old.wave,
        old.waves.len()
    )
}

/// Run a new rollout to its end. `Ok` when every wave finished; an error
/// when it aborted (the state file says why).
pub fn start(
    names: Vec<String>,
    mut plan: Plan,
    url: BrokerUrl,
    ctx: &Context,
    path: &Path,
    format: Format,
) -> Result<()> {
    let _lock = lock(path)?;
    refuse_active(path)?;
    let unique: BTreeSet<&String> = names.iter().collect();
    if unique.len() != names.len() {
        bail!("a device is named twice");
    }
    // Absolute: `resume` may run from another directory.
    plan.bundle = std::fs::canonicalize(&plan.bundle)
        .with_context(|| format!("bundle {}", plan.bundle.display()))?;
    let header = super::bundle::BundleFile::open(&plan.bundle)?.header;
    let sha = crate::bundle::hex(&super::bundle::file_sha256(&plan.bundle)?);
    let rollout = Rollout::new(names, plan.policy.clone())?;
    // A request left from an earlier rollout is not for this one.
    state_file::clear_abort_request(path);
    let driver = Driver::new(
        rollout,
        plan,
        header.version,
        sha,
        state_file::unix_now(),
        format,
    );
    let expiry = driver.plan.expiry;
    driver.run(reach(url, ctx, expiry)?, path)
}

/// This context's rollout lock, for the life of the rollout process.
fn lock(path: &Path) -> Result<state_file::RunLock> {
    state_file::try_lock(path)?.with_context(|| {
        let who = state_file::load(path)
            .map(|s| format!(" (pid {}, {})", s.pid, s.phase))
            .unwrap_or_default();
        format!("another rollout process of this context is running{who}: `outpost rollout status`")
    })
}

fn reach(url: BrokerUrl, ctx: &Context, expiry: Duration) -> Result<Reach> {
    Ok(Reach {
        url,
        tls: super::client::client_config(&ctx.ca, &ctx.cert, &ctx.key)?,
        ctx: ctx.clone(),
        expiry,
    })
}

/// `rollout resume`: continue an interrupted rollout with its own
/// parameters. Outcomes stay; devices that were in flight are re-checked
/// (and upgraded again if still on the old version); the wave that ran
/// goes on, or the soak goes on for what was left of it.
pub fn resume(url: BrokerUrl, ctx: &Context, path: &Path, format: Format) -> Result<()> {
    let _lock = lock(path)?;
    let old = state_file::load(path)?;
    if !state_file::active(&old) {
        bail!(
            "the last rollout ({}) {}: nothing to resume",
            old.bundle,
            old.phase
        );
    }
    if state_file::writer_alive(&old) {
        bail!(
            "the rollout of {} is still running (pid {}): nothing to resume",
            old.bundle,
            old.pid
        );
    }
    if old.bundle_sha256.is_empty() || old.parallel == 0 {
        bail!("this rollout was started by an older outpost without what resume needs: `outpost rollout abort` ends it");
    }
    let bundle = PathBuf::from(&old.bundle);
    let sha = crate::bundle::hex(
        &super::bundle::file_sha256(&bundle)
            .with_context(|| format!("the rollout's bundle {}", bundle.display()))?,
    );
    if sha != old.bundle_sha256 {
        bail!(
            "{} changed since the rollout started (sha256 {sha}, was {}): refusing to resume with another bundle",
            bundle.display(),
            old.bundle_sha256
        );
    }
    let p = &old.policy;
    let plan = Plan {
        bundle,
        policy: Policy {
            waves: p.waves.clone(),
            min_per_wave: p.min_per_wave,
            soak: Duration::from_secs(p.soak_secs),
            success_threshold: p.success_threshold_pct / 100.0,
            abort_failure_rate: p.abort_after_failures_pct / 100.0,
            min_sample: p.min_sample,
            device_timeout: Duration::from_secs(p.timeout_secs),
        },
        parallel: old.parallel,
        force: old.force,
        expiry: Duration::from_secs(old.expiry_secs.max(1)),
    };
    let wave = old.wave.saturating_sub(1);
    let phase = if old.phase == "soaking" {
        RestoredPhase::Soaking {
            wave,
            left: Duration::from_secs(
                old.soak_until_unix
                    .unwrap_or(0)
                    .saturating_sub(state_file::unix_now()),
            ),
        }
    } else {
        RestoredPhase::Running(wave)
    };
    let restored = |d: &str| match old.devices.get(d).map(|v| (v.state.as_str(), &v.detail)) {
        Some(("succeeded" | "checking", _)) => Restored::Done(Outcome::Succeeded),
        Some(("failed", why)) => Restored::Done(Outcome::Failed(
            why.clone().unwrap_or_else(|| "failed".into()),
        )),
        Some(("running", _)) => Restored::InFlight,
        _ => Restored::Pending,
    };
    // An abort asked of a process that never took it (suspended, then
    // killed): the operator resuming now decides otherwise.
    if let Some(stale) = state_file::abort_requested(path) {
        eprintln!(
            "note: dropping an abort request that was never taken ({})",
            stale.describe()
        );
        state_file::clear_abort_request(path);
    }
    let waves: Vec<Vec<String>> = old.waves.iter().map(|w| w.devices.clone()).collect();
    let rollout = Rollout::restore(waves, plan.policy.clone(), restored, phase)?;
    let mut driver = Driver::new(
        rollout,
        plan,
        old.version.clone(),
        sha,
        old.started_unix,
        format,
    );
    driver.resumed_unix = old.resumed_unix.clone();
    driver.soak_until_unix = old.soak_until_unix;
    driver.resumed_unix.push(state_file::unix_now());
    for (name, v) in &old.devices {
        if let Some(s) = v.secs {
            driver.took.insert(name.clone(), s);
        }
        if let Some(slot) = &v.slot {
            driver.slots.insert(name.clone(), slot.clone());
        }
        if let (Some(d), "succeeded" | "checking") = (&v.detail, v.state.as_str()) {
            driver.notes.insert(name.clone(), d.clone());
        }
        if let Some(n) = v.sessions {
            driver.sessions.insert(name.clone(), n);
        }
        if v.state == "running" {
            driver.recheck.insert(name.clone());
        }
    }
    if driver.text {
        eprintln!(
            "resuming the rollout of {} at wave {}/{} ({}; {} in flight to re-check)",
            old.bundle,
            old.wave,
            old.waves.len(),
            old.phase,
            driver.recheck.len()
        );
    }
    let expiry = driver.plan.expiry;
    driver.run(reach(url, ctx, expiry)?, path)
}

/// `rollout abort`: a live rollout (its process holds the lock) is asked
/// through the request file, and this waits until it has taken the
/// request; a dead one is marked aborted in its file here.
pub fn abort(path: &Path, reason: Option<String>, format: Format) -> Result<()> {
    let st = state_file::load(path)?;
    if !state_file::active(&st) {
        bail!(
            "the last rollout ({}) {}: nothing to abort",
            st.bundle,
            st.phase
        );
    }
    let record = AbortRecord::now(reason);
    // No process holds the lock: nobody drives it (it was interrupted, or
    // has just ended): mark the file here, holding the lock meanwhile.
    if let Some(_lock) = state_file::try_lock(path)? {
        let mut st = state_file::load(path)?;
        if !state_file::active(&st) {
            bail!(
                "the last rollout ({}) {}: nothing to abort",
                st.bundle,
                st.phase
            );
        }
        state_file::abort_offline(&mut st, record);
        state_file::save(path, &st)?;
        state_file::clear_abort_request(path);
        return state_file::print(&st, format);
    }
    state_file::request_abort(path, &record)?;
    let asked = Instant::now();
    loop {
        std::thread::sleep(TICK);
        let now = state_file::load(path)?;
        if !state_file::active(&now) {
            if now.abort.as_ref() != Some(&record) {
                state_file::clear_abort_request(path);
                bail!(
                    "the rollout {} before it took the abort: {}",
                    now.phase,
                    now.detail.unwrap_or_default()
                );
            }
            if format == Format::Text {
                eprintln!(
                    "abort taken by the rollout process {}: no further device starts; {} in flight finish",
                    now.pid,
                    now.waves.iter().map(|w| w.running).sum::<usize>()
                );
            }
            return state_file::print(&now, format);
        }
        if let Some(_lock) = state_file::try_lock(path)? {
            // It died meanwhile: abort it here.
            let mut now = state_file::load(path)?;
            if state_file::active(&now) {
                state_file::abort_offline(&mut now, record);
                state_file::save(path, &now)?;
            }
            state_file::clear_abort_request(path);
            return state_file::print(&now, format);
        }
        if asked.elapsed() > ABORT_TAKEN_WITHIN {
            bail!(
                "the rollout process {} did not take the abort within {} s (suspended?); the request stays in {} and is taken when it runs on",
                now.pid,
                ABORT_TAKEN_WITHIN.as_secs(),
                state_file::abort_request_path(path).display()
            );
        }
    }
}

/// `rollout status`.
pub fn status(path: &Path, format: Format) -> Result<()> {
    state_file::print(&state_file::shown(&state_file::load(path)?), format)
}

/// The worker pool's and the soak checker's messages to the driver.
enum Event {
    Began(String),
    Done(String, Finished, Duration),
    Checked(String, Result<(), String>),
}

/// A device to upgrade; `recheck`: it was in flight when an earlier
/// rollout process died.
struct Job {
    device: String,
    recheck: bool,
}

/// The rollout process: the state machine plus what the file shows.
struct Driver {
    rollout: Rollout,
    plan: Arc<Plan>,
    version: String,
    bundle_sha256: String,
    waves: Vec<Vec<String>>,
    wave_of: BTreeMap<String, usize>,
    t0: Instant,
    started_unix: u64,
    resumed_unix: Vec<u64>,
    /// Began in this process (taken by a worker).
    began: BTreeSet<String>,
    /// Handed to the pool, not yet begun: their timeout waits with them.
    queued: BTreeSet<String>,
    /// Seconds from start to outcome.
    took: BTreeMap<String, f64>,
    /// How a device succeeded when not by an upgrade now.
    notes: BTreeMap<String, String>,
    /// The slot each device committed the target in.
    slots: BTreeMap<String, String>,
    /// Broker sessions each device's upgrade opened.
    sessions: BTreeMap<String, usize>,
    /// In flight when the last rollout process died.
    recheck: BTreeSet<String>,
    abort: Option<AbortRecord>,
    soak_until_unix: Option<u64>,
    pid_start: Option<u64>,
    text: bool,
    format: Format,
}

impl Driver {
    fn new(
        rollout: Rollout,
        plan: Plan,
        version: String,
        bundle_sha256: String,
        started_unix: u64,
        format: Format,
    ) -> Self {
        let waves = rollout.waves();
        let wave_of = waves
            .iter()
            .enumerate()
            .flat_map(|(w, ds)| ds.iter().map(move |d| (d.clone(), w)))
            .collect();
        Self {
            rollout,
            plan: Arc::new(plan),
            version,
            bundle_sha256,
            waves,
            wave_of,
            t0: Instant::now(),
            started_unix,
            resumed_unix: Vec::new(),
            began: BTreeSet::new(),
            queued: BTreeSet::new(),
            took: BTreeMap::new(),
            notes: BTreeMap::new(),
            slots: BTreeMap::new(),
            sessions: BTreeMap::new(),
            recheck: BTreeSet::new(),
            abort: None,
            soak_until_unix: None,
            pid_start: state_file::process_start(std::process::id()),
            text: format == Format::Text,
            format,
        }
    }

    fn run(mut self, reach: Reach, path: &Path) -> Result<()> {
        let (job_tx, job_rx) = mpsc::channel::<Job>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (ev_tx, ev_rx) = mpsc::channel::<Event>();
        for _ in 0..self.plan.parallel.max(1) {
            let (jobs, events, reach, plan) = (
                job_rx.clone(),
                ev_tx.clone(),
                reach.clone(),
                self.plan.clone(),
            );
            let version = self.version.clone();
            std::thread::spawn(move || loop {
                let next = jobs.lock().ok().and_then(|rx| rx.recv().ok());
                let Some(job) = next else { return };
                let _ = events.send(Event::Began(job.device.clone()));
                let t = Instant::now();
                let target = Target {
                    bundle: &plan.bundle,
                    version: &version,
                    force: plan.force,
                    timeout: plan.policy.device_timeout,
                };
                let done = device::upgrade(&reach, &job.device, &target, job.recheck);
                let _ = events.send(Event::Done(job.device, done, t.elapsed()));
            });
        }

        let first = self.rollout.next(self.now());
        self.dispatch(first, &job_tx, &ev_tx, &reach)?;
        state_file::save(path, &self.snapshot())?;
        let mut last_save = Instant::now();
        loop {
            let mut changed = self.receive(&ev_rx, TICK)?;
            if self.abort.is_none() {
                if let Some(record) = state_file::abort_requested(path) {
                    if self.text {
                        eprintln!("ABORT requested: {}", record.describe());
                    }
                    self.rollout.abort(record.describe());
                    self.abort = Some(record);
                    state_file::clear_abort_request(path);
                    changed = true;
                }
            }
            for d in &self.queued {
                self.rollout.begin(d, self.t0.elapsed());
            }
            let before = self.rollout.progress().phase;
            let work = self.rollout.tick(self.now());
            let after = self.rollout.progress().phase;
            if before != after {
                changed = true;
                self.phase_changed(&after);
            }
            self.dispatch(work, &job_tx, &ev_tx, &reach)?;
            if changed || last_save.elapsed() >= Duration::from_secs(1) {
                state_file::save(path, &self.snapshot())?;
                last_save = Instant::now();
            }
            if matches!(after, Phase::Finished | Phase::Aborted(_)) {
                break;
            }
        }
        // Ended: no further device starts (queued ones are dropped); those
        // already upgrading finish, or time out, and are recorded. Their
        // boards keep their own A/B safety either way. (Workers still
        // waiting on a silent board are left behind: the process ends
        // without them.)
        drop(job_tx);
        if let Ok(rx) = job_rx.lock() {
            while rx.try_recv().is_ok() {}
        }
        while self.busy() {
            if self.receive(&ev_rx, TICK)? {
                state_file::save(path, &self.snapshot())?;
            }
            for d in &self.queued {
                self.rollout.begin(d, self.t0.elapsed());
            }
            self.rollout.tick(self.now());
        }
        state_file::clear_abort_request(path);
        let state = self.snapshot();
        state_file::save(path, &state)?;
        state_file::print(&state, self.format)?;
        match self.rollout.progress().phase {
            Phase::Finished => Ok(()),
            Phase::Aborted(why) => bail!("rollout aborted: {why}"),
            other => bail!("rollout ended in {other:?}"),
        }
    }

    fn now(&self) -> Duration {
        self.t0.elapsed()
    }

    /// A device began in this process and has no outcome yet.
    fn busy(&self) -> bool {
        self.rollout
            .states()
            .iter()
            .any(|(d, s)| *s == DeviceState::Running && self.began.contains(*d))
    }

    /// Take the events that came within `wait`; whether any did.
    fn receive(&mut self, rx: &mpsc::Receiver<Event>, wait: Duration) -> Result<bool> {
        let first = match rx.recv_timeout(wait) {
            Ok(ev) => ev,
            Err(mpsc::RecvTimeoutError::Timeout) => return Ok(false),
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("every rollout worker ended"),
        };
        let mut evs = vec![first];
        evs.extend(rx.try_iter());
        for ev in evs {
            match ev {
                Event::Began(d) => {
                    self.queued.remove(&d);
                    self.rollout.begin(&d, self.t0.elapsed());
                    self.began.insert(d);
                }
                Event::Done(d, done, secs) => {
                    if self.text {
                        match (&done.outcome, &done.note) {
                            (Outcome::Succeeded, Some(note)) => eprintln!("{d}: {note}"),
                            (Outcome::Succeeded, None) => eprintln!(
                                "{d}: committed {} ({:.1} s)",
                                self.version,
                                secs.as_secs_f64()
                            ),
                            (Outcome::Failed(why), _) => eprintln!("{d}: FAILED: {why}"),
                        }
                    }
                    self.took.insert(d.clone(), secs.as_secs_f64());
                    self.sessions.insert(d.clone(), done.sessions);
                    if let Some(n) = done.note {
                        self.notes.insert(d.clone(), n);
                    }
                    if let Some(s) = done.slot {
                        self.slots.insert(d.clone(), s);
                    }
                    self.rollout.report(&d, done.outcome);
                }
                Event::Checked(d, check) => {
                    if let (true, Err(why)) = (self.text, &check) {
                        eprintln!("{d}: FAILED its soak re-check: {why}");
                    }
                    self.rollout.report_check(&d, check);
                }
            }
        }
        Ok(true)
    }

    fn dispatch(
        &mut self,
        work: Vec<Work>,
        jobs: &mpsc::Sender<Job>,
        events: &mpsc::Sender<Event>,
        reach: &Reach,
    ) -> Result<()> {
        let mut upgrades = Vec::new();
        let mut checks = Vec::new();
        for w in work {
            match w {
                Work::Upgrade(d) => upgrades.push(d),
                Work::Check(d) => {
                    let slot = self.slots.get(&d).cloned();
                    checks.push((d, slot));
                }
            }
        }
        if let (true, Phase::Running(w)) = (!upgrades.is_empty(), self.rollout.progress().phase) {
            if self.text {
                eprintln!(
                    "wave {}/{}: {} devices: {}",
                    w + 1,
                    self.waves.len(),
                    upgrades.len(),
                    upgrades.join(" ")
                );
            }
        }
        for d in upgrades {
            self.queued.insert(d.clone());
            let recheck = self.recheck.contains(&d);
            jobs.send(Job { device: d, recheck })?;
        }
        if !checks.is_empty() {
            if self.text {
                eprintln!("re-checking {} devices after the soak", checks.len());
            }
            let (reach, events) = (reach.clone(), events.clone());
            let version = self.version.clone();
            let timeout = self.plan.policy.device_timeout;
            std::thread::spawn(move || {
                device::soak_check(&reach, checks, &version, timeout, &mut |d, check| {
                    let _ = events.send(Event::Checked(d, check));
                });
            });
        }
        Ok(())
    }

    fn phase_changed(&mut self, after: &Phase) {
        self.soak_until_unix = None;
        if let Phase::Soaking { wave, until } = after {
            let left = until.saturating_sub(self.now());
            self.soak_until_unix = Some(state_file::unix_now() + left.as_secs());
            if self.text {
                eprintln!("wave {} done; soaking {} s", wave + 1, left.as_secs());
            }
        }
        if let (true, Phase::Aborted(why)) = (self.text, after) {
            eprintln!("ABORTED: {why}");
        }
    }

    fn snapshot(&self) -> State {
        let p = self.rollout.progress();
        let (phase, detail, wave) = match &p.phase {
            Phase::Running(w) => ("running", None, w + 1),
            Phase::Soaking { wave, until } => (
                "soaking",
                Some(format!(
                    "wave {} soaks for {} s more, then its devices are re-checked",
                    wave + 1,
                    until.saturating_sub(self.now()).as_secs()
                )),
                wave + 1,
            ),
            Phase::Checking(w) => (
                "soaking",
                Some(format!(
                    "wave {} soaked: re-checking that its devices still run {} committed",
                    w + 1,
                    self.version
                )),
                w + 1,
            ),
            Phase::Finished => ("finished", None, self.waves.len()),
            Phase::Aborted(why) => ("aborted", Some(why.clone()), 0),
        };
        let aborted = matches!(p.phase, Phase::Aborted(_));
        let mut devices = BTreeMap::new();
        for (name, st) in self.rollout.states() {
            let w = self.wave_of.get(name).copied().unwrap_or(0);
            let (state, detail) = match st {
                DeviceState::Pending if aborted => ("skipped", None),
                DeviceState::Pending => ("pending", None),
                DeviceState::Running if self.began.contains(name) => ("running", None),
                // In flight under a process that died, not re-checked since.
                DeviceState::Running if aborted && self.recheck.contains(name) => (
                    "unknown",
                    Some("in flight when an earlier rollout process died; not re-checked".into()),
                ),
                DeviceState::Running if aborted => ("skipped", None),
                DeviceState::Running => ("queued", None),
                DeviceState::Checking => ("checking", self.notes.get(name).cloned()),
                DeviceState::Succeeded => ("succeeded", self.notes.get(name).cloned()),
                DeviceState::Failed(why) => ("failed", Some(why)),
            };
            devices.insert(
                name.to_owned(),
                DeviceView {
                    wave: w + 1,
                    state: state.into(),
                    detail,
                    secs: self.took.get(name).copied(),
                    slot: self.slots.get(name).cloned(),
                    sessions: self.sessions.get(name).copied(),
                },
            );
        }
        let pol = &self.plan.policy;
        let mut state = State {
            bundle: self.plan.bundle.display().to_string(),
            bundle_sha256: self.bundle_sha256.clone(),
            version: self.version.clone(),
            pid: std::process::id(),
            pid_start: self.pid_start,
            started_unix: self.started_unix,
            updated_unix: state_file::unix_now(),
            resumed_unix: self.resumed_unix.clone(),
            phase: phase.into(),
            detail,
            wave,
            soak_until_unix: self.soak_until_unix.filter(|_| phase == "soaking"),
            abort: self.abort.clone(),
            policy: PolicyView {
                waves: pol.waves.clone(),
                min_per_wave: pol.min_per_wave,
                soak_secs: pol.soak.as_secs(),
                success_threshold_pct: pol.success_threshold * 100.0,
                abort_after_failures_pct: pol.abort_failure_rate * 100.0,
                min_sample: pol.min_sample,
                timeout_secs: pol.device_timeout.as_secs(),
            },
            parallel: self.plan.parallel.max(1),
            force: self.plan.force,
            expiry_secs: self.plan.expiry.as_secs(),
            waves: self
                .waves
                .iter()
                .map(|ds| WaveView {
                    devices: ds.clone(),
                    ..WaveView::default()
                })
                .collect(),
            devices,
        };
        state_file::recount(&mut state);
        state
    }
}
