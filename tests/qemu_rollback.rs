//! Rollback on failure in QEMU with the real image, three ways. Each case
//! boots a fresh 0.1.0 image from slot A, runs a plain `outpost upgrade` to a
//! faulty 0.2.0 bundle (the device writes slot B, switches to it with three
//! attempts and reboots), and waits until the board is back on A by itself:
//! - `failed_health`: B's init never passes its health checks
//!   (`outpost.fault=unhealthy outpost.commit_deadline=20`): the commit
//!   deadline reboots, three times;
//! - `kernel_panic`: B's kernel cannot run its init (`rdinit=/etc`, a
//!   directory: "No working init found" panic), `panic=5` reboots;
//! - `watchdog_reset`: B's init hangs (`outpost.fault=hang outpost.watchdog=5`):
//!   the i6300esb watchdog resets the VM.
//!
//! The faulty bundles are built from a copy of `boards/qemu-virt.toml` whose
//! `cmdline` has the extra words (`OUTPOST_BOARDS`). Back on A, `outpost slots`
//! must show A active, B bad with 0 attempts, and `last_event` saying the boot
//! fell back; `outpost status` answers from A (0.1.0). Each case prints the
//! time from `upgrade` to "back on A".
//!
//! The health case takes ~2 min (3 x the 20 s deadline); the other two take
//! under a minute each and run beside it (libtest runs 2 tests at once on a
//! 2-core machine, and starts them in name order: the long one first).
//! Needs `scripts/setup` and `scripts/build-init`; OUTPOST_SKIP_QEMU=1 leaves it out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use common::{image_build, init_binary, repo, skip_qemu, Cli, QemuGuard};

/// The name of the local device in each case's own state directory.
const NAME: &str = "rb";

struct Env {
    /// First, so QEMU is killed before the CLI's temp dir goes.
    _qemu: QemuGuard,
    cli: Cli,
    /// The `outpost upgrade` run in the background.
    upgrade: Option<Child>,
    /// The site (the CLI's client certificate) and the image this came from.
    _base: Arc<Base>,
}

impl Env {
    fn console(&self) -> String {
        self.cli.console(NAME)
    }
    fn console_tail(&self, n: usize) -> String {
        self.cli.console_tail(NAME, n)
    }
    /// `outpost slots -o json`, if the device answers.
    fn slots(&self) -> Option<serde_json::Value> {
        let out = self.cli.outpost(&["slots", "-o", "json"]);
        if !out.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        Some(v["Slots"].clone())
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(mut child) = self.upgrade.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `boards/qemu-virt.toml` with `extra` appended to its kernel command line
/// and `tables` to its end, in `dir` (for `OUTPOST_BOARDS`).
fn faulty_board(dir: &Path, extra: &str, tables: &str) {
    let text = std::fs::read_to_string(repo().join("boards/qemu-virt.toml")).unwrap();
    let mut found = false;
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            match l
                .strip_prefix("cmdline = \"")
                .and_then(|r| r.strip_suffix('"'))
            {
                Some(args) => {
                    found = true;
                    format!("cmdline = \"{args} {extra}\"")
                }
                None => l.to_owned(),
            }
        })
        .collect();
    assert!(
        found,
        "no `cmdline = \"...\"` line in boards/qemu-virt.toml"
    );
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("qemu-virt.toml"), out.join("\n") + "\n" + tables).unwrap();
}

/// Site, device identity and the 0.1.0 image, built once for the tests that
/// run at the same time (each boots its own copy).
struct Base {
    cli: Cli,
}

impl Base {
    fn get() -> Arc<Base> {
        static BASE: Mutex<Weak<Base>> = Mutex::new(Weak::new());
        let mut slot = BASE.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(base) = slot.upgrade() {
            return base;
        }
        let base = Arc::new(Base::build());
        *slot = Arc::downgrade(&base);
        base
    }
    fn build() -> Base {
        let cli = Cli::new();
        let p = |s: &str| cli.path(s).to_str().unwrap().to_owned();
        let init = init_binary();
        cli.site_with_device("rbtest", "edge-rb");
        let (site, img) = (p("site"), p("edge.img"));
        let mut build = image_build(&site, "edge-rb", &img, init.to_str().unwrap());
        build.extend(["--version", "0.1.0"]);
        cli.ok(&build);
        Base { cli }
    }
}

/// A copy of the 0.1.0 image and a faulty 0.2.0 bundle (the board's kernel
/// command line plus `extra`); boot the image.
fn boot_fresh(extra: &str) -> (Env, PathBuf) {
    boot_fresh_with(extra, "")
}

/// [`boot_fresh`], with `tables` added to the 0.2.0 board definition.
fn boot_fresh_with(extra: &str, tables: &str) -> (Env, PathBuf) {
    let base = Base::get();
    let init = init_binary();
    let cli = Cli::new();
    let env = Env {
        _qemu: QemuGuard::new(&cli, NAME),
        cli,
        upgrade: None,
        _base: base.clone(),
    };
    std::fs::copy(base.cli.path("cli.toml"), env.cli.path("cli.toml")).unwrap();
    let img = env.cli.path("edge.img");
    let img = img.to_str().unwrap();
    // Sparse copy: 385 MiB long, ~13 MiB of data.
    let cp = Command::new("cp")
        .arg("--sparse=always")
        .arg(base.cli.path("edge.img"))
        .arg(img)
        .status()
        .unwrap();
    assert!(cp.success());
    let boards = env.cli.path("boards");
    faulty_board(&boards, extra, tables);
    let bundle = env.cli.path("faulty-0.2.0.bundle");
    let site = base.cli.path("site");
    let out = env
        .cli
        .command(&[
            "bundle",
            "build",
            "--site",
            site.to_str().unwrap(),
            "--version",
            "0.2.0",
            "-o",
            bundle.to_str().unwrap(),
            "--init",
            init.to_str().unwrap(),
        ])
        .env("OUTPOST_BOARDS", &boards)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bundle build: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    env.cli.ok(&[
        "qemu",
        "up",
        img,
        "--name",
        NAME,
        "--memory",
        "256",
        "--timeout",
        "120",
    ]);
    let s = env.slots().expect("slots answer after boot");
    assert_eq!(
        (s["booted"].as_str(), s["slots"][0]["state"].as_str()),
        (Some("A"), Some("active")),
        "{s}"
    );
    assert!(
        s["last_event"].is_null(),
        "a fresh board has no last event: {s}"
    );
    (env, bundle)
}

/// Start `outpost upgrade BUNDLE` in the background (output in
/// upgrade.log), then poll `outpost slots` every 2 s until `back` returns the
/// slots it waited for (`None` while the board does not answer). Fails after
/// `limit` with the upgrade's output and the console.
fn upgrade_until(
    env: &mut Env,
    bundle: &Path,
    limit: Duration,
    mut back: impl FnMut(&mut Env, Option<&serde_json::Value>) -> Option<serde_json::Value>,
) -> serde_json::Value {
    let start = Instant::now();
    let log = std::fs::File::create(env.cli.path("upgrade.log")).unwrap();
    let child = env
        .cli
        .command(&[
            "upgrade",
            bundle.to_str().unwrap(),
            "--timeout",
            &limit.as_secs().to_string(),
        ])
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    env.upgrade = Some(child);
    loop {
        std::thread::sleep(Duration::from_secs(2));
        let slots = env.slots();
        if let Some(s) = back(env, slots.as_ref()) {
            return s;
        }
        assert!(
            start.elapsed() < limit,
            "not back on A within {} s; upgrade:\n{}\nconsole:\n{}",
            limit.as_secs(),
            std::fs::read_to_string(env.cli.path("upgrade.log")).unwrap_or_default(),
            env.console_tail(60)
        );
    }
}

/// Upgrade to the faulty bundle and wait (polling every 2 s, up to `limit`)
/// until the board is back on A by itself. Returns the time it took.
fn upgrade_and_fall_back(env: &mut Env, bundle: &Path, limit: Duration) -> Duration {
    let start = Instant::now();
    // A plain upgrade: install, switch, reboot. The CLI waits for a commit on
    // B that never comes; it is stopped once the board is back on A.
    let back = upgrade_until(env, bundle, limit, |env, s| {
        if let Some(status) = env.upgrade.as_mut().unwrap().try_wait().unwrap() {
            assert!(
                !status.success(),
                "`outpost upgrade` of a faulty bundle reported success:\n{}",
                std::fs::read_to_string(env.cli.path("upgrade.log")).unwrap_or_default()
            );
        }
        let fell_back = s?["last_event"]
            .as_str()
            .is_some_and(|e| e.contains("fell back to A"));
        let s = s?;
        (s["booted"] == "A" && s["slots"][0]["state"] == "active" && fell_back).then(|| s.clone())
    });
    let took = start.elapsed();
    let mut child = env.upgrade.take().unwrap();
    if let Some(status) = child.try_wait().unwrap() {
        assert!(
            !status.success(),
            "`outpost upgrade` of a faulty bundle reported success"
        );
    }
    let _ = child.kill();
    let _ = child.wait();

    // A active (marked good again), B bad with no attempts, and why.
    assert_eq!(
        s_str(&back, "primary"),
        "B",
        "the order is not changed by the fallback: {back}"
    );
    assert_eq!(back["slots"][0]["attempts_left"], 3, "{back}");
    assert_eq!(back["slots"][0]["version"], "0.1.0", "{back}");
    assert_eq!(back["slots"][1]["state"], "bad", "{back}");
    assert_eq!(back["slots"][1]["attempts_left"], 0, "{back}");
    assert_eq!(back["slots"][1]["version"], "0.2.0", "{back}");
    let event = s_str(&back, "last_event");
    assert!(event.contains("installed 0.2.0 in slot B"), "{event}");
    assert!(
        event.contains("slot B has no boot attempts left"),
        "{event}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&env.cli.ok(&["status", "-o", "json"])).unwrap();
    assert_eq!(status["Status"]["slot"], "A", "{status}");
    assert_eq!(status["Status"]["os_version"], "0.1.0", "{status}");

    // The console tells the same story: B chosen three times, then A.
    let console = env.console();
    assert_eq!(
        console.matches("outpost: slot B chosen").count(),
        3,
        "B should have been tried 3 times:\n{}",
        env.console_tail(80)
    );
    assert!(
        console.contains("booted A after fallback from B"),
        "{}",
        env.console_tail(40)
    );
    took
}

fn s_str<'a>(v: &'a serde_json::Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("`{key}` missing: {v}"))
}

fn finish(env: &Env, case: &str, took: Duration) {
    eprintln!(
        "rollback ({case}): upgrade -> back on A in {:.1} s",
        took.as_secs_f64()
    );
    let down = env.cli.ok(&["qemu", "down", "--name", NAME]);
    assert!(down.contains("stopped"), "{down}");
}

// libtest starts tests in name order: the slow case (failed_health) first.

#[test]
fn rollback_after_failed_health_check() {
    if skip_qemu() {
        return;
    }
    // A 20 s deadline instead of the default 60 s: the same path, a third of
    // the wait (and the command-line setting is tested on the way).
    let (mut env, bundle) = boot_fresh("outpost.fault=unhealthy outpost.commit_deadline=20");
    // 3 x (U-Boot + kernel + the 20 s commit deadline) plus the install.
    let took = upgrade_and_fall_back(&mut env, &bundle, Duration::from_secs(210));
    let console = env.console();
    assert_eq!(
        console
            .matches("outpost.fault=unhealthy: slot B is not marked good")
            .count(),
        3,
        "{}",
        env.console_tail(40)
    );
    assert_eq!(
        console
            .matches("not healthy 20 s after init started")
            .count(),
        3,
        "{}",
        env.console_tail(40)
    );
    finish(&env, "health check fails, 20 s deadline reboots", took);
}

#[test]
fn rollback_after_kernel_panic() {
    if skip_qemu() {
        return;
    }
    // rdinit names a directory: the kernel finds it but cannot execute it,
    // tries the default inits, finds none and panics ("No working init
    // found"); `panic=5` reboots. (`rdinit=/nonexistent` panics too, earlier:
    // without an rdinit the kernel looks for a root device, "VFS: Unable to
    // mount root fs".)
    let (mut env, bundle) = boot_fresh("rdinit=/etc");
    let took = upgrade_and_fall_back(&mut env, &bundle, Duration::from_secs(150));
    let console = env.console();
    assert_eq!(
        console
            .matches("Kernel panic - not syncing: No working init found")
            .count(),
        3,
        "{}",
        env.console_tail(40)
    );
    finish(&env, "kernel panic, panic=5 reboots", took);
}

#[test]
fn rollback_after_watchdog_reset() {
    if skip_qemu() {
        return;
    }
    let (mut env, bundle) = boot_fresh("outpost.fault=hang outpost.watchdog=5");
    let took = upgrade_and_fall_back(&mut env, &bundle, Duration::from_secs(150));
    let console = env.console();
    assert_eq!(
        console
            .matches("no longer petted (outpost.fault=hang)")
            .count(),
        3,
        "{}",
        env.console_tail(40)
    );
    finish(&env, "init hangs, i6300esb watchdog resets", took);
}

/// The rollback button, end to end on a real kernel GPIO line: QEMU virt's
/// PL061 pulls its unconnected lines down, so line 0 read active-low is a
/// button held from power-on (gpio_keys, which would claim line 3 for the
/// power button, is not loaded). 0.2.0's board definition names it in
/// `[button]`; A's does not.
/// B boots, commits, sees the button held for 3 s, makes A primary and
/// reboots: an operator's rollback, so B stays good.
#[test]
fn rollback_by_button_held_at_boot() {
    if skip_qemu() {
        return;
    }
    let (mut env, bundle) = boot_fresh_with(
        "",
        "[button]\nchip = \"9030000.pl061\"\nline = 0\nactive_low = true\n",
    );
    let start = Instant::now();
    let back = upgrade_until(&mut env, &bundle, Duration::from_secs(150), |env, s| {
        // Primary A again after B saw the button. Booted A, primary A and
        // 0.2.0 in B also hold while B is being written (B bad until the
        // switch), so the console must show the button's rollback too.
        let s = s?;
        let installed = s["slots"][1]["version"] == "0.2.0";
        let rolled_back = env.console().contains("rollback button held at boot");
        (s["booted"] == "A" && s["primary"] == "A" && installed && rolled_back).then(|| s.clone())
    });
    let took = start.elapsed();
    assert_eq!(back["slots"][1]["state"], "good", "{back}");
    let console = env.console();
    assert_eq!(
        console.matches("rollback button held at boot").count(),
        1,
        "{}",
        env.console_tail(60)
    );
    assert!(
        console.contains("outpost: slot B chosen"),
        "{}",
        env.console_tail(60)
    );
    finish(&env, "button held at boot", took);
}
