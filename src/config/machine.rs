use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

use super::time::TimeConfig;
use super::MAX_CONFIG_BYTES;

/// A configuration error that names the field and says what is wrong with it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("machine config is {0} bytes, larger than the limit of {MAX_CONFIG_BYTES}")]
    TooLarge(usize),
    #[error("machine config is not valid TOML: {0}")]
    Syntax(String),
    #[error("machine config field `{field}`: {reason}")]
    Field { field: &'static str, reason: String },
}

pub(super) fn field(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field,
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    pub hostname: String,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub network: NetworkConfig,
    #[serde(default)]
    pub watchdog: WatchdogConfig,
    /// Clock sync (SNTP servers); absent = restore the clock only.
    #[serde(default, skip_serializing_if = "TimeConfig::is_default")]
    pub time: TimeConfig,
    /// Supervised services (`[[services]]`), see `services.rs`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<super::services::ServiceConfig>,
    /// Call home to an MQTT broker (`[callhome]`, see `callhome.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callhome: Option<super::callhome::CallHomeConfig>,
}

/// Watchdog limits: below 3 s a busy SD card can starve the petting task;
/// above 300 s a hung board waits too long to come back.
pub const MIN_WATCHDOG_SECS: u32 = 3;
pub const MAX_WATCHDOG_SECS: u32 = 300;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchdogConfig {
    /// Hardware watchdog timeout; unset = the board's (`outpost.watchdog=`
    /// on its kernel command line, else 15 s). Applied without a reboot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    #[serde(default = "default_port")]
    pub port: u16,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            port: default_port(),
        }
    }
}

fn default_port() -> u16 {
    crate::wire::DEFAULT_API_PORT
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Interface to configure; empty = the first Ethernet-like link found.
    #[serde(default)]
    pub interface: String,
    #[serde(default)]
    pub mode: NetworkMode,
    /// Static mode: "A.B.C.D/PREFIX".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Static mode: default gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Several links with failover (`[[network.links]]`, see network.rs);
    /// when set, the single-link fields above must stay unset.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<super::network::LinkConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    #[default]
    Dhcp,
    Static,
}

impl MachineConfig {
    /// A default config for a device called `hostname` (DHCP, default API port).
    pub fn new(hostname: &str) -> Self {
        Self {
            hostname: hostname.to_owned(),
            api: ApiConfig::default(),
            network: NetworkConfig::default(),
            watchdog: WatchdogConfig::default(),
            time: TimeConfig::default(),
            services: Vec::new(),
            callhome: None,
        }
    }

    /// Parse and validate a TOML machine config.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        if text.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge(text.len()));
        }
        let config: MachineConfig =
            toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_hostname(&self.hostname)?;
        self.time.validate()?;
        if self.api.port == 0 {
            return Err(field("api.port", "must be between 1 and 65535"));
        }
        if let Some(secs) = self.watchdog.timeout_secs {
            if !(MIN_WATCHDOG_SECS..=MAX_WATCHDOG_SECS).contains(&secs) {
                return Err(field(
                    "watchdog.timeout_secs",
                    format!("{secs} is not {MIN_WATCHDOG_SECS} to {MAX_WATCHDOG_SECS} seconds"),
                ));
            }
        }
        if self.network.interface.len() > 15 || self.network.interface.contains(['/', ' ', '\0']) {
            return Err(field(
                "network.interface",
                "must be a Linux interface name (at most 15 characters, no '/' or spaces)",
            ));
        }
        super::services::validate_services(&self.services)?;
        super::network::validate_links(&self.network)?;
        if let Some(callhome) = &self.callhome {
            callhome.validate()?;
        }
        match self.network.mode {
            NetworkMode::Dhcp => {
                if self.network.address.is_some() || self.network.gateway.is_some() {
                    return Err(field(
                        "network.address",
                        "only allowed with mode = \"static\"",
                    ));
                }
            }
            NetworkMode::Static => {
                let addr =
                    self.network.address.as_deref().ok_or_else(|| {
                        field("network.address", "required with mode = \"static\"")
                    })?;
                parse_cidr(addr).map_err(|reason| field("network.address", reason))?;
                if let Some(gw) = &self.network.gateway {
                    gw.parse::<Ipv4Addr>().map_err(|_| {
                        field("network.gateway", format!("`{gw}` is not an IPv4 address"))
                    })?;
                }
            }
        }
        Ok(())
    }
}

/// RFC 1123 host name: dot-separated labels of letters, digits and '-', each
/// 1..=63 characters, not starting or ending with '-'; 253 characters at most.
pub fn validate_hostname(name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.len() > 253 {
        return Err(field("hostname", "must be 1 to 253 characters"));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(field(
                "hostname",
                format!("label `{label}` must be 1 to 63 characters"),
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(field(
                "hostname",
                format!("`{name}` may contain only letters, digits, '-' and '.'"),
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(field(
                "hostname",
                format!("label `{label}` must not start or end with '-'"),
            ));
        }
    }
    Ok(())
}

/// Parse "A.B.C.D/N" into an address and prefix length.
pub fn parse_cidr(text: &str) -> Result<(Ipv4Addr, u8), String> {
    let (addr, prefix) = text
        .split_once('/')
        .ok_or_else(|| format!("`{text}` needs a /PREFIX"))?;
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| format!("`{addr}` is not an IPv4 address"))?;
    let prefix: u8 = prefix
        .parse()
        .map_err(|_| format!("prefix `{prefix}` is not a number"))?;
    if prefix > 32 {
        return Err(format!("prefix /{prefix} is larger than 32"));
    }
    Ok((addr, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_field(text: &str) -> &'static str {
        match MachineConfig::from_toml(text) {
            Err(ConfigError::Field { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn bad_fields_are_named() {
        assert_eq!(err_field("hostname = \"-bad\""), "hostname");
        assert_eq!(err_field("hostname = \"a_b\""), "hostname");
        assert_eq!(err_field("hostname = \"\""), "hostname");
        assert_eq!(err_field("hostname = \"ok\"\n[api]\nport = 0"), "api.port");
        assert_eq!(
            err_field("hostname = \"ok\"\n[network]\nmode = \"static\""),
            "network.address"
        );
        assert_eq!(
            err_field("hostname = \"ok\"\n[network]\nmode = \"static\"\naddress = \"10.0.0.1/40\""),
            "network.address"
        );
        assert_eq!(err_field("hostname = \"ok\"\n[network]\nmode = \"static\"\naddress = \"10.0.0.1/24\"\ngateway = \"x\""), "network.gateway");
        assert_eq!(
            err_field("hostname = \"ok\"\n[network]\ninterface = \"a/b\""),
            "network.interface"
        );
        assert_eq!(
            err_field("hostname = \"ok\"\n[watchdog]\ntimeout_secs = 2"),
            "watchdog.timeout_secs"
        );
    }

    #[test]
    fn syntax_errors_name_the_key() {
        let err = MachineConfig::from_toml("hostname = \"ok\"\nhostnme = \"x\"").unwrap_err();
        assert!(err.to_string().contains("hostnme"), "{err}");
        let err = MachineConfig::from_toml("[api]\nport = 1").unwrap_err();
        assert!(err.to_string().contains("hostname"), "{err}");
        let err = MachineConfig::from_toml("hostname = \"ok\"\n[api]\nport = 70000").unwrap_err();
        assert!(err.to_string().contains("port"), "{err}");
    }

    #[test]
    fn oversized_config_is_refused() {
        let text = format!("hostname = \"ok\"\n#{}", "x".repeat(MAX_CONFIG_BYTES));
        assert!(matches!(
            MachineConfig::from_toml(&text),
            Err(ConfigError::TooLarge(_))
        ));
    }

    #[test]
    fn round_trip() {
        let mut c = MachineConfig::new("edge-7.site");
        c.network.mode = NetworkMode::Static;
        c.network.address = Some("192.0.2.5/24".into());
        c.network.gateway = Some("192.0.2.1".into());
        assert_eq!(MachineConfig::from_toml(&c.to_toml()).unwrap(), c);
        assert_eq!(
            MachineConfig::from_toml("hostname = \"x\"")
                .unwrap()
                .api
                .port,
            50000
        );
    }
}
