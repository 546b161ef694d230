//! QEMU: a board whose RTC starts at 1970 (`-rtc base=1970-01-01`, as a
//! Raspberry Pi without a battery) still accepts valid clients: outpost-init
//! sets the clock to the image build time, then to the time saved on DATA
//! after a reboot. Needs `scripts/setup` and `scripts/build-init`; set
//! OUTPOST_SKIP_QEMU=1 to leave it out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{image_build, init_binary, skip_qemu, Cli, QemuGuard};
use outpost::host::client::{client_config, Client};
use outpost::host::context::Node;
use outpost::host::pki::Site;
use outpost::wire::{Request, Response};

fn time_of(env: &Cli) -> (u64, String, bool) {
    let t = env.json(&["time"])["Time"].clone();
    (
        t["unix_ms"].as_u64().unwrap(),
        t["source"].as_str().unwrap().to_owned(),
        t["synced"].as_bool().unwrap(),
    )
}

#[test]
fn a_board_booted_at_1970_serves_valid_clients_and_restores_its_clock() {
    if skip_qemu() {
        return;
    }
    let env = Cli::new();
    let init = init_binary();
    let site = env.site_with_device("clocktest", "edge-clock");
    let site_s = site.to_str().unwrap();
    // A pinned build time (reproducible builds set it the same way).
    let build_time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let img = env.path("edge.img");
    let built = env
        .command(&image_build(
            site_s,
            "edge-clock",
            img.to_str().unwrap(),
            init.to_str().unwrap(),
        ))
        .env("SOURCE_DATE_EPOCH", build_time.to_string())
        .output()
        .unwrap();
    assert!(built.status.success(), "{built:?}");

    // `qemu up` returns once `status` answered over mutual TLS: with the
    // clock left at 1970 every certificate would be "not yet valid".
    let up = env.json(&[
        "qemu",
        "up",
        img.to_str().unwrap(),
        "--name",
        "clock",
        "--rtc-base",
        "1970-01-01",
        "--timeout",
        "300",
    ]);
    let _guard = QemuGuard::new(&env, "clock");
    let boot_id = env.json(&["status"])["Status"]["boot_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let (ms, source, synced) = time_of(&env);
    assert!(
        ms / 1000 >= build_time,
        "{ms} ms is before the build time {build_time}"
    );
    assert_eq!(source, "build-time");
    assert!(!synced);
    let logs = env.ok(&["logs", "--lines", "300"]);
    assert!(logs.contains("(build-time)"), "{logs}");

    // A client certificate issued a month after the image: valid on the
    // board (notBefore is the site's creation, see docs/time.md) ...
    let site_h = Site::open(&site).unwrap();
    let node = Node {
        address: up["address"].as_str().unwrap().to_owned(),
        server_name: "edge-clock".into(),
    };
    let month = time::Duration::days(30);
    let later = time::OffsetDateTime::now_utc() + month;
    let connect = |not_before: time::OffsetDateTime, name: &str| {
        let (crt, key) = site_h
            .client_pem(name, "reader", not_before, later + month * 120)
            .unwrap();
        let (c, k) = (
            env.path(&format!("{name}.crt")),
            env.path(&format!("{name}.key")),
        );
        std::fs::write(&c, crt).unwrap();
        std::fs::write(&k, key).unwrap();
        let config = client_config(&site.join("ca.crt"), &c, &k).unwrap();
        Client::connect_with(config, &node).and_then(|mut c| c.call(Request::Ping))
    };
    assert!(matches!(
        connect(site_h.client_not_before(later), "late"),
        Ok(Response::Pong)
    ));
    // ... where the old rule (valid from a day before issue) is refused.
    assert!(connect(later - time::Duration::days(1), "naive").is_err());

    // Reboot: the clock saved at shutdown comes back.
    let (before, _, _) = time_of(&env);
    env.ok(&["reboot"]);
    env.status_after_reboot(&boot_id, Duration::from_secs(300));
    let (after, source, _) = time_of(&env);
    assert_eq!(source, "restored");
    assert!(after >= before, "clock went back: {after} < {before}");

    let down = env.ok(&["qemu", "down", "--name", "clock"]);
    assert!(down.contains("powered off"), "{down}");
}
