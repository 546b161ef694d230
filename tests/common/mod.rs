//! What the integration tests share: the `outpost` CLI in a temp dir
//! ([`Cli`]), QEMU devices it starts ([`QemuGuard`], [`skip_qemu`],
//! [`init_binary`], [`image_build`]) and `outpost-init --host-mode` devices
//! ([`HostDevice`], [`stage_data`]). Each test crate says `mod common;` and
//! uses a part of it.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use outpost::host::client::client_config;
use outpost::host::context::Node;
use outpost::host::pki::Site;

/// Lines of a QEMU console shown when something fails.
const CONSOLE_TAIL: usize = 40;

/// The repository (boards/, target/).
pub(crate) fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// OUTPOST_SKIP_QEMU is set: the caller leaves its QEMU test out.
pub(crate) fn skip_qemu() -> bool {
    if std::env::var_os("OUTPOST_SKIP_QEMU").is_some() {
        eprintln!(
            "OUTPOST_SKIP_QEMU is set: QEMU test {} left out",
            env!("CARGO_CRATE_NAME")
        );
        return true;
    }
    false
}

/// The repository's boards in `env`'s own boards dir (its CLI reads them
/// there), with each `(from, to)` of `edits` made once in qemu-virt.toml;
/// a `from` the file no longer has fails the test, naming it.
pub(crate) fn boards_with_qemu_virt_edits(env: &Cli, edits: &[(&str, &str)]) {
    let dir = env.path("boards");
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(repo().join("boards")).unwrap().flatten() {
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    let p = dir.join("qemu-virt.toml");
    let mut text = std::fs::read_to_string(&p).unwrap();
    for (from, to) in edits {
        assert!(
            text.contains(from),
            "qemu-virt.toml changed ({from:?}): update this test"
        );
        text = text.replacen(from, to, 1);
    }
    std::fs::write(p, text).unwrap();
}

/// outpost-init for the device, as `scripts/build-init` leaves it.
pub(crate) fn init_binary() -> PathBuf {
    let p = repo().join("target/aarch64-unknown-linux-musl/release/outpost-init");
    assert!(
        p.exists(),
        "{} is missing: run scripts/build-init (or set OUTPOST_SKIP_QEMU=1)",
        p.display()
    );
    p
}

/// `outpost image build` of `hostname` from `site` for the QEMU board, to
/// `out`, with `init`; callers add options (`--version`) to the end.
pub(crate) fn image_build<'a>(
    site: &'a str,
    hostname: &'a str,
    out: &'a str,
    init: &'a str,
) -> Vec<&'a str> {
    vec![
        "image",
        "build",
        "--board",
        "qemu-virt",
        "--site",
        site,
        "--hostname",
        hostname,
        "-o",
        out,
        "--init",
        init,
    ]
}

/// The `outpost` CLI with its config and state in a temp dir of its own.
pub(crate) struct Cli {
    tmp: tempfile::TempDir,
}

impl Cli {
    pub(crate) fn new() -> Self {
        Self {
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    pub(crate) fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    /// `gen site` (at `site` here, named `name`) and `gen device HOSTNAME`
    /// in it: the site's directory.
    pub(crate) fn site_with_device(&self, name: &str, hostname: &str) -> PathBuf {
        let site = self.path("site");
        let s = site.to_str().unwrap();
        self.ok(&["gen", "site", s, "--name", name]);
        self.ok(&["gen", "device", "--site", s, "--hostname", hostname]);
        site
    }

    /// An image (`NAME.img` here) of `hostname` of a new site `name`, whose
    /// machine config has these network links.
    pub(crate) fn image_with_links(
        &self,
        name: &str,
        hostname: &str,
        links: Vec<outpost::config::network::LinkConfig>,
    ) -> PathBuf {
        use outpost::config::MachineConfig;
        let site_dir = self.site_with_device(name, hostname);
        let machine = Site::open(&site_dir)
            .unwrap()
            .device_dir(hostname)
            .join("machine.toml");
        let text = std::fs::read_to_string(&machine).unwrap();
        let mut config = MachineConfig::from_toml(&text).unwrap();
        config.network.links = links;
        std::fs::write(&machine, config.to_toml()).unwrap();
        let img = self.path(&format!("{name}.img"));
        let init = init_binary();
        self.ok(&image_build(
            site_dir.to_str().unwrap(),
            hostname,
            img.to_str().unwrap(),
            init.to_str().unwrap(),
        ));
        img
    }

    /// `bundle build` of `version` with `init`, signed by `site`: its path
    /// (`v<version>.bundle` here).
    pub(crate) fn bundle(&self, site: &str, version: &str, init: &str) -> PathBuf {
        let out = self.path(&format!("v{version}.bundle"));
        self.ok(&[
            "bundle",
            "build",
            "--site",
            site,
            "--version",
            version,
            "-o",
            out.to_str().unwrap(),
            "--init",
            init,
        ]);
        out
    }

    /// `outpost ARGS` with this CLI's config and state; nothing from the
    /// caller's environment chooses the node or the boards.
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_outpost"));
        cmd.args(args)
            .env("OUTPOST_CONFIG", self.path("cli.toml"))
            .env("OUTPOST_STATE", self.path("state"))
            .env_remove("OUTPOST_NODE")
            .env_remove("OUTPOST_BROKER")
            .env_remove("OUTPOST_BOARDS");
        // A test that writes its own board definitions into `boards/` here
        // (e.g. a copy without a module QEMU cannot take) gets them.
        if self.path("boards").is_dir() {
            cmd.env("OUTPOST_BOARDS", self.path("boards"));
        }
        cmd
    }

    pub(crate) fn outpost(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Stdout of a run that must succeed; on failure, its output and the
    /// console tail of every QEMU device this CLI started.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let out = self.outpost(args);
        assert!(
            out.status.success(),
            "outpost {args:?} failed:\n{}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.consoles()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `outpost -o json ARGS`, which must succeed.
    pub(crate) fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut full = vec!["-o", "json"];
        full.extend_from_slice(args);
        serde_json::from_str(&self.ok(&full)).unwrap()
    }

    /// `status` once the device answers with a boot id other than
    /// `boot_id` (after a reboot), polling every 2 s up to `limit`.
    pub(crate) fn status_after_reboot(&self, boot_id: &str, limit: Duration) -> serde_json::Value {
        let start = Instant::now();
        loop {
            assert!(
                start.elapsed() < limit,
                "device did not come back after reboot{}",
                self.consoles()
            );
            std::thread::sleep(Duration::from_secs(2));
            let out = self.outpost(&["-o", "json", "status"]);
            if out.status.success() {
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                if v["Status"]["boot_id"]
                    .as_str()
                    .is_some_and(|id| id != boot_id)
                {
                    return v["Status"].clone();
                }
            }
        }
    }

    /// Site `site_name` (made on first use), device `hostname` in it, and
    /// its image `HOSTNAME.img` for the QEMU board: an operator's steps.
    pub(crate) fn qemu_image(&self, site_name: &str, hostname: &str) -> PathBuf {
        self.board_image(site_name, hostname, "qemu-virt")
    }

    /// As [`Cli::qemu_image`], for `board`.
    pub(crate) fn board_image(&self, site_name: &str, hostname: &str, board: &str) -> PathBuf {
        let init = init_binary();
        let site = self.path("site");
        let site_s = site.to_str().unwrap();
        if !site.exists() {
            self.ok(&["gen", "site", site_s, "--name", site_name]);
        }
        self.ok(&["gen", "device", "--site", site_s, "--hostname", hostname]);
        let img = self.path(&format!("{hostname}.img"));
        let mut args = image_build(
            site_s,
            hostname,
            img.to_str().unwrap(),
            init.to_str().unwrap(),
        );
        args[3] = board;
        self.ok(&args);
        img
    }

    /// The console log of the QEMU device `name` ("" before it started).
    pub(crate) fn console(&self, name: &str) -> String {
        read_lossy(&self.path(&format!("state/qemu/{name}/console.log")))
    }

    /// The last `n` lines of [`Cli::console`].
    pub(crate) fn console_tail(&self, name: &str, n: usize) -> String {
        tail(&self.console(name), n)
    }

    pub(crate) fn consoles(&self) -> String {
        let Ok(dirs) = std::fs::read_dir(self.path("state/qemu")) else {
            return String::new();
        };
        let mut out = String::new();
        for dir in dirs.flatten() {
            let name = dir.file_name().to_string_lossy().into_owned();
            out += &format!(
                "\nconsole of {name}:\n{}",
                self.console_tail(&name, CONSOLE_TAIL)
            );
        }
        out
    }
}

/// The file as text; "" if it cannot be read.
pub(crate) fn read_lossy(p: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned()
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Kills the QEMU device `name` (by its pid file) when the test ends early,
/// and shows its console tail if the test panicked.
pub(crate) struct QemuGuard {
    dir: PathBuf,
}

impl QemuGuard {
    pub(crate) fn new(cli: &Cli, name: &str) -> Self {
        Self {
            dir: cli.path(&format!("state/qemu/{name}")),
        }
    }
}

impl Drop for QemuGuard {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("qemu.pid")) {
            let _ = Command::new("kill").arg("-9").arg(pid.trim()).status();
        }
        if std::thread::panicking() {
            let console = read_lossy(&self.dir.join("console.log"));
            eprintln!(
                "--- console (last lines) ---\n{}",
                tail(&console, CONSOLE_TAIL)
            );
        }
    }
}

/// Arrange DATA as the image builder does: identity/ and config/.
pub(crate) fn stage_data(site: &Site, hostname: &str, data: &Path) {
    let dev = site.device_dir(hostname);
    std::fs::create_dir_all(data.join("identity")).unwrap();
    std::fs::create_dir_all(data.join("config")).unwrap();
    std::fs::copy(dev.join("device.crt"), data.join("identity/device.crt")).unwrap();
    std::fs::copy(dev.join("device.key"), data.join("identity/device.key")).unwrap();
    std::fs::copy(site.ca_cert(), data.join("identity/ca.crt")).unwrap();
    std::fs::copy(dev.join("machine.toml"), data.join("config/machine.toml")).unwrap();
}

/// Append `text` (TOML) to the machine config staged in `data`.
pub(crate) fn add_to_machine_config(data: &Path, text: &str) {
    let machine = data.join("config/machine.toml");
    let mut config = std::fs::read_to_string(&machine).unwrap();
    config.push_str(text);
    std::fs::write(&machine, config).unwrap();
}

/// The host-mode device's name.
pub(crate) const HOSTNAME: &str = "edge-1";

/// `outpost-init --host-mode` as device `edge-1`: DATA staged in the
/// temp dir of a [`Cli`] (`data/`), the API on a free 127.0.0.1 port.
/// Killed when dropped.
pub(crate) struct HostDevice {
    child: Option<Child>,
    /// Options after `--host-mode --data DATA --listen ADDR`.
    args: Vec<String>,
    /// Stderr goes to `device.log` (shown if the test panics), else nowhere.
    log: bool,
    pub(crate) data: PathBuf,
    pub(crate) node: Node,
    pub(crate) port: u16,
    pub(crate) site: Site,
    /// Last: its temp dir goes after the process.
    pub(crate) cli: Cli,
}

impl HostDevice {
    /// `edge-1` of a new site `site_name` (made with the library); not
    /// started yet.
    pub(crate) fn new(site_name: &str) -> Self {
        let cli = Cli::new();
        let site = Site::create(&cli.path("site"), site_name).unwrap();
        site.issue_device(HOSTNAME, 50000).unwrap();
        Self::of(cli, site)
    }

    /// `edge-1` of `site`, which already has it; DATA under `cli`'s dir.
    pub(crate) fn of(cli: Cli, site: Site) -> Self {
        let data = cli.path("data");
        stage_data(&site, HOSTNAME, &data);
        let port = outpost::host::qemu::free_port().unwrap();
        Self {
            child: None,
            args: Vec::new(),
            log: false,
            data,
            node: Node {
                address: format!("127.0.0.1:{port}"),
                server_name: HOSTNAME.into(),
            },
            port,
            site,
            cli,
        }
    }

    pub(crate) fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    pub(crate) fn log_to_file(mut self) -> Self {
        self.log = true;
        self
    }

    pub(crate) fn start(mut self) -> Self {
        self.spawn();
        self
    }

    /// Start the process and wait until it listens. Its port was free when
    /// chosen, but a port a killed device gave back can be taken by another
    /// test process (scripts/test-pool runs several) before the restart:
    /// then the device exits at once (the API cannot bind), and it gets a
    /// new port (and the CLI's config, if written, the new address).
    pub(crate) fn spawn(&mut self) {
        for _ in 0..5 {
            if self.spawn_once() {
                return;
            }
            eprintln!("{} was taken; moving the device", self.node.address);
            self.port = outpost::host::qemu::free_port().unwrap();
            self.node.address = format!("127.0.0.1:{}", self.port);
            if self.cli.path("cli.toml").exists() {
                self.write_cli_config();
            }
        }
        panic!("device did not listen on any of 5 ports");
    }

    /// One start; false if the process exited (its port was taken).
    fn spawn_once(&mut self) -> bool {
        let stderr = if self.log {
            Stdio::from(File::create(self.cli.path("device.log")).unwrap())
        } else {
            Stdio::null()
        };
        let child = Command::new(env!("CARGO_BIN_EXE_outpost-init"))
            .args(["--host-mode", "--data"])
            .arg(&self.data)
            .args(["--listen", &self.node.address])
            .args(&self.args)
            .stderr(stderr)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if self.try_wait().is_some() {
                self.child = None;
                return false;
            }
            if TcpStream::connect(&self.node.address).is_ok() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "device did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // What answered may be another process on a taken port, with ours
        // about to fail its bind: still running a moment later means ours.
        std::thread::sleep(Duration::from_millis(200));
        if self.try_wait().is_some() {
            self.child = None;
            return false;
        }
        true
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process's exit status, if it has exited.
    pub(crate) fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().unwrap().try_wait().unwrap()
    }

    /// A fresh TLS config (no session to resume yet) for client `name`.
    pub(crate) fn tls(&self, name: &str) -> Arc<rustls::ClientConfig> {
        let (crt, key) = self.site.client_paths(name);
        client_config(&self.site.ca_cert(), &crt, &key).unwrap()
    }

    /// The CLI's config (`cli.path("cli.toml")`): a context whose current
    /// node is this device, as admin.
    pub(crate) fn write_cli_config(&self) {
        let (crt, key) = self.site.client_paths("admin");
        let text = format!(
            "current_context = \"test\"\n[contexts.test]\nca = {:?}\ncert = {:?}\nkey = {:?}\n\
             current_node = \"{HOSTNAME}\"\n[contexts.test.nodes.{HOSTNAME}]\n\
             address = \"{}\"\nserver_name = \"{HOSTNAME}\"\n",
            self.site.ca_cert(),
            crt,
            key,
            self.node.address
        );
        std::fs::write(self.cli.path("cli.toml"), text).unwrap();
    }
}

impl Drop for HostDevice {
    fn drop(&mut self) {
        self.kill();
        if self.log && std::thread::panicking() {
            let log = read_lossy(&self.cli.path("device.log"));
            eprintln!("--- device log ---\n{log}");
        }
    }
}

/// One QEMU human-monitor command over the monitor's Unix socket (QEMU
/// started with `-monitor unix:PATH,server=on,wait=off`); its output.
pub(crate) fn hmp(socket: &Path, command: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // The banner and prompt, then the command and what it printed.
    let mut drain = |s: &mut std::os::unix::net::UnixStream, out: &mut Vec<u8>| {
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
    };
    drain(&mut s, &mut out);
    s.write_all(format!("{command}\n").as_bytes()).unwrap();
    drain(&mut s, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Debian's mosquitto on a free 127.0.0.1 port, set up as
/// `outpost gen broker` does (TLS from the site CA, client certificates
/// required, per-board ACLs). Killed when dropped; `restart` keeps the port.
pub(crate) struct Mosquitto {
    child: Option<Child>,
    pub(crate) port: u16,
    conf: PathBuf,
    pub(crate) dir: PathBuf,
}

impl Mosquitto {
    /// Operators `admin` and `reader` (if the site has them) may reach every board.
    pub(crate) fn start(site: &Site, dir: &Path) -> Self {
        let port = outpost::host::qemu::free_port().unwrap();
        let conf = outpost::host::mosquitto::write_config(
            site,
            dir,
            &outpost::host::mosquitto::BrokerSpec {
                listen: "127.0.0.1",
                port,
                // 10.0.2.100: where a board in QEMU finds it (guestfwd).
                sans: &["127.0.0.1".into(), "10.0.2.100".into()],
                operators: &["admin".into(), "reader".into()],
            },
        )
        .unwrap();
        let mut m = Self {
            child: None,
            port,
            conf,
            dir: dir.to_path_buf(),
        };
        m.spawn();
        m
    }

    fn spawn(&mut self) {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (Debian package `mosquitto`, see scripts/setup)");
        self.child = Some(child);
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "mosquitto did not listen:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub(crate) fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub(crate) fn url(&self) -> String {
        format!("mqtts://127.0.0.1:{}", self.port)
    }

    pub(crate) fn log(&self) -> String {
        read_lossy(&self.dir.join("mosquitto.log"))
    }

    /// The `[callhome]` section that points a board here.
    pub(crate) fn callhome_toml(&self, keepalive: u16, groups: &[&str]) -> String {
        self.callhome_toml_via(self.port, keepalive, groups)
    }

    /// The same through 127.0.0.1:`port` (a relay or link emulator in front).
    pub(crate) fn callhome_toml_via(&self, port: u16, keepalive: u16, groups: &[&str]) -> String {
        let groups: Vec<String> = groups.iter().map(|g| format!("{g:?}")).collect();
        format!(
            "\n[callhome]\nbroker = \"127.0.0.1\"\nport = {port}\nkeepalive_secs = {keepalive}\ngroups = [{}]\n",
            groups.join(", ")
        )
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("--- mosquitto log ---\n{}", self.log());
        }
    }
}

/// Poll `what` until it returns true or `secs` pass.
pub(crate) fn wait_until(secs: u64, mut what: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        if what() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// outpost-init "N+1" for delta tests: the same source built with one
/// config default changed (`OUTPOST_SNTP_INTERVAL=2048`, see
/// src/config/time.rs), in its own target dir (built on first use, slow
/// once; `OUTPOST_INIT_N1` names a ready one).
pub(crate) fn init_binary_n1() -> PathBuf {
    if let Some(p) = std::env::var_os("OUTPOST_INIT_N1") {
        return PathBuf::from(p);
    }
    let dir = repo().join("target/delta-n1");
    let status = Command::new("cargo")
        .current_dir(repo())
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "aarch64-unknown-linux-musl",
            "--no-default-features",
            "--features",
            "device",
            "--bin",
            "outpost-init",
            "--target-dir",
        ])
        .arg(&dir)
        .env("OUTPOST_SNTP_INTERVAL", "2048")
        .status()
        .unwrap();
    assert!(status.success(), "building outpost-init N+1");
    dir.join("aarch64-unknown-linux-musl/release/outpost-init")
}

/// Put a link emulator between `cli`'s current node and the CLI: rewrites
/// the node address in cli.toml (`127.0.0.1:PORT`) to the emulator's.
pub(crate) fn through_link(
    cli: &Cli,
    configure: impl FnOnce(&mut outpost::host::linkemu::LinkConfig),
) -> outpost::host::linkemu::LinkEmu {
    let path = cli.path("cli.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let addr = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("address = \"127.0.0.1:"))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("a node on 127.0.0.1 in cli.toml");
    let port: u16 = addr.parse().unwrap();
    let mut config =
        outpost::host::linkemu::LinkConfig::new(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    configure(&mut config);
    let emu = outpost::host::linkemu::LinkEmu::start(config).unwrap();
    std::fs::write(
        &path,
        text.replace(&format!("127.0.0.1:{port}"), &emu.addr().to_string()),
    )
    .unwrap();
    emu
}
