//! Machine configuration: what one device is (hostname, network, API). Parsed
//! from TOML on DATA by the device and written by the CLI; validated here so
//! both sides agree on what is acceptable.

mod apply;
pub mod callhome;
mod diff;
mod machine;
pub mod network;
mod release;
pub mod services;
mod time;

pub use apply::{cut_off, plan, ApplyPlan, LIVE_FIELDS};
pub use callhome::CallHomeConfig;
pub use diff::diff;
pub use machine::{
    parse_cidr, validate_hostname, ApiConfig, ConfigError, MachineConfig, NetworkConfig,
    NetworkMode, WatchdogConfig, MAX_WATCHDOG_SECS, MIN_WATCHDOG_SECS,
};
pub use release::{Release, RELEASE_PATH};
pub use services::{
    start_order, validate_services, HealthConfig, HealthKind, Limits, RestartPolicy, ServiceConfig,
    EXTENSION_DIR, MAX_SERVICES,
};
pub use time::{parse_server, TimeConfig, MAX_TIME_SERVERS, NTP_PORT};

/// Largest machine config file accepted (bytes): a config is a few hundred bytes;
/// anything near this is not one.
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;
