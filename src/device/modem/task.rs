//! The modem of one link, on a thread of its own (the AT port is a blocking
//! serial device): dial, then watch the link; on failure take the next
//! watchdog step ([`watchdog::Ladder`]). Every step is logged and recorded
//! in the link's events, which the API shows.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::time::Duration;

use embedded_hal::digital::OutputPin;
use rustix::termios::{self, OptionalActions, SpecialCodeIndex};

use crate::config::network::ModemConfig;
use crate::device::cmdline::GpioSpec;
use crate::device::log::uptime_ms;
use crate::device::net::links::LinkRuntime;

use super::watchdog::{Ladder, Step};
use super::{Modem, ModemStatus};

/// How often a connected modem is looked at (link health, signal): AT
/// traffic stays on the board, it costs no airtime.
const WATCH: Duration = Duration::from_secs(10);
/// A connected link that stays down this long (its probe failing) counts
/// as one failure.
const DOWN_GRACE_MS: u64 = 60_000;
/// Wait after a reset or power cycle: the modem re-enumerates on USB.
const REBOOT_WAIT: Duration = Duration::from_secs(20);
/// Wait before a re-dial.
const REDIAL_WAIT: Duration = Duration::from_secs(5);
/// Power off time for a power cycle.
const POWER_OFF: Duration = Duration::from_secs(3);

/// A tty whose reads time out (VMIN 0, VTIME 1: 100 ms); a read that
/// timed out returns 0, which we report as `TimedOut`.
struct Tty(File);

impl Read for Tty {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.0.read(buf)? {
            0 => Err(std::io::ErrorKind::TimedOut.into()),
            n => Ok(n),
        }
    }
}

impl Write for Tty {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Open an AT port raw at 115200 baud (USB ACM ports ignore the speed).
fn open_port(path: &str) -> std::io::Result<Tty> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(rustix::fs::OFlags::NOCTTY.bits() as i32)
        .open(path)?;
    let mut t = termios::tcgetattr(&file)?;
    t.make_raw();
    t.set_speed(115_200)?;
    t.special_codes[SpecialCodeIndex::VMIN] = 0;
    t.special_codes[SpecialCodeIndex::VTIME] = 1;
    termios::tcsetattr(&file, OptionalActions::Now, &t)?;
    Ok(Tty(file))
}

fn record(link: &LinkRuntime, state: &str, status: &ModemStatus, event: Option<String>) {
    let mut st = link.state();
    st.modem = Some((state.to_owned(), status.clone()));
    if let Some(e) = event {
        st.event(uptime_ms(), e);
    }
}

/// Start the modem thread of `link`. `reboot` asks for a board reboot.
pub fn start(
    link: Arc<LinkRuntime>,
    config: ModemConfig,
    power: Option<GpioSpec>,
    reboot: Box<dyn Fn() + Send>,
) {
    let spawned = std::thread::Builder::new()
        .name("modem".into())
        .stack_size(128 << 10)
        .spawn(move || run(&link, &config, power.as_ref(), &*reboot));
    if let Err(e) = spawned {
        tracing::error!("modem: starting its thread: {e}");
    }
}

fn run(link: &LinkRuntime, config: &ModemConfig, power: Option<&GpioSpec>, reboot: &dyn Fn()) {
    let name = link.config.name.clone();
    let mut ladder = Ladder::new(config.reboot_after, power.is_some());
    let mut status = ModemStatus::default();
    loop {
        record(link, "dialling", &status, None);
        let clock = Box::new(uptime_ms);
        let mut modem = match open_port(&config.port) {
            Ok(p) => Some(Modem::new(p, clock)),
            Err(e) => {
                let why = format!("AT port {}: {e}", config.port);
                tracing::warn!("modem {name}: {why}");
                record(link, &why, &status, Some(why.clone()));
                None
            }
        };
        if let Some(m) = modem.as_mut() {
            match m.dial(config, &mut status) {
                Ok(()) => {
                    ladder.succeeded();
                    let text = format!(
                        "connected: {} ({}), signal {} dBm",
                        status.operator,
                        status.registration,
                        status.signal_dbm.unwrap_or(0)
                    );
                    tracing::info!("modem {name}: {text}");
                    record(link, "connected", &status, Some(text));
                    let _ = link.kick.0.try_send(());
                    watch(link, m, &mut status);
                }
                Err(e) => {
                    tracing::warn!("modem {name}: dial failed: {e}");
                    record(
                        link,
                        &e.to_string(),
                        &status,
                        Some(format!("dial failed: {e}")),
                    );
                }
            }
        }
        let step = ladder.failed();
        let text = format!("watchdog: failure {} -> {}", ladder.failures, step.name());
        tracing::warn!("modem {name}: {text}");
        record(link, "recovering", &status, Some(text));
        match step {
            Step::Redial => std::thread::sleep(REDIAL_WAIT),
            Step::ResetModem => {
                if let Some(m) = modem.as_mut() {
                    if let Err(e) = m.command("AT+CFUN=1,1", 5_000) {
                        tracing::warn!("modem {name}: reset: {e}");
                    }
                }
                drop(modem);
                std::thread::sleep(REBOOT_WAIT);
            }
            Step::PowerCycle => {
                drop(modem);
                if let Some(spec) = power {
                    power_cycle(&name, spec);
                }
                std::thread::sleep(REBOOT_WAIT);
            }
            Step::Reboot => {
                reboot();
                std::thread::sleep(REBOOT_WAIT);
            }
        }
    }
}

/// While connected: refresh signal, and return once the link has been
/// down for [`DOWN_GRACE_MS`] or the port fails.
fn watch<P: Read + Write>(link: &LinkRuntime, m: &mut Modem<P>, status: &mut ModemStatus) {
    let mut down_since: Option<u64> = None;
    loop {
        std::thread::sleep(WATCH);
        if let Err(e) = m.observe(status) {
            record(
                link,
                "port failed",
                status,
                Some(format!("modem port: {e}")),
            );
            return;
        }
        record(link, "connected", status, None);
        let healthy = link.state().healthy;
        let now = uptime_ms();
        match (healthy, down_since) {
            (true, _) => down_since = None,
            (false, None) => down_since = Some(now),
            (false, Some(t)) if now.saturating_sub(t) >= DOWN_GRACE_MS => {
                record(
                    link,
                    "link down",
                    status,
                    Some("link down while connected".into()),
                );
                return;
            }
            (false, Some(_)) => {}
        }
    }
}

fn power_cycle(name: &str, spec: &GpioSpec) {
    match crate::device::led::pin::open(spec, true, "outpost-modem-power") {
        Ok(mut pin) => {
            let _ = pin.set_low();
            std::thread::sleep(POWER_OFF);
            let _ = pin.set_high();
        }
        Err(e) => tracing::error!("modem {name}: power GPIO: {e}"),
    }
}

/// `outpost.modem_power=CHIP:LINE[:active-low]` from the kernel command
/// line (the board definition's cmdline), if set and valid.
pub fn power_gpio(cmdline: &str) -> Option<GpioSpec> {
    let value = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("outpost.modem_power="))?;
    match GpioSpec::parse(value) {
        Ok(s) => Some(s),
        Err(why) => {
            tracing::error!("outpost.modem_power={value}: {why}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_gpio_from_the_command_line() {
        assert_eq!(power_gpio("quiet"), None);
        let s = power_gpio("a outpost.modem_power=gpiochip0:17:active-low b").unwrap();
        assert_eq!(
            (s.chip.as_str(), s.line, s.active_low),
            ("gpiochip0", 17, true)
        );
        assert_eq!(power_gpio("outpost.modem_power=x"), None);
    }

    #[test]
    fn a_missing_port_is_an_error_not_a_panic() {
        assert!(open_port("/dev/nonexistent-modem").is_err());
        // Not a tty.
        assert!(open_port("/dev/null").is_err());
    }
}
