//! What applying a new machine config means: which changes take effect on a
//! running board, and whether a change would cut the board off the network it
//! is managed over. Pure logic, shared, so the CLI and the device reason alike.

use std::net::Ipv4Addr;

use super::diff::changes;
use super::machine::{parse_cidr, MachineConfig, NetworkMode};

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
