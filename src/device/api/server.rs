//! Accepts TLS connections and serves framed requests. Each connection is its
//! own task; a connection that misbehaves (bad frame, slow handshake, panic in
//! a handler) is closed and the others carry on.

use std::net::{SocketAddr, TcpListener};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_rustls::TlsAcceptor;
use smol::future::FutureExt as _;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::{Async, Executor, Timer};

use super::auth;
use super::handlers::{handle, ApiContext};
use crate::wire::{
    encode_frame, FeedResult, FrameDecoder, RequestFrame, ResponseFrame, Role, WireError,
    MAX_REQUEST_FRAME, MAX_RESPONSE_FRAME,
};

/// Connections served at once; more are closed at accept. A board has few
/// operators, and each connection holds TLS state (~40 KiB).
pub const MAX_CONNECTIONS: usize = 16;
/// A client must finish the TLS handshake within this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);
/// A connection with no request for this long is closed (the CLI reconnects
/// with TLS resumption; LTE carriers drop idle flows after ~4-5 min anyway).
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
enum ConnError {
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
}

/// Serve forever. Accept errors (e.g. EMFILE) are logged and retried.
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
        live.fetch_add(1, Ordering::Relaxed);
        let (acceptor, ctx, live) = (acceptor.clone(), ctx.clone(), live.clone());
        ex.spawn(async move {
            // A panic anywhere in this connection ends this connection only.
            let result = AssertUnwindSafe(connection(stream, peer, acceptor, ctx))
                .catch_unwind()
                .await;
            match result {
                Ok(Ok(())) => tracing::debug!("api: {peer} closed"),
                Ok(Err(e)) => tracing::info!("api: {peer}: {e}"),
                Err(_) => tracing::error!("api: {peer}: connection task panicked; closed it"),
            }
            live.fetch_sub(1, Ordering::Relaxed);
        })
        .detach();
    }
}

async fn connection(
    stream: Async<std::net::TcpStream>,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    ctx: Arc<ApiContext>,
) -> Result<(), ConnError> {
    let _ = stream.get_ref().set_nodelay(true);
    let handshake = async { acceptor.accept(stream).await.map_err(ConnError::Handshake) };
    let timeout = async {
        Timer::after(HANDSHAKE_TIMEOUT).await;
        Err(ConnError::HandshakeTimeout)
    };
    let mut tls = handshake.or(timeout).await?;
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec());
    // rustls already required a client certificate; no role in it = no access.
    let role = auth::role_of(cert.as_deref().unwrap_or_default())?;
    tracing::debug!("api: {peer} authenticated as {}", role.name());

    let mut decoder: Box<FrameDecoder<MAX_REQUEST_FRAME>> = Box::default();
    let mut buf = [0u8; 4096];
    loop {
        let read = async { tls.read(&mut buf).await.map_err(ConnError::Io) };
        let idle = async {
            Timer::after(IDLE_TIMEOUT).await;
            Err(ConnError::Idle(IDLE_TIMEOUT))
        };
        let n = match read.or(idle).await {
            // A peer that hangs up without close_notify is common (killed CLI, cut link).
            Err(ConnError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            other => other?,
        };
        if n == 0 {
            return Ok(());
        }
        let mut input = &buf[..n];
        loop {
            let (reply, rest) = match decoder.feed(input) {
                FeedResult::Consumed => break,
                FeedResult::Error(e) => return Err(e.into()),
                FeedResult::Frame { payload, rest } => (respond(&ctx, role, payload), rest),
            };
            tls.write_all(&reply).await?;
            tls.flush().await?;
            if rest.is_empty() {
                break;
            }
            input = rest;
        }
    }
}

/// Decode one request frame and produce the framed response bytes.
fn respond(ctx: &ApiContext, role: Role, payload: &[u8]) -> Vec<u8> {
    let response = match RequestFrame::decode(payload) {
        // Id 0 answers a request we could not read far enough to know its id.
        Err(e) => {
            tracing::info!("api: {e}");
            ResponseFrame {
                id: 0,
                body: Err(WireError::DecodeFailed),
            }
        }
        Ok(req) => {
            let body = std::panic::catch_unwind(AssertUnwindSafe(|| handle(ctx, role, &req.body)))
                .unwrap_or_else(|_| {
                    tracing::error!("api: handler for {} panicked", req.body.name());
                    Err(WireError::Device("internal error".into()))
                });
            ResponseFrame { id: req.id, body }
        }
    };
    encode_frame(&response.encode(), MAX_RESPONSE_FRAME).unwrap_or_else(|e| {
        tracing::error!("api: response too large: {e}");
        let fallback = ResponseFrame {
            id: response.id,
            body: Err(WireError::Device("response too large".into())),
        };
        encode_frame(&fallback.encode(), MAX_RESPONSE_FRAME).unwrap_or_default()
    })
}
