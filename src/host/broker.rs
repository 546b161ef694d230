//! The CLI's way to boards that call home: a blocking MQTT 3.1.1 client over
//! TLS (the operator's certificate, the broker's checked against the site
//! CA), the operator's command signatures, and the check of the device's
//! answer signatures. `Client` uses [`DeviceLink`] in place of a direct
//! connection, so every device command works the same through a broker.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use super::trust::SiteTrust;
use crate::mqtt::{self, Connect, Packet, Publish, QoS};
use crate::wire::envelope::{
    self, topic, Body, CertRef, Command, DeviceMessage, DeviceSays, SignedByDevice, SignedCommand,
    Target, COMMAND_CONTEXT, DEVICE_CONTEXT, MAX_DEVICE_PAYLOAD,
};
use crate::wire::seal::{self, OneUseKey, StreamKey};
use crate::wire::{Response, ResponseFrame, MAX_RESPONSE_FRAME};

/// The CLI pings the broker after this much silence of its own.
const KEEPALIVE_SECS: u16 = 60;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the broker may take to answer CONNECT or SUBSCRIBE.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest packet accepted from the broker: a signed device message and its
/// topic (retained certificates are far smaller).
const MAX_INBOUND: usize = MAX_DEVICE_PAYLOAD + mqtt::MAX_TOPIC + 16;
/// How long a command stays valid when the CLI is not told otherwise: a
/// board that is away longer does not run it on return.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(300);

/// `mqtts://HOST:PORT`, `HOST:PORT` or `HOST` (port 8883).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub host: String,
    pub port: u16,
}

impl BrokerUrl {
    pub fn parse(url: &str) -> Result<Self> {
        let rest = url.strip_prefix("mqtts://").unwrap_or(url);
        if rest.contains("://") {
            bail!("broker `{url}`: only mqtts:// (MQTT over TLS) is supported");
        }
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse()
                    .with_context(|| format!("broker `{url}`: bad port `{p}`"))?,
            ),
            None => (rest, crate::config::callhome::MQTTS_PORT),
        };
        if host.is_empty() {
            bail!("broker `{url}` names no host");
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

/// One MQTT session with the broker.
pub struct BrokerLink {
    stream: StreamOwned<ClientConnection, TcpStream>,
    buf: Vec<u8>,
    next_pid: u16,
    last_tx: Instant,
    /// MQTT bytes written and read (inside TLS).
    pub counted: (u64, u64),
}

impl BrokerLink {
    /// Connect, then subscribe to `filters` with `qos` and wait for the
    /// SUBACK; a filter the broker refuses is an error naming it. (QoS 0
    /// for a fan-out: the broker then sends without an in-flight window or
    /// a per-client queue, which a thousand retained certificates and
    /// answers would overflow — mosquitto drops past 1,000 queued.)
    pub fn connect(
        url: &BrokerUrl,
        tls: Arc<ClientConfig>,
        client_id: &str,
        filters: &[String],
        qos: QoS,
    ) -> Result<Self> {
        let addr = (url.host.as_str(), url.port)
            .to_socket_addrs()
            .with_context(|| format!("resolving {}", url.host))?
            .next()
            .ok_or_else(|| anyhow!("{} resolves to no address", url.host))?;
        let tcp = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            .with_context(|| format!("connecting to broker {addr}"))?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from(url.host.clone())
            .with_context(|| format!("bad broker name {}", url.host))?;
        let conn = ClientConnection::new(tls, name)?;
        let mut link = Self {
            stream: StreamOwned::new(conn, tcp),
            buf: Vec::new(),
            next_pid: 0,
            last_tx: Instant::now(),
            counted: (0, 0),
        };
        link.send(&Packet::Connect(Connect {
            client_id,
            keepalive: KEEPALIVE_SECS,
            clean_session: true,
            will: None,
        }))
        .context("TLS session with the broker")?;
        match link.next_packet(Instant::now() + ANSWER_TIMEOUT)? {
            Some(Owned::Connack(0)) => {}
            Some(Owned::Connack(code)) => bail!(
                "broker refused the connection (CONNACK {code}: {})",
                connack_text(code)
            ),
            _ => bail!("broker sent no CONNACK"),
        }
        if !filters.is_empty() {
            let pid = link.pid();
            let topics: Vec<(&str, QoS)> = filters.iter().map(|f| (f.as_str(), qos)).collect();
            link.send(&Packet::Subscribe {
                pid,
                topics: &topics,
            })?;
            let deadline = Instant::now() + ANSWER_TIMEOUT;
            loop {
                match link.next_packet(deadline)? {
                    Some(Owned::Suback(codes)) => {
                        for (f, c) in filters.iter().zip(&codes) {
                            if *c == 0x80 {
                                bail!("broker refused the subscription to {f} (ACL)");
                            }
                        }
                        break;
                    }
                    Some(_) => continue,
                    None => bail!("broker sent no SUBACK"),
                }
            }
        }
        Ok(link)
    }

    /// Publish with QoS 1 (the broker acknowledges; we do not wait for it).
    pub fn publish(&mut self, topic: &str, payload: &[u8], retain: bool) -> Result<()> {
        let pid = self.pid();
        self.send(&Packet::Publish(Publish {
            topic,
            qos: QoS::AtLeastOnce,
            pid,
            retain,
            dup: false,
            payload,
        }))
    }

    /// The next message published to us, or `None` at `deadline`.
    pub fn next_message(&mut self, deadline: Instant) -> Result<Option<(String, Vec<u8>)>> {
        loop {
            match self.next_packet(deadline)? {
                None => return Ok(None),
                Some(Owned::Publish(topic, payload)) => return Ok(Some((topic, payload))),
                Some(_) => continue,
            }
        }
    }

    fn pid(&mut self) -> u16 {
        self.next_pid = self.next_pid.wrapping_add(1).max(1);
        self.next_pid
    }

    fn send(&mut self, packet: &Packet<'_>) -> Result<()> {
        let mut out = Vec::new();
        mqtt::encode(packet, &mut out)?;
        self.stream
            .write_all(&out)
            .context("writing to the broker")?;
        self.stream.flush()?;
        self.last_tx = Instant::now();
        self.counted.0 += out.len() as u64;
        Ok(())
    }

    /// The next packet (PUBLISHes acknowledged, pings answered), or `None`
    /// at `deadline`.
    fn next_packet(&mut self, deadline: Instant) -> Result<Option<Owned>> {
        loop {
            if let Some((packet, used)) = mqtt::decode(&self.buf, MAX_INBOUND)? {
                let owned = match packet {
                    Packet::Publish(p) => {
                        let ack = (p.qos == QoS::AtLeastOnce).then_some(p.pid);
                        let owned = Owned::Publish(p.topic.to_owned(), p.payload.to_vec());
                        self.buf.drain(..used);
                        if let Some(pid) = ack {
                            self.send(&Packet::Puback { pid })?;
                        }
                        return Ok(Some(owned));
                    }
                    Packet::Connack { code, .. } => Owned::Connack(code),
                    Packet::Suback { codes, .. } => Owned::Suback(codes.to_vec()),
                    _ => Owned::Other,
                };
                self.buf.drain(..used);
                return Ok(Some(owned));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let ping_at = self.last_tx + Duration::from_secs(u64::from(KEEPALIVE_SECS) / 2);
            if now >= ping_at {
                self.send(&Packet::Pingreq)?;
                continue;
            }
            let wait = deadline.min(ping_at) - now;
            self.stream
                .sock
                .set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) => bail!("broker closed the connection"),
                Ok(n) => {
                    self.counted.1 += n as u64;
                    self.buf
                        .extend_from_slice(chunk.get(..n).unwrap_or_default());
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e).context("reading from the broker"),
            }
        }
    }
}

impl Drop for BrokerLink {
    fn drop(&mut self) {
        let _ = self.send(&Packet::Disconnect);
        self.stream.conn.send_close_notify();
        let _ = self.stream.conn.complete_io(&mut self.stream.sock);
    }
}

enum Owned {
    Connack(u8),
    Suback(Vec<u8>),
    Publish(String, Vec<u8>),
    Other,
}

fn connack_text(code: u8) -> &'static str {
    match code {
        1 => "protocol version",
        2 => "client id refused",
        3 => "broker unavailable",
        4 => "bad user name or password",
        5 => "not authorized",
        _ => "unknown",
    }
}

/// The operator: certificate and key that sign commands.
pub struct Operator {
    cert: Vec<u8>,
    key: ring::signature::Ed25519KeyPair,
    last_seq: u64,
}

impl Operator {
    pub fn load(cert: &std::path::Path, key: &std::path::Path) -> Result<Self> {
        let cert = CertificateDer::pem_file_iter(cert)
            .with_context(|| format!("reading {}", cert.display()))?
            .next()
            .ok_or_else(|| anyhow!("{} holds no certificate", cert.display()))??
            .to_vec();
        let der = rustls::pki_types::PrivatePkcs8KeyDer::from_pem_file(key)
            .map_err(|e| anyhow!("reading {}: {e:?}", key.display()))?;
        let key = ring::signature::Ed25519KeyPair::from_pkcs8(der.secret_pkcs8_der())
            .map_err(|_| anyhow!("{} is not an Ed25519 key", key.display()))?;
        Ok(Self {
            cert,
            key,
            last_seq: 0,
        })
    }

    /// Sign `request` (one `RequestFrame`) for `target` on `topic`, valid
    /// until `expires` (Unix seconds). The sequence number is the clock in
    /// microseconds, kept strictly increasing, so no state file is needed.
    pub fn sign(
        &mut self,
        target: Target<'_>,
        topic: &str,
        expires: u64,
        request: &[u8],
    ) -> (u64, Vec<u8>) {
        self.sign_as(target, topic, expires, Body::Plain(request), true)
    }

    /// As `sign`; `whole`: carry the certificate itself, else only its id
    /// (for a device that has seen it this boot).
    pub fn sign_as(
        &mut self,
        target: Target<'_>,
        topic: &str,
        expires: u64,
        request: Body<'_>,
        whole: bool,
    ) -> (u64, Vec<u8>) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let seq = now.max(self.last_seq + 1);
        self.last_seq = seq;
        let command = envelope::encode(&Command {
            target,
            topic,
            seq,
            expires,
            request,
        });
        let sig = self
            .key
            .sign(&envelope::signing_input(COMMAND_CONTEXT, &command));
        let cert = if whole {
            CertRef::Full(&self.cert)
        } else {
            CertRef::Known(envelope::cert_id(&self.cert))
        };
        let signed = envelope::encode(&SignedCommand {
            cert,
            command: &command,
            sig: sig.as_ref(),
        });
        (seq, signed)
    }
}

/// Unix seconds `after` from now.
pub fn expires_in(after: Duration) -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_add(after)
        .as_secs()
}

/// Open a device message signed by the key of `cert` (already checked).
pub fn open_device_message<'a>(payload: &'a [u8], cert: &[u8]) -> Result<DeviceSays<'a>> {
    let signed: SignedByDevice = envelope::decode(payload)?;
    let der = CertificateDer::from(cert);
    let ee = webpki::EndEntityCert::try_from(&der).map_err(|e| anyhow!("{e:?}"))?;
    ee.verify_signature(
        webpki::ring::ED25519,
        &envelope::signing_input(DEVICE_CONTEXT, signed.says),
        signed.sig,
    )
    .map_err(|_| anyhow!("device signature does not verify"))?;
    Ok(envelope::decode(signed.says)?)
}

/// A random client id: two CLIs of one operator must not take over each
/// other's session.
pub fn client_id(prefix: &str) -> String {
    let mut b = [0u8; 6];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    format!("{prefix}-{}", crate::bundle::hex(&b))
}

struct Waiting {
    seq: u64,
    /// One `RequestFrame`.
    request: Vec<u8>,
    /// A stream (`logs --follow`): answers keep coming until `End`.
    stream: bool,
}

/// How long a sealing CLI waits for the device's retained seal key (it
/// comes right after the SUBACK when the device has ever published one).
const SEAL_KEY_WAIT: Duration = Duration::from_secs(10);

/// A seal key from `/seal`, once the device's certificate vouches for it.
pub fn open_seal_key(payload: &[u8], cert: &[u8], device: &str) -> Result<[u8; seal::KEY_LEN]> {
    match open_device_message(payload, cert)? {
        DeviceSays {
            device: d,
            message: DeviceMessage::SealKey { public },
        } if d == device => Ok(public),
        _ => bail!("not {device}'s seal key"),
    }
}

/// `request` sealed to `device_key`: the body to sign, the key that opens
/// its answer and the key of a stream of answers (`logs --follow`).
pub fn seal_request<'a>(
    device_key: &[u8; seal::KEY_LEN],
    request: &[u8],
    ciphertext: &'a mut Vec<u8>,
) -> Result<(Body<'a>, OneUseKey, StreamKey)> {
    let (ephemeral, keys) = seal::agree_ephemeral(device_key)?;
    *ciphertext = keys.request.seal(request)?;
    Ok((
        Body::Sealed {
            ephemeral,
            ciphertext,
        },
        keys.answer,
        keys.stream,
    ))
}

/// A sealed answer's response frame.
pub fn open_answer(key: &OneUseKey, ciphertext: &[u8]) -> Result<ResponseFrame> {
    let frame = key
        .open(ciphertext, MAX_RESPONSE_FRAME)
        .context("sealed answer")?;
    Ok(ResponseFrame::decode(&frame)?)
}

/// Requests to one device through the broker, answers back, signatures
/// checked both ways.
pub struct DeviceLink {
    link: BrokerLink,
    device: String,
    operator: Operator,
    trust: SiteTrust,
    device_cert: Option<Vec<u8>>,
    /// Commands sent and not yet answered (sent again whole if the device
    /// does not know our certificate).
    waiting: Vec<Waiting>,
    /// The device has our certificate: later commands carry only its id.
    cert_sent: bool,
    /// Seal every command to the device's seal key (`--seal`).
    seal: bool,
    /// The signed `SealKey` as last published (checked once the
    /// certificate is in), and the key it carries.
    seal_msg: Option<Vec<u8>>,
    seal_key: Option<[u8; seal::KEY_LEN]>,
    /// Answer keys of sealed commands in `waiting`, by seq.
    answer_keys: Vec<(u64, OneUseKey)>,
    /// Sealed streams in `waiting`: seq, key, the last message number taken
    /// (a copy sent again after a reconnect has one already taken).
    stream_keys: Vec<(u64, StreamKey, u32)>,
    expiry: Duration,
    timeout: Duration,
}

impl DeviceLink {
    pub fn connect(
        url: &BrokerUrl,
        tls: Arc<ClientConfig>,
        ca: &std::path::Path,
        operator: Operator,
        device: &str,
        expiry: Duration,
    ) -> Result<Self> {
        let filters = vec![
            topic::cert(device),
            topic::seal(device),
            topic::resp(device),
            topic::events(device),
        ];
        let link = BrokerLink::connect(
            url,
            tls,
            &client_id("outpost-cli"),
            &filters,
            QoS::AtLeastOnce,
        )?;
        Ok(Self {
            link,
            device: device.to_owned(),
            operator,
            trust: SiteTrust::load(ca)?,
            device_cert: None,
            waiting: Vec::new(),
            cert_sent: false,
            seal: false,
            seal_msg: None,
            seal_key: None,
            answer_keys: Vec::new(),
            stream_keys: Vec::new(),
            expiry,
            timeout: Duration::from_secs(30),
        })
    }

    /// How long `receive` waits for an answer.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Sign and publish one request frame.
    pub fn send_request(&mut self, request: &[u8]) -> Result<u64> {
        let whole = !self.cert_sent;
        self.cert_sent = true;
        self.publish_request(request, whole, false)
    }

    /// As `send_request`, for a request answered by a stream that ends
    /// with `End` (`logs --follow`).
    pub fn send_stream_request(&mut self, request: &[u8]) -> Result<u64> {
        let whole = !self.cert_sent;
        self.cert_sent = true;
        self.publish_request(request, whole, true)
    }

    /// Seal every command from now on (the device's seal key is fetched
    /// before the first one).
    pub fn set_seal(&mut self, on: bool) {
        self.seal = on;
    }

    fn publish_request(&mut self, request: &[u8], whole: bool, stream: bool) -> Result<u64> {
        let req_topic = topic::req(&self.device);
        let mut ciphertext = Vec::new();
        let (body, keys) = if self.seal {
            let key = self.device_seal_key()?;
            let (body, first, stream) = seal_request(&key, request, &mut ciphertext)?;
            (body, Some((first, stream)))
        } else {
            (Body::Plain(request), None)
        };
        let (seq, signed) = self.operator.sign_as(
            Target::Device(&self.device),
            &req_topic,
            expires_in(self.expiry),
            body,
            whole,
        );
        if let Some((first, stream_key)) = keys {
            self.answer_keys.push((seq, first));
            if stream {
                self.stream_keys.push((seq, stream_key, 0));
            }
        }
        self.link.publish(&req_topic, &signed, false)?;
        self.waiting.push(Waiting {
            seq,
            request: request.to_vec(),
            stream,
        });
        Ok(seq)
    }

    /// The next answer to one of our commands.
    pub fn receive(&mut self) -> Result<ResponseFrame> {
        match self.receive_until(Instant::now() + self.timeout)? {
            Some(frame) => Ok(frame),
            None => bail!(
                "{}: no answer through the broker within {} s (is it calling home?)",
                self.device,
                self.timeout.as_secs()
            ),
        }
    }

    /// The next answer to one of our commands, or `None` at `deadline`.
    pub fn receive_until(&mut self, deadline: Instant) -> Result<Option<ResponseFrame>> {
        loop {
            let Some((on, payload)) = self.link.next_message(deadline)? else {
                return Ok(None);
            };
            let Some(payload) = self.key_message(&on, payload) else {
                continue;
            };
            let Some(cert) = &self.device_cert else {
                continue; // nothing can be checked before the certificate
            };
            let says = match open_device_message(&payload, cert) {
                Ok(says) if says.device == self.device => says,
                Ok(_) | Err(_) => {
                    eprintln!("warning: ignoring an unsigned or foreign message on {on}");
                    continue;
                }
            };
            let Some(at) = self.waiting.iter().position(|w| {
                matches!(says.message, DeviceMessage::Answer { seq, .. }
                    | DeviceMessage::SealedAnswer { seq, .. }
                    | DeviceMessage::SealedStream { seq, .. }
                    | DeviceMessage::Refused { seq, .. } if seq == w.seq)
            }) else {
                continue; // answers to other CLIs, duplicates, events
            };
            let seq = self.waiting[at].seq;
            match says.message {
                DeviceMessage::Answer { response, .. } => {
                    let sealed = self.answer_keys.iter().any(|(s, _)| *s == seq)
                        || self.stream_keys.iter().any(|(s, _, _)| *s == seq);
                    if sealed {
                        eprintln!("warning: ignoring a plain answer to a sealed command");
                        continue;
                    }
                    let frame = ResponseFrame::decode(response)?;
                    self.answered(at, &frame);
                    return Ok(Some(frame));
                }
                DeviceMessage::SealedAnswer { ciphertext, .. } => {
                    let Some(i) = self.answer_keys.iter().position(|(s, _)| *s == seq) else {
                        continue;
                    };
                    let (_, key) = self.answer_keys.remove(i);
                    let frame = open_answer(&key, ciphertext)
                        .with_context(|| format!("{}: answer to seq {seq}", self.device))?;
                    self.answered(at, &frame);
                    return Ok(Some(frame));
                }
                DeviceMessage::SealedStream { n, ciphertext, .. } => {
                    let Some(i) = self.stream_keys.iter().position(|(s, _, _)| *s == seq) else {
                        continue;
                    };
                    let (_, key, last) = &mut self.stream_keys[i];
                    if n <= *last {
                        continue; // a copy of one already taken
                    }
                    *last = n;
                    let frame = key
                        .open(n, ciphertext, MAX_RESPONSE_FRAME)
                        .context("sealed stream message")
                        .and_then(|f| Ok(ResponseFrame::decode(&f)?))
                        .with_context(|| format!("{}: answer to seq {seq}", self.device))?;
                    self.answered(at, &frame);
                    return Ok(Some(frame));
                }
                DeviceMessage::Refused { reason, .. } => {
                    if reason == envelope::UNKNOWN_CERT {
                        // The device rebooted (or never saw it): send whole.
                        let w = self.waiting.remove(at);
                        self.answer_keys.retain(|(s, _)| *s != seq);
                        self.stream_keys.retain(|(s, _, _)| *s != seq);
                        self.publish_request(&w.request, true, w.stream)?;
                        continue;
                    }
                    bail!("{} refused the command: {reason}", self.device)
                }
                _ => continue,
            }
        }
    }

    /// MQTT bytes sent and received so far (inside TLS).
    pub fn counted(&self) -> (u64, u64) {
        self.link.counted
    }

    /// An answer to `waiting[at]` came: done, unless a stream goes on.
    fn answered(&mut self, at: usize, frame: &ResponseFrame) {
        let more = self.waiting[at].stream && !matches!(frame.body, Ok(Response::End));
        if !more {
            let w = self.waiting.remove(at);
            self.stream_keys.retain(|(s, _, _)| *s != w.seq);
        }
    }

    /// Take in a retained certificate or seal key; other messages come back.
    fn key_message(&mut self, on: &str, payload: Vec<u8>) -> Option<Vec<u8>> {
        if on == topic::cert(&self.device) {
            match self.trust.check_device_cert(&payload, &self.device) {
                Ok(()) => self.device_cert = Some(payload),
                Err(e) => eprintln!("warning: ignoring a certificate on {on}: {e:#}"),
            }
        } else if on == topic::seal(&self.device) {
            self.seal_msg = Some(payload);
        } else {
            return Some(payload);
        }
        // A seal key counts only once the checked certificate signs it
        // (kept until then: the two retained messages come in either order).
        if let Some(cert) = &self.device_cert {
            if let Some(msg) = self.seal_msg.take() {
                match open_seal_key(&msg, cert, &self.device) {
                    Ok(key) => self.seal_key = Some(key),
                    Err(e) => eprintln!("warning: ignoring a seal key: {e:#}"),
                }
            }
        }
        None
    }

    /// The device's seal key, waiting a little for the retained one.
    fn device_seal_key(&mut self) -> Result<[u8; seal::KEY_LEN]> {
        let deadline = Instant::now() + SEAL_KEY_WAIT.min(self.timeout);
        while self.seal_key.is_none() {
            let Some((on, payload)) = self.link.next_message(deadline)? else {
                bail!(
                    "{}: no seal key on {} within {} s: the device never published one \
                     (not calling home yet, or too old to seal); cannot send --seal",
                    self.device,
                    topic::seal(&self.device),
                    SEAL_KEY_WAIT.min(self.timeout).as_secs()
                );
            };
            let _ = self.key_message(&on, payload);
        }
        self.seal_key
            .ok_or_else(|| anyhow!("{}: no seal key", self.device))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        let u = BrokerUrl::parse("mqtts://127.0.0.1:1883").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 1883));
        assert_eq!(BrokerUrl::parse("broker").unwrap().port, 8883);
        assert!(BrokerUrl::parse("mqtt://x:1").is_err());
        assert!(BrokerUrl::parse("x:port").is_err());
        assert!(BrokerUrl::parse("mqtts://:1").is_err());
    }
}
