//! A/B upgrades end to end on a simulated card (host mode: boot-state copies
//! and slot files in a directory, the slot chosen as U-Boot would): the real
//! CLI uploads a signed bundle, the device verifies and writes it into the
//! inactive slot, switches, reboots into it and commits it; bad bundles are
//! refused with the active slot untouched; rollback goes back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::HostDevice;
use outpost::host::bundle::{sign_image, Release};
use outpost::host::pki::Site;

/// `edge-1` in host mode with a simulated card (`card/`), this site's
/// release key, running 1.0.0; the CLI's current node.
fn start() -> HostDevice {
    let dev = HostDevice::new("up");
    dev.write_cli_config();
    let card = dev.cli.path("card");
    let keys = dev.site.release_pub();
    dev.args(&["--slots", card.to_str().unwrap()])
        .args(&["--release-keys", keys.to_str().unwrap()])
        .args(&["--board", "qemu-virt", "--version", "1.0.0"])
        .start()
}

fn slots(dev: &HostDevice) -> serde_json::Value {
    dev.cli.json(&["slots"])["Slots"].clone()
}

fn image(seed: u8) -> Vec<u8> {
    // A few chunks of structured data and a zero tail, like a slot image.
    let mut img: Vec<u8> = (0..300_000u32)
        .map(|i| (i as u8).wrapping_mul(seed) ^ (i >> 9) as u8)
        .collect();
    img.extend(vec![0u8; 100_000]);
    img
}

fn bundle(
    dev: &HostDevice,
    name: &str,
    version: &str,
    img: &[u8],
    key: &ring::signature::Ed25519KeyPair,
) -> PathBuf {
    let out = dev.cli.path(name);
    let release = Release {
        board: "qemu-virt".into(),
        version: version.into(),
        min_version: "0.1.0".into(),
        build_time: 1,
    };
    sign_image(img, &release, key, &out).unwrap();
    out
}

fn slot_file(dev: &HostDevice, slot: &str) -> Vec<u8> {
    std::fs::read(dev.cli.path(&format!("card/slot-{slot}.img"))).unwrap()
}

#[test]
fn upgrade_commits_the_new_slot_and_rollback_goes_back() {
    let dev = start();
    let s = slots(&dev);
    assert_eq!(
        (s["booted"].as_str(), s["primary"].as_str()),
        (Some("A"), Some("A"))
    );
    assert_eq!(s["slots"][0]["state"], "active");

    let img = image(3);
    let key = dev.site.release_key().unwrap();
    let b = bundle(&dev, "v1.1.bundle", "1.1.0", &img, &key);
    let out = dev.cli.outpost(&[
        "upgrade",
        b.to_str().unwrap(),
        "--timeout",
        "60",
        "-o",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = slots(&dev);
    assert_eq!(s["booted"], "B", "{s}");
    assert_eq!(s["slots"][1]["state"], "active", "{s}");
    assert_eq!(s["slots"][1]["version"], "1.1.0");
    assert_eq!(
        s["slots"][0]["state"], "good",
        "A stays good to roll back to: {s}"
    );
    assert_eq!(&slot_file(&dev, "B")[..img.len()], &img[..]);
    // The install removed the staged bundle: DATA does not fill up with
    // every upgrade's bundle.
    let staged: Vec<_> = std::fs::read_dir(dev.data.join("staging"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(staged.is_empty(), "{staged:?}");

    // Rollback: back to A, which was good.
    let out = dev.cli.outpost(&["rollback"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let start = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        if let Ok(v) = std::panic::catch_unwind(|| slots(&dev)) {
            if v["booted"] == "A" {
                assert!(
                    v["last_event"]
                        .as_str()
                        .unwrap_or("")
                        .contains("rolled back"),
                    "{v}"
                );
                break;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no rollback");
    }
}

#[test]
fn bad_bundles_are_refused_and_the_active_slot_is_untouched() {
    let dev = start();
    let a_before = slot_file(&dev, "A");
    let b_before = slot_file(&dev, "B");
    let img = image(5);
    // Signed by another site's release key.
    let other = Site::create(&dev.cli.path("other"), "other").unwrap();
    let foreign = bundle(
        &dev,
        "foreign.bundle",
        "1.1.0",
        &img,
        &other.release_key().unwrap(),
    );
    // Older than what runs.
    let key = dev.site.release_key().unwrap();
    let old = bundle(&dev, "old.bundle", "0.9.0", &img, &key);
    // Tampered after signing: one payload byte flipped.
    let tampered = bundle(&dev, "tampered.bundle", "1.2.0", &img, &key);
    let mut bytes = std::fs::read(&tampered).unwrap();
    let n = bytes.len();
    bytes[n - 20] ^= 0xff;
    std::fs::write(&tampered, bytes).unwrap();
    // Truncated.
    let truncated = bundle(&dev, "trunc.bundle", "1.3.0", &img, &key);
    let bytes = std::fs::read(&truncated).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();

    for (b, why) in [
        (&foreign, "signature"),
        (&old, "older"),
        (&truncated, "truncated"),
    ] {
        let out = dev
            .cli
            .outpost(&["upgrade", b.to_str().unwrap(), "--timeout", "5"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(why), "{why}: {err}");
    }
    // The tampered one passes the header checks, then fails while writing:
    // the device stays on A and says so.
    let out = dev
        .cli
        .outpost(&["upgrade", tampered.to_str().unwrap(), "--timeout", "20"]);
    assert!(!out.status.success());
    let s = slots(&dev);
    assert_eq!(
        (s["booted"].as_str(), s["primary"].as_str()),
        (Some("A"), Some("A")),
        "{s}"
    );
    assert!(
        s["last_event"].as_str().unwrap_or("").contains("failed"),
        "{s}"
    );
    assert_eq!(
        slot_file(&dev, "A"),
        a_before,
        "the active slot is never written"
    );
    let _ = b_before;
    // Forced downgrade is allowed.
    let out = dev.cli.outpost(&[
        "upgrade",
        old.to_str().unwrap(),
        "--force",
        "--stage",
        "--timeout",
        "20",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_upload_cut_at_half_resumes_and_the_install_matches() {
    use outpost::host::linkemu::{LinkConfig, LinkEmu};
    let dev = start();
    // Put a link emulator between the CLI and the device: the first
    // connection (the CLI's `slots` query) passes, the second (the upload)
    // is cut half-way through the bundle, later ones pass.
    let cli = std::fs::read_to_string(dev.cli.path("cli.toml")).unwrap();
    let port = dev.port;
    let img = image(7);
    let b = bundle(
        &dev,
        "v1.5.bundle",
        "1.5.0",
        &img,
        &dev.site.release_key().unwrap(),
    );
    let half = std::fs::metadata(&b).unwrap().len() / 2;
    let mut config = LinkConfig::new(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    config.cut_up = vec![u64::MAX, half];
    let emu = LinkEmu::start(config).unwrap();
    std::fs::write(
        dev.cli.path("cli.toml"),
        cli.replace(&format!("127.0.0.1:{port}"), &emu.addr().to_string()),
    )
    .unwrap();

    // The whole bundle (deltas: tests/delta_host.rs).
    let out = dev
        .cli
        .outpost(&["upgrade", b.to_str().unwrap(), "--full", "--timeout", "60"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let conns = emu.connections();
    assert!(conns.iter().any(|c| c.cut), "the link was cut: {conns:?}");
    let s = slots(&dev);
    assert_eq!(
        (s["booted"].as_str(), s["slots"][1]["version"].as_str()),
        (Some("B"), Some("1.5.0")),
        "{s}"
    );
    assert_eq!(&slot_file(&dev, "B")[..img.len()], &img[..]);
}
