//! Our own DHCPv4 client (RFC 2131): DISCOVER → OFFER → REQUEST → ACK, then
//! RENEW at T1 (unicast to the server) and REBIND at T2 (broadcast).
//!
//! Building and checking messages is pure ([`discover`], [`request`],
//! [`parse_reply`]; tested without sockets). [`Client`] is the I/O: one UDP
//! socket on 0.0.0.0:68 bound to the interface, with retransmission and
//! exponential backoff, every reply validated (xid, message type, our
//! hardware address) and anything else ignored.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use dhcproto::v4::{
    DhcpOption, Flags, Message, MessageType, Opcode, OptionCode, CLIENT_PORT, SERVER_PORT,
};
use dhcproto::{Decodable, Encodable};
use smol::Async;

/// Largest DHCP datagram we read. Replies are ~300–600 bytes; a server may
/// send up to the MTU. Longer datagrams are cut and then fail to decode.
pub const MAX_DHCP_PACKET: usize = 1500;
/// BOOTP's minimum message size: some servers drop shorter requests.
const MIN_REQUEST_LEN: usize = 300;
/// DNS servers kept from a lease (the option may list many).
pub const MAX_DNS_SERVERS: usize = 4;
/// Lease used when an ACK forgets option 51 (RFC 2131 makes it mandatory).
const DEFAULT_LEASE_SECS: u32 = 3600;
/// Shortest renewal interval we act on, so a broken server cannot make us spin.
pub const MIN_RENEW_SECS: u32 = 30;
/// Replies examined per wait before giving up on that attempt: a flood of
/// garbage must not keep one await alive forever.
const MAX_REPLIES_PER_WAIT: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error("DHCP: undecodable packet: {0}")]
    Decode(String),
    #[error("DHCP: packet is not a BOOTREPLY")]
    NotReply,
    #[error("DHCP: transaction id {got:#010x} is not ours ({expected:#010x})")]
    WrongXid { expected: u32, got: u32 },
    #[error("DHCP: reply is for another hardware address")]
    WrongChaddr,
    #[error("DHCP: reply has no message type")]
    MissingType,
    #[error("DHCP: unexpected {0:?}")]
    UnexpectedType(MessageType),
    #[error("DHCP: invalid lease: {0}")]
    InvalidLease(String),
    #[error("DHCP: server {server} refused (NAK){}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Nak {
        server: Ipv4Addr,
        message: Option<String>,
    },
    #[error("DHCP: encoding a request: {0}")]
    Encode(String),
    #[error("DHCP socket on {iface}: {source}")]
    Socket {
        iface: String,
        source: std::io::Error,
    },
    #[error("DHCP: no {what} after {attempts} attempts")]
    Timeout { what: &'static str, attempts: usize },
}

/// What a server gave us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    /// The server that granted it (option 54).
    pub server: Ipv4Addr,
    pub lease_secs: u32,
    /// T1: when to start renewing (seconds after the ACK).
    pub renew_secs: u32,
    /// T2: when to start rebinding.
    pub rebind_secs: u32,
}

impl std::fmt::Display for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)?;
        if let Some(r) = self.router {
            write!(f, " via {r}")?;
        }
        write!(f, " from {} for {} s", self.server, self.lease_secs)
    }
}

/// A checked reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Offer(Lease),
    Ack(Lease),
    Nak {
        server: Ipv4Addr,
        message: Option<String>,
    },
}

/// A transaction id: need not be secret, only unlikely to repeat. Hashing the
/// clock with std's per-process random keys needs no blocking entropy read at
/// early boot.
pub fn new_xid() -> u32 {
    let mut h = RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    h.write_u128(nanos);
    h.write_u32(std::process::id());
    (h.finish() & u64::from(u32::MAX)) as u32
}

fn base_message(xid: u32, mac: [u8; 6], ciaddr: Ipv4Addr, kind: MessageType) -> Message {
    let unspecified = Ipv4Addr::UNSPECIFIED;
    let mut msg = Message::new_with_id(xid, ciaddr, unspecified, unspecified, unspecified, &mac);
    msg.set_opcode(Opcode::BootRequest);
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    let mut client_id = vec![1]; // htype Ethernet, then the MAC (RFC 2132 §9.14)
    client_id.extend_from_slice(&mac);
    opts.insert(DhcpOption::ClientIdentifier(client_id));
    opts.insert(DhcpOption::MaxMessageSize(1500));
    opts.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::AddressLeaseTime,
        OptionCode::Renewal,
        OptionCode::Rebinding,
    ]));
    msg
}

fn encode(msg: &Message) -> Result<Vec<u8>, DhcpError> {
    let mut bytes = msg.to_vec().map_err(|e| DhcpError::Encode(e.to_string()))?;
    if bytes.len() < MIN_REQUEST_LEN {
        bytes.resize(MIN_REQUEST_LEN, 0); // PAD options after END
    }
    Ok(bytes)
}

/// DHCPDISCOVER, asking for a broadcast answer (we have no address yet).
pub fn discover(xid: u32, mac: [u8; 6]) -> Result<Vec<u8>, DhcpError> {
    let mut msg = base_message(xid, mac, Ipv4Addr::UNSPECIFIED, MessageType::Discover);
    msg.set_flags(Flags::default().set_broadcast());
    encode(&msg)
}

/// Which REQUEST (RFC 2131 §4.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// After an OFFER: requested address and server id, broadcast.
    Selecting,
    /// At T1: ciaddr set, unicast to the server.
    Renewing,
    /// At T2: ciaddr set, broadcast to any server.
    Rebinding,
}

/// DHCPREQUEST for `lease`.
pub fn request(
    xid: u32,
    mac: [u8; 6],
    lease: &Lease,
    kind: RequestKind,
) -> Result<Vec<u8>, DhcpError> {
    let msg = match kind {
        RequestKind::Selecting => {
            let mut msg = base_message(xid, mac, Ipv4Addr::UNSPECIFIED, MessageType::Request);
            msg.set_flags(Flags::default().set_broadcast());
            msg.opts_mut()
                .insert(DhcpOption::RequestedIpAddress(lease.address));
            msg.opts_mut()
                .insert(DhcpOption::ServerIdentifier(lease.server));
            msg
        }
        RequestKind::Renewing | RequestKind::Rebinding => {
            base_message(xid, mac, lease.address, MessageType::Request)
        }
    };
    encode(&msg)
}

/// Decode and check a datagram that arrived on port 68: it must be a
/// BOOTREPLY to our `xid` and `mac`, an OFFER, ACK or NAK, and an OFFER/ACK
/// must carry a usable lease.
pub fn parse_reply(bytes: &[u8], xid: u32, mac: [u8; 6]) -> Result<Reply, DhcpError> {
    // dhcproto decodes bytes from the network; a bug in it must cost one
    // packet, not the DHCP task.
    let decoded = std::panic::catch_unwind(AssertUnwindSafe(|| Message::from_bytes(bytes)))
        .map_err(|_| DhcpError::Decode("decoder panicked".to_owned()))?;
    let msg = decoded.map_err(|e| DhcpError::Decode(e.to_string()))?;
    if msg.opcode() != Opcode::BootReply {
        return Err(DhcpError::NotReply);
    }
    if msg.xid() != xid {
        return Err(DhcpError::WrongXid {
            expected: xid,
            got: msg.xid(),
        });
    }
    // Check hlen before chaddr(): dhcproto slices by it.
    if msg.hlen() != 6 || msg.chaddr() != mac {
        return Err(DhcpError::WrongChaddr);
    }
    let kind = msg.opts().msg_type().ok_or(DhcpError::MissingType)?;
    let server = match msg.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(s)) => Some(*s),
        _ => None,
    };
    match kind {
        MessageType::Nak => {
            let message = match msg.opts().get(OptionCode::Message) {
                Some(DhcpOption::Message(m)) => Some(m.chars().take(128).collect()),
                _ => None,
            };
            Ok(Reply::Nak {
                server: server.unwrap_or(Ipv4Addr::UNSPECIFIED),
                message,
            })
        }
        MessageType::Offer => {
            // RFC 2131: an OFFER MUST name its server; we need it to REQUEST.
            let server = server.ok_or_else(|| invalid("OFFER without a server identifier"))?;
            Ok(Reply::Offer(lease_from(&msg, server)?))
        }
        MessageType::Ack => Ok(Reply::Ack(lease_from(
            &msg,
            server.unwrap_or(Ipv4Addr::UNSPECIFIED),
        )?)),
        other => Err(DhcpError::UnexpectedType(other)),
    }
}

fn invalid(reason: impl Into<String>) -> DhcpError {
    DhcpError::InvalidLease(reason.into())
}

fn usable_unicast(a: Ipv4Addr) -> bool {
    !(a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback())
}

/// A subnet mask's prefix length, if the mask is contiguous.
pub fn mask_prefix(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let ones = bits.leading_ones();
    (bits.checked_shl(ones).unwrap_or(0) == 0).then(|| u8::try_from(ones).unwrap_or(32))
}

fn lease_from(msg: &Message, server: Ipv4Addr) -> Result<Lease, DhcpError> {
    let address = msg.yiaddr();
    if !usable_unicast(address) {
        return Err(invalid(format!("offered address {address}")));
    }
    let prefix = match msg.opts().get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(mask)) => {
            let p = mask_prefix(*mask).ok_or_else(|| invalid(format!("subnet mask {mask}")))?;
            if p == 0 || p > 30 {
                return Err(invalid(format!("subnet mask {mask}")));
            }
            p
        }
        // No mask: the classful default (RFC 2131 leaves it to the client).
        _ => match address.octets()[0] {
            0..=127 => 8,
            128..=191 => 16,
            _ => 24,
        },
    };
    let router = match msg.opts().get(OptionCode::Router) {
        Some(DhcpOption::Router(list)) => list.iter().copied().find(|r| usable_unicast(*r)),
        _ => None,
    };
    let dns = match msg.opts().get(OptionCode::DomainNameServer) {
        Some(DhcpOption::DomainNameServer(list)) => list
            .iter()
            .copied()
            .filter(|d| usable_unicast(*d))
            .take(MAX_DNS_SERVERS)
            .collect(),
        _ => Vec::new(),
    };
    let lease_secs = match msg.opts().get(OptionCode::AddressLeaseTime) {
        Some(DhcpOption::AddressLeaseTime(t)) => *t,
        _ => DEFAULT_LEASE_SECS,
    };
    if lease_secs == 0 {
        return Err(invalid("lease time 0"));
    }
    let get_u32 = |code| match msg.opts().get(code) {
        Some(DhcpOption::Renewal(t)) | Some(DhcpOption::Rebinding(t)) => Some(*t),
        _ => None,
    };
    let default_t1 = lease_secs / 2;
    let default_t2 = u32::try_from(u64::from(lease_secs) * 7 / 8).unwrap_or(u32::MAX);
    let mut renew_secs = get_u32(OptionCode::Renewal).unwrap_or(default_t1);
    let mut rebind_secs = get_u32(OptionCode::Rebinding).unwrap_or(default_t2);
    // RFC 2131 §4.4.5: T1 < T2 < lease; otherwise use the defaults.
    if !(renew_secs <= rebind_secs && rebind_secs <= lease_secs) {
        renew_secs = default_t1;
        rebind_secs = default_t2;
    }
    Ok(Lease {
        address,
        prefix,
        router,
        dns,
        server,
        lease_secs,
        renew_secs: renew_secs.max(MIN_RENEW_SECS.min(rebind_secs)),
        rebind_secs,
    })
}

/// Retransmission timeouts: RFC 2131 §4.1 doubles from 4 s to 64 s; boot
/// wants an answer sooner, so ours start at 1 s and stop at `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub cap: Duration,
    pub attempts: usize,
}

impl Backoff {
    /// At boot: 1, 2, 4, 8 s (≈ 15 s in all, then boot goes on; the renewal
    /// task keeps trying).
    pub const BOOT: Backoff = Backoff {
        first: Duration::from_secs(1),
        cap: Duration::from_secs(8),
        attempts: 4,
    };

    /// Timeout before retransmission number `n` (0-based).
    pub fn timeout(&self, n: usize) -> Duration {
        let factor = 1u32
            .checked_shl(u32::try_from(n).unwrap_or(31))
            .unwrap_or(u32::MAX);
        self.first.saturating_mul(factor).min(self.cap)
    }
}

/// The DHCP client of one interface.
#[derive(Debug)]
pub struct Client {
    iface: String,
    mac: [u8; 6],
    socket: Async<UdpSocket>,
    buffer: Vec<u8>,
}

impl Client {
    /// Open 0.0.0.0:68 with SO_BROADCAST and SO_BINDTODEVICE on `iface`.
    pub fn open(iface: &str, mac: [u8; 6]) -> Result<Self, DhcpError> {
        let socket = open_socket(iface).map_err(|source| DhcpError::Socket {
            iface: iface.to_owned(),
            source,
        })?;
        Ok(Self {
            iface: iface.to_owned(),
            mac,
            socket,
            buffer: vec![0; MAX_DHCP_PACKET],
        })
    }

    /// DISCOVER → OFFER → REQUEST → ACK.
    pub async fn acquire(&mut self, backoff: Backoff) -> Result<Lease, DhcpError> {
        let xid = new_xid();
        let packet = discover(xid, self.mac)?;
        let broadcast = SocketAddrV4::new(Ipv4Addr::BROADCAST, SERVER_PORT);
        let offer = self
            .exchange("OFFER", &packet, broadcast, xid, backoff, |r| {
                matches!(r, Reply::Offer(_))
            })
            .await?;
        let Reply::Offer(offer) = offer else {
            return Err(DhcpError::Timeout {
                what: "OFFER",
                attempts: 0,
            });
        };
        tracing::debug!(iface = %self.iface, "DHCP offer: {offer}");
        let packet = request(xid, self.mac, &offer, RequestKind::Selecting)?;
        let reply = self
            .exchange("ACK", &packet, broadcast, xid, backoff, |r| {
                matches!(r, Reply::Ack(_) | Reply::Nak { .. })
            })
            .await?;
        finish(reply, &offer)
    }

    /// RENEW (unicast to the lease's server) or REBIND (broadcast).
    pub async fn extend(
        &mut self,
        lease: &Lease,
        kind: RequestKind,
        backoff: Backoff,
    ) -> Result<Lease, DhcpError> {
        let xid = new_xid();
        let packet = request(xid, self.mac, lease, kind)?;
        let to = match kind {
            RequestKind::Renewing if usable_unicast(lease.server) => {
                SocketAddrV4::new(lease.server, SERVER_PORT)
            }
            _ => SocketAddrV4::new(Ipv4Addr::BROADCAST, SERVER_PORT),
        };
        let reply = self
            .exchange("ACK", &packet, to, xid, backoff, |r| {
                matches!(r, Reply::Ack(_) | Reply::Nak { .. })
            })
            .await?;
        finish(reply, lease)
    }

    /// Send `packet` to `to`, wait for an accepted reply, retransmit with backoff.
    async fn exchange(
        &mut self,
        what: &'static str,
        packet: &[u8],
        to: SocketAddrV4,
        xid: u32,
        backoff: Backoff,
        accept: impl Fn(&Reply) -> bool,
    ) -> Result<Reply, DhcpError> {
        for attempt in 0..backoff.attempts {
            self.socket
                .send_to(packet, to)
                .await
                .map_err(|source| DhcpError::Socket {
                    iface: self.iface.clone(),
                    source,
                })?;
            let deadline = Instant::now() + backoff.timeout(attempt);
            if let Some(reply) = self.wait_reply(deadline, xid, &accept).await? {
                return Ok(reply);
            }
            tracing::debug!(iface = %self.iface, attempt, "no DHCP {what} yet");
        }
        Err(DhcpError::Timeout {
            what,
            attempts: backoff.attempts,
        })
    }

    /// The first accepted reply before `deadline`; everything else ignored.
    async fn wait_reply(
        &mut self,
        deadline: Instant,
        xid: u32,
        accept: &impl Fn(&Reply) -> bool,
    ) -> Result<Option<Reply>, DhcpError> {
        for _ in 0..MAX_REPLIES_PER_WAIT {
            let received = smol::future::or(
                async { Some(self.socket.recv_from(&mut self.buffer).await) },
                async {
                    smol::Timer::at(deadline).await;
                    None
                },
            )
            .await;
            let Some(received) = received else {
                return Ok(None);
            };
            let (n, from) = received.map_err(|source| DhcpError::Socket {
                iface: self.iface.clone(),
                source,
            })?;
            let bytes = self.buffer.get(..n).unwrap_or_default();
            match parse_reply(bytes, xid, self.mac) {
                Ok(reply) if accept(&reply) => return Ok(Some(reply)),
                Ok(reply) => tracing::debug!("ignoring DHCP {reply:?} from {from}"),
                Err(e) => tracing::debug!("ignoring packet from {from}: {e}"),
            }
        }
        Ok(None)
    }
}

/// An ACK completes the lease (an ACK may omit the server id: keep the one we
/// asked); a NAK is an error.
fn finish(reply: Reply, asked: &Lease) -> Result<Lease, DhcpError> {
    match reply {
        Reply::Ack(mut lease) => {
            if lease.server.is_unspecified() {
                lease.server = asked.server;
            }
            Ok(lease)
        }
        Reply::Nak { server, message } => Err(DhcpError::Nak { server, message }),
        Reply::Offer(_) => Err(DhcpError::UnexpectedType(MessageType::Offer)),
    }
}

fn open_socket(iface: &str) -> std::io::Result<Async<UdpSocket>> {
    use nix::sys::socket::{
        bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    setsockopt(&fd, sockopt::Broadcast, &true)?;
    setsockopt(&fd, sockopt::BindToDevice, &std::ffi::OsString::from(iface))?;
    bind(fd.as_raw_fd(), &SockaddrIn::new(0, 0, 0, 0, CLIENT_PORT))?;
    Async::new(UdpSocket::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    const XID: u32 = 0x1234_5678;

    /// A server reply as QEMU's slirp sends it.
    fn reply(kind: MessageType, xid: u32, mac: &[u8]) -> Message {
        let mut msg = Message::new_with_id(
            xid,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::new(10, 0, 2, 15),
            Ipv4Addr::new(10, 0, 2, 2),
            Ipv4Addr::UNSPECIFIED,
            mac,
        );
        msg.set_opcode(Opcode::BootReply);
        let o = msg.opts_mut();
        o.insert(DhcpOption::MessageType(kind));
        o.insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 2, 2)));
        o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        o.insert(DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 2, 2)]));
        o.insert(DhcpOption::DomainNameServer(vec![Ipv4Addr::new(
            10, 0, 2, 3,
        )]));
        o.insert(DhcpOption::AddressLeaseTime(86400));
        msg
    }

    fn bytes(msg: &Message) -> Vec<u8> {
        msg.to_vec().unwrap()
    }

    fn slirp_lease() -> Lease {
        Lease {
            address: Ipv4Addr::new(10, 0, 2, 15),
            prefix: 24,
            router: Some(Ipv4Addr::new(10, 0, 2, 2)),
            dns: vec![Ipv4Addr::new(10, 0, 2, 3)],
            server: Ipv4Addr::new(10, 0, 2, 2),
            lease_secs: 86400,
            renew_secs: 43200,
            rebind_secs: 75600,
        }
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let good = bytes(&reply(MessageType::Offer, XID, &MAC));
        let mut cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![2],
            vec![0xff; 300],
            good[..100].to_vec(),
            good[..240].to_vec(), // header only, no options: no message type
        ];
        // Every truncation and a byte flip at every offset: never a panic.
        for i in 0..good.len() {
            cases.push(good[..i].to_vec());
            let mut flipped = good.clone();
            flipped[i] ^= 0xff;
            cases.push(flipped);
        }
        // hlen 255 would make dhcproto slice past chaddr.
        let mut big_hlen = good.clone();
        big_hlen[2] = 255;
        cases.push(big_hlen);
        // Option 80 (rapid commit) with a length: a debug assertion in dhcproto.
        let mut rapid = good[..240].to_vec();
        rapid.extend_from_slice(&[53, 1, 2, 80, 2, 0, 0, 255]);
        cases.push(rapid);
        for case in &cases {
            let _ = parse_reply(case, XID, MAC);
        }
        assert!(matches!(
            parse_reply(&good[..240], XID, MAC),
            Err(DhcpError::MissingType)
        ));
        assert!(parse_reply(&cases[2], XID, MAC).is_err());
    }

    #[test]
    fn replies_to_others_are_refused() {
        let offer = bytes(&reply(MessageType::Offer, XID + 1, &MAC));
        assert!(matches!(
            parse_reply(&offer, XID, MAC),
            Err(DhcpError::WrongXid { .. })
        ));
        let offer = bytes(&reply(MessageType::Offer, XID, &[1, 2, 3, 4, 5, 6]));
        assert!(matches!(
            parse_reply(&offer, XID, MAC),
            Err(DhcpError::WrongChaddr)
        ));
        let mut msg = reply(MessageType::Offer, XID, &MAC);
        msg.set_opcode(Opcode::BootRequest);
        assert!(matches!(
            parse_reply(&bytes(&msg), XID, MAC),
            Err(DhcpError::NotReply)
        ));
        // Our own broadcast DISCOVER, looped back: not a reply.
        let own = discover(XID, MAC).unwrap();
        assert!(matches!(
            parse_reply(&own, XID, MAC),
            Err(DhcpError::NotReply)
        ));
        let msg = reply(MessageType::Inform, XID, &MAC);
        assert!(matches!(
            parse_reply(&bytes(&msg), XID, MAC),
            Err(DhcpError::UnexpectedType(MessageType::Inform))
        ));
    }

    #[test]
    fn unusable_leases_are_refused() {
        let mut msg = reply(MessageType::Offer, XID, &MAC);
        msg.set_yiaddr(Ipv4Addr::UNSPECIFIED);
        assert!(matches!(
            parse_reply(&bytes(&msg), XID, MAC),
            Err(DhcpError::InvalidLease(_))
        ));
        let mut msg = reply(MessageType::Offer, XID, &MAC);
        msg.set_yiaddr(Ipv4Addr::new(224, 0, 0, 1));
        assert!(matches!(
            parse_reply(&bytes(&msg), XID, MAC),
            Err(DhcpError::InvalidLease(_))
        ));
        let mut msg = reply(MessageType::Offer, XID, &MAC);
        msg.opts_mut()
            .insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 0, 255, 0)));
        assert!(matches!(
            parse_reply(&bytes(&msg), XID, MAC),
            Err(DhcpError::InvalidLease(_))
        ));
        let mut msg = reply(MessageType::Offer, XID, &MAC);
        msg.opts_mut().remove(OptionCode::ServerIdentifier);
        assert!(matches!(
            parse_reply(&bytes(&msg), XID, MAC),
            Err(DhcpError::InvalidLease(_))
        ));
        let mut msg = reply(MessageType::Ack, XID, &MAC);
        msg.opts_mut().insert(DhcpOption::AddressLeaseTime(0));
        assert!(matches!(
            parse_reply(&bytes(&msg), XID, MAC),
            Err(DhcpError::InvalidLease(_))
        ));
    }

    #[test]
    fn nak_is_reported_with_its_message() {
        let mut msg = reply(MessageType::Nak, XID, &MAC);
        msg.opts_mut()
            .insert(DhcpOption::Message("address taken".into()));
        let reply = parse_reply(&bytes(&msg), XID, MAC).unwrap();
        assert_eq!(
            reply,
            Reply::Nak {
                server: Ipv4Addr::new(10, 0, 2, 2),
                message: Some("address taken".into())
            }
        );
        let err = finish(reply, &slirp_lease()).unwrap_err();
        assert!(err.to_string().contains("address taken"), "{err}");
    }

    #[test]
    fn slirp_offer_and_ack_give_the_lease() {
        let offer = parse_reply(&bytes(&reply(MessageType::Offer, XID, &MAC)), XID, MAC).unwrap();
        assert_eq!(offer, Reply::Offer(slirp_lease()));
        let mut ack = reply(MessageType::Ack, XID, &MAC);
        ack.opts_mut().remove(OptionCode::ServerIdentifier);
        ack.opts_mut().insert(DhcpOption::Renewal(100));
        ack.opts_mut().insert(DhcpOption::Rebinding(50)); // T2 < T1: defaults
        let ack = parse_reply(&bytes(&ack), XID, MAC).unwrap();
        let lease = finish(ack, &slirp_lease()).unwrap();
        assert_eq!(lease, slirp_lease());
        assert_eq!(
            lease.to_string(),
            "10.0.2.15/24 via 10.0.2.2 from 10.0.2.2 for 86400 s"
        );
    }

    #[test]
    fn lease_timers_are_sane() {
        let mut ack = reply(MessageType::Ack, XID, &MAC);
        ack.opts_mut().insert(DhcpOption::AddressLeaseTime(10));
        let Reply::Ack(lease) = parse_reply(&bytes(&ack), XID, MAC).unwrap() else {
            panic!()
        };
        assert_eq!((lease.renew_secs, lease.rebind_secs), (8, 8));
        let mut ack = reply(MessageType::Ack, XID, &MAC);
        ack.opts_mut()
            .insert(DhcpOption::AddressLeaseTime(u32::MAX));
        let Reply::Ack(lease) = parse_reply(&bytes(&ack), XID, MAC).unwrap() else {
            panic!()
        };
        assert_eq!(lease.renew_secs, u32::MAX / 2);
        // No mask: classful default.
        let mut ack = reply(MessageType::Ack, XID, &MAC);
        ack.opts_mut().remove(OptionCode::SubnetMask);
        let Reply::Ack(lease) = parse_reply(&bytes(&ack), XID, MAC).unwrap() else {
            panic!()
        };
        assert_eq!(lease.prefix, 8);
    }

    #[test]
    fn requests_carry_what_the_server_needs() {
        let d = Message::from_bytes(&discover(XID, MAC).unwrap()).unwrap();
        assert_eq!(d.opcode(), Opcode::BootRequest);
        assert_eq!((d.xid(), d.chaddr()), (XID, &MAC[..]));
        assert!(d.flags().broadcast());
        assert_eq!(d.opts().msg_type(), Some(MessageType::Discover));
        assert!(discover(XID, MAC).unwrap().len() >= MIN_REQUEST_LEN);

        let lease = slirp_lease();
        let r = Message::from_bytes(&request(XID, MAC, &lease, RequestKind::Selecting).unwrap())
            .unwrap();
        assert_eq!(r.opts().msg_type(), Some(MessageType::Request));
        assert_eq!(r.ciaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(
            r.opts().get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(lease.address))
        );
        assert_eq!(
            r.opts().get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(lease.server))
        );

        let r = Message::from_bytes(&request(XID, MAC, &lease, RequestKind::Renewing).unwrap())
            .unwrap();
        assert_eq!(r.ciaddr(), lease.address);
        assert!(!r.flags().broadcast());
        assert!(r.opts().get(OptionCode::RequestedIpAddress).is_none());
        assert!(r.opts().get(OptionCode::ServerIdentifier).is_none());
    }

    #[test]
    fn masks_and_backoff() {
        assert_eq!(mask_prefix(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(mask_prefix(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(mask_prefix(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
        assert_eq!(mask_prefix(Ipv4Addr::new(255, 0, 255, 0)), None);
        let b = Backoff::BOOT;
        let t: Vec<u64> = (0..6).map(|n| b.timeout(n).as_secs()).collect();
        assert_eq!(t, [1, 2, 4, 8, 8, 8]);
        assert_eq!(b.timeout(usize::MAX), b.cap);
        assert_ne!(new_xid(), new_xid());
    }
}
