//! embedded-hal pins on a Linux GPIO line (the character device, through
//! `sys::GpioLine`), found by chip name or label.

use embedded_hal::digital::{ErrorKind, ErrorType, InputPin, OutputPin};

use crate::device::cmdline::GpioSpec;
use crate::device::sys::{gpio_chip_label, Errno, GpioLine, GpioRequest, SysError};

/// Chips looked at when CHIP is a label: /dev/gpiochip0 … 31.
const MAX_GPIO_CHIPS: u32 = 32;

/// A failed GPIO operation, as embedded-hal wants errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PinError(#[from] pub SysError);

impl embedded_hal::digital::Error for PinError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Other
    }
}

/// One requested line as an embedded-hal pin.
#[derive(Debug)]
pub struct LinuxPin(GpioLine);

impl ErrorType for LinuxPin {
    type Error = PinError;
}

impl OutputPin for LinuxPin {
    fn set_low(&mut self) -> Result<(), PinError> {
        Ok(self.0.set(false)?)
    }
    fn set_high(&mut self) -> Result<(), PinError> {
        Ok(self.0.set(true)?)
    }
}

impl InputPin for LinuxPin {
    fn is_high(&mut self) -> Result<bool, PinError> {
        Ok(self.0.get()?)
    }
    fn is_low(&mut self) -> Result<bool, PinError> {
        Ok(!self.0.get()?)
    }
}

/// The /dev path of `spec.chip`: `gpiochipN` directly, else the chip whose
/// label it is (ENODEV when none is).
fn chip_path(chip: &str) -> Result<String, SysError> {
    if chip
        .strip_prefix("gpiochip")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    {
        return Ok(format!("/dev/{chip}"));
    }
    for n in 0..MAX_GPIO_CHIPS {
        let path = format!("/dev/gpiochip{n}");
        match gpio_chip_label(&path) {
            Ok(label) if label == chip => return Ok(path),
            // Chips are numbered without gaps: the first missing one ends the list.
            Err(e) if e.errno() == Some(Errno::ENOENT) => break,
            _ => {}
        }
    }
    Err(SysError::call(
        "find GPIO chip labelled",
        chip,
        Errno::ENODEV,
    ))
}

/// Request the LED (output) or button (input) line of `spec`.
pub fn open(spec: &GpioSpec, output: bool, consumer: &str) -> Result<LinuxPin, SysError> {
    let req = GpioRequest {
        line: spec.line,
        output,
        active_low: spec.active_low,
        // An active-low button closes to ground and needs the pull-up.
        pull_up: !output && spec.active_low,
    };
    GpioLine::request(&chip_path(&spec.chip)?, req, consumer).map(LinuxPin)
}
