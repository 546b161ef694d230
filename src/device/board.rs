//! Boot on a real board (PID 1): the duties in order, each failure logged and
//! reported, never fatal. The executor runs forever; only a power request
//! that the kernel obeys ends it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use smol::Executor;

use super::api::{ApiContext, Platform, PowerRequest};
use super::mounts::DATA_MOUNT;
use super::sys::{RealSys, RebootMode, Sys};
use super::{
    cmdline, hostname, kmsg, log, metrics, modules, mounts, net, netinfo, power, reaper, runtime,
};
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
    fn clock_source(&self) -> &'static str {
        "rtc"
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

    let args = cmdline::read(&*sys).unwrap_or_else(|e| {
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

    let registry = reaper::ChildRegistry::new();
    ex.spawn(reaper::run(sys.clone(), registry)).detach();

    let release = read_release(&*sys);
    let data = args.data.clone().unwrap_or_default();
    if data.is_empty() {
        tracing::error!("no outpost.data= on the kernel command line; DATA not mounted");
    } else if let Err(e) = mounts::mount_data(&*sys, &data, DATA_MOUNT).await {
        tracing::error!("DATA: {e}");
    }

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

    bring_up_network(&ex, &config).await;

    let (power_tx, power_rx) = smol::channel::bounded(1);
    let ctx = Arc::new(ApiContext {
        hostname: config.hostname.clone(),
        slot,
        release,
        boot_id: boot_id(&*sys),
        log: ring,
        power: power_tx,
        platform: Box::new(BoardPlatform),
        data_dir: Path::new(DATA_MOUNT).to_path_buf(),
    });
    let listen = SocketAddr::from((Ipv4Addr::UNSPECIFIED, config.api.port));
    match runtime::start_api(&ex, Path::new(DATA_MOUNT), listen, ctx) {
        Ok(addr) => tracing::info!(
            "API listening on {addr}; init took {} ms (uptime {} ms)",
            log::uptime_ms().saturating_sub(init_start),
            log::uptime_ms()
        ),
        Err(e) => tracing::error!("{e}"),
    }

    loop {
        let Ok(request) = power_rx.recv().await else {
            idle_forever().await;
            return;
        };
        // Give the `Accepted` answer time to leave before the network goes.
        smol::Timer::after(Duration::from_millis(300)).await;
        let mode = match request {
            PowerRequest::Reboot => RebootMode::Restart,
            PowerRequest::PowerOff => RebootMode::PowerOff,
        };
        let err = power::shutdown(&*sys, mode);
        tracing::error!("still running after a {request:?} request: {err}");
    }
}

async fn bring_up_network(ex: &Arc<Executor<'static>>, config: &MachineConfig) {
    match net::bring_up(&config.network).await {
        Ok(up) => {
            tracing::info!("network: {up}");
            if let Some(task) = up.renewal() {
                ex.spawn(task).detach();
            }
        }
        Err(e) => tracing::error!("network: {e}"),
    }
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
