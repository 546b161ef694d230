//! QEMU: a board whose RTC starts at 1970 (`-rtc base=1970-01-01`, as a
//! Raspberry Pi without a battery) still accepts valid clients: outpost-init
//! sets the clock to the image build time, then to the time saved on DATA
//! after a reboot. Needs `scripts/setup` and `scripts/build-init`; set
//! OUTPOST_SKIP_QEMU=1 to leave it out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use outpost::host::client::{client_config, Client};
use outpost::host::context::Node;
use outpost::host::pki::Site;
use outpost::wire::{Request, Response};

struct Env {
    tmp: tempfile::TempDir,
}

impl Env {
    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }
    fn outpost_env(&self, args: &[&str], env: &[(&str, String)]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_outpost"))
            .args(args)
            .env("OUTPOST_CONFIG", self.path("cli.toml"))
            .env("OUTPOST_STATE", self.path("state"))
            .env_remove("OUTPOST_NODE")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap()
    }
    fn outpost(&self, args: &[&str]) -> Output {
        self.outpost_env(args, &[])
    }
    fn ok_env(&self, args: &[&str], env: &[(&str, String)]) -> String {
        let out = self.outpost_env(args, env);
        assert!(
            out.status.success(),
            "outpost {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut full = vec!["-o", "json"];
        full.extend_from_slice(args);
        serde_json::from_str(&self.ok_env(&full, &[])).unwrap()
    }
}

/// Power the device off (or kill it) however the test ends.
struct Guard<'a>(&'a Env);
impl Drop for Guard<'_> {
    fn drop(&mut self) {
        let _ = self.0.outpost(&["qemu", "down", "--name", "clock"]);
    }
}

fn init_binary() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/aarch64-unknown-linux-musl/release/outpost-init");
    assert!(
        p.exists(),
        "{} is missing: run scripts/build-init (or set OUTPOST_SKIP_QEMU=1)",
        p.display()
    );
    p
}

fn time_of(env: &Env) -> (u64, String, bool) {
    let t = env.json(&["time"])["Time"].clone();
    (
        t["unix_ms"].as_u64().unwrap(),
        t["source"].as_str().unwrap().to_owned(),
        t["synced"].as_bool().unwrap(),
    )
}

#[test]
fn a_board_booted_at_1970_serves_valid_clients_and_restores_its_clock() {
    if std::env::var_os("OUTPOST_SKIP_QEMU").is_some() {
        eprintln!("OUTPOST_SKIP_QEMU is set: QEMU time test left out");
        return;
    }
    let env = Env {
        tmp: tempfile::tempdir().unwrap(),
    };
    let init = init_binary();
    let site = env.path("site");
    let site_s = site.to_str().unwrap();
    env.ok_env(&["gen", "site", site_s, "--name", "clocktest"], &[]);
    env.ok_env(
        &[
            "gen",
            "device",
            "--site",
            site_s,
            "--hostname",
            "edge-clock",
        ],
        &[],
    );
    // A pinned build time (reproducible builds set it the same way).
    let build_time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let img = env.path("edge.img");
    env.ok_env(
        &[
            "image",
            "build",
            "--board",
            "qemu-virt",
            "--site",
            site_s,
            "--hostname",
            "edge-clock",
            "-o",
            img.to_str().unwrap(),
            "--init",
            init.to_str().unwrap(),
        ],
        &[("SOURCE_DATE_EPOCH", build_time.to_string())],
    );

    // `qemu up` returns once `status` answered over mutual TLS: with the
    // clock left at 1970 every certificate would be "not yet valid".
    let up = env.json(&[
        "qemu",
        "up",
        img.to_str().unwrap(),
        "--name",
        "clock",
        "--rtc-base",
        "1970-01-01",
        "--timeout",
        "300",
    ]);
    let _guard = Guard(&env);
    let boot_id = env.json(&["status"])["Status"]["boot_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let (ms, source, synced) = time_of(&env);
    assert!(
        ms / 1000 >= build_time,
        "{ms} ms is before the build time {build_time}"
    );
    assert_eq!(source, "build-time");
    assert!(!synced);
    let logs =
        String::from_utf8_lossy(&env.outpost(&["logs", "--lines", "300"]).stdout).into_owned();
    assert!(logs.contains("(build-time)"), "{logs}");

    // A client certificate issued a month after the image: valid on the
    // board (notBefore is the site's creation, see docs/time.md) ...
    let site_h = Site::open(&site).unwrap();
    let node = Node {
        address: up["address"].as_str().unwrap().to_owned(),
        server_name: "edge-clock".into(),
    };
    let month = time::Duration::days(30);
    let later = time::OffsetDateTime::now_utc() + month;
    let connect = |not_before: time::OffsetDateTime, name: &str| {
        let (crt, key) = site_h
            .client_pem(name, "reader", not_before, later + month * 120)
            .unwrap();
        let (c, k) = (
            env.path(&format!("{name}.crt")),
            env.path(&format!("{name}.key")),
        );
        std::fs::write(&c, crt).unwrap();
        std::fs::write(&k, key).unwrap();
        let config = client_config(&site.join("ca.crt"), &c, &k).unwrap();
        Client::connect_with(config, &node).and_then(|mut c| c.call(Request::Ping))
    };
    assert!(matches!(
        connect(site_h.client_not_before(later), "late"),
        Ok(Response::Pong)
    ));
    // ... where the old rule (valid from a day before issue) is refused.
    assert!(connect(later - time::Duration::days(1), "naive").is_err());

    // Reboot: the clock saved at shutdown comes back.
    let (before, _, _) = time_of(&env);
    env.ok_env(&["reboot"], &[]);
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "device did not come back after reboot"
        );
        std::thread::sleep(Duration::from_secs(2));
        let out = env.outpost(&["-o", "json", "status"]);
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if v["Status"]["boot_id"].as_str() != Some(boot_id.as_str()) {
                break;
            }
        }
    }
    let (after, source, _) = time_of(&env);
    assert_eq!(source, "restored");
    assert!(after >= before, "clock went back: {after} < {before}");

    let down = env.ok_env(&["qemu", "down", "--name", "clock"], &[]);
    assert!(down.contains("powered off"), "{down}");
}
