//! The CLI end of the serial link (`outpost --serial PATH`): a [`Transport`]
//! that carries the TLS session in link frames (`wire::serial`).
//!
//! `PATH` is a serial port (`/dev/ttyUSB0`, a QEMU `-chardev pty`'s
//! `/dev/pts/N`), opened with the serialport crate at 115 200 baud 8N1, or a
//! Unix socket (QEMU's `-chardev socket,path=…,server=on`), connected to.
//! Opening sends `Open` and waits for the device's `Opened`; bytes of an
//! earlier session still on the line are skipped until then.

use std::cell::Cell;
use std::io::{Read, Write};
use std::os::unix::fs::FileTypeExt as _;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serialport::{SerialPort as _, TTYPort};

use super::client::Transport;
use crate::wire::serial::{
    control_frame, encode_data, Feed, LinkDecoder, LinkMsg, DELIMITER, MAX_LINK_DATA,
};

/// Line speed; the device sets the same (`device::serial::BAUD`).
pub const BAUD: u32 = 115_200;
/// How long to wait for the device to confirm a new link session.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// `Open` is sent again this often until confirmed (a frame may be lost, or
/// the device's listener may be just starting).
const OPEN_RETRY: Duration = Duration::from_secs(1);
/// Writes wait at most this long for the line (a stuck UART).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Stands in for "no read timeout" (serialport always has one).
const NO_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Bytes read from the line at once.
const READ_CHUNK: usize = 4096;
/// Most TLS bytes framed per `write` call: rustls writes whole records
/// (≤ 16 KiB + 22); a bigger buffer is taken in pieces.
const MAX_WRITE: usize = 17 * MAX_LINK_DATA;

enum Line {
    Port(TTYPort),
    Socket(UnixStream),
}

impl Line {
    fn open(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?;
        if meta.file_type().is_socket() {
            let sock = UnixStream::connect(path)
                .with_context(|| format!("connecting to {}", path.display()))?;
            sock.set_write_timeout(Some(WRITE_TIMEOUT))?;
            return Ok(Self::Socket(sock));
        }
        let name = path.to_string_lossy();
        let port = serialport::new(name.as_ref(), BAUD)
            .data_bits(serialport::DataBits::Eight)
            .parity(serialport::Parity::None)
            .stop_bits(serialport::StopBits::One)
            .flow_control(serialport::FlowControl::None)
            .timeout(OPEN_RETRY)
            .open_native()
            .with_context(|| format!("opening serial port {}", path.display()))?;
        // Whatever was received before we came is not for this session.
        let _ = port.clear(serialport::ClearBuffer::Input);
        Ok(Self::Port(port))
    }

    fn set_timeout(&mut self, timeout: Duration) -> std::io::Result<()> {
        match self {
            Self::Port(p) => p.set_timeout(timeout).map_err(std::io::Error::from),
            Self::Socket(s) => s.set_read_timeout(Some(timeout)),
        }
    }
}

impl Read for Line {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Port(p) => p.read(buf),
            Self::Socket(s) => s.read(buf),
        }
    }
}

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Port(p) => p.write(buf),
            Self::Socket(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Port(p) => p.flush(),
            Self::Socket(s) => s.flush(),
        }
    }
}

/// A TLS byte stream over a serial line, in link frames.
pub struct SerialTransport {
    line: Line,
    decoder: Box<LinkDecoder>,
    /// TLS bytes received and not yet read, from `pos` on.
    inbox: Vec<u8>,
    pos: usize,
    /// The device ended the session (`Close`).
    closed: bool,
    /// Timeout asked for by the TLS client, applied before the next read.
    timeout: Cell<Option<Duration>>,
    /// The timeout the line has now (`None`: not known, set it).
    applied: Option<Option<Duration>>,
}

impl SerialTransport {
    /// Open the line and start a new link session on it.
    pub fn open(path: &Path) -> Result<Self> {
        let mut t = Self {
            line: Line::open(path)?,
            decoder: Box::default(),
            inbox: Vec::new(),
            pos: 0,
            closed: false,
            timeout: Cell::new(None),
            applied: None,
        };
        t.start_session()
            .with_context(|| format!("starting a session on {}", path.display()))?;
        Ok(t)
    }

    /// Send `Open` (again every `OPEN_RETRY`) until the device answers
    /// `Opened` with our nonce; everything before that is an older session's.
    fn start_session(&mut self) -> Result<()> {
        let nonce = random_nonce();
        // A leading delimiter ends any half frame the device has buffered.
        let mut open = vec![DELIMITER];
        open.extend(control_frame(LinkMsg::Open { nonce }));
        self.line.set_timeout(OPEN_RETRY / 4)?;
        let start = Instant::now();
        let mut sent: Option<Instant> = None;
        let mut buf = [0u8; READ_CHUNK];
        while start.elapsed() < OPEN_TIMEOUT {
            if sent.is_none_or(|at| at.elapsed() >= OPEN_RETRY) {
                self.line.write_all(&open).context("sending Open")?;
                self.line.flush()?;
                sent = Some(Instant::now());
            }
            let n = match self.line.read(&mut buf) {
                Ok(0) => bail!("the line closed"),
                Ok(n) => n,
                Err(e) if is_timeout(&e) => continue,
                Err(e) => return Err(e).context("reading the line"),
            };
            let mut input = buf.get(..n).unwrap_or_default();
            loop {
                match self.decoder.feed(input) {
                    Feed::Consumed => break,
                    Feed::Frame { payload, rest } => {
                        input = rest;
                        if LinkMsg::decode(payload) == Ok(LinkMsg::Opened { nonce }) {
                            // What follows in this read belongs to the session.
                            return self.take(rest).map_err(Into::into);
                        }
                    }
                    Feed::TooLong { rest } | Feed::Bad { rest, .. } => input = rest,
                }
            }
        }
        bail!("no answer from the device within {OPEN_TIMEOUT:?} (is `outpost.serial=` set on it, and the line right?)")
    }

    /// Take frames from bytes read off the line.
    fn take(&mut self, mut input: &[u8]) -> std::io::Result<()> {
        if self.pos >= self.inbox.len() {
            self.inbox.clear();
            self.pos = 0;
        }
        while !self.closed {
            match self.decoder.feed(input) {
                Feed::Consumed => break,
                Feed::Frame { payload, rest } => {
                    input = rest;
                    match LinkMsg::decode(payload) {
                        Ok(LinkMsg::Data(bytes)) => self.inbox.extend_from_slice(bytes),
                        Ok(LinkMsg::Close) => self.closed = true,
                        // Not ours (Open/Opened echoes), or a newer kind: ignored.
                        Ok(_) | Err(_) => {}
                    }
                }
                Feed::TooLong { .. } => return Err(damaged("an oversized frame")),
                Feed::Bad { why, .. } => return Err(damaged(&why.to_string())),
            }
        }
        Ok(())
    }
}

fn damaged(why: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("serial link: {why}: bytes were lost, so this TLS session cannot go on; run the command again"),
    )
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    )
}

/// A nonce to tell our `Opened` from a stale one; uniqueness matters, not secrecy.
fn random_nonce() -> u32 {
    let mut b = [0u8; 4];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        b = (t ^ std::process::id()).to_le_bytes();
    }
    u32::from_le_bytes(b)
}

impl Read for SerialTransport {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let ready = self.inbox.get(self.pos..).unwrap_or_default();
            if !ready.is_empty() {
                let n = ready.len().min(buf.len());
                if let (Some(dst), Some(src)) = (buf.get_mut(..n), ready.get(..n)) {
                    dst.copy_from_slice(src);
                }
                self.pos += n;
                return Ok(n);
            }
            if self.closed {
                // After the device's TLS close_notify nobody reads on; a read
                // that gets here lost its session mid-way.
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "serial link: the device ended the session (a damaged frame, \
                     a timeout, or another client opened a session on the line)",
                ));
            }
            let want = self.timeout.get();
            if self.applied != Some(want) {
                self.line.set_timeout(want.unwrap_or(NO_TIMEOUT))?;
                self.applied = Some(want);
            }
            let mut raw = [0u8; READ_CHUNK];
            let n = self.line.read(&mut raw)?;
            if n == 0 {
                return Ok(0); // the socket's other end is gone
            }
            self.take(raw.get(..n).unwrap_or_default())?;
        }
    }
}

impl Write for SerialTransport {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(MAX_WRITE);
        let mut frames = Vec::with_capacity(n + n / 64 + 16);
        encode_data(buf.get(..n).unwrap_or_default(), &mut frames);
        self.line.write_all(&frames)?;
        Ok(n)
    }
    /// rustls hands over every pending TLS record at once: framing them
    /// together saves a frame's overhead (7+ bytes) per record.
    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        let mut joined = Vec::new();
        for buf in bufs {
            let room = MAX_WRITE - joined.len();
            joined.extend_from_slice(buf.get(..room.min(buf.len())).unwrap_or_default());
            if joined.len() == MAX_WRITE {
                break;
            }
        }
        self.write(&joined)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.line.flush()
    }
}

impl Transport for SerialTransport {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        self.timeout.set(timeout);
        Ok(())
    }
}

impl Drop for SerialTransport {
    /// End the link session (the device stops waiting for us at once), and
    /// give up the port's exclusive claim: the tty may stay open elsewhere
    /// (a pty's other end), and the next `outpost --serial` must get in.
    fn drop(&mut self) {
        let _ = self.line.write_all(&control_frame(LinkMsg::Close));
        let _ = self.line.flush();
        if let Line::Port(port) = &mut self.line {
            let _ = port.set_exclusive(false);
        }
    }
}
