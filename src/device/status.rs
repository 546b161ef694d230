//! What `status` reports, read from /proc. Parsing is pure so it is tested on
//! captured text; only `read_proc` touches the file system.

use std::path::Path;

/// /proc files we read are small; anything larger is not what we expect.
const MAX_PROC_FILE: u64 = 64 * 1024;

/// Read a /proc (or any small) file, bounded.
pub fn read_small(path: &Path) -> Option<String> {
    use std::io::Read;
    let file = std::fs::File::open(path).ok()?;
    let mut text = String::new();
    file.take(MAX_PROC_FILE).read_to_string(&mut text).ok()?;
    Some(text)
}

/// `/proc/uptime` → milliseconds.
pub fn parse_uptime_ms(text: &str) -> Option<u64> {
    let secs = text.split_whitespace().next()?;
    let (whole, frac) = secs.split_once('.').unwrap_or((secs, "0"));
    let whole: u64 = whole.parse().ok()?;
    let frac = format!("{frac:0<3}");
    let millis: u64 = frac.get(..3)?.parse().ok()?;
    Some(whole * 1000 + millis)
}

/// `/proc/meminfo` → (MemTotal, MemAvailable) in KiB.
pub fn parse_meminfo(text: &str) -> (u64, u64) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (field("MemTotal"), field("MemAvailable"))
}

/// `/proc/loadavg` → the three averages times 100.
pub fn parse_loadavg(text: &str) -> [u32; 3] {
    let mut out = [0u32; 3];
    for (slot, word) in out.iter_mut().zip(text.split_whitespace()) {
        let (whole, frac) = word.split_once('.').unwrap_or((word, "0"));
        let whole: u32 = whole.parse().unwrap_or(0);
        let frac: u32 = format!("{frac:0<2}")
            .get(..2)
            .and_then(|f| f.parse().ok())
            .unwrap_or(0);
        *slot = whole.saturating_mul(100).saturating_add(frac);
    }
    out
}

/// `/proc/self/status` → VmRSS in KiB.
pub fn parse_rss_kib(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_proc_text_gives_defaults() {
        assert_eq!(parse_uptime_ms(""), None);
        assert_eq!(parse_uptime_ms("abc"), None);
        assert_eq!(parse_meminfo("garbage"), (0, 0));
        assert_eq!(parse_loadavg("x y"), [0, 0, 0]);
        assert_eq!(parse_rss_kib("VmRSS: lots"), 0);
    }

    #[test]
    fn real_proc_text_parses() {
        assert_eq!(parse_uptime_ms("12.34 40.00\n"), Some(12_340));
        assert_eq!(parse_uptime_ms("7 1"), Some(7_000));
        let meminfo = "MemTotal:         229700 kB\nMemFree:          200000 kB\nMemAvailable:     190512 kB\n";
        assert_eq!(parse_meminfo(meminfo), (229_700, 190_512));
        assert_eq!(parse_loadavg("0.08 1.5 12.25 1/70 99\n"), [8, 150, 1225]);
        assert_eq!(parse_rss_kib("Name:\tinit\nVmRSS:\t    2412 kB\n"), 2412);
    }
}
