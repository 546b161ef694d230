//! Staged rollouts through the broker: host-mode boards with simulated A/B
//! cards calling home to one mosquitto; the real CLI (`outpost rollout
//! start`) upgrades them wave by wave; `outpost rollout status` (another
//! process) reads the progress. Injected failures are honest: boards of
//! another model refuse the bundle, a stopped board never answers.
//! Boards: `OUTPOST_ROLLOUT_BOARDS` scales the first test, upgraded
//! `OUTPOST_ROLLOUT_PARALLEL` at a time (default 20; docs/benchmarks.md).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use common::{read_lossy, wait_until, HostDevice, Mosquitto};
use outpost::host::bundle::{sign_image, Release};
use outpost::host::pki::Site;

/// Host-mode boards `b0000`… with simulated cards, running 1.0.0 of
/// `qemu-virt` (or `other` for those `other_model` picks).
struct Boards {
    boards: Vec<(String, PathBuf, Option<Child>)>,
}

impl Boards {
    fn start(
        site: &Site,
        root: &Path,
        broker: &Mosquitto,
        n: usize,
        other_model: impl Fn(usize) -> bool,
    ) -> Self {
        let keys = site.release_pub();
        let mut boards = Vec::new();
        for i in 0..n {
            let name = format!("b{i:04}");
            site.issue_device(&name, 50000).unwrap();
            let data = root.join(&name);
            common::stage_data(site, &name, &data);
            let machine = data.join("config/machine.toml");
            let mut text = std::fs::read_to_string(&machine).unwrap();
            text.push_str(&broker.callhome_toml(200, &["all"]));
            std::fs::write(&machine, text).unwrap();
            let board = if other_model(i) { "other" } else { "qemu-virt" };
            let log = std::fs::File::create(root.join(format!("{name}.log"))).unwrap();
            let child = std::process::Command::new(env!("CARGO_BIN_EXE_outpost-init"))
                .args(["--host-mode", "--no-led", "--data"])
                .arg(&data)
                .args(["--listen", "127.0.0.1:0", "--slots"])
                .arg(root.join(format!("{name}-card")))
                .arg("--release-keys")
                .arg(&keys)
                .args(["--board", board, "--version", "1.0.0"])
                .stderr(log)
                .spawn()
                .unwrap();
            boards.push((name, root.to_path_buf(), Some(child)));
        }
        Self { boards }
    }

    fn connected(&self, i: usize) -> bool {
        let (name, root, _) = &self.boards[i];
        read_lossy(&root.join(format!("{name}.log"))).contains("callhome: connected")
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.boards[i].2.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn names(&self) -> Vec<String> {
        self.boards.iter().map(|b| b.0.clone()).collect()
    }
}

impl Drop for Boards {
    fn drop(&mut self) {
        for i in 0..self.boards.len() {
            self.kill(i);
        }
    }
}

/// A small signed bundle of version 1.1.0 for `qemu-virt`.
fn bundle(dev: &HostDevice) -> PathBuf {
    let mut img: Vec<u8> = (0..120_000u32)
        .map(|i| (i as u8).wrapping_mul(7) ^ (i >> 9) as u8)
        .collect();
    img.extend(vec![0u8; 40_000]);
    let out = dev.cli.path("v1.1.bundle");
    let release = Release {
        board: "qemu-virt".into(),
        version: "1.1.0".into(),
        min_version: "0.1.0".into(),
        build_time: 1,
    };
    sign_image(&img, &release, &dev.site.release_key().unwrap(), &out).unwrap();
    out
}

/// A site, its broker, `n` boards all called home.
fn fleet(
    tag: &str,
    n: usize,
    other_model: impl Fn(usize) -> bool,
) -> (HostDevice, Mosquitto, Boards) {
    let dev = HostDevice::new(tag);
    let broker = Mosquitto::start(&dev.site, &dev.cli.path("broker"));
    dev.write_cli_config();
    let boards = Boards::start(&dev.site, &dev.cli.path("boards"), &broker, n, other_model);
    assert!(
        wait_until(60 + n as u64 / 5, || (0..n).all(|i| boards.connected(i))),
        "not every board called home"
    );
    (dev, broker, boards)
}

/// `fleet status` through the broker: each answering board's OS version.
fn versions(dev: &HostDevice, url: &str, list: &[String]) -> Vec<(String, String)> {
    let v = dev.cli.json(&[
        "--broker",
        url,
        "fleet",
        "status",
        "--devices",
        &list.join(","),
        "--timeout",
        "10",
    ]);
    let answers = v["answers"].as_object().unwrap();
    answers
        .iter()
        .map(|(d, a)| {
            (
                d.clone(),
                a["answer"]["Status"]["os_version"]
                    .as_str()
                    .unwrap_or("?")
                    .to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_rollout_upgrades_every_board_wave_by_wave() {
    let n: usize = std::env::var("OUTPOST_ROLLOUT_BOARDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let parallel = std::env::var("OUTPOST_ROLLOUT_PARALLEL").unwrap_or_else(|_| "20".into());
    let discover = (5 + n / 100).to_string();
    let (dev, broker, boards) = fleet("ro", n, |_| false);
    let b = bundle(&dev);
    let url = broker.url();
    let started = Instant::now();
    let (out, seen) = std::thread::scope(|s| {
        let run = s.spawn(|| {
            dev.cli.outpost(&[
                "--broker",
                &url,
                "rollout",
                "start",
                b.to_str().unwrap(),
                "--group",
                "all",
                "--discover",
                &discover,
                "--waves",
                "20,100",
                "--soak",
                "2",
                "--timeout",
                "60",
                "--parallel",
                &parallel,
                "-o",
                "json",
            ])
        });
        // Progress, from another process, while it runs.
        let mut seen = Vec::new();
        while !run.is_finished() {
            let o = dev.cli.outpost(&["rollout", "status", "-o", "json"]);
            if o.status.success() {
                let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
                let key = format!("{} {}", v["phase"].as_str().unwrap(), v["wave"]);
                if seen.last() != Some(&key) {
                    seen.push(key);
                }
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        (run.join().unwrap(), seen)
    });
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["phase"], "finished", "{v}");
    let waves = v["waves"].as_array().unwrap();
    assert_eq!(waves.len(), 2);
    assert_eq!(
        waves[0]["devices"].as_array().unwrap().len(),
        n.div_ceil(5),
        "{v}"
    );
    for w in waves {
        assert_eq!(w["succeeded"], w["devices"].as_array().unwrap().len());
    }
    assert!(
        seen.iter().any(|s| s == "soaking 1"),
        "status saw the soak between the waves: {seen:?}"
    );
    // `rollout status` after the end says the same.
    let status = dev.cli.json(&["rollout", "status"]);
    assert_eq!(status["phase"], "finished");
    // Every board runs 1.1.0 now, from its other slot.
    let now = versions(&dev, &url, &boards.names());
    assert_eq!(now.len(), n);
    assert!(now.iter().all(|(_, v)| v == "1.1.0"), "{now:?}");
    let secs: Vec<f64> = v["devices"]
        .as_object()
        .unwrap()
        .values()
        .map(|d| d["secs"].as_f64().unwrap())
        .collect();
    println!(
        "rollout: {n} boards, {parallel} at a time, in 2 waves (20 %, 100 %; soak 2 s) finished in {:.1} s (incl. {discover} s group discovery); per board upload+install+reboot+commit {:.1} s median, {:.1} s max; status saw {seen:?}",
        took.as_secs_f64(),
        median(&secs),
        secs.iter().cloned().fold(0.0, f64::max)
    );
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// 20 boards (or `OUTPOST_ROLLOUT_BOARDS`): every tenth cannot install
/// (another model: the bundle is refused) and b0004 is stopped (never
/// answers: fails by its timeout) — 15 % in all. The failure rate trips the
/// abort after the minimum sample in wave 1; wave 2 never starts.
#[test]
fn failures_past_the_threshold_abort_and_later_waves_stay_untouched() {
    let n: usize = std::env::var("OUTPOST_ROLLOUT_BOARDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
        .max(20);
    let other = |i: usize| i % 10 == 2; // b0002, b0012, …
    let (dev, broker, mut boards) = fleet("rf", n, other);
    boards.kill(4);
    let b = bundle(&dev);
    let url = broker.url();
    // Selected by label from the CLI's own inventory (b9999 does not exist
    // and carries another label).
    let mut labels = String::from("\n[contexts.test.labels]\nb9999 = [\"spare\"]\n");
    for name in boards.names() {
        labels.push_str(&format!("{name} = [\"lab\", \"north\"]\n"));
    }
    let cfg = dev.cli.path("cli.toml");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&labels);
    std::fs::write(&cfg, text).unwrap();
    let started = Instant::now();
    let out = dev.cli.outpost(&[
        "--broker",
        &url,
        "rollout",
        "start",
        b.to_str().unwrap(),
        "--label",
        "lab",
        "--waves",
        "50,100",
        "--soak",
        "1",
        "--success-threshold",
        "50",
        "--abort-after-failures",
        "10",
        "--min-sample",
        "5",
        "--timeout",
        "15",
    ]);
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the rollout must fail: {err}");
    assert!(err.contains("rollout aborted"), "{err}");
    // Text progress on stderr: the wave, each failure, the abort.
    assert!(
        err.contains(&format!("wave 1/2: {} devices: b0000 b0001", n / 2)),
        "{err}"
    );
    assert!(err.contains("b0002: FAILED:"), "{err}");
    assert!(err.contains("ABORTED: "), "{err}");
    assert!(!err.contains("wave 2/2"), "{err}");
    let v = dev.cli.json(&["rollout", "status"]);
    assert_eq!(v["phase"], "aborted", "{v}");
    assert_eq!(
        v["devices"].as_object().unwrap().len(),
        n,
        "label `lab` only"
    );
    let why = v["detail"].as_str().unwrap();
    assert!(why.contains("devices failed"), "the rate rule: {why}");
    let d = &v["devices"];
    assert_eq!(d["b0002"]["state"], "failed", "{v}");
    assert!(
        d["b0002"]["detail"].as_str().unwrap().contains("board"),
        "refused as for another board: {}",
        d["b0002"]
    );
    assert_eq!(d["b0004"]["state"], "failed", "the stopped board: {v}");
    assert_eq!(v["waves"][1]["skipped"], n / 2, "{v}");
    let second: Vec<String> = (n / 2..n).map(|i| format!("b{i:04}")).collect();
    for name in &second {
        assert_eq!(d[name]["state"], "skipped", "{v}");
    }
    // Wave 2 is untouched: still 1.0.0.
    let now = versions(&dev, &url, &second);
    assert_eq!(now.len(), n / 2);
    assert!(now.iter().all(|(_, v)| v == "1.0.0"), "{now:?}");
    // `fleet --label` selects from the same inventory (b0004 is stopped).
    let v = dev.cli.json(&[
        "--broker",
        &url,
        "fleet",
        "ping",
        "--label",
        "north",
        "--timeout",
        "5",
        "--grace",
        "0",
    ]);
    assert_eq!(v["answers"].as_object().unwrap().len(), n - 1, "{v}");
    assert_eq!(v["missing"], serde_json::json!(["b0004"]), "{v}");
    // Text status names the abort.
    let text = dev.cli.ok(&["rollout", "status"]);
    assert!(text.contains("aborted"), "{text}");
    let states = |s: &str| {
        d.as_object()
            .unwrap()
            .values()
            .filter(|x| x["state"] == s)
            .count()
    };
    println!(
        "rollout abort: {n} boards, {} refusing + 1 stopped: aborted after {:.1} s: {why}; end: {} succeeded, {} failed, {} skipped",
        n.div_ceil(10),
        took.as_secs_f64(),
        states("succeeded"),
        states("failed"),
        states("skipped"),
    );
}
