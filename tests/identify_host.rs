//! `outpost identify` end to end in host mode: the simulated status LED
//! (its pattern in DATA/state/led) switches to identify and back; a board
//! without an LED says so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::HostDevice;

fn led_state(dev: &HostDevice) -> String {
    std::fs::read_to_string(dev.data.join("state/led")).unwrap_or_default()
}

/// Wait until the simulated LED shows `want` (the driver runs on its own task).
fn wait_for(dev: &HostDevice, want: &str, limit: Duration) {
    let start = Instant::now();
    while led_state(dev) != want {
        assert!(
            start.elapsed() < limit,
            "LED shows `{}`, expected `{want}`",
            led_state(dev)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn identify_blinks_the_led_then_it_returns_to_healthy() {
    let dev = HostDevice::new("identify").log_to_file().start();
    dev.write_cli_config();
    // Host mode is healthy once its API is up.
    wait_for(&dev, "healthy", Duration::from_secs(5));

    let answer = dev.cli.json(&["identify", "--seconds", "2"]);
    assert_eq!(answer, serde_json::json!("Accepted"), "{answer}");
    wait_for(&dev, "identify", Duration::from_secs(2));
    let since = Instant::now();
    wait_for(&dev, "healthy", Duration::from_secs(5));
    let lasted = since.elapsed();
    assert!(
        lasted >= Duration::from_millis(1500),
        "identify ended after {lasted:?}"
    );

    // --seconds 0 ends an identify early.
    dev.cli.ok(&["identify", "--seconds", "600"]);
    wait_for(&dev, "identify", Duration::from_secs(2));
    dev.cli.ok(&["identify", "--seconds", "0"]);
    wait_for(&dev, "healthy", Duration::from_secs(2));

    // Out of range is the CLI's error, before anything is sent.
    let out = dev.cli.outpost(&["identify", "--seconds", "3601"]);
    assert!(!out.status.success());
    let log = std::fs::read_to_string(dev.cli.path("device.log")).unwrap();
    assert!(log.contains("status LED: identify"), "{log}");
}

#[test]
fn a_board_without_an_led_says_why() {
    let dev = HostDevice::new("no-led").args(&["--no-led"]).start();
    dev.write_cli_config();
    let out = dev.cli.outpost(&["identify"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no status LED"), "{err}");
    assert!(err.contains("[led]"), "{err}");
    assert!(!dev.data.join("state/led").exists());
}
