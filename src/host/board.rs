//! Board definitions (`boards/<name>.toml`): which Debian suite and packages a
//! board boots, how U-Boot finds the disk and where it loads things, and what
//! the kernel needs (console, DATA device, modules).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};

use super::debian::{self, Package};

/// A board file is a page of TOML.
const MAX_BOARD_BYTES: u64 = 64 * 1024;
/// Kernel images are 2 MiB aligned (arm64 boot protocol).
const KERNEL_ALIGN: u64 = 2 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Board {
    pub name: String,
    pub description: String,
    /// Debian suite every package comes from (`bookworm`).
    pub suite: String,
    /// Kernel console device without `/dev/` (`ttyAMA0`).
    pub console: String,
    /// The DATA partition as Linux names it (`/dev/vda4`).
    pub data_device: String,
    /// Extra kernel arguments.
    #[serde(default)]
    pub cmdline: String,
    /// Modules outpost-init loads, in order; dependencies are added.
    #[serde(default)]
    pub modules: Vec<String>,
    pub kernel: KernelSpec,
    pub uboot: UbootSpec,
    /// Why this board cannot be built yet (what is missing); `image build`
    /// refuses it with this text.
    #[serde(default)]
    pub unsupported: Option<String>,
    /// Device trees the slot carries (and BOOT, for the firmware).
    #[serde(default)]
    pub dtbs: Vec<DtbSpec>,
    /// Raspberry Pi firmware on BOOT; with it BOOT also gets config.txt and
    /// U-Boot.
    #[serde(default)]
    pub firmware: Option<FirmwareSpec>,
    /// The QEMU machine that emulates this board, if any (`outpost qemu up`).
    #[serde(default)]
    pub qemu: Option<QemuMachine>,
    /// Device-tree overlays from `device-trees/` (file stems), compiled into
    /// the slot and applied by boot.scr in this order (docs/device-trees.md).
    #[serde(default)]
    pub overlays: Vec<String>,
    /// The status LED (docs/leds.md); becomes `outpost.led=` on the kernel
    /// command line.
    #[serde(default)]
    pub led: Option<GpioLineSpec>,
    /// The rollback button; becomes `outpost.button=`.
    #[serde(default)]
    pub button: Option<GpioLineSpec>,
}

/// One device tree from the kernel package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DtbSpec {
    /// File in the kernel package's `usr/lib/linux-image-*/broadcom/`.
    pub file: String,
    /// The name U-Boot's `fdtfile` gives this model when it differs from
    /// `file` (U-Boot says bcm2837-rpi-zero-2.dtb, the kernel ships
    /// bcm2837-rpi-zero-2-w.dtb); the slot stores it as `broadcom/<this>`.
    #[serde(default)]
    pub uboot_name: Option<String>,
    /// config.txt section (`pi3`, `pi4`, `pi400`, `cm4`, `pi02`) whose
    /// `device_tree=` names this file for the firmware; empty: all models.
    #[serde(default)]
    pub config_filter: String,
}

impl DtbSpec {
    /// Where the slot keeps it: the path U-Boot's `fdtfile` names.
    pub fn slot_path(&self) -> String {
        format!(
            "broadcom/{}",
            self.uboot_name.as_deref().unwrap_or(&self.file)
        )
    }
}

/// Raspberry Pi firmware files for BOOT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirmwareSpec {
    /// Debian package (`raspi-firmware`, non-free-firmware). None on a board
    /// whose firmware lives in its EEPROM (the Pi 5): BOOT then gets only
    /// config.txt, U-Boot and the DTBs.
    #[serde(default)]
    pub package: Option<String>,
    /// Files relative to the package; each lands at BOOT's root by its name.
    #[serde(default)]
    pub files: Vec<String>,
    /// Extra config.txt lines after the generated ones.
    #[serde(default)]
    pub config: Vec<String>,
}

/// The QEMU machines `outpost qemu up` knows how to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QemuMachine {
    /// `-M virt`: U-Boot as `-bios`, virtio disk and NIC, i6300esb.
    Virt,
    /// `-M raspi3b`: U-Boot as `-kernel` (the GPU firmware does not run in
    /// QEMU), the board's first DTB as `-dtb`, SD card, usb-net.
    Raspi3b,
}

/// One GPIO line, as outpost-init requests it from the GPIO character device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpioLineSpec {
    /// `gpiochipN` or, better (numbers follow probe order), the chip's label
    /// as `gpioinfo` shows it (`pinctrl-bcm2835`, `raspberrypi-exp-gpio`).
    pub chip: String,
    /// Line offset within the chip.
    pub line: u32,
    /// The line is active when electrically low (LED to 3V3, button to GND;
    /// a button gets the pull-up then).
    #[serde(default)]
    pub active_low: bool,
}

/// The uAPI's chip label limit (31 bytes and a NUL).
const MAX_GPIO_CHIP: usize = 31;
/// outpost-init refuses larger line offsets (src/device/cmdline.rs).
const MAX_GPIO_LINE: u32 = 4095;
/// Overlays per board: each is a load and an `fdt apply` at every boot.
const MAX_OVERLAYS: usize = 16;

impl GpioLineSpec {
    /// `CHIP:LINE[:active-low]`, what outpost-init parses.
    pub fn cmdline_value(&self) -> String {
        let low = if self.active_low { ":active-low" } else { "" };
        format!("{}:{}{low}", self.chip, self.line)
    }

    fn validate(&self, field: &str) -> Result<()> {
        if self.chip.is_empty()
            || self.chip.len() > MAX_GPIO_CHIP
            || !self
                .chip
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            bail!(
                "`{field}.chip`: `{}` must be 1 to {MAX_GPIO_CHIP} letters, digits, `.`, `_` or `-`",
                self.chip
            );
        }
        if self.line > MAX_GPIO_LINE {
            bail!("`{field}.line`: {} is more than {MAX_GPIO_LINE}", self.line);
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelSpec {
    /// Debian package, usually the meta package (`linux-image-arm64`).
    pub package: String,
    /// The suite it comes from when not the board's (`trixie-backports`:
    /// the first Debian kernel that drives the Pi 5's SD card and RP1).
    #[serde(default)]
    pub suite: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UbootSpec {
    pub package: String,
    /// The U-Boot binary, relative to the unpacked package.
    pub binary: String,
    /// U-Boot `devtype devnum` of the boot disk (`virtio 0`).
    pub boot_device: String,
    /// Where Image.gz is loaded and the inflated kernel runs.
    pub kernel_addr_r: u64,
    /// Scratch area booti inflates Image.gz into.
    pub kernel_comp_addr_r: u64,
    /// Where initrd.img is loaded.
    pub ramdisk_addr_r: u64,
    /// U-Boot variable that holds the device tree address (`fdtcontroladdr`):
    /// the tree the kernel gets when the slot has none for this model.
    pub fdt_addr_var: String,
    /// Where the slot's DTB is loaded (boards with `dtbs`); above the
    /// ramdisk, so `fdt_addr_r - ramdisk_addr_r` bounds initrd.img.
    #[serde(default)]
    pub fdt_addr_r: Option<u64>,
}

impl Board {
    /// Load and validate `dir/<name>.toml`.
    pub fn load(dir: &Path, name: &str) -> Result<Board> {
        if !is_name(name) {
            bail!("board name `{name}` must be lowercase letters, digits and '-'");
        }
        let path = dir.join(format!("{name}.toml"));
        if !path.is_file() {
            let known = Self::names(dir).unwrap_or_default();
            bail!(
                "no board `{name}` ({} does not exist); known boards: {}",
                path.display(),
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            );
        }
        let text = debian::read_small(&path, MAX_BOARD_BYTES)?;
        let board = Self::from_toml(&text).with_context(|| format!("board {}", path.display()))?;
        if board.name != name {
            bail!(
                "board {}: `name = \"{}\"` must match the file name `{name}`",
                path.display(),
                board.name
            );
        }
        Ok(board)
    }

    /// Every board in `dir`, by name.
    pub fn list(dir: &Path) -> Result<Vec<Board>> {
        Self::names(dir)?
            .iter()
            .map(|name| Self::load(dir, name))
            .collect()
    }

    fn names(dir: &Path) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in
            std::fs::read_dir(dir).with_context(|| format!("board directory {}", dir.display()))?
        {
            let name = entry?.file_name();
            if let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".toml")) {
                names.push(stem.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    pub fn from_toml(text: &str) -> Result<Board> {
        let board: Board = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        board.validate()?;
        Ok(board)
    }

    /// Every field checked, each error naming the field.
    pub fn validate(&self) -> Result<()> {
        if !is_name(&self.name) {
            bail!(
                "`name`: `{}` must be lowercase letters, digits and '-'",
                self.name
            );
        }
        if !is_name(&self.suite) {
            bail!("`suite`: `{}` is not a Debian suite name", self.suite);
        }
        if let Some(suite) = self.kernel.suite.as_deref().filter(|s| !is_name(s)) {
            bail!("`kernel.suite`: `{suite}` is not a Debian suite name");
        }
        for (field, pkg) in [
            ("kernel.package", &self.kernel.package),
            ("uboot.package", &self.uboot.package),
        ] {
            if !is_package(pkg) {
                bail!("`{field}`: `{pkg}` is not a Debian package name");
            }
        }
        if self.description.len() > 200 || self.description.contains('\n') {
            bail!("`description`: one line of at most 200 characters");
        }
        let tty_ok = |s: &str| {
            s.starts_with("tty") && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_alphanumeric())
        };
        if !tty_ok(&self.console) {
            bail!(
                "`console`: `{}` must be a tty name like ttyAMA0 (no /dev/)",
                self.console
            );
        }
        let dev_ok = self.data_device.strip_prefix("/dev/").is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/_-.".contains(&b))
        });
        if !dev_ok || self.data_device.contains("..") {
            bail!("`data_device`: `{}` must be a /dev/ path", self.data_device);
        }
        // cmdline lands in a U-Boot text env and then in `setenv bootargs "…"`:
        // no quotes, variable references, separators or line breaks.
        if self.cmdline.len() > 512
            || !self
                .cmdline
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"\"'$;\\`".contains(&b) || b == b' ')
        {
            bail!("`cmdline`: printable ASCII only, no quotes, `$`, `;` or `\\` (at most 512)");
        }
        if self
            .cmdline
            .split_whitespace()
            .any(|a| a.starts_with("outpost.slot="))
        {
            bail!("`cmdline`: outpost.slot= is added by boot.scr");
        }
        for (word, field) in [("outpost.led=", "led"), ("outpost.button=", "button")] {
            if self.cmdline.split_whitespace().any(|a| a.starts_with(word)) {
                bail!("`cmdline`: {word} is generated from [{field}]; set that instead");
            }
        }
        if let Some(led) = &self.led {
            led.validate("led")?;
        }
        if let Some(button) = &self.button {
            button.validate("button")?;
        }
        if self.overlays.len() > MAX_OVERLAYS {
            bail!(
                "`overlays`: {} overlays, at most {MAX_OVERLAYS}",
                self.overlays.len()
            );
        }
        let mut seen_overlays = std::collections::HashSet::new();
        for o in &self.overlays {
            // Names go into boot.env and `load … overlays/NAME.dtbo`.
            if !is_name(o) {
                bail!("`overlays`: `{o}` must be lowercase letters, digits and '-'");
            }
            if !seen_overlays.insert(o) {
                bail!("`overlays`: `{o}` is listed twice");
            }
        }
        let mut seen = std::collections::HashSet::new();
        for m in &self.modules {
            if m.is_empty()
                || m.len() > 64
                || !m
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                bail!("`modules`: `{m}` is not a module name");
            }
            if !seen.insert(m.replace('-', "_")) {
                bail!("`modules`: `{m}` is listed twice");
            }
        }
        self.validate_uboot()?;
        self.validate_rpi()
    }

    /// `dtbs`, `firmware` and `unsupported`.
    fn validate_rpi(&self) -> Result<()> {
        if let Some(why) = &self.unsupported {
            if why.trim().is_empty() || why.len() > 1000 {
                bail!("`unsupported`: say what is missing, in at most 1000 characters");
            }
        }
        let file_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && !s.starts_with('.')
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b))
        };
        let mut seen = std::collections::HashSet::new();
        for d in &self.dtbs {
            if !file_ok(&d.file) || !d.file.ends_with(".dtb") {
                bail!("`dtbs.file`: `{}` is not a .dtb file name", d.file);
            }
            if let Some(u) = &d.uboot_name {
                if !file_ok(u) || !u.ends_with(".dtb") {
                    bail!("`dtbs.uboot_name`: `{u}` is not a .dtb file name");
                }
            }
            if !seen.insert(d.slot_path()) {
                bail!("`dtbs`: `{}` is listed twice", d.slot_path());
            }
            let filter_ok = d.config_filter.len() <= 16
                && d.config_filter
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'+');
            if !filter_ok {
                bail!(
                    "`dtbs.config_filter`: `{}` is not a config.txt filter like pi4",
                    d.config_filter
                );
            }
        }
        if !self.dtbs.is_empty() {
            let Some(fdt) = self.uboot.fdt_addr_r else {
                bail!("`uboot.fdt_addr_r`: needed to load the slot's DTB (`dtbs` is set)");
            };
            if fdt <= self.uboot.ramdisk_addr_r {
                bail!("`uboot.fdt_addr_r`: {fdt:#x} must be above ramdisk_addr_r");
            }
        }
        if let Some(fw) = &self.firmware {
            match &fw.package {
                Some(pkg) if !is_package(pkg) => {
                    bail!("`firmware.package`: `{pkg}` is not a Debian package name")
                }
                Some(_) if fw.files.is_empty() => {
                    bail!("`firmware.files`: list the firmware files BOOT needs")
                }
                None if !fw.files.is_empty() => {
                    bail!("`firmware.files`: name the `firmware.package` they come from")
                }
                _ => {}
            }
            let mut names = std::collections::HashSet::new();
            for f in &fw.files {
                let name = Path::new(f).file_name().and_then(|n| n.to_str());
                if !relative_ok(f) || !name.is_some_and(file_ok) {
                    bail!("`firmware.files`: `{f}` must be a relative path inside the package");
                }
                if !names.insert(name) {
                    bail!("`firmware.files`: two files are named {name:?}");
                }
            }
            for line in &fw.config {
                if line.len() > 200 || line.bytes().any(|b| b.is_ascii_control()) {
                    bail!("`firmware.config`: `{line}` is not one config.txt line");
                }
            }
            if self.dtbs.is_empty() {
                bail!("`dtbs`: the Raspberry Pi firmware needs a device tree to hand to U-Boot");
            }
        }
        if self.qemu == Some(QemuMachine::Raspi3b) && self.dtbs.is_empty() {
            bail!("`qemu`: raspi3b needs the board's DTB for -dtb (`dtbs`)");
        }
        Ok(())
    }

    fn validate_uboot(&self) -> Result<()> {
        let u = &self.uboot;
        if !relative_ok(&u.binary) {
            bail!(
                "`uboot.binary`: `{}` must be a relative path inside the package",
                u.binary
            );
        }
        self.boot_device()?;
        if u.fdt_addr_var.is_empty()
            || u.fdt_addr_var.len() > 32
            || !u
                .fdt_addr_var
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            bail!(
                "`uboot.fdt_addr_var`: `{}` is not a U-Boot variable name",
                u.fdt_addr_var
            );
        }
        if u.kernel_addr_r % KERNEL_ALIGN != 0 {
            bail!(
                "`uboot.kernel_addr_r`: {:#x} must be 2 MiB aligned",
                u.kernel_addr_r
            );
        }
        if !(u.kernel_addr_r < u.kernel_comp_addr_r && u.kernel_comp_addr_r < u.ramdisk_addr_r) {
            bail!("`uboot`: need kernel_addr_r < kernel_comp_addr_r < ramdisk_addr_r");
        }
        Ok(())
    }

    /// U-Boot `(devtype, devnum)` of the boot disk.
    pub fn boot_device(&self) -> Result<(&str, u32)> {
        let bad = || {
            anyhow::anyhow!(
                "`uboot.boot_device`: `{}` must be `DEVTYPE DEVNUM` like `mmc 0`",
                self.uboot.boot_device
            )
        };
        let mut words = self.uboot.boot_device.split_whitespace();
        let (Some(devtype), Some(devnum), None) = (words.next(), words.next(), words.next()) else {
            return Err(bad());
        };
        if devtype.is_empty()
            || !devtype
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(bad());
        }
        Ok((devtype, devnum.parse().map_err(|_| bad())?))
    }

    /// The suite the kernel comes from.
    pub fn kernel_suite(&self) -> &str {
        self.kernel.suite.as_deref().unwrap_or(&self.suite)
    }

    /// The cached kernel package.
    pub fn kernel_package(&self) -> Result<Package> {
        Package::find(
            &debian::cache_dir()?,
            self.kernel_suite(),
            &self.kernel.package,
        )
    }

    /// The cached U-Boot package.
    pub fn uboot_package(&self) -> Result<Package> {
        Package::find(&debian::cache_dir()?, &self.suite, &self.uboot.package)
    }

    /// The U-Boot binary QEMU runs (`-bios`) or the SD card carries.
    pub fn uboot_binary(&self) -> Result<PathBuf> {
        self.uboot_package()?.file(&self.uboot.binary)
    }

    /// The cached firmware package, if the board takes firmware files from one.
    pub fn firmware_package(&self) -> Result<Option<Package>> {
        self.firmware
            .as_ref()
            .and_then(|fw| fw.package.as_deref())
            .map(|pkg| Package::find(&debian::cache_dir()?, &self.suite, pkg))
            .transpose()
    }

    /// Refuse a board whose definition says it cannot be built yet.
    pub fn check_supported(&self) -> Result<()> {
        match &self.unsupported {
            Some(why) => bail!("board `{}` cannot be built yet: {}", self.name, why.trim()),
            None => Ok(()),
        }
    }
}

/// A plain relative path: no root, `..` or `.`.
fn relative_ok(s: &str) -> bool {
    let rel = Path::new(s);
    !s.is_empty()
        && !rel.is_absolute()
        && rel
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn is_package(s: &str) -> bool {
    s.len() >= 2
        && s.len() <= 100
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn repo_boards() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("boards")
    }

    #[test]
    fn qemu_virt_loads() {
        let b = Board::load(&repo_boards(), "qemu-virt").unwrap();
        assert_eq!(b.kernel.package, "linux-image-arm64");
        assert_eq!(b.boot_device().unwrap(), ("virtio", 0));
        assert!(b.modules.iter().any(|m| m == "virtio_blk"));
        assert!(Board::list(&repo_boards())
            .unwrap()
            .iter()
            .any(|b| b.name == "qemu-virt"));
    }

    #[test]
    fn led_button_and_overlays_are_optional() {
        let good = std::fs::read_to_string(repo_boards().join("qemu-virt.toml")).unwrap();
        let plain = Board::from_toml(&good).unwrap();
        assert!(plain.overlays.is_empty() && plain.led.is_none() && plain.button.is_none());
        let b = Board::from_toml(&good.replacen(
            "[kernel]",
            "overlays = [\"rpi3-status-led\"]\n[led]\nchip = \"raspberrypi-exp-gpio\"\nline = 2\n[button]\nchip = \"pinctrl-bcm2835\"\nline = 17\nactive_low = true\n[kernel]",
            1,
        ))
        .unwrap();
        assert_eq!(b.overlays, ["rpi3-status-led"]);
        assert_eq!(b.led.unwrap().cmdline_value(), "raspberrypi-exp-gpio:2");
        assert_eq!(
            b.button.unwrap().cmdline_value(),
            "pinctrl-bcm2835:17:active-low"
        );
    }

    #[test]
    fn bad_boards_are_refused_with_the_field() {
        let good = std::fs::read_to_string(repo_boards().join("qemu-virt.toml")).unwrap();
        let cases = [
            (
                "console = \"ttyAMA0\"",
                "console = \"/dev/ttyAMA0\"",
                "console",
            ),
            (
                "data_device = \"/dev/vda4\"",
                "data_device = \"vda4\"",
                "data_device",
            ),
            ("cmdline = \"panic=5", "cmdline = \"a; reset", "cmdline"),
            ("\"ext4\",", "\"ext4\", \"ext4\",", "modules"),
            (
                "boot_device = \"virtio 0\"",
                "boot_device = \"virtio\"",
                "boot_device",
            ),
            (
                "kernel_addr_r = 0x40400000",
                "kernel_addr_r = 0x40400001",
                "kernel_addr_r",
            ),
            ("binary = \"usr/lib", "binary = \"/usr/lib", "uboot.binary"),
            (
                "suite = \"bookworm\"",
                "suite = \"bookworm\"\ncolour = 1",
                "colour",
            ),
        ];
        for (from, to, needle) in cases {
            assert!(good.contains(from), "{from}");
            let err = Board::from_toml(&good.replacen(from, to, 1)).unwrap_err();
            assert!(format!("{err:#}").contains(needle), "{needle}: {err:#}");
        }
        let extra = |s: &str| good.replacen("[kernel]", &format!("{s}\n[kernel]"), 1);
        for (added, needle) in [
            ("overlays = [\"Bad_Name\"]", "overlays"),
            ("overlays = [\"a\", \"a\"]", "overlays"),
            ("[led]\nchip = \"a/b\"\nline = 1", "led.chip"),
            ("[led]\nchip = \"gpiochip0\"\nline = 5000", "led.line"),
            ("[button]\nchip = \"gpiochip0\"", "line"),
            ("[button]\nchip = \"c\"\nline = 1\ncolour = 2", "colour"),
        ] {
            let err = Board::from_toml(&extra(added)).unwrap_err();
            assert!(format!("{err:#}").contains(needle), "{needle}: {err:#}");
        }
        let err = Board::from_toml(&good.replacen(
            "cmdline = \"panic=5",
            "cmdline = \"panic=5 outpost.led=c:1",
            1,
        ))
        .unwrap_err();
        assert!(format!("{err:#}").contains("[led]"), "{err:#}");
        assert!(Board::load(&repo_boards(), "../boards/qemu-virt").is_err());
        // The Pi 5's kernel suite and firmware without a package.
        let rpi5 = std::fs::read_to_string(repo_boards().join("rpi5.toml")).unwrap();
        let board = Board::from_toml(&rpi5).unwrap();
        assert_eq!(
            (board.suite.as_str(), board.kernel_suite()),
            ("trixie", "trixie-backports")
        );
        for (from, to, needle) in [
            (
                "suite = \"trixie-backports\"",
                "suite = \"../x\"",
                "kernel.suite",
            ),
            (
                "[firmware]\n",
                "[firmware]\nfiles = [\"a/start.elf\"]\n",
                "firmware.package",
            ),
            (
                "[firmware]\n",
                "[firmware]\npackage = \"raspi-firmware\"\n",
                "firmware.files",
            ),
        ] {
            assert!(rpi5.contains(from), "{from}");
            let err = Board::from_toml(&rpi5.replacen(from, to, 1)).unwrap_err();
            assert!(format!("{err:#}").contains(needle), "{needle}: {err:#}");
        }
        let err = Board::load(&repo_boards(), "no-such-board").unwrap_err();
        assert!(format!("{err:#}").contains("qemu-virt"), "{err:#}");
    }
}
