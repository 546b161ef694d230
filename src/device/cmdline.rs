//! The kernel command line: what U-Boot's `boot.scr` tells outpost-init.
//!
//! Only `outpost.slot=A|B`, `outpost.data=/dev/…`, `outpost.serial=/dev/…`
//! (the management serial line), `outpost.boot=/dev/…` (BOOT, for the boot
//! state), `outpost.watchdog=SECS`, `outpost.commit_deadline=SECS` (how long
//! a boot has to become healthy), `outpost.led=` and `outpost.button=`
//! (`CHIP:LINE[:active-low]`, docs/leds.md) and `outpost.fault=hang|unhealthy`
//! (fault injection for system tests) are ours; every other
//! word belongs to the kernel and is ignored. Values are validated here, so a
//! typo in a boot script is a clear error rather than a wrong device mounted.

use crate::bootstate::Slot;

use super::sys::{Sys, SysError};

pub const CMDLINE_PATH: &str = "/proc/cmdline";

/// Largest command line accepted (bytes). The kernel's own limit
/// (`COMMAND_LINE_SIZE`) is 2 KiB on arm64 and 4 KiB elsewhere.
pub const MAX_CMDLINE_BYTES: usize = 4096;

/// Longest `outpost.data` device path: `/dev/disk/by-partuuid/<36-char uuid>`
/// is 57 bytes; anything much longer is not a device path we wrote.
pub const MAX_DEVICE_PATH: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmdlineError {
    #[error("kernel command line is {0} bytes, larger than the limit of {MAX_CMDLINE_BYTES}")]
    TooLarge(usize),
    #[error("kernel command line: `outpost.slot={0}` is not A or B")]
    BadSlot(String),
    #[error("kernel command line: `outpost.data={value}`: {reason}")]
    BadData { value: String, reason: &'static str },
    #[error("kernel command line: `outpost.serial={value}`: {reason}")]
    BadSerial { value: String, reason: &'static str },
    #[error("kernel command line: `outpost.boot={value}`: {reason}")]
    BadBoot { value: String, reason: &'static str },
    #[error("kernel command line: `outpost.watchdog={0}` is not {MIN_WATCHDOG_SECS} to {MAX_WATCHDOG_SECS} seconds")]
    BadWatchdog(String),
    #[error("kernel command line: `outpost.commit_deadline={0}` is not {MIN_COMMIT_DEADLINE_SECS} to {MAX_COMMIT_DEADLINE_SECS} seconds")]
    BadCommitDeadline(String),
    #[error("kernel command line: `outpost.fault={0}` is not hang or unhealthy")]
    BadFault(String),
    #[error("kernel command line: `{key}` is given twice with different values")]
    Conflict { key: &'static str },
    #[error("reading the kernel command line: {0}")]
    Read(#[from] SysError),
}

/// What the boot loader told us.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootArgs {
    /// The slot that was booted (`None`: not booted by our boot script, e.g. a
    /// bare QEMU `-kernel` boot).
    pub slot: Option<Slot>,
    /// The DATA block device.
    pub data: Option<String>,
    /// The tty that serves the management API over a serial line.
    pub serial: Option<String>,
    /// BOOT's block device (`outpost.boot=`); without it, partition 1 of
    /// DATA's disk (see `slots::boot_device`).
    pub boot: Option<String>,
    /// Hardware watchdog timeout in seconds (`outpost.watchdog=`).
    pub watchdog: Option<u32>,
    /// Seconds from init's start to a healthy boot (`outpost.commit_deadline=`).
    pub commit_deadline: Option<u32>,
    /// Fault injection for system tests (`outpost.fault=`).
    pub fault: Option<Fault>,
    /// The status LED (`outpost.led=`).
    pub led: Option<GpioSpec>,
    /// The rollback button (`outpost.button=`).
    pub button: Option<GpioSpec>,
    /// Malformed optional words (LED, button): logged and ignored, because a
    /// typo there must not cost the board its DATA or its slot.
    pub warnings: Vec<String>,
}

/// One GPIO line: `CHIP:LINE[:active-low]`. CHIP is `gpiochipN` or the
/// chip's label (`pinctrl-bcm2835`), which does not depend on probe order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpioSpec {
    pub chip: String,
    pub line: u32,
    pub active_low: bool,
}

/// Chip labels are at most 31 bytes in the uAPI (`GPIO_MAX_NAME_SIZE`).
const MAX_GPIO_CHIP: usize = 31;
/// Highest line offset accepted; the largest SoC GPIO blocks have a few
/// hundred lines, so anything bigger is a typo.
const MAX_GPIO_LINE: u32 = 4095;

impl GpioSpec {
    pub fn parse(value: &str) -> Result<GpioSpec, &'static str> {
        let mut parts = value.split(':');
        let (Some(chip), Some(line)) = (parts.next(), parts.next()) else {
            return Err("must be CHIP:LINE[:active-low]");
        };
        let active_low = match parts.next() {
            None => false,
            Some("active-low") => true,
            Some(_) => return Err("the third part may only be `active-low`"),
        };
        if parts.next().is_some() {
            return Err("must be CHIP:LINE[:active-low]");
        }
        if chip.is_empty()
            || chip.len() > MAX_GPIO_CHIP
            || !chip
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err("CHIP must be 1 to 31 letters, digits, `.`, `_` or `-`");
        }
        let line = line
            .parse::<u32>()
            .ok()
            .filter(|l| *l <= MAX_GPIO_LINE)
            .ok_or("LINE must be a number from 0 to 4095")?;
        Ok(GpioSpec {
            chip: chip.to_owned(),
            line,
            active_low,
        })
    }
}

/// `outpost.fault=`: make this boot fail on purpose, so system tests can
/// watch the board fall back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Never mark the slot good and stop petting the watchdog: a hang.
    Hang,
    /// Never mark the slot good: the health deadline reboots.
    Unhealthy,
}

/// `outpost.watchdog=` bounds (the watchdog module clamps to the same).
pub use crate::config::{MAX_WATCHDOG_SECS, MIN_WATCHDOG_SECS};

/// `outpost.commit_deadline=` bounds: below 10 s even a healthy board under
/// TCG misses it; above an hour a hung slot keeps a site down too long.
pub const MIN_COMMIT_DEADLINE_SECS: u32 = 10;
pub const MAX_COMMIT_DEADLINE_SECS: u32 = 3600;

/// Read and parse `/proc/cmdline`.
pub fn read(sys: &dyn Sys) -> Result<BootArgs, CmdlineError> {
    // One byte more than the cap so an oversized file is detected, not cut.
    let text = sys
        .read_to_string(CMDLINE_PATH, MAX_CMDLINE_BYTES + 1)
        .map_err(|e| match e {
            SysError::TooLarge { limit, .. } => CmdlineError::TooLarge(limit),
            other => CmdlineError::Read(other),
        })?;
    parse(&text)
}

/// Parse a kernel command line. Words are separated by whitespace; parsing
/// stops at `--` (what follows is for init's argv, not for us).
pub fn parse(text: &str) -> Result<BootArgs, CmdlineError> {
    if text.len() > MAX_CMDLINE_BYTES {
        return Err(CmdlineError::TooLarge(text.len()));
    }
    let mut args = BootArgs::default();
    for word in text.split_ascii_whitespace() {
        if word == "--" {
            break;
        }
        let Some((key, value)) = word.split_once('=') else {
            continue;
        };
        match key {
            "outpost.slot" => {
                let slot = Slot::parse(value)
                    .ok_or_else(|| CmdlineError::BadSlot(value.escape_debug().to_string()))?;
                set_once(&mut args.slot, slot, "outpost.slot")?;
            }
            "outpost.data" => {
                validate_device(value).map_err(|reason| CmdlineError::BadData {
                    value: value.escape_debug().to_string(),
                    reason,
                })?;
                set_once(&mut args.data, value.to_owned(), "outpost.data")?;
            }
            "outpost.boot" => {
                validate_device(value).map_err(|reason| CmdlineError::BadBoot {
                    value: value.escape_debug().to_string(),
                    reason,
                })?;
                set_once(&mut args.boot, value.to_owned(), "outpost.boot")?;
            }
            "outpost.watchdog" => {
                let secs = value
                    .parse::<u32>()
                    .ok()
                    .filter(|s| (MIN_WATCHDOG_SECS..=MAX_WATCHDOG_SECS).contains(s))
                    .ok_or_else(|| CmdlineError::BadWatchdog(value.escape_debug().to_string()))?;
                set_once(&mut args.watchdog, secs, "outpost.watchdog")?;
            }
            "outpost.commit_deadline" => {
                let secs = value
                    .parse::<u32>()
                    .ok()
                    .filter(|s| (MIN_COMMIT_DEADLINE_SECS..=MAX_COMMIT_DEADLINE_SECS).contains(s))
                    .ok_or_else(|| {
                        CmdlineError::BadCommitDeadline(value.escape_debug().to_string())
                    })?;
                set_once(&mut args.commit_deadline, secs, "outpost.commit_deadline")?;
            }
            "outpost.fault" => {
                let fault = match value {
                    "hang" => Fault::Hang,
                    "unhealthy" => Fault::Unhealthy,
                    _ => return Err(CmdlineError::BadFault(value.escape_debug().to_string())),
                };
                set_once(&mut args.fault, fault, "outpost.fault")?;
            }
            "outpost.led" | "outpost.button" => {
                let field = if key == "outpost.led" {
                    &mut args.led
                } else {
                    &mut args.button
                };
                let problem = match GpioSpec::parse(value) {
                    Ok(spec) if field.as_ref().is_none_or(|old| *old == spec) => {
                        *field = Some(spec);
                        continue;
                    }
                    Ok(_) => "given twice with different values",
                    Err(reason) => reason,
                };
                *field = None;
                args.warnings.push(format!(
                    "`{key}={}`: {problem}; ignored",
                    value.escape_debug()
                ));
            }
            "outpost.serial" => {
                validate_device(value).map_err(|reason| CmdlineError::BadSerial {
                    value: value.escape_debug().to_string(),
                    reason,
                })?;
                set_once(&mut args.serial, value.to_owned(), "outpost.serial")?;
            }
            _ => {}
        }
    }
    Ok(args)
}

/// A repeated key is fine only with the same value: two different slots or
/// devices mean two boot scripts disagree, and guessing could mount the wrong one.
fn set_once<T: PartialEq>(
    field: &mut Option<T>,
    value: T,
    key: &'static str,
) -> Result<(), CmdlineError> {
    match field {
        Some(old) if *old != value => Err(CmdlineError::Conflict { key }),
        _ => {
            *field = Some(value);
            Ok(())
        }
    }
}

/// A device path: `/dev/` followed by path components of `[A-Za-z0-9._:+-]`,
/// no `.`/`..` components, no empty components. The error says why.
fn validate_device(value: &str) -> Result<(), &'static str> {
    if value.len() > MAX_DEVICE_PATH {
        return Err("longer than 128 bytes");
    }
    let rest = value
        .strip_prefix("/dev/")
        .ok_or("must be a path under /dev/")?;
    for component in rest.split('/') {
        if component.is_empty() || component == "." || component == ".." {
            return Err("has an empty, `.` or `..` path component");
        }
        let allowed = |b: u8| b.is_ascii_alphanumeric() || b"._:+-=".contains(&b);
        if !component.bytes().all(allowed) {
            return Err("may contain only letters, digits and . _ : + - =");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::sys::RecordingSys;

    #[test]
    fn malformed_slot_is_refused() {
        for word in [
            "outpost.slot=C",
            "outpost.slot=",
            "outpost.slot=a",
            "outpost.slot=AB",
        ] {
            assert!(
                matches!(parse(word), Err(CmdlineError::BadSlot(_))),
                "{word}"
            );
        }
    }

    #[test]
    fn malformed_data_is_refused() {
        let long = format!("outpost.data=/dev/{}", "a".repeat(200));
        for word in [
            "outpost.data=",
            "outpost.data=vda4",
            "outpost.data=/dev/",
            "outpost.data=/dev/../etc/passwd",
            "outpost.data=/dev/./vda4",
            "outpost.data=/dev//vda4",
            "outpost.data=/dev/vda4/",
            "outpost.data=/devx/vda4",
            "outpost.data=/dev/vd\"a4",
            "outpost.data=/dev/vda4;reboot",
            long.as_str(),
        ] {
            assert!(
                matches!(parse(word), Err(CmdlineError::BadData { .. })),
                "{word}"
            );
        }
    }

    #[test]
    fn malformed_serial_is_refused() {
        for word in [
            "outpost.serial=",
            "outpost.serial=ttyS0",
            "outpost.serial=/dev/../ttyS0",
            "outpost.serial=/dev/tty*S0",
            "outpost.serial=/dev/ttyS0;reboot",
            "outpost.serial=/dev//ttyS0",
        ] {
            assert!(
                matches!(parse(word), Err(CmdlineError::BadSerial { .. })),
                "{word}"
            );
        }
        assert_eq!(
            parse("outpost.serial=/dev/ttyS0 outpost.serial=/dev/ttyS1"),
            Err(CmdlineError::Conflict {
                key: "outpost.serial"
            })
        );
    }

    #[test]
    fn malformed_boot_watchdog_and_fault_are_refused() {
        for word in [
            "outpost.boot=",
            "outpost.boot=vda1",
            "outpost.boot=/dev/../vda1",
        ] {
            assert!(
                matches!(parse(word), Err(CmdlineError::BadBoot { .. })),
                "{word}"
            );
        }
        for word in [
            "outpost.watchdog=",
            "outpost.watchdog=2",
            "outpost.watchdog=301",
            "outpost.watchdog=-5",
            "outpost.watchdog=15s",
            "outpost.watchdog=99999999999",
        ] {
            assert!(
                matches!(parse(word), Err(CmdlineError::BadWatchdog(_))),
                "{word}"
            );
        }
        for word in [
            "outpost.commit_deadline=9",
            "outpost.commit_deadline=3601",
            "outpost.commit_deadline=1m",
        ] {
            assert!(
                matches!(parse(word), Err(CmdlineError::BadCommitDeadline(_))),
                "{word}"
            );
        }
        for word in [
            "outpost.fault=",
            "outpost.fault=Hang",
            "outpost.fault=crash",
        ] {
            assert!(
                matches!(parse(word), Err(CmdlineError::BadFault(_))),
                "{word}"
            );
        }
        assert_eq!(
            parse("outpost.fault=hang outpost.fault=unhealthy"),
            Err(CmdlineError::Conflict {
                key: "outpost.fault"
            })
        );
        let args = parse("outpost.boot=/dev/mmcblk0p1 outpost.watchdog=5 outpost.fault=unhealthy outpost.commit_deadline=20")
            .unwrap();
        assert_eq!(args.commit_deadline, Some(20));
        assert_eq!(args.boot.as_deref(), Some("/dev/mmcblk0p1"));
        assert_eq!(args.watchdog, Some(5));
        assert_eq!(args.fault, Some(Fault::Unhealthy));
    }

    #[test]
    fn oversized_and_conflicting_lines_are_refused() {
        let text = format!("console=ttyAMA0 {}", "x".repeat(MAX_CMDLINE_BYTES));
        assert!(matches!(parse(&text), Err(CmdlineError::TooLarge(_))));
        assert_eq!(
            parse("outpost.slot=A outpost.slot=B"),
            Err(CmdlineError::Conflict {
                key: "outpost.slot"
            })
        );
        assert_eq!(
            parse("outpost.data=/dev/vda4 outpost.data=/dev/mmcblk0p4"),
            Err(CmdlineError::Conflict {
                key: "outpost.data"
            })
        );
    }

    #[test]
    fn parses_a_real_line() {
        let args = parse(
            "console=ttyAMA0,115200 panic=5 root=/dev/ram0 outpost.slot=B \
             outpost.data=/dev/mmcblk0p4 quiet outpost.slot=B outpost.serial=/dev/ttyS0\n",
        )
        .unwrap();
        assert_eq!(args.slot, Some(Slot::B));
        assert_eq!(args.serial.as_deref(), Some("/dev/ttyS0"));
        assert_eq!(args.data.as_deref(), Some("/dev/mmcblk0p4"));
        let args = parse("outpost.data=/dev/disk/by-partuuid/0a1b2c3d-04").unwrap();
        assert_eq!(
            args.data.as_deref(),
            Some("/dev/disk/by-partuuid/0a1b2c3d-04")
        );
    }

    #[test]
    fn other_words_and_init_args_are_ignored() {
        assert_eq!(parse("").unwrap(), BootArgs::default());
        assert_eq!(
            parse("outpost.slotx=Z foo=bar=baz outpost.other=1 -- outpost.slot=Q").unwrap(),
            BootArgs::default()
        );
    }

    #[test]
    fn gpio_lines_parse_and_bad_ones_are_ignored_not_fatal() {
        let args =
            parse("outpost.slot=B outpost.led=raspberrypi-exp-gpio:2 outpost.button=gpiochip0:17:active-low")
                .unwrap();
        assert_eq!(args.slot, Some(Slot::B));
        assert_eq!(
            args.led,
            Some(GpioSpec {
                chip: "raspberrypi-exp-gpio".into(),
                line: 2,
                active_low: false
            })
        );
        assert_eq!(
            args.button.as_ref().map(|b| (b.line, b.active_low)),
            Some((17, true))
        );
        assert!(args.warnings.is_empty());
        for bad in [
            "outpost.led=",
            "outpost.led=chip",
            "outpost.led=chip:x",
            "outpost.led=chip:4096",
            "outpost.led=chip:1:active-high",
            "outpost.led=chip:1:active-low:x",
            "outpost.led=a/b:1",
            "outpost.led=0123456789012345678901234567890123:1",
            "outpost.led=c:1 outpost.led=c:2",
        ] {
            let args = parse(&format!("outpost.data=/dev/vda4 {bad}")).unwrap();
            assert_eq!(args.led, None, "{bad}");
            assert_eq!(args.data.as_deref(), Some("/dev/vda4"), "{bad}");
            assert_eq!(args.warnings.len(), 1, "{bad}");
            assert!(args.warnings[0].contains("outpost.led"), "{bad}");
        }
        let same = parse("outpost.button=c:1 outpost.button=c:1").unwrap();
        assert!(same.button.is_some() && same.warnings.is_empty());
    }

    #[test]
    fn read_goes_through_sys() {
        let sys = RecordingSys::new();
        assert!(matches!(read(&sys), Err(CmdlineError::Read(_))));
        sys.set_file(CMDLINE_PATH, "console=ttyAMA0 outpost.slot=A\n");
        assert_eq!(read(&sys).unwrap().slot, Some(Slot::A));
        sys.set_file(CMDLINE_PATH, &"x".repeat(MAX_CMDLINE_BYTES + 1));
        assert!(matches!(read(&sys), Err(CmdlineError::TooLarge(_))));
    }
}
