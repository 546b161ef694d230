//! Logs that survive a reboot or a power cut: the system log (the ring) and
//! the kernel log (/dev/kmsg) of each boot are appended to DATA, in batches,
//! under `logs/boot-0/`; at boot the earlier boots move up one (boot-0 ->
//! boot-1 -> ...), and only [`KEEP_BOOTS`] are kept. Everything is bounded:
//! per file, per boot and in total.
//!
//! SD-card wear: lines are written and `fdatasync`ed at most every
//! [`BATCH_INTERVAL`], at once (but at most every [`URGENT_MIN_GAP`]) after a
//! warning or error, and at reboot/poweroff. A power cut loses at most the
//! last batch; a torn last line is left out when reading.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::log::LogRing;
use crate::wire::{LogLevel, LogLine, LogSource};

/// Directory under DATA holding one `boot-N` directory per boot.
pub const LOG_DIR: &str = "logs";
/// Boots kept: this one (boot-0) and the three before it.
pub const KEEP_BOOTS: u8 = 4;
/// Largest size of one log file. At the cap the file becomes `NAME.old`
/// (replacing the older one) and a fresh file starts, so a boot that runs
/// for months keeps its newest lines and at most 2 x FILE_CAP per log.
pub const FILE_CAP: u64 = 256 * 1024;
/// All boots together (4 boots x 2 logs x 2 files x FILE_CAP = 4 MiB by
/// construction); files left by another build are trimmed to this at boot,
/// oldest boot first.
pub const TOTAL_CAP: u64 = 4 * 1024 * 1024;
/// How often new lines are written and synced.
pub const BATCH_INTERVAL: Duration = Duration::from_secs(5);
/// Least time between two syncs caused by warnings (an error flood must not
/// turn into an fsync flood).
pub const URGENT_MIN_GAP: Duration = Duration::from_secs(1);
/// Unsynced bytes buffered per log before they are written (not yet synced):
/// bounds PID 1's memory when a flood arrives between batches.
const PENDING_CAP: usize = 64 * 1024;
/// Kernel records taken per pump (the kernel's buffer holds far fewer).
const MAX_KMSG_PER_PUMP: usize = 10_000;
/// Directory entries looked at under LOG_DIR (stray names included).
const MAX_DIR_ENTRIES: usize = 256;

const SYSTEM_FILE: &str = "system.log";
const KERNEL_FILE: &str = "kernel.log";

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("boot -{boot} is not kept: boots 0 to -{} are", KEEP_BOOTS - 1)]
    OutOfRange { boot: u8 },
    #[error("no {what} log of boot -{boot} on DATA")]
    Missing { boot: u8, what: &'static str },
    #[error("boot 0 is still being written: read it with BootLogs, or page an earlier boot")]
    StillWritten,
    #[error("starting the log writer thread: {0}")]
    Thread(String),
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> PersistError + 'a {
    move |source| PersistError::Io {
        op,
        path: path.display().to_string(),
        source,
    }
}

fn file_name(source: LogSource) -> &'static str {
    match source {
        LogSource::System => SYSTEM_FILE,
        LogSource::Kernel => KERNEL_FILE,
    }
}

fn boot_dir(logs: &Path, boot: u8) -> PathBuf {
    logs.join(format!("boot-{boot}"))
}

/// New kernel log lines since the last call; `urgent` for error records.
pub trait KernelSource: Send {
    fn read_new(&mut self, max: usize, out: &mut Vec<(String, bool)>);
}

/// Move earlier boots up one (dropping the oldest), trim to [`TOTAL_CAP`],
/// and create an empty `boot-0`. A cut half-way is completed by the next
/// boot's rotation (each step is one rename or removal).
pub fn rotate(logs: &Path) -> Result<PathBuf, PersistError> {
    std::fs::create_dir_all(logs).map_err(io("creating", logs))?;
    // Strays from a build that kept more boots, or a half-done rotation.
    if let Ok(entries) = std::fs::read_dir(logs) {
        for entry in entries.take(MAX_DIR_ENTRIES).flatten() {
            let name = entry.file_name();
            let n = name
                .to_str()
                .and_then(|n| n.strip_prefix("boot-"))
                .and_then(|n| n.parse::<u32>().ok());
            if n.is_some_and(|n| n >= u32::from(KEEP_BOOTS) - 1) {
                remove(&entry.path())?;
            }
        }
    }
    for n in (0..KEEP_BOOTS - 1).rev() {
        let from = boot_dir(logs, n);
        if from.exists() {
            let to = boot_dir(logs, n + 1);
            std::fs::rename(&from, &to).map_err(io("renaming", &from))?;
        }
    }
    // Oldest first, while the kept boots are over the total cap.
    for n in (1..KEEP_BOOTS).rev() {
        let total: u64 = (1..KEEP_BOOTS).map(|b| dir_size(&boot_dir(logs, b))).sum();
        if total <= TOTAL_CAP {
            break;
        }
        remove(&boot_dir(logs, n))?;
    }
    let current = boot_dir(logs, 0);
    std::fs::create_dir_all(&current).map_err(io("creating", &current))?;
    sync_dir(logs);
    Ok(current)
}

/// Remove a boot directory (it holds only files) or a stray file.
/// Shallow on purpose: std's recursive `remove_dir_all` costs PID 1 ~KBs.
fn remove(path: &Path) -> Result<(), PersistError> {
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.take(MAX_DIR_ENTRIES).flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let r = if path.is_dir() {
        std::fs::remove_dir(path)
    } else {
        std::fs::remove_file(path)
    };
    match r {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("removing", path)(e)),
        _ => Ok(()),
    }
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .take(MAX_DIR_ENTRIES)
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// The rename of a directory is durable once its parent is synced.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// One log file of this boot: lines buffered until the next flush.
struct Sink {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    pending: Vec<u8>,
}

impl Sink {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            file: None,
            size: 0,
            pending: Vec::new(),
        }
    }

    fn push(&mut self, line: &str) -> Result<(), PersistError> {
        // A line longer than the file cap would never fit: cut it.
        let max = usize::try_from(FILE_CAP / 2).unwrap_or(usize::MAX);
        let mut cut = line.len().min(max);
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        self.pending
            .extend_from_slice(line.get(..cut).unwrap_or("").as_bytes());
        self.pending.push(b'\n');
        if self.pending.len() >= PENDING_CAP {
            self.write()?;
        }
        Ok(())
    }

    /// Write what is pending (no sync), moving the file aside at the cap.
    /// Pending lines are dropped when the write fails (DATA full or turned
    /// read-only): memory stays bounded, the error is returned.
    fn write(&mut self) -> Result<(), PersistError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let r = self.write_pending();
        self.pending.clear();
        if r.is_err() {
            // Reopen next time: the file may have gone.
            self.file = None;
        }
        r
    }

    fn write_pending(&mut self) -> Result<(), PersistError> {
        let len = self.pending.len() as u64;
        if self.size > 0 && self.size + len > FILE_CAP {
            // Sync what is there first: the .old copy must be whole.
            if let Some(f) = self.file.take() {
                let _ = f.sync_data();
            }
            let old = self.path.with_extension("log.old");
            std::fs::rename(&self.path, &old).map_err(io("renaming", &self.path))?;
            self.size = 0;
        }
        if self.file.is_none() {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(io("opening", &self.path))?;
            self.size = f.metadata().map(|m| m.len()).unwrap_or(0);
            self.file = Some(f);
        }
        if let Some(f) = &mut self.file {
            f.write_all(&self.pending)
                .map_err(io("writing", &self.path))?;
        }
        self.size += len;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), PersistError> {
        let had = !self.pending.is_empty();
        self.write()?;
        if let (true, Some(f)) = (had, &self.file) {
            f.sync_data().map_err(io("syncing", &self.path))?;
        }
        Ok(())
    }
}

/// This boot's persisted logs: pulls new lines from the ring and the kernel
/// and appends them to `boot-0`.
pub struct Persister {
    ring: LogRing,
    seq: u64,
    kernel: Option<Box<dyn KernelSource>>,
    system: Sink,
    kernel_log: Sink,
    /// Written since the last sync.
    dirty: bool,
    /// The last flush failed (said once, not at every batch).
    failing: bool,
}

impl Persister {
    /// Rotate earlier boots, then start this boot's logs in `logs/boot-0`.
    /// Lines already in the ring (logged before DATA was mounted) go first.
    pub fn open(
        logs: &Path,
        ring: LogRing,
        kernel: Option<Box<dyn KernelSource>>,
    ) -> Result<Self, PersistError> {
        let dir = rotate(logs)?;
        Ok(Self {
            ring,
            seq: 0,
            kernel,
            system: Sink::new(dir.join(SYSTEM_FILE)),
            kernel_log: Sink::new(dir.join(KERNEL_FILE)),
            dirty: false,
            failing: false,
        })
    }

    /// Take new lines into the sinks; true if one of them is urgent.
    pub fn collect(&mut self) -> Result<bool, PersistError> {
        let mut urgent = false;
        let (lines, next) = self.ring.since(self.seq, super::log::RING_LINES);
        let lost = next
            .saturating_sub(self.seq)
            .saturating_sub(lines.len() as u64);
        if lost > 0 {
            self.system.push(&format!(
                "[{lost} lines dropped: more than the ring holds arrived between two batches]"
            ))?;
        }
        self.seq = next;
        for l in &lines {
            urgent |= matches!(l.level, LogLevel::Warn | LogLevel::Error);
            self.system.push(&format_line(l))?;
        }
        self.dirty |= !lines.is_empty() || lost > 0;
        if let Some(k) = &mut self.kernel {
            let mut records = Vec::new();
            k.read_new(MAX_KMSG_PER_PUMP, &mut records);
            self.dirty |= !records.is_empty();
            for (line, u) in records {
                urgent |= u;
                self.kernel_log.push(&line)?;
            }
        }
        Ok(urgent)
    }

    /// Collect, write and sync now (a batch, or the last one before a reboot).
    pub fn flush(&mut self) -> Result<(), PersistError> {
        self.collect()?;
        if !self.dirty {
            return Ok(());
        }
        // Both are tried; the first error is returned.
        let a = self.system.flush();
        let b = self.kernel_log.flush();
        self.dirty = false;
        a.and(b)
    }
}

/// One system log line as stored (and printed by `outpost logs`).
pub fn format_line(l: &LogLine) -> String {
    let level = l.level.to_string();
    format!(
        "[{:>5}.{:03}] {level:<5} {}",
        l.at_ms / 1000,
        l.at_ms % 1000,
        l.text
    )
}

/// A shared handle: the batching task and the power path both flush.
#[derive(Clone, Default)]
pub struct PersistHandle {
    inner: Arc<Mutex<Option<Persister>>>,
}

impl PersistHandle {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(&self, p: Persister) {
        *self.inner.lock().unwrap_or_else(PoisonError::into_inner) = Some(p);
    }

    /// Write and sync what is new (before a reboot or poweroff). Logged, not
    /// returned: a log that cannot be written must not stop a reboot.
    pub fn flush(&self) {
        self.tick(true, false);
    }

    /// Take new lines; write and sync them when `due`, `urgent` or a new
    /// kernel line is an error. A failure is logged once, until it recovers
    /// (a log line per failed batch would itself be urgent, every second).
    fn tick(&self, due: bool, urgent: bool) {
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(p) = guard.as_mut() else {
            return;
        };
        let r = p.collect().and_then(|kernel_urgent| {
            if due || urgent || kernel_urgent {
                p.flush()
            } else {
                Ok(())
            }
        });
        match r {
            // The ring has its own lock: logging here cannot deadlock.
            Err(e) if !p.failing => {
                p.failing = true;
                tracing::error!("persisted log: {e}; lines are dropped until it works again");
            }
            Ok(()) if p.failing && due => {
                p.failing = false;
                tracing::warn!("persisted log: writing again");
            }
            _ => {}
        }
    }
}

/// Start persisting this boot's logs under `data/logs`: rotate, then a thread
/// that flushes every [`BATCH_INTERVAL`], and within [`URGENT_MIN_GAP`] of
/// a warning or error.
pub fn start(
    data: &Path,
    ring: &LogRing,
    kernel: Option<Box<dyn KernelSource>>,
    handle: &PersistHandle,
) -> Result<(), PersistError> {
    let logs = data.join(LOG_DIR);
    let p = Persister::open(&logs, ring.clone(), kernel)?;
    handle.set(p);
    let (ring, handle) = (ring.clone(), handle.clone());
    // A thread of its own, not a task: on a slow SD card an fsync can take a
    // second, which the executor thread (the API, the watchdog) must not
    // wait out. A tick per URGENT_MIN_GAP: new lines are taken (memory stays
    // small), written and synced only when due or urgent.
    let per_batch = (BATCH_INTERVAL.as_millis() / URGENT_MIN_GAP.as_millis()).max(1);
    std::thread::Builder::new()
        .name("persistlog".into())
        .spawn(move || {
            let mut ticks = 0u32;
            loop {
                std::thread::sleep(URGENT_MIN_GAP);
                ticks += 1;
                let due = u128::from(ticks) >= per_batch;
                if due {
                    ticks = 0;
                }
                handle.tick(due, ring.take_urgent());
            }
        })
        .map_err(|e| PersistError::Thread(e.to_string()))?;
    tracing::info!(
        "persisting logs in {} (keeping {KEEP_BOOTS} boots)",
        logs.display()
    );
    Ok(())
}

/// Most bytes read back from one persisted log: both its files.
const MAX_READ: u64 = 2 * FILE_CAP;

/// The last `max_bytes` of a persisted log, as whole lines: a line cut by
/// the start of the window, a torn last line (power cut) and lines with NUL
/// bytes (blocks the journal allocated but the data never reached) are left out.
pub fn read_boot(
    logs: &Path,
    boot: u8,
    source: LogSource,
    max_bytes: usize,
) -> Result<String, PersistError> {
    if boot >= KEEP_BOOTS {
        return Err(PersistError::OutOfRange { boot });
    }
    let what = match source {
        LogSource::System => "system",
        LogSource::Kernel => "kernel",
    };
    let dir = boot_dir(logs, boot);
    let cur = dir.join(file_name(source));
    let old = cur.with_extension("log.old");
    if !cur.exists() && !old.exists() {
        return Err(PersistError::Missing { boot, what });
    }
    let max = (max_bytes as u64).min(MAX_READ);
    let mut tail = read_tail(&cur, max)?;
    let mut partial = tail.1;
    if !partial && (tail.0.len() as u64) < max {
        let (mut before, cut) = read_tail(&old, max - tail.0.len() as u64)?;
        // A torn end of .old cannot happen (synced before the move), but be safe.
        drop_torn_end(&mut before);
        before.extend_from_slice(&tail.0);
        partial = cut;
        tail.0 = before;
    }
    Ok(crate::wire::logtext::whole_lines(&tail.0, partial))
}

/// Raw bytes of an earlier boot's log (`.old` then current, as one stream)
/// from `offset`, at most `max`, and the stream's total length. Boot 0 is
/// refused: its files grow and rotate, so offsets would not hold.
pub fn read_boot_bytes(
    logs: &Path,
    boot: u8,
    source: LogSource,
    offset: u64,
    max: usize,
) -> Result<(u64, Vec<u8>), PersistError> {
    if boot == 0 {
        return Err(PersistError::StillWritten);
    }
    if boot >= KEEP_BOOTS {
        return Err(PersistError::OutOfRange { boot });
    }
    let what = match source {
        LogSource::System => "system",
        LogSource::Kernel => "kernel",
    };
    let cur = boot_dir(logs, boot).join(file_name(source));
    let old = cur.with_extension("log.old");
    let len = |p: &Path| match std::fs::metadata(p) {
        Ok(m) => Ok(Some(m.len())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("reading", p)(e)),
    };
    let (old_len, cur_len) = match (len(&old)?, len(&cur)?) {
        (None, None) => return Err(PersistError::Missing { boot, what }),
        (o, c) => (o.unwrap_or(0), c.unwrap_or(0)),
    };
    let total = old_len + cur_len;
    let mut out = Vec::new();
    let mut want = (max as u64).min(total.saturating_sub(offset));
    for (path, start, len) in [(&old, 0, old_len), (&cur, old_len, cur_len)] {
        let from = offset + out.len() as u64;
        if want == 0 || from >= start + len || from < start {
            continue;
        }
        let take = want.min(start + len - from);
        let mut f = File::open(path).map_err(io("opening", path))?;
        f.seek(SeekFrom::Start(from - start))
            .map_err(io("reading", path))?;
        let before = out.len();
        f.take(take)
            .read_to_end(&mut out)
            .map_err(io("reading", path))?;
        want -= (out.len() - before) as u64;
    }
    Ok((total, out))
}

/// The last `max` bytes of `path` and whether the file was longer.
fn read_tail(path: &Path, max: u64) -> Result<(Vec<u8>, bool), PersistError> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), false)),
        Err(e) => return Err(io("opening", path)(e)),
    };
    let len = f.metadata().map_err(io("reading", path))?.len();
    let start = len.saturating_sub(max);
    // One byte more when cut: if it is a newline, the window starts on a
    // whole line (see `clean`).
    let from = start.saturating_sub(1);
    f.seek(SeekFrom::Start(from)).map_err(io("reading", path))?;
    let mut buf = Vec::new();
    f.take(len - from)
        .read_to_end(&mut buf)
        .map_err(io("reading", path))?;
    Ok((buf, start > 0))
}

fn drop_torn_end(buf: &mut Vec<u8>) {
    let keep = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    buf.truncate(keep);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(level: LogLevel, text: &str) -> LogLine {
        LogLine {
            at_ms: 1234,
            level,
            text: text.into(),
        }
    }

    fn files(dir: &Path) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                (name, dir_size(&e.path()))
            })
            .collect();
        out.sort();
        out
    }

    struct FakeKernel(Vec<(String, bool)>);
    impl KernelSource for FakeKernel {
        fn read_new(&mut self, max: usize, out: &mut Vec<(String, bool)>) {
            let n = self.0.len().min(max);
            out.extend(self.0.drain(..n));
        }
    }

    /// One "boot": open, log `text`, flush.
    fn boot(logs: &Path, text: &str) {
        let ring = LogRing::new();
        ring.push(line(LogLevel::Info, text));
        let kernel = FakeKernel(vec![(format!("[ 0.1] kernel {text}"), false)]);
        let mut p = Persister::open(logs, ring, Some(Box::new(kernel))).unwrap();
        p.flush().unwrap();
    }

    #[test]
    fn rotation_keeps_n_boots_newest_first() {
        let tmp = tempfile::tempdir().unwrap();
        let logs = tmp.path().join("logs");
        for i in 0..KEEP_BOOTS + 3 {
            boot(&logs, &format!("boot number {i}"));
        }
        let names: Vec<String> = files(&logs).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["boot-0", "boot-1", "boot-2", "boot-3"]);
        let last = KEEP_BOOTS + 2;
        for b in 0..KEEP_BOOTS {
            let text = read_boot(&logs, b, LogSource::System, 4096).unwrap();
            assert!(
                text.contains(&format!("boot number {}\n", last - b)),
                "{b}: {text}"
            );
            let k = read_boot(&logs, b, LogSource::Kernel, 4096).unwrap();
            assert_eq!(k, format!("[ 0.1] kernel boot number {}\n", last - b));
        }
        assert!(matches!(
            read_boot(&logs, KEEP_BOOTS, LogSource::System, 10),
            Err(PersistError::OutOfRange { .. })
        ));
    }

    #[test]
    fn strays_and_oversized_boots_are_removed_at_rotation() {
        let tmp = tempfile::tempdir().unwrap();
        let logs = tmp.path().join("logs");
        // A build that kept more boots, and oversized files.
        for n in [1u32, 2, 9, 200] {
            let d = logs.join(format!("boot-{n}"));
            std::fs::create_dir_all(&d).unwrap();
            let f = File::create(d.join(SYSTEM_FILE)).unwrap();
            f.set_len(TOTAL_CAP / 2 + 1).unwrap();
        }
        std::fs::write(logs.join("boot-x"), "not ours, left alone").unwrap();
        rotate(&logs).unwrap();
        let got = files(&logs);
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        // boot-1 -> boot-2 (kept), boot-2 -> boot-3 (dropped: over the total).
        assert_eq!(names, ["boot-0", "boot-2", "boot-x"]);
        let total: u64 = got.iter().map(|(_, s)| s).sum();
        assert!(total <= TOTAL_CAP, "{total}");
    }

    #[test]
    fn a_torn_last_line_and_zeroed_blocks_are_left_out() {
        let tmp = tempfile::tempdir().unwrap();
        let logs = tmp.path().join("logs");
        let d = logs.join("boot-1");
        std::fs::create_dir_all(&d).unwrap();
        let mut bytes = b"first line\nsecond line\n".to_vec();
        bytes.extend_from_slice(&[0u8; 40]);
        bytes.extend_from_slice(b"\nafter zeros\nthird li");
        std::fs::write(d.join(SYSTEM_FILE), &bytes).unwrap();
        let text = read_boot(&logs, 1, LogSource::System, 4096).unwrap();
        assert_eq!(text, "first line\nsecond line\nafter zeros\n");
        // A window starting mid-line drops that line too; invalid UTF-8 is replaced.
        std::fs::write(d.join(SYSTEM_FILE), b"aaaa\nbb\xffbb\ncc").unwrap();
        assert_eq!(
            read_boot(&logs, 1, LogSource::System, 8).unwrap(),
            "bb\u{fffd}bb\n"
        );
        assert_eq!(read_boot(&logs, 1, LogSource::System, 0).unwrap(), "");
        assert!(matches!(
            read_boot(&logs, 1, LogSource::Kernel, 100),
            Err(PersistError::Missing { boot: 1, .. })
        ));
    }

    #[test]
    fn an_earlier_boots_log_pages_as_one_stream_across_old_and_current() {
        let tmp = tempfile::tempdir().unwrap();
        let logs = tmp.path().join("logs");
        let d = logs.join("boot-1");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("system.log.old"), b"one\ntwo\n").unwrap();
        std::fs::write(d.join(SYSTEM_FILE), b"three\nfour\ntor").unwrap();
        let page = |offset| read_boot_bytes(&logs, 1, LogSource::System, offset, 5).unwrap();
        // 5-byte pages: across the two files, the last one short, then empty.
        let mut all = Vec::new();
        let mut offset = 0;
        loop {
            let (total, bytes) = page(offset);
            assert_eq!(total, 22);
            if bytes.is_empty() {
                break;
            }
            assert!(bytes.len() <= 5);
            offset += bytes.len() as u64;
            all.extend_from_slice(&bytes);
        }
        assert_eq!(all, b"one\ntwo\nthree\nfour\ntor");
        assert_eq!(page(99).1, b"");
        // Only the current file (no rotation that boot).
        std::fs::remove_file(d.join("system.log.old")).unwrap();
        assert_eq!(page(0), (14, b"three".to_vec()));
        // Boot 0 still grows: refused; missing and unkept boots are named.
        assert!(matches!(
            read_boot_bytes(&logs, 0, LogSource::System, 0, 5),
            Err(PersistError::StillWritten)
        ));
        assert!(matches!(
            read_boot_bytes(&logs, 1, LogSource::Kernel, 0, 5),
            Err(PersistError::Missing { boot: 1, .. })
        ));
        assert!(matches!(
            read_boot_bytes(&logs, KEEP_BOOTS, LogSource::System, 0, 5),
            Err(PersistError::OutOfRange { .. })
        ));
    }

    #[test]
    fn a_flood_stays_within_the_caps_and_keeps_the_newest_lines() {
        let tmp = tempfile::tempdir().unwrap();
        let logs = tmp.path().join("logs");
        let ring = LogRing::new();
        let flood = FakeKernel(
            (0..20_000)
                .map(|i| (format!("k{i:06} {}", "x".repeat(200)), i % 7 == 0))
                .collect(),
        );
        let mut p = Persister::open(&logs, ring.clone(), Some(Box::new(flood))).unwrap();
        // ~10 MB of system log, batches of a few thousand lines: some are
        // lost from the ring between batches and said so.
        for i in 0..40_000u32 {
            ring.push(line(
                LogLevel::Info,
                &format!("s{i:06} {}", "y".repeat(100)),
            ));
            if i % 3000 == 2999 {
                p.flush().unwrap();
            }
            if i == 3000 {
                let text = read_boot(&logs, 0, LogSource::System, 1 << 20).unwrap();
                assert!(text.contains("[1000 lines dropped"), "{}", &text[..200]);
            }
        }
        ring.push(line(LogLevel::Error, "the very last line"));
        assert!(p.collect().unwrap(), "an error is urgent");
        p.flush().unwrap();
        for (name, size) in files(&logs.join("boot-0")) {
            assert!(size <= FILE_CAP, "{name}: {size}");
        }
        assert!(dir_size(&logs.join("boot-0")) <= 4 * FILE_CAP);
        let text = read_boot(&logs, 0, LogSource::System, 1 << 20).unwrap();
        assert!(
            text.ends_with("ERROR the very last line\n"),
            "{}",
            &text[text.len() - 100..]
        );
        assert!(text.len() as u64 > FILE_CAP, "the .old file is read too");
        let k = read_boot(&logs, 0, LogSource::Kernel, 1 << 20).unwrap();
        assert!(k.contains("k019999 "));
        assert!(!k.contains("k000000 "), "oldest kernel lines rotated out");
    }

    #[test]
    fn an_unwritable_data_drops_lines_and_memory_stays_bounded() {
        let tmp = tempfile::tempdir().unwrap();
        let logs = tmp.path().join("logs");
        let ring = LogRing::new();
        let mut p = Persister::open(&logs, ring.clone(), None).unwrap();
        // DATA gone from under us (as if it were unmounted or turned read-only).
        std::fs::remove_dir_all(logs.join("boot-0")).unwrap();
        for round in 0..20 {
            for i in 0..1500 {
                ring.push(line(
                    LogLevel::Error,
                    &format!("{round}/{i} {}", "z".repeat(200)),
                ));
            }
            assert!(p.flush().is_err());
            assert!(p.system.pending.len() <= PENDING_CAP);
        }
        // Back: writing resumes with the new lines.
        std::fs::create_dir_all(logs.join("boot-0")).unwrap();
        ring.push(line(LogLevel::Info, "back"));
        p.flush().unwrap();
        let text = read_boot(&logs, 0, LogSource::System, 4096).unwrap();
        assert!(text.ends_with("INFO  back\n"), "{text}");
    }

    #[test]
    fn lines_logged_before_open_are_persisted_and_nothing_twice() {
        let tmp = tempfile::tempdir().unwrap();
        let logs = tmp.path().join("logs");
        let ring = LogRing::new();
        ring.push(line(LogLevel::Info, "before DATA"));
        let mut p = Persister::open(&logs, ring.clone(), None).unwrap();
        p.flush().unwrap();
        p.flush().unwrap();
        ring.push(line(LogLevel::Info, "after"));
        p.flush().unwrap();
        let text = read_boot(&logs, 0, LogSource::System, 4096).unwrap();
        assert_eq!(
            text,
            "[    1.234] INFO  before DATA\n[    1.234] INFO  after\n"
        );
    }
}
