//! Boot on a real board (PID 1): the duties in order, each failure logged and
//! reported, never fatal. The executor runs forever; only a power request
//! that the kernel obeys ends it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use smol::Executor;

use super::api::{ApiContext, Platform, PowerRequest};
use super::config_apply::{ConfigManager, LiveApply};
use super::led::{self, Led};
use super::mounts::DATA_MOUNT;
use super::persistlog::{self, PersistHandle};
use super::revocation::Revocations;
use super::services::cgroup::{Cgroups, CGROUP_ROOT};
use super::services::Supervisor;
use super::slots::commit::{self, Committed, Health};
use super::slots::{BlockBackend, Slots, LAST_BOOT_FILE};
use super::sys::{MsFlags, RealSys, RebootMode, Sys};
use super::upload::Uploads;
use super::watchdog::{self, Watchdog};
use super::{
    clock, cmdline, grow, hostname, kmsg, log, metrics, modules, mounts, net, netinfo, power,
    reaper, runtime, serial, status,
};
use super::{install, upgrade};
use crate::config::{MachineConfig, Release, RELEASE_PATH};

struct BoardPlatform;

impl Platform for BoardPlatform {
    fn addresses(&self) -> Vec<String> {
        net::addresses()
    }
    fn dmesg(&self, max_bytes: usize) -> Result<String, String> {
        kmsg::tail(max_bytes)
    }
    fn network(&self) -> crate::wire::NetworkInfo {
        crate::wire::NetworkInfo {
            links: netinfo::links(),
            addresses: net::addresses(),
            routes: netinfo::routes(),
        }
    }
    fn net_counters(&self) -> Vec<crate::wire::NetCounters> {
        metrics::net_counters()
    }
    fn links(&self) -> Vec<crate::wire::LinkInfo> {
        net::LINKS.get().map(net::report::infos).unwrap_or_default()
    }
}

/// Live config changes on a board: the kernel's hostname, the watchdog.
struct BoardLive {
    sys: Arc<dyn Sys>,
    watchdog: Option<Arc<Watchdog>>,
    /// The board's own timeout (`outpost.watchdog=` or the default), for a
    /// config that unsets `watchdog.timeout_secs`.
    default_secs: u32,
}

impl LiveApply for BoardLive {
    fn hostname(&self, name: &str) -> Result<(), String> {
        hostname::set_hostname(&*self.sys, name).map_err(|e| e.to_string())
    }
    fn watchdog_timeout(&self, secs: Option<u32>) -> Result<(), String> {
        if let Some(wd) = &self.watchdog {
            wd.set_timeout(secs.unwrap_or(self.default_secs));
        }
        Ok(())
    }
}

/// Entry point of PID 1. Does not return while the kernel runs us.
pub fn run() -> std::process::ExitCode {
    let sys: Arc<dyn Sys> = Arc::new(RealSys);
    // Before logging: the console must be our stdout/stderr.
    let pseudo = mounts::mount_pseudo(&*sys);
    attach_console();
    let ring = log::init(true, log_level(&*sys));
    if let Err(e) = pseudo {
        tracing::error!("pseudo filesystems: {e}");
    }
    if std::process::id() != 1 {
        tracing::error!("outpost-init is not PID 1; to run it on a workstation use --host-mode");
        return std::process::ExitCode::FAILURE;
    }
    let ex = Arc::new(Executor::new());
    loop {
        // `boot` never finishes; if the executor ever returns (a bug), start
        // the duties again rather than let the kernel panic.
        smol::block_on(ex.run(boot(ex.clone(), sys.clone(), ring.clone())));
        tracing::error!("boot sequence returned; restarting it");
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// `outpost.log=debug` on the kernel command line turns on debug logging
/// (boot problems are diagnosed from the console, before the API is up).
fn log_level(sys: &dyn Sys) -> tracing::Level {
    let cmdline = sys
        .read_to_string(cmdline::CMDLINE_PATH, cmdline::MAX_CMDLINE_BYTES)
        .unwrap_or_default();
    if cmdline.split_whitespace().any(|w| w == "outpost.log=debug") {
        tracing::Level::DEBUG
    } else {
        tracing::Level::INFO
    }
}

/// Point fds 0-2 at /dev/console (the kernel may have started us without one
/// if the initramfs had no /dev/console node).
fn attach_console() {
    if let Ok(console) = rustix::fs::open(
        "/dev/console",
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY,
        rustix::fs::Mode::empty(),
    ) {
        let _ = rustix::stdio::dup2_stdin(&console);
        let _ = rustix::stdio::dup2_stdout(&console);
        let _ = rustix::stdio::dup2_stderr(&console);
    }
}

async fn boot(ex: Arc<Executor<'static>>, sys: Arc<dyn Sys>, ring: log::LogRing) {
    let init_start = log::uptime_ms();
    tracing::info!("outpost-init {} starting", env!("CARGO_PKG_VERSION"));
    let boot_id = boot_id(&*sys);
    // In the persisted log too: `logs --boot -1` names the boot it shows.
    tracing::info!("boot id {boot_id}");
    let persist = PersistHandle::new();

    let mut args = cmdline::read(&*sys).unwrap_or_else(|e| {
        tracing::error!("kernel command line: {e}");
        cmdline::BootArgs::default()
    });
    let slot = args.slot.map(|s| s.name().to_owned()).unwrap_or_default();

    match modules::load_modules(&*sys) {
        Ok(report) => {
            tracing::info!("modules: {} loaded", report.loaded.len());
            for (name, why) in &report.failed {
                tracing::error!("module {name}: {why}");
            }
        }
        Err(e) => tracing::error!("modules: {e}"),
    }
    for w in &args.warnings {
        tracing::warn!("kernel command line: {w}");
    }
    // Right after the modules (the GPIO drivers), so the LED tells of the
    // boot and the button is sampled from the start.
    let led = args.led.as_ref().and_then(start_led);
    let button = args.button.as_ref().and_then(start_button);

    // Right after the modules: the watchdog driver is one of them.
    let watchdog = watchdog::open(
        Path::new(watchdog::WATCHDOG_DEV),
        args.watchdog.unwrap_or(watchdog::DEFAULT_TIMEOUT_SECS),
    );
    if let Some(wd) = &watchdog {
        ex.spawn(watchdog::keep_alive(wd.clone())).detach();
    }
    let healthy = start_commit_deadline(&ex, &sys, &args, watchdog.clone(), persist.clone());

    let registry = reaper::ChildRegistry::new();
    ex.spawn(reaper::run(sys.clone(), registry.clone()))
        .detach();

    let release = read_release(&*sys);
    let data = args.data.clone().unwrap_or_default();
    if data.is_empty() {
        tracing::error!("no outpost.data= on the kernel command line; DATA not mounted");
    } else {
        match mounts::mount_data(&*sys, &data, DATA_MOUNT).await {
            Ok(device) => {
                grow::grow_and_report(&*sys, &device, DATA_MOUNT);
                // BOOT and the slots sit on DATA's disk: where DATA was
                // found (by its label, on another disk) they are too.
                args.data = Some(device);
            }
            Err(e) => tracing::error!("DATA: {e}"),
        }
    }
    // Every mount point exists by now; only DATA, /run and /tmp stay writable.
    if let Err(e) = mounts::root_read_only(&*sys) {
        tracing::error!("{e}");
    }
    if sys.is_mountpoint(DATA_MOUNT) {
        let kernel = match kmsg::KmsgReader::open() {
            Ok(k) => Some(Box::new(k) as Box<dyn persistlog::KernelSource>),
            Err(e) => {
                tracing::error!("kernel log not persisted: {e}");
                None
            }
        };
        if let Err(e) = persistlog::start(Path::new(DATA_MOUNT), &ring, kernel, &persist) {
            tracing::error!("logs not persisted: {e}");
        }
    }
    // Right after DATA: the clock file is there, and nothing below (TLS,
    // DHCP leases, logs) should see 1970.
    let time = restore_clock(&ex, &*sys, &release);

    let config = match runtime::load_machine_config(Path::new(DATA_MOUNT)) {
        Ok(c) => c,
        Err(e) => {
            // Without a config there is no identity to serve the API with;
            // keep running (reaper, logs on the console) so the failure is visible.
            tracing::error!("machine config: {e}");
            idle_forever().await;
            return;
        }
    };
    if let Err(e) = hostname::set_hostname(&*sys, &config.hostname) {
        tracing::error!("hostname: {e}");
    }
    let board_watchdog_secs = args.watchdog.unwrap_or(watchdog::DEFAULT_TIMEOUT_SECS);
    if let (Some(wd), Some(secs)) = (&watchdog, config.watchdog.timeout_secs) {
        wd.set_timeout(secs);
    }

    let (power_tx, power_rx) = smol::channel::bounded(1);
    bring_up_network(&ex, &*sys, &config, &time, &power_tx).await;
    ex.spawn(clock::sync::run(time.clone(), config.time.clone()))
        .detach();

    let config = Arc::new(ConfigManager::new(
        Path::new(DATA_MOUNT),
        config,
        Box::new(BoardLive {
            sys: sys.clone(),
            watchdog: watchdog.clone(),
            default_secs: board_watchdog_secs,
        }),
    ));
    ex.spawn(config.clone().watch_tries()).detach();
    let ctx = Arc::new(ApiContext {
        config: config.clone(),
        slot,
        release,
        boot_id,
        log: ring,
        power: power_tx,
        platform: Box::new(BoardPlatform),
        time: time.clone(),
        data_dir: Path::new(DATA_MOUNT).to_path_buf(),
        uploads: Uploads::new(Path::new(DATA_MOUNT)),
        revocations: Arc::new(Revocations::load(Path::new(DATA_MOUNT), time.clone())),
        ab: std::sync::OnceLock::new(),
        services: std::sync::OnceLock::new(),
        led: std::sync::OnceLock::new(),
    });
    if let Some(led) = &led {
        let _ = ctx.led.set(led.clone());
    }
    let listen = SocketAddr::from((Ipv4Addr::UNSPECIFIED, config.current().api.port));
    let api_listening = match runtime::start_api(&ex, Path::new(DATA_MOUNT), listen, ctx.clone()) {
        Ok(addr) => {
            tracing::info!(
                "API listening on {addr}; init took {} ms (uptime {} ms)",
                log::uptime_ms().saturating_sub(init_start),
                log::uptime_ms()
            );
            true
        }
        Err(e) => {
            tracing::error!("{e}");
            false
        }
    };
    if let Some(tty) = &args.serial {
        start_serial(&ex, Path::new(tty), ctx.clone());
    }
    // Beside the API, never instead of it: a failure here is logged only.
    if let Err(e) = super::callhome::start(&ex, Path::new(DATA_MOUNT), ctx.clone()) {
        tracing::error!("callhome: {e}");
    }
    // Only a boot that commits a slot waits for services' health checks.
    let services_healthy = start_services(
        &ex,
        &*sys,
        &config.current(),
        registry,
        &ctx,
        init_start,
        args.slot.is_some().then(|| commit_deadline(&args)),
    )
    .await;
    let health = Health {
        data_mounted: sys.is_mountpoint(DATA_MOUNT),
        config_loaded: true,
        api_listening,
        services_healthy,
    };
    if let Some(slots) = commit_slot(&args, health, &healthy, watchdog.as_deref()) {
        attach_ab(&ctx, slots, &args);
    }
    if let Some(led) = &led {
        show_commit(led, &ctx, &args, &health, &healthy);
    }
    if let Some(held) = button {
        // Decided within led::button::HOLD_MS of its start: long past, as a rule.
        let held = loop {
            if let Some(&held) = held.get() {
                break held;
            }
            smol::Timer::after(Duration::from_millis(100)).await;
        };
        if held {
            rollback_from_button(&ctx);
        }
    }

    loop {
        let Ok(request) = power_rx.recv().await else {
            idle_forever().await;
            return;
        };
        // Give the `Accepted` answer time to leave before the network goes.
        smol::Timer::after(Duration::from_millis(300)).await;
        if let Some(services) = ctx.services.get() {
            services.stop_all().await;
        }
        let mode = match request {
            PowerRequest::Reboot => RebootMode::Restart,
            PowerRequest::PowerOff => RebootMode::PowerOff,
        };
        // The next boot starts from here (a board without an RTC).
        time.save();
        if let (RebootMode::PowerOff, Some(wd)) = (mode, &watchdog) {
            // A halted board must not be reset back to life.
            wd.disarm();
        }
        tracing::warn!("{request:?} requested: saving logs, then shutting down");
        persist.flush();
        let err = power::shutdown(&*sys, mode);
        tracing::error!("still running after a {request:?} request: {err}");
    }
}

/// How long before the commit deadline the boot stops waiting for services'
/// health checks (the commit itself takes well under a second).
const SERVICES_HEALTH_MARGIN: Duration = Duration::from_secs(5);

/// Start the configured services (after the API, so a broken service never
/// hides the board) and wait, until shortly before the commit deadline, for
/// those with a health check to pass it. Returns whether they all did.
async fn start_services(
    ex: &Arc<Executor<'static>>,
    sys: &dyn Sys,
    config: &MachineConfig,
    registry: reaper::ChildRegistry,
    ctx: &ApiContext,
    init_start: u64,
    commit_deadline: Option<Duration>,
) -> bool {
    if config.services.is_empty() {
        return true;
    }
    let cgroups = match mount_cgroup2(sys)
        .map_err(|e| e.to_string())
        .and_then(|()| Cgroups::open(Path::new(CGROUP_ROOT)).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("services: cgroups unavailable ({e}); limits are not applied");
            Cgroups::disabled()
        }
    };
    let sup = Supervisor::start(ex, config.services.clone(), cgroups, registry);
    let _ = ctx.services.set(sup.clone());
    let Some(deadline) = commit_deadline else {
        return true;
    };
    let spent = Duration::from_millis(log::uptime_ms().saturating_sub(init_start));
    let budget = deadline
        .saturating_sub(spent)
        .saturating_sub(SERVICES_HEALTH_MARGIN);
    let unhealthy = sup.wait_healthy(budget).await;
    if !unhealthy.is_empty() {
        tracing::error!("services not healthy: {}", unhealthy.join(", "));
    }
    unhealthy.is_empty()
}

/// The cgroup v2 hierarchy at /sys/fs/cgroup (sysfs provides the directory).
fn mount_cgroup2(sys: &dyn Sys) -> Result<(), super::sys::SysError> {
    if sys.is_mountpoint(CGROUP_ROOT) {
        return Ok(());
    }
    sys.mount(
        Some("cgroup2"),
        CGROUP_ROOT,
        Some("cgroup2"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )
}

/// Set the clock from DATA and the image build time; save it periodically.
fn restore_clock(
    ex: &Arc<Executor<'static>>,
    sys: &dyn Sys,
    release: &Release,
) -> Arc<clock::TimeKeeper> {
    let data = sys
        .is_mountpoint(DATA_MOUNT)
        .then_some(Path::new(DATA_MOUNT));
    let time = Arc::new(clock::TimeKeeper::boot(
        Arc::new(clock::RealClock),
        data,
        Duration::from_secs(release.build_time),
    ));
    ex.spawn(clock::save_periodically(time.clone())).detach();
    time
}

/// Give the API the A/B manager: slot devices next to BOOT, release keys
/// from the image.
fn attach_ab(ctx: &ApiContext, slots: Arc<super::slots::Slots>, args: &cmdline::BootArgs) {
    let Some(devices) = super::slots::boot_device(args.boot.as_deref(), args.data.as_deref())
        .and_then(|b| upgrade::slot_devices(&b))
    else {
        tracing::error!("upgrade: cannot tell the slot devices from the boot device");
        return;
    };
    let keys = install::read_keys(Path::new(install::RELEASE_KEYS_PATH)).unwrap_or_else(|e| {
        tracing::warn!("upgrade: {e}; bundles will be refused");
        Vec::new()
    });
    let trust = install::Trust {
        keys,
        board: ctx.release.board.clone(),
        running_version: ctx.release.version.clone(),
    };
    let _ = ctx.ab.set(Arc::new(upgrade::Ab::new(
        slots,
        devices,
        trust,
        Path::new(DATA_MOUNT).to_path_buf(),
    )));
}

/// How long this boot has to become healthy: `outpost.commit_deadline=` when
/// the board's command line sets one (slow boards, slow services), else
/// `commit::COMMIT_DEADLINE`.
fn commit_deadline(args: &cmdline::BootArgs) -> Duration {
    args.commit_deadline
        .map_or(commit::COMMIT_DEADLINE, |s| Duration::from_secs(s.into()))
}

/// Reboot unless this boot is healthy within [`commit_deadline`]
/// (only when booted by boot.scr: `outpost.slot=` is set). Returns the flag
/// that [`commit_slot`] raises.
fn start_commit_deadline(
    ex: &Arc<Executor<'static>>,
    sys: &Arc<dyn Sys>,
    args: &cmdline::BootArgs,
    watchdog: Option<Arc<Watchdog>>,
    persist: PersistHandle,
) -> Arc<AtomicBool> {
    let healthy = Arc::new(AtomicBool::new(false));
    if args.slot.is_some() {
        let sys = sys.clone();
        let on_miss = move || {
            if let Some(wd) = &watchdog {
                wd.stop_petting("health deadline missed");
            }
            // The log of a boot that failed its health check matters most.
            persist.flush();
            let err = power::shutdown(&*sys, RebootMode::Restart);
            tracing::error!("still running after the deadline reboot: {err}");
        };
        ex.spawn(commit::deadline(
            commit_deadline(args),
            healthy.clone(),
            on_miss,
        ))
        .detach();
    }
    healthy
}

/// Commit or fall back: mark the booted slot good when `health` passed
/// (`outpost.fault=` skips it on purpose), log how this boot came about and
/// record it on DATA. Raises `healthy` unless the boot is unhealthy.
fn commit_slot(
    args: &cmdline::BootArgs,
    health: Health,
    healthy: &AtomicBool,
    watchdog: Option<&Watchdog>,
) -> Option<Arc<Slots>> {
    let booted = args.slot?;
    match args.fault {
        Some(cmdline::Fault::Hang) => {
            tracing::warn!("outpost.fault=hang: slot {booted} is not marked good");
            if let Some(wd) = watchdog {
                wd.stop_petting("outpost.fault=hang");
            }
            return None;
        }
        Some(cmdline::Fault::Unhealthy) => {
            tracing::warn!("outpost.fault=unhealthy: slot {booted} is not marked good");
            return None;
        }
        None => {}
    }
    let Some(dev) = super::slots::boot_device(args.boot.as_deref(), args.data.as_deref()) else {
        tracing::error!("no BOOT device (outpost.boot=, or outpost.data= on partition 4); slot {booted} not marked good");
        healthy.store(true, Ordering::Release);
        return None;
    };
    let slots = match BlockBackend::open(Path::new(&dev)) {
        Ok(b) => Arc::new(Slots::new(Box::new(b), Some(booted))),
        Err(e) => {
            tracing::error!("boot state: {e}; slot {booted} not marked good");
            healthy.store(true, Ordering::Release);
            return None;
        }
    };
    let data = health.data_mounted.then_some(Path::new(DATA_MOUNT));
    match commit::commit(&slots, &health, data, log::uptime_ms()) {
        Committed::Unhealthy(_) => {}
        Committed::MarkedGood { .. } | Committed::WriteFailed(_) => {
            healthy.store(true, Ordering::Release);
        }
    }
    Some(slots)
}

/// The status LED's driver on its GPIO line (docs/leds.md).
fn start_led(spec: &cmdline::GpioSpec) -> Option<Arc<Led>> {
    match led::pin::open(spec, true, "outpost-led") {
        Ok(pin) => led::start(pin, log::uptime_ms, |_| {}),
        Err(e) => {
            tracing::error!("status LED: {e}");
            None
        }
    }
}

/// Sample the rollback button for `led::button::HOLD_MS` from now, on a
/// thread; the answer appears in the cell.
fn start_button(spec: &cmdline::GpioSpec) -> Option<Arc<OnceLock<bool>>> {
    let pin = led::pin::open(spec, false, "outpost-button")
        .map_err(|e| tracing::error!("rollback button: {e}"))
        .ok()?;
    let held = Arc::new(OnceLock::new());
    let cell = held.clone();
    std::thread::Builder::new()
        .name("button".into())
        .stack_size(64 << 10)
        .spawn(move || {
            let _ = cell.set(led::button::sample(pin, log::uptime_ms));
        })
        .map_err(|e| tracing::error!("rollback button: starting its thread: {e}"))
        .ok()?;
    Some(held)
}

/// After the commit point: healthy (or fell back) unless the boot is
/// unhealthy, and the A/B manager's installs shown as they happen.
fn show_commit(
    led: &Led,
    ctx: &ApiContext,
    args: &cmdline::BootArgs,
    health: &Health,
    healthy: &AtomicBool,
) {
    let ok = if args.slot.is_some() {
        healthy.load(Ordering::Acquire)
    } else {
        health.failures().is_empty()
    };
    if ok {
        let record = status::read_small(&Path::new(DATA_MOUNT).join(LAST_BOOT_FILE));
        led.committed(record.is_some_and(|r| r.contains("fallback = true")));
    }
    if let Some(ab) = ctx.ab.get() {
        let ab = ab.clone();
        led.watch_installs(Box::new(move || ab.installing()));
    }
}

/// The button was held at boot: make the other good slot primary and reboot
/// into it (a slot that is not good is refused, as `outpost rollback` is).
fn rollback_from_button(ctx: &ApiContext) {
    tracing::warn!("rollback button held at boot");
    let Some(ab) = ctx.ab.get() else {
        tracing::error!("rollback button: no A/B state on this boot; not rolling back");
        return;
    };
    match ab.rollback() {
        Ok(()) => {
            let _ = ctx.power.try_send(PowerRequest::Reboot);
        }
        Err(e) => tracing::error!("rollback button: {e}"),
    }
}

/// The API on the serial line named by `outpost.serial=`. A line missing now
/// may appear later (a USB adapter); the listener keeps looking for it.
fn start_serial(ex: &Arc<Executor<'static>>, tty: &Path, ctx: Arc<ApiContext>) {
    if !tty.exists() {
        tracing::warn!("outpost.serial={}: no such device yet", tty.display());
    }
    if let Err(e) = serial::start(ex, Path::new(DATA_MOUNT), tty.to_path_buf(), ctx) {
        tracing::error!("{e}");
    }
}

async fn bring_up_network(
    ex: &Arc<Executor<'static>>,
    sys: &dyn Sys,
    config: &MachineConfig,
    time: &Arc<clock::TimeKeeper>,
    power: &smol::channel::Sender<PowerRequest>,
) {
    let cmdline = sys
        .read_to_string(cmdline::CMDLINE_PATH, cmdline::MAX_CMDLINE_BYTES)
        .unwrap_or_default();
    let time = time.clone();
    let power = power.clone();
    let extras = net::Extras {
        data: sys.is_mountpoint(DATA_MOUNT).then(|| DATA_MOUNT.into()),
        now_secs: Box::new(move || time.now().as_secs()),
        modem_power: super::modem::task::power_gpio(&cmdline),
        reboot: Arc::new(move || {
            let _ = power.try_send(PowerRequest::Reboot);
        }),
    };
    net::start(ex, &config.network, extras).await;
}

fn read_release(sys: &dyn Sys) -> Release {
    match sys
        .read_to_string(RELEASE_PATH, 4096)
        .map_err(|e| e.to_string())
        .and_then(|t| Release::from_toml(&t))
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("{RELEASE_PATH}: {e}");
            Release {
                board: "unknown".into(),
                version: "unknown".into(),
                build_time: 0,
            }
        }
    }
}

fn boot_id(sys: &dyn Sys) -> String {
    sys.read_to_string("/proc/sys/kernel/random/boot_id", 64)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| runtime::random_boot_id())
}

async fn idle_forever() {
    loop {
        smol::Timer::after(Duration::from_secs(3600)).await;
    }
}
