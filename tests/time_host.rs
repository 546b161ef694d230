//! Time in host mode: the real outpost-init, unprivileged, syncing with an
//! SNTP responder inside this test on 127.0.0.1; `outpost time` reports it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use outpost::device::clock::sntp::unix_ns_to_ntp;
use outpost::host::pki::Site;

const YEAR_MS: u64 = 365 * 86_400 * 1000;

struct Device {
    child: Child,
    tmp: tempfile::TempDir,
}

impl Drop for Device {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Device {
    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }
    fn outpost(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_outpost"))
            .args(args)
            .env("OUTPOST_CONFIG", self.path("cli.toml"))
            .env_remove("OUTPOST_NODE")
            .output()
            .unwrap()
    }
    /// `outpost -o json time` → the TimeInfo object.
    fn time(&self) -> serde_json::Value {
        let out = self.outpost(&["-o", "json", "time"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["Time"].clone()
    }
    fn logs(&self) -> String {
        let out = self.outpost(&["logs", "--lines", "200"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// An SNTP responder on 127.0.0.1: `reply(request)` answers each datagram,
/// while `on` is set (unset: silence, as an unreachable server).
fn responder(on: Arc<AtomicBool>, reply: impl Fn(&[u8]) -> Vec<u8> + Send + 'static) -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            if on.load(Ordering::Relaxed) {
                let _ = sock.send_to(&reply(&buf[..n]), from);
            }
        }
    });
    addr
}

/// A well-formed server reply, `ahead_ms` ahead of this host's clock.
fn good_reply(req: &[u8], ahead_ms: u64) -> Vec<u8> {
    let t = (now_ms() + ahead_ms) as i64 * 1_000_000;
    let mut p = vec![0u8; 48];
    p[0] = (4 << 3) | 4; // version 4, mode 4 (server)
    p[1] = 1; // stratum 1
    p[12..16].copy_from_slice(b"GPS\0");
    p[24..32].copy_from_slice(&req[40..48]); // originate = our transmit
    p[32..40].copy_from_slice(&unix_ns_to_ntp(t));
    p[40..48].copy_from_slice(&unix_ns_to_ntp(t));
    p
}

fn start(servers: &[SocketAddr]) -> Device {
    let tmp = tempfile::tempdir().unwrap();
    let site = Site::create(&tmp.path().join("site"), "time").unwrap();
    let dev = site.issue_device("edge-1", 50000).unwrap();
    let data = tmp.path().join("data");
    for d in ["identity", "config"] {
        std::fs::create_dir_all(data.join(d)).unwrap();
    }
    std::fs::copy(dev.join("device.crt"), data.join("identity/device.crt")).unwrap();
    std::fs::copy(dev.join("device.key"), data.join("identity/device.key")).unwrap();
    std::fs::copy(site.ca_cert(), data.join("identity/ca.crt")).unwrap();
    let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    let config = std::fs::read_to_string(dev.join("machine.toml")).unwrap()
        + &format!(
            "\n[time]\nservers = [{}]\ninterval_secs = 16\nmax_backoff_secs = 2\n",
            list.join(", ")
        );
    std::fs::write(data.join("config/machine.toml"), config).unwrap();
    let port = outpost::host::qemu::free_port().unwrap();
    let (crt, key) = site.client_paths("admin");
    std::fs::write(
        tmp.path().join("cli.toml"),
        format!(
            "current_context = \"t\"\n[contexts.t]\nca = {:?}\ncert = {:?}\nkey = {:?}\ncurrent_node = \"edge-1\"\n[contexts.t.nodes.edge-1]\naddress = \"127.0.0.1:{port}\"\nserver_name = \"edge-1\"\n",
            site.ca_cert(),
            crt,
            key
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_outpost-init"))
        .args(["--host-mode", "--data", data.to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let dev = Device { child, tmp };
    wait_listening(port);
    dev
}

fn wait_listening(port: u16) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "device did not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Poll `time` until `done` holds (or fail after `secs`).
fn wait_time(
    dev: &Device,
    secs: u64,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let t = dev.time();
        if done(&t) {
            return t;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "time never became as expected; last {t}\nlogs:\n{}",
            dev.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The saved clock (unix seconds), once the file exists. The save after a
/// first sync runs on a thread of its own, not awaited, so the file can
/// lag the `time` answer that reports the sync by a moment.
fn clock_file(dev: &Device) -> u64 {
    let file = dev.path("data/state/clock");
    let start = Instant::now();
    loop {
        match std::fs::read_to_string(&file) {
            Ok(text) => return text.trim().parse().unwrap(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => assert!(
                start.elapsed() < Duration::from_secs(10),
                "{} was never written",
                file.display()
            ),
            Err(e) => panic!("{}: {e}", file.display()),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sntp_one_year_ahead_is_taken_and_survives_a_reboot() {
    let on = Arc::new(AtomicBool::new(true));
    let server = responder(on.clone(), |req| good_reply(req, YEAR_MS));
    let dev = start(&[server]);

    let t = wait_time(&dev, 20, |t| t["source"] == "sntp");
    assert_eq!(t["synced"], true, "{t}");
    let ahead = t["unix_ms"].as_u64().unwrap() as i64 - now_ms() as i64;
    assert!(
        (ahead - YEAR_MS as i64).abs() < 60_000,
        "device is {ahead} ms ahead, expected a year"
    );
    // The first sync is saved at once: the clock file is a year ahead too.
    assert!(clock_file(&dev) * 1000 > now_ms() + YEAR_MS - 120_000);
    // TLS still accepts the client (its certificate is valid for ten years;
    // rustls judges it by the device's clock, a year ahead).
    let text = String::from_utf8(dev.outpost(&["time"]).stdout).unwrap();
    assert!(text.contains("source sntp, synced"), "{text}");

    // The server goes silent; reboot: the time is restored from DATA.
    on.store(false, Ordering::Relaxed);
    let before = dev.time()["unix_ms"].as_u64().unwrap();
    let out = dev.outpost(&["reboot"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(800));
    let t = wait_time(&dev, 20, |t| t["source"] == "restored");
    assert_eq!(t["synced"], false, "{t}");
    // Saved at the reboot: to the second, never earlier than before it.
    assert!(
        t["unix_ms"].as_u64().unwrap() + 1000 >= before,
        "{t} vs {before}"
    );
}

#[test]
fn garbage_from_the_server_is_refused() {
    // Wrong mode, a zero transmit time, and a short datagram, in turn.
    let on = Arc::new(AtomicBool::new(true));
    let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let server = responder(on, move |req| {
        let mut p = good_reply(req, YEAR_MS);
        match n.fetch_add(1, Ordering::Relaxed) % 3 {
            0 => p[0] = (4 << 3) | 3,
            1 => p[40..48].fill(0),
            _ => p.truncate(20),
        }
        p
    });
    let dev = start(&[server]);
    // Three refusals take the back-off (2 s capped) a few seconds.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        let logs = dev.logs();
        if logs.contains("mode 3") && logs.contains("zero transmit") && logs.contains("shorter") {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let logs = dev.logs();
    for what in ["mode 3", "zero transmit", "shorter than the 48-byte header"] {
        assert!(
            logs.contains(what),
            "no `{what}` refusal in the log:\n{logs}"
        );
    }
    let t = dev.time();
    assert_eq!(t["source"], "rtc", "{t}");
    assert_eq!(t["synced"], false, "{t}");
    let off = t["unix_ms"].as_u64().unwrap() as i64 - now_ms() as i64;
    assert!(off.abs() < 60_000, "clock moved by {off} ms");
}

#[test]
fn a_host_name_in_time_servers_is_refused_by_field() {
    let err = outpost::config::MachineConfig::from_toml(
        "hostname = \"e\"\n[time]\nservers = [\"pool.ntp.org\"]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("time.servers") && err.contains("DNS"), "{err}");
}
