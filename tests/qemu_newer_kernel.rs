//! The newer Debian parts the Pi 5 needs — trixie's U-Boot (2025.01) and
//! the trixie-backports kernel (7.x) — booted where they can run here: a
//! qemu-virt image built with them instead of bookworm's. What this proves
//! for the rpi5 board, which QEMU cannot emulate: boot.scr's A/B logic
//! (state copies, slot choice, loads, booti) on U-Boot 2025.01, the split
//! kernel package (linux-base/-binary/-modules) unpacked into one tree, its
//! modules fetched as .ko.xz and unpacked, the 49 MiB Image in U-Boot's
//! areas, and outpost-init loading those modules (`finit_module` of the
//! signed, decompressed files) up to the API.
//!
//! The same board also names a DATA device that does not exist (`vdb4`,
//! as a Pi 4/5 whose Wi-Fi SDIO host took mmc0 would look for `mmcblk0p4`
//! while its card is `mmcblk1p4`): outpost-init finds DATA by its label on
//! the disk that is there.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{skip_qemu, Cli, QemuGuard};

/// The repository's boards, with qemu-virt's kernel taken from
/// trixie-backports, U-Boot's areas widened for its larger Image, and DATA
/// named on a disk that is not there.
fn boards_with_the_newer_kernel(env: &Cli) {
    common::boards_with_qemu_virt_edits(
        env,
        &[
            ("suite = \"bookworm\"", "suite = \"trixie\""),
            (
                "[kernel]\npackage = \"linux-image-arm64\"\n",
                "[kernel]\npackage = \"linux-image-arm64\"\nsuite = \"trixie-backports\"\n",
            ),
            // Image.gz <= 32 MiB, the inflated Image <= 64 MiB (RAM is
            // 0x40000000 up; 256 MiB in `qemu up`).
            (
                "kernel_comp_addr_r = 0x41400000",
                "kernel_comp_addr_r = 0x42400000",
            ),
            ("ramdisk_addr_r = 0x44000000", "ramdisk_addr_r = 0x46400000"),
            ("data_device = \"/dev/vda4\"", "data_device = \"/dev/vdb4\""),
        ],
    );
}

#[test]
fn trixie_u_boot_and_the_backports_kernel_boot_and_data_is_found_by_its_label() {
    if skip_qemu() {
        return;
    }
    let env = Cli::new();
    boards_with_the_newer_kernel(&env);
    let img = env.qemu_image("newk", "edge-newk");
    let up = env.json(&[
        "qemu",
        "up",
        img.to_str().unwrap(),
        "--name",
        "newk",
        "--timeout",
        "240",
    ]);
    let _guard = QemuGuard::new(&env, "newk");

    let status = env.json(&["status"])["Status"].clone();
    assert_eq!(status["hostname"], "edge-newk", "{status}");
    // U-Boot 2025.01 ran boot.scr: it chose slot A and said so on the console.
    let console = env.console("newk");
    assert!(console.contains("U-Boot 2025.01"), "{console}");
    assert_eq!(status["slot"], "A", "{status}");
    let slots = env.json(&["slots"]);
    assert_eq!(slots["Slots"]["booted"], "A", "{slots}");
    let dmesg = env.ok(&["dmesg"]);
    let version = dmesg
        .lines()
        .find(|l| l.contains("Linux version"))
        .unwrap_or_else(|| panic!("no `Linux version` in dmesg:\n{dmesg}"));
    assert!(
        version.contains("+deb13-arm64") && !version.contains("6.1.0-"),
        "not the trixie-backports kernel: {version}"
    );
    // Every module of the board and its dependencies loaded: the init logs
    // each, and names any that failed or was never tried.
    let logs = env.ok(&["logs", "--lines", "1000"]);
    assert!(logs.contains("API listening"), "{logs}");
    for bad in ["module failed", "not tried", "not in modules.dep"] {
        assert!(!logs.contains(bad), "`{bad}` in the log:\n{logs}");
    }
    let loaded = logs.matches("module loaded").count();
    assert!(loaded >= 4, "{loaded} modules loaded:\n{logs}");
    assert!(
        logs.contains("DATA device /dev/vdb4 is missing; DATA found by its label on /dev/vda4"),
        "{logs}"
    );
    // The first-boot grow, BOOT's state copies and the slots followed DATA
    // to the disk actually used (vda): slot A was marked good.
    assert!(logs.contains("slot A marked good"), "{logs}");
    assert!(!logs.contains("DATA not grown"), "{logs}");
    assert!(
        logs.contains("DATA fills its disk") || logs.contains("DATA grown from"),
        "{logs}"
    );
    eprintln!(
        "booted: {version}\nQEMU start to first API answer {} ms, guest uptime then {} ms",
        up["boot_wall_ms"], up["status"]["uptime_ms"]
    );
}
