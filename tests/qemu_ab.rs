//! System tests of A/B boot counting on real images in QEMU (Debian's U-Boot
//! and kernel, our boot.scr and outpost-init):
//! - boot.scr's chooser against the `outpost::bootstate` model, byte for byte,
//!   on corrupt copies, sequence roll-over and garbled values;
//! - a boot marks slot A good (attempts restored), read back from the image;
//! - a slot B that hangs (`outpost.fault=hang`, watchdog 5 s) burns its three
//!   attempts through watchdog resets, then the board falls back to A by itself.
//!
//! Needs `scripts/setup` and `scripts/build-init` (the test command runs both);
//! set OUTPOST_SKIP_QEMU=1 to leave it out explicitly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read as _, Seek as _, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{read_lossy, repo, skip_qemu, Cli, QemuGuard};
use outpost::bootstate::{
    encode_copy, initial_copies, BootState, CopyId, Current, Env, Event, Layout, Slot, STATE_SIZE,
    VAR_A_LEFT, VAR_B_LEFT, VAR_GOOD, VAR_ORDER, VAR_SEQ,
};
use outpost::device::slots::{Backend, BlockBackend, PartitionFile, Slots};
use outpost::host::image::{read_boot_copies, read_boot_state, DiskLayout};

/// The boot-state copies of `img`, through the device's own in-place writer.
fn boot_slots(img: &Path) -> (Slots, BlockBackend) {
    let start = DiskLayout::standard().boot.start;
    let open = || BlockBackend::new(Box::new(PartitionFile::open(img, start).unwrap()), "image");
    (Slots::new(Box::new(open()), None), open())
}

/// Boot the image, check A is marked good; then a B that hangs falls back to A.
#[test]
fn boot_marks_a_good_and_a_hanging_b_falls_back() {
    if skip_qemu() {
        return;
    }
    let env = Cli::new();
    let img = env.qemu_image("abtest", "edge-ab");
    let img_s = img.to_str().unwrap();
    let fresh = read_boot_copies(&img).unwrap();

    // 1. Boot: U-Boot spends one attempt of A, outpost-init gives it back.
    let started = Instant::now();
    env.ok(&["qemu", "up", img_s, "--name", "ab", "--timeout", "120"]);
    let guard = QemuGuard::new(&env, "ab");
    assert_eq!(slot_of(&env.ok(&["-o", "json", "status"])), "A");
    wait_for_log(&env, "ab", "slot A marked good", Duration::from_secs(30));
    let down = env.ok(&["qemu", "down", "--name", "ab"]);
    assert!(down.contains("powered off"), "{down}");
    drop(guard);
    eprintln!("boot + mark good + power off: {:?}", started.elapsed());

    let cur = read_boot_state(&img).unwrap();
    assert_eq!(cur.errors, [None, None]);
    assert_eq!(
        cur.state,
        BootState {
            order: vec![Slot::A, Slot::B],
            a_left: 3,
            b_left: 0,
            good: vec![Slot::A],
        }
    );
    // U-Boot wrote the first copy (seq 2) exactly as the model says; init
    // then wrote the second (seq 3).
    assert_eq!((cur.from, cur.seq), (Some(CopyId::Second), 3));
    let uboot = Current::read(&fresh[0], &fresh[1])
        .apply(Event::Boot)
        .unwrap();
    assert_eq!(uboot.write.copy, CopyId::First);
    let copies = read_boot_copies(&img).unwrap();
    assert!(
        copies[0] == uboot.write.blob,
        "U-Boot's write differs from the model"
    );
    fw_printenv_agrees(
        &env,
        &copies[1],
        &["BOOT_A_LEFT=0x3", "BOOT_GOOD=A", "BOOT_SEQ=0x3"],
    );

    // 2. Slot B: a copy of A whose init hangs; switch to it (one write).
    let layout = DiskLayout::standard();
    let mut slot = vec![0u8; usize::try_from(layout.slot_a.size).unwrap()];
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    f.read_exact_at(&mut slot, layout.slot_a.start).unwrap();
    append_boot_args(&mut slot, " outpost.fault=hang outpost.watchdog=5");
    f.write_all_at(&slot, layout.slot_b.start).unwrap();
    f.sync_all().unwrap();
    drop((f, slot));
    let (slots, _) = boot_slots(&img);
    let plan = slots.switch_to(Slot::B, 3).unwrap();
    assert_eq!(plan.state.order, [Slot::B, Slot::A]);

    let started = Instant::now();
    // `qemu up` returns when B's API answers, before it hangs.
    env.ok(&["qemu", "up", img_s, "--name", "hang", "--timeout", "120"]);
    let guard = QemuGuard::new(&env, "hang");
    wait_for_log(
        &env,
        "hang",
        "after fallback from B",
        Duration::from_secs(120),
    );
    wait_for_log(&env, "hang", "slot A marked good", Duration::from_secs(30));
    let console = env.console("hang");
    let chosen_b = console.matches("outpost: slot B chosen").count();
    assert_eq!(chosen_b, 3, "B should be tried 3 times:\n{console}");
    assert!(console.contains("no longer petted (outpost.fault=hang)"));
    // The API answers from A again.
    let status = poll_status(&env, |s| slot_of(s) == "A", Duration::from_secs(60));
    assert_eq!(slot_of(&status), "A", "{status}");
    let logs = env.ok(&["logs", "--lines", "200"]);
    assert!(logs.contains("booted A after fallback from B"), "{logs}");
    env.ok(&["qemu", "down", "--name", "hang"]);
    drop(guard);
    eprintln!("3 watchdog resets + fallback to A: {:?}", started.elapsed());

    let cur = read_boot_state(&img).unwrap();
    assert_eq!(
        cur.state,
        BootState {
            order: vec![Slot::B, Slot::A],
            a_left: 3,
            b_left: 0,
            good: vec![Slot::A],
        }
    );
}

/// boot.scr against the model: each case writes the two copies, boots
/// U-Boot only (both slots wiped, so the script resets after choosing and
/// `-no-reboot` ends QEMU), and compares the copy U-Boot wrote with the
/// model's planned write, byte for byte.
#[test]
fn boot_script_matches_the_model() {
    if skip_qemu() {
        return;
    }
    let env = Cli::new();
    let img = env.qemu_image("abtest", "edge-model");
    // Wipe both slots' boot sectors: U-Boot cannot load a kernel.
    let layout = DiskLayout::standard();
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    for p in [&layout.slot_a, &layout.slot_b] {
        f.write_all_at(&[0u8; 4096], p.start).unwrap();
    }
    drop(f);
    let bios = outpost::host::board::Board::load(&repo().join("boards"), "qemu-virt")
        .unwrap()
        .uboot_binary()
        .unwrap();

    let st = |order: &str, a: &str, b: &str, good: Option<&str>, seq: &str| {
        let mut e = Env::new();
        e.set(VAR_ORDER, order);
        e.set(VAR_A_LEFT, a);
        e.set(VAR_B_LEFT, b);
        if let Some(g) = good {
            e.set(VAR_GOOD, g);
        }
        e.set(VAR_SEQ, seq);
        e.encode(STATE_SIZE, Layout::Single).unwrap()
    };
    let junk = vec![0x5au8; STATE_SIZE];
    let init = initial_copies(&BootState::initial()).unwrap();
    let cases: Vec<(&str, Vec<u8>, Vec<u8>, Slot)> = vec![
        ("fresh card", init[0].clone(), init[1].clone(), Slot::A),
        (
            "first copy corrupt; B primary, A out of attempts",
            junk.clone(),
            st("B A", "0x0", "0x2", Some("A"), "0x5"),
            Slot::B,
        ),
        (
            "second copy corrupt; roll-over 0xff -> 0x0",
            st("A B", "0x3", "0x0", Some("A"), "0xff"),
            junk.clone(),
            Slot::A,
        ),
        (
            "both corrupt: start over",
            junk.clone(),
            junk.clone(),
            Slot::A,
        ),
        (
            "both valid, seq past 9: 0x1a is newer than 0x19",
            st("B A", "0x2", "0x1", Some("A"), "0x1a"),
            st("A B", "0x3", "0x0", Some("A"), "0x19"),
            Slot::B,
        ),
        (
            "wrapped: 0x0 is newer than 0xff; nothing left, re-arm",
            st("A B", "0x1", "0x0", None, "0xff"),
            st("B A", "0x0", "0x0", Some("A"), "0x0"),
            Slot::B,
        ),
        (
            "garbled values",
            st("C B B A x", "zz", "0x20", Some("A"), "0x7"),
            st("A B", "*0x40000000", "-1", None, "0x6"),
            Slot::B,
        ),
    ];
    let started = Instant::now();
    for (name, first, second, want) in cases {
        let (_, raw) = boot_slots(&img);
        raw.write_copy(CopyId::First, &first).unwrap();
        raw.write_copy(CopyId::Second, &second).unwrap();
        let plan = Current::read(&first, &second).apply(Event::Boot).unwrap();
        let console = uboot_once(&env, &bios, &img);
        assert!(
            console.contains(&format!("outpost: slot {want} chosen")),
            "{name}: U-Boot chose otherwise:\n{console}"
        );
        assert_eq!(plan.choice.unwrap().slot, want, "{name}: model");
        let after = [
            raw.read_copy(CopyId::First).unwrap(),
            raw.read_copy(CopyId::Second).unwrap(),
        ];
        let before = [&first, &second];
        let t = plan.write.copy.index();
        assert!(
            after[t] == plan.write.blob,
            "{name}: U-Boot wrote {:?}, the model {:?}",
            Current::read(&after[0], &after[1]).state,
            plan.state
        );
        assert!(
            &after[1 - t] == before[1 - t],
            "{name}: the newer copy was touched"
        );
    }
    eprintln!("U-Boot chooser cases: {:?}", started.elapsed());
    // A model copy is what encode_copy makes (the test's own sanity).
    assert_eq!(init[1], encode_copy(&BootState::initial(), 1).unwrap());
}

/// Run U-Boot on `img` until boot.scr resets (QEMU exits with -no-reboot).
fn uboot_once(env: &Cli, bios: &Path, img: &Path) -> String {
    let log = env.path("uboot.log");
    let _ = std::fs::remove_file(&log);
    let mut child = Command::new("qemu-system-aarch64")
        .args(["-M", "virt", "-cpu", "cortex-a53", "-m", "128", "-smp", "1"])
        .args([
            "-display",
            "none",
            "-monitor",
            "none",
            "-nic",
            "none",
            "-no-reboot",
        ])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .arg("-bios")
        .arg(bios)
        .arg("-drive")
        .arg(format!("if=none,file={},format=raw,id=d0", img.display()))
        .args(["-device", "virtio-blk-pci,drive=d0"])
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("U-Boot did not reset within 60 s:\n{}", read_lossy(&log));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    read_lossy(&log)
}

fn wait_for_log(env: &Cli, name: &str, needle: &str, timeout: Duration) {
    let start = Instant::now();
    while !env.console(name).contains(needle) {
        assert!(
            start.elapsed() < timeout,
            "`{needle}` not on the console within {timeout:?}:\n{}",
            env.console(name)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The `slot` of a `status -o json` answer ("" when it is not one).
fn slot_of(json: &str) -> String {
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v["Status"]["slot"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn poll_status(env: &Cli, ok: impl Fn(&str) -> bool, timeout: Duration) -> String {
    let start = Instant::now();
    loop {
        let out = env.outpost(&["-o", "json", "status"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && ok(&text) || start.elapsed() > timeout {
            return text;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Append `extra` to OS_ARGS in the slot's boot.env (the slot is a FAT
/// volume in memory).
fn append_boot_args(slot: &mut [u8], extra: &str) {
    let fs = fatfs::FileSystem::new(std::io::Cursor::new(slot), fatfs::FsOptions::new()).unwrap();
    let mut text = String::new();
    {
        let mut f = fs.root_dir().open_file("boot.env").unwrap();
        f.read_to_string(&mut text).unwrap();
    }
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("OS_ARGS=") {
                format!("{l}{extra}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let mut f = fs.root_dir().open_file("boot.env").unwrap();
    f.truncate().unwrap();
    f.rewind().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.flush().unwrap();
    drop(f);
    fs.unmount().unwrap();
}

/// Debian's fw_printenv reads the copy (when libubootenv-tool is installed).
fn fw_printenv_agrees(env: &Cli, blob: &[u8], lines: &[&str]) {
    let file = env.path("copy.env");
    std::fs::write(&file, blob).unwrap();
    let cfg = env.path("fw_env.config");
    std::fs::write(&cfg, format!("{} 0x0 0x4000\n", file.display())).unwrap();
    match Command::new("fw_printenv").arg("-c").arg(&cfg).output() {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{out:?}");
            for line in lines {
                assert!(text.lines().any(|l| l == *line), "{line} not in {text}");
            }
        }
        Err(_) => eprintln!("SKIP fw_printenv check: libubootenv-tool not installed"),
    }
}
