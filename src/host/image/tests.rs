//! Whole-image tests. Those that need Debian's kernel package skip (with a
//! message) until `scripts/setup` has fetched it.

use super::*;
use std::process::{Command, Stdio};

pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn qemu_board() -> Board {
    Board::load(&repo().join("boards"), "qemu-virt").unwrap()
}

/// The cached kernel package of qemu-virt, or None (after saying why).
pub(crate) fn cached_kernel() -> Option<(Package, Kernel)> {
    cached_kernel_of(&qemu_board())
}

/// The cached kernel package of `board`, or None (after saying why).
pub(crate) fn cached_kernel_of(board: &Board) -> Option<(Package, Kernel)> {
    let found = debian::cache_dir()
        .and_then(|c| Package::find(&c, board.kernel_suite(), &board.kernel.package))
        .and_then(|p| Kernel::find(&p).map(|k| (p, k)));
    match found {
        Ok(pk) => Some(pk),
        Err(e) => {
            eprintln!("SKIP: {e:#}");
            None
        }
    }
}

/// An ELF header that passes the aarch64 executable check.
fn fake_init() -> Vec<u8> {
    let mut elf = kmod::tests::fake_ko("");
    elf[16] = 2; // ET_EXEC
    elf
}

#[test]
fn boot_env_and_script_prelude() {
    let board = qemu_board();
    assert_eq!(
        boot_env(&board, "1.2.3"),
        "OS_ARGS=console=ttyAMA0 outpost.data=/dev/vda4 panic=5 loglevel=4 outpost.serial=/dev/ttyS0\nOS_VERSION=1.2.3\n"
    );
    let script = String::from_utf8(boot_script(&board, "echo body\n").unwrap()).unwrap();
    for line in [
        "env exists devtype || setenv devtype virtio\n",
        "env exists devnum || setenv devnum 0\n",
        "setenv kernel_addr_r 0x40400000\n",
        "setenv kernel_comp_addr_r 0x41400000\n",
        "setenv ramdisk_addr_r 0x44000000\n",
        "setenv outpost_fdt_addr ${fdtcontroladdr}\n",
        "setenv outpost_attempts 3\n",
        "setenv outpost_max_attempts 10\n",
    ] {
        assert!(script.contains(line), "{line} missing from\n{script}");
    }
    assert!(script.ends_with("echo body\n"));
}

#[test]
fn small_checks() {
    assert!(validate_version("0.1.0+git.3~rc1").is_ok());
    for bad in ["", "1 2", "a\"b", "x\ny"] {
        assert!(validate_version(bad).is_err(), "{bad:?}");
    }
    let uuid = data_uuid("edge-1");
    assert_eq!(uuid.len(), 36);
    assert_eq!(&uuid[14..15], "4");
    assert_ne!(uuid, data_uuid("edge-2"));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("init");
    std::fs::write(&p, b"#!/bin/sh\necho not elf\n").unwrap();
    assert!(format!("{:#}", read_init(&p).unwrap_err()).contains("aarch64"));
    std::fs::write(&p, fake_init()).unwrap();
    assert!(read_init(&p).is_ok());
}

/// The shipped boot.cmd compiles and keeps its contract with the builder.
#[test]
fn boot_cmd_uses_the_prelude_and_file_names() {
    let text = read_script(&repo().join("uboot/boot.cmd")).unwrap();
    for needle in [
        "${outpost_fdt_addr}",
        "${outpost_attempts}",
        "${outpost_max_attempts}",
        "${kernel_comp_addr_r}",
        COPY_FILES[0],
        COPY_FILES[1],
        "BOOT_SEQ",
        KERNEL_FILE,
        INITRD_FILE,
        BOOT_ENV_FILE,
        "env export -c -s 0x4000",
        "fatwrite",
        "outpost.slot=",
    ] {
        // kernel_comp_addr_r is read by booti itself, not the script.
        if needle == "${kernel_comp_addr_r}" {
            continue;
        }
        assert!(text.contains(needle), "boot.cmd lacks {needle}");
    }
    assert_eq!(format!("{STATE_SIZE:#x}"), "0x4000");
    // U-Boot's hush takes an apostrophe inside "…" for a quote: the whole
    // script is then a syntax error and no slot boots.
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        for (i, part) in line.split('"').enumerate() {
            assert!(
                i % 2 == 0 || !part.contains('\''),
                "apostrophe in quotes: {line}"
            );
        }
    }
}

fn build_once(site: &Path, out: &Path, init: &Path) -> BuildReport {
    build(&BuildOptions {
        board: qemu_board(),
        site_dir: site.to_owned(),
        hostname: "edge-1".into(),
        output: out.to_owned(),
        init_binary: init.to_owned(),
        version: "0.1.0-test".into(),
        uboot_script: repo().join("uboot/boot.cmd"),
        extensions: Vec::new(),
    })
    .unwrap()
}

fn part_bytes(image: &Path, p: &Partition) -> Vec<u8> {
    let data = std::fs::read(image).unwrap();
    data[p.start as usize..(p.start + p.size) as usize].to_vec()
}

/// Build a full image from the cached Debian packages and take it apart
/// with independent tools.
#[test]
fn full_image() {
    let Some((kpkg, kern)) = cached_kernel() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let site = ext4::tests::fake_site("edge-1");
    let init = work.path().join("init");
    std::fs::write(&init, fake_init()).unwrap();
    let img = work.path().join("edge-1.img");
    std::env::set_var("SOURCE_DATE_EPOCH", "1700000000");
    let report = build_once(site.path(), &img, &init);
    let layout = DiskLayout::standard();

    assert_eq!(report.size_bytes, layout.disk_size());
    assert_eq!(report.kernel_package, kpkg.label());
    assert_eq!(report.kernel_release, kern.release);
    assert_eq!(
        report.modules_load,
        [
            "virtio_pci",
            "virtio_blk",
            "virtio_net",
            "crc32c_generic",
            "ext4",
            "i6300esb"
        ]
    );
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    // Sparse: far fewer blocks than bytes.
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(&img).unwrap();
    assert_eq!(meta.len(), 385 << 20);
    assert!(meta.blocks() * 512 < meta.len() / 2, "image is not sparse");

    // Table and identity read back.
    let info = ImageInfo::read(&img).unwrap();
    assert_eq!(
        (
            info.board.as_str(),
            info.hostname.as_str(),
            info.version.as_str()
        ),
        ("qemu-virt", "edge-1", "0.1.0-test")
    );
    assert_eq!(info.build_time, 1_700_000_000);
    let current = read_boot_state(&img).unwrap();
    assert_eq!(current.state, BootState::initial());
    assert_eq!(
        (current.from, current.seq),
        (Some(crate::bootstate::CopyId::Second), 1)
    );
    assert_eq!(current.errors, [None, None]);

    // BOOT: boot.scr accepted by mkimage; both copies read by fw_printenv.
    let dir = work.path();
    let boot_bytes = part_bytes(&img, &layout.boot);
    let boot = io_fs(boot_bytes.clone());
    let scr = read_fat(&boot, BOOT_SCRIPT_FILE);
    std::fs::write(dir.join("boot.scr"), &scr).unwrap();
    let copies = read_boot_copies(&img).unwrap();
    assert_eq!(copies[0].len(), STATE_SIZE);
    assert_eq!(copies[1].len(), STATE_SIZE);
    for (name, blob) in COPY_FILES.iter().zip(&copies) {
        assert_eq!(&read_fat(&boot, name), blob);
        std::fs::write(dir.join(name), blob).unwrap();
    }
    // Preallocated and contiguous: the two copies' bytes follow each other
    // in the partition (first, then second), so each is one in-place write.
    let at = boot_bytes
        .windows(copies[0].len())
        .position(|w| w == &copies[0][..])
        .expect("first copy not contiguous in BOOT");
    assert_eq!(
        &boot_bytes[at + STATE_SIZE..at + 2 * STATE_SIZE],
        &copies[1][..],
        "second copy does not follow the first"
    );
    if let Ok(out) = Command::new("mkimage")
        .arg("-l")
        .arg(dir.join("boot.scr"))
        .output()
    {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("AArch64 Linux Script"),
            "{text}"
        );
    }
    for (name, seq) in COPY_FILES.iter().zip(["0x0", "0x1"]) {
        let cfg = dir.join("fw_env.config");
        std::fs::write(&cfg, format!("{} 0x0 0x4000\n", dir.join(name).display())).unwrap();
        match Command::new("fw_printenv").arg("-c").arg(&cfg).output() {
            Ok(out) => {
                let text = String::from_utf8_lossy(&out.stdout);
                assert!(out.status.success(), "{out:?}");
                let seq_line = format!("BOOT_SEQ={seq}");
                for line in [
                    "BOOT_ORDER=A B",
                    "BOOT_A_LEFT=0x3",
                    "BOOT_B_LEFT=0x0",
                    &seq_line,
                ] {
                    assert!(text.lines().any(|l| l == line), "{line} not in {text}");
                }
            }
            Err(_) => eprintln!("SKIP fw_printenv check: libubootenv-tool not installed"),
        }
    }

    // SLOT_A: files match the manifest; the initramfs lists init and modules.
    let slot = io_fs(part_bytes(&img, &layout.slot_a));
    let manifest =
        Manifest::from_toml(&String::from_utf8(read_fat(&slot, MANIFEST_FILE)).unwrap()).unwrap();
    assert_eq!(manifest.files.len(), 3);
    for f in &manifest.files {
        let data = read_fat(&slot, &f.name);
        assert_eq!(
            (data.len() as u64, sha256_hex(&data)),
            (f.size, f.sha256.clone()),
            "{}",
            f.name
        );
    }
    let env = String::from_utf8(read_fat(&slot, BOOT_ENV_FILE)).unwrap();
    assert!(
        env.starts_with("OS_ARGS=console=ttyAMA0 outpost.data=/dev/vda4"),
        "{env}"
    );
    let initrd = read_fat(&slot, INITRD_FILE);
    let (head, gz) = super::initramfs::split(&initrd).unwrap();
    assert!(
        head.starts_with(b"070701"),
        "/init comes first, uncompressed"
    );
    let mut cpio_bytes = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut cpio_bytes)
        .unwrap();
    if let Ok(mut child) = Command::new("cpio")
        .args(["-t", "--quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
    {
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(&cpio_bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let kdir = format!("lib/modules/{}", kern.release);
        for want in [
            format!("{kdir}/modules.dep"),
            format!("{kdir}/kernel/fs/ext4/ext4.ko"),
            format!("{kdir}/kernel/drivers/watchdog/i6300esb.ko"),
            "etc/outpost-release".into(),
        ] {
            assert!(text.lines().any(|l| l == want), "{want} not in initramfs");
        }
    }
    let slot_b = io_fs(part_bytes(&img, &layout.slot_b));
    assert_eq!(slot_b.root_dir().iter().count(), 0);

    // DATA: a clean ext4 with the identity.
    let data_path = dir.join("data.ext4");
    std::fs::write(&data_path, part_bytes(&img, &layout.data)).unwrap();
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(&data_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        ext4::read_file(&img, layout.data.start, "/identity/device.key", 4096).unwrap(),
        b"-----BEGIN PRIVATE KEY-----\nDEVKEY\n"
    );

    // Same inputs and SOURCE_DATE_EPOCH: the same image, byte for byte.
    let again = dir.join("again.img");
    build_once(site.path(), &again, &init);
    assert!(
        std::fs::read(&img).unwrap() == std::fs::read(&again).unwrap(),
        "image is not reproducible"
    );
    std::env::remove_var("SOURCE_DATE_EPOCH");
}

fn io_fs(bytes: Vec<u8>) -> fatfs::FileSystem<std::io::Cursor<Vec<u8>>> {
    fatfs::FileSystem::new(std::io::Cursor::new(bytes), fatfs::FsOptions::new()).unwrap()
}

fn read_fat(fs: &fatfs::FileSystem<std::io::Cursor<Vec<u8>>>, name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    fs.root_dir()
        .open_file(name)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// Every board in boards/: its image has the standard partitions, BOOT holds
/// what its boot chain reads (firmware, config.txt naming U-Boot and each
/// model's DTB, u-boot.bin from the package), and the slot carries the DTBs
/// under the names U-Boot's `fdtfile` uses, byte-equal to the kernel's. An
/// unsupported board is refused with its reason.
#[test]
fn every_board_image_layout() {
    let work = tempfile::tempdir().unwrap();
    let site = ext4::tests::fake_site("edge-1");
    let init = work.path().join("init");
    std::fs::write(&init, fake_init()).unwrap();
    let boards = Board::list(&repo().join("boards")).unwrap();
    for want in ["qemu-virt", "rpi3", "rpi4", "rpi-zero2w", "rpi5"] {
        assert!(boards.iter().any(|b| b.name == want), "no board {want}");
    }
    for board in boards {
        let img = work.path().join(format!("{}.img", board.name));
        let opts = BuildOptions {
            board: board.clone(),
            site_dir: site.path().to_owned(),
            hostname: "edge-1".into(),
            output: img.clone(),
            init_binary: init.clone(),
            version: "0.1.0-test".into(),
            uboot_script: repo().join("uboot/boot.cmd"),
            extensions: Vec::new(),
        };
        if let Some(why) = &board.unsupported {
            let err = format!("{:#}", build(&opts).unwrap_err());
            assert!(err.contains("cannot be built yet"), "{err}");
            assert!(err.contains(why.trim()), "{err}");
            assert!(!img.exists());
            continue;
        }
        // Packages missing: say so and go on (scripts/setup fetches them).
        let kern = match board
            .kernel_package()
            .and_then(|p| Kernel::find(&p))
            .and_then(|k| board.uboot_binary().map(|_| k))
            .and_then(|k| board.firmware_package().map(|_| k))
        {
            Ok(k) => k,
            Err(e) => {
                eprintln!("SKIP board {}: {e:#}", board.name);
                continue;
            }
        };
        let report = build(&opts).unwrap_or_else(|e| panic!("{}: {e:#}", board.name));
        assert_eq!(report.board, board.name);
        for m in &board.modules {
            assert!(
                report.modules.contains(&m.replace('-', "_")),
                "{}: module {m} not in the initramfs",
                board.name
            );
        }
        let layout = check_table(&img).unwrap();
        assert_eq!(layout, DiskLayout::standard());
        let boot = io_fs(part_bytes(&img, &layout.boot));
        let slot = io_fs(part_bytes(&img, &layout.slot_a));
        for name in [BOOT_SCRIPT_FILE, COPY_FILES[0], COPY_FILES[1]] {
            assert!(!read_fat(&boot, name).is_empty(), "{}: {name}", board.name);
        }
        let script = String::from_utf8_lossy(&read_fat(&boot, BOOT_SCRIPT_FILE)).into_owned();
        let (devtype, devnum) = board.boot_device().unwrap();
        assert!(script.contains(&format!("setenv devtype {devtype}\n")));
        assert!(script.contains(&format!("setenv devnum {devnum}\n")));
        let manifest =
            Manifest::from_toml(&String::from_utf8_lossy(&read_fat(&slot, MANIFEST_FILE))).unwrap();

        for d in &board.dtbs {
            let theirs = std::fs::read(kern.dtb_dir.join("broadcom").join(&d.file)).unwrap();
            assert_eq!(read_fat(&slot, &d.slot_path()), theirs, "{}", d.file);
            assert!(
                manifest
                    .files
                    .iter()
                    .any(|f| f.name == d.slot_path()
                        && f.sha256 == crate::bundle::sha256_hex(&theirs)),
                "{}: manifest lacks {}",
                board.name,
                d.slot_path()
            );
            if board.firmware.is_some() {
                assert_eq!(read_fat(&boot, &d.file), theirs, "BOOT/{}", d.file);
            }
        }
        // The board's [led]/[button] reach the kernel command line.
        let env = String::from_utf8_lossy(&read_fat(&slot, BOOT_ENV_FILE)).into_owned();
        for (word, spec) in [
            ("outpost.led=", &board.led),
            ("outpost.button=", &board.button),
        ] {
            match spec {
                Some(s) => assert!(
                    env.contains(&format!("{word}{}", s.cmdline_value())),
                    "{}: {env}",
                    board.name
                ),
                None => assert!(!env.contains(word), "{}: {env}", board.name),
            }
        }
        if board.dtbs.is_empty() {
            assert!(script.contains("setenv outpost_slot_dtb\n"));
        } else {
            assert!(script.contains("setenv outpost_slot_dtb 1\n"));
        }
        let Some(fw) = &board.firmware else {
            assert!(boot.root_dir().open_file(rpi::CONFIG_TXT).is_err());
            continue;
        };
        let pkg = board.firmware_package().unwrap();
        assert_eq!(pkg.is_some(), !fw.files.is_empty(), "{}", board.name);
        for rel in &fw.files {
            let name = Path::new(rel).file_name().unwrap().to_str().unwrap();
            assert_eq!(
                read_fat(&boot, name),
                std::fs::read(pkg.as_ref().unwrap().file(rel).unwrap()).unwrap(),
                "{}: BOOT/{name}",
                board.name
            );
        }
        // The Pi 5's firmware is in its EEPROM: no GPU firmware on BOOT.
        let has_start_elf = ["start.elf", "start4.elf"]
            .iter()
            .any(|f| boot.root_dir().open_file(f).is_ok());
        assert_eq!(has_start_elf, board.name != "rpi5", "{}", board.name);
        assert_eq!(
            read_fat(&boot, rpi::UBOOT_FILE),
            std::fs::read(board.uboot_binary().unwrap()).unwrap()
        );
        let config = String::from_utf8(read_fat(&boot, rpi::CONFIG_TXT)).unwrap();
        assert_eq!(config, rpi::config_txt(&board));
        for line in ["arm_64bit=1", "kernel=u-boot.bin", "enable_uart=1"] {
            assert!(config.lines().any(|l| l == line), "{}: {line}", board.name);
        }
        for d in &board.dtbs {
            assert!(config.contains(&format!("device_tree={}\n", d.file)));
        }
        // Pi 3 and Zero 2 W boot ROMs need bootcode.bin; the Pi 4 has an EEPROM.
        let has_bootcode = boot.root_dir().open_file("bootcode.bin").is_ok();
        assert_eq!(
            has_bootcode,
            board.name == "rpi3" || board.name == "rpi-zero2w",
            "{}",
            board.name
        );
    }
}

/// A board whose definition says what is missing is refused with that text,
/// before anything is read or written.
#[test]
fn an_unsupported_board_is_refused_with_its_reason() {
    let work = tempfile::tempdir().unwrap();
    let site = ext4::tests::fake_site("edge-1");
    let mut board = Board::load(&repo().join("boards"), "rpi5").unwrap();
    board.unsupported = Some("no kernel with the board's SD host\n".into());
    let img = work.path().join("x.img");
    let opts = BuildOptions {
        board,
        site_dir: site.path().to_owned(),
        hostname: "edge-1".into(),
        output: img.clone(),
        init_binary: work.path().join("no-init"),
        version: "0.1.0-test".into(),
        uboot_script: repo().join("uboot/boot.cmd"),
        extensions: Vec::new(),
    };
    let err = format!("{:#}", build(&opts).unwrap_err());
    assert!(
        err.contains("board `rpi5` cannot be built yet: no kernel with the board's SD host"),
        "{err}"
    );
    assert!(!img.exists());
}

#[test]
fn boot_env_carries_led_button_and_overlays() {
    let mut board = qemu_board();
    board.led = Some(crate::host::board::GpioLineSpec {
        chip: "raspberrypi-exp-gpio".into(),
        line: 2,
        active_low: false,
    });
    board.button = Some(crate::host::board::GpioLineSpec {
        chip: "pinctrl-bcm2835".into(),
        line: 17,
        active_low: true,
    });
    board.overlays = vec!["bcm2837-watchdog".into(), "rpi3-status-led".into()];
    let env = boot_env(&board, "1.2.3");
    assert_eq!(
        env,
        "OS_ARGS=console=ttyAMA0 outpost.data=/dev/vda4 panic=5 loglevel=4 outpost.serial=/dev/ttyS0 \
         outpost.led=raspberrypi-exp-gpio:2 outpost.button=pinctrl-bcm2835:17:active-low\n\
         OS_VERSION=1.2.3\nOS_OVERLAYS=bcm2837-watchdog rpi3-status-led\n"
    );
    // boot.cmd imports the list and loads each from the slot's overlays/.
    let text = read_script(&repo().join("uboot/boot.cmd")).unwrap();
    for needle in [
        "OS_OVERLAYS",
        "overlays/${o}.dtbo",
        "fdt apply",
        "${outpost_fdt}",
    ] {
        assert!(text.contains(needle), "boot.cmd lacks {needle}");
    }
}

/// A board's overlays are compiled into its slot (and so into bundles) as
/// overlays/NAME.dtbo, listed with their hashes in the manifest.
#[test]
fn slot_carries_the_boards_overlays() {
    if Command::new("dtc").arg("--version").output().is_err() {
        eprintln!("SKIP: dtc (device-tree-compiler) not installed");
        return;
    }
    if cached_kernel().is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let site = ext4::tests::fake_site("edge-1");
    let init = work.path().join("init");
    std::fs::write(&init, fake_init()).unwrap();
    let mut board = qemu_board();
    // The same slot inputs, with the board's overlays as each case sets them.
    let slot_for = |board: &crate::host::board::Board| {
        build_slot(&SlotInputs {
            board,
            site_dir: site.path(),
            init_binary: &init,
            version: "0.1.0-test",
            build_time: 1_700_000_000,
            volume_id: 1,
            extensions: &[],
        })
    };
    board.overlays = vec!["rpi3-status-led".into()];
    let slot = slot_for(&board).unwrap();
    let entry = slot
        .manifest
        .files
        .iter()
        .find(|f| f.name == "overlays/rpi3-status-led.dtbo")
        .expect("overlay in the manifest");
    let fs =
        fatfs::FileSystem::new(std::io::Cursor::new(slot.image), fatfs::FsOptions::new()).unwrap();
    let blob = read_fat(&fs, "overlays/rpi3-status-led.dtbo");
    assert_eq!(&blob[..4], &[0xd0, 0x0d, 0xfe, 0xed]);
    assert_eq!(sha256_hex(&blob), entry.sha256);
    let env = String::from_utf8(read_fat(&fs, BOOT_ENV_FILE)).unwrap();
    assert!(env.ends_with("OS_OVERLAYS=rpi3-status-led\n"), "{env}");

    board.overlays = vec!["no-such-overlay".into()];
    let err = slot_for(&board).err().expect("missing overlay refused");
    assert!(format!("{err:#}").contains("no-such-overlay"), "{err:#}");
}
