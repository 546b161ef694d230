//! Host mode: the same daemon, unprivileged, on a developer machine. DATA is
//! a directory, nothing is mounted, no modules, no network set-up. Reboot
//! re-executes the process (a new boot id); poweroff exits. Fast tests and
//! simulated fleets run this way.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use smol::Executor;

use super::api::{ApiContext, Platform, PowerRequest};
use super::runtime;
use super::upload::Uploads;
use crate::config::Release;

pub struct HostOptions {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub slot: String,
    /// A tty (or pseudo-terminal) to serve the API on as well, as
    /// `outpost.serial=` does on a board.
    pub serial: Option<PathBuf>,
}

impl HostOptions {
    /// `--data DIR --listen ADDR [--slot A|B] [--serial TTY]`
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let mut data_dir = None;
        let mut listen = None;
        let mut slot = "A".to_owned();
        let mut serial = None;
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
                other => return Err(format!("unknown argument `{other}`")),
            }
        }
        Ok(Self {
            data_dir: data_dir.ok_or("--data DIR is required in host mode")?,
            listen: listen.ok_or("--listen HOST:PORT is required in host mode")?,
            slot,
            serial,
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
    fn clock_source(&self) -> &'static str {
        "system"
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
        board: "host".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        build_time: 0,
    };
    let (power_tx, power_rx) = smol::channel::bounded(1);
    let ctx = Arc::new(ApiContext {
        hostname: config.hostname.clone(),
        slot: opts.slot.clone(),
        release,
        boot_id: runtime::random_boot_id(),
        log,
        power: power_tx,
        platform: Box::new(HostPlatform {
            listen: opts.listen,
        }),
        data_dir: opts.data_dir.clone(),
        uploads: Uploads::new(&opts.data_dir),
    });
    let result = smol::block_on(ex.run(async {
        let listener = runtime::start_api(&ex, &opts.data_dir, opts.listen, ctx.clone())?;
        tracing::info!("host mode: API on {listener}");
        if let Some(tty) = &opts.serial {
            super::serial::start(&ex, &opts.data_dir, tty.clone(), ctx)?;
        }
        let what = power_rx
            .recv()
            .await
            .map_err(|_| "power channel closed".to_owned())?;
        // Let the `Accepted` answer reach the client before we go.
        smol::Timer::after(std::time::Duration::from_millis(200)).await;
        Ok::<_, String>(what)
    }));
    match result {
        Ok(PowerRequest::PowerOff) => {
            tracing::info!("host mode: power off");
            std::process::ExitCode::SUCCESS
        }
        Ok(PowerRequest::Reboot) => {
            tracing::info!("host mode: reboot (re-exec)");
            reexec()
        }
        Err(e) => {
            tracing::error!("host mode: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

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
