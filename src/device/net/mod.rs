//! The network: find each configured link's interface, bring it and `lo`
//! up, address it (DHCP or static), keep DHCP leases renewed, probe the
//! links and keep the preferred default route on the best healthy one
//! (links.rs).
//!
//! Boot calls [`start`] once: it waits (boundedly) for the interfaces and
//! the first DHCP answers, then leaves tasks running: one DHCP task per
//! DHCP link, one probe task per probed link, and the monitor, which
//! follows carrier, picks up interfaces that appear later (a USB modem) and
//! re-programs routes when health changes. [`addresses`] feeds the status
//! API.

pub mod dhcp;
pub mod links;
pub mod netlink;
pub mod probe;
pub mod reader;
pub mod report;
pub mod usage;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smol::Executor;

use crate::config::network::{effective_links, LinkConfig};
use crate::config::{NetworkConfig, NetworkMode};

use dhcp::{Backoff, Client, DhcpError, Lease, RequestKind};
use links::{Addressed, LinkRuntime};
use netlink::{AddressInfo, Link, Netlink, NetlinkError};

/// How long boot waits for the configured interfaces to appear once their
/// drivers are loaded (virtio_net probes asynchronously); later ones (a
/// modem still enumerating) are picked up by the monitor.
pub const INTERFACE_WAIT: Duration = Duration::from_secs(5);
/// Polling interval for the interface and its carrier: short, because boot
/// waits on it (the link usually comes up within tens of ms of `set_up`).
const INTERFACE_POLL: Duration = Duration::from_millis(10);
/// How long to wait for carrier after setting the link up before the first
/// DHCP packet (sent without carrier, it is lost and costs a retransmission).
const CARRIER_WAIT: Duration = Duration::from_secs(3);
/// The monitor's period: carrier changes move routes within this.
const MONITOR_TICK: Duration = Duration::from_secs(1);
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
    #[error("interface {0} has no Ethernet hardware address: DHCP needs one")]
    NoHardwareAddress(String),
}

/// The interface a link runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
}

/// The links of this boot, shared with the API.
pub type Links = Arc<Vec<Arc<LinkRuntime>>>;

/// This boot's links, for the API (set once by [`start`]).
pub static LINKS: std::sync::OnceLock<Links> = std::sync::OnceLock::new();

/// What [`start`] needs besides the config.
pub struct Extras {
    /// DATA, for the data-use record (`None`: not mounted, not kept).
    pub data: Option<std::path::PathBuf>,
    /// The clock, for the month of the data-use record.
    pub now_secs: Box<dyn Fn() -> u64 + Send + Sync>,
    /// The board's modem power GPIO (`outpost.modem_power=`).
    pub modem_power: Option<crate::device::cmdline::GpioSpec>,
    /// Asks for a reboot (the last step of a modem's watchdog).
    pub reboot: Arc<dyn Fn() + Send + Sync>,
}

/// Boot: bring up `lo` and every configured link, wait (boundedly) for
/// their interfaces and first DHCP answers, start the tasks that keep them.
/// Failures are logged, never fatal: the API must come up regardless (on
/// another link, or the serial line).
pub async fn start(ex: &Arc<Executor<'static>>, config: &NetworkConfig, extras: Extras) -> Links {
    let links: Links = Arc::new(
        effective_links(config)
            .into_iter()
            .map(|c| Arc::new(LinkRuntime::new(c)))
            .collect(),
    );
    let _ = LINKS.set(links.clone());
    for link in links.iter() {
        if let Some(m) = link.config.modem() {
            let reboot = extras.reboot.clone();
            crate::device::modem::task::start(
                link.clone(),
                m,
                extras.modem_power.clone(),
                Box::new(move || reboot()),
            );
        }
    }
    let mut first_answers = Vec::new();
    match Netlink::open() {
        Ok(mut nl) => {
            match nl.links() {
                Ok(all) => {
                    if let Some(lo) = all.iter().find(|l| l.loopback) {
                        if let Err(e) = nl.set_up(lo.index) {
                            tracing::error!("bringing up lo: {e}");
                        }
                    }
                }
                Err(e) => tracing::error!("network: {e}"),
            }
            let begin = Instant::now();
            loop {
                match nl.links() {
                    Ok(all) => {
                        for n in links::assign(&links, &all) {
                            if let Some(link) = links.get(n) {
                                first_answers.extend(activate(ex, &mut nl, link));
                            }
                        }
                    }
                    Err(e) => tracing::error!("network: {e}"),
                }
                let all_found = links.iter().all(|l| l.state().iface.is_some());
                if all_found || begin.elapsed() >= INTERFACE_WAIT {
                    break;
                }
                smol::Timer::after(INTERFACE_POLL).await;
            }
            for l in links.iter().filter(|l| l.state().iface.is_none()) {
                tracing::warn!(
                    "network: link {}: no matching interface yet; waiting for it",
                    l.config.name
                );
            }
        }
        Err(e) => tracing::error!("network: {e}"),
    }
    for answer in first_answers {
        let _ = answer.recv().await;
    }
    let accounting = report::Accounting::new(extras.data, extras.now_secs);
    ex.spawn(monitor(ex.clone(), links.clone(), accounting))
        .detach();
    links
}

/// A link just got its interface: set it up and address it; start its DHCP
/// and probe tasks. Returns a channel that closes after the first DHCP
/// attempt (boot waits for it).
fn activate(
    ex: &Arc<Executor<'static>>,
    nl: &mut Netlink,
    link: &Arc<LinkRuntime>,
) -> Option<smol::channel::Receiver<()>> {
    let iface = link.state().iface.clone()?;
    tracing::info!("network: link {} is {}", link.config.name, iface.name);
    if let Err(e) = nl.set_up(iface.index) {
        tracing::error!("network: {}: {e}", iface.name);
    }
    link.state().dns = link.config.dns_servers();
    if let Some(probe) = link.config.probe() {
        ex.spawn(probe::run(link.clone(), probe)).detach();
    }
    match link.config.mode {
        NetworkMode::Static => {
            let a = link.config.static_address()?;
            let addr = Addressed {
                address: a.address,
                prefix: a.prefix,
                gateway: a.gateway,
            };
            log_errors(&link.config, link.set_address(nl, Some(addr)));
            link.state().note = "static".into();
            tracing::info!(
                "network: {} {}/{} (static)",
                iface.name,
                a.address,
                a.prefix
            );
            None
        }
        NetworkMode::Dhcp => {
            let (tx, rx) = smol::channel::bounded(1);
            ex.spawn(dhcp_task(link.clone(), iface, tx)).detach();
            Some(rx)
        }
    }
}

fn log_errors(link: &LinkConfig, errors: Vec<NetlinkError>) {
    for e in errors {
        tracing::error!("network: link {}: {e}", link.name);
    }
}

/// Follow carrier, pick up late interfaces, move routes when health
/// changes; count data use every [`usage::SAMPLE`].
async fn monitor(ex: Arc<Executor<'static>>, links: Links, mut accounting: report::Accounting) {
    let mut last_sample = Instant::now();
    accounting.sample(&links);
    let mut resolv = String::new();
    loop {
        smol::Timer::after(MONITOR_TICK).await;
        write_resolv_conf(&links, &mut resolv);
        if last_sample.elapsed() >= usage::SAMPLE {
            last_sample = Instant::now();
            accounting.sample(&links);
        }
        let mut nl = match Netlink::open() {
            Ok(nl) => nl,
            Err(e) => {
                tracing::error!("network monitor: {e}");
                continue;
            }
        };
        let all = match nl.links() {
            Ok(all) => all,
            Err(e) => {
                tracing::error!("network monitor: {e}");
                continue;
            }
        };
        for n in links::assign(&links, &all) {
            if let Some(link) = links.get(n) {
                // Not waited for: boot is long over.
                let _ = activate(&ex, &mut nl, link);
            }
        }
        for link in links.iter() {
            let index = link.state().iface.as_ref().map(|i| i.index);
            let Some(index) = index else { continue };
            let carrier = all
                .iter()
                .any(|l| l.index == index && (l.lower_up || l.running));
            link.state().health.carrier = carrier;
            refresh(&mut nl, link);
        }
    }
}

/// Where the DNS servers go (/etc/resolv.conf links here in the image).
const RESOLV_CONF: &str = "/run/resolv.conf";

/// Write the DNS servers of the links, best first, when they changed.
fn write_resolv_conf(links: &Links, last: &mut String) {
    let dns: Vec<(u32, Vec<std::net::Ipv4Addr>)> = links
        .iter()
        .map(|l| {
            let st = l.state();
            (links::metric(l.config.priority, st.healthy), st.dns.clone())
        })
        .collect();
    let text = links::resolv_conf(&dns);
    if text != *last {
        // Once per change, not every tick, if /run cannot take it.
        if let Err(e) = std::fs::write(RESOLV_CONF, &text) {
            tracing::warn!("network: {RESOLV_CONF}: {e}");
        }
        *last = text;
    }
}

/// Re-program `link`'s routes if its health verdict changed, and say so.
pub fn refresh(nl: &mut Netlink, link: &LinkRuntime) {
    let (changed, errors) = link.update_health(nl, super::log::uptime_ms());
    log_errors(&link.config, errors);
    if let Some(healthy) = changed {
        let h = link.state().health;
        if healthy {
            tracing::info!(
                "network: link {} is healthy again; its routes are back at metric {}",
                link.config.name,
                link.config.priority
            );
        } else {
            tracing::warn!(
                "network: link {} is down (carrier {}, probe misses {}); its routes move to metric {}",
                link.config.name,
                if h.carrier { "on" } else { "off" },
                h.misses,
                links::metric(link.config.priority, false)
            );
        }
    }
}

async fn wait_for_carrier(iface: &Interface) {
    let start = Instant::now();
    while start.elapsed() < CARRIER_WAIT {
        let up = Netlink::open()
            .and_then(|mut nl| nl.links())
            .is_ok_and(|all| {
                all.iter()
                    .any(|l| l.index == iface.index && (l.lower_up || l.running))
            });
        if up {
            tracing::debug!(iface = %iface.name, "carrier after {:?}", start.elapsed());
            return;
        }
        smol::Timer::after(INTERFACE_POLL).await;
    }
    tracing::warn!(iface = %iface.name, "no carrier after {CARRIER_WAIT:?}; going on");
}

/// The DHCP task of one link: first lease (then `first` closes), renewals
/// forever.
async fn dhcp_task(link: Arc<LinkRuntime>, iface: Interface, first: smol::channel::Sender<()>) {
    wait_for_carrier(&iface).await;
    let current = match acquire_and_apply(&link, &iface, Backoff::BOOT).await {
        Ok(lease) => Some((lease, Instant::now())),
        Err(e) => {
            tracing::warn!(iface = %iface.name, "{e}; retrying in the background");
            link.state().note = format!("no DHCP lease yet: {e}");
            None
        }
    };
    drop(first);
    run_dhcp(link, iface, current).await;
}

/// Put a lease (or, `None`, no address) on the link.
fn apply(link: &LinkRuntime, lease: Option<&Lease>) {
    let addr = lease.map(|l| Addressed {
        address: l.address,
        prefix: l.prefix,
        gateway: l.router,
    });
    match Netlink::open() {
        Ok(mut nl) => log_errors(&link.config, link.set_address(&mut nl, addr)),
        Err(e) => tracing::error!("network: link {}: {e}", link.config.name),
    }
    let mut st = link.state();
    if let Some(l) = lease {
        if link.config.dns.is_empty() {
            st.dns = l.dns.clone();
        }
        st.note = format!("DHCP {l}");
    } else {
        st.note = "DHCP lease lost".into();
    }
}

fn mac_of(iface: &Interface) -> Result<[u8; 6], NetError> {
    iface
        .mac
        .ok_or_else(|| NetError::NoHardwareAddress(iface.name.clone()))
}

/// Acquire a lease (DISCOVER…ACK) and put it on the link.
async fn acquire_and_apply(
    link: &LinkRuntime,
    iface: &Interface,
    backoff: Backoff,
) -> Result<Lease, NetError> {
    let mut client = Client::open(&iface.name, mac_of(iface)?)?;
    let lease = client.acquire(backoff).await?;
    drop(client);
    apply(link, Some(&lease));
    tracing::info!(iface = %iface.name, "DHCP lease {lease}");
    Ok(lease)
}

fn after(since: Instant, secs: u32) -> Instant {
    let d = Duration::from_secs(u64::from(secs));
    since
        .checked_add(d)
        .unwrap_or_else(|| since + Duration::from_secs(365 * 24 * 3600))
}

/// Keep the lease (renew at T1, rebind at T2, start over when it expires
/// or a server NAKs), or keep trying to get one. Never returns; every error
/// is logged and retried.
async fn run_dhcp(link: Arc<LinkRuntime>, iface: Interface, mut current: Option<(Lease, Instant)>) {
    let mut retry = ACQUIRE_RETRY_FIRST;
    loop {
        current = match current.take() {
            Some((lease, since)) => keep_lease(&link, &iface, lease, since).await,
            None => match acquire_and_apply(&link, &iface, Backoff::BOOT).await {
                Ok(lease) => {
                    retry = ACQUIRE_RETRY_FIRST;
                    Some((lease, Instant::now()))
                }
                Err(e) => {
                    tracing::warn!(iface = %iface.name, "{e}; retrying in {retry:?}");
                    // A modem that just connected kicks us out of the wait.
                    let kicked = async {
                        let _ = link.kick.1.recv().await;
                    };
                    smol::future::or(
                        async {
                            smol::Timer::after(retry).await;
                        },
                        kicked,
                    )
                    .await;
                    retry = retry.saturating_mul(2).min(ACQUIRE_RETRY_CAP);
                    None
                }
            },
        };
    }
}

/// Wait for T1, then renew (unicast) until T2, rebind (broadcast) until the
/// lease ends. Returns the extended lease, or `None` when it is lost.
async fn keep_lease(
    link: &LinkRuntime,
    iface: &Interface,
    lease: Lease,
    since: Instant,
) -> Option<(Lease, Instant)> {
    let t1 = after(since, lease.renew_secs);
    let t2 = after(since, lease.rebind_secs);
    let end = after(since, lease.lease_secs);
    smol::Timer::at(t1).await;
    loop {
        let now = Instant::now();
        if now >= end {
            tracing::warn!(iface = %iface.name, "DHCP lease {lease} expired");
            apply(link, None);
            return None;
        }
        let (kind, limit) = if now < t2 {
            (RequestKind::Renewing, t2)
        } else {
            (RequestKind::Rebinding, end)
        };
        match extend(iface, &lease, kind).await {
            Ok(new) => {
                apply(link, Some(&new));
                tracing::info!(iface = %iface.name, "DHCP lease renewed: {new}");
                return Some((new, now));
            }
            Err(NetError::Dhcp(DhcpError::Nak { server, message })) => {
                tracing::warn!(iface = %iface.name, "server {server} refused renewal ({message:?}); starting over");
                apply(link, None);
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
    use std::net::Ipv4Addr;

    fn link(index: u32, name: &str, mac: Option<[u8; 6]>, loopback: bool) -> Link {
        Link {
            index,
            name: name.into(),
            mac,
            ethernet: !loopback,
            loopback,
            up: false,
            running: false,
            lower_up: false,
        }
    }

    #[test]
    fn address_listing_skips_loopback() {
        let links = vec![
            link(1, "lo", Some([0; 6]), true),
            link(3, "eth0", Some([0x52, 0x54, 0, 0x12, 0x34, 0x56]), false),
        ];
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
            format_addresses(&links, &addrs),
            ["eth0 10.0.2.15/24", "eth0 fe80::5054:ff:fe12:3456/64"]
        );
    }

    #[test]
    fn a_wwan_link_without_a_mac_cannot_do_dhcp() {
        let wwan = Interface {
            index: 5,
            name: "wwan0".into(),
            mac: None,
        };
        assert!(matches!(mac_of(&wwan), Err(NetError::NoHardwareAddress(_))));
    }

    #[test]
    fn timers_do_not_overflow() {
        let now = Instant::now();
        assert!(after(now, u32::MAX) > now);
        assert_eq!(after(now, 10), now + Duration::from_secs(10));
    }
}
