//! Device commands: one CLI subcommand per API request, same names.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::{Subcommand, ValueEnum};

use super::cli::{Format, FormatArg};
use super::client::Client;
use super::{output, upload};
use crate::wire::{self, ApplyMode, LogSource, Request, Response, ServiceAction};

#[derive(Subcommand)]
pub enum DeviceCommand {
    /// Protocol and software versions of the CLI and the device.
    Version(FormatArg),
    /// Device status: identity, slot, uptime, memory, addresses.
    Status(FormatArg),
    /// The system log, or one service's log.
    Logs {
        /// A service's log instead of the system log.
        service: Option<String>,
        /// Number of lines from the end.
        #[arg(long, default_value_t = 100)]
        lines: u16,
        /// Keep printing new lines (Ctrl-C to stop).
        #[arg(short = 'f', long)]
        follow: bool,
        /// The system log of an earlier boot, as saved on DATA: -1 is the
        /// previous boot (0 is this boot's saved copy).
        #[arg(long, allow_negative_numbers = true, value_name = "-N")]
        boot: Option<i8>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// The kernel log.
    Dmesg {
        /// At most this many bytes from the end.
        #[arg(long, default_value_t = 16384)]
        bytes: u32,
        /// The kernel log of an earlier boot, as saved on DATA: -1 is the
        /// previous boot.
        #[arg(long, allow_negative_numbers = true, value_name = "-N")]
        boot: Option<i8>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Reboot the device.
    Reboot(FormatArg),
    /// Power the device off.
    Poweroff(FormatArg),
    /// Round trips to the device (pipelined on one connection).
    Ping {
        #[arg(long, default_value_t = 1)]
        count: u16,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Supervised services: state, pid, restarts, last exit, uptime (the
    /// default), or start/stop/restart one (`outpost service stop NAME`).
    #[command(visible_alias = "service", args_conflicts_with_subcommands = true)]
    Services {
        #[command(subcommand)]
        cmd: Option<ServicesCommand>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// The machine config.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The device clock and its sync state.
    Time(FormatArg),
    /// CPU, memory, disk and network counters.
    Metrics(FormatArg),
    /// Links, addresses and routes.
    Network(FormatArg),
    /// Install an uploaded bundle into the inactive slot.
    Upgrade {
        /// A bundle from `outpost bundle build` (uploaded, resumably, first).
        bundle: PathBuf,
        /// Switch at the next reboot instead of now.
        #[arg(long)]
        stage: bool,
        /// Allow a downgrade, or an upgrade from a version below the bundle's minimum.
        #[arg(long)]
        force: bool,
        /// Send the whole bundle even when the device could take a delta.
        #[arg(long)]
        full: bool,
        /// Seconds to wait for the device to come back committed on the new slot.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        #[command(flatten)]
        format: FormatArg,
    },
    /// The A/B slots: booted, primary, attempts left, versions, last event.
    Slots(FormatArg),
    /// Switch back to the other good slot.
    Rollback(FormatArg),
    /// Blink the status LED in its identify pattern, so a technician on site
    /// finds this board (`--seconds 0` stops it early).
    Identify {
        /// How long, at most 3600.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u16).range(0..=3600))]
        seconds: u16,
        #[command(flatten)]
        format: FormatArg,
    },
    /// The site revocation list the device holds; with --install, give it a
    /// newer one (SITE/crl.pem, from `outpost gen revoke`).
    Revocations {
        #[arg(long, value_name = "CRL_PEM")]
        install: Option<PathBuf>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Everything needed to look into a problem, in one archive: status,
    /// slots, config, services and their logs, network, clock, metrics, and
    /// the system and kernel logs of this boot and the previous one. Only
    /// reads; what the device cannot give is listed in errors.txt.
    Support {
        /// Where to write it (default: support-NODE-<UTC time>.tar.gz here).
        file: Option<PathBuf>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Upload a file (e.g. an OS bundle) to the device's staging area. A cut
    /// connection is resumed where it stopped; running it again after a
    /// failure continues too.
    Upload {
        file: PathBuf,
        #[command(flatten)]
        format: FormatArg,
    },
}

#[derive(Subcommand)]
pub enum ServicesCommand {
    /// List services: state, pid, restarts, last exit, uptime.
    List(FormatArg),
    /// Start a stopped or failed service (resets its back-off).
    Start {
        name: String,
        #[command(flatten)]
        format: FormatArg,
    },
    /// SIGTERM, then SIGKILL after its grace period; stays stopped.
    Stop {
        name: String,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Stop (as `stop`) and start again.
    Restart {
        name: String,
        #[command(flatten)]
        format: FormatArg,
    },
}

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Print the machine config in force.
    Get(FormatArg),
    /// Apply a machine config: `no-reboot` (live fields only: hostname,
    /// watchdog), `reboot`, `staged` (at the next boot) or `try` (live,
    /// reverted unless `config confirm` comes within --timeout).
    Apply {
        file: PathBuf,
        #[arg(long, value_enum, default_value = "no-reboot")]
        mode: Mode,
        /// Only show what would change.
        #[arg(long)]
        dry_run: bool,
        /// Apply even a config that would cut the board off the network it
        /// is managed over (another address, interface or API port).
        #[arg(long)]
        force: bool,
        /// `try`: seconds to wait for `config confirm` before reverting
        /// (device default 60, at most 3600).
        #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u16).range(1..=3600))]
        timeout: Option<u16>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Keep a config applied with `--mode try`.
    Confirm(FormatArg),
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Mode {
    NoReboot,
    Reboot,
    Staged,
    Try,
}

impl From<Mode> for ApplyMode {
    fn from(m: Mode) -> Self {
        match m {
            Mode::NoReboot => ApplyMode::NoReboot,
            Mode::Reboot => ApplyMode::Reboot,
            Mode::Staged => ApplyMode::Staged,
            Mode::Try => ApplyMode::Try,
        }
    }
}

/// Largest config file the CLI sends (the device refuses larger ones anyway).
const MAX_CONFIG_FILE: u64 = crate::config::MAX_CONFIG_BYTES as u64;

/// Run one device command. `connect` opens a connection to the device: once
/// for most commands, again after each failure for an upload.
pub fn run(
    cmd: DeviceCommand,
    connect: &mut dyn FnMut() -> Result<Client>,
    node: &str,
    top: Format,
) -> Result<()> {
    if let DeviceCommand::Upload { file, format } = &cmd {
        return upload_file(connect, node, file, format.output.unwrap_or(top));
    }
    if let DeviceCommand::Upgrade {
        bundle,
        stage,
        force,
        full,
        timeout,
        format,
    } = &cmd
    {
        return upgrade(
            connect,
            node,
            bundle,
            Install {
                stage: *stage,
                force: *force,
                full: *full,
            },
            *timeout,
            format.output.unwrap_or(top),
        );
    }
    let mut client = connect()?;
    let client = &mut client;
    let pick = |f: &FormatArg| f.output.unwrap_or(top);

    let (response, format) = match cmd {
        DeviceCommand::Version(f) => (
            client.call(Request::Version {
                protocol: wire::PROTOCOL_VERSION,
            })?,
            pick(&f),
        ),
        DeviceCommand::Status(f) => return status(client, node, pick(&f)),
        DeviceCommand::Support { file, format } => {
            return super::support::run(client, node, file, pick(&format))
        }
        DeviceCommand::Logs {
            service,
            lines,
            follow,
            boot: Some(boot),
            format,
        } => {
            if service.is_some() || follow {
                bail!("--boot reads the saved system log: no SERVICE, no --follow");
            }
            let request = Request::BootLogs {
                source: LogSource::System,
                boot: boot.unsigned_abs(),
                // Whole answer (the device cuts it to one frame), then --lines here.
                max_bytes: u32::MAX,
            };
            match client.call(request)? {
                Response::BootLog(text) => {
                    (Response::BootLog(last_lines(&text, lines)), pick(&format))
                }
                other => (other, pick(&format)),
            }
        }
        DeviceCommand::Logs {
            service,
            lines,
            follow,
            boot: None,
            format,
        } => {
            let format = pick(&format);
            let request = Request::Logs {
                service: service.as_deref(),
                lines,
                follow,
            };
            if follow {
                return client.stream(request, |r| output::print(node, &r, format).is_ok());
            }
            (client.call(request)?, format)
        }
        DeviceCommand::Dmesg {
            bytes,
            boot: None,
            format,
        } => (
            client.call(Request::Dmesg { max_bytes: bytes })?,
            pick(&format),
        ),
        DeviceCommand::Dmesg {
            bytes,
            boot: Some(boot),
            format,
        } => (
            client.call(Request::BootLogs {
                source: LogSource::Kernel,
                boot: boot.unsigned_abs(),
                max_bytes: bytes,
            })?,
            pick(&format),
        ),
        DeviceCommand::Reboot(f) => (client.call(Request::Reboot)?, pick(&f)),
        DeviceCommand::Poweroff(f) => (client.call(Request::Poweroff)?, pick(&f)),
        DeviceCommand::Ping { count, format } => return ping(client, node, count, pick(&format)),
        DeviceCommand::Services { cmd, format } => {
            let (request, f) = match &cmd {
                None => (Request::Services, &format),
                Some(ServicesCommand::List(f)) => (Request::Services, f),
                Some(ServicesCommand::Start { name, format }) => (
                    Request::Service {
                        name,
                        action: ServiceAction::Start,
                    },
                    format,
                ),
                Some(ServicesCommand::Stop { name, format }) => (
                    Request::Service {
                        name,
                        action: ServiceAction::Stop,
                    },
                    format,
                ),
                Some(ServicesCommand::Restart { name, format }) => (
                    Request::Service {
                        name,
                        action: ServiceAction::Restart,
                    },
                    format,
                ),
            };
            (client.call(request)?, pick(f))
        }
        DeviceCommand::Config(ConfigCommand::Get(f)) => {
            (client.call(Request::ConfigGet)?, pick(&f))
        }
        DeviceCommand::Config(ConfigCommand::Apply {
            file,
            mode,
            dry_run,
            force,
            timeout,
            format,
        }) => {
            let text = read_config(&file)?;
            // The plain request when no option needs the newer one.
            let request = if force || timeout.is_some() {
                Request::ConfigApplyOpts {
                    config: &text,
                    mode: mode.into(),
                    dry_run,
                    force,
                    try_secs: timeout.unwrap_or(0),
                }
            } else {
                Request::ConfigApply {
                    config: &text,
                    mode: mode.into(),
                    dry_run,
                }
            };
            let answer = client.call(request)?;
            let format = pick(&format);
            output::print(node, &answer, format)?;
            if let (Response::ConfigPlan(p), Format::Text) = (&answer, format) {
                match mode {
                    Mode::Try if p.applied => println!(
                        "{node}: reverts in {} s unless `outpost config confirm`",
                        timeout.unwrap_or(60)
                    ),
                    Mode::Staged if p.applied => println!("{node}: takes effect at the next boot"),
                    Mode::Reboot if p.applied => println!("{node}: rebooting"),
                    _ => {}
                }
            }
            return Ok(());
        }
        DeviceCommand::Config(ConfigCommand::Confirm(f)) => {
            (client.call(Request::ConfigConfirm)?, pick(&f))
        }
        DeviceCommand::Time(f) => (client.call(Request::Time)?, pick(&f)),
        DeviceCommand::Metrics(f) => (client.call(Request::Metrics)?, pick(&f)),
        DeviceCommand::Network(f) => return network(client, node, pick(&f)),
        DeviceCommand::Slots(f) => (client.call(Request::Slots)?, pick(&f)),
        DeviceCommand::Rollback(f) => (client.call(Request::Rollback)?, pick(&f)),
        DeviceCommand::Identify { seconds, format } => (
            client
                .call(Request::Identify { seconds })
                .with_context(|| format!("{node}: identify"))?,
            pick(&format),
        ),
        DeviceCommand::Revocations {
            install: None,
            format,
        } => (client.call(Request::Revocations)?, pick(&format)),
        DeviceCommand::Revocations {
            install: Some(path),
            format,
        } => {
            let crl = super::revoke::read_crl(&path)?;
            let answer = client
                .call(Request::InstallRevocations { crl: &crl })
                .with_context(|| format!("{node}: installing {}", path.display()))?;
            (answer, pick(&format))
        }
        // Handled above, before connecting: an upload makes its own connections.
        DeviceCommand::Upload { .. } | DeviceCommand::Upgrade { .. } => return Ok(()),
    };
    output::print(node, &response, format)
}

/// `network`: links, addresses, routes, and the configured links with
/// their health, modem and data use (a device without `Links` shows the
/// first part only). JSON: `{"Network": …, "Links": […]}`.
fn network(client: &mut Client, node: &str, format: Format) -> Result<()> {
    let answers = client.pipeline(vec![Request::Network, Request::Links])?;
    let mut answers = answers.into_iter();
    let net = answers.next().context("no answer to network")??;
    let links = match answers.next() {
        Some(Ok(Response::Links(l))) => l,
        _ => Vec::new(),
    };
    if format == Format::Json {
        let mut v = serde_json::to_value(&net)?;
        if let Some(obj) = v.as_object_mut() {
            obj.insert("Links".into(), serde_json::to_value(&links)?);
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    output::print(node, &net, format)?;
    output::print(node, &Response::Links(links), format)
}

/// The last `n` lines of `text`.
fn last_lines(text: &str, n: u16) -> String {
    let starts: Vec<usize> = std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .filter(|&i| i < text.len())
        .collect();
    let from = match starts.len().checked_sub(usize::from(n)) {
        Some(i) => starts.get(i).copied().unwrap_or(text.len()),
        None => 0,
    };
    text.get(from..).unwrap_or_default().to_owned()
}

/// `status` shows the A/B slots and DATA's disk usage too: the three requests
/// go out at once (one round trip); a device without slots answers that one
/// with an error, left out.
fn status(client: &mut Client, node: &str, format: Format) -> Result<()> {
    let mut answers = client
        .pipeline(vec![Request::Status, Request::Slots, Request::Metrics])?
        .into_iter();
    let status = answers
        .next()
        .ok_or_else(|| anyhow::anyhow!("no answer to status"))??;
    let slots = answers.next().and_then(Result::ok);
    let disk = match answers.next().and_then(Result::ok) {
        Some(Response::Metrics(m)) => Some((m.disk_total_kib, m.disk_free_kib)),
        _ => None,
    };
    if format == Format::Json {
        let mut v = serde_json::to_value(&status)?;
        if let Some(obj) = v.as_object_mut() {
            if let Some(Response::Slots(info)) = &slots {
                obj.insert("Slots".into(), serde_json::to_value(info)?);
            }
            if let Some((total, free)) = disk {
                obj.insert(
                    "Data".into(),
                    serde_json::json!({ "total_kib": total, "free_kib": free, "used_kib": total.saturating_sub(free) }),
                );
            }
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    output::print(node, &status, format)?;
    if let Some((total, free)) = disk {
        println!(
            "{:<10} {} MiB used of {} MiB ({} MiB free)",
            "DATA",
            total.saturating_sub(free) / 1024,
            total / 1024,
            free / 1024
        );
    }
    if let Some(slots) = slots {
        output::print(node, &slots, format)?;
    }
    Ok(())
}

fn ping(client: &mut Client, node: &str, count: u16, format: Format) -> Result<()> {
    let start = std::time::Instant::now();
    let answers = client.pipeline((0..count.max(1)).map(|_| Request::Ping).collect())?;
    let elapsed = start.elapsed();
    let ok = answers
        .iter()
        .filter(|a| matches!(a, Ok(Response::Pong)))
        .count();
    if format == Format::Json {
        println!(
            "{}",
            serde_json::json!({ "node": node, "sent": count.max(1), "pong": ok, "elapsed_ms": elapsed.as_secs_f64() * 1000.0 })
        );
    } else {
        println!(
            "{node}: {ok}/{} pongs in {:.1} ms",
            count.max(1),
            elapsed.as_secs_f64() * 1000.0
        );
    }
    if ok != answers.len() {
        bail!("{} pings were not answered", answers.len() - ok);
    }
    Ok(())
}

fn upload_file(
    connect: &mut dyn FnMut() -> Result<Client>,
    node: &str,
    file: &Path,
    format: Format,
) -> Result<()> {
    let report = upload_with_bar(connect, file, format)
        .with_context(|| format!("uploading {} to {node}", file.display()))?;
    print_upload(node, file, &report, format)
}

/// `upload::upload` with a progress bar (none with `-o json`).
fn upload_with_bar(
    connect: &mut dyn FnMut() -> Result<Client>,
    file: &Path,
    format: Format,
) -> Result<upload::UploadReport> {
    let bar = progress_bar(format);
    let mut progress = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    let report = upload::upload(connect, file, &mut progress)?;
    bar.finish_and_clear();
    Ok(report)
}

/// How `upgrade` installs.
pub(crate) struct Install {
    pub stage: bool,
    pub force: bool,
    /// Never a delta.
    pub full: bool,
}

/// Upload a bundle (resumable) — only the chunks the device lacks when it
/// takes deltas — ask the device to install it, and unless staged wait
/// until the device is back, running the new slot marked good.
fn upgrade(
    connect: &mut dyn FnMut() -> Result<Client>,
    node: &str,
    bundle: &Path,
    how: Install,
    timeout: u64,
    format: Format,
) -> Result<()> {
    let slots = install(connect, node, bundle, how, timeout, format)?;
    output::print(node, &Response::Slots(slots), format)
}

/// `upgrade` without the final print: the slots once the device is back committed (or, staged, once
/// the install finished). Progress goes to stderr only for `Format::Text`.
pub(crate) fn install(
    connect: &mut dyn FnMut() -> Result<Client>,
    node: &str,
    bundle: &Path,
    how: Install,
    timeout: u64,
    format: Format,
) -> Result<crate::wire::SlotsInfo> {
    let stage = how.stage;
    let before = match connect()?.call(Request::Slots)? {
        Response::Slots(s) => s,
        other => bail!("unexpected answer to slots: {other:?}"),
    };
    send_install(connect, node, bundle, &how, format)?;
    if stage {
        // Wait for the install to finish: the other slot then carries the
        // new version, on trial, for the next reboot.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout);
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
            if let Ok(Response::Slots(s)) = connect().and_then(|mut c| c.call(Request::Slots)) {
                if s.last_event != before.last_event {
                    if s.last_event
                        .as_deref()
                        .is_some_and(|e| e.contains("failed"))
                    {
                        bail!(
                            "{node}: upgrade failed: {}",
                            s.last_event.clone().unwrap_or_default()
                        );
                    }
                    return Ok(s);
                }
            }
            if std::time::Instant::now() > deadline {
                bail!("{node}: the install did not finish within {timeout} s");
            }
        }
    }
    // The device installs, switches and reboots; wait for it to come back on
    // the other slot, healthy (marked good by its own health checks).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout);
    loop {
        std::thread::sleep(std::time::Duration::from_secs(2));
        let now = connect().and_then(|mut c| c.call(Request::Slots));
        if let Ok(Response::Slots(s)) = &now {
            let committed = s.booted != before.booted
                && s.slots
                    .iter()
                    .any(|x| x.name == s.booted && x.state == "active");
            if committed {
                return Ok(s.clone());
            }
            let new_event = s.last_event != before.last_event;
            if s.booted == before.booted
                && new_event
                && s.last_event
                    .as_deref()
                    .is_some_and(|e| e.contains("failed") || e.contains("fell back"))
            {
                bail!(
                    "{node}: upgrade failed: {}",
                    s.last_event.clone().unwrap_or_default()
                );
            }
        }
        if std::time::Instant::now() > deadline {
            bail!("{node} did not come back committed on the new slot within {timeout} s (last answer: {now:?})");
        }
    }
}

/// The sending half of `install`: upload the bundle (a delta when the
/// device takes one) and ask for the install. (`rollout` runs it, then
/// waits on its own held broker session.)
pub(crate) fn send_install(
    connect: &mut dyn FnMut() -> Result<Client>,
    node: &str,
    bundle: &Path,
    how: &Install,
    format: Format,
) -> Result<()> {
    let &Install { stage, force, full } = how;
    let delta = if full {
        None
    } else {
        delta_upload(connect, node, bundle, force, format)?
    };
    if let Some(d) = delta {
        connect()?.call(Request::DeltaInstall {
            manifest: d.manifest,
            payload: d.payload,
            stage,
            force,
        })?;
        if format == Format::Text {
            eprintln!(
                "{node}: delta uploaded ({} bytes sent); assembling the inactive slot",
                d.sent
            );
        }
    } else {
        let report = upload_with_bar(connect, bundle, format)
            .with_context(|| format!("uploading {} to {node}", bundle.display()))?;
        let sha256 = super::bundle::file_sha256(bundle)?;
        connect()?.call(Request::Upgrade {
            sha256,
            stage,
            force,
        })?;
        if format == Format::Text {
            eprintln!(
                "{node}: bundle uploaded ({} bytes sent); installing into the inactive slot",
                report.payload_bytes
            );
        }
    }
    Ok(())
}

/// A delta uploaded: what `DeltaInstall` names, and the bytes it took.
struct DeltaSent {
    manifest: [u8; 32],
    payload: [u8; 32],
    sent: u64,
}

/// The delta half of `upgrade`: upload the bundle's signed header, learn
/// which chunks the device holds, upload a payload of the others. `None`
/// when the device takes no deltas (an older build) or a delta would not
/// be smaller.
fn delta_upload(
    connect: &mut dyn FnMut() -> Result<Client>,
    node: &str,
    bundle: &Path,
    force: bool,
    format: Format,
) -> Result<Option<DeltaSent>> {
    let b = super::bundle::BundleFile::open(bundle)?;
    let manifest = b.manifest_sha256();
    let ask = |connect: &mut dyn FnMut() -> Result<Client>| -> Result<_> {
        let mut c = connect()?;
        let id = c.send(Request::DeltaPlan { manifest, force })?;
        loop {
            let r = c.receive()?;
            if r.id == id || r.id == 0 {
                return Ok(r.body);
            }
        }
    };
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let mut sent = 0u64;
    let have = match ask(connect)? {
        Err(crate::wire::WireError::DecodeFailed) => {
            if format == Format::Text {
                eprintln!("{node}: takes no delta upgrades; sending the whole bundle");
            }
            return Ok(None);
        }
        Ok(Response::DeltaPlan { have }) => have,
        Ok(other) => bail!("unexpected answer to a delta plan: {other:?}"),
        // Not there yet (or refused: then it is refused again, with the reason).
        Err(_) => {
            let path = tmp.path().join("manifest");
            std::fs::write(&path, &b.signed)?;
            sent += upload::upload(connect, &path, &mut |_, _| {})
                .with_context(|| format!("uploading the bundle header to {node}"))?
                .payload_bytes;
            match ask(connect)? {
                Ok(Response::DeltaPlan { have }) => have,
                Ok(other) => bail!("unexpected answer to a delta plan: {other:?}"),
                Err(e) => bail!("{node} refused the upgrade: {e}"),
            }
        }
    };
    let plan = super::delta::transfer(&b, &have);
    if format == Format::Text {
        eprintln!("{node}: {}", plan.summary());
    }
    if plan.delta_bytes >= plan.full_bytes {
        return Ok(None);
    }
    let path = tmp.path().join("delta");
    super::delta::write_payload(&b, &have, &path)?;
    let report = upload_with_bar(connect, &path, format)
        .with_context(|| format!("uploading the delta to {node}"))?;
    Ok(Some(DeltaSent {
        manifest,
        payload: report.sha256,
        sent: sent + report.payload_bytes,
    }))
}

/// A progress bar on stderr when it is a terminal; hidden otherwise (logs, pipes).
fn progress_bar(format: Format) -> indicatif::ProgressBar {
    use std::io::IsTerminal as _;
    if format != Format::Text || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}

fn print_upload(
    node: &str,
    file: &Path,
    report: &upload::UploadReport,
    format: Format,
) -> Result<()> {
    let secs = report.elapsed.as_secs_f64();
    if format == Format::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "node": node,
                "file": file.display().to_string(),
                "sha256": report.sha256_hex(),
                "size": report.size,
                "already_there": report.already_there(),
                "payload_bytes": report.payload_bytes,
                "resent_bytes": report.resent_bytes,
                "reconnects": report.reconnects,
                "resumed": report.resumed,
                "resume_offsets": report.resume_offsets,
                "errors": report.errors,
                "elapsed_ms": secs * 1000.0,
            }))?
        );
        return Ok(());
    }
    let what = format!(
        "{node}: {} ({} bytes, sha256 {})",
        file.display(),
        report.size,
        report.sha256_hex()
    );
    if report.already_there() {
        println!("{what} was already on the device");
        return Ok(());
    }
    println!(
        "{what} uploaded in {secs:.1} s ({:.0} kbit/s); {} reconnects ({} resumed), {} bytes re-sent",
        report.size as f64 * 8.0 / secs.max(1e-3) / 1000.0,
        report.reconnects,
        report.resumed,
        report.resent_bytes
    );
    Ok(())
}

fn read_config(path: &std::path::Path) -> Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_CONFIG_FILE + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("reading {}", path.display()))?;
    if text.len() as u64 > MAX_CONFIG_FILE {
        bail!("{} is larger than {MAX_CONFIG_FILE} bytes", path.display());
    }
    Ok(text)
}

/// 64 hex digits → 32 bytes.
pub fn parse_sha256(hex: &str) -> Result<[u8; 32]> {
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("`{hex}` is not a SHA-256 (64 hex digits)");
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).unwrap_or("00"), 16)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::last_lines;

    #[test]
    fn last_lines_keeps_the_newest() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(last_lines("a\nb\nc\n", 9), "a\nb\nc\n");
        assert_eq!(last_lines("a\nb\nc\n", 0), "");
        assert_eq!(last_lines("", 3), "");
    }
}
