//! The AT command layer, sans I/O: bytes from the modem go in ([`Lines`]),
//! lines come out; one command's lines are gathered into a [`Reply`] by
//! [`Exchange`], unsolicited result codes (URCs) are set aside. Timeouts are
//! the caller's: it asks [`Exchange::expired`] with the time it keeps.
//!
//! What a modem sends (3GPP TS 27.007 §4/§9, V.250 §5.7): lines ended by
//! CR LF (some firmwares send only CR or LF), an echo of the command when
//! echo is on (`ATE0` turns it off), information lines, then one final
//! result: `OK`, `ERROR`, `+CME ERROR: <n>` or `+CMS ERROR: <n>` (also
//! `NO CARRIER`, `BUSY`, `NO ANSWER`, `NO DIALTONE` after a dial). URCs
//! (`+CEREG: 1`, `RDY`, `+QIND: …`) may arrive at any time, also between a
//! command's lines.

/// Longest line kept. The longest replies we read are `+COPS?` and
/// `+CGDCONT?` (an APN is at most 100 characters, 3GPP TS 23.003 §9.1);
/// `+COPS=?` lists can be longer and are not used. Longer lines are dropped
/// (and counted), never grown without bound.
pub const MAX_LINE: usize = 512;
/// Most information lines kept for one command: a context list has at most
/// a handful; more means the modem is babbling.
pub const MAX_INFO_LINES: usize = 32;

/// The final result of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Final {
    Ok,
    Error,
    /// `+CME ERROR: <n>` (mobile equipment; `AT+CMEE=1` gives numbers,
    /// `=2` text, which we keep as is).
    Cme(String),
    /// `+CMS ERROR: <n>` (SMS).
    Cms(String),
    /// `NO CARRIER`, `BUSY`, `NO ANSWER`, `NO DIALTONE`.
    Call(String),
}

impl Final {
    /// The final result this line is, if it is one.
    pub fn parse(line: &str) -> Option<Self> {
        Some(match line {
            "OK" => Self::Ok,
            "ERROR" => Self::Error,
            "NO CARRIER" | "BUSY" | "NO ANSWER" | "NO DIALTONE" => Self::Call(line.to_owned()),
            _ => {
                if let Some(code) = line.strip_prefix("+CME ERROR:") {
                    Self::Cme(code.trim().to_owned())
                } else if let Some(code) = line.strip_prefix("+CMS ERROR:") {
                    Self::Cms(code.trim().to_owned())
                } else {
                    return None;
                }
            }
        })
    }
}

/// Splits the byte stream into lines: CR, LF or both end a line; empty
/// lines are skipped; bytes that are not printable ASCII are garbage.
#[derive(Debug, Default)]
pub struct Lines {
    current: Vec<u8>,
    /// The current line went past [`MAX_LINE`]: drop it to its end.
    overlong: bool,
    /// Lines dropped (too long, or not text).
    pub dropped: u32,
}

impl Lines {
    /// Feed bytes; complete lines are appended to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<String>) {
        for &b in bytes {
            match b {
                b'\r' | b'\n' => self.end_line(out),
                _ if self.overlong => {}
                _ if self.current.len() >= MAX_LINE => {
                    self.overlong = true;
                    self.current.clear();
                }
                _ => self.current.push(b),
            }
        }
    }

    /// A `>` prompt (for `+CMGS`) has no line end; we never send such
    /// commands, so a partial line is only ever garbage or a line in flight.
    fn end_line(&mut self, out: &mut Vec<String>) {
        let line = std::mem::take(&mut self.current);
        if std::mem::take(&mut self.overlong) {
            self.dropped = self.dropped.saturating_add(1);
            return;
        }
        if line.is_empty() {
            return;
        }
        if !line.iter().all(|b| (0x20..0x7f).contains(b) || *b == b'\t') {
            self.dropped = self.dropped.saturating_add(1);
            return;
        }
        // All bytes are ASCII: this cannot fail.
        out.push(String::from_utf8_lossy(&line).trim().to_owned());
    }
}

/// The answer to one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Information lines, in order (the echo left out).
    pub info: Vec<String>,
    pub result: Final,
}

impl Reply {
    /// The value after `prefix` ("+CSQ:") in the first line that has it.
    pub fn value(&self, prefix: &str) -> Option<&str> {
        self.info
            .iter()
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::trim)
    }
}

/// Why a command got no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AtError {
    #[error("`{command}`: no final result within {timeout_ms} ms")]
    Timeout { command: String, timeout_ms: u64 },
    #[error("`{command}`: more than {MAX_INFO_LINES} lines in the reply")]
    TooManyLines { command: String },
}

/// One command in flight: lines go in, a [`Reply`] comes out when its final
/// result arrives. Lines that are URCs are handed back to the caller.
#[derive(Debug)]
pub struct Exchange {
    command: String,
    /// The prefix information lines of this command carry ("+CSQ:" for
    /// "AT+CSQ"); lines with another `+XXX:` prefix are URCs.
    prefix: Option<String>,
    info: Vec<String>,
    started_ms: u64,
    timeout_ms: u64,
}

/// What one line did to the exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Part of the reply; more to come.
    Pending,
    /// The reply is complete.
    Done(Reply),
    /// Not ours: an unsolicited result code.
    Urc(String),
}

/// Unsolicited lines without a `+` prefix that modems send at any time.
const BARE_URCS: &[&str] = &[
    "RING",
    "RDY",
    "POWERED DOWN",
    "NORMAL POWER DOWN",
    "^BOOT",
    "SMS DONE",
    "PB DONE",
];

impl Exchange {
    /// `command` as sent (without CR), started at `now_ms`.
    pub fn new(command: &str, now_ms: u64, timeout_ms: u64) -> Self {
        Self {
            command: command.to_owned(),
            prefix: info_prefix(command),
            info: Vec::new(),
            started_ms: now_ms,
            timeout_ms,
        }
    }

    pub fn command(&self) -> &str {
        &self.command
    }

    /// Take one line.
    pub fn line(&mut self, line: String) -> Result<Step, AtError> {
        if line.eq_ignore_ascii_case(&self.command) {
            return Ok(Step::Pending); // our echo
        }
        if let Some(result) = Final::parse(&line) {
            return Ok(Step::Done(Reply {
                info: std::mem::take(&mut self.info),
                result,
            }));
        }
        let is_urc = match (line.split_once(':'), &self.prefix) {
            (Some((p, _)), Some(ours)) if p.starts_with(['+', '^']) => {
                !ours.eq_ignore_ascii_case(p)
            }
            (Some((p, _)), None) if p.starts_with(['+', '^']) => true,
            _ => BARE_URCS.contains(&line.as_str()),
        };
        if is_urc {
            return Ok(Step::Urc(line));
        }
        if self.info.len() >= MAX_INFO_LINES {
            return Err(AtError::TooManyLines {
                command: self.command.clone(),
            });
        }
        self.info.push(line);
        Ok(Step::Pending)
    }

    /// The deadline passed at `now_ms`.
    pub fn expired(&self, now_ms: u64) -> Option<AtError> {
        (now_ms.saturating_sub(self.started_ms) >= self.timeout_ms).then(|| AtError::Timeout {
            command: self.command.clone(),
            timeout_ms: self.timeout_ms,
        })
    }
}

/// "AT+CSQ" → "+CSQ", "AT+CPIN?" → "+CPIN", "AT^NDISDUP=1,1" → "^NDISDUP";
/// plain commands ("ATE0", "ATI") have none.
fn info_prefix(command: &str) -> Option<String> {
    let rest = command.get(2..)?;
    if !rest.starts_with(['+', '^']) {
        return None;
    }
    let end = rest.find(['=', '?']).unwrap_or(rest.len());
    rest.get(..end).map(str::to_owned)
}

/// `+CSQ: <rssi>,<ber>` → dBm (TS 27.007 §8.5: 0 = -113 dBm or less,
/// 1..=30 in 2 dB steps, 31 = -51 dBm or more, 99 = unknown).
pub fn csq_dbm(value: &str) -> Option<i32> {
    let rssi: i32 = value.split(',').next()?.trim().parse().ok()?;
    (0..=31).contains(&rssi).then(|| -113 + 2 * rssi)
}

/// `+CESQ: rxlev,ber,rscp,ecno,rsrq,rsrp` → LTE RSRP in dBm (§8.69: 0..=97
/// maps to -140..-44; 255 = unknown).
pub fn cesq_rsrp_dbm(value: &str) -> Option<i32> {
    let rsrp: i32 = value.split(',').nth(5)?.trim().parse().ok()?;
    (0..=97).contains(&rsrp).then(|| rsrp - 141)
}

/// Registration state from `+CEREG: <n>,<stat>[,…]` / `+CREG: …` (a reply
/// to the read command has `n` first; a URC has `stat` first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    NotSearching,
    Home,
    Searching,
    Denied,
    Unknown,
    Roaming,
}

impl Registration {
    pub fn from_stat(stat: u32) -> Self {
        match stat {
            0 => Self::NotSearching,
            1 => Self::Home,
            2 => Self::Searching,
            3 => Self::Denied,
            5 => Self::Roaming,
            _ => Self::Unknown,
        }
    }

    /// From a read-command reply ("2,1,…": n then stat).
    pub fn from_read(value: &str) -> Option<Self> {
        let stat = value.split(',').nth(1)?.trim().parse().ok()?;
        Some(Self::from_stat(stat))
    }

    pub fn registered(self) -> bool {
        matches!(self, Self::Home | Self::Roaming)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::NotSearching => "not searching",
            Self::Home => "home",
            Self::Searching => "searching",
            Self::Denied => "denied",
            Self::Unknown => "unknown",
            Self::Roaming => "roaming",
        }
    }
}

/// `+COPS: <mode>[,<format>,"<oper>"[,<AcT>]]` → the operator's name.
pub fn cops_operator(value: &str) -> Option<String> {
    let start = value.find('"')?;
    let rest = value.get(start + 1..)?;
    let end = rest.find('"')?;
    rest.get(..end).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(chunks: &[&[u8]]) -> (Vec<String>, u32) {
        let mut l = Lines::default();
        let mut out = Vec::new();
        for c in chunks {
            l.feed(c, &mut out);
        }
        (out, l.dropped)
    }

    #[test]
    fn lines_split_on_any_line_end_across_chunks() {
        let (out, dropped) = lines(&[b"\r\n+CSQ: 2", b"0,99\r\n\r\nOK\r", b"\nRDY\n"]);
        assert_eq!(out, ["+CSQ: 20,99", "OK", "RDY"]);
        assert_eq!(dropped, 0);
    }

    #[test]
    fn garbage_and_overlong_lines_are_dropped_and_counted() {
        let mut long = vec![b'A'; MAX_LINE + 10];
        long.extend(b"\r\nOK\r\n");
        let (out, dropped) = lines(&[b"\xff\xfe\x00junk\r\n", &long]);
        assert_eq!(out, ["OK"]);
        assert_eq!(dropped, 2);
        // Exactly MAX_LINE is kept.
        let mut max = vec![b'B'; MAX_LINE];
        max.push(b'\n');
        assert_eq!(lines(&[&max]).0[0].len(), MAX_LINE);
    }

    fn run(command: &str, input: &[&str]) -> (Vec<Step>, Vec<String>) {
        let mut ex = Exchange::new(command, 0, 1000);
        let mut steps = Vec::new();
        let mut urcs = Vec::new();
        for l in input {
            match ex.line((*l).to_owned()).unwrap() {
                Step::Urc(u) => urcs.push(u),
                s => steps.push(s),
            }
        }
        (steps, urcs)
    }

    #[test]
    fn final_results() {
        for (line, want) in [
            ("OK", Final::Ok),
            ("ERROR", Final::Error),
            ("+CME ERROR: 10", Final::Cme("10".into())),
            (
                "+CME ERROR: SIM not inserted",
                Final::Cme("SIM not inserted".into()),
            ),
            ("+CMS ERROR: 500", Final::Cms("500".into())),
            ("NO CARRIER", Final::Call("NO CARRIER".into())),
        ] {
            assert_eq!(Final::parse(line), Some(want), "{line}");
        }
        assert_eq!(Final::parse("OKAY"), None);
        assert_eq!(Final::parse("+CSQ: 1,2"), None);
    }

    #[test]
    fn echo_info_urcs_and_final() {
        let (steps, urcs) = run(
            "AT+CEREG?",
            &[
                "AT+CEREG?",
                "+CEREG: 2,1,\"1A2B\",\"01A2B3C\",7",
                "+QIND: \"csq\",20,99",
                "RING",
                "OK",
            ],
        );
        assert_eq!(urcs, ["+QIND: \"csq\",20,99", "RING"]);
        let Step::Done(reply) = steps.last().unwrap() else {
            panic!("{steps:?}")
        };
        assert_eq!(reply.result, Final::Ok);
        assert_eq!(reply.info.len(), 1);
        assert_eq!(
            Registration::from_read(reply.value("+CEREG:").unwrap()),
            Some(Registration::Home)
        );
        // A +CEREG URC while another command runs is a URC.
        let (_, urcs) = run("AT+CSQ", &["+CEREG: 5", "+CSQ: 31,99", "OK"]);
        assert_eq!(urcs, ["+CEREG: 5"]);
        // Plain commands: any +XXX: line is a URC; other lines are info.
        let (steps, urcs) = run("ATI", &["Quectel", "EC25", "+CPIN: READY", "OK"]);
        assert_eq!(urcs, ["+CPIN: READY"]);
        let Step::Done(r) = steps.last().unwrap() else {
            panic!()
        };
        assert_eq!(r.info, ["Quectel", "EC25"]);
    }

    #[test]
    fn errors_end_the_exchange() {
        let (steps, _) = run("AT+CPIN?", &["+CME ERROR: 10"]);
        assert_eq!(
            steps,
            [Step::Done(Reply {
                info: vec![],
                result: Final::Cme("10".into())
            })]
        );
    }

    #[test]
    fn timeouts_and_babbling() {
        let ex = Exchange::new("AT+CGATT=1", 1000, 500);
        assert_eq!(ex.expired(1499), None);
        assert!(matches!(ex.expired(1500), Some(AtError::Timeout { .. })));
        // A clock that went backwards is not a timeout.
        assert_eq!(ex.expired(0), None);
        let mut ex = Exchange::new("ATI", 0, 500);
        for _ in 0..MAX_INFO_LINES {
            assert_eq!(ex.line("x".into()), Ok(Step::Pending));
        }
        assert!(matches!(
            ex.line("x".into()),
            Err(AtError::TooManyLines { .. })
        ));
    }

    #[test]
    fn values() {
        assert_eq!(csq_dbm("20,99"), Some(-73));
        assert_eq!(csq_dbm("31,99"), Some(-51));
        assert_eq!(csq_dbm("99,99"), None);
        assert_eq!(csq_dbm("x"), None);
        assert_eq!(cesq_rsrp_dbm("99,99,255,255,20,50"), Some(-91));
        assert_eq!(cesq_rsrp_dbm("99,99,255,255,20,255"), None);
        assert_eq!(cesq_rsrp_dbm("1,2"), None);
        assert_eq!(
            cops_operator("0,0,\"Telekom.de\",7").as_deref(),
            Some("Telekom.de")
        );
        assert_eq!(cops_operator("0"), None);
        assert_eq!(cops_operator("0,0,\"unterminated"), None);
        assert_eq!(Registration::from_read("0,3"), Some(Registration::Denied));
        assert_eq!(Registration::from_read("0"), None);
        assert!(Registration::from_stat(5).registered());
        assert!(!Registration::from_stat(2).registered());
        assert_eq!(
            info_prefix("AT^NDISDUP=1,1,\"apn\"").as_deref(),
            Some("^NDISDUP")
        );
        assert_eq!(info_prefix("ATE0"), None);
        assert_eq!(info_prefix("A"), None);
    }
}
