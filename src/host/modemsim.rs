//! A simulated LTE modem's AT port, for tests: it speaks the dialogue the
//! device's modem driver uses (SIM PIN, APN, attach, registration, signal,
//! operator, data session for each family) and can misbehave on purpose
//! ([`Scenario`]): no SIM, PIN required, never registered, `+CME ERROR`
//! on a command, garbage and URCs between replies, a port that stops
//! answering. [`Simulator::respond`] is the pure part; [`Simulator::serve`]
//! runs it over any byte stream (a pseudo-terminal, a socket QEMU's
//! `usb-serial` is wired to).

use std::io::{Read, Write};

/// The SIM card.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Sim {
    #[default]
    Ready,
    /// Locked with this PIN.
    Pin(String),
    Puk,
    Missing,
}

/// How the simulated modem behaves.
#[derive(Debug, Clone, Default)]
pub struct Scenario {
    pub sim: Sim,
    /// `+CEREG?`/`+CREG?` answers "searching" this many times, then "home"
    /// (`u32::MAX`: never registers).
    pub register_after: u32,
    /// Registration is denied.
    pub denied: bool,
    /// Commands starting with `.0` answer `+CME ERROR: .1`.
    pub cme: Vec<(String, String)>,
    /// Garbage bytes and a URC before every reply.
    pub garbage: bool,
    /// After this many commands the port goes silent.
    pub stop_after: Option<u32>,
    /// No `+CEREG` (an old 3G modem): ERROR, `+CREG` works.
    pub no_cereg: bool,
}

/// The simulated modem's state.
#[derive(Debug, Default)]
pub struct Simulator {
    pub scenario: Scenario,
    echo: bool,
    unlocked: bool,
    polls: u32,
    /// Commands received, in order.
    pub log: Vec<String>,
    /// A data session was started.
    pub data: bool,
    /// `AT+CFUN=1,1` resets seen.
    pub resets: u32,
}

/// Longest command line accepted; longer input is dropped to its end.
const MAX_COMMAND: usize = 512;

impl Simulator {
    pub fn new(scenario: Scenario) -> Self {
        Self {
            scenario,
            echo: true,
            ..Self::default()
        }
    }

    /// The bytes the modem sends for one command line (without its CR);
    /// empty when it has gone silent.
    pub fn respond(&mut self, command: &str) -> Vec<u8> {
        self.log.push(command.to_owned());
        if self
            .scenario
            .stop_after
            .is_some_and(|n| self.log.len() > usize::try_from(n).unwrap_or(usize::MAX))
        {
            return Vec::new();
        }
        let mut out = Vec::new();
        if self.echo {
            out.extend(command.as_bytes());
            out.push(b'\r');
        }
        if self.scenario.garbage {
            out.extend(b"\r\n\xff\x00\x13\x80junk\r\n+QIND: \"csq\",20,99\r\n");
        }
        let lines = self.answer(command);
        for l in lines {
            out.extend(b"\r\n");
            out.extend(l.as_bytes());
            out.extend(b"\r\n");
        }
        out
    }

    fn answer(&mut self, command: &str) -> Vec<String> {
        let ok = |mut v: Vec<String>| {
            v.push("OK".into());
            v
        };
        if let Some((_, code)) = self
            .scenario
            .cme
            .iter()
            .find(|(p, _)| command.starts_with(p.as_str()))
        {
            return vec![format!("+CME ERROR: {code}")];
        }
        let sim_ready = match &self.scenario.sim {
            Sim::Ready => true,
            Sim::Pin(_) => self.unlocked,
            Sim::Puk | Sim::Missing => false,
        };
        match command {
            "AT" | "AT+CMEE=1" | "AT+CGATT=1" => ok(vec![]),
            "ATE0" => {
                self.echo = false;
                ok(vec![])
            }
            "AT+CPIN?" => match (&self.scenario.sim, sim_ready) {
                (Sim::Missing, _) => vec!["+CME ERROR: 10".into()],
                (_, true) => ok(vec!["+CPIN: READY".into()]),
                (Sim::Puk, _) => ok(vec!["+CPIN: SIM PUK".into()]),
                _ => ok(vec!["+CPIN: SIM PIN".into()]),
            },
            "AT+CEREG?" if self.scenario.no_cereg => vec!["ERROR".into()],
            "AT+CEREG?" | "AT+CREG?" => {
                self.polls = self.polls.saturating_add(1);
                let stat = if self.scenario.denied {
                    3
                } else if self.polls > self.scenario.register_after {
                    1
                } else {
                    2
                };
                let prefix = if command == "AT+CEREG?" {
                    "+CEREG"
                } else {
                    "+CREG"
                };
                ok(vec![format!("{prefix}: 0,{stat}")])
            }
            "AT+CSQ" => ok(vec!["+CSQ: 20,99".into()]),
            "AT+CESQ" => ok(vec!["+CESQ: 99,99,255,255,20,50".into()]),
            "AT+COPS?" => ok(vec!["+COPS: 0,0,\"Outpost Sim\",7".into()]),
            "AT+CGACT=1,1" | "AT+QNETDEVCTL=1,1,1" => {
                self.data = sim_ready;
                if sim_ready {
                    ok(vec![])
                } else {
                    vec!["+CME ERROR: 30".into()]
                }
            }
            "AT+CFUN=1,1" => {
                self.resets = self.resets.saturating_add(1);
                self.unlocked = false;
                self.polls = 0;
                self.data = false;
                self.echo = true;
                ok(vec![])
            }
            _ => {
                if let Some(pin) = command
                    .strip_prefix("AT+CPIN=\"")
                    .and_then(|p| p.strip_suffix('"'))
                {
                    return match &self.scenario.sim {
                        Sim::Pin(want) if want == pin => {
                            self.unlocked = true;
                            ok(vec![])
                        }
                        _ => vec!["+CME ERROR: 16".into()],
                    };
                }
                if command.starts_with("AT+CGDCONT=1,\"IP\",\"") {
                    return ok(vec![]);
                }
                if command.starts_with("AT^NDISDUP=1,1,\"") {
                    self.data = sim_ready;
                    return ok(vec![]);
                }
                vec!["ERROR".into()]
            }
        }
    }

    /// Answer commands from `io` until it ends. Commands end with CR (a LF
    /// after it is ignored).
    pub fn serve(&mut self, io: &mut (impl Read + Write)) -> std::io::Result<()> {
        let mut line = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            let n = match io.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                // A pty whose other side closed reads EIO.
                Err(e) if e.raw_os_error() == Some(5) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            for &b in buf.get(..n).unwrap_or_default() {
                match b {
                    b'\r' => {
                        let command = String::from_utf8_lossy(&line).trim().to_owned();
                        line.clear();
                        if !command.is_empty() {
                            let reply = self.respond(&command);
                            io.write_all(&reply)?;
                            io.flush()?;
                        }
                    }
                    b'\n' => {}
                    _ if line.len() < MAX_COMMAND => line.push(b),
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn text(b: Vec<u8>) -> String {
        String::from_utf8_lossy(&b).into_owned()
    }

    #[test]
    fn echo_until_ate0_and_pin_unlock() {
        let mut s = Simulator::new(Scenario {
            sim: Sim::Pin("1234".into()),
            ..Scenario::default()
        });
        assert_eq!(text(s.respond("AT")), "AT\r\r\nOK\r\n");
        assert_eq!(text(s.respond("ATE0")), "ATE0\r\r\nOK\r\n");
        assert_eq!(
            text(s.respond("AT+CPIN?")),
            "\r\n+CPIN: SIM PIN\r\n\r\nOK\r\n"
        );
        assert!(text(s.respond("AT+CPIN=\"0000\"")).contains("+CME ERROR: 16"));
        assert!(text(s.respond("AT+CPIN=\"1234\"")).contains("OK"));
        assert!(text(s.respond("AT+CPIN?")).contains("READY"));
        assert!(text(s.respond("AT+BOGUS")).contains("ERROR"));
    }

    #[test]
    fn silence_after_n_commands() {
        let mut s = Simulator::new(Scenario {
            stop_after: Some(1),
            ..Scenario::default()
        });
        assert!(!s.respond("AT").is_empty());
        assert!(s.respond("AT").is_empty());
        assert_eq!(s.log.len(), 2);
    }
}
