//! The network: find the interface, bring it and `lo` up, address it (DHCP or
//! static from the machine config), keep the DHCP lease renewed.
//!
//! Boot calls [`bring_up`] once; when it used DHCP, the lead spawns
//! [`NetUp::renewal`] as a task, which renews at T1 forever (and keeps trying
//! to get a lease if boot got none). [`addresses`] feeds the status API.

pub mod dhcp;
pub mod netlink;
pub mod reader;

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use crate::config::{parse_cidr, NetworkConfig, NetworkMode};

use dhcp::{Backoff, Client, DhcpError, Lease, RequestKind};
use netlink::{AddressInfo, Link, Netlink, NetlinkError};

/// How long the interface may take to appear once its driver is loaded
/// (virtio_net probes asynchronously), and how often we look.
pub const INTERFACE_WAIT: Duration = Duration::from_secs(5);
/// Polling interval for the interface and its carrier: short, because boot
/// waits on it (the link usually comes up within tens of ms of `set_up`).
const INTERFACE_POLL: Duration = Duration::from_millis(10);
/// How long to wait for carrier after setting the link up before the first
/// DHCP packet (sent without carrier, it is lost and costs a retransmission).
const CARRIER_WAIT: Duration = Duration::from_secs(3);
/// Without a lease, the renewal task tries again after this, doubling to the cap.
const ACQUIRE_RETRY_FIRST: Duration = Duration::from_secs(10);
const ACQUIRE_RETRY_CAP: Duration = Duration::from_secs(300);
/// RFC 2131 §4.4.5: between renewal attempts wait half the time left, but at
/// least 60 s.
const MIN_RENEW_RETRY: Duration = Duration::from_secs(60);
/// Retransmissions of one RENEW/REBIND request.
const EXTEND_BACKOFF: Backoff = Backoff {
    first: Duration::from_secs(2),
    cap: Duration::from_secs(8),
    attempts: 3,
};

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Dhcp(#[from] DhcpError),
    #[error("no {} appeared within {waited:?}", if wanted.is_empty() { "Ethernet interface".to_owned() } else { format!("interface `{wanted}`") })]
    NoInterface { wanted: String, waited: Duration },
    #[error("interface {0} has no Ethernet hardware address: DHCP needs one")]
    NoHardwareAddress(String),
    #[error("static network config: {0}")]
    Static(String),
}

/// The interface we configure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
}

/// `wanted` by name, or (empty) the first Ethernet link in kernel order.
pub fn choose_interface(links: &[Link], wanted: &str) -> Option<Interface> {
    let link = if wanted.is_empty() {
        links.iter().find(|l| l.is_ethernet())
    } else {
        links.iter().find(|l| l.name == wanted)
    }?;
    Some(Interface {
        index: link.index,
        name: link.name.clone(),
        mac: link.mac.filter(|m| *m != [0; 6]),
    })
}

/// Poll the link list until the interface shows up.
pub async fn wait_for_interface(
    nl: &mut Netlink,
    wanted: &str,
    wait: Duration,
) -> Result<Interface, NetError> {
    let start = Instant::now();
    loop {
        if let Some(iface) = choose_interface(&nl.links()?, wanted) {
            tracing::debug!(iface = %iface.name, "interface after {:?}", start.elapsed());
            return Ok(iface);
        }
        if start.elapsed() >= wait {
            return Err(NetError::NoInterface {
                wanted: wanted.to_owned(),
                waited: wait,
            });
        }
        smol::Timer::after(INTERFACE_POLL).await;
    }
}

async fn wait_for_carrier(nl: &mut Netlink, iface: &Interface) -> Result<(), NetError> {
    let start = Instant::now();
    while start.elapsed() < CARRIER_WAIT {
        if nl
            .links()?
            .iter()
            .any(|l| l.index == iface.index && (l.lower_up || l.running))
        {
            tracing::debug!(iface = %iface.name, "carrier after {:?}", start.elapsed());
            return Ok(());
        }
        smol::Timer::after(INTERFACE_POLL).await;
    }
    tracing::warn!(iface = %iface.name, "no carrier after {CARRIER_WAIT:?}; going on");
    Ok(())
}

/// How the interface got its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addressing {
    Dhcp {
        /// `None`: no server answered at boot; the renewal task keeps trying.
        lease: Option<Lease>,
        acquired: Option<Instant>,
        error: Option<String>,
    },
    Static {
        address: Ipv4Addr,
        prefix: u8,
        gateway: Option<Ipv4Addr>,
    },
}

/// The result of [`bring_up`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetUp {
    pub iface: Interface,
    pub addressing: Addressing,
}

impl fmt::Display for NetUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.iface.name)?;
        match &self.addressing {
            Addressing::Dhcp {
                lease: Some(lease), ..
            } => write!(f, " {lease} (DHCP)"),
            Addressing::Dhcp { error, .. } => write!(
                f,
                " up, no DHCP lease yet ({}); retrying in the background",
                error.as_deref().unwrap_or("no answer")
            ),
            Addressing::Static {
                address,
                prefix,
                gateway,
            } => {
                write!(f, " {address}/{prefix}")?;
                if let Some(g) = gateway {
                    write!(f, " via {g}")?;
                }
                write!(f, " (static)")
            }
        }
    }
}

impl NetUp {
    pub fn lease(&self) -> Option<&Lease> {
        match &self.addressing {
            Addressing::Dhcp { lease, .. } => lease.as_ref(),
            Addressing::Static { .. } => None,
        }
    }

    /// The DHCP task to spawn (renew forever; acquire if boot got no lease).
    /// `None` for a static address.
    pub fn renewal(&self) -> Option<impl Future<Output = ()> + Send + 'static> {
        match &self.addressing {
            Addressing::Dhcp {
                lease, acquired, ..
            } => {
                let current = lease.clone().zip(*acquired);
                Some(run_dhcp(self.iface.clone(), current))
            }
            Addressing::Static { .. } => None,
        }
    }
}

/// Boot: bring up `lo` and the configured interface, then address it. A
/// DHCP server that does not answer is not an error here (the API must still
/// come up, e.g. on the serial link); see [`Addressing::Dhcp`].
pub async fn bring_up(config: &NetworkConfig) -> Result<NetUp, NetError> {
    let mut nl = Netlink::open()?;
    if let Some(lo) = nl.links()?.iter().find(|l| l.loopback) {
        if let Err(e) = nl.set_up(lo.index) {
            tracing::error!("bringing up lo: {e}");
        }
    }
    let iface = wait_for_interface(&mut nl, &config.interface, INTERFACE_WAIT).await?;
    nl.set_up(iface.index)?;
    match config.mode {
        NetworkMode::Static => {
            let (address, prefix, gateway) = static_config(config)?;
            apply_static(&mut nl, &iface, address, prefix, gateway)?;
            Ok(NetUp {
                iface,
                addressing: Addressing::Static {
                    address,
                    prefix,
                    gateway,
                },
            })
        }
        NetworkMode::Dhcp => {
            wait_for_carrier(&mut nl, &iface).await?;
            drop(nl);
            let addressing = match acquire_and_apply(&iface, Backoff::BOOT, None).await {
                Ok(lease) => Addressing::Dhcp {
                    lease: Some(lease),
                    acquired: Some(Instant::now()),
                    error: None,
                },
                Err(e) => {
                    tracing::warn!(iface = %iface.name, "{e}");
                    Addressing::Dhcp {
                        lease: None,
                        acquired: None,
                        error: Some(e.to_string()),
                    }
                }
            };
            Ok(NetUp { iface, addressing })
        }
    }
}

/// The static address, prefix and gateway of a (validated) config.
pub fn static_config(config: &NetworkConfig) -> Result<(Ipv4Addr, u8, Option<Ipv4Addr>), NetError> {
    let text = config
        .address
        .as_deref()
        .ok_or_else(|| NetError::Static("mode = \"static\" needs an address".to_owned()))?;
    let (address, prefix) = parse_cidr(text).map_err(NetError::Static)?;
    let gateway = config
        .gateway
        .as_deref()
        .map(|g| {
            g.parse::<Ipv4Addr>()
                .map_err(|_| NetError::Static(format!("gateway `{g}` is not an IPv4 address")))
        })
        .transpose()?;
    Ok((address, prefix, gateway))
}

pub fn apply_static(
    nl: &mut Netlink,
    iface: &Interface,
    address: Ipv4Addr,
    prefix: u8,
    gateway: Option<Ipv4Addr>,
) -> Result<(), NetError> {
    nl.add_address(iface.index, address, prefix)?;
    if let Some(gw) = gateway {
        nl.set_default_route(iface.index, gw)?;
    }
    tracing::info!(iface = %iface.name, "static address {address}/{prefix}");
    Ok(())
}

/// Put a lease on the interface: drop the previous address if it changed, add
/// the new one (replacing is idempotent), set the default route.
pub fn apply_lease(
    nl: &mut Netlink,
    iface: &Interface,
    lease: &Lease,
    previous: Option<&Lease>,
) -> Result<(), NetError> {
    if let Some(old) = previous {
        if (old.address, old.prefix) != (lease.address, lease.prefix) {
            nl.del_address(iface.index, old.address, old.prefix)?;
        }
    }
    nl.add_address(iface.index, lease.address, lease.prefix)?;
    if let Some(router) = lease.router {
        nl.set_default_route(iface.index, router)?;
    }
    Ok(())
}

fn remove_lease(iface: &Interface, lease: &Lease) {
    let result =
        Netlink::open().and_then(|mut nl| nl.del_address(iface.index, lease.address, lease.prefix));
    if let Err(e) = result {
        tracing::error!(iface = %iface.name, "removing {}/{}: {e}", lease.address, lease.prefix);
    }
}

fn mac_of(iface: &Interface) -> Result<[u8; 6], NetError> {
    iface
        .mac
        .ok_or_else(|| NetError::NoHardwareAddress(iface.name.clone()))
}

/// Acquire a lease (DISCOVER…ACK) and put it on the interface.
pub async fn acquire_and_apply(
    iface: &Interface,
    backoff: Backoff,
    previous: Option<&Lease>,
) -> Result<Lease, NetError> {
    let mut client = Client::open(&iface.name, mac_of(iface)?)?;
    let lease = client.acquire(backoff).await?;
    drop(client);
    apply_lease(&mut Netlink::open()?, iface, &lease, previous)?;
    tracing::info!(iface = %iface.name, "DHCP lease {lease}");
    Ok(lease)
}

fn after(since: Instant, secs: u32) -> Instant {
    let d = Duration::from_secs(u64::from(secs));
    since
        .checked_add(d)
        .unwrap_or_else(|| since + Duration::from_secs(365 * 24 * 3600))
}

/// The DHCP task: keep the lease (renew at T1, rebind at T2, start over when
/// it expires or a server NAKs), or keep trying to get one. Never returns;
/// every error is logged and retried.
pub async fn run_dhcp(iface: Interface, mut current: Option<(Lease, Instant)>) {
    let mut retry = ACQUIRE_RETRY_FIRST;
    loop {
        current = match current.take() {
            Some((lease, since)) => keep_lease(&iface, lease, since).await,
            None => match acquire_and_apply(&iface, Backoff::BOOT, None).await {
                Ok(lease) => {
                    retry = ACQUIRE_RETRY_FIRST;
                    Some((lease, Instant::now()))
                }
                Err(e) => {
                    tracing::warn!(iface = %iface.name, "{e}; retrying in {retry:?}");
                    smol::Timer::after(retry).await;
                    retry = retry.saturating_mul(2).min(ACQUIRE_RETRY_CAP);
                    None
                }
            },
        };
    }
}

/// Wait for T1, then renew (unicast) until T2, rebind (broadcast) until the
/// lease ends. Returns the extended lease, or `None` when it is lost.
async fn keep_lease(iface: &Interface, lease: Lease, since: Instant) -> Option<(Lease, Instant)> {
    let t1 = after(since, lease.renew_secs);
    let t2 = after(since, lease.rebind_secs);
    let end = after(since, lease.lease_secs);
    smol::Timer::at(t1).await;
    loop {
        let now = Instant::now();
        if now >= end {
            tracing::warn!(iface = %iface.name, "DHCP lease {lease} expired");
            remove_lease(iface, &lease);
            return None;
        }
        let (kind, limit) = if now < t2 {
            (RequestKind::Renewing, t2)
        } else {
            (RequestKind::Rebinding, end)
        };
        match extend(iface, &lease, kind).await {
            Ok(new) => {
                let applied = Netlink::open()
                    .map_err(NetError::from)
                    .and_then(|mut nl| apply_lease(&mut nl, iface, &new, Some(&lease)));
                match applied {
                    Ok(()) => tracing::info!(iface = %iface.name, "DHCP lease renewed: {new}"),
                    Err(e) => tracing::error!(iface = %iface.name, "applying renewed lease: {e}"),
                }
                return Some((new, now));
            }
            Err(NetError::Dhcp(DhcpError::Nak { server, message })) => {
                tracing::warn!(iface = %iface.name, "server {server} refused renewal ({message:?}); starting over");
                remove_lease(iface, &lease);
                return None;
            }
            Err(e) => {
                let left = limit.saturating_duration_since(Instant::now());
                let wait = (left / 2).max(MIN_RENEW_RETRY).min(left);
                tracing::warn!(iface = %iface.name, "DHCP {kind:?}: {e}; next try in {wait:?}");
                smol::Timer::after(wait).await;
            }
        }
    }
}

async fn extend(iface: &Interface, lease: &Lease, kind: RequestKind) -> Result<Lease, NetError> {
    let mut client = Client::open(&iface.name, mac_of(iface)?)?;
    Ok(client.extend(lease, kind, EXTEND_BACKOFF).await?)
}

/// "eth0 10.0.2.15/24" for every address on a non-loopback link.
pub fn format_addresses(links: &[Link], addresses: &[AddressInfo]) -> Vec<String> {
    addresses
        .iter()
        .filter_map(|a| {
            let link = links.iter().find(|l| l.index == a.index)?;
            if link.loopback {
                return None;
            }
            let address = match a.address {
                IpAddr::V4(v4) => v4.to_string(),
                IpAddr::V6(v6) => v6.to_string(),
            };
            Some(format!("{} {address}/{}", link.name, a.prefix))
        })
        .collect()
}

/// The device's addresses, for status. Empty (and logged) if netlink fails.
pub fn addresses() -> Vec<String> {
    let result = Netlink::open().and_then(|mut nl| Ok((nl.links()?, nl.addresses()?)));
    match result {
        Ok((links, addrs)) => format_addresses(&links, &addrs),
        Err(e) => {
            tracing::warn!("listing addresses: {e}");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str, mac: Option<[u8; 6]>, ethernet: bool, loopback: bool) -> Link {
        Link {
            index,
            name: name.into(),
            mac,
            ethernet,
            loopback,
            up: false,
            running: false,
            lower_up: false,
        }
    }

    fn links() -> Vec<Link> {
        vec![
            link(1, "lo", Some([0; 6]), false, true),
            link(2, "sit0", None, false, false),
            link(
                3,
                "eth0",
                Some([0x52, 0x54, 0, 0x12, 0x34, 0x56]),
                true,
                false,
            ),
            link(
                4,
                "eth1",
                Some([0x52, 0x54, 0, 0x12, 0x34, 0x57]),
                true,
                false,
            ),
            link(5, "wwan0", None, false, false),
        ]
    }

    #[test]
    fn interface_choice() {
        assert_eq!(choose_interface(&[], ""), None);
        assert_eq!(choose_interface(&links()[..2], ""), None);
        let first = choose_interface(&links(), "").unwrap();
        assert_eq!((first.index, first.name.as_str()), (3, "eth0"));
        assert_eq!(choose_interface(&links(), "eth1").unwrap().index, 4);
        let wwan = choose_interface(&links(), "wwan0").unwrap();
        assert_eq!(wwan.mac, None);
        assert_eq!(choose_interface(&links(), "eth9"), None);
        assert!(matches!(mac_of(&wwan), Err(NetError::NoHardwareAddress(_))));
    }

    #[test]
    fn address_listing_skips_loopback() {
        let addrs = vec![
            AddressInfo {
                index: 1,
                address: IpAddr::V4(Ipv4Addr::LOCALHOST),
                prefix: 8,
            },
            AddressInfo {
                index: 3,
                address: IpAddr::V4(Ipv4Addr::new(10, 0, 2, 15)),
                prefix: 24,
            },
            AddressInfo {
                index: 3,
                address: "fe80::5054:ff:fe12:3456".parse().unwrap(),
                prefix: 64,
            },
            AddressInfo {
                index: 9,
                address: IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4)),
                prefix: 8,
            },
        ];
        assert_eq!(
            format_addresses(&links(), &addrs),
            ["eth0 10.0.2.15/24", "eth0 fe80::5054:ff:fe12:3456/64"]
        );
    }

    #[test]
    fn static_config_is_parsed() {
        let mut c = NetworkConfig {
            mode: NetworkMode::Static,
            address: Some("192.0.2.5/24".into()),
            gateway: Some("192.0.2.1".into()),
            ..NetworkConfig::default()
        };
        assert_eq!(
            static_config(&c).unwrap(),
            (
                Ipv4Addr::new(192, 0, 2, 5),
                24,
                Some(Ipv4Addr::new(192, 0, 2, 1))
            )
        );
        c.gateway = Some("x".into());
        assert!(matches!(static_config(&c), Err(NetError::Static(_))));
        c.address = None;
        assert!(matches!(static_config(&c), Err(NetError::Static(_))));
    }

    #[test]
    fn display_says_what_happened() {
        let iface = choose_interface(&links(), "").unwrap();
        let up = NetUp {
            iface: iface.clone(),
            addressing: Addressing::Static {
                address: Ipv4Addr::new(192, 0, 2, 5),
                prefix: 24,
                gateway: None,
            },
        };
        assert_eq!(up.to_string(), "eth0 192.0.2.5/24 (static)");
        assert!(up.renewal().is_none());
        let up = NetUp {
            iface,
            addressing: Addressing::Dhcp {
                lease: None,
                acquired: None,
                error: Some("DHCP: no OFFER after 4 attempts".into()),
            },
        };
        assert!(up.to_string().contains("no OFFER"), "{up}");
        assert!(up.renewal().is_some());
    }

    #[test]
    fn timers_do_not_overflow() {
        let now = Instant::now();
        assert!(after(now, u32::MAX) > now);
        assert_eq!(after(now, 10), now + Duration::from_secs(10));
    }
}
