//! A rollout's state file, `$OUTPOST_STATE/rollout/<context>.json`: written
//! atomically (temp file + rename) by the rollout process after every
//! change, read by `rollout status|abort|resume` from other processes. Also
//! the abort request beside it (`<context>.abort.json`), and whether the
//! process that writes the file is still alive.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use super::cli::Format;

/// The state file: what `rollout status` shows, and what `resume` needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub bundle: String,
    /// Hex SHA-256 of the bundle: `resume` refuses a changed file.
    #[serde(default)]
    pub bundle_sha256: String,
    pub version: String,
    /// The rollout process (a running rollout is not started twice).
    pub pid: u32,
    /// Its start time (clock ticks after boot, /proc/PID/stat): a reused
    /// pid is not taken for the rollout.
    #[serde(default)]
    pub pid_start: Option<u64>,
    pub started_unix: u64,
    pub updated_unix: u64,
    /// When it was resumed, each time.
    #[serde(default)]
    pub resumed_unix: Vec<u64>,
    /// `running`, `soaking`, `finished` or `aborted` as written;
    /// `rollout status` shows `interrupted` for a running or soaking one
    /// whose process is gone.
    pub phase: String,
    /// Why it aborted, how long it soaks, what is re-checked.
    pub detail: Option<String>,
    /// 1-based wave now running or soaking.
    pub wave: usize,
    /// Soaking: when the soak ends (its re-check starts).
    #[serde(default)]
    pub soak_until_unix: Option<u64>,
    /// An operator's abort.
    #[serde(default)]
    pub abort: Option<AbortRecord>,
    pub policy: PolicyView,
    /// Devices upgraded at once; `--force`; command expiry (for `resume`).
    #[serde(default)]
    pub parallel: usize,
    #[serde(default)]
    pub force: bool,
    #[serde(default)]
    pub expiry_secs: u64,
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

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WaveView {
    pub devices: Vec<String>,
    pub pending: usize,
    pub running: usize,
    /// Including those whose soak re-check is not answered yet.
    pub succeeded: usize,
    pub failed: usize,
    /// Never started: the rollout aborted first.
    pub skipped: usize,
    /// In flight when the rollout process died and it was then aborted:
    /// nobody knows how the upgrade ended.
    #[serde(default)]
    pub unknown: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceView {
    pub wave: usize,
    /// `pending`, `queued`, `running`, `checking` (succeeded, soak re-check
    /// asked), `succeeded`, `failed`, `skipped`, `unknown`.
    pub state: String,
    pub detail: Option<String>,
    /// Seconds from its start to its outcome.
    pub secs: Option<f64>,
    /// The slot it committed the new version in (the soak re-check wants
    /// it still booted from there).
    #[serde(default)]
    pub slot: Option<String>,
    /// Broker sessions its upgrade opened (one is held for all its polls).
    #[serde(default)]
    pub sessions: Option<usize>,
}

/// Who aborted, why, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortRecord {
    pub by: String,
    pub reason: Option<String>,
    pub at_unix: u64,
}

impl AbortRecord {
    /// `operator`'s abort now.
    pub fn now(reason: Option<String>) -> Self {
        Self {
            by: operator(),
            reason,
            at_unix: unix_now(),
        }
    }

    /// "aborted by ann@laptop: bad metrics".
    pub fn describe(&self) -> String {
        match &self.reason {
            Some(r) => format!("aborted by {}: {r}", self.by),
            None => format!("aborted by {}", self.by),
        }
    }
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

/// The abort request beside `state_file` (`<context>.abort.json`).
pub fn abort_request_path(state_file: &Path) -> PathBuf {
    state_file.with_extension("abort.json")
}

/// Held while a process drives (or marks) `context`'s rollout: an
/// exclusive `flock` on `<context>.lock` beside the state file. The kernel
/// drops it when the process ends, killed too, so nothing goes stale, and
/// two `start`/`resume`/`abort` at the same instant cannot both write.
pub struct RunLock {
    _file: std::fs::File,
}

/// Take the lock of `state_file`'s rollout; `None` while another process
/// holds it.
pub fn try_lock(state_file: &Path) -> Result<Option<RunLock>> {
    let path = state_file.with_extension("lock");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(RunLock { _file: file })),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}

/// A state or request file is a few KB per device; more than this is not ours.
const MAX_STATE_FILE: u64 = 256 << 20;

pub fn load(path: &Path) -> Result<State> {
    read_json(path).with_context(|| format!("no rollout state in {}", path.display()))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if len > MAX_STATE_FILE {
        anyhow::bail!("{} is {len} bytes: not a rollout file", path.display());
    }
    let text = std::fs::read_to_string(path)?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Replace `path` atomically: a reader sees the old file or the new one.
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec_pretty(value)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

pub fn save(path: &Path, state: &State) -> Result<()> {
    write_json(path, state)
}

/// Ask the rollout writing `state_file` to abort.
pub fn request_abort(state_file: &Path, record: &AbortRecord) -> Result<()> {
    write_json(&abort_request_path(state_file), record)
}

/// The pending abort request, if any (an unreadable one still aborts:
/// someone asked).
pub fn abort_requested(state_file: &Path) -> Option<AbortRecord> {
    let path = abort_request_path(state_file);
    if !path.exists() {
        return None;
    }
    Some(read_json(&path).unwrap_or_else(|e| AbortRecord {
        by: "unknown".into(),
        reason: Some(format!("unreadable abort request: {e:#}")),
        at_unix: unix_now(),
    }))
}

/// The request was acted on (or is stale).
pub fn clear_abort_request(state_file: &Path) {
    let _ = std::fs::remove_file(abort_request_path(state_file));
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// `user@host` of this process, for the abort record.
pub fn operator() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    if host.is_empty() {
        user
    } else {
        format!("{user}@{host}")
    }
}

/// Start time of process `pid` (field 22 of /proc/PID/stat), `None` when
/// there is no such process.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and ')': fields after the
    // last ')' start at field 3.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The process that wrote `state` is still running (the same process, not
/// a later one that got its pid).
pub fn writer_alive(state: &State) -> bool {
    match (process_start(state.pid), state.pid_start) {
        (None, _) => false,
        (Some(now), Some(then)) => now == then,
        (Some(_), None) => true,
    }
}

/// `running` or `soaking`: not finished, not aborted.
pub fn active(state: &State) -> bool {
    matches!(state.phase.as_str(), "running" | "soaking")
}

/// Active, but its process is gone: `resume` continues it.
pub fn interrupted(state: &State) -> bool {
    active(state) && !writer_alive(state)
}

/// The wave counts, from the devices.
pub fn recount(state: &mut State) {
    for w in &mut state.waves {
        let (mut pending, mut running, mut succeeded, mut failed, mut skipped, mut unknown) =
            (0, 0, 0, 0, 0, 0);
        for d in &w.devices {
            match state.devices.get(d).map(|v| v.state.as_str()) {
                Some("pending" | "queued") => pending += 1,
                Some("running") => running += 1,
                Some("succeeded" | "checking") => succeeded += 1,
                Some("failed") => failed += 1,
                Some("unknown") => unknown += 1,
                _ => skipped += 1,
            }
        }
        (
            w.pending,
            w.running,
            w.succeeded,
            w.failed,
            w.skipped,
            w.unknown,
        ) = (pending, running, succeeded, failed, skipped, unknown);
    }
}

/// Abort a rollout whose process is gone, in its file: what never started
/// is skipped; what was in flight has an unknown outcome (each board still
/// keeps its own A/B safety: `outpost slots` tells).
pub fn abort_offline(state: &mut State, record: AbortRecord) {
    for d in state.devices.values_mut() {
        match d.state.as_str() {
            "pending" | "queued" => d.state = "skipped".into(),
            "running" => {
                d.state = "unknown".into();
                d.detail = Some(
                    "in flight when the rollout process died: see `outpost slots` on it".into(),
                );
            }
            // Succeeded; its soak re-check was never answered.
            "checking" => d.state = "succeeded".into(),
            _ => {}
        }
    }
    state.phase = "aborted".into();
    state.detail = Some(format!(
        "{} (the rollout process {} was gone)",
        record.describe(),
        state.pid
    ));
    state.soak_until_unix = None;
    state.abort = Some(record);
    state.updated_unix = unix_now();
    recount(state);
}

/// `state` as `rollout status` shows it: an interrupted rollout says so.
pub fn shown(state: &State) -> State {
    let mut s = state.clone();
    if interrupted(state) {
        s.detail = Some(format!(
            "was {} wave {}/{}; its process {} is gone: `outpost rollout resume` continues it, `outpost rollout abort` ends it",
            state.phase,
            state.wave,
            state.waves.len(),
            state.pid
        ));
        s.phase = "interrupted".into();
    }
    s
}

pub fn print(state: &State, format: Format) -> Result<()> {
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
        if state.wave > 0 && matches!(state.phase.as_str(), "running" | "soaking") {
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
        "{:<6} {:>7} {:>8} {:>8} {:>9} {:>7} {:>8} {:>8}",
        "WAVE", "DEVICES", "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "SKIPPED", "UNKNOWN"
    );
    for (i, w) in state.waves.iter().enumerate() {
        println!(
            "{:<6} {:>7} {:>8} {:>8} {:>9} {:>7} {:>8} {:>8}",
            i + 1,
            w.devices.len(),
            w.pending,
            w.running,
            w.succeeded,
            w.failed,
            w.skipped,
            w.unknown
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

#[cfg(test)]
mod tests {
    use super::*;

    fn state(pid: u32, pid_start: Option<u64>) -> State {
        let dev = |state: &str| DeviceView {
            wave: 1,
            state: state.into(),
            detail: None,
            secs: None,
            slot: None,
            sessions: None,
        };
        State {
            bundle: "b".into(),
            bundle_sha256: String::new(),
            version: "1.1.0".into(),
            pid,
            pid_start,
            started_unix: 1,
            updated_unix: 1,
            resumed_unix: vec![],
            phase: "running".into(),
            detail: None,
            wave: 1,
            soak_until_unix: None,
            abort: None,
            policy: PolicyView {
                waves: vec![50, 100],
                min_per_wave: 1,
                soak_secs: 1,
                success_threshold_pct: 90.0,
                abort_after_failures_pct: 10.0,
                min_sample: 1,
                timeout_secs: 1,
            },
            parallel: 1,
            force: false,
            expiry_secs: 300,
            waves: vec![
                WaveView {
                    devices: vec!["a".into(), "b".into()],
                    ..WaveView::default()
                },
                WaveView {
                    devices: vec!["c".into()],
                    ..WaveView::default()
                },
            ],
            devices: [
                ("a".to_owned(), dev("succeeded")),
                ("b".to_owned(), dev("running")),
                ("c".to_owned(), dev("pending")),
            ]
            .into_iter()
            .collect(),
        }
    }

    /// A pid that no longer runs: a child that exited and was reaped.
    fn dead_pid() -> u32 {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        pid
    }

    #[test]
    fn liveness_needs_the_same_process_not_just_the_pid() {
        let me = std::process::id();
        let start = process_start(me);
        assert!(start.is_some());
        assert!(writer_alive(&state(me, start)));
        assert!(!interrupted(&state(me, start)));
        // Our pid, another start time: a reused pid.
        assert!(!writer_alive(&state(me, start.map(|s| s + 1))));
        let dead = state(dead_pid(), Some(1));
        assert!(interrupted(&dead));
        let shown = shown(&dead);
        assert_eq!(shown.phase, "interrupted");
        assert!(shown.detail.unwrap().contains("rollout resume"));
    }

    #[test]
    fn an_offline_abort_skips_the_rest_and_marks_in_flight_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctx.json");
        let mut s = state(dead_pid(), Some(1));
        let record = AbortRecord {
            by: "ann@laptop".into(),
            reason: Some("bad metrics".into()),
            at_unix: 5,
        };
        abort_offline(&mut s, record.clone());
        save(&path, &s).unwrap();
        let s = load(&path).unwrap();
        assert_eq!(s.phase, "aborted");
        assert_eq!(s.abort, Some(record));
        assert!(s
            .detail
            .as_deref()
            .unwrap()
            .contains("aborted by ann@laptop: bad metrics"));
        assert_eq!(s.devices["a"].state, "succeeded");
        assert_eq!(s.devices["b"].state, "unknown");
        assert_eq!(s.devices["c"].state, "skipped");
        assert_eq!((s.waves[0].succeeded, s.waves[0].unknown), (1, 1));
        assert_eq!(s.waves[1].skipped, 1);
        assert!(!interrupted(&s), "an aborted rollout is not resumable");
    }

    #[test]
    fn one_process_holds_a_rollouts_lock_until_it_drops_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rollout/ctx.json");
        let held = try_lock(&path).unwrap().expect("free");
        // flock locks belong to the open file: a second open is refused.
        assert!(try_lock(&path).unwrap().is_none());
        drop(held);
        assert!(try_lock(&path).unwrap().is_some());
    }

    #[test]
    fn abort_requests_round_trip_and_garbage_still_aborts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctx.json");
        assert_eq!(abort_requested(&path), None);
        let r = AbortRecord::now(Some("why".into()));
        request_abort(&path, &r).unwrap();
        assert_eq!(abort_requested(&path), Some(r));
        std::fs::write(abort_request_path(&path), "{oops").unwrap();
        let r = abort_requested(&path).unwrap();
        assert!(r.reason.unwrap().contains("unreadable"));
        clear_abort_request(&path);
        assert_eq!(abort_requested(&path), None);
        // An old state file (before resume existed) still loads.
        std::fs::write(
            &path,
            r#"{"bundle":"b","version":"1","pid":1,"started_unix":1,"updated_unix":1,
            "phase":"finished","detail":null,"wave":1,"policy":{"waves":[100],
            "min_per_wave":1,"soak_secs":1,"success_threshold_pct":90.0,
            "abort_after_failures_pct":10.0,"min_sample":1,"timeout_secs":1},
            "waves":[],"devices":{}}"#,
        )
        .unwrap();
        assert_eq!(load(&path).unwrap().phase, "finished");
    }
}
