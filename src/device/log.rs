//! The system log: a `tracing` layer that writes each event to the console and
//! keeps the most recent lines in a bounded in-memory ring buffer for the API.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Metadata;
use tracing::{Event, Level, Subscriber};

use crate::wire::{LogLevel, LogLine};

/// Lines kept in memory: about a boot's worth of system log.
pub const RING_LINES: usize = 2000;
/// Longest line kept (longer messages are cut): keeps the ring's memory bounded
/// at RING_LINES * MAX_LINE bytes in the worst case.
pub const MAX_LINE: usize = 512;

/// What one stored line costs besides its text (the `LogLine` and the
/// allocator's overhead), counted against a ring's byte bound.
pub const LINE_OVERHEAD: usize = 48;

/// A bounded ring of log lines, shared between the logger and the API.
/// Bounded twice: by lines and by bytes (text + [`LINE_OVERHEAD`]); the
/// oldest lines go first and are counted.
#[derive(Clone)]
pub struct LogRing {
    inner: Arc<Mutex<Ring>>,
    /// Raised when a warning or error is pushed, so the persisted log is
    /// flushed within a second rather than at the next batch.
    urgent: Arc<std::sync::atomic::AtomicBool>,
}

impl Default for LogRing {
    fn default() -> Self {
        Self::with_limits(RING_LINES, RING_LINES * (MAX_LINE + LINE_OVERHEAD))
    }
}

struct Ring {
    lines: VecDeque<LogLine>,
    /// Lines ever pushed: the sequence number of the next line.
    pushed: u64,
    /// Bytes held (text + overhead per line).
    bytes: usize,
    max_lines: usize,
    max_bytes: usize,
}

impl LogRing {
    pub fn new() -> Self {
        Self::default()
    }

    /// A ring of at most `max_lines` lines and `max_bytes` bytes.
    pub fn with_limits(max_lines: usize, max_bytes: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Ring {
                lines: VecDeque::new(),
                pushed: 0,
                bytes: 0,
                max_lines: max_lines.max(1),
                max_bytes,
            })),
            urgent: Default::default(),
        }
    }

    /// Whether a warning or error was pushed since the last call.
    pub fn take_urgent(&self) -> bool {
        self.urgent.swap(false, std::sync::atomic::Ordering::AcqRel)
    }

    pub fn push(&self, line: LogLine) {
        if matches!(line.level, LogLevel::Warn | LogLevel::Error) {
            self.urgent
                .store(true, std::sync::atomic::Ordering::Release);
        }
        // A poisoned lock only means another thread panicked mid-push; the
        // deque itself is still valid, so keep logging.
        let mut ring = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let cost = line.text.len() + LINE_OVERHEAD;
        while !ring.lines.is_empty()
            && (ring.lines.len() >= ring.max_lines || ring.bytes + cost > ring.max_bytes)
        {
            if let Some(old) = ring.lines.pop_front() {
                ring.bytes = ring.bytes.saturating_sub(old.text.len() + LINE_OVERHEAD);
            }
        }
        ring.bytes += cost;
        ring.lines.push_back(line);
        ring.pushed += 1;
    }

    /// Lines pushed that are no longer held (dropped to stay in bounds).
    pub fn dropped(&self) -> u64 {
        let ring = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        ring.pushed - ring.lines.len() as u64
    }

    /// Bytes held (text + per-line overhead).
    pub fn bytes(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).bytes
    }

    /// The newest `n` lines, oldest first.
    pub fn tail(&self, n: usize) -> Vec<LogLine> {
        self.tail_with_seq(n).0
    }

    /// The newest `n` lines and the sequence number to follow from.
    pub fn tail_with_seq(&self, n: usize) -> (Vec<LogLine>, u64) {
        let ring = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let skip = ring.lines.len().saturating_sub(n);
        (ring.lines.iter().skip(skip).cloned().collect(), ring.pushed)
    }

    /// Lines pushed since sequence number `seq` (at most `max`; lines that
    /// already fell out of the ring are skipped), and the next `seq`.
    pub fn since(&self, seq: u64, max: usize) -> (Vec<LogLine>, u64) {
        let ring = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let oldest = ring.pushed - ring.lines.len() as u64;
        let start = usize::try_from(seq.max(oldest) - oldest).unwrap_or(usize::MAX);
        let lines: Vec<LogLine> = ring.lines.iter().skip(start).take(max).cloned().collect();
        let next = seq.max(oldest) + lines.len() as u64;
        (lines, next)
    }
}

/// Milliseconds since boot (CLOCK_MONOTONIC starts near kernel start).
pub fn uptime_ms() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs * 1000 + nanos / 1_000_000
}

/// The whole subscriber: a level check and `event`. Spans are not used on the
/// device, so their hooks do nothing (a full `tracing-subscriber` registry
/// cost ~20 KB of outpost-init for no use).
struct RingSubscriber {
    ring: LogRing,
    console: bool,
    max_level: Level,
}

#[derive(Default)]
struct MessageVisitor {
    text: String,
}

impl Visit for MessageVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.text, "{value:?}");
        } else {
            let _ = write!(self.text, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.text.push_str(value);
        } else {
            let _ = write!(self.text, " {}={value}", field.name());
        }
    }
}

impl Subscriber for RingSubscriber {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        // tracing orders levels by verbosity: TRACE > DEBUG > INFO > WARN > ERROR.
        *metadata.level() <= self.max_level
    }
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::from_level(
            self.max_level,
        ))
    }
    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _span: &Id, _values: &Record<'_>) {}
    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}
    fn enter(&self, _span: &Id) {}
    fn exit(&self, _span: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut visitor = MessageVisitor::default();
        event.record(&mut visitor);
        let mut text = visitor.text;
        if text.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        let level = match *event.metadata().level() {
            Level::ERROR => LogLevel::Error,
            Level::WARN => LogLevel::Warn,
            Level::INFO => LogLevel::Info,
            _ => LogLevel::Debug,
        };
        let at_ms = uptime_ms();
        if self.console {
            // The console is best effort: a full or missing console must not stop logging.
            let _ = writeln!(
                std::io::stderr().lock(),
                "[{:>5}.{:03}] outpost-init {level}: {text}",
                at_ms / 1000,
                at_ms % 1000
            );
        }
        self.ring.push(LogLine { at_ms, level, text });
    }
}

/// Install the global logger; returns the ring the API reads from.
pub fn init(console: bool, max_level: Level) -> LogRing {
    let ring = LogRing::new();
    let subscriber = RingSubscriber {
        ring: ring.clone(),
        console,
        max_level,
    };
    // Fails only if a logger is already set (tests); the ring is still usable.
    let _ = tracing::subscriber::set_global_default(subscriber);
    ring
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> LogLine {
        LogLine {
            at_ms: 0,
            level: LogLevel::Info,
            text: text.into(),
        }
    }

    #[test]
    fn followers_get_each_new_line_once() {
        let ring = LogRing::new();
        ring.push(line("a"));
        let (tail, seq) = ring.tail_with_seq(10);
        assert_eq!((tail.len(), seq), (1, 1));
        assert!(ring.since(seq, 10).0.is_empty());
        ring.push(line("b"));
        ring.push(line("c"));
        let (new, seq) = ring.since(seq, 1);
        assert_eq!((new[0].text.as_str(), seq), ("b", 2));
        let (new, seq) = ring.since(seq, 10);
        assert_eq!((new[0].text.as_str(), seq), ("c", 3));
        // A follower that fell behind the ring skips what was lost.
        for i in 0..RING_LINES + 5 {
            ring.push(line(&i.to_string()));
        }
        let (new, _) = ring.since(seq, usize::MAX);
        assert_eq!(new.len(), RING_LINES);
    }

    #[test]
    fn byte_bound_holds_under_a_flood() {
        let ring = LogRing::with_limits(10_000, 4096);
        for i in 0..100_000 {
            ring.push(line(&format!("{i:0>100}")));
            assert!(ring.bytes() <= 4096);
        }
        let kept = ring.tail(usize::MAX);
        assert_eq!(kept.len(), 4096 / (100 + LINE_OVERHEAD));
        assert_eq!(kept.last().unwrap().text, format!("{:0>100}", 99_999));
        assert_eq!(ring.dropped(), 100_000 - kept.len() as u64);
    }

    #[test]
    fn ring_is_bounded_and_keeps_newest() {
        let ring = LogRing::new();
        for i in 0..RING_LINES + 10 {
            ring.push(line(&i.to_string()));
        }
        let all = ring.tail(usize::MAX);
        assert_eq!(all.len(), RING_LINES);
        assert_eq!(all[0].text, "10");
        assert_eq!(
            ring.tail(2)
                .iter()
                .map(|l| l.text.as_str())
                .collect::<Vec<_>>(),
            [(RING_LINES + 8).to_string(), (RING_LINES + 9).to_string()]
        );
    }
}
