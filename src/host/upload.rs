//! Uploads from the CLI: offset-based and keyed by the file's SHA-256, so a
//! cut link costs a reconnect, not a restart.
//!
//! The file is hashed first; `UploadBegin` then tells where the device stands
//! (0, a stored part's length, or complete). Chunks are pipelined: a window
//! of them is in flight so a 100 ms round trip does not throttle the link.
//! On a connection error the client reconnects (the factory reuses its TLS
//! config, so the session is resumed), sends `UploadBegin` again and goes on
//! at the offset the device reports. Failures without progress in between
//! are retried a bounded number of times, with backoff.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};

use super::client::Client;
use crate::wire::{Request, Response, UploadState, WireError, MAX_CHUNK, MAX_IN_FLIGHT};

/// Read size while hashing the file.
const HASH_BUF: usize = 256 * 1024;

/// How an upload behaves on the link.
#[derive(Debug, Clone)]
pub struct UploadOptions {
    /// Payload bytes in flight (sent, not yet answered). It must cover the
    /// link's bandwidth-delay product (1 Mbit/s x 100 ms = 12.5 kB) plus a
    /// chunk; the protocol caps it at `MAX_IN_FLIGHT` chunks.
    pub window: usize,
    /// Consecutive failures without progress before giving up.
    pub max_attempts: u32,
    /// Wait before the second attempt in a row (the first reconnects at
    /// once); doubles each further attempt, up to `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for UploadOptions {
    fn default() -> Self {
        Self {
            window: 64 * 1024,
            max_attempts: 8,
            first_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(8),
        }
    }
}

/// What an upload cost.
#[derive(Debug, Clone, Default)]
pub struct UploadReport {
    pub sha256: [u8; 32],
    pub size: u64,
    /// Chunk payload written to connections, re-sends included.
    pub payload_bytes: u64,
    /// Payload written more than once: after a cut, what was in flight and
    /// not stored by the device. (Part of it never crossed the link: it was
    /// still queued on our side of the cut.)
    pub resent_bytes: u64,
    /// Connections made after the first.
    pub reconnects: u32,
    /// Reconnects that resumed the TLS session (the cheap handshake).
    pub resumed: u32,
    /// The offset the device reported at each `UploadBegin`, in order.
    pub resume_offsets: Vec<u64>,
    /// Why connections failed, in order.
    pub errors: Vec<String>,
    pub elapsed: Duration,
}

impl UploadReport {
    /// The device had the artifact before we sent anything.
    pub fn already_there(&self) -> bool {
        self.resume_offsets.first() == Some(&self.size) && self.payload_bytes == 0
    }

    pub fn sha256_hex(&self) -> String {
        crate::bundle::hex(&self.sha256)
    }
}

/// Upload `path` with the default options. `connect` opens a connection to
/// the device (called again after each failure); `progress` gets (bytes the
/// device has, total).
pub fn upload(
    connect: &mut dyn FnMut() -> Result<Client>,
    path: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<UploadReport> {
    upload_with(connect, path, &UploadOptions::default(), progress)
}

pub fn upload_with(
    connect: &mut dyn FnMut() -> Result<Client>,
    path: &Path,
    opts: &UploadOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<UploadReport> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let size = file
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if size == 0 {
        anyhow::bail!("{} is empty: nothing to upload", path.display());
    }
    let sha256 = sha256_of(&file).with_context(|| format!("hashing {}", path.display()))?;
    let start = Instant::now();
    let mut upload = Upload {
        file,
        window: (opts.window / MAX_CHUNK).clamp(1, MAX_IN_FLIGHT),
        acked: 0,
        high_water: 0,
        connections: 0,
        report: UploadReport {
            sha256,
            size,
            ..UploadReport::default()
        },
    };
    upload.run(connect, opts, progress)?;
    upload.report.elapsed = start.elapsed();
    Ok(upload.report)
}

/// Why a session stopped short of the end.
enum Failure {
    /// The connection failed (cut, reset, timeout): reconnect and resume.
    Link(anyhow::Error),
    /// The device has too many uploads running: ask again later.
    Busy,
    /// The device refused, or the file is unreadable: retrying won't help.
    Fatal(anyhow::Error),
}

/// A chunk sent and not yet answered.
struct InFlight {
    id: u32,
    end: u64,
}

struct Upload {
    file: File,
    /// Chunks in flight at most.
    window: usize,
    /// The highest offset the device confirmed.
    acked: u64,
    /// The end of the highest byte ever written to a connection.
    high_water: u64,
    /// Connections made so far.
    connections: u32,
    report: UploadReport,
}

impl Upload {
    /// Sessions until the artifact is complete, reconnecting after failures.
    fn run(
        &mut self,
        connect: &mut dyn FnMut() -> Result<Client>,
        opts: &UploadOptions,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<()> {
        let mut client: Option<Client> = None;
        let mut failures = 0u32;
        loop {
            let before = self.acked;
            let result = match self.connected(&mut client, connect) {
                Ok(c) => self.session(c, progress),
                Err(e) => Err(Failure::Link(e)),
            };
            let error = match result {
                Ok(()) => return Ok(()),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Busy) => anyhow!("device busy with other uploads"),
                Err(Failure::Link(e)) => {
                    // The connection may be half dead: never reuse it.
                    client = None;
                    e
                }
            };
            if self.acked > before {
                failures = 0;
            }
            failures += 1;
            self.report.errors.push(format!("{error:#}"));
            if failures >= opts.max_attempts {
                return Err(error.context(format!(
                    "upload stopped at {} of {} bytes after {failures} attempts without progress",
                    self.acked, self.report.size
                )));
            }
            std::thread::sleep(backoff(opts, failures));
        }
    }

    /// The open connection, or a new one.
    fn connected<'c>(
        &mut self,
        client: &'c mut Option<Client>,
        connect: &mut dyn FnMut() -> Result<Client>,
    ) -> Result<&'c mut Client> {
        if client.is_none() {
            let fresh = connect()?;
            if self.connections > 0 {
                self.report.reconnects += 1;
                if fresh.resumed() {
                    self.report.resumed += 1;
                }
            }
            self.connections += 1;
            *client = Some(fresh);
        }
        client
            .as_mut()
            .ok_or_else(|| anyhow!("no connection to the device"))
    }

    /// One connection's worth: ask where the device stands, then stream.
    fn session(
        &mut self,
        client: &mut Client,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(), Failure> {
        let begin = Request::UploadBegin {
            sha256: self.report.sha256,
            size: self.report.size,
        };
        let id = client.send(begin).map_err(Failure::Link)?;
        let state = loop {
            let resp = client.receive().map_err(Failure::Link)?;
            // Answers to chunks of an earlier session on this connection are stale.
            if resp.id == id || resp.id == 0 {
                break upload_state(resp.body)?;
            }
        };
        if state.size != self.report.size {
            return Err(Failure::Fatal(anyhow!(
                "device answered for an artifact of {} bytes, not {}",
                state.size,
                self.report.size
            )));
        }
        self.report.resume_offsets.push(state.offset);
        self.progressed(state.offset, progress);
        if state.complete {
            return Ok(());
        }
        self.stream(client, state, progress)
    }

    /// Keep `window` chunks in flight until the device reports completion.
    fn stream(
        &mut self,
        client: &mut Client,
        state: UploadState,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(), Failure> {
        let size = self.report.size;
        let mut next = state.offset;
        let mut in_flight = VecDeque::with_capacity(self.window);
        let mut buf = vec![0u8; MAX_CHUNK];
        loop {
            while in_flight.len() < self.window && next < size {
                let sent = self.send_chunk(client, state.handle, next, &mut buf)?;
                next = sent.end;
                in_flight.push_back(sent);
            }
            if in_flight.is_empty() {
                return Err(Failure::Fatal(anyhow!(
                    "device stopped at {next} of {size} bytes without completing"
                )));
            }
            let resp = client.receive().map_err(Failure::Link)?;
            if resp.id == 0 {
                return Err(Failure::Fatal(anyhow!("device could not decode a chunk")));
            }
            let Some(pos) = in_flight.iter().position(|s| s.id == resp.id) else {
                continue; // an answer from an earlier session on this connection
            };
            let expected = in_flight.remove(pos).map_or(0, |s| s.end);
            let st = upload_state(resp.body)?;
            self.progressed(st.offset, progress);
            if st.complete {
                return Ok(());
            }
            if st.offset != expected {
                // The device is elsewhere (another client sent chunks, or a
                // chunk of a cut connection landed late): let the answers in
                // flight settle and go on from where it is.
                let latest = self.drain(client, &mut in_flight, st, progress)?;
                if latest.complete {
                    return Ok(());
                }
                next = latest.offset;
            }
        }
    }

    /// Read one chunk at `offset` from the file and send it.
    fn send_chunk(
        &mut self,
        client: &mut Client,
        handle: u16,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<InFlight, Failure> {
        let left = self.report.size - offset;
        let len = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        let data = buf.get_mut(..len).unwrap_or_default();
        self.file
            .read_exact_at(data, offset)
            .map_err(|e| Failure::Fatal(anyhow!(e).context("reading the file")))?;
        let id = client
            .send(Request::UploadChunk {
                handle,
                offset,
                data,
            })
            .map_err(Failure::Link)?;
        let end = offset + len as u64;
        self.report.payload_bytes += len as u64;
        self.report.resent_bytes += self.high_water.saturating_sub(offset).min(len as u64);
        self.high_water = self.high_water.max(end);
        Ok(InFlight { id, end })
    }

    /// Collect the answers still in flight; the device's latest state.
    fn drain(
        &mut self,
        client: &mut Client,
        in_flight: &mut VecDeque<InFlight>,
        mut latest: UploadState,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<UploadState, Failure> {
        while !in_flight.is_empty() {
            let resp = client.receive().map_err(Failure::Link)?;
            let Some(pos) = in_flight.iter().position(|s| s.id == resp.id) else {
                continue;
            };
            in_flight.remove(pos);
            let st = upload_state(resp.body)?;
            self.progressed(st.offset, progress);
            if st.complete || st.offset > latest.offset {
                latest = st;
            }
        }
        Ok(latest)
    }

    fn progressed(&mut self, offset: u64, progress: &mut dyn FnMut(u64, u64)) {
        self.acked = self.acked.max(offset);
        progress(self.acked, self.report.size);
    }
}

fn upload_state(body: Result<Response, WireError>) -> Result<UploadState, Failure> {
    match body {
        Ok(Response::Upload(st)) => Ok(st),
        Ok(other) => Err(Failure::Fatal(anyhow!(
            "unexpected answer to an upload request: {other:?}"
        ))),
        Err(WireError::Busy) => Err(Failure::Busy),
        Err(e) => Err(Failure::Fatal(anyhow!("device refused the upload: {e}"))),
    }
}

/// No wait before the first retry (a cut is usually a one-off), then
/// exponential.
fn backoff(opts: &UploadOptions, failures: u32) -> Duration {
    if failures <= 1 {
        return Duration::ZERO;
    }
    let factor = 1u32 << (failures - 2).min(16);
    opts.first_backoff
        .saturating_mul(factor)
        .min(opts.max_backoff)
}

/// SHA-256 of the whole file, read in `HASH_BUF` pieces.
pub(crate) fn sha256_of(mut file: &File) -> std::io::Result<[u8; 32]> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; HASH_BUF];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        ctx.update(buf.get(..n).unwrap_or_default());
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_at_zero_then_doubles_up_to_the_cap() {
        let opts = UploadOptions::default();
        let waits: Vec<u64> = (1..=8)
            .map(|f| backoff(&opts, f).as_millis() as u64)
            .collect();
        assert_eq!(waits, vec![0, 250, 500, 1000, 2000, 4000, 8000, 8000]);
        assert_eq!(backoff(&opts, u32::MAX), opts.max_backoff);
    }

    #[test]
    fn empty_and_missing_files_fail_before_connecting() {
        let tmp = tempfile::tempdir().unwrap();
        let empty = tmp.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        let mut connect = || -> Result<Client> { panic!("must not connect") };
        let err = upload(&mut connect, &empty, &mut |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err:#}");
        let err = upload(&mut connect, &tmp.path().join("nope"), &mut |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("opening"), "{err:#}");
    }

    #[test]
    fn gives_up_after_bounded_attempts() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        std::fs::write(&file, b"data").unwrap();
        let mut tries = 0;
        let mut connect = || -> Result<Client> {
            tries += 1;
            Err(anyhow!("connection refused"))
        };
        let opts = UploadOptions {
            max_attempts: 3,
            first_backoff: Duration::from_millis(1),
            ..UploadOptions::default()
        };
        let err = upload_with(&mut connect, &file, &opts, &mut |_, _| {}).unwrap_err();
        assert!(format!("{err:#}").contains("after 3 attempts"), "{err:#}");
        assert_eq!(tries, 3);
    }

    #[test]
    fn hashes_files_larger_than_the_buffer() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        let data: Vec<u8> = (0..HASH_BUF * 2 + 3).map(|i| i as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let got = sha256_of(&File::open(&path).unwrap()).unwrap();
        assert_eq!(
            &got[..],
            ring::digest::digest(&ring::digest::SHA256, &data).as_ref()
        );
    }
}
