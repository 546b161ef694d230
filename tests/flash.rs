//! Flashing and personalizing cards: the bmap `image build` writes (and
//! Debian's bmaptool), `outpost flash` onto files and loop devices with
//! every refusal, and `outpost image personalize` (one QEMU boot of its
//! result). Needs `scripts/build-init` and the cached Debian packages, as
//! the image tests do; loop-device tests print SKIP where loop devices
//! cannot be used.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use common::{skip_qemu, Cli, QemuGuard};
use outpost::host::bmap::Bmap;

const BLOCK: u64 = 4096;
/// Pattern a "used" card is filled with before flashing.
const OLD: u8 = 0x5a;

/// (start, size) in bytes of the four partitions of the standard layout.
const PARTS: [(u64, u64); 4] = [
    (1 << 20, 64 << 20),
    (65 << 20, 128 << 20),
    (193 << 20, 128 << 20),
    (321 << 20, 64 << 20),
];

/// Site `flash` with device edge-1, and edge-1's image (and its bmap).
fn built() -> (Cli, PathBuf) {
    let env = Cli::new();
    let img = env.qemu_image("flash", "edge-1");
    (env, img)
}

fn filled(path: &Path, len: u64, byte: u8) {
    let f = std::fs::File::create(path).unwrap();
    let chunk = vec![byte; 1 << 20];
    let mut off = 0;
    while off < len {
        let n = (len - off).min(chunk.len() as u64) as usize;
        f.write_all_at(&chunk[..n], off).unwrap();
        off += n as u64;
    }
}

/// A "used card" of `len` bytes: old bytes ([`OLD`]) wherever the image's
/// metadata lives — the first MiB, the first 4 MiB of each FAT partition
/// (boot sector, FATs, root directory, first clusters) and all of DATA —
/// zeros (holes) elsewhere, so tests do not fill the shared disk.
fn used_card(path: &Path, len: u64) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(len).unwrap();
    let chunk = vec![OLD; 1 << 20];
    let mut regions = vec![(0, 1 << 20)];
    regions.extend(PARTS[..3].iter().map(|&(start, _)| (start, 4 << 20)));
    regions.push(PARTS[3]);
    for (start, size) in regions {
        for off in (start..start + size).step_by(1 << 20) {
            f.write_all_at(&chunk, off).unwrap();
        }
    }
}

/// The byte a used card had at `offset`.
fn old_byte(offset: u64) -> u8 {
    let in_fat = PARTS[..3]
        .iter()
        .any(|&(start, _)| (start..start + (4 << 20)).contains(&offset));
    let in_data = (PARTS[3].0..PARTS[3].0 + PARTS[3].1).contains(&offset);
    if offset < (1 << 20) || in_fat || in_data {
        OLD
    } else {
        0
    }
}

fn mapped(bmap: &Bmap, block: u64) -> bool {
    bmap.ranges
        .iter()
        .any(|r| r.first <= block && block <= r.last)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// fsck.fat on the three FAT partitions and e2fsck on DATA of `disk`
/// (a file or device): all clean.
fn filesystems_clean(disk: &Path, work: &Path) -> Result<(), String> {
    for (i, (start, size)) in PARTS[..3].iter().enumerate() {
        let part = work.join(format!("part{}", i + 1));
        let st = Command::new("dd")
            .arg(format!("if={}", disk.display()))
            .arg(format!("of={}", part.display()))
            .args([
                "bs=1M",
                "status=none",
                "conv=sparse",
                "iflag=skip_bytes,count_bytes",
            ])
            .arg(format!("skip={start}"))
            .arg(format!("count={size}"))
            .status()
            .unwrap();
        assert!(st.success());
        let out = Command::new("fsck.fat")
            .arg("-n")
            .arg(&part)
            .output()
            .unwrap();
        std::fs::remove_file(&part).unwrap();
        if !out.status.success() {
            return Err(format!(
                "fsck.fat of partition {}: {}",
                i + 1,
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .take(5)
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
    }
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(format!("{}?offset={}", disk.display(), PARTS[3].0))
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(format!(
            "e2fsck of DATA: {}",
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    Ok(())
}

fn bmaptool() -> bool {
    if Command::new("bmaptool").arg("--version").output().is_err() {
        eprintln!("SKIP bmaptool checks: bmap-tools not installed (scripts/setup installs it)");
        return false;
    }
    true
}

/// The bmap `image build` writes maps every block with content, leaves
/// most of the image out, and Debian's `bmaptool copy` takes it. A map made
/// from the file's holes (`bmaptool create`) leaves a used card with a
/// broken FAT; ours leaves every filesystem clean.
#[test]
fn image_build_writes_an_honest_bmap_that_bmaptool_takes() {
    let (env, img) = built();
    let bmap = Bmap::read(&outpost::host::bmap::path_for(&img)).unwrap();
    let data = std::fs::read(&img).unwrap();
    assert_eq!(bmap.image_size, data.len() as u64);
    assert_eq!(bmap.block_size, BLOCK);
    assert!(
        bmap.mapped_bytes() < bmap.image_size / 8,
        "{} of {} mapped",
        bmap.mapped_bytes(),
        bmap.image_size
    );
    for (i, block) in data.chunks(BLOCK as usize).enumerate() {
        if block.iter().any(|&b| b != 0) {
            assert!(
                mapped(&bmap, i as u64),
                "block {i} has data but is not mapped"
            );
        }
    }
    // Unused regions are holes: SLOT_B (empty) maps only its FATs.
    let slot_b = (PARTS[2].0 / BLOCK, (PARTS[2].0 + PARTS[2].1) / BLOCK);
    let in_b = (slot_b.0..slot_b.1).filter(|&b| mapped(&bmap, b)).count() as u64;
    assert!(in_b * BLOCK < (3 << 20), "SLOT_B maps {in_b} blocks");

    if !bmaptool() {
        return;
    }
    // bmaptool finds IMG.bmap itself, checks every range's sha256.
    let dest = env.path("bmaptool.img");
    let out = Command::new("bmaptool")
        .arg("copy")
        .arg(&img)
        .arg(&dest)
        .output()
        .unwrap();
    assert!(out.status.success(), "bmaptool copy: {}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("{}.bmap", img.display())),
        "bmaptool used our bmap: {}",
        stderr(&out)
    );
    assert!(
        std::fs::read(&dest).unwrap() == data,
        "bmaptool's copy equals the image"
    );

    // bmaptool's own map (from the file's holes) parses with ours — and
    // shows why we do not use holes: flashed over old data, a FAT breaks.
    let holes = env.path("holes.bmap");
    let st = Command::new("bmaptool")
        .args(["create", "-o"])
        .arg(&holes)
        .arg(&img)
        .status()
        .unwrap();
    assert!(st.success());
    let theirs = Bmap::read(&holes).unwrap();
    assert!(theirs.mapped_blocks() < bmap.mapped_blocks());
    let work = env.path("work");
    std::fs::create_dir_all(&work).unwrap();
    for (map, clean) in [
        (&holes, false),
        (&outpost::host::bmap::path_for(&img), true),
    ] {
        let card = env.path("card.img");
        used_card(&card, bmap.image_size);
        env.ok(&[
            "flash",
            img.to_str().unwrap(),
            card.to_str().unwrap(),
            "--bmap",
            map.to_str().unwrap(),
        ]);
        let res = filesystems_clean(&card, &work);
        assert_eq!(res.is_ok(), clean, "{}: {res:?}", map.display());
    }
}

/// Onto a file: only the mapped blocks change (the rest keeps the old
/// pattern), the filesystems are clean, the report counts what was written
/// and verified; without a bmap everything is written; a new file is
/// created; a bmap of another image is refused before anything is written.
#[test]
fn flash_onto_files() {
    let (env, img) = built();
    let img_s = img.to_str().unwrap();
    let bmap = Bmap::read(&outpost::host::bmap::path_for(&img)).unwrap();
    let data = std::fs::read(&img).unwrap();

    let card = env.path("card.img");
    let card_len = bmap.image_size + (1 << 20);
    used_card(&card, card_len);
    let started = Instant::now();
    let r = env.json(&["flash", img_s, card.to_str().unwrap()]);
    eprintln!("flash with bmap: {:?} {r}", started.elapsed());
    assert_eq!(r["bytes_written"], bmap.mapped_bytes());
    assert_eq!(r["bytes_verified"], bmap.mapped_bytes());
    assert_eq!(r["forced"], serde_json::json!([]));
    let got = std::fs::read(&card).unwrap();
    assert_eq!(got.len() as u64, card_len, "a larger file is not truncated");
    assert_only_mapped_blocks_written(&got, &data, &bmap);
    let work = env.path("work");
    std::fs::create_dir_all(&work).unwrap();
    filesystems_clean(&card, &work).unwrap();

    // --no-verify reads nothing back.
    let r = env.json(&["flash", img_s, card.to_str().unwrap(), "--no-verify"]);
    assert_eq!(r["bytes_verified"], 0);

    // No bmap beside the image: every byte, into a new file.
    let bare = env.path("bare.img");
    std::fs::hard_link(&img, &bare).unwrap();
    let fresh = env.path("fresh.img");
    let r = env.json(&["flash", bare.to_str().unwrap(), fresh.to_str().unwrap()]);
    assert_eq!(r["bytes_written"], bmap.image_size);
    assert_eq!(r["bmap"], serde_json::Value::Null);
    assert!(std::fs::read(&fresh).unwrap() == data);
    std::fs::remove_file(&fresh).unwrap(); // 385 MiB, all allocated

    // A bmap that is not this image's.
    let other = env.path("other.bmap");
    let mut wrong = bmap.clone();
    wrong.image_size -= BLOCK;
    std::fs::write(&other, wrong.to_xml()).unwrap();
    let out = env.outpost(&[
        "flash",
        img_s,
        card.to_str().unwrap(),
        "--bmap",
        other.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not its bmap"), "{}", stderr(&out));
    let mut wrong = bmap.clone();
    wrong.ranges[1].sha256 = Some("00".repeat(32));
    std::fs::write(&other, wrong.to_xml()).unwrap();
    let out = env.outpost(&[
        "flash",
        img_s,
        card.to_str().unwrap(),
        "--bmap",
        other.to_str().unwrap(),
    ]);
    assert!(
        stderr(&out).contains("belongs to another image"),
        "{}",
        stderr(&out)
    );
}

/// A loop device, detached when dropped.
struct Loop(String);

impl Loop {
    fn attach(file: &Path, partitions: bool) -> Loop {
        let mut cmd = Command::new("losetup");
        cmd.args(["-f", "--show"]);
        if partitions {
            cmd.arg("-P");
        }
        let out = cmd.arg(file).output().unwrap();
        assert!(out.status.success(), "losetup: {}", stderr(&out));
        Loop(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// Loop devices work here (root, /dev/loop-control, a free one)? Else why not.
fn loop_devices() -> Result<(), String> {
    if !Path::new("/dev/loop-control").exists() {
        return Err("no /dev/loop-control".into());
    }
    match Command::new("losetup").arg("-f").output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!("losetup -f: {}", stderr(&o).trim())),
        Err(e) => Err(format!("losetup: {e}")),
    }
}

/// Onto loop devices: a loop device is not removable, so it is refused
/// (untouched) and written with --force (read back through O_DIRECT); a
/// too-small one, a partition and a mounted one are refused, each with its
/// reason.
#[test]
fn flash_onto_loop_devices_and_refusals() {
    if let Err(why) = loop_devices() {
        eprintln!("SKIP: loop devices unavailable: {why}");
        return;
    }
    let (env, img) = built();
    let img_s = img.to_str().unwrap();
    let bmap = Bmap::read(&outpost::host::bmap::path_for(&img)).unwrap();
    let data = std::fs::read(&img).unwrap();

    let backing = env.path("loop.img");
    used_card(&backing, bmap.image_size + (4 << 20));
    let dev = Loop::attach(&backing, false);
    let out = env.outpost(&["flash", img_s, &dev.0]);
    assert!(!out.status.success());
    let why = stderr(&out);
    assert!(
        why.contains("is not a removable disk") && why.contains("--force"),
        "{why}"
    );
    let mut first = [0u8; 512];
    std::fs::File::open(&backing)
        .unwrap()
        .read_exact_at(&mut first, 0)
        .unwrap();
    assert!(
        first.iter().all(|&b| b == OLD),
        "a refused device is not written"
    );

    let out = env.outpost(&["-o", "json", "flash", img_s, &dev.0, "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["bytes_verified"], bmap.mapped_bytes());
    assert!(
        r["forced"][0]
            .as_str()
            .unwrap()
            .contains("not a removable disk"),
        "{r}"
    );
    drop(dev);
    let got = std::fs::read(&backing).unwrap();
    assert_only_mapped_blocks_written(&got, &data, &bmap);
    let work = env.path("work");
    std::fs::create_dir_all(&work).unwrap();
    filesystems_clean(&backing, &work).unwrap();

    // Now it has a partition table: its first partition is refused (where
    // the kernel scans loop partitions; a node of our own if udev is absent).
    let dev = Loop::attach(&backing, true);
    let name = dev.0.trim_start_matches("/dev/").to_owned();
    match std::fs::read_to_string(format!("/sys/block/{name}/{name}p1/dev")) {
        Err(e) => eprintln!("SKIP partition case: the kernel made no {name}p1 ({e})"),
        Ok(devno) => {
            let (maj, min) = devno.trim().split_once(':').unwrap();
            let part = env.path("part1");
            let st = Command::new("mknod")
                .arg(&part)
                .args(["b", maj, min])
                .status()
                .unwrap();
            assert!(st.success());
            let out = env.outpost(&["flash", img_s, part.to_str().unwrap()]);
            assert!(
                stderr(&out).contains("is a partition of") && !out.status.success(),
                "{}",
                stderr(&out)
            );
        }
    }
    drop(dev);
    // A mistyped device is not created as a file in /dev.
    let out = env.outpost(&["flash", img_s, "/dev/outpost-no-such-disk"]);
    assert!(stderr(&out).contains("no such device"), "{}", stderr(&out));
    assert!(!Path::new("/dev/outpost-no-such-disk").exists());

    // Too small.
    let small = env.path("small.img");
    filled(&small, 16 << 20, 0);
    let dev = Loop::attach(&small, false);
    let out = env.outpost(&["flash", img_s, &dev.0]);
    assert!(
        stderr(&out).contains("the image needs") && !out.status.success(),
        "{}",
        stderr(&out)
    );

    // Mounted.
    let st = Command::new("mke2fs")
        .args(["-q", "-t", "ext4", &dev.0])
        .status()
        .unwrap();
    assert!(st.success());
    let mnt = env.path("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let st = Command::new("mount")
        .arg(&dev.0)
        .arg(&mnt)
        .status()
        .unwrap();
    if !st.success() {
        eprintln!("SKIP mounted-device case: mount is not allowed here");
        return;
    }
    let out = env.outpost(&["flash", img_s, &dev.0]);
    let _ = Command::new("umount").arg(&mnt).status();
    let why = stderr(&out);
    assert!(!out.status.success());
    assert!(
        why.contains(&format!("is mounted on {}", mnt.display())),
        "{why}"
    );

    // Holding the running system: in a mount namespace of its own, the
    // loop device is mounted on /boot (the machine's /boot is untouched).
    let script = format!(
        "mount {dev} /boot && exec {bin} flash {img_s} {dev}",
        dev = dev.0,
        bin = env!("CARGO_BIN_EXE_outpost")
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .env("OUTPOST_CONFIG", env.path("cli.toml"))
        .output()
        .unwrap();
    let why = stderr(&out);
    if why.contains("unshare failed") || why.contains("mount:") {
        eprintln!("SKIP running-system case: no private mount namespace here ({why})");
        return;
    }
    assert!(!out.status.success());
    assert!(
        why.contains("holds the running system (mounted on /boot)"),
        "{why}"
    );
}

/// A generic image becomes edge-2's: DATA holds edge-2's identity and
/// config, every other byte is the base's; the result has a bmap, is
/// reproducible, and goes onto a "card" through the flash path. A base of
/// another site and an unknown device are refused.
#[test]
fn personalize_replaces_only_data() {
    let (env, img) = built();
    let site = env.path("site");
    let site_s = site.to_str().unwrap();
    env.ok(&["gen", "device", "--site", site_s, "--hostname", "edge-2"]);
    let out = env.path("edge-2.img");
    let started = Instant::now();
    let r = env.json(&[
        "image",
        "personalize",
        img.to_str().unwrap(),
        "--site",
        site_s,
        "--hostname",
        "edge-2",
        "-o",
        out.to_str().unwrap(),
    ]);
    let took = started.elapsed();
    eprintln!("personalize took {took:?}: {r}");
    assert!(took.as_secs() < 30, "personalize took {took:?}");
    assert_eq!(r["base_hostname"], "edge-1");
    assert_eq!(r["hostname"], "edge-2");

    let base = std::fs::read(&img).unwrap();
    let new = std::fs::read(&out).unwrap();
    assert_eq!(base.len(), new.len());
    let data = PARTS[3].0 as usize..(PARTS[3].0 + PARTS[3].1) as usize;
    assert!(
        base[..data.start] == new[..data.start],
        "MBR, BOOT, slots identical"
    );
    assert!(base[data.end..] == new[data.end..]);
    assert!(base[data.clone()] != new[data.clone()], "DATA is new");

    let cat = |path: &str| {
        let o = Command::new("debugfs")
            .args(["-R", &format!("cat {path}")])
            .arg(format!("{}?offset={}", out.display(), PARTS[3].0))
            .output()
            .unwrap();
        o.stdout
    };
    let config = String::from_utf8(cat("/config/machine.toml")).unwrap();
    assert!(config.contains("hostname = \"edge-2\""), "{config}");
    let dev = site.join("devices/edge-2");
    assert_eq!(
        cat("/identity/device.crt"),
        std::fs::read(dev.join("device.crt")).unwrap()
    );
    assert_eq!(
        cat("/identity/device.key"),
        std::fs::read(dev.join("device.key")).unwrap()
    );
    assert_eq!(
        cat("/identity/ca.crt"),
        std::fs::read(site.join("ca.crt")).unwrap()
    );
    let stat = Command::new("debugfs")
        .args(["-R", "stat /identity/device.key"])
        .arg(format!("{}?offset={}", out.display(), PARTS[3].0))
        .output()
        .unwrap();
    let stat = String::from_utf8_lossy(&stat.stdout);
    assert!(
        stat.contains("Mode:  0600") && stat.contains("User:     0"),
        "{stat}"
    );
    let work = env.path("work");
    std::fs::create_dir_all(&work).unwrap();
    filesystems_clean(&out, &work).unwrap();

    // Its bmap is its own.
    let bmap = Bmap::read(&outpost::host::bmap::path_for(&out)).unwrap();
    assert_eq!(bmap.image_size, new.len() as u64);
    assert_eq!(r["mapped_bytes"], bmap.mapped_bytes());

    // Reproducible.
    let again = env.path("edge-2b.img");
    env.ok(&[
        "image",
        "personalize",
        img.to_str().unwrap(),
        "--site",
        site_s,
        "--hostname",
        "edge-2",
        "-o",
        again.to_str().unwrap(),
    ]);
    assert!(std::fs::read(&again).unwrap() == new);

    // Straight onto a card (a file here) through the flash path.
    let card = env.path("card.img");
    used_card(&card, new.len() as u64);
    let r = env.json(&[
        "image",
        "personalize",
        img.to_str().unwrap(),
        "--site",
        site_s,
        "--hostname",
        "edge-2",
        "--device",
        card.to_str().unwrap(),
    ]);
    assert_eq!(r["flash"]["bytes_verified"], bmap.mapped_bytes(), "{r}");
    filesystems_clean(&card, &work).unwrap();

    // Refusals.
    let o = env.outpost(&[
        "image",
        "personalize",
        img.to_str().unwrap(),
        "--site",
        site_s,
        "--hostname",
        "edge-9",
        "-o",
        "/tmp/x.img",
    ]);
    assert!(stderr(&o).contains("no device `edge-9`"), "{}", stderr(&o));
    let other = env.path("other");
    outpost::host::pki::Site::create(&other, "other")
        .unwrap()
        .issue_device("edge-2", 50000)
        .unwrap();
    let o = env.outpost(&[
        "image",
        "personalize",
        img.to_str().unwrap(),
        "--site",
        other.to_str().unwrap(),
        "--hostname",
        "edge-2",
        "-o",
        env.path("x.img").to_str().unwrap(),
    ]);
    assert!(
        stderr(&o).contains("was built for another site"),
        "{}",
        stderr(&o)
    );
    assert!(!env.path("x.img").exists());
}

/// The personalized image boots and answers `status` with its new name.
#[test]
fn personalized_image_boots_as_the_new_device() {
    if skip_qemu() {
        return;
    }
    let (env, img) = built();
    let site = env.path("site");
    let site_s = site.to_str().unwrap();
    env.ok(&["gen", "device", "--site", site_s, "--hostname", "edge-p"]);
    let out = env.path("edge-p.img");
    env.ok(&[
        "image",
        "personalize",
        img.to_str().unwrap(),
        "--site",
        site_s,
        "--hostname",
        "edge-p",
        "-o",
        out.to_str().unwrap(),
    ]);
    env.ok(&[
        "qemu",
        "up",
        out.to_str().unwrap(),
        "--name",
        "pers",
        "--timeout",
        "240",
    ]);
    let _guard = QemuGuard::new(&env, "pers");
    let s = env.json(&["status"]);
    assert_eq!(s["Status"]["hostname"], "edge-p", "{s}");
    env.ok(&["qemu", "down", "--name", "pers"]);
}

/// Mapped blocks hold the image's bytes; every unmapped block still holds the
/// card's old pattern (and enough of them were checked to mean something).
fn assert_only_mapped_blocks_written(got: &[u8], data: &[u8], bmap: &Bmap) {
    let mut kept_old = 0u64;
    for (i, (a, b)) in got
        .chunks(BLOCK as usize)
        .zip(data.chunks(BLOCK as usize))
        .enumerate()
    {
        if mapped(bmap, i as u64) {
            assert!(a == b, "mapped block {i} differs");
        } else {
            let old = old_byte(i as u64 * BLOCK);
            assert!(
                a.iter().all(|&x| x == old),
                "unmapped block {i} was written"
            );
            kept_old += u64::from(old == OLD);
        }
    }
    assert!(
        kept_old > 10_000,
        "only {kept_old} blocks of old data were checked"
    );
}
