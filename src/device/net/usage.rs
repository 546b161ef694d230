//! Data use per link: the kernel's byte counters, added up per calendar
//! month (UTC) across boots in DATA/network/usage (a few lines of text,
//! written durably every [`SAVE_EVERY`] samples and when the month turns).
//!
//! Counters reset when an interface goes away and comes back (a modem
//! re-enumerating on USB): a counter below the last sample counts from 0.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Lines in the usage file at most (a month line and one per link).
const MAX_LINES: usize = 1 + crate::config::network::MAX_LINKS;
/// The file is a few hundred bytes; anything larger is not ours.
const MAX_FILE: usize = 4096;
/// How often the counters are sampled.
pub const SAMPLE: Duration = Duration::from_secs(60);
/// Samples between saves: at most this many minutes of counts are lost on
/// a power cut, and DATA sees one small write per period.
pub const SAVE_EVERY: u32 = 15;
pub const USAGE_FILE: &str = "network/usage";

/// "YYYY-MM" of a Unix time (proleptic Gregorian, UTC).
pub fn month_of(unix_secs: u64) -> String {
    // Howard Hinnant's civil_from_days.
    let days = i64::try_from(unix_secs / 86_400).unwrap_or(i64::MAX / 2) + 719_468;
    let era = days.div_euclid(146_097);
    let doe = days.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}")
}

/// This month's totals per link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub month: String,
    pub bytes: Vec<(String, u64)>,
}

impl Usage {
    /// Parse the file; anything malformed gives an empty record (counts
    /// start again rather than PID 1 failing).
    pub fn parse(text: &str) -> Self {
        let mut u = Self::default();
        for line in text.lines().take(MAX_LINES) {
            let mut w = line.split_whitespace();
            match (w.next(), w.next(), w.next()) {
                (Some("month"), Some(m), None) => u.month = m.to_owned(),
                (Some(name), Some(n), None) => {
                    if let Ok(n) = n.parse() {
                        u.bytes.push((name.to_owned(), n));
                    }
                }
                _ => {}
            }
        }
        u
    }

    pub fn render(&self) -> String {
        let mut out = format!("month {}\n", self.month);
        for (name, n) in &self.bytes {
            out.push_str(&format!("{name} {n}\n"));
        }
        out
    }

    pub fn get(&self, name: &str) -> u64 {
        self.bytes
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, b)| *b)
    }

    /// Add `delta` to `name` in `month` (a new month starts from zero).
    pub fn add(&mut self, month: &str, name: &str, delta: u64) {
        if self.month != month {
            self.month = month.to_owned();
            self.bytes.clear();
        }
        match self.bytes.iter_mut().find(|(n, _)| n == name) {
            Some((_, b)) => *b = b.saturating_add(delta),
            None => self.bytes.push((name.to_owned(), delta)),
        }
    }
}

/// Bytes since the last sample, given the previous and current counter.
pub fn delta(last: u64, now: u64) -> u64 {
    if now >= last {
        now - last
    } else {
        now
    }
}

/// rx + tx bytes of `iface` from sysfs (0 if unreadable).
pub fn counters(iface: &str) -> (u64, u64) {
    let read = |what: &str| {
        let p = Path::new("/sys/class/net")
            .join(iface)
            .join("statistics")
            .join(what);
        super::super::status::read_small(&p)
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    };
    (read("rx_bytes"), read("tx_bytes"))
}

pub fn load(data: &Path) -> Usage {
    let p = data.join(USAGE_FILE);
    match std::fs::read(&p) {
        Ok(b) if b.len() <= MAX_FILE => Usage::parse(&String::from_utf8_lossy(&b)),
        _ => Usage::default(),
    }
}

pub fn save(data: &Path, usage: &Usage) {
    let p: PathBuf = data.join(USAGE_FILE);
    if let Some(dir) = p.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = super::super::durable::write_durably(&p, usage.render().as_bytes()) {
        tracing::warn!("network: saving data use: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months() {
        assert_eq!(month_of(0), "1970-01");
        assert_eq!(month_of(951_782_400), "2000-02-29".get(..7).unwrap()); // leap day
        assert_eq!(month_of(1_795_820_670), "2026-11");
        assert_eq!(month_of(1_798_761_599), "2026-12"); // 2026-12-31 23:59:59
        assert_eq!(month_of(1_798_761_600), "2027-01");
        assert!(!month_of(u64::MAX).is_empty());
    }

    #[test]
    fn usage_adds_up_rolls_over_and_survives_garbage() {
        let mut u = Usage::parse("month 2026-11\nwan 100\nlte 7\n");
        u.add("2026-11", "lte", 3);
        u.add("2026-11", "new", 1);
        assert_eq!((u.get("wan"), u.get("lte"), u.get("new")), (100, 10, 1));
        assert_eq!(Usage::parse(&u.render()), u);
        u.add("2026-12", "lte", 5);
        assert_eq!((u.get("wan"), u.get("lte")), (0, 5));
        let junk = Usage::parse("\u{0}\u{ff}garbage\nwan notanumber\nlte 1 2\nmonth\n");
        assert_eq!(junk, Usage::default());
        assert_eq!(delta(10, 15), 5);
        assert_eq!(delta(10, 4), 4, "a reset counter counts from zero");
    }

    #[test]
    fn load_and_save_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()), Usage::default());
        let mut u = Usage::default();
        u.add("2026-11", "wan", 42);
        save(dir.path(), &u);
        assert_eq!(load(dir.path()), u);
        std::fs::write(dir.path().join(USAGE_FILE), vec![b'x'; MAX_FILE + 1]).unwrap();
        assert_eq!(load(dir.path()), Usage::default());
    }
}
