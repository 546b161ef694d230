//! A blocking API client: TLS 1.3 with the operator's certificate, one request
//! at a time over a persistent connection.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::context::{Context, Node};
use crate::wire::{
    encode_frame, FeedResult, FrameDecoder, Request, RequestFrame, Response, ResponseFrame,
    MAX_REQUEST_FRAME, MAX_RESPONSE_FRAME,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// With several endpoints, each gets this long for TCP and the TLS
/// handshake before the next is tried: behind a NAT or QEMU's slirp a dead
/// path still accepts TCP and then never answers.
pub const ENDPOINT_ATTEMPT: Duration = Duration::from_secs(3);

pub struct Client {
    link: Link,
    next_id: u32,
}

/// How requests reach the device.
enum Link {
    /// A TLS session with the device itself (TCP or serial).
    Direct(Box<Direct>),
    /// Signed commands through an MQTT broker (the device calls home).
    Broker(Box<super::broker::DeviceLink>),
}

struct Direct {
    stream: StreamOwned<ClientConnection, Box<dyn Transport>>,
    decoder: Box<FrameDecoder<MAX_RESPONSE_FRAME>>,
    /// Bytes read past the end of the last frame.
    pending: Vec<u8>,
}

/// A byte stream the TLS session runs over.
pub trait Transport: Read + Write + Send {
    /// Reads give up after `timeout` (WouldBlock/TimedOut); `None` waits forever.
    fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()>;
}

impl Transport for TcpStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }
}

/// A quiet stream sends a `Ping` this often (below the device's idle
/// timeout and the ~4 min after which LTE carriers drop idle flows).
const KEEPALIVE: Duration = Duration::from_secs(60);

/// TLS client config from PEM files: trust the site CA (and its revocation
/// list beside it, `trust::SiteTrust`), present our certificate.
pub fn client_config(
    ca: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<ClientConfig>> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups = vec![rustls::crypto::ring::kx_group::X25519];
    let provider = Arc::new(provider);
    let trust = super::trust::SiteTrust::load(ca)?;
    let mut roots = RootCertStore::empty();
    for ca in trust.roots {
        roots.add(ca)?;
    }
    // A board (or broker) whose certificate the site revoked is refused; a
    // broker certificate of another CA in the file is not the list's business.
    let mut verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    );
    if let Some(crl) = trust.crl {
        verifier = verifier
            .with_crls([crl])
            .only_check_end_entity_revocation()
            .allow_unknown_revocation_status();
    }
    let verifier = verifier.build()?;
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading key {}", key.display()))?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(chain, key)?;
    Ok(Arc::new(config))
}

impl Client {
    pub fn connect(ctx: &Context, node: &Node) -> Result<Self> {
        let config = client_config(&ctx.ca, &ctx.cert, &ctx.key)?;
        Self::connect_with(config, node)
    }

    /// Connect over TCP to `node` and finish the TLS handshake. A node
    /// reachable over several links lists several endpoints in `address`,
    /// comma-separated ("10.1.0.5:50000,192.0.2.7:50000"): they are tried
    /// in order, each for at most [`ENDPOINT_ATTEMPT`]. With the same
    /// `config`, the TLS session is resumed whichever endpoint answers.
    pub fn connect_with(config: Arc<ClientConfig>, node: &Node) -> Result<Self> {
        let endpoints = endpoints(&node.address);
        let [single] = endpoints.as_slice() else {
            let config = two_tickets(config);
            let mut failures = Vec::new();
            for endpoint in &endpoints {
                match Self::connect_endpoint(
                    config.clone(),
                    endpoint,
                    &node.server_name,
                    ENDPOINT_ATTEMPT,
                ) {
                    Ok(client) => return Ok(client),
                    Err(e) => failures.push(format!("{endpoint}: {e:#}")),
                }
            }
            bail!("no endpoint answered ({})", failures.join("; "));
        };
        Self::connect_endpoint(config, single, &node.server_name, CONNECT_TIMEOUT)
    }

    /// One endpoint, TCP and TLS within `attempt`.
    pub fn connect_endpoint(
        config: Arc<ClientConfig>,
        endpoint: &str,
        server_name: &str,
        attempt: Duration,
    ) -> Result<Self> {
        let addr = endpoint
            .to_socket_addrs()
            .with_context(|| format!("resolving {endpoint}"))?
            .next()
            .ok_or_else(|| anyhow!("{endpoint} resolves to no address"))?;
        let tcp = TcpStream::connect_timeout(&addr, attempt)
            .with_context(|| format!("connecting to {addr}"))?;
        tcp.set_write_timeout(Some(IO_TIMEOUT))?;
        tcp.set_nodelay(true)?;
        Self::over_within(config, server_name, Box::new(tcp), attempt.min(IO_TIMEOUT))
            .with_context(|| format!("TLS session with {endpoint}"))
    }

    /// Run the TLS session over any transport (TCP, a serial line, a test pipe).
    /// With the same `config`, a reconnect resumes the earlier TLS session.
    pub fn over(
        config: Arc<ClientConfig>,
        server_name: &str,
        transport: Box<dyn Transport>,
    ) -> Result<Self> {
        Self::over_within(config, server_name, transport, IO_TIMEOUT)
    }

    /// [`Client::over`] with the handshake's reads bounded by `handshake`.
    fn over_within(
        config: Arc<ClientConfig>,
        server_name: &str,
        transport: Box<dyn Transport>,
        handshake: Duration,
    ) -> Result<Self> {
        transport.set_read_timeout(Some(handshake))?;
        let name = ServerName::try_from(server_name.to_owned())
            .with_context(|| format!("bad server name {server_name}"))?;
        let conn = ClientConnection::new(config, name)?;
        let mut stream = StreamOwned::new(conn, transport);
        // Finish the handshake now so certificate errors surface here.
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .context("TLS handshake")?;
        }
        stream.sock.set_read_timeout(Some(IO_TIMEOUT))?;
        Ok(Self {
            link: Link::Direct(Box::new(Direct {
                stream,
                decoder: Box::default(),
                pending: Vec::new(),
            })),
            next_id: 1,
        })
    }

    /// Requests through a broker to a device that calls home.
    pub fn via_broker(link: super::broker::DeviceLink) -> Self {
        Self {
            link: Link::Broker(Box::new(link)),
            next_id: 1,
        }
    }

    /// Whether this session was resumed from an earlier one (a cheaper handshake).
    pub fn resumed(&self) -> bool {
        match &self.link {
            Link::Direct(d) => matches!(
                d.stream.conn.handshake_kind(),
                Some(rustls::HandshakeKind::Resumed)
            ),
            Link::Broker(_) => false,
        }
    }

    /// Send one request and wait for its answer.
    pub fn call(&mut self, body: Request<'_>) -> Result<Response> {
        let id = self.send(body)?;
        loop {
            let resp = self.receive()?;
            if resp.id == id || resp.id == 0 {
                return answer(resp);
            }
            // An answer to an earlier, abandoned request: skip it.
        }
    }

    /// Send several requests at once, then collect their answers (which may
    /// come in any order), in the order of `bodies`.
    pub fn pipeline(&mut self, bodies: Vec<Request<'_>>) -> Result<Vec<Result<Response>>> {
        let mut ids = Vec::with_capacity(bodies.len());
        for body in bodies {
            ids.push(self.send(body)?);
        }
        let mut answers: Vec<Option<Result<Response>>> = ids.iter().map(|_| None).collect();
        while answers.iter().any(Option::is_none) {
            let resp = self.receive()?;
            if resp.id == 0 {
                return Err(anyhow!("device could not decode a pipelined request"));
            }
            if let Some(i) = ids.iter().position(|&id| id == resp.id) {
                answers[i] = Some(answer(resp));
            }
        }
        Ok(answers.into_iter().flatten().collect())
    }

    /// Run a streaming request: `each` gets every answer until the device
    /// ends the stream or `each` returns false (then the stream is cancelled).
    /// While the stream is quiet, a `Ping` every `KEEPALIVE` keeps the
    /// connection (and any NAT on the way) alive.
    pub fn stream(
        &mut self,
        body: Request<'_>,
        mut each: impl FnMut(Response) -> bool,
    ) -> Result<()> {
        if let Link::Broker(_) = &self.link {
            return self.stream_via_broker(body, each);
        }
        let id = self.send(body)?;
        self.set_read_timeout(KEEPALIVE)?;
        let result = loop {
            let resp = match self.receive() {
                Ok(r) => r,
                Err(e) if is_timeout(&e) => {
                    self.send(Request::Ping)?;
                    continue;
                }
                Err(e) => break Err(e),
            };
            if resp.id != id {
                continue; // Pong, or answers to earlier requests
            }
            match answer(resp)? {
                Response::End => break Ok(()),
                r => {
                    if !each(r) {
                        self.send(Request::Cancel { id })?;
                        break Ok(());
                    }
                }
            }
        };
        self.set_read_timeout(IO_TIMEOUT)?;
        result
    }

    /// `stream` through a broker: the device keeps the stream on a lease
    /// that each of our commands renews, so a quiet stream pings every
    /// `KEEPALIVE` (src/device/callhome/follow.rs); `Cancel` ends it.
    fn stream_via_broker(
        &mut self,
        body: Request<'_>,
        mut each: impl FnMut(Response) -> bool,
    ) -> Result<()> {
        let mut frame = |body| {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1).max(1);
            (id, RequestFrame { id, body }.encode())
        };
        let (id, request) = frame(body);
        let (_, ping) = frame(Request::Ping);
        let (_, cancel) = frame(Request::Cancel { id });
        let Link::Broker(b) = &mut self.link else {
            bail!("not a broker link");
        };
        b.send_stream_request(&request)?;
        // Renew the lease every KEEPALIVE however busy the stream is: the
        // device counts our commands, not its answers.
        let mut sent = std::time::Instant::now();
        loop {
            if sent.elapsed() >= KEEPALIVE {
                b.send_request(&ping)?;
                sent = std::time::Instant::now();
            }
            let Some(resp) = b.receive_until(sent + KEEPALIVE)? else {
                continue;
            };
            if resp.id != id {
                continue; // a Pong
            }
            match answer(resp)? {
                Response::End => return Ok(()),
                r => {
                    if !each(r) {
                        b.send_request(&cancel)?;
                        return Ok(());
                    }
                }
            }
        }
    }

    fn set_read_timeout(&mut self, timeout: Duration) -> Result<()> {
        if let Link::Direct(d) = &mut self.link {
            d.stream.sock.set_read_timeout(Some(timeout))?;
        }
        Ok(())
    }

    /// Frame and send one request; returns its id.
    pub fn send(&mut self, body: Request<'_>) -> Result<u32> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let request = RequestFrame { id, body }.encode();
        match &mut self.link {
            Link::Direct(d) => {
                let frame = encode_frame(&request, MAX_REQUEST_FRAME)?;
                d.stream.write_all(&frame).context("sending request")?;
                d.stream.flush()?;
            }
            Link::Broker(b) => {
                b.send_request(&request)?;
            }
        }
        Ok(id)
    }

    /// The next response frame from the device.
    pub fn receive(&mut self) -> Result<ResponseFrame> {
        match &mut self.link {
            Link::Direct(d) => d.receive(),
            Link::Broker(b) => b.receive(),
        }
    }
}

impl Direct {
    fn receive(&mut self) -> Result<ResponseFrame> {
        loop {
            if !self.pending.is_empty() {
                let input = std::mem::take(&mut self.pending);
                if let Some(resp) = self.feed(&input)? {
                    return Ok(resp);
                }
                continue;
            }
            let mut buf = [0u8; 8192];
            let n = self.stream.read(&mut buf).context("reading response")?;
            if n == 0 {
                bail!("device closed the connection");
            }
            if let Some(resp) = self.feed(&buf[..n])? {
                return Ok(resp);
            }
        }
    }

    fn feed(&mut self, input: &[u8]) -> Result<Option<ResponseFrame>> {
        match self.decoder.feed(input) {
            FeedResult::Consumed => Ok(None),
            FeedResult::Error(e) => bail!("bad response frame: {e}"),
            FeedResult::Frame { payload, rest } => {
                let resp = ResponseFrame::decode(payload)?;
                self.pending = rest.to_vec();
                Ok(Some(resp))
            }
        }
    }
}

/// `config` asking the device for two session tickets per handshake
/// (RFC 9149): an attempt on a dead endpoint uses up the ticket it offers
/// (TLS 1.3 tickets are single-use), and the second one resumes on the
/// endpoint that answers. The copy shares `config`'s session store.
fn two_tickets(config: Arc<ClientConfig>) -> Arc<ClientConfig> {
    if config.send_ticket_request.is_some() {
        return config;
    }
    let mut c = (*config).clone();
    c.send_ticket_request = Some(rustls::client::TicketRequest {
        new_session_count: 2,
        resumption_count: 2,
    });
    Arc::new(c)
}

/// The endpoints of a node address: "a:1,b:2" → ["a:1", "b:2"].
pub fn endpoints(address: &str) -> Vec<&str> {
    address
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect()
}

fn answer(resp: ResponseFrame) -> Result<Response> {
    let what = if resp.id == 0 {
        "the request".to_owned()
    } else {
        format!("request {}", resp.id)
    };
    resp.body.map_err(|e| anyhow!("device refused {what}: {e}"))
}

fn is_timeout(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            )
        })
    })
}

impl Drop for Direct {
    /// Say goodbye properly so the device logs a clean close, not an EOF error.
    fn drop(&mut self) {
        self.stream.conn.send_close_notify();
        let _ = self.stream.conn.complete_io(&mut self.stream.sock);
    }
}
