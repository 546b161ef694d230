//! Delta upgrade in QEMU with the real image: the card is built with
//! outpost-init N (0.1.0); release 0.2.0 is outpost-init rebuilt with one
//! config default changed (N+1). `outpost upgrade` sends only the chunks
//! the board lacks — counted on a link emulator — the board assembles slot
//! B from slot A and them, reboots through U-Boot into B and commits it.
//! Needs `scripts/setup` and `scripts/build-init`; builds N+1 once (see
//! `common::init_binary_n1`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Instant;

use common::{image_build, init_binary, init_binary_n1, skip_qemu, through_link, Cli, QemuGuard};

#[test]
fn delta_upgrade_to_a_rebuilt_init_commits_and_sends_little() {
    if skip_qemu() {
        return;
    }
    let (n, n1) = (init_binary(), init_binary_n1());
    assert_ne!(
        std::fs::read(&n).unwrap(),
        std::fs::read(&n1).unwrap(),
        "N+1 differs"
    );
    let env = Cli::new();
    let _guard = QemuGuard::new(&env, "dl");
    let site = env.site_with_device("deltatest", "edge-dl");
    let site = site.to_str().unwrap();
    let img = env.path("edge.img");
    let mut build = image_build(site, "edge-dl", img.to_str().unwrap(), n.to_str().unwrap());
    build.extend(["--version", "0.1.0"]);
    env.ok(&build);
    let bundle = env.bundle(site, "0.2.0", n1.to_str().unwrap());
    let full = std::fs::metadata(&bundle).unwrap().len();

    env.ok(&[
        "qemu",
        "up",
        img.to_str().unwrap(),
        "--name",
        "dl",
        "--timeout",
        "240",
    ]);
    let emu = through_link(&env, |_| {});
    let start = Instant::now();
    let out = env.outpost(&["upgrade", bundle.to_str().unwrap(), "--timeout", "300"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{err}\n{}",
        env.console_tail("dl", 40)
    );
    let up: u64 = emu.connections().iter().map(|c| c.up).sum();
    eprintln!(
        "delta upgrade N -> N+1: {up} bytes up (TLS included) for a {full}-byte bundle, {:.1} s\n{err}",
        start.elapsed().as_secs_f64()
    );
    let s = env.json(&["slots"])["Slots"].clone();
    assert_eq!(s["booted"], "B", "{s}");
    assert_eq!(s["slots"][1]["state"], "active", "{s}");
    let status = env.json(&["status"]);
    assert_eq!(status["Status"]["os_version"], "0.2.0");
    // Well under the full bundle. The goal, <= 5 %, is met (4.6-4.8 % in
    // the runs so far), but how many bytes of a rebuilt binary change is the
    // compiler's choice: the bound leaves room for that.
    assert!(
        up * 10 < full,
        "{up} bytes up for a {full}-byte bundle\n{err}"
    );
    env.ok(&["qemu", "down", "--name", "dl"]);
}
