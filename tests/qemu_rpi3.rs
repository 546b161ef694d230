//! System test of the Raspberry Pi path: the `rpi3` image boots in
//! `qemu-system-aarch64 -M raspi3b` from the SD card through Debian's U-Boot
//! (rpi_3), and outpost-init answers `status` over mutual TLS on the serial
//! transport: the PL011 UART (ttyAMA0; the console is on the mini UART, as
//! on the board) wired to a Unix socket (`outpost qemu up --mgmt-serial`).
//! The GPU firmware does not run in QEMU: `outpost qemu up` hands QEMU
//! u-boot.bin (config.txt's kernel=) and the board's DTB itself.
//!
//! Two QEMU 7.2 limits shape the test board (a copy of boards/rpi3.toml):
//! - QEMU's BCM2835 power-management block resets the machine as soon as the
//!   watchdog is started (it models the reset, not the countdown), so
//!   bcm2835_wdt is left out;
//! - usb-net on its dwc2 host does not enumerate under Debian's dwc2 driver
//!   ("dwc2 3f980000.usb: Not connected", no interface within 20 s), so the
//!   API goes over the serial transport, with `outpost.serial=/dev/ttyAMA0`
//!   and the `bcm2837-bt-off` overlay: Debian's DTB hangs Bluetooth under
//!   the PL011 (serdev), which otherwise leaves no /dev/ttyAMA0.
//!
//! Needs `scripts/setup` and `scripts/build-init`; OUTPOST_SKIP_QEMU=1 leaves
//! it out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{repo, skip_qemu, Cli, QemuGuard};

#[test]
fn rpi3_image_boots_in_raspi3b_and_answers_status() {
    if skip_qemu() {
        return;
    }
    let env = Cli::new();
    let boards = env.path("boards");
    std::fs::create_dir_all(&boards).unwrap();
    let rpi3 = std::fs::read_to_string(repo().join("boards/rpi3.toml")).unwrap();
    let test_board = rpi3.replacen(", \"bcm2835_wdt\"]", "]", 1).replacen(
        "cmdline = \"panic=5 loglevel=4\"",
        "cmdline = \"panic=5 loglevel=4 outpost.serial=/dev/ttyAMA0\"\noverlays = [\"bcm2837-bt-off\"]",
        1,
    );
    assert!(!test_board.contains("bcm2835_wdt\"") && test_board.contains("ttyAMA0"));
    std::fs::write(boards.join("rpi3.toml"), test_board).unwrap();
    // Cli passes a boards/ of its own dir on as OUTPOST_BOARDS.

    let img = env.board_image("rpitest", "edge-pi", "rpi3");
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 385 << 20);
    let sock = env.path("mgmt.sock");
    let sock_s = sock.to_str().unwrap();
    let started = Instant::now();
    env.ok(&[
        "qemu",
        "up",
        img.to_str().unwrap(),
        "--name",
        "pi",
        "--mgmt-serial",
        sock_s,
        "--no-wait",
    ]);
    let _guard = QemuGuard::new(&env, "pi");
    // QEMU's SD card must be a power of two: qemu up padded the image.
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 512 << 20);

    let s = loop {
        let out = env.outpost(&["--serial", sock_s, "-o", "json", "status"]);
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            break v["Status"].clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(400),
            "no status over the serial line: {}\nconsole:\n{}",
            String::from_utf8_lossy(&out.stderr),
            env.console_tail("pi", 60)
        );
        std::thread::sleep(Duration::from_secs(2));
    };
    eprintln!(
        "raspi3b: QEMU start -> status over serial in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(s["hostname"], "edge-pi", "{s}");
    assert_eq!(s["slot"], "A", "{s}");

    // It came the Raspberry Pi way: U-Boot rpi_3 on the mini UART ran our
    // boot.scr from the SD card (mmc 0) and booted the slot's own DTB with
    // the slot's overlay (Bluetooth off, so the PL011 is ttyAMA0) applied.
    let console = env.console("pi");
    for needle in [
        "U-Boot 2023.01",
        "RPI 3 Model B",
        "Scanning mmc 0:1",
        "outpost: slot A chosen",
        "outpost: booting slot A",
        // The slot's DTB (fdt_addr_r) with the slot's overlay applied to a copy.
        "outpost: overlay bcm2837-bt-off applied",
        "DATA mounted device=/dev/mmcblk0p4",
    ] {
        assert!(
            console.contains(needle),
            "console lacks {needle:?}:\n{}",
            env.console_tail("pi", 60)
        );
    }
    assert!(!console.contains("using the firmware device tree"));
    // The machine line is among the first of the kernel log: ask for all of it.
    let dmesg = env.ok(&["--serial", sock_s, "dmesg", "--bytes", "60000"]);
    assert!(dmesg.contains("Raspberry Pi 3 Model B"), "model in dmesg");
    assert!(dmesg.contains("outpost.slot=A"));
}
