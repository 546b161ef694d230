//! Serves the API. `serve` accepts TCP connections; `serve_stream` runs one
//! TLS session over any byte stream (TCP, or the serial line's transport).
//! A session reads frames, answers each request as it is decoded, and runs
//! streams (`Logs { follow }`) as tasks, so answers can come out of order;
//! one writer task owns the write half. A connection that misbehaves (bad
//! frame, slow handshake, panic in a handler) is closed; others carry on.

use std::collections::HashMap;
use std::net::TcpListener;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_rustls::TlsAcceptor;
use smol::channel::{Receiver, Sender};
use smol::future::FutureExt as _;
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use smol::{Async, Executor, Task, Timer};

use super::auth;
use super::handlers::{
    handle_blocking, handle_guarded, log_ring, log_tail, runs_blocking, service_log_tail,
    ApiContext,
};
use crate::device::log::LogRing;
use crate::wire::{
    encode_frame, FeedResult, FrameDecoder, Request, RequestFrame, Response, ResponseFrame, Role,
    WireError, MAX_REQUEST_FRAME, MAX_RESPONSE_FRAME,
};

/// Connections served at once; more are closed at accept. A board has few
/// operators, and each connection holds TLS state (~40 KiB).
pub const MAX_CONNECTIONS: usize = 16;
/// Streams (`logs --follow`) one connection may run at once.
pub const MAX_STREAMS: usize = 4;
/// A client must finish the TLS handshake within this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);
/// A connection with no request for this long is closed. Clients send `Ping`
/// well within it (the CLI every 60 s while following logs); LTE carriers
/// drop idle flows after ~4-5 min anyway.
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// TCP keepalive probes start after this much silence (below the ~4 min
/// after which carriers drop idle flows).
const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(120);
/// A log follower looks for new lines this often; lines that arrive in
/// between go out in one frame (fewer bytes on a metered link).
const FOLLOW_INTERVAL: Duration = Duration::from_millis(500);
/// Lines a follower sends at most per tick (one frame's worth); the rest
/// follows next tick.
pub const FOLLOW_BATCH: usize = 100;
/// Answers queued for the writer; a full queue slows the reader down.
const OUTBOX: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("TLS handshake: {0}")]
    Handshake(std::io::Error),
    #[error("TLS handshake timed out")]
    HandshakeTimeout,
    #[error("idle for {0:?}")]
    Idle(Duration),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad frame: {0}")]
    Frame(#[from] crate::wire::FrameError),
    #[error("{0}")]
    Auth(#[from] auth::AuthError),
    #[error("client certificate revoked; connection closed")]
    Revoked,
}

/// Serve TCP forever. Accept errors (e.g. EMFILE) are logged and retried.
pub async fn serve(
    ex: Arc<Executor<'static>>,
    listener: Async<TcpListener>,
    acceptor: TlsAcceptor,
    ctx: Arc<ApiContext>,
) {
    let live = Arc::new(AtomicUsize::new(0));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!("api accept failed: {e}");
                Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        if live.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            tracing::warn!("api: refusing {peer}: {MAX_CONNECTIONS} connections already open");
            continue;
        }
        tune_socket(stream.get_ref());
        live.fetch_add(1, Ordering::Relaxed);
        let (acceptor, ctx, live, ex2) = (acceptor.clone(), ctx.clone(), live.clone(), ex.clone());
        ex.spawn(async move {
            serve_stream(ex2, stream, peer.to_string(), acceptor, ctx).await;
            live.fetch_sub(1, Ordering::Relaxed);
        })
        .detach();
    }
}

fn tune_socket(stream: &std::net::TcpStream) {
    let _ = stream.set_nodelay(true);
    let _ = rustix::net::sockopt::set_socket_keepalive(stream, true);
    let _ = rustix::net::sockopt::set_tcp_keepidle(stream, TCP_KEEPALIVE_IDLE);
    let _ = rustix::net::sockopt::set_tcp_keepintvl(stream, Duration::from_secs(30));
    let _ = rustix::net::sockopt::set_tcp_keepcnt(stream, 4);
}

/// One TLS session over `io`; returns when it ends. A panic anywhere in it
/// ends this session only.
pub async fn serve_stream<IO>(
    ex: Arc<Executor<'static>>,
    io: IO,
    peer: String,
    acceptor: TlsAcceptor,
    ctx: Arc<ApiContext>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let result = AssertUnwindSafe(session(ex, io, &peer, acceptor, ctx))
        .catch_unwind()
        .await;
    match result {
        Ok(Ok(())) => tracing::debug!("api: {peer} closed"),
        Ok(Err(e)) => tracing::info!("api: {peer}: {e}"),
        Err(_) => tracing::error!("api: {peer}: session panicked; closed it"),
    }
}

async fn session<IO>(
    ex: Arc<Executor<'static>>,
    io: IO,
    peer: &str,
    acceptor: TlsAcceptor,
    ctx: Arc<ApiContext>,
) -> Result<(), ConnError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handshake = async { acceptor.accept(io).await.map_err(ConnError::Handshake) };
    let timeout = async {
        Timer::after(HANDSHAKE_TIMEOUT).await;
        Err(ConnError::HandshakeTimeout)
    };
    let tls = handshake.or(timeout).await?;
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec());
    // rustls already required a client certificate; no role in it = no access.
    let role = auth::role_of(cert.as_deref().unwrap_or_default())?;
    tracing::debug!("api: {peer} authenticated as {}", role.name());

    let (mut reader, writer) = smol::io::split(tls);
    let (outbox, queue) = smol::channel::bounded::<Vec<u8>>(OUTBOX);
    let writer = ex.spawn(write_loop(writer, queue));
    let mut session = Session {
        ex,
        ctx,
        role,
        outbox,
        streams: HashMap::new(),
    };

    // A revocation list installed while this connection is open ends it at
    // once if it names this client (a stream would otherwise go on).
    let revocations = session.ctx.revocations.clone();
    let mut list_seen = revocations.generation();

    let mut decoder: Box<FrameDecoder<MAX_REQUEST_FRAME>> = Box::default();
    let mut buf = [0u8; 4096];
    let result = loop {
        let changed = revocations.changed();
        let list_now = revocations.generation();
        if list_now != list_seen {
            list_seen = list_now;
            if revocations.revokes(cert.as_deref().unwrap_or_default()) {
                break Err(ConnError::Revoked);
            }
        }
        let read = async { reader.read(&mut buf).await.map(Some).map_err(ConnError::Io) };
        let idle = async {
            Timer::after(IDLE_TIMEOUT).await;
            Err(ConnError::Idle(IDLE_TIMEOUT))
        };
        let listed = async {
            changed.await;
            Ok(None)
        };
        let n = match read.or(idle).or(listed).await {
            // A peer that hangs up without close_notify is common (killed CLI, cut link).
            Err(ConnError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break Ok(()),
            Err(e) => break Err(e),
            // A new list: checked at the top.
            Ok(None) => continue,
            Ok(Some(0)) => break Ok(()),
            Ok(Some(n)) => n,
        };
        let mut input = &buf[..n];
        let mut failed = None;
        loop {
            match decoder.feed(input) {
                FeedResult::Consumed => break,
                FeedResult::Error(e) => {
                    failed = Some(e);
                    break;
                }
                FeedResult::Frame { payload, rest } => {
                    session.on_frame(payload).await;
                    if rest.is_empty() {
                        break;
                    }
                    input = rest;
                }
            }
        }
        if let Some(e) = failed {
            break Err(e.into());
        }
        // Even when the write half has failed (the peer reset), keep handling
        // what still arrives until the read side ends: a received upload chunk
        // is stored whether or not its answer can be delivered.
    };
    // Streams end with the session; the writer drains what is queued.
    session.streams.clear();
    drop(session);
    let _ = writer.await;
    result
}

struct Session {
    ex: Arc<Executor<'static>>,
    ctx: Arc<ApiContext>,
    role: Role,
    outbox: Sender<Vec<u8>>,
    /// Running streams by request id; dropping a task cancels it.
    streams: HashMap<u32, Task<()>>,
}

impl Session {
    async fn on_frame(&mut self, payload: &[u8]) {
        let req = match RequestFrame::decode(payload) {
            Ok(req) => req,
            // Id 0 answers a request we could not read far enough to know its id.
            Err(e) => {
                tracing::info!("api: {e}");
                return self.send(0, Err(WireError::DecodeFailed)).await;
            }
        };
        let id = req.id;
        match req.body {
            Request::Logs {
                service,
                lines,
                follow: true,
            } if self.role >= req.body.required_role() => {
                self.streams.retain(|_, task| !task.is_finished());
                if self.streams.len() >= MAX_STREAMS || self.streams.contains_key(&id) {
                    return self.send(id, Err(WireError::Busy)).await;
                }
                // The ring to follow; its position before the tail is taken,
                // so no line falls between the tail and what follows.
                let ring = match log_ring(&self.ctx, service) {
                    Ok(ring) => ring,
                    Err(e) => return self.send(id, Err(e)).await,
                };
                let (_, seq) = ring.tail_with_seq(0);
                let first = match service {
                    None => log_tail(&self.ctx, lines),
                    Some(name) => match service_log_tail(&self.ctx, name, lines) {
                        Ok(first) => first,
                        Err(e) => return self.send(id, Err(e)).await,
                    },
                };
                let task = self
                    .ex
                    .spawn(follow_logs(ring, seq, first, self.outbox.clone(), id));
                self.streams.insert(id, task);
            }
            Request::Cancel { id: target } => match self.streams.remove(&target) {
                Some(task) => {
                    drop(task);
                    self.send(target, Ok(Response::End)).await;
                    self.send(id, Ok(Response::Accepted)).await;
                }
                None => {
                    self.send(
                        id,
                        Err(WireError::Invalid(format!(
                            "no stream {target} on this connection"
                        ))),
                    )
                    .await
                }
            },
            body if runs_blocking(&body) => {
                let answer = handle_blocking(self.ctx.clone(), self.role, payload.to_vec()).await;
                self.send(id, answer).await;
            }
            body => {
                let answer = handle_guarded(&self.ctx, self.role, &body);
                self.send(id, answer).await;
            }
        }
    }

    async fn send(&self, id: u32, body: Result<Response, WireError>) {
        let _ = self.outbox.send(frame(id, body)).await;
    }
}

/// Encode a response frame; an answer too large for a frame becomes an error.
fn frame(id: u32, body: Result<Response, WireError>) -> Vec<u8> {
    let response = ResponseFrame { id, body };
    encode_frame(&response.encode(), MAX_RESPONSE_FRAME).unwrap_or_else(|e| {
        tracing::error!("api: response too large: {e}");
        let fallback = ResponseFrame {
            id,
            body: Err(WireError::Device("response too large".into())),
        };
        encode_frame(&fallback.encode(), MAX_RESPONSE_FRAME).unwrap_or_default()
    })
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: W,
    queue: Receiver<Vec<u8>>,
) -> std::io::Result<()> {
    while let Ok(bytes) = queue.recv().await {
        writer.write_all(&bytes).await?;
        // Batch what is already queued into the same flush (fewer TLS records).
        while let Ok(more) = queue.try_recv() {
            writer.write_all(&more).await?;
        }
        writer.flush().await?;
    }
    writer.close().await
}

/// `logs --follow`: the tail now, then new lines of `ring` as they come,
/// until cancelled.
async fn follow_logs(
    ring: LogRing,
    mut seq: u64,
    first: Vec<crate::wire::LogLine>,
    outbox: Sender<Vec<u8>>,
    id: u32,
) {
    if outbox
        .send(frame(id, Ok(Response::Logs(first))))
        .await
        .is_err()
    {
        return;
    }
    loop {
        Timer::after(FOLLOW_INTERVAL).await;
        let (new, next) = ring.since(seq, FOLLOW_BATCH);
        seq = next;
        if !new.is_empty()
            && outbox
                .send(frame(id, Ok(Response::Logs(new))))
                .await
                .is_err()
        {
            return;
        }
    }
}
