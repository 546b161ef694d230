//! The management API over a serial line (`outpost.serial=/dev/ttyS0`): the
//! same TLS sessions as on TCP, carried in link frames (`wire::serial`).
//!
//! One task owns the line. It reads link frames and starts a session when a
//! client sends `Open`, feeds `Data` to it, and ends it on `Close`, on a
//! damaged frame (the TLS stream lost bytes, so the session cannot go on), or
//! when a new `Open` arrives (a client that died mid-session never wedges the
//! line). One writer task sends every frame; frames of a session that has
//! ended are dropped, so a new session never sees the old one's bytes.
//! If the line itself fails (unplugged USB adapter, I/O error), it is opened
//! again after a pause — forever; PID 1 never gives up on it.
//!
//! The tty is used through `smol::Async` (epoll), not blocking reads on a
//! thread: tty drivers support poll, so one non-blocking fd serves reads and
//! writes at once, a session can be dropped at any point, and reopening the
//! line leaves no thread stuck in `read`.

use std::fs::File;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_rustls::TlsAcceptor;
use rustix::termios::{self, ControlModes, OptionalActions, QueueSelector, SpecialCodeIndex};
use smol::channel::{Receiver, Sender, TrySendError};
use smol::future::FutureExt as _;
use smol::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use smol::stream::Stream;
use smol::{Async, Executor, Task, Timer};

use super::api::{server, tls, ApiContext};
use crate::wire::serial::{control_frame, encode_data, Feed, LinkDecoder, LinkMsg, MAX_LINK_DATA};

/// Line speed. 115 200 baud 8N1 moves ~11.5 KB/s: a full TLS handshake
/// takes about a quarter of a second.
pub const BAUD: u32 = 115_200;
/// Wait before opening the line again after it failed (or was missing).
const REOPEN_PAUSE: Duration = Duration::from_secs(2);
/// Encoded writes queued for the writer (each at most `MAX_WRITE` bytes); a full
/// queue makes the session wait, as a full TCP send buffer would.
const OUT_QUEUE: usize = 16;
/// Pieces of TLS stream (each at most `MAX_LINK_DATA`) queued for a session.
const IN_QUEUE: usize = 16;
/// A session that takes none of its input for this long is ended (it is
/// stuck; the line must stay usable for the next client).
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes read from the tty at once (a few link frames).
const READ_CHUNK: usize = 2048;
/// Most TLS bytes one write turns into frames (one writer-queue item): four
/// link frames, so the queue holds at most `OUT_QUEUE` × ~4 KiB.
const MAX_WRITE: usize = 4 * MAX_LINK_DATA;

#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    #[error("opening {path}: {source}")]
    Open {
        path: PathBuf,
        source: rustix::io::Errno,
    },
    #[error("{0} is not a terminal")]
    NotATty(PathBuf),
    #[error("setting up the terminal: {0}")]
    Termios(rustix::io::Errno),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("the line was hung up")]
    HungUp,
    #[error("the writer stopped")]
    WriterGone,
}

/// Serve the API on the serial line at `path`, in the background, with the
/// device identity on DATA. Fails only if the TLS identity is unusable.
pub fn start(
    ex: &Arc<Executor<'static>>,
    data: &Path,
    path: PathBuf,
    ctx: Arc<ApiContext>,
) -> Result<(), String> {
    let identity = tls::Identity::in_data_dir(data);
    let config = tls::server_config(&identity, ctx.time.clone(), ctx.revocations.clone())
        .map_err(|e| format!("serial API TLS: {e}"))?;
    let acceptor = TlsAcceptor::from(config);
    ex.spawn(serve(ex.clone(), path, acceptor, ctx)).detach();
    Ok(())
}

/// Serve forever: open the line, run sessions on it, reopen it if it fails.
/// A panic (a bug) ends the current line run only.
pub async fn serve(
    ex: Arc<Executor<'static>>,
    path: PathBuf,
    acceptor: TlsAcceptor,
    ctx: Arc<ApiContext>,
) {
    let mut failures: u32 = 0;
    loop {
        match open(&path) {
            Ok(line) => {
                failures = 0;
                tracing::info!("serial API on {} ({BAUD} baud)", path.display());
                let run = run_line(&ex, Arc::new(line), &path, &acceptor, &ctx);
                match AssertUnwindSafe(run).catch_unwind().await {
                    Ok(e) => tracing::warn!("serial API on {}: {e}", path.display()),
                    Err(_) => tracing::error!("serial API on {}: panicked", path.display()),
                }
            }
            // Said once; a line that is missing at boot may appear later
            // (a USB adapter), so keep looking, quietly.
            Err(e) if failures == 0 => {
                failures = 1;
                tracing::warn!("serial API: {e}; retrying every {REOPEN_PAUSE:?}");
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::debug!("serial API: {e}");
            }
        }
        Timer::after(REOPEN_PAUSE).await;
    }
}

/// Open the tty non-blocking and put it in raw mode, 8N1, no flow control.
fn open(path: &Path) -> Result<Async<File>, SerialError> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        OFlags::RDWR | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|source| SerialError::Open {
        path: path.into(),
        source,
    })?;
    if !termios::isatty(&fd) {
        return Err(SerialError::NotATty(path.into()));
    }
    let mut t = termios::tcgetattr(&fd).map_err(SerialError::Termios)?;
    t.make_raw();
    t.control_modes |= ControlModes::CLOCAL | ControlModes::CREAD;
    t.control_modes -= ControlModes::CSTOPB | ControlModes::CRTSCTS;
    t.special_codes[SpecialCodeIndex::VMIN] = 1;
    t.special_codes[SpecialCodeIndex::VTIME] = 0;
    t.set_speed(BAUD).map_err(SerialError::Termios)?;
    termios::tcsetattr(&fd, OptionalActions::Now, &t).map_err(SerialError::Termios)?;
    // Whatever arrived before raw mode was set is noise.
    let _ = termios::tcflush(&fd, QueueSelector::IFlush);
    Ok(Async::new(File::from(fd))?)
}

/// An encoded frame for the writer, tagged with the session it belongs to.
type Outgoing = (u64, Vec<u8>);

/// Run sessions on an open line until the line fails.
async fn run_line(
    ex: &Arc<Executor<'static>>,
    line: Arc<Async<File>>,
    path: &Path,
    acceptor: &TlsAcceptor,
    ctx: &Arc<ApiContext>,
) -> SerialError {
    let current = Arc::new(AtomicU64::new(0));
    let (out, queue) = smol::channel::bounded::<Outgoing>(OUT_QUEUE);
    let writer = write_loop(line.clone(), queue, current.clone());
    let mut link = Link {
        ex: ex.clone(),
        peer: format!("serial {}", path.display()),
        acceptor: acceptor.clone(),
        ctx: ctx.clone(),
        out,
        current,
        next_gen: 1,
        active: None,
    };
    let reader = async move { link.read_loop(&line).await };
    // Whichever stops first ends the line; dropping `link` ends its session.
    reader.or(writer).await
}

async fn write_loop(
    line: Arc<Async<File>>,
    queue: Receiver<Outgoing>,
    current: Arc<AtomicU64>,
) -> SerialError {
    let mut tty = &*line;
    while let Ok((gen, frame)) = queue.recv().await {
        if gen != current.load(Ordering::Acquire) {
            continue; // a session that has ended: its bytes would confuse the next
        }
        if let Err(e) = tty.write_all(&frame).await {
            return e.into();
        }
    }
    SerialError::WriterGone
}

/// The running session: its input and its task (dropping it cancels it).
struct Active {
    input: Sender<Vec<u8>>,
    task: Task<()>,
}

struct Link {
    ex: Arc<Executor<'static>>,
    peer: String,
    acceptor: TlsAcceptor,
    ctx: Arc<ApiContext>,
    out: Sender<Outgoing>,
    /// Generation of the current (or last) session; the writer drops frames
    /// of any other.
    current: Arc<AtomicU64>,
    next_gen: u64,
    active: Option<Active>,
}

impl Link {
    async fn read_loop(&mut self, line: &Async<File>) -> SerialError {
        let mut tty = line;
        let mut decoder: Box<LinkDecoder> = Box::default();
        let mut buf = [0u8; READ_CHUNK];
        loop {
            let n = match tty.read(&mut buf).await {
                Ok(0) => return SerialError::HungUp,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return e.into(),
            };
            let mut input = buf.get(..n).unwrap_or_default();
            loop {
                // Copy what a frame says out of the decoder before awaiting.
                let (event, rest) = match decoder.feed(input) {
                    Feed::Consumed => break,
                    Feed::Frame { payload, rest } => (Event::from_payload(payload), rest),
                    Feed::TooLong { rest } => (Event::Damaged("frame too long".into()), rest),
                    Feed::Bad { why, rest } => (Event::Damaged(why.to_string()), rest),
                };
                self.on_event(event).await;
                input = rest;
            }
        }
    }

    async fn on_event(&mut self, event: Event) {
        match event {
            Event::Open(nonce) => self.open_session(nonce).await,
            Event::Data(bytes) => self.feed_session(bytes).await,
            Event::Close => {
                if self.active.take().is_some() {
                    tracing::debug!("api: {}: client closed the link session", self.peer);
                }
            }
            Event::Damaged(why) => {
                if self.session_running() {
                    tracing::info!(
                        "api: {}: damaged link frame ({why}); session ended",
                        self.peer
                    );
                    self.end_session().await;
                } else {
                    tracing::debug!("api: {}: damaged link frame ({why})", self.peer);
                }
            }
            Event::Ignored(what) => tracing::debug!("api: {}: ignored {what}", self.peer),
        }
    }

    fn session_running(&self) -> bool {
        self.active.as_ref().is_some_and(|a| !a.task.is_finished())
    }

    /// Start a new session (ending any running one) and confirm it.
    async fn open_session(&mut self, nonce: u32) {
        if self.session_running() {
            tracing::info!(
                "api: {}: new link session replaces the running one",
                self.peer
            );
        }
        self.active = None;
        let gen = self.next_generation();
        // Queued before any TLS byte of the session, so it arrives first.
        self.send(gen, control_frame(LinkMsg::Opened { nonce }))
            .await;
        let (input, incoming) = smol::channel::bounded(IN_QUEUE);
        let stream = LinkStream {
            incoming: Box::pin(incoming),
            chunk: Vec::new(),
            pos: 0,
            out: self.out.clone(),
            gen,
            sending: None,
        };
        let (ex, peer, acceptor, ctx, out) = (
            self.ex.clone(),
            self.peer.clone(),
            self.acceptor.clone(),
            self.ctx.clone(),
            self.out.clone(),
        );
        let task = self.ex.spawn(async move {
            server::serve_stream(ex, stream, peer, acceptor, ctx).await;
            // Tell the client at once rather than let it wait for a timeout.
            let _ = out.send((gen, control_frame(LinkMsg::Close))).await;
        });
        self.active = Some(Active { input, task });
    }

    /// Hand a piece of the TLS stream to the running session; without one,
    /// tell the sender that there is no session.
    async fn feed_session(&mut self, bytes: Vec<u8>) {
        let Some(active) = self.active.as_ref().filter(|a| !a.task.is_finished()) else {
            self.active = None;
            let gen = self.current.load(Ordering::Acquire);
            self.send(gen, control_frame(LinkMsg::Close)).await;
            return;
        };
        let input = active.input.clone();
        let sent = async { input.send(bytes).await.is_ok() };
        let stalled = async {
            Timer::after(STALL_TIMEOUT).await;
            false
        };
        if !sent.or(stalled).await {
            tracing::info!("api: {}: session stopped taking input; ended", self.peer);
            self.end_session().await;
        }
    }

    /// End the running session and tell the client. What the session still
    /// had queued is dropped (a new generation): it is of no use to anyone.
    async fn end_session(&mut self) {
        self.active = None;
        let gen = self.next_generation();
        self.send(gen, control_frame(LinkMsg::Close)).await;
    }

    fn next_generation(&mut self) -> u64 {
        let gen = self.next_gen;
        self.next_gen = self.next_gen.wrapping_add(1);
        self.current.store(gen, Ordering::Release);
        gen
    }

    async fn send(&self, gen: u64, frame: Vec<u8>) {
        // Fails only if the writer has stopped; the line is ending then.
        let _ = self.out.send((gen, frame)).await;
    }
}

/// A decoded link frame, owned (so the decoder is free again).
enum Event {
    Open(u32),
    Data(Vec<u8>),
    Close,
    Damaged(String),
    Ignored(String),
}

impl Event {
    fn from_payload(payload: &[u8]) -> Self {
        match LinkMsg::decode(payload) {
            Ok(LinkMsg::Open { nonce }) => Self::Open(nonce),
            Ok(LinkMsg::Data(bytes)) => Self::Data(bytes.to_vec()),
            Ok(LinkMsg::Close) => Self::Close,
            // Our own kind of message coming back: an echoing line.
            Ok(LinkMsg::Opened { .. }) => Self::Ignored("an Opened message".into()),
            // A newer peer's message kind: ignored, as the spec says.
            Err(e) => Self::Ignored(e.to_string()),
        }
    }
}

/// One session's byte stream: reads come from the line task, writes go to the
/// writer as `Data` frames. What `serve_stream` runs TLS over.
struct LinkStream {
    /// Boxed: a channel receiver is not `Unpin`, `serve_stream` needs it to be.
    incoming: Pin<Box<Receiver<Vec<u8>>>>,
    chunk: Vec<u8>,
    pos: usize,
    out: Sender<Outgoing>,
    gen: u64,
    /// A frame the writer queue had no room for yet.
    sending: Option<Pin<Box<dyn Future<Output = bool> + Send>>>,
}

impl LinkStream {
    /// Drive a queued send to its end.
    fn poll_sending(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let Some(sending) = self.sending.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        match sending.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(ok) => {
                self.sending = None;
                if ok {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Ready(Err(gone()))
                }
            }
        }
    }
}

fn gone() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::BrokenPipe, "serial line closed")
}

impl AsyncRead for LinkStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        loop {
            let this = &mut *self;
            let ready = this.chunk.get(this.pos..).unwrap_or_default();
            if !ready.is_empty() {
                let n = ready.len().min(buf.len());
                if let (Some(dst), Some(src)) = (buf.get_mut(..n), ready.get(..n)) {
                    dst.copy_from_slice(src);
                }
                this.pos += n;
                return Poll::Ready(Ok(n));
            }
            match this.incoming.as_mut().poll_next(cx) {
                Poll::Ready(Some(chunk)) => {
                    this.chunk = chunk;
                    this.pos = 0;
                }
                // The line task ended this session: end of stream.
                Poll::Ready(None) => return Poll::Ready(Ok(0)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl LinkStream {
    /// Queue `bytes` (all of them; callers cap them) as `Data` frames.
    fn queue(&mut self, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<std::io::Result<usize>> {
        // One item waiting for room at a time: the writer queue is the limit.
        if self.poll_sending(cx)?.is_pending() {
            return Poll::Pending;
        }
        let mut frames = Vec::with_capacity(bytes.len() + bytes.len() / 64 + 16);
        encode_data(bytes, &mut frames);
        match self.out.try_send((self.gen, frames)) {
            Ok(()) => {}
            Err(TrySendError::Closed(_)) => return Poll::Ready(Err(gone())),
            Err(TrySendError::Full(item)) => {
                // Take the bytes now; the next write or flush waits for room.
                let out = self.out.clone();
                self.sending = Some(Box::pin(async move { out.send(item).await.is_ok() }));
                let _ = self.poll_sending(cx)?;
            }
        }
        Poll::Ready(Ok(bytes.len()))
    }
}

impl AsyncWrite for LinkStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let n = buf.len().min(MAX_WRITE);
        self.queue(cx, buf.get(..n).unwrap_or_default())
    }

    /// rustls hands over every pending TLS record at once: joining them into
    /// shared frames saves a frame's overhead (7+ bytes) per record — ~40
    /// bytes of a full handshake.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let mut joined = Vec::new();
        for buf in bufs {
            let room = MAX_WRITE - joined.len();
            joined.extend_from_slice(buf.get(..room.min(buf.len())).unwrap_or_default());
            if joined.len() == MAX_WRITE {
                break;
            }
        }
        self.queue(cx, &joined)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_sending(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_sending(cx)
    }
}
