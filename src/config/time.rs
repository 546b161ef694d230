//! `[time]` in the machine config: the SNTP servers the device syncs its
//! clock with, and how often.

use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use super::ConfigError;

/// Most servers listed: the device asks them in turn, one at a time; more than
/// a handful adds nothing but config size.
pub const MAX_TIME_SERVERS: usize = 8;
/// The NTP port, when a server names none.
pub const NTP_PORT: u16 = 123;
/// Re-sync interval bounds (seconds): RFC 4330 asks clients not to poll more
/// often than every 15 s; a day between syncs is as rare as a drifting
/// board without an RTC can afford.
const MIN_INTERVAL_SECS: u32 = 16;
const MAX_INTERVAL_SECS: u32 = 86_400;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeConfig {
    /// SNTP servers: IPv4 address with an optional port ("192.0.2.1",
    /// "192.0.2.1:123"). Names are refused: the device has no DNS resolver;
    /// IPv6 too: its network is IPv4 only (DHCPv4). Empty: no SNTP (the
    /// clock is restored only).
    #[serde(default)]
    pub servers: Vec<String>,
    /// Seconds between syncs once synced.
    #[serde(default = "default_interval")]
    pub interval_secs: u32,
    /// Cap of the retry back-off after failures (seconds).
    #[serde(default = "default_max_backoff")]
    pub max_backoff_secs: u32,
}

fn default_interval() -> u32 {
    DEFAULT_INTERVAL
}

/// 1024 s, or what the build says (`OUTPOST_SNTP_INTERVAL=2048
/// scripts/build-init`): a release that changes one default, as the delta
/// benchmark's "outpost-init rebuilt" pair does. Parsed at compile time.
const DEFAULT_INTERVAL: u32 = parse_or(option_env!("OUTPOST_SNTP_INTERVAL"), 1024);

const fn parse_or(text: Option<&str>, default: u32) -> u32 {
    let Some(text) = text else {
        return default;
    };
    let bytes = text.as_bytes();
    let (mut i, mut n) = (0, 0u32);
    if bytes.is_empty() {
        return default;
    }
    while i < bytes.len() {
        let d = bytes[i];
        if !d.is_ascii_digit() || n > u32::MAX / 10 - 1 {
            return default;
        }
        n = n * 10 + (d - b'0') as u32;
        i += 1;
    }
    n
}

fn default_max_backoff() -> u32 {
    300
}

impl Default for TimeConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            interval_secs: default_interval(),
            max_backoff_secs: default_max_backoff(),
        }
    }
}

fn field(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field,
        reason: reason.into(),
    }
}

impl TimeConfig {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.servers.len() > MAX_TIME_SERVERS {
            return Err(field(
                "time.servers",
                format!("at most {MAX_TIME_SERVERS} servers"),
            ));
        }
        for s in &self.servers {
            parse_server(s).map_err(|reason| field("time.servers", reason))?;
        }
        if !(MIN_INTERVAL_SECS..=MAX_INTERVAL_SECS).contains(&self.interval_secs) {
            return Err(field(
                "time.interval_secs",
                format!("must be between {MIN_INTERVAL_SECS} and {MAX_INTERVAL_SECS}"),
            ));
        }
        if self.max_backoff_secs == 0 || self.max_backoff_secs > self.interval_secs {
            return Err(field(
                "time.max_backoff_secs",
                "must be between 1 and time.interval_secs",
            ));
        }
        Ok(())
    }

    /// The servers as socket addresses (validated ones only).
    pub fn server_addrs(&self) -> Vec<SocketAddr> {
        self.servers
            .iter()
            .filter_map(|s| parse_server(s).ok())
            .collect()
    }
}

/// "A.B.C.D" or "A.B.C.D:PORT" → a socket address.
pub fn parse_server(text: &str) -> Result<SocketAddr, String> {
    let (ip, port) = match text.rsplit_once(':') {
        Some((ip, port)) => (ip, port.parse::<u16>().ok().filter(|&p| p != 0)),
        None => (text, Some(NTP_PORT)),
    };
    match (ip.parse::<Ipv4Addr>(), port) {
        (Ok(ip), Some(port)) => Ok(SocketAddrV4::new(ip, port).into()),
        (Ok(_), None) => Err(format!("`{text}`: the port must be 1 to 65535")),
        (Err(_), _) => Err(format!(
            "`{text}` is not an IPv4 address (optionally with :port); host names are \
             not supported because the device has no DNS resolver"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_time_default_parses_digits_only() {
        assert_eq!(parse_or(None, 1024), 1024);
        assert_eq!(parse_or(Some("2048"), 1024), 2048);
        for bad in ["", "20x", "-1", "99999999999"] {
            assert_eq!(parse_or(Some(bad), 7), 7, "{bad}");
        }
    }

    #[test]
    fn names_and_bad_values_are_refused_by_field() {
        let mut c = TimeConfig {
            servers: vec!["pool.ntp.org".into()],
            ..TimeConfig::default()
        };
        match c.validate() {
            Err(ConfigError::Field { field, reason }) => {
                assert_eq!(field, "time.servers");
                assert!(reason.contains("DNS"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        c.servers = vec!["192.0.2.1:0".into()];
        assert!(c.validate().is_err());
        c.servers = vec!["192.0.2.1".into(); MAX_TIME_SERVERS + 1];
        assert!(c.validate().is_err());
        c.servers = vec![];
        c.interval_secs = 1;
        assert!(c.validate().is_err());
        c.interval_secs = 64;
        c.max_backoff_secs = 65;
        assert!(c.validate().is_err());
    }

    #[test]
    fn addresses_with_and_without_port() {
        assert_eq!(
            parse_server("192.0.2.1").unwrap(),
            "192.0.2.1:123".parse().unwrap()
        );
        assert_eq!(
            parse_server("127.0.0.1:1123").unwrap(),
            "127.0.0.1:1123".parse().unwrap()
        );
        assert!(parse_server("[::1]:9").is_err());
        assert!(parse_server("192.0.2.1:x").is_err());
        assert!(parse_server("192.0.2.1:70000").is_err());
    }
}
