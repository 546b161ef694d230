//! `[callhome]` in the machine config: the MQTT broker a board behind NAT
//! dials out to (docs/callhome.md). Absent: no call-home.

use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

use super::ConfigError;

/// MQTT over TLS.
pub const MQTTS_PORT: u16 = 8883;
/// Keepalive default: under the ~4 min after which some carriers drop idle
/// TCP flows, with room for a late PINGREQ.
pub const DEFAULT_KEEPALIVE_SECS: u16 = 200;
/// Bounds: below 10 s the pings cost more than they save; above 20 min
/// every NAT on the way has forgotten the flow.
pub const MIN_KEEPALIVE_SECS: u16 = 10;
pub const MAX_KEEPALIVE_SECS: u16 = 1200;
/// Groups a board belongs to: one SUBSCRIBE carries them all (with the
/// board's own topic), and fan-out needs a few, not dozens.
pub const MAX_GROUPS: usize = 8;
/// A group name is one topic level.
const MAX_GROUP_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallHomeConfig {
    /// The broker's IPv4 address (the device has no DNS resolver; a
    /// clustered broker sits behind one load-balancer address).
    pub broker: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// Name the broker's certificate must carry; default: `broker`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// MQTT keepalive the board starts with; it lowers it by itself after
    /// disconnects it cannot explain (a NAT dropping the idle flow).
    #[serde(default = "default_keepalive")]
    pub keepalive_secs: u16,
    /// Fan-out groups: the board also takes commands on
    /// `outpost/group/<g>/req`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Refuse plain commands: only sealed ones (encrypted to the board's
    /// seal key) run, so the broker never sees a request or an answer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_sealed: bool,
}

fn default_port() -> u16 {
    MQTTS_PORT
}

fn default_keepalive() -> u16 {
    DEFAULT_KEEPALIVE_SECS
}

fn field(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field,
        reason: reason.into(),
    }
}

impl CallHomeConfig {
    /// The name checked against the broker's certificate.
    pub fn server_name(&self) -> &str {
        self.server_name.as_deref().unwrap_or(&self.broker)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.broker.parse::<Ipv4Addr>().map_err(|_| {
            field(
                "callhome.broker",
                format!("`{}` is not an IPv4 address", self.broker),
            )
        })?;
        if self.port == 0 {
            return Err(field("callhome.port", "must be between 1 and 65535"));
        }
        if let Some(name) = &self.server_name {
            if name.is_empty() || name.len() > 253 || name.contains(['/', ' ', '\0']) {
                return Err(field(
                    "callhome.server_name",
                    "must be a DNS name or IP address",
                ));
            }
        }
        if !(MIN_KEEPALIVE_SECS..=MAX_KEEPALIVE_SECS).contains(&self.keepalive_secs) {
            return Err(field(
                "callhome.keepalive_secs",
                format!("must be between {MIN_KEEPALIVE_SECS} and {MAX_KEEPALIVE_SECS}"),
            ));
        }
        if self.groups.len() > MAX_GROUPS {
            return Err(field(
                "callhome.groups",
                format!("at most {MAX_GROUPS} groups"),
            ));
        }
        for g in &self.groups {
            if !valid_group(g) {
                return Err(field(
                    "callhome.groups",
                    format!("`{g}` must be 1 to {MAX_GROUP_LEN} letters, digits, '-', '_' or '.'"),
                ));
            }
        }
        Ok(())
    }
}

/// A group name: one topic level, no MQTT wildcards or separators.
pub fn valid_group(g: &str) -> bool {
    !g.is_empty()
        && g.len() <= MAX_GROUP_LEN
        && g.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MachineConfig;

    fn parse(extra: &str) -> Result<MachineConfig, ConfigError> {
        MachineConfig::from_toml(&format!("hostname = \"edge-1\"\n{extra}"))
    }

    #[test]
    fn defaults_and_round_trip() {
        let c = parse("[callhome]\nbroker = \"10.0.2.100\"\ngroups = [\"north\"]\n").unwrap();
        let ch = c.callhome.clone().unwrap();
        assert_eq!((ch.port, ch.keepalive_secs), (8883, 200));
        assert_eq!(ch.server_name(), "10.0.2.100");
        assert!(!ch.require_sealed);
        assert!(!c.to_toml().contains("require_sealed"));
        let sealed = parse("[callhome]\nbroker = \"10.0.2.100\"\nrequire_sealed = true\n").unwrap();
        assert!(sealed.callhome.clone().unwrap().require_sealed);
        assert_eq!(MachineConfig::from_toml(&sealed.to_toml()).unwrap(), sealed);
        assert_eq!(MachineConfig::from_toml(&c.to_toml()).unwrap(), c);
        assert!(parse("").unwrap().callhome.is_none());
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("broker = \"mqtt.example\"", "callhome.broker"),
            ("broker = \"10.0.0.1\"\nport = 0", "callhome.port"),
            (
                "broker = \"10.0.0.1\"\nkeepalive_secs = 5",
                "callhome.keepalive_secs",
            ),
            (
                "broker = \"10.0.0.1\"\ngroups = [\"a/b\"]",
                "callhome.groups",
            ),
            ("broker = \"10.0.0.1\"\ngroups = [\"#\"]", "callhome.groups"),
            (
                "broker = \"10.0.0.1\"\nserver_name = \"\"",
                "callhome.server_name",
            ),
        ];
        for (body, name) in cases {
            match parse(&format!("[callhome]\n{body}\n")) {
                Err(ConfigError::Field { field, .. }) => assert_eq!(field, name, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
        let many: Vec<String> = (0..9).map(|i| format!("\"g{i}\"")).collect();
        assert!(parse(&format!(
            "[callhome]\nbroker = \"10.0.0.1\"\ngroups = [{}]\n",
            many.join(",")
        ))
        .is_err());
    }
}
