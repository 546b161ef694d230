//! One function per request: a decoded message becomes an action on the device.

use smol::channel::Sender;

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Release;
use crate::device::config_apply::{self, After, Apply, Board, ConfigManager};
use crate::device::log::LogRing;
use crate::device::revocation::{RevocationError, Revocations};
use crate::device::upload::Uploads;
use crate::device::{metrics, status};
use crate::wire::{
    self, ApplyMode, NetworkInfo, Request, Response, Role, Status, VersionInfo, WireError,
};

/// Most log lines one `logs` answer carries (the frame cap bounds bytes too).
const MAX_LOG_LINES: usize = 500;
/// Most dmesg bytes one answer carries, leaving headroom under the frame cap.
const MAX_DMESG_BYTES: usize = wire::MAX_RESPONSE_FRAME - 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerRequest {
    Reboot,
    PowerOff,
}

/// What differs between a real board and host mode.
pub trait Platform: Send + Sync {
    /// Interface addresses, "eth0 10.0.2.15/24".
    fn addresses(&self) -> Vec<String>;
    /// The tail of the kernel log, at most `max_bytes`.
    fn dmesg(&self, max_bytes: usize) -> Result<String, String>;
    /// Links, addresses and routes.
    fn network(&self) -> NetworkInfo;
    /// Per-interface byte and packet counters.
    fn net_counters(&self) -> Vec<wire::NetCounters>;
    /// The configured links (none in host mode).
    fn links(&self) -> Vec<wire::LinkInfo> {
        Vec::new()
    }
}

/// Everything a handler may read or trigger.
pub struct ApiContext {
    /// The machine config in force and how new ones are applied.
    pub config: Arc<ConfigManager>,
    pub slot: String,
    pub release: Release,
    pub boot_id: String,
    pub log: LogRing,
    pub power: Sender<PowerRequest>,
    pub platform: Box<dyn Platform>,
    /// The clock (restored, SNTP-synced); TLS certificate checks read it too.
    pub time: Arc<crate::device::clock::TimeKeeper>,
    /// Where DATA is (machine config, staging for uploads).
    pub data_dir: PathBuf,
    /// Uploads in progress, shared by every connection.
    pub uploads: Uploads,
    /// The site's revocation list: clients and operators on it are refused.
    pub revocations: Arc<Revocations>,
    /// The A/B slot manager, once boot has opened the boot state (unset in
    /// host mode without slots, or when BOOT is unreadable).
    pub ab: std::sync::OnceLock<Arc<crate::device::upgrade::Ab>>,
    /// The service supervisor, once services have been started (after the API).
    pub services: std::sync::OnceLock<Arc<crate::device::services::Supervisor>>,
    /// The status LED (unset on a board without one).
    pub led: std::sync::OnceLock<Arc<crate::device::led::Led>>,
}

/// `handle`, with a panic in a handler caught and logged and answered as an
/// internal error: one bad request never takes PID 1 down (STYLE 9). Every
/// way in (TCP, call home) goes through here.
pub fn handle_guarded(
    ctx: &ApiContext,
    role: Role,
    request: &Request,
) -> Result<Response, WireError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle(ctx, role, request)))
        .unwrap_or_else(|_| {
            tracing::error!("api: handler for {} panicked", request.name());
            Err(WireError::Device("internal error".into()))
        })
}

/// Whether `request`'s handler may read, write or hash megabytes on DATA or
/// a slot: re-hashing a resumed upload's part (up to 512 MiB), a delta plan
/// hashing the slot's chunks, an fsync every few chunks, a config write.
/// On an SD card that is seconds, and on the executor it would hold up
/// every connection, call home and the watchdog's pet (its default 15 s
/// without one resets the board). Such requests run on a blocking thread.
pub fn runs_blocking(request: &Request) -> bool {
    matches!(
        request,
        Request::UploadBegin { .. }
            | Request::UploadChunk { .. }
            | Request::Upgrade { .. }
            | Request::DeltaPlan { .. }
            | Request::DeltaInstall { .. }
            | Request::ConfigApply { .. }
            | Request::ConfigApplyOpts { .. }
            | Request::BootLogs { .. }
            | Request::BootLogBytes { .. }
            | Request::InstallRevocations { .. }
    )
}

/// `handle_guarded` on a blocking thread, for a request `runs_blocking`
/// names. It takes the encoded frame (the decoded request borrows from it)
/// and decodes it again there.
pub async fn handle_blocking(
    ctx: Arc<ApiContext>,
    role: Role,
    frame: Vec<u8>,
) -> Result<Response, WireError> {
    smol::unblock(move || match wire::RequestFrame::decode(&frame) {
        Ok(req) => handle_guarded(&ctx, role, &req.body),
        Err(_) => Err(WireError::DecodeFailed),
    })
    .await
}

/// Check the caller's role, then act. Streams (`Logs { follow }`) and
/// `Cancel` are the connection's business (see `server`); here they get
/// their first answer only.
pub fn handle(ctx: &ApiContext, role: Role, request: &Request) -> Result<Response, WireError> {
    if role < request.required_role() {
        tracing::warn!(
            "api: {} refused to a {} client",
            request.name(),
            role.name()
        );
        return Err(WireError::PermissionDenied);
    }
    match request {
        Request::Version { protocol } => version(ctx, *protocol),
        Request::Status => Ok(Response::Status(status(ctx))),
        Request::Logs {
            service: Some(name),
            lines,
            ..
        } => service_log_tail(ctx, name, *lines).map(Response::Logs),
        Request::Services => Ok(Response::Services(
            ctx.services.get().map(|s| s.list()).unwrap_or_default(),
        )),
        Request::Service { name, action } => {
            let sup = ctx
                .services
                .get()
                .ok_or_else(|| crate::device::services::unknown(name))?;
            sup.command(name, *action)?;
            Ok(Response::Accepted)
        }
        Request::Logs {
            service: None,
            lines,
            ..
        } => Ok(Response::Logs(log_tail(ctx, *lines))),
        Request::Dmesg { max_bytes } => {
            let max = usize::try_from(*max_bytes)
                .unwrap_or(usize::MAX)
                .min(MAX_DMESG_BYTES);
            ctx.platform
                .dmesg(max)
                .map(Response::Dmesg)
                .map_err(WireError::Device)
        }
        Request::Reboot => power(ctx, PowerRequest::Reboot),
        Request::Poweroff => power(ctx, PowerRequest::PowerOff),
        Request::Ping => Ok(Response::Pong),
        Request::Cancel { .. } => Err(WireError::Invalid(
            "no such stream on this connection".into(),
        )),
        Request::ConfigGet => config_get(ctx),
        Request::ConfigApply {
            config,
            mode,
            dry_run,
        } => config_apply(ctx, config, *mode, *dry_run, false, 0),
        Request::ConfigApplyOpts {
            config,
            mode,
            dry_run,
            force,
            try_secs,
        } => config_apply(ctx, config, *mode, *dry_run, *force, *try_secs),
        Request::ConfigConfirm => ctx
            .config
            .confirm()
            .map(|()| Response::Accepted)
            .map_err(WireError::from),
        Request::Time => Ok(Response::Time(ctx.time.info())),
        Request::Metrics => Ok(Response::Metrics(metrics::collect(
            &ctx.data_dir,
            ctx.platform.as_ref(),
        ))),
        Request::Network => Ok(Response::Network(ctx.platform.network())),
        Request::UploadBegin { sha256, size } => ctx
            .uploads
            .begin(sha256, *size)
            .map(Response::Upload)
            .map_err(WireError::from),
        Request::UploadChunk {
            handle,
            offset,
            data,
        } => ctx
            .uploads
            .chunk(*handle, *offset, data)
            .map(Response::Upload)
            .map_err(WireError::from),
        // Upgrades and rollback arrive with the A/B slot manager.
        Request::Slots => Ok(Response::Slots(ab(ctx)?.info())),
        Request::Upgrade {
            sha256,
            stage,
            force,
        } => upgrade(ctx, sha256, *stage, *force),
        Request::DeltaPlan { manifest, force } => delta_plan(ctx, manifest, *force),
        Request::DeltaInstall {
            manifest,
            payload,
            stage,
            force,
        } => delta_install(ctx, manifest, payload, *stage, *force),
        Request::Rollback => {
            ab(ctx)?.rollback()?;
            power(ctx, PowerRequest::Reboot)
        }
        Request::BootLogs {
            source,
            boot,
            max_bytes,
        } => boot_logs(ctx, *source, *boot, *max_bytes),
        Request::BootLogBytes {
            source,
            boot,
            offset,
        } => boot_log_bytes(ctx, *source, *boot, *offset),
        Request::Identify { seconds } => identify(ctx, *seconds),
        Request::Links => Ok(Response::Links(ctx.platform.links())),
        Request::Revocations => Ok(Response::Revocations(
            ctx.revocations.current().map(|l| l.info()),
        )),
        Request::InstallRevocations { crl } => match ctx.revocations.install(crl) {
            Ok(list) => Ok(Response::Revocations(Some(list.info()))),
            Err(e @ RevocationError::Io(_)) => Err(WireError::Device(e.to_string())),
            Err(e) => Err(WireError::Invalid(e.to_string())),
        },
    }
}

/// Blink the status LED's identify pattern for `seconds` (0 stops it).
fn identify(ctx: &ApiContext, seconds: u16) -> Result<Response, WireError> {
    use crate::device::led::MAX_IDENTIFY_SECS;
    let led = ctx.led.get().ok_or_else(|| {
        WireError::Invalid(
            "this board has no status LED (its board definition sets no [led], so the \
             kernel command line has no outpost.led=)"
                .into(),
        )
    })?;
    if seconds > MAX_IDENTIFY_SECS {
        return Err(WireError::Invalid(format!(
            "identify for {seconds} s: at most {MAX_IDENTIFY_SECS} s"
        )));
    }
    tracing::info!("identify: status LED for {seconds} s");
    led.identify(seconds);
    Ok(Response::Accepted)
}

/// A persisted log of this or an earlier boot, cut to fit one frame.
fn boot_logs(
    ctx: &ApiContext,
    source: wire::LogSource,
    boot: u8,
    max_bytes: u32,
) -> Result<Response, WireError> {
    use crate::device::persistlog::{self, PersistError};
    let max = usize::try_from(max_bytes)
        .unwrap_or(usize::MAX)
        .min(MAX_DMESG_BYTES);
    let logs = ctx.data_dir.join(persistlog::LOG_DIR);
    persistlog::read_boot(&logs, boot, source, max)
        .map(Response::BootLog)
        .map_err(|e| match e {
            PersistError::OutOfRange { .. } => WireError::Invalid(e.to_string()),
            _ => WireError::Device(e.to_string()),
        })
}

/// One page of an earlier boot's persisted log, raw (the client cuts lines).
fn boot_log_bytes(
    ctx: &ApiContext,
    source: wire::LogSource,
    boot: u8,
    offset: u64,
) -> Result<Response, WireError> {
    use crate::device::persistlog::{self, PersistError};
    let logs = ctx.data_dir.join(persistlog::LOG_DIR);
    persistlog::read_boot_bytes(&logs, boot, source, offset, MAX_DMESG_BYTES)
        .map(|(total, bytes)| Response::LogBytes {
            total,
            offset,
            bytes,
        })
        .map_err(|e| match e {
            PersistError::OutOfRange { .. } | PersistError::StillWritten => {
                WireError::Invalid(e.to_string())
            }
            _ => WireError::Device(e.to_string()),
        })
}

fn ab(ctx: &ApiContext) -> Result<&Arc<crate::device::upgrade::Ab>, WireError> {
    ctx.ab.get().ok_or_else(crate::device::upgrade::unavailable)
}

/// Install an uploaded bundle: checked now, written on a thread, then (unless
/// staged) a reboot into the new slot on trial.
fn upgrade(
    ctx: &ApiContext,
    sha256: &[u8; 32],
    stage: bool,
    force: bool,
) -> Result<Response, WireError> {
    let ab = ab(ctx)?;
    let bundle = ctx.uploads.artifact(sha256).ok_or_else(|| {
        WireError::Invalid("no uploaded bundle with that SHA-256: upload it first".into())
    })?;
    let after = if stage {
        crate::device::upgrade::After::Stay
    } else {
        crate::device::upgrade::After::Reboot
    };
    let power = ctx.power.clone();
    ab.upgrade(
        crate::device::upgrade::Source::Bundle(bundle),
        force,
        after,
        move |after| {
            if after == crate::device::upgrade::After::Reboot {
                let _ = power.try_send(PowerRequest::Reboot);
            }
        },
    )?;
    Ok(Response::Accepted)
}

/// The signed header of a delta upgrade, uploaded first.
fn manifest(ctx: &ApiContext, sha256: &[u8; 32]) -> Result<std::path::PathBuf, WireError> {
    ctx.uploads.artifact(sha256).ok_or_else(|| {
        WireError::Invalid("no uploaded bundle header with that SHA-256: upload it first".into())
    })
}

/// `DeltaPlan`: the chunks of the new image this device holds.
fn delta_plan(ctx: &ApiContext, sha256: &[u8; 32], force: bool) -> Result<Response, WireError> {
    let have = ab(ctx)?.plan(&manifest(ctx, sha256)?, sha256, force)?;
    Ok(Response::DeltaPlan { have })
}

/// `DeltaInstall`: as `upgrade`, from local chunks and an uploaded delta payload.
fn delta_install(
    ctx: &ApiContext,
    manifest_sha: &[u8; 32],
    payload: &[u8; 32],
    stage: bool,
    force: bool,
) -> Result<Response, WireError> {
    let ab = ab(ctx)?;
    let what = crate::device::upgrade::Source::Delta {
        manifest: manifest(ctx, manifest_sha)?,
        manifest_sha: *manifest_sha,
        payload: ctx.uploads.artifact(payload).ok_or_else(|| {
            WireError::Invalid("no uploaded delta payload with that SHA-256".into())
        })?,
    };
    let after = if stage {
        crate::device::upgrade::After::Stay
    } else {
        crate::device::upgrade::After::Reboot
    };
    let power = ctx.power.clone();
    ab.upgrade(what, force, after, move |after| {
        if after == crate::device::upgrade::After::Reboot {
            let _ = power.try_send(PowerRequest::Reboot);
        }
    })?;
    Ok(Response::Accepted)
}

/// The newest `lines` system log lines that fit in one frame.
/// The ring `logs --follow` reads: the system log, or one service's output.
pub fn log_ring(ctx: &ApiContext, service: Option<&str>) -> Result<LogRing, WireError> {
    match service {
        None => Ok(ctx.log.clone()),
        Some(name) => ctx
            .services
            .get()
            .ok_or_else(|| crate::device::services::unknown(name))
            .and_then(|s| s.log(name)),
    }
}

pub fn log_tail(ctx: &ApiContext, lines: u16) -> Vec<wire::LogLine> {
    fit_to_frame(ctx.log.tail(usize::from(lines).min(MAX_LOG_LINES)))
}

/// The newest `lines` lines of one service's output that fit in one frame;
/// a first line says how many older lines the bound dropped.
pub fn service_log_tail(
    ctx: &ApiContext,
    name: &str,
    lines: u16,
) -> Result<Vec<wire::LogLine>, WireError> {
    let ring = ctx
        .services
        .get()
        .ok_or_else(|| crate::device::services::unknown(name))?
        .log(name)?;
    let mut tail = fit_to_frame(ring.tail(usize::from(lines).min(MAX_LOG_LINES)));
    let dropped = ring.dropped();
    if dropped > 0 && usize::from(lines) > tail.len() {
        tail.insert(
            0,
            wire::LogLine {
                at_ms: tail.first().map(|l| l.at_ms).unwrap_or(0),
                level: wire::LogLevel::Warn,
                text: format!("[{dropped} older lines dropped: log bound]"),
            },
        );
    }
    Ok(tail)
}

/// The config in force: the file on DATA as written (comments kept), or
/// during a try the tried config.
fn config_get(ctx: &ApiContext) -> Result<Response, WireError> {
    if ctx.config.try_pending() {
        return Ok(Response::Config(ctx.config.current().to_toml()));
    }
    let text = status::read_small(&ctx.data_dir.join(config_apply::MACHINE_PATH))
        .ok_or_else(|| WireError::Device("machine config is not readable".into()))?;
    Ok(Response::Config(text))
}

/// Validate a new config, check it keeps the board reachable, apply it in
/// the requested mode; `reboot` mode reboots once the answer is out.
fn config_apply(
    ctx: &ApiContext,
    text: &str,
    mode: ApplyMode,
    dry_run: bool,
    force: bool,
    try_secs: u16,
) -> Result<Response, WireError> {
    let req = Apply {
        text,
        mode,
        dry_run,
        force,
        try_secs,
    };
    let network = ctx.platform.network();
    let board = Board {
        addresses: &network.addresses,
        links: &network.links,
    };
    let (plan, after) = ctx.config.apply(&req, &board, std::time::Instant::now())?;
    if after == After::Reboot {
        power(ctx, PowerRequest::Reboot)?;
    }
    Ok(Response::ConfigPlan(plan))
}

/// Drop the oldest lines until the answer fits in one response frame.
fn fit_to_frame(mut lines: Vec<wire::LogLine>) -> Vec<wire::LogLine> {
    // Per line: text + its length varint + timestamp varint + level tag.
    let cost = |l: &wire::LogLine| l.text.len() + 16;
    let mut total: usize = lines.iter().map(cost).sum();
    let mut drop = 0;
    while total > MAX_DMESG_BYTES && drop < lines.len() {
        total -= cost(&lines[drop]);
        drop += 1;
    }
    lines.drain(..drop);
    lines
}

fn version(ctx: &ApiContext, protocol: u16) -> Result<Response, WireError> {
    if protocol < wire::MIN_PROTOCOL_VERSION {
        return Err(WireError::UnsupportedVersion(protocol));
    }
    Ok(Response::Version(VersionInfo {
        protocol: protocol.min(wire::PROTOCOL_VERSION),
        min_protocol: wire::MIN_PROTOCOL_VERSION,
        init_version: env!("CARGO_PKG_VERSION").to_owned(),
        os_version: ctx.release.version.clone(),
        board: ctx.release.board.clone(),
    }))
}

fn status(ctx: &ApiContext) -> Status {
    let proc = |name: &str| status::read_small(std::path::Path::new(name)).unwrap_or_default();
    let (mem_total_kib, mem_available_kib) = status::parse_meminfo(&proc("/proc/meminfo"));
    Status {
        hostname: ctx.config.hostname(),
        slot: ctx.slot.clone(),
        os_version: ctx.release.version.clone(),
        boot_id: ctx.boot_id.clone(),
        uptime_ms: status::parse_uptime_ms(&proc("/proc/uptime")).unwrap_or(0),
        mem_total_kib,
        mem_available_kib,
        load_x100: status::parse_loadavg(&proc("/proc/loadavg")),
        addresses: ctx.platform.addresses(),
        init_rss_kib: status::parse_rss_kib(&proc("/proc/self/status")),
    }
}

fn power(ctx: &ApiContext, what: PowerRequest) -> Result<Response, WireError> {
    if ctx.ab.get().is_some_and(|ab| ab.installing()) {
        return Err(WireError::Invalid(
            "an upgrade is being written to the inactive slot; retry when `slots` shows it done"
                .into(),
        ));
    }
    ctx.power
        .try_send(what)
        .map(|()| Response::Accepted)
        .map_err(|_| WireError::Device("a shutdown is already under way".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MachineConfig;
    use std::path::Path;

    struct FakePlatform;
    impl Platform for FakePlatform {
        fn addresses(&self) -> Vec<String> {
            vec!["eth0 192.0.2.1/24".into()]
        }
        fn dmesg(&self, max_bytes: usize) -> Result<String, String> {
            Ok("x".repeat(100_000).chars().take(max_bytes).collect())
        }
        fn network(&self) -> NetworkInfo {
            NetworkInfo {
                links: vec![],
                addresses: self.addresses(),
                routes: vec![],
            }
        }
        fn net_counters(&self) -> Vec<wire::NetCounters> {
            vec![]
        }
    }

    fn ctx() -> (ApiContext, smol::channel::Receiver<PowerRequest>) {
        let (tx, rx) = smol::channel::bounded(1);
        let nowhere = std::env::temp_dir().join("outpost-handlers-test-nonexistent");
        let time = Arc::new(crate::device::clock::TimeKeeper::boot(
            Arc::new(crate::device::clock::FakeClock::at(
                std::time::Duration::from_secs(1_700_000_000),
            )),
            None,
            std::time::Duration::ZERO,
        ));
        let ctx = ApiContext {
            config: Arc::new(ConfigManager::new(
                Path::new("/nonexistent"),
                MachineConfig::new("edge-1"),
                Box::new(crate::device::config_apply::NoLive),
            )),
            slot: "A".into(),
            release: Release {
                board: "qemu-virt".into(),
                version: "1.2.3".into(),
                build_time: 0,
            },
            boot_id: "id".into(),
            log: LogRing::new(),
            power: tx,
            platform: Box::new(FakePlatform),
            time: time.clone(),
            data_dir: nowhere.clone(),
            uploads: Uploads::new(&nowhere),
            revocations: Arc::new(Revocations::load(&nowhere, time)),
            ab: std::sync::OnceLock::new(),
            services: std::sync::OnceLock::new(),
            led: std::sync::OnceLock::new(),
        };
        (ctx, rx)
    }

    #[test]
    fn identify_needs_an_led_an_operator_and_a_sane_duration() {
        let (ctx, _rx) = ctx();
        let req = Request::Identify { seconds: 30 };
        match handle(&ctx, Role::Operator, &req) {
            Err(WireError::Invalid(why)) => assert!(why.contains("no status LED"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            handle(&ctx, Role::Reader, &req),
            Err(WireError::PermissionDenied)
        );
        let led = crate::device::led::start(
            crate::device::led::SimPin,
            crate::device::log::uptime_ms,
            |_| {},
        )
        .unwrap();
        let _ = ctx.led.set(led.clone());
        assert_eq!(handle(&ctx, Role::Operator, &req), Ok(Response::Accepted));
        assert_eq!(led.pattern(), crate::device::led::LedPattern::Identify);
        assert!(matches!(
            handle(&ctx, Role::Admin, &Request::Identify { seconds: 3601 }),
            Err(WireError::Invalid(_))
        ));
        assert_eq!(
            handle(&ctx, Role::Operator, &Request::Identify { seconds: 0 }),
            Ok(Response::Accepted)
        );
        assert_eq!(led.pattern(), crate::device::led::LedPattern::Booting);
    }

    #[test]
    fn old_protocol_is_refused_new_is_capped() {
        let (ctx, _rx) = ctx();
        assert_eq!(
            handle(&ctx, Role::Admin, &Request::Version { protocol: 0 }),
            Err(WireError::UnsupportedVersion(0))
        );
        match handle(&ctx, Role::Admin, &Request::Version { protocol: 999 }) {
            Ok(Response::Version(v)) => assert_eq!(v.protocol, wire::PROTOCOL_VERSION),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn second_power_request_is_refused_while_one_is_pending() {
        let (ctx, rx) = ctx();
        assert_eq!(
            handle(&ctx, Role::Admin, &Request::Reboot),
            Ok(Response::Accepted)
        );
        assert!(matches!(
            handle(&ctx, Role::Admin, &Request::Poweroff),
            Err(WireError::Device(_))
        ));
        assert_eq!(rx.try_recv(), Ok(PowerRequest::Reboot));
    }

    #[test]
    fn dmesg_is_capped_under_the_frame_limit() {
        let (ctx, _rx) = ctx();
        let resp = handle(
            &ctx,
            Role::Admin,
            &Request::Dmesg {
                max_bytes: u32::MAX,
            },
        )
        .unwrap();
        let frame = wire::ResponseFrame {
            id: u32::MAX,
            body: Ok(resp),
        }
        .encode();
        assert!(frame.len() <= wire::MAX_RESPONSE_FRAME, "{}", frame.len());
    }

    #[test]
    fn logs_are_capped_under_the_frame_limit() {
        let (ctx, _rx) = ctx();
        for i in 0..1000 {
            ctx.log.push(wire::LogLine {
                at_ms: i,
                level: wire::LogLevel::Info,
                text: "y".repeat(500),
            });
        }
        let resp = handle(
            &ctx,
            Role::Admin,
            &Request::Logs {
                service: None,
                lines: u16::MAX,
                follow: false,
            },
        )
        .unwrap();
        let Response::Logs(lines) = &resp else {
            panic!("{resp:?}")
        };
        assert!(lines.len() > 50 && lines.last().map(|l| l.at_ms) == Some(999));
        let frame = wire::ResponseFrame {
            id: u32::MAX,
            body: Ok(resp),
        }
        .encode();
        assert!(frame.len() <= wire::MAX_RESPONSE_FRAME, "{}", frame.len());
    }

    #[test]
    fn roles_below_the_requirement_are_refused() {
        let (ctx, rx) = ctx();
        assert_eq!(
            handle(&ctx, Role::Reader, &Request::Reboot),
            Err(WireError::PermissionDenied)
        );
        assert!(
            rx.try_recv().is_err(),
            "a refused reboot must not be queued"
        );
        assert!(handle(&ctx, Role::Reader, &Request::Status).is_ok());
        assert_eq!(
            handle(&ctx, Role::Operator, &Request::Reboot),
            Ok(Response::Accepted)
        );
    }

    #[test]
    fn uploads_need_an_admin_and_land_in_staging() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut ctx, _rx) = ctx();
        ctx.uploads = Uploads::new(tmp.path());
        let data = b"artifact bytes";
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, data).as_ref());
        let begin = Request::UploadBegin {
            sha256,
            size: data.len() as u64,
        };
        assert_eq!(
            handle(&ctx, Role::Operator, &begin),
            Err(WireError::PermissionDenied)
        );
        let Ok(Response::Upload(st)) = handle(&ctx, Role::Admin, &begin) else {
            panic!("begin refused")
        };
        let chunk = Request::UploadChunk {
            handle: st.handle,
            offset: 0,
            data,
        };
        match handle(&ctx, Role::Admin, &chunk) {
            Ok(Response::Upload(done)) => assert!(done.complete),
            other => panic!("{other:?}"),
        }
        assert!(ctx.uploads.artifact(&sha256).is_some());
        assert!(matches!(
            handle(&ctx, Role::Admin, &Request::UploadBegin { sha256, size: 0 }),
            Err(WireError::Invalid(_))
        ));
    }

    #[test]
    fn status_reports_identity() {
        let (ctx, _rx) = ctx();
        match handle(&ctx, Role::Admin, &Request::Status) {
            Ok(Response::Status(s)) => {
                assert_eq!(
                    (s.hostname.as_str(), s.slot.as_str(), s.os_version.as_str()),
                    ("edge-1", "A", "1.2.3")
                );
                assert_eq!(s.addresses, vec!["eth0 192.0.2.1/24".to_string()]);
            }
            other => panic!("{other:?}"),
        }
    }
}
