//! System test of the service supervisor on the real image in QEMU:
//! `examples/testsvc.rs` built for aarch64-musl goes into the image with
//! `image build --extension`; five services run from it under cgroup v2.
//! A service over its memory limit is killed and reported; services are
//! listed over the API; the numbers for docs/benchmarks.md are printed as
//! `BENCH` lines (scripts/bench-services). Needs `scripts/build-init`;
//! OUTPOST_SKIP_QEMU=1 leaves it out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{image_build, init_binary, repo, skip_qemu, Cli, QemuGuard};

/// testsvc, static aarch64-musl. Built with rustc directly (it is std
/// only): a nested `cargo build` would wait for the lock of the cargo that
/// runs this test. Same target and linker flags as .cargo/config.toml.
fn testsvc_aarch64(out_dir: &Path) -> PathBuf {
    let out = out_dir.join("testsvc");
    let status = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .args([
            "--edition",
            "2021",
            "-O",
            "--target",
            "aarch64-unknown-linux-musl",
        ])
        .args(["-C", "linker=rust-lld", "-C", "target-feature=+crt-static"])
        .args(["-C", "strip=symbols", "-o"])
        .arg(&out)
        .arg(repo().join("examples/testsvc.rs"))
        .status()
        .unwrap();
    assert!(status.success(), "building testsvc for aarch64");
    out
}

const EXT: &str = "/usr/lib/outpost/ext/testsvc";

/// Five services: a memory hog over its limit, a TCP server with a health
/// check, a crash loop, a log flood (~10.5 MB) and an idle one.
fn services_toml(web_port: u16) -> String {
    format!(
        r#"
[[services]]
name = "hog"
program = "{EXT}"
args = ["alloc", "64", "sleep"]
restart = "never"
limits = {{ memory_max = "32M", pids_max = 16 }}

[[services]]
name = "web"
program = "{EXT}"
args = ["listen", "{web_port}", "sleep"]
health = {{ kind = "tcp", port = {web_port} }}
limits = {{ memory_max = "16M", cpu_max = "50000 100000" }}

[[services]]
name = "crashy"
program = "{EXT}"
args = ["wait", "500", "crash"]
backoff_initial_ms = 1000
backoff_max_ms = 4000
after = ["web"]

[[services]]
name = "flood"
program = "{EXT}"
args = ["wait", "2000", "flood", "100000", "say", "flood over", "sleep"]
after = ["web"]

[[services]]
name = "idle"
program = "{EXT}"
args = ["sleep"]
"#
    )
}

fn service<'a>(list: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    list["Services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {list}"))
}

fn wait_until(env: &Cli, secs: u64, what: &str, pred: impl Fn(&serde_json::Value) -> bool) {
    let start = Instant::now();
    loop {
        let list = env.json(&["services"]);
        if pred(&list) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "{what}: timed out; last: {list}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn services_on_the_board_memory_limit_and_api() {
    if skip_qemu() {
        return;
    }
    let init = init_binary();
    let env = Cli::new();
    let testsvc = testsvc_aarch64(&env.path(""));
    let site = env.site_with_device("svctest", "edge-svc");
    let site_s = site.to_str().unwrap();
    let machine = site.join("devices/edge-svc/machine.toml");
    let mut text = std::fs::read_to_string(&machine).unwrap();
    text.push_str(&services_toml(8080));
    std::fs::write(&machine, text).unwrap();
    let img = env.path("edge.img");
    let mut build = image_build(
        site_s,
        "edge-svc",
        img.to_str().unwrap(),
        init.to_str().unwrap(),
    );
    build.extend(["--extension", testsvc.to_str().unwrap()]);
    env.ok(&build);
    env.json(&[
        "qemu",
        "up",
        img.to_str().unwrap(),
        "--name",
        "svc",
        "--timeout",
        "240",
    ]);
    let _guard = QemuGuard::new(&env, "svc");

    // The hog is killed by the kernel in its cgroup, and reported so.
    wait_until(&env, 60, "hog killed", |l| {
        service(l, "hog")["state"] == "failed"
    });
    let list = env.json(&["services"]);
    assert_eq!(
        service(&list, "hog")["last_exit"],
        "killed: out of memory",
        "{list}"
    );
    // The others run; the TCP check passed (the slot was committed with it).
    for name in ["web", "idle"] {
        assert_eq!(service(&list, name)["state"], "running", "{list}");
    }
    let slots = env.json(&["slots"]);
    eprintln!("slots: {slots}");
    let logs = env.ok(&["logs", "web"]);
    assert!(logs.contains("listening on 127.0.0.1:8080"), "{logs}");
    let sys_logs = env.ok(&["logs", "--lines", "500"]);
    assert!(!sys_logs.contains("cgroups unavailable"), "{sys_logs}");

    // Benchmarks: restart latency of the crash loop's first restart, from
    // the supervisor's clock and from the workload's own.
    wait_until(&env, 60, "crashy restarted", |l| {
        service(l, "crashy")["restarts"].as_u64().unwrap_or(0) >= 2
    });
    let sys_logs = env.ok(&["logs", "--lines", "500"]);
    let first_restart_us: Vec<u64> = sys_logs
        .lines()
        .filter(|l| l.contains("service crashy: started") && l.contains("us after the last exit"))
        .filter_map(|l| l.split('(').nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    eprintln!("BENCH restart_supervisor_us={first_restart_us:?}");
    assert!(!first_restart_us.is_empty(), "{sys_logs}");
    let crashy = env.ok(&["logs", "crashy", "--lines", "50"]);
    let stamps: Vec<(bool, u64)> = crashy
        .lines()
        .filter_map(|l| {
            let start = l.contains("testsvc start");
            let exit = l.contains("testsvc exit");
            let us = l
                .split("unix_us=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()?;
            (start || exit).then_some((start, us))
        })
        .collect();
    // exit -> next start, for the first restart (immediate by design).
    let e2e: Vec<u64> = stamps
        .windows(2)
        .filter(|w| !w[0].0 && w[1].0)
        .map(|w| w[1].1.saturating_sub(w[0].1))
        .collect();
    eprintln!("BENCH restart_exit_to_start_us={e2e:?}");
    assert!(!e2e.is_empty(), "{crashy}");

    // PID-1 RSS with 5 services after the ~10.5 MB flood.
    wait_until(&env, 300, "flood over", |_| {
        env.ok(&["logs", "flood", "--lines", "3"])
            .contains("flood over")
    });
    let status = env.json(&["status"]);
    let rss = status["Status"]["init_rss_kib"].as_u64().unwrap();
    eprintln!("BENCH pid1_rss_kib={rss}");
    let flood = env.ok(&["logs", "flood", "--lines", "2"]);
    eprintln!("flood tail: {flood}");
    assert!(rss <= 6 * 1024, "PID 1 RSS {rss} KiB");

    // Stop and start over the API on the board.
    env.ok(&["service", "stop", "idle"]);
    wait_until(&env, 30, "idle stopped", |l| {
        service(l, "idle")["state"] == "stopped"
    });
    env.ok(&["service", "start", "idle"]);
    wait_until(&env, 30, "idle running", |l| {
        service(l, "idle")["state"] == "running"
    });
    let table = env.ok(&["services"]);
    eprintln!("{table}");
    assert!(table.contains("killed: out of memory"), "{table}");

    let down = env.ok(&["qemu", "down", "--name", "svc"]);
    assert!(down.contains("powered off"), "{down}");
}
