//! Printing responses as text for people or JSON for scripts.

use anyhow::Result;

use super::cli::Format;
use crate::wire::Response;

/// One log line as `outpost logs` prints it: `[ secs.ms] LEVEL text`.
pub fn log_line(l: &crate::wire::LogLine) -> String {
    format!(
        "[{:>5}.{:03}] {:<5} {}",
        l.at_ms / 1000,
        l.at_ms % 1000,
        l.level,
        l.text
    )
}

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
                println!("{}", log_line(l));
            }
        }
        Response::Dmesg(text) | Response::BootLog(text) => print!("{text}"),
        Response::Accepted => println!("{node}: accepted"),
        Response::LogBytes {
            total,
            offset,
            bytes,
        } => println!(
            "{node}: {} bytes of the log from {offset} (of {total})",
            bytes.len()
        ),
        Response::Revocations(None) => println!("{node}: no revocation list"),
        Response::Revocations(Some(r)) => println!(
            "{node}: revocation list issued {} ({} certificate{} revoked)",
            r.issued,
            r.revoked,
            if r.revoked == 1 { "" } else { "s" }
        ),
        Response::DeltaPlan { have } => {
            let n: u32 = have.iter().map(|b| b.count_ones()).sum();
            println!("{node}: holds {n} chunks of the new image");
        }
        Response::Pong => println!("{node}: pong"),
        Response::End => {}
        Response::Services(list) => {
            println!(
                "{:<16} {:<10} {:>7} {:>8} {:<12} UPTIME",
                "SERVICE", "STATE", "PID", "RESTARTS", "LAST EXIT"
            );
            for s in list {
                let pid = s.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
                let exit = s.last_exit.clone().unwrap_or_else(|| "-".into());
                println!(
                    "{:<16} {:<10} {pid:>7} {:>8} {exit:<12} {} s",
                    s.name,
                    s.state,
                    s.restarts,
                    s.uptime_ms / 1000
                );
            }
        }
        Response::Config(text) => print!("{text}"),
        Response::ConfigPlan(plan) => {
            let verb = if plan.applied {
                "applied"
            } else {
                "would change"
            };
            if plan.changes.is_empty() {
                println!("{node}: no changes");
            } else {
                println!(
                    "{node}: {verb}{}:",
                    if plan.needs_reboot {
                        " (needs a reboot)"
                    } else {
                        ""
                    }
                );
                for c in &plan.changes {
                    println!("  {c}");
                }
            }
        }
        Response::Time(t) => {
            let secs = t.unix_ms / 1000;
            println!(
                "{node}: {} ({secs}.{:03} unix), source {}, {}",
                utc(secs),
                t.unix_ms % 1000,
                t.source,
                if t.synced { "synced" } else { "not synced" }
            );
        }
        Response::Metrics(m) => {
            let cpu: u64 = m.cpu_ms.iter().sum();
            let busy = cpu.saturating_sub(m.cpu_ms[3] + m.cpu_ms[4]);
            println!(
                "UPTIME    {}.{:03} s",
                m.uptime_ms / 1000,
                m.uptime_ms % 1000
            );
            println!(
                "CPU       {} cpus, busy {} ms of {} ms since boot",
                m.cpus, busy, cpu
            );
            println!(
                "MEMORY    {} MiB available of {} MiB",
                m.mem_available_kib / 1024,
                m.mem_total_kib / 1024
            );
            println!(
                "DISK      {} MiB free of {} MiB (DATA)",
                m.disk_free_kib / 1024,
                m.disk_total_kib / 1024
            );
            for n in &m.net {
                println!(
                    "NET       {} rx {} B / {} pkts, tx {} B / {} pkts",
                    n.iface, n.rx_bytes, n.rx_packets, n.tx_bytes, n.tx_packets
                );
            }
        }
        Response::Network(n) => {
            for (title, rows) in [
                ("LINKS", &n.links),
                ("ADDRESSES", &n.addresses),
                ("ROUTES", &n.routes),
            ] {
                println!("{title}");
                for r in rows.iter() {
                    println!("  {r}");
                }
            }
        }
        Response::Links(links) => {
            if !links.is_empty() {
                println!("CONFIGURED LINKS");
            }
            for l in links {
                let state = if l.healthy { "healthy" } else { "DOWN" };
                let iface = if l.iface.is_empty() { "-" } else { &l.iface };
                println!(
                    "  {} ({iface}) {state}, metric {}, carrier {}, probe misses {}, down {} times",
                    l.name,
                    l.metric,
                    if l.carrier { "on" } else { "off" },
                    l.probe_misses,
                    l.downs
                );
                if !l.address.is_empty() {
                    println!("    address {}  dns {}", l.address, l.dns.join(" "));
                }
                if !l.note.is_empty() {
                    println!("    {}", l.note);
                }
                let budget = l
                    .budget_bytes
                    .map(|b| format!(" of {} MB budget", b / 1_000_000))
                    .unwrap_or_default();
                println!(
                    "    data: {} B in / {} B out since boot, {} B this month{budget}",
                    l.rx_bytes, l.tx_bytes, l.month_bytes
                );
                if let Some(m) = &l.modem {
                    let dbm = |v: Option<i16>| v.map_or("-".to_owned(), |d| format!("{d} dBm"));
                    println!(
                        "    modem: {}; SIM {}, {} on {}, signal {}, RSRP {}",
                        m.state,
                        m.sim,
                        m.registration,
                        m.operator,
                        dbm(m.signal_dbm),
                        dbm(m.rsrp_dbm)
                    );
                }
                for e in &l.events {
                    println!("    {e}");
                }
            }
        }
        Response::Slots(info) => {
            println!("BOOTED    {}   PRIMARY {}", info.booted, info.primary);
            for slot in &info.slots {
                let version = slot.version.as_deref().unwrap_or("-");
                println!(
                    "SLOT {}    {:<7} attempts left {}   version {version}",
                    slot.name, slot.state, slot.attempts_left
                );
            }
            if let Some(event) = &info.last_event {
                println!("LAST      {event}");
            }
        }
        Response::Upload(u) => {
            println!(
                "{node}: upload {} of {} bytes{}",
                u.offset,
                u.size,
                if u.complete { ", complete" } else { "" }
            );
        }
    }
    Ok(())
}

/// Unix seconds as "2024-05-01 12:00:00 UTC".
fn utc(secs: u64) -> String {
    match i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
    {
        Some(t) => format!(
            "{}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        None => "?".into(),
    }
}

/// A fan-out's answers: one line per board, then who was late, refused or
/// missing. JSON: `{answers: {device: {ms, late, ok, ...}}, missing, refused, elapsed_ms}`.
pub fn fleet(report: &super::fleet::Report, format: Format) -> Result<()> {
    if format == Format::Json {
        let mut answers = serde_json::Map::new();
        for (device, a) in &report.answers {
            answers.insert(
                device.clone(),
                serde_json::json!({
                    "ms": a.after.as_secs_f64() * 1000.0,
                    "late": a.late,
                    "answer": match &a.body {
                        Ok(r) => serde_json::to_value(r)?,
                        Err(e) => serde_json::json!({ "error": e.to_string() }),
                    },
                }),
            );
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "answers": answers,
                "missing": report.missing,
                "refused": report.refused,
                "elapsed_ms": report.elapsed.as_secs_f64() * 1000.0,
            }))?
        );
        return Ok(());
    }
    println!("{:<24} {:>8}  ANSWER", "DEVICE", "MS");
    for (device, a) in &report.answers {
        let what = match &a.body {
            Ok(Response::Status(s)) => format!(
                "slot {} os {} up {} s",
                s.slot,
                s.os_version,
                s.uptime_ms / 1000
            ),
            Ok(Response::Revocations(Some(r))) => {
                format!("revocation list issued {}, {} revoked", r.issued, r.revoked)
            }
            Ok(Response::Revocations(None)) => "no revocation list".to_owned(),
            Ok(other) => format!("{other:?}"),
            Err(e) => format!("error: {e}"),
        };
        println!(
            "{device:<24} {:>8.1}  {what}{}",
            a.after.as_secs_f64() * 1000.0,
            if a.late { " (late)" } else { "" }
        );
    }
    for (device, why) in &report.refused {
        println!("{device:<24} refused: {why}");
    }
    let late = report.answers.values().filter(|a| a.late).count();
    println!(
        "{} answered ({late} late) in {:.1} ms{}",
        report.answers.len(),
        report.elapsed.as_secs_f64() * 1000.0,
        if report.missing.is_empty() {
            String::new()
        } else {
            format!("; no answer from {}", report.missing.join(", "))
        }
    );
    Ok(())
}

/// `fleet list`: each board's retained presence. JSON: the `Roster` as is.
pub fn presence(roster: &super::presence::Roster, format: Format) -> Result<()> {
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(roster)?);
        return Ok(());
    }
    println!(
        "{:<24} {:<8} {:<24} {:<12} SLOT",
        "DEVICE", "STATE", "SINCE", "VERSION"
    );
    for (device, seen) in &roster.seen {
        println!(
            "{device:<24} {:<8} {:<24} {:<12} {}",
            if seen.online { "online" } else { "offline" },
            utc(seen.since),
            seen.version,
            seen.slot
        );
    }
    for (device, why) in &roster.unverified {
        println!("{device:<24} unverified: {why}");
    }
    for device in &roster.never_seen {
        println!("{device:<24} never seen on this broker");
    }
    let online = roster.seen.values().filter(|s| s.online).count();
    println!("{online} online, {} offline", roster.seen.len() - online);
    Ok(())
}
