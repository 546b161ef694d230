//! `[[network.links]]`: several network links (Ethernet, LTE, …), each with a
//! priority, its addressing, DNS, extra routes and a health probe. The
//! device keeps the default route on the best healthy link (docs/network.md).
//!
//! A config without links keeps the single-link `[network]` fields
//! (`interface`, `mode`, `address`, `gateway`): [`effective_links`] turns
//! them into one link, so old configs work unchanged.

use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, SocketAddrV4};

use super::machine::{field, parse_cidr, ConfigError, NetworkConfig, NetworkMode};

/// Most links: a board has an Ethernet port or two and a modem or two.
pub const MAX_LINKS: usize = 8;
/// Most extra routes per link: site routes to a handful of subnets.
pub const MAX_ROUTES: usize = 16;
/// Most DNS servers per link (resolv.conf honours three).
pub const MAX_DNS: usize = 3;
/// Link names appear in logs and the API; short is enough.
const MAX_LINK_NAME: usize = 32;
/// Priorities are route metrics; an unhealthy link's routes get
/// [`DOWN_METRIC_OFFSET`] added, so priorities stay below it.
pub const MAX_PRIORITY: u32 = 9_999;
/// Added to the metric of a link whose probe fails: it stays usable as a
/// last resort but never wins over a healthy link.
pub const DOWN_METRIC_OFFSET: u32 = 10_000;
/// Probe interval bounds (seconds): faster than 1 s adds traffic and no
/// speed (failover is bounded by `failures` × interval); slower than an hour
/// would notice a dead link too late to matter.
const MIN_PROBE_INTERVAL: u32 = 1;
const MAX_PROBE_INTERVAL: u32 = 3_600;
/// Consecutive failures before a link is down: 1 flaps on a lost packet;
/// more than 20 is as good as never.
const MAX_PROBE_FAILURES: u32 = 20;
/// Probe timeout bounds (ms).
const MIN_PROBE_TIMEOUT_MS: u32 = 100;
const MAX_PROBE_TIMEOUT_MS: u32 = 30_000;

/// One link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkConfig {
    /// A short label ("wan", "lte") used in logs and `outpost network`.
    pub name: String,
    /// Interface name, or a prefix ending in `*` ("wwan*", "usb*");
    /// empty with no `mac`: the first Ethernet link not taken by another.
    #[serde(default)]
    pub interface: String,
    /// Match by hardware address instead ("52:54:00:12:34:56").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Lower is preferred; it is the metric of the link's routes.
    #[serde(default)]
    pub priority: u32,
    #[serde(default)]
    pub mode: NetworkMode,
    /// Static: "A.B.C.D/PREFIX".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Static: the default gateway (none: the link carries no default route).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// DNS servers; DHCP ones are used when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    /// Extra routes out of this link.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
    /// Health probe; none: the link is healthy while it has carrier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeConfig>,
    /// An LTE modem's AT port that must dial before the link carries data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modem: Option<ModemConfig>,
    /// Monthly data budget (MB = 10^6 bytes); past it the link's probes
    /// slow down tenfold and status says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_mb: Option<u32>,
}

/// The AT side of a modem link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModemConfig {
    /// The AT port ("/dev/ttyUSB2").
    pub port: String,
    pub apn: String,
    /// SIM PIN, if the SIM asks for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
    #[serde(default)]
    pub family: ModemFamily,
    /// How long to wait for registration after attach.
    #[serde(default = "default_register_secs")]
    pub register_secs: u32,
    /// Reboot the board after this many failures in a row (watchdog
    /// ladder, docs/network.md); 0 = never.
    #[serde(default)]
    pub reboot_after: u32,
}

/// How a modem starts its data session (docs/network.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ModemFamily {
    /// `AT+CGACT=1,1` (ECM/NCM modems that bridge the context themselves).
    #[default]
    Generic,
    /// `AT+QNETDEVCTL=1,1,1` (Quectel in ECM mode).
    Quectel,
    /// `AT^NDISDUP=1,1,"APN"` (Huawei NDIS).
    Huawei,
}

fn default_register_secs() -> u32 {
    60
}
/// APN: at most 100 characters (3GPP TS 23.003 §9.1).
const MAX_APN: usize = 100;
/// More failures than this before a reboot is "never" in practice.
const MAX_REBOOT_AFTER: u32 = 1000;
/// Registration wait bounds (seconds).
const MAX_REGISTER_SECS: u32 = 600;

/// An extra route: `to` via `via` (or on-link) with `metric`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// "A.B.C.D/PREFIX".
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// Added to the link's priority.
    #[serde(default)]
    pub metric: u32,
}

/// A TCP connect to `target`, out of this link only, every `interval_secs`;
/// `failures` misses in a row mark the link down, one success up again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// "A.B.C.D:PORT".
    pub target: String,
    #[serde(default = "default_interval")]
    pub interval_secs: u32,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u32,
    #[serde(default = "default_failures")]
    pub failures: u32,
}

fn default_interval() -> u32 {
    10
}
fn default_timeout() -> u32 {
    2_000
}
fn default_failures() -> u32 {
    3
}

/// A link's addressing, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticAddress {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
}

/// A route, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub to: Ipv4Addr,
    pub prefix: u8,
    pub via: Option<Ipv4Addr>,
    pub metric: u32,
}

impl LinkConfig {
    /// A link with defaults, matched by `interface`.
    pub fn new(name: &str, interface: &str) -> Self {
        Self {
            name: name.to_owned(),
            interface: interface.to_owned(),
            mac: None,
            priority: 0,
            mode: NetworkMode::Dhcp,
            address: None,
            gateway: None,
            dns: Vec::new(),
            routes: Vec::new(),
            probe: None,
            modem: None,
            budget_mb: None,
        }
    }

    /// The static address (validated configs only give `Some` in static mode).
    pub fn static_address(&self) -> Option<StaticAddress> {
        let (address, prefix) = parse_cidr(self.address.as_deref()?).ok()?;
        let gateway = self.gateway.as_deref().and_then(|g| g.parse().ok());
        Some(StaticAddress {
            address,
            prefix,
            gateway,
        })
    }

    pub fn dns_servers(&self) -> Vec<Ipv4Addr> {
        self.dns.iter().filter_map(|d| d.parse().ok()).collect()
    }

    /// Extra routes, their metrics on top of the link's priority.
    pub fn parsed_routes(&self) -> Vec<Route> {
        self.routes
            .iter()
            .filter_map(|r| {
                let (to, prefix) = parse_cidr(&r.to).ok()?;
                Some(Route {
                    to,
                    prefix,
                    via: r.via.as_deref().and_then(|v| v.parse().ok()),
                    metric: self.priority.saturating_add(r.metric),
                })
            })
            .collect()
    }

    /// The hardware address to match, if any.
    pub fn mac_bytes(&self) -> Option<[u8; 6]> {
        parse_mac(self.mac.as_deref()?)
    }

    /// Whether interface `name` with hardware address `mac` is this link.
    /// (An empty pattern without `mac` matches nothing here: the device
    /// gives such a link the first free Ethernet interface.)
    pub fn matches(&self, name: &str, mac: Option<[u8; 6]>) -> bool {
        if let Some(want) = self.mac_bytes() {
            return mac == Some(want);
        }
        match self.interface.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => !self.interface.is_empty() && name == self.interface,
        }
    }
}

impl ProbeConfig {
    pub fn target_addr(&self) -> Option<SocketAddrV4> {
        self.target.parse().ok()
    }
}

/// "52:54:00:12:34:56" → bytes.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut out {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// The links the device brings up: `[[network.links]]`, or the single link
/// of the `[network]` fields.
pub fn effective_links(net: &NetworkConfig) -> Vec<LinkConfig> {
    if !net.links.is_empty() {
        return net.links.clone();
    }
    let mut link = LinkConfig::new("default", &net.interface);
    link.mode = net.mode;
    link.address = net.address.clone();
    link.gateway = net.gateway.clone();
    vec![link]
}

fn is_interface_name(s: &str) -> bool {
    let bare = s.strip_suffix('*').unwrap_or(s);
    bare.len() <= 15 && !bare.contains(['/', ' ', '\0', '*', ':'])
}

/// Validate `[[network.links]]` (the single-link fields are checked in
/// machine.rs). Errors name the field and the link.
pub fn validate_links(net: &NetworkConfig) -> Result<(), ConfigError> {
    if net.links.is_empty() {
        return Ok(());
    }
    if !net.interface.is_empty() || net.address.is_some() || net.gateway.is_some() {
        return Err(field(
            "network.interface",
            "the single-link fields (interface, mode, address, gateway) are not allowed \
             with [[network.links]]: put them in a link",
        ));
    }
    if net.mode != NetworkMode::Dhcp {
        return Err(field(
            "network.mode",
            "not allowed with [[network.links]]: set it per link",
        ));
    }
    if net.links.len() > MAX_LINKS {
        return Err(field(
            "network.links",
            format!("{} links; at most {MAX_LINKS}", net.links.len()),
        ));
    }
    for (i, link) in net.links.iter().enumerate() {
        validate_link(link)?;
        if net.links[..i].iter().any(|l| l.name == link.name) {
            return Err(field(
                "network.links.name",
                format!("`{}` is used by two links", link.name),
            ));
        }
        // The kernel keys a route by destination and metric: two links at
        // one priority would replace each other's default route.
        if let Some(other) = net.links[..i].iter().find(|l| l.priority == link.priority) {
            return Err(field(
                "network.links.priority",
                format!(
                    "links `{}` and `{}` both have priority {}; give each its own",
                    other.name, link.name, link.priority
                ),
            ));
        }
    }
    Ok(())
}

fn validate_link(link: &LinkConfig) -> Result<(), ConfigError> {
    let name = &link.name;
    let bad = |f: &'static str, why: String| field(f, format!("link `{name}`: {why}"));
    if name.is_empty()
        || name.len() > MAX_LINK_NAME
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(field(
            "network.links.name",
            format!("`{name}`: 1 to {MAX_LINK_NAME} letters, digits, '-' or '_'"),
        ));
    }
    if !is_interface_name(&link.interface) {
        return Err(bad(
            "network.links.interface",
            format!(
                "`{}` is not an interface name (at most 15 characters, no '/', ':' or spaces; \
                 a trailing '*' matches a prefix)",
                link.interface
            ),
        ));
    }
    if let Some(mac) = &link.mac {
        if parse_mac(mac).is_none() {
            return Err(bad(
                "network.links.mac",
                format!("`{mac}` is not like 52:54:00:12:34:56"),
            ));
        }
    }
    if link.priority > MAX_PRIORITY {
        return Err(bad(
            "network.links.priority",
            format!("{} is above {MAX_PRIORITY}", link.priority),
        ));
    }
    match link.mode {
        NetworkMode::Dhcp => {
            if link.address.is_some() || link.gateway.is_some() {
                return Err(bad(
                    "network.links.address",
                    "address and gateway are only allowed with mode = \"static\"".into(),
                ));
            }
        }
        NetworkMode::Static => {
            let addr = link.address.as_deref().ok_or_else(|| {
                bad(
                    "network.links.address",
                    "required with mode = \"static\"".into(),
                )
            })?;
            parse_cidr(addr).map_err(|why| bad("network.links.address", why))?;
            if let Some(gw) = &link.gateway {
                gw.parse::<Ipv4Addr>().map_err(|_| {
                    bad(
                        "network.links.gateway",
                        format!("`{gw}` is not an IPv4 address"),
                    )
                })?;
            }
        }
    }
    if link.dns.len() > MAX_DNS {
        return Err(bad(
            "network.links.dns",
            format!("{} servers; at most {MAX_DNS}", link.dns.len()),
        ));
    }
    for d in &link.dns {
        d.parse::<Ipv4Addr>()
            .map_err(|_| bad("network.links.dns", format!("`{d}` is not an IPv4 address")))?;
    }
    if link.routes.len() > MAX_ROUTES {
        return Err(bad(
            "network.links.routes",
            format!("{} routes; at most {MAX_ROUTES}", link.routes.len()),
        ));
    }
    for r in &link.routes {
        parse_cidr(&r.to).map_err(|why| bad("network.links.routes.to", why))?;
        if let Some(via) = &r.via {
            via.parse::<Ipv4Addr>().map_err(|_| {
                bad(
                    "network.links.routes.via",
                    format!("`{via}` is not an IPv4 address"),
                )
            })?;
        }
        if r.metric > MAX_PRIORITY {
            return Err(bad(
                "network.links.routes.metric",
                format!("{} is above {MAX_PRIORITY}", r.metric),
            ));
        }
    }
    if let Some(p) = &link.probe {
        validate_probe(p).map_err(|(f, why)| bad(f, why))?;
    }
    if let Some(m) = &link.modem {
        validate_modem(m).map_err(|(f, why)| bad(f, why))?;
    }
    Ok(())
}

/// What goes into an AT command line must not end it or quote out of it.
fn at_safe(s: &str) -> bool {
    s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b';')
}

fn validate_modem(m: &ModemConfig) -> Result<(), (&'static str, String)> {
    if !m.port.starts_with("/dev/") || m.port.len() > 64 || m.port.contains("..") {
        return Err((
            "network.links.modem.port",
            format!("`{}` is not a /dev path", m.port),
        ));
    }
    if m.apn.len() > MAX_APN || !at_safe(&m.apn) {
        return Err((
            "network.links.modem.apn",
            format!("at most {MAX_APN} printable characters, no '\"' or ';'"),
        ));
    }
    if let Some(pin) = &m.pin {
        if !(4..=8).contains(&pin.len()) || !pin.bytes().all(|b| b.is_ascii_digit()) {
            return Err(("network.links.modem.pin", "4 to 8 digits".into()));
        }
    }
    if m.reboot_after > MAX_REBOOT_AFTER {
        return Err((
            "network.links.modem.reboot_after",
            format!("{} is above {MAX_REBOOT_AFTER}", m.reboot_after),
        ));
    }
    if !(1..=MAX_REGISTER_SECS).contains(&m.register_secs) {
        return Err((
            "network.links.modem.register_secs",
            format!("{} is not 1 to {MAX_REGISTER_SECS}", m.register_secs),
        ));
    }
    Ok(())
}

fn validate_probe(p: &ProbeConfig) -> Result<(), (&'static str, String)> {
    if p.target_addr().is_none_or(|a| a.port() == 0) {
        return Err((
            "network.links.probe.target",
            format!("`{}` is not A.B.C.D:PORT", p.target),
        ));
    }
    if !(MIN_PROBE_INTERVAL..=MAX_PROBE_INTERVAL).contains(&p.interval_secs) {
        return Err((
            "network.links.probe.interval_secs",
            format!(
                "{} is not {MIN_PROBE_INTERVAL} to {MAX_PROBE_INTERVAL}",
                p.interval_secs
            ),
        ));
    }
    if !(MIN_PROBE_TIMEOUT_MS..=MAX_PROBE_TIMEOUT_MS).contains(&p.timeout_ms) {
        return Err((
            "network.links.probe.timeout_ms",
            format!(
                "{} is not {MIN_PROBE_TIMEOUT_MS} to {MAX_PROBE_TIMEOUT_MS}",
                p.timeout_ms
            ),
        ));
    }
    if !(1..=MAX_PROBE_FAILURES).contains(&p.failures) {
        return Err((
            "network.links.probe.failures",
            format!("{} is not 1 to {MAX_PROBE_FAILURES}", p.failures),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MachineConfig;

    fn err_field(text: &str) -> &'static str {
        match MachineConfig::from_toml(&format!("hostname = \"ok\"\n{text}")) {
            Err(ConfigError::Field { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    const TWO: &str = r#"
[[network.links]]
name = "wan"
interface = "eth0"
priority = 10
dns = ["192.0.2.53"]
routes = [{ to = "198.51.100.0/24", via = "10.0.2.1", metric = 5 }]
probe = { target = "10.0.2.100:7", interval_secs = 2, failures = 2 }

[[network.links]]
name = "lte"
interface = "wwan*"
priority = 20
mode = "static"
address = "192.0.2.7/30"
gateway = "192.0.2.5"
"#;

    #[test]
    fn two_links_parse_and_round_trip() {
        let c = MachineConfig::from_toml(&format!("hostname = \"ok\"\n{TWO}")).unwrap();
        let links = effective_links(&c.network);
        assert_eq!(links.len(), 2);
        let (wan, lte) = (&links[0], &links[1]);
        assert_eq!(wan.dns_servers(), [Ipv4Addr::new(192, 0, 2, 53)]);
        assert_eq!(
            wan.parsed_routes(),
            [Route {
                to: Ipv4Addr::new(198, 51, 100, 0),
                prefix: 24,
                via: Some(Ipv4Addr::new(10, 0, 2, 1)),
                metric: 15
            }]
        );
        let p = wan.probe.as_ref().unwrap();
        assert_eq!((p.interval_secs, p.timeout_ms, p.failures), (2, 2000, 2));
        assert!(wan.matches("eth0", None) && !wan.matches("eth1", None));
        assert!(lte.matches("wwan0", None) && !lte.matches("eth0", None));
        assert_eq!(
            lte.static_address(),
            Some(StaticAddress {
                address: Ipv4Addr::new(192, 0, 2, 7),
                prefix: 30,
                gateway: Some(Ipv4Addr::new(192, 0, 2, 5))
            })
        );
        assert_eq!(MachineConfig::from_toml(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn old_single_link_config_is_one_link() {
        let c = MachineConfig::from_toml(
            "hostname = \"ok\"\n[network]\ninterface = \"eth1\"\nmode = \"static\"\naddress = \"192.0.2.5/24\"\ngateway = \"192.0.2.1\"",
        )
        .unwrap();
        let links = effective_links(&c.network);
        assert_eq!(links.len(), 1);
        assert_eq!(links[0].interface, "eth1");
        assert_eq!(links[0].priority, 0);
        assert!(links[0].probe.is_none());
        assert_eq!(
            links[0].static_address().unwrap().gateway,
            Some(Ipv4Addr::new(192, 0, 2, 1))
        );
        // No [network] at all: DHCP on the first Ethernet link.
        let links = effective_links(&MachineConfig::new("x").network);
        assert_eq!(
            (links[0].interface.as_str(), links[0].mode),
            ("", NetworkMode::Dhcp)
        );
    }

    #[test]
    fn mac_matching() {
        let mut l = LinkConfig::new("a", "");
        assert!(!l.matches("eth0", None), "an empty pattern matches nothing");
        l.mac = Some("52:54:00:00:00:0A".into());
        assert!(l.matches("whatever", Some([0x52, 0x54, 0, 0, 0, 0x0a])));
        assert!(!l.matches("whatever", Some([0x52, 0x54, 0, 0, 0, 0x0b])));
        for bad in [
            "",
            "52:54:00:00:00",
            "52:54:00:00:00:0a:01",
            "5:54:00:00:00:0a",
            "zz:54:00:00:00:0a",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }

    #[test]
    fn bad_link_fields_are_named() {
        let link = |extra: &str| format!("[[network.links]]\nname = \"a\"\n{extra}");
        assert_eq!(
            err_field(&link("interface = \"a/b\"")),
            "network.links.interface"
        );
        assert_eq!(err_field(&link("mac = \"nope\"")), "network.links.mac");
        assert_eq!(
            err_field(&link("priority = 10000")),
            "network.links.priority"
        );
        assert_eq!(
            err_field(&link("mode = \"static\"")),
            "network.links.address"
        );
        assert_eq!(
            err_field(&link(
                "mode = \"static\"\naddress = \"1.2.3.4/24\"\ngateway = \"x\""
            )),
            "network.links.gateway"
        );
        assert_eq!(
            err_field(&link("address = \"1.2.3.4/24\"")),
            "network.links.address"
        );
        assert_eq!(err_field(&link("dns = [\"x\"]")), "network.links.dns");
        assert_eq!(
            err_field(&link(
                "dns = [\"1.1.1.1\", \"1.1.1.2\", \"1.1.1.3\", \"1.1.1.4\"]"
            )),
            "network.links.dns"
        );
        assert_eq!(
            err_field(&link("routes = [{ to = \"1.2.3.4\" }]")),
            "network.links.routes.to"
        );
        assert_eq!(
            err_field(&link("routes = [{ to = \"1.2.3.0/24\", via = \"x\" }]")),
            "network.links.routes.via"
        );
        assert_eq!(
            err_field(&link("probe = { target = \"1.2.3.4\" }")),
            "network.links.probe.target"
        );
        assert_eq!(
            err_field(&link("probe = { target = \"1.2.3.4:0\" }")),
            "network.links.probe.target"
        );
        assert_eq!(
            err_field(&link(
                "probe = { target = \"1.2.3.4:7\", interval_secs = 0 }"
            )),
            "network.links.probe.interval_secs"
        );
        assert_eq!(
            err_field(&link("probe = { target = \"1.2.3.4:7\", failures = 0 }")),
            "network.links.probe.failures"
        );
        assert_eq!(
            err_field(&link("probe = { target = \"1.2.3.4:7\", timeout_ms = 5 }")),
            "network.links.probe.timeout_ms"
        );
        assert_eq!(
            err_field("[[network.links]]\nname = \"\""),
            "network.links.name"
        );
        assert_eq!(
            err_field("[[network.links]]\nname = \"a\"\n[[network.links]]\nname = \"a\""),
            "network.links.name"
        );
        assert_eq!(
            err_field("[network]\ninterface = \"eth0\"\n[[network.links]]\nname = \"a\""),
            "network.interface"
        );
        assert_eq!(
            err_field(&link("modem = { port = \"ttyUSB2\", apn = \"x\" }")),
            "network.links.modem.port"
        );
        assert_eq!(
            err_field(&link(
                "modem = { port = \"/dev/ttyUSB2\", apn = \"a\\\"\" }"
            )),
            "network.links.modem.apn"
        );
        assert_eq!(
            err_field(&link(
                "modem = { port = \"/dev/ttyUSB2\", apn = \"a\", pin = \"12\" }"
            )),
            "network.links.modem.pin"
        );
        let modem = MachineConfig::from_toml(&format!(
            "hostname = \"ok\"\n{}",
            link("modem = { port = \"/dev/ttyUSB2\", apn = \"internet\", pin = \"1234\", family = \"quectel\" }")
        ))
        .unwrap();
        let m = modem.network.links[0].modem.as_ref().unwrap();
        assert_eq!((m.family, m.register_secs), (ModemFamily::Quectel, 60));
        let many: String = (0..9)
            .map(|i| format!("[[network.links]]\nname = \"l{i}\"\n"))
            .collect();
        assert_eq!(err_field(&many), "network.links");
        // The message names the link.
        let err = MachineConfig::from_toml(&format!("hostname = \"ok\"\n{}", link("mac = \"x\"")))
            .unwrap_err();
        assert!(err.to_string().contains("link `a`"), "{err}");
    }
}
