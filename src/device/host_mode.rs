//! Host mode: the same daemon, unprivileged, on a developer machine. DATA is
//! a directory, nothing is mounted, no modules, no network set-up. Reboot
//! re-executes the process (a new boot id); poweroff exits. Fast tests and
//! simulated fleets run this way.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use smol::Executor;

use super::api::{ApiContext, Platform, PowerRequest};
use super::config_apply::{self, ConfigManager};
use super::install;
use super::revocation::Revocations;
use super::runtime;
use super::slots::{FileBackend, Slots};
use super::upgrade::Ab;
use super::upload::Uploads;
use crate::bootstate::Slot;
use crate::config::Release;

pub struct HostOptions {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub slot: String,
    /// A tty (or pseudo-terminal) to serve the API on as well, as
    /// `outpost.serial=` does on a board.
    pub serial: Option<PathBuf>,
    /// A simulated card: the two boot-state copies and `slot-A.img`,
    /// `slot-B.img` in this directory. The slot is then chosen as U-Boot
    /// would (and `--slot` is ignored); upgrades and rollback work.
    pub slots: Option<PathBuf>,
    /// Release keys to trust (hex lines), as `/etc/outpost/release-keys`.
    pub release_keys: Option<PathBuf>,
    /// Board and version this simulated device claims to run.
    pub board: String,
    pub version: String,
    /// A simulated status LED (default): each pattern change is logged and
    /// written to `DATA/state/led`. `--no-led`: a board without one.
    pub led: bool,
}

impl HostOptions {
    /// `--data DIR --listen ADDR [--slot A|B] [--serial TTY]`
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let mut data_dir = None;
        let mut listen = None;
        let mut slot = "A".to_owned();
        let mut serial = None;
        let (mut slots, mut release_keys) = (None, None);
        let mut board = "host".to_owned();
        let mut version = env!("CARGO_PKG_VERSION").to_owned();
        let mut led = true;
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match arg.as_str() {
                "--host-mode" => {}
                "--data" => data_dir = Some(PathBuf::from(value("--data")?)),
                "--listen" => {
                    let v = value("--listen")?;
                    listen = Some(
                        v.parse()
                            .map_err(|_| format!("--listen `{v}` is not HOST:PORT"))?,
                    );
                }
                "--slot" => {
                    slot = value("--slot")?;
                    if slot != "A" && slot != "B" {
                        return Err(format!("--slot `{slot}` must be A or B"));
                    }
                }
                "--serial" => serial = Some(PathBuf::from(value("--serial")?)),
                "--slots" => slots = Some(PathBuf::from(value("--slots")?)),
                "--release-keys" => release_keys = Some(PathBuf::from(value("--release-keys")?)),
                "--board" => board = value("--board")?,
                "--version" => version = value("--version")?,
                "--no-led" => led = false,
                other => return Err(format!("unknown argument `{other}`")),
            }
        }
        Ok(Self {
            data_dir: data_dir.ok_or("--data DIR is required in host mode")?,
            listen: listen.ok_or("--listen HOST:PORT is required in host mode")?,
            slot,
            serial,
            slots,
            release_keys,
            board,
            version,
            led,
        })
    }
}

struct HostPlatform {
    listen: SocketAddr,
}

impl Platform for HostPlatform {
    fn addresses(&self) -> Vec<String> {
        vec![format!("host {}", self.listen)]
    }
    fn dmesg(&self, _max_bytes: usize) -> Result<String, String> {
        Err("no kernel log in host mode".into())
    }
    fn network(&self) -> crate::wire::NetworkInfo {
        crate::wire::NetworkInfo {
            links: vec![],
            addresses: self.addresses(),
            routes: vec![],
        }
    }
    fn net_counters(&self) -> Vec<crate::wire::NetCounters> {
        Vec::new()
    }
}

pub fn run(opts: HostOptions) -> std::process::ExitCode {
    let log = super::log::init(true, tracing::Level::INFO);
    let ex = Arc::new(Executor::new());
    let config = match runtime::load_machine_config(&opts.data_dir) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let release = Release {
        board: opts.board.clone(),
        version: opts.version.clone(),
        build_time: 0,
    };
    let sim = match &opts.slots {
        Some(dir) => match simulated_card(dir) {
            Ok(sim) => Some(sim),
            Err(e) => {
                tracing::error!("host mode: {e}");
                return std::process::ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let slot = sim
        .as_ref()
        .map(|(_, slot)| slot.name().to_owned())
        .unwrap_or_else(|| opts.slot.clone());
    // A simulated slot runs the version last installed into it (a board reads
    // it from the slot's own release file).
    let mut release = release;
    if let Some(v) =
        super::status::read_small(&opts.data_dir.join(format!("state/slot-{slot}.version")))
    {
        release.version = v.trim().to_owned();
    }
    let services = config.services.clone();
    let boot_id = runtime::random_boot_id();
    tracing::info!("boot id {boot_id}");
    // The system log of each "boot" (each re-exec) is kept under DATA/logs
    // as on a board; host mode has no kernel log of its own.
    let persist = super::persistlog::PersistHandle::new();
    if let Err(e) = super::persistlog::start(&opts.data_dir, &log, None, &persist) {
        tracing::error!("host mode: logs not persisted: {e}");
    }
    // The host's clock is the "RTC"; steps are a process-local offset.
    let time = Arc::new(super::clock::TimeKeeper::boot(
        Arc::new(super::clock::OffsetClock::default()),
        Some(&opts.data_dir),
        std::time::Duration::from_secs(release.build_time),
    ));
    let (power_tx, power_rx) = smol::channel::bounded(1);
    let config = Arc::new(ConfigManager::new(
        &opts.data_dir,
        config,
        Box::new(config_apply::NoLive),
    ));
    ex.spawn(config.clone().watch_tries()).detach();
    let ctx = Arc::new(ApiContext {
        config,
        slot,
        release,
        boot_id,
        log,
        power: power_tx,
        platform: Box::new(HostPlatform {
            listen: opts.listen,
        }),
        data_dir: opts.data_dir.clone(),
        time: time.clone(),
        uploads: Uploads::new(&opts.data_dir),
        revocations: Arc::new(Revocations::load(&opts.data_dir, time.clone())),
        ab: std::sync::OnceLock::new(),
        services: std::sync::OnceLock::new(),
        led: std::sync::OnceLock::new(),
    });
    if let Some(led) = opts.led.then(|| simulated_led(&opts.data_dir)).flatten() {
        let _ = ctx.led.set(led);
    }
    if let (Some((slots, booted)), Some(dir)) = (sim, &opts.slots) {
        // Host mode is healthy once the API is up: mark the slot good then.
        let keys = opts
            .release_keys
            .as_deref()
            .map(install::read_keys)
            .transpose()
            .unwrap_or_else(|e| {
                tracing::warn!("host mode: {e}");
                None
            });
        let trust = install::Trust {
            keys: keys.unwrap_or_default(),
            board: ctx.release.board.clone(),
            running_version: ctx.release.version.clone(),
        };
        let devices = [dir.join("slot-A.img"), dir.join("slot-B.img")];
        let ab = Arc::new(Ab::new(
            slots.clone(),
            devices,
            trust,
            opts.data_dir.clone(),
        ));
        let _ = ctx.ab.set(ab);
        if let Err(e) = slots.mark_good(booted) {
            tracing::error!("host mode: marking slot {booted} good: {e}");
        }
    }
    let result = smol::block_on(ex.run(async {
        ex.spawn(super::clock::save_periodically(time.clone()))
            .detach();
        ex.spawn(super::clock::sync::run(
            time.clone(),
            ctx.config.current().time,
        ))
        .detach();
        let listener = runtime::start_api(&ex, &opts.data_dir, opts.listen, ctx.clone())?;
        tracing::info!("host mode: API on {listener}");
        // Host mode is healthy once the API is up (as its slot is marked good).
        if let Some(led) = ctx.led.get() {
            led.committed(false);
            if let Some(ab) = ctx.ab.get() {
                let ab = ab.clone();
                led.watch_installs(Box::new(move || ab.installing()));
            }
        }
        // After the API, as on a board. No cgroups here (unprivileged):
        // limits are skipped with one warning.
        let sup = super::services::Supervisor::start(
            &ex,
            services,
            super::services::cgroup::Cgroups::disabled(),
            super::reaper::ChildRegistry::new(),
        );
        let _ = ctx.services.set(sup);
        if let Some(tty) = &opts.serial {
            super::serial::start(&ex, &opts.data_dir, tty.clone(), ctx.clone())?;
        }
        if let Err(e) = super::callhome::start(&ex, &opts.data_dir, ctx.clone()) {
            tracing::error!("callhome: {e}");
        }
        let what = power_rx
            .recv()
            .await
            .map_err(|_| "power channel closed".to_owned())?;
        // Let the `Accepted` answer reach the client before we go.
        smol::Timer::after(std::time::Duration::from_millis(200)).await;
        if let Some(services) = ctx.services.get() {
            services.stop_all().await;
        }
        Ok::<_, String>(what)
    }));
    // As a board does before reboot or power-off.
    time.save();
    let code = match result {
        Ok(PowerRequest::PowerOff) => {
            tracing::info!("host mode: power off");
            std::process::ExitCode::SUCCESS
        }
        Ok(PowerRequest::Reboot) => {
            tracing::info!("host mode: reboot (re-exec)");
            persist.flush();
            return reexec();
        }
        Err(e) => {
            tracing::error!("host mode: {e}");
            std::process::ExitCode::FAILURE
        }
    };
    persist.flush();
    code
}

/// Where the simulated LED's pattern is written, under DATA.
pub const SIM_LED_FILE: &str = "state/led";

/// A status LED without a GPIO: the pattern name goes to `DATA/state/led`.
fn simulated_led(data: &std::path::Path) -> Option<Arc<super::led::Led>> {
    let file = data.join(SIM_LED_FILE);
    super::led::start(super::led::SimPin, super::log::uptime_ms, move |p| {
        let written = file
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&file, p.name()));
        if let Err(e) = written {
            tracing::warn!("host mode: {}: {e}", file.display());
        }
    })
}

/// Open a simulated card in `dir` and boot it as U-Boot would.
fn simulated_card(dir: &std::path::Path) -> Result<(Arc<Slots>, Slot), String> {
    let backend = FileBackend::create(dir).map_err(|e| e.to_string())?;
    let chooser = Slots::new(Box::new(backend), None);
    let booted = chooser.boot_as_uboot_would().map_err(|e| e.to_string())?;
    for name in ["slot-A.img", "slot-B.img"] {
        let path = dir.join(name);
        if !path.exists() {
            let f = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            f.set_len(SIM_SLOT_BYTES)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    tracing::info!(
        "host mode: simulated card in {}, booted slot {booted}",
        dir.display()
    );
    Ok((
        Arc::new(Slots::new(Box::new(FileBackend::new(dir)), Some(booted))),
        booted,
    ))
}

/// Size of a simulated slot (sparse), the image layout's slot size.
const SIM_SLOT_BYTES: u64 = 128 << 20;

fn reexec() -> std::process::ExitCode {
    use std::os::unix::process::CommandExt;
    let args: Vec<String> = std::env::args().collect();
    let Some((prog, rest)) = args.split_first() else {
        return std::process::ExitCode::FAILURE;
    };
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from(prog));
    let err = std::process::Command::new(exe).args(rest).exec();
    tracing::error!("re-exec failed: {err}");
    std::process::ExitCode::FAILURE
}
