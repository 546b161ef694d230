//! Printing responses as text for people or JSON for scripts.

use anyhow::Result;

use super::cli::Format;
use crate::wire::Response;

pub fn print(node: &str, response: &Response, format: Format) -> Result<()> {
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(response)?);
        return Ok(());
    }
    match response {
        Response::Version(v) => {
            println!(
                "CLI      {} (protocol {})",
                env!("CARGO_PKG_VERSION"),
                crate::wire::PROTOCOL_VERSION
            );
            println!(
                "DEVICE   init {} / OS {} on {} (protocol {}, min {})",
                v.init_version, v.os_version, v.board, v.protocol, v.min_protocol
            );
        }
        Response::Status(s) => {
            let rows = [
                ("NODE", node.to_owned()),
                ("HOSTNAME", s.hostname.clone()),
                ("SLOT", s.slot.clone()),
                ("OS", s.os_version.clone()),
                ("BOOT ID", s.boot_id.clone()),
                (
                    "UPTIME",
                    format!("{}.{:03} s", s.uptime_ms / 1000, s.uptime_ms % 1000),
                ),
                (
                    "MEMORY",
                    format!(
                        "{} MiB available of {} MiB",
                        s.mem_available_kib / 1024,
                        s.mem_total_kib / 1024
                    ),
                ),
                (
                    "LOAD",
                    s.load_x100
                        .iter()
                        .map(|l| format!("{}.{:02}", l / 100, l % 100))
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
                ("ADDRESSES", s.addresses.join(", ")),
                ("INIT RSS", format!("{} KiB", s.init_rss_kib)),
            ];
            for (k, v) in rows {
                println!("{k:<10} {v}");
            }
        }
        Response::Logs(lines) => {
            for l in lines {
                println!(
                    "[{:>5}.{:03}] {:<5} {}",
                    l.at_ms / 1000,
                    l.at_ms % 1000,
                    l.level,
                    l.text
                );
            }
        }
        Response::Dmesg(text) => print!("{text}"),
        Response::Accepted => println!("{node}: accepted"),
    }
    Ok(())
}
