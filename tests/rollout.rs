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
use outpost::bootstate::{CopyId, Current, Event, Slot};
use outpost::host::bundle::{sign_image, Release};
use outpost::host::pki::Site;

/// Host-mode boards `b0000`… with simulated cards, running 1.0.0 of
/// `qemu-virt` unless `spec` says another board model or version.
struct Boards {
    boards: Vec<Board>,
}

struct Board {
    name: String,
    root: PathBuf,
    cmd: Vec<std::ffi::OsString>,
    child: Option<Child>,
}

/// A board's model and the version it starts on.
type Spec = fn(usize) -> (&'static str, &'static str);

fn plain(_: usize) -> (&'static str, &'static str) {
    ("qemu-virt", "1.0.0")
}

impl Boards {
    fn start(site: &Site, root: &Path, broker: &Mosquitto, n: usize, spec: Spec) -> Self {
        let keys = site.release_pub();
        let mut boards = Vec::new();
        for i in 0..n {
            let name = format!("b{i:04}");
            site.issue_device(&name, 50000).unwrap();
            let data = root.join(&name);
            common::stage_data(site, &name, &data);
            common::add_to_machine_config(&data, &broker.callhome_toml(200, &["all"]));
            let (board, version) = spec(i);
            let mut cmd: Vec<std::ffi::OsString> =
                vec!["--host-mode".into(), "--no-led".into(), "--data".into()];
            cmd.push(data.into());
            cmd.extend(["--listen".into(), "127.0.0.1:0".into(), "--slots".into()]);
            cmd.push(root.join(format!("{name}-card")).into());
            cmd.push("--release-keys".into());
            cmd.push(keys.clone().into());
            cmd.extend(["--board", board, "--version", version].map(Into::into));
            let mut b = Board {
                name,
                root: root.to_path_buf(),
                cmd,
                child: None,
            };
            b.spawn();
            boards.push(b);
        }
        Self { boards }
    }

    fn connected(&self, i: usize) -> bool {
        self.boards[i].log().contains("callhome: connected")
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.boards[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn names(&self) -> Vec<String> {
        self.boards.iter().map(|b| b.name.clone()).collect()
    }

    /// Board `i`'s slot `slot` stops coming up: stopped, then three boots
    /// of it that never pass health (what U-Boot's boot.cmd leaves: its
    /// attempts spent), then started again — it boots the other slot, as a
    /// board does when its committed slot keeps crashing.
    fn fall_back(&mut self, i: usize, slot: Slot) {
        self.kill(i);
        let card = self.boards[i]
            .root
            .join(format!("{}-card", self.boards[i].name));
        let copy = |id: CopyId| std::fs::read(card.join(id.file())).unwrap();
        loop {
            let cur = Current::read(&copy(CopyId::First), &copy(CopyId::Second));
            if cur.state.left(slot) == 0 {
                break;
            }
            let plan = cur.apply(Event::Boot).unwrap();
            assert_eq!(plan.choice.unwrap().slot, slot, "{:?}", cur.state);
            std::fs::write(card.join(plan.write.copy.file()), &plan.write.blob).unwrap();
        }
        self.boards[i].spawn();
    }
}

impl Board {
    fn log_path(&self) -> PathBuf {
        self.root.join(format!("{}.log", self.name))
    }

    fn log(&self) -> String {
        read_lossy(&self.log_path())
    }

    /// Start (or start again) with the same arguments; the log grows.
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        self.child = Some(
            std::process::Command::new(env!("CARGO_BIN_EXE_outpost-init"))
                .args(&self.cmd)
                .stderr(log)
                .spawn()
                .unwrap(),
        );
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
fn fleet(tag: &str, n: usize, spec: Spec) -> (HostDevice, Mosquitto, Boards) {
    let dev = HostDevice::new(tag);
    let broker = Mosquitto::start(&dev.site, &dev.cli.path("broker"));
    dev.write_cli_config();
    let boards = Boards::start(&dev.site, &dev.cli.path("boards"), &broker, n, spec);
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
    let (dev, broker, boards) = fleet("ro", n, plain);
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
    assert!(
        seen.iter().any(|s| s == "soaking 2"),
        "the last wave soaks (and is re-checked) too: {seen:?}"
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
    let sessions: Vec<f64> = v["devices"]
        .as_object()
        .unwrap()
        .values()
        .map(|d| d["sessions"].as_f64().unwrap())
        .collect();
    println!(
        "rollout: {n} boards, {parallel} at a time, in 2 waves (20 %, 100 %; soak 2 s, each wave re-checked) finished in {:.1} s (incl. {discover} s group discovery); per board upload+install+reboot+commit {:.1} s median, {:.1} s max, {} broker sessions median, {} max; status saw {seen:?}",
        took.as_secs_f64(),
        median(&secs),
        secs.iter().cloned().fold(0.0, f64::max),
        median(&sessions),
        sessions.iter().cloned().fold(0.0, f64::max)
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
    // b0002, b0012, … are another model.
    let other: Spec = |i| (if i % 10 == 2 { "other" } else { "qemu-virt" }, "1.0.0");
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

/// `outpost rollout start BUNDLE ARGS` in the background; its stdout and
/// stderr go to `TAG.out` and `TAG.err` in the CLI's dir.
fn spawn_rollout(dev: &HostDevice, url: &str, b: &Path, args: &[&str], tag: &str) -> Child {
    let mut all = vec!["--broker", url, "rollout", "start", b.to_str().unwrap()];
    all.extend_from_slice(args);
    dev.cli
        .command(&all)
        .stdout(std::fs::File::create(dev.cli.path(&format!("{tag}.out"))).unwrap())
        .stderr(std::fs::File::create(dev.cli.path(&format!("{tag}.err"))).unwrap())
        .spawn()
        .unwrap()
}

/// `rollout status -o json`, if there is a state file.
fn status(dev: &HostDevice) -> Option<serde_json::Value> {
    let o = dev.cli.outpost(&["rollout", "status", "-o", "json"]);
    o.status
        .success()
        .then(|| serde_json::from_slice(&o.stdout).unwrap())
}

/// Poll `rollout status` until `what` holds.
fn wait_status(
    dev: &HostDevice,
    secs: u64,
    why: &str,
    what: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = Instant::now();
    loop {
        if let Some(v) = status(dev) {
            if what(&v) {
                return v;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "{why}: never; last status {:?}",
            status(dev)
        );
        std::thread::sleep(Duration::from_millis(150));
    }
}

/// Wait for a background rollout to end; its exit status and stderr.
fn finish(dev: &HostDevice, run: &mut Child, tag: &str, secs: u64) -> (bool, String) {
    assert!(
        wait_until(secs, || run.try_wait().unwrap().is_some()),
        "the rollout did not end: {}",
        read_lossy(&dev.cli.path(&format!("{tag}.err")))
    );
    let ok = run.wait().unwrap().success();
    (ok, read_lossy(&dev.cli.path(&format!("{tag}.err"))))
}

/// 8 boards, waves of 4 and 4, one board at a time. While b0001 upgrades,
/// `rollout abort` from another process: the rollout takes it within a
/// tick, starts nothing more, lets b0001 finish, and ends aborted with
/// who and why recorded; b0003 and all of wave 2 stay on 1.0.0.
#[test]
fn an_operator_abort_from_another_process_stops_the_rollout() {
    let (dev, broker, boards) = fleet("ra", 8, plain);
    let b = bundle(&dev);
    let url = broker.url();
    let names = boards.names();
    let list = names.join(",");
    let mut run = spawn_rollout(
        &dev,
        &url,
        &b,
        &[
            "--devices",
            &list,
            "--waves",
            "50,100",
            "--parallel",
            "1",
            "--soak",
            "60",
            "--timeout",
            "60",
        ],
        "run",
    );
    wait_status(&dev, 60, "b0000 succeeded", |v| {
        v["devices"]["b0000"]["state"] == "succeeded"
    });
    // A second rollout of the context is refused while this one runs.
    let second = dev.cli.outpost(&[
        "--broker",
        &url,
        "rollout",
        "start",
        b.to_str().unwrap(),
        "--devices",
        "b0007",
    ]);
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{err}");
    assert!(err.contains("is running"), "{err}");
    let asked = Instant::now();
    let abort = dev.cli.command(&[
        "rollout",
        "abort",
        "--reason",
        "error rate on the dashboard",
        "-o",
        "json",
    ]);
    let out = { abort }.output().unwrap();
    let taken = asked.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["phase"], "aborted", "{v}");
    assert_eq!(v["abort"]["reason"], "error rate on the dashboard", "{v}");
    assert!(!v["abort"]["by"].as_str().unwrap().is_empty(), "{v}");
    // Within a couple of seconds (0.2 s measured; slack for a loaded CI).
    assert!(
        taken < Duration::from_secs(5),
        "the running rollout took the abort in {taken:?}"
    );
    let (ok, err) = finish(&dev, &mut run, "run", 90);
    assert!(!ok, "an aborted rollout exits with an error: {err}");
    assert!(err.contains("rollout aborted: aborted by"), "{err}");
    let v = dev.cli.json(&["rollout", "status"]);
    assert_eq!(v["phase"], "aborted", "{v}");
    let why = v["detail"].as_str().unwrap();
    assert!(why.contains("error rate on the dashboard"), "{why}");
    let d = &v["devices"];
    assert_eq!(d["b0000"]["state"], "succeeded", "{v}");
    // In flight (or just handed out) when the abort came: it finished.
    let b1 = d["b0001"]["state"].as_str().unwrap();
    assert!(b1 == "succeeded" || b1 == "skipped", "{v}");
    assert_eq!(d["b0003"]["state"], "skipped", "{v}");
    assert_eq!(v["waves"][1]["skipped"], 4, "later waves untouched: {v}");
    let untouched: Vec<String> = names[3..].to_vec();
    let now = versions(&dev, &url, &untouched);
    assert_eq!(now.len(), untouched.len());
    assert!(now.iter().all(|(_, v)| v == "1.0.0"), "{now:?}");
    let again = dev.cli.outpost(&["rollout", "abort"]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("nothing to abort"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    println!(
        "rollout abort by the operator: taken in {:.2} s; b0001 {b1}; {} skipped",
        taken.as_secs_f64(),
        v["waves"][0]["skipped"].as_u64().unwrap() + v["waves"][1]["skipped"].as_u64().unwrap()
    );
}

/// A rollout process killed while b0001 upgrades: `status` says
/// interrupted, a new `start` is refused (naming resume and abort),
/// `abort` would mark the file itself (tried on a copy), a changed bundle
/// is refused, and `resume` finishes it: b0000 keeps its outcome (not
/// upgraded again), b0001 is re-checked, wave 2 follows.
#[test]
fn a_killed_rollout_shows_interrupted_and_resume_finishes_it() {
    let (dev, broker, boards) = fleet("rk", 4, plain);
    let b = bundle(&dev);
    let url = broker.url();
    let list = boards.names().join(",");
    let args = [
        "--devices",
        &list,
        "--waves",
        "50,100",
        "--parallel",
        "1",
        "--soak",
        "2",
        "--timeout",
        "60",
    ];
    let mut run = spawn_rollout(&dev, &url, &b, &args, "run");
    let before = wait_status(&dev, 60, "b0000 done, b0001 upgrading", |v| {
        v["devices"]["b0000"]["state"] == "succeeded" && v["devices"]["b0001"]["state"] == "running"
    });
    run.kill().unwrap();
    run.wait().unwrap();
    let v = status(&dev).unwrap();
    assert_eq!(v["phase"], "interrupted", "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("rollout resume"),
        "{v}"
    );
    let text = dev.cli.ok(&["rollout", "status"]);
    assert!(text.contains("interrupted"), "{text}");
    // No second rollout over it.
    let mut again = vec!["--broker", &url, "rollout", "start", b.to_str().unwrap()];
    again.extend_from_slice(&args);
    let out = dev.cli.outpost(&again);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("interrupted")
            && err.contains("rollout resume")
            && err.contains("rollout abort"),
        "{err}"
    );
    // `abort` of a dead rollout marks its file itself (tried on a copy,
    // then the file is put back to resume it).
    let file = dev.cli.path("state/rollout/test.json");
    let saved = std::fs::read(&file).unwrap();
    let v = dev
        .cli
        .json(&["rollout", "abort", "--reason", "laptop gone"]);
    assert_eq!(v["phase"], "aborted", "{v}");
    assert!(v["detail"].as_str().unwrap().contains("laptop gone"), "{v}");
    assert_eq!(v["devices"]["b0000"]["state"], "succeeded", "{v}");
    assert_eq!(v["devices"]["b0001"]["state"], "unknown", "{v}");
    assert_eq!(v["devices"]["b0002"]["state"], "skipped", "{v}");
    let out = dev.cli.outpost(&["--broker", &url, "rollout", "resume"]);
    assert!(!out.status.success(), "an aborted rollout is not resumed");
    std::fs::write(&file, &saved).unwrap();
    // The bundle changed: refused.
    let original = std::fs::read(&b).unwrap();
    let mut changed = original.clone();
    changed.push(0);
    std::fs::write(&b, &changed).unwrap();
    let out = dev.cli.outpost(&["--broker", &url, "rollout", "resume"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("changed"), "{err}");
    std::fs::write(&b, &original).unwrap();

    let started = Instant::now();
    let out = dev
        .cli
        .outpost(&["--broker", &url, "rollout", "resume", "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["phase"], "finished", "{v}");
    assert_eq!(v["resumed_unix"].as_array().unwrap().len(), 1, "{v}");
    for w in v["waves"].as_array().unwrap() {
        assert_eq!(w["succeeded"], 2, "{v}");
    }
    let d = &v["devices"];
    assert_eq!(
        d["b0000"]["secs"], before["devices"]["b0000"]["secs"],
        "b0000 kept its outcome: {v}"
    );
    assert_eq!(
        read_lossy(&dev.cli.path("boards/b0000.log"))
            .matches("upgrade: installing")
            .count(),
        1,
        "b0000 was upgraded once"
    );
    let now = versions(&dev, &url, &boards.names());
    assert!(now.iter().all(|(_, v)| v == "1.1.0"), "{now:?}");
    println!(
        "rollout resume: killed with b0001 in flight; resumed to finished in {:.1} s; b0001: {}",
        started.elapsed().as_secs_f64(),
        d["b0001"]["detail"]
    );
}

/// b0001 starts on 1.1.0 already: it counts as succeeded, and nothing is
/// uploaded to it or installed (its log shows neither, unlike b0000's).
#[test]
fn a_board_already_on_the_target_counts_as_succeeded_without_an_upload() {
    let spec: Spec = |i| ("qemu-virt", if i == 1 { "1.1.0" } else { "1.0.0" });
    let (dev, broker, boards) = fleet("ry", 3, spec);
    let b = bundle(&dev);
    let url = broker.url();
    let list = boards.names().join(",");
    let v = dev.cli.json(&[
        "--broker",
        &url,
        "rollout",
        "start",
        b.to_str().unwrap(),
        "--devices",
        &list,
        "--waves",
        "100",
        "--soak",
        "1",
        "--timeout",
        "60",
    ]);
    assert_eq!(v["phase"], "finished", "{v}");
    let d = &v["devices"];
    assert_eq!(d["b0001"]["state"], "succeeded", "{v}");
    assert!(
        d["b0001"]["detail"]
            .as_str()
            .unwrap()
            .contains("already on 1.1.0"),
        "{v}"
    );
    assert_eq!(d["b0001"]["sessions"], 1, "one Slots question: {v}");
    assert_eq!(d["b0000"]["state"], "succeeded", "{v}");
    assert!(d["b0000"]["detail"].is_null(), "{v}");
    let log = |n: &str| read_lossy(&dev.cli.path(&format!("boards/{n}.log")));
    for (name, upgraded) in [("b0000", true), ("b0001", false), ("b0002", true)] {
        let l = log(name);
        assert_eq!(l.contains("upload "), upgraded, "{name}: {l}");
        assert_eq!(l.contains("upgrade: installing"), upgraded, "{name}: {l}");
    }
    // An upgrade keeps one session for its polls through the reboot.
    let sessions = d["b0000"]["sessions"].as_u64().unwrap();
    assert!(sessions <= 8, "b0000 opened {sessions} broker sessions");
    println!(
        "rollout already-there: b0001 1 broker session, no upload; an upgraded board opened {sessions} sessions in {:.1} s",
        d["b0000"]["secs"].as_f64().unwrap()
    );
}

/// 4 boards, waves of 2, 100 % must succeed. While wave 1 soaks, b0000's
/// new slot B stops coming up (its attempts spent) and the board boots A
/// again. The re-check at the end of the soak finds it: failed, the wave
/// misses its threshold, the rollout aborts and wave 2 stays untouched.
#[test]
fn a_board_that_falls_back_during_the_soak_counts_as_failed() {
    let (dev, broker, mut boards) = fleet("rs", 4, plain);
    let b = bundle(&dev);
    let url = broker.url();
    let list = boards.names().join(",");
    let mut run = spawn_rollout(
        &dev,
        &url,
        &b,
        &[
            "--devices",
            &list,
            "--waves",
            "50,100",
            "--parallel",
            "2",
            "--soak",
            "12",
            "--success-threshold",
            "100",
            "--timeout",
            "60",
        ],
        "run",
    );
    let soaking = wait_status(&dev, 60, "wave 1 soaking", |v| {
        v["phase"] == "soaking" && v["wave"] == 1
    });
    assert_eq!(soaking["devices"]["b0000"]["slot"], "B", "{soaking}");
    boards.fall_back(0, Slot::B);
    let (ok, err) = finish(&dev, &mut run, "run", 120);
    assert!(!ok, "{err}");
    assert!(err.contains("b0000: FAILED its soak re-check"), "{err}");
    let v = dev.cli.json(&["rollout", "status"]);
    assert_eq!(v["phase"], "aborted", "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("wave 1 : 1 of 2"),
        "{v}"
    );
    let d = &v["devices"];
    assert_eq!(d["b0000"]["state"], "failed", "{v}");
    let why = d["b0000"]["detail"].as_str().unwrap();
    assert!(
        why.contains("fell back during the soak") && why.contains("booted slot A again"),
        "{why}"
    );
    assert_eq!(d["b0001"]["state"], "succeeded", "{v}");
    assert_eq!(v["waves"][1]["skipped"], 2, "{v}");
    let now: std::collections::BTreeMap<String, String> =
        versions(&dev, &url, &boards.names()).into_iter().collect();
    assert_eq!(now["b0000"], "1.0.0", "really fell back: {now:?}");
    assert_eq!(now["b0001"], "1.1.0", "{now:?}");
    assert_eq!((&*now["b0002"], &*now["b0003"]), ("1.0.0", "1.0.0"));
    println!("rollout soak re-check: b0000 {why}");
}
