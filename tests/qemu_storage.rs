//! System test for storage and persisted logs: an image on a disk 512 MiB
//! larger than built boots in QEMU; DATA grows to fill it at first boot and
//! stays grown and intact across a reboot; the previous boot's system and
//! kernel logs are readable after the reboot (`logs/dmesg --boot -1`).
//! Needs `scripts/setup` and `scripts/build-init`; OUTPOST_SKIP_QEMU=1 skips.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Cli, QemuGuard};

const GROW: u64 = 512 << 20;

/// (DATA total KiB, boot id) from `status -o json`.
fn status(env: &Cli) -> (u64, String) {
    let v = env.json(&["status"]);
    let total = v["Data"]["total_kib"]
        .as_u64()
        .unwrap_or_else(|| panic!("{v}"));
    (total, v["Status"]["boot_id"].as_str().unwrap().to_owned())
}

#[test]
fn data_grows_to_the_disk_and_logs_survive_a_reboot() {
    if common::skip_qemu() {
        return;
    }
    let env = Cli::new();
    let img = env.qemu_image("storage", "edge-st");
    let site = env.path("site");
    let site_s = site.to_str().unwrap();
    // A bigger card than the image: 512 MiB more after DATA.
    let built = std::fs::metadata(&img).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.set_len(built + GROW).unwrap();
    drop(f);

    let up = env.json(&[
        "qemu",
        "up",
        img.to_str().unwrap(),
        "--name",
        "storage",
        "--timeout",
        "240",
    ]);
    eprintln!("qemu up: {up}");
    let _guard = QemuGuard::new(&env, "storage");

    // First boot: DATA (64 MiB in the image) now fills the disk.
    let (total, first_id) = status(&env);
    assert!(
        total > 500 * 1024 && total <= (576 << 10),
        "DATA is {total} KiB after the first boot"
    );
    let text = env.ok(&["status"]);
    assert!(
        text.contains("DATA") && text.contains("MiB used of"),
        "{text}"
    );
    let logs = env.ok(&["logs", "--lines", "500"]);
    assert!(logs.contains("DATA grown from 64 MiB to 576 MiB"), "{logs}");
    assert!(logs.contains("root filesystem is read-only"), "{logs}");
    let kernel = env.ok(&["dmesg", "--bytes", "200000"]);
    assert!(kernel.contains("resizing filesystem"), "{kernel}");

    // Reboot: DATA stays grown, and its content (identity, config) is intact.
    env.ok(&["reboot"]);
    env.status_after_reboot(&first_id, Duration::from_secs(240));
    let (after, second_id) = status(&env);
    assert_eq!(after, total, "DATA size changed across a reboot");
    let config = env.ok(&["config", "get"]);
    assert!(config.contains("edge-st"), "{config}");
    let logs = env.ok(&["logs", "--lines", "500"]);
    assert!(logs.contains("DATA fills its disk (576 MiB)"), "{logs}");

    // The previous boot's logs: its boot id, and what only it did.
    let previous = env.ok(&["logs", "--boot", "-1", "--lines", "2000"]);
    assert!(
        previous.contains(&format!("boot id {first_id}")),
        "{previous}"
    );
    assert!(previous.contains("DATA grown from 64 MiB"), "{previous}");
    assert!(previous.contains("Reboot requested"), "{previous}");
    assert!(!previous.contains(&second_id), "{previous}");
    let v = env.json(&["logs", "--boot", "-1", "--lines", "5"]);
    assert_eq!(v["BootLog"].as_str().unwrap().lines().count(), 5, "{v}");
    let kernel_prev = env.ok(&["dmesg", "--boot", "-1", "--bytes", "60000"]);
    assert!(kernel_prev.contains("resizing filesystem"), "{kernel_prev}");
    let kernel_now = env.ok(&["dmesg", "--bytes", "200000"]);
    assert!(!kernel_now.contains("resizing filesystem"), "{kernel_now}");

    // A power cut: a warning is flushed within a second; then QEMU is
    // killed (the guest's unsynced page cache is lost, as in a real cut).
    env.ok(&[
        "gen", "client", "--site", site_s, "--name", "watcher", "--role", "reader",
    ]);
    let (crt, key) = (
        env.path("site/clients/watcher.crt"),
        env.path("site/clients/watcher.key"),
    );
    let node = outpost::host::context::Node {
        address: up["address"].as_str().unwrap().to_owned(),
        server_name: "edge-st".into(),
    };
    let reader = outpost::host::client::client_config(&site.join("ca.crt"), &crt, &key).unwrap();
    let refused = outpost::host::client::Client::connect_with(reader, &node)
        .unwrap()
        .call(outpost::wire::Request::Reboot);
    assert!(refused.is_err());
    std::thread::sleep(Duration::from_secs(3));
    let pid = std::fs::read_to_string(env.path("state/qemu/storage/qemu.pid")).unwrap();
    let pid = pid.trim();
    Command::new("kill").args(["-9", pid]).status().unwrap();
    // Gone, or a zombie (daemonized QEMU is reaped by whoever adopted it).
    let start = Instant::now();
    while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z ")) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "QEMU did not die"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // `qemu up` takes a live pid file's process for a running device.
    let _ = std::fs::remove_file(env.path("state/qemu/storage/qemu.pid"));
    env.json(&[
        "qemu",
        "up",
        img.to_str().unwrap(),
        "--name",
        "storage",
        "--timeout",
        "240",
    ]);
    let (after_cut, third_id) = status(&env);
    assert_eq!(after_cut, total, "DATA size changed across a power cut");
    assert_ne!(third_id, second_id);
    let cut = env.ok(&["logs", "--boot", "-1", "--lines", "2000"]);
    assert!(cut.contains(&format!("boot id {second_id}")), "{cut}");
    assert!(cut.contains("reboot refused to a reader client"), "{cut}");
    let two_back = env.ok(&["logs", "--boot", "-2", "--lines", "2000"]);
    assert!(
        two_back.contains(&format!("boot id {first_id}")),
        "{two_back}"
    );
    eprintln!(
        "DATA {total} KiB after growing; first boot's grow lines:\n{}",
        previous
            .lines()
            .filter(|l| l.contains("DATA") || l.contains("read-only"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    let down = env.ok(&["qemu", "down", "--name", "storage"]);
    assert!(down.contains("powered off"), "{down}");
}
