//! `outpost support`: everything an engineer asks for after a board
//! misbehaved, in one archive — status, versions, slots, config, services
//! and their logs, network, links, clock, metrics, the revocation list, the
//! system and kernel logs of this boot and of the previous one (what a
//! fallback left behind). Read-only requests, pipelined on one connection,
//! so it works the same directly, over a serial line and through the
//! broker. A request the device refuses (a `reader` may not read the
//! config) or cannot answer (no earlier boot saved) costs only its file:
//! it is listed in `errors.txt`, never the whole bundle.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::cli::Format;
use super::client::Client;
use crate::wire::{self, LogSource, Request, Response};

/// The most services whose logs are fetched (the device's own limit on
/// services is lower; this only bounds what a confused answer could cost).
const MAX_SERVICE_LOGS: usize = 64;

/// One file of the bundle.
pub struct Entry {
    pub name: String,
    pub data: Vec<u8>,
}

/// What was collected, and what could not be.
#[derive(Default)]
pub struct Bundle {
    pub entries: Vec<Entry>,
    /// `(file it would have been, why not)`.
    pub errors: Vec<(String, String)>,
}

/// What `outpost support` reports.
#[derive(Serialize)]
pub struct Summary {
    pub file: PathBuf,
    pub files: Vec<String>,
    pub errors: Vec<String>,
}

/// The whole-device requests and the file each answer goes to.
fn device_requests() -> Vec<(&'static str, Request<'static>)> {
    vec![
        (
            "version.json",
            Request::Version {
                protocol: wire::PROTOCOL_VERSION,
            },
        ),
        ("status.json", Request::Status),
        ("slots.json", Request::Slots),
        ("config.toml", Request::ConfigGet),
        ("services.json", Request::Services),
        ("network.json", Request::Network),
        ("links.json", Request::Links),
        ("time.json", Request::Time),
        ("metrics.json", Request::Metrics),
        ("revocations.json", Request::Revocations),
        (
            "logs.txt",
            Request::Logs {
                service: None,
                lines: u16::MAX,
                follow: false,
            },
        ),
        (
            "dmesg.txt",
            Request::Dmesg {
                max_bytes: u32::MAX,
            },
        ),
    ]
}

/// The previous boot's logs, whole (paged), and the files they go to.
const PREVIOUS_BOOT: [(&str, LogSource); 2] = [
    ("previous-boot/logs.txt", LogSource::System),
    ("previous-boot/dmesg.txt", LogSource::Kernel),
];

/// Most pages of one log fetched (a kept log is ≤ 512 KiB: ~35 pages).
const MAX_LOG_PAGES: u64 = 64;

/// A whole persisted log of an earlier boot: the first page gives its
/// length, the rest are asked for at once (pipelined), then cut to whole
/// lines. A device without `BootLogBytes` (older) answers with an error;
/// then its newest lines (`BootLogs`, one frame) are taken instead.
fn whole_boot_log(client: &mut Client, source: LogSource, boot: u8) -> Result<String> {
    let page = |offset| Request::BootLogBytes {
        source,
        boot,
        offset,
    };
    let first = match client.call(page(0)) {
        Ok(Response::LogBytes { total, bytes, .. }) => (total, bytes),
        Ok(other) => anyhow::bail!("unexpected answer {other:?}"),
        Err(paged) => {
            return match client.call(Request::BootLogs {
                source,
                boot,
                max_bytes: u32::MAX,
            }) {
                Ok(Response::BootLog(text)) => Ok(text),
                Ok(other) => anyhow::bail!("unexpected answer {other:?}"),
                Err(e) => Err(e.context(format!("(and paging it: {paged:#})"))),
            };
        }
    };
    let (total, mut bytes) = first;
    let step = bytes.len() as u64;
    if step > 0 && total > step {
        let pages = total.div_ceil(step).min(MAX_LOG_PAGES);
        let requests = (1..pages).map(|i| page(i * step)).collect();
        for answer in client.pipeline(requests)? {
            match answer? {
                Response::LogBytes {
                    offset, bytes: b, ..
                } if offset == bytes.len() as u64 => bytes.extend_from_slice(&b),
                other => anyhow::bail!("a page out of order: {other:?}"),
            }
        }
    }
    Ok(crate::wire::logtext::whole_lines(&bytes, false))
}

/// An answer as the file's bytes: logs and texts as text, the rest as JSON.
fn render(response: &Response) -> Result<Vec<u8>> {
    Ok(match response {
        Response::Logs(lines) => lines
            .iter()
            .map(|l| super::output::log_line(l) + "\n")
            .collect::<String>()
            .into_bytes(),
        Response::Dmesg(text) | Response::BootLog(text) | Response::Config(text) => {
            text.clone().into_bytes()
        }
        other => {
            let mut json = serde_json::to_vec_pretty(other)?;
            json.push(b'\n');
            json
        }
    })
}

impl Bundle {
    fn take(&mut self, name: String, answer: Result<Response>) {
        match answer.and_then(|r| render(&r)) {
            Ok(data) => self.entries.push(Entry { name, data }),
            Err(e) => self.errors.push((name, format!("{e:#}"))),
        }
    }
}

/// Ask the device for everything, on one connection.
pub fn collect(client: &mut Client) -> Result<Bundle> {
    let (names, requests): (Vec<_>, Vec<_>) = device_requests().into_iter().unzip();
    let answers = client.pipeline(requests)?;
    let mut bundle = Bundle::default();
    let mut services = Vec::new();
    for (name, answer) in names.into_iter().zip(answers) {
        if let Ok(Response::Services(list)) = &answer {
            services = list.iter().map(|s| s.name.clone()).collect();
        }
        bundle.take(name.to_owned(), answer);
    }
    for (name, source) in PREVIOUS_BOOT {
        let log = whole_boot_log(client, source, 1).map(Response::BootLog);
        bundle.take(name.to_owned(), log);
    }
    services.truncate(MAX_SERVICE_LOGS);
    // Service names come from the device: only plain ones become file names.
    services.retain(|s| {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            && !s.starts_with('.');
        if !ok {
            bundle.errors.push((
                format!("services/{s:?}.log"),
                "not a plain service name".into(),
            ));
        }
        ok
    });
    let requests = services
        .iter()
        .map(|s| Request::Logs {
            service: Some(s),
            lines: u16::MAX,
            follow: false,
        })
        .collect();
    let answers = client.pipeline(requests)?;
    for (service, answer) in services.iter().zip(answers) {
        bundle.take(format!("services/{service}.log"), answer);
    }
    Ok(bundle)
}

/// Write `bundle` as a gzipped tar of `node/…` files, plus `errors.txt` when
/// something could not be collected. Written beside `path`, then renamed.
pub fn write(bundle: &Bundle, node: &str, path: &Path) -> Result<()> {
    let mtime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let mut errors = String::new();
    for (name, why) in &bundle.errors {
        errors.push_str(&format!("{name}: {why}\n"));
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    let gz = flate2::write::GzEncoder::new(tmp, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let error_entry = (!errors.is_empty()).then_some(("errors.txt", errors.as_bytes()));
    let files = bundle
        .entries
        .iter()
        .map(|e| (e.name.as_str(), e.data.as_slice()))
        .chain(error_entry);
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(mtime);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, format!("{node}/{name}"), data)
            .with_context(|| format!("adding {name}"))?;
    }
    let mut tmp = tar.into_inner()?.finish()?;
    tmp.flush()?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// `support-NODE-YYYYmmddTHHMMSSZ.tar.gz`: one per run, in time order.
fn default_name(node: &str, now: time::OffsetDateTime) -> PathBuf {
    PathBuf::from(format!(
        "support-{node}-{}{:02}{:02}T{:02}{:02}{:02}Z.tar.gz",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    ))
}

/// `outpost support [FILE]`: collect, write, say what is in it.
pub fn run(client: &mut Client, node: &str, out: Option<PathBuf>, format: Format) -> Result<()> {
    let path = out.unwrap_or_else(|| default_name(node, time::OffsetDateTime::now_utc()));
    let bundle = collect(client)?;
    write(&bundle, node, &path)?;
    let mut files: Vec<String> = bundle.entries.iter().map(|e| e.name.clone()).collect();
    if !bundle.errors.is_empty() {
        files.push("errors.txt".into());
    }
    let summary = Summary {
        file: path,
        files,
        errors: bundle
            .errors
            .iter()
            .map(|(name, why)| format!("{name}: {why}"))
            .collect(),
    };
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    println!(
        "{node}: support bundle {} ({} files)",
        summary.file.display(),
        summary.files.len()
    );
    for e in &summary.errors {
        println!("  not collected: {e}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_sort_by_time() {
        let at = |secs| time::OffsetDateTime::from_unix_timestamp(secs).unwrap();
        let a = default_name("edge-1", at(1_796_659_800));
        let b = default_name("edge-1", at(1_796_659_801));
        assert_eq!(a, PathBuf::from("support-edge-1-20261207T161000Z.tar.gz"));
        assert!(a < b);
    }
}
