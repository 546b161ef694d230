//! Over-the-air A/B upgrade in QEMU with the real image: boot 0.1.0 from
//! slot A, `outpost upgrade` a signed 0.2.0 bundle, the device writes slot B,
//! switches, reboots through U-Boot into B, passes its health checks and
//! commits B; then `outpost rollback` takes it back to A. Needs
//! `scripts/setup` and `scripts/build-init` (the test command runs both).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{image_build, init_binary, skip_qemu, Cli, QemuGuard};

fn slots(env: &Cli) -> serde_json::Value {
    env.json(&["slots"])["Slots"].clone()
}

#[test]
fn upgrade_to_slot_b_commits_and_rollback_returns_to_a() {
    if skip_qemu() {
        return;
    }
    let init = init_binary();
    let init = init.to_str().unwrap();
    let env = Cli::new();
    let _guard = QemuGuard::new(&env, "up");
    let site = env.site_with_device("uptest", "edge-up");
    let site = site.to_str().unwrap();
    let img = env.path("edge.img");
    let mut build = image_build(site, "edge-up", img.to_str().unwrap(), init);
    build.extend(["--version", "0.1.0"]);
    env.ok(&build);
    let bundle = env.bundle(site, "0.2.0", init);

    env.ok(&[
        "qemu",
        "up",
        img.to_str().unwrap(),
        "--name",
        "up",
        "--timeout",
        "240",
    ]);
    let s = slots(&env);
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
    let s = slots(&env);
    assert_eq!(s["booted"], "B", "{s}");
    assert_eq!(s["slots"][1]["state"], "active", "{s}");
    assert_eq!(s["slots"][0]["state"], "good", "{s}");
    let status = env.json(&["status"]);
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
            env.console_tail("up", 40)
        );
    }
    let down = env.ok(&["qemu", "down", "--name", "up"]);
    assert!(down.contains("powered off"), "{down}");
}
