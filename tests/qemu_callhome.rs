//! QEMU: a board calls home. Its machine config points at 10.0.2.100:8883,
//! which QEMU's user network (`restrict=on`) forwards to a mosquitto on
//! 127.0.0.1 (`guestfwd`); the CLI reaches the board through the broker
//! only: status, logs, reboot. Needs `scripts/setup` and `scripts/build-init`;
//! set OUTPOST_SKIP_QEMU=1 to leave it out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{image_build, init_binary, skip_qemu, wait_until, Cli, Mosquitto, QemuGuard};
use outpost::host::pki::Site;

#[test]
fn a_board_in_qemu_calls_home_and_is_managed_through_the_broker() {
    if skip_qemu() {
        return;
    }
    let env = Cli::new();
    let init = init_binary();
    let site = env.site_with_device("calltest", "edge-ch");
    let site_s = site.to_str().unwrap();
    let broker = Mosquitto::start(&Site::open(&site).unwrap(), &env.path("broker"));
    let machine = site.join("devices/edge-ch/machine.toml");
    let mut text = std::fs::read_to_string(&machine).unwrap();
    text.push_str("\n[callhome]\nbroker = \"10.0.2.100\"\nkeepalive_secs = 60\n");
    std::fs::write(&machine, text).unwrap();
    let img = env.path("edge.img");
    env.ok(&image_build(
        site_s,
        "edge-ch",
        img.to_str().unwrap(),
        init.to_str().unwrap(),
    ));
    let port = broker.port.to_string();
    env.ok(&[
        "qemu",
        "up",
        img.to_str().unwrap(),
        "--name",
        "callhome",
        "--broker-port",
        &port,
        "--timeout",
        "300",
    ]);
    let _guard = QemuGuard::new(&env, "callhome");
    assert!(
        wait_until(120, || broker.log().contains("as edge-ch")),
        "the board did not call home:\n{}",
        broker.log()
    );
    let url = broker.url();
    let via = |args: &[&str]| {
        let mut full = vec!["--broker", url.as_str(), "-n", "edge-ch"];
        full.extend_from_slice(args);
        env.ok(&full)
    };
    let status = via(&["status"]);
    assert!(status.contains("edge-ch"), "{status}");
    let boot = env.json(&["--broker", &url, "-n", "edge-ch", "status"])["Status"]["boot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Sealed (the board's aarch64 X25519 and its seal key on the real DATA).
    let sealed = env.json(&["--broker", &url, "-n", "edge-ch", "--seal", "status"]);
    assert_eq!(sealed["Status"]["boot_id"], boot.as_str(), "{sealed}");
    let logs = via(&["logs", "--lines", "200"]);
    assert!(
        logs.contains("callhome: connected to 10.0.2.100:8883"),
        "{logs}"
    );
    via(&["reboot"]);
    // The board reboots for real (U-Boot, kernel, init) and calls back.
    let mut after = boot.clone();
    assert!(
        wait_until(300, || {
            let out = env.outpost(&["-o", "json", "--broker", &url, "-n", "edge-ch", "status"]);
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) {
                if let Some(b) = v["Status"]["boot_id"].as_str() {
                    after = b.to_owned();
                }
            }
            after != boot
        }),
        "no new boot answered through the broker:\n{}\n{}",
        broker.log(),
        env.consoles()
    );
    // The seal key survived the reboot on DATA: a sealed command still opens.
    let sealed = env.json(&["--broker", &url, "-n", "edge-ch", "--seal", "status"]);
    assert_eq!(sealed["Status"]["boot_id"], after.as_str(), "{sealed}");
}
