//! Command-line interface of `outpost`.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use super::client::Client;
use super::context::{CliConfig, Context};
use super::{linkemu, local, pki, remote};
use crate::wire::{self, Request, Response};

#[derive(Parser)]
#[command(
    name = "outpost",
    version,
    about = "Build, flash and manage Outpost edge devices"
)]
pub struct Cli {
    /// Node to talk to (a name from the current context).
    #[arg(short = 'n', long, global = true, env = "OUTPOST_NODE")]
    pub node: Option<String>,
    /// Context to use instead of the current one.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// CLI config file.
    #[arg(long, global = true, env = "OUTPOST_CONFIG")]
    pub config: Option<PathBuf>,
    /// Talk to the device over this serial line (a tty such as /dev/ttyUSB0 or
    /// /dev/pts/N, or a Unix socket) instead of TCP. The device's name comes
    /// from --server-name, else from the node (-n NODE or the current one).
    #[arg(long, global = true, value_name = "PATH")]
    pub serial: Option<PathBuf>,
    /// Name the device's certificate must carry, for --serial when no node
    /// of the context describes the device.
    #[arg(long, global = true, value_name = "NAME")]
    pub server_name: Option<String>,
    /// Reach the device through this MQTT broker (`mqtts://HOST:PORT`):
    /// for boards that call home (docs/callhome.md). `-n` names the device.
    #[arg(long, global = true, value_name = "URL", env = "OUTPOST_BROKER")]
    pub broker: Option<String>,
    /// Through a broker: seconds a command stays valid; a board that is away
    /// longer does not run it when it calls back.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 300)]
    pub expires: u64,
    /// Through a broker: encrypt every command and its answer to the
    /// device's seal key, so the broker cannot read them (also `seal = true`
    /// in the context). Not with `fleet --group`.
    #[arg(long, global = true)]
    pub seal: bool,
    /// Output format (also accepted after each device command).
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<Format>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// `-o text|json` after a subcommand. (Not a global flag: `image build -o`
/// names the output file, as operators expect.)
#[derive(Args, Clone, Copy)]
pub struct FormatArg {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum)]
    pub output: Option<Format>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Generate site PKI, device identities and client certificates.
    #[command(subcommand)]
    Gen(GenCommand),
    /// Build OS images and personalize them for one device.
    #[command(subcommand)]
    Image(super::image_cmd::ImageCommand),
    /// Write an image onto an SD card (or a file): only the blocks its bmap
    /// maps, read back and checked; refuses disks that look wrong.
    Flash(super::flash::FlashArgs),
    /// Build signed OS bundles for over-the-air upgrades.
    #[command(subcommand)]
    Bundle(local::BundleCommand),
    /// Run local devices in QEMU.
    #[command(subcommand)]
    Qemu(local::QemuCommand),
    /// Many devices at once through the broker (--broker or the context's):
    /// one command to a group or a list, answers collected until a timeout.
    Fleet(FleetArgs),
    /// Staged upgrades in waves through the broker (docs/callhome.md).
    #[command(subcommand)]
    Rollout(RolloutCommand),
    #[command(flatten)]
    Device(remote::DeviceCommand),
    /// A loopback link emulator (latency, bandwidth, cuts) for trials by hand.
    #[command(hide = true)]
    Linkemu(linkemu::LinkemuArgs),
    /// Copy stdin/stdout to a TCP connection (QEMU's `guestfwd=…-cmd:` runs
    /// one per guest connection: `qemu up --broker-port`).
    #[command(hide = true)]
    Relay { addr: String },
}

#[derive(Args)]
pub struct FleetArgs {
    #[command(subcommand)]
    pub what: FleetCommand,
    /// Every board of this `[callhome] groups` entry (one publish).
    #[arg(long, global = true)]
    pub group: Option<String>,
    /// These boards, by hostname: `a,b,c` (who did not answer is listed).
    #[arg(long, global = true, value_name = "A,B,...")]
    pub devices: Option<String>,
    /// The boards this label names in the context's `labels` inventory.
    #[arg(long, global = true)]
    pub label: Option<String>,
    /// Seconds to collect answers.
    #[arg(long, global = true, default_value_t = 10)]
    pub timeout: u64,
    /// Seconds after the timeout in which answers still count, as late.
    #[arg(long, global = true, default_value_t = 5)]
    pub grace: u64,
}

#[derive(Subcommand)]
pub enum RolloutCommand {
    /// Upgrade the selected boards to BUNDLE in waves; runs until the last
    /// wave is done or the rollout aborts (exit status 1).
    Start(RolloutStart),
    /// Progress of the last rollout, per wave and per device (from the
    /// state file; works from another shell while it runs). A rollout whose
    /// process is gone shows as `interrupted`.
    Status(FormatArg),
    /// Stop the running rollout: no further board starts, boards in flight
    /// finish, later waves are skipped. Works on an interrupted one too.
    Abort {
        /// Why (recorded in the state file with who aborted).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Continue an interrupted rollout (its process died) with the same
    /// bundle and parameters: outcomes stay, boards that were in flight
    /// are re-checked, the remaining waves follow.
    Resume(FormatArg),
}

#[derive(Args)]
pub struct RolloutStart {
    /// A bundle from `outpost bundle build`.
    pub bundle: PathBuf,
    /// Every board of this group that answers a status within
    /// --discover seconds (boards away then are not in the rollout).
    #[arg(long)]
    pub group: Option<String>,
    /// These boards, in this order: `a,b,c`.
    #[arg(long, value_name = "A,B,...")]
    pub devices: Option<String>,
    /// The boards this label names in the context's `labels` inventory.
    #[arg(long)]
    pub label: Option<String>,
    /// Cumulative percentages of the boards, ascending, ending at 100.
    #[arg(long, value_delimiter = ',', default_value = "10,50,100")]
    pub waves: Vec<u8>,
    /// Each wave has at least this many boards (if there are that many).
    #[arg(long, default_value_t = 1)]
    pub min_per_wave: usize,
    /// Seconds a good wave soaks; then each of its boards that succeeded
    /// is asked again (still committed on the new version, same slot) and
    /// one that fell back counts as failed, before the next wave starts.
    #[arg(long, default_value_t = 300)]
    pub soak: u64,
    /// Percent of a wave that must succeed to go on.
    #[arg(long, default_value_t = 90.0)]
    pub success_threshold: f64,
    /// Abort when more than this percent of the outcomes so far failed ...
    #[arg(long, default_value_t = 10.0)]
    pub abort_after_failures: f64,
    /// ... once at least this many outcomes are in.
    #[arg(long, default_value_t = 10)]
    pub min_sample: usize,
    /// Seconds a board has from the start of its upload to be back
    /// committed on the new version (and to answer its soak re-check);
    /// later is a failure.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
    /// Boards upgraded at once.
    #[arg(long, default_value_t = 20)]
    pub parallel: usize,
    /// Allow a downgrade.
    #[arg(long)]
    pub force: bool,
    /// Seconds to collect the group's answers (--group).
    #[arg(long, default_value_t = 10)]
    pub discover: u64,
    #[command(flatten)]
    pub format: FormatArg,
}

#[derive(Subcommand, Clone)]
pub enum FleetCommand {
    /// Identity, slot, version, uptime of each board.
    Status,
    /// One round trip to each board.
    Ping,
    /// Who is online, from what the boards left retained on the broker
    /// (no traffic to any board): every board, or --devices / --label.
    List,
    /// The site revocation list each board holds; with --install, give
    /// them all a newer one (SITE/crl.pem, from `outpost gen revoke`).
    Revocations {
        #[arg(long, value_name = "CRL_PEM")]
        install: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum GenCommand {
    /// Create a site: CA, admin client certificate, and a CLI context.
    Site {
        dir: PathBuf,
        /// Site name (default: the directory's name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Create a device identity and machine config in a site.
    Device {
        #[arg(long)]
        site: PathBuf,
        #[arg(long)]
        hostname: String,
        #[arg(long, default_value_t = wire::DEFAULT_API_PORT)]
        api_port: u16,
    },
    /// A mosquitto config for boards that call home: broker certificate
    /// from the site CA, client certificates required, per-board ACLs
    /// (run it with `mosquitto -c DIR/mosquitto.conf`).
    Broker {
        #[arg(long)]
        site: PathBuf,
        /// Where mosquitto.conf and the ACL go.
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "0.0.0.0")]
        listen: String,
        #[arg(long, default_value_t = crate::config::callhome::MQTTS_PORT)]
        port: u16,
        /// A name or IP address boards dial (repeat for several).
        #[arg(long, required = true)]
        san: Vec<String>,
        /// An operator (client certificate name) allowed to reach every board.
        #[arg(long, default_value = "admin")]
        operator: Vec<String>,
    },
    /// Issue an operator client certificate with a role.
    Client {
        #[arg(long)]
        site: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "reader")]
        role: String,
    },
    /// Revoke a certificate: put it on the site's revocation list, which the
    /// CA signs into SITE/crl.pem. Boards refuse it once they hold the list
    /// (`outpost revocations --install SITE/crl.pem`; images built afterwards
    /// carry it); a broker refuses it with `crlfile` (docs/callhome.md).
    Revoke {
        #[arg(long)]
        site: PathBuf,
        /// An operator certificate of the site, by name (SITE/clients/NAME.crt).
        #[arg(long, required_unless_present = "cert", conflicts_with = "cert")]
        client: Option<String>,
        /// Any certificate the site CA issued, as a PEM file.
        #[arg(long)]
        cert: Option<PathBuf>,
    },
}

pub fn run(cli: Cli) -> Result<()> {
    let config_path = cli.config.clone().unwrap_or_else(CliConfig::default_path);
    let top = cli.output.unwrap_or(Format::Text);
    match cli.command {
        Command::Gen(cmd) => gen(cmd, &config_path),
        Command::Image(cmd) => super::image_cmd::run(cmd, top),
        Command::Flash(args) => super::flash::run(args, top),
        Command::Bundle(cmd) => local::bundle(cmd, top),
        Command::Qemu(cmd) => local::qemu(cmd, &config_path, cli.context.as_deref(), top),
        Command::Linkemu(args) => linkemu::run(&args),
        Command::Relay { addr } => relay(&addr),
        Command::Fleet(args) => {
            let config = CliConfig::load(&config_path)?;
            let (_, ctx) = config.context(cli.context.as_deref())?;
            let url = broker_url(&cli.broker, ctx, "fleet commands")?;
            let devices = match &args.label {
                Some(l) => Some(labelled(ctx, l, args.devices.is_some())?),
                None => args.devices.clone(),
            };
            let tls = super::client::client_config(&ctx.ca, &ctx.cert, &ctx.key)?;
            let crl = match &args.what {
                FleetCommand::Revocations {
                    install: Some(path),
                } => super::revoke::read_crl(path)?,
                _ => Vec::new(),
            };
            let request = match &args.what {
                FleetCommand::Status => Request::Status,
                FleetCommand::Ping => Request::Ping,
                FleetCommand::Revocations { install: None } => Request::Revocations,
                FleetCommand::Revocations { install: Some(_) } => {
                    Request::InstallRevocations { crl: &crl }
                }
                FleetCommand::List => {
                    if args.group.is_some() {
                        anyhow::bail!(
                            "fleet list reads presence, which does not name groups: give --devices or --label"
                        );
                    }
                    let only = match devices {
                        Some(d) => match super::fleet::selection(None, Some(d))? {
                            super::fleet::Selection::Devices(list) => Some(list),
                            super::fleet::Selection::Group(_) => None,
                        },
                        None => None,
                    };
                    let roster = super::presence::collect(
                        &url,
                        tls,
                        &ctx.ca,
                        only.as_deref(),
                        std::time::Duration::from_secs(args.timeout),
                    )?;
                    return super::output::presence(&roster, top);
                }
            };
            let who = super::fleet::selection(args.group.clone(), devices)?;
            let operator = super::broker::Operator::load(&ctx.cert, &ctx.key)?;
            let mut fan = fan_out(&url, tls, ctx, operator, cli.seal)?;
            if !crl.is_empty() {
                fan.retain_site_crl(&crl)?;
            }
            let report = fan.run(
                &who,
                request,
                std::time::Duration::from_secs(cli.expires),
                std::time::Duration::from_secs(args.timeout),
                std::time::Duration::from_secs(args.grace),
            )?;
            super::output::fleet(&report, top)
        }
        Command::Rollout(RolloutCommand::Status(f)) => {
            let config = CliConfig::load(&config_path)?;
            let (name, _) = config.context(cli.context.as_deref())?;
            super::rollout_cmd::status(
                &super::rollout_cmd::state_path(name),
                f.output.unwrap_or(top),
            )
        }
        Command::Rollout(RolloutCommand::Abort { reason, format }) => {
            let config = CliConfig::load(&config_path)?;
            let (name, _) = config.context(cli.context.as_deref())?;
            super::rollout_cmd::abort(
                &super::rollout_cmd::state_path(name),
                reason,
                format.output.unwrap_or(top),
            )
        }
        Command::Rollout(RolloutCommand::Resume(f)) => {
            let config = CliConfig::load(&config_path)?;
            let (ctx_name, ctx) = config.context(cli.context.as_deref())?;
            super::rollout_cmd::resume(
                broker_url(&cli.broker, ctx, "rollouts")?,
                ctx,
                &super::rollout_cmd::state_path(ctx_name),
                f.output.unwrap_or(top),
            )
        }
        Command::Rollout(RolloutCommand::Start(args)) => {
            let config = CliConfig::load(&config_path)?;
            let (ctx_name, ctx) = config.context(cli.context.as_deref())?;
            let url = broker_url(&cli.broker, ctx, "rollouts")?;
            let format = args.format.output.unwrap_or(top);
            let expiry = std::time::Duration::from_secs(cli.expires);
            let mut ctx = ctx.clone();
            ctx.seal |= cli.seal;
            let ctx = &ctx;
            let names = rollout_devices(ctx, &url, &args, expiry)?;
            for (what, v) in [
                ("--success-threshold", args.success_threshold),
                ("--abort-after-failures", args.abort_after_failures),
            ] {
                if !(0.0..=100.0).contains(&v) {
                    anyhow::bail!("{what} {v}: a percentage, 0 to 100");
                }
            }
            let plan = super::rollout_cmd::Plan {
                bundle: args.bundle.clone(),
                policy: super::rollout::Policy {
                    waves: args.waves.clone(),
                    min_per_wave: args.min_per_wave,
                    soak: std::time::Duration::from_secs(args.soak),
                    success_threshold: args.success_threshold / 100.0,
                    abort_failure_rate: args.abort_after_failures / 100.0,
                    min_sample: args.min_sample,
                    device_timeout: std::time::Duration::from_secs(args.timeout),
                },
                parallel: args.parallel,
                force: args.force,
                expiry,
            };
            super::rollout_cmd::start(
                names,
                plan,
                url,
                ctx,
                &super::rollout_cmd::state_path(ctx_name),
                format,
            )
        }
        Command::Device(cmd) => {
            let config = CliConfig::load(&config_path)?;
            let (_, ctx) = config.context(cli.context.as_deref())?;
            if let Some(path) = &cli.serial {
                let name = serial_server_name(ctx, cli.node.as_deref(), cli.server_name)?;
                // One TLS config: a reconnect on the line resumes the session.
                let tls = super::client::client_config(&ctx.ca, &ctx.cert, &ctx.key)?;
                let mut connect = || connect_serial(&tls, path, &name);
                return remote::run(cmd, &mut connect, &name, top);
            }
            if let Some(url) = cli.broker.clone().or_else(|| ctx.broker.clone()) {
                let device = broker_device(ctx, cli.node.as_deref())?;
                let url = super::broker::BrokerUrl::parse(&url)?;
                let tls = super::client::client_config(&ctx.ca, &ctx.cert, &ctx.key)?;
                let expiry = std::time::Duration::from_secs(cli.expires);
                let seal = cli.seal || ctx.seal;
                let mut connect = || {
                    let operator = super::broker::Operator::load(&ctx.cert, &ctx.key)?;
                    let mut link = super::broker::DeviceLink::connect(
                        &url,
                        tls.clone(),
                        &ctx.ca,
                        operator,
                        &device,
                        expiry,
                    )
                    .with_context(|| format!("broker {}:{}", url.host, url.port))?;
                    link.set_seal(seal);
                    Ok(Client::via_broker(link))
                };
                return remote::run(cmd, &mut connect, &device, top);
            }
            let node = ctx.node(cli.node.as_deref())?;
            // One TLS config for all connections of this command, so a
            // reconnect (an upload after a cut) resumes the TLS session.
            let tls = super::client::client_config(&ctx.ca, &ctx.cert, &ctx.key)?;
            let mut connect = || {
                Client::connect_with(tls.clone(), &node)
                    .with_context(|| format!("connecting to {}", node.address))
            };
            remote::run(cmd, &mut connect, &node.server_name, top)
        }
    }
}

/// A fan-out, sealed with `--seal` or the context's `seal = true`.
fn fan_out(
    url: &super::broker::BrokerUrl,
    tls: std::sync::Arc<rustls::ClientConfig>,
    ctx: &Context,
    operator: super::broker::Operator,
    seal: bool,
) -> Result<super::fleet::FanOut> {
    if seal || ctx.seal {
        super::fleet::FanOut::connect_sealed(url, tls, &ctx.ca, operator)
    } else {
        super::fleet::FanOut::connect(url, tls, &ctx.ca, operator)
    }
}

/// The broker `what` goes through: `--broker`, else the context's `broker`.
fn broker_url(
    flag: &Option<String>,
    ctx: &Context,
    what: &str,
) -> Result<super::broker::BrokerUrl> {
    let url = flag
        .clone()
        .or_else(|| ctx.broker.clone())
        .with_context(|| format!("{what} go through a broker: give --broker URL"))?;
    super::broker::BrokerUrl::parse(&url)
}

/// `--label L`: the context's inventory names the devices (never together
/// with `--devices`).
fn labelled(ctx: &Context, label: &str, also_devices: bool) -> Result<String> {
    if also_devices {
        anyhow::bail!("give --label or --devices, not both");
    }
    let names = ctx.labelled(label);
    if names.is_empty() {
        anyhow::bail!("no device carries label `{label}` in this context's `labels`");
    }
    Ok(names.join(","))
}

/// The boards of a rollout: a list, a label, or the group's members that
/// answer a status now.
fn rollout_devices(
    ctx: &Context,
    url: &super::broker::BrokerUrl,
    args: &RolloutStart,
    expiry: std::time::Duration,
) -> Result<Vec<String>> {
    let devices = match &args.label {
        Some(l) => Some(labelled(ctx, l, args.devices.is_some())?),
        None => args.devices.clone(),
    };
    match super::fleet::selection(args.group.clone(), devices)? {
        super::fleet::Selection::Devices(list) => Ok(list),
        who @ super::fleet::Selection::Group(_) => {
            let tls = super::client::client_config(&ctx.ca, &ctx.cert, &ctx.key)?;
            let operator = super::broker::Operator::load(&ctx.cert, &ctx.key)?;
            let mut fan = fan_out(url, tls, ctx, operator, false)?;
            let report = fan.run(
                &who,
                Request::Status,
                expiry,
                std::time::Duration::from_secs(args.discover),
                std::time::Duration::ZERO,
            )?;
            let names: Vec<String> = report
                .answers
                .into_iter()
                .filter(|(_, a)| a.body.is_ok())
                .map(|(d, _)| d)
                .collect();
            if names.is_empty() {
                anyhow::bail!("no board of the group answered within {} s", args.discover);
            }
            Ok(names)
        }
    }
}

/// The device a broker command is for: a node's name in the context (its
/// certificate name), else `-n NAME` itself (a board that only calls home
/// needs no address).
fn broker_device(ctx: &Context, node: Option<&str>) -> Result<String> {
    let name = node.unwrap_or(&ctx.current_node);
    if name.is_empty() {
        anyhow::bail!("through a broker, name the device: -n DEVICE");
    }
    Ok(ctx
        .nodes
        .get(name)
        .map(|n| n.server_name.clone())
        .unwrap_or_else(|| name.to_owned()))
}

/// The name the device's certificate must carry, for a serial session: the
/// explicit `--server-name`, else the node's (`-n NODE` or the current node).
fn serial_server_name(
    ctx: &Context,
    node: Option<&str>,
    explicit: Option<String>,
) -> Result<String> {
    if let Some(name) = explicit {
        return Ok(name);
    }
    ctx.node(node).map(|n| n.server_name).context(
        "--serial needs the device's name: give --server-name NAME (its hostname) or -n NODE",
    )
}

/// A new link session and TLS session on the serial line at `path`.
fn connect_serial(
    tls: &std::sync::Arc<rustls::ClientConfig>,
    path: &std::path::Path,
    server_name: &str,
) -> Result<Client> {
    let line = super::serial::SerialTransport::open(path)?;
    Client::over(tls.clone(), server_name, Box::new(line))
        .with_context(|| format!("TLS session over {} with {server_name}", path.display()))
}

fn gen(cmd: GenCommand, config_path: &std::path::Path) -> Result<()> {
    match cmd {
        GenCommand::Site { dir, name } => {
            let name = match name {
                Some(n) => n,
                None => dir
                    .canonicalize()
                    .unwrap_or_else(|_| dir.clone())
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "site".into()),
            };
            let site = pki::Site::create(&dir, &name)?;
            let abs = site.dir.canonicalize()?;
            let (cert, key) = pki::Site {
                dir: abs.clone(),
                name: name.clone(),
                created: site.created,
            }
            .client_paths("admin");
            let mut config = CliConfig::load(config_path)?;
            let ctx = Context {
                ca: abs.join("ca.crt"),
                cert,
                key,
                current_node: String::new(),
                nodes: Default::default(),
                broker: None,
                labels: Default::default(),
                seal: false,
            };
            config.contexts.insert(name.clone(), ctx);
            config.current_context = name.clone();
            config.save(config_path)?;
            println!(
                "site `{name}` created in {}; context `{name}` is now current ({})",
                abs.display(),
                config_path.display()
            );
            Ok(())
        }
        GenCommand::Device {
            site,
            hostname,
            api_port,
        } => {
            let dir = pki::Site::open(&site)?.issue_device(&hostname, api_port)?;
            println!(
                "device `{hostname}`: identity and machine config in {}",
                dir.display()
            );
            Ok(())
        }
        GenCommand::Broker {
            site,
            dir,
            listen,
            port,
            san,
            operator,
        } => {
            let conf = super::mosquitto::write_config(
                &pki::Site::open(&site)?,
                &dir,
                &super::mosquitto::BrokerSpec {
                    listen: &listen,
                    port,
                    sans: &san,
                    operators: &operator,
                },
            )?;
            println!("broker config: mosquitto -c {}", conf.display());
            Ok(())
        }
        GenCommand::Client { site, name, role } => {
            let (crt, key) = pki::Site::open(&site)?.issue_client(&name, &role)?;
            println!(
                "client `{name}` ({role}): {} {}",
                crt.display(),
                key.display()
            );
            Ok(())
        }
        GenCommand::Revoke { site, client, cert } => {
            let site = pki::Site::open(&site)?;
            let done = match (client, cert) {
                (Some(name), _) => super::revoke::revoke_client(&site, &name)?,
                (None, Some(path)) => {
                    let pem = super::debian::read_small(&path, 64 * 1024)?;
                    super::revoke::revoke(&site, pem.as_bytes(), &path.display().to_string())?
                }
                (None, None) => anyhow::bail!("give --client NAME or --cert FILE"),
            };
            println!(
                "{} (serial {}) {} the revocation list: {} ({} certificate{}); \
                 give it to the boards with `outpost revocations --install {}`",
                done.entry.what,
                done.entry.serial,
                if done.added {
                    "put on"
                } else {
                    "was already on"
                },
                done.crl.display(),
                done.count,
                if done.count == 1 { "" } else { "s" },
                done.crl.display()
            );
            Ok(())
        }
    }
}

/// Used by `qemu up`/`down`: one request to a node, with its context.
pub(crate) fn call(
    ctx: &Context,
    node: &super::context::Node,
    request: Request<'_>,
) -> Result<Response> {
    Client::connect(ctx, node)?.call(request)
}

/// stdin → `addr`, `addr` → stdout, until either side ends.
fn relay(addr: &str) -> Result<()> {
    let tcp =
        std::net::TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    tcp.set_nodelay(true)?;
    let mut up = tcp.try_clone()?;
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut up);
        let _ = up.shutdown(std::net::Shutdown::Write);
    });
    let mut down = tcp;
    let mut out = std::io::stdout().lock();
    let mut buf = [0u8; 16 * 1024];
    loop {
        use std::io::{Read, Write};
        let n = down.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        out.write_all(buf.get(..n).unwrap_or_default())?;
        out.flush()?;
    }
}
