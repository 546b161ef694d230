//! `metrics`: CPU, memory, disk and network counters from /proc and statvfs.
//! Parsing is pure and tested on captured text.

use std::path::Path;

use super::api::Platform;
use super::status::{self, read_small};
use crate::wire::{Metrics, NetCounters};

/// USER_HZ: /proc/stat counts in 1/100 s on every Linux we run on.
const TICKS_PER_SEC: u64 = 100;
/// Interfaces reported at most (a board has a handful).
const MAX_IFACES: usize = 32;

pub fn collect(data_dir: &Path, platform: &dyn Platform) -> Metrics {
    let proc = |name: &str| read_small(Path::new(name)).unwrap_or_default();
    let (cpu_ms, cpus) = parse_stat(&proc("/proc/stat"));
    let (mem_total_kib, mem_available_kib) = status::parse_meminfo(&proc("/proc/meminfo"));
    let (disk_total_kib, disk_free_kib) = disk(data_dir);
    Metrics {
        uptime_ms: status::parse_uptime_ms(&proc("/proc/uptime")).unwrap_or(0),
        cpu_ms,
        cpus,
        mem_total_kib,
        mem_available_kib,
        load_x100: status::parse_loadavg(&proc("/proc/loadavg")),
        disk_total_kib,
        disk_free_kib,
        net: platform.net_counters(),
    }
}

fn disk(path: &Path) -> (u64, u64) {
    match rustix::fs::statvfs(path) {
        Ok(st) => {
            let kib = |blocks: u64| blocks.saturating_mul(st.f_frsize) / 1024;
            (kib(st.f_blocks), kib(st.f_bavail))
        }
        Err(_) => (0, 0),
    }
}

/// `/proc/stat` → (user, nice, system, idle, iowait) in ms, and the CPU count.
pub fn parse_stat(text: &str) -> ([u64; 5], u32) {
    let mut out = [0u64; 5];
    let mut cpus = 0u32;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("cpu ") {
            for (slot, word) in out.iter_mut().zip(rest.split_whitespace()) {
                *slot = word.parse::<u64>().unwrap_or(0).saturating_mul(1000) / TICKS_PER_SEC;
            }
        } else if line.starts_with("cpu") {
            cpus = cpus.saturating_add(1);
        }
    }
    (out, cpus)
}

/// `/proc/net/dev` → counters per interface (loopback left out).
pub fn parse_net_dev(text: &str) -> Vec<NetCounters> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let name = name.trim();
            if name == "lo" || name.is_empty() {
                return None;
            }
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|w| w.parse().unwrap_or(0))
                .collect();
            Some(NetCounters {
                iface: name.to_owned(),
                rx_bytes: *f.first()?,
                rx_packets: *f.get(1)?,
                tx_bytes: *f.get(8)?,
                tx_packets: *f.get(9)?,
            })
        })
        .take(MAX_IFACES)
        .collect()
}

/// Counters from /proc/net/dev (board and host mode alike).
pub fn net_counters() -> Vec<NetCounters> {
    parse_net_dev(&read_small(Path::new("/proc/net/dev")).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_gives_zeroes_not_panics() {
        assert_eq!(parse_stat("cpu x y\n"), ([0; 5], 0));
        assert!(parse_net_dev("a\nb\nno colon here\neth0: 1 2\n").is_empty());
    }

    #[test]
    fn real_text_parses() {
        let stat = "cpu  100 2 30 4000 5 0 0 0 0 0\ncpu0 100 2 30 4000 5 0 0 0 0 0\nintr 1\n";
        assert_eq!(parse_stat(stat), ([1000, 20, 300, 40000, 50], 1));
        let dev = "Inter-|   Receive\n face |bytes packets errs drop fifo frame compressed multicast|bytes packets\n    lo: 10 1 0 0 0 0 0 0 10 1 0 0 0 0 0 0\n  eth0: 1500 12 0 0 0 0 0 0 900 8 0 0 0 0 0 0\n";
        assert_eq!(
            parse_net_dev(dev),
            vec![NetCounters {
                iface: "eth0".into(),
                rx_bytes: 1500,
                rx_packets: 12,
                tx_bytes: 900,
                tx_packets: 8
            }]
        );
    }
}
