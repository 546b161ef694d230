//! The service supervisor end to end in host mode: the real outpost-init,
//! unprivileged, supervising `examples/testsvc.rs` (built here with rustc),
//! driven over the real API on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use outpost::host::client::{client_config, Client};
use outpost::host::context::Node;
use outpost::host::pki::Site;
use outpost::wire::{LogLevel, LogLine, Request, Response, ServiceAction, ServiceInfo};

/// The test workload, compiled once per test process (std only: plain
/// rustc, no cargo lock taken while cargo runs these tests). scripts/test-pool
/// runs each test in its own process, several at once: each compiles under
/// its own name (rustc's intermediate files are named after the output) and
/// renames the result into place, so no two builds share a file.
fn testsvc() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let out = dir.join("testsvc-host");
        let own = dir.join(format!("testsvc-host-{}", std::process::id()));
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/testsvc.rs");
        let status = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
            .args(["--edition", "2021", "-O", "-o"])
            .arg(&own)
            .arg(&src)
            .status()
            .unwrap();
        assert!(status.success(), "building testsvc");
        std::fs::rename(&own, &out).unwrap();
        out
    })
}

struct Device {
    child: Child,
    node: Node,
    site: Site,
    _tmp: tempfile::TempDir,
}

impl Drop for Device {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A host-mode device whose machine config has `services` (TOML
/// `[[services]]` tables; `TESTSVC` stands for the workload's path).
fn start_device(services: &str) -> Device {
    let tmp = tempfile::tempdir().unwrap();
    let site = Site::create(&tmp.path().join("site"), "test").unwrap();
    site.issue_device("edge-1", 50000).unwrap();
    let data = tmp.path().join("data");
    let dev = site.device_dir("edge-1");
    std::fs::create_dir_all(data.join("identity")).unwrap();
    std::fs::create_dir_all(data.join("config")).unwrap();
    std::fs::copy(dev.join("device.crt"), data.join("identity/device.crt")).unwrap();
    std::fs::copy(dev.join("device.key"), data.join("identity/device.key")).unwrap();
    std::fs::copy(site.ca_cert(), data.join("identity/ca.crt")).unwrap();
    let mut machine = std::fs::read_to_string(dev.join("machine.toml")).unwrap();
    machine.push('\n');
    machine.push_str(&services.replace("TESTSVC", &testsvc().display().to_string()));
    std::fs::write(data.join("config/machine.toml"), machine).unwrap();
    let port = outpost::host::qemu::free_port().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_outpost-init"))
        .args(["--host-mode", "--data"])
        .arg(&data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let node = Node {
        address: format!("127.0.0.1:{port}"),
        server_name: "edge-1".into(),
    };
    let dev = Device {
        child,
        node,
        site,
        _tmp: tmp,
    };
    let start = Instant::now();
    while TcpStream::connect(&dev.node.address).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "device did not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    dev
}

fn admin(dev: &Device) -> Client {
    let (crt, key) = dev.site.client_paths("admin");
    Client::connect_with(
        client_config(&dev.site.ca_cert(), &crt, &key).unwrap(),
        &dev.node,
    )
    .unwrap()
}

fn services(c: &mut Client) -> Vec<ServiceInfo> {
    match c.call(Request::Services).unwrap() {
        Response::Services(s) => s,
        other => panic!("{other:?}"),
    }
}

fn service(c: &mut Client, name: &str) -> ServiceInfo {
    services(c).into_iter().find(|s| s.name == name).unwrap()
}

/// Poll until `pred` holds for `name` (or fail after `secs`).
fn wait_for(
    c: &mut Client,
    name: &str,
    secs: u64,
    pred: impl Fn(&ServiceInfo) -> bool,
) -> ServiceInfo {
    let start = Instant::now();
    loop {
        let s = service(c, name);
        if pred(&s) {
            return s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out; last: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn logs(c: &mut Client, service: Option<&str>, lines: u16) -> Vec<LogLine> {
    match c
        .call(Request::Logs {
            service,
            lines,
            follow: false,
        })
        .unwrap()
    {
        Response::Logs(l) => l,
        other => panic!("{other:?}"),
    }
}

fn action(c: &mut Client, name: &str, action: ServiceAction) {
    assert_eq!(
        c.call(Request::Service { name, action }).unwrap(),
        Response::Accepted
    );
}

#[test]
fn crash_loop_backs_off_and_on_failure_keeps_a_clean_exit_stopped() {
    let dev = start_device(
        "[[services]]\nname = \"crashy\"\nprogram = \"TESTSVC\"\nargs = [\"wait\", \"20\", \"crash\"]\n\
         backoff_initial_ms = 200\nbackoff_max_ms = 800\n\
         [[services]]\nname = \"clean\"\nprogram = \"TESTSVC\"\nargs = [\"exit\", \"0\"]\nrestart = \"on-failure\"\n\
         [[services]]\nname = \"once\"\nprogram = \"TESTSVC\"\nargs = [\"exit\", \"4\"]\nrestart = \"never\"\n",
    );
    let mut c = admin(&dev);
    // The back-off shows as a state.
    let s = wait_for(&mut c, "crashy", 10, |s| {
        s.state == "backoff" && s.restarts >= 2
    });
    assert_eq!(s.last_exit.as_deref(), Some("signal 6"));
    assert_eq!(s.pid, None);
    std::thread::sleep(Duration::from_millis(3000));
    // In ~3.3 s: restarts at 0, 200, 400, 800, 800, ... ms of back-off (plus
    // 20 ms runs): about 6. Without back-off it would be ~100.
    let s = service(&mut c, "crashy");
    assert!((4..=9).contains(&s.restarts), "{s:?}");
    // The gaps between starts grow, then stay at the cap.
    let starts: Vec<u64> = logs(&mut c, None, 500)
        .iter()
        .filter(|l| l.text.starts_with("service crashy: started"))
        .map(|l| l.at_ms)
        .collect();
    let gaps: Vec<u64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.len() >= 4, "{gaps:?}");
    assert!(gaps[0] < 150, "first restart is immediate: {gaps:?}");
    assert!(
        gaps[1] >= 200 && gaps[2] >= 400 && gaps[3] >= 800,
        "{gaps:?}"
    );
    assert!(
        gaps.iter().all(|g| *g < 800 + 400),
        "capped at 800 ms: {gaps:?}"
    );

    let clean = service(&mut c, "clean");
    assert_eq!(
        (
            clean.state.as_str(),
            clean.restarts,
            clean.last_exit.as_deref()
        ),
        ("stopped", 0, Some("exit 0"))
    );
    let once = service(&mut c, "once");
    assert_eq!(
        (
            once.state.as_str(),
            once.restarts,
            once.last_exit.as_deref()
        ),
        ("failed", 0, Some("exit 4"))
    );
}

#[test]
fn dependencies_start_in_order() {
    let port = outpost::host::qemu::free_port().unwrap();
    // `web` needs `db`, which listens only after 1.5 s and has a TCP check.
    let dev = start_device(&format!(
        "[[services]]\nname = \"web\"\nprogram = \"TESTSVC\"\nargs = [\"sleep\"]\nafter = [\"db\"]\n\
         [[services]]\nname = \"db\"\nprogram = \"TESTSVC\"\nargs = [\"wait\", \"1500\", \"listen\", \"{port}\"]\n\
         health = {{ kind = \"tcp\", port = {port} }}\n"
    ));
    let mut c = admin(&dev);
    let db = wait_for(&mut c, "db", 10, |s| s.pid.is_some());
    assert_eq!(db.state, "starting", "running but not yet healthy");
    assert_eq!(service(&mut c, "web").state, "waiting");
    let web = wait_for(&mut c, "web", 10, |s| s.state == "running");
    let db = service(&mut c, "db");
    assert_eq!(db.state, "running");
    assert!(db.uptime_ms >= web.uptime_ms + 1000, "{db:?} {web:?}");
}

#[test]
fn stop_start_restart_and_logs_over_the_api() {
    let dev = start_device(
        "[[services]]\nname = \"talker\"\nprogram = \"TESTSVC\"\n\
         args = [\"say\", \"hello from talker\", \"warn\", \"oops on stderr\", \"sleep\"]\nstop_grace_ms = 2000\n\
         [[services]]\nname = \"missing\"\nprogram = \"/nonexistent/outpost/bin\"\n",
    );
    let mut c = admin(&dev);
    let first = wait_for(&mut c, "talker", 10, |s| s.state == "running")
        .pid
        .unwrap();
    // Output of the service, stdout as info and stderr as warn.
    let start = Instant::now();
    let lines = loop {
        let lines = logs(&mut c, Some("talker"), 100);
        if lines.len() >= 3 || start.elapsed() > Duration::from_secs(5) {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        lines
            .iter()
            .any(|l| l.text == "hello from talker" && l.level == LogLevel::Info),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.text == "oops on stderr" && l.level == LogLevel::Warn),
        "{lines:?}"
    );
    // A follow stream of the service's log gets the tail, then new output.
    let id = c
        .send(Request::Logs {
            service: Some("talker"),
            lines: 10,
            follow: true,
        })
        .unwrap();
    let frame = c.receive().unwrap();
    assert_eq!(frame.id, id);
    assert!(
        matches!(&frame.body, Ok(Response::Logs(l)) if l.iter().any(|l| l.text == "hello from talker"))
    );
    c.call(Request::Cancel { id }).unwrap();

    // Stop: SIGTERM ends it (testsvc does not catch it).
    action(&mut c, "talker", ServiceAction::Stop);
    let s = wait_for(&mut c, "talker", 10, |s| s.state == "stopped");
    assert_eq!((s.pid, s.last_exit.as_deref()), (None, Some("signal 15")));
    assert!(!Path::new(&format!("/proc/{first}")).exists() || is_zombie_free(first));
    action(&mut c, "talker", ServiceAction::Start);
    let second = wait_for(&mut c, "talker", 10, |s| s.state == "running")
        .pid
        .unwrap();
    assert_ne!(second, first);
    action(&mut c, "talker", ServiceAction::Restart);
    let third = wait_for(&mut c, "talker", 10, |s| {
        s.state == "running" && s.pid != Some(second)
    })
    .pid
    .unwrap();
    assert_ne!(third, second);
    assert_eq!(
        service(&mut c, "talker").restarts,
        0,
        "operator restarts are not crashes"
    );

    // Unknown service: a clear error, the connection stays usable.
    let err = c
        .call(Request::Service {
            name: "nope",
            action: ServiceAction::Start,
        })
        .unwrap_err();
    assert!(
        err.to_string().contains("no service named `nope`"),
        "{err:#}"
    );
    let err = c
        .call(Request::Logs {
            service: Some("nope"),
            lines: 1,
            follow: false,
        })
        .unwrap_err();
    assert!(err.to_string().contains("nope"), "{err:#}");

    // A missing binary: failed, with the reason; PID 1 keeps serving.
    let m = wait_for(&mut c, "missing", 10, |s| s.state == "failed");
    let why = m.last_exit.unwrap();
    assert!(
        why.contains("/nonexistent/outpost/bin") && why.contains("No such file"),
        "{why}"
    );
    assert!(matches!(
        c.call(Request::Status).unwrap(),
        Response::Status(_)
    ));
}

/// The pid is gone or belongs to someone else now (not a zombie of ours).
fn is_zombie_free(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.contains(") Z ")
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// 5 services, one printing ~10.5 MB (100,000 lines of 105 bytes) as fast as
/// it can: the host-mode daemon's memory stays bounded. Bound: RSS before
/// the flood + 2 MiB. The rings hold at most 5 x 64 KiB; what is left is
/// allocator slack and the pipe reads (4 KiB each). Without the byte bound
/// the flood alone would keep 10.5 MB of text plus ~5 MB of line overhead.
#[test]
fn a_log_flood_keeps_memory_bounded() {
    let mut cfg = String::new();
    for i in 0..4 {
        cfg.push_str(&format!(
            "[[services]]\nname = \"idle{i}\"\nprogram = \"TESTSVC\"\nargs = [\"say\", \"idle {i}\", \"sleep\"]\n"
        ));
    }
    cfg.push_str(
        "[[services]]\nname = \"flood\"\nprogram = \"TESTSVC\"\nargs = [\"wait\", \"1500\", \"flood\", \"100000\", \"say\", \"flood over\", \"sleep\"]\n",
    );
    let dev = start_device(&cfg);
    let mut c = admin(&dev);
    for i in 0..4 {
        wait_for(&mut c, &format!("idle{i}"), 10, |s| s.state == "running");
    }
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_kib(dev.child.id());
    let start = Instant::now();
    let tail = loop {
        let tail = logs(&mut c, Some("flood"), 5);
        if tail.iter().any(|l| l.text == "flood over") {
            break tail;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "flood did not finish: {tail:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let after = rss_kib(dev.child.id());
    eprintln!("host-mode RSS before the flood {before} KiB, after {after} KiB");
    assert!(
        after <= before + 2048,
        "RSS grew from {before} to {after} KiB"
    );
    // The newest lines are kept; a first line counts what was dropped.
    let all = logs(&mut c, Some("flood"), 5000);
    assert!(all[0].text.contains("older lines dropped"), "{:?}", all[0]);
    assert!(all.len() < 1000, "{}", all.len());
    assert_eq!(tail.last().unwrap().text, "flood over");
    assert!(matches!(
        c.call(Request::Status).unwrap(),
        Response::Status(_)
    ));
}

/// A log flood must not starve PID 1's other work: the API answers and a
/// TCP health check stays healthy while another service floods.
#[test]
fn health_and_api_survive_a_flood() {
    let port = outpost::host::qemu::free_port().unwrap();
    let dev = start_device(&format!(
        "[[services]]\nname = \"web\"\nprogram = \"TESTSVC\"\nargs = [\"listen\", \"{port}\", \"sleep\"]\n\
         health = {{ kind = \"tcp\", port = {port}, interval_ms = 200, timeout_ms = 500 }}\n\
         [[services]]\nname = \"flood\"\nprogram = \"TESTSVC\"\nargs = [\"wait\", \"500\", \"flood\", \"300000\", \"say\", \"flood over\", \"sleep\"]\n"
    ));
    let mut c = admin(&dev);
    wait_for(&mut c, "web", 10, |s| s.state == "running");
    let start = Instant::now();
    let mut worst = Duration::ZERO;
    loop {
        let t = Instant::now();
        let web = service(&mut c, "web");
        worst = worst.max(t.elapsed());
        assert_eq!(web.state, "running", "{web:?}");
        if logs(&mut c, Some("flood"), 2)
            .iter()
            .any(|l| l.text == "flood over")
        {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("slowest services answer during the flood: {worst:?}");
    assert!(worst < Duration::from_millis(500), "{worst:?}");
}
