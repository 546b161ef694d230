//! boot.scr's overlay step in Debian's U-Boot for the Raspberry Pi 3
//! (`u-boot-rpi`, rpi_3) on QEMU's raspi3b, with Debian's bcm2837-rpi-3-b.dtb
//! as the firmware's DT: the block of uboot/boot.cmd that loads the slot's
//! `overlays/NAME.dtbo` and runs `fdt apply`, then what the kernel would get.
//! No kernel boots here (Image.gz is a stand-in): the device tree is the point.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn pkg(rel: &str) -> Option<PathBuf> {
    let home = std::env::var_os("OUTPOST_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/outpost")))?;
    let base = home.join("pkgs/bookworm").join(rel);
    base.exists().then_some(base)
}

fn rpi3_dtb() -> Option<PathBuf> {
    let lib = pkg("linux-image-arm64/usr/lib")?;
    std::fs::read_dir(lib)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("broadcom/bcm2837-rpi-3-b.dtb"))
        .find(|p| p.is_file())
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {out:?}");
}

/// The slot-loading block of boot.cmd (boot.env through booti), with a
/// prelude standing in for the A/B part, and the DT the kernel would get
/// printed before booti.
fn script(boot_cmd: &str) -> String {
    let start = boot_cmd
        .find("setenv OS_ARGS\n")
        .expect("boot.cmd loads boot.env");
    let end = boot_cmd.find("# Still here").expect("boot.cmd ends");
    let block = boot_cmd[start..end].replacen(
        "  echo \"outpost: booting slot",
        "  fdt addr ${outpost_fdt}\n  echo \"outpost-test: dt ${outpost_fdt}\"\n  \
         fdt print /soc/gpio@7e200000/mgmt-uart-pins\n  fdt print /soc/serial@7e201000 pinctrl-0\n  \
         fdt print /soc/serial@7e215040 status\n  echo \"outpost: booting slot",
        1,
    );
    assert!(
        block.contains("outpost-test"),
        "boot.cmd changed: update this test"
    );
    format!(
        "setenv devtype mmc\nsetenv devnum 0\nsetenv outpost_part 1\nsetenv outpost_slot A\n\
         setenv kernel_addr_r 0x80000\nsetenv ramdisk_addr_r 0x2700000\n\
         setenv outpost_fdt_addr ${{fdt_addr}}\n{block}echo outpost-test: end\n"
    )
}

#[test]
fn uboot_applies_the_slots_overlays_to_the_firmware_dt() {
    if common::skip_qemu() {
        return;
    }
    let (Some(uboot), Some(dtb)) = (
        pkg("u-boot-rpi/usr/lib/u-boot/rpi_3/u-boot.bin"),
        rpi3_dtb(),
    ) else {
        eprintln!("SKIP: u-boot-rpi or linux-image-arm64 not in the cache (scripts/fetch-debian-packages bookworm u-boot-rpi)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let boot_cmd = std::fs::read_to_string(common::repo().join("uboot/boot.cmd")).unwrap();
    std::fs::write(p("boot.cmd"), script(&boot_cmd)).unwrap();
    run(Command::new("mkimage")
        .args([
            "-A", "arm64", "-O", "linux", "-T", "script", "-C", "none", "-n", "t", "-d",
        ])
        .arg(p("boot.cmd"))
        .arg(p("boot.scr")));
    run(Command::new("dtc")
        .args(["-@", "-q", "-I", "dts", "-O", "dtb", "-o"])
        .arg(p("mgmt.dtbo"))
        .arg(common::repo().join("device-trees/bcm2837-mgmt-uart.dts")));
    std::fs::write(
        p("boot.env"),
        "OS_ARGS=console=ttyS1\nOS_VERSION=1\nOS_OVERLAYS=bcm2837-mgmt-uart\n",
    )
    .unwrap();
    std::fs::write(p("Image.gz"), "not a kernel").unwrap();
    std::fs::write(p("initrd.img"), "not an initrd").unwrap();

    // An SD card: MBR, one FAT32 partition at 1 MiB.
    let card = p("sd.img");
    std::fs::File::create(&card)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let mut sfdisk = Command::new("sfdisk")
        .args(["-q"])
        .arg(&card)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut sfdisk.stdin.take().unwrap(), b"start=2048, type=c\n").unwrap();
    assert!(sfdisk.wait().unwrap().success());
    run(Command::new("mkfs.fat")
        .args(["-F", "32", "--offset", "2048"])
        .arg(&card)
        .arg("63000"));
    let fat = format!("{}@@1M", card.display());
    run(Command::new("mmd").args(["-i", &fat, "::overlays"]));
    for (src, dst) in [
        ("boot.scr", "::boot.scr"),
        ("boot.env", "::boot.env"),
        ("Image.gz", "::Image.gz"),
        ("initrd.img", "::initrd.img"),
        ("mgmt.dtbo", "::overlays/bcm2837-mgmt-uart.dtbo"),
    ] {
        run(Command::new("mcopy")
            .args(["-i", &fat])
            .arg(p(src))
            .arg(dst));
    }

    let console = boot(&uboot, &dtb, &card);
    assert!(
        console.contains("outpost: overlay bcm2837-mgmt-uart applied"),
        "{console}"
    );
    // The kernel gets the copy, not the firmware's DT.
    assert!(console.contains("outpost-test: dt 0x"), "{console}");
    assert!(
        !console.contains(&format!("outpost-test: dt {}\n", "8000000")),
        "{console}"
    );
    assert!(
        console.contains("brcm,pins = <0x0000000e 0x0000000f>;"),
        "{console}"
    );
    assert!(
        console.contains("brcm,function = <0x00000004>;"),
        "{console}"
    );
    let phandle = between(&console, "phandle = <", ">;");
    assert_eq!(
        between(&console, "pinctrl-0 = <", ">"),
        phandle,
        "{console}"
    );
    assert!(console.contains("status = \"disabled\""), "{console}");
}

fn between<'a>(text: &'a str, from: &str, to: &str) -> &'a str {
    let rest = &text[text
        .find(from)
        .unwrap_or_else(|| panic!("no {from} in {text}"))
        + from.len()..];
    &rest[..rest.find(to).unwrap()]
}

/// Boot U-Boot on raspi3b (its console is the mini UART, QEMU's second
/// serial port) until the script's end marker; the console text.
fn boot(uboot: &Path, dtb: &Path, card: &Path) -> String {
    let mut child = Command::new("qemu-system-aarch64")
        .args(["-M", "raspi3b", "-display", "none", "-monitor", "none"])
        .args(["-serial", "null", "-serial", "stdio"])
        .arg("-kernel")
        .arg(uboot)
        .arg("-dtb")
        .arg(dtb)
        .arg("-drive")
        .arg(format!("if=sd,file={},format=raw", card.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut console = String::new();
    let start = Instant::now();
    while !console.contains("outpost-test: end") && start.elapsed() < Duration::from_secs(90) {
        if let Ok(chunk) = rx.recv_timeout(Duration::from_millis(200)) {
            console.push_str(&String::from_utf8_lossy(&chunk).replace('\r', ""));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    console
}
