//! Local devices: boot an Outpost image in QEMU (aarch64 `virt`, or
//! `raspi3b` for the rpi3 board), headless, with the API forwarded to a port
//! on 127.0.0.1, and stop it again.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use super::board::QemuMachine;

/// QEMU's raspi3b has exactly 1 GiB; it refuses any other `-m`.
pub const RASPI3B_MEMORY_MIB: u32 = 1024;

/// Where local devices keep their pid file and console log.
pub fn state_dir(name: &str) -> PathBuf {
    state_base().join("qemu").join(name)
}

/// The CLI's state dir: `$OUTPOST_STATE`, else the XDG state dir.
pub fn state_base() -> PathBuf {
    std::env::var_os("OUTPOST_STATE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_STATE_HOME").map(|p| PathBuf::from(p).join("outpost")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state/outpost")))
        .unwrap_or_else(|| PathBuf::from(".outpost-state"))
}

pub struct Machine {
    pub name: String,
    pub kind: QemuMachine,
    pub image: PathBuf,
    /// U-Boot: `-bios` on virt, `-kernel` on raspi3b.
    pub bios: PathBuf,
    /// raspi3b: the device tree QEMU hands to U-Boot (the firmware's job on
    /// a real board).
    pub dtb: Option<PathBuf>,
    pub memory_mib: u32,
    pub host_port: u16,
    pub guest_port: u16,
    /// A Unix socket (QEMU the server) wired to the board's management
    /// UART: raspi3b's PL011, virt's added 16550 (`-device pci-serial`).
    pub mgmt_serial: Option<PathBuf>,
    /// Extra QEMU arguments (tests add devices or a different RTC).
    pub extra_args: Vec<String>,
    /// A broker on 127.0.0.1:PORT that the board reaches as
    /// `CALL_HOME_ADDR:8883` (QEMU `guestfwd`, still `restrict=on`).
    pub call_home: Option<u16>,
}

/// Where a board in QEMU finds the broker of `Machine::call_home`: an
/// address of the user network that QEMU forwards to the host's loopback.
pub const CALL_HOME_ADDR: &str = "10.0.2.100";

impl Machine {
    /// The full QEMU command line. User networking is always `restrict=on`: the
    /// guest reaches nothing but QEMU's DHCP, and the API is forwarded to loopback only.
    pub fn command(&self, dir: &Path) -> Command {
        let mut cmd = Command::new("qemu-system-aarch64");
        let console = format!("file:{}", dir.join("console.log").display());
        let mgmt = self
            .mgmt_serial
            .as_ref()
            .map(|p| format!("socket,id=mgmt,path={},server=on,wait=off", p.display()));
        let mut netdev = format!(
            "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{}-:{}",
            self.host_port, self.guest_port
        );
        if let Some(port) = self.call_home {
            // `-cmd:` runs one relay per guest connection; a `-tcp:` chardev
            // would be one host connection for the whole QEMU run, and a
            // board that reconnects would continue the old TLS stream.
            let exe = std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "outpost".into());
            netdev.push_str(&format!(
                ",guestfwd=tcp:{CALL_HOME_ADDR}:{}-cmd:{exe} relay 127.0.0.1:{port}",
                crate::config::callhome::MQTTS_PORT
            ));
        }
        match self.kind {
            QemuMachine::Virt => {
                // acpi=off: with firmware (-bios) QEMU otherwise replaces
                // the PL061 GPIO controller by an ACPI event device; the
                // kernel boots from U-Boot's device tree either way, and the
                // PL061 gives the board real GPIO lines (the button test).
                cmd.args(["-M", "virt,acpi=off", "-cpu", "cortex-a53", "-smp", "1"])
                    .args(["-m", &self.memory_mib.to_string()])
                    .args(["-display", "none", "-monitor", "none"])
                    .args(["-serial", &console])
                    .arg("-bios")
                    .arg(&self.bios)
                    .arg("-drive")
                    .arg(format!(
                        "if=none,file={},format=raw,id=disk0",
                        self.image.display()
                    ))
                    .args(["-device", "virtio-blk-pci,drive=disk0"])
                    .args(["-netdev", &netdev])
                    // No option ROM: U-Boot drives virtio itself, and Debian's
                    // qemu-system-arm only recommends ipxe-qemu, which has it.
                    .args(["-device", "virtio-net-pci,netdev=net0,romfile="])
                    .args(["-device", "i6300esb", "-watchdog-action", "reset"]);
                if let Some(m) = &mgmt {
                    cmd.args(["-chardev", m, "-device", "pci-serial,chardev=mgmt"]);
                }
            }
            QemuMachine::Raspi3b => {
                // The GPU firmware does not run in QEMU: QEMU loads u-boot.bin
                // (config.txt's kernel=) and passes the DTB itself. Console
                // on the mini UART (the second -serial), as on the board;
                // the API over usb-net on the dwc2 USB host, the same
                // USB path as the board's own Ethernet (smsc95xx).
                // The PL011 (first -serial, ttyAMA0) is the management UART.
                let uart0 = match &mgmt {
                    Some(m) => {
                        cmd.args(["-chardev", m]);
                        "chardev:mgmt"
                    }
                    None => "null",
                };
                cmd.args(["-M", "raspi3b"])
                    .args(["-m", &self.memory_mib.to_string()])
                    .args(["-display", "none", "-monitor", "none"])
                    .args(["-serial", uart0, "-serial", &console])
                    .arg("-kernel")
                    .arg(&self.bios);
                if let Some(dtb) = &self.dtb {
                    cmd.arg("-dtb").arg(dtb);
                }
                cmd.arg("-drive")
                    .arg(format!("if=sd,format=raw,file={}", self.image.display()))
                    .args(["-netdev", &netdev])
                    .args(["-device", "usb-net,netdev=net0"]);
            }
        }
        cmd.arg("-pidfile")
            .arg(dir.join("qemu.pid"))
            .arg("-daemonize")
            .args(&self.extra_args);
        cmd
    }

    /// Start QEMU in the background. Refuses if this name is already running.
    pub fn start(&self) -> Result<PathBuf> {
        let dir = state_dir(&self.name);
        if let Some(pid) = running_pid(&self.name) {
            bail!("local device `{}` is already running (pid {pid}); `outpost qemu down --name {}` first", self.name, self.name);
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let _ = std::fs::remove_file(dir.join("console.log"));
        let output = self
            .command(&dir)
            .output()
            .context("running qemu-system-aarch64 (install it with `scripts/setup`)")?;
        if !output.status.success() {
            bail!(
                "qemu-system-aarch64 failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(dir)
    }
}

/// QEMU's SD card must be a power of two in size: grow `image` (sparse,
/// zeros past its end, like a larger card) to the next one. Returns the new
/// size when it grew.
pub fn pad_sd_image(image: &Path) -> Result<Option<u64>> {
    let len = std::fs::metadata(image)
        .with_context(|| format!("image {}", image.display()))?
        .len();
    let want = len
        .checked_next_power_of_two()
        .with_context(|| format!("image {} is too large", image.display()))?;
    if want == len {
        return Ok(None);
    }
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(image)
        .with_context(|| format!("opening {} to pad it", image.display()))?;
    f.set_len(want)
        .with_context(|| format!("padding {} to {want} bytes", image.display()))?;
    Ok(Some(want))
}

/// Pid of a running local device, if its pid file names a live process.
pub fn running_pid(name: &str) -> Option<i32> {
    let text = std::fs::read_to_string(state_dir(name).join("qemu.pid")).ok()?;
    let pid: i32 = text.trim().parse().ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

/// Wait for QEMU to exit by itself; returns false on timeout.
pub fn wait_exit(pid: i32, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        // A zombie still has a /proc entry, but QEMU daemonized is not our child.
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Kill a QEMU process (SIGTERM, then SIGKILL).
pub fn kill(pid: i32) -> Result<()> {
    let status = Command::new("kill").arg(pid.to_string()).status()?;
    if status.success() && wait_exit(pid, Duration::from_secs(5)) {
        return Ok(());
    }
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()?;
    if !wait_exit(pid, Duration::from_secs(5)) {
        bail!("qemu pid {pid} did not exit");
    }
    Ok(())
}

/// A free TCP port on 127.0.0.1 (bind to port 0 and let the kernel pick).
pub fn free_port() -> Result<u16> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("binding a port on 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}

/// The last `lines` lines of a local device's console log.
pub fn console_tail(name: &str, lines: usize) -> String {
    let text = std::fs::read(state_dir(name).join("console.log")).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn command_restricts_user_networking_to_loopback() {
        let m = Machine {
            name: "t".into(),
            kind: QemuMachine::Virt,
            image: "/x.img".into(),
            bios: "/u-boot.bin".into(),
            dtb: None,
            memory_mib: 256,
            host_port: 40000,
            guest_port: 50000,
            mgmt_serial: None,
            extra_args: vec![],
            call_home: None,
        };
        let cmd = m.command(Path::new("/tmp/d"));
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let netdev = args.iter().find(|a| a.starts_with("user,")).unwrap();
        assert!(netdev.contains("restrict=on"));
        assert!(netdev.contains("hostfwd=tcp:127.0.0.1:40000-:50000"));
    }

    #[test]
    fn raspi3b_boots_u_boot_as_kernel_from_the_sd_card() {
        let m = Machine {
            name: "t".into(),
            kind: QemuMachine::Raspi3b,
            image: "/x.img".into(),
            bios: "/u-boot.bin".into(),
            dtb: Some("/b.dtb".into()),
            memory_mib: RASPI3B_MEMORY_MIB,
            host_port: 40000,
            guest_port: 50000,
            mgmt_serial: None,
            extra_args: vec![],
            call_home: None,
        };
        let args: Vec<String> = m
            .command(Path::new("/tmp/d"))
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        for want in [
            "-M raspi3b",
            "-m 1024",
            "-kernel /u-boot.bin",
            "-dtb /b.dtb",
            "if=sd,format=raw,file=/x.img",
            "usb-net,netdev=net0",
        ] {
            assert!(joined.contains(want), "{want} missing from {joined}");
        }
        assert!(args
            .iter()
            .any(|a| a.starts_with("user,") && a.contains("restrict=on")));
        assert!(!joined.contains("-bios"));
    }

    #[test]
    fn sd_images_are_padded_to_a_power_of_two() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.img");
        std::fs::write(&p, vec![1u8; 3000]).unwrap();
        assert_eq!(pad_sd_image(&p).unwrap(), Some(4096));
        assert_eq!(std::fs::read(&p).unwrap()[..3000], vec![1u8; 3000][..]);
        assert_eq!(pad_sd_image(&p).unwrap(), None);
    }
}
