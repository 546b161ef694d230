//! Device-tree overlays: `device-trees/NAME.dts`, compiled with Debian's
//! `dtc -@` (device-tree-compiler) into the slot's `overlays/NAME.dtbo`.
//! boot.scr applies the slot's overlays with `fdt apply` (docs/device-trees.md
//! says why the slot and U-Boot, not BOOT and the firmware).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};

/// Where the overlay sources are: the repository's `device-trees/`.
pub const SOURCE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/device-trees");
/// The slot directory boot.scr loads them from.
pub const SLOT_DIR: &str = "overlays";
/// An overlay source is a page of DTS; its blob is a few hundred bytes.
const MAX_DTS_BYTES: u64 = 64 << 10;
const MAX_DTBO_BYTES: usize = 64 << 10;
/// Flattened device tree magic, big endian.
const FDT_MAGIC: [u8; 4] = [0xd0, 0x0d, 0xfe, 0xed];

/// `overlays/NAME.dtbo`, as the slot and boot.scr name it.
pub fn slot_path(name: &str) -> String {
    format!("{SLOT_DIR}/{name}.dtbo")
}

/// The overlay sources in `dir`, by name (file stem), sorted.
pub fn available(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let name = entry?.file_name();
        if let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".dts")) {
            names.push(stem.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Compile the overlays `names` from `dir`, in order.
pub fn compile_all(dir: &Path, names: &[String]) -> Result<Vec<(String, Vec<u8>)>> {
    names
        .iter()
        .map(|name| Ok((name.clone(), compile(&source(dir, name)?)?)))
        .collect()
}

fn source(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(format!("{name}.dts"));
    if !path.is_file() {
        let known = available(dir).unwrap_or_default().join(", ");
        bail!(
            "overlay `{name}`: no {} (overlays in {}: {})",
            path.display(),
            dir.display(),
            if known.is_empty() { "none" } else { &known }
        );
    }
    let size = std::fs::metadata(&path)?.len();
    if size > MAX_DTS_BYTES {
        bail!(
            "{} is {size} bytes, more than {MAX_DTS_BYTES}",
            path.display()
        );
    }
    Ok(path)
}

/// `dtc -@ -I dts -O dtb` of one source: the blob, checked to be an FDT.
/// `-@` emits `__symbols__` and `__local_fixups__`, which `fdt apply` needs
/// for references between the overlay's own nodes.
pub fn compile(src: &Path) -> Result<Vec<u8>> {
    let out = Command::new("dtc")
        .args(["-@", "-q", "-I", "dts", "-O", "dtb", "-o", "-"])
        .arg(src)
        .output()
        .context("running dtc (Debian package device-tree-compiler; scripts/setup installs it)")?;
    if !out.status.success() {
        bail!(
            "dtc {}: {}",
            src.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let blob = out.stdout;
    if !blob.starts_with(&FDT_MAGIC) || blob.len() > MAX_DTBO_BYTES {
        bail!(
            "dtc {}: output is not a device-tree blob of at most {MAX_DTBO_BYTES} bytes",
            src.display()
        );
    }
    Ok(blob)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn have(tool: &str) -> bool {
        Command::new(tool).arg("--version").output().is_ok()
    }

    /// Debian's Raspberry Pi 3 B DTB from the cached kernel package.
    fn rpi3_dtb() -> Option<PathBuf> {
        let cache = crate::host::debian::cache_dir().ok()?;
        let base = cache.join("pkgs/bookworm/linux-image-arm64/usr/lib");
        std::fs::read_dir(&base)
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("broadcom/bcm2837-rpi-3-b.dtb"))
            .find(|p| p.is_file())
    }

    fn fdtget(dtb: &Path, node: &str, prop: &str) -> String {
        let out = Command::new("fdtget")
            .args(["-t", "s"])
            .arg(dtb)
            .args([node, prop])
            .output()
            .unwrap();
        assert!(out.status.success(), "{node} {prop}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn fdtget_u32(dtb: &Path, node: &str, prop: &str) -> Vec<u32> {
        let out = Command::new("fdtget")
            .args(["-t", "u"])
            .arg(dtb)
            .args([node, prop])
            .output()
            .unwrap();
        assert!(out.status.success(), "{node} {prop}: {out:?}");
        String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect()
    }

    #[test]
    fn every_overlay_in_the_repository_compiles() {
        if !have("dtc") {
            eprintln!("SKIP: dtc (device-tree-compiler) not installed");
            return;
        }
        let names = available(Path::new(SOURCE_DIR)).unwrap();
        assert!(names.len() >= 3, "{names:?}");
        for (name, blob) in compile_all(Path::new(SOURCE_DIR), &names).unwrap() {
            assert!(blob.starts_with(&FDT_MAGIC), "{name}");
        }
    }

    #[test]
    fn broken_and_missing_sources_are_clear_errors() {
        if !have("dtc") {
            eprintln!("SKIP: dtc (device-tree-compiler) not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("bad.dts"),
            "/dts-v1/;\n/plugin/;\n/ { x = <1; };\n",
        )
        .unwrap();
        let err = compile_all(dir.path(), &["bad".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("dtc"), "{err:#}");
        let err = compile_all(dir.path(), &["nope".into()]).unwrap_err();
        assert!(
            format!("{err:#}").contains("bad"),
            "lists what exists: {err:#}"
        );
    }

    /// Applied with `fdtoverlay` (libfdt, as U-Boot's `fdt apply`) to
    /// Debian's bcm2837-rpi-3-b.dtb, the overlays change exactly what they say.
    #[test]
    fn overlays_apply_to_debians_rpi3_dtb() {
        if !have("dtc") || !have("fdtoverlay") {
            eprintln!("SKIP: device-tree-compiler not installed");
            return;
        }
        let Some(base) = rpi3_dtb() else {
            eprintln!("SKIP: no cached linux-image-arm64 (scripts/setup)");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = ["bcm2837-watchdog", "rpi3-status-led", "bcm2837-mgmt-uart"]
            .map(String::from)
            .to_vec();
        let mut args = Vec::new();
        for (name, blob) in compile_all(Path::new(SOURCE_DIR), &names).unwrap() {
            let p = dir.path().join(format!("{name}.dtbo"));
            std::fs::write(&p, blob).unwrap();
            args.push(p);
        }
        let out_dtb = dir.path().join("out.dtb");
        let st = Command::new("fdtoverlay")
            .arg("-i")
            .arg(&base)
            .arg("-o")
            .arg(&out_dtb)
            .args(&args)
            .output()
            .unwrap();
        assert!(st.status.success(), "{st:?}");
        // The base is as Debian ships it.
        assert_eq!(
            fdtget(&base, "/leds/led-act", "linux,default-trigger"),
            "heartbeat"
        );
        assert_eq!(fdtget(&out_dtb, "/leds/led-act", "status"), "disabled");
        assert_eq!(fdtget(&out_dtb, "/soc/watchdog@7e100000", "status"), "okay");
        assert_eq!(
            fdtget(&out_dtb, "/soc/serial@7e201000/bluetooth", "status"),
            "disabled"
        );
        assert_eq!(
            fdtget(&out_dtb, "/soc/serial@7e215040", "status"),
            "disabled"
        );
        let pins = "/soc/gpio@7e200000/mgmt-uart-pins";
        assert_eq!(fdtget_u32(&out_dtb, pins, "brcm,pins"), [14, 15]);
        assert_eq!(fdtget_u32(&out_dtb, pins, "brcm,function"), [4]);
        // The PL011 now points at the overlay's own pin group (a local
        // fixup resolved at apply time).
        assert_eq!(
            fdtget_u32(&out_dtb, "/soc/serial@7e201000", "pinctrl-0"),
            fdtget_u32(&out_dtb, pins, "phandle")
        );
    }
}
