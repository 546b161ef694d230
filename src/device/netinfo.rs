//! `network`: links from /sys/class/net and IPv4 routes from /proc/net/route.
//! Plain files, so the same code serves board and host mode.

use std::net::Ipv4Addr;
use std::path::Path;

use super::status::read_small;

/// Links and routes reported at most.
const MAX_ENTRIES: usize = 64;

/// "eth0 up 52:54:00:12:34:56 mtu 1500" for each link.
pub fn links() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .take(MAX_ENTRIES)
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let attr = |a: &str| {
                read_small(&Path::new("/sys/class/net").join(&name).join(a))
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
            };
            format!(
                "{name} {} {} mtu {}",
                attr("operstate"),
                attr("address"),
                attr("mtu")
            )
        })
        .collect()
}

/// Routes from `/proc/net/route`.
pub fn routes() -> Vec<String> {
    parse_routes(&read_small(Path::new("/proc/net/route")).unwrap_or_default())
}

/// `/proc/net/route` → "default via 10.0.2.2 dev eth0", "10.0.2.0/24 dev eth0".
/// Addresses there are little-endian hex.
pub fn parse_routes(text: &str) -> Vec<String> {
    let hex = |w: &str| {
        u32::from_str_radix(w, 16)
            .ok()
            .map(|v| Ipv4Addr::from(v.swap_bytes()))
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (iface, dest, gw, mask) = (
                f.first()?,
                hex(f.get(1)?)?,
                hex(f.get(2)?)?,
                hex(f.get(7)?)?,
            );
            let metric = f.get(6).and_then(|m| m.parse::<u32>().ok()).unwrap_or(0);
            let metric = if metric == 0 {
                String::new()
            } else {
                format!(" metric {metric}")
            };
            let prefix = u32::from(mask).leading_ones();
            let target = if prefix == 0 {
                "default".to_owned()
            } else {
                format!("{dest}/{prefix}")
            };
            Some(if gw.is_unspecified() {
                format!("{target} dev {iface}{metric}")
            } else {
                format!("{target} via {gw} dev {iface}{metric}")
            })
        })
        .take(MAX_ENTRIES)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_and_garbage_is_skipped() {
        let text =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                    eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                    eth1\t00000000\t0202000A\t0003\t0\t0\t10020\t00000000\t0\t0\t0\n\
                    junk line\n";
        assert_eq!(
            parse_routes(text),
            vec![
                "default via 10.0.2.2 dev eth0",
                "10.0.2.0/24 dev eth0",
                "default via 10.0.2.2 dev eth1 metric 10020"
            ]
        );
        assert!(parse_routes("").is_empty());
    }
}
