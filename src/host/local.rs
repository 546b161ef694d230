//! Commands that work on this machine: building images and running local
//! devices in QEMU.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Subcommand;

use super::board::{Board, QemuMachine};
use super::cli::Format;
use super::context::{CliConfig, Node};
use super::debian::Kernel;
use super::image::{self, BuildOptions, ImageInfo};
use super::qemu::{self, Machine};
use crate::wire::{Request, Response};

/// The repository this CLI was built from: default home of boards/, uboot/
/// and the device binary.
const REPO: &str = env!("CARGO_MANIFEST_DIR");

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Build a complete disk image for one device.
    Build {
        #[arg(long, default_value = "qemu-virt")]
        board: String,
        #[arg(long)]
        site: PathBuf,
        #[arg(long)]
        hostname: String,
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
        /// The outpost-init binary (static aarch64).
        #[arg(long, env = "OUTPOST_INIT")]
        init: Option<PathBuf>,
        /// OS version recorded in the image.
        #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
        version: String,
        /// A static binary for services, copied into the image's read-only
        /// extension directory /usr/lib/outpost/ext under its file name
        /// (repeat for more).
        #[arg(long = "extension", value_name = "FILE")]
        extensions: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum BundleCommand {
    /// Build a signed bundle (a slot image for every device of a site and board).
    Build {
        #[arg(long, default_value = "qemu-virt")]
        board: String,
        #[arg(long)]
        site: PathBuf,
        #[arg(long)]
        version: String,
        /// The oldest running version this bundle may replace.
        #[arg(long, default_value = "0.0.0")]
        min_version: String,
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
        /// The outpost-init binary (static aarch64).
        #[arg(long, env = "OUTPOST_INIT")]
        init: Option<PathBuf>,
        /// A static binary for /usr/lib/outpost/ext (as `image build`; an
        /// upgrade must carry the services' binaries too).
        #[arg(long = "extension", value_name = "FILE")]
        extensions: Vec<PathBuf>,
        /// Average content-defined chunk in KiB (measurements only: a board
        /// takes any, but deltas need both releases cut alike).
        #[arg(long, default_value_t = super::bundle::CDC_AVG / 1024, hide = true,
              value_parser = clap::value_parser!(u32).range(1..=256))]
        chunk_avg_kib: u32,
    },
    /// What a delta upgrade from OLD to NEW sends (no board needed): the
    /// chunks of NEW that a board running OLD lacks, plus NEW's header.
    Diff { old: PathBuf, new: PathBuf },
    /// Write the slot image a bundle carries (each chunk checked) to a file.
    Extract {
        bundle: PathBuf,
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
    },
}

/// `outpost bundle diff OLD NEW`.
fn bundle_diff(old: &Path, new: &Path, format: Format) -> Result<()> {
    let old = super::bundle::BundleFile::open(old)?;
    let new = super::bundle::BundleFile::open(new)?;
    let have = super::delta::have_from(&old.header, &new.header);
    let t = super::delta::transfer(&new, &have);
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&t)?);
    } else {
        println!(
            "{} -> {}: {}",
            old.header.version,
            new.header.version,
            t.summary()
        );
    }
    Ok(())
}

pub fn bundle(cmd: BundleCommand, format: Format) -> Result<()> {
    let (board, site, version, min_version, out, init, extensions, avg) = match cmd {
        BundleCommand::Diff { old, new } => return bundle_diff(&old, &new, format),
        BundleCommand::Extract { bundle, out } => {
            let image = super::bundle::BundleFile::open(&bundle)?.image()?;
            return std::fs::write(&out, image)
                .with_context(|| format!("writing {}", out.display()));
        }
        BundleCommand::Build {
            board,
            site,
            version,
            min_version,
            out,
            init,
            extensions,
            chunk_avg_kib,
        } => (
            board,
            site,
            version,
            min_version,
            out,
            init,
            extensions,
            chunk_avg_kib * 1024,
        ),
    };
    let init_binary = init.unwrap_or_else(default_init);
    let opts = super::bundle::BundleOptions {
        board: Board::load(&boards_dir(), &board)?,
        site_dir: site,
        init_binary,
        version,
        min_version,
        output: out,
        extensions,
        chunk_avg: avg,
    };
    let report = super::bundle::build(&opts)?;
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "bundle {} ({} bytes; slot image {} bytes in {} chunks) for {} {}, sha256 {}",
            report.bundle.display(),
            report.bundle_size,
            report.image_size,
            report.chunks,
            report.board,
            report.version,
            report.sha256
        );
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum QemuCommand {
    /// Boot an image headless and make it the current node once its API answers.
    Up {
        image: PathBuf,
        /// Name of the local device (default: the image's hostname).
        #[arg(long)]
        name: Option<String>,
        /// Guest RAM in MiB (default: 256 on virt; raspi3b has 1024, fixed).
        #[arg(long)]
        memory: Option<u32>,
        /// Host port on 127.0.0.1 forwarded to the API (default: a free one).
        #[arg(long)]
        port: Option<u16>,
        /// Seconds to wait for the API.
        #[arg(long, default_value_t = 180)]
        timeout: u64,
        /// Start the board's RTC at this date (QEMU `-rtc base=`), e.g.
        /// `1970-01-01` for a board without a battery-backed clock.
        #[arg(long, value_name = "DATE")]
        rtc_base: Option<String>,
        /// Wire the board's management UART to this Unix socket (talk to it
        /// with `outpost --serial PATH`): the PL011 on raspi3b, an added
        /// 16550 on virt.
        #[arg(long, value_name = "PATH")]
        mgmt_serial: Option<PathBuf>,
        /// Start QEMU and return, without waiting for the API over TCP
        /// (a board managed over --mgmt-serial).
        #[arg(long)]
        no_wait: bool,
        /// Extra QEMU arguments (repeatable).
        #[arg(long = "qemu-arg", allow_hyphen_values = true)]
        qemu_args: Vec<String>,
        /// Let the board reach an MQTT broker on 127.0.0.1:PORT as
        /// 10.0.2.100:8883 (call home, docs/callhome.md).
        #[arg(long, value_name = "PORT")]
        broker_port: Option<u16>,
        #[command(flatten)]
        format: super::cli::FormatArg,
    },
    /// Power a local device off (over its API; killed if it does not stop).
    Down {
        #[arg(long)]
        name: String,
    },
}

fn boards_dir() -> PathBuf {
    std::env::var_os("OUTPOST_BOARDS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(REPO).join("boards"))
}

fn default_init() -> PathBuf {
    Path::new(REPO).join("target/aarch64-unknown-linux-musl/release/outpost-init")
}

pub fn image(cmd: ImageCommand, format: Format) -> Result<()> {
    match cmd {
        ImageCommand::Build {
            board,
            site,
            hostname,
            out,
            init,
            version,
            extensions,
        } => {
            let board = Board::load(&boards_dir(), &board)?;
            let init_binary = init.unwrap_or_else(default_init);
            if !init_binary.exists() {
                bail!(
                    "outpost-init binary {} not found: build it with `scripts/build-init` (or pass --init)",
                    init_binary.display()
                );
            }
            let opts = BuildOptions {
                board,
                site_dir: site,
                hostname,
                output: out,
                init_binary,
                version,
                uboot_script: Path::new(REPO).join("uboot/boot.cmd"),
                extensions,
            };
            let report = image::build(&opts)?;
            if format == Format::Json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "image {} ({} MiB) for `{}`: kernel {}, {} modules",
                    report.image.display(),
                    report.size_bytes >> 20,
                    opts.hostname,
                    report.kernel_package,
                    report.modules.len()
                );
            }
            Ok(())
        }
    }
}

pub fn qemu(
    cmd: QemuCommand,
    config_path: &Path,
    context: Option<&str>,
    format: Format,
) -> Result<()> {
    match cmd {
        QemuCommand::Up {
            image,
            name,
            memory,
            port,
            timeout,
            rtc_base,
            mgmt_serial,
            no_wait,
            mut qemu_args,
            broker_port,
            format: f,
        } => {
            if let Some(date) = rtc_base {
                // QEMU takes "now", "utc", "localtime" or a date; refuse what
                // would be spliced into its option string.
                if date.is_empty() || date.contains([',', ' ', '=']) {
                    bail!(
                        "--rtc-base `{date}`: give a date like 1970-01-01 or 2024-05-01T12:00:00"
                    );
                }
                qemu_args.extend(["-rtc".to_owned(), format!("base={date}")]);
            }
            let format = f.output.unwrap_or(format);
            let info = ImageInfo::read(&image)?;
            let board = Board::load(&boards_dir(), &info.board)?;
            let Some(kind) = board.qemu else {
                bail!(
                    "board `{}` has no QEMU machine (boards with one: qemu-virt, rpi3)",
                    board.name
                );
            };
            let bios = board.uboot_binary()?;
            let (memory, dtb) = match kind {
                QemuMachine::Virt => (memory.unwrap_or(256), None),
                QemuMachine::Raspi3b => {
                    if memory.is_some_and(|m| m != qemu::RASPI3B_MEMORY_MIB) {
                        bail!("--memory: QEMU's raspi3b has exactly 1024 MiB");
                    }
                    if let Some(size) = qemu::pad_sd_image(&image)? {
                        eprintln!(
                            "{}: padded to {} MiB (QEMU's SD card size must be a power of two)",
                            image.display(),
                            size >> 20
                        );
                    }
                    let kern = board.kernel_package().and_then(|p| Kernel::find(&p))?;
                    let first = board.dtbs.first().context("board has no dtbs")?;
                    let dtb = kern.dtb_dir.join("broadcom").join(&first.file);
                    (qemu::RASPI3B_MEMORY_MIB, Some(dtb))
                }
            };
            let name = name.unwrap_or_else(|| info.hostname.clone());
            let host_port = match port {
                Some(p) => p,
                None => qemu::free_port()?,
            };
            let machine = Machine {
                name: name.clone(),
                image: image
                    .canonicalize()
                    .with_context(|| format!("image {}", image.display()))?,
                kind,
                bios,
                dtb,
                memory_mib: memory,
                host_port,
                guest_port: info.api_port,
                mgmt_serial,
                extra_args: qemu_args,
                call_home: broker_port,
            };
            let node = Node {
                address: format!("127.0.0.1:{host_port}"),
                server_name: info.hostname.clone(),
            };
            let mut config = CliConfig::load(config_path)?;
            let ctx = config.context_mut(context)?;
            ctx.nodes.insert(name.clone(), node.clone());
            ctx.current_node = name.clone();
            let ctx = ctx.clone();
            config.save(config_path)?;

            let started = Instant::now();
            machine.start()?;
            let pid = qemu::running_pid(&name);
            if no_wait {
                println!("local device `{name}` started (not waiting for its API)");
                return Ok(());
            }
            let deadline = Duration::from_secs(timeout);
            loop {
                match super::cli::call(&ctx, &node, Request::Status) {
                    Ok(Response::Status(s)) => {
                        let wall = started.elapsed();
                        if format == Format::Json {
                            println!(
                                "{}",
                                serde_json::json!({ "name": name, "address": node.address, "boot_wall_ms": wall.as_millis(), "status": s })
                            );
                        } else {
                            println!(
                                "local device `{name}` is up at {} (slot {}, API answered after {:.1} s); it is the current node",
                                node.address,
                                s.slot,
                                wall.as_secs_f64()
                            );
                        }
                        return Ok(());
                    }
                    Ok(other) => bail!("unexpected answer to status: {other:?}"),
                    Err(e) => {
                        let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
                        if !alive || started.elapsed() > deadline {
                            let why = if alive {
                                "did not answer in time"
                            } else {
                                "QEMU exited"
                            };
                            bail!(
                                "local device `{name}` {why} (last error: {e:#}); console:\n{}",
                                qemu::console_tail(&name, 30)
                            );
                        }
                        std::thread::sleep(Duration::from_millis(250));
                    }
                }
            }
        }
        QemuCommand::Down { name } => {
            let Some(pid) = qemu::running_pid(&name) else {
                println!("local device `{name}` is not running");
                return Ok(());
            };
            let config = CliConfig::load(config_path)?;
            let asked = config
                .context(context)
                .and_then(|(_, ctx)| Ok((ctx.clone(), ctx.node(Some(&name))?)))
                .and_then(|(ctx, node)| super::cli::call(&ctx, &node, Request::Poweroff));
            let clean = asked.is_ok() && qemu::wait_exit(pid, Duration::from_secs(60));
            if !clean {
                qemu::kill(pid)?;
            }
            println!(
                "local device `{name}` stopped ({})",
                if clean { "powered off" } else { "killed" }
            );
            Ok(())
        }
    }
}
