//! `outpost rollout start|status`: the wave state machine (`rollout.rs`)
//! driven through the broker. Each device gets the CLI's own upgrade path
//! (`remote::install`: resumable upload, Upgrade, wait until it is back
//! committed), on a pool of worker threads; outcomes go to the state
//! machine; its state goes to a JSON file in the CLI's state dir after every
//! change, which `rollout status` (another process) reads.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};

use super::broker::{BrokerUrl, DeviceLink, Operator};
use super::cli::Format;
use super::client::Client;
use super::context::Context;
use super::rollout::{DeviceState, Outcome, Phase, Policy, Rollout};

/// How often the driver looks at the clock when no outcome comes in.
const TICK: Duration = Duration::from_millis(200);

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

/// The state file: what `rollout status` shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub bundle: String,
    pub version: String,
    /// The `rollout start` process (a running rollout is not started twice).
    pub pid: u32,
    pub started_unix: u64,
    pub updated_unix: u64,
    /// `running`, `soaking`, `finished` or `aborted`.
    pub phase: String,
    /// Why it aborted, or until when it soaks.
    pub detail: Option<String>,
    /// 1-based wave now running or soaking.
    pub wave: usize,
    pub policy: PolicyView,
    pub waves: Vec<WaveView>,
    pub devices: BTreeMap<String, DeviceView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyView {
    pub waves: Vec<u8>,
    pub min_per_wave: usize,
    pub soak_secs: u64,
    pub success_threshold_pct: f64,
    pub abort_after_failures_pct: f64,
    pub min_sample: usize,
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WaveView {
    pub devices: Vec<String>,
    pub pending: usize,
    pub running: usize,
    pub succeeded: usize,
    pub failed: usize,
    /// Never started: the rollout aborted first.
    pub skipped: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceView {
    pub wave: usize,
    /// `pending`, `queued`, `running`, `succeeded`, `failed`, `skipped`.
    pub state: String,
    pub detail: Option<String>,
    /// Seconds from its start to its outcome.
    pub secs: Option<f64>,
}

/// The state file of `context`'s rollout, in the CLI's state dir (one
/// rollout at a time per context; the next one replaces a finished one).
pub fn state_path(context: &str) -> PathBuf {
    let safe: String = context
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    super::qemu::state_base()
        .join("rollout")
        .join(format!("{safe}.json"))
}

pub fn load(path: &Path) -> Result<State> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("no rollout state in {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn save(path: &Path, state: &State) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(state)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// The worker pool's messages to the driver.
enum Event {
    Began(String),
    Done(String, Outcome, Duration),
}

/// How a worker reaches one device through the broker.
#[derive(Clone)]
struct Reach {
    url: BrokerUrl,
    tls: Arc<rustls::ClientConfig>,
    ctx: Context,
    expiry: Duration,
}

impl Reach {
    fn connect(&self, device: &str) -> Result<Client> {
        let operator = Operator::load(&self.ctx.cert, &self.ctx.key)?;
        let mut link = DeviceLink::connect(
            &self.url,
            self.tls.clone(),
            &self.ctx.ca,
            operator,
            device,
            self.expiry,
        )
        .with_context(|| format!("broker {}:{}", self.url.host, self.url.port))?;
        link.set_seal(self.ctx.seal);
        Ok(Client::via_broker(link))
    }
}

/// Upgrade one device as `outpost upgrade` does, then check it runs
/// `version` from the slot it booted.
fn upgrade_one(reach: &Reach, device: &str, bundle: &Path, version: &str, plan: &Plan) -> Outcome {
    let mut connect = || reach.connect(device);
    let how = super::remote::Install {
        stage: false,
        force: plan.force,
        full: false,
    };
    let timeout = plan.policy.device_timeout.as_secs();
    match super::remote::install(&mut connect, device, bundle, how, timeout, Format::Json) {
        Ok(s) => {
            let running = s
                .slots
                .iter()
                .find(|x| x.name == s.booted)
                .and_then(|x| x.version.clone());
            if running.as_deref() == Some(version) {
                Outcome::Succeeded
            } else {
                Outcome::Failed(format!(
                    "committed slot {} runs {}, not {version}",
                    s.booted,
                    running.unwrap_or_else(|| "an unknown version".into())
                ))
            }
        }
        Err(e) => Outcome::Failed(format!("{e:#}")),
    }
}

/// Run a rollout to its end. `Ok` when every wave finished; an error when it
/// aborted (the state file says why).
pub fn start(
    names: Vec<String>,
    plan: Plan,
    url: BrokerUrl,
    ctx: &Context,
    state_file: &Path,
    format: Format,
) -> Result<()> {
    if let Ok(old) = load(state_file) {
        let running = matches!(old.phase.as_str(), "running" | "soaking");
        if running && Path::new(&format!("/proc/{}", old.pid)).exists() {
            bail!(
                "a rollout of {} is still running (pid {}): see `outpost rollout status`",
                old.bundle,
                old.pid
            );
        }
    }
    let unique: BTreeSet<&String> = names.iter().collect();
    if unique.len() != names.len() {
        bail!("a device is named twice");
    }
    let header = super::bundle::BundleFile::open(&plan.bundle)?.header;
    let mut rollout = Rollout::new(names, plan.policy.clone())?;
    let waves = rollout.waves();
    let wave_of: BTreeMap<String, usize> = waves
        .iter()
        .enumerate()
        .flat_map(|(w, ds)| ds.iter().map(move |d| (d.clone(), w)))
        .collect();
    let tls = super::client::client_config(&ctx.ca, &ctx.cert, &ctx.key)?;
    let reach = Reach {
        url,
        tls,
        ctx: ctx.clone(),
        expiry: plan.expiry,
    };
    let plan = Arc::new(plan);

    let (job_tx, job_rx) = mpsc::channel::<String>();
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (ev_tx, ev_rx) = mpsc::channel::<Event>();
    let mut workers = Vec::new();
    for _ in 0..plan.parallel.max(1) {
        let (jobs, events, reach, plan) =
            (job_rx.clone(), ev_tx.clone(), reach.clone(), plan.clone());
        let version = header.version.clone();
        workers.push(std::thread::spawn(move || loop {
            let next = jobs.lock().ok().and_then(|rx| rx.recv().ok());
            let Some(device) = next else { return };
            let _ = events.send(Event::Began(device.clone()));
            let t = Instant::now();
            let outcome = upgrade_one(&reach, &device, &plan.bundle, &version, &plan);
            let _ = events.send(Event::Done(device, outcome, t.elapsed()));
        }));
    }
    drop(ev_tx);

    let t0 = Instant::now();
    let started_unix = unix_now();
    let mut began: BTreeMap<String, Instant> = BTreeMap::new();
    let mut took: BTreeMap<String, Duration> = BTreeMap::new();
    // Handed to the pool, not yet begun: their timeout waits with them.
    let mut queued: BTreeSet<String> = BTreeSet::new();
    let text = format == Format::Text;
    let announce = |wave: usize, ds: &[String]| {
        if text && !ds.is_empty() {
            eprintln!(
                "wave {}/{}: {} devices: {}",
                wave + 1,
                waves.len(),
                ds.len(),
                ds.join(" ")
            );
        }
    };
    let first = rollout.next(Duration::ZERO);
    announce(0, &first);
    for d in first {
        queued.insert(d.clone());
        job_tx.send(d)?;
    }
    let snapshot = |rollout: &Rollout,
                    began: &BTreeMap<String, Instant>,
                    took: &BTreeMap<String, Duration>|
     -> State {
        let p = rollout.progress();
        let (phase, detail, wave) = match &p.phase {
            Phase::Running(w) => ("running", None, w + 1),
            Phase::Soaking { wave, until } => (
                "soaking",
                Some(format!(
                    "wave {} soaks for {} s more",
                    wave + 1,
                    until.saturating_sub(t0.elapsed()).as_secs()
                )),
                wave + 1,
            ),
            Phase::Finished => ("finished", None, waves.len()),
            Phase::Aborted(why) => ("aborted", Some(why.clone()), 0),
        };
        let aborted = matches!(p.phase, Phase::Aborted(_));
        let mut devices = BTreeMap::new();
        let mut views: Vec<WaveView> = waves
            .iter()
            .map(|ds| WaveView {
                devices: ds.clone(),
                pending: 0,
                running: 0,
                succeeded: 0,
                failed: 0,
                skipped: 0,
            })
            .collect();
        for (name, st) in rollout.states() {
            let w = wave_of.get(name).copied().unwrap_or(0);
            let (state, detail) = match st {
                DeviceState::Pending if aborted => ("skipped", None),
                DeviceState::Pending => ("pending", None),
                DeviceState::Running if began.contains_key(name) => ("running", None),
                DeviceState::Running if aborted => ("skipped", None),
                DeviceState::Running => ("queued", None),
                DeviceState::Succeeded => ("succeeded", None),
                DeviceState::Failed(why) => ("failed", Some(why)),
            };
            if let Some(v) = views.get_mut(w) {
                match state {
                    "pending" | "queued" => v.pending += 1,
                    "running" => v.running += 1,
                    "succeeded" => v.succeeded += 1,
                    "failed" => v.failed += 1,
                    _ => v.skipped += 1,
                }
            }
            devices.insert(
                name.to_owned(),
                DeviceView {
                    wave: w + 1,
                    state: state.into(),
                    detail,
                    secs: took.get(name).map(Duration::as_secs_f64),
                },
            );
        }
        let pol = &plan.policy;
        State {
            bundle: plan.bundle.display().to_string(),
            version: header.version.clone(),
            pid: std::process::id(),
            started_unix,
            updated_unix: unix_now(),
            phase: phase.into(),
            detail,
            wave,
            policy: PolicyView {
                waves: pol.waves.clone(),
                min_per_wave: pol.min_per_wave,
                soak_secs: pol.soak.as_secs(),
                success_threshold_pct: pol.success_threshold * 100.0,
                abort_after_failures_pct: pol.abort_failure_rate * 100.0,
                min_sample: pol.min_sample,
                timeout_secs: pol.device_timeout.as_secs(),
            },
            waves: views,
            devices,
        }
    };
    save(state_file, &snapshot(&rollout, &began, &took))?;
    let mut last_save = Instant::now();
    loop {
        let mut changed = false;
        match ev_rx.recv_timeout(TICK) {
            Ok(ev) => {
                let mut evs = vec![ev];
                evs.extend(ev_rx.try_iter());
                for ev in evs {
                    changed = true;
                    match ev {
                        Event::Began(d) => {
                            queued.remove(&d);
                            rollout.begin(&d, t0.elapsed());
                            began.insert(d, Instant::now());
                        }
                        Event::Done(d, outcome, secs) => {
                            if text {
                                match &outcome {
                                    Outcome::Succeeded => eprintln!(
                                        "{d}: committed {} ({:.1} s)",
                                        header.version,
                                        secs.as_secs_f64()
                                    ),
                                    Outcome::Failed(why) => eprintln!("{d}: FAILED: {why}"),
                                }
                            }
                            took.insert(d.clone(), secs);
                            rollout.report(&d, outcome);
                        }
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("every rollout worker ended"),
        }
        for d in &queued {
            rollout.begin(d, t0.elapsed());
        }
        let before = rollout.progress().phase;
        let next = rollout.tick(t0.elapsed());
        let after = rollout.progress().phase;
        if before != after {
            changed = true;
            if text {
                match &after {
                    Phase::Soaking { wave, .. } => eprintln!(
                        "wave {} done; soaking {} s",
                        wave + 1,
                        plan.policy.soak.as_secs()
                    ),
                    Phase::Aborted(why) => eprintln!("ABORTED: {why}"),
                    _ => {}
                }
            }
        }
        if let Phase::Running(w) = after {
            announce(w, &next);
        }
        for d in next {
            queued.insert(d.clone());
            job_tx.send(d)?;
        }
        if changed || last_save.elapsed() >= Duration::from_secs(1) {
            save(state_file, &snapshot(&rollout, &began, &took))?;
            last_save = Instant::now();
        }
        if matches!(after, Phase::Finished | Phase::Aborted(_)) {
            break;
        }
    }
    // Abort: no further device starts (queued ones are dropped); those
    // already upgrading finish, or time out, and are recorded. Their boards
    // keep their own A/B safety either way. (Workers still waiting on a
    // silent board are left behind: the process ends without them.)
    drop(job_tx);
    if let Ok(rx) = job_rx.lock() {
        while rx.try_recv().is_ok() {}
    }
    let busy = |r: &Rollout, began: &BTreeMap<String, Instant>| {
        r.states()
            .iter()
            .any(|(d, s)| *s == DeviceState::Running && began.contains_key(*d))
    };
    while busy(&rollout, &began) {
        match ev_rx.recv_timeout(TICK) {
            Ok(Event::Done(d, outcome, secs)) => {
                if text {
                    if let Outcome::Failed(why) = &outcome {
                        eprintln!("{d}: FAILED: {why}");
                    }
                }
                took.insert(d.clone(), secs);
                rollout.report(&d, outcome);
            }
            // Taken from the queue just before it was emptied: it runs.
            Ok(Event::Began(d)) => {
                queued.remove(&d);
                rollout.begin(&d, t0.elapsed());
                began.insert(d, Instant::now());
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        for d in &queued {
            rollout.begin(d, t0.elapsed());
        }
        rollout.tick(t0.elapsed());
    }
    let state = snapshot(&rollout, &began, &took);
    save(state_file, &state)?;
    drop(workers);
    print(&state, format)?;
    match rollout.progress().phase {
        Phase::Finished => Ok(()),
        Phase::Aborted(why) => bail!("rollout aborted: {why}"),
        other => bail!("rollout ended in {other:?}"),
    }
}

/// `rollout status`.
pub fn status(state_file: &Path, format: Format) -> Result<()> {
    print(&load(state_file)?, format)
}

fn print(state: &State, format: Format) -> Result<()> {
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(state)?);
        return Ok(());
    }
    let ago = unix_now().saturating_sub(state.updated_unix);
    println!(
        "rollout of {} ({}): {}{}{} (updated {ago} s ago)",
        state.bundle,
        state.version,
        state.phase,
        if state.wave > 0 && state.phase != "finished" {
            format!(" wave {}/{}", state.wave, state.waves.len())
        } else {
            String::new()
        },
        state
            .detail
            .as_deref()
            .map(|d| format!(": {d}"))
            .unwrap_or_default()
    );
    println!(
        "{:<6} {:>7} {:>8} {:>8} {:>9} {:>7} {:>8}",
        "WAVE", "DEVICES", "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "SKIPPED"
    );
    for (i, w) in state.waves.iter().enumerate() {
        println!(
            "{:<6} {:>7} {:>8} {:>8} {:>9} {:>7} {:>8}",
            i + 1,
            w.devices.len(),
            w.pending,
            w.running,
            w.succeeded,
            w.failed,
            w.skipped
        );
    }
    println!(
        "{:<24} {:>4} {:<10} {:>7}  DETAIL",
        "DEVICE", "WAVE", "STATE", "SECS"
    );
    for (d, v) in &state.devices {
        println!(
            "{:<24} {:>4} {:<10} {:>7}  {}",
            d,
            v.wave,
            v.state,
            v.secs.map(|s| format!("{s:.1}")).unwrap_or_default(),
            v.detail.as_deref().unwrap_or("")
        );
    }
    Ok(())
}
