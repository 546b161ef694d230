//! Service output into bounded rings: a sans-io line splitter (each line
//! capped) and the pump that feeds a child's pipe through it. A flood is
//! held to the ring's byte bound; the oldest lines go and are counted.

use smol::io::{AsyncRead, AsyncReadExt as _};

use crate::device::log::{self, LogRing, LINE_OVERHEAD, MAX_LINE};
use crate::wire::{LogLevel, LogLine};

/// Bytes of output kept per service: a few hundred recent lines, and with
/// [`crate::config::MAX_SERVICES`] services at most 2 MiB in all (a board
/// has 512 MiB or more; PID 1's own budget is a few MiB).
pub const SERVICE_LOG_BYTES: usize = 64 * 1024;
/// Lines kept per service (short lines: the byte bound would allow more,
/// each costing [`LINE_OVERHEAD`] on top of its text).
pub const SERVICE_LOG_LINES: usize = SERVICE_LOG_BYTES / (16 + LINE_OVERHEAD);
/// One read from a pipe.
const READ_CHUNK: usize = 4096;

pub fn ring() -> LogRing {
    LogRing::with_limits(SERVICE_LOG_LINES, SERVICE_LOG_BYTES)
}

/// Splits a byte stream into lines of at most [`MAX_LINE`] bytes; the rest
/// of a longer line is dropped. Holds at most one partial line.
#[derive(Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
    /// In a line that was already cut: drop bytes until its newline.
    skipping: bool,
}

impl LineSplitter {
    pub fn feed(&mut self, mut input: &[u8], mut emit: impl FnMut(&[u8])) {
        while !input.is_empty() {
            let newline = input.iter().position(|&b| b == b'\n');
            let (chunk, rest, ends) = match newline {
                Some(i) => (
                    input.get(..i).unwrap_or_default(),
                    input.get(i + 1..).unwrap_or_default(),
                    true,
                ),
                None => (input, &[][..], false),
            };
            input = rest;
            if !self.skipping {
                let room = MAX_LINE.saturating_sub(self.partial.len());
                let take = chunk.len().min(room);
                self.partial
                    .extend_from_slice(chunk.get(..take).unwrap_or_default());
                if take < chunk.len() || self.partial.len() >= MAX_LINE {
                    emit(&self.partial);
                    self.partial.clear();
                    self.skipping = !ends;
                    continue;
                }
            }
            if ends {
                if !self.skipping {
                    emit(&self.partial);
                }
                self.partial.clear();
                self.skipping = false;
            }
        }
    }

    /// The end of the stream: a last line without a newline.
    pub fn finish(&mut self, emit: impl FnOnce(&[u8])) {
        if !self.partial.is_empty() && !self.skipping {
            emit(&self.partial);
        }
        self.partial.clear();
    }
}

fn push(ring: &LogRing, level: LogLevel, line: &[u8]) {
    ring.push(LogLine {
        at_ms: log::uptime_ms(),
        level,
        text: String::from_utf8_lossy(line).into_owned(),
    });
}

/// Copy a child's stdout (Info) or stderr (Warn) into `ring` until EOF.
pub async fn pump(mut pipe: impl AsyncRead + Unpin, ring: LogRing, level: LogLevel) {
    let mut splitter = LineSplitter::default();
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => splitter.feed(buf.get(..n).unwrap_or_default(), |l| push(&ring, level, l)),
        }
        // A pipe that always has data never makes `read` wait: yield, so a
        // flood cannot starve the API or the health probes (one executor).
        smol::future::yield_now().await;
    }
    splitter.finish(|l| push(&ring, level, l));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, |l| out.push(String::from_utf8_lossy(l).into_owned()));
        }
        s.finish(|l| out.push(String::from_utf8_lossy(l).into_owned()));
        out
    }

    #[test]
    fn lines_across_chunks() {
        assert_eq!(split(&[b"a\nb", b"c\n\nd"]), ["a", "bc", "", "d"]);
        assert_eq!(split(&[b""]), Vec::<String>::new());
    }

    #[test]
    fn long_lines_are_cut_and_the_rest_dropped() {
        let long = vec![b'x'; MAX_LINE * 3];
        let mut input = long.clone();
        input.extend_from_slice(b"\nnext\n");
        let out = split(&[&input[..100], &input[100..]]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].len(), MAX_LINE);
        assert_eq!(out[1], "next");
        // Exactly MAX_LINE then newline: one line, nothing skipped after.
        let mut exact = vec![b'y'; MAX_LINE];
        exact.extend_from_slice(b"\nz\n");
        assert_eq!(split(&[&exact]).len(), 2);
    }

    #[test]
    fn a_flood_stays_within_the_ring_bound() {
        let ring = ring();
        let mut s = LineSplitter::default();
        let chunk: Vec<u8> = (0..100)
            .flat_map(|i| format!("line {i:04} of the flood\n").into_bytes())
            .collect();
        // 10 MiB of output.
        for _ in 0..(10 << 20) / chunk.len() {
            s.feed(&chunk, |l| push(&ring, LogLevel::Info, l));
            assert!(ring.bytes() <= SERVICE_LOG_BYTES);
        }
        let kept = ring.tail(usize::MAX);
        assert!(kept.len() <= SERVICE_LOG_LINES);
        assert_eq!(kept.last().unwrap().text, "line 0099 of the flood");
        assert!(ring.dropped() > 400_000, "{}", ring.dropped());
    }

    #[test]
    fn pump_reads_to_eof() {
        let ring = ring();
        let input: &[u8] = b"hello\nworld";
        smol::block_on(pump(input, ring.clone(), LogLevel::Warn));
        let lines = ring.tail(10);
        assert_eq!(
            lines.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(),
            ["hello", "world"]
        );
        assert_eq!(lines[0].level, LogLevel::Warn);
    }
}
