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

/// One link. Flat on purpose: every nested table type costs the device
/// binary its own serde code for each TOML deserializer (~10 KB apiece).
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
    /// Extra routes out of this link: "198.51.100.0/24 [via A.B.C.D]
    /// [metric N]" (the metric is added to the link's priority).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
    /// Health probe: a TCP connect to "A.B.C.D:PORT" out of this link
    /// every `probe_interval_secs`; `probe_failures` misses in a row mark
    /// the link down, one success up again. None: healthy while it has
    /// carrier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<String>,
    #[serde(default = "default_interval")]
    pub probe_interval_secs: u32,
    #[serde(default = "default_timeout")]
    pub probe_timeout_ms: u32,
    #[serde(default = "default_failures")]
    pub probe_failures: u32,
    /// Monthly data budget (MB = 10^6 bytes); past it the link's probes
    /// slow down tenfold and status says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_mb: Option<u32>,
    /// An LTE modem's AT port ("/dev/ttyUSB2") that must dial before the
    /// link carries data; the `modem_*` fields and `apn` go with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modem: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub apn: String,
    /// SIM PIN, if the SIM asks for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
    #[serde(default)]
    pub modem_family: ModemFamily,
    /// How long to wait for registration after attach.
    #[serde(default = "default_register_secs")]
    pub register_secs: u32,
    /// Reboot the board after this many modem failures in a row (watchdog
    /// ladder, docs/network.md); 0 = never.
    #[serde(default)]
    pub reboot_after: u32,
}

/// A link's probe, from the `probe*` fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeConfig {
    pub target: SocketAddrV4,
    pub interval_secs: u32,
    pub timeout_ms: u32,
    pub failures: u32,
}

/// A link's modem, from the `modem*` fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModemConfig {
    pub port: String,
    pub apn: String,
    pub pin: Option<String>,
    pub family: ModemFamily,
    pub register_secs: u32,
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
/// Registration wait bounds (seconds).
const MAX_REGISTER_SECS: u32 = 600;
/// More failures than this before a reboot is "never" in practice.
const MAX_REBOOT_AFTER: u32 = 1000;

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
            probe_interval_secs: default_interval(),
            probe_timeout_ms: default_timeout(),
            probe_failures: default_failures(),
            budget_mb: None,
            modem: None,
            apn: String::new(),
            pin: None,
            modem_family: ModemFamily::Generic,
            register_secs: default_register_secs(),
            reboot_after: 0,
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

    /// Extra routes, their metrics on top of the link's priority
    /// (validated configs: unparsable ones are left out).
    pub fn parsed_routes(&self) -> Vec<Route> {
        self.routes
            .iter()
            .filter_map(|r| {
                let mut r = parse_route(r).ok()?;
                r.metric = self.priority.saturating_add(r.metric);
                Some(r)
            })
            .collect()
    }

    /// The probe, if one is set (and valid).
    pub fn probe(&self) -> Option<ProbeConfig> {
        Some(ProbeConfig {
            target: self.probe.as_deref()?.parse().ok()?,
            interval_secs: self.probe_interval_secs,
            timeout_ms: self.probe_timeout_ms,
            failures: self.probe_failures,
        })
    }

    /// The modem, if this link has one.
    pub fn modem(&self) -> Option<ModemConfig> {
        Some(ModemConfig {
            port: self.modem.clone()?,
            apn: self.apn.clone(),
            pin: self.pin.clone(),
            family: self.modem_family,
            register_secs: self.register_secs,
            reboot_after: self.reboot_after,
        })
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

/// "198.51.100.0/24 via 10.0.2.1 metric 5" (via and metric optional).
pub fn parse_route(text: &str) -> Result<Route, String> {
    let mut words = text.split_whitespace();
    let (to, prefix) = parse_cidr(words.next().unwrap_or_default())?;
    let mut route = Route {
        to,
        prefix,
        via: None,
        metric: 0,
    };
    while let Some(key) = words.next() {
        let value = words
            .next()
            .ok_or_else(|| format!("`{key}` needs a value"))?;
        match key {
            "via" => {
                route.via = Some(
                    value
                        .parse()
                        .map_err(|_| format!("via `{value}` is not an IPv4 address"))?,
                )
            }
            "metric" => {
                route.metric = value
                    .parse()
                    .ok()
                    .filter(|m| *m <= MAX_PRIORITY)
                    .ok_or_else(|| format!("metric `{value}` is not 0 to {MAX_PRIORITY}"))?
            }
            _ => return Err(format!("`{key}`: expected `via` or `metric`")),
        }
    }
    Ok(route)
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
        parse_route(r).map_err(|why| bad("network.links.routes", format!("`{r}`: {why}")))?;
    }
    if let Some(p) = &link.probe {
        validate_probe(p, link).map_err(|(f, why)| bad(f, why))?;
    }
    if let Some(port) = &link.modem {
        validate_modem(port, link).map_err(|(f, why)| bad(f, why))?;
    }
    Ok(())
}

/// What goes into an AT command line must not end it or quote out of it.
fn at_safe(s: &str) -> bool {
    s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b';')
}

fn validate_modem(port: &str, m: &LinkConfig) -> Result<(), (&'static str, String)> {
    if !port.starts_with("/dev/") || port.len() > 64 || port.contains("..") {
        return Err((
            "network.links.modem",
            format!("`{port}` is not a /dev path"),
        ));
    }
    if m.apn.len() > MAX_APN || !at_safe(&m.apn) {
        return Err((
            "network.links.apn",
            format!("at most {MAX_APN} printable characters, no '\"' or ';'"),
        ));
    }
    if let Some(pin) = &m.pin {
        if !(4..=8).contains(&pin.len()) || !pin.bytes().all(|b| b.is_ascii_digit()) {
            return Err(("network.links.pin", "4 to 8 digits".into()));
        }
    }
    if m.reboot_after > MAX_REBOOT_AFTER {
        return Err((
            "network.links.reboot_after",
            format!("{} is above {MAX_REBOOT_AFTER}", m.reboot_after),
        ));
    }
    if !(1..=MAX_REGISTER_SECS).contains(&m.register_secs) {
        return Err((
            "network.links.register_secs",
            format!("{} is not 1 to {MAX_REGISTER_SECS}", m.register_secs),
        ));
    }
    Ok(())
}

fn validate_probe(target: &str, l: &LinkConfig) -> Result<(), (&'static str, String)> {
    if target
        .parse::<SocketAddrV4>()
        .map_or(true, |a| a.port() == 0)
    {
        return Err((
            "network.links.probe",
            format!("`{target}` is not A.B.C.D:PORT"),
        ));
    }
    let ranges: [(&'static str, u32, u32, u32); 3] = [
        (
            "network.links.probe_interval_secs",
            l.probe_interval_secs,
            MIN_PROBE_INTERVAL,
            MAX_PROBE_INTERVAL,
        ),
        (
            "network.links.probe_timeout_ms",
            l.probe_timeout_ms,
            MIN_PROBE_TIMEOUT_MS,
            MAX_PROBE_TIMEOUT_MS,
        ),
        (
            "network.links.probe_failures",
            l.probe_failures,
            1,
            MAX_PROBE_FAILURES,
        ),
    ];
    for (name, value, min, max) in ranges {
        if !(min..=max).contains(&value) {
            return Err((name, format!("{value} is not {min} to {max}")));
        }
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
routes = ["198.51.100.0/24 via 10.0.2.1 metric 5", "203.0.113.0/28"]
probe = "10.0.2.100:7"
probe_interval_secs = 2
probe_failures = 2

[[network.links]]
name = "lte"
interface = "wwan*"
priority = 20
mode = "static"
address = "192.0.2.7/30"
gateway = "192.0.2.5"
modem = "/dev/ttyUSB2"
apn = "internet"
pin = "1234"
modem_family = "quectel"
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
            [
                Route {
                    to: Ipv4Addr::new(198, 51, 100, 0),
                    prefix: 24,
                    via: Some(Ipv4Addr::new(10, 0, 2, 1)),
                    metric: 15
                },
                Route {
                    to: Ipv4Addr::new(203, 0, 113, 0),
                    prefix: 28,
                    via: None,
                    metric: 10
                }
            ]
        );
        let p = wan.probe().unwrap();
        assert_eq!(p.target, "10.0.2.100:7".parse().unwrap());
        assert_eq!((p.interval_secs, p.timeout_ms, p.failures), (2, 2000, 2));
        assert!(wan.modem().is_none() && lte.probe().is_none());
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
        let m = lte.modem().unwrap();
        assert_eq!(
            (
                m.port.as_str(),
                m.apn.as_str(),
                m.pin.as_deref(),
                m.family,
                m.register_secs
            ),
            (
                "/dev/ttyUSB2",
                "internet",
                Some("1234"),
                ModemFamily::Quectel,
                60
            )
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
        assert!(links[0].probe().is_none());
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
    fn route_strings() {
        assert!(parse_route("10.0.0.0/8 via 10.0.2.1").is_ok());
        for bad in [
            "",
            "10.0.0.0",
            "10.0.0.0/8 via",
            "10.0.0.0/8 via x",
            "10.0.0.0/8 metric 10000",
            "10.0.0.0/8 dev eth0",
        ] {
            assert!(parse_route(bad).is_err(), "{bad}");
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
            err_field(&link("routes = [\"1.2.3.4\"]")),
            "network.links.routes"
        );
        assert_eq!(
            err_field(&link("probe = \"1.2.3.4\"")),
            "network.links.probe"
        );
        assert_eq!(
            err_field(&link("probe = \"1.2.3.4:0\"")),
            "network.links.probe"
        );
        assert_eq!(
            err_field(&link("probe = \"1.2.3.4:7\"\nprobe_interval_secs = 0")),
            "network.links.probe_interval_secs"
        );
        assert_eq!(
            err_field(&link("probe = \"1.2.3.4:7\"\nprobe_failures = 0")),
            "network.links.probe_failures"
        );
        assert_eq!(
            err_field(&link("probe = \"1.2.3.4:7\"\nprobe_timeout_ms = 5")),
            "network.links.probe_timeout_ms"
        );
        assert_eq!(
            err_field(&link("modem = \"ttyUSB2\"")),
            "network.links.modem"
        );
        assert_eq!(
            err_field(&link("modem = \"/dev/ttyUSB2\"\napn = \"a\\\"\"")),
            "network.links.apn"
        );
        assert_eq!(
            err_field(&link("modem = \"/dev/ttyUSB2\"\npin = \"12\"")),
            "network.links.pin"
        );
        assert_eq!(
            err_field(&link("modem = \"/dev/ttyUSB2\"\nregister_secs = 0")),
            "network.links.register_secs"
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
            err_field("[[network.links]]\nname = \"a\"\n[[network.links]]\nname = \"b\""),
            "network.links.priority"
        );
        assert_eq!(
            err_field("[network]\ninterface = \"eth0\"\n[[network.links]]\nname = \"a\""),
            "network.interface"
        );
        let many: String = (0..9)
            .map(|i| format!("[[network.links]]\nname = \"l{i}\"\npriority = {i}\n"))
            .collect();
        assert_eq!(err_field(&many), "network.links");
        // The message names the link.
        let err = MachineConfig::from_toml(&format!("hostname = \"ok\"\n{}", link("mac = \"x\"")))
            .unwrap_err();
        assert!(err.to_string().contains("link `a`"), "{err}");
    }
}
