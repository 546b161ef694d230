//! Delta upgrades end to end on a simulated card (host mode): slot A holds
//! release N and DATA its chunk list (as `image build` leaves a card); the
//! real CLI upgrades to N+1 sending only the chunks that changed, over a
//! link emulator that counts the bytes. A corrupted local chunk is noticed
//! and sent again, never installed; a link cut mid-delta resumes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;

use common::HostDevice;
use outpost::host::bundle::{index_image, sign_image, Release};
use outpost::host::linkemu::{LinkConfig, LinkEmu};

/// A release: 3 MB of incompressible bytes (like a gzipped kernel and
/// initramfs), some text, and a zero tail.
fn release_n() -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut img: Vec<u8> = (0..3_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    img.extend(b"OS_VERSION=1.0.0\n".repeat(2000));
    img.extend(vec![0u8; 200_000]);
    img
}

/// N+1: a few bytes changed in the middle and 50 inserted at 1 MB (a file
/// that grew moves everything after it).
fn release_n1() -> Vec<u8> {
    let mut img = release_n();
    img[2_000_000..2_000_100].fill(0x55);
    img.splice(1_000_000..1_000_000, [0xaa; 50]);
    img
}

/// `edge-1` in host mode running 1.0.0 from slot A = `release_n()`, with
/// the chunk list on DATA; the CLI talks to it through a link emulator
/// configured by `link`.
fn start(link: impl FnOnce(&mut LinkConfig)) -> (HostDevice, LinkEmu) {
    start_with(&release_n(), link)
}

fn start_with(slot_a: &[u8], link: impl FnOnce(&mut LinkConfig)) -> (HostDevice, LinkEmu) {
    let dev = HostDevice::new("delta");
    let card = dev.cli.path("card");
    std::fs::create_dir_all(&card).unwrap();
    std::fs::write(card.join("slot-A.img"), slot_a).unwrap();
    let index = index_image(slot_a, "qemu-virt", "1.0.0");
    std::fs::create_dir_all(dev.data.join("state")).unwrap();
    let mut start = outpost::bundle::format::encode_signed_part(&index);
    start.extend([0u8; 64]);
    std::fs::write(dev.data.join("state/slot-A.chunks"), start).unwrap();
    dev.write_cli_config();
    let keys = dev.site.release_pub();
    let dev = dev
        .args(&["--slots", card.to_str().unwrap()])
        .args(&["--release-keys", keys.to_str().unwrap()])
        .args(&["--board", "qemu-virt", "--version", "1.0.0"])
        .log_to_file()
        .start();
    let mut config = LinkConfig::new(std::net::SocketAddr::from(([127, 0, 0, 1], dev.port)));
    link(&mut config);
    let emu = LinkEmu::start(config).unwrap();
    let cli = std::fs::read_to_string(dev.cli.path("cli.toml")).unwrap();
    std::fs::write(
        dev.cli.path("cli.toml"),
        cli.replace(&format!("127.0.0.1:{}", dev.port), &emu.addr().to_string()),
    )
    .unwrap();
    (dev, emu)
}

fn bundle(dev: &HostDevice, name: &str, version: &str, img: &[u8]) -> PathBuf {
    let out = dev.cli.path(name);
    let release = Release {
        board: "qemu-virt".into(),
        version: version.into(),
        min_version: "0.1.0".into(),
        build_time: 1,
    };
    sign_image(img, &release, &dev.site.release_key().unwrap(), &out).unwrap();
    out
}

fn slot_file(dev: &HostDevice, slot: &str) -> Vec<u8> {
    std::fs::read(dev.cli.path(&format!("card/slot-{slot}.img"))).unwrap()
}

/// `outpost upgrade`; its stderr.
fn upgrade(dev: &HostDevice, b: &std::path::Path) -> String {
    let out = dev
        .cli
        .outpost(&["upgrade", b.to_str().unwrap(), "--timeout", "60"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{err}\n{}",
        common::read_lossy(&dev.cli.path("device.log"))
    );
    err
}

/// "delta: K of N chunks" from the CLI's plan line.
fn chunks_sent(stderr: &str) -> usize {
    let line = stderr
        .lines()
        .find(|l| l.contains("delta: "))
        .expect(stderr);
    let after = line.split("delta: ").nth(1).unwrap();
    after.split(' ').next().unwrap().parse().unwrap()
}

fn committed(dev: &HostDevice, version: &str) {
    let s = dev.cli.json(&["slots"])["Slots"].clone();
    assert_eq!(
        (s["booted"].as_str(), s["slots"][1]["version"].as_str()),
        (Some("B"), Some(version)),
        "{s}"
    );
    assert_eq!(s["slots"][1]["state"], "active", "{s}");
}

#[test]
fn delta_upgrade_sends_a_few_chunks_and_commits() {
    let (dev, emu) = start(|_| {});
    let new = release_n1();
    let b = bundle(&dev, "n1.bundle", "1.1.0", &new);
    let full = std::fs::metadata(&b).unwrap().len();
    // What `bundle diff` predicts without a board.
    let old = bundle(&dev, "n.bundle", "1.0.0", &release_n());
    let diff = dev
        .cli
        .json(&["bundle", "diff", old.to_str().unwrap(), b.to_str().unwrap()]);
    let predicted = diff["chunks_to_send"].as_u64().unwrap() as usize;
    assert!(predicted > 0 && predicted <= 6, "{diff}");

    let a_before = slot_file(&dev, "A");
    let err = upgrade(&dev, &b);
    assert_eq!(chunks_sent(&err), predicted, "{err}");
    committed(&dev, "1.1.0");
    assert_eq!(&slot_file(&dev, "B")[..new.len()], &new[..]);
    assert_eq!(
        slot_file(&dev, "A"),
        a_before,
        "the active slot is never written"
    );
    // Everything the CLI sent, TLS and all, is well under the full bundle.
    let up: u64 = emu.connections().iter().map(|c| c.up).sum();
    assert!(up * 20 < full, "{up} bytes up for a {full}-byte bundle");
    eprintln!("delta upgrade: {up} bytes up, full bundle {full} bytes");
    // The new slot's chunk list is kept: the next delta can use B.
    assert!(dev.data.join("state/slot-B.chunks").is_file());
}

#[test]
fn a_corrupted_local_chunk_is_sent_again_not_installed() {
    let (dev, _emu) = start(|_| {});
    // Flip bytes in the active slot's copy, in a stretch N+1 keeps.
    let a = dev.cli.path("card/slot-A.img");
    let mut bytes = std::fs::read(&a).unwrap();
    for b in &mut bytes[2_500_000..2_500_010] {
        *b ^= 0xff;
    }
    std::fs::write(&a, bytes).unwrap();
    let new = release_n1();
    let b = bundle(&dev, "n1.bundle", "1.1.0", &new);
    let old = bundle(&dev, "n.bundle", "1.0.0", &release_n());
    let diff = dev
        .cli
        .json(&["bundle", "diff", old.to_str().unwrap(), b.to_str().unwrap()]);
    let err = upgrade(&dev, &b);
    assert_eq!(
        chunks_sent(&err),
        diff["chunks_to_send"].as_u64().unwrap() as usize + 1,
        "the corrupted chunk is missing, so sent: {err}"
    );
    committed(&dev, "1.1.0");
    assert_eq!(&slot_file(&dev, "B")[..new.len()], &new[..]);
}

#[test]
fn a_link_cut_mid_delta_resumes() {
    // Connections: slots, plan (header not there), header upload, plan,
    // delta upload: cut that one after 20 kB.
    let (dev, emu) = start(|c| c.cut_up = vec![u64::MAX, u64::MAX, u64::MAX, u64::MAX, 20_000]);
    // More change, so the delta is larger than the cut.
    let mut new = release_n1();
    for at in [500_000, 1_500_000, 2_500_000] {
        new[at..at + 10].fill(0x11);
    }
    let b = bundle(&dev, "n1.bundle", "1.1.0", &new);
    let err = upgrade(&dev, &b);
    let conns = emu.connections();
    assert!(
        conns.iter().any(|c| c.cut),
        "the link was cut: {conns:?}\n{err}"
    );
    committed(&dev, "1.1.0");
    assert_eq!(&slot_file(&dev, "B")[..new.len()], &new[..]);
}

#[test]
fn a_power_cut_mid_assembly_leaves_the_active_slot_and_a_later_delta_works() {
    // Large enough that assembly takes a while: 96 MB, nearly all local.
    let mut x = 7u64;
    let big: Vec<u8> = (0..96_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut new = big.clone();
    new[90_000_000..90_000_100].fill(1);
    // The cut must land while slot B is being written: polling can miss
    // that window on a fast host, so try a few fresh cards.
    for attempt in 1..=4 {
        let (mut dev, _emu) = start_with(&big, |_| {});
        let b = bundle(&dev, "big.bundle", "1.1.0", &new);
        let a_before = slot_file(&dev, "A");
        let mut cli = dev
            .cli
            .command(&["upgrade", b.to_str().unwrap(), "--stage", "--timeout", "60"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Cut the power once slot B has started to change.
        let started = std::time::Instant::now();
        let b_path = dev.cli.path("card/slot-B.img");
        let mut head = [0u8; 4096];
        loop {
            let read = std::fs::File::open(&b_path)
                .and_then(|f| std::os::unix::fs::FileExt::read_exact_at(&f, &mut head, 0));
            if read.is_ok() && head[..] == new[..4096] {
                dev.kill();
                break;
            }
            assert!(started.elapsed().as_secs() < 60, "assembly never started");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let _ = cli.kill();
        let _ = cli.wait();
        let b_now = slot_file(&dev, "B");
        if b_now[..new.len()] == new[..] {
            eprintln!("attempt {attempt}: the cut came after the assembly; again");
            continue;
        }
        assert_eq!(
            slot_file(&dev, "A"),
            a_before,
            "the active slot is untouched"
        );
        assert!(!dev.data.join("state/slot-B.chunks").exists());
        // Power back: still A, and the next upgrade plans without B and commits.
        dev.spawn();
        let s = dev.cli.json(&["slots"])["Slots"].clone();
        assert_eq!(
            (s["booted"].as_str(), s["primary"].as_str()),
            (Some("A"), Some("A")),
            "{s}"
        );
        upgrade(&dev, &b);
        committed(&dev, "1.1.0");
        assert!(slot_file(&dev, "B")[..new.len()] == new[..]);
        return;
    }
    panic!("no cut landed mid-assembly in 4 attempts");
}
