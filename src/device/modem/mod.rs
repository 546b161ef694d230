//! LTE modems: the AT dialogue that gets a modem from power-on to a data
//! session (SIM PIN, APN, attach, registration), and its state for the API.
//!
//! [`Modem`] runs commands over any byte port (a serial device opened with
//! the `serialport` crate on a board, a pseudo-terminal in tests) with
//! blocking reads that time out; the parsing is [`at`], without I/O.
//! The data session is started per modem family ([`ModemFamily`]); adding
//! a family is one arm in [`Modem::start_data`] (docs/network.md).

pub mod at;
pub mod task;
pub mod watchdog;

use std::io::{Read, Write};

use crate::config::network::{ModemConfig, ModemFamily};

use at::{AtError, Exchange, Final, Lines, Registration, Reply, Step};

/// URCs kept for the caller between commands; older ones are dropped.
const MAX_URCS: usize = 16;
/// Most bytes read per `read` call.
const READ_CHUNK: usize = 256;
/// An ordinary command answers within a second; a slow one a few.
const SHORT_MS: u64 = 3_000;
/// `+CGATT`/`+CGACT` may take long on a busy network (TS 27.007 gives no
/// bound; vendors document up to 150 s). A watchdog retries anyway.
const ATTACH_MS: u64 = 60_000;
/// How often registration is polled while waiting for it.
const REGISTRATION_POLL_MS: u64 = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum ModemError {
    #[error("modem port: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    At(#[from] AtError),
    #[error("`{command}` refused: {result:?}")]
    Refused { command: String, result: Final },
    #[error("no SIM card (+CME ERROR: {0})")]
    NoSim(String),
    #[error("the SIM needs its PIN and the config gives none (modem.pin)")]
    PinRequired,
    #[error("the SIM is locked with a PUK: it needs a technician")]
    PukRequired,
    #[error("the SIM refused the PIN from modem.pin")]
    PinRejected,
    #[error("not registered after {waited_ms} ms (last state: {state})")]
    NotRegistered { state: &'static str, waited_ms: u64 },
    #[error("the network denied registration")]
    Denied,
    #[error("the modem port closed")]
    Closed,
}

/// What is known about the modem (shown by `outpost network`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModemStatus {
    pub sim: String,
    pub registration: String,
    pub operator: String,
    /// From `+CSQ`.
    pub signal_dbm: Option<i32>,
    /// LTE RSRP from `+CESQ`.
    pub rsrp_dbm: Option<i32>,
    pub data: bool,
}

/// One modem's AT port.
pub struct Modem<P: Read + Write> {
    port: P,
    lines: Lines,
    pending: std::collections::VecDeque<String>,
    /// Unsolicited result codes seen, newest last.
    pub urcs: std::collections::VecDeque<String>,
    clock: Box<dyn Fn() -> u64 + Send>,
    /// The last command timed out: its answer may still come; read it
    /// away before the next command.
    resync: bool,
}

impl<P: Read + Write> Modem<P> {
    /// `port` must time its reads out (e.g. 100 ms) so deadlines are kept;
    /// `clock` gives milliseconds.
    pub fn new(port: P, clock: Box<dyn Fn() -> u64 + Send>) -> Self {
        Self {
            port,
            lines: Lines::default(),
            pending: Default::default(),
            urcs: Default::default(),
            clock,
            resync: false,
        }
    }

    /// Lines dropped as garbage so far.
    pub fn garbage(&self) -> u32 {
        self.lines.dropped
    }

    /// Send `command` and wait for its final result (any: OK or an error).
    pub fn command(&mut self, command: &str, timeout_ms: u64) -> Result<Reply, ModemError> {
        // Lines left from before were not asked for (a stray result after
        // a timed-out command): they must not answer this one.
        let mut buf = [0u8; READ_CHUNK];
        if std::mem::take(&mut self.resync) {
            // Until the port is quiet for one read timeout (bounded: a
            // babbling port gets MAX_URCS lines' worth).
            for _ in 0..MAX_URCS {
                match self.port.read(&mut buf) {
                    Ok(n) if n > 0 => {
                        let mut out = Vec::new();
                        self.lines.feed(buf.get(..n).unwrap_or_default(), &mut out);
                        self.pending.extend(out);
                    }
                    _ => break,
                }
            }
        }
        while let Some(stale) = self.pending.pop_front() {
            self.urc(stale);
        }
        self.port.write_all(command.as_bytes())?;
        self.port.write_all(b"\r")?;
        self.port.flush()?;
        let mut ex = Exchange::new(command, (self.clock)(), timeout_ms);
        loop {
            while let Some(line) = self.pending.pop_front() {
                match ex.line(line)? {
                    Step::Pending => {}
                    Step::Done(reply) => return Ok(reply),
                    Step::Urc(u) => self.urc(u),
                }
            }
            if let Some(e) = ex.expired((self.clock)()) {
                self.resync = true;
                return Err(e.into());
            }
            match self.port.read(&mut buf) {
                Ok(0) => return Err(ModemError::Closed),
                Ok(n) => {
                    let mut out = Vec::new();
                    self.lines.feed(buf.get(..n).unwrap_or_default(), &mut out);
                    self.pending.extend(out);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn urc(&mut self, line: String) {
        if self.urcs.len() >= MAX_URCS {
            self.urcs.pop_front();
        }
        self.urcs.push_back(line);
    }

    /// `command`, which must answer OK.
    pub fn ok(&mut self, command: &str, timeout_ms: u64) -> Result<Reply, ModemError> {
        let reply = self.command(command, timeout_ms)?;
        if reply.result != Final::Ok {
            return Err(ModemError::Refused {
                command: command.to_owned(),
                result: reply.result,
            });
        }
        Ok(reply)
    }

    /// Wake the modem up: `AT` until it answers (a modem just powered
    /// on takes a few seconds), echo off, numeric errors.
    pub fn init(&mut self) -> Result<(), ModemError> {
        let mut last = None;
        for _ in 0..3 {
            match self.ok("AT", SHORT_MS / 3) {
                Ok(_) => {
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        if let Some(e) = last {
            return Err(e);
        }
        self.ok("ATE0", SHORT_MS)?;
        self.ok("AT+CMEE=1", SHORT_MS)?;
        Ok(())
    }

    /// SIM state; enters `pin` if the SIM asks for one.
    pub fn unlock(&mut self, pin: Option<&str>) -> Result<String, ModemError> {
        for attempt in 0..2 {
            let reply = self.command("AT+CPIN?", SHORT_MS)?;
            let state = match &reply.result {
                Final::Ok => reply.value("+CPIN:").unwrap_or("").to_owned(),
                // 10 SIM not inserted, 13 SIM failure (TS 27.007 §9.2.1).
                Final::Cme(code) if code == "10" || code == "13" => {
                    return Err(ModemError::NoSim(code.clone()))
                }
                other => {
                    return Err(ModemError::Refused {
                        command: "AT+CPIN?".into(),
                        result: other.clone(),
                    })
                }
            };
            match state.as_str() {
                "READY" => return Ok(state),
                "SIM PIN" if attempt == 0 => {
                    let pin = pin.ok_or(ModemError::PinRequired)?;
                    let reply = self.command(&format!("AT+CPIN=\"{pin}\""), SHORT_MS)?;
                    if reply.result != Final::Ok {
                        return Err(ModemError::PinRejected);
                    }
                }
                "SIM PIN" => return Err(ModemError::PinRejected),
                "SIM PUK" => return Err(ModemError::PukRequired),
                _ => {
                    return Err(ModemError::Refused {
                        command: "AT+CPIN?".into(),
                        result: Final::Cme(state),
                    })
                }
            }
        }
        Err(ModemError::PinRejected)
    }

    /// Registration: `+CEREG` (LTE), else `+CREG` (modems without it answer
    /// ERROR).
    pub fn registration(&mut self) -> Result<Registration, ModemError> {
        for (command, prefix) in [("AT+CEREG?", "+CEREG:"), ("AT+CREG?", "+CREG:")] {
            let reply = self.command(command, SHORT_MS)?;
            if reply.result == Final::Ok {
                if let Some(r) = reply.value(prefix).and_then(Registration::from_read) {
                    return Ok(r);
                }
            }
        }
        Ok(Registration::Unknown)
    }

    /// Poll registration until registered, denied, or `wait_ms` passed.
    pub fn wait_registered(&mut self, wait_ms: u64) -> Result<Registration, ModemError> {
        let start = (self.clock)();
        loop {
            let r = self.registration()?;
            if r.registered() {
                return Ok(r);
            }
            if r == Registration::Denied {
                return Err(ModemError::Denied);
            }
            let waited = (self.clock)().saturating_sub(start);
            if waited >= wait_ms {
                return Err(ModemError::NotRegistered {
                    state: r.name(),
                    waited_ms: waited,
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(REGISTRATION_POLL_MS));
        }
    }

    /// Signal and operator into `status` (failures leave fields empty:
    /// not every modem has `+CESQ`).
    pub fn observe(&mut self, status: &mut ModemStatus) -> Result<(), ModemError> {
        let csq = self.command("AT+CSQ", SHORT_MS)?;
        status.signal_dbm = csq.value("+CSQ:").and_then(at::csq_dbm);
        let cesq = self.command("AT+CESQ", SHORT_MS)?;
        status.rsrp_dbm = cesq.value("+CESQ:").and_then(at::cesq_rsrp_dbm);
        let cops = self.command("AT+COPS?", SHORT_MS)?;
        status.operator = cops
            .value("+COPS:")
            .and_then(at::cops_operator)
            .unwrap_or_default();
        Ok(())
    }

    /// Start the data session the family's way (the network interface
    /// then carries traffic; DHCP runs on it).
    pub fn start_data(&mut self, family: ModemFamily, apn: &str) -> Result<(), ModemError> {
        match family {
            // PDP context 1 active: ECM/NCM modems that bridge it to their
            // USB network function by themselves.
            ModemFamily::Generic => self.ok("AT+CGACT=1,1", ATTACH_MS)?,
            // Quectel EC2x/EG2x/EM05 in ECM mode (AT+QCFG="usbnet",1):
            // connect context 1 and let the modem run DHCP towards us.
            ModemFamily::Quectel => self.ok("AT+QNETDEVCTL=1,1,1", ATTACH_MS)?,
            // Huawei ME909/MS2372 NDIS: dial context 1 with the APN.
            ModemFamily::Huawei => self.ok(&format!("AT^NDISDUP=1,1,\"{apn}\""), ATTACH_MS)?,
        };
        Ok(())
    }

    /// The whole dialogue: wake, SIM, APN, attach, registration, signal,
    /// data session.
    pub fn dial(
        &mut self,
        config: &ModemConfig,
        status: &mut ModemStatus,
    ) -> Result<(), ModemError> {
        status.data = false;
        self.init()?;
        status.sim = self.unlock(config.pin.as_deref())?;
        self.ok(&format!("AT+CGDCONT=1,\"IP\",\"{}\"", config.apn), SHORT_MS)?;
        self.ok("AT+CGATT=1", ATTACH_MS)?;
        let r = self.wait_registered(u64::from(config.register_secs).saturating_mul(1000));
        status.registration = match &r {
            Ok(r) => r.name().to_owned(),
            Err(ModemError::Denied) => "denied".into(),
            Err(_) => "not registered".into(),
        };
        r?;
        self.observe(status)?;
        self.start_data(config.family, &config.apn)?;
        status.data = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads hand out `chunks` one per call (`None`: one read timeout, as
    /// when nothing comes); writes are kept.
    struct Script {
        chunks: std::collections::VecDeque<Option<&'static [u8]>>,
        written: Vec<u8>,
    }

    fn script(chunks: Vec<Option<&'static [u8]>>) -> Script {
        Script {
            chunks: chunks.into(),
            written: Vec::new(),
        }
    }

    impl Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let Some(Some(c)) = self.chunks.pop_front() else {
                return Err(std::io::ErrorKind::TimedOut.into());
            };
            buf[..c.len()].copy_from_slice(c);
            Ok(c.len())
        }
    }

    impl Write for Script {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stray_result_does_not_answer_the_next_command() {
        let port = script(vec![
            Some(b"\r\nOK\r\n\r\nOK\r\n"),
            Some(b"\r\n+CSQ: 20,99\r\n\r\nOK\r\n"),
        ]);
        let mut m = Modem::new(port, Box::new(|| 0));
        assert_eq!(m.ok("AT", 1000).unwrap().info, Vec::<String>::new());
        let csq = m.ok("AT+CSQ", 1000).unwrap();
        assert_eq!(csq.value("+CSQ:"), Some("20,99"));
        assert_eq!(m.urcs.iter().collect::<Vec<_>>(), ["OK"]);
        assert_eq!(m.port.written, b"AT\rAT+CSQ\r");
    }

    #[test]
    fn a_late_answer_after_a_timeout_is_read_away() {
        let clock = {
            let now = std::sync::atomic::AtomicU64::new(0);
            move || now.fetch_add(600, std::sync::atomic::Ordering::Relaxed)
        };
        let port = script(vec![
            None,
            // AT+CGATT's OK, after it timed out; then quiet; then AT+CSQ's.
            Some(b"\r\nOK\r\n"),
            None,
            Some(b"\r\n+CSQ: 5,99\r\nOK\r\n"),
        ]);
        let mut m = Modem::new(port, Box::new(clock));
        let e = m.ok("AT+CGATT=1", 1000).unwrap_err();
        assert!(matches!(e, ModemError::At(AtError::Timeout { .. })), "{e}");
        assert!(e.to_string().contains("AT+CGATT=1"), "{e}");
        let csq = m.ok("AT+CSQ", 1_000_000).unwrap();
        assert_eq!(csq.value("+CSQ:"), Some("5,99"));
        assert_eq!(m.urcs.iter().collect::<Vec<_>>(), ["OK"]);
    }
}
