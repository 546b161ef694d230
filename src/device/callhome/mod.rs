//! Call home: one outbound TLS connection to an MQTT broker, for boards no
//! one can connect to (carrier NAT). Commands arrive on
//! `outpost/<device>/req` (and `outpost/group/<g>/req`), signed by an
//! operator; answers, signed by the device key, go to `/resp`. The direct
//! TCP API and the serial line keep working beside it. docs/callhome.md.
//!
//! One task owns the connection (this module): it reads packets, hands each
//! command to `commands` (checked, run through the same handlers as the
//! direct API, answered), keeps answers until the broker has them
//! (`inflight`), feeds log follows (`follow`) and pings when the link is
//! quiet. When the link drops it waits (back-off with jitter) and dials
//! again, forever; PID 1 never gives up on it.

mod backoff;
mod commands;
mod follow;
mod inflight;
pub mod replay;
pub mod seal;
pub mod verify;

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_rustls::TlsConnector;
use rustls::pki_types::ServerName;
use smol::future::FutureExt as _;
use smol::io::{AsyncReadExt as _, AsyncWriteExt as _};
use smol::{Async, Executor, Timer};

pub use backoff::{Backoff, Keepalive};
use follow::Follows;
use inflight::Inflight;

use super::api::tls::{self, Identity, TlsError};
use super::api::ApiContext;
use crate::config::CallHomeConfig;
use crate::mqtt::{self, Connect, MqttError, Packet, Publish, QoS, Will};
use crate::wire::envelope::{
    self, topic, DeviceMessage, DeviceSays, SignedByDevice, DEVICE_CONTEXT, MAX_COMMAND_PAYLOAD,
};
use verify::Authority;

/// The replay record on DATA.
pub const REPLAY_FILE: &str = "state/callhome-seq";
/// TCP connect and TLS handshake each get this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the broker may take to answer CONNECT, SUBSCRIBE or a PINGREQ
/// before the link counts as dead.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes read at once.
const READ_CHUNK: usize = 4096;
/// Largest packet accepted from the broker: a signed command, its topic and
/// the MQTT header around them.
const MAX_INBOUND: usize = MAX_COMMAND_PAYLOAD + mqtt::MAX_TOPIC + 16;

#[derive(Debug, thiserror::Error)]
pub enum CallHomeError {
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error("device key: {0}")]
    Key(&'static str),
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS handshake with the broker: {0}")]
    Handshake(std::io::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Mqtt(#[from] MqttError),
    #[error("broker refused the connection (CONNACK code {0})")]
    Refused(u8),
    #[error("broker did not answer within {0:?}")]
    Timeout(Duration),
    #[error("broker closed the connection")]
    Closed,
    #[error("unexpected {0} from the broker")]
    Protocol(&'static str),
}

impl CallHomeError {
    /// Nobody closed the link: a ping went unanswered, or it was reset. A
    /// NAT that forgot the idle flow looks like this.
    fn unexplained(&self) -> bool {
        match self {
            CallHomeError::Timeout(_) => true,
            CallHomeError::Io(e) => e.kind() != std::io::ErrorKind::UnexpectedEof,
            _ => false,
        }
    }
}

/// Start calling home if the machine config has `[callhome]`.
pub fn start(
    ex: &Arc<Executor<'static>>,
    data: &Path,
    ctx: Arc<ApiContext>,
) -> Result<(), CallHomeError> {
    let machine = ctx.config.current();
    let Some(cfg) = machine.callhome else {
        return Ok(());
    };
    let id = Identity::in_data_dir(data);
    let tls = tls::client_config(&id, ctx.time.clone())?;
    let cert = tls::certs(&id.cert)?
        .into_iter()
        .next()
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let key = {
        use rustls::pki_types::pem::PemObject;
        let pem = tls::read_bounded(&id.key)?;
        let der = rustls::pki_types::PrivatePkcs8KeyDer::from_pem_slice(&pem)
            .map_err(|_| CallHomeError::Key("not a PKCS#8 PEM key"))?;
        ring::signature::Ed25519KeyPair::from_pkcs8(der.secret_pkcs8_der())
            .map_err(|_| CallHomeError::Key("not an Ed25519 key"))?
    };
    let authority = Authority::new(&machine.hostname, &cfg.groups, tls::certs(&id.ca)?)
        .with_revocations(ctx.revocations.clone());
    let replay = replay::ReplayGuard::load(&data.join(REPLAY_FILE));
    let seal = seal::SealBox::load_or_create(&data.join(seal::KEY_FILE), cfg.require_sealed);
    let keepalive = Keepalive::new(cfg.keepalive_secs);
    let device = machine.hostname;
    tracing::info!(
        "callhome: to {}:{} as {device}, keepalive {} s",
        cfg.broker,
        cfg.port,
        cfg.keepalive_secs
    );
    let home = CallHome {
        cfg,
        device,
        tls,
        key,
        cert,
        authority,
        replay,
        seal,
        ctx,
        keepalive,
        next_pid: 0,
        inflight: Inflight::default(),
        follows: Follows::default(),
    };
    ex.spawn(home.run()).detach();
    Ok(())
}

struct CallHome {
    cfg: CallHomeConfig,
    device: String,
    tls: Arc<rustls::ClientConfig>,
    key: ring::signature::Ed25519KeyPair,
    /// Our certificate (DER), published retained for CLIs to check answers.
    cert: Vec<u8>,
    authority: Authority,
    replay: replay::ReplayGuard,
    seal: seal::SealBox,
    ctx: Arc<ApiContext>,
    keepalive: Keepalive,
    next_pid: u16,
    /// Answers sent and not yet acknowledged by the broker; sent again
    /// after a reconnect.
    inflight: Inflight,
    /// `logs --follow` streams through the broker; they outlive a dropped
    /// link (the ring keeps the lines meanwhile).
    follows: Follows,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connack,
    Suback,
    Running,
}

impl CallHome {
    async fn run(mut self) {
        let mut backoff = Backoff::default();
        loop {
            let started = Instant::now();
            let mut up = false;
            let result = AssertUnwindSafe(self.session(&mut up)).catch_unwind().await;
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    if up {
                        self.keepalive.on_drop(started.elapsed(), e.unexplained());
                        backoff.reset();
                    }
                    tracing::warn!("callhome: {e} (keepalive {} s)", self.keepalive.secs());
                }
                Err(_) => tracing::error!("callhome: session panicked; dialling again"),
            }
            Timer::after(backoff.next(random_u32())).await;
        }
    }

    /// One connection, from dialling until it drops.
    async fn session(&mut self, up: &mut bool) -> Result<(), CallHomeError> {
        let ip: IpAddr = self
            .cfg
            .broker
            .parse()
            .map_err(|_| CallHomeError::Protocol("broker address"))?;
        let addr = SocketAddr::new(ip, self.cfg.port);
        let tcp = async {
            Async::<TcpStream>::connect(addr)
                .await
                .map_err(|source| CallHomeError::Connect { addr, source })
        }
        .or(timeout(CONNECT_TIMEOUT))
        .await?;
        let _ = tcp.get_ref().set_nodelay(true);
        let name = ServerName::try_from(self.cfg.server_name().to_owned())
            .map_err(|_| CallHomeError::Protocol("broker server name"))?;
        let mut io = async {
            TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(CallHomeError::Handshake)
        }
        .or(timeout(CONNECT_TIMEOUT))
        .await?;

        let keepalive = Duration::from_secs(u64::from(self.keepalive.secs()));
        let since = self.ctx.time.now().as_secs();
        let presence_topic = topic::presence(&self.device);
        let offline = self.presence(false, since);
        let mut out = Vec::new();
        mqtt::encode(
            &Packet::Connect(Connect {
                client_id: &self.device,
                keepalive: self.keepalive.secs(),
                // The broker keeps our subscriptions and queues commands
                // sent while we are away (they run or expire on return).
                clean_session: false,
                // Said by the broker for us when this session dies: a fleet
                // view shows the board offline without asking it.
                will: Some(Will {
                    topic: &presence_topic,
                    payload: &offline,
                    qos: QoS::AtLeastOnce,
                    retain: true,
                }),
            }),
            &mut out,
        )?;
        let mut phase = Phase::Connack;
        let mut phase_since = Instant::now();
        let mut last_tx = Instant::now();
        let mut ping_sent: Option<Instant> = None;
        let mut last_tick = Instant::now();
        let mut buf: Vec<u8> = Vec::new();
        let mut chunk = vec![0u8; READ_CHUNK];
        loop {
            // Here, not only when the link is quiet: a busy link (an upload)
            // must not hold back a follow's lines.
            let following = phase == Phase::Running && !self.follows.is_empty();
            if following && last_tick.elapsed() >= follow::TICK {
                self.follow_tick(&mut out)?;
                last_tick = Instant::now();
            }
            if !out.is_empty() {
                io.write_all(&out).await?;
                io.flush().await?;
                out.clear();
                last_tx = Instant::now();
            }
            let mut wait = match (phase, ping_sent) {
                (Phase::Running, None) => keepalive.saturating_sub(last_tx.elapsed()),
                (Phase::Running, Some(at)) => ANSWER_TIMEOUT.saturating_sub(at.elapsed()),
                _ => ANSWER_TIMEOUT.saturating_sub(phase_since.elapsed()),
            };
            if following {
                wait = wait.min(follow::TICK.saturating_sub(last_tick.elapsed()));
            }
            let read = async { Some(io.read(&mut chunk).await) };
            let timer = async {
                Timer::after(wait).await;
                None
            };
            let n = match read.or(timer).await {
                Some(Ok(0)) => return Err(CallHomeError::Closed),
                Some(Ok(n)) => n,
                Some(Err(e)) => return Err(e.into()),
                None => {
                    let overdue = match (phase, ping_sent) {
                        (Phase::Running, None) => false,
                        (Phase::Running, Some(at)) => at.elapsed() >= ANSWER_TIMEOUT,
                        _ => phase_since.elapsed() >= ANSWER_TIMEOUT,
                    };
                    if overdue {
                        return Err(CallHomeError::Timeout(ANSWER_TIMEOUT));
                    }
                    if phase == Phase::Running
                        && ping_sent.is_none()
                        && out.is_empty()
                        && last_tx.elapsed() >= keepalive
                    {
                        mqtt::encode(&Packet::Pingreq, &mut out)?;
                        ping_sent = Some(Instant::now());
                    }
                    continue;
                }
            };
            buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
            let mut used = 0;
            while let Some((packet, len)) =
                mqtt::decode(buf.get(used..).unwrap_or_default(), MAX_INBOUND)?
            {
                used += len;
                match (phase, packet) {
                    (Phase::Connack, Packet::Connack { code: 0, .. }) => {
                        if !self.inflight.is_empty() {
                            tracing::info!(
                                "callhome: sending {} unacknowledged answer(s) again",
                                self.inflight.len()
                            );
                            self.inflight.resend(&mut out)?;
                        }
                        self.subscribe(&mut out)?;
                        phase = Phase::Suback;
                        phase_since = Instant::now();
                    }
                    (Phase::Connack, Packet::Connack { code, .. }) => {
                        return Err(CallHomeError::Refused(code))
                    }
                    (Phase::Suback, Packet::Suback { codes, .. }) => {
                        if codes.contains(&0x80) {
                            tracing::warn!("callhome: broker refused a subscription: {codes:?}");
                        }
                        self.announce(&mut out, since)?;
                        phase = Phase::Running;
                        *up = true;
                        tracing::info!(
                            "callhome: connected to {addr} (keepalive {} s)",
                            self.keepalive.secs()
                        );
                    }
                    // A resumed session delivers what was queued for us
                    // right after CONNACK, before our SUBACK.
                    (Phase::Suback | Phase::Running, Packet::Publish(p)) => {
                        self.on_publish(&p, &mut out).await?
                    }
                    (_, Packet::Pingresp) => ping_sent = None,
                    (_, Packet::Puback { pid }) => self.inflight.acked(pid),
                    (_, Packet::Disconnect) => return Err(CallHomeError::Closed),
                    _ => return Err(CallHomeError::Protocol("packet")),
                }
            }
            buf.drain(..used.min(buf.len()));
        }
    }

    fn subscribe(&mut self, out: &mut Vec<u8>) -> Result<(), MqttError> {
        let mut topics = vec![topic::req(&self.device), topic::SITE_CRL.to_owned()];
        topics.extend(self.cfg.groups.iter().map(|g| topic::group_req(g)));
        let filters: Vec<(&str, QoS)> = topics
            .iter()
            .map(|t| (t.as_str(), QoS::AtLeastOnce))
            .collect();
        let pid = self.pid();
        mqtt::encode(
            &Packet::Subscribe {
                pid,
                topics: &filters,
            },
            out,
        )
    }

    /// Our certificate (retained: a CLI that subscribes later gets it
    /// first), our presence (retained) and a signed `Online` event.
    fn announce(&mut self, out: &mut Vec<u8>, since: u64) -> Result<(), MqttError> {
        let cert = self.cert.clone();
        self.publish(out, &topic::cert(&self.device), &cert, true, None)?;
        if let Some(public) = self.seal.public() {
            let key = self.signed(DeviceMessage::SealKey { public });
            self.publish(out, &topic::seal(&self.device), &key, true, None)?;
        }
        let online = self.presence(true, since);
        self.publish(out, &topic::presence(&self.device), &online, true, None)?;
        let online = self.signed(DeviceMessage::Online {
            boot_id: &self.ctx.boot_id,
            version: &self.ctx.release.version,
            slot: &self.ctx.slot,
        });
        self.publish(out, &topic::events(&self.device), &online, false, None)
    }

    /// A signed `Presence` for the session that began at `since`.
    fn presence(&self, online: bool, since: u64) -> Vec<u8> {
        self.signed(DeviceMessage::Presence {
            online,
            boot_id: &self.ctx.boot_id,
            version: &self.ctx.release.version,
            slot: &self.ctx.slot,
            since,
        })
    }

    fn signed(&self, message: DeviceMessage<'_>) -> Vec<u8> {
        let says = envelope::encode(&DeviceSays {
            device: &self.device,
            message,
        });
        let sig = self
            .key
            .sign(&envelope::signing_input(DEVICE_CONTEXT, &says));
        envelope::encode(&SignedByDevice {
            says: &says,
            sig: sig.as_ref(),
        })
    }

    /// QoS 1: the broker keeps it for a CLI that is briefly away. With
    /// `answers: Some(seq)` it is kept until the broker acknowledges it and
    /// sent again after a reconnect; announcements are made anew on each
    /// connect instead.
    fn publish(
        &mut self,
        out: &mut Vec<u8>,
        topic: &str,
        payload: &[u8],
        retain: bool,
        answers: Option<u64>,
    ) -> Result<(), MqttError> {
        let pid = self.pid();
        if let Some(seq) = answers {
            for lost in self.inflight.keep(pid, topic, payload, seq) {
                tracing::warn!("callhome: answer to seq {lost} dropped: too many unacknowledged");
            }
        }
        mqtt::encode(
            &Packet::Publish(Publish {
                topic,
                qos: QoS::AtLeastOnce,
                pid,
                retain,
                dup: false,
                payload,
            }),
            out,
        )
    }

    /// The next packet id not held by a kept answer.
    fn pid(&mut self) -> u16 {
        loop {
            self.next_pid = self.next_pid.wrapping_add(1).max(1);
            if !self.inflight.holds(self.next_pid) {
                return self.next_pid;
            }
        }
    }
}

async fn timeout<T>(after: Duration) -> Result<T, CallHomeError> {
    Timer::after(after).await;
    Err(CallHomeError::Timeout(after))
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    u32::from_le_bytes(b)
}
