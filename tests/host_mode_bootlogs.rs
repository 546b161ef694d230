//! Logs that survive a reboot, in host mode: the real outpost-init binary
//! (DATA in a temp dir) "reboots" by re-executing itself; the previous
//! boot's system log is then readable with `BootLogs` and `logs --boot -1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::HostDevice;
use outpost::host::client::Client;
use outpost::wire::{LogSource, Request, Response, WireError};

fn client(dev: &HostDevice, name: &str) -> Option<Client> {
    Client::connect_with(dev.tls(name), &dev.node).ok()
}

fn boot_id(c: &mut Client) -> Option<String> {
    match c.call(Request::Status) {
        Ok(Response::Status(s)) => Some(s.boot_id),
        _ => None,
    }
}

/// The raw answer: the wire error itself, not the CLI's text of it.
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
    let dev = HostDevice::new("test");
    dev.site.issue_client("watcher", "reader").unwrap();
    let dev = dev.start();
    dev.write_cli_config();
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
    assert!(dev.data.join("logs/boot-1/system.log").is_file());

    // The CLI: `logs --boot -1`, text and JSON; `dmesg --boot -1` names the error.
    let text = dev.cli.ok(&["logs", "--boot", "-1", "--lines", "1000"]);
    assert!(text.contains(&format!("boot id {first}")), "{text}");
    let json = dev.cli.json(&["logs", "--boot", "-1", "--lines", "2"]);
    let lines = json["BootLog"].as_str().unwrap();
    assert_eq!(lines.lines().count(), 2, "{json}");
    assert!(lines.ends_with("reboot (re-exec)\n"), "{json}");
    let out = dev.cli.outpost(&["dmesg", "--boot", "-1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no kernel log of boot -1"));
    let out = dev.cli.outpost(&["logs", "web", "--boot", "-1"]);
    assert!(
        !out.status.success(),
        "a service's log is not persisted here"
    );
}
