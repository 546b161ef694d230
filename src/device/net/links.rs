//! Several links, one preferred default route that follows health.
//!
//! Every link carries its subnet route, its default route (if it has a
//! gateway) and its extra routes at a metric: its priority while healthy,
//! priority + [`DOWN_METRIC_OFFSET`] while not. The kernel uses the lowest
//! metric, so moving a link's routes between the two metrics moves the
//! preferred default route to the best healthy link and back when it
//! recovers; a down link stays usable as a last resort. Addresses are added
//! with IFA_F_NOPREFIXROUTE so the subnet route follows the metric too (two
//! links on one subnet fail over like two on different ones).
//!
//! Route programming ([`routes_for`], [`move_routes`], [`LinkRuntime`]) goes
//! through [`RouteOps`], so tests drive it with a recording fake. Health is
//! [`Health`]: carrier and the probe's consecutive misses.

use std::net::Ipv4Addr;
use std::sync::{Mutex, MutexGuard};

use crate::config::network::{LinkConfig, DOWN_METRIC_OFFSET, MAX_DNS};

use super::netlink::{Netlink, NetlinkError, RouteSpec};
use super::Interface;

/// The route operations links need (rtnetlink on a board).
pub trait RouteOps {
    fn add_address(
        &mut self,
        index: u32,
        address: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), NetlinkError>;
    fn del_address(
        &mut self,
        index: u32,
        address: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), NetlinkError>;
    fn add_route(&mut self, r: &RouteSpec) -> Result<(), NetlinkError>;
    fn del_route(&mut self, r: &RouteSpec) -> Result<(), NetlinkError>;
}

impl RouteOps for Netlink {
    fn add_address(&mut self, i: u32, a: Ipv4Addr, p: u8) -> Result<(), NetlinkError> {
        Netlink::add_address(self, i, a, p)
    }
    fn del_address(&mut self, i: u32, a: Ipv4Addr, p: u8) -> Result<(), NetlinkError> {
        Netlink::del_address(self, i, a, p)
    }
    fn add_route(&mut self, r: &RouteSpec) -> Result<(), NetlinkError> {
        Netlink::add_route(self, r)
    }
    fn del_route(&mut self, r: &RouteSpec) -> Result<(), NetlinkError> {
        Netlink::del_route(self, r)
    }
}

/// A link's IPv4 address as applied (static, or from a DHCP lease).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addressed {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
}

/// The metric of a link's routes.
pub fn metric(priority: u32, healthy: bool) -> u32 {
    if healthy {
        priority
    } else {
        priority.saturating_add(DOWN_METRIC_OFFSET)
    }
}

/// Every route `link` carries on interface `index` with address `addr`.
pub fn routes_for(
    link: &LinkConfig,
    index: u32,
    addr: &Addressed,
    healthy: bool,
) -> Vec<RouteSpec> {
    let base = metric(link.priority, healthy);
    let mut out = vec![RouteSpec {
        to: addr.address,
        prefix: addr.prefix,
        gateway: None,
        index,
        metric: base,
    }];
    if let Some(gw) = addr.gateway {
        out.push(RouteSpec {
            to: Ipv4Addr::UNSPECIFIED,
            prefix: 0,
            gateway: Some(gw),
            index,
            metric: base,
        });
    }
    let offset = base.saturating_sub(link.priority);
    out.extend(link.parsed_routes().into_iter().map(|r| RouteSpec {
        to: r.to,
        prefix: r.prefix,
        gateway: r.via,
        index,
        metric: r.metric.saturating_add(offset),
    }));
    out
}

/// Replace the routes `old` by `new`: add every new route first (make
/// before break: traffic never lacks a route), then delete the old ones not
/// kept. Returns the errors (each is logged by the caller); one failed
/// route does not stop the others.
pub fn move_routes(
    ops: &mut dyn RouteOps,
    old: &[RouteSpec],
    new: &[RouteSpec],
) -> Vec<NetlinkError> {
    let mut errors = Vec::new();
    for r in new {
        if let Err(e) = ops.add_route(r) {
            errors.push(e);
        }
    }
    for r in old.iter().filter(|r| !new.contains(r)) {
        if let Err(e) = ops.del_route(r) {
            errors.push(e);
        }
    }
    errors
}

/// Carrier and probe state of one link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    pub carrier: bool,
    /// Probe misses in a row.
    pub misses: u32,
    /// The probe's verdict (true without a probe).
    pub probe_ok: bool,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            carrier: true,
            misses: 0,
            probe_ok: true,
        }
    }
}

impl Health {
    /// One probe result: a success is up at once; `failures` misses in a
    /// row are down.
    pub fn probe(&mut self, ok: bool, failures: u32) {
        if ok {
            self.misses = 0;
            self.probe_ok = true;
        } else {
            self.misses = self.misses.saturating_add(1);
            if self.misses >= failures {
                self.probe_ok = false;
            }
        }
    }

    pub fn healthy(&self) -> bool {
        self.carrier && self.probe_ok
    }
}

/// What is known and programmed for one link.
#[derive(Debug, Clone, Default)]
pub struct LinkState {
    pub iface: Option<Interface>,
    pub addr: Option<Addressed>,
    pub dns: Vec<Ipv4Addr>,
    pub health: Health,
    /// The health the routes were programmed for.
    pub healthy: bool,
    /// The routes in the kernel now.
    pub routes: Vec<RouteSpec>,
    /// How the link is addressed or why it is not ("DHCP: no OFFER …").
    pub note: String,
    /// Times the link went down (health lost) since boot.
    pub downs: u32,
    /// Uptime (ms) of the last health change.
    pub changed_ms: u64,
    /// The modem's state ("dialling", "connected", the last error) and
    /// what it reported, for a modem link.
    pub modem: Option<(String, crate::device::modem::ModemStatus)>,
    /// Watchdog steps and health changes, newest last.
    pub events: std::collections::VecDeque<String>,
    /// Bytes this month (across boots), and the counter at the last sample.
    pub month_bytes: u64,
    pub last_counter: Option<u64>,
    /// This month's use passed the link's budget.
    pub over_budget: bool,
}

/// Events kept per link.
const MAX_EVENTS: usize = 16;

impl LinkState {
    /// Record an event (stamped with the uptime), dropping the oldest.
    pub fn event(&mut self, now_ms: u64, text: String) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events
            .push_back(format!("{}.{:03}s {text}", now_ms / 1000, now_ms % 1000));
    }
}

/// One configured link at run time, shared by its DHCP, probe and modem
/// tasks, the monitor and the API.
#[derive(Debug)]
pub struct LinkRuntime {
    pub config: LinkConfig,
    state: Mutex<LinkState>,
    /// Wakes the DHCP task early (the modem has just started its data
    /// session: the interface can get a lease now).
    pub kick: (smol::channel::Sender<()>, smol::channel::Receiver<()>),
}

impl LinkRuntime {
    pub fn new(config: LinkConfig) -> Self {
        Self {
            config,
            state: Mutex::new(LinkState {
                healthy: true,
                ..LinkState::default()
            }),
            kick: smol::channel::bounded(1),
        }
    }

    /// The state (a poisoned lock still holds usable data: PID 1 goes on).
    pub fn state(&self) -> MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Put `addr` on the link (or take the address off with `None`) and
    /// its routes at the link's current metric.
    pub fn set_address(
        &self,
        ops: &mut dyn RouteOps,
        addr: Option<Addressed>,
    ) -> Vec<NetlinkError> {
        let mut st = self.state();
        let Some(index) = st.iface.as_ref().map(|i| i.index) else {
            return Vec::new();
        };
        let mut errors = Vec::new();
        let old = st.addr;
        if let Some(o) =
            old.filter(|o| Some((o.address, o.prefix)) != addr.map(|a| (a.address, a.prefix)))
        {
            if let Err(e) = ops.del_address(index, o.address, o.prefix) {
                errors.push(e);
            }
        }
        let new_routes = match &addr {
            Some(a) => {
                if let Err(e) = ops.add_address(index, a.address, a.prefix) {
                    errors.push(e);
                }
                routes_for(&self.config, index, a, st.healthy)
            }
            None => Vec::new(),
        };
        errors.extend(move_routes(ops, &st.routes, &new_routes));
        st.routes = new_routes;
        st.addr = addr;
        errors
    }

    /// Re-program the routes if the health verdict changed. Returns the
    /// new verdict when it changed.
    pub fn update_health(
        &self,
        ops: &mut dyn RouteOps,
        now_ms: u64,
    ) -> (Option<bool>, Vec<NetlinkError>) {
        let mut st = self.state();
        let healthy = st.health.healthy();
        if healthy == st.healthy {
            return (None, Vec::new());
        }
        st.healthy = healthy;
        st.changed_ms = now_ms;
        if !healthy {
            st.downs = st.downs.saturating_add(1);
        }
        let what = if healthy { "healthy" } else { "down" };
        st.event(now_ms, what.into());
        let new_routes = match (&st.iface, &st.addr) {
            (Some(i), Some(a)) => routes_for(&self.config, i.index, a, healthy),
            _ => Vec::new(),
        };
        let errors = move_routes(ops, &st.routes, &new_routes);
        st.routes = new_routes;
        (Some(healthy), errors)
    }
}

/// resolv.conf text: the DNS servers of the links in order of preference
/// (lowest metric first), each once, at most [`MAX_DNS`] (the resolver
/// reads no more).
pub fn resolv_conf(links: &[(u32, Vec<Ipv4Addr>)]) -> String {
    // A handful of links: pick the lowest metric left each round (no sort:
    // its code is larger than this whole function).
    let mut taken = vec![false; links.len()];
    let mut seen = Vec::new();
    for _ in 0..links.len() {
        let best = links
            .iter()
            .enumerate()
            .filter(|(i, _)| !taken.get(*i).copied().unwrap_or(true))
            .min_by_key(|(_, (m, _))| *m);
        let Some((i, (_, dns))) = best else { break };
        if let Some(t) = taken.get_mut(i) {
            *t = true;
        }
        for d in dns {
            if !seen.contains(d) && seen.len() < MAX_DNS {
                seen.push(*d);
            }
        }
    }
    seen.iter().map(|d| format!("nameserver {d}\n")).collect()
}

/// Assign interfaces to links that have none: explicit patterns (name,
/// prefix, MAC) first, then links without a pattern get the first free
/// Ethernet links in kernel order. Returns the indexes of links newly
/// assigned.
pub fn assign(
    links: &[std::sync::Arc<LinkRuntime>],
    available: &[super::netlink::Link],
) -> Vec<usize> {
    let mut taken: Vec<u32> = links
        .iter()
        .filter_map(|l| l.state().iface.as_ref().map(|i| i.index))
        .collect();
    let mut assigned = Vec::new();
    for pass in [true, false] {
        for (n, link) in links.iter().enumerate() {
            let explicit = link.config.mac.is_some() || !link.config.interface.is_empty();
            if explicit != pass || link.state().iface.is_some() {
                continue;
            }
            let found = available.iter().find(|l| {
                !l.loopback
                    && !taken.contains(&l.index)
                    && if explicit {
                        link.config.matches(&l.name, l.mac)
                    } else {
                        l.is_ethernet() && !links.iter().any(|o| o.config.matches(&l.name, l.mac))
                    }
            });
            if let Some(l) = found {
                taken.push(l.index);
                link.state().iface = Some(Interface {
                    index: l.index,
                    name: l.name.clone(),
                    mac: l.mac.filter(|m| *m != [0; 6]),
                });
                assigned.push(n);
            }
        }
    }
    assigned
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Records every operation; fails the ones listed in `fail`.
    #[derive(Default)]
    struct Recording {
        ops: Vec<String>,
        fail: Vec<&'static str>,
    }

    impl Recording {
        fn result(&mut self, op: String) -> Result<(), NetlinkError> {
            let failed = self.fail.iter().any(|f| op.starts_with(f));
            self.ops.push(op);
            if failed {
                Err(NetlinkError::Kernel {
                    op: "test",
                    errno: nix::errno::Errno::ENETUNREACH,
                })
            } else {
                Ok(())
            }
        }
    }

    fn show(r: &RouteSpec) -> String {
        let via = r.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
        format!(
            "{}/{}{via} dev {} metric {}",
            r.to, r.prefix, r.index, r.metric
        )
    }

    impl RouteOps for Recording {
        fn add_address(&mut self, i: u32, a: Ipv4Addr, p: u8) -> Result<(), NetlinkError> {
            self.result(format!("addr add {a}/{p} dev {i}"))
        }
        fn del_address(&mut self, i: u32, a: Ipv4Addr, p: u8) -> Result<(), NetlinkError> {
            self.result(format!("addr del {a}/{p} dev {i}"))
        }
        fn add_route(&mut self, r: &RouteSpec) -> Result<(), NetlinkError> {
            self.result(format!("route add {}", show(r)))
        }
        fn del_route(&mut self, r: &RouteSpec) -> Result<(), NetlinkError> {
            self.result(format!("route del {}", show(r)))
        }
    }

    fn link(name: &str, interface: &str, priority: u32) -> Arc<LinkRuntime> {
        let mut c = LinkConfig::new(name, interface);
        c.priority = priority;
        Arc::new(LinkRuntime::new(c))
    }

    fn netlink_link(index: u32, name: &str, mac_last: u8) -> super::super::netlink::Link {
        super::super::netlink::Link {
            index,
            name: name.into(),
            mac: Some([0x52, 0x54, 0, 0, 0, mac_last]),
            ethernet: true,
            loopback: false,
            up: false,
            running: false,
            lower_up: false,
        }
    }

    const LEASE: Addressed = Addressed {
        address: Ipv4Addr::new(10, 0, 2, 15),
        prefix: 24,
        gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
    };

    #[test]
    fn an_address_brings_its_subnet_default_and_extra_routes_at_the_link_metric() {
        let l = link("wan", "eth1", 10);
        {
            let mut c = l.config.clone();
            c.routes
                .push("198.51.100.0/24 via 10.0.2.1 metric 5".into());
            let l2 = LinkRuntime::new(c);
            l2.state().iface = Some(Interface {
                index: 3,
                name: "eth1".into(),
                mac: None,
            });
            let mut rec = Recording::default();
            assert!(l2.set_address(&mut rec, Some(LEASE)).is_empty());
            assert_eq!(
                rec.ops,
                [
                    "addr add 10.0.2.15/24 dev 3",
                    "route add 10.0.2.15/24 dev 3 metric 10",
                    "route add 0.0.0.0/0 via 10.0.2.2 dev 3 metric 10",
                    "route add 198.51.100.0/24 via 10.0.2.1 dev 3 metric 15",
                ]
            );
        }
        // No interface yet: nothing to program.
        let mut rec = Recording::default();
        assert!(l.set_address(&mut rec, Some(LEASE)).is_empty());
        assert!(rec.ops.is_empty());
    }

    #[test]
    fn losing_health_moves_the_routes_up_and_recovery_moves_them_back() {
        let l = link("wan", "eth1", 10);
        l.state().iface = Some(Interface {
            index: 3,
            name: "eth1".into(),
            mac: None,
        });
        let mut rec = Recording::default();
        l.set_address(&mut rec, Some(LEASE));
        rec.ops.clear();

        // Two misses of three: still healthy, nothing moves.
        for _ in 0..2 {
            l.state().health.probe(false, 3);
            assert_eq!(l.update_health(&mut rec, 1).0, None);
        }
        assert!(rec.ops.is_empty());
        l.state().health.probe(false, 3);
        assert_eq!(l.update_health(&mut rec, 2000).0, Some(false));
        assert_eq!(
            rec.ops,
            [
                "route add 10.0.2.15/24 dev 3 metric 10010",
                "route add 0.0.0.0/0 via 10.0.2.2 dev 3 metric 10010",
                "route del 10.0.2.15/24 dev 3 metric 10",
                "route del 0.0.0.0/0 via 10.0.2.2 dev 3 metric 10",
            ],
            "new routes go in before the old ones go"
        );
        {
            let st = l.state();
            assert_eq!((st.downs, st.changed_ms, st.healthy), (1, 2000, false));
        }
        rec.ops.clear();
        // One success: back at once.
        l.state().health.probe(true, 3);
        assert_eq!(l.update_health(&mut rec, 3000).0, Some(true));
        assert_eq!(
            rec.ops[1],
            "route add 0.0.0.0/0 via 10.0.2.2 dev 3 metric 10"
        );
        assert_eq!(
            rec.ops[3],
            "route del 0.0.0.0/0 via 10.0.2.2 dev 3 metric 10010"
        );
        rec.ops.clear();
        // Carrier loss alone is down too.
        l.state().health.carrier = false;
        assert_eq!(l.update_health(&mut rec, 4000).0, Some(false));
        assert_eq!(l.state().downs, 2);
    }

    #[test]
    fn a_new_lease_replaces_the_old_address_and_routes() {
        let l = link("wan", "", 0);
        l.state().iface = Some(Interface {
            index: 2,
            name: "eth0".into(),
            mac: None,
        });
        let mut rec = Recording::default();
        l.set_address(&mut rec, Some(LEASE));
        rec.ops.clear();
        let moved = Addressed {
            address: Ipv4Addr::new(10, 0, 2, 16),
            ..LEASE
        };
        l.set_address(&mut rec, Some(moved));
        assert_eq!(
            rec.ops,
            [
                "addr del 10.0.2.15/24 dev 2",
                "addr add 10.0.2.16/24 dev 2",
                "route add 10.0.2.16/24 dev 2 metric 0",
                "route add 0.0.0.0/0 via 10.0.2.2 dev 2 metric 0",
                "route del 10.0.2.15/24 dev 2 metric 0",
            ]
        );
        rec.ops.clear();
        // Lease lost: address and routes go.
        l.set_address(&mut rec, None);
        assert_eq!(rec.ops.len(), 3, "{:?}", rec.ops);
        assert!(l.state().routes.is_empty());
    }

    #[test]
    fn one_failed_route_does_not_stop_the_others() {
        let l = link("wan", "eth1", 10);
        l.state().iface = Some(Interface {
            index: 3,
            name: "eth1".into(),
            mac: None,
        });
        let mut rec = Recording {
            fail: vec!["route add 0.0.0.0"],
            ..Recording::default()
        };
        let errors = l.set_address(&mut rec, Some(LEASE));
        assert_eq!(errors.len(), 1);
        assert_eq!(rec.ops.len(), 3);
    }

    #[test]
    fn interfaces_are_assigned_explicit_patterns_first() {
        let mut by_mac = LinkConfig::new("b", "");
        by_mac.mac = Some("52:54:00:00:00:03".into());
        let links = vec![
            link("any", "", 30),
            Arc::new(LinkRuntime::new(by_mac)),
            link("lte", "wwan*", 20),
        ];
        let mut lo = netlink_link(1, "lo", 0);
        lo.loopback = true;
        let mut wwan = netlink_link(5, "wwan0", 5);
        wwan.ethernet = false;
        let available = vec![
            lo,
            netlink_link(2, "eth0", 2),
            netlink_link(3, "eth1", 3),
            wwan,
        ];
        assert_eq!(assign(&links, &available), [1, 2, 0]);
        let name = |n: usize| links[n].state().iface.as_ref().unwrap().name.clone();
        assert_eq!(
            (name(0), name(1), name(2)),
            ("eth0".into(), "eth1".into(), "wwan0".into())
        );
        // Nothing new the second time; a link whose interface is missing waits.
        assert!(assign(&links, &available).is_empty());
        let late = vec![link("x", "usb0", 1)];
        assert!(assign(&late, &available).is_empty());
        assert!(late[0].state().iface.is_none());
    }

    #[test]
    fn resolv_conf_follows_the_preferred_link() {
        let a = Ipv4Addr::new(192, 0, 2, 1);
        let b = Ipv4Addr::new(192, 0, 2, 2);
        let c = Ipv4Addr::new(192, 0, 2, 3);
        let d = Ipv4Addr::new(192, 0, 2, 4);
        assert_eq!(resolv_conf(&[]), "");
        assert_eq!(
            resolv_conf(&[(10_010, vec![a]), (20, vec![b, a])]),
            "nameserver 192.0.2.2\nnameserver 192.0.2.1\n"
        );
        assert_eq!(
            resolv_conf(&[(1, vec![a, b]), (2, vec![c, d])])
                .lines()
                .count(),
            3
        );
    }

    #[test]
    fn probe_verdicts() {
        let mut h = Health::default();
        assert!(h.healthy());
        h.probe(false, 1);
        assert!(!h.healthy());
        h.probe(true, 1);
        assert!(h.healthy());
        for _ in 0..5 {
            h.probe(false, 3);
        }
        assert_eq!(h.misses, 5);
        assert!(!h.probe_ok);
    }
}
