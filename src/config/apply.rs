//! What applying a new machine config means: which changes take effect on a
//! running board, and whether a change would cut the board off the network it
//! is managed over. Pure logic, shared, so the CLI and the device reason alike.

use std::net::Ipv4Addr;

use super::diff::changes;
use super::machine::{parse_cidr, MachineConfig, NetworkMode};
use super::network::parse_mac;

/// Fields the device applies while running (matched as a dotted-key prefix).
/// Everything else (network, API port) is read once at boot: it needs a reboot.
pub const LIVE_FIELDS: &[&str] = &["hostname", "watchdog."];

/// The changes between the config in force and a new one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApplyPlan {
    /// One line per changed field: "network.mode: \"dhcp\" -> \"static\"".
    pub changes: Vec<String>,
    /// Changed fields that only take effect at the next boot.
    pub reboot_fields: Vec<String>,
}

impl ApplyPlan {
    pub fn needs_reboot(&self) -> bool {
        !self.reboot_fields.is_empty()
    }
}

fn is_live(key: &str) -> bool {
    LIVE_FIELDS
        .iter()
        .any(|f| key == *f || (f.ends_with('.') && key.starts_with(f)))
}

/// Compare field by field (both configs are already validated).
pub fn plan(old: &MachineConfig, new: &MachineConfig) -> ApplyPlan {
    let mut plan = ApplyPlan::default();
    for change in changes(&old.to_toml(), &new.to_toml()) {
        if !is_live(&change.key) {
            plan.reboot_fields.push(change.key);
        }
        plan.changes.push(change.line);
    }
    plan
}

/// Why `new` would cut the board off its management network, if it would.
/// `addresses` are the board's current ones ("eth0 10.0.2.15/24") and `links`
/// its interfaces ("eth0 up 52:54:00:12:34:56 mtu 1500"). A board without a
/// network address is not managed over the network: nothing to cut.
pub fn cut_off(
    old: &MachineConfig,
    new: &MachineConfig,
    addresses: &[String],
    links: &[String],
) -> Option<String> {
    if old.api.port != new.api.port {
        return Some(format!(
            "api.port: the API would move from port {} to {}; clients that reach it at {} lose the board",
            old.api.port, new.api.port, old.api.port
        ));
    }
    if old.network == new.network {
        return None;
    }
    if !old.network.links.is_empty() || !new.network.links.is_empty() {
        return links_cut_off(old, new, addresses, links);
    }
    let link_names: Vec<&str> = links.iter().filter_map(|l| first_word(l)).collect();
    let wanted = &new.network.interface;
    if !wanted.is_empty() && !link_names.contains(&wanted.as_str()) {
        return Some(format!(
            "network.interface: this board has no link `{wanted}` (it has: {})",
            link_names.join(", ")
        ));
    }
    let managed = managed_addresses(addresses);
    let (iface, _) = managed.first()?;
    let old_iface = resolve(&old.network.interface, iface);
    let new_iface = resolve(wanted, iface);
    if old_iface != new_iface {
        return Some(format!(
            "network.interface: management would move from {old_iface} to {new_iface}"
        ));
    }
    let current: Vec<Ipv4Addr> = managed
        .iter()
        .filter(|(i, _)| *i == old_iface)
        .map(|(_, a)| *a)
        .collect();
    let shown = current
        .iter()
        .map(Ipv4Addr::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    match new.network.mode {
        NetworkMode::Static => {
            let addr = new.network.address.as_deref().unwrap_or_default();
            let ip = parse_cidr(addr).ok()?.0;
            (!current.is_empty() && !current.contains(&ip)).then(|| {
                format!("network.address: the board is managed at {shown}; this config moves it to {ip}")
            })
        }
        NetworkMode::Dhcp if old.network.mode == NetworkMode::Static => Some(format!(
            "network.mode: the board is managed at {shown}, a static address; DHCP may give another"
        )),
        NetworkMode::Dhcp => None,
    }
}

/// How one config addresses one interface: the link that claims it.
struct Claim<'a> {
    /// The field prefix an error names: `network` or `network.links` (`wan`).
    field: String,
    mode: NetworkMode,
    address: Option<&'a str>,
}

/// Which link of `config` would configure `iface` (hardware address `mac`),
/// as the device matches them (src/device/net/links.rs): an explicit match
/// (name, prefix or MAC) first; else a link with neither takes the first
/// managed interface no link names. Without `[[network.links]]`, the
/// single-link fields.
fn claim<'a>(
    config: &'a MachineConfig,
    iface: &str,
    mac: Option<[u8; 6]>,
    managed: &[&str],
    all_macs: &dyn Fn(&str) -> Option<[u8; 6]>,
) -> Option<Claim<'a>> {
    let net = &config.network;
    if net.links.is_empty() {
        let first = managed.first().copied().unwrap_or(iface);
        return (resolve(&net.interface, first) == iface).then(|| Claim {
            field: "network".into(),
            mode: net.mode,
            address: net.address.as_deref(),
        });
    }
    let explicit = net.links.iter().find(|l| l.matches(iface, mac));
    let link = explicit.or_else(|| {
        let first_free = managed
            .iter()
            .find(|i| !net.links.iter().any(|l| l.matches(i, all_macs(i))))?;
        (*first_free == iface)
            .then(|| {
                net.links
                    .iter()
                    .find(|l| l.interface.is_empty() && l.mac.is_none())
            })
            .flatten()
    })?;
    Some(Claim {
        field: format!("network.links (`{}`)", link.name),
        mode: link.mode,
        address: link.address.as_deref(),
    })
}

/// [`cut_off`] when either config has `[[network.links]]`: the board stays
/// reachable if at least one address it is managed at now is kept — its
/// interface is still claimed by a link, at the same static address, or by
/// DHCP when it was DHCP before.
fn links_cut_off(
    old: &MachineConfig,
    new: &MachineConfig,
    addresses: &[String],
    links: &[String],
) -> Option<String> {
    let managed = managed_addresses(addresses);
    let ifaces: Vec<&str> = managed.iter().map(|(i, _)| *i).collect();
    let mac_of = |iface: &str| {
        links
            .iter()
            .find(|l| first_word(l) == Some(iface))
            .and_then(|l| l.split_whitespace().find_map(parse_mac))
    };
    let mut why = None;
    for (iface, ip) in &managed {
        let mac = mac_of(iface);
        let Some(new_claim) = claim(new, iface, mac, &ifaces, &mac_of) else {
            why.get_or_insert_with(|| {
                format!("network.links: no link would configure {iface}, which the board is managed over ({ip})")
            });
            continue;
        };
        let was_static =
            claim(old, iface, mac, &ifaces, &mac_of).is_some_and(|c| c.mode == NetworkMode::Static);
        let kept = match new_claim.mode {
            NetworkMode::Static => new_claim
                .address
                .and_then(|a| parse_cidr(a).ok())
                .is_some_and(|(a, _)| a == *ip),
            NetworkMode::Dhcp => !was_static,
        };
        if kept {
            return None;
        }
        why.get_or_insert_with(|| match new_claim.mode {
            NetworkMode::Static => format!(
                "{}: the board is managed at {ip} on {iface}; this config gives {iface} {}",
                new_claim.field,
                new_claim.address.unwrap_or("no address")
            ),
            NetworkMode::Dhcp => format!(
                "{}: the board is managed at {ip} on {iface}, a static address; DHCP may give another",
                new_claim.field
            ),
        });
    }
    why
}

fn first_word(line: &str) -> Option<&str> {
    line.split_whitespace().next()
}

/// An empty interface setting means the first non-loopback link.
fn resolve<'a>(configured: &'a str, first: &'a str) -> &'a str {
    if configured.is_empty() {
        first
    } else {
        configured
    }
}

/// Non-loopback IPv4 addresses as (interface, address), in the board's order.
fn managed_addresses(addresses: &[String]) -> Vec<(&str, Ipv4Addr)> {
    addresses
        .iter()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let iface = words.next()?;
            let (ip, _) = parse_cidr(words.next()?).ok()?;
            (!ip.is_loopback()).then_some((iface, ip))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> MachineConfig {
        MachineConfig::from_toml(&format!("hostname = \"edge\"\n{text}")).unwrap()
    }

    fn board() -> (Vec<String>, Vec<String>) {
        (
            vec!["lo 127.0.0.1/8".into(), "eth0 10.0.2.15/24".into()],
            vec!["lo up".into(), "eth0 up 52:54:00:12:34:56 mtu 1500".into()],
        )
    }

    fn cut(old: &str, new: &str) -> Option<String> {
        let (addrs, links) = board();
        cut_off(&config(old), &config(new), &addrs, &links)
    }

    #[test]
    fn live_and_reboot_fields_are_told_apart() {
        let old = config("");
        let mut new = old.clone();
        new.hostname = "edge-2".into();
        new.watchdog.timeout_secs = Some(20);
        let p = plan(&old, &new);
        assert_eq!(p.changes.len(), 2, "{p:?}");
        assert!(!p.needs_reboot(), "{p:?}");
        new.api.port = 50001;
        let p = plan(&old, &new);
        assert_eq!(p.reboot_fields, ["api.port"]);
        assert!(plan(&old, &old).changes.is_empty());
    }

    #[test]
    fn changes_that_cut_the_board_off_are_named() {
        let static_other = "[network]\nmode = \"static\"\naddress = \"192.0.2.9/24\"";
        let why = cut("", static_other).unwrap();
        assert!(
            why.starts_with("network.address") && why.contains("10.0.2.15"),
            "{why}"
        );
        let why = cut("", "[network]\ninterface = \"wwan0\"").unwrap();
        assert!(
            why.starts_with("network.interface") && why.contains("eth0"),
            "{why}"
        );
        let why = cut("", "[api]\nport = 50001").unwrap();
        assert!(why.starts_with("api.port"), "{why}");
        let static_same = "[network]\nmode = \"static\"\naddress = \"10.0.2.15/24\"";
        let why = cut(static_same, "").unwrap();
        assert!(why.starts_with("network.mode"), "{why}");
    }

    #[test]
    fn link_configs_that_cut_the_board_off_are_named() {
        let lte_only = "[[network.links]]\nname = \"lte\"\ninterface = \"wwan*\"\npriority = 20";
        let why = cut("", lte_only).unwrap();
        assert!(
            why.starts_with("network.links: no link would configure eth0"),
            "{why}"
        );
        let moved = "[[network.links]]\nname = \"wan\"\ninterface = \"eth0\"\npriority = 10\nmode = \"static\"\naddress = \"192.0.2.9/24\"";
        let why = cut("", moved).unwrap();
        assert!(
            why.starts_with("network.links (`wan`)") && why.contains("192.0.2.9/24"),
            "{why}"
        );
        let by_other_mac =
            "[[network.links]]\nname = \"wan\"\nmac = \"52:54:00:00:00:01\"\npriority = 10";
        assert!(cut("", by_other_mac).is_some());
        // Going back from links to a single static address elsewhere.
        let why = cut(
            lte_only,
            "[network]\nmode = \"static\"\naddress = \"192.0.2.9/24\"",
        )
        .unwrap();
        assert!(why.starts_with("network:"), "{why}");
    }

    #[test]
    fn link_configs_that_keep_the_management_address_pass() {
        for keeps in [
            // eth0 by name, by MAC, by prefix, or as the first unnamed link.
            "[[network.links]]\nname = \"wan\"\ninterface = \"eth0\"\npriority = 10",
            "[[network.links]]\nname = \"wan\"\nmac = \"52:54:00:12:34:56\"\npriority = 10",
            "[[network.links]]\nname = \"wan\"\ninterface = \"eth*\"\npriority = 10",
            "[[network.links]]\nname = \"lte\"\ninterface = \"wwan*\"\npriority = 20\n[[network.links]]\nname = \"wan\"\npriority = 10",
            "[[network.links]]\nname = \"wan\"\ninterface = \"eth0\"\npriority = 10\nmode = \"static\"\naddress = \"10.0.2.15/24\"",
        ] {
            assert_eq!(cut("", keeps), None, "{keeps}");
        }
    }

    #[test]
    fn changes_that_keep_the_management_address_pass() {
        let static_same = "[network]\nmode = \"static\"\naddress = \"10.0.2.15/24\"";
        assert_eq!(cut("", static_same), None);
        assert_eq!(cut("", "[network]\ninterface = \"eth0\""), None);
        assert_eq!(cut("", "[watchdog]\ntimeout_secs = 30"), None);
        // No address at all: the board is not managed over the network.
        let none = cut_off(
            &config(""),
            &config("[network]\nmode = \"static\"\naddress = \"192.0.2.9/24\""),
            &["lo 127.0.0.1/8".into()],
            &["lo up".into(), "eth0 up".into()],
        );
        assert_eq!(none, None);
    }
}
