//! rtnetlink, the few requests boot needs: list links, set a link up, add or
//! remove an IPv4 address, set the default route, list addresses.
//!
//! Message building and reply decoding are pure functions (tested without a
//! socket); [`Netlink`] only sends bytes and collects the replies. The socket
//! is synchronous with a receive timeout: every request is answered by the
//! kernel within microseconds, and a timeout means a kernel bug, not a wait.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkLayerType, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use nix::errno::Errno;

/// Receive buffer: the kernel sends dump replies in chunks of at most ~32 KiB
/// (`NLMSG_GOODSIZE` is a page, capped at 8 KiB by default; 32 KiB leaves room).
const RECV_BUFFER: usize = 32 * 1024;
/// Reply messages accepted for one request before giving up: a dump of a
/// board's handful of links/addresses is a few dozen messages.
const MAX_REPLY_MESSAGES: usize = 4096;
/// A kernel reply slower than this means something is badly wrong.
const RECV_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink socket: {0}")]
    Socket(std::io::Error),
    #[error("netlink {op}: {source}")]
    Io {
        op: &'static str,
        source: std::io::Error,
    },
    #[error("netlink {op}: the kernel answered {errno}")]
    Kernel { op: &'static str, errno: Errno },
    #[error("netlink {op}: undecodable reply: {reason}")]
    Decode { op: &'static str, reason: String },
    #[error("netlink {op}: more than {MAX_REPLY_MESSAGES} reply messages")]
    TooManyReplies { op: &'static str },
}

/// One network link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// The hardware address, if it is a 6-byte (Ethernet) one.
    pub mac: Option<[u8; 6]>,
    pub ethernet: bool,
    pub loopback: bool,
    pub up: bool,
    /// IFF_RUNNING: the link has carrier.
    pub running: bool,
}

impl Link {
    /// An Ethernet-like link with a real hardware address, not loopback.
    pub fn is_ethernet(&self) -> bool {
        self.ethernet && !self.loopback && self.mac.is_some_and(|m| m != [0; 6])
    }
}

/// One address on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressInfo {
    pub index: u32,
    pub address: IpAddr,
    pub prefix: u8,
}

/// Encode one request.
pub fn encode(message: RouteNetlinkMessage, flags: u16, sequence: u32) -> Vec<u8> {
    let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(message));
    packet.header.flags = flags;
    packet.header.sequence_number = sequence;
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    buf
}

/// Decode every message in one datagram, walking the length fields.
pub fn decode_all(
    op: &'static str,
    mut bytes: &[u8],
) -> Result<Vec<NetlinkMessage<RouteNetlinkMessage>>, NetlinkError> {
    let decode = |reason: String| NetlinkError::Decode { op, reason };
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let len_bytes: [u8; 4] = bytes
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| decode(format!("{} trailing bytes", bytes.len())))?;
        let len = usize::try_from(u32::from_ne_bytes(len_bytes)).unwrap_or(usize::MAX);
        if len < 16 || len > bytes.len() {
            return Err(decode(format!(
                "message length {len} with {} bytes left",
                bytes.len()
            )));
        }
        let (one, _) = bytes.split_at(len);
        let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(one)
            .map_err(|e| decode(e.to_string()))?;
        out.push(message);
        // Messages are 4-byte aligned.
        let next = len.saturating_add(3) & !3;
        bytes = bytes.get(next..).unwrap_or_default();
    }
    Ok(out)
}

/// RTM_NEWLINK that sets IFF_UP on `index` (and changes nothing else).
pub fn set_up_message(index: u32) -> RouteNetlinkMessage {
    let mut link = LinkMessage::default();
    link.header.index = index;
    link.header.flags = LinkFlags::Up;
    link.header.change_mask = LinkFlags::Up;
    RouteNetlinkMessage::NewLink(link)
}

fn ipv4_address_message(index: u32, address: Ipv4Addr, prefix: u8) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.prefix_len = prefix;
    msg.header.index = index;
    msg.header.scope = AddressScope::Universe;
    msg.attributes
        .push(AddressAttribute::Local(IpAddr::V4(address)));
    msg.attributes
        .push(AddressAttribute::Address(IpAddr::V4(address)));
    if prefix < 31 {
        msg.attributes
            .push(AddressAttribute::Broadcast(broadcast(address, prefix)));
    }
    msg
}

/// The subnet's broadcast address.
pub fn broadcast(address: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    let host_bits = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
    Ipv4Addr::from(u32::from(address) | host_bits)
}

/// RTM_NEWADDR for `address/prefix` on `index`.
pub fn new_address_message(index: u32, address: Ipv4Addr, prefix: u8) -> RouteNetlinkMessage {
    RouteNetlinkMessage::NewAddress(ipv4_address_message(index, address, prefix))
}

/// RTM_DELADDR for `address/prefix` on `index`.
pub fn del_address_message(index: u32, address: Ipv4Addr, prefix: u8) -> RouteNetlinkMessage {
    RouteNetlinkMessage::DelAddress(ipv4_address_message(index, address, prefix))
}

/// RTM_NEWROUTE: 0.0.0.0/0 via `gateway` out of `index`, main table.
pub fn default_route_message(index: u32, gateway: Ipv4Addr) -> RouteNetlinkMessage {
    let mut route = RouteMessage::default();
    route.header.address_family = AddressFamily::Inet;
    route.header.destination_prefix_length = 0;
    route.header.table = RouteHeader::RT_TABLE_MAIN;
    route.header.protocol = RouteProtocol::Boot;
    route.header.scope = RouteScope::Universe;
    route.header.kind = RouteType::Unicast;
    route
        .attributes
        .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
    route.attributes.push(RouteAttribute::Oif(index));
    RouteNetlinkMessage::NewRoute(route)
}

/// A [`Link`] from a link dump entry (`None` if it has no name).
pub fn link_from_message(msg: &LinkMessage) -> Option<Link> {
    let mut name = None;
    let mut mac = None;
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::Address(a) => mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
            _ => {}
        }
    }
    Some(Link {
        index: msg.header.index,
        name: name?,
        mac,
        ethernet: msg.header.link_layer_type == LinkLayerType::Ether,
        loopback: msg.header.flags.contains(LinkFlags::Loopback)
            || msg.header.link_layer_type == LinkLayerType::Loopback,
        up: msg.header.flags.contains(LinkFlags::Up),
        running: msg.header.flags.contains(LinkFlags::Running),
    })
}

/// An [`AddressInfo`] from an address dump entry.
pub fn address_from_message(msg: &AddressMessage) -> Option<AddressInfo> {
    let mut local = None;
    let mut address = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(a) => local = Some(*a),
            AddressAttribute::Address(a) => address = Some(*a),
            _ => {}
        }
    }
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS the peer's on
    // point-to-point links. Plain links carry both, equal.
    Some(AddressInfo {
        index: msg.header.index,
        address: local.or(address)?,
        prefix: msg.header.prefix_len,
    })
}

/// An rtnetlink connection.
pub struct Netlink {
    socket: Socket,
    sequence: u32,
    buffer: Vec<u8>,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink")
            .field("sequence", &self.sequence)
            .finish_non_exhaustive()
    }
}

impl Netlink {
    pub fn open() -> Result<Self, NetlinkError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Socket)?;
        socket.bind_auto().map_err(NetlinkError::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(NetlinkError::Socket)?;
        rustix::net::sockopt::set_socket_timeout(
            &socket,
            rustix::net::sockopt::Timeout::Recv,
            Some(RECV_TIMEOUT),
        )
        .map_err(|e| NetlinkError::Socket(e.into()))?;
        Ok(Self {
            socket,
            sequence: 0,
            buffer: vec![0; RECV_BUFFER],
        })
    }

    /// Send one request and collect its replies up to the ACK (or DONE for a
    /// dump). Replies to other sequence numbers are skipped.
    fn request(
        &mut self,
        op: &'static str,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.sequence = self.sequence.wrapping_add(1);
        let sequence = self.sequence;
        let bytes = encode(message, flags | NLM_F_REQUEST, sequence);
        self.socket
            .send(&bytes, 0)
            .map_err(|source| NetlinkError::Io { op, source })?;
        let mut replies = Vec::new();
        let mut seen = 0usize;
        loop {
            let n = self
                .socket
                .recv(&mut &mut self.buffer[..], 0)
                .map_err(|source| NetlinkError::Io { op, source })?;
            let datagram = self.buffer.get(..n).unwrap_or_default();
            for reply in decode_all(op, datagram)? {
                seen += 1;
                if seen > MAX_REPLY_MESSAGES {
                    return Err(NetlinkError::TooManyReplies { op });
                }
                if reply.header.sequence_number != sequence {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(replies),
                            Some(code) => Err(NetlinkError::Kernel {
                                op,
                                errno: Errno::from_raw(-code.get()),
                            }),
                        };
                    }
                    NetlinkPayload::InnerMessage(m) => replies.push(m),
                    _ => {}
                }
            }
        }
    }

    fn act(
        &mut self,
        op: &'static str,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<(), NetlinkError> {
        self.request(op, message, flags | NLM_F_ACK).map(|_| ())
    }

    pub fn links(&mut self) -> Result<Vec<Link>, NetlinkError> {
        let replies = self.request(
            "dump links",
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(replies
            .iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => link_from_message(l),
                _ => None,
            })
            .collect())
    }

    pub fn addresses(&mut self) -> Result<Vec<AddressInfo>, NetlinkError> {
        let replies = self.request(
            "dump addresses",
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(replies
            .iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewAddress(a) => address_from_message(a),
                _ => None,
            })
            .collect())
    }

    pub fn set_up(&mut self, index: u32) -> Result<(), NetlinkError> {
        self.act("set link up", set_up_message(index), 0)
    }

    /// Add (or refresh) an address; adding one already there is not an error.
    pub fn add_address(
        &mut self,
        index: u32,
        address: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), NetlinkError> {
        self.act(
            "add address",
            new_address_message(index, address, prefix),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    /// Remove an address; one already gone is not an error.
    pub fn del_address(
        &mut self,
        index: u32,
        address: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), NetlinkError> {
        match self.act(
            "delete address",
            del_address_message(index, address, prefix),
            0,
        ) {
            Err(NetlinkError::Kernel {
                errno: Errno::EADDRNOTAVAIL,
                ..
            }) => Ok(()),
            other => other,
        }
    }

    /// Set (create or replace) the default route.
    pub fn set_default_route(&mut self, index: u32, gateway: Ipv4Addr) -> Result<(), NetlinkError> {
        self.act(
            "set default route",
            default_route_message(index, gateway),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::DoneMessage;

    #[test]
    fn garbage_replies_are_errors_not_panics() {
        for bytes in [
            &[1u8, 2, 3][..],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[255, 255, 255, 255, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            // Claims 20 bytes, a NEWLINK whose header is cut short.
            &[20, 0, 0, 0, 16, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ] {
            assert!(decode_all("test", bytes).is_err(), "{bytes:?}");
        }
    }

    #[test]
    fn requests_round_trip_through_the_codec() {
        let bytes = encode(
            new_address_message(2, Ipv4Addr::new(10, 0, 2, 15), 24),
            NLM_F_REQUEST | NLM_F_ACK,
            7,
        );
        let msgs = decode_all("test", &bytes).unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].header.sequence_number, 7);
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(a)) = &msgs[0].payload
        else {
            panic!("{msgs:?}");
        };
        assert_eq!(
            address_from_message(a),
            Some(AddressInfo {
                index: 2,
                address: IpAddr::V4(Ipv4Addr::new(10, 0, 2, 15)),
                prefix: 24
            })
        );
        assert!(a
            .attributes
            .contains(&AddressAttribute::Broadcast(Ipv4Addr::new(10, 0, 2, 255))));

        let bytes = encode(
            default_route_message(2, Ipv4Addr::new(10, 0, 2, 2)),
            NLM_F_REQUEST,
            8,
        );
        // Pin the fixed part: nlmsghdr (RTM_NEWROUTE = 24) then rtmsg.
        assert_eq!(&bytes[4..6], &24u16.to_ne_bytes());
        assert_eq!(&bytes[16..24], &[2, 0, 0, 0, 254, 3, 0, 1]);

        let bytes = encode(set_up_message(3), NLM_F_REQUEST, 9);
        let msgs = decode_all("test", &bytes).unwrap();
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) = &msgs[0].payload else {
            panic!("{msgs:?}");
        };
        assert_eq!(
            (l.header.index, l.header.flags, l.header.change_mask),
            (3, LinkFlags::Up, LinkFlags::Up)
        );
    }

    #[test]
    fn several_messages_in_one_datagram() {
        let mut link = LinkMessage::default();
        link.header.index = 2;
        link.header.link_layer_type = LinkLayerType::Ether;
        link.attributes.push(LinkAttribute::IfName("eth0".into()));
        link.attributes.push(LinkAttribute::Address(vec![
            0x52, 0x54, 0, 0x12, 0x34, 0x56,
        ]));
        let mut bytes = encode(RouteNetlinkMessage::NewLink(link), NLM_F_DUMP, 1);
        let mut done = NetlinkMessage::<RouteNetlinkMessage>::new(
            NetlinkHeader::default(),
            NetlinkPayload::Done(DoneMessage::default()),
        );
        done.finalize();
        let mut tail = vec![0; done.buffer_len()];
        done.serialize(&mut tail);
        bytes.extend_from_slice(&tail);
        let msgs = decode_all("test", &bytes).unwrap();
        assert_eq!(msgs.len(), 2);
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) = &msgs[0].payload else {
            panic!("{msgs:?}");
        };
        let link = link_from_message(l).unwrap();
        assert_eq!(link.name, "eth0");
        assert!(link.is_ethernet());
        assert!(matches!(msgs[1].payload, NetlinkPayload::Done(_)));
    }

    #[test]
    fn loopback_and_addressless_links_are_not_ethernet() {
        let mut lo = LinkMessage::default();
        lo.header.flags = LinkFlags::Loopback | LinkFlags::Up;
        lo.header.link_layer_type = LinkLayerType::Loopback;
        lo.attributes.push(LinkAttribute::IfName("lo".into()));
        lo.attributes.push(LinkAttribute::Address(vec![0; 6]));
        let lo = link_from_message(&lo).unwrap();
        assert!(lo.loopback && lo.up && !lo.is_ethernet());

        let mut nameless = LinkMessage::default();
        nameless.header.link_layer_type = LinkLayerType::Ether;
        assert_eq!(link_from_message(&nameless), None);
    }

    #[test]
    fn real_kernel_lists_loopback() {
        // Local rtnetlink dump only (no traffic): works unprivileged.
        let mut nl = Netlink::open().unwrap();
        let links = nl.links().unwrap();
        assert!(
            links.iter().any(|l| l.loopback && l.name == "lo"),
            "{links:?}"
        );
        let addrs = nl.addresses().unwrap();
        assert!(addrs.iter().all(|a| a.index > 0));
        // An unprivileged change is refused with a named errno, not a hang.
        if !rustix::process::geteuid().is_root() {
            assert!(matches!(nl.set_up(1), Err(NetlinkError::Kernel { .. })));
        }
    }

    #[test]
    fn broadcast_addresses() {
        let a = Ipv4Addr::new(10, 0, 2, 15);
        assert_eq!(broadcast(a, 24), Ipv4Addr::new(10, 0, 2, 255));
        assert_eq!(broadcast(a, 0), Ipv4Addr::BROADCAST);
        assert_eq!(broadcast(a, 32), a);
    }
}
