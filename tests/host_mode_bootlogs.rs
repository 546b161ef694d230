//! Logs that survive a reboot, in host mode: the real outpost-init binary
//! (DATA in a temp dir) "reboots" by re-executing itself; the previous
//! boot's system log is then readable with `BootLogs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use outpost::host::client::{client_config, Client};
use outpost::host::context::Node;
use outpost::host::pki::Site;
use outpost::wire::{LogSource, Request, Response, WireError};

struct Device {
    child: Child,
    node: Node,
    site: Site,
    tmp: tempfile::TempDir,
}

impl Drop for Device {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_device() -> Device {
    let tmp = tempfile::tempdir().unwrap();
    let site = Site::create(&tmp.path().join("site"), "test").unwrap();
    site.issue_device("edge-1", 50000).unwrap();
    site.issue_client("watcher", "reader").unwrap();
    let data = tmp.path().join("data");
    let dev = site.device_dir("edge-1");
    std::fs::create_dir_all(data.join("identity")).unwrap();
    std::fs::create_dir_all(data.join("config")).unwrap();
    for f in ["device.crt", "device.key"] {
        std::fs::copy(dev.join(f), data.join("identity").join(f)).unwrap();
    }
    std::fs::copy(site.ca_cert(), data.join("identity/ca.crt")).unwrap();
    std::fs::copy(dev.join("machine.toml"), data.join("config/machine.toml")).unwrap();
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
    let start = Instant::now();
    while TcpStream::connect(&node.address).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "no listener");
        std::thread::sleep(Duration::from_millis(20));
    }
    Device {
        child,
        node,
        site,
        tmp,
    }
}

fn client(dev: &Device, name: &str) -> Option<Client> {
    let (crt, key) = dev.site.client_paths(name);
    Client::connect_with(
        client_config(&dev.site.ca_cert(), &crt, &key).unwrap(),
        &dev.node,
    )
    .ok()
}

fn boot_id(c: &mut Client) -> Option<String> {
    match c.call(Request::Status) {
        Ok(Response::Status(s)) => Some(s.boot_id),
        _ => None,
    }
}

fn boot_log(c: &mut Client, source: LogSource, boot: u8) -> Result<String, WireError> {
    let id = c
        .send(Request::BootLogs {
            source,
            boot,
            max_bytes: 1 << 20,
        })
        .unwrap();
    let body = loop {
        let frame = c.receive().unwrap();
        if frame.id == id {
            break frame.body;
        }
    };
    match body {
        Ok(Response::BootLog(text)) => Ok(text),
        Ok(other) => panic!("{other:?}"),
        Err(e) => Err(e),
    }
}

#[test]
fn previous_boot_log_is_readable_after_a_reboot() {
    let dev = start_device();
    let mut c = client(&dev, "watcher").unwrap();
    let first = boot_id(&mut c).unwrap();
    // No earlier boot yet; boots past the kept ones are refused by name.
    assert!(matches!(
        boot_log(&mut c, LogSource::System, 1),
        Err(WireError::Device(m)) if m.contains("boot -1")
    ));
    assert!(matches!(
        boot_log(&mut c, LogSource::System, 200),
        Err(WireError::Invalid(_))
    ));
    // This boot's own copy (boot 0) is written within one batch.
    let start = Instant::now();
    loop {
        if let Ok(text) = boot_log(&mut c, LogSource::System, 0) {
            if text.contains(&format!("boot id {first}")) {
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "boot-0 not written"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // An operator reboots; the new process is a new boot.
    client(&dev, "admin")
        .unwrap()
        .call(Request::Reboot)
        .unwrap();
    let start = Instant::now();
    let (mut c, second) = loop {
        assert!(start.elapsed() < Duration::from_secs(15), "no reboot");
        std::thread::sleep(Duration::from_millis(100));
        if let Some(mut c) = client(&dev, "watcher") {
            if let Some(id) = boot_id(&mut c).filter(|id| *id != first) {
                break (c, id);
            }
        }
    };
    let previous = boot_log(&mut c, LogSource::System, 1).unwrap();
    assert!(previous.contains(&format!("boot id {first}")), "{previous}");
    // Lines logged right before the re-exec made it (flushed in the power path).
    assert!(previous.contains("reboot (re-exec)"), "{previous}");
    assert!(!previous.contains(&second), "{previous}");
    // Host mode keeps no kernel log.
    assert!(matches!(
        boot_log(&mut c, LogSource::Kernel, 1),
        Err(WireError::Device(_))
    ));
    let logs = dev.tmp.path().join("data/logs");
    assert!(logs.join("boot-0").is_dir() && logs.join("boot-1/system.log").is_file());
}
