//! Over-the-air A/B upgrade in QEMU with the real image: boot 0.1.0 from
//! slot A, `outpost upgrade` a signed 0.2.0 bundle, the device writes slot B,
//! switches, reboots through U-Boot into B, passes its health checks and
//! commits B; then `outpost rollback` takes it back to A. Needs
//! `scripts/setup` and `scripts/build-init` (the test command runs both).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

struct Env {
    tmp: tempfile::TempDir,
}

impl Env {
    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }
    fn outpost(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_outpost"))
            .args(args)
            .env("OUTPOST_CONFIG", self.path("cli.toml"))
            .env("OUTPOST_STATE", self.path("state"))
            .env_remove("OUTPOST_NODE")
            .output()
            .unwrap()
    }
    fn ok(&self, args: &[&str]) -> String {
        let out = self.outpost(args);
        assert!(
            out.status.success(),
            "outpost {args:?} failed:\n{}\n{}\nconsole:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.console_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    fn slots(&self) -> serde_json::Value {
        let v: serde_json::Value =
            serde_json::from_str(&self.ok(&["slots", "-o", "json"])).unwrap();
        v["Slots"].clone()
    }
    fn console_tail(&self) -> String {
        let text = std::fs::read(self.path("state/qemu/up/console.log")).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.path("state/qemu/up/qemu.pid")) {
            let _ = Command::new("kill").arg("-9").arg(pid.trim()).status();
        }
    }
}

#[test]
fn upgrade_to_slot_b_commits_and_rollback_returns_to_a() {
    if std::env::var_os("OUTPOST_SKIP_QEMU").is_some() {
        eprintln!("OUTPOST_SKIP_QEMU is set: QEMU upgrade test left out");
        return;
    }
    let init = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/aarch64-unknown-linux-musl/release/outpost-init");
    assert!(
        init.exists(),
        "{} is missing: run scripts/build-init",
        init.display()
    );
    let init = init.to_str().unwrap();
    let env = Env {
        tmp: tempfile::tempdir().unwrap(),
    };
    let site = env.path("site");
    let site = site.to_str().unwrap();
    env.ok(&["gen", "site", site, "--name", "uptest"]);
    env.ok(&["gen", "device", "--site", site, "--hostname", "edge-up"]);
    let img = env.path("edge.img");
    env.ok(&[
        "image",
        "build",
        "--site",
        site,
        "--hostname",
        "edge-up",
        "--version",
        "0.1.0",
        "-o",
        img.to_str().unwrap(),
        "--init",
        init,
    ]);
    let bundle = env.path("v0.2.0.bundle");
    env.ok(&[
        "bundle",
        "build",
        "--site",
        site,
        "--version",
        "0.2.0",
        "-o",
        bundle.to_str().unwrap(),
        "--init",
        init,
    ]);

    env.ok(&[
        "qemu",
        "up",
        img.to_str().unwrap(),
        "--name",
        "up",
        "--timeout",
        "240",
    ]);
    let s = env.slots();
    assert_eq!(
        (s["booted"].as_str(), s["slots"][0]["state"].as_str()),
        (Some("A"), Some("active")),
        "{s}"
    );

    let start = Instant::now();
    env.ok(&["upgrade", bundle.to_str().unwrap(), "--timeout", "300"]);
    eprintln!(
        "upgrade (upload + install + reboot + commit): {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let s = env.slots();
    assert_eq!(s["booted"], "B", "{s}");
    assert_eq!(s["slots"][1]["state"], "active", "{s}");
    assert_eq!(s["slots"][0]["state"], "good", "{s}");
    let status: serde_json::Value =
        serde_json::from_str(&env.ok(&["status", "-o", "json"])).unwrap();
    assert_eq!(status["Status"]["os_version"], "0.2.0");
    assert_eq!(status["Status"]["slot"], "B");

    // Rollback to the good slot A.
    env.ok(&["rollback"]);
    let start = Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs(2));
        let out = env.outpost(&["slots", "-o", "json"]);
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if v["Slots"]["booted"] == "A" && v["Slots"]["slots"][0]["state"] == "active" {
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "no rollback; console:\n{}",
            env.console_tail()
        );
    }
    let down = env.ok(&["qemu", "down", "--name", "up"]);
    assert!(down.contains("powered off"), "{down}");
}
