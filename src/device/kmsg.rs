//! The kernel log, read from /dev/kmsg (one record per read, non-blocking).

use std::collections::VecDeque;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;

/// Records longer than this are cut by the kernel anyway (its line max is 1 KiB;
/// 8 KiB covers continuation dictionaries).
const MAX_RECORD: usize = 8192;
/// Stop after this many records: the kernel buffer holds far fewer.
const MAX_RECORDS: usize = 100_000;

/// Format one `/dev/kmsg` record ("prio,seq,usec,flags;text\n dict…") as
/// "[   1.234567] text". Returns None for records that do not parse.
pub fn format_record(record: &str) -> Option<String> {
    let (header, rest) = record.split_once(';')?;
    let mut fields = header.split(',');
    let _prio = fields.next()?;
    let _seq = fields.next()?;
    let usec: u64 = fields.next()?.parse().ok()?;
    // Continuation lines (dictionary) start with a space; keep the message only.
    let text = rest.lines().next().unwrap_or("");
    Some(format!(
        "[{:>5}.{:06}] {text}",
        usec / 1_000_000,
        usec % 1_000_000
    ))
}

/// The last `max_bytes` of the kernel log.
pub fn tail(max_bytes: usize) -> Result<String, String> {
    use super::persistlog::KernelSource as _;
    /// Records read per round: bounds the batch in memory (~1 KiB each).
    const ROUND: usize = 256;
    let mut reader = KmsgReader::open()?;
    let mut lines: VecDeque<String> = VecDeque::new();
    let mut total = 0usize;
    let mut batch = Vec::with_capacity(ROUND);
    for _ in 0..MAX_RECORDS / ROUND {
        reader.read_new(ROUND, &mut batch);
        if batch.is_empty() {
            break;
        }
        for (line, _) in batch.drain(..) {
            total += line.len() + 1;
            lines.push_back(line);
            while total > max_bytes {
                match lines.pop_front() {
                    Some(old) => total -= old.len() + 1,
                    None => break,
                }
            }
        }
    }
    let mut out = String::with_capacity(total);
    for l in lines {
        out.push_str(&l);
        out.push('\n');
    }
    Ok(out)
}

/// Whether a record's priority is error or worse (`prio` is facility << 3 | level).
pub fn is_error(record: &str) -> bool {
    record
        .split([',', ';'])
        .next()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|p| p & 7 <= 3)
}

/// Reads /dev/kmsg from the first record still in the kernel's buffer on,
/// then each new record once: the kernel log persisted to DATA.
pub struct KmsgReader {
    file: std::fs::File,
    buf: Vec<u8>,
}

impl KmsgReader {
    pub fn open() -> Result<Self, String> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc_nonblock())
            .open("/dev/kmsg")
            .map_err(|e| format!("/dev/kmsg: {e}"))?;
        Ok(Self {
            file,
            buf: vec![0u8; MAX_RECORD],
        })
    }
}

impl super::persistlog::KernelSource for KmsgReader {
    fn read_new(&mut self, max: usize, out: &mut Vec<(String, bool)>) {
        for _ in 0..max {
            match self.file.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => {
                    let text = String::from_utf8_lossy(self.buf.get(..n).unwrap_or(&[]));
                    if let Some(line) = format_record(&text) {
                        out.push((line, is_error(&text)));
                    }
                }
                // EPIPE: records were overwritten before we read them.
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::PIPE.raw_os_error()) => {
                    out.push((
                        "[kernel records lost: overwritten before they were saved]".into(),
                        false,
                    ));
                }
                Err(_) => break,
            }
        }
    }
}

fn libc_nonblock() -> i32 {
    rustix::fs::OFlags::NONBLOCK.bits() as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_and_garbage_does_not() {
        assert_eq!(
            format_record("6,339,5140900,-;NET: Registered\n SUBSYSTEM=net").as_deref(),
            Some("[    5.140900] NET: Registered")
        );
        assert_eq!(format_record("no header"), None);
        assert_eq!(format_record("6,1,notanumber,-;x"), None);
        assert_eq!(format_record(";"), None);
    }

    #[test]
    fn error_priorities_are_urgent() {
        assert!(is_error("3,1,2,-;disk error"));
        assert!(is_error("0,1,2,-;emerg"));
        // facility 1 (user), level 3
        assert!(is_error("11,1,2,-;x"));
        assert!(!is_error("4,1,2,-;warning"));
        assert!(!is_error("6,1,2,-;info"));
        assert!(!is_error("garbage"));
    }
}
