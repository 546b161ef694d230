//! Our own DHCPv4 client (RFC 2131): DISCOVER → OFFER → REQUEST → ACK, then
//! RENEW at T1 (unicast to the server) and REBIND at T2 (broadcast).
//!
//! The codec is ours too: a BOOTP header, the magic cookie and the dozen
//! RFC 2132 options we send or read ([`Packet`], [`Options`]). It replaced
//! `dhcproto` for binary size: that crate brought `trust-dns-proto`, `url`,
//! `idna` and ICU normalization with their Unicode tables, `rand` and
//! `smallvec` into PID 1 (~66 KB of code and ~320 KB of read-only data).
//! Replacing it made the stripped aarch64-musl `outpost-init` 471,936 bytes
//! smaller (1,858,384 → 1,386,448); this codec is ~8 KB of code.
//!
//! Building and checking messages is pure ([`discover`], [`request`],
//! [`parse_reply`]; tested without sockets), and every received byte is read
//! through [`Reader`]. [`Client`] is the I/O: one UDP socket on 0.0.0.0:68
//! bound to the interface, with retransmission and exponential backoff,
//! every reply validated (xid, message type, our hardware address) and
//! anything else ignored.
//!
//! Not supported: option overload (52; the options in `sname`/`file` are not
//! read, and no server we know of uses it for a lease reply).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use smol::Async;

use super::reader::{ReadError, Reader};

/// Largest DHCP datagram we read. Replies are ~300–600 bytes; a server may
/// send up to the MTU. Longer datagrams are cut and then fail to decode
/// (their END option is missing).
pub const MAX_DHCP_PACKET: usize = 1500;
/// What we advertise in option 57 (RFC 2132 §9.10: the largest DHCP message,
/// IP and UDP headers included, we accept); fits [`MAX_DHCP_PACKET`].
const MAX_MESSAGE_SIZE: u16 = 1500;
/// BOOTP's minimum message size: some servers drop shorter requests.
const MIN_REQUEST_LEN: usize = 300;
/// DNS servers kept from a lease (the option may list many).
pub const MAX_DNS_SERVERS: usize = 4;
/// Characters kept of a NAK's message (option 56) for the log.
const MAX_SERVER_MESSAGE: usize = 128;
/// Lease used when an ACK forgets option 51 (RFC 2131 makes it mandatory).
const DEFAULT_LEASE_SECS: u32 = 3600;
/// Shortest renewal interval we act on, so a broken server cannot make us spin.
pub const MIN_RENEW_SECS: u32 = 30;
/// Replies examined per wait before giving up on that attempt: a flood of
/// garbage must not keep one await alive forever.
const MAX_REPLIES_PER_WAIT: usize = 256;
/// One option's value is at most 255 bytes (its length is a byte); longer
/// values are sent as several options with the same code (RFC 3396).
const MAX_OPTION_LEN: usize = 255;

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;

/// The fixed BOOTP header (RFC 2131 §2): op, htype, hlen, hops, xid, secs,
/// flags, ciaddr, yiaddr, siaddr, giaddr, chaddr (16), sname (64), file (128).
const HEADER_LEN: usize = 236;
const SNAME_LEN: usize = 64;
const FILE_LEN: usize = 128;
/// RFC 2131 §3: the options field starts with 99.130.83.99.
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
const BOOTREQUEST: u8 = 1;
const BOOTREPLY: u8 = 2;
/// ARP hardware type Ethernet, hardware address length 6.
const HTYPE_ETHERNET: u8 = 1;
const HLEN_ETHERNET: u8 = 6;
/// RFC 2131 §2: the only flag, "answer by broadcast" (we have no address yet).
const FLAG_BROADCAST: u16 = 0x8000;

// RFC 2132 option codes.
const OPT_PAD: u8 = 0;
const OPT_SUBNET_MASK: u8 = 1;
const OPT_ROUTER: u8 = 3;
const OPT_DNS: u8 = 6;
const OPT_HOSTNAME: u8 = 12;
const OPT_REQUESTED_IP: u8 = 50;
const OPT_LEASE_TIME: u8 = 51;
const OPT_MESSAGE_TYPE: u8 = 53;
const OPT_SERVER_ID: u8 = 54;
const OPT_PARAMETERS: u8 = 55;
const OPT_MESSAGE: u8 = 56;
const OPT_MAX_SIZE: u8 = 57;
const OPT_RENEWAL: u8 = 58;
const OPT_REBINDING: u8 = 59;
const OPT_CLIENT_ID: u8 = 61;
const OPT_END: u8 = 255;

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

#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error("DHCP: undecodable packet: {0}")]
    Decode(DecodeError),
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
    #[error("DHCP socket on {iface}: {source}")]
    Socket {
        iface: String,
        source: std::io::Error,
    },
    #[error("DHCP: no {what} after {attempts} attempts")]
    Timeout { what: &'static str, attempts: usize },
}

/// Why a packet did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("no DHCP magic cookie (plain BOOTP?)")]
    NoCookie,
    #[error("options end without the END option")]
    NoEnd,
    #[error("option {code} has a {len}-byte value")]
    OptionLength { code: u8, len: usize },
}

/// Option 53 (RFC 2132 §9.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Discover,
    Offer,
    Request,
    Decline,
    Ack,
    Nak,
    Release,
    Inform,
    /// Later RFCs' types (lease query, …): never an answer to us.
    Other(u8),
}

impl MessageType {
    fn from_code(code: u8) -> Self {
        match code {
            1 => Self::Discover,
            2 => Self::Offer,
            3 => Self::Request,
            4 => Self::Decline,
            5 => Self::Ack,
            6 => Self::Nak,
            7 => Self::Release,
            8 => Self::Inform,
            other => Self::Other(other),
        }
    }

    fn code(self) -> u8 {
        match self {
            Self::Discover => 1,
            Self::Offer => 2,
            Self::Request => 3,
            Self::Decline => 4,
            Self::Ack => 5,
            Self::Nak => 6,
            Self::Release => 7,
            Self::Inform => 8,
            Self::Other(code) => code,
        }
    }
}

/// The options we send or read; any other option is skipped on decode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// 53
    pub message_type: Option<MessageType>,
    /// 61: htype then hardware address (RFC 2132 §9.14).
    pub client_id: Option<Vec<u8>>,
    /// 57
    pub max_size: Option<u16>,
    /// 55: the option codes we want answered.
    pub parameters: Vec<u8>,
    /// 50
    pub requested_ip: Option<Ipv4Addr>,
    /// 54
    pub server: Option<Ipv4Addr>,
    /// 12
    pub hostname: Option<String>,
    /// 1
    pub subnet_mask: Option<Ipv4Addr>,
    /// 3
    pub routers: Vec<Ipv4Addr>,
    /// 6
    pub dns: Vec<Ipv4Addr>,
    /// 51
    pub lease_secs: Option<u32>,
    /// 58: T1
    pub renew_secs: Option<u32>,
    /// 59: T2
    pub rebind_secs: Option<u32>,
    /// 56: a server's explanation (NAK).
    pub message: Option<String>,
}

/// One BOOTP/DHCP message: the fixed header (without `sname` and `file`,
/// which we neither send nor read) and the options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub op: u8,
    pub htype: u8,
    pub hlen: u8,
    pub hops: u8,
    pub xid: u32,
    pub secs: u16,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: [u8; 16],
    pub options: Options,
}

impl Default for Packet {
    fn default() -> Self {
        let zero = Ipv4Addr::UNSPECIFIED;
        Packet {
            op: 0,
            htype: 0,
            hlen: 0,
            hops: 0,
            xid: 0,
            secs: 0,
            flags: 0,
            ciaddr: zero,
            yiaddr: zero,
            siaddr: zero,
            giaddr: zero,
            chaddr: [0; 16],
            options: Options::default(),
        }
    }
}

/// A fixed-size option value, or an error naming the option.
fn fixed<const N: usize>(code: u8, value: &[u8]) -> Result<[u8; N], DecodeError> {
    <[u8; N]>::try_from(value).map_err(|_| DecodeError::OptionLength {
        code,
        len: value.len(),
    })
}

/// A list of addresses: one or more, 4 bytes each.
fn addresses(code: u8, value: &[u8]) -> Result<Vec<Ipv4Addr>, DecodeError> {
    if value.is_empty() || value.len() % 4 != 0 {
        return Err(DecodeError::OptionLength {
            code,
            len: value.len(),
        });
    }
    let mut r = Reader::new(value);
    let mut out = Vec::with_capacity(value.len() / 4);
    while !r.is_empty() {
        out.push(r.ipv4()?);
    }
    Ok(out)
}

fn text(value: &[u8]) -> String {
    String::from_utf8_lossy(value).into_owned()
}

impl Options {
    /// Take one option's whole value (all its instances joined).
    fn set(&mut self, code: u8, value: &[u8]) -> Result<(), DecodeError> {
        let ip = |v| fixed::<4>(code, v).map(Ipv4Addr::from);
        let secs = |v| fixed::<4>(code, v).map(u32::from_be_bytes);
        match code {
            OPT_MESSAGE_TYPE => {
                let [t] = fixed::<1>(code, value)?;
                self.message_type = Some(MessageType::from_code(t));
            }
            OPT_CLIENT_ID => self.client_id = Some(value.to_vec()),
            OPT_MAX_SIZE => self.max_size = Some(u16::from_be_bytes(fixed(code, value)?)),
            OPT_PARAMETERS => self.parameters = value.to_vec(),
            OPT_REQUESTED_IP => self.requested_ip = Some(ip(value)?),
            OPT_SERVER_ID => self.server = Some(ip(value)?),
            OPT_HOSTNAME => self.hostname = Some(text(value)),
            OPT_SUBNET_MASK => self.subnet_mask = Some(ip(value)?),
            OPT_ROUTER => self.routers = addresses(code, value)?,
            OPT_DNS => self.dns = addresses(code, value)?,
            OPT_LEASE_TIME => self.lease_secs = Some(secs(value)?),
            OPT_RENEWAL => self.renew_secs = Some(secs(value)?),
            OPT_REBINDING => self.rebind_secs = Some(secs(value)?),
            OPT_MESSAGE => self.message = Some(text(value)),
            _ => {}
        }
        Ok(())
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let ips = |list: &[Ipv4Addr]| -> Vec<u8> { list.iter().flat_map(|a| a.octets()).collect() };
        if let Some(t) = self.message_type {
            push_option(out, OPT_MESSAGE_TYPE, &[t.code()]);
        }
        if let Some(id) = &self.client_id {
            push_option(out, OPT_CLIENT_ID, id);
        }
        if let Some(size) = self.max_size {
            push_option(out, OPT_MAX_SIZE, &size.to_be_bytes());
        }
        push_option(out, OPT_PARAMETERS, &self.parameters);
        if let Some(a) = self.requested_ip {
            push_option(out, OPT_REQUESTED_IP, &a.octets());
        }
        if let Some(a) = self.server {
            push_option(out, OPT_SERVER_ID, &a.octets());
        }
        if let Some(name) = &self.hostname {
            push_option(out, OPT_HOSTNAME, name.as_bytes());
        }
        if let Some(mask) = self.subnet_mask {
            push_option(out, OPT_SUBNET_MASK, &mask.octets());
        }
        push_option(out, OPT_ROUTER, &ips(&self.routers));
        push_option(out, OPT_DNS, &ips(&self.dns));
        for (code, secs) in [
            (OPT_LEASE_TIME, self.lease_secs),
            (OPT_RENEWAL, self.renew_secs),
            (OPT_REBINDING, self.rebind_secs),
        ] {
            if let Some(s) = secs {
                push_option(out, code, &s.to_be_bytes());
            }
        }
        if let Some(m) = &self.message {
            push_option(out, OPT_MESSAGE, m.as_bytes());
        }
        out.push(OPT_END);
    }
}

/// Code, length, value; a value longer than one option is split into
/// several with the same code (RFC 3396); an empty value is left out.
fn push_option(out: &mut Vec<u8>, code: u8, value: &[u8]) {
    for chunk in value.chunks(MAX_OPTION_LEN) {
        out.push(code);
        out.push(u8::try_from(chunk.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(chunk);
    }
}

impl Packet {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MIN_REQUEST_LEN);
        out.extend([self.op, self.htype, self.hlen, self.hops]);
        out.extend(self.xid.to_be_bytes());
        out.extend(self.secs.to_be_bytes());
        out.extend(self.flags.to_be_bytes());
        for a in [self.ciaddr, self.yiaddr, self.siaddr, self.giaddr] {
            out.extend(a.octets());
        }
        out.extend(self.chaddr);
        out.resize(HEADER_LEN, 0); // sname, file
        out.extend(MAGIC_COOKIE);
        self.options.encode(&mut out);
        out
    }

    /// Decode a datagram: the header, the cookie, then options up to END
    /// (what follows END is padding and not read).
    pub fn decode(bytes: &[u8]) -> Result<Packet, DecodeError> {
        let mut r = Reader::new(bytes);
        let mut packet = Packet {
            op: r.u8()?,
            htype: r.u8()?,
            hlen: r.u8()?,
            hops: r.u8()?,
            xid: r.u32_be()?,
            secs: r.u16_be()?,
            flags: r.u16_be()?,
            ciaddr: r.ipv4()?,
            yiaddr: r.ipv4()?,
            siaddr: r.ipv4()?,
            giaddr: r.ipv4()?,
            chaddr: r.array()?,
            options: Options::default(),
        };
        let _sname = r.take(SNAME_LEN)?;
        let _file = r.take(FILE_LEN)?;
        if r.array::<4>()? != MAGIC_COOKIE {
            return Err(DecodeError::NoCookie);
        }
        // RFC 3396: the instances of one option code form one value (a
        // sender splits values longer than 255 bytes). Bounded by the packet.
        let mut values: Vec<(u8, Vec<u8>)> = Vec::new();
        loop {
            let code = r.u8().map_err(|_| DecodeError::NoEnd)?;
            match code {
                OPT_PAD => {}
                OPT_END => break,
                _ => {
                    let len = r.u8()?;
                    let value = r.take(usize::from(len))?;
                    match values.iter_mut().find(|(c, _)| *c == code) {
                        Some((_, joined)) => joined.extend_from_slice(value),
                        None => values.push((code, value.to_vec())),
                    }
                }
            }
        }
        for (code, value) in &values {
            packet.options.set(*code, value)?;
        }
        Ok(packet)
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

fn base_packet(xid: u32, mac: [u8; 6], ciaddr: Ipv4Addr, broadcast: bool) -> Packet {
    let mut chaddr = [0; 16];
    for (to, from) in chaddr.iter_mut().zip(mac) {
        *to = from;
    }
    let mut client_id = vec![HTYPE_ETHERNET];
    client_id.extend_from_slice(&mac);
    Packet {
        op: BOOTREQUEST,
        htype: HTYPE_ETHERNET,
        hlen: HLEN_ETHERNET,
        xid,
        flags: if broadcast { FLAG_BROADCAST } else { 0 },
        ciaddr,
        chaddr,
        options: Options {
            message_type: Some(MessageType::Request),
            client_id: Some(client_id),
            max_size: Some(MAX_MESSAGE_SIZE),
            parameters: vec![
                OPT_SUBNET_MASK,
                OPT_ROUTER,
                OPT_DNS,
                OPT_LEASE_TIME,
                OPT_RENEWAL,
                OPT_REBINDING,
            ],
            ..Options::default()
        },
        ..Packet::default()
    }
}

fn encode_request(packet: &Packet) -> Vec<u8> {
    let mut bytes = packet.encode();
    if bytes.len() < MIN_REQUEST_LEN {
        bytes.resize(MIN_REQUEST_LEN, OPT_PAD); // after END
    }
    bytes
}

/// DHCPDISCOVER, asking for a broadcast answer (we have no address yet).
pub fn discover(xid: u32, mac: [u8; 6]) -> Vec<u8> {
    let mut packet = base_packet(xid, mac, Ipv4Addr::UNSPECIFIED, true);
    packet.options.message_type = Some(MessageType::Discover);
    encode_request(&packet)
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
pub fn request(xid: u32, mac: [u8; 6], lease: &Lease, kind: RequestKind) -> Vec<u8> {
    let packet = match kind {
        RequestKind::Selecting => {
            let mut packet = base_packet(xid, mac, Ipv4Addr::UNSPECIFIED, true);
            packet.options.requested_ip = Some(lease.address);
            packet.options.server = Some(lease.server);
            packet
        }
        RequestKind::Renewing | RequestKind::Rebinding => {
            base_packet(xid, mac, lease.address, false)
        }
    };
    encode_request(&packet)
}

/// Decode and check a datagram that arrived on port 68: it must be a
/// BOOTREPLY to our `xid` and `mac`, an OFFER, ACK or NAK, and an OFFER/ACK
/// must carry a usable lease.
pub fn parse_reply(bytes: &[u8], xid: u32, mac: [u8; 6]) -> Result<Reply, DhcpError> {
    let packet = Packet::decode(bytes).map_err(DhcpError::Decode)?;
    if packet.op != BOOTREPLY {
        return Err(DhcpError::NotReply);
    }
    if packet.xid != xid {
        return Err(DhcpError::WrongXid {
            expected: xid,
            got: packet.xid,
        });
    }
    if packet.hlen != HLEN_ETHERNET || !packet.chaddr.starts_with(&mac) {
        return Err(DhcpError::WrongChaddr);
    }
    let options = &packet.options;
    let kind = options.message_type.ok_or(DhcpError::MissingType)?;
    match kind {
        MessageType::Nak => Ok(Reply::Nak {
            server: options.server.unwrap_or(Ipv4Addr::UNSPECIFIED),
            message: options
                .message
                .as_ref()
                .map(|m| m.chars().take(MAX_SERVER_MESSAGE).collect()),
        }),
        MessageType::Offer => {
            // RFC 2131: an OFFER MUST name its server; we need it to REQUEST.
            let server = options
                .server
                .ok_or_else(|| invalid("OFFER without a server identifier"))?;
            Ok(Reply::Offer(lease_from(&packet, server)?))
        }
        MessageType::Ack => Ok(Reply::Ack(lease_from(
            &packet,
            options.server.unwrap_or(Ipv4Addr::UNSPECIFIED),
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

fn lease_from(packet: &Packet, server: Ipv4Addr) -> Result<Lease, DhcpError> {
    let options = &packet.options;
    let address = packet.yiaddr;
    if !usable_unicast(address) {
        return Err(invalid(format!("offered address {address}")));
    }
    let prefix = match options.subnet_mask {
        Some(mask) => {
            let p = mask_prefix(mask).ok_or_else(|| invalid(format!("subnet mask {mask}")))?;
            if p == 0 || p > 30 {
                return Err(invalid(format!("subnet mask {mask}")));
            }
            p
        }
        // No mask: the classful default (RFC 2131 leaves it to the client).
        None => match address.octets() {
            [0..=127, ..] => 8,
            [128..=191, ..] => 16,
            _ => 24,
        },
    };
    let router = options.routers.iter().copied().find(|r| usable_unicast(*r));
    let dns = options
        .dns
        .iter()
        .copied()
        .filter(|d| usable_unicast(*d))
        .take(MAX_DNS_SERVERS)
        .collect();
    let lease_secs = options.lease_secs.unwrap_or(DEFAULT_LEASE_SECS);
    if lease_secs == 0 {
        return Err(invalid("lease time 0"));
    }
    let default_t1 = lease_secs / 2;
    let default_t2 = u32::try_from(u64::from(lease_secs) * 7 / 8).unwrap_or(u32::MAX);
    let mut renew_secs = options.renew_secs.unwrap_or(default_t1);
    let mut rebind_secs = options.rebind_secs.unwrap_or(default_t2);
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
        let packet = discover(xid, self.mac);
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
        let packet = request(xid, self.mac, &offer, RequestKind::Selecting);
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
        let packet = request(xid, self.mac, lease, kind);
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

    fn chaddr(mac: [u8; 6]) -> [u8; 16] {
        let mut out = [0; 16];
        out[..6].copy_from_slice(&mac);
        out
    }

    /// A server reply as QEMU's slirp sends it.
    fn reply(kind: MessageType, xid: u32, mac: [u8; 6]) -> Packet {
        Packet {
            op: BOOTREPLY,
            htype: HTYPE_ETHERNET,
            hlen: HLEN_ETHERNET,
            xid,
            yiaddr: Ipv4Addr::new(10, 0, 2, 15),
            siaddr: Ipv4Addr::new(10, 0, 2, 2),
            chaddr: chaddr(mac),
            options: Options {
                message_type: Some(kind),
                server: Some(Ipv4Addr::new(10, 0, 2, 2)),
                subnet_mask: Some(Ipv4Addr::new(255, 255, 255, 0)),
                routers: vec![Ipv4Addr::new(10, 0, 2, 2)],
                dns: vec![Ipv4Addr::new(10, 0, 2, 3)],
                lease_secs: Some(86400),
                ..Options::default()
            },
            ..Packet::default()
        }
    }

    fn bytes(packet: &Packet) -> Vec<u8> {
        packet.encode()
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

    /// The header and cookie of an OFFER to us, then `options` as given.
    fn with_options(options: &[u8]) -> Vec<u8> {
        let mut out = bytes(&Packet {
            options: Options::default(),
            ..reply(MessageType::Offer, XID, MAC)
        });
        out.truncate(HEADER_LEN + 4); // drop the END
        out.extend_from_slice(options);
        out
    }

    /// OFFER and ACK as QEMU 7.2's slirp sent them (`restrict=off`, so with
    /// router and DNS), captured with `-object filter-dump` during a boot.
    const SLIRP_OFFER: &[u8] = include_bytes!("testdata/slirp-offer.bin");
    const SLIRP_ACK: &[u8] = include_bytes!("testdata/slirp-ack.bin");
    const SLIRP_XID: u32 = 0xec4b_2a9a;

    #[test]
    fn captured_slirp_replies() {
        assert_eq!(
            parse_reply(SLIRP_OFFER, SLIRP_XID, MAC).unwrap(),
            Reply::Offer(slirp_lease())
        );
        assert_eq!(
            parse_reply(SLIRP_ACK, SLIRP_XID, MAC).unwrap(),
            Reply::Ack(slirp_lease())
        );
        assert!(matches!(
            parse_reply(SLIRP_ACK, SLIRP_XID ^ 1, MAC),
            Err(DhcpError::WrongXid { .. })
        ));
        // Everything up to END is needed; the rest is padding.
        let end = HEADER_LEN + 4 + 34;
        assert_eq!(SLIRP_OFFER.get(end - 1), Some(&OPT_END));
        for n in 0..end {
            assert!(
                parse_reply(&SLIRP_OFFER[..n], SLIRP_XID, MAC).is_err(),
                "{n}"
            );
        }
        assert!(parse_reply(&SLIRP_OFFER[..end], SLIRP_XID, MAC).is_ok());
        // Decoding and encoding again gives the same bytes up to END.
        let packet = Packet::decode(SLIRP_ACK).unwrap();
        assert_eq!(packet.encode(), SLIRP_ACK[..end]);
    }

    #[test]
    fn every_truncation_is_an_error() {
        // Ends in END, no padding: every shorter prefix is cut somewhere.
        let good = bytes(&reply(MessageType::Offer, XID, MAC));
        assert_eq!(good.last(), Some(&OPT_END));
        assert!(parse_reply(&good, XID, MAC).is_ok());
        for n in 0..good.len() {
            assert!(
                matches!(parse_reply(&good[..n], XID, MAC), Err(DhcpError::Decode(_))),
                "{n} bytes"
            );
        }
    }

    #[test]
    fn random_bytes_and_flips_are_errors_never_panics() {
        let good = bytes(&reply(MessageType::Ack, XID, MAC));
        // A byte flip at every offset.
        for i in 0..good.len() {
            let mut flipped = good.clone();
            flipped[i] ^= 0xff;
            let _ = parse_reply(&flipped, XID, MAC);
        }
        // xorshift: deterministic noise, no rand dependency.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..3000 {
            let len = usize::try_from(next() % 600).unwrap();
            let noise: Vec<u8> = (0..len).map(|_| next().to_le_bytes()[0]).collect();
            assert!(parse_reply(&noise, XID, MAC).is_err());
            // Random options behind a valid header reach the option parser.
            if len > 0 {
                let mut packet = with_options(&noise);
                let _ = parse_reply(&packet, XID, MAC);
                packet.push(OPT_END);
                let _ = Packet::decode(&packet);
            }
        }
        assert!(parse_reply(&[0xff; 300], XID, MAC).is_err());
        assert!(parse_reply(&[], XID, MAC).is_err());
    }

    #[test]
    fn malformed_options_are_refused() {
        let decode = |options: &[u8]| Packet::decode(&with_options(options));
        // A length running past the end of the packet.
        assert!(matches!(
            decode(&[53, 1, 2, 51, 200, 0, 0, 1, 0]),
            Err(DecodeError::Read(ReadError::Short { .. }))
        ));
        // A code with no length byte.
        assert!(decode(&[53, 1, 2, 51]).is_err());
        // No END.
        assert_eq!(decode(&[53, 1, 2]), Err(DecodeError::NoEnd));
        assert_eq!(decode(&[]), Err(DecodeError::NoEnd));
        // Values of the wrong size.
        for bad in [
            &[53, 2, 2, 0, 255][..],
            &[54, 3, 10, 0, 2, 255],
            &[51, 8, 0, 0, 0, 1, 0, 0, 0, 1, 255],
            &[3, 0, 255],
            &[6, 6, 10, 0, 2, 3, 10, 0, 255],
            &[57, 1, 5, 255],
        ] {
            assert!(
                matches!(decode(bad), Err(DecodeError::OptionLength { .. })),
                "{bad:?}"
            );
        }
        // No cookie: BOOTP, not DHCP.
        let mut bootp = bytes(&reply(MessageType::Offer, XID, MAC));
        bootp[HEADER_LEN] = 0;
        assert_eq!(Packet::decode(&bootp), Err(DecodeError::NoCookie));
        // PAD, unknown options and junk after END are skipped.
        let packet = decode(&[0, 0, 53, 1, 2, 0, 250, 3, 1, 2, 3, 255, 9, 9, 9]).unwrap();
        assert_eq!(packet.options.message_type, Some(MessageType::Offer));
        // An option given twice is one value, joined (RFC 3396): here a DNS
        // list split mid-address, and a lease time that becomes 8 bytes.
        let packet =
            decode(&[6, 3, 10, 0, 2, 51, 4, 0, 0, 0, 1, 6, 5, 3, 10, 0, 2, 4, 255]).unwrap();
        assert_eq!(
            packet.options.dns,
            [Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(10, 0, 2, 4)]
        );
        assert_eq!(packet.options.lease_secs, Some(1));
        assert_eq!(
            decode(&[51, 4, 0, 0, 0, 1, 51, 4, 0, 0, 0, 2, 255]),
            Err(DecodeError::OptionLength { code: 51, len: 8 })
        );
        // Header only, with END: a packet without a message type.
        assert!(matches!(
            parse_reply(&with_options(&[255]), XID, MAC),
            Err(DhcpError::MissingType)
        ));
        // hlen 255 and a long chaddr: not ours, and no slicing past anything.
        let mut big_hlen = reply(MessageType::Offer, XID, MAC);
        big_hlen.hlen = 255;
        assert!(matches!(
            parse_reply(&bytes(&big_hlen), XID, MAC),
            Err(DhcpError::WrongChaddr)
        ));
    }

    #[test]
    fn packets_round_trip_and_long_options_are_split() {
        let mut packet = reply(MessageType::Ack, XID, MAC);
        packet.options.message = Some("x".repeat(300));
        packet.options.hostname = Some("edge-1".into());
        packet.options.renew_secs = Some(100);
        packet.options.rebind_secs = Some(200);
        packet.options.routers = (1..=70).map(|i| Ipv4Addr::new(10, 0, 0, i)).collect();
        packet.hops = 1;
        packet.secs = 7;
        packet.giaddr = Ipv4Addr::new(192, 0, 2, 1);
        let encoded = packet.encode();
        assert_eq!(Packet::decode(&encoded), Ok(packet.clone()));
        // 70 routers are 280 bytes: two option 3s (255 + 25 bytes).
        let options = &encoded[HEADER_LEN + 4..];
        assert_eq!(options.windows(2).filter(|w| *w == [3, 255]).count(), 1);
        assert_eq!(options.windows(2).filter(|w| *w == [3, 25]).count(), 1);
        let request = discover(XID, MAC);
        let decoded = Packet::decode(&request).unwrap();
        assert_eq!(decoded.encode(), request[..decoded.encode().len()]);
    }

    #[test]
    fn replies_to_others_are_refused() {
        let offer = bytes(&reply(MessageType::Offer, XID + 1, MAC));
        assert!(matches!(
            parse_reply(&offer, XID, MAC),
            Err(DhcpError::WrongXid { .. })
        ));
        let offer = bytes(&reply(MessageType::Offer, XID, [1, 2, 3, 4, 5, 6]));
        assert!(matches!(
            parse_reply(&offer, XID, MAC),
            Err(DhcpError::WrongChaddr)
        ));
        let mut msg = reply(MessageType::Offer, XID, MAC);
        msg.op = BOOTREQUEST;
        assert!(matches!(
            parse_reply(&bytes(&msg), XID, MAC),
            Err(DhcpError::NotReply)
        ));
        // Our own broadcast DISCOVER, looped back: not a reply.
        let own = discover(XID, MAC);
        assert!(matches!(
            parse_reply(&own, XID, MAC),
            Err(DhcpError::NotReply)
        ));
        let msg = reply(MessageType::Inform, XID, MAC);
        assert!(matches!(
            parse_reply(&bytes(&msg), XID, MAC),
            Err(DhcpError::UnexpectedType(MessageType::Inform))
        ));
        let msg = reply(MessageType::Other(13), XID, MAC);
        assert!(matches!(
            parse_reply(&bytes(&msg), XID, MAC),
            Err(DhcpError::UnexpectedType(MessageType::Other(13)))
        ));
    }

    #[test]
    fn unusable_leases_are_refused() {
        let mut msg = reply(MessageType::Offer, XID, MAC);
        msg.yiaddr = Ipv4Addr::UNSPECIFIED;
        assert!(matches!(
            parse_reply(&bytes(&msg), XID, MAC),
            Err(DhcpError::InvalidLease(_))
        ));
        let mut msg = reply(MessageType::Offer, XID, MAC);
        msg.yiaddr = Ipv4Addr::new(224, 0, 0, 1);
        assert!(matches!(
            parse_reply(&bytes(&msg), XID, MAC),
            Err(DhcpError::InvalidLease(_))
        ));
        let mut msg = reply(MessageType::Offer, XID, MAC);
        msg.options.subnet_mask = Some(Ipv4Addr::new(255, 0, 255, 0));
        assert!(matches!(
            parse_reply(&bytes(&msg), XID, MAC),
            Err(DhcpError::InvalidLease(_))
        ));
        let mut msg = reply(MessageType::Offer, XID, MAC);
        msg.options.server = None;
        assert!(matches!(
            parse_reply(&bytes(&msg), XID, MAC),
            Err(DhcpError::InvalidLease(_))
        ));
        let mut msg = reply(MessageType::Ack, XID, MAC);
        msg.options.lease_secs = Some(0);
        assert!(matches!(
            parse_reply(&bytes(&msg), XID, MAC),
            Err(DhcpError::InvalidLease(_))
        ));
    }

    #[test]
    fn nak_is_reported_with_its_message() {
        let mut msg = reply(MessageType::Nak, XID, MAC);
        msg.options.message = Some("address taken".into());
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
        let offer = parse_reply(&bytes(&reply(MessageType::Offer, XID, MAC)), XID, MAC).unwrap();
        assert_eq!(offer, Reply::Offer(slirp_lease()));
        let mut ack = reply(MessageType::Ack, XID, MAC);
        ack.options.server = None;
        ack.options.renew_secs = Some(100);
        ack.options.rebind_secs = Some(50); // T2 < T1: defaults
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
        let mut ack = reply(MessageType::Ack, XID, MAC);
        ack.options.lease_secs = Some(10);
        let Reply::Ack(lease) = parse_reply(&bytes(&ack), XID, MAC).unwrap() else {
            panic!()
        };
        assert_eq!((lease.renew_secs, lease.rebind_secs), (8, 8));
        let mut ack = reply(MessageType::Ack, XID, MAC);
        ack.options.lease_secs = Some(u32::MAX);
        let Reply::Ack(lease) = parse_reply(&bytes(&ack), XID, MAC).unwrap() else {
            panic!()
        };
        assert_eq!(lease.renew_secs, u32::MAX / 2);
        // No mask: classful default.
        let mut ack = reply(MessageType::Ack, XID, MAC);
        ack.options.subnet_mask = None;
        let Reply::Ack(lease) = parse_reply(&bytes(&ack), XID, MAC).unwrap() else {
            panic!()
        };
        assert_eq!(lease.prefix, 8);
    }

    /// The exact bytes of a DISCOVER.
    #[test]
    fn discover_bytes() {
        let d = discover(XID, MAC);
        assert_eq!(d.len(), MIN_REQUEST_LEN);
        assert_eq!(
            d[..44],
            [
                1, 1, 6, 0, // op, htype, hlen, hops
                0x12, 0x34, 0x56, 0x78, // xid
                0, 0, 0x80, 0, // secs, flags: broadcast
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // ciaddr … giaddr
                0x52, 0x54, 0, 0x12, 0x34, 0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // chaddr
            ]
        );
        assert!(d[44..HEADER_LEN].iter().all(|b| *b == 0), "sname, file");
        assert_eq!(
            d[HEADER_LEN..HEADER_LEN + 30],
            [
                99, 130, 83, 99, // magic cookie
                53, 1, 1, // DISCOVER
                61, 7, 1, 0x52, 0x54, 0, 0x12, 0x34, 0x56, // client id
                57, 2, 0x05, 0xdc, // max message size 1500
                55, 6, 1, 3, 6, 51, 58, 59, // parameter request list
                255, 0, // END, then PAD
            ]
        );
        assert!(d[HEADER_LEN + 30..].iter().all(|b| *b == 0));
    }

    #[test]
    fn requests_carry_what_the_server_needs() {
        let d = Packet::decode(&discover(XID, MAC)).unwrap();
        assert_eq!(d.op, BOOTREQUEST);
        assert_eq!((d.xid, d.chaddr), (XID, chaddr(MAC)));
        assert_eq!(d.flags, FLAG_BROADCAST);
        assert_eq!(d.options.message_type, Some(MessageType::Discover));

        let lease = slirp_lease();
        let r = Packet::decode(&request(XID, MAC, &lease, RequestKind::Selecting)).unwrap();
        assert_eq!(r.options.message_type, Some(MessageType::Request));
        assert_eq!(r.ciaddr, Ipv4Addr::UNSPECIFIED);
        assert_eq!(r.flags, FLAG_BROADCAST);
        assert_eq!(r.options.requested_ip, Some(lease.address));
        assert_eq!(r.options.server, Some(lease.server));

        for kind in [RequestKind::Renewing, RequestKind::Rebinding] {
            let bytes = request(XID, MAC, &lease, kind);
            assert!(bytes.len() >= MIN_REQUEST_LEN);
            let r = Packet::decode(&bytes).unwrap();
            assert_eq!(r.ciaddr, lease.address);
            assert_eq!(r.flags, 0);
            assert_eq!(r.options.requested_ip, None);
            assert_eq!(r.options.server, None);
        }
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
